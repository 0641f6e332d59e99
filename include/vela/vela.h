/**
 * @file vela.h
 * @brief The embedded vela engine: open a database directory, define
 * indexes, write documents, search.
 *
 * @section model Data model
 * A database is one directory holding one LMDB environment. A document is a
 * binary-safe key holding a hash of binary-safe fields, as in Redis. An index
 * is a named schema over the documents whose key starts with one of its
 * prefixes (no prefix: every key). Every matching document is indexed on
 * every write (Redis HSET/HDEL/DEL semantics): a field that is missing is not
 * indexed; a vector of the wrong size or a NUMERIC value that is not a number
 * is an *indexing failure* — the write succeeds, the document leaves that
 * index and the index's failure counter rises.
 *
 * @section durability Durability
 * A write returns only after the LMDB transaction holding it committed
 * (fsync'd unless the database was opened with VELA_OPEN_NOSYNC). Use a
 * vela_batch_t to put many writes in one commit (group commit); each write
 * in a batch succeeds or fails alone, and either all successful writes of a
 * batch are committed or none.
 *
 * @section threads Threads
 * A vela_db_t may be used from many threads at once: searches run
 * concurrently with each other; writes are serialised (one writer). A
 * vela_batch_t must be begun, used and committed (or aborted) on one thread:
 * LMDB binds a write transaction to its thread. Other threads get
 * VELA_EINVAL. While a thread holds a batch it must not call the one-write
 * functions, index create/drop or vela_db_set_map_size (they wait for it).
 *
 * @section errors Errors
 * Every function that can fail returns 0 or a negative VELA_E... code (see
 * errors.h) and, when given a vela_err_t, a message meant for the user.
 *
 * @section example Example
 * @code
 *   vela_db_t *db; vela_err_t err;
 *   if (vela_db_open("./data", NULL, &db, &err)) die(err.msg);
 *   vela_field_def_t f[] = {
 *     {.name = "genre", .type = VELA_FIELD_TAG},
 *     {.name = "v", .type = VELA_FIELD_VECTOR, .dim = 4, .metric = VELA_METRIC_L2},
 *   };
 *   vela_index_def_t def = {.name = "idx", .prefixes = (const char *[]){"doc:"},
 *                           .n_prefixes = 1, .fields = f, .n_fields = 2};
 *   vela_index_create(db, &def, &err);
 *   float v[4] = {1, 2, 3, 4};
 *   vela_kv_t kv[] = {{"genre", 5, "jazz", 4}, {"v", 1, v, sizeof v}};
 *   vela_hset(db, "doc:1", 5, kv, 2, NULL, &err);
 *   vela_param_t p = {"B", 1, v, sizeof v};
 *   vela_search_req_t req = {.index = "idx",
 *     .query = "@genre:{jazz}=>[KNN 10 @v $B AS dist]", .params = &p, .n_params = 1,
 *     .limit = 10};
 *   vela_result_t *res;
 *   vela_search(db, &req, &res, &err);   // res->hits[i].key, .dist, .fields
 *   vela_result_free(res);
 *   vela_db_close(db);
 * @endcode
 */
#ifndef VELA_VELA_H
#define VELA_VELA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vela/errors.h"
#include "vela/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ================================================================ database */

/** Opaque database handle. */
typedef struct vela_db vela_db_t;

/** Open flags. */
enum vela_open_flag {
	/** Relaxed durability: commits are not fsync'd (like appendfsync
	 * everysec); call vela_db_sync() periodically. */
	VELA_OPEN_NOSYNC = 1u << 0,
	/** Build graphs (and train compressed stores) on a background thread:
	 * the field answers exactly (or from its old graph, when retrained)
	 * until the new graph is swapped in, and writes never wait for a build
	 * (db/builder.c). Without it a write that reaches the training
	 * threshold builds the graph before it returns. vela_db_wait_builds()
	 * waits for the builds queued so far. */
	VELA_OPEN_BACKGROUND_BUILD = 1u << 1,
};

/** Options for vela_db_open(); NULL means all defaults. Zero fields = default. */
typedef struct vela_db_options {
	size_t map_size; /**< LMDB map size in bytes (VELA_MAP_SIZE_*) */
	unsigned flags;  /**< vela_open_flag bits */
} vela_db_options_t;

#define VELA_MAP_SIZE_DEFAULT (1ull << 30)
#define VELA_MAP_SIZE_MIN (1ull << 20)
#define VELA_MAP_SIZE_MAX (1ull << 46)

/**
 * @brief Open (creating it if needed) the database in directory `dir`.
 * Loads every index and rebuilds its in-memory structures from LMDB.
 * @return 0, VELA_EVERSION (written by a newer vela), VELA_ECORRUPT (not a
 *         vela database), VELA_EBUSY, VELA_EIO, VELA_ENOMEM.
 * @param[out] out the handle; close with vela_db_close().
 */
int vela_db_open(const char *dir, const vela_db_options_t *opts, vela_db_t **out,
		 vela_err_t *err);
/** Close the database; no call on it may be running. NULL is a no-op. */
void vela_db_close(vela_db_t *db);
/**
 * @brief Change the LMDB map size (grow after VELA_EMAPFULL, or shrink while
 * the data still fits). Waits for running searches and writes.
 */
