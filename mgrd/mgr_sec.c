/*
 * mgr_sec — secret, access policy, peer identity and per-peer limits
 * (see mgr_sec.h).
 *
 * Invariants: the secret and the rules are written only by
 * mgr_sec_load() in the master, before any worker exists, and are
 * read-only afterwards (workers inherit them by fork).  A rule set is
 * built in a temporary and installed only when the whole file parsed.
 * Per-peer counters: row w is incremented and decremented by worker w
 * only, and zeroed by the master only while worker w is dead.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <grp.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "mgr_sec.h"

#define MAX_RULES    256
#define PATTERN_MAX  128
#define PEER_BUCKETS 4096 /* per worker row; a power of two */

enum who {
	WHO_ANY,
	WHO_KNOWN,
	WHO_UNKNOWN,
	WHO_UID,
	WHO_GID,
};

struct rule {
	int allow;
	enum who who;
	uint32_t id;
	unsigned ops; /* MGR_SEC_* bits */
	char pattern[PATTERN_MAX];
};

struct policy {
	int loaded;
	int default_allow;
	unsigned nrules;
	struct rule rules[MAX_RULES];
};

static struct mp_auth_key sec_key;
static struct mp_tls_ctx *sec_tls; /* NULL: plain TCP */
static struct policy sec_policy;

static uint32_t *peer_rows; /* nworkers * PEER_BUCKETS, shared */
static unsigned peer_nrows;
static uint8_t peer_seed[16]; /* SipHash key */

/* ---- policy file ---------------------------------------------------- */

static int parse_u32(const char *s, uint32_t *out)
{
	char *end;
	unsigned long v;

	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v > UINT32_MAX)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

static int parse_who(const char *s, struct rule *r, const char **why)
{
	if (strcmp(s, "any") == 0) {
		r->who = WHO_ANY;
	} else if (strcmp(s, "known") == 0) {
		r->who = WHO_KNOWN;
	} else if (strcmp(s, "unknown") == 0) {
		r->who = WHO_UNKNOWN;
	} else if (strncmp(s, "uid:", 4) == 0) {
		r->who = WHO_UID;
		if (parse_u32(s + 4, &r->id) < 0) {
			*why = "uid:N needs a number";
			return -EINVAL;
		}
	} else if (strncmp(s, "gid:", 4) == 0) {
		r->who = WHO_GID;
		if (parse_u32(s + 4, &r->id) < 0) {
			*why = "gid:N needs a number";
			return -EINVAL;
		}
	} else if (strncmp(s, "user:", 5) == 0) {
		struct passwd *pw = getpwnam(s + 5);

		if (!pw) {
			*why = "no such user";
			return -EINVAL;
		}
		r->who = WHO_UID;
		r->id = pw->pw_uid;
	} else if (strncmp(s, "group:", 6) == 0) {
		struct group *gr = getgrnam(s + 6);

		if (!gr) {
			*why = "no such group";
			return -EINVAL;
		}
		r->who = WHO_GID;
		r->id = gr->gr_gid;
	} else {
		*why = "expected uid:N, user:NAME, gid:N, group:NAME, any, "
		       "known or unknown";
		return -EINVAL;
	}
	return 0;
}

static int parse_ops(char *s, unsigned *ops)
{
	char *save = NULL;

	*ops = 0;
	for (char *t = strtok_r(s, ",", &save); t;
	     t = strtok_r(NULL, ",", &save)) {
		if (strcmp(t, "create") == 0)
			*ops |= MGR_SEC_CREATE;
		else if (strcmp(t, "connect") == 0)
			*ops |= MGR_SEC_CONNECT;
		else if (strcmp(t, "all") == 0)
			*ops |= MGR_SEC_CREATE | MGR_SEC_CONNECT;
		else
			return -EINVAL;
	}
	return *ops ? 0 : -EINVAL;
}

