/* bench_workload: write a generated hybrid-query workload (bench/workload_gen.h)
 * as files that `vela import` and `vela batch` read, with exact filtered
 * ground truth; optionally create the matching (empty) index in-process.
 *
 * Usage: bench_workload --out DIR [--n 50000] [--dim 64] [--clusters 64]
 *          [--seed 42] [--past 1000] [--future 1000] [--k 10]
 *          [--templates 64] [--template-zipf 1] [--cat-values 1000]
 *          [--cat-zipf 1] [--tag-vocab 2000] [--tag-zipf 1] [--tags-max 4]
 *          [--clu-noise 0.1] [--centre-sd 1] [--point-sd 0.5]
 *          [--threads N] [--prefix doc:] [--index hyb]
 *          [--create DBDIR [--algo graph|flat] [--window W]]
 *
 * Writes into DIR (docs/workloads.md has the formats and the commands):
 *   base.jsonl            one document per line: key, vector, cat, num, tags, clu, pos
 *   base.fvecs            the same vectors (row i = key <prefix><i>)
 *   queries_past.jsonl    the past workload (train), vela batch format plus
 *   queries_future.jsonl  template, shape, target, matches, selectivity, bucket
 *   gt_past.jsonl         {"id", "keys", "dists"}: exact top-k in double
 *   gt_future.jsonl
 *   schema.txt            the FT.CREATE command of the index (--window: its EF_RUNTIME)
 * and, for peers that do not parse the filters (bench/hybrid_peer.py; all
 * little-endian, row i = query i of queries_future.jsonl, docid = document
 * number = row of base.fvecs = key <prefix><docid>):
 *   future.fvecs          the future query vectors (fvecs: int32 dim, dim floats)
 *   future.gt.ivecs       the exact filtered top-k of each future query (ivecs:
 *                         int32 k, k int32 docids ascending by (distance, docid),
 *                         the same as gt_future.jsonl; -1 pads a row when the
 *                         filter matches fewer than k documents)
 *   future.matches.bitmap each future query's exact match set: ceil(n / 8) bytes
 *                         per query, document i is bit (i & 7) (LSB first) of
 *                         byte i >> 3 (faiss IDSelectorBitmap's order; numpy:
 *                         unpackbits(bitorder="little")); its popcount is the
 *                         query's "matches". --matches 0 skips these three files.
 * and a summary (queries per selectivity bucket and shape) on stderr. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench/workload_gen.h"
#include "common/common.h"
#include "vela/vela.h"

#define WL_QUERIES_DEFAULT 1000u
#define WL_QUERIES_MAX 10000000u
#define WL_K_DEFAULT 10u
#define WL_K_MAX 1000u
#define WL_THREADS_MAX 256u

typedef struct opts {
	wl_params_t p;
	const char *out, *prefix, *index, *create, *algo;
	uint32_t past, future, k, threads, window;
	uint32_t matches; /* write future.fvecs, future.gt.ivecs, future.matches.bitmap */
} opts_t;

static int usage(void)
{
	fprintf(stderr,
		"usage: bench_workload --out DIR [--n 50000] [--dim 64] [--clusters 64] [--seed 42]\n"
		"         [--past 1000] [--future 1000] [--k 10] [--templates 64]\n"
		"         [--template-zipf 1] [--cat-values 1000] [--cat-zipf 1]\n"
		"         [--tag-vocab 2000] [--tag-zipf 1] [--tags-max 4] [--clu-noise 0.1]\n"
		"         [--centre-sd 1] [--point-sd 0.5] [--threads N] [--prefix doc:]\n"
		"         [--index hyb] [--create DBDIR [--algo graph|flat] [--window W]]\n"
		"         [--matches 0|1]\n");
	return 2;
}

static int num_arg(const char *name, const char *v, double lo, double hi, double *out)
{
	char *end;
	errno = 0;
	double x = strtod(v, &end);
	if (errno || end == v || *end || !(x >= lo && x <= hi)) {
		fprintf(stderr, "bench_workload: %s: '%s' is not a number in [%g, %g]\n", name, v,
			lo, hi);
		return -1;
	}
	*out = x;
	return 0;
}

static int u32_arg(const char *name, const char *v, uint32_t lo, uint32_t hi, uint32_t *out)
{
	double x;
	if (num_arg(name, v, lo, hi, &x) || x != (uint32_t)x) {
		fprintf(stderr, "bench_workload: %s wants an integer\n", name);
		return -1;
	}
	*out = (uint32_t)x;
	return 0;
}