int vela_db_set_map_size(vela_db_t *db, size_t bytes, vela_err_t *err);
/** Current map size and bytes in use. */
void vela_db_map_usage(vela_db_t *db, size_t *map_size, size_t *used);
/** Flush commits to disk (only needed with VELA_OPEN_NOSYNC). */
int vela_db_sync(vela_db_t *db);
/** Number of documents (keys) in the database. */
uint64_t vela_db_size(vela_db_t *db);
/** Keys (as vela_db_size) and keys with a TTL, for INFO's keyspace line. NULLs allowed. */
void vela_db_keyspace(vela_db_t *db, uint64_t *keys, uint64_t *expires);

/* ================================================================ backups */

/**
 * @brief Write a consistent, compacted copy of the open database into the
 * directory `dest` (an LMDB hot copy, MDB_CP_COMPACT, fsync'd): every write
 * committed before the call began is in it, none committed after. Writes
 * and searches go on meanwhile; a map resize waits for it.
 *
 * `dest` must be absent, an empty directory, or an earlier backup (a
 * directory holding only data.mdb / lock.mdb), which is replaced; its parent
 * must exist. The copy is written to `dest`.tmp and renamed into place, so
 * `dest` never holds a partial copy. Graph snapshots are not copied: a
 * server opening the copy rebuilds its graphs from the documents.
 * @return 0, VELA_EEXISTS / VELA_EINVAL (bad destination), VELA_EIO.
 */
int vela_db_backup(vela_db_t *db, const char *dest, vela_err_t *err);
/**
 * @brief vela_db_backup of the database in directory `src` without opening
 * it as a database (no index is loaded). A server may be using `src`.
 * @return as vela_db_backup, and VELA_ENOTFOUND (no database in `src`),
 *         VELA_EVERSION (a newer on-disk format), VELA_ECORRUPT.
 */
int vela_backup_dir(const char *src, const char *dest, vela_err_t *err);
/**
 * @brief Make `dbdir` a database from the backup in `src`: a compacting
 * copy (which reads every page, so a damaged backup fails here) renamed into
 * place. `dbdir` must be absent or empty: nothing is overwritten.
 * @return as vela_backup_dir.
 */
int vela_restore_dir(const char *src, const char *dbdir, vela_err_t *err);

/* ================================================================ indexes */

/** Longest index name. */
#define VELA_INDEX_NAME_MAX 256u
/** Most fields in one index schema. */
#define VELA_INDEX_FIELDS_MAX 1024u
/** Most prefixes of one index. */
#define VELA_INDEX_PREFIXES_MAX 256u

/** One field of an index schema. */
typedef struct vela_field_def {
	const char *name;  /**< the hash field it reads */
	const char *alias; /**< name used in queries (AS); NULL = name */
	vela_field_type_t type;
	/* TAG */
	char tag_separator;  /**< 0 = ',' */
	bool case_sensitive; /**< TAG: keep case (default: lowercase) */
	/* VECTOR */
	vela_algo_t algo;        /**< FLAT, or GRAPH (approximate, see below) */
	vela_vec_type_t vec_type; /**< element type of stored blobs */
	uint32_t dim;            /**< VELA_DIM_MIN..VELA_DIM_MAX */
	vela_metric_t metric;
	/* GRAPH (0 = default): GRAPH_MAX_DEGREE, CONSTRUCTION_WINDOW_SIZE and
	 * SEARCH_WINDOW_SIZE of SVS-VAMANA (HNSW: 2*M, EF_CONSTRUCTION, EF_RUNTIME). */
	uint32_t graph_max_degree;
	uint32_t graph_build_window;
	uint32_t graph_search_window;
	/* GRAPH compression (SVS-VAMANA COMPRESSION): 0 = none, else 1 + a
	 * graph_lvq_kind_t (index/index.h: LVQ8, LVQ4, LVQ4x4, LVQ4x8, LeanVec4x8,
	 * LeanVec8x8). Trained on the first `training_threshold` vectors
	 * (0 = VELA_TRAINING_THRESHOLD_DEFAULT); `reduce` = LeanVec's dimension
	 * (0 = dim/2). Until then the field answers exactly. */
	uint32_t compression;
	uint32_t training_threshold;
	uint32_t reduce;
	/* VECTOR computed in-process (server: FT.CREATE ... MODEL m SOURCE f):
	 * the embedding model's name and the hash field whose text it embeds.
	 * Both NULL, or both set. The engine only stores them: computing the
	 * vector is the caller's business (velad does it before the write). */
	const char *model;  /**< at most VELA_MODEL_NAME_MAX bytes */
	const char *source; /**< a hash field name */
	/* GRAPH: the algorithm name it was created with (VELA_GRAPH_NAME_*).
	 * HNSW and SVS-VAMANA are both served by the one Vamana graph; the name
	 * is kept only so FT.INFO can report what the user wrote (HNSW's M is
	 * graph_max_degree / 2). 0 = HNSW, or SVS-VAMANA when compressed. FLAT: 0. */
	uint32_t graph_name;
} vela_field_def_t;

/** vela_field_def_t.graph_name values. */
#define VELA_GRAPH_NAME_AUTO 0u
#define VELA_GRAPH_NAME_HNSW 1u
#define VELA_GRAPH_NAME_SVS_VAMANA 2u

/** Longest embedding model name (a directory name under the model dir). */
#define VELA_MODEL_NAME_MAX 128u

#define VELA_TRAINING_THRESHOLD_DEFAULT 10240u
#define VELA_TRAINING_THRESHOLD_MIN 1024u
#define VELA_TRAINING_THRESHOLD_MAX (100u * 1024u)

/** An index definition. */
typedef struct vela_index_def {
	const char *name;
	const char *const *prefixes; /**< n_prefixes key prefixes; none = every key */
	uint32_t n_prefixes;
	const vela_field_def_t *fields;
	uint32_t n_fields;
	bool skip_initial_scan; /**< do not index keys that already exist */
} vela_index_def_t;

