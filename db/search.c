/* Search: parse the query against an index's schema, evaluate the filter to
 * a docid bitmap from the postings, run the KNN on the flat index, build the
 * result rows. Batches group KNN queries per vector field into one blocked
 * GEMM (flat_search_batch). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "query/query.h"
#include "quant/quant.h"

/* ------------------------------------------------------------ result arena */

typedef struct chunk {
	struct chunk *next;
	size_t used, cap;
	_Alignas(16) unsigned char data[];
} chunk_t;

/* A result and the arena that holds everything it points to. */
typedef struct result_impl {
	vela_result_t pub;
	chunk_t *chunks;
} result_impl_t;

#define ARENA_CHUNK 16384u

static void *arena_alloc(result_impl_t *r, size_t n)
{
	n = (n + 15) & ~(size_t)15;
	chunk_t *c = r->chunks;
	if (c == NULL || c->cap - c->used < n) {
		size_t cap = n > ARENA_CHUNK ? n : ARENA_CHUNK;
		if ((c = malloc(sizeof(chunk_t) + cap)) == NULL)
			return NULL;
		c->cap = cap;
		c->used = 0;
		c->next = r->chunks;
		r->chunks = c;
	}
	void *p = c->data + c->used;
	c->used += n;
	return p;
}

static char *arena_dup(result_impl_t *r, const void *src, size_t n)
{
	char *p = arena_alloc(r, n + 1);
	if (p) {
		if (n)
			memcpy(p, src, n);
		p[n] = '\0';
	}
	return p;
}

void vela_result_free(vela_result_t *res)
{
	if (res == NULL)
		return;
	result_impl_t *r = (result_impl_t *)res;
	for (chunk_t *c = r->chunks, *next; c; c = next) {
		next = c->next;
		free(c);
	}
	free(r);
}

/* ------------------------------------------------------------ filter source */

typedef struct src_ctx {
	db_index_t *ix;
	storage_txn_t *txn;
} src_ctx_t;

#define DOCID_CHUNK 256

static int add_docids(void *ctx, const uint32_t *ids_be, size_t n)
{
	roaring_bitmap_t *out = ctx;
	uint32_t buf[DOCID_CHUNK];
	const uint8_t *p = (const uint8_t *)ids_be;
	while (n) {
		size_t m = n < DOCID_CHUNK ? n : DOCID_CHUNK;
		for (size_t i = 0; i < m; i++, p += 4)
			buf[i] = vela_get_be32(p);
		roaring_bitmap_add_many(out, m, buf);
		n -= m;
	}
	return 0;
}

static int src_all(void *ctx, roaring_bitmap_t *out)
{
	src_ctx_t *s = ctx;
	roaring_bitmap_or_inplace(out, s->ix->docids);
	return VELA_OK;
}

static int src_term(src_ctx_t *s, uint32_t field, int kind, const void *v, size_t len,
		    roaring_bitmap_t *out)
{
	if (len > STORAGE_TERM_MAX)
		return VELA_OK; /* could not have been indexed: matches nothing */
	uint8_t key[8 + STORAGE_TERM_MAX];
	size_t kl = storage_posting_key(key, s->ix->id, (uint16_t)field, kind, v, len);
	return storage_posting_get(s->txn, key, kl, add_docids, out);
}

static int src_tag(void *ctx, uint32_t field, const char *val, size_t len, roaring_bitmap_t *out)
{
	return src_term(ctx, field, SP_TAG, val, len, out);
}

static int src_text(void *ctx, int32_t field, const char *term, size_t len, roaring_bitmap_t *out)
{
	src_ctx_t *s = ctx;
	/* Terms are stored lowercased; the parser lowercases too, but be sure. */
	char buf[STORAGE_TERM_MAX];
	if (len > STORAGE_TERM_MAX) /* indexing cuts long terms the same way */
		len = STORAGE_TERM_MAX;
	for (size_t i = 0; i < len; i++)
		buf[i] = (char)((term[i] >= 'A' && term[i] <= 'Z') ? term[i] + 32 : term[i]);
	for (uint32_t f = 0; f < s->ix->n_fields; f++) {
		if (s->ix->fields[f].type != VELA_FIELD_TEXT || (field >= 0 && (uint32_t)field != f))
			continue;
		int rc = src_term(s, f, SP_TEXT, buf, len, out);
		if (rc)
			return rc;
	}
	return VELA_OK;
}

