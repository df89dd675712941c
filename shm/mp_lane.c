/*
 * mp_lane — single-producer lane of a channel segment (see mp_lane.h).
 *
 * Layout: struct mp_lane_sh (four cache lines) then the data area.  A
 * record is an 8-byte header (len_check: the length in bits 0-16 and a
 * 15-bit check word over position, length and type in bits 17-31; type)
 * and the payload, padded to a multiple of 8.  Positions are byte counts
 * that only grow; a record starts at a multiple of 8, so its header
 * never wraps; the payload may, and is then copied in two pieces.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <string.h>

#include "mp_futex.h"
#include "mp_lane.h"
#include "mp_time.h"
#include "mp_wrap.h"

#define LANE_LINE     64
#define LANE_MIN_DATA 64u
#define LANE_MAX_DATA 0x80000000u
#define LEN_BITS      17 /* lengths up to 65536 */
#define LEN_MASK      ((1u << LEN_BITS) - 1u)
#define GEN_MASK      0xffffffu

/* Busy-wait for room before sleeping, in polls of the consumer's line. */
#define LANE_SPIN 256u

/* A producer that cannot fence the consumer sleeps this long at most. */
#define LANE_UNFENCED_SLICE_NS 1000000LL

struct rec_hdr {
	uint32_t len_check;
	int32_t  type;
};
#define REC_HDR ((uint32_t)sizeof(struct rec_hdr))
_Static_assert(sizeof(struct rec_hdr) == 8, "record header is 8 bytes");

struct mp_lane_sh {
	/* Line 0: ownership, written at claim, release, break, free. */
	uint32_t state;
	uint32_t pid;
	uint32_t sender;
	uint32_t pad0;
	char     id[MP_LANE_ID_LEN];
	uint8_t  pad0b[LANE_LINE - 32];
	/* Line 1: the producer's. */
	_Alignas(LANE_LINE) uint64_t head;
	/* Line 2: the consumer's. */
	_Alignas(LANE_LINE) uint64_t tail;
	uint64_t tail_seq;
	/* Line 3: a producer sleeps on room_futex while prod_waiting. */
	_Alignas(LANE_LINE) uint32_t prod_waiting;
	uint32_t room_futex;
	uint8_t  pad3[LANE_LINE - 8];
};
_Static_assert(sizeof(struct mp_lane_sh) == 4 * LANE_LINE, "lane header");

#define LANE_HDR ((uint32_t)sizeof(struct mp_lane_sh))

static inline uint32_t word_of(uint32_t gen, uint32_t st)
{
	return (gen & GEN_MASK) << MP_LANE_GEN_SHIFT | st;
}

static inline uint32_t rec_size(uint32_t len)
{
	return (REC_HDR + len + 7u) & ~7u;
}

static inline uint32_t check_of(uint64_t pos, uint32_t len, int32_t type)
{
	uint64_t x = (pos ^ (uint64_t)len << 40 ^ (uint64_t)(uint32_t)type)
		     * 0x9e3779b97f4a7c15ull;

	return (uint32_t)(x >> (64 - (32 - LEN_BITS)));
}

size_t mp_lane_size(uint32_t data_bytes)
{
	if (!mp_wrap_pow2(data_bytes) || data_bytes < LANE_MIN_DATA ||
	    data_bytes > LANE_MAX_DATA)
		return 0;
	return (size_t)LANE_HDR + data_bytes;
}

uint32_t mp_lane_min_data_bytes(uint32_t max_payload)
{
	uint32_t d = LANE_MIN_DATA;

	if (max_payload > LEN_MASK)
		return 0;
	while (d < rec_size(max_payload))
		d <<= 1;
	return d;
}

int mp_lane_geo_ok(const struct mp_lane_geo *g)
{
	if (!mp_lane_size(g->data_bytes) || g->max_payload > LEN_MASK ||
	    g->data_bytes < mp_lane_min_data_bytes(g->max_payload) ||
	    g->max_records < 1 || g->max_records > INT_MAX)
		return -EINVAL;
	return 0;
}

uint32_t mp_lane_word(const struct mp_lane_sh *sh)
{
	return __atomic_load_n(&sh->state, __ATOMIC_ACQUIRE);
}

/* ---- producer -------------------------------------------------------- */

