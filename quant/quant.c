/* Dispatch, the scalar kernels, software binary16 conversion, metrics and
 * normalisation. */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "common/common.h"
#include "quant/quant_impl.h"

/* ------------------------------------------------ binary16 in software */

static uint32_t quant_float_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof(u));
	return u;
}

static float quant_bits_float(uint32_t u)
{
	float f;
	memcpy(&f, &u, sizeof(f));
	return f;
}

/* Round `m` right by `shift` bits to nearest, ties to even. */
static uint32_t quant_round_shift(uint32_t m, unsigned shift)
{
	uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
	if (rem > half || (rem == half && (r & 1)))
		r++;
	return r;
}

uint16_t quant_f32_to_f16_one(float f)
{
	uint32_t x = quant_float_bits(f);
	uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
	uint32_t ax = x & 0x7fffffffu;
	if (ax > 0x7f800000u) /* NaN: quieten, keep the top payload bits (as F16C) */
		return sign | 0x7e00 | (uint16_t)((ax & 0x7fffff) >> 13);
	if (ax >= 0x477ff000u) /* >= 65520 rounds to infinity */
		return sign | 0x7c00;
	if (ax >= 0x38800000u) { /* normal half: rebias, round 13 bits away; a
				    mantissa carry correctly bumps the exponent */
		uint32_t e = (ax >> 23) - 112;
		return sign | (uint16_t)quant_round_shift((e << 23 | (ax & 0x7fffff)), 13);
	}
	if (ax <= 0x33000000u) /* <= 2^-25: rounds to zero (2^-25 is a tie to even 0) */
		return sign;
	/* Subnormal half: value * 2^24 rounded; 0x400 comes out as the
	 * smallest normal, which is the right encoding. */
	uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000;
	return sign | (uint16_t)quant_round_shift(m, 126 - e);
}

float quant_f16_to_f32_one(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
	if (e == 0x1f) /* inf, or NaN quietened like VCVTPH2PS */
		return quant_bits_float(sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0));
	if (e == 0) { /* zero or subnormal: m * 2^-24 is exact in float */
		float v = (float)m * 0x1p-24f;
		return quant_bits_float(sign | quant_float_bits(v));
	}
	return quant_bits_float(sign | ((e + 112) << 23) | (m << 13));
}

void quant_scalar_f32_to_f16(const float *src, uint16_t *dst, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = quant_f32_to_f16_one(src[i]);
}

void quant_scalar_f16_to_f32(const uint16_t *src, float *dst, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = quant_f16_to_f32_one(src[i]);
}

/* ------------------------------------------------ scalar kernels */

/* Four partial sums: shorter dependency chains and a smaller rounding
 * error than one running sum. */
static float scalar_l2sq_f32(const float *a, const float *b, size_t n)
{
	float s[4] = {0, 0, 0, 0};
	size_t i = 0;
	for (; i + 4 <= n; i += 4)
		for (int j = 0; j < 4; j++) {
			float d = a[i + j] - b[i + j];
			s[j] += d * d;
		}
	for (; i < n; i++) {
		float d = a[i] - b[i];
		s[0] += d * d;
	}
	return (s[0] + s[1]) + (s[2] + s[3]);
}

static float scalar_dot_f32(const float *a, const float *b, size_t n)
{
	float s[4] = {0, 0, 0, 0};
	size_t i = 0;
	for (; i + 4 <= n; i += 4)
		for (int j = 0; j < 4; j++)
			s[j] += a[i + j] * b[i + j];
	for (; i < n; i++)
		s[0] += a[i] * b[i];
	return (s[0] + s[1]) + (s[2] + s[3]);
}

static float scalar_l2sq_f16(const float *q, const uint16_t *x, size_t n)
{
	float s[4] = {0, 0, 0, 0};
	size_t i = 0;
	for (; i + 4 <= n; i += 4)
		for (int j = 0; j < 4; j++) {
			float d = q[i + j] - quant_f16_to_f32_one(x[i + j]);
			s[j] += d * d;
		}
	for (; i < n; i++) {
		float d = q[i] - quant_f16_to_f32_one(x[i]);
		s[0] += d * d;
	}
	return (s[0] + s[1]) + (s[2] + s[3]);
}

static float scalar_dot_f16(const float *q, const uint16_t *x, size_t n)
{
	float s[4] = {0, 0, 0, 0};
	size_t i = 0;
	for (; i + 4 <= n; i += 4)
		for (int j = 0; j < 4; j++)
			s[j] += q[i + j] * quant_f16_to_f32_one(x[i + j]);
	for (; i < n; i++)
		s[0] += q[i] * quant_f16_to_f32_one(x[i]);
	return (s[0] + s[1]) + (s[2] + s[3]);
}

