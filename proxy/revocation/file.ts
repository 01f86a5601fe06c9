// The file revocation list: entries by jti, sub or agent in a YAML/JSON or JSON Lines file, hot-reloaded without stalling the event loop, matched at login and against live sessions; plus atomic append for `pgwarden revoke`.
//
// Fail-closed choices: an invalid file, or a file that disappears at runtime, keeps the last good list (a typo must
// never un-revoke anybody); an invalid file at startup refuses to start, and so does a missing one unless the
// operator chose `ifMissing: 'empty'` (a volume that did not mount, or a deploy that lost the file, must not
// un-revoke everybody at the next restart). An entry is never skipped for what it holds: an identifier of any
// length (a token's claims can be up to 64 KiB) is matched exactly; an empty or over-long reason only changes what
// the refused client is told. Only a file complete when read is applied: a rewrite (anything but an append to a
// JSON Lines file) waits until two reads agree (readSettled), since a half-written file that still parses would
// lift what comes after the cut; meanwhile what its reads add is matched at once, and removals wait. An append is
// taken at once, whole lines only.
//
// Scale: a JSON Lines file (`.jsonl`, one entry per line) is read in chunks that yield to the event loop, and a file
// that only grew (same inode, same bytes up to where the last read stopped) is read from there on: appending one
// revocation to a million-line file costs the new line plus hashing the old bytes. A YAML/JSON file is parsed in a
// worker thread (the yaml library needs seconds and a lot of memory for 100k entries, none of it on the loop) and
// its entries are then indexed in chunks. The old index answers until the new one is complete.
import { createHash, randomBytes, type Hash } from 'node:crypto';
import {
  closeSync,
  fsyncSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { Document, isSeq, parseDocument, YAMLSeq } from 'yaml';
import type { Identity } from '../auth/jwt.ts';
import {
  emptyChangeList,
  noteChange,
  RevocationIndex,
  yieldToLoop,
  type ChangeList,
  type RevocationEntry,
  type RevocationKey,
} from './entry-index.ts';
import { Coalescer } from '../../lib/coalesce.ts';
import { FileWatcher, readSettled } from '../../lib/watch.ts';
import { errorMessage } from '../../lib/error-message.ts';
import {
  emitChange,
  reasonText,
  validateEntry,
  type RevocationHealth,
  type RevocationListener,
  type RevocationLog,
  type RevocationReadInfo,
  type RevocationSource,
} from './source.ts';

export { RevocationIndex, MAX_LISTED_CHANGES, type RevocationEntry } from './entry-index.ts';

/** Thrown by RevocationList.open when the file exists but is invalid; carries every issue. */
export class RevocationFileError extends Error {
  readonly issues: string[];
  constructor(file: string, issues: string[]) {
    super(`revocation file ${file} is invalid:\n${issues.map((i) => `  ${i}`).join('\n')}`);
    this.name = 'RevocationFileError';
    this.issues = issues;
  }
}

/** Issues listed for an invalid file (the count of the rest is given). */
const MAX_ISSUES = 20;

/** A YAML/JSON file's parsed top level, reduced to what decides its validity (also what the parse worker reports). */
interface TopLevel {
  top: 'empty' | 'list' | 'mapping' | 'other';
  /** Keys of a top-level mapping other than `revoked`. */
  extraKeys: string[];
  /** The mapping's `revoked` is a list (or absent/null: no entries). */
  revokedIsList: boolean;
}

function topLevelOf(raw: unknown): { shape: TopLevel; list: unknown[] } {
  if (raw === null || raw === undefined)
    return { shape: { top: 'empty', extraKeys: [], revokedIsList: true }, list: [] };
  if (Array.isArray(raw)) return { shape: { top: 'list', extraKeys: [], revokedIsList: true }, list: raw };
  if (typeof raw !== 'object') return { shape: { top: 'other', extraKeys: [], revokedIsList: false }, list: [] };
  const obj = raw as Record<string, unknown>;
  const revoked = obj['revoked'] ?? [];
  return {
    shape: {
      top: 'mapping',
      extraKeys: Object.keys(obj).filter((k) => k !== 'revoked'),
      revokedIsList: Array.isArray(revoked),
    },
    list: Array.isArray(revoked) ? revoked : [],
  };
}

function topLevelIssues(shape: TopLevel): string[] {
  if (shape.top === 'other') return ['must be a list of entries or a mapping with "revoked"'];
  if (shape.extraKeys.length > 0)
    return shape.extraKeys.map((k) => `${k}: unknown key (the file holds "revoked: [ … ]")`);
  if (!shape.revokedIsList) return ['revoked: must be a list of entries'];
  return [];
}

/** Parses a revocation file's text: `revoked: [ … ]` or a bare list; JSON is YAML too. Synchronous: for small files. */
export function parseRevocationText(
  text: string,
): { ok: true; entries: RevocationEntry[] } | { ok: false; issues: string[] } {
  const doc = parseDocument(text, { uniqueKeys: true });
  if (doc.errors.length > 0)
    return { ok: false, issues: doc.errors.map((e) => `syntax error: ${e.message.split('\n')[0] ?? e.message}`) };
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    return { ok: false, issues: [`cannot be read: ${(err as Error).message}`] };
  }
  const { shape, list } = topLevelOf(raw);
  const top = topLevelIssues(shape);
  if (top.length > 0) return { ok: false, issues: top };
  const entries: RevocationEntry[] = [];
  const issues: string[] = [];
  list.forEach((item, i) => {
    const r = validateEntry(item, `revoked[${i}]`);
    if (r.ok) entries.push(r.entry);
    else issues.push(...r.issues);
  });
  return issues.length > 0 ? { ok: false, issues } : { ok: true, entries };
}

