/* Connection, server and transaction commands: PING ECHO QUIT HELLO AUTH
 * SELECT CLIENT COMMAND INFO CONFIG MODULE DBSIZE FLUSHALL/FLUSHDB ACL
 * MULTI/EXEC/DISCARD, and the command table. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "server/srv_int.h"

/* ------------------------------------------------------------ auth */

/* Constant-time comparison: the time does not depend on where inputs differ. */
static bool secret_eq(const char *a, size_t alen, const char *b, size_t blen)
{
	unsigned char d = (unsigned char)(alen != blen);
	size_t n = alen > blen ? alen : blen;
	for (size_t i = 0; i < n; i++) {
		unsigned char x = i < alen ? (unsigned char)a[i] : 0;
		unsigned char y = i < blen ? (unsigned char)b[i] : 0;
		d |= x ^ y;
	}
	return d == 0;
}

bool srv_auth_required(srv_t *s)
{
	return s->cfg.users[0].pass != NULL || !s->cfg.users[0].enabled;
}

const srv_user_t *srv_auth_check(srv_t *s, const char *user, size_t ulen, const char *pass,
				 size_t plen)
{
	const srv_user_t *found = NULL;
	pthread_mutex_lock(&s->cfg_mu);
	for (uint32_t i = 0; i < s->cfg.n_users; i++) {
		const srv_user_t *u = &s->cfg.users[i];
		if (strlen(u->name) != ulen || memcmp(u->name, user, ulen) != 0 || !u->enabled)
			continue;
		if (u->pass == NULL || secret_eq(u->pass, strlen(u->pass), pass, plen))
			found = u;
	}
	pthread_mutex_unlock(&s->cfg_mu);
	return found;
}

static void reply_wrongpass(resp_out_t *o)
{
	resp_error(o, "WRONGPASS invalid username-password pair or user is disabled.");
}

static void cmd_auth(cmd_ctx_t *x)
{
	srv_client_t *c = x->c;
	if (x->argc > 3) {
		resp_error(x->out, "ERR syntax error");
		return;
	}
	if (x->argc == 2 && x->srv->cfg.users[0].pass == NULL) {
		resp_error(x->out, "ERR AUTH <password> called without any password configured for "
				   "the default user. Are you sure your configuration is correct?");
		return;
	}
	const resp_arg_t *user = x->argc == 3 ? &x->argv[1] : NULL;
	const resp_arg_t *pass = &x->argv[x->argc - 1];
	const srv_user_t *u = srv_auth_check(x->srv, user ? user->p : "default",
					     user ? user->len : 7, pass->p, pass->len);
	if (u == NULL) {
		reply_wrongpass(x->out);
		return;
	}
	c->authed = true;
	c->user = u;
	resp_simple(x->out, "OK");
}

/* ------------------------------------------------------------ connection */

static void cmd_ping(cmd_ctx_t *x)
{
	if (x->argc > 2)
		reply_wrong_arity(x->out, &x->argv[0]);
	else if (x->argc == 2)
		resp_bulk(x->out, x->argv[1].p, x->argv[1].len);
	else
		resp_simple(x->out, "PONG");
}

static void cmd_echo(cmd_ctx_t *x)
{
	resp_bulk(x->out, x->argv[1].p, x->argv[1].len);
}

static void cmd_quit(cmd_ctx_t *x)
{
	resp_simple(x->out, "OK");
	x->c->closing = true;
}

static void cmd_select(cmd_ctx_t *x)
{
	int64_t n;
	if (arg_int64(&x->argv[1], &n))
		resp_error(x->out, "ERR value is not an integer or out of range");
	else if (n != 0)
		resp_error(x->out, "ERR DB index is out of range");
	else
		resp_simple(x->out, "OK");
}

/* As Redis: names are printable ASCII without spaces, so CLIENT LIST lines
 * split on spaces. */
static bool client_name_ok(const resp_arg_t *name)
{
	for (size_t i = 0; i < name->len; i++)
		if (name->p[i] < '!' || name->p[i] > '~')
			return false;
	return true;
}

static void reply_bad_client_name(resp_out_t *o)
{
	resp_error(o, "ERR Client names cannot contain spaces, newlines or special characters.");
}

