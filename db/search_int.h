/**
 * @file search_int.h
 * @brief Private to db/search*.c: one query on its way through the
 * executor (plan_t), the filter source over the postings, and the entry
 * points the batch executor (search_batch.c) shares with the single-query
 * path (search.c).
 *
 * Every function here runs with db->lock held shared and inside one LMDB
 * read transaction (`txn`), which the caller opened and closes.
 */
#ifndef VELA_DB_SEARCH_INT_H
#define VELA_DB_SEARCH_INT_H

#include "db/db.h"
#include "query/query.h"

/** The batch's shared postings (search_batch.c); NULL for one query. */
typedef struct db_filter_cache db_filter_cache_t;

/** Context of the filter source (query_source_t) over one index. */
typedef struct db_src_ctx {
	db_index_t *ix;
	storage_txn_t *txn;
	db_filter_cache_t *cache; /**< NULL: read the postings directly */
} db_src_ctx_t;

/** One query on its way through the executor. */
typedef struct plan {
	const vela_search_req_t *req;
	db_index_t *ix;
	query_t *q;
	const query_knn_t *knn;
	roaring_bitmap_t *filter; /**< NULL: every document */
	bool filter_shared;       /**< another plan of the batch owns `filter` */
	float *qvec;              /**< KNN query vector, decoded */
	vela_hit_t *hits;
	uint32_t n_hits;
	const query_vrange_t *yield; /**< VECTOR_RANGE whose distance is returned */
	float *yvec;
	char dist_name[VELA_INDEX_NAME_MAX + 16];
	const char *how; /**< vela_result_t.plan */
	vela_plan_t choice; /**< the KNN plan (db_plan_choose) */
	/** Set by the batch: a filtered walk that gives up for the exact scan
	 * leaves the scan to the batch's exact groups (scan_pending). */
	bool defer_scan;
	bool scan_pending; /**< an exact scan is still owed (hits not set) */
	vela_profile_t prof; /**< filled for every query (it costs a few clock reads) */
	vela_db_t *db;       /**< the database (the workload log, layouts) */
} plan_t;

/** Parse the query and decode its vectors (no storage read). */
int db_plan_parse(vela_db_t *db, const vela_search_req_t *req, plan_t *p, vela_err_t *err);
/** Evaluate the filter through `cache` (NULL = directly), count the
 * matches and choose the plan. `explain`: a query without KNN stops
 * before the filter. */
int db_plan_filter(storage_txn_t *txn, db_filter_cache_t *cache, plan_t *p, bool explain,
		   vela_err_t *err);
/** Count the filter's matches and choose the plan (p->filter set). */
void db_plan_decide(plan_t *p);
/** Batch planning: should p, whose filter g queries of the batch share
 * (p's included), be scanned with them rather than walked? */
bool db_plan_batch_scan(const plan_t *p, uint32_t g);
/** Run the chosen KNN plan. */
int db_plan_run_knn(plan_t *p, vela_err_t *err);
/** Build the result rows (*out freed by vela_result_free). */
int db_plan_result(storage_txn_t *txn, const plan_t *p, vela_result_t **out, vela_err_t *err);
/** Free what the plan owns (a shared filter is left to its owner). */
void db_plan_free(plan_t *p);
/** The KNN's vector field. */
const db_field_t *db_plan_field(const plan_t *p);

/** The storage callback that ORs big-endian docids into a roaring bitmap
 * (ctx); postings of one key come sorted. */
int db_docids_add(void *ctx, const uint32_t *ids_be, size_t n);

/**
 * @brief A numeric range as the inclusive range [*lo, *hi] of the
 * order-preserving 64-bit encoding of its bounds (storage_num_encode read
 * big-endian). @return false when it holds no value at all
 */
bool db_num_bounds(double lo, int lo_excl, double hi, int hi_excl, uint64_t *elo,
		   uint64_t *ehi);
/** OR the docids of field's numeric postings in [elo, ehi] (encoded) into
 * out, reading them from LMDB in one ordered pass. */
int db_num_read(storage_txn_t *txn, const db_index_t *ix, uint32_t field, uint64_t elo,
		uint64_t ehi, roaring_bitmap_t *out);

/* search_batch.c: the batch's postings cache, used by the source. */
/** OR the posting of `key` (a storage_posting_key) into out, from the cache. */
int db_cache_posting(db_filter_cache_t *c, storage_txn_t *txn, const uint8_t *key, size_t klen,
		     roaring_bitmap_t *out);
/** The cached posting of `key` itself (read on first use), borrowed until
 * the cache is freed. */
int db_cache_posting_ref(db_filter_cache_t *c, storage_txn_t *txn, const uint8_t *key,
			 size_t klen, const roaring_bitmap_t **out);
