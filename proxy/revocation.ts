// The file revocation list: entries by jti, sub or agent in a YAML/JSON file, hot-reloaded, matched at login and against live sessions; plus atomic append for `pgwarden revoke`.
//
// Fail-closed choices: an invalid file, or a file that disappears at runtime, keeps the last good list (a typo must
// never un-revoke anybody); an invalid file at startup refuses to start, and so does a missing one unless the
// operator chose `ifMissing: 'empty'` (a volume that did not mount, or a deploy that lost the file, must not
// un-revoke everybody at the next restart). An entry is never skipped for what it holds: an identifier of any
// length (a token's claims can be up to 64 KiB) is matched exactly; an empty or over-long reason only changes what
// the refused client is told.
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Document, isSeq, parseDocument, YAMLSeq } from 'yaml';
import type { Identity } from './auth/jwt.ts';
import { ProxyError } from './errors.ts';
import { FileWatcher } from '../policy/watch.ts';

export interface RevocationEntry {
  /** Exactly one of jti, sub, agent. */
  jti?: string;
  sub?: string;
  agent?: string;
  /** Shown to the client in the refusal ("token has been revoked: <reason>") and written to the audit trail. */
  reason?: string;
  /** ISO 8601; the entry is ignored from then on. */
  expiresAt?: string;
}

export type RevocationLogLevel = 'info' | 'warn' | 'error';
export type RevocationLog = (level: RevocationLogLevel, msg: string, fields?: object) => void;

export interface RevocationChange {
  source: 'file' | 'table';
  /** Entries in force after the change (expired ones included until they are removed from the source). */
  entries: number;
  added: RevocationEntry[];
  removed: RevocationEntry[];
}

export type RevocationListener = (change: RevocationChange) => void;

/** What the proxy needs from any revocation source (file, table, or several combined). */
export interface RevocationSource {
  match(id: Identity, now?: number): { reason: string } | undefined;
  onChange(listener: RevocationListener): () => void;
  close(): void | Promise<void>;
}

/** Thrown by RevocationList.open when the file exists but is invalid; carries every issue. */
export class RevocationFileError extends Error {
  readonly issues: string[];
  constructor(file: string, issues: string[]) {
    super(`revocation file ${file} is invalid:\n${issues.map((i) => `  ${i}`).join('\n')}`);
    this.name = 'RevocationFileError';
    this.issues = issues;
  }
}

const KEYS = ['jti', 'sub', 'agent'] as const;
const ALLOWED_FIELDS = new Set(['jti', 'sub', 'agent', 'reason', 'expiresAt']);
/** Longest reason shown to a refused client and written to the log; a longer one is cut (the entry still revokes). */
export const MAX_REASON = 1024;

/** Validates one entry; returns the entry in canonical form or the problems with it. */
export function validateEntry(raw: unknown, where = 'entry'): { ok: true; entry: RevocationEntry } | { ok: false; issues: string[] } {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return { ok: false, issues: [`${where}: must be a mapping with one of jti, sub, agent`] };
  const issues: string[] = [];
  const obj = raw as Record<string, unknown>;
  for (const k of Object.keys(obj)) if (!ALLOWED_FIELDS.has(k)) issues.push(`${where}.${k}: unknown field (allowed: jti, sub, agent, reason, expiresAt)`);
  const keys = KEYS.filter((k) => obj[k] !== undefined && obj[k] !== null);
  if (keys.length !== 1) issues.push(`${where}: must have exactly one of jti, sub, agent (has ${keys.length === 0 ? 'none' : keys.join(', ')})`);
  const entry: RevocationEntry = {};
  for (const k of KEYS) {
    const v = obj[k];
    if (v === undefined || v === null) continue;
    // Any length: whatever a token can carry can be revoked. Not a number: YAML reads `jti: 0x1F` as 31, and a
    // revocation of a different value than the operator wrote would never match; quoting it says what is meant.
    if (typeof v !== 'string' || v.length === 0) issues.push(`${where}.${k}: must be a non-empty string (quote it in YAML)`);
    else entry[k] = v;
  }
  const reason = reasonText(obj['reason']);
  if (reason !== undefined) entry.reason = reason;
  const exp = obj['expiresAt'];
  if (exp !== undefined && exp !== null) {
    // YAML reads an unquoted timestamp as a Date; accept both forms.
    const ms = exp instanceof Date ? exp.getTime() : typeof exp === 'string' ? Date.parse(exp) : Number.NaN;
    if (!Number.isFinite(ms)) issues.push(`${where}.expiresAt: must be an ISO 8601 date-time (got ${JSON.stringify(exp)})`);
    else entry.expiresAt = new Date(ms).toISOString();
  }
  return issues.length > 0 ? { ok: false, issues } : { ok: true, entry };
}

