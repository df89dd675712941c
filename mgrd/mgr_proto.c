/*
 * mgr_proto — request handling for library connections (see mgr_proto.h).
 *
 * Handlers return 0 (frame done), PARK (leave the frame first in the input
 * and stop), or -errno (close the connection; the reason is logged).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mgr_deliver.h"
#include "mgr_log.h"
#include "mgr_proto.h"
#include "mgr_sec.h"
#include "mp_auth.h"
#include "mp_alloc.h"
#include "mp_time.h"

#define PARK             1
#define MAX_LOCATES_CONN 64
#define RESUME_WAIT_NS   (2000 * 1000000LL)

static int send_msg(struct mgr_worker *w, struct mgr_conn *c,
		    const struct mp_wire_msg *m)
{
	int rc = mgr_conn_send(c, m);

	if (rc == -ENOBUFS) {
		if (mgr_ratelimit_take(&w->peer_rl, NULL))
			mgr_log(MGR_LOG_WARNING, "MESSIP-MGR-SLOWPEER",
				"peer %s (registration %u) does not read its "
				"answers; dropping it",
				c->peer, c->regno);
		return rc;
	}
	if (rc == 0)
		mgr_worker_dirty(w, c);
	return rc;
}

/* RESULT a=status b c u. */
static int result_c(struct mgr_worker *w, struct mgr_conn *c, uint32_t reqid,
		    int32_t status, int32_t b, int32_t fc, uint64_t u)
{
	struct mp_wire_msg m;

	memset(&m, 0, sizeof(m));
	m.op = MP_OP_RESULT;
	m.reqid = reqid;
	m.a = status;
	m.b = b;
	m.c = fc;
	m.u = u;
	return send_msg(w, c, &m);
}

static int result(struct mgr_worker *w, struct mgr_conn *c, uint32_t reqid,
		  int32_t status, int32_t b, uint64_t u)
{
	return result_c(w, c, reqid, status, b, 0, u);
}

/* All zeros: created without a ticket (a random one is never that). */
static int has_ticket(const uint8_t *t)
{
	uint8_t any = 0;

	for (int i = 0; i < MGR_TICKET_LEN; i++)
		any |= t[i];
	return any != 0;
}

static int ch_info(struct mgr_worker *w, struct mgr_conn *c, uint32_t reqid,
		   int32_t status, const struct mgr_chinfo *info,
		   const char *name)
{
	struct mp_wire_msg m;

	memset(&m, 0, sizeof(m));
	m.op = MP_OP_CH_INFO;
	m.reqid = reqid;
	m.a = status;
	if (info) {
		m.b = info->slot;
		m.c = (int32_t)info->server_regno;
		m.u = info->host_token;
		snprintf(m.id, sizeof(m.id), "%.*s", MP_WIRE_ID_MAX,
			 info->server_id);
		snprintf(m.addr, sizeof(m.addr), "%s", info->addr);
		/* The ticket goes only to a peer that passed authentication
		 * and the access policy (the only callers with info). */
		if (has_ticket(info->ticket)) {
			m.data = info->ticket;
			m.datalen = MGR_TICKET_LEN;
		}
		name = info->name;
	}
	snprintf(m.name, sizeof(m.name), "%s", name);
	return send_msg(w, c, &m);
}

/* Log a bad-input event for c, once per connection. */
static void bad_input(struct mgr_worker *w, struct mgr_conn *c,
		      const char *msgid, const char *what)
{
	uint32_t supp = 0;
	char more[48] = "";

	__atomic_add_fetch(&w->st->workers[w->index].errors, 1,
			   __ATOMIC_RELAXED);
	/* Once per connection, and a flood of bad connections is cut to a
	 * few lines by the worker's limiter. */
	if (c->logged_bad++ || !mgr_ratelimit_take(&w->peer_rl, &supp))
		return;
	if (supp)
		snprintf(more, sizeof(more), " (%u lines suppressed)", supp);
	mgr_log(MGR_LOG_WARNING, msgid, "peer %s%s%s: %s; closing%s", c->peer,
		c->id[0] ? " id " : "", c->id, what, more);
}

