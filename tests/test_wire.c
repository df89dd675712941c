/*
 * test_wire — the wire codec (lib/mp_wire.c) against its contract in
 * lib/mp_wire.h: field table, exact byte layout, round trips of every
 * operation at the extremes of every field, "need more" on every
 * truncation, and each way a frame is refused (version, op, length over
 * the limit, overlong or NUL-bearing strings, missing or trailing bytes,
 * data over max_data), plus the encoder's own errors.
 *
 * Inputs given to the decoder are exact-size heap copies, so that an ASan
 * build catches a single byte read past what the decoder was given.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_test.h"
#include "mp_wire.h"

#define MAX_DATA 65536u
#define BUF_MAX	 (MP_WIRE_HDR_SIZE + MP_WIRE_FIXED_MAX + MAX_DATA)

static uint8_t data_max[MAX_DATA];
static uint8_t enc[BUF_MAX];

/* The field table as doc/protocol.md and mp_wire.h describe it. */
static const unsigned expect_fields[MP_OP_MAX_] = {
	[MP_OP_HELLO] = MP_WF_A | MP_WF_C | MP_WF_U | MP_WF_NAME | MP_WF_ID,
	[MP_OP_WELCOME] = MP_WF_A | MP_WF_B | MP_WF_U | MP_WF_ADDR,
	[MP_OP_RESULT] = MP_WF_A | MP_WF_B | MP_WF_C | MP_WF_U,
	[MP_OP_CH_CREATE] = MP_WF_A | MP_WF_U | MP_WF_NAME | MP_WF_ADDR |
			    MP_WF_DATA,
	[MP_OP_CH_DELETE] = MP_WF_NAME,
	[MP_OP_CH_CONNECT] = MP_WF_A | MP_WF_NAME,
	[MP_OP_CH_INFO] = MP_WF_A | MP_WF_B | MP_WF_C | MP_WF_U | MP_WF_NAME |
			  MP_WF_ID | MP_WF_ADDR | MP_WF_DATA,
	[MP_OP_CH_DISCONNECT] = MP_WF_B,
	[MP_OP_BSEND] = MP_WF_A | MP_WF_B | MP_WF_C | MP_WF_DATA,
	[MP_OP_BDELIVER] =
		MP_WF_A | MP_WF_B | MP_WF_C | MP_WF_U | MP_WF_ID | MP_WF_DATA,
	[MP_OP_BACK] = MP_WF_B | MP_WF_U,
	[MP_OP_EVENT] = MP_WF_A | MP_WF_B | MP_WF_C | MP_WF_U | MP_WF_ID,
	[MP_OP_DEATH_NOTIFY] = MP_WF_A,
	[MP_OP_PING] = 0,
	[MP_OP_PONG] = 0,
	[MP_OP_BYE] = 0,
	[MP_OP_SEND] = MP_WF_A | MP_WF_DATA,
	[MP_OP_REPLY] = MP_WF_A | MP_WF_DATA,
	[MP_OP_CANCEL] = 0,
	[MP_OP_CHALLENGE] = MP_WF_DATA,
	[MP_OP_AUTH] = MP_WF_A | MP_WF_DATA,
};

static const char *const expect_names[MP_OP_MAX_] = {
	[MP_OP_HELLO] = "HELLO",
	[MP_OP_WELCOME] = "WELCOME",
	[MP_OP_RESULT] = "RESULT",
	[MP_OP_CH_CREATE] = "CH_CREATE",
	[MP_OP_CH_DELETE] = "CH_DELETE",
	[MP_OP_CH_CONNECT] = "CH_CONNECT",
	[MP_OP_CH_INFO] = "CH_INFO",
	[MP_OP_CH_DISCONNECT] = "CH_DISCONNECT",
	[MP_OP_BSEND] = "BSEND",
	[MP_OP_BDELIVER] = "BDELIVER",
	[MP_OP_BACK] = "BACK",
	[MP_OP_EVENT] = "EVENT",
	[MP_OP_DEATH_NOTIFY] = "DEATH_NOTIFY",
	[MP_OP_PING] = "PING",
	[MP_OP_PONG] = "PONG",
	[MP_OP_BYE] = "BYE",
	[MP_OP_SEND] = "SEND",
	[MP_OP_REPLY] = "REPLY",
	[MP_OP_CANCEL] = "CANCEL",
	[MP_OP_CHALLENGE] = "CHALLENGE",
	[MP_OP_AUTH] = "AUTH",
};

/* Decode from an exact-size heap copy of buf[0..n). */
static int decode_exact(const void *buf, size_t n, uint32_t max_data,
			struct mp_wire_msg *m)
{
	uint8_t *copy = malloc(n ? n : 1);
	int rc;

	CU_ASSERT_FATAL(copy != NULL);
	memcpy(copy, buf, n);
	rc = mp_wire_decode(copy, n, max_data, m);
	/* data points into the input: move it to the static copy */
	if (rc > 0 && m->data)
		m->data = (const uint8_t *)buf +
			  ((const uint8_t *)m->data - copy);
	free(copy);
	return rc;
}

static int decode_hdr_exact(const void *buf, size_t n, uint32_t max_data,
			    struct mp_wire_hdr *h)
{
	uint8_t *copy = malloc(n ? n : 1);
	int rc;

	CU_ASSERT_FATAL(copy != NULL);
	memcpy(copy, buf, n);
	rc = mp_wire_decode_hdr(copy, n, max_data, h);
	free(copy);
	return rc;
}

static void fill_str(char *dst, size_t n, char c)
{
	memset(dst, c, n);
	dst[n] = '\0';
}

