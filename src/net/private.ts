/**
 * The SSRF guard (delivery.denyPrivateAddresses): a webhook connection may
 * not go to a loopback, private, link-local (cloud metadata at
 * 169.254.169.254), carrier-grade NAT or otherwise non-public address. The
 * check is made on the address actually connected to — a `lookup` for the
 * socket, so a name that resolves to a public address for a check and to a
 * private one for the connection (DNS rebinding) is still refused — and on
 * literal IP hosts before connecting. Leaf module.
 */
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import net from 'node:net';
import { createAddressMatcher } from './cidr.js';

/** RFC 6890 special-purpose ranges that are not globally reachable, and their IPv4-mapped forms. */
const NON_PUBLIC = [
  '0.0.0.0/8',
  '10.0.0.0/8',
  '100.64.0.0/10',
  '127.0.0.0/8',
  '169.254.0.0/16',
  '172.16.0.0/12',
  '192.0.0.0/24',
  '192.168.0.0/16',
  '198.18.0.0/15',
  '224.0.0.0/4',
  '240.0.0.0/4',
  '::/128',
  '::1/128',
  'fc00::/7',
  'fe80::/10',
  'ff00::/8',
];

const matcher = createAddressMatcher(NON_PUBLIC);

export function isNonPublicAddress(ip: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return matcher.matches(mapped ? mapped[1]! : ip);
}

export function blockedError(host: string, ip: string): Error {
  return Object.assign(new Error(`${host} resolves to the non-public address ${ip} (delivery.denyPrivateAddresses)`), { code: 'ESSRFBLOCKED' });
}

/** A `lookup` for net/tls.connect that refuses non-public addresses. */
export function guardedLookup(
  hostname: string,
  options: LookupOptions,
  cb: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void,
): void {
  dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
    if (err) return cb(err, '', 0);
    const list = addresses as LookupAddress[];
    const bad = list.find((a) => isNonPublicAddress(a.address));
    if (bad) return cb(blockedError(hostname, bad.address), '', 0);
    if (options.all) return cb(null, list);
    cb(null, list[0]!.address, list[0]!.family);
  });
}

/** For a URL host that is an IP literal (no lookup happens): the refusal, or null. */
export function literalHostProblem(hostname: string): Error | null {
  const h = hostname.replace(/^\[|\]$/g, '');
  return net.isIP(h) && isNonPublicAddress(h) ? blockedError(hostname, h) : null;
}
