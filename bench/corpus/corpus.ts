// The parser corpus: its shape, where it lives, and reading it (bench/corpus/build.ts writes it).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export type Category = 'psql15-E' | 'pgbench' | 'tpch' | 'bi/orm' | 'utility';

export interface CorpusEntry {
  name: string;
  category: Category;
  sql: string;
  /** Statements run first in the same session (and transaction unless notx) during validation. */
  setup?: string[];
  notx?: boolean;
}

export interface CorpusFile {
  generated: string;
  server: string;
  psql: string;
  pgbench: string;
  method: string;
  statements: CorpusEntry[];
  dropped: { name: string; category: Category; error: string }[];
}

export const CORPUS_JSON = path.join(path.dirname(fileURLToPath(import.meta.url)), 'corpus.json');

export function loadCorpus(): CorpusFile {
  return JSON.parse(readFileSync(CORPUS_JSON, 'utf8')) as CorpusFile;
}
