/*
 * fuzz_ring — libFuzzer target for the MPSC record ring (shm/mp_ring.c),
 * with the input playing the other processes that share its memory;
 * linked with tests/fuzz_replay.c it replays tests/corpus/ring in
 * `make check`.
 *
 * The input is a program.  Its first byte picks one of a few fixed,
 * trusted geometries; the ring is formatted in an exact-size heap buffer,
 * and each following operation either calls the ring (push, pushv, peek,
 * release, pop, count, tail, reset, a second attach) with deadline 0,
 * makes a thread die holding the producers' lock (the next locker
 * repairs), or scribbles on the shared part as a misbehaving peer would:
 * any byte of the header outside the producers' lock, a header field set
 * or moved by a delta, any bytes of the data area.
 *
 * Checked, abort() on any violation (and ASan sees any access outside the
 * buffers: the ring's memory and every payload buffer are exact-size heap
 * blocks):
 *   - every call returns a documented error or a valid answer: lengths
 *     within max_payload, cursors moved by exactly one record, the tail by
 *     what was released, counts within the record limit;
 *   - while nothing that matters has been scribbled (writes to the free
 *     part of the data area, to padding, or to the wait flags and futex
 *     words do not count), the ring behaves exactly as a FIFO model of it:
 *     each record comes back with its fields, sequence number and payload,
 *     a push is refused only when the model is full, and its count is the
 *     model's records plus those taken since the handle last read the
 *     consumer's position (the upper bound mp_ring.h documents: that
 *     reading is modelled too);
 *   - after mp_ring_reset the ring serves again (the model restarts from
 *     the ring's tail).
 *
 * Out of scope: the pthread mutex bytes (header lines 1-2) are never
 * scribbled.  glibc may hang or abort on a mutex whose type bits are
 * garbage; that is mp_lock's and glibc's domain, as the banners of
 * mp_ring.c and tests/test_ring.c say.  The target knows the header's
 * layout as mp_ring.c documents it (field offsets below) and checks it
 * against the ring's behaviour at start-up, so a layout change is an
 * immediate, explicit failure rather than a silently weaker fuzzer.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "mp_fuzz.h"
#include "mp_lock.h"
#include "mp_ring.h"
#include "mp_time.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

#define FAIL(...) FZ_FAIL("fuzz_ring", __VA_ARGS__)

/* Header layout (struct mp_ring_sh in mp_ring.c), checked by layout_check. */
#define LOCK_OFF       64
#define LOCK_END       192
#define OFF_HEAD       192
#define OFF_HEAD_SEQ   200
#define OFF_TAIL       256
#define OFF_HEAD_CACHE 264
#define OFF_TAIL_SEQ   320
#define OFF_CONS_WAITING 384
#define OFF_PLAIN_PUBS 392

/* clang-format off */
static const struct field {
	uint16_t off, size;
} fields[] = {
	/* line 0: magic, version, data_bytes, max_records, max_payload,
	 * hdr_bytes */
	{0, 4}, {4, 4}, {8, 4}, {12, 4}, {16, 4}, {20, 4},
	/* head, head_seq; tail, head_cache; tail_seq */
	{192, 8}, {200, 8}, {256, 8}, {264, 8}, {320, 8},
	/* cons_waiting, data_futex, plain_pubs; prod_waiting, room_futex */
	{384, 4}, {388, 4}, {392, 4}, {448, 4}, {452, 4},
};
/* clang-format on */
#define NFIELDS (sizeof(fields) / sizeof(fields[0]))

/* Header bytes whose content the ring's correctness depends on (the rest
 * is padding, wait flags and futex words: scribbling them may cost a
 * useless wake-up, never a wrong answer). */
static int hdr_byte_matters(uint32_t off)
{
	/* head, head_seq, resets */
	return off < 24 || (off >= OFF_HEAD && off < OFF_HEAD + 24) ||
	       (off >= OFF_TAIL && off < OFF_HEAD_CACHE + 8) ||
	       (off >= OFF_TAIL_SEQ && off < OFF_TAIL_SEQ + 8);
}