static void unpark(struct mgr_worker *w, struct mgr_conn *c)
{
	if (c->park_deadline) {
		c->park_deadline = 0;
		c->park_slot = -1;
		if (w->nparked)
			w->nparked--;
	}
}

_Static_assert(MGR_TICKET_LEN == MP_AUTH_NONCE, "ticket size");

/* ---- authentication and access policy ------------------------------------ */

/*
 * A frame from a peer that has not proven the secret yet
 * (doc/protocol.md, "Authentication").  Nothing is allocated for it: the
 * first HELLO is answered with a CHALLENGE and otherwise ignored, then
 * only AUTH is accepted.  A wrong proof is answered AUTH a=EACCES, logged
 * (once per connection, rate-limited across connections) and the
 * connection closed; any other frame closes it at once.
 */
static int on_unauthed(struct mgr_worker *w, struct mgr_conn *c,
		       const struct mp_wire_msg *m)
{
	const struct mp_auth_key *key = mgr_sec_key();
	uint8_t proof[MP_AUTH_MAC];
	struct mp_wire_msg r;
	char what[64];

	memset(&r, 0, sizeof(r));
	r.reqid = m->reqid;
	if (m->op == MP_OP_HELLO && !c->challenged) {
		if (mp_auth_nonce(c->nonce, sizeof(c->nonce)) < 0)
			return -EIO;
		c->challenged = 1;
		r.op = MP_OP_CHALLENGE;
		r.data = c->nonce;
		r.datalen = MP_AUTH_NONCE;
		return send_msg(w, c, &r);
	}
	if (m->op != MP_OP_AUTH || !c->challenged) {
		snprintf(what, sizeof(what),
			 "%s before authentication", mp_wire_op_name(m->op));
		bad_input(w, c, "MESSIP-MGR-AUTH", what);
		return -EACCES;
	}
	r.op = MP_OP_AUTH;
	/* The nonce is spent whatever the outcome: one proof per nonce. */
	c->challenged = 0;
	if (mp_auth_verify(key, c->nonce, m->data, m->datalen, proof) < 0) {
		bad_input(w, c, "MESSIP-MGR-AUTH",
			  "authentication failed (wrong or missing proof)");
		r.a = EACCES;
		c->state = MGR_CONN_CLOSING;
		c->deadline_ns = w->now + 1000000000LL;
		return send_msg(w, c, &r);
	}
	c->authed = 1;
	/* The HELLO that follows gets a handshake deadline of its own. */
	c->deadline_ns = 0;
	r.data = proof;
	r.datalen = MP_AUTH_MAC;
	return send_msg(w, c, &r);
}

/* The access policy for op on name by c's peer: 0 or -EACCES (logged,
 * rate-limited).  The kernel identity is looked up once, on first use. */
static int policy_check(struct mgr_worker *w, struct mgr_conn *c,
			enum mgr_sec_op op, const char *name)
{
	if (!mgr_sec_has_policy())
		return 0;
	if (!c->ident_done) {
		mgr_sec_identify(c->fd, &c->ident);
		c->ident_done = 1;
	}
	if (mgr_sec_allowed(&c->ident, op, name) == 0)
		return 0;
	if (mgr_ratelimit_take(&w->peer_rl, NULL)) {
		char who[32] = "unknown identity";

		if (c->ident.known)
			snprintf(who, sizeof(who), "uid %u", c->ident.uid);
		mgr_log(MGR_LOG_INFO, "MESSIP-MGR-DENIED",
			"peer %s (%s, registration %u): %s of channel '%s' "
			"denied by the access policy",
			c->peer, who, c->regno,
			op == MGR_SEC_CREATE ? "create" : "connect", name);
	}
	return -EACCES;
}

/* ---- handlers ------------------------------------------------------------ */

