/* Unit tests for index/ GRAPH (Vamana): recall@10 against an independent
 * double-precision brute force on sift-5k and on clustered Gaussian data
 * (L2, IP, COSINE), delete + consolidate + re-insert, filtered search,
 * snapshot round trip and corruption, tiny graphs, determinism and
 * argument errors.
 *
 * Test build parameters: R = 32, L = 64, 2 threads (smaller than the
 * L = 200 default so the suite stays fast under ASan). Searches use
 * window TEST_WINDOW = 64 unless stated. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index/index.h"
#include "quant/quant.h"

#define K 10u
#define TEST_WINDOW 64u

#define TEST_RNG_SEED 0x243f6a8885a308d3ull
#include "test_rng.h"
#include "test_sift.h"

/* ------------------------------------------------ data sets */

typedef struct {
	uint32_t n, nq, dim;
	vela_metric_t metric;
	float *base, *queries;
	flat_index_t *f;
	graph_store_t st;
	graph_t *g;
} ds_t;

/* `nc` Gaussian clusters (centres N(0, 4), spread N(0, 1)); queries drawn
 * the same way. COSINE data is normalised, as the engine does at insert. */
static void ds_synth(ds_t *d, uint32_t n, uint32_t nq, uint32_t dim, vela_metric_t m)
{
	*d = (ds_t){.n = n, .nq = nq, .dim = dim, .metric = m,
		    .base = malloc((size_t)n * dim * 4), .queries = malloc((size_t)nq * dim * 4)};
	cr_assert(d->base && d->queries);
	const uint32_t nc = 20;
	float *c = malloc((size_t)nc * dim * 4);
	for (size_t i = 0; i < (size_t)nc * dim; i++)
		c[i] = 2.0f * rng_gauss();
	for (uint32_t i = 0; i < n + nq; i++) {
		float *v = i < n ? d->base + (size_t)i * dim : d->queries + (size_t)(i - n) * dim;
		const float *ci = c + (rng_next() % nc) * dim;
		for (uint32_t j = 0; j < dim; j++)
			v[j] = ci[j] + rng_gauss();
		if (m == VELA_METRIC_COSINE)
			quant_normalize(v, dim);
	}
	free(c);
}

static bool ds_sift(ds_t *d, uint32_t n, uint32_t nq)
{
	*d = (ds_t){.n = n, .nq = nq, .dim = TEST_SIFT_DIM, .metric = VELA_METRIC_L2,
		    .base = malloc((size_t)n * TEST_SIFT_DIM * 4),
		    .queries = malloc((size_t)nq * TEST_SIFT_DIM * 4)};
	cr_assert(d->base && d->queries);
	if (test_sift_read(d->base, n, d->queries, nq))
		return true;
	free(d->base);
	free(d->queries);
	return false;
}

static graph_params_t test_params(void)
{
	graph_params_t p;
	graph_params_default(&p);
	p.window = 64;
	p.threads = 2;
	return p;
}

/* FLAT holding the base vectors, its store, and a graph built over all. */
static void ds_index(ds_t *d, const graph_params_t *p)
{
	cr_assert_eq(flat_create(d->dim, d->metric, VELA_VEC_FLOAT32, &d->f), 0);
	for (uint32_t i = 0; i < d->n; i++)
		cr_assert_eq(flat_set(d->f, i, d->base + (size_t)i * d->dim), 0);
	cr_assert_eq(graph_store_flat(d->f, &d->st), 0);
	cr_assert_eq(graph_create(&d->st, p, &d->g), 0);
	uint32_t *ids = malloc(d->n * sizeof(uint32_t));
	for (uint32_t i = 0; i < d->n; i++)
		ids[i] = i;
	cr_assert_eq(graph_build(d->g, ids, d->n), 0);
	cr_assert_eq(graph_count(d->g), d->n);
	free(ids);
}

static void ds_free(ds_t *d)
{
	graph_destroy(d->g);
	flat_destroy(d->f);
	free(d->base);
	free(d->queries);
}

/* ------------------------------------------------ ground truth */

