/* bench_hybrid: per-selectivity-bucket recall@k and QPS of hybrid (filter +
 * KNN) queries through the engine (vela_search), for the automatic planner
 * and for each forced plan, on a generated workload (bench/workload_gen.h)
 * indexed with a GRAPH vector field.
 *
 * Usage: bench_hybrid [--n 50000] [--dim 64] [--clusters 64] [--seed 42]
 *          [--queries sweep|future] [--per 20] [--nq 1000] [--k 10]
 *          [--window 0] [--R 32] [--L 100] [--modes auto,adhoc,batches,graph,fgraph,batch]
 *          [--reps 1] [--detail 0|1] [--exact-targets 0|1] [--csv FILE]
 *          [--db DIR] [--chunk 0] [--past 2000] [--recall 0]
 *          [--dump-partitions FILE]
 *
 * --queries sweep: for every bucket (1e-4 .. 1) and every filter shape that
 *   can reach it, --per queries (independent, correlated and
 *   anti-correlated filters alike) with target selectivities drawn
 *   log-uniformly over the bucket's span (--exact-targets 1: the bucket's
 *   value itself); future: the generator's future workload (--nq queries,
 *   Zipf-popular templates).
 * --modes: auto = the planner decides; adhoc = HYBRID_POLICY ADHOC_BF;
 *   batches = HYBRID_POLICY BATCHES; graph = the walk over every node
 *   keeping matches, fgraph = the walk over matching nodes (ACORN-1), both
 *   forced through vela_search_req_t.force_plan (not reachable from the
 *   protocol); batch = the planner's plans through vela_search_batch (the
 *   batch executor), --chunk queries per call (0 = all of them in one).
 *   batch is timed as a whole (the fastest of --reps runs), and once more
 *   per bucket (a batch of that bucket's queries alone) for the per-bucket
 *   QPS; its stage times are the profile's (the search time of grouped
 *   exact plans is their group's, shared out). partitions = batch after a
 *   partition layout was learned from --past queries of the generator's
 *   past workload (docs/partitions.md), probing at --recall (the layout's
 *   RECALL, its calibrated target; 0: the default 0.95); the layout is
 *   dropped afterwards.
 * After the tables, a summary: every mode's total time for the whole set
 *   and its ratio to batch (one-at-a-time modes: the sum of each query's
 *   fastest run).
 * --window: EF_RUNTIME of every query (0 = the field's SEARCH_WINDOW_SIZE,
 *   which --index-window sets; default 0 = the engine default).
 * --db DIR: keep the database there (reused when it already holds the index).
 * --dump-partitions FILE: in the partitions mode, once the layout is built,
 *   record the whole query set's partitions batch (the queries the planner
 *   gives that plan, as vela_search_batch would) for bench_part_replay and
 *   gpu/bench/part_replay_gpu (vela_layout_dump_scan; docs/gpu.md).
 * --csv FILE: one line per query and mode (matches, plan, recall, times).
 * One thread, one query at a time, each run --reps times (its fastest run
 * counts: the stage times printed are the last run's); queries are
 * bucketed by the realised selectivity (exact matches / n). Ground truth:
 * wl_truth (double). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench/workload_gen.h"
#include "common/common.h"
#include "vela/vela.h"


typedef struct hb_opts {
	wl_params_t p;
	const char *queries, *modes, *db, *csv, *dump;
	uint32_t per, nq, k, window, index_window, R, L, reps, detail, exact, chunk, past;
	double recall; /* partitions: the layout's RECALL (0: its default) */
} hb_opts_t;

typedef struct hb_query {
	float *q;
	wl_filter_t f;
	wl_shape_t shape;
	char text[4096];
	uint32_t truth[64];
	uint32_t got;
	uint64_t matches;
	int bucket;
} hb_query_t;

#define HB_PLANS 8

typedef struct hb_cell {
	uint32_t n;
	double recall, ns, min_recall;
	uint64_t dist;
	uint64_t stage_ns[4]; /* parse, filter, search, load */
	uint32_t plans[HB_PLANS];
} hb_cell_t;

/* Cells: per bucket (index 0 = empty), and per bucket x shape. */
#define HB_CELLS (WL_BUCKETS + 1)

