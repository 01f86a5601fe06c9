// exchangeToken with its dependencies in memory: no token is issued while the audit trail cannot record it, and every refusal is audited without a token.
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { exchangeToken, type ExchangeAuditEvent, type ExchangeDeps } from '../../../proxy/exchange/handler.ts';
import { IssuingKeys } from '../../../proxy/exchange/signing-keys.ts';
import { startExchangeListener } from '../../../proxy/exchange/server.ts';
import type { IdpVerifier } from '../../../proxy/exchange/subject.ts';
import { memoryExchangeDeps, writeSigningKey } from '../../helpers/exchange.ts';
import { makeTempDir } from '../../helpers/keys.ts';

const POLICY = `roles:
  analyst: { relations: [public.orders] }
issuance:
  rules:
    - { id: all, subjects: [{ sub: alice }], roles: [analyst] }
`;

let tmp: ReturnType<typeof makeTempDir>;
let signer: IssuingKeys;
beforeEach(async () => {
  tmp = makeTempDir();
  const file = join(tmp.dir, 'k.pem');
  await writeSigningKey(file);
  signer = await IssuingKeys.open(file, { watch: false, log: () => {} });
});
afterEach(() => {
  signer.close();
  tmp.cleanup();
});

function deps(over: Partial<ExchangeDeps>, events: ExchangeAuditEvent[]): ExchangeDeps {
  const idp: IdpVerifier = {
    approvers: false,
    verify: async (token) =>
      token === 'idp-token-for-alice'
        ? { ok: true, subject: { issuer: 'https://idp', sub: 'alice', tenant: undefined, claims: {}, exp: 0 } }
        : { ok: false, unavailable: false, message: 'bad' },
    close: () => {},
  };
  return memoryExchangeDeps({ policy: POLICY, idp, signer, events }, over);
}

const form = (extra: Record<string, string> = {}) =>
  new URLSearchParams({
    grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
    subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
    subject_token: 'idp-token-for-alice',
    role: 'analyst',
    ...extra,
  });

describe('exchangeToken', () => {
  it('issues when the trail can record it, and not while it cannot (503, audited as refused)', async () => {
    const events: ExchangeAuditEvent[] = [];
    const ok = await exchangeToken(form(), '127.0.0.1', deps({}, events));
    expect(ok.status).toBe(200);
    expect(events.map((e) => e.event)).toEqual(['token_issued']);
    const down = await exchangeToken(form(), '127.0.0.1', deps({ auditable: () => false }, events));
    expect(down).toMatchObject({ status: 503, body: { error: 'temporarily_unavailable' }, retryAfter: 30 });
    expect(down.body).not.toHaveProperty('access_token');
    expect(events[1]).toMatchObject({ event: 'token_refused', reason: 'audit_unavailable', rule: 'all', sub: 'alice' });
    expect(JSON.stringify(events)).not.toContain(ok.body.access_token as string);
    expect(JSON.stringify(events)).not.toContain('idp-token-for-alice');
  });

  it('refuses a subject the revocation list names, before deciding', async () => {
    const events: ExchangeAuditEvent[] = [];
    const r = await exchangeToken(
      form(),
      undefined,
      deps({ isRevoked: (id) => (id.sub === 'alice' ? 'offboarded' : undefined) }, events),
    );
    expect(r).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    expect(events[0]).toMatchObject({ event: 'token_refused', reason: 'revoked' });
  });
});

describe('startExchangeListener', () => {
  it('refuses plain HTTP on an address that is not loopback', async () => {
    const opts = {
      port: 0,
      tlsContext: undefined,
      maxBodyBytes: 16384,
      requestsPerMinute: 60,
      requestTimeoutMs: 1000,
      log: () => {},
      jwks: () => ({ keys: [] }),
    };
    for (const host of ['0.0.0.0', '::', '10.0.0.1', 'pgwarden.example'])
      await expect(startExchangeListener(deps({}, []), { ...opts, host })).rejects.toThrow(/not a loopback address/);
  });
});
