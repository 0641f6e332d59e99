/* vela_search_batch: the batch executor (issue 6, Deliver item 2). A set of
 * queries is planned together, in the spirit of HQI's batch processing of
 * hybrid query workloads (reference/hybrid-queries.md §1.2, §1.4):
 *
 * 1. Filters. Workloads repeat their predicates ("filter commonality",
 *    §1.2): a filter equal to an earlier one of the batch (query_filter_key)
 *    is evaluated once and its bitmap shared. The remaining filters read
 *    their postings through a batch cache: a TAG value or TEXT term read by
 *    one filter is not read again by another, and all the numeric ranges
 *    of the batch on one field are cut into elementary intervals at their
 *    endpoints, each interval read from LMDB once (a range is the OR of
 *    its intervals) -- the fallback: numeric ranges are answered by the
 *    field's in-memory range index (db/numidx.c) when it can.
 * 2. Plans. Each query gets the plan the planner gives it alone, except
 *    that a filtered walk whose filter enough queries of the batch share
 *    is scanned with them instead (db_plan_batch_scan: exact, and cheaper
 *    in a group). Every answer is the one vela_search gives with the same
 *    plan (force_plan).
 * 3. Exact plans (filtered scans, unfiltered scans) of one vector field go
 *    to flat_search_multi together: queries sharing a filter read its rows
 *    once, in blocks, scored with one GEMM each through the compute backend
 *    (index.h BACKEND); dense filters and unfiltered scans share one
 *    blocked GEMM over the field.
 * 4. Graph plans run one after the other, as vela_search runs them.
 * 5. Result rows, as vela_search builds them.
 * Everything runs inside one read transaction, so every query sees the
 * same snapshot, and the shared bitmaps are those each query would read. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/search_int.h"

/* Filter keys up to this many bytes are built on the stack. */
#define DB_BATCH_KEY_STACK 512u
/* Initial slots of the batch's hash tables (a power of two). */
#define DB_BATCH_TABLE_MIN 64u

/* ------------------------------------------------------------ postings cache */

/* roaring_bitmap_free of CRoaring 0.2 does not accept NULL. */
static void bm_free(roaring_bitmap_t *b)
{
	if (b)
		roaring_bitmap_free(b);
}

typedef struct cache_ent {
	uint64_t h;
	uint8_t *key; /* NULL: free slot */
	size_t klen;
	roaring_bitmap_t *bm;
} cache_ent_t;

/* The elementary intervals of one numeric field: interval i is
 * [cut[i], cut[i + 1] - 1] (the last one ends at UINT64_MAX), its
 * postings read on first use into part[i]. */
typedef struct num_cuts {
	uint32_t ix_id, field;
	uint64_t *cut;
	roaring_bitmap_t **part;
	size_t n;
} num_cuts_t;

struct db_filter_cache {
	cache_ent_t *ents;
	size_t n, cap;
	num_cuts_t *cuts;
	size_t n_cuts;
};

static void cache_free(db_filter_cache_t *c)
{
	for (size_t i = 0; i < c->cap; i++) {
		free(c->ents[i].key);
		bm_free(c->ents[i].bm);
	}
	free(c->ents);
	for (size_t i = 0; i < c->n_cuts; i++) {
		for (size_t j = 0; j < c->cuts[i].n; j++)
			bm_free(c->cuts[i].part[j]);
		free(c->cuts[i].part);
		free(c->cuts[i].cut);
	}
	free(c->cuts);
}

static cache_ent_t *cache_slot(cache_ent_t *ents, size_t cap, uint64_t h, const uint8_t *key,
			       size_t klen)
{
	for (size_t i = h & (cap - 1);; i = (i + 1) & (cap - 1)) {
		cache_ent_t *e = &ents[i];
		if (e->key == NULL || (e->h == h && e->klen == klen && !memcmp(e->key, key, klen)))
			return e;
	}
}

