/*
 * textid.c
 *		Text ids (docs/model.md "Text ids"): the int64 id of a text from its
 *		UTF-8 bytes, which the named form then hashes into its field's rows
 *		like any integer id.  The Python package's pepnet.text_id computes
 *		the same.
 */
#include "pncore.h"

/*
 * state = 0x6A09E667F3BCC909; for each byte c: state = splitmix64(state ^ c);
 * the id is the state as a two's-complement int64.
 */
int64_t
pn_text_id(const char *utf8, size_t len)
{
	uint64_t	state = UINT64_C(0x6A09E667F3BCC909);
	size_t		i;

	for (i = 0; i < len; i++)
		state = pn_splitmix64(state ^ (uint64_t) (unsigned char) utf8[i]);
	return (int64_t) state;
}