/** OR the numeric postings [elo, ehi] (encoded) of the field into out. */
int db_cache_num(db_filter_cache_t *c, storage_txn_t *txn, const db_index_t *ix,
		 uint32_t field, uint64_t elo, uint64_t ehi, roaring_bitmap_t *out);

/* ------------------------------------------------------------ workload log, layouts */
/* db/workload.c and db/layout.c (docs/partitions.md). */

/** Distinct predicate shapes a field's workload log keeps (the less
 * frequent half is evicted when full). */
#define DB_WORKLOAD_QUERIES_MAX 4096u
/** Atoms of one filter the log keeps (the rest is residual). */
#define QUERY_ATOMS_LOGGED_MAX 8u

typedef struct db_wl_str {
	const char *s;
	size_t len;
} db_wl_str_t;

/** One logged shape: the canonical AND of its atoms (db_workload_key). */
typedef struct db_wl_ent {
	uint64_t h;
	uint8_t *key; /**< NULL: a free slot */
	size_t klen;
	uint64_t count, last;
} db_wl_ent_t;

typedef struct db_layout db_layout_t;

/** Per vector field: its workload log and its layout. Registry-owned. */
typedef struct db_field_state {
	uint64_t uid; /**< the field's FLAT residency uid: the registry key */
	uint32_t ix_id, field;
	vela_db_t *db;
	pthread_mutex_t mu; /**< guards the log */
	db_wl_ent_t *ents;
	size_t n, cap;
	uint64_t tick, total;
	/** Set and replaced with db->lock held exclusively; read under it shared. */
	db_layout_t *layout;
	/* Layout maintenance (db/layout.c). */
	/** While a background rebuild runs: the docids written since its copy
	 * (created under db->lock shared, filled and freed under it exclusive). */
	roaring_bitmap_t *layout_dirty;
	atomic_bool layout_job;   /**< a layout job is queued or running */
	atomic_uint layout_want;  /**< what the next job does (db/layout.c LAYOUT_WANT_*) */
	uint64_t layout_rebuilds; /**< background rebuilds installed (exclusive lock) */
	uint64_t layout_folds;    /**< background folds of the delta (exclusive lock) */
	double layout_drift;      /**< the last drift measured, -1 none (guarded by mu) */
	/* The query sample (db/qsample.c), guarded by mu. */
	float *qs_rows;       /**< qs_alloc rows of qs_dim floats, owned; NULL until the first */
	uint32_t qs_dim;      /**< dim of the rows (0: none recorded yet) */
	uint32_t qs_n;        /**< rows held */
	uint32_t qs_alloc;    /**< rows allocated (grows by doubling up to the cap) */
	uint32_t qs_rows_max; /**< row cap asked (0: DB_QSAMPLE_ROWS_DEFAULT) */
	uint64_t qs_seen;     /**< queries offered to the reservoir so far */
	uint64_t qs_rng;      /**< splitmix64 state, seeded from (index id, field) */
	struct db_field_state *next;
} db_field_state_t;

uint64_t db_field_uid(const db_field_t *f);
/** The field's state (created when `create`; NULL when not a vector field
 * or out of memory). Lives until db_field_state_release(db). */
db_field_state_t *db_field_state(vela_db_t *db, const db_index_t *ix, uint32_t field,
				 bool create);
/** Free every state of `db` (with their layouts). */
void db_field_state_release(vela_db_t *db);
/** Free the states of a dropped index's fields (exclusive lock held: no
 * search holds one). */
void db_field_state_drop(const db_index_t *ix);
/** The canonical key of q's atoms (*key malloc'd). */
int db_workload_key(const query_t *q, uint8_t **key, size_t *klen);
int db_workload_add(db_field_state_t *s, const uint8_t *key, size_t klen, uint64_t count);
/** Record a KNN query's shape in its field's log (best effort). */
void db_workload_record(vela_db_t *db, const db_index_t *ix, const query_t *q,
			const query_knn_t *knn);
/** A copy of the log, most frequent first (free with db_workload_snapshot_free). */
int db_workload_snapshot(db_field_state_t *s, db_wl_ent_t **out, size_t *n);
void db_workload_snapshot_free(db_wl_ent_t *v, size_t n);
int db_workload_save(vela_db_t *db, const db_index_t *ix, db_field_state_t *s);
/** Write `buf` to `path` through path.tmp and a rename (a reader never sees
 * half a file): 0, VELA_EIO, VELA_EINVAL (path too long). */
