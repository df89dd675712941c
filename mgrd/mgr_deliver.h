/*
 * mgr_deliver — the manager -> server direction: buffered records streamed
 * from a channel's ring as BDELIVER, acknowledgements (BACK) that free
 * them, and events (EVENT) taken from the segment, which leave it only
 * when acknowledged too (BACK with MP_WIRE_F_EVENT).
 *
 * A worker streams only the rings of channels created by registrations it
 * serves, so each ring has exactly one consumer.  Records are sent in ring
 * order, at most MGR_WINDOW unacknowledged per channel and only while the
 * connection's output is under MGR_OUT_HIGH; a record leaves the ring only
 * when BACK covers it.  A resumed registration starts again from the ring's
 * tail, so unacknowledged records are sent again with their original
 * sequence numbers (the library drops those it already has).  Events work
 * the same way: each carries its sequence number (u), a connection sends a
 * channel's events once and in order, and a resumed registration gets the
 * unacknowledged ones again.
 */
#ifndef MGR_DELIVER_H
#define MGR_DELIVER_H

#include <stdint.h>

#include "mgr_conn.h"
#include "mgr_worker.h"

/* Stream what is available to c's channels.  0, or -errno to close c. */
int mgr_deliver_conn(struct mgr_worker *w, struct mgr_conn *c);

/* mgr_deliver_conn for every connection that created channels. */
void mgr_deliver_all(struct mgr_worker *w);

/* BACK: records of channel srv[idx] up to seq were received.  Frees them
 * and sends more.  0 or -errno to close c. */
int mgr_deliver_ack(struct mgr_worker *w, struct mgr_conn *c, int idx,
		    uint64_t seq);

/* Send the events owed to this worker's connections (not yet sent on
 * them). */
void mgr_deliver_events(struct mgr_worker *w);

/* BACK with MP_WIRE_F_EVENT: the events of channel srv[idx] up to seq
 * were received.  0 (also when the channel is gone meanwhile). */
int mgr_deliver_ack_events(struct mgr_worker *w, struct mgr_conn *c, int idx,
			   uint64_t seq);

/* After a resume: rebuild c's local caches (created and connected
 * channels) from the segment.  0 or -ENOMEM. */
int mgr_deliver_attach(struct mgr_worker *w, struct mgr_conn *c);

#endif
