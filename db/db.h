/**
 * @file db.h
 * @brief Private to db/: the structures behind vela_db_t and the helpers
 * the db files share. The public API is include/vela/vela.h.
 *
 * Concurrency (DESIGN §8): `lock` is a readers-writer lock over the in-memory
 * state (index list, docid bitmaps, flat indexes). Searches hold it shared
 * for their whole run and open their LMDB read transaction inside it, so the
 * LMDB snapshot they read always matches the in-memory state. A writer
 * prepares its LMDB changes holding only `write_mu` (one writer), then takes
 * `lock` exclusively just to commit and apply the changes to memory.
 * `lock` prefers writers (so searches cannot starve writes); hence no thread
 * may take it shared twice.
 */
#ifndef VELA_DB_H
#define VELA_DB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <roaring/roaring.h>

#include "common/common.h"
#include "index/index.h"
#include "storage/storage.h"
#include "vela/vela.h"

/** Packed index definitions start with this magic and version. */
#define DB_CATALOG_MAGIC 0x56494458u /* "VIDX" */
#define DB_CATALOG_VERSION 5u /* 2: graph parameters; 3: compression; 4: model, source;
				* 5: graph_name (HNSW or SVS-VAMANA) */

/** One field of a loaded index. */
typedef struct db_field {
	char *name;  /**< hash field name */
	char *alias; /**< query name (== name when no AS) */
	vela_field_type_t type;
	char separator;
	bool case_sensitive;
	vela_algo_t algo;
	vela_vec_type_t vec_type;
	uint32_t dim;
	vela_metric_t metric;
	flat_index_t *flat; /**< VECTOR fields: the in-memory exact index */
	/* GRAPH fields: the Vamana graph over the flat vectors, built once the
	 * field holds DB_GRAPH_MIN_DOCS vectors (exact scans are as fast below). */
	uint32_t graph_degree, graph_build_window, graph_search_window;
	graph_t *graph;
	graph_store_t gstore;
	bool graph_from_snapshot; /**< loaded at open rather than built */
	uint64_t snap_seq;        /**< change-log sequence of the snapshot on disk (0: none) */
	bool grew;                /**< vectors added by the changes being applied */
	uint32_t compression, training_threshold, reduce; /**< as vela_field_def_t */
	graph_lvq_store_t *lvq; /**< compressed copies the graph searches on (or NULL) */
	char *model, *source;   /**< computed vectors (vela_field_def_t), or NULL */
	/* Background builds (db/builder.c), all under the exclusive lock (or
	 * write_mu): while one is in flight, `dirty` holds the docids written
	 * since its copy (replayed onto the new graph at install). */
	roaring_bitmap_t *dirty;
	bool build_queued; /**< a build or retrain job is queued or running */
	bool build_failed; /**< the last build failed: not retried until a reopen or retrain */
	uint32_t graph_name;    /**< VELA_GRAPH_NAME_HNSW or _SVS_VAMANA (GRAPH), else 0 */
	/** NUMERIC fields: the in-memory range index (db/numidx.c), NULL until
	 * the field's first numeric filter builds it. Owned; freed with the
	 * index. Published with an atomic store under db->lock shared, changed
	 * under it exclusive. */
	struct db_numidx *num;
	/** TAG fields: the in-memory value -> docids map (db/tagidx.c), NULL
	 * until the field's first tag clause builds it; as `num`. */
	struct db_tagidx *tag;
	/** TAG fields: the value budget (db_tagidx_values_max) the field was
	 * found over, 0 when not: its clauses read LMDB until the budget is
	 * raised past it or the index is reloaded. Atomic. */
	uint32_t tag_over;
} db_field_t;

/** A loaded index. */
typedef struct db_index {
	char *name;
	uint32_t id; /**< stable id, the key prefix of its rows */
	char **prefixes;
	size_t *prefix_lens;
	uint32_t n_prefixes;
	db_field_t *fields;
	uint32_t n_fields;
	roaring_bitmap_t *docids; /**< every indexed document */
	uint64_t failures;        /**< indexing failures so far */
} db_index_t;

