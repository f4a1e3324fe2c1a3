/**
 * Where an object kept in AWS lives (an S3 object or an SSM parameter), and
 * its written form: `s3://bucket/key`, `ssm:/name`. No AWS SDK here: the CLI
 * parses --config with this before it knows it needs a client
 * (core/remote-object.ts reads the object).
 */

export type RemoteObject =
  | { type: 's3'; bucket: string; key: string; region?: string | undefined; endpoint?: string | undefined; forcePathStyle?: boolean | undefined }
  | { type: 'ssm'; parameter: string; region?: string | undefined; endpoint?: string | undefined };

export function describeRemote(o: RemoteObject): string {
  return o.type === 's3' ? `s3://${o.bucket}/${o.key}` : `ssm:${o.parameter}`;
}

/** "s3://bucket/key" or "ssm:/name" (as POSTGATE_CONFIG and --config take them); null for anything else. */
export function parseRemote(text: string): RemoteObject | null {
  const s3 = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])\/(.+)$/.exec(text);
  if (s3) return { type: 's3', bucket: s3[1]!, key: s3[2]! };
  const ssm = /^ssm:(\/[\w.\-/]+)$/.exec(text);
  if (ssm) return { type: 'ssm', parameter: ssm[1]! };
  return null;
}