static int src_num(void *ctx, uint32_t field, double lo, int lo_excl, double hi, int hi_excl,
		   roaring_bitmap_t *out)
{
	src_ctx_t *s = ctx;
	/* Nothing lies above (+inf or below (-inf. */
	if ((lo_excl && lo == INFINITY) || (hi_excl && hi == -INFINITY))
		return VELA_OK;
	if (lo_excl)
		lo = nextafter(lo, INFINITY);
	if (hi_excl)
		hi = nextafter(hi, -INFINITY);
	if (isnan(lo) || isnan(hi) || lo > hi)
		return VELA_OK;
	uint8_t el[8], eh[8], kl[16], kh[16];
	storage_num_encode(lo, el);
	storage_num_encode(hi, eh);
	size_t lol = storage_posting_key(kl, s->ix->id, (uint16_t)field, SP_NUM, el, 8);
	size_t hil = storage_posting_key(kh, s->ix->id, (uint16_t)field, SP_NUM, eh, 8);
	return storage_posting_range(s->txn, kl, lol, kh, hil, add_docids, out);
}

static int src_vrange(void *ctx, uint32_t field, const void *blob, size_t len, double radius,
		      roaring_bitmap_t *out)
{
	src_ctx_t *s = ctx;
	const db_field_t *f = &s->ix->fields[field];
	float *q;
	int rc = db_vector_decode(f, blob, len, &q);
	if (rc)
		return rc;
	vela_hit_t *hits = NULL;
	size_t n = 0;
	rc = flat_range(f->flat, q, (float)radius, NULL, &hits, &n);
	for (size_t i = 0; rc == 0 && i < n; i++)
		roaring_bitmap_add(out, hits[i].docid);
	free(hits);
	free(q);
	return rc;
}

/* ------------------------------------------------------------ planning */

static int field_lookup(void *ctx, const char *name, size_t len, query_field_info_t *out)
{
	const db_index_t *ix = ctx;
	int i = db_field_find(ix, name, len);
	if (i < 0)
		return VELA_ENOTFOUND;
	const db_field_t *f = &ix->fields[i];
	out->type = f->type;
	out->field_no = (uint32_t)i;
	out->case_sensitive = f->case_sensitive;
	out->dim = f->dim;
	out->vec_type = f->vec_type;
	return VELA_OK;
}

/* One query on its way through the executor. */
typedef struct plan {
	const vela_search_req_t *req;
	db_index_t *ix;
	query_t *q;
	const query_knn_t *knn;
	roaring_bitmap_t *filter; /**< NULL: every document */
	float *qvec;              /**< KNN query vector, decoded */
	vela_hit_t *hits;
	uint32_t n_hits;
	const query_vrange_t *yield; /**< VECTOR_RANGE whose distance is returned */
	float *yvec;
	char dist_name[VELA_INDEX_NAME_MAX + 16];
	const char *how; /**< vela_result_t.plan */
} plan_t;

static void plan_free(plan_t *p)
{
	query_free(p->q);
	if (p->filter)
		roaring_bitmap_free(p->filter);
	free(p->qvec);
	free(p->yvec);
	free(p->hits);
}

static int plan_knn(plan_t *p, vela_err_t *err)
{
	const db_field_t *f = &p->ix->fields[p->knn->field_no];
	int rc = db_vector_decode(f, p->knn->blob, p->knn->blob_len, &p->qvec);
	if (rc == VELA_ETYPE)
		return vela_err_set(err, VELA_ETYPE,
				    "query vector has a NaN or infinite element or a norm too large");
	if (rc)
		return vela_err_set(err, rc, "%s", vela_strerror(rc));
	if (p->knn->alias)
		snprintf(p->dist_name, sizeof(p->dist_name), "%s", p->knn->alias);
	else
		snprintf(p->dist_name, sizeof(p->dist_name), "__%s_score", f->alias);
	if (db_field_find(p->ix, p->dist_name, strlen(p->dist_name)) >= 0)
		return vela_err_set(err, VELA_EINVAL, "Property `%s` already exists in schema",
				    p->dist_name);
	p->hits = malloc((p->knn->k ? p->knn->k : 1) * sizeof(vela_hit_t));
	return p->hits ? VELA_OK : vela_err_set(err, VELA_ENOMEM, "out of memory");
}

