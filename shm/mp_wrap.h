/*
 * mp_wrap — byte copies into and out of a circular data area whose size
 * is a power of two, at a position that only grows (mp_ring, mp_lane).
 *
 * A position's offset in the area is pos & (bytes - 1); a copy that runs
 * past the end goes on at the start.  The callers bound n <= bytes, so
 * nothing is read or written outside the area.
 */
#ifndef MP_WRAP_H
#define MP_WRAP_H

#include <stdint.h>
#include <string.h>

/* Is x a power of two (and not 0)? */
static inline int mp_wrap_pow2(uint32_t x)
{
	return x && !(x & (x - 1));
}

/* n bytes of src into the area (bytes long) at pos. */
static inline void mp_wrap_put(uint8_t *area, uint32_t bytes, uint64_t pos,
			       const void *src, uint32_t n)
{
	uint32_t off = (uint32_t)pos & (bytes - 1), first = bytes - off;

	if (n <= first) {
		memcpy(area + off, src, n);
	} else {
		memcpy(area + off, src, first);
		memcpy(area, (const uint8_t *)src + first, n - first);
	}
}

/* n bytes of the area (bytes long) at pos into dst. */
static inline void mp_wrap_get(const uint8_t *area, uint32_t bytes,
			       uint64_t pos, void *dst, uint32_t n)
{
	uint32_t off = (uint32_t)pos & (bytes - 1), first = bytes - off;

	if (n <= first) {
		memcpy(dst, area + off, n);
	} else {
		memcpy(dst, area + off, first);
		memcpy((uint8_t *)dst + first, area, n - first);
	}
}

#endif