/* Every field at its largest (strings full, data 64 KiB). */
static void msg_max(struct mp_wire_msg *m, unsigned op)
{
	memset(m, 0, sizeof(*m));
	m->op = (uint8_t)op;
	m->flags = 0xFFFF;
	m->reqid = UINT32_MAX;
	m->a = INT32_MAX;
	m->b = INT32_MIN;
	m->c = -1;
	m->u = UINT64_MAX;
	fill_str(m->name, MP_WIRE_NAME_MAX, 'n');
	fill_str(m->id, MP_WIRE_ID_MAX, '\xff');
	fill_str(m->addr, MP_WIRE_ADDR_MAX, 'a');
	m->data = data_max;
	m->datalen = MAX_DATA;
}

/* Every field at its smallest (0, empty strings, no data). */
static void msg_min(struct mp_wire_msg *m, unsigned op)
{
	memset(m, 0, sizeof(*m));
	m->op = (uint8_t)op;
	m->data = data_max;
	m->datalen = 0;
}

/* A frame with distinct values in each field (for truncation tests). */
static void msg_mixed(struct mp_wire_msg *m, unsigned op, uint32_t datalen)
{
	memset(m, 0, sizeof(*m));
	m->op = (uint8_t)op;
	m->flags = MP_WIRE_F_LOCATE;
	m->reqid = 0x01020304;
	m->a = -2;
	m->b = 77;
	m->c = 123456;
	m->u = 0x1122334455667788ull;
	strcpy(m->name, "channel.name");
	strcpy(m->id, "proc1");
	strcpy(m->addr, "192.168.1.10:4444");
	m->data = data_max;
	m->datalen = datalen;
}

/* Every byte of the array after the string is zero (nothing left over
 * from whatever the struct held before the decode). */
static int tail_zero(const char *s, size_t size)
{
	for (size_t i = strnlen(s, size); i < size; i++)
		if (s[i])
			return 0;
	return 1;
}

/* Fields of want that op carries equal got's; the others are zero. */
static void check_same(const struct mp_wire_msg *want,
		       const struct mp_wire_msg *got)
{
	unsigned f = mp_wire_fields(want->op);

	CU_ASSERT_EQUAL(got->op, want->op);
	CU_ASSERT_EQUAL(got->flags, want->flags);
	CU_ASSERT_EQUAL(got->reqid, want->reqid);
	CU_ASSERT_EQUAL(got->a, (f & MP_WF_A) ? want->a : 0);
	CU_ASSERT_EQUAL(got->b, (f & MP_WF_B) ? want->b : 0);
	CU_ASSERT_EQUAL(got->c, (f & MP_WF_C) ? want->c : 0);
	CU_ASSERT_EQUAL(got->u, (f & MP_WF_U) ? want->u : 0);
	CU_ASSERT_STRING_EQUAL(got->name, (f & MP_WF_NAME) ? want->name : "");
	CU_ASSERT_STRING_EQUAL(got->id, (f & MP_WF_ID) ? want->id : "");
	CU_ASSERT_STRING_EQUAL(got->addr, (f & MP_WF_ADDR) ? want->addr : "");
	CU_ASSERT(tail_zero(got->name, sizeof(got->name)));
	CU_ASSERT(tail_zero(got->id, sizeof(got->id)));
	CU_ASSERT(tail_zero(got->addr, sizeof(got->addr)));
	if (f & MP_WF_DATA) {
		CU_ASSERT_EQUAL(got->datalen, want->datalen);
		CU_ASSERT(got->datalen == 0 ||
			  memcmp(got->data, want->data, got->datalen) == 0);
	} else {
		CU_ASSERT_EQUAL(got->datalen, 0);
		CU_ASSERT_PTR_NULL(got->data);
	}
}

/* Encode want, decode it back, compare; returns the frame size. */
static int round_trip(const struct mp_wire_msg *want)
{
	struct mp_wire_msg got;
	size_t size = mp_wire_size(want);
	int n, r;

	n = mp_wire_encode(want, enc, sizeof(enc));
	CU_ASSERT(n > 0);
	CU_ASSERT_EQUAL((size_t)n, size);
	if (n <= 0)
		return n;
	memset(&got, 0xA5, sizeof(got));
	r = decode_exact(enc, (size_t)n, MAX_DATA, &got);
	CU_ASSERT_EQUAL(r, n);
	if (r == n)
		check_same(want, &got);
	return n;
}

static void test_field_table(void)
{
	for (unsigned op = 0; op < MP_OP_MAX_ + 10; op++) {
		unsigned want = op < MP_OP_MAX_ ? expect_fields[op] : 0;
		const char *want_name =
			op >= 1 && op < MP_OP_MAX_ ? expect_names[op] : "?";

		CU_ASSERT_EQUAL(mp_wire_fields(op), want);
		CU_ASSERT_STRING_EQUAL(mp_wire_op_name(op), want_name);
	}
	CU_ASSERT_STRING_EQUAL(mp_wire_op_name(UINT_MAX), "?");
	CU_ASSERT_EQUAL(mp_wire_fields(UINT_MAX), 0);
	CU_ASSERT_EQUAL(MP_WIRE_FIXED_MAX, 141);
}

