/*
 * mp_lane — a bounded single-producer, single-consumer queue of
 * variable-length records in shared memory, owned by one producer process
 * at a time: a channel segment's private lane for one client (mp_chseg).
 *
 * Why not the shared ring (mp_ring)?  Its producers serialise on a robust
 * lock and each record carries a 40-byte header (type, sender, id, seq,
 * check) so that records of many senders can share it.  A lane has one
 * producer: no lock in the segment, the sender's identity written once at
 * the claim instead of into every record, and an 8-byte record header
 * (length, type and a check word).  A 64-byte message takes 72 bytes.
 *
 * Ownership (the state word, 32 bits: state in bits 0-1, generation in
 * bits 8-31, bumped by every claim so that no compare-and-swap succeeds
 * on a lane recycled under it):
 *
 *   FREE --claim (producer CAS, gen + 1)--> OWNED
 *   OWNED --release (producer CAS)--> CLOSED
 *   OWNED --break (consumer CAS: a record or position lied)--> BROKEN
 *   BROKEN --release (producer CAS, on seeing it)--> CLOSED
 *   CLOSED, or OWNED by a dead producer, and drained --free (consumer)--> FREE
 *
 * The consumer frees a lane only once it took every record published in
 * it (nothing accepted is lost), except a lane it broke: its content is
 * discarded, the producer told at its next push (-EPIPE).  A lane's
 * positions are never reset while a producer may write them: a BROKEN
 * lane is freed only after its producer released it or died.  The next
 * owner starts where the last one stopped (head == tail).
 *
 * Who writes what:
 *   - the producer (one thread at a time: the caller serialises its
 *     threads): the record bytes at head, then head, with a release store
 *     (the publication).  It keeps head and the record count itself, and
 *     reads the consumer's (tail, tail_seq) only when the pair it read
 *     last leaves too little room; both only grow, so an old pair
 *     under-states the room.
 *   - the consumer: tail_seq, then tail (its commit); it keeps its own
 *     tail and reads head only when it has used up the head it read last.
 *   - a producer about to sleep for room: prod_waiting, which the
 *     consumer clears with the wake.
 * Every position and length read from the segment is checked against the
 * reader's own copies: head - tail within the data area, multiples of 8,
 * record length <= max_payload and within [tail, head), check word bound
 * to the record's position, length and type.  A lie yields -EBADMSG, and
 * nothing is read or written outside the lane.
 *
 * Crash safety: a producer killed before its head store leaves nothing
 * visible (its bytes lie beyond head and are overwritten by the next
 * owner).  A producer killed at any point leaves the lane OWNED with its
 * pid (or pid 0 between its claim and its pid store: never blamed, the
 * lane then stays taken until the segment goes); the consumer drains it
 * and frees it once its owner is found dead (mp_chseg_reap).
 *
 * Wake-ups: the consumer sleeps elsewhere (the channel's doorbell, see
 * mp_chseg.h); the producer wakes it there after a push.  A producer
 * waiting for room sleeps on room_futex: it raises prod_waiting, fences
 * the consumer from afar (mp_fence_remote) when the consumer commits with
 * plain stores, looks again, then sleeps; the consumer reads the flag
 * after each commit.  Without the fence it sleeps in 1 ms slices.
 */
#ifndef MP_LANE_H
#define MP_LANE_H

#include <stdint.h>
#include <sys/types.h>

#define MP_LANE_ID_LEN 16 /* sender id, NUL-terminated */

/* State word (bits 0-1) and generation (bits 8-31). */
#define MP_LANE_FREE   0u
#define MP_LANE_OWNED  1u
#define MP_LANE_BROKEN 2u
#define MP_LANE_CLOSED 3u
#define MP_LANE_ST_MASK 0x3u
#define MP_LANE_GEN_SHIFT 8

struct mp_lane_sh; /* in-segment layout, private to mp_lane.c */

/* The geometry both ends agree on (their trusted copies). */
struct mp_lane_geo {
	uint32_t data_bytes;  /* power of two, >= mp_lane_min_data_bytes */
	uint32_t max_records; /* records queued at most */
	uint32_t max_payload; /* bytes per record at most */
};

/* Producer handle (process-local). */
typedef struct mp_lane_prod {
	struct mp_lane_sh *sh;
	uint8_t *data;
	struct mp_lane_geo geo;
	uint32_t word;      /* the state word while we own the lane */
	uint64_t head;      /* ours: end of the last record published */
	uint64_t head_seq;  /* records published */
	uint64_t tail_seen; /* the consumer's pair as read last */
	uint64_t tail_seq_seen;
	int      plain;     /* publish with a plain store (the consumer
			       fences us before it sleeps) */
	int      fenced;    /* the consumer commits plainly: fence it
			       before sleeping for room */
} mp_lane_prod_t;

