// Network binding at login: the client's socket address must lie inside the role's `networks` and the token's `pgwarden_networks` claim, when either is set.
import { ProxyError } from '../../lib/errors.ts';
import { clientAddress, inNetworks, networkSet, parseCidr, type Cidr } from '../../lib/cidr.ts';

/** The token claim that narrows where a token may be used from: a non-empty list of networks ("10.1.2.0/24", "::1/128"). */
export const NETWORKS_CLAIM = 'pgwarden_networks';

/** Reads the claim: absent is fine; anything but a non-empty list of valid networks is refused (fail closed). */
export function readNetworksClaim(
  value: unknown,
): { ok: true; networks: readonly Cidr[] | undefined } | { ok: false; message: string } {
  if (value === undefined) return { ok: true, networks: undefined };
  if (!Array.isArray(value) || value.length === 0)
    return { ok: false, message: `token claim "${NETWORKS_CLAIM}" must be a non-empty list of networks` };
  const networks: Cidr[] = [];
  for (const item of value) {
    const r = parseCidr(item);
    // The claim's text is the issuer's, not an attacker's secret, but keep the message to the rule, not the value.
    if (!r.ok)
      return {
        ok: false,
        message: `token claim "${NETWORKS_CLAIM}" holds an entry that is not a network (e.g. 10.0.0.0/8 or ::1/128)`,
      };
    networks.push(r.cidr);
  }
  return { ok: true, networks: Object.freeze(networks) };
}

const HINT =
  "connect from a network this token may be used from, or ask for a token bound to yours; only the connection's own source address counts";

/**
 * Why a login from `remoteAddress` is refused, or undefined when it may proceed. Each list that is set must contain
 * the address, so the effective set is their intersection: a claim can only narrow the role. Only the socket's own
 * address counts: pgwarden reads no PROXY header or forwarded-for value, so behind a TCP load balancer the
 * balancer's address is what is checked (docs/policy.md, "Network binding").
 */
export function networkRefusal(
  remoteAddress: string | undefined,
  role: { name: string; networks?: readonly Cidr[] | undefined },
  claim: readonly Cidr[] | undefined,
): ProxyError | undefined {
  if (role.networks === undefined && claim === undefined) return undefined;
  const addr = clientAddress(remoteAddress);
  const shown = addr?.address ?? remoteAddress ?? 'unknown';
  const refuse = (by: string) =>
    new ProxyError('ERR_TOKEN_REJECTED', `token may not be used from address ${shown}: ${by}`, {
      hint: HINT,
      reason: 'network_denied',
    });
  if (addr === undefined) return refuse('the client address is unknown or not an IP address');
  if (role.networks !== undefined && !inNetworks(networkSet(role.networks), addr))
    return refuse(`it is outside the networks role "${role.name}" is bound to`);
  if (claim !== undefined && !inNetworks(networkSet(claim), addr))
    return refuse(`it is outside the networks in the token's ${NETWORKS_CLAIM} claim`);
  return undefined;
}
