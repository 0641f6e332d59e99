/* Search: parse the query against an index's schema, evaluate the filter to
 * a docid bitmap from the postings, plan the KNN from the filter's exact
 * match count (exact scan of the matches, the filtered graph walk, the
 * widened graph walk, or Redis's BATCHES), run it, build the result rows,
 * and keep the profile FT.PROFILE prints. Batches of queries are planned
 * together in search_batch.c, over the same steps (search_int.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/search_int.h"
#include "index/graph_hybrid.h"
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

typedef db_src_ctx_t src_ctx_t;

#define DOCID_CHUNK 256

int db_docids_add(void *ctx, const uint32_t *ids_be, size_t n)
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
	if (s->cache)
		return db_cache_posting(s->cache, s->txn, key, kl, out);
	return storage_posting_get(s->txn, key, kl, db_docids_add, out);
}

/* One query alone: the field's in-memory value index (db/tagidx.c) when
 * it has one, else its posting in LMDB. */
static int src_tag(void *ctx, uint32_t field, const char *val, size_t len, roaring_bitmap_t *out)
{
	src_ctx_t *s = ctx;
	const roaring_bitmap_t *bm;
	if (s->cache == NULL && len <= STORAGE_TERM_MAX &&
	    db_tagidx_ref(s->txn, s->ix, field, val, len, &bm) == 0) {
		if (bm)
			roaring_bitmap_or_inplace(out, bm);
		return VELA_OK;
	}
	return src_term(ctx, field, SP_TAG, val, len, out);
}

/* The bitmap of a tag value (query_source_t.tag_ref): the batch cache's,
 * or one query's from the field's value index; VELA_EUNSUPPORTED when the
 * field has none (over its value budget): src_tag reads LMDB. */
