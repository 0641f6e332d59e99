/* The record-and-replay of a partitions batch (index.h
 * part_search_plan_dump; bench/part_dump.h, bench/part_replay_cpu.h):
 *   - a small layout's batch (unfiltered, filtered and empty-filter
 *     queries of several k, calibrated and exact probing, FIELD and LVQ-8
 *     rows) dumped, read back and scanned through the CPU backend as
 *     scan_cluster scans it gives part_search's hits exactly (docids and
 *     distances), and the recorded answers are part_search's;
 *   - the reader refuses a truncated file, a wrong magic and a wrong
 *     version;
 *   - part_pack keeps the calibration: part_unpack gives it back bit for bit
 *     and the same search answers; version 2 bytes (no table) load
 *     uncalibrated; damaged tables and newer versions are refused. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/part_replay_cpu.h"
#include "index/index.h"
#include "test_rng.h"

TestSuite(index_partreplay, .timeout = 120);

#define DIM 16u
#define NDOC 3000u
#define NQ 48u

typedef struct fx {
	flat_index_t *f;
	part_layout_t *p;
	float q[NQ][DIM];
	uint32_t k[NQ];
	roaring_bitmap_t *flt[NQ];
} fx_t;

static void fx_make(fx_t *x, part_encoding_t enc)
{
	memset(x, 0, sizeof(*x));
	cr_assert_eq(flat_create(DIM, VELA_METRIC_L2, VELA_VEC_FLOAT32, &x->f), 0);
	float centre[8][DIM];
	for (uint32_t c = 0; c < 8; c++)
		for (uint32_t d = 0; d < DIM; d++)
			centre[c][d] = 4 * rng_gauss();
	for (uint32_t i = 0; i < NDOC; i++) {
		float v[DIM];
		for (uint32_t d = 0; d < DIM; d++)
			v[d] = centre[i % 8][d] + rng_gauss();
		if (i % 17 != 5) /* some docids absent */
			cr_assert_eq(flat_set(x->f, i, v), 0);
	}
	roaring_bitmap_t *lv[2] = {roaring_bitmap_create(), roaring_bitmap_create()};
	roaring_bitmap_add_range(lv[0], 0, NDOC / 2);
	roaring_bitmap_add_range(lv[1], NDOC / 2, NDOC);
	part_opts_t po;
	part_opts_default(&po);
	po.cluster_rows = 64;
	po.encoding = enc;
	part_source_t src = {.f = x->f};
	cr_assert_eq(part_build(&src, (const roaring_bitmap_t *const *)lv, 2, &po, &x->p), 0);
	cr_assert_eq(part_calibrate(x->p, 32), 0);
	roaring_bitmap_free(lv[0]);
	roaring_bitmap_free(lv[1]);
	static const uint32_t ks[] = {1, 5, 10, 20, 0};
	for (uint32_t i = 0; i < NQ; i++) {
		for (uint32_t d = 0; d < DIM; d++)
			x->q[i][d] = centre[rng_next() % 8][d] + rng_gauss();
		x->k[i] = ks[i % 5];
		if (i % 3 == 0)
			continue; /* every row */
		x->flt[i] = roaring_bitmap_create();
		if (i % 12 == 4) /* a range inside one leaf */
			roaring_bitmap_add_range(x->flt[i], 100, 1000);
		else if (i % 12 == 7) /* nothing in the layout */
			roaring_bitmap_add(x->flt[i], NDOC + 7);
		else
			for (uint32_t d = 0; d < NDOC; d++)
				if (rng_next() % 10 < 3)
					roaring_bitmap_add(x->flt[i], d);
	}
}

static void fx_free(fx_t *x)
{
	for (uint32_t i = 0; i < NQ; i++)
		if (x->flt[i])
			roaring_bitmap_free(x->flt[i]);
	part_free(x->p);
	flat_destroy(x->f);
}

static void queries(fx_t *x, part_query_t *pq, vela_hit_t (*out)[20])
{
	for (uint32_t i = 0; i < NQ; i++)
		pq[i] = (part_query_t){.q = x->q[i], .k = x->k[i], .filter = x->flt[i], .out = out[i]};
}

