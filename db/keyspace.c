/* The Redis keyspace beyond hashes: string keys, expiry (EXPIRE/TTL with
 * lazy expiry on access plus an active cycle), key types, KEYS/SCAN, FLUSHALL.
 * Expiry times live in two tables: `expires` (key -> time) to answer TTL and
 * `expire_idx` (time | key) so the active cycle reads due keys in order. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"

int64_t db_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------ expiry rows */

static int expiry_get(storage_txn_t *txn, const uint8_t *key, size_t klen, int64_t *at)
{
	const void *v;
	size_t vl;
	int rc = storage_get(txn, ST_EXPIRES, key, klen, &v, &vl);
	if (rc)
		return rc;
	if (vl != 8)
		return VELA_ECORRUPT;
	*at = (int64_t)vela_get_be64(v);
	return VELA_OK;
}

static size_t expiry_idx_key(uint8_t *buf, int64_t at, const uint8_t *key, size_t klen)
{
	vela_put_be64(buf, (uint64_t)at);
	memcpy(buf + 8, key, klen);
	return 8 + klen;
}

int db_expiry_clear(storage_txn_t *txn, const uint8_t *key, size_t klen)
{
	int64_t at = 0;
	int rc = expiry_get(txn, key, klen, &at);
	if (rc == VELA_ENOTFOUND)
		return VELA_OK;
	uint8_t ik[8 + STORAGE_DOC_KEY_MAX];
	size_t il = expiry_idx_key(ik, at, key, klen);
	if (rc == 0)
		rc = storage_del(txn, ST_EXPIRES, key, klen);
	if (rc == 0)
		rc = storage_del(txn, ST_EXPIRE_IDX, ik, il);
	return rc == VELA_ENOTFOUND ? VELA_OK : rc;
}

static int expiry_set(storage_txn_t *txn, const uint8_t *key, size_t klen, int64_t at)
{
	int rc = db_expiry_clear(txn, key, klen);
	uint8_t v[8], ik[8 + STORAGE_DOC_KEY_MAX];
	vela_put_be64(v, (uint64_t)at);
	size_t il = expiry_idx_key(ik, at, key, klen);
	if (rc == 0)
		rc = storage_put(txn, ST_EXPIRES, key, klen, v, 8);
	if (rc == 0)
		rc = storage_put(txn, ST_EXPIRE_IDX, ik, il, "", 0);
	return rc;
}

/* ------------------------------------------------------------ key state */

static int key_in(storage_txn_t *txn, storage_table_t t, const uint8_t *key, size_t klen)
{
	const void *v;
	size_t vl;
	return storage_get(txn, t, key, klen, &v, &vl) == 0;
}

int db_key_is_string(storage_txn_t *txn, const uint8_t *key, size_t klen)
{
	return key_in(txn, ST_STRINGS, key, klen) ? VELA_ETYPE : VELA_OK;
}

int db_key_delete(vela_db_t *db, storage_txn_t *txn, const uint8_t *key, size_t klen,
		  db_changes_t *ch, size_t *count)
{
	int hash = 0;
	int rc = db_doc_delete(db, txn, key, klen, ch, &hash);
	int str = rc == 0 ? storage_del(txn, ST_STRINGS, key, klen) : rc;
	if (str && str != VELA_ENOTFOUND)
		return str;
	if ((rc = db_expiry_clear(txn, key, klen)))
		return rc;
	if (count)
		*count = (size_t)(hash || str == 0);
	return VELA_OK;
}

int db_key_lazy_expire(vela_db_t *db, storage_txn_t *txn, const uint8_t *key, size_t klen,
		       db_changes_t *ch)
{
	int64_t at = 0;
	int rc = expiry_get(txn, key, klen, &at);
	if (rc == VELA_ENOTFOUND)
		return VELA_OK;
	if (rc)
		return rc;
	return at <= db_now_ms() ? db_key_delete(db, txn, key, klen, ch, NULL) : VELA_OK;
}

/* ------------------------------------------------------------ write ops */