/* ------------------------------------------------------------ vector fields */

#define DB_GRAPH_MIN_DOCS 1024u
/** Room for a path in the database directory (as PATH_MAX_SNAP). */
#define PATH_MAX_SNAP_BUILD 4096
/** Consolidate when tombstones exceed this fraction of live nodes. */
#define DB_GRAPH_CONSOLIDATE_RATIO 0.2

/** Set/remove a vector in the field's indexes (caller holds db->lock exclusively). */
int db_vec_set(db_field_t *f, uint32_t docid, const float *vec);
int db_vec_remove(db_field_t *f, uint32_t docid);

/*
 * Where a field's vectors are read from (db/vecindex.c). A vector field keeps
 * its F32 rows in its flat index until a compressed store (f->lvq) holds them
 * with its graph installed; then the rows are released (the flat index keeps
 * only the docids) and the exact plans (scans of a filter's matches, ranges,
 * distances to yield) read the store's most precise encoding instead: a
 * compressed field then holds codes + graph, not F32 beside them. Rebuilds
 * read the vectors from LMDB (db_vec_build_t.txn). All read calls take
 * db->lock shared.
 */
/** Release f's F32 rows when its compressed store and graph are installed. */
void db_vec_rows_release(db_field_t *f);
/** The k nearest vectors of f (of `filter` when given), flat_search's contract. */
int db_vec_search(const db_field_t *f, const float *q, uint32_t k, const roaring_bitmap_t *filter,
		  vela_hit_t *out, uint32_t *n_out);
/** Every vector of f within `radius`, flat_range's contract. */
int db_vec_range(const db_field_t *f, const float *q, float radius,
		 const roaring_bitmap_t *filter, vela_hit_t **out, size_t *n_out);
/** docid's vector in f (dim floats), flat_get's contract. */
int db_vec_get(const db_field_t *f, uint32_t docid, float *out);
/** Vectors a GRAPH field needs before its graph is built (and trained). */
uint64_t db_vec_build_threshold(const db_field_t *f);
/**
 * Set up the store field k's graph reads (the flat vectors, or compressed
 * copies trained and encoded now, on the field's kept training queries) and
 * list its docids (*ids malloc'd). For loading a graph snapshot.
 */
int db_vec_store_prepare(const vela_db_t *db, db_index_t *ix, uint32_t k, uint32_t **ids,
			 uint64_t *n);
/**
 * Build field k's graph once it holds enough vectors: queued to the
 * background builder when the database has one (VELA_OPEN_BACKGROUND_BUILD),
 * else now. Caller holds db->lock exclusively (or is alone, at open).
 */
void db_vec_maybe_build(vela_db_t *db, db_index_t *ix, uint32_t k);

/** One graph build, in steps (db/vecbuild.c; see its file comment). */
typedef struct db_vec_build {
	/* inputs: set by the caller before init */
	bool live;                 /**< F32: build over the field's own flat index */
	const atomic_bool *cancel; /**< NULL, or stops graph_build */
	const float *Q;            /**< LeanVec-OOD training queries (borrowed) */
	size_t m;
	/* db_vec_build_init: the field's parameters */
	char *alias;
	uint32_t dim, compression, reduce;
	vela_metric_t metric;
	vela_vec_type_t vec_type;
	uint64_t threshold;
	graph_params_t gp;
	char train_path[PATH_MAX_SNAP_BUILD];
	float *Q_own; /**< queries read from train_path (then Q points here) */
	/* db_vec_build_copy */
	uint32_t *ids;
	uint64_t n;
	/** Compressed fields, until encoded: n x dim, or with `live` only the
	 * training sample (the rest is read from `src` while encoding). */
	float *vecs;
	const flat_index_t *src; /**< live compressed builds: the field's vectors */
	flat_index_t *flat; /**< the private F32 copy (background F32 builds) */
	/** Retrains of a field whose F32 rows were released (db_vec_rows_release):
	 * the vectors are read from LMDB through this read transaction, begun at
	 * the copy and ended before install (a snapshot; later writes are
	 * replayed from a fresh one). NULL otherwise. */
	storage_txn_t *txn;
	const vela_db_t *db;
	uint32_t ix_id, field;
	db_field_t vf; /**< dim, type and metric only: decodes LMDB's blobs */
	/* db_vec_build_run */
	bool ood; /**< the store was trained out-of-distribution */
	graph_lvq_store_t *lvq;
	graph_store_t gs;
	graph_t *graph;
	size_t replayed;  /**< writes replayed at install */
	size_t caught_up; /**< writes replayed before it (db_vec_build_catch_up) */
	bool rebound;     /**< install rebound the graph to the live store */
} db_vec_build_t;