/* Dump with o, replay on the CPU, compare with part_search. */
static void roundtrip(fx_t *x, const part_search_opts_t *o)
{
	part_query_t pq[NQ], pd_q[NQ];
	vela_hit_t want[NQ][20], dumped[NQ][20];
	queries(x, pq, want);
	queries(x, pd_q, dumped);
	cr_assert_eq(part_search(x->p, pq, NQ, o), 0);
	char path[] = "/tmp/vela-partreplay-XXXXXX";
	int fd = mkstemp(path);
	cr_assert(fd >= 0);
	FILE *f = fdopen(fd, "wb");
	cr_assert_eq(part_search_plan_dump(x->p, pd_q, NQ, o, f), 0);
	fclose(f);
	for (uint32_t i = 0; i < NQ; i++) { /* the dump answers as part_search */
		cr_assert_eq(pd_q[i].n_out, pq[i].n_out, "query %u", i);
		cr_assert_eq(pd_q[i].probed, pq[i].probed);
		cr_assert_eq(memcmp(dumped[i], want[i], pq[i].n_out * sizeof(vela_hit_t)), 0);
	}
	pd_t d;
	char why[256];
	cr_assert_eq(pd_load(path, &d, why, sizeof(why)), 0, "%s", why);
	cr_assert_eq(d.nq, NQ);
	cr_assert_eq(d.dim, DIM);
	pr_cpu_t c;
	pd_hit_t got[NQ * 20];
	uint32_t n_got[NQ];
	cr_assert_eq(d.kmax, 20u);
	cr_assert_eq(pr_cpu_prepare(&d, &c), 0);
	cr_assert_eq(pr_cpu_run(&d, &c, got, n_got), 0);
	uint64_t scanned = 0;
	for (uint32_t i = 0; i < NQ; i++) {
		cr_assert_eq(n_got[i], pq[i].n_out, "query %u: %u hits, part_search %u", i, n_got[i],
			     pq[i].n_out);
		for (uint32_t j = 0; j < n_got[i]; j++) {
			cr_assert_eq(got[i * 20 + j].docid, want[i][j].docid, "query %u hit %u", i, j);
			cr_assert_eq(memcmp(&got[i * 20 + j].dist, &want[i][j].dist, 4), 0);
		}
		scanned += pq[i].probed;
	}
	cr_assert_eq(d.n_pairs, scanned); /* one pair per cluster a query probed */
	uint32_t same, exact;
	double rel;
	pd_check(&d, got, n_got, &same, &exact, &rel);
	cr_assert_eq(exact, NQ);
	pr_cpu_free(&d, &c);
	pd_free(&d);
	unlink(path);
}

static void both_probings(part_encoding_t enc)
{
	fx_t x;
	fx_make(&x, enc);
	part_search_opts_t o;
	part_search_opts_default(&o); /* calibrated */
	roundtrip(&x, &o);
	o.probe_factor = 0; /* exact: every cluster with a match */
	o.recall = 0;
	roundtrip(&x, &o);
	fx_free(&x);
}

Test(index_partreplay, field_rows_replay_exactly)
{
	both_probings(PART_ENC_FIELD);
}

Test(index_partreplay, lvq8_rows_replay_exactly)
{
	both_probings(PART_ENC_LVQ8);
}

/* Write bytes to a temporary file; returns its path (static). */
static const char *tmp_with(const uint8_t *b, size_t n)
{
	static char path[64];
	snprintf(path, sizeof(path), "/tmp/vela-partreplay-XXXXXX");
	int fd = mkstemp(path);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, b, n), (ssize_t)n);
	close(fd);
	return path;
}

Test(index_partreplay, reader_refuses_bad_files)
{
	fx_t x;
	fx_make(&x, PART_ENC_FIELD);
	part_query_t pq[NQ];
	vela_hit_t out[NQ][20];
	queries(&x, pq, out);
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	cr_assert_eq(part_search_plan_dump(x.p, pq, NQ, NULL, f), 0);
	fclose(f);
	cr_assert_gt(len, 64u);
	pd_t d;
	char why[256];
	const char *p = tmp_with((const uint8_t *)buf, len);
	cr_assert_eq(pd_load(p, &d, why, sizeof(why)), 0, "%s", why);
	pd_free(&d);
	unlink(p);
	size_t cuts[] = {0, 3, 40, len / 2, len - 4, len - 1};
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		p = tmp_with((const uint8_t *)buf, cuts[i]);
		cr_assert_eq(pd_load(p, &d, why, sizeof(why)), -1, "cut at %zu", cuts[i]);
		unlink(p);
	}
	uint8_t *bad = malloc(len + 4);
	memcpy(bad, buf, len);
	memset(bad + len, 0, 4);
	p = tmp_with(bad, len + 4); /* trailing bytes */
	cr_assert_eq(pd_load(p, &d, why, sizeof(why)), -1);
	unlink(p);
	bad[0] ^= 1; /* magic */
	p = tmp_with(bad, len);
	cr_assert_eq(pd_load(p, &d, why, sizeof(why)), -1);
	cr_assert(strstr(why, "magic"), "%s", why);
	unlink(p);
	bad[0] ^= 1;
	bad[4] = 9; /* version */
	p = tmp_with(bad, len);
	cr_assert_eq(pd_load(p, &d, why, sizeof(why)), -1);
	cr_assert(strstr(why, "version"), "%s", why);
	unlink(p);
	cr_assert_eq(part_search_plan_dump(x.p, pq, NQ, NULL, NULL), VELA_EINVAL);
	free(bad);
	free(buf);
	fx_free(&x);
}