/** Whether a file holds JSON Lines (one entry per line; appended to in place) rather than one YAML/JSON document. */
function isJsonLines(file: string): boolean {
  return /\.(jsonl|ndjson)$/i.test(file);
}

/** Parses JSON Lines text (blank lines and lines starting with # are skipped). Synchronous: for small texts and tests. */
export function parseRevocationLines(
  text: string,
): { ok: true; entries: RevocationEntry[] } | { ok: false; issues: string[] } {
  const entries: RevocationEntry[] = [];
  const issues: string[] = [];
  text.split('\n').forEach((line, i) => {
    const r = parseLine(line, `line ${i + 1}`);
    if (r === undefined || r === 'added') return;
    if (r.ok) entries.push(r.entry);
    else issues.push(...r.issues);
  });
  return issues.length > 0 ? { ok: false, issues } : { ok: true, entries };
}

function parseLine(
  line: string,
  where: string,
  into?: RevocationIndex,
): ReturnType<typeof validateEntry> | 'added' | undefined {
  const text = line.endsWith('\r') ? line.slice(0, -1) : line;
  const trimmed = text.trimStart();
  if (trimmed === '' || trimmed.startsWith('#')) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return { ok: false, issues: [`${where}: not JSON (${(err as Error).message})`] };
  }
  if (into !== undefined && addPlainEntry(into, raw)) return 'added';
  return validateEntry(raw, where);
}

/**
 * The common entry straight into an index, by validateEntry's rules without building the canonical entry (a third of
 * the cost of reading a million lines). False for anything else, which then takes validateEntry's path.
 */
function addPlainEntry(index: RevocationIndex, raw: unknown): boolean {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return false;
  const obj = raw as Record<string, unknown>;
  let kind: RevocationKey | undefined;
  let value = '';
  let expires = Number.POSITIVE_INFINITY;
  for (const k of Object.keys(obj)) {
    const v = obj[k];
    if (k === 'jti' || k === 'sub' || k === 'agent') {
      if (v === null || v === undefined) continue;
      if (kind !== undefined || typeof v !== 'string' || v.length === 0) return false;
      kind = k;
      value = v;
    } else if (k === 'expiresAt') {
      if (v === null || v === undefined) continue;
      if (typeof v !== 'string') return false;
      expires = Date.parse(v);
      if (!Number.isFinite(expires)) return false;
    } else if (k !== 'reason') return false;
  }
  if (kind === undefined) return false;
  index.addKey(kind, value, expires, reasonText(obj['reason']));
  return true;
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
  /** Called after every read (metrics). */
  onRead?: (info: RevocationReadInfo) => void;
  /**
   * A rewritten file (anything but a pure append to a JSON Lines file) is applied once two reads this far apart agree,
   * so a file rewritten in place is never applied half-written. Default 500 ms, like the policy file.
   */
  settleMs?: number;
  /** A rewritten file that has not settled after this long is not applied: the current list stays. Default 10 s. */
  settleMaxMs?: number;
}

