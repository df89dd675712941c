/*
 * mp_ring — bounded MPSC ring of variable-length records (see mp_ring.h).
 *
 * Layout of the shared memory: struct mp_ring_sh (eight cache lines, below)
 * followed by the data area of data_bytes (a power of two).  A record is a
 * struct rec_hdr (40 bytes) and its payload, padded to a multiple of 8; a
 * record may wrap around the end of the data area and is then copied in
 * two pieces.
 *
 * Positions (head, tail, cursors) are 64-bit byte counts that only grow;
 * a position's offset in the data area is pos & mask.  Sequence numbers
 * count records the same way.  Invariants, each checked by every reader
 * against the handle's trusted copies before it is used:
 *
 *   tail <= head,  head - tail <= data_bytes,  both multiples of 8;
 *   tail_seq <= head_seq,  head_seq - tail_seq <= max_records (+ 1 after a
 *   consumer's death, below);
 *   the records in [tail, head) lie end to end; record k carries
 *   seq = tail_seq + k, len <= max_payload and a check word over its
 *   position and header fields.
 *
 * Who writes what:
 *   - producers, holding the robust lock: the record bytes at head, then
 *     head_seq, then head (the commit).  A producer handle judges room
 *     against the (tail, tail_seq) pair it read last, and reads the
 *     consumer's line again only when that pair shows too little room:
 *     both only grow, so an old pair under-states the room, never
 *     over-states it;
 *   - the consumer, without lock: tail_seq then tail (its commit: a
 *     plain release store where sleeping producers can fence it from
 *     afar, see wake()), and
 *     head_cache, a lower bound of head that spares it re-reading the
 *     producers' cache line while it still has records in hand;
 *   - whoever is about to sleep: its waiting flag; whoever wakes it clears
 *     the flag and bumps the futex word.
 *
 * Crash safety (SIGKILL anywhere):
 *   - A producer dies before its head store: the record is invisible.  If
 *     it died between the head_seq and head stores, head_seq is one ahead;
 *     the next locker gets MP_LOCK_REPAIR and finds, at head, a complete
 *     record whose seq is head_seq - 1 and whose check word names that
 *     position: only that state leaves one there, so head_seq is put back.
 *   - The consumer dies between its tail_seq and tail stores: tail_seq is
 *     one ahead and the record at tail has seq tail_seq - 1.  Producers
 *     then see one record fewer (never a full ring that is empty: no
 *     deadlock), so the ring may take max_records + 1 (RING_SEQ_SLACK);
 *     the consumer's next peek at tail recognises the state and puts
 *     tail_seq back, so that record is delivered again (the header's
 *     promise: duplicates are told apart by seq).
 *   - A sleeper dies with its waiting flag set: the next waker clears it
 *     after one useless wake-up.  Flags, unlike counters, cannot leak.
 *
 * A corrupt segment cannot make this module read or write outside the
 * mapping: every offset is masked, every length is bounded by the trusted
 * max_payload and by the span [cursor, head), and a record whose check word
 * does not match is refused with -EBADMSG.  (A scribbled pthread mutex is
 * mp_lock's and glibc's business; see the banner of tests/test_ring.c.)
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#include "mp_futex.h"
#include "mp_lock.h"
#include "mp_ring.h"
#include "mp_time.h"
#include "mp_wrap.h"

#define RING_MAGIC    0x4d50524eu /* "MPRN" */
#define RING_VERSION  2u
#define RING_LINE     64
#define RING_MIN_DATA 64u	  /* smallest data area: one empty record */
#define RING_MAX_DATA 0x80000000u /* largest power of two in a uint32_t */

/*
 * Default busy-wait before sleeping, in polls of the awaited position with
 * one mp_cpu_relax() each.  Measured with tests/bench_ring (MP_RING_SPIN=n)
 * on the 2-vCPU AMD EPYC (Zen 3, KVM) build machine, where a pause costs
 * 26 ns: the round trip of a 64-byte ping-pong between two processes was
 * 23-24 us with spins of 0 and 16 (a futex sleep and wake-up every
 * message), 0.65 us to 6 us with 64 (the peer's turn-around is sometimes
 * missed), and 0.4-0.8 us for 128 to 4096.  Streaming throughput did not
 * change with the spin (a busy consumer rarely waits that long).  256,
 * four times the smallest spin that caught the peer, polls for under
 * 10 us before sleeping: long enough for a peer that answers at once,
 * short enough not to starve that peer of the other core of two.
 */
#define RING_SPIN_DEFAULT 256u

/* Records the ring may hold beyond max_records: one, after a consumer died
 * between its two commit stores (banner).  Checks accept it; admission
 * never creates it. */
#define RING_SEQ_SLACK 1u

/* A producer or consumer that cannot fence the other side from afar
 * (wake()) sleeps at most this long at a time. */
#define RING_UNFENCED_SLICE_NS 1000000LL

/* Reset waits this long for the producers' lock before giving up. */
#define RING_RESET_LOCK_NS 1000000000LL

/* Record header as stored in the data area (fixed width, 8-aligned). */
struct rec_hdr {
	uint32_t len;	/* payload bytes */
	uint32_t check; /* rec_check() of position and the fields below */
	int32_t type;
	uint32_t sender;
	uint64_t seq;
	char id[MP_RING_ID_LEN];
};
_Static_assert(sizeof(struct rec_hdr) == 40, "record header is 40 bytes");
#define REC_HDR ((uint32_t)sizeof(struct rec_hdr))

/*
 * In-segment layout.  Each group written by a different party has its own
 * cache line, so that a producer's commit does not invalidate the line the
 * consumer writes and vice versa; the read-mostly flags sit apart so that
 * checking them on every operation costs a cache hit.  Fixed-width fields,
 * no pointers.
 */
struct mp_ring_sh {
	/* Line 0: written once by mp_ring_init (magic last), then read-only. */
	_Atomic uint32_t magic;
	uint32_t version;
	uint32_t data_bytes;
	uint32_t max_records;
	uint32_t max_payload;
	uint32_t hdr_bytes; /* sizeof(struct mp_ring_sh): offset of the data */
	uint8_t pad0[RING_LINE - 24];

