/* The workload log (docs/partitions.md §1): per vector field, a bounded
 * table of the predicate shapes of the KNN queries searched on it, each the
 * canonical AND of its atoms (query_atoms_each: TAG value sets, numeric
 * ranges; the rest of a filter is residual and left out) with a count and a
 * last-seen tick. HQI learns its layout from the past workload ("filter
 * commonality" and "filter stability", reference/hybrid-queries.md §1.2).
 *
 * The state lives in a process-wide registry keyed by the field's FLAT
 * residency uid (process-unique, never reused), so a closed database's
 * state can never be mistaken for another's; vela_layout_release frees a
 * database's entries (vela_db_close does not call it yet: docs/partitions.md).
 * Recording takes the entry's mutex, O(atoms). When the table is full the
 * less frequent half is evicted (amortised O(1) per record). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db/search_int.h"

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static db_field_state_t *reg_head;

uint64_t db_field_uid(const db_field_t *f)
{
	index_rows_t r;
	flat_rows(f->flat, &r);
	return r.uid;
}

db_field_state_t *db_field_state(vela_db_t *db, const db_index_t *ix, uint32_t field, bool create)
{
	if (field >= ix->n_fields || ix->fields[field].flat == NULL)
		return NULL;
	uint64_t uid = db_field_uid(&ix->fields[field]);
	pthread_mutex_lock(&reg_mu);
	db_field_state_t *s = reg_head;
	while (s && s->uid != uid)
		s = s->next;
	if (s == NULL && create && (s = calloc(1, sizeof(*s))) != NULL) {
		s->uid = uid;
		s->ix_id = ix->id;
		s->field = field;
		s->db = db;
		s->layout_drift = -1;
		atomic_init(&s->layout_job, false);
		atomic_init(&s->layout_want, 0u);
		pthread_mutex_init(&s->mu, NULL);
		s->next = reg_head;
		reg_head = s;
		if (db)
			db_workload_load(db, ix, s);
	}
	pthread_mutex_unlock(&reg_mu);
	return s;
}

static void wl_clear(db_field_state_t *s)
{
	for (size_t i = 0; i < s->cap; i++)
		free(s->ents[i].key);
	free(s->ents);
	s->ents = NULL;
	s->cap = s->n = 0;
}

static void state_free(db_field_state_t *s)
{
	wl_clear(s);
	db_qsample_clear(s);
	db_layout_free(s->layout);
	if (s->layout_dirty)
		roaring_bitmap_free(s->layout_dirty);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

void db_field_state_drop(const db_index_t *ix)
{
	pthread_mutex_lock(&reg_mu);
	for (uint32_t k = 0; k < ix->n_fields; k++) {
		if (ix->fields[k].flat == NULL)
			continue;
		uint64_t uid = db_field_uid(&ix->fields[k]);
		for (db_field_state_t **pp = &reg_head; *pp; pp = &(*pp)->next)
			if ((*pp)->uid == uid) {
				db_field_state_t *s = *pp;
				*pp = s->next;
				state_free(s);
				break;
			}
	}
	pthread_mutex_unlock(&reg_mu);
}

void db_field_state_release(vela_db_t *db)
{
	pthread_mutex_lock(&reg_mu);
	for (db_field_state_t **pp = &reg_head; *pp;) {
		db_field_state_t *s = *pp;
		if (s->db != db) {
			pp = &s->next;
			continue;
		}
		*pp = s->next;
		state_free(s);
	}
	pthread_mutex_unlock(&reg_mu);
}

/* ------------------------------------------------------------ keys */

typedef struct atom_buf {
	uint8_t *b[QUERY_ATOMS_LOGGED_MAX];
	size_t len[QUERY_ATOMS_LOGGED_MAX];
	uint32_t n;
	bool over;
} atom_buf_t;

