/**
 * @file workload_gen.h
 * @brief A deterministic generator of hybrid-query workloads (issue 6 §4):
 * clustered vectors with attributes, filters of controlled selectivity and
 * correlation, query templates with Zipf popularity split into a past and
 * a future workload, and exact filtered ground truth.
 *
 * Header-only (static functions) so that bench/workload.c (files for
 * `vela import` / `vela batch`), bench/hybrid.c and
 * tests/unit/test_db_hybrid.c share one definition. docs/workloads.md
 * describes the model; the short version:
 *
 * - Vectors: a Gaussian mixture. `clusters` centres drawn N(0, centre_sd^2)
 *   per coordinate; document i picks a cluster uniformly and adds
 *   N(0, point_sd^2) noise. Query vectors are fresh draws from the mixture.
 * - Attributes of document i (field names as in the index schema):
 *   - `cat`  TAG, one value `k<r>`, r ~ Zipf(cat_zipf) over cat_values:
 *            independent of the vector.
 *   - `num`  NUMERIC, (perm(i) + 0.5) / n for a random permutation: a range
 *            [a, b) holds exactly round((b - a) n) documents. Independent.
 *   - `tags` TAG, 1..tags_max distinct values `t<r>`, r ~ Zipf(tag_zipf)
 *            over tag_vocab (Big-ANN filtered-track style bags). Independent.
 *   - `clu`  TAG, `g<c>`: the document's cluster c, except with probability
 *            clu_noise a uniformly random cluster. Correlated.
 *   - `pos`  NUMERIC, (rank + 0.5) / n of the vector's projection on a fixed
 *            random direction: a range of width s holds exactly s n
 *            documents, a slab of space. Correlated.
 * - Filters (wl_shape_t): independent (cat, num, one tag, two tags, cat and
 *   num), positively correlated (a `pos` slab around the query, the clusters
 *   nearest the query) and anti-correlated (the `pos` slab at the far end,
 *   the clusters farthest from the query, everything but the query's own
 *   cluster) with a target selectivity s; the realised selectivity is what
 *   ground truth counts (wl_truth) and what buckets use (wl_bucket).
 * - Workloads: `templates` (shape, target selectivity) pairs; queries pick a
 *   template with Zipf(template_zipf) popularity. Independent templates fix
 *   their constants (a recurring predicate: "filter commonality");
 *   correlated ones are relative to each query's vector. The past and the
 *   future workload draw from the same template distribution ("filter
 *   stability") with different vectors.
 *
 * Everything is a function of the parameters: the same seed gives the same
 * bytes on every machine (splitmix64 streams, no libc rand). Distances are
 * squared L2 (Redis L2) computed in double for ground truth.
 *
 * Ownership: wl_data_make fills a wl_data_t whose arrays are malloc'd;
 * wl_data_free releases them. Filters are plain values.
 */
#ifndef VELA_BENCH_WORKLOAD_GEN_H
#define VELA_BENCH_WORKLOAD_GEN_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vela/vela.h"

/* ------------------------------------------------------------ parameters */

#define WL_N_DEFAULT 50000u
#define WL_N_MIN 16u
#define WL_N_MAX 100000000u
#define WL_DIM_DEFAULT 64u
#define WL_DIM_MIN 2u
#define WL_DIM_MAX 4096u
#define WL_CLUSTERS_DEFAULT 64u
#define WL_CLUSTERS_MIN 1u
#define WL_CLUSTERS_MAX 250u /* the clu-far/near value lists stay under WL_VALS_MAX */
#define WL_CAT_VALUES_DEFAULT 1000u
#define WL_CAT_VALUES_MIN 1u
#define WL_CAT_VALUES_MAX 1000000u
#define WL_TAG_VOCAB_DEFAULT 2000u
#define WL_TAG_VOCAB_MIN 8u
#define WL_TAG_VOCAB_MAX 65535u
#define WL_TAGS_MAX_DEFAULT 4u
#define WL_TAGS_MAX_MIN 1u
#define WL_TAGS_MAX_MAX 16u
#define WL_ZIPF_DEFAULT 1.0
#define WL_ZIPF_MIN 0.0
#define WL_ZIPF_MAX 4.0
#define WL_TEMPLATES_DEFAULT 64u
#define WL_TEMPLATES_MIN 1u
#define WL_TEMPLATES_MAX 100000u

typedef struct wl_params {
	uint64_t seed;
	uint32_t n, dim, clusters;
	double centre_sd, point_sd;
	uint32_t cat_values;
	double cat_zipf;
	uint32_t tag_vocab;
	double tag_zipf;
	uint32_t tags_max;
	double clu_noise;
	uint32_t templates;
	double template_zipf;
} wl_params_t;

static inline void wl_params_default(wl_params_t *p)
{
	*p = (wl_params_t){.seed = 42, .n = WL_N_DEFAULT, .dim = WL_DIM_DEFAULT,
			   .clusters = WL_CLUSTERS_DEFAULT, .centre_sd = 1.0, .point_sd = 0.5,
			   .cat_values = WL_CAT_VALUES_DEFAULT, .cat_zipf = WL_ZIPF_DEFAULT,
			   .tag_vocab = WL_TAG_VOCAB_DEFAULT, .tag_zipf = WL_ZIPF_DEFAULT,
			   .tags_max = WL_TAGS_MAX_DEFAULT, .clu_noise = 0.1,
			   .templates = WL_TEMPLATES_DEFAULT, .template_zipf = WL_ZIPF_DEFAULT};
}

