/* LeanVec training and projection [LeanVec paper; reference/leanvec-lvq.md
 * §1]: LeanVec-ID (PCA, §1.2), LeanVec-OOD (Frank-Wolfe and eigenvector
 * search, §1.3), the OOD loss, and y = P x.
 *
 * Everything is expressed with d x D row-major matrices (y = P x). The
 * paper's D x d matrices are their transposes, so its formulas read
 *   L(A, B)  = tr(Q~X~) - 2 <B X~, A Q~>_F + <A Q~ A^T, B X~ B^T>_F
 *   dL/dA    = 2 (B X~ B^T) A Q~ - 2 B X~ Q~
 *   dL/dB    = 2 (A Q~ A^T) B X~ - 2 A Q~ X~
 * with X~ = X^T X / n and Q~ = Q^T Q / m (normalising changes no minimiser,
 * §1.3). None of this needs a D x D x D product: O(d D^2) per evaluation. */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "quant/quant.h"

/* Rows of the sample converted to double per dsyrk call. */
#define LV_CHUNK_DOUBLES (1u << 18)

/* ------------------------------------------------ validation */

static int lv_check_dims(uint32_t D, uint32_t d, uint32_t dmax, vela_err_t *err)
{
	if (D < 1 || D > dmax)
		return vela_err_set(err, VELA_EDIM, "leanvec: dimension %u not in 1..%u", D, dmax);
	if (d < 1 || d > D)
		return vela_err_set(err, VELA_EDIM, "leanvec: reduced dimension %u not in 1..%u",
				    d, D);
	return 0;
}

/* `rows` x D matrix `M`: present, at least `min_rows` rows, finite. */
static int lv_check_matrix(const char *name, const float *M, size_t rows, size_t min_rows,
			   uint32_t D, vela_err_t *err)
{
	if (!M)
		return vela_err_set(err, VELA_EINVAL, "leanvec: %s is NULL", name);
	if (rows < min_rows)
		return vela_err_set(err, VELA_EINVAL, "leanvec: %s has %zu rows, needs >= %zu",
				    name, rows, min_rows);
	size_t len = vela_mul_size(rows, D);
	if (len == SIZE_MAX || vela_mul_size(len, sizeof(double)) == SIZE_MAX)
		return vela_err_set(err, VELA_EINVAL, "leanvec: %s is too large", name);
	for (size_t i = 0; i < len; i++)
		if (!isfinite(M[i]))
			return vela_err_set(err, VELA_EINVAL,
					    "leanvec: %s[%zu][%zu] is not finite", name,
					    i / D, i % D);
	return 0;
}

/* ------------------------------------------------ small dense helpers */

static double *lv_alloc(size_t count)
{
	return malloc(vela_mul_size(count, sizeof(double)));
}

static double lv_frob_dot(const double *a, const double *b, size_t len)
{
	double s = 0;
	for (size_t i = 0; i < len; i++)
		s += a[i] * b[i];
	return s;
}

static void lv_to_float(const double *src, float *dst, size_t len)
{
	for (size_t i = 0; i < len; i++)
		dst[i] = (float)src[i];
}

static void lv_to_double(const float *src, double *dst, size_t len)
{
	for (size_t i = 0; i < len; i++)
		dst[i] = src[i];
}

/* C (r x c) = M (r x k) * N (k x c), or M * N^T when `nt` (N then c x k). */
static void lv_gemm(const double *M, const double *N, int nt, uint32_t r, uint32_t k,
		    uint32_t c, double *C)
{
	cblas_dgemm(CblasRowMajor, CblasNoTrans, nt ? CblasTrans : CblasNoTrans, (int)r,
		    (int)c, (int)k, 1.0, M, (int)k, N, nt ? (int)k : (int)c, 0.0, C, (int)c);
}

/* ------------------------------------------------ second moments */