	/* Lines 1-2: the producers' lock (room for any pthread_mutex_t). */
	union {
		mp_lock_sh_t lock;
		uint8_t bytes[2 * RING_LINE];
	} pl;

	/* Line 3: producers' side, written under the lock. */
	_Atomic uint64_t head;	   /* end of the last published record */
	_Atomic uint64_t head_seq; /* seq of the next record */
	_Atomic uint64_t resets;   /* mp_ring_reset calls: positions may
				      have moved other than forward, so a
				      handle's tail pair from before is
				      void (mp_ring_t.seen_resets) */
	uint8_t pad3[RING_LINE - 24];

	/* Line 4: consumer's side, written by the consumer only; producers
	 * read it only when the tail they saw last leaves too little room
	 * (mp_ring_t.tail_seen). */
	_Atomic uint64_t tail;	     /* start of the first unreleased record */
	_Atomic uint64_t head_cache; /* a head value the consumer has seen */
	uint8_t pad4[RING_LINE - 16];

	/* Line 5: written by the consumer, read by producers with tail
	 * (when their cached pair shows too little room) and by counts
	 * taken without the lock (mp_ring_count, mp_ring_room): apart, so
	 * that such reads of the count do not take line 4 from the
	 * consumer. */
	_Atomic uint64_t tail_seq; /* seq of the record at tail */
	uint8_t pad5[RING_LINE - 8];

	/* Line 6: the consumer sleeps on data_futex while cons_waiting.
	 * plain_pubs: 1 once some producer published with a plain store,
	 * so that a consumer about to sleep must fence producers from
	 * afar (mp_ring_fence_producers); set once per handle, never
	 * cleared (0 in rings of producers that predate it: they never
	 * publish plainly). */
	_Atomic uint32_t cons_waiting;
	_Atomic uint32_t data_futex;
	_Atomic uint32_t plain_pubs;
	uint8_t pad6[RING_LINE - 12];

	/* Line 7: producers sleep on room_futex while prod_waiting. */
	_Atomic uint32_t prod_waiting;
	_Atomic uint32_t room_futex;
	uint8_t pad7[RING_LINE - 8];
};
_Static_assert(sizeof(mp_lock_sh_t) <= 2 * RING_LINE, "lock fits lines 1-2");
_Static_assert(sizeof(struct mp_ring_sh) == 8 * RING_LINE, "ring header size");
_Static_assert(offsetof(struct mp_ring_sh, head) == 3 * RING_LINE, "line 3");
_Static_assert(offsetof(struct mp_ring_sh, tail) == 4 * RING_LINE, "line 4");
_Static_assert(offsetof(struct mp_ring_sh, tail_seq) == 5 * RING_LINE,
	       "line 5");
_Static_assert(offsetof(struct mp_ring_sh, cons_waiting) == 6 * RING_LINE,
	       "line 6");
_Static_assert(offsetof(struct mp_ring_sh, prod_waiting) == 7 * RING_LINE,
	       "line 7");
_Static_assert(sizeof(_Atomic uint64_t) == 8 && sizeof(_Atomic uint32_t) == 4,
	       "atomics have the plain types' size");

#define RING_HDR_BYTES ((uint32_t)sizeof(struct mp_ring_sh))

/* ---- sizes ---------------------------------------------------------- */

static inline uint32_t rec_size(uint32_t len)
{
	return (REC_HDR + len + 7u) & ~7u;
}

size_t mp_ring_size(uint32_t data_bytes)
{
	if (!mp_wrap_pow2(data_bytes) || data_bytes < RING_MIN_DATA ||
	    data_bytes > RING_MAX_DATA)
		return 0;
	return (size_t)RING_HDR_BYTES + data_bytes;
}

uint32_t mp_ring_min_data_bytes(uint32_t max_payload)
{
	uint32_t need, d = RING_MIN_DATA;

	if (max_payload > MP_RING_MAX_PAYLOAD)
		return 0;
	need = rec_size(max_payload);
	while (d < need)
		d <<= 1;
	return d;
}

/* ---- record framing ------------------------------------------------- */

/* A check word binding a header to its position: a record left over from
 * an earlier lap, a torn header or a scribbled field fails it. */
static inline uint32_t check_of(uint64_t pos, uint32_t len, int32_t type,
				uint32_t sender, uint64_t seq)
{
	/* Each field times an odd constant (a bijection), so a change in
	 * any one field changes x; folded to 32 bits, all but about one in
	 * 2^32 such changes still show.  Three independent multiplies keep
	 * it to a few cycles on the hot path. */
	uint64_t x = pos ^ (seq * 0x9e3779b97f4a7c15ull) ^
		     (((uint64_t)len << 32 | sender) * 0xc2b2ae3d27d4eb4full) ^
		     ((uint64_t)(uint32_t)type * 0x165667b19e3779f9ull);

	return (uint32_t)(x ^ (x >> 32)) ^ RING_MAGIC;
}

static inline uint32_t rec_check(uint64_t pos, const struct rec_hdr *h)
{
	return check_of(pos, h->len, h->type, h->sender, h->seq);
}

/* Copy into / out of the data area at pos, in two pieces if it wraps.
 * n <= data_bytes always (callers bound it), so nothing leaves the area. */
static inline void ring_write(const mp_ring_t *r, uint64_t pos, const void *src,
			      uint32_t n)
{
	mp_wrap_put(r->data, r->data_bytes, pos, src, n);
}

static inline void ring_read(const mp_ring_t *r, uint64_t pos, void *dst,
			     uint32_t n)
{
	mp_wrap_get(r->data, r->data_bytes, pos, dst, n);
}

/*
 * Write the header of a record at pos.  Unless it wraps, the fields are
 * stored in place: assembling it on the stack and copying it costs more
 * (the wide loads of the copy cannot be forwarded from the narrow stores
 * that built it).  Positions are multiples of 8, so the fields are aligned.
 */
