/**
 * @file storage.h
 * @brief The LMDB layer: one environment per database directory, the named
 * tables of DESIGN.md §3, key encodings, packed documents.
 *
 * LMDB is the source of truth; everything else is derived. This module knows
 * nothing about indexes or queries: it stores bytes under well-defined keys.
 *
 * Threads: the environment is opened with MDB_NOTLS, so a read transaction
 * may be used by any thread (one at a time) and many read transactions may
 * run at once. One write transaction at a time (LMDB serialises writers).
 * Nested write transactions (storage_txn_begin with a parent) let a caller
 * group many writes in one commit while each write can still fail alone.
 *
 * Lifetimes: byte pointers returned by storage_get and passed to scan
 * callbacks point into the memory map; they stay valid until the transaction
 * ends or the next write in it. Copy what you keep.
 */
#ifndef VELA_STORAGE_H
#define VELA_STORAGE_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

/** Map size of the LMDB environment (bytes). Grows with storage_set_map_size. */
#define STORAGE_MAP_SIZE_DEFAULT (1ull << 30)
#define STORAGE_MAP_SIZE_MIN (1ull << 20)
#define STORAGE_MAP_SIZE_MAX (1ull << 46)

/** On-disk format stamp, stored in the meta table and checked on open. */
#define STORAGE_MAGIC 0x56454c41u /* "VELA" */
#define STORAGE_FORMAT_VERSION 1u

/**
 * LMDB's compiled-in key limit is 511 bytes; table keys add up to 7 bytes of
 * prefix, so a document key may be at most this long.
 */
#define STORAGE_DOC_KEY_MAX 480u
/** Longest TAG value or TEXT term that can be a postings key. */
#define STORAGE_TERM_MAX 480u

/** Open flags. */
enum storage_flag {
	STORAGE_NOSYNC = 1u << 0, /**< relaxed durability (appendfsync everysec); call storage_sync */
	STORAGE_RDONLY = 1u << 1,
};

/** The named tables (LMDB named databases). */
typedef enum storage_table {
	ST_META = 0,  /**< "magic", "version", counters */
	ST_CATALOG,   /**< index name -> packed definition */
	ST_DOCS,      /**< document key -> packed fields */
	ST_IDMAP,     /**< be32 index id | doc key -> be32 docid */
	ST_KEYS,      /**< be32 index id | be32 docid -> doc key */
	ST_VECTORS,   /**< be32 index id | be16 field | be32 docid -> raw LE vector */
	ST_POSTINGS,  /**< be32 index id | be16 field | kind | value -> be32 docids (dupsort) */
	ST_FREE,      /**< be32 index id | be32 docid -> "" : docids to reuse */
	ST_LOG,       /**< be64 sequence -> change record */
	ST_STRINGS,   /**< string key -> value (Redis SET/GET) */
	ST_EXPIRES,   /**< key -> be64 unix time in ms when it expires */
	ST_EXPIRE_IDX, /**< be64 ms | key -> "" : keys by expiry time */
	ST_NTABLES
} storage_table_t;

/** Kinds of postings keys. */
enum storage_posting_kind {
	SP_TAG = 't',
	SP_NUM = 'n',
	SP_TEXT = 'x',
};

typedef struct storage_env storage_env_t;
typedef struct storage_txn storage_txn_t;

/**
 * @brief Open (creating if needed) the database in directory `dir`.
 * A new database is stamped with STORAGE_MAGIC / STORAGE_FORMAT_VERSION; an
 * existing one is checked: another magic is VELA_ECORRUPT, a newer version
 * VELA_EVERSION, both with a message in `err`.
 * @param map_size 0 for STORAGE_MAP_SIZE_DEFAULT; else MIN..MAX. The map
 *        only grows here: an existing larger map keeps its size.
 * @param[out] out the environment; free with storage_close().
 */
int storage_open(const char *dir, size_t map_size, unsigned flags, storage_env_t **out,
		 vela_err_t *err);
