/* The partition layout (index.h PARTITIONS): k-means clusters inside each
 * qd-tree leaf, rows copied per cluster in docid order (HQI §1.3, MicroNN's
 * IVF posting lists), and the batch search over them (MicroNN §3.4:
 * rank the centroids for all queries with one product, invert to
 * cluster -> queries, score each cluster once against its queries). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "index/flat_impl.h"
#include "quant/quant.h"

typedef struct part_cluster {
	uint8_t *rows;      /* n rows of the field's element type, `stride` apart */
	float *norms;
	uint32_t *ids;      /* ascending docids */
	roaring_bitmap_t *bm;
	uint32_t n;
	uint32_t cap;      /* rows allocated */
	uint32_t n_built;  /* rows at the build (or the load) */
	uint64_t uid, gen; /* gen: bumped by part_remove / part_insert (GPU residency) */
} part_cluster_t;

typedef struct part_leaf {
	roaring_bitmap_t *docids; /* present rows of the leaf */
	uint64_t rows;
	float *cent;              /* nlist x dim */
	uint32_t c0, nlist;       /* clusters c0 .. c0 + nlist - 1 */
	uint64_t cent_uid;
} part_leaf_t;

struct part_layout {
	uint32_t dim;
	vela_metric_t metric;
	vela_vec_type_t type;
	size_t esize, stride;
	float norm_max;
	part_leaf_t *leaves;
	uint32_t n_leaves;
	part_cluster_t *cl;
	uint32_t n_cl;
	uint32_t n_cl_cap; /* part_unpack: clusters allocated */
};

void part_opts_default(part_opts_t *o)
{
	*o = (part_opts_t){.cluster_rows = PART_CLUSTER_ROWS_DEFAULT,
			   .kmeans_iters = PART_KMEANS_ITERS_DEFAULT,
			   .kmeans_sample = PART_KMEANS_SAMPLE_DEFAULT,
			   .seed = 0x5eed};
}

void part_search_opts_default(part_search_opts_t *o)
{
	o->probe_factor = PART_PROBE_FACTOR_DEFAULT;
	o->probe_min = PART_PROBE_MIN_DEFAULT;
}

/* ------------------------------------------------------------ build */