/**
 * The reason as shown to a refused client: absent or empty means none (the default "jti revoked" is shown), a
 * non-string is written as text, and anything over MAX_REASON characters is cut. Never a reason to ignore an entry.
 */
export function reasonText(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  const text = typeof v === 'string' ? v : v instanceof Date ? v.toISOString() : JSON.stringify(v) ?? String(v);
  if (text.trim().length === 0) return undefined;
  return text.length > MAX_REASON ? `${text.slice(0, MAX_REASON - 1)}…` : text;
}

/** Parses a revocation file's text: `revoked: [ … ]` or a bare list; JSON is YAML too. */
export function parseRevocationText(text: string): { ok: true; entries: RevocationEntry[] } | { ok: false; issues: string[] } {
  const doc = parseDocument(text, { uniqueKeys: true });
  if (doc.errors.length > 0) return { ok: false, issues: doc.errors.map((e) => `syntax error: ${e.message.split('\n')[0] ?? e.message}`) };
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    return { ok: false, issues: [`cannot be read: ${(err as Error).message}`] };
  }
  if (raw === null || raw === undefined) return { ok: true, entries: [] };
  let list: unknown;
  if (Array.isArray(raw)) list = raw;
  else if (typeof raw === 'object') {
    const extra = Object.keys(raw).filter((k) => k !== 'revoked');
    if (extra.length > 0) return { ok: false, issues: extra.map((k) => `${k}: unknown key (the file holds "revoked: [ … ]")`) };
    list = (raw as Record<string, unknown>)['revoked'] ?? [];
  } else return { ok: false, issues: ['must be a list of entries or a mapping with "revoked"'] };
  if (!Array.isArray(list)) return { ok: false, issues: ['revoked: must be a list of entries'] };
  const entries: RevocationEntry[] = [];
  const issues: string[] = [];
  list.forEach((item, i) => {
    const r = validateEntry(item, `revoked[${i}]`);
    if (r.ok) entries.push(r.entry);
    else issues.push(...r.issues);
  });
  return issues.length > 0 ? { ok: false, issues } : { ok: true, entries };
}

/** An immutable index over entries; shared by the file and table sources. */
export class RevocationIndex {
  readonly entries: readonly RevocationEntry[];
  private readonly byKey: Record<(typeof KEYS)[number], Map<string, RevocationEntry[]>> = { jti: new Map(), sub: new Map(), agent: new Map() };

  constructor(entries: readonly RevocationEntry[]) {
    this.entries = Object.freeze(entries.map((e) => Object.freeze({ ...e })));
    for (const e of this.entries) {
      for (const k of KEYS) {
        const v = e[k];
        if (v === undefined) continue;
        const list = this.byKey[k].get(v);
        if (list) list.push(e);
        else this.byKey[k].set(v, [e]);
      }
    }
  }

  match(id: Pick<Identity, 'jti' | 'sub' | 'agent'>, now = Date.now()): { reason: string } | undefined {
    for (const k of KEYS) {
      const v = id[k];
      if (v === undefined) continue;
      for (const e of this.byKey[k].get(v) ?? []) {
        if (e.expiresAt !== undefined && Date.parse(e.expiresAt) <= now) continue;
        return { reason: e.reason ?? `${k} revoked` };
      }
    }
    return undefined;
  }

  /** Entries in `next` and not here (added) and the reverse (removed), compared by content. */
  diff(next: RevocationIndex): { added: RevocationEntry[]; removed: RevocationEntry[] } {
    const mine = new Set(this.entries.map(entryKey));
    const theirs = new Set(next.entries.map(entryKey));
    return { added: next.entries.filter((e) => !mine.has(entryKey(e))), removed: this.entries.filter((e) => !theirs.has(entryKey(e))) };
  }
}