/* Known bytes: big-endian integers, length-prefixed strings, field order. */
static void test_byte_layout(void)
{
	/* One field per line; clang-format would reflow the bytes. */
	/* clang-format off */
	static const uint8_t want_info[] = {
		1, MP_OP_CH_INFO, 0x00, 0x01,   /* version, op, flags */
		0xde, 0xad, 0xbe, 0xef,         /* reqid */
		0, 0, 0, 31,                    /* len */
		0xff, 0xff, 0xff, 0xfe,         /* a = -2 */
		0x00, 0x00, 0x01, 0x00,         /* b = 256 */
		0x01, 0x02, 0x03, 0x04,         /* c */
		1, 2, 3, 4, 5, 6, 7, 8,         /* u */
		2, 'c', 'h',                    /* name */
		1, 'p',                         /* id */
		5, 'h', ':', '1', '2', '3',     /* addr */
	};
	static const uint8_t want_bsend[] = {
		1, MP_OP_BSEND, 0, 0, 0, 0, 0, 9, 0, 0, 0, 15,
		0, 0, 0, 5,                     /* a */
		0x80, 0, 0, 0,                  /* b = INT32_MIN */
		0xff, 0xff, 0xff, 0xff,         /* c = -1 */
		'x', 'y', 'z',                  /* data */
	};
	/* clang-format on */
	struct mp_wire_msg m;
	int n;

	memset(&m, 0, sizeof(m));
	m.op = MP_OP_CH_INFO;
	m.flags = MP_WIRE_F_LOCATE;
	m.reqid = 0xdeadbeef;
	m.a = -2;
	m.b = 256;
	m.c = 0x01020304;
	m.u = 0x0102030405060708ull;
	strcpy(m.name, "ch");
	strcpy(m.id, "p");
	strcpy(m.addr, "h:123");
	n = mp_wire_encode(&m, enc, sizeof(enc));
	CU_ASSERT_EQUAL(n, (int)sizeof(want_info));
	CU_ASSERT(memcmp(enc, want_info, sizeof(want_info)) == 0);
	CU_ASSERT_EQUAL(round_trip(&m), (int)sizeof(want_info));

	memset(&m, 0, sizeof(m));
	m.op = MP_OP_BSEND;
	m.reqid = 9;
	m.a = 5;
	m.b = INT32_MIN;
	m.c = -1;
	m.data = "xyz";
	m.datalen = 3;
	n = mp_wire_encode(&m, enc, sizeof(enc));
	CU_ASSERT_EQUAL(n, (int)sizeof(want_bsend));
	CU_ASSERT(memcmp(enc, want_bsend, sizeof(want_bsend)) == 0);
	CU_ASSERT_EQUAL(round_trip(&m), (int)sizeof(want_bsend));
}

static void test_round_trip_max(void)
{
	struct mp_wire_msg m;

	for (unsigned op = 1; op < MP_OP_MAX_; op++) {
		unsigned f = mp_wire_fields(op);
		size_t want = MP_WIRE_HDR_SIZE;
		int n;

		msg_max(&m, op);
		want += (f & MP_WF_A ? 4 : 0) + (f & MP_WF_B ? 4 : 0) +
			(f & MP_WF_C ? 4 : 0) + (f & MP_WF_U ? 8 : 0) +
			(f & MP_WF_NAME ? 1 + MP_WIRE_NAME_MAX : 0) +
			(f & MP_WF_ID ? 1 + MP_WIRE_ID_MAX : 0) +
			(f & MP_WF_ADDR ? 1 + MP_WIRE_ADDR_MAX : 0) +
			(f & MP_WF_DATA ? MAX_DATA : 0);
		n = round_trip(&m);
		CU_ASSERT_EQUAL((size_t)n, want);
		/* CH_INFO carries every fixed field: the documented max
		 * (then its data, the channel ticket) */
		if (op == MP_OP_CH_INFO)
			CU_ASSERT_EQUAL(n, MP_WIRE_HDR_SIZE +
						   MP_WIRE_FIXED_MAX + MAX_DATA);
	}
}

static void test_round_trip_min(void)
{
	struct mp_wire_msg m;

	for (unsigned op = 1; op < MP_OP_MAX_; op++) {
		unsigned f = mp_wire_fields(op);
		size_t want = MP_WIRE_HDR_SIZE;

		msg_min(&m, op);
		want += (f & MP_WF_A ? 4 : 0) + (f & MP_WF_B ? 4 : 0) +
			(f & MP_WF_C ? 4 : 0) + (f & MP_WF_U ? 8 : 0) +
			(f & MP_WF_NAME ? 1 : 0) + (f & MP_WF_ID ? 1 : 0) +
			(f & MP_WF_ADDR ? 1 : 0);
		CU_ASSERT_EQUAL((size_t)round_trip(&m), want);
		/* a data op with no data and a NULL pointer is fine too */
		m.data = NULL;
		CU_ASSERT_EQUAL((size_t)round_trip(&m), want);
	}
}

/* Values the encoder must not mangle: sign, byte order, high bits. */
static void test_round_trip_values(void)
{
	static const int32_t ints[] = {
		0, 1, -1, 255, 256, 0x7F000000, INT32_MIN, INT32_MAX, -65536};
	static const uint64_t u64s[] = {
		0, 1, 0xFF, 1ull << 32, 0x8000000000000000ull, UINT64_MAX};
	struct mp_wire_msg m;

	for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
		msg_min(&m, MP_OP_CH_INFO);
		m.a = ints[i];
		m.b = ints[(i + 1) % 9];
		m.c = ints[(i + 2) % 9];
		m.u = u64s[i % 6];
		m.reqid = (uint32_t)ints[i];
		m.flags = (uint16_t)ints[i];
		round_trip(&m);
	}
	/* every non-NUL byte value survives in strings and data */
	msg_min(&m, MP_OP_CH_INFO);
	for (int i = 0; i < MP_WIRE_ADDR_MAX; i++)
		m.addr[i] = (char)(0xC1 + i);
	for (int i = 0; i < MP_WIRE_NAME_MAX; i++)
		m.name[i] = (char)(1 + i);
	round_trip(&m);
}

/* mp_wire_encode_head + the data bytes is the same as mp_wire_encode. */
static void test_encode_head(void)
{
	static uint8_t head[MP_WIRE_HDR_SIZE + MP_WIRE_FIXED_MAX];
	struct mp_wire_msg m;

	for (unsigned op = 1; op < MP_OP_MAX_; op++) {
		int n, h;

		msg_mixed(&m, op, 1000);
		n = mp_wire_encode(&m, enc, sizeof(enc));
		h = mp_wire_encode_head(&m, head, sizeof(head));
		CU_ASSERT(h > 0 && h <= n);
		if (h <= 0 || h > n)
			continue;
		CU_ASSERT(memcmp(head, enc, (size_t)h) == 0);
		if (mp_wire_fields(op) & MP_WF_DATA) {
			CU_ASSERT_EQUAL(n - h, 1000);
			CU_ASSERT(memcmp(enc + h, data_max, 1000) == 0);
		} else {
			CU_ASSERT_EQUAL(n, h);
		}
		/* the head needs no data pointer at all */
		m.data = NULL;
		CU_ASSERT_EQUAL(mp_wire_encode_head(&m, head, sizeof(head)), h);
		/* the head of the biggest frame fits the documented bound */
		msg_max(&m, op);
		h = mp_wire_encode_head(&m, head, sizeof(head));
		CU_ASSERT(h > 0);
	}
}