/**
 * @brief Create an index and (unless skip_initial_scan) index every existing
 * matching document, in one transaction.
 * @return 0, VELA_EEXISTS ("Index already exists"), VELA_EINVAL (bad
 *         schema: duplicate field, DIM 0 or above VELA_DIM_MAX, ...),
 *         VELA_EMAPFULL.
 * The definition is copied; the caller keeps ownership of `def`.
 */
int vela_index_create(vela_db_t *db, const vela_index_def_t *def, vela_err_t *err);
/**
 * @brief Drop an index; with `delete_docs`, also delete its documents (FT.DROPINDEX DD).
 * @return 0, VELA_ENOTFOUND ("Unknown index name").
 */
int vela_index_drop(vela_db_t *db, const char *name, bool delete_docs, vela_err_t *err);
/**
 * @brief Names of all indexes, sorted. *names is a malloc'd array of malloc'd
 * strings; free with vela_strv_free(*names, *n).
 */
int vela_index_list(vela_db_t *db, char ***names, size_t *n);
/** Free a string vector returned by vela (NULL is a no-op). */
void vela_strv_free(char **v, size_t n);

/** Statistics of one index (FT.INFO). */
typedef struct vela_index_info {
	uint64_t num_docs;           /**< documents indexed */
	uint64_t indexing_failures;  /**< writes that left a document unindexed */
	uint64_t vector_bytes;       /**< in-memory bytes of vector data (and graphs) */
	uint64_t numeric_bytes;      /**< in-memory bytes of NUMERIC range indexes (built at
				      *   a field's first numeric filter; 0 before) */
	uint64_t tag_bytes;          /**< in-memory bytes of TAG value indexes (built at a
				      *   field's first tag clause of a one-at-a-time search) */
	uint64_t graph_nodes;        /**< live nodes of built graphs (0: none built yet) */
	uint32_t graphs_from_snapshot; /**< graphs loaded from a snapshot at open (not rebuilt) */
	uint32_t graphs_building;    /**< fields whose graph build or retraining is queued or running */
	uint32_t n_fields;
	uint32_t n_prefixes;
} vela_index_info_t;

int vela_index_info(vela_db_t *db, const char *name, vela_index_info_t *out, vela_err_t *err);

/**
 * @brief Retrain a compressed GRAPH field (LVQ / LeanVec) and rebuild its
 * graph, in the background: the current graph keeps answering until the new
 * one replaces it (writes made meanwhile are carried over). For LeanVec the
 * projection is trained out-of-distribution (reference/leanvec-lvq.md §1.3)
 * on `queries` (n_queries rows of `dim` floats, copied), or, when queries is
 * NULL, on the queries recorded from the field's searches; with neither, or
 * fewer than VELA_TRAIN_QUERIES_MIN rows, in-distribution (PCA). The query
 * sample used is kept beside the database so a reopen trains the same store.
 * @param field the vector field's name or alias (NULL: the index's only
 *              vector field)
 * @return 0 (queued); VELA_ENOTFOUND (index or field); VELA_EINVAL (not a
 *   compressed GRAPH field, dim mismatch, non-finite query); VELA_EBUSY (the
 *   field has fewer vectors than its training threshold); VELA_ENOMEM.
 *   Call vela_db_wait_builds() to wait for the result.
 */
int vela_index_train(vela_db_t *db, const char *index, const char *field, const float *queries,
		     size_t n_queries, uint32_t dim, vela_err_t *err);

/** Fewest query rows vela_index_train trains out-of-distribution on. */
#define VELA_TRAIN_QUERIES_MIN 64u

/**
 * @brief Wait until no graph build or training is queued or running, or
 * `timeout_ms` passed (0: wait as long as it takes).
 * @return 0, or VELA_EBUSY (still building when the time ran out).
 */
int vela_db_wait_builds(vela_db_t *db, uint64_t timeout_ms);

/** Is a graph build or training queued or running (INFO's graph_builds_pending)? */
bool vela_db_builds_pending(vela_db_t *db);
/**
 * @brief A copy of an index's definition. Free with vela_index_def_free().
 * Strings and arrays in it are owned by the copy.
 */
int vela_index_describe(vela_db_t *db, const char *name, vela_index_def_t **out, vela_err_t *err);
void vela_index_def_free(vela_index_def_t *def);

/** Bytes one VECTOR field holds in memory (FT.INFO `memory`). */
typedef struct vela_field_memory {
	uint64_t vectors;    /**< the full-precision vectors of the exact index */
	uint64_t compressed; /**< LVQ / LeanVec codes, projections, encoders (0: none yet) */
	uint64_t graph;      /**< graph adjacency (0: FLAT, or not built yet) */
	uint64_t total;      /**< vectors + compressed + graph */
} vela_field_memory_t;

/**
 * @brief What a VECTOR field of an index holds in memory now; takes the
 * database lock shared (like vela_index_info).
 * @param field the field's alias (query name) or, failing that, its name
 * @return 0; VELA_ENOTFOUND (no such index, or no such field);
 *   VELA_EINVAL (NULL arguments, or the field is not a VECTOR field)
 */
int vela_field_memory(vela_db_t *db, const char *index, const char *field,
		      vela_field_memory_t *out, vela_err_t *err);

/* ================================================================ documents */

/** A binary-safe name/value pair (a hash field, a query parameter). */
typedef struct vela_kv {
	const void *name;
	size_t name_len;
	const void *value;
	size_t value_len;
} vela_kv_t;

