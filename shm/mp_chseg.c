/*
 * mp_chseg — a channel's segment (see mp_chseg.h for the layout, the slot
 * state machine, the invariants and the waiting policy).
 *
 * Notes on the implementation:
 * - Every access to a word another process may write at the same time is
 *   an __atomic builtin on the plain field (the layout is a fixed-width
 *   contract, like mp_shm's header); metadata fields are loaded once with
 *   a relaxed load into a local, checked, then used.
 * - The hot client path (loan, send, wait, done on the slot used last,
 *   which it parked) is one CAS on the slot's park word (a line only
 *   this client writes), plain stores into the slot's line (fields that
 *   changed) and area, one seq_cst CAS to publish, one load of
 *   srv_waiters (a line the server writes only when it goes to sleep), a
 *   spin on the slot's own state word, and one release store of the park
 *   word: no shared counter, no system call, and the slot's line written
 *   once per request.  Before parked slots, done stored pid 0 and FREE
 *   and the next loan CASed FREE -> CLAIMED and stored the identity, each
 *   a write into the line the server was polling.  Measured with
 *   tests/bench_chseg 0.15 7 rt, side by side with the version before
 *   (medians of the ratio to the spin ping-pong): copy 0 B 0.33-0.36 ->
 *   0.39-0.40, zero-copy 0 B 0.34-0.37 -> 0.38-0.42, copy 64 B
 *   0.30-0.32 -> 0.30-0.35, zero-copy 64 B 0.29 -> 0.28-0.31 (the reply
 *   line B, apart from the control line, still costs a transfer of its
 *   own).  Parking with a CAS on the state word at the loan (the first
 *   try) measured no gain: the claim CAS was the line's transfer.
 * - A client spinning for its reply also prefetches the first line of
 *   the area its last reply came in (A or B) at every turn, so that a
 *   small reply's line travels while the server finishes its reply
 *   instead of after the client saw REPLIED.  Measured the same way
 *   (four pairs, parked slots on both sides), prefetching both areas
 *   then: copy 64 B 0.31-0.33 -> 0.34-0.36, zero-copy 64 B 0.28-0.31 ->
 *   0.30-0.32; 0 B rows unchanged.  Prefetching in the server's spin
 *   (the request's first line) and prefetching the reply once REPLIED
 *   was seen measured nothing; a software prefetch for write of B when
 *   the server takes a request made zero-copy 64 B slower (0.27-0.28,
 *   and 0.26 again with the client not prefetching B); a longer pause
 *   between polls (3 per turn, client, server or both) was
 *   inconsistent, from 0.27 to 0.41 on the same row.
 * - send and reply store a field of the slot's line only when its value
 *   changes (put), so that the line the other party polls takes fewer
 *   stores before the publishing CAS (each can cost a transfer while the
 *   poller takes the line back); and the client prefetches only the
 *   last reply's area, not both (the other line is then not pulled away
 *   from a server about to write it).  Together, against the version
 *   before, seven pairs of tests/bench_chseg 0.2 5 rt in the VM's normal
 *   regime: copy 0 B 0.33-0.36 -> 0.32-0.39 (median .35 -> .37); copy
 *   64 B 0.29-0.36 -> 0.28-0.34 and zero-copy 64 B 0.31-0.33 ->
 *   0.31-0.34 (no change beyond the noise).  Kept: they write less into
 *   shared lines, and cost nothing measurable.  A 64-byte round trip
 *   moves a second line each way; a bare ping-pong carrying 64 bytes
 *   runs at about 0.45 of the one-word flip here (bench_chseg's second
 *   floor), so the segment's 64 B round trips run at 0.7-0.8 of that.
 * - The hot server path is a scan of the state words of the slots below
 *   hiwater (one line each, cache hits unless they changed), reads of the
 *   request's line(s), and one CAS to reply.  A 0-byte round trip moves
 *   the slot's control line to the server and back, as a bare ping-pong
 *   moves its word.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "mp_chseg.h"
#include "mp_futex.h"
#include "mp_lock.h"
#include "mp_proc.h"
#include "mp_time.h"

#define ST_MASK	    MP_CHSEG_ST_MASK
#define ST_FREE	    MP_CHSEG_ST_FREE
#define ST_CLAIMED  MP_CHSEG_ST_CLAIMED
#define ST_REQ	    MP_CHSEG_ST_REQ
#define ST_REPLIED  MP_CHSEG_ST_REPLIED
#define ST_CANCELED MP_CHSEG_ST_CANCELED
#define ST_WAIT	    MP_CHSEG_ST_WAIT
#define GEN_MASK    0xffffffu

/* Client request phases (struct mp_chseg_req.phase).  PH_REUSED: a loan
 * of a slot we had parked, still REPLIED at generation gen - 1 (only the
 * publish writes the state word). */
enum { PH_NONE = 0, PH_LOANED, PH_SENT, PH_REPLY, PH_REUSED };

/* A park word while a client takes the slot out of its parked state:
 * never a state word (reserved bits set), so the slot is not parked. */
#define PARK_TAKEN 0xffffffffu

/* Server per-slot status (struct mp_chseg_held.status). */
enum { HS_NONE = 0, HS_HELD, HS_CANCELED, HS_GONE, HS_RESET };

#define DEF_NSLOTS	 16u
#define DEF_RING_MIN	 (256u * 1024u)
#define DEF_RING_RECORDS 1024u
#define DEF_NLANES	 8u
#define DEF_LANE_MIN	 (64u * 1024u)

/* bpop: records taken from one lane (or the ring) in a row before the
 * next queue gets its turn. */
#define LANE_RUN 64u

/* Lanes' owners are checked at most this often, unless a client asked
 * (lanes_wanted) or the check is forced. */
#define LANE_CHECK_NS 1000000000LL

/* A client without a lane tries to claim one again after this many
 * bsends through the ring (and only when the ring is empty). */
#define LANE_RETRY 256u

/* Clock reads in spin loops: one per this many turns. */
#define SPIN_BATCH 32

/* Server: the smallest spin budget it grows back from after a success. */
#define SRV_SPIN_FLOOR 1000

/* A client waiting for a free slot looks again this often: the freeing
 * store is not fenced (see mp_chseg_done), so a wake-up can be missed. */
#define FREE_POLL_NS 1000000

/* A server that cannot fence clients from afar before it sleeps
 * (mp_chseg_sleeper_fence) looks at the ring again this often. */
#define UNFENCED_SLICE_NS 1000000

/* mp_chseg_next checks the clock for periodic reaping this often. */
#define NEXT_REAP_EVERY 1024u

/* ---- small helpers ------------------------------------------------ */

static inline uint32_t ld(const uint32_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static inline uint32_t ld_acq(const uint32_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline void st(uint32_t *p, uint32_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELAXED);
}

/* Store v at *p (any width) unless *p holds it already: a line another
 * party polls is written only when something changed. */
#define put(p, v)                                                  \
	do {                                                       \
		__typeof__(*(p)) put_v_ = (v);                     \
		if (__atomic_load_n((p), __ATOMIC_RELAXED) != put_v_) \
			__atomic_store_n((p), put_v_, __ATOMIC_RELAXED); \
	} while (0)

static inline uint32_t word(uint32_t gen, uint32_t state)
{
	return (gen & GEN_MASK) << MP_CHSEG_GEN_SHIFT | state;
}

static inline uint32_t gen_of(uint32_t w)
{
	return w >> MP_CHSEG_GEN_SHIFT;
}

/* A state word that a correct party could have written. */
static inline int word_ok(uint32_t w)
{
	uint32_t s = w & ST_MASK;

	if (w & MP_CHSEG_ST_RSVD || s > ST_CANCELED)
		return 0;
	/* WAIT: the client sleeps on its request (REQ), or a client takes
	 * over a parked slot and has not written its pid yet (CLAIMED). */
	return !(w & ST_WAIT) || s == ST_REQ || s == ST_CLAIMED;
}

static inline struct mp_chseg_slot *slot_ctl(const mp_chseg_t *seg, uint32_t i)
{
	return (struct mp_chseg_slot *)(seg->slots + (size_t)i * seg->block);
}

static inline uint8_t *area_a(const mp_chseg_t *seg, uint32_t i)
{
	return seg->slots + (size_t)i * seg->block + 64;
}

static inline uint8_t *area_b(const mp_chseg_t *seg, uint32_t i)
{
	return area_a(seg, i) + seg->area;
}

static inline void *lane_mem(const mp_chseg_t *seg, uint32_t i)
{
	return seg->lanes + (size_t)i * seg->lane_stride;
}

/* The slot's park word, in the block's last line (its own client writes
 * it when it parks the slot; nobody polls it). */
static inline uint32_t *park_word(const mp_chseg_t *seg, uint32_t i)
{
	return (uint32_t *)(void *)(area_b(seg, i) + seg->area);
}

/* Is w (slot i's state word) a parked slot: REPLIED, and parked by its
 * client at exactly that word? */
static inline int parked(const mp_chseg_t *seg, uint32_t i, uint32_t w)
{
	return (w & (ST_MASK | ST_WAIT)) == ST_REPLIED &&
	       __atomic_load_n(park_word(seg, i), __ATOMIC_ACQUIRE) == w;
}

static inline uint32_t hiwater(const mp_chseg_t *seg)
{
	uint32_t n = ld(&seg->hdr->hiwater);

	/* Untrusted hint: clamp to the trusted slot count. */
	return n < seg->nslots ? n : seg->nslots;
}

/* 1 + the CPU we run on, 0 if unknown (glibc reads it from rseq or the
 * vDSO: a few nanoseconds, no system call). */
static inline uint32_t cpu_tag(void)
{
	int c = sched_getcpu();

	return c < 0 ? 0 : (uint32_t)c + 1;
}

/* This thread's cpu_tag() as of its last wait: what send advertises, so
 * that the publishing path makes no call at all.  A hint only. */
static __thread uint32_t tl_cpu;

/* May a waiter on CPU `me` expect a peer last seen on CPU `peer` to be
 * running?  Not if it is ours: we are the one running here. */
static inline int peer_elsewhere(uint32_t me, uint32_t peer)
{
	return !me || !peer || me != peer;
}

static inline int64_t min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

static int64_t slice_end(int64_t deadline_ns, int64_t slice_ns)
{
	int64_t now = mp_time_now_ns();

	if (deadline_ns == MP_TIME_FOREVER || deadline_ns - now > slice_ns)
		return now + slice_ns;
	return deadline_ns;
}

static int64_t env_ns(const char *name, int64_t def)
{
	const char *s = getenv(name);
	char *end;
	long long v;

	if (!s || !*s)
		return def;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || *end || v < 0 || v > 10000000000LL)
		return def;
	return v;
}

