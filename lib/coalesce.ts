// Coalesces requests for one async job: at most one run in flight plus one pending, so a burst of requests is one or two runs.

/**
 * `run()` starts the job when none is running; while one runs, every request joins a single pending run that starts
 * when the current one settles (so it sees whatever changed meanwhile). Each caller gets the result of the run that
 * covers its request.
 */
export class Coalescer<T> {
  #running: Promise<T> | undefined;
  #pending: Promise<T> | undefined;

  constructor(private readonly job: () => Promise<T>) {}

  run(): Promise<T> {
    if (this.#pending) return this.#pending;
    if (!this.#running) return this.#start();
    const after = this.#running.then(
      () => undefined,
      () => undefined,
    );
    this.#pending = after.then(() => {
      this.#pending = undefined;
      return this.#start();
    });
    return this.#pending;
  }

  /** True while a run is in flight or pending. */
  get busy(): boolean {
    return this.#running !== undefined || this.#pending !== undefined;
  }

  #start(): Promise<T> {
    const p = (async () => await this.job())();
    this.#running = p;
    const clear = () => {
      if (this.#running === p) this.#running = undefined;
    };
    p.then(clear, clear);
    return p;
  }
}