static int on_hello(struct mgr_worker *w, struct mgr_conn *c,
		    const struct mp_wire_msg *m)
{
	struct mgr_reginfo ri;
	struct mp_wire_msg r;
	int rc, resumed = 0;

	if (c->state != MGR_CONN_HANDSHAKE) {
		bad_input(w, c, "MESSIP-MGR-BADOP", "HELLO on a registered "
						    "connection");
		return -EPROTO;
	}
	memset(&r, 0, sizeof(r));
	r.op = MP_OP_WELCOME;
	r.reqid = m->reqid;
	snprintf(r.addr, sizeof(r.addr), "%s", w->host_token_str);
	if (m->u) {
		rc = mgr_state_reg_resume(w->st, m->u, c->peer, &ri);
		resumed = rc == 0;
	} else {
		rc = mgr_state_reg_new(w->st, m->id, m->a, c->peer, &ri);
	}
	if (rc == -EBUSY) {
		/* The connection it had may be on a worker that just died
		 * and is not reaped yet: wait a little for the orphaning. */
		if (!c->park_deadline) {
			c->park_deadline = w->now + RESUME_WAIT_NS;
			w->nparked++;
		}
		if (w->now < c->park_deadline)
			return PARK;
		rc = -ESTALE;
	}
	unpark(w, c);
	if (rc == -ESTALE) {
		/* The library will start a new registration on this same
		 * connection; the handshake deadline still runs. */
		r.a = ESTALE;
		return send_msg(w, c, &r);
	}
	if (rc < 0) {
		mgr_log(MGR_LOG_WARNING, "MESSIP-MGR-REGFULL",
			"peer %s: cannot register: %s", c->peer,
			strerror(-rc));
		r.a = -rc;
		c->state = MGR_CONN_CLOSING;
		c->deadline_ns = w->now + 1000000000LL;
		return send_msg(w, c, &r);
	}
	c->reg = ri.reg;
	c->regno = ri.regno;
	c->token = ri.token;
	snprintf(c->id, sizeof(c->id), "%s", m->id);
	c->state = MGR_CONN_OPEN;
	c->deadline_ns = 0;
	w->reg_conn[ri.reg] = c;
	/* Its pid can be checked here only when it is on this host:
	 * untrusted, but a wrong token only changes how long a failed link
	 * is held. */
	mgr_state_reg_same_host(w->st, ri.reg,
				w->host_token && m->name[0] &&
					strtoull(m->name, NULL, 10) ==
						w->host_token);
	if (resumed && mgr_deliver_attach(w, c) < 0)
		return -ENOMEM;
	mgr_log(MGR_LOG_DEBUG, "MESSIP-MGR-HELLO",
		"peer %s: registration %u id '%s' pid %d%s", c->peer, ri.regno,
		c->id, m->a, resumed ? " (resumed)" : "");
	r.a = 0;
	r.b = (int32_t)ri.regno;
	r.u = ri.token;
	return send_msg(w, c, &r);
}

static int on_ch_create(struct mgr_worker *w, struct mgr_conn *c,
			const struct mp_wire_msg *m)
{
	uint32_t gen = 0;
	int slot;

	if (policy_check(w, c, MGR_SEC_CREATE, m->name) < 0)
		return result(w, c, m->reqid, EACCES, 0, 0);
	/* The channel's ticket: MP_AUTH_NONCE bytes, or none (a server
	 * whose clients cannot be authenticated by a library: they refuse
	 * a CH_INFO without one). */
	if (m->datalen != MGR_TICKET_LEN && m->datalen != 0)
		return result(w, c, m->reqid, EINVAL, 0, 0);
	slot = mgr_state_ch_create(w->st, c->reg, m->name, m->a, m->addr, m->u,
				   m->datalen ? m->data : NULL, &gen);
	if (slot < 0)
		return result(w, c, m->reqid, -slot, 0, 0);
	if (!mgr_conn_srv_add(c, slot, gen)) {
		uint32_t n;
		int s;

		mgr_state_ch_delete(w->st, c->reg, m->name, &n, &s);
		return result(w, c, m->reqid, ENOMEM, 0, 0);
	}
	mgr_log(MGR_LOG_DEBUG, "MESSIP-MGR-CREATE",
		"channel '%s' (slot %d) created by registration %u (%s) "
		"from %s",
		m->name, slot, c->regno, c->id, c->peer);
	return result(w, c, m->reqid, 0, slot, gen);
}