static const char *const hb_plan_names[] = {"scan",           "filtered-scan", "graph",
					     "batches",        "filtered-graph", "batch-gemm",
					     "partitions",     "other"};

static int hb_plan_index(const char *p)
{
	for (int i = 0; i < HB_PLANS - 1; i++)
		if (p && !strcmp(p, hb_plan_names[i]))
			return i;
	return HB_PLANS - 1;
}

static int hb_usage(void)
{
	fprintf(stderr, "usage: bench_hybrid [--n 50000] [--dim 64] [--clusters 64] [--seed 42]\n"
			"         [--queries sweep|future] [--per 20] [--nq 1000] [--k 10]\n"
			"         [--window 0] [--index-window 0] [--R 32] [--L 100]\n"
			"         [--modes auto,adhoc,batches,graph,fgraph,batch] [--reps 1] [--detail 0|1]\n"
			"         [--exact-targets 0|1] [--csv FILE] [--db DIR] [--chunk 0]\n"
			"         [--past 2000] [--recall 0] [--dump-partitions FILE]\n");
	return 2;
}

static int hb_parse(int argc, char **argv, hb_opts_t *o)
{
	wl_params_default(&o->p);
	o->queries = "sweep";
	o->modes = "auto,adhoc,batches,graph,fgraph";
	o->per = 20;
	o->nq = 1000;
	o->k = 10;
	o->R = 32;
	o->L = 100;
	o->reps = 1;
	o->past = 2000;
	for (int i = 1; i + 1 < argc; i += 2) {
		const char *a = argv[i], *v = argv[i + 1];
		unsigned long x = strtoul(v, NULL, 10);
		if (!strcmp(a, "--n"))
			o->p.n = (uint32_t)x;
		else if (!strcmp(a, "--dim"))
			o->p.dim = (uint32_t)x;
		else if (!strcmp(a, "--clusters"))
			o->p.clusters = (uint32_t)x;
		else if (!strcmp(a, "--seed"))
			o->p.seed = x;
		else if (!strcmp(a, "--queries"))
			o->queries = v;
		else if (!strcmp(a, "--per"))
			o->per = (uint32_t)x;
		else if (!strcmp(a, "--nq"))
			o->nq = (uint32_t)x;
		else if (!strcmp(a, "--k"))
			o->k = (uint32_t)x;
		else if (!strcmp(a, "--window"))
			o->window = (uint32_t)x;
		else if (!strcmp(a, "--index-window"))
			o->index_window = (uint32_t)x;
		else if (!strcmp(a, "--R"))
			o->R = (uint32_t)x;
		else if (!strcmp(a, "--L"))
			o->L = (uint32_t)x;
		else if (!strcmp(a, "--reps"))
			o->reps = (uint32_t)x;
		else if (!strcmp(a, "--modes"))
			o->modes = v;
		else if (!strcmp(a, "--detail"))
			o->detail = (uint32_t)x;
		else if (!strcmp(a, "--exact-targets"))
			o->exact = (uint32_t)x;
		else if (!strcmp(a, "--db"))
			o->db = v;
		else if (!strcmp(a, "--csv"))
			o->csv = v;
		else if (!strcmp(a, "--chunk"))
			o->chunk = (uint32_t)x;
		else if (!strcmp(a, "--past"))
			o->past = (uint32_t)x;
		else if (!strcmp(a, "--recall"))
			o->recall = strtod(v, NULL);
		else if (!strcmp(a, "--dump-partitions"))
			o->dump = v;
		else
			return -1;
	}
	const char *why;
	if (argc % 2 == 0 || wl_params_check(&o->p, &why) || o->k == 0 || o->k > 64 ||
	    o->reps == 0 || (strcmp(o->queries, "sweep") && strcmp(o->queries, "future")))
		return -1;
	return 0;
}

/* ------------------------------------------------------------ loading */

/* Documents per write transaction while loading. */
#define HB_LOAD_BATCH 50000u

