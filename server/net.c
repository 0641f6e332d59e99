/* The event loop side: accepting clients, reading and parsing requests,
 * dispatching commands (inline, writer or search workers), and writing
 * replies in request order. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <event2/thread.h>
#include <unistd.h>

#include "server/srv_int.h"

static void client_process_input(srv_client_t *c);
static void client_flush(srv_client_t *c);

/* ------------------------------------------------------------ read view */

vela_view_t *srv_view(cmd_ctx_t *x)
{
	if (x->c == NULL)
		return NULL;
	if (x->srv->view == NULL && vela_view_begin(x->db, &x->srv->view) != 0)
		x->srv->view = NULL;
	return x->srv->view;
}

void srv_view_end(srv_t *s)
{
	vela_view_end(s->view);
	s->view = NULL;
}

/* ------------------------------------------------------------ clients */

static void client_unlink(srv_client_t *c)
{
	srv_t *s = c->srv;
	if (c->prev)
		c->prev->next = c->next;
	else
		s->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->n_clients--;
}

/* Free the struct once it is detached from the loop and no job refers to it. */
void client_free_if_gone(srv_client_t *c)
{
	if (!c->detached || c->pend_head)
		return;
	srv_job_t *m = c->mq_head;
	while (m) {
		srv_job_t *n = m->next;
		job_free(m);
		m = n;
	}
	resp_parser_free(&c->parser);
	resp_out_free(&c->reply);
	free(c->qbuf);
	free(c->obuf);
	free(c->name);
	free(c->lib_name);
	free(c->lib_ver);
	free(c);
}

static void client_detach(evutil_socket_t fd, short what, void *arg)
{
	srv_client_t *c = arg;
	c->detached = true;
	client_free_if_gone(c);
}

/* Close the socket now. The struct is freed later, from the loop (callers up
 * the stack may still hold it), and only once its jobs came back. */
void client_close(srv_client_t *c)
{
	if (c->gone)
		return;
	c->gone = true;
	if (c->bev) {
		tls_client_close(c); /* frees the bufferevent, the SSL and the socket */
	} else {
		event_free(c->rev);
		event_free(c->wev);
		evutil_closesocket(c->fd);
	}
	client_unlink(c);
	struct timeval now = {0, 0};
	if (event_base_once(c->srv->base, -1, EV_TIMEOUT, client_detach, c, &now) != 0)
		vela_error("cannot schedule the release of client %llu", (unsigned long long)c->id);
}

/* ------------------------------------------------------------ writing */

/*
 * Replies collect in obuf while a batch of input is processed and go out in
 * one write() at the end (as Redis does before it sleeps); EV_WRITE is armed
 * only when the socket did not take everything. This saves the FIONREAD
 * ioctl, the evbuffer copies and two epoll_ctl calls per pipeline that
 * bufferevents cost (BENCHMARKS.md, "Server (velad) vs redis-server").
 */
static bool client_obuf_reserve(srv_client_t *c, size_t n)
{
	if (c->opos && c->opos == c->olen)
		c->opos = c->olen = 0;
	if (c->olen + n <= c->ocap)
		return true;
	if (c->opos) { /* slide the unwritten bytes to the front first */
		memmove(c->obuf, c->obuf + c->opos, c->olen - c->opos);
		c->olen -= c->opos;
		c->opos = 0;
		if (c->olen + n <= c->ocap)
			return true;
	}
	size_t cap = c->ocap ? c->ocap : 16384;
	while (cap < c->olen + n)
		cap *= 2;
	char *p = realloc(c->obuf, cap);
	if (p == NULL)
		return false;
	c->obuf = p;
	c->ocap = cap;
	return true;
}

/*
 * client-output-buffer-limit for normal clients, as Redis checks it: over
 * the hard limit at once; over the soft limit once it has stayed above for
 * more than the configured seconds. Only bytes velad still holds count (not
 * the socket's kernel buffer). Returns true when the client must go.
 */
