/*
 * gen_mgr_corpus — writes the seed corpus of fuzz_mgr (tests/corpus/mgr):
 * valid library sessions (register, create, connect, buffered sends up to
 * a full ring and a parked sender, acknowledgements, LOCATE, events of a
 * dead client, resume attempts, clean ends, channel tickets of every
 * size), the same split at awkward
 * places, and a few bad streams.  Channel handles are the table slots the
 * manager picks, which a script cannot know: BSEND/BACK/CH_DISCONNECT go
 * to every slot of the fuzz manager's table (8).  Not part of the build;
 * run by hand after a change to the protocol or the input format:
 *
 *   cc -I lib -I tests -I <builddir> tests/gen_mgr_corpus.c lib/mp_wire.c \
 *      -o /tmp/gen && /tmp/gen tests/corpus/mgr
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_mgrscript.h"

#define SLOTS 8

static const char *dir;
static struct mp_script s;

static void save(const char *name)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f || fwrite(s.p, 1, s.len, f) != s.len || fclose(f) != 0) {
		perror(path);
		exit(1);
	}
	s.len = 0;
}

static uint32_t rq = 1;
static uint8_t ticket[40] = "0123456789abcdef0123456789abcdef-bad";
static uint32_t ticket_len = 32;

static void hello(int conn, const char *id, uint64_t token)
{
	struct mp_wire_msg m = mp_script_msg(MP_OP_HELLO, rq++);

	snprintf(m.id, sizeof(m.id), "%s", id);
	m.a = 1000 + conn;
	m.u = token;
	mp_script_frame(&s, conn, &m, 0);
}

static void named(int conn, unsigned op, const char *name, int32_t a,
		  uint16_t flags)
{
	struct mp_wire_msg m = mp_script_msg(op, rq++);

	snprintf(m.name, sizeof(m.name), "%s", name);
	m.a = a;
	m.flags = flags;
	if (op == MP_OP_CH_CREATE) {
		snprintf(m.addr, sizeof(m.addr), "127.0.0.1:4000/%d", conn);
		m.u = 77;
		/* The channel ticket a library always sends (handed out
		 * again in CH_INFO); a few seeds send none or a bad one. */
		m.data = ticket;
		m.datalen = ticket_len;
	}
	mp_script_frame(&s, conn, &m, 0);
}

static void simple(int conn, unsigned op, int32_t a, int32_t b, int32_t c,
		   uint64_t u, uint16_t flags, size_t split)
{
	struct mp_wire_msg m = mp_script_msg(op, rq++);

	m.a = a;
	m.b = b;
	m.c = c;
	m.u = u;
	m.flags = flags;
	mp_script_frame(&s, conn, &m, split);
}

static void bsend_all(int conn, int32_t type, int32_t wait_ms, size_t len)
{
	static uint8_t data[1024];

	for (int slot = 0; slot < SLOTS; slot++) {
		struct mp_wire_msg m = mp_script_msg(MP_OP_BSEND, rq++);

		for (size_t i = 0; i < len; i++)
			data[i] = (uint8_t)(i + slot);
		m.a = type;
		m.b = slot;
		m.c = wait_ms;
		m.data = data;
		m.datalen = (uint32_t)len;
		mp_script_frame(&s, conn, &m, 0);
	}
}

static void back_all(int conn, uint64_t upto, uint16_t flags)
{
	for (int slot = 0; slot < SLOTS; slot++)
		simple(conn, MP_OP_BACK, 0, slot, 0, upto, flags, 0);
}

