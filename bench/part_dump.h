/* part_dump.h: the reader of a recorded partitions batch (the format of
 * index/index.h part_search_plan_dump, written by vela_layout_dump_scan /
 * bench_hybrid --dump-partitions) and what both replays share: the merge of
 * a cluster's hits into each query's top k and the check against the
 * engine's recorded answers. Plain C and libc only, header-only, so that
 * bench/part_replay.c (the CPU backend), gpu/bench/part_replay_gpu.c (built
 * on a bare GPU host with CUDA + libc) and tests/unit/test_index_partreplay.c
 * all read the file with the same code. docs/gpu.md, "Partition scans".
 *
 * Ownership: pd_load fills a pd_t that owns every array (pd_free). The
 * reader trusts nothing: each count is checked against the bytes left
 * before anything is allocated for it. */
#ifndef VELA_BENCH_PART_DUMP_H
#define VELA_BENCH_PART_DUMP_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PD_MAGIC 0x44535056u /* "VPSD" */
#define PD_VERSION 1u
#define PD_FULL UINT32_MAX /* a pair whose query takes every row */
#define PD_DIM_MAX 16384u
#define PD_K_MAX 65536u

/* One (cluster, query) pair: the query's index and its filter's rows of the
 * cluster (nf of them, ascending), or nf = PD_FULL (rows NULL). */
typedef struct pd_pair {
	uint32_t q, nf;
	uint32_t *rows;
} pd_pair_t;

/* One scanned cluster: n rows (n x dim F32, 64-byte aligned), their docids
 * and |x|^2, the norm bound the engine passes, m pairs; kmax = the largest
 * k of its queries (the k of its one kNN call). */
typedef struct pd_cluster {
	uint32_t id, n, m, kmax;
	float norm_max;
	uint32_t *docids;
	float *norms, *rows;
	pd_pair_t *pairs;
} pd_cluster_t;

/* A hit as the engine's vela_hit_t lays it out. */
typedef struct pd_hit {
	float dist;
	uint32_t docid;
} pd_hit_t;

typedef struct pd {
	uint32_t dim, metric, type, enc, nq, n_cl, kmax;
	uint64_t n_pairs, full_pairs, filtered_rows, pair_rows, rows;
	uint32_t *k;     /* nq */
	float *q;        /* nq x dim */
	pd_cluster_t *cl;
	uint32_t *n_ans; /* the engine's answers: n_ans[i] hits at ans + i * kmax */
	pd_hit_t *ans;
} pd_t;

typedef struct pd_rd {
	const uint8_t *b;
	size_t len, o;
	int bad;
} pd_rd_t;

