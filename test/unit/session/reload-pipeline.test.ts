// A policy version change (SIGHUP reload, catalog refresh) between any two messages of an extended-protocol pipeline: every message still gets exactly PostgreSQL's replies.
//
// The session decides a prepared statement again at Bind (and a portal at Execute) when the policy version moved since
// it was decided. These tests drive a Session in memory against the scripted backend (test/helpers/in-memory.ts) with a
// gate that bumps the version at chosen points and, optionally, answers every decision asynchronously (as a decision
// that needs PostgreSQL's analysis or waits for a catalog refresh does). A version bump that changes no decision must
// leave the client's bytes exactly as without it; one that revokes the statement must put one refusal where
// PostgreSQL would put an error and then skip to Sync, as PostgreSQL does. Either way every Sync gets its ReadyForQuery.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import fc from 'fast-check';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createTokenVerifier, type TokenVerifier } from '../../../proxy/auth/jwt.ts';
import { mintToken } from '../../../proxy/auth/mint.ts';
import type { Config } from '../../../proxy/config/types.ts';
import { CancelRegistry } from '../../../proxy/session/cancel.ts';
import type { StatementGate } from '../../../proxy/session/gate.ts';
import { createPolicyGate, type PolicyGate } from '../../../proxy/session/policy-gate.ts';
import { Session } from '../../../proxy/session/session.ts';
import type { Decision } from '../../../policy/types.ts';
import { initParser } from '../../../policy/parser.ts';
import { PolicyStore } from '../../../policy/store.ts';
import { CATALOG } from '../../fixtures/catalog.ts';
import { Bytes, startupPacket, typed } from '../../helpers/bytes.ts';
import { FakeUpstream, MessageReader, duplexPair, errorFields } from '../../helpers/in-memory.ts';
import { makeTempDir, testAuthConfig, writeHmacSecret } from '../../helpers/keys.ts';
import { bind, closeMessage, execute, flush, parse, sync } from '../../helpers/raw-client.ts';

const POLICY = `roles:
  analyst:
    readOnly: true
    relations: [public.orders, public.customers]
    statementTimeout: 5s
`;

const SELECT_ORDERS = 'SELECT id FROM orders';
const ORDERS = { columns: ['id'], rows: [['1'], ['2']], tag: 'SELECT 2' };
const SELECT_CUSTOMERS = 'SELECT id FROM customers';
const CUSTOMERS = { columns: ['id'], rows: [['7']], tag: 'SELECT 1' };
/** Not a statement the backend knows: it fails as PostgreSQL fails text it cannot parse (an error mid-pipeline). */
const BAD = 'SELECT FROM nowhere_at_all';

let tmp: ReturnType<typeof makeTempDir>;
let config: Config;
let store: PolicyStore;
let inner: PolicyGate;
let verifier: TokenVerifier;

beforeAll(async () => {
  await initParser();
  tmp = makeTempDir('pgwarden-reload-pipeline-');
  const s = writeHmacSecret(tmp.dir);
  const policyFile = path.join(tmp.dir, 'policy.yaml');
  writeFileSync(policyFile, POLICY);
  config = {
    baseDir: tmp.dir,
    listen: { host: '127.0.0.1', port: 0, tls: undefined },
    upstream: {
      host: 'upstream.invalid',
      port: 5432,
      database: 'app',
      user: 'pgwarden',
      password: undefined,
      sslmode: 'disable',
      sslRootCert: undefined,
      connectTimeout: 5_000,
    },
    auth: testAuthConfig({ secretFile: s.path, clockSkew: 0, jwksTimeout: undefined }),
    policyFile,
    metrics: undefined,
    limits: {
      maxMessageSize: 1024 * 1024,
      handshakeTimeout: 5_000,
      expiryGrace: 0,
      maxClientConnections: 10,
      idleSessionTimeout: 0,
    },
    log: { level: 'silent' },
  };
  store = await PolicyStore.open({ file: policyFile, watch: false, loadCatalog: async () => CATALOG });
  inner = createPolicyGate(store);
  verifier = await createTokenVerifier(config.auth);
});

afterAll(async () => {
  await inner?.close();
  store?.close();
  tmp?.cleanup();
});

