// Polls a condition until it holds or a deadline passes: for tests that wait on timers, watchers and sockets.

/** Resolves once `cond` is true (checked every `stepMs`), rejects after `ms`. */
export async function until(cond: () => boolean | Promise<boolean>, ms = 3_000, stepMs = 10): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}
