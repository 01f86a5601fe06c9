// Config file (YAML or JSON) + env + flags → a validated, deep-frozen Config, or every issue found, each with its key path.
import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import {
  HMAC_MIN_BYTES,
  SUPPORTED_ALGORITHMS,
  algorithmMismatch,
  describeFsError,
  describeKey,
  isHmacAlgorithm,
  isSupportedAlgorithm,
  issuingAlgorithmFor,
  parseKeyText,
  readKeyFile,
  readSecretFile,
  readTrustedFile,
  trimTrailingNewlines,
  type KeyMaterial,
} from './key-files.ts';
import { formatBytes, formatDuration, parseBytes, parseDuration } from './duration.ts';
import { forbiddenKeys, MAX_TIMER_MS, OPTIONAL_SECTIONS, settings, type Setting, type SettingKey } from './settings.ts';
import type { AuthConfig, Config, ExchangeConfig } from './types.ts';
import { editDistance } from '../../lib/ident.ts';
import { deepFreeze } from '../../lib/freeze.ts';

export interface ConfigIssue {
  /** Dotted key path ("auth.maxTokenLifetime"), a section ("auth"), or "(file)" for the file as a whole. */
  path: string;
  message: string;
}

/** `warnings`: accepted but worth fixing (a secret file readable by other users); the CLI prints them. */
export type LoadResult = { ok: true; config: Config; warnings: ConfigIssue[] } | { ok: false; issues: ConfigIssue[] };

export interface LoadOptions {
  /** Environment to read PGWARDEN_* settings and upstream.passwordEnv from; process.env when absent. */
  env?: NodeJS.ProcessEnv;
  /** Values from command-line flags, by key path; they win over env and file. Relative paths resolve against cwd. */
  overrides?: Partial<Record<SettingKey, unknown>>;
}

const FILE = '(file)';

/**
 * Load and validate a config file. Precedence per setting: overrides (flags) > env var > file > default.
 * Files named in the config are read now, so a bad path is reported at startup with everything else.
 */
