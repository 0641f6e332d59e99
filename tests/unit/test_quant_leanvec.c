/* Unit tests for LeanVec (quant/leanvec.c): LeanVec-ID recovers a planted
 * low-rank subspace and agrees with a power iteration written here;
 * LeanVec-OOD beats ID on queries that live where the data vary little
 * (held-out loss and recall@10 of (A q).(B x) against exact inner
 * products); Frank-Wolfe with line search never increases the loss; the
 * loss matches a direct double sum; projections; invalid inputs; the Gram
 * step (quant_leanvec_gram against a double reference, trainers using the
 * routine they are given, its errors failing them). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "quant/quant.h"

/* ------------------------------------------------ helpers */

static uint64_t rng_state;

static uint64_t rng_next(void) /* splitmix64 */
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static double rng_unit(void) /* (0, 1) */
{
	return ((rng_next() >> 11) + 0.5) * 0x1p-53;
}

static double rng_gauss(void) /* Box-Muller */
{
	return sqrt(-2 * log(rng_unit())) * cos(2 * M_PI * rng_unit());
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n, size);
	cr_assert(p);
	return p;
}

/* Random orthogonal D x D (rows), Gram-Schmidt twice on Gaussian rows. */
static double *random_basis(uint32_t D)
{
	double *R = xcalloc((size_t)D * D, sizeof(*R));
	for (size_t i = 0; i < (size_t)D * D; i++)
		R[i] = rng_gauss();
	for (uint32_t i = 0; i < D; i++) {
		double *r = R + (size_t)i * D;
		for (int pass = 0; pass < 2; pass++)
			for (uint32_t k = 0; k < i; k++) {
				const double *s = R + (size_t)k * D;
				double dot = 0;
				for (uint32_t j = 0; j < D; j++)
					dot += r[j] * s[j];
				for (uint32_t j = 0; j < D; j++)
					r[j] -= dot * s[j];
			}
		double nn = 0;
		for (uint32_t j = 0; j < D; j++)
			nn += r[j] * r[j];
		for (uint32_t j = 0; j < D; j++)
			r[j] /= sqrt(nn);
	}
	return R;
}

/* n x D rows: offset + sum_k sigma[k] g_k R_k, g_k standard normal. */
static float *sample(const double *R, const double *sigma, const double *offset, size_t n,
		     uint32_t D)
{
	float *X = xcalloc(n * D, sizeof(*X));
	double *v = xcalloc(D, sizeof(*v));
	for (size_t i = 0; i < n; i++) {
		for (uint32_t j = 0; j < D; j++)
			v[j] = offset ? offset[j] : 0;
		for (uint32_t k = 0; k < D; k++) {
			double c = sigma[k] * rng_gauss();
			for (uint32_t j = 0; j < D; j++)
				v[j] += c * R[(size_t)k * D + j];
		}
		for (uint32_t j = 0; j < D; j++)
			X[i * D + j] = (float)v[j];
	}
	free(v);
	return X;
}

static double dotfd(const float *a, const double *b, uint32_t D)
{
	double s = 0;
	for (uint32_t j = 0; j < D; j++)
		s += a[j] * b[j];
	return s;
}

static double dotff(const float *a, const float *b, uint32_t D)
{
	double s = 0;
	for (uint32_t j = 0; j < D; j++)
		s += (double)a[j] * b[j];
	return s;
}

static void assert_orthonormal_rows(const float *P, uint32_t d, uint32_t D, double tol)
{
	for (uint32_t i = 0; i < d; i++)
		for (uint32_t k = 0; k < d; k++) {
			double g = dotff(P + (size_t)i * D, P + (size_t)k * D, D);
			cr_assert(fabs(g - (i == k)) <= tol, "P P^T[%u][%u] = %.9f", i, k, g);
		}
}

/* ------------------------------------------------ LeanVec-ID */