static int hb_load(vela_db_t *db, const hb_opts_t *o, const wl_data_t *d)
{
	vela_index_info_t info;
	vela_err_t err = {0};
	if (vela_index_info(db, "hyb", &info, &err) == 0 && info.num_docs == d->p.n)
		return 0; /* reused */
	vela_field_def_t f[WL_FIELDS];
	wl_fields(d, VELA_ALGO_GRAPH, f);
	f[WL_FIELDS - 1].graph_max_degree = o->R;
	f[WL_FIELDS - 1].graph_build_window = o->L;
	f[WL_FIELDS - 1].graph_search_window = o->index_window;
	const char *pre[] = {"doc:"};
	vela_index_def_t def = {.name = "hyb", .prefixes = pre, .n_prefixes = 1, .fields = f,
				.n_fields = WL_FIELDS};
	if (vela_index_create(db, &def, &err)) {
		fprintf(stderr, "create: %s\n", err.msg);
		return -1;
	}
	uint64_t t0 = vela_now_ns();
	/* One transaction per HB_LOAD_BATCH documents: LMDB caps the pages one
	 * transaction may dirty (about 512 MiB: one batch of 1M x 64 failed). */
	for (uint32_t i0 = 0; i0 < d->p.n; i0 += HB_LOAD_BATCH) {
		vela_batch_t *b;
		if (vela_batch_begin(db, &b, &err))
			return -1;
		for (uint32_t i = i0; i < d->p.n && i < i0 + HB_LOAD_BATCH; i++) {
			if (wl_doc_hset(b, d, i, &err)) {
				fprintf(stderr, "hset: %s\n", err.msg);
				vela_batch_abort(b);
				return -1;
			}
		}
		if (vela_batch_commit(b, &err)) {
			fprintf(stderr, "commit: %s\n", err.msg);
			return -1;
		}
	}
	fprintf(stderr, "loaded %u documents and built the graph (R %u, L %u) in %.1f s\n",
		d->p.n, o->R, o->L, (double)(vela_now_ns() - t0) * 1e-9);
	return 0;
}

/* ------------------------------------------------------------ queries */

static void hb_query_finish(const wl_data_t *d, const hb_opts_t *o, hb_query_t *h)
{
	double dist[64];
	h->got = wl_truth(d, &h->f, h->q, o->k, h->truth, dist, &h->matches);
	h->bucket = wl_bucket((double)h->matches / d->p.n);
	wl_filter_text(&h->f, h->text, sizeof(h->text));
}

/* The sweep: every bucket x every shape that reaches it, `per` each. */
static hb_query_t *hb_sweep(const wl_data_t *d, const hb_opts_t *o, uint32_t *nq)
{
	uint32_t cap = WL_BUCKETS * WL_SHAPES * o->per, n = 0;
	hb_query_t *qs = calloc(cap, sizeof(*qs));
	float *vecs = malloc((size_t)cap * d->p.dim * sizeof(float));
	if (qs == NULL || vecs == NULL)
		exit(1);
	for (int b = 0; b < WL_BUCKETS; b++)
		for (int s = 0; s < WL_SHAPES; s++)
			for (uint32_t i = 0; i < o->per; i++) {
				wl_rng_t r = wl_rng(d->p.seed, WL_S_USER,
						    ((uint64_t)b * WL_SHAPES + s) * 1000003u + i);
				hb_query_t *h = &qs[n];
				h->q = vecs + (size_t)n * d->p.dim;
				wl_query_vector(d, &r, h->q);
				double sel = o->exact ? wl_bucket_values[b] : wl_bucket_draw(&r, b);
				if (s == WL_ALL && b != WL_BUCKETS - 1)
					break;
				if (s == WL_ALL)
					sel = 1;
				if (wl_filter_make(d, (wl_shape_t)s, sel, h->q, &r, &h->f))
					break;
				h->shape = (wl_shape_t)s;
				hb_query_finish(d, o, h);
				n++;
			}
	*nq = n;
	return qs;
}