/* Fields an op does not carry: ignored by encode, zeroed by decode. */
static void test_unused_fields(void)
{
	struct mp_wire_msg m, got;
	int n;

	msg_max(&m, MP_OP_PING);
	n = mp_wire_encode(&m, enc, sizeof(enc));
	CU_ASSERT_EQUAL(n, MP_WIRE_HDR_SIZE);
	CU_ASSERT_EQUAL(mp_wire_size(&m), MP_WIRE_HDR_SIZE);
	CU_ASSERT_EQUAL(enc[8] | enc[9] | enc[10] | enc[11], 0);
	memset(&got, 0x5A, sizeof(got));
	CU_ASSERT_EQUAL(decode_exact(enc, (size_t)n, MAX_DATA, &got), n);
	check_same(&m, &got);

	/* a non-data op ignores datalen, even an impossible one */
	msg_min(&m, MP_OP_BACK);
	m.datalen = UINT32_MAX;
	m.data = NULL;
	CU_ASSERT_EQUAL(mp_wire_encode(&m, enc, sizeof(enc)),
			MP_WIRE_HDR_SIZE + 12);
	/* a too-long string in a field the op does not carry is ignored */
	memset(m.name, 'x', sizeof(m.name));
	CU_ASSERT_EQUAL(mp_wire_encode(&m, enc, sizeof(enc)),
			MP_WIRE_HDR_SIZE + 12);
}

/* Truncated at every byte: "need more", never a frame, never an error. */
static void test_truncated(void)
{
	static const struct {
		unsigned op;
		uint32_t datalen;
		int max;
	} frames[] = {
		{MP_OP_CH_INFO, 0, 1}, {MP_OP_CH_INFO, 0, 0},
		{MP_OP_HELLO, 0, 0},   {MP_OP_BDELIVER, 300, 0},
		{MP_OP_BSEND, 0, 0},   {MP_OP_PING, 0, 0},
		{MP_OP_REPLY, 1, 0},   {MP_OP_CH_CREATE, 0, 1},
	};
	struct mp_wire_msg m, got;
	struct mp_wire_hdr h;

	for (size_t i = 0; i < sizeof(frames) / sizeof(frames[0]); i++) {
		int n;

		if (frames[i].max) {
			msg_max(&m, frames[i].op);
			m.datalen = frames[i].datalen;
		} else {
			msg_mixed(&m, frames[i].op, frames[i].datalen);
		}
		n = mp_wire_encode(&m, enc, sizeof(enc));
		CU_ASSERT_FATAL(n > 0);
		for (int k = 0; k < n; k++) {
			int r = decode_exact(enc, (size_t)k, MAX_DATA, &got);

			CU_ASSERT_EQUAL(r, 0);
			r = decode_hdr_exact(enc, (size_t)k, MAX_DATA, &h);
			CU_ASSERT_EQUAL(
				r, k < MP_WIRE_HDR_SIZE ? 0 : MP_WIRE_HDR_SIZE);
		}
		CU_ASSERT_EQUAL(decode_exact(enc, (size_t)n, MAX_DATA, &got),
				n);
	}
	/* with nothing at all */
	CU_ASSERT_EQUAL(mp_wire_decode(enc, 0, MAX_DATA, &got), 0);
	CU_ASSERT_EQUAL(mp_wire_decode_hdr(enc, 0, MAX_DATA, &h), 0);
}

/* A header, optionally followed by payload bytes. */
static size_t put_hdr(uint8_t *p, unsigned version, unsigned op, uint32_t len)
{
	memset(p, 0, MP_WIRE_HDR_SIZE);
	p[0] = (uint8_t)version;
	p[1] = (uint8_t)op;
	p[8] = (uint8_t)(len >> 24);
	p[9] = (uint8_t)(len >> 16);
	p[10] = (uint8_t)(len >> 8);
	p[11] = (uint8_t)len;
	return MP_WIRE_HDR_SIZE;
}

