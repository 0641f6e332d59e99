/*
 * gpu_test_part.c — gpu_test's checks of batched partition scans
 * (gpu_parts_create / gpu_parts_scan) against a double-precision brute force
 * on the host.
 *
 * Clusters of 0, 1, 2, 31, 32, 33, 64, 100, 257, 1000 and 1500 rows (4099
 * too unless quick), plus one of 40 rows copied from 5 vectors (exact ties:
 * the smaller row must come first); dims 61 and 64 (3 and 130 too unless
 * quick); L2 and IP; per cluster, filters: every row, empty, one row, the
 * last row, every other row, all rows listed, a random third in random
 * order; k = 1, 10, 100, 300 and GPU_PART_K_MAX (larger than most
 * clusters). Outputs are poisoned before each call. A pair passes when each
 * of its k slots holds, in order, an allowed row, no row twice, ascending
 * (distance, row), the reference's row unless the two distances are tied
 * within 1e-5 relative (an exact tie must be broken by the smaller row), a
 * distance within 1e-4 relative of the exact one (relative to the larger of
 * |d| and sum |q_j x_j| for IP, whose 1 - <q, x> may be ~0), and UINT32_MAX
 * / INFINITY past the allowed rows. Then a batch of random pairs (many
 * blocks, a partial last one), the determinism of a repeated scan, and the
 * bad arguments (VELA_EINVAL, then a good call works).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/gpu.h"

#define TP_TOL_DIST 1e-4
#define TP_TOL_TIE 1e-5
#define TP_POISON_ID 0xABABABABu

static uint64_t tp_rng;

static uint64_t tp_next(void)
{
	tp_rng ^= tp_rng >> 12;
	tp_rng ^= tp_rng << 25;
	tp_rng ^= tp_rng >> 27;
	return tp_rng * 0x2545F4914F6CDD1DULL;
}

static double tp_unit(void) { return ((tp_next() >> 11) + 0.5) / 9007199254740992.0; }

static float tp_gauss(void)
{
	return (float)(sqrt(-2.0 * log(tp_unit())) * cos(6.283185307179586 * tp_unit()));
}

static uint32_t tp_below(uint32_t n) { return n ? (uint32_t)(tp_next() % n) : 0; }

/* ------------------------------------------------------------ data */

/* The clusters of one (dim, metric) case, back to back. */
typedef struct tp_data {
	uint32_t dim, ncl, nq;
	gpu_metric_t metric;
	uint64_t n;
	uint64_t *off; /* ncl + 1 */
	float *rows;   /* n x dim */
	float *q;      /* nq x dim */
} tp_data_t;

/* A batch: pairs, their filter rows, and each pair's exact answer sorted
 * by (distance, row) over all its allowed rows. */
typedef struct tp_ref {
	double d, mag; /* distance; scale of its rounding error */
	uint32_t row;
} tp_ref_t;

typedef struct tp_batch {
	gpu_part_pair_t *pairs;
	uint32_t npairs, nfilt, cap_pairs, cap_filt;
	uint32_t *filt;
	tp_ref_t **ref;  /* per pair */
	uint32_t *nref;  /* per pair: allowed rows */
} tp_batch_t;

static void tp_data_free(tp_data_t *t)
{
	free(t->off);
	free(t->rows);
	free(t->q);
}

static void tp_batch_free(tp_batch_t *b)
{
	for (uint32_t p = 0; b->ref && p < b->npairs; p++)
		free(b->ref[p]);
	free(b->ref);
	free(b->nref);
	free(b->pairs);
	free(b->filt);
	memset(b, 0, sizeof(*b));
}

/* Cluster sizes; the ties cluster (TP_TIES rows from 5 vectors) is last. */
#define TP_TIES 40
static const uint32_t tp_sizes[] = {0, 1, 2, 31, 32, 33, 64, 100, 257, 1000, 1500, 4099};