static int str_cmp(const void *a, const void *b)
{
	const db_wl_str_t *x = a, *y = b;
	size_t n = x->len < y->len ? x->len : y->len;
	int c = memcmp(x->s, y->s, n);
	return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* One atom's canonical bytes: kind, field, then the sorted distinct values
 * (length-prefixed) or the encoded inclusive range. */
static int atom_bytes(void *ctx, const query_atom_t *a)
{
	atom_buf_t *ab = ctx;
	if (ab->n == QUERY_ATOMS_LOGGED_MAX) {
		ab->over = true;
		return 0;
	}
	size_t cap = 16;
	uint64_t lo = 0, hi = 0;
	if (a->kind == QUERY_ATOM_NUM) {
		if (!db_num_bounds(a->lo, a->lo_excl, a->hi, a->hi_excl, &lo, &hi))
			lo = 1, hi = 0; /* matches nothing: an empty range */
		cap += 16;
	}
	db_wl_str_t v[QUERY_ATOM_VALS_MAX];
	uint32_t nv = 0;
	for (uint32_t i = 0; a->kind == QUERY_ATOM_TAG && i < a->n_vals; i++) {
		v[nv++] = (db_wl_str_t){a->vals[i], a->lens[i]};
		cap += 4 + a->lens[i];
	}
	qsort(v, nv, sizeof(*v), str_cmp);
	uint8_t *p = malloc(cap);
	if (p == NULL)
		return VELA_ENOMEM;
	size_t o = 0;
	p[o++] = (uint8_t)a->kind;
	memcpy(p + o, &a->field_no, 4);
	o += 4;
	if (a->kind == QUERY_ATOM_NUM) {
		memcpy(p + o, &lo, 8);
		memcpy(p + o + 8, &hi, 8);
		o += 16;
	}
	uint32_t nd = 0;
	size_t cnt_at = o;
	o += a->kind == QUERY_ATOM_TAG ? 4 : 0;
	for (uint32_t i = 0; i < nv; i++) {
		if (i && str_cmp(&v[i], &v[i - 1]) == 0)
			continue;
		uint32_t l = (uint32_t)v[i].len;
		memcpy(p + o, &l, 4);
		memcpy(p + o + 4, v[i].s, l);
		o += 4 + l;
		nd++;
	}
	if (a->kind == QUERY_ATOM_TAG)
		memcpy(p + cnt_at, &nd, 4);
	ab->b[ab->n] = p;
	ab->len[ab->n++] = o;
	return 0;
}

int db_workload_key(const query_t *q, uint8_t **key, size_t *klen)
{
	atom_buf_t ab = {0};
	int rc = query_atoms_each(q, atom_bytes, &ab, NULL);
	db_wl_str_t s[QUERY_ATOMS_LOGGED_MAX];
	size_t total = 4;
	for (uint32_t i = 0; i < ab.n; i++) {
		s[i] = (db_wl_str_t){(const char *)ab.b[i], ab.len[i]};
		total += 4 + ab.len[i];
	}
	qsort(s, ab.n, sizeof(*s), str_cmp);
	uint8_t *k = rc ? NULL : malloc(total);
	if (rc == 0 && k == NULL)
		rc = VELA_ENOMEM;
	if (rc == 0) {
		size_t o = 4;
		memcpy(k, &ab.n, 4);
		for (uint32_t i = 0; i < ab.n; i++) {
			uint32_t l = (uint32_t)s[i].len;
			memcpy(k + o, &l, 4);
			memcpy(k + o + 4, s[i].s, l);
			o += 4 + l;
		}
		*key = k;
		*klen = total;
	}
	for (uint32_t i = 0; i < ab.n; i++)
		free(ab.b[i]);
	return rc;
}

/* ------------------------------------------------------------ the table */

static db_wl_ent_t *wl_slot(db_wl_ent_t *e, size_t cap, uint64_t h, const uint8_t *k, size_t kl)
{
	for (size_t i = h & (cap - 1);; i = (i + 1) & (cap - 1))
		if (e[i].key == NULL || (e[i].h == h && e[i].klen == kl && !memcmp(e[i].key, k, kl)))
			return &e[i];
}

static int ent_by_count_desc(const void *a, const void *b)
{
	const db_wl_ent_t *x = a, *y = b;
	if (x->count != y->count)
		return x->count < y->count ? 1 : -1;
	return (x->last < y->last) - (x->last > y->last);
}

/* Rehash into `cap` slots keeping the `keep` most frequent entries. */
static int wl_rehash(db_field_state_t *s, size_t cap, size_t keep)
{
	db_wl_ent_t *all = malloc(vela_mul_size(s->n ? s->n : 1, sizeof(*all)));
	db_wl_ent_t *e = calloc(cap, sizeof(*e));
	if (all == NULL || e == NULL) {
		free(all);
		free(e);
		return VELA_ENOMEM;
	}
	size_t n = 0;
	for (size_t i = 0; i < s->cap; i++)
		if (s->ents[i].key)
			all[n++] = s->ents[i];
	if (keep < n)
		qsort(all, n, sizeof(*all), ent_by_count_desc);
	for (size_t i = 0; i < n; i++) {
		if (i >= keep) {
			free(all[i].key);
			continue;
		}
		*wl_slot(e, cap, all[i].h, all[i].key, all[i].klen) = all[i];
	}
	free(all);
	free(s->ents);
	s->ents = e;
	s->cap = cap;
	s->n = n < keep ? n : keep;
	return 0;
}

int db_workload_add(db_field_state_t *s, const uint8_t *key, size_t klen, uint64_t count)
{
	int rc = 0;
	uint64_t h = vela_hash64(key, klen);
	pthread_mutex_lock(&s->mu);
	if (s->n + 1 > DB_WORKLOAD_QUERIES_MAX) /* evict the less frequent half */
		rc = wl_rehash(s, s->cap, DB_WORKLOAD_QUERIES_MAX / 2);
	else if (2 * (s->n + 1) > s->cap)
		rc = wl_rehash(s, s->cap ? 2 * s->cap : 64, SIZE_MAX);
	db_wl_ent_t *e = rc ? NULL : wl_slot(s->ents, s->cap, h, key, klen);
	if (e && e->key == NULL) {
		if ((e->key = malloc(klen)) == NULL) {
			rc = VELA_ENOMEM;
		} else {
			memcpy(e->key, key, klen);
			e->klen = klen;
			e->h = h;
			s->n++;
		}
	}
	if (rc == 0) {
		e->count += count;
		e->last = ++s->tick;
		s->total += count;
	}
	pthread_mutex_unlock(&s->mu);
	return rc;
}

void db_workload_record(vela_db_t *db, const db_index_t *ix, const query_t *q,
			const query_knn_t *knn)
{
	db_field_state_t *s = db_field_state(db, ix, knn->field_no, true);
	uint8_t *key;
	size_t klen;
	if (s && knn->blob) /* the query sample (db/qsample.c): the vector as given */
		db_qsample_record_blob(s, &ix->fields[knn->field_no], knn->blob, knn->blob_len);
	if (s == NULL || db_workload_key(q, &key, &klen))
		return; /* the log is advisory: a failure loses one record */
	db_workload_add(s, key, klen, 1);
	free(key);
	pthread_mutex_lock(&s->mu);
	bool check = s->total % DB_LAYOUT_DRIFT_EVERY == 0;
	pthread_mutex_unlock(&s->mu);
	if (check && db) /* docs/partitions.md §5: drift */
		db_layout_drift_check(db, ix, knn->field_no, s);
}

int db_workload_snapshot(db_field_state_t *s, db_wl_ent_t **out, size_t *n)
{
	pthread_mutex_lock(&s->mu);
	db_wl_ent_t *v = malloc(vela_mul_size(s->n ? s->n : 1, sizeof(*v)));
	size_t m = 0;
	int rc = v ? 0 : VELA_ENOMEM;
	for (size_t i = 0; rc == 0 && i < s->cap; i++) {
		if (s->ents[i].key == NULL)
			continue;
		v[m] = s->ents[i];
		if ((v[m].key = malloc(s->ents[i].klen)) == NULL) {
			rc = VELA_ENOMEM;
			break;
		}
		memcpy(v[m++].key, s->ents[i].key, s->ents[i].klen);
	}
	pthread_mutex_unlock(&s->mu);
	if (rc) {
		db_workload_snapshot_free(v, m);
		return rc;
	}
	qsort(v, m, sizeof(*v), ent_by_count_desc);
	*out = v;
	*n = m;
	return 0;
}

void db_workload_snapshot_free(db_wl_ent_t *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i].key);
	free(v);
}