int main(int argc, char **argv)
{
	uint8_t raw[64];

	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	dir = argv[1];

	hello(0, "solo", 0);
	save("hello");

	hello(0, "srv", 0);
	named(0, MP_OP_CH_CREATE, "alpha", 4, 0);
	simple(0, MP_OP_PING, 0, 0, 0, 0, 0, 0);
	named(0, MP_OP_CH_DELETE, "alpha", 0, 0);
	simple(0, MP_OP_BYE, 0, 0, 0, 0, 0, 0);
	save("create-delete-bye");

	/* A server and a client: buffered sends delivered and acknowledged. */
	hello(0, "srv", 0);
	named(0, MP_OP_CH_CREATE, "alpha", 4, 0);
	hello(1, "cli", 0);
	named(1, MP_OP_CH_CONNECT, "alpha", 0, 0);
	bsend_all(1, 5, 0, 16);
	back_all(0, 1, 0);
	bsend_all(1, 6, 0, 100);
	back_all(0, 2, 0);
	simple(1, MP_OP_CH_DISCONNECT, 0, 0, 0, 0, 0, 0);
	simple(1, MP_OP_CH_DISCONNECT, 0, 1, 0, 0, 0, 0);
	back_all(0, 1, MP_WIRE_F_EVENT);
	simple(1, MP_OP_BYE, 0, 0, 0, 0, 0, 0);
	named(0, MP_OP_CH_DELETE, "alpha", 0, 0);
	save("bsend-back");

	/* The ring fills (4 records): the sender parks, a BACK frees room. */
	hello(0, "srv", 0);
	named(0, MP_OP_CH_CREATE, "full", 2, 0);
	hello(1, "cli", 0);
	named(1, MP_OP_CH_CONNECT, "full", 0, 0);
	for (int i = 0; i < 4; i++)
		bsend_all(1, i, -1, 8);
	back_all(0, 2, 0);
	mp_script_ctl(&s, 0, MP_SCRIPT_TICK);
	back_all(0, 6, 0);
	mp_script_ctl(&s, 1, MP_SCRIPT_TICK);
	save("bsend-park");

	/* A full ring with a zero wait: ETIMEDOUT at once; the sender sends
	 * to its own channel and acknowledges behind a parked send. */
	hello(0, "self", 0);
	named(0, MP_OP_CH_CREATE, "own", 1, 0);
	for (int i = 0; i < 3; i++)
		bsend_all(0, i, 0, 4);
	bsend_all(0, 9, 500, 4);
	back_all(0, 3, 0);
	save("bsend-own-full");

	/* LOCATE: the client waits for a name that appears later. */
	hello(1, "cli", 0);
	named(1, MP_OP_CH_CONNECT, "later", -1, MP_WIRE_F_LOCATE);
	named(1, MP_OP_CH_CONNECT, "never", 0, MP_WIRE_F_LOCATE);
	named(1, MP_OP_CH_CONNECT, "soon", 10, MP_WIRE_F_LOCATE);
	hello(0, "srv", 0);
	named(0, MP_OP_CH_CREATE, "later", 0, 0);
	mp_script_ctl(&s, 0, MP_SCRIPT_TICK);
	save("locate");

	/* Death notification: a client dies, its server hears of it. */
	hello(0, "srv", 0);
	simple(0, MP_OP_DEATH_NOTIFY, 1, 0, 0, 0, 0, 0);
	named(0, MP_OP_CH_CREATE, "watch", 0, 0);
	hello(1, "cli", 0);
	named(1, MP_OP_CH_CONNECT, "watch", 0, 0);
	hello(2, "other", 0);
	named(2, MP_OP_CH_CREATE, "watch2", 0, 0);
	simple(2, MP_OP_DEATH_NOTIFY, 1, 0, 0, 0, 0, 0);
	mp_script_ctl(&s, 1, MP_SCRIPT_RESET);
	mp_script_ctl(&s, 0, MP_SCRIPT_TICK);
	back_all(0, 1, MP_WIRE_F_EVENT);
	back_all(2, 1, MP_WIRE_F_EVENT);
	mp_script_ctl(&s, 0, MP_SCRIPT_EOF);
	save("death-events");

	/* Resume attempts: an unknown token (ESTALE), then a new one. */
	hello(0, "res", 0x1234567890abcdefULL);
	hello(0, "res", 0);
	hello(1, "dup", 0);
	hello(1, "dup", 0);
	save("resume-stale");

	/* Frames split at every awkward place. */
	hello(0, "split", 0);
	for (size_t cut = 1; cut < 14; cut += 3)
		simple(0, MP_OP_PING, 0, 0, 0, 0, 0, cut);
	simple(0, MP_OP_DEATH_NOTIFY, 1, 0, 0, 0, 0, 13);
	simple(0, MP_OP_PONG, 0, 0, 0, 0, 0, 5);
	simple(0, MP_OP_BYE, 0, 0, 0, 0, 0, 2);
	save("split");

	/* Out of memory at the n-th allocation of a busy session. */
	for (int nth = 1; nth <= 9; nth += 2) {
		char fname[32];

		mp_script_alloc(&s, (uint8_t)nth);
		hello(0, "srv", 0);
		named(0, MP_OP_CH_CREATE, "oom", 2, 0);
		hello(1, "cli", 0);
		named(1, MP_OP_CH_CONNECT, "oom", 0, 0);
		named(1, MP_OP_CH_CONNECT, "oom-later", 50, MP_WIRE_F_LOCATE);
		bsend_all(1, 1, 0, 300);
		back_all(0, 1, 0);
		named(0, MP_OP_CH_CREATE, "oom-later", 2, 0);
		snprintf(fname, sizeof(fname), "alloc-fail-%d", nth);
		save(fname);
	}

	/* Channel tickets: none (a raw server: CH_INFO carries none), then
	 * a wrong length (EINVAL, nothing created), then a good one again. */
	hello(0, "tix", 0);
	ticket_len = 0;
	named(0, MP_OP_CH_CREATE, "bare", 0, 0);
	ticket_len = 33;
	named(0, MP_OP_CH_CREATE, "odd", 0, 0);
	ticket_len = 32;
	named(0, MP_OP_CH_CREATE, "good", 0, 0);
	hello(1, "cli", 0);
	named(1, MP_OP_CH_CONNECT, "bare", 0, 0);
	named(1, MP_OP_CH_CONNECT, "odd", 0, 0);
	named(1, MP_OP_CH_CONNECT, "good", 0, 0);
	save("create-tickets");

	/* Bad streams: not HELLO first; a manager-bound SEND; a bad version;
	 * a BSEND over max_message_size (skipped, answered EMSGSIZE). */
	simple(0, MP_OP_PING, 0, 0, 0, 0, 0, 0);
	save("bad-first");
	hello(0, "bad", 0);
	simple(0, MP_OP_SEND, 0, 0, 0, 0, 0, 0);
	save("bad-send");
	hello(0, "bad", 0);
	memset(raw, 0, sizeof(raw));
	raw[0] = 9;
	raw[1] = MP_OP_PING;
	mp_script_data(&s, 0, raw, 12);
	save("bad-version");
	hello(0, "big", 0);
	memset(raw, 0, sizeof(raw));
	raw[0] = MP_WIRE_VERSION;
	raw[1] = MP_OP_BSEND;
	raw[7] = 9;                       /* reqid 9 */
	raw[10] = 0x20;                   /* length 8192 */
	mp_script_data(&s, 0, raw, 12);
	memset(raw, 0, sizeof(raw));
	for (int i = 0; i < 8192 / 64; i++)
		mp_script_data(&s, 0, raw, 64);
	simple(0, MP_OP_PING, 0, 0, 0, 0, 0, 0);
	save("bsend-too-big");
	return 0;
}
