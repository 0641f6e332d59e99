/* Partition layouts (docs/partitions.md §2-§5): learned from a vector
 * field's workload log (db/workload.c) -- the logged atoms become the
 * qd-tree's cut candidates (index/qdtree.c), each leaf is clustered
 * (index/partitions.c) -- and the batch's "partitions" plan over them
 * (HQI, reference/hybrid-queries.md §1.3-§1.4). A layout lives through
 * writes (a delta answered exactly, §5), is saved beside LMDB at close and
 * loaded at the field's first use, and is rebuilt in the background when
 * its delta grows or the workload drifts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "db/search_int.h"

/* Most frequent atoms tried as cuts by default. */
#define DB_LAYOUT_CUTS_DEFAULT 256u
#define DB_LAYOUT_CUTS_MIN 1u
#define DB_LAYOUT_CUTS_MAX 4096u

/* One template signature of the log (its atoms' kinds and fields, constants
 * left out) and how many logged queries had it. */
typedef struct db_sig {
	uint64_t h;
	uint64_t count;
} db_sig_t;

struct db_layout {
	qdtree_t *tree;
	part_layout_t *part;
	uint64_t flat_uid, generation; /* the field's rows it is current with */
	part_search_opts_t so;
	vela_layout_opts_t opts;       /* resolved build options: rebuilds reuse them */
	uint64_t workload_hash, build_ns, built_at_ms, built_rows;
	/* Docids written (set or changed) since the build: their rows are out
	 * of the clusters and every partitions query scans them exactly. */
	roaring_bitmap_t *delta;
	db_sig_t *sigs; /* the log's signatures at the build, ascending by h */
	uint32_t n_sigs;
	/* The bytes (workload.c atom_bytes) of the tree's cut atoms, by tree
	 * atom index (NULL: no cut): a fold evaluates them on the postings. */
	uint8_t **cut_b;
	uint32_t *cut_len;
	uint32_t n_atoms;
	uint64_t serial; /* process-unique: a job knows its layout was replaced */
	bool loaded;     /* from its file, not built in this process */
};

static atomic_uint_fast64_t layout_serial = 1;

/* Layouts allocated in the process (installed or being built): while there
 * are none, a vector write skips the field-state lookup (a global mutex and
 * a list scan) that db_layout_apply would otherwise make on every write. */
static atomic_uint_fast64_t layouts_alive;

static db_layout_t *layout_new(void)
{
	db_layout_t *l = calloc(1, sizeof(*l));
	if (l)
		atomic_fetch_add(&layouts_alive, 1);
	return l;
}

void db_layout_free(db_layout_t *l)
{
	if (l == NULL)
		return;
	atomic_fetch_sub(&layouts_alive, 1);
	qdtree_free(l->tree);
	part_free(l->part);
	if (l->delta)
		roaring_bitmap_free(l->delta);
	free(l->sigs);
	for (uint32_t i = 0; l->cut_b && i < l->n_atoms; i++)
		free(l->cut_b[i]);
	free(l->cut_b);
	free(l->cut_len);
	free(l);
}

/* Room for the cut bytes of a tree of n atoms. */
static int cuts_alloc(db_layout_t *l, uint32_t n)
{
	l->n_atoms = n;
	l->cut_b = calloc(n ? n : 1, sizeof(*l->cut_b));
	l->cut_len = calloc(n ? n : 1, sizeof(*l->cut_len));
	return l->cut_b && l->cut_len ? 0 : VELA_ENOMEM;
}

static int cut_set(db_layout_t *l, uint32_t i, const uint8_t *b, uint32_t len)
{
	if ((l->cut_b[i] = malloc(len ? len : 1)) == NULL)
		return VELA_ENOMEM;
	memcpy(l->cut_b[i], b, len);
	l->cut_len[i] = len;
	return 0;
}

/* Is the layout current with the field's rows (every write applied)? */
static bool layout_fresh(const db_layout_t *l, const db_field_t *f)
{
	index_rows_t r;
	flat_rows(f->flat, &r);
	return l && r.uid == l->flat_uid && r.generation == l->generation;
}

static int field_row(const void *ctx, uint32_t docid, float *out)
{
	return db_vec_get(ctx, docid, out);
}

/* Where a layout reads f's vectors (db->lock held): its FLAT rows, or once
 * they are released (a compressed field) the store's decoded vectors. */
static part_source_t field_source(const db_field_t *f)
{
	return (part_source_t){.f = f->flat, .row = flat_has_rows(f->flat) ? NULL : field_row,
			       .ctx = f};
}

/* The cluster encoding a build of f takes: the option, else LVQ8 for a
 * compressed field (its clusters hold codes as its store does), FIELD
 * (its element type) for the others. */
static int encoding_of(const vela_layout_opts_t *o, const db_field_t *f, part_encoding_t *out)
{
	uint32_t e = o ? o->encoding : VELA_LAYOUT_ENCODING_DEFAULT;
	if (e > VELA_LAYOUT_ENCODING_LVQ8)
		return VELA_EINVAL;
	if (e == VELA_LAYOUT_ENCODING_DEFAULT)
		e = f->compression ? VELA_LAYOUT_ENCODING_LVQ8 : VELA_LAYOUT_ENCODING_FIELD;
	*out = e == VELA_LAYOUT_ENCODING_LVQ8 ? PART_ENC_LVQ8 : PART_ENC_FIELD;
	return 0;
}

