/*
 * mp_proxy — a small fault-injecting TCP proxy for the fault tests.
 *
 * The proxy runs in a child process (recorded with mp_test_fork, so the
 * harness kills it) and forwards between its listening port on 127.0.0.1
 * and a target port.  It understands the messip framing (lib/mp_wire.h)
 * just enough to cut a connection in the middle of a chosen frame and to
 * put itself on a client's direct links too:
 *
 *   - a program connects to the manager through the proxy (mp_proxy.ref);
 *     that is an MP_PROXY_MGR link;
 *   - with rewrite_info set on the MGR links, every CH_INFO the manager
 *     sends back has its server address replaced by a relay port of the
 *     proxy (one per server address) and its host token zeroed, so the
 *     client also reaches the server through the proxy, over TCP even
 *     when both ends share a host; those are MP_PROXY_DIRECT links.
 *
 * Faults, set per link kind and changeable at any time (mp_proxy_set):
 *
 *   delay_ms, jitter_ms  each chunk read is held delay + random(0..jitter)
 *                        ms before it is written on; chunks of one
 *                        direction keep their order (TCP cannot reorder a
 *                        stream), so jitter reorders only between
 *                        directions and between connections;
 *   split                written in pieces of at most this many bytes,
 *                        each its own write (1: byte by byte), with
 *                        piece_gap_us between pieces;
 *   stall[d]             direction d is neither read nor written: its
 *                        bytes pile up in the sender's socket;
 *   cut_op[d]            the next frame with this operation in direction
 *                        d is forwarded up to its half, then both sides
 *                        are reset (RST); one shot: the knob clears itself;
 *   reset_all            reset every connection of this kind now (one
 *                        shot);
 *   refuse               new connections are reset at once;
 *   watch                a string (NUL-terminated, empty: off): every
 *                        read that carries it whole counts in
 *                        watch_hits (what an eavesdropper on the link
 *                        would see; a string split across two reads is
 *                        not counted, so a test checks it is seen
 *                        without encryption before it trusts a 0).
 *
 * Direction 0 (MP_PROXY_FWD) is from the side that connected towards the
 * target; 1 (MP_PROXY_BACK) the other way.
 *
 * Invariants: the proxy never changes a byte it does not rewrite, never
 * forwards a byte out of order within a direction, and holds at most
 * MP_PROXY_QUEUE_MAX bytes per direction (it stops reading beyond that,
 * so back-pressure reaches the sender as it would without the proxy).
 */
#ifndef MP_PROXY_H
#define MP_PROXY_H

#include <stdint.h>
#include <sys/types.h>

#define MP_PROXY_MGR	   0 /* connections to the listening port */
#define MP_PROXY_DIRECT	   1 /* connections to a relay port */
#define MP_PROXY_FWD	   0
#define MP_PROXY_BACK	   1
#define MP_PROXY_QUEUE_MAX (1 << 20)
#define MP_PROXY_RELAYS	   8

struct mp_proxy_knobs {
	int delay_ms;
	int jitter_ms;
	int split;
	int piece_gap_us;
	int stall[2];
	int cut_op[2];
	int reset_all;
	int refuse;
	int rewrite_info; /* MGR links only */
	char watch[32];
};

struct mp_proxy_stats {
	long conns[2];	  /* accepted, per link kind */
	long active[2];	  /* open now */
	long bytes[2][2]; /* [kind][direction] forwarded */
	long cuts;	  /* connections reset by cut_op / reset_all */
	long rewrites;	  /* CH_INFO frames rewritten */
	long watch_hits[2]; /* reads carrying knobs.watch, per link kind */
};

struct mp_proxy_shared;

struct mp_proxy {
	pid_t pid;
	int port;     /* where programs connect instead of the target */
	char ref[64]; /* "127.0.0.1:port" */
	int ctl;      /* control pipe (write end) */
	struct mp_proxy_shared *sh;
};

/* Start a proxy towards 127.0.0.1:target_port with knobs k for MGR links
 * (DIRECT links start with none; k may be NULL).  0 or -errno. */
int mp_proxy_start(struct mp_proxy *px, int target_port,
		   const struct mp_proxy_knobs *k);

/* Replace the knobs of one link kind; they apply to data read from now
 * on (and stall / reset at once): returns once the proxy works with them
 * (or after 2 s). */
void mp_proxy_set(struct mp_proxy *px, int kind,
		  const struct mp_proxy_knobs *k);

/* A snapshot of the counters. */
void mp_proxy_stats(struct mp_proxy *px, struct mp_proxy_stats *st);

/* Wait until at least n cuts happened in all (up to timeout_ms): 0 or
 * -ETIMEDOUT. */
int mp_proxy_wait_cuts(struct mp_proxy *px, long n, int timeout_ms);

/* Kill the proxy and release it (idempotent). */
void mp_proxy_stop(struct mp_proxy *px);

#endif
