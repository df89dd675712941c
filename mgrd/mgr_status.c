/*
 * mgr_status — the status process, its HTTP server, the segment snapshot
 * and the three renderers (see mgr_status.h for who serves, how the
 * segment is read and the HTTP limits).
 *
 * Invariants: a struct hconn is FREE (fd -1, no output) or owns one
 * socket; its input never holds more than MGR_STATUS_REQ_MAX bytes and its
 * output is one rendered answer, freed when the connection closes.  Every
 * connection has a deadline and is closed at it, whatever the peer does.
 * Nothing in this process writes the segment: its mapping is read-only.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mgr_log.h"
#include "mgr_net.h"
#include "mgr_status.h"
#include "mgr_utf8.h"
#include "mgr_worker.h"
#include "mp_ring.h"
#include "mp_time.h"

#define BACKOFF_MIN_MS	100
#define BACKOFF_MAX_MS	5000
#define QUICK_DEATH_NS	(1000 * 1000000LL)
#define STOP_WAIT_MS	1000
#define LINGER_MS	1000
#define LINGER_MAX	65536 /* bytes discarded after answering */
#define TICK_MS		250
#define SETTINGS_NS	(1000 * 1000000LL)
#define ROWMAP_SIZE	2048 /* > 2 * MGR_STATUS_MAX_ROWS, power of 2 */
#define TARGET_MAX	1024
#define ACCEPT_PAUSE_NS (100 * 1000000LL)

_Static_assert(ROWMAP_SIZE >= 2 * MGR_STATUS_MAX_ROWS, "row map size");

/* ---- output buffer --------------------------------------------------- */