static double ref_dist(vela_metric_t m, const float *a, const float *b, uint32_t dim)
{
	double s = 0;
	for (uint32_t i = 0; i < dim; i++)
		s += m == VELA_METRIC_L2 ? ((double)a[i] - b[i]) * ((double)a[i] - b[i])
					 : (double)a[i] * b[i];
	return m == VELA_METRIC_L2 ? s : 1.0 - s;
}

/* Exact top-K ids of query qi among ids with keep[id] (NULL = all). */
static uint32_t truth(const ds_t *d, uint32_t qi, const bool *keep, uint32_t *ids)
{
	double best[K];
	uint32_t n = 0;
	const float *q = d->queries + (size_t)qi * d->dim;
	for (uint32_t i = 0; i < d->n; i++) {
		if (keep && !keep[i])
			continue;
		double x = ref_dist(d->metric, q, d->base + (size_t)i * d->dim, d->dim);
		if (n == K && x >= best[K - 1])
			continue;
		uint32_t p = n < K ? n++ : K - 1;
		while (p > 0 && best[p - 1] > x) {
			best[p] = best[p - 1];
			ids[p] = ids[p - 1];
			p--;
		}
		best[p] = x;
		ids[p] = i;
	}
	return n;
}

/* Mean recall@K of graph searches; every hit must satisfy keep[] and the
 * hits must come in ascending (dist, id) order. */
static double recall(const ds_t *d, const bool *keep, const graph_search_params_t *sp)
{
	double hits = 0, total = 0;
	for (uint32_t qi = 0; qi < d->nq; qi++) {
		uint32_t gt[K], n = 0, nt = truth(d, qi, keep, gt);
		vela_hit_t out[K];
		cr_assert_eq(graph_search(d->g, d->queries + (size_t)qi * d->dim, K, sp, out, &n), 0);
		cr_assert_eq(n, nt);
		for (uint32_t i = 0; i < n; i++) {
			cr_assert(keep == NULL || keep[out[i].docid], "id %u filtered", out[i].docid);
			cr_assert(i == 0 || out[i - 1].dist < out[i].dist ||
				  (out[i - 1].dist == out[i].dist && out[i - 1].docid < out[i].docid));
			for (uint32_t j = 0; j < nt; j++)
				hits += out[i].docid == gt[j];
		}
		total += nt;
	}
	return total ? hits / total : 1.0;
}

static graph_search_params_t sp_window(uint32_t w)
{
	graph_search_params_t sp;
	graph_search_params_default(&sp);
	sp.window = w;
	return sp;
}

/* ------------------------------------------------ recall */

Test(graph, recall_sift)
{
	ds_t d;
	if (!ds_sift(&d, 4900, 100))
		cr_skip_test("sift-5k.tsv not found (tried %s)", test_sift_path);
	graph_params_t p = test_params();
	ds_index(&d, &p);
	graph_search_params_t sp = sp_window(TEST_WINDOW);
	double r = recall(&d, NULL, &sp);
	cr_log_info("sift-5k recall@10 = %.4f (window %u)", r, TEST_WINDOW);
	cr_assert_geq(r, 0.95, "recall %.4f", r);
	ds_free(&d);
}

static void synth_recall(vela_metric_t m, double min)
{
	ds_t d;
	ds_synth(&d, 2000, 100, 32, m);
	graph_params_t p = test_params();
	ds_index(&d, &p);
	graph_search_params_t sp = sp_window(TEST_WINDOW);
	double r = recall(&d, NULL, &sp);
	cr_log_info("synthetic metric %d recall@10 = %.4f", (int)m, r);
	cr_assert_geq(r, min, "metric %d recall %.4f", (int)m, r);
	/* The default window (10) still finds most neighbours. */
	r = recall(&d, NULL, NULL);
	cr_assert_geq(r, 0.7, "metric %d default-window recall %.4f", (int)m, r);
	ds_free(&d);
}

Test(graph, recall_synthetic_l2) { synth_recall(VELA_METRIC_L2, 0.95); }
Test(graph, recall_synthetic_ip) { synth_recall(VELA_METRIC_IP, 0.95); }
Test(graph, recall_synthetic_cosine) { synth_recall(VELA_METRIC_COSINE, 0.95); }

