/**
 * @file index.h
 * @brief Vector access structures: FLAT, the exact scan, and GRAPH, the
 * Vamana proximity graph (see the GRAPH section below).
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

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

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
 * @return 0, VELA_EINVAL (NULL), VELA_ENOTFOUND, VELA_EUNSUPPORTED (present,
 * but the rows were released: flat_rows_release)
 */
int flat_get(const flat_index_t *f, uint32_t docid, float *out);

/** Bytes held by the index (arrays at their allocated capacity, bitmap). */
size_t flat_memory(const flat_index_t *f);

/**
 * @brief Free the stored vectors for good and keep only the docids ("ids
 * only"). For fields whose vectors live elsewhere (a compressed graph store:
 * db/vecindex.c): the F32 rows would otherwise cost more memory than the
 * codes. Afterwards flat_set/flat_remove only record presence (flat_set still
 * checks the vector), flat_count/flat_docids/flat_rows' uid and generation
 * keep working, flat_rows reports no rows (data NULL, n 0), and flat_get and
 * every search (flat_search, _range, _batch, _multi, part_build) return
 * VELA_EUNSUPPORTED. There is no way back. A writer call; NULL is a no-op.
 */
void flat_rows_release(flat_index_t *f);

/** False after flat_rows_release (and for NULL). */
bool flat_has_rows(const flat_index_t *f);

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
 *
 * The work goes through the process's backend (index_backend_knn, see the
 * BACKEND section): the CPU backend is the blocked sgemm above; the GPU
 * backend nominates candidates on the device and re-scores them on the
 * host with the same direct kernel, answering a query there only when its
 * candidate list provably holds the whole top k (else that query takes the
 * CPU path), so the answer is the same on either backend. Slots of `out`
 * past n_out[i] are set to {INFINITY, UINT32_MAX}.
 * @return as flat_search; VELA_ENOMEM. On error `out` is unspecified.
 */
int flat_search_batch(const flat_index_t *f, const float *Q, uint32_t nq, uint32_t k,
		      const roaring_bitmap_t *const *filters, vela_hit_t *out, uint32_t *n_out);

/* ---------------------------------------------------------------- FLAT multi
 * A set of exact filtered queries, each with its own k and filter, planned
 * together (the batch executor's exact plans, issue 6; HQI's multi-query
 * optimisation, reference/hybrid-queries.md §1.4: read each block of rows
 * once and score it against all its queries with one matrix product).
 * Queries passing the same filter pointer form a group, answered the
 * cheapest of three ways by a cost model (units: one row x query product
 * of the gathered GEMM; g = the group's queries, m = its filter's docids,
 * n = the rows; measured by bench_multi, BENCHMARKS.md "Hybrid batch
 * executor"):
 *   scan    g * m * scan_cost           flat_search's scan, query by query;
 *   gather  m * gather_cost + g * m     (g >= group_min) the present matches
 *                                       are copied in docid order into a
 *                                       contiguous block (at most
 *                                       gather_rows rows and
 *                                       FLAT_MULTI_GATHER_BYTES at a time);
 *                                       each block is scored against the
 *                                       whole group with one
 *                                       index_backend_knn (a GEMM) and each
 *                                       query keeps its own top k;
 *   dense   g * n * dense_cost          every dense-chosen query of the set
 *                                       shares one index_backend_knn over
 *                                       the field's rows with a filter per
 *                                       query (flat_search_batch: each db
 *                                       block read once for all of them);
 *                                       unfiltered queries always go here;
 *                                       fewer than dense_min in all scan.
 * Every answer equals flat_search's for that query (same hits, order and
 * distances, bit for bit): the backend returns direct-kernel distances
 * ordered by (dist, row), and gathered rows ascend with docid.
 */

/** Rows gathered per block of a shared filter (scratch: that many rows of
 * the field, plus a float and two uint32 each), at most
 * FLAT_MULTI_GATHER_BYTES of rows. */
#define FLAT_MULTI_GATHER_ROWS_DEFAULT 16384u
#define FLAT_MULTI_GATHER_ROWS_MIN 1u
#define FLAT_MULTI_GATHER_ROWS_MAX (1u << 20)
#define FLAT_MULTI_GATHER_BYTES (4u << 20)
/** Queries a gathered group needs: an sgemm with fewer rows of queries
 * runs at matrix-vector speed (bench_multi: at 768 dims one query costs
 * ~40 products per row, at 64 dims ~8). */
#define FLAT_MULTI_GROUP_MIN_DEFAULT 4u
#define FLAT_MULTI_GROUP_MIN_MIN 1u
#define FLAT_MULTI_GROUP_MIN_MAX 65536u
/** Queries the whole-field GEMM needs; fewer scan (bench_wire, 100k x
 * 768: a GEMM of one or two rows loses to the scan). */
#define FLAT_MULTI_DENSE_MIN_DEFAULT 3u
#define FLAT_MULTI_DENSE_MIN_MIN 1u
#define FLAT_MULTI_DENSE_MIN_MAX 65536u
/** Scoring one match by the scan (a random row read and the direct
 * kernel), in products; bench_multi: 2.5-5 at 64 and 768 dims, more once
 * the matches outgrow the caches. */
#define FLAT_MULTI_SCAN_COST_DEFAULT 5.0f
#define FLAT_MULTI_SCAN_COST_MIN 0.0f
#define FLAT_MULTI_SCAN_COST_MAX 1e9f
/** Copying one match into a gathered block, in products (bench_multi: ~8
 * at 64 and 768 dims). */
#define FLAT_MULTI_GATHER_COST_DEFAULT 8.0f
#define FLAT_MULTI_GATHER_COST_MIN 0.0f
#define FLAT_MULTI_GATHER_COST_MAX 1e9f
/** One row x query of the whole-field GEMM, in products: it also builds a
 * filter mask per query and block (bench_multi: 1.5-3). */
#define FLAT_MULTI_DENSE_COST_DEFAULT 1.5f
#define FLAT_MULTI_DENSE_COST_MIN 0.0f
#define FLAT_MULTI_DENSE_COST_MAX 1e9f

/** Tunables of flat_search_multi. Fill with flat_multi_opts_default. */
typedef struct flat_multi_opts {
	uint32_t gather_rows, group_min, dense_min;
	float scan_cost, gather_cost, dense_cost;
} flat_multi_opts_t;

void flat_multi_opts_default(flat_multi_opts_t *o);

/** How flat_search_multi answered a query. */
enum flat_multi_how {
	FLAT_MULTI_SCAN = 0,   /**< flat_search's scan */
	FLAT_MULTI_GATHER = 1, /**< gathered blocks of a shared sparse filter */
	FLAT_MULTI_DENSE = 2,  /**< the shared whole-field GEMM */
};

/** One query of flat_search_multi. The caller fills q, k, filter, out. */
typedef struct flat_multi_query {
	const float *q;                 /**< dim floats, borrowed */
	uint32_t k;                     /**< 0..VELA_K_MAX */
	/** NULL = every present docid; borrowed. Queries whose filters are
	 * equal should pass the same pointer: that is what groups them. */
	const roaring_bitmap_t *filter;
	vela_hit_t *out;                /**< caller-owned, k slots */
	uint32_t n_out;                 /**< set: min(k, candidates) */
	uint8_t how;                    /**< set: enum flat_multi_how */
	uint64_t scored;                /**< set: rows scored for this query */
} flat_multi_query_t;

/**
 * @brief Answer every query of `qs` as flat_search(f, q, k, filter) would,
 * planned together as described above. `opts` NULL = defaults.
 * Thread-safety: a read call (as flat_search).
 * @return 0; VELA_EINVAL (NULL arguments, k > VELA_K_MAX, a non-finite or
 * too large query, an option outside its MIN..MAX; nothing is answered);
 * VELA_ENOMEM (the answers are then unspecified)
 */
int flat_search_multi(const flat_index_t *f, flat_multi_query_t *qs, uint32_t nq,
		      const flat_multi_opts_t *opts);

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

/* ================================================================ GRAPH
 * Vamana proximity graph (DiskANN, Subramanya et al. 2019; as built by
 * Intel SVS, reference/leanvec-lvq.md §3). Nodes are dense docids; the
 * graph holds only adjacency. Vectors are reached through a caller-supplied
 * graph_store_t, so the same graph serves F32, F16, LVQ or LeanVec
 * encodings (traverse on a compressed primary, re-rank on a secondary).
 *
 * Thread-safety: any number of threads may call graph_search, graph_count,
 * graph_contains, graph_entry, graph_neighbors, graph_memory and graph_save
 * on one graph at the same time. Writers (graph_build, graph_insert,
 * graph_delete, graph_consolidate) need external exclusion against every
 * other call on that graph (the db layer's rwlock); graph_build and
 * graph_consolidate use `threads` worker threads internally and return
 * only when they have joined.
 */

/** Opaque graph. Created by graph_create or graph_load, freed by graph_destroy. */
typedef struct graph graph_t;

