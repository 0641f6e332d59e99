/* Partition layouts (docs/partitions.md §2-§4): learned from a vector
 * field's workload log (db/workload.c) -- the logged atoms become the
 * qd-tree's cut candidates (index/qdtree.c), each leaf is clustered
 * (index/partitions.c) -- and the batch's "partitions" plan over them
 * (HQI, reference/hybrid-queries.md §1.3-§1.4). */
#include <stdlib.h>
#include <string.h>

#include "db/search_int.h"

/* Most frequent atoms tried as cuts by default. */
#define DB_LAYOUT_CUTS_DEFAULT 256u
#define DB_LAYOUT_CUTS_MIN 1u
#define DB_LAYOUT_CUTS_MAX 4096u

struct db_layout {
	qdtree_t *tree;
	part_layout_t *part;
	uint64_t flat_uid, generation; /* the rows it copied */
	part_search_opts_t so;
	uint64_t workload_hash, build_ns;
};

void db_layout_free(db_layout_t *l)
{
	if (l == NULL)
		return;
	qdtree_free(l->tree);
	part_free(l->part);
	free(l);
}

/* Is the layout a copy of the field's rows as they are now? */
static bool layout_fresh(const db_layout_t *l, const db_field_t *f)
{
	index_rows_t r;
	flat_rows(f->flat, &r);
	return l && r.uid == l->flat_uid && r.generation == l->generation;
}

/* ------------------------------------------------------------ atoms of the log */

/* One distinct atom of the log: its bytes (into a log key), weight, and the
 * qd-tree's form. */
typedef struct latom {
	const uint8_t *b;
	size_t len;
	uint64_t h;
	double weight;
	uint32_t idx;
} latom_t;

typedef struct lbuild {
	latom_t *tab; /* open addressing over the distinct atoms */
	size_t cap;
	latom_t **list; /* distinct atoms in first-seen order */
	uint32_t n;
	uint32_t *qatoms; /* atoms of every query, concatenated */
	size_t nqa;
	qdtree_query_t *qs;
	uint32_t nq;
} lbuild_t;

static void lbuild_free(lbuild_t *b)
{
	free(b->tab);
	free(b->list);
	free(b->qatoms);
	free(b->qs);
}

static latom_t *atom_intern(lbuild_t *b, const uint8_t *p, size_t len, double w)
{
	uint64_t h = vela_hash64(p, len);
	size_t i = h & (b->cap - 1);
	while (b->tab[i].b && !(b->tab[i].h == h && b->tab[i].len == len &&
				!memcmp(b->tab[i].b, p, len)))
		i = (i + 1) & (b->cap - 1);
	latom_t *a = &b->tab[i];
	if (a->b == NULL) {
		*a = (latom_t){.b = p, .len = len, .h = h, .idx = b->n};
		b->list[b->n++] = a;
	}
	a->weight += w;
	return a;
}

/* Parse the log's keys (db_workload_key) into atoms and queries. The keys
 * stay owned by `ents`. */
static int log_parse(const db_wl_ent_t *ents, size_t n, lbuild_t *b)
{
	size_t atoms = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t na;
		memcpy(&na, ents[i].key, 4);
		atoms += na;
	}
	b->cap = 64;
	while (b->cap < 2 * atoms + 2)
		b->cap *= 2;
	b->tab = calloc(b->cap, sizeof(*b->tab));
	b->list = malloc((atoms + 1) * sizeof(*b->list));
	b->qatoms = malloc((atoms + 1) * sizeof(uint32_t));
	b->qs = malloc((n + 1) * sizeof(*b->qs));
	if (!b->tab || !b->list || !b->qatoms || !b->qs)
		return VELA_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		uint32_t na;
		memcpy(&na, ents[i].key, 4);
		size_t o = 4, first = b->nqa;
		for (uint32_t k = 0; k < na && o + 4 <= ents[i].klen; k++) {
			uint32_t l;
			memcpy(&l, ents[i].key + o, 4);
			if (o + 4 + l > ents[i].klen)
				return VELA_ECORRUPT;
			b->qatoms[b->nqa++] =
				atom_intern(b, ents[i].key + o + 4, l, (double)ents[i].count)->idx;
			o += 4 + l;
		}
		if (b->nqa > first) /* `*` and pure residual filters spare nothing */
			b->qs[b->nq++] = (qdtree_query_t){.n_atoms = (uint32_t)(b->nqa - first),
							  .weight = (double)ents[i].count,
							  .atoms = (const uint32_t *)(uintptr_t)first};
	}
	for (uint32_t i = 0; i < b->nq; i++) /* offsets to pointers, now that qatoms is final */
		b->qs[i].atoms = b->qatoms + (uintptr_t)b->qs[i].atoms;
	return 0;
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

