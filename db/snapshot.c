/* Graph snapshots: derived data saved at close so a restart loads the graph
 * instead of rebuilding it (DESIGN §3). A snapshot is a file beside the LMDB
 * environment, `graph-<index id>-<field>.snap`:
 *
 *   magic "VELASNAP" | le32 version | le64 change-log sequence | graph_save()
 *
 * It is used only when the database's change-log sequence still equals the
 * one it was written at — no indexed write happened since — and when the
 * graph's own checksum verifies; otherwise the graph is rebuilt from LMDB. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "db/search_int.h"

#define SNAP_MAGIC "VELASNAP"
#define SNAP_VERSION 1u

static void snap_path(const vela_db_t *db, const db_index_t *ix, uint32_t field, char *buf,
		      size_t cap)
{
	snprintf(buf, cap, "%s/graph-%u-%u.snap", db->dir, ix->id, field);
}

void db_train_path(const vela_db_t *db, const db_index_t *ix, uint32_t k, char *buf, size_t len)
{
	snprintf(buf, len, "%s/train-%u-%u.bin", db->dir, ix->id, k);
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = n - 1; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

/* Write to a temporary file, fsync, rename: a crash leaves the old snapshot
 * or the new one, never half of one. */
static int snap_write(const char *path, const graph_t *g, uint64_t seq)
{
	char tmp[PATH_MAX_SNAP + 8];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *f = fopen(tmp, "wb");
	if (f == NULL)
		return VELA_EIO;
	uint8_t hdr[20];
	memcpy(hdr, SNAP_MAGIC, 8);
	put_le(hdr + 8, SNAP_VERSION, 4);
	put_le(hdr + 12, seq, 8);
	int rc = fwrite(hdr, 1, sizeof(hdr), f) == sizeof(hdr) ? graph_save(g, f) : VELA_EIO;
	if (fflush(f) != 0 || fsync(fileno(f)) != 0)
		rc = rc ? rc : VELA_EIO;
	if (fclose(f) != 0)
		rc = rc ? rc : VELA_EIO;
	if (rc == 0 && rename(tmp, path) != 0)
		rc = VELA_EIO;
	if (rc)
		unlink(tmp);
	return rc;
}

void db_snapshots_save(vela_db_t *db, uint64_t seq)
{
	for (size_t i = 0; i < db->n_indexes; i++) {
		db_index_t *ix = db->indexes[i];
		for (uint32_t k = 0; k < ix->n_fields; k++) {
			/* Unchanged since its snapshot was loaded or written: keep it. */
			if (ix->fields[k].graph == NULL || ix->fields[k].snap_seq == seq)
				continue;
			char path[PATH_MAX_SNAP];
			snap_path(db, ix, k, path, sizeof(path));
			/* Writes keep single nodes linked; groups that only point at
			 * each other are linked here, so a loaded graph reaches all. */
			int rc = graph_connect(ix->fields[k].graph);
			if (rc == 0)
				rc = snap_write(path, ix->fields[k].graph, seq);
			if (rc == 0)
				ix->fields[k].snap_seq = seq;
			if (rc)
				vela_warn("index '%s': cannot write graph snapshot %s: %s", ix->name,
					  path, vela_strerror(rc));
		}
	}
}

/* Load field k's graph from its snapshot if it is current; 0 if loaded. */
int db_snapshot_load(const vela_db_t *db, db_index_t *ix, uint32_t k, uint64_t seq)
{
	char path[PATH_MAX_SNAP];
	snap_path(db, ix, k, path, sizeof(path));
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return VELA_ENOTFOUND;
	uint8_t hdr[20];
	db_field_t *fd = &ix->fields[k];
	int rc = fread(hdr, 1, sizeof(hdr), f) == sizeof(hdr) ? VELA_OK : VELA_ECORRUPT;
	if (rc == 0 && (memcmp(hdr, SNAP_MAGIC, 8) != 0 || get_le(hdr + 8, 4) > SNAP_VERSION))
		rc = VELA_ECORRUPT;
	if (rc == 0 && get_le(hdr + 12, 8) != seq)
		rc = VELA_EBUSY; /* written before later changes: stale */
	uint32_t *ids = NULL;
	uint64_t n = 0;
	if (rc == 0) /* the same (re-trained, deterministic) store the graph was built on */
		rc = db_vec_store_prepare(db, ix, k, &ids, &n);
	if (rc == 0)
		rc = graph_load(f, &fd->gstore, 0, &fd->graph);
	fclose(f);
	/* The graph's live nodes must be exactly the field's vectors: as many,
	 * and every docid among them (a node without a vector would be a
	 * search result for a document the field does not hold). */
	if (rc == 0 && graph_count(fd->graph) != n)
		rc = VELA_ECORRUPT;
	for (uint64_t i = 0; rc == 0 && i < n; i++)
		if (!graph_contains(fd->graph, ids[i]))
			rc = VELA_ECORRUPT;
	/* A snapshot written before graph_connect ran at save may hold nodes
	 * no walk reaches: link them (a walk over the edges when there are none). */
	if (rc == 0)
		rc = graph_connect(fd->graph);
	free(ids);
	if (rc == 0)
		db_vec_rows_release(fd); /* compressed: the codes replace the F32 rows */
	fd->graph_from_snapshot = rc == 0;
	fd->snap_seq = rc == 0 ? seq : 0;
	if (rc) {
		graph_destroy(fd->graph);
		fd->graph = NULL;
		graph_lvq_store_destroy(fd->lvq);
		fd->lvq = NULL;
		vela_warn("index '%s': graph snapshot %s not used (%s): rebuilding", ix->name, path,
			  rc == VELA_EBUSY ? "stale" : vela_strerror(rc));
	}
	return rc;
}

void db_snapshot_remove(const vela_db_t *db, const db_index_t *ix)
{
	for (uint32_t k = 0; k < ix->n_fields; k++) {
		char path[PATH_MAX_SNAP];
		snap_path(db, ix, k, path, sizeof(path));
		unlink(path);
		db_train_path(db, ix, k, path, sizeof(path));
		unlink(path);
	}
	db_workload_files_remove(db, ix);
}
