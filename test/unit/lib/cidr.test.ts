// Network binding's pieces: CIDR parsing with suggestions, IPv4-mapped IPv6 folding, membership, the networks policy key, the pgwarden_networks claim and the login check.
import { describe, expect, it } from 'vitest';
import { clientAddress, inNetworks, networkSet, parseCidr, type Cidr } from '../../../lib/cidr.ts';
import { compilePolicy, parsePolicyText } from '../../../policy/load.ts';
import { networkRefusal, readNetworksClaim } from '../../../proxy/auth/networks.ts';

const cidrs = (...list: string[]): Cidr[] =>
  list.map((t) => {
    const r = parseCidr(t);
    if (!r.ok) throw new Error(r.message);
    return r.cidr;
  });

describe('parseCidr', () => {
  it.each([
    ['10.0.0.0/8', '10.0.0.0/8'],
    ['127.0.0.1', '127.0.0.1/32'],
    ['0.0.0.0/0', '0.0.0.0/0'],
    ['::1/128', '::1/128'],
    ['::1', '::1/128'],
    ['2001:DB8:0:0::/32', '2001:db8::/32'],
    ['fe80::/10', 'fe80::/10'],
    ['::/0', '::/0'],
  ])('%s → %s', (input, text) => {
    const r = parseCidr(input);
    expect(r.ok && r.cidr.text).toBe(text);
  });

  it.each([
    [
      '10.0.0.1/8',
      /bits set right of the \/8 prefix: did you mean 10\.0\.0\.0\/8 \(the network\) or 10\.0\.0\.1\/32 \(this one host\)\?/,
    ],
    ['2001:db8::1/32', /did you mean 2001:db8::\/32/],
    ['10.0.0.0/33', /IPv4 prefix length is at most 32/],
    ['::1/129', /IPv6 prefix length is at most 128/],
    ['10.0.0.0/08', /whole number from 0 to 32/],
    ['10.0.0.0/', /whole number/],
    ['10.0.0.0/-1', /whole number/],
    ['localhost', /host names are not resolved; give the address network, e.g\. 127\.0\.0\.1\/32/],
    ['10.0.0', /not an IPv4 or IPv6 address/],
    ['010.0.0.1/32', /not an IPv4 or IPv6 address/],
    ['fe80::1%eth0/128', /zone id/],
    [' 10.0.0.0/8', /no spaces/],
    ['::ffff:127.0.0.1/128', /IPv4-mapped IPv6 network.*did you mean 127\.0\.0\.1\/32\?/],
    ['::ffff:10.0.0.0/104', /did you mean 10\.0\.0\.0\/8\?/],
    ['', /no spaces/],
  ])('refuses %j', (input, message) => {
    const r = parseCidr(input);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.message).toMatch(message);
  });

  it('refuses what is not a string', () => {
    expect(parseCidr(8).ok).toBe(false);
    expect(parseCidr(null).ok).toBe(false);
  });
});

describe('clientAddress and membership', () => {
  it('folds IPv4-mapped IPv6 to IPv4, in both spellings', () => {
    expect(clientAddress('::ffff:127.0.0.1')).toEqual({ family: 'ipv4', address: '127.0.0.1' });
    expect(clientAddress('::FFFF:7f00:1')).toEqual({ family: 'ipv4', address: '127.0.0.1' });
    expect(clientAddress('10.1.2.3')).toEqual({ family: 'ipv4', address: '10.1.2.3' });
    expect(clientAddress('0:0:0:0:0:0:0:1')).toEqual({ family: 'ipv6', address: '::1' });
  });

  it('no address, a zone-scoped or garbage address matches nothing', () => {
    expect(clientAddress(undefined)).toBeUndefined();
    expect(clientAddress('fe80::1%eth0')).toBeUndefined();
    expect(clientAddress('not-an-address')).toBeUndefined();
  });

  it('matches inside, not outside, and never across families', () => {
    const set = networkSet(cidrs('10.0.0.0/8', '::1/128'));
    const at = (a: string) => inNetworks(set, clientAddress(a)!);
    expect(at('10.255.0.1')).toBe(true);
    expect(at('::ffff:10.0.0.7')).toBe(true);
    expect(at('11.0.0.1')).toBe(false);
    expect(at('127.0.0.1')).toBe(false);
    expect(at('::1')).toBe(true);
    expect(at('::2')).toBe(false);
    // ::/0 is every IPv6 client, but an IPv4 client arriving mapped is IPv4.
    expect(inNetworks(networkSet(cidrs('::/0')), clientAddress('::ffff:127.0.0.1')!)).toBe(false);
    expect(inNetworks(networkSet(cidrs('0.0.0.0/0')), clientAddress('::ffff:127.0.0.1')!)).toBe(true);
  });
});

