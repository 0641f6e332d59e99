/*
 * gpu_fused.cu — LVQ-8 batch kNN without a distance matrix: int8 wgmma tiles
 * whose epilogue keeps only the entries that can still reach a query's top kc
 * (gpu.h, GPU_PATH_FUSED; docs/gpu.md "Fused LVQ-8 path").
 *
 * Why. The tiled path (gpu_knn.cu) writes every GEMM tile to device memory
 * and reads it back in the selection: at 1M x 768 and 10k queries that is
 * 40 GB of int32, and cuBLAS's int8 GEMM ran no faster than its bf16 one
 * (BENCHMARKS.md "GPU batch kNN"). Here the int32 dot products never leave
 * the registers.
 *
 * How. A CTA keeps 128 queries' int8 codes in shared memory and streams
 * 192-row tiles of the database through a FZ_STAGES-slot cp.async ring (a
 * stage is copied FZ_AHEAD iterations before its use, one barrier a
 * stage); each of its two warpgroups multiplies its 64 queries by the tile
 * with wgmma m64n192k32 (Hopper, sm_90a; PTX ISA "Asynchronous warpgroup
 * level matrix multiply"). The epilogue turns every dot product into the
 * value the tiled path ranks by (gpu_select.cu epi_val: LVQ scale and bias,
 * squared norm) and keeps (value, row) only when it is at most the query's
 * threshold. Kept entries go to a per-CTA record region through a
 * shared-memory counter; a scatter kernel files them into per-query lists
 * after the round (a global atomic whose reply the epilogue waited for cost
 * more than the arithmetic).
 *
 * Thresholds come from rounds over growing, evenly spaced samples of the row
 * tiles (GPU_FZ_ROUND0_TILES, then GPU_FZ_ROUND_GROWTH times more, until
 * the last round, over every tile, should keep at most half a list): after
 * a round, a query's threshold is the kc-th best value it kept, an upper
 * bound of its final kc-th best, so no row of its true top kc is ever
 * dropped. A query whose list still overflows in the last round is
 * answered again by the tiled path. This is the filtered queue of Johnson
 * et al. (arXiv 1702.08734 §4) moved into the GEMM epilogue, its threshold
 * learnt from samples instead of a running queue.
 *
 * Shared memory uses wgmma's canonical K-major layouts: 128-byte swizzle
 * (each row's 128 bytes of K at r * 128, its 16-byte columns permuted by
 * c ^ (r % 8)), or, as a fallback the self-check can choose, none (8 rows x
 * 16 bytes per core matrix). Without swizzle the same kernel ran 1.15x
 * slower (45.0 against 39.2 ms, 300k x 768, H200, bench/results/gpu-h200/
 * fused-variants-run13.log). Eight consecutive threads copy one row's 128
 * bytes: whole sectors from global memory, one bank-conflict-free 128-byte
 * write per quarter warp.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "gpu/gpu_impl.h"

/* wgmma exists in the sm_90a target only (gpu/CMakeLists.txt builds this
 * file for it alone); any other device pass gets a kernel that reports its
 * absence through the self-check's status word. */
#if !defined(__CUDA_ARCH__) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FZ_WGMMA 1
#else
#define FZ_WGMMA 0
#endif

/* Accumulator registers per thread: m64 x GPU_FZ_BN int32 over 128 threads. */
#define FZ_ACC (64 * GPU_FZ_BN / 128)

#if FZ_WGMMA
/* Descriptor fields (PTX ISA, "Matrix Descriptor Format"): start address,
 * leading and stride byte offsets, each >> 4, and the swizzle mode in bits
 * 62-63 (0 none, 1 128-byte). */
static __device__ __forceinline__ uint64_t fz_desc(uint32_t saddr, uint32_t lbo, uint32_t sbo,
						    int swz)
{
	return (uint64_t)((saddr & 0x3FFFFu) >> 4) | ((uint64_t)((lbo >> 4) & 0x3FFFu) << 16) |
	       ((uint64_t)((sbo >> 4) & 0x3FFFu) << 32) | ((uint64_t)(swz ? 1 : 0) << 62);
}