Test(leanvec_id, recovers_planted_subspace)
{
	rng_state = 1;
	const uint32_t D = 48, d = 6;
	const size_t n = 3000;
	const double noise = 0.01;
	double *R = random_basis(D), sigma[48], offset[48];
	for (uint32_t k = 0; k < D; k++) {
		sigma[k] = k < d ? 6.0 - 0.5 * k : noise;
		offset[k] = 5 * rng_gauss();
	}
	float *X = sample(R, sigma, offset, n, D);
	float *P = xcalloc((size_t)d * D, sizeof(*P)), mean[48];
	vela_err_t err = {0};
	cr_assert_eq(quant_leanvec_train_id(X, n, D, d, P, mean, &err), 0, "%s", err.msg);
	assert_orthonormal_rows(P, d, D, 1e-4);

	for (uint32_t j = 0; j < D; j++) { /* mean is the sample mean */
		double s = 0;
		for (size_t i = 0; i < n; i++)
			s += X[i * D + j];
		cr_assert(fabs(mean[j] - s / n) <= 1e-5 * (1 + fabs(s / n)));
	}
	for (uint32_t k = 0; k < d; k++) { /* each planted direction lies in span P */
		double in = 0;
		for (uint32_t i = 0; i < d; i++) {
			double c = dotfd(P + (size_t)i * D, R + (size_t)k * D, D);
			in += c * c;
		}
		cr_assert(in >= 1 - 1e-4, "direction %u: |proj|^2 = %.8f", k, in);
	}
	/* Reconstruction error of the centred data ~ the noise outside span P. */
	double err2 = 0, y[6], r[48];
	for (size_t i = 0; i < n; i++) {
		for (uint32_t j = 0; j < D; j++)
			r[j] = X[i * D + j] - mean[j];
		for (uint32_t k = 0; k < d; k++)
			y[k] = dotfd(P + (size_t)k * D, r, D);
		for (uint32_t k = 0; k < d; k++)
			for (uint32_t j = 0; j < D; j++)
				r[j] -= y[k] * P[(size_t)k * D + j];
		for (uint32_t j = 0; j < D; j++)
			err2 += r[j] * r[j];
	}
	err2 /= n;
	double expect = noise * noise * (D - d);
	cr_assert(err2 <= 1.3 * expect && err2 >= 0.7 * expect, "err %.3g vs noise %.3g", err2,
		  expect);
	free(R), free(X), free(P);
}

Test(leanvec_id, top_component_matches_power_iteration)
{
	rng_state = 2;
	const uint32_t D = 24;
	const size_t n = 1500;
	double *R = random_basis(D), sigma[24], offset[24];
	for (uint32_t k = 0; k < D; k++)
		sigma[k] = 1 + 0.3 * (D - k), offset[k] = rng_gauss();
	float *X = sample(R, sigma, offset, n, D);
	float *P = xcalloc((size_t)D * D, sizeof(*P)), mean[24];
	cr_assert_eq(quant_leanvec_train_id(X, n, D, D, P, mean, NULL), 0); /* d = D */
	assert_orthonormal_rows(P, D, D, 1e-4);

	/* Covariance and power iteration, straight from the definitions. */
	double *C = xcalloc((size_t)D * D, sizeof(*C)), mu[24] = {0}, v[24], w[24];
	for (size_t i = 0; i < n; i++)
		for (uint32_t j = 0; j < D; j++)
			mu[j] += X[i * D + j] / (double)n;
	for (size_t i = 0; i < n; i++)
		for (uint32_t a = 0; a < D; a++)
			for (uint32_t b = 0; b < D; b++)
				C[a * D + b] += (X[i * D + a] - mu[a]) * (X[i * D + b] - mu[b]) / n;
	for (uint32_t j = 0; j < D; j++)
		v[j] = 1.0 / (j + 1);
	for (int it = 0; it < 3000; it++) {
		double nn = 0;
		for (uint32_t a = 0; a < D; a++) {
			w[a] = 0;
			for (uint32_t b = 0; b < D; b++)
				w[a] += C[a * D + b] * v[b];
			nn += w[a] * w[a];
		}
		for (uint32_t a = 0; a < D; a++)
			v[a] = w[a] / sqrt(nn);
	}
	double c = dotfd(P, v, D);
	cr_assert(fabs(c) >= 1 - 1e-6, "|<P0, v>| = %.9f", c);
	/* Rows come in decreasing Rayleigh quotient order. */
	double prev = INFINITY;
	for (uint32_t k = 0; k < D; k++) {
		double rq = 0;
		for (uint32_t a = 0; a < D; a++)
			for (uint32_t b = 0; b < D; b++)
				rq += P[k * D + a] * C[a * D + b] * P[k * D + b];
		cr_assert(rq <= prev * (1 + 1e-6), "row %u: %.6f after %.6f", k, rq, prev);
		prev = rq;
	}
	free(R), free(X), free(P), free(C);
}

/* SVS centres (reference §1.2): a large offset along a low-variance axis
 * must not become the principal direction. */
Test(leanvec_id, centres_the_data)
{
	rng_state = 3;
	const uint32_t D = 8;
	const size_t n = 2000;
	float *X = xcalloc(n * D, sizeof(*X)), P[8];
	for (size_t i = 0; i < n; i++) {
		X[i * D + 0] = (float)(100 + 0.1 * rng_gauss());
		X[i * D + 1] = (float)(3 * rng_gauss());
		for (uint32_t j = 2; j < D; j++)
			X[i * D + j] = (float)(0.5 * rng_gauss());
	}
	cr_assert_eq(quant_leanvec_train_id(X, n, D, 1, P, NULL, NULL), 0);
	cr_assert(fabs(P[1]) > 0.999 && fabs(P[0]) < 0.01, "P = %g %g", P[0], P[1]);
	free(X);
}