static inline void hdr_write(const mp_ring_t *r, uint64_t pos, uint32_t len,
			     const struct mp_ring_rec *meta, uint64_t seq)
{
	uint32_t off = (uint32_t)pos & r->mask;
	uint32_t check = check_of(pos, len, meta->type, meta->sender, seq);
	struct rec_hdr *d, h;

	d = off + REC_HDR <= r->data_bytes ? (struct rec_hdr *)(r->data + off)
					   : &h;
	d->len = len;
	d->check = check;
	d->type = meta->type;
	d->sender = meta->sender;
	d->seq = seq;
	/* The id as given, its terminator enforced. */
	memcpy(d->id, meta->id, MP_RING_ID_LEN);
	d->id[MP_RING_ID_LEN - 1] = '\0';
	if (d == &h)
		ring_write(r, pos, &h, REC_HDR);
}

/* Headers have a constant size: copied inline unless they wrap (a library
 * memcpy of 40 bytes uses overlapping wide moves that the fields' loads
 * cannot be forwarded from, which cost more than the copy). */
static inline void hdr_read(const mp_ring_t *r, uint64_t pos, struct rec_hdr *h)
{
	uint32_t off = (uint32_t)pos & r->mask;

	if (off + REC_HDR <= r->data_bytes)
		memcpy(h, r->data + off, REC_HDR);
	else
		ring_read(r, pos, h, REC_HDR);
}

/*
 * Read and check the header of the record at pos, which must end by head.
 * The header is copied first and only the copy is checked and used, so a
 * writer scribbling on the segment meanwhile cannot change it after the
 * check.  0, or -EBADMSG: len over the limit, record past head, check word
 * wrong.
 */
static int rec_load(const mp_ring_t *r, uint64_t pos, uint64_t head,
		    struct rec_hdr *h)
{
	if (head - pos < REC_HDR)
		return -EBADMSG;
	hdr_read(r, pos, h);
	if (h->len > r->max_payload || rec_size(h->len) > head - pos ||
	    h->check != rec_check(pos, h))
		return -EBADMSG;
	return 0;
}

/* ---- init / attach -------------------------------------------------- */

/* max_records + RING_SEQ_SLACK must fit an int: count and reset return
 * up to that many (found by tests/fuzz_ring: INT32_MAX made them return
 * INT_MIN for a ring whose seqs were that far apart). */
static int limits_ok(uint32_t data_bytes, uint32_t max_records,
		     uint32_t max_payload)
{
	return mp_ring_size(data_bytes) != 0 &&
	       max_payload <= MP_RING_MAX_PAYLOAD &&
	       rec_size(max_payload) <= data_bytes && max_records >= 1 &&
	       max_records <= INT32_MAX - RING_SEQ_SLACK;
}

static void handle_fill(mp_ring_t *r, void *mem, uint32_t data_bytes,
			uint32_t max_records, uint32_t max_payload)
{
	r->sh = mem;
	r->data = (uint8_t *)mem + RING_HDR_BYTES;
	r->data_bytes = data_bytes;
	r->mask = data_bytes - 1;
	r->max_records = max_records;
	r->max_payload = max_payload;
	r->memsize = mp_ring_size(data_bytes);
	r->spin = RING_SPIN_DEFAULT;
	/* No pair yet: the first push reads the segment's (positions
	 * need not start at 0 in a ring that was reset). */
	atomic_store_explicit(&r->tail_seen, 0, memory_order_relaxed);
	atomic_store_explicit(&r->tail_seq_seen, 0, memory_order_relaxed);
	atomic_store_explicit(&r->tail_reread, 0, memory_order_relaxed);
	atomic_store_explicit(&r->seen_resets, 0, memory_order_relaxed);
	/* A consumer in a process that sleeping producers can fence from
	 * afar commits without a locked instruction, and a producer in a
	 * process that a sleeping consumer can fence publishes without one
	 * (see wake()); the caller may clear either (mp_chseg does when its
	 * server cannot fence). */
	r->plain_commit = mp_fence_register();
	r->plain_publish = r->plain_commit;
	atomic_store_explicit(&r->announced, 0, memory_order_relaxed);
}

/*
 * Attach: start the producer's cached pair at the consumer's position, so
 * that the first pushes of a handle attached to a ring in service return
 * counts near the truth instead of counting everything ever consumed.
 * Only a pair that is consistent with head is taken (each value only
 * grows, so whatever was read is a lower bound later on, as for the pair
 * mp_ring_pushv reads); otherwise 0, 0 stays and the first push reads the
 * segment itself (and reports what is wrong with it).  Acquire on tail:
 * as in mp_ring_pushv, the consumer's reads of the bytes before it are
 * done before a push judged by it overwrites them.
 */
static void cache_tail(mp_ring_t *r)
{
	struct mp_ring_sh *sh = r->sh;
	uint64_t h, hs, t, ts;

	/* The reset count first, with acquire: mp_ring_reset counts a
	 * reset only after it moved the positions (release), so a pair
	 * read after a count is at least as new as that reset; a reset
	 * that comes later voids the pair (mp_ring_pushv). */
	uint64_t resets = atomic_load_explicit(&sh->resets,
					       memory_order_acquire);

	h = atomic_load_explicit(&sh->head, memory_order_relaxed);
	hs = atomic_load_explicit(&sh->head_seq, memory_order_relaxed);
	t = atomic_load_explicit(&sh->tail, memory_order_acquire);
	ts = atomic_load_explicit(&sh->tail_seq, memory_order_relaxed);
	if ((t & 7) || h - t > r->data_bytes ||
	    hs - ts > r->max_records + RING_SEQ_SLACK)
		return;
	atomic_store_explicit(&r->tail_seq_seen, ts, memory_order_relaxed);
	atomic_store_explicit(&r->tail_seen, t, memory_order_release);
	atomic_store_explicit(&r->seen_resets, resets + 1,
			      memory_order_relaxed);
}

