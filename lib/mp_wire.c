/*
 * mp_wire — the messip wire codec (see mp_wire.h for the frame format).
 *
 * Pure: no I/O, no allocation, no logging, no global state but the
 * read-only operation table below.
 *
 * Invariants the decoder keeps, whatever the input:
 *   - it never reads a byte at or past buf + avail, and never a payload
 *     byte past the frame's own end (buf + 12 + len);
 *   - it parses a payload only once the whole frame is present, so a
 *     truncated frame is always "need more" (0), never a frame or an error
 *     about a field;
 *   - a successful return n satisfies 12 <= n <= avail and n <= INT_MAX;
 *   - the accepted encoding is canonical: re-encoding a decoded frame gives
 *     back exactly the same bytes (the fuzz target checks this).
 *
 * Frames larger than INT_MAX bytes cannot be represented by the int return
 * values of the API, so both directions also refuse them (decode: -EMSGSIZE
 * on the header, whatever max_data says; encode: -EINVAL).  With the
 * 64 KiB messages messip carries this never matters in practice; it only
 * keeps the arithmetic honest for a caller passing max_data = UINT32_MAX.
 *
 * Field table, derived from the operation list in mp_wire.h.  Each row
 * names the fields the payload carries, always in the fixed order
 * a, b, c, u, name, id, addr, data:
 *
 *   op             a b c u name id addr data
 *   HELLO          x . x x  x   x   .    .   (lib->mgr: id,a,u;
 *                                             cli->srv: name,id,c)
 *   WELCOME        x x . x  .   .   x    .
 *   RESULT         x x x x  .   .   .    .
 *   CH_CREATE      x . . x  x   .   x    x   (data: the channel ticket)
 *   CH_DELETE      . . . .  x   .   .    .
 *   CH_CONNECT     x . . .  x   .   .    .
 *   CH_INFO        x x x x  x   x   x    x   (data: the channel ticket)
 *   CH_DISCONNECT  . x . .  .   .   .    .
 *   BSEND          x x x .  .   .   .    x
 *   BDELIVER       x x x x  .   x   .    x
 *   BACK           . x . x  .   .   .    .
 *   EVENT          x x x x  .   x   .    .
 *   DEATH_NOTIFY   x . . .  .   .   .    .
 *   PING, PONG     . . . .  .   .   .    .
 *   BYE, CANCEL    . . . .  .   .   .    .
 *   SEND           x . . .  .   .   .    x
 *   REPLY          x . . .  .   .   .    x
 *   CHALLENGE      . . . .  .   .   .    x
 *   AUTH           x . . .  .   .   .    x
 *
 * HELLO serves two connections with different fields; it carries the union
 * of both (unused ones are sent as 0 / empty), which keeps one layout per
 * operation and costs at most a few bytes once per connection.
 *
 * The hot path (decode, encode) uses one table lookup per frame and plain
 * flag tests per field: no per-field callbacks.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#include "mp_wire.h"

/* Internal marker: the op exists (PING etc. have no field bits at all). */
#define MP_WF_KNOWN 0x100

#define MP_WF_INTS (MP_WF_A | MP_WF_B | MP_WF_C | MP_WF_U)

/* Largest frame the int return values can describe. */
#define MP_WIRE_FRAME_MAX ((uint64_t)INT_MAX)

struct op_row {
	uint16_t fields;  /* MP_WF_* | MP_WF_KNOWN */
	uint8_t intbytes; /* bytes of a, b, c, u present: checked at once */
	const char *name;
};

#define INTBYTES(f)                                                            \
	((((f)&MP_WF_A) ? 4 : 0) + (((f)&MP_WF_B) ? 4 : 0) +                   \
	 (((f)&MP_WF_C) ? 4 : 0) + (((f)&MP_WF_U) ? 8 : 0))
#define ROW(f, nm)                                                             \
	{                                                                      \
		(f) | MP_WF_KNOWN, INTBYTES(f), nm                             \
	}