export function loadConfig(file: string, opts: LoadOptions = {}): LoadResult {
  const env = opts.env ?? process.env;
  const overrides: Readonly<Record<string, unknown>> = opts.overrides ?? {};
  const configPath = resolve(file);
  const baseDir = dirname(configPath);
  const issues: ConfigIssue[] = [];
  const issue = (path: string, message: string): void => {
    issues.push({ path, message });
  };
  const warnings: ConfigIssue[] = [];
  /** Reads a secret file, its permission warning noted under `path`. */
  const secret = (path: string, file: string): ReturnType<typeof readSecretFile> => {
    const read = readSecretFile(file);
    if (read.ok && read.warning !== undefined) warnings.push({ path, message: read.warning });
    return read;
  };

  // 1. Read and parse. A file that cannot be parsed yields no settings to check, so stop here.
  let text: string;
  try {
    text = readFileSync(configPath, 'utf8');
  } catch (err) {
    return { ok: false, issues: [{ path: FILE, message: `config ${describeFsError(configPath, err)}` }] };
  }
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    return {
      ok: false,
      issues: doc.errors.map((e) => ({ path: FILE, message: `syntax error: ${firstLine(e.message)}` })),
    };
  }
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    return { ok: false, issues: [{ path: FILE, message: `cannot be read as YAML: ${(err as Error).message}` }] };
  }
  if (raw === null || raw === undefined) raw = {};
  if (!isPlainObject(raw))
    return { ok: false, issues: [{ path: FILE, message: 'must be a mapping of settings (key: value)' }] };

  // 2. Unknown, misplaced and forbidden keys, anywhere in the tree.
  checkKeys(raw, '', issue);

  // 3. Every setting from its source, parsed by type.
  const values = new Map<string, unknown>();
  // Settings given in any source, valid or not: a bad jwksUrl is still "a key source was given".
  const provided = new Set<string>();
  const sectionGiven = (section: string): boolean =>
    isPlainObject(getPath(raw, section)) ||
    settings.some(
      (s) => s.key.startsWith(`${section}.`) && (overrides[s.key] !== undefined || envValue(s, env) !== undefined),
    );

  for (const setting of settings as readonly Setting[]) {
    const source = pickSource(setting, raw, env, overrides);
    const section = OPTIONAL_SECTIONS.find((s) => setting.key.startsWith(`${s}.`));
    if (source === undefined) {
      if (setting.required === true && (section === undefined || sectionGiven(section))) {
        issue(setting.key, section === undefined ? 'is required' : `is required when ${section} is given`);
      }
      if (setting.default !== undefined) values.set(setting.key, setting.default);
      continue;
    }
    provided.add(setting.key);
    const parsed = parseSetting(setting, source.value, source.from === 'override' ? process.cwd() : baseDir);
    if ('error' in parsed) {
      issue(setting.key, source.from === 'env' ? `${parsed.error} (from ${setting.env})` : parsed.error);
    } else {
      values.set(setting.key, parsed.value);
    }
  }

  // 4. Rules that span settings, and the files they name.
  const get = <T>(key: SettingKey): T | undefined => values.get(key) as T | undefined;
  const upstreamPassword = checkUpstream(get, env, issue, secret);
  const sslRootCert = checkSslRootCert(get, issue);
  checkListenTls(get, sectionGiven('listen.tls'), issue, secret);
  checkAuth(get, provided, issue, secret);
  const exchangeGiven = sectionGiven('exchange');
  if (exchangeGiven)
    checkExchange(get, provided, sectionGiven('exchange.tls'), sectionGiven('exchange.idp'), issue, secret);
  checkPolicyFile(get<string>('policyFile'), issue);
  const peers = parsePeers(get<string[]>('cluster.peers') ?? [], get<number>('cluster.replicaId') ?? 0, issue);
  const metricsEnabled = sectionGiven('metrics');
  if (
    metricsEnabled &&
    get('metrics.port') !== 0 &&
    get('metrics.port') === get('listen.port') &&
    get('metrics.host') === get('listen.host')
  ) {
    issue('metrics.port', 'is the same address as listen; choose another port');
  }

  if (issues.length > 0) return { ok: false, issues };

  // 5. Build. Every required value is present here: missing ones were issues above.
  const must = <T>(key: SettingKey): T => values.get(key) as T;
  const tlsEnabled = sectionGiven('listen.tls');
  const auth: AuthConfig = {
    issuer: must('auth.issuer'),
    audience: must('auth.audience'),
    algorithms: must('auth.algorithms'),
    secretFile: get('auth.secretFile'),
    publicKeyFile: get('auth.publicKeyFile'),
    jwksUrl: get('auth.jwksUrl'),
    privateKeyFile: get('auth.privateKeyFile'),
    maxTokenLifetime: must('auth.maxTokenLifetime'),
    clockSkew: must('auth.clockSkew'),
    allowCleartext: must('auth.allowCleartext'),
    jwksCooldown: must('auth.jwksCooldown'),
    jwksCacheMaxAge: must('auth.jwksCacheMaxAge'),
    jwksTimeout: must('auth.jwksTimeout'),
    keyOverlap: must('auth.keyOverlap'),
  };
  const exchange: ExchangeConfig | undefined = exchangeGiven
    ? {
        issuer: must('exchange.issuer'),
        audience: get<string>('exchange.audience') ?? firstOf(must('auth.audience')),
        listen:
          get('exchange.port') === undefined
            ? undefined
            : {
                host: must('exchange.host'),
                port: must('exchange.port'),
                tls: sectionGiven('exchange.tls')
                  ? { certFile: must('exchange.tls.certFile'), keyFile: must('exchange.tls.keyFile') }
                  : undefined,
              },
        signingKeyFile: get('exchange.signingKeyFile'),
        peerJwksUrls: get<string[]>('exchange.peerJwksUrls') ?? [],
        idp: sectionGiven('exchange.idp')
          ? {
              issuer: must('exchange.idp.issuer'),
              audience: must('exchange.idp.audience'),
              approverAudience: get('exchange.idp.approverAudience'),
              algorithms: must('exchange.idp.algorithms'),
              jwksUrl: get('exchange.idp.jwksUrl'),
              publicKeyFile: get('exchange.idp.publicKeyFile'),
            }
          : undefined,
        maxBodyBytes: must('exchange.maxBodyBytes'),
        requestsPerMinute: must('exchange.requestsPerMinute'),
        requestTimeout: must('exchange.requestTimeout'),
      }
    : undefined;
  const config: Config = {
    baseDir,
    listen: {
      host: must('listen.host'),
      port: must('listen.port'),
      tls: tlsEnabled ? { certFile: must('listen.tls.certFile'), keyFile: must('listen.tls.keyFile') } : undefined,
    },
    upstream: {
      host: must('upstream.host'),
      port: must('upstream.port'),
      database: must('upstream.database'),
      user: must('upstream.user'),
      password: upstreamPassword,
      passwordFile: get('upstream.passwordFile'),
      sslmode: must('upstream.sslmode'),
      sslRootCert,
      connectTimeout: must('upstream.connectTimeout'),
      checkInterval: must('upstream.checkInterval'),
      checkTimeout: must('upstream.checkTimeout'),
    },
    auth,
    policyFile: must('policyFile'),
    metrics: metricsEnabled ? { host: must('metrics.host'), port: must('metrics.port') } : undefined,
    ...(exchange === undefined ? {} : { exchange }),
    limits: {
      maxMessageSize: must('limits.maxMessageSize'),
      handshakeTimeout: must('limits.handshakeTimeout'),
      expiryGrace: must('limits.expiryGrace'),
      maxClientConnections: must('limits.maxClientConnections'),
      maxUnauthenticated: must('limits.maxUnauthenticated'),
      maxUnauthenticatedPerAddress: must('limits.maxUnauthenticatedPerAddress'),
      idleSessionTimeout: must('limits.idleSessionTimeout'),
      maxSessionsPerSub: must('limits.maxSessionsPerSub'),
      maxSessionsPerAgent: must('limits.maxSessionsPerAgent'),
      loginFailuresPerMinute: must('limits.loginFailuresPerMinute'),
      cancelRequestsPerMinute: must('limits.cancelRequestsPerMinute'),
      maxUpstreamConnections: must('limits.maxUpstreamConnections'),
      decisionCacheBytes: must('limits.decisionCacheBytes'),
      decideWorkers: must('limits.decideWorkers'),
      decideWorkerHeap: must('limits.decideWorkerHeap'),
    },
    analysis: {
      cacheTtl: must('analysis.cacheTtl'),
      timeout: must('analysis.timeout'),
      maxContexts: must('analysis.maxContexts'),
      ddlChannel: must('analysis.ddlChannel'),
    },
    cluster: { replicaId: must('cluster.replicaId'), peers },
    log: { level: must('log.level') },
    shutdown: { drainTimeout: must('shutdown.drainTimeout') },
    audit: {
      destination: resolveDestination(must('audit.destination'), baseDir),
      sql: must('audit.sql'),
      onFailure: must('audit.onFailure'),
    },
    revocation: {
      file: get('revocation.file'),
      fileMissing: must('revocation.fileMissing'),
      table: sectionGiven('revocation.table')
        ? {
            schema: must('revocation.table.schema'),
            name: must('revocation.table.name'),
            channel: must('revocation.table.channel'),
            refreshMs: must('revocation.table.refresh'),
          }
        : undefined,
    },
  };
  return { ok: true, config: deepFreeze(config), warnings };
}