/* 0, or -1 with a reason in `why` when a parameter is out of its range. */
static inline int wl_params_check(const wl_params_t *p, const char **why)
{
#define WL_CHECK(c, msg)                                                                    \
	do {                                                                                \
		if (!(c)) {                                                                 \
			*why = msg;                                                         \
			return -1;                                                          \
		}                                                                           \
	} while (0)
	WL_CHECK(p->n >= WL_N_MIN && p->n <= WL_N_MAX, "n out of range");
	WL_CHECK(p->dim >= WL_DIM_MIN && p->dim <= WL_DIM_MAX, "dim out of range");
	WL_CHECK(p->clusters >= WL_CLUSTERS_MIN && p->clusters <= WL_CLUSTERS_MAX,
		 "clusters out of range");
	WL_CHECK(p->cat_values >= WL_CAT_VALUES_MIN && p->cat_values <= WL_CAT_VALUES_MAX,
		 "cat values out of range");
	WL_CHECK(p->tag_vocab >= WL_TAG_VOCAB_MIN && p->tag_vocab <= WL_TAG_VOCAB_MAX,
		 "tag vocabulary out of range");
	WL_CHECK(p->tags_max >= WL_TAGS_MAX_MIN && p->tags_max <= WL_TAGS_MAX_MAX &&
			 p->tags_max <= p->tag_vocab / 2,
		 "tags per document out of range");
	WL_CHECK(p->cat_zipf >= WL_ZIPF_MIN && p->cat_zipf <= WL_ZIPF_MAX &&
			 p->tag_zipf >= WL_ZIPF_MIN && p->tag_zipf <= WL_ZIPF_MAX &&
			 p->template_zipf >= WL_ZIPF_MIN && p->template_zipf <= WL_ZIPF_MAX,
		 "zipf exponent out of range");
	WL_CHECK(p->templates >= WL_TEMPLATES_MIN && p->templates <= WL_TEMPLATES_MAX,
		 "templates out of range");
	WL_CHECK(p->centre_sd >= 0 && p->point_sd > 0 && isfinite(p->centre_sd) &&
			 isfinite(p->point_sd),
		 "bad standard deviation");
	WL_CHECK(p->clu_noise >= 0 && p->clu_noise <= 1, "clu noise must be in [0, 1]");
#undef WL_CHECK
	return 0;
}

/* ------------------------------------------------------------ random numbers */

/* Independent streams: (seed, stream, index) -> a splitmix64 state. */
enum wl_stream {
	WL_S_CENTRES = 1,
	WL_S_DIR,
	WL_S_DOC,
	WL_S_PERM,
	WL_S_TEMPLATES,
	WL_S_PAST,
	WL_S_FUTURE,
	WL_S_USER, /* first stream free for callers (tests, benches) */
};

typedef struct wl_rng {
	uint64_t s;
} wl_rng_t;

static inline uint64_t wl_mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline wl_rng_t wl_rng(uint64_t seed, uint64_t stream, uint64_t index)
{
	return (wl_rng_t){wl_mix(seed ^ wl_mix(stream * 0x9e3779b97f4a7c15ull + 1) ^
				 wl_mix(index + 0x632be59bd9b4e019ull))};
}

static inline uint64_t wl_next(wl_rng_t *r) /* splitmix64 */
{
	return wl_mix(r->s += 0x9e3779b97f4a7c15ull);
}

/* Uniform in (0, 1). */
static inline double wl_unit(wl_rng_t *r)
{
	return ((double)(wl_next(r) >> 11) + 0.5) * 0x1p-53;
}

/* Uniform in [0, n) (n >= 1; the bias of a 64-bit modulus is negligible). */
static inline uint32_t wl_below(wl_rng_t *r, uint32_t n)
{
	return (uint32_t)(wl_next(r) % n);
}

static inline double wl_gauss(wl_rng_t *r) /* Box-Muller */
{
	return sqrt(-2.0 * log(wl_unit(r))) * cos(6.283185307179586 * wl_unit(r));
}

/* Zipf(a) over [0, n): cdf[i] = P(X <= i). Caller frees. */
static inline double *wl_zipf_cdf(uint32_t n, double a)
{
	double *c = malloc((size_t)n * sizeof(double)), sum = 0;
	if (c == NULL)
		return NULL;
	for (uint32_t i = 0; i < n; i++)
		c[i] = (sum += pow((double)i + 1, -a));
	for (uint32_t i = 0; i < n; i++)
		c[i] /= sum;
	c[n - 1] = 1.0;
	return c;
}