static uint64_t mix64(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Row `id` of f as floats. */
static void row_decode(const flat_index_t *f, uint32_t id, float *out)
{
	if (f->type == VELA_VEC_FLOAT16)
		quant_f16_to_f32((const uint16_t *)flat_row(f, id), out, f->dim);
	else
		memcpy(out, flat_row(f, id), f->dim * sizeof(float));
}

/* Centroids of one leaf: k-means on a strided sample of its rows ids[0..m),
 * nlist centroids seeded from distinct sample rows. C: nlist x dim. */
static int leaf_kmeans(const flat_index_t *f, const uint32_t *ids, uint64_t m, uint32_t nlist,
		       const part_opts_t *o, uint64_t seed, float *C)
{
	uint64_t ns = m < o->kmeans_sample ? m : o->kmeans_sample;
	float *X = malloc(vela_mul_size(ns, f->dim * sizeof(float)));
	uint32_t *pick = malloc(vela_mul_size(ns, sizeof(uint32_t)));
	if (X == NULL || pick == NULL) {
		free(X);
		free(pick);
		return VELA_ENOMEM;
	}
	for (uint64_t i = 0; i < ns; i++) {
		row_decode(f, ids[(uint64_t)((double)i * (double)m / (double)ns)],
			   X + i * f->dim);
		pick[i] = (uint32_t)i;
	}
	for (uint32_t c = 0; c < nlist; c++) { /* partial Fisher-Yates */
		uint64_t j = c + mix64(seed ^ c) % (ns - c);
		uint32_t t = pick[c];
		pick[c] = pick[j];
		pick[j] = t;
		memcpy(C + (size_t)c * f->dim, X + (size_t)pick[c] * f->dim,
		       f->dim * sizeof(float));
	}
	int rc = 0;
	for (uint32_t it = 0; rc == 0 && nlist > 1 && it < o->kmeans_iters; it++)
		rc = index_backend_kmeans_step(X, ns, f->dim, C, nlist, NULL, NULL, NULL);
	free(X);
	free(pick);
	return rc;
}

/* Assign every row to its nearest centroid (one kNN with k = 1 over the
 * centroids per chunk of rows). */
#define PART_ASSIGN_CHUNK 8192u
static int leaf_assign(const flat_index_t *f, const uint32_t *ids, uint64_t m, const float *C,
		       uint32_t nlist, uint32_t *assign)
{
	float *X = malloc(vela_mul_size(PART_ASSIGN_CHUNK, f->dim * sizeof(float)));
	vela_hit_t *h = malloc(PART_ASSIGN_CHUNK * sizeof(vela_hit_t));
	uint32_t *nh = malloc(PART_ASSIGN_CHUNK * sizeof(uint32_t));
	int rc = X && h && nh ? 0 : VELA_ENOMEM;
	index_rows_t rows = {.data = C, .type = VELA_VEC_FLOAT32, .metric = VELA_METRIC_L2,
			     .dim = f->dim, .stride = f->dim, .n = nlist};
	for (uint64_t s = 0; rc == 0 && s < m; s += PART_ASSIGN_CHUNK) {
		uint32_t n = (uint32_t)(m - s < PART_ASSIGN_CHUNK ? m - s : PART_ASSIGN_CHUNK);
		for (uint32_t i = 0; i < n; i++)
			row_decode(f, ids[s + i], X + (size_t)i * f->dim);
		index_knn_t req = {.queries = X, .nq = n, .k = 1};
		rc = index_backend_knn(&rows, &req, h, nh, NULL);
		for (uint32_t i = 0; rc == 0 && i < n; i++)
			assign[s + i] = nh[i] ? h[i].docid : 0;
	}
	free(X);
	free(h);
	free(nh);
	return rc;
}

static int layout_grow_clusters(part_layout_t *p, uint32_t more)
{
	part_cluster_t *v = realloc(p->cl, vela_mul_size(p->n_cl + more, sizeof(*v)));
	if (v == NULL)
		return VELA_ENOMEM;
	p->cl = v;
	memset(p->cl + p->n_cl, 0, more * sizeof(*v));
	return 0;
}

/* Copy the rows of each non-empty cluster (ids ascending, so each
 * cluster's rows stay in docid order) and set the centroids to the means. */
static int leaf_store(part_layout_t *p, const flat_index_t *f, part_leaf_t *lf,
		      const uint32_t *ids, uint64_t m, const uint32_t *assign, uint32_t nlist)
{
	uint32_t *cnt = calloc(nlist, sizeof(uint32_t));
	double *sum = calloc((size_t)nlist * f->dim, sizeof(double));
	float *x = malloc(f->dim * sizeof(float));
	int rc = cnt && sum && x ? 0 : VELA_ENOMEM;
	for (uint64_t i = 0; rc == 0 && i < m; i++) {
		cnt[assign[i]]++;
		row_decode(f, ids[i], x);
		for (uint32_t j = 0; j < f->dim; j++)
			sum[(size_t)assign[i] * f->dim + j] += x[j];
	}
	uint32_t used = 0;
	for (uint32_t c = 0; rc == 0 && c < nlist; c++)
		used += cnt[c] > 0;
	if (rc == 0)
		rc = layout_grow_clusters(p, used);
	uint32_t *slot = rc ? NULL : malloc(nlist * sizeof(uint32_t));
	rc = rc ? rc : slot ? 0 : VELA_ENOMEM;
	lf->c0 = p->n_cl;
	lf->nlist = 0;
	size_t row = p->stride * p->esize;
	for (uint32_t c = 0; rc == 0 && c < nlist; c++) {
		if (cnt[c] == 0)
			continue;
		part_cluster_t *cl = &p->cl[p->n_cl + lf->nlist];
		slot[c] = lf->nlist;
		for (uint32_t j = 0; j < f->dim; j++)
			lf->cent[(size_t)lf->nlist * f->dim + j] =
				(float)(sum[(size_t)c * f->dim + j] / cnt[c]);
		cl->rows = vela_aligned_alloc(64, vela_mul_size(cnt[c], row));
		cl->norms = malloc(cnt[c] * sizeof(float));
		cl->ids = malloc(cnt[c] * sizeof(uint32_t));
		cl->bm = roaring_bitmap_create();
		cl->uid = index_backend_uid_new();
		cl->gen = 1;
		cl->cap = cl->n_built = cnt[c];
		lf->nlist++;
		if (!cl->rows || !cl->norms || !cl->ids || !cl->bm)
			rc = VELA_ENOMEM;
	}
	p->n_cl += lf->nlist;
	for (uint64_t i = 0; rc == 0 && i < m; i++) {
		part_cluster_t *cl = &p->cl[lf->c0 + slot[assign[i]]];
		memcpy(cl->rows + (size_t)cl->n * row, flat_row(f, ids[i]), row);
		cl->norms[cl->n] = f->norms[ids[i]];
		cl->ids[cl->n++] = ids[i];
	}
	for (uint32_t c = 0; rc == 0 && c < lf->nlist; c++) {
		part_cluster_t *cl = &p->cl[lf->c0 + c];
		roaring_bitmap_add_many(cl->bm, cl->n, cl->ids);
	}
	free(cnt);
	free(sum);
	free(x);
	free(slot);
	return rc;
}

static int leaf_build(part_layout_t *p, const flat_index_t *f, const roaring_bitmap_t *docs,
		      const part_opts_t *o, uint32_t li)
{
	part_leaf_t *lf = &p->leaves[li];
	lf->docids = roaring_bitmap_and(docs, f->docids);
	if (lf->docids == NULL)
		return VELA_ENOMEM;
	uint64_t m = roaring_bitmap_get_cardinality(lf->docids);
	lf->rows = m;
	lf->cent_uid = index_backend_uid_new();
	lf->c0 = p->n_cl;
	if (m == 0)
		return 0;
	uint64_t want = (m + o->cluster_rows - 1) / o->cluster_rows;
	uint32_t nlist = (uint32_t)(want > VELA_K_MAX ? VELA_K_MAX : want);
	uint32_t *ids = malloc(vela_mul_size(m, sizeof(uint32_t)));
	uint32_t *assign = malloc(vela_mul_size(m, sizeof(uint32_t)));
	lf->cent = malloc(vela_mul_size((size_t)nlist * f->dim, sizeof(float)));
	int rc = ids && assign && lf->cent ? 0 : VELA_ENOMEM;
	if (rc == 0) {
		roaring_bitmap_to_uint32_array(lf->docids, ids);
		rc = leaf_kmeans(f, ids, m, nlist, o, mix64(o->seed ^ li), lf->cent);
	}
	if (rc == 0)
		rc = leaf_assign(f, ids, m, lf->cent, nlist, assign);
	if (rc == 0)
		rc = leaf_store(p, f, lf, ids, m, assign, nlist);
	free(ids);
	free(assign);
	return rc;
}

static int opts_check(const part_opts_t *o)
{
	return o->cluster_rows < PART_CLUSTER_ROWS_MIN || o->cluster_rows > PART_CLUSTER_ROWS_MAX ||
			       o->kmeans_iters > PART_KMEANS_ITERS_MAX ||
			       o->kmeans_sample < PART_KMEANS_SAMPLE_MIN ||
			       o->kmeans_sample > PART_KMEANS_SAMPLE_MAX
		       ? VELA_EINVAL
		       : 0;
}

int part_build(const flat_index_t *f, const roaring_bitmap_t *const *leaves, uint32_t n_leaves,
	       const part_opts_t *opts, part_layout_t **out)
{
	part_opts_t o;
	if (opts)
		o = *opts;
	else
		part_opts_default(&o);
	if (f == NULL || out == NULL || (n_leaves && leaves == NULL) || opts_check(&o))
		return VELA_EINVAL;
	*out = NULL;
	for (uint32_t i = 0; i < n_leaves; i++)
		if (leaves[i] == NULL)
			return VELA_EINVAL;
	if (!flat_has_rows(f)) /* a compressed field: its F32 rows were released */
		return VELA_EUNSUPPORTED;
	part_layout_t *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return VELA_ENOMEM;
	*p = (part_layout_t){.dim = f->dim, .metric = f->metric, .type = f->type,
			     .esize = f->esize, .stride = f->stride, .norm_max = f->norm_max};
	p->leaves = calloc(n_leaves ? n_leaves : 1, sizeof(*p->leaves));
	int rc = p->leaves ? 0 : VELA_ENOMEM;
	for (uint32_t i = 0; rc == 0 && i < n_leaves; i++) {
		p->n_leaves = i + 1;
		rc = leaf_build(p, f, leaves[i], &o, i);
	}
	if (rc) {
		part_free(p);
		return rc;
	}
	*out = p;
	return 0;
}

void part_free(part_layout_t *p)
{
	if (p == NULL)
		return;
	for (uint32_t i = 0; i < p->n_cl; i++) {
		part_cluster_t *c = &p->cl[i];
		index_backend_forget(c->uid);
		free(c->rows);
		free(c->norms);
		free(c->ids);
		if (c->bm)
			roaring_bitmap_free(c->bm);
	}
	for (uint32_t i = 0; i < p->n_leaves; i++) {
		index_backend_forget(p->leaves[i].cent_uid);
		if (p->leaves[i].docids)
			roaring_bitmap_free(p->leaves[i].docids);
		free(p->leaves[i].cent);
	}
	free(p->cl);
	free(p->leaves);
	free(p);
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

void part_stats(const part_layout_t *p, part_stats_t *s)
{
	memset(s, 0, sizeof(*s));
	s->leaves = p->n_leaves;
	s->clusters = p->n_cl;
	s->bytes = sizeof(*p) + p->n_leaves * sizeof(part_leaf_t) + p->n_cl * sizeof(part_cluster_t);
	uint64_t *n = malloc((p->n_cl ? p->n_cl : 1) * sizeof(uint64_t));
	for (uint32_t i = 0; i < p->n_cl; i++) {
		s->rows += p->cl[i].n;
		s->bytes += (size_t)p->cl[i].n * (p->stride * p->esize + 8) +
			    roaring_bitmap_size_in_bytes(p->cl[i].bm);
		if (n)
			n[i] = p->cl[i].n;
	}
	for (uint32_t i = 0; i < p->n_leaves; i++)
		s->bytes += (size_t)p->leaves[i].nlist * p->dim * sizeof(float) +
			    roaring_bitmap_size_in_bytes(p->leaves[i].docids);
	if (n && p->n_cl) {
		qsort(n, p->n_cl, sizeof(*n), u64_cmp);
		s->min_rows = n[0];
		s->median_rows = n[p->n_cl / 2];
		s->max_rows = n[p->n_cl - 1];
	}
	free(n);
}

uint32_t part_leaf_clusters(const part_layout_t *p, uint32_t leaf)
{
	return leaf < p->n_leaves ? p->leaves[leaf].nlist : 0;
}

const roaring_bitmap_t *part_leaf_docids(const part_layout_t *p, uint32_t leaf)
{
	return leaf < p->n_leaves ? p->leaves[leaf].docids : NULL;
}

/* ------------------------------------------------------------ maintenance */

int part_remove(part_layout_t *p, uint32_t docid)
{
	if (p == NULL)
		return VELA_EINVAL;
	for (uint32_t li = 0; li < p->n_leaves; li++) {
		part_leaf_t *lf = &p->leaves[li];
		if (!roaring_bitmap_contains(lf->docids, docid))
			continue;
		for (uint32_t c = lf->c0; c < lf->c0 + lf->nlist; c++) {
			part_cluster_t *cl = &p->cl[c];
			if (!roaring_bitmap_contains(cl->bm, docid))
				continue;
			uint32_t lo = 0, hi = cl->n; /* ids ascend: binary search */
			while (lo < hi) {
				uint32_t mid = lo + (hi - lo) / 2;
				if (cl->ids[mid] < docid)
					lo = mid + 1;
				else
					hi = mid;
			}
			size_t row = p->stride * p->esize, after = cl->n - lo - 1;
			memmove(cl->rows + (size_t)lo * row, cl->rows + (size_t)(lo + 1) * row,
				after * row);
			memmove(cl->norms + lo, cl->norms + lo + 1, after * sizeof(float));
			memmove(cl->ids + lo, cl->ids + lo + 1, after * sizeof(uint32_t));
			cl->n--;
			cl->gen++;
			roaring_bitmap_remove(cl->bm, docid);
			break;
		}
		roaring_bitmap_remove(lf->docids, docid);
		lf->rows--;
		return 0;
	}
	return VELA_ENOTFOUND;
}

/* Room for one more row in cl (rows 64-byte aligned: a new block). */
static int cluster_grow(const part_layout_t *p, part_cluster_t *cl)
{
	if (cl->n < cl->cap)
		return 0;
	uint32_t cap = cl->cap < 8 ? 8 : cl->cap + cl->cap / 2;
	size_t row = p->stride * p->esize;
	uint8_t *rows = vela_aligned_alloc(64, vela_mul_size(cap, row));
	float *norms = realloc(cl->norms, cap * sizeof(float));
	if (norms)
		cl->norms = norms;
	uint32_t *ids = realloc(cl->ids, cap * sizeof(uint32_t));
	if (ids)
		cl->ids = ids;
	if (rows == NULL || norms == NULL || ids == NULL) {
		free(rows);
		return VELA_ENOMEM;
	}
	memcpy(rows, cl->rows, (size_t)cl->n * row);
	free(cl->rows);
	cl->rows = rows;
	cl->cap = cap;
	return 0;
}

int part_insert(part_layout_t *p, const flat_index_t *f, uint32_t cluster, uint32_t docid)
{
	if (p == NULL || f == NULL || cluster >= p->n_cl || !flat_has_rows(f) ||
	    !flat_live_has(f, docid) || f->dim != p->dim || f->type != p->type)
		return VELA_EINVAL;
	if (part_contains(p, docid))
		return VELA_EEXISTS;
	uint32_t li = 0;
	while (!(cluster >= p->leaves[li].c0 && cluster < p->leaves[li].c0 + p->leaves[li].nlist))
		li++;
	part_cluster_t *cl = &p->cl[cluster];
	int rc = cluster_grow(p, cl);
	if (rc)
		return rc;
	uint32_t lo = 0, hi = cl->n; /* its rank: rows keep ascending with docid */
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (cl->ids[mid] < docid)
			lo = mid + 1;
		else
			hi = mid;
	}
	size_t row = p->stride * p->esize, after = cl->n - lo;
	memmove(cl->rows + (size_t)(lo + 1) * row, cl->rows + (size_t)lo * row, after * row);
	memmove(cl->norms + lo + 1, cl->norms + lo, after * sizeof(float));
	memmove(cl->ids + lo + 1, cl->ids + lo, after * sizeof(uint32_t));
	memcpy(cl->rows + (size_t)lo * row, flat_row(f, docid), row);
	cl->norms[lo] = f->norms[docid];
	cl->ids[lo] = docid;
	cl->n++;
	cl->gen++;
	roaring_bitmap_add(cl->bm, docid);
	roaring_bitmap_add(p->leaves[li].docids, docid);
	p->leaves[li].rows++;
	if (f->norm_max > p->norm_max) /* the kernels' bound covers the new row */
		p->norm_max = f->norm_max;
	return 0;
}

int part_assign(const part_layout_t *p, const flat_index_t *f, const uint32_t *ids,
		const uint32_t *leaf, size_t n, uint32_t *cluster)
{
	if (p == NULL || f == NULL || (n && (ids == NULL || leaf == NULL || cluster == NULL)) ||
	    !flat_has_rows(f) || f->dim != p->dim)
		return VELA_EINVAL;
	for (size_t i = 0; i < n; i++)
		if (leaf[i] >= p->n_leaves || p->leaves[leaf[i]].nlist == 0 ||
		    !flat_live_has(f, ids[i]))
			return VELA_EINVAL;
	uint32_t *sel = malloc((n ? n : 1) * sizeof(uint32_t));
	uint32_t *a = malloc((n ? n : 1) * sizeof(uint32_t));
	int rc = sel && a ? 0 : VELA_ENOMEM;
	for (uint32_t li = 0; rc == 0 && li < p->n_leaves; li++) {
		uint64_t m = 0;
		for (size_t i = 0; i < n; i++)
			if (leaf[i] == li)
				sel[m++] = ids[i];
		if (m == 0)
			continue;
		const part_leaf_t *lf = &p->leaves[li];
		rc = leaf_assign(f, sel, m, lf->cent, lf->nlist, a);
		for (size_t i = 0, j = 0; rc == 0 && i < n; i++)
			if (leaf[i] == li)
				cluster[i] = lf->c0 + a[j++];
	}
	free(sel);
	free(a);
	return rc;
}

uint32_t part_clusters_over(const part_layout_t *p, uint32_t target)
{
	uint32_t over = 0;
	for (uint32_t i = 0; p && i < p->n_cl; i++) {
		uint64_t base = p->cl[i].n_built > target ? p->cl[i].n_built : target;
		over += p->cl[i].n > 2 * base;
	}
	return over;
}

bool part_contains(const part_layout_t *p, uint32_t docid)
{
	for (uint32_t li = 0; p && li < p->n_leaves; li++)
		if (roaring_bitmap_contains(p->leaves[li].docids, docid))
			return true;
	return false;
}

/* ------------------------------------------------------------ pack / unpack */

int part_pack(const part_layout_t *p, uint8_t **out, size_t *len)
{
	if (p == NULL || out == NULL || len == NULL)
		return VELA_EINVAL;
	vela_wbuf_t w = {0};
	vela_wbuf_u32(&w, PART_PACK_VERSION);
	vela_wbuf_u32(&w, p->dim);
	vela_wbuf_u32(&w, (uint32_t)p->type);
	vela_wbuf_u32(&w, (uint32_t)p->metric);
	vela_wbuf_u32(&w, p->n_leaves);
	vela_wbuf_u32(&w, p->n_cl);
	for (uint32_t li = 0; li < p->n_leaves; li++) {
		const part_leaf_t *lf = &p->leaves[li];
		vela_wbuf_u32(&w, lf->nlist);
		if (lf->nlist)
			vela_wbuf_put(&w, lf->cent, (size_t)lf->nlist * p->dim * sizeof(float));
		for (uint32_t c = lf->c0; c < lf->c0 + lf->nlist; c++) {
			vela_wbuf_u32(&w, p->cl[c].n);
			if (p->cl[c].n)
				vela_wbuf_put(&w, p->cl[c].ids, (size_t)p->cl[c].n * sizeof(uint32_t));
		}
	}
	if (w.oom) {
		free(w.b);
		return VELA_ENOMEM;
	}
	*out = w.b;
	*len = w.len;
	return 0;
}

/* Fill leaf li of p (allocated, zeroed) from r; seen: docids taken so far. */
static int leaf_unpack(part_layout_t *p, const flat_index_t *f, vela_rbuf_t *r, uint32_t li,
		       roaring_bitmap_t *seen)
{
	part_leaf_t *lf = &p->leaves[li];
	uint32_t nlist = vela_rbuf_u32(r);
	lf->c0 = p->n_cl;
	lf->cent_uid = index_backend_uid_new();
	if ((lf->docids = roaring_bitmap_create()) == NULL)
		return VELA_ENOMEM;
	if (r->bad || nlist > VELA_K_MAX || nlist > p->n_cl_cap - p->n_cl)
		return VELA_ECORRUPT;
	if (nlist == 0)
		return 0;
	size_t cb = (size_t)nlist * p->dim * sizeof(float);
	const uint8_t *cs = vela_rbuf_take(r, cb);
	if (cs == NULL)
		return VELA_ECORRUPT;
	if ((lf->cent = malloc(cb)) == NULL)
		return VELA_ENOMEM;
	memcpy(lf->cent, cs, cb);
	for (uint32_t c = 0; c < nlist; c++) { /* bounded as vectors are: finite distances */
		double n2 = 0;
		for (uint32_t j = 0; j < p->dim; j++) {
			double x = lf->cent[(size_t)c * p->dim + j];
			n2 += isfinite(x) ? x * x : INFINITY;
		}
		if (!(n2 <= FLAT_NORM_SQ_MAX))
			return VELA_ECORRUPT;
	}
	size_t row = p->stride * p->esize;
	for (uint32_t c = 0; c < nlist; c++) {
		part_cluster_t *cl = &p->cl[p->n_cl];
		uint32_t n = vela_rbuf_u32(r);
		const uint8_t *ids = r->bad || n > f->count ? NULL : vela_rbuf_take(r, (size_t)n * 4);
		if (ids == NULL)
			return VELA_ECORRUPT;
		cl->rows = vela_aligned_alloc(64, vela_mul_size(n ? n : 1, row));
		cl->norms = malloc((n ? n : 1) * sizeof(float));
		cl->ids = malloc((n ? n : 1) * sizeof(uint32_t));
		cl->bm = roaring_bitmap_create();
		cl->uid = index_backend_uid_new();
		cl->gen = 1;
		p->n_cl++;
		lf->nlist++;
		if (!cl->rows || !cl->norms || !cl->ids || !cl->bm)
			return VELA_ENOMEM;
		memcpy(cl->ids, ids, (size_t)n * 4);
		for (uint32_t i = 0; i < n; i++) {
			uint32_t id = cl->ids[i];
			/* ascending, present in f, in no other cluster */
			if ((i && id <= cl->ids[i - 1]) || !flat_live_has(f, id) ||
			    !roaring_bitmap_add_checked(seen, id))
				return VELA_ECORRUPT;
			memcpy(cl->rows + (size_t)i * row, flat_row(f, id), row);
			cl->norms[i] = f->norms[id];
		}
		cl->n = cl->cap = cl->n_built = n;
		roaring_bitmap_add_many(cl->bm, n, cl->ids);
		roaring_bitmap_or_inplace(lf->docids, cl->bm);
		lf->rows += n;
	}
	return 0;
}

int part_unpack(const flat_index_t *f, const uint8_t *buf, size_t len, part_layout_t **out)
{
	if (f == NULL || (len && buf == NULL) || out == NULL)
		return VELA_EINVAL;
	*out = NULL;
	if (!flat_has_rows(f))
		return VELA_EUNSUPPORTED;
	vela_rbuf_t r = {.b = buf, .len = len};
	uint32_t ver = vela_rbuf_u32(&r), dim = vela_rbuf_u32(&r), type = vela_rbuf_u32(&r), metric = vela_rbuf_u32(&r);
	uint32_t n_leaves = vela_rbuf_u32(&r), n_cl = vela_rbuf_u32(&r);
	if (r.bad || ver != PART_PACK_VERSION)
		return r.bad || ver < PART_PACK_VERSION ? VELA_ECORRUPT : VELA_EVERSION;
	if (dim != f->dim || type != (uint32_t)f->type || metric != (uint32_t)f->metric)
		return VELA_EDIM;
	/* every leaf takes at least 4 bytes, every cluster 4 */
	if ((uint64_t)n_leaves * 4 > len || (uint64_t)n_cl * 4 > len)
		return VELA_ECORRUPT;
	part_layout_t *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return VELA_ENOMEM;
	*p = (part_layout_t){.dim = f->dim, .metric = f->metric, .type = f->type,
			     .esize = f->esize, .stride = f->stride, .norm_max = f->norm_max,
			     .n_cl_cap = n_cl};
	p->leaves = calloc(n_leaves ? n_leaves : 1, sizeof(*p->leaves));
	p->cl = calloc(n_cl ? n_cl : 1, sizeof(*p->cl));
	roaring_bitmap_t *seen = roaring_bitmap_create();
	int rc = p->leaves && p->cl && seen ? 0 : VELA_ENOMEM;
	for (uint32_t li = 0; rc == 0 && li < n_leaves; li++) {
		p->n_leaves = li + 1;
		rc = leaf_unpack(p, f, &r, li, seen);
	}
	if (rc == 0 && (p->n_cl != n_cl || r.o != r.len))
		rc = VELA_ECORRUPT;
	if (seen)
		roaring_bitmap_free(seen);
	if (rc) {
		part_free(p);
		return rc;
	}
	*out = p;
	return 0;
}

/* ------------------------------------------------------------ search */

/* One candidate cluster of a query: its centroid distance. */
typedef struct cand {
	float d;
	uint32_t cl;
} cand_t;

/* A (cluster, query) pair to scan; full: the query takes every row. */
typedef struct probe {
	uint32_t cl, q;
	bool full;
} probe_t;

static int cand_cmp(const void *a, const void *b)
{
	const cand_t *x = a, *y = b;
	if (x->d != y->d)
		return x->d < y->d ? -1 : 1;
	return (x->cl > y->cl) - (x->cl < y->cl);
}

static int probe_cmp(const void *a, const void *b)
{
	const probe_t *x = a, *y = b;
	if (x->cl != y->cl)
		return x->cl < y->cl ? -1 : 1;
	return (x->q > y->q) - (x->q < y->q);
}

typedef struct plist {
	probe_t *v;
	size_t n, cap;
} plist_t;

static int plist_add(plist_t *l, probe_t p)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 1024;
		probe_t *v = realloc(l->v, vela_mul_size(cap, sizeof(*v)));
		if (v == NULL)
			return VELA_ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = p;
	return 0;
}