static int tp_data_make(tp_data_t *t, uint32_t dim, gpu_metric_t metric, int quick)
{
	uint32_t nsz = sizeof(tp_sizes) / sizeof(tp_sizes[0]) - (quick ? 1 : 0);
	memset(t, 0, sizeof(*t));
	t->dim = dim;
	t->metric = metric;
	t->ncl = nsz + 1;
	t->nq = 6;
	t->off = malloc((t->ncl + 1) * sizeof(uint64_t));
	if (!t->off)
		return -1;
	t->off[0] = 0;
	for (uint32_t c = 0; c < t->ncl; c++)
		t->off[c + 1] = t->off[c] + (c < nsz ? tp_sizes[c] : TP_TIES);
	t->n = t->off[t->ncl];
	t->rows = malloc((t->n ? t->n : 1) * dim * sizeof(float));
	t->q = malloc((size_t)t->nq * dim * sizeof(float));
	float *centre = malloc((size_t)dim * sizeof(float));
	if (!t->rows || !t->q || !centre) {
		free(centre);
		return -1;
	}
	/* rows around a few centres: realistic neighbourhoods, distinct distances */
	for (uint32_t c = 0; c < t->ncl; c++) {
		for (uint32_t j = 0; j < dim; j++)
			centre[j] = tp_gauss();
		for (uint64_t r = t->off[c]; r < t->off[c + 1]; r++) {
			float *x = t->rows + r * dim;
			if (c == nsz && r - t->off[c] >= 5) { /* ties: a copy of row r % 5 */
				memcpy(x, t->rows + (t->off[c] + (r - t->off[c]) % 5) * dim,
				       dim * sizeof(float));
				continue;
			}
			for (uint32_t j = 0; j < dim; j++)
				x[j] = centre[j] + 0.5f * tp_gauss();
		}
	}
	for (uint32_t i = 0; i < t->nq * dim; i++)
		t->q[i] = 0.7f * tp_gauss();
	free(centre);
	return 0;
}

static void tp_exact(const tp_data_t *t, const float *q, uint32_t c, uint32_t row, tp_ref_t *o)
{
	const float *x = t->rows + (t->off[c] + row) * t->dim;
	double s = 0, mag = 0;
	for (uint32_t j = 0; j < t->dim; j++) {
		if (t->metric == GPU_METRIC_L2) {
			double e = (double)q[j] - x[j];
			s += e * e;
		} else {
			s += (double)q[j] * x[j];
			mag += fabs((double)q[j] * x[j]);
		}
	}
	o->row = row;
	o->d = t->metric == GPU_METRIC_L2 ? s : 1.0 - s;
	o->mag = t->metric == GPU_METRIC_L2 ? s : mag + 1.0;
}

static int tp_ref_cmp(const void *x, const void *y)
{
	const tp_ref_t *a = x, *b = y;
	if (a->d != b->d)
		return a->d < b->d ? -1 : 1;
	return (a->row > b->row) - (a->row < b->row);
}

