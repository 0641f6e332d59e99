/**
 * @file index.h
 * @brief Vector access structures. For now: FLAT, the exact scan.
 *
 * FLAT keeps every vector in one contiguous, 64-byte aligned array
 * addressed by dense docid (row `docid`), F32 or F16 (binary16 halves),
 * plus a presence bitmap. A single query scans the rows with the quant/
 * kernels; a batch of queries becomes blocked OpenBLAS sgemm calls
 * (DESIGN.md §4), with a per-query top-k selection.
 *
 * Distances follow quant.h (Redis semantics). Results are ordered by
 * ascending (distance, docid): equal distances go to the smaller docid.
 *
 * Thread-safety: any number of threads may call the read functions
 * (search, search_batch, range, count, docids, get, memory) on one index
 * at the same time. Writers (set, remove, batch_blocks_set) need external
 * exclusion against every other call on that index; the db layer holds a
 * rwlock. The index takes no locks itself.
 */
#ifndef VELA_INDEX_H
#define VELA_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include <roaring/roaring.h>

#include "vela/errors.h"
#include "vela/types.h"

/** Opaque FLAT index. Created by flat_create, freed by flat_destroy. */
typedef struct flat_index flat_index_t;

/** Largest docid a FLAT index accepts (UINT32_MAX is kept free as "none"). */
#define FLAT_DOCID_MAX (UINT32_MAX - 1u)

/** Largest squared Euclidean norm of a stored or query vector. Keeping
 * every |x|^2 well below FLT_MAX (3.4e38) means no distance, GEMM term or
 * partial sum can overflow to infinity or NaN. Larger vectors: VELA_EINVAL. */
#define FLAT_NORM_SQ_MAX 1e37

/** Rows of the database per sgemm call in flat_search_batch. Larger blocks
 * amortise the per-call overhead; smaller ones bound the scratch memory
 * (q_block * db_block floats for the result tile, plus db_block * dim
 * floats for F16 decoding). Rounded up to a multiple of 64. The effective
 * block is also capped so the F16 scratch stays under 16 MiB. */
#define FLAT_BATCH_DB_BLOCK_DEFAULT 4096u
#define FLAT_BATCH_DB_BLOCK_MIN 64u
#define FLAT_BATCH_DB_BLOCK_MAX 65536u

/** Queries per sgemm call in flat_search_batch. */
#define FLAT_BATCH_Q_BLOCK_DEFAULT 512u
#define FLAT_BATCH_Q_BLOCK_MIN 1u
#define FLAT_BATCH_Q_BLOCK_MAX 8192u

/** A filter is iterated (instead of scanning every row and testing it)
 * when |filter| * FLAT_FILTER_ITERATE_RATIO <= count. In a batch such a
 * query skips the GEMM and takes the single-query path. */
#define FLAT_FILTER_ITERATE_RATIO 16u

/**
 * @brief Create an empty FLAT index.
 * @param dim     vector dimension, VELA_DIM_MIN..VELA_DIM_MAX (else VELA_EDIM)
 * @param metric  VELA_METRIC_L2, _IP or _COSINE (else VELA_EINVAL)
 * @param type    VELA_VEC_FLOAT32 or _FLOAT16 (else VELA_EINVAL)
 * @param out     receives the index; the caller frees it with flat_destroy
 * @return 0, VELA_EINVAL, VELA_EDIM or VELA_ENOMEM
 */
int flat_create(uint32_t dim, vela_metric_t metric, vela_vec_type_t type, flat_index_t **out);

/** Free the index and everything it owns. NULL is a no-op. */
void flat_destroy(flat_index_t *f);

/**
 * @brief Store `vec` (dim floats, copied) as docid's vector, replacing any
 * earlier one. For COSINE the caller has already normalised it. F16 indexes
 * store it rounded to nearest-even halves. Grows the array as needed.
 * @return 0; VELA_EINVAL for NULL arguments, docid > FLAT_DOCID_MAX, a
 * non-finite element, an element that overflows binary16 (F16), or
 * |vec|^2 > FLAT_NORM_SQ_MAX; VELA_ENOMEM (the index is then unchanged).
 */
int flat_set(flat_index_t *f, uint32_t docid, const float *vec);