/* ------------------------------------------------ LeanVec-OOD */

/* Data vary most along R_0..R_7 and little elsewhere; queries live along
 * R_40..R_47, where the data vary little, plus a faint rest. */
typedef struct {
	uint32_t D, d;
	size_t n, m, mt;
	float *X, *Q, *Qt; /* data, training queries, held-out queries */
} ood_case_t;

static ood_case_t ood_case(void)
{
	ood_case_t c = {.D = 64, .d = 8, .n = 4000, .m = 1000, .mt = 200};
	double sx[64], sq[64];
	rng_state = 4;
	double *R = random_basis(c.D);
	for (uint32_t k = 0; k < c.D; k++) {
		sx[k] = k < 8 ? 4.0 : 1.0;
		sq[k] = k >= 40 && k < 48 ? 1.0 : 0.05;
	}
	c.X = sample(R, sx, NULL, c.n, c.D);
	c.Q = sample(R, sq, NULL, c.m, c.D);
	c.Qt = sample(R, sq, NULL, c.mt, c.D);
	free(R);
	return c;
}

static void ood_case_free(ood_case_t *c)
{
	free(c->X), free(c->Q), free(c->Qt);
}

/* Mean recall@10 of ranking by (A q).(B x) against exact q.x. */
static double recall_at_10(const ood_case_t *c, const float *A, const float *B)
{
	enum { K = 10 };
	float *xr = xcalloc(c->n * c->d, sizeof(float)), *qr = xcalloc(c->mt * c->d, sizeof(float));
	double *ex = xcalloc(c->n, sizeof(double)), *ap = xcalloc(c->n, sizeof(double));
	cr_assert_eq(quant_leanvec_project_batch(B, c->d, c->D, c->X, c->n, xr), 0);
	cr_assert_eq(quant_leanvec_project_batch(A, c->d, c->D, c->Qt, c->mt, qr), 0);
	size_t hits = 0;
	for (size_t q = 0; q < c->mt; q++) {
		for (size_t i = 0; i < c->n; i++) {
			ex[i] = dotff(c->Qt + q * c->D, c->X + i * c->D, c->D);
			ap[i] = dotff(qr + q * c->d, xr + i * c->d, c->d);
		}
		size_t top[2][K];
		double *s[2] = {ex, ap};
		for (int w = 0; w < 2; w++)
			for (int k = 0; k < K; k++) { /* k-th best by selection */
				size_t best = SIZE_MAX;
				for (size_t i = 0; i < c->n; i++)
					if (s[w][i] > -INFINITY && (best == SIZE_MAX || s[w][i] > s[w][best]))
						best = i;
				top[w][k] = best;
				s[w][best] = -INFINITY;
			}
		for (int a = 0; a < K; a++)
			for (int b = 0; b < K; b++)
				hits += top[0][a] == top[1][b];
	}
	free(xr), free(qr), free(ex), free(ap);
	return (double)hits / (double)(K * c->mt);
}

Test(leanvec_ood, beats_id_on_out_of_distribution_queries)
{
	ood_case_t c = ood_case();
	size_t dD = (size_t)c.d * c.D;
	float *P = xcalloc(dD, sizeof(float)), *A = xcalloc(dD, sizeof(float)),
	      *B = xcalloc(dD, sizeof(float));
	vela_err_t err = {0};
	quant_leanvec_ood_stats_t st;
	cr_assert_eq(quant_leanvec_train_id(c.X, c.n, c.D, c.d, P, NULL, &err), 0, "%s", err.msg);
	cr_assert_eq(quant_leanvec_train_ood(c.X, c.n, c.Q, c.m, c.D, c.d, NULL, A, B, &st, &err),
		     0, "%s", err.msg);
	double l_id, l_ood, r_id, r_ood;
	cr_assert_eq(quant_leanvec_loss(P, P, c.d, c.D, c.X, c.n, c.Qt, c.mt, &l_id, &err), 0);
	cr_assert_eq(quant_leanvec_loss(A, B, c.d, c.D, c.X, c.n, c.Qt, c.mt, &l_ood, &err), 0);
	r_id = recall_at_10(&c, P, P);
	r_ood = recall_at_10(&c, A, B);
	cr_log_info("OOD case: winner %s, train loss fw %.5g (%u iters%s) eig %.5g (beta %.2f), "
		    "zero %.5g; held-out loss id %.5g ood %.5g; recall@10 id %.3f ood %.3f",
		    st.winner == QUANT_LEANVEC_OOD_FRANK_WOLFE ? "frank-wolfe" : "eigen",
		    st.loss_fw, st.fw_iters, st.fw_converged ? ", converged" : "", st.loss_eig,
		    st.eig_beta, st.loss_zero, l_id, l_ood, r_id, r_ood);
	cr_assert(st.loss == fmin(st.loss_fw, st.loss_eig));
	cr_assert(l_ood < 0.5 * l_id, "held-out loss ood %g vs id %g", l_ood, l_id);
	cr_assert(r_ood >= 0.5 && r_ood >= r_id + 0.3, "recall ood %.3f id %.3f", r_ood, r_id);

	/* The reported loss is quant_leanvec_loss of the returned matrices. */
	double l_tr;
	cr_assert_eq(quant_leanvec_loss(A, B, c.d, c.D, c.X, c.n, c.Q, c.m, &l_tr, NULL), 0);
	cr_assert(fabs(l_tr - st.loss) <= 1e-4 * st.loss_zero, "%g vs %g", l_tr, st.loss);
	free(P), free(A), free(B);
	ood_case_free(&c);
}

