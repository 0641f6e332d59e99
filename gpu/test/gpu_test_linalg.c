/*
 * gpu_test_linalg.c — gpu_test's checks of the FP64 Gram matrix (gpu_gram,
 * LeanVec training's second moments) against a host double-precision
 * reference computed here, row by row:
 *  - random Gaussian rows with a per-column offset and scale, uncentred and
 *    centred on the host mean: relative Frobenius error < 1e-12 (both sides
 *    sum the same double products; only the order of the additions differs);
 *  - small-integer rows: every partial sum is an exact integer in double,
 *    so G must equal the reference bit for bit whatever the order (catches
 *    any indexing, chunking or mirroring slip exactly);
 *  - shapes: n not a multiple of the staging chunk (70,001 x 61 spans two
 *    chunks, 150,001 x 130 three), 5,000 x 768, d = 1, n = 1 (x x^T exactly:
 *    float products are exact in double), n = 0 (G = 0, X may be NULL);
 *  - the result is exactly symmetric; bad arguments are refused;
 *  - not quick: the time of a 1,000,000 x 768 Gram matrix (host to host),
 *    its diagonal and first row checked against sums over the rows.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpu/gpu.h"

int gpu_test_linalg(gpu_ctx_t *ctx, uint64_t seed, int quick, int *pass, int *fail);

#define LT_TOL 1e-12

static uint64_t l_rng;

static uint64_t l_next(void)
{
	l_rng ^= l_rng >> 12;
	l_rng ^= l_rng << 25;
	l_rng ^= l_rng >> 27;
	return l_rng * 0x2545F4914F6CDD1DULL;
}

static double l_unit(void) { return ((l_next() >> 11) + 0.5) / 9007199254740992.0; }

static double l_gauss(void)
{
	return sqrt(-2.0 * log(l_unit())) * cos(6.283185307179586 * l_unit());
}

static double l_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void l_report(int bad, int *pass, int *fail)
{
	if (bad)
		(*fail)++;
	else
		(*pass)++;
}

/* Rows: kind 0 Gaussian, column j ~ offset_j + scale_j N(0, 1) (offsets up
 * to 4, so centring matters); kind 1 integers in -8..8. */
static float *l_rows(uint64_t n, uint32_t d, int kind)
{
	float *X = malloc((n ? n : 1) * d * sizeof(float));
	double *off = malloc(d * sizeof(double)), *sc = malloc(d * sizeof(double));
	if (!X || !off || !sc) {
		free(X);
		X = NULL;
		goto out;
	}
	for (uint32_t j = 0; j < d; j++) {
		off[j] = 8.0 * l_unit() - 4.0;
		sc[j] = 0.1 + 2.0 * l_unit();
	}
	for (uint64_t r = 0; r < n; r++)
		for (uint32_t j = 0; j < d; j++)
			X[r * d + j] = kind ? (float)((int)(l_next() % 17) - 8)
					    : (float)(off[j] + sc[j] * l_gauss());
out:
	free(off);
	free(sc);
	return X;
}

static double *l_mean(const float *X, uint64_t n, uint32_t d)
{
	double *mu = calloc(d, sizeof(double));
	for (uint64_t r = 0; mu && r < n; r++)
		for (uint32_t j = 0; j < d; j++)
			mu[j] += X[r * d + j];
	for (uint32_t j = 0; mu && j < d; j++)
		mu[j] /= (double)n;
	return mu;
}

/* Reference: R = sum_r (x_r - mu)(x_r - mu)^T accumulated row by row in
 * double (upper triangle, then mirrored). */
static double *l_ref(const float *X, uint64_t n, uint32_t d, const double *mu)
{
	double *R = calloc((size_t)d * d, sizeof(double)), *y = malloc(d * sizeof(double));
	if (!R || !y) {
		free(R);
		free(y);
		return NULL;
	}
	for (uint64_t r = 0; r < n; r++) {
		for (uint32_t j = 0; j < d; j++)
			y[j] = mu ? (double)X[r * d + j] - mu[j] : (double)X[r * d + j];
		for (uint32_t a = 0; a < d; a++) {
			double ya = y[a], *row = R + (size_t)a * d;
			for (uint32_t b = a; b < d; b++)
				row[b] += ya * y[b];
		}
	}
	for (uint32_t a = 0; a < d; a++)
		for (uint32_t b = 0; b < a; b++)
			R[(size_t)a * d + b] = R[(size_t)b * d + a];
	free(y);
	return R;
}