export type RevocationReloadResult = { ok: true; changed: boolean; entries: number } | { ok: false; issues: string[] };

/** Where the last successful read of a JSON Lines file stopped, so a file that only grew is read from there. */
interface LinesMark {
  dev: number;
  ino: number;
  /** Bytes read: through the last newline. */
  offset: number;
  /** Lines in those bytes (for line numbers in issues). */
  lines: number;
  /** sha256 of those bytes: the prefix must be unchanged for an appended read. */
  digest: string;
}

export class RevocationList implements RevocationSource {
  readonly file: string;
  #index: RevocationIndex;
  #mark: LinesMark | undefined;
  #log: RevocationLog;
  #opts: RevocationListOptions;
  #listeners = new Set<RevocationListener>();
  #closed = false;
  #watcher: FileWatcher | undefined;
  /** A burst of reload requests is one read in flight plus at most one pending. */
  readonly #reloads = new Coalescer<RevocationReloadResult>(() => this.#reload());
  #up = true;
  #downSince: number | undefined;
  #lastReadAt: number | undefined;
  /**
   * What reads of a rewrite not yet settled revoke, matched beside the list in force (a login is refused at once).
   * Listeners hear of it with the settled change, so they still get one change per reload.
   */
  #early: RevocationIndex | undefined;

  private constructor(opts: RevocationListOptions, index: RevocationIndex, mark: LinesMark | undefined) {
    this.file = path.resolve(opts.file);
    this.#opts = opts;
    this.#log = opts.log ?? (() => {});
    this.#index = index;
    this.#mark = mark;
    this.#lastReadAt = Date.now();
  }