static int parse(int argc, char **argv, opts_t *o)
{
	wl_params_default(&o->p);
	o->prefix = "doc:";
	o->index = "hyb";
	o->algo = "graph";
	o->past = o->future = WL_QUERIES_DEFAULT;
	o->k = WL_K_DEFAULT;
	o->matches = 1;
	long nc = sysconf(_SC_NPROCESSORS_ONLN);
	o->threads = nc < 1 ? 1 : nc > (long)WL_THREADS_MAX ? WL_THREADS_MAX : (uint32_t)nc;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		double x;
		int rc = 0;
		if (v == NULL)
			return usage();
		if (!strcmp(a, "--out"))
			o->out = v;
		else if (!strcmp(a, "--prefix"))
			o->prefix = v;
		else if (!strcmp(a, "--index"))
			o->index = v;
		else if (!strcmp(a, "--create"))
			o->create = v;
		else if (!strcmp(a, "--algo"))
			o->algo = v;
		else if (!strcmp(a, "--n"))
			rc = u32_arg(a, v, WL_N_MIN, WL_N_MAX, &o->p.n);
		else if (!strcmp(a, "--dim"))
			rc = u32_arg(a, v, WL_DIM_MIN, WL_DIM_MAX, &o->p.dim);
		else if (!strcmp(a, "--clusters"))
			rc = u32_arg(a, v, WL_CLUSTERS_MIN, WL_CLUSTERS_MAX, &o->p.clusters);
		else if (!strcmp(a, "--seed")) {
			if ((rc = num_arg(a, v, 0, 1e18, &x)) == 0)
				o->p.seed = (uint64_t)x;
		}
		else if (!strcmp(a, "--past"))
			rc = u32_arg(a, v, 0, WL_QUERIES_MAX, &o->past);
		else if (!strcmp(a, "--future"))
			rc = u32_arg(a, v, 0, WL_QUERIES_MAX, &o->future);
		else if (!strcmp(a, "--k"))
			rc = u32_arg(a, v, 1, WL_K_MAX, &o->k);
		else if (!strcmp(a, "--threads"))
			rc = u32_arg(a, v, 1, WL_THREADS_MAX, &o->threads);
		else if (!strcmp(a, "--window"))
			rc = u32_arg(a, v, 1, 100000, &o->window);
		else if (!strcmp(a, "--matches"))
			rc = u32_arg(a, v, 0, 1, &o->matches);
		else if (!strcmp(a, "--templates"))
			rc = u32_arg(a, v, WL_TEMPLATES_MIN, WL_TEMPLATES_MAX, &o->p.templates);
		else if (!strcmp(a, "--template-zipf"))
			rc = num_arg(a, v, WL_ZIPF_MIN, WL_ZIPF_MAX, &o->p.template_zipf);
		else if (!strcmp(a, "--cat-values"))
			rc = u32_arg(a, v, WL_CAT_VALUES_MIN, WL_CAT_VALUES_MAX, &o->p.cat_values);
		else if (!strcmp(a, "--cat-zipf"))
			rc = num_arg(a, v, WL_ZIPF_MIN, WL_ZIPF_MAX, &o->p.cat_zipf);
		else if (!strcmp(a, "--tag-vocab"))
			rc = u32_arg(a, v, WL_TAG_VOCAB_MIN, WL_TAG_VOCAB_MAX, &o->p.tag_vocab);
		else if (!strcmp(a, "--tag-zipf"))
			rc = num_arg(a, v, WL_ZIPF_MIN, WL_ZIPF_MAX, &o->p.tag_zipf);
		else if (!strcmp(a, "--tags-max"))
			rc = u32_arg(a, v, WL_TAGS_MAX_MIN, WL_TAGS_MAX_MAX, &o->p.tags_max);
		else if (!strcmp(a, "--clu-noise"))
			rc = num_arg(a, v, 0, 1, &o->p.clu_noise);
		else if (!strcmp(a, "--centre-sd"))
			rc = num_arg(a, v, 0, 1e6, &o->p.centre_sd);
		else if (!strcmp(a, "--point-sd"))
			rc = num_arg(a, v, 1e-9, 1e6, &o->p.point_sd);
		else
			return usage();
		if (rc)
			return 2;
		i++;
	}
	const char *why;
	if (o->out == NULL)
		return usage();
	if (wl_params_check(&o->p, &why)) {
		fprintf(stderr, "bench_workload: %s\n", why);
		return 2;
	}
	if (strcmp(o->algo, "graph") && strcmp(o->algo, "flat"))
		return usage();
	return 0;
}

/* ------------------------------------------------------------ files */