static int on_ch_delete(struct mgr_worker *w, struct mgr_conn *c,
			const struct mp_wire_msg *m)
{
	uint32_t nclients = 0;
	int rc, slot = -1;

	rc = mgr_state_ch_delete(w->st, c->reg, m->name, &nclients, &slot);
	if (rc == 0 && nclients == 0)
		mgr_conn_srv_del(c, mgr_conn_srv_find(c, slot));
	return result(w, c, m->reqid, -rc, (int32_t)nclients, 0);
}

/* Add a LOCATE waiter for m; 0 or -ENOSPC. */
static int locate_add(struct mgr_worker *w, struct mgr_conn *c,
		      const struct mp_wire_msg *m)
{
	struct mgr_locate *l;

	if (c->nlocate >= MAX_LOCATES_CONN)
		return -ENOSPC;
	l = mp_calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->conn = c;
	l->reqid = m->reqid;
	l->deadline_ns = mp_time_deadline(m->a);
	snprintf(l->name, sizeof(l->name), "%s", m->name);
	l->next = w->locates;
	w->locates = l;
	c->nlocate++;
	return 0;
}

/* Look name up for c; on success record the link and answer CH_INFO.
 * Returns 1 (answered), 0 (no such name), -errno (close c). */
static int try_connect(struct mgr_worker *w, struct mgr_conn *c,
		       uint32_t reqid, const char *name)
{
	struct mgr_chinfo info;
	int slot = mgr_state_ch_connect(w->st, c->reg, name, &info);

	if (slot == -ENOENT)
		return 0;
	if (slot < 0)
		return ch_info(w, c, reqid, -slot, NULL, name) < 0 ? -ENOBUFS
								   : 1;
	if (mgr_conn_link_add(c, slot, info.gen) < 0)
		return -ENOMEM;
	return ch_info(w, c, reqid, 0, &info, NULL) < 0 ? -ENOBUFS : 1;
}

static int on_ch_connect(struct mgr_worker *w, struct mgr_conn *c,
			 const struct mp_wire_msg *m)
{
	int rc;

	if (policy_check(w, c, MGR_SEC_CONNECT, m->name) < 0)
		return ch_info(w, c, m->reqid, EACCES, NULL, m->name);
	rc = try_connect(w, c, m->reqid, m->name);
	if (rc != 0)
		return rc < 0 ? rc : 0;
	if (!(m->flags & MP_WIRE_F_LOCATE) || m->a == 0)
		return ch_info(w, c, m->reqid, ENOENT, NULL, m->name);
	/* Register interest first, then look again: a channel created in
	 * between either is found now or wakes us. */
	mgr_state_locate_wait(w->st);
	rc = try_connect(w, c, m->reqid, m->name);
	if (rc != 0)
		return rc < 0 ? rc : 0;
	rc = locate_add(w, c, m);
	if (rc < 0)
		return ch_info(w, c, m->reqid, -rc, NULL, m->name);
	return 0;
}

static int on_ch_disconnect(struct mgr_worker *w, struct mgr_conn *c,
			    const struct mp_wire_msg *m)
{
	int i = mgr_conn_link_find(c, m->b), rc;

	if (i < 0)
		return result(w, c, m->reqid, EACCES, 0, 0);
	rc = mgr_state_ch_disconnect(w->st, c->reg, m->b, c->links[i].gen);
	mgr_conn_link_del(c, i);
	/* A channel that is already gone needs no DISCONNECT: done. */
	if (rc == -ESRCH)
		rc = 0;
	return result(w, c, m->reqid, -rc, 0, 0);
}

/* RESULT of a BSEND: c = max_message_size + 1, so that 0 (an older
 * manager) means "unknown" to the library; u = records of this size the
 * ring still has room for (the library's credit for pipelining). */