function entryKey(e: RevocationEntry): string {
  return JSON.stringify([e.jti ?? null, e.sub ?? null, e.agent ?? null, e.reason ?? null, e.expiresAt ?? null]);
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export interface RevocationListOptions {
  file: string;
  /** Watch the file and its directory (editors and `revoke` replace by rename). Default true. */
  watch?: boolean;
  log?: RevocationLog;
  /** Quiet time after the last file event before re-reading. Default 100 ms. */
  debounceMs?: number;
  /**
   * A file that does not exist at startup: 'refuse' throws RevocationFileError, since a file that vanished (unmounted
   * volume, lost in a deploy) would otherwise silently un-revoke everybody; 'empty' (the default here) starts with no
   * entries. The configuration's default, revocation.fileMissing, is 'refuse'.
   */
  ifMissing?: 'refuse' | 'empty';
}

export type RevocationReloadResult = { ok: true; changed: boolean; entries: number } | { ok: false; issues: string[] };

export class RevocationList implements RevocationSource {
  readonly file: string;
  #index: RevocationIndex;
  #log: RevocationLog;
  #opts: RevocationListOptions;
  #listeners = new Set<RevocationListener>();
  #closed = false;
  #watcher: FileWatcher | undefined;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(opts: RevocationListOptions, index: RevocationIndex) {
    this.file = path.resolve(opts.file);
    this.#opts = opts;
    this.#log = opts.log ?? (() => {});
    this.#index = index;
  }

  /** Reads the file; throws RevocationFileError when it is invalid, or missing (unless `ifMissing: 'empty'`). */
  static async open(opts: RevocationListOptions): Promise<RevocationList> {
    const file = path.resolve(opts.file);
    const read = await readRevocationFile(file);
    if (read.kind === 'invalid') throw new RevocationFileError(file, read.issues);
    if (read.kind === 'missing' && opts.ifMissing === 'refuse') {
      throw new RevocationFileError(file, [
        'does not exist: pgwarden will not start without its revocation list, since a lost file would un-revoke everybody; ' +
          'create it with "revoked: []" (or run pgwarden revoke), or set revocation.fileMissing: empty',
      ]);
    }
    const list = new RevocationList(opts, new RevocationIndex(read.kind === 'ok' ? read.entries : []));
    if (read.kind === 'missing') list.#log('warn', 'revocation file does not exist yet; no entries in force (revocation.fileMissing: empty)', { file });
    else list.#log('info', 'revocation list loaded', { file, entries: read.entries.length });
    if (opts.watch ?? true) {
      list.#watcher = new FileWatcher(list.file, {
        debounceMs: opts.debounceMs ?? 100,
        persistent: false,
        what: 'revocation',
        warn: (msg, fields) => list.#log('warn', msg, fields),
        onChange: () => list.reload().catch((err) => list.#log('error', 'revocation reload crashed', { error: errorMessage(err) })),
      });
    }
    return list;
  }

  get entries(): readonly RevocationEntry[] {
    return this.#index.entries;
  }

  match(id: Identity, now = Date.now()): { reason: string } | undefined {
    return this.#index.match(id, now);
  }

  onChange(listener: RevocationListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Re-reads the file (SIGHUP, or after a file event); an invalid or vanished file keeps the current list. */
  reload(): Promise<RevocationReloadResult> {
    const job = () => this.#reload();
    const run = this.#queue.then(job, job);
    this.#queue = run.catch(() => {});
    return run;
  }

  close(): void {
    this.#closed = true;
    this.#watcher?.close();
    this.#watcher = undefined;
    this.#listeners.clear();
  }

  async #reload(): Promise<RevocationReloadResult> {
    if (this.#closed) return { ok: true, changed: false, entries: this.#index.entries.length };
    const read = await readRevocationFile(this.file);
    if (read.kind === 'missing') {
      this.#log('error', 'revocation file is missing; keeping the current list (write an empty list to clear it)', { file: this.file });
      return { ok: false, issues: ['file is missing'] };
    }
    if (read.kind === 'invalid') {
      this.#log('error', 'revocation file is invalid; keeping the current list', { file: this.file, issues: read.issues });
      return { ok: false, issues: read.issues };
    }
    const next = new RevocationIndex(read.entries);
    const { added, removed } = this.#index.diff(next);
    if (added.length === 0 && removed.length === 0) return { ok: true, changed: false, entries: next.entries.length };
    this.#index = next;
    this.#log('info', 'revocation list reloaded', { file: this.file, entries: next.entries.length, added: added.length, removed: removed.length });
    const change: RevocationChange = { source: 'file', entries: next.entries.length, added, removed };
    for (const l of [...this.#listeners]) {
      try {
        l(change);
      } catch (err) {
        this.#log('error', 'revocation change listener failed', { error: errorMessage(err) });
      }
    }
    return { ok: true, changed: true, entries: next.entries.length };
  }
}

type FileRead = { kind: 'ok'; entries: RevocationEntry[] } | { kind: 'missing' } | { kind: 'invalid'; issues: string[] };

async function readRevocationFile(file: string): Promise<FileRead> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'missing' };
    return { kind: 'invalid', issues: [`cannot be read: ${errorMessage(err)}`] };
  }
  const parsed = parseRevocationText(text);
  return parsed.ok ? { kind: 'ok', entries: parsed.entries } : { kind: 'invalid', issues: parsed.issues };
}

// ---------------------------------------------------------------------------------------------
// Appending (the `pgwarden revoke` command)

const FILE_HEADER = '# pgwarden revocation list: one entry per revoked jti, sub or agent; hot-reloaded by pgwarden.\n';
const LOCK_STALE_MS = 30_000;
const LOCK_WAIT_MS = 10_000;