const quant_kernels_t quant_kernels_scalar = {
	.name = "scalar",
	.isa = QUANT_ISA_SCALAR,
	.l2sq_f32 = scalar_l2sq_f32,
	.dot_f32 = scalar_dot_f32,
	.l2sq_f16 = scalar_l2sq_f16,
	.dot_f16 = scalar_dot_f16,
	.f32_to_f16 = quant_scalar_f32_to_f16,
	.f16_to_f32 = quant_scalar_f16_to_f32,
};

/* ------------------------------------------------ dispatch */

static const quant_kernels_t *quant_chosen = &quant_kernels_scalar;
static pthread_once_t quant_once = PTHREAD_ONCE_INIT;

static int quant_isa_supported(int isa)
{
	unsigned f = vela_cpu_features();
	switch (isa) {
	case QUANT_ISA_SCALAR:
		return 1;
	case QUANT_ISA_AVX2: {
		unsigned need = VELA_CPU_AVX2 | VELA_CPU_FMA | VELA_CPU_F16C;
		return (f & need) == need;
	}
	case QUANT_ISA_AVX512:
		return (f & VELA_CPU_AVX512F) != 0;
	default:
		return 0;
	}
}

static void quant_init(void)
{
	for (int isa = QUANT_ISA_COUNT - 1; isa >= 0; isa--) {
		const quant_kernels_t *k = quant_kernels_get(isa);
		if (k) {
			quant_chosen = k;
			return;
		}
	}
}

const quant_kernels_t *quant_kernels_get(int isa)
{
	static const quant_kernels_t *const all[QUANT_ISA_COUNT] = {
		&quant_kernels_scalar, &quant_kernels_avx2, &quant_kernels_avx512};
	if (isa < 0 || isa >= QUANT_ISA_COUNT || !quant_isa_supported(isa))
		return NULL;
	return all[isa];
}

const quant_kernels_t *quant_kernels(void)
{
	pthread_once(&quant_once, quant_init);
	return quant_chosen;
}

const char *quant_isa_name(void)
{
	return quant_kernels()->name;
}

float quant_l2sq_f32(const float *a, const float *b, size_t dim)
{
	return quant_kernels()->l2sq_f32(a, b, dim);
}

float quant_dot_f32(const float *a, const float *b, size_t dim)
{
	return quant_kernels()->dot_f32(a, b, dim);
}

float quant_l2sq_f16(const float *q, const uint16_t *x, size_t dim)
{
	return quant_kernels()->l2sq_f16(q, x, dim);
}

float quant_dot_f16(const float *q, const uint16_t *x, size_t dim)
{
	return quant_kernels()->dot_f16(q, x, dim);
}

void quant_f32_to_f16(const float *src, uint16_t *dst, size_t n)
{
	quant_kernels()->f32_to_f16(src, dst, n);
}

void quant_f16_to_f32(const uint16_t *src, float *dst, size_t n)
{
	quant_kernels()->f16_to_f32(src, dst, n);
}

/* ------------------------------------------------ metrics */

static float quant_dist_l2_f32(const float *q, const void *x, size_t dim)
{
	return quant_kernels()->l2sq_f32(q, x, dim);
}

static float quant_dist_ip_f32(const float *q, const void *x, size_t dim)
{
	return 1.0f - quant_kernels()->dot_f32(q, x, dim);
}

static float quant_dist_l2_f16(const float *q, const void *x, size_t dim)
{
	return quant_kernels()->l2sq_f16(q, x, dim);
}

static float quant_dist_ip_f16(const float *q, const void *x, size_t dim)
{
	return 1.0f - quant_kernels()->dot_f16(q, x, dim);
}

quant_dist_fn quant_distance_fn(vela_metric_t m, vela_vec_type_t t)
{
	int ip = (m == VELA_METRIC_IP || m == VELA_METRIC_COSINE);
	if (m != VELA_METRIC_L2 && !ip)
		return NULL;
	if (t == VELA_VEC_FLOAT32)
		return ip ? quant_dist_ip_f32 : quant_dist_l2_f32;
	if (t == VELA_VEC_FLOAT16)
		return ip ? quant_dist_ip_f16 : quant_dist_l2_f16;
	return NULL;
}

float quant_distance(vela_metric_t m, vela_vec_type_t t, const float *q, const void *x,
		     size_t dim)
{
	quant_dist_fn fn = quant_distance_fn(m, t);
	return fn ? fn(q, x, dim) : NAN;
}

int quant_normalize(float *v, size_t dim)
{
	if (dim == 0)
		return 0;
	if (v == NULL)
		return VELA_EINVAL;
	double s = 0;
	for (size_t i = 0; i < dim; i++) {
		if (!isfinite(v[i]))
			return VELA_EINVAL;
		s += (double)v[i] * v[i];
	}
	if (s == 0)
		return 0;
	/* s can only overflow double for absurd dims; the finiteness check
	 * above keeps each term below FLT_MAX^2. */
	double inv = 1.0 / sqrt(s);
	for (size_t i = 0; i < dim; i++)
		v[i] = (float)(v[i] * inv);
	return 0;
}
