/*
 * mgr_sec — the manager's security: the shared secret peers must prove
 * (lib/mp_auth.h), the access policy on channel names, the kernel
 * identity of same-host peers, and the per-peer-address connection limit.
 *
 * The master loads the secret and the policy before it forks (both are
 * restart-only settings), so every worker inherits the same read-only
 * copies.  The per-peer counters live in a shared anonymous mapping the
 * master makes before forking: one row of counters per worker, written
 * only by that worker (and zeroed by the master after the worker died,
 * since its connections died with it).
 *
 * Identity: a peer whose address is a loopback one is on this host and
 * in this network namespace, so the kernel knows the socket at the other
 * end.  Its owner's uid is asked from the kernel with one exact
 * sock_diag (NETLINK_SOCK_DIAG) lookup of that socket by its address and
 * port: the same uid /proc/net/tcp shows, without reading a table that
 * grows with every socket of the host.  The groups are that uid's groups
 * in the user database (getgrouplist), not the peer's process groups,
 * which the kernel does not keep per TCP socket.  Any other peer, or a
 * failed lookup, has no identity: the policy's rules for "unknown" apply.
 */
#ifndef MGR_SEC_H
#define MGR_SEC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "mgr_config.h"
#include "mp_auth.h"
#include "mp_tls.h"

#define MGR_SEC_MAX_GIDS 32

struct mgr_ident {
	int known; /* 1: uid/gids from the kernel; 0: none */
	uint32_t uid;
	uint32_t ngids;
	uint32_t gids[MGR_SEC_MAX_GIDS];
};

enum mgr_sec_op {
	MGR_SEC_CREATE = 1,
	MGR_SEC_CONNECT = 2,
};

/*
 * Load what c names: auth_secret_file (mp_auth_key_load's checks),
 * tls_cert_file and tls_key_file (mp_tls_ctx_server's checks) and
 * access_policy (syntax below).  0, or -errno with err "file[:line]:
 * reason" (always NUL-terminated).  Called by the master (and by -t);
 * on failure the previous state is kept.
 *
 * Policy file: one rule per line, '#' comments, first match wins:
 *     allow|deny  WHO  OPS  PATTERN
 *     default     allow|deny
 * WHO: uid:N, user:NAME, gid:N, group:NAME, any, known (identity
 * established), unknown (not established: remote peers).  OPS: create,
 * connect, or all (comma-separated).  PATTERN: fnmatch(3) glob on the
 * channel name.  No rule matching: the default line (deny if absent).
 */
int mgr_sec_load(const struct mgr_config *c, char *err, size_t errlen);

/* The TLS server context (tls_cert_file and tls_key_file, loaded by
 * mgr_sec_load in the master before the workers fork), or NULL: plain
 * TCP. */
struct mp_tls_ctx *mgr_sec_tls(void);

/* The secret, or NULL when auth_secret_file is none. */
const struct mp_auth_key *mgr_sec_key(void);

/* 1 when an access policy is loaded (identity lookups are then needed). */
int mgr_sec_has_policy(void);

/* Fill *id for the connected socket fd (known = 0 when it cannot be
 * established). */
void mgr_sec_identify(int fd, struct mgr_ident *id);

/* 0 if the policy lets id do op on name (always, without a policy), else
 * -EACCES. */
int mgr_sec_allowed(const struct mgr_ident *id, enum mgr_sec_op op,
		    const char *name);

/* Master, before forking: the per-peer counters for nworkers rows.
 * 0 or -ENOMEM. */
int mgr_sec_peers_init(unsigned nworkers);

/* Master, after worker w died: its connections are gone, so are its
 * counts. */
void mgr_sec_peers_reset(unsigned w);

/*
 * Worker w accepted fd: count it against its peer address.  Returns the
 * counter's index (>= 0, to give back with mgr_sec_peer_put), -1 when
 * nothing was counted (no limit, or no table), or -EUSERS when the peer
 * already has limit connections (then nothing is counted).  Workers
 * count in their own rows and read the others' without a lock, so
 * concurrent accepts on several workers may overshoot the limit by at
 * most one connection per other worker.
 */
int mgr_sec_peer_take(unsigned w, int fd, int64_t limit);
void mgr_sec_peer_put(unsigned w, int idx);

#endif
