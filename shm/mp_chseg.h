/*
 * mp_chseg — a channel's segment: the same-host fast path of one channel.
 *
 * A server's library creates one segment per channel; clients on the same
 * host (same /dev/shm) map it and pass synchronous requests and buffered
 * messages through it with no socket and, on the hot path, no system call.
 * The module knows nothing of sockets or of the library; it is a set of
 * slots, a ring, a doorbell, and the rules below.
 *
 * Layout (all offsets from the start of the mapping, fixed at create time
 * from nslots, max_msg and the ring size, recomputed and compared by every
 * opener; nothing in the segment is a pointer):
 *
 *   mp_shm header (64)
 *   channel header: geometry and the server's identity (read-only after
 *     publish); a read-mostly line (hiwater, srv_waiters, alive,
 *     srv_cpu); the doorbell line (bell); the free-slot line (free_seq,
 *     free_waiters); the server-alive robust lock
 *   nslots slot blocks, each 128-byte aligned:
 *     ctl   (64 bytes, one cache line): state word, client pid/uid/gid,
 *           sender number and id, request id, type and length of the
 *           request, the client's CPU, answer, length and area of the
 *           reply.  A 0-byte round trip moves only this line.
 *     A     max_msg bytes (rounded up to 64): the request; also the reply
 *           when the server replies by copy (the request's view ends with
 *           the reply, so the area can be reused)
 *     B     max_msg bytes (rounded up to 64): the reply the server writes
 *           in place (a loaned reply buffer), while it may still read A
 *     park  (64 bytes, the block's last line, formerly padding): the park
 *           word, written by the slot's own client (see "Parked slots")
 *   nlanes lanes (mp_lane.h), each a single-producer queue of buffered
 *     messages owned by one client process at a time
 *   one mp_ring for buffered messages (clients push, the server pops)
 *
 * Buffered messages: a client process claims a lane at its first bsend
 * (mp_lane_claim: a CAS on the lane's state word, then its pid and
 * identity) and sends through it until it closes its handle: no lock in
 * the segment, an 8-byte record header, its threads serialised by a
 * process-local mutex (bmx, never held while waiting).  When no lane is
 * free it uses the ring, asks the server to look for dead owners
 * (lanes_wanted, a kick), and tries again every LANE_RETRY sends, but
 * only when none of its ring records can still be queued (none in
 * flight, the ring empty): a sender's messages are popped in the order it
 * sent them, across the switch too.  The server pops from the lanes in
 * use and the ring in turn, up to LANE_RUN records from one before the
 * next.  A lane whose owner closed (CLOSED) or is found dead (pidfd,
 * mp_chseg_reap, at most once a second unless a client asked) is freed
 * once drained: nothing accepted is lost.  A lane whose record or head
 * lies is broken (-EBADMSG once, its content dropped); its owner sees
 * that at its next send, gives it back and uses the ring.  Each lane is
 * bounded by ring_records, like the ring: the bound of the queue is per
 * sender for lane owners, and the count a bsend returns is that of the
 * sender's own queue (an upper bound, as mp_ring_push's).
 *
 * A slot's state word (32 bits) holds a state (bits 0-2), the WAIT bit
 * (bit 3: with REQ, the client sleeps on this word, so whoever changes
 * the state must futex-wake it; with CLAIMED, a take-over of a parked
 * slot whose new client has not stored its pid yet) and a 24-bit
 * generation (bits 8-31) bumped by every claim, every re-use of a parked
 * slot (at its publish) and by every server reclaim, so no
 * compare-and-swap can succeed on a slot that was recycled under it
 * (ABA).  Bits 4-7 are always zero.
 *
 *   FREE --claim (client CAS)--> CLAIMED --publish (client CAS)--> REQ
 *   REQ --reply (server CAS)--> REPLIED --done: park (park word only)
 *   REPLIED parked --re-use (its client: park word CAS; publish CAS
 *     REPLIED(g) -> REQ(g + 1))--> REQ
 *   REPLIED parked --take-over (another client: park word CAS, then
 *     CAS)--> CLAIMED|WAIT --pid stored (CAS)--> CLAIMED
 *   REPLIED parked --client closes (park word CAS, CAS, store)--> FREE
 *   REQ --cancel (client CAS)--> CANCELED --reclaim (server CAS)--> FREE
 *   CLAIMED --abandon (client store)--> FREE
 *   any state of a dead client --reap (server)--> FREE
 *   an impossible state word --reset (server)--> FREE, -EBADMSG reported
 *
 * Parked slots: a client that is done with a reply leaves its slot
 * REPLIED, with its identity in it, and stores that exact state word into
 * the slot's park word (release: its reads of the reply come first).  A
 * slot is parked when its park word equals its REPLIED state word; the
 * parked word is never PARK_TAKEN (all ones, reserved bits set).  The
 * park word is the one place where everyone who wants a parked slot
 * meets: the first to CAS it from the parked word to all ones has it.
 * Its own client (same pid) then re-uses it as it is: identity fields
 * rewritten only where they differ, request written, and one CAS
 * REPLIED(g) -> REQ(g + 1) publishes it -- the only write of the round
 * trip into the line the server scans, so the line moves to the server
 * once per request instead of at the free, the claim and the publish.  A
 * loan re-used and not sent is parked again.  A client that finds no
 * FREE slot and none parked by itself takes over another's parked slot
 * (CAS to CLAIMED|WAIT at the next generation, its pid, CAS to CLAIMED),
 * whatever that client is doing meanwhile: a parked slot holds no view,
 * and its owner, coming back, finds its park word taken or its state
 * moved and claims another (or takes one over in turn).  A client that
 * closes frees the slots its process parked.  A parked slot is not "in
 * use" for the server's sleep (it does not wake up to reap it); the
 * reaper, whenever it runs, reclaims a dead client's parked slot like
 * any REPLIED slot of a dead client, and a client in need takes it over
 * without waiting for that.  Measured (tests/bench_chseg, rt): see
 * mp_chseg.c's notes.
 *
 * The server frees a slot (reap, reclaim of a withdrawn request, reset)
 * in two steps: it takes the slot over first (CAS, or for a reset an
 * exchange, to CLAIMED at the next generation: no client writes or
 * claims it then), clears the pid, and only then stores FREE.  It never
 * writes a field of a slot it does not hold.
 *
 * The server does not mark a request it has taken in the slot: that would
 * cost one more round of the slot's cache line between the two CPUs on
 * every request, and the race that matters (reply against cancel) is
 * settled by the reply CAS anyway.  It keeps "taken" in its process-local
 * table instead (struct mp_chseg_held), which is also what it trusts.
 *
 * Invariants:
 * - Exactly one party may write a slot's fields at a time, and the state
 *   says who (with the park word for a parked slot: whoever took it): the
 *   client in CLAIMED and REPLIED, the server in REQ (only
 *   answer, rlen, rarea and area B or A, and only once it has taken the
 *   request).  CANCELED is a hand-over to the server.  Every transition
 *   between two parties is one atomic operation on the state word, so a
 *   reply racing a cancel has exactly one winner: either the client gets
 *   the reply, or the server learns (reply returns -ECANCELED) that its
 *   reply was discarded.
 * - A request becomes visible only by the client's store of REQ, after
 *   every byte of it is written; a reply only by the server's CAS to
 *   REPLIED.  Both are release operations paired with acquire loads.
 * - Doorbell (Dekker): a client publishes REQ with a sequentially
 *   consistent CAS, then reads srv_waiters; a server about to sleep
 *   increments srv_waiters (seq_cst), then re-scans.  One of them sees
 *   the other, so a request is never left unseen by a sleeping server,
 *   and a client makes a system call only when the server really sleeps.
 *   The same scheme protects the ring: mp_ring commits a record with a
 *   store of its head that is either seq_cst or, when the header's fence
 *   flag says the server fences from afar, a plain release store; the
 *   server then calls mp_fence_remote() (membarrier, mp_futex.h) after
 *   raising srv_waiters and before it counts the ring, which makes the
 *   clients' side of the pairing a full barrier only when someone sleeps
 *   (and only once some client published plainly:
 *   mp_ring_fence_producers).  Free slots are the exception: a client
 *   frees its slot with a plain release store and reads free_waiters
 *   without a barrier (a locked instruction there cost ~10% of a small
 *   round trip), so a client waiting for a free slot may miss that wake
 *   and looks again every millisecond; slots the server reclaims do use
 *   the handshake.  The client side of a reply needs no
 *   handshake: the WAIT bit lives in the state word itself, and the
 *   server's CAS to REPLIED returns the old word, WAIT included.
 * - Everything read from the segment is untrusted.  Handles keep their own
 *   copies of the geometry; a state word, length, area index or hiwater
 *   read from the segment is checked against them before use, and read
 *   once (no second read between check and use).  A bad slot yields
 *   -EBADMSG for that slot only and is reset; other slots keep working.
 *   The payload of a view may change under its reader if a peer
 *   misbehaves: it is data, never used as a size or an offset.
 *
 * Liveness:
 * - Server: it holds a robust, process-shared mutex (the "alive lock") for
 *   its lifetime, from the thread that created the segment; and the
 *   header records its pid, its start time and its PID namespace.  A
 *   client blocked on a reply, a free slot or a full ring sleeps in slices
 *   of at most MP_CHSEG_LIVE_SLICE_MS (the handle's live_ns, which a
 *   test may lengthen) and between slices asks: alive flag
 *   cleared (clean close) -> gone; alive lock busy -> alive, without a
 *   system call; otherwise (EOWNERDEAD: the holder thread died) the pid is
 *   checked through a pidfd opened at attach (exact, immune to pid reuse;
 *   the attach compares the server's recorded start time, so the pidfd
 *   cannot name a recycled pid), or with kill(pid, 0) where there is no
 *   pidfd.  So a client gets -ESRCH within about 0.2 s of the server's
 *   death (the test asserts < 1 s), and at once after a clean close,
 *   which clears the flag and wakes every sleeper.
 * - Clients: each slot records the pid of the client holding it.  The
 *   server remembers, per slot, the state word it last saw and since when;
 *   a slot whose word has not moved for reap_ns has its client checked
 *   (pidfd, else kill(pid, 0) -- which cannot tell a zombie that its
 *   parent has not reaped from a live process; a pidfd can), and a dead
 *   client's slot is reclaimed and reported (MP_CHSEG_GONE).  A slot
 *   that shows pid 0 is never blamed: a live client shows it just after
 *   its claim (before its pid store) and while it frees a loan it never
 *   sent (pid cleared, FREE not yet stored), without its state word
 *   moving.  Nor is CLAIMED|WAIT: a take-over of a parked slot before the
 *   new client's pid store (the slot still names the previous owner).
 *   So a client killed within one of those stores leaves its slot taken
 *   until the segment closes (a correct client spends nanoseconds
 *   there).  The check
 *   runs from mp_chseg_server_wait
 *   while it sleeps (in slices of reap_ns / 2 whenever a slot is in use),
 *   every 1024 mp_chseg_next calls if reap_ns / 2 has passed, and on
 *   demand (mp_chseg_reap).  A client that finds every slot taken rings
 *   the doorbell once, so a sleeping server starts looking.  No manager
 *   is involved.  A request the server holds is not freed when its client
 *   dies or withdraws: the server's view of it is valid until its reply,
 *   which then returns -ESRCH or -ECANCELED and frees the slot.
 * - Both ends must share a PID namespace for pids to mean anything: an
 *   opener in another one gets -EXDEV and must use TCP.
 *
 * Credentials: the client writes its pid, uid and gid into the slot; the
 * server copies them out with the request and checks them once per (slot,
 * pid) against /proc/<pid> (exists, owned by that uid and gid), reporting
 * the result in MP_CHSEG_CRED_CHECKED.  That catches garbage and stale
 * values, not a deliberate liar: any process allowed to write the segment
 * (the segment's mode and group decide who) can claim the identity of a
 * live process with the same owner.  The kernel-verified identity of a
 * peer is the one its TCP registration carries (SO_PEERCRED).
 *
 * Waiting: spin, then yield, then sleep -- and spin only for a peer that
 * can be running.  Each side advertises the CPU it runs on (sched_getcpu,
 * a few ns): the server in srv_cpu when it starts waiting (written only
 * when it changes), a client in its slot with each request.  A waiter
 * whose peer was last seen on its own CPU knows the peer is not running
 * (it is), so it skips the spin and yields at once; a client also skips
 * it when the server sleeps (srv_waiters != 0), since spinning for a
 * sleeping peer only burns the core that peer needs to wake up on.
 * Otherwise a waiter busy-waits for up to spin_ns (pause instruction; the
 * clock is read once per 32 turns, and only after the first 32), the
 * server on an adaptive budget (halved after a wait that ended asleep,
 * doubled back, from 1 us, after one that did not).  Then it polls with
 * sched_yield() for up to yield_ns, which costs ~1 us a turn when the CPU
 * is free and hands it over at once when another process wants it.  Then
 * it sleeps on a futex, in slices (liveness checks, reaping).
 *
 * Why: on the 2-core build machine, with other jobs holding a core, the
 * client and server often share one CPU.  Spinning there cost a whole
 * spin budget per hand-over (14,000 round trips/s with a 20 us spin, the
 * same-CPU case measured with tests/bench_chseg); skipping the spin for a
 * peer on the same CPU and yielding instead gave 250,000-1,400,000/s in
 * the same conditions, while a bare spinning ping-pong between two
 * processes collapsed to a few hundred per second.  When the two run on
 * different CPUs the spin catches the reply without any system call.
 * Defaults (MP_CHSEG_SPIN_NS_DEFAULT 20 us, MP_CHSEG_YIELD_NS_DEFAULT
 * 50 us) cover a futex wake-up on that machine (20-45 us), i.e. a waiter
 * gives up spinning after about the time sleeping would have cost.  The
 * environment variables MESSIP_SPIN_NS and MESSIP_YIELD_NS override them
 * at open/create, and the handle fields can be set directly (0 disables
 * the phase).
 *
 * Threads: client calls are thread-safe (each request owns its slot).
 * Server calls on one handle must be serialised by the caller, except
 * mp_chseg_kick, which any thread of any process mapping the segment may
 * call at any time.  The creator's handle should be closed by the thread
 * that created it (the alive lock is per thread; see mp_chseg_close).
 * A handle must not be used across fork(): the child opens its own.
 */