/* Append a pair (rows == NULL: every row) and its sorted exact answer. */
static int tp_add(tp_batch_t *b, const tp_data_t *t, uint32_t c, uint32_t q, const uint32_t *rows,
		  uint32_t nrows)
{
	if (b->npairs == b->cap_pairs) {
		uint32_t cap = b->cap_pairs ? 2 * b->cap_pairs : 64;
		gpu_part_pair_t *p = realloc(b->pairs, cap * sizeof(*p));
		tp_ref_t **r = p ? realloc(b->ref, cap * sizeof(*r)) : NULL;
		if (p)
			b->pairs = p;
		if (r)
			b->ref = r;
		uint32_t *n = r ? realloc(b->nref, cap * sizeof(*n)) : NULL;
		if (!n)
			return -1;
		b->nref = n;
		b->cap_pairs = cap;
	}
	if (rows && b->nfilt + nrows > b->cap_filt) {
		uint32_t cap = b->cap_filt ? b->cap_filt : 1024;
		while (cap < b->nfilt + nrows)
			cap *= 2;
		uint32_t *f = realloc(b->filt, cap * sizeof(*f));
		if (!f)
			return -1;
		b->filt = f;
		b->cap_filt = cap;
	}
	uint32_t n = (uint32_t)(t->off[c + 1] - t->off[c]), m = rows ? nrows : n;
	gpu_part_pair_t *p = &b->pairs[b->npairs];
	*p = (gpu_part_pair_t){.cluster = c, .query = q, .filter_off = b->nfilt,
			       .filter_len = rows ? nrows : GPU_PART_ALL_ROWS};
	tp_ref_t *r = malloc((m ? m : 1) * sizeof(*r));
	if (!r)
		return -1;
	for (uint32_t i = 0; i < m; i++)
		tp_exact(t, t->q + (size_t)q * t->dim, c, rows ? rows[i] : i, &r[i]);
	qsort(r, m, sizeof(*r), tp_ref_cmp);
	if (rows) {
		memcpy(b->filt + b->nfilt, rows, nrows * sizeof(uint32_t));
		b->nfilt += nrows;
	}
	b->ref[b->npairs] = r;
	b->nref[b->npairs] = m;
	b->npairs++;
	return 0;
}

/* Every cluster x every filter kind x two queries. */
static int tp_batch_kinds(tp_batch_t *b, const tp_data_t *t)
{
	uint32_t most = 1;
	for (uint32_t c = 0; c < t->ncl; c++)
		most = t->off[c + 1] - t->off[c] > most ? (uint32_t)(t->off[c + 1] - t->off[c]) : most;
	uint32_t *rows = malloc(most * sizeof(uint32_t));
	int rc = rows ? 0 : -1;
	for (uint32_t c = 0; rc == 0 && c < t->ncl; c++) {
		uint32_t n = (uint32_t)(t->off[c + 1] - t->off[c]);
		for (uint32_t v = 0; rc == 0 && v < 2; v++) {
			uint32_t q = (c + 3 * v) % t->nq, m = 0;
			rc = tp_add(b, t, c, q, NULL, 0);          /* every row */
			rc = rc ? rc : tp_add(b, t, c, q, rows, 0); /* empty */
			if (rc == 0 && n) {
				rows[0] = tp_below(n);
				rc = tp_add(b, t, c, q, rows, 1); /* one row */
				rows[0] = n - 1;
				rc = rc ? rc : tp_add(b, t, c, q, rows, 1); /* the last row */
			}
			for (uint32_t i = v; i < n; i += 2) /* every other row, odd or even */
				rows[m++] = i;
			rc = rc ? rc : tp_add(b, t, c, q, rows, m);
			for (uint32_t i = 0; i < n; i++) /* all rows, listed */
				rows[i] = i;
			rc = rc ? rc : tp_add(b, t, c, q, rows, n);
			/* a random third, in random order (descending for v = 1) */
			m = 0;
			for (uint32_t i = 0; i < n; i++)
				if (tp_below(3) == 0)
					rows[m++] = v ? n - 1 - i : i;
			for (uint32_t i = 0; v == 0 && m > 1 && i < m; i++) {
				uint32_t j = tp_below(m), x = rows[i];
				rows[i] = rows[j];
				rows[j] = x;
			}
			rc = rc ? rc : tp_add(b, t, c, q, rows, m);
		}
	}
	free(rows);
	return rc;
}

/* npairs random pairs: random cluster, query, and every row or a random
 * subset (ascending) of random density. */
static int tp_batch_random(tp_batch_t *b, const tp_data_t *t, uint32_t npairs)
{
	uint32_t most = 1;
	for (uint32_t c = 0; c < t->ncl; c++)
		most = t->off[c + 1] - t->off[c] > most ? (uint32_t)(t->off[c + 1] - t->off[c]) : most;
	uint32_t *rows = malloc(most * sizeof(uint32_t));
	int rc = rows ? 0 : -1;
	for (uint32_t p = 0; rc == 0 && p < npairs; p++) {
		uint32_t c = tp_below(t->ncl), q = tp_below(t->nq), m = 0;
		uint32_t n = (uint32_t)(t->off[c + 1] - t->off[c]), dens = 1 + tp_below(8);
		if (tp_below(3) == 0) {
			rc = tp_add(b, t, c, q, NULL, 0);
			continue;
		}
		for (uint32_t i = 0; i < n; i++)
			if (tp_below(8) < dens)
				rows[m++] = i;
		rc = tp_add(b, t, c, q, rows, m);
	}
	free(rows);
	return rc;
}

