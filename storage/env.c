/* LMDB environment, transactions and format stamp (storage.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lmdb.h>

#include "storage.h"
#include "storage_internal.h"

static const char *const table_names[ST_NTABLES] = {
	[ST_META] = "meta",       [ST_CATALOG] = "catalog", [ST_DOCS] = "docs",
	[ST_IDMAP] = "idmap",     [ST_KEYS] = "keys",       [ST_VECTORS] = "vectors",
	[ST_POSTINGS] = "postings", [ST_FREE] = "free",     [ST_LOG] = "log",
	[ST_STRINGS] = "strings", [ST_EXPIRES] = "expires", [ST_EXPIRE_IDX] = "expire_idx",
};

int storage_rc(int mdb_rc)
{
	switch (mdb_rc) {
	case MDB_SUCCESS:
		return VELA_OK;
	case MDB_NOTFOUND:
		return VELA_ENOTFOUND;
	case MDB_MAP_FULL:
		return VELA_EMAPFULL;
	case MDB_TXN_FULL: /* LMDB's dirty-page list is full (about 128K pages) */
		return VELA_ETXNFULL;
	case MDB_KEYEXIST:
		return VELA_EEXISTS;
	case MDB_BAD_VALSIZE:
		return VELA_ELIMIT;
	case MDB_INVALID:
	case MDB_CORRUPTED:
	case MDB_PAGE_NOTFOUND:
		return VELA_ECORRUPT;
	case MDB_VERSION_MISMATCH:
		return VELA_EVERSION;
	case ENOMEM:
		return VELA_ENOMEM;
	case EAGAIN:
	case MDB_READERS_FULL:
		return VELA_EBUSY;
	case ENOSPC: /* a page write or fsync of data.mdb found the disk full */
	case EDQUOT:
		return VELA_ENOSPC;
	default:
		return VELA_EIO;
	}
}

static unsigned table_flags(storage_table_t t)
{
	return t == ST_POSTINGS ? (MDB_DUPSORT | MDB_DUPFIXED) : 0;
}

static int env_open_tables(storage_env_t *env, int rdonly, vela_err_t *err)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(env->mdb, NULL, rdonly ? MDB_RDONLY : 0, &txn);
	if (rc)
		return vela_err_set(err, storage_rc(rc), "cannot begin transaction: %s",
				    mdb_strerror(rc));
	for (int t = 0; t < ST_NTABLES; t++) {
		rc = mdb_dbi_open(txn, table_names[t], table_flags(t) | (rdonly ? 0 : MDB_CREATE),
				  &env->dbi[t]);
		if (rc) {
			mdb_txn_abort(txn);
			return vela_err_set(err, storage_rc(rc), "cannot open table '%s': %s",
					    table_names[t], mdb_strerror(rc));
		}
	}
	rc = mdb_txn_commit(txn);
	if (rc)
		return vela_err_set(err, storage_rc(rc), "cannot open tables: %s", mdb_strerror(rc));
	return VELA_OK;
}

/* Stamp a new database or check an existing one's magic and version. */
static int env_check_format(storage_env_t *env, vela_err_t *err)
{
	storage_txn_t *txn;
	int rc = storage_txn_begin(env, NULL, !env->rdonly, &txn);
	if (rc)
		return vela_err_set(err, rc, "cannot begin transaction: %s", vela_strerror(rc));
	uint64_t magic = 0, version = 0;
	if ((rc = storage_meta_get_u64(txn, "magic", &magic)) ||
	    (rc = storage_meta_get_u64(txn, "version", &version)))
		goto fail;
	if (magic == 0 && version == 0 && !env->rdonly) {
		if ((rc = storage_meta_put_u64(txn, "magic", STORAGE_MAGIC)) ||
		    (rc = storage_meta_put_u64(txn, "version", STORAGE_FORMAT_VERSION)))
			goto fail;
	} else if (magic != STORAGE_MAGIC) {
		storage_txn_abort(txn);
		return vela_err_set(err, VELA_ECORRUPT,
				    "not a vela database (bad magic 0x%llx)",
				    (unsigned long long)magic);
	} else if (version > STORAGE_FORMAT_VERSION) {
		storage_txn_abort(txn);
		return vela_err_set(err, VELA_EVERSION,
				    "database format version %llu is newer than this build "
				    "supports (%u): upgrade vela",
				    (unsigned long long)version, STORAGE_FORMAT_VERSION);
	}
	rc = env->rdonly ? (storage_txn_abort(txn), 0) : storage_txn_commit(txn);
	return rc ? vela_err_set(err, rc, "cannot stamp database: %s", vela_strerror(rc)) : 0;
fail:
	storage_txn_abort(txn);
	return vela_err_set(err, rc, "cannot read database stamp: %s", vela_strerror(rc));
}

