/* Keyspace and hash commands. Writes run on the writer thread with the
 * group-commit batch in x->batch; reads run inline on the loop. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/srv_int.h"

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* An engine error as a Redis error reply (the engine's text already starts
 * with WRONGTYPE / OOM where Redis has those codes). */
static void reply_err(resp_out_t *o, const vela_err_t *err)
{
	resp_error(o, err->msg[0] ? err->msg : vela_strerror(err->code));
}

static void reply_not_int(resp_out_t *o)
{
	resp_error(o, "ERR value is not an integer or out of range");
}

/* ------------------------------------------------------------ keys */

void cmd_del(cmd_ctx_t *x)
{
	int64_t n = 0;
	for (int i = 1; i < x->argc; i++) {
		int d = 0;
		vela_err_t err = {0};
		if (vela_batch_del(x->batch, x->argv[i].p, x->argv[i].len, &d, &err)) {
			reply_err(x->out, &err);
			return;
		}
		n += d;
	}
	resp_int(x->out, n);
}

void cmd_exists(cmd_ctx_t *x)
{
	int64_t n = 0;
	for (int i = 1; i < x->argc; i++) {
		vela_key_type_t t;
		vela_view_t *v = srv_view(x);
		if (v)
			vela_view_key_type(v, x->argv[i].p, x->argv[i].len, &t);
		else
			vela_key_type(x->db, x->argv[i].p, x->argv[i].len, &t);
		n += t != VELA_KEY_NONE;
	}
	resp_int(x->out, n);
}

void cmd_type(cmd_ctx_t *x)
{
	vela_key_type_t t;
	vela_view_t *v = srv_view(x);
	if (v)
		vela_view_key_type(v, x->argv[1].p, x->argv[1].len, &t);
	else
		vela_key_type(x->db, x->argv[1].p, x->argv[1].len, &t);
	resp_simple(x->out, t == VELA_KEY_STRING ? "string" : t == VELA_KEY_HASH ? "hash" : "none");
}

/* EXPIRE family: at_ms is absolute; NX/XX/GT/LT options are not supported. */
static void expire_at(cmd_ctx_t *x, int64_t at_ms)
{
	if (x->argc > 3) {
		resp_error(x->out, "ERR EXPIRE options NX/XX/GT/LT are not supported");
		return;
	}
	int applied = 0;
	vela_err_t err = {0};
	if (vela_batch_expire(x->batch, x->argv[1].p, x->argv[1].len, at_ms, &applied, &err))
		reply_err(x->out, &err);
	else
		resp_int(x->out, applied);
}

/* As Redis's expireGenericCommand: a time that overflows when scaled to ms
 * or added to the base is refused; a negative one is allowed (it deletes). */
static int expire_arg(cmd_ctx_t *x, const char *name, int64_t scale, int64_t base, int64_t *at)
{
	int64_t v;
	if (arg_int64(&x->argv[2], &v)) {
		reply_not_int(x->out);
		return -1;
	}
	if ((scale > 1 && (v > INT64_MAX / scale || v < INT64_MIN / scale)) ||
	    v * scale > INT64_MAX - base) {
		resp_errorf(x->out, "ERR invalid expire time in '%s' command", name);
		return -1;
	}
	*at = base + v * scale;
	if (*at <= 0)
		*at = 1; /* in the past: deletes (0 and below mean "persist" to the engine) */
	return 0;
}

void cmd_expire(cmd_ctx_t *x)
{
	int64_t at;
	if (expire_arg(x, "expire", 1000, wall_ms(), &at) == 0)
		expire_at(x, at);
}

void cmd_pexpire(cmd_ctx_t *x)
{
	int64_t at;
	if (expire_arg(x, "pexpire", 1, wall_ms(), &at) == 0)
		expire_at(x, at);
}

void cmd_expireat(cmd_ctx_t *x)
{
	int64_t at;
	if (expire_arg(x, "expireat", 1000, 0, &at) == 0)
		expire_at(x, at);
}

void cmd_persist(cmd_ctx_t *x)
{
	int applied = 0;
	vela_err_t err = {0};
	if (vela_batch_expire(x->batch, x->argv[1].p, x->argv[1].len, -1, &applied, &err))
		reply_err(x->out, &err);
	else
		resp_int(x->out, applied);
}

