// Text output of the `pgwarden policy …` commands, as pure functions the CLI prints (no process.exit, no logging).
import { compilePolicy, formatIssue, loadPolicyFile, policyWarnings } from '../../policy/load.ts';
import { quoteIdent } from '../../lib/ident.ts';
import { holdCursorLimit } from '../../policy/evaluate.ts';
import { idleInTransactionTimeoutMs } from '../../policy/settings.ts';
import type { RelationPattern, RoleBudget, RolePolicy } from '../../policy/types.ts';
import { narrowingClaim, type CompiledIssuance, type IssuanceRule } from '../../policy/issuance.ts';

function pattern(p: RelationPattern): string {
  return `${quoteIdent(p.schema)}.${p.name === '*' ? '*' : quoteIdent(p.name)}`;
}

function durationText(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

/** One role as a few indented lines: what an operator wants to confirm after editing the file. */
export function describeRole(r: RolePolicy): string[] {
  const lines = [
    `${r.name}: ${r.mode}${r.mode === 'shadow' ? ' (denials are logged, not enforced)' : ''}, ${r.readOnly ? 'read-only' : 'read-write'}`,
  ];
  lines.push(`  read: ${r.relations.length > 0 ? r.relations.map(pattern).join(', ') : '(no relations)'}`);
  if (r.write) lines.push(`  write: ${r.write.kinds.join(', ')} on ${r.write.relations.map(pattern).join(', ')}`);
  for (const [rel, cols] of r.deniedColumns) {
    const dot = rel.indexOf('.');
    lines.push(
      `  denied columns of ${quoteIdent(rel.slice(0, dot))}.${quoteIdent(rel.slice(dot + 1))}: ${[...cols].map(quoteIdent).join(', ')}`,
    );
  }
  if (r.functions.allow.size > 0) lines.push(`  functions allowed: ${[...r.functions.allow].join(', ')}`);
  if (r.functions.deny.size > 0) lines.push(`  functions denied: ${[...r.functions.deny].join(', ')}`);
  if (r.settings.size > 0) lines.push(`  extra settings: ${[...r.settings].join(', ')}`);
  if (r.ddl !== undefined)
    lines.push(
      `  ddl: ${r.ddl.kinds.join(', ')} on ${[...r.ddl.schemas.map((s) => `${quoteIdent(s)}.*`), ...(r.ddl.temporary ? ['temporary objects'] : [])].join(', ')}`,
    );
  const utility = [
    ...(r.maintenance ?? []).map((m) => m.toUpperCase()),
    ...(r.lock === true ? ['LOCK'] : []),
    ...(r.do === true ? ['DO (unrestricted)'] : []),
    ...(r.twoPhase === true ? ['two-phase commit'] : []),
  ];
  if (utility.length > 0) lines.push(`  also: ${utility.join(', ')}`);
  const ch = (ps: readonly { name: string; prefix: boolean }[]) =>
    ps.map((p) => `${p.name === '' ? '' : quoteIdent(p.name)}${p.prefix ? '*' : ''}`).join(', ');
  if (r.channels !== undefined)
    lines.push(`  channels: listen ${ch(r.channels.listen) || '(none)'}; notify ${ch(r.channels.notify) || '(none)'}`);
  const limits = [
    r.maxRows === undefined ? 'no row cap' : `maxRows ${r.maxRows} (${r.onRowCap})`,
    r.statementTimeout === undefined ? 'no statement timeout' : `statementTimeout ${durationText(r.statementTimeout)}`,
    idleInTransactionTimeoutMs(r) === 0
      ? 'no idleInTransactionTimeout'
      : `idleInTransactionTimeout ${durationText(idleInTransactionTimeoutMs(r))}`,
    `holdCursors ${holdCursorLimit(r)}`,
    `catalog ${r.catalog}`,
    `searchPath ${r.searchPath.map(quoteIdent).join(', ') || '(empty)'}`,
  ];
  if (r.dbRole !== undefined) limits.push(`dbRole ${quoteIdent(r.dbRole)}`);
  lines.push(`  ${limits.join('; ')}`);
  if (r.budget !== undefined) lines.push(`  budget per ${r.budget.per}: ${budgetText(r.budget)}`);
  if (r.networks !== undefined) lines.push(`  logs in only from: ${r.networks.map((n) => n.text).join(', ')}`);
  return lines;
}

function budgetText(b: RoleBudget): string {
  const parts: string[] = [];
  if (b.statementsPerMinute !== undefined) parts.push(`${b.statementsPerMinute} statements/min`);
  if (b.rowsPerMinute !== undefined) parts.push(`${b.rowsPerMinute} rows/min`);
  if (b.bytesPerMinute !== undefined) parts.push(`${b.bytesPerMinute} bytes/min`);
  if (b.concurrentStatements !== undefined) parts.push(`${b.concurrentStatements} concurrent statements`);
  return parts.join(', ') || '(no limits)';
}

/** The issuance section as lines: who may obtain which roles, bounded how (docs/issuance.md). */
export function describeIssuance(issuance: CompiledIssuance): string[] {
  const n = issuance.rules.length;
  const lines = [
    `issuance: ${n} rule${n === 1 ? '' : 's'}, default lifetime ${durationText(issuance.defaultLifetime)}, delegation ${issuance.delegation ? 'allowed' : 'off'}`,
  ];
  const whom = (subjects: IssuanceRule['subjects']) =>
    subjects
      .map((m) =>
        [
          m.issuer === undefined ? undefined : `issuer ${m.issuer}`,
          m.sub === undefined ? undefined : `sub ${m.sub.join('|')}`,
          ...[...(m.claims ?? [])].map(([k, v]) => `${k} ${v.join('|')}`),
        ]
          .filter((x) => x !== undefined)
          .join(', '),
      )
      .join('; ');
  for (const r of issuance.rules) {
    const who = whom(r.subjects);
    lines.push(
      `  ${r.id}: ${r.roles.join(', ')} for ${who}${r.agents ? ` acting through ${[...r.agents].join(', ')}` : ''}`,
    );
    const extra = [
      r.narrow === undefined
        ? 'any narrowing within the role'
        : `narrowed at most to ${JSON.stringify(narrowingClaim(r.narrow))}`,
      r.maxLifetime === undefined ? undefined : `max lifetime ${durationText(r.maxLifetime)}`,
      r.singleUse === 'required' ? 'single-use' : undefined,
      r.approval === 'required'
        ? issuance.approvers.some((a) => a.rules === undefined || a.rules.has(r.id))
          ? `needs approval (within ${durationText(issuance.approvalTimeout)})`
          : 'needs approval, but no approvers entry covers this rule: its requests expire undecided'
        : undefined,
    ].filter((x) => x !== undefined);
    lines.push(`    ${extra.join('; ')}`);
  }
  for (const a of issuance.approvers)
    lines.push(`  approver ${a.id}: ${whom(a.subjects)} decides ${a.rules ? [...a.rules].join(', ') : 'every rule'}`);
  return lines;
}

/** `pgwarden policy check FILE`: every issue with its path and line, or a summary of each role; ok=false means exit non-zero. */
export async function policyCheck(file: string): Promise<{ ok: boolean; output: string }> {
  const loaded = await loadPolicyFile(file);
  if (!loaded.ok) {
    const n = loaded.issues.length;
    const lines = loaded.issues.map((i) => formatIssue(i, file));
    lines.push(`${file}: ${n} issue${n === 1 ? '' : 's'}; this policy would not be loaded`);
    return { ok: false, output: lines.join('\n') + '\n' };
  }
  const policy = compilePolicy(loaded.doc, 1, loaded.digest);
  const n = policy.roles.size;
  const lines = [`${file}: OK, ${n} role${n === 1 ? '' : 's'} (sha256 ${policy.digest.slice(0, 12)})`];
  for (const role of policy.roles.values()) lines.push(...describeRole(role).map((l) => '  ' + l));
  if (policy.issuance !== undefined) lines.push(...describeIssuance(policy.issuance).map((l) => '  ' + l));
  for (const w of policyWarnings(policy)) lines.push(`warning: ${w}`);
  return { ok: true, output: lines.join('\n') + '\n' };
}