/* ------------------------------------------------------------ checks */

/* Pair p's k slots (see the top of the file). Returns 0, or 1 with why[]. */
static int tp_check_pair(const tp_data_t *t, const tp_batch_t *b, uint32_t p, uint32_t k,
			 const uint32_t *gi, const float *gd, uint8_t *mark, char *why,
			 size_t cap)
{
	const gpu_part_pair_t *pp = &b->pairs[p];
	const tp_ref_t *r = b->ref[p];
	uint32_t n = (uint32_t)(t->off[pp->cluster + 1] - t->off[pp->cluster]);
	uint32_t count = b->nref[p] < k ? b->nref[p] : k, bad = 0;
	/* mark: 1 = allowed, 2 = already returned */
	memset(mark, 0, n ? n : 1);
	for (uint32_t i = 0; i < b->nref[p]; i++)
		mark[r[i].row] = 1;
	for (uint32_t i = 0; i < k && !bad; i++) {
		bad = 1;
		if (i >= count) {
			if (gi[i] != UINT32_MAX || !(isinf(gd[i]) && gd[i] > 0))
				snprintf(why, cap, "slot %u of %u allowed: row %u dist %.9g, want empty "
					 "(UINT32_MAX, inf)", i, count, gi[i], gd[i]);
			else
				bad = 0;
			continue;
		}
		if (gi[i] >= n || mark[gi[i]] == 0) {
			snprintf(why, cap, "slot %u: row %u (dist %.9g) is not allowed; want row %u "
				 "dist %.9g", i, gi[i], gd[i], r[i].row, r[i].d);
			continue;
		}
		if (mark[gi[i]] == 2) {
			snprintf(why, cap, "slot %u: row %u returned twice", i, gi[i]);
			continue;
		}
		mark[gi[i]] = 2;
		tp_ref_t e;
		tp_exact(t, t->q + (size_t)pp->query * t->dim, pp->cluster, gi[i], &e);
		double scale = e.mag > fabs(e.d) ? e.mag : fabs(e.d);
		double rscale = r[i].mag > fabs(r[i].d) ? r[i].mag : fabs(r[i].d);
		if (gi[i] != r[i].row && e.d == r[i].d)
			snprintf(why, cap, "slot %u: row %u, want row %u: exact tie (%.9g) not broken "
				 "by the smaller row", i, gi[i], r[i].row, e.d);
		else if (gi[i] != r[i].row && fabs(e.d - r[i].d) > TP_TOL_TIE * (rscale + 1e-30))
			snprintf(why, cap, "slot %u: row %u (exact dist %.9g, got %.9g), want row %u "
				 "dist %.9g", i, gi[i], e.d, gd[i], r[i].row, r[i].d);
		else if (!(fabs(gd[i] - e.d) <= TP_TOL_DIST * (scale + 1e-30)))
			snprintf(why, cap, "slot %u: row %u dist %.9g, exact %.9g", i, gi[i], gd[i],
				 e.d);
		else if (i && (gd[i] < gd[i - 1] || (gd[i] == gd[i - 1] && gi[i] < gi[i - 1])))
			snprintf(why, cap, "slot %u: (%.9g, row %u) after (%.9g, row %u): not "
				 "ascending", i, gd[i], gi[i], gd[i - 1], gi[i - 1]);
		else
			bad = 0;
	}
	return (int)bad;
}