/* Consumer handle (process-local). */
typedef struct mp_lane_cons {
	struct mp_lane_sh *sh;
	uint8_t *data;
	struct mp_lane_geo geo;
	uint64_t tail;      /* ours: first record not taken */
	uint64_t tail_seq;
	uint64_t head_seen; /* a head we read and checked */
	int      plain;     /* commit with a plain store (producers
			       fence us before they sleep) */
} mp_lane_cons_t;

/* Bytes of shared memory for one lane with that data area; 0 if
 * data_bytes is not a power of two in [64, 2 GiB]. */
size_t mp_lane_size(uint32_t data_bytes);

/* Smallest data area for records of up to max_payload bytes. */
uint32_t mp_lane_min_data_bytes(uint32_t max_payload);

/* Is geo valid (data area, limits)?  0 or -EINVAL. */
int mp_lane_geo_ok(const struct mp_lane_geo *geo);

/* The lane's state word (relaxed load). */
uint32_t mp_lane_word(const struct mp_lane_sh *sh);

/* ---- producer ---- */

/*
 * Claim the FREE lane at mem (mp_lane_size(geo->data_bytes) bytes, zero
 * filled when new) for this process: CAS to OWNED, then record pid,
 * sender and id (truncated to MP_LANE_ID_LEN - 1) for the consumer.
 * plain: publish with plain stores (the consumer fences producers before
 * it sleeps); fenced: the consumer commits plainly, so a producer about
 * to sleep for room must fence it (mp_fence_remote).
 * Returns 0, -EBUSY (not free), -EBADMSG (its positions make no sense:
 * left FREE).
 */
int mp_lane_claim(mp_lane_prod_t *p, void *mem, const struct mp_lane_geo *geo,
		  pid_t pid, uint32_t sender, const char *id, int plain,
		  int fenced);

/*
 * Append a record (type, len bytes of data) if there is room now.
 * Returns an upper bound of the records queued in this lane before this
 * one (from the consumer's position as last read, like mp_ring_push), or
 * -EAGAIN (no room: nothing queued; wait with mp_lane_wait), -EMSGSIZE
 * (len > max_payload), -EPIPE (the lane is not ours any more: broken by
 * the consumer; nothing queued), -EBADMSG (the consumer's position lies:
 * nothing queued).
 */
int mp_lane_push(mp_lane_prod_t *p, int32_t type, const void *data,
		 uint32_t len);

/*
 * Wait until deadline_ns for the consumer to move its tail from `tail`
 * (p->tail_seen after a push returned -EAGAIN, copied while the caller
 * serialised its threads: this call reads only the segment and p's
 * constant fields, so other threads of the caller may push meanwhile).
 * Returns 0 (it moved: push again), -ETIMEDOUT, -EPIPE (not ours).
 */
int mp_lane_wait(const mp_lane_prod_t *p, uint64_t tail, int64_t deadline_ns);

/* Give the lane back: OWNED or BROKEN at our generation -> CLOSED (the
 * consumer drains what is queued, then frees it).  Idempotent. */
void mp_lane_release(mp_lane_prod_t *p);

/* ---- consumer ---- */

/* Attach the consumer's side of the lane at mem.  Reads the current
 * tail (its own, from now on) and checks it.  0 or -EBADMSG. */
int mp_lane_attach(mp_lane_cons_t *c, void *mem, const struct mp_lane_geo *geo,
		   int plain);

/* Is there a record to take (a cheap look at head)?  1, 0, or -EBADMSG
 * (head makes no sense). */
int mp_lane_pending(mp_lane_cons_t *c);

/*
 * Take the next record: *type, min(len, maxlen) bytes into buf, *len the
 * full length.  Returns 1, 0 (empty), or -EBADMSG (head or the record
 * lies: nothing is taken; break the lane).
 */
int mp_lane_pop(mp_lane_cons_t *c, int32_t *type, void *buf, uint32_t maxlen,
		uint32_t *len);

/* The producer's identity as it recorded it (valid once a record of its
 * was taken: the head store published it). */
void mp_lane_owner(const mp_lane_cons_t *c, pid_t *pid, uint32_t *sender,
		   char id[MP_LANE_ID_LEN]);

/* Break the lane owned at word w: OWNED -> BROKEN.  1 if done. */
int mp_lane_break(mp_lane_cons_t *c, uint32_t w);

/*
 * Free the lane, found at word w (CLOSED, or OWNED or BROKEN by a producer
 * known dead): once drained, or at once with discard (a lane we broke:
 * its content is dropped), positions put level, then -> FREE at the same
 * generation.  Returns 1 (freed), 0 (records still queued: take them
 * first), -EAGAIN (the word moved, or is FREE).
 */
int mp_lane_free(mp_lane_cons_t *c, uint32_t w, int discard);

#endif
