/*
 * mgr_config — configuration table, parser and reload (see mgr_config.h).
 *
 * One row per setting.  A value is parsed by its row's type into a
 * temporary, checked against the row's bounds, and only then stored: a
 * struct passed in never holds a half-parsed value.  mgr_config_load()
 * works on a copy and hands it out only when the whole file is good.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mgr_config.h"
#include "mgr_log.h"
#include "mgr_net.h"

enum cfg_type {
	T_INT,     /* decimal integer within [min, max] */
	T_SIZE,    /* integer with optional K, M, G suffix (x1024) */
	T_BOOL,    /* yes/no, on/off, true/false, 1/0 */
	T_ADDR,    /* host:port */
	T_ADDROFF, /* host:port or off */
	T_MODE,    /* octal permission bits */
	T_GROUP,   /* group name or gid; "none" */
	T_LEVEL,   /* error warning info debug */
	T_TARGET,  /* stderr syslog */
	T_WORKERS, /* N or auto */
	T_PATH,    /* absolute path, or none */
};

struct cfg_row {
	const char *name;
	enum cfg_type type;
	size_t off;
	int64_t min, max;
	const char *def;
	int reloadable;
};

#define F(x) offsetof(struct mgr_config, x)

/* Reloadable rows must stay in the order of struct mgr_config's reloadable
 * block: their index among reloadable rows is their slot in export(). */
static const struct cfg_row rows[] = {
	{ "listen", T_ADDR, F(listen), 0, 0, "127.0.0.1:9200", 0 },
	{ "status_listen", T_ADDROFF, F(status_listen), 0, 0,
	  MGR_STATUS_DEFAULT, 0 },
	{ "workers", T_WORKERS, F(workers), 1, MGR_MAX_WORKERS, "auto", 0 },
	{ "max_channels", T_INT, F(max_channels), 1, 1 << 20, "1024", 0 },
	{ "max_links", T_INT, F(max_links), 16, 1 << 22, "16384", 0 },
	{ "max_message_size", T_SIZE, F(max_message_size), 0, 65536, "65536",
	  0 },
	{ "ring_memory", T_SIZE, F(ring_memory), 1 << 20, (int64_t)1 << 36,
	  "64M", 0 },
	{ "shm_group", T_GROUP, F(shm_group), -1, INT32_MAX, "none", 0 },
	{ "shm_mode", T_MODE, F(shm_mode), 0600, 0660, "0600", 0 },
	{ "allow_remote", T_BOOL, F(allow_remote), 0, 1, "no", 0 },
	{ "auth_secret_file", T_PATH, F(auth_secret_file), 0, 0, "none", 0 },
	{ "access_policy", T_PATH, F(access_policy), 0, 0, "none", 0 },
	{ "tls_cert_file", T_PATH, F(tls_cert_file), 0, 0, "none", 0 },
	{ "tls_key_file", T_PATH, F(tls_key_file), 0, 0, "none", 0 },
	{ "max_connections_per_peer", T_INT, F(max_connections_per_peer), 0,
	  1 << 20, "1024", 0 },
	{ "max_conn_output", T_SIZE, F(max_conn_output), 512 * 1024,
	  (int64_t)1 << 30, "4M", 0 },
	{ "max_connections", T_INT, F(max_connections), 1, 1 << 20, "4096",
	  1 },
	{ "default_buffered", T_INT, F(default_buffered), 1, 1 << 20, "256",
	  1 },
	{ "handshake_timeout_ms", T_INT, F(handshake_timeout_ms), 10, 600000,
	  "5000", 1 },
	{ "resume_grace_ms", T_INT, F(resume_grace_ms), 0, 3600000, "5000",
	  1 },
	{ "write_timeout_ms", T_INT, F(write_timeout_ms), 100, 3600000,
	  "30000", 1 },
	{ "log_level", T_LEVEL, F(log_level), MGR_LOG_ERROR, MGR_LOG_DEBUG,
	  "info", 1 },
	{ "log_target", T_TARGET, F(log_target), MGR_LOG_STDERR,
	  MGR_LOG_SYSLOG, "stderr", 1 },
};

#define NROWS (sizeof(rows) / sizeof(rows[0]))

static const struct cfg_row *find_row(const char *key)
{
	for (size_t i = 0; i < NROWS; i++)
		if (strcmp(rows[i].name, key) == 0)
			return &rows[i];
	return NULL;
}

