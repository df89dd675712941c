/*
 * fuzz_chseg — libFuzzer target for a channel's segment (shm/mp_chseg.c),
 * both ends in one thread, with the input playing every other process
 * that maps the segment; linked with tests/fuzz_replay.c it replays
 * tests/corpus/chseg in `make check`.
 *
 * Every call used here can be made without blocking: the server's side
 * never waits except in mp_chseg_server_wait, and the client's calls take
 * a deadline; all are called with deadline 0 and zero spin and yield
 * budgets.  So one thread can be the server (next, reply, reply_buf,
 * bpop, reap, server_wait), a client (loan, send, wait, cancel, done,
 * call, bsend, server_alive, kick) and the scribbling peer at once.
 *
 * The input is a program.  Its first byte picks a geometry (slots,
 * max_msg, ring); a segment is created and opened under a name private to
 * this process (unlinked at the end of each input), and each following
 * operation is a call on either side, a second open of the (maybe
 * scribbled) segment, or a scribble: bytes of a slot's control line, its
 * state word (raw or a plausible state and generation), its client pid,
 * bytes of its areas, its park word (its own state word, which makes a
 * REPLIED slot look parked, or raw), the header's words and geometry,
 * the ring's header (not its lock) and data, the lanes (owner line,
 * positions, data).  Slots the client is done with stay parked; the
 * second opener (same pid, another handle) re-uses or takes them over,
 * and its close frees them.
 *
 * Checked, abort() on any violation: every call returns a documented
 * value; every pointer handed out (request view, request buffer, reply
 * view, loaned reply buffer) is the right area of the right slot of the
 * caller's own mapping and every length fits that area (the target reads
 * or writes all of it; the mapping is not heap, so ASan alone would not
 * see a stray access inside it); a client never holds one slot twice.
 * While nothing that matters has been scribbled, the two ends must also
 * agree with a model: a request arrives once, with its type, id, length
 * and bytes; a reply arrives with its answer and bytes, or -ECANCELED
 * after a withdrawal; no request is lost; buffered messages come out in
 * order, bsend is refused only when the client's queue (the ring, or in
 * the geometries with lanes its own lane) is full, and its count is the
 * queue plus what was taken since the client last read the server's
 * position (the upper bound mp_ring_push and mp_lane_push document,
 * modelled).
 *
 * Out of scope: the alive lock and the ring's lock (pthread mutexes) are
 * never scribbled, as for fuzz_ring.  The slot and header layout is the
 * one mp_chseg.h publishes.
 */
#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mp_fuzz.h"
#include "mp_chseg.h"
#include "mp_ring.h"
#include "mp_time.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

#define FAIL(...) FZ_FAIL("fuzz_chseg", __VA_ARGS__)

/* The client's buffered messages go through the ring in the first
 * geometry (no lanes) and through its own lane in the others. */
static const struct mp_chseg_cfg cfgs[] = {
	{.nslots = 1, .max_msg = 64, .ring_bytes = 128, .ring_records = 2,
	 .nlanes = MP_CHSEG_NO_LANES},
	{.nslots = 2, .max_msg = 100, .ring_bytes = 256, .ring_records = 3,
	 .nlanes = 1, .lane_bytes = 256},
	{.nslots = 3, .max_msg = 32, .ring_bytes = 256, .ring_records = 8,
	 .nlanes = 2, .lane_bytes = 128},
};
#define NCFGS	(sizeof(cfgs) / sizeof(cfgs[0]))
#define MAXMSG	128 /* >= every max_msg above */
#define NREQ	4   /* client requests in flight, more than slots */
#define NTICKET 8
#define FIFO	16

/* The ring's lock: header lines 1-2 (see fuzz_ring.c, which checks it). */
#define RING_LOCK_OFF 64
#define RING_LOCK_END 192

/* Bytes a record takes: a 40-byte header in the ring (mp_ring.c), an
 * 8-byte one in a lane (mp_lane.c). */
static uint32_t rec_hdr;

static inline uint32_t rec_size(uint32_t len)
{
	return (rec_hdr + len + 7u) & ~7u;
}

/* ---- state ---- */

enum { R_IDLE, R_LOANED, R_SENT, R_REPLIED };

static struct state {
	mp_chseg_t *srv, *cli; /* live handles, see setup() */
	const char *name;      /* the segment's */
	uint32_t max_msg, nslots, ring_bytes, ring_records;
	int clean;
	/* The client's queue: the ring, or its lane (then ring_bytes is the
	 * lane's data area; the bound in records is the same). */

	struct creq {
		struct mp_chseg_req r;
		int st;
		/* What was sent, and what the server answered. */
		int32_t type;
		uint64_t reqid;
		uint32_t len;
		uint8_t data[MAXMSG];
		int taken, canceled, replied;
		int32_t answer;
		uint32_t rlen;
		uint8_t reply[MAXMSG];
	} req[NREQ];

	struct ticket {
		uint64_t t;
		int live;
		int req;      /* the request it came from, -1 unknown */
		int canceled; /* next reported its withdrawal */
	} tk[NTICKET];
	unsigned ntk;

