/*
 * fuzz_wire — libFuzzer target for the wire codec (lib/mp_wire.c); linked
 * with tests/fuzz_replay.c it replays tests/corpus/wire in `make check`.
 *
 * The input is a byte stream as a socket would deliver it.  The target
 * checks, and abort()s on any violation:
 *   - decode_hdr and decode agree at several max_data limits, and a larger
 *     limit never turns an accepted frame into an error;
 *   - walking the stream frame after frame, every frame decoded lies
 *     inside the input, re-encodes to exactly its own bytes (the encoding
 *     is canonical), decodes again to identical fields, and is "need more"
 *     when its last byte is missing;
 *   - encode_head writes the same head, and encoding refuses a buffer one
 *     byte short.
 * Re-encodes go to exact-size heap buffers so ASan sees any overrun.
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

#define WALK_MAX_DATA 65536u

static void fail(const char *what, const struct mp_wire_msg *m)
{
	fprintf(stderr, "fuzz_wire: %s (op %u %s)\n", what, m ? m->op : 0,
		m ? mp_wire_op_name(m->op) : "-");
	abort();
}

static void same_fields(const struct mp_wire_msg *x,
			const struct mp_wire_msg *y)
{
	if (x->op != y->op || x->flags != y->flags || x->reqid != y->reqid ||
	    x->a != y->a || x->b != y->b || x->c != y->c || x->u != y->u)
		fail("integer field differs after re-encode", x);
	if (strcmp(x->name, y->name) || strcmp(x->id, y->id) ||
	    strcmp(x->addr, y->addr))
		fail("string field differs after re-encode", x);
	if (x->datalen != y->datalen ||
	    (x->datalen && memcmp(x->data, y->data, x->datalen)))
		fail("data differs after re-encode", x);
}

/* Everything we can check about one decoded frame of r bytes. */
static void check_frame(const uint8_t *frame, int r,
			const struct mp_wire_msg *m)
{
	struct mp_wire_msg m2;
	size_t size = mp_wire_size(m);
	uint8_t *buf;
	int rc, h;

	if (size != (size_t)r)
		fail("mp_wire_size differs from the decoded size", m);
	buf = malloc(size);
	if (!buf)
		abort();

	rc = mp_wire_encode(m, buf, size);
	if (rc != r)
		fail("re-encode has a different size", m);
	if (memcmp(buf, frame, size) != 0)
		fail("re-encode has different bytes", m);
	if (mp_wire_encode(m, buf, size - 1) != -ENOBUFS)
		fail("encode into a short buffer not refused", m);

	rc = mp_wire_decode(buf, size, WALK_MAX_DATA, &m2);
	if (rc != r)
		fail("re-encoded frame does not decode", m);
	same_fields(m, &m2);

	/* The head alone, into an exact-size buffer. */
	h = mp_wire_encode_head(m, buf, size);
	if (h < MP_WIRE_HDR_SIZE || (size_t)h + m->datalen != size ||
	    memcmp(buf, frame, (size_t)h) != 0)
		fail("encode_head differs", m);
	if (m->datalen && (const uint8_t *)m->data != frame + h)
		fail("data does not point just after the head", m);
	free(buf);
	buf = malloc((size_t)h);
	if (!buf)
		abort();
	if (mp_wire_encode_head(m, buf, (size_t)h) != h ||
	    mp_wire_encode_head(m, buf, (size_t)h - 1) != -ENOBUFS)
		fail("encode_head buffer bound", m);
	free(buf);

	/* One byte short of the frame: need more. */
	if (mp_wire_decode(frame, (size_t)r - 1, WALK_MAX_DATA, &m2) != 0)
		fail("truncated frame is not 'need more'", m);
	/* The data limit is exact. */
	if (mp_wire_fields(m->op) & MP_WF_DATA) {
		if (mp_wire_decode(frame, (size_t)r, m->datalen, &m2) != r)
			fail("data at exactly max_data refused", m);
		if (m->datalen &&
		    mp_wire_decode(frame, (size_t)r, m->datalen - 1, &m2) !=
			    -EMSGSIZE)
			fail("data over max_data accepted", m);
	}
}

/* The header check and the full decode agree, at several limits. */
static void check_limits(const uint8_t *d, size_t n)
{
	static const uint32_t maxes[] = {0, 1, 64, 65536, 1u << 20, UINT32_MAX};
	int prev = -1;

	for (size_t i = 0; i < sizeof(maxes) / sizeof(maxes[0]); i++) {
		struct mp_wire_hdr h;
		struct mp_wire_msg m;
		int rh = mp_wire_decode_hdr(d, n, maxes[i], &h);
		int rd = mp_wire_decode(d, n, maxes[i], &m);

		if (n < MP_WIRE_HDR_SIZE) {
			if (rh != 0 || rd != 0)
				fail("short header not 'need more'", NULL);
			return;
		}
		if (rh < 0 && rd != rh)
			fail("decode and decode_hdr disagree", NULL);
		if (rh != MP_WIRE_HDR_SIZE && rh != -EPROTO && rh != -EMSGSIZE)
			fail("decode_hdr: unexpected return", NULL);
		if (rd > 0 &&
		    ((size_t)rd > n ||
		     (uint64_t)rd != MP_WIRE_HDR_SIZE + (uint64_t)h.len))
			fail("frame size is not 12 + len or exceeds input", &m);
		if (rd < 0 && rd != -EPROTO && rd != -EMSGSIZE)
			fail("decode: unexpected error", &m);
		if (prev > 0 && rd != prev)
			fail("larger max_data changed an accepted frame", &m);
		prev = rd;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	size_t off = 0;

	check_limits(d, n);
	while (off < n) {
		struct mp_wire_msg m;
		int r = mp_wire_decode(d + off, n - off, WALK_MAX_DATA, &m);

		if (r <= 0)
			break;
		if ((size_t)r > n - off || r < MP_WIRE_HDR_SIZE)
			fail("frame size outside the input", &m);
		check_frame(d + off, r, &m);
		off += (size_t)r;
	}
	return 0;
}