static int bsend_result(struct mgr_worker *w, struct mgr_conn *c,
			uint32_t reqid, int32_t status, int32_t b,
			uint64_t room)
{
	return result_c(w, c, reqid, status, b,
			(int32_t)w->cfg.max_message_size + 1, room);
}

static int on_bsend(struct mgr_worker *w, struct mgr_conn *c,
		    const struct mp_wire_msg *m)
{
	int slot = m->b, i, rc;
	uint32_t gen;

	i = mgr_conn_srv_find(c, slot);
	if (i >= 0) {
		gen = c->srv[i]->gen;
	} else {
		i = mgr_conn_link_find(c, slot);
		if (i < 0) {
			unpark(w, c);
			return bsend_result(w, c, m->reqid, EACCES, 0, 0);
		}
		gen = c->links[i].gen;
	}
	rc = mgr_state_bsend(w->st, c->reg, slot, gen, m->reqid, m->a, m->data,
			     m->datalen);
	if (rc == -ETIMEDOUT && m->c != 0) {
		if (!c->park_deadline) {
			c->park_deadline = mp_time_deadline(m->c);
			c->park_slot = slot;
			w->nparked++;
		}
		if (w->now < c->park_deadline) {
			/* Ask for a wake-up first, then try once more, so
			 * room made in between is not missed. */
			mgr_state_park(w->st, slot);
			rc = mgr_state_bsend(w->st, c->reg, slot, gen, m->reqid,
					     m->a, m->data, m->datalen);
			if (rc == -ETIMEDOUT)
				return PARK;
		}
	}
	unpark(w, c);
	/* A run of pipelined BSENDs is answered by the RESULT of its last
	 * one (the library takes it for all): one frame, not one each.
	 * c tells the library which sizes it may pipeline. */
	if (rc >= 0 && (m->flags & MP_WIRE_F_PIPE) && w->pipe_more)
		return 0;
	if (rc >= 0)
		return bsend_result(w, c, m->reqid, 0, rc,
				    (uint64_t)mgr_state_room(w->st, slot, gen,
							     m->datalen));
	if (rc == -ENOTRECOVERABLE || rc == -EINVAL)
		rc = -EIO;
	return bsend_result(w, c, m->reqid, -rc, 0, 0);
}

static int on_back(struct mgr_worker *w, struct mgr_conn *c,
		   const struct mp_wire_msg *m)
{
	int i = mgr_conn_srv_find(c, m->b);

	if (i < 0) {
		/* A BACK for a channel deleted meanwhile is normal. */
		mgr_log(MGR_LOG_DEBUG, "MESSIP-MGR-BACK",
			"peer %s: BACK for channel %d it does not serve",
			c->peer, m->b);
		return 0;
	}
	if (m->flags & MP_WIRE_F_EVENT)
		return mgr_deliver_ack_events(w, c, i, m->u);
	return mgr_deliver_ack(w, c, i, m->u);
}

static int on_death_notify(struct mgr_worker *w, struct mgr_conn *c,
			   const struct mp_wire_msg *m)
{
	int rc = mgr_state_death_notify(w->st, c->reg, m->a != 0);

	return result(w, c, m->reqid, -rc, 0, 0);
}

static int on_ping(struct mgr_worker *w, struct mgr_conn *c,
		   const struct mp_wire_msg *m)
{
	struct mp_wire_msg r;

	memset(&r, 0, sizeof(r));
	r.op = MP_OP_PONG;
	r.reqid = m->reqid;
	return send_msg(w, c, &r);
}

static int on_bye(struct mgr_worker *w, struct mgr_conn *c,
		  const struct mp_wire_msg *m)
{
	mgr_state_reg_end(w->st, c->reg, 1);
	mgr_worker_unbind(w, c);
	mgr_proto_forget(w, c);
	c->state = MGR_CONN_CLOSING;
	/* Give the answer a second to leave; then close regardless. */
	c->deadline_ns = w->now + 1000000000LL;
	return result(w, c, m->reqid, 0, 0, 0);
}