int mp_ring_init(mp_ring_t *r, void *mem, size_t memsize, uint32_t data_bytes,
		 uint32_t max_records, uint32_t max_payload)
{
	struct mp_ring_sh *sh = mem;
	int rc;

	if (!r || !mem || ((uintptr_t)mem & 7) ||
	    !limits_ok(data_bytes, max_records, max_payload) ||
	    memsize < mp_ring_size(data_bytes))
		return -EINVAL;
	memset(sh, 0, sizeof(*sh));
	rc = mp_lock_init(&sh->pl.lock);
	if (rc < 0)
		return -EINVAL;
	sh->version = RING_VERSION;
	sh->data_bytes = data_bytes;
	sh->max_records = max_records;
	sh->max_payload = max_payload;
	sh->hdr_bytes = RING_HDR_BYTES;
	/* Release: an attacher that sees the magic sees the fields above. */
	atomic_store_explicit(&sh->magic, RING_MAGIC, memory_order_release);
	handle_fill(r, mem, data_bytes, max_records, max_payload);
	return 0;
}

int mp_ring_attach(mp_ring_t *r, void *mem, size_t memsize)
{
	struct mp_ring_sh *sh = mem;
	uint32_t data_bytes, max_records, max_payload;

	if (!r || !mem || ((uintptr_t)mem & 7) || memsize < RING_HDR_BYTES)
		return -EBADMSG;
	/* Acquire: pairs with the release in mp_ring_init. */
	if (atomic_load_explicit(&sh->magic, memory_order_acquire) !=
		    RING_MAGIC ||
	    sh->version != RING_VERSION || sh->hdr_bytes != RING_HDR_BYTES)
		return -EBADMSG;
	/* Copy once, then check and use only the copies. */
	data_bytes = sh->data_bytes;
	max_records = sh->max_records;
	max_payload = sh->max_payload;
	if (!limits_ok(data_bytes, max_records, max_payload) ||
	    memsize < mp_ring_size(data_bytes))
		return -EBADMSG;
	handle_fill(r, mem, data_bytes, max_records, max_payload);
	cache_tail(r);
	return 0;
}

static inline int magic_ok(const mp_ring_t *r)
{
	return atomic_load_explicit(&r->sh->magic, memory_order_relaxed) ==
	       RING_MAGIC;
}

/* ---- wake-ups ------------------------------------------------------- */

/*
 * The Dekker pairing used on both sides: the waiter stores its flag, then
 * re-reads the position it waits on; the other side stores the position
 * (its commit), then reads the flag.  All four accesses are seq_cst, so
 * they fall in one total order that keeps each side's program order: at
 * least one side sees the other's store.  Either the waiter sees the new
 * position and does not sleep, or the waker sees the flag and wakes it.
 * (On x86 a seq_cst store is one xchg, the full barrier the pairing needs,
 * where a release store and a separate fence would cost two.)  The waiter
 * reads the futex word before setting its flag, and the waker bumps the
 * word before waking, so a wake-up that lands before the waiter's
 * futex_wait makes it return at once.
 *
 * The consumer's commit is the exception, when r->plain_commit: it stores
 * tail with a plain release store and reads prod_waiting after it, and a
 * producer about to sleep pays for both sides' barrier with
 * mp_fence_remote() between its flag store and its re-read of tail (an
 * asymmetric Dekker: the fence runs a full barrier on the consumer's CPU,
 * so either the consumer's tail store is visible to the re-read, or its
 * later read of the flag sees the flag).  A producer that cannot fence
 * from afar sleeps in slices of RING_UNFENCED_SLICE_NS instead, so a
 * wake-up lost that way costs at most one slice.  Why: the consumer
 * commits every record, and a locked store waits for the consumer's own
 * pending stores to reach lines that producers read, which profiles of
 * messip-bench shm-buffered showed as half of the receiving side's time.
 *
 * The producer's publication is the mirror, when r->plain_publish: head
 * is stored with a plain release store, cons_waiting read after it, and
 * the consumer about to sleep calls mp_fence_remote() between its flag
 * store and its re-read of head (plain_publish is only set in a process
 * registered as a fence target, so the fence reaches it).  A consumer
 * that cannot fence sleeps in slices of RING_UNFENCED_SLICE_NS.  The
 * fence is skipped while no producer ever published plainly: a producer
 * handle announces itself once (plain_pubs, a seq_cst store before its
 * first plain publication), and the consumer reads plain_pubs (seq_cst)
 * after its flag store: if it reads 0, the producer's announcement comes
 * later in the seq_cst order than the consumer's flag, so the producer's
 * read of the flag after its publication sees it.  So rings that only
 * ever see locked publications (a kernel without membarrier, or a
 * ring whose producers are not allowed) pay no fence.  Whoever
 * relies on a head store being a full barrier for a Dekker of its own
 * (mp_chseg's doorbell) must do the same or clear plain_publish.
 * Measured on the 2-vCPU build machine, base and this side by side
 * (tests/bench_ring 0.1 64, five pairs): 64-byte mpsc 8.4-9.6 million
 * records/s (37-42% of the bare spsc) before, 11.0-12.9 million (46-58%)
 * after; the 64-byte ping-pong unchanged (0.38-0.46 us).  The producers'
 * robust lock is the larger cost left: a push without it (an experiment,
 * not a design) measured about twice the ratio in tests/bench_chseg.
 */
static int wake(_Atomic uint32_t *flag, _Atomic uint32_t *word)
{
	if (atomic_load_explicit(flag, memory_order_seq_cst) &&
	    atomic_exchange_explicit(flag, 0, memory_order_relaxed)) {
		atomic_fetch_add_explicit(word, 1, memory_order_relaxed);
		/* All: several producers may sleep, and a consumer woken
		 * for nothing goes back to sleep by itself. */
		mp_futex_wake((uint32_t *)word, INT32_MAX);
		return 1;
	}
	return 0;
}

/* Wait on word (read as w before the flag was set) until woken. */
static int sleep_on(_Atomic uint32_t *word, uint32_t w, int64_t deadline_ns)
{
	return mp_futex_wait((uint32_t *)word, w, deadline_ns);
}

static int deadline_passed(int64_t deadline_ns)
{
	/* A deadline of 0 (or any time before boot) is a poll: no clock
	 * read, which costs as much as a small push or pop. */
	return deadline_ns <= 0 || (deadline_ns != MP_TIME_FOREVER &&
				    mp_time_now_ns() >= deadline_ns);
}