static int env_create(const char *dir, size_t map_size, unsigned flags, storage_env_t *env,
		      vela_err_t *err)
{
	int rc = mdb_env_create(&env->mdb);
	if (rc)
		return vela_err_set(err, storage_rc(rc), "mdb_env_create: %s", mdb_strerror(rc));
	mdb_env_set_maxdbs(env->mdb, ST_NTABLES + 2);
	mdb_env_set_maxreaders(env->mdb, 1024);
	/* Size 0 before open keeps the size stored in an existing file (a
	 * non-zero size would override it, shrinking a grown map); the requested
	 * size is applied after open, only to grow. */
	rc = mdb_env_set_mapsize(env->mdb, 0);
	if (rc)
		return vela_err_set(err, storage_rc(rc), "cannot set map size: %s", mdb_strerror(rc));
	if (!(flags & STORAGE_RDONLY) && mkdir(dir, 0755) != 0 && errno != EEXIST)
		return vela_err_set(err, VELA_EIO, "cannot create directory '%s': %s", dir,
				    strerror(errno));
	/* MDB_NOTLS: read txns are not tied to threads (worker pools). Never
	 * MDB_WRITEMAP, so MDB_NOSYNC cannot corrupt (DESIGN §3). */
	unsigned mflags = MDB_NOTLS | MDB_NORDAHEAD;
	if (flags & STORAGE_NOSYNC)
		mflags |= MDB_NOSYNC;
	if (flags & STORAGE_RDONLY)
		mflags |= MDB_RDONLY;
	rc = mdb_env_open(env->mdb, dir, mflags, 0644);
	if (rc)
		return vela_err_set(err, storage_rc(rc), "cannot open database '%s': %s", dir,
				    mdb_strerror(rc));
	if ((rc = storage_check_size(env->mdb, dir, env->rdonly, err)) != 0)
		return rc;
	MDB_envinfo info;
	mdb_env_info(env->mdb, &info);
	if (info.me_mapsize < map_size && (rc = mdb_env_set_mapsize(env->mdb, map_size)))
		return vela_err_set(err, storage_rc(rc), "cannot set map size: %s", mdb_strerror(rc));
	return VELA_OK;
}

int storage_open(const char *dir, size_t map_size, unsigned flags, storage_env_t **out,
		 vela_err_t *err)
{
	if (map_size == 0)
		map_size = STORAGE_MAP_SIZE_DEFAULT;
	if (map_size < STORAGE_MAP_SIZE_MIN || map_size > STORAGE_MAP_SIZE_MAX)
		return vela_err_set(err, VELA_EINVAL, "map size %zu outside %llu..%llu", map_size,
				    STORAGE_MAP_SIZE_MIN, STORAGE_MAP_SIZE_MAX);
	storage_env_t *env = calloc(1, sizeof(*env));
	if (env == NULL)
		return vela_err_set(err, VELA_ENOMEM, "out of memory");
	env->rdonly = !!(flags & STORAGE_RDONLY);
	int rc = env_create(dir, map_size, flags, env, err);
	if (rc == 0)
		rc = env_open_tables(env, env->rdonly, err);
	if (rc == 0)
		rc = env_check_format(env, err);
	if (rc) {
		storage_close(env);
		return rc;
	}
	*out = env;
	return VELA_OK;
}

void storage_close(storage_env_t *env)
{
	if (env == NULL)
		return;
	if (env->mdb)
		mdb_env_close(env->mdb);
	free(env);
}

size_t storage_map_size(const storage_env_t *env)
{
	MDB_envinfo info;
	mdb_env_info(env->mdb, &info);
	return info.me_mapsize;
}

size_t storage_used_bytes(storage_env_t *env)
{
	MDB_envinfo info;
	MDB_stat st;
	mdb_env_info(env->mdb, &info);
	mdb_env_stat(env->mdb, &st);
	return (info.me_last_pgno + 1) * (size_t)st.ms_psize;
}

/* mdb_reader_list is LMDB's only public view of its reader table: a header,
 * then "pid thread txnid" per slot ("-" for a slot between transactions). */