static int op_set(vela_db_t *db, storage_txn_t *txn, db_op_t *op, db_changes_t *ch)
{
	int exists = key_in(txn, ST_STRINGS, op->key, op->klen) ||
		     key_in(txn, ST_DOCS, op->key, op->klen);
	if (((op->flags & VELA_SET_NX) && exists) || ((op->flags & VELA_SET_XX) && !exists))
		return VELA_OK; /* count stays 0: not set */
	int rc = VELA_OK;
	/* KEEPTTL keeps the key's expiry even when the key was a hash, whose
	 * deletion below clears it. */
	int64_t kept = 0;
	bool keep = (op->flags & VELA_SET_KEEPTTL) && op->at_ms <= 0 &&
		    expiry_get(txn, op->key, op->klen, &kept) == 0;
	if (key_in(txn, ST_DOCS, op->key, op->klen)) /* SET replaces a hash */
		rc = db_doc_delete(db, txn, op->key, op->klen, ch, NULL);
	if (rc == 0)
		rc = storage_put(txn, ST_STRINGS, op->key, op->klen, op->val, op->vlen);
	if (rc == 0 && (op->at_ms > 0 || keep))
		rc = expiry_set(txn, op->key, op->klen, op->at_ms > 0 ? op->at_ms : kept);
	else if (rc == 0 && !(op->flags & VELA_SET_KEEPTTL))
		rc = db_expiry_clear(txn, op->key, op->klen);
	op->count = rc == 0;
	return rc;
}

static int op_expire(vela_db_t *db, storage_txn_t *txn, db_op_t *op, db_changes_t *ch)
{
	int exists = key_in(txn, ST_STRINGS, op->key, op->klen) ||
		     key_in(txn, ST_DOCS, op->key, op->klen);
	if (!exists)
		return VELA_OK;
	if (op->at_ms < 0) { /* PERSIST: applied only if there was a TTL */
		int64_t at = 0;
		op->count = expiry_get(txn, op->key, op->klen, &at) == 0;
		return op->count ? db_expiry_clear(txn, op->key, op->klen) : VELA_OK;
	}
	op->count = 1;
	if (op->at_ms <= db_now_ms()) /* a time in the past deletes, as in Redis */
		return db_key_delete(db, txn, op->key, op->klen, ch, NULL);
	return expiry_set(txn, op->key, op->klen, op->at_ms);
}

struct due_ctx {
	uint8_t (*keys)[STORAGE_DOC_KEY_MAX];
	size_t *lens;
	size_t n, max;
};

static int due_collect(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
		       size_t vlen)
{
	struct due_ctx *d = ctx;
	if (klen < 8 || klen - 8 > STORAGE_DOC_KEY_MAX)
		return VELA_ECORRUPT;
	memcpy(d->keys[d->n], key + 8, klen - 8);
	d->lens[d->n++] = klen - 8;
	return d->n == d->max;
}

/* Active expiry: delete up to op->n keys whose time has come, oldest first. */
static int op_expire_cycle(vela_db_t *db, storage_txn_t *txn, db_op_t *op, db_changes_t *ch)
{
	if (op->n == 0)
		return VELA_OK;
	struct due_ctx d = {.max = op->n};
	d.keys = malloc(op->n * sizeof(*d.keys));
	d.lens = malloc(op->n * sizeof(*d.lens));
	int rc = d.keys && d.lens ? VELA_OK : VELA_ENOMEM;
	uint8_t hi[9];
	vela_put_be64(hi, (uint64_t)db_now_ms());
	hi[8] = 0xff;
	if (rc == 0)
		rc = storage_scan_range(txn, ST_EXPIRE_IDX, NULL, 0, hi, 9, due_collect, &d);
	for (size_t i = 0; rc == 0 && i < d.n; i++)
		rc = db_key_delete(db, txn, d.keys[i], d.lens[i], ch, NULL);
	/* Until snapshots of derived data exist, every index is rebuilt from
	 * LMDB at open, so the change log is never replayed: keep it bounded. */
	uint64_t seq;
	if (rc == 0 && (rc = storage_log_last(txn, &seq)) == 0)
		rc = storage_log_trim(txn, seq);
	op->count = rc ? 0 : d.n;
	free(d.keys);
	free(d.lens);
	return rc;
}

int db_keyspace_op(vela_db_t *db, storage_txn_t *txn, db_op_t *op, db_changes_t *ch)
{
	switch (op->kind) {
	case OP_SET:
		return op_set(db, txn, op, ch);
	case OP_EXPIRE:
		return op_expire(db, txn, op, ch);
	case OP_EXPIRE_CYCLE:
		return op_expire_cycle(db, txn, op, ch);
	default:
		return VELA_EINVAL;
	}
}

