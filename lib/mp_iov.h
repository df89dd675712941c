/*
 * mp_iov — where received bytes go, and how long a vector is.
 *
 * A sink is the caller's side of a receive or a reply: a plain buffer of
 * maxlen bytes, a scatter vector, or the classic *dynamic mode* (maxlen 0
 * and buffer really a void **: a buffer of the message's size is
 * malloc'ed, its address stored there, and the caller frees it).
 */
#ifndef MP_IOV_H
#define MP_IOV_H

#include <stdint.h>
#include <sys/uio.h>

struct mp_iov_sink {
	void *buf; /* plain buffer, or void ** in dynamic mode */
	int maxlen;
	const struct iovec *iov; /* non-NULL: scatter into it instead */
	int iovcnt;
};

/* A plain-buffer sink; maxlen 0 with buf set is dynamic mode. */
static inline struct mp_iov_sink mp_iov_sink_buf(void *buf, int maxlen)
{
	struct mp_iov_sink s = {buf, maxlen, 0, 0};

	return s;
}

/* Check a sink's arguments: 0 or -EINVAL. */
int mp_iov_sink_check(const struct mp_iov_sink *s);

/* Store len bytes of data; *stored = bytes kept (the rest is cut off).
 * 0 or -ENOMEM (dynamic mode). */
int mp_iov_put(const struct mp_iov_sink *s, const void *data, uint32_t len,
	       int32_t *stored);

/* Total bytes of iov[0..iovcnt): >= 0, -EINVAL (bad vector), -EMSGSIZE
 * (over max). */
int64_t mp_iov_total(const struct iovec *iov, int iovcnt, int64_t max);

#endif