static int cache_grow(db_filter_cache_t *c)
{
	size_t cap = c->cap ? c->cap * 2 : DB_BATCH_TABLE_MIN;
	cache_ent_t *ents = calloc(cap, sizeof(*ents));
	if (ents == NULL)
		return VELA_ENOMEM;
	for (size_t i = 0; i < c->cap; i++)
		if (c->ents[i].key)
			*cache_slot(ents, cap, c->ents[i].h, c->ents[i].key, c->ents[i].klen) =
				c->ents[i];
	free(c->ents);
	c->ents = ents;
	c->cap = cap;
	return 0;
}

int db_cache_posting(db_filter_cache_t *c, storage_txn_t *txn, const uint8_t *key, size_t klen,
		     roaring_bitmap_t *out)
{
	const roaring_bitmap_t *bm;
	int rc = db_cache_posting_ref(c, txn, key, klen, &bm);
	if (rc == 0)
		roaring_bitmap_or_inplace(out, bm);
	return rc;
}

int db_cache_posting_ref(db_filter_cache_t *c, storage_txn_t *txn, const uint8_t *key,
			 size_t klen, const roaring_bitmap_t **out)
{
	if (2 * (c->n + 1) > c->cap && cache_grow(c))
		return VELA_ENOMEM;
	uint64_t h = vela_hash64(key, klen);
	cache_ent_t *e = cache_slot(c->ents, c->cap, h, key, klen);
	if (e->key == NULL) {
		roaring_bitmap_t *bm = roaring_bitmap_create();
		uint8_t *k = malloc(klen ? klen : 1);
		int rc = bm && k ? storage_posting_get(txn, key, klen, db_docids_add, bm)
				 : VELA_ENOMEM;
		if (rc) {
			bm_free(bm);
			free(k);
			return rc;
		}
		memcpy(k, key, klen);
		*e = (cache_ent_t){.h = h, .key = k, .klen = klen, .bm = bm};
		c->n++;
	}
	*out = e->bm;
	return 0;
}

static num_cuts_t *cuts_find(db_filter_cache_t *c, uint32_t ix_id, uint32_t field)
{
	for (size_t i = 0; i < c->n_cuts; i++)
		if (c->cuts[i].ix_id == ix_id && c->cuts[i].field == field)
			return &c->cuts[i];
	return NULL;
}

/* The interval starting exactly at v, or SIZE_MAX. */
static size_t cuts_at(const num_cuts_t *nc, uint64_t v)
{
	size_t lo = 0, hi = nc->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (nc->cut[mid] < v)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < nc->n && nc->cut[lo] == v ? lo : SIZE_MAX;
}

/* Read interval i's postings (once). */
static int cuts_part(storage_txn_t *txn, const db_index_t *ix, num_cuts_t *nc, size_t i)
{
	if (nc->part[i])
		return 0;
	uint64_t end = i + 1 < nc->n ? nc->cut[i + 1] - 1 : UINT64_MAX;
	roaring_bitmap_t *bm = roaring_bitmap_create();
	int rc = bm ? db_num_read(txn, ix, nc->field, nc->cut[i], end, bm) : VELA_ENOMEM;
	if (rc == 0)
		nc->part[i] = bm;
	else
		bm_free(bm);
	return rc;
}

int db_cache_num(db_filter_cache_t *c, storage_txn_t *txn, const db_index_t *ix,
		 uint32_t field, uint64_t elo, uint64_t ehi, roaring_bitmap_t *out)
{
	/* The field's in-memory range index answers whole ranges as cheaply as
	 * the cuts would; the cuts (read from LMDB) are the fallback. */
	if (db_numidx_range(txn, ix, field, elo, ehi, out) == 0)
		return 0;
	num_cuts_t *nc = cuts_find(c, ix->id, field);
	size_t i0 = nc ? cuts_at(nc, elo) : SIZE_MAX;
	size_t i1 = nc == NULL || ehi == UINT64_MAX ? nc ? nc->n : 0 : cuts_at(nc, ehi + 1);
	if (i0 == SIZE_MAX || i1 == SIZE_MAX || i1 <= i0) /* a range the batch did not cut */
		return db_num_read(txn, ix, field, elo, ehi, out);
	int rc = 0;
	for (size_t i = i0; rc == 0 && i < i1; i++)
		rc = cuts_part(txn, ix, nc, i);
	if (rc)
		return rc;
	roaring_bitmap_t *u = i1 - i0 == 1 ? NULL
			      : roaring_bitmap_or_many(i1 - i0,
						       (const roaring_bitmap_t **)nc->part + i0);
	if (i1 - i0 > 1 && u == NULL)
		return VELA_ENOMEM;
	roaring_bitmap_or_inplace(out, u ? u : nc->part[i0]);
	bm_free(u);
	return 0;
}