static bool client_obuf_over(srv_client_t *c, uint64_t now_ms)
{
	const srv_config_t *cfg = &c->srv->cfg;
	uint64_t pending = c->olen - c->opos;
	if (cfg->output_buf_limit && pending > cfg->output_buf_limit)
		return true;
	if (cfg->output_buf_soft == 0 || pending <= cfg->output_buf_soft) {
		c->obuf_soft_since_ms = 0;
		return false;
	}
	if (c->obuf_soft_since_ms == 0) {
		c->obuf_soft_since_ms = now_ms ? now_ms : 1;
		return false;
	}
	return now_ms - c->obuf_soft_since_ms > (uint64_t)cfg->output_buf_soft_s * 1000u;
}

static void client_obuf_check(srv_client_t *c, uint64_t now_ms)
{
	if (c->gone || !client_obuf_over(c, now_ms))
		return;
	c->srv->stat_obuf_closed++;
	vela_warn("client %llu (%s) closed: output buffer of %llu bytes unread, over "
		  "client-output-buffer-limit normal %llu %llu %u",
		  (unsigned long long)c->id, c->addr, (unsigned long long)(c->olen - c->opos),
		  (unsigned long long)c->srv->cfg.output_buf_limit,
		  (unsigned long long)c->srv->cfg.output_buf_soft, c->srv->cfg.output_buf_soft_s);
	client_close(c);
}

/* Append reply bytes; a client that lets replies pile up is disconnected. */
static void client_send(srv_client_t *c, const resp_out_t *o)
{
	if (c->gone || o->len == 0)
		return;
	if (o->oom || !client_obuf_reserve(c, o->len)) {
		client_close(c);
		return;
	}
	memcpy(c->obuf + c->olen, o->p, o->len);
	c->olen += o->len;
	const srv_config_t *cfg = &c->srv->cfg;
	uint64_t pending = c->olen - c->opos;
	if ((cfg->output_buf_limit && pending > cfg->output_buf_limit) ||
	    (cfg->output_buf_soft && pending > cfg->output_buf_soft))
		client_obuf_check(c, vela_now_ns() / 1000000);
}

static void client_wev_arm(srv_client_t *c, bool on)
{
	if (on != c->wev_armed) {
		if (on)
			event_add(c->wev, NULL);
		else
			event_del(c->wev);
		c->wev_armed = on;
	}
}

void client_obuf_drained(srv_client_t *c)
{
	c->opos = c->olen = 0;
	c->obuf_soft_since_ms = 0;
	if (c->ocap > SRV_OBUF_KEEP) { /* a slow reader's burst is not kept */
		free(c->obuf);
		c->obuf = NULL;
		c->ocap = 0;
	}
}

