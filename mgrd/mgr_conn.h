/*
 * mgr_conn — one client connection of a worker: socket, bounded input and
 * output buffers, and what the worker knows locally about the
 * registration it carries.
 *
 * Input holds at most one maximal frame (header + fixed fields +
 * max_message_size) plus whatever arrived behind it, so memory per
 * connection is bounded however the peer behaves.  Output grows while the
 * peer does not read, up to c->out_hard; past MGR_OUT_HIGH the worker
 * stops reading requests and stops streaming deliveries to it, so in
 * practice only a peer that never reads gets near the hard limit, and it
 * is then dropped.
 *
 * Local caches (valid for the life of the connection, rebuilt from the
 * segment when a registration is resumed):
 *   links: channels this registration connected to, (slot, generation);
 *   srv:   channels it created, with the delivery window of each ring
 *          and how far its events were sent.
 */
#ifndef MGR_CONN_H
#define MGR_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "mgr_log.h"
#include "mgr_sec.h"
#include "mp_tls.h"
#include "mp_wire.h"

#define MGR_OUT_HIGH  (256u * 1024)      /* stop reading / delivering */
#define MGR_OUT_HARD  (4u * 1024 * 1024) /* drop the peer (default of
					    max_conn_output) */
/* Input buffered before registration: the largest handshake frame (HELLO,
 * AUTH) with room to spare, so an unauthenticated peer costs the manager
 * the connection struct and at most this much. */
#define MGR_HS_IN_MAX   512
#define MGR_HS_DATA_MAX (2 * MP_AUTH_NONCE) /* AUTH: nonce + proof */
#define MGR_WINDOW    256                /* unacknowledged BDELIVERs */

enum mgr_conn_state {
	MGR_CONN_HANDSHAKE = 0, /* waiting for HELLO */
	MGR_CONN_OPEN,          /* registered */
	MGR_CONN_CLOSING,       /* BYE answered: flush, then close */
};

struct mgr_buf {
	uint8_t *p;
	size_t   off;  /* first unconsumed byte */
	size_t   len;  /* end of valid bytes */
	size_t   cap;
};

/* One in-flight BDELIVER: its sequence and the ring position after it. */
struct mgr_flight {
	uint64_t seq;
	uint64_t end;
};

struct mgr_srvch {
	int      slot;
	uint32_t gen;
	int      started;        /* cursor valid (else start at the tail) */
	uint64_t cursor;         /* next record to send */
	uint32_t head, nflight;  /* FIFO of flight[] */
	uint64_t ev_sent;        /* events sent up to this sequence number
				    (they wait for the acknowledgement) */
	struct mgr_flight flight[MGR_WINDOW];
};

struct mgr_chref {
	int      slot;
	uint32_t gen;
};

struct mgr_conn {
	int      fd;
	struct mp_tls *tls;      /* NULL: plain TCP (mgr_sec_tls) */
	int      tls_ready;      /* on the worker's TLS-input list */
	struct mgr_conn *tls_next;
	enum mgr_conn_state state;
	char     peer[64];
	struct mgr_buf in, out;
	int64_t  deadline_ns;    /* handshake or partial-frame deadline, 0 */
	uint64_t skip;           /* bytes of a refused frame still to drop */
	uint32_t epoll_mask;     /* events currently registered */
	int64_t  stall_ns;       /* output pending without progress since */

	/* registration */
	int      reg;            /* index in the segment, -1 before HELLO */
	uint32_t regno;
	uint64_t token;
	char     id[MP_WIRE_ID_MAX + 1];

	struct mgr_chref *links;
	uint32_t nlinks, caplinks;
	struct mgr_srvch **srv;
	uint32_t nsrv, capsrv;

	/* a BSEND waiting for ring room (its frame stays first in `in`) */
	int64_t  park_deadline;  /* 0: not parked */
	int      park_slot;
	uint32_t nlocate;        /* LOCATE waiters of this connection */

	/* security (mgr_sec.h, doc/protocol.md "Authentication") */
	size_t   out_hard;       /* output past this: drop the peer */
	int      peer_idx;       /* per-peer counter taken, -1: none */
	int      authed;         /* secret proven (or none configured) */
	int      challenged;     /* CHALLENGE sent; nonce is valid */
	uint8_t  nonce[MP_AUTH_NONCE];
	int      ident_done;     /* ident looked up (lazily, for the policy) */
	struct mgr_ident ident;

