/*
 * mgr_deliver — streaming buffered records and events to servers (see
 * mgr_deliver.h).
 *
 * Invariant per channel (struct mgr_srvch): flight[] holds, in ring order,
 * the records sent and not yet acknowledged, each with the ring position
 * just after it; cursor is the position after the last one sent.
 * Releasing up to flight[k].end therefore frees exactly the records up to
 * and including k.  ev_sent is the number of the last EVENT written on
 * this connection: events come in increasing order per channel, so one not
 * above it was sent already and waits for its acknowledgement.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "mgr_deliver.h"
#include "mgr_log.h"
#include "mp_ring.h"

/* Bytes of a BDELIVER before its data: header, a b c u, id (1 + 8). */
#define BDELIVER_HEAD_MAX (MP_WIRE_HDR_SIZE + 3 * 4 + 8 + 1 + MP_WIRE_ID_MAX)

/* Channel gone (or its ring unusable): forget it locally. */
static void srv_drop(struct mgr_conn *c, struct mgr_srvch *s)
{
	mgr_conn_srv_del(c, mgr_conn_srv_find(c, s->slot));
}

/* Encode one record peeked at s->cursor into c's output.  Returns 1
 * (sent), 0 (ring empty), -EAGAIN (no output room), -errno (ring error). */
static int send_one(struct mgr_worker *w, struct mgr_conn *c,
		    struct mgr_srvch *s, mp_ring_t *ring)
{
	uint32_t maxp = (uint32_t)w->cfg.max_message_size;
	struct mp_ring_rec meta;
	struct mp_wire_msg m;
	uint64_t cur = s->cursor;
	uint8_t *p;
	int len, hl;

	p = mgr_conn_out_reserve(c, BDELIVER_HEAD_MAX + maxp);
	if (!p && !mgr_conn_out_pending(c)) {
		/* Not the peer's backlog (no EPOLLOUT will come to resume
		 * us) but no memory: retry on the tick. */
		w->deliver_blocked = 1;
		return -EAGAIN;
	}
	if (!p)
		return -EAGAIN;
	/* Peek the payload straight into the output, behind room for the
	 * longest head; the head is encoded afterwards (it needs the id). */
	len = mp_ring_peek(ring, &cur, &meta, p + BDELIVER_HEAD_MAX, maxp, 0);
	if (len == -ETIMEDOUT)
		return 0;
	if (len < 0)
		return len;
	if ((uint32_t)len > maxp)
		return -EBADMSG; /* the ring accepted more than it may hold */
	memset(&m, 0, sizeof(m));
	m.op = MP_OP_BDELIVER;
	m.b = s->slot;
	m.a = meta.type;
	m.c = (int32_t)meta.sender;
	m.u = meta.seq;
	meta.id[MP_WIRE_ID_MAX] = 0;
	memcpy(m.id, meta.id, MP_WIRE_ID_MAX + 1);
	m.id[strnlen(m.id, MP_WIRE_ID_MAX)] = 0;
	m.datalen = (uint32_t)len;
	hl = mp_wire_encode_head(&m, p, BDELIVER_HEAD_MAX);
	if (hl < 0)
		return hl;
	if (hl != BDELIVER_HEAD_MAX)
		memmove(p + hl, p + BDELIVER_HEAD_MAX, (size_t)len);
	mgr_conn_out_commit(c, (size_t)hl + (size_t)len);
	s->flight[(s->head + s->nflight) % MGR_WINDOW].seq = meta.seq;
	s->flight[(s->head + s->nflight) % MGR_WINDOW].end = cur;
	s->nflight++;
	s->cursor = cur;
	return 1;
}

/* Stream channel s of c.  Returns 0, or -errno when c must close. */
static int deliver_ch(struct mgr_worker *w, struct mgr_conn *c,
		      struct mgr_srvch *s)
{
	mp_ring_t *ring = mgr_state_ring(w->st, s->slot, s->gen);
	int rc, sent = 0;

	if (!ring) {
		srv_drop(c, s);
		return 0;
	}
	if (!s->started) {
		s->cursor = mp_ring_tail(ring);
		s->head = s->nflight = 0;
		s->started = 1;
	}
	while (s->nflight < MGR_WINDOW &&
	       mgr_conn_out_pending(c) < MGR_OUT_HIGH) {
		rc = send_one(w, c, s, ring);
		if (rc == 1) {
			sent++;
			continue;
		}
		if (rc == 0 || rc == -EAGAIN)
			break;
		if (rc == -EINVAL) {
			/* Our cursor is not in the ring (cannot happen with
			 * one consumer): start again from the tail; the
			 * library drops what it already has. */
			mgr_log(MGR_LOG_WARNING, "MESSIP-MGR-RINGCURSOR",
				"channel '%.*s' (slot %d, server %s): "
				"delivery cursor lost; re-sending from the "
				"oldest record",
				MP_CHTAB_NAME_MAX, w->st->chans[s->slot].name,
				s->slot, c->peer);
			s->started = 0;
			break;
		}
		/* The ring lies (corrupt record or header): this worker is
		 * its only consumer, so it may reset it; what was queued is
		 * lost and said so. */
		mgr_log(MGR_LOG_ERROR, "MESSIP-MGR-RINGCORRUPT",
			"channel '%.*s' (slot %d, server %s, registration %u): "
			"ring error %s; discarding its queued records",
			MP_CHTAB_NAME_MAX, w->st->chans[s->slot].name, s->slot,
			c->peer, c->regno, strerror(-rc));
		mp_ring_reset(ring);
		s->started = 0;
		break;
	}
	if (sent)
		mgr_worker_dirty(w, c);
	return 0;
}