#ifndef MP_CHSEG_H
#define MP_CHSEG_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "mp_lane.h"
#include "mp_lock.h"
#include "mp_ring.h"
#include "mp_shm.h"

#define MP_CHSEG_MAGIC   0x4745534843504d53ULL /* "SMPCHSEG" */
#define MP_CHSEG_VERSION 2 /* 2: lanes, parked slots (park word,
				  CLAIMED|WAIT) */

#define MP_CHSEG_MAX_SLOTS 64     /* slots per channel */
#define MP_CHSEG_MAX_MSG   65536u /* request or reply bytes */
#define MP_CHSEG_ID_LEN    16     /* sender id, NUL-terminated */
#define MP_CHSEG_MAX_LANES 64     /* buffered lanes per channel */
#define MP_CHSEG_NO_LANES  0xffffffffu /* cfg.nlanes: none, ring only */

#define MP_CHSEG_SPIN_NS_DEFAULT  20000  /* busy-wait budget */
#define MP_CHSEG_YIELD_NS_DEFAULT 50000  /* sched_yield polling budget */
#define MP_CHSEG_REAP_NS_DEFAULT  200000000 /* slot unchanged this long:
					       check its client */
#define MP_CHSEG_LIVE_SLICE_MS 200 /* client sleep slice between server
				      liveness checks */

