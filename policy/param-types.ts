// Parameter type OIDs of a Parse message judged like casts: reg* types look objects up by name, and a row type reveals its table.
import { narrowedColumns } from './narrow.ts';
import type { CatalogSnapshot, Decision, SessionView } from './types.ts';
import { REG_TYPES } from './analyze.ts';
import { matchesRelation, shadowed, toDeny, type Denial } from './evaluate.ts';
import { SqlState } from '../lib/sqlstate.ts';

/** OIDs of the reg* types (and their arrays) in every PostgreSQL release, for snapshots without a type catalog. */
const REG_TYPE_OIDS: ReadonlySet<number> = new Set([
  24, 2202, 2203, 2204, 2205, 2206, 4096, 4089, 3734, 3769, 4191, 1008, 2207, 2208, 2209, 2210, 2211, 4097, 4090, 3735,
  3770, 4192,
]);

/** An OID naming no type, or the row type of a relation outside the role's relations: one refusal for both. */
function unusableTypeOid(oid: number, r: string): Denial {
  return {
    reason: 'type_denied',
    ruleId: `${r}.relations`,
    sqlstate: SqlState.InsufficientPrivilege,
    what: `declares a parameter of type OID ${oid}, which is not a type the role may use`,
    detail: `parameter type OIDs must name a type in the upstream catalog, and not the row type of a relation outside ${r}.relations (rule: ${r}.relations)`,
    hint: 'leave the parameter type unspecified (0)',
  };
}

/**
 * Parameter type OIDs of a Parse message act like casts of the bound values: a reg* type makes Postgres
 * look the value up by name, and a table's row type reveals the table. Returns a denial, or undefined
 * when every OID is unspecified (0) or a type the role may use. An OID the snapshot does not know is denied.
 */
export function judgeParameterTypes(
  oids: readonly number[],
  session: SessionView,
  catalog: CatalogSnapshot,
): Decision | undefined {
  const role = session.role;
  const r = `roles.${role.name}`;
  for (const oid of oids) {
    if (oid === 0) continue;
    const type = catalog.typesByOid?.get(oid);
    const name = type ? `${type.schema}.${type.name}` : `OID ${oid}`;
    const isReg =
      REG_TYPE_OIDS.has(oid) ||
      (type !== undefined && type.schema === 'pg_catalog' && REG_TYPES.has(type.name.replace(/^_/, '')));
    let denial: Denial | undefined;
    if (isReg && role.catalog !== 'introspection') {
      denial = {
        reason: 'catalog_denied',
        ruleId: `${r}.catalog`,
        sqlstate: SqlState.InsufficientPrivilege,
        what: `declares a parameter of type ${name}, which looks up catalog objects by name`,
        detail: `role "${role.name}" has no catalog introspection (rule: ${r}.catalog)`,
        hint: 'declare the parameter as text or leave its type unspecified',
      };
    } else if (catalog.typesByOid !== undefined && type === undefined) {
      denial = unusableTypeOid(oid, r);
    } else if (type?.relation !== undefined) {
      const dot = type.relation.indexOf('.');
      const allowed = matchesRelation(role.relations, type.relation.slice(0, dot), type.relation.slice(dot + 1));
      const denied = role.deniedColumns.get(type.relation);
      // The row type of a relation outside the role's relations is refused as an unknown OID is: naming it would
      // tell which relation an OID belongs to (docs/policy.md, "Unknown and forbidden relations").
      if (!allowed) denial = unusableTypeOid(oid, r);
      else if (
        (denied !== undefined && denied.size > 0) ||
        narrowedColumns(role, type.relation, catalog.relations.get(type.relation)) !== undefined
      ) {
        denial = {
          reason: 'column_denied',
          ruleId: `${r}.deniedColumns`,
          sqlstate: SqlState.InsufficientPrivilege,
          what: `declares a parameter of the row type of ${type.relation}, which role "${role.name}" may not read whole`,
          detail: `a row type parameter reads every column of ${type.relation} (rule: ${r}.deniedColumns)`,
          hint: 'leave the parameter type unspecified (0)',
        };
      }
    }
    if (denial !== undefined) return shadowed(role, toDeny('PrepareStmt', denial, []), false, false).decision;
  }
  return undefined;
}
