#!/usr/bin/env node
// Entry point of the pgwarden command: loads the TypeScript sources through tsx (no build step needed).
import { register } from 'tsx/esm/api';

register();
await import('../proxy/cli/main.ts');