/* ------------------------------------------------------------ numeric cuts */

/* One numeric range of the batch, encoded (db_num_bounds). */
typedef struct num_rng {
	uint32_t ix_id, field;
	uint64_t lo, hi;
} num_rng_t;

typedef struct rng_list {
	num_rng_t *v;
	size_t n, cap;
	uint32_t ix_id;
} rng_list_t;

static int rng_collect(void *ctx, const query_num_range_t *r)
{
	rng_list_t *l = ctx;
	uint64_t lo, hi;
	if (!db_num_bounds(r->lo, r->lo_excl, r->hi, r->hi_excl, &lo, &hi))
		return 0;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 64;
		num_rng_t *v = realloc(l->v, vela_mul_size(cap, sizeof(*v)));
		if (v == NULL)
			return VELA_ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = (num_rng_t){l->ix_id, r->field_no, lo, hi};
	return 0;
}

static int rng_cmp(const void *a, const void *b)
{
	const num_rng_t *x = a, *y = b;
	if (x->ix_id != y->ix_id)
		return x->ix_id < y->ix_id ? -1 : 1;
	if (x->field != y->field)
		return x->field < y->field ? -1 : 1;
	if (x->lo != y->lo)
		return x->lo < y->lo ? -1 : 1;
	return (x->hi > y->hi) - (x->hi < y->hi);
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

/* Cut one field's distinct ranges v[0..n) (n >= 2) at their endpoints. */
static int cuts_make(db_filter_cache_t *c, const num_rng_t *v, size_t n)
{
	num_cuts_t *t = realloc(c->cuts, (c->n_cuts + 1) * sizeof(*t));
	if (t == NULL)
		return VELA_ENOMEM;
	c->cuts = t;
	uint64_t *cut = malloc(vela_mul_size(2 * n, sizeof(uint64_t)));
	if (cut == NULL)
		return VELA_ENOMEM;
	size_t m = 0, u = 0;
	for (size_t i = 0; i < n; i++) {
		cut[m++] = v[i].lo;
		if (v[i].hi != UINT64_MAX)
			cut[m++] = v[i].hi + 1;
	}
	qsort(cut, m, sizeof(uint64_t), u64_cmp);
	for (size_t i = 0; i < m; i++)
		if (u == 0 || cut[u - 1] != cut[i])
			cut[u++] = cut[i];
	roaring_bitmap_t **part = calloc(u, sizeof(*part));
	if (part == NULL) {
		free(cut);
		return VELA_ENOMEM;
	}
	c->cuts[c->n_cuts++] = (num_cuts_t){.ix_id = v[0].ix_id, .field = v[0].field,
					      .cut = cut, .part = part, .n = u};
	return 0;
}

/* Fields with at least two distinct ranges in the batch get cut. */
static int cuts_plan(db_filter_cache_t *c, rng_list_t *l)
{
	qsort(l->v, l->n, sizeof(*l->v), rng_cmp);
	size_t u = 0;
	for (size_t i = 0; i < l->n; i++)
		if (u == 0 || rng_cmp(&l->v[u - 1], &l->v[i]) != 0)
			l->v[u++] = l->v[i];
	int rc = 0;
	for (size_t s = 0, e; rc == 0 && s < u; s = e) {
		for (e = s + 1; e < u && l->v[e].ix_id == l->v[s].ix_id &&
				l->v[e].field == l->v[s].field;)
			e++;
		if (e - s >= 2)
			rc = cuts_make(c, l->v + s, e - s);
	}
	return rc;
}

/* ------------------------------------------------------------ shared filters */

typedef struct fkey_ent {
	uint64_t h;
	size_t plan; /* SIZE_MAX: free slot */
} fkey_ent_t;

/* A plan whose filter is evaluated (a KNN over `*` has none). */
static bool plan_has_filter(const plan_t *p)
{
	return !(p->knn && query_filter_is_all(p->q));
}

/* The batch's key of p's filter: its index id, then query_filter_key.
 * *key is buf or a malloc'd copy (free it when != buf). */
static int fkey_make(const plan_t *p, uint8_t *buf, size_t cap, uint8_t **key, size_t *len)
{
	const size_t id = sizeof(p->ix->id);
	memcpy(buf, &p->ix->id, id);
	size_t n = query_filter_key(p->q, buf + id, cap - id);
	*key = buf;
	*len = n + id;
	if (n <= cap - id)
		return 0;
	if ((*key = malloc(n + id)) == NULL)
		return VELA_ENOMEM;
	memcpy(*key, &p->ix->id, id);
	query_filter_key(p->q, *key + id, n);
	return 0;
}

static bool fkey_equal(const plan_t *a, const plan_t *b)
{
	uint8_t ba[DB_BATCH_KEY_STACK], bb[DB_BATCH_KEY_STACK], *ka, *kb;
	size_t la, lb;
	if (fkey_make(a, ba, sizeof(ba), &ka, &la))
		return false;
	bool eq = fkey_make(b, bb, sizeof(bb), &kb, &lb) == 0 && la == lb && !memcmp(ka, kb, la);
	if (ka != ba)
		free(ka);
	if (kb != bb && kb != NULL)
		free(kb);
	return eq;
}

/* owner[i] = the first plan of the batch with plan i's filter (i itself
 * when it is the first; SIZE_MAX when plan i has no filter to evaluate). */
static int filters_dedupe(const plan_t *plans, const int *state, size_t n, size_t *owner)
{
	size_t cap = DB_BATCH_TABLE_MIN;
	while (cap < 2 * n)
		cap *= 2;
	fkey_ent_t *t = malloc(cap * sizeof(*t));
	if (t == NULL)
		return VELA_ENOMEM;
	for (size_t i = 0; i < cap; i++)
		t[i].plan = SIZE_MAX;
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < n; i++) {
		owner[i] = SIZE_MAX;
		if (state[i] < 0 || !plan_has_filter(&plans[i]))
			continue;
		uint8_t buf[DB_BATCH_KEY_STACK], *key;
		size_t len;
		if ((rc = fkey_make(&plans[i], buf, sizeof(buf), &key, &len)))
			break;
		uint64_t h = vela_hash64(key, len);
		if (key != buf)
			free(key);
		size_t s = h & (cap - 1);
		while (t[s].plan != SIZE_MAX && !(t[s].h == h && fkey_equal(&plans[t[s].plan],
									      &plans[i])))
			s = (s + 1) & (cap - 1);
		if (t[s].plan == SIZE_MAX)
			t[s] = (fkey_ent_t){h, i};
		owner[i] = t[s].plan;
	}
	free(t);
	return rc;
}