/** A vector the caller must compute before writing a document: a VECTOR
 * field with MODEL/SOURCE whose source field is being written. */
typedef struct vela_embed_target {
	char *model;   /**< the model's name (malloc'd) */
	char *field;   /**< the vector's hash field (malloc'd) */
	uint32_t source; /**< index in the caller's kv array of the source text */
	uint32_t dim;
	vela_vec_type_t vec_type;
} vela_embed_target_t;

/**
 * @brief The vectors to compute for a write of `kv[0..n)` to `key`: one
 * target per distinct vector field (of every index matching the key) whose
 * SOURCE is among the fields written (the last occurrence of a repeated
 * field counts, as HSET applies them in order). Cheap without any MODEL
 * field in the database (no lock taken).
 * @param out receives a malloc'd array (NULL when none); free it with
 *        vela_embed_targets_free().
 * @return 0, VELA_EINVAL (two indexes compute the same field with different
 *         models or dimensions), VELA_ENOMEM.
 */
int vela_embed_targets(vela_db_t *db, const void *key, size_t klen, const vela_kv_t *kv,
		       size_t n, vela_embed_target_t **out, size_t *n_out, vela_err_t *err);
void vela_embed_targets_free(vela_embed_target_t *t, size_t n);

/** vela_embed_missing's callback: `t` (borrowed) is missing in `key`, whose
 * field `source` holds `text`. Return 0 to go on, negative to stop with it. */
typedef int (*vela_embed_missing_fn)(void *ctx, const void *key, size_t klen,
				     const vela_embed_target_t *t, const char *source,
				     const void *text, size_t tlen);
/**
 * @brief Back-filling computed vectors (FT.CREATE over existing documents):
 * walk the documents in key order after `*cursor` (NULL: from the start),
 * visiting at most `max`, and report every MODEL field of index `index`
 * whose SOURCE field is there and whose vector is not. `*cursor` (malloc'd,
 * the caller frees it) is moved to the last key visited; `*done` is set once
 * the walk reached the end. Holds the engine's read lock while it runs: keep
 * `max` small and the callback cheap (no engine calls).
 * @return 0, VELA_ENOTFOUND (no such index; *done set), VELA_ENOMEM, or a
 *         storage error.
 */
int vela_embed_missing(vela_db_t *db, const char *index, void **cursor, size_t *cursor_len,
		       size_t max, vela_embed_missing_fn fn, void *ctx, bool *done,
		       vela_err_t *err);

/** Longest document key (LMDB's key limit less vela's prefixes). */
#define VELA_KEY_MAX 480u

/** A batch of writes committed together (group commit). */
typedef struct vela_batch vela_batch_t;

/**
 * @brief Start a batch. Only one batch (or single write) runs at a time; a
 * second caller waits. Finish with vela_batch_commit() or vela_batch_abort().
 */
int vela_batch_begin(vela_db_t *db, vela_batch_t **out, vela_err_t *err);
/**
 * @brief HSET: set fields of the hash at `key` (creating it). *n_added (may be
 * NULL) gets the number of fields that were new (Redis's reply).
 * Fields with the same name later in `fields` win. Each write is atomic on
 * its own: on error nothing of it is in the batch.
 * @return 0, VELA_EINVAL (no fields, empty key), VELA_ELIMIT (key longer
 *         than VELA_KEY_MAX), VELA_EMAPFULL ("OOM ...": this write left no
 *         trace; the batch's earlier writes may still commit, but a map that
 *         is full may also make the commit fail, losing the whole batch —
 *         abort, grow the map with vela_db_set_map_size, retry),
 *         VELA_ETXNFULL (the batch outgrew one LMDB write transaction's
 *         dirty pages: the batch is failed, its commit returns VELA_ETXNFULL
 *         and writes nothing — retry its writes in smaller batches).
 */
int vela_batch_hset(vela_batch_t *b, const void *key, size_t klen, const vela_kv_t *fields,
		    size_t n, size_t *n_added, vela_err_t *err);
/** HDEL: remove fields; *n_removed gets how many existed. An emptied hash is deleted. */
int vela_batch_hdel(vela_batch_t *b, const void *key, size_t klen, const vela_kv_t *names,
		    size_t n, size_t *n_removed, vela_err_t *err);
/** DEL: delete the document; *deleted is 1 if it existed. */
int vela_batch_del(vela_batch_t *b, const void *key, size_t klen, int *deleted, vela_err_t *err);
/**
 * @brief Commit the batch: durable when this returns 0; indexes then reflect
 * every write in it. The handle is freed either way.
 */
int vela_batch_commit(vela_batch_t *b, vela_err_t *err);
/** Discard every write of the batch and free it. NULL is a no-op. */
void vela_batch_abort(vela_batch_t *b);

/** One-write batches. */
int vela_hset(vela_db_t *db, const void *key, size_t klen, const vela_kv_t *fields, size_t n,
	      size_t *n_added, vela_err_t *err);
int vela_hdel(vela_db_t *db, const void *key, size_t klen, const vela_kv_t *names, size_t n,
	      size_t *n_removed, vela_err_t *err);
int vela_del(vela_db_t *db, const void *key, size_t klen, int *deleted, vela_err_t *err);

/** HSETNX: set one field only if the hash lacks it; *set = 1 if it was set. */
/**
 * @brief HSET `fields[0..n)` only if field `cond->name` currently holds
 * exactly `cond->value` (*applied 1), else nothing (*applied 0). velad writes
 * a back-filled vector this way, so a newer text written meanwhile wins.
 */