int db_vec_build_init(const vela_db_t *db, const db_index_t *ix, uint32_t k, db_vec_build_t *b);
/** Copy the docids and vectors (lock held: shared is enough). */
int db_vec_build_copy(const db_field_t *f, db_vec_build_t *b);
/** Train, encode, build: no lock. */
int db_vec_build_run(db_vec_build_t *b);
/** Replay f->dirty, swap the graph (and store) in: exclusive lock. On
 * error the field is unchanged. */
int db_vec_build_install(db_field_t *f, db_vec_build_t *b);
/** Docids popped from f->dirty per catch-up round, and the backlog under
 * which the install replays the rest itself (db/builder.c). */
#define DB_BUILD_CATCHUP_BATCH 4096u
#define DB_BUILD_CATCHUP_LEFT 64u
#define DB_BUILD_CATCHUP_ROUNDS_MAX 64u
/** One catch-up round: pop up to DB_BUILD_CATCHUP_BATCH docids from
 * f->dirty and read their vectors (caller holds db->write_mu, so no write
 * is applied meanwhile, while searches go on), then replay them onto the
 * new graph with no lock held (apply frees the batch). *left receives the
 * backlog still in f->dirty; nothing is popped when it is already below
 * DB_BUILD_CATCHUP_LEFT. */
typedef struct db_vec_batch {
	uint32_t *ids;
	float *rows;      /**< n x dim (a deleted docid's row is unused) */
	uint8_t *present; /**< 0: deleted since the copy */
	size_t n;
} db_vec_batch_t;
int db_vec_build_take(db_field_t *f, db_vec_build_t *b, db_vec_batch_t *out, uint64_t *left);
int db_vec_build_apply(db_vec_build_t *b, db_vec_batch_t *batch);
void db_vec_batch_free(db_vec_batch_t *batch);
/** After an install: keep (or remove) the training-query file. */
void db_vec_build_keep_queries(const db_vec_build_t *b);
void db_vec_build_free(db_vec_build_t *b);

/** The background builder (db/builder.c). */
typedef struct db_builder db_builder_t;
int db_builder_start(vela_db_t *db);
/** Cancel a running build, drop queued jobs, join the thread. */
void db_builder_stop(vela_db_t *db);
/** Queue a job on the field's partition layout, a fold or a rebuild (db/layout.c
 * db_layout_job_run). @return 0; VELA_EINVAL (no builder); VELA_ENOMEM */
int db_layout_submit(vela_db_t *db, const db_index_t *ix, uint32_t field);
/** Queue a build (retrain: replace an existing graph) of ix's field k;
 * takes Q (malloc'd, or NULL). Exclusive lock or write_mu held. */
int db_build_submit(vela_db_t *db, const db_index_t *ix, uint32_t field, float *Q, size_t m,
		    bool retrain);

/** Does the index have a GRAPH field (its docids are not reused before consolidation)? */
bool db_index_has_graph(const db_index_t *ix);

