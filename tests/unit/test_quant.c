/* Unit tests for quant/: every kernel variant the CPU supports against a
 * double-precision reference, binary16 conversion (exhaustive over all
 * halves, and against an independent nearest-value search for random
 * floats), metrics and normalisation. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "quant/quant.h"

#define U 0x1p-24 /* unit roundoff of float */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_next(void) /* splitmix64 */
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static float rng_uniform(float lo, float hi)
{
	return lo + (hi - lo) * (float)((rng_next() >> 40) * 0x1p-24);
}

static uint32_t fbits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

static float bitsf(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

/* Independent binary16 decoding straight from the format definition. */
static double ref_half_value(uint16_t h)
{
	int e = (h >> 10) & 0x1f, m = h & 0x3ff;
	double s = (h & 0x8000) ? -1.0 : 1.0;
	if (e == 31)
		return m ? NAN : s * INFINITY;
	if (e == 0)
		return s * ldexp(m, -24);
	return s * ldexp(1024 + m, e - 25);
}

/* Reference float -> half: binary search over the finite non-negative
 * halves (their values increase with their bit patterns), nearest wins,
 * ties go to the even pattern. 65504's upper neighbour counts as 65536,
 * so the overflow threshold comes out at 65520 as IEEE 754 says. */
static uint16_t ref_float_to_half(float f)
{
	if (isnan(f))
		return 0; /* callers handle NaN separately */
	uint16_t sign = signbit(f) ? 0x8000 : 0;
	double a = fabs((double)f);
	if (isinf(f) || a >= 65520.0)
		return sign | 0x7c00;
	unsigned lo = 0, hi = 0x7bff; /* largest h with value <= a */
	while (lo < hi) {
		unsigned mid = (lo + hi + 1) / 2;
		if (ref_half_value((uint16_t)mid) <= a)
			lo = mid;
		else
			hi = mid - 1;
	}
	double vlo = ref_half_value((uint16_t)lo);
	double vhi = lo == 0x7bff ? 65536.0 : ref_half_value((uint16_t)(lo + 1));
	double dlo = a - vlo, dhi = vhi - a;
	unsigned h = lo;
	if (dhi < dlo || (dhi == dlo && (lo & 1)))
		h = lo + 1;
	return sign | (uint16_t)h;
}

/* ------------------------------------------------ kernels */

typedef struct {
	double l2, dot, abs_l2, abs_dot; /* abs_*: sums of |term|, for the bound */
} ref_t;

static ref_t ref_f32(const float *a, const float *b, size_t n)
{
	ref_t r = {0, 0, 0, 0};
	for (size_t i = 0; i < n; i++) {
		double d = (double)a[i] - b[i];
		r.l2 += d * d;
		r.dot += (double)a[i] * b[i];
		r.abs_dot += fabs((double)a[i] * b[i]);
	}
	r.abs_l2 = r.l2;
	return r;
}

/* Error bound every variant meets. Each variant keeps at least 4 partial
 * sums (scalar 4, AVX2 4x8 lanes, AVX-512 4x16), so no accumulation chain
 * is longer than n/4 + 4 roundings (the 8/16-lane remainder loop and the
 * tail add a few), then at most 6 levels of reduction tree; with the
 * rounding of a-b in L2 that is at most (n/4 + 16) u * sum|term| (Higham,
 * Accuracy and Stability, §3.1, gamma_k). Integer tests below pin the
 * exact coverage of every element, so this bound only checks precision. */
static double kernel_tol(size_t n, double abs_sum)
{
	return ((double)n / 4 + 16) * U * abs_sum + 1e-30;
}

static void check_kernels_random(const quant_kernels_t *k, size_t n, size_t off)
{
	float *a = malloc((n + 1) * sizeof(float)), *b = malloc((n + 1) * sizeof(float));
	uint16_t *h = malloc((n + 1) * sizeof(uint16_t));
	float *hx = malloc((n + 1) * sizeof(float));
	cr_assert(a && b && h && hx);
	for (size_t i = 0; i < n + 1; i++) {
		a[i] = rng_uniform(-2, 2);
		b[i] = rng_uniform(-2, 2);
	}
	/* `off` shifts the start so loads are unaligned half the time */
	const float *pa = a + off, *pb = b + off;
	ref_t r = ref_f32(pa, pb, n);
	float l2 = k->l2sq_f32(pa, pb, n), dot = k->dot_f32(pa, pb, n);
	cr_assert_leq(fabs(l2 - r.l2), kernel_tol(n, r.abs_l2), "%s l2 n=%zu: %g vs %g", k->name,
		      n, l2, r.l2);
	cr_assert_leq(fabs(dot - r.dot), kernel_tol(n, r.abs_dot), "%s dot n=%zu: %g vs %g",
		      k->name, n, dot, r.dot);

	/* f16: the stored vector is b rounded to halves; the reference uses the
	 * exact decoded half values. */
	quant_f32_to_f16(pb, h + off, n);
	for (size_t i = 0; i < n; i++)
		hx[i] = (float)ref_half_value(h[off + i]);
	r = ref_f32(pa, hx, n);
	l2 = k->l2sq_f16(pa, h + off, n);
	dot = k->dot_f16(pa, h + off, n);
	cr_assert_leq(fabs(l2 - r.l2), kernel_tol(n, r.abs_l2), "%s l2_f16 n=%zu", k->name, n);
	cr_assert_leq(fabs(dot - r.dot), kernel_tol(n, r.abs_dot), "%s dot_f16 n=%zu", k->name, n);
	free(a);
	free(b);
	free(h);
	free(hx);
}

/* Small integers: every product and partial sum is an integer below 2^24,
 * so each variant must be exact whatever its summation order. This is
 * what catches a dropped or doubled tail element. */
static void check_kernels_exact(const quant_kernels_t *k, size_t n)
{
	float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
	uint16_t *h = malloc(n * sizeof(uint16_t));
	cr_assert(a && b && h);
	for (size_t i = 0; i < n; i++) {
		a[i] = (float)((int)(rng_next() % 17) - 8);
		b[i] = (float)((int)(rng_next() % 17) - 8);
	}
	quant_f32_to_f16(b, h, n);
	ref_t r = ref_f32(a, b, n);
	cr_assert_eq(k->l2sq_f32(a, b, n), (float)r.l2, "%s l2 n=%zu", k->name, n);
	cr_assert_eq(k->dot_f32(a, b, n), (float)r.dot, "%s dot n=%zu", k->name, n);
	cr_assert_eq(k->l2sq_f16(a, h, n), (float)r.l2, "%s l2_f16 n=%zu", k->name, n);
	cr_assert_eq(k->dot_f16(a, h, n), (float)r.dot, "%s dot_f16 n=%zu", k->name, n);
	free(a);
	free(b);
	free(h);
}

static int variants_tested;

static void for_each_variant(void (*fn)(const quant_kernels_t *))
{
	variants_tested = 0;
	for (int isa = 0; isa < QUANT_ISA_COUNT; isa++) {
		const quant_kernels_t *k = quant_kernels_get(isa);
		if (k == NULL) {
			cr_log_info("skipping %d: CPU lacks it", isa);
			continue;
		}
		cr_assert_eq(k->isa, isa);
		fn(k);
		variants_tested++;
	}
	cr_assert_geq(variants_tested, 1);
}

static void kernels_random_all_dims(const quant_kernels_t *k)
{
	for (size_t n = 1; n <= 4099; n++)
		check_kernels_random(k, n, n & 1);
	check_kernels_random(k, 768, 0);
	check_kernels_random(k, 16384, 1);
	check_kernels_random(k, 32768, 0);
}

static void kernels_exact_all_dims(const quant_kernels_t *k)
{
	for (size_t n = 1; n <= 4099; n++)
		check_kernels_exact(k, n);
	check_kernels_exact(k, 768);
	check_kernels_exact(k, 16384);
}

Test(quant, kernels_match_double_reference)
{
	for_each_variant(kernels_random_all_dims);
}

Test(quant, kernels_exact_on_integers)
{
	for_each_variant(kernels_exact_all_dims);
}

Test(quant, dispatch_is_best_available)
{
	const quant_kernels_t *best = NULL;
	for (int isa = 0; isa < QUANT_ISA_COUNT; isa++)
		if (quant_kernels_get(isa))
			best = quant_kernels_get(isa);
	cr_assert_eq(quant_kernels(), best);
	cr_assert_str_eq(quant_isa_name(), best->name);
	cr_assert_null(quant_kernels_get(-1));
	cr_assert_null(quant_kernels_get(QUANT_ISA_COUNT));
	unsigned f = vela_cpu_features();
	cr_assert_eq(quant_kernels_get(QUANT_ISA_AVX512) != NULL, (f & VELA_CPU_AVX512F) != 0);
	cr_log_info("quant kernels: %s (cpu: %s)", quant_isa_name(), vela_cpu_features_str());
}

/* ------------------------------------------------ binary16 */

Test(quant, f16_decode_exhaustive)
{
	for (uint32_t h = 0; h < 65536; h++) {
		float f = quant_f16_to_f32_one((uint16_t)h);
		double ref = ref_half_value((uint16_t)h);
		if (isnan(ref)) {
			cr_assert(isnan(f), "h=%#x", h);
			cr_assert_eq(!!signbit(f), !!(h & 0x8000));
			/* quietened, payload kept in the top mantissa bits */
			cr_assert_eq(fbits(f) & 0x7fffffu, ((h & 0x3ffu) << 13) | 0x400000u);
			continue;
		}
		cr_assert_eq((double)f, ref, "h=%#x", h);
		cr_assert_eq(!!signbit(f), !!(h & 0x8000), "h=%#x", h);
	}
}

Test(quant, f16_roundtrip_exhaustive)
{
	for (uint32_t h = 0; h < 65536; h++) {
		uint16_t back = quant_f32_to_f16_one(quant_f16_to_f32_one((uint16_t)h));
		int nan = ((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff);
		cr_assert_eq(back, nan ? (h | 0x200) : h, "h=%#x back=%#x", h, back);
	}
}

/* Every variant's bulk conversion must agree bit for bit with the
 * software one, NaNs included (hardware F16C quietens NaNs the same way). */
static void f16_bulk_matches_software(const quant_kernels_t *k)
{
	enum { N = 65536 + 3 };
	uint16_t *h = malloc(N * 2), *h2 = malloc(N * 2);
	float *f = malloc(N * 4), *f2 = malloc(N * 4);
	cr_assert(h && h2 && f && f2);
	for (uint32_t i = 0; i < N; i++)
		h[i] = (uint16_t)(i * 40503u); /* odd multiplier: a permutation mod 2^16 */
	k->f16_to_f32(h, f, N);
	for (uint32_t i = 0; i < N; i++)
		cr_assert_eq(fbits(f[i]), fbits(quant_f16_to_f32_one(h[i])), "%s h=%#x", k->name, h[i]);
	/* floats: the decoded halves, their midpoints, and random bit patterns */
	for (uint32_t i = 0; i < N; i++) {
		uint32_t r = (uint32_t)rng_next();
		if (i % 3 == 0)
			f2[i] = bitsf(r);
		else if (i % 3 == 1)
			f2[i] = bitsf(fbits(f[i]) + 0x1000); /* a half-ulp up: a tie */
		else
			f2[i] = bitsf((r & 0x807fffffu) | ((100u + r % 60u) << 23));
	}
	k->f32_to_f16(f2, h2, N);
	for (uint32_t i = 0; i < N; i++)
		cr_assert_eq(h2[i], quant_f32_to_f16_one(f2[i]), "%s f=%a (%#x)", k->name, f2[i],
			     fbits(f2[i]));
	free(h);
	free(h2);
	free(f);
	free(f2);
}

Test(quant, f16_bulk_variants_match_software)
{
	for_each_variant(f16_bulk_matches_software);
}

Test(quant, f16_encode_matches_reference)
{
	for (int i = 0; i < 400000; i++) {
		uint32_t r = (uint32_t)rng_next();
		float f;
		switch (i % 4) {
		case 0: /* any float */
			f = bitsf(r);
			break;
		case 1: /* exponents around the half range: subnormals to overflow */
			f = bitsf((r & 0x807fffffu) | ((96u + r % 48u) << 23));
			break;
		case 2: { /* exact midpoints between neighbouring halves */
			uint16_t h = (uint16_t)(r % 0x7c00);
			double mid = (ref_half_value(h) +
				      (h == 0x7bff ? 65536.0 : ref_half_value(h + 1))) / 2;
			f = (float)((r & 0x80000000u) ? -mid : mid);
			break;
		}
		default: /* ordinary values */
			f = rng_uniform(-70000, 70000) * ((r & 1) ? 1e-4f : 1.0f);
		}
		if (isnan(f))
			continue;
		cr_assert_eq(quant_f32_to_f16_one(f), ref_float_to_half(f), "f=%a", f);
	}
	cr_assert_eq(quant_f32_to_f16_one(65519.996f), 0x7bff);
	cr_assert_eq(quant_f32_to_f16_one(65520.0f), 0x7c00);
	cr_assert_eq(quant_f32_to_f16_one(0x1p-25f), 0);
	cr_assert_eq(quant_f32_to_f16_one(0x1.000002p-25f), 1);
	cr_assert_eq(quant_f32_to_f16_one(-0.0f), 0x8000);
	cr_assert_eq(quant_f32_to_f16_one(NAN) & 0x7e00, 0x7e00);
}

/* ------------------------------------------------ metrics, normalise */

Test(quant, metrics_follow_redis)
{
	float q[3] = {1, 0, 0}, x[3] = {0, 1, 0};
	uint16_t hx[3];
	quant_f32_to_f16(x, hx, 3);
	cr_assert_eq(quant_distance(VELA_METRIC_L2, VELA_VEC_FLOAT32, q, x, 3), 2.0f);
	cr_assert_eq(quant_distance(VELA_METRIC_IP, VELA_VEC_FLOAT32, q, x, 3), 1.0f);
	cr_assert_eq(quant_distance(VELA_METRIC_COSINE, VELA_VEC_FLOAT32, q, q, 3), 0.0f);
	cr_assert_eq(quant_distance(VELA_METRIC_L2, VELA_VEC_FLOAT16, q, hx, 3), 2.0f);
	cr_assert_eq(quant_distance(VELA_METRIC_IP, VELA_VEC_FLOAT16, q, hx, 3), 1.0f);
	cr_assert(isnan(quant_distance((vela_metric_t)9, VELA_VEC_FLOAT32, q, x, 3)));
	cr_assert(isnan(quant_distance(VELA_METRIC_L2, (vela_vec_type_t)9, q, x, 3)));
	cr_assert_null(quant_distance_fn((vela_metric_t)9, VELA_VEC_FLOAT32));
}

Test(quant, normalize)
{
	float v[1000];
	for (int i = 0; i < 1000; i++)
		v[i] = rng_uniform(-3, 3);
	cr_assert_eq(quant_normalize(v, 1000), 0);
	double s = 0;
	for (int i = 0; i < 1000; i++)
		s += (double)v[i] * v[i];
	cr_assert_leq(fabs(s - 1.0), 1e-6);

	float z[5] = {0, -0.0f, 0, 0, 0};
	cr_assert_eq(quant_normalize(z, 5), 0);
	for (int i = 0; i < 5; i++)
		cr_assert_eq(z[i], 0.0f);

	float bad[3] = {1, NAN, 2};
	cr_assert_eq(quant_normalize(bad, 3), VELA_EINVAL);
	cr_assert_eq(bad[0], 1.0f);
	cr_assert_eq(quant_normalize(NULL, 3), VELA_EINVAL);
	cr_assert_eq(quant_normalize(NULL, 0), 0);

	float big[2] = {3e38f, 3e38f}; /* squares overflow float, not double */
	cr_assert_eq(quant_normalize(big, 2), 0);
	cr_assert_leq(fabs(big[0] - (float)M_SQRT1_2), 1e-7);
}