/* ---- In-segment layout (fixed-width fields, offsets, no pointers) ---- */

/* Slot states (state word bits 0-2), the WAIT bit, the generation.  A
 * slot is parked (see the banner) when its park word, the first word of
 * the block's last line, equals its REPLIED state word. */
#define MP_CHSEG_ST_MASK     0x7u
#define MP_CHSEG_ST_FREE     0u
#define MP_CHSEG_ST_CLAIMED  1u
#define MP_CHSEG_ST_REQ      2u
#define MP_CHSEG_ST_REPLIED  3u
#define MP_CHSEG_ST_CANCELED 4u
#define MP_CHSEG_ST_WAIT     0x8u
#define MP_CHSEG_ST_RSVD     0xf0u
#define MP_CHSEG_GEN_SHIFT   8

/* A slot's control line.  The client writes pid..id, type/len/reqid and
 * cpu while it owns the slot (CLAIMED); the server writes answer, rlen and
 * rarea after it took the request (REQ), just before replying. */
struct mp_chseg_slot {
	uint32_t state;    /* futex word: state | WAIT | gen << 8 */
	uint32_t pid;      /* client's pid, uid, gid (as it wrote them) */
	uint32_t uid;
	uint32_t gid;
	uint64_t reqid;    /* client's request id */
	int32_t  type;     /* request type */
	uint32_t len;      /* request length (area A) */
	int32_t  answer;   /* reply answer */
	uint32_t rlen;     /* reply length */
	uint16_t rarea;    /* 0: reply in area A, 1: in area B */
	uint16_t cpu;      /* 1 + the CPU the client sent from, 0 unknown */
	uint32_t sender;   /* client's sender number */
	char     id[MP_CHSEG_ID_LEN]; /* client's id (not trusted to be
					 NUL-terminated) */
};
_Static_assert(sizeof(struct mp_chseg_slot) == 64, "slot ctl is one line");

