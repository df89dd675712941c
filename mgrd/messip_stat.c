/*
 * messip-stat — the manager's status tables in a terminal.
 *
 *   messip-stat [-s host:port] [-j] [-t ms]
 *
 * It fetches /status.json from the manager's status page and prints the
 * workers, connections (registrations) and channels as aligned tables.
 * The status address is -s, else the host of $MESSIP_MGR with its port
 * + 1, else the status port of $MESSIP_CONFIG or /etc/messip ("host[:port]
 * [port [status_port]]"), else 127.0.0.1:9201.
 *
 * Everything received is untrusted: the answer is read into a buffer of
 * at most BODY_MAX bytes within one deadline, and parsed by a small strict
 * JSON reader (RFC 8259 grammar, UTF-8 checked, nesting at most
 * JSON_DEPTH, at most JSON_NODES values) that accepts nothing after the
 * document.  Text is printed with control characters replaced, so a
 * hostile id cannot drive the terminal.  Tables are printed in two passes
 * (widths, then rows), so memory does not grow with the number of rows.
 *
 * Exit status: 0 printed, 1 could not connect, fetch or parse, 2 usage.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "mgr_utf8.h"

#define DEFAULT_STATUS "127.0.0.1:9201"
#define DEFAULT_PORT   9200
#define BODY_MAX       (8u * 1024 * 1024)
#define JSON_DEPTH     16
#define JSON_NODES     (1u << 20)
#define CELL	       256
#define MAX_COLS       12
#define FORMAT_VERSION 1

static const char *prog = "messip-stat";

/* ---- address -------------------------------------------------------- */

/* Split "host:port", "[v6]:port", "host" (port *port stays) into host. */
static int split_hostport(const char *ref, char *host, size_t hsz, int *port)
{
	const char *colon, *p;
	size_t n;
	char *end;
	long v;

	if (!ref || !*ref)
		return -1;
	if (ref[0] == '[') {
		const char *rb = strchr(ref, ']');

		if (!rb || rb == ref + 1)
			return -1;
		n = (size_t)(rb - ref - 1);
		p = rb + 1;
		if (*p && *p != ':')
			return -1;
		colon = *p ? p : NULL;
		ref++;
	} else {
		colon = strchr(ref, ':');
		if (colon && strchr(colon + 1, ':'))
			colon = NULL; /* bare IPv6 address */
		n = colon ? (size_t)(colon - ref) : strlen(ref);
	}
	if (n == 0 || n >= hsz)
		return -1;
	memcpy(host, ref, n);
	host[n] = 0;
	if (!colon)
		return 0;
	errno = 0;
	v = strtol(colon + 1, &end, 10);
	if (errno || *end || end == colon + 1 || v <= 0 || v > 65535)
		return -1;
	*port = (int)v;
	return 0;
}

/* The first non-comment line of the client configuration file:
 * "host[:port] [port [status_port]]".  0, -1 (bad), 1 (no file). */
static int read_conf(const char *path, char *host, size_t hsz, int *sport)
{
	char line[512];
	FILE *f = fopen(path, "re");
	int rc = 1, port = DEFAULT_PORT;

	if (!f)
		return 1;
	while (fgets(line, sizeof(line), f)) {
		char *save = NULL, *tok, *hash = strchr(line, '#');
		char *end;
		long v;

		if (hash)
			*hash = 0;
		tok = strtok_r(line, " \t\r\n", &save);
		if (!tok)
			continue;
		rc = split_hostport(tok, host, hsz, &port) < 0 ? -1 : 0;
		*sport = port + 1;
		for (int k = 0; rc == 0 && k < 2; k++) {
			tok = strtok_r(NULL, " \t\r\n", &save);
			if (!tok)
				break;
			v = strtol(tok, &end, 10);
			if (*end || v <= 0 || v > 65535) {
				rc = -1;
				break;
			}
			if (k == 0)
				*sport = (int)v + 1 > 65535 ? -1 : (int)v + 1;
			else
				*sport = (int)v;
		}
		break;
	}
	fclose(f);
	if (rc == 0 && *sport <= 0)
		rc = -1;
	return rc;
}

