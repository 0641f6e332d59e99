/* LVQ: encoder, decoder, prepared queries, distance dispatch and the scalar
 * kernels. Formulas: LVQ paper (VLDB 2023) as summarised in
 * reference/leanvec-lvq.md §2.1 (one level), §2.2 (two levels), §2.3
 * (distances on codes), §2.4 (Turbo 4-bit layout). */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "quant/quant_impl.h"

/* scale then bias, binary16 little-endian, after the primary codes */
#define LVQ_CONST_BYTES 4u

struct quant_lvq {
	quant_lvq_kind_t kind;
	uint32_t dim;
	unsigned b1, b2;   /* bits of the primary and residual level (0: none) */
	size_t p_bytes;    /* primary codes */
	size_t r_bytes;    /* residual codes */
	float mean[];      /* dim floats */
};

struct quant_lvq_query {
	vela_metric_t metric;
	uint32_t dim;
	double sum_q; /* IP: sum_j q_j */
	double q_mu;  /* IP: <q, mean> */
	float v[];    /* IP/COSINE: q; L2: q - mean */
};

/* ------------------------------------------------ geometry */

static size_t lvq_level_bytes(unsigned bits, uint32_t dim)
{
	if (bits == 8)
		return dim;
	if (bits == 4)
		return (dim + QUANT_LVQ_TURBO_DIMS - 1) / QUANT_LVQ_TURBO_DIMS * QUANT_LVQ_TURBO_BYTES;
	return 0;
}

static void lvq_kind_bits(quant_lvq_kind_t kind, unsigned *b1, unsigned *b2)
{
	static const unsigned bits[QUANT_LVQ_KIND_COUNT][2] = {{8, 0}, {4, 0}, {4, 4}, {4, 8}};
	*b1 = bits[kind][0];
	*b2 = bits[kind][1];
}

int quant_lvq_create(quant_lvq_kind_t kind, uint32_t dim, const float *mean,
		     quant_lvq_t **out)
{
	if (out == NULL || (unsigned)kind >= QUANT_LVQ_KIND_COUNT)
		return VELA_EINVAL;
	if (dim < VELA_DIM_MIN || dim > VELA_DIM_MAX)
		return VELA_EDIM;
	for (uint32_t j = 0; mean && j < dim; j++)
		if (!isfinite(mean[j]))
			return VELA_EINVAL;
	quant_lvq_t *l = calloc(1, sizeof(*l) + (size_t)dim * sizeof(float));
	if (l == NULL)
		return VELA_ENOMEM;
	l->kind = kind;
	l->dim = dim;
	lvq_kind_bits(kind, &l->b1, &l->b2);
	l->p_bytes = lvq_level_bytes(l->b1, dim);
	l->r_bytes = lvq_level_bytes(l->b2, dim);
	if (mean)
		memcpy(l->mean, mean, (size_t)dim * sizeof(float));
	*out = l;
	return 0;
}

void quant_lvq_destroy(quant_lvq_t *l)
{
	free(l);
}

quant_lvq_kind_t quant_lvq_kind(const quant_lvq_t *l) { return l->kind; }
uint32_t quant_lvq_dim(const quant_lvq_t *l) { return l->dim; }
const float *quant_lvq_mean(const quant_lvq_t *l) { return l->mean; }
unsigned quant_lvq_primary_bits(const quant_lvq_t *l) { return l->b1; }
unsigned quant_lvq_residual_bits(const quant_lvq_t *l) { return l->b2; }

size_t quant_lvq_primary_size(const quant_lvq_t *l)
{
	return l->p_bytes + LVQ_CONST_BYTES;
}

size_t quant_lvq_code_size(const quant_lvq_t *l)
{
	return l->p_bytes + LVQ_CONST_BYTES + l->r_bytes;
}

int quant_mean(const float *X, size_t n, uint32_t dim, float *mean)
{
	if (X == NULL || mean == NULL || n == 0 || dim == 0)
		return VELA_EINVAL;
	double *acc = calloc(dim, sizeof(double));
	if (acc == NULL)
		return VELA_ENOMEM;
	for (size_t i = 0; i < n; i++)
		for (uint32_t j = 0; j < dim; j++)
			acc[j] += X[i * dim + j];
	for (uint32_t j = 0; j < dim; j++)
		mean[j] = (float)(acc[j] / (double)n);
	free(acc);
	return 0;
}

/* ------------------------------------------------ code access */

