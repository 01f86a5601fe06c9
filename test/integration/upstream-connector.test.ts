// createProxy(config, { upstream }) routes every session and analysis connection through the injected connector, and upstream cancels too.
import { afterEach, describe, expect, it } from 'vitest';
import { tcpUpstream, type UpstreamConnector } from '../../proxy/upstream/connect.ts';
import { connectPg, pgError, sendCancel, startTestProxy, type TestProxy } from '../helpers/proxy.ts';
import { until } from '../helpers/until.ts';

/** A statement that runs for seconds on the sample data (well inside the analyst's 5 s statementTimeout at first). */
const SLOW_SQL = 'SELECT count(*) FROM orders a, orders b, orders c, orders d';

let tp: TestProxy | undefined;
afterEach(async () => {
  await tp?.close();
  tp = undefined;
});

describe('the injected upstream connector', () => {
  it("opens the session's connection and the analysis connection, and sends the cancel of a running statement", async () => {
    const opened: string[] = [];
    const cancelled: number[] = [];
    // The real connector underneath, observed: what it is asked to do is what pgwarden does.
    const upstream: UpstreamConnector = {
      connect: (cfg, params) => {
        opened.push(params.application_name ?? '');
        return tcpUpstream.connect(cfg, params);
      },
      cancel: (cfg, processId, secretKey) => {
        cancelled.push(processId);
        return tcpUpstream.cancel(cfg, processId, secretKey);
      },
    };
    tp = await startTestProxy({ deps: { upstream } });
    const c = await connectPg(tp, await tp.token());
    try {
      expect((await c.query('SELECT id FROM orders ORDER BY id LIMIT 1')).rows).toHaveLength(1);
      // One session connection, stamped with the token's subject, and PostgreSQL's analysis confirmed the statement.
      expect(opened.filter((a) => a.startsWith('pgwarden:alice'))).toHaveLength(1);
      expect(opened).toContain('pgwarden-analysis');
      expect(opened.every((a) => a.startsWith('pgwarden:alice') || a === 'pgwarden-analysis')).toBe(true);

      const internals = c as unknown as { processID: number; secretKey: number };
      const slow = pgError(() => c.query(SLOW_SQL));
      await until(() => [...(tp?.proxy.server.sessions ?? [])].some((s) => s.busy));
      await sendCancel(tp.proxy.port, internals.processID, internals.secretKey);
      expect((await slow).code).toBe('57014');
      // The client's key names the upstream backend's pid; the connector was asked to cancel exactly that backend.
      expect(cancelled).toEqual([internals.processID]);
    } finally {
      await c.end().catch(() => {});
    }
  });
});
