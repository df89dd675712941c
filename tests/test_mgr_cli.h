/*
 * test_mgr_cli — a raw protocol client for the manager tests: frames are
 * built and parsed with the codec (lib/mp_wire.h), nothing of libmessip
 * is used, so the tests exercise the manager alone.
 *
 * Frames that arrive while the test waits for a particular answer (an
 * EVENT, a BDELIVER) are kept in a queue and returned by later receives,
 * in arrival order.
 */
#ifndef TEST_MGR_CLI_H
#define TEST_MGR_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "mp_wire.h"

#define TCLI_DATA_MAX 65536

/* A received frame with its own copy of the data. */
struct tcli_msg {
	struct mp_wire_msg m;
	uint8_t *data;          /* malloc'd copy (m.data points here) */
	struct tcli_msg *next;
};

struct tcli {
	int fd;
	uint8_t *in;            /* receive buffer */
	size_t inlen;
	uint32_t next_reqid;
	int32_t regno;
	uint64_t token;
	struct tcli_msg *queue, *qtail;
};

/* TCP connect to 127.0.0.1:port.  0 or -errno. */
int tcli_open(struct tcli *c, int port);

/* Close and free queued frames. */
void tcli_close(struct tcli *c);

/* Send m (reqid assigned when 0).  Returns the reqid, or -errno. */
int tcli_send(struct tcli *c, struct mp_wire_msg *m);

/* Send raw bytes.  0 or -errno. */
int tcli_send_raw(struct tcli *c, const void *buf, size_t len);

/*
 * Next frame (queued first), waiting up to timeout_ms.  Fills *out (the
 * caller frees with tcli_msg_free).  0, -ETIMEDOUT, -ECONNRESET (the
 * manager closed), -EPROTO (undecodable).
 */
int tcli_recv(struct tcli *c, struct tcli_msg **out, int timeout_ms);

/* Next frame of operation op (others are queued).  As tcli_recv. */
int tcli_recv_op(struct tcli *c, int op, struct tcli_msg **out,
		 int timeout_ms);

/* Send m and wait for the answer with its reqid.  As tcli_recv. */
int tcli_call(struct tcli *c, struct mp_wire_msg *m, struct tcli_msg **out,
	      int timeout_ms);

void tcli_msg_free(struct tcli_msg *t);

/* Wait until the manager closes the connection (EOF or reset), up to
 * timeout_ms.  Returns 0 when closed, -ETIMEDOUT otherwise.  Frames that
 * arrive meanwhile are dropped. */
int tcli_wait_closed(struct tcli *c, int timeout_ms);

/* ---- one-call helpers (return the status code of the answer, or a
 * negative errno from the transport) ---- */

/* Register (HELLO id, token 0 or a resume token): on a new connection to
 * port, or with port 0 on c's open connection. */
int tcli_hello(struct tcli *c, int port, const char *id, uint64_t token);
int tcli_create(struct tcli *c, const char *name, int32_t cap,
		int32_t *handle);
int tcli_delete(struct tcli *c, const char *name, int32_t *nclients);
/* CH_CONNECT (locate_ms >= 0 or -1: LOCATE with that wait; -2: plain). */
int tcli_connect(struct tcli *c, const char *name, int locate_ms,
		 int32_t *handle, int timeout_ms);
int tcli_disconnect(struct tcli *c, int32_t handle);
/* BSEND; *queued (may be NULL) gets the RESULT's b. */
int tcli_bsend(struct tcli *c, int32_t handle, int32_t type, const void *d,
	       uint32_t len, int32_t wait_ms, int32_t *queued,
	       int timeout_ms);
int tcli_back(struct tcli *c, int32_t handle, uint64_t seq);
int tcli_ping(struct tcli *c);
int tcli_bye(struct tcli *c);

#endif