Test(leanvec_ood, frank_wolfe_line_search_is_monotone)
{
	ood_case_t c = ood_case();
	size_t dD = (size_t)c.d * c.D;
	float *A = xcalloc(dD, sizeof(float)), *B = xcalloc(dD, sizeof(float));
	double trace[300];
	quant_leanvec_ood_opts_t o;
	quant_leanvec_ood_opts_default(&o);
	o.method = QUANT_LEANVEC_OOD_FRANK_WOLFE, o.max_iters = 300, o.rel_tol = 0, o.trace = trace;
	quant_leanvec_ood_stats_t st;
	cr_assert_eq(quant_leanvec_train_ood(c.X, c.n, c.Q, c.m, c.D, c.d, &o, A, B, &st, NULL), 0);
	cr_assert_eq(st.fw_iters, 300);
	cr_assert(isnan(st.loss_eig) && st.winner == QUANT_LEANVEC_OOD_FRANK_WOLFE);
	cr_assert(trace[0] < st.loss_zero);
	for (uint32_t t = 1; t < st.fw_iters; t++)
		cr_assert(trace[t] <= trace[t - 1] + 1e-12 * st.loss_zero, "iter %u: %.12g > %.12g",
			  t, trace[t], trace[t - 1]);
	cr_assert(st.loss_fw == trace[st.fw_iters - 1]);
	double ls = st.loss_fw;

	/* SVS's diminishing rule carries no monotonicity guarantee; it should
	 * still end near the line-search result. */
	o.step = QUANT_LEANVEC_STEP_DIMINISHING, o.rel_tol = QUANT_LEANVEC_FW_TOL_DEFAULT;
	o.max_iters = QUANT_LEANVEC_FW_ITERS_DEFAULT, o.trace = NULL;
	cr_assert_eq(quant_leanvec_train_ood(c.X, c.n, c.Q, c.m, c.D, c.d, &o, A, B, &st, NULL), 0);
	cr_log_info("frank-wolfe: line search %.5g after 300 iters, diminishing %.5g after %u",
		    ls, st.loss_fw, st.fw_iters);
	cr_assert(st.loss_fw < 0.2 * st.loss_zero);

	/* A warm start from eigenvector search only improves on it. */
	o.step = QUANT_LEANVEC_STEP_LINE_SEARCH, o.init = QUANT_LEANVEC_INIT_EIGEN;
	cr_assert_eq(quant_leanvec_train_ood(c.X, c.n, c.Q, c.m, c.D, c.d, &o, A, B, &st, NULL), 0);
	cr_assert(st.loss_fw <= st.loss_eig * (1 + 1e-12), "%g > %g", st.loss_fw, st.loss_eig);
	free(A), free(B);
	ood_case_free(&c);
}

Test(leanvec_ood, eigen_search_alone)
{
	ood_case_t c = ood_case();
	size_t dD = (size_t)c.d * c.D;
	float *A = xcalloc(dD, sizeof(float)), *B = xcalloc(dD, sizeof(float));
	quant_leanvec_ood_opts_t o;
	quant_leanvec_ood_opts_default(&o);
	o.method = QUANT_LEANVEC_OOD_EIGEN, o.eig_grid = 21;
	quant_leanvec_ood_stats_t st;
	cr_assert_eq(quant_leanvec_train_ood(c.X, c.n, c.Q, c.m, c.D, c.d, &o, A, B, &st, NULL), 0);
	cr_assert(st.winner == QUANT_LEANVEC_OOD_EIGEN && isnan(st.loss_fw));
	cr_assert(st.loss == st.loss_eig && st.eig_beta >= 0 && st.eig_beta <= 1);
	cr_assert(st.eig_beta > 0, "queries matter here: beta %g", st.eig_beta);
	cr_assert_eq(memcmp(A, B, dD * sizeof(float)), 0);
	assert_orthonormal_rows(A, c.d, c.D, 1e-4);
	free(A), free(B);
	ood_case_free(&c);
}

/* When the queries spread over many directions with other weights than the
 * data, the best A differs from B and Frank-Wolfe wins; on the planted case
 * above eigenvector search (beta = 1) wins at the default tolerance. BEST
 * must return the lower of the two either way. */