/* Where the status page is (see the banner).  0, or -1 with a message. */
static int default_target(char *host, size_t hsz, int *port, char *from,
			  size_t fsz)
{
	const char *env = getenv("MESSIP_MGR"), *file;
	int p = DEFAULT_PORT, rc;

	if (env && *env) {
		snprintf(from, fsz, "MESSIP_MGR");
		if (split_hostport(env, host, hsz, &p) < 0 || p >= 65535)
			return -1;
		*port = p + 1;
		return 0;
	}
	file = getenv("MESSIP_CONFIG");
	if (!file || !*file)
		file = "/etc/messip";
	snprintf(from, fsz, "%s", file);
	rc = read_conf(file, host, hsz, port);
	if (rc <= 0)
		return rc;
	snprintf(from, fsz, "default");
	*port = DEFAULT_PORT;
	return split_hostport(DEFAULT_STATUS, host, hsz, port);
}

/* ---- HTTP ------------------------------------------------------------- */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int left_ms(int64_t deadline)
{
	int64_t l = deadline - now_ms();

	return l < 0 ? 0 : (int)l;
}

/* Wait for ev on fd until deadline.  0, or -ETIMEDOUT / -errno. */
static int wait_fd(int fd, short ev, int64_t deadline)
{
	struct pollfd p = {.fd = fd, .events = ev};
	int n;

	do {
		n = poll(&p, 1, left_ms(deadline));
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return n == 0 ? -ETIMEDOUT : 0;
}

/* Connect to host:port (each address in turn) before deadline.  fd or
 * -errno (the last failure). */
static int dial(const char *host, int port, int64_t deadline)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res = NULL, *ai;
	char ps[16];
	int rc, err = -EHOSTUNREACH;

	snprintf(ps, sizeof(ps), "%d", port);
	rc = getaddrinfo(host, ps, &hints, &res);
	if (rc != 0)
		return -EHOSTUNREACH;
	for (ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family,
				ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
				ai->ai_protocol);
		socklen_t sl = sizeof(int);
		int soerr = 0;

		if (fd < 0) {
			err = -errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
			freeaddrinfo(res);
			return fd;
		}
		if (errno == EINPROGRESS) {
			rc = wait_fd(fd, POLLOUT, deadline);
			if (rc == 0 &&
			    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) ==
				    0 &&
			    soerr == 0) {
				freeaddrinfo(res);
				return fd;
			}
			err = rc < 0 ? rc : -soerr;
		} else {
			err = -errno;
		}
		close(fd);
	}
	freeaddrinfo(res);
	return err;
}

/*
 * GET path from fd; on success *body and *blen point into the malloc'd *buf
 * (the caller frees).  Returns 0 or -1 with a message in why.
 */