describe('networkRefusal (the login check)', () => {
  const role = (networks?: string[]) => ({
    name: 'analyst',
    networks: networks === undefined ? undefined : cidrs(...networks),
  });

  it('no binding: any address, even none', () => {
    expect(networkRefusal('203.0.113.9', role(), undefined)).toBeUndefined();
    expect(networkRefusal(undefined, role(), undefined)).toBeUndefined();
  });

  it('a role bound to 10.0.0.0/8 refuses 127.0.0.1 with 28000 network_denied naming the address', () => {
    const err = networkRefusal('::ffff:127.0.0.1', role(['10.0.0.0/8']), undefined);
    expect(err?.sqlstate).toBe('28000');
    expect(err?.severity).toBe('FATAL');
    expect(err?.reason).toBe('network_denied');
    expect(err?.message).toBe(
      'token may not be used from address 127.0.0.1: it is outside the networks role "analyst" is bound to',
    );
    expect(networkRefusal('10.9.9.9', role(['10.0.0.0/8']), undefined)).toBeUndefined();
  });

  it('the claim only narrows: both must contain the address', () => {
    const r = role(['10.0.0.0/8', '127.0.0.1/32']);
    expect(networkRefusal('10.1.2.3', r, cidrs('10.1.2.0/24'))).toBeUndefined();
    expect(networkRefusal('10.1.3.3', r, cidrs('10.1.2.0/24'))?.message).toMatch(/pgwarden_networks claim/);
    // A claim wider than the role does not widen it.
    expect(networkRefusal('192.168.0.1', r, cidrs('0.0.0.0/0'))?.message).toMatch(/role "analyst"/);
    // A claim alone binds a role without networks.
    expect(networkRefusal('127.0.0.1', role(), cidrs('10.0.0.0/8'))?.reason).toBe('network_denied');
  });

  it('an unknown client address is refused when a binding exists', () => {
    expect(networkRefusal(undefined, role(['0.0.0.0/0']), undefined)?.message).toMatch(/unknown/);
  });
});

describe('readNetworksClaim', () => {
  it('absent is no binding; a valid list parses', () => {
    expect(readNetworksClaim(undefined)).toEqual({ ok: true, networks: undefined });
    const r = readNetworksClaim(['10.0.0.0/8', '::1']);
    expect(r.ok && r.networks?.map((n) => n.text)).toEqual(['10.0.0.0/8', '::1/128']);
  });

  it.each([[[]], ['10.0.0.0/8'], [['10.0.0.1/8']], [['10.0.0.0/8', 7]], [{}]])('refuses %j (fail closed)', (value) => {
    expect(readNetworksClaim(value).ok).toBe(false);
  });
});

describe('the networks policy key', () => {
  const load = (networks: string) =>
    parsePolicyText(`roles:\n  a:\n    relations: [public.orders]\n    networks: ${networks}\n`, 'yaml', 'test');

  it('compiles to canonical networks', () => {
    const r = load('[10.0.0.0/8, 127.0.0.1, "::1/128"]');
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(
      compilePolicy(r.doc, 1, 'x')
        .roles.get('a')
        ?.networks?.map((n) => n.text),
    ).toEqual(['10.0.0.0/8', '127.0.0.1/32', '::1/128']);
  });

  it.each([
    ['[10.0.0.1/8]', 'roles.a.networks[0]', /did you mean 10\.0\.0\.0\/8/],
    ['[]', 'roles.a.networks', /must not be empty/],
    ['10.0.0.0/8', 'roles.a.networks', /must be a list/],
    ['[localhost]', 'roles.a.networks[0]', /host names are not resolved/],
    ['[10.0.0.0/8, "::ffff:10.0.0.0/104"]', 'roles.a.networks[1]', /did you mean 10\.0\.0\.0\/8/],
  ])('refuses networks: %s at %s', (networks, at, message) => {
    const r = load(networks);
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.issues).toEqual([expect.objectContaining({ path: at, message: expect.stringMatching(message) })]);
  });

  it('suggests the key for a typo', () => {
    const r = parsePolicyText(
      'roles:\n  a:\n    relations: [public.orders]\n    network: [10.0.0.0/8]\n',
      'yaml',
      'test',
    );
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.issues.map((i) => i.message).join('\n')).toMatch(/networks/);
  });
});