/* Turbo 4-bit position of dimension i (§2.4): block a = i/128, b = i%128;
 * nibble b/16 of little-endian u32 lane b%16. */
static inline size_t lvq_turbo_byte(size_t i)
{
	size_t b = i % QUANT_LVQ_TURBO_DIMS;
	return i / QUANT_LVQ_TURBO_DIMS * QUANT_LVQ_TURBO_BYTES + 4 * (b % 16) + b / 32;
}

static inline unsigned lvq_turbo_shift(size_t i)
{
	return 4 * (unsigned)((i % QUANT_LVQ_TURBO_DIMS / 16) & 1);
}

static inline unsigned lvq_code_get(unsigned bits, const uint8_t *codes, size_t i)
{
	if (bits == 8)
		return codes[i];
	return (codes[lvq_turbo_byte(i)] >> lvq_turbo_shift(i)) & 0xFu;
}

static void lvq_code_set(unsigned bits, uint8_t *codes, size_t i, unsigned v)
{
	if (bits == 8) {
		codes[i] = (uint8_t)v;
		return;
	}
	size_t at = lvq_turbo_byte(i);
	unsigned sh = lvq_turbo_shift(i);
	codes[at] = (uint8_t)((codes[at] & ~(0xFu << sh)) | (v << sh));
}

static void lvq_consts_put(uint8_t *p, uint16_t scale, uint16_t bias)
{
	p[0] = (uint8_t)scale;
	p[1] = (uint8_t)(scale >> 8);
	p[2] = (uint8_t)bias;
	p[3] = (uint8_t)(bias >> 8);
}

static void lvq_consts_get(const uint8_t *p, float *scale, float *bias)
{
	*scale = quant_f16_to_f32_one((uint16_t)(p[0] | p[1] << 8));
	*bias = quant_f16_to_f32_one((uint16_t)(p[2] | p[3] << 8));
}

/* ------------------------------------------------ encoding (§2.1, §2.2) */

/* Adjacent binary16 towards +inf (up) or -inf; h is finite. */
static uint16_t lvq_half_step(uint16_t h, int up)
{
	int neg = (h & 0x8000) != 0;
	if ((h & 0x7fff) == 0) /* +-0: the smallest subnormal of the wanted sign */
		return up ? 0x0001 : 0x8001;
	return (uint16_t)(neg == up ? h - 1 : h + 1);
}

/* binary16 nearest to v, then moved one step if it lies on the wrong side:
 * rounding towards +inf (up) or -inf. Overflow gives an infinity. */
static uint16_t lvq_half_directed(float v, int up)
{
	uint16_t h = quant_f32_to_f16_one(v);
	float f = quant_f16_to_f32_one(h);
	if (isfinite(f) && (up ? f < v : f > v))
		h = lvq_half_step(h, up);
	else if (!up && isinf(f) && f > 0) /* just above 65504 rounds down to it */
		h = 0x7bff;
	return h;
}

/* Round t = (value - offset) / step to the nearest integer in [lo, hi]. */
static unsigned lvq_round_clamp(float t, unsigned lo, unsigned hi)
{
	if (!(t > (float)lo)) /* also catches NaN (step 0) */
		return lo;
	if (t >= (float)hi)
		return hi;
	unsigned c = (unsigned)(t + 0.5f);
	return c > hi ? hi : c;
}

/* Per-vector constants of §2.1 with directed rounding (see quant.h):
 * bias = f16_down(min y), scale = f16_up((max y - bias) / (2^B - 1)). */
static int lvq_constants(const float *y, uint32_t dim, unsigned bits, uint16_t *hs,
			 uint16_t *hb)
{
	float lo = INFINITY, hi = -INFINITY;
	for (uint32_t j = 0; j < dim; j++) {
		lo = y[j] < lo ? y[j] : lo;
		hi = y[j] > hi ? y[j] : hi;
	}
	*hb = lvq_half_directed(lo, 0);
	float b = quant_f16_to_f32_one(*hb);
	if (!isfinite(b))
		return VELA_EINVAL;
	double want = ((double)hi - (double)b) / (double)((1u << bits) - 1);
	float t = (float)want;
	if ((double)t < want) /* keep the rounding directed through float too */
		t = nextafterf(t, INFINITY);
	*hs = lvq_half_directed(t, 1);
	if (want > 0 && *hs == 0) /* below half the smallest subnormal */
		*hs = 1;
	return isfinite(quant_f16_to_f32_one(*hs)) ? 0 : VELA_EINVAL;
}