static int http_get(int fd, const char *host, const char *path,
		    int64_t deadline, char **buf, const char **body,
		    size_t *blen, char *why, size_t wsz)
{
	char req[512];
	size_t len = 0, cap = 65536, off = 0, hend;
	const char *p, *cl;
	char *b;
	int n, rc;

	n = snprintf(req, sizeof(req),
		     "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: application/json"
		     "\r\nConnection: close\r\nUser-Agent: messip-stat\r\n\r\n",
		     path, host);
	if (n < 0 || (size_t)n >= sizeof(req)) {
		snprintf(why, wsz, "host name too long");
		return -1;
	}
	while (off < (size_t)n) {
		ssize_t k = send(fd, req + off, (size_t)n - off, MSG_NOSIGNAL);

		if (k < 0 && errno == EAGAIN) {
			rc = wait_fd(fd, POLLOUT, deadline);
			if (rc < 0) {
				snprintf(why, wsz, "sending the request: %s",
					 strerror(-rc));
				return -1;
			}
			continue;
		}
		if (k < 0 && errno != EINTR) {
			snprintf(why, wsz, "sending the request: %s",
				 strerror(errno));
			return -1;
		}
		if (k > 0)
			off += (size_t)k;
	}
	b = malloc(cap + 1);
	if (!b) {
		snprintf(why, wsz, "out of memory");
		return -1;
	}
	*buf = b;
	for (;;) {
		ssize_t k;

		if (len == cap) {
			char *nb;

			if (cap >= BODY_MAX) {
				snprintf(why, wsz, "answer over %u bytes",
					 BODY_MAX);
				return -1;
			}
			cap = cap * 2 > BODY_MAX ? BODY_MAX : cap * 2;
			nb = realloc(b, cap + 1);
			if (!nb) {
				snprintf(why, wsz, "out of memory");
				return -1;
			}
			*buf = b = nb;
		}
		k = recv(fd, b + len, cap - len, 0);
		if (k > 0) {
			len += (size_t)k;
			continue;
		}
		if (k == 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN) {
			snprintf(why, wsz, "reading the answer: %s",
				 strerror(errno));
			return -1;
		}
		rc = wait_fd(fd, POLLIN, deadline);
		if (rc < 0) {
			snprintf(why, wsz, "reading the answer: %s",
				 rc == -ETIMEDOUT ? "timed out"
						  : strerror(-rc));
			return -1;
		}
	}
	b[len] = 0;
	/* Status line: "HTTP/1.x 200 ...". */
	if (len < 12 || memcmp(b, "HTTP/1.", 7) != 0 || b[8] != ' ') {
		snprintf(why, wsz, "not an HTTP answer");
		return -1;
	}
	if (memcmp(b + 9, "200", 3) != 0) {
		const char *eol = memchr(b, '\r', len < 80 ? len : 80);
		int sl = eol ? (int)(eol - b - 9) : 3;

		for (int i = 9; i < 9 + sl; i++)
			if ((unsigned char)b[i] < 0x20 ||
			    (unsigned char)b[i] >= 0x7f)
				b[i] = '?';
		snprintf(why, wsz, "the status page answered %.*s for %s", sl,
			 b + 9, path);
		return -1;
	}
	p = NULL;
	for (hend = 0; hend + 3 < len; hend++)
		if (memcmp(b + hend, "\r\n\r\n", 4) == 0) {
			p = b + hend + 4;
			break;
		}
	if (!p || memchr(b, 0, (size_t)(p - b))) {
		snprintf(why, wsz, "malformed HTTP header");
		return -1;
	}
	*body = p;
	*blen = len - (size_t)(p - b);
	/* A Content-Length that disagrees means a cut answer. */
	b[hend] = 0;
	cl = strcasestr(b, "\r\nContent-Length:");
	b[hend] = '\r';
	if (cl) {
		char *end;
		unsigned long long v;

		cl += 17;
		while (*cl == ' ' || *cl == '\t')
			cl++;
		errno = 0;
		v = strtoull(cl, &end, 10);
		if (errno || end == cl || v != *blen) {
			snprintf(why, wsz, "answer cut short (%zu bytes of %s)",
				 *blen, errno || end == cl ? "?" : "more");
			return -1;
		}
	}
	return 0;
}

/* ---- JSON ---------------------------------------------------------------- */

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jnode {
	uint8_t type;
	uint8_t bval;
	uint32_t start, len;  /* J_STR: raw text inside the quotes;
				 J_NUM: the number's text */
	uint32_t key, keylen; /* member name (raw) when in an object */
	int32_t child, next;  /* first child, next sibling; -1: none */
};

struct jdoc {
	const char *s;
	size_t n, pos;
	struct jnode *nodes;
	uint32_t count, cap;
	const char *err;
};

static void jskip(struct jdoc *d)
{
	while (d->pos < d->n && (d->s[d->pos] == ' ' || d->s[d->pos] == '\t' ||
				 d->s[d->pos] == '\n' || d->s[d->pos] == '\r'))
		d->pos++;
}

static int jfail(struct jdoc *d, const char *why)
{
	if (!d->err)
		d->err = why;
	return -1;
}

static int jnew(struct jdoc *d, int type)
{
	struct jnode *n;

	if (d->count == d->cap) {
		uint32_t ncap = d->cap ? d->cap * 2 : 256;
		struct jnode *nn;

		if (d->cap >= JSON_NODES)
			return jfail(d, "too many values");
		if (ncap > JSON_NODES)
			ncap = JSON_NODES;
		nn = realloc(d->nodes, ncap * sizeof(*nn));
		if (!nn)
			return jfail(d, "out of memory");
		d->nodes = nn;
		d->cap = ncap;
	}
	n = &d->nodes[d->count];
	memset(n, 0, sizeof(*n));
	n->type = (uint8_t)type;
	n->child = n->next = -1;
	return (int)d->count++;
}

static int is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
	       (c >= 'A' && c <= 'F');
}

/* A string at d->pos (on the quote): validate; *start and *len get the raw
 * text between the quotes. */