static __device__ __forceinline__ void fz_cp16(uint32_t dst, const void *src, uint32_t bytes)
{
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
		     "r"(bytes)
		     : "memory");
}
static __device__ __forceinline__ void fz_commit(void)
{
	asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N> static __device__ __forceinline__ void fz_cp_wait(void)
{
	asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
/* cp.async writes through the generic proxy; wgmma reads through the async
 * one: each writer fences before the barrier that publishes the stage. */
static __device__ __forceinline__ void fz_fence_proxy(void)
{
	asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

static __device__ __forceinline__ void fz_wg_fence(void)
{
	asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
static __device__ __forceinline__ void fz_wg_commit(void)
{
	asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N> static __device__ __forceinline__ void fz_wg_wait(void)
{
	asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
/* Pins the accumulators in registers at this point of the program, so the
 * compiler neither reads them before wgmma.wait_group nor moves them while
 * a wgmma writes them. */
static __device__ __forceinline__ void fz_acc_fence(int32_t (&d)[FZ_ACC])
{
#pragma unroll
	for (int i = 0; i < FZ_ACC; i++)
		asm volatile("" : "+r"(d[i])::"memory");
}

/* D(64 x 192, s32) (+)= A(64 x 32, s8, smem) * B(192 x 32, s8, smem)^T: one
 * wgmma of the warpgroup (PTX ISA 'wgmma.mma_async', m64n192k32). acc = 0
 * overwrites D. Generated: 96 accumulator operands. */
static __device__ __forceinline__ void wgmma_s8_m64n192k32(int32_t (&d)[96], uint64_t da,
							     uint64_t db, int acc)
{
	asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %98, 0;\n"
		     "wgmma.mma_async.sync.aligned.m64n192k32.s32.s8.s8 {"
		     "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
		     "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
		     "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
		     "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
		     "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
		     "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95"
		     "}, %96, %97, p;\n}\n"
		     : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]),
		  "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]),
		  "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]),
		  "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]),
		  "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]),
		  "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]),
		  "+r"(d[48]), "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]),
		  "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63]),
		  "+r"(d[64]), "+r"(d[65]), "+r"(d[66]), "+r"(d[67]), "+r"(d[68]), "+r"(d[69]), "+r"(d[70]), "+r"(d[71]),
		  "+r"(d[72]), "+r"(d[73]), "+r"(d[74]), "+r"(d[75]), "+r"(d[76]), "+r"(d[77]), "+r"(d[78]), "+r"(d[79]),
		  "+r"(d[80]), "+r"(d[81]), "+r"(d[82]), "+r"(d[83]), "+r"(d[84]), "+r"(d[85]), "+r"(d[86]), "+r"(d[87]),
		  "+r"(d[88]), "+r"(d[89]), "+r"(d[90]), "+r"(d[91]), "+r"(d[92]), "+r"(d[93]), "+r"(d[94]), "+r"(d[95])
		     : "l"(da), "l"(db), "r"(acc));
}
#endif /* FZ_WGMMA */

#define FZ_BK 128 /* bytes of K per pipeline stage: four k32 wgmmas */
/* Row-tile ring: a stage is loaded two iterations before its use (one
 * barrier per stage; see fz_item), so four slots. */
#define FZ_STAGES 4
#define FZ_AHEAD 2
/* Per-row parameter slots, one per tile in flight. */
#define FZ_PSLOTS 3
#define FZ_THREADS 256
#define FZ_TILES_PER_ITEM 32 /* row tiles a CTA takes per work item */
#define FZ_TILE_BYTES (GPU_FZ_BN * FZ_BK)
#define FZ_PARAMS 3 /* per row: LVQ scale, LVQ bias, squared norm */

/* One launch: a round over nt of the ntiles row tiles of [r_begin, r_end). */
struct fz_args {
	const int8_t *q;  /* queries, int8, stride ld */
	const int8_t *x;  /* rows, int8, stride ld */
	const float *rscale, *rbias, *rnorm; /* per row; rnorm NULL for IP */
	const float *qscale, *qsum;          /* per query */
	const float *thr;                    /* per query: keep values <= thr */
	const uint64_t *filter;              /* optional bitmap over rows */
	uint32_t *cnt;                       /* per query: candidates seen */
	uint4 *rec;       /* per CTA rec_cap records {query, value bits, row, 0} */
	uint32_t *rec_n;  /* per CTA: records written */
	uint32_t rec_cap;
	float *cd;                           /* nq x cap candidate values */
	uint32_t *ci;                        /* nq x cap candidate rows */
	int32_t *dbg;    /* diagnostic: raw dots of item 0's first tile */
	uint32_t *status; /* 1: a build without sm_90a code; 2: misaligned shared memory */
	uint64_t row_alloc; /* rows readable in x and the per-row arrays */
	uint64_t r_begin, r_end, ntiles;
	float coef;       /* -2 (L2) or -1 (IP) */
	uint32_t nq, ld, kb, nt, nqb, cap;
	int layout;       /* 1 128-byte swizzle, 0 none (gpu_fused_selfcheck) */
	int dense;        /* every entry kept at slot t * GPU_FZ_BN + column */
};

#if FZ_WGMMA
static __device__ __forceinline__ uint64_t fz_tile_row0(const fz_args &a, uint32_t t)
{
	uint64_t gt = a.nt == a.ntiles ? t : (uint64_t)t * a.ntiles / a.nt;
	return a.r_begin + gt * GPU_FZ_BN;
}

/* Shared-memory offset of 16-byte column c of row r in a block of rows
 * (rows = 128 queries or GPU_FZ_BN database rows, 128 bytes of K). 128-byte
 * swizzle: row r at r * 128, its columns permuted by c ^ (r % 8) (the
 * pattern wgmma undoes from the address bits; blocks 1024-byte aligned).
 * None: core matrix (r / 8, c) at (c * rows / 8 + r / 8) * 128. */
static __device__ __forceinline__ uint32_t fz_off(int layout, uint32_t rows, uint32_t r, uint32_t c)
{
	return layout ? r * 128 + ((c ^ (r & 7)) << 4)
		      : (c * (rows / 8) + r / 8) * 128 + (r & 7) * 16;
}

/* The 128 queries of block qb: kb blocks of 128 bytes of K, zero past nq.
 * Eight consecutive threads copy one row's 128 bytes. */
static __device__ void fz_load_queries(const fz_args &a, uint32_t qb, uint32_t sA)
{
	uint32_t chunks = GPU_FZ_BQ * a.kb * (FZ_BK / 16);
	for (uint32_t idx = threadIdx.x; idx < chunks; idx += FZ_THREADS) {
		uint32_t c = idx & 7, r = (idx >> 3) & (GPU_FZ_BQ - 1), kbi = idx / (GPU_FZ_BQ * 8);
		uint32_t q = qb * GPU_FZ_BQ + r, kbyte = kbi * FZ_BK + c * 16;
		bool ok = q < a.nq && kbyte < a.ld;
		const int8_t *src = ok ? a.q + (size_t)q * a.ld + kbyte : a.q;
		fz_cp16(sA + kbi * (GPU_FZ_BQ * FZ_BK) + fz_off(a.layout, GPU_FZ_BQ, r, c), src,
			ok ? 16 : 0);
	}
}

/* Stage s of a work item: k-block kbi of its tile ti, into ring slot s %
 * FZ_STAGES; with the tile's first k-block its per-row parameters. */
static __device__ void fz_load_stage(const fz_args &a, uint32_t t0, uint32_t s, uint32_t sB,
				     float *sP)
{
	uint32_t ti = s / a.kb, kbi = s % a.kb, slot = s % FZ_STAGES;
	uint64_t row0 = fz_tile_row0(a, t0 + ti);
	uint32_t dst0 = sB + slot * FZ_TILE_BYTES;
#pragma unroll
	for (int it = 0; it < FZ_TILE_BYTES / 16 / FZ_THREADS; it++) {
		uint32_t idx = it * FZ_THREADS + threadIdx.x, c = idx & 7, r = idx >> 3;
		uint64_t row = row0 + r;
		uint32_t kbyte = kbi * FZ_BK + c * 16;
		bool ok = row < a.row_alloc && kbyte < a.ld;
		const int8_t *src = ok ? a.x + row * a.ld + kbyte : a.x;
		fz_cp16(dst0 + fz_off(a.layout, GPU_FZ_BN, r, c), src, ok ? 16 : 0);
	}
	if (kbi != 0 || threadIdx.x >= FZ_PARAMS * GPU_FZ_BN / 4)
		return;
	uint32_t arr = threadIdx.x / (GPU_FZ_BN / 4), c4 = threadIdx.x % (GPU_FZ_BN / 4);
	const float *base = arr == 0 ? a.rscale : arr == 1 ? a.rbias : a.rnorm;
	uint64_t row = row0 + c4 * 4;
	bool ok = base && row + 4 <= a.row_alloc;
	float *dst = sP + (ti % FZ_PSLOTS) * (FZ_PARAMS * GPU_FZ_BN) + arr * GPU_FZ_BN + c4 * 4;
	fz_cp16((uint32_t)__cvta_generic_to_shared(dst), ok ? (const void *)(base + row)
							   : (const void *)a.rscale,
		ok ? 16 : 0);
}

/* A kept entry goes straight into its query's list (atomic on the query's
 * count: the warp waits for the reply), used when the CTA's record region
 * is full. */
static __device__ __forceinline__ void fz_push_list(const fz_args &a, uint32_t q, float v,
						    uint64_t row)
{
	uint32_t slot = atomicAdd(&a.cnt[q], 1u);
	if (slot < a.cap) {
		a.cd[(size_t)q * a.cap + slot] = v;
		a.ci[(size_t)q * a.cap + slot] = (uint32_t)row;
	}
}

/* A kept entry becomes a record of the CTA's own region: the slot comes
 * from a shared-memory counter (a short wait), the record is one 16-byte
 * store nobody waits for. gpu_launch_fused_scatter files the records into
 * the queries' lists after the round. */
static __device__ __forceinline__ void fz_push(const fz_args &a, uint32_t *s_nrec, uint32_t q,
					       float v, uint64_t row)
{
	if (a.filter && !((a.filter[row >> 6] >> (row & 63)) & 1u))
		return;
	uint32_t i = atomicAdd(s_nrec, 1u);
	if (i < a.rec_cap)
		a.rec[(size_t)blockIdx.x * a.rec_cap + i] =
			make_uint4(q, __float_as_uint(v), (uint32_t)row, 0u);
	else
		fz_push_list(a, q, v, row);
}

/* Per query of this thread's two accumulator rows: threshold and the
 * coefficients of the ranking value  norm + coef * (qs * sc * dot + qsum * bias). */
struct fz_q {
	uint32_t q;
	float thr, cq, cb;
};

static __device__ __forceinline__ fz_q fz_query(const fz_args &a, uint32_t q)
{
	fz_q r;
	r.q = q;
	bool ok = q < a.nq;
	r.thr = ok ? a.thr[q] : -INFINITY; /* never kept */
	r.cq = ok ? a.coef * a.qscale[q] : 0.f;
	r.cb = ok ? a.coef * a.qsum[q] : 0.f;
	return r;
}

/* Keeps one entry of a round that compares against thresholds (the rare
 * case: the caller tested the value first). */
static __device__ __forceinline__ void fz_keep(const fz_args &a, uint32_t *s_nrec, const fz_q &q,
					       float v, uint64_t row)
{
	if (v <= q.thr && row < a.r_end)
		fz_push(a, s_nrec, q.q, v, row);
}

/* A dense round (a sample no larger than the lists): every entry at slot
 * t * GPU_FZ_BN + column, +inf where the row is out of range or filtered out. */
static __device__ __forceinline__ void fz_dense(const fz_args &a, const fz_q &q, float v,
						uint64_t row, uint32_t slot)
{
	if (q.q >= a.nq)
		return;
	bool ok = row < a.r_end && (!a.filter || ((a.filter[row >> 6] >> (row & 63)) & 1u));
	a.cd[(size_t)q.q * a.cap + slot] = ok ? v : INFINITY;
	a.ci[(size_t)q.q * a.cap + slot] = ok ? (uint32_t)row : UINT32_MAX;
}

/* The raw dot products of a tile (gpu_fused_selfcheck). */
static __device__ void fz_dump(const int32_t (&acc)[FZ_ACC], int32_t *dbg, uint32_t qrow)
{
	uint32_t lane = threadIdx.x & 31;
#pragma unroll
	for (int j = 0; j < GPU_FZ_BN / 8; j++)
#pragma unroll
		for (int h = 0; h < 2; h++) {
			uint32_t col = j * 8 + (lane & 3) * 2 + h;
			dbg[(size_t)qrow * GPU_FZ_BN + col] = acc[4 * j + h];
			dbg[(size_t)(qrow + 8) * GPU_FZ_BN + col] = acc[4 * j + 2 + h];
		}
}

/* Accumulator layout of wgmma m64nN (PTX ISA, "Register fragments"): warp w
 * of the warpgroup holds rows 16w + lane/4 (registers 4j, 4j+1) and that + 8
 * (4j+2, 4j+3), columns 8j + 2 (lane % 4) + {0, 1}. t is the tile's index
 * in the round. Per entry the common path is one conversion, one multiply,
 * two FMAs and a compare; four entries share one rarely taken branch. */
template <bool DENSE>
static __device__ void fz_epilogue(const fz_args &a, const int32_t (&acc)[FZ_ACC], uint32_t t,
				   const float *P, const fz_q &qa, const fz_q &qb, uint32_t *s_nrec)
{
	uint32_t lane = threadIdx.x & 31;
	uint64_t row0 = fz_tile_row0(a, t);
#pragma unroll
	for (int j = 0; j < GPU_FZ_BN / 8; j++) {
		uint32_t c0 = j * 8 + (lane & 3) * 2;
		float2 sc = *reinterpret_cast<const float2 *>(P + c0);
		float2 bi = *reinterpret_cast<const float2 *>(P + GPU_FZ_BN + c0);
		float2 nr = *reinterpret_cast<const float2 *>(P + 2 * GPU_FZ_BN + c0);
		float a0 = fmaf(qa.cq * sc.x, (float)acc[4 * j], fmaf(qa.cb, bi.x, nr.x));
		float a1 = fmaf(qa.cq * sc.y, (float)acc[4 * j + 1], fmaf(qa.cb, bi.y, nr.y));
		float b0 = fmaf(qb.cq * sc.x, (float)acc[4 * j + 2], fmaf(qb.cb, bi.x, nr.x));
		float b1 = fmaf(qb.cq * sc.y, (float)acc[4 * j + 3], fmaf(qb.cb, bi.y, nr.y));
		uint64_t row = row0 + c0;
		if (DENSE) {
			uint32_t slot = t * GPU_FZ_BN + c0;
			fz_dense(a, qa, a0, row, slot);
			fz_dense(a, qa, a1, row + 1, slot + 1);
			fz_dense(a, qb, b0, row, slot);
			fz_dense(a, qb, b1, row + 1, slot + 1);
		} else if (a0 <= qa.thr || a1 <= qa.thr || b0 <= qb.thr || b1 <= qb.thr) {
			fz_keep(a, s_nrec, qa, a0, row);
			fz_keep(a, s_nrec, qa, a1, row + 1);
			fz_keep(a, s_nrec, qb, b0, row);
			fz_keep(a, s_nrec, qb, b1, row + 1);
		}
	}
}

/* One work item: query block qb against row tiles [t0, t1) of the round. */
static __device__ void fz_item(const fz_args &a, uint32_t qb, uint32_t t0, uint32_t t1,
			       int32_t *dbg, uint32_t sA, uint32_t sB, float *sP, uint32_t *s_nrec)
{
	uint32_t wg = threadIdx.x / 128, w = (threadIdx.x % 128) / 32, lane = threadIdx.x & 31;
	uint32_t qrow = wg * 64 + w * 16 + lane / 4;
	fz_q qa = fz_query(a, qb * GPU_FZ_BQ + qrow), qbq = fz_query(a, qb * GPU_FZ_BQ + qrow + 8);
	uint32_t S = (t1 - t0) * a.kb;
	fz_load_queries(a, qb, sA);
	for (uint32_t s = 0; s < FZ_AHEAD; s++) {
		if (s < S)
			fz_load_stage(a, t0, s, sB, sP);
		fz_commit();
	}
	int32_t acc[FZ_ACC];
#pragma unroll
	for (int i = 0; i < FZ_ACC; i++)
		acc[i] = 0;
	/* Stage s: wait for its copy, one barrier (every thread's copies of s
	 * are visible; both warpgroups have retired stage s - 2, whose wgmma
	 * group wait_group<1> closed in iteration s - 1, so its slot is free),
	 * copy stage s + FZ_AHEAD into that slot, multiply stage s, and leave
	 * its wgmma group in flight while the next iteration waits. */
	for (uint32_t s = 0; s < S; s++) {
		uint32_t ti = s / a.kb, kbi = s % a.kb, slot = s % FZ_STAGES;
		fz_cp_wait<FZ_AHEAD - 1>();
		fz_fence_proxy();
		__syncthreads();
		if (s + FZ_AHEAD < S)
			fz_load_stage(a, t0, s + FZ_AHEAD, sB, sP);
		fz_commit();
		__syncwarp(); /* wgmma is .aligned: the epilogue's branches end here */
		fz_acc_fence(acc);
		fz_wg_fence();
#pragma unroll
		for (uint32_t j = 0; j < FZ_BK / 32; j++) {
			/* A: k-block kbi, rows 64 wg..; B: ring slot; 32 bytes of K each.
			 * Swizzled: the start moves 32 bytes along the row, 8-row groups
			 * 1024 bytes apart. None: core matrices 2j.., K-adjacent ones
			 * rows / 8 * 128 bytes apart, M/N-adjacent ones 128. */
			uint32_t ao = kbi * (GPU_FZ_BQ * FZ_BK) + fz_off(a.layout, GPU_FZ_BQ, wg * 64, 2 * j);
			uint32_t bo = slot * FZ_TILE_BYTES + fz_off(a.layout, GPU_FZ_BN, 0, 2 * j);
			uint64_t da = a.layout ? fz_desc(sA + ao, 16, 1024, 1)
					       : fz_desc(sA + ao, (GPU_FZ_BQ / 8) * 128, 128, 0);
			uint64_t db = a.layout ? fz_desc(sB + bo, 16, 1024, 1)
					       : fz_desc(sB + bo, (GPU_FZ_BN / 8) * 128, 128, 0);
			wgmma_s8_m64n192k32(acc, da, db, (kbi | j) != 0);
		}
		fz_wg_commit();
		fz_wg_wait<1>();
		if (kbi == a.kb - 1) {
			fz_wg_wait<0>();
			fz_acc_fence(acc);
			const float *P = sP + (ti % FZ_PSLOTS) * (FZ_PARAMS * GPU_FZ_BN);
			if (dbg && ti == 0)
				fz_dump(acc, dbg, qrow);
			if (a.dense)
				fz_epilogue<true>(a, acc, t0 + ti, P, qa, qbq, s_nrec);
			else
				fz_epilogue<false>(a, acc, t0 + ti, P, qa, qbq, s_nrec);
		}
	}
	fz_cp_wait<0>();
	__syncthreads(); /* the next item overwrites the queries and the ring */
}
#endif

static __global__ void __launch_bounds__(FZ_THREADS, 1) k_fused_lvq8(const fz_args a)
{
#if FZ_WGMMA
	extern __shared__ __align__(1024) unsigned char fz_smem[];
	uint32_t sA = (uint32_t)__cvta_generic_to_shared(fz_smem);
	uint32_t sB = sA + GPU_FZ_BQ * a.kb * FZ_BK;
	float *sP = (float *)(fz_smem + GPU_FZ_BQ * a.kb * FZ_BK + FZ_STAGES * FZ_TILE_BYTES);
	if (a.layout && (sA & 1023u)) { /* the swizzle pattern needs aligned blocks */
		if (threadIdx.x == 0 && a.status)
			*a.status = 2;
		return;
	}
	uint32_t *s_nrec = (uint32_t *)(sP + FZ_PSLOTS * FZ_PARAMS * GPU_FZ_BN);
	uint32_t per_qb = (a.nt + FZ_TILES_PER_ITEM - 1) / FZ_TILES_PER_ITEM;
	uint32_t items = a.nqb * per_qb;
	if (threadIdx.x == 0)
		*s_nrec = 0;
	__syncthreads();
	/* items in row-chunk-major order: the CTAs running together share
	 * their row tiles through L2 */
	for (uint32_t item = blockIdx.x; item < items; item += gridDim.x) {
		uint32_t qb = item % a.nqb, t0 = (item / a.nqb) * FZ_TILES_PER_ITEM;
		uint32_t t1 = t0 + FZ_TILES_PER_ITEM < a.nt ? t0 + FZ_TILES_PER_ITEM : a.nt;
		fz_item(a, qb, t0, t1, item == 0 ? a.dbg : NULL, sA, sB, sP, s_nrec);
	}
	__syncthreads();
	if (threadIdx.x == 0 && a.rec_n)
		a.rec_n[blockIdx.x] = *s_nrec < a.rec_cap ? *s_nrec : a.rec_cap;
#else
	if (threadIdx.x == 0 && blockIdx.x == 0 && a.status)
		*a.status = 1;
#endif
}

/* ------------------------------------------------------------ launchers */

static size_t fz_smem_bytes(uint32_t kb)
{
	return (size_t)GPU_FZ_BQ * kb * FZ_BK + FZ_STAGES * FZ_TILE_BYTES +
	       FZ_PSLOTS * FZ_PARAMS * GPU_FZ_BN * sizeof(float) + 16 /* record counter */;
}

int gpu_launch_fused(gpu_matrix_t *m, const gpu_qtile_t *t, uint32_t nq, const gpu_fz_round_t *r,
		     cudaStream_t st, vela_err_t *err)
{
	int rc = 0;
	fz_args a;
	memset(&a, 0, sizeof(a));
	a.q = (const int8_t *)t->qenc;
	a.x = (const int8_t *)m->data;
	a.rscale = m->lvq_scale;
	a.rbias = m->lvq_bias;
	a.rnorm = m->p.metric == GPU_METRIC_L2 ? m->norms : NULL;
	a.qscale = t->qscale;
	a.qsum = t->qsum;
	a.thr = r->thr;
	a.filter = r->filter;
	a.cnt = r->cnt;
	a.rec = r->rec;
	a.rec_n = r->rec_n;
	a.rec_cap = r->rec_cap;
	a.cd = r->cd;
	a.ci = r->ci;
	a.dbg = r->dbg;
	a.status = r->status;
	a.row_alloc = m->cap + GPU_ALIGN;
	a.r_begin = r->r_begin;
	a.r_end = r->r_end;
	a.ntiles = (r->r_end - r->r_begin + GPU_FZ_BN - 1) / GPU_FZ_BN;
	a.coef = m->p.metric == GPU_METRIC_L2 ? -2.f : -1.f;
	a.nq = nq;
	a.ld = m->ld;
	a.kb = (m->ld + FZ_BK - 1) / FZ_BK;
	a.nt = r->nt;
	a.nqb = (nq + GPU_FZ_BQ - 1) / GPU_FZ_BQ;
	a.cap = GPU_FZ_CAP;
	a.layout = r->layout;
	a.dense = r->dense;
	size_t smem = fz_smem_bytes(a.kb);
	uint32_t items = a.nqb * ((a.nt + FZ_TILES_PER_ITEM - 1) / FZ_TILES_PER_ITEM);
	uint32_t grid = items < (uint32_t)m->ctx->sm_count ? items : (uint32_t)m->ctx->sm_count;
	GPU_CK(cudaFuncSetAttribute(k_fused_lvq8, cudaFuncAttributeMaxDynamicSharedMemorySize,
				    (int)smem),
	       "fused kernel shared memory");
	k_fused_lvq8<<<grid, FZ_THREADS, smem, st>>>(a);
	GPU_CKL("fused kernel");
out:
	return rc;
}

static __global__ void k_fz_reset(float *thr, uint32_t *cnt, uint32_t n)
{
	uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) {
		thr[i] = INFINITY;
		cnt[i] = 0;
	}
}

int gpu_launch_fused_reset(float *thr, uint32_t *cnt, uint32_t nq, cudaStream_t st,
			   vela_err_t *err)
{
	int rc = 0;
	k_fz_reset<<<(nq + 255) / 256, 256, 0, st>>>(thr, cnt, nq);
	GPU_CKL("fused reset kernel");
out:
	return rc;
}

/* Blocks (region, y) of the last round: each record to its query's list
 * (here the count's atomic has a whole grid of threads to hide it). */
static __global__ void k_fz_scatter(const uint4 *rec, const uint32_t *rec_n, uint32_t rec_cap,
				    uint32_t *cnt, float *cd, uint32_t *ci, uint32_t cap)
{
	uint32_t n = rec_n[blockIdx.x];
	const uint4 *r = rec + (size_t)blockIdx.x * rec_cap;
	for (uint32_t i = blockIdx.y * blockDim.x + threadIdx.x; i < n;
	     i += gridDim.y * blockDim.x) {
		uint4 e = r[i];
		uint32_t slot = atomicAdd(&cnt[e.x], 1u);
		if (slot < cap) {
			cd[(size_t)e.x * cap + slot] = __uint_as_float(e.y);
			ci[(size_t)e.x * cap + slot] = e.z;
		}
	}
}

int gpu_launch_fused_scatter(const gpu_fz_round_t *r, uint32_t regions, cudaStream_t st,
			     vela_err_t *err)
{
	int rc = 0;
	k_fz_scatter<<<dim3(regions, 16), 256, 0, st>>>(r->rec, r->rec_n, r->rec_cap, r->cnt, r->cd,
							r->ci, GPU_FZ_CAP);
	GPU_CKL("fused scatter kernel");
out:
	return rc;
}

/* ------------------------------------------------------------ self-check */

/* Runs the kernel on one tile (the matrix's first code rows as queries
 * against its first 256 rows) with one descriptor convention and compares
 * its raw int32 dot products with cuBLAS's int8 GEMM of the same codes.
 * Returns the mismatches (0 = equal; the first one described in `what`),
 * -1 on a CUDA error (err filled), -2 when this build has no sm_90a code for
 * the device. */
static long fz_check_one(gpu_matrix_t *m, int layout, char *what, size_t cap, vela_err_t *err)
{
	int rc = 0;
	long bad = -1;
	const uint32_t nr = GPU_FZ_BN;
	uint32_t nq = m->rows < GPU_FZ_BQ ? (uint32_t)m->rows : GPU_FZ_BQ;
	int nqp = (int)GPU_ROUND_UP(nq, GPU_ALIGN);
	cudaStream_t st = m->ctx->stream[0];
	size_t nd = (size_t)GPU_FZ_BQ * nr;
	int32_t *dbg = NULL, *ref = NULL, *h = NULL;
	uint32_t *cnt = NULL, hstatus = 0;
	float *fl = NULL;
	const int32_t one = 1, zero = 0;
	gpu_qtile_t t;
	gpu_fz_round_t r;
	memset(&t, 0, sizeof(t));
	memset(&r, 0, sizeof(r));
	h = (int32_t *)malloc(2 * nd * sizeof(int32_t));
	float *ninf = (float *)malloc(GPU_FZ_BQ * sizeof(float));
	if (!h || !ninf) {
		rc = VELA_ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < GPU_FZ_BQ; i++)
		ninf[i] = -INFINITY; /* the epilogue keeps nothing */
	GPU_CK(cudaMalloc((void **)&dbg, 2 * nd * sizeof(int32_t)), "fused self-check");
	ref = dbg + nd;
	GPU_CK(cudaMalloc((void **)&cnt, (GPU_FZ_BQ + 1) * sizeof(uint32_t)), "fused self-check");
	GPU_CK(cudaMalloc((void **)&fl, 3 * GPU_FZ_BQ * sizeof(float)), "fused self-check");
	GPU_CK(cudaMemsetAsync(dbg, 0x5A, 2 * nd * sizeof(int32_t), st), "fused self-check");
	GPU_CK(cudaMemsetAsync(cnt, 0, (GPU_FZ_BQ + 1) * sizeof(uint32_t), st), "fused self-check");
	GPU_CK(cudaMemsetAsync(fl, 0, 2 * GPU_FZ_BQ * sizeof(float), st), "fused self-check");
	GPU_CK(cudaMemcpyAsync(fl + 2 * GPU_FZ_BQ, ninf, GPU_FZ_BQ * sizeof(float),
			       cudaMemcpyHostToDevice, st), "fused self-check");
	t.qenc = m->data;
	t.qscale = fl;
	t.qsum = fl + GPU_FZ_BQ;
	r.thr = fl + 2 * GPU_FZ_BQ;
	r.cnt = cnt;
	r.cd = fl;               /* never written: nothing is kept */
	r.ci = (uint32_t *)fl;
	r.dbg = dbg;
	r.status = cnt + GPU_FZ_BQ;
	r.r_begin = 0;
	r.r_end = nr;
	r.nt = 1;
	r.layout = layout;
	if ((rc = gpu_launch_fused(m, &t, nq, &r, st, err)))
		goto out;
	GPU_CKB(cublasGemmEx(m->ctx->blas[0], CUBLAS_OP_T, CUBLAS_OP_N, (int)nr, nqp, (int)m->ld,
			     &one, m->data, CUDA_R_8I, (int)m->ld, m->data, CUDA_R_8I, (int)m->ld,
			     &zero, ref, CUDA_R_32I, (int)nr, CUBLAS_COMPUTE_32I, CUBLAS_GEMM_DEFAULT),
		"fused self-check GEMM");
	GPU_CK(cudaMemcpyAsync(h, dbg, 2 * nd * sizeof(int32_t), cudaMemcpyDeviceToHost, st),
	       "fused self-check");
	GPU_CK(cudaMemcpyAsync(&hstatus, cnt + GPU_FZ_BQ, sizeof(uint32_t), cudaMemcpyDeviceToHost,
			       st), "fused self-check");
	GPU_CK(cudaStreamSynchronize(st), "fused self-check");
	if (hstatus) {
		bad = -2;
		snprintf(what, cap, hstatus == 1 ? "no sm_90a code for this device"
						 : "shared memory not 1024-byte aligned");
		goto out;
	}
	bad = 0;
	for (uint32_t q = 0; q < nq; q++)
		for (uint32_t c = 0; c < nr; c++) {
			int32_t got = h[(size_t)q * nr + c], want = h[nd + (size_t)q * nr + c];
			if (got != want && bad++ == 0)
				snprintf(what, cap, "query %u row %u: %d, cuBLAS %d", q, c, got, want);
		}
out:
	free(h);
	free(ninf);
	cudaFree(dbg);
	cudaFree(cnt);
	cudaFree(fl);
	return rc ? -1 : bad;
}

/* The first fused search of a context checks the kernel against cuBLAS on
 * the matrix at hand (wgmma descriptors and the sm_90a build are what a
 * host without a Hopper GPU cannot test), first with the 128-byte swizzled
 * layout, then without swizzling, and remembers the outcome: 1 swizzled,
 * 2 unswizzled, -1 not usable (c->fused_note says why). */
void gpu_fused_selfcheck(gpu_matrix_t *m)
{
	gpu_ctx_t *c = m->ctx;
	if (c->fused_state)
		return;
	char w1[128] = "", w0[128] = "";
	vela_err_t e = {0};
	long b1 = fz_check_one(m, 1, w1, sizeof(w1), &e);
	long b0 = b1 != 0 && b1 != -1 ? fz_check_one(m, 0, w0, sizeof(w0), &e) : 0;
	if (b1 == -1 || b0 == -1) {
		/* a launch that failed leaves the context usable for the tiled path */
		cudaGetLastError();
		c->fused_state = -1;
		snprintf(c->fused_note, sizeof(c->fused_note), "fused LVQ-8 self-check failed: %s",
			 e.msg);
		return;
	}
	c->fused_state = b1 == 0 ? 1 : b0 == 0 ? 2 : -1;
	if (b1 == 0)
		snprintf(c->fused_note, sizeof(c->fused_note), "fused LVQ-8 self-check: ok");
	else
		snprintf(c->fused_note, sizeof(c->fused_note),
			 "fused LVQ-8 self-check, swizzled: %ld mismatches (%s); unswizzled: %ld (%s)",
			 b1, w1, b0, b0 ? w0 : "ok");
}