int vela_batch_hset_if(vela_batch_t *b, const void *key, size_t klen, const vela_kv_t *cond,
		       const vela_kv_t *fields, size_t n, int *applied, vela_err_t *err);
int vela_batch_hsetnx(vela_batch_t *b, const void *key, size_t klen, const vela_kv_t *field,
		      int *set, vela_err_t *err);
/**
 * @brief HSETNX of `field` that, when it sets it, also sets `extra[0..n)`
 * (velad: the vectors computed from a SOURCE field); when `field` exists
 * nothing is written (*set 0).
 */
int vela_batch_hsetnx_with(vela_batch_t *b, const void *key, size_t klen,
			   const vela_kv_t *field, const vela_kv_t *extra, size_t n_extra, int *set,
			   vela_err_t *err);

/** SET flags. */
enum vela_set_flag {
	VELA_SET_NX = 1u << 0,      /**< only if the key does not exist */
	VELA_SET_XX = 1u << 1,      /**< only if it exists */
	VELA_SET_KEEPTTL = 1u << 2, /**< keep an existing expiry */
};

/**
 * @brief SET a string key (replacing a hash of that name, which leaves its
 * indexes). `expire_at_ms` > 0 sets an expiry (unix ms), else the expiry is
 * cleared unless VELA_SET_KEEPTTL. *done = 1 if the value was written.
 */
int vela_batch_set(vela_batch_t *b, const void *key, size_t klen, const void *val, size_t vlen,
		   unsigned flags, int64_t expire_at_ms, int *done, vela_err_t *err);
/**
 * @brief EXPIRE / PEXPIREAT / PERSIST: `at_ms` is a unix time in ms; a time
 * already past deletes the key (it leaves its indexes); `at_ms` < 0 removes
 * the expiry. *applied = 1 if the key existed (PERSIST: if it had an expiry).
 */
int vela_batch_expire(vela_batch_t *b, const void *key, size_t klen, int64_t at_ms, int *applied,
		      vela_err_t *err);
/**
 * @brief Active expiry: delete up to `max` keys whose time has passed,
 * oldest first, removing them from their indexes. Expired keys also read as
 * absent before the cycle reaches them (lazy expiry), except in search results.
 * The cycle also trims the change log, which nothing replays until snapshots
 * of derived data exist (every index is rebuilt from LMDB at open).
 */
int vela_batch_expire_cycle(vela_batch_t *b, size_t max, size_t *n_expired, vela_err_t *err);

/** Key types (TYPE). */
typedef enum vela_key_type {
	VELA_KEY_NONE = 0,
	VELA_KEY_STRING = 1,
	VELA_KEY_HASH = 2,
} vela_key_type_t;

int vela_key_type(vela_db_t *db, const void *key, size_t klen, vela_key_type_t *type);
/** Time to live in ms: -2 no such key, -1 no expiry. */
int vela_ttl(vela_db_t *db, const void *key, size_t klen, int64_t *ms);
/**
 * @brief GET a string key. *val is malloc'd and NUL-terminated (free it).
 * @return 0, VELA_ENOTFOUND, VELA_ETYPE ("WRONGTYPE ..." for a hash).
 */
int vela_getstr(vela_db_t *db, const void *key, size_t klen, char **val, size_t *vlen,
		vela_err_t *err);

/** A list of keys; free with vela_keylist_free. Keys are NUL-terminated copies. */
typedef struct vela_keylist {
	char **keys;
	size_t *lens;
	size_t n, cap;
} vela_keylist_t;

/**
 * @brief KEYS / SCAN: live keys matching the glob `pattern` (NULL = all),
 * hashes then strings in byte order, starting `cursor` keys in. At most
 * `count` keys are visited when count > 0 (0 = all). *next is the cursor to
 * pass next, 0 when the walk is complete. Keys added or removed between calls
 * may be missed or repeated (as with Redis SCAN across rehashing).
 */
int vela_scan(vela_db_t *db, const char *pattern, uint64_t cursor, size_t count,
	      vela_keylist_t *out, uint64_t *next);
void vela_keylist_free(vela_keylist_t *l);

/** FLUSHALL: delete every key and every index definition. */
int vela_db_flush(vela_db_t *db, vela_err_t *err);

/** A document read back: fields in insertion order. */
typedef struct vela_doc {
	vela_kv_t *fields; /**< points into the same allocation */
	size_t n_fields;
} vela_doc_t;

/**
 * @brief HGETALL. *out is one allocation; free with vela_doc_free().
 * @return 0 or VELA_ENOTFOUND.
 */
int vela_get(vela_db_t *db, const void *key, size_t klen, vela_doc_t **out, vela_err_t *err);
void vela_doc_free(vela_doc_t *doc);

/**
 * @brief A read view: one LMDB read transaction and the shared lock, held
 * across many reads (a server answering a pipeline of GETs pays for them
 * once). While a thread holds a view it must make no other vela_* call that
 * takes the database lock (anything but the vela_view_* reads): the lock
 * prefers writers, so a second shared acquisition could wait behind a writer
 * that waits for this view. End it promptly: writers wait for it too.
 */
typedef struct vela_view vela_view_t;
int vela_view_begin(vela_db_t *db, vela_view_t **out);
void vela_view_end(vela_view_t *v);
/** As vela_get, vela_getstr, vela_key_type and vela_ttl, inside a view. */
int vela_view_get(vela_view_t *v, const void *key, size_t klen, vela_doc_t **out,
		  vela_err_t *err);