static int jstring(struct jdoc *d, uint32_t *start, uint32_t *len)
{
	const unsigned char *u = (const unsigned char *)d->s;
	size_t i = d->pos + 1;

	while (i < d->n && u[i] != '"') {
		size_t k;

		if (u[i] < 0x20)
			return jfail(d, "control character in a string");
		if (u[i] == '\\') {
			if (i + 1 >= d->n)
				return jfail(d, "cut string");
			if (u[i + 1] && strchr("\"\\/bfnrt", u[i + 1])) {
				i += 2;
				continue;
			}
			if (u[i + 1] != 'u' || i + 5 >= d->n ||
			    !is_hex((char)u[i + 2]) ||
			    !is_hex((char)u[i + 3]) ||
			    !is_hex((char)u[i + 4]) || !is_hex((char)u[i + 5]))
				return jfail(d, "bad escape in a string");
			i += 6;
			continue;
		}
		k = mgr_utf8_len(u + i, d->n - i, 1);
		if (k == 0)
			return jfail(d, "invalid UTF-8");
		i += k;
	}
	if (i >= d->n)
		return jfail(d, "cut string");
	if (i - d->pos - 1 > UINT32_MAX)
		return jfail(d, "string too long");
	*start = (uint32_t)(d->pos + 1);
	*len = (uint32_t)(i - d->pos - 1);
	d->pos = i + 1;
	return 0;
}

static int jdigits(struct jdoc *d)
{
	size_t p0 = d->pos;

	while (d->pos < d->n && d->s[d->pos] >= '0' && d->s[d->pos] <= '9')
		d->pos++;
	return d->pos > p0 ? 0 : -1;
}

static int jvalue(struct jdoc *d, int depth);

/* Members or elements of the container node idx, up to closer. */
static int jcontainer(struct jdoc *d, int idx, int depth, char closer)
{
	int32_t last = -1;

	d->pos++;
	jskip(d);
	if (d->pos < d->n && d->s[d->pos] == closer) {
		d->pos++;
		return idx;
	}
	for (;;) {
		uint32_t ks = 0, kl = 0;
		int v;

		if (closer == '}') {
			if (d->pos >= d->n || d->s[d->pos] != '"')
				return jfail(d, "expected a member name");
			if (jstring(d, &ks, &kl) < 0)
				return -1;
			jskip(d);
			if (d->pos >= d->n || d->s[d->pos] != ':')
				return jfail(d, "expected ':'");
			d->pos++;
		}
		v = jvalue(d, depth + 1);
		if (v < 0)
			return -1;
		d->nodes[v].key = ks;
		d->nodes[v].keylen = kl;
		if (last < 0)
			d->nodes[idx].child = v;
		else
			d->nodes[last].next = v;
		last = v;
		jskip(d);
		if (d->pos < d->n && d->s[d->pos] == ',') {
			d->pos++;
			jskip(d);
			continue;
		}
		if (d->pos < d->n && d->s[d->pos] == closer) {
			d->pos++;
			return idx;
		}
		return jfail(d, closer == '}' ? "expected ',' or '}'"
					      : "expected ',' or ']'");
	}
}

static int jvalue(struct jdoc *d, int depth)
{
	int idx;
	char c;

	if (depth > JSON_DEPTH)
		return jfail(d, "nested too deeply");
	jskip(d);
	if (d->pos >= d->n)
		return jfail(d, "unexpected end");
	c = d->s[d->pos];
	if (c == '{' || c == '[') {
		idx = jnew(d, c == '{' ? J_OBJ : J_ARR);
		if (idx < 0)
			return -1;
		return jcontainer(d, idx, depth, c == '{' ? '}' : ']');
	}
	if (c == '"') {
		uint32_t st, ln;

		idx = jnew(d, J_STR);
		if (idx < 0 || jstring(d, &st, &ln) < 0)
			return -1;
		d->nodes[idx].start = st;
		d->nodes[idx].len = ln;
		return idx;
	}
	if (c == '-' || (c >= '0' && c <= '9')) {
		size_t p0 = d->pos;

		idx = jnew(d, J_NUM);
		if (idx < 0)
			return -1;
		if (c == '-')
			d->pos++;
		if (d->pos < d->n && d->s[d->pos] == '0')
			d->pos++;
		else if (jdigits(d) < 0)
			return jfail(d, "bad number");
		if (d->pos < d->n && d->s[d->pos] == '.') {
			d->pos++;
			if (jdigits(d) < 0)
				return jfail(d, "bad number");
		}
		if (d->pos < d->n &&
		    (d->s[d->pos] == 'e' || d->s[d->pos] == 'E')) {
			d->pos++;
			if (d->pos < d->n &&
			    (d->s[d->pos] == '+' || d->s[d->pos] == '-'))
				d->pos++;
			if (jdigits(d) < 0)
				return jfail(d, "bad number");
		}
		d->nodes[idx].start = (uint32_t)p0;
		d->nodes[idx].len = (uint32_t)(d->pos - p0);
		return idx;
	}
	if (d->n - d->pos >= 4 && memcmp(d->s + d->pos, "true", 4) == 0) {
		idx = jnew(d, J_BOOL);
		if (idx >= 0)
			d->nodes[idx].bval = 1;
		d->pos += 4;
		return idx;
	}
	if (d->n - d->pos >= 5 && memcmp(d->s + d->pos, "false", 5) == 0) {
		d->pos += 5;
		return jnew(d, J_BOOL);
	}
	if (d->n - d->pos >= 4 && memcmp(d->s + d->pos, "null", 4) == 0) {
		d->pos += 4;
		return jnew(d, J_NULL);
	}
	return jfail(d, "unexpected character");
}