/* Numeric ranges of every distinct filter, cut per field. */
static int filters_cut(db_filter_cache_t *c, const plan_t *plans, const size_t *owner,
		       size_t n)
{
	rng_list_t l = {0};
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < n; i++) {
		if (owner[i] != i)
			continue;
		l.ix_id = plans[i].ix->id;
		rc = query_num_ranges(plans[i].q, rng_collect, &l);
	}
	if (rc == 0 && l.n >= 2)
		rc = cuts_plan(c, &l);
	free(l.v);
	return rc;
}

/* p takes o's evaluated filter. */
static void filter_share(plan_t *p, const plan_t *o)
{
	uint64_t t0 = vela_now_ns();
	p->filter = o->filter;
	p->filter_shared = true;
	db_plan_decide(p);
	p->prof.filter_ns = vela_now_ns() - t0;
	if (p->knn) /* logged like db_plan_filter's: a shared filter still recurs */
		db_workload_record(p->db, p->ix, p->q, p->knn);
}

/* ------------------------------------------------------------ batch plans */

/* A KNN plan with a filter, keyed by vector field and filter (shared
 * filters are the same pointer). */
typedef struct group_key {
	uintptr_t ix, field, filter;
	size_t plan;
} group_key_t;

static int group_cmp(const void *a, const void *b)
{
	const group_key_t *x = a, *y = b;
	if (x->ix != y->ix)
		return x->ix < y->ix ? -1 : 1;
	if (x->field != y->field)
		return x->field < y->field ? -1 : 1;
	return (x->filter > y->filter) - (x->filter < y->filter);
}