/* Two-level fused constants (§2.2): step delta = scale / (2^B2 - 1) and
 * offset beta = bias - scale/2; encoder, decoder and kernels all use these. */
static void lvq_fused_consts(float scale, float bias, unsigned b2, float *delta, float *beta)
{
	*delta = scale / (float)((1u << b2) - 1);
	*beta = bias - scale * 0.5f;
}

/* y = x - mean; VELA_EINVAL when a component is not finite. */
static int lvq_centre(const quant_lvq_t *l, const float *x, float *y)
{
	int rc = 0;
	for (uint32_t j = 0; j < l->dim; j++) {
		y[j] = x[j] - l->mean[j];
		rc |= !isfinite(y[j]);
	}
	return rc ? VELA_EINVAL : 0;
}

/* Codes of both levels for centred y with constants (hs, hb) already chosen. */
static void lvq_encode_codes(const quant_lvq_t *l, const float *y, uint16_t hs, uint16_t hb,
			     uint8_t *p)
{
	uint8_t *r = p + l->p_bytes + LVQ_CONST_BYTES;
	float s = quant_f16_to_f32_one(hs), b = quant_f16_to_f32_one(hb), delta = 0, beta = 0;
	unsigned pmax = (1u << l->b1) - 1, m2 = l->b2 ? (1u << l->b2) - 1 : 0;
	memset(p, 0, quant_lvq_code_size(l)); /* Turbo padding stays zero */
	lvq_consts_put(p + l->p_bytes, hs, hb);
	if (m2)
		lvq_fused_consts(s, b, l->b2, &delta, &beta);
	for (uint32_t j = 0; j < l->dim; j++) {
		unsigned c = lvq_round_clamp((y[j] - b) / s, 0, pmax);
		lvq_code_set(l->b1, p, j, c);
		if (m2) /* nearest fused grid point inside the primary's cell (§2.2) */
			lvq_code_set(l->b2, r, j,
				     lvq_round_clamp((y[j] - beta) / delta, m2 * c, m2 * c + m2) -
					     m2 * c);
	}
}

int quant_lvq_encode(const quant_lvq_t *l, const float *x, void *code)
{
	float *y = malloc((size_t)l->dim * sizeof(float));
	if (y == NULL)
		return VELA_ENOMEM;
	uint16_t hs = 0, hb = 0;
	int rc = lvq_centre(l, x, y);
	if (rc == 0)
		rc = lvq_constants(y, l->dim, l->b1, &hs, &hb);
	if (rc == 0)
		lvq_encode_codes(l, y, hs, hb, code);
	free(y);
	return rc;
}

static void lvq_decode_level(const quant_lvq_t *l, const uint8_t *p, int full, float *out)
{
	float s, b, delta, beta;
	const uint8_t *r = p + l->p_bytes + LVQ_CONST_BYTES;
	lvq_consts_get(p + l->p_bytes, &s, &b);
	full = full && l->b2;
	if (full)
		lvq_fused_consts(s, b, l->b2, &delta, &beta);
	for (uint32_t j = 0; j < l->dim; j++) {
		unsigned c = lvq_code_get(l->b1, p, j);
		float v = b + s * (float)c;
		if (full)
			v = beta + delta * (float)(((1u << l->b2) - 1) * c + lvq_code_get(l->b2, r, j));
		out[j] = l->mean[j] + v;
	}
}

void quant_lvq_decode(const quant_lvq_t *l, const void *code, float *out)
{
	lvq_decode_level(l, code, 1, out);
}

void quant_lvq_decode_primary(const quant_lvq_t *l, const void *code, float *out)
{
	lvq_decode_level(l, code, 0, out);
}

/* ------------------------------------------------ prepared queries (§2.3) */

int quant_lvq_query_create(const quant_lvq_t *l, quant_lvq_query_t **out)
{
	if (l == NULL || out == NULL)
		return VELA_EINVAL;
	quant_lvq_query_t *pq = calloc(1, sizeof(*pq) + (size_t)l->dim * sizeof(float));
	if (pq == NULL)
		return VELA_ENOMEM;
	pq->dim = l->dim;
	*out = pq;
	return 0;
}

_Static_assert(_Alignof(quant_lvq_query_t) <= QUANT_LVQ_QUERY_ALIGN, "query alignment");

size_t quant_lvq_query_size(const quant_lvq_t *l)
{
	return sizeof(quant_lvq_query_t) + (size_t)l->dim * sizeof(float);
}