static void test_frame_length_over_limit(void)
{
	static uint8_t b[MP_WIRE_HDR_SIZE + MP_WIRE_FIXED_MAX + 1024];
	struct mp_wire_hdr h;
	struct mp_wire_msg m;

	/* 4 GiB announced, 12 bytes given: refused from the header alone */
	for (unsigned op = 1; op < MP_OP_MAX_; op++) {
		put_hdr(b, 1, op, UINT32_MAX);
		CU_ASSERT_EQUAL(decode_hdr_exact(b, 12, MAX_DATA, &h),
				-EMSGSIZE);
		CU_ASSERT_EQUAL(h.len, UINT32_MAX);
		CU_ASSERT_EQUAL(h.op, op);
		CU_ASSERT_EQUAL(decode_exact(b, 12, MAX_DATA, &m), -EMSGSIZE);
		/* even when the caller allows everything: the sum does not
		 * wrap, and a frame the int return cannot hold is refused */
		CU_ASSERT_EQUAL(decode_hdr_exact(b, 12, UINT32_MAX, &h),
				-EMSGSIZE);
		CU_ASSERT_EQUAL(decode_exact(b, 12, UINT32_MAX, &m), -EMSGSIZE);
	}
	/* wrap-around bait: max_data + FIXED_MAX overflows 32 bits */
	put_hdr(b, 1, MP_OP_SEND, 100);
	CU_ASSERT_EQUAL(decode_hdr_exact(b, 12, UINT32_MAX - 50, &h),
			MP_WIRE_HDR_SIZE);
	put_hdr(b, 1, MP_OP_SEND, (uint32_t)INT_MAX - 11);
	CU_ASSERT_EQUAL(decode_hdr_exact(b, 12, UINT32_MAX, &h), -EMSGSIZE);
	put_hdr(b, 1, MP_OP_SEND, (uint32_t)INT_MAX - 12);
	CU_ASSERT_EQUAL(decode_hdr_exact(b, 12, UINT32_MAX, &h),
			MP_WIRE_HDR_SIZE);
	CU_ASSERT_EQUAL(decode_exact(b, 12, UINT32_MAX, &m), 0);

	/* non-data ops: the limit is MP_WIRE_FIXED_MAX, whatever max_data */
	put_hdr(b, 1, MP_OP_RESULT, MP_WIRE_FIXED_MAX + 1);
	CU_ASSERT_EQUAL(decode_hdr_exact(b, 12, MAX_DATA, &h), -EMSGSIZE);
	CU_ASSERT_EQUAL(decode_exact(b, 12, MAX_DATA, &m), -EMSGSIZE);
	put_hdr(b, 1, MP_OP_RESULT, MP_WIRE_FIXED_MAX);
	CU_ASSERT_EQUAL(decode_hdr_exact(b, 12, MAX_DATA, &h),
			MP_WIRE_HDR_SIZE);
	CU_ASSERT_EQUAL(decode_exact(b, 12, MAX_DATA, &m), 0);

	/* data ops: max_data + MP_WIRE_FIXED_MAX */
	put_hdr(b, 1, MP_OP_BDELIVER, 1000 + MP_WIRE_FIXED_MAX + 1);
	CU_ASSERT_EQUAL(decode_hdr_exact(b, 12, 1000, &h), -EMSGSIZE);
	CU_ASSERT_EQUAL(decode_exact(b, 12, 1000, &m), -EMSGSIZE);
	put_hdr(b, 1, MP_OP_BDELIVER, 1000 + MP_WIRE_FIXED_MAX);
	CU_ASSERT_EQUAL(decode_hdr_exact(b, 12, 1000, &h), MP_WIRE_HDR_SIZE);
	CU_ASSERT_EQUAL(decode_exact(b, 12, 1000, &m), 0);
	put_hdr(b, 1, MP_OP_SEND, MP_WIRE_FIXED_MAX + 1);
	CU_ASSERT_EQUAL(decode_hdr_exact(b, 12, 0, &h), -EMSGSIZE);
}

/* The data field alone over max_data, though the header passed. */
static void test_data_over_max(void)
{
	struct mp_wire_msg m, got;
	int n;

	msg_mixed(&m, MP_OP_SEND, 101);
	n = mp_wire_encode(&m, enc, sizeof(enc));
	CU_ASSERT_FATAL(n > 0);
	CU_ASSERT_EQUAL(decode_exact(enc, (size_t)n, 100, &got), -EMSGSIZE);
	CU_ASSERT_EQUAL(decode_exact(enc, (size_t)n, 101, &got), n);
	m.datalen = 100;
	n = mp_wire_encode(&m, enc, sizeof(enc));
	CU_ASSERT_EQUAL(decode_exact(enc, (size_t)n, 100, &got), n);
	/* max_data 0: only empty data passes */
	m.datalen = 1;
	n = mp_wire_encode(&m, enc, sizeof(enc));
	CU_ASSERT_EQUAL(decode_exact(enc, (size_t)n, 0, &got), -EMSGSIZE);
	m.datalen = 0;
	n = mp_wire_encode(&m, enc, sizeof(enc));
	CU_ASSERT_EQUAL(decode_exact(enc, (size_t)n, 0, &got), n);
	/* 64 KiB + 1 with max 64 KiB */
	msg_max(&m, MP_OP_REPLY);
	n = mp_wire_encode(&m, enc, sizeof(enc));
	CU_ASSERT_EQUAL(decode_exact(enc, (size_t)n, MAX_DATA - 1, &got),
			-EMSGSIZE);
	CU_ASSERT_EQUAL(decode_exact(enc, (size_t)n, MAX_DATA, &got), n);
}

static void test_bad_version_and_op(void)
{
	static const unsigned versions[] = {0, 2, 0x81, 255};
	static const unsigned bad_ops[] = {0, MP_OP_MAX_, MP_OP_MAX_ + 1, 128,
					   255};
	struct mp_wire_hdr h;
	struct mp_wire_msg m;
	uint8_t b[MP_WIRE_HDR_SIZE];

	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
		put_hdr(b, versions[i], MP_OP_PING, 0);
		CU_ASSERT_EQUAL(decode_hdr_exact(b, 12, MAX_DATA, &h), -EPROTO);
		CU_ASSERT_EQUAL(h.version, versions[i]);
		CU_ASSERT_EQUAL(decode_exact(b, 12, MAX_DATA, &m), -EPROTO);
		/* version is checked before length */
		put_hdr(b, versions[i], MP_OP_PING, UINT32_MAX);
		CU_ASSERT_EQUAL(decode_exact(b, 12, MAX_DATA, &m), -EPROTO);
	}
	for (size_t i = 0; i < sizeof(bad_ops) / sizeof(bad_ops[0]); i++) {
		put_hdr(b, 1, bad_ops[i], 0);
		CU_ASSERT_EQUAL(decode_hdr_exact(b, 12, MAX_DATA, &h), -EPROTO);
		CU_ASSERT_EQUAL(decode_exact(b, 12, MAX_DATA, &m), -EPROTO);
		put_hdr(b, 1, bad_ops[i], UINT32_MAX);
		CU_ASSERT_EQUAL(decode_hdr_exact(b, 12, MAX_DATA, &h), -EPROTO);
	}
	/* every valid op with an empty payload where that is right */
	put_hdr(b, 1, MP_OP_CANCEL, 0);
	CU_ASSERT_EQUAL(decode_exact(b, 12, MAX_DATA, &m), 12);
	CU_ASSERT_EQUAL(m.op, MP_OP_CANCEL);
}