/* Step 2's exception: filtered walks of a group sharing a filter on one
 * field become scans when db_plan_batch_scan says so. */
static void plans_regroup(plan_t *plans, const int *state, size_t n)
{
	group_key_t *k = malloc((n ? n : 1) * sizeof(*k));
	size_t m = 0;
	if (k == NULL)
		return; /* the plans stay as chosen: the answers are still right */
	for (size_t i = 0; i < n; i++)
		if (state[i] == 1 && plans[i].filter)
			k[m++] = (group_key_t){(uintptr_t)plans[i].ix, plans[i].knn->field_no,
					       (uintptr_t)plans[i].filter, i};
	qsort(k, m, sizeof(*k), group_cmp);
	for (size_t s = 0, e; s < m; s = e) {
		for (e = s + 1; e < m && group_cmp(&k[s], &k[e]) == 0;)
			e++;
		for (size_t j = s; j < e; j++)
			if (db_plan_batch_scan(&plans[k[j].plan], (uint32_t)(e - s)))
				plans[k[j].plan].choice = VELA_PLAN_SCAN;
	}
	free(k);
}

/* ------------------------------------------------------------ exact plans */

/* A KNN plan answered by an exact scan: chosen so, or a filtered walk
 * that gave up for the scan (left to the batch). */
static bool plan_exact(const plan_t *p)
{
	return p->choice == VELA_PLAN_SCAN || p->scan_pending;
}

/* Plans that flat_search_multi may answer together: exact scans of the
 * same vector field. */
static bool exact_same(const plan_t *a, const plan_t *b)
{
	return a->ix == b->ix && a->knn->field_no == b->knn->field_no && plan_exact(a) &&
	       plan_exact(b);
}

/* The plan's profile after flat_search_multi answered it (a walk that
 * gave up keeps its mode and adds its time). */
static void exact_done(plan_t *p, const flat_multi_query_t *mq, uint64_t ns)
{
	p->n_hits = mq->n_out;
	bool gemm = mq->how != FLAT_MULTI_SCAN;
	p->how = gemm ? "batch-gemm" : p->filter ? "filtered-scan" : "scan";
	if (!p->scan_pending)
		p->prof.mode = p->filter ? "HYBRID_ADHOC_BF" : "STANDARD_KNN";
	p->prof.plan = p->how;
	p->prof.distances += gemm ? mq->scored : p->prof.filter_matches;
	p->prof.search_ns += ns;
	p->scan_pending = false;
}

/* Collect the exact plans like plans[first] still to answer (a filter
 * that matches nothing answers at once, as knn_scan does). */
static size_t exact_collect(plan_t *plans, int *state, size_t n, size_t first, size_t *which,
			    flat_multi_query_t *mq)
{
	size_t m = 0;
	for (size_t i = first; i < n; i++) {
		plan_t *p = &plans[i];
		if (state[i] != 1 || !exact_same(p, &plans[first]))
			continue;
		if (p->filter && p->prof.filter_matches == 0) {
			flat_multi_query_t none = {.how = FLAT_MULTI_SCAN};
			exact_done(p, &none, 0);
			state[i] = 2;
			continue;
		}
		mq[m] = (flat_multi_query_t){.q = p->qvec, .k = p->knn->k, .filter = p->filter,
					     .out = p->hits};
		which[m++] = i;
	}
	return m;
}

/* Answer every exact plan on plans[first]'s field with one
 * flat_search_multi; on failure each scans alone. */
