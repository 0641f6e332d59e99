/* Private to storage/: the structs behind the opaque handles. */
#ifndef VELA_STORAGE_INTERNAL_H
#define VELA_STORAGE_INTERNAL_H

#include <lmdb.h>

#include "storage.h"

struct storage_env {
	MDB_env *mdb;
	MDB_dbi dbi[ST_NTABLES];
	int rdonly;
};

struct storage_txn {
	MDB_txn *txn;
	storage_env_t *env;
};

/** Map an LMDB return code to a VELA_E code. */
int storage_rc(int mdb_rc);

#endif