  /** Reads the file; throws RevocationFileError when it is invalid, or missing (unless `ifMissing: 'empty'`). */
  static async open(opts: RevocationListOptions): Promise<RevocationList> {
    const file = path.resolve(opts.file);
    const started = performance.now();
    // The first read settles too: a list taken half-written at startup would leave out whatever came after the cut.
    const read = await readRevocationFile(file, undefined, settleOf(opts));
    // A missing file is a failed read only when it stops pgwarden (ifMissing: 'refuse').
    const ok = read.kind === 'ok' || (read.kind === 'missing' && opts.ifMissing !== 'refuse');
    opts.onRead?.({ source: 'file', kind: 'full', ok, ms: performance.now() - started });
    if (read.kind === 'invalid') throw new RevocationFileError(file, read.issues);
    // No list to keep yet: starting with a list that may be incomplete would un-revoke whatever it lacks.
    if (read.kind === 'unsettled') throw new RevocationFileError(file, [read.message]);
    if (read.kind === 'missing' && opts.ifMissing === 'refuse') {
      throw new RevocationFileError(file, [
        'does not exist: pgwarden will not start without its revocation list, since a lost file would un-revoke everybody; ' +
          'create it with "revoked: []" (or run pgwarden revoke), or set revocation.fileMissing: empty',
      ]);
    }
    const list = new RevocationList(
      opts,
      read.kind === 'ok' ? read.index : new RevocationIndex(),
      read.kind === 'ok' ? read.mark : undefined,
    );
    if (read.kind === 'missing')
      list.#log('warn', 'revocation file does not exist yet; no entries in force (revocation.fileMissing: empty)', {
        file,
      });
    else list.#log('info', 'revocation list loaded', { file, entries: list.#index.size });
    if (opts.watch ?? true) {
      list.#watcher = new FileWatcher(list.file, {
        debounceMs: opts.debounceMs ?? 100,
        persistent: false,
        what: 'revocation',
        warn: (msg, fields) => list.#log('warn', msg, fields),
        onChange: () =>
          list.reload().catch((err) => list.#log('error', 'revocation reload crashed', { error: errorMessage(err) })),
      });
    }
    return list;
  }

  /** Every entry, one per identifier (built on demand; O(entries)). */
  get entries(): readonly RevocationEntry[] {
    return this.#index.entries;
  }

  /** Identifiers revoked now. */
  get size(): number {
    return this.#index.size;
  }

  match(id: Identity, now = Date.now()): { reason: string } | undefined {
    return this.#index.match(id, now) ?? this.#early?.match(id, now);
  }

  onChange(listener: RevocationListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  health(): RevocationHealth {
    return {
      source: 'file',
      up: this.#up,
      downSince: this.#downSince,
      entries: this.#index.size,
      lastReadAt: this.#lastReadAt,
    };
  }

  /**
   * Re-reads the file (SIGHUP, or after a file event); an invalid or vanished file keeps the current list. A burst
   * of calls is one read in flight plus at most one more, which every later caller shares.
   */
  reload(): Promise<RevocationReloadResult> {
    return this.#reloads.run();
  }

  close(): void {
    this.#closed = true;
    this.#watcher?.close();
    this.#watcher = undefined;
    this.#listeners.clear();
  }

  async #reload(): Promise<RevocationReloadResult> {
    if (this.#closed) return { ok: true, changed: false, entries: this.#index.size };
    const started = performance.now();
    // Additions from a read that may be incomplete are applied at once (a revocation applied early is always safe);
    // removals and shortened expiries wait until the file has settled.
    const read = await readRevocationFile(
      this.file,
      this.#mark,
      settleOf(this.#opts),
      async (early) => await this.#applyEarly(early),
    );
    // Closed while the file settled (shutdown, or a test's list): nothing to apply, report or log.
    if (this.#closed) return { ok: true, changed: false, entries: this.#index.size };
    this.#opts.onRead?.({
      source: 'file',
      kind: read.kind === 'appended' ? 'incremental' : 'full',
      ok: read.kind === 'ok' || read.kind === 'appended',
      ms: performance.now() - started,
    });
    if (read.kind === 'missing' || read.kind === 'invalid' || read.kind === 'unsettled') {
      this.#up = false;
      this.#downSince ??= Date.now();
      await this.#keepEarly();
      if (read.kind === 'missing') {
        this.#log('error', 'revocation file is missing; keeping the current list (write an empty list to clear it)', {
          file: this.file,
        });
        return { ok: false, issues: ['file is missing'] };
      }
      if (read.kind === 'unsettled') {
        this.#log('warn', 'revocation file did not settle; keeping the current list', {
          file: this.file,
          error: read.message,
        });
        return { ok: false, issues: [read.message] };
      }
      this.#log('error', 'revocation file is invalid; keeping the current list', {
        file: this.file,
        issues: read.issues,
      });
      return { ok: false, issues: read.issues };
    }
    this.#up = true;
    this.#downSince = undefined;
    this.#lastReadAt = Date.now();
    if (this.#closed) return { ok: true, changed: false, entries: this.#index.size };
    let added: ChangeList;
    let removed = emptyChangeList();
    if (read.kind === 'appended') {
      // Only new lines: applied to the index in force (nothing can have been removed from an append-only file).
      added = emptyChangeList();
      for (const e of read.entries) if (this.#index.add(e)) noteChange(added, e);
      this.#mark = read.mark;
    } else {
      ({ added, removed } = await this.#index.diff(read.index));
      this.#index = read.index;
      this.#mark = read.mark;
    }
    this.#early = undefined;
    const entries = this.#index.size;
    if (added.count === 0 && removed.count === 0) return { ok: true, changed: false, entries };
    this.#log('info', 'revocation list reloaded', {
      file: this.file,
      entries,
      added: added.count,
      removed: removed.count,
      appended: read.kind === 'appended',
    });
    emitChange(this.#listeners, this.#log, 'file', entries, added, removed);
    return { ok: true, changed: true, entries };
  }

  /**
   * A read of a rewrite not yet settled: what it revokes is matched at once, beside the list in force, which nothing
   * here shortens. Earlier reads of the same rewrite stay matched too (a later, shorter read lifts nothing): they are
   * merged into the first read's index, which by then is no longer the read readRevocationFile may return; `index`
   * itself is never written to, since it may become the list in force once the file settles.
   */
  async #applyEarly(index: RevocationIndex): Promise<void> {
    if (this.#closed) return;
    if (this.#early === undefined) this.#early = index;
    else await this.#early.merge(index);
  }

  /** A rewrite that was not applied (invalid, gone, never settled): what its reads revoked stays revoked. */
  async #keepEarly(): Promise<void> {
    const early = this.#early;
    if (early === undefined || this.#closed) return;
    const added = await this.#index.merge(early);
    this.#early = undefined;
    if (added.count === 0) return;
    const entries = this.#index.size;
    this.#log('warn', 'revocation file not applied; the revocations its partial reads added stay in force', {
      file: this.file,
      entries,
      added: added.count,
    });
    emitChange(this.#listeners, this.#log, 'file', entries, added, emptyChangeList());
  }
}