/** Peers are written "id@host:port"; ids are 0..127 and distinct from ours and each other. */
function parsePeers(
  list: readonly string[],
  self: number,
  issue: (path: string, message: string) => void,
): { id: number; host: string; port: number }[] {
  const out: { id: number; host: string; port: number }[] = [];
  const seen = new Set<number>();
  for (const entry of list) {
    const m = /^(\d{1,3})@([^\s/@]+):(\d{1,5})$/.exec(entry);
    const id = m ? Number(m[1]) : NaN;
    const port = m ? Number(m[3]) : NaN;
    if (!m || id > 127 || port < 1 || port > 65_535) {
      issue('cluster.peers', `"${entry}" is not "id@host:port" with id 0..127`);
      continue;
    }
    if (id === self || seen.has(id)) {
      issue('cluster.peers', `peer id ${id} is ${id === self ? "this replica's own id" : 'listed twice'}`);
      continue;
    }
    seen.add(id);
    out.push({ id, host: m[2] as string, port });
  }
  return out;
}

/** stdout/stderr stay names; anything else is a file path relative to the config file. */
function resolveDestination(dest: string, baseDir: string): string {
  return dest === 'stdout' || dest === 'stderr' || isAbsolute(dest) ? dest : resolve(baseDir, dest);
}

/** Format issues for the CLI: a count, then one "path: message" line each. */
export function formatConfigIssues(issues: readonly ConfigIssue[]): string {
  const head = `configuration has ${issues.length} issue${issues.length === 1 ? '' : 's'}:`;
  return [head, ...issues.map((i) => `  ${i.path}: ${i.message}`)].join('\n');
}

// ---------------------------------------------------------------------------------------------
// Sources and keys

type Source = { value: unknown; from: 'override' | 'env' | 'file' };

function envValue(setting: Setting, env: NodeJS.ProcessEnv): string | undefined {
  if (setting.env === undefined) return undefined;
  const value = env[setting.env];
  // An empty variable is treated as unset, as shells make it easy to export one by accident.
  return value === undefined || value === '' ? undefined : value;
}