static const struct geom {
	uint32_t data_bytes, max_records, max_payload;
} geoms[] = {
	{64, 1, 24},   /* one record fills the ring exactly */
	{512, 8, 200}, /* large records, wrap-around */
	{256, 32, 16}, /* bounded by bytes */
	{1024, 3, 64}, /* bounded by records */
};
#define NGEOMS (sizeof(geoms) / sizeof(geoms[0]))

#define MAXREC 48   /* more than any ring here can hold (<= 1024 / 40) */
#define MAXPAY 1024 /* more than any max_payload an attach can accept */

static inline uint32_t rec_size(uint32_t len)
{
	return (40u + len + 7u) & ~7u;
}

/* ---- the FIFO model, valid while `clean` ---- */

struct mrec {
	uint64_t pos, seq;
	uint32_t len, sender;
	int32_t type;
	char id[MP_RING_ID_LEN];
	uint8_t data[MAXPAY];
};

/* The producer side of the handle is modelled too (mp_ring.h): the
 * consumer position it read last, as the tail then and the records taken
 * since, which a push's count includes.  Valid while `clean`: only a
 * reset (it sets the handle's reading) or an attach makes a model. */
static struct model {
	int clean;
	int seq_known;
	uint64_t tail, next_seq;
	unsigned n;
	uint64_t v_tail;   /* tail as the handle read it */
	unsigned v_behind; /* records taken since that reading */
	int reread;        /* the last push woke a sleeper: read again */
	struct mrec rec[MAXREC];
} M;

static uint32_t u32_at(const void *base, size_t off)
{
	uint32_t v;

	memcpy(&v, (const uint8_t *)base + off, 4);
	return v;
}

static uint64_t m_head(void)
{
	if (!M.n)
		return M.tail;
	return M.rec[M.n - 1].pos + rec_size(M.rec[M.n - 1].len);
}

/* Index of the record starting at c, M.n for the head, -1 otherwise. */
static int m_index(uint64_t c)
{
	for (unsigned k = 0; k < M.n; k++)
		if (M.rec[k].pos == c)
			return (int)k;
	return c == m_head() ? (int)M.n : -1;
}

static void m_drop(unsigned k)
{
	memmove(&M.rec[0], &M.rec[k], (M.n - k) * sizeof(M.rec[0]));
	M.n -= k;
	M.v_behind += k;
	M.tail = M.n ? M.rec[0].pos : M.tail;
}

/* The handle reads the consumer's position now. */
static void m_view(void)
{
	M.v_tail = M.tail;
	M.v_behind = 0;
}

static void m_restart(mp_ring_t *r, int keep_seq)
{
	M.clean = 1;
	M.seq_known = keep_seq;
	M.tail = mp_ring_tail(r);
	M.n = 0;
	m_view(); /* a reset's and an init's handle know the position */
	M.reread = 0;
}

/* A popped or peeked record equals model record k. */
static void m_same(unsigned k, const struct mp_ring_rec *meta,
		   const uint8_t *buf, uint32_t maxlen, int rc)
{
	const struct mrec *x = &M.rec[k];
	uint32_t n = x->len < maxlen ? x->len : maxlen;

	if ((uint32_t)rc != x->len || meta->seq != x->seq ||
	    meta->type != x->type || meta->sender != x->sender ||
	    memcmp(meta->id, x->id, MP_RING_ID_LEN) != 0)
		FAIL("record %u: fields differ from what was pushed", k);
	if (n && memcmp(buf, x->data, n) != 0)
		FAIL("record %u: payload differs from what was pushed", k);
}

/* ---- checks common to every state ---- */

static void check_meta(const mp_ring_t *r, const struct mp_ring_rec *meta,
		       int rc)
{
	if ((uint32_t)rc > r->max_payload)
		FAIL("length %d over max_payload %u", rc, r->max_payload);
	if (meta->len != (uint32_t)rc)
		FAIL("meta->len %u, returned %d", meta->len, rc);
	if (memchr(meta->id, 0, MP_RING_ID_LEN) == NULL)
		FAIL("id not NUL-terminated");
}

/* ---- operations ---- */

