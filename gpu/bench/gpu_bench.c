/*
 * gpu_bench.c — batch kNN throughput of gpu/ on generated data, needing only
 * libc and the gpu library (the torch comparison is knn_vs_torch.py).
 *
 *   gpu_bench [n] [dim] [queries] [k] [F32|F16|BF16|LVQ8] [tile_queries] [tile_rows] [tiled|fused]
 *
 * BF16 and LVQ8 re-rank 4k candidates exactly. Prints the median of 5 timed calls (after one warm-up), queries/s and the
 * effective TFLOP/s (2 * queries * n * dim per call).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpu/gpu.h"

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmpd(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Clustered rows from a cheap generator: 64 centres, uniform noise. */
static float *gen(uint64_t n, uint32_t d, uint64_t seed)
{
	float *x = malloc(n * d * sizeof(float)), *c = malloc(64 * (size_t)d * sizeof(float));
	uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 1;
	for (size_t i = 0; i < 64 * (size_t)d; i++) {
		s ^= s << 13, s ^= s >> 7, s ^= s << 17;
		c[i] = (float)((s >> 40) / 16777216.0 * 2 - 1);
	}
	for (uint64_t r = 0; r < n; r++) {
		s ^= s << 13, s ^= s >> 7, s ^= s << 17;
		const float *cc = c + (s % 64) * d;
		for (uint32_t j = 0; j < d; j++) {
			s ^= s << 13, s ^= s >> 7, s ^= s << 17;
			x[r * d + j] = cc[j] + (float)((s >> 40) / 16777216.0 - 0.5) * 0.5f;
		}
	}
	free(c);
	return x;
}

int main(int argc, char **argv)
{
	uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
	uint32_t d = argc > 2 ? atoi(argv[2]) : 768, nq = argc > 3 ? atoi(argv[3]) : 10000;
	uint32_t k = argc > 4 ? atoi(argv[4]) : 10;
	const char *en = argc > 5 ? argv[5] : "BF16";
	gpu_elem_t e = !strcmp(en, "F32") ? GPU_ELEM_F32 : !strcmp(en, "F16") ? GPU_ELEM_F16
		     : !strcmp(en, "LVQ8") ? GPU_ELEM_LVQ8 : GPU_ELEM_BF16;
	if (gpu_device_count() == 0) {
		printf("skipped: no CUDA device\n");
		return 77;
	}
	gpu_ctx_t *ctx;
	vela_err_t err = {0};
	if (gpu_ctx_open(0, &ctx, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	float *X = gen(n, d, 1), *Q = gen(nq, d, 2);
	gpu_matrix_params_t mp = {e, GPU_METRIC_L2, d, n, e == GPU_ELEM_LVQ8};
	gpu_matrix_t *m;
	if (gpu_matrix_create(ctx, &mp, &m, &err) || gpu_matrix_append(m, X, n, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	gpu_knn_params_t kp = {.k = k, .rerank = e == GPU_ELEM_F32 ? 1 : 4,
			       .tile_queries = argc > 6 ? atoi(argv[6]) : 0,
			       .tile_rows = argc > 7 ? atoi(argv[7]) : 0,
			       .path = argc > 8 && !strcmp(argv[8], "fused") ? GPU_PATH_FUSED
								    : GPU_PATH_TILED};
	uint32_t *ids = malloc((size_t)nq * k * 4);
	float *dist = malloc((size_t)nq * k * 4);
	double t[6];
	for (int r = 0; r < 6; r++) {
		double t0 = now_s();
		if (gpu_knn(m, Q, nq, &kp, ids, dist, &err)) {
			fprintf(stderr, "%s\n", err.msg);
			return 1;
		}
		t[r] = now_s() - t0;
	}
	qsort(t + 1, 5, sizeof(double), cmpd);
	double med = t[3];
	printf("%s: %s%s n=%llu d=%u q=%u k=%u: %.2f ms, %.0f q/s, %.1f TFLOP/s effective\n",
	       gpu_ctx_name(ctx), en, kp.path == GPU_PATH_FUSED ? " fused" : "", (unsigned long long)n, d, nq, k, med * 1e3, nq / med,
	       2.0 * nq * n * d / med / 1e12);
	gpu_matrix_free(m);
	gpu_ctx_close(ctx);
	free(X);
	free(Q);
	free(ids);
	free(dist);
	return 0;
}
