// Watches one file for changes the way editors, `mv` and Kubernetes ConfigMaps change it (directory plus file, debounced), and reads it only once it has settled.
import { watch, statSync, type FSWatcher } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { errorMessage } from './error-message.ts';

export interface FileWatcherOptions {
  /** Quiet time after the last event before `onChange` runs. */
  debounceMs: number;
  /** Keep the process alive while watching (the policy store does; a revocation list need not). */
  persistent: boolean;
  onChange: () => void;
  /** Watcher failures, e.g. an unwatchable directory (the caller still reloads on SIGHUP). */
  warn: (msg: string, fields: object) => void;
  /** Names the file in warnings: 'policy', 'revocation'. */
  what: string;
}

/**
 * The directory watcher sees saves done by rename (vim, VS Code, `mv`), deletes and re-creates, and
 * Kubernetes ConfigMap updates (a `..data` symlink swapped in the directory). The file watcher sees
 * in-place writes even when the path is a symlink into another directory; it follows an inode, so it
 * is re-armed whenever a rename-replace gives the path a new one.
 */
export class FileWatcher {
  #dir: FSWatcher | undefined;
  #file: FSWatcher | undefined;
  #ino: number | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(
    readonly file: string,
    private readonly opts: FileWatcherOptions,
  ) {
    const dir = path.dirname(file);
    const base = path.basename(file);
    try {
      this.#dir = watch(dir, { persistent: opts.persistent }, (_event, filename) => {
        const name = filename?.toString();
        if (name === undefined || name === base || name.startsWith('..')) this.#schedule();
      });
      this.#dir.on('error', (err) =>
        opts.warn(`${opts.what} directory watcher failed`, { dir, error: errorMessage(err) }),
      );
    } catch (err) {
      opts.warn(`cannot watch the ${opts.what} directory; reload with SIGHUP`, { dir, error: errorMessage(err) });
    }
    this.#armFile();
  }

  close(): void {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#dir?.close();
    this.#dir = undefined;
    this.#closeFile();
  }

  #armFile(): void {
    this.#closeFile();
    if (this.#closed) return;
    try {
      const ino = statSync(this.file).ino;
      const w = watch(this.file, { persistent: this.opts.persistent }, () => this.#schedule());
      w.on('error', () => {
        // Typically the file was deleted; the directory watcher sees it come back, and #schedule re-arms.
        this.#closeFile();
        this.#schedule();
      });
      this.#file = w;
      this.#ino = ino;
    } catch {
      // The file is missing right now; the directory watcher will notice it reappear.
    }
  }

  #closeFile(): void {
    this.#file?.close();
    this.#file = undefined;
    this.#ino = undefined;
  }

  #schedule(): void {
    if (this.#closed) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#closed) return;
      let ino: number | undefined;
      try {
        ino = statSync(this.file).ino;
      } catch {
        ino = undefined;
      }
      if (ino === undefined) this.#closeFile();
      else if (ino !== this.#ino || !this.#file) this.#armFile();
      this.opts.onChange();
    }, this.opts.debounceMs);
  }
}

export type SettledRead =
  | { ok: true; data: Buffer }
  | { ok: false; reason: 'missing' | 'unreadable' | 'unsettled'; message: string };

/**
 * Reads `file` until two reads `settleMs` apart agree on size, modification time and bytes, so a file being
 * rewritten in place (truncated, then written in steps) is not taken half-written. Gives up after `maxWaitMs`
 * ('unsettled'). A writer that pauses longer than `settleMs` between steps cannot be told from a finished one:
 * replacing the file by rename is the only way to be safe against every writer.
 *
 * `onUnsettled`, when given, sees each read not yet confirmed (the first one, and each one that differed from the
 * one before) as soon as it is made and is awaited before the wait: a caller can act early on what is safe to take
 * from a possibly incomplete file (the revocation list applies additions at once). Its time counts against `maxWaitMs`.
 */
export async function readSettled(
  file: string,
  settleMs: number,
  maxWaitMs: number,
  onUnsettled?: (data: Buffer) => void | Promise<void>,
): Promise<SettledRead> {
  const deadline = Date.now() + maxWaitMs;
  let previous = await readOnce(file);
  for (;;) {
    if (!previous.ok) return previous;
    if (onUnsettled) await onUnsettled(previous.data);
    await new Promise((r) => setTimeout(r, settleMs));
    const next = await readOnce(file);
    if (!next.ok) return next;
    if (next.size === previous.size && next.mtimeMs === previous.mtimeMs && next.data.equals(previous.data))
      return { ok: true, data: next.data };
    if (Date.now() >= deadline)
      return {
        ok: false,
        reason: 'unsettled',
        message: `kept changing for ${maxWaitMs} ms; not applied (replace the file by rename instead of rewriting it in place)`,
      };
    previous = next;
  }
}

async function readOnce(
  file: string,
): Promise<
  | { ok: true; size: number; mtimeMs: number; data: Buffer }
  | { ok: false; reason: 'missing' | 'unreadable'; message: string }
> {
  try {
    const before = await stat(file);
    const data = await readFile(file);
    return { ok: true, size: before.size, mtimeMs: before.mtimeMs, data };
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return e.code === 'ENOENT'
      ? { ok: false, reason: 'missing', message: 'does not exist' }
      : { ok: false, reason: 'unreadable', message: `could not be read: ${e.code ?? e.message}` };
  }
}