	struct brec {
		int32_t type;
		uint32_t len;
		uint8_t data[MAXMSG];
	} fifo[FIFO];
	unsigned fifo_n;
	uint32_t fifo_bytes;
	/* What the client's ring handle read last of the server's position
	 * (mp_ring_push): the messages and bytes taken since.  A bsend's
	 * count includes them (an upper bound) until a bsend finds too
	 * little room by that reading and reads again. */
	unsigned v_behind;
	uint32_t v_bytes;
} S;

/* ---- pointer checks ---- */

static const uint8_t *area_a(const mp_chseg_t *s, uint32_t slot)
{
	return s->slots + (size_t)slot * s->block + 64;
}

static const uint8_t *area_b(const mp_chseg_t *s, uint32_t slot)
{
	return area_a(s, slot) + s->area;
}

/* Read every byte of [p, p + len): inside the mapping, or a crash. */
static void touch(const void *p, uint32_t len)
{
	volatile uint8_t sink = 0;

	for (uint32_t i = 0; i < len; i++)
		sink ^= ((const volatile uint8_t *)p)[i];
	(void)sink;
}

/* The request the client holds on slot, other than req k. */
static int slot_owner(uint32_t slot, int k)
{
	for (int i = 0; i < NREQ; i++)
		if (i != k && S.req[i].st != R_IDLE && S.req[i].r.slot == slot)
			return i;
	return -1;
}

/* ---- server side ---- */

enum {
	OP_NEXT,
	OP_REPLY,
	OP_REPLY_BUF,
	OP_BPOP,
	OP_REAP,
	OP_SRV_WAIT,
	OP_LOAN,
	OP_SEND,
	OP_WAIT,
	OP_CANCEL,
	OP_DONE,
	OP_CALL,
	OP_BSEND,
	OP_ALIVE,
	OP_SLOT_BYTES,
	OP_SLOT_STATE,
	OP_SLOT_PID,
	OP_AREA_BYTES,
	OP_HDR_WORD,
	OP_RING_BYTES,
	OP_LANE_BYTES,
	OP_OPEN,
	OP_PARK_WORD,
	NOPS
};

static void add_ticket(uint64_t t, int req)
{
	struct ticket *x = &S.tk[S.ntk++ % NTICKET];

	/* A free entry if there is one (at most nslots are held). */
	for (unsigned i = 0; i < NTICKET; i++)
		if (!S.tk[i].live) {
			x = &S.tk[i];
			break;
		}
	x->t = t;
	x->live = 1;
	x->req = req;
	x->canceled = 0;
}

static void do_next(void)
{
	struct mp_chseg_msg m;
	int rc = mp_chseg_next(S.srv, &m), k;

	if (rc == 0) {
		/* Nothing: then no request may be waiting untaken. */
		for (k = 0; S.clean && k < NREQ; k++)
			if (S.req[k].st == R_SENT && !S.req[k].taken &&
			    !S.req[k].canceled)
				FAIL("request on slot %u lost",
				     S.req[k].r.slot);
		return;
	}
	if (rc == -EBADMSG) {
		if (m.slot >= S.nslots)
			FAIL("next: bad slot %u", m.slot);
		if (S.clean)
			FAIL("next: -EBADMSG from a sound segment");
		return;
	}
	if (rc != 1)
		FAIL("next: unexpected %d", rc);
	if (m.slot >= S.nslots || (uint32_t)m.ticket != m.slot)
		FAIL("next: slot %u, ticket %llx", m.slot,
		     (unsigned long long)m.ticket);
	if (memchr(m.id, 0, sizeof(m.id)) == NULL)
		FAIL("next: id not NUL-terminated");
	k = slot_owner(m.slot, -1);
	switch (m.kind) {
	case MP_CHSEG_REQUEST:
		if (m.len > S.max_msg || m.data != area_a(S.srv, m.slot))
			FAIL("request view: %u bytes at the wrong place",
			     m.len);
		touch(m.data, m.len);
		add_ticket(m.ticket, k);
		if (!S.clean)
			break;
		if (k < 0 || S.req[k].st != R_SENT || S.req[k].taken ||
		    S.req[k].canceled)
			FAIL("request on slot %u that nobody sent (or twice)",
			     m.slot);
		if (m.ticket >> 32 != S.req[k].r.gen ||
		    m.type != S.req[k].type || m.reqid != S.req[k].reqid ||
		    m.len != S.req[k].len ||
		    memcmp(m.data, S.req[k].data, m.len) != 0 ||
		    m.pid != getpid() || m.sender != 7 ||
		    strcmp(m.id, "fuzz") != 0)
			FAIL("request on slot %u differs from what was sent",
			     m.slot);
		S.req[k].taken = 1;
		break;
	case MP_CHSEG_CANCELED: {
		int found = 0;

		for (unsigned i = 0; i < NTICKET; i++)
			if (S.tk[i].live && S.tk[i].t == m.ticket &&
			    !S.tk[i].canceled) {
				S.tk[i].canceled = 1;
				found = 1;
			}
		if (S.clean && !found)
			FAIL("withdrawal of a request not held, or twice");
		break;
	}
	case MP_CHSEG_GONE:
		if (S.clean)
			FAIL("client gone, but it is us");
		break;
	default:
		FAIL("next: kind %d", m.kind);
	}
}