static int dispatch(struct mgr_worker *w, struct mgr_conn *c,
		    const struct mp_wire_msg *m)
{
	char what[64];

	if (!c->authed)
		return on_unauthed(w, c, m);
	if (c->state == MGR_CONN_HANDSHAKE && m->op != MP_OP_HELLO) {
		snprintf(what, sizeof(what), "first frame is %s, not HELLO",
			 mp_wire_op_name(m->op));
		bad_input(w, c, "MESSIP-MGR-HANDSHAKE", what);
		return -EPROTO;
	}
	switch (m->op) {
	case MP_OP_HELLO:
		return on_hello(w, c, m);
	case MP_OP_CH_CREATE:
		return on_ch_create(w, c, m);
	case MP_OP_CH_DELETE:
		return on_ch_delete(w, c, m);
	case MP_OP_CH_CONNECT:
		return on_ch_connect(w, c, m);
	case MP_OP_CH_DISCONNECT:
		return on_ch_disconnect(w, c, m);
	case MP_OP_BSEND:
		return on_bsend(w, c, m);
	case MP_OP_BACK:
		return on_back(w, c, m);
	case MP_OP_DEATH_NOTIFY:
		return on_death_notify(w, c, m);
	case MP_OP_PING:
		return on_ping(w, c, m);
	case MP_OP_PONG:
		return 0;
	case MP_OP_BYE:
		return on_bye(w, c, m);
	default:
		snprintf(what, sizeof(what), "unexpected operation %s",
			 mp_wire_op_name(m->op));
		bad_input(w, c, "MESSIP-MGR-BADOP", what);
		return -EPROTO;
	}
}

/* While the first frame (first bytes) is parked, handle the BACK frames
 * right behind it and cut them out of the input. */
static int lookahead_backs(struct mgr_worker *w, struct mgr_conn *c,
			   size_t first)
{
	uint32_t max = (uint32_t)w->cfg.max_message_size;
	struct mp_wire_msg m;
	size_t off = first;

	for (;;) {
		int n = mp_wire_decode(mgr_conn_in_ptr(c) + off,
				       mgr_conn_in_avail(c) - off, max, &m);
		int rc;

		if (n <= 0 || m.op != MP_OP_BACK)
			return 0;
		rc = on_back(w, c, &m);
		if (rc < 0)
			return rc;
		mgr_conn_cut(c, off, (size_t)n);
	}
}

/* Is the frame at offset off of c's input a whole pipelined BSEND? */
static int next_is_pipe(const struct mgr_conn *c, size_t off, uint32_t max)
{
	size_t avail = mgr_conn_in_avail(c);
	struct mp_wire_hdr h;

	if (avail - off < MP_WIRE_HDR_SIZE ||
	    mp_wire_decode_hdr(mgr_conn_in_ptr(c) + off, avail - off, max,
			       &h) <= 0)
		return 0;
	return h.op == MP_OP_BSEND && (h.flags & MP_WIRE_F_PIPE) &&
	       avail - off >= MP_WIRE_HDR_SIZE + (size_t)h.len;
}