int vela_view_getstr(vela_view_t *v, const void *key, size_t klen, char **val, size_t *vlen,
		     vela_err_t *err);
int vela_view_key_type(vela_view_t *v, const void *key, size_t klen, vela_key_type_t *type);
int vela_view_ttl(vela_view_t *v, const void *key, size_t klen, int64_t *ms);

/* ================================================================ search */

/** LIMIT of a search. */
#define VELA_LIMIT_DEFAULT 10u
#define VELA_LIMIT_MAX 1000000u

/**
 * Plans of a KNN query with a filter (a hybrid query). The planner picks one
 * from the filter's exact match count (vela_profile_t.filter_matches); a
 * query may force one with HYBRID_POLICY (ADHOC_BF = VELA_PLAN_SCAN,
 * BATCHES = VELA_PLAN_BATCHES) or, through this API only, with
 * vela_search_req_t.force_plan (which wins over HYBRID_POLICY). The graph
 * plans need a GRAPH field with its graph built; otherwise they scan.
 */
typedef enum vela_plan {
	VELA_PLAN_AUTO = 0,    /**< the planner decides */
	VELA_PLAN_SCAN = 1,    /**< "filtered-scan": exact scan of the filter's docids (ADHOC_BF) */
	VELA_PLAN_GRAPH = 2,   /**< "graph": the walk over every node, keeping the matches
				    (its window widened by 1 / selectivity) */
	VELA_PLAN_BATCHES = 3, /**< "batches": batches of unfiltered nearest neighbours,
				    each filtered, until K pass (BATCHES) */
	VELA_PLAN_FILTERED_GRAPH = 4, /**< "filtered-graph": the walk over the matching
					   nodes only, two-hop expansion (ACORN-1) */
} vela_plan_t;

/** A search request. Zero-initialise, then set what you need. */
typedef struct vela_search_req {
	const char *index;
	/** Dialect-2 query, e.g. "@tag:{a|b} @n:[1 (5]=>[KNN 10 @v $B AS d]". */
	const char *query;
	size_t query_len; /**< 0 = strlen(query) */
	const vela_kv_t *params; /**< PARAMS: name -> value (binary-safe) */
	size_t n_params;
	size_t offset; /**< LIMIT offset */
	size_t limit;  /**< LIMIT num (0 with limit_set = count only); 0 = VELA_LIMIT_DEFAULT */
	bool limit_set;
	bool nocontent; /**< keys only, no fields */
	/** RETURN: only these fields (the distance alias is a valid name); NULL = all. */
	const char *const *return_fields;
	size_t n_return;
	bool profile;           /**< fill vela_result_t.profile (FT.PROFILE) */
	vela_plan_t force_plan; /**< VELA_PLAN_AUTO: the planner (or HYBRID_POLICY) decides */
} vela_search_req_t;

/**
 * How one search ran (FT.PROFILE). Times in nanoseconds: parse (query text
 * to AST), filter (postings to the docid bitmap), search (the KNN) and load
 * (result rows read from storage). Lives in the result's allocation.
 */
typedef struct vela_profile {
	/** As vela_result_t.plan; NULL without KNN. */
	const char *plan;
	/** Redis's "Vector search mode": STANDARD_KNN, HYBRID_ADHOC_BF,
	 * HYBRID_BATCHES, HYBRID_BATCHES_TO_ADHOC_BF, or vela's
	 * HYBRID_GRAPH_POSTFILTER ("graph" with a filter) and
	 * HYBRID_FILTERED_GRAPH ("filtered-graph"); NULL without KNN. Static. */
	const char *mode;
	/** The plan was forced (HYBRID_POLICY or force_plan), not chosen. */
	bool forced;
	/** Vectors in the KNN field (without KNN: documents in the index). */
	uint64_t index_size;
	/** Documents the filter matches that the search can return (with KNN:
	 * those with a vector): exact, counted on the filter's bitmap before
	 * planning; the planner's estimate. index_size when there is no filter. */
	uint64_t filter_matches;
	/** filter_matches / index_size (1 for an empty index). */
	double selectivity;
	/** Candidates scored: distance computations of the search. */
	uint64_t distances;
	/** Graph plans: the search window used (the last one when it grew). */
	uint32_t window;
	/** BATCHES: batches run and the largest batch size. */
	uint32_t batches, largest_batch;
	uint64_t parse_ns, filter_ns, search_ns, load_ns;
} vela_profile_t;

/** One result row. */
typedef struct vela_search_hit {
	const char *key; /**< binary-safe, NUL-terminated for convenience */
	size_t key_len;
	double dist;     /**< distance for KNN queries; NAN otherwise */
	vela_kv_t *fields;
	size_t n_fields;
} vela_search_hit_t;

/** A search result. One allocation tree; free with vela_result_free(). */
typedef struct vela_result {
	uint64_t total;       /**< documents matched (KNN: results, at most K) */
	size_t n_hits;        /**< rows returned after LIMIT */
	vela_search_hit_t *hits;
	/** Name of the distance field (the KNN alias or "__<field>_score"); NULL without KNN. */
	const char *dist_name;
	/** How the KNN was answered (vela_plan_t): "graph", "scan" (exact, all
	 * vectors), "filtered-scan" (exact over the filter's docids),
	 * "filtered-graph", "batches", "batch-gemm" (an exact scan answered by
	 * vela_search_batch's shared GEMM with other queries of the batch);
	 * NULL without KNN. Static. */
	const char *plan;
	/** With req.profile: how the search ran; else NULL. */
	const vela_profile_t *profile;
} vela_result_t;