static struct ticket *pick_ticket(struct fz *f, uint64_t *t)
{
	uint8_t sel = fz_u8(f);
	struct ticket *x = &S.tk[sel % NTICKET];

	if (sel & 0x80) {
		*t = fz_u64(f);
		return NULL;
	}
	*t = x->t;
	return x->live ? x : NULL;
}

static void do_reply(struct fz *f)
{
	uint64_t t;
	struct ticket *x = pick_ticket(f, &t);
	int32_t answer = (int32_t)fz_u32(f);
	uint32_t len = fz_u16(f) % (S.max_msg + 16), cap = 0;
	uint8_t mode = fz_u8(f) % 4, *heap = NULL;
	uint32_t slot = (uint32_t)t;
	const void *data = NULL;
	int rc, expect = 1, k = x ? x->req : -1;

	switch (mode) {
	case 0:
		break; /* NULL: fine for 0 bytes, -EINVAL otherwise */
	case 1:
		heap = fz_alloc(len);
		fz_bytes(f, heap, len);
		data = heap;
		break;
	case 2:
		data = mp_chseg_reply_buf(S.srv, t, &cap);
		if (data) {
			if (data != area_b(S.srv, slot) || cap != S.max_msg)
				FAIL("reply buffer at the wrong place");
			fz_bytes(f, (void *)data, len < cap ? len : cap);
		}
		break;
	default:
		/* Part of the request view (an overlapping move). */
		if (slot < S.nslots)
			data = area_a(S.srv, slot) + fz_u16(f) % S.srv->area;
		break;
	}
	if (S.clean && x) {
		struct creq *q = k >= 0 ? &S.req[k] : NULL;

		/* A request reused since is one that was withdrawn. */
		if (x->canceled)
			expect = -ECANCELED;
		else if (len > S.max_msg)
			expect = -EMSGSIZE;
		else if (len && !data)
			expect = -EINVAL;
		else if (q && !q->canceled && q->st >= R_SENT &&
			 q->r.slot == slot && q->r.gen == (uint32_t)(t >> 32))
			expect = 0;
		else
			expect = -ECANCELED;
		if (expect == 0) {
			q->replied = 1;
			q->answer = answer;
			q->rlen = len;
			if (len)
				memcpy(q->reply, data, len);
		}
	}
	rc = mp_chseg_reply(S.srv, t, answer, data, len);
	if (rc != 0 && rc != -EINVAL && rc != -EMSGSIZE && rc != -ECANCELED &&
	    rc != -ESRCH && rc != -EBADMSG)
		FAIL("reply: unexpected %d", rc);
	if (rc == -EMSGSIZE && len <= S.max_msg)
		FAIL("reply of %u bytes: -EMSGSIZE", len);
	if (S.clean && x && rc != expect)
		FAIL("reply (mode %u, %u bytes): %d, expected %d", mode, len,
		     rc, expect);
	/* Refused for its length or a NULL buffer: still held. */
	if (x && !((rc == -EMSGSIZE || (rc == -EINVAL && len && !data)) &&
		   !x->canceled))
		x->live = 0;
	free(heap);
}

static void do_reply_buf(struct fz *f)
{
	uint64_t t;
	uint32_t cap = 0;
	void *b;

	pick_ticket(f, &t);
	b = mp_chseg_reply_buf(S.srv, t, &cap);
	if (!b)
		return;
	if ((uint32_t)t >= S.nslots || b != area_b(S.srv, (uint32_t)t) ||
	    cap != S.max_msg)
		FAIL("reply buffer at the wrong place");
	memset(b, 0xa5, cap);
}

static void do_bpop(struct fz *f)
{
	uint32_t maxlen = fz_u16(f) % (S.max_msg + 2);
	uint8_t *buf = fz_alloc(maxlen);
	struct mp_ring_rec meta;
	int rc = mp_chseg_bpop(S.srv, &meta, buf, maxlen);

	if (rc == 1) {
		if (meta.len > S.max_msg ||
		    memchr(meta.id, 0, MP_RING_ID_LEN) == NULL)
			FAIL("bpop: %u bytes, or id unterminated", meta.len);
	} else if (rc != 0 && rc != -EBADMSG) {
		FAIL("bpop: unexpected %d", rc);
	}
	if (S.clean) {
		if (!S.fifo_n) {
			if (rc != 0)
				FAIL("bpop of an empty ring: %d", rc);
		} else {
			struct brec *x = &S.fifo[0];
			uint32_t n = x->len < maxlen ? x->len : maxlen;

			if (rc != 1 || meta.type != x->type ||
			    meta.len != x->len || meta.sender != 7 ||
			    strcmp(meta.id, "fuzz") != 0 ||
			    (n && memcmp(buf, x->data, n) != 0))
				FAIL("bpop: not the message sent first");
			S.fifo_bytes -= rec_size(x->len);
			S.v_behind++;
			S.v_bytes += rec_size(x->len);
			memmove(&S.fifo[0], &S.fifo[1],
				--S.fifo_n * sizeof(S.fifo[0]));
		}
	}
	free(buf);
}

