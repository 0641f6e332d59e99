/* Backups and restores: compacted LMDB hot copies placed atomically
 * (vela.h, "backups"). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "db.h"

/* What a backup directory may hold: the copy, and the lock file LMDB
 * creates when the copy is opened. */
static bool backup_file(const char *name)
{
	return strcmp(name, "data.mdb") == 0 || strcmp(name, "lock.mdb") == 0;
}

/* 1: `dir` holds only backup files (or nothing); 0: something else; -1: errno. */
static int dir_only_backup(const char *dir, bool *empty)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return -1;
	int ok = 1;
	*empty = true;
	for (struct dirent *e; (e = readdir(d)) != NULL;) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		*empty = false;
		if (!backup_file(e->d_name))
			ok = 0;
	}
	closedir(d);
	return ok;
}

/* Remove a directory holding only backup files. */
static int dir_remove_backup(const char *dir)
{
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s/data.mdb", dir);
	if (unlink(p) != 0 && errno != ENOENT)
		return -1;
	snprintf(p, sizeof(p), "%s/lock.mdb", dir);
	if (unlink(p) != 0 && errno != ENOENT)
		return -1;
	return rmdir(dir);
}

static void path_parent(const char *path, char *out, size_t cap)
{
	snprintf(out, cap, "%s", path);
	size_t n = strlen(out);
	while (n > 1 && out[n - 1] == '/') /* "a/b/" is "a/b" */
		out[--n] = '\0';
	char *slash = strrchr(out, '/');
	if (slash == NULL)
		snprintf(out, cap, ".");
	else if (slash == out)
		out[1] = '\0';
	else
		*slash = '\0';
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	close(fd);
	return rc;
}

/* Same directory (or file) on disk? */
static bool same_inode(const char *a, const char *b)
{
	struct stat sa, sb;
	return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
	       sa.st_ino == sb.st_ino;
}

/*
 * Copy `env` (whose directory is `src_dir`) to `dest`:
 *  1. `dest` must be absent, an empty directory, or — with `replace` — a
 *     directory holding only an earlier backup; never `src_dir` itself;
 *  2. the copy is written to `dest`.tmp (a stale one from a crash is
 *     removed first) and fsync'd;
 *  3. an earlier backup moves to `dest`.old, the copy is renamed to `dest`,
 *     the parent directory fsync'd, `dest`.old removed.
 * A crash leaves `dest` complete (old or new) except between the two renames
 * of step 3, where the old backup is complete in `dest`.old.
 */
static int backup_place(storage_env_t *env, const char *src_dir, const char *dest, bool replace,
			vela_err_t *err)
{
	char tmp[PATH_MAX], old[PATH_MAX], parent[PATH_MAX];
	size_t dl = strlen(dest);
	if (dl == 0 || dl + 8 >= sizeof(tmp))
		return vela_err_set(err, VELA_EINVAL, "bad destination path");
	snprintf(tmp, sizeof(tmp), "%s.tmp", dest);
	snprintf(old, sizeof(old), "%s.old", dest);
	path_parent(dest, parent, sizeof(parent));
	struct stat st;
	if (stat(parent, &st) != 0 || !S_ISDIR(st.st_mode))
		return vela_err_set(err, VELA_EINVAL, "the directory above '%s' does not exist",
				    dest);
	bool exists = false, empty = true;
	if (stat(dest, &st) == 0) {
		if (!S_ISDIR(st.st_mode))
			return vela_err_set(err, VELA_EEXISTS, "'%s' exists and is not a directory",
					    dest);
		if (src_dir && same_inode(dest, src_dir))
			return vela_err_set(err, VELA_EINVAL, "'%s' is the database directory itself",
					    dest);
		int only = dir_only_backup(dest, &empty);
		if (only < 0)
			return vela_err_set(err, VELA_EIO, "cannot read '%s': %s", dest,
					    strerror(errno));
		if (!empty && (!only || !replace))
			return vela_err_set(err, VELA_EEXISTS, replace
					    ? "'%s' exists and holds other files than a backup"
					    : "'%s' exists and is not empty", dest);
		exists = true;
	} else if (errno != ENOENT) {
		return vela_err_set(err, VELA_EIO, "cannot stat '%s': %s", dest, strerror(errno));
	}
	/* Leftovers of an interrupted backup to the same place. */
	bool e2;
	if (stat(tmp, &st) == 0 && (dir_only_backup(tmp, &e2) != 1 || dir_remove_backup(tmp) != 0))
		return vela_err_set(err, VELA_EEXISTS, "cannot remove the stale '%s'", tmp);
	if (stat(old, &st) == 0 && (dir_only_backup(old, &e2) != 1 || dir_remove_backup(old) != 0))
		return vela_err_set(err, VELA_EEXISTS, "cannot remove the stale '%s'", old);
	if (mkdir(tmp, 0755) != 0)
		return vela_err_set(err, VELA_EIO, "cannot create '%s': %s", tmp, strerror(errno));
	int rc = storage_copy(env, tmp, err);
	if (rc) {
		dir_remove_backup(tmp);
		return rc;
	}
	if (exists && !empty && rename(dest, old) != 0) {
		rc = vela_err_set(err, VELA_EIO, "cannot move '%s' aside: %s", dest, strerror(errno));
		dir_remove_backup(tmp);
		return rc;
	}
	/* rename(2) replaces an empty directory. */
	if (rename(tmp, dest) != 0) {
		rc = vela_err_set(err, VELA_EIO, "cannot rename '%s' to '%s': %s", tmp, dest,
				  strerror(errno));
		if (exists && !empty)
			rename(old, dest);
		dir_remove_backup(tmp);
		return rc;
	}
	if (fsync_dir(parent) != 0)
		return vela_err_set(err, VELA_EIO, "cannot sync '%s': %s", parent, strerror(errno));
	if (exists && !empty && dir_remove_backup(old) != 0)
		vela_warn("backup: cannot remove the previous backup '%s': %s", old, strerror(errno));
	return VELA_OK;
}