Test(leanvec_ood, best_keeps_the_lower_loss)
{
	rng_state = 7;
	const uint32_t D = 32, d = 6;
	const size_t n = 2000, m = 500;
	double *R = random_basis(D), sx[32], sq[32];
	for (uint32_t k = 0; k < D; k++) {
		sx[k] = k < 8 ? 4.0 / (1 + k % 4) : 1.0 / (1 + k / 8);
		sq[k] = 1.0 / (1 + ((k * 7) % D) / 4.0);
	}
	float *X = sample(R, sx, NULL, n, D), *Q = sample(R, sq, NULL, m, D);
	float *A = xcalloc((size_t)d * D, sizeof(float)), *B = xcalloc((size_t)d * D, sizeof(float));
	quant_leanvec_ood_stats_t st;
	cr_assert_eq(quant_leanvec_train_ood(X, n, Q, m, D, d, NULL, A, B, &st, NULL), 0);
	cr_log_info("spread case: winner %s, fw %.5g (%u iters) eig %.5g (beta %.2f) zero %.5g",
		    st.winner == QUANT_LEANVEC_OOD_FRANK_WOLFE ? "frank-wolfe" : "eigen",
		    st.loss_fw, st.fw_iters, st.loss_eig, st.eig_beta, st.loss_zero);
	cr_assert(st.winner == QUANT_LEANVEC_OOD_FRANK_WOLFE && st.loss_fw < 0.97 * st.loss_eig);
	cr_assert(st.loss == st.loss_fw);
	free(R), free(X), free(Q), free(A), free(B);
}

/* ------------------------------------------------ loss and projection */

Test(leanvec_loss, matches_direct_sum)
{
	rng_state = 5;
	const uint32_t D = 10, d = 3;
	const size_t n = 50, m = 30;
	float X[50 * 10], Q[30 * 10], A[3 * 10], B[3 * 10], I[10 * 10] = {0};
	for (size_t i = 0; i < n * D; i++)
		X[i] = (float)rng_gauss();
	for (size_t i = 0; i < m * D; i++)
		Q[i] = (float)(rng_gauss() + 0.5);
	for (size_t i = 0; i < d * D; i++)
		A[i] = (float)rng_gauss(), B[i] = (float)rng_gauss();
	double direct = 0, loss;
	for (size_t q = 0; q < m; q++)
		for (size_t x = 0; x < n; x++) {
			double e = dotff(Q + q * D, X + x * D, D), ax = 0;
			for (uint32_t k = 0; k < d; k++)
				ax += dotff(A + k * D, Q + q * D, D) * dotff(B + k * D, X + x * D, D);
			direct += (e - ax) * (e - ax);
		}
	direct /= (double)(n * m);
	cr_assert_eq(quant_leanvec_loss(A, B, d, D, X, n, Q, m, &loss, NULL), 0);
	cr_assert(fabs(loss - direct) <= 1e-10 * direct, "%.15g vs %.15g", loss, direct);

	for (uint32_t j = 0; j < D; j++) /* A = B = I (d = D): no error */
		I[j * D + j] = 1;
	cr_assert_eq(quant_leanvec_loss(I, I, D, D, X, n, Q, m, &loss, NULL), 0);
	cr_assert(loss <= 1e-12, "%g", loss);
}

Test(leanvec_project, single_and_batch)
{
	rng_state = 6;
	const uint32_t D = 37, d = 5;
	const size_t n = 9;
	float P[5 * 37], X[9 * 37], Y[9 * 5], y[5];
	for (size_t i = 0; i < d * D; i++)
		P[i] = (float)rng_gauss();
	for (size_t i = 0; i < n * D; i++)
		X[i] = (float)rng_gauss();
	cr_assert_eq(quant_leanvec_project_batch(P, d, D, X, n, Y), 0);
	for (size_t i = 0; i < n; i++) {
		cr_assert_eq(quant_leanvec_project(P, d, D, X + i * D, y), 0);
		for (uint32_t k = 0; k < d; k++) {
			double ref = dotff(P + k * D, X + i * D, D);
			cr_assert(fabs(y[k] - ref) <= 1e-4 * (1 + fabs(ref)));
			cr_assert(fabs(Y[i * d + k] - ref) <= 1e-4 * (1 + fabs(ref)));
		}
	}
	cr_assert_eq(quant_leanvec_project_batch(P, d, D, NULL, 0, NULL), 0);
	cr_assert_eq(quant_leanvec_project(NULL, d, D, X, y), VELA_EINVAL);
	cr_assert_eq(quant_leanvec_project(P, 0, D, X, y), VELA_EINVAL);
	cr_assert_eq(quant_leanvec_project(P, D + 1, D, X, y), VELA_EINVAL);
	cr_assert_eq(quant_leanvec_project_batch(P, d, D, X, n, NULL), VELA_EINVAL);
}