/* The qd-tree form of an atom's bytes (workload.c atom_bytes). */
static void atom_form(const latom_t *la, qdtree_atom_t *a)
{
	memset(a, 0, sizeof(*a));
	a->kind = la->b[0];
	memcpy(&a->field, la->b + 1, 4);
	if (a->kind == QDTREE_ATOM_NUM) {
		memcpy(&a->lo, la->b + 5, 8);
		memcpy(&a->hi, la->b + 13, 8);
		return;
	}
	uint32_t nv;
	memcpy(&nv, la->b + 5, 4);
	size_t o = 9;
	for (uint32_t i = 0; i < nv && i < QDTREE_TAG_VALS_MAX; i++) {
		uint32_t l;
		memcpy(&l, la->b + o, 4);
		a->vals[a->n_vals++] = vela_hash64(la->b + o + 4, l);
		o += 4 + l;
	}
	qsort(a->vals, a->n_vals, sizeof(uint64_t), u64_cmp);
	uint32_t u = 0;
	for (uint32_t i = 0; i < a->n_vals; i++)
		if (u == 0 || a->vals[u - 1] != a->vals[i])
			a->vals[u++] = a->vals[i];
	a->n_vals = u;
}

/* Per TAG field: the postings read for the cut candidates, summed and
 * united, to tell whether a document holds at most one of its values. */
typedef struct tag_seen {
	uint32_t field;
	uint64_t sum;
	roaring_bitmap_t *u;
} tag_seen_t;

/* The documents matching atom la (a cut candidate). */
static int atom_eval(storage_txn_t *txn, const db_index_t *ix, const latom_t *la,
		     const qdtree_atom_t *a, tag_seen_t *ts, uint32_t *nts, roaring_bitmap_t *out)
{
	if (a->kind == QDTREE_ATOM_NUM)
		return a->lo <= a->hi ? db_num_read(txn, ix, a->field, a->lo, a->hi, out) : 0;
	uint32_t t = 0;
	while (t < *nts && ts[t].field != a->field)
		t++;
	if (t == *nts) {
		if ((ts[t].u = roaring_bitmap_create()) == NULL)
			return VELA_ENOMEM;
		ts[t].field = a->field;
		ts[t].sum = 0;
		(*nts)++;
	}
	uint32_t nv;
	memcpy(&nv, la->b + 5, 4);
	size_t o = 9;
	int rc = 0;
	for (uint32_t i = 0; rc == 0 && i < nv; i++) {
		uint32_t l;
		memcpy(&l, la->b + o, 4);
		roaring_bitmap_t *bm = roaring_bitmap_create();
		uint8_t key[8 + STORAGE_TERM_MAX];
		if (bm == NULL)
			return VELA_ENOMEM;
		if (l <= STORAGE_TERM_MAX) {
			size_t kl = storage_posting_key(key, ix->id, (uint16_t)a->field, SP_TAG,
							la->b + o + 4, l);
			rc = storage_posting_get(txn, key, kl, db_docids_add, bm);
		}
		ts[t].sum += roaring_bitmap_get_cardinality(bm);
		roaring_bitmap_or_inplace(ts[t].u, bm);
		roaring_bitmap_or_inplace(out, bm);
		roaring_bitmap_free(bm);
		o += 4 + l;
	}
	return rc;
}

