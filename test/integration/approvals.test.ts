// Approvals end to end against a real PostgreSQL: two replicas sharing the approvals table, IdP JWTs (JWKS on loopback) for requesters and approvers, the round trip through `pgwarden approve` to a login, deny, expiry, self-approval, unauthorised approvers, changed parameters, and the table out of the sessions' reach.
import { writeFileSync } from 'node:fs';
import type http from 'node:http';
import { join } from 'node:path';
import * as jose from 'jose';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../proxy/embedded/postgres.ts';
import { SAMPLE_DATABASE, SAMPLE_UPSTREAM_USER } from '../../proxy/embedded/sample.ts';
import { REVOCATION_TABLE_SQL } from '../../proxy/revocation/table.ts';
import { APPROVALS_GRANT_SQL, APPROVALS_SQL } from '../../proxy/exchange/approval-store.ts';
import type { ExchangeConfig } from '../../proxy/config/types.ts';
import { approveCommand } from '../../proxy/cli/approve.ts';
import { tokenExchange } from '../../proxy/cli/exchange.ts';
import { DEFAULT_POLICY, pgError, startTestProxy, superClient, testPg, type TestProxy } from '../helpers/proxy.ts';
import { serveJwks, writeSigningKey } from '../helpers/exchange.ts';
import { generateKeyFiles, makeTempDir, signToken, type TestKeyPair } from '../helpers/keys.ts';

const IDP = 'https://idp.approvals.test';
const IDP_AUDIENCE = 'pgwarden-exchange';
/** Approvers' tokens are for the approvals API only (exchange.idp.approverAudience). */
const APPROVER_AUDIENCE = 'pgwarden-approvals';
const ISSUER = 'pgwarden-issued';
const GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT = 'urn:ietf:params:oauth:token-type:jwt';
const SCHEMA = 'pgwarden_approvals_test';
const CHANNEL = 'pgwarden_approvals_test';

// scripter: a role running code pgwarden cannot see (DO) as the upstream role, which holds EXECUTE on the functions.
const policy = (timeout: string) => `${DEFAULT_POLICY}  scripter:
    readOnly: false
    relations: [public.orders, public.canary]
    write: { statements: [insert], relations: [public.canary] }
    do: true
issuance:
  approvalTimeout: ${timeout}
  rules:
    - id: writers
      subjects: [{ issuer: "${IDP}", claims: { groups: writers } }]
      roles: [writer]
      maxLifetime: 10m
      approval: required
    - id: analysts
      subjects: [{ issuer: "${IDP}", claims: { groups: analysts } }]
      roles: [analyst]
      approval: required
  approvers:
    - id: dba
      subjects: [{ issuer: "${IDP}", claims: { groups: dba } }]
      rules: [writers]
    - id: leads
      subjects: [{ issuer: "${IDP}", claims: { groups: leads } }]
      rules: [analysts]
`;

const tmp = makeTempDir();
let idpKey: TestKeyPair;
let otherKey: TestKeyPair;
let idpServer: http.Server;
let idpJwksUrl = '';
let a: TestProxy;
let b: TestProxy;
const issued: string[] = [];
const presented: string[] = [];
const nowSec = () => Math.floor(Date.now() / 1000);

async function idpToken(claims: jose.JWTPayload = {}, key: TestKeyPair = idpKey): Promise<string> {
  const t = await signToken(
    key.privateKey,
    { iss: IDP, aud: IDP_AUDIENCE, sub: 'alice', groups: ['writers'], iat: nowSec(), exp: nowSec() + 300, ...claims },
    { alg: 'ES256', kid: key.kid },
  );
  presented.push(t);
  return t;
}

const approverToken = (sub = 'dave', groups = ['dba']) => idpToken({ sub, groups, aud: APPROVER_AUDIENCE });

async function tokenFile(name: string, token: string): Promise<string> {
  const file = join(tmp.dir, name);
  writeFileSync(file, `${token}\n`, { mode: 0o600 });
  return file;
}

const url = (tp: TestProxy) => `http://127.0.0.1:${tp.proxy.exchangePort}`;

async function exchange(
  tp: TestProxy,
  params: Record<string, string>,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${url(tp)}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: GRANT, subject_token_type: JWT, ...params }).toString(),
  });
  const body = (await res.json()) as Record<string, unknown>;
  if (typeof body.access_token === 'string') issued.push(body.access_token);
  return { status: res.status, body };
}

/** A request for the writer role (approval required), answered pending: its approval id. */
async function requestWriter(tp: TestProxy, extra: Record<string, string> = {}): Promise<string> {
  const res = await exchange(tp, { subject_token: await idpToken(), role: 'writer', ttl: '120', ...extra });
  expect(res.status).toBe(400);
  expect(res.body.error).toBe('approval_required');
  expect(res.body.approval_id).toMatch(/^apr_[A-Za-z0-9_-]{43}$/);
  return res.body.approval_id as string;
}