/**
 * The real gate, with a version of its own that a test bumps (a reload the session sees), decisions answered a tick
 * later when `async`, and, once `revoked`, every decision of SELECT_ORDERS refused as a reload that took it away would.
 */
class ReloadingGate implements StatementGate {
  bumps = 0;
  revoked = false;
  decisions = 0;
  /** Bump the version when the decision with this index (0-based) is made, after the session read the version. */
  bumpAtDecision = new Set<number>();
  constructor(readonly async: boolean) {}
  get version(): number {
    return inner.version + this.bumps;
  }
  role(name: string) {
    return inner.role(name);
  }
  catalogSettled(): void {
    inner.catalogSettled();
  }
  bump(revoke = false): void {
    this.bumps++;
    if (revoke) this.revoked = true;
  }
  decide(...args: Parameters<StatementGate['decide']>): Decision | Promise<Decision> {
    const i = this.decisions++;
    const answer = (): Decision | Promise<Decision> => {
      if (this.bumpAtDecision.has(i)) this.bump();
      if (this.revoked && args[0] === SELECT_ORDERS)
        return {
          allow: false,
          ruleId: 'test.revoked',
          sqlstate: '42501',
          message: 'permission denied by pgwarden: revoked by a reload',
          detail: undefined,
          hint: undefined,
          reason: 'relation_not_allowed',
          statements: [],
        };
      return inner.decide(...args);
    };
    if (!this.async) return answer();
    return new Promise((r) => setImmediate(() => r(answer())));
  }
}

interface Harness {
  session: Session;
  client: Duplex;
  got: MessageReader;
  upstream: FakeUpstream;
  gate: ReloadingGate;
}

const open: Harness[] = [];
afterEach(() => {
  for (const h of open.splice(0)) {
    h.session.close('client');
    h.client.destroy();
  }
});

function start(async: boolean): Harness {
  const [client, server] = duplexPair();
  Object.assign(server, { remoteAddress: '127.0.0.1' });
  const upstream = new FakeUpstream();
  upstream.onBackend = (b) => {
    b.results.set(SELECT_ORDERS, ORDERS);
    b.results.set(SELECT_CUSTOMERS, CUSTOMERS);
  };
  const gate = new ReloadingGate(async);
  const session = new Session(server, {
    config,
    verifier,
    gate,
    cancels: new CancelRegistry(),
    log: pino({ level: 'silent' }),
    tlsContext: undefined,
    upstream,
  });
  const h = { session, client, got: new MessageReader(client), upstream, gate };
  open.push(h);
  return h;
}

const STARTUP = startupPacket([
  ['user', 'alice'],
  ['database', 'app'],
]);
const password = (t: string) => typed('p', new Bytes().cstr(t));
const describeMessage = (target: 'S' | 'P', name: string) =>
  typed('D', new Bytes().u8(target.charCodeAt(0)).cstr(name));

async function login(h: Harness): Promise<number> {
  h.client.write(STARTUP);
  h.client.write(
    password(await mintToken(config.auth, { sub: 'alice', role: 'analyst', agent: 'agent-1' }, 5 * 60_000)),
  );
  await h.got.typeAfter('Z', 0);
  return h.got.messages.length;
}

const tick = () => new Promise<void>((r) => setImmediate(r));

/** Sends `msgs` one write at a time, running `between(i)` before message i; returns the replies once `syncs` ReadyForQuery came. */
async function run(
  h: Harness,
  msgs: Buffer[],
  between: (i: number) => void,
  syncs: number,
  pause = false,
): Promise<{ type: string; raw: Buffer }[]> {
  const from = await login(h);
  for (let i = 0; i < msgs.length; i++) {
    between(i);
    h.client.write(msgs[i] as Buffer);
    if (pause) for (let k = 0; k < 4; k++) await tick();
  }
  await h.got.until(
    () => h.got.messages.slice(from).filter((m) => m.type === 'Z').length >= syncs,
    `${syncs} ReadyForQuery`,
    3_000,
  );
  // Nothing more may follow: one ReadyForQuery per Sync, no stray replies.
  for (let k = 0; k < 8; k++) await tick();
  return h.got.messages.slice(from).map((m) => ({ type: m.type, raw: m.raw }));
}