static int weight_desc(const void *x, const void *y)
{
	const latom_t *a = *(const latom_t *const *)x, *b = *(const latom_t *const *)y;
	if (a->weight != b->weight)
		return a->weight < b->weight ? 1 : -1;
	return (a->idx > b->idx) - (a->idx < b->idx);
}

/* Atoms in qd-tree form, the bitmaps of the max_cuts heaviest. */
static int atoms_make(storage_txn_t *txn, const db_index_t *ix, lbuild_t *b, uint32_t max_cuts,
		      qdtree_atom_t *at, roaring_bitmap_t **bms)
{
	latom_t **ord = malloc((b->n + 1) * sizeof(*ord));
	tag_seen_t *ts = calloc(b->n + 1, sizeof(*ts));
	uint32_t nts = 0;
	int rc = ord && ts ? 0 : VELA_ENOMEM;
	for (uint32_t i = 0; rc == 0 && i < b->n; i++) {
		atom_form(b->list[i], &at[i]);
		ord[i] = b->list[i];
	}
	if (rc == 0)
		qsort(ord, b->n, sizeof(*ord), weight_desc);
	for (uint32_t i = 0; rc == 0 && i < b->n && i < max_cuts; i++) {
		uint32_t k = ord[i]->idx;
		if (at[k].kind == QDTREE_ATOM_NUM && at[k].field >= ix->n_fields)
			continue;
		if ((bms[k] = roaring_bitmap_create()) == NULL)
			rc = VELA_ENOMEM;
		else
			rc = atom_eval(txn, ix, ord[i], &at[k], ts, &nts, bms[k]);
	}
	for (uint32_t i = 0; rc == 0 && i < b->n; i++) { /* single-valued TAG fields */
		for (uint32_t t = 0; at[i].kind == QDTREE_ATOM_TAG && t < nts; t++)
			if (ts[t].field == at[i].field)
				at[i].single = ts[t].sum == roaring_bitmap_get_cardinality(ts[t].u);
	}
	for (uint32_t t = 0; ts && t < nts; t++)
		roaring_bitmap_free(ts[t].u);
	free(ts);
	free(ord);
	return rc;
}

/* ------------------------------------------------------------ build */

static int opts_resolve(const vela_layout_opts_t *in, qdtree_opts_t *to, part_opts_t *po,
			part_search_opts_t *so, uint32_t *max_cuts)
{
	vela_layout_opts_t o = in ? *in : (vela_layout_opts_t){0};
	qdtree_opts_default(to);
	part_opts_default(po);
	part_search_opts_default(so);
	if (o.cluster_rows)
		po->cluster_rows = o.cluster_rows;
	/* docs/partitions.md: max(10,000, 32 x the cluster size) */
	to->leaf_min = o.leaf_min ? o.leaf_min
				  : (QDTREE_LEAF_MIN_DEFAULT > 32ull * po->cluster_rows
					     ? QDTREE_LEAF_MIN_DEFAULT
					     : 32ull * po->cluster_rows);
	*max_cuts = o.max_cuts ? o.max_cuts : DB_LAYOUT_CUTS_DEFAULT;
	if (o.probe_factor < 0)
		so->probe_factor = 0;
	else if (o.probe_factor > 0)
		so->probe_factor = o.probe_factor;
	if (o.probe_min)
		so->probe_min = o.probe_min;
	if (po->cluster_rows < PART_CLUSTER_ROWS_MIN || po->cluster_rows > PART_CLUSTER_ROWS_MAX ||
	    to->leaf_min < QDTREE_LEAF_MIN_MIN || to->leaf_min > QDTREE_LEAF_MIN_MAX ||
	    *max_cuts < DB_LAYOUT_CUTS_MIN || *max_cuts > DB_LAYOUT_CUTS_MAX ||
	    so->probe_factor > PART_PROBE_FACTOR_MAX || so->probe_min > PART_PROBE_MIN_MAX)
		return VELA_EINVAL;
	return 0;
}