async function decide(
  tp: TestProxy,
  id: string,
  token: string | undefined,
  form: Record<string, string>,
): Promise<{ status: number; body: Record<string, unknown>; headers: Headers }> {
  const res = await fetch(`${url(tp)}/approvals/${id}`, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
    },
    body: new URLSearchParams(form).toString(),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown>, headers: res.headers };
}

function events(tp: TestProxy, event: string): Record<string, unknown>[] {
  return tp
    .auditLines()
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((e) => e.event === event);
}

function exchangeConfig(signingKeyFile: string): ExchangeConfig {
  return {
    issuer: ISSUER,
    audience: 'pgwarden',
    listen: { host: '127.0.0.1', port: 0, tls: undefined },
    signingKeyFile,
    peerJwksUrls: [],
    idp: {
      issuer: IDP,
      audience: IDP_AUDIENCE,
      approverAudience: APPROVER_AUDIENCE,
      algorithms: ['ES256'],
      jwksUrl: idpJwksUrl,
      publicKeyFile: undefined,
    },
    maxBodyBytes: 16 * 1024,
    requestsPerMinute: 10_000,
    requestTimeout: 5_000,
  };
}

beforeAll(async () => {
  const su = await superClient();
  try {
    await su.query(REVOCATION_TABLE_SQL(SCHEMA, 'revocations', CHANNEL));
    await su.query(APPROVALS_SQL(SCHEMA, 'revocations'));
    await su.query(
      `GRANT USAGE ON SCHEMA ${SCHEMA} TO ${SAMPLE_UPSTREAM_USER}; GRANT SELECT ON ${SCHEMA}.revocations TO ${SAMPLE_UPSTREAM_USER}`,
    );
    await su.query(APPROVALS_GRANT_SQL(SCHEMA, 'revocations', SAMPLE_UPSTREAM_USER));
  } finally {
    await su.end();
  }
  idpKey = await generateKeyFiles(tmp.dir, 'ES256', 'idp-1');
  otherKey = await generateKeyFiles(tmp.dir, 'ES256', 'idp-1');
  ({ server: idpServer, url: idpJwksUrl } = await serveJwks(() => [idpKey.publicJwk]));
  // One issuing key for the deployment: a token either replica signs logs in on both.
  const signing = join(tmp.dir, 'signing.pem');
  await writeSigningKey(signing);
  const [pa, pb] = [await freePort(), await freePort()];
  const revocation = {
    file: undefined,
    table: { schema: SCHEMA, name: 'revocations', channel: CHANNEL, refreshMs: 30_000 },
  };
  a = await startTestProxy({
    policy: policy('2m'),
    listen: { port: pa },
    config: {
      cluster: { replicaId: 1, peers: [{ id: 2, host: '127.0.0.1', port: pb }] },
      revocation,
      exchange: exchangeConfig(signing),
    },
  });
  b = await startTestProxy({
    policy: policy('2m'),
    secret: a.secret,
    listen: { port: pb },
    config: {
      cluster: { replicaId: 2, peers: [{ id: 1, host: '127.0.0.1', port: pa }] },
      revocation,
      exchange: exchangeConfig(signing),
    },
  });
}, 60_000);

afterAll(async () => {
  await a?.close();
  await b?.close();
  await new Promise((r) => idpServer?.close(r));
  tmp.cleanup();
});

