// `pgwarden demo`: a real embedded Postgres with a sample schema behind pgwarden, a fresh 10-minute token, a token-exchange endpoint with a demo identity provider's token for a task token and an approval round trip, and psql commands to paste.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as jose from 'jose';
import pg from 'pg';
import { startPostgres } from '../embedded/postgres.ts';
import { SAMPLE_DATABASE, SAMPLE_POLICY_YAML, SAMPLE_UPSTREAM_USER, sampleSchemaSql } from '../embedded/sample.ts';
import { loadConfig, formatConfigIssues } from '../config/load.ts';
import { mintToken } from '../auth/mint.ts';
import { createProxy } from '../index.ts';
import { createLogger } from '../log.ts';
import { errorMessage } from '../../lib/error-message.ts';

function step(msg: string): void {
  process.stderr.write(`pgwarden demo: ${msg}\n`);
}

/** The stand-in identity provider's issuer (its key is made by each demo run and trusted by that run only). */
const DEMO_IDP = 'https://idp.demo.invalid';

export async function runDemo(opts: { port: number; metricsPort: number; exchangePort?: number }): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-demo-'));
  step('starting an embedded PostgreSQL (from npm)…');
  const db = await startPostgres();
  let proxy: Awaited<ReturnType<typeof createProxy>> | undefined;
  let stopping = false;
  const stop = async (code: number) => {
    if (stopping) return;
    stopping = true;
    step('stopping…');
    await proxy?.close(0).catch(() => {});
    await db.stop().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
    step('stopped; nothing left running.');
    process.exit(code);
  };
  process.on('SIGINT', () => void stop(0));
  process.on('SIGTERM', () => void stop(0));
  try {
    step(`PostgreSQL ${db.port} is up; loading the sample schema (orders, customers with PII, secrets)…`);
    const upstreamPassword = randomBytes(18).toString('base64url');
    const admin = new pg.Client({ connectionString: db.url() });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${SAMPLE_DATABASE}`);
    await admin.end();
    const app = new pg.Client({ connectionString: db.url(SAMPLE_DATABASE) });
    await app.connect();
    await app.query(sampleSchemaSql(upstreamPassword));
    // The backstops docs/deploy.md ("Role settings") asks a DBA to set on pgwarden's upstream role, set as a DBA would.
    for (const [name, value] of [
      ['temp_file_limit', '1GB'],
      ['statement_timeout', '5min'],
      ['idle_in_transaction_session_timeout', '5min'],
    ]) {
      await app.query(
        `ALTER ROLE ${pg.escapeIdentifier(SAMPLE_UPSTREAM_USER)} IN DATABASE ${pg.escapeIdentifier(SAMPLE_DATABASE)} SET ${name} = ${pg.escapeLiteral(value as string)}`,
      );
    }
    await app.end();

    step(`writing a demo config and policy to ${dir}…`);
    mkdirSync(path.join(dir, 'secrets'), { mode: 0o700 });
    writeFileSync(path.join(dir, 'secrets', 'upstream-password'), upstreamPassword + '\n', { mode: 0o600 });
    writeFileSync(path.join(dir, 'secrets', 'jwt-secret'), randomBytes(32).toString('base64url') + '\n', {
      mode: 0o600,
    });
    // Task-time issuance (docs/issuance.md): a stand-in identity provider (its key made here), pgwarden's own
    // issuing key, and a rule letting alice exchange the IdP's token for an analyst token of at most 10 minutes.
    const idp = await jose.generateKeyPair('ES256', { extractable: true });
    writeFileSync(path.join(dir, 'idp-public.pem'), await jose.exportSPKI(idp.publicKey), { mode: 0o644 });
    const issuing = await jose.generateKeyPair('EdDSA', { extractable: true });
    writeFileSync(path.join(dir, 'secrets', 'issuing-key.pem'), await jose.exportPKCS8(issuing.privateKey), {
      mode: 0o600,
    });
    const idpToken = (sub: string, groups: string[], audience = 'pgwarden-exchange') =>
      new jose.SignJWT({ groups })
        .setProtectedHeader({ alg: 'ES256' })
        .setIssuer(DEMO_IDP)
        .setAudience(audience)
        .setSubject(sub)
        .setIssuedAt()
        .setExpirationTime('1h')
        .sign(idp.privateKey);
    const idpTokenFile = path.join(dir, 'idp-token-alice.jwt');
    writeFileSync(idpTokenFile, `${await idpToken('alice', ['analysts'])}\n`, { mode: 0o600 });
    // dave leads the analysts: he approves what needs approval (never his own requests), with a token for the
    // approvals API only (exchange.idp.approverAudience), never one he would hand to an agent for exchanges.
    const leadTokenFile = path.join(dir, 'idp-token-dave.jwt');
    writeFileSync(leadTokenFile, `${await idpToken('dave', ['leads'], 'pgwarden-approvals')}\n`, { mode: 0o600 });
    writeFileSync(
      path.join(dir, 'policy.yaml'),
      `${SAMPLE_POLICY_YAML}  support:
    # Customer records in full (ssn included): a wider scope, issued only with a lead's approval.
    readOnly: true
    relations: [public.customers]
    maxRows: 20
# Who may obtain task tokens from the token-exchange endpoint (docs/issuance.md).
issuance:
  rules:
    - id: analysts
      subjects: [{ issuer: ${DEMO_IDP}, claims: { groups: analysts } }]
      roles: [analyst]
      maxLifetime: 10m
    - id: customer-records
      subjects: [{ issuer: ${DEMO_IDP}, claims: { groups: analysts } }]
      roles: [support]
      maxLifetime: 10m
      singleUse: required
      approval: required
  approvers:
    - id: leads
      subjects: [{ issuer: ${DEMO_IDP}, claims: { groups: leads } }]
  approvalTimeout: 15m
`,
    );
    // pgwarden refuses to start without its revocation list (a lost file must not un-revoke anybody).
    writeFileSync(path.join(dir, 'revocations.yaml'), 'revoked: []\n');
    const configFile = path.join(dir, 'pgwarden.yaml');
    writeFileSync(
      configFile,
      `# pgwarden demo configuration
listen: { host: 127.0.0.1, port: ${opts.port} }
upstream:
  host: 127.0.0.1
  port: ${db.port}
  database: ${SAMPLE_DATABASE}
  user: ${SAMPLE_UPSTREAM_USER}
  passwordFile: ./secrets/upstream-password
auth:
  issuer: pgwarden-dev
  audience: pgwarden
  algorithms: [HS256]
  secretFile: ./secrets/jwt-secret
  maxTokenLifetime: 15m
policyFile: ./policy.yaml
revocation: { file: ./revocations.yaml }
metrics: { host: 127.0.0.1, port: ${opts.metricsPort} }
audit: { destination: ./audit.jsonl, sql: full }
exchange:
  issuer: pgwarden-demo
  port: ${opts.exchangePort ?? 0}
  signingKeyFile: ./secrets/issuing-key.pem
  idp:
    issuer: ${DEMO_IDP}
    audience: pgwarden-exchange
    approverAudience: pgwarden-approvals
    algorithms: [ES256]
    publicKeyFile: ./idp-public.pem
`,
    );
    const loaded = loadConfig(configFile);
    if (!loaded.ok) throw new Error(`demo config is invalid:\n${formatConfigIssues(loaded.issues)}`);
    const config = loaded.config;

    step(`starting the proxy on 127.0.0.1:${opts.port}…`);
    proxy = await createProxy(config, { logger: createLogger(process.env.PGWARDEN_LOG_LEVEL ?? 'warn') });
    const token = await mintToken(config.auth, { sub: 'alice', role: 'analyst', agent: 'demo-agent' }, 10 * 60_000);
    const conn = `host=127.0.0.1 port=${proxy.port} dbname=${SAMPLE_DATABASE} user=alice sslmode=disable`;
    const exchangeUrl = `http://127.0.0.1:${proxy.exchangePort}`;
    const wide = `npx pgwarden token exchange --url ${exchangeUrl} --subject-token-file ${idpTokenFile} --role support --ttl 5m`;
    process.stdout.write(`
pgwarden is running on 127.0.0.1:${proxy.port} in front of a real PostgreSQL (database "${SAMPLE_DATABASE}").
Your token (role "analyst", subject "alice", valid 10 minutes) is the password:

  export PGPASSWORD='${token}'

Then, in another terminal with that variable set:

  psql "${conn}" -c "SELECT * FROM pgwarden.scope"       # what this token may query (no catalog access needed)
  psql "${conn}" -c "SELECT * FROM pgwarden.session"     # who you are, your limits, when the token expires
  psql "${conn}" -c "SELECT id, total, status FROM orders ORDER BY id LIMIT 5"
  psql "${conn}" -c "SELECT ssn FROM customers"          # refused: denied column
  psql "${conn}" -c "DELETE FROM orders"                 # refused: read-only role
  psql "${conn}"                                         # interactive; try \\dt and \\d orders

A task token (docs/issuance.md): exchange the demo identity provider's token for alice for a single-use token
narrowed to orders, valid 5 minutes, and use it once:

  export PGPASSWORD=$(npx pgwarden token exchange --url http://127.0.0.1:${proxy.exchangePort} --subject-token-file ${idpTokenFile} --role analyst --narrow '{"relations":["public.orders"]}' --ttl 5m --single-use)
  psql "${conn}" -c "SELECT * FROM pgwarden.scope"       # orders only; the token is now used
  psql "${conn}" -c "SELECT 1"                           # refused: single-use token already used

Wider access needs approval: customer records in full (role support) need a lead's OK (docs/issuance.md, Approvals).

  ${wide}    # pending: prints an approval id
  npx pgwarden approve --list --url ${exchangeUrl} --token-file ${leadTokenFile}    # dave, a lead, sees who asks for what
  npx pgwarden approve APPROVAL_ID --url ${exchangeUrl} --token-file ${leadTokenFile} --reason "ticket 7"
  export PGPASSWORD=$(${wide} --approval-id APPROVAL_ID)    # alice's token, once
  psql "${conn}" -c "SELECT name, ssn FROM customers LIMIT 3"

Mint another token:  npx pgwarden token mint --config ${configFile} --sub alice --role analyst --ttl 10m
Edit the policy:     ${path.join(dir, 'policy.yaml')} (reloaded on save)
Audit trail:         tail -f ${path.join(dir, 'audit.jsonl')}
Metrics:             curl -s http://127.0.0.1:${proxy.metricsPort}/metrics | grep ^pgwarden_
Revoke the token:    npx pgwarden revoke --config ${configFile} --sub alice --reason demo   (ends live sessions)
The session ends when the token expires. Press Ctrl-C to stop everything.
`);
  } catch (err) {
    step(`failed: ${errorMessage(err)}`);
    await stop(1);
  }
}
