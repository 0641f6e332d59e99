/* Private to storage/: the structs behind the opaque handles. */
#ifndef VELA_STORAGE_INTERNAL_H
#define VELA_STORAGE_INTERNAL_H

#include <lmdb.h>

#include "storage.h"

struct storage_env {
	MDB_env *mdb;
	MDB_dbi dbi[ST_NTABLES];
	int rdonly;
	size_t file_pages; /**< data.mdb is known to be at least this many pages long */
};

struct storage_txn {
	MDB_txn *txn;
	storage_env_t *env;
};

/** Map an LMDB return code to a VELA_E code. */
int storage_rc(int mdb_rc);

/* verify.c */
/**
 * After mdb_env_open, before any page is read: refuse (VELA_ECORRUPT, with
 * "truncated" in err) a data.mdb whose B-trees reference pages past its
 * end, instead of faulting on them later. A file merely shorter than its
 * last page number (unwritten freed pages) is walked and, unless rdonly,
 * extended.
 */
int storage_check_size(MDB_env *mdb, const char *dir, int rdonly, vela_err_t *err);
/** After a commit: extend data.mdb to the last page number (sparse), so a
 *  later storage_check_size finds it whole without a walk. */
void storage_extend_file(storage_env_t *env);

#endif