/**
 * Access to the vectors behind the graph. Every callback must be callable
 * from several threads at once and must not call back into the graph.
 * The store (and `ctx`) must outlive the graph; the graph copies the struct.
 * A node's vector must stay readable from graph_insert/graph_build until
 * graph_consolidate has dropped the node (deleted nodes are still traversed).
 */
typedef struct graph_store {
	void *ctx;
	uint32_t dim;         /**< query dimension (floats passed to prepare) */
	vela_metric_t metric; /**< decides alpha's default and the prune rule */
	size_t query_size;    /**< bytes of a prepared query (>= 1) */
	/** Turn a query (dim floats) into the form dist/dist_rerank take
	 * (`pq`: query_size bytes, caller-owned). 0 or a VELA_E code. */
	int (*prepare)(void *ctx, const float *q, void *pq);
	/** Traversal distance of a prepared query to stored `id`. */
	float (*dist)(void *ctx, const void *pq, uint32_t id);
	/** Higher-precision distance for re-ranking; NULL = no re-rank. */
	float (*dist_rerank)(void *ctx, const void *pq, uint32_t id);
	/** Distance between two stored vectors (build, insert, pruning); must
	 * be symmetric and use the traversal encoding. */
	float (*dist_ids)(void *ctx, uint32_t a, uint32_t b);
	/** Optional: decode stored `id` into dim floats. Used to find the
	 * medoid (the node nearest the mean, §3.1); NULL = approximate it as
	 * the sampled node with the least summed distance to a sample. */
	int (*get)(void *ctx, uint32_t id, float *out);
	/** Optional: hint that stored `id`'s traversal record (what dist and
	 * dist_ids read) is about to be read: start loading it. Must accept
	 * any id (out of range: nothing) and never change a result. */
	void (*prefetch)(const void *ctx, uint32_t id);
} graph_store_t;

/** Max out-degree R (§3.1 "graph_max_degree"). */
#define GRAPH_MAX_DEGREE_DEFAULT 32u
#define GRAPH_MAX_DEGREE_MIN 4u
#define GRAPH_MAX_DEGREE_MAX 256u

/** Build search window L (§3.1 "window_size"). */
#define GRAPH_CONSTRUCTION_WINDOW_SIZE_DEFAULT 200u
#define GRAPH_CONSTRUCTION_WINDOW_SIZE_MIN 4u
#define GRAPH_CONSTRUCTION_WINDOW_SIZE_MAX 4096u

/** The first build pass (alpha 1) searches with window L / this (but at
 * least R): it only has to make the graph navigable for the second. From
 * GRAPH_FIRST_PASS_LARGE_N nodes on, L / GRAPH_FIRST_PASS_WINDOW_DIV_LARGE:
 * measured at 1M x 128 (BENCHMARKS.md "Build: first-pass window"), L / 4
 * cost recall at a fixed search window (0.961 -> 0.946 at W 20), L / 2
 * kept most of it (0.954) for 9 % more build time. */
#define GRAPH_FIRST_PASS_WINDOW_DIV 4u
#define GRAPH_FIRST_PASS_WINDOW_DIV_LARGE 2u
#define GRAPH_FIRST_PASS_LARGE_N 500000u

/** Candidate pool for pruning (§3.1 "max_candidate_pool_size"); 0 = 3 L. */
#define GRAPH_CANDIDATE_POOL_DEFAULT 0u
#define GRAPH_CANDIDATE_POOL_MIN 8u
#define GRAPH_CANDIDATE_POOL_MAX 16384u

/** Degree a full node is re-pruned to when back-edges overflow it
 * (§3.1 "prune_to"); 0 = R - 4 when R >= 16, else R. */
#define GRAPH_PRUNE_TO_DEFAULT 0u
#define GRAPH_PRUNE_TO_MIN 1u
#define GRAPH_PRUNE_TO_MAX GRAPH_MAX_DEGREE_MAX

/** Pruning alpha (§3.1): >= 1 for L2, in (0, 1] for IP and COSINE (where
 * the rule compares similarities); 0 = the metric's default. */
#define GRAPH_ALPHA_DEFAULT 0.0f
#define GRAPH_ALPHA_L2_DEFAULT 1.2f
#define GRAPH_ALPHA_L2_MIN 1.0f
#define GRAPH_ALPHA_L2_MAX 2.0f
#define GRAPH_ALPHA_IP_DEFAULT 0.95f
#define GRAPH_ALPHA_IP_MIN 0.5f
#define GRAPH_ALPHA_IP_MAX 1.0f

/** Worker threads of graph_build and graph_consolidate. */
#define GRAPH_THREADS_DEFAULT 1u
#define GRAPH_THREADS_MIN 1u
#define GRAPH_THREADS_MAX 256u

/** Search window (§3.2 "search_window_size"; Redis SEARCH_WINDOW_SIZE). */
#define GRAPH_SEARCH_WINDOW_SIZE_DEFAULT 10u
#define GRAPH_SEARCH_WINDOW_SIZE_MIN 1u
#define GRAPH_SEARCH_WINDOW_SIZE_MAX VELA_K_MAX

/** Search buffer capacity (§3.2 "search_buffer_capacity"): candidates kept
 * and re-ranked; 0 = the window. */
#define GRAPH_SEARCH_BUFFER_DEFAULT 0u
#define GRAPH_SEARCH_BUFFER_MIN 0u
#define GRAPH_SEARCH_BUFFER_MAX VELA_K_MAX

/** Largest docid a graph accepts (nodes are addressed by dense docid). */
#define GRAPH_ID_MAX (UINT32_MAX - 1u)

/** Build parameters. Fill with graph_params_default, then adjust. */
typedef struct graph_params {
	uint32_t max_degree;   /**< R */
	uint32_t window;       /**< L of the build searches */
	uint32_t pool;         /**< candidate pool, 0 = 3 L */
	uint32_t prune_to;     /**< 0 = default (see above) */
	float alpha;           /**< 0 = the metric's default */
	uint32_t threads;      /**< workers of build and consolidate */
	/** NULL, or a flag another thread sets to stop graph_build between its
	 * batches (it then returns VELA_EBUSY and leaves the graph empty).
	 * Borrowed: must outlive the graph. */
	const atomic_bool *cancel;
} graph_params_t;

/** Search parameters. NULL in graph_search means all defaults. */
typedef struct graph_search_params {
	uint32_t window;  /**< W; raised to k when smaller */
	uint32_t buffer;  /**< re-rank buffer, >= W (0 = W) */
	/** NULL = every node; else only docids in the filter are returned.
	 * Borrowed for the call. Non-matching nodes are still traversed; the
	 * window is widened by 1 / (estimated selectivity) and doubled again
	 * while fewer than k matches are found. Very selective filters are
	 * better served by an exact scan: that choice is the planner's. */
	const roaring_bitmap_t *filter;
} graph_search_params_t;

/** Defaults above (alpha, pool and prune_to left 0 = derived). */
void graph_params_default(graph_params_t *p);
void graph_search_params_default(graph_search_params_t *sp);

/**
 * @brief Create an empty graph over `st` (copied; see graph_store_t for
 * its lifetime). `p` NULL = defaults.
 * @param out  receives the graph; free it with graph_destroy
 * @return 0; VELA_EINVAL (NULL store callbacks, a parameter outside its
 * MIN..MAX, a bad metric or dim); VELA_ENOMEM
 */
int graph_create(const graph_store_t *st, const graph_params_t *p, graph_t **out);

/**
 * @brief Point the graph at another store holding the same vectors under
 * the same ids (a graph built over a private copy, then installed over the
 * live store). `st` is copied; dim and metric must match.
 * @return 0 or VELA_EINVAL (NULL, different dim or metric)
 */
int graph_store_rebind(graph_t *g, const graph_store_t *st);

/** Free the graph and everything it owns (never the store). NULL is a no-op. */
void graph_destroy(graph_t *g);

/**
 * @brief Build the graph over `ids` (n distinct docids, borrowed) into an
 * empty graph: medoid entry point, then two passes (alpha 1, then alpha)
 * of batched greedy search + robust prune + back-edges (§3.1).
 * Deterministic for a given input, whatever the thread count.
 * @return 0; VELA_EINVAL (graph not empty, id > GRAPH_ID_MAX, duplicate
 * ids); VELA_ENOMEM (the graph is then empty again)
 */
int graph_build(graph_t *g, const uint32_t *ids, size_t n);

/**
 * @brief Add one node (FreshDiskANN insert): search for it, prune, link,
 * add back-edges. The store must already hold its vector. A node left
 * without an in-edge (its back-edges, or another node's last in-edge,
 * pruned away) is linked again, so every live node stays reachable.
 * @return 0; VELA_EINVAL (id > GRAPH_ID_MAX); VELA_EEXISTS (present or
 * deleted-not-yet-consolidated); VELA_ENOMEM (the node is then either
 * absent, or present with some back-edges missing: the graph stays valid)
 */