/* ------------------------------------------------------------ file */

/* <dir>/wlog-<index id>-<field>.bin: magic, version, entries (count, last,
 * key length, key), then the XXH3 of everything before it. */
#define WL_FILE_MAGIC 0x474f4c57u /* "WLOG" */
#define WL_FILE_VERSION 1u

static void wl_path(const vela_db_t *db, const db_index_t *ix, uint32_t field, char *buf,
		    size_t cap)
{
	snprintf(buf, cap, "%s/wlog-%u-%u.bin", db->dir, ix->id, field);
}

void db_workload_files_remove(const vela_db_t *db, const db_index_t *ix)
{
	for (uint32_t k = 0; k < ix->n_fields; k++) {
		char path[PATH_MAX_SNAP];
		wl_path(db, ix, k, path, sizeof(path));
		unlink(path);
		db_qsample_file_remove(db, ix, k);
		db_layout_file_remove(db, ix, k);
	}
}

int db_workload_save(vela_db_t *db, const db_index_t *ix, db_field_state_t *s)
{
	db_wl_ent_t *v;
	size_t n;
	int rc = db_workload_snapshot(s, &v, &n);
	if (rc)
		return rc;
	size_t len = 16;
	for (size_t i = 0; i < n; i++)
		len += 20 + v[i].klen;
	uint8_t *buf = malloc(len + 8);
	if (buf == NULL) {
		db_workload_snapshot_free(v, n);
		return VELA_ENOMEM;
	}
	uint32_t hdr[4] = {WL_FILE_MAGIC, WL_FILE_VERSION, (uint32_t)n, 0};
	memcpy(buf, hdr, 16);
	size_t o = 16;
	for (size_t i = 0; i < n; i++) {
		uint32_t kl = (uint32_t)v[i].klen;
		memcpy(buf + o, &v[i].count, 8);
		memcpy(buf + o + 8, &v[i].last, 8);
		memcpy(buf + o + 16, &kl, 4);
		memcpy(buf + o + 20, v[i].key, kl);
		o += 20 + kl;
	}
	uint64_t sum = vela_hash64(buf, o);
	memcpy(buf + o, &sum, 8);
	db_workload_snapshot_free(v, n);
	char path[PATH_MAX_SNAP];
	wl_path(db, ix, s->field, path, sizeof(path));
	rc = db_file_replace(path, buf, o + 8);
	free(buf);
	/* the query sample and the layout go with the log (their own files) */
	rc = rc ? rc : db_qsample_save(db, ix, s);
	return rc ? rc : db_layout_save(db, ix, s);
}