int db_file_replace(const char *path, const uint8_t *buf, size_t len);
/** Delete an index's workload log and query sample files (index dropped). */
void db_workload_files_remove(const vela_db_t *db, const db_index_t *ix);
void db_qsample_file_remove(const vela_db_t *db, const db_index_t *ix, uint32_t field);
void db_workload_load(vela_db_t *db, const db_index_t *ix, db_field_state_t *s);

/* ------------------------------------------------------------ query sample */
/* db/qsample.c: per vector field, a uniform sample (reservoir, Vitter's
 * algorithm R) of the query vectors searched on it, the OOD training set of
 * LeanVec (quant_leanvec_train_ood; vela_index_train with queries NULL).
 * Saved beside the database with the workload log, as
 * <dir>/qsample-<index id>-<field>.bin: magic, version, dim, rows, seen
 * count, the rows (float32), then the XXH3-64 of everything before it. */

/** Rows a field's sample keeps at most (fewer for wide dims: BYTES_MAX). */
#define DB_QSAMPLE_ROWS_DEFAULT 10000u
#define DB_QSAMPLE_ROWS_MIN 1u
#define DB_QSAMPLE_ROWS_MAX (1u << 20)
/** Bytes of rows a field's sample holds at most, whatever its row cap. */
#define DB_QSAMPLE_BYTES_MAX ((size_t)32 << 20)

/** The row cap of a sample of `dim` floats asked `rows_max` rows (0: the
 * default): 0 when one row is over DB_QSAMPLE_BYTES_MAX. */
uint32_t db_qsample_cap(uint32_t rows_max, uint32_t dim);
/** Set s's row cap (DB_QSAMPLE_ROWS_MIN..MAX; 0: the default); rows over a
 * lower cap are dropped. @return 0 or VELA_EINVAL */
int db_qsample_limit(db_field_state_t *s, uint32_t rows_max);
/** Offer one query vector (`dim` floats, copied when kept; COSINE: as
 * given, not normalised) to s's reservoir. Takes s->mu; one RNG draw, a
 * copy only when the row is kept. A dim other than the sample's restarts it. */
void db_qsample_record(db_field_state_t *s, const float *vec, uint32_t dim);
/** Offer a query blob of field f (FLOAT32 or FLOAT16, dim elements,
 * little-endian; converted only when kept). A blob of the wrong size is skipped. */
void db_qsample_record_blob(db_field_state_t *s, const db_field_t *f, const void *blob,
			    size_t len);
/** Rows held and queries offered (either may be NULL). */
void db_qsample_stats(db_field_state_t *s, uint32_t *rows, uint64_t *seen);
/**
 * @brief A copy of the sample of ix's `field` (rows of the field's dim
 * floats). The caller holds db->lock (shared or exclusive) so ix lives;
 * creates the field's state (loading its saved sample) on first use.
 * @param out malloc'd rows the caller frees; NULL with *m = 0 when none
 * @return 0; VELA_ENOTFOUND (not a vector field); VELA_ENOMEM
 */
int db_qsample_copy(vela_db_t *db, const db_index_t *ix, uint32_t field, float **out, size_t *m);
/** Free s's sample (db_field_state_release). */
void db_qsample_clear(db_field_state_t *s);
/** Write s's sample to <dir>/qsample-<ix id>-<field>.bin (nothing when empty). */
int db_qsample_save(vela_db_t *db, const db_index_t *ix, db_field_state_t *s);
/** Load that file into s (s not shared yet). A missing file is no sample;
 * a damaged, newer or other-dim one is ignored with a warning. */
void db_qsample_load(vela_db_t *db, const db_index_t *ix, db_field_state_t *s);
/**
 * @brief Write m rows of `dim` floats to `path` in the sample's format
 * (seen count = m), atomically (a temp file renamed).
 * @return 0; VELA_EINVAL (dim 0, m over DB_QSAMPLE_ROWS_MAX); VELA_EIO; VELA_ENOMEM
 */
int db_qsample_file_save(const char *path, const float *Q, size_t m, uint32_t dim);
/**
 * @brief Read a sample file written by db_qsample_file_save or
 * db_qsample_save, whose rows must have `dim` floats.
 * @param Q malloc'd rows the caller frees (NULL when *m == 0)
 * @return 0; VELA_ENOTFOUND (no file); VELA_ECORRUPT (bad magic, size,
 *   checksum, non-finite row); VELA_EVERSION; VELA_EDIM (another dim);
 *   VELA_ENOMEM; VELA_EIO. On failure *Q = NULL, *m = 0.
 */
int db_qsample_file_load(const char *path, uint32_t dim, float **Q, size_t *m);

void db_layout_free(db_layout_t *l);