const T = (m: { type: string }[]) => m.map((x) => x.type).join('');

describe('a policy version change between Parse and Bind of one pipeline', () => {
  it('that revokes the statement: one refusal at the Bind, nothing more until Sync, then the statement is closed after the batch', async () => {
    const h = start(false);
    const msgs = [parse('S1', SELECT_ORDERS), bind('', 'S1'), describeMessage('P', ''), execute(''), sync()];
    // Each message written on its own once the previous one is answered: the tracker has nothing outstanding when the
    // Bind is refused, which is when pgwarden used to slip its own Close and Sync into the client's open batch.
    const got = await run(h, msgs, (i) => i === 1 && h.gate.bump(true), 1, true);
    expect(T(got)).toBe('1EZ');
    expect(got[0]?.raw).toEqual(typed('1'));
    expect(errorFields(got[1]?.raw.subarray(5) as Buffer)).toContainEqual(['C', '42501']);
    expect(errorFields(got[1]?.raw.subarray(5) as Buffer).find(([k]) => k === 'M')?.[1]).toMatch(
      /^prepared statement "S1" is no longer allowed: the policy changed/,
    );
    expect(got[2]?.raw).toEqual(typed('Z', new Bytes().str('I')));
    // Upstream: the Parse, the refusal's sentinel, then Describe and Execute that PostgreSQL skips, the client's Sync;
    // pgwarden's Close of S1 and its own Sync only after the client's batch ended.
    const b = h.upstream.backends[0];
    const sent = b?.received.map((m) => m.type).join('');
    expect(sent?.startsWith('PPDPS')).toBe(true);
    // The client's next batch: the Close goes before it, and the refusal still stands.
    const from = h.got.messages.length;
    h.client.write(Buffer.concat([bind('', 'S1'), execute(''), sync()]));
    await h.got.until(() => h.got.messages.slice(from).some((m) => m.type === 'Z'), 'ReadyForQuery');
    expect(T(h.got.messages.slice(from))).toBe('EZ');
    expect(b?.received.map((m) => m.type).join('')).toBe('PPDPSCSPPS');
  });

  for (const async of [false, true])
    for (const pause of [false, true])
      it(`that changes nothing: the same bytes as without it (decisions ${async ? 'async' : 'at once'}, messages ${pause ? 'one by one' : 'together'})`, async () => {
        const msgs = [parse('S1', SELECT_ORDERS), bind('', 'S1'), describeMessage('P', ''), execute(''), sync()];
        const base = await run(start(async), msgs, () => {}, 1, pause);
        const h = start(async);
        const got = await run(h, msgs, (i) => i === 1 && h.gate.bump(false), 1, pause);
        expect(T(got)).toBe('12TDDCZ');
        expect(Buffer.concat(got.map((m) => m.raw))).toEqual(Buffer.concat(base.map((m) => m.raw)));
      });
});

describe('a Parse or Close that PostgreSQL skips after an error leaves the name as it was upstream', () => {
  // S1 is prepared as SELECT_ORDERS; then a batch fails before its Close S1 and Parse S1 (another text), so upstream
  // S1 is still SELECT_ORDERS. A reload revokes SELECT_ORDERS: a Bind of S1 must be decided as SELECT_ORDERS (refused),
  // never as the text of the skipped Parse (allowed) while PostgreSQL runs the old one.
  const replace = [
    parse('', BAD),
    bind('', ''),
    execute(''),
    closeMessage('S', 'S1'),
    parse('S1', SELECT_CUSTOMERS),
    sync(),
  ];
  for (const together of [false, true])
    it(`a Bind of the name is decided as the statement PostgreSQL still holds (${together ? 'all pipelined: the Bind waits for the answer' : 'batch by batch'})`, async () => {
      const h = start(false);
      const from = await login(h);
      h.client.write(Buffer.concat([parse('S1', SELECT_ORDERS), sync()]));
      await h.got.until(() => h.got.messages.slice(from).filter((m) => m.type === 'Z').length === 1, 'Z');
      const use = Buffer.concat([bind('', 'S1'), execute(''), sync()]);
      if (together) {
        h.gate.bump(true);
        h.client.write(Buffer.concat([...replace, use]));
      } else {
        h.client.write(Buffer.concat(replace));
        await h.got.until(() => h.got.messages.slice(from).filter((m) => m.type === 'Z').length === 2, 'Z');
        h.gate.bump(true);
        h.client.write(use);
      }
      await h.got.until(() => h.got.messages.slice(from).filter((m) => m.type === 'Z').length === 3, 'Z');
      for (let k = 0; k < 8; k++) await tick();
      const got = h.got.messages.slice(from);
      // Before: 1Z EZ 2DDCZ — the revoked SELECT_ORDERS ran under the skipped Parse's decision.
      expect(T(got)).toBe('1ZEZEZ');
      const refusal = errorFields(got[4]?.raw.subarray(5) as Buffer);
      expect(refusal).toContainEqual(['C', '42501']);
      expect(h.upstream.backends[0]?.received.filter((m) => m.type === 'E')).toHaveLength(1);
    });
});

