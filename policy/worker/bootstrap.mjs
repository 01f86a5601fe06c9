// Entry of a decide worker thread: loads the TypeScript sources through tsx (as bin/pgwarden.js does), then the worker itself.
// A worker does not inherit the parent's module hooks, so it registers its own before importing any .ts file.
import { register } from 'tsx/esm/api';

register();
await import('./decide-worker.ts');
