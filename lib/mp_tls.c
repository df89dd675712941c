/*
 * mp_tls — TLS 1.3 over memory BIOs (see mp_tls.h).
 *
 * Invariants:
 *   - SSL only ever sees the memory BIOs: rbio gets what recv() returned,
 *     wbio's output is moved at once into out[] (drain), which send()
 *     empties; out_off <= out_len <= out_cap;
 *   - failed != 0 once anything failed: every later call returns it;
 *   - more is set only by a read that stopped because the caller's
 *     buffer was full while TLS still held bytes; a read that stopped
 *     because the socket had nothing clears it.
 * OpenSSL's error queue is per thread: it is cleared before each SSL
 * call whose result SSL_get_error() interprets.
 *
 * Threads: the library reads a manager link in the user's thread while
 * its flusher thread may write to it (mp_cnx.c), which plain sockets
 * allow; an SSL object does not, so every call takes t->mu.  A read
 * that blocks (mp_sock_blocking_reads) releases it around recv().
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "mp_alloc.h"
#include "mp_auth.h"
#include "mp_tls.h"

#define MP_TLS_GATHER 16384 /* plaintext per record */

struct mp_tls {
	pthread_mutex_t mu; /* every call but mp_tls_why */
	SSL *ssl;
	BIO *rbio, *wbio; /* owned by ssl */
	int fd;
	int failed;	/* 0 or the -errno every call returns */
	bool client;
	bool done;	/* handshake complete */
	bool want_read; /* the handshake waits for the peer */
	bool more;	/* decodable input may be held */
	bool eof;	/* the peer ended the stream */
	bool got_bytes; /* the peer sent something */
	uint8_t *out;	/* ciphertext for the socket */
	size_t out_off, out_len, out_cap;
	char host[64];	/* the name dialled (client), for why */
	char why[MP_TLS_WHY];
};

/* The reason of the oldest queued OpenSSL error, or fallback. */
static void ssl_reason(char *buf, size_t len, const char *fallback)
{
	unsigned long e = ERR_get_error();

	if (e)
		ERR_error_string_n(e, buf, len);
	else
		snprintf(buf, len, "%s", fallback);
	ERR_clear_error();
}

/* ---- contexts ------------------------------------------------------- */

static SSL_CTX *ctx_new(const SSL_METHOD *m, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(m);

	if (!ctx) {
		ssl_reason(err, errlen, "SSL_CTX_new failed");
		return NULL;
	}
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1) {
		ssl_reason(err, errlen, "TLS 1.3 unavailable");
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

int mp_tls_ctx_client(const char *ca_file, struct mp_tls_ctx **out, char *err,
		      size_t errlen)
{
	SSL_CTX *ctx;
	char why[160];

	ERR_clear_error();
	ctx = ctx_new(TLS_client_method(), why, sizeof(why));
	if (!ctx) {
		snprintf(err, errlen, "TLS: %s", why);
		return -ENOMEM;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
		ssl_reason(why, sizeof(why), "no certificate in it");
		snprintf(err, errlen, "TLS CA file %s: %s", ca_file, why);
		SSL_CTX_free(ctx);
		return -EINVAL;
	}
	*out = (struct mp_tls_ctx *)ctx;
	return 0;
}

/* No passphrase prompt ever: an encrypted key is refused. */
static int no_passphrase(char *buf, int size, int rw, void *u)
{
	(void)buf;
	(void)size;
	(void)rw;
	(void)u;
	return -1;
}

int mp_tls_ctx_server(const char *cert_file, const char *key_file,
		      struct mp_tls_ctx **out, char *err, size_t errlen)
{
	EVP_PKEY *key = NULL;
	SSL_CTX *ctx;
	char why[160];
	FILE *f;
	int fd, rc = -EINVAL;

	fd = mp_auth_open_private(key_file, "TLS key file", err, errlen);
	if (fd < 0)
		return fd;
	f = fdopen(fd, "r");
	if (!f) {
		close(fd);
		snprintf(err, errlen, "TLS key file %s: out of memory",
			 key_file);
		return -ENOMEM;
	}
	ERR_clear_error();
	key = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
	fclose(f);
	if (!key) {
		ssl_reason(why, sizeof(why), "no key in it");
		snprintf(err, errlen,
			 "TLS key file %s: not an unencrypted PEM private "
			 "key (%s)",
			 key_file, why);
		return -EINVAL;
	}
	ctx = ctx_new(TLS_server_method(), why, sizeof(why));
	if (!ctx) {
		snprintf(err, errlen, "TLS: %s", why);
		EVP_PKEY_free(key);
		return -ENOMEM;
	}
	/* Nothing to resume: no ticket is sent after the handshake. */
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		ssl_reason(why, sizeof(why), "no certificate in it");
		snprintf(err, errlen, "TLS certificate file %s: %s", cert_file,
			 why);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey(ctx, key) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		ssl_reason(why, sizeof(why), "mismatch");
		snprintf(err, errlen,
			 "TLS key file %s does not match the certificate in "
			 "%s (%s)",
			 key_file, cert_file, why);
		goto fail;
	}
	EVP_PKEY_free(key);
	*out = (struct mp_tls_ctx *)ctx;
	return 0;
fail:
	EVP_PKEY_free(key);
	SSL_CTX_free(ctx);
	return rc;
}

