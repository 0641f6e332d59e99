/* Unit tests for LVQ (quant/lvq*.c; reference/leanvec-lvq.md §2): record
 * sizes and layout (an independent Turbo decoder written from §2.4's
 * formula), round-trip error bounds, every kernel variant the CPU supports
 * against a double-precision distance on the decoded vectors, variants
 * against each other, and distances against exact ones on the originals. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "quant/quant.h"

#define U 0x1p-24 /* unit roundoff of float */

static uint64_t rng_state = 0x243f6a8885a308d3ull;

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

static const quant_lvq_kind_t kinds[] = {QUANT_LVQ8, QUANT_LVQ4, QUANT_LVQ4x4, QUANT_LVQ4x8};
static const char *const kind_names[] = {"LVQ8", "LVQ4", "LVQ4x4", "LVQ4x8"};

/* ------------------------------------------------ data generators */

enum gen {
	GEN_UNIFORM,  /* [-1, 1] */
	GEN_OFFSET,   /* 1000 + [-1, 1], encoded against a mean near 1000 */
	GEN_HUGE,     /* [-3e4, 3e4]: scale near binary16's top */
	GEN_TINY,     /* [-1e-6, 1e-6]: subnormal binary16 scale */
	GEN_CONST,    /* every component equal: scale 0 or one tiny step */
	GEN_SPIKE,    /* zeros with one large outlier */
	GEN_COUNT
};

static void gen_fill(int g, float *x, float *mean, uint32_t d)
{
	float c = rng_uniform(-2, 2);
	for (uint32_t j = 0; j < d; j++) {
		mean[j] = 0;
		switch (g) {
		case GEN_UNIFORM: x[j] = rng_uniform(-1, 1); break;
		case GEN_OFFSET:
			x[j] = 1000 + rng_uniform(-1, 1);
			mean[j] = 1000 + rng_uniform(-0.01f, 0.01f);
			break;
		case GEN_HUGE: x[j] = rng_uniform(-3e4f, 3e4f); break;
		case GEN_TINY: x[j] = rng_uniform(-1e-6f, 1e-6f); break;
		case GEN_CONST: x[j] = c; break;
		default: x[j] = 0; break;
		}
	}
	if (g == GEN_SPIKE)
		x[rng_next() % d] = 500;
}

/* ------------------------------------------------ independent decoder */

static double half_value(uint16_t h) /* binary16 from the format definition */
{
	int e = (h >> 10) & 0x1f, m = h & 0x3ff;
	double s = (h & 0x8000) ? -1.0 : 1.0;
	if (e == 31)
		return m ? NAN : s * INFINITY;
	if (e == 0)
		return s * ldexp(m, -24);
	return s * ldexp(1024 + m, e - 25);
}

static unsigned bits1(quant_lvq_kind_t k) { return k == QUANT_LVQ8 ? 8 : 4; }
static unsigned bits2(quant_lvq_kind_t k)
{
	return k == QUANT_LVQ4x4 ? 4 : k == QUANT_LVQ4x8 ? 8 : 0;
}

/* Code of dimension i: 8-bit sequential, or Turbo 4-bit with linear nibble
 * position 128a + 8(b%16) + b/16 for a = i/128, b = i%128 (§2.4). */
static unsigned ref_code(unsigned bits, const uint8_t *c, size_t i)
{
	if (bits == 8)
		return c[i];
	size_t a = i / 128, b = i % 128, pos = 128 * a + 8 * (b % 16) + b / 16;
	return (c[pos / 2] >> (4 * (pos & 1))) & 0xF;
}

static size_t ref_level_bytes(unsigned bits, uint32_t d)
{
	return bits == 8 ? d : bits == 4 ? (d + 127) / 128 * 64 : 0;
}

typedef struct {
	double scale, bias;    /* binary16 constants as stored */
	const uint8_t *p, *r;  /* primary and residual codes */
} rec_t;

static rec_t ref_record(quant_lvq_kind_t k, uint32_t d, const uint8_t *code)
{
	size_t pb = ref_level_bytes(bits1(k), d);
	rec_t r = {half_value((uint16_t)(code[pb] | code[pb + 1] << 8)),
		   half_value((uint16_t)(code[pb + 2] | code[pb + 3] << 8)), code, code + pb + 4};
	return r;
}