/**
 * @brief Run one query. Without KNN, documents come in docid order
 * (insertion order until deleted docids are reused); with KNN, in ascending distance, ties by docid, and the distance is
 * also returned as a field named dist_name (formatted "%.12g").
 * @return 0, VELA_ENOTFOUND (unknown index), VELA_ESYNTAX (with the offset),
 *         VELA_ETYPE, VELA_EDIM, VELA_ELIMIT.
 */
int vela_search(vela_db_t *db, const vela_search_req_t *req, vela_result_t **out,
		vela_err_t *err);
/**
 * @brief Run many queries together, planned as a batch (docs/engine.md,
 * "Batches"): a filter recurring in the batch is evaluated once, and exact
 * scans of one vector field are answered together (queries sharing a
 * filter read its rows once and are scored with one matrix product). Each
 * query's answer is vela_search's with the same plan, bit for bit; the plan
 * is the one vela_search would choose, except that a "filtered-graph" whose
 * filter enough queries of the batch share may be answered by the exact
 * scan instead (its plan then reads "batch-gemm"). All queries read one
 * snapshot. Thread-safe as vela_search.
 * @param[out] outs n results (NULL where that query failed; see errs[i],
 *             which may be NULL).
 * @return 0 when every query succeeded, else the first failure's code.
 */
int vela_search_batch(vela_db_t *db, const vela_search_req_t *reqs, size_t n,
		      vela_result_t **outs, vela_err_t *errs);
void vela_result_free(vela_result_t *res);

/**
 * @brief FT.EXPLAIN: the parsed query as an indented tree and, for a KNN
 * query, the plan the planner picks (the filter is evaluated to count its
 * matches; the search does not run), e.g.
 * "PLAN filtered-scan HYBRID_ADHOC_BF matches 12 of 50000 (selectivity 0.00024)".
 * *out is malloc'd (free it). Errors as vela_search's parse errors.
 */
int vela_explain(vela_db_t *db, const char *index, const char *query, size_t query_len,
		 const vela_kv_t *params, size_t n_params, char **out, vela_err_t *err);

/* ================================================================ GPU */

/*
 * Batch kNN over FLAT fields (and, as they arrive, projections and k-means)
 * runs on one process-wide backend: the CPU (OpenBLAS + SIMD) or, when this
 * build has CUDA and a device is present, the GPU (DESIGN.md §6). Answers
 * are the same on both. The mode is process-wide, not per database; a GPU
 * failure mid-call is answered on the CPU and counted in `fallbacks`.
 */

/**
 * @brief Choose the backend: VELA_GPU_NO (CPU), VELA_GPU_YES (GPU),
 * VELA_GPU_AUTO (GPU when a CUDA device is present; the default).
 * Thread-safe; takes effect for calls that start afterwards.
 * @return 0; VELA_EINVAL (unknown mode); VELA_EUNSUPPORTED for VELA_GPU_YES
 * with no CUDA device or no CUDA in this build ("no CUDA device" in err;
 * the mode is then unchanged); VELA_EIO when the device cannot be opened.
 */
int vela_gpu_mode_set(vela_gpu_mode_t mode, vela_err_t *err);
/** The mode last set (VELA_GPU_MODE_DEFAULT until then). */
vela_gpu_mode_t vela_gpu_mode_get(void);
/** Parse "no" / "yes" / "auto", case-insensitively. @return 0 or VELA_EINVAL */
int vela_gpu_mode_parse(const char *s, vela_gpu_mode_t *out);
/** "no", "yes" or "auto" (static storage; "?" out of range). */
const char *vela_gpu_mode_name(vela_gpu_mode_t mode);
/** Fill `out` with the backend in use, the device and counters. */
void vela_gpu_info(vela_gpu_info_t *out);

/* ================================================================ partitions
 * Workload-aware partitions (HQI; docs/partitions.md). Every KNN search
 * records the shape of its filter (the AND of its TAG and numeric atoms)
 * in the vector field's workload log. vela_layout_build learns a layout
 * from that log: a qd-tree whose cuts are the logged atoms, k-means
 * clusters inside each leaf. vela_search_batch then answers a KNN whose
 * filter matches more than VELA_LAYOUT_SCAN_MAX documents (or any KNN
 * with force_plan = VELA_PLAN_PARTITIONS) with the "partitions" plan:
 * approximate, its recall set by `recall` (the layout measures at its build
 * how many rows a query must scan for it; docs/partitions.md §4) or by a
 * fixed probe_factor. Writes keep a layout usable:
 * a written vector leaves its cluster for the layout's "delta", which every
 * partitions query scans exactly, a deleted one leaves both; in databases
 * opened with VELA_OPEN_BACKGROUND_BUILD a background job folds the delta
 * back into the clusters once it passes a tenth of the rows (each document
 * routed by the tree's cuts and to its leaf's nearest centroid) and
 * rebuilds the layout when a cluster doubled or the workload drifted.
 * The layout is saved beside the database at close
 * (part-<index id>-<field>.snap, with the workload log) and loaded at the
 * field's first use if no write happened since (docs/partitions.md §5).
 */

/** The batch-only plan over a layout (vela_result_t.plan "partitions";
 * vela_search answers it with the planner's choice). */
#define VELA_PLAN_PARTITIONS ((vela_plan_t)5)
/** Filters matching at most this many documents keep the exact plans. */
#define VELA_LAYOUT_SCAN_MAX 2000u

