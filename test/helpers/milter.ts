/**
 * A milter frame as libmilter writes it (the milter protocol, as
 * docs/scanning.md describes it): the length of what follows (UInt32BE),
 * the command byte, the data. Written apart from src/scan/milter.ts, so
 * the protocol tests and the benchmark's stand-ins do not check the client
 * with its own framing.
 */
export function milterFrame(cmd: string, data: string | Buffer = ''): Buffer {
  const d = typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
  const b = Buffer.alloc(5 + d.length);
  b.writeUInt32BE(d.length + 1, 0);
  b[4] = cmd.charCodeAt(0);
  d.copy(b, 5);
  return b;
}
