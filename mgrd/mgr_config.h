/*
 * mgr_config — the manager's configuration: a table of settings, the file
 * parser, and reload support.
 *
 * The file holds one `key value` per line; `#` starts a comment; blank
 * lines are ignored.  Every setting is a row of one table (name, type,
 * bounds, default, reloadable), so parsing, defaults, bounds checks, -t and
 * reload all run the same code.  Defaults are written as text in the table
 * and go through the same parser as the file.
 *
 * Invariants: a struct mgr_config that mgr_config_load() returned 0 for
 * holds only values inside their rows' bounds, and passed the cross-key
 * checks (mgr_config_check()).  A load that fails leaves *c untouched.
 */
#ifndef MGR_CONFIG_H
#define MGR_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define MGR_ADDR_MAX   80
#define MGR_PATH_MAX   256
#define MGR_ERR_MAX    512
#define MGR_MAX_WORKERS 64    /* worker bitmasks in the segment are 64-bit */
#define MGR_STATUS_DEFAULT "127.0.0.1:9201" /* -p PORT moves it to PORT + 1 */

struct mgr_config {
	/* non-reloadable */
	char    listen[MGR_ADDR_MAX];        /* "host:port" */
	char    status_listen[MGR_ADDR_MAX]; /* "host:port" or "off" */
	int64_t workers;
	int64_t max_channels;
	int64_t max_links;          /* (client, channel) connections */
	int64_t max_message_size;
	int64_t ring_memory;        /* bytes for all rings */
	int64_t shm_group;          /* gid, -1: leave as is */
	int64_t shm_mode;
	int64_t allow_remote;
	char    auth_secret_file[MGR_PATH_MAX]; /* absolute path or "none" */
	char    access_policy[MGR_PATH_MAX];    /* absolute path or "none" */
	char    tls_cert_file[MGR_PATH_MAX];    /* absolute path or "none" */
	char    tls_key_file[MGR_PATH_MAX];     /* absolute path or "none" */
	int64_t max_connections_per_peer;       /* 0: no limit */
	int64_t max_conn_output;    /* output bytes buffered per connection */
	/* reloadable (MGR_CFG_RELOADABLE lists them, in this order) */
	int64_t max_connections;
	int64_t default_buffered;
	int64_t handshake_timeout_ms;
	int64_t resume_grace_ms;
	int64_t write_timeout_ms;   /* output not drained for this long: drop */
	int64_t log_level;          /* enum mgr_log_level */
	int64_t log_target;         /* enum mgr_log_target */
};

/* Number of reloadable settings (their values travel to the workers as an
 * array, see mgr_config_export() / mgr_config_import()). */
#define MGR_CFG_RELOADABLE 7

/* Built-in defaults (every row's default).  workers defaults to the
 * number of online CPUs (clamped to the row's bounds). */
void mgr_config_defaults(struct mgr_config *c);

/*
 * Parse the file at path on top of the defaults and check the result.
 * Returns 0 and fills *c, or, leaving *c untouched:
 *   -ENOENT   the file does not exist (err: "path: No such file...");
 *   -EACCES / other -errno: the file cannot be read;
 *   -EINVAL   a line is wrong: err holds "path:line: key: reason".
 * err (MGR_ERR_MAX bytes) is always a NUL-terminated message on failure.
 */
int mgr_config_load(struct mgr_config *c, const char *path, char *err,
		    size_t errlen);

/*
 * Set one key from text as if read from a file line (used for -p/-w
 * overrides too, with origin "command line").  0 or -EINVAL with err.
 */
int mgr_config_set(struct mgr_config *c, const char *key, const char *value,
		   const char *origin, int line, char *err, size_t errlen);

/*
 * Cross-key checks: a non-loopback listen address needs auth_secret_file
 * (or, to accept unauthenticated remote clients on purpose, allow_remote
 * yes); a non-loopback status_listen needs allow_remote yes (the status
 * page has no authentication).  0 or -EINVAL with err ("origin: key:
 * reason", naming the key to set).
 */
int mgr_config_check(const struct mgr_config *c, const char *origin,
		     char *err, size_t errlen);

/*
 * Reload: copy the reloadable settings of fresh into *c.  Non-reloadable
 * settings that differ are listed in changed (comma-separated names, ""
 * if none) so the caller can say they need a restart.  Returns the number
 * of reloadable settings whose value changed.
 */
int mgr_config_apply_reload(struct mgr_config *c,
			    const struct mgr_config *fresh, char *changed,
			    size_t changedlen);

/* Reloadable values as an array (for the segment). */
void mgr_config_export(const struct mgr_config *c,
		       int64_t vals[MGR_CFG_RELOADABLE]);

/*
 * Take reloadable values from the segment (untrusted): each value is
 * checked against its row's bounds and an out-of-range value is ignored.
 * Returns the number of values ignored.
 */
int mgr_config_import(struct mgr_config *c,
		      const int64_t vals[MGR_CFG_RELOADABLE]);

#endif
