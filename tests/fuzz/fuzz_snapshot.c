// libFuzzer target for index/graph_io.c: arbitrary bytes loaded as a graph
// snapshot (graph_load), over a small fixed vector store. A load must either
// fail cleanly or give a graph that searches, saves, reloads to the same
// bytes, and survives deletes, inserts and a consolidation.
// Build and run: scripts/fuzz-smoke (any build dir; see there for the flags).
//
// Input: one control byte, then the snapshot.
//   bit 0: the rest is the whole file, as read from disk (magic, version,
//          length and checksum fuzzed too); else it is the body only, and
//          the target wraps it in a valid header and checksum, so the body
//          parser is reached past the XXH3 check.
//   bit 1: the store's metric is IP (else L2).
//   bit 2: after loading, delete, insert and consolidate (when every node
//          has a vector in the store, as the db layer requires).
// Seeds (tests/fuzz/corpus/snapshot) are real snapshots of graphs built
// over this store: build this file with -DFUZZ_SNAPSHOT_SEEDS (no
// -fsanitize=fuzzer) and run it with the corpus directory as argument.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "index/graph_impl.h"

#define DIM 4u
#define NVEC 64u /* ids 0..63 have vectors; any other id reads as infinitely far */

static float vecs[NVEC][DIM];

static void vecs_init(void)
{
	uint32_t s = 12345;
	for (uint32_t i = 0; i < NVEC; i++)
		for (uint32_t d = 0; d < DIM; d++) {
			s = s * 1103515245u + 12345u;
			vecs[i][d] = (float)((s >> 8) % 2001) / 1000.0f - 1.0f;
		}
}

static float vdist(vela_metric_t m, const float *a, const float *b)
{
	float acc = 0;
	for (uint32_t d = 0; d < DIM; d++)
		acc += m == VELA_METRIC_L2 ? (a[d] - b[d]) * (a[d] - b[d]) : a[d] * b[d];
	return m == VELA_METRIC_L2 ? acc : 1.0f - acc;
}

typedef struct {
	vela_metric_t metric;
} store_ctx_t;

static int st_prepare(void *ctx, const float *q, void *pq)
{
	memcpy(pq, q, DIM * sizeof(float));
	return 0;
}

static float st_dist(void *ctx, const void *pq, uint32_t id)
{
	const store_ctx_t *c = ctx;
	return id < NVEC ? vdist(c->metric, pq, vecs[id]) : INFINITY;
}

static float st_dist_ids(void *ctx, uint32_t a, uint32_t b)
{
	const store_ctx_t *c = ctx;
	return a < NVEC && b < NVEC ? vdist(c->metric, vecs[a], vecs[b]) : INFINITY;
}

static int st_get(void *ctx, uint32_t id, float *out)
{
	if (id >= NVEC)
		return VELA_ENOTFOUND;
	memcpy(out, vecs[id], sizeof(vecs[id]));
	return 0;
}

/* graph.c asks the flat store's adapter for a prefetch hook; this store has none. */
graph_prefetch_fn graph_store_prefetch(const graph_store_t *st)
{
	return NULL;
}

static graph_store_t store_for(store_ctx_t *c)
{
	return (graph_store_t){.ctx = c, .dim = DIM, .metric = c->metric,
			       .query_size = DIM * sizeof(float), .prepare = st_prepare,
			       .dist = st_dist, .dist_ids = st_dist_ids, .get = st_get};
}

/* graph_save into a malloc'd buffer. */
static int save_mem(const graph_t *g, char **buf, size_t *len)
{
	FILE *f = open_memstream(buf, len);
	if (f == NULL)
		abort();
	int rc = graph_save(g, f);
	if (fclose(f) != 0)
		abort();
	return rc;
}

static int load_mem(const void *p, size_t n, const graph_store_t *st, graph_t **g)
{
	FILE *f = fmemopen((void *)p, n ? n : 1, "rb");
	if (f == NULL)
		abort();
	if (n == 0) /* fmemopen needs a size; read nothing */
		fgetc(f);
	int rc = graph_load(f, st, 0, g);
	fclose(f);
	return rc;
}

/* Results: live nodes, ascending (dist, id), at most k. */
static void check_search(const graph_t *g, vela_metric_t m)
{
	vela_hit_t hits[8];
	for (uint32_t q = 0; q < 3; q++) {
		uint32_t n = 99;
		int rc = graph_search(g, vecs[q * 7 % NVEC], 5, NULL, hits, &n);
		if (rc == VELA_ENOMEM)
			continue;
		if (rc != 0 || n > 5)
			abort();
		for (uint32_t i = 0; i < n; i++) {
			if (!graph_contains(g, hits[i].docid))
				abort();
			if (i > 0 && (hits[i].dist < hits[i - 1].dist ||
				      (hits[i].dist == hits[i - 1].dist && hits[i].docid <= hits[i - 1].docid)))
				abort();
		}
	}
}

/* save(load(save(g))) == save(g): what is saved loads back to the same graph. */
static void check_roundtrip(const graph_t *g, const graph_store_t *st)
{
	char *a = NULL, *b = NULL;
	size_t al = 0, bl = 0;
	if (save_mem(g, &a, &al) != 0)
		abort();
	graph_t *g2 = NULL;
	int rc = load_mem(a, al, st, &g2);
	if (rc != 0 || g2 == NULL)
		abort(); /* graph_save wrote what graph_load refuses */
	if (graph_count(g2) != graph_count(g) || graph_count_deleted(g2) != graph_count_deleted(g) ||
	    graph_entry(g2) != graph_entry(g))
		abort();
	if (save_mem(g2, &b, &bl) != 0 || al != bl || memcmp(a, b, al) != 0)
		abort();
	graph_destroy(g2);
	free(a);
	free(b);
}

