/* A data.mdb shorter than its B-trees: refused at open, never a SIGBUS.
 *
 * LMDB maps data.mdb; a page past the end of the file faults (SIGBUS) when
 * read. The meta page names the last page the database has allocated
 * (mm_last_pg), but a file may end before it without damage: pages a
 * transaction allocated and freed again ("loose" pages) are never written.
 * So a short file is not refused on its size alone: its B-trees are walked,
 * touching every page they reference, under a SIGBUS guard. If every page is
 * there the missing tail was unreferenced and the file is extended to its
 * full length (as storage_extend_file keeps it after each commit, so the
 * walk is the rare path: a crash right after a commit, or real damage).
 * A file ending inside a page is refused without a walk: LMDB writes whole
 * pages, and the cut page would read as zeros rather than fault.
 *
 * The meta pages are read with pread, following the on-disk layout lmdb.h
 * and mdb.c describe (MDB_meta after the page header): nothing of the map
 * is touched before the size is known to be safe. */
#define _GNU_SOURCE /* siginfo_t si_addr with strict C11 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage_internal.h"

/* LMDB's on-disk meta page (64-bit builds, data format 1): a 16-byte page
 * header, then MDB_meta: magic, version, address, map size, the free and
 * main DB records (48 bytes each; the free one's md_pad holds the page
 * size), the last page number and the transaction id. */
#define META_MAGIC 0xBEEFC0DEu
#define META_FORMAT 1u
#define META_AT 16u
#define META_OFF_MAGIC 0u
#define META_OFF_VERSION 4u
#define META_OFF_PSIZE 24u
#define META_OFF_LAST_PG 120u
#define META_OFF_TXNID 128u
#define META_BYTES 136u

typedef struct meta {
	uint32_t psize;
	uint64_t last_pg, txnid;
} meta_t;