static inline uint32_t pd_u32(pd_rd_t *r)
{
	if (r->bad || r->len - r->o < 4) {
		r->bad = 1;
		return 0;
	}
	const uint8_t *p = r->b + r->o;
	r->o += 4;
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline float pd_f32(pd_rd_t *r)
{
	uint32_t u = pd_u32(r);
	float x;
	memcpy(&x, &u, 4);
	return x;
}

/* Can `count` items of `size` bytes still be read? */
static inline int pd_room(pd_rd_t *r, uint64_t count, uint64_t size)
{
	if (r->bad || (size && count > (r->len - r->o) / size))
		r->bad = 1;
	return !r->bad;
}

static inline void pd_f32s(pd_rd_t *r, float *out, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		out[i] = pd_f32(r);
}

static inline void pd_free(pd_t *d)
{
	for (uint32_t c = 0; d->cl && c < d->n_cl; c++) {
		pd_cluster_t *cl = &d->cl[c];
		for (uint32_t i = 0; cl->pairs && i < cl->m; i++)
			free(cl->pairs[i].rows);
		free(cl->pairs);
		free(cl->docids);
		free(cl->norms);
		free(cl->rows);
	}
	free(d->cl);
	free(d->k);
	free(d->q);
	free(d->n_ans);
	free(d->ans);
	memset(d, 0, sizeof(*d));
}

static inline int pd_cluster_read(pd_rd_t *r, pd_t *d, pd_cluster_t *cl)
{
	cl->id = pd_u32(r);
	cl->n = pd_u32(r);
	cl->m = pd_u32(r);
	cl->norm_max = pd_f32(r);
	if (!pd_room(r, cl->n, 8 + 4 * (uint64_t)d->dim) || !pd_room(r, cl->m, 8) || cl->m == 0)
		return -1;
	size_t rb = ((size_t)cl->n * d->dim * sizeof(float) + 63) & ~(size_t)63;
	cl->docids = malloc((cl->n ? cl->n : 1) * sizeof(uint32_t));
	cl->norms = malloc((cl->n ? cl->n : 1) * sizeof(float));
	cl->rows = aligned_alloc(64, rb ? rb : 64);
	cl->pairs = calloc(cl->m, sizeof(pd_pair_t));
	if (!cl->docids || !cl->norms || !cl->rows || !cl->pairs)
		return -1;
	for (uint32_t i = 0; i < cl->n; i++)
		if ((cl->docids[i] = pd_u32(r)) <= cl->docids[i ? i - 1 : 0] && i)
			return -1; /* ascending, as the engine's merge relies on */
	pd_f32s(r, cl->norms, cl->n);
	pd_f32s(r, cl->rows, (uint64_t)cl->n * d->dim);
	d->rows += cl->n;
	for (uint32_t i = 0; i < cl->m && !r->bad; i++) {
		pd_pair_t *p = &cl->pairs[i];
		p->q = pd_u32(r);
		p->nf = pd_u32(r);
		if (p->q >= d->nq || (i && p->q <= cl->pairs[i - 1].q))
			return -1;
		cl->kmax = d->k[p->q] > cl->kmax ? d->k[p->q] : cl->kmax;
		d->pair_rows += cl->n;
		if (p->nf == PD_FULL) {
			d->full_pairs++;
			d->filtered_rows += cl->n;
			continue;
		}
		if (p->nf > cl->n || !pd_room(r, p->nf, 4) ||
		    (p->rows = malloc((p->nf ? p->nf : 1) * sizeof(uint32_t))) == NULL)
			return -1;
		for (uint32_t j = 0; j < p->nf; j++)
			if ((p->rows[j] = pd_u32(r)) >= cl->n || (j && p->rows[j] <= p->rows[j - 1]))
				return -1;
		d->filtered_rows += p->nf;
	}
	return r->bad ? -1 : 0;
}

/* Read a recorded batch. Returns 0, or -1 with why[] filled. */
static inline int pd_load(const char *path, pd_t *d, char *why, size_t cap)
{
	memset(d, 0, sizeof(*d));
	FILE *f = fopen(path, "rb");
	long len = -1;
	uint8_t *buf = NULL;
	if (f && fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (buf = malloc(len ? (size_t)len : 1)) != NULL && fread(buf, 1, (size_t)len, f) != (size_t)len)
		len = -1;
	if (f)
		fclose(f);
	if (buf == NULL || len < 0) {
		free(buf);
		snprintf(why, cap, "cannot read %s", path);
		return -1;
	}
	pd_rd_t r = {buf, (size_t)len, 0, 0};
	const char *err = "truncated or corrupt";
	uint32_t magic = pd_u32(&r), ver = pd_u32(&r);
	d->dim = pd_u32(&r);
	d->metric = pd_u32(&r);
	d->type = pd_u32(&r);
	d->enc = pd_u32(&r);
	d->nq = pd_u32(&r);
	d->n_cl = pd_u32(&r);
	d->n_pairs = pd_u32(&r);
	d->n_pairs |= (uint64_t)pd_u32(&r) << 32;
	int rc = -1;
	if (r.bad || magic != PD_MAGIC)
		err = "not a partitions dump (magic)";
	else if (ver != PD_VERSION)
		err = "unknown version";
	else if (d->dim == 0 || d->dim > PD_DIM_MAX || d->metric > 2 || d->type > 1 || d->enc > 1)
		err = "bad header";
	else if (pd_room(&r, d->nq, 4 + 4 * (uint64_t)d->dim) && pd_room(&r, d->n_cl, 16) &&
		 (d->k = malloc((d->nq ? d->nq : 1) * sizeof(uint32_t))) != NULL &&
		 (d->q = malloc((d->nq ? (size_t)d->nq : 1) * d->dim * sizeof(float))) != NULL &&
		 (d->cl = calloc(d->n_cl ? d->n_cl : 1, sizeof(pd_cluster_t))) != NULL) {
		rc = 0;
		for (uint32_t i = 0; i < d->nq && rc == 0; i++) {
			d->k[i] = pd_u32(&r);
			rc = d->k[i] > PD_K_MAX ? -1 : 0;
			d->kmax = d->k[i] > d->kmax ? d->k[i] : d->kmax;
			pd_f32s(&r, d->q + (size_t)i * d->dim, d->dim);
		}
		uint64_t pairs = 0;
		for (uint32_t c = 0; c < d->n_cl && rc == 0; c++) {
			rc = pd_cluster_read(&r, d, &d->cl[c]);
			pairs += d->cl[c].m;
			if (rc == 0 && c && d->cl[c].id <= d->cl[c - 1].id)
				rc = -1;
		}
		if (rc == 0 && pairs != d->n_pairs)
			rc = -1;
		d->n_ans = calloc(d->nq ? d->nq : 1, sizeof(uint32_t));
		d->ans = calloc((d->nq ? (size_t)d->nq : 1) * (d->kmax ? d->kmax : 1), sizeof(pd_hit_t));
		if (d->n_ans == NULL || d->ans == NULL)
			rc = -1;
		for (uint32_t i = 0; i < d->nq && rc == 0; i++) {
			d->n_ans[i] = pd_u32(&r);
			if (d->n_ans[i] > d->k[i] || !pd_room(&r, d->n_ans[i], 8)) {
				rc = -1;
				break;
			}
			pd_hit_t *h = d->ans + (size_t)i * d->kmax;
			for (uint32_t j = 0; j < d->n_ans[i]; j++) {
				h[j].docid = pd_u32(&r);
				h[j].dist = pd_f32(&r);
			}
		}
		if (rc == 0 && (pd_u32(&r) != PD_MAGIC || r.bad || r.o != r.len))
			rc = -1;
	}
	free(buf);
	if (rc) {
		snprintf(why, cap, "%s: %s", path, err);
		pd_free(d);
	}
	return rc;
}

/* Merge b (nb hits, ascending (dist, docid)) into the top k held in
 * out[0..*n), as index/partitions.c merge_hits does; tmp: k slots. */
static inline void pd_merge(pd_hit_t *out, uint32_t *n, uint32_t k, const pd_hit_t *b,
			    uint32_t nb, pd_hit_t *tmp)
{
	uint32_t i = 0, j = 0, o = 0;
	while (o < k && (i < *n || j < nb)) {
		int take_b = i == *n || (j < nb && (b[j].dist < out[i].dist ||
						    (b[j].dist == out[i].dist &&
						     b[j].docid < out[i].docid)));
		tmp[o++] = take_b ? b[j++] : out[i++];
	}
	memcpy(out, tmp, o * sizeof(*tmp));
	*n = o;
}

/* The replay's answers (got: nq x d->kmax, n_got) against the engine's:
 * queries whose docids are the same, in order (*same_ids), and of those
 * whose distances are equal bit for bit too (*exact); *max_rel: the largest
 * relative distance difference over the same-id queries. */
static inline void pd_check(const pd_t *d, const pd_hit_t *got, const uint32_t *n_got,
			    uint32_t *same_ids, uint32_t *exact, double *max_rel)
{
	*same_ids = *exact = 0;
	*max_rel = 0;
	for (uint32_t i = 0; i < d->nq; i++) {
		const pd_hit_t *a = d->ans + (size_t)i * d->kmax, *g = got + (size_t)i * d->kmax;
		int ids = n_got[i] == d->n_ans[i], eq = ids;
		double rel = 0;
		for (uint32_t j = 0; ids && j < n_got[i]; j++) {
			ids = g[j].docid == a[j].docid;
			eq = eq && memcmp(&g[j].dist, &a[j].dist, sizeof(float)) == 0;
			double den = fabs((double)a[j].dist) > 1e-30 ? fabs((double)a[j].dist) : 1e-30;
			double e = fabs((double)g[j].dist - a[j].dist) / den;
			rel = e > rel ? e : rel;
		}
		*same_ids += (uint32_t)ids;
		*exact += (uint32_t)(ids && eq);
		if (ids && rel > *max_rel)
			*max_rel = rel;
	}
}

/* The header line both replays print. */
static inline void pd_describe(const pd_t *d, const char *path)
{
	static const char *const metric[] = {"L2", "IP", "COSINE"};
	printf("replay %s: dim %u, %s, %s rows, %u queries (k <= %u), %u clusters scanned "
	       "(%llu rows, %.1f MB as F32), %llu (cluster, query) pairs (%llu take every row), "
	       "%llu query x row pairs in the clusters, %llu allowed by the filters\n",
	       path, d->dim, metric[d->metric], d->enc ? "LVQ-8 (decoded)" : d->type ? "F16" : "F32",
	       d->nq, d->kmax, d->n_cl, (unsigned long long)d->rows,
	       (double)d->rows * d->dim * 4 / 1e6, (unsigned long long)d->n_pairs,
	       (unsigned long long)d->full_pairs, (unsigned long long)d->pair_rows,
	       (unsigned long long)d->filtered_rows);
}

/* Both replays' command line, `prog FILE [--reps 3]`: parse it, load the
 * file and print its header line. Returns 0, or the exit status (2 usage,
 * 1 an unreadable file, said on stderr). */
static inline int pd_open_main(int argc, char **argv, const char *prog, pd_t *d,
			       uint32_t *reps)
{
	*reps = 3;
	if (argc == 4 && !strcmp(argv[2], "--reps"))
		*reps = (uint32_t)strtoul(argv[3], NULL, 10);
	if ((argc != 2 && argc != 4) || *reps == 0 || *reps > 1000) {
		fprintf(stderr, "usage: %s FILE [--reps 3]\n", prog);
		return 2;
	}
	char why[512];
	if (pd_load(argv[1], d, why, sizeof(why))) {
		fprintf(stderr, "%s\n", why);
		return 1;
	}
	pd_describe(d, argv[1]);
	return 0;
}

/* The figures line both replays print for the best of their reps. */
static inline void pd_report(const pd_t *d, const char *backend, double best_ns, double calls)
{
	double s = best_ns * 1e-9;
	printf("%s: %.2f ms for %u cluster scans (%.0f backend calls): %.0f scans/s, "
	       "%.3g query x row pairs/s (%.3g allowed/s), %.1f GFLOP/s effective "
	       "(2 dim flops per query x row pair)\n",
	       backend, best_ns * 1e-6, d->n_cl, calls, d->n_cl / s, (double)d->pair_rows / s,
	       (double)d->filtered_rows / s, 2.0 * d->dim * (double)d->pair_rows / s * 1e-9);
}

#endif