int graph_insert(graph_t *g, uint32_t id);

/**
 * @brief The vector of `id` changed in the store (or a deleted id is used
 * again): re-link it as an insert would; an absent id is inserted.
 * @return as graph_insert (never VELA_EEXISTS)
 */
int graph_update(graph_t *g, uint32_t id);

/**
 * @brief Tombstone `id`: still traversed, never returned, removed for good
 * by graph_consolidate. A live node whose only live in-edge came from `id`
 * gets another (one search each; on VELA_ENOMEM the next write runs
 * graph_connect). @return 0, VELA_EINVAL, VELA_ENOTFOUND
 */
int graph_delete(graph_t *g, uint32_t id);

/**
 * @brief Repair every live node pointing at a tombstone (FreshDiskANN
 * Algorithm 4: its live neighbours plus the tombstones' live neighbours,
 * robust-pruned to R), then drop the tombstones and run graph_connect. A
 * deleted entry point is replaced by the medoid of the remaining nodes.
 * @return 0 or VELA_ENOMEM (some nodes may be repaired already; the
 * tombstones stay and the graph is valid: call again; or, from the final
 * graph_connect, they are gone and the graph is valid)
 */
int graph_consolidate(graph_t *g);

/**
 * @brief Make every live node reachable from the entry point: a walk over
 * the edges from the entry, then each node it missed gets an edge from the
 * nearest live node a search for its vector reaches (NSG, Fu et al. 2019,
 * §3.3; a full node drops its farthest neighbour that keeps two in-edges).
 * graph_build and graph_consolidate end with it; graph_insert, graph_update
 * and graph_delete link again any live node they leave without an in-edge
 * from a live node, or with one only from its own out-neighbour, so it is
 * only needed for longer cycles cut off together (run before a snapshot).
 * O(n R) when nothing is missed, plus one search per missed node.
 * @return 0 (the graph is unchanged when all nodes were reached), VELA_EINVAL,
 * VELA_ENOMEM (the graph stays valid)
 */
int graph_connect(graph_t *g);

/**
 * @brief Approximate k nearest live nodes of `q` (dim floats): greedy
 * best-first search (§3.2) from the entry point, a window of W, a buffer of
 * max(buffer, W) re-ranked with dist_rerank when the store has one.
 * @param out    caller-owned, k slots; *n_out hits ascending (dist, docid)
 * @return 0; VELA_EINVAL (NULL arguments, k > VELA_K_MAX, a parameter out
 * of range); VELA_ENOMEM; a code from the store's prepare
 */
int graph_search(const graph_t *g, const float *q, uint32_t k, const graph_search_params_t *sp,
		 vela_hit_t *out, uint32_t *n_out);

/** Live (not deleted) nodes. */
uint64_t graph_count(const graph_t *g);
/** Deleted nodes not yet consolidated. */
uint64_t graph_count_deleted(const graph_t *g);
/** Is `id` a live node? */
bool graph_contains(const graph_t *g, uint32_t id);
/** Entry point, or UINT32_MAX when the graph is empty. */
uint32_t graph_entry(const graph_t *g);
/**
 * @brief Out-neighbours of `id` (live or deleted). Owned by the graph;
 * valid until the next writer call. @return their number (0 if absent)
 */
uint32_t graph_neighbors(const graph_t *g, uint32_t id, const uint32_t **nbrs);
/** Bytes held by the graph (adjacency at its allocated capacity). */
size_t graph_memory(const graph_t *g);

/** Snapshot format version written by graph_save. */
#define GRAPH_FORMAT_VERSION 1u

/**
 * @brief Write a snapshot to `f` (magic, version, parameters, nodes,
 * adjacency, entry point, tombstones, then an XXH3 checksum of all of it).
 * The caller owns `f` and flushes/closes it. @return 0, VELA_EINVAL,
 * VELA_EIO, VELA_ENOMEM
 */
int graph_save(const graph_t *g, FILE *f);

/**
 * @brief Read a snapshot written by graph_save over store `st` (same rules
 * as graph_create). Every length is bounds-checked before use and the
 * checksum is verified before parsing; `threads` is not stored (loaded as
 * the default; pass `threads` > 0 to override).
 * @return 0; VELA_ECORRUPT (bad magic, checksum, truncation or an
 * inconsistent field); VELA_EVERSION (written by a newer format);
 * VELA_EINVAL (NULL arguments, dim or metric differs from the store);
 * VELA_EIO; VELA_ENOMEM
 */
int graph_load(FILE *f, const graph_store_t *st, uint32_t threads, graph_t **out);

/**
 * @brief A graph_store_t over a FLAT index (F32 or F16): traversal and
 * pruning use the same exact kernels as flat_search, no re-rank. `f` is
 * borrowed and must outlive every graph using the store; a deleted node's
 * row must stay in `f` until graph_consolidate. Queries follow
 * flat_search's semantics (COSINE: the caller normalises).
 * @return 0 or VELA_EINVAL
 */
int graph_store_flat(const flat_index_t *f, graph_store_t *out);

/* ================================================================ GRAPH LVQ
 * Compressed vector store for the graph (index/graph_store_lvq.c): LVQ
 * (reference/leanvec-lvq.md §2) and LeanVec (§1) records addressed by
 * docid, exposed as a graph_store_t so graph_create/_build/_search work
 * unchanged. Kinds follow Redis' COMPRESSION names:
 *   LVQ8, LVQ4        one-level LVQ; traversal on the codes, no re-rank.
 *   LVQ4x4, LVQ4x8    two-level LVQ (§2.2): traversal on the 4-bit primary,
 *                     the graph's buffer re-ranked with primary + residual
 *                     (§2.3 "Graph search with LVQ-B1xB2").
 *   LeanVec4x8, 8x8   primary = LVQ4 / LVQ8 of the d-dim projection (graph
 *                     built and searched on it), secondary = LVQ8 of the
 *                     full vector, used only to re-rank (§1.1, fact 4).
 * Storage: two growable arrays of fixed-size records, the primary (what
 * traversal reads) apart from the residual/secondary (read only to
 * re-rank), as §7 suggests; plus |x|^2 per vector for LeanVec-OOD with L2.
 *
 * LeanVec modes (§1.1): ID (PCA, quant_leanvec_train_id): L2 reduces both
 * sides as P (v - mu), IP/COSINE as P v. OOD (quant_leanvec_train_ood, data
 * matrix B, query matrix A, no centring): IP/COSINE traverse on
 * 1 - <A q, B x>; L2 on |q|^2 + |x|^2 - 2 <A q, B x> (our extension: OOD
 * approximates inner products, so the L2 form is built from one).
 * Projections and LVQ means are frozen after training (§1.1): later
 * vectors are encoded with them.
 *
 * dist_ids (build and insert pruning) works on the primary encoding: the
 * primary of `a` is decoded and prepared as a query against the primary
 * codes of `b` (so it is symmetric up to float rounding). The prepared `a`
 * is cached per thread (thread-local, keyed by a per-store generation that
 * every set/remove renews), since the graph calls dist_ids(x, *) many times
 * in a row for one x; no locks. Primaries wider than
 * GRAPH_LVQ_IDS_CACHE_DIM_MAX use a per-call heap buffer instead (on
 * allocation failure the pair reads as infinitely far: the graph stays
 * valid). For LeanVec-OOD dist_ids is L2 (or 1 - IP) between B x and B y.
 * get (the medoid) decodes the primary for LVQ kinds and the LVQ8
 * secondary for LeanVec.
 *
 * Thread-safety: any number of threads may use the graph_store_t (search,
 * build workers) and graph_lvq_store_memory/_count at once; set and remove
 * need external exclusion against every other call (the db rwlock).
 */

/** Opaque compressed store. Created by graph_lvq_store_create, freed by
 * graph_lvq_store_destroy. */
typedef struct graph_lvq_store graph_lvq_store_t;

/** Compression kinds (Redis COMPRESSION names; never renumber). */
typedef enum graph_lvq_kind {
	GRAPH_LVQ_LVQ8 = 0,
	GRAPH_LVQ_LVQ4 = 1,
	GRAPH_LVQ_LVQ4X4 = 2,
	GRAPH_LVQ_LVQ4X8 = 3,
	GRAPH_LVQ_LEANVEC4X8 = 4,
	GRAPH_LVQ_LEANVEC8X8 = 5,
	GRAPH_LVQ_KIND_COUNT = 6
} graph_lvq_kind_t;

/** LeanVec projection training (§1.2, §1.3). */
typedef enum graph_lvq_leanvec_mode {
	GRAPH_LVQ_LEANVEC_ID = 0,  /**< PCA of the data sample */
	GRAPH_LVQ_LEANVEC_OOD = 1  /**< needs a query sample; without one: ID */
} graph_lvq_leanvec_mode_t;

/** LeanVec reduced dimension d; 0 = QUANT_LEANVEC_DIMS_DEFAULT(dim) = dim/2
 * (§1.4). MAX is the full dimension (checked at create). */