describe('a simple Query inside an unfinished extended-protocol batch', () => {
  it('is refused (0A000), answered with its ReadyForQuery, and the batch stays open until its Sync', async () => {
    const h = start(false);
    const from = await login(h);
    h.client.write(Buffer.concat([parse('S1', SELECT_ORDERS), typed('Q', new Bytes().cstr(SELECT_ORDERS)), sync()]));
    await h.got.until(() => h.got.messages.slice(from).filter((m) => m.type === 'Z').length === 2, 'Z');
    const got = h.got.messages.slice(from);
    expect(T(got)).toBe('1EZZ');
    expect(errorFields(got[1]?.raw.subarray(5) as Buffer)).toContainEqual(['C', '0A000']);
    // Never run: PostgreSQL would ignore it after an error in the batch, and pgwarden cannot know at send time.
    expect(h.upstream.backends[0]?.received.filter((m) => m.type === 'Q').map((m) => m.body.toString())).not.toContain(
      `${SELECT_ORDERS}\0`,
    );
  });
});

/** One message of a random pipeline. */
type Step =
  | { m: 'parse'; name: string; text: string }
  | { m: 'bind'; portal: string; name: string }
  | { m: 'describe'; target: 'S' | 'P'; name: string }
  | { m: 'execute'; portal: string }
  | { m: 'close'; target: 'S' | 'P'; name: string }
  | { m: 'flush' }
  | { m: 'sync' };

const NAMES = ['', 'S1'];
const PORTALS = ['', 'P1'];
const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({
    m: fc.constant('parse' as const),
    name: fc.constantFrom(...NAMES),
    text: fc.constantFrom(SELECT_ORDERS, SELECT_CUSTOMERS, BAD),
  }),
  fc.record({ m: fc.constant('bind' as const), portal: fc.constantFrom(...PORTALS), name: fc.constantFrom(...NAMES) }),
  fc.record({
    m: fc.constant('describe' as const),
    target: fc.constantFrom('S' as const, 'P' as const),
    name: fc.constantFrom(...NAMES),
  }),
  fc.record({ m: fc.constant('execute' as const), portal: fc.constantFrom(...PORTALS) }),
  fc.record({
    m: fc.constant('close' as const),
    target: fc.constantFrom('S' as const, 'P' as const),
    name: fc.constantFrom(...NAMES),
  }),
  fc.constant({ m: 'flush' as const }),
  fc.constant({ m: 'sync' as const }),
);

function encode(s: Step): Buffer {
  switch (s.m) {
    case 'parse':
      return parse(s.name, s.text);
    case 'bind':
      return bind(s.portal, s.name);
    case 'describe':
      return describeMessage(s.target, s.name);
    case 'execute':
      return execute(s.portal);
    case 'close':
      return closeMessage(s.target, s.name);
    case 'flush':
      return flush();
    case 'sync':
      return sync();
  }
}

/** Whole moves on S1: an error that makes PostgreSQL skip to Sync, closing and preparing S1 again, using it. */
const MOVES: Step[][] = [
  [{ m: 'parse', name: '', text: BAD }],
  [{ m: 'close', target: 'S', name: 'S1' }],
  [{ m: 'parse', name: 'S1', text: SELECT_CUSTOMERS }],
  [{ m: 'parse', name: 'S1', text: SELECT_ORDERS }],
  [
    { m: 'bind', portal: '', name: 'S1' },
    { m: 'execute', portal: '' },
  ],
  [{ m: 'sync' }],
];

