#!/bin/bash
# gpu/run-device.sh — everything issue 7 measures on a GPU host, as one
# command: the tests (gpu_test), the benchmark against torch and the cuBLAS
# ceiling (bench/knn_vs_torch.py), then a compute-sanitizer memcheck of a
# quick test pass. Needs only the CUDA toolkit, CMake and PyTorch.
# When a recorded partitions batch is there ($PART_DUMP, default
# build/part100k.bin: bench_hybrid --dump-partitions on the engine's machine,
# carried along), part_replay_gpu replays it after the tests (docs/gpu.md).
# The benchmark includes the fused LVQ-8 path (gpu_knn GPU_PATH_FUSED).
#
#   gpu/run-device.sh [build-dir]      (outputs also under $OUT when set)
#
# A build directory made on another host is used when its binaries resolve
# their libraries here; else gpu/ is built from source first.
set -u
OUT=${OUT:-/tmp/vela-gpu}
mkdir -p "$OUT"
B=${1:-build/gpu}
[ $# -gt 0 ] && shift
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version --format=csv \
	| tee "$OUT/nvidia-smi.txt"
if [ ! -x "$B/gpu_test" ] || ldd "$B/gpu_test" | grep -q 'not found' || ! "$B/gpu_test" probe >/dev/null 2>&1; then
	echo "== building gpu/ here"
	B=build/gpu-here
	cmake -S gpu -B "$B" -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build "$B" -j 16 2>&1 | tail -3
fi
echo "== gpu_test"
timeout 240 "$B/gpu_test" 2>&1 | tee "$OUT/gpu_test.log"
PART_DUMP=${PART_DUMP:-build/part100k.bin}
if [ -f "$PART_DUMP" ]; then
	echo "== partitions batch replay ($PART_DUMP)"
	[ -x "$B/part_replay_gpu" ] || cmake --build "$B" --target part_replay_gpu -j 16 2>&1 | tail -2
	timeout 120 "$B/part_replay_gpu" "$PART_DUMP" --reps 5 2>&1 | tee "$OUT/part_replay.log"
fi
echo "== benchmark"
PYTHONUNBUFFERED=1 timeout 240 python3 gpu/bench/knn_vs_torch.py --lib "$B/libvela_gpu.so" "$@" 2>&1 \
	| tee "$OUT/bench.log"
if command -v ncu >/dev/null; then
	echo "== ncu: kernel durations of one BF16 run (select vs GEMM)"
	timeout 90 ncu --clock-control none --metrics gpu__time_duration.sum \
		--kernel-name regex:'k_select|gemm|sm90|Kernel' --launch-skip 40 --launch-count 6 \
		"$B/gpu_bench" 200000 768 4096 10 BF16 2048 16384 2>&1 \
		| grep -E '^  [a-zA-Z_].*\(|gpu__time_duration|bench' | tee "$OUT/ncu.log"
	timeout 90 ncu --clock-control none --section SpeedOfLight --section Occupancy \
		--section WarpStateStats --section MemoryWorkloadAnalysis \
		--kernel-name regex:k_select --launch-skip 20 --launch-count 1 \
		"$B/gpu_bench" 200000 768 4096 10 BF16 2048 16384 >"$OUT/ncu-detail.log" 2>&1
	grep -E 'Duration|Throughput|Achieved Occupancy|Stall|Registers' "$OUT/ncu-detail.log" | head -20
	echo "== ncu: the fused LVQ-8 kernel's last round (300k x 768, 4,096 queries)"
	timeout 90 ncu --clock-control none --section SpeedOfLight --section WarpStateStats \
		--kernel-name regex:k_fused --launch-skip 3 --launch-count 1 \
		"$B/gpu_bench" 300000 768 4096 10 LVQ8 0 0 fused >"$OUT/ncu-fused.log" 2>&1
	grep -E 'Duration|Throughput|Warp Cycles' "$OUT/ncu-fused.log" | head -10
fi
if command -v compute-sanitizer >/dev/null; then
	echo "== compute-sanitizer memcheck (quick pass)"
	timeout 110 compute-sanitizer --tool memcheck --print-limit 20 "$B/gpu_test" 0 quick \
		>"$OUT/memcheck.log" 2>&1
	grep -m 12 -A 6 -E 'Invalid|ERROR SUMMARY|gpu_test:' "$OUT/memcheck.log"
fi
