/**
 * Talks to the console's HTTP listener as a browser or a script would:
 * raw paths (for path tricks), any Host and Origin, the session cookie kept.
 */
import http from 'node:http';

export interface ConsoleAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  json<T = Record<string, unknown>>(): T;
}

export function consoleRequest(
  port: number,
  method: string,
  path: string,
  opts: { headers?: Record<string, string>; body?: string | Buffer } = {},
): Promise<ConsoleAnswer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers: { host: `127.0.0.1:${port}`, ...opts.headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json: <T>() => JSON.parse(body.toString('utf8')) as T });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** A browser session: the cookie and CSRF token the console gave it. */
export async function browserSession(port: number, headers: Record<string, string> = {}): Promise<{ cookie: string; csrf: string; headers: Record<string, string> }> {
  const r = await consoleRequest(port, 'GET', '/api/v1/session', { headers });
  const cookie = String(r.headers['set-cookie']?.[0] ?? '').split(';')[0]!;
  const csrf = r.json<{ csrfToken: string }>().csrfToken;
  return { cookie, csrf, headers: { ...headers, cookie, origin: `http://127.0.0.1:${port}` } };
}

/** Reads server-sent events until `until` holds for one; returns every event read. */
export function readEvents(
  port: number,
  until: (e: { event: string; data: unknown }) => boolean,
  headers: Record<string, string> = {},
  onOpen?: () => void,
): Promise<Array<{ event: string; data: unknown }>> {
  return new Promise((resolve, reject) => {
    const seen: Array<{ event: string; data: unknown }> = [];
    const req = http.get({ host: '127.0.0.1', port, path: '/api/v1/events', headers: { host: `127.0.0.1:${port}`, ...headers } }, (res) => {
      if (res.statusCode !== 200) return reject(new Error(`events: ${res.statusCode}`));
      let buf = '';
      let opened = false;
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        if (!opened) {
          opened = true;
          onOpen?.();
        }
        let i: number;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const event = /^event: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (!event || data === undefined) continue;
          const e = { event, data: JSON.parse(data) as unknown };
          seen.push(e);
          if (until(e)) {
            req.destroy();
            resolve(seen);
            return;
          }
        }
      });
    });
    req.on('error', (err) => (seen.length ? undefined : reject(err)));
  });
}
