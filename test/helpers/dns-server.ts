/**
 * A small authoritative DNS server for tests, on a loopback UDP port
 * (node:dgram): it answers A and TXT queries for the names it is given,
 * NXDOMAIN for every other name (RFC 1035 §4.1.1 RCODE 3), and counts every
 * query so a test can see what a cache saved. Modes inject faults: `silent`
 * never answers (a timeout), `servfail` answers RCODE 2.
 *
 * Written for the DNS block list tests (RFC 5782): a listed address is a name
 * such as 2.0.0.127.bl.test with an A record 127.0.0.2 and a TXT record.
 */
import dgram from 'node:dgram';
import { once } from 'node:events';
import net from 'node:net';

export interface DnsRecords {
  a?: string[];
  txt?: string[];
  /** TTL of the answers, seconds (default 300). */
  ttl?: number;
}

export interface DnsQuery {
  name: string;
  type: 'A' | 'TXT' | number;
}

const TYPE_A = 1;
const TYPE_TXT = 16;

export class TestDnsServer {
  readonly queries: DnsQuery[] = [];
  mode: 'answer' | 'silent' | 'servfail' = 'answer';
  private readonly records = new Map<string, DnsRecords>();

  private constructor(private readonly socket: dgram.Socket) {
    socket.on('message', (msg, rinfo) => {
      const answer = this.answer(msg);
      if (answer) socket.send(answer, rinfo.port, rinfo.address);
    });
  }

  static async start(records: Record<string, DnsRecords> = {}): Promise<TestDnsServer> {
    const socket = dgram.createSocket('udp4');
    socket.bind(0, '127.0.0.1');
    await once(socket, 'listening');
    const server = new TestDnsServer(socket);
    for (const [name, r] of Object.entries(records)) server.set(name, r);
    return server;
  }

  get port(): number {
    return this.socket.address().port;
  }

  /** "127.0.0.1:<port>", as a zone's `servers` entry. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  set(name: string, records: DnsRecords): void {
    this.records.set(name.toLowerCase().replace(/\.$/, ''), records);
  }

  /** Queries seen for a name (and type). */
  count(name: string, type?: DnsQuery['type']): number {
    const n = name.toLowerCase();
    return this.queries.filter((q) => q.name === n && (type === undefined || q.type === type)).length;
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.socket.close(() => resolve()));
  }

  private answer(msg: Buffer): Buffer | null {
    if (msg.length < 12) return null;
    const qdcount = msg.readUInt16BE(4);
    if (qdcount !== 1) return null;
    // The question: labels, then QTYPE and QCLASS (RFC 1035 §4.1.2).
    const labels: string[] = [];
    let o = 12;
    while (o < msg.length && msg[o] !== 0) {
      const len = msg[o]!;
      labels.push(msg.subarray(o + 1, o + 1 + len).toString('latin1'));
      o += 1 + len;
    }
    o += 1;
    if (o + 4 > msg.length) return null;
    const qtype = msg.readUInt16BE(o);
    const question = msg.subarray(12, o + 4);
    const name = labels.join('.').toLowerCase();
    this.queries.push({ name, type: qtype === TYPE_A ? 'A' : qtype === TYPE_TXT ? 'TXT' : qtype });
    if (this.mode === 'silent') return null;

    const rec = this.records.get(name);
    let rcode = 0;
    const answers: Buffer[] = [];
    if (this.mode === 'servfail') rcode = 2;
    else if (!rec) rcode = 3;
    else {
      const ttl = rec.ttl ?? 300;
      if (qtype === TYPE_A) for (const a of rec.a ?? []) answers.push(rr(TYPE_A, ttl, Buffer.from(a.split('.').map(Number))));
      if (qtype === TYPE_TXT) for (const t of rec.txt ?? []) answers.push(rr(TYPE_TXT, ttl, txtData(t)));
    }
    const header = Buffer.alloc(12);
    msg.copy(header, 0, 0, 2); // ID
    const rd = msg[2]! & 0x01;
    header[2] = 0x84 | rd; // QR, AA, RD as asked
    header[3] = 0x80 | rcode; // RA, RCODE
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(answers.length, 6);
    return Buffer.concat([header, question, ...answers]);
  }
}

/** One answer record whose name points at the question's (offset 12, RFC 1035 §4.1.4). */
function rr(type: number, ttl: number, data: Buffer): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(0xc00c, 0);
  b.writeUInt16BE(type, 2);
  b.writeUInt16BE(1, 4); // IN
  b.writeUInt32BE(ttl, 6);
  b.writeUInt16BE(data.length, 10);
  return Buffer.concat([b, data]);
}

/** TXT RDATA: the text as character-strings of at most 255 octets (RFC 1035 §3.3.14). */
function txtData(text: string): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  const parts: Buffer[] = [];
  for (let i = 0; i < bytes.length || i === 0; i += 255) {
    const chunk = bytes.subarray(i, i + 255);
    parts.push(Buffer.from([chunk.length]), chunk);
  }
  return Buffer.concat(parts);
}

/** The DNSBL name of an IPv4 address under a zone (for fixtures; the code under test has its own). */
export function listedName(ip: string, zone: string): string {
  if (!net.isIPv4(ip)) throw new Error(`listedName: ${ip} is not IPv4`);
  return `${ip.split('.').reverse().join('.')}.${zone}`;
}
