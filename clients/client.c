/* libvela-client: connection, raw commands and pipelining over hiredis
 * (see include/vela/client.h). Typed helpers live in client_ft.c.
 *
 * The library is self-contained (hiredis and libc only), so it does not use
 * the engine's vela_err_set: vela_client_err() below fills the same struct. */
#define _GNU_SOURCE /* strcasestr */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#include "vela/client.h"

struct vela_client {
	redisContext *ctx;
	size_t pending; /* appended, not yet read */
	bool broken;    /* transport failed: every call fails */
};

int vela_client_err(vela_err_t *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Shared with client_ft.c and vecfile.c (declared there). */
int vela_client_err(vela_err_t *err, int code, const char *fmt, ...)
{
	if (err == NULL)
		return code;
	err->code = code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return code;
}

static struct timeval ms_to_tv(int ms)
{
	return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
}

int vela_client_connect(const char *host, int port, int timeout_ms, vela_client_t **out,
			vela_err_t *err)
{
	*out = NULL;
	if (timeout_ms == 0)
		timeout_ms = VELA_CLIENT_TIMEOUT_MS_DEFAULT;
	if (host == NULL || timeout_ms < VELA_CLIENT_TIMEOUT_MS_MIN ||
	    timeout_ms > VELA_CLIENT_TIMEOUT_MS_MAX)
		return vela_client_err(err, VELA_EINVAL, "bad host or timeout %d ms", timeout_ms);
	bool unix_sock = host[0] == '/';
	if (!unix_sock && (port <= 0 || port > 65535))
		return vela_client_err(err, VELA_EINVAL, "bad port %d", port);
	struct timeval tv = ms_to_tv(timeout_ms);
	redisContext *ctx = unix_sock ? redisConnectUnixWithTimeout(host, tv)
				      : redisConnectWithTimeout(host, port, tv);
	if (ctx == NULL)
		return vela_client_err(err, VELA_ENOMEM, "out of memory");
	if (ctx->err) {
		int rc = vela_client_err(err, VELA_EIO, "connect %s:%d: %s", host, port, ctx->errstr);
		redisFree(ctx);
		return rc;
	}
	if (redisSetTimeout(ctx, tv) != REDIS_OK) {
		redisFree(ctx);
		return vela_client_err(err, VELA_EIO, "cannot set socket timeout");
	}
	vela_client_t *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		redisFree(ctx);
		return vela_client_err(err, VELA_ENOMEM, "out of memory");
	}
	c->ctx = ctx;
	*out = c;
	return 0;
}

void vela_client_close(vela_client_t *c)
{
	if (c == NULL)
		return;
	redisFree(c->ctx);
	free(c);
}

/* Error texts -> codes; first match wins (case-insensitive substring). */
static const struct {
	const char *needle;
	int code;
} client_errmap[] = {
	{"unknown index", VELA_ENOTFOUND}, {"no such index", VELA_ENOTFOUND},
	{"index not found", VELA_ENOTFOUND}, {"already exists", VELA_EEXISTS},
	{"WRONGTYPE", VELA_ETYPE},           {"blob size", VELA_EDIM},
	{"dimension", VELA_EDIM},            {"syntax", VELA_ESYNTAX},
	{"transaction too large", VELA_ETXNFULL},
};

int vela_client_error_code(const char *msg, size_t len)
{
	char buf[VELA_ERR_MSG_MAX];
	size_t n = len < sizeof(buf) - 1 ? len : sizeof(buf) - 1;
	memcpy(buf, msg, n);
	buf[n] = '\0';
	if (strncmp(buf, "OOM ", 4) == 0)
		return VELA_EMAPFULL;
	for (size_t i = 0; i < sizeof(client_errmap) / sizeof(client_errmap[0]); i++)
		if (strcasestr(buf, client_errmap[i].needle))
			return client_errmap[i].code;
	return VELA_EINVAL;
}

static int client_broken(vela_client_t *c, vela_err_t *err)
{
	c->broken = true;
	c->pending = 0; /* nothing more can be read */
	const char *why = c->ctx->err ? c->ctx->errstr : "connection lost";
	return vela_client_err(err, VELA_EIO, "server connection: %s", why);
}

