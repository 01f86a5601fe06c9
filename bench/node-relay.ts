// The platform baseline of the end-to-end benchmark: a bare Node.js TCP relay (no framing, no policy, no audit), so
// RESULTS.md shows what any Node.js proxy costs on the same machine in the same run, next to pgwarden and PgBouncer.
//
//   node --import tsx bench/node-relay.ts <upstream host> <upstream port> <max lifetime ms>
//
// It prints "READY <port>" and relays bytes both ways until SIGTERM/SIGINT, its stdin closing (the parent went
// away), or the lifetime ends. Loaded through tsx like pgwarden, which costs only at startup.
import net from 'node:net';

const [host, portText, lifetimeText] = process.argv.slice(2);
const upstreamPort = Number(portText);
const lifetimeMs = Number(lifetimeText);
if (!host || !Number.isInteger(upstreamPort) || !Number.isFinite(lifetimeMs)) {
  console.error('usage: node --import tsx bench/node-relay.ts <upstream host> <upstream port> <max lifetime ms>');
  process.exit(2);
}

// What a minimal proxy does and nothing more: Nagle off on both sides (as pgwarden and PgBouncer), each chunk written
// on as it arrives, either side closing closes the other. Backpressure is left to the socket buffers: pgbench
// -S waits for every answer, so neither side runs ahead.
const server = net.createServer((client) => {
  client.setNoDelay(true);
  const upstream = net.connect(upstreamPort, host);
  upstream.setNoDelay(true);
  client.on('data', (chunk) => upstream.write(chunk));
  upstream.on('data', (chunk) => client.write(chunk));
  client.on('close', () => upstream.destroy());
  upstream.on('close', () => client.destroy());
  client.on('error', () => upstream.destroy());
  upstream.on('error', () => client.destroy());
});

const stop = () => {
  server.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.on('error', stop);
process.stdin.resume();
setTimeout(stop, lifetimeMs).unref();
server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  process.stdout.write(`READY ${typeof address === 'object' && address ? address.port : 0}\n`);
});