/* The channel header, after the mp_shm header.  Each group written by a
 * different party, or at a different rate, has its own cache line. */
struct mp_chseg_hdr {
	/* Geometry and the server's identity: written before publish,
	 * read-only afterwards (an opener checks them once). */
	uint32_t nslots;
	uint32_t max_msg;
	uint32_t area;         /* max_msg rounded up to 64 */
	uint32_t block;        /* bytes per slot block, multiple of 128 */
	uint64_t slots_off;    /* from the start of the mapping */
	uint64_t ring_off;
	uint64_t ring_size;
	uint32_t ring_bytes;
	uint32_t ring_records;
	uint32_t srv_pid;
	uint32_t srv_uid;
	uint64_t srv_start;    /* its start time (/proc/<pid>/stat field
				  22), 0 if unknown */
	uint64_t srv_pidns;    /* inode of its /proc/self/ns/pid, 0 unknown */
	uint32_t fence;        /* 1: the server fences clients from afar
				  (mp_fence_remote) before it sleeps, so
				  they publish ring and lane records with
				  plain stores; 0: they use locked stores */
	uint32_t nlanes;       /* buffered lanes (0..MP_CHSEG_MAX_LANES) */
	uint32_t lane_bytes;   /* data area of each lane */
	uint64_t lanes_off;    /* first lane, from the start */