static void ttl_reply(cmd_ctx_t *x, int64_t div)
{
	int64_t ms;
	vela_view_t *v = srv_view(x);
	if (v)
		vela_view_ttl(v, x->argv[1].p, x->argv[1].len, &ms);
	else
		vela_ttl(x->db, x->argv[1].p, x->argv[1].len, &ms);
	/* Redis rounds TTL to the nearest second. */
	resp_int(x->out, ms < 0 ? ms : (ms + div / 2) / div);
}

void cmd_ttl(cmd_ctx_t *x)
{
	ttl_reply(x, 1000);
}

void cmd_pttl(cmd_ctx_t *x)
{
	ttl_reply(x, 1);
}

static void reply_keylist(resp_out_t *o, const vela_keylist_t *l)
{
	resp_array(o, l->n);
	for (size_t i = 0; i < l->n; i++)
		resp_bulk(o, l->keys[i], l->lens[i]);
}

void cmd_keys(cmd_ctx_t *x)
{
	char *pat = arg_dup(&x->argv[1]);
	vela_keylist_t l;
	uint64_t next;
	if (pat == NULL || vela_scan(x->db, strcmp(pat, "*") ? pat : NULL, 0, 0, &l, &next)) {
		resp_error(x->out, "ERR cannot list keys");
		free(pat);
		return;
	}
	reply_keylist(x->out, &l);
	vela_keylist_free(&l);
	free(pat);
}

/* A cursor as Redis reads one (strtoul): unsigned, so "-1" wraps to the
 * largest cursor (past the end: an empty, final page); no spaces or junk. */
static int scan_cursor(const resp_arg_t *a, uint64_t *cur)
{
	char buf[32];
	if (a->len == 0 || a->len >= sizeof(buf) || isspace((unsigned char)a->p[0]))
		return VELA_EINVAL;
	memcpy(buf, a->p, a->len);
	buf[a->len] = '\0';
	char *end;
	errno = 0;
	unsigned long long v = strtoull(buf, &end, 10);
	if (*end || errno == ERANGE)
		return VELA_EINVAL;
	*cur = v;
	return VELA_OK;
}

/* SCAN cursor [MATCH pattern] [COUNT n] [TYPE t] */
void cmd_scan(cmd_ctx_t *x)
{
	int64_t count = 10;
	uint64_t cur;
	const resp_arg_t *match = NULL, *type = NULL;
	if (scan_cursor(&x->argv[1], &cur)) {
		resp_error(x->out, "ERR invalid cursor");
		return;
	}
	for (int i = 2; i < x->argc; i++) {
		bool more = i + 1 < x->argc;
		if (arg_eq(&x->argv[i], "MATCH") && more) {
			match = &x->argv[++i];
		} else if (arg_eq(&x->argv[i], "COUNT") && more) {
			if (arg_int64(&x->argv[++i], &count)) {
				reply_not_int(x->out);
				return;
			}
			if (count < 1) {
				resp_error(x->out, "ERR syntax error");
				return;
			}
		} else if (arg_eq(&x->argv[i], "TYPE") && more) {
			type = &x->argv[++i];
		} else {
			resp_error(x->out, "ERR syntax error");
			return;
		}
	}
	char *pat = match ? arg_dup(match) : NULL;
	vela_keylist_t l;
	uint64_t next;
	if (vela_scan(x->db, pat, cur, (size_t)count, &l, &next)) {
		resp_error(x->out, "ERR cannot scan keys");
		free(pat);
		return;
	}
	size_t keep = 0; /* TYPE filters after the walk, as Redis does */
	for (size_t i = 0; i < l.n; i++) {
		vela_key_type_t t;
		vela_key_type(x->db, l.keys[i], l.lens[i], &t);
		bool ok = !type || (arg_eq(type, "hash") && t == VELA_KEY_HASH) ||
			  (arg_eq(type, "string") && t == VELA_KEY_STRING);
		if (ok) {
			char *k = l.keys[keep];
			l.keys[keep] = l.keys[i];
			l.keys[i] = k;
			size_t kl = l.lens[keep];
			l.lens[keep++] = l.lens[i];
			l.lens[i] = kl;
		}
	}
	char c[24];
	int cl = snprintf(c, sizeof(c), "%llu", (unsigned long long)next);
	resp_array(x->out, 2);
	resp_bulk(x->out, c, (size_t)cl);
	size_t n = l.n;
	l.n = keep;
	reply_keylist(x->out, &l);
	l.n = n;
	vela_keylist_free(&l);
	free(pat);
}

/* ------------------------------------------------------------ strings */