/* ---- producer ------------------------------------------------------- */

/*
 * Lock-holder repair after a producer died inside its critical section.
 * Its partial record, if any, lies at or after head and is invisible; only
 * head_seq may be off (one ahead, see the banner).
 */
static void repair_head_seq(mp_ring_t *r, uint64_t head, uint64_t *head_seq)
{
	struct mp_ring_sh *sh = r->sh;
	struct rec_hdr h;

	/* The dead producer's record lies in free space, so bound it by the
	 * end of the data area rather than by head. */
	if (rec_load(r, head, head + r->data_bytes, &h) == 0 &&
	    h.seq == *head_seq - 1) {
		*head_seq -= 1;
		atomic_store_explicit(&sh->head_seq, *head_seq,
				      memory_order_relaxed);
	}
}

/*
 * Room for a record of `need` bytes, judged without the lock (so positions
 * may be stale: head only grows and tail only grows, so a stale head
 * over-estimates room and the locked path decides).  A ring whose
 * positions make no sense reports room, so that the locked path, not a
 * sleep, reports the corruption.  Seq_cst on tail: the waiter's half of
 * the Dekker pairing (see wake()).
 */
static int room_for(mp_ring_t *r, uint32_t need)
{
	struct mp_ring_sh *sh = r->sh;
	uint64_t t = atomic_load_explicit(&sh->tail, memory_order_seq_cst);
	uint64_t ts = atomic_load_explicit(&sh->tail_seq, memory_order_relaxed);
	uint64_t h = atomic_load_explicit(&sh->head, memory_order_relaxed);
	uint64_t hs = atomic_load_explicit(&sh->head_seq, memory_order_relaxed);

	if (h - t > r->data_bytes || hs - ts > r->max_records + RING_SEQ_SLACK)
		return 1;
	return h - t + need <= r->data_bytes && hs - ts < r->max_records;
}

/* Wait outside the lock until room_for(need) or the deadline. */
static int wait_room(mp_ring_t *r, uint32_t need, int64_t deadline_ns)
{
	struct mp_ring_sh *sh = r->sh;
	unsigned spins = r->spin;
	int64_t until;
	int first = 1;
	uint32_t w;

	for (;;) {
		if (room_for(r, need))
			return 0;
		/* A poll (deadline already passed) does not spin. */
		if (first && deadline_passed(deadline_ns))
			return -ETIMEDOUT;
		first = 0;
		if (spins) {
			spins--;
			mp_cpu_relax();
			continue;
		}
		w = atomic_load_explicit(&sh->room_futex, memory_order_relaxed);
		/* Dekker (see wake()): flag store, then a fence on the
		 * consumer's side too, then re-read tail. */
		atomic_store_explicit(&sh->prod_waiting, 1,
				      memory_order_seq_cst);
		until = deadline_ns;
		if (mp_fence_remote() < 0) {
			int64_t end = mp_time_now_ns() + RING_UNFENCED_SLICE_NS;

			if (end < until)
				until = end;
		}
		if (room_for(r, need))
			return 0;
		/* The flag is left set: only the consumer clears it, so that
		 * a producer leaving cannot hide another one still asleep. */
		if (sleep_on(&sh->room_futex, w, until) == -ETIMEDOUT &&
		    until == deadline_ns)
			return room_for(r, need) ? 0 : -ETIMEDOUT;
	}
}

static int lock_err(int rc)
{
	return rc == -ETIMEDOUT ? -ETIMEDOUT : -ENOTRECOVERABLE;
}

