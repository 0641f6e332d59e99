/* Hot copies of the environment (storage.h: storage_copy). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <lmdb.h>

#include "storage.h"
#include "storage_internal.h"

/* fsync a file or a directory by path. */
static int fsync_path(const char *path, int flags)
{
	int fd = open(path, flags | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	int e = errno;
	close(fd);
	errno = e;
	return rc;
}

int storage_copy(storage_env_t *env, const char *dest_dir, vela_err_t *err)
{
	/* MDB_CP_COMPACT walks the B-trees in one read transaction and writes
	 * only live pages, renumbered: a consistent snapshot of the last commit
	 * at its start, free pages dropped. Writers go on meanwhile. */
	int rc = mdb_env_copy2(env->mdb, dest_dir, MDB_CP_COMPACT);
	if (rc == MDB_MAP_RESIZED && env->rdonly) {
		/* Another process (velad) grew the map since we opened it. */
		mdb_env_set_mapsize(env->mdb, 0);
		char p[4096];
		snprintf(p, sizeof(p), "%s/data.mdb", dest_dir);
		unlink(p);
		rc = mdb_env_copy2(env->mdb, dest_dir, MDB_CP_COMPACT);
	}
	if (rc)
		return vela_err_set(err, storage_rc(rc), "cannot copy the database to '%s': %s",
				    dest_dir, mdb_strerror(rc));
	/* LMDB does not fsync the copy: do it, file then directory entry. */
	char path[4096];
	if ((size_t)snprintf(path, sizeof(path), "%s/data.mdb", dest_dir) >= sizeof(path))
		return vela_err_set(err, VELA_EINVAL, "path too long");
	if (fsync_path(path, O_RDONLY) != 0 || fsync_path(dest_dir, O_RDONLY | O_DIRECTORY) != 0)
		return vela_err_set(err, VELA_EIO, "cannot sync the copy in '%s': %s", dest_dir,
				    strerror(errno));
	return VELA_OK;
}