uint64_t db_layout_gen(const db_field_t *f)
{
	index_rows_t r;
	if (f->flat == NULL)
		return 0;
	flat_rows(f->flat, &r);
	return r.generation;
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
		return a->lo <= a->hi ? db_num_filter(txn, ix, a->field, a->lo, a->hi, out) : 0;
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

/* ------------------------------------------------------------ signatures */

/* The template signature of a log key (db_workload_key): the kinds and
 * fields of its atoms, constants left out. */
static uint64_t sig_of_key(const uint8_t *key, size_t klen)
{
	uint8_t sig[5 * QUERY_ATOMS_LOGGED_MAX + 1];
	size_t n = 0, o = 4;
	uint32_t na = 0;
	if (klen >= 4)
		memcpy(&na, key, 4);
	for (uint32_t i = 0; i < na && o + 4 <= klen && n + 5 <= sizeof(sig); i++) {
		uint32_t l;
		memcpy(&l, key + o, 4);
		if (l < 5 || o + 4 + l > klen)
			break;
		memcpy(sig + n, key + o + 4, 5); /* kind, field */
		n += 5;
		o += 4 + l;
	}
	return vela_hash64(sig, n);
}

static int sig_cmp(const void *a, const void *b)
{
	uint64_t x = ((const db_sig_t *)a)->h, y = ((const db_sig_t *)b)->h;
	return (x > y) - (x < y);
}

/* Sort v[0..n) by h and sum equal ones: the distinct count. */
static uint32_t sigs_merge(db_sig_t *v, size_t n)
{
	qsort(v, n, sizeof(*v), sig_cmp);
	uint32_t u = 0;
	for (size_t i = 0; i < n; i++) {
		if (u && v[u - 1].h == v[i].h)
			v[u - 1].count += v[i].count;
		else
			v[u++] = v[i];
	}
	return u;
}

/* The signatures of a log snapshot. */
static int sigs_of_ents(const db_wl_ent_t *e, size_t n, db_sig_t **out, uint32_t *nout)
{
	db_sig_t *v = malloc((n ? n : 1) * sizeof(*v));
	if (v == NULL)
		return VELA_ENOMEM;
	for (size_t i = 0; i < n; i++)
		v[i] = (db_sig_t){sig_of_key(e[i].key, e[i].klen), e[i].count};
	*nout = sigs_merge(v, n);
	*out = v;
	return 0;
}

/* The signatures of s's log now (takes s->mu). */
static int sigs_of_state(db_field_state_t *s, db_sig_t **out, uint32_t *nout)
{
	pthread_mutex_lock(&s->mu);
	db_sig_t *v = malloc((s->n ? s->n : 1) * sizeof(*v));
	size_t m = 0;
	for (size_t i = 0; v && i < s->cap; i++)
		if (s->ents[i].key)
			v[m++] = (db_sig_t){sig_of_key(s->ents[i].key, s->ents[i].klen),
					    s->ents[i].count};
	pthread_mutex_unlock(&s->mu);
	if (v == NULL)
		return VELA_ENOMEM;
	*nout = sigs_merge(v, m);
	*out = v;
	return 0;
}

/*
 * Drift (docs/partitions.md §5): the total variation distance between the
 * signature distribution of the queries logged since the build (now minus
 * then, per signature) and the one the layout was built from. Signatures,
 * not whole shapes: the constants of a template vary from query to query,
 * so two samples of one workload share few shapes but the same templates.
 * -1 while fewer than DB_LAYOUT_DRIFT_MIN_QUERIES, or fewer than half the
 * queries it was built from, were logged since.
 */
static double drift_of(const db_layout_t *l, const db_sig_t *now, uint32_t n)
{
	double tb = 0, tr = 0, d = 0;
	for (uint32_t i = 0; i < l->n_sigs; i++)
		tb += (double)l->sigs[i].count;
	uint32_t j = 0;
	for (uint32_t i = 0; i < n; i++) { /* the recent counts */
		while (j < l->n_sigs && l->sigs[j].h < now[i].h)
			j++;
		uint64_t then = j < l->n_sigs && l->sigs[j].h == now[i].h ? l->sigs[j].count : 0;
		tr += now[i].count > then ? (double)(now[i].count - then) : 0;
	}
	/* judged on at least half as many queries as the layout was built
	 * from: a lasting shift rebuilds after 1/2, 3/4, ... of the log, not
	 * every DB_LAYOUT_DRIFT_MIN_QUERIES */
	if (tr < DB_LAYOUT_DRIFT_MIN_QUERIES || tr < tb / 2 || tb <= 0)
		return -1;
	/* 0.5 sum |p - q| over the union: walk both sorted lists */
	uint32_t a = 0, b = 0;
	while (a < l->n_sigs || b < n) {
		double p = 0, q = 0;
		if (b == n || (a < l->n_sigs && l->sigs[a].h < now[b].h)) {
			p = (double)l->sigs[a++].count / tb;
		} else if (a == l->n_sigs || now[b].h < l->sigs[a].h) {
			q = (double)now[b++].count / tr;
		} else {
			uint64_t then = l->sigs[a].count;
			p = (double)then / tb;
			q = now[b].count > then ? (double)(now[b].count - then) / tr : 0;
			a++;
			b++;
		}
		d += p > q ? p - q : q - p;
	}
	return d / 2;
}

/* ------------------------------------------------------------ build */

/* The probing of the public options: probe_factor > 0 the fixed rule,
 * < 0 (or recall < 0) exact, else the calibrated rule at recall (0: the
 * default). */
static int so_resolve(const vela_layout_opts_t *o, part_search_opts_t *so)
{
	part_search_opts_default(so);
	so->probe_factor = o->probe_factor > 0 ? o->probe_factor : 0;
	if (o->probe_factor < 0 || o->recall < 0)
		so->recall = 0;
	else if (o->recall > 0)
		so->recall = o->recall;
	if (o->probe_min)
		so->probe_min = o->probe_min;
	if (!(o->probe_factor == o->probe_factor) || !(o->recall == o->recall) ||
	    (so->recall != 0 && (so->recall < PART_RECALL_MIN || so->recall > PART_RECALL_MAX)) ||
	    so->probe_factor > PART_PROBE_FACTOR_MAX || so->probe_min < PART_PROBE_MIN_MIN ||
	    so->probe_min > PART_PROBE_MIN_MAX)
		return VELA_EINVAL;
	return 0;
}

/* so_resolve's inverse, for FT.LAYOUT INFO and the file (-1: exact). */
static void so_public(const part_search_opts_t *so, float *probe_factor, float *recall)
{
	bool exact = so->probe_factor == 0 && so->recall == 0;
	*probe_factor = exact ? -1.0f : so->probe_factor;
	*recall = exact ? -1.0f : so->recall;
}

static int opts_resolve(const vela_layout_opts_t *in, qdtree_opts_t *to, part_opts_t *po,
			part_search_opts_t *so, uint32_t *max_cuts)
{
	vela_layout_opts_t o = in ? *in : (vela_layout_opts_t){0};
	qdtree_opts_default(to);
	part_opts_default(po);
	if (so_resolve(&o, so))
		return VELA_EINVAL;
	if (o.cluster_rows)
		po->cluster_rows = o.cluster_rows;
	/* docs/partitions.md: max(10,000, 32 x the cluster size) */
	to->leaf_min = o.leaf_min ? o.leaf_min
				  : (QDTREE_LEAF_MIN_DEFAULT > 32ull * po->cluster_rows
					     ? QDTREE_LEAF_MIN_DEFAULT
					     : 32ull * po->cluster_rows);
	*max_cuts = o.max_cuts ? o.max_cuts : DB_LAYOUT_CUTS_DEFAULT;
	if (po->cluster_rows < PART_CLUSTER_ROWS_MIN ||
	    po->cluster_rows > PART_CLUSTER_ROWS_MAX || to->leaf_min < QDTREE_LEAF_MIN_MIN ||
	    to->leaf_min > QDTREE_LEAF_MIN_MAX || *max_cuts < DB_LAYOUT_CUTS_MIN ||
	    *max_cuts > DB_LAYOUT_CUTS_MAX)
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

/* What a build reads with db->lock held: the options, a copy of the log,
 * its atoms and the cut candidates' docids. */
typedef struct lprep {
	qdtree_opts_t to;
	part_opts_t po;
	part_search_opts_t so;
	uint32_t max_cuts;
	db_wl_ent_t *ents;
	size_t n;
	lbuild_t b;
	qdtree_atom_t *at;
	roaring_bitmap_t **bms;
	uint64_t t0;
} lprep_t;

static void lprep_free(lprep_t *p)
{
	for (uint32_t i = 0; p->bms && i < p->b.n; i++)
		if (p->bms[i])
			roaring_bitmap_free(p->bms[i]);
	free(p->bms);
	free(p->at);
	lbuild_free(&p->b);
	db_workload_snapshot_free(p->ents, p->n);
	memset(p, 0, sizeof(*p));
}

/* Read the log and the cut bitmaps (db->lock held). */
static int lprep_make(vela_db_t *db, db_index_t *ix, uint32_t k, const vela_layout_opts_t *opts,
		      lprep_t *p, vela_err_t *err)
{
	memset(p, 0, sizeof(*p));
	if (opts_resolve(opts, &p->to, &p->po, &p->so, &p->max_cuts) ||
	    encoding_of(opts, &ix->fields[k], &p->po.encoding))
		return vela_err_set(err, VELA_EINVAL, "layout option out of range");
	p->t0 = vela_now_ns();
	db_field_state_t *s = db_field_state(db, ix, k, true);
	int rc = s ? db_workload_snapshot(s, &p->ents, &p->n) : VELA_ENOMEM;
	if (rc == 0)
		rc = log_parse(p->ents, p->n, &p->b);
	p->at = rc ? NULL : malloc((p->b.n + 1) * sizeof(*p->at));
	p->bms = rc ? NULL : calloc(p->b.n + 1, sizeof(*p->bms));
	rc = rc ? rc : p->at && p->bms ? 0 : VELA_ENOMEM;
	storage_txn_t *txn = NULL;
	if (rc == 0 && (rc = storage_txn_begin(db->env, NULL, 0, &txn)) == 0) {
		rc = atoms_make(txn, ix, &p->b, p->max_cuts, p->at, p->bms);
		storage_txn_abort(txn);
	}
	if (rc) {
		lprep_free(p);
		return vela_err_set(err, rc, "layout build failed: %s", vela_strerror(rc));
	}
	return 0;
}

/* Tree and clusters over src's rows (no db state read: runs without
 * the lock on a private copy in the background). */
static int layout_compute(const lprep_t *p, const part_source_t *src, db_layout_t **out)
{
	const flat_index_t *flat = src->f;
	db_layout_t *l = layout_new();
	int rc = l ? 0 : VELA_ENOMEM;
	if (rc == 0 && (l->delta = roaring_bitmap_create()) == NULL)
		rc = VELA_ENOMEM;
	if (rc == 0)
		rc = qdtree_build(flat_docids(flat), p->at, (const roaring_bitmap_t *const *)p->bms,
				  p->b.n, p->b.qs, p->b.nq, &p->to, &l->tree);
	const roaring_bitmap_t **leaves = NULL;
	if (rc == 0) {
		uint32_t nl = qdtree_leaf_count(l->tree);
		leaves = malloc((nl + 1) * sizeof(*leaves));
		for (uint32_t i = 0; leaves && i < nl; i++)
			leaves[i] = qdtree_leaf_docids(l->tree, i);
		rc = leaves ? part_build(src, leaves, nl, &p->po, &l->part) : VELA_ENOMEM;
	}
	if (rc == 0) /* the calibrated probing rule's measurements */
		rc = part_calibrate(l->part, PART_CAL_QUERIES_DEFAULT);
	free(leaves);
	if (rc == 0)
		rc = sigs_of_ents(p->ents, p->n, &l->sigs, &l->n_sigs);
	if (rc == 0)
		rc = cuts_alloc(l, p->b.n);
	for (uint32_t i = 0; rc == 0 && i < qdtree_node_count(l->tree); i++) {
		const qdtree_node_t *nd = qdtree_node(l->tree, i);
		if (nd->leaf < 0 && l->cut_b[nd->cut] == NULL)
			rc = cut_set(l, (uint32_t)nd->cut, p->b.list[nd->cut]->b,
				     (uint32_t)p->b.list[nd->cut]->len);
	}
	if (rc) {
		db_layout_free(l);
		return rc;
	}
	l->serial = atomic_fetch_add(&layout_serial, 1);
	l->so = p->so;
	l->opts = (vela_layout_opts_t){.leaf_min = p->to.leaf_min,
				       .cluster_rows = p->po.cluster_rows,
				       .max_cuts = p->max_cuts,
				       .probe_min = p->so.probe_min,
				       .encoding = p->po.encoding == PART_ENC_LVQ8
							   ? VELA_LAYOUT_ENCODING_LVQ8
							   : VELA_LAYOUT_ENCODING_FIELD};
	so_public(&p->so, &l->opts.probe_factor, &l->opts.recall);
	for (size_t i = 0; i < p->n; i++)
		l->workload_hash ^= p->ents[i].h * (p->ents[i].count | 1);
	l->built_rows = flat_count(flat);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	l->built_at_ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
	l->build_ns = vela_now_ns() - p->t0;
	*out = l;
	return 0;
}

/* Build the layout over the field's own rows (db->lock held shared,
 * write_mu held: the rows cannot change). */
static int layout_make(vela_db_t *db, db_index_t *ix, uint32_t k, const vela_layout_opts_t *opts,
		       db_layout_t **out, vela_err_t *err)
{
	lprep_t p;
	int rc = lprep_make(db, ix, k, opts, &p, err);
	if (rc)
		return rc;
	part_source_t src = field_source(&ix->fields[k]);
	rc = layout_compute(&p, &src, out);
	lprep_free(&p);
	if (rc)
		return vela_err_set(err, rc, "layout build failed: %s", vela_strerror(rc));
	index_rows_t r;
	flat_rows(ix->fields[k].flat, &r);
	(*out)->flat_uid = r.uid;
	(*out)->generation = r.generation;
	return 0;
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

int vela_layout_drop(vela_db_t *db, const char *index, const char *field, vela_err_t *err)
{
	pthread_mutex_lock(&db->write_mu);
	pthread_rwlock_wrlock(&db->lock);
	db_index_t *ix;
	int k = field_of(db, index, field, &ix, err);
	db_field_state_t *s = k < 0 ? NULL : db_field_state(db, ix, (uint32_t)k, true);
	db_layout_t *l = NULL;
	int rc = k < 0 ? k : s && s->layout ? 0 : vela_err_set(err, VELA_ENOTFOUND, "%s: no layout", field);
	if (rc == 0) {
		l = s->layout;
		s->layout = NULL; /* a rebuild in flight finds none and discards its result */
		db_layout_file_remove(db, ix, (uint32_t)k);
	}
	pthread_rwlock_unlock(&db->lock);
	pthread_mutex_unlock(&db->write_mu);
	db_layout_free(l);
	return rc;
}

int vela_layout_tune(vela_db_t *db, const char *index, const char *field, float probe_factor,
		     uint32_t probe_min, float recall, vela_err_t *err)
{
	vela_layout_opts_t o = {.probe_factor = probe_factor, .probe_min = probe_min,
				.recall = recall};
	part_search_opts_t so;
	if (probe_min == 0 || so_resolve(&o, &so))
		return vela_err_set(err, VELA_EINVAL, "probe option out of range");
	pthread_rwlock_wrlock(&db->lock);
	db_index_t *ix;
	int k = field_of(db, index, field, &ix, err);
	db_field_state_t *s = k < 0 ? NULL : db_field_state(db, ix, (uint32_t)k, true);
	int rc = k < 0 ? k : s && s->layout ? 0 : vela_err_set(err, VELA_ENOTFOUND, "no layout");
	if (rc == 0) {
		s->layout->so = so;
		so_public(&so, &s->layout->opts.probe_factor, &s->layout->opts.recall);
		s->layout->opts.probe_min = probe_min;
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
	/* created here so that a saved layout is loaded and shown */
	db_field_state_t *s = k < 0 ? NULL : db_field_state(db, ix, (uint32_t)k, true);
	if (s) {
		pthread_mutex_lock(&s->mu);
		out->workload_shapes = s->n;
		out->workload_queries = s->total;
		out->drift = s->layout_drift;
		pthread_mutex_unlock(&s->mu);
		out->rebuilds = s->layout_rebuilds;
		out->folds = s->layout_folds;
		out->rebuild_pending = atomic_load(&s->layout_job);
	}
	if (s && s->layout) {
		const db_layout_t *l = s->layout;
		part_stats_t st;
		part_stats(l->part, &st);
		out->built = true;
		out->stale = !layout_fresh(l, &ix->fields[k]);
		out->leaves = st.leaves;
		out->clusters = st.clusters;
		out->rows = st.rows;
		out->min_rows = st.min_rows;
		out->median_rows = st.median_rows;
		out->max_rows = st.max_rows;
		out->bytes = st.bytes + roaring_bitmap_size_in_bytes(l->delta);
		out->build_ns = l->build_ns;
		out->workload_hash = l->workload_hash;
		out->delta = roaring_bitmap_get_cardinality(l->delta);
		out->built_at_ms = l->built_at_ms;
		out->loaded = l->loaded;
		so_public(&l->so, &out->probe_factor, &out->recall);
		out->probe_min = l->so.probe_min;
		out->encoding = st.encoding == PART_ENC_LVQ8 ? VELA_LAYOUT_ENCODING_LVQ8
							     : VELA_LAYOUT_ENCODING_FIELD;
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

/* ------------------------------------------------------------ writes, rebuilds */

/* What a layout job does (field state's layout_want). */
#define LAYOUT_WANT_FOLD 1u
#define LAYOUT_WANT_REBUILD 2u

/* Queue a background job on s's layout (once; none without a builder). */
static void job_queue(vela_db_t *db, const db_index_t *ix, uint32_t k, db_field_state_t *s,
		      unsigned want, const char *why)
{
	if (db->builder == NULL)
		return;
	atomic_fetch_or(&s->layout_want, want);
	if (atomic_exchange(&s->layout_job, true))
		return;
	if (db_layout_submit(db, ix, k)) {
		atomic_store(&s->layout_job, false);
		return;
	}
	vela_info("index '%s' field '%s': layout %s queued (%s)", ix->name, ix->fields[k].alias,
		  want & LAYOUT_WANT_REBUILD ? "rebuild" : "fold", why);
}

void db_layout_apply(vela_db_t *db, const db_index_t *ix, uint32_t k, uint32_t docid, bool set,
		     uint64_t gen_before)
{
	if (atomic_load(&layouts_alive) == 0) /* the common case: no layout at all */
		return;
	db_field_t *f = &ix->fields[k];
	db_field_state_t *s = db_field_state(db, ix, k, false);
	if (s == NULL)
		return;
	if (s->layout_dirty) /* a job is reading: it skips or replays this docid at install */
		roaring_bitmap_add(s->layout_dirty, docid);
	db_layout_t *l = s->layout;
	index_rows_t r;
	flat_rows(f->flat, &r);
	/* Only a layout current before this write follows it (one that missed
	 * a write stays stale, unused, until rebuilt); nothing changed: nothing to do. */
	if (l == NULL || r.uid != l->flat_uid || l->generation != gen_before ||
	    r.generation == gen_before)
		return;
	if (r.generation != gen_before + 1)
		return; /* not one flat_set / flat_remove: leave it stale */
	int rc = part_remove(l->part, docid);
	if (rc != 0 && rc != VELA_ENOTFOUND)
		return;
	if (set && roaring_bitmap_contains(flat_docids(f->flat), docid))
		roaring_bitmap_add(l->delta, docid);
	else
		roaring_bitmap_remove(l->delta, docid);
	l->generation = r.generation;
	uint64_t d = roaring_bitmap_get_cardinality(l->delta);
	if (d >= DB_LAYOUT_DELTA_MIN && (double)d > DB_LAYOUT_DELTA_FRAC * (double)l->built_rows)
		job_queue(db, ix, k, s, LAYOUT_WANT_FOLD, "its delta passed the fraction of rows");
}

void db_layout_drift_check(vela_db_t *db, const db_index_t *ix, uint32_t k, db_field_state_t *s)
{
	if (s->layout == NULL || atomic_load(&s->layout_job))
		return;
	db_sig_t *now;
	uint32_t n;
	if (sigs_of_state(s, &now, &n))
		return;
	double d = drift_of(s->layout, now, n);
	free(now);
	pthread_mutex_lock(&s->mu);
	s->layout_drift = d;
	pthread_mutex_unlock(&s->mu);
	if (d > DB_LAYOUT_DRIFT_TVD)
		job_queue(db, ix, k, s, LAYOUT_WANT_REBUILD, "the workload drifted");
}

/* The field a job names, by index id and flat uid (NULL: dropped). */
static db_index_t *job_index(vela_db_t *db, uint32_t ix_id, uint32_t k, uint64_t uid)
{
	for (size_t i = 0; i < db->n_indexes; i++) {
		db_index_t *ix = db->indexes[i];
		if (ix->id == ix_id && k < ix->n_fields && ix->fields[k].flat &&
		    db_field_uid(&ix->fields[k]) == uid)
			return ix;
	}
	return NULL;
}

/* A private copy of fd's rows (the build reads it without the lock): a
 * compressed field's are its store's decoded vectors, held as F32 for the
 * rebuild only (the clusters built from them keep LVQ-8 codes). */
static int flat_copy(const db_field_t *fd, flat_index_t **out)
{
	const flat_index_t *f = fd->flat;
	int rc = flat_create(flat_dim(f), flat_metric(f), flat_type(f), out);
	float *v = rc ? NULL : malloc(flat_dim(f) * sizeof(float));
	rc = rc ? rc : v ? 0 : VELA_ENOMEM;
	roaring_uint32_iterator_t it;
	roaring_init_iterator(flat_docids(f), &it);
	for (; rc == 0 && it.has_value; roaring_advance_uint32_iterator(&it))
		if ((rc = db_vec_get(fd, it.current_value, v)) == 0)
			rc = flat_set(*out, it.current_value, v);
	free(v);
	if (rc && *out) {
		flat_destroy(*out);
		*out = NULL;
	}
	return rc;
}

/* Is a cut atom's bytes well formed for tree atom a (workload.c
 * atom_bytes: kind, field, then the range or the values)? */
static bool cut_ok(const uint8_t *b, uint32_t len, const qdtree_atom_t *a)
{
	uint32_t field, nv;
	if (len < 5 || b[0] != a->kind)
		return false;
	memcpy(&field, b + 1, 4);
	if (field != a->field)
		return false;
	if (a->kind == QDTREE_ATOM_NUM)
		return len == 21;
	if (len < 9)
		return false;
	memcpy(&nv, b + 5, 4);
	size_t o = 9;
	for (uint32_t i = 0; i < nv; i++) {
		uint32_t l;
		if (o + 4 > len)
			return false;
		memcpy(&l, b + o, 4);
		if (l > len - o - 4)
			return false;
		o += 4 + l;
	}
	return o == len;
}

/* The tree leaf of docid d, taking each cut by its bitmap (bms[c] NULL:
 * d is not in it). */
static uint32_t route_doc(const qdtree_t *t, roaring_bitmap_t *const *bms, uint32_t d)
{
	const qdtree_node_t *nd = qdtree_node(t, 0);
	while (nd->leaf < 0) {
		bool in = bms[nd->cut] && roaring_bitmap_contains(bms[nd->cut], d);
		nd = qdtree_node(t, in ? nd->left : nd->right);
	}
	return (uint32_t)nd->leaf;
}

/* The fold's reading half (db->lock shared): route every delta docid D to
 * its leaf by the cuts' postings (the qd-tree routing of one document, in
 * a batch) and to that leaf's nearest centroid. */
static int fold_plan(vela_db_t *db, const db_index_t *ix, const db_layout_t *l,
		     const db_field_t *f, const roaring_bitmap_t *D, uint32_t *ids, uint32_t *cl,
		     size_t *n)
{
	roaring_bitmap_t **bms = calloc(l->n_atoms ? l->n_atoms : 1, sizeof(*bms));
	tag_seen_t *ts = calloc(l->n_atoms + 1, sizeof(*ts));
	uint32_t nts = 0;
	storage_txn_t *txn = NULL;
	int rc = bms && ts ? storage_txn_begin(db->env, NULL, 0, &txn) : VELA_ENOMEM;
	for (uint32_t c = 0; rc == 0 && c < l->n_atoms; c++) {
		const qdtree_atom_t *a = qdtree_atom(l->tree, c);
		if (l->cut_b[c] == NULL || (a->kind == QDTREE_ATOM_NUM && a->field >= ix->n_fields))
			continue;
		latom_t la = {.b = l->cut_b[c], .len = l->cut_len[c]};
		if ((bms[c] = roaring_bitmap_create()) == NULL)
			rc = VELA_ENOMEM;
		else if ((rc = atom_eval(txn, ix, &la, a, ts, &nts, bms[c])) == 0)
			roaring_bitmap_and_inplace(bms[c], D);
	}
	if (txn)
		storage_txn_abort(txn);
	uint32_t *leaf = rc ? NULL : malloc((roaring_bitmap_get_cardinality(D) + 1) * 4);
	rc = rc ? rc : leaf ? 0 : VELA_ENOMEM;
	*n = 0;
	roaring_uint32_iterator_t it;
	roaring_init_iterator(D, &it);
	for (; rc == 0 && it.has_value; roaring_advance_uint32_iterator(&it)) {
		uint32_t lf = route_doc(l->tree, bms, it.current_value);
		/* a leaf left without clusters keeps its documents in the delta */
		if (part_leaf_clusters(l->part, lf)) {
			ids[*n] = it.current_value;
			leaf[(*n)++] = lf;
		}
	}
	part_source_t src = field_source(f);
	if (rc == 0)
		rc = part_assign(l->part, &src, ids, leaf, *n, cl);
	free(leaf);
	for (uint32_t c = 0; bms && c < l->n_atoms; c++)
		if (bms[c])
			roaring_bitmap_free(bms[c]);
	for (uint32_t t = 0; ts && t < nts; t++)
		roaring_bitmap_free(ts[t].u);
	free(bms);
	free(ts);
	return rc;
}

/*
 * Fold the delta back into the clusters (docs/partitions.md §5): read and
 * route with the shared lock, then insert with write_mu and the exclusive
 * lock every docid still in the delta and not written meanwhile (its row
 * is the one routed). *over: clusters grown past twice their size.
 */
static int layout_fold(vela_db_t *db, uint32_t ix_id, uint32_t k, uint64_t uid, uint32_t *over)
{
	*over = 0;
	pthread_rwlock_rdlock(&db->lock);
	db_index_t *ix = job_index(db, ix_id, k, uid);
	db_field_state_t *s = ix ? db_field_state(db, ix, k, false) : NULL;
	db_layout_t *l = s ? s->layout : NULL;
	uint64_t serial = l ? l->serial : 0;
	roaring_bitmap_t *D = l && layout_fresh(l, &ix->fields[k]) ? roaring_bitmap_copy(l->delta)
								  : NULL;
	uint64_t nd = D ? roaring_bitmap_get_cardinality(D) : 0;
	uint32_t *ids = nd ? malloc(nd * 4) : NULL, *cl = nd ? malloc(nd * 4) : NULL;
	size_t n = 0;
	int rc = l == NULL ? VELA_ENOTFOUND : D == NULL ? 0 : nd == 0 || (ids && cl) ? 0 : VELA_ENOMEM;
	if (rc == 0 && nd && (s->layout_dirty = roaring_bitmap_create()) == NULL)
		rc = VELA_ENOMEM;
	if (rc == 0 && nd)
		rc = fold_plan(db, ix, l, &ix->fields[k], D, ids, cl, &n);
	pthread_rwlock_unlock(&db->lock);

	pthread_mutex_lock(&db->write_mu);
	pthread_rwlock_wrlock(&db->lock);
	ix = job_index(db, ix_id, k, uid);
	s = ix ? db_field_state(db, ix, k, false) : NULL;
	l = s ? s->layout : NULL;
	size_t folded = 0;
	if (rc == 0 && l && l->serial == serial && s->layout_dirty) {
		part_source_t src = field_source(&ix->fields[k]);
		for (size_t i = 0; rc == 0 && i < n; i++) {
			if (roaring_bitmap_contains(s->layout_dirty, ids[i]) ||
			    !roaring_bitmap_contains(l->delta, ids[i]))
				continue; /* written or deleted since it was routed */
			if ((rc = part_insert(l->part, &src, cl[i], ids[i])) == 0) {
				roaring_bitmap_remove(l->delta, ids[i]);
				folded++;
			}
		}
		s->layout_folds++;
	}
	if (l && l->serial == serial)
		*over = part_clusters_over(l->part, l->opts.cluster_rows);
	if (s && s->layout_dirty) {
		roaring_bitmap_free(s->layout_dirty);
		s->layout_dirty = NULL;
	}
	pthread_rwlock_unlock(&db->lock);
	pthread_mutex_unlock(&db->write_mu);
	if (folded)
		vela_info("index id %u field %u: %zu written vectors folded into the layout", ix_id, k,
			  folded);
	if (D)
		roaring_bitmap_free(D);
	free(ids);
	free(cl);
	return rc;
}

/* The rebuild: copy (shared lock), build (no lock), install. */
static int layout_rebuild(vela_db_t *db, uint32_t ix_id, uint32_t k, uint64_t uid)
{
	/* 1. the log, the cut bitmaps and a copy of the rows (shared lock) */
	pthread_rwlock_rdlock(&db->lock);
	db_index_t *ix = job_index(db, ix_id, k, uid);
	db_field_state_t *s = ix ? db_field_state(db, ix, k, false) : NULL;
	lprep_t p;
	flat_index_t *copy = NULL;
	int rc = s && s->layout ? lprep_make(db, ix, k, &s->layout->opts, &p, NULL) : VELA_ENOTFOUND;
	if (rc == 0 && (rc = flat_copy(&ix->fields[k], &copy)) != 0)
		lprep_free(&p);
	if (rc == 0 && (s->layout_dirty = roaring_bitmap_create()) == NULL) {
		rc = VELA_ENOMEM;
		lprep_free(&p);
	}
	pthread_rwlock_unlock(&db->lock);
	/* 2. the build, holding no lock */
	db_layout_t *l = NULL;
	if (rc == 0) {
		rc = layout_compute(&p, &(part_source_t){.f = copy}, &l);
		lprep_free(&p);
	}
	flat_destroy(copy);
	/* 3. install (write_mu, then the exclusive lock): the docids written
	 * since the copy leave the clusters for the delta, as db_layout_apply does */
	pthread_mutex_lock(&db->write_mu);
	pthread_rwlock_wrlock(&db->lock);
	ix = job_index(db, ix_id, k, uid);
	s = ix ? db_field_state(db, ix, k, false) : NULL;
	if (s && rc == 0 && s->layout && s->layout_dirty) {
		const flat_index_t *f = ix->fields[k].flat;
		roaring_uint32_iterator_t it;
		roaring_init_iterator(s->layout_dirty, &it);
		for (; rc == 0 && it.has_value; roaring_advance_uint32_iterator(&it)) {
			uint32_t id = it.current_value;
			int r2 = part_remove(l->part, id);
			rc = r2 == VELA_ENOTFOUND ? 0 : r2;
			if (roaring_bitmap_contains(flat_docids(f), id))
				roaring_bitmap_add(l->delta, id);
		}
		if (rc == 0) {
			index_rows_t r;
			flat_rows(f, &r);
			l->flat_uid = r.uid;
			l->generation = r.generation;
			l->so = s->layout->so; /* keep the probing tuned meanwhile */
			db_layout_t *old = s->layout;
			s->layout = l;
			l = old;
			s->layout_rebuilds++;
		}
	} else if (rc == 0) {
		rc = VELA_ENOTFOUND; /* dropped meanwhile (index, field or layout) */
	}
	if (s && s->layout_dirty) {
		roaring_bitmap_free(s->layout_dirty);
		s->layout_dirty = NULL;
	}
	pthread_rwlock_unlock(&db->lock);
	pthread_mutex_unlock(&db->write_mu);
	db_layout_free(l);
	return rc;
}

void db_layout_job_run(vela_db_t *db, uint32_t ix_id, uint32_t k, uint64_t uid)
{
	pthread_rwlock_rdlock(&db->lock);
	db_index_t *ix = job_index(db, ix_id, k, uid);
	db_field_state_t *s = ix ? db_field_state(db, ix, k, false) : NULL;
	unsigned want = s ? atomic_exchange(&s->layout_want, 0u) : 0;
	pthread_rwlock_unlock(&db->lock);
	int rc = 0;
	uint32_t over = 0;
	if (s == NULL)
		return; /* dropped meanwhile: its state went with it */
	if (!(want & LAYOUT_WANT_REBUILD))
		rc = layout_fold(db, ix_id, k, uid, &over);
	if (rc == 0 && (over || (want & LAYOUT_WANT_REBUILD))) {
		if (over)
			vela_info("index id %u field %u: %u clusters grew past twice their size: "
				  "rebuilding the layout", ix_id, k, over);
		rc = layout_rebuild(db, ix_id, k, uid);
	}
	pthread_rwlock_wrlock(&db->lock);
	ix = job_index(db, ix_id, k, uid);
	s = ix ? db_field_state(db, ix, k, false) : NULL;
	if (s)
		atomic_store(&s->layout_job, false);
	pthread_rwlock_unlock(&db->lock);
	if (rc && rc != VELA_ENOTFOUND)
		vela_warn("index id %u field %u: background layout job failed (%s)", ix_id, k,
			  vela_strerror(rc));
}

/* ------------------------------------------------------------ the file */

/*
 * <dir>/part-<index id>-<field>.snap (docs/partitions.md §5):
 *   "VELAPART" | u32 version | u64 change-log sequence | u64 rows of the
 *   field | u32 dim, type, metric | options: u64 leaf_min, u32 cluster_rows,
 *   max_cuts, f32 probe_factor (<0: exact), u32 probe_min, f32 recall
 *   (version 2; <0: exact) | u64 workload
 *   hash, build ns, built at (ms), rows at the build | u32 signatures, each
 *   u64 hash, u64 count | u32 delta docids, each u32 (ascending) | u64
 *   bytes, qdtree_pack | u64 bytes, part_pack | u64 XXH3 of all before.
 * Host byte order (little-endian targets), as the workload log.
 */
#define PART_FILE_MAGIC "VELAPART"
#define PART_FILE_VERSION 2u

static void part_path(const vela_db_t *db, uint32_t ix_id, uint32_t field, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s/part-%u-%u.snap", db->dir, ix_id, field);
}

void db_layout_file_remove(const vela_db_t *db, const db_index_t *ix, uint32_t field)
{
	char path[PATH_MAX_SNAP];
	part_path(db, ix->id, field, path, sizeof(path));
	unlink(path);
}

#define LB_VAL(w, type, v) vela_wbuf_put((w), &(type){(v)}, sizeof(type))

static int db_seq_now(vela_db_t *db, uint64_t *seq)
{
	storage_txn_t *txn;
	int rc = storage_txn_begin(db->env, NULL, 0, &txn);
	if (rc == 0) {
		rc = storage_log_last(txn, seq);
		storage_txn_abort(txn);
	}
	return rc;
}

int db_layout_save(vela_db_t *db, const db_index_t *ix, db_field_state_t *s)
{
	const db_field_t *f = &ix->fields[s->field];
	const db_layout_t *l = s->layout;
	if (l == NULL || !layout_fresh(l, f)) { /* nothing current to keep */
		db_layout_file_remove(db, ix, s->field);
		return 0;
	}
	uint64_t seq;
	int rc = db_seq_now(db, &seq);
	uint8_t *tree = NULL, *part = NULL;
	size_t tl = 0, pl = 0;
	if (rc == 0)
		rc = qdtree_pack(l->tree, &tree, &tl);
	if (rc == 0)
		rc = part_pack(l->part, &part, &pl);
	vela_wbuf_t w = {0};
	if (rc == 0) {
		vela_wbuf_put(&w, PART_FILE_MAGIC, 8);
		LB_VAL(&w, uint32_t, PART_FILE_VERSION);
		LB_VAL(&w, uint64_t, seq);
		LB_VAL(&w, uint64_t, flat_count(f->flat));
		LB_VAL(&w, uint32_t, f->dim);
		LB_VAL(&w, uint32_t, (uint32_t)flat_type(f->flat));
		LB_VAL(&w, uint32_t, (uint32_t)flat_metric(f->flat));
		LB_VAL(&w, uint64_t, l->opts.leaf_min);
		LB_VAL(&w, uint32_t, l->opts.cluster_rows);
		LB_VAL(&w, uint32_t, l->opts.max_cuts);
		float pf, rec;
		so_public(&l->so, &pf, &rec);
		LB_VAL(&w, float, pf);
		LB_VAL(&w, uint32_t, l->so.probe_min);
		LB_VAL(&w, float, rec);
		LB_VAL(&w, uint64_t, l->workload_hash);
		LB_VAL(&w, uint64_t, l->build_ns);
		LB_VAL(&w, uint64_t, l->built_at_ms);
		LB_VAL(&w, uint64_t, l->built_rows);
		LB_VAL(&w, uint32_t, l->n_sigs);
		vela_wbuf_put(&w, l->sigs, (size_t)l->n_sigs * sizeof(db_sig_t));
		uint64_t nd = roaring_bitmap_get_cardinality(l->delta);
		uint32_t *d = malloc((nd ? nd : 1) * sizeof(uint32_t));
		if (d) {
			roaring_bitmap_to_uint32_array(l->delta, d);
			LB_VAL(&w, uint32_t, (uint32_t)nd);
			vela_wbuf_put(&w, d, nd * 4);
		}
		free(d);
		LB_VAL(&w, uint64_t, tl);
		vela_wbuf_put(&w, tree, tl);
		uint32_t nc = 0;
		for (uint32_t i = 0; i < l->n_atoms; i++)
			nc += l->cut_b[i] != NULL;
		LB_VAL(&w, uint32_t, nc);
		for (uint32_t i = 0; i < l->n_atoms; i++)
			if (l->cut_b[i]) {
				LB_VAL(&w, uint32_t, i);
				LB_VAL(&w, uint32_t, l->cut_len[i]);
				vela_wbuf_put(&w, l->cut_b[i], l->cut_len[i]);
			}
		LB_VAL(&w, uint64_t, pl);
		vela_wbuf_put(&w, part, pl);
		LB_VAL(&w, uint64_t, vela_hash64(w.b, w.len));
		rc = w.oom || d == NULL ? VELA_ENOMEM : 0;
	}
	free(tree);
	free(part);
	if (rc == 0) {
		char path[PATH_MAX_SNAP];
		part_path(db, ix->id, s->field, path, sizeof(path));
		rc = db_file_replace(path, w.b, w.len);
	}
	free(w.b);
	return rc;
}

static float lr_f32(vela_rbuf_t *r)
{
	uint32_t u = vela_rbuf_u32(r);
	float v;
	memcpy(&v, &u, 4);
	return v;
}

int db_layout_parse(const uint8_t *buf, size_t len, const part_source_t *src, uint64_t seq,
		    db_layout_t **out)
{
	const flat_index_t *f = src->f;
	*out = NULL;
	if (len < 8 + 4 + 8 || memcmp(buf, PART_FILE_MAGIC, 8))
		return VELA_ECORRUPT;
	uint64_t sum;
	memcpy(&sum, buf + len - 8, 8);
	if (sum != vela_hash64(buf, len - 8))
		return VELA_ECORRUPT;
	vela_rbuf_t r = {.b = buf, .len = len - 8, .o = 8};
	uint32_t ver = vela_rbuf_u32(&r);
	if (ver != PART_FILE_VERSION) /* version 1 probed by a constant: rebuild */
		return ver > PART_FILE_VERSION ? VELA_EVERSION : VELA_EBUSY;
	if (vela_rbuf_u64(&r) != seq)
		return VELA_EBUSY; /* written before later changes: stale */
	uint64_t rows = vela_rbuf_u64(&r);
	uint32_t dim = vela_rbuf_u32(&r), type = vela_rbuf_u32(&r),
		 metric = vela_rbuf_u32(&r);
	if (r.bad || rows != flat_count(f) || dim != flat_dim(f) ||
	    type != (uint32_t)flat_type(f) || metric != (uint32_t)flat_metric(f))
		return VELA_EBUSY; /* not this field's rows */
	vela_layout_opts_t o = {0};
	o.leaf_min = vela_rbuf_u64(&r);
	o.cluster_rows = vela_rbuf_u32(&r);
	o.max_cuts = vela_rbuf_u32(&r);
	o.probe_factor = lr_f32(&r);
	o.probe_min = vela_rbuf_u32(&r);
	o.recall = lr_f32(&r);
	qdtree_opts_t to;
	part_opts_t po;
	part_search_opts_t so;
	uint32_t mc;
	if (r.bad || o.leaf_min == 0 || o.cluster_rows == 0 || o.max_cuts == 0 ||
	    o.probe_min == 0 || opts_resolve(&o, &to, &po, &so, &mc))
		return VELA_ECORRUPT;
	db_layout_t *l = layout_new();
	if (l == NULL)
		return VELA_ENOMEM;
	l->opts = o;
	l->so = so;
	l->loaded = true;
	l->workload_hash = vela_rbuf_u64(&r);
	l->build_ns = vela_rbuf_u64(&r);
	l->built_at_ms = vela_rbuf_u64(&r);
	l->built_rows = vela_rbuf_u64(&r);
	uint32_t ns = vela_rbuf_u32(&r);
	const uint8_t *sp = r.bad || ns > DB_WORKLOAD_QUERIES_MAX
				    ? NULL
				    : vela_rbuf_take(&r, (size_t)ns * sizeof(db_sig_t));
	int rc = sp ? 0 : VELA_ECORRUPT;
	if (rc == 0 && (l->sigs = malloc((ns ? ns : 1) * sizeof(db_sig_t))) == NULL)
		rc = VELA_ENOMEM;
	if (rc == 0) {
		memcpy(l->sigs, sp, (size_t)ns * sizeof(db_sig_t));
		l->n_sigs = ns;
		for (uint32_t i = 1; i < ns; i++)
			if (l->sigs[i].h <= l->sigs[i - 1].h)
				rc = VELA_ECORRUPT;
	}
	uint32_t nd = rc ? 0 : vela_rbuf_u32(&r);
	const uint8_t *dp = rc || r.bad || nd > rows ? NULL : vela_rbuf_take(&r, (size_t)nd * 4);
	rc = rc ? rc : dp ? 0 : VELA_ECORRUPT;
	if (rc == 0 && (l->delta = roaring_bitmap_create()) == NULL)
		rc = VELA_ENOMEM;
	for (uint32_t i = 0; rc == 0 && i < nd; i++) {
		uint32_t id, prev = 0;
		memcpy(&id, dp + (size_t)i * 4, 4);
		if (i)
			memcpy(&prev, dp + (size_t)(i - 1) * 4, 4);
		if ((i && id <= prev) || !roaring_bitmap_contains(flat_docids(f), id))
			rc = VELA_ECORRUPT;
		else
			roaring_bitmap_add(l->delta, id);
	}
	uint64_t tl = rc ? 0 : vela_rbuf_u64(&r);
	const uint8_t *tp = rc || r.bad || tl > len ? NULL : vela_rbuf_take(&r, tl);
	rc = rc ? rc : tp ? qdtree_unpack(tp, tl, &l->tree) : VELA_ECORRUPT;
	uint32_t na = rc ? 0 : qdtree_atom_count(l->tree), nc = rc ? 0 : vela_rbuf_u32(&r);
	if (rc == 0 && (r.bad || nc > na))
		rc = VELA_ECORRUPT;
	if (rc == 0)
		rc = cuts_alloc(l, na);
	for (uint32_t i = 0; rc == 0 && i < nc; i++) {
		uint32_t c = vela_rbuf_u32(&r), cl = vela_rbuf_u32(&r);
		const uint8_t *cb = r.bad || c >= na || l->cut_b[c] ? NULL : vela_rbuf_take(&r, cl);
		rc = cb && cut_ok(cb, cl, qdtree_atom(l->tree, c)) ? cut_set(l, c, cb, cl)
								  : VELA_ECORRUPT;
	}
	uint64_t pl = rc ? 0 : vela_rbuf_u64(&r);
	const uint8_t *pp = rc || r.bad || pl > len ? NULL : vela_rbuf_take(&r, pl);
	rc = rc ? rc : pp ? part_unpack(src, pp, pl, &l->part) : VELA_ECORRUPT;
	/* the file's calibration (checksummed, and the file is only loaded when
	 * no write came after it); files before part_pack version 3 have none */
	if (rc == 0 && part_calibration(l->part, NULL) == 0)
		rc = part_calibrate(l->part, PART_CAL_QUERIES_DEFAULT);
	part_stats_t st;
	if (rc == 0) {
		part_stats(l->part, &st);
		if (r.o != r.len || qdtree_leaf_count(l->tree) != st.leaves || st.rows + nd != rows)
			rc = VELA_ECORRUPT;
	}
	/* the clusters and the delta hold every row of the field, each once */
	for (uint32_t i = 0; rc == 0 && i < nd; i++) {
		uint32_t id;
		memcpy(&id, dp + (size_t)i * 4, 4);
		if (part_contains(l->part, id))
			rc = VELA_ECORRUPT;
	}
	if (rc) {
		db_layout_free(l);
		return rc == VELA_EDIM ? VELA_EBUSY : rc;
	}
	*out = l;
	return 0;
}

void db_layout_load(vela_db_t *db, const db_index_t *ix, db_field_state_t *s)
{
	const db_field_t *f = &ix->fields[s->field];
	if (f->type != VELA_FIELD_VECTOR || f->flat == NULL ||
	    !(flat_has_rows(f->flat) || f->lvq)) /* no vectors to read */
		return;
	char path[PATH_MAX_SNAP];
	part_path(db, ix->id, s->field, path, sizeof(path));
	FILE *fp = fopen(path, "rb");
	if (fp == NULL)
		return;
	uint8_t *buf = NULL;
	long len = fseek(fp, 0, SEEK_END) == 0 ? ftell(fp) : -1;
	if (len > 0 && fseek(fp, 0, SEEK_SET) == 0 && (buf = malloc((size_t)len)) &&
	    fread(buf, 1, (size_t)len, fp) != (size_t)len) {
		free(buf);
		buf = NULL;
	}
	fclose(fp);
	uint64_t seq = 0;
	int rc = buf ? db_seq_now(db, &seq) : VELA_EIO;
	db_layout_t *l = NULL;
	part_source_t src = field_source(f);
	if (rc == 0)
		rc = db_layout_parse(buf, (size_t)len, &src, seq, &l);
	free(buf);
	if (rc) {
		vela_warn("index '%s' field '%s': layout file %s not used (%s): dropped; "
			  "FT.LAYOUT %s BUILD FIELD %s rebuilds it",
			  ix->name, f->alias, path, rc == VELA_EBUSY ? "stale" : vela_strerror(rc),
			  ix->name, f->alias);
		unlink(path);
		return;
	}
	index_rows_t r;
	flat_rows(f->flat, &r);
	l->flat_uid = r.uid;
	l->generation = r.generation;
	l->serial = atomic_fetch_add(&layout_serial, 1);
	part_stats_t st; /* the encoding the file's clusters took: rebuilds keep it */
	part_stats(l->part, &st);
	l->opts.encoding = st.encoding == PART_ENC_LVQ8 ? VELA_LAYOUT_ENCODING_LVQ8
							: VELA_LAYOUT_ENCODING_FIELD;
	s->layout = l; /* s is not shared yet */
}

void db_layouts_load(vela_db_t *db)
{
	for (size_t i = 0; i < db->n_indexes; i++) {
		const db_index_t *ix = db->indexes[i];
		for (uint32_t k = 0; k < ix->n_fields; k++) {
			char path[PATH_MAX_SNAP];
			part_path(db, ix->id, k, path, sizeof(path));
			if (ix->fields[k].type == VELA_FIELD_VECTOR && access(path, F_OK) == 0)
				(void)db_field_state(db, ix, k, true); /* loads it */
		}
	}
}

/* ------------------------------------------------------------ the batch plan */

/* The fresh layout of p's field, or NULL. */
static db_layout_t *plan_layout(const plan_t *p)
{
	const db_field_t *f = db_plan_field(p);
	db_field_state_t *s = db_field_state(NULL, p->ix, p->knn->field_no, false);
	return s && layout_fresh(s->layout, f) ? s->layout : NULL;
}

/* Merge the exact answer over the delta (the docids written since the
 * build, matching p's filter) into q's hits, in (distance, docid) order. */
static int delta_merge(const db_layout_t *l, plan_t *p, part_query_t *q)
{
	if (roaring_bitmap_is_empty(l->delta) || q->k == 0)
		return 0;
	roaring_bitmap_t *d = p->filter ? roaring_bitmap_and(l->delta, p->filter)
					: roaring_bitmap_copy(l->delta);
	if (d == NULL)
		return VELA_ENOMEM;
	int rc = 0;
	uint64_t nd = roaring_bitmap_get_cardinality(d);
	vela_hit_t *h = nd ? malloc(2 * (size_t)q->k * sizeof(*h)) : NULL;
	if (nd && h == NULL)
		rc = VELA_ENOMEM;
	uint32_t nh = 0;
	if (rc == 0 && nd)
		rc = db_vec_search(db_plan_field(p), q->q, q->k, d, h, &nh);
	if (rc == 0 && nh) {
		vela_hit_t *m = h + q->k;
		uint32_t i = 0, j = 0, o = 0;
		while (o < q->k && (i < q->n_out || j < nh)) {
			bool take = i == q->n_out ||
				    (j < nh && (h[j].dist < q->out[i].dist ||
						(h[j].dist == q->out[i].dist &&
						 h[j].docid < q->out[i].docid)));
			m[o++] = take ? h[j++] : q->out[i++];
		}
		memcpy(q->out, m, o * sizeof(*m));
		q->n_out = o;
		q->scored += nd;
	}
	free(h);
	roaring_bitmap_free(d);
	return rc;
}

/* p's layout if p takes the partitions plan: forced, or chosen (no
 * HYBRID_POLICY or other forced plan) for a filter wide enough that the
 * rows the layout expects to probe cost less than scoring its matches
 * (DB_LAYOUT_ROWS_PER_MATCH_DEFAULT). */
static db_layout_t *plan_wants(const plan_t *p)
{
	bool forced = p->req->force_plan == VELA_PLAN_PARTITIONS;
	if (!forced && (p->req->force_plan != VELA_PLAN_AUTO ||
			(p->knn->set & QUERY_KNN_HYBRID_POLICY) ||
			p->prof.filter_matches <= VELA_LAYOUT_SCAN_MAX))
		return NULL;
	db_layout_t *l = plan_layout(p);
	if (l == NULL || forced)
		return l;
	double rows = part_probe_rows(l->part, p->knn->k, p->prof.filter_matches, &l->so);
	return rows <= DB_LAYOUT_ROWS_PER_MATCH_DEFAULT * (double)p->prof.filter_matches ? l : NULL;
}

/* The plans j >= i on lay[i]'s layout as part_search's queries (lay[j]
 * cleared, which[] their plan indices); returns how many. */
static uint32_t group_collect(plan_t *plans, db_layout_t **lay, size_t n, size_t i,
			      part_query_t *pq, size_t *which)
{
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
	return m;
}

int db_layout_dump(plan_t *plans, const int *state, size_t n, FILE *f, uint32_t *dumped)
{
	db_layout_t **lay = calloc(n ? n : 1, sizeof(*lay));
	part_query_t *pq = malloc((n ? n : 1) * sizeof(*pq));
	size_t *which = malloc((n ? n : 1) * sizeof(size_t));
	int rc = lay && pq && which ? VELA_ENOTFOUND : VELA_ENOMEM;
	*dumped = 0;
	for (size_t i = 0; lay && i < n; i++)
		if (state[i] == 1 && plans[i].knn)
			lay[i] = plan_wants(&plans[i]);
	for (size_t i = 0; rc == VELA_ENOTFOUND && pq && which && i < n; i++) {
		if (lay[i] == NULL)
			continue;
		db_layout_t *l = lay[i];
		*dumped = group_collect(plans, lay, n, i, pq, which);
		rc = part_search_plan_dump(l->part, pq, *dumped, &l->so, f);
	}
	free(lay);
	free(pq);
	free(which);
	return rc;
}

void db_layout_run(plan_t *plans, int *state, size_t n)
{
	db_layout_t **lay = calloc(n ? n : 1, sizeof(*lay));
	part_query_t *pq = malloc((n ? n : 1) * sizeof(*pq));
	size_t *which = malloc((n ? n : 1) * sizeof(size_t));
	if (lay == NULL || pq == NULL || which == NULL)
		goto out; /* the other plans answer them */
	for (size_t i = 0; i < n; i++)
		if (state[i] == 1 && plans[i].knn)
			lay[i] = plan_wants(&plans[i]);
	for (size_t i = 0; i < n; i++) {
		if (lay[i] == NULL)
			continue;
		db_layout_t *l = lay[i];
		uint32_t m = group_collect(plans, lay, n, i, pq, which);
		uint64_t t0 = vela_now_ns();
		int rc = part_search(l->part, pq, m, &l->so);
		for (uint32_t j = 0; rc == 0 && j < m; j++) /* the delta, exactly */
			rc = delta_merge(l, &plans[which[j]], &pq[j]);
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
