// A TCP forwarder on port 0 between pgwarden and Postgres that a test can black-hole (stop forwarding, never close) or cut.
import net from 'node:net';

/** One forwarded connection: the side pgwarden connected to, and ours to the target. */
export interface ForwardedPair {
  readonly client: net.Socket;
  readonly server: net.Socket | undefined;
  /** Stops forwarding in both directions without closing: bytes are read and dropped, as by a peer that vanished. */
  blackhole(): void;
  /** Closes both sides at once (RST), like a backend process killed without a word. */
  cut(): void;
}

export interface Forwarder {
  readonly port: number;
  /** Every connection accepted so far, in order. */
  readonly pairs: readonly ForwardedPair[];
  /** What happens to connections accepted from now on: forwarded, black-holed (never answered), or reset at once. */
  setNewConnections(mode: 'forward' | 'blackhole' | 'reset'): void;
  close(): Promise<void>;
}

export async function startForwarder(target: { host: string; port: number }): Promise<Forwarder> {
  const pairs: ForwardedPair[] = [];
  const sockets = new Set<net.Socket>();
  let mode: 'forward' | 'blackhole' | 'reset' = 'forward';
  const track = (s: net.Socket): net.Socket => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    s.on('error', () => {});
    return s;
  };
  const server = net.createServer((client) => {
    track(client);
    if (mode === 'reset') {
      client.resetAndDestroy();
      return;
    }
    let dropping = mode === 'blackhole';
    const upstream = dropping ? undefined : track(net.connect(target));
    client.on('data', (chunk) => {
      if (!dropping) upstream?.write(chunk);
    });
    upstream?.on('data', (chunk) => {
      if (!dropping) client.write(chunk);
    });
    // While forwarding, a close on one side closes the other; a black-holed pair stays open on pgwarden's side.
    client.on('end', () => {
      if (!dropping) upstream?.end();
    });
    // end(), not destroy(): what Postgres sent last (a FATAL before it closes) must still reach pgwarden.
    upstream?.on('close', () => {
      if (!dropping) client.end();
    });
    pairs.push({
      client,
      server: upstream,
      blackhole() {
        dropping = true;
      },
      cut() {
        dropping = true;
        client.resetAndDestroy();
        upstream?.destroy();
      },
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const addr = server.address();
  if (typeof addr !== 'object' || addr === null) throw new Error('forwarder has no address');
  return {
    port: addr.port,
    pairs,
    setNewConnections(next) {
      mode = next;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