#define GRAPH_LVQ_REDUCE_DIM_DEFAULT 0u
#define GRAPH_LVQ_REDUCE_DIM_MIN 1u

/** Widest primary whose prepared dist_ids query is cached per thread
 * (2 * 4 KiB of thread-local storage); wider ones allocate per call. */
#define GRAPH_LVQ_IDS_CACHE_DIM_MAX 1024u

/** Store parameters. Fill with graph_lvq_params_default, then set dim and
 * metric (and kind). */
typedef struct graph_lvq_params {
	graph_lvq_kind_t kind;        /**< default LVQ8 (§0 fact 7: dim < 200) */
	uint32_t dim;                 /**< full dimension, VELA_DIM_MIN..MAX */
	vela_metric_t metric;         /**< L2, IP or COSINE */
	uint32_t reduce_dim;          /**< LeanVec d; 0 = dim / 2 */
	graph_lvq_leanvec_mode_t leanvec_mode; /**< default ID */
} graph_lvq_params_t;

/** kind LVQ8, dim 0 (must be set), L2, reduce_dim 0, LeanVec ID. */
void graph_lvq_params_default(graph_lvq_params_t *p);

/**
 * @brief Parse a Redis COMPRESSION name, case-insensitively: LVQ8, LVQ4,
 * LVQ4x4, LVQ4x8, LeanVec4x8, LeanVec8x8.
 * @return 0 or VELA_EINVAL (NULL or unknown name; *out untouched)
 */
int graph_lvq_kind_parse(const char *name, graph_lvq_kind_t *out);

/** Canonical name of a kind ("LVQ4x8", ...); "?" when out of range. Static. */
const char *graph_lvq_kind_name(graph_lvq_kind_t kind);

/**
 * @brief Train a store on a sample and return it empty.
 * @param sample        n_sample rows of dim floats (borrowed; COSINE rows
 *                      normalised by the caller): the LVQ mean(s) and, for
 *                      LeanVec, the projection(s). n_sample >= 1, and >= d
 *                      for LeanVec. SVS trains on up to 100 000 rows (§1.2).
 * @param query_sample  LeanVec-OOD only: n_q query rows of dim floats
 *                      (borrowed). NULL or n_q = 0 trains ID instead.
 * @param out           receives the store; free with graph_lvq_store_destroy
 * @param err           NULL or filled with a message on failure
 * @return 0; VELA_EINVAL (NULL, bad kind/metric/mode, too small a sample,
 *   non-finite sample); VELA_EDIM (dim or reduce_dim out of range);
 *   VELA_ENOMEM; training errors of quant_leanvec_train_*
 */
int graph_lvq_store_create(const graph_lvq_params_t *p, const float *sample, size_t n_sample,
			   const float *query_sample, size_t n_q, graph_lvq_store_t **out,
			   vela_err_t *err);

/** Free the store and everything it owns. NULL is a no-op. Every graph
 * using its graph_lvq_store() must be destroyed first. */
void graph_lvq_store_destroy(graph_lvq_store_t *s);

/**
 * @brief Encode `vec` (dim floats, not kept; normalised by the caller for
 * COSINE) as docid's record, replacing any earlier one (then call
 * graph_update). Grows the arrays as needed. A writer call.
 * @return 0; VELA_EINVAL (NULL, docid > GRAPH_ID_MAX, a non-finite element
 *   or one LVQ cannot represent, see quant_lvq_encode); VELA_ENOMEM. On
 *   error the store is unchanged.
 */
int graph_lvq_store_set(graph_lvq_store_t *s, uint32_t docid, const float *vec);

/**
 * @brief Mark docid removed. The record is kept and stays readable through
 * the graph_store_t (the graph traverses tombstones until
 * graph_consolidate); a later set reuses it. A writer call.
 * @return 0, VELA_EINVAL (NULL), VELA_ENOTFOUND (absent or removed)
 */
int graph_lvq_store_remove(graph_lvq_store_t *s, uint32_t docid);

/** Live (set, not removed) docids. */
uint64_t graph_lvq_store_count(const graph_lvq_store_t *s);

/** The store's graph_store_t (owned by the store, valid until destroy):
 * pass it to graph_create / graph_load. */
const graph_store_t *graph_lvq_store(const graph_lvq_store_t *s);

/*
 * Scans over the store (the exact-plan paths of a compressed field whose F32
 * rows were released, db/vecindex.c): every live record, or those of
 * `filter`, scored with the most precise distance the store keeps -- the
 * re-rank distance (two-level LVQ: both levels; LeanVec: the full-dimension
 * LVQ8 secondary), else the codes (LVQ8, LVQ4) -- so the answer is the exact
 * one over the reconstructed vectors. Distances follow flat_search's
 * conventions; queries are as for the graph_store_t (COSINE normalised by
 * the caller). Read calls (see Thread-safety above).
 */

/** @brief The k nearest live records (ascending by (dist, docid)).
 * @return 0; VELA_EINVAL (NULL, k > VELA_K_MAX, non-finite q); VELA_ENOMEM */
int graph_lvq_store_search(const graph_lvq_store_t *s, const float *q, uint32_t k,
			   const roaring_bitmap_t *filter, vela_hit_t *out, uint32_t *n_out);

/** @brief Every live record within `radius` (dist <= radius), ascending;
 * *out malloc'd (NULL when none), the caller frees it.
 * @return 0; VELA_EINVAL; VELA_ENOMEM */
int graph_lvq_store_range(const graph_lvq_store_t *s, const float *q, float radius,
			  const roaring_bitmap_t *filter, vela_hit_t **out, size_t *n_out);

/** @brief Reconstruct live docid's vector (dim floats) from its most
 * precise encoding. @return 0, VELA_EINVAL (NULL), VELA_ENOTFOUND, VELA_ENOMEM */
int graph_lvq_store_decode(const graph_lvq_store_t *s, uint32_t docid, float *out);

/** Bytes per vector of the records (primary + secondary + norm), the
 * figure to compare with dim * 4 for F32. */
size_t graph_lvq_store_record_size(const graph_lvq_store_t *s);

/** Bytes held by the store: record arrays at their allocated capacity,
 * presence flags, projections, encoders and scratch. */
size_t graph_lvq_store_memory(const graph_lvq_store_t *s);

/* ================================================================ BACKEND
 * The dense math of the layers above -- batch kNN over a block of rows,
 * batched scans of a partition layout's clusters, LeanVec projection and
 * training (Gram matrices), k-means steps -- goes
 * through a small table of
 * operations (DESIGN.md §1, §6) with two implementations:
 *   cpu   OpenBLAS sgemm tiles, the quant/ kernels for exact re-scoring and
 *         a bounded heap per query (the FLAT batch engine, index/flat_batch.c);
 *   cuda  gpu/gpu.h (index/backend_gpu.c, compiled only with
 *         VELA_HAVE_CUDA): GEMM + top-k on the device.
 *
 * Selection is process-wide: mode VELA_GPU_NO (CPU), _YES (the GPU; setting
 * it fails when there is no device) or _AUTO (the GPU when
 * gpu_device_count() > 0, the default). It is resolved on first use; with no
 * GPU the CPU backend is used and that is logged once. Callers use the
 * index_backend_* wrappers: when the GPU backend fails mid-call (a CUDA or
 * cuBLAS error, device memory exhausted) the wrapper logs it, counts a
 * fallback and answers that call on the CPU; it never fails because of the
 * GPU. Shapes the GPU does not serve (k > INDEX_BACKEND_GPU_K_MAX, very wide
 * vectors) go to the CPU silently.
 *
 * Residency: the GPU backend keeps a block's rows in device memory between
 * calls, keyed by index_rows_t.uid, and uploads them again only when
 * index_rows_t.generation differs from the uploaded one. Any change to the
 * rows (FLAT: every flat_set / flat_remove) must change the generation: it
 * invalidates the resident copy, and the next call re-uploads the whole
 * block. The owner calls index_backend_forget(uid) when the rows go away
 * (flat_destroy does). At most INDEX_BACKEND_GPU_RESIDENT_MAX blocks stay
 * resident (least recently used evicted first). The batched partition scan
 * keeps a whole layout's clusters resident the same way, keyed by
 * index_parts_t.uid and .generation (at most INDEX_BACKEND_GPU_PARTS_MAX
 * layouts; part_free forgets its layout's).
 *
 * Thread-safety: every function here may be called from any thread. The
 * GPU backend serialises its device work on one mutex.
 */

/** Largest k the GPU backend serves (gpu.h GPU_K_MAX); larger k runs on the CPU. */
#define INDEX_BACKEND_GPU_K_MAX 4096u
/** Row blocks the GPU backend keeps resident at once. */
#define INDEX_BACKEND_GPU_RESIDENT_MAX 64u

