/* Error codes and the error-detail buffer (see include/vela/errors.h). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <lmdb.h>

#include "common.h"

static const char *const vela_errstr[] = {
	[0] = "invalid argument",
	[1] = "out of memory",
	[2] = "I/O or storage error",
	[3] = "not found",
	[4] = "already exists",
	[5] = "syntax error",
	[6] = "vector dimension mismatch or out of range",
	[7] = "wrong type",
	[8] = "storage map is full: grow the map size or delete data",
	[9] = "on-disk format is newer than this build",
	[10] = "on-disk data is corrupt",
	[11] = "limit exceeded",
	[12] = "resource busy",
	[13] = "not supported",
	[14] = "No space left on device", /* strerror(ENOSPC)'s words: what users search for */
	[15] = "transaction too large: commit in smaller batches",
};
_Static_assert(sizeof(vela_errstr) / sizeof(vela_errstr[0]) == VELA_ERR_BASE - VELA_ERR_LAST + 1,
	       "one string per vela error code");

const char *vela_strerror(int code)
{
	if (code == 0)
		return "success";
	if (code > 0)
		return strerror(code);
	if (code <= VELA_ERR_BASE && code >= VELA_ERR_LAST)
		return vela_errstr[VELA_ERR_BASE - code];
	if (code >= MDB_KEYEXIST - 100 && code <= MDB_KEYEXIST)
		return mdb_strerror(code);
	return "unknown error";
}

int vela_err_set(vela_err_t *err, int code, const char *fmt, ...)
{
	if (err == NULL)
		return code;
	err->code = code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return code;
}

void vela_err_clear(vela_err_t *err)
{
	if (err == NULL)
		return;
	err->code = VELA_OK;
	err->msg[0] = '\0';
}