void mp_tls_ctx_free(struct mp_tls_ctx *ctx)
{
	SSL_CTX_free((SSL_CTX *)ctx);
}

/* ---- the library's contexts, from the environment ------------------- */

struct env_ctx {
	pthread_once_t once;
	struct mp_tls_ctx *ctx; /* written once, under once */
	int rc;
	char err[256];
};

static struct env_ctx env_cli = {.once = PTHREAD_ONCE_INIT};
static struct env_ctx env_srv = {.once = PTHREAD_ONCE_INIT};

static const char *env(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

static void env_cli_init(void)
{
	const char *ca = env("MESSIP_TLS_CA");

	if (ca && mp_tls_ctx_client(ca, &env_cli.ctx, env_cli.err,
				    sizeof(env_cli.err)) < 0)
		env_cli.rc = -EINVAL;
}

static void env_srv_init(void)
{
	const char *cert = env("MESSIP_TLS_CERT"), *key = env("MESSIP_TLS_KEY");

	if (!cert && !key)
		return;
	if (!cert || !key) {
		snprintf(env_srv.err, sizeof(env_srv.err),
			 "MESSIP_TLS_CERT and MESSIP_TLS_KEY: set both (the "
			 "certificate chain and its private key) or neither");
		env_srv.rc = -EINVAL;
		return;
	}
	if (mp_tls_ctx_server(cert, key, &env_srv.ctx, env_srv.err,
			      sizeof(env_srv.err)) < 0)
		env_srv.rc = -EINVAL;
}

static int env_get(struct env_ctx *e, void (*init)(void),
		   struct mp_tls_ctx **out, char *err, size_t errlen)
{
	pthread_once(&e->once, init);
	*out = e->ctx;
	if (e->rc < 0)
		snprintf(err, errlen, "%s", e->err);
	return e->rc;
}

int mp_tls_env_client(struct mp_tls_ctx **out, char *err, size_t errlen)
{
	return env_get(&env_cli, env_cli_init, out, err, errlen);
}

int mp_tls_env_server(struct mp_tls_ctx **out, char *err, size_t errlen)
{
	return env_get(&env_srv, env_srv_init, out, err, errlen);
}

/* ---- connections ---------------------------------------------------- */

struct mp_tls *mp_tls_new(struct mp_tls_ctx *ctx, int fd, const char *host)
{
	struct mp_tls *t = mp_calloc(1, sizeof(*t));
	unsigned char ip[16];

	if (!t) {
		errno = ENOMEM;
		return NULL;
	}
	t->fd = fd;
	pthread_mutex_init(&t->mu, NULL);
	t->ssl = SSL_new((SSL_CTX *)ctx);
	t->rbio = BIO_new(BIO_s_mem());
	t->wbio = BIO_new(BIO_s_mem());
	if (!t->ssl || !t->rbio || !t->wbio) {
		BIO_free(t->rbio);
		BIO_free(t->wbio);
		SSL_free(t->ssl);
		pthread_mutex_destroy(&t->mu);
		free(t);
		errno = ENOMEM;
		return NULL;
	}
	/* An empty rbio means "not yet", never end of stream. */
	BIO_set_mem_eof_return(t->rbio, -1);
	SSL_set_bio(t->ssl, t->rbio, t->wbio);
	t->client = SSL_is_server(t->ssl) == 0;
	if (!t->client) {
		SSL_set_accept_state(t->ssl);
		return t;
	}
	SSL_set_connect_state(t->ssl);
	if (host)
		snprintf(t->host, sizeof(t->host), "%s", host);
	if (!host || !*host) {
		mp_tls_free(t);
		errno = EINVAL;
		return NULL;
	}
	/* The peer must be the one we dialled: by IP when an address was
	 * dialled (its certificate then names it as an IP SAN), else by
	 * DNS name, which also goes out as SNI. */
	if (inet_pton(AF_INET, host, ip) == 1 ||
	    inet_pton(AF_INET6, host, ip) == 1) {
		if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl),
						  host) != 1)
			goto bad;
	} else if (SSL_set1_host(t->ssl, host) != 1 ||
		   SSL_set_tlsext_host_name(t->ssl, host) != 1) {
		goto bad;
	}
	return t;
