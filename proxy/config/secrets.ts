// Secrets re-read while running (upstream password, TLS pair): a watched, settled, validated read that replaces the value in use only when it is good.
import tls from 'node:tls';
import { Coalescer } from '../../lib/coalesce.ts';
import { errorMessage } from '../../lib/error-message.ts';
import { FileWatcher, readSettled } from '../../lib/watch.ts';
import { readKeyFile, readSecretFile, readTrustedFile, trimTrailingNewlines } from './key-files.ts';
import type { TlsServerConfig, UpstreamConfig } from './types.ts';

/** Quiet time after a change event, time two reads must agree for, and the longest wait for a file to settle. */
export const SECRET_DEBOUNCE_MS = 100;
export const SECRET_SETTLE_MS = 50;
export const SECRET_SETTLE_MAX_MS = 2_000;

export type SecretName = 'upstream_password' | 'verification_key' | 'tls' | 'signing_key';
export type SecretReloadResult = 'changed' | 'unchanged' | 'failed';
export type SecretLog = (level: 'info' | 'warn' | 'error', msg: string, fields?: object) => void;

export interface SecretWatchOptions {
  /** Watch the files (default true); SIGHUP reloads either way. */
  watch?: boolean;
  log: SecretLog;
  /** Every reload's outcome (the pgwarden_secret_reloads_total metric). */
  onReload?: (secret: SecretName, result: SecretReloadResult) => void;
}

/**
 * Reads a secret file once it has settled (lib/watch.ts readSettled) and then with the permission checks of
 * readSecretFile; the permission-checked bytes must be the settled ones, else the file is still changing and the
 * next change event reads it again. Messages never name the file's content.
 */
export async function readSettledSecret(
  file: string,
  checkPermissions: boolean | 'trusted',
): Promise<{ ok: true; data: Buffer; warning: string | undefined } | { ok: false; message: string }> {
  const settled = await readSettled(file, SECRET_SETTLE_MS, SECRET_SETTLE_MAX_MS);
  if (!settled.ok) return { ok: false, message: `the file ${settled.message}` };
  // 'trusted': not secret, but whoever writes it decides whom pgwarden trusts (the public verification key).
  const read =
    checkPermissions === true
      ? readSecretFile(file)
      : { ...(checkPermissions === 'trusted' ? readTrustedFile(file) : readKeyFile(file)), warning: undefined };
  if (!read.ok) return { ok: false, message: read.message };
  if (!read.data.equals(settled.data))
    return { ok: false, message: 'the file changed while it was read; the next change reads it again' };
  return { ok: true, data: read.data, warning: read.warning };
}

/**
 * One secret held in memory and re-read from its files on change and on reload(). A read that fails (missing,
 * unreadable, writable by others, empty, not parsing) never replaces the value in use: it is logged and counted.
 */
export abstract class WatchedSecret<T> {
  protected value: T;
  #watchers: FileWatcher[] = [];
  readonly #reloads = new Coalescer<SecretReloadResult>(() => this.#reload());

  protected constructor(
    initial: T,
    readonly name: SecretName,
    protected readonly files: string[],
    protected readonly opts: SecretWatchOptions,
  ) {
    this.value = initial;
  }