/** The one place precedence lives: flag > env > file (> default, applied by the caller). */
function pickSource(
  setting: Setting,
  raw: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
  overrides: Readonly<Record<string, unknown>>,
): Source | undefined {
  const override = overrides[setting.key];
  if (override !== undefined) return { value: override, from: 'override' };
  const fromEnv = envValue(setting, env);
  if (fromEnv !== undefined) return { value: fromEnv, from: 'env' };
  const fromFile = getPath(raw, setting.key);
  // `key:` with no value (null) reads as "not set", so a commented-out value falls back to the default.
  if (fromFile !== undefined && fromFile !== null) return { value: fromFile, from: 'file' };
  return undefined;
}

function getPath(root: unknown, path: string): unknown {
  let node: unknown = root;
  for (const part of path.split('.')) {
    if (!isPlainObject(node) || !Object.hasOwn(node, part)) return undefined;
    node = node[part];
  }
  return node;
}

const LEAF_KEYS: ReadonlySet<string> = new Set(settings.map((s) => s.key));
const SECTION_KEYS: ReadonlySet<string> = new Set(
  settings.flatMap((s) => {
    const parts = s.key.split('.');
    return parts.slice(1).map((_, i) => parts.slice(0, i + 1).join('.'));
  }),
);

function checkKeys(
  node: Record<string, unknown>,
  prefix: string,
  issue: (path: string, message: string) => void,
): void {
  for (const [key, value] of Object.entries(node)) {
    const path = prefix === '' ? key : `${prefix}.${key}`;
    const forbidden = forbiddenKeys[path];
    if (forbidden !== undefined) {
      issue(path, `not allowed: ${forbidden}`);
    } else if (LEAF_KEYS.has(path)) {
    } else if (SECTION_KEYS.has(path)) {
      if (isPlainObject(value)) checkKeys(value, path, issue);
      else if (value !== null) issue(path, `must be a mapping of settings (got ${show(value)})`);
    } else {
      const suggestion = suggest(key, prefix);
      issue(path, `unknown setting${suggestion === undefined ? '' : ` (did you mean "${suggestion}"?)`}`);
    }
  }
}

// Typos are the usual cause of an unknown key: suggest a sibling within edit distance 2, or a case-only match.
function suggest(key: string, prefix: string): string | undefined {
  const siblings = new Set<string>();
  for (const full of [...LEAF_KEYS, ...SECTION_KEYS]) {
    const parent = full.includes('.') ? full.slice(0, full.lastIndexOf('.')) : '';
    if (parent === prefix) siblings.add(full.slice(parent === '' ? 0 : parent.length + 1));
  }
  let best: string | undefined;
  let bestDistance = 3;
  for (const candidate of siblings) {
    const d = candidate.toLowerCase() === key.toLowerCase() ? 0 : editDistance(key, candidate);
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best;
}

// ---------------------------------------------------------------------------------------------
// Per-type parsing

type Parsed = { value: unknown } | { error: string };

function parseSetting(setting: Setting, v: unknown, baseDir: string): Parsed {
  switch (setting.type) {
    case 'string':
      return typeof v === 'string' && v.length > 0 ? { value: v } : { error: `not a non-empty string (${show(v)})` };
    case 'host':
      return typeof v === 'string' && /^[^\s/]+$/.test(v)
        ? { value: v }
        : { error: `not a host name or address (${show(v)})` };
    case 'port':
      return parseInteger(v, setting.min ?? 1, setting.max ?? 65_535, 'a port number');
    case 'integer':
      return parseInteger(
        v,
        setting.min ?? Number.MIN_SAFE_INTEGER,
        setting.max ?? Number.MAX_SAFE_INTEGER,
        'an integer',
      );
    case 'duration': {
      const ms = parseDuration(v);
      if (ms === undefined) return { error: `not a duration (${show(v)})` };
      const min = setting.min ?? 0;
      const max = Math.min(setting.max ?? MAX_TIMER_MS, MAX_TIMER_MS);
      if (ms < min) return { error: `must be at least ${formatDuration(min)} (got ${show(v)})` };
      if (ms > max) return { error: `must be at most ${formatDuration(max)} (got ${show(v)})` };
      return { value: ms };
    }
    case 'bytes': {
      const n = parseBytes(v);
      if (n === undefined)
        return { error: `not a byte size (${show(v)}); use a number of bytes or e.g. "512kB", "1MB"` };
      if (setting.min !== undefined && n < setting.min)
        return { error: `must be at least ${formatBytes(setting.min)} (got ${show(v)})` };
      if (setting.max !== undefined && n > setting.max)
        return { error: `must be at most ${formatBytes(setting.max)} (got ${show(v)})` };
      return { value: n };
    }
    case 'enum': {
      const values = setting.values ?? [];
      return typeof v === 'string' && values.includes(v)
        ? { value: v }
        : { error: `must be one of ${values.join(', ')} (got ${show(v)})` };
    }
    case 'stringOrList':
      if (typeof v === 'string' && v.length > 0) return { value: v };
      if (isNonEmptyStringList(v)) return { value: [...v] };
      return { error: `not a string or a non-empty list of strings (${show(v)})` };
    case 'stringList':
      if (Array.isArray(v) && v.length === 0) return { error: 'must not be empty' };
      if (isNonEmptyStringList(v)) return { value: [...new Set(v)] };
      return { error: `not a list of strings (${show(v)})` };
    case 'path':
      if (typeof v !== 'string' || v.length === 0) return { error: `not a file path (${show(v)})` };
      return { value: isAbsolute(v) ? v : resolve(baseDir, v) };
    case 'url': {
      if (typeof v !== 'string') return { error: `not a URL (${show(v)})` };
      try {
        return { value: new URL(v).href };
      } catch {
        return { error: `not a URL (${show(v)})` };
      }
    }
    case 'envName':
      // The value is not shown: what is written here instead of a name is usually the secret itself.
      return typeof v === 'string' && /^[A-Za-z_][A-Za-z0-9_]*$/.test(v)
        ? { value: v }
        : {
            error:
              'not an environment variable name (letters, digits and _, not starting with a digit); the value is not shown, in case it is the secret itself',
          };
    default: {
      const never: never = setting.type;
      return never;
    }
  }
}

function parseInteger(v: unknown, min: number, max: number, what: string): Parsed {
  // Env vars and flags arrive as strings; accept a plain decimal integer there.
  const n = typeof v === 'string' && /^\d+$/.test(v.trim()) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isSafeInteger(n)) return { error: `not ${what} (${show(v)})` };
  if (n < min || n > max) return { error: `must be between ${min} and ${max} (got ${n})` };
  return { value: n };
}

