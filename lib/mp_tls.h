/*
 * mp_tls — optional TLS 1.3 under a messip byte stream, shared by the
 * library (mp_link) and the manager (mgr_conn), as mp_auth is: both ends
 * must speak the same layering (doc/protocol.md, "TLS").
 *
 * The TLS engine is OpenSSL's libssl over memory BIOs: this module does
 * the socket reads and writes itself, so that
 *   - writes never have OpenSSL's retry-with-the-same-buffer rule: a
 *     plaintext byte handed to mp_tls_write() is encrypted at once and
 *     its ciphertext kept here until the socket takes it (committed,
 *     exactly like mp_link's stashed tail);
 *   - reads honour the caller's recv flags (MSG_DONTWAIT, or a blocking
 *     read bounded by SO_RCVTIMEO, mp_sock_blocking_reads);
 *   - the handshake runs inside the first reads and writes, on
 *     non-blocking sockets, and mp_tls_events() says what the caller
 *     must poll for (POLLIN while the peer's flight is awaited, POLLOUT
 *     while ciphertext waits for room).
 *
 * Buffering: ciphertext waiting for the socket is at most one write's
 * worth (MP_TLS_CHUNK plaintext bytes, encrypted) plus a handshake flight.
 * Received ciphertext is read one socket read (MP_TLS_RECV bytes) at a
 * time and decrypted before more is read, so what TLS holds that the
 * socket no longer reports is at most one read; mp_tls_has_input() says
 * when such bytes may be decodable, so that a caller does not sleep on
 * the socket while they wait (it must read again first).
 *
 * Only TLS 1.3; no session tickets or resumption; the client checks the
 * server's certificate chain against its CA file and the name or IP
 * address it dialled (SSL_set1_host / X509_VERIFY_PARAM_set1_ip_asc).
 */
#ifndef MP_TLS_H
#define MP_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#define MP_TLS_CHUNK 65536 /* plaintext encrypted per mp_tls_write */
#define MP_TLS_RECV  17408 /* ciphertext per socket read (one record) */
#define MP_TLS_WHY   256   /* room for the reason of a failure */

struct mp_tls_ctx; /* an SSL_CTX: immutable once made, shared by threads */
struct mp_tls;     /* one connection's TLS state: calls are serialised by
		      a mutex (one reader and one writer thread may share
		      it, as they share a socket) */

/*
 * A client context that verifies servers against the CA certificates in
 * the PEM file ca_file.  0 and *out, or -ENOMEM, -EINVAL (unreadable or
 * no certificate in it) with the reason in err.
 */
int mp_tls_ctx_client(const char *ca_file, struct mp_tls_ctx **out, char *err,
		      size_t errlen);

/*
 * A server context with the certificate chain in cert_file (PEM) and its
 * private key in key_file (PEM), which must be a private file
 * (mp_auth_open_private: owner-only, owned by the reader).  0 and *out,
 * or -ENOENT / -EACCES / -EPERM (the key file's checks), -EINVAL (not
 * PEM, or the key does not match the certificate), -ENOMEM, with the
 * reason in err.
 */
int mp_tls_ctx_server(const char *cert_file, const char *key_file,
		      struct mp_tls_ctx **out, char *err, size_t errlen);

void mp_tls_ctx_free(struct mp_tls_ctx *ctx);

/*
 * The library's process-wide contexts, made once from the environment
 * (doc/messip.7) on first use and kept for the life of the process:
 *   client: MESSIP_TLS_CA (a PEM file of CA certificates);
 *   server: MESSIP_TLS_CERT and MESSIP_TLS_KEY (mp_tls_ctx_server).
 * 0 and *out (NULL when the variables are unset or empty: plain TCP), or
 * -EINVAL with the reason in err (a file is unusable, or only one of
 * the server's two variables is set) on this and every later call.
 */
int mp_tls_env_client(struct mp_tls_ctx **out, char *err, size_t errlen);
int mp_tls_env_server(struct mp_tls_ctx **out, char *err, size_t errlen);

/*
 * TLS on the connected socket fd (which stays the caller's: never
 * closed here).  A client ctx needs host, the name or textual IP address
 * the caller dialled; a server ctx ignores it.  NULL on ENOMEM (or
 * EINVAL: an unusable host), errno set.
 */
struct mp_tls *mp_tls_new(struct mp_tls_ctx *ctx, int fd, const char *host);

/* Free the TLS state (nothing is sent; the socket is left alone). */
void mp_tls_free(struct mp_tls *t);

/*
 * Up to len plaintext bytes into buf.  The first socket read uses flags
 * (0 may block, up to the socket's receive timeout); any further one in
 * the same call is MSG_DONTWAIT.  The handshake, while not done, runs
 * first.  Returns bytes (> 0); 0 when nothing is there now (or the wait
 * timed out or was interrupted; see mp_tls_events for what to wait for);
 * -EPIPE at end of stream or on a socket error after the handshake;
 * during the handshake -EACCES (the peer's certificate failed
 * verification), -EPROTO (the peer does not speak TLS 1.3, or refused
 * ours), -EPIPE (closed before saying anything); -ENOMEM.  After a
 * negative return the connection is unusable.
 */
ssize_t mp_tls_read(struct mp_tls *t, void *buf, size_t len, int flags);

/*
 * Encrypt plaintext from iov[0..cnt), at most MP_TLS_CHUNK bytes, once
 * the ciphertext of earlier writes has reached the socket, and try to
 * send it (never waits).  Returns the plaintext bytes taken (> 0: they
 * are committed, whatever the socket took), 0 when nothing was taken (the
 * handshake or earlier ciphertext is still waiting: see mp_tls_events),
 * or the errors of mp_tls_read.
 */
ssize_t mp_tls_write(struct mp_tls *t, const struct iovec *iov, int cnt);

/* Send waiting ciphertext: 0 none left, 1 some left, -EPIPE. */
int mp_tls_flush(struct mp_tls *t);

/* Ciphertext waits for the socket. */
bool mp_tls_pending_out(struct mp_tls *t);

/* Plaintext may be decodable without reading the socket: read before
 * sleeping on it. */
bool mp_tls_has_input(struct mp_tls *t);

/* The last failure was the peer ending the stream (end of file or a
 * close_notify), not an error. */
bool mp_tls_eof(struct mp_tls *t);

/* What to poll for before calling again: POLLIN and/or POLLOUT. */
short mp_tls_events(struct mp_tls *t);

/* The handshake is complete. */
bool mp_tls_ready(struct mp_tls *t);

/* Why the last call failed (for the caller's log line), "" if it did
 * not. */
const char *mp_tls_why(const struct mp_tls *t);

#endif