int vela_db_backup(vela_db_t *db, const char *dest, vela_err_t *err)
{
	if (db == NULL || dest == NULL)
		return vela_err_set(err, VELA_EINVAL, "no database or destination");
	/* The copy's read transaction must not see the map resized under it;
	 * vela_db_set_map_size waits on backup_mu. Writers and searches do not. */
	pthread_mutex_lock(&db->backup_mu);
	int rc = backup_place(db->env, db->dir, dest, true, err);
	pthread_mutex_unlock(&db->backup_mu);
	return rc;
}

/* Open a database directory read-only at the storage level: no index is
 * loaded, nothing is written (LMDB's lock file excepted), the magic and
 * format version are checked. */
static int open_source(const char *src, storage_env_t **env, vela_err_t *err)
{
	struct stat st;
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s/data.mdb", src);
	if (stat(src, &st) != 0 || !S_ISDIR(st.st_mode))
		return vela_err_set(err, VELA_ENOTFOUND, "'%s' is not a directory", src);
	if (stat(p, &st) != 0)
		return vela_err_set(err, VELA_ENOTFOUND, "'%s' holds no database (no data.mdb)", src);
	if (st.st_size == 0)
		return vela_err_set(err, VELA_ECORRUPT, "'%s' is empty", p);
	return storage_open(src, 0, STORAGE_RDONLY, env, err);
}

int vela_backup_dir(const char *src, const char *dest, vela_err_t *err)
{
	storage_env_t *env;
	int rc = open_source(src, &env, err);
	if (rc)
		return rc;
	rc = backup_place(env, src, dest, true, err);
	storage_close(env);
	return rc;
}

int vela_restore_dir(const char *src, const char *dbdir, vela_err_t *err)
{
	storage_env_t *env;
	int rc = open_source(src, &env, err);
	if (rc)
		return rc;
	/* A compacting copy reads every page of every B-tree: a damaged backup
	 * fails here rather than in the server. */
	rc = backup_place(env, src, dbdir, false, err);
	storage_close(env);
	return rc;
}

void vela_db_keyspace(vela_db_t *db, uint64_t *keys, uint64_t *expires)
{
	uint64_t d = 0, s = 0, e = 0;
	storage_txn_t *txn = NULL;
	pthread_rwlock_rdlock(&db->lock);
	if (storage_txn_begin(db->env, NULL, 0, &txn) == 0) {
		storage_count(txn, ST_DOCS, &d);
		storage_count(txn, ST_STRINGS, &s);
		storage_count(txn, ST_EXPIRES, &e);
		storage_txn_abort(txn);
	}
	pthread_rwlock_unlock(&db->lock);
	if (keys)
		*keys = d + s;
	if (expires)
		*expires = e;
}