function settleOf(opts: RevocationListOptions): Settle {
  return { settleMs: opts.settleMs ?? 500, maxMs: opts.settleMaxMs ?? 10_000 };
}

type FileRead =
  | { kind: 'ok'; index: RevocationIndex; mark: LinesMark | undefined }
  | { kind: 'appended'; entries: RevocationEntry[]; mark: LinesMark }
  | { kind: 'missing' }
  | { kind: 'invalid'; issues: string[] }
  | { kind: 'unsettled'; message: string };

interface Settle {
  settleMs: number;
  maxMs: number;
}

/** Files up to this size are parsed on the loop (a few milliseconds); larger YAML/JSON goes to a worker thread. */
const INLINE_PARSE_BYTES = 256 * 1024;
/** Bytes read per chunk of a JSON Lines file; each chunk's lines are parsed before the next read (which yields). */
const READ_CHUNK = 256 * 1024;
/** Entries indexed between yields to the event loop. */
const INDEX_CHUNK = 5_000;

/**
 * Reads the file for a reload. A JSON Lines file that only grew since `mark` is read from there, whole lines only,
 * at once: nothing already read can have changed. Anything else is a rewrite, read until two reads `settle.settleMs`
 * apart agree (readSettled) and parsed from those bytes; `onEarly` gets the index of each read not yet confirmed.
 */
async function readRevocationFile(
  file: string,
  mark: LinesMark | undefined,
  settle: Settle,
  onEarly?: (index: RevocationIndex) => Promise<void>,
): Promise<FileRead> {
  const lines = isJsonLines(file);
  try {
    if (lines && mark !== undefined) {
      const appended = await readLinesFile(file, mark);
      if (appended.kind !== 'rewritten') return appended;
    }
    const parse = async (data: Buffer): Promise<FileRead> =>
      lines
        ? await readLines(bufferSource(data), { ...(await identityOf(file)), size: data.length }, undefined)
        : await parseDocumentText(data.toString('utf8'));
    let early: { data: Buffer; read: FileRead } | undefined;
    const settled = await readSettled(
      file,
      settle.settleMs,
      settle.maxMs,
      onEarly &&
        (async (data) => {
          // A JSON Lines line still being written is left out, so the whole lines before it count at once.
          const read = await parse(lines ? data.subarray(0, data.lastIndexOf(10) + 1) : data);
          early = { data, read };
          if (read.kind === 'ok') await onEarly(read.index);
        }),
    );
    if (!settled.ok) {
      if (settled.reason === 'missing') return { kind: 'missing' };
      if (settled.reason === 'unsettled') return { kind: 'unsettled', message: settled.message };
      return { kind: 'invalid', issues: [settled.message] };
    }
    // The last unconfirmed read is usually the settled one: parsed once.
    if (early?.data.equals(settled.data)) return early.read;
    return await parse(settled.data);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'missing' };
    return { kind: 'invalid', issues: [`cannot be read: ${errorMessage(err)}`] };
  }
}

/** The file's identity for a JSON Lines mark; a file gone or replaced since gives a mark the next read will not trust. */
async function identityOf(file: string): Promise<{ dev: number; ino: number }> {
  try {
    const st = await stat(file);
    return { dev: st.dev, ino: st.ino };
  } catch {
    return { dev: -1, ino: -1 };
  }
}

interface FileIdentity {
  dev: number;
  ino: number;
  size: number;
}

