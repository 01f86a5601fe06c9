// Generates docs/errors.md from the error catalog (lib/errors.ts); `--write` updates the file, `--check` fails when it is stale.
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ErrorCatalog, Reasons, type CatalogEntry, type ReasonCode } from '../lib/errors.ts';
import { SqlState } from '../lib/sqlstate.ts';

export const ERRORS_DOC = fileURLToPath(new URL('../docs/errors.md', import.meta.url));

/** PostgreSQL's condition name for a SQLSTATE we name (SqlState.InsufficientPrivilege → insufficient_privilege). */
function conditionName(sqlstate: string): string {
  const name = Object.entries(SqlState).find(([, v]) => v === sqlstate)?.[0];
  if (name === undefined) throw new Error(`SQLSTATE ${sqlstate} is not a named constant in lib/sqlstate.ts`);
  return name.replace(/([a-z])([A-Z])/g, '$1_$2').toLowerCase();
}

/** Text safe inside a Markdown table cell. */
function cell(text: string): string {
  return text.replaceAll('|', '\\|').replaceAll('\n', ' ');
}

/** The columns of the table, in order; a field added to CatalogEntry becomes one more entry here. */
const COLUMNS: { title: string; value(code: string, e: CatalogEntry): string }[] = [
  { title: 'code', value: (code) => `\`${code}\`` },
  {
    title: 'SQLSTATE',
    value: (_code, e) => {
      const main = `\`${e.sqlstate}\` ${conditionName(e.sqlstate)}`;
      const server = e.serverSqlstate === true ? "PostgreSQL's own; placeholder " : '';
      const also = (e.alsoSqlstates ?? []).map((s) => `\`${s}\` ${conditionName(s)}`);
      return server + [main, ...also].join(', or ');
    },
  },
  { title: 'severity', value: (_code, e) => e.severity },
  { title: 'when', value: (_code, e) => cell(e.doc) },
  {
    title: 'message',
    value: (_code, e) =>
      e.postgresMessage === true
        ? `${cell(e.message)} (PostgreSQL's message, unchanged: no reason suffix)`
        : `${cell(e.message)}; hint: ‹hint› (reason=‹reason›)`,
  },
  { title: 'hint', value: (_code, e) => (e.hint === undefined ? '—' : cell(e.hint)) },
  { title: 'reasons', value: (_code, e) => e.reasons.map((r) => `\`${r}\``).join(', ') },
];