static void do_reap(struct fz *f)
{
	int rc = mp_chseg_reap(S.srv, fz_u8(f) & 1);

	if (rc < 0 || (uint32_t)rc > S.nslots)
		FAIL("reap: %d", rc);
	if (S.clean && rc != 0)
		FAIL("reap found a dead client, but it is us");
}

static void do_srv_wait(void)
{
	int rc = mp_chseg_server_wait(S.srv, 0);

	if (rc != 0 && rc != 1)
		FAIL("server_wait: %d", rc);
}

/* ---- client side ---- */

static void check_loan(struct creq *q, int k)
{
	if (q->r.slot >= S.nslots || q->r.cap != S.max_msg ||
	    q->r.buf != area_a(S.cli, q->r.slot))
		FAIL("loan: slot %u, %u bytes at the wrong place", q->r.slot,
		     q->r.cap);
	if (S.clean && slot_owner(q->r.slot, k) >= 0)
		FAIL("loan: slot %u is already ours", q->r.slot);
}

static void do_loan(struct fz *f)
{
	int k = fz_u8(f) % NREQ, rc;
	struct creq *q = &S.req[k];

	if (q->st != R_IDLE)
		return; /* a second loan would leak the first */
	rc = mp_chseg_loan(S.cli, &q->r, 0);
	if (rc == 0) {
		check_loan(q, k);
		memset(&q->st, 0, sizeof(*q) - offsetof(struct creq, st));
		q->st = R_LOANED;
		memset(q->r.buf, 0, q->r.cap);
	} else if (rc != -ETIMEDOUT && rc != -ESRCH) {
		FAIL("loan: unexpected %d", rc);
	}
}

static void do_send(struct fz *f)
{
	struct creq *q = &S.req[fz_u8(f) % NREQ];
	int32_t type = (int8_t)fz_u8(f);
	uint64_t reqid = fz_u8(f);
	uint32_t len = fz_u16(f) % (S.max_msg + 8);
	int rc;

	if (q->st == R_LOANED && len <= q->r.cap)
		fz_bytes(f, q->r.buf, len);
	rc = mp_chseg_send(S.cli, &q->r, type, reqid, len);
	if (q->st != R_LOANED) {
		if (rc != -EINVAL)
			FAIL("send without a loan: %d", rc);
		return;
	}
	if (rc == 0) {
		if (len > S.max_msg)
			FAIL("send of %u bytes accepted", len);
		q->st = R_SENT;
		q->type = type;
		q->reqid = reqid;
		q->len = len;
		memcpy(q->data, q->r.buf, len);
	} else if (rc == -EMSGSIZE) {
		if (len <= S.max_msg)
			FAIL("send of %u bytes: -EMSGSIZE", len);
	} else if (rc == -EBADMSG) {
		if (S.clean)
			FAIL("send: -EBADMSG on a sound segment");
		q->st = R_IDLE;
	} else {
		FAIL("send: unexpected %d", rc);
	}
}

/* A reply in r: where it must be, and (clean) what the server sent. */
static void check_reply(struct creq *q)
{
	const uint8_t *a = area_a(S.cli, q->r.slot);

	if (q->r.rlen > S.max_msg ||
	    (q->r.rdata != a && q->r.rdata != area_b(S.cli, q->r.slot)))
		FAIL("reply view: %u bytes at the wrong place", q->r.rlen);
	touch(q->r.rdata, q->r.rlen);
	if (S.clean &&
	    (!q->replied || q->r.answer != q->answer || q->r.rlen != q->rlen ||
	     memcmp(q->r.rdata, q->reply, q->rlen) != 0))
		FAIL("reply differs from what the server sent");
}

static void do_wait(struct fz *f)
{
	struct creq *q = &S.req[fz_u8(f) % NREQ];
	int rc = mp_chseg_wait(S.cli, &q->r, 0);

	switch (q->st) {
	case R_IDLE:
	case R_LOANED:
		if (rc != -EINVAL)
			FAIL("wait without a request: %d", rc);
		return;
	case R_REPLIED:
		if (rc != 0)
			FAIL("wait after the reply: %d", rc);
		check_reply(q);
		return;
	}
	if (rc == 0) {
		q->st = R_REPLIED;
		check_reply(q);
	} else if (rc == -ETIMEDOUT) {
		if (S.clean && q->replied)
			FAIL("wait: the reply is there, -ETIMEDOUT");
	} else if (rc == -ESRCH || rc == -EBADMSG) {
		if (S.clean)
			FAIL("wait: %d on a sound segment", rc);
		q->st = R_IDLE;
	} else {
		FAIL("wait: unexpected %d", rc);
	}
}