/* ------------------------------------------------ updates */

Test(graph, delete_consolidate_reinsert)
{
	ds_t d;
	ds_synth(&d, 2000, 100, 32, VELA_METRIC_L2);
	graph_params_t p = test_params();
	ds_index(&d, &p);
	graph_search_params_t sp = sp_window(TEST_WINDOW);
	bool *keep = malloc(d.n);
	for (uint32_t i = 0; i < d.n; i++)
		keep[i] = rng_next() % 5 != 0;
	keep[graph_entry(d.g)] = false; /* the entry point goes too */
	uint32_t del = 0;
	for (uint32_t i = 0; i < d.n; i++)
		if (!keep[i]) {
			cr_assert_eq(graph_delete(d.g, i), 0);
			del++;
		}
	cr_assert_eq(graph_delete(d.g, graph_entry(d.g)), VELA_ENOTFOUND);
	cr_assert_eq(graph_insert(d.g, graph_entry(d.g)), VELA_EEXISTS);
	cr_assert_eq(graph_count(d.g), d.n - del);
	double r = recall(&d, keep, &sp); /* tombstones: traversed, not returned */
	cr_log_info("after delete: %.4f", r);
	cr_assert_geq(r, 0.9, "tombstoned recall %.4f", r);
	cr_assert_eq(graph_consolidate(d.g), 0);
	cr_assert(keep[graph_entry(d.g)]);
	for (uint32_t i = 0; i < d.n; i++) {
		const uint32_t *nb;
		uint32_t n = graph_neighbors(d.g, i, &nb);
		cr_assert(keep[i] || n == 0);
		for (uint32_t j = 0; j < n; j++)
			cr_assert(keep[nb[j]], "edge %u -> deleted %u", i, nb[j]);
	}
	r = recall(&d, keep, &sp);
	cr_log_info("after consolidate: %.4f", r);
	cr_assert_geq(r, 0.95, "consolidated recall %.4f", r);
	for (uint32_t i = 0; i < d.n; i++)
		if (!keep[i])
			cr_assert_eq(graph_insert(d.g, i), 0);
	cr_assert_eq(graph_count(d.g), d.n);
	r = recall(&d, NULL, &sp);
	cr_log_info("after re-insert: %.4f", r);
	cr_assert_geq(r, 0.95, "re-inserted recall %.4f", r);
	free(keep);
	ds_free(&d);
}

/* Vectors that change in place (a document update keeps its docid) and a
 * deleted id used again without consolidation: graph_update re-links them. */
Test(graph, update_moved_vectors_and_revive)
{
	ds_t d;
	ds_synth(&d, 2000, 100, 32, VELA_METRIC_L2);
	graph_params_t p = test_params();
	ds_index(&d, &p);
	graph_search_params_t sp = sp_window(TEST_WINDOW);
	/* Move 10% of the vectors to where other vectors are (swap contents). */
	for (uint32_t i = 0; i < d.n / 10; i++) {
		uint32_t a = rng_next() % d.n, b = rng_next() % d.n;
		float *va = d.base + (size_t)a * d.dim, *vb = d.base + (size_t)b * d.dim;
		for (uint32_t j = 0; j < d.dim; j++) {
			float t = va[j];
			va[j] = vb[j];
			vb[j] = t;
		}
		cr_assert_eq(flat_set(d.f, a, va), 0);
		cr_assert_eq(flat_set(d.f, b, vb), 0);
		cr_assert_eq(graph_update(d.g, a), 0);
		cr_assert_eq(graph_update(d.g, b), 0);
	}
	cr_assert_eq(graph_count(d.g), d.n);
	double r = recall(&d, NULL, &sp);
	cr_log_info("after moving 10%%: %.4f", r);
	cr_assert_geq(r, 0.95, "recall after updates %.4f", r);
	/* Delete then revive without consolidating. */
	for (uint32_t i = 0; i < 200; i++)
		cr_assert_eq(graph_delete(d.g, i), 0);
	for (uint32_t i = 0; i < 200; i++)
		cr_assert_eq(graph_update(d.g, i), 0);
	cr_assert_eq(graph_count(d.g), d.n);
	r = recall(&d, NULL, &sp);
	cr_assert_geq(r, 0.95, "recall after revive %.4f", r);
	ds_free(&d);
}

