// An upstream error or notice pgwarden cannot parse is withheld whole: the client gets a fixed stand-in, byte for byte.
import { describe, expect, it } from 'vitest';
import { scrubErrorFrame } from '../../../proxy/session/scrub.ts';
import { Bytes, typed } from '../../helpers/bytes.ts';
import { errorResponse } from '../../helpers/in-memory.ts';

/** A frame whose last field is not terminated (no closing NUL): it cannot be split into fields. */
function malformed(type: 'E' | 'N'): { type: number; body: Buffer; raw: Buffer } {
  const raw = typed(type, new Bytes().u8(0x53).cstr('ERROR').u8(0x4d).str('Failing row contains (000-00-7'));
  return { type: type.charCodeAt(0), body: raw.subarray(5), raw };
}

describe('scrubErrorFrame on a message it cannot parse', () => {
  it('replaces an ErrorResponse with ERR_UPSTREAM_MALFORMED (ERROR, XX000), none of its text kept', () => {
    expect(scrubErrorFrame(malformed('E'))).toEqual(
      errorResponse(
        'ERROR',
        'XX000',
        'pgwarden withheld a malformed error message from the database (reason=internal_error)',
        'reason=internal_error',
      ),
    );
  });

  it('replaces a NoticeResponse with a WARNING (01000), none of its text kept', () => {
    const expected = Buffer.from(
      errorResponse('WARNING', '01000', 'pgwarden withheld a malformed notice message from the database'),
    );
    expected[0] = 'N'.charCodeAt(0);
    expect(scrubErrorFrame(malformed('N'))).toEqual(expected);
  });
});
