// Approvals with their dependencies in memory: fail closed when they cannot be kept (no shared store, a store that fails, an audit trail that cannot record), and the round trip through exchangeToken and handleApprovals.
import { join } from 'node:path';
import * as jose from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { exchangeToken, type ExchangeAuditEvent, type ExchangeDeps } from '../../../proxy/exchange/handler.ts';
import { handleApprovals } from '../../../proxy/exchange/approvals.ts';
import { MemoryApprovalStore, type ApprovalStore } from '../../../proxy/exchange/approval-store.ts';
import { IssuingKeys } from '../../../proxy/exchange/signing-keys.ts';
import { KeyUnavailableError } from '../../../proxy/auth/keys.ts';
import type { IdpVerifier } from '../../../proxy/exchange/subject.ts';
import { memoryExchangeDeps, writeSigningKey } from '../../helpers/exchange.ts';
import { makeTempDir } from '../../helpers/keys.ts';

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
  approvers: true,
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
  await writeSigningKey(file);
  signer = await IssuingKeys.open(file, { watch: false, log: () => {} });
});
afterEach(() => {
  signer.close();
  tmp.cleanup();
});

function deps(over: Partial<ExchangeDeps>, events: ExchangeAuditEvent[]): ExchangeDeps {
  return memoryExchangeDeps({ policy: POLICY, idp, signer, events }, { approvals: new MemoryApprovalStore(), ...over });
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

  it('a decision written to the store without a seal of this deployment issues nothing (a DO block, another deployment)', async () => {
    const events: ExchangeAuditEvent[] = [];
    const store = new MemoryApprovalStore();
    const d = deps({ approvals: store }, events);
    const ask = async () => (await exchangeToken(form(), '127.0.0.1', d)).body.approval_id as string;
    const by = { sub: 'dave', issuer: 'https://idp', approvers: 'dba' };
    // Written as the definer function would for any caller holding EXECUTE: no seal, a made-up one.
    const bare = await ask();
    expect(await store.decide(bare, true, by, undefined, 60_000)).toBe('decided');
    const junk = await ask();
    expect(await store.decide(junk, true, { ...by, seal: 'a.b.c' }, undefined, 60_000)).toBe('decided');
    // A genuine seal of one request does not approve another, nor is it a token.
    const real = await ask();
    expect((await decide(d, real, 'dave~dba')).status).toBe(200);
    const seal = (await store.get(real))?.decidedBy?.seal as string;
    expect(() => jose.decodeJwt(seal)).toThrow();
    const copied = await ask();
    expect(await store.decide(copied, true, { ...by, seal }, undefined, 60_000)).toBe('decided');
    for (const id of [bare, junk, copied]) {
      const r = await exchangeToken(form({ approval_id: id }), '127.0.0.1', d);
      expect([r.status, r.body.error, r.body.access_token]).toEqual([400, 'invalid_grant', undefined]);
      expect(r.body.error_description).toMatch(/not signed by this deployment/);
    }
    // Signed for another deployment (its exchange.issuer) sharing the key file: not this deployment's decision.
    const other = deps({ approvals: store, exchange: { ...d.exchange, issuer: 'elsewhere' } }, []);
    const theirs = (await exchangeToken(form(), '127.0.0.1', other)).body.approval_id as string;
    expect((await decide(other, theirs, 'dave~dba')).status).toBe(200);
    expect((await exchangeToken(form({ approval_id: theirs }), '127.0.0.1', d)).body.error).toBe('invalid_grant');
    expect(events.filter((e) => e.event === 'token_refused').map((e) => 'reason' in e && e.reason)).toEqual([
      'approval_unverified',
      'approval_unverified',
      'approval_unverified',
      'approval_unverified',
    ]);
    // The genuine one still gives its token.
    expect((await exchangeToken(form({ approval_id: real }), '127.0.0.1', d)).status).toBe(200);
  });

  it('a decision whose answer was lost is still audited as taken, with its approver (the table store asks once more)', async () => {
    // What TableApprovalStore does when the connection drops after the UPDATE committed: it asks again, and the second
    // call sees the request already approved — by this very call.
    const lossy = (onDecide: 'ask again' | 'throw'): ApprovalStore => {
      const inner = new MemoryApprovalStore();
      return Object.assign(Object.create(inner) as ApprovalStore, {
        kind: 'table' as const,
        create: inner.create.bind(inner),
        get: inner.get.bind(inner),
        list: inner.list.bind(inner),
        retrieve: inner.retrieve.bind(inner),
        expire: inner.expire.bind(inner),
        close: inner.close.bind(inner),
        decide: async (...args: Parameters<ApprovalStore['decide']>) => {
          await inner.decide(...args);
          if (onDecide === 'throw') throw new Error('Connection terminated unexpectedly');
          return await inner.decide(...args);
        },
      });
    };
    for (const mode of ['ask again', 'throw'] as const) {
      const events: ExchangeAuditEvent[] = [];
      const d = deps({ approvals: lossy(mode) }, events);
      const id = (await exchangeToken(form(), '127.0.0.1', d)).body.approval_id as string;
      const res = await decide(d, id, 'dave~dba');
      if (mode === 'ask again') {
        expect(res.status).toBe(200);
        expect(events.filter((e) => e.event === 'approval_decided')).toMatchObject([
          { approvalId: id, decision: 'approved', approver: 'dave' },
        ]);
      } else {
        expect(res.status).toBe(503);
        // Whether it was recorded is unknown: the trail says who tried to decide what, when.
        expect(events.filter((e) => e.event === 'approval_refused')).toMatchObject([
          { approvalId: id, approver: 'dave', reason: 'unavailable', decision: 'approved' },
        ]);
      }
      // Either way the token it gives is retrieved once, naming its approver.
      expect((await exchangeToken(form({ approval_id: id }), '127.0.0.1', d)).status).toBe(200);
      expect(events.filter((e) => e.event === 'approval_retrieved')).toMatchObject([{ approver: 'dave' }]);
    }
  });

  it('a seal that cannot be checked for want of a peer’s keys answers 503 and leaves the approval usable', async () => {
    const events: ExchangeAuditEvent[] = [];
    const d = deps({}, events);
    const id = (await exchangeToken(form(), '127.0.0.1', d)).body.approval_id as string;
    expect((await decide(d, id, 'dave~dba')).status).toBe(200);
    // The peers' JWKS cannot be fetched: nothing is known about the seal, so nothing is decided about it.
    const down = deps(
      {
        approvals: d.approvals,
        issuedKeys: {
          resolve: async () => {
            throw new KeyUnavailableError('fetch_failed', 'the peer JWKS could not be fetched');
          },
          close: () => {},
        },
      },
      events,
    );
    const res = await exchangeToken(form({ approval_id: id }), '127.0.0.1', down);
    expect([res.status, res.body.error, res.body.access_token]).toEqual([503, 'temporarily_unavailable', undefined]);
    expect((await exchangeToken(form({ approval_id: id }), '127.0.0.1', d)).status).toBe(200);
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