static int64_t *num_field(struct mgr_config *c, const struct cfg_row *r)
{
	return (int64_t *)((char *)c + r->off);
}

static const int64_t *cnum_field(const struct mgr_config *c,
				 const struct cfg_row *r)
{
	return (const int64_t *)((const char *)c + r->off);
}

static int is_text_type(enum cfg_type t)
{
	return t == T_ADDR || t == T_ADDROFF || t == T_PATH;
}

/* Parse a decimal (or, with base 8, octal) integer; 0 or -EINVAL. */
static int parse_int(const char *s, int base, int64_t *out)
{
	char *end;
	long long v;

	if (!*s || (!isdigit((unsigned char)*s) && *s != '-'))
		return -EINVAL;
	errno = 0;
	v = strtoll(s, &end, base);
	if (errno || *end)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_size(const char *s, int64_t *out)
{
	char buf[32];
	size_t n = strlen(s);
	int64_t mult = 1, v;

	if (n == 0 || n >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s, n + 1);
	switch (toupper((unsigned char)buf[n - 1])) {
	case 'K':
		mult = 1024;
		break;
	case 'M':
		mult = 1024 * 1024;
		break;
	case 'G':
		mult = 1024 * 1024 * 1024;
		break;
	}
	if (mult != 1)
		buf[n - 1] = 0;
	if (parse_int(buf, 10, &v) < 0 || v < 0 || v > INT64_MAX / mult)
		return -EINVAL;
	*out = v * mult;
	return 0;
}

static int word_index(const char *s, const char *const *words, int n)
{
	for (int i = 0; i < n; i++)
		if (strcmp(s, words[i]) == 0)
			return i;
	return -1;
}

/* Parse value for row r into c.  On failure return -EINVAL with a reason. */
static int parse_value(struct mgr_config *c, const struct cfg_row *r,
		       const char *v, const char **why)
{
	static const char *const levels[] = { "error", "warning", "info",
					      "debug" };
	static const char *const targets[] = { "stderr", "syslog" };
	static const char *const yes[] = { "yes", "on", "true", "1" };
	static const char *const no[] = { "no", "off", "false", "0" };
	struct mgr_addr a;
	int64_t x = 0;
	long ncpu;

	switch (r->type) {
	case T_ADDROFF:
		if (strcmp(v, "off") == 0)
			goto store_text;
		/* fall through */
	case T_ADDR:
		if (strlen(v) >= MGR_ADDR_MAX || mgr_net_parse_addr(v, &a)) {
			*why = "expected host:port (numeric address, "
			       "localhost or *)";
			return -EINVAL;
		}
store_text:
		snprintf((char *)c + r->off, MGR_ADDR_MAX, "%s", v);
		return 0;
	case T_PATH:
		if (strcmp(v, "none") != 0 &&
		    (v[0] != '/' || strlen(v) >= MGR_PATH_MAX)) {
			*why = "expected an absolute path or none";
			return -EINVAL;
		}
		snprintf((char *)c + r->off, MGR_PATH_MAX, "%s", v);
		return 0;
	case T_INT:
		if (parse_int(v, 10, &x) < 0) {
			*why = "expected an integer";
			return -EINVAL;
		}
		break;
	case T_SIZE:
		if (parse_size(v, &x) < 0) {
			*why = "expected a size (bytes, or with K, M, G)";
			return -EINVAL;
		}
		break;
	case T_BOOL:
		if (word_index(v, yes, 4) >= 0)
			x = 1;
		else if (word_index(v, no, 4) >= 0)
			x = 0;
		else {
			*why = "expected yes or no";
			return -EINVAL;
		}
		break;
	case T_MODE:
		if (parse_int(v, 8, &x) < 0) {
			*why = "expected an octal mode";
			return -EINVAL;
		}
		if ((x & ~(int64_t)0660) || (x & 0600) != 0600) {
			*why = "mode must include owner rw and may add group "
			       "bits only (0600 or 0660; never world access)";
			return -EINVAL;
		}
		break;
	case T_GROUP:
		if (strcmp(v, "none") == 0) {
			x = -1;
		} else if (parse_int(v, 10, &x) < 0) {
			struct group *g = getgrnam(v);

			if (!g) {
				*why = "no such group";
				return -EINVAL;
			}
			x = g->gr_gid;
		}
		break;
	case T_LEVEL:
		x = word_index(v, levels, 4);
		if (x < 0) {
			*why = "expected error, warning, info or debug";
			return -EINVAL;
		}
		break;
	case T_TARGET:
		x = word_index(v, targets, 2);
		if (x < 0) {
			*why = "expected stderr or syslog";
			return -EINVAL;
		}
		break;
	case T_WORKERS:
		if (strcmp(v, "auto") == 0) {
			ncpu = sysconf(_SC_NPROCESSORS_ONLN);
			x = ncpu < r->min ? r->min : ncpu;
			if (x > r->max)
				x = r->max;
		} else if (parse_int(v, 10, &x) < 0) {
			*why = "expected a number of workers or auto";
			return -EINVAL;
		}
		break;
	}
	if (x < r->min || x > r->max) {
		*why = "value out of range";
		return -EINVAL;
	}
	*num_field(c, r) = x;
	return 0;
}

static void range_reason(const struct cfg_row *r, char *buf, size_t len)
{
	if (r->type == T_INT || r->type == T_SIZE || r->type == T_WORKERS)
		snprintf(buf, len, "value out of range [%lld, %lld]",
			 (long long)r->min, (long long)r->max);
	else
		snprintf(buf, len, "value out of range");
}

int mgr_config_set(struct mgr_config *c, const char *key, const char *value,
		   const char *origin, int line, char *err, size_t errlen)
{
	const struct cfg_row *r = find_row(key);
	const char *why = NULL;
	char where[300], rbuf[96];

	if (line > 0)
		snprintf(where, sizeof(where), "%s:%d", origin, line);
	else
		snprintf(where, sizeof(where), "%s", origin);
	if (!r) {
		snprintf(err, errlen, "%s: %s: unknown key", where, key);
		return -EINVAL;
	}
	if (parse_value(c, r, value, &why) < 0) {
		if (strcmp(why, "value out of range") == 0) {
			range_reason(r, rbuf, sizeof(rbuf));
			why = rbuf;
		}
		snprintf(err, errlen, "%s: %s: %s: '%s'", where, key, why,
			 value);
		return -EINVAL;
	}
	return 0;
}

void mgr_config_defaults(struct mgr_config *c)
{
	char err[MGR_ERR_MAX];

	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < NROWS; i++)
		/* Defaults are table text parsed like the file; a failure
		 * here is a bug in the table, caught by the unit tests. */
		if (mgr_config_set(c, rows[i].name, rows[i].def, "defaults", 0,
				   err, sizeof(err)))
			mgr_log(MGR_LOG_ERROR, "MESSIP-MGR-CONFIG", "%s", err);
}