/* Write what the socket takes; close a closing client once all is out. */
static void client_flush(srv_client_t *c)
{
	if (c->bev) {
		if (!c->gone)
			tls_client_flush(c);
		return;
	}
	while (!c->gone && c->opos < c->olen) {
		ssize_t w = send(c->fd, c->obuf + c->opos, c->olen - c->opos, MSG_NOSIGNAL);
		if (w > 0) {
			c->opos += (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			client_wev_arm(c, true);
			return;
		}
		client_close(c); /* the peer is gone */
		return;
	}
	if (c->gone)
		return;
	client_obuf_drained(c);
	client_wev_arm(c, false);
	if (c->closing)
		client_close(c);
}

/* A job of this client finished: send every reply that is now in order. */
void client_job_done(srv_client_t *c)
{
	while (c->pend_head && c->pend_head->done) {
		srv_job_t *j = c->pend_head;
		c->pend_head = j->cnext;
		if (c->pend_head == NULL)
			c->pend_tail = NULL;
		client_send(c, &j->out);
		job_free(j);
	}
	if (c->gone) {
		client_free_if_gone(c);
		return;
	}
	if (c->pend_head == NULL && c->paused) {
		c->paused = false;
		client_process_input(c);
	}
	client_flush(c);
}

/* ------------------------------------------------------------ dispatch */

static void reply_unknown(resp_out_t *o, int argc, const resp_arg_t *argv)
{
	char msg[512];
	size_t n = (size_t)snprintf(msg, sizeof(msg), "ERR unknown command '%.*s', with args beginning with: ",
				    (int)(argv[0].len > 128 ? 128 : argv[0].len), argv[0].p);
	for (int i = 1; i < argc && n < sizeof(msg) - 140; i++)
		n += (size_t)snprintf(msg + n, sizeof(msg) - n, "'%.*s' ",
				      (int)(argv[i].len > 128 ? 128 : argv[i].len), argv[i].p);
	resp_error(o, msg);
}

static bool arity_ok(const srv_command_t *cmd, int argc)
{
	return cmd->arity >= 0 ? argc == cmd->arity : argc >= -cmd->arity;
}

/* Check a command before it runs or is queued; writes the error reply. */
static bool command_allowed(srv_client_t *c, const srv_command_t *cmd, int argc,
			    const resp_arg_t *argv, resp_out_t *o)
{
	if (cmd == NULL) {
		reply_unknown(o, argc, argv);
		return false;
	}
	if (!arity_ok(cmd, argc)) {
		reply_wrong_arity(o, &argv[0]);
		return false;
	}
	if (!c->authed && !(cmd->flags & CMD_NOAUTH)) {
		resp_error(o, "NOAUTH Authentication required.");
		return false;
	}
	if (c->user && c->user->readonly && (cmd->flags & (CMD_WRITE | CMD_ADMIN))) {
		resp_errorf(o, "NOPERM User %s has no permissions to run the '%s' command",
			    c->user->name, cmd->name);
		return false;
	}
	return true;
}

static void multi_queue(srv_client_t *c, const srv_command_t *cmd, int argc,
			const resp_arg_t *argv, resp_out_t *o)
{
	srv_job_t *j = job_new(c, cmd, argc, argv, c->proto);
	if (j == NULL) {
		resp_error(o, "OOM cannot queue command");
		c->multi_err = true;
		return;
	}
	if (c->mq_tail)
		c->mq_tail->next = j;
	else
		c->mq_head = j;
	c->mq_tail = j;
	c->mq_n++;
	resp_simple(o, "QUEUED");
}

/* Queue a job for the writer or the search workers. */
static void client_submit(srv_client_t *c, srv_job_t *j, unsigned kind, void *ereq)
{
	if (kind & CMD_WRITE)
		atomic_fetch_add(&c->srv->stat_dirty, 1);
	if (c->pend_tail)
		c->pend_tail->cnext = j;
	else
		c->pend_head = j;
	c->pend_tail = j;
	c->pend_kind = kind;
	if (kind & CMD_EMBED) {
		embedq_submit(c->srv, j, ereq);
		return;
	}
	if (kind != CMD_SEARCH) {
		jobq_push(&c->srv->writeq, j);
		return;
	}
	srv_t *s = c->srv; /* held until the input is consumed: search_flush */
	j->next = NULL;
	if (s->turn_tail)
		s->turn_tail->next = j;
	else
		s->turn_head = j;
	s->turn_tail = j;
	s->turn_n++;
}

/* Hand this input's search jobs to the workers as one list (one batch). */
static void search_flush(srv_t *s)
{
	if (s->turn_head == NULL)
		return;
	jobq_push_list(&s->searchq, s->turn_head, s->turn_tail, s->turn_n);
	s->turn_head = s->turn_tail = NULL;
	s->turn_n = 0;
}

srv_job_t *multi_take(srv_client_t *c); /* cmd_core.c: EXEC builds its job */

/* Commands flagged CMD_EMBED that need the encoder get kind CMD_EMBED|...
 * and a request; false: refused (the reply is in o). Inside MULTI the
 * encoder cannot run between the queued commands, so such writes are
 * refused there rather than stored without their vectors. */
static bool embed_route(srv_client_t *c, const srv_command_t *cmd, int argc,
			const resp_arg_t *argv, resp_out_t *o, unsigned *kind, void **ereq)
{
	int rc = embedq_route(c->srv, cmd, argc, argv, ereq, o);
	if (rc <= 0)
		return rc == 0;
	if (c->in_multi) {
		embedq_req_free(*ereq);
		*ereq = NULL;
		resp_errorf(o, "ERR '%s' needs the encoder (a MODEL/SOURCE vector, EMBED) and "
			       "cannot run inside MULTI", cmd->name);
		return false;
	}
	if (embedq_full(c->srv)) {
		embedq_req_free(*ereq);
		*ereq = NULL;
		resp_error(o, "BUSY the encoder queue is full, try again later");
		return false;
	}
	*kind = (unsigned)rc;
	return true;
}

/* Run or queue one command. Returns false if it must wait (not consumed). */
static bool client_command(srv_client_t *c, int argc, resp_arg_t *argv)
{
	const srv_command_t *cmd = cmd_lookup(argv[0].p, argv[0].len);
	/* One reply buffer per client, reused: no allocation per inline command. */
	resp_out_t o = c->reply;
	o.len = 0;
	o.oom = 0;
	o.proto = c->proto;
	/* A refused command (unknown, wrong arity, NOAUTH, NOPERM) is answered
	 * here on the loop, so like any inline reply it waits for the replies
	 * of the client's queued jobs: a pipelined `SET k v` then `SET k` must
	 * get its two replies in order. */
	bool allowed = command_allowed(c, cmd, argc, argv, &o);
	unsigned kind = !allowed ? 0 : (cmd->flags & CMD_WRITE) ? CMD_WRITE
				   : (cmd->flags & CMD_SEARCH) ? CMD_SEARCH : 0;
	bool is_exec = allowed && strcmp(cmd->name, "exec") == 0 && c->in_multi;
	if (is_exec)
		kind = CMD_WRITE;
	void *ereq = NULL;
	if (allowed && (cmd->flags & CMD_EMBED) && !embed_route(c, cmd, argc, argv, &o, &kind, &ereq)) {
		allowed = false; /* refused: the reply is in o */
		kind = 0;
	}
	if (c->pend_head && (kind == 0 || kind != c->pend_kind) && !(c->in_multi && !is_exec)) {
		embedq_req_free(ereq); /* recomputed when the command runs again */
		c->reply = o; /* the buffer is kept; the command runs again later */
		c->paused = true; /* wait for this client's queued jobs: order */
		return false;
	}
	atomic_fetch_add(&c->srv->stat_commands, 1);
	c->last_cmd = cmd ? cmd->name : NULL;
	/* The shared read view serves only CMD_VIEW commands: anything else may
	 * take the database lock itself (see vela_view_begin). */
	if (cmd == NULL || !(cmd->flags & CMD_VIEW) || c->in_multi)
		srv_view_end(c->srv);
	if (!allowed) {
		if (c->in_multi)
			c->multi_err = true;
	} else if (c->in_multi && !(cmd->flags & CMD_NOMULTI)) {
		multi_queue(c, cmd, argc, argv, &o);
	} else if (is_exec && !c->multi_err) {
		srv_job_t *j = multi_take(c);
		if (j)
			client_submit(c, j, CMD_WRITE, NULL);
		else
			resp_error(&o, "OOM cannot run transaction");
	} else if (kind == 0 || is_exec) {
		/* Job arguments are NUL-terminated copies; inline ones point into qbuf. */
		srv_job_t *copy = (cmd->flags & CMD_CSTR) ? job_new(c, cmd, argc, argv, c->proto) : NULL;
		cmd_ctx_t x = {.srv = c->srv, .db = c->srv->db, .argc = argc,
			       .argv = copy ? copy->argv : argv, .out = &o, .c = c, .proto = c->proto};
		if ((cmd->flags & CMD_CSTR) && copy == NULL)
			resp_error(&o, "OOM cannot run command");
		else
			slowlog_run(cmd, &x, c);
		job_free(copy);
	} else {
		srv_job_t *j = job_new(c, cmd, argc, argv, c->proto);
		if (j) {
			client_submit(c, j, kind, ereq);
			ereq = NULL;
		} else {
			resp_error(&o, "OOM cannot queue command");
		}
	}
	embedq_req_free(ereq);
	client_send(c, &o);
	if (o.cap > SRV_REPLY_KEEP) /* a big reply's buffer is not kept */
		resp_out_free(&o);
	c->reply = o;
	return true;
}

/* ------------------------------------------------------------ reading */

static void client_compact(srv_client_t *c, size_t used)
{
	if (used == 0)
		return;
	memmove(c->qbuf, c->qbuf + used, c->qlen - used);
	c->qlen -= used;
}

static void client_process_input(srv_client_t *c)
{
	srv_t *s = c->srv;
	resp_limits_t lim = {s->cfg.proto_max_bulk_len, s->cfg.max_args};
	size_t pos = 0;
	if (atomic_load(&s->stopping))
		return; /* shutting down: a paused client's next command would never run */
	while (!c->gone && !c->paused && !c->closing && pos < c->qlen) {
		resp_arg_t *argv;
		size_t argc, consumed = 0;
		vela_err_t err = {0};
		int rc = resp_parse(&c->parser, c->qbuf + pos, c->qlen - pos, &lim, c->authed,
				    &consumed, &argv, &argc, &err);
		if (rc < 0) {
			resp_out_t o;
			resp_out_init(&o, c->proto);
			resp_errorf(&o, "ERR %s", err.msg);
			client_send(c, &o);
			resp_out_free(&o);
			c->closing = true; /* as Redis: reply, then close */
			break;
		}
		if (rc == 0) {
			pos += consumed;
			if (consumed == 0)
				break;
			continue;
		}
		if (!client_command(c, (int)argc, argv))
			break;
		pos += consumed;
	}
	search_flush(s);
	srv_view_end(s); /* writers wait for it: never held across loop turns */
	if (c->gone)
		return;
	client_compact(c, pos);
}

/* Room for the next read: at least SRV_READ_CHUNK free bytes. */
#define SRV_READ_CHUNK 16384u

bool client_qbuf_reserve(srv_client_t *c)
{
	if (c->qcap - c->qlen >= SRV_READ_CHUNK)
		return true;
	size_t cap = c->qcap ? c->qcap * 2 : SRV_READ_CHUNK * 2;
	char *q = realloc(c->qbuf, cap);
	if (q == NULL)
		return false;
	c->qbuf = q;
	c->qcap = cap;
	return true;
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
	srv_client_t *c = arg;
	if (!client_qbuf_reserve(c)) {
		client_close(c);
		return;
	}
	ssize_t n = recv(fd, c->qbuf + c->qlen, c->qcap - c->qlen, 0);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) {
		client_close(c); /* EOF or error */
		return;
	}
	client_input(c, (size_t)n);
}