/* Parse the whole of s[0..n): one value and nothing after it. */
static int jparse(struct jdoc *d, const char *s, size_t n)
{
	memset(d, 0, sizeof(*d));
	d->s = s;
	d->n = n;
	if (n > BODY_MAX)
		return jfail(d, "document too large");
	if (jvalue(d, 0) < 0)
		return -1;
	jskip(d);
	if (d->pos != d->n)
		return jfail(d, "data after the document");
	return 0;
}

/* Member key of object obj, or -1. */
static int jget(const struct jdoc *d, int obj, const char *key)
{
	size_t kl = strlen(key);

	if (obj < 0 || d->nodes[obj].type != J_OBJ)
		return -1;
	for (int i = d->nodes[obj].child; i >= 0; i = d->nodes[i].next)
		if (d->nodes[i].keylen == kl &&
		    memcmp(d->s + d->nodes[i].key, key, kl) == 0)
			return i;
	return -1;
}

/* Integer value of node i (no fraction, no exponent, in range).  0/-1. */
static int jint(const struct jdoc *d, int i, long long *out)
{
	char buf[32], *end;
	const struct jnode *n;

	if (i < 0)
		return -1;
	n = &d->nodes[i];
	if (n->type != J_NUM || n->len == 0 || n->len >= sizeof(buf))
		return -1;
	memcpy(buf, d->s + n->start, n->len);
	buf[n->len] = 0;
	if (strpbrk(buf, ".eE"))
		return -1;
	errno = 0;
	*out = strtoll(buf, &end, 10);
	return errno || *end ? -1 : 0;
}

static uint32_t hexval(const char *p)
{
	uint32_t v = 0;

	for (int i = 0; i < 4; i++) {
		char c = p[i];

		v = v << 4 | (uint32_t)(c <= '9'   ? c - '0'
					: c <= 'F' ? c - 'A' + 10
						   : c - 'a' + 10);
	}
	return v;
}

/* Append code point cp as UTF-8 if it fits; control characters (C0, DEL,
 * C1) become '?'.  Returns the new length. */
static size_t put_cp(char *out, size_t len, size_t size, uint32_t cp)
{
	char u[4];
	size_t k;

	if (cp < 0x20 || (cp >= 0x7f && cp < 0xa0))
		cp = '?';
	if (cp < 0x80) {
		u[0] = (char)cp;
		k = 1;
	} else if (cp < 0x800) {
		u[0] = (char)(0xc0 | cp >> 6);
		u[1] = (char)(0x80 | (cp & 0x3f));
		k = 2;
	} else if (cp < 0x10000) {
		u[0] = (char)(0xe0 | cp >> 12);
		u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[2] = (char)(0x80 | (cp & 0x3f));
		k = 3;
	} else {
		u[0] = (char)(0xf0 | cp >> 18);
		u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[3] = (char)(0x80 | (cp & 0x3f));
		k = 4;
	}
	if (len + k >= size)
		return len;
	memcpy(out + len, u, k);
	return len + k;
}

/* Decoded, terminal-safe text of string node i into out (truncated to
 * whole characters); "-" for null or a missing member. */