static void do_cancel(struct fz *f)
{
	struct creq *q = &S.req[fz_u8(f) % NREQ];
	int st = q->st;
	int rc = mp_chseg_cancel(S.cli, &q->r);

	if (st == R_IDLE) {
		if (rc != -EINVAL)
			FAIL("cancel of nothing: %d", rc);
	} else if (st == R_LOANED) {
		if (rc != 0)
			FAIL("cancel of a loan: %d", rc);
		q->st = R_IDLE;
	} else if (st == R_REPLIED) {
		if (rc != 1)
			FAIL("cancel after the reply: %d", rc);
	} else if (rc == 0) {
		if (S.clean && q->replied)
			FAIL("cancel won over a reply already made");
		q->canceled = 1;
		q->st = R_IDLE;
	} else if (rc == 1) {
		if (S.clean && !q->replied)
			FAIL("cancel: a reply nobody made");
		q->st = R_REPLIED;
		check_reply(q);
	} else if (rc == -EBADMSG) {
		if (S.clean)
			FAIL("cancel: -EBADMSG on a sound segment");
		q->st = R_IDLE;
	} else {
		FAIL("cancel: unexpected %d", rc);
	}
}

static void do_done(struct fz *f)
{
	struct creq *q = &S.req[fz_u8(f) % NREQ];

	/* Done on a sent request abandons its slot (never reclaimed while
	 * we live): a misuse that is safe, but leaves nothing to check. */
	if (q->st == R_SENT)
		return;
	mp_chseg_done(S.cli, &q->r);
	q->st = R_IDLE;
}

static void do_call(struct fz *f)
{
	uint32_t len = fz_u16(f) % (S.max_msg + 8);
	uint32_t rmax = fz_u16(f) % (S.max_msg + 2);
	uint8_t *req = fz_alloc(len), *rbuf = fz_alloc(rmax);
	int32_t answer;
	int rc;

	fz_bytes(f, req, len);
	rc = mp_chseg_call(S.cli, 3, req, len, &answer, rbuf, rmax, 0);
	/* Nobody serves while we wait: only a scribbled reply comes in. */
	if (rc >= 0) {
		if (S.clean || (uint32_t)rc > S.max_msg)
			FAIL("call: %d", rc);
	} else if (rc == -EMSGSIZE) {
		if (len <= S.max_msg)
			FAIL("call of %u bytes: -EMSGSIZE", len);
	} else if (rc != -ETIMEDOUT && rc != -ESRCH && rc != -EBADMSG) {
		FAIL("call: unexpected %d", rc);
	} else if (S.clean && rc != -ETIMEDOUT) {
		FAIL("call: %d on a sound segment", rc);
	}
	free(req);
	free(rbuf);
}

static void do_bsend(struct fz *f)
{
	int32_t type = (int8_t)fz_u8(f);
	uint32_t len = fz_u16(f) % (S.max_msg + 8);
	uint8_t *data = fz_alloc(len);
	int rc, expect = 0;

	fz_bytes(f, data, len);
	if (S.clean) {
		if (len <= S.max_msg &&
		    (S.fifo_n + S.v_behind >= S.ring_records ||
		     S.fifo_bytes + S.v_bytes + rec_size(len) > S.ring_bytes))
			S.v_behind = S.v_bytes = 0; /* reads the position */
		if (len > S.max_msg)
			expect = -EMSGSIZE;
		else if (S.fifo_n < S.ring_records &&
			 S.fifo_bytes + rec_size(len) <= S.ring_bytes)
			expect = (int)(S.fifo_n + S.v_behind);
		else
			expect = -ETIMEDOUT;
	}
	rc = mp_chseg_bsend(S.cli, type, data, len, 0);
	if (rc >= 0) {
		if (len > S.max_msg || (uint32_t)rc >= S.ring_records)
			FAIL("bsend of %u bytes: %d", len, rc);
	} else if (rc == -EMSGSIZE) {
		if (len <= S.max_msg)
			FAIL("bsend of %u bytes: -EMSGSIZE", len);
	} else if (rc != -ETIMEDOUT && rc != -ESRCH && rc != -EBADMSG &&
		   rc != -ENOTRECOVERABLE) {
		FAIL("bsend: unexpected %d", rc);
	}
	if (S.clean) {
		if (rc != expect)
			FAIL("bsend of %u: %d, model %d", len, rc, expect);
		if (rc >= 0) {
			struct brec *x = &S.fifo[S.fifo_n++];

			x->type = type;
			x->len = len;
			memcpy(x->data, data, len);
			S.fifo_bytes += rec_size(len);
		}
	}
	free(data);
}

static void do_alive(void)
{
	int rc = mp_chseg_server_alive(S.cli);

	if (rc != 0 && rc != 1)
		FAIL("server_alive: %d", rc);
	if (S.clean && rc != 1)
		FAIL("server_alive: 0 while we serve");
	mp_chseg_kick(S.cli);
}

/* ---- scribbles ---- */

static uint8_t *slot_ctl(struct fz *f)
{
	return S.srv->slots + (size_t)(fz_u8(f) % S.nslots) * S.srv->block;
}

static void scribble(uint8_t *p, struct fz *f, uint32_t len)
{
	uint8_t old[64];

	memcpy(old, p, len);
	fz_bytes(f, p, len);
	if (memcmp(old, p, len) != 0)
		S.clean = 0;
}

static void do_slot_bytes(struct fz *f)
{
	uint8_t *s = slot_ctl(f);
	uint32_t off = fz_u8(f) % 64, len = 1 + fz_u8(f) % 16;

	if (off + len > 64)
		len = 64 - off;
	scribble(s + off, f, len);
}