static FILE *out_open(const opts_t *o, const char *name)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", o->out, name);
	FILE *f = fopen(path, "w");
	if (f == NULL)
		fprintf(stderr, "bench_workload: %s: %s\n", path, strerror(errno));
	return f;
}

static void put_vector(FILE *f, const float *v, uint32_t dim)
{
	fputc('[', f);
	for (uint32_t j = 0; j < dim; j++)
		fprintf(f, "%s%.9g", j ? "," : "", (double)v[j]);
	fputc(']', f);
}

static int write_base(const opts_t *o, const wl_data_t *d)
{
	FILE *f = out_open(o, "base.jsonl"), *fv = out_open(o, "base.fvecs");
	if (f == NULL || fv == NULL) {
		if (f)
			fclose(f);
		if (fv)
			fclose(fv);
		return -1;
	}
	int32_t dim = (int32_t)d->p.dim;
	for (uint32_t i = 0; i < d->p.n; i++) {
		const float *v = d->vecs + (size_t)i * d->p.dim;
		fprintf(f, "{\"key\":\"%s%u\",\"vector\":", o->prefix, i);
		put_vector(f, v, d->p.dim);
		fprintf(f, ",\"cat\":\"k%u\",\"num\":%.17g,\"tags\":[", d->cat[i], d->num[i]);
		for (uint32_t t = 0; t < d->ntags[i]; t++)
			fprintf(f, "%s\"t%u\"", t ? "," : "", d->tags[(size_t)i * d->p.tags_max + t]);
		fprintf(f, "],\"clu\":\"g%u\",\"pos\":%.17g}\n", d->clu[i], d->pos[i]);
		fwrite(&dim, 4, 1, fv);
		fwrite(v, sizeof(float), d->p.dim, fv);
	}
	int bad = ferror(f) || ferror(fv);
	bad |= fclose(f) != 0;
	bad |= fclose(fv) != 0;
	if (bad)
		fprintf(stderr, "bench_workload: cannot write the base files\n");
	return bad ? -1 : 0;
}

static int write_schema(const opts_t *o, const wl_data_t *d)
{
	FILE *f = out_open(o, "schema.txt");
	if (f == NULL)
		return -1;
	bool graph = strcmp(o->algo, "graph") == 0;
	fprintf(f, "FT.CREATE %s ON HASH PREFIX 1 %s SCHEMA cat TAG tags TAG clu TAG num NUMERIC "
		   "pos NUMERIC v VECTOR %s %d TYPE FLOAT32 DIM %u DISTANCE_METRIC L2",
		o->index, o->prefix, graph ? "HNSW" : "FLAT", graph && o->window ? 8 : 6, d->p.dim);
	if (graph && o->window)
		fprintf(f, " EF_RUNTIME %u", o->window);
	fputc('\n', f);
	return fclose(f) ? -1 : 0;
}

/* ------------------------------------------------------------ queries + truth */

typedef struct wq {
	float *q;
	wl_filter_t f;
	uint32_t tmpl;
	uint32_t *ids;
	double *dists;
	uint32_t got;
	uint64_t matches;
	uint8_t *bits;     /* the match bitmap (future.matches.bitmap), or NULL */
	uint64_t bits_set; /* its popcount: must equal matches */
} wq_t;

typedef struct gt_job {
	const wl_data_t *d;
	wq_t *qs;
	uint32_t n, k, next;
	pthread_mutex_t mu;
} gt_job_t;

static void *gt_worker(void *arg)
{
	gt_job_t *j = arg;
	for (;;) {
		pthread_mutex_lock(&j->mu);
		uint32_t i = j->next++;
		pthread_mutex_unlock(&j->mu);
		if (i >= j->n)
			return NULL;
		wq_t *w = &j->qs[i];
		w->got = wl_truth(j->d, &w->f, w->q, j->k, w->ids, w->dists, &w->matches);
		for (uint32_t x = 0; w->bits && x < j->d->p.n; x++)
			if (wl_match(j->d, &w->f, x)) {
				w->bits[x >> 3] |= (uint8_t)(1u << (x & 7));
				w->bits_set++;
			}
	}
}

