/*
 * mp_ring — a bounded multi-producer, single-consumer ring of
 * variable-length records in shared memory.
 *
 * A record is a small header (type, sender number, sender id, sequence
 * number, payload length) and 0..max_payload bytes of payload
 * (max_payload <= MP_RING_MAX_PAYLOAD = 64 KiB).  Capacity is bounded both
 * in bytes (the data area, a power of two) and in records; a push waits
 * while either bound would be exceeded (back-pressure: never overwrite,
 * never drop) and a pop waits while the ring is empty.  Records may wrap
 * around the end of the data area; they are copied in and out in pieces.
 *
 * Producers serialise on a robust lock (mp_lock) and publish a record with
 * one release store of the head position *after* its bytes are written, so
 * a producer killed mid-push leaves nothing visible to the consumer and
 * nothing to repair.  The consumer owns the tail and needs no lock.
 * A producer reads the consumer's position only when the one it saw last
 * leaves too little room, so a stream of pushes into a ring with room
 * does not bounce the consumer's cache line; the queue length a push
 * returns is therefore an upper bound, from that same reading.
 * Waiting spins briefly (tunable, per handle) and then sleeps on a futex;
 * the producer or consumer on the other side wakes sleepers only when a
 * waiter count says someone sleeps, so the uncontended path makes no
 * system call.  The consumer's commit and the producers' publication are
 * plain stores where the kernel lets the side about to sleep fence the
 * other from afar (membarrier, mp_futex.h); otherwise they are locked
 * stores, and a side that cannot fence sleeps in 1 ms slices.
 *
 * Every position, length and sequence number read from the segment is
 * checked against the handle's trusted copies (capacity, mask, limits).
 * A corrupt header or record yields -EBADMSG; mp_ring_reset() then
 * discards what is queued so that the ring can serve again.
 *
 * Each record gets a sequence number (records pushed before it), so a
 * consumer that re-reads records after a crash can tell duplicates.
 */
#ifndef MP_RING_H
#define MP_RING_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define MP_RING_MAX_PAYLOAD 65536u
#define MP_RING_ID_LEN      16     /* sender id field, NUL-terminated */

struct mp_ring_sh; /* in-segment layout, private to mp_ring.c */

/* Record metadata, as pushed and as popped. */
struct mp_ring_rec {
	int32_t  type;                  /* message type (caller's) */
	uint32_t sender;                /* sender number (caller's, opaque) */
	char     id[MP_RING_ID_LEN];    /* sender id, NUL-terminated */
	uint64_t seq;                   /* set by push; read by pop */
	uint32_t len;                   /* payload length; set by push/pop */
};

/* Process-local handle: trusted copies and tunables. */
typedef struct mp_ring {
	struct mp_ring_sh *sh;
	uint8_t  *data;        /* data area */
	uint32_t  data_bytes;  /* power of two */
	uint32_t  mask;        /* data_bytes - 1 */
	uint32_t  max_records;
	uint32_t  max_payload;
	size_t    memsize;
	unsigned  spin;        /* busy-wait iterations before sleeping */
	/* Producer: a (tail, tail_seq) pair read from the segment (at
	 * attach, then by a push that finds too little room by it), kept
	 * so that a push with room to spare does not read the consumer's
	 * cache line.  Both only grow between resets, so an old pair
	 * under-states the room and over-states the count a push returns:
	 * stale is safe, and void after a reset (seen_resets: the
	 * segment's reset count + 1 when the pair was read, 0 none).
	 * Atomic (relaxed) because threads may share a handle. */
	_Atomic uint64_t tail_seen;
	_Atomic uint64_t tail_seq_seen;
	_Atomic uint64_t seen_resets;
	/* Producer: the last push woke a sleeping consumer, so the next
	 * one reads the consumer's position again (mp_ring_push). */
	_Atomic uint32_t tail_reread;
	/* Consumer: commit without a locked instruction (this process can
	 * be fenced by a sleeping producer; mp_futex.h mp_fence_*). */
	int plain_commit;
	/* Producer: publish head without a locked instruction (this process
	 * can be fenced by a consumer about to sleep).  Set at init/attach
	 * as plain_commit; a caller with a Dekker of its own on the head
	 * store whose other side cannot fence clears it (mp_chseg). */
	int plain_publish;
	_Atomic uint32_t announced; /* plain publishing announced (.c) */
} mp_ring_t;

/* Bytes of shared memory for a ring with a data area of data_bytes
 * (a power of two, at least the largest record: header + max_payload,
 * rounded up).  0 if data_bytes is invalid. */
size_t mp_ring_size(uint32_t data_bytes);

/* Smallest valid data_bytes for records of up to max_payload bytes. */
uint32_t mp_ring_min_data_bytes(uint32_t max_payload);