static hb_query_t *hb_future(const wl_data_t *d, const hb_opts_t *o, uint32_t *nq)
{
	wl_template_t *t;
	double *cdf = wl_zipf_cdf(d->p.templates, d->p.template_zipf);
	hb_query_t *qs = calloc(o->nq ? o->nq : 1, sizeof(*qs));
	float *vecs = malloc((size_t)(o->nq ? o->nq : 1) * d->p.dim * sizeof(float));
	if (cdf == NULL || qs == NULL || vecs == NULL || wl_templates_make(d, &t))
		exit(1);
	char path[4096] = "";
	FILE *fc = NULL;
	bool cached = false;
	if (o->db) { /* the exact answers are costly at 1M (35 s per 2,000): kept beside the db */
		snprintf(path, sizeof(path), "%s/truth-%016llx-k%u-q%u.bin", o->db,
			 (unsigned long long)vela_hash64(&d->p, sizeof(d->p)), o->k, o->nq);
		cached = (fc = fopen(path, "rb")) != NULL;
	}
	for (uint32_t i = 0; i < o->nq; i++) {
		qs[i].q = vecs + (size_t)i * d->p.dim;
		uint32_t ti = wl_workload_query(d, t, cdf, 1, i, qs[i].q, &qs[i].f);
		qs[i].shape = t[ti].shape;
		if (cached && fread(&qs[i].got, sizeof(qs[i].got), 1, fc) == 1 &&
		    fread(&qs[i].matches, sizeof(qs[i].matches), 1, fc) == 1 && qs[i].got <= o->k &&
		    fread(qs[i].truth, sizeof(uint32_t), qs[i].got, fc) == qs[i].got) {
			qs[i].bucket = wl_bucket((double)qs[i].matches / d->p.n);
			wl_filter_text(&qs[i].f, qs[i].text, sizeof(qs[i].text));
			continue;
		}
		if (cached) { /* short or damaged: recompute everything */
			fclose(fc);
			fc = NULL;
			cached = false;
			i = UINT32_MAX;
			continue;
		}
		hb_query_finish(d, o, &qs[i]);
	}
	if (fc)
		fclose(fc);
	if (!cached && path[0] && (fc = fopen(path, "wb")) != NULL) {
		for (uint32_t i = 0; i < o->nq; i++) {
			fwrite(&qs[i].got, sizeof(qs[i].got), 1, fc);
			fwrite(&qs[i].matches, sizeof(qs[i].matches), 1, fc);
			fwrite(qs[i].truth, sizeof(uint32_t), qs[i].got, fc);
		}
		fclose(fc);
	}
	free(t);
	free(cdf);
	*nq = o->nq;
	return qs;
}

/* ------------------------------------------------------------ running */

typedef struct hb_mode {
	const char *name;
	const char *attr;   /* appended inside the KNN clause */
	int force;          /* vela_search_req_t.force_plan */
} hb_mode_t;

static int hb_mode_parse(const char *name, hb_mode_t *m)
{
	static const hb_mode_t modes[] = {
		{"auto", "", VELA_PLAN_AUTO},
		{"adhoc", " HYBRID_POLICY ADHOC_BF", VELA_PLAN_AUTO},
		{"batches", " HYBRID_POLICY BATCHES", VELA_PLAN_AUTO},
		{"graph", "", VELA_PLAN_GRAPH},
		{"fgraph", "", VELA_PLAN_FILTERED_GRAPH},
		{"batch", "", VELA_PLAN_AUTO},
		{"partitions", "", VELA_PLAN_AUTO},
	};
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
		if (!strcmp(name, modes[i].name)) {
			*m = modes[i];
			return 0;
		}
	return -1;
}

static void hb_cell_add(hb_cell_t *c, double rec, double ns, const vela_result_t *r)
{
	c->n++;
	c->recall += rec;
	c->min_recall = rec < c->min_recall ? rec : c->min_recall;
	c->ns += ns;
	if (r->profile) {
		c->dist += r->profile->distances;
		c->stage_ns[0] += r->profile->parse_ns;
		c->stage_ns[1] += r->profile->filter_ns;
		c->stage_ns[2] += r->profile->search_ns;
		c->stage_ns[3] += r->profile->load_ns;
	}
	c->plans[hb_plan_index(r->plan)]++;
}