/* ------------------------------------------------------------ numeric range index */
/*
 * db/numidx.c: per NUMERIC field, equi-depth buckets over the encoded values
 * (storage_num_encode, big-endian: the order of the SP_NUM posting keys),
 * each with its sorted (value, docid) entries and a roaring bitmap of its
 * docids. A range is the OR of the buckets it covers plus the matching
 * entries of its two edge buckets (or the field's docids less the rest,
 * when it covers most of them). Built lazily at the field's first numeric
 * filter by one scan of its postings (in the search's read transaction),
 * kept current by DC_NUM_ADD / DC_NUM_REMOVE after each commit, freed with
 * its index (FT.DROPINDEX, close). Memory: about 12 bytes per value plus
 * the bitmaps (db_numidx_stats, vela_index_info_t.numeric_bytes).
 */
typedef struct db_numidx db_numidx_t;

/** Target entries per bucket when an index is built; a bucket grown past
 * twice as many splits at its median value. Smaller buckets make edges
 * cheaper and wide ranges dearer (more bitmaps to OR); 2048 was measured
 * on bench_hybrid (200k documents), other sizes not yet. */
#define DB_NUMIDX_BUCKET_ROWS_DEFAULT 2048u
#define DB_NUMIDX_BUCKET_ROWS_MIN 16u
#define DB_NUMIDX_BUCKET_ROWS_MAX 65536u

/** Set the target bucket size of indexes built from now on (process-wide;
 * tests use small ones to exercise splits). @return 0 or VELA_EINVAL */
int db_numidx_bucket_rows(uint32_t rows);
/**
 * @brief OR into `out` the docids of field's numeric postings in [elo, ehi]
 * (encoded, inclusive): from the in-memory index, built now when it is not
 * yet; from LMDB (db_num_read) when it cannot be (out of memory, not a
 * NUMERIC field). Caller holds db->lock shared (or exclusive) and `txn` is
 * a read transaction begun under it. @return 0 or a storage error
 */
int db_num_filter(storage_txn_t *txn, const db_index_t *ix, uint32_t field, uint64_t elo,
		  uint64_t ehi, roaring_bitmap_t *out);
/** The same from the in-memory index only, `out` untouched on failure.
 * @return 0; VELA_EINVAL (not a NUMERIC field); VELA_ENOMEM; a storage
 *   error of the build */
int db_numidx_range(storage_txn_t *txn, const db_index_t *ix, uint32_t field, uint64_t elo,
		    uint64_t ehi, roaring_bitmap_t *out);
/** Apply one committed numeric posting change (exclusive lock held). A
 * field whose index is not built is left alone; one that cannot take the
 * change (out of memory) is dropped, to be rebuilt by the next filter. */
int db_numidx_apply(db_field_t *f, uint32_t docid, uint64_t v, bool add);
void db_numidx_free(db_numidx_t *ni);
/** Sort n docids ascending (LSD radix; tmp: n slots of scratch), as
 * roaring_bitmap_add_many wants them (db/numidx.c). */
void db_docids_sort(uint32_t *v, uint32_t *tmp, size_t n);

typedef struct db_numidx_stats {
	bool built;
	bool complement; /**< wide ranges are answered as the complement */
	uint64_t rows;   /**< (value, docid) entries */
	uint32_t buckets, bucket_rows_max;
	size_t bytes; /**< memory held (bitmaps counted at their serialized size) */
} db_numidx_stats_t;
/** Figures of f's index (all zero when not built); db->lock held. */
void db_numidx_stats(const db_field_t *f, db_numidx_stats_t *out);

/* ------------------------------------------------------------ tag value index */
/*
 * db/tagidx.c: per TAG field, a hash of its values (the postings' terms,
 * already split, trimmed and case-folded as indexing writes them) to a
 * roaring bitmap of their docids: a clause of several values is one
 * roaring_bitmap_or_many of borrowed bitmaps instead of one LMDB read and
 * in-place OR per value. Built lazily at the field's first tag clause of a
 * one-at-a-time search by one scan of its postings (in the search's read
 * transaction, under one build mutex), kept current by DC_TAG_ADD /
 * DC_TAG_REMOVE after each commit, freed with its index (FT.DROPINDEX,
 * close). Memory is bounded by a budget of distinct values per field: a
 * field with more (a unique id used as a tag) is not built, or is dropped
 * when writes take it past the budget, and its clauses read LMDB as before
 * (db_field_t.tag_over). About 100 bytes per value plus its bitmap
 * (db_tagidx_stats, vela_index_info_t.tag_bytes).
 */