static int plan_yield(plan_t *p, vela_err_t *err)
{
	for (size_t i = 0; i < query_vrange_count(p->q); i++) {
		const query_vrange_t *v = query_vrange_at(p->q, i);
		if (v->yield_distance_as == NULL)
			continue;
		p->yield = v;
		snprintf(p->dist_name, sizeof(p->dist_name), "%s", v->yield_distance_as);
		int rc = db_vector_decode(&p->ix->fields[v->field_no], v->blob, v->blob_len, &p->yvec);
		return rc ? vela_err_set(err, rc, "%s", vela_strerror(rc)) : VELA_OK;
	}
	return VELA_OK;
}

/* Parse and evaluate the filter; caller holds db->lock shared. */
static int plan_prepare(vela_db_t *db, storage_txn_t *txn, const vela_search_req_t *req,
			plan_t *p, vela_err_t *err)
{
	memset(p, 0, sizeof(*p));
	p->req = req;
	if (req->index == NULL || (p->ix = db_index_find(db, req->index)) == NULL)
		return vela_err_set(err, VELA_ENOTFOUND, "%s: no such index",
				    req->index ? req->index : "(null)");
	if (req->query == NULL)
		return vela_err_set(err, VELA_ESYNTAX, "empty query");
	if (req->limit > VELA_LIMIT_MAX)
		return vela_err_set(err, VELA_ELIMIT, "LIMIT exceeds maximum of %u", VELA_LIMIT_MAX);
	size_t qlen = req->query_len ? req->query_len : strlen(req->query);
	int rc = query_parse(req->query, qlen, (const query_param_t *)req->params, req->n_params,
			     field_lookup, p->ix, &p->q, err);
	if (rc)
		return rc;
	p->knn = query_knn(p->q);
	if (p->knn && (rc = plan_knn(p, err)))
		return rc;
	if (p->knn == NULL && (rc = plan_yield(p, err)))
		return rc;
	if (p->knn && query_filter_is_all(p->q))
		return VELA_OK;
	src_ctx_t sc = {.ix = p->ix, .txn = txn};
	query_source_t src = {.ctx = &sc, .all = src_all, .tag = src_tag, .num_range = src_num,
			      .text_term = src_text, .vector_range = src_vrange};
	return query_eval(p->q, &src, &p->filter, err);
}

/* ------------------------------------------------------------ results */

static int row_add_field(result_impl_t *r, vela_search_hit_t *h, const void *name, size_t nl,
			 const void *val, size_t vl)
{
	vela_kv_t *kv = &h->fields[h->n_fields];
	kv->name = arena_dup(r, name, nl);
	kv->value = arena_dup(r, val, vl);
	if (kv->name == NULL || kv->value == NULL)
		return VELA_ENOMEM;
	kv->name_len = nl;
	kv->value_len = vl;
	h->n_fields++;
	return VELA_OK;
}

/* Fill the fields of one row: RETURN's list in order, else distance + all. */
static int row_fields(result_impl_t *r, const plan_t *p, vela_search_hit_t *h,
		      const storage_field_t *f, size_t n)
{
	const vela_search_req_t *req = p->req;
	char dist[32];
	int dl = snprintf(dist, sizeof(dist), "%.12g", h->dist);
	size_t cap = (req->return_fields ? req->n_return : n) + 1;
	if ((h->fields = arena_alloc(r, cap * sizeof(vela_kv_t))) == NULL)
		return VELA_ENOMEM;
	int has_dist = p->dist_name[0] && !isnan(h->dist);
	int rc = VELA_OK;
	if (req->return_fields == NULL) {
		if (has_dist)
			rc = row_add_field(r, h, p->dist_name, strlen(p->dist_name), dist, (size_t)dl);
		for (size_t i = 0; rc == 0 && i < n; i++)
			rc = row_add_field(r, h, f[i].name, f[i].name_len, f[i].value, f[i].value_len);
		return rc;
	}
	for (size_t i = 0; rc == 0 && i < req->n_return; i++) {
		const char *name = req->return_fields[i];
		if (has_dist && strcmp(name, p->dist_name) == 0) {
			rc = row_add_field(r, h, name, strlen(name), dist, (size_t)dl);
			continue;
		}
		/* A schema alias returns the hash field it names. */
		int fi = db_field_find(p->ix, name, strlen(name));
		const storage_field_t *v = db_doc_field(f, n, fi >= 0 ? p->ix->fields[fi].name : name);
		if (v)
			rc = row_add_field(r, h, name, strlen(name), v->value, v->value_len);
	}
	return rc;
}