describe('an approval round trip across two replicas', () => {
  it('request on A → pending → approved with `pgwarden approve` on B → retrieved once → logs in', async () => {
    const id = await requestWriter(a, { narrow: '{"relations":["public.canary"]}' });
    const pending = await exchange(a, { subject_token: await idpToken(), role: 'writer', ttl: '120' });
    expect(pending.body.error).toBe('approval_required'); // without approval_id: a second, separate request

    // Retrieval before a decision: still pending (RFC 8628's authorization_pending), nothing issued.
    const early = await exchange(b, {
      subject_token: await idpToken(),
      role: 'writer',
      ttl: '120',
      narrow: '{"relations":["public.canary"]}',
      approval_id: id,
    });
    expect([early.status, early.body.error, early.body.approval_id]).toEqual([400, 'authorization_pending', id]);

    // The approver sees, on the other replica, who asks for what.
    const dave = await tokenFile('dave.jwt', await approverToken());
    const list = await approveCommand(['--list', '--url', url(b), '--token-file', dave]);
    expect(list.code).toBe(0);
    expect(list.stdout).toContain(id);
    const shown = await approveCommand([id, '--show', '--json', '--url', url(b), '--token-file', dave]);
    expect(shown.code).toBe(0);
    expect(JSON.parse(shown.stdout)).toMatchObject({
      approval_id: id,
      status: 'pending',
      sub: 'alice',
      subject_issuer: IDP,
      role: 'writer',
      rule: 'writers',
      narrow: { relations: ['public.canary'] },
      lifetime: 120,
    });
    const approved = await approveCommand([id, '--url', url(b), '--token-file', dave, '--reason', 'ticket 42']);
    expect(approved).toMatchObject({ code: 0, stderr: '' });
    expect(approved.stdout).toMatch(new RegExp(`^${id}  approved`));
    expect(approved.stdout).toContain('decided by dave');

    // The requester retrieves on A, with the CLI, exactly the approved request.
    const alice = await tokenFile('alice.jwt', await idpToken());
    const before = nowSec();
    const got = await tokenExchange([
      '--url',
      url(a),
      '--subject-token-file',
      alice,
      '--role',
      'writer',
      '--ttl',
      '2m',
      '--narrow',
      '{"relations":["public.canary"]}',
      '--approval-id',
      id,
    ]);
    expect(got.code).toBe(0);
    const token = got.stdout.trim();
    issued.push(token);
    const claims = jose.decodeJwt(token);
    expect(claims).toMatchObject({
      iss: ISSUER,
      sub: 'alice',
      role: 'writer',
      pgwarden_narrow: { relations: ['public.canary'] },
    });
    // Its lifetime starts at the retrieval.
    expect(claims.iat).toBeGreaterThanOrEqual(before);
    expect((claims.exp as number) - (claims.iat as number)).toBe(120);

    // It logs in through pgwarden (B) and writes what the role allows.
    const c = new pg.Client(b.pgConfig(token));
    await c.connect();
    try {
      expect((await c.query("SELECT current_setting('pgwarden.sub') AS s")).rows[0].s).toBe('alice');
      expect((await c.query('SELECT count(*)::int AS n FROM public.canary')).rows[0].n).toBeGreaterThan(0);
      expect((await pgError(() => c.query('SELECT count(*) FROM public.orders'))).code).toBe('42501');
    } finally {
      await c.end();
    }

    // A second retrieval, on either replica, is refused: an approval gives one token.
    for (const tp of [a, b]) {
      const again = await exchange(tp, {
        subject_token: await idpToken(),
        role: 'writer',
        ttl: '120',
        narrow: '{"relations":["public.canary"]}',
        approval_id: id,
      });
      expect([again.status, again.body.error]).toEqual([400, 'invalid_grant']);
      expect(again.body.error_description).toMatch(/already retrieved/);
      expect(again.body).not.toHaveProperty('access_token');
    }

    // Every step is in the trail of the replica that took it, with who approved; never a token.
    await expect.poll(() => events(a, 'approval_retrieved').filter((e) => e.approvalId === id).length).toBe(1);
    expect(events(a, 'approval_requested').find((e) => e.approvalId === id)).toMatchObject({
      rule: 'writers',
      sub: 'alice',
      role: 'writer',
      narrow: { relations: ['public.canary'] },
      lifetime: 120,
    });
    expect(events(b, 'approval_decided').find((e) => e.approvalId === id)).toMatchObject({
      decision: 'approved',
      approver: 'dave',
      approverIssuer: IDP,
      approvers: 'dba',
      reason: 'ticket 42',
      sub: 'alice',
      role: 'writer',
    });
    expect(events(a, 'approval_retrieved').find((e) => e.approvalId === id)).toMatchObject({
      approver: 'dave',
      jti: claims.jti,
    });
    expect(events(a, 'token_issued').find((e) => e.jti === claims.jti)).toMatchObject({ approvalId: id });
    await expect
      .poll(
        () =>
          [...events(a, 'token_refused'), ...events(b, 'token_refused')].filter(
            (e) => e.approvalId === id && e.reason === 'approval_used',
          ).length,
      )
      .toBe(2);
  });

  it('a denied request answers approval_denied with the approver’s reason, and cannot be approved after', async () => {
    const id = await requestWriter(a);
    const dave = await approverToken();
    const denied = await decide(a, id, dave, { decision: 'deny', reason: 'not during the freeze' });
    expect([denied.status, denied.body.status, denied.body.decided_by]).toEqual([200, 'denied', 'dave']);
    const res = await exchange(b, { subject_token: await idpToken(), role: 'writer', ttl: '120', approval_id: id });
    expect([res.status, res.body.error]).toEqual([400, 'approval_denied']);
    expect(res.body.error_description).toContain('not during the freeze');
    const late = await decide(b, id, dave, { decision: 'approve' });
    expect([late.status, late.body.error]).toEqual([409, 'approval_decided']);
    expect(events(a, 'approval_decided').find((e) => e.approvalId === id)).toMatchObject({
      decision: 'denied',
      approver: 'dave',
      reason: 'not during the freeze',
    });
  });

  it('refuses a retrieval whose parameters differ from what was approved, without using the approval up', async () => {
    const id = await requestWriter(a, { narrow: '{"relations":["public.canary"]}' });
    expect((await decide(b, id, await approverToken(), { decision: 'approve' })).status).toBe(200);
    const base = { role: 'writer', ttl: '120', narrow: '{"relations":["public.canary"]}', approval_id: id };
    const changed: [Record<string, string>, string][] = [
      [{ narrow: '{"relations":["public.orders","public.canary"]}' }, 'narrow'],
      [{ narrow: '' }, 'narrow'],
      [{ ttl: '600' }, 'ttl'],
      [{ single_use: 'true' }, 'single_use'],
    ];
    for (const [over, field] of changed) {
      const res = await exchange(a, { subject_token: await idpToken(), ...base, ...over });
      expect([res.status, res.body.error], JSON.stringify(over)).toEqual([400, 'invalid_grant']);
      expect(res.body.error_description).toContain(field);
    }
    // Another subject with the same id learns nothing of it (as an id that does not exist).
    const bob = await exchange(a, { subject_token: await idpToken({ sub: 'bob' }), ...base });
    expect([bob.body.error, bob.body.error_description]).toEqual([
      'invalid_grant',
      'no approval request of this subject has this approval_id',
    ]);
    // An actor added afterwards is a different request too.
    const withActor = await exchange(a, {
      subject_token: await idpToken(),
      ...base,
      actor_token: await idpToken({ sub: 'some-agent', groups: [] }),
      actor_token_type: JWT,
    });
    expect(withActor.body.error_description).toContain('actor_token');
    // The exact request still retrieves it.
    const ok = await exchange(a, { subject_token: await idpToken(), ...base });
    expect(ok.status).toBe(200);
  });

  it('an approved request whose narrowing has several keys is retrieved (the table stores it as jsonb, in its own key order)', async () => {
    const narrow = '{"relations":["public.canary","public.orders"],"maxRows":5,"columns":{"public.orders":["id"]}}';
    const id = await requestWriter(a, { narrow });
    expect((await decide(b, id, await approverToken(), { decision: 'approve' })).status).toBe(200);
    const res = await exchange(b, {
      subject_token: await idpToken(),
      role: 'writer',
      ttl: '120',
      narrow,
      approval_id: id,
    });
    expect([res.status, res.body.error]).toEqual([200, undefined]);
    expect(typeof res.body.access_token).toBe('string');
  });

  it('concurrent retrievals on both replicas: exactly one token', async () => {
    const id = await requestWriter(a);
    expect((await decide(a, id, await approverToken(), { decision: 'approve' })).status).toBe(200);
    const params = async () => ({ subject_token: await idpToken(), role: 'writer', ttl: '120', approval_id: id });
    const tries = await Promise.all([a, b, a, b, a, b].map(async (tp) => exchange(tp, await params())));
    expect(tries.filter((r) => r.status === 200)).toHaveLength(1);
    for (const r of tries.filter((r) => r.status !== 200)) expect(r.body.error).toBe('invalid_grant');
  });

  it('an approval_id that was never given is refused, and so is a malformed one', async () => {
    const never = await exchange(a, {
      subject_token: await idpToken(),
      role: 'writer',
      approval_id: `apr_${'A'.repeat(43)}`,
    });
    expect([never.status, never.body.error]).toEqual([400, 'invalid_grant']);
    const malformed = await exchange(a, { subject_token: await idpToken(), role: 'writer', approval_id: "x' OR 1=1" });
    expect([malformed.status, malformed.body.error]).toEqual([400, 'invalid_request']);
  });
});