function isNonEmptyStringList(v: unknown): v is string[] {
  return Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'string' && x.length > 0);
}

// ---------------------------------------------------------------------------------------------
// Cross-setting rules and files

type Getter = <T>(key: SettingKey) => T | undefined;
type IssueFn = (path: string, message: string) => void;
type SecretReader = (path: string, file: string) => ReturnType<typeof readSecretFile>;

// Secrets are never echoed: not a password placed where its variable's name belongs, nor a file path that may be one.
function checkUpstream(get: Getter, env: NodeJS.ProcessEnv, issue: IssueFn, secret: SecretReader): string | undefined {
  const file = get<string>('upstream.passwordFile');
  const envName = get<string>('upstream.passwordEnv');
  if (file !== undefined && envName !== undefined) {
    issue('upstream', 'set only one of passwordFile and passwordEnv');
    return undefined;
  }
  if (file !== undefined) {
    const read = secret('upstream.passwordFile', file);
    if (!read.ok) {
      issue('upstream.passwordFile', read.message);
      return undefined;
    }
    const password = Buffer.from(trimTrailingNewlines(read.data)).toString('utf8');
    if (password.length === 0) issue('upstream.passwordFile', 'the file it names is empty');
    return password;
  }
  if (envName !== undefined) {
    const password = env[envName];
    if (password === undefined)
      issue(
        'upstream.passwordEnv',
        'the environment variable it names is not set (the name is not shown, in case it is the password itself)',
      );
    else if (password === '') issue('upstream.passwordEnv', 'the environment variable it names is empty');
    return password;
  }
  return undefined; // trust / peer authentication upstream
}

function checkSslRootCert(get: Getter, issue: IssueFn): string | undefined {
  const file = get<string>('upstream.sslRootCert');
  if (file === undefined) return undefined;
  // A CA file with sslmode require would look like verification while none happens.
  if (get('upstream.sslmode') !== 'verify-full')
    issue('upstream.sslRootCert', 'is only used with upstream.sslmode verify-full');
  const read = readKeyFile(file);
  if (!read.ok) {
    issue('upstream.sslRootCert', read.message);
    return undefined;
  }
  const pem = read.data.toString('utf8');
  if (!pem.includes('-----BEGIN CERTIFICATE-----'))
    issue('upstream.sslRootCert', `file ${file} holds no PEM certificate`);
  return pem;
}

