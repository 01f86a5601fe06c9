// `pgwarden policy explain`: decides one statement for a role against the live upstream catalog and returns the decision as data.
import type { Config } from '../config/types.ts';
import { policyRelations } from '../../policy/load.ts';
import { upstreamQuerier } from '../upstream/querier.ts';
import { initParser } from '../../policy/parser.ts';
import { PolicyStore } from '../../policy/store.ts';
import { loadCatalog } from '../../policy/catalog.ts';
import { evaluate } from '../../policy/evaluate.ts';
import type { Decision } from '../../policy/types.ts';

export interface Explanation {
  role: string;
  sql: string;
  policyVersion: number;
  decision: 'allow' | 'deny';
  rule: string | undefined;
  reason: string | undefined;
  message: string | undefined;
  detail: string | undefined;
  hint: string | undefined;
  statements: Decision['statements'];
  rewrittenSql: string | undefined;
  rowCap: { maxRows: number; onRowCap: string } | undefined;
}

export async function explain(config: Config, roleName: string, sql: string): Promise<Explanation> {
  await initParser();
  const query = upstreamQuerier(config);
  const store = await PolicyStore.open({
    file: config.policyFile,
    watch: false,
    loadCatalog: async (policy) => await loadCatalog(query, { relations: policyRelations(policy) }),
  });
  try {
    const { policy, catalog } = store.current;
    const role = policy.roles.get(roleName);
    if (!role) throw new Error(`role "${roleName}" is not defined in ${config.policyFile}`);
    const d = evaluate(
      sql,
      'simple',
      { role, preparedNames: new Set(), cursorNames: new Set() },
      catalog,
      policy.version,
    );
    return {
      role: roleName,
      sql,
      policyVersion: policy.version,
      decision: d.allow ? 'allow' : 'deny',
      rule: d.ruleId,
      reason: d.allow ? d.shadowDenied?.reason : d.reason,
      message: d.allow ? d.shadowDenied?.message : d.message,
      detail: d.allow ? undefined : d.detail,
      hint: d.allow ? undefined : d.hint,
      statements: d.statements,
      rewrittenSql: d.allow ? d.rewrittenSql : undefined,
      rowCap: d.allow ? d.rowCap : undefined,
    };
  } finally {
    store.close();
  }
}