static void lv_mean(const float *X, size_t n, uint32_t D, double *mu)
{
	memset(mu, 0, D * sizeof(*mu));
	for (size_t i = 0; i < n; i++)
		for (uint32_t j = 0; j < D; j++)
			mu[j] += X[i * D + j];
	for (uint32_t j = 0; j < D; j++)
		mu[j] /= (double)n;
}

int quant_leanvec_gram(const float *X, uint64_t n, uint32_t D, const double *mu, double *G,
		       vela_err_t *err)
{
	if (!G || (n && !X) || D < VELA_DIM_MIN || D > VELA_DIM_MAX)
		return vela_err_set(err, VELA_EINVAL, "leanvec gram: NULL matrix or dimension %u", D);
	memset(G, 0, (size_t)D * D * sizeof(*G));
	if (n == 0)
		return 0;
	size_t chunk = LV_CHUNK_DOUBLES / D ? LV_CHUNK_DOUBLES / D : 1;
	if (chunk > n)
		chunk = (size_t)n;
	double *buf = lv_alloc(chunk * D);
	if (!buf)
		return vela_err_set(err, VELA_ENOMEM, "leanvec gram: out of memory (D = %u)", D);
	for (uint64_t r0 = 0; r0 < n; r0 += chunk) {
		size_t rows = n - r0 < chunk ? (size_t)(n - r0) : chunk;
		lv_to_double(X + r0 * D, buf, rows * D);
		if (mu)
			for (size_t i = 0; i < rows; i++)
				for (uint32_t j = 0; j < D; j++)
					buf[i * D + j] -= mu[j];
		cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)D, (int)rows, 1.0, buf,
			    (int)D, 1.0, G, (int)D);
	}
	free(buf);
	for (uint32_t i = 0; i < D; i++) /* mirror the upper triangle */
		for (uint32_t j = 0; j < i; j++)
			G[(size_t)i * D + j] = G[(size_t)j * D + i];
	return 0;
}

/* C (D x D, full) = 1/n sum (x - mu)(x - mu)^T; mu NULL means 0. The sums
 * are `gram`'s (NULL: quant_leanvec_gram, double-precision dsyrk), the
 * O(n D^2) part of training. */
static int lv_moment(quant_leanvec_gram_fn gram, const float *X, size_t n, uint32_t D,
		     const double *mu, double *C, vela_err_t *err)
{
	int rc = (gram ? gram : quant_leanvec_gram)(X, n, D, mu, C, err);
	for (size_t i = 0; rc == 0 && i < (size_t)D * D; i++)
		C[i] /= (double)n;
	return rc;
}

/* ------------------------------------------------ eigenvectors */

/* Sign a vector so its largest-magnitude entry is positive: determinism. */
static void lv_fix_sign(double *v, uint32_t D)
{
	uint32_t arg = 0;
	for (uint32_t j = 1; j < D; j++)
		if (fabs(v[j]) > fabs(v[arg]))
			arg = j;
	if (v[arg] < 0)
		for (uint32_t j = 0; j < D; j++)
			v[j] = -v[j];
}

/* P (d x D) = top-d eigenvectors of symmetric C as rows, decreasing. */
static int lv_top_eig(const double *C, uint32_t D, uint32_t d, double *P, vela_err_t *err)
{
	double *a = lv_alloc((size_t)D * D), *w = lv_alloc(D), *z = lv_alloc((size_t)D * d);
	lapack_int *supp = malloc(2 * (size_t)d * sizeof(*supp)), found = 0;
	int rc = VELA_ENOMEM;
	if (!a || !w || !z || !supp)
		goto out;
	memcpy(a, C, (size_t)D * D * sizeof(*a));
	/* Column-major: eigenvector k is the contiguous column z + k D. */
	lapack_int info = LAPACKE_dsyevr(LAPACK_COL_MAJOR, 'V', 'I', 'U', (lapack_int)D, a,
					 (lapack_int)D, 0.0, 0.0, (lapack_int)(D - d + 1),
					 (lapack_int)D, 0.0, &found, w, z, (lapack_int)D, supp);
	if (info != 0 || found != (lapack_int)d) {
		rc = vela_err_set(err, VELA_EINVAL, "leanvec: dsyevr failed (info %d)", (int)info);
		goto out;
	}
	for (uint32_t k = 0; k < d; k++) { /* ascending -> descending */
		memcpy(P + (size_t)k * D, z + (size_t)(d - 1 - k) * D, D * sizeof(*P));
		lv_fix_sign(P + (size_t)k * D, D);
	}
	rc = 0;
out:
	free(a), free(w), free(z), free(supp);
	return rc;
}