/* Format `mem` and attach r.  0, or -EINVAL (bad sizes or limits). */
int mp_ring_init(mp_ring_t *r, void *mem, size_t memsize, uint32_t data_bytes,
		 uint32_t max_records, uint32_t max_payload);

/* Attach to a formatted ring; validates its header and reads the
 * consumer's position once (the producer's starting point, above).
 * 0 or -EBADMSG. */
int mp_ring_attach(mp_ring_t *r, void *mem, size_t memsize);

/*
 * Append a record (meta->type, ->sender, ->id; len bytes of data) waiting
 * up to deadline_ns (mp_time.h) for room.  On success meta->seq and
 * meta->len are set and an upper bound of the number of records queued
 * before this one is returned: meta->seq minus the consumer's sequence
 * number as this handle last read it (at attach, at its own
 * mp_ring_reset, or in a push that found too little room by its previous
 * reading or found it void because some handle reset the ring since, or
 * in the push after one that woke a sleeping consumer:
 * a consumer sleeps only once it took everything, so a producer that
 * sends now and then to an idle consumer gets exact counts).  So the
 * value is >= the exact count and < max_records; it
 * over-states by the records the consumer took since that reading, and
 * is exact when this push had to read the consumer's position again and
 * the consumer took nothing before the record was published (0 is always
 * exact: the ring was empty).  Why not exact: reading the consumer's
 * position on every push costs a cache miss on a line the consumer writes
 * per record.  (After a consumer died mid-release, banner of mp_ring.c,
 * it may be one low until the next reading.)  Not for wake-up decisions:
 * the ring wakes its own sleepers, and callers with their own waiters use
 * their own flags.
 * Errors: -ETIMEDOUT (still full at the deadline; nothing queued),
 * -EMSGSIZE (len > max_payload), -EBADMSG (corrupt ring header),
 * -ENOTRECOVERABLE (lock unusable).
 */
int mp_ring_push(mp_ring_t *r, struct mp_ring_rec *meta, const void *data,
		 uint32_t len, int64_t deadline_ns);

/* As mp_ring_push with the payload gathered from iov[0..iovcnt). */
int mp_ring_pushv(mp_ring_t *r, struct mp_ring_rec *meta,
		  const struct iovec *iov, int iovcnt, int64_t deadline_ns);

/*
 * Read the record at *cursor (a byte position; start from
 * mp_ring_tail()) without removing it, waiting up to deadline_ns while
 * there is none.  Copies min(len, maxlen) payload bytes to buf, fills
 * *meta (meta->len is the full length), advances *cursor past the record
 * and returns the full payload length.  Errors: -ETIMEDOUT, -EBADMSG
 * (corrupt record or header: nothing is advanced), -EINVAL (cursor outside
 * the queued records).
 */
int mp_ring_peek(mp_ring_t *r, uint64_t *cursor, struct mp_ring_rec *meta,
		 void *buf, uint32_t maxlen, int64_t deadline_ns);

/* Free every record before cursor (which must lie between the tail and
 * the head) and wake waiting producers.  0 or -EINVAL / -EBADMSG. */
int mp_ring_release(mp_ring_t *r, uint64_t cursor);

/* Peek at the tail then release it: the usual single-consumer pop.
 * Returns as mp_ring_peek.  A record longer than maxlen is still removed
 * (truncated copy; meta->len tells its length). */
int mp_ring_pop(mp_ring_t *r, struct mp_ring_rec *meta, void *buf,
		uint32_t maxlen, int64_t deadline_ns);

/* How many more records of len payload bytes fit now (records and
 * bytes both bounded): an estimate read without the lock, 0 for a ring
 * whose positions make no sense. */
int mp_ring_room(mp_ring_t *r, uint32_t len);

/*
 * For a consumer about to sleep outside mp_ring (on a Dekker of its own
 * with the producers' head store: raise its own flag, call this, then
 * look at the ring): if some producer ever published with a plain store,
 * fence every producer from afar (mp_fence_remote), so that either the
 * look sees its record or the producer's read of the flag after it sees
 * the flag.  0, or -errno from mp_fence_remote: then a wake-up may be
 * missed, and the caller must sleep in short slices.
 */
int mp_ring_fence_producers(mp_ring_t *r);

/* Current tail position (first unreleased record). */
uint64_t mp_ring_tail(mp_ring_t *r);

/* Current head position (end of the last published record): it changes
 * exactly when a push publishes, so a caller that serialises the
 * producers can tell afterwards whether a push it began was published. */
uint64_t mp_ring_head(mp_ring_t *r);

/* Records queued (pushed, not released); -EBADMSG if the header lies. */
int mp_ring_count(mp_ring_t *r);

/* Consumer only: discard everything queued after corruption, wake
 * producers; this handle's pushes then count from the empty ring (other
 * handles' keep over-stating by what was discarded until they re-read).
 * Returns the number of records discarded, or -errno. */
int mp_ring_reset(mp_ring_t *r);

#endif
