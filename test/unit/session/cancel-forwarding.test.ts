// Cross-replica cancel forwarding: one hop at most (a forwarded cancel is never forwarded again, even around a
// misconfigured loop), rate- and concurrency-limited, and a peer list naming the replica itself refuses to start.
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  CancelRegistry,
  FORWARDED_BIT,
  forwardCancel,
  validatePeers,
  type Peer,
} from '../../../proxy/session/cancel.ts';

/** A secret whose first byte names `replica` (the rest arbitrary), as a clustered replica issues them. */
const secretOf = (replica: number, n = 1234) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE((((replica & 0x7f) << 24) | (n & 0xffffff)) >>> 0);
  return b;
};
const PID = 4321;

describe('one hop', () => {
  it('passes a foreign key on once, marked as forwarded', () => {
    const sent: { peer: Peer; processId: number }[] = [];
    const reg = new CancelRegistry(1, [{ id: 2, host: 'b', port: 1 }], {
      forward: async (peer, processId) => void sent.push({ peer, processId }),
    });
    reg.cancel(PID, secretOf(2));
    expect(sent).toHaveLength(1);
    expect(sent[0]?.peer.id).toBe(2);
    expect((sent[0]?.processId ?? 0) & FORWARDED_BIT).not.toBe(0);
    expect((sent[0]?.processId ?? 0) & ~FORWARDED_BIT).toBe(PID);
    expect(reg.stats.forwarded).toBe(1);
  });

  it('never passes on a cancel that was already forwarded', () => {
    const sent: number[] = [];
    const reg = new CancelRegistry(1, [{ id: 2, host: 'b', port: 1 }], {
      forward: async (_p, processId) => void sent.push(processId),
    });
    expect(reg.cancel(PID | FORWARDED_BIT | 0, secretOf(2))).toBe(false);
    expect(sent).toHaveLength(0);
    expect(reg.stats.secondHop).toBe(1);
  });

  it('the owner acts on a forwarded cancel for its own key, checking the secret', () => {
    const reg = new CancelRegistry(3);
    let cancelled = 0;
    const key = reg.issue({ cancelUpstream: () => cancelled++ }, PID);
    const wrong = Buffer.from(key.secretKey);
    wrong[3] = (wrong[3]! + 1) & 0xff;
    expect(reg.cancel(key.processId | FORWARDED_BIT | 0, wrong)).toBe(false);
    expect(reg.cancel(key.processId | FORWARDED_BIT | 0, key.secretKey)).toBe(true);
    expect(cancelled).toBe(1);
  });

  describe('over TCP, around a loop a peer list can make (a replica listed at its own address under another id)', () => {
    const servers: net.Server[] = [];
    afterEach(async () => {
      for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
    });
    it('a cancel crosses at most one hop', async () => {
      let received = 0;
      let reg: CancelRegistry | undefined;
      const server = net.createServer((s) => {
        s.on('error', () => {});
        s.once('data', (buf: Buffer) => {
          received++;
          // What session.ts does with a CancelRequest: signed processId, the key bytes.
          reg?.cancel(buf.readInt32BE(8), Buffer.from(buf.subarray(12, 16)));
          s.end();
        });
      });
      servers.push(server);
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
      const port = (server.address() as net.AddressInfo).port;
      // Replica 2 believes replica 1 lives at its own address (say, through a DNS name validation cannot see through).
      reg = new CancelRegistry(2, [{ id: 1, host: '127.0.0.1', port }]);
      await forwardCancel({ id: 2, host: '127.0.0.1', port }, PID, secretOf(1));
      await new Promise((r) => setTimeout(r, 300));
      // The client's request, then the one forward to "replica 1" (itself), which goes no further.
      expect(received).toBe(2);
      expect(reg.stats).toEqual({ forwarded: 1, rateLimited: 0, secondHop: 1, addressLimited: 0 });
    });
  });
});

describe('limits', () => {
  it('forwards at most the burst, then at the sustained rate', () => {
    let sent = 0;
    const reg = new CancelRegistry(1, [{ id: 2, host: 'b', port: 1 }], {
      forwardPerSecond: 0.001,
      forwardBurst: 5,
      forward: async () => void sent++,
    });
    for (let i = 0; i < 1_000; i++) reg.cancel(PID, secretOf(2, i + 1));
    expect(sent).toBe(5);
    expect(reg.stats.rateLimited).toBe(995);
  });

  it('holds at most maxForwardsInFlight forwarding connections', () => {
    const pending: (() => void)[] = [];
    const reg = new CancelRegistry(1, [{ id: 2, host: 'b', port: 1 }], {
      forwardBurst: 1_000,
      maxForwardsInFlight: 3,
      forward: () => new Promise<void>((r) => pending.push(r)),
    });
    for (let i = 0; i < 10; i++) reg.cancel(PID, secretOf(2, i + 1));
    expect(pending).toHaveLength(3);
    expect(reg.stats.rateLimited).toBe(7);
  });

  it('the defaults are bounded', () => {
    let sent = 0;
    const reg = new CancelRegistry(1, [{ id: 2, host: 'b', port: 1 }], { forward: async () => void sent++ });
    for (let i = 0; i < 10_000; i++) reg.cancel(PID, secretOf(2, i + 1));
    expect(sent).toBeLessThanOrEqual(101);
  });
});

describe('peers validated at startup', () => {
  it('a replica never lists itself, nor an id or an address twice', () => {
    expect(() => new CancelRegistry(1, [{ id: 1, host: 'a', port: 6432 }])).toThrow(/own id/);
    expect(() =>
      validatePeers(1, [
        { id: 2, host: 'b', port: 1 },
        { id: 2, host: 'c', port: 1 },
      ]),
    ).toThrow(/listed twice/);
    expect(() =>
      validatePeers(1, [
        { id: 2, host: 'b', port: 1 },
        { id: 3, host: 'B', port: 1 },
      ]),
    ).toThrow(/listed twice/);
    expect(() => validatePeers(1, [{ id: 2, host: '10.0.0.5', port: 6432 }], { host: '10.0.0.5', port: 6432 })).toThrow(
      /own listen address/,
    );
    expect(() =>
      validatePeers(1, [{ id: 2, host: 'localhost', port: 6432 }], { host: '127.0.0.1', port: 6432 }),
    ).toThrow(/own listen address/);
    expect(() => validatePeers(1, [{ id: 2, host: '127.0.0.1', port: 6432 }], { host: '0.0.0.0', port: 6432 })).toThrow(
      /own listen address/,
    );
    // Same host, another port: another replica.
    expect(() =>
      validatePeers(1, [{ id: 2, host: '127.0.0.1', port: 6433 }], { host: '127.0.0.1', port: 6432 }),
    ).not.toThrow();
    expect(() =>
      validatePeers(1, [{ id: 2, host: 'pgwarden-1.pgwarden', port: 6432 }], { host: '0.0.0.0', port: 6432 }),
    ).not.toThrow();
  });
});