/**
 * A block of rows scored by the kNN operation; every pointer is borrowed for
 * the call. Row numbers 0..n-1 are the ids results carry.
 *
 * Every row 0..n-1 must be finite with |x|^2 <= FLAT_NORM_SQ_MAX, present
 * or not (GEMM tiles read absent rows too; their scores are dropped).
 */
typedef struct index_rows {
	const void *data;       /**< row r at data + r * stride elements */
	vela_vec_type_t type;   /**< VELA_VEC_FLOAT32 or _FLOAT16 (binary16 halves) */
	vela_metric_t metric;   /**< L2, IP or COSINE (rows and queries normalised) */
	uint32_t dim;           /**< VELA_DIM_MIN..VELA_DIM_MAX */
	size_t stride;          /**< elements from one row to the next, >= dim */
	uint64_t n;             /**< rows, <= FLAT_DOCID_MAX + 1 */
	/** NULL = every row present; else (n + 63) / 64 words, bit r of word
	 * r / 64 set = row r present, bits past n clear. */
	const uint64_t *live;
	/** NULL (computed per call) or n floats, |x_r|^2 of the stored values. */
	const float *norms;
	/** 0 = computed, else >= |x_r|^2 of every present row. */
	float norm_max;
	/** Residency key: 0 = transient (a GPU copy lasts one call), else an id
	 * from index_backend_uid_new owned by whoever owns the rows. */
	uint64_t uid;
	/** Changes whenever any row (or n, live) changes; see Residency. */
	uint64_t generation;
	/** CPU tiling: rows and queries per sgemm (0 = FLAT_BATCH_*_DEFAULT;
	 * else within FLAT_BATCH_*_MIN..MAX, db rows rounded up to 64). */
	uint32_t db_block, q_block;
} index_rows_t;

/** One batch kNN request. Pointers are borrowed for the call. */
typedef struct index_knn {
	const float *queries; /**< nq x dim floats, row-major; finite, |q|^2 <=
				   FLAT_NORM_SQ_MAX (COSINE: normalised) */
	uint32_t nq;
	uint32_t k;           /**< 0..VELA_K_MAX */
	/** NULL, or nq entries each NULL (every present row) or the row numbers
	 * query i may return (numbers >= n or of absent rows are ignored). */
	const roaring_bitmap_t *const *filters;
} index_knn_t;

/**
 * The clusters of a partition layout for the batched scan (parts_knn): n_cl
 * row blocks, cluster c's rows cl[c] (row numbers 0..cl[c].n - 1 are the
 * ids results carry). Every block has the dim, type and metric of cl[0];
 * each block's uid and generation are ignored (the set is one key). All
 * borrowed for the call.
 */
typedef struct index_parts {
	const index_rows_t *cl;
	uint32_t n_cl;
	/** Residency key of the whole set: 0 = transient (a GPU copy lasts one
	 * call), else an id from index_backend_uid_new owned by the layout. */
	uint64_t uid;
	/** Changes whenever any cluster's rows (or n_cl) change. */
	uint64_t generation;
} index_parts_t;

/** One (cluster, query) pair of a batched scan. */
typedef struct index_part_pair {
	uint32_t cl;                    /**< < n_cl */
	uint32_t q;                     /**< < nq of the request */
	/** NULL (every present row of the cluster) or the row numbers the pair
	 * may return (numbers >= the cluster's n or of absent rows ignored). */
	const roaring_bitmap_t *filter;
} index_part_pair_t;

/** One batched scan: npairs pairs, one k for all. Pointers borrowed. */
typedef struct index_parts_req {
	const float *queries; /**< nq x dim floats, as index_knn_t's */
	uint32_t nq;
	uint32_t k;           /**< 0..VELA_K_MAX */
	const index_part_pair_t *pairs;
	uint32_t npairs;      /**< pairs naming one cluster consecutively share
				   one CPU scan: pass them grouped by cluster */
} index_parts_req_t;

/** Largest k the GPU batched scan serves (gpu.h GPU_PART_K_MAX); larger k,
 * and a library without gpu_parts_*, run on the CPU. */
#define INDEX_BACKEND_GPU_PARTS_K_MAX 1024u
/** Layouts whose clusters the GPU backend keeps resident at once. */
#define INDEX_BACKEND_GPU_PARTS_MAX 8u

/** The operations of one backend. Tables are static: never freed. */
typedef struct index_backend {
	const char *name; /**< "cpu" or "cuda" */
	/**
	 * @brief Exact k nearest present rows of each query.
	 * out: nq * k hits (caller-owned), query i's at out + i * k, ascending
	 * (dist, row), distances of the quant/ direct kernel (flat_search's);
	 * slots past n_out[i] = min(k, candidates) hold {INFINITY, UINT32_MAX}.
	 * n_out: nq counts (caller-owned).
	 * @return 0; VELA_EINVAL (NULL or out-of-range arguments, a non-finite
	 * or too large query); VELA_ENOMEM; the GPU also VELA_EUNSUPPORTED (a
	 * shape it does not serve) and VELA_EIO (device error). On error `out`
	 * and `n_out` are unspecified.
	 */
	int (*knn)(const index_rows_t *rows, const index_knn_t *req, vela_hit_t *out,
		   uint32_t *n_out, vela_err_t *err);
	/**
	 * @brief Y = X P (LeanVec projection): X n x din, P din x dout, Y n x
	 * dout, row-major, caller-owned, Y not overlapping X or P. The GPU may
	 * use TF32 (relative error ~1e-3 of sum |x_i p_ij|): a projection feeds
	 * an approximate search. quant/'s d x D projections are P transposed.
	 * @return 0; VELA_EINVAL (NULL with n > 0, din or dout outside
	 * 1..VELA_DIM_MAX); VELA_ENOMEM; the GPU also VELA_EIO.
	 */
	int (*project)(const float *X, uint64_t n, uint32_t din, const float *P, uint32_t dout,
		       float *Y, vela_err_t *err);
	/**
	 * @brief One Lloyd iteration: assign each of the n rows of X (n x d) to
	 * its nearest centroid by L2 (GEMM form; near-ties within float rounding
	 * may go either way, exact ties to the lower index), then move each
	 * centroid (C, kc x d, in/out) to the mean of its rows; a centroid with
	 * no rows stays. assign (n entries) and inertia (sum of the squared
	 * distances to the centroids before the move) may be NULL.
	 * @return 0; VELA_EINVAL (NULL X or C, kc = 0, d outside
	 * 1..VELA_DIM_MAX, kc or n above UINT32_MAX); VELA_ENOMEM; GPU: VELA_EIO.
	 */
	int (*kmeans_step)(const float *X, uint64_t n, uint32_t d, float *C, uint32_t kc,
			   uint32_t *assign, double *inertia, vela_err_t *err);
	/**
	 * @brief G = sum_r (x_r - mu)(x_r - mu)^T over the n rows of X (n x d
	 * floats), LeanVec training's second moments (quant_leanvec_gram_fn):
	 * G d x d doubles, row-major, both triangles, caller-owned; mu (d
	 * doubles) NULL = no centring; n = 0 gives G = 0. Products and sums
	 * in double on both backends (the GPU converts rows to double on the
	 * device, cuBLAS dsyrk), so they agree up to the order of additions.
	 * @return 0; VELA_EINVAL (NULL G, NULL X with n > 0, d outside
	 * 1..VELA_DIM_MAX); VELA_ENOMEM; the GPU also VELA_EUNSUPPORTED (a
	 * library without gpu_gram, d above GPU_DIM_MAX) and VELA_EIO.
	 */
	int (*gram)(const float *X, uint64_t n, uint32_t d, const double *mu, double *G,
		    vela_err_t *err);
	/**
	 * @brief The batched partition scan: for each pair p, the exact k
	 * nearest allowed rows of cluster pairs[p].cl to query pairs[p].q, as
	 * knn would answer that cluster for that query and filter (the CPU runs
	 * exactly that: one knn per run of pairs naming one cluster).
	 * out: npairs * k hits (caller-owned), pair p's at out + p * k, row
	 * numbers within the cluster, ascending (dist, row), direct-kernel
	 * distances; slots past n_out[p] hold {INFINITY, UINT32_MAX}. n_out:
	 * npairs counts (caller-owned). Merging a query's pairs is the caller's.
	 * @return 0; VELA_EINVAL (NULL or out-of-range arguments, clusters of
	 * different shapes, a bad query); VELA_ENOMEM; the GPU also
	 * VELA_EUNSUPPORTED (a shape it does not serve, a library without
	 * gpu_parts_*) and VELA_EIO. On error out and n_out are unspecified.
	 */
	int (*parts_knn)(const index_parts_t *parts, const index_parts_req_t *req, vela_hit_t *out,
			 uint32_t *n_out, vela_err_t *err);
} index_backend_t;

/** The CPU backend (always available). */
const index_backend_t *index_backend_cpu(void);

/**
 * @brief The GPU backend, opening the process's CUDA context on device 0
 * on first success (it then lives until exit).
 * @return 0 and *out; VELA_EUNSUPPORTED when built without CUDA or no
 * device is usable (err says which); VELA_EIO when the context fails.
 */