/* ------------------------------------------------ LeanVec-ID (§1.2) */

int quant_leanvec_train_id(const float *X, size_t n, uint32_t D, uint32_t d, float *P,
			   float *mean, vela_err_t *err)
{
	return quant_leanvec_train_id_with(NULL, X, n, D, d, P, mean, err);
}

int quant_leanvec_train_id_with(quant_leanvec_gram_fn gram, const float *X, size_t n, uint32_t D,
				uint32_t d, float *P, float *mean, vela_err_t *err)
{
	int rc = lv_check_dims(D, d, QUANT_LEANVEC_TRAIN_DIM_MAX, err);
	if (rc)
		return rc;
	if (!P)
		return vela_err_set(err, VELA_EINVAL, "leanvec: P is NULL");
	if ((rc = lv_check_matrix("X", X, n, d, D, err)))
		return rc;
	double *mu = lv_alloc(D), *C = lv_alloc((size_t)D * D), *Pd = lv_alloc((size_t)d * D);
	rc = VELA_ENOMEM;
	if (!mu || !C || !Pd)
		goto out;
	/* SVS centres the sample before its SVD; the right singular vectors
	 * of the centred sample are the covariance's eigenvectors. */
	lv_mean(X, n, D, mu);
	if ((rc = lv_moment(gram, X, n, D, mu, C, err)) || (rc = lv_top_eig(C, D, d, Pd, err)))
		goto out;
	lv_to_float(Pd, P, (size_t)d * D);
	if (mean)
		lv_to_float(mu, mean, D);
out:
	free(mu), free(C), free(Pd);
	if (rc == VELA_ENOMEM)
		vela_err_set(err, rc, "leanvec: out of memory (D = %u)", D);
	return rc;
}

/* ------------------------------------------------ the OOD loss (§1.3) */

/* Query and data second moments and tr(Q~X~) (the loss at A = B = 0). */
typedef struct {
	uint32_t D, d;
	double *Cq, *Cx; /* D x D */
	double c0;
} lv_moments_t;

static void lv_moments_free(lv_moments_t *mo)
{
	free(mo->Cq), free(mo->Cx);
}

static int lv_moments_init(lv_moments_t *mo, quant_leanvec_gram_fn gram, const float *X,
			   size_t n, const float *Q, size_t m, uint32_t D, uint32_t d,
			   vela_err_t *err)
{
	size_t DD = (size_t)D * D;
	mo->D = D, mo->d = d;
	mo->Cq = lv_alloc(DD), mo->Cx = lv_alloc(DD);
	if (!mo->Cq || !mo->Cx)
		return VELA_ENOMEM;
	int rc = lv_moment(gram, Q, m, D, NULL, mo->Cq, err);
	if (!rc)
		rc = lv_moment(gram, X, n, D, NULL, mo->Cx, err);
	if (!rc)
		mo->c0 = lv_frob_dot(mo->Cq, mo->Cx, DD);
	return rc;
}

/* Scratch for loss evaluations and Frank-Wolfe steps. */
typedef struct {
	double *YC, *ZC, *X3, *G, *S; /* d x D */
	double *WY, *WZ, *U;          /* d x d */
	double *sv, *superb;          /* d */
} lv_ws_t;

static void lv_ws_free(lv_ws_t *w)
{
	free(w->YC), free(w->ZC), free(w->X3), free(w->G), free(w->S);
	free(w->WY), free(w->WZ), free(w->U), free(w->sv), free(w->superb);
}