static void jstr(const struct jdoc *d, int i, char *out, size_t size)
{
	const struct jnode *n;
	const char *s;
	size_t len = 0;

	if (i < 0 || d->nodes[i].type != J_STR) {
		snprintf(out, size, "-");
		return;
	}
	n = &d->nodes[i];
	s = d->s + n->start;
	for (uint32_t k = 0; k < n->len;) {
		uint32_t cp;

		if (s[k] == '\\') {
			char e = s[k + 1];

			k += 2;
			switch (e) {
			case 'b':
			case 'f':
			case 'n':
			case 'r':
			case 't':
				cp = '?';
				break;
			case 'u':
				cp = hexval(s + k);
				k += 4;
				if (cp >= 0xd800 && cp < 0xdc00 &&
				    k + 6 <= n->len && s[k] == '\\' &&
				    s[k + 1] == 'u') {
					uint32_t lo = hexval(s + k + 2);

					if (lo >= 0xdc00 && lo < 0xe000) {
						cp = 0x10000 +
						     ((cp - 0xd800) << 10) +
						     (lo - 0xdc00);
						k += 6;
					}
				}
				if (cp >= 0xd800 && cp < 0xe000)
					cp = 0xfffd;
				break;
			default: /* " \ / */
				cp = (unsigned char)e;
			}
			len = put_cp(out, len, size, cp);
			continue;
		}
		{
			/* Validated UTF-8: copy the sequence whole, but
			 * C1 controls (U+0080..U+009F) become '?'. */
			const unsigned char *u = (const unsigned char *)s + k;
			size_t q = mgr_utf8_len(u, n->len - k, 1);

			if (q == 0)
				q = 1;
			if (q == 2 && u[0] == 0xc2 && u[1] < 0xa0) {
				len = put_cp(out, len, size, '?');
			} else if (q == 1) {
				len = put_cp(out, len, size, u[0]);
			} else if (len + q < size) {
				memcpy(out + len, u, q);
				len += q;
			}
			k += (uint32_t)q;
		}
	}
	out[len < size ? len : size - 1] = 0;
}

/* ---- tables -------------------------------------------------------------- */