/* ------------------------------------------------------------ reads */

struct vela_view {
	vela_db_t *db;
	storage_txn_t *txn;
};

int vela_view_begin(vela_db_t *db, vela_view_t **out)
{
	vela_view_t *v = malloc(sizeof(*v));
	if (v == NULL)
		return VELA_ENOMEM;
	v->db = db;
	pthread_rwlock_rdlock(&db->lock);
	int rc = storage_txn_begin(db->env, NULL, 0, &v->txn);
	if (rc) {
		pthread_rwlock_unlock(&db->lock);
		free(v);
		return rc;
	}
	*out = v;
	return VELA_OK;
}

void vela_view_end(vela_view_t *v)
{
	if (v == NULL)
		return;
	storage_txn_abort(v->txn);
	pthread_rwlock_unlock(&v->db->lock);
	free(v);
}

storage_txn_t *db_view_txn(vela_view_t *v)
{
	return v->txn;
}

/* Run fn inside the view, or inside a read transaction of its own. */
static int with_read(vela_db_t *db, vela_view_t *view, int (*fn)(storage_txn_t *, void *),
		     void *arg)
{
	if (view)
		return fn(view->txn, arg);
	vela_view_t *v;
	int rc = vela_view_begin(db, &v);
	if (rc)
		return rc;
	rc = fn(v->txn, arg);
	vela_view_end(v);
	return rc;
}

/* An expired key that the cycle has not removed yet reads as absent. */
static int key_live(storage_txn_t *txn, const uint8_t *key, size_t klen)
{
	int64_t at = 0;
	return expiry_get(txn, key, klen, &at) != 0 || at > db_now_ms();
}

struct type_arg {
	const uint8_t *key;
	size_t klen;
	vela_key_type_t type;
	int64_t ttl;
};

static int type_read(storage_txn_t *txn, void *p)
{
	struct type_arg *a = p;
	a->type = VELA_KEY_NONE;
	if (!key_live(txn, a->key, a->klen))
		return VELA_OK;
	if (key_in(txn, ST_STRINGS, a->key, a->klen))
		a->type = VELA_KEY_STRING;
	else if (key_in(txn, ST_DOCS, a->key, a->klen))
		a->type = VELA_KEY_HASH;
	int64_t at = 0;
	a->ttl = a->type == VELA_KEY_NONE ? -2 : -1;
	if (a->type != VELA_KEY_NONE && expiry_get(txn, a->key, a->klen, &at) == 0)
		a->ttl = at - db_now_ms() > 0 ? at - db_now_ms() : 0;
	return VELA_OK;
}

static int key_type_in(vela_db_t *db, vela_view_t *v, const void *key, size_t klen,
		       vela_key_type_t *type, int64_t *ttl)
{
	struct type_arg a = {.key = key, .klen = klen, .ttl = -2};
	*type = VELA_KEY_NONE;
	*ttl = -2;
	if (key == NULL || klen == 0 || klen > VELA_KEY_MAX)
		return VELA_OK;
	int rc = with_read(db, v, type_read, &a);
	*type = a.type;
	*ttl = a.ttl;
	return rc;
}

int vela_key_type(vela_db_t *db, const void *key, size_t klen, vela_key_type_t *type)
{
	int64_t ttl;
	return key_type_in(db, NULL, key, klen, type, &ttl);
}

int vela_view_key_type(vela_view_t *v, const void *key, size_t klen, vela_key_type_t *type)
{
	int64_t ttl;
	return key_type_in(v->db, v, key, klen, type, &ttl);
}

int vela_ttl(vela_db_t *db, const void *key, size_t klen, int64_t *ms)
{
	vela_key_type_t t;
	return key_type_in(db, NULL, key, klen, &t, ms);
}

int vela_view_ttl(vela_view_t *v, const void *key, size_t klen, int64_t *ms)
{
	vela_key_type_t t;
	return key_type_in(v->db, v, key, klen, &t, ms);
}

struct str_arg {
	const uint8_t *key;
	size_t klen;
	char *val;
	size_t vlen;
};

