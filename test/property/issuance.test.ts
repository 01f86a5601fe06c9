// Property: a narrowing the exchange endpoint composes within a bound (policy/issuance.ts) never lets the token do more than the bound does, as enforcement (policy/narrow.ts) reads both.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { composeNarrowing, narrowingClaim, readNarrowing } from '../../policy/issuance.ts';
import { narrowRole, parseNarrowing } from '../../policy/narrow.ts';
import { compilePolicy, parsePolicyText } from '../../policy/load.ts';
import type { RelationPattern, RolePolicy } from '../../policy/types.ts';

const seed =
  process.env.FC_SEED !== undefined && process.env.FC_SEED !== ''
    ? Number(process.env.FC_SEED)
    : (Date.now() ^ (Math.random() * 0x7fffffff)) | 0;

const PATTERNS = ['s.a', 's.b', 's.*', 't.a', 't.*'];
const RELATIONS = ['s.a', 's.b', 's.c', 't.a', 't.b'];
const COLUMNS = ['x', 'y', 'z'];
const KINDS = ['insert', 'update', 'delete'] as const;

const subset = <T>(xs: readonly T[], min = 0) => fc.subarray([...xs], { minLength: min });

const roleDoc = fc
  .record({
    relations: subset(PATTERNS, 1),
    readOnly: fc.boolean(),
    kinds: subset(KINDS, 1),
    writeRelations: subset(PATTERNS, 1),
    maxRows: fc.option(fc.integer({ min: 1, max: 100 }), { nil: undefined }),
    statementTimeout: fc.option(fc.integer({ min: 1, max: 100 }), { nil: undefined }),
    lock: fc.boolean(),
  })
  .map((r) => ({
    relations: r.relations,
    readOnly: r.readOnly,
    ...(r.readOnly ? {} : { write: { statements: r.kinds, relations: r.writeRelations } }),
    ...(r.maxRows === undefined ? {} : { maxRows: r.maxRows }),
    ...(r.statementTimeout === undefined ? {} : { statementTimeout: `${r.statementTimeout}ms` }),
    lock: r.lock,
  }));

const narrowDoc = fc
  .record(
    {
      relations: subset(PATTERNS),
      columns: fc.dictionary(fc.constantFrom(...RELATIONS), subset(COLUMNS), { maxKeys: 3 }),
      readOnly: fc.boolean(),
      write: fc.record({ kinds: subset(KINDS), relations: subset(PATTERNS) }, { requiredKeys: [] }),
      maxRows: fc.integer({ min: 1, max: 120 }),
      statementTimeout: fc.integer({ min: 1, max: 120 }),
      utility: fc.boolean(),
    },
    { requiredKeys: [] },
  )
  .map((n) => n as Record<string, unknown>);

function covers(ps: readonly RelationPattern[], rel: string): boolean {
  const [schema, name] = rel.split('.');
  return ps.some((p) => p.schema === schema && (p.name === '*' || p.name === name));
}

/** Everything a role allows, as a list of facts to compare (more facts = more allowed). */
function allowed(r: RolePolicy): Set<string> {
  const out = new Set<string>();
  for (const rel of RELATIONS) {
    if (covers(r.relations, rel))
      for (const col of COLUMNS) {
        const only = r.allowedColumns?.get(rel);
        if (only === undefined || only.has(col)) out.add(`read ${rel}.${col}`);
      }
    if (!r.readOnly && r.write !== undefined && covers(r.write.relations, rel))
      for (const k of r.write.kinds) out.add(`${k} ${rel}`);
  }
  if (r.lock === true) out.add('lock');
  if (!r.readOnly) out.add('read-write');
  return out;
}

function effective(role: RolePolicy, claim: Record<string, unknown> | undefined): RolePolicy {
  if (claim === undefined) return role;
  const parsed = parseNarrowing(claim);
  if (!parsed.ok) throw new Error(`enforcement refuses a composed claim: ${parsed.problem} ${JSON.stringify(claim)}`);
  return narrowRole(role, parsed.narrowing);
}

describe('composeNarrowing', () => {
  it('never composes a narrowing that allows more than its bound', () => {
    // Counted so the property cannot pass by refusing everything.
    let composedOk = 0;
    let refused = 0;
    try {
      fc.assert(
        fc.property(roleDoc, fc.option(narrowDoc, { nil: undefined }), narrowDoc, (doc, boundDoc, requestDoc) => {
          const parsed = parsePolicyText(JSON.stringify({ roles: { r: doc } }), 'json', 'prop');
          if (!parsed.ok) return;
          const role = compilePolicy(parsed.doc, 1, 'x').roles.get('r') as RolePolicy;
          const bound = boundDoc === undefined ? undefined : readNarrowing(boundDoc);
          const request = readNarrowing(requestDoc);
          if ((bound !== undefined && !bound.ok) || !request.ok) return;
          const composed = composeNarrowing(role, bound?.value, request.value);
          if (!composed.ok) {
            refused++;
            return;
          }
          composedOk++;
          const child = allowed(effective(role, narrowingClaim(composed.value)));
          const parent = allowed(effective(role, bound === undefined ? undefined : narrowingClaim(bound.value)));
          for (const fact of child) expect(parent.has(fact), fact).toBe(true);
          const c = effective(role, narrowingClaim(composed.value));
          const p = effective(role, bound === undefined ? undefined : narrowingClaim(bound.value));
          if (p.maxRows !== undefined) expect(c.maxRows ?? Infinity).toBeLessThanOrEqual(p.maxRows);
          if (p.statementTimeout !== undefined)
            expect(c.statementTimeout ?? Infinity).toBeLessThanOrEqual(p.statementTimeout);
        }),
        { seed, numRuns: 2000 },
      );
    } catch (err) {
      console.error(`property failed; replay with FC_SEED=${seed}`);
      throw err;
    }
    expect(composedOk).toBeGreaterThan(30);
    expect(refused).toBeGreaterThan(100);
  });
});
