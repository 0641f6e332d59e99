/* bench_part_replay: a recorded partitions batch (bench_hybrid
 * --dump-partitions; format: index/index.h part_search_plan_dump) scanned
 * again through the CPU backend exactly as index/partitions.c scan_cluster
 * scans it (bench/part_replay_cpu.h), timed after loading: the cluster
 * scans and the per-query merge only (not the probe choice, not the
 * filters' row bitmaps, which are built before the clock starts). The
 * answers are checked against the engine's recorded ones. Its GPU twin is
 * gpu/bench/part_replay_gpu.c (same file, same output lines); docs/gpu.md.
 *
 * Usage: bench_part_replay FILE [--reps 3]
 * Exit status: 0; 1 a failure or an answer that differs from the engine's;
 * 2 usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <math.h>

#include "bench/part_replay_cpu.h"
#include "common/common.h"

int main(int argc, char **argv)
{
	pd_t d;
	uint32_t reps;
	uint64_t t0 = vela_now_ns();
	int st = pd_open_main(argc, argv, "bench_part_replay", &d, &reps);
	if (st)
		return st;
	pr_cpu_t c;
	pd_hit_t *got = malloc((size_t)(d.nq ? d.nq : 1) * (d.kmax ? d.kmax : 1) * sizeof(*got));
	uint32_t *n_got = malloc((d.nq ? d.nq : 1) * sizeof(uint32_t));
	int rc = got && n_got ? pr_cpu_prepare(&d, &c) : VELA_ENOMEM;
	printf("loaded in %.2f s\n", (vela_now_ns() - t0) * 1e-9);
	double best = INFINITY;
	for (uint32_t r = 0; rc == 0 && r < reps; r++) {
		uint64_t t = vela_now_ns();
		rc = pr_cpu_run(&d, &c, got, n_got);
		double ns = (double)(vela_now_ns() - t);
		printf("rep %u: %.2f ms\n", r, ns * 1e-6);
		best = ns < best ? ns : best;
	}
	if (rc) {
		fprintf(stderr, "replay: %s\n", vela_strerror(rc));
	} else {
		char name[64];
		snprintf(name, sizeof(name), "engine backend %s", index_backend_current()->name);
		pd_report(&d, name, best, d.n_cl);
		uint32_t same, exact;
		double rel;
		pd_check(&d, got, n_got, &same, &exact, &rel);
		printf("check: %u / %u queries with the engine's docids, %u with its distances bit "
		       "for bit (max relative difference %.2g)\n",
		       same, d.nq, exact, rel);
		rc = exact == d.nq ? 0 : 1;
	}
	pr_cpu_free(&d, &c);
	free(got);
	free(n_got);
	pd_free(&d);
	return rc ? 1 : 0;
}