/* Per leaf: the queries holding a match there, and the leaf's centroids
 * ranked for all of them with one backend kNN. rank: nq x n_leaves
 * pointers into one allocation per leaf (NULL: the query skips the leaf);
 * full[q * n_leaves + leaf]: the filter holds the whole leaf. */
typedef struct leaf_rank {
	vela_hit_t *hits; /* nql x nlist */
	uint32_t *nh;
	uint32_t *slot;   /* per query: its row in hits, or UINT32_MAX */
} leaf_rank_t;

static int rank_leaf(const part_layout_t *p, uint32_t li, const part_query_t *qs, uint32_t nq,
		     uint8_t *full, leaf_rank_t *r)
{
	const part_leaf_t *lf = &p->leaves[li];
	r->slot = malloc(vela_mul_size(nq ? nq : 1, sizeof(uint32_t)));
	if (r->slot == NULL)
		return VELA_ENOMEM;
	uint32_t nql = 0;
	for (uint32_t i = 0; i < nq; i++) {
		r->slot[i] = UINT32_MAX;
		if (lf->nlist == 0 || qs[i].k == 0)
			continue;
		uint64_t m = qs[i].filter ? roaring_bitmap_and_cardinality(qs[i].filter, lf->docids)
					  : lf->rows;
		if (m == 0)
			continue;
		full[(size_t)i * p->n_leaves + li] = m == lf->rows;
		r->slot[i] = nql++;
	}
	if (nql == 0)
		return 0;
	float *Q = malloc(vela_mul_size((size_t)nql * p->dim, sizeof(float)));
	r->hits = malloc(vela_mul_size((size_t)nql * lf->nlist, sizeof(vela_hit_t)));
	r->nh = malloc(vela_mul_size(nql, sizeof(uint32_t)));
	int rc = Q && r->hits && r->nh ? 0 : VELA_ENOMEM;
	for (uint32_t i = 0; rc == 0 && i < nq; i++)
		if (r->slot[i] != UINT32_MAX)
			memcpy(Q + (size_t)r->slot[i] * p->dim, qs[i].q, p->dim * sizeof(float));
	if (rc == 0) {
		index_rows_t rows = {.data = lf->cent, .type = VELA_VEC_FLOAT32,
				     .metric = VELA_METRIC_L2, .dim = p->dim, .stride = p->dim,
				     .n = lf->nlist, .uid = lf->cent_uid, .generation = 1};
		index_knn_t req = {.queries = Q, .nq = nql, .k = lf->nlist};
		rc = index_backend_knn(&rows, &req, r->hits, r->nh, NULL);
	}
	free(Q);
	return rc;
}

