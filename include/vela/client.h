/**
 * @file client.h
 * @brief libvela-client: talk to a vela server (velad) — or any server that
 * speaks the Redis protocol (RESP2) — over TCP or a Unix socket, and read
 * the vector files the tools use (.fvecs, .ivecs, .npy).
 *
 * @section transport Transport
 * hiredis 0.14 does the wire work; vela_client_t wraps one blocking
 * redisContext. Raw replies are hiredis `redisReply` objects (this header
 * includes <hiredis/hiredis.h>): read them with hiredis's field names
 * (type, integer, str, len, element, elements).
 *
 * @section ownership Ownership
 * - Every reply handed out (`*reply`) is owned by the caller: free it with
 *   vela_client_reply_free(). Error replies are never handed out: they
 *   become a negative VELA_E code, and the server's message is copied into
 *   the caller's vela_err_t.
 * - A vela_client_result_t is one owned tree; free it with
 *   vela_client_result_free(). Its strings do not point into any reply.
 * - Arguments (argv, schemas, documents, queries) are only read during the
 *   call; the caller keeps them.
 *
 * @section threads Threads
 * A vela_client_t is not thread-safe: use one client per thread (or a lock
 * around every call, pipelines included). Different clients are independent.
 *
 * @section errors Errors
 * Functions return 0 or a negative VELA_E code (errors.h) and fill the
 * optional vela_err_t. Server error replies map by their text:
 * "Unknown index"/"no such index" -> VELA_ENOTFOUND, "already exists" ->
 * VELA_EEXISTS, "syntax" -> VELA_ESYNTAX, "WRONGTYPE" -> VELA_ETYPE, "blob
 * size"/"dimension" -> VELA_EDIM, "OOM" -> VELA_EMAPFULL, "transaction too
 * large" -> VELA_ETXNFULL, anything else ->
 * VELA_EINVAL (NOAUTH and WRONGPASS included). A transport failure (refused,
 * timeout, closed, protocol error) is VELA_EIO and leaves the client broken:
 * every later call fails with VELA_EIO; close it and connect again.
 *
 * @section example Example
 * @code
 *   vela_client_t *c; vela_err_t err;
 *   if (vela_client_connect("127.0.0.1", 6379, 2000, &c, &err)) die(err.msg);
 *   float v[4] = {1, 2, 3, 4};
 *   vela_kv_t tag = {"genre", 5, "jazz", 4};
 *   vela_client_doc_t doc = {.key = "doc:1", .fields = &tag, .n_fields = 1,
 *                            .vec_field = "v", .vec = v, .dim = 4};
 *   vela_client_upsert(c, &doc, &err);
 *   vela_client_query_t q = {.index = "idx", .filter = "@genre:{jazz}",
 *                            .field = "v", .vec = v, .dim = 4, .k = 10};
 *   vela_client_result_t *r;
 *   if (vela_client_search(c, &q, &r, &err) == 0) {
 *     for (size_t i = 0; i < r->n_hits; i++) printf("%s %g\n", r->hits[i].key, r->hits[i].dist);
 *     vela_client_result_free(r);
 *   }
 *   vela_client_close(c);
 * @endcode
 */
#ifndef VELA_CLIENT_H
#define VELA_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "vela/errors.h"
#include "vela/vela.h" /* plain types only: vela_kv_t, vela_index_def_t */