static int row_fill(result_impl_t *r, storage_txn_t *txn, const plan_t *p, uint32_t docid,
		    vela_search_hit_t *h)
{
	uint8_t k[8];
	size_t kl = db_key_docid(k, p->ix->id, docid);
	const void *key, *doc;
	size_t klen, dlen;
	int rc = storage_get(txn, ST_KEYS, k, kl, &key, &klen);
	if (rc)
		return rc == VELA_ENOTFOUND ? VELA_ECORRUPT : rc;
	if ((h->key = arena_dup(r, key, klen)) == NULL)
		return VELA_ENOMEM;
	h->key_len = klen;
	if (p->req->nocontent)
		return VELA_OK;
	if ((rc = storage_get(txn, ST_DOCS, key, klen, &doc, &dlen)))
		return rc == VELA_ENOTFOUND ? VELA_ECORRUPT : rc;
	storage_field_t *f;
	size_t n;
	if ((rc = storage_doc_unpack(doc, dlen, &f, &n)))
		return rc;
	rc = row_fields(r, p, h, f, n);
	free(f);
	return rc;
}

/* Distance of a VECTOR_RANGE hit, for $YIELD_DISTANCE_AS. */
static double yield_dist(const plan_t *p, uint32_t docid)
{
	const db_field_t *f = &p->ix->fields[p->yield->field_no];
	float *x = malloc((size_t)f->dim * sizeof(float));
	double d = NAN;
	if (x && flat_get(f->flat, docid, x) == 0)
		d = quant_distance(f->metric, VELA_VEC_FLOAT32, p->yvec, x, f->dim);
	free(x);
	return d;
}

static size_t req_limit(const vela_search_req_t *req)
{
	if (req->limit == 0 && !req->limit_set)
		return VELA_LIMIT_DEFAULT;
	return req->limit;
}

/* The docids of rows [offset, offset+limit) in result order. */
static size_t plan_rows(const plan_t *p, uint64_t *total, uint32_t *ids, size_t cap)
{
	size_t off = p->req->offset, n = 0;
	if (p->knn) {
		*total = p->n_hits;
		for (size_t i = off; i < p->n_hits && n < cap; i++)
			ids[n++] = p->hits[i].docid;
		return n;
	}
	const roaring_bitmap_t *bm = p->filter ? p->filter : p->ix->docids;
	*total = roaring_bitmap_get_cardinality(bm);
	uint32_t first;
	if (off >= *total || !roaring_bitmap_select(bm, (uint32_t)off, &first))
		return 0;
	roaring_uint32_iterator_t *it = roaring_create_iterator(bm);
	roaring_move_uint32_iterator_equalorlarger(it, first);
	for (; it->has_value && n < cap; roaring_advance_uint32_iterator(it))
		ids[n++] = it->current_value;
	roaring_free_uint32_iterator(it);
	return n;
}

static int result_build(storage_txn_t *txn, const plan_t *p, vela_result_t **out, vela_err_t *err)
{
	result_impl_t *r = calloc(1, sizeof(*r));
	size_t cap = req_limit(p->req);
	uint64_t total = 0;
	if (p->knn && cap > p->n_hits)
		cap = p->n_hits;
	uint32_t *ids = malloc((cap ? cap : 1) * sizeof(uint32_t));
	int rc = r && ids ? VELA_OK : VELA_ENOMEM;
	size_t n = rc ? 0 : plan_rows(p, &total, ids, cap);
	if (rc == 0 && (r->pub.hits = arena_alloc(r, (n ? n : 1) * sizeof(vela_search_hit_t))) == NULL)
		rc = VELA_ENOMEM;
	for (size_t i = 0; rc == 0 && i < n; i++) {
		vela_search_hit_t *h = &r->pub.hits[i];
		memset(h, 0, sizeof(*h));
		h->dist = p->knn ? p->hits[p->req->offset + i].dist
				 : (p->yield ? yield_dist(p, ids[i]) : NAN);
		rc = row_fill(r, txn, p, ids[i], h);
		r->pub.n_hits = i + 1;
	}
	if (rc == 0 && p->dist_name[0] && (r->pub.dist_name = arena_dup(r, p->dist_name, strlen(p->dist_name))) == NULL)
		rc = VELA_ENOMEM;
	free(ids);
	if (rc) {
		vela_result_free(r ? &r->pub : NULL);
		return vela_err_set(err, rc, "cannot build result: %s", vela_strerror(rc));
	}
	r->pub.total = total;
	r->pub.plan = p->knn ? p->how : NULL;
	*out = &r->pub;
	return VELA_OK;
}