/* ------------------------------------------------------------ pack */

static part_layout_t *unpack_ok(fx_t *x, const uint8_t *b, size_t n)
{
	part_source_t src = {.f = x->f};
	part_layout_t *q = NULL;
	int rc = part_unpack(&src, b, n, &q);
	cr_assert_eq(rc, 0, "part_unpack: %d", rc);
	return q;
}

static int unpack_rc(fx_t *x, const uint8_t *b, size_t n)
{
	part_source_t src = {.f = x->f};
	part_layout_t *q = NULL;
	int rc = part_unpack(&src, b, n, &q);
	part_free(q);
	return rc;
}

Test(index_partreplay, pack_keeps_calibration)
{
	fx_t x;
	fx_make(&x, PART_ENC_FIELD);
	double a[PART_CAL_STEPS][PART_CAL_LEVELS], b[PART_CAL_STEPS][PART_CAL_LEVELS];
	uint32_t steps = part_calibration(x.p, &a[0][0]);
	cr_assert_gt(steps, 0u, "the fixture is calibrated");
	uint8_t *buf = NULL;
	size_t len = 0;
	cr_assert_eq(part_pack(x.p, &buf, &len), 0);
	part_layout_t *q = unpack_ok(&x, buf, len);
	cr_assert_eq(part_calibration(q, &b[0][0]), steps);
	cr_assert_eq(memcmp(a, b, steps * sizeof(a[0])), 0, "the table comes back bit for bit");

	/* the same answers under calibrated probing, from the loaded table */
	part_query_t p1[NQ], p2[NQ];
	vela_hit_t h1[NQ][20], h2[NQ][20];
	queries(&x, p1, h1);
	queries(&x, p2, h2);
	part_search_opts_t o;
	part_search_opts_default(&o);
	cr_assert_eq(part_search(x.p, p1, NQ, &o), 0);
	cr_assert_eq(part_search(q, p2, NQ, &o), 0);
	for (uint32_t i = 0; i < NQ; i++) {
		cr_assert_eq(p1[i].n_out, p2[i].n_out, "query %u", i);
		cr_assert_eq(p1[i].probed, p2[i].probed, "query %u", i);
		cr_assert_eq(memcmp(h1[i], h2[i], p1[i].n_out * sizeof(vela_hit_t)), 0);
	}
	part_free(q);

	/* version 2: no table at the end, loads uncalibrated */
	size_t table = sizeof(uint32_t) + (size_t)steps * sizeof(a[0]);
	uint8_t *old = malloc(len);
	memcpy(old, buf, len);
	uint32_t v2 = 2;
	memcpy(old, &v2, sizeof(v2));
	q = unpack_ok(&x, old, len - table);
	cr_assert_eq(part_calibration(q, NULL), 0u, "a version 2 layout has no calibration");
	part_free(q);

	/* damaged tables: a NaN, a level below the one before, too many steps */
	double *t = (double *)(buf + len - (size_t)steps * sizeof(a[0]));
	double keep = t[3];
	t[3] = NAN;
	cr_assert_eq(unpack_rc(&x, buf, len), VELA_ECORRUPT, "a NaN in the table");
	t[3] = t[2] - 1;
	cr_assert_eq(unpack_rc(&x, buf, len), VELA_ECORRUPT, "a decreasing level");
	t[3] = keep;
	uint32_t too_many = PART_CAL_STEPS + 1;
	memcpy(buf + len - table, &too_many, sizeof(too_many));
	cr_assert_eq(unpack_rc(&x, buf, len), VELA_ECORRUPT, "more steps than the ladder");
	memcpy(buf + len - table, &steps, sizeof(steps));
	cr_assert_eq(unpack_rc(&x, buf, len - 8), VELA_ECORRUPT, "a truncated table");
	uint32_t v4 = PART_PACK_VERSION + 1;
	memcpy(buf, &v4, sizeof(v4));
	cr_assert_eq(unpack_rc(&x, buf, len), VELA_EVERSION, "a newer format");
	free(old);
	free(buf);
	fx_free(&x);
}