/** Close the environment; all transactions must have ended. NULL is a no-op. */
void storage_close(storage_env_t *env);
/** Current map size in bytes. */
size_t storage_map_size(const storage_env_t *env);
/** Bytes in use (last page * page size). */
size_t storage_used_bytes(storage_env_t *env);
/**
 * @brief Bytes the next write transaction can take before MDB_MAP_FULL: the
 * map past the last page, plus the pages earlier commits freed that LMDB may
 * reuse (freed by a transaction older than the last commit and than every
 * reader). Counting freed pages walks LMDB's free list, so the walk stops
 * once `enough` bytes are found: below `enough` the result is exact, else it
 * is some value >= `enough`. May run while this thread holds a write
 * transaction (MDB_NOTLS); it reads the last committed state.
 * @param[out] pending (may be NULL) bytes the last commit freed, reusable
 *        once one more write transaction has committed (0 while an older
 *        reader pins them anyway, or when the map past the last page held
 *        `enough`)
 */
uint64_t storage_free_bytes(storage_env_t *env, uint64_t enough, uint64_t *pending);
/**
 * @brief Grow (or shrink, if the data fits) the map. The caller guarantees no
 * transaction of this process is active (the db layer holds its lock).
 */
int storage_set_map_size(storage_env_t *env, size_t bytes, vela_err_t *err);
/** Flush to disk (needed only with STORAGE_NOSYNC). */
int storage_sync(storage_env_t *env);
/**
 * @brief Write a compacted, consistent copy of the environment as
 * `dest_dir`/data.mdb (LMDB hot copy, MDB_CP_COMPACT) and fsync it.
 * `dest_dir` must exist and must not hold a data.mdb. Safe while other
 * threads or processes write: the copy is the state of the last commit when
 * it began. Holds one read transaction for its whole run, so the caller must
 * keep the map from being resized meanwhile (storage_set_map_size).
 */
int storage_copy(storage_env_t *env, const char *dest_dir, vela_err_t *err);

/**
 * @brief Begin a transaction. `parent` non-NULL begins a nested write
 * transaction inside it (its changes join the parent on commit and vanish on
 * abort). Read transactions: `write` = 0, `parent` = NULL.
 */
int storage_txn_begin(storage_env_t *env, storage_txn_t *parent, int write, storage_txn_t **out);
/** Commit and free the handle. On failure the handle is freed too (aborted). */
int storage_txn_commit(storage_txn_t *txn);
/** Abort and free the handle. NULL is a no-op. */
void storage_txn_abort(storage_txn_t *txn);

/** Get a value; VELA_ENOTFOUND when absent. *val points into the map. */
int storage_get(storage_txn_t *txn, storage_table_t t, const void *key, size_t klen,
		const void **val, size_t *vlen);
/** Put (overwrite). MDB_MAP_FULL becomes VELA_EMAPFULL; the transaction must then be aborted. */
int storage_put(storage_txn_t *txn, storage_table_t t, const void *key, size_t klen,
		const void *val, size_t vlen);
/** Delete a key (all duplicates). Absent is VELA_ENOTFOUND. */
int storage_del(storage_txn_t *txn, storage_table_t t, const void *key, size_t klen);
/** Delete one duplicate of a dupsort key. Absent is VELA_ENOTFOUND. */
int storage_del_dup(storage_txn_t *txn, storage_table_t t, const void *key, size_t klen,
		    const void *val, size_t vlen);

/** Scan callback: return 0 to continue, 1 to stop, negative to fail the scan. */
typedef int (*storage_scan_fn)(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
			       size_t vlen);
/** Visit every entry whose key starts with `prefix`, in key order (each duplicate once). */
int storage_scan_prefix(storage_txn_t *txn, storage_table_t t, const void *prefix, size_t plen,
			storage_scan_fn fn, void *ctx);
/**
 * Visit keys in [lo, hi] (byte order, inclusive) in order. For dupsort tables
 * each key's duplicates are visited too. hi may be NULL (to the end).
 */
int storage_scan_range(storage_txn_t *txn, storage_table_t t, const void *lo, size_t lolen,
		       const void *hi, size_t hilen, storage_scan_fn fn, void *ctx);