int mp_ring_pushv(mp_ring_t *r, struct mp_ring_rec *meta,
		  const struct iovec *iov, int iovcnt, int64_t deadline_ns)
{
	struct mp_ring_sh *sh = r->sh;
	uint64_t head, hs, t, ts, pos, resets;
	size_t total = 0;
	uint32_t len, need;
	int rc;

	if (iovcnt < 0 || (iovcnt > 0 && !iov))
		return -EINVAL;
	for (int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len > r->max_payload)
			return -EMSGSIZE;
		total += iov[i].iov_len;
		if (total > r->max_payload)
			return -EMSGSIZE;
	}
	len = (uint32_t)total;
	need = rec_size(len);
	/* Before the first plain publication of this handle, tell
	 * consumers about to sleep that they must fence (seq_cst: ordered
	 * before that publication and the read of cons_waiting after it;
	 * see wake()).  Once per handle; threads racing store it twice. */
	if (r->plain_publish &&
	    !atomic_load_explicit(&r->announced, memory_order_relaxed)) {
		atomic_store_explicit(&sh->plain_pubs, 1, memory_order_seq_cst);
		atomic_store_explicit(&r->announced, 1, memory_order_relaxed);
	}
	for (;;) {
		rc = mp_lock_acquire(&sh->pl.lock, deadline_ns);
		if (rc < 0)
			return lock_err(rc);
		if (!magic_ok(r))
			goto corrupt;
		head = atomic_load_explicit(&sh->head, memory_order_relaxed);
		hs = atomic_load_explicit(&sh->head_seq, memory_order_relaxed);
		if (rc == MP_LOCK_REPAIR)
			repair_head_seq(r, head, &hs);
		if (head & 7)
			goto corrupt;
		/* First against the pair this handle saw last (checked
		 * then, and a lower bound now): while that shows room, the
		 * consumer's line is not read, so its commits do not bounce
		 * that line to us and back on every record.  Acquire, with
		 * the release below: the acquire that loaded the pair (in
		 * whichever thread of ours) still orders the consumer's
		 * reads of the bytes before it before our overwriting them
		 * (plain moves on x86). */
		t = atomic_load_explicit(&r->tail_seen, memory_order_acquire);
		ts = atomic_load_explicit(&r->tail_seq_seen,
					  memory_order_relaxed);
		/* The pair is a lower bound only while positions grow, so
		 * only if no reset came since it was read (a reset of a
		 * ring whose head was corrupted moves positions back, and
		 * a stale pair would then over-state the room: fuzz_ring
		 * found the overwrite).  resets shares head's line and the
		 * lock orders it.  No sum that could wrap back into range
		 * (need <= data_bytes, limits_ok). */
		resets = atomic_load_explicit(&sh->resets,
					      memory_order_relaxed);
		if (atomic_load_explicit(&r->seen_resets,
					 memory_order_relaxed) == resets + 1 &&
		    head - t <= r->data_bytes - need &&
		    hs - ts < r->max_records &&
		    !(atomic_load_explicit(&r->tail_reread,
					   memory_order_relaxed) &&
		      atomic_exchange_explicit(&r->tail_reread, 0,
					       memory_order_relaxed)))
			break;
		/* Acquire: the consumer's reads of the bytes before tail
		 * are done before we overwrite them.  tail_seq is stored
		 * before tail, so it is at least as new as t. */
		t = atomic_load_explicit(&sh->tail, memory_order_acquire);
		ts = atomic_load_explicit(&sh->tail_seq, memory_order_relaxed);
		if ((t & 7) || head - t > r->data_bytes ||
		    hs - ts > r->max_records + RING_SEQ_SLACK)
			goto corrupt;
		/* tail_seq_seen first, then tail_seen with release: a
		 * thread that acquires a tail_seen sees a tail_seq_seen at
		 * least as new (stale is safe, see above). */
		atomic_store_explicit(&r->tail_seq_seen, ts,
				      memory_order_relaxed);
		atomic_store_explicit(&r->tail_seen, t, memory_order_release);
		atomic_store_explicit(&r->seen_resets, resets + 1,
				      memory_order_relaxed);
		if (head - t + need <= r->data_bytes &&
		    hs - ts < r->max_records)
			break;
		mp_lock_release(&sh->pl.lock);
		rc = wait_room(r, need, deadline_ns);
		if (rc < 0)
			return rc;
	}

	hdr_write(r, head, len, meta, hs);
	pos = head + REC_HDR;
	for (int i = 0; i < iovcnt; i++) {
		if (!iov[i].iov_len)
			continue; /* its base may be NULL */
		ring_write(r, pos, iov[i].iov_base, (uint32_t)iov[i].iov_len);
		pos += iov[i].iov_len;
	}
	/* Release: the record bytes are written before head_seq counts the
	 * record (what repair_head_seq relies on).  The head store, a
	 * release, publishes the record to the consumer's acquire of head,
	 * and is the first half of the Dekker pairing (see wake()) whose
	 * second half reads cons_waiting: seq_cst, or a plain store that a
	 * consumer about to sleep fences from afar. */
	atomic_store_explicit(&sh->head_seq, hs + 1, memory_order_release);
	if (r->plain_publish) {
		atomic_store_explicit(&sh->head, head + need,
				      memory_order_release);
		/* Keeps the compiler from reading the flag first; the CPU
		 * is the consumer's fence's business. */
		atomic_signal_fence(memory_order_seq_cst);
	} else {
		atomic_store_explicit(&sh->head, head + need,
				      memory_order_seq_cst);
	}
	mp_lock_release(&sh->pl.lock);
	/* A consumer that slept had taken everything: its line is quiet
	 * now, so the next push reads it (cheaply) and counts exactly -
	 * a producer that sends now and then to an idle consumer does
	 * not see a count that only grows. */
	if (wake(&sh->cons_waiting, &sh->data_futex))
		atomic_store_explicit(&r->tail_reread, 1,
				      memory_order_relaxed);

	meta->seq = hs;
	meta->len = len;
	/* The records queued before ours as far as this handle knows: the
	 * pair it judged room by is older than the consumer's position, so
	 * this is an upper bound (mp_ring.h), exact when this push had to
	 * refresh the pair and the consumer did not release meanwhile.  Not
	 * the consumer's own tail_seq: that line is written on every record,
	 * and reading it cost every push a miss (a third of its time in
	 * tests/bench_ring).  Below max_records, as the admission said. */
	return (int)(hs - ts);

corrupt:
	mp_lock_release(&sh->pl.lock);
	return -EBADMSG;
}

int mp_ring_push(mp_ring_t *r, struct mp_ring_rec *meta, const void *data,
		 uint32_t len, int64_t deadline_ns)
{
	struct iovec iov = {.iov_base = (void *)data, .iov_len = len};

	if (len > r->max_payload)
		return -EMSGSIZE;
	return mp_ring_pushv(r, meta, &iov, len ? 1 : 0, deadline_ns);
}

/* ---- consumer ------------------------------------------------------- */

int mp_ring_fence_producers(mp_ring_t *r)
{
	/* Seq_cst: after the caller's flag store in the total order (see
	 * wake() for why reading 0 lets us skip the fence). */
	if (!atomic_load_explicit(&r->sh->plain_pubs, memory_order_seq_cst))
		return 0;
	return mp_fence_remote();
}

/* A head value is usable if it is aligned and within a ring of tail. */
static inline int head_ok(const mp_ring_t *r, uint64_t h, uint64_t t)
{
	return !(h & 7) && h - t <= r->data_bytes;
}

/*
 * Find a head beyond cursor c (tail t), waiting until the deadline.
 * 0 with *hp set, -ETIMEDOUT, -EBADMSG (head makes no sense), -EINVAL
 * (c lies beyond head).
 */
