/*
 * mp_fuzz — reading a fuzz input as a little program: bytes, integers
 * and names taken from the front of the input, zeros once it runs out, so
 * that every input, however short, is a valid program.  Shared by the
 * shared-memory fuzz targets (fuzz_ring, fuzz_chtab, fuzz_chseg).
 */
#ifndef MP_FUZZ_H
#define MP_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fz {
	const uint8_t *p;
	size_t n;
};

static inline uint8_t fz_u8(struct fz *f)
{
	if (!f->n)
		return 0;
	f->n--;
	return *f->p++;
}

static inline uint16_t fz_u16(struct fz *f)
{
	uint16_t v = fz_u8(f);

	return (uint16_t)(v | (uint16_t)fz_u8(f) << 8);
}

static inline uint32_t fz_u32(struct fz *f)
{
	uint32_t v = fz_u16(f);

	return v | (uint32_t)fz_u16(f) << 16;
}

static inline uint64_t fz_u64(struct fz *f)
{
	uint64_t v = fz_u32(f);

	return v | (uint64_t)fz_u32(f) << 32;
}

/* n bytes into dst: as many as the input has, then a pattern that still
 * tells the bytes apart (so a payload compare means something). */
static inline void fz_bytes(struct fz *f, void *dst, size_t n)
{
	uint8_t *d = dst;
	size_t k = n < f->n ? n : f->n;

	memcpy(d, f->p, k);
	f->p += k;
	f->n -= k;
	for (size_t i = k; i < n; i++)
		d[i] = (uint8_t)(i * 7 + 1);
}

/* An exact-size heap buffer (ASan sees one byte past its end). */
static inline void *fz_alloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		abort();
	return p;
}

/* MP_FUZZ_TRACE=1 in the environment: targets print each operation. */
static int fz_trace = -1;

static inline void fz_trace_init(void)
{
	if (fz_trace < 0)
		fz_trace = getenv("MP_FUZZ_TRACE") != NULL;
}

#define FZ_FAIL(target, ...)                                                   \
	do {                                                                   \
		fprintf(stderr, target ": " __VA_ARGS__);                      \
		fputc('\n', stderr);                                           \
		abort();                                                       \
	} while (0)

#endif