/** Delete every entry whose key starts with `prefix`; *n_deleted counts keys. */
int storage_del_prefix(storage_txn_t *txn, storage_table_t t, const void *prefix, size_t plen,
		       uint64_t *n_deleted);
/** Delete every entry with key in [lo, hi] (lo may be empty: from the start). */
int storage_del_range(storage_txn_t *txn, storage_table_t t, const void *lo, size_t lolen,
		      const void *hi, size_t hilen, uint64_t *n_deleted);
/** Empty a table (keeps it open). */
int storage_clear(storage_txn_t *txn, storage_table_t t);
/** Number of entries (keys, duplicates counted) of a table. */
int storage_count(storage_txn_t *txn, storage_table_t t, uint64_t *n);

/* ---------------------------------------------------------- postings */

/** Postings key: be32 index | be16 field | kind | value. Returns its length. */
size_t storage_posting_key(uint8_t *buf, uint32_t index_id, uint16_t field, int kind,
			   const void *value, size_t vlen);
/** Add / remove docid under a postings key. */
int storage_posting_add(storage_txn_t *txn, const uint8_t *key, size_t klen, uint32_t docid);
int storage_posting_remove(storage_txn_t *txn, const uint8_t *key, size_t klen, uint32_t docid);
/** Call fn(ctx, docids, n) with runs of docids stored under one key (DUPFIXED bulk read). */
typedef int (*storage_docids_fn)(void *ctx, const uint32_t *docids_be, size_t n);
int storage_posting_get(storage_txn_t *txn, const uint8_t *key, size_t klen,
			storage_docids_fn fn, void *ctx);
/** Same, for every postings key in [lo, hi] (inclusive). */
int storage_posting_range(storage_txn_t *txn, const uint8_t *lo, size_t lolen, const uint8_t *hi,
			  size_t hilen, storage_docids_fn fn, void *ctx);

/** Order-preserving 8-byte encoding of a double (byte order == numeric order; NaN rejected by callers). */
void storage_num_encode(double v, uint8_t out[8]);
double storage_num_decode(const uint8_t in[8]);

/* ---------------------------------------------------------- documents */

/** One field of a document: binary-safe name and value. */
typedef struct storage_field {
	const uint8_t *name;
	size_t name_len;
	const uint8_t *value;
	size_t value_len;
} storage_field_t;

/** Packed documents carry this version byte first. */
#define STORAGE_DOC_VERSION 1u
/** Most fields in one document. */
#define STORAGE_DOC_FIELDS_MAX 65536u

/**
 * @brief Pack fields into a malloc'd buffer (caller frees).
 * Layout: u8 version | le32 n | n x (le32 name_len, name, le32 value_len, value).
 */
int storage_doc_pack(const storage_field_t *fields, size_t n, uint8_t **out, size_t *out_len);
/**
 * @brief Unpack into a malloc'd array of fields pointing into `buf` (caller
 * frees the array; `buf` must outlive it). VELA_ECORRUPT on any bound error.
 */
int storage_doc_unpack(const uint8_t *buf, size_t len, storage_field_t **fields, size_t *n);

/* ---------------------------------------------------------- change log */

/** Change-log operations. */
enum storage_log_op { SL_UPSERT = 1, SL_DELETE = 2, SL_INDEX_CREATE = 3, SL_INDEX_DROP = 4 };
/** Append a record under the next sequence number; returns it in *seq (may be NULL). */
int storage_log_append(storage_txn_t *txn, int op, uint32_t index_id, uint32_t docid,
		       const void *key, size_t klen, uint64_t *seq);
/** Last sequence number written (0 if none). */
int storage_log_last(storage_txn_t *txn, uint64_t *seq);
/** Drop records with sequence <= upto (they are covered by a rebuild or snapshot). */
int storage_log_trim(storage_txn_t *txn, uint64_t upto);

/* ---------------------------------------------------------- meta counters */

/** Read a u64 counter from META (0 if absent). */
int storage_meta_get_u64(storage_txn_t *txn, const char *name, uint64_t *v);
int storage_meta_put_u64(storage_txn_t *txn, const char *name, uint64_t v);

#endif