static int wait_data(mp_ring_t *r, uint64_t c, uint64_t t, uint64_t *hp,
		     int64_t deadline_ns)
{
	struct mp_ring_sh *sh = r->sh;
	unsigned spins = r->spin;
	int first = 1, timed_out = 0;
	int64_t until;
	uint64_t h;
	uint32_t w;

	for (;;) {
		/* Acquire: pairs with the producer's release of head; the
		 * record bytes before h are visible. */
		h = atomic_load_explicit(&sh->head, memory_order_acquire);
		if (!head_ok(r, h, t))
			return -EBADMSG;
		if (c - t > h - t)
			return -EINVAL;
		if (h != c) {
			/* Release: a successor consumer that loads
			 * head_cache with acquire sees those bytes too. */
			atomic_store_explicit(&sh->head_cache, h,
					      memory_order_release);
			*hp = h;
			return 0;
		}
		/* A poll (deadline already passed) does not spin. */
		if (timed_out || (first && deadline_passed(deadline_ns)))
			return -ETIMEDOUT;
		first = 0;
		if (spins) {
			spins--;
			mp_cpu_relax();
			continue;
		}
		w = atomic_load_explicit(&sh->data_futex, memory_order_relaxed);
		/* Dekker (see wake()): flag store, then a fence on the
		 * producers' side too (their head store may be plain), then
		 * re-read head. */
		atomic_store_explicit(&sh->cons_waiting, 1,
				      memory_order_seq_cst);
		until = deadline_ns;
		if (mp_ring_fence_producers(r) < 0) {
			int64_t end = mp_time_now_ns() + RING_UNFENCED_SLICE_NS;

			if (end < until)
				until = end;
		}
		h = atomic_load_explicit(&sh->head, memory_order_seq_cst);
		if (h == c &&
		    sleep_on(&sh->data_futex, w, until) == -ETIMEDOUT &&
		    until == deadline_ns)
			timed_out = 1; /* one last look at head, then give up */
		/* Single consumer: nobody else relies on the flag. */
		atomic_store_explicit(&sh->cons_waiting, 0,
				      memory_order_relaxed);
	}
}

/*
 * The record at cursor c: header checked, payload copied.  On success
 * *next is the position after it.  Nothing in the segment is changed
 * except tail_seq, put back when a dead consumer left it one ahead.
 */
static int peek_at(mp_ring_t *r, uint64_t c, uint64_t *next,
		   struct mp_ring_rec *meta, void *buf, uint32_t maxlen,
		   int64_t deadline_ns)
{
	struct mp_ring_sh *sh = r->sh;
	struct rec_hdr h;
	uint64_t t, ts, hd;
	int rc;

	if (!magic_ok(r))
		return -EBADMSG;
	t = atomic_load_explicit(&sh->tail, memory_order_acquire);
	ts = atomic_load_explicit(&sh->tail_seq, memory_order_relaxed);
	if (t & 7)
		return -EBADMSG;
	if ((c & 7) || c - t > r->data_bytes)
		return -EINVAL;
	/* Acquire: pairs with the release in wait_data(). */
	hd = atomic_load_explicit(&sh->head_cache, memory_order_acquire);
	if (!head_ok(r, hd, t) || c - t >= hd - t) {
		rc = wait_data(r, c, t, &hd, deadline_ns);
		if (rc < 0)
			return rc;
	}
	rc = rec_load(r, c, hd, &h);
	if (rc < 0)
		return rc;
	if (c == t) {
		if (h.seq == ts - 1) {
			/* A consumer died between storing tail_seq and
			 * tail: take the record back (banner). */
			ts = h.seq;
			atomic_store_explicit(&sh->tail_seq, ts,
					      memory_order_relaxed);
		}
		if (h.seq != ts)
			return -EBADMSG;
	} else if (h.seq - ts > r->max_records + RING_SEQ_SLACK - 1) {
		return -EBADMSG;
	}
	if (buf && maxlen)
		ring_read(r, c + REC_HDR, buf, h.len < maxlen ? h.len : maxlen);
	if (meta) {
		meta->type = h.type;
		meta->sender = h.sender;
		memcpy(meta->id, h.id, MP_RING_ID_LEN);
		meta->id[MP_RING_ID_LEN - 1] = '\0';
		meta->seq = h.seq;
		meta->len = h.len;
	}
	*next = c + rec_size(h.len);
	return (int)h.len;
}

int mp_ring_peek(mp_ring_t *r, uint64_t *cursor, struct mp_ring_rec *meta,
		 void *buf, uint32_t maxlen, int64_t deadline_ns)
{
	uint64_t next;
	int rc = peek_at(r, *cursor, &next, meta, buf, maxlen, deadline_ns);

	if (rc >= 0)
		*cursor = next;
	return rc;
}

/* Free [tail, c) holding records up to seq next_seq - 1; wake producers. */
static void commit_tail(mp_ring_t *r, uint64_t c, uint64_t next_seq)
{
	struct mp_ring_sh *sh = r->sh;

	/* tail_seq before tail (crash order, see banner).  The tail store
	 * is a release, so our reads of the freed bytes are done before a
	 * producer that acquired the new tail overwrites them; and the
	 * first half of the Dekker pairing (see wake()): seq_cst, or a
	 * plain store that sleeping producers fence from afar. */
	atomic_store_explicit(&sh->tail_seq, next_seq, memory_order_relaxed);
	if (r->plain_commit) {
		atomic_store_explicit(&sh->tail, c, memory_order_release);
		/* Keeps the compiler from reading the flag first; the CPU
		 * is the producer's fence's business. */
		atomic_signal_fence(memory_order_seq_cst);
	} else {
		atomic_store_explicit(&sh->tail, c, memory_order_seq_cst);
	}
	wake(&sh->prod_waiting, &sh->room_futex);
}

int mp_ring_release(mp_ring_t *r, uint64_t cursor)
{
	struct mp_ring_sh *sh = r->sh;
	struct rec_hdr h;
	uint64_t t, ts, hd, p;
	int rc;

	if (!magic_ok(r))
		return -EBADMSG;
	t = atomic_load_explicit(&sh->tail, memory_order_acquire);
	ts = atomic_load_explicit(&sh->tail_seq, memory_order_relaxed);
	if (t & 7)
		return -EBADMSG;
	if ((cursor & 7) || cursor - t > r->data_bytes)
		return -EINVAL;
	if (cursor == t)
		return 0;
	hd = atomic_load_explicit(&sh->head_cache, memory_order_acquire);
	if (!head_ok(r, hd, t) || cursor - t > hd - t) {
		hd = atomic_load_explicit(&sh->head, memory_order_acquire);
		if (!head_ok(r, hd, t))
			return -EBADMSG;
		if (cursor - t > hd - t)
			return -EINVAL;
	}
	/* Walk the records being freed: cursor must fall on a boundary
	 * and their seqs follow on from tail_seq. */
	for (p = t; p != cursor; p += rec_size(h.len)) {
		if (cursor - p < REC_HDR)
			return -EINVAL;
		rc = rec_load(r, p, hd, &h);
		if (rc < 0)
			return rc;
		if (p == t && h.seq == ts - 1)
			ts = h.seq; /* dead consumer's state, see peek_at() */
		if (h.seq != ts)
			return -EBADMSG;
		ts++;
		if (cursor - p < rec_size(h.len))
			return -EINVAL;
	}
	commit_tail(r, cursor, ts);
	return 0;
}