static int lv_ws_init(lv_ws_t *w, uint32_t D, uint32_t d)
{
	size_t dD = (size_t)d * D, dd = (size_t)d * d;
	memset(w, 0, sizeof(*w));
	w->YC = lv_alloc(dD), w->ZC = lv_alloc(dD), w->X3 = lv_alloc(dD);
	w->G = lv_alloc(dD), w->S = lv_alloc(dD);
	w->WY = lv_alloc(dd), w->WZ = lv_alloc(dd), w->U = lv_alloc(dd);
	w->sv = lv_alloc(d), w->superb = lv_alloc(d);
	if (!w->YC || !w->ZC || !w->X3 || !w->G || !w->S || !w->WY || !w->WZ || !w->U ||
	    !w->sv || !w->superb)
		return VELA_ENOMEM;
	return 0;
}

/* L(A, B) from the moments; clamped at 0 against rounding. */
static double lv_loss(const lv_moments_t *mo, const double *A, const double *B, lv_ws_t *w)
{
	uint32_t D = mo->D, d = mo->d;
	lv_gemm(A, mo->Cq, 0, d, D, D, w->YC); /* A Q~ */
	lv_gemm(B, mo->Cx, 0, d, D, D, w->ZC); /* B X~ */
	lv_gemm(w->YC, A, 1, d, D, d, w->WY);  /* A Q~ A^T */
	lv_gemm(w->ZC, B, 1, d, D, d, w->WZ);  /* B X~ B^T */
	double L = mo->c0 - 2 * lv_frob_dot(w->ZC, w->YC, (size_t)d * D) +
		   lv_frob_dot(w->WY, w->WZ, (size_t)d * d);
	return L > 0 ? L : 0;
}

int quant_leanvec_loss(const float *A, const float *B, uint32_t d, uint32_t D, const float *X,
		       size_t n, const float *Q, size_t m, double *loss, vela_err_t *err)
{
	int rc = lv_check_dims(D, d, QUANT_LEANVEC_TRAIN_DIM_MAX, err);
	if (rc)
		return rc;
	if (!loss)
		return vela_err_set(err, VELA_EINVAL, "leanvec: loss is NULL");
	if ((rc = lv_check_matrix("A", A, d, d, D, err)) ||
	    (rc = lv_check_matrix("B", B, d, d, D, err)) ||
	    (rc = lv_check_matrix("X", X, n, 1, D, err)) ||
	    (rc = lv_check_matrix("Q", Q, m, 1, D, err)))
		return rc;
	lv_moments_t mo = {0};
	lv_ws_t w;
	double *Ad = lv_alloc((size_t)d * D), *Bd = lv_alloc((size_t)d * D);
	rc = lv_ws_init(&w, D, d);
	if (!rc && (!Ad || !Bd))
		rc = VELA_ENOMEM;
	if (!rc)
		rc = lv_moments_init(&mo, NULL, X, n, Q, m, D, d, err);
	if (!rc) {
		lv_to_double(A, Ad, (size_t)d * D);
		lv_to_double(B, Bd, (size_t)d * D);
		*loss = lv_loss(&mo, Ad, Bd, &w);
	}
	lv_moments_free(&mo), lv_ws_free(&w);
	free(Ad), free(Bd);
	if (rc)
		vela_err_set(err, rc, "leanvec: out of memory (D = %u)", D);
	return rc;
}

/* ------------------------------------------------ OOD: eigenvector search */

/* A = B = P, P the top-d eigenvectors of beta Q~/|Q~| + (1-beta) X~/|X~|,
 * best beta of an even grid on [0, 1] (§1.3, second technique). */