enum {
	OP_PUSH,
	OP_PUSHV,
	OP_POP,
	OP_PEEK,
	OP_RELEASE,
	OP_COUNT,
	OP_RESET,
	OP_HDR_BYTES,
	OP_FIELD,
	OP_DATA,
	OP_ATTACH,
	OP_DEAD_HOLDER,
	OP_TAIL,
	NOPS
};

static void do_push(mp_ring_t *r, struct fz *f, int vec)
{
	struct mp_ring_rec meta;
	struct iovec iov[3];
	uint32_t len = fz_u16(f) % (r->max_payload + 9);
	uint32_t cut1, cut2;
	uint8_t *data = fz_alloc(len);
	int rc, expect = 0, idlen;
	uint32_t cons_waiting = 0;
	uint32_t announced = r->announced;

	memset(&meta, 0, sizeof(meta));
	meta.type = (int8_t)fz_u8(f);
	meta.sender = fz_u8(f);
	idlen = fz_u8(f) % (MP_RING_ID_LEN + 1);
	fz_bytes(f, meta.id, (size_t)idlen);
	fz_bytes(f, data, len);
	if (M.clean) {
		uint64_t used = m_head() - M.tail;

		/* The count of a push: from the handle's last reading while
		 * that shows room and the push before did not wake a
		 * sleeping consumer (here: a scribbled cons_waiting), else
		 * from a new one (exact). */
		if (len <= r->max_payload) {
			if (m_head() - M.v_tail + rec_size(len) >
				    r->data_bytes ||
			    M.n + M.v_behind >= r->max_records) {
				m_view();
			} else if (M.reread) {
				M.reread = 0;
				m_view();
			}
		}
		cons_waiting = u32_at(r->sh, OFF_CONS_WAITING);
		if (len > r->max_payload)
			expect = -EMSGSIZE;
		else if (used + rec_size(len) <= r->data_bytes &&
			 M.n < r->max_records)
			expect = (int)(M.n + M.v_behind);
		else
			expect = -ETIMEDOUT;
	}
	if (vec) {
		/* Three pieces, empty ones with a NULL base (allowed). */
		cut1 = len ? fz_u16(f) % (len + 1) : 0;
		cut2 = cut1 + (len - cut1 ? fz_u16(f) % (len - cut1 + 1) : 0);
		iov[0].iov_base = cut1 ? data : NULL;
		iov[0].iov_len = cut1;
		iov[1].iov_base = cut2 > cut1 ? data + cut1 : NULL;
		iov[1].iov_len = cut2 - cut1;
		iov[2].iov_base = len > cut2 ? data + cut2 : NULL;
		iov[2].iov_len = len - cut2;
		rc = mp_ring_pushv(r, &meta, iov, 3, 0);
	} else {
		rc = mp_ring_push(r, &meta, data, len, 0);
	}
	/* A handle that publishes plainly has told sleeping consumers so
	 * before its first publication (whatever the push's outcome, once
	 * past the size checks). */
	if (r->plain_publish && !announced && rc != -EMSGSIZE &&
	    (!r->announced || u32_at(r->sh, OFF_PLAIN_PUBS) != 1))
		FAIL("plain publication not announced");
	if (rc >= 0) {
		if (len > r->max_payload || meta.len != len)
			FAIL("push of %u bytes accepted as %u", len, meta.len);
		if ((uint32_t)rc >= r->max_records)
			FAIL("push says %d queued, limit %u", rc,
			     r->max_records);
	} else if (rc == -EMSGSIZE) {
		if (len <= r->max_payload)
			FAIL("push of %u bytes refused, max %u", len,
			     r->max_payload);
	} else if (rc != -ETIMEDOUT && rc != -EBADMSG &&
		   rc != -ENOTRECOVERABLE) {
		FAIL("push: unexpected %d", rc);
	}
	if (M.clean) {
		if (rc != expect)
			FAIL("push of %u: %d, model says %d", len, rc, expect);
		if (rc >= 0 && cons_waiting)
			M.reread = 1;
		if (rc >= 0) {
			struct mrec *x = &M.rec[M.n];

			if (M.n + 1 >= MAXREC)
				FAIL("model overflow");
			if (M.seq_known && meta.seq != M.next_seq)
				FAIL("push seq %llu, model %llu",
				     (unsigned long long)meta.seq,
				     (unsigned long long)M.next_seq);
			x->pos = m_head();
			x->seq = meta.seq;
			x->len = len;
			x->type = meta.type;
			x->sender = meta.sender;
			memcpy(x->id, meta.id, MP_RING_ID_LEN);
			x->id[MP_RING_ID_LEN - 1] = '\0';
			memcpy(x->data, data, len);
			M.n++;
			M.seq_known = 1;
			M.next_seq = meta.seq + 1;
		}
	}
	free(data);
}

