/*
 * mp_mgrscript — building what a library would send a manager: frames of
 * the library -> manager protocol (doc/protocol.md) appended to a byte
 * buffer, either as a raw stream or wrapped as records of the fuzz_mgr
 * input format (see tests/fuzz_mgr.c: a control byte naming the
 * connection and the action, then for data a 16-bit length and the
 * bytes).  Header-only: used by the corpus generator, the fuzz target's
 * own checks and tests/test_alloc.c.
 */
#ifndef MP_MGRSCRIPT_H
#define MP_MGRSCRIPT_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mp_wire.h"

/* fuzz_mgr record actions (control byte: conn | action << 2). */
enum mp_script_act {
	MP_SCRIPT_DATA8 = 0,  /* u8 length, then bytes */
	MP_SCRIPT_DATA16,     /* u16 length (little endian), then bytes */
	MP_SCRIPT_EOF,        /* the peer shuts its writing side, then goes */
	MP_SCRIPT_RESET,      /* the peer closes at once */
	MP_SCRIPT_TICK,       /* a worker pass with the tick's timers */
	MP_SCRIPT_ALLOC,      /* u8 n: the n-th allocation from now fails
				 (mp_alloc_fail_nth; 0 disarms) */
	MP_SCRIPT_NACT
};

#define MP_SCRIPT_CONNS 3

struct mp_script {
	uint8_t p[1 << 16];
	size_t len;
};

static inline void mp_script_put(struct mp_script *s, const void *b,
				 size_t n)
{
	if (s->len + n > sizeof(s->p))
		abort();
	memcpy(s->p + s->len, b, n);
	s->len += n;
}

/* A frame for op with request id reqid and every field zero. */
static inline struct mp_wire_msg mp_script_msg(unsigned op, uint32_t reqid)
{
	struct mp_wire_msg m;

	memset(&m, 0, sizeof(m));
	m.op = (uint8_t)op;
	m.reqid = reqid;
	return m;
}

/* Encode m into buf (room for any frame of these scripts). */
#define MP_SCRIPT_FRAME_MAX (MP_WIRE_HDR_SIZE + MP_WIRE_FIXED_MAX + 4096)
static inline size_t mp_script_encode(const struct mp_wire_msg *m,
				      uint8_t buf[MP_SCRIPT_FRAME_MAX])
{
	int n = mp_wire_encode(m, buf, MP_SCRIPT_FRAME_MAX);

	if (n < 0)
		abort();
	return (size_t)n;
}

/* Append m encoded, as a raw stream. */
static inline void mp_script_raw(struct mp_script *s,
				 const struct mp_wire_msg *m)
{
	uint8_t buf[MP_SCRIPT_FRAME_MAX];

	mp_script_put(s, buf, mp_script_encode(m, buf));
}

/* Append a control record (EOF, RESET, TICK) for connection conn. */
static inline void mp_script_ctl(struct mp_script *s, int conn,
				 enum mp_script_act act)
{
	uint8_t ctl = (uint8_t)(conn | act << 2);

	mp_script_put(s, &ctl, 1);
}

/* Append an ALLOC record: the n-th allocation from now fails. */
static inline void mp_script_alloc(struct mp_script *s, uint8_t n)
{
	uint8_t r[2] = {(uint8_t)(MP_SCRIPT_ALLOC << 2), n};

	mp_script_put(s, r, 2);
}

/* Append bytes as one DATA16 record for connection conn (one chunk). */
static inline void mp_script_data(struct mp_script *s, int conn,
				  const void *b, size_t n)
{
	uint8_t h[3] = {(uint8_t)(conn | MP_SCRIPT_DATA16 << 2),
			(uint8_t)(n & 0xff), (uint8_t)(n >> 8)};

	if (n > 0xffff)
		abort();
	mp_script_put(s, h, 3);
	mp_script_put(s, b, n);
}

/* Append m encoded as a record for connection conn; split: in two
 * chunks at that byte (0: one chunk), as a socket may deliver it. */
static inline void mp_script_frame(struct mp_script *s, int conn,
				   const struct mp_wire_msg *m, size_t split)
{
	uint8_t buf[MP_SCRIPT_FRAME_MAX];
	size_t n = mp_script_encode(m, buf);

	if (split && split < n) {
		mp_script_data(s, conn, buf, split);
		mp_script_data(s, conn, buf + split, n - split);
	} else {
		mp_script_data(s, conn, buf, n);
	}
}

#endif