static void tunables_init(mp_chseg_t *seg)
{
	seg->spin_ns = env_ns("MESSIP_SPIN_NS", MP_CHSEG_SPIN_NS_DEFAULT);
	seg->yield_ns = env_ns("MESSIP_YIELD_NS", MP_CHSEG_YIELD_NS_DEFAULT);
	seg->reap_ns = MP_CHSEG_REAP_NS_DEFAULT;
	seg->live_ns = MP_CHSEG_LIVE_SLICE_MS * 1000000LL;
	seg->spin_cur = seg->spin_ns;
}

/* ---- process identity ---------------------------------------------- */

/* Field 22 of /proc/<pid>/stat (start time in clock ticks), 0 unknown. */
static uint64_t proc_start_time(pid_t pid)
{
	char buf[1024], *p = mp_proc_stat(pid, buf, sizeof(buf));
	unsigned long long v = 0;
	int field;

	if (!p)
		return 0;
	for (field = 2; *p && field < 22; p++)
		if (*p == ' ')
			field++;
	if (field != 22 || sscanf(p, "%llu", &v) != 1)
		return 0;
	return v;
}

static uint64_t own_pidns(void)
{
	struct stat st;

	return stat("/proc/self/ns/pid", &st) == 0 ? (uint64_t)st.st_ino : 0;
}

static int pidfd_open_(pid_t pid)
{
#ifdef SYS_pidfd_open
	return (int)syscall(SYS_pidfd_open, pid, 0);
#else
	(void)pid;
	errno = ENOSYS;
	return -1;
#endif
}

/* 1 alive, 0 gone, for a pid with an optional pidfd on it. */
static int pid_alive(pid_t pid, int pidfd)
{
	if (pid <= 0)
		return 0; /* never kill(0) or kill(-1): garbage is "gone" */
	if (pidfd >= 0) {
		struct pollfd p = {.fd = pidfd, .events = POLLIN};

		/* A pidfd polls readable once its process has exited. */
		if (poll(&p, 1, 0) == 1 && (p.revents & (POLLIN | POLLHUP)))
			return 0;
		return 1;
	}
	if (kill(pid, 0) < 0 && errno != EPERM)
		return 0;
	/* Without a pidfd (a kernel before 5.3, or valgrind, which lacks
	 * pidfd_open) kill() still finds a process that exited and was not
	 * reaped yet: a zombie is gone too. */
	return !mp_proc_zombie(pid);
}

/* pid_alive with a pidfd cached per watched thing (*fd_pid, *pidfd). */
static int pid_alive_cached(pid_t pid, pid_t *fd_pid, int *pidfd)
{
	if (pid <= 0)
		return 0;
	if (*fd_pid != pid) {
		if (*pidfd >= 0)
			close(*pidfd);
		*pidfd = pidfd_open_(pid);
		*fd_pid = pid;
		if (*pidfd < 0 && errno == ESRCH)
			return 0;
	}
	return pid_alive(pid, *pidfd);
}

/* ---- layout --------------------------------------------------------- */

struct layout {
	uint32_t area, block, lane_stride;
	uint64_t slots_off, lanes_off, ring_off, ring_size, total;
};

/* The geometry from the numbers the header keeps (nlanes 0: no lanes,
 * lane_bytes then ignored). */
static int layout_of(uint32_t nslots, uint32_t max_msg, uint32_t ring_bytes,
		     uint32_t nlanes, uint32_t lane_bytes, struct layout *L)
{
	size_t rs;

	if (nslots < 1 || nslots > MP_CHSEG_MAX_SLOTS || max_msg < 1 ||
	    max_msg > MP_CHSEG_MAX_MSG || nlanes > MP_CHSEG_MAX_LANES)
		return -EINVAL;
	if (ring_bytes < mp_ring_min_data_bytes(max_msg))
		return -EINVAL;
	rs = mp_ring_size(ring_bytes);
	if (!rs)
		return -EINVAL;
	L->lane_stride = 0;
	if (nlanes) {
		if (lane_bytes < mp_lane_min_data_bytes(max_msg) ||
		    !mp_lane_size(lane_bytes))
			return -EINVAL;
		L->lane_stride = (uint32_t)mp_lane_size(lane_bytes);
	}
	L->area = (max_msg + 63u) & ~63u;
	/* 128-byte blocks: the ctl line and the first line of area A share
	 * an aligned pair, which adjacent-line prefetchers fetch together.
	 * The last line holds the park word (the same size as before it:
	 * 2 * area is a multiple of 128, so that line was padding). */
	L->block = (64u + 2u * L->area + 64u + 127u) & ~127u;
	L->slots_off = (MP_SHM_HDR_SIZE + sizeof(struct mp_chseg_hdr) + 127u) &
		       ~(uint64_t)127u;
	L->lanes_off = L->slots_off + (uint64_t)nslots * L->block;
	L->ring_off = L->lanes_off + (uint64_t)nlanes * L->lane_stride;
	L->ring_size = rs;
	L->total = L->ring_off + rs;
	return 0;
}

static void cfg_defaults(const struct mp_chseg_cfg *in, struct mp_chseg_cfg *c)
{
	if (in)
		*c = *in;
	else
		memset(c, 0, sizeof(*c));
	if (!c->nslots)
		c->nslots = DEF_NSLOTS;
	if (!c->max_msg)
		c->max_msg = MP_CHSEG_MAX_MSG;
	if (!c->ring_bytes) {
		uint32_t d = mp_ring_min_data_bytes(c->max_msg);

		while (d && d < DEF_RING_MIN)
			d <<= 1;
		c->ring_bytes = d;
	}
	if (!c->ring_records)
		c->ring_records = DEF_RING_RECORDS;
	if (!c->nlanes)
		c->nlanes = DEF_NLANES;
	else if (c->nlanes == MP_CHSEG_NO_LANES)
		c->nlanes = 0;
	if (!c->lane_bytes && c->nlanes) {
		uint32_t d = mp_lane_min_data_bytes(c->max_msg);

		while (d && d < DEF_LANE_MIN)
			d <<= 1;
		c->lane_bytes = d;
	}
	if (!c->mode)
		c->mode = 0600;
}

size_t mp_chseg_size(const struct mp_chseg_cfg *cfg)
{
	struct mp_chseg_cfg c;
	struct layout L;

	cfg_defaults(cfg, &c);
	if (layout_of(c.nslots, c.max_msg, c.ring_bytes, c.nlanes,
		      c.lane_bytes, &L))
		return 0;
	return (size_t)L.total;
}

static void handle_init(mp_chseg_t *seg)
{
	memset(seg, 0, sizeof(*seg));
	seg->srv_pidfd = -1;
	seg->lane_idx = -1;
	pthread_mutex_init(&seg->bmx, NULL);
	for (int i = 0; i < MP_CHSEG_MAX_SLOTS; i++)
		seg->held[i].pidfd = -1;
	for (int i = 0; i < MP_CHSEG_MAX_LANES; i++)
		seg->lanest[i].pidfd = -1;
	tunables_init(seg);
}

static void handle_geometry(mp_chseg_t *seg, uint32_t nslots, uint32_t max_msg,
			    uint32_t nlanes, uint32_t lane_bytes,
			    uint32_t records, const struct layout *L)
{
	uint8_t *base = seg->shm.base;

	seg->lanes = base + L->lanes_off;
	seg->nlanes = nlanes;
	seg->lane_stride = L->lane_stride;
	seg->lane_geo.data_bytes = lane_bytes;
	seg->lane_geo.max_records = records;
	seg->lane_geo.max_payload = max_msg;
	seg->lane_cur = nlanes;

	seg->hdr = (struct mp_chseg_hdr *)(base + MP_SHM_HDR_SIZE);
	seg->slots = base + L->slots_off;
	seg->nslots = nslots;
	seg->max_msg = max_msg;
	seg->area = L->area;
	seg->block = L->block;
}

/* ---- create / open / close ----------------------------------------- */

int mp_chseg_create(mp_chseg_t *seg, const char *name,
		    const struct mp_chseg_cfg *cfg)
{
	struct mp_chseg_cfg c;
	struct mp_chseg_hdr *h;
	struct layout L;
	int rc;

	handle_init(seg);
	cfg_defaults(cfg, &c);
	rc = layout_of(c.nslots, c.max_msg, c.ring_bytes, c.nlanes,
		       c.lane_bytes, &L);
	if (rc)
		return rc;
	if (c.ring_records < 1 || c.ring_records > INT_MAX)
		return -EINVAL;
	rc = mp_shm_create(&seg->shm, name, MP_CHSEG_MAGIC, MP_CHSEG_VERSION,
			   (size_t)L.total, c.mode,
			   c.gid_set ? c.gid : (gid_t)-1);
	if (rc)
		return rc;
	handle_geometry(seg, c.nslots, c.max_msg, c.nlanes, c.lane_bytes,
			c.ring_records, &L);
	h = seg->hdr;
	/* The object is fresh and zero-filled: every slot is FREE, gen 0. */
	h->nslots = c.nslots;
	h->max_msg = c.max_msg;
	h->area = L.area;
	h->block = L.block;
	h->slots_off = L.slots_off;
	h->ring_off = L.ring_off;
	h->ring_size = L.ring_size;
	h->ring_bytes = c.ring_bytes;
	h->ring_records = c.ring_records;
	h->nlanes = c.nlanes;
	h->lane_bytes = c.lane_bytes;
	h->lanes_off = L.lanes_off;
	h->srv_pid = (uint32_t)getpid();
	h->srv_uid = (uint32_t)geteuid();
	h->srv_start = proc_start_time(0);
	h->srv_pidns = own_pidns();
	/* Promise to fence clients from afar before sleeping only if the
	 * fence works here (mp_chseg_server_wait); then clients publish
	 * ring records with plain stores (mp_chseg_open).  The per-process
	 * decision mp_fence_register keeps says so without a fence (IPIs)
	 * at every create. */
	h->fence = (uint32_t)mp_fence_register();
	h->alive = 1;
	rc = mp_ring_init(&seg->ring, (uint8_t *)seg->shm.base + L.ring_off,
			  (size_t)L.ring_size, c.ring_bytes, c.ring_records,
			  c.max_msg);
	if (rc)
		goto fail;
	/* The consumer's side of every lane: commits are plain stores
	 * where producers about to sleep can fence us (h->fence). */
	for (uint32_t i = 0; i < c.nlanes; i++)
		(void)mp_lane_attach(&seg->cons[i], lane_mem(seg, i),
				     &seg->lane_geo, (int)h->fence);
	rc = mp_lock_init(&h->alive_lock);
	if (rc)
		goto fail;
	rc = mp_lock_acquire(&h->alive_lock, MP_TIME_FOREVER);
	if (rc < 0) {
		mp_lock_destroy(&h->alive_lock);
		goto fail;
	}
	seg->creator = pthread_self();
	seg->server = 1;
	seg->pid = getpid();
	seg->uid = geteuid();
	seg->gid = getegid();
	seg->last_reap_ns = mp_time_now_ns();
	/* Release (inside mp_shm_publish): every field above, the ring and
	 * the held lock are visible to an opener that sees the segment
	 * ready. */
	mp_shm_publish(&seg->shm);
	return 0;

fail:
	mp_shm_close(&seg->shm);
	handle_init(seg);
	return rc;
}