/* The query's text (with the mode's attributes) and its request. */
static void hb_request(const hb_opts_t *o, const hb_query_t *h, const hb_mode_t *m, char *text,
		       size_t cap, vela_kv_t *p, vela_search_req_t *req)
{
	int filtered = h->f.n > 0;
	char win[32] = "";
	if (o->window && !(filtered && strcmp(m->name, "adhoc") == 0))
		snprintf(win, sizeof(win), " EF_RUNTIME %u", o->window);
	/* policies only apply to hybrid queries (Redis refuses them on '*') */
	snprintf(text, cap, "(%s)=>[KNN %u @v $B%s%s]", h->text, o->k, filtered ? m->attr : "",
		 win);
	*p = (vela_kv_t){"B", 1, h->q, o->p.dim * sizeof(float)};
	*req = (vela_search_req_t){.index = "hyb", .query = text, .params = p, .n_params = 1,
				   .nocontent = true, .limit = o->k, .profile = true,
				   .force_plan = filtered ? m->force : VELA_PLAN_AUTO};
}

static double hb_recall(const hb_query_t *h, const vela_result_t *r)
{
	uint32_t found = 0;
	for (size_t j = 0; j < r->n_hits; j++) {
		uint32_t id = (uint32_t)strtoul(r->hits[j].key + 4, NULL, 10);
		for (uint32_t t = 0; t < h->got; t++)
			found += h->truth[t] == id;
	}
	return h->got ? (double)found / h->got : (r->n_hits == 0 ? 1.0 : 0.0);
}

static void hb_cells_reset(hb_cell_t *cells)
{
	memset(cells, 0, HB_CELLS * (1 + WL_SHAPES) * sizeof(*cells));
	for (int b = 0; b < HB_CELLS * (1 + WL_SHAPES); b++)
		cells[b].min_recall = 1;
}

static void hb_record(const hb_query_t *h, const hb_mode_t *m, const vela_result_t *r,
		      double ns, hb_cell_t *cells, FILE *csv)
{
	double rec = hb_recall(h, r);
	if (csv && r->profile)
		fprintf(csv, "%s,%s,%llu,%d,%s,%s,%.4f,%.0f,%llu,%llu,%llu\n", m->name,
			wl_shape_names[h->shape], (unsigned long long)h->matches, h->bucket,
			r->plan, r->profile->mode, rec, ns,
			(unsigned long long)r->profile->filter_ns,
			(unsigned long long)r->profile->search_ns,
			(unsigned long long)r->profile->distances);
	hb_cell_add(&cells[h->bucket + 1], rec, ns, r);
	hb_cell_add(&cells[HB_CELLS + (h->bucket + 1) * WL_SHAPES + h->shape], rec, ns, r);
}

/* One query at a time. cells: HB_CELLS per bucket, then HB_CELLS *
 * WL_SHAPES per (bucket, shape). Returns the total of the fastest runs. */
static double hb_run(vela_db_t *db, const hb_opts_t *o, hb_query_t *qs, uint32_t nq,
		     const hb_mode_t *m, hb_cell_t *cells, FILE *csv)
{
	hb_cells_reset(cells);
	double total = 0;
	for (uint32_t i = 0; i < nq; i++) {
		hb_query_t *h = &qs[i];
		char text[4300];
		vela_kv_t p;
		vela_search_req_t req;
		hb_request(o, h, m, text, sizeof(text), &p, &req);
		vela_result_t *r = NULL;
		vela_err_t err = {0};
		double ns = INFINITY; /* the fastest of the repetitions: the machine is shared */
		for (uint32_t rep = 0; rep < o->reps; rep++) {
			vela_result_t *x = NULL;
			uint64_t t0 = vela_now_ns();
			if (vela_search(db, &req, &x, &err)) {
				fprintf(stderr, "%s: %s\n", text, err.msg);
				exit(1);
			}
			double t = (double)(vela_now_ns() - t0);
			if (t < ns) { /* keep the fastest run's result and profile */
				ns = t;
				vela_result_free(r);
				r = x;
			} else {
				vela_result_free(x);
			}
		}
		total += ns;
		hb_record(h, m, r, ns, cells, csv);
		vela_result_free(r);
	}
	return total;
}

/* The queries idx[0..n) through vela_search_batch, --chunk at a time,
 * --reps times; the fastest run's results are recorded (each query gets
 * the run's time / n, so per-bucket cells add up to it). Returns its time. */
