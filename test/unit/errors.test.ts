// The error catalog is honest: unique codes with named SQLSTATEs and reasons, every site that builds an error uses a catalog code and a SQLSTATE and reason the catalog lists for it, every refusing decision maps to a reason, and docs/errors.md is generated from it.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  clientMessage,
  detailWithReason,
  ErrorCatalog,
  ProxyError,
  Reasons,
  type CatalogEntry,
  type ReasonCode,
} from '../../lib/errors.ts';
import { DECISION_REASONS, refusalReason } from '../../policy/reasons.ts';
import { fatalFrame } from '../../proxy/session/pipeline.ts';
import { decodeErrorFields, encodeProxyError } from '../../proxy/wire/backend.ts';
import { SqlState } from '../../lib/sqlstate.ts';
import { ERRORS_DOC, renderErrorsDoc } from '../../tools/errors-doc.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CATALOG = ErrorCatalog as Record<string, CatalogEntry>;
const NAMED = new Map<string, string>(Object.entries(SqlState));
const NAMED_VALUES = new Set<string>(Object.values(SqlState));

interface Source {
  file: string;
  text: string;
}

/** Top-level folders that hold no code a running pgwarden uses; every other folder is scanned (a new one too). */
const NOT_PGWARDEN = new Set([
  'node_modules',
  'test',
  'bench',
  'docs',
  'docker',
  'tools',
  'bin',
  '.git',
  '.ci',
  '.scratch',
]);

/** Every TypeScript source of pgwarden itself (what can build an error a client sees). */
function sources(): Source[] {
  const out: Source[] = [];
  const walk = (dir: string): void => {
    for (const e of readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
      const rel = path.join(dir, e.name);
      if (e.isDirectory()) walk(rel);
      else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts'))
        out.push({ file: rel, text: readFileSync(path.join(ROOT, rel), 'utf8') });
    }
  };
  for (const e of readdirSync(ROOT, { withFileTypes: true }))
    if (e.isDirectory() && !NOT_PGWARDEN.has(e.name)) walk(e.name);
  return out;
}

/** Source with line comments and comment-only lines blanked (a code named in prose is not a use); strings kept. */
function code(text: string): string {
  return text
    .split('\n')
    .map((line) => {
      const t = line.trimStart();
      if (t.startsWith('//') || t.startsWith('*') || t.startsWith('/*')) return '';
      const i = line.indexOf(' // ');
      return i >= 0 ? line.slice(0, i) : line;
    })
    .join('\n');
}

/** Index just past the string literal starting at `i` (quote or backtick; template substitutions skipped whole). */
function skipString(text: string, i: number): number {
  const q = text[i];
  let j = i + 1;
  while (j < text.length && text[j] !== q) {
    if (text[j] === '\\') j += 2;
    else if (q === '`' && text[j] === '$' && text[j + 1] === '{') j = skipBalanced(text, j + 1, '{', '}');
    else j++;
  }
  return j + 1;
}

/** Index just past the bracket matching the one at `i`, skipping strings. */
function skipBalanced(text: string, i: number, open: string, close: string): number {
  let depth = 0;
  let j = i;
  while (j < text.length) {
    const c = text[j];
    if (c === "'" || c === '"' || c === '`') {
      j = skipString(text, j);
      continue;
    }
    if (c === open) depth++;
    else if (c === close && --depth === 0) return j + 1;
    j++;
  }
  throw new Error(`unbalanced ${open} at ${i}`);
}

/** The text of each call `name(…)` in `text` (arguments only, without the parentheses). */
function calls(text: string, name: string): string[] {
  const out: string[] = [];
  for (let i = text.indexOf(name); i >= 0; i = text.indexOf(name, i + 1)) {
    const open = i + name.length;
    if (text[open] !== '(') continue;
    out.push(text.slice(open + 1, skipBalanced(text, open, '(', ')') - 1));
  }
  return out;
}

/** The first top-level argument of an argument list. */
function firstArg(args: string): string {
  let j = 0;
  while (j < args.length && args[j] !== ',') {
    const c = args[j];
    if (c === "'" || c === '"' || c === '`') j = skipString(args, j);
    else if (c === '(' || c === '{' || c === '[') j = skipBalanced(args, j, c, c === '(' ? ')' : c === '{' ? '}' : ']');
    else j++;
  }
  return args.slice(0, j).trim();
}