/* The field's position, or an error code. */
static int field_of(vela_db_t *db, const char *index, const char *field, db_index_t **ix,
		    vela_err_t *err)
{
	if (index == NULL || field == NULL || (*ix = db_index_find(db, index)) == NULL)
		return vela_err_set(err, VELA_ENOTFOUND, "%s: no such index",
				    index ? index : "(null)");
	int k = db_field_find(*ix, field, strlen(field));
	if (k < 0)
		return vela_err_set(err, VELA_ENOTFOUND, "%s: no such field", field);
	if ((*ix)->fields[k].type != VELA_FIELD_VECTOR || (*ix)->fields[k].flat == NULL)
		return vela_err_set(err, VELA_ETYPE, "%s: not a vector field", field);
	return k;
}

/* Build the layout (db->lock held shared). */
static int layout_make(vela_db_t *db, db_index_t *ix, uint32_t k, const vela_layout_opts_t *opts,
		       db_layout_t **out, vela_err_t *err)
{
	qdtree_opts_t to;
	part_opts_t po;
	part_search_opts_t so;
	uint32_t max_cuts;
	if (opts_resolve(opts, &to, &po, &so, &max_cuts))
		return vela_err_set(err, VELA_EINVAL, "layout option out of range");
	if (!flat_has_rows(ix->fields[k].flat)) /* partitions copy F32 rows (for now) */
		return vela_err_set(err, VELA_EUNSUPPORTED,
				    "%s: a compressed field keeps no F32 vectors to partition "
				    "(partitions over LVQ/LeanVec codes are not implemented yet)",
				    ix->fields[k].alias);
	uint64_t t0 = vela_now_ns();
	const db_field_t *f = &ix->fields[k];
	db_field_state_t *s = db_field_state(db, ix, k, true);
	db_wl_ent_t *ents = NULL;
	size_t n = 0;
	int rc = s ? db_workload_snapshot(s, &ents, &n) : VELA_ENOMEM;
	lbuild_t b = {0};
	if (rc == 0)
		rc = log_parse(ents, n, &b);
	qdtree_atom_t *at = rc ? NULL : malloc((b.n + 1) * sizeof(*at));
	roaring_bitmap_t **bms = rc ? NULL : calloc(b.n + 1, sizeof(*bms));
	rc = rc ? rc : at && bms ? 0 : VELA_ENOMEM;
	storage_txn_t *txn = NULL;
	if (rc == 0 && (rc = storage_txn_begin(db->env, NULL, 0, &txn)) == 0) {
		rc = atoms_make(txn, ix, &b, max_cuts, at, bms);
		storage_txn_abort(txn);
	}
	db_layout_t *l = rc ? NULL : calloc(1, sizeof(*l));
	rc = rc ? rc : l ? 0 : VELA_ENOMEM;
	if (rc == 0)
		rc = qdtree_build(flat_docids(f->flat), at, (const roaring_bitmap_t *const *)bms, b.n,
				  b.qs, b.nq, &to, &l->tree);
	const roaring_bitmap_t **leaves = NULL;
	if (rc == 0) {
		uint32_t nl = qdtree_leaf_count(l->tree);
		leaves = malloc((nl + 1) * sizeof(*leaves));
		for (uint32_t i = 0; leaves && i < nl; i++)
			leaves[i] = qdtree_leaf_docids(l->tree, i);
		rc = leaves ? part_build(f->flat, leaves, nl, &po, &l->part) : VELA_ENOMEM;
	}
	if (rc == 0) {
		index_rows_t r;
		flat_rows(f->flat, &r);
		l->flat_uid = r.uid;
		l->generation = r.generation;
		l->so = so;
		l->workload_hash = 0;
		for (size_t i = 0; i < n; i++)
			l->workload_hash ^= ents[i].h * (ents[i].count | 1);
		l->build_ns = vela_now_ns() - t0;
		*out = l;
		l = NULL;
	}
	free(leaves);
	db_layout_free(l);
	for (uint32_t i = 0; bms && i < b.n; i++)
		if (bms[i])
			roaring_bitmap_free(bms[i]);
	free(bms);
	free(at);
	lbuild_free(&b);
	db_workload_snapshot_free(ents, n);
	return rc ? vela_err_set(err, rc, "layout build failed: %s", vela_strerror(rc)) : 0;
}