/* ------------------------------------------------ invalid input */

Test(leanvec_invalid, train_id)
{
	float X[4 * 3] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 0, 1}, P[3 * 3], mean[3];
	vela_err_t err = {0};
	cr_assert_eq(quant_leanvec_train_id(NULL, 4, 3, 2, P, mean, &err), VELA_EINVAL);
	cr_assert_eq(err.code, VELA_EINVAL);
	cr_assert_eq(quant_leanvec_train_id(X, 4, 3, 2, NULL, mean, &err), VELA_EINVAL);
	cr_assert_eq(quant_leanvec_train_id(X, 4, 3, 0, P, mean, &err), VELA_EDIM);
	cr_assert_eq(quant_leanvec_train_id(X, 4, 3, 4, P, mean, &err), VELA_EDIM);
	cr_assert_eq(quant_leanvec_train_id(X, 4, 0, 1, P, mean, &err), VELA_EDIM);
	cr_assert_eq(quant_leanvec_train_id(X, 4, QUANT_LEANVEC_TRAIN_DIM_MAX + 1, 1, P, mean,
					    &err), VELA_EDIM);
	cr_assert_eq(quant_leanvec_train_id(X, 2, 3, 3, P, mean, &err), VELA_EINVAL); /* n < d */
	cr_assert(strstr(err.msg, "rows"), "%s", err.msg);
	X[7] = NAN;
	cr_assert_eq(quant_leanvec_train_id(X, 4, 3, 2, P, mean, &err), VELA_EINVAL);
	cr_assert(strstr(err.msg, "X[2][1] is not finite"), "%s", err.msg);
	X[7] = INFINITY;
	cr_assert_eq(quant_leanvec_train_id(X, 4, 3, 2, P, NULL, NULL), VELA_EINVAL);
	X[7] = 8;
	cr_assert_eq(quant_leanvec_train_id(X, 4, 3, 3, P, NULL, &err), 0); /* n >= d = D */
}

Test(leanvec_invalid, train_ood_and_loss)
{
	float X[4 * 3] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 0, 1}, Q[2 * 3] = {1, 0, 0, 0, 1, 1};
	float A[2 * 3], B[2 * 3];
	vela_err_t err = {0};
	double loss;
	quant_leanvec_ood_opts_t o;
#define OOD(opts) quant_leanvec_train_ood(X, 4, Q, 2, 3, 2, opts, A, B, NULL, &err)
	cr_assert_eq(OOD(NULL), 0, "%s", err.msg);
	cr_assert_eq(quant_leanvec_train_ood(X, 4, NULL, 2, 3, 2, NULL, A, B, NULL, &err),
		     VELA_EINVAL);
	cr_assert_eq(quant_leanvec_train_ood(X, 4, Q, 0, 3, 2, NULL, A, B, NULL, &err),
		     VELA_EINVAL);
	cr_assert_eq(quant_leanvec_train_ood(X, 1, Q, 2, 3, 2, NULL, A, B, NULL, &err),
		     VELA_EINVAL);
	cr_assert_eq(quant_leanvec_train_ood(X, 4, Q, 2, 3, 2, NULL, A, NULL, NULL, &err),
		     VELA_EINVAL);
	cr_assert_eq(quant_leanvec_train_ood(X, 4, Q, 2, 3, 4, NULL, A, B, NULL, &err), VELA_EDIM);
	Q[4] = -INFINITY;
	cr_assert_eq(OOD(NULL), VELA_EINVAL);
	cr_assert(strstr(err.msg, "Q[1][1]"), "%s", err.msg);
	Q[4] = 1;

	quant_leanvec_ood_opts_default(&o), o.max_iters = 0;
	cr_assert_eq(OOD(&o), VELA_EINVAL);
	cr_assert(strstr(err.msg, "max_iters"), "%s", err.msg);
	quant_leanvec_ood_opts_default(&o), o.max_iters = QUANT_LEANVEC_FW_ITERS_MAX + 1;
	cr_assert_eq(OOD(&o), VELA_EINVAL);
	quant_leanvec_ood_opts_default(&o), o.rel_tol = -1;
	cr_assert_eq(OOD(&o), VELA_EINVAL);
	quant_leanvec_ood_opts_default(&o), o.rel_tol = NAN;
	cr_assert_eq(OOD(&o), VELA_EINVAL);
	quant_leanvec_ood_opts_default(&o), o.step_exp = 2;
	cr_assert_eq(OOD(&o), VELA_EINVAL);
	quant_leanvec_ood_opts_default(&o), o.step = 9;
	cr_assert_eq(OOD(&o), VELA_EINVAL);
	quant_leanvec_ood_opts_default(&o), o.method = 7;
	cr_assert_eq(OOD(&o), VELA_EINVAL);
	quant_leanvec_ood_opts_default(&o), o.init = -1;
	cr_assert_eq(OOD(&o), VELA_EINVAL);
	quant_leanvec_ood_opts_default(&o), o.eig_grid = 1;
	cr_assert_eq(OOD(&o), VELA_EINVAL);
	cr_assert(strstr(err.msg, "eig_grid"), "%s", err.msg);