	/* Read on every request, written rarely. */
	_Alignas(64) uint32_t hiwater; /* 1 + highest slot ever claimed */
	uint32_t srv_waiters;  /* server threads asleep on bell */
	uint32_t alive;        /* 1 from create until close */
	uint32_t srv_cpu;      /* 1 + the CPU the server last waited on */
	uint32_t lane_hiwater; /* 1 + highest lane ever claimed */
	uint32_t lane_plain;   /* 1 once a client published in a lane
				  with plain stores (never cleared) */
	uint32_t lanes_wanted; /* bumped by a client that found no free
				  lane: the server looks for dead owners */

	/* The doorbell the server sleeps on (bumped to wake it). */
	_Alignas(64) uint32_t bell;

	/* Clients waiting for a free slot sleep on free_seq. */
	_Alignas(64) uint32_t free_seq;
	uint32_t free_waiters;

	/* Held by the server's creating thread while it serves. */
	_Alignas(64) mp_lock_sh_t alive_lock;
};

/* ---- Process-local side ---- */

/* What the creator chooses.  Zero fields take the defaults. */
struct mp_chseg_cfg {
	uint32_t nslots;       /* 1..MP_CHSEG_MAX_SLOTS; default 16 */
	uint32_t max_msg;      /* 1..MP_CHSEG_MAX_MSG; default 65536 */
	uint32_t ring_bytes;   /* ring data area, a power of two at least
				  mp_ring_min_data_bytes(max_msg); default
				  the smallest such, at least 256 KiB */
	uint32_t ring_records; /* buffered messages queued at most, in
				  the ring and in each lane; default 1024 */
	uint32_t nlanes;       /* lanes, 1..MP_CHSEG_MAX_LANES; default 8;
				  MP_CHSEG_NO_LANES: none */
	uint32_t lane_bytes;   /* lane data area, a power of two at least
				  mp_lane_min_data_bytes(max_msg); default
				  the smallest such, at least 64 KiB */
	mode_t   mode;         /* default 0600 (masked by mp_shm: 0660) */
	gid_t    gid;          /* group to hand the object to ... */
	int      gid_set;      /* ... if set (else the creator's) */
};

/* Server-side per-slot record: the trusted copies of what it took. */
struct mp_chseg_held {
	uint32_t status;       /* private to mp_chseg.c */
	uint32_t gen;          /* generation the slot had when taken */
	uint32_t len;          /* request length, validated */
	pid_t    pid;          /* client's pid, sender and id at take time */
	uint32_t sender;
	char     id[MP_CHSEG_ID_LEN];
	uint32_t last_word;    /* reaper: state word last seen ... */
	int64_t  since_ns;     /* ... and since when */
	pid_t    cred_pid;     /* credentials cache: pid checked ... */
	uid_t    cred_uid;
	gid_t    cred_gid;
	int      cred_ok;      /* ... and the result */
	pid_t    fd_pid;       /* pidfd cache: pid it refers to */
	int      pidfd;        /* -1: none */
};

#define MP_CHSEG_EVQ 128 /* server's queue of pending events */

/* Process-local handle: the trusted copies.  Treat as opaque except for
 * the tunables. */
