/*
 * mp_host — the host token: a random 64-bit number shared by every process
 * that sees the same /dev/shm.
 *
 * "Same host" in messip means "can open the same shared-memory objects"
 * (DESIGN.md, "The same-host fast path"), so the token lives in /dev/shm
 * itself: the first caller on a host creates the object
 * "/messip-host-token" (mode 0644: readable by all, writable only by its
 * creator) holding a fresh random value, and every later caller reads it.
 * Two processes with the same /dev/shm get the same token; processes with
 * separate /dev/shm mounts get different ones, whatever their IP addresses
 * or host names say.  The object is deliberately left in place: it is
 * host-wide and lives as long as /dev/shm does.
 *
 * The token is not cached: if the object is removed (a tmpfs cleaner, or
 * systemd's RemoveIPC= at logout) and re-created, later calls return the
 * new value.
 */
#ifndef MP_HOST_H
#define MP_HOST_H

#include <stdint.h>

#define MP_HOST_TOKEN_NAME "/messip-host-token"

/*
 * Read (creating it if needed) this host's token into *token; never 0.
 * Waits up to about 2 s for another process that is creating the object.
 * Returns 0, -EACCES (the object exists but cannot be read, and is not
 * ours to replace), -EBADMSG (it holds no valid token and is not ours to
 * replace), -EAGAIN (still being created after the wait), or another
 * -errno from shm_open/getrandom.
 */
int mp_host_token(uint64_t *token);

/* The same, on another object name ("/..."): for tests, which must not
 * disturb the real host token. */
int mp_host_token_named(const char *name, uint64_t *token);

#endif
