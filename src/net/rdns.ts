/**
 * The client's host name for the Received header and the event: a PTR name
 * kept only when it is forward-confirmed (FCrDNS: the name's A/AAAA records
 * include the client's address; RFC 8601 §3 "iprev", RFC 1912 §2.1), so a
 * client controlling its own reverse zone cannot claim any name it likes.
 * Never fails: no answer, a timeout or DNS trouble gives null. Leaf module.
 */
import { promises as dnsPromises } from 'node:dns';
import { isIP } from 'node:net';

export type DnsResolver = (name: string, rrtype: string) => Promise<unknown>;

/** Only so many PTR names are checked (a hostile zone can return hundreds). */
const MAX_PTR_NAMES = 3;

/** The reverse-lookup name of an address: 4.3.2.1.in-addr.arpa, or nibbles under ip6.arpa (RFC 3596 §2.5). */
export function reverseName(ip: string): string | null {
  const v = isIP(ip);
  if (v === 4) return `${ip.split('.').reverse().join('.')}.in-addr.arpa`;
  if (v !== 6) return null;
  // Expand "::" and each group to 4 hex digits, then one label per nibble.
  const [head = '', tail] = ip.toLowerCase().split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  if (t.some((g) => g.includes('.')) || h.some((g) => g.includes('.'))) return null; // v4-mapped forms: not worth the complexity
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  if (groups.length !== 8) return null;
  return `${groups
    .map((g) => g.padStart(4, '0'))
    .join('')
    .split('')
    .reverse()
    .join('.')}.ip6.arpa`;
}

const names = (r: unknown): string[] => (Array.isArray(r) ? r.filter((x): x is string => typeof x === 'string') : []);

/** Normalises an address for comparison (IPv6 text forms differ). */
function sameAddress(a: string, b: string): boolean {
  if (a === b) return true;
  return isIP(a) === 6 && isIP(b) === 6 && reverseName(a) === reverseName(b);
}

export async function confirmedHostname(ip: string, timeoutMs: number, resolver: DnsResolver = (n, t) => dnsPromises.resolve(n, t)): Promise<string | null> {
  const address = ip.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '');
  const rev = reverseName(address);
  if (!rev) return null;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), timeoutMs);
    timer.unref();
  });
  const lookup = (async () => {
    const ptrs = names(await resolver(rev, 'PTR')).slice(0, MAX_PTR_NAMES);
    const rrtype = isIP(address) === 6 ? 'AAAA' : 'A';
    for (const ptr of ptrs) {
      const name = ptr.replace(/\.$/, '').toLowerCase();
      const addrs = names(await resolver(name, rrtype).catch(() => []));
      if (addrs.some((a) => sameAddress(a, address))) return name;
    }
    return null;
  })().catch(() => null);
  try {
    return await Promise.race([lookup, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
