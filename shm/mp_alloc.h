/*
 * mp_alloc — the one allocation wrapper of messip, with a fault hook.
 *
 * The library (lib/), the manager's request path (mgrd/) and anything
 * else that must survive running out of memory allocate through these
 * calls instead of malloc/calloc/realloc, and release with plain free().
 * A test can make the n-th allocation from now fail (and only that one),
 * then check that the operation under test fails cleanly: ENOMEM to the
 * caller, or a manager that closes the one connection and serves on.
 *
 * Why compiled in always (no configure switch): the allocation-failure
 * tests then run in every `make check`, on exactly the code that ships,
 * and the price when no failure is armed is one relaxed atomic load and a
 * predicted branch per allocation, nothing beside malloc itself.  The hook
 * is reachable only through this internal header (the shared library
 * exports no mp_* symbol, and reads no environment for it), so a program
 * using libmessip cannot switch it on by accident.
 *
 * The counter is per process and shared by its threads (atomics; the
 * n-th allocation is then the n-th in whatever order the threads make
 * them).  A child made by fork() inherits its parent's hook as it was.
 */
#ifndef MP_ALLOC_H
#define MP_ALLOC_H

#include <stddef.h>
#include <stdint.h>

/* malloc(n) / calloc(n, size) / realloc(p, n), each counting as one
 * allocation for the hook.  NULL with errno ENOMEM when the hook fails
 * this one (realloc then leaves p untouched, as realloc does). */
void *mp_alloc(size_t n);
void *mp_calloc(size_t n, size_t size);
void *mp_realloc(void *p, size_t n);

/*
 * Arm the hook: the n-th allocation from now fails (n = 1: the next one);
 * every other allocation succeeds as usual.  n = 0 disarms it.  Resets
 * the counters below.
 */
void mp_alloc_fail_nth(uint64_t n);

/* Allocations made since the last mp_alloc_fail_nth (0 while disarmed). */
uint64_t mp_alloc_count(void);

/* 1 when the armed failure has happened since the last mp_alloc_fail_nth,
 * else 0.  An operation that completes with this still 0 made fewer than
 * n allocations: the "for every n" loop of a test is over. */
int mp_alloc_failed(void);

#endif