static int reader_oldest(const char *line, void *ctx)
{
	uint64_t *oldest = ctx;
	int pid;
	size_t tid;
	unsigned long long txnid;
	if (sscanf(line, "%d %zx %llu", &pid, &tid, &txnid) == 3 && txnid < *oldest)
		*oldest = txnid;
	return 0;
}

uint64_t storage_free_bytes(storage_env_t *env, uint64_t enough, uint64_t *pending)
{
	uint64_t dummy;
	pending = pending ? pending : &dummy;
	*pending = 0;
	MDB_envinfo info;
	MDB_stat st;
	mdb_env_info(env->mdb, &info);
	mdb_env_stat(env->mdb, &st);
	uint64_t psize = st.ms_psize, pages = info.me_mapsize / psize;
	uint64_t free = pages > info.me_last_pgno + 1 ? (pages - info.me_last_pgno - 1) * psize : 0;
	if (free >= enough)
		return free;
	/* LMDB reuses a free-list record only when its transaction is older
	 * than the oldest reader and than the last commit (mdb_page_alloc). */
	uint64_t limit = info.me_last_txnid;
	mdb_reader_list(env->mdb, reader_oldest, &limit);
	MDB_txn *txn;
	MDB_cursor *cur;
	if (mdb_txn_begin(env->mdb, NULL, MDB_RDONLY, &txn))
		return free;
	MDB_val k, v;
	int rc = mdb_cursor_open(txn, 0 /* LMDB's FREE_DBI: txnid -> freed page list */, &cur);
	for (int op = MDB_FIRST; rc == 0 && free < enough; op = MDB_NEXT) {
		size_t id, n;
		if (mdb_cursor_get(cur, &k, &v, op) || k.mv_size != sizeof(id) || v.mv_size < sizeof(n))
			break;
		memcpy(&id, k.mv_data, sizeof(id));
		if (id >= limit)
			break; /* keys ascend: the rest is newer still */
		memcpy(&n, v.mv_data, sizeof(n)); /* an MDB_IDL: its count, then the pages */
		free += n * psize;
	}
	/* The last commit's record, unless a reader older than it pins it. */
	size_t id, n;
	if (rc == 0 && limit == info.me_last_txnid && mdb_cursor_get(cur, &k, &v, MDB_LAST) == 0 &&
	    k.mv_size == sizeof(id) && v.mv_size >= sizeof(n)) {
		memcpy(&id, k.mv_data, sizeof(id));
		memcpy(&n, v.mv_data, sizeof(n));
		*pending = id >= limit ? n * psize : 0;
	}
	if (rc == 0)
		mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	return free;
}

int storage_set_map_size(storage_env_t *env, size_t bytes, vela_err_t *err)
{
	if (bytes < STORAGE_MAP_SIZE_MIN || bytes > STORAGE_MAP_SIZE_MAX)
		return vela_err_set(err, VELA_EINVAL, "map size %zu outside %llu..%llu", bytes,
				    STORAGE_MAP_SIZE_MIN, STORAGE_MAP_SIZE_MAX);
	if (bytes < storage_used_bytes(env))
		return vela_err_set(err, VELA_EINVAL, "map size %zu is below the %zu bytes in use",
				    bytes, storage_used_bytes(env));
	int rc = mdb_env_set_mapsize(env->mdb, bytes);
	return rc ? vela_err_set(err, storage_rc(rc), "cannot resize map: %s", mdb_strerror(rc))
		  : 0;
}

int storage_sync(storage_env_t *env)
{
	return storage_rc(mdb_env_sync(env->mdb, 1));
}

int storage_txn_begin(storage_env_t *env, storage_txn_t *parent, int write, storage_txn_t **out)
{
	storage_txn_t *t = malloc(sizeof(*t));
	if (t == NULL)
		return VELA_ENOMEM;
	t->env = env;
	int rc = mdb_txn_begin(env->mdb, parent ? parent->txn : NULL, write ? 0 : MDB_RDONLY,
			       &t->txn);
	if (rc) {
		free(t);
		return storage_rc(rc);
	}
	*out = t;
	return VELA_OK;
}

int storage_txn_commit(storage_txn_t *txn)
{
	int rc = mdb_txn_commit(txn->txn);
	if (rc == 0)
		storage_extend_file(txn->env);
	free(txn);
	return storage_rc(rc);
}

void storage_txn_abort(storage_txn_t *txn)
{
	if (txn == NULL)
		return;
	mdb_txn_abort(txn->txn);
	free(txn);
}
