/*
 * mp_link — one framed TCP connection: an input buffer that yields whole
 * decoded frames (mp_wire), and a frame writer with a deadline.
 *
 * Input: mp_link_fill() reads what the socket has into the buffer;
 * mp_link_next() decodes the next complete frame.  A decoded frame's data
 * points into the buffer and stays valid until the next mp_link_fill() (or
 * mp_link_close()).  The buffer grows only to the size the frame header
 * announces, after the header passed the codec's length check, so a peer
 * can never make us allocate more than one maximum frame.
 *
 * Output: mp_link_send() writes one frame (header and fixed fields, then
 * the caller's data vector) with sendmsg(MSG_NOSIGNAL): never SIGPIPE.  A
 * frame is either not written at all (-ETIMEDOUT: nothing reached the
 * socket before the deadline) or committed: if the deadline passes midway,
 * the unsent tail is copied aside and written first by the next send or by
 * mp_link_flush(), so the byte stream is never left with half a frame.
 *
 * Errors: -EPIPE means the link is gone (EOF, reset, or any socket error);
 * -EPROTO / -EMSGSIZE mean the peer sent a frame we refuse.  Either way
 * the caller closes the link.
 *
 * TLS (mp_link_start_tls): the same calls, through mp_tls; the handshake
 * runs inside the first reads and writes (a client's first send waits for
 * it, within its deadline).  Reads and writes may then also fail with
 * -EACCES (the server's certificate failed verification) or -EPROTO (the
 * peer does not speak TLS 1.3 or refused us), logged as MESSIP-TLS with
 * the reason.  Waits poll for what TLS needs; input TLS holds that the
 * socket no longer reports counts in mp_link_frame_ready(), so callers
 * that look there before sleeping read it first.  The direct receive is
 * not direct under TLS (the data is copied out of the decrypted buffer).
 */
#ifndef MP_LINK_H
#define MP_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "mp_tls.h"
#include "mp_wire.h"

struct mp_link {
	int fd;	     /* -1 when closed */
	struct mp_tls *tls; /* NULL: plain TCP */
	uint8_t *in; /* input buffer */
	size_t in_cap;
	size_t in_off; /* first unconsumed byte */
	size_t in_len; /* bytes held */
	uint8_t *out;  /* unsent tail of a committed frame, then queued
			  frames (mp_link_queue) */
	size_t out_off;
	size_t out_len;
	size_t out_cap;
	uint32_t max_data; /* largest data field accepted */
	size_t in_hint;	   /* capacity to start a new input buffer with */
};

/* Adopt fd (non-blocking).  Never fails: buffers are allocated lazily. */
void mp_link_init(struct mp_link *l, int fd, uint32_t max_data);

/*
 * TLS on this link, when the process asks for it (doc/messip.7): as a
 * client (host: the name or address dialled, which the server's
 * certificate must name) when MESSIP_TLS_CA is set, as a server (host
 * NULL) when MESSIP_TLS_CERT and MESSIP_TLS_KEY are.  0 (TLS on, or not
 * asked for: the link stays plain), -EINVAL (the variables name files
 * that cannot be used; logged as MESSIP-TLS-CONFIG), -ENOMEM.
 */
int mp_link_start_tls(struct mp_link *l, const char *host);

/* Close the socket and free the buffers. */
void mp_link_close(struct mp_link *l);

/* Forget the socket without any I/O (after fork: the child's copy). */
void mp_link_drop_fd(struct mp_link *l);

/* One non-blocking read.  Bytes read (> 0), 0 when nothing was there,
 * -EPIPE on EOF or error, -ENOMEM. */
int mp_link_fill(struct mp_link *l);

/* As mp_link_fill(), but the read may wait (up to the socket's receive
 * timeout, mp_sock_blocking_reads()): 0 then means it timed out or was
 * interrupted.  Only for a socket set up so. */
int mp_link_fill_wait(struct mp_link *l);

/* Next complete frame: 1 (m filled), 0 (need more), -EPROTO, -EMSGSIZE. */
int mp_link_next(struct mp_link *l, struct mp_wire_msg *m);

