/**
 * @file errors.h
 * @brief vela error codes and the error-detail buffer.
 *
 * Every vela function that can fail returns an `int`: 0 on success or a
 * negative `VELA_E...` code. vela's codes live in a reserved range
 * (VELA_ERR_BASE .. VELA_ERR_LAST) below LMDB's (-30799..-30780), so they never
 * collide with errno values or with LMDB's own codes. vela_strerror() is a
 * superset of strerror(3): non-negative values are passed to the system.
 *
 * User-facing detail (a parse error's position, the bad value) goes into a
 * caller-owned vela_err_t; functions that take one fill it on failure and
 * leave it untouched on success. Passing NULL is always allowed.
 */
#ifndef VELA_ERRORS_H
#define VELA_ERRORS_H

#ifdef __cplusplus
extern "C" {
#endif

/** First code of vela's reserved range; codes count downwards from here. */
#define VELA_ERR_BASE (-31000)

enum vela_errcode {
	VELA_OK = 0,
	VELA_EINVAL = VELA_ERR_BASE,      /**< invalid argument */
	VELA_ENOMEM = VELA_ERR_BASE - 1,  /**< out of memory */
	VELA_EIO = VELA_ERR_BASE - 2,     /**< I/O or storage failure */
	VELA_ENOTFOUND = VELA_ERR_BASE - 3, /**< no such index, key or field */
	VELA_EEXISTS = VELA_ERR_BASE - 4, /**< already exists */
	VELA_ESYNTAX = VELA_ERR_BASE - 5, /**< query or schema syntax error */
	VELA_EDIM = VELA_ERR_BASE - 6,    /**< vector dimension mismatch or out of range */
	VELA_ETYPE = VELA_ERR_BASE - 7,   /**< wrong field or value type */
	VELA_EMAPFULL = VELA_ERR_BASE - 8, /**< storage map is full (grow it) */
	VELA_EVERSION = VELA_ERR_BASE - 9, /**< on-disk format newer than this build */
	VELA_ECORRUPT = VELA_ERR_BASE - 10, /**< on-disk data failed a check */
	VELA_ELIMIT = VELA_ERR_BASE - 11, /**< a configured limit was exceeded */
	VELA_EBUSY = VELA_ERR_BASE - 12,  /**< resource busy (e.g. locked by another process) */
	VELA_EUNSUPPORTED = VELA_ERR_BASE - 13, /**< feature not supported */
	VELA_ENOSPC = VELA_ERR_BASE - 14, /**< the disk is full (ENOSPC, EDQUOT) */
	VELA_ETXNFULL = VELA_ERR_BASE - 15, /**< one write transaction dirtied too many pages */
	VELA_ERR_LAST = VELA_ETXNFULL
};

/** Capacity of the message in a vela_err_t, including the NUL. */
#define VELA_ERR_MSG_MAX 256

/** Caller-owned error detail. `code` mirrors the returned code. */
typedef struct vela_err {
	int code;
	char msg[VELA_ERR_MSG_MAX];
} vela_err_t;

/**
 * @brief Static description of an error code; never NULL, never freed.
 * Non-negative values are system errno values (strerror(3)); LMDB codes
 * are described by LMDB.
 */
const char *vela_strerror(int code);

/**
 * @brief Fill `err` (if not NULL) with `code` and a printf-style message.
 * @return `code`, so callers can write `return vela_err_set(err, ...)`.
 */
int vela_err_set(vela_err_t *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/** @brief Reset `err` to VELA_OK with an empty message (NULL is a no-op). */
void vela_err_clear(vela_err_t *err);

#ifdef __cplusplus
}
#endif
#endif