static int lv_eig_search(const lv_moments_t *mo, uint32_t grid, double *P, double *loss,
			 double *beta, lv_ws_t *w, vela_err_t *err)
{
	uint32_t D = mo->D, d = mo->d;
	size_t DD = (size_t)D * D;
	double nq = sqrt(lv_frob_dot(mo->Cq, mo->Cq, DD));
	double nx = sqrt(lv_frob_dot(mo->Cx, mo->Cx, DD));
	double *K = lv_alloc(DD), *Pt = lv_alloc((size_t)d * D);
	int rc = K && Pt ? 0 : VELA_ENOMEM;
	*loss = INFINITY;
	for (uint32_t g = 0; !rc && g < grid; g++) {
		double b = (double)g / (grid - 1);
		double sq = nq > 0 ? b / nq : 0, sx = nx > 0 ? (1 - b) / nx : 0;
		for (size_t i = 0; i < DD; i++)
			K[i] = sq * mo->Cq[i] + sx * mo->Cx[i];
		if ((rc = lv_top_eig(K, D, d, Pt, err)))
			break;
		double L = lv_loss(mo, Pt, Pt, w);
		if (L < *loss) {
			*loss = L, *beta = b;
			memcpy(P, Pt, (size_t)d * D * sizeof(*P));
		}
	}
	free(K), free(Pt);
	return rc;
}

/* ------------------------------------------------ OOD: Frank-Wolfe */

/* Linear minimiser over the spectral-norm unit ball: for G = U S V^T the
 * minimiser of <G, S'> is S' = -U V^T (thin SVD; G is d x D, d <= D). */
static int lv_lmo(lv_ws_t *w, uint32_t D, uint32_t d, vela_err_t *err)
{
	memcpy(w->X3, w->G, (size_t)d * D * sizeof(double)); /* dgesvd destroys */
	lapack_int info = LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'S', 'S', (lapack_int)d,
					 (lapack_int)D, w->X3, (lapack_int)D, w->sv, w->U,
					 (lapack_int)d, w->YC, (lapack_int)D, w->superb);
	if (info != 0)
		return vela_err_set(err, VELA_EINVAL, "leanvec: dgesvd failed (info %d)",
				    (int)info);
	cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)d, (int)D, (int)d, -1.0,
		    w->U, (int)d, w->YC, (int)D, 0.0, w->S, (int)D);
	return 0;
}

/* One Frank-Wolfe block step on Y with Z fixed (Y = A: Cy = Q~, Cz = X~;
 * Y = B: the other way round). gamma < 0 asks for the exact line search:
 * L(Y + g Dl) = L + g g1 + g^2 g2 with Dl = S - Y, g1 = <G, Dl> <= 0,
 * g2 = <Dl Cy Dl^T, Z Cz Z^T> >= 0, minimised over g in [0, 1]. */
static int lv_fw_block(double *Y, const double *Z, const double *Cy, const double *Cz,
		       uint32_t D, uint32_t d, double gamma, lv_ws_t *w, vela_err_t *err)
{
	size_t dD = (size_t)d * D;
	lv_gemm(Z, Cz, 0, d, D, D, w->ZC);     /* Z Cz */
	lv_gemm(w->ZC, Z, 1, d, D, d, w->WZ);  /* Z Cz Z^T */
	lv_gemm(Y, Cy, 0, d, D, D, w->G);      /* Y Cy */
	lv_gemm(w->ZC, Cy, 0, d, D, D, w->X3); /* Z Cz Cy */
	lv_gemm(w->WZ, w->G, 0, d, d, D, w->YC);
	for (size_t i = 0; i < dD; i++) /* dL/dY = 2 (WZ Y Cy - Z Cz Cy) */
		w->G[i] = 2 * (w->YC[i] - w->X3[i]);
	int rc = lv_lmo(w, D, d, err);
	if (rc)
		return rc;
	for (size_t i = 0; i < dD; i++) /* S := Dl = S - Y */
		w->S[i] -= Y[i];
	if (gamma < 0) {
		double g1 = lv_frob_dot(w->G, w->S, dD);
		lv_gemm(w->S, Cy, 0, d, D, D, w->X3);
		lv_gemm(w->X3, w->S, 1, d, D, d, w->WY);
		double g2 = lv_frob_dot(w->WY, w->WZ, (size_t)d * d);
		gamma = g2 > 0 ? -g1 / (2 * g2) : (g1 < 0 ? 1 : 0);
		gamma = gamma < 0 ? 0 : gamma > 1 ? 1 : gamma;
	}
	for (size_t i = 0; i < dD; i++)
		Y[i] += gamma * w->S[i];
	return 0;
}