  protected startWatching(): void {
    if (this.opts.watch === false) return;
    for (const file of this.files) {
      this.#watchers.push(
        new FileWatcher(file, {
          debounceMs: SECRET_DEBOUNCE_MS,
          persistent: false,
          what: this.name,
          warn: (msg, fields) => this.opts.log('warn', msg, fields),
          onChange: () =>
            void this.reload().catch((err) =>
              this.opts.log('error', `${this.name} reload crashed`, { error: errorMessage(err) }),
            ),
        }),
      );
    }
  }

  /** Re-read the files (coalesced); the value in use changes only when the new one is good and different. */
  reload(): Promise<SecretReloadResult> {
    return this.#reloads.run();
  }

  async #reload(): Promise<SecretReloadResult> {
    let result: SecretReloadResult;
    try {
      const next = await this.read();
      if (!next.ok) {
        this.opts.log('warn', `${this.name} not reloaded, the one in use is kept: ${next.message}`, {
          secret: this.name,
        });
        result = 'failed';
      } else if (this.same(next.value)) {
        result = 'unchanged';
      } else {
        if (next.warning) this.opts.log('warn', `${this.name}: ${next.warning}`, { secret: this.name });
        this.replace(next.value);
        this.opts.log('info', `${this.name} reloaded: new sessions use the new one`, { secret: this.name });
        result = 'changed';
      }
    } catch (err) {
      this.opts.log('warn', `${this.name} not reloaded, the one in use is kept`, {
        secret: this.name,
        error: errorMessage(err),
      });
      result = 'failed';
    }
    this.opts.onReload?.(this.name, result);
    return result;
  }

  protected abstract read(): Promise<
    { ok: true; value: T; warning?: string | undefined } | { ok: false; message: string }
  >;
  protected abstract same(next: T): boolean;
  protected replace(next: T): void {
    this.value = next;
  }

  close(): void {
    for (const w of this.#watchers) w.close();
    this.#watchers = [];
  }
}

/**
 * The upstream password. With upstream.passwordFile it follows the file; with passwordEnv (or trust auth) it is
 * fixed for the process's life (a running process's environment cannot be changed from outside).
 *
 * PostgreSQL holds one password per role, so a rotation has a moment where pgwarden's file and the server disagree.
 * The previous password is therefore kept until the server has accepted the new one, and a login refused with
 * 28P01 is retried once with the other (see alternative()): with the runbook's order (write the file, then ALTER
 * ROLE; docs/rotation.md) no login fails.
 */
export class UpstreamPassword extends WatchedSecret<string | undefined> {
  #previous: string | undefined;
  /** The password the server last accepted, when it is still current or previous: tried first. */
  #accepted: string | undefined;

  private constructor(upstream: UpstreamConfig, opts: SecretWatchOptions) {
    super(
      upstream.password,
      'upstream_password',
      upstream.passwordFile === undefined ? [] : [upstream.passwordFile],
      opts,
    );
  }

  static open(upstream: UpstreamConfig, opts: SecretWatchOptions): UpstreamPassword {
    const p = new UpstreamPassword(upstream, opts);
    p.startWatching();
    return p;
  }

  /** The newest good password read: what connections without a retry (the revocation listener) log in with. */
  get newest(): string | undefined {
    return this.value;
  }

