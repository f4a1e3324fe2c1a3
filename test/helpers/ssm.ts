/**
 * The smallest stand-in for AWS Systems Manager Parameter Store that the SDK
 * can talk to: GetParameter, and PutParameter for the tests' own writes,
 * over the service's real wire protocol (AWS JSON 1.1: POST / with
 * `X-Amz-Target: AmazonSSM.<Operation>`, a JSON body, errors as
 * `{"__type": ...}`). No offline SSM or Secrets Manager server is published
 * on the npm registry (the packages named for SSM there resolve Serverless
 * Framework variables, they answer no API), so this is ours. It checks no
 * signature, as fauxqs and dynalite do not.
 *
 * A Secrets Manager secret is read through Parameter Store as
 * `/aws/reference/secretsmanager/<name>`; `putSecret` stores one under that
 * name, which is all of Secrets Manager that postgate touches.
 */
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface LocalSsm {
  endpoint: string;
  /** Creates or overwrites a SecureString parameter; its version goes up by one. */
  put(name: string, value: string): void;
  /** A Secrets Manager secret, as Parameter Store's reference path reads it. */
  putSecret(name: string, value: string): void;
  /** GetParameter requests answered, by name. */
  reads: string[];
  stop(): Promise<void>;
}

export async function startSsm(): Promise<LocalSsm> {
  const params = new Map<string, { value: string; version: number }>();
  const reads: string[] = [];
  const put = (name: string, value: string) => params.set(name, { value, version: (params.get(name)?.version ?? 0) + 1 });
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const reply = (status: number, body: object) => {
        res.writeHead(status, { 'content-type': 'application/x-amz-json-1.1' });
        res.end(JSON.stringify(body));
      };
      const target = String(req.headers['x-amz-target'] ?? '');
      let input: { Name?: string; Value?: string; WithDecryption?: boolean };
      try {
        input = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as typeof input;
      } catch {
        return reply(400, { __type: 'SerializationException', message: 'body is not JSON' });
      }
      if (req.method !== 'POST' || !target.startsWith('AmazonSSM.')) return reply(400, { __type: 'UnknownOperationException', message: `not an SSM call: ${target}` });
      const op = target.slice('AmazonSSM.'.length);
      if (op === 'GetParameter') {
        const name = input.Name ?? '';
        reads.push(name);
        const p = params.get(name);
        if (!p) return reply(400, { __type: 'ParameterNotFound', message: `parameter ${name} not found` });
        return reply(200, { Parameter: { Name: name, Type: 'SecureString', Value: input.WithDecryption ? p.value : 'AQICAH-encrypted', Version: p.version, DataType: 'text' } });
      }
      if (op === 'PutParameter') {
        put(input.Name ?? '', input.Value ?? '');
        return reply(200, { Version: params.get(input.Name ?? '')!.version, Tier: 'Standard' });
      }
      return reply(400, { __type: 'UnknownOperationException', message: `operation ${op} is not offered by this stand-in` });
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    put,
    putSecret: (name, value) => put(`/aws/reference/secretsmanager/${name}`, value),
    reads,
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