/* Display width: characters, not bytes. */
static size_t width(const char *s)
{
	size_t w = 0;

	for (; *s; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			w++;
	return w;
}

struct table {
	int ncols;
	const char *head[MAX_COLS];
	size_t w[MAX_COLS];
};

typedef void (*row_fn)(const struct jdoc *d, int node, char cells[][CELL]);

static void print_row(const struct table *t, char cells[][CELL])
{
	for (int c = 0; c < t->ncols; c++) {
		fputs(cells[c], stdout);
		if (c + 1 < t->ncols)
			for (size_t k = width(cells[c]); k < t->w[c] + 2; k++)
				putchar(' ');
	}
	putchar('\n');
}

/* Print the array arr as a table: one pass for the widths, one to print. */
static void print_table(const struct jdoc *d, struct table *t, int arr,
			row_fn fn)
{
	char cells[MAX_COLS][CELL];

	for (int c = 0; c < t->ncols; c++)
		t->w[c] = width(t->head[c]);
	for (int i = arr >= 0 ? d->nodes[arr].child : -1; i >= 0;
	     i = d->nodes[i].next) {
		fn(d, i, cells);
		for (int c = 0; c < t->ncols; c++)
			if (width(cells[c]) > t->w[c])
				t->w[c] = width(cells[c]);
	}
	for (int c = 0; c < t->ncols; c++)
		snprintf(cells[c], CELL, "%s", t->head[c]);
	print_row(t, cells);
	for (int i = arr >= 0 ? d->nodes[arr].child : -1; i >= 0;
	     i = d->nodes[i].next) {
		fn(d, i, cells);
		print_row(t, cells);
	}
}

static void cell_int(const struct jdoc *d, int obj, const char *key, char *cell)
{
	long long v;

	if (jint(d, jget(d, obj, key), &v) == 0)
		snprintf(cell, CELL, "%lld", v);
	else
		snprintf(cell, CELL, "-");
}

static void cell_time(const struct jdoc *d, int obj, const char *key,
		      char *cell)
{
	long long v;
	time_t t;
	struct tm tm;

	if (jint(d, jget(d, obj, key), &v) < 0 || v <= 0 ||
	    (t = (time_t)v, !localtime_r(&t, &tm)) ||
	    !strftime(cell, CELL, "%Y-%m-%d %H:%M:%S", &tm))
		snprintf(cell, CELL, "-");
}

static void cell_dur(const struct jdoc *d, int obj, const char *key, char *cell)
{
	long long s;

	if (jint(d, jget(d, obj, key), &s) < 0 || s < 0)
		snprintf(cell, CELL, "-");
	else if (s < 60)
		snprintf(cell, CELL, "%llds", s);
	else if (s < 3600)
		snprintf(cell, CELL, "%lldm%02llds", s / 60, s % 60);
	else if (s < 86400)
		snprintf(cell, CELL, "%lldh%02lldm", s / 3600, s % 3600 / 60);
	else
		snprintf(cell, CELL, "%lldd%02lldh", s / 86400,
			 s % 86400 / 3600);
}

static void worker_row(const struct jdoc *d, int o, char cells[][CELL])
{
	int up = jget(d, o, "up");

	cell_int(d, o, "worker", cells[0]);
	cell_int(d, o, "pid", cells[1]);
	snprintf(cells[2], CELL, "%s",
		 up >= 0 && d->nodes[up].type == J_BOOL && d->nodes[up].bval
			 ? "up"
			 : "down");
	cell_dur(d, o, "uptime", cells[3]);
	cell_int(d, o, "connections", cells[4]);
	cell_int(d, o, "requests", cells[5]);
	cell_int(d, o, "errors", cells[6]);
	cell_int(d, o, "restarts", cells[7]);
	cell_int(d, o, "accepted", cells[8]);
	cell_int(d, o, "delivered", cells[9]);
}

static void conn_row(const struct jdoc *d, int o, char cells[][CELL])
{
	cell_int(d, o, "regno", cells[0]);
	jstr(d, jget(d, o, "id"), cells[1], CELL);
	cell_int(d, o, "pid", cells[2]);
	jstr(d, jget(d, o, "peer"), cells[3], CELL);
	cell_time(d, o, "since", cells[4]);
	cell_int(d, o, "worker", cells[5]);
	jstr(d, jget(d, o, "state"), cells[6], CELL);
	cell_int(d, o, "channels", cells[7]);
	cell_int(d, o, "connected", cells[8]);
}

static void chan_row(const struct jdoc *d, int o, char cells[][CELL])
{
	char q[CELL], m[CELL];

	jstr(d, jget(d, o, "name"), cells[0], CELL);
	jstr(d, jget(d, o, "server"), cells[1], CELL);
	jstr(d, jget(d, o, "peer"), cells[2], CELL);
	cell_time(d, o, "since", cells[3]);
	cell_int(d, o, "queued", q);
	cell_int(d, o, "max", m);
	snprintf(cells[4], CELL, "%.100s/%.100s", q, m);
	cell_int(d, o, "clients", cells[5]);
}

static long long get_int(const struct jdoc *d, int obj, const char *key)
{
	long long v;

	return jint(d, jget(d, obj, key), &v) == 0 ? v : -1;
}

static int count(const struct jdoc *d, int arr)
{
	int n = 0;

	for (int i = arr >= 0 ? d->nodes[arr].child : -1; i >= 0;
	     i = d->nodes[i].next)
		n++;
	return n;
}

static int print_status(const struct jdoc *d)
{
	static struct table tw = {
		.ncols = 10,
		.head = {"WORKER", "PID", "STATE", "UPTIME", "CONNS",
			 "REQUESTS", "ERRORS", "RESTARTS", "ACCEPTED",
			 "DELIVERED"},
	};
	static struct table tc = {
		.ncols = 9,
		.head = {"REGNO", "ID", "PID", "PEER", "SINCE", "WORKER",
			 "STATE", "CHANNELS", "CONNECTED"},
	};
	static struct table th = {
		.ncols = 6,
		.head = {"CHANNEL", "SERVER", "PEER", "SINCE", "QUEUED/MAX",
			 "CLIENTS"},
	};
	int root = 0, mgr, tot, ws, cs, hs;
	char listen[CELL];
	long long more;

	if (d->nodes[root].type != J_OBJ ||
	    get_int(d, root, "format") != FORMAT_VERSION)
		return -1;
	mgr = jget(d, root, "manager");
	tot = jget(d, root, "totals");
	ws = jget(d, root, "workers");
	cs = jget(d, root, "connections");
	hs = jget(d, root, "channels");
	if (mgr < 0 || d->nodes[mgr].type != J_OBJ || tot < 0 ||
	    d->nodes[tot].type != J_OBJ || ws < 0 ||
	    d->nodes[ws].type != J_ARR || cs < 0 ||
	    d->nodes[cs].type != J_ARR || hs < 0 || d->nodes[hs].type != J_ARR)
		return -1;
	/* Rows must be objects. */
	for (int a = 0; a < 3; a++) {
		int arr = a == 0 ? ws : a == 1 ? cs : hs;

		for (int i = d->nodes[arr].child; i >= 0; i = d->nodes[i].next)
			if (d->nodes[i].type != J_OBJ)
				return -1;
	}
	jstr(d, jget(d, mgr, "listen"), listen, sizeof(listen));
	printf("messip-mgr %s: master pid %lld, %lld workers, %lld "
	       "connections, %lld channels, %lld buffered queued\n\n",
	       listen, get_int(d, mgr, "master_pid"),
	       get_int(d, mgr, "workers"), get_int(d, tot, "connections"),
	       get_int(d, tot, "channels"), get_int(d, tot, "queued"));
	print_table(d, &tw, ws, worker_row);
	printf("\nCONNECTIONS (%d)\n", count(d, cs));
	print_table(d, &tc, cs, conn_row);
	more = get_int(d, root, "connections_more");
	if (more > 0)
		printf("(%lld more not shown)\n", more);
	printf("\nCHANNELS (%d)\n", count(d, hs));
	print_table(d, &th, hs, chan_row);
	more = get_int(d, root, "channels_more");
	if (more > 0)
		printf("(%lld more not shown)\n", more);
	return 0;
}

/* ---- main -------------------------------------------------------------------
 */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: messip-stat [-s host:port] [-j] [-t ms]\n"
		"  -s host:port  the manager's status page (default: "
		"$MESSIP_MGR's host and\n"
		"                port + 1, else /etc/messip, else %s)\n"
		"  -j            print the raw JSON\n"
		"  -t ms         give up after ms milliseconds (default "
		"5000)\n",
		DEFAULT_STATUS);
}

