/*
 * test_mgr_state — the manager's segment (mgrd/mgr_state.c) driven
 * directly in one process acting as worker 0 of 2: registrations,
 * channels, links and their events, orphaning by epoch and the grace
 * period, resume, death notification order and clean-up, events kept until
 * acknowledged and offered again in order, BSEND deduplication by request
 * id, ring push/park/release, and repair after a lock holder died or left
 * records half-done.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mgr_config.h"
#include "mgr_log.h"
#include "mgr_state.h"
#include "mp_test.h"
#include "mp_time.h"

static struct mgr_state st;
static struct mgr_config cfg;
static int efds[2] = { -1, -1 };

/* Events captured by the emit callback, which keeps a per-channel "sent
 * up to" like a worker's connection does (reset it to play a resumed
 * registration's new connection). */
struct ev {
	int server, slot;
	int32_t ev;
	uint32_t regno;
	uint64_t seq;
	char id[16];
};
static struct ev evs[64];
static int nevs, refuse_emit, emit_budget;
static uint64_t sent_upto[16];

static int emit(void *ctx, int server, int slot, int32_t ev, uint32_t regno,
		const char *id, uint64_t seq)
{
	(void)ctx;
	if (slot < 0 || slot >= 16)
		return -1;
	if (seq <= sent_upto[slot])
		return 1;
	if (refuse_emit || nevs >= 64 || emit_budget == 0)
		return -1;
	if (emit_budget > 0)
		emit_budget--;
	evs[nevs].server = server;
	evs[nevs].slot = slot;
	evs[nevs].ev = ev;
	evs[nevs].regno = regno;
	evs[nevs].seq = seq;
	snprintf(evs[nevs].id, sizeof(evs[nevs].id), "%s", id);
	nevs++;
	sent_upto[slot] = seq;
	return 0;
}