typedef struct mp_chseg {
	mp_shm_t shm;
	struct mp_chseg_hdr *hdr;
	uint8_t *slots;        /* first slot block */
	uint32_t nslots;
	uint32_t max_msg;
	uint32_t area;         /* max_msg rounded up to 64 */
	uint32_t block;        /* bytes per slot block */
	mp_ring_t ring;
	uint8_t *lanes;        /* first lane */
	uint32_t nlanes;
	uint32_t lane_stride;  /* bytes per lane */
	struct mp_lane_geo lane_geo;
	int      server;       /* created here */

	/* Tunables (defaults, environment, or set by the caller). */
	int64_t  spin_ns;
	int64_t  yield_ns;
	int64_t  reap_ns;
	int64_t  live_ns;      /* client: server liveness check slice
				  (MP_CHSEG_LIVE_SLICE_MS; > 0) */

	/* Client side. */
	pid_t    pid;          /* own identity, cached at open */
	uid_t    uid;
	gid_t    gid;
	uint32_t sender;       /* written into each request */
	char     id[MP_CHSEG_ID_LEN];
	uint32_t hint;         /* slot tried first (last one used) */
	uint32_t rarea_last;   /* area of the last reply (a hint: the one
				  prefetched while waiting) */
	pthread_mutex_t bmx;   /* serialises this process's bsends */
	int      lane_idx;     /* the lane we own, -1 none */
	uint32_t lane_tries;   /* bsends through the ring since we last
				  tried to claim a lane */
	int      ring_used;    /* pushed to the ring since the last claim */
	uint32_t ring_inflight; /* threads pushing to the ring now */
	mp_lane_prod_t lane;
	pid_t    srv_pid;
	int      srv_pidfd;    /* -1: none (kill(pid, 0) instead) */

	/* Server side. */
	uint32_t bell_seen;    /* doorbell value when last returned */
	uint32_t cpu_pub;      /* srv_cpu as last published */
	uint32_t peer_cpu;     /* 1 + CPU of the last request's client */
	uint32_t scan_from;    /* round-robin start of the next scan */
	int64_t  spin_cur;     /* adaptive spin budget, <= spin_ns */
	uint32_t calls;        /* mp_chseg_next calls, for periodic reaping */
	int64_t  last_reap_ns;
	pthread_t creator;     /* thread holding the alive lock */
	struct mp_chseg_held held[MP_CHSEG_MAX_SLOTS];
	struct mp_chseg_ev {
		int      kind;
		uint32_t slot;
		uint32_t gen;
		pid_t    pid;
		uint32_t sender;
		char     id[MP_CHSEG_ID_LEN];
	} evq[MP_CHSEG_EVQ];
	unsigned evq_head, evq_len;
	/* Server side, lanes. */
	mp_lane_cons_t cons[MP_CHSEG_MAX_LANES];
	struct mp_chseg_lanest {
		uint32_t dead_word;  /* owner found dead at this word */
		uint32_t broken_word; /* we broke it at this word */
		pid_t    fd_pid;     /* pidfd cache of its owner */
		int      pidfd;
	} lanest[MP_CHSEG_MAX_LANES];
	uint32_t lane_cur;     /* bpop: queue taken from last (nlanes: the
				  ring) */
	uint32_t lane_run;     /* records taken from it in a row */
	uint32_t lanes_wanted_seen;
	int64_t  lanes_checked_ns;
} mp_chseg_t;

/* ------------------------------------------------------------------ */
/* Both sides                                                          */

/* Bytes of shared memory a segment with cfg needs (header included);
 * 0 if cfg is invalid. */
size_t mp_chseg_size(const struct mp_chseg_cfg *cfg);

/*
 * Server: create, format and publish the segment `name` ("/...") with
 * cfg (NULL: all defaults), and take the alive lock in the calling thread.
 * Returns 0, -EINVAL (bad cfg or name), -EEXIST (name taken), or an error
 * of mp_shm_create / mp_ring_init.
 */
int mp_chseg_create(mp_chseg_t *seg, const char *name,
		    const struct mp_chseg_cfg *cfg);

/*
 * Client: map and validate the segment `name`.  Returns 0; -ENOENT,
 * -EACCES, -EAGAIN (not published yet) as mp_shm_open; -EBADMSG (bad
 * header, geometry, or ring); -EXDEV (server in another PID namespace:
 * use TCP); -ESRCH (its server is already gone).
 */
int mp_chseg_open(mp_chseg_t *seg, const char *name);

/*
 * Close.  Server: clears the alive flag and wakes every client that
 * waits (they get -ESRCH), releases the alive lock, unmaps and unlinks.
 * If called from a thread other than the creator the alive lock cannot be
 * released, and the mapping is then deliberately left in place (a robust
 * lock may not be unmapped while held: glibc links it into the holder
 * thread's robust list).  Client: frees the slots its process
 * parked, then unmaps.  Idempotent.
 */
void mp_chseg_close(mp_chseg_t *seg);

/* ------------------------------------------------------------------ */
/* Client side                                                         */

/* Identity written into every request: sender number (the library's
 * registration number) and id (truncated to MP_CHSEG_ID_LEN - 1). */
void mp_chseg_set_identity(mp_chseg_t *seg, uint32_t sender, const char *id);

/* One request in flight.  Filled by the calls below; read-only for the
 * caller. */
struct mp_chseg_req {
	uint32_t    slot;
	uint32_t    gen;
	void       *buf;      /* after loan: the request area to fill */
	uint32_t    cap;      /* its capacity (max_msg) */
	int32_t     answer;   /* after a reply: the server's answer */
	uint32_t    rlen;     /* after a reply: its length */
	const void *rdata;    /* after a reply: view, valid until done */
	int         phase;    /* private */
};

/*
 * Borrow a slot: re-use the one used last if we parked it, else claim a
 * free one or one we parked, else take over one another client parked;
 * point r->buf at its request area (r->cap bytes), to fill in place.
 * Waits up to deadline_ns when every slot is taken.  Returns 0,
 * -ETIMEDOUT, -ESRCH (server gone).
 */
int mp_chseg_loan(mp_chseg_t *seg, struct mp_chseg_req *r,
		  int64_t deadline_ns);

/*
 * Publish the loaned slot as a request of len bytes (already in r->buf),
 * type and request id reqid, and ring the doorbell if the server sleeps.
 * Returns 0, -EMSGSIZE (len > cap: the loan is kept), -EINVAL (r holds no
 * loan), -EBADMSG (the slot was reset under us; r is released).
 */