void client_input(srv_client_t *c, size_t n)
{
	c->qlen += n;
	c->last_ms = vela_now_ns() / 1000000;
	uint64_t limit = c->authed ? c->srv->cfg.query_buf_limit : SRV_QBUF_UNAUTH_LIMIT;
	if (c->qlen > limit) {
		c->srv->stat_qbuf_closed++;
		vela_warn("client %llu (%s) closed: reached the query buffer limit",
			  (unsigned long long)c->id, c->addr);
		client_close(c); /* as Redis: without a reply */
		return;
	}
	if (!c->closing)
		client_process_input(c);
	if (!c->gone)
		client_flush(c);
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
	client_flush(arg);
}

/* ------------------------------------------------------------ accepting */

static bool addr_is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
	if (sa->sa_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
	return sa->sa_family == AF_UNIX;
}

static void addr_format(const struct sockaddr *sa, char *buf, size_t cap)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	int port = 0;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)sa;
		inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
		port = ntohs(in->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in = (const void *)sa;
		inet_ntop(AF_INET6, &in->sin6_addr, ip, sizeof(ip));
		port = ntohs(in->sin6_port);
	}
	snprintf(buf, cap, "%s:%d", ip, port);
}

/* Refuse a connection with one error line (maxclients, protected mode). */
static void refuse(evutil_socket_t fd, const char *line)
{
	if (line[0]) {
		ssize_t w = send(fd, line, strlen(line), MSG_NOSIGNAL | MSG_DONTWAIT);
		(void)w;
	}
	evutil_closesocket(fd);
}