/* One scan of the batch with k, outputs poisoned; one pass or fail. */
static void tp_scan_check(gpu_parts_t *g, const tp_data_t *t, const tp_batch_t *b, uint32_t k,
			  const char *what, int *pass, int *fail)
{
	size_t nout = (size_t)b->npairs * k;
	uint32_t *ids = malloc((nout ? nout : 1) * sizeof(uint32_t));
	float *ds = malloc((nout ? nout : 1) * sizeof(float));
	uint8_t *mark = malloc(t->n ? t->n : 1);
	vela_err_t err = {0};
	if (!ids || !ds || !mark) {
		printf("  FAIL %s k %u: out of host memory\n", what, k);
		(*fail)++;
		goto out;
	}
	for (size_t i = 0; i < nout; i++) {
		ids[i] = TP_POISON_ID;
		ds[i] = NAN;
	}
	int rc = gpu_parts_scan(g, t->q, t->nq, b->pairs, b->npairs, b->filt, b->nfilt, k, ids, ds,
				&err);
	if (rc) {
		printf("  FAIL %s dim %u %s k %u: gpu_parts_scan: %d %s\n", what, t->dim,
		       t->metric == GPU_METRIC_L2 ? "L2" : "IP", k, rc, err.msg);
		(*fail)++;
		goto out;
	}
	uint32_t wrong = 0;
	char why[256];
	for (uint32_t p = 0; p < b->npairs; p++) {
		if (!tp_check_pair(t, b, p, k, ids + (size_t)p * k, ds + (size_t)p * k, mark, why,
				   sizeof(why)))
			continue;
		if (wrong++ == 0) {
			const gpu_part_pair_t *pp = &b->pairs[p];
			printf("  FAIL %s dim %u %s k %u: pair %u (cluster %u of %llu rows, query %u, "
			       "%s%u allowed): %s\n",
			       what, t->dim, t->metric == GPU_METRIC_L2 ? "L2" : "IP", k, p, pp->cluster,
			       (unsigned long long)(t->off[pp->cluster + 1] - t->off[pp->cluster]),
			       pp->query, pp->filter_len == GPU_PART_ALL_ROWS ? "every row, " : "filter, ",
			       b->nref[p], why);
		}
	}
	if (wrong) {
		printf("  FAIL %s dim %u %s k %u: %u of %u pairs wrong\n", what, t->dim,
		       t->metric == GPU_METRIC_L2 ? "L2" : "IP", k, wrong, b->npairs);
		(*fail)++;
	} else {
		(*pass)++;
	}
out:
	free(ids);
	free(ds);
	free(mark);
}

/* The same scan twice: bit-identical outputs. */
static void tp_determinism(gpu_parts_t *g, const tp_data_t *t, const tp_batch_t *b, int *pass,
			   int *fail)
{
	uint32_t k = 10;
	size_t nout = (size_t)b->npairs * k;
	uint32_t *i1 = malloc(nout * 4), *i2 = malloc(nout * 4);
	float *d1 = malloc(nout * 4), *d2 = malloc(nout * 4);
	vela_err_t err = {0};
	int ok = i1 && i2 && d1 && d2 &&
		 !gpu_parts_scan(g, t->q, t->nq, b->pairs, b->npairs, b->filt, b->nfilt, k, i1, d1,
				 &err) &&
		 !gpu_parts_scan(g, t->q, t->nq, b->pairs, b->npairs, b->filt, b->nfilt, k, i2, d2,
				 &err) &&
		 !memcmp(i1, i2, nout * 4) && !memcmp(d1, d2, nout * 4);
	if (ok) {
		(*pass)++;
	} else {
		printf("  FAIL parts determinism dim %u: two identical scans differ or failed (%s)\n",
		       t->dim, err.msg);
		(*fail)++;
	}
	free(i1);
	free(i2);
	free(d1);
	free(d2);
}

#define TP_EXPECT(cond, ...)                                                 \
	do {                                                                 \
		if (!(cond)) {                                               \
			printf("  FAIL parts arguments: ");                  \
			printf(__VA_ARGS__);                                 \
			printf("\n");                                        \
			bad++;                                               \
		}                                                            \
	} while (0)