static int str_read(storage_txn_t *txn, void *p)
{
	struct str_arg *a = p;
	const void *v;
	size_t vl;
	if (!key_live(txn, a->key, a->klen))
		return VELA_ENOTFOUND;
	int rc = storage_get(txn, ST_STRINGS, a->key, a->klen, &v, &vl);
	if (rc == VELA_ENOTFOUND && key_in(txn, ST_DOCS, a->key, a->klen))
		return VELA_ETYPE;
	if (rc)
		return rc;
	if ((a->val = malloc(vl + 1)) == NULL)
		return VELA_ENOMEM;
	memcpy(a->val, v, vl);
	a->val[vl] = '\0';
	a->vlen = vl;
	return VELA_OK;
}

static int getstr_in(vela_db_t *db, vela_view_t *view, const void *key, size_t klen,
		     char **val, size_t *vlen, vela_err_t *err)
{
	struct str_arg a = {.key = key, .klen = klen};
	if (key == NULL || klen == 0 || klen > VELA_KEY_MAX)
		return vela_err_set(err, VELA_ENOTFOUND, "no such key");
	int rc = with_read(db, view, str_read, &a);
	if (rc == VELA_ETYPE)
		return vela_err_set(err, rc, "WRONGTYPE Operation against a key holding the wrong "
					     "kind of value");
	if (rc)
		return vela_err_set(err, rc, "%s", rc == VELA_ENOTFOUND ? "no such key" : vela_strerror(rc));
	*val = a.val;
	*vlen = a.vlen;
	return VELA_OK;
}

int vela_getstr(vela_db_t *db, const void *key, size_t klen, char **val, size_t *vlen,
		vela_err_t *err)
{
	return getstr_in(db, NULL, key, klen, val, vlen, err);
}

int vela_view_getstr(vela_view_t *v, const void *key, size_t klen, char **val, size_t *vlen,
		     vela_err_t *err)
{
	return getstr_in(v->db, v, key, klen, val, vlen, err);
}

int db_key_live_read(storage_txn_t *txn, const uint8_t *key, size_t klen)
{
	return key_live(txn, key, klen);
}

/* ------------------------------------------------------------ KEYS / SCAN */

struct scan_arg {
	const char *pattern; /* NUL-terminated glob, NULL = all */
	uint64_t skip;       /* cursor: keys of the ordered keyspace already returned */
	size_t count;
	vela_keylist_t *out;
	storage_txn_t *txn;
	uint64_t seen;
	int stopped; /* the walk stopped early: more keys remain */
};

static int keylist_push(vela_keylist_t *l, const uint8_t *key, size_t klen)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		char **k = realloc(l->keys, cap * sizeof(*k));
		if (k == NULL)
			return VELA_ENOMEM;
		l->keys = k;
		size_t *s = realloc(l->lens, cap * sizeof(*s));
		if (s == NULL)
			return VELA_ENOMEM;
		l->lens = s;
		l->cap = cap;
	}
	if ((l->keys[l->n] = malloc(klen + 1)) == NULL)
		return VELA_ENOMEM;
	memcpy(l->keys[l->n], key, klen);
	l->keys[l->n][klen] = '\0';
	l->lens[l->n++] = klen;
	return VELA_OK;
}

/* Glob matching as Redis's stringmatchlen (util.c), so KEYS and SCAN MATCH
 * select the same keys: * ? [...] with ^ negation, ranges in either order
 * and \\ escapes; binary-safe on the key. Range bounds compare as signed
 * chars, as Redis does on x86-64. `*skip` stops retrying longer matches for
 * an earlier * once the rest of the pattern matched nowhere. */
