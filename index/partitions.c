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
	uint8_t *rows;      /* n rows in the layout's encoding, `rowb` bytes apart */
	float *norms;       /* FIELD: |x|^2 per row; LVQ8: NULL (computed per scan) */
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
	part_encoding_t enc;
	size_t rowb;       /* bytes per stored row: FIELD stride * esize, LVQ8 lvq8_row_bytes */
	float *mean;       /* LVQ8: dim floats, the build's mean (frozen); else NULL */
	float norm_max;    /* FIELD: >= every row's |x|^2 */
	part_leaf_t *leaves;
	uint32_t n_leaves;
	part_cluster_t *cl;
	uint32_t n_cl;
	uint32_t n_cl_cap; /* part_unpack: clusters allocated */
	/* part_calibrate: rows scanned for the top 10 * 4^j at mean recall
	 * cal_levels[l]; cal_steps 0 = not calibrated */
	double cal[PART_CAL_STEPS][PART_CAL_LEVELS];
	uint32_t cal_steps;
	/* the batched scan's GPU residency: uid, and gen bumped by every
	 * part_remove / part_insert (the clusters' copy on the device) */
	uint64_t uid, gen;
};

void part_opts_default(part_opts_t *o)
{
	*o = (part_opts_t){.cluster_rows = PART_CLUSTER_ROWS_DEFAULT,
			   .kmeans_iters = PART_KMEANS_ITERS_DEFAULT,
			   .kmeans_sample = PART_KMEANS_SAMPLE_DEFAULT,
			   .seed = 0x5eed,
			   .encoding = PART_ENC_FIELD};
}