bad:
	ERR_clear_error();
	mp_tls_free(t);
	errno = EINVAL;
	return NULL;
}

void mp_tls_free(struct mp_tls *t)
{
	if (!t)
		return;
	SSL_free(t->ssl); /* frees the BIOs */
	pthread_mutex_destroy(&t->mu);
	free(t->out);
	free(t);
}

static int set_failed(struct mp_tls *t, int rc)
{
	t->failed = rc;
	return rc;
}

/* Move what SSL wrote into out[].  0 or -ENOMEM. */
static int drain(struct mp_tls *t)
{
	size_t n = BIO_ctrl_pending(t->wbio);

	if (!n)
		return 0;
	if (t->out_off == t->out_len)
		t->out_off = t->out_len = 0;
	if (t->out_cap - t->out_len < n) {
		size_t live = t->out_len - t->out_off, cap;
		uint8_t *p;

		if (live && t->out_off)
			memmove(t->out, t->out + t->out_off, live);
		t->out_off = 0;
		t->out_len = live;
		cap = t->out_cap ? t->out_cap : 4096;
		while (cap - live < n)
			cap *= 2;
		if (cap != t->out_cap) {
			p = mp_realloc(t->out, cap);
			if (!p)
				return set_failed(t, -ENOMEM);
			t->out = p;
			t->out_cap = cap;
		}
	}
	if (BIO_read(t->wbio, t->out + t->out_len, (int)n) != (int)n)
		return set_failed(t, -ENOMEM);
	t->out_len += n;
	return 0;
}

/* Send waiting ciphertext (under t->mu). */
static int flush(struct mp_tls *t)
{
	while (t->out_len > t->out_off) {
		ssize_t n = send(t->fd, t->out + t->out_off,
				 t->out_len - t->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
			      errno == ENOBUFS))
			return 1;
		if (n < 0) {
			snprintf(t->why, sizeof(t->why), "send: %s",
				 strerror(errno));
			return set_failed(t, -EPIPE);
		}
		t->out_off += (size_t)n;
	}
	t->out_off = t->out_len = 0;
	return 0;
}

/* One socket read into rbio: bytes (> 0), 0 nothing now, -EPIPE. */
static int pull(struct mp_tls *t, int flags)
{
	uint8_t buf[MP_TLS_RECV];
	ssize_t n;

	/* A read that may block (the reader's only) lets a writer in
	 * meanwhile; a non-blocking one keeps the lock, so that two reads
	 * can never put their bytes into rbio out of order. */
	if (!(flags & MSG_DONTWAIT))
		pthread_mutex_unlock(&t->mu);
	do {
		n = recv(t->fd, buf, sizeof(buf), flags);
	} while (n < 0 && errno == EINTR && (flags & MSG_DONTWAIT));
	if (!(flags & MSG_DONTWAIT))
		pthread_mutex_lock(&t->mu);
	if (n > 0) {
		t->got_bytes = true;
		if (BIO_write(t->rbio, buf, (int)n) != (int)n)
			return set_failed(t, -ENOMEM);
		return (int)n;
	}
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
		      errno == EINTR))
		return 0;
	snprintf(t->why, sizeof(t->why), "%s",
		 n == 0 ? "connection closed by the peer" : strerror(errno));
	t->eof = n == 0;
	return -EPIPE;
}

