/* The record-and-replay of a partitions batch (index.h
 * part_search_plan_dump; bench/part_dump.h, bench/part_replay_cpu.h):
 *   - a small layout's batch (unfiltered, filtered and empty-filter
 *     queries of several k, calibrated and exact probing, FIELD and LVQ-8
 *     rows) dumped, read back and scanned through the CPU backend as
 *     scan_cluster scans it gives part_search's hits exactly (docids and
 *     distances), and the recorded answers are part_search's;
 *   - the reader refuses a truncated file, a wrong magic and a wrong
 *     version. */
#include <criterion/criterion.h>
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