static void setup(void)
{
	char name[96];

	mgr_config_defaults(&cfg);
	cfg.workers = 2;
	cfg.max_channels = 8;
	cfg.max_connections = 8;
	cfg.max_links = 32;
	cfg.ring_memory = 8 << 20;
	cfg.max_message_size = 1024;
	cfg.default_buffered = 4;
	for (int i = 0; i < 2; i++)
		efds[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	mp_test_shm_name(name, sizeof(name), "mgr");
	CU_ASSERT_FATAL(mgr_state_create(&st, &cfg, name, efds, NULL) == 0);
	CU_ASSERT_FATAL(mgr_state_attach_worker(&st, 0, &cfg) == 0);
	nevs = 0;
	refuse_emit = 0;
	emit_budget = -1;
	memset(sent_upto, 0, sizeof(sent_upto));
}

static void teardown(void)
{
	/* The handle was disowned by attach_worker: unlink by name. */
	char name[MP_SHM_NAME_MAX];

	snprintf(name, sizeof(name), "%s", st.shm.name);
	mgr_state_close(&st);
	mp_shm_unlink(name);
	for (int i = 0; i < 2; i++)
		close(efds[i]);
}

/* Make registration reg look owned by worker 1 (another process). */
static void give_to_worker1(int reg)
{
	st.regs[reg].worker = 1;
	st.regs[reg].epoch = st.workers[1].epoch;
}

static void test_regs_and_channels(void)
{
	struct mgr_reginfo a, b;
	struct mgr_chinfo info;
	uint32_t gen, n;
	int slot, s2;

	setup();
	CU_ASSERT_FATAL(mgr_state_reg_new(&st, "alpha", 11, "p", &a) == 0);
	CU_ASSERT_FATAL(mgr_state_reg_new(&st, "beta", 12, "p", &b) == 0);
	CU_ASSERT(a.regno != b.regno);
	CU_ASSERT(a.token != b.token && a.token && b.token);
	CU_ASSERT(st.sh->nregs == 2);

	uint8_t ticket[MGR_TICKET_LEN];

	memset(ticket, 0xa5, sizeof(ticket));
	slot = mgr_state_ch_create(&st, a.reg, "c", 0, "1.2.3.4:5", 77, ticket,
				   &gen);
	CU_ASSERT_FATAL(slot >= 0);
	CU_ASSERT(gen & 1);
	CU_ASSERT(st.chans[slot].capacity == 4); /* default_buffered */
	CU_ASSERT(mgr_state_ch_create(&st, b.reg, "c", 0, "", 0, NULL, &gen) ==
		  -EEXIST);
	CU_ASSERT(mgr_state_ch_create(&st, b.reg, "", 0, "", 0, NULL, &gen) ==
		  -EINVAL);
	CU_ASSERT(mgr_state_ch_connect(&st, b.reg, "x", &info) == -ENOENT);
	s2 = mgr_state_ch_connect(&st, b.reg, "c", &info);
	CU_ASSERT(s2 == slot);
	CU_ASSERT(info.server_regno == a.regno);
	CU_ASSERT(info.host_token == 77);
	CU_ASSERT_STRING_EQUAL(info.server_id, "alpha");
	CU_ASSERT_STRING_EQUAL(info.addr, "1.2.3.4:5");
	CU_ASSERT(memcmp(info.ticket, ticket, MGR_TICKET_LEN) == 0);
	CU_ASSERT(mgr_state_ch_connect(&st, b.reg, "c", &info) == slot);
	CU_ASSERT(st.chans[slot].nclients == 1);
	CU_ASSERT(st.sh->nlinks == 1);

	CU_ASSERT(mgr_state_ch_delete(&st, b.reg, "c", &n, &s2) == -EPERM);
	CU_ASSERT(mgr_state_ch_delete(&st, a.reg, "c", &n, &s2) == 0);
	CU_ASSERT(n == 1);
	CU_ASSERT(mgr_state_ch_disconnect(&st, a.reg, slot, info.gen) ==
		  -EACCES);
	CU_ASSERT(mgr_state_ch_disconnect(&st, b.reg, slot, info.gen + 2) ==
		  -ESRCH);
	CU_ASSERT(mgr_state_ch_disconnect(&st, b.reg, slot, info.gen) == 0);
	CU_ASSERT(mgr_state_ch_disconnect(&st, b.reg, slot, info.gen) ==
		  -EACCES);
	CU_ASSERT(mgr_state_take_events(&st, emit, NULL) == 1);
	CU_ASSERT(nevs == 1 && evs[0].ev == MGR_EV_DISCONNECT &&
		  evs[0].regno == b.regno && evs[0].slot == slot &&
		  evs[0].server == a.reg && !strcmp(evs[0].id, "beta"));
	/* Sent, not yet acknowledged: still pending. */
	CU_ASSERT(st.sh->nlinks == 1);
	CU_ASSERT(mgr_state_ack_events(&st, a.reg, slot, gen, evs[0].seq) == 1);
	CU_ASSERT(st.sh->nlinks == 0);
	CU_ASSERT(mgr_state_ch_delete(&st, a.reg, "c", &n, &s2) == 0);
	CU_ASSERT(n == 0);
	CU_ASSERT(!mgr_state_ch_live(&st, slot, gen));
	CU_ASSERT(mgr_state_ch_delete(&st, a.reg, "c", &n, &s2) == -ENOENT);
	CU_ASSERT(st.sh->nchannels == 0);

	/* The table fills up. */
	for (int i = 0; i < (int)st.lay.max_channels; i++) {
		char nm[16];

		snprintf(nm, sizeof(nm), "f%d", i);
		CU_ASSERT(mgr_state_ch_create(&st, a.reg, nm, 0, "", 0, NULL, &gen) >=
			  0);
	}
	CU_ASSERT(mgr_state_ch_create(&st, a.reg, "one-more", 0, "", 0,
				      NULL, &gen) == -ENOSPC);
	/* BYE removes them all. */
	mgr_state_reg_end(&st, a.reg, 1);
	CU_ASSERT(st.sh->nchannels == 0);
	CU_ASSERT(st.sh->nregs == 1);
	teardown();
}

static void test_unclean_end_and_death(void)
{
	struct mgr_reginfo srv, watch, cli, other;
	struct mgr_chinfo info;
	uint32_t gen, wgen;
	int slot, wslot;

	setup();
	CU_ASSERT_FATAL(mgr_state_reg_new(&st, "srv", 1, "", &srv) == 0);
	CU_ASSERT_FATAL(mgr_state_reg_new(&st, "watch", 2, "", &watch) == 0);
	CU_ASSERT_FATAL(mgr_state_reg_new(&st, "cli", 3, "", &cli) == 0);
	CU_ASSERT_FATAL(mgr_state_reg_new(&st, "other", 4, "", &other) == 0);
	slot = mgr_state_ch_create(&st, srv.reg, "s", 0, "", 0, NULL, &gen);
	wslot = mgr_state_ch_create(&st, watch.reg, "w", 0, "", 0, NULL, &wgen);
	CU_ASSERT_FATAL(slot >= 0 && wslot >= 0);
	CU_ASSERT(mgr_state_death_notify(&st, watch.reg, 1) == 0);
	CU_ASSERT(mgr_state_ch_connect(&st, cli.reg, "s", &info) == slot);

	/* cli crashes: DISMISSED to s, DEATH_PROCESS to w. */
	mgr_state_reg_end(&st, cli.reg, 0);
	CU_ASSERT(st.regs[cli.reg].state == REG_DEAD);
	/* An event that cannot be queued stays pending. */
	refuse_emit = 1;
	CU_ASSERT(mgr_state_take_events(&st, emit, NULL) == 0);
	refuse_emit = 0;
	CU_ASSERT(mgr_state_take_events(&st, emit, NULL) == 2);
	CU_ASSERT(mgr_state_take_events(&st, emit, NULL) == 0);
	CU_ASSERT(nevs == 2);
	for (int i = 0; i < nevs; i++) {
		CU_ASSERT(evs[i].regno == cli.regno);
		CU_ASSERT_STRING_EQUAL(evs[i].id, "cli");
		if (evs[i].slot == slot) {
			CU_ASSERT(evs[i].ev == MGR_EV_DISMISSED);
		} else {
			CU_ASSERT(evs[i].slot == wslot &&
				  evs[i].ev == MGR_EV_DEATH_PROCESS);
		}
	}
	/* Kept until every death-notify channel acknowledged it. */
	CU_ASSERT(st.regs[cli.reg].state == REG_DEAD);
	CU_ASSERT(mgr_state_ack_events(&st, watch.reg, wslot, wgen,
				       sent_upto[wslot]) == 0);
	CU_ASSERT(st.regs[cli.reg].state == REG_FREE);

	/* Two deaths in a row arrive in order. */
	nevs = 0;
	{
		struct mgr_reginfo d1, d2;

		CU_ASSERT(mgr_state_reg_new(&st, "d1", 5, "", &d1) == 0);
		CU_ASSERT(mgr_state_reg_new(&st, "d2", 6, "", &d2) == 0);
		mgr_state_reg_end(&st, d2.reg, 0);
		mgr_state_reg_end(&st, d1.reg, 0);
		CU_ASSERT(mgr_state_take_events(&st, emit, NULL) == 2);
		CU_ASSERT(nevs == 2 && evs[0].regno == d2.regno &&
			  evs[1].regno == d1.regno);
		CU_ASSERT(evs[0].seq < evs[1].seq);
		CU_ASSERT(mgr_state_ack_events(&st, watch.reg, wslot, wgen,
					       evs[1].seq) == 0);
		CU_ASSERT(st.regs[d1.reg].state == REG_FREE &&
			  st.regs[d2.reg].state == REG_FREE);
	}
	/* A clean end is no death. */
	nevs = 0;
	mgr_state_reg_end(&st, other.reg, 1);
	CU_ASSERT(mgr_state_take_events(&st, emit, NULL) == 0);
	CU_ASSERT(st.regs[other.reg].state == REG_FREE);
	/* The server's unclean end removes its channel silently. */
	mgr_state_reg_end(&st, srv.reg, 0);
	CU_ASSERT(!mgr_state_ch_live(&st, slot, st.chans[slot].gen - 1));
	teardown();
}

static void test_orphan_resume_expire(void)
{
	struct mgr_reginfo srv, cli, again;
	struct mgr_chinfo info;
	uint32_t gen;
	int slot;

	setup();
	CU_ASSERT_FATAL(mgr_state_reg_new(&st, "srv", 1, "", &srv) == 0);
	CU_ASSERT_FATAL(mgr_state_reg_new(&st, "cli", 2, "", &cli) == 0);
	slot = mgr_state_ch_create(&st, srv.reg, "s", 0, "", 0, NULL, &gen);
	CU_ASSERT_FATAL(slot >= 0);
	CU_ASSERT(mgr_state_ch_connect(&st, cli.reg, "s", &info) == slot);
	give_to_worker1(srv.reg);
	give_to_worker1(cli.reg);

	/* While worker 1 lives, its registrations are not handed over. */
	CU_ASSERT(mgr_state_reg_resume(&st, srv.token, "", &again) == -EBUSY);
	CU_ASSERT(mgr_state_reg_resume(&st, 12345, "", &again) == -ESTALE);
	CU_ASSERT(mgr_state_reg_resume(&st, 0, "", &again) == -EINVAL);

	/* Worker 1 dies: orphaned (housekeeping), resumable. */
	mgr_state_worker_died(&st, 1);
	st.resume_grace_ms = 100000;
	CU_ASSERT(mgr_state_housekeep(&st, mp_time_now_ns()) == 1);
	CU_ASSERT(st.regs[srv.reg].state == REG_ORPHAN);
	CU_ASSERT(st.regs[cli.reg].state == REG_ORPHAN);
	/* Housekeeping runs once per period. */
	CU_ASSERT(mgr_state_housekeep(&st, mp_time_now_ns()) == 0);
	CU_ASSERT(mgr_state_reg_resume(&st, srv.token, "", &again) == 0);
	CU_ASSERT(again.reg == srv.reg && again.regno == srv.regno);
	CU_ASSERT(st.regs[srv.reg].state == REG_LIVE);
	CU_ASSERT(st.regs[srv.reg].worker == 0);

	/* cli never comes back: after the grace, an unclean end. */
	st.resume_grace_ms = 0;
	st.regs[cli.reg].deadline_ns = mp_time_now_ns() - 1;
	CU_ASSERT(mgr_state_housekeep(&st, mp_time_now_ns() + 200000000LL) ==
		  1);
	CU_ASSERT(st.regs[cli.reg].state == REG_FREE);
	CU_ASSERT(mgr_state_take_events(&st, emit, NULL) == 1);
	CU_ASSERT(nevs == 1 && evs[0].ev == MGR_EV_DISMISSED &&
		  evs[0].regno == cli.regno);
	CU_ASSERT(mgr_state_reg_resume(&st, cli.token, "", &again) == -ESTALE);
	teardown();
}

static void test_ring_push_park_release(void)
{
	struct mgr_reginfo srv, cli;
	struct mp_ring_rec meta;
	uint64_t cur;
	uint32_t gen;
	mp_ring_t *ring;
	char buf[64];
	int slot;

	setup();
	CU_ASSERT_FATAL(mgr_state_reg_new(&st, "srv", 1, "", &srv) == 0);
	CU_ASSERT_FATAL(mgr_state_reg_new(&st, "cli", 2, "", &cli) == 0);
	slot = mgr_state_ch_create(&st, srv.reg, "r", 2, "", 0, NULL, &gen);
	CU_ASSERT_FATAL(slot >= 0);
	CU_ASSERT(mgr_state_bsend(&st, cli.reg, slot, gen, 0, 7, "ab", 2) == 0);
	CU_ASSERT(mgr_state_bsend(&st, cli.reg, slot, gen, 0, 8, "cd", 2) == 1);
	CU_ASSERT(mgr_state_bsend(&st, cli.reg, slot, gen, 0, 9, "ef", 2) ==
		  -ETIMEDOUT);
	CU_ASSERT(mgr_state_bsend(&st, cli.reg, slot, gen, 0, 9, buf, 1025) ==
		  -EMSGSIZE);
	CU_ASSERT(mgr_state_bsend(&st, cli.reg, slot, gen + 2, 0, 9, "x", 1) ==
		  -ESRCH);
	/* The consumer wake-up was for ourselves. */
	CU_ASSERT(mgr_state_take_hints(&st) & MGR_WAKE_DATA);

	ring = mgr_state_ring(&st, slot, gen);
	CU_ASSERT_FATAL(ring != NULL);
	cur = mp_ring_tail(ring);
	CU_ASSERT(mp_ring_peek(ring, &cur, &meta, buf, sizeof(buf), 0) == 2);
	CU_ASSERT(meta.type == 7 && meta.sender == cli.regno &&
		  !strcmp(meta.id, "cli") && meta.seq == 0);
	/* Park (as worker 1 would) and release: worker 1 is woken. */
	st.self = 1;
	mgr_state_park(&st, slot);
	st.self = 0;
	CU_ASSERT(st.chans[slot].parked == 2);
	CU_ASSERT(mgr_state_release(&st, slot, gen, cur, 1) == 0);
	CU_ASSERT(st.chans[slot].parked == 0);
	CU_ASSERT(st.workers[1].hints & MGR_WAKE_ROOM);
	CU_ASSERT(st.workers[0].delivered == 1);
	CU_ASSERT(mgr_state_bsend(&st, cli.reg, slot, gen, 0, 9, "ef", 2) == 1);
	/* Deleting the channel wakes parked senders so they see ESRCH. */
	st.workers[1].hints = 0;
	st.self = 1;
	mgr_state_park(&st, slot);
	st.self = 0;
	mgr_state_reg_end(&st, srv.reg, 1);
	CU_ASSERT(st.workers[1].hints & MGR_WAKE_ROOM);
	CU_ASSERT(mgr_state_bsend(&st, cli.reg, slot, gen, 0, 9, "ef", 2) ==
		  -ESRCH);
	CU_ASSERT(mgr_state_ring(&st, slot, gen) == NULL);
	teardown();
}

/* Events leave the segment only when acknowledged; a new connection of the
 * server (after a resume) is offered every unacknowledged one again, with
 * its number, in order; a channel whose output is full waits. */
static void test_events_acknowledged(void)
{
	struct mgr_reginfo srv, a, b, c;
	struct mgr_chinfo info;
	uint64_t seq[3];
	uint32_t gen;
	int slot;

	setup();
	CU_ASSERT_FATAL(mgr_state_reg_new(&st, "srv", 1, "", &srv) == 0);
	CU_ASSERT_FATAL(mgr_state_reg_new(&st, "a", 2, "", &a) == 0);
	CU_ASSERT_FATAL(mgr_state_reg_new(&st, "b", 3, "", &b) == 0);
	CU_ASSERT_FATAL(mgr_state_reg_new(&st, "c", 4, "", &c) == 0);
	slot = mgr_state_ch_create(&st, srv.reg, "e", 0, "", 0, NULL, &gen);
	CU_ASSERT_FATAL(slot >= 0 && slot < 16);
	CU_ASSERT(mgr_state_death_notify(&st, srv.reg, 1) == 0);
	CU_ASSERT(mgr_state_ch_connect(&st, a.reg, "e", &info) == slot);
	CU_ASSERT(mgr_state_ch_connect(&st, b.reg, "e", &info) == slot);
	/* DISCONNECT (a), then DISMISSED and DEATH_PROCESS (b). */
	CU_ASSERT(mgr_state_ch_disconnect(&st, a.reg, slot, gen) == 0);
	mgr_state_reg_end(&st, b.reg, 0);
	CU_ASSERT(mgr_state_take_events(&st, emit, NULL) == 3);
	CU_ASSERT_FATAL(nevs == 3);
	CU_ASSERT(evs[0].ev == MGR_EV_DISCONNECT && evs[0].regno == a.regno);
	CU_ASSERT(evs[1].ev == MGR_EV_DISMISSED && evs[1].regno == b.regno);
	CU_ASSERT(evs[2].ev == MGR_EV_DEATH_PROCESS && evs[2].regno == b.regno);
	CU_ASSERT(evs[0].seq < evs[1].seq && evs[1].seq < evs[2].seq);
	for (int i = 0; i < 3; i++)
		seq[i] = evs[i].seq;
	/* Sent once per connection. */
	CU_ASSERT(mgr_state_take_events(&st, emit, NULL) == 0);
	/* A new connection (resume): all again, same numbers, in order. */
	memset(sent_upto, 0, sizeof(sent_upto));
	nevs = 0;
	CU_ASSERT(mgr_state_take_events(&st, emit, NULL) == 3);
	for (int i = 0; i < 3 && i < nevs; i++)
		CU_ASSERT(evs[i].seq == seq[i]);
	/* Output full after one: the later ones wait, in order. */
	memset(sent_upto, 0, sizeof(sent_upto));
	nevs = 0;
	emit_budget = 1;
	CU_ASSERT(mgr_state_take_events(&st, emit, NULL) == 1);
	CU_ASSERT(nevs == 1 && evs[0].seq == seq[0]);
	emit_budget = -1;
	CU_ASSERT(mgr_state_take_events(&st, emit, NULL) == 2);
	CU_ASSERT(nevs == 3 && evs[1].seq == seq[1] && evs[2].seq == seq[2]);
	/* Acknowledgements: only the creator, only a live channel. */
	CU_ASSERT(mgr_state_ack_events(&st, a.reg, slot, gen, seq[2]) ==
		  -EACCES);
	CU_ASSERT(mgr_state_ack_events(&st, srv.reg, slot, gen + 2, seq[2]) ==
		  -ESRCH);
	/* Up to the second: both link events leave, the death stays. */
	CU_ASSERT(st.sh->nlinks == 2);
	CU_ASSERT(mgr_state_ack_events(&st, srv.reg, slot, gen, seq[1]) == 2);
	CU_ASSERT(st.sh->nlinks == 0);
	CU_ASSERT(st.regs[b.reg].state == REG_DEAD);
	memset(sent_upto, 0, sizeof(sent_upto));
	nevs = 0;
	CU_ASSERT(mgr_state_take_events(&st, emit, NULL) == 1);
	CU_ASSERT(nevs == 1 && evs[0].seq == seq[2] &&
		  evs[0].ev == MGR_EV_DEATH_PROCESS);
	/* A number never given is taken as the last one. */
	CU_ASSERT(mgr_state_ack_events(&st, srv.reg, slot, gen, ~0ULL) == 0);
	CU_ASSERT(st.regs[b.reg].state == REG_FREE);
	CU_ASSERT(st.chans[slot].ev_acked == st.sh->ev_seq);
	/* A later event gets a larger number. */
	CU_ASSERT(mgr_state_ch_connect(&st, c.reg, "e", &info) == slot);
	mgr_state_reg_end(&st, c.reg, 1);
	nevs = 0;
	CU_ASSERT(mgr_state_take_events(&st, emit, NULL) == 1);
	CU_ASSERT(nevs == 1 && evs[0].seq > seq[2] &&
		  evs[0].ev == MGR_EV_DISCONNECT);
	teardown();
}

/* A BSEND re-sent with the request id of one already queued (its worker
 * died before the answer left) is answered as before and not queued. */
static void test_bsend_resent(void)
{
	struct mgr_reginfo srv, cli, other;
	mp_ring_t *ring;
	uint32_t gen;
	int slot;

	setup();
	CU_ASSERT_FATAL(mgr_state_reg_new(&st, "srv", 1, "", &srv) == 0);
	CU_ASSERT_FATAL(mgr_state_reg_new(&st, "cli", 2, "", &cli) == 0);
	CU_ASSERT_FATAL(mgr_state_reg_new(&st, "other", 3, "", &other) == 0);
	slot = mgr_state_ch_create(&st, srv.reg, "d", 4, "", 0, NULL, &gen);
	CU_ASSERT_FATAL(slot >= 0);
	ring = mgr_state_ring(&st, slot, gen);
	CU_ASSERT_FATAL(ring != NULL);
	CU_ASSERT(mgr_state_bsend(&st, cli.reg, slot, gen, 5, 1, "a", 1) == 0);
	CU_ASSERT(mgr_state_bsend(&st, cli.reg, slot, gen, 6, 1, "b", 1) == 1);
	CU_ASSERT(st.regs[cli.reg].bsend_reqid == 6);
	/* Again: the same answer, nothing queued. */
	CU_ASSERT(mgr_state_bsend(&st, cli.reg, slot, gen, 6, 1, "b", 1) == 1);
	CU_ASSERT(mp_ring_count(ring) == 2);
	CU_ASSERT(mgr_state_bsend(&st, cli.reg, slot, gen, 5, 1, "a", 1) >= 0);
	CU_ASSERT(mp_ring_count(ring) == 2);
	/* Ids are per registration. */
	CU_ASSERT(mgr_state_bsend(&st, other.reg, slot, gen, 6, 1, "o", 1) ==
		  2);
	CU_ASSERT(mp_ring_count(ring) == 3);
	/* Serial order across the wrap of the 32-bit id. */
	st.regs[cli.reg].bsend_reqid = 0xfffffffeu;
	st.regs[cli.reg].bsend_queued = 7;
	CU_ASSERT(mgr_state_bsend(&st, cli.reg, slot, gen, 0xfffffffeu, 1, "c",
				  1) == 7);
	CU_ASSERT(mgr_state_bsend(&st, cli.reg, slot, gen, 0xfffffff0u, 1, "c",
				  1) >= 0);
	CU_ASSERT(mp_ring_count(ring) == 3);
	CU_ASSERT(mgr_state_bsend(&st, cli.reg, slot, gen, 1, 1, "d", 1) == 3);
	CU_ASSERT(mp_ring_count(ring) == 4);
	CU_ASSERT(mgr_state_bsend(&st, cli.reg, slot, gen, 1, 1, "d", 1) ==
		  3); /* full ring: still answered */
	CU_ASSERT(mgr_state_bsend(&st, cli.reg, slot, gen, 2, 1, "e", 1) ==
		  -ETIMEDOUT); /* newer: really pushed (and full) */
	/* reqid 0 is never taken for a repeat. */
	CU_ASSERT(mgr_state_bsend(&st, cli.reg, slot, gen, 0, 1, "e", 1) ==
		  -ETIMEDOUT);
	CU_ASSERT(mp_ring_count(ring) == 4);
	/* A fresh registration starts with nothing recorded. */
	mgr_state_reg_end(&st, other.reg, 1);
	CU_ASSERT(mgr_state_reg_new(&st, "other", 3, "", &other) == 0);
	CU_ASSERT(st.regs[other.reg].bsend_reqid == 0);
	teardown();
}

static void test_repair(void)
{
	struct mgr_reginfo a, b;
	struct mgr_chinfo info;
	uint32_t gen, gen2;
	int slot, slot2, half, status;
	pid_t pid;

	setup();
	CU_ASSERT_FATAL(mgr_state_reg_new(&st, "a", 1, "", &a) == 0);
	CU_ASSERT_FATAL(mgr_state_reg_new(&st, "b", 2, "", &b) == 0);
	slot = mgr_state_ch_create(&st, a.reg, "keep", 0, "", 0, NULL, &gen);
	slot2 = mgr_state_ch_create(&st, a.reg, "lose", 0, "", 0, NULL, &gen2);
	CU_ASSERT_FATAL(slot >= 0 && slot2 >= 0);
	CU_ASSERT(mgr_state_ch_connect(&st, b.reg, "keep", &info) == slot);
	CU_ASSERT(mgr_state_ch_connect(&st, b.reg, "lose", &info) == slot2);

	/* Damage, as a worker killed half-way would leave it:
	 *  - a name inserted whose record never became live;
	 *  - a live record whose name is gone;
	 *  - wrong derived counters. */
	half = mp_chtab_insert(&st.chtab, "half");
	CU_ASSERT_FATAL(half >= 0);
	mp_chtab_remove(&st.chtab, "lose");
	st.sh->nchannels = 99;
	st.sh->nlinks = 0;
	st.chans[slot].nclients = 7;

	/* A process dies holding the lock: the next locker repairs. */
	pid = fork();
	if (pid == 0) {
		mgr_state_lock(&st);
		_exit(0);
	}
	CU_ASSERT(waitpid(pid, &status, 0) == pid);
	CU_ASSERT(mgr_state_lock(&st) == 0);
	mgr_state_unlock(&st);
	CU_ASSERT(st.repairs == 1);

	CU_ASSERT(mp_chtab_lookup(&st.chtab, "half") == -ENOENT);
	CU_ASSERT(mgr_state_ch_live(&st, slot, gen));
	CU_ASSERT(!mgr_state_ch_live(&st, slot2, gen2));
	CU_ASSERT(st.sh->nchannels == 1);
	CU_ASSERT(st.sh->nlinks == 1);
	CU_ASSERT(st.chans[slot].nclients == 1);
	CU_ASSERT(st.sh->nregs == 2);
	/* Names work again. */
	CU_ASSERT(mgr_state_ch_create(&st, b.reg, "lose", 0, "", 0, NULL, &gen2) >=
		  0);
	CU_ASSERT(mgr_state_ch_create(&st, b.reg, "half", 0, "", 0, NULL, &gen2) >=
		  0);
	teardown();
}

static void test_settings_seqlock(void)
{
	int64_t vals[MGR_CFG_RELOADABLE];
	uint32_t gen = 0;

	setup();
	CU_ASSERT(mgr_state_read_settings(&st, &gen, vals) == 1);
	CU_ASSERT(mgr_state_read_settings(&st, &gen, vals) == 0);
	cfg.default_buffered = 33;
	mgr_state_publish_settings(&st, &cfg);
	CU_ASSERT(mgr_state_read_settings(&st, &gen, vals) == 1);
	{
		struct mgr_config c2;

		mgr_config_defaults(&c2);
		CU_ASSERT(mgr_config_import(&c2, vals) == 0);
		CU_ASSERT(c2.default_buffered == 33);
	}
	/* Every worker was told. */
	CU_ASSERT(st.workers[1].hints & MGR_WAKE_RELOAD);
	teardown();
}

static const struct mp_test_case tests[] = {
	{ "registrations, channels, links, DISCONNECT", test_regs_and_channels },
	{ "unclean end: DISMISSED, DEATH_PROCESS in order",
	  test_unclean_end_and_death },
	{ "orphan by epoch, resume, expiry after grace",
	  test_orphan_resume_expire },
	{ "ring push, park, release wakes parked", test_ring_push_park_release },
	{ "events acknowledged: kept, offered again in order",
	  test_events_acknowledged },
	{ "BSEND re-sent with its request id: not queued twice",
	  test_bsend_resent },
	{ "lock holder dies: repair of half-done records", test_repair },
	{ "settings seqlock and reload hint", test_settings_seqlock },
	MP_TEST_END
};

int main(void)
{
	mp_test_init("test_mgr_state", 60);
	mgr_log_setup(MGR_LOG_ERROR, MGR_LOG_STDERR);
	return mp_test_main("mgr_state", tests);
}
