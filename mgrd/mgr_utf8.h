/*
 * mgr_utf8 — UTF-8 validation for text the manager shows to people (the
 * status page, messip-stat): client ids and channel names are arbitrary
 * bytes from the network, so every sequence is checked before it is
 * passed through.
 */
#ifndef MGR_UTF8_H
#define MGR_UTF8_H

#include <stddef.h>

/*
 * Length (1..4) of the valid UTF-8 sequence at s (n >= 1 bytes left), or 0
 * when it is malformed, overlong, a surrogate, past U+10FFFF, or — unless
 * allow_c1 — a C1 control (U+0080..U+009F, which a terminal may act on).
 */
size_t mgr_utf8_len(const unsigned char *s, size_t n, int allow_c1);

#endif