/* A state word: raw, or a state (valid or not) with the slot's current
 * generation moved by -1..2 and the WAIT bit maybe. */
static void do_slot_state(struct fz *f)
{
	uint32_t *w = (uint32_t *)(void *)slot_ctl(f), v, old = *w;
	uint8_t mode = fz_u8(f);

	if (mode & 1)
		v = fz_u32(f);
	else
		v = (((old >> MP_CHSEG_GEN_SHIFT) + (mode >> 1 & 3) - 1)
		     << MP_CHSEG_GEN_SHIFT) |
		    (mode >> 3 & 7) | (mode & 0x40 ? MP_CHSEG_ST_WAIT : 0);
	*w = v;
	if (v != old)
		S.clean = 0;
}

/* A client pid: ours, init's, or raw (most raw pids are not alive). */
static void do_slot_pid(struct fz *f)
{
	struct mp_chseg_slot *s = (struct mp_chseg_slot *)(void *)slot_ctl(f);
	uint8_t mode = fz_u8(f) % 3;
	uint32_t v = mode == 0 ? (uint32_t)getpid() : mode == 1 ? 1 : fz_u32(f);

	if (s->pid != v)
		S.clean = 0;
	s->pid = v;
}

/* A slot's park word (the block's last line): the slot's own state word
 * (a forgery that makes a REPLIED slot look parked, so that a loan takes
 * it over even while its client reads the reply), or raw. */
static void do_park_word(struct fz *f)
{
	uint8_t *s = slot_ctl(f);
	uint32_t *p = (uint32_t *)(void *)(s + S.srv->block - 64), v, old = *p;

	v = fz_u8(f) & 1 ? fz_u32(f) : *(uint32_t *)(void *)s;
	*p = v;
	if (v != old)
		S.clean = 0;
}

static void do_area_bytes(struct fz *f)
{
	uint8_t *a = slot_ctl(f) + 64;
	uint32_t off = fz_u16(f) % (2 * S.srv->area), len = 1 + fz_u8(f) % 32;

	if (off + len > 2 * S.srv->area)
		len = 2 * S.srv->area - off;
	scribble(a + off, f, len);
}

/* Header words: the read-mostly line and the geometry opens check. */
static void do_hdr_word(struct fz *f)
{
	static const struct {
		uint16_t off, size;
		uint8_t matters;
	} w[] = {
		{offsetof(struct mp_chseg_hdr, hiwater), 4, 1},
		{offsetof(struct mp_chseg_hdr, srv_waiters), 4, 0},
		{offsetof(struct mp_chseg_hdr, alive), 4, 1},
		{offsetof(struct mp_chseg_hdr, srv_cpu), 4, 0},
		{offsetof(struct mp_chseg_hdr, bell), 4, 0},
		{offsetof(struct mp_chseg_hdr, free_seq), 4, 0},
		{offsetof(struct mp_chseg_hdr, free_waiters), 4, 0},
		{offsetof(struct mp_chseg_hdr, lane_hiwater), 4, 1},
		{offsetof(struct mp_chseg_hdr, lane_plain), 4, 0},
		{offsetof(struct mp_chseg_hdr, lanes_wanted), 4, 0},
		/* Read by an open only. */
		{offsetof(struct mp_chseg_hdr, nslots), 4, 0},
		{offsetof(struct mp_chseg_hdr, max_msg), 4, 0},
		{offsetof(struct mp_chseg_hdr, area), 4, 0},
		{offsetof(struct mp_chseg_hdr, block), 4, 0},
		{offsetof(struct mp_chseg_hdr, slots_off), 8, 0},
		{offsetof(struct mp_chseg_hdr, ring_off), 8, 0},
		{offsetof(struct mp_chseg_hdr, ring_size), 8, 0},
		{offsetof(struct mp_chseg_hdr, ring_bytes), 4, 0},
		{offsetof(struct mp_chseg_hdr, ring_records), 4, 0},
		{offsetof(struct mp_chseg_hdr, nlanes), 4, 0},
		{offsetof(struct mp_chseg_hdr, lane_bytes), 4, 0},
		{offsetof(struct mp_chseg_hdr, lanes_off), 8, 0},
		{offsetof(struct mp_chseg_hdr, srv_pid), 4, 0},
		{offsetof(struct mp_chseg_hdr, srv_start), 8, 0},
		{offsetof(struct mp_chseg_hdr, srv_pidns), 8, 0},
		/* Read by an open: only how clients publish to the ring. */
		{offsetof(struct mp_chseg_hdr, fence), 4, 0},
	};
	unsigned i = fz_u8(f) % (sizeof(w) / sizeof(w[0]));
	uint8_t *p = (uint8_t *)S.srv->hdr + w[i].off, mode = fz_u8(f);
	uint64_t v = 0, old;

	memcpy(&v, p, w[i].size);
	old = v;
	if (mode & 1)
		v += (uint64_t)(int64_t)(int8_t)fz_u8(f);
	else
		v = fz_u64(f);
	memcpy(p, &v, w[i].size);
	memcpy(&v, p, w[i].size);
	if (v != old && w[i].matters)
		S.clean = 0;
}