static double hb_batch(vela_db_t *db, const hb_opts_t *o, hb_query_t *qs, const uint32_t *idx,
		       uint32_t n, const hb_mode_t *m, hb_cell_t *cells, FILE *csv)
{
	char (*texts)[4300] = malloc((size_t)(n ? n : 1) * sizeof(*texts));
	vela_kv_t *prm = malloc((n ? n : 1) * sizeof(*prm));
	vela_search_req_t *reqs = malloc((n ? n : 1) * sizeof(*reqs));
	vela_result_t **best = calloc(n ? n : 1, sizeof(*best));
	vela_result_t **outs = calloc(n ? n : 1, sizeof(*outs));
	vela_err_t *errs = calloc(n ? n : 1, sizeof(*errs));
	if (!texts || !prm || !reqs || !best || !outs || !errs)
		exit(1);
	for (uint32_t i = 0; i < n; i++)
		hb_request(o, &qs[idx[i]], m, texts[i], sizeof(texts[i]), &prm[i], &reqs[i]);
	uint32_t chunk = o->chunk ? o->chunk : (n ? n : 1);
	double ns = INFINITY;
	for (uint32_t rep = 0; rep < o->reps; rep++) {
		uint64_t t0 = vela_now_ns();
		for (uint32_t s = 0; s < n; s += chunk)
			if (vela_search_batch(db, reqs + s, n - s < chunk ? n - s : chunk, outs + s,
					      errs + s)) {
				fprintf(stderr, "batch: %s\n", errs[s].msg);
				exit(1);
			}
		double t = (double)(vela_now_ns() - t0);
		vela_result_t **drop = outs; /* this run's results, unless fastest */
		if (t < ns) {
			ns = t;
			drop = best;
			best = outs;
			outs = drop;
		}
		for (uint32_t i = 0; i < n; i++) {
			vela_result_free(drop[i]);
			drop[i] = NULL;
		}
	}
	for (uint32_t i = 0; i < n; i++) {
		hb_record(&qs[idx[i]], m, best[i], ns / n, cells, csv);
		vela_result_free(best[i]);
	}
	free(texts);
	free(prm);
	free(reqs);
	free(best);
	free(outs);
	free(errs);
	return ns;
}

/* batch mode: the whole set once (its total), then each bucket's queries
 * as their own batch (the per-bucket cells). */
static double hb_run_batch(vela_db_t *db, const hb_opts_t *o, hb_query_t *qs, uint32_t nq,
			   const hb_mode_t *m, hb_cell_t *cells, FILE *csv)
{
	uint32_t *idx = malloc((nq ? nq : 1) * sizeof(uint32_t));
	hb_cell_t *whole = malloc(HB_CELLS * (1 + WL_SHAPES) * sizeof(*whole));
	if (idx == NULL || whole == NULL)
		exit(1);
	for (uint32_t i = 0; i < nq; i++)
		idx[i] = i;
	hb_cells_reset(whole);
	double total = hb_batch(db, o, qs, idx, nq, m, whole, NULL);
	hb_cells_reset(cells);
	for (int b = -1; b < WL_BUCKETS; b++) {
		uint32_t n = 0;
		for (uint32_t i = 0; i < nq; i++)
			if (qs[i].bucket == b)
				idx[n++] = i;
		if (n)
			hb_batch(db, o, qs, idx, n, m, cells, csv);
	}
	free(idx);
	free(whole);
	return total;
}

static const char *const hb_bucket_names[] = {"empty", "1e-4", "1e-3", "1e-2",
					       "1e-1",  "0.5",  "1"};

static void hb_row(const char *mode, const char *bucket, const char *shape, const hb_cell_t *c)
{
	char plans[160] = "";
	size_t len = 0;
	for (int p = 0; p < HB_PLANS; p++)
		if (c->plans[p])
			len += (size_t)snprintf(plans + len, sizeof(plans) - len, "%s%s %u",
						len ? ", " : "", hb_plan_names[p], c->plans[p]);
	double us = 1e-3 / c->n;
	printf("| %s | %s | %s | %u | %.4f | %.2f | %.0f | %.0f | %.0f / %.0f / %.0f / %.0f | %s |\n",
	       mode, bucket, shape, c->n, c->recall / c->n, c->min_recall, c->n / (c->ns * 1e-9),
	       (double)c->dist / c->n, c->stage_ns[0] * us, c->stage_ns[1] * us,
	       c->stage_ns[2] * us, c->stage_ns[3] * us, plans);
}

