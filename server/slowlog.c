/* SLOWLOG: the commands whose handler ran longer than slowlog-log-slower-than
 * microseconds, newest first, as Redis keeps them (slowlog.c there): id, unix
 * time, duration, argv (at most SLOWLOG_ARGC_MAX arguments, each cut to
 * SLOWLOG_ARG_MAX bytes), client address and name.
 *
 * Handlers run on the loop, the writer and the search workers, so the log
 * has its own mutex; the threshold is an atomic read before any work, so a
 * command under it costs two clock reads. The log is process-wide (one
 * server per process), like the log level. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/srv_int.h"

typedef struct slow_entry {
	struct slow_entry *next, *prev;
	uint64_t id;
	int64_t unix_s;
	uint64_t us;
	int argc;
	resp_arg_t *argv; /* copies, in the same allocation as the entry */
	char addr[64];
	char *name;       /* NULL: no name */
} slow_entry_t;

static struct {
	pthread_mutex_t mu;
	slow_entry_t *head, *tail; /* newest first */
	size_t len;
	uint64_t next_id;
} slow = {.mu = PTHREAD_MUTEX_INITIALIZER};

static _Atomic int64_t slow_threshold = SLOWLOG_SLOWER_THAN_DEFAULT;
static _Atomic int64_t slow_max_len = SLOWLOG_MAX_LEN_DEFAULT;
/* Set by a handler whose run must not be logged (refused as Redis refuses
 * it before running: SLOWLOG's subcommand arity errors). */
static _Thread_local bool slow_skip;

int slowlog_set_slower_than(int64_t us)
{
	if (us < SLOWLOG_SLOWER_THAN_MIN || us > SLOWLOG_SLOWER_THAN_MAX)
		return VELA_EINVAL;
	atomic_store(&slow_threshold, us);
	return VELA_OK;
}

int slowlog_set_max_len(int64_t n)
{
	if (n < SLOWLOG_MAX_LEN_MIN || n > SLOWLOG_MAX_LEN_MAX)
		return VELA_EINVAL;
	atomic_store(&slow_max_len, n);
	return VELA_OK;
}

int64_t slowlog_slower_than(void) { return atomic_load(&slow_threshold); }
int64_t slowlog_max_len(void) { return atomic_load(&slow_max_len); }

/* Secrets never reach the log (Redis redacts the same arguments). */
static bool arg_secret(int argc, const resp_arg_t *argv, int i)
{
	if (arg_eq(&argv[0], "auth"))
		return i >= 1;
	if (arg_eq(&argv[0], "acl") && argc > 1 && arg_eq(&argv[1], "setuser"))
		return i >= 3;
	if (arg_eq(&argv[0], "config") && argc > 3 && arg_eq(&argv[1], "set") &&
	    arg_eq(&argv[2], "requirepass"))
		return i == 3;
	if (arg_eq(&argv[0], "hello"))
		for (int k = 1; k + 2 < argc; k++)
			if (arg_eq(&argv[k], "auth") && (i == k + 1 || i == k + 2))
				return true;
	return false;
}

/* The logged form of argument i: "(redacted)", or at most SLOWLOG_ARG_MAX
 * bytes plus "... (N more bytes)". Writes into buf (NULL: only measures). */
static size_t arg_form(int argc, const resp_arg_t *argv, int i, char *buf)
{
	char tail[64];
	const char *p = argv[i].p;
	size_t n = argv[i].len;
	tail[0] = '\0';
	if (arg_secret(argc, argv, i)) {
		p = "(redacted)";
		n = strlen(p);
	} else if (n > SLOWLOG_ARG_MAX) {
		snprintf(tail, sizeof(tail), "... (%zu more bytes)", n - SLOWLOG_ARG_MAX);
		n = SLOWLOG_ARG_MAX;
	}
	size_t t = strlen(tail);
	if (buf) {
		memcpy(buf, p, n);
		memcpy(buf + n, tail, t);
	}
	return n + t;
}

/* One allocation: the entry, its argv array and the argument bytes. */
static slow_entry_t *entry_new(int argc, const resp_arg_t *argv)
{
	int kept = argc > SLOWLOG_ARGC_MAX ? SLOWLOG_ARGC_MAX : argc;
	int copied = argc > SLOWLOG_ARGC_MAX ? SLOWLOG_ARGC_MAX - 1 : argc;
	char more[64];
	snprintf(more, sizeof(more), "... (%d more arguments)", argc - copied);
	size_t bytes = 0;
	for (int i = 0; i < copied; i++)
		bytes += arg_form(argc, argv, i, NULL);
	if (copied < kept)
		bytes += strlen(more);
	slow_entry_t *e = malloc(sizeof(*e) + (size_t)kept * sizeof(resp_arg_t) + bytes + 1);
	if (e == NULL)
		return NULL;
	e->argc = kept;
	e->argv = (resp_arg_t *)(e + 1);
	char *p = (char *)(e->argv + kept);
	for (int i = 0; i < copied; i++) {
		e->argv[i] = (resp_arg_t){p, arg_form(argc, argv, i, p)};
		p += e->argv[i].len;
	}
	if (copied < kept) {
		e->argv[copied] = (resp_arg_t){p, strlen(more)};
		memcpy(p, more, strlen(more));
	}
	return e;
}

static void entry_free(slow_entry_t *e)
{
	if (e) {
		free(e->name);
		free(e);
	}
}

/* Under slow.mu: drop the oldest entries past slowlog-max-len. */
static void trim_locked(void)
{
	int64_t max = atomic_load(&slow_max_len);
	while (slow.len > (size_t)max) {
		slow_entry_t *e = slow.tail;
		slow.tail = e->prev;
		if (slow.tail)
			slow.tail->next = NULL;
		else
			slow.head = NULL;
		slow.len--;
		entry_free(e);
	}
}