/* One line into p; 0 (blank or done) or -EINVAL with *why. */
static int parse_rule_line(char *line, struct policy *p, const char **why)
{
	char *w[5], *save = NULL, *hash = strchr(line, '#');
	int n = 0;
	struct rule *r;

	if (hash)
		*hash = 0;
	for (char *t = strtok_r(line, " \t\r\n", &save); t;
	     t = strtok_r(NULL, " \t\r\n", &save)) {
		if (n == 5) {
			*why = "too many words";
			return -EINVAL;
		}
		w[n++] = t;
	}
	if (n == 0)
		return 0;
	if (strcmp(w[0], "default") == 0) {
		if (n != 2 || (strcmp(w[1], "allow") && strcmp(w[1], "deny"))) {
			*why = "expected 'default allow' or 'default deny'";
			return -EINVAL;
		}
		p->default_allow = strcmp(w[1], "allow") == 0;
		return 0;
	}
	if (n != 4 || (strcmp(w[0], "allow") && strcmp(w[0], "deny"))) {
		*why = "expected 'allow|deny WHO OPS PATTERN'";
		return -EINVAL;
	}
	if (p->nrules == MAX_RULES) {
		*why = "too many rules (at most 256)";
		return -EINVAL;
	}
	r = &p->rules[p->nrules];
	memset(r, 0, sizeof(*r));
	r->allow = strcmp(w[0], "allow") == 0;
	if (parse_who(w[1], r, why) < 0)
		return -EINVAL;
	if (parse_ops(w[2], &r->ops) < 0) {
		*why = "OPS: expected create, connect or all "
		       "(comma-separated)";
		return -EINVAL;
	}
	if (strlen(w[3]) >= PATTERN_MAX) {
		*why = "pattern too long";
		return -EINVAL;
	}
	snprintf(r->pattern, sizeof(r->pattern), "%s", w[3]);
	p->nrules++;
	return 0;
}

static int load_policy(const char *path, struct policy *p, char *err,
		       size_t errlen)
{
	char line[512];
	int lineno = 0, rc = 0;
	FILE *f = fopen(path, "re");

	memset(p, 0, sizeof(*p));
	if (!f) {
		rc = -errno;
		snprintf(err, errlen, "access policy %s: %s", path,
			 strerror(-rc));
		return rc;
	}
	while (fgets(line, sizeof(line), f)) {
		const char *why = NULL;

		lineno++;
		if (!strchr(line, '\n') && !feof(f)) {
			snprintf(err, errlen, "%s:%d: line too long", path,
				 lineno);
			rc = -EINVAL;
			break;
		}
		if (parse_rule_line(line, p, &why) < 0) {
			snprintf(err, errlen, "%s:%d: %s", path, lineno, why);
			rc = -EINVAL;
			break;
		}
	}
	fclose(f);
	p->loaded = rc == 0;
	return rc;
}

int mgr_sec_load(const struct mgr_config *c, char *err, size_t errlen)
{
	/* Static: a policy is 40 KiB, too much for a stack frame. */
	static struct policy fresh;
	struct mp_tls_ctx *tls = NULL;
	struct mp_auth_key key;
	int rc;

	memset(&key, 0, sizeof(key));
	if (strcmp(c->auth_secret_file, "none") != 0) {
		rc = mp_auth_key_load(c->auth_secret_file, &key, err, errlen);
		if (rc < 0)
			return rc;
	}
	memset(&fresh, 0, sizeof(fresh));
	if (strcmp(c->access_policy, "none") != 0) {
		rc = load_policy(c->access_policy, &fresh, err, errlen);
		if (rc < 0) {
			mp_auth_key_clear(&key);
			return rc;
		}
	}
	if (strcmp(c->tls_cert_file, "none") != 0) {
		rc = mp_tls_ctx_server(c->tls_cert_file, c->tls_key_file, &tls,
				       err, errlen);
		if (rc < 0) {
			mp_auth_key_clear(&key);
			return rc;
		}
	}
	mp_auth_key_clear(&sec_key);
	sec_key = key;
	mp_auth_key_clear(&key);
	sec_policy = fresh;
	mp_tls_ctx_free(sec_tls);
	sec_tls = tls;
	return 0;
}

struct mp_tls_ctx *mgr_sec_tls(void)
{
	return sec_tls;
}

const struct mp_auth_key *mgr_sec_key(void)
{
	return sec_key.len ? &sec_key : NULL;
}

int mgr_sec_has_policy(void)
{
	return sec_policy.loaded;
}

static int rule_matches_who(const struct rule *r, const struct mgr_ident *id)
{
	switch (r->who) {
	case WHO_ANY:
		return 1;
	case WHO_KNOWN:
		return id->known;
	case WHO_UNKNOWN:
		return !id->known;
	case WHO_UID:
		return id->known && id->uid == r->id;
	case WHO_GID:
		if (!id->known)
			return 0;
		for (uint32_t i = 0; i < id->ngids && i < MGR_SEC_MAX_GIDS; i++)
			if (id->gids[i] == r->id)
				return 1;
		return 0;
	}
	return 0;
}