/* SET key value [NX|XX] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]
 * As Redis: options are parsed first (a syntax error wins), then the time. */
void cmd_set(cmd_ctx_t *x)
{
	unsigned flags = 0;
	const resp_arg_t *unit = NULL, *when = NULL;
	for (int i = 3; i < x->argc; i++) {
		const resp_arg_t *a = &x->argv[i];
		bool more = i + 1 < x->argc;
		if (arg_eq(a, "NX") && !(flags & VELA_SET_XX))
			flags |= VELA_SET_NX;
		else if (arg_eq(a, "XX") && !(flags & VELA_SET_NX))
			flags |= VELA_SET_XX;
		else if (arg_eq(a, "KEEPTTL") && unit == NULL)
			flags |= VELA_SET_KEEPTTL;
		else if ((arg_eq(a, "EX") || arg_eq(a, "PX") || arg_eq(a, "EXAT") || arg_eq(a, "PXAT")) &&
			 more && unit == NULL && !(flags & VELA_SET_KEEPTTL)) {
			unit = a;
			when = &x->argv[++i];
		} else {
			resp_error(x->out, "ERR syntax error");
			return;
		}
	}
	int64_t at = 0;
	if (unit) {
		int64_t v;
		bool sec = arg_eq(unit, "EX") || arg_eq(unit, "EXAT");
		int64_t base = arg_eq(unit, "EX") || arg_eq(unit, "PX") ? wall_ms() : 0;
		if (arg_int64(when, &v)) {
			reply_not_int(x->out);
			return;
		}
		if (v <= 0 || (sec && v > INT64_MAX / 1000) || (sec ? v * 1000 : v) > INT64_MAX - base) {
			resp_error(x->out, "ERR invalid expire time in 'set' command");
			return;
		}
		at = base + (sec ? v * 1000 : v);
	}
	int done = 0;
	vela_err_t err = {0};
	if (vela_batch_set(x->batch, x->argv[1].p, x->argv[1].len, x->argv[2].p, x->argv[2].len,
			   flags, at, &done, &err))
		reply_err(x->out, &err);
	else if (done)
		resp_simple(x->out, "OK");
	else
		resp_null(x->out);
}

void cmd_get(cmd_ctx_t *x)
{
	char *v;
	size_t vl;
	vela_err_t err = {0};
	vela_view_t *view = srv_view(x);
	int rc = view ? vela_view_getstr(view, x->argv[1].p, x->argv[1].len, &v, &vl, &err)
		      : vela_getstr(x->db, x->argv[1].p, x->argv[1].len, &v, &vl, &err);
	if (rc == VELA_ENOTFOUND) {
		resp_null(x->out);
		return;
	}
	if (rc) {
		reply_err(x->out, &err);
		return;
	}
	resp_bulk(x->out, v, vl);
	free(v);
}

/* ------------------------------------------------------------ hashes */

