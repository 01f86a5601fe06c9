// The text of anything thrown, for logs and issue lists (a thrown non-Error is shown as its string form).

/** `err.message` for an Error, else `String(err)`. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