static void do_pop(mp_ring_t *r, struct fz *f)
{
	uint32_t maxlen = fz_u16(f) % (r->max_payload + 2);
	uint8_t *buf = fz_alloc(maxlen);
	struct mp_ring_rec meta;
	uint64_t t0 = mp_ring_tail(r);
	int rc;

	rc = mp_ring_pop(r, &meta, buf, maxlen, 0);
	if (rc >= 0) {
		check_meta(r, &meta, rc);
		if (mp_ring_tail(r) != t0 + rec_size((uint32_t)rc))
			FAIL("pop moved the tail by %llu for a %d-byte record",
			     (unsigned long long)(mp_ring_tail(r) - t0), rc);
	} else if (rc != -ETIMEDOUT && rc != -EBADMSG) {
		FAIL("pop: unexpected %d", rc);
	} else if (mp_ring_tail(r) != t0) {
		FAIL("failed pop moved the tail");
	}
	if (M.clean) {
		if (!M.n) {
			if (rc != -ETIMEDOUT)
				FAIL("pop of an empty ring: %d", rc);
		} else {
			if (rc < 0)
				FAIL("pop: %d, model holds %u", rc, M.n);
			m_same(0, &meta, buf, maxlen, rc);
			m_drop(1);
			if (!M.n)
				M.tail = t0 + rec_size((uint32_t)rc);
		}
	}
	free(buf);
}

/* A cursor: the harness's own, the tail, raw, or moved by a delta. */
static uint64_t pick_cursor(mp_ring_t *r, struct fz *f, uint64_t pc)
{
	uint8_t mode = fz_u8(f);

	switch (mode % 5) {
	case 0:
		return pc;
	case 1:
		return mp_ring_tail(r);
	case 2:
		return fz_u64(f);
	case 3:
		return pc + (uint64_t)(int64_t)(int8_t)fz_u8(f) * 8;
	default:
		/* A model boundary, when there is a model. */
		if (M.clean && M.n)
			return M.rec[fz_u8(f) % M.n].pos +
			       (mode & 0x80 ? rec_size(M.rec[0].len) : 0);
		return mp_ring_tail(r) + (uint64_t)fz_u8(f);
	}
}

static void do_peek(mp_ring_t *r, struct fz *f, uint64_t *pc)
{
	uint64_t c = pick_cursor(r, f, *pc), c0 = c;
	uint32_t maxlen = fz_u16(f) % (r->max_payload + 2);
	uint8_t *buf = fz_alloc(maxlen);
	uint64_t t = mp_ring_tail(r);
	struct mp_ring_rec meta;
	int rc, k;

	rc = mp_ring_peek(r, &c, &meta, buf, maxlen, 0);
	if (rc >= 0) {
		check_meta(r, &meta, rc);
		if (c != c0 + rec_size((uint32_t)rc))
			FAIL("peek moved the cursor by %llu for %d bytes",
			     (unsigned long long)(c - c0), rc);
		*pc = c;
	} else if (rc != -ETIMEDOUT && rc != -EBADMSG && rc != -EINVAL) {
		FAIL("peek: unexpected %d", rc);
	} else if (c != c0) {
		FAIL("failed peek moved the cursor");
	}
	if (mp_ring_tail(r) != t)
		FAIL("peek moved the tail");
	if (M.clean) {
		k = m_index(c0);
		if ((c0 & 7) || c0 - M.tail > r->data_bytes ||
		    c0 - M.tail > m_head() - M.tail) {
			if (rc != -EINVAL)
				FAIL("peek outside the records: %d", rc);
		} else if (k == (int)M.n) {
			if (rc != -ETIMEDOUT)
				FAIL("peek at the head: %d", rc);
		} else if (k >= 0) {
			if (rc < 0)
				FAIL("peek of record %d: %d", k, rc);
			m_same((unsigned)k, &meta, buf, maxlen, rc);
		}
		/* Inside a record: a payload may hold a well-formed record
		 * header, so any answer will do. */
	}
	free(buf);
}