/* Bad arguments: VELA_EINVAL and no harm done (a good scan afterwards). */
static void tp_bad_args(gpu_ctx_t *ctx, gpu_parts_t *g, const tp_data_t *t, const tp_batch_t *b,
			int *pass, int *fail)
{
	int bad = 0, rc;
	vela_err_t err = {0};
	uint32_t ids[4 * GPU_PART_K_MAX];
	float ds[4 * GPU_PART_K_MAX];
	uint32_t cbig = t->ncl - 2, nbig = (uint32_t)(t->off[cbig + 1] - t->off[cbig]);
	uint32_t frows[3] = {0, 1, 2};
	gpu_part_pair_t pr = {.cluster = cbig, .query = 0, .filter_off = 0, .filter_len = 3};

	rc = gpu_parts_scan(g, t->q, t->nq, &pr, 1, frows, 3, 0, ids, ds, &err);
	TP_EXPECT(rc == VELA_EINVAL, "k = 0 gave %d", rc);
	rc = gpu_parts_scan(g, t->q, t->nq, &pr, 1, frows, 3, GPU_PART_K_MAX + 1, ids, ds, &err);
	TP_EXPECT(rc == VELA_EINVAL, "k = GPU_PART_K_MAX + 1 gave %d", rc);
	pr.cluster = t->ncl;
	rc = gpu_parts_scan(g, t->q, t->nq, &pr, 1, frows, 3, 1, ids, ds, &err);
	TP_EXPECT(rc == VELA_EINVAL, "cluster out of range gave %d", rc);
	pr.cluster = cbig;
	pr.query = t->nq;
	rc = gpu_parts_scan(g, t->q, t->nq, &pr, 1, frows, 3, 1, ids, ds, &err);
	TP_EXPECT(rc == VELA_EINVAL, "query out of range gave %d", rc);
	pr.query = 1;
	pr.filter_off = 1;
	rc = gpu_parts_scan(g, t->q, t->nq, &pr, 1, frows, 3, 1, ids, ds, &err);
	TP_EXPECT(rc == VELA_EINVAL, "filter range past nfilt gave %d", rc);
	pr.filter_off = 0;
	pr.filter_len = UINT32_MAX - 1;
	rc = gpu_parts_scan(g, t->q, t->nq, &pr, 1, frows, 3, 1, ids, ds, &err);
	TP_EXPECT(rc == VELA_EINVAL, "filter length 2^32 - 2 gave %d", rc);
	/* a filter longer than its cluster (rows 0..2 of a 2-row cluster) */
	gpu_part_pair_t small = {.cluster = 2, .query = 0, .filter_off = 0, .filter_len = 3};
	rc = gpu_parts_scan(g, t->q, t->nq, &small, 1, frows, 3, 1, ids, ds, &err);
	TP_EXPECT(rc == VELA_EINVAL, "a filter longer than its 2-row cluster gave %d", rc);
	/* a row past its cluster, found by the kernel: in the third of four pairs */
	uint32_t rows2[4] = {0, nbig - 1, nbig, 5};
	gpu_part_pair_t four[4] = {
		{.cluster = cbig, .query = 0, .filter_off = 0, .filter_len = 2},
		{.cluster = cbig, .query = 1, .filter_off = 0, .filter_len = GPU_PART_ALL_ROWS},
		{.cluster = cbig, .query = 2, .filter_off = 1, .filter_len = 3},
		{.cluster = cbig, .query = 3, .filter_off = 3, .filter_len = 1},
	};
	err.msg[0] = 0;
	rc = gpu_parts_scan(g, t->q, t->nq, four, 4, rows2, 4, 4, ids, ds, &err);
	TP_EXPECT(rc == VELA_EINVAL && strstr(err.msg, "pair 2") != NULL,
		  "a filter row past its cluster gave %d (%s), want VELA_EINVAL naming pair 2", rc,
		  err.msg);
	rc = gpu_parts_scan(g, t->q, t->nq, NULL, 0, NULL, 0, 5, NULL, NULL, &err);
	TP_EXPECT(rc == 0, "an empty batch gave %d", rc);
	/* create */
	gpu_parts_t *h = NULL;
	uint64_t off3[3] = {0, 5, 4};
	rc = gpu_parts_create(ctx, t->rows, 4, t->dim, off3, 2, t->metric, &h, &err);
	TP_EXPECT(rc == VELA_EINVAL && h == NULL, "decreasing offsets gave %d", rc);
	off3[1] = 2;
	rc = gpu_parts_create(ctx, t->rows, 5, t->dim, off3, 2, t->metric, &h, &err);
	TP_EXPECT(rc == VELA_EINVAL && h == NULL, "offsets ending before n gave %d", rc);
	rc = gpu_parts_create(ctx, t->rows, 4, 0, off3, 2, t->metric, &h, &err);
	TP_EXPECT(rc == VELA_EINVAL && h == NULL, "dim 0 gave %d", rc);
	rc = gpu_parts_create(ctx, t->rows, 4, t->dim, off3, 2, (gpu_metric_t)7, &h, &err);
	TP_EXPECT(rc == VELA_EINVAL && h == NULL, "metric 7 gave %d", rc);
	gpu_parts_free(h);
	if (bad) {
		(*fail)++;
		return;
	}
	(*pass)++;
	/* after all that, a good scan is still right */
	tp_scan_check(g, t, b, 10, "parts after bad arguments", pass, fail);
}