static void mutate(graph_t *g, const uint8_t *sel, size_t n)
{
	for (size_t i = 0; i < n && i < 8; i++) {
		uint32_t id = sel[i] % NVEC;
		int rc = (sel[i] & 0x80) ? graph_delete(g, id) : graph_insert(g, id);
		if (rc != 0 && rc != VELA_ENOTFOUND && rc != VELA_EEXISTS && rc != VELA_ENOMEM)
			abort();
	}
	int rc = graph_consolidate(g);
	if (rc != 0 && rc != VELA_ENOMEM)
		abort();
	if (graph_count_deleted(g) != 0 && rc == 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int init;
	if (!init) {
		vecs_init();
		init = 1;
	}
	if (size < 1)
		return 0;
	int ctl = data[0];
	const uint8_t *in = data + 1;
	size_t n = size - 1;
	store_ctx_t ctx = {(ctl & 2) ? VELA_METRIC_IP : VELA_METRIC_L2};
	graph_store_t st = store_for(&ctx);
	uint8_t *file;
	size_t flen;
	if (ctl & 1) {
		file = malloc(n ? n : 1);
		if (file == NULL)
			return 0;
		memcpy(file, in, n);
		flen = n;
	} else { /* "VELAGRPH" | be32 version | be64 body length | body | be64 xxh3 */
		flen = 20 + n + 8;
		file = malloc(flen);
		if (file == NULL)
			return 0;
		memcpy(file, "VELAGRPH", 8);
		vela_put_be32(file + 8, GRAPH_FORMAT_VERSION);
		vela_put_be64(file + 12, n);
		memcpy(file + 20, in, n);
		vela_put_be64(file + 20 + n, vela_hash64(file, 20 + n));
	}
	graph_t *g = (graph_t *)(uintptr_t)1;
	int rc = load_mem(file, flen, &st, &g);
	if (rc != 0) {
		if (g != NULL)
			abort(); /* a failed load leaves nothing behind */
		if (rc != VELA_ECORRUPT && rc != VELA_EVERSION && rc != VELA_EINVAL &&
		    rc != VELA_EIO && rc != VELA_ENOMEM)
			abort();
		free(file);
		return 0;
	}
	check_search(g, ctx.metric);
	check_roundtrip(g, &st);
	/* The db layer loads a graph only if its nodes are exactly the field's
	 * vectors (db/snapshot.c); writers need every node's vector. */
	if ((ctl & 4) && g->end <= NVEC) {
		mutate(g, in, n);
		check_search(g, ctx.metric);
		check_roundtrip(g, &st);
	}
	graph_destroy(g);
	free(file);
	return 0;
}

#ifdef FUZZ_SNAPSHOT_SEEDS
/* Write seeds: graphs of several sizes and parameters, both metrics, with
 * and without tombstones, as full files (ctl bit 0) and as bodies. */
static void write_seed(const char *dir, const char *name, int ctl, const char *p, size_t n)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (f == NULL) {
		perror(path);
		exit(1);
	}
	fputc(ctl, f);
	fwrite(p, 1, n, f);
	fclose(f);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s corpus-dir\n", argv[0]);
		return 2;
	}
	vecs_init();
	struct {
		const char *name;
		vela_metric_t m;
		uint32_t n, R, del;
	} cases[] = {{"l2_empty", VELA_METRIC_L2, 0, 4, 0},   {"l2_one", VELA_METRIC_L2, 1, 4, 0},
		     {"l2_16", VELA_METRIC_L2, 16, 4, 0},     {"l2_64_r8", VELA_METRIC_L2, 64, 8, 0},
		     {"l2_48_del", VELA_METRIC_L2, 48, 8, 5}, {"ip_32", VELA_METRIC_IP, 32, 6, 0},
		     {"ip_40_del", VELA_METRIC_IP, 40, 4, 3}};
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		store_ctx_t ctx = {cases[c].m};
		graph_store_t st = store_for(&ctx);
		graph_params_t p;
		graph_params_default(&p);
		p.max_degree = cases[c].R;
		p.window = 16;
		graph_t *g;
		uint32_t ids[NVEC];
		for (uint32_t i = 0; i < NVEC; i++)
			ids[i] = i;
		if (graph_create(&st, &p, &g) || graph_build(g, ids, cases[c].n))
			return 1;
		for (uint32_t i = 0; i < cases[c].del; i++)
			graph_delete(g, i * 3);
		char *buf;
		size_t len;
		if (save_mem(g, &buf, &len))
			return 1;
		int metric_bit = cases[c].m == VELA_METRIC_IP ? 2 : 0;
		char name[128];
		snprintf(name, sizeof(name), "%s_file", cases[c].name);
		write_seed(argv[1], name, 1 | metric_bit | (cases[c].del ? 4 : 0), buf, len);
		snprintf(name, sizeof(name), "%s_body", cases[c].name);
		write_seed(argv[1], name, metric_bit | 4, buf + 20, len - 28);
		free(buf);
		graph_destroy(g);
	}
	return 0;
}
#endif