function checkListenTls(get: Getter, given: boolean, issue: IssueFn, secret: SecretReader): void {
  if (!given) return;
  const files = [
    ['listen.tls.certFile', '-----BEGIN CERTIFICATE-----', 'PEM certificate'],
    ['listen.tls.keyFile', 'PRIVATE KEY-----', 'PEM private key'],
  ] as const;
  for (const [key, marker, what] of files) {
    const file = get<string>(key);
    if (file === undefined) continue;
    const read = key === 'listen.tls.keyFile' ? secret(key, file) : readKeyFile(file);
    if (!read.ok) issue(key, read.message);
    else if (!read.data.toString('utf8').includes(marker))
      issue(key, key === 'listen.tls.keyFile' ? `the file it names holds no ${what}` : `file ${file} holds no ${what}`);
  }
}

function checkAuth(get: Getter, provided: ReadonlySet<string>, issue: IssueFn, secret: SecretReader): void {
  const secretFile = get<string>('auth.secretFile');
  const publicKeyFile = get<string>('auth.publicKeyFile');
  const jwksUrl = get<string>('auth.jwksUrl');
  const privateKeyFile = get<string>('auth.privateKeyFile');
  const algorithms = get<string[]>('auth.algorithms') ?? [];

  const sources = (['secretFile', 'publicKeyFile', 'jwksUrl'] as const).filter((k) => provided.has(`auth.${k}`));
  if (sources.length === 0) issue('auth', 'one of secretFile, publicKeyFile or jwksUrl is required');
  if (sources.length > 1)
    issue('auth', `set exactly one of secretFile, publicKeyFile, jwksUrl (got ${sources.join(', ')})`);

  for (const alg of algorithms) {
    if (alg.toLowerCase() === 'none') {
      issue('auth.algorithms', '"none" (unsigned tokens) is never accepted');
    } else if (!isSupportedAlgorithm(alg)) {
      issue(
        'auth.algorithms',
        `${JSON.stringify(alg)} is not a supported JWS algorithm (supported: ${SUPPORTED_ALGORITHMS.join(', ')})`,
      );
    } else if (isHmacAlgorithm(alg) && sources.length > 0 && !sources.includes('secretFile')) {
      // With a public key as the HMAC secret anyone holding the public key could sign (algorithm confusion).
      issue(
        'auth.algorithms',
        `${alg} needs auth.secretFile; HMAC algorithms are never used with a public key or JWKS`,
      );
    } else if (!isHmacAlgorithm(alg) && sources.includes('secretFile')) {
      issue(
        'auth.algorithms',
        `${alg} needs auth.publicKeyFile or auth.jwksUrl; auth.secretFile only serves HS256, HS384, HS512`,
      );
    }
  }

  if (secretFile !== undefined) {
    const read = secret('auth.secretFile', secretFile);
    if (!read.ok) issue('auth.secretFile', read.message);
    else {
      const length = trimTrailingNewlines(read.data).length;
      if (length < HMAC_MIN_BYTES)
        issue('auth.secretFile', `secret is ${length} bytes; at least ${HMAC_MIN_BYTES} are required`);
    }
  }

  const asymmetric = algorithms.filter((a) => isSupportedAlgorithm(a) && !isHmacAlgorithm(a));
  let publicMaterial: KeyMaterial | undefined;
  if (publicKeyFile !== undefined) {
    publicMaterial = readKeyMaterial('auth.publicKeyFile', publicKeyFile, 'public', issue);
    if (publicMaterial !== undefined) {
      for (const alg of asymmetric) {
        const reasons = publicMaterial.keys.map((key, i) =>
          algorithmMismatch(key, alg, jwkAt(publicMaterial as KeyMaterial, i)),
        );
        if (reasons.every((r) => r !== undefined)) {
          issue('auth.algorithms', `${alg} cannot be used with the key in auth.publicKeyFile: ${reasons[0] ?? ''}`);
        }
      }
    }
  }

  if (jwksUrl !== undefined) {
    const url = new URL(jwksUrl);
    const loopback = isLoopbackHost(url.hostname);
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && loopback)) {
      issue(
        'auth.jwksUrl',
        'must use https (plain http is allowed only to a loopback host), or keys could be swapped in transit',
      );
    }
    if (url.username !== '' || url.password !== '') issue('auth.jwksUrl', 'must not contain credentials');
  }

  if (privateKeyFile !== undefined) {
    if (secretFile !== undefined) {
      issue('auth.privateKeyFile', 'is not used with auth.secretFile (HS* tokens are minted with the secret)');
      return;
    }
    const material = readKeyMaterial('auth.privateKeyFile', privateKeyFile, 'private', issue, secret);
    const first = algorithms[0];
    const key = material?.keys[0];
    if (material === undefined || key === undefined || first === undefined || !isSupportedAlgorithm(first)) return;
    const mismatch = algorithmMismatch(key, first, jwkAt(material, 0));
    if (mismatch !== undefined)
      issue('auth.privateKeyFile', `cannot sign ${first}, the first of auth.algorithms: ${mismatch}`);
    // Minted tokens must verify: the private key's public half has to be one of the configured public keys.
    if (publicMaterial !== undefined && !publicMaterial.keys.some((pub) => sameKey(pub, createPublicKey(key)))) {
      issue(
        'auth.privateKeyFile',
        'is not the private half of any key in auth.publicKeyFile; minted tokens would not verify',
      );
    }
  }
}