void client_accept(srv_t *s, evutil_socket_t fd, const struct sockaddr *sa, bool tls)
{
	atomic_fetch_add(&s->stat_conns, 1);
	/* On the TLS port a refusal is a plain close: a line in clear text
	 * would only break the client's handshake. */
	if (s->n_clients >= s->cfg.maxclients) {
		atomic_fetch_add(&s->stat_rejected, 1);
		refuse(fd, tls ? "" : "-ERR max number of clients reached\r\n");
		return;
	}
	if (s->cfg.protected_mode && !srv_auth_required(s) && !addr_is_loopback(sa)) {
		refuse(fd, tls ? "" : "-DENIED Redis is running in protected mode because protected "
			   "mode is enabled and no password is set for the default user. Set a "
			   "password (requirepass) or disable protected mode (protected-mode no).\r\n");
		return;
	}
	srv_client_t *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		evutil_closesocket(fd);
		return;
	}
	c->srv = s;
	c->id = ++s->next_client_id;
	c->proto = 2;
	c->authed = !srv_auth_required(s);
	c->user = c->authed ? &s->cfg.users[0] : NULL;
	c->created_ms = c->last_ms = vela_now_ns() / 1000000;
	addr_format(sa, c->addr, sizeof(c->addr));
	struct sockaddr_storage local;
	socklen_t llen = sizeof(local);
	if (getsockname(fd, (struct sockaddr *)&local, &llen) == 0)
		addr_format((struct sockaddr *)&local, c->laddr, sizeof(c->laddr));
	resp_parser_init(&c->parser);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	evutil_make_socket_nonblocking(fd);
	c->fd = fd;
	if (tls) {
		if (tls_client_attach(c) != 0) { /* closed the socket */
			resp_parser_free(&c->parser);
			free(c);
			return;
		}
	} else {
		c->rev = event_new(s->base, fd, EV_READ | EV_PERSIST, on_readable, c);
		c->wev = event_new(s->base, fd, EV_WRITE | EV_PERSIST, on_writable, c);
		if (c->rev == NULL || c->wev == NULL || event_add(c->rev, NULL) != 0) {
			if (c->rev)
				event_free(c->rev);
			if (c->wev)
				event_free(c->wev);
			evutil_closesocket(fd);
			resp_parser_free(&c->parser);
			free(c);
			return;
		}
	}
	c->next = s->clients;
	if (s->clients)
		s->clients->prev = c;
	s->clients = c;
	s->n_clients++;
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
		      int salen, void *arg)
{
	client_accept(arg, fd, sa, false);
}