describe('who may decide', () => {
  it('the requester can never approve its own request, even when it is an approver', async () => {
    const id = await requestWriter(a);
    const self = await idpToken({ groups: ['writers', 'dba'], aud: APPROVER_AUDIENCE });
    const res = await decide(b, id, self, { decision: 'approve' });
    expect([res.status, res.body.error]).toEqual([403, 'access_denied']);
    expect(res.body.error_description).toMatch(/own requester/);
    const cli = await approveCommand([id, '--url', url(a), '--token-file', await tokenFile('self.jwt', self)]);
    expect(cli.code).toBe(1);
    expect(cli.stderr).toMatch(/^pgwarden: access_denied: /);
    // It may look at its own request, marked as such, but the request stays pending.
    const seen = await fetch(`${url(a)}/approvals/${id}`, { headers: { authorization: `Bearer ${self}` } });
    expect(await seen.json()).toMatchObject({ status: 'pending', own: true });
    const still = await exchange(a, { subject_token: await idpToken(), role: 'writer', ttl: '120', approval_id: id });
    expect(still.body.error).toBe('authorization_pending');
    expect(events(b, 'approval_refused').find((e) => e.approvalId === id)).toMatchObject({
      approver: 'alice',
      reason: 'self_approval',
    });
  });

  it('a token handed to an agent for exchanges never approves: an agent holding its approver user’s token cannot approve its own request', async () => {
    // dave (an approver) lets agent bot exchange his IdP token for task tokens; bot's own rule needs approval.
    const davesSubjectToken = await idpToken({ sub: 'dave', groups: ['dba'] });
    const id = await requestWriter(a, { subject_token: await idpToken({ sub: 'bot', groups: ['writers'] }) });
    const res = await decide(b, id, davesSubjectToken, { decision: 'approve' });
    expect([res.status, res.body.error]).toEqual([401, 'invalid_token']);
    const look = await fetch(`${url(a)}/approvals`, { headers: { authorization: `Bearer ${davesSubjectToken}` } });
    expect(look.status).toBe(401);
    const still = await exchange(a, {
      subject_token: await idpToken({ sub: 'bot', groups: ['writers'] }),
      role: 'writer',
      ttl: '120',
      approval_id: id,
    });
    expect([still.body.error, still.body.access_token]).toEqual(['authorization_pending', undefined]);
    // Nor is an approver's token (its own audience) a subject token: it is never exchanged for a role.
    const asSubject = await exchange(a, { subject_token: await approverToken(), role: 'writer', ttl: '120' });
    expect([asSubject.status, asSubject.body.error]).toEqual([400, 'invalid_grant']);
  });

  it('an approver whose sub differs from the requester’s only by case, width or invisible characters is the requester', async () => {
    // Identity providers that take sub from what the user typed (a UPN, an e-mail) give one person several spellings.
    for (const [requester, approver] of [
      ['Dave', 'dave'],
      ['ｄａｖｅ', 'dave'],
      ['da\u200bve', 'dave'],
    ] as const) {
      const id = await requestWriter(a, { subject_token: await idpToken({ sub: requester, groups: ['writers'] }) });
      const res = await decide(b, id, await approverToken(approver), { decision: 'approve' });
      expect([res.status, res.body.error]).toEqual([403, 'access_denied']);
      expect(res.body.error_description).toMatch(/own requester/);
      expect((await decide(b, id, await approverToken('frank'), { decision: 'deny' })).status).toBe(200);
    }
  });

  it('refuses an approver the policy does not name, a forged or missing approver token', async () => {
    const id = await requestWriter(a);
    const mallory = await decide(a, id, await approverToken('mallory', ['writers']), { decision: 'approve' });
    expect([mallory.status, mallory.body.error]).toEqual([403, 'access_denied']);
    const look = await fetch(`${url(a)}/approvals/${id}`, {
      headers: { authorization: `Bearer ${await approverToken('mallory', ['writers'])}` },
    });
    expect(look.status).toBe(403);
    const list = await approveCommand([
      '--list',
      '--url',
      url(a),
      '--token-file',
      await tokenFile('mallory.jwt', await approverToken('mallory', ['writers'])),
    ]);
    expect(list.stdout).not.toContain(id);
    const forged = await decide(
      a,
      id,
      await idpToken({ sub: 'dave', groups: ['dba'], aud: APPROVER_AUDIENCE }, otherKey),
      {
        decision: 'approve',
      },
    );
    expect([forged.status, forged.body.error]).toEqual([401, 'invalid_token']);
    expect(forged.headers.get('www-authenticate')).toMatch(/^Bearer /);
    const none = await decide(a, id, undefined, { decision: 'approve' });
    expect(none.status).toBe(401);
    const still = await exchange(a, { subject_token: await idpToken(), role: 'writer', ttl: '120', approval_id: id });
    expect(still.body.error).toBe('authorization_pending');
    expect(events(a, 'approval_refused').find((e) => e.approvalId === id)).toMatchObject({
      approver: 'mallory',
      reason: 'not_an_approver',
    });
  });
});