static void hb_print(const hb_opts_t *o, const char *mode, const hb_cell_t *cells)
{
	printf("| mode | bucket | filters | queries | recall@%u mean | min | QPS | distances/query "
	       "| µs parse / filter / search / load | plans |\n",
	       o->k);
	printf("|---|---|---|---|---|---|---|---|---|---|\n");
	for (int b = 0; b < HB_CELLS; b++) {
		if (cells[b].n)
			hb_row(mode, hb_bucket_names[b], "all", &cells[b]);
		for (int s = 0; o->detail && s < WL_SHAPES; s++)
			if (cells[HB_CELLS + b * WL_SHAPES + s].n)
				hb_row(mode, hb_bucket_names[b], wl_shape_names[s],
				       &cells[HB_CELLS + b * WL_SHAPES + s]);
	}
	fflush(stdout);
}

/* partitions: a layout learned from the generator's past workload alone
 * (--past queries; the log is emptied first, so the measured queries run
 * by earlier modes do not leak into it), then the batch with it. */
static int hb_train(vela_db_t *db, const hb_opts_t *o, const wl_data_t *d)
{
	wl_template_t *t;
	double *cdf = wl_zipf_cdf(d->p.templates, d->p.template_zipf);
	float *q = malloc(d->p.dim * sizeof(float));
	char ft[4000], text[4096];
	vela_err_t err = {0};
	if (cdf == NULL || q == NULL || wl_templates_make(d, &t))
		exit(1);
	vela_layout_release(db);
	uint64_t t0 = vela_now_ns();
	int rc = 0;
	for (uint32_t i = 0; rc == 0 && i < o->past; i++) {
		wl_filter_t f;
		wl_workload_query(d, t, cdf, 0, i, q, &f);
		wl_filter_text(&f, ft, sizeof(ft));
		snprintf(text, sizeof(text), "(%s)=>[KNN %u @v $B]", ft, o->k);
		vela_kv_t prm = {"B", 1, q, d->p.dim * sizeof(float)};
		rc = vela_workload_record(db, "hyb", text, 0, &prm, 1, &err);
	}
	uint64_t t1 = vela_now_ns();
	vela_layout_info_t li;
	vela_layout_opts_t lo = {.recall = (float)o->recall};
	if (rc == 0 && (rc = vela_layout_build(db, "hyb", "v", &lo, &err)) == 0)
		rc = vela_layout_info(db, "hyb", "v", &li, &err);
	if (rc == 0)
		printf("layout from %u past queries (%llu shapes; recorded in %.2f s): %u leaves, "
		       "%u clusters, rows per cluster %llu / %llu / %llu, %.1f MB, built in %.2f s, "
		       "recall target %.2f\n\n",
		       o->past, (unsigned long long)li.workload_shapes, (t1 - t0) * 1e-9, li.leaves,
		       li.clusters, (unsigned long long)li.min_rows,
		       (unsigned long long)li.median_rows, (unsigned long long)li.max_rows,
		       li.bytes / 1e6, li.build_ns * 1e-9, li.recall);
	else
		fprintf(stderr, "layout: %s\n", err.msg);
	free(t);
	free(cdf);
	free(q);
	return rc;
}

/* --dump-partitions: the whole set's partitions batch into o->dump. */
static int hb_dump(vela_db_t *db, const hb_opts_t *o, const hb_query_t *qs, uint32_t nq,
		   const hb_mode_t *m)
{
	char (*texts)[4300] = malloc((size_t)(nq ? nq : 1) * sizeof(*texts));
	vela_kv_t *prm = malloc((nq ? nq : 1) * sizeof(*prm));
	vela_search_req_t *reqs = malloc((nq ? nq : 1) * sizeof(*reqs));
	if (!texts || !prm || !reqs)
		exit(1);
	for (uint32_t i = 0; i < nq; i++)
		hb_request(o, &qs[i], m, texts[i], sizeof(texts[i]), &prm[i], &reqs[i]);
	vela_err_t err = {0};
	uint32_t dumped = 0;
	uint64_t t0 = vela_now_ns();
	int rc = vela_layout_dump_scan(db, reqs, nq, o->dump, &dumped, &err);
	if (rc)
		fprintf(stderr, "dump-partitions: %s\n", err.msg);
	else
		printf("partitions batch of %u of the %u queries recorded in %s (%.2f s)\n\n",
		       dumped, nq, o->dump, (vela_now_ns() - t0) * 1e-9);
	free(texts);
	free(prm);
	free(reqs);
	return rc;
}