void mgr_sbuf_free(struct mgr_sbuf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

static int sb_reserve(struct mgr_sbuf *b, size_t more)
{
	size_t ncap;
	char *np;

	if (b->full)
		return -ENOBUFS;
	if (more > b->max || b->len > b->max - more) {
		b->full = 1;
		return -ENOBUFS;
	}
	if (b->len + more <= b->cap)
		return 0;
	ncap = b->cap ? b->cap : 16384;
	while (ncap < b->len + more)
		ncap *= 2;
	if (ncap > b->max)
		ncap = b->max;
	np = realloc(b->p, ncap);
	if (!np) {
		b->full = 1;
		return -ENOBUFS;
	}
	b->p = np;
	b->cap = ncap;
	return 0;
}

static void sb_add(struct mgr_sbuf *b, const char *s, size_t n)
{
	if (sb_reserve(b, n) == 0) {
		memcpy(b->p + b->len, s, n);
		b->len += n;
	}
}

static void sb_puts(struct mgr_sbuf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

static void sb_printf(struct mgr_sbuf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void sb_printf(struct mgr_sbuf *b, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		/* Formats here are short; untrusted text goes through
		 * sb_text(), never through a format. */
		b->full = 1;
		return;
	}
	sb_add(b, tmp, (size_t)n);
}

enum { ESC_HTML, ESC_JSON };

/* Append text from the segment (at most max bytes, stops at NUL),
 * escaped for HTML or for a JSON string.  Invalid UTF-8 and control
 * characters never pass through raw. */
static void sb_text(struct mgr_sbuf *b, const char *s, size_t max, int mode)
{
	static const char repl[] = "\xef\xbf\xbd"; /* U+FFFD */
	const unsigned char *u = (const unsigned char *)s;
	size_t n = strnlen(s, max);

	for (size_t i = 0; i < n;) {
		unsigned char c = u[i];
		size_t len;

		if (c < 0x20 || c == 0x7f) {
			if (mode == ESC_JSON)
				sb_printf(b, "\\u%04x", c);
			else
				sb_add(b, repl, 3);
			i++;
			continue;
		}
		if (c < 0x80) {
			if (mode == ESC_HTML && c == '&')
				sb_puts(b, "&amp;");
			else if (mode == ESC_HTML && c == '<')
				sb_puts(b, "&lt;");
			else if (mode == ESC_HTML && c == '>')
				sb_puts(b, "&gt;");
			else if (mode == ESC_HTML && c == '"')
				sb_puts(b, "&quot;");
			else if (mode == ESC_HTML && c == '\'')
				sb_puts(b, "&#39;");
			else if (mode == ESC_JSON && (c == '"' || c == '\\')) {
				char e[2] = {'\\', (char)c};

				sb_add(b, e, 2);
			} else {
				sb_add(b, (const char *)&u[i], 1);
			}
			i++;
			continue;
		}
		len = mgr_utf8_len(u + i, n - i, 0);
		if (len == 0) {
			sb_add(b, repl, 3);
			i++;
		} else {
			sb_add(b, (const char *)&u[i], len);
			i += len;
		}
	}
}

static void sb_html(struct mgr_sbuf *b, const char *s, size_t max)
{
	sb_text(b, s, max, ESC_HTML);
}

/* A JSON string value, quotes included. */
static void sb_jstr(struct mgr_sbuf *b, const char *s, size_t max)
{
	sb_puts(b, "\"");
	sb_text(b, s, max, ESC_JSON);
	sb_puts(b, "\"");
}

/* ---- snapshot ---------------------------------------------------------- */

int mgr_status_snap_init(struct mgr_status_snap *s,
			 const struct mgr_layout *lay)
{
	memset(s, 0, sizeof(*s));
	s->regs_cap = lay->max_regs < MGR_STATUS_MAX_ROWS ? lay->max_regs
							  : MGR_STATUS_MAX_ROWS;
	s->chans_cap = lay->max_channels < MGR_STATUS_MAX_ROWS
			       ? lay->max_channels
			       : MGR_STATUS_MAX_ROWS;
	s->regs = calloc(s->regs_cap ? s->regs_cap : 1, sizeof(*s->regs));
	s->chans = calloc(s->chans_cap ? s->chans_cap : 1, sizeof(*s->chans));
	if (!s->regs || !s->chans) {
		mgr_status_snap_free(s);
		return -ENOMEM;
	}
	return 0;
}

void mgr_status_snap_free(struct mgr_status_snap *s)
{
	free(s->regs);
	free(s->chans);
	s->regs = NULL;
	s->chans = NULL;
}

static int cmp_reg(const void *a, const void *b)
{
	const struct mgr_status_reg *x = a, *y = b;

	return x->regno < y->regno ? -1 : x->regno > y->regno;
}

static int cmp_ch(const void *a, const void *b)
{
	const struct mgr_status_ch *x = a, *y = b;

	return strcmp(x->name, y->name);
}

/* Copy registration i if it holds a stable, valid record.  1 if *out was
 * filled, 0 if the slot is free, -1 if it moved or is invalid. */
static int read_reg(struct mgr_state *st, uint32_t i, struct mgr_reg_sh *out)
{
	struct mgr_reg_sh *r = &st->regs[i];
	uint32_t s1, n1, s2, n2;

	/* Acquire on state: a creator writes the record, then its state;
	 * seeing the state, we see the record it published. */
	s1 = __atomic_load_n(&r->state, __ATOMIC_ACQUIRE);
	if (s1 == REG_FREE)
		return 0;
	n1 = __atomic_load_n(&r->regno, __ATOMIC_RELAXED);
	memcpy(out, r, sizeof(*out));
	/* Acquire fence: the copy above is complete before the re-reads
	 * below, so an unchanged (state, regno) means no reuse meanwhile. */
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	s2 = __atomic_load_n(&r->state, __ATOMIC_RELAXED);
	n2 = __atomic_load_n(&r->regno, __ATOMIC_RELAXED);
	if (s1 != s2 || n1 != n2 || out->state != s1 || out->regno != n1 ||
	    s1 > REG_DEAD || n1 == 0)
		return -1;
	out->id[sizeof(out->id) - 1] = 0;
	out->peer[sizeof(out->peer) - 1] = 0;
	return 1;
}

/* Same for channel slot: live and of one generation throughout. */
static int read_ch(struct mgr_state *st, uint32_t slot, struct mgr_ch_sh *out)
{
	struct mgr_ch_sh *ch = &st->chans[slot];
	uint32_t g1, g2, s2;

	/* Acquire: pairs with the release store of state when the channel
	 * was created (its fields were written before). */
	if (__atomic_load_n(&ch->state, __ATOMIC_ACQUIRE) != CH_LIVE)
		return 0;
	g1 = __atomic_load_n(&ch->gen, __ATOMIC_ACQUIRE);
	memcpy(out, ch, sizeof(*out));
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	g2 = __atomic_load_n(&ch->gen, __ATOMIC_RELAXED);
	s2 = __atomic_load_n(&ch->state, __ATOMIC_RELAXED);
	if (g1 != g2 || s2 != CH_LIVE || out->gen != g1 ||
	    out->state != CH_LIVE)
		return -1;
	out->name[sizeof(out->name) - 1] = 0;
	out->addr[sizeof(out->addr) - 1] = 0;
	return 1;
}

/* Registration index -> row, for the rows kept (open addressing). */
struct rowmap {
	uint32_t key[ROWMAP_SIZE]; /* index + 1; 0: empty */
	uint32_t row[ROWMAP_SIZE];
};

static void rowmap_put(struct rowmap *m, uint32_t index, uint32_t row)
{
	uint32_t h = (index * 2654435761u) & (ROWMAP_SIZE - 1);

	while (m->key[h])
		h = (h + 1) & (ROWMAP_SIZE - 1);
	m->key[h] = index + 1;
	m->row[h] = row;
}

static int rowmap_get(const struct rowmap *m, uint32_t index)
{
	uint32_t h = (index * 2654435761u) & (ROWMAP_SIZE - 1);

	while (m->key[h]) {
		if (m->key[h] == index + 1)
			return (int)m->row[h];
		h = (h + 1) & (ROWMAP_SIZE - 1);
	}
	return -1;
}

static void snap_workers(struct mgr_state *st, struct mgr_status_snap *s)
{
	int64_t mono = mp_time_now_ns();

	for (uint32_t w = 0; w < s->nworkers; w++) {
		struct mgr_worker_sh *ws = &st->workers[w];
		struct mgr_status_worker *o = &s->workers[w];
		int64_t started;

		/* Counters are relaxed: each is a number on its own. */
		o->pid = __atomic_load_n(&ws->pid, __ATOMIC_ACQUIRE);
		o->running = __atomic_load_n(&ws->running, __ATOMIC_RELAXED);
		started = __atomic_load_n(&ws->started_ns, __ATOMIC_RELAXED);
		o->uptime_s = o->pid && started > 0 && started <= mono
				      ? (mono - started) / 1000000000LL
				      : -1;
		o->connections =
			__atomic_load_n(&ws->connections, __ATOMIC_RELAXED);
		o->registrations =
			__atomic_load_n(&ws->registrations, __ATOMIC_RELAXED);
		o->channels = __atomic_load_n(&ws->channels, __ATOMIC_RELAXED);
		o->accepted = __atomic_load_n(&ws->accepted, __ATOMIC_RELAXED);
		o->delivered =
			__atomic_load_n(&ws->delivered, __ATOMIC_RELAXED);
		o->requests = __atomic_load_n(&ws->requests, __ATOMIC_RELAXED);
		o->errors = __atomic_load_n(&ws->errors, __ATOMIC_RELAXED);
		o->restarts = __atomic_load_n(&ws->restarts, __ATOMIC_RELAXED);
	}
}

static void snap_regs(struct mgr_state *st, struct mgr_status_snap *s)
{
	for (uint32_t i = 0; i < st->lay.max_regs; i++) {
		struct mgr_reg_sh r;
		struct mgr_status_reg *o;
		uint32_t state;
		int k = read_reg(st, i, &r);

		if (k == 0)
			continue;
		if (k < 0) {
			s->skipped++;
			continue;
		}
		state = r.state;
		/* LIVE but its worker died: orphaned, housekeeping has not
		 * caught up yet.  Acquire pairs with the master's epoch
		 * bump. */
		if (state == REG_LIVE &&
		    (r.worker >= st->lay.nworkers ||
		     __atomic_load_n(&st->workers[r.worker].epoch,
				     __ATOMIC_ACQUIRE) != r.epoch))
			state = REG_ORPHAN;
		if (state == REG_LIVE)
			s->regs_live++;
		else if (state == REG_ORPHAN)
			s->regs_orphan++;
		else
			s->regs_dead++;
		if (s->nregs == s->regs_cap) {
			s->regs_more++;
			continue;
		}
		o = &s->regs[s->nregs++];
		memset(o, 0, sizeof(*o));
		o->index = i;
		o->regno = r.regno;
		o->state = state;
		o->worker = state == REG_LIVE ? r.worker : MGR_NONE;
		o->pid = r.pid;
		o->since = r.since;
		memcpy(o->id, r.id, sizeof(o->id));
		memcpy(o->peer, r.peer, sizeof(o->peer));
	}
	qsort(s->regs, s->nregs, sizeof(*s->regs), cmp_reg);
}

/* Queued records and capacity of the ring of slot (read-only attach:
 * mp_ring_attach validates the header against the trusted ring size). */
static void ring_fill(struct mgr_state *st, uint32_t slot,
		      struct mgr_status_ch *o)
{
	mp_ring_t r;
	int n;

	o->queued = -1;
	if (mp_ring_attach(&r, st->rings + (size_t)slot * st->lay.ring_size,
			   st->lay.ring_size) < 0)
		return;
	o->capacity = r.max_records;
	n = mp_ring_count(&r);
	o->queued = n < 0 ? -1 : n;
}

static void snap_chans(struct mgr_state *st, struct mgr_status_snap *s,
		       const struct rowmap *map)
{
	for (uint32_t slot = 0; slot < st->lay.max_channels; slot++) {
		struct mgr_status_ch tmp, *o;
		struct mgr_reg_sh srv;
		struct mgr_ch_sh ch;
		int k = read_ch(st, slot, &ch), row;

		if (k == 0)
			continue;
		if (k < 0) {
			s->skipped++;
			continue;
		}
		s->channels++;
		o = s->nchans < s->chans_cap ? &s->chans[s->nchans] : &tmp;
		memset(o, 0, sizeof(*o));
		o->slot = slot;
		o->capacity = ch.capacity;
		o->nclients = ch.nclients;
		o->server_regno = ch.creator_regno;
		o->since = ch.since;
		memcpy(o->name, ch.name, sizeof(o->name));
		ring_fill(st, slot, o);
		if (o->queued > 0)
			s->queued += (uint64_t)o->queued;
		if (ch.creator < st->lay.max_regs) {
			row = rowmap_get(map, ch.creator);
			if (row >= 0 && s->regs[row].regno == ch.creator_regno)
				s->regs[row].serves++;
			if (o != &tmp && read_reg(st, ch.creator, &srv) > 0 &&
			    srv.regno == ch.creator_regno) {
				memcpy(o->server_id, srv.id,
				       sizeof(o->server_id));
				memcpy(o->server_peer, srv.peer,
				       sizeof(o->server_peer));
			}
		}
		if (o == &tmp)
			s->chans_more++;
		else
			s->nchans++;
	}
	qsort(s->chans, s->nchans, sizeof(*s->chans), cmp_ch);
}

static void snap_links(struct mgr_state *st, struct mgr_status_snap *s,
		       const struct rowmap *map)
{
	for (uint32_t i = 0; i < st->lay.max_links; i++) {
		struct mgr_link_sh *l = &st->links[i];
		uint32_t state = __atomic_load_n(&l->state, __ATOMIC_ACQUIRE);
		uint32_t reg, regno;
		int row;

		if (state == LINK_FREE)
			continue;
		if (state == LINK_EV_DISCONNECT || state == LINK_EV_DISMISSED) {
			s->links_pending++;
			continue;
		}
		if (state != LINK_CONNECTED) {
			s->skipped++;
			continue;
		}
		s->links++;
		reg = __atomic_load_n(&l->reg, __ATOMIC_RELAXED);
		regno = __atomic_load_n(&l->regno, __ATOMIC_RELAXED);
		if (reg >= st->lay.max_regs)
			continue;
		row = rowmap_get(map, reg);
		if (row >= 0 && s->regs[row].regno == regno)
			s->regs[row].connected++;
	}
}

void mgr_status_snapshot(struct mgr_state *st, struct mgr_status_snap *s)
{
	static struct rowmap map;

	s->now = (int64_t)time(NULL);
	s->nworkers = st->lay.nworkers;
	s->max_regs = st->lay.max_regs;
	s->max_channels = st->lay.max_channels;
	s->max_links = st->lay.max_links;
	s->master_pid = __atomic_load_n(&st->sh->master_pid, __ATOMIC_RELAXED);
	s->regs_live = s->regs_orphan = s->regs_dead = 0;
	s->channels = s->links = s->links_pending = 0;
	s->queued = 0;
	s->skipped = 0;
	s->nregs = s->regs_more = 0;
	s->nchans = s->chans_more = 0;
	snap_workers(st, s);
	snap_regs(st, s);
	memset(&map, 0, sizeof(map));
	for (uint32_t r = 0; r < s->nregs; r++)
		rowmap_put(&map, s->regs[r].index, r);
	snap_chans(st, s, &map);
	snap_links(st, s, &map);
}

/* ---- renderers ---------------------------------------------------------- */

static const char *reg_state_name(uint32_t state)
{
	switch (state) {
	case REG_LIVE:
		return "live";
	case REG_ORPHAN:
		return "orphan";
	case REG_DEAD:
		return "dead";
	}
	return "?";
}

static void fmt_time(int64_t t, char *buf, size_t n)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (t <= 0 || !gmtime_r(&tt, &tm) ||
	    !strftime(buf, n, "%Y-%m-%d %H:%M:%S", &tm))
		snprintf(buf, n, "-");
}

static void fmt_dur(int64_t s, char *buf, size_t n)
{
	if (s < 0)
		snprintf(buf, n, "-");
	else if (s < 60)
		snprintf(buf, n, "%llds", (long long)s);
	else if (s < 3600)
		snprintf(buf, n, "%lldm%02llds", (long long)(s / 60),
			 (long long)(s % 60));
	else if (s < 86400)
		snprintf(buf, n, "%lldh%02lldm", (long long)(s / 3600),
			 (long long)(s % 3600 / 60));
	else
		snprintf(buf, n, "%lldd%02lldh", (long long)(s / 86400),
			 (long long)(s % 86400 / 3600));
}

struct totals {
	uint64_t connections, registrations, channels, accepted, delivered,
		requests, errors, restarts;
};

static void sum_workers(const struct mgr_status_snap *s, struct totals *t)
{
	memset(t, 0, sizeof(*t));
	for (uint32_t w = 0; w < s->nworkers; w++) {
		const struct mgr_status_worker *o = &s->workers[w];

		t->connections += o->connections;
		t->registrations += o->registrations;
		t->channels += o->channels;
		t->accepted += o->accepted;
		t->delivered += o->delivered;
		t->requests += o->requests;
		t->errors += o->errors;
		t->restarts += o->restarts;
	}
}

static int worker_up(const struct mgr_status_worker *o)
{
	return o->pid != 0 && o->running;
}

static int finish(struct mgr_sbuf *b)
{
	return b->full ? -ENOBUFS : 0;
}

int mgr_status_render_html(const struct mgr_status_snap *s, struct mgr_sbuf *b)
{
	char t1[32], t2[32];
	struct totals t;

	sum_workers(s, &t);
	fmt_time(s->now, t1, sizeof(t1));
	sb_puts(b, "<!DOCTYPE html>\n<html lang=\"en\"><head>"
		   "<meta charset=\"utf-8\">\n<title>messip-mgr ");
	sb_html(b, s->listen, sizeof(s->listen));
	sb_puts(b,
		"</title>\n<style>body{font-family:sans-serif;margin:1em 2em}"
		"table{border-collapse:collapse;margin-bottom:1.5em}"
		"th,td{border:1px solid #bbb;padding:.2em .6em;"
		"text-align:left}th{background:#eee}td.n{text-align:right}"
		"</style></head>\n<body>\n<h1>messip-mgr on ");
	sb_html(b, s->listen, sizeof(s->listen));
	sb_printf(b,
		  "</h1>\n<p>master pid %u, %u workers, %llu connections, "
		  "%u channels, %llu buffered messages queued; at %s UTC. "
		  "<a href=\"/metrics\">metrics</a> "
		  "<a href=\"/status.json\">status.json</a></p>\n",
		  s->master_pid, s->nworkers, (unsigned long long)t.connections,
		  s->channels, (unsigned long long)s->queued, t1);

	sb_puts(b, "<h2>Workers</h2>\n<table>\n<tr><th>worker</th><th>pid</th>"
		   "<th>state</th><th>uptime</th><th>connections</th>"
		   "<th>requests</th><th>errors</th><th>restarts</th>"
		   "<th>buffered accepted</th><th>buffered delivered</th>"
		   "</tr>\n");
	for (uint32_t w = 0; w < s->nworkers; w++) {
		const struct mgr_status_worker *o = &s->workers[w];

		fmt_dur(o->uptime_s, t2, sizeof(t2));
		sb_printf(b,
			  "<tr><td class=n>%u</td><td class=n>%u</td>"
			  "<td>%s</td><td class=n>%s</td><td class=n>%llu</td>"
			  "<td class=n>%llu</td><td class=n>%llu</td>"
			  "<td class=n>%llu</td><td class=n>%llu</td>"
			  "<td class=n>%llu</td></tr>\n",
			  w, o->pid, worker_up(o) ? "up" : "down", t2,
			  (unsigned long long)o->connections,
			  (unsigned long long)o->requests,
			  (unsigned long long)o->errors,
			  (unsigned long long)o->restarts,
			  (unsigned long long)o->accepted,
			  (unsigned long long)o->delivered);
	}
	sb_puts(b, "</table>\n");

	sb_printf(b,
		  "<h2>Connections (%u registrations)</h2>\n<table>\n"
		  "<tr><th>regno</th><th>id</th><th>pid</th><th>peer</th>"
		  "<th>since (UTC)</th><th>worker</th><th>state</th>"
		  "<th>channels</th><th>connected to</th></tr>\n",
		  s->regs_live + s->regs_orphan + s->regs_dead);
	for (uint32_t i = 0; i < s->nregs; i++) {
		const struct mgr_status_reg *r = &s->regs[i];

		fmt_time(r->since, t2, sizeof(t2));
		sb_printf(b, "<tr><td class=n>%u</td><td>", r->regno);
		sb_html(b, r->id, sizeof(r->id));
		sb_printf(b, "</td><td class=n>%d</td><td>", r->pid);
		sb_html(b, r->peer, sizeof(r->peer));
		sb_printf(b, "</td><td>%s</td>", t2);
		if (r->worker == MGR_NONE)
			sb_puts(b, "<td>-</td>");
		else
			sb_printf(b, "<td class=n>%u</td>", r->worker);
		sb_printf(b,
			  "<td>%s</td><td class=n>%u</td><td class=n>%u</td>"
			  "</tr>\n",
			  reg_state_name(r->state), r->serves, r->connected);
	}
	sb_puts(b, "</table>\n");
	if (s->regs_more)
		sb_printf(b, "<p>%u more registrations not shown.</p>\n",
			  s->regs_more);

	sb_printf(b,
		  "<h2>Channels (%u)</h2>\n<table>\n"
		  "<tr><th>channel</th><th>server</th><th>peer</th>"
		  "<th>since (UTC)</th><th>buffered queued/max</th>"
		  "<th>clients</th></tr>\n",
		  s->channels);
	for (uint32_t i = 0; i < s->nchans; i++) {
		const struct mgr_status_ch *c = &s->chans[i];

		fmt_time(c->since, t2, sizeof(t2));
		sb_puts(b, "<tr><td>");
		sb_html(b, c->name, sizeof(c->name));
		sb_puts(b, "</td><td>");
		sb_html(b, c->server_id, sizeof(c->server_id));
		sb_puts(b, "</td><td>");
		sb_html(b, c->server_peer, sizeof(c->server_peer));
		sb_printf(b, "</td><td>%s</td><td class=n>", t2);
		if (c->queued < 0)
			sb_printf(b, "?/%u", c->capacity);
		else
			sb_printf(b, "%d/%u", c->queued, c->capacity);
		sb_printf(b, "</td><td class=n>%u</td></tr>\n", c->nclients);
	}
	sb_puts(b, "</table>\n");
	if (s->chans_more)
		sb_printf(b, "<p>%u more channels not shown.</p>\n",
			  s->chans_more);
	sb_puts(b, "</body></html>\n");
	return finish(b);
}

static void m_head(struct mgr_sbuf *b, const char *name, const char *type,
		   const char *help)
{
	sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One sample per worker of the field at offset off. */
static void m_per_worker(struct mgr_sbuf *b, const struct mgr_status_snap *s,
			 const char *name, const char *type, const char *help,
			 size_t off)
{
	m_head(b, name, type, help);
	for (uint32_t w = 0; w < s->nworkers; w++) {
		uint64_t v;

		memcpy(&v, (const char *)&s->workers[w] + off, sizeof(v));
		sb_printf(b, "%s{worker=\"%u\"} %llu\n", name, w,
			  (unsigned long long)v);
	}
}

#define WOFF(f) offsetof(struct mgr_status_worker, f)

int mgr_status_render_metrics(const struct mgr_status_snap *s,
			      struct mgr_sbuf *b)
{
	struct totals t;

	sum_workers(s, &t);
	m_head(b, "messip_workers", "gauge", "Worker processes configured.");
	sb_printf(b, "messip_workers %u\n", s->nworkers);
	m_head(b, "messip_worker_up", "gauge",
	       "1 while the worker process runs its loop, else 0.");
	for (uint32_t w = 0; w < s->nworkers; w++)
		sb_printf(b, "messip_worker_up{worker=\"%u\"} %d\n", w,
			  worker_up(&s->workers[w]));
	m_head(b, "messip_connections", "gauge",
	       "Open client connections, all workers.");
	sb_printf(b, "messip_connections %llu\n",
		  (unsigned long long)t.connections);
	m_per_worker(b, s, "messip_worker_connections", "gauge",
		     "Open client connections per worker.", WOFF(connections));
	m_head(b, "messip_registrations", "gauge",
	       "Registrations by state (orphan: waiting to be resumed; "
	       "dead: kept until death notices are delivered).");
	sb_printf(b, "messip_registrations{state=\"live\"} %u\n", s->regs_live);
	sb_printf(b, "messip_registrations{state=\"orphan\"} %u\n",
		  s->regs_orphan);
	sb_printf(b, "messip_registrations{state=\"dead\"} %u\n", s->regs_dead);
	m_head(b, "messip_registrations_max", "gauge",
	       "Capacity of the registration table.");
	sb_printf(b, "messip_registrations_max %u\n", s->max_regs);
	m_head(b, "messip_channels", "gauge", "Live channels.");
	sb_printf(b, "messip_channels %u\n", s->channels);
	m_head(b, "messip_channels_max", "gauge",
	       "Capacity of the channel table.");
	sb_printf(b, "messip_channels_max %u\n", s->max_channels);
	m_head(b, "messip_channel_clients", "gauge",
	       "Client connections to channels (links).");
	sb_printf(b, "messip_channel_clients %u\n", s->links);
	m_head(b, "messip_buffered_queued", "gauge",
	       "Buffered messages held in the manager's rings, not yet "
	       "acknowledged by their server.");
	sb_printf(b, "messip_buffered_queued %llu\n",
		  (unsigned long long)s->queued);
	m_per_worker(b, s, "messip_buffered_accepted_total", "counter",
		     "Buffered messages accepted into a ring.", WOFF(accepted));
	m_per_worker(b, s, "messip_buffered_delivered_total", "counter",
		     "Buffered messages delivered and acknowledged.",
		     WOFF(delivered));
	m_per_worker(b, s, "messip_requests_total", "counter",
		     "Requests handled.", WOFF(requests));
	m_per_worker(b, s, "messip_errors_total", "counter",
		     "Protocol errors and dropped connections.", WOFF(errors));
	m_per_worker(b, s, "messip_registrations_total", "counter",
		     "Registrations accepted (new or resumed).",
		     WOFF(registrations));
	m_per_worker(b, s, "messip_channels_created_total", "counter",
		     "Channels created.", WOFF(channels));
	m_per_worker(b, s, "messip_worker_restarts_total", "counter",
		     "Times the master restarted this worker.", WOFF(restarts));
	m_head(b, "messip_status_restarts_total", "counter",
	       "Times the master restarted the status process.");
	sb_printf(b, "messip_status_restarts_total %u\n", s->status_restarts);
	m_head(b, "messip_status_responses_total", "counter",
	       "HTTP answers of the status process (this process's life).");
	for (int k = 2; k <= 5; k++)
		sb_printf(b,
			  "messip_status_responses_total{code=\"%dxx\"} %llu\n",
			  k, (unsigned long long)s->http[k]);
	m_head(b, "messip_status_skipped_records", "gauge",
	       "Segment records skipped by the last snapshot (changing or "
	       "invalid).");
	sb_printf(b, "messip_status_skipped_records %u\n", s->skipped);
	return finish(b);
}

int mgr_status_render_json(const struct mgr_status_snap *s, struct mgr_sbuf *b)
{
	struct totals t;

	sum_workers(s, &t);
	sb_printf(b, "{\"format\":%d,\"manager\":{\"listen\":",
		  MGR_STATUS_JSON_FORMAT);
	sb_jstr(b, s->listen, sizeof(s->listen));
	sb_printf(b,
		  ",\"master_pid\":%u,\"workers\":%u,\"time\":%lld},\n"
		  "\"limits\":{\"registrations\":%u,\"channels\":%u,"
		  "\"links\":%u},\n",
		  s->master_pid, s->nworkers, (long long)s->now, s->max_regs,
		  s->max_channels, s->max_links);
	sb_printf(b,
		  "\"totals\":{\"connections\":%llu,\"registrations\":%u,"
		  "\"orphaned\":%u,\"dead\":%u,\"channels\":%u,\"links\":%u,"
		  "\"queued\":%llu,",
		  (unsigned long long)t.connections, s->regs_live,
		  s->regs_orphan, s->regs_dead, s->channels, s->links,
		  (unsigned long long)s->queued);
	sb_printf(b,
		  "\"accepted\":%llu,\"delivered\":%llu,\"requests\":%llu,"
		  "\"errors\":%llu,\"restarts\":%llu,\"skipped\":%u},\n",
		  (unsigned long long)t.accepted,
		  (unsigned long long)t.delivered,
		  (unsigned long long)t.requests, (unsigned long long)t.errors,
		  (unsigned long long)t.restarts, s->skipped);
	sb_puts(b, "\"workers\":[");
	for (uint32_t w = 0; w < s->nworkers; w++) {
		const struct mgr_status_worker *o = &s->workers[w];

		sb_printf(b,
			  "%s\n{\"worker\":%u,\"pid\":%u,\"up\":%s,"
			  "\"uptime\":%lld,\"connections\":%llu,"
			  "\"requests\":%llu,\"errors\":%llu,",
			  w ? "," : "", w, o->pid,
			  worker_up(o) ? "true" : "false",
			  (long long)o->uptime_s,
			  (unsigned long long)o->connections,
			  (unsigned long long)o->requests,
			  (unsigned long long)o->errors);
		sb_printf(b,
			  "\"restarts\":%llu,\"accepted\":%llu,"
			  "\"delivered\":%llu,\"registrations\":%llu,"
			  "\"channels\":%llu}",
			  (unsigned long long)o->restarts,
			  (unsigned long long)o->accepted,
			  (unsigned long long)o->delivered,
			  (unsigned long long)o->registrations,
			  (unsigned long long)o->channels);
	}
	sb_puts(b, "],\n\"connections\":[");
	for (uint32_t i = 0; i < s->nregs; i++) {
		const struct mgr_status_reg *r = &s->regs[i];

		sb_printf(b, "%s\n{\"regno\":%u,\"id\":", i ? "," : "",
			  r->regno);
		sb_jstr(b, r->id, sizeof(r->id));
		sb_printf(b, ",\"pid\":%d,\"peer\":", r->pid);
		sb_jstr(b, r->peer, sizeof(r->peer));
		sb_printf(b,
			  ",\"since\":%lld,\"worker\":", (long long)r->since);
		if (r->worker == MGR_NONE)
			sb_puts(b, "null");
		else
			sb_printf(b, "%u", r->worker);
		sb_printf(b,
			  ",\"state\":\"%s\",\"channels\":%u,"
			  "\"connected\":%u}",
			  reg_state_name(r->state), r->serves, r->connected);
	}
	sb_printf(b, "],\n\"connections_more\":%u,\n\"channels\":[",
		  s->regs_more);
	for (uint32_t i = 0; i < s->nchans; i++) {
		const struct mgr_status_ch *c = &s->chans[i];

		sb_printf(b, "%s\n{\"name\":", i ? "," : "");
		sb_jstr(b, c->name, sizeof(c->name));
		sb_puts(b, ",\"server\":");
		sb_jstr(b, c->server_id, sizeof(c->server_id));
		sb_printf(b, ",\"server_regno\":%u,\"peer\":", c->server_regno);
		sb_jstr(b, c->server_peer, sizeof(c->server_peer));
		sb_printf(b,
			  ",\"since\":%lld,\"queued\":", (long long)c->since);
		if (c->queued < 0)
			sb_puts(b, "null");
		else
			sb_printf(b, "%d", c->queued);
		sb_printf(b, ",\"max\":%u,\"clients\":%u}", c->capacity,
			  c->nclients);
	}
	sb_printf(b, "],\n\"channels_more\":%u}\n", s->chans_more);
	return finish(b);
}

/* ---- HTTP server -----------------------------------------------------------
 */

enum hstate { H_FREE = 0, H_READ, H_WRITE, H_LINGER };
enum route { R_NONE = 0, R_HTML, R_METRICS, R_JSON };

struct hconn {
	int fd;
	int state;	  /* enum hstate */
	int64_t deadline; /* monotonic ns */
	size_t inlen;
	char *out;
	size_t outlen, outoff;
	size_t discarded; /* bytes read while lingering */
	char peer[64];
	char in[MGR_STATUS_REQ_MAX];
};

struct hsrv {
	struct mgr_state *st;
	struct mgr_config cfg;
	int lfd;
	pid_t master;
	struct mgr_status_snap snap;
	struct hconn conns[MGR_STATUS_MAX_CONNS];
	struct mgr_ratelimit rl;
	uint32_t settings_gen;
	int64_t next_settings;
	int64_t accept_pause; /* accept failed hard: not before this */
};

static volatile sig_atomic_t status_stop, master_gone;

static void on_status_signal(int sig)
{
	if (sig == SIGUSR2)
		master_gone = 1;
	else
		status_stop = 1;
}

static const char *reason(int code)
{
	switch (code) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 431:
		return "Request Header Fields Too Large";
	case 503:
		return "Service Unavailable";
	case 505:
		return "HTTP Version Not Supported";
	}
	return "Internal Server Error";
}

static int is_tchar_upper(char c)
{
	return c >= 'A' && c <= 'Z';
}

/* Validate the request line [b, b+n) (no line end).  Returns 0 with the
 * method and target located, or 400 / 505. */
static int parse_request_line(const char *b, size_t n, size_t *mlen,
			      const char **target, size_t *tlen)
{
	const char *sp1, *sp2, *v;
	size_t vlen;

	sp1 = memchr(b, ' ', n);
	if (!sp1 || sp1 == b || (size_t)(sp1 - b) > 16)
		return 400;
	for (const char *p = b; p < sp1; p++)
		if (!is_tchar_upper(*p))
			return 400;
	*mlen = (size_t)(sp1 - b);
	*target = sp1 + 1;
	sp2 = memchr(*target, ' ', n - (size_t)(*target - b));
	if (!sp2 || sp2 == *target || (size_t)(sp2 - *target) > TARGET_MAX)
		return 400;
	*tlen = (size_t)(sp2 - *target);
	if (**target != '/')
		return 400;
	for (size_t i = 0; i < *tlen; i++)
		if ((*target)[i] <= 0x20 || (*target)[i] >= 0x7f)
			return 400;
	v = sp2 + 1;
	vlen = n - (size_t)(v - b);
	if (vlen == 8 && memcmp(v, "HTTP/1.", 7) == 0 &&
	    (v[7] == '0' || v[7] == '1'))
		return 0;
	if (vlen == 8 && memcmp(v, "HTTP/", 5) == 0 && v[5] >= '0' &&
	    v[5] <= '9' && v[6] == '.' && v[7] >= '0' && v[7] <= '9')
		return 505;
	return 400;
}

/* Header lines [b, b+n): "name: value" each, no folding, no white space
 * before the colon.  0 or 400. */
static int check_headers(const char *b, size_t n)
{
	while (n > 0) {
		const char *nl = memchr(b, '\n', n);
		size_t len = nl ? (size_t)(nl - b) : n;
		const char *colon;

		if (len && b[len - 1] == '\r')
			len--;
		if (len == 0)
			return 0; /* the blank line */
		colon = memchr(b, ':', len);
		if (!colon || colon == b || b[0] == ' ' || b[0] == '\t' ||
		    colon[-1] == ' ' || colon[-1] == '\t')
			return 400;
		for (size_t i = 0; i < len; i++)
			if (((unsigned char)b[i] < 0x20 && b[i] != '\t') ||
			    b[i] == 0x7f)
				return 400;
		if (!nl)
			return 400;
		n -= (size_t)(nl + 1 - b);
		b = nl + 1;
	}
	return 400;
}

/*
 * Parse what arrived of a request.  Returns 0 when more is needed, else
 * an HTTP status: 200 with *route set, or 400, 404, 405, 505.  A bad
 * request line is answered as soon as it is complete.
 */
static int parse_request(const char *b, size_t n, int *route)
{
	const char *eol, *target, *end = NULL, *q;
	size_t line, mlen, tlen, plen;
	int code;

	*route = R_NONE;
	if (memchr(b, '\0', n))
		return 400;
	eol = memchr(b, '\n', n);
	if (!eol)
		return 0;
	line = (size_t)(eol - b);
	if (line && b[line - 1] == '\r')
		line--;
	code = parse_request_line(b, line, &mlen, &target, &tlen);
	if (code)
		return code;
	/* The header ends at the first empty line. */
	for (const char *p = eol; p < b + n; p++) {
		if (*p != '\n')
			continue;
		if (p + 1 < b + n && p[1] == '\n') {
			end = p + 2;
			break;
		}
		if (p + 2 < b + n && p[1] == '\r' && p[2] == '\n') {
			end = p + 3;
			break;
		}
	}
	if (!end)
		return 0;
	if (check_headers(eol + 1, (size_t)(end - eol - 1)))
		return 400;
	if (mlen != 3 || memcmp(b, "GET", 3) != 0)
		return 405;
	q = memchr(target, '?', tlen);
	plen = q ? (size_t)(q - target) : tlen;
	if ((plen == 1 && target[0] == '/') ||
	    (plen == 11 && memcmp(target, "/index.html", 11) == 0))
		*route = R_HTML;
	else if (plen == 8 && memcmp(target, "/metrics", 8) == 0)
		*route = R_METRICS;
	else if (plen == 12 && memcmp(target, "/status.json", 12) == 0)
		*route = R_JSON;
	else
		return 404;
	return 200;
}

static void hconn_close(struct hconn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	free(c->out);
	c->out = NULL;
	c->fd = -1;
	c->state = H_FREE;
	c->inlen = c->outlen = c->outoff = c->discarded = 0;
}

/* Queue an answer on c (body copied after the header) and switch to
 * writing.  On allocation failure the connection is closed. */
static void answer(struct hsrv *h, struct hconn *c, int code, const char *ctype,
		   const char *body, size_t blen)
{
	char head[512];
	int hl;

	hl = snprintf(head, sizeof(head),
		      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
		      "Content-Length: %zu\r\nCache-Control: no-store\r\n"
		      "X-Content-Type-Options: nosniff\r\n%s"
		      "Connection: close\r\n\r\n",
		      code, reason(code), ctype, blen,
		      code == 405 ? "Allow: GET\r\n" : "");
	if (hl < 0 || (size_t)hl >= sizeof(head)) {
		hconn_close(c);
		return;
	}
	free(c->out);
	c->out = malloc((size_t)hl + blen);
	if (!c->out) {
		hconn_close(c);
		return;
	}
	memcpy(c->out, head, (size_t)hl);
	if (blen)
		memcpy(c->out + hl, body, blen);
	c->outlen = (size_t)hl + blen;
	c->outoff = 0;
	c->state = H_WRITE;
	c->deadline = mp_time_now_ns() + MGR_STATUS_WRITE_MS * 1000000LL;
	if (code / 100 >= 2 && code / 100 <= 5)
		h->snap.http[code / 100]++;
}

static void answer_error(struct hsrv *h, struct hconn *c, int code)
{
	char body[96];
	int n = snprintf(body, sizeof(body), "%d %s\n", code, reason(code));
	uint32_t supp = 0;

	if (code >= 400 && code < 500 && mgr_ratelimit_take(&h->rl, &supp))
		mgr_log(MGR_LOG_WARNING, "MESSIP-MGR-HTTPBAD",
			"peer %s: %d %s%s", c->peer, code, reason(code),
			supp ? " (earlier lines suppressed)" : "");
	answer(h, c, code, "text/plain; charset=utf-8", body, (size_t)n);
}

static void serve(struct hsrv *h, struct hconn *c, int route)
{
	struct mgr_sbuf b = {.max = MGR_STATUS_OUT_MAX};
	const char *ctype;
	int rc;

	mgr_status_snapshot(h->st, &h->snap);
	switch (route) {
	case R_HTML:
		rc = mgr_status_render_html(&h->snap, &b);
		ctype = "text/html; charset=utf-8";
		break;
	case R_METRICS:
		rc = mgr_status_render_metrics(&h->snap, &b);
		ctype = "text/plain; version=0.0.4; charset=utf-8";
		break;
	default:
		rc = mgr_status_render_json(&h->snap, &b);
		ctype = "application/json";
		break;
	}
	if (rc < 0) {
		mgr_log(MGR_LOG_ERROR, "MESSIP-MGR-HTTPRENDER",
			"peer %s: page over %u bytes; answering 500", c->peer,
			MGR_STATUS_OUT_MAX);
		answer(h, c, 500, "text/plain; charset=utf-8",
		       "500 page too large\n", 19);
	} else {
		answer(h, c, 200, ctype, b.p ? b.p : "", b.len);
		mgr_log(MGR_LOG_DEBUG, "MESSIP-MGR-HTTP",
			"peer %s: 200, %zu bytes", c->peer, b.len);
	}
	mgr_sbuf_free(&b);
}

static void conn_read(struct hsrv *h, struct hconn *c)
{
	for (;;) {
		ssize_t n;
		int code, route;

		if (c->inlen == sizeof(c->in)) {
			answer_error(h, c, 431);
			return;
		}
		n = recv(c->fd, c->in + c->inlen, sizeof(c->in) - c->inlen,
			 MSG_DONTWAIT);
		if (n == 0) {
			/* Gave up before a whole request: nothing to say. */
			hconn_close(c);
			return;
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				hconn_close(c);
			return;
		}
		c->inlen += (size_t)n;
		code = parse_request(c->in, c->inlen, &route);
		if (code == 200) {
			serve(h, c, route);
			return;
		}
		if (code) {
			answer_error(h, c, code);
			return;
		}
	}
}

static void conn_write(struct hconn *c)
{
	while (c->outoff < c->outlen) {
		ssize_t n =
			send(c->fd, c->out + c->outoff, c->outlen - c->outoff,
			     MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				hconn_close(c);
			return;
		}
		c->outoff += (size_t)n;
	}
	/* All sent: half-close, then read what the peer still sends until
	 * it closes (a close with unread input would reset the connection
	 * and could destroy the answer before the peer read it). */
	free(c->out);
	c->out = NULL;
	shutdown(c->fd, SHUT_WR);
	c->state = H_LINGER;
	c->deadline = mp_time_now_ns() + LINGER_MS * 1000000LL;
}

static void conn_linger(struct hconn *c)
{
	char scratch[4096];

	for (;;) {
		ssize_t n = recv(c->fd, scratch, sizeof(scratch), MSG_DONTWAIT);

		if (n > 0) {
			c->discarded += (size_t)n;
			if (c->discarded > LINGER_MAX) {
				hconn_close(c);
				return;
			}
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		hconn_close(c);
		return;
	}
}

static void accept_some(struct hsrv *h)
{
	for (int k = 0; k < MGR_STATUS_MAX_CONNS; k++) {
		struct hconn *c = NULL;
		char peer[64];
		int fd = mgr_net_accept(h->lfd, peer, sizeof(peer));

		if (fd < 0) {
			/* Out of descriptors or memory: the listener stays
			 * readable, so stop polling it for a while rather
			 * than spin. */
			if (fd != -EAGAIN && fd != -ECONNABORTED &&
			    fd != -EINTR) {
				h->accept_pause =
					mp_time_now_ns() + ACCEPT_PAUSE_NS;
				if (mgr_ratelimit_take(&h->rl, NULL))
					mgr_log(MGR_LOG_WARNING,
						"MESSIP-MGR-HTTPACCEPT",
						"accept: %s", strerror(-fd));
			}
			return;
		}
		for (int i = 0; i < MGR_STATUS_MAX_CONNS; i++)
			if (h->conns[i].state == H_FREE) {
				c = &h->conns[i];
				break;
			}
		if (!c) {
			static const char busy[] =
				"HTTP/1.1 503 Service Unavailable\r\n"
				"Content-Length: 5\r\nRetry-After: 1\r\n"
				"Connection: close\r\n\r\nbusy\n";

			/* Best effort: the socket buffer takes it. */
			if (send(fd, busy, sizeof(busy) - 1,
				 MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
				/* the peer is gone already */
			}
			h->snap.http[5]++;
			close(fd);
			continue;
		}
		c->fd = fd;
		c->state = H_READ;
		c->inlen = 0;
		c->deadline = mp_time_now_ns() + MGR_STATUS_READ_MS * 1000000LL;
		snprintf(c->peer, sizeof(c->peer), "%s", peer);
	}
}

static void expire(struct hsrv *h, int64_t now)
{
	for (int i = 0; i < MGR_STATUS_MAX_CONNS; i++) {
		struct hconn *c = &h->conns[i];

		if (c->state == H_FREE || now < c->deadline)
			continue;
		if (c->state == H_READ) {
			/* Slow or silent client: tell it once, without
			 * waiting for it to read, and close. */
			answer_error(h, c, 408);
			if (c->state == H_WRITE &&
			    send(c->fd, c->out, c->outlen,
				 MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
				/* nothing more to do for it */
			}
		}
		hconn_close(c);
	}
}

static void follow_settings(struct hsrv *h, int64_t now)
{
	int64_t vals[MGR_CFG_RELOADABLE];

	if (now < h->next_settings)
		return;
	h->next_settings = now + SETTINGS_NS;
	if (mgr_state_read_settings(h->st, &h->settings_gen, vals) == 1) {
		/* Out-of-range values from the segment are ignored. */
		mgr_config_import(&h->cfg, vals);
		mgr_log_setup((enum mgr_log_level)h->cfg.log_level,
			      (enum mgr_log_target)h->cfg.log_target);
	}
}

static void status_signals(sigset_t *waitmask)
{
	struct sigaction sa;
	sigset_t block;

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_status_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL); /* the master died */
	sa.sa_handler = SIG_IGN;
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGPIPE, &sa, NULL);
	sa.sa_handler = SIG_DFL;
	sigaction(SIGCHLD, &sa, NULL);
	/* Blocked except inside ppoll(), as in the master. */
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGUSR2);
	sigprocmask(SIG_BLOCK, &block, waitmask);
	sigdelset(waitmask, SIGTERM);
	sigdelset(waitmask, SIGINT);
	sigdelset(waitmask, SIGUSR2);
	sigdelset(waitmask, SIGCHLD);
	sigdelset(waitmask, SIGHUP);
}

int mgr_status_run(struct mgr_state *st, const struct mgr_config *c, int lfd,
		   pid_t master, uint32_t restarts)
{
	static struct hsrv hs;
	struct hsrv *h = &hs;
	struct pollfd pfd[1 + MGR_STATUS_MAX_CONNS];
	sigset_t waitmask;

	mgr_log_set_role(MGR_LOG_ROLE_STATUS);
	memset(h, 0, sizeof(*h));
	h->st = st;
	h->cfg = *c;
	h->lfd = lfd;
	h->master = master;
	/* This handle came from the master: it must never unlink. */
	st->shm.owner = 0;
	st->self = -1;
	for (int i = 0; i < MGR_STATUS_MAX_CONNS; i++)
		h->conns[i].fd = -1;
	status_signals(&waitmask);
	if (prctl(PR_SET_PDEATHSIG, SIGUSR2) < 0 || getppid() != master)
		return 0;
	prctl(PR_SET_NAME, "messip-mgr-stat");
	/* Read-only from here on: nothing this process does can write the
	 * segment, whatever bug it has. */
	if (mprotect(st->shm.base, st->shm.size, PROT_READ) < 0)
		mgr_log(MGR_LOG_WARNING, "MESSIP-MGR-STATUSRO",
			"cannot map the segment read-only: %s",
			strerror(errno));
	/* Page rendering yields to the workers on a busy host. */
	if (setpriority(PRIO_PROCESS, 0, 10) < 0) {
		/* not fatal: it just runs at normal priority */
	}
	if (mgr_status_snap_init(&h->snap, &st->lay) < 0) {
		mgr_log(MGR_LOG_ERROR, "MESSIP-MGR-STATUSSETUP",
			"status process set-up failed: %s", strerror(ENOMEM));
		return MGR_EXIT_FATAL;
	}
	snprintf(h->snap.listen, sizeof(h->snap.listen), "%s", c->listen);
	h->snap.status_restarts = restarts;
	mgr_log(MGR_LOG_DEBUG, "MESSIP-MGR-STATUSRUN",
		"status process running");

	while (!status_stop && !master_gone) {
		int64_t now = mp_time_now_ns(),
			wake = now + TICK_MS * 1000000LL;
		struct timespec ts;
		int np = 0, map[1 + MGR_STATUS_MAX_CONNS];

		if (getppid() != master) {
			master_gone = 1;
			break;
		}
		follow_settings(h, now);
		/* A negative fd is ignored by poll: no accepting meanwhile. */
		pfd[np].fd = now >= h->accept_pause ? h->lfd : -1;
		pfd[np].events = POLLIN;
		pfd[np].revents = 0;
		map[np++] = -1;
		if (now < h->accept_pause && h->accept_pause < wake)
			wake = h->accept_pause;
		for (int i = 0; i < MGR_STATUS_MAX_CONNS; i++) {
			struct hconn *cn = &h->conns[i];

			if (cn->state == H_FREE)
				continue;
			pfd[np].fd = cn->fd;
			pfd[np].events =
				cn->state == H_WRITE ? POLLOUT : POLLIN;
			pfd[np].revents = 0;
			map[np++] = i;
			if (cn->deadline < wake)
				wake = cn->deadline;
		}
		if (wake < now)
			wake = now;
		ts.tv_sec = (time_t)((wake - now) / 1000000000LL);
		ts.tv_nsec = (long)((wake - now) % 1000000000LL);
		if (ppoll(pfd, (nfds_t)np, &ts, &waitmask) < 0 &&
		    errno != EINTR)
			break;
		for (int k = 1; k < np; k++) {
			struct hconn *cn = &h->conns[map[k]];

			if (!pfd[k].revents || cn->state == H_FREE)
				continue;
			if (cn->state == H_READ)
				conn_read(h, cn);
			if (cn->state == H_WRITE)
				conn_write(cn);
			else if (cn->state == H_LINGER)
				conn_linger(cn);
		}
		if (pfd[0].revents & POLLIN)
			accept_some(h);
		expire(h, mp_time_now_ns());
	}
	if (master_gone)
		mgr_log(MGR_LOG_WARNING, "MESSIP-MGR-ORPHANED",
			"master %ld is gone; status process exiting",
			(long)master);
	for (int i = 0; i < MGR_STATUS_MAX_CONNS; i++)
		hconn_close(&h->conns[i]);
	mgr_status_snap_free(&h->snap);
	close(h->lfd);
	return 0;
}

/* ---- supervision (master) -------------------------------------------------
 */

void mgr_status_init(struct mgr_status_sup *s)
{
	memset(s, 0, sizeof(*s));
	s->fd = -1;
}

int mgr_status_listen(struct mgr_status_sup *s, const struct mgr_config *c)
{
	struct mgr_addr a;
	int fd;

	if (strcmp(c->status_listen, "off") == 0)
		return 0;
	if (mgr_net_parse_addr(c->status_listen, &a) < 0) {
		/* The config parser let it through: cannot happen. */
		mgr_log(MGR_LOG_ERROR, "MESSIP-MGR-STATUSLISTEN",
			"bad status_listen '%s'; running without a status "
			"page",
			c->status_listen);
		return -EINVAL;
	}
	mgr_net_format(&a, s->where, sizeof(s->where));
	fd = mgr_net_listen(&a, 64);
	if (fd < 0) {
		mgr_log(MGR_LOG_ERROR, "MESSIP-MGR-STATUSLISTEN",
			"cannot listen on %s for the status page: %s; running "
			"without it",
			s->where, strerror(-fd));
		return fd;
	}
	s->fd = fd;
	mgr_log(MGR_LOG_INFO, "MESSIP-MGR-STATUS", "status page on http://%s/",
		s->where);
	return 0;
}

int mgr_status_spawn(struct mgr_status_sup *s, struct mgr_state *st,
		     const struct mgr_config *c, int api_lfd)
{
	pid_t pid;

	if (s->fd < 0 || s->fatal)
		return 0;
	pid = fork();
	if (pid < 0) {
		int e = errno;

		mgr_log(MGR_LOG_ERROR, "MESSIP-MGR-FORK",
			"fork of the status process: %s; retrying in 1 s",
			strerror(e));
		s->respawn_at = mp_time_now_ns() + 1000000000LL;
		return -e;
	}
	if (pid == 0) {
		/* Nothing of the data path stays open here. */
		if (api_lfd >= 0)
			close(api_lfd);
		for (uint32_t w = 0; st->efds && w < st->lay.nworkers; w++)
			if (st->efds[w] >= 0)
				close(st->efds[w]);
		_exit(mgr_status_run(st, c, s->fd, getppid(), s->restarts));
	}
	s->pid = pid;
	s->started_ns = mp_time_now_ns();
	s->respawn_at = 0;
	return 0;
}

int mgr_status_reaped(struct mgr_status_sup *s, pid_t pid, int wstatus)
{
	int64_t now = mp_time_now_ns();

	if (pid <= 0 || pid != s->pid)
		return 0;
	s->pid = 0;
	if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == MGR_EXIT_FATAL) {
		s->fatal = 1;
		mgr_log(MGR_LOG_ERROR, "MESSIP-MGR-STATUSFATAL",
			"status process (pid %ld) failed to set up; the "
			"status page stays off",
			(long)pid);
		return 1;
	}
	/* Same policy as for workers: the first early death restarts at
	 * once, each further one in a row doubles the wait. */
	if (now - s->started_ns < QUICK_DEATH_NS) {
		s->quick_deaths++;
		s->backoff_ms = s->quick_deaths < 2 ? 0
				: s->backoff_ms	    ? s->backoff_ms * 2
						    : BACKOFF_MIN_MS;
		if (s->backoff_ms > BACKOFF_MAX_MS)
			s->backoff_ms = BACKOFF_MAX_MS;
	} else {
		s->quick_deaths = 0;
		s->backoff_ms = 0;
	}
	s->restarts++;
	s->respawn_at = now + s->backoff_ms * 1000000LL;
	if (WIFSIGNALED(wstatus))
		mgr_log(MGR_LOG_WARNING, "MESSIP-MGR-STATUSDIED",
			"status process (pid %ld) killed by signal %d; "
			"restarting in %d ms",
			(long)pid, WTERMSIG(wstatus), s->backoff_ms);
	else
		mgr_log(MGR_LOG_WARNING, "MESSIP-MGR-STATUSDIED",
			"status process (pid %ld) exited with status %d; "
			"restarting in %d ms",
			(long)pid, WEXITSTATUS(wstatus), s->backoff_ms);
	return 1;
}

void mgr_status_tick(struct mgr_status_sup *s, struct mgr_state *st,
		     const struct mgr_config *c, int api_lfd, int64_t *next)
{
	if (s->pid != 0 || s->fatal || !s->respawn_at)
		return;
	if (mp_time_now_ns() >= s->respawn_at)
		mgr_status_spawn(s, st, c, api_lfd);
	if (s->pid == 0 && s->respawn_at && s->respawn_at < *next)
		*next = s->respawn_at;
}

void mgr_status_stop(struct mgr_status_sup *s)
{
	if (s->pid > 0) {
		kill(s->pid, SIGTERM);
		for (int i = 0; i < STOP_WAIT_MS / 10; i++) {
			if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
				s->pid = 0;
				break;
			}
			usleep(10000);
		}
		if (s->pid > 0) {
			kill(s->pid, SIGKILL);
			waitpid(s->pid, NULL, 0);
			s->pid = 0;
		}
	}
	mgr_status_close_in_child(s);
}

void mgr_status_close_in_child(struct mgr_status_sup *s)
{
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
}