/* ------------------------------------------------------------ execution */

/* The query's window: SEARCH_WINDOW_SIZE (SVS) or EF_RUNTIME (HNSW), else 0. */
static uint32_t plan_window(const plan_t *p)
{
	if (p->knn->set & QUERY_KNN_SEARCH_WINDOW_SIZE)
		return p->knn->search_window_size;
	if (p->knn->set & QUERY_KNN_EF_RUNTIME)
		return p->knn->ef_runtime;
	return 0;
}

static int plan_run_knn(plan_t *p, vela_err_t *err)
{
	const db_field_t *f = &p->ix->fields[p->knn->field_no];
	int rc = db_vec_search(f, p->qvec, p->knn->k, plan_window(p), p->filter, p->hits,
			       &p->n_hits, &p->how);
	return rc ? vela_err_set(err, rc, "search failed: %s", vela_strerror(rc)) : VELA_OK;
}

int vela_search(vela_db_t *db, const vela_search_req_t *req, vela_result_t **out,
		vela_err_t *err)
{
	storage_txn_t *txn = NULL;
	plan_t p;
	memset(&p, 0, sizeof(p));
	pthread_rwlock_rdlock(&db->lock);
	int rc = storage_txn_begin(db->env, NULL, 0, &txn);
	if (rc)
		vela_err_set(err, rc, "cannot begin read: %s", vela_strerror(rc));
	if (rc == 0)
		rc = plan_prepare(db, txn, req, &p, err);
	if (rc == 0 && p.knn)
		rc = plan_run_knn(&p, err);
	if (rc == 0)
		rc = result_build(txn, &p, out, err);
	plan_free(&p);
	storage_txn_abort(txn);
	pthread_rwlock_unlock(&db->lock);
	return rc;
}

/*
 * Below this many queries on one vector field, one scan per query beats the
 * GEMM: a GEMM with one or two rows runs at matrix-vector speed and then
 * pays the candidate re-scoring on top. Measured by bench_wire's batch-size
 * sweep (100k x 768, 2 vCPUs): batch of 1 = 37 q/s, 2 = 72 q/s, 4 = 156 q/s,
 * single scans = 119 q/s.
 */
#define DB_BATCH_MIN_QUERIES 3u

/* The small-group path: each plan of the group scans on its own. */
static int batch_group_scan(plan_t *plans, int *state, size_t n, size_t first, vela_err_t *errs)
{
	const plan_t *p0 = &plans[first];
	int first_rc = 0;
	for (size_t i = first; i < n; i++) {
		if (state[i] != 1 || plans[i].ix != p0->ix ||
		    plans[i].knn->field_no != p0->knn->field_no)
			continue;
		int rc = plan_run_knn(&plans[i], errs ? &errs[i] : NULL);
		state[i] = rc ? -1 : 2;
		first_rc = first_rc ? first_rc : rc;
	}
	return first_rc;
}

/* Run every not-yet-run KNN plan that shares plans[first]'s vector field
 * as one flat_search_batch (one blocked GEMM over the field's vectors), or
 * one scan each when the group is small. */