/* Relative Frobenius error of G against R; *asym = 1 unless G is exactly
 * symmetric; *exact = 1 when G == R bit for bit. */
static double l_compare(const double *G, const double *R, uint32_t d, int *asym, int *exact)
{
	double num = 0, den = 0;
	*asym = 0;
	*exact = 1;
	for (uint32_t a = 0; a < d; a++)
		for (uint32_t b = 0; b < d; b++) {
			double g = G[(size_t)a * d + b], r = R[(size_t)a * d + b];
			num += (g - r) * (g - r);
			den += r * r;
			if (g != r)
				*exact = 0;
			if (g != G[(size_t)b * d + a])
				*asym = 1;
		}
	return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* One case: rows of `kind`, centred or not; `need_exact` asks bitwise
 * equality with the reference. Returns 1 on failure (FAIL line printed). */
static int l_case(gpu_ctx_t *ctx, uint64_t n, uint32_t d, int kind, int centred, int need_exact)
{
	float *X = l_rows(n, d, kind);
	double *mu = X && centred ? l_mean(X, n, d) : NULL;
	double *R = X ? l_ref(X, n, d, mu) : NULL;
	double *G = malloc((size_t)d * d * sizeof(double));
	if (!X || (centred && !mu) || !R || !G) {
		printf("FAIL gram n=%llu d=%u: out of host memory\n", (unsigned long long)n, d);
		free(X), free(mu), free(R), free(G);
		return 1;
	}
	for (size_t i = 0; i < (size_t)d * d; i++)
		G[i] = NAN; /* every entry must be written */
	vela_err_t err = {0};
	double t0 = l_now();
	int rc = gpu_gram(ctx, X, n, d, mu, G, &err);
	double ms = (l_now() - t0) * 1e3;
	int asym = 0, exact = 0;
	double rel = rc ? INFINITY : l_compare(G, R, d, &asym, &exact);
	int bad = rc || !(rel < LT_TOL) || asym || (need_exact && !exact);
	printf("%-4s gram n=%llu d=%u %s%s: rel frob err %.2e%s%s, %.1f ms %s\n",
	       bad ? "FAIL" : "ok", (unsigned long long)n, d, kind ? "integer" : "gaussian",
	       centred ? " centred" : "", rel, asym ? ", NOT SYMMETRIC" : "",
	       need_exact ? (exact ? ", exact" : ", NOT EXACT") : "", ms, rc ? err.msg : "");
	free(X), free(mu), free(R), free(G);
	return bad;
}

/* n = 0 (G = 0, X NULL allowed) and the refused arguments. */
static int l_edges(gpu_ctx_t *ctx)
{
	uint32_t d = 7;
	double G[49], mu[7] = {0};
	float X[7] = {1, 2, 3, 4, 5, 6, 7};
	int bad = 0;
	vela_err_t err = {0};
	for (int i = 0; i < 49; i++)
		G[i] = NAN;
	int rc = gpu_gram(ctx, NULL, 0, d, NULL, G, &err);
	for (int i = 0; i < 49; i++)
		if (G[i] != 0)
			rc = rc ? rc : -1000;
	if (rc) {
		printf("FAIL gram n=0: rc %d, G not all zero %s\n", rc, err.msg);
		bad = 1;
	}
	struct {
		const char *what;
		gpu_ctx_t *c;
		const float *x;
		uint64_t n;
		uint32_t d;
		double *g;
	} cases[] = {
		{"NULL ctx", NULL, X, 1, d, G},
		{"NULL G", ctx, X, 1, d, NULL},
		{"NULL X with n > 0", ctx, NULL, 1, d, G},
		{"d = 0", ctx, X, 1, 0, G},
		{"d > GPU_DIM_MAX", ctx, X, 1, GPU_DIM_MAX + 1, G},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err = (vela_err_t){0};
		rc = gpu_gram(cases[i].c, cases[i].x, cases[i].n, cases[i].d, mu, cases[i].g, &err);
		if (rc != VELA_EINVAL || err.code != VELA_EINVAL) {
			printf("FAIL gram %s: rc %d (err.code %d), want VELA_EINVAL\n", cases[i].what,
			       rc, err.code);
			bad = 1;
		}
	}
	/* err may be NULL */
	if (gpu_gram(ctx, NULL, 1, d, NULL, G, NULL) != VELA_EINVAL) {
		printf("FAIL gram NULL X with err NULL: not VELA_EINVAL\n");
		bad = 1;
	}
	printf("%-4s gram edges: n = 0 gives 0, bad arguments refused\n", bad ? "FAIL" : "ok");
	return bad;
}

/* Not quick: 1,000,000 x 768 host to host. The rows repeat a random tile
 * of LT_TILE rows (values do not change the time), so the diagonal and the
 * first row of G are checked in O(LT_TILE d) from the tile's weighted sums. */
#define LT_TILE 4096u

static int l_bench(gpu_ctx_t *ctx)
{
	const uint64_t n = 1000000;
	const uint32_t d = 768;
	float *X = malloc(n * d * sizeof(float)), *T = l_rows(LT_TILE, d, 0);
	double *G = malloc((size_t)d * d * sizeof(double));
	double *dg = calloc(d, sizeof(double)), *r0 = calloc(d, sizeof(double));
	int bad = 0;
	if (!X || !T || !G || !dg || !r0) {
		printf("skip gram bench %llu x %u: out of host memory\n", (unsigned long long)n, d);
		goto out;
	}
	for (uint64_t r = 0; r < n; r += LT_TILE) {
		uint64_t m = n - r < LT_TILE ? n - r : LT_TILE;
		memcpy(X + r * d, T, m * d * sizeof(float));
	}
	for (uint32_t t = 0; t < LT_TILE; t++) {
		double cnt = (double)(n / LT_TILE + (t < n % LT_TILE));
		const float *x = T + (size_t)t * d;
		for (uint32_t j = 0; j < d; j++) {
			dg[j] += cnt * ((double)x[j] * x[j]);
			r0[j] += cnt * ((double)x[0] * x[j]);
		}
	}
	vela_err_t err = {0};
	double t0 = l_now();
	int rc = gpu_gram(ctx, X, n, d, NULL, G, &err);
	double s = l_now() - t0;
	double num = 0, den = 0;
	for (uint32_t j = 0; rc == 0 && j < d; j++) {
		double e1 = G[(size_t)j * d + j] - dg[j], e2 = G[j] - r0[j];
		num += e1 * e1 + e2 * e2;
		den += dg[j] * dg[j] + r0[j] * r0[j];
	}
	double rel = rc ? INFINITY : sqrt(num / den);
	double gflop = (double)n * d * (d + 1) * 1e-9; /* syrk: n d (d + 1) / 2 FMAs */
	bad = rc || !(rel < LT_TOL);
	printf("%-4s gram bench n=%llu d=%u: %.1f ms, %.0f GFLOP/s (FP64 syrk), %.1f GB/s of F32 "
	       "rows in; diagonal and row 0 rel err %.2e %s\n",
	       bad ? "FAIL" : "ok", (unsigned long long)n, d, s * 1e3, gflop / s,
	       n * d * 4.0 / s * 1e-9, rel, rc ? err.msg : "");
out:
	free(X), free(T), free(G), free(dg), free(r0);
	return bad;
}

int gpu_test_linalg(gpu_ctx_t *ctx, uint64_t seed, int quick, int *pass, int *fail)
{
	l_rng = seed ^ 0x6a09e667f3bcc909ULL;
	if (l_rng == 0)
		l_rng = 1;
	l_report(l_edges(ctx), pass, fail);
	l_report(l_case(ctx, 1, 61, 0, 0, 1), pass, fail);   /* x x^T: exact */
	l_report(l_case(ctx, 1, 61, 0, 1, 0), pass, fail);   /* n = 1 centred: 0 */
	l_report(l_case(ctx, 1000, 1, 0, 1, 0), pass, fail); /* d = 1 */
	l_report(l_case(ctx, 70001, 61, 0, 0, 0), pass, fail);
	l_report(l_case(ctx, 70001, 61, 0, 1, 0), pass, fail);
	l_report(l_case(ctx, 70001, 61, 1, 0, 1), pass, fail);
	l_report(l_case(ctx, 5000, 768, 0, 1, 0), pass, fail);
	if (!quick) {
		l_report(l_case(ctx, 5000, 768, 0, 0, 0), pass, fail);
		l_report(l_case(ctx, 150001, 130, 1, 0, 1), pass, fail);
		l_report(l_case(ctx, 150001, 130, 0, 1, 0), pass, fail);
		l_report(l_bench(ctx), pass, fail);
	}
	return 0;
}