static void rank_free(leaf_rank_t *r, uint32_t n)
{
	for (uint32_t i = 0; r && i < n; i++) {
		free(r[i].hits);
		free(r[i].nh);
		free(r[i].slot);
	}
	free(r);
}

/* Query i's clusters, nearest centroid first over its leaves, taken while
 * the matches so far are below the target (or fewer than probe_min). */
static int choose_probes(const part_layout_t *p, const leaf_rank_t *rk, const uint8_t *full,
			 part_query_t *q, uint32_t i, const part_search_opts_t *o, cand_t *c,
			 plist_t *out)
{
	size_t n = 0;
	for (uint32_t li = 0; li < p->n_leaves; li++) {
		const leaf_rank_t *r = &rk[li];
		if (r->slot == NULL || r->slot[i] == UINT32_MAX)
			continue;
		const vela_hit_t *h = r->hits + (size_t)r->slot[i] * p->leaves[li].nlist;
		for (uint32_t j = 0; j < r->nh[r->slot[i]]; j++)
			c[n++] = (cand_t){h[j].dist, p->leaves[li].c0 + h[j].docid};
	}
	qsort(c, n, sizeof(*c), cand_cmp);
	double target = (double)o->probe_factor * q->k, got = 0;
	int rc = 0;
	q->probed = 0;
	q->scored = 0;
	for (size_t j = 0; rc == 0 && j < n; j++) {
		if (o->probe_factor > 0 && got >= target && q->probed >= o->probe_min)
			break;
		const part_cluster_t *cl = &p->cl[c[j].cl];
		uint32_t li = 0;
		while (!(c[j].cl >= p->leaves[li].c0 &&
			 c[j].cl < p->leaves[li].c0 + p->leaves[li].nlist))
			li++;
		bool lfull = full[(size_t)i * p->n_leaves + li];
		uint64_t m = q->filter == NULL || lfull
				     ? cl->n
				     : roaring_bitmap_and_cardinality(q->filter, cl->bm);
		if (m == 0)
			continue;
		got += (double)m;
		q->probed++;
		q->scored += cl->n;
		rc = plist_add(out, (probe_t){c[j].cl, i, m == cl->n});
	}
	return rc;
}