typedef struct db_tagidx db_tagidx_t;

/** Distinct values (those with an empty bitmap included, until the next
 * rehash drops them) a field's index may hold. 65,536 values cost about
 * 6 MiB besides their bitmaps; a field past the budget is answered from
 * LMDB, which reads only the values a clause names. */
#define DB_TAGIDX_VALUES_DEFAULT 65536u
#define DB_TAGIDX_VALUES_MIN 1u
#define DB_TAGIDX_VALUES_MAX (1u << 24)

/** Set the value budget of indexes built (or grown) from now on
 * (process-wide). @return 0 or VELA_EINVAL */
int db_tagidx_values_max(uint32_t n);
/** Stop (false) or resume (true) using the tag indexes: while off, tag
 * clauses read LMDB as if none were built (benchmarks compare the two). */
void db_tagidx_enable(bool on);
/**
 * @brief The docids of TAG `field`'s value `val` (the bytes a posting key
 * holds), from the in-memory index, built now when it is not yet. *bm is
 * borrowed while db->lock is held (NULL: no document has the value).
 * Caller holds db->lock shared (or exclusive) and `txn` is a read
 * transaction begun under it.
 * @return 0; VELA_EUNSUPPORTED when the field has no index (over the value
 *   budget, out of memory, a storage error, not a TAG field): read LMDB
 */
int db_tagidx_ref(storage_txn_t *txn, const db_index_t *ix, uint32_t field, const void *val,
		  size_t len, const roaring_bitmap_t **bm);
/** Apply one committed tag posting change (exclusive lock held). A field
 * whose index is not built is left alone; one that cannot take the change
 * (out of memory, over the budget) is dropped (rebuilt by the next clause,
 * or marked over the budget). */
int db_tagidx_apply(db_field_t *f, uint32_t docid, const uint8_t *val, size_t len, bool add);
void db_tagidx_free(db_tagidx_t *ti);

typedef struct db_tagidx_stats {
	bool built;
	uint32_t over;   /**< db_field_t.tag_over */
	uint64_t values; /**< values held (empty ones until a rehash) */
	uint64_t postings; /**< (value, docid) pairs */
	size_t bytes; /**< memory held (bitmaps counted at their serialized size) */
} db_tagidx_stats_t;
/** Figures of f's index (all zero when not built); db->lock held. */
void db_tagidx_stats(const db_field_t *f, db_tagidx_stats_t *out);

/* ------------------------------------------------------------ snapshots */

#define PATH_MAX_SNAP 4096
/** Path of field k's kept LeanVec-OOD training queries. */
void db_train_path(const vela_db_t *db, const db_index_t *ix, uint32_t k, char *buf, size_t len);
/** Save every built graph (at close; `seq` = the change-log sequence now). */
void db_snapshots_save(vela_db_t *db, uint64_t seq);
/** Load field k's graph from a current snapshot: 0, or why not (then build). */
int db_snapshot_load(const vela_db_t *db, db_index_t *ix, uint32_t k, uint64_t seq);
/** Delete an index's snapshot files (index dropped). */
void db_snapshot_remove(const vela_db_t *db, const db_index_t *ix);

struct vela_db {
	char *dir; /**< the database directory (snapshot files live there) */
	storage_env_t *env;
	pthread_rwlock_t lock;   /**< in-memory state; see the file comment */
	pthread_mutex_t write_mu; /**< one writer (batch, index create/drop) */
	pthread_mutex_t backup_mu; /**< one hot copy at a time; a map resize waits for it */
	db_index_t **indexes;
	size_t n_indexes;
	size_t cap_indexes; /**< reserved before a create commits, so publishing cannot fail */
	/* VECTOR fields with a MODEL over all indexes, set under the write lock
	 * whenever an index is published or dropped: lets the server skip the
	 * lookup of computed vectors on every HSET when there are none. */
	atomic_uint n_computed;
	db_builder_t *builder; /**< background graph builds, or NULL (foreground) */
};