/** Where readLines takes bytes from: an open file, or the bytes of a settled read. */
interface ByteSource {
  read(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
}

function bufferSource(data: Buffer): ByteSource {
  return {
    read: async (buffer, offset, length, position) => {
      const n = Math.max(0, Math.min(length, data.length - position));
      data.copy(buffer, offset, position, position + n);
      return { bytesRead: n };
    },
  };
}

/**
 * Reads a JSON Lines file: with `mark`, only what was appended after it ('appended'), or 'rewritten' when the file is
 * not the one read with its old bytes intact; without, the whole file (the `revoke` command's check).
 */
async function readLinesFile(file: string, mark: LinesMark | undefined): Promise<FileRead | { kind: 'rewritten' }> {
  const fh = await open(file, 'r');
  try {
    return await readLines(fh, await fh.stat(), mark);
  } finally {
    await fh.close();
  }
}

/**
 * Reads JSON Lines in chunks. With a mark from the last read, and the same file (inode) whose bytes up to the mark
 * hash the same, only the lines after the mark are parsed ('appended'); a mark that does not fit gives 'rewritten';
 * without a mark the whole file is read into a new index. Only complete lines are taken: a line still being written
 * (no newline yet) waits for the next read, except at the end of a full read (of a settled file), where an
 * unterminated last line must be a whole entry.
 */
function readLines(src: ByteSource, st: FileIdentity, mark: undefined): Promise<FileRead>;
function readLines(
  src: ByteSource,
  st: FileIdentity,
  mark: LinesMark | undefined,
): Promise<FileRead | { kind: 'rewritten' }>;
async function readLines(
  src: ByteSource,
  st: FileIdentity,
  mark: LinesMark | undefined,
): Promise<FileRead | { kind: 'rewritten' }> {
  const canAppend = mark !== undefined && mark.dev === st.dev && mark.ino === st.ino && st.size >= mark.offset;
  if (mark !== undefined && !canAppend) return { kind: 'rewritten' };
  const hash = createHash('sha256');
  let pos = 0;
  let lineNo = 0;
  if (canAppend) {
    // The prefix must be byte-for-byte what was read; hashing it costs I/O and native hashing, no parsing.
    pos = await hashRange(src, hash, 0, mark.offset);
    if (pos !== mark.offset || hash.copy().digest('hex') !== mark.digest) return { kind: 'rewritten' };
    lineNo = mark.lines;
  }
  const index = canAppend ? undefined : new RevocationIndex();
  const appended: RevocationEntry[] = [];
  const issues: string[] = [];
  let issueCount = 0;
  let carry = Buffer.alloc(0);
  let sinceYield = 0;
  const buf = Buffer.allocUnsafe(READ_CHUNK);
  const take = (line: string) => {
    lineNo++;
    const r = parseLine(line, `line ${lineNo}`, index);
    if (r === undefined || r === 'added') return;
    if (!r.ok) {
      issueCount += r.issues.length;
      for (const i of r.issues) if (issues.length < MAX_ISSUES) issues.push(i);
    } else if (index) index.add(r.entry);
    else appended.push(r.entry);
  };
  for (;;) {
    const { bytesRead } = await src.read(buf, 0, READ_CHUNK, pos);
    if (bytesRead === 0) break;
    const chunk = carry.length > 0 ? Buffer.concat([carry, buf.subarray(0, bytesRead)]) : buf.subarray(0, bytesRead);
    let start = 0;
    for (let nl = chunk.indexOf(10, start); nl !== -1; nl = chunk.indexOf(10, start)) {
      take(chunk.toString('utf8', start, nl));
      start = nl + 1;
      if (++sinceYield >= INDEX_CHUNK) {
        sinceYield = 0;
        await yieldToLoop();
      }
    }
    hash.update(chunk.subarray(0, start));
    carry = Buffer.from(chunk.subarray(start));
    pos += bytesRead;
  }
  const offset = pos - carry.length;
  let lines = lineNo;
  if (!canAppend && carry.length > 0) {
    // A file whose last line has no newline (hand-written): it counts, and must be whole.
    take(carry.toString('utf8'));
    // Not in the mark: an append after it would join this line; the next read starts over.
    lines = lineNo - 1;
  }
  if (issueCount > 0) {
    if (issueCount > issues.length) issues.push(`… and ${issueCount - issues.length} more`);
    return { kind: 'invalid', issues };
  }
  const next: LinesMark = { dev: st.dev, ino: st.ino, offset, lines, digest: hash.digest('hex') };
  if (index) {
    await index.sweep();
    return { kind: 'ok', index, mark: carry.length > 0 ? undefined : next };
  }
  return { kind: 'appended', entries: appended, mark: next };
}

async function hashRange(fh: ByteSource, hash: Hash, from: number, to: number): Promise<number> {
  const buf = Buffer.allocUnsafe(1024 * 1024);
  let pos = from;
  while (pos < to) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, to - pos), pos);
    if (bytesRead === 0) break;
    hash.update(buf.subarray(0, bytesRead));
    pos += bytesRead;
  }
  return pos;
}

