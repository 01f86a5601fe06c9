// The policy's issuance section (validation with paths, compilation), the pgwarden_narrow claim read and composed, and decideIssuance's outcomes.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { policyCheck } from '../../../proxy/cli/policy.ts';
import { compilePolicy, parsePolicyText } from '../../../policy/load.ts';
import {
  composeNarrowing,
  decideApprover,
  sameParty,
  decideIssuance,
  DELEGATION_RULE_ID,
  narrowingClaim,
  readNarrowing,
  type IssuanceInput,
  type Narrowing,
} from '../../../policy/issuance.ts';
import type { CompiledPolicy } from '../../../policy/types.ts';

const ROLES = `roles:
  analyst:
    relations: [public.orders, public.customers, sales.*]
    maxRows: 100
    statementTimeout: 5s
  writer:
    readOnly: false
    relations: [public.orders, public.canary]
    write: { statements: [insert, update], relations: [public.canary] }
  once:
    relations: [public.orders]
    singleUse: required
`;

function policy(issuance: string): CompiledPolicy {
  const r = parsePolicyText(`${ROLES}${issuance}`, 'yaml', 'test');
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  return compilePolicy(r.doc, 1, 'x');
}

function issues(issuance: string): string[] {
  const r = parsePolicyText(`${ROLES}${issuance}`, 'yaml', 'test');
  return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
}

function narrowing(v: unknown): Narrowing {
  const r = readNarrowing(v);
  if (!r.ok) throw new Error(r.message);
  return r.value;
}

const NOW = 1_800_000_000_000;

function input(over: Partial<IssuanceInput> = {}): IssuanceInput {
  return {
    subject: { kind: 'idp', issuer: 'https://idp', sub: 'alice', claims: { groups: ['analysts'] } },
    actor: undefined,
    role: 'analyst',
    narrow: undefined,
    ttlMs: undefined,
    singleUse: false,
    nowMs: NOW,
    maxLifetimeMs: 15 * 60_000,
    ...over,
  };
}

describe('issuance section: validation', () => {
  it('accepts a full section', () => {
    expect(
      issues(`issuance:
  delegation: false
  defaultLifetime: 2m
  rules:
    - id: a
      subjects: [{ issuer: https://idp, sub: [alice, bob] }, { claims: { groups: [analysts, admins] } }]
      agents: [bot]
      roles: [analyst, writer]
      narrow: { relations: [public.orders], maxRows: 5, utility: false }
      maxLifetime: 10m
      singleUse: required
      approval: required
`),
    ).toEqual([]);
  });

  it.each([
    ['no rules', 'issuance: {}', 'issuance.rules: is required'],
    ['unknown key', 'issuance: { rules: [], ttl: 1 }', 'issuance.ttl: unknown key'],
    [
      'rule without id',
      'issuance: { rules: [{ subjects: [{ sub: a }], roles: [analyst] }] }',
      'issuance.rules[0].id: is required',
    ],
    [
      'duplicate id',
      'issuance: { rules: [{ id: a, subjects: [{ sub: a }], roles: [analyst] }, { id: a, subjects: [{ sub: b }], roles: [analyst] }] }',
      'issuance.rules[1].id: is also the id of rules[0]',
    ],
    [
      'issuer alone',
      'issuance: { rules: [{ id: a, subjects: [{ issuer: x }], roles: [analyst] }] }',
      'issuance.rules[0].subjects[0]: must name sub or claims',
    ],
    [
      'unknown role',
      'issuance: { rules: [{ id: a, subjects: [{ sub: a }], roles: [root] }] }',
      'issuance.rules[0].roles[0]: "root" is not a role',
    ],
    [
      'claim on sub',
      'issuance: { rules: [{ id: a, subjects: [{ claims: { sub: x } }], roles: [analyst] }] }',
      'issuance.rules[0].subjects[0].claims.sub: cannot match sub',
    ],
    [
      'bad narrow',
      'issuance: { rules: [{ id: a, subjects: [{ sub: a }], roles: [analyst], narrow: { relations: [orders] } }] }',
      'relations[0] "orders" must be schema-qualified',
    ],
    [
      'bad approval',
      'issuance: { rules: [{ id: a, subjects: [{ sub: a }], roles: [analyst], approval: maybe }] }',
      'issuance.rules[0].approval: must be one of none, required',
    ],
    [
      'bad lifetime',
      'issuance: { rules: [{ id: a, subjects: [{ sub: a }], roles: [analyst], maxLifetime: 500ms }] }',
      'issuance.rules[0].maxLifetime: must be at least 1s',
    ],
    [
      'an approver for a rule that does not exist',
      'issuance: { rules: [{ id: a, subjects: [{ sub: a }], roles: [analyst] }], approvers: [{ id: x, subjects: [{ sub: b }], rules: [b] }] }',
      'issuance.approvers[0].rules[0]: "b" is not the id of an issuance rule',
    ],
    [
      'an approver matching a whole identity provider',
      'issuance: { rules: [{ id: a, subjects: [{ sub: a }], roles: [analyst] }], approvers: [{ id: x, subjects: [{ issuer: i }] }] }',
      'issuance.approvers[0].subjects[0]: must name sub or claims',
    ],
    [
      'two approvers entries with one id',
      'issuance: { rules: [{ id: a, subjects: [{ sub: a }], roles: [analyst] }], approvers: [{ id: x, subjects: [{ sub: b }] }, { id: x, subjects: [{ sub: c }] }] }',
      'issuance.approvers[1].id: is also the id of approvers[0]',
    ],
    [
      'an approver with an unknown key',
      'issuance: { rules: [{ id: a, subjects: [{ sub: a }], roles: [analyst] }], approvers: [{ id: x, subjects: [{ sub: b }], roles: [analyst] }] }',
      'issuance.approvers[0].roles: unknown key',
    ],
    [
      'an approval timeout under a second',
      'issuance: { rules: [{ id: a, subjects: [{ sub: a }], roles: [analyst] }], approvalTimeout: 200ms }',
      'issuance.approvalTimeout: must be from 1s to 24h',
    ],
    [
      'empty agents',
      'issuance: { rules: [{ id: a, subjects: [{ sub: a }], roles: [analyst], agents: [] }] }',
      'issuance.rules[0].agents: must be a non-empty list',
    ],
  ])('refuses %s', (_name, text, expected) => {
    expect(issues(text).join('\n')).toContain(expected);
  });
});