static void exact_group(plan_t *plans, int *state, size_t n, size_t first, size_t *which,
			flat_multi_query_t *mq, vela_err_t *errs)
{
	size_t m = exact_collect(plans, state, n, first, which, mq);
	if (m == 0)
		return;
	uint64_t t0 = vela_now_ns();
	const flat_index_t *fl = db_plan_field(&plans[first])->flat;
	/* Released rows (a compressed field): each plan scans the codes alone. */
	int rc = flat_has_rows(fl) ? flat_search_multi(fl, mq, (uint32_t)m, NULL)
				   : VELA_EUNSUPPORTED;
	uint64_t ns = (vela_now_ns() - t0) / m; /* the group's time, shared out */
	for (size_t j = 0; j < m; j++) {
		size_t i = which[j];
		plan_t *p = &plans[i];
		if (rc == 0) {
			exact_done(p, &mq[j], ns);
			state[i] = 2;
			continue;
		}
		p->choice = VELA_PLAN_SCAN; /* a walk that gave up scans too */
		p->scan_pending = false;
		int r = db_plan_run_knn(p, errs ? &errs[i] : NULL);
		state[i] = r ? r : 2;
	}
}

/* Every KNN plan: those that take the partitions plan first (db/layout.c),
 * the walks next (one by one; a filtered walk that gives up joins the exact
 * plans), then the exact plans grouped per field. */
static void plans_run(plan_t *plans, int *state, size_t n, vela_err_t *errs)
{
	db_layout_run(plans, state, n); /* the partitions plan (db/layout.c) */
	for (size_t i = 0; i < n; i++) {
		if (state[i] != 1 || plans[i].choice == VELA_PLAN_SCAN)
			continue;
		plans[i].defer_scan = true;
		int r = db_plan_run_knn(&plans[i], errs ? &errs[i] : NULL);
		state[i] = r ? r : plans[i].scan_pending ? 1 : 2;
	}
	size_t *which = malloc((n ? n : 1) * sizeof(size_t));
	flat_multi_query_t *mq = malloc((n ? n : 1) * sizeof(*mq));
	for (size_t i = 0; which && mq && i < n; i++)
		if (state[i] == 1)
			exact_group(plans, state, n, i, which, mq, errs);
	for (size_t i = 0; i < n; i++) { /* out of memory above: one by one */
		if (state[i] != 1)
			continue;
		plans[i].choice = VELA_PLAN_SCAN;
		plans[i].scan_pending = false;
		int r = db_plan_run_knn(&plans[i], errs ? &errs[i] : NULL);
		state[i] = r ? r : 2;
	}
	free(which);
	free(mq);
}

/* ------------------------------------------------------------ the batch */

/* Parse every query; state[i]: its error code, or 0. */
static void batch_parse(vela_db_t *db, const vela_search_req_t *reqs, size_t n, plan_t *plans,
			int *state, vela_err_t *errs)
{
	for (size_t i = 0; i < n; i++)
		state[i] = db_plan_parse(db, &reqs[i], &plans[i], errs ? &errs[i] : NULL);
}

/* Steps 1 and 2 of the file comment; state[i] becomes 1 (a KNN to run),
 * 0 (no KNN) or an error code. Should the batch's planning run out of
 * memory, every filter is evaluated alone (the answers do not change). */
static void batch_filters(storage_txn_t *txn, db_filter_cache_t *c, plan_t *plans, int *state,
			  size_t n, vela_err_t *errs)
{
	size_t *owner = malloc((n ? n : 1) * sizeof(size_t));
	int rc = owner ? filters_dedupe(plans, state, n, owner) : VELA_ENOMEM;
	if (rc == 0)
		rc = filters_cut(c, plans, owner, n);
	if (rc) {
		cache_free(c);
		memset(c, 0, sizeof(*c));
	}
	for (size_t i = 0; i < n; i++) {
		if (state[i] < 0)
			continue;
		size_t o = rc || owner[i] == SIZE_MAX ? i : owner[i];
		if (o != i && state[o] >= 0)
			filter_share(&plans[i], &plans[o]);
		else if ((state[i] = db_plan_filter(txn, c, &plans[i], false,
						    errs ? &errs[i] : NULL)) < 0)
			continue;
		state[i] = plans[i].knn ? 1 : 0;
	}
	free(owner);
}