/*
 * Encode a valid CH_INFO (all three strings), then patch the payload to
 * make one string wrong.  Offsets: 20 bytes of integers, then name.
 */
static int ch_info_frame(struct mp_wire_msg *m)
{
	msg_mixed(m, MP_OP_CH_INFO, 0);
	strcpy(m->name, "abc");
	strcpy(m->id, "de");
	strcpy(m->addr, "fgh");
	return mp_wire_encode(m, enc, sizeof(enc));
}

#define OFF_NAME (MP_WIRE_HDR_SIZE + 20)
#define OFF_ID	 (OFF_NAME + 4)
#define OFF_ADDR (OFF_ID + 3)

static void set_len(uint8_t *b, uint32_t len)
{
	b[8] = (uint8_t)(len >> 24);
	b[9] = (uint8_t)(len >> 16);
	b[10] = (uint8_t)(len >> 8);
	b[11] = (uint8_t)len;
}

static void test_string_over_field(void)
{
	static const struct {
		unsigned op, fixed; /* op carrying only the one string */
		unsigned max;
	} cases[] = {
		{MP_OP_CH_DELETE, 0, MP_WIRE_NAME_MAX},
		{MP_OP_EVENT, 20, MP_WIRE_ID_MAX},
		{MP_OP_WELCOME, 16, MP_WIRE_ADDR_MAX},
	};
	static uint8_t b[MP_WIRE_HDR_SIZE + 512];
	struct mp_wire_msg m;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (unsigned n = 0; n <= 255; n++) {
			uint32_t len = cases[i].fixed + 1 + n;
			size_t off = MP_WIRE_HDR_SIZE + cases[i].fixed;
			int r, want;

			put_hdr(b, 1, cases[i].op, len);
			memset(b + MP_WIRE_HDR_SIZE, 0x11, len);
			b[off] = (uint8_t)n;
			r = decode_exact(b, MP_WIRE_HDR_SIZE + len, MAX_DATA,
					 &m);
			/* CU_ASSERT is a block: pick the answer first */
			if (n <= cases[i].max)
				want = (int)(12 + len);
			else if (len > MP_WIRE_FIXED_MAX)
				want = -EMSGSIZE;
			else
				want = -EPROTO;
			CU_ASSERT_EQUAL(r, want);
		}
	}
	/* same in a frame where the string is followed by others */
	for (int which = 0; which < 3; which++) {
		static const size_t off[] = {OFF_NAME, OFF_ID, OFF_ADDR};
		static const uint8_t over[] = {MP_WIRE_NAME_MAX + 1,
					       MP_WIRE_ID_MAX + 1,
					       MP_WIRE_ADDR_MAX + 1};
		int n = ch_info_frame(&m);

		CU_ASSERT_FATAL(n > 0);
		enc[off[which]] = over[which];
		CU_ASSERT_EQUAL(decode_exact(enc, (size_t)n, MAX_DATA, &m),
				-EPROTO);
	}
}

static void test_nul_in_string(void)
{
	static const size_t off[] = {OFF_NAME, OFF_ID, OFF_ADDR};
	struct mp_wire_msg m;

	for (int which = 0; which < 3; which++) {
		uint8_t strlen_byte;
		int n = ch_info_frame(&m);

		CU_ASSERT_FATAL(n > 0);
		strlen_byte = enc[off[which]];
		/* a NUL at each position of the string */
		for (unsigned k = 0; k < strlen_byte; k++) {
			uint8_t save = enc[off[which] + 1 + k];

			enc[off[which] + 1 + k] = 0;
			CU_ASSERT_EQUAL(
				decode_exact(enc, (size_t)n, MAX_DATA, &m),
				-EPROTO);
			enc[off[which] + 1 + k] = save;
		}
		CU_ASSERT_EQUAL(decode_exact(enc, (size_t)n, MAX_DATA, &m), n);
	}
}

/* The header's len cuts the payload short of what the op needs. */
static void test_missing_payload_bytes(void)
{
	struct mp_wire_msg m;
	int n;

	for (unsigned op = 1; op < MP_OP_MAX_; op++) {
		unsigned f = mp_wire_fields(op);

		msg_mixed(&m, op, 0);
		n = mp_wire_encode(&m, enc, sizeof(enc));
		CU_ASSERT_FATAL(n > 0);
		/* every shorter len, with exactly that many bytes given */
		for (int len = n - MP_WIRE_HDR_SIZE - 1; len >= 0; len--) {
			int r;

			set_len(enc, (uint32_t)len);
			r = decode_exact(enc, MP_WIRE_HDR_SIZE + (size_t)len,
					 MAX_DATA, &m);
			if (f & MP_WF_DATA) {
				/* the shortfall becomes the data, except
				 * where an integer is cut */
				CU_ASSERT(r == -EPROTO ||
					  r == MP_WIRE_HDR_SIZE + len);
				if (f == (MP_WF_A | MP_WF_DATA))
					CU_ASSERT_EQUAL(r, len < 4 ? -EPROTO
								   : 12 + len);
			} else {
				CU_ASSERT_EQUAL(r, -EPROTO);
			}
		}
	}
	/* a string's length byte reaching past the frame */
	n = ch_info_frame(&m);
	enc[OFF_ADDR] = 4; /* "fgh" is 3 bytes and ends the frame */
	CU_ASSERT_EQUAL(decode_exact(enc, (size_t)n, MAX_DATA, &m), -EPROTO);
	/* ...even when more bytes follow in the buffer */
	enc[n] = 'i';
	CU_ASSERT_EQUAL(decode_exact(enc, (size_t)n + 1, MAX_DATA, &m),
			-EPROTO);
}