describe('pgwarden_narrow', () => {
  it('reads and writes back the same narrowing, names folded like PostgreSQL', () => {
    const n = narrowing({
      relations: ['public.Orders', 'sales.*', 'public."Mixed"'],
      columns: { 'public.customers': ['id', 'Name'] },
      readOnly: true,
      write: { kinds: ['insert'], relations: ['public.canary'] },
      maxRows: 50,
      statementTimeout: 5000,
      utility: false,
    });
    const claim = narrowingClaim(n);
    expect(claim).toEqual({
      relations: ['public.orders', 'sales.*', 'public."Mixed"'],
      columns: { 'public.customers': ['id', 'name'] },
      readOnly: true,
      write: { kinds: ['insert'], relations: ['public.canary'] },
      maxRows: 50,
      statementTimeout: 5000,
      utility: false,
    });
    expect(narrowingClaim(narrowing(claim))).toEqual(claim);
  });

  it.each([
    ['not an object', []],
    ['unknown key', { tables: [] }],
    ['unqualified relation', { relations: ['orders'] }],
    ['wildcard columns key', { columns: { 'public.*': ['id'] } }],
    ['maxRows 0', { maxRows: 0 }],
    ['timeout as text', { statementTimeout: '5s' }],
    ['unknown write kind', { write: { kinds: ['upsert'] } }],
    ['readOnly as text', { readOnly: 'yes' }],
  ])('refuses %s', (_name, v) => {
    expect(readNarrowing(v).ok).toBe(false);
  });
});