/* Load the field's log file into s (a missing, damaged or newer file is
 * ignored: the log is advisory). */
static void wl_load(vela_db_t *db, const db_index_t *ix, db_field_state_t *s)
{
	char path[PATH_MAX_SNAP];
	wl_path(db, ix, s->field, path, sizeof(path));
	FILE *fp = fopen(path, "rb");
	if (fp == NULL)
		return;
	uint8_t *buf = NULL;
	long len = fseek(fp, 0, SEEK_END) == 0 ? ftell(fp) : -1;
	if (len >= 24 && fseek(fp, 0, SEEK_SET) == 0 && (buf = malloc((size_t)len)) &&
	    fread(buf, 1, (size_t)len, fp) != (size_t)len) {
		free(buf);
		buf = NULL;
	}
	fclose(fp);
	uint32_t hdr[4];
	uint64_t sum;
	if (buf == NULL)
		return;
	memcpy(hdr, buf, 16);
	memcpy(&sum, buf + len - 8, 8);
	if (hdr[0] != WL_FILE_MAGIC || hdr[1] != WL_FILE_VERSION ||
	    sum != vela_hash64(buf, (size_t)len - 8)) {
		free(buf);
		return;
	}
	size_t o = 16, end = (size_t)len - 8;
	for (uint32_t i = 0; i < hdr[2] && o + 20 <= end; i++) {
		uint64_t count;
		uint32_t kl;
		memcpy(&count, buf + o, 8);
		memcpy(&kl, buf + o + 16, 4);
		if (o + 20 + kl > end || db_workload_add(s, buf + o + 20, kl, count))
			break;
		o += 20 + kl;
	}
	free(buf);
}

/* Load the field's log and query sample (each ignored when missing or
 * damaged). Called with reg_mu held, s not shared yet. */
void db_workload_load(vela_db_t *db, const db_index_t *ix, db_field_state_t *s)
{
	wl_load(db, ix, s);
	db_qsample_load(db, ix, s);
	db_layout_load(db, ix, s);
}
