/**
 * @file types.h
 * @brief Plain value types shared by the engine API and every layer below
 * it (metrics, element types, field types, limits). No functions here.
 */
#ifndef VELA_TYPES_H
#define VELA_TYPES_H

#include <stddef.h>
#include <stdint.h>

/** Distance metrics with Redis semantics; smaller is closer. */
typedef enum vela_metric {
	VELA_METRIC_L2 = 0,     /**< squared Euclidean distance (no square root) */
	VELA_METRIC_IP = 1,     /**< 1 - <u, v> */
	VELA_METRIC_COSINE = 2, /**< 1 - cos(u, v); vectors are normalised at insert */
} vela_metric_t;

/** Element type of a stored vector (the blob is little-endian). */
typedef enum vela_vec_type {
	VELA_VEC_FLOAT32 = 0, /**< 4 bytes per element */
	VELA_VEC_FLOAT16 = 1, /**< IEEE binary16, 2 bytes per element */
} vela_vec_type_t;

/** Attribute field types of an index schema. */
typedef enum vela_field_type {
	VELA_FIELD_TAG = 0,
	VELA_FIELD_NUMERIC = 1,
	VELA_FIELD_TEXT = 2,
	VELA_FIELD_VECTOR = 3,
} vela_field_type_t;

/** Vector index algorithms. */
typedef enum vela_algo {
	VELA_ALGO_FLAT = 0,  /**< exact scan */
	VELA_ALGO_GRAPH = 1, /**< Vamana graph (served for HNSW and SVS-VAMANA) */
} vela_algo_t;

/** Vector dimension limits (pgvector stops at 2,000; we go well past it). */
#define VELA_DIM_MIN 1u
#define VELA_DIM_MAX 32768u

/** K of a KNN query. */
#define VELA_K_DEFAULT 10u
#define VELA_K_MIN 0u
#define VELA_K_MAX 100000u

/** Which backend runs the dense math (batch kNN, projection, k-means):
 * DESIGN.md §6. Set with vela_gpu_mode_set (server: CONFIG SET gpu). */
typedef enum vela_gpu_mode {
	VELA_GPU_NO = 0,   /**< always the CPU backend (OpenBLAS + SIMD) */
	VELA_GPU_YES = 1,  /**< the CUDA backend; refused when there is no device */
	VELA_GPU_AUTO = 2, /**< the CUDA backend when a device is present, else the CPU */
} vela_gpu_mode_t;

#define VELA_GPU_MODE_DEFAULT VELA_GPU_AUTO

/** What vela_gpu_info reports (a snapshot; plain values, no pointers to free). */
typedef struct vela_gpu_info {
	vela_gpu_mode_t mode;
	const char *backend;  /**< "cpu" or "cuda" (static storage) */
	char device[128];     /**< the device in use, or "none" */
	int device_count;     /**< usable CUDA devices (0 without CUDA support) */
	int library_loaded;   /**< 1 when libvela_gpu.so (the CUDA backend) is loaded */
	uint64_t fallbacks;   /**< GPU calls that failed and were answered on the CPU */
	uint32_t resident;    /**< row blocks kept in device memory */
	uint64_t resident_bytes; /**< device bytes those blocks hold */
} vela_gpu_info_t;

/** One search hit: a docid inside an index and its distance. */
typedef struct vela_hit {
	float dist;
	uint32_t docid;
} vela_hit_t;

#endif