function firstOf(v: string | string[]): string {
  return typeof v === 'string' ? v : (v[0] ?? '');
}

function asList(v: string | string[] | undefined): string[] {
  return v === undefined ? [] : typeof v === 'string' ? [v] : v;
}

/** A JWKS URL pgwarden fetches keys from: https, or http to a loopback host; no credentials. */
function checkKeyUrl(path: string, value: string, issue: IssueFn): void {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    issue(path, `${JSON.stringify(value)} is not a URL`);
    return;
  }
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && isLoopbackHost(url.hostname)))
    issue(
      path,
      `${value}: must use https (plain http is allowed only to a loopback host), or keys could be swapped in transit`,
    );
  if (url.username !== '' || url.password !== '') issue(path, 'must not contain credentials');
}

/**
 * The exchange section: its issuer apart from auth's (logins route by issuer), a signing key that can issue, the
 * listener on loopback or with TLS, and an IdP with one pinned, asymmetric key source.
 */
function checkExchange(
  get: Getter,
  provided: ReadonlySet<string>,
  tlsGiven: boolean,
  idpGiven: boolean,
  issue: IssueFn,
  secret: SecretReader,
): void {
  const issuer = get<string>('exchange.issuer');
  const authIssuers = asList(get<string | string[]>('auth.issuer'));
  if (issuer !== undefined && authIssuers.includes(issuer))
    issue('exchange.issuer', 'must differ from every auth.issuer: tokens are routed to their verifier by issuer');
  const audience = get<string>('exchange.audience');
  const authAudiences = asList(get<string | string[]>('auth.audience'));
  if (audience !== undefined && !authAudiences.includes(audience))
    issue('exchange.audience', 'must be one of auth.audience, or issued tokens would not log in');

  const port = get<number>('exchange.port');
  const host = get<string>('exchange.host') ?? '127.0.0.1';
  const signingKeyFile = get<string>('exchange.signingKeyFile');
  const peers = get<string[]>('exchange.peerJwksUrls') ?? [];
  if (port !== undefined) {
    if (signingKeyFile === undefined)
      issue('exchange.signingKeyFile', 'is required when exchange.port is given (the key tokens are signed with)');
    if (!tlsGiven && !isLoopbackHost(host))
      issue(
        'exchange.host',
        `is not a loopback address: the token endpoint must then be HTTPS (give exchange.tls), tokens would cross the network in clear`,
      );
    for (const other of ['listen', 'metrics'] as const) {
      if (port !== 0 && get(`${other}.port`) === port && get(`${other}.host`) === host)
        issue('exchange.port', `is the same address as ${other}; choose another port`);
    }
  }
  if (signingKeyFile === undefined && peers.length === 0)
    issue(
      'exchange',
      'trusts no key: give signingKeyFile (this replica issues) and/or peerJwksUrls (other replicas issue)',
    );
  if (tlsGiven) {
    for (const [key, marker, what] of [
      ['exchange.tls.certFile', '-----BEGIN CERTIFICATE-----', 'PEM certificate'],
      ['exchange.tls.keyFile', 'PRIVATE KEY-----', 'PEM private key'],
    ] as const) {
      const file = get<string>(key);
      if (file === undefined) continue;
      const read = key === 'exchange.tls.keyFile' ? secret(key, file) : readKeyFile(file);
      if (!read.ok) issue(key, read.message);
      else if (!read.data.toString('utf8').includes(marker)) issue(key, `the file it names holds no ${what}`);
    }
  }
  if (signingKeyFile !== undefined) {
    const material = readKeyMaterial('exchange.signingKeyFile', signingKeyFile, 'private', issue, secret);
    const key = material?.keys[0];
    if (key !== undefined && issuingAlgorithmFor(key) === undefined)
      issue(
        'exchange.signingKeyFile',
        `holds ${describeKey(key)}; issued tokens are signed with an EC P-256 (ES256) or Ed25519 (EdDSA) key`,
      );
  }
  for (const url of peers) checkKeyUrl('exchange.peerJwksUrls', url, issue);

  if (!idpGiven) return;
  const idpIssuers = asList(get<string | string[]>('exchange.idp.issuer'));
  if (issuer !== undefined && idpIssuers.includes(issuer))
    issue('exchange.idp.issuer', 'must differ from exchange.issuer: subject tokens are told apart by issuer');
  const idpAudiences = asList(get<string | string[]>('exchange.idp.audience'));
  if (asList(get<string | string[]>('exchange.idp.approverAudience')).some((a) => idpAudiences.includes(a)))
    issue(
      'exchange.idp.approverAudience',
      'must differ from every exchange.idp.audience: a token handed to an agent for exchanges must never approve',
    );
  const sources = (['jwksUrl', 'publicKeyFile'] as const).filter((k) => provided.has(`exchange.idp.${k}`));
  if (sources.length !== 1) issue('exchange.idp', 'set exactly one of jwksUrl and publicKeyFile');
  const algorithms = get<string[]>('exchange.idp.algorithms') ?? [];
  for (const alg of algorithms) {
    if (!isSupportedAlgorithm(alg) || isHmacAlgorithm(alg))
      issue(
        'exchange.idp.algorithms',
        `${JSON.stringify(alg)} is not an asymmetric JWS algorithm pgwarden supports (an IdP's tokens are verified with its public keys)`,
      );
  }
  const jwksUrl = get<string>('exchange.idp.jwksUrl');
  if (jwksUrl !== undefined) checkKeyUrl('exchange.idp.jwksUrl', jwksUrl, issue);
  const publicKeyFile = get<string>('exchange.idp.publicKeyFile');
  if (publicKeyFile !== undefined) {
    const material = readKeyMaterial('exchange.idp.publicKeyFile', publicKeyFile, 'public', issue);
    if (material !== undefined)
      for (const alg of algorithms.filter((a) => isSupportedAlgorithm(a) && !isHmacAlgorithm(a))) {
        const reasons = material.keys.map((k, i) => algorithmMismatch(k, alg, jwkAt(material, i)));
        if (reasons.every((r) => r !== undefined))
          issue(
            'exchange.idp.algorithms',
            `${alg} cannot be used with the key in exchange.idp.publicKeyFile: ${reasons[0] ?? ''}`,
          );
      }
  }
}