/* The rows of cluster cl whose docids are in flt. */
static roaring_bitmap_t *rows_of(const part_cluster_t *cl, const roaring_bitmap_t *flt)
{
	roaring_bitmap_t *both = roaring_bitmap_and(flt, cl->bm), *rows = roaring_bitmap_create();
	uint32_t *tmp = both ? malloc((roaring_bitmap_get_cardinality(both) + 1) *
				      sizeof(uint32_t))
			     : NULL;
	if (both == NULL || rows == NULL || tmp == NULL) {
		if (both)
			roaring_bitmap_free(both);
		if (rows)
			roaring_bitmap_free(rows);
		free(tmp);
		return NULL;
	}
	uint32_t r = 0, n = 0;
	roaring_uint32_iterator_t it;
	roaring_init_iterator(both, &it);
	for (; it.has_value; roaring_advance_uint32_iterator(&it)) {
		while (cl->ids[r] < it.current_value) /* present: both is inside cl */
			r++;
		tmp[n++] = r;
	}
	roaring_bitmap_add_many(rows, n, tmp);
	roaring_bitmap_free(both);
	free(tmp);
	return rows;
}

/* Merge b (nb hits, ascending) into q's running top k. */
static void merge_hits(part_query_t *q, const vela_hit_t *b, uint32_t nb, vela_hit_t *tmp)
{
	uint32_t i = 0, j = 0, o = 0;
	while (o < q->k && (i < q->n_out || j < nb)) {
		bool take_b = i == q->n_out || (j < nb && flat_hit_less(b[j], q->out[i]));
		tmp[o++] = take_b ? b[j++] : q->out[i++];
	}
	memcpy(q->out, tmp, o * sizeof(*tmp));
	q->n_out = o;
}

