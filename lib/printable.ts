// Text from elsewhere made safe to print on a terminal: control characters and bidirectional overrides as \u escapes.

/**
 * `value` as a terminal may show it: control characters (C0, DEL, C1: escape sequences such as OSC 52, which sets the
 * clipboard, and line breaks that would fake a line) and bidirectional overrides (text that reads otherwise than it
 * is) written as \u escapes. For text a command prints that came from a server or a stored request.
 */
export function printable(value: unknown): string {
  return String(value).replace(
    /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g,
    (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}