int mgr_deliver_conn(struct mgr_worker *w, struct mgr_conn *c)
{
	if (c->state != MGR_CONN_OPEN)
		return 0;
	/* deliver_ch may drop entries: walk backwards. */
	for (uint32_t i = c->nsrv; i-- > 0;) {
		int rc = deliver_ch(w, c, c->srv[i]);

		if (rc < 0)
			return rc;
	}
	return 0;
}

void mgr_deliver_all(struct mgr_worker *w)
{
	for (struct mgr_conn *c = w->conns; c; c = c->next)
		if (c->nsrv)
			mgr_deliver_conn(w, c);
}

/*
 * The library acknowledged records this worker has not sent (it got them
 * from a worker that died before it could free them): skip past those
 * with a sequence up to seq.  Returns how many; *end moves past them.
 */
static uint32_t ack_unsent(struct mgr_worker *w, struct mgr_srvch *s,
			   uint64_t seq, uint64_t *end)
{
	mp_ring_t *ring = mgr_state_ring(w->st, s->slot, s->gen);
	struct mp_ring_rec meta;
	uint32_t n = 0;
	uint8_t none;

	if (!ring)
		return 0;
	for (;;) {
		uint64_t cur = s->cursor;

		if (mp_ring_peek(ring, &cur, &meta, &none, 0, 0) < 0 ||
		    meta.seq > seq)
			break;
		s->cursor = cur;
		*end = cur;
		n++;
	}
	return n;
}

int mgr_deliver_ack(struct mgr_worker *w, struct mgr_conn *c, int idx,
		    uint64_t seq)
{
	struct mgr_srvch *s = c->srv[idx];
	uint64_t end = 0;
	uint32_t n = 0;
	int rc;

	while (s->nflight && s->flight[s->head].seq <= seq) {
		end = s->flight[s->head].end;
		s->head = (s->head + 1) % MGR_WINDOW;
		s->nflight--;
		n++;
	}
	if (!s->nflight && s->started)
		n += ack_unsent(w, s, seq, &end);
	if (!n)
		return 0;
	rc = mgr_state_release(w->st, s->slot, s->gen, end, n);
	if (rc == -ESRCH) {
		srv_drop(c, s);
		return 0;
	}
	if (rc < 0) {
		mgr_log(MGR_LOG_ERROR, "MESSIP-MGR-RINGCORRUPT",
			"channel '%.*s' (slot %d, server %s): release failed: "
			"%s",
			MP_CHTAB_NAME_MAX, w->st->chans[s->slot].name, s->slot,
			c->peer, strerror(-rc));
		s->started = 0;
	}
	return deliver_ch(w, c, s);
}

/* mgr_emit_fn: queue EVENT number seq for the server's connection,
 * unless it was sent there already. */
static int emit_event(void *ctx, int server, int slot, int32_t ev,
		      uint32_t regno, const char *id, uint64_t seq)
{
	struct mgr_worker *w = ctx;
	struct mgr_conn *c = w->reg_conn[server];
	struct mp_wire_msg m;
	struct mgr_srvch *s;
	int i;

	if (!c || c->state != MGR_CONN_OPEN)
		return -1;
	i = mgr_conn_srv_find(c, slot);
	if (i < 0)
		return -1; /* not in its cache (cannot be): hold it back */
	s = c->srv[i];
	if (seq <= s->ev_sent)
		return 1;
	if (mgr_conn_out_pending(c) >= MGR_OUT_HIGH) {
		w->events_blocked = 1;
		return -1;
	}
	memset(&m, 0, sizeof(m));
	m.op = MP_OP_EVENT;
	m.b = slot;
	m.a = ev;
	m.c = (int32_t)regno;
	m.u = seq;
	snprintf(m.id, sizeof(m.id), "%.*s", MP_WIRE_ID_MAX, id);
	if (mgr_conn_send(c, &m) < 0) {
		w->events_blocked = 1;
		return -1;
	}
	s->ev_sent = seq;
	mgr_worker_dirty(w, c);
	return 0;
}

void mgr_deliver_events(struct mgr_worker *w)
{
	w->events_blocked = 0;
	if (mgr_state_take_events(w->st, emit_event, w) < 0)
		w->events_blocked = 1; /* no memory: retry on the tick */
}

int mgr_deliver_ack_events(struct mgr_worker *w, struct mgr_conn *c, int idx,
			   uint64_t seq)
{
	struct mgr_srvch *s = c->srv[idx];
	int rc = mgr_state_ack_events(w->st, c->reg, s->slot, s->gen, seq);

	if (rc == -ESRCH)
		srv_drop(c, s);
	return 0;
}

static void attach_cb(void *ctx, int slot, uint32_t gen, int created)
{
	struct mgr_conn *c = ctx;

	if (created)
		mgr_conn_srv_add(c, slot, gen);
	else
		mgr_conn_link_add(c, slot, gen);
}

int mgr_deliver_attach(struct mgr_worker *w, struct mgr_conn *c)
{
	mgr_state_reg_list(w->st, c->reg, attach_cb, c);
	return 0;
}