static int check_args(vela_client_t *c, int argc, const char **argv, vela_err_t *err)
{
	if (c == NULL || argv == NULL || argc < 1 || argc > VELA_CLIENT_ARGC_MAX)
		return vela_client_err(err, VELA_EINVAL, "bad command (%d arguments)", argc);
	if (c->broken)
		return vela_client_err(err, VELA_EIO, "server connection is broken: reconnect");
	return 0;
}

int vela_client_append(vela_client_t *c, int argc, const char **argv, const size_t *argvlen,
		       vela_err_t *err)
{
	int rc = check_args(c, argc, argv, err);
	if (rc)
		return rc;
	if (redisAppendCommandArgv(c->ctx, argc, argv, argvlen) != REDIS_OK)
		return client_broken(c, err);
	c->pending++;
	return 0;
}

/* Turn a reply into (0, reply) or (code, NULL): error replies are consumed. */
static int reply_take(redisReply *r, redisReply **out, vela_err_t *err)
{
	if (r->type != REDIS_REPLY_ERROR) {
		if (out)
			*out = r;
		else
			freeReplyObject(r);
		return 0;
	}
	int code = vela_client_error_code(r->str, r->len);
	vela_client_err(err, code, "%.*s", (int)r->len, r->str);
	freeReplyObject(r);
	return code;
}

/* hiredis writes with write(2): a peer that closed would raise SIGPIPE and
 * kill the process. Block it around writes and swallow one we caused, so
 * the library never changes the process's signal handling. */
typedef struct sigpipe_guard {
	sigset_t old;
	bool was_pending;
} sigpipe_guard_t;

static void sigpipe_block(sigpipe_guard_t *g)
{
	sigset_t set, pending;
	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	sigpending(&pending);
	g->was_pending = sigismember(&pending, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &set, &g->old);
}

static void sigpipe_restore(const sigpipe_guard_t *g)
{
	sigset_t set, pending;
	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	sigpending(&pending);
	if (!g->was_pending && sigismember(&pending, SIGPIPE)) {
		struct timespec zero = {0, 0};
		sigtimedwait(&set, NULL, &zero);
	}
	pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

/* redisGetReply, which first flushes the output buffer when it holds commands. */
static int client_get_reply(vela_client_t *c, void **r)
{
	if (c->ctx->obuf == NULL || c->ctx->obuf[0] == '\0')
		return redisGetReply(c->ctx, r);
	sigpipe_guard_t g;
	sigpipe_block(&g);
	int rc = redisGetReply(c->ctx, r);
	sigpipe_restore(&g);
	return rc;
}

int vela_client_read(vela_client_t *c, redisReply **reply, vela_err_t *err)
{
	if (reply)
		*reply = NULL;
	if (c && c->broken)
		return vela_client_err(err, VELA_EIO, "server connection is broken: reconnect");
	if (c == NULL || c->pending == 0)
		return vela_client_err(err, VELA_EINVAL, "no command pending");
	void *r = NULL;
	if (client_get_reply(c, &r) != REDIS_OK || r == NULL)
		return client_broken(c, err);
	c->pending--;
	return reply_take(r, reply, err);
}

size_t vela_client_pending(const vela_client_t *c)
{
	return c ? c->pending : 0;
}

int vela_client_command(vela_client_t *c, int argc, const char **argv, const size_t *argvlen,
			redisReply **reply, vela_err_t *err)
{
	if (reply)
		*reply = NULL;
	if (c && c->pending)
		return vela_client_err(err, VELA_EINVAL, "%zu pipelined replies not read yet",
				       c->pending);
	int rc = vela_client_append(c, argc, argv, argvlen, err);
	return rc ? rc : vela_client_read(c, reply, err);
}

void vela_client_reply_free(redisReply *reply)
{
	if (reply)
		freeReplyObject(reply);
}

int vela_client_auth(vela_client_t *c, const char *user, const char *pass, vela_err_t *err)
{
	if (pass == NULL)
		return vela_client_err(err, VELA_EINVAL, "AUTH needs a password");
	const char *argv[3] = {"AUTH", user ? user : pass, pass};
	return vela_client_command(c, user ? 3 : 2, argv, NULL, NULL, err);
}