/** Drop docid's vector. @return 0, VELA_EINVAL (NULL), VELA_ENOTFOUND */
int flat_remove(flat_index_t *f, uint32_t docid);

/** Number of stored vectors. */
uint64_t flat_count(const flat_index_t *f);

/** Dimension, metric and element type given at creation. */
uint32_t flat_dim(const flat_index_t *f);
vela_metric_t flat_metric(const flat_index_t *f);
vela_vec_type_t flat_type(const flat_index_t *f);

/**
 * @brief Docids present. Owned by the index: do not modify or free; valid
 * until the next writer call or flat_destroy.
 */
const roaring_bitmap_t *flat_docids(const flat_index_t *f);

/**
 * @brief Copy docid's stored vector into `out` (dim floats; F16 decoded).
 * @return 0, VELA_EINVAL (NULL), VELA_ENOTFOUND
 */
int flat_get(const flat_index_t *f, uint32_t docid, float *out);

/** Bytes held by the index (arrays at their allocated capacity, bitmap). */
size_t flat_memory(const flat_index_t *f);

/**
 * @brief Set the sgemm block sizes of flat_search_batch (tests use tiny
 * ones to exercise block edges). A writer call.
 * @return 0 or VELA_EINVAL when a value is outside its MIN..MAX
 */
int flat_batch_blocks_set(flat_index_t *f, uint32_t db_rows, uint32_t q_rows);

/**
 * @brief Exact k nearest neighbours of `q` (dim floats) among the present
 * docids, restricted to `filter` when not NULL (docids in the filter but
 * not in the index are ignored).
 * @param out    caller-owned, k slots; filled with *n_out hits, ascending
 *               (dist, docid)
 * @param n_out  min(k, number of candidates)
 * @return 0; VELA_EINVAL for NULL arguments, k > VELA_K_MAX, a non-finite
 * query or |q|^2 > FLAT_NORM_SQ_MAX. k = 0 gives 0 hits.
 */
int flat_search(const flat_index_t *f, const float *q, uint32_t k,
		const roaring_bitmap_t *filter, vela_hit_t *out, uint32_t *n_out);

/**
 * @brief flat_search for `nq` queries at once (Q: nq rows of dim floats).
 * @param filters  NULL, or nq entries each NULL (no filter) or a bitmap
 * @param out      caller-owned, nq * k slots; query i's hits at out + i*k
 * @param n_out    caller-owned, nq counts
 *
 * The database is read in blocks of rows; each block is scored against a
 * block of queries with one sgemm (L2 as |q|^2 + |x|^2 - 2 q.x with |x|^2
 * precomputed per docid; IP/COSINE as 1 - q.x). That form rounds
 * differently from the direct kernels (|q|^2 + |x|^2 can be much larger
 * than the distance), so the GEMM only nominates candidates: every docid
 * whose GEMM distance is within twice a proven rounding bound of the
 * running k-th best is kept, and the survivors are re-scored with the
 * direct kernel. Hence the hits, their order and their distances are
 * identical to flat_search's for the same query, ties and near-ties
 * included. A query whose candidate pool overflows with near-ties (many
 * duplicate vectors at the k-th distance) is answered by the scan path.
 *
 * Scratch memory: q_block * db_block floats, db_block * dim floats for
 * F16, and about 2k + 64 hits per query. BLAS threads: OPENBLAS_NUM_THREADS.
 * @return as flat_search; VELA_ENOMEM. On error `out` is unspecified.
 */
int flat_search_batch(const flat_index_t *f, const float *Q, uint32_t nq, uint32_t k,
		      const roaring_bitmap_t *const *filters, vela_hit_t *out, uint32_t *n_out);

/**
 * @brief All present docids (within `filter` if not NULL) at distance <=
 * radius, ascending (dist, docid).
 * @param out  receives a malloc'd array (NULL when *n_out is 0); the caller
 *             frees it with free()
 * @return 0; VELA_EINVAL (NULL arguments, NaN radius, bad query);
 * VELA_ENOMEM
 */
int flat_range(const flat_index_t *f, const float *q, float radius,
	       const roaring_bitmap_t *filter, vela_hit_t **out, size_t *n_out);

#endif