/* ------------------------------------------------ filters */

static void filtered(uint32_t percent)
{
	ds_t d;
	ds_synth(&d, 2000, 100, 32, VELA_METRIC_L2);
	graph_params_t p = test_params();
	ds_index(&d, &p);
	bool *keep = malloc(d.n);
	roaring_bitmap_t *bm = roaring_bitmap_create();
	for (uint32_t i = 0; i < d.n; i++) {
		keep[i] = rng_next() % 100 < percent;
		if (keep[i])
			roaring_bitmap_add(bm, i);
	}
	graph_search_params_t sp = sp_window(TEST_WINDOW);
	sp.filter = bm;
	double r = recall(&d, keep, &sp);
	cr_log_info("filter %u%%: recall %.4f", percent, r);
	cr_assert_geq(r, 0.95, "filter %u%% recall %.4f", percent, r);
	/* Default window too: the filter widens it. */
	sp.window = 0;
	r = recall(&d, keep, &sp);
	cr_assert_geq(r, 0.8, "filter %u%% default-window recall %.4f", percent, r);
	roaring_bitmap_free(bm);
	free(keep);
	ds_free(&d);
}

Test(graph, filter_50) { filtered(50); }
Test(graph, filter_10) { filtered(10); }

Test(graph, filter_tiny_and_empty)
{
	ds_t d;
	ds_synth(&d, 500, 20, 16, VELA_METRIC_L2);
	graph_params_t p = test_params();
	ds_index(&d, &p);
	roaring_bitmap_t *bm = roaring_bitmap_create();
	graph_search_params_t sp = sp_window(10);
	sp.filter = bm;
	vela_hit_t out[K];
	uint32_t n = 99;
	cr_assert_eq(graph_search(d.g, d.queries, K, &sp, out, &n), 0);
	cr_assert_eq(n, 0);
	roaring_bitmap_add_many(bm, 3, (uint32_t[]){7, 100, 499});
	cr_assert_eq(graph_search(d.g, d.queries, K, &sp, out, &n), 0);
	cr_assert_eq(n, 3); /* widening reaches every match */
	roaring_bitmap_free(bm);
	ds_free(&d);
}

/* ------------------------------------------------ snapshots */

static FILE *snapshot(const graph_t *g, long *len)
{
	FILE *f = tmpfile();
	cr_assert(f);
	cr_assert_eq(graph_save(g, f), 0);
	*len = ftell(f);
	rewind(f);
	return f;
}

static uint8_t *file_bytes(FILE *f, long len)
{
	uint8_t *b = malloc((size_t)len);
	rewind(f);
	cr_assert_eq(fread(b, 1, (size_t)len, f), (size_t)len);
	return b;
}

static int load_bytes(const uint8_t *b, size_t len, const graph_store_t *st, graph_t **g)
{
	FILE *f = tmpfile();
	cr_assert(f);
	cr_assert_eq(fwrite(b, 1, len, f), len);
	rewind(f);
	int rc = graph_load(f, st, 2, g);
	fclose(f);
	return rc;
}