/* Step size of iteration t: < 0 asks lv_fw_block for the line search.
 * SVS's rule 1/(t+1)^p has gamma_0 = 1, which would discard a warm start:
 * then the count starts at 1. */
static double lv_fw_gamma(const quant_leanvec_ood_opts_t *o, uint32_t t)
{
	if (o->step == QUANT_LEANVEC_STEP_LINE_SEARCH)
		return -1;
	double k = t + (o->init == QUANT_LEANVEC_INIT_EIGEN ? 2.0 : 1.0);
	return 1 / pow(k, o->step_exp);
}

/* Alternating (block-coordinate) Frank-Wolfe on L(A, B), §1.3. A and B
 * hold the start (zero, or a warm start) and receive the result. */
static int lv_frank_wolfe(const lv_moments_t *mo, const quant_leanvec_ood_opts_t *o,
			  double *A, double *B, quant_leanvec_ood_stats_t *st, lv_ws_t *w,
			  vela_err_t *err)
{
	uint32_t D = mo->D, d = mo->d;
	double prev = mo->c0;
	int rc = 0;
	st->fw_iters = 0, st->fw_converged = 0;
	if (o->init == QUANT_LEANVEC_INIT_ZERO) {
		/* At A = B = 0 both gradients vanish and L is flat in A: start A
		 * on the queries' principal subspace (gamma_0 = 1). */
		if ((rc = lv_top_eig(mo->Cq, D, d, A, err)))
			return rc;
	} else {
		prev = lv_loss(mo, A, B, w);
	}
	for (uint32_t t = 0; t < o->max_iters; t++) {
		double gamma = lv_fw_gamma(o, t);
		if (t > 0 || o->init != QUANT_LEANVEC_INIT_ZERO)
			rc = lv_fw_block(A, B, mo->Cq, mo->Cx, D, d, gamma, w, err);
		if (!rc)
			rc = lv_fw_block(B, A, mo->Cx, mo->Cq, D, d, gamma, w, err);
		if (rc)
			return rc;
		double L = lv_loss(mo, A, B, w);
		if (o->trace)
			o->trace[t] = L;
		st->fw_iters = t + 1;
		if (t > 1 && fabs(L - prev) <= o->rel_tol * prev) {
			st->fw_converged = 1;
			break;
		}
		prev = L;
	}
	st->loss_fw = lv_loss(mo, A, B, w);
	return 0;
}

/* ------------------------------------------------ OOD: driver */

void quant_leanvec_ood_opts_default(quant_leanvec_ood_opts_t *o)
{
	*o = (quant_leanvec_ood_opts_t){
		.method = QUANT_LEANVEC_OOD_BEST,
		.max_iters = QUANT_LEANVEC_FW_ITERS_DEFAULT,
		.rel_tol = QUANT_LEANVEC_FW_TOL_DEFAULT,
		.step = QUANT_LEANVEC_FW_STEP_DEFAULT,
		.step_exp = QUANT_LEANVEC_FW_STEP_EXP_DEFAULT,
		.init = QUANT_LEANVEC_INIT_ZERO,
		.eig_grid = QUANT_LEANVEC_EIG_GRID_DEFAULT,
		.trace = NULL,
		.gram = NULL,
	};
}