int mp_chseg_send(mp_chseg_t *seg, struct mp_chseg_req *r, int32_t type,
		  uint64_t reqid, uint32_t len);

/*
 * Wait up to deadline_ns for the reply to a sent request.  Returns 0 with
 * r->answer, r->rlen and r->rdata set (the view stays valid until
 * mp_chseg_done); -ETIMEDOUT (still pending: wait again, or cancel);
 * -ESRCH (server gone; r is released); -EBADMSG (the slot or the reply is
 * corrupt; r is released).
 */
int mp_chseg_wait(mp_chseg_t *seg, struct mp_chseg_req *r,
		  int64_t deadline_ns);

/*
 * Withdraw a sent request.  Returns 0 (withdrawn: the server will see
 * MP_CHSEG_CANCELED or a -ECANCELED reply; r is released), 1 (too late:
 * the reply arrived, r is filled as by mp_chseg_wait, and the caller must
 * still call mp_chseg_done), -EBADMSG (slot corrupt; r released), -EINVAL.
 * Exactly one of "reply delivered" and "withdrawn" happens.
 */
int mp_chseg_cancel(mp_chseg_t *seg, struct mp_chseg_req *r);

/* Release r: after a reply (ends the view; the slot stays parked for our
 * next loan), or a loan never sent (freed, or parked again if it was a
 * parked slot re-used). */
void mp_chseg_done(mp_chseg_t *seg, struct mp_chseg_req *r);

/*
 * The copying round trip: loan, copy len bytes of req, send (request id
 * 0), wait, copy up to rmax bytes of the reply to rbuf, done.  On timeout the request is
 * withdrawn (or, if the reply won the race, delivered).  Returns the full
 * reply length (>= 0; more than rmax means truncated) with *answer set,
 * or -ETIMEDOUT, -ESRCH, -EMSGSIZE (len > max_msg), -EBADMSG.
 */
int mp_chseg_call(mp_chseg_t *seg, int32_t type, const void *req,
		  uint32_t len, int32_t *answer, void *rbuf, uint32_t rmax,
		  int64_t deadline_ns);

/*
 * Buffered message: push to this process's lane, or to the ring when it
 * has none (banner), waiting up to deadline_ns for room, in slices that
 * check the server is alive, and ring the doorbell if the server sleeps.
 * Thread-safe.  Returns an upper bound of the messages queued before this
 * one in the same queue (the lane: this sender's; the ring: everyone's
 * there), from this handle's last reading of the server's position
 * (mp_lane_push, mp_ring_push), or -ETIMEDOUT (not queued), -ESRCH,
 * -EMSGSIZE, -EBADMSG, -ENOTRECOVERABLE (ring lock).  A lane the server
 * broke is given back and the message goes to the ring.  The doorbell
 * does not depend on that count: it follows srv_waiters.
 */
int mp_chseg_bsend(mp_chseg_t *seg, int32_t type, const void *data,
		   uint32_t len, int64_t deadline_ns);

/* Is the server alive?  1 yes, 0 gone (cheap when it is alive). */
int mp_chseg_server_alive(mp_chseg_t *seg);

/* ------------------------------------------------------------------ */
/* Server side                                                         */

enum {
	MP_CHSEG_REQUEST = 1,  /* a request to reply to */
	MP_CHSEG_CANCELED,     /* the client withdrew the request held at
				  slot (ticket): the view stays valid and
				  the slot reserved until mp_chseg_reply,
				  which returns -ECANCELED and frees it */
	MP_CHSEG_GONE,         /* the client in slot died.  If the server
				  held its request (ticket), as for
				  CANCELED, with -ESRCH; otherwise the slot
				  is already free and the ticket names
				  nothing */
};

#define MP_CHSEG_CRED_CHECKED 1 /* /proc/<pid> exists, owned by uid/gid */

/* What mp_chseg_next hands out. */
struct mp_chseg_msg {
	int         kind;      /* MP_CHSEG_REQUEST, _CANCELED, _GONE */
	uint32_t    slot;      /* 0..nslots-1: small, reused after reply */
	uint64_t    ticket;    /* names this request for the reply */
	int32_t     type;      /* REQUEST: the client's type */
	uint32_t    len;       /* REQUEST: bytes at data (<= max_msg) */
	const void *data;      /* REQUEST: read-only view until the reply */
	uint64_t    reqid;     /* REQUEST: the client's request id */
	pid_t       pid;       /* as the client wrote them */
	uid_t       uid;
	gid_t       gid;
	int         cred;      /* MP_CHSEG_CRED_CHECKED or 0 */
	uint32_t    sender;
	char        id[MP_CHSEG_ID_LEN];
};