/** A YAML/JSON document: small ones parsed here, large ones in a worker; the entries are then indexed in chunks. */
async function parseDocumentText(text: string): Promise<FileRead> {
  if (text.length <= INLINE_PARSE_BYTES) {
    const parsed = parseRevocationText(text);
    if (!parsed.ok) return { kind: 'invalid', issues: parsed.issues };
    return { kind: 'ok', index: new RevocationIndex(parsed.entries), mark: undefined };
  }
  const raw = await parseInWorker(text);
  if ('issues' in raw) return { kind: 'invalid', issues: raw.issues };
  const top = topLevelIssues(raw.shape);
  if (top.length > 0) return { kind: 'invalid', issues: top };
  const index = new RevocationIndex();
  const issues: string[] = [];
  let issueCount = 0;
  for (let i = 0; i < raw.items.length; i++) {
    if ((i + 1) % INDEX_CHUNK === 0) await yieldToLoop();
    if (addPlainEntry(index, raw.items[i])) continue;
    const r = validateEntry(raw.items[i], `revoked[${i}]`);
    if (r.ok) index.add(r.entry);
    else {
      issueCount += r.issues.length;
      for (const x of r.issues) if (issues.length < MAX_ISSUES) issues.push(x);
    }
  }
  if (issueCount > 0) {
    if (issueCount > issues.length) issues.push(`… and ${issueCount - issues.length} more`);
    return { kind: 'invalid', issues };
  }
  await index.sweep();
  return { kind: 'ok', index, mark: undefined };
}

/** Memory the YAML parse worker may use; a file that needs more is reported as too large (use JSON Lines). */
const WORKER_HEAP_MB = 1024;