static const struct op_row op_table[MP_OP_MAX_] = {
	[MP_OP_HELLO] = ROW(MP_WF_A | MP_WF_C | MP_WF_U | MP_WF_NAME | MP_WF_ID,
			    "HELLO"),
	[MP_OP_WELCOME] =
		ROW(MP_WF_A | MP_WF_B | MP_WF_U | MP_WF_ADDR, "WELCOME"),
	[MP_OP_RESULT] = ROW(MP_WF_A | MP_WF_B | MP_WF_C | MP_WF_U, "RESULT"),
	[MP_OP_CH_CREATE] =
		ROW(MP_WF_A | MP_WF_U | MP_WF_NAME | MP_WF_ADDR | MP_WF_DATA,
		    "CH_CREATE"),
	[MP_OP_CH_DELETE] = ROW(MP_WF_NAME, "CH_DELETE"),
	[MP_OP_CH_CONNECT] = ROW(MP_WF_A | MP_WF_NAME, "CH_CONNECT"),
	[MP_OP_CH_INFO] = ROW(MP_WF_A | MP_WF_B | MP_WF_C | MP_WF_U |
				      MP_WF_NAME | MP_WF_ID | MP_WF_ADDR |
				      MP_WF_DATA,
			      "CH_INFO"),
	[MP_OP_CH_DISCONNECT] = ROW(MP_WF_B, "CH_DISCONNECT"),
	[MP_OP_BSEND] = ROW(MP_WF_A | MP_WF_B | MP_WF_C | MP_WF_DATA, "BSEND"),
	[MP_OP_BDELIVER] = ROW(MP_WF_A | MP_WF_B | MP_WF_C | MP_WF_U |
				       MP_WF_ID | MP_WF_DATA,
			       "BDELIVER"),
	[MP_OP_BACK] = ROW(MP_WF_B | MP_WF_U, "BACK"),
	[MP_OP_EVENT] =
		ROW(MP_WF_A | MP_WF_B | MP_WF_C | MP_WF_U | MP_WF_ID, "EVENT"),
	[MP_OP_DEATH_NOTIFY] = ROW(MP_WF_A, "DEATH_NOTIFY"),
	[MP_OP_PING] = ROW(0, "PING"),
	[MP_OP_PONG] = ROW(0, "PONG"),
	[MP_OP_BYE] = ROW(0, "BYE"),
	[MP_OP_SEND] = ROW(MP_WF_A | MP_WF_DATA, "SEND"),
	[MP_OP_REPLY] = ROW(MP_WF_A | MP_WF_DATA, "REPLY"),
	[MP_OP_CANCEL] = ROW(0, "CANCEL"),
	[MP_OP_CHALLENGE] = ROW(MP_WF_DATA, "CHALLENGE"),
	[MP_OP_AUTH] = ROW(MP_WF_A | MP_WF_DATA, "AUTH"),
};

/* Row bits of op, 0 when op is out of range or a hole (op 0). */
static inline unsigned op_bits(unsigned op)
{
	return op < MP_OP_MAX_ ? op_table[op].fields : 0;
}

unsigned mp_wire_fields(unsigned op)
{
	return op_bits(op) & ~(unsigned)MP_WF_KNOWN;
}

const char *mp_wire_op_name(unsigned op)
{
	return op_bits(op) ? op_table[op].name : "?";
}

/* Big-endian loads and stores on unaligned bytes; compilers turn these
 * into one load/store plus a byte swap. */