/** Recount db->n_computed (caller holds db->lock exclusively, or is alone). */
void db_computed_recount(vela_db_t *db);

/* ------------------------------------------------------------ pending changes */

/** Kinds of in-memory changes a write transaction applies once committed. */
enum db_change_kind {
	DC_VEC_SET,    /**< flat_set(field, docid, vec) */
	DC_VEC_REMOVE, /**< flat_remove(field, docid) */
	DC_DOC_ADD,    /**< add docid to the index's bitmap */
	DC_DOC_REMOVE, /**< remove docid from the bitmap */
	DC_FAILURE,    /**< one more indexing failure */
	DC_INDEX_ADD,  /**< publish a new index */
	DC_INDEX_DROP, /**< unpublish and free an index */
	DC_NUM_ADD,    /**< numeric posting (field, docid, num) written (db_numidx_apply) */
	DC_NUM_REMOVE, /**< numeric posting (field, docid, num) removed */
	DC_TAG_ADD,    /**< tag posting (field, docid, term) written (db_tagidx_apply) */
	DC_TAG_REMOVE, /**< tag posting (field, docid, term) removed */
};

typedef struct db_change {
	int kind;
	db_index_t *ix;
	uint32_t field;
	uint32_t docid;
	float *vec; /**< DC_VEC_SET: owned (malloc'd), freed after apply */
	uint64_t num; /**< DC_NUM_*: the encoded value (storage_num_encode, big-endian) */
	uint8_t *term; /**< DC_TAG_*: the posting's value (malloc'd), freed after apply */
	size_t term_len;
} db_change_t;

/** A list of changes to apply after commit (or drop on abort). */
typedef struct db_changes {
	db_change_t *v;
	size_t n, cap;
} db_changes_t;

int db_changes_push(db_changes_t *c, db_change_t ch);
/** Drop changes from `mark` on (their vectors and unpublished indexes freed). */
void db_changes_truncate(db_changes_t *c, size_t mark);
/** Apply every change to memory; caller holds db->lock exclusively. Empties `c`. */
void db_changes_apply(vela_db_t *db, db_changes_t *c);

/** Make room for n published indexes (call holding write_mu, not lock). */
int db_indexes_reserve(vela_db_t *db, size_t n);
/** Commit `txn` and apply `ch` under the exclusive lock. Frees txn. */
int db_commit(vela_db_t *db, storage_txn_t *txn, db_changes_t *ch, vela_err_t *err);

/* ------------------------------------------------------------ catalog */

/** Validate a definition and build a loaded index from it (no docs yet). */
int db_index_from_def(const vela_index_def_t *def, uint32_t id, db_index_t **out,
		      vela_err_t *err);
void db_index_free(db_index_t *ix);
/** Pack / unpack a definition for the catalog table. */
int db_index_pack(const db_index_t *ix, uint8_t **out, size_t *len);
int db_index_unpack(const uint8_t *buf, size_t len, db_index_t **out, vela_err_t *err);
db_index_t *db_index_find(vela_db_t *db, const char *name);
bool db_index_matches_key(const db_index_t *ix, const uint8_t *key, size_t klen);
/** Field position by query name (alias), or -1. */
int db_field_find(const db_index_t *ix, const char *name, size_t len);

/* ------------------------------------------------------------ indexing */

/**
 * @brief Re-index one document in one index: `fields` is its new content
 * (NULL when deleted). Writes postings, vectors and docid rows in `txn`
 * and records in-memory changes in `ch`.
 */