#undef OOD

	cr_assert_eq(quant_leanvec_loss(A, B, 2, 3, X, 4, Q, 2, NULL, &err), VELA_EINVAL);
	cr_assert_eq(quant_leanvec_loss(A, NULL, 2, 3, X, 4, Q, 2, &loss, &err), VELA_EINVAL);
	cr_assert_eq(quant_leanvec_loss(A, B, 2, 3, X, 0, Q, 2, &loss, &err), VELA_EINVAL);
	cr_assert_eq(quant_leanvec_loss(A, B, 0, 3, X, 4, Q, 2, &loss, &err), VELA_EDIM);
	A[0] = NAN;
	cr_assert_eq(quant_leanvec_loss(A, B, 2, 3, X, 4, Q, 2, &loss, &err), VELA_EINVAL);
	cr_assert(strstr(err.msg, "A[0][0]"), "%s", err.msg);
}

/* ------------------------------------------------ the Gram step */

/* G = sum (x - mu)(x - mu)^T written out entry by entry in double. */
static double *gram_ref(const float *X, size_t n, uint32_t D, const double *mu)
{
	double *R = xcalloc((size_t)D * D, sizeof(*R));
	for (uint32_t a = 0; a < D; a++)
		for (uint32_t b = 0; b < D; b++)
			for (size_t r = 0; r < n; r++)
				R[(size_t)a * D + b] += ((double)X[r * D + a] - (mu ? mu[a] : 0)) *
							((double)X[r * D + b] - (mu ? mu[b] : 0));
	return R;
}

static double gram_rel_err(const double *G, const double *R, uint32_t D)
{
	double num = 0, den = 0;
	for (size_t i = 0; i < (size_t)D * D; i++) {
		num += (G[i] - R[i]) * (G[i] - R[i]);
		den += R[i] * R[i];
	}
	return den > 0 ? sqrt(num / den) : sqrt(num);
}

Test(leanvec_gram, matches_double_reference)
{
	rng_state = 11;
	/* 15001 rows of 37: three of the dsyrk chunks, the last partial */
	const uint32_t dims[] = {37, 1, 5};
	const size_t rows[] = {15001, 40, 1};
	for (int c = 0; c < 3; c++) {
		uint32_t D = dims[c];
		size_t n = rows[c];
		float *X = xcalloc(n * D, sizeof(*X)), *Xi = xcalloc(n * D, sizeof(*Xi));
		double *mu = xcalloc(D, sizeof(*mu)), *G = xcalloc((size_t)D * D, sizeof(*G));
		for (size_t i = 0; i < n * D; i++) {
			X[i] = (float)(3 + (i % D) * 0.5 + rng_gauss());
			Xi[i] = (float)((int)(rng_next() % 17) - 8);
			mu[i % D] += X[i] / (double)n;
		}
		for (int centred = 0; centred < 2; centred++) {
			double *R = gram_ref(X, n, D, centred ? mu : NULL);
			cr_assert_eq(quant_leanvec_gram(X, n, D, centred ? mu : NULL, G, NULL), 0);
			double rel = gram_rel_err(G, R, D);
			cr_assert_lt(rel, 1e-13, "n %zu D %u centred %d: %.3g", n, D, centred, rel);
			for (uint32_t a = 0; a < D; a++)
				for (uint32_t b = 0; b < D; b++)
					cr_assert_eq(G[(size_t)a * D + b], G[(size_t)b * D + a]);
			free(R);
		}
		double *R = gram_ref(Xi, n, D, NULL); /* integer sums: exact in any order */
		cr_assert_eq(quant_leanvec_gram(Xi, n, D, NULL, G, NULL), 0);
		cr_assert_eq(memcmp(G, R, (size_t)D * D * sizeof(*G)), 0, "D %u: not exact", D);
		free(R), free(X), free(Xi), free(mu), free(G);
	}
	double G[4] = {1, 2, 3, 4};
	float X[2] = {1, 2};
	vela_err_t err = {0};
	cr_assert_eq(quant_leanvec_gram(NULL, 0, 2, NULL, G, &err), 0); /* n = 0 */
	cr_assert(G[0] == 0 && G[1] == 0 && G[2] == 0 && G[3] == 0);
	cr_assert_eq(quant_leanvec_gram(NULL, 1, 2, NULL, G, &err), VELA_EINVAL);
	cr_assert_eq(quant_leanvec_gram(X, 1, 2, NULL, NULL, &err), VELA_EINVAL);
	cr_assert_eq(quant_leanvec_gram(X, 1, 0, NULL, G, &err), VELA_EINVAL);
	cr_assert_eq(quant_leanvec_gram(X, 1, VELA_DIM_MAX + 1, NULL, G, &err), VELA_EINVAL);
}