/* Exact (double) reconstruction of x - mean at dimension j. Two levels:
 * delta ((2^B2 - 1) p + r) + (b - scale/2) with delta = fl(scale / M), the
 * float step the library uses (§2.2's fused form). */
static double ref_value(quant_lvq_kind_t k, const rec_t *r, size_t j, int full)
{
	unsigned p = ref_code(bits1(k), r->p, j);
	if (!full || bits2(k) == 0)
		return r->bias + r->scale * p;
	unsigned m = (1u << bits2(k)) - 1;
	double delta = (float)(r->scale / m), beta = (float)(r->bias - r->scale / 2);
	return beta + delta * (m * p + ref_code(bits2(k), r->r, j));
}

/* ------------------------------------------------ fixtures */

typedef struct {
	quant_lvq_t *l;
	uint32_t d;
	float *x, *mean, *dec, *decp, *q;
	uint8_t *code;
	rec_t rec;
} fix_t;

static void fix_init(fix_t *f, quant_lvq_kind_t k, uint32_t d, int g)
{
	memset(f, 0, sizeof(*f));
	f->d = d;
	f->x = malloc(d * sizeof(float));
	f->mean = malloc(d * sizeof(float));
	f->dec = malloc(d * sizeof(float));
	f->decp = malloc(d * sizeof(float));
	f->q = malloc(d * sizeof(float));
	cr_assert(f->x && f->mean && f->dec && f->decp && f->q);
	gen_fill(g, f->x, f->mean, d);
	for (uint32_t j = 0; j < d; j++)
		f->q[j] = g == GEN_HUGE ? rng_uniform(-3e4f, 3e4f) : f->mean[j] + rng_uniform(-1, 1);
	cr_assert_eq(quant_lvq_create(k, d, f->mean, &f->l), 0);
	f->code = malloc(quant_lvq_code_size(f->l)); /* exact size: ASan sees overreads */
	cr_assert(f->code);
	cr_assert_eq(quant_lvq_encode(f->l, f->x, f->code), 0, "%s d=%u g=%d", kind_names[k], d, g);
	quant_lvq_decode(f->l, f->code, f->dec);
	quant_lvq_decode_primary(f->l, f->code, f->decp);
	f->rec = ref_record(k, d, f->code);
}

static void fix_free(fix_t *f)
{
	quant_lvq_destroy(f->l);
	free(f->x);
	free(f->mean);
	free(f->dec);
	free(f->decp);
	free(f->q);
	free(f->code);
}

static const uint32_t some_dims[] = {1,  2,  3,  5,   7,   8,   9,   15,  16,  17,  31,  33,
				     63, 65, 100, 127, 128, 129, 200, 255, 257, 300, 768, 1000};
#define NDIMS (sizeof(some_dims) / sizeof(some_dims[0]))

/* ------------------------------------------------ sizes, API contract */