static int hset_common(cmd_ctx_t *x, size_t *added)
{
	if ((x->argc - 2) % 2 != 0) {
		reply_wrong_arity(x->out, &x->argv[0]);
		return -1;
	}
	size_t n = (size_t)(x->argc - 2) / 2;
	vela_kv_t *kv = malloc(n * sizeof(*kv));
	if (kv == NULL) {
		resp_error(x->out, "OOM out of memory");
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		kv[i] = (vela_kv_t){x->argv[2 + 2 * i].p, x->argv[2 + 2 * i].len,
				    x->argv[3 + 2 * i].p, x->argv[3 + 2 * i].len};
	vela_err_t err = {0};
	int rc = vela_batch_hset(x->batch, x->argv[1].p, x->argv[1].len, kv, n, added, &err);
	free(kv);
	if (rc)
		reply_err(x->out, &err);
	return rc ? -1 : 0;
}

void cmd_hset(cmd_ctx_t *x)
{
	size_t added = 0;
	if (hset_common(x, &added) == 0)
		resp_int(x->out, (int64_t)added);
}

void cmd_hmset(cmd_ctx_t *x)
{
	size_t added;
	if (hset_common(x, &added) == 0)
		resp_simple(x->out, "OK");
}

/* HSETNX key f v; the encoder stage appends "vfield vector" pairs when f is
 * a SOURCE field (arity is checked on the client's 4 arguments before). */
void cmd_hsetnx(cmd_ctx_t *x)
{
	vela_kv_t kv = {x->argv[2].p, x->argv[2].len, x->argv[3].p, x->argv[3].len};
	size_t n_extra = x->argc > 4 ? (size_t)(x->argc - 4) / 2 : 0;
	vela_kv_t extra[n_extra ? n_extra : 1];
	for (size_t i = 0; i < n_extra; i++)
		extra[i] = (vela_kv_t){x->argv[4 + 2 * i].p, x->argv[4 + 2 * i].len,
				       x->argv[5 + 2 * i].p, x->argv[5 + 2 * i].len};
	int set = 0;
	vela_err_t err = {0};
	if (vela_batch_hsetnx_with(x->batch, x->argv[1].p, x->argv[1].len, &kv, extra, n_extra,
				   &set, &err))
		reply_err(x->out, &err);
	else
		resp_int(x->out, set);
}

void cmd_hdel(cmd_ctx_t *x)
{
	size_t n = (size_t)x->argc - 2, removed = 0;
	vela_kv_t *kv = calloc(n, sizeof(*kv));
	if (kv == NULL) {
		resp_error(x->out, "OOM out of memory");
		return;
	}
	for (size_t i = 0; i < n; i++)
		kv[i] = (vela_kv_t){x->argv[2 + i].p, x->argv[2 + i].len, NULL, 0};
	vela_err_t err = {0};
	if (vela_batch_hdel(x->batch, x->argv[1].p, x->argv[1].len, kv, n, &removed, &err))
		reply_err(x->out, &err);
	else
		resp_int(x->out, (int64_t)removed);
	free(kv);
}

/* The hash at argv[1]; NULL with the reply written when absent or wrong type. */
static vela_doc_t *hash_load(cmd_ctx_t *x, bool *absent)
{
	vela_doc_t *d = NULL;
	vela_err_t err = {0};
	vela_view_t *v = srv_view(x);
	int rc = v ? vela_view_get(v, x->argv[1].p, x->argv[1].len, &d, &err)
		   : vela_get(x->db, x->argv[1].p, x->argv[1].len, &d, &err);
	*absent = rc == VELA_ENOTFOUND;
	if (rc && !*absent)
		reply_err(x->out, &err);
	return rc ? NULL : d;
}

static const vela_kv_t *hash_field(const vela_doc_t *d, const resp_arg_t *name)
{
	for (size_t i = 0; d && i < d->n_fields; i++)
		if (d->fields[i].name_len == name->len &&
		    memcmp(d->fields[i].name, name->p, name->len) == 0)
			return &d->fields[i];
	return NULL;
}

void cmd_hget(cmd_ctx_t *x)
{
	bool absent;
	vela_doc_t *d = hash_load(x, &absent);
	if (d == NULL && !absent)
		return;
	const vela_kv_t *f = hash_field(d, &x->argv[2]);
	if (f)
		resp_bulk(x->out, f->value, f->value_len);
	else
		resp_null(x->out);
	vela_doc_free(d);
}

void cmd_hmget(cmd_ctx_t *x)
{
	bool absent;
	vela_doc_t *d = hash_load(x, &absent);
	if (d == NULL && !absent)
		return;
	resp_array(x->out, (size_t)x->argc - 2);
	for (int i = 2; i < x->argc; i++) {
		const vela_kv_t *f = hash_field(d, &x->argv[i]);
		if (f)
			resp_bulk(x->out, f->value, f->value_len);
		else
			resp_null(x->out);
	}
	vela_doc_free(d);
}

void cmd_hgetall(cmd_ctx_t *x)
{
	bool absent;
	vela_doc_t *d = hash_load(x, &absent);
	if (d == NULL && !absent)
		return;
	resp_map(x->out, d ? d->n_fields : 0);
	for (size_t i = 0; d && i < d->n_fields; i++) {
		resp_bulk(x->out, d->fields[i].name, d->fields[i].name_len);
		resp_bulk(x->out, d->fields[i].value, d->fields[i].value_len);
	}
	vela_doc_free(d);
}

void cmd_hexists(cmd_ctx_t *x)
{
	bool absent;
	vela_doc_t *d = hash_load(x, &absent);
	if (d == NULL && !absent)
		return;
	resp_int(x->out, hash_field(d, &x->argv[2]) != NULL);
	vela_doc_free(d);
}

void cmd_hlen(cmd_ctx_t *x)
{
	bool absent;
	vela_doc_t *d = hash_load(x, &absent);
	if (d == NULL && !absent)
		return;
	resp_int(x->out, d ? (int64_t)d->n_fields : 0);
	vela_doc_free(d);
}