static int src_tag_ref(void *ctx, uint32_t field, const char *val, size_t len,
		       const roaring_bitmap_t **bm)
{
	src_ctx_t *s = ctx;
	*bm = NULL;
	if (len > STORAGE_TERM_MAX)
		return VELA_OK; /* could not have been indexed: matches nothing */
	if (s->cache == NULL)
		return db_tagidx_ref(s->txn, s->ix, field, val, len, bm);
	uint8_t key[8 + STORAGE_TERM_MAX];
	size_t kl = storage_posting_key(key, s->ix->id, (uint16_t)field, SP_TAG, val, len);
	return db_cache_posting_ref(s->cache, s->txn, key, kl, bm);
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

bool db_num_bounds(double lo, int lo_excl, double hi, int hi_excl, uint64_t *elo,
		   uint64_t *ehi)
{
	/* Nothing lies above (+inf or below (-inf. */
	if ((lo_excl && lo == INFINITY) || (hi_excl && hi == -INFINITY))
		return false;
	if (lo_excl)
		lo = nextafter(lo, INFINITY);
	if (hi_excl)
		hi = nextafter(hi, -INFINITY);
	if (isnan(lo) || isnan(hi) || lo > hi)
		return false;
	uint8_t el[8], eh[8];
	storage_num_encode(lo, el);
	storage_num_encode(hi, eh);
	*elo = vela_get_be64(el);
	*ehi = vela_get_be64(eh);
	return true;
}

/* Docids of a numeric range arrive in value order, not docid order:
 * inserting them one by one into a roaring bitmap shifts its array
 * containers on every insert. Collect them, sort, then add in order. */
typedef struct docid_vec {
	uint32_t *v;
	size_t n, cap;
	bool sorted;
} docid_vec_t;

static int docid_vec_add(void *ctx, const uint32_t *ids_be, size_t n)
{
	docid_vec_t *d = ctx;
	if (d->n + n > d->cap) {
		size_t cap = d->cap ? d->cap : 1024;
		while (cap < d->n + n)
			cap *= 2;
		uint32_t *v = realloc(d->v, vela_mul_size(cap, sizeof(uint32_t)));
		if (v == NULL)
			return VELA_ENOMEM;
		d->v = v;
		d->cap = cap;
	}
	const uint8_t *p = (const uint8_t *)ids_be;
	for (size_t i = 0; i < n; i++, p += 4) {
		uint32_t id = vela_get_be32(p);
		d->sorted = d->sorted && (d->n == 0 || d->v[d->n - 1] < id);
		d->v[d->n++] = id;
	}
	return 0;
}

static int docid_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

/* Sort (unless it came sorted) and OR into out. */
static int docid_vec_flush(docid_vec_t *d, roaring_bitmap_t *out)
{
	if (!d->sorted && d->n >= DOCID_CHUNK) {
		uint32_t *tmp = malloc(vela_mul_size(d->n, sizeof(uint32_t)));
		if (tmp == NULL)
			return VELA_ENOMEM;
		db_docids_sort(d->v, tmp, d->n);
		free(tmp);
	} else if (!d->sorted) {
		qsort(d->v, d->n, sizeof(*d->v), docid_cmp);
	}
	if (d->n)
		roaring_bitmap_add_many(out, d->n, d->v);
	return 0;
}

int db_num_read(storage_txn_t *txn, const db_index_t *ix, uint32_t field, uint64_t elo,
		uint64_t ehi, roaring_bitmap_t *out)
{
	uint8_t el[8], eh[8], kl[16], kh[16];
	vela_put_be64(el, elo);
	vela_put_be64(eh, ehi);
	size_t lol = storage_posting_key(kl, ix->id, (uint16_t)field, SP_NUM, el, 8);
	size_t hil = storage_posting_key(kh, ix->id, (uint16_t)field, SP_NUM, eh, 8);
	docid_vec_t d = {.sorted = true};
	int rc = storage_posting_range(txn, kl, lol, kh, hil, docid_vec_add, &d);
	if (rc == 0)
		rc = docid_vec_flush(&d, out);
	free(d.v);
	return rc;
}

static int src_num(void *ctx, uint32_t field, double lo, int lo_excl, double hi, int hi_excl,
		   roaring_bitmap_t *out)
{
	src_ctx_t *s = ctx;
	uint64_t elo, ehi;
	if (!db_num_bounds(lo, lo_excl, hi, hi_excl, &elo, &ehi))
		return VELA_OK;
	if (s->cache)
		return db_cache_num(s->cache, s->txn, s->ix, field, elo, ehi, out);
	return db_num_filter(s->txn, s->ix, field, elo, ehi, out);
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
	rc = db_vec_range(f, q, (float)radius, NULL, &hits, &n);
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

void db_plan_free(plan_t *p)
{
	query_free(p->q);
	if (p->filter && !p->filter_shared)
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

/* ------------------------------------------------------------ hybrid planning */

/*
 * Hybrid (filter + KNN) plans on a GRAPH field, chosen from the filter's
 * exact match count m among the field's n vectors, s = m / n (counted on
 * the bitmaps before planning: exact and cheap; reference/hybrid-queries.md
 * §7). In order:
 *   m <= K                          -> filtered-scan (all of them anyway)
 *   s >= DB_HYBRID_NEAR_ALL_RATIO   -> graph, as the query without its
 *                                      filter (the walk keeps the matches)
 *   m <  DB_HYBRID_SCAN_MAX         -> filtered-scan: cheaper than a walk
 *   s <  DB_HYBRID_SCAN_RATIO       -> filtered-scan: the walks lose recall
 *   s >= DB_HYBRID_POSTFILTER_RATIO -> graph: the walk over every node,
 *                                      window widened by 1 / s
 *   else                            -> filtered-graph (ACORN-1), which
 *                                      scans instead when the filter is
 *                                      anti-correlated with the query
 * Measured by bench/hybrid.c (BENCHMARKS.md "Hybrid queries": 200,000 x 64,
 * window 64): scanning m matches costs 25-50 ns each, a filtered walk
 * 300-600 us, so the scan wins below about 10,000 matches; the filtered
 * walk keeps recall >= 0.98 from s = 0.05 (0.87-0.93 below) and the
 * widened walk is the fastest above s = 0.3 even when anti-correlated.
 * FLAT fields always scan (the cheapest exact plan). HYBRID_POLICY or
 * force_plan override the choice.
 */
#define DB_HYBRID_SCAN_MAX 10000u
#define DB_HYBRID_SCAN_RATIO 0.05
#define DB_HYBRID_POSTFILTER_RATIO 0.3
#define DB_HYBRID_NEAR_ALL_RATIO 0.9
/* The filtered walk scans instead when the share of matches among the
 * query's unfiltered neighbourhood (about a thousand nodes) is below this
 * fraction of the selectivity: at s = 0.05 an independent filter expects
 * some 50 matches there, and falls below a quarter of that (12) with a
 * probability under 1e-8. */
#define DB_HYBRID_LOCAL_SHARE 0.25

/* BATCHES: the smallest batch the sizing rule picks. */
#define DB_HYBRID_BATCH_MIN 10u

const db_field_t *db_plan_field(const plan_t *p)
{
	return &p->ix->fields[p->knn->field_no];
}

/* index_size, filter_matches and selectivity of the profile. */
static void plan_count(plan_t *p)
{
	vela_profile_t *pr = &p->prof;
	if (p->knn) {
		const flat_index_t *fl = db_plan_field(p)->flat;
		pr->index_size = flat_count(fl);
		pr->filter_matches = p->filter ? roaring_bitmap_and_cardinality(p->filter,
										flat_docids(fl))
					       : pr->index_size;
	} else {
		pr->index_size = roaring_bitmap_get_cardinality(p->ix->docids);
		pr->filter_matches = roaring_bitmap_get_cardinality(p->filter ? p->filter
									      : p->ix->docids);
	}
	pr->selectivity = pr->index_size ? (double)pr->filter_matches / (double)pr->index_size : 1;
}

static vela_plan_t plan_choose(const plan_t *p, bool *forced)
{
	const db_field_t *f = db_plan_field(p);
	vela_plan_t want = p->req->force_plan;
	if (want == VELA_PLAN_AUTO && (p->knn->set & QUERY_KNN_HYBRID_POLICY))
		want = p->knn->hybrid_policy == QUERY_HYBRID_ADHOC_BF ? VELA_PLAN_SCAN
									: VELA_PLAN_BATCHES;
	*forced = want != VELA_PLAN_AUTO;
	if (p->filter == NULL) /* plain KNN: the graph when there is one */
		return f->graph && want != VELA_PLAN_SCAN ? VELA_PLAN_GRAPH : VELA_PLAN_SCAN;
	if (want == VELA_PLAN_BATCHES)
		return VELA_PLAN_BATCHES;
	if (f->graph == NULL || want == VELA_PLAN_SCAN)
		return VELA_PLAN_SCAN;
	if (want == VELA_PLAN_GRAPH || want == VELA_PLAN_FILTERED_GRAPH)
		return want;
	uint64_t m = p->prof.filter_matches;
	double s = p->prof.selectivity;
	if (m <= p->knn->k)
		return VELA_PLAN_SCAN;
	if (s >= DB_HYBRID_NEAR_ALL_RATIO)
		return VELA_PLAN_GRAPH;
	if (m < DB_HYBRID_SCAN_MAX || s < DB_HYBRID_SCAN_RATIO)
		return VELA_PLAN_SCAN;
	return s >= DB_HYBRID_POSTFILTER_RATIO ? VELA_PLAN_GRAPH : VELA_PLAN_FILTERED_GRAPH;
}

/*
 * In a batch, queries sharing a filter are scanned together: flat_search_multi
 * gathers the matches once and scores them against the whole group with one
 * GEMM, so the exact scan costs each of the g queries about
 * m (gather_cost / g + 1) GEMM products instead of m scan_cost (index.h,
 * "FLAT multi"; scanning gets cheaper with the number of concurrent
 * queries, reference/hybrid-queries.md §2.11, Sanca & Ailamaki). The
 * planner's rule compares scanning with a filtered walk at
 * DB_HYBRID_SCAN_MAX matches scanned one at a time; a shared group whose
 * per-query cost is below that many scanned matches is scanned instead of
 * walked (exact, and cheaper). Only the filtered walk is replaced: the
 * widened walk (s >= DB_HYBRID_POSTFILTER_RATIO) costs a fraction of it.
 */
bool db_plan_batch_scan(const plan_t *p, uint32_t g)
{
	if (p->knn == NULL || p->choice != VELA_PLAN_FILTERED_GRAPH || p->prof.forced ||
	    g < FLAT_MULTI_GROUP_MIN_DEFAULT)
		return false;
	double per_query = (double)p->prof.filter_matches *
			   (FLAT_MULTI_GATHER_COST_DEFAULT / g + 1.0) / FLAT_MULTI_SCAN_COST_DEFAULT;
	return per_query < DB_HYBRID_SCAN_MAX;
}

/* Parse the query and decode its vectors; caller holds db->lock shared. */
int db_plan_parse(vela_db_t *db, const vela_search_req_t *req, plan_t *p, vela_err_t *err)
{
	memset(p, 0, sizeof(*p));
	p->req = req;
	p->db = db;
	if (req->index == NULL || (p->ix = db_index_find(db, req->index)) == NULL)
		return vela_err_set(err, VELA_ENOTFOUND, "%s: no such index",
				    req->index ? req->index : "(null)");
	if (req->query == NULL)
		return vela_err_set(err, VELA_ESYNTAX, "empty query");
	if (req->limit > VELA_LIMIT_MAX)
		return vela_err_set(err, VELA_ELIMIT, "LIMIT exceeds maximum of %u", VELA_LIMIT_MAX);
	size_t qlen = req->query_len ? req->query_len : strlen(req->query);
	uint64_t t0 = vela_now_ns();
	int rc = query_parse(req->query, qlen, (const query_param_t *)req->params, req->n_params,
			     field_lookup, p->ix, &p->q, err);
	if (rc)
		return rc;
	p->knn = query_knn(p->q);
	if (p->knn && (rc = plan_knn(p, err)))
		return rc;
	if (p->knn == NULL && (rc = plan_yield(p, err)))
		return rc;
	p->prof.parse_ns = vela_now_ns() - t0;
	return VELA_OK;
}

void db_plan_decide(plan_t *p)
{
	plan_count(p);
	if (p->knn)
		p->choice = plan_choose(p, &p->prof.forced);
}

int db_plan_filter(storage_txn_t *txn, db_filter_cache_t *cache, plan_t *p, bool explain,
		   vela_err_t *err)
{
	if (explain && p->knn == NULL)
		return VELA_OK;
	uint64_t t0 = vela_now_ns();
	if (!(p->knn && query_filter_is_all(p->q))) {
		src_ctx_t sc = {.ix = p->ix, .txn = txn, .cache = cache};
		query_source_t src = {.ctx = &sc, .all = src_all, .tag = src_tag,
				      .tag_ref = src_tag_ref, .num_range = src_num,
				      .text_term = src_text, .vector_range = src_vrange};
		int rc = query_eval(p->q, &src, &p->filter, err);
		if (rc)
			return rc;
	}
	p->prof.filter_ns = vela_now_ns() - t0;
	db_plan_decide(p);
	if (!explain && p->knn) /* the workload log (db/workload.c) */
		db_workload_record(p->db, p->ix, p->q, p->knn);
	return VELA_OK;
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
	if (x && db_vec_get(f, docid, x) == 0)
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

int db_plan_result(storage_txn_t *txn, const plan_t *p, vela_result_t **out, vela_err_t *err)
{
	uint64_t t0 = vela_now_ns();
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
	if (p->req->profile) {
		vela_profile_t *pr = arena_alloc(r, sizeof(*pr));
		if (pr == NULL) {
			vela_result_free(&r->pub);
			return vela_err_set(err, VELA_ENOMEM, "out of memory");
		}
		*pr = p->prof;
		pr->load_ns = vela_now_ns() - t0;
		r->pub.profile = pr;
	}
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

/* The window a graph search starts from: the query's, else the field's,
 * else the default; at least K. */
static uint32_t knn_window(const plan_t *p, uint32_t k)
{
	const db_field_t *f = db_plan_field(p);
	uint32_t w = plan_window(p);
	if (w == 0)
		w = f->graph_search_window ? f->graph_search_window : GRAPH_SEARCH_WINDOW_SIZE_DEFAULT;
	if (w < k)
		w = k;
	return w > GRAPH_SEARCH_WINDOW_SIZE_MAX ? GRAPH_SEARCH_WINDOW_SIZE_MAX : w;
}

/* Exact: every vector (no filter) or the filter's matches (ADHOC_BF). */
static int knn_scan(plan_t *p)
{
	p->how = p->filter ? "filtered-scan" : "scan";
	p->prof.mode = p->filter ? "HYBRID_ADHOC_BF" : "STANDARD_KNN";
	p->prof.distances += p->prof.filter_matches;
	if (p->filter && p->prof.filter_matches == 0) { /* nothing can match: no scan at all */
		p->n_hits = 0;
		return VELA_OK;
	}
	return db_vec_search(db_plan_field(p), p->qvec, p->knn->k, p->filter, p->hits,
			     &p->n_hits);
}

/* The graph walk over every node; with a filter, only matches are kept
 * (graph_search widens the window by 1 / selectivity, and doubles it while
 * fewer than K matches turned up). */
static int knn_graph(plan_t *p)
{
	const db_field_t *f = db_plan_field(p);
	uint32_t k = p->knn->k;
	p->how = "graph";
	p->prof.mode = p->filter ? "HYBRID_GRAPH_POSTFILTER" : "STANDARD_KNN";
	p->prof.window = knn_window(p, k);
	graph_search_params_t sp;
	graph_search_params_default(&sp);
	sp.window = p->prof.window;
	sp.filter = p->filter;
	return graph_search_counted(f->graph, p->qvec, k, &sp, p->hits, &p->n_hits,
				    &p->prof.distances);
}

/* The walk over the matching nodes only (ACORN-1 two-hop expansion). The
 * planner's choice gives up for the exact scan when the query's own
 * neighbourhood holds far fewer matches than the selectivity predicts (an
 * anti-correlated filter: the walk would have to start from matches far
 * from the query and loses recall; bench/hybrid.c "pos-far", "clu-far"). */
static int knn_filtered_graph(plan_t *p)
{
	uint32_t k = p->knn->k;
	p->how = "filtered-graph";
	p->prof.mode = "HYBRID_FILTERED_GRAPH";
	p->prof.window = knn_window(p, k);
	graph_filter_opts_t o = {.window = p->prof.window,
				 .min_local_share = p->prof.forced ? 0
						    : DB_HYBRID_LOCAL_SHARE * p->prof.selectivity};
	graph_filter_stats_t st = {0};
	int rc = graph_search_filtered(db_plan_field(p)->graph, p->qvec, k, &o, p->filter, p->hits,
				       &p->n_hits, &st);
	p->prof.distances += st.ndist;
	if (rc == 0 && st.gave_up) {
		if (p->defer_scan) /* the batch scans it with its exact groups */
			p->scan_pending = true;
		else
			rc = knn_scan(p);
		p->how = "filtered-scan";
		p->prof.mode = "HYBRID_FILTERED_GRAPH_TO_ADHOC_BF";
	}
	return rc;
}

/* The unfiltered top `want` of the field (graph, or exact on FLAT fields). */
static int knn_top(plan_t *p, uint32_t want, vela_hit_t *out, uint32_t *n_out)
{
	const db_field_t *f = db_plan_field(p);
	if (f->graph == NULL) {
		p->prof.distances += p->prof.index_size;
		return db_vec_search(f, p->qvec, want, NULL, out, n_out);
	}
	graph_search_params_t sp;
	graph_search_params_default(&sp);
	uint32_t w = knn_window(p, want);
	sp.window = w;
	p->prof.window = w;
	return graph_search_counted(f->graph, p->qvec, want, &sp, out, n_out, &p->prof.distances);
}

/*
 * BATCHES (Redis HYBRID_POLICY BATCHES, reference/hybrid-queries.md §2.10):
 * take the next batch of nearest neighbours without the filter, keep those
 * that pass it, until K have passed or the field is exhausted. The first
 * batch is K / selectivity (BATCH_SIZE when given: every batch is that
 * size); later ones are sized from the pass ratio seen so far. A batch is
 * the next slice of one ranking: when it reaches past the neighbours found
 * so far, the walk runs again with a window at least twice the last one (so
 * the walks cost at most about twice the last, not one walk per batch).
 * As in Redis, an explicit BATCHES never turns into a scan on its own; only
 * a ranking longer than the largest window (VELA_K_MAX) makes the scan
 * answer (HYBRID_BATCHES_TO_ADHOC_BF).
 */
static int knn_batches(plan_t *p)
{
	uint32_t k = p->knn->k;
	uint64_t n = p->prof.index_size, m = p->prof.filter_matches;
	uint64_t cap = n < VELA_K_MAX ? n : VELA_K_MAX;
	bool fixed = p->knn->set & QUERY_KNN_BATCH_SIZE;
	double s = p->prof.selectivity > 0 ? p->prof.selectivity : 1.0 / (double)(n ? n : 1);
	uint64_t batch = fixed ? p->knn->batch_size : (uint64_t)ceil((double)k / s);
	if (batch < DB_HYBRID_BATCH_MIN)
		batch = fixed ? batch : DB_HYBRID_BATCH_MIN;
	p->how = "batches";
	p->prof.mode = "HYBRID_BATCHES";
	if (m == 0 || k == 0) {
		p->n_hits = 0;
		return VELA_OK;
	}
	vela_hit_t *top = NULL;
	uint64_t end = 0, have = 0; /* batches served; neighbours ranked so far */
	bool exhausted = false;     /* the last walk returned fewer than it was asked */
	uint32_t passed = 0;
	int rc = VELA_OK;
	for (;;) {
		uint64_t want = end + batch < n ? end + batch : n;
		if (want > have && !exhausted) {
			uint64_t run = want > 2 * have ? want : 2 * have;
			run = run < cap ? run : cap;
			if (want > cap) { /* past the largest window: scan the matches */
				free(top);
				rc = knn_scan(p);
				p->prof.mode = "HYBRID_BATCHES_TO_ADHOC_BF";
				return rc;
			}
			vela_hit_t *t = realloc(top, run * sizeof(*t));
			if (t == NULL) {
				rc = VELA_ENOMEM;
				break;
			}
			top = t;
			uint32_t got = 0;
			if ((rc = knn_top(p, (uint32_t)run, top, &got)))
				break;
			exhausted = got < run || run >= n;
			have = got;
		}
		p->prof.batches++;
		if (batch > p->prof.largest_batch)
			p->prof.largest_batch = (uint32_t)(batch > UINT32_MAX ? UINT32_MAX : batch);
		uint64_t upto = want < have ? want : have;
		passed = 0;
		for (uint64_t i = 0; i < upto; i++)
			passed += roaring_bitmap_contains(p->filter, top[i].docid);
		if (passed >= k || (exhausted && want >= have) || want >= n)
			break; /* enough, or the field is exhausted */
		end = want;
		if (!fixed) { /* enough for the rest at the pass ratio seen so far */
			double ratio = passed ? (double)passed / (double)upto : s;
			batch = (uint64_t)ceil((double)(k - passed) / (ratio < s ? s : ratio));
			batch = batch < DB_HYBRID_BATCH_MIN ? DB_HYBRID_BATCH_MIN : batch;
		}
	}
	p->n_hits = 0;
	uint64_t upto = end + batch < have ? end + batch : have;
	for (uint64_t i = 0; rc == 0 && i < upto && p->n_hits < k; i++)
		if (roaring_bitmap_contains(p->filter, top[i].docid))
			p->hits[p->n_hits++] = top[i];
	free(top);
	return rc;
}

int db_plan_run_knn(plan_t *p, vela_err_t *err)
{
	uint64_t t0 = vela_now_ns();
	int rc;
	switch (p->choice) {
	case VELA_PLAN_GRAPH:
		rc = knn_graph(p);
		break;
	case VELA_PLAN_BATCHES:
		rc = knn_batches(p);
		break;
	case VELA_PLAN_FILTERED_GRAPH:
		rc = knn_filtered_graph(p);
		break;
	default:
		rc = knn_scan(p);
		break;
	}
	p->prof.search_ns = vela_now_ns() - t0;
	p->prof.plan = p->how;
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
		rc = db_plan_parse(db, req, &p, err);
	if (rc == 0)
		rc = db_plan_filter(txn, NULL, &p, false, err);
	if (rc == 0 && p.knn)
		rc = db_plan_run_knn(&p, err);
	if (rc == 0)
		rc = db_plan_result(txn, &p, out, err);
	db_plan_free(&p);
	storage_txn_abort(txn);
	pthread_rwlock_unlock(&db->lock);
	return rc;
}

/* The plan line of EXPLAIN: what db_plan_run_knn would run, from the counts. */
static int explain_plan(const plan_t *p, char *buf, size_t cap)
{
	const vela_profile_t *pr = &p->prof;
	bool f = p->filter != NULL;
	const char *how, *mode;
	switch (p->choice) {
	case VELA_PLAN_GRAPH:
		how = "graph";
		mode = f ? "HYBRID_GRAPH_POSTFILTER" : "STANDARD_KNN";
		break;
	case VELA_PLAN_FILTERED_GRAPH:
		how = "filtered-graph";
		mode = "HYBRID_FILTERED_GRAPH";
		break;
	case VELA_PLAN_BATCHES:
		how = "batches";
		mode = "HYBRID_BATCHES";
		break;
	default:
		how = f ? "filtered-scan" : "scan";
		mode = f ? "HYBRID_ADHOC_BF" : "STANDARD_KNN";
		break;
	}
	int n = snprintf(buf, cap, "PLAN %s %s%s matches %llu of %llu (selectivity %.6g)", how,
			 mode, pr->forced ? " forced" : "", (unsigned long long)pr->filter_matches,
			 (unsigned long long)pr->index_size, pr->selectivity);
	if (p->choice != VELA_PLAN_SCAN && db_plan_field(p)->graph)
		n += snprintf(buf + n, cap > (size_t)n ? cap - (size_t)n : 0, " window %u",
			      knn_window(p, p->knn->k));
	return n;
}

int vela_explain(vela_db_t *db, const char *index, const char *query, size_t query_len,
		 const vela_kv_t *params, size_t n_params, char **out, vela_err_t *err)
{
	vela_search_req_t req = {.index = index, .query = query, .query_len = query_len,
				 .params = params, .n_params = n_params};
	storage_txn_t *txn = NULL;
	plan_t p;
	memset(&p, 0, sizeof(p));
	char line[256] = "";
	pthread_rwlock_rdlock(&db->lock);
	int rc = storage_txn_begin(db->env, NULL, 0, &txn);
	if (rc)
		vela_err_set(err, rc, "cannot begin read: %s", vela_strerror(rc));
	/* Only a KNN query's filter is evaluated: its match count picks the plan. */
	if (rc == 0)
		rc = db_plan_parse(db, &req, &p, err);
	if (rc == 0)
		rc = db_plan_filter(txn, NULL, &p, true, err);
	if (rc == 0 && p.knn)
		explain_plan(&p, line, sizeof(line));
	storage_txn_abort(txn);
	pthread_rwlock_unlock(&db->lock);
	int n = rc ? -1 : query_explain(p.q, NULL, 0);
	size_t ll = strlen(line);
	char *buf = n >= 0 ? malloc((size_t)n + ll + 2) : NULL;
	if (buf) {
		query_explain(p.q, buf, (size_t)n + 1);
		if (ll)
			snprintf(buf + n, ll + 2, "%s\n", line);
	}
	db_plan_free(&p);
	if (rc)
		return rc;
	if (buf == NULL)
		return vela_err_set(err, VELA_ENOMEM, "out of memory");
	*out = buf;
	return VELA_OK;
}