/**
 * SQLSTATE values written at `sqlstate` sites of a text: `sqlstate: '42501'`, `sqlstate === '0A000'`, `SqlState.X`;
 * with `assigned`, only those given as a value (`sqlstate: …`), not compared against.
 */
function sqlstatesIn(text: string, assigned = false): { value: string | undefined; spelled: string }[] {
  const out: { value: string | undefined; spelled: string }[] = [];
  for (const m of text.matchAll(assigned ? /sqlstate\s*:\s*'([^']*)'/g : /sqlstate\s*(?::|===|!==)\s*'([^']*)'/g))
    out.push({ value: m[1], spelled: m[0] });
  for (const m of text.matchAll(assigned ? /sqlstate\s*:\s*SqlState\.(\w+)/g : /\bSqlState\.(\w+)/g))
    out.push({ value: NAMED.get(m[1] ?? ''), spelled: m[0] });
  return out;
}

/** Node.js's own error codes, which pgwarden compares against (or sets on a Node-style error); not ProxyError codes. */
const NODE_ERROR_CODES = new Set(['ERR_WORKER_OUT_OF_MEMORY', 'ERR_TLS_CERT_ALTNAME_INVALID']);

/** Codes of errors that never reach a client: a failed first policy load stops pgwarden from starting (CLI output). */
const STARTUP_ERROR_CODES = new Set(['ERR_POLICY_INVALID']);

const allowedFor = (e: CatalogEntry): Set<string> => new Set([e.sqlstate, ...(e.alsoSqlstates ?? [])]);
const CATALOG_SQLSTATES = new Set(Object.values(CATALOG).flatMap((e) => [...allowedFor(e)]));

/** Everything wrong with how these sources build errors; empty when every site uses the catalog. */
function problems(files: Source[]): string[] {
  const out: string[] = [];
  for (const { file, text: raw } of files) {
    const text = code(raw);
    // Any error code spelled anywhere (a construction, a comparison, an audit field) is one the catalog has.
    for (const m of text.matchAll(/'(ERR_[A-Z0-9_]+)'/g)) {
      const c = m[1] as string;
      if (!(c in CATALOG) && !NODE_ERROR_CODES.has(c) && !STARTUP_ERROR_CODES.has(c))
        out.push(`${file}: ${m[0]} is not in the error catalog`);
    }
    for (const args of calls(text, 'new ProxyError')) {
      const first = firstArg(args);
      const codes = [...first.matchAll(/'(ERR_[A-Z0-9_]+)'/g)].map((m) => m[1] as string);
      // An identifier is typed ErrorCode by the constructor; a cast would let any string through.
      if (codes.length === 0 && !/^[A-Za-z_$][\w$]*$/.test(first))
        out.push(`${file}: new ProxyError(${first}, …) does not name a catalog code`);
      // The reason: a code with one reason gets it by default; with several (or a code not spelled here) the site names it.
      const rest = args.slice(first.length);
      const hasReason = /\breason\s*[:,}]/.test(rest);
      if ((codes.length === 0 || codes.some((c) => (CATALOG[c]?.reasons.length ?? 0) > 1)) && !hasReason)
        out.push(`${file}: new ProxyError(${first}, …) sends a code with several reasons without naming one`);
      for (const m of rest.matchAll(/\breason\s*:\s*'([^']*)'/g)) {
        const r = m[1] as string;
        for (const c of codes)
          if (CATALOG[c] !== undefined && !(CATALOG[c].reasons as readonly string[]).includes(r))
            out.push(`${file}: ${c} is sent with reason '${r}', which the catalog does not list for it`);
      }
      for (const c of codes) {
        const entry = CATALOG[c];
        if (entry === undefined) continue;
        for (const s of sqlstatesIn(args.slice(first.length), true)) {
          if (s.value !== undefined && !allowedFor(entry).has(s.value))
            out.push(`${file}: ${c} is sent with ${s.spelled} (${s.value}), which the catalog does not list for it`);
        }
      }
    }
    // Notices are not errors (the row-cap truncation WARNING); they still use named SQLSTATEs.
    const notices = calls(text, 'encodeNoticeResponse').join('\n');
    for (const s of sqlstatesIn(notices)) {
      if (s.value === undefined || !NAMED_VALUES.has(s.value))
        out.push(`${file}: notice with ${s.spelled}, not a named SQLSTATE`);
    }
    // The one encoder builds ErrorResponses field by field; everywhere else goes through it.
    if (!/export function encodeErrorResponse\b/.test(text)) {
      // A frame built field by field would bypass the catalog and the one encoder.
      for (const m of text.matchAll(/Field\.Code\)\.cstring\(|\.cstring\(SqlState\.\w+/g))
        out.push(`${file}: ${m[0]}: an error or notice built by hand; use encodeProxyError or encodeNoticeResponse`);
      // Outside the encoder, an ErrorResponse carries a ProxyError's fields, never a SQLSTATE of its own.
      for (const args of calls(text, 'encodeErrorResponse')) {
        const m = /sqlstate:\s*([^,}\n]+)/.exec(args);
        if (m === null || !/^\w+\.sqlstate$/.test((m[1] ?? '').trim()))
          out.push(`${file}: encodeErrorResponse with ${m?.[0] ?? 'no sqlstate'}: build a ProxyError instead`);
        // The message a client sees ends with the reason; only clientMessage knows when (and when not: postgresMessage).
        if (!/message:\s*clientMessage\(/.test(args))
          out.push(`${file}: encodeErrorResponse whose message is not clientMessage(…): the reason would be missing`);
      }
    }
    // Every SQLSTATE written at a sqlstate site (decisions, audit events, overrides) is named and in the catalog.
    let rest = text;
    for (const n of calls(text, 'encodeNoticeResponse')) rest = rest.replace(n, '');
    for (const s of sqlstatesIn(rest)) {
      if (s.value === undefined || !NAMED_VALUES.has(s.value))
        out.push(`${file}: ${s.spelled} is not a named SQLSTATE (lib/sqlstate.ts)`);
      else if (!CATALOG_SQLSTATES.has(s.value))
        out.push(`${file}: ${s.spelled} (${s.value}) is sent by no catalog entry`);
    }
  }
  return out;
}