describe('composeNarrowing', () => {
  const p = policy('');
  const analyst = p.roles.get('analyst');
  const writer = p.roles.get('writer');
  if (analyst === undefined || writer === undefined) throw new Error('roles');

  it('keeps what the request leaves out and refuses what would widen', () => {
    const bound = narrowing({
      relations: ['public.orders', 'sales.*'],
      maxRows: 10,
      columns: { 'public.orders': ['id'] },
    });
    // The catalog's kinds: sales.q1 a table (the bound limits columns, so a name it reaches only through sales.*
    // must be a known relation that is not a view).
    const catalog = new Map([
      ['sales.q1', 'r'],
      ['sales.q1_v', 'v'],
      ['sales.q1_m', 'm'],
    ]);
    const kinds = (schema: string, name: string) => catalog.get(`${schema}.${name}`);
    const ok = composeNarrowing(analyst, bound, narrowing({ relations: ['sales.q1'] }), kinds);
    expect(ok.ok && narrowingClaim(ok.value)).toEqual({
      relations: ['sales.q1'],
      columns: { 'public.orders': ['id'] },
      maxRows: 10,
    });
    // A view or an unknown name the bound does not name itself would read what the bound's column list hides.
    for (const rel of ['sales.q1_v', 'sales.q1_m', 'sales.unknown']) {
      expect(composeNarrowing(analyst, bound, narrowing({ relations: [rel] }), kinds)).toMatchObject({ ok: false });
      expect(composeNarrowing(analyst, bound, narrowing({ columns: { [rel]: ['id'] } }), kinds)).toMatchObject({
        ok: false,
      });
    }
    expect(composeNarrowing(analyst, bound, narrowing({ relations: ['sales.q1'] })).ok).toBe(false);
    // Named by the bound itself, or under a bound without column lists: as before.
    expect(
      composeNarrowing(analyst, narrowing({ relations: ['sales.q1_v'] }), narrowing({ relations: ['sales.q1_v'] })).ok,
    ).toBe(true);
    expect(
      composeNarrowing(
        analyst,
        narrowing({ relations: ['sales.q1_v'], columns: { 'public.orders': ['id'] } }),
        narrowing({ relations: ['sales.q1_v'] }),
      ).ok,
    ).toBe(true);
    expect(composeNarrowing(analyst, bound, narrowing({ relations: ['public.customers'] })).ok).toBe(false);
    expect(composeNarrowing(analyst, bound, narrowing({ relations: ['sales.*'] })).ok).toBe(true);
    expect(
      composeNarrowing(analyst, narrowing({ relations: ['sales.q1'] }), narrowing({ relations: ['sales.*'] })).ok,
    ).toBe(false);
    expect(composeNarrowing(analyst, bound, narrowing({ maxRows: 11 })).ok).toBe(false);
    expect(composeNarrowing(analyst, bound, narrowing({ columns: { 'public.orders': ['id', 'total'] } })).ok).toBe(
      false,
    );
    // Without a bound the role is the bound.
    expect(composeNarrowing(analyst, undefined, narrowing({ maxRows: 101 })).ok).toBe(false);
    expect(composeNarrowing(analyst, undefined, narrowing({ statementTimeout: 5001 })).ok).toBe(false);
    expect(composeNarrowing(analyst, undefined, narrowing({ relations: ['public.secrets'] })).ok).toBe(false);
    expect(composeNarrowing(analyst, undefined, narrowing({ write: { kinds: ['insert'] } })).ok).toBe(false);
  });

  it('narrows writes within the role and never back from read-only or utility off', () => {
    expect(composeNarrowing(writer, undefined, narrowing({ write: { kinds: ['insert'] } })).ok).toBe(true);
    expect(composeNarrowing(writer, undefined, narrowing({ write: { kinds: ['delete'] } })).ok).toBe(false);
    expect(composeNarrowing(writer, undefined, narrowing({ write: { relations: ['public.orders'] } })).ok).toBe(false);
    const ro = composeNarrowing(
      writer,
      narrowing({ readOnly: true, utility: false }),
      narrowing({ readOnly: false, utility: true }),
    );
    expect(ro.ok && narrowingClaim(ro.value)).toEqual({ readOnly: true, utility: false });
    expect(
      composeNarrowing(writer, narrowing({ readOnly: true }), narrowing({ write: { kinds: ['insert'] } })).ok,
    ).toBe(false);
  });
});