/** Options of vela_layout_build; zero fields take the defaults. */
typedef struct vela_layout_opts {
	uint64_t leaf_min;     /**< smallest qd-tree leaf (index.h QDTREE_LEAF_MIN_*) */
	uint32_t cluster_rows; /**< rows per k-means cluster (PART_CLUSTER_ROWS_*) */
	uint32_t max_cuts;     /**< most frequent atoms tried as cuts (default 256) */
	/** A fixed probing rule: matches a query scans per k before it stops
	 * probing clusters (PART_PROBE_FACTOR_*); 0 = the calibrated rule
	 * (`recall`); negative = every cluster with a match (exact). */
	float probe_factor;
	uint32_t probe_min;    /**< clusters with a match probed at least */
	/** The calibrated rule's target mean recall@k (PART_RECALL_*, 0 =
	 * default 0.95, negative = exact). */
	float recall;
	/** How clusters store their rows (vela_layout_encoding_t). */
	uint32_t encoding;
} vela_layout_opts_t;

/** Cluster row encodings of a layout (docs/partitions.md §2). */
typedef enum vela_layout_encoding {
	/** FIELD for FLOAT32/FLOAT16 fields, LVQ8 for compressed ones */
	VELA_LAYOUT_ENCODING_DEFAULT = 0,
	/** the field's element type (compressed fields: their decoded vectors
	 * as FLOAT32); probed exhaustively, answers as the exact plan */
	VELA_LAYOUT_ENCODING_FIELD = 1,
	/** LVQ-8 codes (dim + 8 bytes a row), scored as the decoded vectors */
	VELA_LAYOUT_ENCODING_LVQ8 = 2
} vela_layout_encoding_t;

/**
 * @brief Build (or rebuild) the layout of a vector field from its workload
 * log. Searches run meanwhile; writes wait for the build.
 * @return 0; VELA_ENOTFOUND (index or field); VELA_ETYPE (not a vector
 * field); VELA_EINVAL (an option out of range); VELA_ENOMEM
 */
int vela_layout_build(vela_db_t *db, const char *index, const char *field,
		      const vela_layout_opts_t *opts, vela_err_t *err);
/** Change the probing of a built layout, as vela_layout_opts_t's
 * probe_factor, probe_min (>= 1) and recall. */
int vela_layout_tune(vela_db_t *db, const char *index, const char *field, float probe_factor,
		     uint32_t probe_min, float recall, vela_err_t *err);

typedef struct vela_layout_info {
	bool built, stale;
	uint32_t leaves, clusters;
	uint64_t rows, min_rows, median_rows, max_rows;
	size_t bytes;
	uint64_t build_ns;
	uint64_t workload_shapes, workload_queries; /**< in the log now */
	uint64_t workload_hash; /**< of the log the layout was built from */
	uint64_t delta;         /**< docids written since the build, scanned exactly */
	uint64_t built_at_ms;   /**< wall clock (Unix ms) of the build */
	bool loaded;            /**< loaded from its file rather than built here */
	bool rebuild_pending;   /**< a background rebuild is queued or running */
	uint64_t rebuilds;      /**< background rebuilds installed in this process */
	uint64_t folds;         /**< background folds of the delta into the clusters */
	double drift;           /**< last workload drift measured (TVD), -1: none yet */
	float probe_factor;     /**< the probing in use (-1: exact, 0: calibrated) */
	uint32_t probe_min;
	float recall;           /**< the calibrated rule's target (-1: exact) */
	uint32_t encoding;      /**< VELA_LAYOUT_ENCODING_FIELD or _LVQ8 */
} vela_layout_info_t;

/** The field's layout and workload log (built false: no layout).
 * @return 0; VELA_ENOTFOUND (index or field); VELA_ETYPE (not a vector field) */
int vela_layout_info(vela_db_t *db, const char *index, const char *field,
		     vela_layout_info_t *out, vela_err_t *err);
/** Drop the field's layout and its file (the workload log stays).
 * @return 0; VELA_ENOTFOUND (index, field or no layout); VELA_ETYPE */
int vela_layout_drop(vela_db_t *db, const char *index, const char *field, vela_err_t *err);
/**
 * @brief A bench tool (docs/gpu.md, "Partition scans: record and replay"):
 * plan the batch reqs[0..n) as vela_search_batch does and write the first
 * layout's group of partitions-plan queries to `path` in
 * index/index.h part_search_plan_dump's format (the scanned clusters' rows
 * as F32, the scan list, the queries and part_search's answers), running
 * that group's scans; the queries' results are not returned, and a query
 * that fails to parse is left out. *dumped: the group's queries.
 * @return 0; VELA_ENOTFOUND (no query takes the partitions plan);
 *   VELA_EINVAL; VELA_EIO; VELA_ENOMEM
 */
int vela_layout_dump_scan(vela_db_t *db, const vela_search_req_t *reqs, size_t n,
			  const char *path, uint32_t *dumped, vela_err_t *err);

/**
 * @brief Record a query in its KNN field's workload log without running it
 * (`vela train-layout`). @return 0 or the parse error; VELA_EINVAL when the
 * query has no KNN
 */
int vela_workload_record(vela_db_t *db, const char *index, const char *query, size_t query_len,
			 const vela_kv_t *params, size_t n_params, vela_err_t *err);
/** Write the field's log to <db dir>/wlog-<index id>-<field no>.bin (magic,
 * version, XXH3 checksum); a later process loads it on first use. */
int vela_workload_save(vela_db_t *db, const char *index, const char *field, vela_err_t *err);
/** Free every workload log and layout of `db` (vela_db_close does it, after
 * saving them). */
void vela_layout_release(vela_db_t *db);

#ifdef __cplusplus
}
#endif
#endif