/** The whole of docs/errors.md. */
export function renderErrorsDoc(): string {
  const entries = Object.entries(ErrorCatalog) as [string, CatalogEntry][];
  const lines = [
    '# Errors pgwarden sends',
    '',
    '<!-- Generated from lib/errors.ts by `npm run docs:errors`; test/unit/errors.test.ts fails when this file is stale. -->',
    '',
    'Every error pgwarden itself originates has a code in its catalog (`lib/errors.ts`). Clients see the',
    "SQLSTATE, severity, message and hint; the code appears in pgwarden's log and audit trail (`code` of a",
    '`login_refused` event). `ERROR` leaves the session usable; `FATAL` ends it. Errors PostgreSQL raises while',
    'running an allowed statement reach the client unchanged and are not listed here.',
    '',
    'Messages and hints are shapes: ‹placeholders› stand for what varies, and each site words the text for its case',
    '(the detail, when present, names the rule or limit that applied; docs/limits.md lists every limit).',
    '',
    '## The reason at the end of the message',
    '',
    "pgwarden's own messages end with the hint and the reason, the reason always last:",
    '',
    '```',
    'permission denied by pgwarden: SELECT references column public.customers.ssn, which role "agent" may not read; hint: list the columns explicitly; allowed columns of public.customers: created_at, email, id, name (reason=scope_missing)',
    'statement refused by pgwarden: the budget of 2 statements per minute for this agent is used up; hint: retry in 41 s (reason=budget_exceeded)',
    'token expired at 2026-12-07T23:00:00.000Z; hint: Request a new token and reconnect with it as the password (reason=credential_expired)',
    'invalid message length (reason=protocol_error)',
    '```',
    '',
    'The suffix is `; hint: ‹the HINT field, without a final period›` when the error has a hint, then',
    '` (reason=‹reason›)`. It is there for clients that show only the message: the MCP servers of [mcp.md](mcp.md),',
    'ORMs and agent frameworks that turn an error into its message. A program reads the reason with',
    "`/\\(reason=([a-z_]+)\\)$/` on the message: nothing follows the suffix, so identifiers from the client's SQL earlier in",
    'the message cannot imitate it; and the message is one line (a line break in it, which a quoted identifier may hold,',
    'is sent as a space), so neither can a line of it. The DETAIL (first line `reason=…`, below) and the HINT field are',
    'sent as before; a client that shows them sees the hint twice. The hint is in the message too because it is what an',
    'agent can act on (the allowed columns, when to retry) and the MCP servers drop the HINT field.',
    '',
    'Errors pgwarden sends as PostgreSQL would (the entries marked "PostgreSQL\'s message, unchanged": a syntax error',
    "with its position, 42P01 for a missing relation inside the role's relations, the server analysis' own errors) keep",
    "PostgreSQL's message exactly, so a client or test comparing it with PostgreSQL's sees the same text; they carry the",
    'reason in DETAIL only. So do errors PostgreSQL raises while running an allowed statement (57014 for a cancel or a',
    'statement timeout, 23505, …), which pgwarden relays with their values scrubbed, and without the names PostgreSQL',
    "found by itself rather than in the client's text (the HINT `Perhaps you meant to reference the column …`, which",
    'may name a denied column; the DETAIL of a 2BP01 listing the dependent objects, which may lie outside the role;',
    'the referencing table of a 23503 raised on the referenced table, in its message, DETAIL and name fields; a CONTEXT',
    "with a frame of a named function's code, which names it and quotes its source; a DO block's own CONTEXT stays).",
    '',
    `| ${COLUMNS.map((c) => c.title).join(' | ')} |`,
    `| ${COLUMNS.map(() => '---').join(' | ')} |`,
    ...entries.map(([code, e]) => `| ${COLUMNS.map((c) => c.value(code, e)).join(' | ')} |`),
    '',
    '## Reasons',
    '',
    'Every error also carries a machine-readable reason, sent as the **first line of DETAIL**: `reason=scope_missing`;',
    "whatever detail the site gives (the rule that applied, PostgreSQL's own detail) follows on the next line. A program",
    "switches on `detail.split('\\n')[0]` (node-postgres `err.detail`, postgres.js `err.detail`, psycopg",
    '`e.diag.message_detail`, pgJDBC `getServerErrorMessage().getDetail()`); psql shows it as `DETAIL:  reason=…`. The set',
    'below is closed: a name keeps its meaning once published. The hint speaks to the agent (what it can do itself);',
    'what an operator could change in the policy goes to the audit trail (`operatorHint` of the `statement` or',
    '`login_refused` event, next to `refusal`, the same reason), never to the client.',
    '',
    '| reason | what it means, and what to do | sent with |',
    '| --- | --- | --- |',
    ...(Object.entries(Reasons) as [ReasonCode, string][]).map(([reason, doc]) => {
      const users = entries
        .filter(([, e]) => e.reasons.includes(reason))
        .map(
          ([code, e]) => `\`${code}\` (${[e.sqlstate, ...(e.alsoSqlstates ?? [])].map((s) => `\`${s}\``).join(', ')})`,
        );
      return `| \`${reason}\` | ${cell(doc)} | ${users.join(', ')} |`;
    }),
    '',
    "A result cut at a role's `maxRows` with `onRowCap: truncate` is not an error: the rows up to the cap arrive,",
    'then a `WARNING` notice (`01000`) saying so, whose DETAIL starts `reason=limit_reached`, then the command tag with',
    'the count sent ([policy.md](policy.md#row-cap-maxrows-and-onrowcap) says how each driver surfaces the notice).',
    '',
  ];
  return lines.join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const text = renderErrorsDoc();
  if (process.argv.includes('--write')) {
    writeFileSync(ERRORS_DOC, text);
  } else if (process.argv.includes('--check')) {
    if (readFileSync(ERRORS_DOC, 'utf8') !== text) {
      console.error('docs/errors.md is stale: run npm run docs:errors');
      process.exit(1);
    }
  } else {
    process.stdout.write(text);
  }
}