describe('decideIssuance', () => {
  const p = policy(`issuance:
  defaultLifetime: 2m
  rules:
    - id: by-group
      subjects: [{ issuer: https://idp, claims: { groups: analysts } }]
      roles: [analyst]
      narrow: { relations: [public.orders, sales.*] }
      maxLifetime: 10m
    - id: bots
      subjects: [{ sub: alice }]
      agents: [bot]
      roles: [writer]
      singleUse: required
    - id: needs-approval
      subjects: [{ sub: alice }]
      roles: [writer, once]
      approval: required
`);
  const decide = (over: Partial<IssuanceInput>) => decideIssuance(p.issuance, p.roles, input(over));

  it('issues under the first matching rule, its bound applied and lifetimes capped', () => {
    expect(decide({})).toMatchObject({ outcome: 'issue', ruleId: 'by-group', role: 'analyst', lifetimeMs: 120_000 });
    const d = decide({ ttlMs: 3_600_000, narrow: narrowing({ relations: ['sales.q1'] }) });
    expect(d.outcome === 'issue' && [d.lifetimeMs, narrowingClaim(d.narrow ?? {})]).toEqual([
      600_000,
      { relations: ['sales.q1'] },
    ]);
    const plain = decide({});
    expect(plain.outcome === 'issue' ? narrowingClaim(plain.narrow ?? {}) : plain).toEqual({
      relations: ['public.orders', 'sales.*'],
    });
    expect(decide({ ttlMs: 1500 })).toMatchObject({ lifetimeMs: 1000 });
  });

  it('refuses subjects, roles and actors no rule names, and holds approvals', () => {
    expect(
      decide({ subject: { kind: 'idp', issuer: 'https://other', sub: 'alice', claims: { groups: 'analysts' } } }),
    ).toMatchObject({
      outcome: 'deny',
      error: 'invalid_scope',
    });
    expect(
      decide({ subject: { kind: 'idp', issuer: 'https://idp', sub: 'eve', claims: { groups: ['guests'] } } }),
    ).toMatchObject({
      outcome: 'deny',
      error: 'unauthorized_client',
      reason: 'no_rule_for_subject',
    });
    expect(decide({ narrow: narrowing({ relations: ['public.customers'] }) })).toMatchObject({
      outcome: 'deny',
      reason: 'narrowing_exceeds',
    });
    // The writer role for alice without the bot actor falls to the approval rule; with it, the bots rule issues.
    expect(decide({ subject: { kind: 'idp', issuer: 'x', sub: 'alice', claims: {} }, role: 'writer' })).toMatchObject({
      outcome: 'approval_required',
      ruleId: 'needs-approval',
    });
    expect(
      decide({ subject: { kind: 'idp', issuer: 'x', sub: 'alice', claims: {} }, role: 'writer', actor: 'bot' }),
    ).toMatchObject({
      outcome: 'issue',
      ruleId: 'bots',
      singleUse: true,
    });
    expect(decideIssuance(undefined, p.roles, input())).toMatchObject({
      outcome: 'deny',
      reason: 'no_issuance_policy',
    });
    expect(decide({ role: 'nobody' })).toMatchObject({ outcome: 'deny', reason: 'unknown_role' });
  });

  it('exchanges a parent token for the same role only, narrower and no longer-lived, never a single-use one', () => {
    const parent = {
      kind: 'parent' as const,
      sub: 'alice',
      role: 'analyst',
      narrow: narrowing({ relations: ['public.orders'] }),
      expMs: NOW + 90_000,
      singleUse: false,
    };
    expect(decide({ subject: parent, ttlMs: 600_000 })).toMatchObject({
      outcome: 'issue',
      ruleId: DELEGATION_RULE_ID,
      lifetimeMs: 90_000,
    });
    expect(decide({ subject: parent, narrow: narrowing({ relations: ['sales.*'] }) })).toMatchObject({
      outcome: 'deny',
    });
    expect(decide({ subject: parent, role: 'writer' })).toMatchObject({ outcome: 'deny', reason: 'role_mismatch' });
    expect(decide({ subject: { ...parent, singleUse: true } })).toMatchObject({
      outcome: 'deny',
      reason: 'single_use_parent',
    });
    expect(decide({ subject: { ...parent, expMs: NOW + 500 } })).toMatchObject({
      outcome: 'deny',
      reason: 'lifetime_exhausted',
    });
    const noDelegation = policy('issuance: { delegation: false, rules: [] }');
    expect(decideIssuance(noDelegation.issuance, noDelegation.roles, input({ subject: parent }))).toMatchObject({
      reason: 'delegation_disabled',
    });
  });

  it('makes a role that requires single use single-use', () => {
    const q = policy('issuance: { rules: [{ id: o, subjects: [{ sub: alice }], roles: [once] }] }');
    expect(decideIssuance(q.issuance, q.roles, input({ role: 'once' }))).toMatchObject({
      outcome: 'issue',
      singleUse: true,
    });
  });
});