int mgr_config_check(const struct mgr_config *c, const char *origin,
		     char *err, size_t errlen)
{
	struct mgr_addr a;

	if (mgr_net_parse_addr(c->listen, &a) < 0) {
		snprintf(err, errlen, "%s: listen: bad address '%s'", origin,
			 c->listen);
		return -EINVAL;
	}
	if (!mgr_net_is_loopback(&a) && !c->allow_remote &&
	    strcmp(c->auth_secret_file, "none") == 0) {
		snprintf(err, errlen,
			 "%s: listen: '%s' is not a loopback address and no "
			 "authentication is configured; set "
			 "'auth_secret_file /path/to/secret' (a file only its "
			 "owner can read; clients use the same secret, see "
			 "messip(3)), or 'allow_remote yes' to accept "
			 "unauthenticated remote clients",
			 origin, c->listen);
		return -EINVAL;
	}
	/* TLS needs both halves. */
	if ((strcmp(c->tls_cert_file, "none") == 0) !=
	    (strcmp(c->tls_key_file, "none") == 0)) {
		snprintf(err, errlen,
			 "%s: tls_cert_file and tls_key_file: set both (the "
			 "certificate chain and its private key, PEM) or "
			 "neither",
			 origin);
		return -EINVAL;
	}
	/* The status page shows ids and peers: same rule as the API. */
	if (strcmp(c->status_listen, "off") != 0 &&
	    (mgr_net_parse_addr(c->status_listen, &a) < 0 ||
	     (!mgr_net_is_loopback(&a) && !c->allow_remote))) {
		snprintf(err, errlen,
			 "%s: status_listen: '%s' is not a loopback address; "
			 "set 'allow_remote yes' to serve the status page "
			 "beyond this host",
			 origin, c->status_listen);
		return -EINVAL;
	}
	return 0;
}

/* Split a line into key and value; returns 0 (blank/comment), 1 (got a
 * pair), -EINVAL (key without value, or junk after the value). */