/**
 * Appends `entry` to the file atomically: a lock file serializes concurrent `revoke` runs (no lost update), the new
 * content goes to a temp file in the same directory, is fsynced, then renamed over the original, so a reader (the
 * watcher) sees the old list or the new one, never a torn write. YAML comments and layout are kept; a `.json` file
 * stays JSON. Refuses to touch a file that is currently invalid (it would otherwise be overwritten).
 */
export async function revoke(file: string, entry: RevocationEntry): Promise<RevocationEntry> {
  const checked = validateEntry(entry);
  if (!checked.ok) throw new Error(`invalid revocation entry: ${checked.issues.join('; ')}`);
  const target = path.resolve(file);
  const release = await acquireLock(target);
  try {
    let text: string | undefined;
    let mode = 0o644;
    try {
      text = readFileSync(target, 'utf8');
      mode = statSync(target).mode & 0o777;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const isJson = target.toLowerCase().endsWith('.json');
    let next: string;
    if (text === undefined || text.trim() === '') {
      next = isJson ? JSON.stringify({ revoked: [checked.entry] }, null, 2) + '\n' : FILE_HEADER + new Document({ revoked: [checked.entry] }).toString();
    } else {
      const parsed = parseRevocationText(text);
      if (!parsed.ok) throw new RevocationFileError(target, parsed.issues);
      if (isJson) {
        next = JSON.stringify({ revoked: [...parsed.entries, checked.entry] }, null, 2) + '\n';
      } else {
        next = appendYaml(text, checked.entry);
      }
    }
    // The result must read back as the old entries plus this one; anything else is a bug, and the file stays as it was.
    const verify = parseRevocationText(next);
    if (!verify.ok) throw new Error(`internal error: the new revocation file would be invalid: ${verify.issues.join('; ')}`);
    writeAtomic(target, next, mode);
    return checked.entry;
  } finally {
    release();
  }
}

function appendYaml(text: string, entry: RevocationEntry): string {
  const doc = parseDocument(text);
  const contents = doc.contents;
  if (contents === null || (doc.toJS() ?? null) === null) {
    doc.contents = doc.createNode({ revoked: [entry] }) as typeof doc.contents;
  } else if (isSeq(contents)) {
    (contents as YAMLSeq).add(doc.createNode(entry));
  } else {
    const list = doc.get('revoked', true);
    if (isSeq(list)) (list as YAMLSeq).add(doc.createNode(entry));
    else {
      const seq = new YAMLSeq();
      seq.add(doc.createNode(entry));
      doc.set('revoked', seq);
    }
  }
  return doc.toString();
}

function writeAtomic(target: string, text: string, mode: number): void {
  const tmp = path.join(path.dirname(target), `.${path.basename(target)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fd = openSync(tmp, 'wx', mode);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      // Best effort: the temp name is unique and hidden.
    }
    throw err;
  }
  closeSync(fd);
  renameSync(tmp, target);
  // Persist the rename itself (directory entry) where the platform allows it.
  try {
    const dfd = openSync(path.dirname(target), 'r');
    try {
      fsyncSync(dfd);
    } finally {
      closeSync(dfd);
    }
  } catch {
    // Not supported on every platform; the data file itself is synced.
  }
}

async function acquireLock(target: string): Promise<() => void> {
  const lock = `${target}.lock`;
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      const fd = openSync(lock, 'wx', 0o600);
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return () => {
        try {
          unlinkSync(lock);
        } catch {
          // Already gone (removed as stale by someone else); nothing to release.
        }
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      try {
        // A crashed revoke leaves its lock behind; one older than any real append is taken over.
        if (Date.now() - statSync(lock).mtimeMs > LOCK_STALE_MS) unlinkSync(lock);
      } catch {
        // Raced with its owner removing it: just retry.
      }
      if (Date.now() > deadline) throw new Error(`revocation file ${target} is locked by another process (${lock}); try again`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers for the lead: combining sources and ending revoked sessions

/** One source over several (file + table): revoked if any says so; a change in any is a change. */
export function combineRevocations(...sources: RevocationSource[]): RevocationSource {
  return {
    match(id, now = Date.now()) {
      for (const s of sources) {
        const m = s.match(id, now);
        if (m) return m;
      }
      return undefined;
    },
    onChange(listener) {
      const offs = sources.map((s) => s.onChange(listener));
      return () => offs.forEach((off) => off());
    },
    async close() {
      await Promise.all(sources.map((s) => s.close()));
    },
  };
}

/** The FATAL sent to a live session whose token was revoked (57P01, like expiry). */
export function revokedSessionError(reason: string): ProxyError {
  return new ProxyError('ERR_SHUTDOWN', `terminating connection because its credential was revoked: ${reason}`, {
    hint: 'request a new token from your token issuer; this identity may not be allowed to reconnect',
  });
}