static void do_release(mp_ring_t *r, struct fz *f, uint64_t pc)
{
	uint64_t c = pick_cursor(r, f, pc), t0 = mp_ring_tail(r);
	int rc = mp_ring_release(r, c), k;

	if (rc == 0) {
		if (mp_ring_tail(r) != c)
			FAIL("release did not move the tail to the cursor");
	} else if (rc != -EINVAL && rc != -EBADMSG) {
		FAIL("release: unexpected %d", rc);
	} else if (mp_ring_tail(r) != t0) {
		FAIL("failed release moved the tail");
	}
	if (M.clean) {
		k = m_index(c);
		if (k < 0 || (c & 7) || c - M.tail > r->data_bytes) {
			if (rc != -EINVAL)
				FAIL("release inside or past the records: %d",
				     rc);
		} else {
			if (rc != 0)
				FAIL("release at record boundary %d: %d", k,
				     rc);
			if (k == (int)M.n) {
				M.v_behind += M.n;
				M.n = 0;
				M.tail = c;
			} else {
				m_drop((unsigned)k);
			}
		}
	}
}

static void do_count(mp_ring_t *r)
{
	int rc = mp_ring_count(r);

	if (rc != -EBADMSG && (rc < 0 || (uint32_t)rc > r->max_records + 1))
		FAIL("count: %d (limit %u)", rc, r->max_records);
	if (M.clean && rc != (int)M.n)
		FAIL("count %d, model %u", rc, M.n);
}

static void do_reset(mp_ring_t *r, uint64_t *pc)
{
	uint64_t h = m_head();
	int rc = mp_ring_reset(r);

	if (rc < 0 || (uint32_t)rc > r->max_records + 1)
		FAIL("reset: %d", rc);
	if (M.clean) {
		if (rc != (int)M.n)
			FAIL("reset discarded %d, model %u", rc, M.n);
		if (mp_ring_tail(r) != h)
			FAIL("reset did not empty the ring at its head");
	}
	/* Empty and consistent now, whatever it was: it must serve. */
	m_restart(r, M.clean && M.seq_known);
	*pc = M.tail;
	if (mp_ring_count(r) != 0)
		FAIL("count after reset: %d", mp_ring_count(r));
}

/* Overwrite bytes of the header, never the lock's. */
static void do_hdr_bytes(mp_ring_t *r, struct fz *f)
{
	uint8_t *h = (uint8_t *)r->sh, old[8];
	uint32_t hdr = (uint32_t)(mp_ring_size(64) - 64);
	uint32_t span = hdr - (LOCK_END - LOCK_OFF);
	uint32_t off = fz_u16(f) % span, len = 1 + fz_u8(f) % 8;

	if (off >= LOCK_OFF)
		off += LOCK_END - LOCK_OFF;
	if (off < LOCK_OFF && off + len > LOCK_OFF)
		len = LOCK_OFF - off;
	if (off + len > hdr)
		len = hdr - off;
	memcpy(old, h + off, len);
	fz_bytes(f, h + off, len);
	for (uint32_t i = 0; i < len; i++)
		if (h[off + i] != old[i] && hdr_byte_matters(off + i))
			M.clean = 0;
}

/* Set a header field, or move it by a small delta (positions by whole
 * 8-byte steps as often as not, so that they stay plausible). */
