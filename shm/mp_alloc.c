/*
 * mp_alloc — allocation wrapper with a fault hook (see mp_alloc.h).
 *
 * Invariant: fail_at == 0 means disarmed, and then nothing but one relaxed
 * load happens per allocation.  While armed, count is incremented once
 * per allocation (fetch-add, so two threads never see the same number)
 * and exactly the allocation that takes number fail_at fails.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>

#include "mp_alloc.h"

static uint64_t fail_at; /* 0: disarmed */
static uint64_t count;
static int failed;

/* 1 when this allocation is the one to fail.  Relaxed ordering
 * throughout: the hook publishes no other data, and a test arms it
 * before starting the operation it watches (a thread started after the
 * arming sees it through pthread_create's own ordering). */
static int hook_fires(void)
{
	uint64_t at = __atomic_load_n(&fail_at, __ATOMIC_RELAXED);

	if (__builtin_expect(at == 0, 1))
		return 0;
	if (__atomic_add_fetch(&count, 1, __ATOMIC_RELAXED) != at)
		return 0;
	__atomic_store_n(&failed, 1, __ATOMIC_RELAXED);
	errno = ENOMEM;
	return 1;
}

void *mp_alloc(size_t n)
{
	return hook_fires() ? NULL : malloc(n);
}

void *mp_calloc(size_t n, size_t size)
{
	return hook_fires() ? NULL : calloc(n, size);
}

void *mp_realloc(void *p, size_t n)
{
	return hook_fires() ? NULL : realloc(p, n);
}

void mp_alloc_fail_nth(uint64_t n)
{
	__atomic_store_n(&fail_at, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&count, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&failed, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&fail_at, n, __ATOMIC_RELAXED);
}

uint64_t mp_alloc_count(void)
{
	return __atomic_load_n(&count, __ATOMIC_RELAXED);
}

int mp_alloc_failed(void)
{
	return __atomic_load_n(&failed, __ATOMIC_RELAXED);
}