static bool glob_match(const char *p, size_t pl, const uint8_t *key, size_t sl, bool *skip,
		       int depth)
{
	const char *s = (const char *)key;
	if (depth > 1000)
		return false;
	while (pl && sl) {
		switch (p[0]) {
		case '*':
			while (pl > 1 && p[1] == '*') {
				p++;
				pl--;
			}
			if (pl == 1)
				return true;
			for (; sl; s++, sl--) {
				if (glob_match(p + 1, pl - 1, (const uint8_t *)s, sl, skip, depth + 1))
					return true;
				if (*skip)
					return false;
			}
			*skip = true;
			return false;
		case '?':
			s++;
			sl--;
			break;
		case '[': {
			p++;
			pl--;
			bool neg = pl && p[0] == '^', match = false;
			if (neg) {
				p++;
				pl--;
			}
			for (;; p++, pl--) {
				if (pl >= 2 && p[0] == '\\') {
					p++;
					pl--;
					match |= p[0] == s[0];
				} else if (pl == 0) { /* no ']': as Redis, stop on the last char */
					p--;
					pl++;
					break;
				} else if (p[0] == ']') {
					break;
				} else if (pl >= 3 && p[1] == '-') {
					int lo = (signed char)p[0], hi = (signed char)p[2], c = (signed char)s[0];
					if (lo > hi) {
						int t = lo;
						lo = hi;
						hi = t;
					}
					p += 2;
					pl -= 2;
					match |= c >= lo && c <= hi;
				} else {
					match |= p[0] == s[0];
				}
			}
			if (match == neg)
				return false;
			s++;
			sl--;
			break;
		}
		case '\\':
			if (pl >= 2) {
				p++;
				pl--;
			}
			/* fall through */
		default:
			if (p[0] != s[0])
				return false;
			s++;
			sl--;
			break;
		}
		p++;
		pl--;
		if (sl == 0) {
			while (pl && p[0] == '*') {
				p++;
				pl--;
			}
			break;
		}
	}
	return pl == 0 && sl == 0;
}

static int scan_visit(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
		      size_t vlen)
{
	struct scan_arg *a = ctx;
	if (a->seen++ < a->skip)
		return 0;
	if (a->out->n >= a->count) {
		a->stopped = 1; /* this key (number seen - 1) is the next cursor */
		return 1;
	}
	bool skip = false;
	if (!key_live(a->txn, key, klen))
		return 0;
	if (a->pattern && !glob_match(a->pattern, strlen(a->pattern), key, klen, &skip, 0))
		return 0;
	return keylist_push(a->out, key, klen);
}

static int scan_read(storage_txn_t *txn, void *p)
{
	struct scan_arg *a = p;
	a->txn = txn;
	/* Hashes then strings: a stable order while the keyspace is unchanged. */
	int rc = storage_scan_prefix(txn, ST_DOCS, NULL, 0, scan_visit, a);
	if (rc == 0 && !a->stopped)
		rc = storage_scan_prefix(txn, ST_STRINGS, NULL, 0, scan_visit, a);
	return rc;
}

int vela_scan(vela_db_t *db, const char *pattern, uint64_t cursor, size_t count,
	      vela_keylist_t *out, uint64_t *next)
{
	memset(out, 0, sizeof(*out));
	struct scan_arg a = {.pattern = pattern, .skip = cursor, .count = count ? count : SIZE_MAX,
			     .out = out};
	int rc = with_read(db, NULL, scan_read, &a);
	if (rc) {
		vela_keylist_free(out);
		return rc;
	}
	/* seen counts the key that stopped the walk; it is the next one to visit. */
	*next = a.stopped ? a.seen - 1 : 0;
	return VELA_OK;
}

void vela_keylist_free(vela_keylist_t *l)
{
	if (l == NULL)
		return;
	for (size_t i = 0; i < l->n; i++)
		free(l->keys[i]);
	free(l->keys);
	free(l->lens);
	memset(l, 0, sizeof(*l));
}

/* ------------------------------------------------------------ FLUSHALL */

int vela_db_flush(vela_db_t *db, vela_err_t *err)
{
	pthread_mutex_lock(&db->write_mu);
	storage_txn_t *txn;
	db_changes_t ch = {0};
	int rc = storage_txn_begin(db->env, NULL, 1, &txn);
	/* Everything but META (format stamp, counters) goes; indexes too, as in
	 * RediSearch (FLUSHALL drops index definitions). */
	for (int t = 0; rc == 0 && t < ST_NTABLES; t++)
		if (t != ST_META)
			rc = storage_clear(txn, (storage_table_t)t);
	for (size_t i = 0; rc == 0 && i < db->n_indexes; i++)
		rc = db_changes_push(&ch, (db_change_t){.kind = DC_INDEX_DROP, .ix = db->indexes[i]});
	if (rc) {
		storage_txn_abort(txn);
		db_changes_truncate(&ch, 0);
		vela_err_set(err, rc, "flush failed: %s", vela_strerror(rc));
	} else {
		rc = db_commit(db, txn, &ch, err);
	}
	free(ch.v);
	pthread_mutex_unlock(&db->write_mu);
	return rc;
}