/* The handshake failed (SSL said so): why, and which errno. */
static int hs_failed(struct mp_tls *t)
{
	long v = SSL_get_verify_result(t->ssl);
	char why[120];

	if (t->client && v != X509_V_OK) {
		snprintf(t->why, sizeof(t->why),
			 "TLS: the certificate of %s failed verification: %s",
			 t->host, X509_verify_cert_error_string(v));
		ERR_clear_error();
		set_failed(t, -EACCES);
	} else {
		ssl_reason(why, sizeof(why), "handshake failed");
		snprintf(t->why, sizeof(t->why),
			 "TLS handshake%s%s failed: %s", t->client ? " with " : "",
			 t->host, why);
		set_failed(t, -EPROTO);
	}
	/* Let the peer know (an alert), if the socket takes it. */
	if (drain(t) == 0)
		flush(t);
	return t->failed;
}

/* Drive the handshake: 1 done, 0 waiting (want_read or out pending),
 * < 0 failed.  *flags is the first read's, then MSG_DONTWAIT. */
static int handshake(struct mp_tls *t, int *flags)
{
	for (;;) {
		int r, rc;

		ERR_clear_error();
		r = SSL_do_handshake(t->ssl);
		if (r != 1 && SSL_get_error(t->ssl, r) != SSL_ERROR_WANT_READ)
			return hs_failed(t);
		rc = drain(t);
		if (rc == 0)
			rc = flush(t);
		if (rc < 0)
			return rc;
		if (r == 1) {
			t->done = true;
			t->want_read = false;
			return 1;
		}
		rc = pull(t, *flags);
		*flags = MSG_DONTWAIT;
		if (rc == -EPIPE && !t->client && !t->got_bytes) {
			/* A peer that connected and left (a probe, a
			 * client that gave up): nothing to say. */
			snprintf(t->why, sizeof(t->why),
				 "closed before the TLS handshake");
			return set_failed(t, -EPIPE);
		}
		if (rc == -EPIPE) {
			/* Whatever the peer is, it is not a TLS server (or
			 * client) that accepts us. */
			snprintf(t->why, sizeof(t->why),
				 "TLS handshake%s%s failed: the peer closed "
				 "the connection (does it speak TLS?)",
				 t->client ? " with " : "", t->host);
			return set_failed(t, -EPROTO);
		}
		if (rc < 0)
			return rc;
		if (rc == 0) {
			t->want_read = true;
			return 0;
		}
	}
}

static ssize_t tls_read(struct mp_tls *t, void *buf, size_t len, int flags)
{
	size_t got = 0;
	int rc;

	if (t->failed)
		return t->failed;
	t->more = false;
	if (!t->done) {
		rc = handshake(t, &flags);
		if (rc <= 0)
			return rc;
	}
	while (got < len) {
		size_t n = 0;
		int r, e;

		ERR_clear_error();
		r = SSL_read_ex(t->ssl, (uint8_t *)buf + got, len - got, &n);
		if (r == 1) {
			got += n;
			continue;
		}
		e = SSL_get_error(t->ssl, r);
		if (e == SSL_ERROR_WANT_READ) {
			rc = pull(t, flags);
			flags = MSG_DONTWAIT;
			if (rc < 0)
				return got ? (ssize_t)got : rc;
			if (rc == 0)
				break;
			continue;
		}
		if (e == SSL_ERROR_ZERO_RETURN) {
			snprintf(t->why, sizeof(t->why),
				 "the peer ended TLS (close_notify)");
			t->eof = true;
		} else {
			char why[120];

			ssl_reason(why, sizeof(why), "bad record");
			snprintf(t->why, sizeof(t->why), "TLS: %s", why);
		}
		if (got)
			return (ssize_t)got; /* the next call fails */
		return set_failed(t, -EPIPE);
	}
	t->more = got == len && (SSL_pending(t->ssl) > 0 ||
				 BIO_ctrl_pending(t->rbio) > 0);
	/* Post-handshake messages may have to be answered. */
	if (BIO_ctrl_pending(t->wbio)) {
		rc = drain(t);
		if (rc == 0)
			rc = flush(t);
		if (rc < 0)
			return rc;
	}
	return (ssize_t)got;
}