describe('an approver whose authority is withdrawn before the retrieval', () => {
  it('removed from the policy’s approvers, or revoked: their approvals issue nothing, and a revoked approver decides nothing', async () => {
    // Approved by dave (dba), then the policy in force no longer names the dba group as approvers.
    const id = await requestWriter(a);
    expect((await decide(a, id, await approverToken(), { decision: 'approve' })).status).toBe(200);
    const without = policy('2m').replace(
      'claims: { groups: dba } }]\n      rules: [writers]',
      'claims: { groups: dba-leads } }]\n      rules: [writers]',
    );
    expect(without).not.toBe(policy('2m'));
    writeFileSync(b.policyFile, without);
    await b.proxy.reload();
    try {
      const res = await exchange(b, { subject_token: await idpToken(), role: 'writer', ttl: '120', approval_id: id });
      expect([res.status, res.body.error, res.body.access_token]).toEqual([400, 'invalid_grant', undefined]);
      expect(res.body.error_description).toMatch(/no longer an approver/);
    } finally {
      writeFileSync(b.policyFile, policy('2m'));
      await b.proxy.reload();
    }
    // The approval stays usable under the policy that allowed it (nothing was used up).
    const back = await exchange(b, { subject_token: await idpToken(), role: 'writer', ttl: '120', approval_id: id });
    expect(back.status).toBe(200);

    // Approved by erin, then erin's subject revoked (pgwarden revoke --sub erin): her approval issues nothing, and
    // she can neither list, look at nor decide requests while revoked.
    const id2 = await requestWriter(a);
    expect((await decide(a, id2, await approverToken('erin'), { decision: 'approve' })).status).toBe(200);
    const pendingOne = await requestWriter(a);
    const su = await superClient();
    try {
      await su.query(`INSERT INTO ${SCHEMA}.revocations (sub, reason) VALUES ('erin', 'approver account compromised')`);
      // Wait until replica A has read the revocation, asking with a call that changes nothing (a listing).
      const listing = async () =>
        (
          await fetch(`${url(a)}/approvals`, {
            headers: { authorization: `Bearer ${await approverToken('erin')}` },
          })
        ).status;
      await expect.poll(listing, { timeout: 10_000 }).toBe(403);
      const r = await exchange(a, { subject_token: await idpToken(), role: 'writer', ttl: '120', approval_id: id2 });
      expect([r.status, r.body.error, r.body.access_token]).toEqual([400, 'invalid_grant', undefined]);
      expect(r.body.error_description).toMatch(/approver erin is revoked/);
      const d = await decide(a, pendingOne, await approverToken('erin'), { decision: 'approve' });
      expect([d.status, d.body.error]).toEqual([403, 'access_denied']);
      const still = await exchange(a, {
        subject_token: await idpToken(),
        role: 'writer',
        ttl: '120',
        approval_id: pendingOne,
      });
      expect(still.body.error).toBe('authorization_pending');
    } finally {
      await su.query(`DELETE FROM ${SCHEMA}.revocations WHERE sub = 'erin'`);
      await su.end();
    }
  });
});