int mp_ring_pop(mp_ring_t *r, struct mp_ring_rec *meta, void *buf,
		uint32_t maxlen, int64_t deadline_ns)
{
	struct mp_ring_rec local, *m = meta ? meta : &local;
	uint64_t t, next;
	int rc;

	t = atomic_load_explicit(&r->sh->tail, memory_order_acquire);
	rc = peek_at(r, t, &next, m, buf, maxlen, deadline_ns);
	if (rc < 0)
		return rc;
	commit_tail(r, next, m->seq + 1);
	return rc;
}

int mp_ring_room(mp_ring_t *r, uint32_t len)
{
	struct mp_ring_sh *sh = r->sh;
	uint64_t t, ts, h, hs, by_rec, by_bytes;

	if (len > r->max_payload)
		return 0;
	/* A snapshot without the lock: only an estimate (producers and the
	 * consumer move on), so relaxed loads; checked like any reading. */
	t = atomic_load_explicit(&sh->tail, memory_order_relaxed);
	ts = atomic_load_explicit(&sh->tail_seq, memory_order_relaxed);
	h = atomic_load_explicit(&sh->head, memory_order_relaxed);
	hs = atomic_load_explicit(&sh->head_seq, memory_order_relaxed);
	if (h - t > r->data_bytes || hs - ts > r->max_records)
		return 0;
	by_rec = r->max_records - (hs - ts);
	by_bytes = (r->data_bytes - (h - t)) / rec_size(len);
	by_rec = by_rec < by_bytes ? by_rec : by_bytes;
	return by_rec > INT32_MAX ? INT32_MAX : (int)by_rec;
}

uint64_t mp_ring_tail(mp_ring_t *r)
{
	return atomic_load_explicit(&r->sh->tail, memory_order_acquire);
}

uint64_t mp_ring_head(mp_ring_t *r)
{
	return atomic_load_explicit(&r->sh->head, memory_order_acquire);
}

int mp_ring_count(mp_ring_t *r)
{
	struct mp_ring_sh *sh = r->sh;
	uint64_t ts, hs, ts2;

	if (!magic_ok(r))
		return -EBADMSG;
	/* head_seq read between two equal reads of tail_seq gives a pair
	 * that held at one instant.  Both only grow, so retrying ends
	 * unless the consumer releases continuously; then settle for the
	 * last reading clamped to the limit. */
	for (int i = 0; i < 64; i++) {
		ts = atomic_load_explicit(&sh->tail_seq, memory_order_acquire);
		hs = atomic_load_explicit(&sh->head_seq, memory_order_acquire);
		ts2 = atomic_load_explicit(&sh->tail_seq, memory_order_acquire);
		if (ts == ts2)
			return hs - ts > r->max_records + RING_SEQ_SLACK
				       ? -EBADMSG
				       : (int)(hs - ts);
	}
	return hs - ts2 > r->max_records ? (int)r->max_records
					 : (int)(hs - ts2);
}

int mp_ring_reset(mp_ring_t *r)
{
	struct mp_ring_sh *sh = r->sh;
	uint64_t h, hs, ts, resets;
	int rc, n;

	rc = mp_lock_acquire(&sh->pl.lock,
			     mp_time_now_ns() + RING_RESET_LOCK_NS);
	if (rc < 0)
		return lock_err(rc);
	/* Holding the lock, nobody pushes: rewrite the fixed part from the
	 * trusted copies and make the ring empty at its current head. */
	sh->version = RING_VERSION;
	sh->data_bytes = r->data_bytes;
	sh->max_records = r->max_records;
	sh->max_payload = r->max_payload;
	sh->hdr_bytes = RING_HDR_BYTES;
	atomic_store_explicit(&sh->magic, RING_MAGIC, memory_order_relaxed);
	h = atomic_load_explicit(&sh->head, memory_order_relaxed) & ~7ull;
	hs = atomic_load_explicit(&sh->head_seq, memory_order_relaxed);
	ts = atomic_load_explicit(&sh->tail_seq, memory_order_relaxed);
	n = hs - ts <= r->max_records + RING_SEQ_SLACK ? (int)(hs - ts) : 0;
	atomic_store_explicit(&sh->head, h, memory_order_relaxed);
	atomic_store_explicit(&sh->head_cache, h, memory_order_relaxed);
	atomic_store_explicit(&sh->tail_seq, hs, memory_order_relaxed);
	atomic_store_explicit(&sh->cons_waiting, 0, memory_order_relaxed);
	/* tail last, as in commit_tail(), and still under the lock so that
	 * no producer sees the new head with the old tail; wake every
	 * producer (the flag set so that wake() does not skip them). */
	atomic_store_explicit(&sh->prod_waiting, 1, memory_order_relaxed);
	commit_tail(r, h, hs);
	/* Every handle's tail pair is void from now (see mp_ring_pushv):
	 * counted after the positions moved, with release, for an attach
	 * that reads the count and then the pair without the lock
	 * (cache_tail). */
	resets = atomic_load_explicit(&sh->resets, memory_order_relaxed) + 1;
	atomic_store_explicit(&sh->resets, resets, memory_order_release);
	/* This handle's producer side knows the new position: its pushes
	 * count from the empty ring, not from what was discarded. */
	atomic_store_explicit(&r->tail_seq_seen, hs, memory_order_relaxed);
	atomic_store_explicit(&r->tail_seen, h, memory_order_release);
	atomic_store_explicit(&r->seen_resets, resets + 1,
			      memory_order_relaxed);
	atomic_store_explicit(&r->tail_reread, 0, memory_order_relaxed);
	mp_lock_release(&sh->pl.lock);
	return n;
}
