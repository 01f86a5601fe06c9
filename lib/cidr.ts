// Client networks (CIDR) for network binding: strict parsing with suggestions, IPv4-mapped IPv6 folded to IPv4, membership with node's net.BlockList.
import net from 'node:net';

export type Family = 'ipv4' | 'ipv6';

/** A parsed network: `text` is its canonical form (network address, slash, prefix). */
export interface Cidr {
  family: Family;
  network: string;
  prefix: number;
  text: string;
}

export type CidrParse = { ok: true; cidr: Cidr } | { ok: false; message: string };

const V4_BITS = 32;
const V6_BITS = 128;

/**
 * Parse "10.0.0.0/8", "::1/128", or a bare address (one host: /32 or /128). Refused, each with a suggestion where one
 * exists: host names (never resolved), zone ids, prefixes out of range or written oddly, bits set right of the prefix
 * (PostgreSQL's cidr refuses those too; the suggestion names the network and the single host), and IPv4-mapped IPv6
 * networks (clients arriving as ::ffff:a.b.c.d are matched as IPv4: write the IPv4 network).
 */
export function parseCidr(input: unknown): CidrParse {
  if (typeof input !== 'string')
    return { ok: false, message: `must be a network like "10.0.0.0/8" or "::1/128" (got ${typeof input})` };
  const text = input;
  if (text.trim() !== text || text === '')
    return { ok: false, message: `"${text}" must be a network like "10.0.0.0/8" with no spaces` };
  const slash = text.indexOf('/');
  const addr = slash < 0 ? text : text.slice(0, slash);
  const prefixText = slash < 0 ? undefined : text.slice(slash + 1);
  if (addr.includes('%'))
    return { ok: false, message: `"${text}" has a zone id (%…); zones are not matched, give the network without it` };
  const kind = net.isIP(addr);
  if (kind === 0) {
    const hint =
      /^[a-z0-9.-]+$/i.test(addr) && /[a-z]/i.test(addr)
        ? 'host names are not resolved; give the address network, e.g. 127.0.0.1/32 for localhost'
        : 'it is not an IPv4 or IPv6 address';
    return { ok: false, message: `"${text}" is not a network: ${hint}` };
  }
  const family: Family = kind === 4 ? 'ipv4' : 'ipv6';
  const bits = family === 'ipv4' ? V4_BITS : V6_BITS;
  let prefix = bits;
  if (prefixText !== undefined) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(prefixText))
      return { ok: false, message: `"${text}": the prefix length after "/" must be a whole number from 0 to ${bits}` };
    prefix = Number(prefixText);
    if (prefix > bits)
      return {
        ok: false,
        message: `"${text}": an ${family === 'ipv4' ? 'IPv4' : 'IPv6'} prefix length is at most ${bits}`,
      };
  }
  const value = toBigInt(addr, family);
  if (family === 'ipv6' && value >> 32n === 0xffffn) {
    const v4 = formatV4(value & 0xffffffffn);
    const suggestion = prefix >= 96 ? `${v4}/${prefix - 96}` : `an IPv4 network`;
    return {
      ok: false,
      message: `"${text}" is an IPv4-mapped IPv6 network; clients arriving as ::ffff:a.b.c.d are matched as IPv4: did you mean ${suggestion}?`,
    };
  }
  const hostBits = BigInt(bits - prefix);
  const network = (value >> hostBits) << hostBits;
  if (network !== value) {
    const fmt = (v: bigint) => (family === 'ipv4' ? formatV4(v) : formatV6(v));
    return {
      ok: false,
      message: `"${text}" has bits set right of the /${prefix} prefix: did you mean ${fmt(network)}/${prefix} (the network) or ${addr}/${bits} (this one host)?`,
    };
  }
  const canonical = family === 'ipv4' ? formatV4(network) : formatV6(network);
  return { ok: true, cidr: { family, network: canonical, prefix, text: `${canonical}/${prefix}` } };
}

/**
 * A client's socket address as matched: IPv4-mapped IPv6 (::ffff:127.0.0.1, what a dual-stack listener reports for an
 * IPv4 client) becomes IPv4; undefined when there is none or it does not parse (then no network matches).
 */
export function clientAddress(address: string | undefined): { family: Family; address: string } | undefined {
  if (address === undefined || address.includes('%')) return undefined;
  const kind = net.isIP(address);
  if (kind === 4) return { family: 'ipv4', address };
  if (kind !== 6) return undefined;
  const value = toBigInt(address, 'ipv6');
  if (value >> 32n === 0xffffn) return { family: 'ipv4', address: formatV4(value & 0xffffffffn) };
  return { family: 'ipv6', address: formatV6(value) };
}

/**
 * A set of networks to test addresses against (net.BlockList: "blocked" here means "inside"). One list per family:
 * a BlockList checks an IPv4 address against its IPv6 rules as ::ffff:a.b.c.d too, so ::/0 would contain every
 * IPv4 client; kept apart, an address is only ever matched against networks of its own family.
 */
export interface NetworkSet {
  ipv4: net.BlockList;
  ipv6: net.BlockList;
}

export function networkSet(cidrs: readonly Cidr[]): NetworkSet {
  const set: NetworkSet = { ipv4: new net.BlockList(), ipv6: new net.BlockList() };
  for (const c of cidrs) set[c.family].addSubnet(c.network, c.prefix, c.family);
  return set;
}

/** True when `address` (from clientAddress) is inside one of `set`'s networks of its family. */
export function inNetworks(set: NetworkSet, address: { family: Family; address: string }): boolean {
  return set[address.family].check(address.address, address.family);
}

/** The eight 16-bit groups of an IPv6 address net.isIP accepted (`::` and a dotted IPv4 tail expanded), as hex without leading zeros. */
export function ipv6Groups(address: string): string[] {
  const v = toBigInt(address, 'ipv6');
  return Array.from({ length: 8 }, (_, i) => ((v >> BigInt((7 - i) * 16)) & 0xffffn).toString(16));
}

function toBigInt(addr: string, family: Family): bigint {
  if (family === 'ipv4') return addr.split('.').reduce((acc, o) => (acc << 8n) | BigInt(Number(o)), 0n);
  // net.isIP accepted it: expand "::" and a trailing dotted quad.
  let text = addr;
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted) {
    const v4 = toBigInt(dotted[1] as string, 'ipv4');
    text = `${text.slice(0, -dotted[1]!.length)}${((v4 >> 16n) & 0xffffn).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? (text.split('::') as [string, string]) : [text, undefined];
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const zeros = tail === undefined ? [] : new Array<string>(8 - headGroups.length - tailGroups.length).fill('0');
  return [...headGroups, ...zeros, ...tailGroups].reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
}

function formatV4(v: bigint): string {
  return [24n, 16n, 8n, 0n].map((s) => String((v >> s) & 0xffn)).join('.');
}

/** RFC 5952 form: lowercase, leading zeros dropped, the longest run of two or more zero groups as "::". */
function formatV6(v: bigint): string {
  const groups = Array.from({ length: 8 }, (_, i) => Number((v >> BigInt((7 - i) * 16)) & 0xffffn));
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}