/**
 * The parse worker (plain JavaScript, run with eval so it needs no loader): the yaml library's parse and toJS, the
 * top-level shape, and each list item as one JSON text. Dates become ISO strings, which validateEntry accepts.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { parseDocument } = require(workerData.yaml);
const doc = parseDocument(workerData.text, { uniqueKeys: true });
if (doc.errors.length > 0) {
  parentPort.postMessage({ issues: doc.errors.map((e) => 'syntax error: ' + (e.message.split('\\n')[0] || e.message)) });
} else {
  let raw;
  try { raw = doc.toJS({ maxAliasCount: 100 }); } catch (err) { raw = err; }
  if (raw instanceof Error) parentPort.postMessage({ issues: ['cannot be read: ' + raw.message] });
  else {
    let shape, list = [];
    if (raw === null || raw === undefined) shape = { top: 'empty', extraKeys: [], revokedIsList: true };
    else if (Array.isArray(raw)) { shape = { top: 'list', extraKeys: [], revokedIsList: true }; list = raw; }
    else if (typeof raw !== 'object') shape = { top: 'other', extraKeys: [], revokedIsList: false };
    else {
      const revoked = raw.revoked ?? [];
      shape = { top: 'mapping', extraKeys: Object.keys(raw).filter((k) => k !== 'revoked'), revokedIsList: Array.isArray(revoked) };
      if (Array.isArray(revoked)) list = revoked;
    }
    parentPort.postMessage({ shape, items: list.map((x) => JSON.stringify(x === undefined ? null : x)).join('\\n') });
  }
}
`;

const yamlPath = createRequire(import.meta.url).resolve('yaml');

async function parseInWorker(text: string): Promise<{ shape: TopLevel; items: unknown[] } | { issues: string[] }> {
  const msg = await new Promise<{ shape: TopLevel; items: string } | { issues: string[] }>((resolve) => {
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { text, yaml: yamlPath },
      resourceLimits: { maxOldGenerationSizeMb: WORKER_HEAP_MB },
    });
    let done = false;
    const finish = (v: { shape: TopLevel; items: string } | { issues: string[] }) => {
      if (done) return;
      done = true;
      resolve(v);
      void worker.terminate();
    };
    worker.once('message', finish);
    worker.once('error', (err) =>
      finish({
        issues: [
          (err as NodeJS.ErrnoException).code === 'ERR_WORKER_OUT_OF_MEMORY'
            ? `too large to parse as YAML within ${WORKER_HEAP_MB} MB; use the JSON Lines format (.jsonl) for large lists`
            : `cannot be read: ${errorMessage(err)}`,
        ],
      }),
    );
    worker.once('exit', (code) => finish({ issues: [`cannot be read: the parser stopped (exit code ${code})`] }));
  });
  if ('issues' in msg) return msg;
  // One JSON text per item: parsed here in chunks, so a long list never stalls the loop in one piece.
  const lines = msg.items === '' ? [] : msg.items.split('\n');
  const items: unknown[] = new Array(lines.length);
  for (let i = 0; i < lines.length; i++) {
    items[i] = JSON.parse(lines[i] as string);
    if ((i + 1) % INDEX_CHUNK === 0) await yieldToLoop();
  }
  return { shape: msg.shape, items };
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
 * stays JSON; a `.jsonl` file gets one line appended in place instead (see appendLine). Refuses to touch a file that
 * is currently invalid (it would otherwise be overwritten).
 */
export async function revoke(file: string, entry: RevocationEntry): Promise<RevocationEntry> {
  const checked = validateEntry(entry);
  if (!checked.ok) throw new Error(`invalid revocation entry: ${checked.issues.join('; ')}`);
  const target = path.resolve(file);
  const release = await acquireLock(target);
  try {
    if (isJsonLines(target)) {
      await appendLine(target, checked.entry);
      return checked.entry;
    }
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
      next = isJson
        ? JSON.stringify({ revoked: [checked.entry] }, null, 2) + '\n'
        : FILE_HEADER + new Document({ revoked: [checked.entry] }).toString();
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
    if (!verify.ok)
      throw new Error(`internal error: the new revocation file would be invalid: ${verify.issues.join('; ')}`);
    writeAtomic(target, next, mode);
    return checked.entry;
  } finally {
    release();
  }
}

/**
 * Appends one line to a JSON Lines file in place (O_APPEND, one write, fsync), so running proxies read only the new
 * bytes. Refuses a file that is invalid now: the proxies keep their last good list while it is, so the new line would
 * not be enforced either.
 */
async function appendLine(target: string, entry: RevocationEntry): Promise<void> {
  let mode = 0o644;
  let sep = '';
  let size = -1;
  try {
    const st = statSync(target);
    mode = st.mode & 0o777;
    size = st.size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (size >= 0) {
    // The proxies' own reader decides: the same verdict they will reach, at the same cost (chunked, fast path).
    const read = await readLinesFile(target, undefined);
    if (read.kind === 'invalid') throw new RevocationFileError(target, read.issues);
  }
  if (size > 0) {
    // A hand-written last line without a newline would otherwise be joined to this one.
    const fd = openSync(target, 'r');
    try {
      const last = Buffer.alloc(1);
      readSync(fd, last, 0, 1, size - 1);
      if (last[0] !== 0x0a) sep = '\n';
    } finally {
      closeSync(fd);
    }
  }
  const fd = openSync(target, 'a', mode);
  try {
    writeSync(fd, `${sep}${JSON.stringify(entry)}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
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
  const tmp = path.join(
    path.dirname(target),
    `.${path.basename(target)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`,
  );
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
      if (Date.now() > deadline)
        throw new Error(`revocation file ${target} is locked by another process (${lock}); try again`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