static ssize_t tls_write(struct mp_tls *t, const struct iovec *iov, int cnt)
{
	uint8_t rec[MP_TLS_GATHER];
	size_t total = 0, off = 0;
	int i = 0, rc;

	if (t->failed)
		return t->failed;
	if (!t->done) {
		int flags = MSG_DONTWAIT;

		rc = handshake(t, &flags);
		if (rc <= 0)
			return rc;
	}
	rc = flush(t);
	if (rc != 0)
		return rc < 0 ? rc : 0;
	while (total < MP_TLS_CHUNK && i < cnt) {
		size_t n = 0, w = 0;

		/* Gather up to one record's worth of the vector. */
		while (n < sizeof(rec) && i < cnt) {
			size_t take = iov[i].iov_len - off;

			if (take > sizeof(rec) - n)
				take = sizeof(rec) - n;
			if (take)
				memcpy(rec + n, (const uint8_t *)iov[i].iov_base +
							off,
				       take);
			n += take;
			off += take;
			if (off == iov[i].iov_len) {
				i++;
				off = 0;
			}
		}
		if (!n)
			break;
		ERR_clear_error();
		if (SSL_write_ex(t->ssl, rec, n, &w) != 1 || w != n) {
			char why[120];

			ssl_reason(why, sizeof(why), "write failed");
			snprintf(t->why, sizeof(t->why), "TLS: %s", why);
			return set_failed(t, -EPIPE);
		}
		total += n;
		rc = drain(t);
		if (rc < 0)
			return rc;
	}
	rc = flush(t);
	if (rc < 0)
		return rc;
	return (ssize_t)total;
}

/* The public calls: each under t->mu (see the banner). */
#define LOCKED(t, type, expr)                                                  \
	do {                                                                   \
		type r_;                                                       \
		pthread_mutex_lock(&(t)->mu);                                  \
		r_ = (expr);                                                   \
		pthread_mutex_unlock(&(t)->mu);                                \
		return r_;                                                     \
	} while (0)

ssize_t mp_tls_read(struct mp_tls *t, void *buf, size_t len, int flags)
{
	LOCKED(t, ssize_t, tls_read(t, buf, len, flags));
}

ssize_t mp_tls_write(struct mp_tls *t, const struct iovec *iov, int cnt)
{
	LOCKED(t, ssize_t, tls_write(t, iov, cnt));
}

int mp_tls_flush(struct mp_tls *t)
{
	LOCKED(t, int, flush(t));
}

bool mp_tls_pending_out(struct mp_tls *t)
{
	LOCKED(t, bool, t->out_len > t->out_off);
}

bool mp_tls_has_input(struct mp_tls *t)
{
	LOCKED(t, bool, t->more && !t->failed);
}

bool mp_tls_eof(struct mp_tls *t)
{
	LOCKED(t, bool, t->eof);
}

static short events(const struct mp_tls *t)
{
	short ev = t->out_len > t->out_off ? POLLOUT : 0;

	if (!t->done && (t->want_read || !ev))
		ev |= POLLIN;
	return ev;
}

short mp_tls_events(struct mp_tls *t)
{
	LOCKED(t, short, events(t));
}

bool mp_tls_ready(struct mp_tls *t)
{
	LOCKED(t, bool, t->done);
}

/* Written only by the call that failed; read after it returned. */
const char *mp_tls_why(const struct mp_tls *t)
{
	return t->why;
}
