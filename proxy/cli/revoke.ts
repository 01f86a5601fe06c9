// `pgwarden revoke`: appends one jti/sub/agent entry to the configured revocation file, which running proxies pick up by file watch.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { parseDuration } from '../config/duration.ts';
import { formatConfigIssues, type ConfigIssue } from '../config/load.ts';
import { revoke, type RevocationEntry } from '../revocation/file.ts';

export const REVOKE_USAGE = `usage:
  pgwarden revoke --config FILE (--jti ID | --sub SUBJECT | --agent AGENT) [--reason TEXT] [--expires 1h|ISO-TIME]
  pgwarden revoke --config FILE (--jti-file F | --sub-file F | --agent-file F) …   (the value is F's content; - is stdin)

Appends an entry to revocation.file (YAML/JSON: rewritten atomically; JSON Lines, *.jsonl: one line appended in
place, which running proxies read without re-reading the rest); every pgwarden watching that file refuses new
logins for it and ends live sessions that match. --expires bounds the entry (a jti never needs longer than auth.maxTokenLifetime);
the reason is shown to the refused client. Any value a token can carry can be revoked, of any length; a value too
long for the command line (tokens carry up to 64 KiB) is read from a file or stdin with --jti-file and friends
(exactly the file's content, one final newline removed).
`;

/** The part of the config this command reads; `revocation` is optional until the lead adds the section. */
export interface RevokeConfigView {
  revocation?: { file?: string; table?: { schema: string; name: string; channel?: string } } | undefined;
}

export type RevokeLoadConfig = (
  file: string,
) => { ok: true; config: RevokeConfigView } | { ok: false; issues: ConfigIssue[] };

export interface RevokeIo {
  out: (text: string) => void;
  err: (text: string) => void;
  now: () => number;
}

const defaultIo: RevokeIo = {
  out: (t) => void process.stdout.write(t),
  err: (t) => void process.stderr.write(t),
  now: Date.now,
};

/** Returns the process exit code: 0 done, 1 failed (config, file), 2 usage error. */
export async function revokeCommand(
  argv: string[],
  loadConfigFn: RevokeLoadConfig,
  io: RevokeIo = defaultIo,
): Promise<number> {
  let values: {
    config?: string;
    jti?: string;
    sub?: string;
    agent?: string;
    'jti-file'?: string;
    'sub-file'?: string;
    'agent-file'?: string;
    reason?: string;
    expires?: string;
    help?: boolean;
  };
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        config: { type: 'string', short: 'c' },
        jti: { type: 'string' },
        sub: { type: 'string' },
        agent: { type: 'string' },
        'jti-file': { type: 'string' },
        'sub-file': { type: 'string' },
        'agent-file': { type: 'string' },
        reason: { type: 'string' },
        expires: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    io.err(`pgwarden revoke: ${(err as Error).message}\n${REVOKE_USAGE}`);
    return 2;
  }
  if (values.help) {
    io.out(REVOKE_USAGE);
    return 0;
  }
  if (!values.config) {
    io.err(`pgwarden revoke: --config FILE is required\n${REVOKE_USAGE}`);
    return 2;
  }
  const given = (['jti', 'sub', 'agent'] as const).flatMap((k) => [
    ...(values[k] !== undefined ? [{ key: k, flag: k }] : []),
    ...(values[`${k}-file`] !== undefined ? [{ key: k, flag: `${k}-file` as const }] : []),
  ]);
  const one = given[0];
  if (given.length !== 1 || one === undefined) {
    io.err(
      `pgwarden revoke: give exactly one of --jti, --sub, --agent (or --jti-file, --sub-file, --agent-file)\n${REVOKE_USAGE}`,
    );
    return 2;
  }
  const key = one.key;
  let id: string;
  if (one.flag === key) id = values[key] ?? '';
  else {
    const source = values[one.flag] ?? '';
    try {
      id = readFileSync(source === '-' ? 0 : source, 'utf8');
    } catch (err) {
      io.err(`pgwarden revoke: --${one.flag}: ${(err as Error).message}\n`);
      return 1;
    }
    // What `echo value > file` adds; anything else in the file is part of the value.
    if (id.endsWith('\r\n')) id = id.slice(0, -2);
    else if (id.endsWith('\n')) id = id.slice(0, -1);
  }
  if (id.length === 0) {
    io.err(`pgwarden revoke: --${key} must not be empty\n`);
    return 2;
  }
  let expiresAt: string | undefined;
  if (values.expires !== undefined) {
    const parsed = parseExpires(values.expires, io.now());
    if (parsed === undefined) {
      io.err(
        `pgwarden revoke: --expires: not a duration ("1h", "30m") or an ISO 8601 time in the future ("${values.expires}")\n`,
      );
      return 2;
    }
    expiresAt = parsed;
  }

  const loaded = loadConfigFn(values.config);
  if (!loaded.ok) {
    io.err(`pgwarden revoke: invalid configuration ${values.config}:\n${formatConfigIssues(loaded.issues)}\n`);
    return 1;
  }
  const file = loaded.config.revocation?.file;
  if (file === undefined) {
    const table = loaded.config.revocation?.table;
    io.err(
      table
        ? `pgwarden revoke: revocation.file is not set; this config uses the table ${table.schema}.${table.name}: INSERT INTO it instead (see docs/revocation.md)\n`
        : 'pgwarden revoke: revocation.file is not set in the configuration\n',
    );
    return 1;
  }

  const entry: RevocationEntry = { [key]: id };
  if (values.reason !== undefined) entry.reason = values.reason;
  if (expiresAt !== undefined) entry.expiresAt = expiresAt;
  try {
    const written = await revoke(file, entry);
    const shown = id.length > 80 ? `${JSON.stringify(id.slice(0, 80))}… (${id.length} characters)` : JSON.stringify(id);
    io.out(`revoked ${key} ${shown} in ${file}${written.expiresAt ? ` until ${written.expiresAt}` : ''}\n`);
    return 0;
  } catch (err) {
    io.err(`pgwarden revoke: ${(err as Error).message}\n`);
    return 1;
  }
}

/** "1h" (from now) or an absolute ISO 8601 time; undefined when neither, or not in the future. */
export function parseExpires(text: string, now: number): string | undefined {
  const ms = /^\d+(\.\d+)?(ms|s|m|h|d)?$/.test(text) ? parseDuration(text) : undefined;
  if (ms !== undefined) return ms > 0 ? new Date(now + ms).toISOString() : undefined;
  const at = Date.parse(text);
  if (!Number.isFinite(at) || at <= now) return undefined;
  return new Date(at).toISOString();
}