static void test_trailing_bytes(void)
{
	struct mp_wire_msg m;

	for (unsigned op = 1; op < MP_OP_MAX_; op++) {
		unsigned f = mp_wire_fields(op);
		int n;

		msg_mixed(&m, op, 0);
		n = mp_wire_encode(&m, enc, sizeof(enc));
		CU_ASSERT_FATAL(n > 0);
		for (int extra = 1; extra <= 3; extra++) {
			int r;

			enc[n + extra - 1] = (uint8_t)(0x40 + extra);
			set_len(enc, (uint32_t)(n - MP_WIRE_HDR_SIZE + extra));
			r = decode_exact(enc, (size_t)(n + extra), MAX_DATA,
					 &m);
			if (f & MP_WF_DATA) {
				/* trailing bytes are the data */
				CU_ASSERT_EQUAL(r, n + extra);
				CU_ASSERT_EQUAL(m.datalen, (uint32_t)extra);
			} else {
				CU_ASSERT_EQUAL(r, -EPROTO);
			}
		}
	}
}

/* Several frames in one buffer, decoded one after the other. */
static void test_back_to_back(void)
{
	static uint8_t b[16384];
	struct mp_wire_msg sent[3 * MP_OP_MAX_], got;
	size_t off = 0, nsent = 0;
	int sizes[3 * MP_OP_MAX_];

	for (int round = 0; round < 3; round++) {
		for (unsigned op = 1; op < MP_OP_MAX_; op++) {
			struct mp_wire_msg *m = &sent[nsent];

			if (round == 0)
				msg_min(m, op);
			else if (round == 1)
				msg_mixed(m, op, 17);
			else
				msg_max(m, op);
			if (round == 2)
				m->datalen = 200;
			m->reqid = (uint32_t)nsent;
			sizes[nsent] =
				mp_wire_encode(m, b + off, sizeof(b) - off);
			CU_ASSERT_FATAL(sizes[nsent] > 0);
			off += (size_t)sizes[nsent];
			nsent++;
		}
	}
	{
		uint8_t *copy = malloc(off);
		size_t pos = 0;

		CU_ASSERT_FATAL(copy != NULL);
		memcpy(copy, b, off);
		for (size_t i = 0; i < nsent; i++) {
			int r = mp_wire_decode(copy + pos, off - pos, MAX_DATA,
					       &got);

			CU_ASSERT_EQUAL(r, sizes[i]);
			if (r != sizes[i])
				break;
			check_same(&sent[i], &got);
			if (got.datalen)
				CU_ASSERT_PTR_EQUAL(
					got.data, copy + pos + r - got.datalen);
			pos += (size_t)r;
		}
		CU_ASSERT_EQUAL(pos, off);
		CU_ASSERT_EQUAL(
			mp_wire_decode(copy + pos, off - pos, MAX_DATA, &got),
			0);
		free(copy);
	}
}

static void test_encode_errors(void)
{
	static uint8_t small[MP_WIRE_HDR_SIZE + MP_WIRE_FIXED_MAX + 64];
	struct mp_wire_msg m;
	int n;

	/* unknown op */
	msg_min(&m, 0);
	CU_ASSERT_EQUAL(mp_wire_encode(&m, enc, sizeof(enc)), -EINVAL);
	CU_ASSERT_EQUAL(mp_wire_encode_head(&m, enc, sizeof(enc)), -EINVAL);
	CU_ASSERT_EQUAL(mp_wire_size(&m), 0);
	for (unsigned op = MP_OP_MAX_; op <= 255; op++) {
		m.op = (uint8_t)op;
		CU_ASSERT_EQUAL(mp_wire_encode(&m, enc, sizeof(enc)), -EINVAL);
		CU_ASSERT_EQUAL(mp_wire_size(&m), 0);
	}

	/* strings one over their field: filled to the last byte of the
	 * array, so not terminated inside it */
	msg_min(&m, MP_OP_CH_INFO);
	memset(m.name, 'n', sizeof(m.name));
	CU_ASSERT_EQUAL(mp_wire_encode(&m, enc, sizeof(enc)), -EINVAL);
	CU_ASSERT_EQUAL(mp_wire_encode_head(&m, enc, sizeof(enc)), -EINVAL);
	CU_ASSERT_EQUAL(mp_wire_size(&m), 0);
	msg_min(&m, MP_OP_CH_INFO);
	memset(m.id, 'i', sizeof(m.id));
	CU_ASSERT_EQUAL(mp_wire_encode(&m, enc, sizeof(enc)), -EINVAL);
	msg_min(&m, MP_OP_CH_INFO);
	memset(m.addr, 'a', sizeof(m.addr));
	CU_ASSERT_EQUAL(mp_wire_encode(&m, enc, sizeof(enc)), -EINVAL);
	/* -EINVAL wins over -ENOBUFS */
	CU_ASSERT_EQUAL(mp_wire_encode(&m, enc, 0), -EINVAL);

	/* data promised but no pointer */
	msg_min(&m, MP_OP_SEND);
	m.data = NULL;
	m.datalen = 1;
	CU_ASSERT_EQUAL(mp_wire_encode(&m, enc, sizeof(enc)), -EINVAL);
	/* encode_head does not need it */
	CU_ASSERT_EQUAL(mp_wire_encode_head(&m, enc, sizeof(enc)),
			MP_WIRE_HDR_SIZE + 4);

	/* a frame the int return cannot hold (and no decoder accepts) */
	msg_min(&m, MP_OP_BDELIVER);
	m.datalen = UINT32_MAX;
	CU_ASSERT_EQUAL(mp_wire_encode_head(&m, enc, sizeof(enc)), -EINVAL);
	CU_ASSERT_EQUAL(mp_wire_size(&m), 0);
	m.datalen = (uint32_t)INT_MAX;
	CU_ASSERT_EQUAL(mp_wire_encode_head(&m, enc, sizeof(enc)), -EINVAL);
	/* the largest one that fits: head is fine, the buffer is not */
	m.datalen = (uint32_t)INT_MAX - (MP_WIRE_HDR_SIZE + 12 + 8 + 1);
	n = mp_wire_encode_head(&m, enc, sizeof(enc));
	CU_ASSERT_EQUAL(n, MP_WIRE_HDR_SIZE + 12 + 8 + 1);
	CU_ASSERT_EQUAL(mp_wire_size(&m), (size_t)INT_MAX);
	CU_ASSERT_EQUAL(mp_wire_encode(&m, enc, sizeof(enc)), -ENOBUFS);
	/* and its header announces exactly that length */
	CU_ASSERT_EQUAL(((uint32_t)enc[8] << 24 | (uint32_t)enc[9] << 16 |
			 (uint32_t)enc[10] << 8 | enc[11]),
			(uint32_t)INT_MAX - MP_WIRE_HDR_SIZE);

	/* every buffer one byte short of the frame, or of its head */
	for (unsigned op = 1; op < MP_OP_MAX_; op++) {
		int h;

		msg_max(&m, op);
		m.datalen = 64;
		n = mp_wire_encode(&m, small, sizeof(small));
		h = mp_wire_encode_head(&m, small, sizeof(small));
		CU_ASSERT_FATAL(n > 0 && h > 0);
		for (int k = 0; k < n; k++)
			CU_ASSERT_EQUAL(mp_wire_encode(&m, small, (size_t)k),
					-ENOBUFS);
		for (int k = 0; k < h; k++)
			CU_ASSERT_EQUAL(
				mp_wire_encode_head(&m, small, (size_t)k),
				-ENOBUFS);
	}
	/* a refused encode writes nothing */
	memset(small, 0xEE, sizeof(small));
	msg_max(&m, MP_OP_CH_INFO);
	CU_ASSERT_EQUAL(mp_wire_encode(&m, small, 100), -ENOBUFS);
	for (size_t i = 0; i < sizeof(small); i++)
		if (small[i] != 0xEE) {
			CU_FAIL("encode wrote into a buffer it refused");
			break;
		}
}