static void do_field(mp_ring_t *r, struct fz *f)
{
	const struct field *fd = &fields[fz_u8(f) % NFIELDS];
	uint8_t *p = (uint8_t *)r->sh + fd->off;
	uint8_t mode = fz_u8(f);
	uint64_t v = 0, old;

	memcpy(&v, p, fd->size);
	old = v;
	if (mode & 1)
		v += (uint64_t)(int64_t)(int16_t)fz_u16(f) * (mode & 2 ? 8 : 1);
	else
		v = fz_u64(f);
	memcpy(p, &v, fd->size);
	memcpy(&v, p, fd->size);
	if (v != old && hdr_byte_matters(fd->off))
		M.clean = 0;
}

/* Overwrite bytes of the data area (wrapping); bytes of free space do
 * not matter to the records. */
static void do_data(mp_ring_t *r, struct fz *f)
{
	uint32_t off = fz_u16(f) & r->mask, len = 1 + fz_u8(f) % 64;
	uint64_t used = M.clean ? m_head() - M.tail : 0;

	for (uint32_t i = 0; i < len; i++) {
		uint32_t x = (off + i) & r->mask;
		uint8_t b = fz_u8(f);

		if (M.clean && r->data[x] != b &&
		    ((x - (uint32_t)M.tail) & r->mask) < used)
			M.clean = 0;
		r->data[x] = b;
	}
}

/* A second attach reads the geometry from the (maybe scribbled) header:
 * it must refuse it or accept one that fits the memory. */
static void do_attach(mp_ring_t *r, void *mem, size_t memsize)
{
	mp_ring_t r2;
	int rc = mp_ring_attach(&r2, mem, memsize);

	if (rc == -EBADMSG)
		return;
	if (rc != 0)
		FAIL("attach: unexpected %d", rc);
	if (mp_ring_size(r2.data_bytes) == 0 ||
	    mp_ring_size(r2.data_bytes) > memsize || r2.max_records < 1 ||
	    r2.max_payload > MP_RING_MAX_PAYLOAD ||
	    rec_size(r2.max_payload) > r2.data_bytes ||
	    r2.mask != r2.data_bytes - 1 || r2.data != r->data)
		FAIL("attach accepted a geometry that does not fit");
	if (r2.data_bytes != r->data_bytes ||
	    r2.max_records != r->max_records ||
	    r2.max_payload != r->max_payload)
		M.clean = 0;
	r2.spin = 0;
	r2.plain_publish = r->plain_publish; /* the input's choice */
	*r = r2;
	M.reread = 0; /* a new handle has woken nobody yet */
	if (M.clean)
		m_view(); /* the new handle read the consumer's position */
}

/* A producer that dies holding the lock: a thread that takes it and
 * exits, so the next locker is told to repair (MP_LOCK_REPAIR) and
 * re-derives head_seq from whatever lies at head.  A record there may be
 * a payload's bytes, so the model gives up. */
static void *take_and_exit(void *lock)
{
	mp_lock_acquire(lock, MP_TIME_FOREVER);
	return NULL;
}

static void do_dead_holder(mp_ring_t *r, int *budget)
{
	pthread_t th;

	if (!*budget)
		return;
	--*budget;
	if (pthread_create(&th, NULL, take_and_exit,
			   (uint8_t *)r->sh + LOCK_OFF) != 0)
		return;
	pthread_join(th, NULL);
	M.clean = 0;
}

/* ---- layout self-check ---------------------------------------------- */

static uint64_t u64_at(const void *base, size_t off)
{
	uint64_t v;

	memcpy(&v, (const uint8_t *)base + off, 8);
	return v;
}

/* The offsets above against the ring's behaviour: the lock is where a
 * fresh lock's bytes are, and a push and a pop move the words we name. */
