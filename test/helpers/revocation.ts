// Identities for the revocation tests: every claim set, with each file's own defaults for what it matches on.
import type { Identity } from '../../proxy/auth/jwt.ts';

/** A factory of identities: role analyst, issuer test, far-off exp; `defaults` then each call's `over` on top. */
export function identityFactory(defaults: Partial<Identity>): (over?: Partial<Identity>) => Identity {
  return (over = {}) => ({
    sub: 'nobody',
    role: 'analyst',
    agent: undefined,
    tenant: undefined,
    jti: 'none',
    iss: 'test',
    exp: 2_000_000_000,
    iat: 1_999_999_000,
    nbf: undefined,
    ...defaults,
    ...over,
  });
}