/* future.fvecs, future.gt.ivecs, future.matches.bitmap (the header comment). */
static int write_peer_files(const opts_t *o, const wl_data_t *d, const wq_t *qs, uint32_t nq,
			    const uint8_t *bits, size_t row)
{
	FILE *fv = out_open(o, "future.fvecs"), *fg = out_open(o, "future.gt.ivecs");
	FILE *fm = out_open(o, "future.matches.bitmap");
	int bad = fv == NULL || fg == NULL || fm == NULL;
	int32_t dim = (int32_t)d->p.dim, k = (int32_t)o->k;
	for (uint32_t i = 0; !bad && i < nq; i++) {
		const wq_t *w = &qs[i];
		if (w->bits_set != w->matches) {
			fprintf(stderr, "bench_workload: query %u: bitmap %llu != %llu matches\n", i,
				(unsigned long long)w->bits_set, (unsigned long long)w->matches);
			bad = 1;
			break;
		}
		fwrite(&dim, 4, 1, fv);
		fwrite(w->q, sizeof(float), d->p.dim, fv);
		fwrite(&k, 4, 1, fg);
		for (uint32_t j = 0; j < o->k; j++) {
			int32_t id = j < w->got ? (int32_t)w->ids[j] : -1;
			fwrite(&id, 4, 1, fg);
		}
	}
	if (!bad && nq && fwrite(bits, row, nq, fm) != nq)
		bad = 1;
	if (fv)
		bad |= ferror(fv) || fclose(fv) != 0;
	if (fg)
		bad |= ferror(fg) || fclose(fg) != 0;
	if (fm)
		bad |= ferror(fm) || fclose(fm) != 0;
	if (bad)
		fprintf(stderr, "bench_workload: cannot write the future peer files\n");
	return bad ? -1 : 0;
}

static const char *bucket_name(int b)
{
	static const char *const names[] = {"1e-4", "1e-3", "1e-2", "1e-1", "0.5", "1"};
	return b < 0 ? "empty" : names[b];
}

static int write_workload(const opts_t *o, const wl_data_t *d, const wl_template_t *t,
			  const double *cdf, int future, uint32_t nq)
{
	wq_t *qs = calloc(nq ? nq : 1, sizeof(*qs));
	uint32_t dim = d->p.dim, k = o->k;
	float *vecs = malloc((size_t)(nq ? nq : 1) * dim * sizeof(float));
	uint32_t *ids = malloc((size_t)(nq ? nq : 1) * k * sizeof(uint32_t));
	double *dists = malloc((size_t)(nq ? nq : 1) * k * sizeof(double));
	char *text = malloc(65536);
	int rc = qs && vecs && ids && dists && text ? 0 : -1;
	size_t row = ((size_t)d->p.n + 7) / 8;
	uint8_t *bits = NULL;
	if (rc == 0 && future && o->matches && nq &&
	    (bits = calloc(nq, row)) == NULL) {
		fprintf(stderr, "bench_workload: no memory for %u x %zu bytes of match bitmaps "
				"(--matches 0 skips them)\n", nq, row);
		rc = -1;
	}
	for (uint32_t i = 0; rc == 0 && i < nq; i++) {
		qs[i].q = vecs + (size_t)i * dim;
		qs[i].ids = ids + (size_t)i * k;
		qs[i].dists = dists + (size_t)i * k;
		qs[i].tmpl = wl_workload_query(d, t, cdf, future, i, qs[i].q, &qs[i].f);
		qs[i].bits = bits ? bits + (size_t)i * row : NULL;
	}
	gt_job_t job = {.d = d, .qs = qs, .n = nq, .k = k};
	pthread_mutex_init(&job.mu, NULL);
	pthread_t th[WL_THREADS_MAX];
	uint32_t nt = 0;
	for (; rc == 0 && nt < o->threads; nt++)
		if (pthread_create(&th[nt], NULL, gt_worker, &job))
			break;
	if (rc == 0 && nt == 0)
		gt_worker(&job);
	for (uint32_t i = 0; i < nt; i++)
		pthread_join(th[i], NULL);
	pthread_mutex_destroy(&job.mu);
	const char *tag = future ? "future" : "past";
	char name[64];
	snprintf(name, sizeof(name), "queries_%s.jsonl", tag);
	FILE *fq = rc ? NULL : out_open(o, name);
	snprintf(name, sizeof(name), "gt_%s.jsonl", tag);
	FILE *fg = rc ? NULL : out_open(o, name);
	uint32_t per[WL_BUCKETS + 1] = {0}, shapes[WL_BUCKETS + 1][WL_SHAPES];
	memset(shapes, 0, sizeof(shapes));
	rc = fq && fg ? 0 : -1;
	for (uint32_t i = 0; rc == 0 && i < nq; i++) {
		const wq_t *w = &qs[i];
		double s = (double)w->matches / d->p.n;
		int b = wl_bucket(s);
		per[b + 1]++;
		shapes[b + 1][t[w->tmpl].shape]++;
		wl_filter_text(&w->f, text, 65536);
		fprintf(fq, "{\"id\":\"%c%u\",\"filter\":\"%s\",\"k\":%u,\"vector\":", tag[0], i,
			text, k);
		put_vector(fq, w->q, dim);
		fprintf(fq, ",\"template\":%u,\"shape\":\"%s\",\"target\":%.6g,\"matches\":%llu,"
			    "\"selectivity\":%.6g,\"bucket\":\"%s\"}\n",
			w->tmpl, wl_shape_names[t[w->tmpl].shape], t[w->tmpl].s,
			(unsigned long long)w->matches, s, bucket_name(b));
		fprintf(fg, "{\"id\":\"%c%u\",\"keys\":[", tag[0], i);
		for (uint32_t j = 0; j < w->got; j++)
			fprintf(fg, "%s\"%s%u\"", j ? "," : "", o->prefix, w->ids[j]);
		fprintf(fg, "],\"dists\":[");
		for (uint32_t j = 0; j < w->got; j++)
			fprintf(fg, "%s%.17g", j ? "," : "", w->dists[j]);
		fprintf(fg, "]}\n");
	}
	if (fq && fclose(fq))
		rc = -1;
	if (fg && fclose(fg))
		rc = -1;
	if (rc == 0 && bits)
		rc = write_peer_files(o, d, qs, nq, bits, row);
	if (rc == 0) {
		fprintf(stderr, "%s workload: %u queries; per selectivity bucket:\n", tag, nq);
		for (int b = -1; b < WL_BUCKETS; b++) {
			if (per[b + 1] == 0)
				continue;
			fprintf(stderr, "  %-5s %6u  (", bucket_name(b), per[b + 1]);
			for (int s = 0, first = 1; s < WL_SHAPES; s++)
				if (shapes[b + 1][s]) {
					fprintf(stderr, "%s%s %u", first ? "" : ", ",
						wl_shape_names[s], shapes[b + 1][s]);
					first = 0;
				}
			fprintf(stderr, ")\n");
		}
	} else {
		fprintf(stderr, "bench_workload: cannot write the %s workload\n", tag);
	}
	free(qs);
	free(vecs);
	free(ids);
	free(dists);
	free(text);
	free(bits);
	return rc;
}