/* ------------------------------------------------------------ driver */

int gpu_test_part(gpu_ctx_t *ctx, uint64_t seed, int quick, int *pass, int *fail)
{
	static const uint32_t dims[] = {61, 64, 3, 130};
	static const uint32_t ks[] = {1, 10, 100, 300, GPU_PART_K_MAX};
	uint32_t ndims = quick ? 2 : 4, nks = quick ? 4 : 5;
	int p0 = *pass, f0 = *fail;
	tp_rng = seed ^ 0x9E3779B97F4A7C15ULL;
	tp_rng = tp_rng ? tp_rng : 1;
	for (uint32_t di = 0; di < ndims; di++) {
		for (int mi = 0; mi < 2; mi++) {
			tp_data_t t;
			tp_batch_t b = {0}, rb = {0};
			gpu_parts_t *g = NULL;
			vela_err_t err = {0};
			gpu_metric_t met = mi ? GPU_METRIC_IP : GPU_METRIC_L2;
			int rc = tp_data_make(&t, dims[di], met, quick);
			if (rc == 0)
				rc = tp_batch_kinds(&b, &t);
			if (rc == 0)
				rc = tp_batch_random(&rb, &t, quick ? 1001 : 3001);
			if (rc) {
				printf("  FAIL parts: out of host memory\n");
				(*fail)++;
			} else if ((rc = gpu_parts_create(ctx, t.rows, t.n, t.dim, t.off, t.ncl, met, &g,
							  &err))) {
				printf("  FAIL parts dim %u: gpu_parts_create: %d %s\n", t.dim, rc,
				       err.msg);
				(*fail)++;
			} else {
				for (uint32_t ki = 0; ki < nks; ki++)
					tp_scan_check(g, &t, &b, ks[ki], "parts filters", pass, fail);
				tp_scan_check(g, &t, &rb, 32, "parts random batch", pass, fail);
				if (mi == 0 && di < 2)
					tp_determinism(g, &t, &rb, pass, fail);
				if (mi == 0 && di == 0)
					tp_bad_args(ctx, g, &t, &b, pass, fail);
			}
			gpu_parts_free(g);
			tp_batch_free(&b);
			tp_batch_free(&rb);
			tp_data_free(&t);
		}
	}
	printf("parts (batched partition scans): %d checks passed, %d failed\n", *pass - p0,
	       *fail - f0);
	return 0;
}