int index_backend_gpu(const index_backend_t **out, vela_err_t *err);

/** Usable CUDA devices (gpu_device_count(), cached); 0 without CUDA. */
int index_backend_gpu_devices(void);

/** The table calls go to now (resolving the mode on first use). */
const index_backend_t *index_backend_current(void);

/**
 * @brief Select the backend for the whole process. VELA_GPU_NO also frees
 * every resident block.
 * @return 0; VELA_EINVAL (unknown mode); VELA_EUNSUPPORTED for VELA_GPU_YES
 * with no CUDA device (or no CUDA in this build), the mode then unchanged.
 */
int index_backend_mode_set(vela_gpu_mode_t mode, vela_err_t *err);
vela_gpu_mode_t index_backend_mode_get(void);
/** Parse "no" / "yes" / "auto" (case-insensitive). @return 0 or VELA_EINVAL */
int index_backend_mode_parse(const char *s, vela_gpu_mode_t *out);
/** "no", "yes", "auto"; "?" when out of range. Static. */
const char *index_backend_mode_name(vela_gpu_mode_t mode);
/** Fill `out` with the current state (mode, backend, device, counters). */
void index_backend_info(vela_gpu_info_t *out);

/** The wrappers: the current backend, the CPU when the GPU fails (see
 * above). Arguments and results as the index_backend_t operations. */
int index_backend_knn(const index_rows_t *rows, const index_knn_t *req, vela_hit_t *out,
		      uint32_t *n_out, vela_err_t *err);
int index_backend_project(const float *X, uint64_t n, uint32_t din, const float *P,
			  uint32_t dout, float *Y, vela_err_t *err);
int index_backend_kmeans_step(const float *X, uint64_t n, uint32_t d, float *C, uint32_t kc,
			      uint32_t *assign, double *inertia, vela_err_t *err);
/** Also a quant_leanvec_gram_fn: what index/ hands LeanVec training. */
int index_backend_gram(const float *X, uint64_t n, uint32_t d, const double *mu, double *G,
		       vela_err_t *err);

/** The batched partition scan (parts_knn) through the current backend. */
int index_backend_parts_knn(const index_parts_t *parts, const index_parts_req_t *req,
			    vela_hit_t *out, uint32_t *n_out, vela_err_t *err);

/** A new process-unique residency key (never 0, never reused). */
uint64_t index_backend_uid_new(void);
/** Drop the resident copy of `uid`, if any (0 and unknown uids: no-op). */
void index_backend_forget(uint64_t uid);

/** Test hook: the next `n` GPU operations fail with VELA_EIO before
 * touching the device, as a device error would (exercises the fallback). */
void index_backend_fault_inject(uint32_t n);

/**
 * @brief A view of a FLAT index's rows for the backend (row = docid, with
 * its uid, generation and sgemm blocks). Borrowed: valid until the next
 * writer call on `f` or flat_destroy.
 */
void flat_rows(const flat_index_t *f, index_rows_t *out);

/* ================================================================ QDTREE
 * The qd-tree of the workload-aware partition layout (HQI, SIGMOD 2023, as
 * reference/hybrid-queries.md §1.3 describes it; the tree itself is Yang
 * et al., SIGMOD 2020): a binary tree whose internal nodes are cuts taken
 * from the recorded workload's predicate atoms (documents satisfying the
 * cut go left, the others right) and whose leaves partition the documents,
 * each with its description (the cuts on its path and their sides).
 *
 * Pure: bitmaps in, tree out. Construction is greedy (§1.3): at a node
 * holding docids D, each candidate cut c splits D into D & c and D \ c; a
 * workload query must visit the left child unless one of its atoms
 * contradicts c, the right one unless one of its atoms implies c. The cut
 * chosen minimises the weight of the node's queries that must visit both
 * children; ties go to the more balanced split (smaller | 2|D & c| - |D| |),
 * then to the lower atom index. A cut leaving a child below leaf_min rows,
 * or one that spares no query a child, is rejected; a node with no cut
 * left is a leaf. Implication and contradiction are decided symbolically
 * between atoms of the same field (TAG value sets: subset / disjoint, the
 * latter only for single-valued fields; numeric ranges: containment /
 * disjoint); anything else may intersect.
 */

/** Values one TAG atom holds (a wider clause is no atom: query.h). */
#define QDTREE_TAG_VALS_MAX 64u
/** Atoms a build takes (cut candidates and query atoms together). */
#define QDTREE_ATOMS_MAX 65536u
/** Smallest leaf, in rows (docs/partitions.md: max(10,000, 32 clusters)). */
#define QDTREE_LEAF_MIN_DEFAULT 10000u
#define QDTREE_LEAF_MIN_MIN 1u
#define QDTREE_LEAF_MIN_MAX (1u << 30)
/** Deepest path: bounds the recursion and the leaf descriptions. */
#define QDTREE_DEPTH_DEFAULT 24u
#define QDTREE_DEPTH_MIN 0u
#define QDTREE_DEPTH_MAX 64u

enum qdtree_atom_kind { QDTREE_ATOM_TAG = 1, QDTREE_ATOM_NUM = 2 };

/** A predicate atom. */
typedef struct qdtree_atom {
	uint8_t kind;        /**< enum qdtree_atom_kind */
	bool single;         /**< TAG: a document holds at most one value of the field */
	uint32_t field;
	uint32_t n_vals;     /**< TAG: any of vals (sorted ascending, distinct value hashes) */
	uint64_t vals[QDTREE_TAG_VALS_MAX];
	uint64_t lo, hi;     /**< NUM: the inclusive range, order-preserving encoding */
} qdtree_atom_t;

/** Does every document matching a match c? (symbolic; false = unknown) */
bool qdtree_atom_implies(const qdtree_atom_t *a, const qdtree_atom_t *c);
/** Can no document match both a and c? (symbolic; false = unknown) */
bool qdtree_atom_disjoint(const qdtree_atom_t *a, const qdtree_atom_t *c);

/** A workload query: the AND of atoms (indices into the build's atoms). */
typedef struct qdtree_query {
	const uint32_t *atoms; /**< borrowed for the build */
	uint32_t n_atoms;
	double weight;         /**< > 0: how often it was seen */
} qdtree_query_t;

typedef struct qdtree_opts {
	uint64_t leaf_min;
	uint32_t depth_max;
} qdtree_opts_t;

void qdtree_opts_default(qdtree_opts_t *o);

/** One node: an internal node has a cut (atom index), a leaf has leaf >= 0. */
typedef struct qdtree_node {
	int32_t cut;           /**< atom index, -1 for a leaf */
	uint32_t left, right;  /**< child nodes (internal nodes) */
	int32_t leaf;          /**< leaf number, -1 for an internal node */
} qdtree_node_t;

/** One step of a leaf's description: the cut and the side taken. */
typedef struct qdtree_step {
	uint32_t cut; /**< atom index */
	bool in;      /**< the leaf's documents satisfy the cut (left) */
} qdtree_step_t;

/** Opaque tree. Owns copies of the atoms and its leaves' bitmaps. */
typedef struct qdtree qdtree_t;

/**
 * @brief Build the tree over `docs`.
 * @param atoms  n_atoms atoms, copied
 * @param bms    n_atoms bitmaps: bms[i] the documents matching atom i, or
 *               NULL when atom i is no cut candidate (it may still appear
 *               in queries); borrowed for the call
 * @param qs     nq workload queries, borrowed for the call
 * @param o      NULL = defaults
 * @param out    the tree; free with qdtree_free
 * @return 0; VELA_EINVAL (NULL arguments, an atom index out of range, a
 *         bad option or weight, n_atoms > QDTREE_ATOMS_MAX); VELA_ENOMEM
 */
int qdtree_build(const roaring_bitmap_t *docs, const qdtree_atom_t *atoms,
		 const roaring_bitmap_t *const *bms, uint32_t n_atoms, const qdtree_query_t *qs,
		 uint32_t nq, const qdtree_opts_t *o, qdtree_t **out);
void qdtree_free(qdtree_t *t);

/** Nodes (root = 0) and leaves. */
uint32_t qdtree_node_count(const qdtree_t *t);
const qdtree_node_t *qdtree_node(const qdtree_t *t, uint32_t i);
uint32_t qdtree_leaf_count(const qdtree_t *t);
/** The leaf's documents; owned by the tree. */
const roaring_bitmap_t *qdtree_leaf_docids(const qdtree_t *t, uint32_t leaf);
/** The leaf's description, root first: *steps owned by the tree. */
uint32_t qdtree_leaf_desc(const qdtree_t *t, uint32_t leaf, const qdtree_step_t **steps);
/** The tree's copy of atom i (NULL out of range), and how many it has. */
const qdtree_atom_t *qdtree_atom(const qdtree_t *t, uint32_t i);
uint32_t qdtree_atom_count(const qdtree_t *t);