/* ------------------------------------------------------------ lifecycle */

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	srv_t *s = arg;
	vela_info("received %s: shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
	event_base_loopexit(s->base, NULL);
}

void srv_job_expire_submit(srv_t *s); /* cmd_core.c */

/* Every SRV_EXPIRE_CYCLE_MS: the expiry job, the commands/s sample, and
 * once a second the soft output-buffer limit of clients that stopped
 * getting replies (a reply is what checks it otherwise), a finished BGSAVE. */
static void srv_cron(srv_t *s)
{
	uint64_t now = vela_now_ns() / 1000000;
	uint64_t ops = atomic_load(&s->stat_commands);
	if (s->ops_last_ms && now > s->ops_last_ms)
		s->ops_samples[s->ops_idx++ % SRV_OPS_SAMPLES] =
			(ops - s->ops_last) * 1000u / (now - s->ops_last_ms);
	s->ops_last = ops;
	s->ops_last_ms = now;
	if (++s->cron_ticks % (1000u / SRV_EXPIRE_CYCLE_MS) != 0)
		return;
	if (s->cfg.output_buf_soft)
		for (srv_client_t *c = s->clients, *n; c; c = n) {
			n = c->next;
			if (c->obuf_soft_since_ms)
				client_obuf_check(c, now);
		}
	uint64_t mem = srv_mem_used();
	if (mem > s->mem_peak)
		s->mem_peak = mem;
	save_reap(s);
}

static void on_expire_timer(evutil_socket_t fd, short what, void *arg)
{
	srv_t *s = arg;
	if (!s->expire_pending) {
		s->expire_pending = true;
		srv_job_expire_submit(s);
	}
	srv_cron(s);
}