  /** The password to try first: the one the server last accepted while it is still the newest or the previous one. */
  get current(): string | undefined {
    if (this.#accepted !== undefined && (this.#accepted === this.value || this.#accepted === this.#previous))
      return this.#accepted;
    return this.value;
  }

  protected async read(): Promise<{ ok: true; value: string | undefined } | { ok: false; message: string }> {
    const file = this.files[0];
    if (file === undefined) return { ok: true, value: this.value };
    const read = await readSettledSecret(file, true);
    if (!read.ok) return read;
    const password = Buffer.from(trimTrailingNewlines(read.data)).toString('utf8');
    if (password.length === 0) return { ok: false, message: 'the file it names is empty' };
    return { ok: true, value: password };
  }

  protected same(next: string | undefined): boolean {
    return next === this.value;
  }

  protected override replace(next: string | undefined): void {
    this.#previous = this.value;
    super.replace(next);
  }

  /** The server accepted `password`: once that is the newest one, the previous is forgotten. */
  accepted(password: string | undefined): void {
    this.#accepted = password;
    if (password === this.value) this.#previous = undefined;
  }

  /**
   * Runs `attempt` with the current password; when it fails the way `refused` recognises (28P01), once more with
   * alternative(). The password that worked is remembered (accepted()).
   */
  async withRetry<T>(
    attempt: (password: string | undefined) => Promise<T>,
    refused: (err: unknown) => boolean,
    onRetry?: () => void,
  ): Promise<T> {
    const used = this.current;
    try {
      const result = await attempt(used);
      this.accepted(used);
      return result;
    } catch (err) {
      if (!refused(err)) throw err;
      const other = await this.alternative(used);
      if (other === undefined) throw err;
      onRetry?.();
      const result = await attempt(other);
      this.accepted(other);
      return result;
    }
  }

  /**
   * The server refused `used` (28P01): re-read the file at once (a change event may still be settling), then offer
   * the newest password if it differs from `used`, else the previous one; undefined when there is nothing else to try.
   */
  async alternative(used: string | undefined): Promise<string | undefined> {
    if (this.files.length > 0) await this.reload();
    if (this.#accepted === used) this.#accepted = undefined;
    if (this.value !== undefined && this.value !== used) return this.value;
    if (this.#previous !== undefined && this.#previous !== used) return this.#previous;
    return undefined;
  }
}

/**
 * `upstream` with its password read from `password` on every access (the newest good one), so each new connection
 * logs in with it; sessions, analysis and catalog reads go through UpstreamPassword.withRetry instead, which also
 * covers the moment the server still has the previous one. Spreading it copies the value of the moment: spread it
 * through livePassword again.
 */
export function livePassword<U extends UpstreamConfig>(
  upstream: U,
  password: { readonly newest: string | undefined },
): U {
  const copy = { ...upstream };
  Object.defineProperty(copy, 'password', { get: () => password.newest, enumerable: true, configurable: false });
  return copy;
}

/**
 * The TLS pair clients handshake with. New handshakes use the newest good pair; a certificate and key written
 * one after the other do not match in between, which createSecureContext refuses, so the old pair stays until both
 * are written (a Kubernetes Secret swaps both at once).
 */
export class TlsPair extends WatchedSecret<{ context: tls.SecureContext; cert: Buffer; key: Buffer }> {
  private constructor(
    initial: { context: tls.SecureContext; cert: Buffer; key: Buffer },
    files: TlsServerConfig,
    opts: SecretWatchOptions,
  ) {
    super(initial, 'tls', [files.certFile, files.keyFile], opts);
  }

  /** Reads the pair now (throws when it is unusable: pgwarden does not start without it) and watches both files. */
  static open(files: TlsServerConfig, opts: SecretWatchOptions): TlsPair {
    const certRead = readKeyFile(files.certFile);
    if (!certRead.ok) throw new Error(`listen.tls.certFile: ${certRead.message}`);
    const keyRead = readSecretFile(files.keyFile);
    if (!keyRead.ok) throw new Error(`listen.tls.keyFile: ${keyRead.message}`);
    const context = tls.createSecureContext({ cert: certRead.data, key: keyRead.data });
    const pair = new TlsPair({ context, cert: certRead.data, key: keyRead.data }, files, opts);
    pair.startWatching();
    return pair;
  }

  get context(): tls.SecureContext {
    return this.value.context;
  }

  protected async read(): Promise<
    | { ok: true; value: { context: tls.SecureContext; cert: Buffer; key: Buffer }; warning?: string }
    | { ok: false; message: string }
  > {
    const [certFile, keyFile] = this.files as [string, string];
    const cert = await readSettledSecret(certFile, false);
    if (!cert.ok) return { ok: false, message: `listen.tls.certFile: ${cert.message}` };
    const key = await readSettledSecret(keyFile, true);
    if (!key.ok) return { ok: false, message: `listen.tls.keyFile: ${key.message}` };
    try {
      const context = tls.createSecureContext({ cert: cert.data, key: key.data });
      return { ok: true, value: { context, cert: cert.data, key: key.data }, warning: key.warning };
    } catch (err) {
      // OpenSSL's reason ("key values mismatch", "no start line") names no secret bytes.
      return { ok: false, message: `the certificate and key do not form a usable pair (${errorMessage(err)})` };
    }
  }

  protected same(next: { cert: Buffer; key: Buffer }): boolean {
    return next.cert.equals(this.value.cert) && next.key.equals(this.value.key);
  }
}