quant_lvq_query_t *quant_lvq_query_place(const quant_lvq_t *l, void *buf)
{
	if (l == NULL || buf == NULL || (uintptr_t)buf % QUANT_LVQ_QUERY_ALIGN)
		return NULL;
	quant_lvq_query_t *pq = buf;
	memset(pq, 0, sizeof(*pq));
	pq->dim = l->dim;
	return pq;
}

void quant_lvq_query_destroy(quant_lvq_query_t *pq)
{
	free(pq);
}

int quant_lvq_query_prepare(const quant_lvq_t *l, vela_metric_t m, const float *q,
			    quant_lvq_query_t *pq)
{
	if (l == NULL || q == NULL || pq == NULL || pq->dim != l->dim)
		return VELA_EINVAL;
	if (m != VELA_METRIC_L2 && m != VELA_METRIC_IP && m != VELA_METRIC_COSINE)
		return VELA_EINVAL;
	double sum = 0, qmu = 0;
	for (uint32_t j = 0; j < l->dim; j++) {
		if (!isfinite(q[j]))
			return VELA_EINVAL;
		sum += q[j];
		qmu += (double)q[j] * l->mean[j];
		pq->v[j] = m == VELA_METRIC_L2 ? q[j] - l->mean[j] : q[j];
	}
	pq->metric = m;
	pq->sum_q = sum;
	pq->q_mu = qmu;
	return 0;
}

/* ------------------------------------------------ distances (§2.3) */

static float lvq_distance_k(const quant_lvq_kernels_t *k, const quant_lvq_t *l,
			    const quant_lvq_query_t *pq, const uint8_t *p, const uint8_t *r,
			    int full)
{
	float s, b;
	lvq_consts_get(p + l->p_bytes, &s, &b);
	int ip = pq->metric != VELA_METRIC_L2;
	size_t d = l->dim;
	float acc;
	if (!full || l->b2 == 0) {
		if (l->b1 == 8)
			acc = ip ? k->dot_u8(pq->v, p, d) : k->l2_u8(pq->v, p, d, s, b);
		else
			acc = ip ? k->dot_u4(pq->v, p, d) : k->l2_u4(pq->v, p, d, s, b);
	} else {
		lvq_fused_consts(s, b, l->b2, &s, &b); /* delta, beta */
		if (l->b2 == 4)
			acc = ip ? k->dot_u4x4(pq->v, p, r, d) : k->l2_u4x4(pq->v, p, r, d, s, b);
		else
			acc = ip ? k->dot_u4x8(pq->v, p, r, d) : k->l2_u4x8(pq->v, p, r, d, s, b);
	}
	if (!ip)
		return acc;
	/* <q, x^> = scale <q, z> + bias sum q + <q, mu> (DistanceFastIP, §2.3) */
	return (float)(1.0 - ((double)s * acc + (double)b * pq->sum_q + pq->q_mu));
}

float quant_lvq_distance_with(const quant_lvq_kernels_t *k, const quant_lvq_t *l,
			      const quant_lvq_query_t *pq, const void *code, int full)
{
	const uint8_t *p = code;
	return lvq_distance_k(k, l, pq, p, p + l->p_bytes + LVQ_CONST_BYTES, full);
}

float quant_lvq_distance(const quant_lvq_t *l, const quant_lvq_query_t *pq, const void *code)
{
	return lvq_distance_k(quant_lvq_kernels(), l, pq, code, NULL, 0);
}

float quant_lvq_distance_full(const quant_lvq_t *l, const quant_lvq_query_t *pq,
			      const void *code)
{
	return quant_lvq_distance_with(quant_lvq_kernels(), l, pq, code, 1);
}

float quant_lvq_distance_split(const quant_lvq_t *l, const quant_lvq_query_t *pq,
			       const void *primary, const void *residual)
{
	return lvq_distance_k(quant_lvq_kernels(), l, pq, primary, residual, 1);
}

/* ------------------------------------------------ scalar kernels */

/* z_j of each code kind; the drivers below are inlined per kind. */
static inline unsigned lvq_z_u8(const uint8_t *p, const uint8_t *r, size_t j)
{
	return p[j];
}

static inline unsigned lvq_z_u4(const uint8_t *p, const uint8_t *r, size_t j)
{
	return lvq_code_get(4, p, j);
}

static inline unsigned lvq_z_u4x4(const uint8_t *p, const uint8_t *r, size_t j)
{
	return 15 * lvq_code_get(4, p, j) + lvq_code_get(4, r, j);
}