static int lv_check_opts(const quant_leanvec_ood_opts_t *o, vela_err_t *err)
{
	if (o->method < QUANT_LEANVEC_OOD_BEST || o->method > QUANT_LEANVEC_OOD_EIGEN)
		return vela_err_set(err, VELA_EINVAL, "leanvec: unknown method %d", o->method);
	if (o->max_iters < QUANT_LEANVEC_FW_ITERS_MIN || o->max_iters > QUANT_LEANVEC_FW_ITERS_MAX)
		return vela_err_set(err, VELA_EINVAL, "leanvec: max_iters %u not in %u..%u",
				    o->max_iters, QUANT_LEANVEC_FW_ITERS_MIN,
				    QUANT_LEANVEC_FW_ITERS_MAX);
	if (!(o->rel_tol >= QUANT_LEANVEC_FW_TOL_MIN && o->rel_tol <= QUANT_LEANVEC_FW_TOL_MAX))
		return vela_err_set(err, VELA_EINVAL, "leanvec: rel_tol %g not in [%g, %g]",
				    o->rel_tol, QUANT_LEANVEC_FW_TOL_MIN, QUANT_LEANVEC_FW_TOL_MAX);
	if (o->step != QUANT_LEANVEC_STEP_LINE_SEARCH && o->step != QUANT_LEANVEC_STEP_DIMINISHING)
		return vela_err_set(err, VELA_EINVAL, "leanvec: unknown step rule %d", o->step);
	if (!(o->step_exp >= QUANT_LEANVEC_FW_STEP_EXP_MIN &&
	      o->step_exp <= QUANT_LEANVEC_FW_STEP_EXP_MAX))
		return vela_err_set(err, VELA_EINVAL, "leanvec: step_exp %g not in [%g, %g]",
				    o->step_exp, QUANT_LEANVEC_FW_STEP_EXP_MIN,
				    QUANT_LEANVEC_FW_STEP_EXP_MAX);
	if (o->init != QUANT_LEANVEC_INIT_ZERO && o->init != QUANT_LEANVEC_INIT_EIGEN)
		return vela_err_set(err, VELA_EINVAL, "leanvec: unknown init %d", o->init);
	if (o->eig_grid < QUANT_LEANVEC_EIG_GRID_MIN || o->eig_grid > QUANT_LEANVEC_EIG_GRID_MAX)
		return vela_err_set(err, VELA_EINVAL, "leanvec: eig_grid %u not in %u..%u",
				    o->eig_grid, QUANT_LEANVEC_EIG_GRID_MIN,
				    QUANT_LEANVEC_EIG_GRID_MAX);
	return 0;
}

static int lv_check_ood_args(const float *X, size_t n, const float *Q, size_t m, uint32_t D,
			     uint32_t d, const quant_leanvec_ood_opts_t *o, const float *A,
			     const float *B, vela_err_t *err)
{
	int rc = lv_check_dims(D, d, QUANT_LEANVEC_TRAIN_DIM_MAX, err);
	if (rc)
		return rc;
	if (!A || !B)
		return vela_err_set(err, VELA_EINVAL, "leanvec: output %s is NULL", A ? "B" : "A");
	if ((rc = lv_check_opts(o, err)) || (rc = lv_check_matrix("X", X, n, d, D, err)))
		return rc;
	return lv_check_matrix("Q", Q, m, 1, D, err);
}

/* Run what `o` asks, leaving the winner in (A, B) and the record in st. */
static int lv_train_ood(const lv_moments_t *mo, const quant_leanvec_ood_opts_t *o,
			double *A, double *B, double *P, quant_leanvec_ood_stats_t *st,
			lv_ws_t *w, vela_err_t *err)
{
	size_t dD = (size_t)mo->d * mo->D;
	int want_eig = o->method != QUANT_LEANVEC_OOD_FRANK_WOLFE ||
		       o->init == QUANT_LEANVEC_INIT_EIGEN;
	int rc = 0;
	if (want_eig && (rc = lv_eig_search(mo, o->eig_grid, P, &st->loss_eig, &st->eig_beta,
					    w, err)))
		return rc;
	if (o->method != QUANT_LEANVEC_OOD_EIGEN) {
		if (o->init == QUANT_LEANVEC_INIT_EIGEN) {
			memcpy(A, P, dD * sizeof(*A));
			memcpy(B, P, dD * sizeof(*B));
		} else {
			memset(A, 0, dD * sizeof(*A));
			memset(B, 0, dD * sizeof(*B));
		}
		if ((rc = lv_frank_wolfe(mo, o, A, B, st, w, err)))
			return rc;
	}
	int fw_wins = o->method == QUANT_LEANVEC_OOD_FRANK_WOLFE ||
		      (o->method == QUANT_LEANVEC_OOD_BEST && st->loss_fw <= st->loss_eig);
	st->winner = fw_wins ? QUANT_LEANVEC_OOD_FRANK_WOLFE : QUANT_LEANVEC_OOD_EIGEN;
	st->loss = fw_wins ? st->loss_fw : st->loss_eig;
	if (!fw_wins) {
		memcpy(A, P, dD * sizeof(*A));
		memcpy(B, P, dD * sizeof(*B));
	}
	return 0;
}