describe('decideApprover', () => {
  const p = policy(`issuance:
  approvalTimeout: 2m
  rules:
    - id: writers
      subjects: [{ claims: { groups: writers } }]
      roles: [writer]
      approval: required
    - id: readers
      subjects: [{ claims: { groups: analysts } }]
      roles: [analyst]
      approval: required
  approvers:
    - id: dba
      subjects: [{ issuer: https://idp, claims: { groups: dba } }]
      rules: [writers]
    - id: lead
      subjects: [{ sub: carol }]
`);
  const who = (sub: string, groups: string[] = [], issuer = 'https://idp') => ({ issuer, sub, claims: { groups } });
  const req = (ruleId: string, sub = 'alice', actor: string | undefined = 'report-bot') => ({ ruleId, sub, actor });

  it('compiles the approvers and the timeout', () => {
    expect(p.issuance?.approvalTimeout).toBe(120_000);
    expect(p.issuance?.approvers.map((a) => a.id)).toEqual(['dba', 'lead']);
    expect(policy('issuance: { rules: [{ id: a, subjects: [{ sub: a }], roles: [analyst] }] }').issuance).toMatchObject(
      { approvalTimeout: 15 * 60_000, approvers: [] },
    );
  });

  it('lets an approvers entry decide the rules it names, and only those', () => {
    expect(decideApprover(p.issuance, who('dave', ['dba']), req('writers'))).toEqual({ ok: true, approverRule: 'dba' });
    expect(decideApprover(p.issuance, who('dave', ['dba']), req('readers'))).toMatchObject({
      ok: false,
      reason: 'not_an_approver',
    });
    // An entry without rules covers every rule.
    expect(decideApprover(p.issuance, who('carol'), req('readers'))).toEqual({ ok: true, approverRule: 'lead' });
    // The issuer is part of the match: the same claims from another IdP are nobody.
    expect(decideApprover(p.issuance, who('dave', ['dba'], 'https://other'), req('writers'))).toMatchObject({
      ok: false,
      reason: 'not_an_approver',
    });
    expect(decideApprover(undefined, who('carol'), req('readers'))).toMatchObject({ ok: false });
  });

  it('never lets the subject or the actor decide its own request, though it may see it', () => {
    expect(decideApprover(p.issuance, who('carol'), req('readers', 'carol'))).toMatchObject({
      ok: false,
      reason: 'self_approval',
    });
    expect(decideApprover(p.issuance, who('carol'), req('readers', 'alice', 'carol'))).toMatchObject({
      ok: false,
      reason: 'self_approval',
    });
    expect(decideApprover(p.issuance, who('carol'), req('readers', 'carol'), false)).toEqual({
      ok: true,
      approverRule: 'lead',
    });
    // One person's spellings: case, compatibility forms, invisible characters, as subject or as actor.
    for (const other of ['Carol', 'CAROL', 'ｃａｒｏｌ', 'ca\u200drol', '\ufeffcarol', 'car\u00adol'])
      for (const r of [req('readers', other), req('readers', 'alice', other)])
        expect(decideApprover(p.issuance, who('carol'), r)).toMatchObject({ ok: false, reason: 'self_approval' });
    expect(sameParty('carol', 'carl')).toBe(false);
    expect(sameParty('straße', 'STRASSE')).toBe(true);
  });
});

describe('pgwarden policy check', () => {
  it('lists the issuance rules, and reports a bad one with its path and line', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgwarden-issuance-'));
    try {
      const file = join(dir, 'policy.yaml');
      writeFileSync(
        file,
        `${ROLES}issuance:\n  rules:\n    - id: a\n      subjects: [{ claims: { groups: [x, y] } }]\n      roles: [analyst]\n      narrow: { relations: [public.orders] }\n      approval: required\n`,
      );
      const ok = await policyCheck(file);
      expect(ok.ok).toBe(true);
      expect(ok.output).toContain('issuance: 1 rule, default lifetime 5m, delegation allowed');
      expect(ok.output).toContain('a: analyst for groups x|y');
      expect(ok.output).toContain('narrowed at most to {"relations":["public.orders"]}; needs approval');
      // No approvers entry covers rule a: its requests could only expire, and policy check says so.
      expect(ok.output).toContain('needs approval, but no approvers entry covers this rule');
      writeFileSync(
        file,
        `${ROLES}issuance:\n  approvalTimeout: 30m\n  rules:\n    - id: a\n      subjects: [{ sub: x }]\n      roles: [writer]\n      approval: required\n  approvers:\n    - id: dba\n      subjects: [{ claims: { groups: dba } }]\n      rules: [a]\n`,
      );
      const approvers = await policyCheck(file);
      expect(approvers.output).toContain('needs approval (within 30m)');
      expect(approvers.output).toContain('approver dba: groups dba decides a');
      writeFileSync(
        file,
        `${ROLES}issuance:\n  rules:\n    - id: a\n      subjects: [{ sub: a }]\n      roles: [nobody]\n`,
      );
      const bad = await policyCheck(file);
      expect(bad.ok).toBe(false);
      expect(bad.output).toMatch(
        /policy\.yaml:\d+: issuance\.rules\[0\]\.roles\[0\]: "nobody" is not a role of this policy/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
