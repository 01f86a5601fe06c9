// Entry of a decide worker thread: loads the TypeScript sources through tsx (as bin/pgwarden.js does), then the worker itself.
// A worker does not inherit the parent's module hooks, so it registers its own before importing any .ts file.
import os from 'node:os';
import { workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

// A lower CPU priority for this thread only (on Linux the nice value is per thread), set first so that loading and
// compiling the sources and the WASM parser (seconds of CPU on a loaded machine) already yields to the event loop
// every session shares; so does a worker grinding through a hostile text.
try {
  os.setPriority(0, workerData?.nice ?? 10);
} catch {
  // Not permitted or not supported: the worker runs at the process's priority.
}
register();
await import('./decide-worker.ts');
