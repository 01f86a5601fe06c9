// The pgwarden command line: serve, token mint/exchange, approve, demo, policy check/explain; SIGTERM drains, SIGHUP reloads.
import { parseArgs } from 'node:util';
import { loadConfig, formatConfigIssues } from '../config/load.ts';
import { parseDuration } from '../config/duration.ts';
import { mintToken } from '../auth/mint.ts';
import { createProxy } from '../index.ts';
import { runDemo } from './demo.ts';
import { errorMessage } from '../../lib/error-message.ts';

const USAGE = `usage:
  pgwarden serve --config FILE
  pgwarden token mint --config FILE --sub S --role R [--agent A] [--tenant T] [--ttl 300s] [--jti ID] [--single-use] [--networks CIDR,CIDR]
  pgwarden token exchange --url URL --subject-token-file FILE --role R [--narrow JSON] [--ttl 10m] [--actor-token-file FILE] [--single-use] [--approval-id ID [--wait]] [--json]
  pgwarden approve ID --url URL --token-file FILE [--deny] [--reason TEXT] [--show] [--json]
  pgwarden approve --list --url URL --token-file FILE [--json]
  pgwarden demo [--port 6432] [--metrics-port 9187] [--exchange-port 6480]
  pgwarden revoke --config FILE (--jti J | --sub S | --agent A) [--reason TEXT] [--expires 1h]
  pgwarden policy check FILE
  pgwarden policy explain --config FILE --role R --sql "SQL"
`;

function die(msg: string, code = 2): never {
  process.stderr.write(msg.endsWith('\n') ? msg : msg + '\n');
  process.exit(code);
}

function load(configFile: string | undefined) {
  if (!configFile) die(`--config FILE is required\n${USAGE}`);
  const res = loadConfig(configFile);
  if (!res.ok) die(`pgwarden: invalid configuration ${configFile}:\n${formatConfigIssues(res.issues)}`, 1);
  for (const w of res.warnings) process.stderr.write(`pgwarden: warning: ${w.path}: ${w.message}\n`);
  return res.config;
}

async function serve(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { config: { type: 'string', short: 'c' } } });
  const config = load(values.config);
  const proxy = await createProxy(config);
  let stopping = false;
  const drainTimeout = config.shutdown?.drainTimeout ?? 10_000;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    // Whatever hangs below (a stalled audit reader, a socket that never closes), the process is gone at drainTimeout.
    setTimeout(() => {
      proxy.log.error({ signal, drainTimeout }, 'shutdown did not finish within shutdown.drainTimeout; exiting');
      process.exit(1);
    }, drainTimeout);
    // Running statements get all but the last 2 s (a quarter, when shorter), which closing everything else needs.
    const closing = Math.min(2_000, drainTimeout / 4);
    proxy.log.info(
      { signal, drainMs: drainTimeout - closing },
      'shutting down: no new connections or statements, draining running statements',
    );
    try {
      await proxy.close(drainTimeout - closing);
    } catch (err) {
      proxy.log.error({ err }, 'error while shutting down');
    }
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGHUP', () => void proxy.reload());
  // Log rotation: the audit file was moved; reopen it by name.
  process.on('SIGUSR2', () => proxy.audit.reopen());
}

async function tokenMint(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string', short: 'c' },
      sub: { type: 'string' },
      role: { type: 'string' },
      agent: { type: 'string' },
      tenant: { type: 'string' },
      ttl: { type: 'string', default: '300s' },
      jti: { type: 'string' },
      'single-use': { type: 'boolean', default: false },
      networks: { type: 'string' },
    },
  });
  const config = load(values.config);
  if (!values.sub || !values.role) die(`--sub and --role are required\n${USAGE}`);
  const ttl = parseDuration(values.ttl);
  if (ttl === undefined || ttl <= 0) die(`--ttl: not a duration ("${values.ttl}")`);
  const token = await mintToken(
    config.auth,
    {
      sub: values.sub,
      role: values.role,
      agent: values.agent,
      tenant: values.tenant,
      jti: values.jti,
      singleUse: values['single-use'],
      networks: values.networks?.split(',').map((n) => n.trim()),
    },
    ttl,
  ).catch((err: Error) => die(err.message));
  process.stdout.write(token + '\n');
}

async function policy(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  if (sub === 'check') {
    const { policyCheck } = await import('./policy.ts');
    const file = rest[0];
    if (!file) die(`policy check needs a FILE\n${USAGE}`);
    const res = await policyCheck(file);
    process.stdout.write(res.output.endsWith('\n') ? res.output : res.output + '\n');
    process.exit(res.ok ? 0 : 1);
  }
  if (sub === 'explain') {
    const { values } = parseArgs({
      args: rest,
      options: { config: { type: 'string', short: 'c' }, role: { type: 'string' }, sql: { type: 'string' } },
    });
    const config = load(values.config);
    if (!values.role || values.sql === undefined) die(`--role and --sql are required\n${USAGE}`);
    const { explain } = await import('./explain.ts');
    const out = await explain(config, values.role, values.sql);
    process.stdout.write(JSON.stringify(out, null, 2) + '\n');
    process.exit(0);
  }
  die(USAGE);
}

export async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'serve':
      return await serve(rest);
    case 'token': {
      if (rest[0] === 'exchange') {
        const { tokenExchange } = await import('./exchange.ts');
        const r = await tokenExchange(rest.slice(1));
        process.stdout.write(r.stdout);
        process.stderr.write(r.stderr);
        return process.exit(r.code);
      }
      if (rest[0] !== 'mint') die(USAGE);
      return await tokenMint(rest.slice(1));
    }
    case 'demo': {
      const { values } = parseArgs({
        args: rest,
        options: {
          port: { type: 'string', default: '6432' },
          'metrics-port': { type: 'string', default: '9187' },
          'exchange-port': { type: 'string', default: '6480' },
        },
      });
      return await runDemo({
        port: Number(values.port),
        metricsPort: Number(values['metrics-port']),
        exchangePort: Number(values['exchange-port']),
      });
    }
    case 'policy':
      return await policy(rest);
    case 'approve': {
      const { approveCommand } = await import('./approve.ts');
      const r = await approveCommand(rest);
      process.stdout.write(r.stdout);
      process.stderr.write(r.stderr);
      return process.exit(r.code);
    }
    case 'revoke': {
      const { revokeCommand } = await import('./revoke.ts');
      return process.exit(await revokeCommand(rest, loadConfig));
    }
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(USAGE);
      return;
    default:
      die(`unknown command "${cmd}"\n${USAGE}`);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  die(`pgwarden: ${errorMessage(err)}`, 1);
});
