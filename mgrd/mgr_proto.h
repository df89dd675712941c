/*
 * mgr_proto — requests from a library connection (doc/protocol.md,
 * "library -> manager"): framing of the input, one handler per operation,
 * the answers, and the waits a request can be in (a BSEND parked on a full
 * ring, a LOCATE waiting for its name).
 *
 * Order: requests of one connection are handled in arrival order and
 * answered in that order, except LOCATE (answered when the name appears;
 * replies carry the request id).  A parked BSEND holds back every later
 * request of its connection (per-sender order of buffered messages), but
 * BACK frames queued behind it are still handled so that a process
 * sending to its own full channel cannot deadlock itself.
 *
 * Bad input closes the connection and is logged once for it: a frame the
 * codec refuses, a first frame other than HELLO, an operation a library
 * never sends.  A data frame over max_message_size (header alone says so)
 * is answered EMSGSIZE and its bytes skipped without being buffered.
 */
#ifndef MGR_PROTO_H
#define MGR_PROTO_H

#include "mgr_conn.h"
#include "mgr_worker.h"

/* Largest refused frame whose bytes are skipped instead of closing. */
#define MGR_SKIP_MAX (16u * 1024 * 1024)

/*
 * Handle every complete frame buffered on c (stopping at a parked BSEND).
 * Returns 0, or -errno when c must be closed (already logged).
 */
int mgr_proto_input(struct mgr_worker *w, struct mgr_conn *c);

/* Retry or time out LOCATE waiters.  retry: also look the names up again
 * (a channel was created). */
void mgr_proto_locates(struct mgr_worker *w, int retry);

/* c is closing: drop its LOCATE waiters. */
void mgr_proto_forget(struct mgr_worker *w, struct mgr_conn *c);

#endif
