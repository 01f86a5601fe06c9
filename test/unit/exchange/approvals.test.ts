// Approvals with their dependencies in memory: fail closed when they cannot be kept (no shared store, a store that fails, an audit trail that cannot record), and the round trip through exchangeToken and handleApprovals.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as jose from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { exchangeToken, type ExchangeAuditEvent, type ExchangeDeps } from '../../../proxy/exchange/handler.ts';
import { handleApprovals } from '../../../proxy/exchange/approvals.ts';
import { MemoryApprovalStore, type ApprovalStore } from '../../../proxy/exchange/approval-store.ts';
import { IssuingKeys } from '../../../proxy/exchange/signing-keys.ts';
import type { IdpVerifier } from '../../../proxy/exchange/subject.ts';
import { compilePolicy, parsePolicyText } from '../../../policy/load.ts';
import { makeTempDir, testAuthConfig } from '../../helpers/keys.ts';

const POLICY = `roles:
  writer: { readOnly: false, relations: [public.canary], write: { statements: [insert], relations: [public.canary] } }
issuance:
  rules:
    - { id: writers, subjects: [{ claims: { groups: writers } }], roles: [writer], approval: required }
  approvers:
    - { id: dba, subjects: [{ claims: { groups: dba } }] }
`;

/** Stand-in IdP: the token text names the subject and its groups ("alice~writers"). */
const idp: IdpVerifier = {
  verify: async (token) => {
    const [sub, groups] = token.split('~');
    return sub === undefined || groups === undefined
      ? { ok: false, unavailable: false, message: 'bad' }
      : {
          ok: true,
          subject: { issuer: 'https://idp', sub, tenant: undefined, claims: { groups: groups.split(',') }, exp: 0 },
        };
  },
  close: () => {},
};

let tmp: ReturnType<typeof makeTempDir>;
let signer: IssuingKeys;
beforeEach(async () => {
  tmp = makeTempDir();
  const file = join(tmp.dir, 'k.pem');
  const { privateKey } = await jose.generateKeyPair('ES256', { extractable: true });
  writeFileSync(file, await jose.exportPKCS8(privateKey), { mode: 0o600 });
  signer = await IssuingKeys.open(file, { watch: false, log: () => {} });
});
afterEach(() => {
  signer.close();
  tmp.cleanup();
});

function deps(over: Partial<ExchangeDeps>, events: ExchangeAuditEvent[]): ExchangeDeps {
  const parsed = parsePolicyText(POLICY, 'yaml', 't');
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.issues));
  const policy = compilePolicy(parsed.doc, 1, 'x');
  return {
    exchange: {
      issuer: 'pgwarden-issued',
      audience: 'pgwarden',
      listen: undefined,
      signingKeyFile: undefined,
      peerJwksUrls: [],
      idp: undefined,
      maxBodyBytes: 16384,
      requestsPerMinute: 60,
      requestTimeout: 10_000,
    },
    auth: testAuthConfig({}),
    policy: () => policy,
    idp,
    issued: {
      verify: async () => {
        throw new Error('not used');
      },
      close: () => {},
    },
    isRevoked: () => undefined,
    signer,
    now: () => Date.now(),
    audit: (e) => events.push(e),
    auditable: () => true,
    approvals: new MemoryApprovalStore(),
    replica: 'test',
    ...over,
  };
}

const form = (extra: Record<string, string> = {}) =>
  new URLSearchParams({
    grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
    subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
    subject_token: 'alice~writers',
    role: 'writer',
    ...extra,
  });

const decide = (d: ExchangeDeps, id: string, token: string, decision = 'approve') =>
  handleApprovals(
    {
      method: 'POST',
      id,
      authorization: `Bearer ${token}`,
      form: new URLSearchParams({ decision }),
      requester: '127.0.0.1',
    },
    d,
  );

describe('approvals through exchangeToken and handleApprovals', () => {
  it('pending → approved → one token; each step audited', async () => {
    const events: ExchangeAuditEvent[] = [];
    const d = deps({}, events);
    const pending = await exchangeToken(form(), '127.0.0.1', d);
    expect(pending).toMatchObject({ status: 400, body: { error: 'approval_required', interval: 5 } });
    const id = pending.body.approval_id as string;
    expect((await decide(d, id, 'dave~dba')).status).toBe(200);
    const got = await exchangeToken(form({ approval_id: id }), '127.0.0.1', d);
    expect(got.status).toBe(200);
    expect((await exchangeToken(form({ approval_id: id }), '127.0.0.1', d)).body.error).toBe('invalid_grant');
    expect(events.map((e) => e.event)).toEqual([
      'approval_requested',
      'approval_decided',
      'token_issued',
      'approval_retrieved',
      'token_refused',
    ]);
  });

  it('a replica with peers and no shared store answers 503 and stores nothing', async () => {
    const events: ExchangeAuditEvent[] = [];
    const r = await exchangeToken(form(), '127.0.0.1', deps({ approvals: undefined }, events));
    expect(r).toMatchObject({ status: 503, body: { error: 'temporarily_unavailable' } });
    expect(r.body).not.toHaveProperty('approval_id');
    expect(events).toMatchObject([{ event: 'token_refused', reason: 'approvals_unavailable' }]);
    const api = await handleApprovals(
      { method: 'GET', id: undefined, authorization: 'Bearer dave~dba', form: undefined, requester: undefined },
      deps({ approvals: undefined }, events),
    );
    expect(api.status).toBe(503);
  });

  it('a store that fails answers 503: no pending request, no token, no decision', async () => {
    const failing: ApprovalStore = {
      kind: 'table',
      create: async () => {
        throw new Error('connection refused');
      },
      get: async () => {
        throw new Error('connection refused');
      },
      list: async () => [],
      decide: async () => {
        throw new Error('connection refused');
      },
      retrieve: async () => {
        throw new Error('connection refused');
      },
      expire: async () => [],
      close: async () => {},
    };
    const events: ExchangeAuditEvent[] = [];
    const d = deps({ approvals: failing }, events);
    expect(await exchangeToken(form(), '127.0.0.1', d)).toMatchObject({ status: 503, retryAfter: 30 });
    const retrieval = await exchangeToken(form({ approval_id: `apr_${'a'.repeat(43)}` }), '127.0.0.1', d);
    expect(retrieval).toMatchObject({ status: 503, body: { error: 'temporarily_unavailable' } });
    expect(retrieval.body).not.toHaveProperty('access_token');
    expect((await decide(d, `apr_${'a'.repeat(43)}`, 'dave~dba')).status).toBe(503);
  });

  it('no decision is taken, and no request stored, while the audit trail cannot record it', async () => {
    const events: ExchangeAuditEvent[] = [];
    const store = new MemoryApprovalStore();
    const d = deps({ approvals: store }, events);
    const pending = await exchangeToken(form(), '127.0.0.1', d);
    const id = pending.body.approval_id as string;
    const down = deps({ approvals: store, auditable: () => false }, events);
    expect((await decide(down, id, 'dave~dba')).status).toBe(503);
    expect((await store.get(id))?.state).toBe('pending');
    expect((await exchangeToken(form(), '127.0.0.1', down)).status).toBe(503);
    expect(await store.list(10)).toHaveLength(1);
  });
});