static inline uint16_t get16(const uint8_t *p)
{
	return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static inline uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static inline uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static inline void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

/* Header checks shared by decode_hdr and decode; h is filled first so a
 * caller can log what it refused.  Returns the row bits or -errno. */
static inline int check_hdr(const uint8_t *p, uint32_t max_data,
			    struct mp_wire_hdr *h)
{
	unsigned bits;
	uint64_t limit;

	h->version = p[0];
	h->op = p[1];
	h->flags = get16(p + 2);
	h->reqid = get32(p + 4);
	h->len = get32(p + 8);
	bits = op_bits(h->op);
	if (h->version != MP_WIRE_VERSION || !bits)
		return -EPROTO;
	/* 64-bit sum: max_data may be UINT32_MAX. */
	limit = MP_WIRE_FIXED_MAX;
	if (bits & MP_WF_DATA)
		limit += max_data;
	if (limit > MP_WIRE_FRAME_MAX - MP_WIRE_HDR_SIZE)
		limit = MP_WIRE_FRAME_MAX - MP_WIRE_HDR_SIZE;
	if (h->len > limit)
		return -EMSGSIZE;
	return (int)bits;
}

int mp_wire_decode_hdr(const void *buf, size_t avail, uint32_t max_data,
		       struct mp_wire_hdr *h)
{
	int rc;

	if (avail < MP_WIRE_HDR_SIZE)
		return 0;
	rc = check_hdr(buf, max_data, h);
	return rc < 0 ? rc : MP_WIRE_HDR_SIZE;
}

/*
 * One string field at *pp, not past end: length byte, then that many
 * bytes without NUL, at most max.  Copies into dst (zeroed by the caller,
 * so the terminator is already there).
 */
static inline int get_str(const uint8_t **pp, const uint8_t *end, char *dst,
			  size_t max)
{
	const uint8_t *p = *pp;
	size_t n;

	if (p == end)
		return -EPROTO;
	n = *p++;
	if (n > max || (size_t)(end - p) < n)
		return -EPROTO;
	if (memchr(p, 0, n))
		return -EPROTO;
	memcpy(dst, p, n);
	*pp = p + n;
	return 0;
}

int mp_wire_decode(const void *buf, size_t avail, uint32_t max_data,
		   struct mp_wire_msg *m)
{
	const uint8_t *p = buf, *end;
	struct mp_wire_hdr h;
	unsigned bits;
	int rc;

	if (avail < MP_WIRE_HDR_SIZE)
		return 0;
	rc = check_hdr(p, max_data, &h);
	if (rc < 0)
		return rc;
	bits = (unsigned)rc;
	/* len <= INT_MAX - 12 (check_hdr), so no overflow either way. */
	if (avail - MP_WIRE_HDR_SIZE < h.len)
		return 0;

	/* Zero every field: those the op does not carry read as 0 / "",
	 * each string copy below is already NUL-terminated, and no byte of
	 * an earlier frame survives in the struct.  Field by field rather
	 * than one memset of the struct: GCC turns that into "rep stos",
	 * whose start-up cost doubled the decode time of a small frame.
	 * A field added to struct mp_wire_msg must be zeroed here too. */
	m->a = m->b = m->c = 0;
	m->u = 0;
	m->data = NULL;
	m->datalen = 0;
	memset(m->name, 0, sizeof(m->name));
	memset(m->id, 0, sizeof(m->id));
	memset(m->addr, 0, sizeof(m->addr));
	m->op = h.op;
	m->flags = h.flags;
	m->reqid = h.reqid;
	p += MP_WIRE_HDR_SIZE;
	end = p + h.len;

	if (bits & MP_WF_INTS) {
		/* All integers at once: one length check for up to four. */
		if (h.len < op_table[h.op].intbytes)
			return -EPROTO;
		if (bits & MP_WF_A) {
			m->a = (int32_t)get32(p);
			p += 4;
		}
		if (bits & MP_WF_B) {
			m->b = (int32_t)get32(p);
			p += 4;
		}
		if (bits & MP_WF_C) {
			m->c = (int32_t)get32(p);
			p += 4;
		}
		if (bits & MP_WF_U) {
			m->u = get64(p);
			p += 8;
		}
	}
	if ((bits & MP_WF_NAME) &&
	    get_str(&p, end, m->name, MP_WIRE_NAME_MAX) < 0)
		return -EPROTO;
	if ((bits & MP_WF_ID) && get_str(&p, end, m->id, MP_WIRE_ID_MAX) < 0)
		return -EPROTO;
	if ((bits & MP_WF_ADDR) &&
	    get_str(&p, end, m->addr, MP_WIRE_ADDR_MAX) < 0)
		return -EPROTO;
	if (bits & MP_WF_DATA) {
		/* The header check allowed for the largest fixed part; a
		 * frame with fewer fixed bytes can still carry too much. */
		if ((size_t)(end - p) > max_data)
			return -EMSGSIZE;
		m->data = p;
		m->datalen = (uint32_t)(end - p);
	} else if (p != end) {
		return -EPROTO;
	}
	return (int)(MP_WIRE_HDR_SIZE + h.len);
}

/*
 * Sizes of m's frame: head (header and fixed fields) and total (with the
 * data), and the string lengths so they are measured once.  Returns the
 * row bits, or -EINVAL for an unknown op, a string longer than its field
 * (or not terminated inside it), or a frame over MP_WIRE_FRAME_MAX.
 */
struct sizes {
	size_t head, total;
	size_t nlen, ilen, alen;
};

static inline int measure(const struct mp_wire_msg *m, struct sizes *s)
{
	unsigned bits = op_bits(m->op);
	uint64_t total;

	if (!bits)
		return -EINVAL;
	s->head = MP_WIRE_HDR_SIZE + op_table[m->op].intbytes;
	s->nlen = s->ilen = s->alen = 0;
	/* strnlen bounded by the array: an unterminated field is refused
	 * rather than read past. */
	if (bits & MP_WF_NAME) {
		s->nlen = strnlen(m->name, sizeof(m->name));
		if (s->nlen > MP_WIRE_NAME_MAX)
			return -EINVAL;
		s->head += 1 + s->nlen;
	}
	if (bits & MP_WF_ID) {
		s->ilen = strnlen(m->id, sizeof(m->id));
		if (s->ilen > MP_WIRE_ID_MAX)
			return -EINVAL;
		s->head += 1 + s->ilen;
	}
	if (bits & MP_WF_ADDR) {
		s->alen = strnlen(m->addr, sizeof(m->addr));
		if (s->alen > MP_WIRE_ADDR_MAX)
			return -EINVAL;
		s->head += 1 + s->alen;
	}
	total = s->head;
	if (bits & MP_WF_DATA)
		total += m->datalen;
	if (total > MP_WIRE_FRAME_MAX)
		return -EINVAL;
	s->total = (size_t)total;
	return (int)bits;
}

size_t mp_wire_size(const struct mp_wire_msg *m)
{
	struct sizes s;

	return measure(m, &s) < 0 ? 0 : s.total;
}

static inline uint8_t *put_str(uint8_t *p, const char *str, size_t n)
{
	*p++ = (uint8_t)n;
	memcpy(p, str, n);
	return p + n;
}

/* Write header and fixed fields (s from measure(), buffer checked). */
static void write_head(const struct mp_wire_msg *m, unsigned bits,
		       const struct sizes *s, uint8_t *p)
{
	p[0] = MP_WIRE_VERSION;
	p[1] = m->op;
	put16(p + 2, m->flags);
	put32(p + 4, m->reqid);
	put32(p + 8, (uint32_t)(s->total - MP_WIRE_HDR_SIZE));
	p += MP_WIRE_HDR_SIZE;
	if (bits & MP_WF_A) {
		put32(p, (uint32_t)m->a);
		p += 4;
	}
	if (bits & MP_WF_B) {
		put32(p, (uint32_t)m->b);
		p += 4;
	}
	if (bits & MP_WF_C) {
		put32(p, (uint32_t)m->c);
		p += 4;
	}
	if (bits & MP_WF_U) {
		put64(p, m->u);
		p += 8;
	}
	if (bits & MP_WF_NAME)
		p = put_str(p, m->name, s->nlen);
	if (bits & MP_WF_ID)
		p = put_str(p, m->id, s->ilen);
	if (bits & MP_WF_ADDR)
		put_str(p, m->addr, s->alen);
}

int mp_wire_encode_head(const struct mp_wire_msg *m, void *buf, size_t bufsize)
{
	struct sizes s;
	int rc = measure(m, &s);

	if (rc < 0)
		return rc;
	if (bufsize < s.head)
		return -ENOBUFS;
	write_head(m, (unsigned)rc, &s, buf);
	return (int)s.head;
}

int mp_wire_encode(const struct mp_wire_msg *m, void *buf, size_t bufsize)
{
	struct sizes s;
	size_t dlen;
	int rc = measure(m, &s);

	if (rc < 0)
		return rc;
	dlen = s.total - s.head;
	if (dlen && !m->data)
		return -EINVAL;
	if (bufsize < s.total)
		return -ENOBUFS;
	write_head(m, (unsigned)rc, &s, buf);
	if (dlen)
		memcpy((uint8_t *)buf + s.head, m->data, dlen);
	return (int)s.total;
}