/**
 * @brief Route a query (the AND of n atoms, not necessarily the tree's) to
 * the leaves whose description it may intersect (symbolically, as the
 * build decides): visit[leaf] = 1 for those, 0 for the others (caller's
 * array of qdtree_leaf_count entries). @return the leaves visited
 */
uint32_t qdtree_route(const qdtree_t *t, const qdtree_atom_t *q, uint32_t n, uint8_t *visit);

/** Version of qdtree_pack's format. */
#define QDTREE_PACK_VERSION 1u
/**
 * @brief Serialise the tree: version, atoms, nodes, leaf descriptions and
 * leaf docids (roaring portable format). Host byte order.
 * @param out malloc'd bytes the caller frees
 * @return 0; VELA_EINVAL; VELA_ENOMEM
 */
int qdtree_pack(const qdtree_t *t, uint8_t **out, size_t *len);
/**
 * @brief Rebuild a tree from qdtree_pack's bytes. Never trusts them: atom
 * kinds and value counts, node references (children after their parent,
 * each node reached once, every leaf once), description cuts and depths
 * are checked. @return 0; VELA_ECORRUPT; VELA_EVERSION; VELA_EINVAL; VELA_ENOMEM
 */
int qdtree_unpack(const uint8_t *buf, size_t len, qdtree_t **out);

/* ================================================================ PARTITIONS
 * The partition layout (HQI, reference/hybrid-queries.md §1.3-§1.4): the
 * documents of each qd-tree leaf clustered by k-means (Lloyd iterations
 * through index_backend_kmeans_step on a sample, then every row assigned to
 * its nearest centroid with one index_backend_knn over the centroids);
 * each cluster keeps a copy of its rows, contiguous, in docid order, with
 * their docids, norms and a GPU residency uid -- or their LVQ-8 codes
 * (part_encoding_t), decoded per scan. Rows are read through a
 * part_source_t, so a compressed field (no F32 rows) is clustered from its
 * store's decoded vectors.
 *
 * part_search answers a batch (MicroNN §3.4, "Inspired by HQI"): each
 * query goes to the leaves holding a match of its filter; per leaf one
 * backend kNN ranks the leaf's centroids for all its queries; each query
 * walks its clusters nearest first (over all its leaves), skipping those
 * without a match, until the matches of the clusters taken reach
 * probe_factor * k (nprobe scaled with selectivity, the cuVS / Paimon
 * rule of §1.6 written in matches: about C k / s rows' worth of clusters,
 * and robust to filters anti-correlated with the query) and at least
 * probe_min clusters; the pairs are inverted to cluster -> queries and the
 * whole batch is scored with index_backend_parts_knn (one call per k the
 * queries ask: on the CPU each cluster once against its queries, on a GPU
 * one kernel), the filter passed as row numbers (rows ascend with docid: a
 * docid's row is its rank in the cluster), and each query's hits are merged across
 * clusters in (distance, docid) order. With probe_factor 0 every cluster
 * holding a match is scanned and the answer is flat_search's, bit for bit.
 *
 * The layout is a copy of the field's rows at part_build: later writes to
 * the FLAT index are not seen unless the owner applies them. part_remove
 * takes a document's row out and part_insert puts one in at its rank (the
 * rows of a cluster stay in docid order, which part_search relies on); the
 * db layer removes every written or deleted docid, answers written ones
 * from its own exact "delta" scan and folds them back in (part_assign,
 * part_insert) in the background (db/layout.c, docs/partitions.md §5).
 * Thread-safety: part_search may run concurrently on one layout;
 * part_remove is a writer call (no search meanwhile).
 */

/** Rows per cluster the build aims at (MicroNN: 100-500, §1.3). */
#define PART_CLUSTER_ROWS_DEFAULT 256u
#define PART_CLUSTER_ROWS_MIN 8u
#define PART_CLUSTER_ROWS_MAX 65536u
/** Lloyd iterations per leaf. */
#define PART_KMEANS_ITERS_DEFAULT 12u
#define PART_KMEANS_ITERS_MIN 0u
#define PART_KMEANS_ITERS_MAX 100u
/** Rows per leaf k-means trains on (a deterministic sample). */
#define PART_KMEANS_SAMPLE_DEFAULT 100000u
#define PART_KMEANS_SAMPLE_MIN 1000u
#define PART_KMEANS_SAMPLE_MAX (1u << 24)
/** A fixed probing rule: matches to scan per k before a query stops
 * probing (0 = off: the calibrated rule below, or every cluster with a
 * match when recall is 0). On the generated workload at 20,000 x 32
 * (128-row clusters, 7 leaves) recall@10 in the bucket s = 1 is 0.68 at 24,
 * 0.81 at 50, 0.95 at 100, 0.98 at 200; at 200,000 x 64, 100 gave 0.68
 * (BENCHMARKS.md "Partitions"): a constant does not carry over, hence the
 * calibration. */
#define PART_PROBE_FACTOR_DEFAULT 100.0f
#define PART_PROBE_FACTOR_MIN 0.0f
#define PART_PROBE_FACTOR_MAX 1e6f
/** The calibrated rule's target: mean recall of a query's top k against
 * the exact answer over the layout (0 = off). */
#define PART_RECALL_DEFAULT 0.95f
#define PART_RECALL_MIN 0.5f
#define PART_RECALL_MAX 1.0f
/** part_calibrate: sample queries (rows of the layout; each keeps its
 * 10 * 4^(STEPS-1) = 10,240 nearest rows, 8 bytes each: 5 MB at 64;
 * a seventh step, 40,960, cost 2.4 s more of a 1M layout's 4.8 s build);
 * ladder steps k' = 10 * 4^j; recall levels. */
#define PART_CAL_QUERIES_DEFAULT 64u
#define PART_CAL_QUERIES_MIN 1u
#define PART_CAL_QUERIES_MAX 1024u
#define PART_CAL_STEPS 6u
#define PART_CAL_LEVELS 10u
/** Clusters with a match a query scans at least. */
#define PART_PROBE_MIN_DEFAULT 3u
#define PART_PROBE_MIN_MIN 1u
#define PART_PROBE_MIN_MAX 65536u

/**
 * How a cluster stores its rows (chosen at part_build, kept by part_pack):
 * FIELD: the field's element type (F32 or F16), as the FLAT index holds
 * them, with their norms: probed exhaustively the answer is flat_search's.
 * LVQ8: LVQ-8 codes (Aguerrebere et al. 2023, "Similarity search in the
 * blink of an eye with compressed indices", §3): x - mu, mu the mean of the
 * layout's rows at the build (one per layout, as the paper's dataset mean;
 * frozen: later inserts use it), quantised per vector to 8 bits between its
 * own min and max; a row is [lo f32][step f32][dim u8 codes], padded to 4
 * bytes, x^ = mu + lo + step * c (no norms kept). Scoring decodes a
 * cluster into a per-call F32 block, so distances are those of the decoded
 * vectors x^. dim 64: 72 bytes a row instead of 256 + 4.
 */
typedef enum part_encoding {
	PART_ENC_FIELD = 0,
	PART_ENC_LVQ8 = 1,
	PART_ENC_COUNT = 2
} part_encoding_t;

typedef struct part_opts {
	uint32_t cluster_rows, kmeans_iters, kmeans_sample;
	uint64_t seed;
	part_encoding_t encoding; /**< default PART_ENC_FIELD */
} part_opts_t;

void part_opts_default(part_opts_t *o);

typedef struct part_search_opts {
	float probe_factor; /**< > 0: the fixed rule; 0: calibrated (or exact) */
	uint32_t probe_min;
	float recall;       /**< the calibrated rule's target; 0 with probe_factor 0: exact */
} part_search_opts_t;

void part_search_opts_default(part_search_opts_t *o);

/** Opaque layout: owns its copies of the rows. */
typedef struct part_layout part_layout_t;

/**
 * Where part_build, part_assign, part_insert and part_unpack read a row:
 * `f` gives the docids (present rows), dim, type and metric; the vectors
 * come from f's own rows when `row` is NULL (f must then keep them:
 * flat_has_rows), else from `row` -- a compressed field, whose FLAT index
 * keeps only docids, passes its store's decode (graph_lvq_store_decode,
 * through db_vec_get). `row` writes docid's dim floats (COSINE: normalised
 * as stored) and returns 0 or an error, which the caller returns. Everything
 * is borrowed for the call; `row` is called from the calling thread only.
 */
typedef int (*part_row_fn)(const void *ctx, uint32_t docid, float *out);
typedef struct part_source {
	const flat_index_t *f;
	part_row_fn row; /**< NULL: f's rows */
	const void *ctx; /**< row's first argument */
} part_source_t;

