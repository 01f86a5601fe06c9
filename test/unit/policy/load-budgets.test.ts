// Role budgets in policy files: what the validator accepts and refuses (with paths), how they compile, and agreement with policy/schema.json.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BUDGET_KEYS, BUDGET_PER, compilePolicy, parseByteSize, parsePolicyText } from '../../../policy/load.ts';

function load(budget: string) {
  return parsePolicyText(`roles:\n  a:\n    relations: [public.orders]\n    budget: ${budget}\n`, 'yaml', 'test');
}

function issuePaths(budget: string): string[] {
  const r = load(budget);
  return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
}

describe('role budget in the policy file', () => {
  it('compiles every limit, with bytesPerMinute as a size', () => {
    const r = load(
      '{ per: agent, statementsPerMinute: 600, rowsPerMinute: 1e6, bytesPerMinute: 1GB, concurrentStatements: 4 }',
    );
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const role = compilePolicy(r.doc, 1, 'x').roles.get('a');
    expect(role?.budget).toEqual({
      per: 'agent',
      statementsPerMinute: 600,
      rowsPerMinute: 1_000_000,
      bytesPerMinute: 1024 ** 3,
      concurrentStatements: 4,
    });
    expect(Object.isFrozen(role?.budget)).toBe(true);
  });

  it('a role without a budget has none', () => {
    const r = parsePolicyText('roles:\n  a:\n    relations: [public.orders]\n', 'yaml', 'test');
    expect(r.ok && compilePolicy(r.doc, 1, 'x').roles.get('a')?.budget).toBeUndefined();
  });

  it.each([
    ['{ statementsPerMinute: 5 }', /roles\.a\.budget\.per: is required/],
    ['{ per: tenant, statementsPerMinute: 5 }', /roles\.a\.budget\.per: must be one of subject, agent/],
    ['{ per: agent }', /roles\.a\.budget: sets no limit/],
    ['{ per: agent, statementsPerMinute: 0 }', /statementsPerMinute: must be a positive integer/],
    ['{ per: agent, rowsPerMinute: 1.5 }', /rowsPerMinute: must be a positive integer/],
    ['{ per: agent, concurrentStatements: -1 }', /concurrentStatements: must be a positive integer/],
    ['{ per: agent, bytesPerMinute: 1 GBs }', /bytesPerMinute: must be a positive number of bytes/],
    ['{ per: agent, bytesPerMinute: 0 }', /bytesPerMinute: must be a positive number of bytes/],
    ['{ per: agent, statementsPerMinut: 5 }', /unknown key/],
    ['600', /roles\.a\.budget: must be a mapping/],
  ])('refuses %s', (budget, message) => {
    expect(issuePaths(budget).join('\n')).toMatch(message);
  });

  it('reads sizes in binary units', () => {
    expect(parseByteSize('64kB')).toBe(65536);
    expect(parseByteSize('1.5MB')).toBe(1.5 * 1024 ** 2);
    expect(parseByteSize('2GiB')).toBe(2 * 1024 ** 3);
    expect(parseByteSize(1000)).toBe(1000);
    expect(parseByteSize('1e3')).toBeUndefined();
    expect(parseByteSize('-1MB')).toBeUndefined();
  });

  it('policy/schema.json lists the same budget keys and per values', () => {
    const schema = JSON.parse(readFileSync(new URL('../../../policy/schema.json', import.meta.url), 'utf8')) as {
      $defs: {
        role: { properties: { budget: { properties: Record<string, { enum?: string[] }>; required: string[] } } };
      };
    };
    const b = schema.$defs.role.properties.budget;
    expect(Object.keys(b.properties).sort()).toEqual([...BUDGET_KEYS].sort());
    expect(b.properties.per?.enum).toEqual([...BUDGET_PER]);
    expect(b.required).toEqual(['per']);
  });
});
