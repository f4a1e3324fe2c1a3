/**
 * The operations endpoint: /healthz (the process is alive), /readyz (it
 * should get new connections: not while draining or shedding load), and
 * /metrics (Prometheus text format).
 */
import http from 'node:http';
import type { Registry } from 'prom-client';

export interface OpsState {
  readiness(): { ready: boolean; reasons: string[]; degraded?: string[] };
}

export function createOpsServer(
  registry: Registry,
  state: OpsState,
  blobs?: { handle(req: http.IncomingMessage, res: http.ServerResponse): boolean },
): http.Server {
  return http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    const send = (status: number, type: string, body: string) => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain', 'method not allowed\n');
    if (blobs?.handle(req, res)) return;
    if (url === '/healthz') return send(200, 'application/json', '{"status":"ok"}\n');
    if (url === '/readyz') {
      const r = state.readiness();
      return send(r.ready ? 200 : 503, 'application/json', `${JSON.stringify({ status: r.ready ? 'ready' : 'not ready', reasons: r.reasons, ...(r.degraded?.length ? { degraded: r.degraded } : {}) })}\n`);
    }
    if (url === '/metrics') {
      registry.metrics().then(
        (text) => send(200, registry.contentType, text),
        () => send(500, 'text/plain', 'metrics unavailable\n'),
      );
      return;
    }
    send(404, 'text/plain', 'not found\n');
  });
}