static void layout_check(void)
{
	static int done;
	size_t size = mp_ring_size(64);
	struct mp_ring_rec meta;
	mp_lock_sh_t lk;
	mp_ring_t r;
	void *mem;

	if (done)
		return;
	done = 1;
	mem = fz_alloc(size);
	if (size - 64 != 512 || sizeof(mp_lock_sh_t) > LOCK_END - LOCK_OFF)
		FAIL("ring header is not 512 bytes: update the layout here");
	if (mp_ring_init(&r, mem, size, 64, 1, 24) != 0 ||
	    mp_lock_init(&lk) != 0)
		FAIL("init");
	if (memcmp((uint8_t *)mem + LOCK_OFF, &lk, sizeof(lk)) != 0)
		FAIL("the lock is not at offset %d: update the layout here",
		     LOCK_OFF);
	memset(&meta, 0, sizeof(meta));
	r.plain_publish = 1;
	if (mp_ring_push(&r, &meta, NULL, 0, 0) != 0 ||
	    u64_at(mem, OFF_HEAD) != 40 || u64_at(mem, OFF_HEAD_SEQ) != 1 ||
	    u32_at(mem, OFF_PLAIN_PUBS) != 1)
		FAIL("head, head_seq, plain_pubs not where expected: update "
		     "the layout");
	if (mp_ring_pop(&r, &meta, NULL, 0, 0) != 0 ||
	    u64_at(mem, OFF_TAIL) != 40 || u64_at(mem, OFF_TAIL_SEQ) != 1 ||
	    u64_at(mem, OFF_HEAD_CACHE) != 40)
		FAIL("tail, tail_seq, head_cache not where expected");
	free(mem);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	struct fz f = {d, n};
	uint8_t g0 = fz_u8(&f);
	const struct geom *g = &geoms[g0 % NGEOMS];
	size_t memsize = mp_ring_size(g->data_bytes);
	void *mem = fz_alloc(memsize);
	uint64_t pc;
	mp_ring_t r;
	/* Bit 7 of the first byte allows one dead lock holder (a thread:
	 * costly, so not in every input). */
	int steps = 0, deaths = g0 >> 7;

	layout_check();
	fz_trace_init();
	if (mp_ring_init(&r, mem, memsize, g->data_bytes, g->max_records,
			 g->max_payload) != 0)
		FAIL("init");
	r.spin = 0; /* deadline 0 never spins anyway; be sure */
	/* Bit 6: publish with plain stores (as where membarrier exists)
	 * or with seq_cst ones; the ring must behave the same. */
	r.plain_publish = (g0 >> 6) & 1;
	m_restart(&r, 1);
	M.next_seq = 0;
	pc = mp_ring_tail(&r);

	while (f.n && steps++ < 256) {
		int op = fz_u8(&f) % NOPS;

		if (fz_trace)
			fprintf(stderr, "op %d (clean %d, n %u, tail %llu)\n",
				op, M.clean, M.n,
				(unsigned long long)mp_ring_tail(&r));
		switch (op) {
		case OP_PUSH:
			do_push(&r, &f, 0);
			break;
		case OP_PUSHV:
			do_push(&r, &f, 1);
			break;
		case OP_POP:
			do_pop(&r, &f);
			break;
		case OP_PEEK:
			do_peek(&r, &f, &pc);
			break;
		case OP_RELEASE:
			do_release(&r, &f, pc);
			break;
		case OP_COUNT:
			do_count(&r);
			break;
		case OP_RESET:
			do_reset(&r, &pc);
			break;
		case OP_HDR_BYTES:
			do_hdr_bytes(&r, &f);
			break;
		case OP_FIELD:
			do_field(&r, &f);
			break;
		case OP_DATA:
			do_data(&r, &f);
			break;
		case OP_ATTACH:
			do_attach(&r, mem, memsize);
			break;
		case OP_DEAD_HOLDER:
			do_dead_holder(&r, &deaths);
			break;
		default:
			(void)mp_ring_tail(&r);
			break;
		}
	}
	/* Whatever happened, a reset brings the ring back into service. */
	do_reset(&r, &pc);
	{
		struct mp_ring_rec meta;
		uint32_t one = r.max_payload ? 1 : 0; /* an attach may
							 allow 0 */
		uint8_t b = 0x5a;

		memset(&meta, 0, sizeof(meta));
		if (mp_ring_push(&r, &meta, &b, one, 0) != 0 ||
		    mp_ring_pop(&r, &meta, &b, one, 0) != (int)one || b != 0x5a)
			FAIL("ring does not serve after reset");
	}
	free(mem);
	return 0;
}