static uint64_t le(const unsigned char *p, int n)
{
	uint64_t v = 0;
	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* Meta page `i`, given the page size (meta 0 says it). 1 when read and
 * valid, 0 when not an LMDB meta (LMDB's own open reports that), -1 when
 * the file ends inside it. */
static int meta_read(int fd, off_t at, meta_t *m)
{
	unsigned char b[META_AT + META_BYTES];
	ssize_t n = pread(fd, b, sizeof(b), at);
	if (n != (ssize_t)sizeof(b))
		return n < 0 ? 0 : -1;
	const unsigned char *p = b + META_AT;
	if (le(p + META_OFF_MAGIC, 4) != META_MAGIC || le(p + META_OFF_VERSION, 4) != META_FORMAT)
		return 0;
	m->psize = (uint32_t)le(p + META_OFF_PSIZE, 4);
	m->last_pg = le(p + META_OFF_LAST_PG, 8);
	m->txnid = le(p + META_OFF_TXNID, 8);
	return 1;
}

/* ------------------------------------------------------------ the walk */

typedef struct walk {
	volatile unsigned char sink;
	/* open while walking: closed after a fault interrupted LMDB */
	MDB_txn *txn;
	MDB_cursor *cur, *names;
} walk_t;

static _Thread_local sigjmp_buf *guard_jb;
static _Thread_local walk_t guard_walk; /* outside the frame siglongjmp returns to */
static struct sigaction guard_old;

/* A SIGBUS while this thread walks the map (LMDB does not report the map's
 * address, but the walk reads no other mapped file): back to the walk.
 * Any other: restore the previous action; the fault repeats into it. */
static void guard_handler(int sig, siginfo_t *si, void *uc)
{
	(void)si;
	(void)uc;
	if (sig == SIGBUS && guard_jb)
		siglongjmp(*guard_jb, 1);
	sigaction(SIGBUS, &guard_old, NULL);
}


/* Read the first and last byte of v: its first and last page (an overflow
 * value's pages are contiguous, so the file holds all or faults). */
static void touch(walk_t *w, const MDB_val *v)
{
	const char *p = v->mv_data;
	if (v->mv_size)
		w->sink ^= (unsigned char)(p[0] ^ p[v->mv_size - 1]);
}

static int walk_dbi(walk_t *w, MDB_txn *txn, MDB_dbi dbi)
{
	int rc = mdb_cursor_open(txn, dbi, &w->cur);
	if (rc)
		return rc;
	MDB_val k, v;
	for (MDB_cursor_op op = MDB_FIRST; rc == 0; op = MDB_NEXT) {
		rc = mdb_cursor_get(w->cur, &k, &v, op);
		if (rc == 0) {
			touch(w, &k);
			touch(w, &v);
		}
	}
	mdb_cursor_close(w->cur);
	w->cur = NULL;
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Every page the free list, the table of names and each table reference. */
static int walk_all(walk_t *w, MDB_env *mdb)
{
	int rc = mdb_txn_begin(mdb, NULL, MDB_RDONLY, &w->txn);
	if (rc)
		return rc;
	MDB_txn *txn = w->txn;
	rc = walk_dbi(w, txn, 0); /* FREE_DBI, as mdb_stat -f opens it */
	MDB_val k, v;
	if (rc == 0)
		rc = walk_dbi(w, txn, 1); /* MAIN_DBI: the names of the tables */
	if (rc == 0 && (rc = mdb_cursor_open(txn, 1, &w->names)) == 0) {
		for (MDB_cursor_op op = MDB_FIRST; rc == 0; op = MDB_NEXT) {
			char name[512];
			MDB_dbi dbi;
			if ((rc = mdb_cursor_get(w->names, &k, &v, op)) != 0 || k.mv_size >= sizeof(name))
				continue;
			memcpy(name, k.mv_data, k.mv_size);
			name[k.mv_size] = '\0';
			if (mdb_dbi_open(txn, name, 0, &dbi) == 0)
				rc = walk_dbi(w, txn, dbi);
		}
		mdb_cursor_close(w->names);
		w->names = NULL;
		rc = rc == MDB_NOTFOUND ? 0 : rc;
	}
	mdb_txn_abort(txn);
	w->txn = NULL;
	return rc;
}

/* 1: a referenced page is missing; 0: all there; < 0: LMDB's error. */
static int walk_guarded(MDB_env *mdb)
{
	walk_t *w = &guard_walk;
	*w = (walk_t){0};
	sigjmp_buf jb;
	struct sigaction sa = {.sa_sigaction = guard_handler, .sa_flags = SA_SIGINFO};
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, &guard_old) != 0)
		return -errno;
	volatile int faulted = 0, rc = 0;
	if (sigsetjmp(jb, 1) == 0) {
		guard_jb = &jb;
		rc = walk_all(w, mdb);
	} else {
		faulted = 1;
	}
	guard_jb = NULL;
	sigaction(SIGBUS, &guard_old, NULL);
	/* Interrupted inside LMDB: closing a read cursor or transaction reads no page. */
	if (w->cur)
		mdb_cursor_close(w->cur);
	if (w->names)
		mdb_cursor_close(w->names);
	if (w->txn)
		mdb_txn_abort(w->txn);
	if (faulted)
		return 1;
	return rc ? -rc : 0;
}

/* ------------------------------------------------------------ the check */

int storage_check_size(MDB_env *mdb, const char *dir, int rdonly, vela_err_t *err)
{
	int fd;
	if (mdb_env_get_fd(mdb, &fd) != 0)
		return VELA_OK;
	struct stat st;
	meta_t m[2];
	if (fstat(fd, &st) != 0 || st.st_size == 0)
		return VELA_OK; /* a new database */
	int r0 = meta_read(fd, 0, &m[0]);
	int r1 = r0 == 1 && m[0].psize >= 512 ? meta_read(fd, m[0].psize, &m[1]) : r0;
	if (r0 < 0 || r1 < 0)
		return vela_err_set(err, VELA_ECORRUPT, "%s/data.mdb is shorter than its meta pages: "
				    "truncated (%lld bytes): restore it from a backup", dir,
				    (long long)st.st_size);
	if (r0 == 0 || r1 == 0)
		return VELA_OK; /* not LMDB's format 1: mdb_env_open said what it thought */
	const meta_t *cur = &m[m[0].txnid < m[1].txnid];
	uint64_t need = (cur->last_pg + 1) * (uint64_t)cur->psize;
	if ((uint64_t)st.st_size >= need)
		return VELA_OK;
	/* LMDB writes whole pages: a file ending inside one was cut, and the
	 * cut page would read as zeros (no fault), so no walk could tell. */
	int rc = st.st_size % cur->psize ? 1 : walk_guarded(mdb);
	if (rc == 1)
		return vela_err_set(err, VELA_ECORRUPT,
				    "%s/data.mdb is shorter than its meta page says: truncated "
				    "(%lld bytes; the last commit reaches %llu, and %s): restore it "
				    "from a backup", dir, (long long)st.st_size,
				    (unsigned long long)need,
				    st.st_size % cur->psize ? "the file ends inside a page"
							    : "its B-trees reference pages past the end");
	if (rc < 0)
		return vela_err_set(err, VELA_ECORRUPT, "%s/data.mdb: cannot read its B-trees: %s",
				    dir, mdb_strerror(-rc));
	/* Every referenced page is there: the tail was freed pages never
	 * written. Give the file its full length so the next open is quick. */
	if (!rdonly && ftruncate(fd, (off_t)need) != 0)
		vela_warn("%s/data.mdb: cannot extend to %llu bytes: %s", dir,
			  (unsigned long long)need, strerror(errno));
	vela_info("%s/data.mdb ends %llu pages before its last page number; every page its "
		  "B-trees reference is present (pages freed unwritten)", dir,
		  (unsigned long long)((need - (uint64_t)st.st_size) / cur->psize));
	return VELA_OK;
}

void storage_extend_file(storage_env_t *env)
{
	MDB_envinfo info;
	MDB_stat st;
	int fd;
	if (env->rdonly)
		return;
	mdb_env_info(env->mdb, &info);
	if (info.me_last_pgno + 1 <= env->file_pages)
		return;
	mdb_env_stat(env->mdb, &st);
	uint64_t need = (uint64_t)(info.me_last_pgno + 1) * st.ms_psize;
	struct stat fs;
	if (mdb_env_get_fd(env->mdb, &fd) != 0 || fstat(fd, &fs) != 0)
		return;
	/* Sparse: the unwritten pages take no disk space. */
	if ((uint64_t)fs.st_size < need && ftruncate(fd, (off_t)need) != 0)
		return; /* tried again after the next commit */
	env->file_pages = info.me_last_pgno + 1;
}