static void hello_reply(cmd_ctx_t *x)
{
	resp_out_t *o = x->out;
	o->proto = x->c->proto;
	resp_map(o, 7);
	resp_bulk_str(o, "server");
	resp_bulk_str(o, "redis");
	resp_bulk_str(o, "version");
	resp_bulk_str(o, VELA_REDIS_COMPAT_VERSION);
	resp_bulk_str(o, "proto");
	resp_int(o, x->c->proto);
	resp_bulk_str(o, "id");
	resp_int(o, (int64_t)x->c->id);
	resp_bulk_str(o, "mode");
	resp_bulk_str(o, "standalone");
	resp_bulk_str(o, "role");
	resp_bulk_str(o, "master");
	resp_bulk_str(o, "modules");
	resp_array(o, 1);
	resp_map(o, 4);
	resp_bulk_str(o, "name");
	resp_bulk_str(o, "search");
	resp_bulk_str(o, "ver");
	resp_int(o, VELA_SEARCH_MODULE_VERSION);
	resp_bulk_str(o, "path");
	resp_bulk_str(o, "");
	resp_bulk_str(o, "args");
	resp_array(o, 0);
}

/* HELLO [protover [AUTH user pass] [SETNAME name]] */
static void cmd_hello(cmd_ctx_t *x)
{
	srv_client_t *c = x->c;
	int64_t ver = c->proto;
	if (x->argc >= 2 && (arg_int64(&x->argv[1], &ver) || ver < 1 || ver > 1000)) {
		resp_error(x->out, "ERR Protocol version is not an integer or out of range");
		return;
	}
	if (ver != 2 && ver != 3) {
		resp_error(x->out, "NOPROTO unsupported protocol version");
		return;
	}
	const srv_user_t *u = NULL;
	const resp_arg_t *setname = NULL;
	for (int i = 2; i < x->argc; i++) {
		if (arg_eq(&x->argv[i], "AUTH") && i + 2 < x->argc) {
			u = srv_auth_check(x->srv, x->argv[i + 1].p, x->argv[i + 1].len,
					   x->argv[i + 2].p, x->argv[i + 2].len);
			if (u == NULL) {
				reply_wrongpass(x->out);
				return;
			}
			i += 2;
		} else if (arg_eq(&x->argv[i], "SETNAME") && i + 1 < x->argc) {
			setname = &x->argv[++i];
			if (!client_name_ok(setname)) {
				reply_bad_client_name(x->out);
				return;
			}
		} else {
			resp_errorf(x->out, "ERR Syntax error in HELLO option '%.*s'",
				    (int)(x->argv[i].len > 64 ? 64 : x->argv[i].len), x->argv[i].p);
			return;
		}
	}
	if (u) {
		c->authed = true;
		c->user = u;
	}
	if (!c->authed) {
		resp_error(x->out, "NOAUTH HELLO must be called with the client already "
				   "authenticated, otherwise the HELLO <proto> AUTH <user> <pass> "
				   "option can be used to authenticate the client and select the "
				   "RESP protocol version at the same time");
		return;
	}
	if (setname) { /* an empty name clears it, as CLIENT SETNAME "" */
		free(c->name);
		c->name = setname->len ? arg_dup(setname) : NULL;
	}
	c->proto = (int)ver;
	hello_reply(x);
}

/* One CLIENT LIST line with Redis's field names, in Redis's order. Output
 * memory: obl (bytes in the reply buffer), oll 0 (no reply list), omem (the
 * same bytes: velad has one buffer per client). */
static void client_list_line(resp_out_t *o, srv_client_t *c)
{
	char line[1024];
	uint64_t now = vela_now_ns() / 1000000;
	uint64_t pend = c->olen - c->opos;
	int n = snprintf(line, sizeof(line),
			 "id=%llu addr=%s laddr=%s fd=%d name=%s age=%llu idle=%llu flags=%s db=0 "
			 "sub=0 psub=0 ssub=0 multi=%lld qbuf=%zu qbuf-free=%zu argv-mem=0 "
			 "multi-mem=0 rbs=%zu rbp=0 obl=%llu oll=0 omem=%llu tot-mem=%llu "
			 "events=r%s cmd=%s user=%s redir=-1 resp=%d lib-name=%s lib-ver=%s",
			 (unsigned long long)c->id, c->addr, c->laddr, (int)c->fd,
			 c->name ? c->name : "",
			 (unsigned long long)((now - c->created_ms) / 1000),
			 (unsigned long long)((now - c->last_ms) / 1000), c->in_multi ? "x" : "N",
			 c->in_multi ? (long long)c->mq_n : -1LL, c->qlen, c->qcap - c->qlen, c->qcap,
			 (unsigned long long)pend, (unsigned long long)pend,
			 (unsigned long long)(sizeof(*c) + c->qcap + c->ocap + c->reply.cap),
			 c->wev_armed ? "w" : "", c->last_cmd ? c->last_cmd : "NULL",
			 c->user ? c->user->name : "", c->proto, c->lib_name ? c->lib_name : "",
			 c->lib_ver ? c->lib_ver : "");
	size_t len = n < 0 ? 0 : (size_t)n < sizeof(line) - 1 ? (size_t)n : sizeof(line) - 2;
	line[len++] = '\n'; /* a line cut short (a long name) still ends */
	resp_raw(o, line, len);
}