int main(int argc, char **argv)
{
	const char *target = NULL;
	char host[256], from[300], why[300], *buf = NULL;
	const char *body = NULL;
	int port = 9201, raw = 0, opt, fd, rc = 1;
	long timeout_ms = 5000;
	size_t blen = 0;
	int64_t deadline;
	struct jdoc d;

	while ((opt = getopt(argc, argv, "s:jt:h")) != -1) {
		switch (opt) {
		case 's':
			target = optarg;
			break;
		case 'j':
			raw = 1;
			break;
		case 't': {
			char *end;

			timeout_ms = strtol(optarg, &end, 10);
			if (*end || timeout_ms <= 0 || timeout_ms > 3600000) {
				fprintf(stderr, "%s: -t: bad timeout '%s'\n",
					prog, optarg);
				return 2;
			}
			break;
		}
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return 2;
	}
	if (target) {
		snprintf(from, sizeof(from), "-s");
		if (split_hostport(target, host, sizeof(host), &port) < 0) {
			fprintf(stderr,
				"%s: -s: expected host:port, got '%s'\n", prog,
				target);
			return 2;
		}
	} else if (default_target(host, sizeof(host), &port, from,
				  sizeof(from)) < 0) {
		fprintf(stderr, "%s: %s: bad manager address\n", prog, from);
		return 1;
	}
	deadline = now_ms() + timeout_ms;
	fd = dial(host, port, deadline);
	if (fd < 0) {
		fprintf(stderr,
			"%s: cannot connect to the status page at %s:%d "
			"(from %s): %s\n"
			"%s: is messip-mgr running, with status_listen on?\n",
			prog, host, port, from,
			fd == -ETIMEDOUT ? "timed out" : strerror(-fd), prog);
		return 1;
	}
	if (http_get(fd, host, "/status.json", deadline, &buf, &body, &blen,
		     why, sizeof(why)) < 0) {
		fprintf(stderr, "%s: %s:%d: %s\n", prog, host, port, why);
		goto out;
	}
	if (jparse(&d, body, blen) < 0) {
		fprintf(stderr,
			"%s: %s:%d: bad status document: %s at byte "
			"%zu\n",
			prog, host, port, d.err ? d.err : "?", d.pos);
		free(d.nodes);
		goto out;
	}
	if (raw) {
		fwrite(body, 1, blen, stdout);
		rc = 0;
	} else if (print_status(&d) < 0) {
		fprintf(stderr,
			"%s: %s:%d: not a messip-mgr status document "
			"(format %d expected)\n",
			prog, host, port, FORMAT_VERSION);
	} else {
		rc = 0;
	}
	free(d.nodes);
out:
	free(buf);
	close(fd);
	if (rc == 0 && fflush(stdout) != 0) {
		fprintf(stderr, "%s: writing the tables: %s\n", prog,
			strerror(errno));
		rc = 1;
	}
	return rc;
}