/* ------------------------------------------------------------ --create */

static int create_index(const opts_t *o, const wl_data_t *d)
{
	vela_db_t *db;
	vela_err_t err = {0};
	if (vela_db_open(o->create, NULL, &db, &err)) {
		fprintf(stderr, "bench_workload: %s: %s\n", o->create, err.msg);
		return -1;
	}
	vela_field_def_t f[WL_FIELDS];
	wl_fields(d, strcmp(o->algo, "graph") ? VELA_ALGO_FLAT : VELA_ALGO_GRAPH, f);
	f[WL_FIELDS - 1].graph_search_window = o->window;
	const char *pre[] = {o->prefix};
	vela_index_def_t def = {.name = o->index, .prefixes = pre, .n_prefixes = 1, .fields = f,
				.n_fields = WL_FIELDS};
	int rc = vela_index_create(db, &def, &err);
	if (rc)
		fprintf(stderr, "bench_workload: create %s: %s\n", o->index, err.msg);
	vela_db_close(db);
	return rc ? -1 : 0;
}

int main(int argc, char **argv)
{
	opts_t o = {0};
	int rc = parse(argc, argv, &o);
	if (rc)
		return rc;
	if (mkdir(o.out, 0777) && errno != EEXIST) {
		fprintf(stderr, "bench_workload: %s: %s\n", o.out, strerror(errno));
		return 1;
	}
	uint64_t t0 = vela_now_ns();
	wl_data_t d;
	wl_template_t *t = NULL;
	double *cdf = NULL;
	if (wl_data_make(&o.p, &d) || wl_templates_make(&d, &t) ||
	    (cdf = wl_zipf_cdf(o.p.templates, o.p.template_zipf)) == NULL) {
		fprintf(stderr, "bench_workload: out of memory\n");
		return 1;
	}
	fprintf(stderr, "generated %u x %u vectors in %.2f s\n", o.p.n, o.p.dim,
		(double)(vela_now_ns() - t0) * 1e-9);
	rc = write_base(&o, &d) || write_schema(&o, &d) ||
	     write_workload(&o, &d, t, cdf, 0, o.past) ||
	     write_workload(&o, &d, t, cdf, 1, o.future) || (o.create && create_index(&o, &d));
	fprintf(stderr, "%s in %.2f s\n", rc ? "failed" : "done",
		(double)(vela_now_ns() - t0) * 1e-9);
	free(cdf);
	free(t);
	wl_data_free(&d);
	return rc ? 1 : 0;
}