/* The ring's header (not its lock) and data area. */
static void do_ring_bytes(struct fz *f)
{
	uint8_t *base = (uint8_t *)S.srv->ring.sh;
	uint32_t hdr = (uint32_t)(S.srv->ring.data - base);
	uint32_t span =
		hdr - (RING_LOCK_END - RING_LOCK_OFF) + S.srv->ring.data_bytes;
	uint32_t off = fz_u16(f) % span, len = 1 + fz_u8(f) % 16;

	if (off >= RING_LOCK_OFF)
		off += RING_LOCK_END - RING_LOCK_OFF;
	if (off < RING_LOCK_OFF && off + len > RING_LOCK_OFF)
		len = RING_LOCK_OFF - off;
	if (off + len > hdr + S.srv->ring.data_bytes)
		len = hdr + S.srv->ring.data_bytes - off;
	scribble(base + off, f, len);
}

/* The lanes: owner line, positions, data.  Any byte may matter (the
 * state word, a position, a record the model expects): no model after. */
static void do_lane_bytes(struct fz *f)
{
	uint32_t span = S.srv->nlanes * S.srv->lane_stride, off, len;

	if (!span)
		return;
	off = fz_u16(f) % span;
	len = 1 + fz_u8(f) % 16;
	if (off + len > span)
		len = span - off;
	scribble(S.srv->lanes + off, f, len);
	S.clean = 0;
}

/* A second client opens the segment as it now is: refused, or a handle
 * whose geometry fits the object, which then serves a round of calls. */
static void do_open(struct fz *f)
{
	mp_chseg_t c2;
	struct mp_chseg_req r;
	size_t end, lanes, ring;
	int rc = mp_chseg_open(&c2, S.name);

	if (rc == -EBADMSG || rc == -ESRCH || rc == -EXDEV || rc == -EAGAIN)
		return;
	if (rc != 0)
		FAIL("open: unexpected %d", rc);
	/* Slots, then the ring, inside the object. */
	end = (size_t)(c2.slots - (uint8_t *)c2.shm.base) +
	      (size_t)c2.nslots * c2.block;
	lanes = (size_t)(c2.lanes - (uint8_t *)c2.shm.base);
	ring = (size_t)((uint8_t *)c2.ring.sh - (uint8_t *)c2.shm.base);
	if (c2.nslots < 1 || c2.nslots > MP_CHSEG_MAX_SLOTS || c2.max_msg < 1 ||
	    c2.max_msg > MP_CHSEG_MAX_MSG || c2.area < c2.max_msg ||
	    c2.block < 64 + 2 * c2.area || end > lanes ||
	    c2.nlanes > MP_CHSEG_MAX_LANES ||
	    (c2.nlanes &&
	     (c2.lane_stride < mp_lane_size(c2.lane_geo.data_bytes) ||
	      c2.lane_geo.max_payload != c2.max_msg)) ||
	    lanes + (size_t)c2.nlanes * c2.lane_stride > ring ||
	    ring + c2.ring.memsize > c2.shm.size)
		FAIL("open accepted a geometry that does not fit the object");
	c2.spin_ns = c2.yield_ns = 0;
	mp_chseg_set_identity(&c2, 9, "second");
	if (mp_chseg_loan(&c2, &r, 0) == 0) {
		fz_bytes(f, r.buf, r.cap);
		if (mp_chseg_send(&c2, &r, 1, 2, r.cap) == 0 &&
		    mp_chseg_wait(&c2, &r, 0) == 0)
			touch(r.rdata, r.rlen);
		if (mp_chseg_cancel(&c2, &r) == 1)
			mp_chseg_done(&c2, &r);
	}
	(void)mp_chseg_bsend(&c2, 1, NULL, 0, 0);
	mp_chseg_close(&c2);
	/* Its request, if any, is the server's to find: not ours. */
	S.clean = 0;
}

/* ---- driver ---- */

/*
 * One segment per geometry, made once per process and then put back as
 * it was after every input: its bytes from a snapshot taken just after
 * create and open (all but the two locks, which no input touches: the
 * alive lock stays held by this thread, the ring's lock is free between
 * calls), and both handles from copies taken at the same moment.  The
 * only resources a handle gains meanwhile are the reaper's pidfds
 * (mp_chseg_held.pidfd, -1 in the snapshot), closed here.  Making a
 * segment per input instead (shm_open, mmap, /proc reads, pidfd_open)
 * ran at a quarter of the speed.  The names are unlinked at exit.
 */
static struct geo {
	int ready;
	char name[64];
	mp_chseg_t srv, cli, srv0, cli0;
	uint8_t *snap;
	size_t size, skip[2][2]; /* the locks' bytes: [from, to) */
} G[NCFGS];

static void close_all(void)
{
	for (unsigned i = 0; i < NCFGS; i++)
		if (G[i].ready) {
			mp_chseg_close(&G[i].cli);
			mp_chseg_close(&G[i].srv);
			free(G[i].snap);
			G[i].ready = 0;
		}
}

