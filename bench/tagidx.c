/* bench_tagidx: one-at-a-time FT.SEARCH (vela_search) of wide TAG clauses,
 * `@t:{v1|v2|...}` of --width values, with the field's in-memory value
 * index (db/tagidx.c) and without it (the LMDB posting of each value read
 * and OR-ed in place), on --n documents holding --per tags each drawn
 * from --values distinct ones (Zipf-ish: value i drawn with weight
 * 1/(i+1)^0.5).
 *
 * Usage: bench_tagidx [--n 1000000] [--values 1000] [--per 3] [--width 32]
 *          [--nq 200] [--reps 3] [--limit 10] [--db DIR]
 *
 * Each query runs --reps times per mode (its fastest run counts); printed:
 * per mode the mean and median of the per-query times, the mean of the
 * profile's filter stage, and the first in-memory query (which builds the
 * index) alone. The modes' results are compared (totals must agree).
 * --db DIR: keep the database there (reused when it already holds docs). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "bench/workload_gen.h"
#include "db/db.h"
#include "vela/vela.h"

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* The documents' and the queries' draws (bench/workload_gen.h). */
static wl_rng_t rng;

static double *cdf; /* Zipf(0.5) over the values */
static uint32_t n_values;

static uint32_t value_draw(void)
{
	return wl_zipf(&rng, cdf, n_values);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

static int load(vela_db_t *db, uint32_t n, uint32_t per)
{
	vela_err_t err = {0};
	vela_field_def_t f[1] = {{.name = "t", .type = VELA_FIELD_TAG}};
	const char *pre[] = {"d:"};
	vela_index_def_t def = {.name = "ix", .prefixes = pre, .n_prefixes = 1, .fields = f,
				.n_fields = 1};
	vela_index_info_t info;
	if (vela_index_info(db, "ix", &info, &err) == 0 && info.num_docs >= n)
		return 0; /* reused */
	if (vela_index_create(db, &def, &err)) {
		fprintf(stderr, "create: %s\n", err.msg);
		return 1;
	}
	uint64_t t0 = now_ns();
	for (uint32_t d0 = 0; d0 < n; d0 += 10000) {
		vela_batch_t *b;
		if (vela_batch_begin(db, &b, &err))
			return 1;
		for (uint32_t d = d0; d < n && d < d0 + 10000; d++) {
			char key[32], v[256];
			size_t len = 0;
			for (uint32_t i = 0; i < per; i++)
				len += (size_t)snprintf(v + len, sizeof(v) - len, "%sv%u", i ? "," : "",
							value_draw());
			snprintf(key, sizeof(key), "d:%u", d);
			vela_kv_t kv = {"t", 1, v, len};
			if (vela_batch_hset(b, key, strlen(key), &kv, 1, NULL, &err)) {
				fprintf(stderr, "hset: %s\n", err.msg);
				return 1;
			}
		}
		if (vela_batch_commit(b, &err)) {
			fprintf(stderr, "commit: %s\n", err.msg);
			return 1;
		}
	}
	printf("loaded %u documents in %.1f s\n", n, (now_ns() - t0) / 1e9);
	return 0;
}

int main(int argc, char **argv)
{
	uint32_t n = 1000000, per = 3, width = 32, nq = 200, reps = 3, limit = 10;
	const char *dbdir = NULL;
	n_values = 1000;
	for (int i = 1; i + 1 < argc; i += 2) {
		const char *a = argv[i], *v = argv[i + 1];
		if (!strcmp(a, "--n"))
			n = (uint32_t)atol(v);
		else if (!strcmp(a, "--values"))
			n_values = (uint32_t)atol(v);
		else if (!strcmp(a, "--per"))
			per = (uint32_t)atol(v);
		else if (!strcmp(a, "--width"))
			width = (uint32_t)atol(v);
		else if (!strcmp(a, "--nq"))
			nq = (uint32_t)atol(v);
		else if (!strcmp(a, "--reps"))
			reps = (uint32_t)atol(v);
		else if (!strcmp(a, "--limit"))
			limit = (uint32_t)atol(v);
		else if (!strcmp(a, "--db"))
			dbdir = v;
		else {
			fprintf(stderr, "unknown option %s\n", a);
			return 2;
		}
	}
	if (n_values == 0 || width == 0 || width > 4096 || nq == 0 || reps == 0 || per > 16)
		return 2;
	rng = wl_rng(1, WL_S_USER, 0);
	if ((cdf = wl_zipf_cdf(n_values, 0.5)) == NULL)
		return 1;
	char tmp[] = "/tmp/bench-tagidx-XXXXXX";
	if (dbdir == NULL && (dbdir = mkdtemp(tmp)) == NULL)
		return 1;
	mkdir(dbdir, 0755);
	vela_db_t *db;
	vela_err_t err = {0};
	vela_db_options_t o = {.map_size = (size_t)16 << 30};
	if (vela_db_open(dbdir, &o, &db, &err)) {
		fprintf(stderr, "open: %s\n", err.msg);
		return 1;
	}
	if (load(db, n, per))
		return 1;
	/* The queries: width distinct values each. */
	char **q = malloc(nq * sizeof(*q));
	for (uint32_t i = 0; i < nq; i++) {
		q[i] = malloc((size_t)width * 16 + 16);
		size_t len = (size_t)sprintf(q[i], "@t:{");
		for (uint32_t j = 0; j < width; j++)
			len += (size_t)sprintf(q[i] + len, "%sv%u", j ? "|" : "",
					       wl_below(&rng, n_values));
		sprintf(q[i] + len, "}");
	}
	uint64_t *best = malloc(2 * (size_t)nq * sizeof(*best)), *filt = calloc(2, sizeof(*filt));
	uint64_t *total = malloc(2 * (size_t)nq * sizeof(*total));
	uint64_t first_ns = 0;
	static const char *mode[2] = {"lmdb", "memory"};
	for (int m = 0; m < 2; m++) {
		db_tagidx_enable(m == 1);
		for (uint32_t i = 0; i < nq; i++) {
			uint64_t b = UINT64_MAX, fb = 0;
			for (uint32_t r = 0; r < reps; r++) {
				vela_search_req_t req = {.index = "ix", .query = q[i], .nocontent = true,
							 .limit_set = true, .limit = limit,
							 .profile = true};
				vela_result_t *res = NULL;
				uint64_t t0 = now_ns();
				if (vela_search(db, &req, &res, &err)) {
					fprintf(stderr, "%s: %s\n", q[i], err.msg);
					return 1;
				}
				uint64_t t = now_ns() - t0;
				if (m == 1 && i == 0 && r == 0)
					first_ns = t;
				else if (t < b) {
					b = t;
					fb = res->profile ? res->profile->filter_ns : 0;
				}
				total[m * nq + i] = res->total;
				vela_result_free(res);
			}
			if (b == UINT64_MAX)
				b = first_ns;
			best[m * nq + i] = b;
			filt[m] += fb;
		}
	}
	for (uint32_t i = 0; i < nq; i++)
		if (total[i] != total[nq + i]) {
			fprintf(stderr, "MISMATCH %s: %llu vs %llu\n", q[i],
				(unsigned long long)total[i], (unsigned long long)total[nq + i]);
			return 1;
		}
	vela_index_info_t info;
	vela_index_info(db, "ix", &info, &err);
	uint64_t matches = 0;
	for (uint32_t i = 0; i < nq; i++)
		matches += total[i];
	printf("n=%u values=%u per=%u width=%u nq=%u reps=%u limit=%u: mean matches %.0f\n", n,
	       n_values, per, width, nq, reps, limit, (double)matches / nq);
	for (int m = 0; m < 2; m++) {
		uint64_t s = 0;
		for (uint32_t i = 0; i < nq; i++)
			s += best[m * nq + i];
		qsort(best + m * nq, nq, sizeof(*best), cmp_u64);
		printf("%-7s mean %8.1f us  median %8.1f us  filter stage mean %8.1f us\n", mode[m],
		       s / 1e3 / nq, best[m * nq + nq / 2] / 1e3, filt[m] / 1e3 / nq);
	}
	printf("first in-memory query (builds the index): %.1f ms; tag index %.1f MiB\n",
	       first_ns / 1e6, info.tag_bytes / 1048576.0);
	vela_db_close(db);
	return 0;
}