int mgr_sec_allowed(const struct mgr_ident *id, enum mgr_sec_op op,
		    const char *name)
{
	const struct policy *p = &sec_policy;

	if (!p->loaded)
		return 0;
	for (unsigned i = 0; i < p->nrules; i++) {
		const struct rule *r = &p->rules[i];

		if (!(r->ops & op) || !rule_matches_who(r, id) ||
		    fnmatch(r->pattern, name, 0) != 0)
			continue;
		return r->allow ? 0 : -EACCES;
	}
	return p->default_allow ? 0 : -EACCES;
}

/* ---- identity --------------------------------------------------------- */

/* Reduce a v4-mapped IPv6 address to IPv4 (a socket on "::" accepts IPv4
 * peers that way, and their own sockets are AF_INET). */
static void unmap_v4(struct sockaddr_storage *ss)
{
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	struct sockaddr_in s4;

	if (ss->ss_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
		return;
	memset(&s4, 0, sizeof(s4));
	s4.sin_family = AF_INET;
	s4.sin_port = s6->sin6_port;
	memcpy(&s4.sin_addr, &s6->sin6_addr.s6_addr[12], 4);
	memcpy(ss, &s4, sizeof(s4));
}

static int is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)ss)
				      ->sin_addr.s_addr) >>
			24) == 127;
	if (ss->ss_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(
			&((const struct sockaddr_in6 *)ss)->sin6_addr);
	return 0;
}

/* Copy the address and port of ss into a diag socket id half. */
static void diag_half(const struct sockaddr_storage *ss, __be16 *port,
		      __be32 addr[4])
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)ss;

		*port = s->sin_port;
		addr[0] = s->sin_addr.s_addr;
	} else {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)ss;

		*port = s->sin6_port;
		memcpy(addr, &s->sin6_addr, 16);
	}
}

/* uid of the socket at the other end of our connection (peer's local
 * address = peer, its remote = local); 0 or -errno. */
static int diag_uid(const struct sockaddr_storage *peer,
		    const struct sockaddr_storage *local, uint32_t *uid)
{
	struct {
		struct nlmsghdr nlh;
		struct inet_diag_req_v2 r;
	} req;
	union {
		struct nlmsghdr nlh;
		uint8_t b[8192];
	} ans;
	struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
	struct nlmsghdr *h;
	ssize_t n;
	int fd, len, rc = -ENOENT;

	fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (fd < 0)
		return -errno;
	memset(&req, 0, sizeof(req));
	req.nlh.nlmsg_len = sizeof(req);
	req.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	/* No NLM_F_DUMP: an exact lookup of one socket. */
	req.nlh.nlmsg_flags = NLM_F_REQUEST;
	req.nlh.nlmsg_seq = 1;
	req.r.sdiag_family = (uint8_t)peer->ss_family;
	req.r.sdiag_protocol = IPPROTO_TCP;
	req.r.idiag_states = ~0u;
	diag_half(peer, &req.r.id.idiag_sport, req.r.id.idiag_src);
	diag_half(local, &req.r.id.idiag_dport, req.r.id.idiag_dst);
	req.r.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
	req.r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
	if (sendto(fd, &req, sizeof(req), 0, (struct sockaddr *)&kernel,
		   sizeof(kernel)) < 0) {
		rc = -errno;
		goto out;
	}
	do
		n = recv(fd, &ans, sizeof(ans), 0);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		rc = -errno;
		goto out;
	}
	/* The answer is kernel data, but still checked like any input. */
	len = (int)n;
	for (h = &ans.nlh; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
		const struct inet_diag_msg *d;

		if (h->nlmsg_type == NLMSG_ERROR || h->nlmsg_type == NLMSG_DONE)
			break;
		if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
		    h->nlmsg_len < NLMSG_LENGTH(sizeof(*d)))
			continue;
		d = NLMSG_DATA(h);
		*uid = d->idiag_uid;
		rc = 0;
		break;
	}
out:
	close(fd);
	return rc;
}