/**
 * @brief Cluster each leaf's present rows of src->f, stored in o->encoding.
 * @param src     the rows (borrowed for the call)
 * @param leaves  n_leaves disjoint docid bitmaps (e.g. qdtree_leaf_docids),
 *                borrowed for the call; absent docids are ignored
 * @param o       NULL = defaults
 * @param out     the layout; free with part_free
 * @return 0; VELA_EINVAL (also a row LVQ-8 cannot hold within
 *   FLAT_NORM_SQ_MAX); VELA_EUNSUPPORTED (no `row` and f's rows released);
 *   VELA_ENOMEM; a backend error; src->row's error
 */
int part_build(const part_source_t *src, const roaring_bitmap_t *const *leaves, uint32_t n_leaves,
	       const part_opts_t *o, part_layout_t **out);
/** Free the layout (forgets its GPU copies). NULL is a no-op. */
void part_free(part_layout_t *p);

/** Leaves, clusters, rows; rows per cluster (min, median, max); bytes
 * held (rows at their allocated capacity, docids, norms, bitmaps,
 * centroids, the LVQ-8 mean); the clusters' encoding. */
typedef struct part_stats {
	uint32_t leaves, clusters;
	uint64_t rows, min_rows, median_rows, max_rows;
	size_t bytes;
	part_encoding_t encoding;
} part_stats_t;
void part_stats(const part_layout_t *p, part_stats_t *out);
/** Docids of leaf i (owned by the layout), NULL out of range. */
const roaring_bitmap_t *part_leaf_docids(const part_layout_t *p, uint32_t leaf);
/** Clusters of leaf i (0 out of range). */
uint32_t part_leaf_clusters(const part_layout_t *p, uint32_t leaf);

/** Take docid's row out of its cluster and leaf (a writer call).
 * @return 0; VELA_ENOTFOUND (not in the layout); VELA_EINVAL (NULL) */
int part_remove(part_layout_t *p, uint32_t docid);
/** Is docid in one of the layout's clusters? */
bool part_contains(const part_layout_t *p, uint32_t docid);
/**
 * @brief The nearest centroid of each row ids[i] of src within leaf leaf[i]
 * (one index_backend_knn per leaf, as the build assigns): cluster[i], a
 * layout-wide cluster number for part_insert. A read call.
 * @return 0; VELA_EINVAL (a leaf without clusters, an absent docid); VELA_ENOMEM
 */
int part_assign(const part_layout_t *p, const part_source_t *src, const uint32_t *ids,
		const uint32_t *leaf, size_t n, uint32_t *cluster);
/**
 * @brief Copy docid's row of src into `cluster` at its rank (rows keep
 * ascending with docid), in the layout's encoding (LVQ-8: with the build's
 * mean), and into the cluster's leaf. A writer call; on error the layout
 * is unchanged.
 * @return 0; VELA_EEXISTS (already in the layout); VELA_EINVAL; VELA_ENOMEM;
 *   src->row's error
 */
int part_insert(part_layout_t *p, const part_source_t *src, uint32_t cluster, uint32_t docid);
/** Clusters holding more than twice max(target, their size at the build
 * or load): grown enough that the layout should be rebuilt. */
uint32_t part_clusters_over(const part_layout_t *p, uint32_t target);

/**
 * @brief Measure how many rows a query scans, nearest centroid first, to
 * find its top k' at each mean recall (index/partitions.c "calibration"):
 * `queries` rows of the layout at an even stride serve as queries. Costs
 * about queries x rows x dim x 2 flops (one product per cluster through
 * index_backend_project) and a decode of every row. Call after part_build
 * or part_unpack;
 * an uncalibrated layout probes every cluster with a match under the
 * calibrated rule. A writer call (no search meanwhile).
 * @return 0; VELA_EINVAL; VELA_ENOMEM; a backend error
 */
int part_calibrate(part_layout_t *p, uint32_t queries);
/**
 * @brief The layout's calibration: returns its ladder steps (0: not
 * calibrated) and, when cal is not NULL, copies steps x PART_CAL_LEVELS
 * values (rows to scan, row-major by step) into it.
 */
uint32_t part_calibration(const part_layout_t *p, double *cal);
/**
 * @brief Rows a query of k whose filter has `matches` in the layout is
 * expected to scan under the probing o: with s = matches / rows, R(k / s)
 * of the calibration (fixed rule: probe_factor k / s), capped at the
 * layout's rows (all of them when exact or not calibrated); 0 for no
 * match. The db layer weighs it against the exact plan's cost.
 */
double part_probe_rows(const part_layout_t *p, uint32_t k, uint64_t matches,
		       const part_search_opts_t *o);

/** Version of part_pack's format (3: the calibration table; 2: the
 * encoding and the LVQ-8 mean; part_unpack still reads 1 and 2, whose
 * layouts come back uncalibrated). */
#define PART_PACK_VERSION 3u
/**
 * @brief Serialise the layout's structure (not its rows): version, dim,
 * type, metric, encoding, leaves, clusters, the LVQ-8 mean (dim floats,
 * LVQ8 only); per leaf its centroids and per cluster its docids
 * (ascending); then the calibration (u32 steps, steps x PART_CAL_LEVELS
 * doubles), so a loaded layout need not measure it again. Host byte order
 * (little-endian targets).
 * @param out malloc'd bytes the caller frees
 * @return 0; VELA_EINVAL; VELA_ENOMEM
 */
int part_pack(const part_layout_t *p, uint8_t **out, size_t *len);
/**
 * @brief Rebuild a layout from part_pack's bytes, copying the rows from src
 * (encoded as the bytes say: LVQ8 again with the saved mean). Never trusts
 * the bytes: every docid must be present in src->f, ascending in its
 * cluster and in no other cluster, every centroid's and the mean's |c|^2
 * within FLAT_NORM_SQ_MAX (as vectors: distances stay finite), a known
 * encoding, the sizes exact, the calibration's steps at most
 * PART_CAL_STEPS and its values finite, >= 0 and non-decreasing with the
 * recall level.
 * @return 0; VELA_ECORRUPT; VELA_EVERSION (newer format); VELA_EDIM (another
 *   dim, type or metric than f's); VELA_EUNSUPPORTED (no `row` and f's rows
 *   released); VELA_EINVAL; VELA_ENOMEM; src->row's error
 */
int part_unpack(const part_source_t *src, const uint8_t *buf, size_t len, part_layout_t **out);

/** One query of part_search. The caller fills q, k, filter, out. */
typedef struct part_query {
	const float *q;                 /**< dim floats, borrowed */
	uint32_t k;                     /**< 0..VELA_K_MAX */
	const roaring_bitmap_t *filter; /**< NULL = every row of the layout; borrowed */
	vela_hit_t *out;                /**< caller-owned, k slots */
	uint32_t n_out;                 /**< set */
	uint32_t probed;                /**< set: clusters scanned */
	uint64_t scored;                /**< set: rows scored */
} part_query_t;

/**
 * @brief Answer nq queries (see the section comment).
 * @param o  NULL = defaults
 * @return 0; VELA_EINVAL (bad query or option); VELA_ENOMEM; a backend error
 */
int part_search(const part_layout_t *p, part_query_t *qs, uint32_t nq,
		const part_search_opts_t *o);

/** Version of part_search_plan_dump's format. */
#define PART_DUMP_VERSION 1u
/**
 * @brief part_search, recording the batch for a replay elsewhere (a GPU
 * host where the engine does not build: bench/part_replay.c,
 * gpu/bench/part_replay_gpu.c, docs/gpu.md): the same probe choice and
 * scans (qs[i].out etc. are set as part_search sets them), with the plan and
 * the answers written to f. A bench tool, off the engine's path: the rows of
 * every scanned cluster are decoded and written (dim 64: 260 bytes a row).
 *
 * Format (little-endian u32 / u64 / IEEE f32; readers bound every count by
 * the file's size): u32 magic 0x44535056 ("VPSD"), u32 version, u32 dim,
 * u32 metric (vela_metric_t), u32 type (the field's vela_vec_type_t; rows
 * are written as F32 whatever it is), u32 encoding (part_encoding_t), u32 nq,
 * u32 clusters, u64 pairs; nq x (u32 k, dim x f32 query); per scanned
 * cluster, ascending: u32 cluster, u32 n rows, u32 m queries, f32 norm_max,
 * n x u32 docid (ascending), n x f32 |x|^2, n x dim f32 rows (LVQ-8:
 * decoded), then m x (u32 query, u32 nf, nf x u32 row) with nf = UINT32_MAX
 * when the query takes every row (no list), else its filter's rows of the
 * cluster ascending; then the answers: nq x (u32 n, n x (u32 docid, f32
 * dist)); u32 magic again. A replay scans each cluster with one
 * index_backend_knn over its n rows for its m queries, k = the largest k of
 * those queries, each query's hits (row numbers) mapped to docids and
 * merged per query in (distance, docid) order, keeping the query's own k.
 * @return 0; part_search's errors; VELA_EIO (a write failed)
 */
int part_search_plan_dump(const part_layout_t *p, part_query_t *qs, uint32_t nq,
			  const part_search_opts_t *o, FILE *f);

#endif