describe('expiry', () => {
  it('a request not decided within issuance.approvalTimeout answers approval_expired, and its expiry is audited', async () => {
    writeFileSync(a.policyFile, policy('1s'));
    await a.proxy.reload();
    try {
      const id = await requestWriter(a);
      await new Promise((r) => setTimeout(r, 1_500));
      const res = await exchange(a, { subject_token: await idpToken(), role: 'writer', ttl: '120', approval_id: id });
      expect([res.status, res.body.error]).toEqual([400, 'approval_expired']);
      const late = await decide(b, id, await approverToken(), { decision: 'approve' });
      expect([late.status, late.body.error]).toEqual([409, 'approval_expired']);
      // Exactly one replica reports the expiry.
      await expect
        .poll(
          () =>
            [...events(a, 'approval_expired'), ...events(b, 'approval_expired')].filter((e) => e.approvalId === id)
              .length,
        )
        .toBe(1);
      // Either replica's sweep may be the one (each also sweeps every 15 s).
      expect(
        [...events(a, 'approval_expired'), ...events(b, 'approval_expired')].find((e) => e.approvalId === id),
      ).toMatchObject({
        expiredWhile: 'pending',
        sub: 'alice',
        role: 'writer',
      });
      // Approved, then not retrieved within the window the approval opened: expired too.
      const approvedId = await requestWriter(a);
      expect((await decide(a, approvedId, await approverToken(), { decision: 'approve' })).status).toBe(200);
      await new Promise((r) => setTimeout(r, 1_500));
      const late2 = await exchange(b, {
        subject_token: await idpToken(),
        role: 'writer',
        ttl: '120',
        approval_id: approvedId,
      });
      expect([late2.status, late2.body.error]).toEqual([400, 'approval_expired']);
      expect(late2.body.error_description).toMatch(/not retrieved in time/);
      await expect
        .poll(() =>
          [...events(a, 'approval_expired'), ...events(b, 'approval_expired')].filter(
            (e) => e.approvalId === approvedId,
          ),
        )
        .toMatchObject([{ expiredWhile: 'approved', approver: 'dave' }]);
    } finally {
      writeFileSync(a.policyFile, policy('2m'));
      await a.proxy.reload();
    }
  });
});