void mgr_sec_identify(int fd, struct mgr_ident *id)
{
	struct sockaddr_storage peer, local;
	socklen_t pl = sizeof(peer), ll = sizeof(local);
	gid_t gids[MGR_SEC_MAX_GIDS];
	int ngids = MGR_SEC_MAX_GIDS;
	struct passwd pw, *pwp = NULL;
	char pwbuf[4096];

	memset(id, 0, sizeof(*id));
	if (getpeername(fd, (struct sockaddr *)&peer, &pl) < 0 ||
	    getsockname(fd, (struct sockaddr *)&local, &ll) < 0)
		return;
	unmap_v4(&peer);
	unmap_v4(&local);
	if (!is_loopback(&peer) || peer.ss_family != local.ss_family)
		return;
	if (diag_uid(&peer, &local, &id->uid) < 0)
		return;
	id->known = 1;
	/* Groups of that user as the user database says (primary first);
	 * a uid without an entry has no groups. */
	if (getpwuid_r(id->uid, &pw, pwbuf, sizeof(pwbuf), &pwp) != 0 || !pwp)
		return;
	if (getgrouplist(pw.pw_name, pw.pw_gid, gids, &ngids) < 0)
		ngids = MGR_SEC_MAX_GIDS; /* the first ones were stored */
	for (int i = 0; i < ngids && i < MGR_SEC_MAX_GIDS; i++)
		id->gids[id->ngids++] = (uint32_t)gids[i];
}

/* ---- per-peer connection counts -------------------------------------- */

int mgr_sec_peers_init(unsigned nworkers)
{
	size_t size = (size_t)nworkers * PEER_BUCKETS * sizeof(uint32_t);
	void *p;

	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		 -1, 0);
	if (p == MAP_FAILED)
		return -ENOMEM;
	/* A seed unknown to peers: nobody can aim at another address's
	 * counter on purpose. */
	if (mp_auth_nonce(peer_seed, sizeof(peer_seed)) < 0) {
		munmap(p, size);
		return -EIO;
	}
	peer_rows = p;
	peer_nrows = nworkers;
	return 0;
}

void mgr_sec_peers_reset(unsigned w)
{
	if (peer_rows && w < peer_nrows)
		memset(&peer_rows[(size_t)w * PEER_BUCKETS], 0,
		       PEER_BUCKETS * sizeof(uint32_t));
}

/* Counter index of the peer address of fd (port ignored), or -1.  The
 * hash is SipHash keyed with a secret random seed (libcrypto), so nobody
 * can pick an address that lands on another address's counter. */
static int peer_bucket(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	uint8_t out[16];
	const void *a;
	size_t alen, outlen = 0;
	uint32_t h;

	if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
		return -1;
	unmap_v4(&ss);
	if (ss.ss_family == AF_INET) {
		a = &((struct sockaddr_in *)&ss)->sin_addr;
		alen = 4;
	} else if (ss.ss_family == AF_INET6) {
		a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
		alen = 16;
	} else {
		return -1;
	}
	if (!EVP_Q_mac(NULL, "SIPHASH", NULL, NULL, NULL, peer_seed,
		       sizeof(peer_seed), a, alen, out, sizeof(out), &outlen) ||
	    outlen < sizeof(h))
		return -1;
	memcpy(&h, out, sizeof(h));
	return (int)(h & (PEER_BUCKETS - 1));
}

int mgr_sec_peer_take(unsigned w, int fd, int64_t limit)
{
	uint64_t total = 0;
	int b;

	if (!peer_rows || limit <= 0 || w >= peer_nrows)
		return -1;
	b = peer_bucket(fd);
	if (b < 0)
		return -1;
	/* Relaxed: the counters publish nothing but themselves; a stale
	 * read only lets a racing accept through (documented bound). */
	for (unsigned i = 0; i < peer_nrows; i++)
		total += __atomic_load_n(
			&peer_rows[(size_t)i * PEER_BUCKETS + b],
			__ATOMIC_RELAXED);
	if (total >= (uint64_t)limit)
		return -EUSERS;
	__atomic_add_fetch(&peer_rows[(size_t)w * PEER_BUCKETS + b], 1,
			   __ATOMIC_RELAXED);
	return b;
}

void mgr_sec_peer_put(unsigned w, int idx)
{
	uint32_t *p;

	if (!peer_rows || idx < 0 || idx >= PEER_BUCKETS || w >= peer_nrows)
		return;
	p = &peer_rows[(size_t)w * PEER_BUCKETS + idx];
	if (__atomic_load_n(p, __ATOMIC_RELAXED))
		__atomic_sub_fetch(p, 1, __ATOMIC_RELAXED);
}