static void client_info(cmd_ctx_t *x, bool all)
{
	resp_out_t tmp;
	resp_out_init(&tmp, 2);
	if (all)
		for (srv_client_t *c = x->srv->clients; c; c = c->next)
			client_list_line(&tmp, c);
	else
		client_list_line(&tmp, x->c);
	if (x->proto == 3)
		resp_verbatim(x->out, tmp.p, tmp.len);
	else
		resp_bulk(x->out, tmp.p, tmp.len);
	resp_out_free(&tmp);
}

static void cmd_client(cmd_ctx_t *x)
{
	srv_client_t *c = x->c;
	const resp_arg_t *sub = &x->argv[1];
	if (c == NULL) { /* inside EXEC, on the writer: the client (and the list) is the loop's */
		resp_error(x->out, "ERR CLIENT is not supported inside MULTI");
		return;
	}
	if (arg_eq(sub, "SETNAME") && x->argc == 3) {
		if (!client_name_ok(&x->argv[2])) {
			reply_bad_client_name(x->out);
			return;
		}
		free(c->name);
		c->name = x->argv[2].len ? arg_dup(&x->argv[2]) : NULL;
		resp_simple(x->out, "OK");
	} else if (arg_eq(sub, "GETNAME") && x->argc == 2) {
		if (c->name)
			resp_bulk_str(x->out, c->name);
		else
			resp_null(x->out);
	} else if (arg_eq(sub, "ID") && x->argc == 2) {
		resp_int(x->out, (int64_t)c->id);
	} else if (arg_eq(sub, "SETINFO") && x->argc == 4) {
		char **slot = arg_eq(&x->argv[2], "LIB-NAME") ? &c->lib_name
			      : arg_eq(&x->argv[2], "LIB-VER") ? &c->lib_ver : NULL;
		if (slot == NULL) {
			resp_errorf(x->out, "ERR Unrecognized option '%.*s'",
				    (int)(x->argv[2].len > 64 ? 64 : x->argv[2].len), x->argv[2].p);
			return;
		}
		free(*slot);
		*slot = arg_dup(&x->argv[3]);
		resp_simple(x->out, "OK");
	} else if (arg_eq(sub, "INFO") && x->argc == 2) {
		client_info(x, false);
	} else if (arg_eq(sub, "LIST")) {
		client_info(x, true);
	} else {
		resp_errorf(x->out, "ERR unknown subcommand '%.*s'. Try CLIENT HELP.",
			    (int)(sub->len > 64 ? 64 : sub->len), sub->p);
	}
}

static void cmd_command(cmd_ctx_t *x)
{
	if (x->argc >= 2 && arg_eq(&x->argv[1], "COUNT"))
		resp_int(x->out, (int64_t)cmd_count());
	else if (x->argc >= 2 && arg_eq(&x->argv[1], "DOCS"))
		resp_map(x->out, 0);
	else
		resp_array(x->out, 0);
}

static void cmd_module(cmd_ctx_t *x)
{
	if (!arg_eq(&x->argv[1], "LIST")) {
		resp_errorf(x->out, "ERR unknown subcommand '%.*s'. Try MODULE HELP.",
			    (int)(x->argv[1].len > 64 ? 64 : x->argv[1].len), x->argv[1].p);
		return;
	}
	resp_array(x->out, 1);
	resp_map(x->out, 4);
	resp_bulk_str(x->out, "name");
	resp_bulk_str(x->out, "search");
	resp_bulk_str(x->out, "ver");
	resp_int(x->out, VELA_SEARCH_MODULE_VERSION);
	resp_bulk_str(x->out, "path");
	resp_bulk_str(x->out, "");
	resp_bulk_str(x->out, "args");
	resp_array(x->out, 0);
}

static void cmd_dbsize(cmd_ctx_t *x)
{
	resp_int(x->out, (int64_t)vela_db_size(x->db));
}

/* Runs on the writer outside any batch (CMD_ALONE). */
static void cmd_flushall(cmd_ctx_t *x)
{
	vela_err_t err = {0};
	if (vela_db_flush(x->db, &err))
		resp_errorf(x->out, "ERR %s", err.msg);
	else
		resp_simple(x->out, "OK");
}

/* ------------------------------------------------------------ INFO */