int mp_chseg_open(mp_chseg_t *seg, const char *name)
{
	struct mp_chseg_hdr *h;
	struct layout L;
	uint32_t nslots, max_msg, ring_bytes, nlanes, lane_bytes, records;
	uint64_t ns, start;
	pid_t spid;
	int rc;

	handle_init(seg);
	rc = mp_shm_open(&seg->shm, name, MP_CHSEG_MAGIC, MP_CHSEG_VERSION, 0);
	if (rc)
		return rc;
	rc = -EBADMSG;
	if (seg->shm.size < MP_SHM_HDR_SIZE + sizeof(struct mp_chseg_hdr))
		goto fail;
	h = (struct mp_chseg_hdr *)((uint8_t *)seg->shm.base + MP_SHM_HDR_SIZE);
	/* Recompute the geometry from three numbers and insist that the
	 * header and the object's real size agree with it. */
	nslots = ld(&h->nslots);
	max_msg = ld(&h->max_msg);
	ring_bytes = ld(&h->ring_bytes);
	nlanes = ld(&h->nlanes);
	lane_bytes = ld(&h->lane_bytes);
	records = ld(&h->ring_records);
	if (layout_of(nslots, max_msg, ring_bytes, nlanes, lane_bytes, &L))
		goto fail;
	if (ld(&h->area) != L.area || ld(&h->block) != L.block ||
	    __atomic_load_n(&h->slots_off, __ATOMIC_RELAXED) != L.slots_off ||
	    __atomic_load_n(&h->ring_off, __ATOMIC_RELAXED) != L.ring_off ||
	    __atomic_load_n(&h->lanes_off, __ATOMIC_RELAXED) != L.lanes_off ||
	    __atomic_load_n(&h->ring_size, __ATOMIC_RELAXED) != L.ring_size ||
	    L.total != (uint64_t)seg->shm.size)
		goto fail;
	handle_geometry(seg, nslots, max_msg, nlanes, lane_bytes, records, &L);
	if (nlanes && mp_lane_geo_ok(&seg->lane_geo))
		goto fail;
	rc = mp_ring_attach(&seg->ring, (uint8_t *)seg->shm.base + L.ring_off,
			    (size_t)L.ring_size);
	if (rc)
		goto fail;
	/* Plain ring publications only if the server fences us before it
	 * sleeps (the doorbell's Dekker, mp_chseg.h); a scribbled flag
	 * costs at most a late wake-up, bounded by the server's slices. */
	if (ld(&h->fence) != 1)
		seg->ring.plain_publish = 0;

	ns = __atomic_load_n(&h->srv_pidns, __ATOMIC_RELAXED);
	if (ns && own_pidns() && ns != own_pidns()) {
		rc = -EXDEV;
		goto fail;
	}
	spid = (pid_t)ld(&h->srv_pid);
	seg->srv_pid = spid;
	rc = -ESRCH;
	if (spid <= 0 || !ld(&h->alive))
		goto fail;
	seg->srv_pidfd = pidfd_open_(spid);
	/* The pidfd (or, without one, every later kill(pid, 0)) is only
	 * meaningful if spid is still the server and not a recycled pid:
	 * compare the start time the server recorded. */
	start = __atomic_load_n(&h->srv_start, __ATOMIC_RELAXED);
	if (start) {
		uint64_t now_start = proc_start_time(spid);

		/* 0: cannot tell (no /proc, hidepid): the pid check below
		 * decides alone. */
		if (now_start && now_start != start)
			goto fail;
	}
	if (!mp_chseg_server_alive(seg))
		goto fail;
	seg->pid = getpid();
	seg->uid = geteuid();
	seg->gid = getegid();
	return 0;

fail:
	if (seg->srv_pidfd >= 0)
		close(seg->srv_pidfd);
	mp_shm_close(&seg->shm);
	handle_init(seg);
	return rc;
}

static void wake_word(uint32_t *w)
{
	mp_futex_wake(w, INT32_MAX);
}

static void unpark_own(mp_chseg_t *seg);

void mp_chseg_close(mp_chseg_t *seg)
{
	struct mp_chseg_hdr *h = seg->hdr;

	if (!seg->shm.base) {
		handle_init(seg);
		return;
	}
	if (seg->server) {
		/* Seq_cst: a client that loads alive after waking (or after
		 * any slice) sees 0.  Then wake every sleeper. */
		__atomic_store_n(&h->alive, 0, __ATOMIC_SEQ_CST);
		for (uint32_t i = 0; i < seg->nslots; i++)
			wake_word(&slot_ctl(seg, i)->state);
		__atomic_add_fetch(&h->free_seq, 1, __ATOMIC_SEQ_CST);
		wake_word(&h->free_seq);
		__atomic_add_fetch(&h->bell, 1, __ATOMIC_SEQ_CST);
		wake_word(&h->bell);
		for (int i = 0; i < MP_CHSEG_MAX_SLOTS; i++)
			if (seg->held[i].pidfd >= 0)
				close(seg->held[i].pidfd);
		for (int i = 0; i < MP_CHSEG_MAX_LANES; i++)
			if (seg->lanest[i].pidfd >= 0)
				close(seg->lanest[i].pidfd);
		if (pthread_equal(seg->creator, pthread_self())) {
			mp_lock_release(&h->alive_lock);
			mp_shm_close(&seg->shm);
		} else {
			/* The lock stays linked in the creator thread's
			 * robust list: unmapping it would leave glibc a
			 * dangling pointer.  Unlink the name only. */
			mp_shm_unlink(seg->shm.name);
		}
	} else {
		unpark_own(seg);
		/* Our lane goes back; the server drains it, then frees it. */
		if (seg->lane_idx >= 0)
			mp_lane_release(&seg->lane);
		if (seg->srv_pidfd >= 0)
			close(seg->srv_pidfd);
		mp_shm_close(&seg->shm);
		pthread_mutex_destroy(&seg->bmx);
	}
	handle_init(seg);
}

/* ---- liveness --------------------------------------------------------- */

int mp_chseg_server_alive(mp_chseg_t *seg)
{
	struct mp_chseg_hdr *h = seg->hdr;
	int rc;

	if (!__atomic_load_n(&h->alive, __ATOMIC_SEQ_CST))
		return 0;
	if (seg->server)
		return 1;
	/* The alive lock: held (EBUSY) means the creating thread lives, so
	 * the server does -- no system call.  Otherwise we got it (the
	 * holder thread died, EOWNERDEAD, or released it): give it back
	 * at once and ask about the process itself, which may well live on
	 * without its creating thread. */
	rc = pthread_mutex_trylock(&h->alive_lock.mtx);
	if (rc == EBUSY || rc == EDEADLK)
		return 1;
	if (rc == EOWNERDEAD)
		pthread_mutex_consistent(&h->alive_lock.mtx);
	if (rc == 0 || rc == EOWNERDEAD)
		pthread_mutex_unlock(&h->alive_lock.mtx);
	return pid_alive(seg->srv_pid, seg->srv_pidfd);
}

/* Client: is waiting still worth it?  0 or -ESRCH. */
static int server_check(mp_chseg_t *seg)
{
	return mp_chseg_server_alive(seg) ? 0 : -ESRCH;
}

/* ---- doorbell ----------------------------------------------------------- */

static void ring_bell(struct mp_chseg_hdr *h)
{
	/* The bump changes the futex word, so a server between reading it
	 * and sleeping does not sleep; the wake covers one that already
	 * sleeps. */
	__atomic_add_fetch(&h->bell, 1, __ATOMIC_SEQ_CST);
	wake_word(&h->bell);
}

void mp_chseg_kick(mp_chseg_t *seg)
{
	struct mp_chseg_hdr *h = seg->hdr;

	/* Seq_cst bump, then seq_cst load of srv_waiters: pairs with the
	 * server's increment of srv_waiters before it re-reads bell. */
	__atomic_add_fetch(&h->bell, 1, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&h->srv_waiters, __ATOMIC_SEQ_CST))
		wake_word(&h->bell);
}

/* A slot became FREE: wake clients waiting for one, if any.  Dekker with
 * mp_chseg_loan: the caller freed the slot with a seq_cst operation, which
 * is ordered before this seq_cst load of free_waiters. */
static void free_notify(struct mp_chseg_hdr *h)
{
	if (__atomic_load_n(&h->free_waiters, __ATOMIC_SEQ_CST)) {
		__atomic_add_fetch(&h->free_seq, 1, __ATOMIC_SEQ_CST);
		wake_word(&h->free_seq);
	}
}

/* ---- client side ------------------------------------------------------ */

void mp_chseg_set_identity(mp_chseg_t *seg, uint32_t sender, const char *id)
{
	seg->sender = sender;
	memset(seg->id, 0, sizeof(seg->id));
	if (id)
		strncpy(seg->id, id, sizeof(seg->id) - 1);
}

/* Write our identity into slot s (ours, CLAIMED), each field only where
 * it differs from what the slot holds: a slot we parked holds it all
 * already, and a store into the slot's line is a store the server's scan
 * may have to fetch back.  The pid first: until it is stored a FREE
 * slot's claimer shows pid 0, which the reaper never blames. */
static void identity_put(mp_chseg_t *seg, struct mp_chseg_slot *s)
{
	put(&s->pid, (uint32_t)seg->pid);
	put(&s->uid, (uint32_t)seg->uid);
	put(&s->gid, (uint32_t)seg->gid);
	put(&s->sender, seg->sender);
	if (memcmp(s->id, seg->id, sizeof(s->id)))
		memcpy(s->id, seg->id, sizeof(s->id));
}

/* Fill r for a loan of slot i, the request to be generation gen. */
static void loaned(mp_chseg_t *seg, uint32_t i, uint32_t gen, int phase,
		   struct mp_chseg_req *r)
{
	__atomic_store_n(&seg->hint, i, __ATOMIC_RELAXED);
	r->slot = i;
	r->gen = gen & GEN_MASK;
	r->buf = area_a(seg, i);
	r->cap = seg->max_msg;
	r->answer = 0;
	r->rlen = 0;
	r->rdata = NULL;
	r->phase = phase;
}

/*
 * Claim slot i if it is FREE or parked by this process (a slot its
 * client left REPLIED after mp_chseg_done, see mp_chseg.h), or, with
 * steal, parked by another client.  Whoever takes a parked slot first
 * wins the park word (CAS from the parked word to PARK_TAKEN): that
 * word is the one place where the owner, a client taking it over and a
 * closing owner meet.  The owner then leaves the state word alone until
 * it publishes (no store into the line the server scans); a take-over
 * moves it to CLAIMED|WAIT until our pid is in (the slot names the
 * previous owner until then, and the reaper never blames that word).
 */