Test(graph, snapshot_round_trip_and_corruption)
{
	ds_t d;
	ds_synth(&d, 1000, 50, 16, VELA_METRIC_IP);
	graph_params_t p = test_params();
	ds_index(&d, &p);
	cr_assert_eq(graph_delete(d.g, 5), 0); /* a tombstone travels too */
	long len;
	FILE *f = snapshot(d.g, &len);
	graph_t *g2;
	cr_assert_eq(graph_load(f, &d.st, 0, &g2), 0);
	cr_assert_eq(graph_count(g2), graph_count(d.g));
	cr_assert_eq(graph_entry(g2), graph_entry(d.g));
	cr_assert(!graph_contains(g2, 5));
	graph_search_params_t sp = sp_window(32);
	for (uint32_t qi = 0; qi < d.nq; qi++) {
		vela_hit_t a[K], b[K];
		uint32_t na, nb;
		const float *q = d.queries + (size_t)qi * d.dim;
		cr_assert_eq(graph_search(d.g, q, K, &sp, a, &na), 0);
		cr_assert_eq(graph_search(g2, q, K, &sp, b, &nb), 0);
		cr_assert_eq(na, nb);
		cr_assert_arr_eq(a, b, na * sizeof(*a));
	}
	graph_destroy(g2);

	uint8_t *b = file_bytes(f, len);
	fclose(f);
	for (long off = 21; off < len; off += len / 37) { /* one flipped byte */
		b[off] ^= 0x10;
		cr_assert_eq(load_bytes(b, (size_t)len, &d.st, &g2), VELA_ECORRUPT, "off %ld", off);
		cr_assert_null(g2);
		b[off] ^= 0x10;
	}
	for (long cut = 0; cut < len; cut += 1 + len / 53) /* truncations */
		cr_assert_eq(load_bytes(b, (size_t)cut, &d.st, &g2), VELA_ECORRUPT, "cut %ld", cut);
	cr_assert_eq(load_bytes(b, (size_t)len - 1, &d.st, &g2), VELA_ECORRUPT);
	b[11] += 1; /* newer format version */
	cr_assert_eq(load_bytes(b, (size_t)len, &d.st, &g2), VELA_EVERSION);
	b[11] -= 1;
	b[19] += 1; /* body length one past the real one */
	cr_assert_eq(load_bytes(b, (size_t)len, &d.st, &g2), VELA_ECORRUPT);
	b[19] -= 1;
	cr_assert_eq(load_bytes(b, (size_t)len, &d.st, &g2), 0);
	graph_destroy(g2);
	graph_store_t other = d.st;
	other.dim = 17;
	cr_assert_eq(load_bytes(b, (size_t)len, &other, &g2), VELA_EINVAL);
	free(b);
	ds_free(&d);
}

/* ------------------------------------------------ tiny graphs */

Test(graph, zero_one_two_nodes)
{
	ds_t d;
	ds_synth(&d, 2, 3, 8, VELA_METRIC_L2);
	cr_assert_eq(flat_create(d.dim, d.metric, VELA_VEC_FLOAT32, &d.f), 0);
	for (uint32_t i = 0; i < d.n; i++)
		cr_assert_eq(flat_set(d.f, i, d.base + (size_t)i * d.dim), 0);
	cr_assert_eq(graph_store_flat(d.f, &d.st), 0);
	graph_params_t p = test_params();
	for (uint32_t n = 0; n <= 2; n++) {
		graph_t *g;
		cr_assert_eq(graph_create(&d.st, &p, &g), 0);
		cr_assert_eq(graph_build(g, (uint32_t[]){0, 1}, n), 0);
		vela_hit_t out[K];
		uint32_t got;
		cr_assert_eq(graph_search(g, d.queries, K, NULL, out, &got), 0);
		cr_assert_eq(got, n);
		long len;
		FILE *f = snapshot(g, &len);
		graph_t *g2;
		cr_assert_eq(graph_load(f, &d.st, 0, &g2), 0, "n=%u", n);
		fclose(f);
		cr_assert_eq(graph_count(g2), n);
		graph_destroy(g2);
		graph_destroy(g);
	}
	/* Incremental from empty, down to empty again. */
	graph_t *g;
	cr_assert_eq(graph_create(&d.st, NULL, &g), 0);
	cr_assert_eq(graph_insert(g, 1), 0);
	cr_assert_eq(graph_entry(g), 1);
	cr_assert_eq(graph_insert(g, 0), 0);
	vela_hit_t out[K];
	uint32_t got;
	cr_assert_eq(graph_search(g, d.queries, K, NULL, out, &got), 0);
	cr_assert_eq(got, 2);
	cr_assert_eq(graph_delete(g, 1), 0);
	cr_assert_eq(graph_search(g, d.queries, K, NULL, out, &got), 0);
	cr_assert_eq(got, 1);
	cr_assert_eq(out[0].docid, 0);
	cr_assert_eq(graph_delete(g, 0), 0);
	cr_assert_eq(graph_consolidate(g), 0);
	cr_assert_eq(graph_entry(g), UINT32_MAX);
	cr_assert_eq(graph_search(g, d.queries, K, NULL, out, &got), 0);
	cr_assert_eq(got, 0);
	cr_assert_eq(graph_insert(g, 0), 0);
	cr_assert_eq(graph_search(g, d.queries, K, NULL, out, &got), 0);
	cr_assert_eq(got, 1);
	graph_destroy(g);
	ds_free(&d);
}

