/*
 * mp_iov — copying messages out to the caller, and measuring vectors
 * (see mp_iov.h).  Never writes past what the caller described.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mp_alloc.h"
#include "mp_iov.h"
#include "mp_priv.h"

int mp_iov_sink_check(const struct mp_iov_sink *s)
{
	if (s->iov)
		return mp_iov_total(s->iov, s->iovcnt, INT64_MAX) < 0 ? -EINVAL
								      : 0;
	if (s->maxlen < 0 || (s->maxlen > 0 && !s->buf))
		return -EINVAL;
	return 0;
}

int mp_iov_put(const struct mp_iov_sink *s, const void *data, uint32_t len,
	       int32_t *stored)
{
	const uint8_t *p = data;
	uint32_t n;

	if (s->iov) {
		uint32_t left = len;

		for (int i = 0; i < s->iovcnt && left; i++) {
			n = s->iov[i].iov_len < left
				    ? (uint32_t)s->iov[i].iov_len
				    : left;
			if (n)
				memcpy(s->iov[i].iov_base, p, n);
			p += n;
			left -= n;
		}
		*stored = (int32_t)(len - left);
		return 0;
	}
	if (s->maxlen == 0 && s->buf) {
		/* Dynamic mode: at least one byte, so the pointer is never
		 * NULL and always free()-able. */
		void *copy = mp_alloc(len ? len : 1);

		if (!copy)
			return -ENOMEM;
		if (len)
			memcpy(copy, data, len);
		*(void **)s->buf = copy;
		*stored = (int32_t)len;
		return 0;
	}
	n = len < (uint32_t)s->maxlen ? len : (uint32_t)s->maxlen;
	if (n)
		memcpy(s->buf, data, n);
	*stored = (int32_t)n;
	return 0;
}

int64_t mp_iov_total(const struct iovec *iov, int iovcnt, int64_t max)
{
	int64_t total = 0;

	if (iovcnt < 0 || iovcnt > MP_IOV_MAX || (iovcnt && !iov))
		return -EINVAL;
	for (int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len && !iov[i].iov_base)
			return -EINVAL;
		if (iov[i].iov_len > (size_t)INT32_MAX)
			return -EMSGSIZE;
		total += (int64_t)iov[i].iov_len;
		if (total > max)
			return -EMSGSIZE;
	}
	return total;
}