describe('the approvals table is out of the sessions’ reach', () => {
  it('pgwarden refuses the functions to a session, and the upstream role cannot read or write the table', async () => {
    const id = await requestWriter(a);
    const approved = await decide(a, id, await approverToken(), { decision: 'approve' });
    expect(approved.status).toBe(200);
    const res = await exchange(a, { subject_token: await idpToken(), role: 'writer', ttl: '120', approval_id: id });
    const token = res.body.access_token as string;
    // A pgwarden token is no approver credential, whoever it names: only the identity provider's tokens are.
    const other = await requestWriter(a);
    const withIssued = await decide(b, other, token, { decision: 'approve' });
    expect([withIssued.status, withIssued.body.error]).toEqual([401, 'invalid_token']);
    const c = new pg.Client(a.pgConfig(token));
    await c.connect();
    try {
      for (const sql of [
        `SELECT * FROM ${SCHEMA}.revocations_approval_list(10)`,
        `SELECT ${SCHEMA}.revocations_approval_decide('${id}', true, '{}'::jsonb, NULL, 60000)`,
        `SELECT * FROM ${SCHEMA}.revocations_approvals`,
      ])
        expect((await pgError(() => c.query(sql))).code).toBe('42501');
    } finally {
      await c.end();
    }
    // The upstream role itself (whatever a policy allowed) has no privilege on the table: EXECUTE only.
    const info = testPg();
    const direct = new pg.Client({
      host: info.host,
      port: info.port,
      database: SAMPLE_DATABASE,
      user: SAMPLE_UPSTREAM_USER,
      password: info.upstreamPassword,
    });
    await direct.connect();
    try {
      for (const sql of [
        `SELECT * FROM ${SCHEMA}.revocations_approvals`,
        `UPDATE ${SCHEMA}.revocations_approvals SET state = 'approved'`,
        `DELETE FROM ${SCHEMA}.revocations_approvals`,
      ])
        expect((await pgError(() => direct.query(sql))).code).toBe('42501');
    } finally {
      await direct.end();
    }
  });

  it('a session running code as the upstream role (DO) cannot approve: the retrieval checks a decision pgwarden signed', async () => {
    // The class: anything holding the upstream role's EXECUTE (a DO block, a function a policy allows) can write
    // any decision through the definer functions; only a decision a replica signed after verifying an approver counts.
    const id = await requestWriter(a);
    const script = await a.token({ sub: 'alice', role: 'scripter' });
    const c = new pg.Client(a.pgConfig(script));
    await c.connect();
    try {
      await c.query(
        `DO $$ BEGIN PERFORM ${SCHEMA}.revocations_approval_decide('${id}', true, '{"sub":"dave","issuer":"${IDP}","approvers":"dba"}'::jsonb, NULL, 60000); END $$`,
      );
    } finally {
      await c.end();
    }
    const res = await exchange(b, { subject_token: await idpToken(), role: 'writer', ttl: '120', approval_id: id });
    expect(res.body.access_token).toBeUndefined();
    expect([res.status, res.body.error]).toEqual([400, 'invalid_grant']);
    expect(res.body.error_description).toMatch(/not signed by this deployment/);
    // The trail is written asynchronously: wait for the refusal to reach it.
    await expect
      .poll(() => events(b, 'token_refused').find((e) => e.approvalId === id))
      .toMatchObject({ reason: 'approval_unverified' });
    expect(events(b, 'token_issued').find((e) => e.approvalId === id)).toBeUndefined();
    // A genuine decision's signature copied onto another request does not carry over either.
    const real = await requestWriter(a);
    expect((await decide(a, real, await approverToken(), { decision: 'approve' })).status).toBe(200);
    const forged = await requestWriter(a, { ttl: '60' });
    const c2 = new pg.Client(a.pgConfig(script));
    await c2.connect();
    try {
      await c2.query(
        `DO $$ BEGIN PERFORM ${SCHEMA}.revocations_approval_decide('${forged}', true, (SELECT o_decided_by FROM ${SCHEMA}.revocations_approval_get('${real}')), NULL, 60000); END $$`,
      );
    } finally {
      await c2.end();
    }
    const copied = await exchange(a, {
      subject_token: await idpToken(),
      role: 'writer',
      ttl: '60',
      approval_id: forged,
    });
    expect(copied.body.access_token).toBeUndefined();
    expect([copied.status, copied.body.error]).toEqual([400, 'invalid_grant']);
    // The genuine approval still gives its one token.
    const ok = await exchange(b, { subject_token: await idpToken(), role: 'writer', ttl: '120', approval_id: real });
    expect(ok.status).toBe(200);
    expect(typeof ok.body.access_token).toBe('string');
  });

  it('a subject cycling requests through denial or expiry is bounded too: requests kept for the hour after count', async () => {
    // The open cap (10) alone let a subject add ten more every time ten were decided or expired, each kept an hour.
    const subject_token = await idpToken({ sub: 'churner', groups: ['writers'] });
    const dave = await approverToken();
    let refused: { status: number; body: Record<string, unknown> } | undefined;
    for (let round = 0; round < 12 && refused === undefined; round++) {
      const ids: string[] = [];
      for (let j = 0; j < 10; j++) {
        const res = await exchange(a, { subject_token, role: 'writer', ttl: '120' });
        if (res.body.error !== 'approval_required') {
          refused = res;
          break;
        }
        ids.push(res.body.approval_id as string);
      }
      for (const id of ids) expect((await decide(b, id, dave, { decision: 'deny' })).status).toBe(200);
      if (refused !== undefined) expect(round * 10 + ids.length).toBe(100);
    }
    expect([refused?.status, refused?.body.error]).toEqual([429, 'temporarily_unavailable']);
  }, 60_000);

  it('a flood of pending requests of one rule does not hide another rule’s requests from its approvers', async () => {
    // 21 subjects × 10 open requests each (the per-subject cap) of rule writers: more than one listing holds.
    const flood: string[] = [];
    for (let i = 0; i < 21; i++) {
      const subject_token = await idpToken({ sub: `flooder-${i}`, groups: ['writers'] });
      for (let j = 0; j < 10; j++) flood.push(await requestWriter(a, { subject_token }));
    }
    const res = await exchange(a, {
      subject_token: await idpToken({ sub: 'carol', groups: ['analysts'] }),
      role: 'analyst',
      ttl: '60',
    });
    expect(res.body.error).toBe('approval_required');
    const carols = res.body.approval_id as string;
    const lead = await approverToken('lena', ['leads']);
    const listed = await fetch(`${url(b)}/approvals`, { headers: { authorization: `Bearer ${lead}` } });
    const ids = ((await listed.json()) as { approvals: { approval_id: string }[] }).approvals.map((x) => x.approval_id);
    expect(ids).toEqual([carols]);
    // The flood is denied (it would otherwise stay pending for the next two minutes).
    const dave = await approverToken();
    for (const id of flood) expect((await decide(b, id, dave, { decision: 'deny' })).status).toBe(200);
  }, 60_000);

  it('approvers see only requests a replica sealed: a row written through the functions (DO) is neither listed nor decided', async () => {
    const script = await a.token({ sub: 'mallory', role: 'scripter' });
    const c = new pg.Client(a.pgConfig(script));
    await c.connect();
    const forged = `apr_${'f'.repeat(43)}`;
    try {
      await c.query(
        `DO $$ BEGIN PERFORM ${SCHEMA}.revocations_approval_request('${forged}', 'mallory', sha256('x'::bytea),
          jsonb_build_object('rule', 'writers', 'subjectIssuer', '${IDP}', 'sub', 'mallory', 'role', 'writer',
            'lifetime', 60, 'singleUse', false, 'requestedSingleUse', false, 'audience', 'pgwarden',
            'requester', 'the on-call lead'), 60000, 10, 'x'); END $$`,
      );
    } finally {
      await c.end();
    }
    const dave = await approverToken();
    const listed = await fetch(`${url(a)}/approvals`, { headers: { authorization: `Bearer ${dave}` } });
    const ids = ((await listed.json()) as { approvals: { approval_id: string }[] }).approvals.map((x) => x.approval_id);
    expect(ids).not.toContain(forged);
    const shown = await fetch(`${url(b)}/approvals/${forged}`, { headers: { authorization: `Bearer ${dave}` } });
    expect(shown.status).toBe(404);
    expect((await decide(a, forged, dave, { decision: 'approve' })).status).toBe(404);
  });

  it('`pgwarden approve` never writes a request’s control characters to the approver’s terminal', async () => {
    // A request's text comes from elsewhere (here the identity provider's sub): an OSC 52 sequence in it would set the
    // approver's clipboard when the listing is printed, a line erase rewrite what they read.
    const sub = 'mallory\u001b[2K\u001b]52;c;cm0gLXJmIH4=\u0007';
    const subject_token = await idpToken({ sub, groups: ['writers'] });
    const id = await requestWriter(a, { subject_token });
    const dave = await tokenFile('dave-list.jwt', await approverToken());
    for (const args of [['--list'], [id, '--show']]) {
      const out = await approveCommand([...args, '--url', url(a), '--token-file', dave]);
      expect(out.code).toBe(0);
      expect(out.stdout).toContain('mallory');
      expect(out.stdout).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/);
    }
    // An approver's reason reaches the requester's terminal the same way: printed escaped.
    const denied = await decide(a, id, await approverToken(), {
      decision: 'deny',
      reason: '\u001b]52;c;cm0gLXJmIH4=\u0007 no',
    });
    expect(denied.status).toBe(200);
    const asker = await tokenFile('mallory.jwt', subject_token);
    const got = await tokenExchange([
      '--url',
      url(a),
      '--subject-token-file',
      asker,
      '--role',
      'writer',
      '--ttl',
      '2m',
      '--approval-id',
      id,
    ]);
    expect(got.code).not.toBe(0);
    expect(got.stderr).toContain('approval_denied');
    expect(got.stderr).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/);
  });

  it.todo(
    'a session running code as the upstream role (a role with do: true and no dbRole, or a function in functions.allow that calls them) can still call the approval functions directly: read every pending request (who asked for what, from where), deny, expire or mark retrieved any request, and create requests past the per-subject caps (filling the table and the 200-row listing of a rule, though approvers are shown only sealed ones); it can no longer obtain a token (the seal). Closing it needs pgwarden’s own connections (approvals, revocation) to log in as a database role the brokered sessions never are (a revocation.table user of its own), with EXECUTE granted to that role only',
  );

  it('no token, subject token or approver token is in either trail or log', () => {
    const trail = [...a.auditLines(), ...a.logs, ...b.auditLines(), ...b.logs].join('\n');
    for (const t of [...issued, ...presented]) expect(trail).not.toContain(t.split('.')[2]);
  });
});
