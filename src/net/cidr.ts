/**
 * Address-range matching for trust lists (e.g. which peers may send a PROXY
 * protocol header).
 *
 * Entries are CIDR ranges (`10.0.0.0/8`, `2001:db8::/32`) or single addresses
 * (`127.0.0.1`, `::1`). Matching is done by `net.BlockList`, so the comparison
 * is on parsed addresses, never on strings: `2001:0DB8::1` and `2001:db8::1`
 * are the same address.
 *
 * Leaf module: only node built-ins.
 */

import net from 'node:net';

export interface AddressMatcher {
  /**
   * Whether `address` (as reported by `socket.remoteAddress`) falls in one of
   * the ranges. Anything that is not an IP address (including `undefined`, which
   * `remoteAddress` is once a socket is destroyed) matches nothing.
   */
  matches(address: string | undefined): boolean;
}

/**
 * Checks one range entry. Returns a message naming the entry when it is
 * invalid, `null` when it is valid. Config validation calls this so that every
 * bad entry is reported with its path; `createAddressMatcher` uses the same
 * rules.
 *
 * Rules: the address part must be a plain IPv4 or IPv6 address (no zone such
 * as `%eth0`: a zone names a local interface and cannot identify a peer range);
 * the optional prefix is decimal, 0-32 for IPv4 and 0-128 for IPv6. Host bits
 * set below the prefix (`10.1.2.3/8`) are accepted and ignored, as BlockList
 * masks them.
 */
export function validateRange(entry: string): string | null {
  if (typeof entry !== 'string') {
    return `invalid address range ${String(entry)}: expected a string`;
  }
  const quoted = JSON.stringify(entry);
  if (entry.length === 0) {
    return 'invalid address range "": empty entry';
  }
  const slash = entry.indexOf('/');
  const address = slash === -1 ? entry : entry.slice(0, slash);
  if (address.includes('%')) {
    return `invalid address range ${quoted}: zone identifiers (%…) are not allowed`;
  }
  const family = net.isIP(address);
  if (family === 0) {
    return `invalid address range ${quoted}: ${JSON.stringify(address)} is not an IPv4 or IPv6 address`;
  }
  if (slash === -1) return null;

  const prefixText = entry.slice(slash + 1);
  const max = family === 4 ? 32 : 128;
  if (!/^[0-9]{1,3}$/.test(prefixText) || Number(prefixText) > max) {
    return `invalid address range ${quoted}: prefix length ${JSON.stringify(prefixText)} must be a number from 0 to ${max} for IPv${family}`;
  }
  return null;
}

/**
 * Builds a matcher over `ranges`. Throws an Error naming the first invalid
 * entry (config validation should have caught it earlier via `validateRange`).
 */
export function createAddressMatcher(ranges: readonly string[]): AddressMatcher {
  const list = new net.BlockList();
  for (const entry of ranges) {
    const problem = validateRange(entry);
    if (problem !== null) throw new Error(problem);
    const slash = entry.indexOf('/');
    const address = slash === -1 ? entry : entry.slice(0, slash);
    const type = net.isIPv4(address) ? 'ipv4' : 'ipv6';
    if (slash === -1) list.addAddress(address, type);
    else list.addSubnet(address, Number(entry.slice(slash + 1)), type);
  }

  return {
    matches(address: string | undefined): boolean {
      if (typeof address !== 'string') return false;
      // A link-local peer may be reported with its zone (`fe80::1%eth0`); the
      // zone is not part of the address for range purposes.
      const percent = address.indexOf('%');
      const plain = percent === -1 ? address : address.slice(0, percent);
      const family = net.isIP(plain);
      if (family === 4) return list.check(plain, 'ipv4');
      if (family !== 6) return false;
      if (list.check(plain, 'ipv6')) return true;
      // A dual-stack listener (`::`) reports IPv4 peers as IPv4-mapped IPv6
      // (`::ffff:127.0.0.1`). Operators write IPv4 ranges for them, so check
      // the embedded IPv4 address explicitly rather than relying on how a given
      // Node version's BlockList compares across families.
      const mapped = embeddedIPv4(plain);
      return mapped !== null && list.check(mapped, 'ipv4');
    },
  };
}

/** The IPv4 address inside an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), else null. */
function embeddedIPv4(ipv6: string): string | null {
  // SocketAddress prints the canonical form, which for every spelling of a
  // mapped address (`::ffff:7f00:1`, `0:0:0:0:0:ffff:127.0.0.1`) is
  // `::ffff:a.b.c.d`.
  const canonical = new net.SocketAddress({ address: ipv6, family: 'ipv6' }).address;
  const match = /^::ffff:(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/i.exec(canonical);
  return match?.[1] ?? null;
}