static inline unsigned lvq_z_u4x8(const uint8_t *p, const uint8_t *r, size_t j)
{
	return 255 * lvq_code_get(4, p, j) + r[j];
}

typedef unsigned (*lvq_z_fn)(const uint8_t *p, const uint8_t *r, size_t j);

/* Four partial sums, as the exact scalar kernels in quant.c. */
static inline __attribute__((always_inline)) float
scalar_dot(const float *q, const uint8_t *p, const uint8_t *r, size_t n, lvq_z_fn z)
{
	float s[4] = {0, 0, 0, 0};
	for (size_t j = 0; j < n; j++)
		s[j & 3] += q[j] * (float)z(p, r, j);
	return (s[0] + s[1]) + (s[2] + s[3]);
}

static inline __attribute__((always_inline)) float
scalar_l2(const float *q, const uint8_t *p, const uint8_t *r, size_t n, float scale,
	  float bias, lvq_z_fn z)
{
	float s[4] = {0, 0, 0, 0};
	for (size_t j = 0; j < n; j++) {
		float e = q[j] - (bias + scale * (float)z(p, r, j));
		s[j & 3] += e * e;
	}
	return (s[0] + s[1]) + (s[2] + s[3]);
}

static float scalar_dot_u8(const float *q, const uint8_t *c, size_t n)
{
	return scalar_dot(q, c, NULL, n, lvq_z_u8);
}

static float scalar_l2_u8(const float *q, const uint8_t *c, size_t n, float s, float b)
{
	return scalar_l2(q, c, NULL, n, s, b, lvq_z_u8);
}

static float scalar_dot_u4(const float *q, const uint8_t *c, size_t n)
{
	return scalar_dot(q, c, NULL, n, lvq_z_u4);
}

static float scalar_l2_u4(const float *q, const uint8_t *c, size_t n, float s, float b)
{
	return scalar_l2(q, c, NULL, n, s, b, lvq_z_u4);
}

static float scalar_dot_u4x4(const float *q, const uint8_t *p, const uint8_t *r, size_t n)
{
	return scalar_dot(q, p, r, n, lvq_z_u4x4);
}

static float scalar_l2_u4x4(const float *q, const uint8_t *p, const uint8_t *r, size_t n,
			    float s, float b)
{
	return scalar_l2(q, p, r, n, s, b, lvq_z_u4x4);
}

static float scalar_dot_u4x8(const float *q, const uint8_t *p, const uint8_t *r, size_t n)
{
	return scalar_dot(q, p, r, n, lvq_z_u4x8);
}

static float scalar_l2_u4x8(const float *q, const uint8_t *p, const uint8_t *r, size_t n,
			    float s, float b)
{
	return scalar_l2(q, p, r, n, s, b, lvq_z_u4x8);
}

const quant_lvq_kernels_t quant_lvq_kernels_scalar = {
	.name = "scalar",
	.isa = QUANT_ISA_SCALAR,
	.dot_u8 = scalar_dot_u8,
	.l2_u8 = scalar_l2_u8,
	.dot_u4 = scalar_dot_u4,
	.l2_u4 = scalar_l2_u4,
	.dot_u4x4 = scalar_dot_u4x4,
	.l2_u4x4 = scalar_l2_u4x4,
	.dot_u4x8 = scalar_dot_u4x8,
	.l2_u4x8 = scalar_l2_u4x8,
};

/* ------------------------------------------------ dispatch */

static const quant_lvq_kernels_t *lvq_chosen = &quant_lvq_kernels_scalar;
static pthread_once_t lvq_once = PTHREAD_ONCE_INIT;

static void lvq_init(void)
{
	for (int isa = QUANT_ISA_COUNT - 1; isa >= 0; isa--) {
		const quant_lvq_kernels_t *k = quant_lvq_kernels_get(isa);
		if (k) {
			lvq_chosen = k;
			return;
		}
	}
}

const quant_lvq_kernels_t *quant_lvq_kernels_get(int isa)
{
	static const quant_lvq_kernels_t *const all[QUANT_ISA_COUNT] = {
		&quant_lvq_kernels_scalar, &quant_lvq_kernels_avx2, &quant_lvq_kernels_avx512};
	/* same availability rule (and VELA_CPU_MAX cap) as the exact kernels */
	if (quant_kernels_get(isa) == NULL)
		return NULL;
	return all[isa];
}

const quant_lvq_kernels_t *quant_lvq_kernels(void)
{
	pthread_once(&lvq_once, lvq_init);
	return lvq_chosen;
}