static void info_section(resp_out_t *t, const char *want, const char *name, bool *first)
{
	(void)want;
	resp_raw(t, *first ? "" : "\r\n", *first ? 0 : 2);
	*first = false;
	char h[64];
	int n = snprintf(h, sizeof(h), "# %s\r\n", name);
	resp_raw(t, h, (size_t)n);
}

static bool info_want(const char *want, const char *name)
{
	return want == NULL || strcasecmp(want, "all") == 0 || strcasecmp(want, "everything") == 0 ||
	       strcasecmp(want, "default") == 0 || strcasecmp(want, name) == 0;
}

static void info_kv(resp_out_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void info_kv(resp_out_t *t, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n > 0)
		resp_raw(t, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
	resp_raw(t, "\r\n", 2);
}

/* The compute backend (DESIGN §6, docs/server.md "GPU"). */
static void info_gpu(resp_out_t *t, const char *want, bool *first)
{
	vela_gpu_info_t g;
	vela_gpu_info(&g);
	info_section(t, want, "GPU", first);
	info_kv(t, "gpu_mode:%s", vela_gpu_mode_name(g.mode));
	info_kv(t, "gpu_backend:%s", g.backend);
	info_kv(t, "gpu_device:%s", g.device);
	info_kv(t, "gpu_devices:%d", g.device_count);
	info_kv(t, "gpu_library:%d", g.library_loaded);
	info_kv(t, "gpu_fallbacks:%llu", (unsigned long long)g.fallbacks);
	info_kv(t, "gpu_resident_blocks:%u", g.resident);
	info_kv(t, "gpu_resident_bytes:%llu", (unsigned long long)g.resident_bytes);
}

/* The encoder stage (docs/embeddings.md "Server"). */
static void info_embed(srv_t *s, resp_out_t *t, const char *want, bool *first)
{
	srv_embed_stats_t st;
	embedq_stats(s, &st);
	info_section(t, want, "Embed", first);
	info_kv(t, "embed_model_dir:%s", s->cfg.model_dir);
	info_kv(t, "embed_models_loaded:%u", st.n_models);
	const char *gpu = "none"; /* the one context's name, while a model runs on it */
	for (uint32_t i = 0; i < st.n_models && i < SRV_EMBED_STATS_MODELS; i++) {
		info_kv(t, "embed_model_%u:name=%s,dim=%u,kernel=%s,device=%s,texts=%llu", i,
			st.models[i].name, st.models[i].dim, st.models[i].kernel,
			st.models[i].device, (unsigned long long)st.models[i].texts);
		if (st.models[i].gpu[0])
			gpu = st.models[i].gpu;
	}
	info_kv(t, "embed_device:%s", st.device);
	info_kv(t, "embed_gpu:%s", gpu);
	info_kv(t, "embed_requests:%llu", (unsigned long long)st.requests);
	info_kv(t, "embed_failures:%llu", (unsigned long long)st.failures);
	info_kv(t, "embed_queued:%llu", (unsigned long long)st.queued);
	info_kv(t, "embed_batches:%llu", (unsigned long long)st.batches);
	info_kv(t, "embed_texts:%llu", (unsigned long long)st.texts);
	info_kv(t, "embed_tokens:%llu", (unsigned long long)st.tokens);
	info_kv(t, "embed_compute_seconds:%.3f", (double)st.compute_ns / 1e9);
	info_kv(t, "embed_tokens_per_sec:%.0f",
		st.compute_ns ? (double)st.tokens * 1e9 / (double)st.compute_ns : 0.0);
	info_kv(t, "embed_texts_per_batch:%.2f",
		st.batches ? (double)st.texts / (double)st.batches : 0.0);
	info_kv(t, "embed_batch_tokens:%u", s->cfg.embed_batch_tokens);
	info_kv(t, "embed_backfill_indexes:%llu", (unsigned long long)st.backfill_tasks);
	info_kv(t, "embed_backfill_queued:%llu", (unsigned long long)st.backfill_queued);
}

/* 1.5M, 23.40G: as Redis's bytesToHuman, for the *_human fields. */
static void human_bytes(char *buf, size_t cap, uint64_t n)
{
	const char *unit = "KMGTP";
	double d = (double)n;
	if (n < 1024) {
		snprintf(buf, cap, "%lluB", (unsigned long long)n);
		return;
	}
	int u = -1;
	while (d >= 1024 && u < 4) {
		d /= 1024;
		u++;
	}
	snprintf(buf, cap, "%.2f%c", d, unit[u]);
}

/* on_loop false: INFO inside EXEC, on the writer, where the client list
 * (the loop's) cannot be walked. */
static void info_clients(srv_t *s, resp_out_t *t, bool on_loop)
{
	uint64_t max_out = 0, max_in = 0;
	for (srv_client_t *c = on_loop ? s->clients : NULL; c; c = c->next) {
		if (c->olen - c->opos > max_out)
			max_out = c->olen - c->opos;
		if (c->qlen > max_in)
			max_in = c->qlen;
	}
	info_kv(t, "connected_clients:%u", s->n_clients);
	info_kv(t, "maxclients:%u", s->cfg.maxclients);
	info_kv(t, "client_recent_max_input_buffer:%llu", (unsigned long long)max_in);
	info_kv(t, "client_recent_max_output_buffer:%llu", (unsigned long long)max_out);
	info_kv(t, "blocked_clients:0");
}

/* used_memory first: redis-cli --stat finds fields with strstr. */
static void info_memory(srv_t *s, resp_out_t *t)
{
	uint64_t used = srv_mem_used(), rss = srv_mem_rss();
	if (used > s->mem_peak)
		s->mem_peak = used;
	char h[32];
	info_kv(t, "used_memory:%llu", (unsigned long long)used);
	human_bytes(h, sizeof(h), used);
	info_kv(t, "used_memory_human:%s", h);
	info_kv(t, "used_memory_rss:%llu", (unsigned long long)rss);
	human_bytes(h, sizeof(h), rss);
	info_kv(t, "used_memory_rss_human:%s", h);
	info_kv(t, "used_memory_peak:%llu", (unsigned long long)s->mem_peak);
	human_bytes(h, sizeof(h), s->mem_peak);
	info_kv(t, "used_memory_peak_human:%s", h);
	info_kv(t, "maxmemory:0");
	info_kv(t, "mem_allocator:%s",
#if defined(__SANITIZE_ADDRESS__)
		"asan"
#else
		"libc"
#endif
	);
}

static void info_persistence(srv_t *s, resp_out_t *t)
{
	size_t map, used;
	vela_db_map_usage(s->db, &map, &used);
	srv_save_t *v = &s->save;
	pthread_mutex_lock(&v->mu);
	uint64_t dirty = atomic_load(&s->stat_dirty);
	bool bg = v->bg_running;
	int64_t cur = bg ? (int64_t)((vela_now_ns() / 1000000 - v->bg_start_ms) / 1000) : -1;
	info_kv(t, "loading:0");
	info_kv(t, "async_loading:0");
	info_kv(t, "graph_builds_pending:%d", vela_db_builds_pending(s->db) ? 1 : 0);
	info_kv(t, "rdb_changes_since_last_save:%llu", (unsigned long long)(dirty - v->dirty_saved));
	info_kv(t, "rdb_bgsave_in_progress:%d", bg);
	info_kv(t, "rdb_last_save_time:%lld", (long long)v->last_save_unix);
	info_kv(t, "rdb_last_bgsave_status:%s", v->last_bg_status ? "err" : "ok");
	info_kv(t, "rdb_last_bgsave_time_sec:%lld", (long long)v->last_bg_secs);
	info_kv(t, "rdb_current_bgsave_time_sec:%lld", (long long)cur);
	info_kv(t, "rdb_saves:%llu", (unsigned long long)v->saves);
	pthread_mutex_unlock(&v->mu);
	info_kv(t, "aof_enabled:0");
	info_kv(t, "aof_rewrite_in_progress:0");
	info_kv(t, "aof_rewrite_scheduled:0");
	info_kv(t, "aof_last_write_status:ok");
	info_kv(t, "storage_engine:lmdb");
	info_kv(t, "map_size:%zu", map);
	info_kv(t, "map_used:%zu", used);
	info_kv(t, "fsync:%s", s->cfg.nosync ? "everysec" : "always");
}

static void info_build(srv_t *s, const char *want, resp_out_t *t, bool on_loop)
{
	bool first = true;
	uint64_t now = vela_now_ns() / 1000000;
	if (info_want(want, "server")) {
		info_section(t, want, "Server", &first);
		info_kv(t, "redis_version:%s", VELA_REDIS_COMPAT_VERSION);
		info_kv(t, "vela_version:%s", VELA_SERVER_VERSION);
		info_kv(t, "redis_mode:standalone");
		info_kv(t, "os:Linux");
		info_kv(t, "arch_bits:%d", (int)(sizeof(void *) * 8));
		info_kv(t, "process_id:%ld", (long)getpid());
		info_kv(t, "tcp_port:%d", s->port);
		info_kv(t, "uptime_in_seconds:%llu", (unsigned long long)((now - s->start_ms) / 1000));
		info_kv(t, "uptime_in_days:%llu",
			(unsigned long long)((now - s->start_ms) / 86400000u));
		info_kv(t, "executable:velad");
		info_kv(t, "cpu_features:%s", vela_cpu_features_str());
	}
	if (info_want(want, "clients")) {
		info_section(t, want, "Clients", &first);
		info_clients(s, t, on_loop);
	}
	if (info_want(want, "memory")) {
		info_section(t, want, "Memory", &first);
		info_memory(s, t);
	}
	if (info_want(want, "persistence")) {
		info_section(t, want, "Persistence", &first);
		info_persistence(s, t);
	}
	if (info_want(want, "stats")) {
		info_section(t, want, "Stats", &first);
		info_kv(t, "total_connections_received:%llu", (unsigned long long)atomic_load(&s->stat_conns));
		info_kv(t, "total_commands_processed:%llu", (unsigned long long)atomic_load(&s->stat_commands));
		info_kv(t, "instantaneous_ops_per_sec:%llu", (unsigned long long)srv_ops_per_sec(s));
		info_kv(t, "rejected_connections:%llu", (unsigned long long)atomic_load(&s->stat_rejected));
		info_kv(t, "expired_keys:%llu", (unsigned long long)atomic_load(&s->stat_expired));
		info_kv(t, "evicted_keys:0");
		info_kv(t, "client_query_buffer_limit_disconnections:%llu",
			(unsigned long long)s->stat_qbuf_closed);
		info_kv(t, "client_output_buffer_limit_disconnections:%llu",
			(unsigned long long)s->stat_obuf_closed);
	}
	if (info_want(want, "gpu"))
		info_gpu(t, want, &first);
	if (info_want(want, "embed"))
		info_embed(s, t, want, &first);
	if (info_want(want, "keyspace")) {
		info_section(t, want, "Keyspace", &first);
		uint64_t n = 0, e = 0;
		vela_db_keyspace(s->db, &n, &e);
		if (n)
			info_kv(t, "db0:keys=%llu,expires=%llu,avg_ttl=0", (unsigned long long)n,
				(unsigned long long)e);
	}
}

static void cmd_info(cmd_ctx_t *x)
{
	char *want = x->argc >= 2 ? arg_dup(&x->argv[1]) : NULL;
	resp_out_t t;
	resp_out_init(&t, 2);
	info_build(x->srv, want, &t, x->c != NULL);
	if (x->proto == 3)
		resp_verbatim(x->out, t.p, t.len);
	else
		resp_bulk(x->out, t.p, t.len);
	resp_out_free(&t);
	free(want);
}

/* ------------------------------------------------------------ MULTI / EXEC */

static void cmd_multi(cmd_ctx_t *x)
{
	if (x->c->in_multi) {
		resp_error(x->out, "ERR MULTI calls can not be nested");
		return;
	}
	x->c->in_multi = true;
	x->c->multi_err = false;
	resp_simple(x->out, "OK");
}

static void multi_reset(srv_client_t *c)
{
	srv_job_t *m = c->mq_head;
	while (m) {
		srv_job_t *n = m->next;
		job_free(m);
		m = n;
	}
	c->mq_head = c->mq_tail = NULL;
	c->mq_n = 0;
	c->in_multi = c->multi_err = false;
}

static void cmd_discard(cmd_ctx_t *x)
{
	if (!x->c->in_multi) {
		resp_error(x->out, "ERR DISCARD without MULTI");
		return;
	}
	multi_reset(x->c);
	resp_simple(x->out, "OK");
}

/* EXEC on the loop thread: without MULTI, or after a queuing error. */
static void cmd_exec(cmd_ctx_t *x)
{
	if (!x->c->in_multi) {
		resp_error(x->out, "ERR EXEC without MULTI");
		return;
	}
	multi_reset(x->c);
	resp_error(x->out, "EXECABORT Transaction discarded because of previous errors.");
}

/* Build the job that runs a transaction on the writer thread. */
srv_job_t *multi_take(srv_client_t *c)
{
	resp_arg_t name = {"exec", 4};
	srv_job_t *j = job_new(c, cmd_lookup("exec", 4), 1, &name, c->proto);
	if (j == NULL)
		return NULL;
	j->multi = 1;
	j->multi_cmds = c->mq_head;
	c->mq_head = c->mq_tail = NULL;
	c->in_multi = c->multi_err = false;
	return j;
}

/* Commit the transaction's open batch; on failure the whole EXEC reply
 * becomes the error (the writes since the last commit are lost). */
static int multi_commit(cmd_ctx_t *x, vela_batch_t **batch)
{
	vela_err_t err = {0};
	int rc = vela_batch_commit(*batch, &err);
	*batch = NULL;
	if (rc) {
		x->out->len = 0;
		resp_errorf(x->out, "ERR %s", err.msg[0] ? err.msg : vela_strerror(rc));
	}
	return rc;
}

/* On the writer: run the queued commands in order, one reply each. The
 * caller starts it with no batch open. A read after a write commits the
 * batch first, so it sees the transaction's own writes as in Redis (the
 * cost: other clients may see a transaction with reads half-committed). */
void cmd_exec_multi(cmd_ctx_t *x, srv_job_t *j, vela_batch_t **batch)
{
	size_t n = 0;
	for (srv_job_t *m = j->multi_cmds; m; m = m->next)
		n++;
	resp_array(x->out, n);
	for (srv_job_t *m = j->multi_cmds; m; m = m->next) {
		cmd_ctx_t y = {.srv = x->srv, .db = x->db, .argc = m->argc, .argv = m->argv,
			       .out = x->out, .proto = x->proto};
		vela_err_t err = {0};
		bool batched = (m->cmd->flags & CMD_WRITE) && !(m->cmd->flags & CMD_ALONE);
		if (!batched && *batch && multi_commit(x, batch))
			return; /* DDL and reads run outside the batch, after its writes */
		if (batched && *batch == NULL && vela_batch_begin(x->db, batch, &err)) {
			resp_errorf(x->out, "ERR %s", err.msg);
			continue;
		}
		y.batch = *batch;
		if (m->cmd->flags & CMD_SEARCH) {
			void ft_search_one(cmd_ctx_t *x);
			ft_search_one(&y);
		} else {
			slowlog_run(m->cmd, &y, j->c);
		}
	}
}

/* ------------------------------------------------------------ expiry job */

static void cmd_expire_cycle(cmd_ctx_t *x)
{
	size_t n = 0;
	vela_err_t err = {0};
	if (vela_batch_expire_cycle(x->batch, SRV_EXPIRE_CYCLE_KEYS, &n, &err))
		vela_warn("expiry cycle: %s", err.msg);
	atomic_fetch_add(&x->srv->stat_expired, n);
}

static const srv_command_t expire_cmd = {"__expire", 1, CMD_WRITE, cmd_expire_cycle};

void srv_job_expire_submit(srv_t *s)
{
	resp_arg_t a = {"__expire", 8};
	srv_job_t *j = job_new(NULL, &expire_cmd, 1, &a, 2);
	if (j == NULL) {
		s->expire_pending = false;
		return;
	}
	jobq_push(&s->writeq, j);
}

/* ------------------------------------------------------------ CONFIG / ACL */

void cmd_config(cmd_ctx_t *x);
void cmd_acl(cmd_ctx_t *x);

/* ------------------------------------------------------------ the table */

/* Declared in cmd_keys.c and cmd_ft.c. */
void cmd_del(cmd_ctx_t *), cmd_exists(cmd_ctx_t *), cmd_type(cmd_ctx_t *),
	cmd_expire(cmd_ctx_t *), cmd_pexpire(cmd_ctx_t *), cmd_expireat(cmd_ctx_t *),
	cmd_ttl(cmd_ctx_t *), cmd_pttl(cmd_ctx_t *), cmd_persist(cmd_ctx_t *),
	cmd_keys(cmd_ctx_t *), cmd_scan(cmd_ctx_t *), cmd_set(cmd_ctx_t *), cmd_get(cmd_ctx_t *),
	cmd_hset(cmd_ctx_t *), cmd_hmset(cmd_ctx_t *), cmd_hsetnx(cmd_ctx_t *),
	cmd_hget(cmd_ctx_t *), cmd_hmget(cmd_ctx_t *), cmd_hgetall(cmd_ctx_t *),
	cmd_hdel(cmd_ctx_t *), cmd_hexists(cmd_ctx_t *), cmd_hlen(cmd_ctx_t *);
void cmd_save(cmd_ctx_t *), cmd_bgsave(cmd_ctx_t *), cmd_lastsave(cmd_ctx_t *);
void cmd_ft_create(cmd_ctx_t *), cmd_ft_search(cmd_ctx_t *), cmd_ft_info(cmd_ctx_t *),
	cmd_ft_list(cmd_ctx_t *), cmd_ft_dropindex(cmd_ctx_t *), cmd_ft_config(cmd_ctx_t *),
	cmd_ft_explain(cmd_ctx_t *), cmd_ft_profile(cmd_ctx_t *), cmd_ft_train(cmd_ctx_t *),
	cmd_ft_layout(cmd_ctx_t *);
void cmd_embed(cmd_ctx_t *); /* embedq.c */

#define W CMD_WRITE
#define ALONE (CMD_WRITE | CMD_ALONE)
#define NA CMD_NOAUTH
#define NM CMD_NOMULTI

static const srv_command_t commands[] = {
	{"acl", -2, CMD_ADMIN, cmd_acl},
	{"auth", -2, NA | NM, cmd_auth},
	{"bgsave", -1, CMD_ADMIN, cmd_bgsave},
	{"client", -2, 0, cmd_client},
	{"command", -1, 0, cmd_command},
	{"config", -2, CMD_ADMIN, cmd_config},
	{"dbsize", 1, 0, cmd_dbsize},
	{"del", -2, W, cmd_del},
	{"discard", 1, NM, cmd_discard},
	{"echo", 2, 0, cmd_echo},
	{"embed", -4, CMD_EMBED, cmd_embed},
	{"exec", 1, NM, cmd_exec},
	{"exists", -2, CMD_VIEW, cmd_exists},
	{"expire", -3, W, cmd_expire},
	{"expireat", -3, W, cmd_expireat},
	{"flushall", -1, ALONE, cmd_flushall},
	{"flushdb", -1, ALONE, cmd_flushall},
	{"ft._list", 1, 0, cmd_ft_list},
	{"ft.config", -3, CMD_CSTR, cmd_ft_config},
	{"ft.create", -2, ALONE | CMD_EMBED, cmd_ft_create},
	{"ft.dropindex", -2, ALONE, cmd_ft_dropindex},
	{"ft.explain", -3, CMD_SEARCH | CMD_EMBED, cmd_ft_explain},
	{"ft.info", 2, CMD_CSTR, cmd_ft_info},
	{"ft.layout", -3, ALONE, cmd_ft_layout},
	{"ft.profile", -5, CMD_SEARCH | CMD_EMBED, cmd_ft_profile},
	{"ft.search", -3, CMD_SEARCH | CMD_EMBED, cmd_ft_search},
	{"ft.train", -2, ALONE, cmd_ft_train},
	{"get", 2, CMD_VIEW, cmd_get},
	{"hdel", -3, W, cmd_hdel},
	{"hello", -1, NA | NM, cmd_hello},
	{"hexists", 3, CMD_VIEW, cmd_hexists},
	{"hget", 3, CMD_VIEW, cmd_hget},
	{"hgetall", 2, CMD_VIEW, cmd_hgetall},
	{"hlen", 2, CMD_VIEW, cmd_hlen},
	{"hmget", -3, CMD_VIEW, cmd_hmget},
	{"hmset", -4, W | CMD_EMBED, cmd_hmset},
	{"hset", -4, W | CMD_EMBED, cmd_hset},
	{"hsetnx", 4, W | CMD_EMBED, cmd_hsetnx},
	{"info", -1, 0, cmd_info},
	{"keys", 2, 0, cmd_keys},
	{"lastsave", 1, 0, cmd_lastsave},
	{"module", -2, 0, cmd_module},
	{"multi", 1, NM, cmd_multi},
	{"persist", 2, W, cmd_persist},
	{"pexpire", -3, W, cmd_pexpire},
	{"ping", -1, 0, cmd_ping},
	{"pttl", 2, CMD_VIEW, cmd_pttl},
	{"quit", -1, NA | NM, cmd_quit},
	{"save", -1, ALONE | CMD_ADMIN, cmd_save},
	{"scan", -2, 0, cmd_scan},
	{"select", 2, 0, cmd_select},
	{"set", -3, W, cmd_set},
	{"slowlog", -2, CMD_ADMIN, cmd_slowlog},
	{"ttl", 2, CMD_VIEW, cmd_ttl},
	{"type", 2, CMD_VIEW, cmd_type},
	{"unlink", -2, W, cmd_del},
};

const srv_command_t *cmd_lookup(const char *name, size_t len)
{
	char low[32];
	if (len == 0 || len >= sizeof(low))
		return NULL;
	for (size_t i = 0; i < len; i++)
		low[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
	low[len] = '\0';
	size_t lo = 0, hi = sizeof(commands) / sizeof(commands[0]);
	while (lo < hi) { /* the table is sorted by name */
		size_t mid = (lo + hi) / 2;
		int c = strcmp(low, commands[mid].name);
		if (c == 0)
			return &commands[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

size_t cmd_count(void)
{
	return sizeof(commands) / sizeof(commands[0]);
}
