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
	struct db_field_state *next;
} db_field_state_t;

uint64_t db_field_uid(const db_field_t *f);
/** The field's state (created when `create`; NULL when not a vector field
 * or out of memory). Lives until db_field_state_release(db). */
db_field_state_t *db_field_state(vela_db_t *db, const db_index_t *ix, uint32_t field,
				 bool create);
/** Free every state of `db` (with their layouts). */
void db_field_state_release(vela_db_t *db);
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
void db_workload_load(vela_db_t *db, const db_index_t *ix, db_field_state_t *s);

void db_layout_free(db_layout_t *l);
/** The batch's partitions plan: answer every KNN plan (state 1) that takes
 * it; their state becomes 2. */
void db_layout_run(plan_t *plans, int *state, size_t n);

#endif