/*
 * Take the input buffer away when the frame mp_link_next() just returned
 * was all it held: the caller then owns that frame's data (free() the
 * returned pointer, not the data) and no copy is needed.  NULL when other
 * bytes are held (the frame's data then stays valid as documented).  The
 * next read allocates a buffer of the same size.
 */
void *mp_link_steal_input(struct mp_link *l);

/*
 * Direct receive: the data of one awaited frame read straight into the
 * caller's buffer, so that a large reply costs no copy.  The caller fills
 * op, reqid, dst and cap (the op must carry only fixed-width fields and
 * data, as REPLY does) and zeroes the rest, then calls
 * mp_link_fill_direct() instead of mp_link_fill() while the input buffer
 * is empty.  Each read asks for the frame's header and fixed fields into
 * the input buffer and the rest into dst:
 *   - when the header is the awaited frame's and its data fits in cap,
 *     matched is set, m holds its fields (m.data = dst) and the next
 *     calls read the rest of its data into dst; it is complete when got
 *     == m.datalen (bytes read past it are in the input buffer);
 *   - otherwise what was read is moved into the input buffer, exactly as
 *     mp_link_fill() would have left it (dst's bytes are then garbage),
 *     and the caller decodes it as usual.
 * Returns as mp_link_fill() (as mp_link_fill_wait() with wait), or -EPROTO
 * / -EMSGSIZE for a header the codec refuses.
 */
struct mp_link_direct {
	uint8_t op; /* the awaited frame */
	uint32_t reqid;
	uint8_t *dst;	      /* where its data goes ... */
	uint32_t cap;	      /* ... when it fits */
	bool matched;	      /* the frame is being read into dst */
	uint32_t got;	      /* data bytes in dst */
	struct mp_wire_msg m; /* its fields, once matched */
};

int mp_link_fill_direct(struct mp_link *l, struct mp_link_direct *d, bool wait);

/* A whole frame (or a frame the codec will refuse) is in the buffer, or
 * TLS holds input the socket no longer reports (mp_link_fill reads it). */
bool mp_link_frame_ready(const struct mp_link *l);

/* Complete frames may be waiting in the buffer. */
static inline bool mp_link_has_input(const struct mp_link *l)
{
	return l->in_len > l->in_off;
}

/*
 * Send m with m->datalen bytes taken from iov[0..iovcnt) (m->data is
 * ignored; the caller sets m->datalen to the vector's total).  Returns 0
 * once committed, -ETIMEDOUT (nothing written), -EPIPE, -EINVAL.
 */
int mp_link_send(struct mp_link *l, const struct mp_wire_msg *m,
		 const struct iovec *iov, int iovcnt, int64_t deadline);

/*
 * Commit a frame as mp_link_send() does, but write nothing yet: it waits
 * behind whatever is unsent for the next send or mp_link_flush(), so that
 * several frames leave in one system call.  0, -EPIPE, -EINVAL, -ENOMEM.
 */
int mp_link_queue(struct mp_link *l, const struct mp_wire_msg *m,
		  const struct iovec *iov, int iovcnt);

/*
 * Send n bytes that are already whole encoded frames (several may be
 * coalesced in one buffer), as mp_link_send does: 0 once committed (a
 * tail the deadline left unsent is copied aside and goes first later),
 * -ETIMEDOUT (nothing written), -EPIPE.
 */
int mp_link_send_raw(struct mp_link *l, const void *p, size_t n,
		     int64_t deadline);

/* Shorthand for frames without data. */
int mp_link_send_msg(struct mp_link *l, const struct mp_wire_msg *m,
		     int64_t deadline);

/* Write the pending tail: 0 when none is left, -ETIMEDOUT, -EPIPE. */
int mp_link_flush(struct mp_link *l, int64_t deadline);

static inline bool mp_link_pending_out(const struct mp_link *l)
{
	return l->out_len > l->out_off ||
	       (l->tls && mp_tls_pending_out(l->tls));
}

/*
 * Wait for the next frame until deadline (reads as needed).  1 with m
 * filled, -ETIMEDOUT, -EPIPE, -EPROTO, -EMSGSIZE.
 */
int mp_link_recv(struct mp_link *l, struct mp_wire_msg *m, int64_t deadline);

#endif
