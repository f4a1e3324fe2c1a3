/**
 * A TCP proxy on loopback in front of a real server, for injecting network
 * faults into code that runs in another process (the functions under
 * serverless-offline): `pass` forwards, `refuse` resets every new and open
 * connection, as a service that has gone away.
 */
import net from 'node:net';
import { once } from 'node:events';

export interface FaultProxy {
  endpoint: string;
  mode: 'pass' | 'refuse';
  /** Connections accepted so far. */
  connections: number;
  close(): Promise<void>;
}

export async function startFaultProxy(targetPort: number): Promise<FaultProxy> {
  const open = new Set<net.Socket>();
  const state = { mode: 'pass' as 'pass' | 'refuse', connections: 0 };
  const server = net.createServer((client) => {
    state.connections++;
    if (state.mode === 'refuse') {
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect(targetPort, '127.0.0.1');
    open.add(client);
    open.add(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    get mode() {
      return state.mode;
    },
    set mode(m) {
      state.mode = m;
      // Kept-alive connections would let requests through: cut them too.
      if (m === 'refuse') for (const s of open) s.destroy();
    },
    get connections() {
      return state.connections;
    },
    async close() {
      for (const s of open) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