/*
 * Layouts through a database's life (docs/partitions.md §5). Writes: a
 * written docid's row leaves its cluster for the layout's delta (scanned
 * exactly by every partitions query), a deleted one's leaves both. When the
 * delta passes DB_LAYOUT_DELTA_FRAC of the rows (and DB_LAYOUT_DELTA_MIN),
 * or the workload's template distribution drifts (total variation
 * distance over DB_LAYOUT_DRIFT_TVD, judged every DB_LAYOUT_DRIFT_EVERY
 * logged queries once DB_LAYOUT_DRIFT_MIN_QUERIES, and half as many as the
 * layout was built from, were logged since the build), the builder thread
 * folds the delta back into the clusters (each docid routed by the cuts'
 * postings to its leaf, then to the nearest centroid) or rebuilds the
 * layout (drift; a cluster grown past twice its size) -- databases opened
 * with VELA_OPEN_BACKGROUND_BUILD; others rebuild with vela_layout_build.
 */
#define DB_LAYOUT_DELTA_FRAC 0.1
#define DB_LAYOUT_DELTA_MIN 256u
#define DB_LAYOUT_DRIFT_TVD 0.2
#define DB_LAYOUT_DRIFT_EVERY 128u
#define DB_LAYOUT_DRIFT_MIN_QUERIES 256u
/** The partitions plan is chosen (HYBRID_POLICY and forced plans aside)
 * for a filter of more than VELA_LAYOUT_SCAN_MAX matches when the rows it
 * is expected to probe (part_probe_rows) are at most this many per match
 * of the filter: the exact plan scores every match, gathered one by one,
 * while the partitions plan scores whole clusters shared by the batch, and
 * a graph walk, the other choice for wide filters, is neither
 * shared nor exact. Measured in BENCHMARKS.md "Partitions". */
#define DB_LAYOUT_ROWS_PER_MATCH_DEFAULT 1.0

/** The field's FLAT generation (pass it to db_layout_apply). */
uint64_t db_layout_gen(const db_field_t *f);
/** Apply one committed vector change of docid (set: written; else removed)
 * to the field's layout; gen_before: db_layout_gen before the change.
 * Exclusive lock held. */
void db_layout_apply(vela_db_t *db, const db_index_t *ix, uint32_t field, uint32_t docid,
		     bool set, uint64_t gen_before);
/** Measure the drift of s's layout and queue a rebuild past the threshold
 * (db->lock held shared). */
void db_layout_drift_check(vela_db_t *db, const db_index_t *ix, uint32_t field,
			   db_field_state_t *s);
/** The builder's layout job: copy (shared lock), build (no lock), install
 * (write_mu + exclusive lock). A field or layout dropped meanwhile is left alone. */
void db_layout_job_run(vela_db_t *db, uint32_t ix_id, uint32_t field, uint64_t uid);
/** Write s's layout to <dir>/part-<ix id>-<field>.snap (removes the file
 * when there is no current layout). @return 0, VELA_EIO, VELA_ENOMEM */
int db_layout_save(vela_db_t *db, const db_index_t *ix, db_field_state_t *s);
/** Load that file into s when it is current and verifies (s not shared
 * yet); a stale or damaged file is deleted with a warning. */
void db_layout_load(vela_db_t *db, const db_index_t *ix, db_field_state_t *s);
void db_layout_file_remove(const vela_db_t *db, const db_index_t *ix, uint32_t field);
/** Load every saved layout of db's vector fields now (at open, before any
 * write could make them stale); otherwise each is loaded at its field's
 * first use (a search, vela_layout_info). */
void db_layouts_load(vela_db_t *db);
/**
 * @brief Parse a layout file's bytes against the field's rows src (its FLAT
 * index, and its store's decode for a compressed field) at change-log
 * sequence seq (the loader and the fuzzer). Never trusts the bytes.
 * @return 0; VELA_ECORRUPT (magic, checksum, structure); VELA_EVERSION;
 *   VELA_EBUSY (another sequence or other rows: stale); VELA_ENOMEM
 */
int db_layout_parse(const uint8_t *buf, size_t len, const part_source_t *src, uint64_t seq,
		    db_layout_t **out);
/** The batch's partitions plan: answer every KNN plan (state 1) that takes
 * it; their state becomes 2. */
void db_layout_run(plan_t *plans, int *state, size_t n);
/** vela_layout_dump_scan's half: the first layout's group of the plans
 * (state 1) that db_layout_run would give the partitions plan, answered
 * through part_search_plan_dump into f (the plans' states unchanged; the
 * delta of later writes not merged); *dumped: its queries.
 * @return 0; VELA_ENOTFOUND (no plan takes it); part_search_plan_dump's errors */
int db_layout_dump(plan_t *plans, const int *state, size_t n, FILE *f, uint32_t *dumped);

#endif