function readKeyMaterial(
  path: string,
  file: string,
  want: 'public' | 'private',
  issue: IssueFn,
  secret?: SecretReader,
): KeyMaterial | undefined {
  // A public key file others may write is refused: whoever writes it decides which tokens verify.
  const read = secret ? secret(path, file) : readTrustedFile(file);
  if (!read.ok) {
    issue(path, read.message);
    return undefined;
  }
  const parsed = parseKeyText(read.data.toString('utf8'), want);
  if (!parsed.ok) {
    issue(path, secret ? `the file it names ${parsed.message}` : `file ${file} ${parsed.message}`);
    return undefined;
  }
  return parsed.material;
}

function jwkAt(material: KeyMaterial, i: number): Parameters<typeof algorithmMismatch>[2] {
  if (material.format === 'jwk') return material.jwk;
  if (material.format === 'jwks') return material.jwks.keys.filter((k) => k.use !== 'enc')[i];
  return undefined;
}

function sameKey(a: KeyObject, b: KeyObject): boolean {
  try {
    return a.export({ type: 'spki', format: 'der' }).equals(b.export({ type: 'spki', format: 'der' }));
  } catch {
    return describeKey(a) === describeKey(b) && a.equals(b);
  }
}

/** Loopback per RFC 6890 (127.0.0.0/8, ::1) plus "localhost", which RFC 6761 reserves for loopback. */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return (
    host === 'localhost' ||
    host.endsWith('.localhost') ||
    host === '::1' ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)
  );
}

function checkPolicyFile(file: string | undefined, issue: IssueFn): void {
  if (file === undefined) return;
  try {
    if (!statSync(file).isFile()) issue('policyFile', `${file} is not a file`);
  } catch (err) {
    issue('policyFile', describeFsError(file, err));
  }
}

// ---------------------------------------------------------------------------------------------
// Small helpers

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A value as it appeared, bounded: `"15 mins"`, `70000`, `[1,2]`. */
function show(v: unknown): string {
  let text: string;
  try {
    text = typeof v === 'string' ? JSON.stringify(v) : v === undefined ? 'nothing' : (JSON.stringify(v) ?? String(v));
  } catch {
    text = String(v);
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function firstLine(message: string): string {
  return (message.split('\n')[0] ?? message).replace(/:$/, '');
}