Test(lvq, code_sizes_match_reference_table)
{
	/* reference §2.5 less the selector byte we do not store */
	static const struct { uint32_t d; size_t sz[4]; } t[] = {
		{96, {100, 68, 132, 164}},
		{200, {204, 132, 260, 332}},
		{512, {516, 260, 516, 772}},
		{768, {772, 388, 772, 1156}},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		for (int k = 0; k < 4; k++) {
			quant_lvq_t *l;
			cr_assert_eq(quant_lvq_create(kinds[k], t[i].d, NULL, &l), 0);
			cr_assert_eq(quant_lvq_code_size(l), t[i].sz[k], "%s d=%u", kind_names[k],
				     t[i].d);
			cr_assert_eq(quant_lvq_primary_size(l), ref_level_bytes(bits1(kinds[k]), t[i].d) + 4);
			cr_assert_eq(quant_lvq_primary_bits(l), bits1(kinds[k]));
			cr_assert_eq(quant_lvq_residual_bits(l), bits2(kinds[k]));
			cr_assert_eq(quant_lvq_dim(l), t[i].d);
			cr_assert_eq(quant_lvq_kind(l), kinds[k]);
			quant_lvq_destroy(l);
		}
}

Test(lvq, create_and_encode_reject_bad_input)
{
	quant_lvq_t *l = NULL;
	float m[4] = {0, NAN, 0, 0};
	cr_assert_eq(quant_lvq_create((quant_lvq_kind_t)9, 4, NULL, &l), VELA_EINVAL);
	cr_assert_eq(quant_lvq_create(QUANT_LVQ8, 0, NULL, &l), VELA_EDIM);
	cr_assert_eq(quant_lvq_create(QUANT_LVQ8, VELA_DIM_MAX + 1, NULL, &l), VELA_EDIM);
	cr_assert_eq(quant_lvq_create(QUANT_LVQ8, 4, m, &l), VELA_EINVAL);
	cr_assert_eq(quant_lvq_create(QUANT_LVQ8, 4, NULL, NULL), VELA_EINVAL);
	cr_assert_eq(quant_lvq_create(QUANT_LVQ4x8, 4, NULL, &l), 0);
	uint8_t code[128], before[128];
	memset(code, 0xAB, sizeof(code));
	memcpy(before, code, sizeof(code));
	/* bias f16_down(min) must stay >= -65504 and scale (max - bias) / 15
	 * <= 65504; a large positive minimum is fine (bias rounds down to 65504) */
	float bad[][4] = {{0, NAN, 0, 0}, {0, INFINITY, 0, 0}, {0, 2e6f, 0, 0}, {-7e4f, 0, 0, 0},
			  {-6e4f, 1e5f, 9e5f, 6e4f}};
	for (size_t i = 0; i < 4; i++) /* the last one fits */
		cr_assert_eq(quant_lvq_encode(l, bad[i], code), VELA_EINVAL, "case %zu", i);
	cr_assert_eq(memcmp(code, before, sizeof(code)), 0, "code untouched on error");
	cr_assert_eq(quant_lvq_encode(l, bad[4], code), 0);
	quant_lvq_query_t *pq;
	cr_assert_eq(quant_lvq_query_create(l, &pq), 0);
	cr_assert_eq(quant_lvq_query_prepare(l, (vela_metric_t)7, m, pq), VELA_EINVAL);
	cr_assert_eq(quant_lvq_query_prepare(l, VELA_METRIC_L2, m, pq), VELA_EINVAL); /* NaN */
	quant_lvq_t *l5;
	cr_assert_eq(quant_lvq_create(QUANT_LVQ8, 5, NULL, &l5), 0);
	cr_assert_eq(quant_lvq_query_prepare(l5, VELA_METRIC_L2, bad[4], pq), VELA_EINVAL);
	quant_lvq_query_destroy(pq);
	quant_lvq_destroy(l5);
	quant_lvq_destroy(l);
	quant_lvq_destroy(NULL);
	quant_lvq_query_destroy(NULL);
}

Test(lvq, mean_in_double)
{
	/* 1e8 + {1, 3}: float accumulation would lose the low parts */
	float X[6] = {1e8f, 1, -5, 1e8f, 3, 5};
	float mean[3];
	cr_assert_eq(quant_mean(X, 2, 3, mean), 0);
	cr_assert_eq(mean[0], 1e8f);
	cr_assert_eq(mean[1], 2.0f);
	cr_assert_eq(mean[2], 0.0f);
	cr_assert_eq(quant_mean(X, 0, 3, mean), VELA_EINVAL);
	cr_assert_eq(quant_mean(NULL, 2, 3, mean), VELA_EINVAL);
	cr_assert_eq(quant_mean(X, 2, 0, mean), VELA_EINVAL);
}

/* ------------------------------------------------ round trip (§2.1, §2.2) */

/* The stored constants: bias <= min(x - mean) and scale no larger than one
 * binary16 rounding step above range / (2^B - 1) (so the bounds below are
 * not met by an inflated scale). */
static void check_constants(const fix_t *f, quant_lvq_kind_t k)
{
	double lo = INFINITY, hi = -INFINITY;
	for (uint32_t j = 0; j < f->d; j++) {
		double y = (double)(f->x[j] - f->mean[j]);
		lo = fmin(lo, y);
		hi = fmax(hi, y);
	}
	double want = (hi - f->rec.bias) / ((1u << bits1(k)) - 1);
	cr_assert_leq(f->rec.bias, lo);
	cr_assert_geq(f->rec.bias, lo - fabs(lo) * 0x1p-10 - 0x1p-24);
	cr_assert_leq(f->rec.scale, want * (1 + 0x1p-10) + 0x1p-24, "%s scale %g want %g",
		      kind_names[k], f->rec.scale, want);
	if (hi == lo && f->rec.bias == lo)
		cr_assert_eq(f->rec.scale, 0.0, "constant vector: scale 0");
}

/* Per component: |x - decode| <= scale/2 (primary) or delta/2 (both levels),
 * exact-arithmetic bounds given that bias is rounded down and scale up
 * (quant.h). The slack covers float rounding of y = x - mean, of (y - b)/s
 * in the encoder and of mean + (b + s c) in the decoder: a few units of
 * roundoff of the magnitudes involved. */
static void check_roundtrip(const fix_t *f, quant_lvq_kind_t k)
{
	double s = f->rec.scale, b = f->rec.bias;
	unsigned m2 = bits2(k) ? (1u << bits2(k)) - 1 : 0;
	for (uint32_t j = 0; j < f->d; j++) {
		double mag = fabs(f->x[j]) + fabs(f->mean[j]) + fabs(b) + s * 256;
		double slack = 8 * U * mag;
		double ep = fabs((double)f->x[j] - f->decp[j]);
		cr_assert_leq(ep, s / 2 + slack, "%s d=%u j=%u primary err %g scale %g",
			      kind_names[k], f->d, j, ep, s);
		/* decode_primary equals the independent decoder */
		double rp = f->mean[j] + ref_value(k, &f->rec, j, 0);
		cr_assert_leq(fabs(rp - f->decp[j]), 4 * U * mag);
		if (!m2)
			continue;
		double ef = fabs((double)f->x[j] - f->dec[j]);
		cr_assert_leq(ef, s / (2.0 * m2) + slack, "%s d=%u j=%u full err %g delta/2 %g",
			      kind_names[k], f->d, j, ef, s / (2.0 * m2));
		double rf = f->mean[j] + ref_value(k, &f->rec, j, 1);
		cr_assert_leq(fabs(rf - f->dec[j]), 4 * U * mag);
	}
	if (!m2)
		for (uint32_t j = 0; j < f->d; j++)
			cr_assert_eq(f->dec[j], f->decp[j]);
}

/* Turbo padding and bytes past the last code are zero. */
static void check_padding(const fix_t *f, quant_lvq_kind_t k)
{
	size_t pb = ref_level_bytes(bits1(k), f->d), rb = ref_level_bytes(bits2(k), f->d);
	for (uint32_t i = f->d; bits1(k) == 4 && i < pb * 2; i++)
		cr_assert_eq(ref_code(4, f->code, i), 0u);
	for (uint32_t i = f->d; bits2(k) == 4 && i < rb * 2; i++)
		cr_assert_eq(ref_code(4, f->code + pb + 4, i), 0u);
}

Test(lvq, roundtrip_error_bounds)
{
	for (int k = 0; k < 4; k++)
		for (int g = 0; g < GEN_COUNT; g++)
			for (uint32_t d = 1; d <= 300; d += (d < 40 ? 1 : 7)) {
				fix_t f;
				fix_init(&f, kinds[k], d, g);
				check_constants(&f, kinds[k]);
				check_roundtrip(&f, kinds[k]);
				check_padding(&f, kinds[k]);
				fix_free(&f);
			}
}

Test(lvq, constant_vectors)
{
	for (int k = 0; k < 4; k++) {
		float x[37], back[37];
		for (int j = 0; j < 37; j++)
			x[j] = 0.375f; /* a binary16 value: scale 0, exact decode */
		quant_lvq_t *l;
		cr_assert_eq(quant_lvq_create(kinds[k], 37, NULL, &l), 0);
		uint8_t *c = malloc(quant_lvq_code_size(l));
		cr_assert_eq(quant_lvq_encode(l, x, c), 0);
		rec_t r = ref_record(kinds[k], 37, c);
		cr_assert_eq(r.scale, 0.0);
		cr_assert_eq(r.bias, 0.375);
		quant_lvq_decode(l, c, back);
		for (int j = 0; j < 37; j++)
			cr_assert_eq(back[j], 0.375f);
		free(c);
		quant_lvq_destroy(l);
	}
}

/* ------------------------------------------------ kernels vs double */

typedef struct {
	double dist, tol;
} refd_t;

/* Distance on the decoded vector `xh` in double, and the bound a float
 * kernel meets: per-term rounding of q - mean, bias + scale z and the
 * decoder's own roundings (each a few u of the magnitudes A_j), then the
 * accumulation error gamma_(n/4+32) of the summed |terms| (every variant
 * keeps >= 2 accumulators per lane, scalar 4). */
static refd_t ref_distance(vela_metric_t m, const fix_t *f, const float *xh)
{
	double sum = 0, abs_terms = 0, tol = 0;
	double mag_c = fabs(f->rec.bias) + f->rec.scale * 256;
	uint32_t n = f->d;
	for (uint32_t j = 0; j < n; j++) {
		double a = fabs(f->q[j]) + fabs(f->mean[j]) + fabs(xh[j]) + 2 * mag_c;
		if (m == VELA_METRIC_L2) {
			double e = (double)f->q[j] - xh[j];
			sum += e * e;
			abs_terms += e * e;
			tol += 10 * U * fabs(e) * a + 32 * U * U * a * a;
		} else {
			sum += (double)f->q[j] * xh[j];
			abs_terms += fabs((double)f->q[j]) * a;
			tol += 4 * U * fabs((double)f->q[j]) * a;
		}
	}
	tol += ((double)n / 4 + 32) * U * abs_terms;
	refd_t r = {m == VELA_METRIC_L2 ? sum : 1 - sum, tol};
	r.tol += 2 * U * (1 + fabs(r.dist)) + 1e-30; /* final rounding to float */
	return r;
}

static int variants;

static void check_kernels(const quant_lvq_kernels_t *k, quant_lvq_kind_t kind, uint32_t d,
			  int g, vela_metric_t m)
{
	fix_t f;
	fix_init(&f, kind, d, g);
	quant_lvq_query_t *pq;
	cr_assert_eq(quant_lvq_query_create(f.l, &pq), 0);
	cr_assert_eq(quant_lvq_query_prepare(f.l, m, f.q, pq), 0);
	const quant_lvq_kernels_t *sk = quant_lvq_kernels_get(QUANT_ISA_SCALAR);
	for (int full = 0; full <= 1; full++) {
		refd_t r = ref_distance(m, &f, full ? f.dec : f.decp);
		float got = quant_lvq_distance_with(k, f.l, pq, f.code, full);
		cr_assert_leq(fabs(got - r.dist), r.tol, "%s %s d=%u g=%d m=%d full=%d: %.9g vs %.9g (tol %g)",
			      k->name, kind_names[kind], d, g, m, full, got, r.dist, r.tol);
		float sc = quant_lvq_distance_with(sk, f.l, pq, f.code, full);
		cr_assert_leq(fabs(got - sc), 2 * r.tol, "%s vs scalar", k->name);
	}
	quant_lvq_query_destroy(pq);
	fix_free(&f);
}

static void for_each_variant(void (*fn)(const quant_lvq_kernels_t *))
{
	variants = 0;
	for (int isa = 0; isa < QUANT_ISA_COUNT; isa++) {
		const quant_lvq_kernels_t *k = quant_lvq_kernels_get(isa);
		if (k == NULL) {
			cr_log_info("skipping LVQ variant %d: CPU lacks it", isa);
			continue;
		}
		cr_assert_eq(k->isa, isa);
		fn(k);
		variants++;
	}
	cr_assert_geq(variants, 1);
}

static void kernels_all(const quant_lvq_kernels_t *k)
{
	static const vela_metric_t ms[] = {VELA_METRIC_L2, VELA_METRIC_IP};
	for (int kind = 0; kind < 4; kind++)
		for (int mi = 0; mi < 2; mi++) {
			for (uint32_t d = 1; d <= 300; d++)
				check_kernels(k, kinds[kind], d, GEN_UNIFORM, ms[mi]);
			check_kernels(k, kinds[kind], 768, GEN_UNIFORM, ms[mi]);
			for (int g = 1; g < GEN_COUNT; g++)
				for (size_t i = 0; i < NDIMS; i++)
					check_kernels(k, kinds[kind], some_dims[i], g, ms[mi]);
		}
}

Test(lvq, kernels_match_double_on_decoded)
{
	for_each_variant(kernels_all);
}

/* Integer-valued query and codes whose products and partial sums stay below
 * 2^24 make every variant exact whatever its order: catches a dropped or
 * doubled element (a wrong nibble, a tail off by one). */
static void kernels_exact(const quant_lvq_kernels_t *k)
{
	for (uint32_t n = 1; n <= 600; n++) {
		uint8_t p[320] = {0}, r4[320] = {0}, r8[600];
		float q[600];
		uint8_t s8[600];
		double e8 = 0, e4 = 0, e44 = 0, e48 = 0, l8 = 0, l4 = 0;
		for (uint32_t j = 0; j < n; j++) {
			unsigned c4 = (unsigned)(rng_next() % 16), c8 = (unsigned)(rng_next() % 256);
			unsigned rr = (unsigned)(rng_next() % 16);
			size_t a = j / 128, b = j % 128, pos = 128 * a + 8 * (b % 16) + b / 16;
			p[pos / 2] |= (uint8_t)(c4 << (4 * (pos & 1)));
			r4[pos / 2] |= (uint8_t)(rr << (4 * (pos & 1)));
			r8[j] = (uint8_t)c8;
			q[j] = (float)((int)(rng_next() % 5) - 2);
			e4 += q[j] * c4;
			e44 += q[j] * (15.0 * c4 + rr);
			e48 += q[j] * (255.0 * c4 + c8);
			e8 += q[j] * c8;
			s8[j] = (uint8_t)(c8 & 7); /* small: squares summed stay exact */
			l8 += (q[j] - (1 + 2.0 * s8[j])) * (q[j] - (1 + 2.0 * s8[j]));
			l4 += (q[j] - (1 + 2.0 * c4)) * (q[j] - (1 + 2.0 * c4));
		}
		cr_assert_eq(k->dot_u4(q, p, n), (float)e4, "%s u4 n=%u", k->name, n);
		cr_assert_eq(k->dot_u4x4(q, p, r4, n), (float)e44, "%s u4x4 n=%u", k->name, n);
		cr_assert_eq(k->dot_u4x8(q, p, r8, n), (float)e48, "%s u4x8 n=%u", k->name, n);
		cr_assert_eq(k->dot_u8(q, r8, n), (float)e8, "%s u8 n=%u", k->name, n);
		cr_assert_eq(k->l2_u8(q, s8, n, 2, 1), (float)l8, "%s l2 u8 n=%u", k->name, n);
		cr_assert_eq(k->l2_u4(q, p, n, 2, 1), (float)l4, "%s l2 u4 n=%u", k->name, n);
	}
}

Test(lvq, kernels_exact_on_integers)
{
	for_each_variant(kernels_exact);
}

/* ------------------------------------------------ API paths */

Test(lvq, distance_paths_agree)
{
	const quant_lvq_kernels_t *best = NULL;
	for (int isa = 0; isa < QUANT_ISA_COUNT; isa++)
		if (quant_lvq_kernels_get(isa))
			best = quant_lvq_kernels_get(isa);
	cr_assert_eq(quant_lvq_kernels(), best);
	cr_assert_null(quant_lvq_kernels_get(-1));
	cr_assert_null(quant_lvq_kernels_get(QUANT_ISA_COUNT));
	cr_log_info("lvq kernels: %s", best->name);
	for (int k = 0; k < 4; k++)
		for (size_t i = 0; i < NDIMS; i++) {
			fix_t f;
			fix_init(&f, kinds[k], some_dims[i], GEN_UNIFORM);
			size_t ps = quant_lvq_primary_size(f.l), cs = quant_lvq_code_size(f.l);
			/* primary and residual in exact-size buffers: an overread
			 * past either is an ASan error */
			uint8_t *prim = malloc(ps), *res = malloc(cs - ps + 1);
			memcpy(prim, f.code, ps);
			memcpy(res, f.code + ps, cs - ps);
			quant_lvq_query_t *pq;
			cr_assert_eq(quant_lvq_query_create(f.l, &pq), 0);
			for (int m = 0; m < 3; m++) {
				cr_assert_eq(quant_lvq_query_prepare(f.l, (vela_metric_t)m, f.q, pq), 0);
				float d0 = quant_lvq_distance(f.l, pq, prim);
				cr_assert_eq(d0, quant_lvq_distance_with(best, f.l, pq, f.code, 0));
				float d1 = quant_lvq_distance_full(f.l, pq, f.code);
				cr_assert_eq(d1, quant_lvq_distance_with(best, f.l, pq, f.code, 1));
				if (bits2(kinds[k]))
					cr_assert_eq(d1, quant_lvq_distance_split(f.l, pq, prim, res));
				else
					cr_assert_eq(d1, d0);
			}
			quant_lvq_query_destroy(pq);
			free(prim);
			free(res);
			fix_free(&f);
		}
}

/* ------------------------------------------------ vs exact distances */

/* Sanity: by the triangle and Cauchy-Schwarz inequalities the LVQ distance
 * is within the quantisation error E = ||x - x^|| <= sqrt(n) * bound of the
 * exact one: |sqrt(L2^) - sqrt(L2)| <= E and |IP^ - IP| <= ||q|| E. */
static void check_vs_exact(quant_lvq_kind_t kind, uint32_t d, vela_metric_t m)
{
	fix_t f;
	fix_init(&f, kind, d, GEN_UNIFORM);
	if (m == VELA_METRIC_COSINE) {
		quant_normalize(f.x, d);
		quant_normalize(f.q, d);
		cr_assert_eq(quant_lvq_encode(f.l, f.x, f.code), 0);
		f.rec = ref_record(kind, d, f.code);
	}
	quant_lvq_query_t *pq;
	cr_assert_eq(quant_lvq_query_create(f.l, &pq), 0);
	cr_assert_eq(quant_lvq_query_prepare(f.l, m, f.q, pq), 0);
	double l2 = 0, dot = 0, qn = 0;
	for (uint32_t j = 0; j < d; j++) {
		l2 += ((double)f.q[j] - f.x[j]) * ((double)f.q[j] - f.x[j]);
		dot += (double)f.q[j] * f.x[j];
		qn += (double)f.q[j] * f.q[j];
	}
	unsigned m2 = bits2(kind) ? (1u << bits2(kind)) - 1 : 1;
	for (int full = 0; full <= 1; full++) {
		double bound = f.rec.scale / 2 / (full ? m2 : 1);
		double e = sqrt((double)d) * bound * (1 + 1e-4) + 1e-5;
		float got = quant_lvq_distance_with(quant_lvq_kernels(), f.l, pq, f.code, full);
		if (m == VELA_METRIC_L2)
			cr_assert_leq(fabs(sqrt(fmax(got, 0)) - sqrt(l2)), e, "%s d=%u", kind_names[kind], d);
		else
			cr_assert_leq(fabs((1 - got) - dot), sqrt(qn) * e + 1e-5, "%s d=%u m=%d",
				      kind_names[kind], d, m);
	}
	quant_lvq_query_destroy(pq);
	fix_free(&f);
}

Test(lvq, distances_near_exact)
{
	for (int k = 0; k < 4; k++)
		for (size_t i = 0; i < NDIMS; i++)
			for (int m = 0; m < 3; m++)
				check_vs_exact(kinds[k], some_dims[i], (vela_metric_t)m);
}

/* Two levels are more accurate than the primary alone on average. */
Test(lvq, residual_reduces_error)
{
	for (int k = 2; k < 4; k++) {
		double ep = 0, ef = 0;
		fix_t f;
		fix_init(&f, kinds[k], 768, GEN_UNIFORM);
		for (uint32_t j = 0; j < 768; j++) {
			ep += fabs((double)f.x[j] - f.decp[j]);
			ef += fabs((double)f.x[j] - f.dec[j]);
		}
		cr_assert_lt(ef * 10, ep, "%s: full %g primary %g", kind_names[k], ef, ep);
		fix_free(&f);
	}
}
