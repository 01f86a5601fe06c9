// Upstream sockets have TCP keepalive on from the start, so a silently dead upstream is found by the kernel instead of
// hanging the session until its token expires.
import net from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { UpstreamConfig } from '../../../proxy/config/types.ts';
import { connectUpstream, UPSTREAM_KEEPALIVE_IDLE_MS } from '../../../proxy/upstream/connect.ts';

afterEach(() => {
  vi.restoreAllMocks();
});

/** Logs anyone in: AuthenticationOk, BackendKeyData, ReadyForQuery after the startup packet. */
async function fakePostgres(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.once('data', () => {
      s.write(
        Buffer.from([0x52, 0, 0, 0, 8, 0, 0, 0, 0, 0x4b, 0, 0, 0, 12, 0, 0, 0, 7, 1, 2, 3, 4, 0x5a, 0, 0, 0, 5, 0x49]),
      );
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

describe('upstream keepalive', () => {
  it('enables TCP keepalive on the upstream socket, with a bounded idle time', async () => {
    const spy = vi.spyOn(net.Socket.prototype, 'setKeepAlive');
    const server = await fakePostgres();
    const cfg: UpstreamConfig = {
      host: '127.0.0.1',
      port: server.port,
      database: 'app',
      user: 'u',
      password: undefined,
      sslmode: 'disable',
      sslRootCert: undefined,
      connectTimeout: 3_000,
    };
    try {
      const up = await connectUpstream(cfg, {});
      expect(spy.mock.contexts).toContain(up.socket);
      expect(spy).toHaveBeenCalledWith(true, UPSTREAM_KEEPALIVE_IDLE_MS);
      expect(UPSTREAM_KEEPALIVE_IDLE_MS).toBeGreaterThan(0);
      expect(UPSTREAM_KEEPALIVE_IDLE_MS).toBeLessThanOrEqual(60_000);
      up.socket.destroy();
    } finally {
      await server.close();
    }
  });
});
