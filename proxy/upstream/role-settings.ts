// At startup: the settings a DBA should put on pgwarden's upstream role (docs/deploy.md), checked once, and one warning naming the missing ones with the ALTER ROLE to run.
import type { Logger } from 'pino';
import { quoteIdent } from '../../lib/ident.ts';
import type { CatalogQuery } from '../../policy/catalog.ts';

/** A recommended setting: what a fresh session of the role has, why it matters, and the value to suggest. */
interface Recommendation {
  name: string;
  /** True when the value a new session of the role gets (pg_settings.setting, in the setting's base unit) is a problem. */
  missing(setting: string): boolean;
  suggest: string;
  why: string;
}

/** work_mem above this (in kB, 256 MB) lets each sort or hash of each statement hold that much before spilling. */
export const WORK_MEM_WARN_KB = 256 * 1024;

export const RECOMMENDED: readonly Recommendation[] = [
  {
    name: 'temp_file_limit',
    missing: (v) => v === '-1',
    suggest: '5GB',
    why: 'bounds the temporary files one session may keep (WITH HOLD cursors, sorts, hashes); only a superuser can change it, so no session can undo it',
  },
  {
    name: 'statement_timeout',
    missing: (v) => v === '0',
    suggest: '5min',
    why: "a backstop for roles without statementTimeout in the policy (pgwarden stamps the role's value over it where there is one)",
  },
  {
    name: 'idle_in_transaction_session_timeout',
    missing: (v) => v === '0',
    suggest: '5min',
    why: "a backstop for connections that do not come from pgwarden's sessions (pgwarden stamps 60 s or the role's value on its own)",
  },
  {
    name: 'work_mem',
    missing: (v) => Number(v) > WORK_MEM_WARN_KB,
    suggest: '64MB',
    why: 'memory each sort or hash of each statement may use before spilling to disk',
  },
];

export interface RoleSettingsReport {
  role: string;
  /** Recommended settings a new session of the role does not have, with the statement that sets each. */
  missing: { name: string; value: string; suggest: string; why: string; sql: string }[];
}

/** Reads what a new session of pgwarden's upstream role gets (role, database and server settings combined). */
export async function checkRoleSettings(query: CatalogQuery): Promise<RoleSettingsReport> {
  const names = RECOMMENDED.map((r) => r.name);
  const { rows } = await query(
    'SELECT current_user AS role, current_database() AS db, name, setting FROM pg_catalog.pg_settings WHERE name = ANY($1)',
    [names],
  );
  const role = String(rows[0]?.role ?? '');
  const db = String(rows[0]?.db ?? '');
  const missing: RoleSettingsReport['missing'] = [];
  for (const r of RECOMMENDED) {
    const row = rows.find((x) => x.name === r.name);
    if (row === undefined || !r.missing(String(row.setting))) continue;
    missing.push({
      name: r.name,
      value: String(row.setting),
      suggest: r.suggest,
      why: r.why,
      // IN DATABASE: the role may serve other databases with other needs.
      sql: `ALTER ROLE ${quoteIdent(role)} IN DATABASE ${quoteIdent(db)} SET ${r.name} = '${r.suggest}';`,
    });
  }
  return { role, missing };
}

/** Logs one warning listing the missing settings and the ALTER ROLE statements; never fails startup. */
export async function warnAboutRoleSettings(query: CatalogQuery, log: Logger): Promise<RoleSettingsReport | undefined> {
  let report: RoleSettingsReport;
  try {
    report = await checkRoleSettings(query);
  } catch (err) {
    log.warn({ err }, "could not read the upstream role's settings");
    return undefined;
  }
  if (report.missing.length === 0) return report;
  log.warn(
    {
      role: report.role,
      missing: report.missing.map((m) => ({ setting: m.name, value: m.value, why: m.why })),
      sql: report.missing.map((m) => m.sql).join(' '),
    },
    `upstream role "${report.role}" lacks settings a DBA should set (${report.missing.map((m) => m.name).join(', ')}); run as a superuser: ${report.missing.map((m) => m.sql).join(' ')} (docs/deploy.md, "Role settings")`,
  );
  return report;
}