int vela_layout_dump_scan(vela_db_t *db, const vela_search_req_t *reqs, size_t n,
			  const char *path, uint32_t *dumped, vela_err_t *err)
{
	if (db == NULL || (n && reqs == NULL) || path == NULL || dumped == NULL)
		return vela_err_set(err, VELA_EINVAL, "layout dump: NULL argument");
	*dumped = 0;
	plan_t *plans = calloc(n ? n : 1, sizeof(*plans));
	int *state = calloc(n ? n : 1, sizeof(int));
	FILE *f = fopen(path, "wb");
	int rc = plans && state ? 0 : vela_err_set(err, VELA_ENOMEM, "layout dump: out of memory");
	if (rc == 0 && f == NULL)
		rc = vela_err_set(err, VELA_EIO, "layout dump: cannot create %s", path);
	storage_txn_t *txn = NULL;
	db_filter_cache_t cache = {0};
	pthread_rwlock_rdlock(&db->lock);
	if (rc == 0 && (rc = storage_txn_begin(db->env, NULL, 0, &txn)) != 0)
		vela_err_set(err, rc, "cannot begin read: %s", vela_strerror(rc));
	if (rc == 0) { /* vela_search_batch's planning, its errors per query */
		batch_parse(db, reqs, n, plans, state, NULL);
		batch_filters(txn, &cache, plans, state, n, NULL);
		plans_regroup(plans, state, n);
		rc = db_layout_dump(plans, state, n, f, dumped);
		if (rc)
			vela_err_set(err, rc, rc == VELA_ENOTFOUND
						      ? "layout dump: no query takes the partitions plan"
						      : "layout dump: %s",
				     vela_strerror(rc));
	}
	for (size_t i = 0; plans && i < n; i++)
		db_plan_free(&plans[i]);
	cache_free(&cache);
	if (txn)
		storage_txn_abort(txn);
	pthread_rwlock_unlock(&db->lock);
	if (f && fclose(f) && rc == 0)
		rc = vela_err_set(err, VELA_EIO, "layout dump: cannot write %s", path);
	free(plans);
	free(state);
	return rc;
}

int vela_search_batch(vela_db_t *db, const vela_search_req_t *reqs, size_t n,
		      vela_result_t **outs, vela_err_t *errs)
{
	plan_t *plans = calloc(n ? n : 1, sizeof(*plans));
	/* per query: an error code, 0 no KNN, 1 a KNN to run, 2 ran */
	int *state = calloc(n ? n : 1, sizeof(int));
	if (plans == NULL || state == NULL) {
		free(plans);
		free(state);
		return VELA_ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		outs[i] = NULL;
	storage_txn_t *txn = NULL;
	db_filter_cache_t cache = {0};
	pthread_rwlock_rdlock(&db->lock);
	int rc = storage_txn_begin(db->env, NULL, 0, &txn);
	for (size_t i = 0; rc && i < n; i++)
		state[i] = vela_err_set(errs ? &errs[i] : NULL, rc, "cannot begin read: %s",
					vela_strerror(rc));
	if (rc == 0) {
		batch_parse(db, reqs, n, plans, state, errs);
		batch_filters(txn, &cache, plans, state, n, errs);
		plans_regroup(plans, state, n);
		plans_run(plans, state, n, errs);
	}
	int first_rc = rc;
	for (size_t i = 0; i < n; i++) {
		if (state[i] >= 0)
			state[i] = db_plan_result(txn, &plans[i], &outs[i], errs ? &errs[i] : NULL);
		if (state[i] < 0 && first_rc == 0)
			first_rc = state[i];
	}
	for (size_t i = 0; i < n; i++)
		db_plan_free(&plans[i]);
	cache_free(&cache);
	storage_txn_abort(txn);
	pthread_rwlock_unlock(&db->lock);
	free(plans);
	free(state);
	return first_rc;
}