	struct mgr_ratelimit rl;
	int      dirty;          /* on the worker's flush list */
	int      logged_bad;     /* a bad-input line was written */
	struct mgr_conn *prev, *next;       /* all connections */
	struct mgr_conn *dirty_next;
};

/* New connection for an accepted fd (authenticated already when no
 * secret is configured, mgr_sec_key(); TLS when the manager has a
 * certificate, mgr_sec_tls(): the handshake then runs inside the first
 * reads, under the handshake deadline).  NULL on ENOMEM. */
struct mgr_conn *mgr_conn_new(int fd, const char *peer);

/* Close the fd and free everything (not the registration in the
 * segment: that is the caller's business). */
void mgr_conn_free(struct mgr_conn *c);

/*
 * Read what the socket has, up to `limit` buffered input bytes.  Returns
 * bytes read (> 0), 0 at EOF, -EAGAIN (nothing now), -ENOBUFS (the buffer
 * is at limit: consume first), or another -errno; with TLS also -EPROTO
 * (the TLS handshake failed: not TLS 1.3, or the peer refused our
 * certificate; mp_tls_why says which) and -EPIPE (a bad TLS record).
 * With TLS, input may remain decodable inside TLS although the socket no
 * longer reports it: mgr_conn_tls_input() says so.
 */
int mgr_conn_read(struct mgr_conn *c, size_t limit);

/* Input is held by TLS: read again before waiting for the socket. */
static inline int mgr_conn_tls_input(const struct mgr_conn *c)
{
	return c->tls && mp_tls_has_input(c->tls);
}

/* Output waits: plaintext, or ciphertext TLS could not send yet. */
static inline int mgr_conn_out_waiting(const struct mgr_conn *c)
{
	return c->out.len > c->out.off ||
	       (c->tls && mp_tls_pending_out(c->tls));
}

/* Unconsumed input. */
static inline size_t mgr_conn_in_avail(const struct mgr_conn *c)
{
	return c->in.len - c->in.off;
}

static inline const uint8_t *mgr_conn_in_ptr(const struct mgr_conn *c)
{
	return c->in.p + c->in.off;
}

/* Drop n bytes of input from the front. */
void mgr_conn_consume(struct mgr_conn *c, size_t n);

/* Remove n bytes at offset at (from the unconsumed start) of the input. */
void mgr_conn_cut(struct mgr_conn *c, size_t at, size_t n);

/* Bytes waiting to be written. */
static inline size_t mgr_conn_out_pending(const struct mgr_conn *c)
{
	return c->out.len - c->out.off;
}

/*
 * Room for n more output bytes; returns where to write them (then
 * mgr_conn_out_commit), or NULL: -ENOBUFS (the peer is past c->out_hard)
 * or no memory.
 */
uint8_t *mgr_conn_out_reserve(struct mgr_conn *c, size_t n);
void mgr_conn_out_commit(struct mgr_conn *c, size_t n);

/* Encode m (data included) into the output.  0, -ENOBUFS, -EINVAL. */
int mgr_conn_send(struct mgr_conn *c, const struct mp_wire_msg *m);

/* Write pending output (through TLS when on).  0 all written, 1 some
 * left (wait for EPOLLOUT), -errno on a broken connection.  Output left behind starts (or, when
 * some was written, restarts) c->stall_ns at now_ns; all written clears
 * it. */
int mgr_conn_flush(struct mgr_conn *c, int64_t now_ns);

/* Local caches.  Find returns the index or -1; add returns 0 or -ENOMEM. */
int mgr_conn_link_find(const struct mgr_conn *c, int slot);
int mgr_conn_link_add(struct mgr_conn *c, int slot, uint32_t gen);
void mgr_conn_link_del(struct mgr_conn *c, int idx);
int mgr_conn_srv_find(const struct mgr_conn *c, int slot);
struct mgr_srvch *mgr_conn_srv_add(struct mgr_conn *c, int slot,
				   uint32_t gen);
void mgr_conn_srv_del(struct mgr_conn *c, int idx);

#endif