int srv_open_files_reserve(uint32_t clients, uint32_t *fit)
{
	struct rlimit rl;
	rlim_t want = (rlim_t)clients + SRV_RESERVED_FDS;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 0; /* cannot tell: accept() will say */
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
		struct rlimit up = rl;
		up.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &up) == 0)
			rl = up;
	}
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= want)
		return 0;
	*fit = rl.rlim_cur > SRV_RESERVED_FDS ? (uint32_t)(rl.rlim_cur - SRV_RESERVED_FDS) : 1;
	return -1;
}

/* accept() failed with something other than a retriable error: out of file
 * descriptors (EMFILE/ENFILE) above all. The listening socket stays readable,
 * so pause accepting for a moment instead of spinning on the error. */
#define SRV_ACCEPT_PAUSE_MS 100u

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
	srv_t *s = arg;
	if (s->listener)
		evconnlistener_enable(s->listener);
	if (s->tls_listener)
		evconnlistener_enable(s->tls_listener);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
	srv_t *s = arg;
	int e = EVUTIL_SOCKET_ERROR();
	static uint64_t warned;
	uint64_t k = ++warned;
	if ((k & (k - 1)) == 0) /* 1st, 2nd, 4th, ... */
		vela_warn("accept: %s (%llu times): not accepting for %u ms",
			  evutil_socket_error_to_string(e), (unsigned long long)k,
			  SRV_ACCEPT_PAUSE_MS);
	evconnlistener_disable(l);
	struct timeval tv = {0, SRV_ACCEPT_PAUSE_MS * 1000};
	event_base_once(s->base, -1, EV_TIMEOUT, on_accept_resume, s, &tv);
}