int mp_lane_claim(mp_lane_prod_t *p, void *mem, const struct mp_lane_geo *geo,
		  pid_t pid, uint32_t sender, const char *id, int plain,
		  int fenced)
{
	struct mp_lane_sh *sh = mem;
	uint32_t w = __atomic_load_n(&sh->state, __ATOMIC_RELAXED), nw;
	uint64_t h, t, ts;

	if ((w & ~(GEN_MASK << MP_LANE_GEN_SHIFT)) != MP_LANE_FREE)
		return -EBUSY;
	nw = word_of((w >> MP_LANE_GEN_SHIFT) + 1, MP_LANE_OWNED);
	/* Acquire: the consumer's last commit (tail) happened before the
	 * free we claim after. */
	if (!__atomic_compare_exchange_n(&sh->state, &w, nw, 0,
					 __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
		return -EBUSY;
	h = __atomic_load_n(&sh->head, __ATOMIC_RELAXED);
	t = __atomic_load_n(&sh->tail, __ATOMIC_ACQUIRE);
	ts = __atomic_load_n(&sh->tail_seq, __ATOMIC_RELAXED);
	if (h != t || (h & 7)) {
		/* A free lane is drained: these positions were scribbled. */
		__atomic_store_n(&sh->state, w, __ATOMIC_RELEASE);
		return -EBADMSG;
	}
	/* Identity, pid first (the consumer never blames pid 0). */
	__atomic_store_n(&sh->pid, (uint32_t)pid, __ATOMIC_RELAXED);
	__atomic_store_n(&sh->sender, sender, __ATOMIC_RELAXED);
	memset(sh->id, 0, sizeof(sh->id));
	if (id)
		strncpy(sh->id, id, sizeof(sh->id) - 1);
	memset(p, 0, sizeof(*p));
	p->sh = sh;
	p->data = (uint8_t *)mem + LANE_HDR;
	p->geo = *geo;
	p->word = nw;
	p->head = h;
	p->head_seq = ts;
	p->tail_seen = t;
	p->tail_seq_seen = ts;
	p->plain = plain;
	p->fenced = fenced;
	return 0;
}

/* Read the consumer's pair again.  0, or -EBADMSG if it lies. */
static int refresh_tail(mp_lane_prod_t *p)
{
	/* Acquire: the consumer's reads of the bytes before tail are done
	 * before we overwrite them.  tail_seq is stored before tail. */
	uint64_t t = __atomic_load_n(&p->sh->tail, __ATOMIC_SEQ_CST);
	uint64_t ts = __atomic_load_n(&p->sh->tail_seq, __ATOMIC_RELAXED);

	if ((t & 7) || p->head - t > p->geo.data_bytes ||
	    t - p->tail_seen > p->head - p->tail_seen ||
	    p->head_seq - ts > p->geo.max_records ||
	    ts - p->tail_seq_seen > p->head_seq - p->tail_seq_seen)
		return -EBADMSG;
	p->tail_seen = t;
	p->tail_seq_seen = ts;
	return 0;
}

static inline int has_room(const mp_lane_prod_t *p, uint32_t need)
{
	return p->head - p->tail_seen + need <= p->geo.data_bytes &&
	       p->head_seq - p->tail_seq_seen < p->geo.max_records;
}

int mp_lane_wait(const mp_lane_prod_t *p, uint64_t tail, int64_t deadline_ns)
{
	struct mp_lane_sh *sh = p->sh;
	int64_t until;
	uint32_t w;

	for (unsigned spin = 0;; spin++) {
		if (__atomic_load_n(&sh->tail, __ATOMIC_SEQ_CST) != tail)
			return 0;
		if (__atomic_load_n(&sh->state, __ATOMIC_RELAXED) != p->word)
			return -EPIPE;
		if (deadline_ns <= 0 || (deadline_ns != MP_TIME_FOREVER &&
					 mp_time_now_ns() >= deadline_ns))
			return -ETIMEDOUT;
		if (spin < LANE_SPIN) {
			mp_cpu_relax();
			continue;
		}
		/* Dekker with the consumer's commit: flag (seq_cst), a fence
		 * on its side too if it commits plainly, then look again.
		 * The flag stays up: only the consumer clears it, so that one
		 * thread leaving cannot hide another still asleep. */
		w = __atomic_load_n(&sh->room_futex, __ATOMIC_RELAXED);
		__atomic_store_n(&sh->prod_waiting, 1, __ATOMIC_SEQ_CST);
		until = deadline_ns;
		if (!p->fenced || mp_fence_remote() < 0) {
			int64_t end = mp_time_now_ns() + LANE_UNFENCED_SLICE_NS;

			if (end < until)
				until = end;
		}
		if (__atomic_load_n(&sh->tail, __ATOMIC_SEQ_CST) != tail)
			return 0;
		mp_futex_wait(&sh->room_futex, w, until);
	}
}

int mp_lane_push(mp_lane_prod_t *p, int32_t type, const void *data,
		 uint32_t len)
{
	struct mp_lane_sh *sh = p->sh;
	struct rec_hdr *rh;
	uint32_t need, off;
	int rc;

	if (len > p->geo.max_payload)
		return -EMSGSIZE;
	/* Ours still?  The consumer breaks a lane that lied, and frees the
	 * lane of a producer it found dead: stop writing into it. */
	if (__atomic_load_n(&sh->state, __ATOMIC_RELAXED) != p->word)
		return -EPIPE;
	need = rec_size(len);
	if (!has_room(p, need)) {
		rc = refresh_tail(p);
		if (rc)
			return rc;
		if (!has_room(p, need))
			return -EAGAIN;
	}
	/* The header is 8 bytes at a multiple of 8: it never wraps. */
	off = (uint32_t)p->head & (p->geo.data_bytes - 1);
	rh = (struct rec_hdr *)(p->data + off);
	rh->len_check = len | check_of(p->head, len, type) << LEN_BITS;
	rh->type = type;
	if (len)
		mp_wrap_put(p->data, p->geo.data_bytes, p->head + REC_HDR, data,
			    len);
	p->head += need;
	p->head_seq++;
	/* Release: the record is complete before head counts it.  Also the
	 * first half of the doorbell's Dekker (mp_chseg.h): seq_cst, or a
	 * plain store the consumer fences from afar before it sleeps. */
	if (p->plain) {
		__atomic_store_n(&sh->head, p->head, __ATOMIC_RELEASE);
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
	} else {
		__atomic_store_n(&sh->head, p->head, __ATOMIC_SEQ_CST);
	}
	return (int)(p->head_seq - 1 - p->tail_seq_seen);
}

void mp_lane_release(mp_lane_prod_t *p)
{
	uint32_t w;

	if (!p->sh)
		return;
	w = p->word;
	if (!__atomic_compare_exchange_n(
		    &p->sh->state, &w,
		    word_of(p->word >> MP_LANE_GEN_SHIFT, MP_LANE_CLOSED), 0,
		    __ATOMIC_RELEASE, __ATOMIC_RELAXED)) {
		w = word_of(p->word >> MP_LANE_GEN_SHIFT, MP_LANE_BROKEN);
		__atomic_compare_exchange_n(
			&p->sh->state, &w,
			word_of(p->word >> MP_LANE_GEN_SHIFT, MP_LANE_CLOSED),
			0, __ATOMIC_RELEASE, __ATOMIC_RELAXED);
	}
	p->sh = NULL;
}

/* ---- consumer -------------------------------------------------------- */

int mp_lane_attach(mp_lane_cons_t *c, void *mem, const struct mp_lane_geo *geo,
		   int plain)
{
	struct mp_lane_sh *sh = mem;

	memset(c, 0, sizeof(*c));
	c->sh = sh;
	c->data = (uint8_t *)mem + LANE_HDR;
	c->geo = *geo;
	c->plain = plain;
	c->tail = __atomic_load_n(&sh->tail, __ATOMIC_RELAXED);
	c->tail_seq = __atomic_load_n(&sh->tail_seq, __ATOMIC_RELAXED);
	c->head_seen = c->tail;
	return (c->tail & 7) ? -EBADMSG : 0;
}

/* Look at head: 1 records beyond our tail, 0 none, -EBADMSG. */
static int load_head(mp_lane_cons_t *c)
{
	/* Acquire: pairs with the producer's release; the records before
	 * it, and the identity stored at the claim, are visible. */
	uint64_t h = __atomic_load_n(&c->sh->head, __ATOMIC_ACQUIRE);

	if ((h & 7) || h - c->tail > c->geo.data_bytes)
		return -EBADMSG;
	c->head_seen = h;
	return h != c->tail;
}

int mp_lane_pending(mp_lane_cons_t *c)
{
	if (c->head_seen != c->tail)
		return 1;
	return load_head(c);
}

int mp_lane_pop(mp_lane_cons_t *c, int32_t *type, void *buf, uint32_t maxlen,
		uint32_t *lenp)
{
	struct mp_lane_sh *sh = c->sh;
	struct rec_hdr rh;
	uint32_t len, off;
	int rc;

	if (c->head_seen == c->tail) {
		rc = load_head(c);
		if (rc <= 0)
			return rc;
	}
	/* One copy of the header, checked, then used. */
	off = (uint32_t)c->tail & (c->geo.data_bytes - 1);
	memcpy(&rh, c->data + off, sizeof(rh));
	len = rh.len_check & LEN_MASK;
	if (len > c->geo.max_payload ||
	    rec_size(len) > c->head_seen - c->tail ||
	    rh.len_check >> LEN_BITS != check_of(c->tail, len, rh.type))
		return -EBADMSG;
	if (buf && maxlen)
		mp_wrap_get(c->data, c->geo.data_bytes, c->tail + REC_HDR, buf,
			    len < maxlen ? len : maxlen);
	*type = rh.type;
	*lenp = len;
	c->tail += rec_size(len);
	c->tail_seq++;
	/* tail_seq, then tail: a producer that reads tail (acquire) sees a
	 * tail_seq at least as new.  Release: our reads of the record are
	 * done before the producer may overwrite it.  The first half of
	 * the room Dekker: seq_cst, or plain where producers fence us. */
	__atomic_store_n(&sh->tail_seq, c->tail_seq, __ATOMIC_RELAXED);
	if (c->plain) {
		__atomic_store_n(&sh->tail, c->tail, __ATOMIC_RELEASE);
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
	} else {
		__atomic_store_n(&sh->tail, c->tail, __ATOMIC_SEQ_CST);
	}
	if (__atomic_load_n(&sh->prod_waiting, __ATOMIC_RELAXED) &&
	    __atomic_exchange_n(&sh->prod_waiting, 0, __ATOMIC_RELAXED)) {
		__atomic_add_fetch(&sh->room_futex, 1, __ATOMIC_RELAXED);
		mp_futex_wake(&sh->room_futex, INT32_MAX);
	}
	return 1;
}

void mp_lane_owner(const mp_lane_cons_t *c, pid_t *pid, uint32_t *sender,
		   char id[MP_LANE_ID_LEN])
{
	const struct mp_lane_sh *sh = c->sh;

	*pid = (pid_t)__atomic_load_n(&sh->pid, __ATOMIC_RELAXED);
	*sender = __atomic_load_n(&sh->sender, __ATOMIC_RELAXED);
	memcpy(id, sh->id, MP_LANE_ID_LEN);
	id[MP_LANE_ID_LEN - 1] = '\0';
}

int mp_lane_break(mp_lane_cons_t *c, uint32_t w)
{
	if ((w & MP_LANE_ST_MASK) != MP_LANE_OWNED)
		return 0;
	return __atomic_compare_exchange_n(
		&c->sh->state, &w, (w & ~MP_LANE_ST_MASK) | MP_LANE_BROKEN, 0,
		__ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

int mp_lane_free(mp_lane_cons_t *c, uint32_t w, int discard)
{
	struct mp_lane_sh *sh = c->sh;

	if ((w & MP_LANE_ST_MASK) == MP_LANE_FREE)
		return -EAGAIN;
	if (!discard) {
		int rc = mp_lane_pending(c);

		if (rc > 0)
			return 0;
		/* rc < 0: head lies; the lane is discarded as broken. */
	}
	/* Level: the next owner starts at our tail with nothing queued.
	 * Nobody writes the positions now (the producer released the lane
	 * or is dead). */
	__atomic_store_n(&sh->head, c->tail, __ATOMIC_RELAXED);
	__atomic_store_n(&sh->tail_seq, c->tail_seq, __ATOMIC_RELAXED);
	__atomic_store_n(&sh->tail, c->tail, __ATOMIC_RELAXED);
	__atomic_store_n(&sh->pid, 0, __ATOMIC_RELAXED);
	c->head_seen = c->tail;
	/* Release: the positions above are visible to the next claimer. */
	if (!__atomic_compare_exchange_n(&sh->state, &w,
					 word_of(w >> MP_LANE_GEN_SHIFT,
						 MP_LANE_FREE),
					 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
		return -EAGAIN;
	return 1;
}