void part_search_opts_default(part_search_opts_t *o)
{
	o->probe_factor = 0; /* the calibrated rule, at `recall` */
	o->probe_min = PART_PROBE_MIN_DEFAULT;
	o->recall = PART_RECALL_DEFAULT;
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

/* Row `id` of the source as floats: f's rows, or the source's decode. */
static int src_row(const part_source_t *s, uint32_t id, float *out)
{
	if (s->row)
		return s->row(s->ctx, id, out);
	row_decode(s->f, id, out);
	return 0;
}

/* Is the source readable (rows kept, or a decode)? */
static bool src_ok(const part_source_t *s)
{
	return s && s->f && (s->row || flat_has_rows(s->f));
}

/* ------------------------------------------------------------ LVQ-8 rows
 * Aguerrebere et al. 2023 §3 with one mean per layout (part_encoding_t):
 * y = x - mu, lo = min y, step = (max y - lo) / 255, c = round((y - lo) /
 * step). The constants stay f32 rather than quant_lvq's binary16: any
 * vector the FLAT index accepts (|x|^2 <= FLAT_NORM_SQ_MAX) is
 * representable, and the decode is a plain loop over the codes. */
#define LVQ8_HEAD 8u /* lo, step */

static size_t lvq8_row_bytes(uint32_t dim)
{
	return LVQ8_HEAD + (((size_t)dim + 3) & ~(size_t)3);
}

/* Row's dim floats into out; returns |x^|^2 (double sum). */
static double lvq8_decode(const float *mean, uint32_t dim, const uint8_t *row, float *out)
{
	float lo, step;
	memcpy(&lo, row, 4);
	memcpy(&step, row + 4, 4);
	const uint8_t *c = row + LVQ8_HEAD;
	double n2 = 0;
	for (uint32_t j = 0; j < dim; j++) {
		out[j] = mean[j] + (lo + step * (float)c[j]);
		n2 += (double)out[j] * out[j];
	}
	return n2;
}

/* x (dim floats) as an LVQ-8 row; tmp: dim floats. VELA_EINVAL when the
 * decoded vector falls outside the kernels' bound. */
static int lvq8_encode(const float *mean, uint32_t dim, const float *x, uint8_t *row, float *tmp)
{
	float lo = INFINITY, hi = -INFINITY;
	for (uint32_t j = 0; j < dim; j++) {
		float y = x[j] - mean[j];
		lo = y < lo ? y : lo;
		hi = y > hi ? y : hi;
	}
	if (!isfinite(lo) || !isfinite(hi) || !isfinite(hi - lo))
		return VELA_EINVAL;
	float step = (hi - lo) / 255.0f;
	memset(row, 0, lvq8_row_bytes(dim));
	memcpy(row, &lo, 4);
	memcpy(row + 4, &step, 4);
	for (uint32_t j = 0; step > 0 && j < dim; j++) {
		float t = (x[j] - mean[j] - lo) / step + 0.5f;
		row[LVQ8_HEAD + j] = t >= 255.0f ? 255 : t <= 0.0f ? 0 : (uint8_t)t;
	}
	double n2 = lvq8_decode(mean, dim, row, tmp);
	return n2 <= FLAT_NORM_SQ_MAX ? 0 : VELA_EINVAL;
}

/* x (dim floats) in the field's type (F32 or F16, zero-padded to the
 * stride) and its stored |x|^2, as flat_set would keep them. */
static int field_encode(const part_layout_t *p, const float *x, uint8_t *row, float *norm)
{
	double n2 = 0;
	memset(row, 0, p->rowb);
	if (p->type == VELA_VEC_FLOAT16) {
		uint16_t *h = (uint16_t *)row;
		quant_f32_to_f16(x, h, p->dim);
		for (uint32_t j = 0; j < p->dim; j++) {
			double v = quant_f16_to_f32_one(h[j]);
			n2 += v * v;
		}
	} else {
		memcpy(row, x, p->dim * sizeof(float));
		for (uint32_t j = 0; j < p->dim; j++)
			n2 += (double)x[j] * x[j];
	}
	*norm = (float)n2;
	return n2 <= FLAT_NORM_SQ_MAX ? 0 : VELA_EINVAL;
}

/* docid's row of s in p's encoding into `row` (p->rowb bytes) and its
 * norm (FIELD); x: dim floats of scratch. FIELD rows of a FLAT index are
 * copied as they are (flat_search's bits); others go through floats. */
static int row_store(const part_layout_t *p, const part_source_t *s, uint32_t id, float *x,
		     uint8_t *row, float *norm)
{
	*norm = 0;
	if (p->enc == PART_ENC_FIELD && s->row == NULL) {
		memcpy(row, flat_row(s->f, id), p->rowb);
		*norm = s->f->norms[id];
		return 0;
	}
	int rc = src_row(s, id, x);
	if (rc)
		return rc;
	if (p->enc == PART_ENC_LVQ8)
		return lvq8_encode(p->mean, p->dim, x, row, x);
	return field_encode(p, x, row, norm);
}

/* Row r of cluster cl as floats, in either encoding. */
static void cluster_row_decode(const part_layout_t *p, const part_cluster_t *cl, uint32_t r,
			       float *out)
{
	const uint8_t *row = cl->rows + (size_t)r * p->rowb;
	if (p->enc == PART_ENC_LVQ8)
		(void)lvq8_decode(p->mean, p->dim, row, out);
	else if (p->type == VELA_VEC_FLOAT16)
		quant_f16_to_f32((const uint16_t *)row, out, p->dim);
	else
		memcpy(out, row, p->dim * sizeof(float));
}

/* The layout's mean over every present row of the leaves (LVQ-8's mu),
 * accumulated in double. */
static int layout_mean(part_layout_t *p, const part_source_t *s,
		       const roaring_bitmap_t *const *leaves, uint32_t n_leaves)
{
	double *sum = calloc(p->dim, sizeof(double));
	float *x = malloc(p->dim * sizeof(float));
	p->mean = calloc(p->dim, sizeof(float));
	int rc = sum && x && p->mean ? 0 : VELA_ENOMEM;
	uint64_t n = 0;
	for (uint32_t li = 0; rc == 0 && li < n_leaves; li++) {
		roaring_uint32_iterator_t it;
		roaring_init_iterator(leaves[li], &it);
		for (; rc == 0 && it.has_value; roaring_advance_uint32_iterator(&it)) {
			if (!flat_live_has(s->f, it.current_value))
				continue;
			if ((rc = src_row(s, it.current_value, x)) != 0)
				break;
			for (uint32_t j = 0; j < p->dim; j++)
				sum[j] += x[j];
			n++;
		}
	}
	for (uint32_t j = 0; rc == 0 && n && j < p->dim; j++)
		p->mean[j] = (float)(sum[j] / (double)n);
	free(sum);
	free(x);
	return rc;
}

/* Centroids of one leaf: k-means on a strided sample of its rows ids[0..m),
 * nlist centroids seeded from distinct sample rows. C: nlist x dim. */
static int leaf_kmeans(const part_source_t *s, const uint32_t *ids, uint64_t m, uint32_t nlist,
		       const part_opts_t *o, uint64_t seed, float *C)
{
	uint32_t dim = s->f->dim;
	uint64_t ns = m < o->kmeans_sample ? m : o->kmeans_sample;
	float *X = malloc(vela_mul_size(ns, dim * sizeof(float)));
	uint32_t *pick = malloc(vela_mul_size(ns, sizeof(uint32_t)));
	int rc = X && pick ? 0 : VELA_ENOMEM;
	for (uint64_t i = 0; rc == 0 && i < ns; i++) {
		rc = src_row(s, ids[(uint64_t)((double)i * (double)m / (double)ns)], X + i * dim);
		pick[i] = (uint32_t)i;
	}
	for (uint32_t c = 0; rc == 0 && c < nlist; c++) { /* partial Fisher-Yates */
		uint64_t j = c + mix64(seed ^ c) % (ns - c);
		uint32_t t = pick[c];
		pick[c] = pick[j];
		pick[j] = t;
		memcpy(C + (size_t)c * dim, X + (size_t)pick[c] * dim, dim * sizeof(float));
	}
	for (uint32_t it = 0; rc == 0 && nlist > 1 && it < o->kmeans_iters; it++)
		rc = index_backend_kmeans_step(X, ns, dim, C, nlist, NULL, NULL, NULL);
	free(X);
	free(pick);
	return rc;
}

/* Assign every row to its nearest centroid (one kNN with k = 1 over the
 * centroids per chunk of rows). */
#define PART_ASSIGN_CHUNK 8192u
static int leaf_assign(const part_source_t *s, const uint32_t *ids, uint64_t m, const float *C,
		       uint32_t nlist, uint32_t *assign)
{
	uint32_t dim = s->f->dim;
	float *X = malloc(vela_mul_size(PART_ASSIGN_CHUNK, dim * sizeof(float)));
	vela_hit_t *h = malloc(PART_ASSIGN_CHUNK * sizeof(vela_hit_t));
	uint32_t *nh = malloc(PART_ASSIGN_CHUNK * sizeof(uint32_t));
	int rc = X && h && nh ? 0 : VELA_ENOMEM;
	index_rows_t rows = {.data = C, .type = VELA_VEC_FLOAT32, .metric = VELA_METRIC_L2,
			     .dim = dim, .stride = dim, .n = nlist};
	for (uint64_t b = 0; rc == 0 && b < m; b += PART_ASSIGN_CHUNK) {
		uint32_t n = (uint32_t)(m - b < PART_ASSIGN_CHUNK ? m - b : PART_ASSIGN_CHUNK);
		for (uint32_t i = 0; rc == 0 && i < n; i++)
			rc = src_row(s, ids[b + i], X + (size_t)i * dim);
		index_knn_t req = {.queries = X, .nq = n, .k = 1};
		if (rc == 0)
			rc = index_backend_knn(&rows, &req, h, nh, NULL);
		for (uint32_t i = 0; rc == 0 && i < n; i++)
			assign[b + i] = nh[i] ? h[i].docid : 0;
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

/* Allocate cluster cl for n rows (norms only for FIELD rows). */
static int cluster_alloc(const part_layout_t *p, part_cluster_t *cl, uint32_t n)
{
	uint32_t a = n ? n : 1;
	cl->rows = vela_aligned_alloc(64, vela_mul_size(a, p->rowb));
	cl->norms = p->enc == PART_ENC_FIELD ? malloc(a * sizeof(float)) : NULL;
	cl->ids = malloc(a * sizeof(uint32_t));
	cl->bm = roaring_bitmap_create();
	cl->uid = index_backend_uid_new();
	cl->gen = 1;
	cl->cap = n;
	return cl->rows && cl->ids && cl->bm && (cl->norms || p->enc != PART_ENC_FIELD)
		       ? 0
		       : VELA_ENOMEM;
}

/* Append docid's row to cl (room reserved); x: dim floats of scratch. */
static int cluster_append(part_layout_t *p, const part_source_t *s, part_cluster_t *cl,
			  uint32_t id, float *x)
{
	float nrm;
	int rc = row_store(p, s, id, x, cl->rows + (size_t)cl->n * p->rowb, &nrm);
	if (rc)
		return rc;
	if (cl->norms)
		cl->norms[cl->n] = nrm;
	if (s->row && nrm > p->norm_max) /* FIELD rows through floats: their bound */
		p->norm_max = nrm;
	cl->ids[cl->n++] = id;
	return 0;
}

/* Copy the rows of each non-empty cluster (ids ascending, so each
 * cluster's rows stay in docid order) and set the centroids to the means. */
static int leaf_store(part_layout_t *p, const part_source_t *s, part_leaf_t *lf,
		      const uint32_t *ids, uint64_t m, const uint32_t *assign, uint32_t nlist)
{
	uint32_t dim = p->dim;
	uint32_t *cnt = calloc(nlist, sizeof(uint32_t));
	double *sum = calloc((size_t)nlist * dim, sizeof(double));
	float *x = malloc(dim * sizeof(float));
	int rc = cnt && sum && x ? 0 : VELA_ENOMEM;
	for (uint64_t i = 0; rc == 0 && i < m; i++) {
		cnt[assign[i]]++;
		rc = src_row(s, ids[i], x);
		for (uint32_t j = 0; rc == 0 && j < dim; j++)
			sum[(size_t)assign[i] * dim + j] += x[j];
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
	for (uint32_t c = 0; rc == 0 && c < nlist; c++) {
		if (cnt[c] == 0)
			continue;
		part_cluster_t *cl = &p->cl[p->n_cl + lf->nlist];
		slot[c] = lf->nlist;
		for (uint32_t j = 0; j < dim; j++)
			lf->cent[(size_t)lf->nlist * dim + j] = (float)(sum[(size_t)c * dim + j] / cnt[c]);
		rc = cluster_alloc(p, cl, cnt[c]);
		cl->n_built = cnt[c];
		lf->nlist++;
	}
	p->n_cl += lf->nlist;
	for (uint64_t i = 0; rc == 0 && i < m; i++)
		rc = cluster_append(p, s, &p->cl[lf->c0 + slot[assign[i]]], ids[i], x);
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

static int leaf_build(part_layout_t *p, const part_source_t *s, const roaring_bitmap_t *docs,
		      const part_opts_t *o, uint32_t li)
{
	part_leaf_t *lf = &p->leaves[li];
	lf->docids = roaring_bitmap_and(docs, s->f->docids);
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
	lf->cent = malloc(vela_mul_size((size_t)nlist * p->dim, sizeof(float)));
	int rc = ids && assign && lf->cent ? 0 : VELA_ENOMEM;
	if (rc == 0) {
		roaring_bitmap_to_uint32_array(lf->docids, ids);
		rc = leaf_kmeans(s, ids, m, nlist, o, mix64(o->seed ^ li), lf->cent);
	}
	if (rc == 0)
		rc = leaf_assign(s, ids, m, lf->cent, nlist, assign);
	if (rc == 0)
		rc = leaf_store(p, s, lf, ids, m, assign, nlist);
	free(ids);
	free(assign);
	return rc;
}

static int opts_check(const part_opts_t *o)
{
	return o->cluster_rows < PART_CLUSTER_ROWS_MIN || o->cluster_rows > PART_CLUSTER_ROWS_MAX ||
			       o->kmeans_iters > PART_KMEANS_ITERS_MAX ||
			       o->kmeans_sample < PART_KMEANS_SAMPLE_MIN ||
			       o->kmeans_sample > PART_KMEANS_SAMPLE_MAX ||
			       (unsigned)o->encoding >= PART_ENC_COUNT
		       ? VELA_EINVAL
		       : 0;
}

/* An empty layout of s's shape in encoding enc. */
static part_layout_t *layout_alloc(const part_source_t *s, part_encoding_t enc)
{
	part_layout_t *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return NULL;
	const flat_index_t *f = s->f;
	*p = (part_layout_t){.dim = f->dim, .metric = f->metric, .type = f->type,
			     .esize = f->esize, .stride = f->stride, .enc = enc,
			     .norm_max = s->row ? 0 : f->norm_max};
	p->rowb = enc == PART_ENC_LVQ8 ? lvq8_row_bytes(f->dim) : f->stride * f->esize;
	p->uid = index_backend_uid_new();
	p->gen = 1;
	return p;
}

int part_build(const part_source_t *src, const roaring_bitmap_t *const *leaves, uint32_t n_leaves,
	       const part_opts_t *opts, part_layout_t **out)
{
	part_opts_t o;
	if (opts)
		o = *opts;
	else
		part_opts_default(&o);
	if (src == NULL || src->f == NULL || out == NULL || (n_leaves && leaves == NULL) ||
	    opts_check(&o))
		return VELA_EINVAL;
	*out = NULL;
	for (uint32_t i = 0; i < n_leaves; i++)
		if (leaves[i] == NULL)
			return VELA_EINVAL;
	if (!src_ok(src)) /* a compressed field's F32 rows were released: pass a row decode */
		return VELA_EUNSUPPORTED;
	part_layout_t *p = layout_alloc(src, o.encoding);
	if (p == NULL)
		return VELA_ENOMEM;
	p->leaves = calloc(n_leaves ? n_leaves : 1, sizeof(*p->leaves));
	int rc = p->leaves ? 0 : VELA_ENOMEM;
	if (rc == 0 && p->enc == PART_ENC_LVQ8)
		rc = layout_mean(p, src, leaves, n_leaves);
	for (uint32_t i = 0; rc == 0 && i < n_leaves; i++) {
		p->n_leaves = i + 1;
		rc = leaf_build(p, src, leaves[i], &o, i);
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
	index_backend_forget(p->uid);
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
	free(p->mean);
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
	s->encoding = p->enc;
	s->bytes = sizeof(*p) + p->n_leaves * sizeof(part_leaf_t) + p->n_cl * sizeof(part_cluster_t) +
		   (p->mean ? p->dim * sizeof(float) : 0);
	uint64_t *n = malloc((p->n_cl ? p->n_cl : 1) * sizeof(uint64_t));
	for (uint32_t i = 0; i < p->n_cl; i++) { /* rows, ids, norms: as allocated */
		const part_cluster_t *c = &p->cl[i];
		s->rows += c->n;
		s->bytes += (size_t)c->cap * (p->rowb + sizeof(uint32_t) +
					      (c->norms ? sizeof(float) : 0)) +
			    roaring_bitmap_size_in_bytes(c->bm);
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

/* The row of docid in cl, or where it would go: rows keep ascending with
 * docid (binary search). */
static uint32_t cluster_rank(const part_cluster_t *cl, uint32_t docid)
{
	uint32_t lo = 0, hi = cl->n;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (cl->ids[mid] < docid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

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
			uint32_t lo = cluster_rank(cl, docid);
			size_t row = p->rowb, after = cl->n - lo - 1;
			memmove(cl->rows + (size_t)lo * row, cl->rows + (size_t)(lo + 1) * row,
				after * row);
			if (cl->norms)
				memmove(cl->norms + lo, cl->norms + lo + 1, after * sizeof(float));
			memmove(cl->ids + lo, cl->ids + lo + 1, after * sizeof(uint32_t));
			cl->n--;
			cl->gen++;
			p->gen++;
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
	size_t row = p->rowb;
	uint8_t *rows = vela_aligned_alloc(64, vela_mul_size(cap, row));
	float *norms = cl->norms ? realloc(cl->norms, cap * sizeof(float)) : NULL;
	if (norms)
		cl->norms = norms;
	uint32_t *ids = realloc(cl->ids, cap * sizeof(uint32_t));
	if (ids)
		cl->ids = ids;
	if (rows == NULL || (cl->norms && norms == NULL) || ids == NULL) {
		free(rows);
		return VELA_ENOMEM;
	}
	memcpy(rows, cl->rows, (size_t)cl->n * row);
	free(cl->rows);
	cl->rows = rows;
	cl->cap = cap;
	return 0;
}

int part_insert(part_layout_t *p, const part_source_t *src, uint32_t cluster, uint32_t docid)
{
	const flat_index_t *f = src ? src->f : NULL;
	if (p == NULL || !src_ok(src) || cluster >= p->n_cl || !flat_live_has(f, docid) ||
	    f->dim != p->dim || f->type != p->type)
		return VELA_EINVAL;
	if (part_contains(p, docid))
		return VELA_EEXISTS;
	uint32_t li = 0;
	while (!(cluster >= p->leaves[li].c0 && cluster < p->leaves[li].c0 + p->leaves[li].nlist))
		li++;
	part_cluster_t *cl = &p->cl[cluster];
	size_t row = p->rowb;
	uint8_t *tmp = malloc(row); /* encoded first: a failure changes nothing */
	float *x = malloc(p->dim * sizeof(float)), nrm = 0;
	int rc = tmp && x ? row_store(p, src, docid, x, tmp, &nrm) : VELA_ENOMEM;
	if (rc == 0)
		rc = cluster_grow(p, cl);
	free(x);
	if (rc) {
		free(tmp);
		return rc;
	}
	uint32_t lo = cluster_rank(cl, docid);
	size_t after = cl->n - lo;
	memmove(cl->rows + (size_t)(lo + 1) * row, cl->rows + (size_t)lo * row, after * row);
	memmove(cl->ids + lo + 1, cl->ids + lo, after * sizeof(uint32_t));
	memcpy(cl->rows + (size_t)lo * row, tmp, row);
	free(tmp);
	if (cl->norms) {
		memmove(cl->norms + lo + 1, cl->norms + lo, after * sizeof(float));
		cl->norms[lo] = nrm;
	}
	cl->ids[lo] = docid;
	cl->n++;
	cl->gen++;
	p->gen++;
	roaring_bitmap_add(cl->bm, docid);
	roaring_bitmap_add(p->leaves[li].docids, docid);
	p->leaves[li].rows++;
	/* the kernels' bound covers the new row (FIELD; LVQ8 computes its own) */
	float bound = src->row ? nrm : f->norm_max;
	if (p->enc == PART_ENC_FIELD && bound > p->norm_max)
		p->norm_max = bound;
	return 0;
}

int part_assign(const part_layout_t *p, const part_source_t *src, const uint32_t *ids,
		const uint32_t *leaf, size_t n, uint32_t *cluster)
{
	if (p == NULL || !src_ok(src) || (n && (ids == NULL || leaf == NULL || cluster == NULL)) ||
	    src->f->dim != p->dim)
		return VELA_EINVAL;
	for (size_t i = 0; i < n; i++)
		if (leaf[i] >= p->n_leaves || p->leaves[leaf[i]].nlist == 0 ||
		    !flat_live_has(src->f, ids[i]))
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
		rc = leaf_assign(src, sel, m, lf->cent, lf->nlist, a);
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
	vela_wbuf_u32(&w, (uint32_t)p->enc);
	vela_wbuf_u32(&w, p->n_leaves);
	vela_wbuf_u32(&w, p->n_cl);
	if (p->enc == PART_ENC_LVQ8)
		vela_wbuf_put(&w, p->mean, p->dim * sizeof(float));
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
	vela_wbuf_u32(&w, p->cal_steps); /* version 3 */
	if (p->cal_steps)
		vela_wbuf_put(&w, p->cal, (size_t)p->cal_steps * PART_CAL_LEVELS * sizeof(double));
	if (w.oom) {
		free(w.b);
		return VELA_ENOMEM;
	}
	*out = w.b;
	*len = w.len;
	return 0;
}

/* n vectors of dim floats bounded as vectors are (finite, |v|^2 within
 * FLAT_NORM_SQ_MAX): distances to them stay finite. */
static bool vecs_bounded(const float *v, uint32_t n, uint32_t dim)
{
	for (uint32_t c = 0; c < n; c++) {
		double n2 = 0;
		for (uint32_t j = 0; j < dim; j++) {
			double x = v[(size_t)c * dim + j];
			n2 += isfinite(x) ? x * x : INFINITY;
		}
		if (!(n2 <= FLAT_NORM_SQ_MAX))
			return false;
	}
	return true;
}

/* Fill leaf li of p (allocated, zeroed) from r; seen: docids taken so far. */
static int leaf_unpack(part_layout_t *p, const part_source_t *s, vela_rbuf_t *r, uint32_t li,
		       roaring_bitmap_t *seen, float *x)
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
	if (!vecs_bounded(lf->cent, nlist, p->dim))
		return VELA_ECORRUPT;
	for (uint32_t c = 0; c < nlist; c++) {
		part_cluster_t *cl = &p->cl[p->n_cl];
		uint32_t n = vela_rbuf_u32(r);
		const uint8_t *ids = r->bad || n > s->f->count ? NULL
							       : vela_rbuf_take(r, (size_t)n * 4);
		if (ids == NULL)
			return VELA_ECORRUPT;
		int rc = cluster_alloc(p, cl, n);
		p->n_cl++;
		lf->nlist++;
		if (rc)
			return rc;
		for (uint32_t i = 0; i < n; i++) {
			uint32_t id;
			memcpy(&id, ids + (size_t)i * 4, 4);
			/* ascending, present in f, in no other cluster */
			if ((i && id <= cl->ids[i - 1]) || !flat_live_has(s->f, id) ||
			    !roaring_bitmap_add_checked(seen, id))
				return VELA_ECORRUPT;
			if ((rc = cluster_append(p, s, cl, id, x)) != 0)
				return rc;
		}
		cl->n_built = n;
		roaring_bitmap_add_many(cl->bm, n, cl->ids);
		roaring_bitmap_or_inplace(lf->docids, cl->bm);
		lf->rows += n;
	}
	return 0;
}

/* part_unpack's header: version 1 (FIELD, no encoding word), 2 or 3. */
static int unpack_head(const part_source_t *s, vela_rbuf_t *r, size_t len, uint32_t *ver,
		       uint32_t *enc, uint32_t *n_leaves, uint32_t *n_cl)
{
	const flat_index_t *f = s->f;
	uint32_t dim, type, metric;
	*ver = vela_rbuf_u32(r);
	dim = vela_rbuf_u32(r);
	type = vela_rbuf_u32(r);
	metric = vela_rbuf_u32(r);
	if (r->bad || *ver == 0 || *ver > PART_PACK_VERSION)
		return r->bad || *ver == 0 ? VELA_ECORRUPT : VELA_EVERSION;
	*enc = *ver >= 2 ? vela_rbuf_u32(r) : PART_ENC_FIELD;
	*n_leaves = vela_rbuf_u32(r);
	*n_cl = vela_rbuf_u32(r);
	if (r->bad || *enc >= PART_ENC_COUNT)
		return VELA_ECORRUPT;
	if (dim != f->dim || type != (uint32_t)f->type || metric != (uint32_t)f->metric)
		return VELA_EDIM;
	/* every leaf takes at least 4 bytes, every cluster 4 */
	if ((uint64_t)*n_leaves * 4 > len || (uint64_t)*n_cl * 4 > len)
		return VELA_ECORRUPT;
	return 0;
}

/* Version 3's calibration table: steps, then steps x levels rows to scan,
 * each finite, >= 0 and non-decreasing with the level (they are quantiles
 * of one pool). Not bounded by the rows: writes since the calibration may
 * have removed some, and a walk stops at the layout's rows anyway. */
static int cal_unpack(part_layout_t *p, vela_rbuf_t *r)
{
	uint32_t steps = vela_rbuf_u32(r);
	if (r->bad || steps > PART_CAL_STEPS)
		return VELA_ECORRUPT;
	size_t bytes = (size_t)steps * PART_CAL_LEVELS * sizeof(double);
	const uint8_t *b = steps ? vela_rbuf_take(r, bytes) : NULL;
	if (steps && b == NULL)
		return VELA_ECORRUPT;
	double cal[PART_CAL_STEPS][PART_CAL_LEVELS];
	if (steps)
		memcpy(cal, b, bytes);
	for (uint32_t j = 0; j < steps; j++)
		for (uint32_t l = 0; l < PART_CAL_LEVELS; l++) {
			double v = cal[j][l];
			if (!(v >= 0 && v < 1e18) || (l && v < cal[j][l - 1]))
				return VELA_ECORRUPT;
		}
	memcpy(p->cal, cal, bytes);
	p->cal_steps = steps;
	return 0;
}

int part_unpack(const part_source_t *src, const uint8_t *buf, size_t len, part_layout_t **out)
{
	if (src == NULL || src->f == NULL || (len && buf == NULL) || out == NULL)
		return VELA_EINVAL;
	*out = NULL;
	if (!src_ok(src))
		return VELA_EUNSUPPORTED;
	vela_rbuf_t r = {.b = buf, .len = len};
	uint32_t ver, enc, n_leaves, n_cl;
	int rc = unpack_head(src, &r, len, &ver, &enc, &n_leaves, &n_cl);
	if (rc)
		return rc;
	part_layout_t *p = layout_alloc(src, (part_encoding_t)enc);
	if (p == NULL)
		return VELA_ENOMEM;
	p->n_cl_cap = n_cl;
	p->leaves = calloc(n_leaves ? n_leaves : 1, sizeof(*p->leaves));
	p->cl = calloc(n_cl ? n_cl : 1, sizeof(*p->cl));
	float *x = malloc(p->dim * sizeof(float));
	roaring_bitmap_t *seen = roaring_bitmap_create();
	rc = p->leaves && p->cl && x && seen ? 0 : VELA_ENOMEM;
	if (rc == 0 && p->enc == PART_ENC_LVQ8) {
		const uint8_t *m = vela_rbuf_take(&r, p->dim * sizeof(float));
		p->mean = m ? malloc(p->dim * sizeof(float)) : NULL;
		rc = m == NULL ? VELA_ECORRUPT : p->mean ? 0 : VELA_ENOMEM;
		if (rc == 0) {
			memcpy(p->mean, m, p->dim * sizeof(float));
			rc = vecs_bounded(p->mean, 1, p->dim) ? 0 : VELA_ECORRUPT;
		}
	}
	for (uint32_t li = 0; rc == 0 && li < n_leaves; li++) {
		p->n_leaves = li + 1;
		rc = leaf_unpack(p, src, &r, li, seen, x);
	}
	if (rc == 0 && ver >= 3)
		rc = cal_unpack(p, &r);
	if (rc == 0 && (p->n_cl != n_cl || r.o != r.len))
		rc = VELA_ECORRUPT;
	if (seen)
		roaring_bitmap_free(seen);
	free(x);
	if (rc) {
		part_free(p);
		return rc;
	}
	*out = p;
	return 0;
}

/* ------------------------------------------------------------ search */

/* A distance and a cluster: a query's candidate cluster (its centroid
 * distance), or in the calibration a row (its distance, its cluster). */
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

/* Every centroid, for ranking them against a block of queries with one
 * product (index_backend_project: Y = Q C^T, the GPU's when present):
 * ct, dim x n_cl (column c = cluster c's centroid), and cn[c] = |c|^2, so
 * that |q - c|^2 - |q|^2 = cn[c] - 2 y[c] orders a query's clusters. */
typedef struct cent_all {
	float *ct, *cn;
} cent_all_t;

static int cent_all_make(const part_layout_t *p, cent_all_t *a)
{
	a->ct = malloc(vela_mul_size((size_t)p->dim * (p->n_cl ? p->n_cl : 1), sizeof(float)));
	a->cn = calloc(p->n_cl ? p->n_cl : 1, sizeof(float));
	if (a->ct == NULL || a->cn == NULL)
		return VELA_ENOMEM;
	for (uint32_t li = 0; li < p->n_leaves; li++) {
		const part_leaf_t *lf = &p->leaves[li];
		for (uint32_t j = 0; j < lf->nlist; j++) {
			const float *c = lf->cent + (size_t)j * p->dim;
			uint32_t col = lf->c0 + j;
			for (uint32_t d = 0; d < p->dim; d++) {
				a->ct[(size_t)d * p->n_cl + col] = c[d];
				a->cn[col] += c[d] * c[d];
			}
		}
	}
	return 0;
}

static void cent_all_free(cent_all_t *a)
{
	free(a->ct);
	free(a->cn);
}

/* Query q's candidate clusters: those of the leaves holding a match of
 * its filter (a boolean intersection: it stops at the first common
 * container, so a wide filter costs little), y: its products with every
 * centroid. Returns how many went to c; *rows: the rows of those leaves. */
static size_t query_cands(const part_layout_t *p, const cent_all_t *a, const float *y,
			  const roaring_bitmap_t *filter, cand_t *c, uint64_t *rows)
{
	size_t n = 0;
	*rows = 0;
	for (uint32_t li = 0; li < p->n_leaves; li++) {
		const part_leaf_t *lf = &p->leaves[li];
		if (lf->nlist == 0 || (filter && !roaring_bitmap_intersect(filter, lf->docids)))
			continue;
		*rows += lf->rows;
		for (uint32_t j = lf->c0; j < lf->c0 + lf->nlist; j++)
			c[n++] = (cand_t){a->cn[j] - 2 * y[j], j};
	}
	return n;
}

/* Sift c[i] down the min-heap c[0..n) ordered by cand_cmp. */
static void cand_sift(cand_t *c, size_t n, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, m = i;
		if (l < n && cand_cmp(&c[l], &c[m]) < 0)
			m = l;
		if (l + 1 < n && cand_cmp(&c[l + 1], &c[m]) < 0)
			m = l + 1;
		if (m == i)
			return;
		cand_t t = c[i];
		c[i] = c[m];
		c[m] = t;
		i = m;
	}
}

/* Make c[0..n) a heap; pop its nearest into *top. A query walks only its
 * nearest clusters (about 1 % of them at a million rows), so a heap
 * (O(n) + O(log n) per cluster taken) beats sorting them all. */
static void cand_heapify(cand_t *c, size_t n)
{
	for (size_t i = n / 2; i-- > 0;)
		cand_sift(c, n, i);
}

static bool cand_pop(cand_t *c, size_t *n, cand_t *top)
{
	if (*n == 0)
		return false;
	*top = c[0];
	c[0] = c[--*n];
	cand_sift(c, *n, 0);
	return true;
}

/* Rows in the layout's clusters. */
static uint64_t layout_rows(const part_layout_t *p)
{
	uint64_t n = 0;
	for (uint32_t li = 0; li < p->n_leaves; li++)
		n += p->leaves[li].rows;
	return n;
}

static double cal_rows(const part_layout_t *p, double kq, float recall);

/* The walk of one query: its selectivity s (matches / the layout's rows),
 * the share f of the layout's rows in the leaves it may visit, and so far
 * `got` matches in the clusters taken, `passed` rows in every cluster
 * popped (taken or without a match). */
typedef struct walk {
	double s, f, got, passed;
} walk_t;

/* Has query q walked far enough?
 * - fixed rule: probe_factor x k matches;
 * - calibrated rule (the section comment): the top k of its matches lie
 *   among the top k / s' of all rows, s' the matches' density where they
 *   lie. Two estimates of s', both must be satisfied:
 *   (1) the filter's selectivity s (a filter independent of the vectors):
 *       s R(k / s) matches taken;
 *   (2) the density the walk met, f got / passed (within its leaves),
 *       lowered by two standard deviations of its count (a few lucky
 *       matches nearby must not end the walk): f R(k / s') rows passed.
 *   (2) walks a filter correlated with the query (its matches dense nearby)
 *   as far as an unfiltered query, R(k), where (1) alone stops after
 *   s R(k / s) rows; and an anti-correlated one (few matches nearby) until
 *   the matches it meets are as dense as the rows it passed warrant, up to
 *   every cluster with a match (the exact answer at an exact scan's cost);
 * - neither (exact): never. */
static bool walk_done(const part_layout_t *p, const part_query_t *q,
		      const part_search_opts_t *o, const walk_t *w)
{
	if (o->probe_factor > 0)
		return w->got >= (double)o->probe_factor * q->k;
	if (!(o->recall > 0) || p->cal_steps == 0 || w->got <= 0 || !(w->s > 0))
		return false;
	if (w->got < w->s * cal_rows(p, (double)q->k / w->s, o->recall))
		return false;
	double lo = w->got - 2 * sqrt(w->got);
	if (lo <= 0)
		return false;
	double sl = w->f * lo / w->passed;
	return w->passed >= w->f * cal_rows(p, (double)q->k / sl, o->recall);
}

/* Query i's clusters c[0..n) (query_cands, their leaves' rows: lrows),
 * nearest centroid first, taken until walk_done (and probe_min). */
static int choose_probes(const part_layout_t *p, part_query_t *q, uint32_t i, cand_t *c,
			 size_t n, uint64_t lrows, const part_search_opts_t *o, plist_t *out)
{
	uint64_t rows = layout_rows(p), M = q->filter ? roaring_bitmap_get_cardinality(q->filter)
						      : rows;
	walk_t w = {.s = rows ? (double)(M < rows ? M : rows) / (double)rows : 1,
		    .f = rows ? (double)lrows / (double)rows : 1};
	int rc = 0;
	q->probed = 0;
	q->scored = 0;
	cand_heapify(c, n);
	cand_t top;
	while (rc == 0 && !(q->probed >= o->probe_min && walk_done(p, q, o, &w)) &&
	       cand_pop(c, &n, &top)) {
		const part_cluster_t *cl = &p->cl[top.cl];
		uint64_t m = q->filter == NULL ? cl->n
					       : roaring_bitmap_and_cardinality(q->filter, cl->bm);
		w.passed += (double)cl->n;
		if (m == 0)
			continue;
		w.got += (double)m;
		q->probed++;
		q->scored += cl->n;
		rc = plist_add(out, (probe_t){top.cl, i, m == cl->n});
	}
	return rc;
}

/* Rank the centroids for queries qs[0..nq) in blocks of PART_RANK_BLOCK
 * (one product each) and choose each query's probes. */
#define PART_RANK_BLOCK 256u
static int choose_all(const part_layout_t *p, part_query_t *qs, uint32_t nq,
		      const part_search_opts_t *o, plist_t *out)
{
	cent_all_t a = {0};
	uint32_t B = nq < PART_RANK_BLOCK ? nq : PART_RANK_BLOCK;
	float *Q = malloc(vela_mul_size((size_t)B * p->dim, sizeof(float)));
	float *Y = malloc(vela_mul_size((size_t)B * p->n_cl, sizeof(float)));
	cand_t *c = malloc(vela_mul_size(p->n_cl, sizeof(cand_t)));
	int rc = Q && Y && c ? cent_all_make(p, &a) : VELA_ENOMEM;
	for (uint32_t s = 0; rc == 0 && s < nq; s += B) {
		uint32_t b = nq - s < B ? nq - s : B;
		for (uint32_t i = 0; i < b; i++)
			memcpy(Q + (size_t)i * p->dim, qs[s + i].q, p->dim * sizeof(float));
		rc = index_backend_project(Q, b, p->dim, a.ct, p->n_cl, Y, NULL);
		for (uint32_t i = 0; rc == 0 && i < b; i++) {
			part_query_t *q = &qs[s + i];
			uint64_t lrows = 0;
			size_t n = q->k ? query_cands(p, &a, Y + (size_t)i * p->n_cl, q->filter, c,
						      &lrows)
					: 0;
			rc = choose_probes(p, q, s + i, c, n, lrows, o, out);
		}
	}
	cent_all_free(&a);
	free(Q);
	free(Y);
	free(c);
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

static int search_check(const part_layout_t *p, const part_query_t *qs, uint32_t nq,
			const part_search_opts_t *o)
{
	if (p == NULL || (nq && qs == NULL) || !(o->probe_factor >= PART_PROBE_FACTOR_MIN &&
						  o->probe_factor <= PART_PROBE_FACTOR_MAX) ||
	    !(o->recall == 0 || (o->recall >= PART_RECALL_MIN && o->recall <= PART_RECALL_MAX)) ||
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

/* Steps 1-3 of part_search: check, reset the queries' counters, choose
 * every query's probes; the pairs come back sorted by (cluster, query). */
static int plan_make(const part_layout_t *p, part_query_t *qs, uint32_t nq,
		     const part_search_opts_t *opts, plist_t *pl)
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
	if (p->n_cl)
		rc = choose_all(p, qs, nq, &o, pl);
	if (rc == 0 && pl->n) /* none: a filter matching nothing (qsort(NULL) is UB) */
		qsort(pl->v, pl->n, sizeof(*pl->v), probe_cmp);
	return rc;
}

/* Hits (pairs x k) and LVQ-8 floats decoded per batched scan call: the
 * host scratch of one index_backend_parts_knn. */
#define PART_SCAN_HITS (4u << 20)
#define PART_SCAN_DECODED (16u << 20)

/* The clusters as the backend's batched scan reads them. FIELD: the rows
 * in place with their norms (on a GPU resident by the layout's uid and
 * generation). LVQ-8: per call, each scanned cluster decoded into an F32
 * block with its norms (the others empty; transient on a GPU: nothing is
 * kept, the layout holds codes only), so distances are those of the
 * decoded vectors. */
typedef struct scan_set {
	index_rows_t *cl; /* n_cl */
	index_parts_t parts;
} scan_set_t;

static int scan_set_make(const part_layout_t *p, scan_set_t *s)
{
	s->cl = calloc(p->n_cl ? p->n_cl : 1, sizeof(*s->cl));
	if (s->cl == NULL)
		return VELA_ENOMEM;
	bool lvq = p->enc == PART_ENC_LVQ8;
	for (uint32_t c = 0; c < p->n_cl; c++) {
		const part_cluster_t *cl = &p->cl[c];
		index_rows_t r = {.type = VELA_VEC_FLOAT32, .metric = p->metric, .dim = p->dim,
				  .stride = p->dim};
		if (!lvq)
			r = (index_rows_t){.data = cl->rows, .type = p->type, .metric = p->metric,
					   .dim = p->dim, .stride = p->stride, .n = cl->n,
					   .norms = cl->norms, .norm_max = p->norm_max,
					   .uid = cl->uid, .generation = cl->gen};
		s->cl[c] = r;
	}
	s->parts = (index_parts_t){.cl = s->cl, .n_cl = p->n_cl, .uid = lvq ? 0 : p->uid,
				   .generation = p->gen};
	return 0;
}

/* LVQ-8: decode cluster c into its scan_set entry. */
static int scan_set_decode(const part_layout_t *p, scan_set_t *s, uint32_t c)
{
	const part_cluster_t *cl = &p->cl[c];
	size_t n = cl->n ? cl->n : 1;
	float *X = vela_aligned_alloc(64, vela_mul_size(n, p->dim * sizeof(float)));
	float *nrm = malloc(n * sizeof(float)), nmax = 0;
	if (X == NULL || nrm == NULL) {
		free(X);
		free(nrm);
		return VELA_ENOMEM;
	}
	for (uint32_t r = 0; r < cl->n; r++) {
		nrm[r] = (float)lvq8_decode(p->mean, p->dim, cl->rows + (size_t)r * p->rowb,
					    X + (size_t)r * p->dim);
		nmax = nrm[r] > nmax ? nrm[r] : nmax;
	}
	index_rows_t *e = &s->cl[c];
	e->data = X;
	e->norms = nrm;
	e->norm_max = nmax;
	e->n = cl->n;
	return 0;
}

/* LVQ-8: empty cluster c's entry again. */
static void scan_set_release(scan_set_t *s, uint32_t c)
{
	free((void *)s->cl[c].data);
	free((void *)s->cl[c].norms);
	s->cl[c].data = NULL;
	s->cl[c].norms = NULL;
	s->cl[c].n = 0;
	s->cl[c].norm_max = 0;
}

/* The end of the run of pairs of pl->v[s].cl. */
static size_t plan_run_end(const plist_t *pl, size_t s)
{
	size_t e = s + 1;
	while (e < pl->n && pl->v[e].cl == pl->v[s].cl)
		e++;
	return e;
}

/* The end of the scan call starting at pair s: whole clusters while the
 * hits and the decoded rows fit the bounds (at least one cluster). */
static size_t plan_call_end(const part_layout_t *p, const plist_t *pl, size_t s, uint32_t k)
{
	size_t e = s, hits = 0, dec = 0;
	while (e < pl->n) {
		size_t r = plan_run_end(pl, e);
		size_t h = (r - e) * (k ? k : 1);
		size_t d = p->enc == PART_ENC_LVQ8 ? (size_t)p->cl[pl->v[e].cl].n * p->dim : 0;
		if (e > s && (hits + h > PART_SCAN_HITS || dec + d > PART_SCAN_DECODED))
			break;
		hits += h;
		dec += d;
		e = r;
	}
	return e;
}

/* Scratch of one scan call of n pairs at k. */
typedef struct scan_call {
	index_part_pair_t *pr;
	roaring_bitmap_t **flt; /* per pair: its rows, NULL = all */
	vela_hit_t *hits, *tmp;
	uint32_t *nh;
} scan_call_t;

static int scan_call_alloc(scan_call_t *c, uint32_t n, uint32_t k)
{
	c->pr = malloc(n * sizeof(*c->pr));
	c->flt = calloc(n, sizeof(*c->flt));
	c->hits = malloc(vela_mul_size((size_t)n * k, sizeof(vela_hit_t)));
	c->tmp = malloc(vela_mul_size(k, sizeof(vela_hit_t)));
	c->nh = malloc(n * sizeof(uint32_t));
	return c->pr && c->flt && c->hits && c->tmp && c->nh ? 0 : VELA_ENOMEM;
}

static void scan_call_free(scan_call_t *c, uint32_t n)
{
	for (uint32_t i = 0; c->flt && i < n; i++)
		if (c->flt[i])
			roaring_bitmap_free(c->flt[i]);
	free(c->pr);
	free(c->flt);
	free(c->hits);
	free(c->tmp);
	free(c->nh);
}

/* The pairs of the call with their filters as row numbers (rows ascend
 * with docid: a docid's row is its rank in the cluster); LVQ-8 clusters
 * decoded. */
static int scan_call_pairs(const part_layout_t *p, const part_query_t *qs, scan_set_t *set,
			   const probe_t *pv, uint32_t n, scan_call_t *c)
{
	for (uint32_t i = 0; i < n; i++) {
		const part_cluster_t *cl = &p->cl[pv[i].cl];
		if (!pv[i].full && (c->flt[i] = rows_of(cl, qs[pv[i].q].filter)) == NULL)
			return VELA_ENOMEM;
		c->pr[i] = (index_part_pair_t){.cl = pv[i].cl, .q = pv[i].q, .filter = c->flt[i]};
		if (p->enc == PART_ENC_LVQ8 && (i == 0 || pv[i].cl != pv[i - 1].cl)) {
			int rc = scan_set_decode(p, set, pv[i].cl);
			if (rc)
				return rc;
		}
	}
	return 0;
}

/* Score pairs pv[0..n) (whole clusters, every query of k) with one batched
 * scan, then merge each pair's hits into its query in (distance, docid)
 * order. Q: the batch's queries, nq x dim. */
static int scan_call(const part_layout_t *p, part_query_t *qs, const float *Q, uint32_t nq,
		     scan_set_t *set, const probe_t *pv, uint32_t n, uint32_t k)
{
	scan_call_t c = {0};
	int rc = scan_call_alloc(&c, n, k);
	if (rc == 0)
		rc = scan_call_pairs(p, qs, set, pv, n, &c);
	index_parts_req_t req = {.queries = Q, .nq = nq, .k = k, .pairs = c.pr, .npairs = n};
	if (rc == 0)
		rc = index_backend_parts_knn(&set->parts, &req, c.hits, c.nh, NULL);
	for (uint32_t i = 0; rc == 0 && i < n; i++) {
		const part_cluster_t *cl = &p->cl[pv[i].cl];
		part_query_t *q = &qs[pv[i].q];
		vela_hit_t *h = c.hits + (size_t)i * k;
		uint32_t m = c.nh[i] < q->k ? c.nh[i] : q->k;
		for (uint32_t j = 0; j < m; j++)
			h[j].docid = cl->ids[h[j].docid];
		merge_hits(q, h, m, c.tmp);
	}
	for (uint32_t i = 0; p->enc == PART_ENC_LVQ8 && i < n; i++)
		if (set->cl[pv[i].cl].data)
			scan_set_release(set, pv[i].cl);
	scan_call_free(&c, n);
	return rc;
}

/* Every pair of pl (queries of one k), in calls of whole clusters. */
static int plan_scan_k(const part_layout_t *p, part_query_t *qs, const float *Q, uint32_t nq,
		       scan_set_t *set, const plist_t *pl, uint32_t k)
{
	int rc = 0;
	for (size_t s = 0, e; rc == 0 && s < pl->n; s = e) {
		e = plan_call_end(p, pl, s, k);
		rc = scan_call(p, qs, Q, nq, set, pl->v + s, (uint32_t)(e - s), k);
	}
	return rc;
}

static int u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

/* The distinct k > 0 of the queries, ascending, into ks; returns how many. */
static uint32_t plan_ks(const part_query_t *qs, uint32_t nq, uint32_t *ks)
{
	uint32_t m = 0;
	for (uint32_t i = 0; i < nq; i++)
		if (qs[i].k)
			ks[m++] = qs[i].k;
	if (m > 1)
		qsort(ks, m, sizeof(*ks), u32_cmp);
	uint32_t d = 0;
	for (uint32_t i = 0; i < m; i++)
		if (d == 0 || ks[i] != ks[d - 1])
			ks[d++] = ks[i];
	return d;
}

/* The pairs of pl whose query has k, in pl's order. */
static void plan_of_k(const part_query_t *qs, const plist_t *pl, uint32_t k, plist_t *sub)
{
	sub->n = 0;
	for (size_t i = 0; i < pl->n; i++)
		if (qs[pl->v[i].q].k == k)
			sub->v[sub->n++] = pl->v[i];
}

/* The queries as one nq x dim matrix, the backend's request. */
static float *plan_queries(const part_layout_t *p, const part_query_t *qs, uint32_t nq)
{
	float *Q = malloc(vela_mul_size((size_t)(nq ? nq : 1) * p->dim, sizeof(float)));
	for (uint32_t i = 0; Q && i < nq; i++)
		memcpy(Q + (size_t)i * p->dim, qs[i].q, p->dim * sizeof(float));
	return Q;
}

/* Steps 4-5: every cluster of the plan against its queries, through the
 * backend's batched scan: one call per k the queries ask (most batches:
 * one), split only to bound host memory. Each query is scanned at its own
 * k, so a cluster costs the CPU what one knn per cluster did. */
static int plan_scan(const part_layout_t *p, part_query_t *qs, uint32_t nq, const plist_t *pl)
{
	if (pl->n == 0)
		return 0;
	uint32_t *ks = malloc(nq * sizeof(uint32_t)), nk = ks ? plan_ks(qs, nq, ks) : 0;
	float *Q = plan_queries(p, qs, nq);
	scan_set_t set = {0};
	plist_t sub = {.v = nk > 1 ? malloc(vela_mul_size(pl->n, sizeof(probe_t))) : NULL};
	int rc = ks && Q && (nk < 2 || sub.v) ? scan_set_make(p, &set) : VELA_ENOMEM;
	for (uint32_t i = 0; rc == 0 && i < nk; i++) {
		if (nk > 1)
			plan_of_k(qs, pl, ks[i], &sub);
		rc = plan_scan_k(p, qs, Q, nq, &set, nk > 1 ? &sub : pl, ks[i]);
	}
	free(set.cl);
	free(sub.v);
	free(Q);
	free(ks);
	return rc;
}

int part_search(const part_layout_t *p, part_query_t *qs, uint32_t nq,
		const part_search_opts_t *opts)
{
	plist_t pl = {0};
	int rc = plan_make(p, qs, nq, opts, &pl);
	if (rc == 0)
		rc = plan_scan(p, qs, nq, &pl);
	free(pl.v);
	return rc;
}

/* ------------------------------------------------------------ plan dump
 * The format of part_search_plan_dump (index.h), little-endian. */
#define PART_DUMP_MAGIC 0x44535056u /* "VPSD" */

typedef struct dump_w {
	FILE *f;
	int rc;
} dump_w_t;

static void dump_bytes(dump_w_t *w, const void *b, size_t n)
{
	if (w->rc == 0 && n && fwrite(b, 1, n, w->f) != n)
		w->rc = VELA_EIO;
}

static void dump_u32(dump_w_t *w, uint32_t x)
{
	uint8_t b[4] = {(uint8_t)x, (uint8_t)(x >> 8), (uint8_t)(x >> 16), (uint8_t)(x >> 24)};
	dump_bytes(w, b, 4);
}

static void dump_u64(dump_w_t *w, uint64_t x)
{
	dump_u32(w, (uint32_t)x);
	dump_u32(w, (uint32_t)(x >> 32));
}

static void dump_f32(dump_w_t *w, float x)
{
	uint32_t u;
	memcpy(&u, &x, 4);
	dump_u32(w, u);
}

/* One scanned cluster: its rows as F32 (decoded), their norms and norm_max
 * as the batched scan passes them, then its (query, filter) pairs. */
static void dump_cluster(dump_w_t *w, const part_layout_t *p, const part_query_t *qs,
			 const probe_t *pr, uint32_t n, float *x)
{
	const part_cluster_t *cl = &p->cl[pr[0].cl];
	double nmax = p->norm_max;
	if (p->enc == PART_ENC_LVQ8) { /* scan_set_decode's norms */
		nmax = 0;
		for (uint32_t r = 0; r < cl->n; r++) {
			double n2 = (float)lvq8_decode(p->mean, p->dim, cl->rows + (size_t)r * p->rowb, x);
			nmax = n2 > nmax ? n2 : nmax;
		}
	}
	dump_u32(w, pr[0].cl);
	dump_u32(w, cl->n);
	dump_u32(w, n);
	dump_f32(w, (float)nmax);
	for (uint32_t r = 0; r < cl->n; r++)
		dump_u32(w, cl->ids[r]);
	for (uint32_t r = 0; r < cl->n; r++) {
		float n2 = p->enc == PART_ENC_LVQ8
				   ? (float)lvq8_decode(p->mean, p->dim, cl->rows + (size_t)r * p->rowb, x)
				   : cl->norms[r];
		dump_f32(w, n2);
	}
	for (uint32_t r = 0; r < cl->n; r++) {
		cluster_row_decode(p, cl, r, x);
		for (uint32_t d = 0; d < p->dim; d++)
			dump_f32(w, x[d]);
	}
	for (uint32_t i = 0; i < n && w->rc == 0; i++) {
		dump_u32(w, pr[i].q);
		if (pr[i].full) {
			dump_u32(w, UINT32_MAX);
			continue;
		}
		roaring_bitmap_t *rows = rows_of(cl, qs[pr[i].q].filter);
		if (rows == NULL) {
			w->rc = VELA_ENOMEM;
			break;
		}
		dump_u32(w, (uint32_t)roaring_bitmap_get_cardinality(rows));
		roaring_uint32_iterator_t it;
		roaring_init_iterator(rows, &it);
		for (; it.has_value; roaring_advance_uint32_iterator(&it))
			dump_u32(w, it.current_value);
		roaring_bitmap_free(rows);
	}
}

int part_search_plan_dump(const part_layout_t *p, part_query_t *qs, uint32_t nq,
			  const part_search_opts_t *o, FILE *f)
{
	if (f == NULL)
		return VELA_EINVAL;
	plist_t pl = {0};
	int rc = plan_make(p, qs, nq, o, &pl);
	uint32_t n_cl = 0;
	for (size_t s = 0; rc == 0 && s < pl.n; s = plan_run_end(&pl, s))
		n_cl++;
	float *x = rc ? NULL : malloc(p->dim * sizeof(float));
	dump_w_t w = {f, rc ? rc : x ? 0 : VELA_ENOMEM};
	dump_u32(&w, PART_DUMP_MAGIC);
	dump_u32(&w, PART_DUMP_VERSION);
	dump_u32(&w, p->dim);
	dump_u32(&w, (uint32_t)p->metric);
	dump_u32(&w, (uint32_t)p->type);
	dump_u32(&w, (uint32_t)p->enc);
	dump_u32(&w, nq);
	dump_u32(&w, n_cl);
	dump_u64(&w, pl.n);
	for (uint32_t i = 0; i < nq && w.rc == 0; i++) {
		dump_u32(&w, qs[i].k);
		for (uint32_t d = 0; d < p->dim; d++)
			dump_f32(&w, qs[i].q[d]);
	}
	for (size_t s = 0, e; w.rc == 0 && s < pl.n; s = e) {
		e = plan_run_end(&pl, s);
		dump_cluster(&w, p, qs, pl.v + s, (uint32_t)(e - s), x);
	}
	if (w.rc == 0) /* the engine's answers, for the replay to check */
		w.rc = plan_scan(p, qs, nq, &pl);
	for (uint32_t i = 0; i < nq && w.rc == 0; i++) {
		dump_u32(&w, qs[i].n_out);
		for (uint32_t j = 0; j < qs[i].n_out; j++) {
			dump_u32(&w, qs[i].out[j].docid);
			dump_f32(&w, qs[i].out[j].dist);
		}
	}
	dump_u32(&w, PART_DUMP_MAGIC);
	if (w.rc == 0 && fflush(f))
		w.rc = VELA_EIO;
	free(x);
	free(pl.v);
	return w.rc;
}

/* ------------------------------------------------------------ calibration
 * How many rows must a query scan, nearest centroid first, for its top k'
 * to be found with mean recall r? The answer depends on the data (on how
 * much locality k-means finds in it), so it is measured on the layout
 * itself rather than fixed: Quake's recall model and MicroNN's "rows
 * scanned" budget (reference/hybrid-queries.md §1.6) in their simplest
 * form. Sample rows of the layout serve as queries (each one's own row left
 * out); for each k' of a ladder, every true neighbour of every sample query
 * contributes the rows that query scans until it reaches the neighbour's
 * cluster; pooled over the queries, the r-quantile of those counts is the
 * rows that give mean recall r (each neighbour weighs 1 / (queries x k')).
 * A filtered query of selectivity s wants the top k among its matches,
 * which (for a filter independent of the vectors) lie among the top k / s
 * of all rows: it scans R(k / s) rows, s R(k / s) of them matches, and
 * choose_probes stops once it has seen that many matches (counted in
 * matches, so that an anti-correlated filter still walks far enough). */

static const float cal_levels[PART_CAL_LEVELS] = {0.5f, 0.6f, 0.7f, 0.8f, 0.85f,
						  0.9f, 0.95f, 0.98f, 0.99f, 1.0f};

/* The k' of ladder step j: 10, 40, 160, ... */
static double cal_k(uint32_t j)
{
	return 10.0 * pow(4.0, (double)j);
}

/* A query's K nearest rows so far, each as (its distance, its cluster): a
 * max-heap on d (the root: the farthest kept), so each further row costs
 * one comparison unless it is nearer than the root. */
typedef struct cal_heap {
	cand_t *v;
	size_t n, cap;
} cal_heap_t;

static void cal_heap_push(cal_heap_t *h, cand_t x)
{
	size_t i;
	if (h->n < h->cap) {
		for (i = h->n++; i && h->v[(i - 1) / 2].d < x.d; i = (i - 1) / 2)
			h->v[i] = h->v[(i - 1) / 2];
		h->v[i] = x;
		return;
	}
	if (!(x.d < h->v[0].d))
		return;
	for (i = 0;;) { /* replace the root, sift down */
		size_t l = 2 * i + 1, m = l;
		if (l >= h->n)
			break;
		if (l + 1 < h->n && h->v[l + 1].d > h->v[l].d)
			m = l + 1;
		if (!(h->v[m].d > x.d))
			break;
		h->v[i] = h->v[m];
		i = m;
	}
	h->v[i] = x;
}

/* The sample queries: rows at an even stride over the clusters. */
static int cal_sample(const part_layout_t *p, uint64_t n, uint32_t nc, float *Q, uint32_t *self)
{
	uint32_t c = 0;
	uint64_t before = 0;
	for (uint32_t i = 0; i < nc; i++) {
		uint64_t g = (uint64_t)(((double)i + 0.5) * (double)n / nc);
		while (c < p->n_cl && g >= before + p->cl[c].n)
			before += p->cl[c++].n;
		if (c == p->n_cl)
			return VELA_EINVAL;
		cluster_row_decode(p, &p->cl[c], (uint32_t)(g - before), Q + (size_t)i * p->dim);
		self[i] = p->cl[c].ids[g - before];
	}
	return 0;
}

/* cum[c]: the rows query i scans through cluster c, nearest centroid first
 * over every leaf, as choose_probes walks them (Y: the sample queries'
 * products with every centroid). */
static int cal_order(const part_layout_t *p, const cent_all_t *a, const float *Y, uint32_t i,
		     cand_t *c, uint64_t *cum)
{
	uint64_t lrows;
	size_t n = query_cands(p, a, Y + (size_t)i * p->n_cl, NULL, c, &lrows);
	if (n)
		qsort(c, n, sizeof(*c), cand_cmp);
	uint64_t run = 0;
	for (size_t j = 0; j < n; j++) {
		run += p->cl[c[j].cl].n;
		cum[c[j].cl] = run;
	}
	return 0;
}

/* Cluster c's rows decoded, transposed (X: dim x n) with their |x|^2. */
static void cal_cluster_t(const part_layout_t *p, const part_cluster_t *cl, float *row,
			  float *X, float *nrm)
{
	for (uint32_t r = 0; r < cl->n; r++) {
		cluster_row_decode(p, cl, r, row);
		double s = 0;
		for (uint32_t d = 0; d < p->dim; d++) {
			X[(size_t)d * cl->n + r] = row[d];
			s += (double)row[d] * row[d];
		}
		nrm[r] = (float)s;
	}
}

/* Every sample query's nearest rows (its own left out) into its heap: per
 * cluster one product (index_backend_project) of the queries with the
 * decoded rows. Orders only: L2 by |x|^2 - 2 q.x, IP and COSINE (rows and
 * queries normalised) by -q.x. */
static int cal_scan(const part_layout_t *p, const float *Q, const uint32_t *self, uint32_t nc,
		    cal_heap_t *h)
{
	uint32_t cmax = 1;
	for (uint32_t c = 0; c < p->n_cl; c++)
		cmax = p->cl[c].n > cmax ? p->cl[c].n : cmax;
	float *X = malloc(vela_mul_size((size_t)cmax, p->dim * sizeof(float)));
	float *nrm = malloc(vela_mul_size(cmax, sizeof(float)));
	float *Y = malloc(vela_mul_size((size_t)nc, (size_t)cmax * sizeof(float)));
	float *row = malloc(p->dim * sizeof(float));
	int rc = X && nrm && Y && row ? 0 : VELA_ENOMEM;
	bool l2 = p->metric == VELA_METRIC_L2;
	for (uint32_t c = 0; rc == 0 && c < p->n_cl; c++) {
		const part_cluster_t *cl = &p->cl[c];
		if (cl->n == 0)
			continue;
		cal_cluster_t(p, cl, row, X, nrm);
		rc = index_backend_project(Q, nc, p->dim, X, cl->n, Y, NULL);
		for (uint32_t b = 0; rc == 0 && b < nc; b++)
			for (uint32_t r = 0; r < cl->n; r++)
				if (cl->ids[r] != self[b])
					cal_heap_push(&h[b], (cand_t){
						(l2 ? nrm[r] : 0) - (l2 ? 2 : 1) * Y[(size_t)b * cl->n + r], c});
	}
	free(X);
	free(nrm);
	free(Y);
	free(row);
	return rc;
}

/* Pool query b's needs: for ladder step j, the rows scanned until each of
 * its k'_j nearest rows is reached. */
static void cal_pool(cal_heap_t *h, const uint64_t *cum, uint32_t steps, uint64_t **pool,
		     uint64_t *npool)
{
	qsort(h->v, h->n, sizeof(*h->v), cand_cmp);
	for (uint32_t j = 0; j < steps; j++) {
		size_t kj = (size_t)cal_k(j) < h->n ? (size_t)cal_k(j) : h->n;
		for (size_t i = 0; i < kj; i++)
			pool[j][npool[j]++] = cum[h->v[i].cl];
	}
}

static int u64_cmp_asc(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

/* Ladder steps worth measuring: k' below the rows (less the query's own). */
static uint32_t cal_steps(uint64_t n)
{
	uint32_t s = 0;
	while (s < PART_CAL_STEPS && cal_k(s) < (double)n)
		s++;
	return s ? s : 1;
}

/* The pooled needs' quantiles into p->cal. */
static void cal_quantiles(part_layout_t *p, uint32_t steps, uint64_t **pool, const uint64_t *npool)
{
	for (uint32_t j = 0; j < steps; j++) {
		qsort(pool[j], npool[j], sizeof(uint64_t), u64_cmp_asc);
		for (uint32_t l = 0; l < PART_CAL_LEVELS; l++) {
			size_t at = (size_t)ceil((double)cal_levels[l] * (double)npool[j]);
			p->cal[j][l] = npool[j] ? (double)pool[j][at ? at - 1 : 0] : 0;
		}
	}
	p->cal_steps = steps;
}

/* Each query's K = k'_max nearest rows (heaps), the order of its
 * clusters, and the pooled needs. */
static int cal_run(part_layout_t *p, uint64_t n, uint32_t nc, uint32_t steps, float *Q,
		   uint32_t *self, uint64_t **pool, uint64_t *npool)
{
	size_t K = (size_t)cal_k(steps - 1) < n - 1 ? (size_t)cal_k(steps - 1) : (size_t)(n - 1);
	cal_heap_t *h = calloc(nc, sizeof(*h));
	cand_t *hv = malloc(vela_mul_size((size_t)nc * K, sizeof(cand_t)));
	uint64_t *cum = malloc(vela_mul_size(p->n_cl, sizeof(uint64_t)));
	float *Y = malloc(vela_mul_size((size_t)nc * p->n_cl, sizeof(float)));
	cand_t *c = malloc(vela_mul_size(p->n_cl, sizeof(cand_t)));
	cent_all_t a = {0};
	int rc = h && hv && cum && Y && c ? cent_all_make(p, &a) : VELA_ENOMEM;
	for (uint32_t i = 0; rc == 0 && i < nc; i++)
		h[i] = (cal_heap_t){.v = hv + (size_t)i * K, .cap = K};
	if (rc == 0)
		rc = cal_sample(p, n, nc, Q, self);
	if (rc == 0)
		rc = index_backend_project(Q, nc, p->dim, a.ct, p->n_cl, Y, NULL);
	if (rc == 0)
		rc = cal_scan(p, Q, self, nc, h);
	for (uint32_t i = 0; rc == 0 && i < nc; i++) {
		rc = cal_order(p, &a, Y, i, c, cum);
		if (rc == 0)
			cal_pool(&h[i], cum, steps, pool, npool);
	}
	if (rc == 0)
		cal_quantiles(p, steps, pool, npool);
	cent_all_free(&a);
	free(h);
	free(hv);
	free(cum);
	free(Y);
	free(c);
	return rc;
}

uint32_t part_calibration(const part_layout_t *p, double *cal)
{
	if (p == NULL)
		return 0;
	if (cal && p->cal_steps)
		memcpy(cal, p->cal, (size_t)p->cal_steps * PART_CAL_LEVELS * sizeof(double));
	return p->cal_steps;
}

int part_calibrate(part_layout_t *p, uint32_t queries)
{
	if (p == NULL || queries < PART_CAL_QUERIES_MIN || queries > PART_CAL_QUERIES_MAX)
		return VELA_EINVAL;
	uint64_t n = 0;
	for (uint32_t c = 0; c < p->n_cl; c++)
		n += p->cl[c].n;
	p->cal_steps = 0;
	if (n < 2)
		return 0; /* nothing to learn: the rule falls back to every cluster */
	uint32_t nc = (uint32_t)(n < queries ? n : queries), steps = cal_steps(n - 1);
	float *Q = malloc(vela_mul_size((size_t)nc * p->dim, sizeof(float)));
	uint32_t *self = malloc(nc * sizeof(uint32_t));
	uint64_t *pool[PART_CAL_STEPS] = {0}, npool[PART_CAL_STEPS] = {0};
	int rc = Q && self ? 0 : VELA_ENOMEM;
	for (uint32_t j = 0; rc == 0 && j < steps; j++)
		if ((pool[j] = malloc(vela_mul_size((size_t)nc * (size_t)cal_k(j),
						    sizeof(uint64_t)))) == NULL)
			rc = VELA_ENOMEM;
	if (rc == 0)
		rc = cal_run(p, n, nc, steps, Q, self, pool, npool);
	for (uint32_t j = 0; j < steps; j++)
		free(pool[j]);
	free(Q);
	free(self);
	return rc;
}

/* R(k', r) of the calibration, interpolated: linear in r between levels,
 * log-log in k' between ladder steps, proportional to k' past the last. */
static double cal_rows_at(const part_layout_t *p, uint32_t j, float r)
{
	uint32_t l = 0;
	while (l + 1 < PART_CAL_LEVELS && cal_levels[l + 1] < r)
		l++;
	if (r <= cal_levels[0] || l + 1 == PART_CAL_LEVELS)
		return p->cal[j][r <= cal_levels[0] ? 0 : PART_CAL_LEVELS - 1];
	double t = (r - cal_levels[l]) / (cal_levels[l + 1] - cal_levels[l]);
	return p->cal[j][l] + t * (p->cal[j][l + 1] - p->cal[j][l]);
}

/* R(k') of the calibration at `recall`. */
static double cal_rows(const part_layout_t *p, double kq, float recall)
{
	double rows;
	uint32_t last = p->cal_steps - 1;
	if (kq <= cal_k(0))
		rows = cal_rows_at(p, 0, recall);
	else if (kq >= cal_k(last))
		rows = cal_rows_at(p, last, recall) * kq / cal_k(last);
	else {
		uint32_t j = 0;
		while (cal_k(j + 1) < kq)
			j++;
		double a = cal_rows_at(p, j, recall), b = cal_rows_at(p, j + 1, recall);
		double t = log(kq / cal_k(j)) / log(4.0);
		rows = a > 0 && b > 0 ? exp(log(a) + t * (log(b) - log(a))) : b;
	}
	return rows;
}

double part_probe_rows(const part_layout_t *p, uint32_t k, uint64_t matches,
		       const part_search_opts_t *o)
{
	uint64_t n = p ? layout_rows(p) : 0;
	if (p == NULL || o == NULL || matches == 0 || k == 0 || n == 0)
		return 0;
	double s = matches >= n ? 1 : (double)matches / (double)n, rows = (double)n;
	if (o->probe_factor > 0)
		rows = (double)o->probe_factor * k / s; /* its matches: factor x k */
	else if (o->recall > 0 && p->cal_steps)
		rows = cal_rows(p, (double)k / s, o->recall);
	return rows < (double)n ? rows : (double)n;
}
