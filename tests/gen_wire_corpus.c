/*
 * gen_wire_corpus — writes the seed corpus of fuzz_wire (tests/corpus/wire):
 * one valid frame of every operation, a few streams of several frames, and
 * a few malformed frames.  Not part of the build; run it by hand after a
 * change to the frame format:
 *
 *   cc -I lib -I <builddir> tests/gen_wire_corpus.c lib/mp_wire.c \
 *      -o /tmp/gen && /tmp/gen tests/corpus/wire
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_wire.h"

static const char *dir;
static uint8_t data[300];

static void put(const char *name, const uint8_t *b, size_t n)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f || fwrite(b, 1, n, f) != n || fclose(f) != 0) {
		perror(path);
		exit(1);
	}
}

/* A realistic frame of op; variant picks small or larger values. */
static void sample(struct mp_wire_msg *m, unsigned op, int variant)
{
	memset(m, 0, sizeof(*m));
	m->op = (uint8_t)op;
	m->reqid = 1 + op;
	m->a = variant ? -1 : 3;
	m->b = variant ? 0x7fffffff : 12;
	m->c = variant ? 5000 : 2;
	m->u = variant ? 0xfedcba9876543210ull : 42;
	strcpy(m->name, variant ? "a.rather.long.channel.name.for.seed" : "ch");
	strcpy(m->id, variant ? "procname" : "p1");
	strcpy(m->addr, variant ? "10.0.0.200:65535" : "127.0.0.1:4000");
	if (op == MP_OP_CH_CONNECT)
		m->flags = MP_WIRE_F_LOCATE;
	m->data = data;
	m->datalen = variant ? sizeof(data) : 5;
}

static size_t enc(const struct mp_wire_msg *m, uint8_t *b, size_t size)
{
	int n = mp_wire_encode(m, b, size);

	if (n < 0) {
		fprintf(stderr, "encode %s: %d\n", mp_wire_op_name(m->op), n);
		exit(1);
	}
	return (size_t)n;
}

int main(int argc, char **argv)
{
	static uint8_t b[8192];
	struct mp_wire_msg m;
	char name[64];
	size_t n, off;

	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	dir = argv[1];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7);

	/* one valid frame of every operation */
	for (unsigned op = 1; op < MP_OP_MAX_; op++) {
		char lower[32];

		snprintf(lower, sizeof(lower), "%s", mp_wire_op_name(op));
		for (char *p = lower; *p; p++)
			*p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
		sample(&m, op, 0);
		n = enc(&m, b, sizeof(b));
		snprintf(name, sizeof(name), "op-%s", lower);
		put(name, b, n);
	}

	/* streams: every op back to back; manager session; direct session */
	off = 0;
	for (unsigned op = 1; op < MP_OP_MAX_; op++) {
		sample(&m, op, 1);
		off += enc(&m, b + off, sizeof(b) - off);
	}
	put("multi-all-ops", b, off);
	{
		static const unsigned mgr[] = {MP_OP_HELLO,	MP_OP_WELCOME,
					       MP_OP_CH_CREATE, MP_OP_RESULT,
					       MP_OP_BDELIVER,	MP_OP_BACK,
					       MP_OP_BYE};
		static const unsigned cli[] = {
			MP_OP_HELLO, MP_OP_SEND, MP_OP_SEND, MP_OP_CANCEL,
			MP_OP_REPLY, MP_OP_PING, MP_OP_PONG};

		off = 0;
		for (size_t i = 0; i < 7; i++) {
			sample(&m, mgr[i], (int)(i & 1));
			off += enc(&m, b + off, sizeof(b) - off);
		}
		put("multi-manager", b, off);
		off = 0;
		for (size_t i = 0; i < 7; i++) {
			sample(&m, cli[i], (int)(i & 1));
			off += enc(&m, b + off, sizeof(b) - off);
		}
		/* ends with half a frame: "need more" */
		sample(&m, MP_OP_SEND, 0);
		off += enc(&m, b + off, sizeof(b) - off) - 3;
		put("multi-direct-partial", b, off);
	}

	/* malformed */
	sample(&m, MP_OP_PING, 0);
	n = enc(&m, b, sizeof(b));
	b[0] = 2;
	put("bad-version", b, n);
	b[0] = MP_WIRE_VERSION;
	b[1] = MP_OP_MAX_;
	put("bad-op", b, n);
	b[1] = MP_OP_PING;
	b[8] = b[9] = b[10] = b[11] = 0xff;
	put("bad-len-huge", b, n);
	b[8] = b[9] = b[10] = 0;
	b[11] = 2;
	b[12] = 'x';
	b[13] = 'y';
	put("bad-trailing", b, n + 2);

	sample(&m, MP_OP_CH_DELETE, 0);
	n = enc(&m, b, sizeof(b));
	b[12] = MP_WIRE_NAME_MAX + 1;
	put("bad-name-long", b, n);
	b[12] = 2;
	b[14] = 0;
	put("bad-name-nul", b, n);

	sample(&m, MP_OP_EVENT, 0);
	n = enc(&m, b, sizeof(b));
	b[11]--; /* len cuts the id short */
	put("bad-id-short", b, n - 1);
	return 0;
}