/* Encoding into an exact-size heap buffer (ASan: no write past it). */
static void test_encode_exact_buffer(void)
{
	struct mp_wire_msg m;

	for (unsigned op = 1; op < MP_OP_MAX_; op++) {
		size_t size;
		uint8_t *b;

		msg_max(&m, op);
		size = mp_wire_size(&m);
		b = malloc(size);
		CU_ASSERT_FATAL(b != NULL);
		CU_ASSERT_EQUAL(mp_wire_encode(&m, b, size), (int)size);
		CU_ASSERT_EQUAL(mp_wire_decode(b, size, MAX_DATA, &m),
				(int)size);
		free(b);
	}
}

/*
 * Random corruption of valid frames: whatever the decoder makes of it, it
 * stays inside the input, and what it accepts re-encodes to the very same
 * bytes (the encoding is canonical).
 */
static void test_random_corruption(void)
{
	static uint8_t b[1024], re[1024];
	struct mp_wire_msg m;
	unsigned accepted = 0;

	for (int iter = 0; iter < 200000; iter++) {
		unsigned op = 1 + mp_test_rand() % (MP_OP_MAX_ - 1);
		int n, r, flips = 1 + (int)(mp_test_rand() % 3);
		size_t avail;

		msg_mixed(&m, op, mp_test_rand() % 64);
		n = mp_wire_encode(&m, b, sizeof(b));
		CU_ASSERT_FATAL(n > 0);
		for (int i = 0; i < flips; i++)
			b[mp_test_rand() % (unsigned)n] =
				(uint8_t)mp_test_rand();
		avail = (size_t)n - mp_test_rand() % 3;
		r = mp_wire_decode(b, avail, 1000, &m);
		if (r < 0) {
			if (r != -EPROTO && r != -EMSGSIZE) {
				CU_FAIL("unexpected error code");
				break;
			}
			continue;
		}
		if (r == 0)
			continue;
		accepted++;
		if ((size_t)r > avail) {
			CU_FAIL("decoded frame larger than its input");
			break;
		}
		if (mp_wire_encode(&m, re, sizeof(re)) != r ||
		    memcmp(re, b, (size_t)r) != 0) {
			CU_FAIL("accepted frame does not re-encode the same");
			break;
		}
	}
	CU_ASSERT(accepted > 0);
}

static const struct mp_test_case tests[] = {
	{"field table matches the protocol", test_field_table},
	{"byte layout of known frames", test_byte_layout},
	{"round trip, every op, every field at max", test_round_trip_max},
	{"round trip, every op, every field at min", test_round_trip_min},
	{"round trip of edge integer and byte values", test_round_trip_values},
	{"encode_head plus data equals encode", test_encode_head},
	{"fields an op lacks: ignored, decoded as zero", test_unused_fields},
	{"truncated frame at every byte needs more", test_truncated},
	{"frame length over limit", test_frame_length_over_limit},
	{"data over max_data", test_data_over_max},
	{"bad version or unknown op", test_bad_version_and_op},
	{"string length over its field", test_string_over_field},
	{"NUL inside a string", test_nul_in_string},
	{"payload shorter than its fields", test_missing_payload_bytes},
	{"trailing bytes on an op without data", test_trailing_bytes},
	{"frames back to back in one buffer", test_back_to_back},
	{"encode errors: EINVAL, ENOBUFS", test_encode_errors},
	{"encode into an exact-size buffer", test_encode_exact_buffer},
	{"random corruption of valid frames", test_random_corruption},
	MP_TEST_END};

int main(void)
{
	mp_test_init("test_wire", 60);
	for (size_t i = 0; i < sizeof(data_max); i++)
		data_max[i] = (uint8_t)(i * 131 + 7);
	return mp_test_main("wire", tests);
}