/*
 * Next event, without waiting: queued events first (reaped clients), then
 * a scan of the slots that were ever claimed (below hiwater),
 * round-robin among clients; one client's requests (same pid and sender)
 * are taken in request-id order, whatever slots they sit in, so a client
 * with several requests out has them served in the order it sent them.  Each event is reported once.  Returns 1 (*m filled), 0
 * (nothing), or -EBADMSG (slot m->slot held an impossible word or
 * request; it was reset and its client, if waiting, told; call again for
 * the others).
 */
int mp_chseg_next(mp_chseg_t *seg, struct mp_chseg_msg *m);

/*
 * Loaned reply buffer for ticket: the slot's B area, max_msg bytes
 * (*cap), writable until mp_chseg_reply, while the request view stays
 * valid.  NULL if the ticket is not held.
 */
void *mp_chseg_reply_buf(mp_chseg_t *seg, uint64_t ticket, uint32_t *cap);

/*
 * Reply to ticket with answer and len bytes at data, and wake the client
 * if it sleeps.  data may be the loaned reply buffer (no copy), the
 * request view or any part of it (no copy if it is the view itself,
 * otherwise an overlapping move), or any other memory (one copy); NULL
 * with len 0 is fine.  The request view ends here.  Returns 0,
 * -EINVAL (ticket not held, or replied to already), -EMSGSIZE (len >
 * max_msg; still held), -ECANCELED (the client withdrew: reply discarded,
 * slot reclaimed), -ESRCH (the client died: discarded, slot reclaimed),
 * -EBADMSG (the slot was scribbled: discarded, slot reset).
 */
int mp_chseg_reply(mp_chseg_t *seg, uint64_t ticket, int32_t answer,
		   const void *data, uint32_t len);

/*
 * Pop one buffered message without waiting, from the lanes and the ring
 * in turn (banner).  Returns 1 (*meta filled: type, len, the sender's
 * number and id; seq counts per queue; min(len, maxlen) bytes in buf,
 * meta->len the full length), 0 (nothing queued), -EBADMSG (the ring was
 * corrupt: reset, its content lost; or a lane was: broken, its content
 * lost; call again for the others).
 */
int mp_chseg_bpop(mp_chseg_t *seg, struct mp_ring_rec *meta, void *buf,
		  uint32_t maxlen);

/*
 * Anything buffered (a cheap look at the lanes' heads and the ring's
 * count)?  1 or 0; 1 also when a lane's head lies (bpop reports it).
 */
int mp_chseg_bpending(mp_chseg_t *seg);

/*
 * Wait until there may be work: a request, a withdrawn request, a
 * buffered message, a queued event, or a kick since the last return --
 * or deadline_ns.  Spins, yields, then sleeps on the doorbell; checks
 * for dead clients while it sleeps.  Returns 1 (look: mp_chseg_next,
 * mp_chseg_bpop, and the caller's own sources if it was kicked) or 0
 * (deadline).  Spurious 1s are allowed.
 */
int mp_chseg_server_wait(mp_chseg_t *seg, int64_t deadline_ns);

/*
 * For a server thread that has just raised srv_waiters itself (rather
 * than through mp_chseg_server_wait), before it looks for work: makes
 * ring records that clients published with plain stores visible, or
 * their later read of srv_waiters see the count (mp_fence_remote).
 * No system call while no client ever published plainly (a server that
 * only serves requests pays nothing).  Returns 0, or -errno if the fence
 * failed (only possible if the kernel lost membarrier since create,
 * which tested it: clients of a segment whose server cannot fence publish
 * with locked stores).
 */
int mp_chseg_sleeper_fence(mp_chseg_t *seg);

/*
 * Ring the doorbell: the server's current or next mp_chseg_server_wait
 * returns 1.  For another thread or process with news of its own (a TCP
 * message, a timer); async-signal-safe.  Costs a system call only when the
 * server sleeps.  Any handle of the segment will do.
 */
void mp_chseg_kick(mp_chseg_t *seg);

/*
 * Is any slot in use, i.e. neither FREE nor parked (something whose
 * client the reaper may have to check)?  1 or 0.  Read-only atomic loads:
 * any thread of the server may call it, e.g. to decide whether to wake
 * up for reaping while another thread serves.  A parked slot does not
 * count: it holds nothing, any client takes it over when it needs it,
 * and a dead owner's is reclaimed whenever the reaper runs.
 */
int mp_chseg_slots_in_use(const mp_chseg_t *seg);

/*
 * Check the clients of non-free slots now: force != 0 checks every one,
 * 0 only those unchanged for reap_ns.  A dead client's slot is reclaimed
 * (one whose request the server holds, at the reply) and an
 * MP_CHSEG_GONE event queued for mp_chseg_next.  Returns the number of
 * events queued.
 */
int mp_chseg_reap(mp_chseg_t *seg, int force);

#endif