int vela_layout_build(vela_db_t *db, const char *index, const char *field,
		      const vela_layout_opts_t *opts, vela_err_t *err)
{
	/* Built under the shared lock (searches go on); write_mu keeps the
	 * writers out so the rows cannot change before the swap. */
	pthread_mutex_lock(&db->write_mu);
	pthread_rwlock_rdlock(&db->lock);
	db_index_t *ix;
	int k = field_of(db, index, field, &ix, err);
	db_layout_t *l = NULL;
	int rc = k < 0 ? k : layout_make(db, ix, (uint32_t)k, opts, &l, err);
	pthread_rwlock_unlock(&db->lock);
	if (rc == 0) {
		pthread_rwlock_wrlock(&db->lock);
		db_field_state_t *s = db_field_state(db, ix, (uint32_t)k, true);
		if (s) {
			db_layout_t *old = s->layout;
			s->layout = l;
			l = old;
		} else {
			rc = vela_err_set(err, VELA_ENOMEM, "out of memory");
		}
		pthread_rwlock_unlock(&db->lock);
		db_layout_free(l);
	}
	pthread_mutex_unlock(&db->write_mu);
	return rc;
}

int vela_layout_tune(vela_db_t *db, const char *index, const char *field, float probe_factor,
		     uint32_t probe_min, vela_err_t *err)
{
	if (!(probe_factor <= PART_PROBE_FACTOR_MAX) || probe_min < PART_PROBE_MIN_MIN ||
	    probe_min > PART_PROBE_MIN_MAX)
		return vela_err_set(err, VELA_EINVAL, "probe option out of range");
	pthread_rwlock_wrlock(&db->lock);
	db_index_t *ix;
	int k = field_of(db, index, field, &ix, err);
	db_field_state_t *s = k < 0 ? NULL : db_field_state(db, ix, (uint32_t)k, false);
	int rc = k < 0 ? k : s && s->layout ? 0 : vela_err_set(err, VELA_ENOTFOUND, "no layout");
	if (rc == 0) {
		s->layout->so.probe_factor = probe_factor < 0 ? 0 : probe_factor;
		s->layout->so.probe_min = probe_min;
	}
	pthread_rwlock_unlock(&db->lock);
	return rc;
}

int vela_layout_info(vela_db_t *db, const char *index, const char *field,
		     vela_layout_info_t *out, vela_err_t *err)
{
	memset(out, 0, sizeof(*out));
	pthread_rwlock_rdlock(&db->lock);
	db_index_t *ix;
	int k = field_of(db, index, field, &ix, err);
	db_field_state_t *s = k < 0 ? NULL : db_field_state(db, ix, (uint32_t)k, false);
	if (s) {
		pthread_mutex_lock(&s->mu);
		out->workload_shapes = s->n;
		out->workload_queries = s->total;
		pthread_mutex_unlock(&s->mu);
	}
	if (s && s->layout) {
		part_stats_t st;
		part_stats(s->layout->part, &st);
		out->built = true;
		out->stale = !layout_fresh(s->layout, &ix->fields[k]);
		out->leaves = st.leaves;
		out->clusters = st.clusters;
		out->rows = st.rows;
		out->min_rows = st.min_rows;
		out->median_rows = st.median_rows;
		out->max_rows = st.max_rows;
		out->bytes = st.bytes;
		out->build_ns = s->layout->build_ns;
		out->workload_hash = s->layout->workload_hash;
	}
	pthread_rwlock_unlock(&db->lock);
	return k < 0 ? k : 0;
}