/* The k nearest rows of cluster cl (row numbers, ascending (distance, row))
 * for each of the nq queries Q (nq x dim), filters[i] its rows or NULL (all).
 * The one place a cluster's rows are scored: scan_cluster and the
 * calibration both come through here. */
static int cluster_knn(const part_layout_t *p, const part_cluster_t *cl, const float *Q,
		       uint32_t nq, uint32_t k, const roaring_bitmap_t *const *filters,
		       vela_hit_t *hits, uint32_t *nh)
{
	index_rows_t rows = {.data = cl->rows, .type = p->type, .metric = p->metric,
			     .dim = p->dim, .stride = p->stride, .n = cl->n,
			     .norms = cl->norms, .norm_max = p->norm_max, .uid = cl->uid,
			     .generation = cl->gen};
	index_knn_t req = {.queries = Q, .nq = nq, .k = k, .filters = filters};
	return index_backend_knn(&rows, &req, hits, nh, NULL);
}

/* Score cluster pr[0].cl against the queries of pr[0..n). */
static int scan_cluster(const part_layout_t *p, part_query_t *qs, const probe_t *pr, uint32_t n)
{
	const part_cluster_t *cl = &p->cl[pr[0].cl];
	uint32_t kmax = 0;
	for (uint32_t i = 0; i < n; i++)
		kmax = qs[pr[i].q].k > kmax ? qs[pr[i].q].k : kmax;
	float *Q = malloc(vela_mul_size((size_t)n * p->dim, sizeof(float)));
	roaring_bitmap_t **flt = calloc(n, sizeof(*flt));
	vela_hit_t *hits = malloc(vela_mul_size((size_t)n * kmax, sizeof(vela_hit_t)));
	vela_hit_t *tmp = malloc(vela_mul_size(kmax, sizeof(vela_hit_t)));
	uint32_t *nh = malloc(n * sizeof(uint32_t));
	int rc = Q && flt && hits && tmp && nh ? 0 : VELA_ENOMEM;
	for (uint32_t i = 0; rc == 0 && i < n; i++) {
		const part_query_t *q = &qs[pr[i].q];
		memcpy(Q + (size_t)i * p->dim, q->q, p->dim * sizeof(float));
		if (!pr[i].full && (flt[i] = rows_of(cl, q->filter)) == NULL)
			rc = VELA_ENOMEM;
	}
	if (rc == 0)
		rc = cluster_knn(p, cl, Q, n, kmax, (const roaring_bitmap_t *const *)flt, hits, nh);
	for (uint32_t i = 0; rc == 0 && i < n; i++) {
		part_query_t *q = &qs[pr[i].q];
		vela_hit_t *h = hits + (size_t)i * kmax;
		uint32_t m = nh[i] < q->k ? nh[i] : q->k;
		for (uint32_t j = 0; j < m; j++)
			h[j].docid = cl->ids[h[j].docid];
		merge_hits(q, h, m, tmp);
	}
	for (uint32_t i = 0; flt && i < n; i++)
		if (flt[i])
			roaring_bitmap_free(flt[i]);
	free(Q);
	free(flt);
	free(hits);
	free(tmp);
	free(nh);
	return rc;
}