int quant_leanvec_train_ood(const float *X, size_t n, const float *Q, size_t m, uint32_t D,
			    uint32_t d, const quant_leanvec_ood_opts_t *opts, float *A, float *B,
			    quant_leanvec_ood_stats_t *stats, vela_err_t *err)
{
	quant_leanvec_ood_opts_t o;
	if (opts)
		o = *opts;
	else
		quant_leanvec_ood_opts_default(&o);
	int rc = lv_check_ood_args(X, n, Q, m, D, d, &o, A, B, err);
	if (rc)
		return rc;
	size_t dD = (size_t)d * D;
	quant_leanvec_ood_stats_t st = {.loss_fw = NAN, .loss_eig = NAN, .eig_beta = NAN};
	lv_moments_t mo = {0};
	lv_ws_t w;
	double *Ad = lv_alloc(dD), *Bd = lv_alloc(dD), *P = lv_alloc(dD);
	rc = lv_ws_init(&w, D, d);
	if (!rc && (!Ad || !Bd || !P))
		rc = VELA_ENOMEM;
	if (!rc)
		rc = lv_moments_init(&mo, o.gram, X, n, Q, m, D, d, err);
	if (!rc)
		rc = lv_train_ood(&mo, &o, Ad, Bd, P, &st, &w, err);
	if (!rc) {
		st.loss_zero = mo.c0;
		lv_to_float(Ad, A, dD);
		lv_to_float(Bd, B, dD);
		if (stats)
			*stats = st;
	}
	lv_moments_free(&mo), lv_ws_free(&w);
	free(Ad), free(Bd), free(P);
	if (rc == VELA_ENOMEM)
		vela_err_set(err, rc, "leanvec: out of memory (D = %u)", D);
	return rc;
}

/* ------------------------------------------------ projection */

static int lv_check_project(const float *P, uint32_t d, uint32_t D, const void *in,
			    const void *out)
{
	if (!P || !in || !out || D < VELA_DIM_MIN || D > VELA_DIM_MAX || d < 1 || d > D)
		return VELA_EINVAL;
	return 0;
}

int quant_leanvec_project(const float *P, uint32_t d, uint32_t D, const float *x, float *y)
{
	int rc = lv_check_project(P, d, D, x, y);
	if (rc)
		return rc;
	/* One vector per call (each query, each insert): d dot products on the
	 * dispatched SIMD kernel, not BLAS sgemv, whose thread pool made
	 * concurrent searches contend (~10x slower with 2 search threads on 2
	 * cores, bench/ann). The batch form below stays on BLAS. */
	for (uint32_t i = 0; i < d; i++)
		y[i] = quant_dot_f32(P + (size_t)i * D, x, D);
	return 0;
}

int quant_leanvec_project_batch(const float *P, uint32_t d, uint32_t D, const float *X, size_t n,
				float *Y)
{
	if (n == 0)
		return 0;
	int rc = lv_check_project(P, d, D, X, Y);
	if (rc)
		return rc;
	const size_t block = 1u << 20; /* keeps the row count an int */
	for (size_t r0 = 0; r0 < n; r0 += block) {
		size_t rows = n - r0 < block ? n - r0 : block;
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)d, (int)D,
			    1.0f, X + r0 * D, (int)D, P, (int)D, 0.0f, Y + r0 * d, (int)d);
	}
	return 0;
}