/** The file that defines the catalog, wherever it lives. */
const CATALOG_SOURCE: Source = (() => {
  const found = sources().filter((f) => f.text.includes('export const ErrorCatalog = {'));
  if (found.length !== 1) throw new Error(`expected one file defining ErrorCatalog, found ${found.length}`);
  return found[0] as Source;
})();

describe('the error catalog', () => {
  it('has each code once, spelled ERR_*, and as many entries as the source writes', () => {
    const text = CATALOG_SOURCE.text;
    const block = text.slice(text.indexOf('export const ErrorCatalog = {'), text.indexOf('} as const satisfies'));
    // Read from the source: an object literal keeps only the last of two equal keys, so the object cannot tell.
    const written = [...block.matchAll(/^ {2}(\w+): \{/gm)].map((m) => m[1]);
    expect(written.length).toBeGreaterThan(10);
    expect(new Set(written).size).toBe(written.length);
    expect(written).toEqual(Object.keys(CATALOG));
    for (const c of written) expect(c).toMatch(/^ERR_[A-Z][A-Z0-9_]*$/);
  });

  it('gives every entry a named SQLSTATE, a severity, and its own doc line, message and hint shape', () => {
    const docs = new Set<string>();
    for (const [c, e] of Object.entries(CATALOG)) {
      expect(NAMED_VALUES, `${c}: ${e.sqlstate}`).toContain(e.sqlstate);
      for (const s of e.alsoSqlstates ?? []) {
        expect(NAMED_VALUES, `${c}: ${s}`).toContain(s);
        expect(s, c).not.toBe(e.sqlstate);
      }
      expect(['ERROR', 'FATAL']).toContain(e.severity);
      expect(e.doc.length, c).toBeGreaterThan(10);
      expect(e.message.length, c).toBeGreaterThan(5);
      expect(e.hint === undefined || e.hint.length > 0, c).toBe(true);
      expect(docs.has(e.doc), `${c} repeats another entry's doc line`).toBe(false);
      docs.add(e.doc);
    }
  });

  it('ProxyError takes its SQLSTATE and severity from the catalog unless a site overrides them', () => {
    for (const [c, e] of Object.entries(CATALOG)) {
      const err = new ProxyError(c as keyof typeof ErrorCatalog, 'm');
      expect([err.code, err.sqlstate, err.severity]).toEqual([c, e.sqlstate, e.severity]);
    }
  });
});

describe('every error pgwarden builds uses the catalog', () => {
  const files = sources();

  it('reads the sources it checks', () => {
    expect(files.some((f) => f.file.endsWith(path.join('session', 'session.ts')))).toBe(true);
    expect(files.some((f) => f.file.startsWith(`policy${path.sep}`))).toBe(true);
    expect(files.length).toBeGreaterThan(40);
  });

  it('finds no construction, SQLSTATE or ErrorResponse outside the catalog', () => {
    expect(problems(files)).toEqual([]);
  });

  it('uses every catalog code somewhere (no entry describes an error nothing sends)', () => {
    const all = files
      .filter((f) => f !== CATALOG_SOURCE && f.file !== CATALOG_SOURCE.file)
      .map((f) => code(f.text))
      .join('\n');
    const unused = Object.keys(CATALOG).filter((c) => !all.includes(`'${c}'`));
    // ERR_INTERNAL is also built by toClientError in errors.ts itself; it is used by the session too.
    expect(unused).toEqual([]);
  });

  it('catches what it is meant to catch (the checker itself can fail)', () => {
    const bad: Source = {
      file: 'proxy/bad.ts',
      text: [
        "throw new ProxyError('ERR_NOPE', 'x');",
        // biome-ignore lint/suspicious/noTemplateCurlyInString: source text under test, not a template
        "throw new ProxyError('ERR_TOO_MANY', `too many (${n})`, { sqlstate: SqlState.InsufficientPrivilege });",
        'w.uint8(Field.Code).cstring(SqlState.InternalError);',
        "throw new ProxyError(code as ErrorCode, 'x');",
        "const d = { allow: false, sqlstate: '58P02', message: 'x' };",
        "const e = { sqlstate: '22012' };",
        "out.push(encodeErrorResponse({ severity: 'ERROR', sqlstate: '42501', message: 'x' }));",
        'out.push(encodeErrorResponse({ severity: e.severity, sqlstate: e.sqlstate, message: e.message }));',
        "// new ProxyError('ERR_IN_A_COMMENT', 'prose is not a use')",
        "throw new ProxyError('ERR_SHUTDOWN', 'x', { reason: 'budget_exceeded' });",
      ].join('\n'),
    };
    expect(problems([bad])).toEqual([
      "proxy/bad.ts: 'ERR_NOPE' is not in the error catalog",
      "proxy/bad.ts: new ProxyError('ERR_TOO_MANY', …) sends a code with several reasons without naming one",
      'proxy/bad.ts: ERR_TOO_MANY is sent with sqlstate: SqlState.InsufficientPrivilege (42501), which the catalog does not list for it',
      'proxy/bad.ts: new ProxyError(code as ErrorCode, …) does not name a catalog code',
      'proxy/bad.ts: new ProxyError(code as ErrorCode, …) sends a code with several reasons without naming one',
      "proxy/bad.ts: ERR_SHUTDOWN is sent with reason 'budget_exceeded', which the catalog does not list for it",
      'proxy/bad.ts: Field.Code).cstring(: an error or notice built by hand; use encodeProxyError or encodeNoticeResponse',
      "proxy/bad.ts: encodeErrorResponse with sqlstate: '42501': build a ProxyError instead",
      'proxy/bad.ts: encodeErrorResponse whose message is not clientMessage(…): the reason would be missing',
      'proxy/bad.ts: encodeErrorResponse whose message is not clientMessage(…): the reason would be missing',
      "proxy/bad.ts: sqlstate: '58P02' is not a named SQLSTATE (lib/sqlstate.ts)",
      "proxy/bad.ts: sqlstate: '22012' is not a named SQLSTATE (lib/sqlstate.ts)",
    ]);
  });
});

/**
 * Files that build refusing decisions (the policy and the session's own refusals). Not policy/issuance.ts: the token
 * endpoint's decisions are answered over HTTP with RFC 6749 errors (docs/issuance.md), never as a PostgreSQL refusal.
 */
const DECISION_SOURCES = (files: Source[]): Source[] =>
  files.filter(
    (f) =>
      (f.file.startsWith(`policy${path.sep}`) && f.file !== path.join('policy', 'issuance.ts')) ||
      f.file.startsWith(path.join('proxy', 'session') + path.sep),
  );

/** Reasons spelled in those files that are not a refusal's: the policy store's load reason. */
const NOT_REFUSALS = new Set(['startup']);

describe('every refusal carries a reason', () => {
  it('gives every catalog entry its reasons from the documented set, and uses every reason', () => {
    const used = new Set<string>();
    for (const [c, e] of Object.entries(CATALOG)) {
      expect(e.reasons.length, c).toBeGreaterThan(0);
      expect(new Set(e.reasons).size, c).toBe(e.reasons.length);
      for (const r of e.reasons) {
        expect(Object.keys(Reasons), c).toContain(r);
        used.add(r);
      }
    }
    expect([...used].sort()).toEqual(Object.keys(Reasons).sort());
    for (const [r, doc] of Object.entries(Reasons)) expect(doc.length, r).toBeGreaterThan(20);
  });

  it('maps every reason a refusing decision is built with to an agent-facing one', () => {
    const found = new Set<string>();
    for (const { text: raw } of DECISION_SOURCES(sources())) {
      const text = code(raw);
      // Decision literals, deny('…'), failedRefusal('…'), refusal(SqlState.X, '…'); the parser's reasons are a type the table must cover.
      for (const m of text.matchAll(
        /\breason:\s*'([a-z_]+)'|\bdeny\('([a-z_]+)'|Refusal\('([a-z_]+)'|\brefusal\(\s*SqlState\.\w+,\s*'([a-z_]+)'/g,
      ))
        found.add((m[1] ?? m[2] ?? m[3] ?? m[4]) as string);
    }
    expect(found.size).toBeGreaterThan(25);
    const unmapped = [...found].filter(
      (r) => !Object.hasOwn(DECISION_REASONS, r) && !NOT_REFUSALS.has(r) && !Object.hasOwn(Reasons, r),
    );
    expect(unmapped).toEqual([]);
    // What a refusing decision maps to is a reason the codes it is sent under (42501 and the like, or 0A000) list (else the constructor would fall back).
    const statementReasons: readonly string[] = [
      ...ErrorCatalog.ERR_STATEMENT_DENIED.reasons,
      ...ErrorCatalog.ERR_FEATURE.reasons,
    ];
    for (const r of Object.values(DECISION_REASONS)) expect(statementReasons).toContain(r);
  });

  it('sends the reason a decision maps to, keeping the SQLSTATE class the catalog lists for it', () => {
    expect(refusalReason({ reason: 'relation_not_allowed', sqlstate: '42501' })).toBe('scope_missing');
    expect(refusalReason({ reason: 'write_in_read_only', sqlstate: '42501' })).toBe('policy_denied');
    expect(refusalReason({ reason: 'server_error', sqlstate: '42P01' })).toBe('statement_invalid');
    expect(refusalReason({ reason: 'server_error', sqlstate: '54000' })).toBe('limit_reached');
    expect(refusalReason({ reason: 'statement_too_large', sqlstate: '0A000' })).toBe('limit_reached');
    expect(refusalReason({ reason: 'parse_error', sqlstate: '0A000' })).toBe('unsupported');
    // Unknown to the table: refused all the same, and said so.
    expect(refusalReason({ reason: 'something_new', sqlstate: '42501' })).toBe('policy_denied');
  });

  it("puts the reason on the first line of DETAIL, the site's detail after it, and never the operator hint", () => {
    const err = new ProxyError('ERR_STATEMENT_DENIED', 'permission denied by pgwarden: x', {
      detail: 'a\nb',
      hint: 'h',
      reason: 'scope_missing',
      operatorHint: 'add public.x to roles.r.relations',
    });
    expect(err.reason).toBe('scope_missing');
    const frame = encodeProxyError(err).toString('utf8');
    expect(frame).toContain('Dreason=scope_missing\na\nb\0');
    expect(frame).not.toContain('roles.r.relations');
    expect(detailWithReason('policy_denied', undefined)).toBe('reason=policy_denied');
    // Every code's default is its first reason; a reason the entry does not list falls back to it.
    for (const [c, e] of Object.entries(CATALOG)) {
      expect(new ProxyError(c as keyof typeof ErrorCatalog, 'm').reason, c).toBe(e.reasons[0]);
      expect(
        new ProxyError(c as keyof typeof ErrorCatalog, 'm', { reason: 'nonexistent' as ReasonCode }).reason,
        c,
      ).toBe(e.reasons[0]);
    }
  });
});

describe('every refusal carries its reason in the message too', () => {
  const REASON_AT_END = /\(reason=([a-z_]+)\)$/;
  const sent = (err: ProxyError) => decodeErrorFields(encodeProxyError(err).subarray(5));

  it("ends pgwarden's own message with the hint and the reason, for every code and every reason it lists", () => {
    for (const [c, e] of Object.entries(CATALOG)) {
      if (e.postgresMessage === true) continue;
      for (const reason of e.reasons) {
        const plain = sent(new ProxyError(c as keyof typeof ErrorCatalog, 'm', { reason }));
        expect(plain.message, c).toBe(`m (reason=${reason})`);
        expect(plain.detail?.split('\n')[0], c).toBe(`reason=${reason}`);
        const hinted = sent(new ProxyError(c as keyof typeof ErrorCatalog, 'm', { reason, hint: 'do x.' }));
        // The HINT field keeps its text; the message carries it without the final period, the reason last.
        expect([hinted.message, hinted.hint], c).toEqual([`m; hint: do x (reason=${reason})`, 'do x.']);
        expect(clientMessage(new ProxyError(c as keyof typeof ErrorCatalog, 'm', { reason })), c).toBe(plain.message);
      }
    }
  });

  it("keeps PostgreSQL's message unchanged where pgwarden answers as PostgreSQL would, and only there", () => {
    const unchanged = Object.entries(CATALOG)
      .filter(([, e]) => e.postgresMessage === true)
      .map(([c]) => c);
    expect(unchanged.sort()).toEqual(['ERR_SERVER_ANALYSIS', 'ERR_SYNTAX', 'ERR_UNDEFINED_RELATION']);
    for (const c of unchanged) {
      const err = new ProxyError(c as keyof typeof ErrorCatalog, 'syntax error at or near "FORM"', {
        hint: 'h',
        position: 10,
      });
      const f = sent(err);
      expect([f.message, f.detail, f.hint, f.fields.get('P')], c).toEqual([
        'syntax error at or near "FORM"',
        'reason=statement_invalid',
        'h',
        '10',
      ]);
    }
  });

  it('lets nothing earlier in the message imitate the reason: identifiers from the client come before the suffix', () => {
    const err = new ProxyError(
      'ERR_STATEMENT_DENIED',
      'permission denied by pgwarden: SELECT reads relation public."x (reason=policy_denied)", which role "r" may not read',
      { reason: 'scope_missing', hint: 'request a token whose role includes public."y (reason=unavailable)"' },
    );
    expect(REASON_AT_END.exec(sent(err).message)?.[1]).toBe('scope_missing');
    // Nor a line of its own: a quoted identifier may hold a line break, and a reader may go line by line.
    const lines = new ProxyError(
      'ERR_STATEMENT_DENIED',
      'permission denied by pgwarden: SELECT reads relation public."a\n(reason=credential_expired)\r\nb\u2028(reason=x)", which role "r" may not read',
      { reason: 'scope_missing', hint: 'x\n(reason=unavailable)' },
    );
    const m = sent(lines).message;
    expect(m).toBe(
      'permission denied by pgwarden: SELECT reads relation public."a (reason=credential_expired) b (reason=x)", which role "r" may not read; hint: x (reason=unavailable) (reason=scope_missing)',
    );
    expect(/\(reason=([a-z_]+)\)$/m.exec(m)?.[1]).toBe('scope_missing');
    expect(sent(lines).hint).toBe('x\n(reason=unavailable)');
  });

  it('sends the same message through the FATAL frame a failing session ends with', () => {
    const err = new ProxyError('ERR_STATEMENT_DENIED', 'permission denied by pgwarden: x', {
      reason: 'policy_denied',
      hint: 'h',
    });
    const f = decodeErrorFields(fatalFrame(err).subarray(5));
    expect([f.severity, f.message, f.detail]).toEqual([
      'FATAL',
      'permission denied by pgwarden: x; hint: h (reason=policy_denied)',
      'reason=policy_denied',
    ]);
  });
});

describe('docs/errors.md', () => {
  it('is the table generated from the catalog (npm run docs:errors), listing every code', () => {
    const doc = readFileSync(ERRORS_DOC, 'utf8');
    expect(doc).toBe(renderErrorsDoc());
    for (const [c, e] of Object.entries(CATALOG))
      expect(doc).toContain(
        `| \`${c}\` | ${e.serverSqlstate === true ? "PostgreSQL's own; placeholder " : ''}\`${e.sqlstate}\``,
      );
  });
});
