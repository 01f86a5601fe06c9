// Every test file belongs to exactly one vitest project (fast or db), so `npm test` runs it and `npm run test:fast` never needs a database.
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import config from '../../vitest.config.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function testFiles(dir: string): string[] {
  return readdirSync(path.join(ROOT, dir), { withFileTypes: true }).flatMap((e) => {
    const rel = `${dir}/${e.name}`;
    if (e.isDirectory()) return e.name === 'node_modules' ? [] : testFiles(rel);
    return e.name.endsWith('.test.ts') ? [rel] : [];
  });
}

/** Each project's test folders, read from its include globs (each of the form test/<folder>/**\/*.test.ts). */
function projectFolders(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const p of config.test?.projects ?? []) {
    if (typeof p !== 'object' || p === null || !('test' in p))
      throw new Error('a project that is not an inline config');
    const t = (p as { test?: { name?: unknown; include?: string[] } }).test;
    const name = typeof t?.name === 'string' ? t.name : String(t?.name);
    out.set(
      name,
      (t?.include ?? []).map((glob) => {
        const m = /^test\/([\w-]+)\/\*\*\/\*\.test\.ts$/.exec(glob);
        if (m === null)
          throw new Error(
            `project ${name}: include ${glob} is not of the form test/<folder>/**/*.test.ts; update this test`,
          );
        return m[1] as string;
      }),
    );
  }
  return out;
}

describe('vitest projects', () => {
  it('are fast (no global setup) and db (the Postgres global setup)', () => {
    const projects = (config.test?.projects ?? []) as { test?: { name?: string; globalSetup?: string[] } }[];
    expect(projects.map((p) => [p.test?.name, p.test?.globalSetup ?? []])).toEqual([
      ['fast', []],
      ['db', ['./test/helpers/global-setup.ts']],
    ]);
    expect(config.test?.globalSetup).toBeUndefined();
  });

  it('include every test file exactly once', () => {
    const folders = projectFolders();
    const files = testFiles('test');
    expect(files.length).toBeGreaterThan(50);
    const homeless: string[] = [];
    const twice: string[] = [];
    for (const f of files) {
      const folder = f.split('/')[1] ?? '';
      const owners = [...folders].filter(([, dirs]) => dirs.includes(folder)).map(([name]) => name);
      if (owners.length === 0) homeless.push(f);
      if (owners.length > 1) twice.push(`${f}: ${owners.join(', ')}`);
    }
    expect(homeless).toEqual([]);
    expect(twice).toEqual([]);
  });
});