int mgr_proto_input(struct mgr_worker *w, struct mgr_conn *c)
{
	uint32_t max;
	struct mp_wire_msg m;
	struct mp_wire_hdr h;
	char what[96];
	int rc;

	while (c->state != MGR_CONN_CLOSING) {
		size_t avail = mgr_conn_in_avail(c);

		/* Before registration only handshake frames are expected: a
		 * data frame larger than AUTH is refused on its header.
		 * (Per frame: the HELLO before it may have registered.) */
		max = c->state == MGR_CONN_OPEN
			      ? (uint32_t)w->cfg.max_message_size
			      : MGR_HS_DATA_MAX;

		if (c->skip) {
			size_t n = avail < c->skip ? avail : (size_t)c->skip;

			mgr_conn_consume(c, n);
			c->skip -= n;
			if (c->skip)
				break;
			continue;
		}
		if (avail == 0)
			break;
		rc = mp_wire_decode_hdr(mgr_conn_in_ptr(c), avail, max, &h);
		if (rc == 0)
			break;
		if (rc == -EMSGSIZE && c->state == MGR_CONN_OPEN &&
		    (mp_wire_fields(h.op) & MP_WF_DATA) &&
		    h.len <= MGR_SKIP_MAX) {
			/* Refuse it without buffering a byte of it. */
			if (mgr_ratelimit_take(&c->rl, NULL))
				mgr_log(MGR_LOG_INFO, "MESSIP-MGR-TOOBIG",
					"peer %s: %s of %u bytes over "
					"max_message_size %u; refused",
					c->peer, mp_wire_op_name(h.op), h.len,
					max);
			mgr_conn_consume(c, MP_WIRE_HDR_SIZE);
			c->skip = h.len;
			if (result(w, c, h.reqid, EMSGSIZE, 0, 0) < 0)
				return -ENOBUFS;
			continue;
		}
		if (rc < 0) {
			snprintf(what, sizeof(what),
				 "bad frame header (%s: version %u, op %u, "
				 "length %u)",
				 strerror(-rc), h.version, h.op, h.len);
			bad_input(w, c, "MESSIP-MGR-BADFRAME", what);
			return rc;
		}
		if (avail < MP_WIRE_HDR_SIZE + (size_t)h.len)
			break;
		rc = mp_wire_decode(mgr_conn_in_ptr(c), avail, max, &m);
		if (rc <= 0) {
			snprintf(what, sizeof(what), "bad %s frame (%s)",
				 mp_wire_op_name(h.op),
				 strerror(rc ? -rc : EPROTO));
			bad_input(w, c, "MESSIP-MGR-BADFRAME", what);
			return rc ? rc : -EPROTO;
		}
		/* A whole frame is in: whatever deadline ran (handshake,
		 * partial frame) is met - except the one from accept to a
		 * proven secret, which no number of frames extends. */
		if (c->authed)
			c->deadline_ns = 0;
		__atomic_add_fetch(&w->st->workers[w->index].requests, 1,
				   __ATOMIC_RELAXED);
		{
			int r;

			w->pipe_more = next_is_pipe(c, (size_t)rc, max);
			r = dispatch(w, c, &m);

			if (r == PARK)
				return c->state == MGR_CONN_OPEN
					       ? lookahead_backs(w, c,
								 (size_t)rc)
					       : 0;
			if (r < 0)
				return r;
		}
		mgr_conn_consume(c, (size_t)rc);
	}
	/* Before registration a connection must complete a HELLO in time
	 * (again after an ESTALE answer); after it, any frame it started. */
	if (c->state != MGR_CONN_CLOSING && !c->park_deadline) {
		if (c->state == MGR_CONN_HANDSHAKE || mgr_conn_in_avail(c) ||
		    c->skip) {
			if (!c->deadline_ns)
				c->deadline_ns =
					w->now +
					w->cfg.handshake_timeout_ms * 1000000LL;
		} else {
			c->deadline_ns = 0;
		}
	}
	return 0;
}

void mgr_proto_locates(struct mgr_worker *w, int retry)
{
	struct mgr_locate **pp = &w->locates, *l;

	if (retry && w->locates)
		mgr_state_locate_wait(w->st);
	while ((l = *pp) != NULL) {
		struct mgr_conn *c = l->conn;
		int rc = 0;

		if (retry)
			rc = try_connect(w, c, l->reqid, l->name);
		if (rc == 0 && w->now >= l->deadline_ns)
			rc = ch_info(w, c, l->reqid, ETIMEDOUT, NULL, l->name) <
					     0
				     ? -ENOBUFS
				     : 1;
		if (rc == 0) {
			pp = &l->next;
			continue;
		}
		/* Answered (or the connection is broken: its close will
		 * notice the full output). */
		*pp = l->next;
		c->nlocate--;
		free(l);
	}
}

void mgr_proto_forget(struct mgr_worker *w, struct mgr_conn *c)
{
	struct mgr_locate **pp = &w->locates, *l;

	while ((l = *pp) != NULL) {
		if (l->conn == c) {
			*pp = l->next;
			free(l);
		} else {
			pp = &l->next;
		}
	}
	c->nlocate = 0;
	unpark(w, c);
}