#ifdef __cplusplus
extern "C" {
#endif

/* ================================================================ connection */

/** Opaque client: one connection. */
typedef struct vela_client vela_client_t;

/** Connect and per-command timeout in milliseconds (0 = DEFAULT). */
#define VELA_CLIENT_TIMEOUT_MS_DEFAULT 5000
#define VELA_CLIENT_TIMEOUT_MS_MIN 1
#define VELA_CLIENT_TIMEOUT_MS_MAX 3600000

/**
 * @brief Connect to host:port over TCP, or to the Unix socket `host` when it
 * starts with '/' (port ignored). `timeout_ms` bounds the connect and every
 * later read/write (0 = VELA_CLIENT_TIMEOUT_MS_DEFAULT).
 * @return 0, VELA_EINVAL (bad argument), VELA_EIO (cannot connect), VELA_ENOMEM.
 * @param[out] out the client; close with vela_client_close().
 */
int vela_client_connect(const char *host, int port, int timeout_ms, vela_client_t **out,
			vela_err_t *err);
/** Close the connection and free the client. NULL is a no-op. */
void vela_client_close(vela_client_t *c);
/**
 * @brief AUTH [user] pass. `user` NULL means the default user (AUTH pass).
 * @return 0, VELA_EINVAL (wrong password: the server's WRONGPASS text in err).
 */
int vela_client_auth(vela_client_t *c, const char *user, const char *pass, vela_err_t *err);

/* ================================================================ raw commands */

/** Most arguments of one raw command. */
#define VELA_CLIENT_ARGC_MAX 1000000

/**
 * @brief Send one command (binary-safe arguments: argv[i] is argvlen[i]
 * bytes; argvlen NULL = strlen each) and wait for its reply.
 * @param[out] reply the reply, owned by the caller (vela_client_reply_free);
 *             set to NULL on any failure. May be NULL to discard it.
 * @return 0, a mapped code for an error reply (err has the server's text),
 *         VELA_EIO.
 */
int vela_client_command(vela_client_t *c, int argc, const char **argv, const size_t *argvlen,
			redisReply **reply, vela_err_t *err);
/** Free a reply from this library. NULL is a no-op. */
void vela_client_reply_free(redisReply *reply);

/**
 * @brief Pipelining: queue a command without waiting. Nothing is sent until
 * the first vela_client_read(); then all queued commands go out in one
 * write. Read exactly one reply per appended command, in order.
 * @return 0, VELA_EINVAL, VELA_ENOMEM, VELA_EIO (client broken).
 */
int vela_client_append(vela_client_t *c, int argc, const char **argv, const size_t *argvlen,
		       vela_err_t *err);
/**
 * @brief Read the next pipelined reply (same contract as vela_client_command:
 * an error reply is returned as its code and consumes the reply, so the
 * pipeline stays in step). With no command pending: VELA_EINVAL.
 */
int vela_client_read(vela_client_t *c, redisReply **reply, vela_err_t *err);
/** Commands appended and not yet read. */
size_t vela_client_pending(const vela_client_t *c);

/** Map a server error text to a VELA_E code (see @ref errors). */
int vela_client_error_code(const char *msg, size_t len);

/* ================================================================ typed helpers */

/**
 * @brief FT.CREATE from an engine index definition: PREFIX, then SCHEMA with
 * TAG (SEPARATOR, CASESENSITIVE), NUMERIC, TEXT and VECTOR FLAT 6 TYPE
 * FLOAT32|FLOAT16 DIM d DISTANCE_METRIC L2|IP|COSINE fields (AS alias when set).
 * @return 0, VELA_EEXISTS, VELA_EINVAL, VELA_EIO.
 */
int vela_client_index_create(vela_client_t *c, const vela_index_def_t *def, vela_err_t *err);
/** FT.DROPINDEX name [DD]. @return 0, VELA_ENOTFOUND, VELA_EIO. */
int vela_client_index_drop(vela_client_t *c, const char *name, bool delete_docs, vela_err_t *err);

/** One document for vela_client_upsert(): string fields plus one vector. */
typedef struct vela_client_doc {
	const void *key;
	size_t key_len;          /**< 0 = strlen(key) */
	const vela_kv_t *fields; /**< attribute fields, binary-safe */
	size_t n_fields;
	const char *vec_field;   /**< NULL: no vector */
	const float *vec;        /**< dim floats, sent as a little-endian FLOAT32 blob */
	uint32_t dim;
} vela_client_doc_t;

/** HSET key f1 v1 ... vec_field <blob>. @return 0, mapped error, VELA_EIO. */
int vela_client_upsert(vela_client_t *c, const vela_client_doc_t *doc, vela_err_t *err);
/**
 * @brief Pipelined upserts: append all n HSETs, then read n replies.
 * @param errs n error slots (may be NULL): errs[i] is filled for a failed one.
 * @param[out] n_failed documents that failed (may be NULL).
 * @return 0 when all succeeded, else the first failure's code (VELA_EIO
 *         fails every document not yet acknowledged).
 */
int vela_client_upsert_batch(vela_client_t *c, const vela_client_doc_t *docs, size_t n,
			     size_t *n_failed, vela_err_t *errs);

/** Distance alias used when a query sets none. */
#define VELA_CLIENT_DIST_ALIAS_DEFAULT "dist"

/**
 * @brief A filtered KNN query, sent as
 * FT.SEARCH index "<filter>=>[KNN k @field $vec AS alias]" PARAMS 2 vec <blob>
 *   SORTBY alias LIMIT 0 k RETURN n alias fields... DIALECT 2
 */
typedef struct vela_client_query {
	const char *index;
	const char *filter;     /**< dialect-2 filter; NULL = "*" */
	const char *field;      /**< vector field; NULL = "v" */
	const float *vec;
	uint32_t dim;
	uint32_t k;             /**< K and LIMIT (0..VELA_K_MAX) */
	const char *dist_alias; /**< NULL = VELA_CLIENT_DIST_ALIAS_DEFAULT */
	const char *const *return_fields; /**< extra fields to return (may be NULL) */
	size_t n_return;
} vela_client_query_t;

/** A field of a hit: binary-safe and NUL-terminated. */
typedef struct vela_client_field {
	char *name;
	size_t name_len;
	char *value;
	size_t value_len;
} vela_client_field_t;

typedef struct vela_client_hit {
	char *key;          /**< NUL-terminated; key_len bytes */
	size_t key_len;
	double dist;        /**< the alias field parsed; NAN when absent */
	vela_client_field_t *fields; /**< returned fields, alias included */
	size_t n_fields;
} vela_client_hit_t;

/** A parsed FT.SEARCH reply; free with vela_client_result_free(). */
typedef struct vela_client_result {
	uint64_t total;
	size_t n_hits;
	vela_client_hit_t *hits;
} vela_client_result_t;

/** Run one KNN query. @return 0, mapped error, VELA_EIO, VELA_EINVAL. */
int vela_client_search(vela_client_t *c, const vela_client_query_t *q,
		       vela_client_result_t **out, vela_err_t *err);
/**
 * @brief Pipeline n queries, then collect n results.
 * @param[out] outs n results; NULL where that query failed (see errs[i]).
 * @param errs n error slots (may be NULL).
 * @return 0 when all succeeded, else the first failure's code.
 */
int vela_client_search_batch(vela_client_t *c, const vela_client_query_t *qs, size_t n,
			     vela_client_result_t **outs, vela_err_t *errs);
/**
 * @brief Parse a RESP2 FT.SEARCH reply `[total, key, [f, v, ...], key, ...]`
 * (fields may be absent, as with NOCONTENT, or nil). `dist_alias` (may be
 * NULL) names the field parsed into hit.dist. The reply stays the caller's.
 * @return 0, VELA_EINVAL (not that shape), VELA_ENOMEM.
 */
int vela_client_result_parse(const redisReply *reply, const char *dist_alias,
			     vela_client_result_t **out, vela_err_t *err);
void vela_client_result_free(vela_client_result_t *r);

/* ================================================================ vector files */

/** Bounds of the readers: a file is rejected before anything is allocated. */
#define VELA_VECFILE_ROWS_MAX (1ull << 32)
#define VELA_VECFILE_BYTES_MAX (1ull << 40)
/** Longest .npy header (v1.0 stores its length in 16 bits). */
#define VELA_NPY_HEADER_MAX 65535u

/** A row-major matrix read from a file. `data` is malloc'd, owned by it. */
typedef struct vela_vecs {
	void *data;     /**< rows * dim elements: float (.fvecs/.npy) or int32_t (.ivecs) */
	size_t rows;
	uint32_t dim;
} vela_vecs_t;

/**
 * @brief Read a .fvecs file (per row: int32 dim, then dim float32, little
 * endian). Every row must have the same dim (VELA_DIM_MIN..VELA_DIM_MAX) and
 * the file must end on a row boundary.
 * @return 0, VELA_EIO (cannot read), VELA_ECORRUPT (truncated, bad dim,
 *         ragged rows; err says where), VELA_ELIMIT, VELA_ENOMEM.
 */
int vela_fvecs_load(const char *path, vela_vecs_t *out, vela_err_t *err);
/** .ivecs: as .fvecs with int32 elements (ground-truth row numbers). */
int vela_ivecs_load(const char *path, vela_vecs_t *out, vela_err_t *err);
/**
 * @brief Read a NumPy .npy file: format 1.0 (or 2.0), descr '<f4',
 * fortran_order False, a 2-D shape (rows, dim); the data must be exactly
 * rows*dim*4 bytes. Anything else is VELA_EUNSUPPORTED or VELA_ECORRUPT.
 */
int vela_npy_load(const char *path, vela_vecs_t *out, vela_err_t *err);
/** By extension: .fvecs, .npy (float32) or .ivecs (int32). Else VELA_EUNSUPPORTED. */
int vela_vecs_load(const char *path, vela_vecs_t *out, vela_err_t *err);
/** Free out->data and zero it. NULL is a no-op. */
void vela_vecs_free(vela_vecs_t *v);

#ifdef __cplusplus
}
#endif
#endif