/* A Gram routine of the test's own (the reference above), counting calls. */
static int gram_calls, gram_centred;

static int gram_naive(const float *X, uint64_t n, uint32_t D, const double *mu, double *G,
		      vela_err_t *err)
{
	gram_calls++;
	gram_centred += mu != NULL;
	double *R = gram_ref(X, n, D, mu);
	memcpy(G, R, (size_t)D * D * sizeof(*G));
	free(R);
	return 0;
}

static int gram_broken(const float *X, uint64_t n, uint32_t D, const double *mu, double *G,
		       vela_err_t *err)
{
	gram_calls++;
	return vela_err_set(err, VELA_EIO, "device on fire");
}

/* The trainers use the routine they are given, and with an independent
 * one they train the same projections. */
Test(leanvec_gram, trainers_use_the_given_routine)
{
	rng_state = 12;
	const uint32_t D = 20, d = 4;
	const size_t n = 2000, m = 200;
	double *R = random_basis(D), sigma[20], offset[20];
	for (uint32_t k = 0; k < D; k++) {
		sigma[k] = k < d ? 5.0 - k : 0.2;
		offset[k] = rng_gauss();
	}
	float *X = sample(R, sigma, offset, n, D), *Q = sample(R, sigma, NULL, m, D);
	float P[4 * 20], Pn[4 * 20], mean[20], meann[20];
	vela_err_t err = {0};
	cr_assert_eq(quant_leanvec_train_id(X, n, D, d, P, mean, &err), 0, "%s", err.msg);
	cr_assert_eq(quant_leanvec_train_id_with(gram_naive, X, n, D, d, Pn, meann, &err), 0, "%s",
		     err.msg);
	cr_assert_eq(gram_calls, 1);
	cr_assert_eq(gram_centred, 1, "ID centres on the mean");
	for (uint32_t i = 0; i < d * D; i++)
		cr_assert(fabsf(P[i] - Pn[i]) <= 1e-5f, "P[%u] %.9g vs %.9g", i, P[i], Pn[i]);
	cr_assert_eq(memcmp(mean, meann, sizeof(mean)), 0);

	float A[4 * 20], B[4 * 20], An[4 * 20], Bn[4 * 20];
	quant_leanvec_ood_opts_t o;
	quant_leanvec_ood_opts_default(&o);
	cr_assert_null(o.gram);
	o.method = QUANT_LEANVEC_OOD_EIGEN; /* deterministic in the moments */
	quant_leanvec_ood_stats_t st, stn;
	cr_assert_eq(quant_leanvec_train_ood(X, n, Q, m, D, d, &o, A, B, &st, &err), 0);
	o.gram = gram_naive;
	gram_calls = gram_centred = 0;
	cr_assert_eq(quant_leanvec_train_ood(X, n, Q, m, D, d, &o, An, Bn, &stn, &err), 0, "%s",
		     err.msg);
	cr_assert_eq(gram_calls, 2, "one Gram matrix each for X and Q");
	cr_assert_eq(gram_centred, 0, "OOD does not centre");
	cr_assert(fabs(st.loss - stn.loss) <= 1e-9 * st.loss, "%.12g vs %.12g", st.loss, stn.loss);
	for (uint32_t i = 0; i < d * D; i++)
		cr_assert(fabsf(A[i] - An[i]) <= 1e-5f && fabsf(B[i] - Bn[i]) <= 1e-5f, "entry %u", i);
	free(R), free(X), free(Q);
}

Test(leanvec_gram, routine_errors_fail_training)
{
	float X[4 * 3] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 0, 1}, Q[2 * 3] = {1, 0, 0, 0, 1, 1};
	float P[2 * 3], A[2 * 3], B[2 * 3];
	vela_err_t err = {0};
	cr_assert_eq(quant_leanvec_train_id_with(gram_broken, X, 4, 3, 2, P, NULL, &err), VELA_EIO);
	cr_assert_str_eq(err.msg, "device on fire");
	quant_leanvec_ood_opts_t o;
	quant_leanvec_ood_opts_default(&o);
	o.gram = gram_broken;
	err = (vela_err_t){0};
	cr_assert_eq(quant_leanvec_train_ood(X, 4, Q, 2, 3, 2, &o, A, B, NULL, &err), VELA_EIO);
	cr_assert_str_eq(err.msg, "device on fire");
	/* arguments are checked before the routine runs */
	gram_calls = 0;
	cr_assert_eq(quant_leanvec_train_id_with(gram_broken, X, 4, 3, 0, P, NULL, &err), VELA_EDIM);
	cr_assert_eq(gram_calls, 0);
}