/* ------------------------------------------------ determinism, errors */

Test(graph, build_is_thread_count_independent)
{
	ds_t a, b;
	rng_state = 7;
	ds_synth(&a, 600, 1, 16, VELA_METRIC_COSINE);
	rng_state = 7;
	ds_synth(&b, 600, 1, 16, VELA_METRIC_COSINE);
	graph_params_t p = test_params();
	p.threads = 1;
	ds_index(&a, &p);
	p.threads = 2;
	ds_index(&b, &p);
	cr_assert_eq(graph_entry(a.g), graph_entry(b.g));
	for (uint32_t i = 0; i < a.n; i++) {
		const uint32_t *na, *nb;
		uint32_t da = graph_neighbors(a.g, i, &na), db = graph_neighbors(b.g, i, &nb);
		cr_assert_eq(da, db);
		cr_assert_leq(da, p.max_degree);
		cr_assert_arr_eq(na, nb, da * sizeof(uint32_t));
	}
	ds_free(&a);
	ds_free(&b);
}

Test(graph, argument_errors)
{
	ds_t d;
	ds_synth(&d, 50, 1, 8, VELA_METRIC_L2);
	graph_params_t p = test_params();
	ds_index(&d, &p);
	graph_t *g;
	graph_params_t bad = p;
	bad.max_degree = GRAPH_MAX_DEGREE_MAX + 1;
	cr_assert_eq(graph_create(&d.st, &bad, &g), VELA_EINVAL);
	cr_assert_null(g);
	bad = p;
	bad.alpha = 0.9f; /* below 1 is for IP/COSINE only */
	cr_assert_eq(graph_create(&d.st, &bad, &g), VELA_EINVAL);
	bad = p;
	bad.threads = 0;
	cr_assert_eq(graph_create(&d.st, &bad, &g), VELA_EINVAL);
	bad = p;
	bad.prune_to = p.max_degree + 1;
	cr_assert_eq(graph_create(&d.st, &bad, &g), VELA_EINVAL);
	graph_store_t st = d.st;
	st.dist_ids = NULL;
	cr_assert_eq(graph_create(&st, &p, &g), VELA_EINVAL);
	cr_assert_eq(graph_build(d.g, (uint32_t[]){1}, 1), VELA_EINVAL); /* not empty */
	cr_assert_eq(graph_create(&d.st, &p, &g), 0);
	cr_assert_eq(graph_build(g, (uint32_t[]){1, 2, 1}, 3), VELA_EINVAL); /* duplicate */
	cr_assert_eq(graph_count(g), 0);
	cr_assert_eq(graph_build(g, (uint32_t[]){1, 2, 3}, 3), 0);
	graph_destroy(g);
	vela_hit_t out[K];
	uint32_t n;
	float q[8] = {NAN};
	cr_assert_eq(graph_search(d.g, q, K, NULL, out, &n), VELA_EINVAL);
	cr_assert_eq(graph_search(d.g, d.queries, VELA_K_MAX + 1, NULL, out, &n), VELA_EINVAL);
	cr_assert_eq(graph_search(d.g, d.queries, 0, NULL, NULL, &n), 0);
	cr_assert_eq(n, 0);
	cr_assert_eq(graph_delete(d.g, 12345), VELA_ENOTFOUND);
	cr_assert_eq(graph_insert(d.g, UINT32_MAX), VELA_EINVAL);
	ds_free(&d);
}