static int batch_group(plan_t *plans, int *state, size_t n, size_t first, vela_err_t *errs)
{
	const plan_t *p0 = &plans[first];
	const db_field_t *f = &p0->ix->fields[p0->knn->field_no];
	size_t m = 0;
	uint32_t kmax = 0;
	for (size_t i = first; i < n; i++)
		if (state[i] == 1 && plans[i].ix == p0->ix && plans[i].knn->field_no == p0->knn->field_no) {
			m++;
			kmax = plans[i].knn->k > kmax ? plans[i].knn->k : kmax;
		}
	/* Graph fields answer query by query (a walk each); GEMMs are for scans. */
	if (m < DB_BATCH_MIN_QUERIES || f->graph)
		return batch_group_scan(plans, state, n, first, errs);
	float *Q = malloc(m * (size_t)f->dim * sizeof(float));
	const roaring_bitmap_t **filters = malloc(m * sizeof(*filters));
	size_t *which = malloc(m * sizeof(size_t));
	vela_hit_t *hits = malloc(m * (size_t)(kmax ? kmax : 1) * sizeof(vela_hit_t));
	uint32_t *nh = malloc(m * sizeof(uint32_t));
	int rc = Q && filters && which && hits && nh ? VELA_OK : VELA_ENOMEM;
	for (size_t i = first, j = 0; rc == 0 && i < n; i++) {
		if (state[i] != 1 || plans[i].ix != p0->ix || plans[i].knn->field_no != p0->knn->field_no)
			continue;
		memcpy(Q + j * f->dim, plans[i].qvec, f->dim * sizeof(float));
		filters[j] = plans[i].filter;
		which[j++] = i;
	}
	if (rc == 0)
		rc = flat_search_batch(f->flat, Q, (uint32_t)m, kmax, filters, hits, nh);
	/* Top-kmax ordered by (dist, docid) starts with each query's own top-k. */
	for (size_t j = 0; j < m && which; j++) {
		plan_t *p = &plans[which[j]];
		state[which[j]] = rc ? -1 : 2;
		if (rc) {
			vela_err_set(errs ? &errs[which[j]] : NULL, rc, "search failed: %s",
				     vela_strerror(rc));
			continue;
		}
		p->n_hits = nh[j] < p->knn->k ? nh[j] : p->knn->k;
		p->how = "batch-gemm";
		memcpy(p->hits, hits + j * kmax, p->n_hits * sizeof(vela_hit_t));
	}
	free(Q);
	free(filters);
	free(which);
	free(hits);
	free(nh);
	return rc;
}

int vela_search_batch(vela_db_t *db, const vela_search_req_t *reqs, size_t n,
		      vela_result_t **outs, vela_err_t *errs)
{
	plan_t *plans = calloc(n ? n : 1, sizeof(*plans));
	int *state = calloc(n ? n : 1, sizeof(int)); /* -1 failed, 0 ready, 1 KNN to run, 2 ran */
	if (plans == NULL || state == NULL) {
		free(plans);
		free(state);
		return VELA_ENOMEM;
	}
	storage_txn_t *txn = NULL;
	int first_rc = 0;
	pthread_rwlock_rdlock(&db->lock);
	int rc = storage_txn_begin(db->env, NULL, 0, &txn);
	for (size_t i = 0; i < n; i++) {
		outs[i] = NULL;
		int r = rc ? vela_err_set(errs ? &errs[i] : NULL, rc, "cannot begin read")
			   : plan_prepare(db, txn, &reqs[i], &plans[i], errs ? &errs[i] : NULL);
		state[i] = r ? -1 : (plans[i].knn ? 1 : 0);
		first_rc = first_rc ? first_rc : r;
	}
	for (size_t i = 0; i < n; i++) {
		if (state[i] == 1) {
			int r = batch_group(plans, state, n, i, errs);
			first_rc = first_rc ? first_rc : r;
		}
	}
	for (size_t i = 0; i < n; i++) {
		if (state[i] >= 0) {
			int r = result_build(txn, &plans[i], &outs[i], errs ? &errs[i] : NULL);
			first_rc = first_rc ? first_rc : r;
		}
		plan_free(&plans[i]);
	}
	storage_txn_abort(txn);
	pthread_rwlock_unlock(&db->lock);
	free(plans);
	free(state);
	return first_rc;
}

int vela_explain(vela_db_t *db, const char *index, const char *query, size_t query_len,
		 const vela_kv_t *params, size_t n_params, char **out, vela_err_t *err)
{
	pthread_rwlock_rdlock(&db->lock);
	db_index_t *ix = index ? db_index_find(db, index) : NULL;
	query_t *q = NULL;
	int rc = ix ? query_parse(query, query_len ? query_len : strlen(query),
				  (const query_param_t *)params, n_params, field_lookup, ix, &q, err)
		    : vela_err_set(err, VELA_ENOTFOUND, "%s: no such index", index ? index : "(null)");
	pthread_rwlock_unlock(&db->lock);
	if (rc)
		return rc;
	int n = query_explain(q, NULL, 0);
	char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
	if (buf)
		query_explain(q, buf, (size_t)n + 1);
	query_free(q);
	if (buf == NULL)
		return vela_err_set(err, VELA_ENOMEM, "out of memory");
	*out = buf;
	return VELA_OK;
}
