/**
 * A configuration kept in S3 or SSM instead of a file in the image
 * (`--config s3://bucket/key`, `--config ssm:/name`, or the same in
 * POSTGATE_CONFIG): read at start, then asked for a new version every
 * `reload.interval`. Every version is loaded exactly as `postgate check`
 * loads a file (loadConfig: YAML, `${ENV}` references, POSTGATE_* overrides,
 * the schema, cross-checks); one that fails is reported and never handed on,
 * and that version is not tried again until the object changes once more.
 */
import { parseRemote, remoteReader, type RemoteObject, type RemoteReader } from '../core/remote-object.js';
import { loadConfig, type LoadOptions, type ResolvedConfig } from './load.js';

export { parseRemote, type RemoteObject };

export interface ConfigSource {
  /** s3://bucket/key or ssm:/name. */
  readonly where: string;
  /**
   * The next configuration: null while the object is unchanged (or is the
   * version refused last time). Throws the read's error, or the ConfigError
   * of a version that does not validate.
   */
  next(): Promise<ResolvedConfig | null>;
  close(): void;
}

/** Reads and validates the first version; throws as loadConfig does (and when the object cannot be read). */
export async function openConfigSource(
  location: RemoteObject,
  load: Omit<LoadOptions, 'file' | 'text'> = {},
  reader: RemoteReader = remoteReader(location),
): Promise<{ config: ResolvedConfig; source: ConfigSource }> {
  const as = (text: string) => loadConfig({ ...load, file: reader.where, text });
  let first;
  try {
    first = await reader.read();
  } catch (err) {
    reader.close();
    throw err;
  }
  if (first.unchanged) throw new Error(`${reader.where}: no first version`);
  let config: ResolvedConfig;
  try {
    config = await as(first.content.toString('utf8'));
  } catch (err) {
    reader.close();
    throw err;
  }
  let version = first.version;
  let refused: string | undefined;
  const source: ConfigSource = {
    where: reader.where,
    close: () => reader.close(),
    async next() {
      const got = await reader.read(version);
      if (got.unchanged || got.version === refused) return null;
      try {
        const cfg = await as(got.content.toString('utf8'));
        version = got.version;
        refused = undefined;
        return cfg;
      } catch (err) {
        refused = got.version;
        throw err;
      }
    },
  };
  return { config, source };
}
