// A policy file rewritten in place, slowly, through the running proxy: the half-written file is never applied (the denied column stays denied).
import { closeSync, openSync, writeSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_POLICY, connectPg, startTestProxy, type TestProxy } from '../helpers/proxy.ts';
import { until } from '../helpers/until.ts';

let tp: TestProxy;
beforeAll(async () => {
  tp = await startTestProxy({ deps: { watchPolicy: true } });
});
afterAll(async () => {
  await tp?.close();
});

describe('a policy file rewritten in place', () => {
  it('is applied only once complete: a query during the write never reads the denied column', async () => {
    const c = await connectPg(tp);
    try {
      const ssn = async (): Promise<string> =>
        await c.query('SELECT ssn FROM customers LIMIT 1').then(
          () => 'readable',
          (e: { code?: string }) => e.code ?? 'error',
        );
      expect(await ssn()).toBe('42501');
      // The new policy adds a role; cut before deniedColumns, its first half is a valid policy in which ssn is readable.
      const full = DEFAULT_POLICY + '  auditor:\n    readOnly: true\n    relations: [public.orders]\n';
      const cut = full.indexOf('    deniedColumns');
      expect(cut).toBeGreaterThan(0);
      const seen = new Set<string>();
      let writing = true;
      const probe = (async () => {
        while (writing) seen.add(await ssn());
      })();
      const fd = openSync(tp.policyFile, 'w');
      try {
        writeSync(fd, full.slice(0, cut));
        // Longer than the watcher's debounce (200 ms), shorter than the settle time (500 ms).
        await new Promise((r) => setTimeout(r, 400));
        writeSync(fd, full.slice(cut));
      } finally {
        closeSync(fd);
      }
      await until(() => tp.proxy.store.current.policy.roles.has('auditor'), 5_000);
      writing = false;
      await probe;
      expect([...seen]).toEqual(['42501']);
      expect(await ssn()).toBe('42501');
    } finally {
      await c.end();
    }
  });
});