static int search_check(const part_layout_t *p, const part_query_t *qs, uint32_t nq,
			const part_search_opts_t *o)
{
	if (p == NULL || (nq && qs == NULL) || !(o->probe_factor >= PART_PROBE_FACTOR_MIN &&
						  o->probe_factor <= PART_PROBE_FACTOR_MAX) ||
	    o->probe_min < PART_PROBE_MIN_MIN || o->probe_min > PART_PROBE_MIN_MAX)
		return VELA_EINVAL;
	for (uint32_t i = 0; i < nq; i++) {
		if (qs[i].q == NULL || qs[i].k > VELA_K_MAX || (qs[i].k && qs[i].out == NULL))
			return VELA_EINVAL;
		double n2 = 0;
		for (uint32_t j = 0; j < p->dim; j++)
			n2 += (double)qs[i].q[j] * qs[i].q[j];
		if (!(n2 <= FLAT_NORM_SQ_MAX))
			return VELA_EINVAL;
	}
	return 0;
}

int part_search(const part_layout_t *p, part_query_t *qs, uint32_t nq,
		const part_search_opts_t *opts)
{
	part_search_opts_t o;
	if (opts)
		o = *opts;
	else
		part_search_opts_default(&o);
	int rc = search_check(p, qs, nq, &o);
	if (rc || nq == 0)
		return rc;
	for (uint32_t i = 0; i < nq; i++)
		qs[i].n_out = qs[i].probed = 0, qs[i].scored = 0;
	leaf_rank_t *rk = calloc(p->n_leaves ? p->n_leaves : 1, sizeof(*rk));
	uint8_t *full = calloc((size_t)nq * (p->n_leaves ? p->n_leaves : 1), 1);
	cand_t *c = malloc(vela_mul_size(p->n_cl ? p->n_cl : 1, sizeof(cand_t)));
	plist_t pl = {0};
	rc = rk && full && c ? 0 : VELA_ENOMEM;
	for (uint32_t li = 0; rc == 0 && li < p->n_leaves; li++)
		rc = rank_leaf(p, li, qs, nq, full, &rk[li]);
	for (uint32_t i = 0; rc == 0 && i < nq; i++)
		rc = choose_probes(p, rk, full, &qs[i], i, &o, c, &pl);
	rank_free(rk, p->n_leaves);
	free(full);
	free(c);
	if (rc == 0 && pl.n) /* none: a filter matching nothing (qsort(NULL) is UB) */
		qsort(pl.v, pl.n, sizeof(*pl.v), probe_cmp);
	for (size_t s = 0, e; rc == 0 && s < pl.n; s = e) {
		for (e = s + 1; e < pl.n && pl.v[e].cl == pl.v[s].cl;)
			e++;
		rc = scan_cluster(p, qs, pl.v + s, (uint32_t)(e - s));
	}
	free(pl.v);
	return rc;
}