static inline uint32_t wl_zipf(wl_rng_t *r, const double *cdf, uint32_t n)
{
	double u = wl_unit(r);
	uint32_t lo = 0, hi = n - 1;
	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;
		if (cdf[mid] < u)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* ------------------------------------------------------------ the data set */

typedef struct wl_data {
	wl_params_t p;
	float *centres;       /**< clusters x dim */
	float *vecs;          /**< n x dim */
	float *dir;           /**< dim: the `pos` projection direction (unit) */
	uint32_t *cluster;    /**< n: true mixture component */
	uint32_t *cat;        /**< n: `cat` value rank */
	uint32_t *clu;        /**< n: `clu` label (noisy cluster) */
	double *num;          /**< n */
	double *pos;          /**< n */
	double *proj_sorted;  /**< n projections on dir, ascending */
	uint8_t *ntags;       /**< n */
	uint16_t *tags;       /**< n x tags_max, first ntags[i] used */
	uint32_t *cat_count;  /**< cat_values: documents per value */
	uint32_t *tag_count;  /**< tag_vocab: documents per tag */
	uint32_t *clu_count;  /**< clusters: documents per label */
} wl_data_t;

static inline void wl_data_free(wl_data_t *d)
{
	free(d->centres);
	free(d->vecs);
	free(d->dir);
	free(d->cluster);
	free(d->cat);
	free(d->clu);
	free(d->num);
	free(d->pos);
	free(d->proj_sorted);
	free(d->ntags);
	free(d->tags);
	free(d->cat_count);
	free(d->tag_count);
	free(d->clu_count);
	memset(d, 0, sizeof(*d));
}

typedef struct wl_proj {
	double v;
	uint32_t i;
} wl_proj_t;

static inline int wl_proj_cmp(const void *a, const void *b)
{
	const wl_proj_t *x = a, *y = b;
	return x->v < y->v ? -1 : x->v > y->v ? 1 : (x->i > y->i) - (x->i < y->i);
}

static inline double wl_dot_dir(const wl_data_t *d, const float *v)
{
	double s = 0;
	for (uint32_t j = 0; j < d->p.dim; j++)
		s += (double)v[j] * d->dir[j];
	return s;
}

/* One document's vector and attributes, from its own stream (so document i
 * is the same whatever n is). */
static inline void wl_doc_make(wl_data_t *d, uint32_t i, const double *cat_cdf,
			       const double *tag_cdf)
{
	const wl_params_t *p = &d->p;
	wl_rng_t r = wl_rng(p->seed, WL_S_DOC, i);
	uint32_t c = wl_below(&r, p->clusters);
	d->cluster[i] = c;
	float *v = d->vecs + (size_t)i * p->dim;
	for (uint32_t j = 0; j < p->dim; j++)
		v[j] = (float)(d->centres[(size_t)c * p->dim + j] + p->point_sd * wl_gauss(&r));
	d->cat[i] = wl_zipf(&r, cat_cdf, p->cat_values);
	d->clu[i] = wl_unit(&r) < p->clu_noise ? wl_below(&r, p->clusters) : c;
	uint32_t nt = 1 + wl_below(&r, p->tags_max), have = 0;
	uint16_t *t = d->tags + (size_t)i * p->tags_max;
	for (uint32_t tries = 0; have < nt && tries < 64 * nt; tries++) {
		uint16_t x = (uint16_t)wl_zipf(&r, tag_cdf, p->tag_vocab);
		uint32_t k = 0;
		while (k < have && t[k] != x)
			k++;
		if (k == have)
			t[have++] = x;
	}
	d->ntags[i] = (uint8_t)have;
}

/* Generate the data set. 0, or -1 (out of memory or bad parameters). */
static inline int wl_data_make(const wl_params_t *p, wl_data_t *d)
{
	const char *why;
	memset(d, 0, sizeof(*d));
	if (wl_params_check(p, &why))
		return -1;
	d->p = *p;
	size_t n = p->n, dim = p->dim;
	d->centres = malloc((size_t)p->clusters * dim * sizeof(float));
	d->vecs = malloc(n * dim * sizeof(float));
	d->dir = malloc(dim * sizeof(float));
	d->cluster = malloc(n * sizeof(uint32_t));
	d->cat = malloc(n * sizeof(uint32_t));
	d->clu = malloc(n * sizeof(uint32_t));
	d->num = malloc(n * sizeof(double));
	d->pos = malloc(n * sizeof(double));
	d->proj_sorted = malloc(n * sizeof(double));
	d->ntags = malloc(n);
	d->tags = malloc(n * p->tags_max * sizeof(uint16_t));
	d->cat_count = calloc(p->cat_values, sizeof(uint32_t));
	d->tag_count = calloc(p->tag_vocab, sizeof(uint32_t));
	d->clu_count = calloc(p->clusters, sizeof(uint32_t));
	double *cat_cdf = wl_zipf_cdf(p->cat_values, p->cat_zipf);
	double *tag_cdf = wl_zipf_cdf(p->tag_vocab, p->tag_zipf);
	uint32_t *perm = malloc(n * sizeof(uint32_t));
	wl_proj_t *proj = malloc(n * sizeof(wl_proj_t));
	if (!d->centres || !d->vecs || !d->dir || !d->cluster || !d->cat || !d->clu || !d->num ||
	    !d->pos || !d->proj_sorted || !d->ntags || !d->tags || !d->cat_count ||
	    !d->tag_count || !d->clu_count || !cat_cdf || !tag_cdf || !perm || !proj) {
		free(cat_cdf);
		free(tag_cdf);
		free(perm);
		free(proj);
		wl_data_free(d);
		return -1;
	}
	wl_rng_t r = wl_rng(p->seed, WL_S_CENTRES, 0);
	for (size_t i = 0; i < (size_t)p->clusters * dim; i++)
		d->centres[i] = (float)(p->centre_sd * wl_gauss(&r));
	r = wl_rng(p->seed, WL_S_DIR, 0);
	double norm = 0;
	for (size_t j = 0; j < dim; j++) {
		double g = wl_gauss(&r);
		d->dir[j] = (float)g;
		norm += g * g;
	}
	for (size_t j = 0; j < dim; j++)
		d->dir[j] = (float)(d->dir[j] / sqrt(norm));
	for (uint32_t i = 0; i < p->n; i++) {
		wl_doc_make(d, i, cat_cdf, tag_cdf);
		d->cat_count[d->cat[i]]++;
		d->clu_count[d->clu[i]]++;
		for (uint32_t k = 0; k < d->ntags[i]; k++)
			d->tag_count[d->tags[(size_t)i * p->tags_max + k]]++;
		proj[i] = (wl_proj_t){wl_dot_dir(d, d->vecs + (size_t)i * dim), i};
	}
	/* num: a random permutation of the ranks (Fisher-Yates). */
	r = wl_rng(p->seed, WL_S_PERM, 0);
	for (uint32_t i = 0; i < p->n; i++)
		perm[i] = i;
	for (uint32_t i = p->n - 1; i > 0; i--) {
		uint32_t j = wl_below(&r, i + 1), t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	for (uint32_t i = 0; i < p->n; i++)
		d->num[i] = ((double)perm[i] + 0.5) / (double)p->n;
	/* pos: the rank of the projection. */
	qsort(proj, n, sizeof(*proj), wl_proj_cmp);
	for (uint32_t rk = 0; rk < p->n; rk++) {
		d->pos[proj[rk].i] = ((double)rk + 0.5) / (double)p->n;
		d->proj_sorted[rk] = proj[rk].v;
	}
	free(cat_cdf);
	free(tag_cdf);
	free(perm);
	free(proj);
	return 0;
}

/* ------------------------------------------------------------ filters */

enum wl_field { WL_F_CAT, WL_F_TAGS, WL_F_CLU, WL_F_NUM, WL_F_POS };
static const char *const wl_field_names[] = {"cat", "tags", "clu", "num", "pos"};
static const char wl_value_prefix[] = {'k', 't', 'g'};

#define WL_ATOMS_MAX 3u
#define WL_VALS_MAX 256u

/* A TAG atom (any of vals; negated with neg) or a range atom [lo, hi). */
typedef struct wl_atom {
	uint8_t field, neg;
	uint16_t n_vals;
	uint32_t vals[WL_VALS_MAX];
	double lo, hi;
} wl_atom_t;

/* The AND of n atoms; n == 0 is `*`. */
typedef struct wl_filter {
	uint32_t n;
	wl_atom_t a[WL_ATOMS_MAX];
} wl_filter_t;

static inline int wl_atom_match(const wl_data_t *d, const wl_atom_t *a, uint32_t i)
{
	int hit = 0;
	switch (a->field) {
	case WL_F_NUM:
		return d->num[i] >= a->lo && d->num[i] < a->hi;
	case WL_F_POS:
		return d->pos[i] >= a->lo && d->pos[i] < a->hi;
	case WL_F_CAT:
		for (uint32_t k = 0; k < a->n_vals && !hit; k++)
			hit = d->cat[i] == a->vals[k];
		break;
	case WL_F_CLU:
		for (uint32_t k = 0; k < a->n_vals && !hit; k++)
			hit = d->clu[i] == a->vals[k];
		break;
	case WL_F_TAGS:
		for (uint32_t t = 0; t < d->ntags[i] && !hit; t++)
			for (uint32_t k = 0; k < a->n_vals && !hit; k++)
				hit = d->tags[(size_t)i * d->p.tags_max + t] == a->vals[k];
		break;
	}
	return hit != a->neg;
}

static inline int wl_match(const wl_data_t *d, const wl_filter_t *f, uint32_t i)
{
	for (uint32_t k = 0; k < f->n; k++)
		if (!wl_atom_match(d, &f->a[k], i))
			return 0;
	return 1;
}

/* The dialect-2 text of a filter (snprintf-style return). */
static inline int wl_filter_text(const wl_filter_t *f, char *buf, size_t cap)
{
	size_t len = 0;
#define WL_PUT(...)                                                                         \
	do {                                                                                \
		int n_ = snprintf(buf + (len < cap ? len : cap), len < cap ? cap - len : 0,  \
				  __VA_ARGS__);                                             \
		len += n_ > 0 ? (size_t)n_ : 0;                                             \
	} while (0)
	if (cap)
		buf[0] = '\0';
	if (f->n == 0)
		WL_PUT("*");
	for (uint32_t k = 0; k < f->n; k++) {
		const wl_atom_t *a = &f->a[k];
		WL_PUT("%s%s@%s:", k ? " " : "", a->neg ? "-" : "", wl_field_names[a->field]);
		if (a->field == WL_F_NUM || a->field == WL_F_POS) {
			WL_PUT("[%.17g (%.17g]", a->lo, a->hi);
			continue;
		}
		WL_PUT("{");
		for (uint32_t v = 0; v < a->n_vals; v++)
			WL_PUT("%s%c%u", v ? " | " : "", wl_value_prefix[a->field], a->vals[v]);
		WL_PUT("}");
	}
#undef WL_PUT
	return (int)len;
}

/* ------------------------------------------------------------ filter shapes */

typedef enum wl_shape {
	WL_ALL = 0,     /* `*` */
	WL_CAT,         /* @cat:{v}            independent, Zipf values */
	WL_NUM,         /* @num:[a (b]         independent, exact selectivity */
	WL_TAG1,        /* @tags:{t}           independent, one tag */
	WL_TAG2,        /* @tags:{t} @tags:{u} independent, two tags (AND) */
	WL_CAT_NUM,     /* @cat:{v} @num:[..]  independent conjunction */
	WL_POS_NEAR,    /* @pos slab around the query          correlated */
	WL_CLU_NEAR,    /* @clu: the clusters nearest the query correlated */
	WL_POS_FAR,     /* @pos slab at the far end            anti-correlated */
	WL_CLU_FAR,     /* @clu: the farthest clusters         anti-correlated */
	WL_CLU_NOT_OWN, /* -@clu:{own cluster}                 anti-correlated, s ~ 1 - 1/C */
	WL_SHAPES
} wl_shape_t;

static const char *const wl_shape_names[] = {"all",      "cat",      "num",     "tag1",
					     "tag2",     "cat+num",  "pos-near", "clu-near",
					     "pos-far",  "clu-far",  "clu-not-own"};

/* +1 correlated, -1 anti-correlated, 0 independent. */
static inline int wl_shape_corr(wl_shape_t s)
{
	return s == WL_POS_NEAR || s == WL_CLU_NEAR ? 1
	       : s == WL_POS_FAR || s == WL_CLU_FAR || s == WL_CLU_NOT_OWN ? -1 : 0;
}

/* Does the shape's filter depend on the query vector? */
static inline int wl_shape_relative(wl_shape_t s)
{
	return wl_shape_corr(s) != 0;
}

/* Selectivity buckets of the tests: 1e-4 .. 1 on a log scale. A
 * selectivity s > 0 goes to the bucket whose value is nearest in log space
 * (edges at the geometric midpoints); s == 0 is bucket -1 (empty). */
#define WL_BUCKETS 6
static const double wl_bucket_values[WL_BUCKETS] = {1e-4, 1e-3, 1e-2, 1e-1, 0.5, 1.0};

static inline int wl_bucket(double s)
{
	if (!(s > 0))
		return -1;
	for (int b = 0; b < WL_BUCKETS - 1; b++)
		if (s < sqrt(wl_bucket_values[b] * wl_bucket_values[b + 1]))
			return b;
	return WL_BUCKETS - 1;
}

/* A selectivity drawn log-uniformly over bucket b's span (between the
 * geometric midpoints to its neighbours; the last bucket ends at 1). */
static inline double wl_bucket_draw(wl_rng_t *r, int b)
{
	double lo = b > 0 ? sqrt(wl_bucket_values[b - 1] * wl_bucket_values[b])
			  : wl_bucket_values[0] / sqrt(10.0);
	double hi = b < WL_BUCKETS - 1 ? sqrt(wl_bucket_values[b] * wl_bucket_values[b + 1]) : 1.0;
	double s = lo * pow(hi / lo, wl_unit(r));
	return s > 1 ? 1 : s;
}

/* Squared L2 in double. */
static inline double wl_l2(const float *a, const float *b, uint32_t dim)
{
	double s = 0;
	for (uint32_t j = 0; j < dim; j++) {
		double t = (double)a[j] - (double)b[j];
		s += t * t;
	}
	return s;
}

/* A value whose count is within a factor 2 of `want` documents, picked at
 * random among the close ones (log distance within 0.1 of the best); -1 if
 * none. `skip` is excluded (-1: none). */
static inline int64_t wl_pick_count(wl_rng_t *r, const uint32_t *count, uint32_t n, double want,
				    int64_t skip)
{
	double best = INFINITY;
	for (uint32_t v = 0; v < n; v++)
		if (count[v] && (int64_t)v != skip && fabs(log(count[v] / want)) < best)
			best = fabs(log(count[v] / want));
	if (best > log(2.0))
		return -1;
	uint32_t m = 0;
	for (uint32_t v = 0; v < n; v++)
		m += count[v] && (int64_t)v != skip && fabs(log(count[v] / want)) <= best + 0.1;
	uint32_t pick = wl_below(r, m);
	for (uint32_t v = 0; v < n; v++)
		if (count[v] && (int64_t)v != skip && fabs(log(count[v] / want)) <= best + 0.1 &&
		    pick-- == 0)
			return v;
	return -1;
}

static inline wl_atom_t *wl_atom_add(wl_filter_t *f, uint8_t field)
{
	wl_atom_t *a = &f->a[f->n++];
	memset(a, 0, sizeof(*a));
	a->field = field;
	return a;
}

/* A range of m = round(s n) (>= 1) ranks starting at rank r0. */
static inline void wl_range(wl_atom_t *a, uint32_t r0, uint32_t m, uint32_t n)
{
	a->lo = (double)r0 / n;
	a->hi = (double)(r0 + m) / n;
}

static inline uint32_t wl_ranks(double s, uint32_t n)
{
	double m = floor(s * n + 0.5);
	return m < 1 ? 1 : m > n ? n : (uint32_t)m;
}

/* The rank of the query's projection among the documents'. */
static inline uint32_t wl_query_rank(const wl_data_t *d, const float *q)
{
	double x = wl_dot_dir(d, q);
	uint32_t lo = 0, hi = d->p.n;
	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;
		if (d->proj_sorted[mid] < x)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Clusters ordered by the distance of their centre to q, nearest first. */
static inline void wl_clusters_by_dist(const wl_data_t *d, const float *q, uint32_t *order)
{
	uint32_t C = d->p.clusters;
	wl_proj_t tmp[WL_CLUSTERS_MAX];
	for (uint32_t c = 0; c < C; c++)
		tmp[c] = (wl_proj_t){wl_l2(q, d->centres + (size_t)c * d->p.dim, d->p.dim), c};
	qsort(tmp, C, sizeof(tmp[0]), wl_proj_cmp);
	for (uint32_t c = 0; c < C; c++)
		order[c] = tmp[c].i;
}

/* Clusters (nearest or farthest first) covering a fraction s of the
 * documents; below one cluster's share, ANDed with a `num` range. */
static inline void wl_clu_set(const wl_data_t *d, const float *q, double s, int far,
			      wl_rng_t *r, wl_filter_t *f)
{
	uint32_t C = d->p.clusters, order[WL_CLUSTERS_MAX];
	wl_clusters_by_dist(d, q, order);
	wl_atom_t *a = wl_atom_add(f, WL_F_CLU);
	double want = s * d->p.n, have = 0;
	for (uint32_t k = 0; k < C && (have < want || a->n_vals == 0); k++) {
		uint32_t c = order[far ? C - 1 - k : k];
		/* stop at the count nearest the target */
		if (a->n_vals && fabs(have + d->clu_count[c] - want) > fabs(have - want))
			break;
		a->vals[a->n_vals++] = c;
		have += d->clu_count[c];
	}
	if (have > 1.5 * want && have > 0) {
		wl_atom_t *b = wl_atom_add(f, WL_F_NUM);
		uint32_t m = wl_ranks(want / have, d->p.n);
		wl_range(b, wl_below(r, d->p.n - m + 1), m, d->p.n);
	}
}

/* Make a filter of `shape` with target selectivity s (0 < s <= 1) for query
 * vector q (used only by relative shapes). 0, or -1 when the shape cannot
 * come near s on this data (e.g. no `cat` value that frequent). */
static inline int wl_filter_make(const wl_data_t *d, wl_shape_t shape, double s, const float *q,
				 wl_rng_t *r, wl_filter_t *f)
{
	uint32_t n = d->p.n;
	f->n = 0;
	if (!(s > 0 && s <= 1))
		return -1;
	switch (shape) {
	case WL_ALL:
		return s == 1 ? 0 : -1;
	case WL_NUM: {
		uint32_t m = wl_ranks(s, n);
		wl_range(wl_atom_add(f, WL_F_NUM), wl_below(r, n - m + 1), m, n);
		return 0;
	}
	case WL_CAT:
	case WL_TAG1: {
		int cat = shape == WL_CAT;
		int64_t v = wl_pick_count(r, cat ? d->cat_count : d->tag_count,
					  cat ? d->p.cat_values : d->p.tag_vocab, s * n, -1);
		if (v < 0)
			return -1;
		wl_atom_t *a = wl_atom_add(f, cat ? WL_F_CAT : WL_F_TAGS);
		a->vals[a->n_vals++] = (uint32_t)v;
		return 0;
	}
	case WL_TAG2: {
		/* two independent tags of about sqrt(s) each, the second sized
		 * from the first's actual count */
		int64_t t = wl_pick_count(r, d->tag_count, d->p.tag_vocab, sqrt(s) * n, -1);
		if (t < 0)
			return -1;
		double f1 = (double)d->tag_count[t] / n;
		int64_t u = wl_pick_count(r, d->tag_count, d->p.tag_vocab, s / f1 * n, t);
		if (u < 0)
			return -1;
		wl_atom_add(f, WL_F_TAGS)->vals[0] = (uint32_t)t;
		f->a[0].n_vals = 1;
		wl_atom_add(f, WL_F_TAGS)->vals[0] = (uint32_t)u;
		f->a[1].n_vals = 1;
		return 0;
	}
	case WL_CAT_NUM: {
		/* the cat value carries sqrt(s) (or as much as the most popular
		 * value has), the range the rest */
		double fc = sqrt(s), top = (double)d->cat_count[0] / n;
		int64_t v = wl_pick_count(r, d->cat_count, d->p.cat_values,
					  (fc < top ? fc : top) * n, -1);
		if (v < 0)
			return -1;
		double w = s / ((double)d->cat_count[v] / n);
		if (w > 1)
			return -1;
		wl_atom_t *a = wl_atom_add(f, WL_F_CAT);
		a->vals[a->n_vals++] = (uint32_t)v;
		uint32_t m = wl_ranks(w, n);
		wl_range(wl_atom_add(f, WL_F_NUM), wl_below(r, n - m + 1), m, n);
		return 0;
	}
	case WL_POS_NEAR:
	case WL_POS_FAR: {
		uint32_t m = wl_ranks(s, n), rq = wl_query_rank(d, q), r0;
		if (shape == WL_POS_NEAR)
			r0 = rq < m / 2 ? 0 : rq - m / 2 > n - m ? n - m : rq - m / 2;
		else /* the m ranks farthest from the query's */
			r0 = rq < n / 2 ? n - m : 0;
		wl_range(wl_atom_add(f, WL_F_POS), r0, m, n);
		return 0;
	}
	case WL_CLU_NEAR:
	case WL_CLU_FAR:
		wl_clu_set(d, q, s, shape == WL_CLU_FAR, r, f);
		return 0;
	case WL_CLU_NOT_OWN: {
		if (s < 0.5 || d->p.clusters < 2)
			return -1;
		uint32_t order[WL_CLUSTERS_MAX];
		wl_clusters_by_dist(d, q, order);
		wl_atom_t *a = wl_atom_add(f, WL_F_CLU);
		a->neg = 1;
		a->vals[a->n_vals++] = order[0];
		return 0;
	}
	case WL_SHAPES:
		break;
	}
	return -1;
}

/* ------------------------------------------------------------ queries */

/* A query vector: a fresh draw from the mixture. */
static inline void wl_query_vector(const wl_data_t *d, wl_rng_t *r, float *q)
{
	uint32_t c = wl_below(r, d->p.clusters);
	for (uint32_t j = 0; j < d->p.dim; j++)
		q[j] = (float)(d->centres[(size_t)c * d->p.dim + j] + d->p.point_sd * wl_gauss(r));
}

/* A query template: a shape and a target selectivity; independent shapes
 * also fix their constants (`fixed`). */
typedef struct wl_template {
	wl_shape_t shape;
	double s;
	int has_fixed;
	wl_filter_t fixed;
} wl_template_t;

/* `p.templates` templates: each picks a bucket uniformly, a selectivity
 * within +-0.2 decades of it (capped at 1) and a shape that can reach it.
 * Caller frees *out. 0 or -1. */
static inline int wl_templates_make(const wl_data_t *d, wl_template_t **out)
{
	wl_template_t *t = calloc(d->p.templates, sizeof(*t));
	float *q = malloc(d->p.dim * sizeof(float));
	if (t == NULL || q == NULL) {
		free(t);
		free(q);
		return -1;
	}
	wl_rng_t r = wl_rng(d->p.seed, WL_S_TEMPLATES, 0);
	for (uint32_t i = 0; i < d->p.templates; i++) {
		for (;;) {
			int b = (int)wl_below(&r, WL_BUCKETS);
			double s = wl_bucket_values[b] * pow(10, 0.4 * wl_unit(&r) - 0.2);
			s = b == WL_BUCKETS - 1 || s > 1 ? 1 : s;
			wl_shape_t sh = (wl_shape_t)wl_below(&r, WL_SHAPES);
			wl_query_vector(d, &r, q);
			if (wl_filter_make(d, sh, s, q, &r, &t[i].fixed))
				continue;
			t[i].shape = sh;
			t[i].s = s;
			t[i].has_fixed = !wl_shape_relative(sh);
			break;
		}
	}
	free(q);
	*out = t;
	return 0;
}

/* Query `i` of the past (future = 0) or future (future = 1) workload:
 * its template (Zipf popularity), vector and filter. */
static inline uint32_t wl_workload_query(const wl_data_t *d, const wl_template_t *t,
					 const double *template_cdf, int future, uint32_t i,
					 float *q, wl_filter_t *f)
{
	wl_rng_t r = wl_rng(d->p.seed, future ? WL_S_FUTURE : WL_S_PAST, i);
	uint32_t ti = wl_zipf(&r, template_cdf, d->p.templates);
	wl_query_vector(d, &r, q);
	if (t[ti].has_fixed)
		*f = t[ti].fixed;
	else if (wl_filter_make(d, t[ti].shape, t[ti].s, q, &r, f))
		f->n = 0; /* not reached: relative shapes always succeed */
	return ti;
}

/* ------------------------------------------------------------ ground truth */

/**
 * Exact filtered k nearest neighbours in double precision: the ids (docid
 * = document number) of the k closest matching documents, ascending by
 * (distance, id), into ids/dists (k slots each). Returns how many were
 * found (min(k, matches)); *matches gets the filter's match count.
 */
static inline uint32_t wl_truth(const wl_data_t *d, const wl_filter_t *f, const float *q,
				uint32_t k, uint32_t *ids, double *dists, uint64_t *matches)
{
	uint32_t got = 0;
	uint64_t m = 0;
	/* TAG atoms with many values (clu-far lists dozens of clusters) test
	 * a table over their value domain instead of the list. */
	uint8_t *tab[WL_ATOMS_MAX] = {0};
	for (uint32_t a = 0; a < f->n; a++) {
		const wl_atom_t *at = &f->a[a];
		uint32_t dom = at->field == WL_F_CAT ? d->p.cat_values
			       : at->field == WL_F_CLU ? d->p.clusters : 0;
		if (dom == 0 || at->n_vals <= 4 || (tab[a] = calloc(dom, 1)) == NULL)
			continue;
		for (uint32_t v = 0; v < at->n_vals; v++)
			tab[a][at->vals[v]] = 1;
	}
	for (uint32_t i = 0; i < d->p.n; i++) {
		int ok = 1;
		for (uint32_t a = 0; a < f->n && ok; a++) {
			if (tab[a]) {
				uint32_t v = f->a[a].field == WL_F_CAT ? d->cat[i] : d->clu[i];
				ok = tab[a][v] != f->a[a].neg;
			} else {
				ok = wl_atom_match(d, &f->a[a], i);
			}
		}
		if (!ok)
			continue;
		m++;
		if (k == 0)
			continue;
		double x = wl_l2(q, d->vecs + (size_t)i * d->p.dim, d->p.dim);
		if (got == k && !(x < dists[k - 1]))
			continue; /* ties keep the smaller id, already in */
		uint32_t pos = got < k ? got++ : k - 1;
		while (pos > 0 && dists[pos - 1] > x) {
			dists[pos] = dists[pos - 1];
			ids[pos] = ids[pos - 1];
			pos--;
		}
		dists[pos] = x;
		ids[pos] = i;
	}
	for (uint32_t a = 0; a < f->n; a++)
		free(tab[a]);
	*matches = m;
	return got;
}

/** Fields of the schema the generated documents fit (docs/workloads.md). */
#define WL_FIELDS 6

/* That schema into f[0..WL_FIELDS): cat, tags, clu (TAG), num, pos
 * (NUMERIC), v (VECTOR, L2, FLOAT32, `algo`); the caller sets the vector
 * field's graph parameters (f[WL_FIELDS - 1]) if it wants others. */
static inline void wl_fields(const wl_data_t *d, vela_algo_t algo, vela_field_def_t *f)
{
	static const char *const names[] = {"cat", "tags", "clu", "num", "pos"};
	memset(f, 0, WL_FIELDS * sizeof(*f));
	for (int i = 0; i < 5; i++) {
		f[i].name = names[i];
		f[i].type = i < 3 ? VELA_FIELD_TAG : VELA_FIELD_NUMERIC;
	}
	f[5] = (vela_field_def_t){.name = "v", .type = VELA_FIELD_VECTOR, .dim = d->p.dim,
				  .metric = VELA_METRIC_L2, .vec_type = VELA_VEC_FLOAT32,
				  .algo = algo};
}

/* HSET document i's attributes under `key` with the vector `vec` (fields v,
 * cat, tags, clu, num, pos: the schema of docs/workloads.md). Tests that
 * move documents write another document's attributes or vector this way. */
static inline int wl_doc_hset_as(vela_batch_t *b, const wl_data_t *d, uint32_t i,
				 const char *key, const float *vec, vela_err_t *err)
{
	char cat[16], tags[WL_TAGS_MAX_MAX * 8], clu[16], num[32], pos[32];
	int lc = snprintf(cat, sizeof(cat), "k%u", d->cat[i]);
	int lg = snprintf(clu, sizeof(clu), "g%u", d->clu[i]);
	int ln = snprintf(num, sizeof(num), "%.17g", d->num[i]);
	int lp = snprintf(pos, sizeof(pos), "%.17g", d->pos[i]);
	size_t lt = 0;
	for (uint32_t t = 0; t < d->ntags[i]; t++)
		lt += (size_t)snprintf(tags + lt, sizeof(tags) - lt, "%st%u", t ? "," : "",
				       d->tags[(size_t)i * d->p.tags_max + t]);
	vela_kv_t kv[] = {
		{"v", 1, vec, d->p.dim * sizeof(float)},
		{"cat", 3, cat, (size_t)lc},
		{"tags", 4, tags, lt},
		{"clu", 3, clu, (size_t)lg},
		{"num", 3, num, (size_t)ln},
		{"pos", 3, pos, (size_t)lp},
	};
	return vela_batch_hset(b, key, strlen(key), kv, 6, NULL, err);
}

/* HSET document i of `d` into batch `b` under key "doc:<i>". For the tools
 * and tests that load a generated set through the engine. */
static inline int wl_doc_hset(vela_batch_t *b, const wl_data_t *d, uint32_t i, vela_err_t *err)
{
	char key[32];
	snprintf(key, sizeof(key), "doc:%u", i);
	return wl_doc_hset_as(b, d, i, key, d->vecs + (size_t)i * d->p.dim, err);
}

#endif