int vela_workload_record(vela_db_t *db, const char *index, const char *query, size_t query_len,
			 const vela_kv_t *params, size_t n_params, vela_err_t *err)
{
	vela_search_req_t req = {.index = index, .query = query, .query_len = query_len,
				 .params = params, .n_params = n_params};
	plan_t p;
	pthread_rwlock_rdlock(&db->lock);
	int rc = db_plan_parse(db, &req, &p, err);
	if (rc == 0 && p.knn == NULL)
		rc = vela_err_set(err, VELA_EINVAL, "the query has no KNN");
	if (rc == 0)
		db_workload_record(db, p.ix, p.q, p.knn);
	db_plan_free(&p);
	pthread_rwlock_unlock(&db->lock);
	return rc;
}

int vela_workload_save(vela_db_t *db, const char *index, const char *field, vela_err_t *err)
{
	pthread_rwlock_rdlock(&db->lock);
	db_index_t *ix;
	int k = field_of(db, index, field, &ix, err);
	db_field_state_t *s = k < 0 ? NULL : db_field_state(db, ix, (uint32_t)k, true);
	int rc = k < 0 ? k : s ? db_workload_save(db, ix, s) : VELA_ENOMEM;
	pthread_rwlock_unlock(&db->lock);
	return rc < 0 && k >= 0 ? vela_err_set(err, rc, "cannot save the workload log: %s",
					       vela_strerror(rc))
				: rc;
}

void vela_layout_release(vela_db_t *db)
{
	pthread_rwlock_wrlock(&db->lock);
	db_field_state_release(db);
	pthread_rwlock_unlock(&db->lock);
}

/* ------------------------------------------------------------ the batch plan */

/* The fresh layout of p's field, or NULL. */
static db_layout_t *plan_layout(const plan_t *p)
{
	const db_field_t *f = db_plan_field(p);
	db_field_state_t *s = db_field_state(NULL, p->ix, p->knn->field_no, false);
	return s && layout_fresh(s->layout, f) ? s->layout : NULL;
}

/* Does p take the partitions plan? Forced, or chosen: a filter wide enough
 * that probing clusters beats the exact scan of its matches, and no
 * HYBRID_POLICY or other forced plan. */
static bool plan_wants(const plan_t *p)
{
	if (p->req->force_plan == VELA_PLAN_PARTITIONS)
		return true;
	return p->req->force_plan == VELA_PLAN_AUTO && !(p->knn->set & QUERY_KNN_HYBRID_POLICY) &&
	       p->prof.filter_matches > VELA_LAYOUT_SCAN_MAX;
}

void db_layout_run(plan_t *plans, int *state, size_t n)
{
	db_layout_t **lay = calloc(n ? n : 1, sizeof(*lay));
	part_query_t *pq = malloc((n ? n : 1) * sizeof(*pq));
	size_t *which = malloc((n ? n : 1) * sizeof(size_t));
	if (lay == NULL || pq == NULL || which == NULL)
		goto out; /* the other plans answer them */
	for (size_t i = 0; i < n; i++)
		if (state[i] == 1 && plans[i].knn && plan_wants(&plans[i]))
			lay[i] = plan_layout(&plans[i]);
	for (size_t i = 0; i < n; i++) {
		if (lay[i] == NULL)
			continue;
		db_layout_t *l = lay[i];
		uint32_t m = 0;
		for (size_t j = i; j < n; j++) {
			if (lay[j] != l)
				continue;
			plan_t *p = &plans[j];
			pq[m] = (part_query_t){.q = p->qvec, .k = p->knn->k, .filter = p->filter,
					       .out = p->hits};
			which[m++] = j;
			lay[j] = NULL;
		}
		uint64_t t0 = vela_now_ns();
		int rc = part_search(l->part, pq, m, &l->so);
		uint64_t ns = (vela_now_ns() - t0) / (m ? m : 1);
		for (uint32_t j = 0; rc == 0 && j < m; j++) {
			plan_t *p = &plans[which[j]];
			p->n_hits = pq[j].n_out;
			p->choice = VELA_PLAN_PARTITIONS;
			p->how = "partitions";
			p->prof.mode = "HYBRID_PARTITIONS";
			p->prof.plan = p->how;
			p->prof.distances += pq[j].scored;
			p->prof.search_ns += ns;
			state[which[j]] = 2;
		}
	}
out:
	free(lay);
	free(pq);
	free(which);
}