struct evconnlistener *srv_listen_port(srv_t *s, int port, evconnlistener_cb cb, int *bound,
				       vela_err_t *err)
{
	struct sockaddr_storage ss;
	int slen = sizeof(ss);
	char spec[300];
	/* libevent's parser refuses port 0 ("any free port"): parse with 1, then set it. */
	snprintf(spec, sizeof(spec), strchr(s->cfg.bind, ':') ? "[%s]:%d" : "%s:%d", s->cfg.bind,
		 port ? port : 1);
	if (evutil_parse_sockaddr_port(spec, (struct sockaddr *)&ss, &slen) != 0) {
		vela_err_set(err, VELA_EINVAL, "bad bind address '%s'", s->cfg.bind);
		return NULL;
	}
	if (ss.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
	else
		((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
	struct evconnlistener *l = evconnlistener_new_bind(s->base, cb, s,
							   LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
							   511, (struct sockaddr *)&ss, slen);
	if (l == NULL) {
		vela_err_set(err, VELA_EIO, "cannot listen on %s port %d: %s", s->cfg.bind, port,
			     strerror(errno));
		return NULL;
	}
	evconnlistener_set_error_cb(l, on_accept_error);
	struct sockaddr_storage b;
	socklen_t bl = sizeof(b);
	getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&b, &bl);
	*bound = ntohs(b.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&b)->sin6_port
					      : ((struct sockaddr_in *)&b)->sin_port);
	return l;
}

static int srv_listen(srv_t *s, vela_err_t *err)
{
	s->listener = srv_listen_port(s, s->cfg.port, on_accept, &s->port, err);
	return s->listener ? VELA_OK : err ? err->code : VELA_EIO;
}

int srv_create(const srv_config_t *cfg, srv_t **out, vela_err_t *err)
{
	evthread_use_pthreads();
	srv_t *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return vela_err_set(err, VELA_ENOMEM, "out of memory");
	s->cfg = *cfg;
	s->start_ms = vela_now_ns() / 1000000;
	pthread_mutex_init(&s->cfg_mu, NULL);
	save_init(s);
	uint32_t fit = 0;
	if (srv_open_files_reserve(s->cfg.maxclients, &fit) != 0) {
		/* As Redis: serve fewer clients rather than fail accept() later. */
		vela_warn("the open files limit allows %u clients, not maxclients %u: maxclients "
			  "is now %u (raise `ulimit -n`)", fit, s->cfg.maxclients, fit);
		s->cfg.maxclients = fit;
	}
	/* Graphs build in the background by default: a bulk load that crosses
	 * a training threshold never stalls the clients. */
	vela_db_options_t o = {.map_size = cfg->map_size,
			       .flags = (cfg->nosync ? VELA_OPEN_NOSYNC : 0u) |
					(cfg->build_foreground ? 0u : VELA_OPEN_BACKGROUND_BUILD)};
	int rc = vela_db_open(cfg->dir, &o, &s->db, err);
	if (rc) { /* the strings of cfg are ours now: free them too */
		save_free(s);
		pthread_mutex_destroy(&s->cfg_mu);
		srv_config_free(&s->cfg);
		free(s);
		return rc;
	}
	s->base = event_base_new();
	if (s->base == NULL || (rc = srv_listen(s, err)) || (rc = srv_tls_start(s, err)) ||
	    (rc = exec_start(s))) {
		rc = rc ? rc : vela_err_set(err, VELA_ENOMEM, "cannot start the event loop");
		if (err && err->msg[0] == '\0')
			vela_err_set(err, rc, "cannot start: %s", vela_strerror(rc));
		*out = s;
		return rc;
	}
	s->sig_int = evsignal_new(s->base, SIGINT, on_signal, s);
	s->sig_term = evsignal_new(s->base, SIGTERM, on_signal, s);
	s->expire_ev = event_new(s->base, -1, EV_PERSIST, on_expire_timer, s);
	struct timeval tv = {0, SRV_EXPIRE_CYCLE_MS * 1000};
	event_add(s->sig_int, NULL);
	event_add(s->sig_term, NULL);
	event_add(s->expire_ev, &tv);
	signal(SIGPIPE, SIG_IGN);
	*out = s;
	return VELA_OK;
}

int srv_port(const srv_t *s)
{
	return s->port;
}

int srv_run(srv_t *s)
{
	vela_info("velad %s ready on %s:%d, data in %s (connect: redis-cli -p %d)",
		  VELA_SERVER_VERSION, s->cfg.bind, s->port, s->cfg.dir, s->port);
	event_base_dispatch(s->base);
	/* Graceful: stop accepting, let the writer commit what it accepted, send
	 * the replies we can, close. */
	if (s->listener) {
		evconnlistener_free(s->listener);
		s->listener = NULL;
	}
	srv_tls_stop(s);
	/* Nothing new may reach the queues once the threads are gone: no expiry
	 * job, no further requests (a job would leak and its reply never go). */
	event_del(s->expire_ev);
	for (srv_client_t *c = s->clients; c; c = c->next) {
		if (c->bev)
			tls_client_pause_reads(c);
		else
			event_del(c->rev);
	}
	exec_stop(s);
	save_stop(s); /* a BGSAVE in progress completes: the database closes after it */
	/* Write out the last replies (best effort: sockets are nonblocking). */
	for (srv_client_t *c = s->clients, *n; c; c = n) {
		n = c->next;
		client_flush(c);
	}
	while (s->clients)
		client_close(s->clients);
	event_base_loop(s->base, EVLOOP_NONBLOCK); /* release the closed clients */
	vela_info("velad stopped");
	return 0;
}

void srv_stop(srv_t *s)
{
	event_base_loopexit(s->base, NULL);
}

void srv_destroy(srv_t *s)
{
	if (s == NULL)
		return;
	if (s->listener)
		evconnlistener_free(s->listener);
	srv_tls_stop(s);
	if (s->sig_int)
		event_free(s->sig_int);
	if (s->sig_term)
		event_free(s->sig_term);
	if (s->expire_ev)
		event_free(s->expire_ev);
	if (s->base)
		event_base_free(s->base);
	srv_tls_free(s);
	save_free(s); /* before the database closes: a BGSAVE may still read it */
	embedq_free(s);
	slowlog_free();
	vela_db_close(s->db);
	pthread_mutex_destroy(&s->cfg_mu);
	srv_config_free(&s->cfg);
	free(s);
}
