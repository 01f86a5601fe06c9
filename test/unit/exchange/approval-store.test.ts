// The single-replica approval store (in memory) keeps the table's rules: one decision, one retrieval by the same subject with the same fingerprint, expiry by the clock, a cap on open requests per subject.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  APPROVAL_PURGE_MARGIN_SECONDS,
  APPROVALS_GRANT_SQL,
  APPROVALS_SQL,
  MAX_KEPT_APPROVALS_PER_SUBJECT,
  MemoryApprovalStore,
  type NewApproval,
} from '../../../proxy/exchange/approval-store.ts';

const fp = (s: string) => createHash('sha256').update(s).digest();
const by = { sub: 'dave', issuer: 'https://idp', approvers: 'dba' };

function request(id: string, over: Partial<NewApproval> = {}): NewApproval {
  return {
    id,
    sub: 'alice',
    fingerprint: fp('the request'),
    request: {
      rule: 'writers',
      subjectIssuer: 'https://idp',
      sub: 'alice',
      role: 'writer',
      lifetime: 120,
      singleUse: false,
      requestedSingleUse: false,
      audience: 'pgwarden',
    },
    timeoutMs: 60_000,
    maxOpen: 2,
    by: 'replica 1',
    ...over,
  };
}

describe('MemoryApprovalStore', () => {
  it('is decided once and retrieved once, by its subject with its fingerprint', async () => {
    let now = 1_000_000;
    const store = new MemoryApprovalStore(() => now);
    const id = 'apr_aaaaaaaaaaaaaaaaaaaa';
    expect((await store.create(request(id)))?.expiresAt.getTime()).toBe(now + 60_000);
    expect(await store.retrieve(id, 'alice', fp('the request'), 'r')).toBe('pending');
    expect(await store.decide(id, true, by, 'ok', 30_000)).toBe('decided');
    expect(await store.decide(id, false, by, undefined, 30_000)).toBe('approved');
    // The approval opens its own window for the retrieval.
    expect((await store.get(id))?.expiresAt.getTime()).toBe(now + 30_000);
    expect(await store.retrieve(id, 'bob', fp('the request'), 'r')).toBe('unknown');
    expect(await store.retrieve(id, 'alice', fp('another request'), 'r')).toBe('mismatch');
    now += 1_000;
    // Only the first retrieval takes it; a later one is told it was retrieved.
    expect(await store.retrieve(id, 'alice', fp('the request'), 'r')).toBe('taken');
    expect(await store.retrieve(id, 'alice', fp('the request'), 'r')).toBe('retrieved');
    expect((await store.get(id))?.state).toBe('retrieved');
    expect(await store.expire(10)).toEqual([]);
  });

  it('expires by the clock, reports each expiry once, and caps open requests per subject', async () => {
    let now = 5_000_000;
    const store = new MemoryApprovalStore(() => now);
    await store.create(request('apr_bbbbbbbbbbbbbbbbbbbb'));
    await store.create(request('apr_cccccccccccccccccccc'));
    expect(await store.create(request('apr_dddddddddddddddddddd'))).toBeUndefined();
    expect(await store.create(request('apr_eeeeeeeeeeeeeeeeeeee', { sub: 'bob' }))).toBeDefined();
    expect((await store.list(10)).map((r) => r.id)).toHaveLength(3);
    // An approver's rules filter before the bound.
    expect((await store.list(1, ['writers'])).map((r) => r.id)).toEqual(['apr_bbbbbbbbbbbbbbbbbbbb']);
    expect(await store.list(10, ['readers'])).toEqual([]);
    now += 60_000;
    expect(await store.decide('apr_bbbbbbbbbbbbbbbbbbbb', true, by, undefined, 60_000)).toBe('expired');
    expect(await store.retrieve('apr_cccccccccccccccccccc', 'alice', fp('the request'), 'r')).toBe('expired');
    expect((await store.expire(10)).map((r) => r.id).sort()).toEqual([
      'apr_bbbbbbbbbbbbbbbbbbbb',
      'apr_cccccccccccccccccccc',
      'apr_eeeeeeeeeeeeeeeeeeee',
    ]);
    expect(await store.expire(10)).toEqual([]);
    expect(await store.list(10)).toEqual([]);
    // Expired requests no longer count against the subject's open ones.
    expect(await store.create(request('apr_ffffffffffffffffffff'))).toBeDefined();
  });

  it('bounds what one subject keeps in any state, denied ones included, until they are purged', async () => {
    let now = 9_000_000;
    const store = new MemoryApprovalStore(() => now);
    const id = (i: number) => `apr_${String(i).padStart(20, 'k')}`;
    for (let i = 0; i < MAX_KEPT_APPROVALS_PER_SUBJECT; i++) {
      expect(await store.create(request(id(i)))).toBeDefined();
      expect(await store.decide(id(i), false, by, undefined, 60_000)).toBe('decided');
    }
    expect(await store.create(request(id(1000)))).toBeUndefined();
    expect(await store.create(request(id(1001), { sub: 'bob' }))).toBeDefined();
    // Purged an hour after their window: the subject may ask again.
    now += 60_000 + APPROVAL_PURGE_MARGIN_SECONDS * 1000 + 1;
    expect(await store.create(request(id(1002)))).toBeDefined();
  });
});

describe('the approvals SQL in docs/issuance.md', () => {
  it('is what APPROVALS_SQL and APPROVALS_GRANT_SQL produce for pgwarden_admin.revocations', () => {
    const doc = readFileSync('docs/issuance.md', 'utf8');
    const sql = `${APPROVALS_SQL('pgwarden_admin', 'revocations')}\n${APPROVALS_GRANT_SQL('pgwarden_admin', 'revocations', 'pgwarden')}`;
    expect(doc).toContain(`\`\`\`sql\n${sql}\`\`\`\n`);
  });
});