static int split_line(char *s, char **key, char **val)
{
	char *p, *hash = strchr(s, '#');

	if (hash)
		*hash = 0;
	p = s;
	while (isspace((unsigned char)*p))
		p++;
	if (!*p)
		return 0;
	*key = p;
	while (*p && !isspace((unsigned char)*p))
		p++;
	if (!*p)
		return -EINVAL;
	*p++ = 0;
	while (isspace((unsigned char)*p))
		p++;
	*val = p;
	while (*p && !isspace((unsigned char)*p))
		p++;
	if (*p) {
		*p++ = 0;
		while (isspace((unsigned char)*p))
			p++;
		if (*p)
			return -EINVAL;
	}
	return **val ? 1 : -EINVAL;
}

int mgr_config_load(struct mgr_config *c, const char *path, char *err,
		    size_t errlen)
{
	struct mgr_config tmp;
	char line[1024], *key, *val;
	int lineno = 0, rc = 0, listen_line = 0;
	FILE *f;

	f = fopen(path, "re");
	if (!f) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		return rc;
	}
	mgr_config_defaults(&tmp);
	while (fgets(line, sizeof(line), f)) {
		size_t n = strlen(line);
		int k;

		lineno++;
		if (n == sizeof(line) - 1 && line[n - 1] != '\n') {
			snprintf(err, errlen, "%s:%d: line too long", path,
				 lineno);
			rc = -EINVAL;
			break;
		}
		k = split_line(line, &key, &val);
		if (k == 0)
			continue;
		if (k < 0) {
			snprintf(err, errlen,
				 "%s:%d: %s: expected 'key value'", path,
				 lineno, key);
			rc = -EINVAL;
			break;
		}
		rc = mgr_config_set(&tmp, key, val, path, lineno, err, errlen);
		if (rc)
			break;
		if (strcmp(key, "listen") == 0 ||
		    strcmp(key, "status_listen") == 0 ||
		    strcmp(key, "allow_remote") == 0 ||
		    strcmp(key, "auth_secret_file") == 0 ||
		    strcmp(key, "tls_cert_file") == 0 ||
		    strcmp(key, "tls_key_file") == 0)
			listen_line = lineno;
	}
	if (!rc && ferror(f)) {
		rc = -EIO;
		snprintf(err, errlen, "%s: read error", path);
	}
	fclose(f);
	if (!rc) {
		char where[300];

		snprintf(where, sizeof(where), "%s:%d", path, listen_line);
		rc = mgr_config_check(&tmp, listen_line ? where : path, err,
				      errlen);
	}
	if (!rc)
		*c = tmp;
	return rc;
}

int mgr_config_apply_reload(struct mgr_config *c,
			    const struct mgr_config *fresh, char *changed,
			    size_t changedlen)
{
	size_t used = 0;
	int n = 0;

	if (changedlen)
		changed[0] = 0;
	for (size_t i = 0; i < NROWS; i++) {
		const struct cfg_row *r = &rows[i];
		int differs;

		if (is_text_type(r->type))
			differs = strcmp((const char *)c + r->off,
					 (const char *)fresh + r->off) != 0;
		else
			differs = *cnum_field(c, r) != *cnum_field(fresh, r);
		if (!differs)
			continue;
		if (r->reloadable) {
			*num_field(c, r) = *cnum_field(fresh, r);
			n++;
		} else if (used + strlen(r->name) + 3 < changedlen) {
			used += (size_t)snprintf(changed + used,
						 changedlen - used, "%s%s",
						 used ? ", " : "", r->name);
		}
	}
	return n;
}

void mgr_config_export(const struct mgr_config *c,
		       int64_t vals[MGR_CFG_RELOADABLE])
{
	int k = 0;

	for (size_t i = 0; i < NROWS && k < MGR_CFG_RELOADABLE; i++)
		if (rows[i].reloadable)
			vals[k++] = *cnum_field(c, &rows[i]);
}

int mgr_config_import(struct mgr_config *c,
		      const int64_t vals[MGR_CFG_RELOADABLE])
{
	int k = 0, bad = 0;

	for (size_t i = 0; i < NROWS && k < MGR_CFG_RELOADABLE; i++) {
		const struct cfg_row *r = &rows[i];

		if (!r->reloadable)
			continue;
		if (vals[k] < r->min || vals[k] > r->max)
			bad++;
		else
			*num_field(c, r) = vals[k];
		k++;
	}
	return bad;
}
