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
  { title: 'message', value: (_code, e) => cell(e.message) },
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