static int try_claim(mp_chseg_t *seg, uint32_t i, struct mp_chseg_req *r,
		     int steal)
{
	struct mp_chseg_slot *s = slot_ctl(seg, i);
	struct mp_chseg_hdr *h = seg->hdr;
	uint32_t w = ld(&s->state), nw, hw, pw;

	if ((w & ~(GEN_MASK << MP_CHSEG_GEN_SHIFT)) == ST_FREE) {
		nw = word(gen_of(w) + 1, ST_CLAIMED);
	} else if (parked(seg, i, w)) {
		int own = ld(&s->pid) == (uint32_t)seg->pid;

		if (!own && !steal)
			return 0;
		/* Acquire: the owner's reads of its last reply happen
		 * before our writes (it released the park word). */
		pw = w;
		if (!__atomic_compare_exchange_n(park_word(seg, i), &pw,
						 PARK_TAKEN, 0,
						 __ATOMIC_ACQUIRE,
						 __ATOMIC_RELAXED))
			return 0;
		if (own) {
			/* Ours, unless the server reset it meanwhile. */
			if (ld_acq(&s->state) != w)
				return 0;
			identity_put(seg, s);
			loaned(seg, i, gen_of(w) + 1, PH_REUSED, r);
			return 1;
		}
		nw = word(gen_of(w) + 1, ST_CLAIMED) | ST_WAIT;
	} else {
		return 0;
	}
	/* Acquire: the slot is ours from here; it orders our writes after
	 * the claim. */
	if (!__atomic_compare_exchange_n(&s->state, &w, nw, 0, __ATOMIC_ACQUIRE,
					 __ATOMIC_RELAXED))
		return 0;
	/* Make the slot visible to the server's scans before it can hold a
	 * request (seq_cst, ordered before the publishing CAS). */
	hw = ld(&h->hiwater);
	while (hw < i + 1 &&
	       !__atomic_compare_exchange_n(&h->hiwater, &hw, i + 1, 0,
					    __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
		;
	identity_put(seg, s);
	if (nw & ST_WAIT) {
		/* Our pid is in: the reaper may judge the slot by it now.
		 * Release: the pid store is visible with the word.  Fails
		 * only if the slot was reset meanwhile: not ours then. */
		w = nw;
		if (!__atomic_compare_exchange_n(&s->state, &w, nw & ~ST_WAIT,
						 0, __ATOMIC_RELEASE,
						 __ATOMIC_RELAXED))
			return 0;
	}
	loaned(seg, i, gen_of(nw), PH_LOANED, r);
	return 1;
}

static int claim_any(mp_chseg_t *seg, struct mp_chseg_req *r)
{
	uint32_t hint = __atomic_load_n(&seg->hint, __ATOMIC_RELAXED);

	/* The one used last: usually parked by us, re-used as it is. */
	if (hint < seg->nslots && try_claim(seg, hint, r, 0))
		return 1;
	/* Lowest first: keeps hiwater, hence the server's scan, short. */
	for (uint32_t i = 0; i < seg->nslots; i++)
		if (i != hint && try_claim(seg, i, r, 0))
			return 1;
	/* None free: take over a slot another client parked. */
	for (uint32_t i = 0; i < seg->nslots; i++)
		if (try_claim(seg, i, r, 1))
			return 1;
	return 0;
}

int mp_chseg_loan(mp_chseg_t *seg, struct mp_chseg_req *r, int64_t deadline_ns)
{
	struct mp_chseg_hdr *h = seg->hdr;
	int64_t end, now, check_at = 0;
	uint32_t v;
	int rc, rang = 0;

	r->phase = PH_NONE;
	for (;;) {
		if (!__atomic_load_n(&h->alive, __ATOMIC_RELAXED))
			return -ESRCH;
		if (claim_any(seg, r))
			return 0;
		now = mp_time_now_ns();
		if (deadline_ns != MP_TIME_FOREVER && now >= deadline_ns)
			return -ETIMEDOUT;
		if (!check_at) {
			check_at = now + seg->live_ns;
		} else if (now >= check_at) {
			check_at = now + seg->live_ns;
			rc = server_check(seg);
			if (rc)
				return rc;
		}
		/* Count ourselves, look again, then sleep on the value read
		 * before looking.  A slot the server reclaims wakes us for
		 * sure (Dekker with free_notify); one a client frees may not
		 * (mp_chseg_done), hence the short slices. */
		v = __atomic_load_n(&h->free_seq, __ATOMIC_SEQ_CST);
		__atomic_add_fetch(&h->free_waiters, 1, __ATOMIC_SEQ_CST);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (claim_any(seg, r)) {
			__atomic_sub_fetch(&h->free_waiters, 1,
					   __ATOMIC_SEQ_CST);
			return 0;
		}
		/* Every slot taken: wake the server once, so that it looks
		 * for dead clients' slots even if it slept with nothing to
		 * watch. */
		if (!rang++)
			mp_chseg_kick(seg);
		end = slice_end(deadline_ns, FREE_POLL_NS);
		mp_futex_wait(&h->free_seq, v, end);
		__atomic_sub_fetch(&h->free_waiters, 1, __ATOMIC_SEQ_CST);
	}
}

int mp_chseg_send(mp_chseg_t *seg, struct mp_chseg_req *r, int32_t type,
		  uint64_t reqid, uint32_t len)
{
	struct mp_chseg_slot *s;
	uint32_t w;

	if ((r->phase != PH_LOANED && r->phase != PH_REUSED) ||
	    r->slot >= seg->nslots)
		return -EINVAL;
	if (len > seg->max_msg)
		return -EMSGSIZE;
	s = slot_ctl(seg, r->slot);
	put(&s->type, type);
	put(&s->len, len);
	put(&s->reqid, reqid);
	put(&s->cpu, (uint16_t)tl_cpu);
	/* Publish.  Release: the request bytes and fields above are
	 * visible to a server that takes REQ with acquire.  Seq_cst: the
	 * store is ordered before the srv_waiters load below (Dekker with
	 * the server's increment before its last scan).  A CAS rather
	 * than a store: if the slot was reset under us, we must not
	 * publish into someone else's slot. */
	w = r->phase == PH_REUSED ? word(r->gen - 1, ST_REPLIED)
				  : word(r->gen, ST_CLAIMED);
	if (!__atomic_compare_exchange_n(&s->state, &w, word(r->gen, ST_REQ), 0,
					 __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
		r->phase = PH_NONE;
		return -EBADMSG;
	}
	r->phase = PH_SENT;
	if (__atomic_load_n(&seg->hdr->srv_waiters, __ATOMIC_SEQ_CST))
		ring_bell(seg->hdr);
	return 0;
}

/*
 * Look at a sent request's state word.  Returns 1 (reply in: r filled),
 * 0 (still pending), -EBADMSG (slot corrupt or reset: r released).
 */
static int req_check(mp_chseg_t *seg, struct mp_chseg_req *r, uint32_t w)
{
	struct mp_chseg_slot *s = slot_ctl(seg, r->slot);
	uint32_t st_ = w & ST_MASK, rlen, rarea;

	if (gen_of(w) != r->gen || !word_ok(w)) {
		/* Reset (or scribbled) under us: not ours any more. */
		r->phase = PH_NONE;
		return -EBADMSG;
	}
	if (st_ == ST_REQ)
		return 0;
	if (st_ != ST_REPLIED) {
		r->phase = PH_NONE;
		return -EBADMSG;
	}
	/* The acquire load of w (the caller's) made these visible. */
	rlen = ld(&s->rlen);
	rarea = __atomic_load_n(&s->rarea, __ATOMIC_RELAXED);
	if (rlen > seg->max_msg || rarea > 1) {
		r->phase = PH_REPLY;
		mp_chseg_done(seg, r);
		return -EBADMSG;
	}
	r->answer = (int32_t)ld((uint32_t *)&s->answer);
	r->rlen = rlen;
	r->rdata = rarea ? area_b(seg, r->slot) : area_a(seg, r->slot);
	r->phase = PH_REPLY;
	put(&seg->rarea_last, rarea);
	return 1;
}

int mp_chseg_wait(mp_chseg_t *seg, struct mp_chseg_req *r, int64_t deadline_ns)
{
	struct mp_chseg_hdr *h = seg->hdr;
	struct mp_chseg_slot *s;
	const uint8_t *rp;
	int64_t t0, now, end;
	uint32_t w;
	int rc;

	if (r->phase == PH_REPLY)
		return 0;
	if (r->phase != PH_SENT || r->slot >= seg->nslots)
		return -EINVAL;
	s = slot_ctl(seg, r->slot);
	/* The area the last reply came in: most servers reply the same way
	 * every time (from their buffer into A, or from a loaned B). */
	rp = __atomic_load_n(&seg->rarea_last, __ATOMIC_RELAXED)
		     ? area_b(seg, r->slot)
		     : area_a(seg, r->slot);

	/* Spin, only while the server is awake: spinning for a sleeping
	 * server burns the core it needs to wake up on. */
	w = ld_acq(&s->state);
	rc = req_check(seg, r, w);
	if (rc)
		return rc < 0 ? rc : 0;
	t0 = 0;
	tl_cpu = cpu_tag(); /* off the critical path: the reply is not
			       due for a while yet */
	while (seg->spin_ns > 0 && !ld(&h->srv_waiters) &&
	       peer_elsewhere(tl_cpu, ld(&h->srv_cpu))) {
		for (int j = 0; j < SPIN_BATCH; j++) {
			w = ld_acq(&s->state);
			if ((w & ST_MASK) != ST_REQ)
				goto check;
			/* The reply's first line, in A or B: fetched while
			 * we wait (again after each server write takes it),
			 * so it comes in beside the state word's line rather
			 * than after it.  A hint: no fault, no order. */
			__builtin_prefetch(rp);
			mp_cpu_relax();
		}
		now = mp_time_now_ns();
		if (now >= deadline_ns)
			break;
		if (!t0)
			t0 = now;
		else if (now - t0 >= seg->spin_ns)
			break;
	}
	/* Yield: cheap when the machine is idle, gives the core away at
	 * once when it is not. */
	if (seg->yield_ns > 0) {
		now = t0 = mp_time_now_ns();
		while (now - t0 < seg->yield_ns && now < deadline_ns) {
			sched_yield();
			w = ld_acq(&s->state);
			if ((w & ST_MASK) != ST_REQ)
				goto check;
			now = mp_time_now_ns();
		}
	}
	/* Sleep on the state word, with WAIT set so the server wakes us. */
	for (;;) {
		w = ld_acq(&s->state);
		rc = req_check(seg, r, w);
		if (rc)
			return rc < 0 ? rc : 0;
		if (!__atomic_load_n(&h->alive, __ATOMIC_RELAXED)) {
			r->phase = PH_NONE;
			return -ESRCH;
		}
		if (deadline_ns != MP_TIME_FOREVER &&
		    mp_time_now_ns() >= deadline_ns)
			return -ETIMEDOUT;
		if (!(w & ST_WAIT)) {
			/* The CAS fails if the server replied meanwhile;
			 * then look again.  No ordering needed: the server's
			 * reply CAS reads the word with WAIT or not. */
			if (!__atomic_compare_exchange_n(
				    &s->state, &w, w | ST_WAIT, 0,
				    __ATOMIC_RELAXED, __ATOMIC_RELAXED))
				continue;
			w |= ST_WAIT;
		}
		end = slice_end(deadline_ns, seg->live_ns);
		rc = mp_futex_wait(&s->state, w, end);
		if (rc == -ETIMEDOUT && end != deadline_ns &&
		    server_check(seg)) {
			w = ld_acq(&s->state);
			rc = req_check(seg, r, w);
			if (rc)
				return rc < 0 ? rc : 0;
			r->phase = PH_NONE;
			return -ESRCH;
		}
	}
check:
	rc = req_check(seg, r, w);
	return rc < 0 ? rc : 0;
}

int mp_chseg_cancel(mp_chseg_t *seg, struct mp_chseg_req *r)
{
	struct mp_chseg_slot *s;
	uint32_t w;
	int rc;

	if (r->phase == PH_LOANED || r->phase == PH_REUSED) {
		mp_chseg_done(seg, r);
		return 0;
	}
	if (r->phase == PH_REPLY)
		return 1;
	if (r->phase != PH_SENT || r->slot >= seg->nslots)
		return -EINVAL;
	s = slot_ctl(seg, r->slot);
	for (;;) {
		w = ld_acq(&s->state);
		rc = req_check(seg, r, w);
		if (rc)
			return rc; /* 1: the reply won; or -EBADMSG */
		/* Seq_cst: ordered before the srv_waiters load (Dekker),
		 * so a sleeping server is woken to reclaim the slot. */
		if (__atomic_compare_exchange_n(
			    &s->state, &w, word(r->gen, ST_CANCELED), 0,
			    __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
			break;
	}
	r->phase = PH_NONE;
	if (__atomic_load_n(&seg->hdr->srv_waiters, __ATOMIC_SEQ_CST))
		ring_bell(seg->hdr);
	return 0;
}

void mp_chseg_done(mp_chseg_t *seg, struct mp_chseg_req *r)
{
	struct mp_chseg_hdr *h = seg->hdr;
	struct mp_chseg_slot *s;

	if (r->slot >= seg->nslots ||
	    (r->phase != PH_REPLY && r->phase != PH_LOANED &&
	     r->phase != PH_REUSED)) {
		r->phase = PH_NONE;
		return;
	}
	s = slot_ctl(seg, r->slot);
	if (r->phase == PH_REUSED) {
		/* A re-used loan never sent: the slot is still REPLIED at
		 * the generation before; park it again. */
		r->phase = PH_REPLY;
		r->gen = (r->gen - 1) & GEN_MASK;
	}
	if (r->phase == PH_REPLY) {
		/* Park: the slot stays REPLIED, ours, with our identity in
		 * it, and the next loan re-uses it with one CAS; no store
		 * into its line, which the server's scan reads.  The park
		 * word (the block's last line, ours) says that the view has
		 * ended, so another client or the reaper may take the slot
		 * over from exactly this word.  Release: our reads of the
		 * reply happen before anyone who acquires the park word
		 * overwrites the slot. */
		r->phase = PH_NONE;
		r->rdata = NULL;
		__atomic_store_n(park_word(seg, r->slot),
				 word(r->gen, ST_REPLIED), __ATOMIC_RELEASE);
		/* A client waiting for a slot may take this one over: the
		 * same unfenced wake-up as for a FREE slot below. */
		if (__atomic_load_n(&h->free_waiters, __ATOMIC_RELAXED)) {
			__atomic_add_fetch(&h->free_seq, 1, __ATOMIC_SEQ_CST);
			wake_word(&h->free_seq);
		}
		return;
	}
	r->phase = PH_NONE;
	r->rdata = NULL;
	/* A loan never sent.  pid 0 first: a FREE slot names nobody, so a reaper never blames
	 * the next claimer, between its claim and its pid store, for us.
	 * Between this store and the next, our REPLIED or CLAIMED slot
	 * names nobody either, which the reaper leaves alone as well. */
	st(&s->pid, 0);
	/* Release: our reads of the reply happen before anyone can claim
	 * and overwrite the slot.  A plain store, and no barrier before the
	 * free_waiters load: this is on every round trip's critical path,
	 * where a locked instruction measurably costs (~10% at 0-64 B).
	 * A client waiting for a free slot may therefore miss this wake-up;
	 * it looks again every FREE_POLL_NS (see mp_chseg_loan), which only
	 * matters when every slot is taken.  We own the slot in REPLIED and
	 * CLAIMED: no correct party writes it meanwhile. */
	__atomic_store_n(&s->state, word(r->gen, ST_FREE), __ATOMIC_RELEASE);
	if (__atomic_load_n(&h->free_waiters, __ATOMIC_RELAXED)) {
		__atomic_add_fetch(&h->free_seq, 1, __ATOMIC_SEQ_CST);
		wake_word(&h->free_seq);
	}
}

/* Client closing: free the slots this process parked, so that they are
 * FREE again (pid 0) rather than left for a take-over or the reaper.
 * Each is taken back from its exact parked word first (one CAS: another
 * client or the reaper may be taking it over), as a claim would. */
static void unpark_own(mp_chseg_t *seg)
{
	for (uint32_t i = 0; i < seg->nslots; i++) {
		struct mp_chseg_slot *s = slot_ctl(seg, i);
		uint32_t w = ld_acq(&s->state), nw;

		uint32_t pw = w;

		if (!parked(seg, i, w) || ld(&s->pid) != (uint32_t)seg->pid)
			continue;
		if (!__atomic_compare_exchange_n(park_word(seg, i), &pw,
						 PARK_TAKEN, 0,
						 __ATOMIC_ACQUIRE,
						 __ATOMIC_RELAXED))
			continue;
		nw = word(gen_of(w) + 1, ST_CLAIMED);
		if (!__atomic_compare_exchange_n(&s->state, &w, nw, 0,
						 __ATOMIC_ACQUIRE,
						 __ATOMIC_RELAXED))
			continue;
		st(&s->pid, 0);
		/* Seq_cst: ordered before free_notify's load (Dekker with a
		 * client waiting in mp_chseg_loan). */
		__atomic_store_n(&s->state, word(gen_of(nw), ST_FREE),
				 __ATOMIC_SEQ_CST);
		free_notify(seg->hdr);
	}
}

int mp_chseg_call(mp_chseg_t *seg, int32_t type, const void *req, uint32_t len,
		  int32_t *answer, void *rbuf, uint32_t rmax,
		  int64_t deadline_ns)
{
	struct mp_chseg_req r;
	uint32_t n;
	int rc;

	if (len > seg->max_msg)
		return -EMSGSIZE;
	rc = mp_chseg_loan(seg, &r, deadline_ns);
	if (rc)
		return rc;
	if (len)
		memcpy(r.buf, req, len);
	rc = mp_chseg_send(seg, &r, type, 0, len);
	if (rc)
		return rc;
	rc = mp_chseg_wait(seg, &r, deadline_ns);
	if (rc == -ETIMEDOUT) {
		rc = mp_chseg_cancel(seg, &r);
		if (rc == 0)
			return -ETIMEDOUT;
		if (rc < 0)
			return rc;
		rc = 0; /* the reply won the race: deliver it */
	}
	if (rc)
		return rc;
	if (answer)
		*answer = r.answer;
	n = r.rlen < rmax ? r.rlen : rmax;
	if (n)
		memcpy(rbuf, r.rdata, n);
	rc = (int)r.rlen;
	mp_chseg_done(seg, &r);
	return rc;
}

/* Doorbell after a buffered message: Dekker with the server's increment
 * of srv_waiters before it looks at the ring and lanes.  The record was
 * published by a seq_cst store, ordered before this seq_cst load, or by a
 * plain release store that the server fences from afar
 * (mp_chseg_sleeper_fence) after raising srv_waiters. */
static void bell_after_push(struct mp_chseg_hdr *h)
{
	if (__atomic_load_n(&h->srv_waiters, __ATOMIC_SEQ_CST))
		ring_bell(h);
}

/* Through the ring: wait up to deadline_ns for room, in slices that check
 * the server lives.  Not under bmx (ring_inflight counts us instead). */
static int ring_bsend(mp_chseg_t *seg, int32_t type, const void *data,
		      uint32_t len, int64_t deadline_ns)
{
	struct mp_ring_rec meta;
	int64_t end;
	int rc;

	memset(&meta, 0, sizeof(meta));
	meta.type = type;
	meta.sender = seg->sender;
	memcpy(meta.id, seg->id, sizeof(meta.id));
	/* First as a poll: the usual case (room, lock free) costs no clock
	 * read. */
	rc = mp_ring_push(&seg->ring, &meta, data, len, 0);
	while (rc == -ETIMEDOUT) {
		end = slice_end(deadline_ns, seg->live_ns);
		rc = mp_ring_push(&seg->ring, &meta, data, len, end);
		if (rc != -ETIMEDOUT)
			break;
		if (end == deadline_ns)
			return -ETIMEDOUT;
		rc = server_check(seg);
		if (rc)
			return rc;
		rc = -ETIMEDOUT;
	}
	return rc;
}

/*
 * Under bmx, without a lane: try to claim one.  Per-sender order across
 * the switch: none of our records may still wait in the ring, so only a
 * handle that never used the ring, or whose ring records were all taken
 * (none in flight, ring empty), claims; and not on every bsend.  When
 * every lane is taken, ask the server to look for dead owners.
 */
static int lane_get(mp_chseg_t *seg)
{
	struct mp_chseg_hdr *h = seg->hdr;
	uint32_t hw;

	if (!seg->nlanes || seg->lane_tries++ % LANE_RETRY)
		return 0;
	if (seg->ring_used &&
	    (__atomic_load_n(&seg->ring_inflight, __ATOMIC_ACQUIRE) ||
	     mp_ring_count(&seg->ring) != 0))
		return 0;
	for (uint32_t i = 0; i < seg->nlanes; i++) {
		if (mp_lane_claim(&seg->lane, lane_mem(seg, i), &seg->lane_geo,
				  seg->pid, seg->sender, seg->id,
				  seg->ring.plain_publish,
				  ld(&h->fence) == 1) != 0)
			continue;
		/* Visible to the server's scans before our first record
		 * (seq_cst, like the slots' hiwater). */
		hw = ld(&h->lane_hiwater);
		while (hw < i + 1 &&
		       !__atomic_compare_exchange_n(&h->lane_hiwater, &hw,
						    i + 1, 0, __ATOMIC_SEQ_CST,
						    __ATOMIC_RELAXED))
			;
		/* Before our first plain publication: the server must fence
		 * before it sleeps (seq_cst, as mp_ring's plain_pubs). */
		if (seg->ring.plain_publish && !ld(&h->lane_plain))
			__atomic_store_n(&h->lane_plain, 1, __ATOMIC_SEQ_CST);
		seg->lane_idx = (int)i;
		seg->ring_used = 0;
		return 1;
	}
	__atomic_add_fetch(&h->lanes_wanted, 1, __ATOMIC_RELAXED);
	mp_chseg_kick(seg);
	return 0;
}

/* Our lane failed us (-EPIPE: broken by the server; -EBADMSG: its
 * positions lie): give it back and use the ring.  What the lane still
 * holds is the server's to drain or, if it broke it, lost. */
static void lane_drop(mp_chseg_t *seg)
{
	mp_lane_release(&seg->lane);
	seg->lane_idx = -1;
	seg->lane_tries = 1; /* not again at once */
}

int mp_chseg_bsend(mp_chseg_t *seg, int32_t type, const void *data,
		   uint32_t len, int64_t deadline_ns)
{
	struct mp_chseg_hdr *h = seg->hdr;
	mp_lane_prod_t snap;
	int64_t end;
	int rc;

	if (len > seg->max_msg)
		return -EMSGSIZE;
	if (!__atomic_load_n(&h->alive, __ATOMIC_RELAXED))
		return -ESRCH;
	/* bmx is never held while waiting: a poll of another thread is
	 * never kept behind a full lane. */
	for (;;) {
		pthread_mutex_lock(&seg->bmx);
		if (seg->lane_idx < 0 && !lane_get(seg)) {
			seg->ring_used = 1;
			__atomic_add_fetch(&seg->ring_inflight, 1,
					   __ATOMIC_RELAXED);
			pthread_mutex_unlock(&seg->bmx);
			rc = ring_bsend(seg, type, data, len, deadline_ns);
			__atomic_sub_fetch(&seg->ring_inflight, 1,
					   __ATOMIC_RELEASE);
			break;
		}
		rc = mp_lane_push(&seg->lane, type, data, len);
		if (rc == -EAGAIN)
			snap = seg->lane; /* for the wait, outside bmx */
		if (rc == -EPIPE || rc == -EBADMSG) {
			lane_drop(seg);
			pthread_mutex_unlock(&seg->bmx);
			continue;
		}
		pthread_mutex_unlock(&seg->bmx);
		if (rc != -EAGAIN)
			break;
		/* Full: wait for the server to take some, in slices that
		 * check it lives. */
		end = slice_end(deadline_ns, seg->live_ns);
		rc = mp_lane_wait(&snap, snap.tail_seen, end);
		if (rc == -ETIMEDOUT) {
			if (end == deadline_ns)
				return -ETIMEDOUT;
			rc = server_check(seg);
			if (rc)
				return rc;
		}
		/* 0 or -EPIPE: push again (the next push sees a lost lane). */
	}
	if (rc < 0)
		return rc;
	bell_after_push(h);
	return rc;
}

/* ---- server side ---------------------------------------------------- */

/* Credentials as the client wrote them, checked once per (slot, pid). */
static int cred_check(mp_chseg_t *seg, uint32_t i, pid_t pid, uid_t uid,
		      gid_t gid)
{
	struct mp_chseg_held *hd = &seg->held[i];
	char path[40];
	struct stat st_;

	if (hd->cred_pid == pid && hd->cred_uid == uid && hd->cred_gid == gid &&
	    pid > 0)
		return hd->cred_ok;
	hd->cred_pid = pid;
	hd->cred_uid = uid;
	hd->cred_gid = gid;
	hd->cred_ok = 0;
	if (pid <= 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/%ld", (long)pid);
	/* /proc/<pid> belongs to the process's effective uid and gid. */
	if (stat(path, &st_) == 0 && st_.st_uid == uid && st_.st_gid == gid)
		hd->cred_ok = MP_CHSEG_CRED_CHECKED;
	return hd->cred_ok;
}

/* The server holds slot i, taken over at generation gen (state CLAIMED:
 * no client writes it, none can claim it): clear the owner's pid and
 * free it.  The pid is cleared only now, while the slot is ours: a
 * store made before the take-over could land after a new claimer's own
 * pid store and erase it, and a claimer without a pid is one the reaper
 * can never tell from a dead one.  Seq_cst: the pid store is released
 * to the next claimer (whose claim CAS acquires FREE), and the store is
 * ordered before free_notify's load of free_waiters (Dekker with
 * mp_chseg_loan).  wake: someone may sleep on the old word. */
static void release_slot(mp_chseg_t *seg, uint32_t i, uint32_t gen, int wake)
{
	struct mp_chseg_slot *s = slot_ctl(seg, i);

	st(&s->pid, 0);
	__atomic_store_n(&s->state, word(gen, ST_FREE), __ATOMIC_SEQ_CST);
	/* Whoever slept on the old word (its client, if it is still
	 * there) sees a new generation. */
	if (wake)
		wake_word(&s->state);
	free_notify(seg->hdr);
}

/* Free a slot the server is entitled to free (CANCELED, or a dead
 * client's), from the exact word seen.  1 done, 0 the word moved.  The
 * slot is first taken over with one CAS from that word (CLAIMED at the
 * next generation, as a client's claim would), so nothing is written to
 * it unless the word still was w: a client that moved on meanwhile (or a
 * new claimer) keeps its slot and every field of it. */
static int reclaim(mp_chseg_t *seg, uint32_t i, uint32_t w)
{
	struct mp_chseg_slot *s = slot_ctl(seg, i);
	uint32_t gen = gen_of(w) + 1;

	if (!__atomic_compare_exchange_n(&s->state, &w, word(gen, ST_CLAIMED),
					 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
		return 0;
	release_slot(seg, i, gen, w & ST_WAIT);
	return 1;
}

/* A slot holds an impossible word or request: reset it whatever it is
 * (taken over unconditionally, at the generation after w's, then freed
 * as by reclaim), and wake its client (who sees a new generation:
 * -EBADMSG). */
static void reset_slot(mp_chseg_t *seg, uint32_t i, uint32_t w)
{
	uint32_t gen = gen_of(w) + 1;

	__atomic_exchange_n(&slot_ctl(seg, i)->state, word(gen, ST_CLAIMED),
			    __ATOMIC_SEQ_CST);
	release_slot(seg, i, gen, 1);
	/* Whatever ticket we had on it is dead now. */
	if (seg->held[i].status != HS_NONE)
		seg->held[i].status = HS_RESET;
}

/* Does the server hold slot i at the generation of w, with status st? */
static inline int held_as(const mp_chseg_t *seg, uint32_t i, uint32_t w,
			  uint32_t st_)
{
	return seg->held[i].status == st_ && seg->held[i].gen == gen_of(w);
}

static void msg_from_held(mp_chseg_t *seg, uint32_t i, int kind,
			  struct mp_chseg_msg *m)
{
	struct mp_chseg_held *hd = &seg->held[i];

	memset(m, 0, sizeof(*m));
	m->kind = kind;
	m->slot = i;
	m->ticket = (uint64_t)hd->gen << 32 | i;
	m->pid = hd->pid;
	m->sender = hd->sender;
	memcpy(m->id, hd->id, sizeof(m->id));
}

/* Take the request in slot i (word w, state REQ, loaded with acquire:
 * the request's bytes and fields are visible).  Nothing is written to the
 * slot: "taken" is recorded in our own table.  1 taken (*m filled),
 * -EBADMSG (reset). */
static int take(mp_chseg_t *seg, uint32_t i, uint32_t w, struct mp_chseg_msg *m)
{
	struct mp_chseg_slot *s = slot_ctl(seg, i);
	struct mp_chseg_held *hd = &seg->held[i];
	uint32_t len, gen = gen_of(w);

	pid_t pid;
	uid_t uid;
	gid_t gid;
	char id[MP_CHSEG_ID_LEN];

	len = ld(&s->len);
	if (len > seg->max_msg) {
		reset_slot(seg, i, w);
		return -EBADMSG;
	}
	/* Each field read once, into locals (also spares the CPU reading
	 * back, wider, what it has just stored into *m). */
	pid = (pid_t)ld(&s->pid);
	uid = (uid_t)ld(&s->uid);
	gid = (gid_t)ld(&s->gid);
	memcpy(id, s->id, sizeof(id));
	id[MP_CHSEG_ID_LEN - 1] = '\0';
	m->kind = MP_CHSEG_REQUEST;
	m->slot = i;
	m->ticket = (uint64_t)gen << 32 | i;
	m->type = (int32_t)ld((uint32_t *)&s->type);
	m->len = len;
	m->data = area_a(seg, i);
	m->reqid = __atomic_load_n(&s->reqid, __ATOMIC_RELAXED);
	m->pid = pid;
	m->uid = uid;
	m->gid = gid;
	m->cred = cred_check(seg, i, pid, uid, gid);
	m->sender = ld(&s->sender);
	memcpy(m->id, id, sizeof(id));
	seg->peer_cpu = __atomic_load_n(&s->cpu, __ATOMIC_RELAXED);
	hd->status = HS_HELD;
	hd->gen = gen;
	hd->len = len;
	hd->pid = pid;
	hd->sender = m->sender;
	memcpy(hd->id, id, sizeof(id));
	return 1;
}

/*
 * Slot i (word *wp, a REQ we have not taken) is the first the scan found;
 * an earlier request of the same client may sit in another slot, since a
 * client with several requests out claims whatever slot is free.  Each
 * client's requests are taken in the order it published them: return the
 * untaken REQ with the same pid and sender and the lowest request id
 * (compared modulo 2^63: the top bit marks pings), *wp its word.  Every
 * slot is loaded again after *wp was, so a request the client published
 * before i's is seen (it publishes in order, with release; we acquire).
 * The fields read here only choose the order; take() checks what it
 * takes, and a liar can only reorder its own requests.
 */
static uint32_t earliest(mp_chseg_t *seg, uint32_t i, uint32_t *wp, uint32_t n)
{
	struct mp_chseg_slot *s = slot_ctl(seg, i);
	uint32_t pid, sender, best = i;
	uint64_t low;

	if (n < 2)
		return i;
	pid = ld(&s->pid);
	sender = ld(&s->sender);
	low = __atomic_load_n(&s->reqid, __ATOMIC_RELAXED);
	for (uint32_t j = 0; j < n; j++) {
		uint32_t w;
		uint64_t q;

		if (j == i)
			continue;
		s = slot_ctl(seg, j);
		w = ld_acq(&s->state);
		if (!word_ok(w) || (w & ST_MASK) != ST_REQ ||
		    held_as(seg, j, w, HS_HELD) || held_as(seg, j, w, HS_GONE))
			continue;
		if (ld(&s->pid) != pid || ld(&s->sender) != sender)
			continue;
		q = __atomic_load_n(&s->reqid, __ATOMIC_RELAXED);
		if ((int64_t)((q - low) << 1) < 0) {
			low = q;
			best = j;
			*wp = w;
		}
	}
	return best;
}

static int evq_pop(mp_chseg_t *seg, struct mp_chseg_msg *m)
{
	struct mp_chseg_ev *e;

	if (!seg->evq_len)
		return 0;
	e = &seg->evq[seg->evq_head];
	seg->evq_head = (seg->evq_head + 1) % MP_CHSEG_EVQ;
	seg->evq_len--;
	memset(m, 0, sizeof(*m));
	m->kind = e->kind;
	m->slot = e->slot;
	m->ticket = (uint64_t)e->gen << 32 | e->slot;
	m->pid = e->pid;
	m->sender = e->sender;
	memcpy(m->id, e->id, sizeof(m->id));
	return 1;
}

int mp_chseg_next(mp_chseg_t *seg, struct mp_chseg_msg *m)
{
	uint32_t n, i, w;
	int rc;

	if (evq_pop(seg, m))
		return 1;
	if (++seg->calls % NEXT_REAP_EVERY == 0 &&
	    mp_time_now_ns() - seg->last_reap_ns >= seg->reap_ns / 2) {
		mp_chseg_reap(seg, 0);
		if (evq_pop(seg, m))
			return 1;
	}
	n = hiwater(seg);
	for (uint32_t k = 0; k < n; k++) {
		i = seg->scan_from + k;
		if (i >= n)
			i -= n;
		if (i >= n)
			i = 0;
		for (int tries = 0; tries < 4; tries++) {
			w = ld_acq(&slot_ctl(seg, i)->state);
			if (!word_ok(w)) {
				reset_slot(seg, i, w);
				memset(m, 0, sizeof(*m));
				m->slot = i;
				return -EBADMSG;
			}
			switch (w & ST_MASK) {
			case ST_REQ:
				/* Taken already: awaiting our reply. */
				if (held_as(seg, i, w, HS_HELD) ||
				    held_as(seg, i, w, HS_GONE))
					break;
				seg->scan_from = i + 1;
				i = earliest(seg, i, &w, n);
				rc = take(seg, i, w, m);
				if (rc < 0) {
					memset(m, 0, sizeof(*m));
					m->slot = i;
				}
				return rc;
			case ST_CANCELED:
				if (held_as(seg, i, w, HS_CANCELED))
					break; /* reported, awaits reply */
				if (held_as(seg, i, w, HS_HELD)) {
					/* Report it; the slot stays ours
					 * until the reply, because the
					 * request's view lasts until then. */
					seg->held[i].status = HS_CANCELED;
					msg_from_held(seg, i, MP_CHSEG_CANCELED,
						      m);
					seg->scan_from = i + 1;
					return 1;
				}
				/* Withdrawn before we took it: nobody
				 * needs to know. */
				if (!reclaim(seg, i, w))
					continue;
				break;
			default:
				break;
			}
			break;
		}
	}
	return 0;
}

void *mp_chseg_reply_buf(mp_chseg_t *seg, uint64_t ticket, uint32_t *cap)
{
	uint32_t i = (uint32_t)ticket;

	if (i >= seg->nslots || seg->held[i].status != HS_HELD ||
	    seg->held[i].gen != (uint32_t)(ticket >> 32))
		return NULL;
	if (cap)
		*cap = seg->max_msg;
	return area_b(seg, i);
}

static int overlaps(const void *p, uint32_t len, const uint8_t *a,
		    uint32_t alen)
{
	uintptr_t x = (uintptr_t)p, b = (uintptr_t)a;

	return x < b + alen && b < x + len;
}

int mp_chseg_reply(mp_chseg_t *seg, uint64_t ticket, int32_t answer,
		   const void *data, uint32_t len)
{
	uint32_t i = (uint32_t)ticket, gen = (uint32_t)(ticket >> 32);
	struct mp_chseg_held *hd;
	struct mp_chseg_slot *s;
	uint8_t *a, *b;
	uint32_t w, rarea;

	if (i >= seg->nslots || seg->held[i].gen != gen)
		return -EINVAL;
	hd = &seg->held[i];
	switch (hd->status) {
	case HS_HELD:
		break;
	case HS_CANCELED:
	case HS_GONE:
		/* Withdrawn or dead, and reported: the slot was kept for the
		 * request's view until now.  Discard the reply, free it. */
		rarea = hd->status == HS_CANCELED ? (uint32_t)-ECANCELED
						  : (uint32_t)-ESRCH;
		hd->status = HS_NONE;
		w = ld(&slot_ctl(seg, i)->state);
		if (gen_of(w) == gen && word_ok(w) &&
		    ((w & ST_MASK) == ST_CANCELED || (w & ST_MASK) == ST_REQ) &&
		    reclaim(seg, i, w))
			return (int)rarea;
		reset_slot(seg, i, w);
		return (int)rarea;
	case HS_RESET:
		hd->status = HS_NONE;
		return -EBADMSG;
	default:
		return -EINVAL;
	}
	if (len > seg->max_msg)
		return -EMSGSIZE;
	if (len && !data)
		return -EINVAL;
	s = slot_ctl(seg, i);
	a = area_a(seg, i);
	b = area_b(seg, i);
	/* The reply goes where it already is, if it is in the slot;
	 * otherwise into area A, which the request no longer needs. */
	if (!len || data == a) {
		rarea = 0;
	} else if (data == b) {
		rarea = 1;
	} else if (overlaps(data, len, b, seg->area)) {
		memmove(b, data, len);
		rarea = 1;
	} else if (overlaps(data, len, a, seg->area)) {
		memmove(a, data, len);
		rarea = 0;
	} else {
		memcpy(a, data, len);
		rarea = 0;
	}
	put(&s->answer, answer);
	put(&s->rlen, len);
	put(&s->rarea, (uint16_t)rarea);
	for (;;) {
		w = ld(&s->state);
		if (gen_of(w) != gen || !word_ok(w))
			break;
		if ((w & ST_MASK) == ST_CANCELED) {
			if (!reclaim(seg, i, w))
				continue;
			hd->status = HS_NONE;
			return -ECANCELED;
		}
		if ((w & ST_MASK) != ST_REQ)
			break;
		/* Release: the reply bytes and fields are visible to the
		 * client's acquire load of REPLIED.  The old word tells
		 * whether the client sleeps. */
		if (__atomic_compare_exchange_n(
			    &s->state, &w, word(gen, ST_REPLIED), 0,
			    __ATOMIC_RELEASE, __ATOMIC_RELAXED)) {
			hd->status = HS_NONE;
			if (w & ST_WAIT)
				wake_word(&s->state);
			return 0;
		}
	}
	reset_slot(seg, i, w);
	hd->status = HS_NONE;
	return -EBADMSG;
}

/* Lanes that were ever claimed (an untrusted hint, clamped). */
static inline uint32_t lanes_used(const mp_chseg_t *seg)
{
	uint32_t n = ld(&seg->hdr->lane_hiwater);

	return n < seg->nlanes ? n : seg->nlanes;
}

static inline uint32_t lane_gen(uint32_t w)
{
	return w >> MP_LANE_GEN_SHIFT;
}

/* Did we break lane i in the ownership of word w? */
static inline int lane_broken(const mp_chseg_t *seg, uint32_t i, uint32_t w)
{
	uint32_t b = seg->lanest[i].broken_word;

	return b && lane_gen(b) == lane_gen(w);
}

/* Lane i is empty at word w: free it if its owner is done with it (gave
 * it back, or was found dead), or if we broke it and may discard it. */
static void lane_tidy(mp_chseg_t *seg, uint32_t i, uint32_t w)
{
	struct mp_chseg_lanest *ls = &seg->lanest[i];
	uint32_t st = w & MP_LANE_ST_MASK;
	int done = st == MP_LANE_CLOSED || ls->dead_word == w;

	if (st == MP_LANE_FREE || !done)
		return;
	if (mp_lane_free(&seg->cons[i], w, lane_broken(seg, i, w)) == 1) {
		ls->dead_word = 0;
		ls->broken_word = 0;
	}
}

/* Take one record from lane i.  1, 0 (none), -EBADMSG (it lied: broken,
 * its producer told at its next push). */
static int lane_take(mp_chseg_t *seg, uint32_t i, struct mp_ring_rec *meta,
		     void *buf, uint32_t maxlen)
{
	mp_lane_cons_t *c = &seg->cons[i];
	uint32_t w = mp_lane_word(c->sh), len;
	int32_t type;
	pid_t pid;
	int rc;

	if ((w & MP_LANE_ST_MASK) == MP_LANE_FREE)
		return 0;
	if (lane_broken(seg, i, w) || (w & MP_LANE_ST_MASK) == MP_LANE_BROKEN) {
		lane_tidy(seg, i, w);
		return 0;
	}
	rc = mp_lane_pop(c, &type, buf, maxlen, &len);
	if (rc == 0) {
		lane_tidy(seg, i, w);
		return 0;
	}
	if (rc < 0) {
		if (mp_lane_break(c, w))
			seg->lanest[i].broken_word = w | MP_LANE_BROKEN;
		else
			seg->lanest[i].broken_word = w;
		return -EBADMSG;
	}
	memset(meta, 0, sizeof(*meta));
	meta->type = type;
	meta->len = len;
	meta->seq = c->tail_seq - 1;
	mp_lane_owner(c, &pid, &meta->sender, meta->id);
	return 1;
}

static int ring_take(mp_chseg_t *seg, struct mp_ring_rec *meta, void *buf,
		     uint32_t maxlen)
{
	int rc = mp_ring_pop(&seg->ring, meta, buf, maxlen, 0);

	if (rc >= 0)
		return 1;
	if (rc == -ETIMEDOUT)
		return 0;
	if (rc == -EBADMSG)
		mp_ring_reset(&seg->ring);
	return rc;
}

int mp_chseg_bpop(mp_chseg_t *seg, struct mp_ring_rec *meta, void *buf,
		  uint32_t maxlen)
{
	uint32_t n = lanes_used(seg), cur = seg->lane_cur, q;
	int rc;

	/* Queues 0..n-1 are lanes, n is the ring.  Stay on the one served
	 * last for up to LANE_RUN records (its head is in hand), then go
	 * round: no sender starves the others. */
	if (cur > n)
		cur = n;
	q = cur;
	if (seg->lane_run >= LANE_RUN) {
		seg->lane_run = 0;
		q = q == n ? 0 : q + 1;
	}
	for (uint32_t k = 0; k <= n; k++) {
		rc = q == n ? ring_take(seg, meta, buf, maxlen)
			    : lane_take(seg, q, meta, buf, maxlen);
		if (rc != 0) {
			if (rc < 0 || q != cur)
				seg->lane_run = 0;
			seg->lane_cur = q == n ? seg->nlanes : q;
			seg->lane_run++;
			return rc;
		}
		q = q == n ? 0 : q + 1;
	}
	return 0;
}

int mp_chseg_bpending(mp_chseg_t *seg)
{
	uint32_t n = lanes_used(seg), w;

	for (uint32_t i = 0; i < n; i++) {
		w = mp_lane_word(seg->cons[i].sh);
		if ((w & MP_LANE_ST_MASK) == MP_LANE_FREE ||
		    lane_broken(seg, i, w))
			continue;
		/* A head that lies counts: the pop reports it. */
		if (mp_lane_pending(&seg->cons[i]) != 0)
			return 1;
	}
	return mp_ring_count(&seg->ring) != 0;
}

/* Anything in the slots for the server?  Requests, withdrawals, corrupt
 * words. */
static int ready_slots(mp_chseg_t *seg)
{
	uint32_t n = hiwater(seg), w, s;

	for (uint32_t i = 0; i < n; i++) {
		w = ld(&slot_ctl(seg, i)->state);
		s = w & ST_MASK;
		if (!word_ok(w))
			return 1;
		if (s == ST_REQ && !held_as(seg, i, w, HS_HELD) &&
		    !held_as(seg, i, w, HS_GONE))
			return 1;
		if (s == ST_CANCELED && !held_as(seg, i, w, HS_CANCELED))
			return 1;
	}
	return 0;
}

/* Anything at all: slots, queued events, buffered messages. */
static int ready(mp_chseg_t *seg)
{
	return seg->evq_len || ready_slots(seg) || mp_chseg_bpending(seg);
}

int mp_chseg_slots_in_use(const mp_chseg_t *seg)
{
	uint32_t n = hiwater(seg);

	for (uint32_t i = 0; i < n; i++) {
		uint32_t w = ld(&slot_ctl(seg, i)->state);

		/* A parked slot is not in use: any client takes it over
		 * when it needs it, so a server need not wake up for it
		 * (a dead owner's is reaped when the reaper runs anyway). */
		if ((w & ST_MASK) != ST_FREE && !parked(seg, i, w))
			return 1;
	}
	return 0;
}

static int kicked(mp_chseg_t *seg)
{
	return ld(&seg->hdr->bell) != seg->bell_seen;
}

int mp_chseg_sleeper_fence(mp_chseg_t *seg)
{
	/* Seq_cst: after the caller's raise of srv_waiters (see
	 * mp_ring_fence_producers for why reading 0 lets us skip it). */
	if (__atomic_load_n(&seg->hdr->lane_plain, __ATOMIC_SEQ_CST))
		return mp_fence_remote();
	return mp_ring_fence_producers(&seg->ring);
}

int mp_chseg_server_wait(mp_chseg_t *seg, int64_t deadline_ns)
{
	struct mp_chseg_hdr *h = seg->hdr;
	int64_t t0, now, end, budget;
	uint32_t b, me;
	int rc = 1, unfenced;

	if (ready(seg) || kicked(seg))
		goto out;
	/* Say where we run (only when it changed: the line is read by
	 * every client), so that a client on this same CPU does not spin
	 * for us. */
	me = cpu_tag();
	if (me != seg->cpu_pub) {
		seg->cpu_pub = me;
		st(&h->srv_cpu, me);
	}
	/* Spin, on an adaptive budget (it doubles after a wait that ended
	 * while spinning or yielding, halves after one that slept), and
	 * only if the last client may be running: not on our CPU. */
	budget = min64(seg->spin_cur, seg->spin_ns);
	t0 = 0; /* the clock is read after a first batch: a read costs as
		   much as a dozen turns, and most waits end sooner */
	now = 0;
	while (budget > 0 && peer_elsewhere(me, seg->peer_cpu)) {
		for (int j = 0; j < SPIN_BATCH; j++) {
			if (ready_slots(seg) ||
			    (j % 8 == 7 && (kicked(seg) || ready(seg))))
				goto won;
			mp_cpu_relax();
		}
		now = mp_time_now_ns();
		if (!t0)
			t0 = now;
		else if (now - t0 >= budget || now >= deadline_ns)
			break;
	}
	if (!now)
		now = mp_time_now_ns();
	t0 = now;
	while (now - t0 < seg->yield_ns && now < deadline_ns) {
		sched_yield();
		if (ready(seg) || kicked(seg))
			goto won;
		now = mp_time_now_ns();
	}
	if (now >= deadline_ns) {
		rc = 0;
		goto out;
	}
	seg->spin_cur /= 2;

	/* Sleep.  Dekker: count ourselves asleep (seq_cst), fence the
	 * clients whose ring publications are plain stores, then look once
	 * more; a client publishes (seq_cst, or plain and fenced), then
	 * reads the count.  Once: a publication after the fence sees the
	 * count, which stays raised until we leave.  Without the fence,
	 * sleep in slices (a wake-up lost costs one). */
	__atomic_add_fetch(&h->srv_waiters, 1, __ATOMIC_SEQ_CST);
	unfenced = mp_chseg_sleeper_fence(seg) < 0;
	for (;;) {
		b = __atomic_load_n(&h->bell, __ATOMIC_SEQ_CST);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (b != seg->bell_seen || ready(seg))
			break;
		now = mp_time_now_ns();
		if (now >= deadline_ns) {
			rc = 0;
			break;
		}
		end = mp_chseg_slots_in_use(seg)
			      ? slice_end(deadline_ns, seg->reap_ns / 2)
			      : deadline_ns;
		if (unfenced)
			end = slice_end(end, UNFENCED_SLICE_NS);
		if (mp_futex_wait(&h->bell, b, end) == -ETIMEDOUT &&
		    end != deadline_ns && mp_chseg_reap(seg, 0) > 0)
			break;
	}
	__atomic_sub_fetch(&h->srv_waiters, 1, __ATOMIC_SEQ_CST);
	goto out;
won:
	seg->spin_cur = seg->spin_cur < SRV_SPIN_FLOOR / 2
				? SRV_SPIN_FLOOR
				: min64(seg->spin_cur * 2, seg->spin_ns);
out:
	seg->bell_seen = ld(&h->bell);
	return rc;
}

/* Is the client of slot i (as the reaper knows it) alive? */
static int client_alive(mp_chseg_t *seg, uint32_t i, pid_t pid)
{
	struct mp_chseg_held *hd = &seg->held[i];

	return pid_alive_cached(pid, &hd->fd_pid, &hd->pidfd);
}

/*
 * Look for lanes whose owner died: at most every LANE_CHECK_NS, at once
 * when a client found no free lane (lanes_wanted moved) or when forced.
 * A dead owner's lane is drained by mp_chseg_bpop and then freed; freed
 * here already if it is empty.
 */
static void lanes_check(mp_chseg_t *seg, int force, int64_t now)
{
	uint32_t n = lanes_used(seg), wanted, w, st, sender;
	struct mp_chseg_lanest *ls;
	char id[MP_LANE_ID_LEN];
	pid_t pid;

	wanted = __atomic_load_n(&seg->hdr->lanes_wanted, __ATOMIC_RELAXED);
	if (!n || (!force && wanted == seg->lanes_wanted_seen &&
		   now - seg->lanes_checked_ns < LANE_CHECK_NS))
		return;
	seg->lanes_wanted_seen = wanted;
	seg->lanes_checked_ns = now;
	for (uint32_t i = 0; i < n; i++) {
		ls = &seg->lanest[i];
		w = mp_lane_word(seg->cons[i].sh);
		st = w & MP_LANE_ST_MASK;
		if ((st == MP_LANE_OWNED || st == MP_LANE_BROKEN) &&
		    ls->dead_word != w) {
			/* pid 0 is never blamed (a live claimer shows it
			 * before its pid store), as for slots. */
			mp_lane_owner(&seg->cons[i], &pid, &sender, id);
			if (pid > 0 &&
			    !pid_alive_cached(pid, &ls->fd_pid, &ls->pidfd))
				ls->dead_word = w;
		}
		lane_tidy(seg, i, w);
	}
}

int mp_chseg_reap(mp_chseg_t *seg, int force)
{
	int64_t now = mp_time_now_ns();
	uint32_t n = hiwater(seg), w, s;
	struct mp_chseg_held *hd;
	struct mp_chseg_slot *c;
	struct mp_chseg_ev *e;
	int held, q = 0;
	pid_t pid;

	seg->last_reap_ns = now;
	lanes_check(seg, force, now);
	for (uint32_t i = 0; i < n; i++) {
		hd = &seg->held[i];
		c = slot_ctl(seg, i);
		/* Acquire: the pid read below is at least the one the word's
		 * writer stored before it (a newer one belongs to a word
		 * that moved, and reclaim's CAS then fails). */
		w = ld_acq(&c->state);
		if (w != hd->last_word) {
			hd->last_word = w;
			hd->since_ns = now;
			if (!force)
				continue;
		}
		if (!force && now - hd->since_ns < seg->reap_ns)
			continue;
		s = w & ST_MASK;
		held = s == ST_REQ && held_as(seg, i, w, HS_HELD);
		/* The client's states, and requests (held by us or not).
		 * FREE is nobody's; CANCELED and corrupt words are next()'s
		 * business; a dead client's held request is reported
		 * already (HS_GONE). */
		if (!word_ok(w) ||
		    (s != ST_CLAIMED && s != ST_REQ && s != ST_REPLIED) ||
		    (s == ST_REQ && held_as(seg, i, w, HS_GONE)))
			continue;
		/* A take-over of a parked slot in progress: the pid is still
		 * the previous owner's, never blamed on the new one (like
		 * pid 0 below). */
		if (s == ST_CLAIMED && (w & ST_WAIT))
			continue;
		/* For a held request, the pid copied when it was taken. */
		pid = held ? hd->pid : (pid_t)ld(&c->pid);
		/* pid 0 names nobody, and is never blamed: a live client
		 * shows it between its claim and its pid store, and between
		 * clearing its pid and freeing the slot (mp_chseg_done), in
		 * a state word that does not move at either store.  Taking
		 * that for a death reclaimed live clients' slots under them
		 * (issue 5).  A client that dies within one of those two
		 * stores leaves its slot taken until the segment closes. */
		if (pid == 0)
			continue;
		if (client_alive(seg, i, pid))
			continue;
		if (seg->evq_len >= MP_CHSEG_EVQ)
			break; /* report before reclaiming: next time */
		if (held) {
			/* Keep the slot until the reply: the request's view
			 * is the server's until then. */
			hd->status = HS_GONE;
		} else if (!reclaim(seg, i, w)) {
			continue;
		}
		e = &seg->evq[(seg->evq_head + seg->evq_len) % MP_CHSEG_EVQ];
		memset(e, 0, sizeof(*e));
		e->kind = MP_CHSEG_GONE;
		e->slot = i;
		e->gen = gen_of(w);
		e->pid = pid;
		if (held) {
			e->sender = hd->sender;
			memcpy(e->id, hd->id, sizeof(e->id));
		} else {
			e->sender = ld(&c->sender);
			memcpy(e->id, c->id, sizeof(e->id));
			e->id[MP_CHSEG_ID_LEN - 1] = '\0';
		}
		seg->evq_len++;
		hd->last_word = ld(&c->state);
		hd->since_ns = now;
		q++;
	}
	return q;
}