/** A pipeline that prepares S1 first (so there is something to decide again), then random messages, then Sync. */
const pipeline = fc
  .array(step, { minLength: 1, maxLength: 12 })
  .map((steps) => [{ m: 'parse', name: 'S1', text: SELECT_ORDERS } as Step, ...steps, { m: 'sync' } as Step]);

describe('property: version changes at random points of random pipelines', () => {
  it('a change that alters no decision never alters a reply', async () => {
    await fc.assert(
      fc.asyncProperty(
        pipeline,
        fc.array(fc.nat(14), { maxLength: 4 }),
        fc.boolean(),
        fc.boolean(),
        async (steps, at, async, pause) => {
          const msgs = steps.map(encode);
          const syncs = steps.filter((s) => s.m === 'sync').length;
          const base = await run(start(async), msgs, () => {}, syncs, pause);
          const h = start(async);
          const got = await run(h, msgs, (i) => at.includes(i) && h.gate.bump(false), syncs, pause);
          expect(T(got)).toBe(T(base));
          expect(Buffer.concat(got.map((m) => m.raw))).toEqual(Buffer.concat(base.map((m) => m.raw)));
          for (const x of open.splice(0)) {
            x.session.close('client');
            x.client.destroy();
          }
        },
      ),
      { numRuns: 60 },
    );
  });

  it('after a reload revokes a prepared statement, none of its rows reaches the client, whatever the pipeline does with its name', async () => {
    await fc.assert(
      fc.asyncProperty(
        // Moves on the name S1 and errors between them: the random steps above, and whole moves often enough to meet.
        fc
          .array(
            fc.oneof(
              step.map((x) => [x]),
              fc.constantFrom(...MOVES),
            ),
            { minLength: 1, maxLength: 10 },
          )
          .map((moves) => moves.flat()),
        fc.boolean(),
        fc.boolean(),
        async (steps, async, together) => {
          const h = start(async);
          const from = await login(h);
          h.client.write(Buffer.concat([parse('S1', SELECT_ORDERS), sync()]));
          await h.got.until(() => h.got.messages.slice(from).some((m) => m.type === 'Z'), 'Z');
          h.gate.bump(true);
          const all = [...steps, { m: 'sync' } as Step];
          if (together) h.client.write(Buffer.concat(all.map(encode)));
          else
            for (const st of all) {
              h.client.write(encode(st));
              for (let k = 0; k < 3; k++) await tick();
            }
          const syncs = 1 + all.filter((x) => x.m === 'sync').length;
          await h.got.until(
            () => h.got.messages.slice(from).filter((m) => m.type === 'Z').length >= syncs,
            'every ReadyForQuery',
            3_000,
          );
          // SELECT_ORDERS's rows are '1' and '2'; only SELECT_CUSTOMERS ('7') may run now.
          const rows = h.got.messages.slice(from).filter((m) => m.type === 'D');
          for (const r of rows) expect(r.raw.subarray(11).toString()).toBe('7');
          for (const x of open.splice(0)) {
            x.session.close('client');
            x.client.destroy();
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('a change that revokes the statement: every Sync answered, at most one error per batch and nothing after it until ReadyForQuery', async () => {
    await fc.assert(
      fc.asyncProperty(pipeline, fc.nat(14), fc.boolean(), fc.boolean(), async (steps, at, async, pause) => {
        const msgs = steps.map(encode);
        const syncs = steps.filter((s) => s.m === 'sync').length;
        const h = start(async);
        const got = await run(h, msgs, (i) => i === at && h.gate.bump(true), syncs, pause);
        expect(got.filter((m) => m.type === 'Z')).toHaveLength(syncs);
        expect(got.at(-1)?.type).toBe('Z');
        // Per batch: PostgreSQL answers nothing after an error until its Sync's ReadyForQuery.
        for (const batch of T(got).split('Z').slice(0, -1)) expect(batch).toMatch(/^[^E]*E?$/);
        for (const x of open.splice(0)) {
          x.session.close('client');
          x.client.destroy();
        }
      }),
      { numRuns: 60 },
    );
  });
});