int db_index_doc(db_index_t *ix, storage_txn_t *txn, const uint8_t *key, size_t klen,
		 const storage_field_t *old, size_t n_old, const storage_field_t *fields,
		 size_t n_fields, db_changes_t *ch);
/* ------------------------------------------------------------ write ops */

/** Kinds of writes a batch runs (each in its own nested transaction). */
enum db_op_kind { OP_HSET, OP_HSETNX, OP_HSET_IF, OP_HDEL, OP_DEL, OP_SET, OP_EXPIRE, OP_EXPIRE_CYCLE };

/** One write and its arguments; `count` is its result (fields added, ...). */
typedef struct db_op {
	int kind;
	const uint8_t *key;
	size_t klen;
	const vela_kv_t *kv; /**< HSET/HDEL fields (OP_HSET_IF: kv[0] is the condition) */
	size_t n;            /**< number of kv; OP_EXPIRE_CYCLE: most keys to expire */
	const void *val;     /**< SET value */
	size_t vlen;
	unsigned flags;      /**< SET: VELA_SET_* */
	int64_t at_ms;       /**< SET/EXPIRE: unix ms; EXPIRE < 0 = persist */
	size_t count;
} db_op_t;

/** Store a hash (n_doc == 0 deletes it) and re-index it everywhere. */
int db_doc_store(vela_db_t *db, storage_txn_t *txn, const uint8_t *key, size_t klen,
		 const storage_field_t *old, size_t n_old, const storage_field_t *doc,
		 size_t n_doc, db_changes_t *ch);
/** Wall clock in unix milliseconds (expiry times). */
int64_t db_now_ms(void);
/** VELA_ETYPE if `key` holds a string, else 0. */
int db_key_is_string(storage_txn_t *txn, const uint8_t *key, size_t klen);
/** Delete `key` (hash or string) if its expiry time has passed. */
int db_key_lazy_expire(vela_db_t *db, storage_txn_t *txn, const uint8_t *key, size_t klen,
		       db_changes_t *ch);
/** Delete a key of any type; *count = 1 if it existed. */
int db_key_delete(vela_db_t *db, storage_txn_t *txn, const uint8_t *key, size_t klen,
		  db_changes_t *ch, size_t *count);
/** The read transaction of a view. */
storage_txn_t *db_view_txn(vela_view_t *v);
/** 0 if `key` has an expiry time that has passed (reads treat it as absent). */
int db_key_live_read(storage_txn_t *txn, const uint8_t *key, size_t klen);
/** Remove a key's expiry (absent is fine). */
int db_expiry_clear(storage_txn_t *txn, const uint8_t *key, size_t klen);
/** OP_SET, OP_EXPIRE, OP_EXPIRE_CYCLE. */
int db_keyspace_op(vela_db_t *db, storage_txn_t *txn, db_op_t *op, db_changes_t *ch);

/** The field called `name` in a document's fields, or NULL. */
const storage_field_t *db_doc_field(const storage_field_t *f, size_t n, const char *name);
/** Delete a document and re-index it out of every index; *deleted (may be NULL) = existed. */
int db_doc_delete(vela_db_t *db, storage_txn_t *txn, const uint8_t *key, size_t klen,
		  db_changes_t *ch, int *deleted);
/** Decode a stored vector blob into floats (normalised for COSINE). Caller frees. */
int db_vector_decode(const db_field_t *f, const void *blob, size_t len, float **out);
/**
 * Rebuild an index's in-memory structures from LMDB; graphs come from their
 * snapshot when it was written at change-log sequence `seq`, else are built.
 */
int db_index_load(const vela_db_t *db, db_index_t *ix, storage_txn_t *txn, uint64_t seq,
		  vela_err_t *err);

/** Row keys. */
size_t db_key_idmap(uint8_t *buf, uint32_t index_id, const uint8_t *key, size_t klen);
size_t db_key_docid(uint8_t *buf, uint32_t index_id, uint32_t docid);
size_t db_key_vector(uint8_t *buf, uint32_t index_id, uint32_t field, uint32_t docid);

#endif