static void setup(unsigned gi)
{
	const struct mp_chseg_cfg *cfg = &cfgs[gi];
	static int registered;
	struct geo *g = &G[gi];
	uint8_t *base;
	int rc, lanes;

	memset(&S, 0, sizeof(S));
	S.srv = &g->srv;
	S.cli = &g->cli;
	S.name = g->name;
	S.max_msg = cfg->max_msg;
	S.nslots = cfg->nslots;
	lanes = cfg->nlanes != MP_CHSEG_NO_LANES;
	S.ring_bytes = lanes ? cfg->lane_bytes : cfg->ring_bytes;
	S.ring_records = cfg->ring_records;
	rec_hdr = lanes ? 8u : 40u;
	S.clean = 1;
	if (g->ready) {
		base = g->srv.shm.base;
		for (int i = 0; i < MP_CHSEG_MAX_SLOTS; i++)
			if (g->srv.held[i].pidfd >= 0)
				close(g->srv.held[i].pidfd);
		for (int i = 0; i < MP_CHSEG_MAX_LANES; i++)
			if (g->srv.lanest[i].pidfd >= 0)
				close(g->srv.lanest[i].pidfd);
		memcpy(base, g->snap, g->skip[0][0]);
		memcpy(base + g->skip[0][1], g->snap + g->skip[0][1],
		       g->skip[1][0] - g->skip[0][1]);
		memcpy(base + g->skip[1][1], g->snap + g->skip[1][1],
		       g->size - g->skip[1][1]);
		g->srv = g->srv0;
		g->cli = g->cli0;
		return;
	}
	if (!registered++)
		atexit(close_all);
	snprintf(g->name, sizeof(g->name), "/mp-fuzz-chseg-%ld-%u",
		 (long)getpid(), gi);
	rc = mp_chseg_create(&g->srv, g->name, cfg);
	if (rc == -EEXIST) {
		/* Left by a crashed run of ours (same pid): take it over. */
		mp_shm_unlink(g->name);
		rc = mp_chseg_create(&g->srv, g->name, cfg);
	}
	if (rc != 0)
		FAIL("create: %d", rc);
	rc = mp_chseg_open(&g->cli, g->name);
	if (rc != 0)
		FAIL("open: %d", rc);
	g->srv.spin_ns = g->srv.yield_ns = g->srv.spin_cur = 0;
	g->cli.spin_ns = g->cli.yield_ns = 0;
	mp_chseg_set_identity(&g->cli, 7, "fuzz");
	base = g->srv.shm.base;
	g->size = g->srv.shm.size;
	g->snap = fz_alloc(g->size);
	memcpy(g->snap, base, g->size);
	g->skip[0][0] = (size_t)((uint8_t *)&g->srv.hdr->alive_lock - base);
	g->skip[0][1] = g->skip[0][0] + sizeof(mp_lock_sh_t);
	g->skip[1][0] =
		(size_t)((uint8_t *)g->srv.ring.sh - base) + RING_LOCK_OFF;
	g->skip[1][1] = g->skip[1][0] + RING_LOCK_END - RING_LOCK_OFF;
	if (g->skip[0][1] > g->skip[1][0] || g->skip[1][1] > g->size)
		FAIL("lock ranges out of order");
	g->srv0 = g->srv;
	g->cli0 = g->cli;
	g->ready = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	struct fz f = {d, n};
	int steps = 0;

	fz_trace_init();
	setup(fz_u8(&f) % NCFGS);

	while (f.n && steps++ < 256) {
		int op = fz_u8(&f) % NOPS;

		if (fz_trace)
			fprintf(stderr, "op %d (clean %d)\n", op, S.clean);
		switch (op) {
		case OP_NEXT:
			do_next();
			break;
		case OP_REPLY:
			do_reply(&f);
			break;
		case OP_REPLY_BUF:
			do_reply_buf(&f);
			break;
		case OP_BPOP:
			do_bpop(&f);
			break;
		case OP_REAP:
			do_reap(&f);
			break;
		case OP_SRV_WAIT:
			do_srv_wait();
			break;
		case OP_LOAN:
			do_loan(&f);
			break;
		case OP_SEND:
			do_send(&f);
			break;
		case OP_WAIT:
			do_wait(&f);
			break;
		case OP_CANCEL:
			do_cancel(&f);
			break;
		case OP_DONE:
			do_done(&f);
			break;
		case OP_CALL:
			do_call(&f);
			break;
		case OP_BSEND:
			do_bsend(&f);
			break;
		case OP_ALIVE:
			do_alive();
			break;
		case OP_SLOT_BYTES:
			do_slot_bytes(&f);
			break;
		case OP_SLOT_STATE:
			do_slot_state(&f);
			break;
		case OP_SLOT_PID:
			do_slot_pid(&f);
			break;
		case OP_AREA_BYTES:
			do_area_bytes(&f);
			break;
		case OP_HDR_WORD:
			do_hdr_word(&f);
			break;
		case OP_RING_BYTES:
			do_ring_bytes(&f);
			break;
		case OP_LANE_BYTES:
			do_lane_bytes(&f);
			break;
		case OP_PARK_WORD:
			do_park_word(&f);
			break;
		default:
			do_open(&f);
			break;
		}
	}
	return 0;
}