void slowlog_push(srv_client_t *c, int argc, const resp_arg_t *argv, uint64_t us)
{
	int64_t th = atomic_load(&slow_threshold);
	if (th < 0 || us < (uint64_t)th || argc < 1)
		return;
	slow_entry_t *e = entry_new(argc, argv);
	if (e == NULL)
		return; /* the log is best effort: never fail the command for it */
	e->us = us;
	e->unix_s = (int64_t)time(NULL);
	/* c->addr is fixed at accept; c->name cannot change while this
	 * command runs (the client's next commands wait for its reply). */
	snprintf(e->addr, sizeof(e->addr), "%s", c ? c->addr : "");
	e->name = c && c->name ? strdup(c->name) : NULL;
	pthread_mutex_lock(&slow.mu);
	e->id = slow.next_id++;
	e->prev = NULL;
	e->next = slow.head;
	if (slow.head)
		slow.head->prev = e;
	else
		slow.tail = e;
	slow.head = e;
	slow.len++;
	trim_locked();
	pthread_mutex_unlock(&slow.mu);
}

void slowlog_run(const srv_command_t *cmd, cmd_ctx_t *x, srv_client_t *c)
{
	uint64_t t0 = vela_now_ns();
	slow_skip = false;
	cmd->fn(x);
	uint64_t us = (vela_now_ns() - t0) / 1000;
	if (!slow_skip && c != NULL) /* internal jobs (expiry) are not commands */
		slowlog_push(c, x->argc, x->argv, us);
}

void slowlog_batch(srv_job_t **jobs, size_t n, uint64_t us)
{
	for (size_t i = 0; i < n; i++)
		if (jobs[i]->c)
			slowlog_push(jobs[i]->c, jobs[i]->argc, jobs[i]->argv, us);
}

void slowlog_free(void)
{
	pthread_mutex_lock(&slow.mu);
	slow_entry_t *e = slow.head;
	slow.head = slow.tail = NULL;
	slow.len = 0;
	pthread_mutex_unlock(&slow.mu);
	while (e) {
		slow_entry_t *n = e->next;
		entry_free(e);
		e = n;
	}
}

/* ------------------------------------------------------------ SLOWLOG */

static void reply_entry(resp_out_t *o, const slow_entry_t *e)
{
	resp_array(o, 6);
	resp_int(o, (int64_t)e->id);
	resp_int(o, e->unix_s);
	resp_int(o, (int64_t)e->us);
	resp_array(o, (size_t)e->argc);
	for (int i = 0; i < e->argc; i++)
		resp_bulk(o, e->argv[i].p, e->argv[i].len);
	resp_bulk_str(o, e->addr);
	resp_bulk_str(o, e->name ? e->name : "");
}

static void slowlog_get(cmd_ctx_t *x)
{
	int64_t count = 10;
	if (x->argc == 3 && (arg_int64(&x->argv[2], &count) || count < -1)) {
		resp_error(x->out, "ERR count should be greater than or equal to -1");
		return;
	}
	pthread_mutex_lock(&slow.mu);
	size_t n = count < 0 || (uint64_t)count > slow.len ? slow.len : (size_t)count;
	resp_array(x->out, n);
	slow_entry_t *e = slow.head;
	for (size_t i = 0; i < n; i++, e = e->next)
		reply_entry(x->out, e);
	pthread_mutex_unlock(&slow.mu);
}

static const char *const slowlog_help[] = {
	"SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
	"GET [<count>]",
	"    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
	"    Entries are made of:",
	"    id, timestamp, time in microseconds, arguments array, client IP and port,",
	"    client name",
	"LEN",
	"    Return the length of the slowlog.",
	"RESET",
	"    Reset the slowlog.",
	"HELP",
	"    Prints this help.",
};

/* Subcommand arity as Redis's table has it; a refused one is not logged. */
static bool sub_arity_ok(cmd_ctx_t *x, const char *sub, bool ok)
{
	if (!ok) {
		slow_skip = true;
		resp_errorf(x->out, "ERR wrong number of arguments for 'slowlog|%s' command", sub);
	}
	return ok;
}

void cmd_slowlog(cmd_ctx_t *x)
{
	const resp_arg_t *sub = &x->argv[1];
	if (arg_eq(sub, "get")) {
		if (sub_arity_ok(x, "get", x->argc <= 3))
			slowlog_get(x);
	} else if (arg_eq(sub, "len")) {
		if (sub_arity_ok(x, "len", x->argc == 2)) {
			pthread_mutex_lock(&slow.mu);
			resp_int(x->out, (int64_t)slow.len);
			pthread_mutex_unlock(&slow.mu);
		}
	} else if (arg_eq(sub, "reset")) {
		if (sub_arity_ok(x, "reset", x->argc == 2)) {
			slowlog_free();
			resp_simple(x->out, "OK");
		}
	} else if (arg_eq(sub, "help")) {
		if (sub_arity_ok(x, "help", x->argc == 2)) {
			size_t n = sizeof(slowlog_help) / sizeof(slowlog_help[0]);
			resp_array(x->out, n);
			for (size_t i = 0; i < n; i++)
				resp_simple(x->out, slowlog_help[i]);
		}
	} else {
		slow_skip = true;
		resp_errorf(x->out, "ERR unknown subcommand '%.*s'. Try SLOWLOG HELP.",
			    (int)(sub->len > 128 ? 128 : sub->len), sub->p);
	}
}