/* Every mode's time for the whole set, and its ratio to batch's. */
static void hb_summary(const char *const *names, const double *totals, int nm, uint32_t nq)
{
	double batch = 0;
	for (int i = 0; i < nm; i++)
		if (!strcmp(names[i], "batch"))
			batch = totals[i];
	printf("| mode | %u queries in (s) | QPS | time / batch's |\n|---|---|---|---|\n", nq);
	for (int i = 0; i < nm; i++)
		printf("| %s | %.3f | %.0f | %s%.2fx |\n", names[i], totals[i] * 1e-9,
		       nq / (totals[i] * 1e-9), batch > 0 ? "" : "(no batch) ",
		       batch > 0 ? totals[i] / batch : 0.0);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	hb_opts_t o = {0};
	if (hb_parse(argc, argv, &o))
		return hb_usage();
	wl_data_t d;
	if (wl_data_make(&o.p, &d))
		return 1;
	char tmp[] = "/tmp/vela-hybrid-XXXXXX";
	const char *dir = o.db;
	if (dir == NULL && (dir = mkdtemp(tmp)) == NULL)
		return 1;
	if (o.db && mkdir(o.db, 0777) && errno != EEXIST)
		return 1;
	vela_db_t *db;
	vela_err_t err = {0};
	vela_db_options_t dopt = {.map_size = (size_t)o.p.n * (o.p.dim * 4 + 512) * 4 + (64u << 20),
				  .flags = VELA_OPEN_NOSYNC};
	if (vela_db_open(dir, &dopt, &db, &err) || hb_load(db, &o, &d)) {
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	uint32_t nq;
	uint64_t t0 = vela_now_ns();
	hb_query_t *qs = strcmp(o.queries, "sweep") ? hb_future(&d, &o, &nq) : hb_sweep(&d, &o, &nq);
	fprintf(stderr, "%u queries (%s) with ground truth in %.1f s\n", nq, o.queries,
		(double)(vela_now_ns() - t0) * 1e-9);
	printf("n %u, dim %u, clusters %u, k %u, window %u, R %u, L %u, queries %s (%u)\n\n",
	       o.p.n, o.p.dim, o.p.clusters, o.k, o.window, o.R, o.L, o.queries, nq);
	char modes[256];
	snprintf(modes, sizeof(modes), "%s", o.modes);
	FILE *csv = o.csv ? fopen(o.csv, "w") : NULL;
	if (csv)
		fprintf(csv, "mode,shape,matches,bucket,plan,vector_mode,recall,ns,filter_ns,"
			     "search_ns,distances\n");
	const char *names[16];
	double totals[16];
	int nm = 0;
	for (char *save, *m = strtok_r(modes, ",", &save); m && nm < 16;
	     m = strtok_r(NULL, ",", &save)) {
		hb_mode_t mode;
		hb_cell_t cells[HB_CELLS * (1 + WL_SHAPES)];
		if (hb_mode_parse(m, &mode))
			return hb_usage();
		bool part = !strcmp(m, "partitions");
		bool batch = !strcmp(m, "batch") || part;
		if (part && hb_train(db, &o, &d))
			return 1;
		if (part && o.dump && hb_dump(db, &o, qs, nq, &mode))
			return 1;
		names[nm] = m;
		totals[nm++] = batch ? hb_run_batch(db, &o, qs, nq, &mode, cells, csv)
				     : hb_run(db, &o, qs, nq, &mode, cells, csv);
		hb_print(&o, m, cells);
		printf("\n");
		if (part)
			vela_layout_release(db); /* the modes after it run without */
	}
	hb_summary(names, totals, nm, nq);
	if (csv)
		fclose(csv);
	vela_layout_release(db);
	vela_db_close(db);
	if (o.db == NULL) {
		char cmd[128];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", dir);
	}
	free(qs[0].q);
	free(qs);
	wl_data_free(&d);
	return 0;
}
