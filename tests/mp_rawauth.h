/*
 * mp_rawauth — a raw peer of a channel's server for the tests: look the
 * channel up at the manager like a library would (its port and ticket),
 * and run the direct link's proof (doc/protocol.md, "Direct link
 * authentication") by hand, so that tests can also send a wrong proof,
 * none, or a recorded one again.  Frames are built with the codec and
 * the proofs with lib/mp_auth.h: link with libmpauth and libcrypto.
 *
 * The server only answers while its program is in messip_receive: when
 * that program is the test itself, pass a pump that lets it run (it is
 * called between polls); NULL otherwise.
 */
#ifndef MP_RAWAUTH_H
#define MP_RAWAUTH_H

#include <errno.h>
#include <stdio.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <time.h>

#include "mp_auth.h"
#include "mp_mgrproc.h"
#include "mp_wire.h"

#define RAWAUTH_POLL_MS 20

typedef void (*rawauth_pump_fn)(void *arg);

static inline int64_t rawauth_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Send one frame on a blocking socket: 0 or -EPIPE. */
static inline int rawauth_send(int fd, const struct mp_wire_msg *m)
{
	uint8_t buf[MP_WIRE_HDR_SIZE + MP_WIRE_FIXED_MAX + 256];
	int n = mp_wire_encode(m, buf, sizeof(buf));

	return n > 0 && write(fd, buf, (size_t)n) == n ? 0 : -EPIPE;
}

/* Send HELLO reqid name id (name empty: to a manager).  0 or -EPIPE. */
static inline int rawauth_hello(int fd, uint32_t reqid, const char *name,
				const char *id)
{
	struct mp_wire_msg m;

	memset(&m, 0, sizeof(m));
	m.op = MP_OP_HELLO;
	m.reqid = reqid;
	snprintf(m.name, sizeof(m.name), "%s", name);
	snprintf(m.id, sizeof(m.id), "%s", id);
	return rawauth_send(fd, &m);
}

/*
 * Read exactly one frame (byte by byte: never a byte past it) within
 * timeout_ms; its data (at most 64 bytes) is copied into dbuf and m->data
 * points there.  0, -ETIMEDOUT, -EPIPE (closed), -EPROTO.
 */
static inline int rawauth_recv(int fd, struct mp_wire_msg *m, uint8_t *dbuf,
			       int timeout_ms, rawauth_pump_fn pump, void *arg)
{
	uint8_t buf[MP_WIRE_HDR_SIZE + MP_WIRE_FIXED_MAX + 64];
	int64_t end = rawauth_now_ms() + timeout_ms;
	size_t have = 0;

	while (have < sizeof(buf)) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int n = mp_wire_decode(buf, have, 64, m);
		ssize_t r;

		if (n > 0) {
			if (m->datalen)
				memcpy(dbuf, m->data, m->datalen);
			m->data = dbuf;
			return 0;
		}
		if (n < 0)
			return -EPROTO;
		if (pump)
			pump(arg);
		if (poll(&p, 1, pump ? 0 : RAWAUTH_POLL_MS) == 0) {
			if (rawauth_now_ms() >= end)
				return -ETIMEDOUT;
			continue;
		}
		r = read(fd, buf + have, 1);
		if (r <= 0)
			return -EPIPE;
		have += (size_t)r;
	}
	return -EPROTO;
}

/*
 * Ask the manager at mgr_port for channel name, as a library would (a
 * registration that then ends: the server sees it DISMISSED).  Returns
 * the server's port with its ticket in ticket[MP_AUTH_NONCE], or -1.
 */
static inline int rawauth_locate(int mgr_port, const char *name,
				 uint8_t *ticket)
{
	struct mp_wire_msg m;
	uint8_t d[64];
	int fd = mp_tcp_connect_local(mgr_port), port = -1;
	char *colon;

	if (fd < 0)
		return -1;
	if (rawauth_hello(fd, 1, "", "raw") == 0 &&
	    rawauth_recv(fd, &m, d, 2000, NULL, NULL) == 0 &&
	    m.op == MP_OP_WELCOME && m.a == 0) {
		memset(&m, 0, sizeof(m));
		m.op = MP_OP_CH_CONNECT;
		m.reqid = 2;
		snprintf(m.name, sizeof(m.name), "%s", name);
		if (rawauth_send(fd, &m) == 0 &&
		    rawauth_recv(fd, &m, d, 2000, NULL, NULL) == 0 &&
		    m.op == MP_OP_CH_INFO && m.a == 0 &&
		    m.datalen == MP_AUTH_NONCE &&
		    (colon = strrchr(m.addr, ':'))) {
			port = atoi(colon + 1);
			memcpy(ticket, d, MP_AUTH_NONCE);
		}
	}
	close(fd);
	return port;
}

/*
 * The prover's side on a fresh connection fd: wait for the server's
 * CHALLENGE, answer AUTH keyed with ticket (its payload, nonce then
 * proof, is copied into sent[64] when not NULL: a recording), and check
 * the answer.  With replay (64 bytes), that payload is sent instead of a
 * fresh one.  0 (accepted, and the server's proof is right), -EACCES
 * (AUTH a=EACCES), -EBADMSG (accepted but the server's proof is wrong),
 * -EPIPE (closed without an answer), -ETIMEDOUT, -EPROTO.
 */
static inline int rawauth_prove(int fd, const uint8_t *ticket,
				const uint8_t *replay, uint8_t *sent,
				rawauth_pump_fn pump, void *arg)
{
	struct mp_auth_key key;
	uint8_t ns[MP_AUTH_NONCE], pay[MP_AUTH_NONCE + MP_AUTH_MAC], d[64];
	struct mp_wire_msg m;
	int rc;

	rc = rawauth_recv(fd, &m, d, 5000, pump, arg);
	if (rc < 0)
		return rc;
	if (m.op != MP_OP_CHALLENGE || m.datalen != MP_AUTH_NONCE)
		return -EPROTO;
	memcpy(ns, d, MP_AUTH_NONCE);
	if (mp_auth_key_set(&key, ticket, MP_AUTH_NONCE) < 0)
		return -EPROTO;
	if (replay) {
		memcpy(pay, replay, sizeof(pay));
	} else if (mp_auth_nonce(pay, MP_AUTH_NONCE) < 0 ||
		   mp_auth_proof(&key, MP_AUTH_CLIENT, ns, pay,
				 pay + MP_AUTH_NONCE) < 0) {
		return -EPROTO;
	}
	if (sent)
		memcpy(sent, pay, sizeof(pay));
	memset(&m, 0, sizeof(m));
	m.op = MP_OP_AUTH;
	m.reqid = 1;
	m.data = pay;
	m.datalen = sizeof(pay);
	rc = rawauth_send(fd, &m);
	if (rc == 0)
		rc = rawauth_recv(fd, &m, d, 5000, pump, arg);
	if (rc == 0 && m.op != MP_OP_AUTH)
		rc = -EPROTO;
	if (rc == 0 && m.a)
		rc = m.a == EACCES ? -EACCES : -EPROTO;
	if (rc == 0 &&
	    mp_auth_check(&key, MP_AUTH_SERVER, ns, pay, m.data, m.datalen) < 0)
		rc = -EBADMSG;
	mp_auth_key_clear(&key);
	return rc;
}

#endif
