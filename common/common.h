/**
 * @file common.h
 * @brief Errors, logging, CPU feature detection, hashing and small helpers
 * shared by every vela module. The lowest layer: includes nothing of vela
 * but the public error header.
 */
#ifndef VELA_COMMON_H
#define VELA_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vela/errors.h"

/* ---------------------------------------------------------------- logging */

enum vela_log_level {
	VELA_LOG_DEBUG = 0,
	VELA_LOG_INFO = 1,
	VELA_LOG_WARN = 2,
	VELA_LOG_ERROR = 3,
	VELA_LOG_OFF = 4
};

#define VELA_LOG_LEVEL_DEFAULT VELA_LOG_INFO

/** Messages below `level` are dropped. Thread-safe. */
void vela_log_set_level(int level);
int vela_log_get_level(void);
/** Parse "debug|info|warn|error|off"; returns VELA_EINVAL on anything else. */
int vela_log_level_parse(const char *name, int *level);
/** Write one line to stderr with time and level. Never pass secrets. */
void vela_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define vela_debug(...) vela_log(VELA_LOG_DEBUG, __VA_ARGS__)
#define vela_info(...) vela_log(VELA_LOG_INFO, __VA_ARGS__)
#define vela_warn(...) vela_log(VELA_LOG_WARN, __VA_ARGS__)
#define vela_error(...) vela_log(VELA_LOG_ERROR, __VA_ARGS__)

/* -------------------------------------------------------- CPU features */

/** Instruction-set features used for run-time kernel dispatch. */
enum vela_cpu_feature {
	VELA_CPU_AVX2 = 1u << 0,
	VELA_CPU_FMA = 1u << 1,
	VELA_CPU_F16C = 1u << 2,
	VELA_CPU_AVX512F = 1u << 3,
	VELA_CPU_AVX512BW = 1u << 4,
	VELA_CPU_AVX512VNNI = 1u << 5,
};

/**
 * @brief Bit set of vela_cpu_feature the CPU *and* the OS (XSAVE state)
 * support. Computed once, cached. The environment variable VELA_CPU_MAX
 * (scalar|avx2|avx512) caps it, for testing the fallback paths.
 */
unsigned vela_cpu_features(void);
/** Human-readable list, e.g. "avx2 fma f16c"; static storage. */
const char *vela_cpu_features_str(void);

/* ---------------------------------------------------------------- hashing */

/** XXH3 64-bit hash of `len` bytes (xxHash). */
uint64_t vela_hash64(const void *data, size_t len);
/** XXH3 64-bit hash with a seed. */
uint64_t vela_hash64_seed(const void *data, size_t len, uint64_t seed);

/* ---------------------------------------------------------------- memory */

/** Aligned allocation (alignment a power of two >= sizeof(void*)); free with free(). NULL on failure or overflow. */
void *vela_aligned_alloc(size_t alignment, size_t size);
/** `n * size` or SIZE_MAX on overflow (so a following malloc fails). */
size_t vela_mul_size(size_t n, size_t size);

/* --------------------------------------------------------- byte order */

static inline void vela_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

static inline uint32_t vela_get_be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
	       ((uint32_t)p[2] << 8) | p[3];
}

static inline void vela_put_be64(uint8_t *p, uint64_t v)
{
	vela_put_be32(p, (uint32_t)(v >> 32));
	vela_put_be32(p + 4, (uint32_t)v);
}

static inline uint64_t vela_get_be64(const uint8_t *p)
{
	return ((uint64_t)vela_get_be32(p) << 32) | vela_get_be32(p + 4);
}

/** Monotonic clock in nanoseconds. */
uint64_t vela_now_ns(void);

/* ------------------------------------------------ byte buffers
 * For the on-disk formats that are packed field by field (qd-trees,
 * partition layouts, layout files): a growable writer whose failure is
 * sticky (check `oom` once at the end) and a bounded reader whose overrun
 * is sticky (check `bad` once; reads past the end give zeros). Fields are
 * host order (little-endian on every host vela builds for). */
typedef struct vela_wbuf {
	uint8_t *b; /**< malloc'd; the caller frees it */
	size_t len, cap;
	bool oom;
} vela_wbuf_t;

/** Append n bytes (no-op once oom). */
void vela_wbuf_put(vela_wbuf_t *w, const void *src, size_t n);
static inline void vela_wbuf_u32(vela_wbuf_t *w, uint32_t v) { vela_wbuf_put(w, &v, 4); }
static inline void vela_wbuf_u64(vela_wbuf_t *w, uint64_t v) { vela_wbuf_put(w, &v, 8); }

typedef struct vela_rbuf {
	const uint8_t *b; /**< borrowed */
	size_t len, o;
	bool bad;
} vela_rbuf_t;

/** The next n bytes, or NULL (and bad set) past the end. */
const uint8_t *vela_rbuf_take(vela_rbuf_t *r, size_t n);
uint32_t vela_rbuf_u32(vela_rbuf_t *r);
uint64_t vela_rbuf_u64(vela_rbuf_t *r);

#endif
