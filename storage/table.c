/* Generic table operations, scans and postings (storage.h). */
#include <errno.h>
#include <string.h>

#include "storage.h"
#include "storage_internal.h"

static MDB_val mval(const void *p, size_t n)
{
	MDB_val v = {.mv_size = n, .mv_data = (void *)p};
	return v;
}

int storage_get(storage_txn_t *txn, storage_table_t t, const void *key, size_t klen,
		const void **val, size_t *vlen)
{
	MDB_val k = mval(key, klen), v;
	int rc = mdb_get(txn->txn, txn->env->dbi[t], &k, &v);
	if (rc)
		return storage_rc(rc);
	*val = v.mv_data;
	*vlen = v.mv_size;
	return VELA_OK;
}

int storage_put(storage_txn_t *txn, storage_table_t t, const void *key, size_t klen,
		const void *val, size_t vlen)
{
	MDB_val k = mval(key, klen), v = mval(val, vlen);
	return storage_rc(mdb_put(txn->txn, txn->env->dbi[t], &k, &v, 0));
}

int storage_del(storage_txn_t *txn, storage_table_t t, const void *key, size_t klen)
{
	MDB_val k = mval(key, klen);
	return storage_rc(mdb_del(txn->txn, txn->env->dbi[t], &k, NULL));
}

int storage_del_dup(storage_txn_t *txn, storage_table_t t, const void *key, size_t klen,
		    const void *val, size_t vlen)
{
	MDB_val k = mval(key, klen), v = mval(val, vlen);
	return storage_rc(mdb_del(txn->txn, txn->env->dbi[t], &k, &v));
}

static int key_cmp_prefix(const MDB_val *k, const void *prefix, size_t plen)
{
	return k->mv_size >= plen && (plen == 0 || memcmp(k->mv_data, prefix, plen) == 0);
}

/* Compare key k with bound b as LMDB does (memcmp, then length). */
static int key_cmp(const MDB_val *k, const void *b, size_t blen)
{
	size_t n = k->mv_size < blen ? k->mv_size : blen;
	int c = memcmp(k->mv_data, b, n);
	if (c)
		return c;
	return k->mv_size < blen ? -1 : k->mv_size > blen;
}

static int more_prefix(const MDB_val *k, const void *b, size_t blen)
{
	return key_cmp_prefix(k, b, blen);
}

/* hi == NULL: no upper bound. */
static int more_upto(const MDB_val *k, const void *b, size_t blen)
{
	return b == NULL || key_cmp(k, b, blen) <= 0;
}

/* Visit entries from `from` (empty: the first) while `more` holds. */
static int scan_from(storage_txn_t *txn, storage_table_t t, const void *from, size_t flen,
		     int (*more)(const MDB_val *, const void *, size_t), const void *b,
		     size_t blen, storage_scan_fn fn, void *ctx)
{
	MDB_cursor *c;
	int rc = mdb_cursor_open(txn->txn, txn->env->dbi[t], &c);
	if (rc)
		return storage_rc(rc);
	MDB_val k = mval(from, flen), v;
	int op = flen ? MDB_SET_RANGE : MDB_FIRST;
	int out = 0;
	while ((rc = mdb_cursor_get(c, &k, &v, op)) == 0 && more(&k, b, blen)) {
		out = fn(ctx, k.mv_data, k.mv_size, v.mv_data, v.mv_size);
		if (out)
			break;
		op = MDB_NEXT;
	}
	mdb_cursor_close(c);
	if (out < 0)
		return out;
	return (rc == 0 || rc == MDB_NOTFOUND) ? VELA_OK : storage_rc(rc);
}

int storage_scan_prefix(storage_txn_t *txn, storage_table_t t, const void *prefix, size_t plen,
			storage_scan_fn fn, void *ctx)
{
	return scan_from(txn, t, prefix, plen, more_prefix, prefix, plen, fn, ctx);
}

int storage_scan_range(storage_txn_t *txn, storage_table_t t, const void *lo, size_t lolen,
		       const void *hi, size_t hilen, storage_scan_fn fn, void *ctx)
{
	return scan_from(txn, t, lo, lolen, more_upto, hi, hilen, fn, ctx);
}

/* Delete entries from the cursor position while `more` holds. */
static int del_while(MDB_cursor *c, storage_table_t t, MDB_val *k, int rc,
		     int (*more)(const MDB_val *k, const void *b, size_t blen), const void *b,
		     size_t blen, uint64_t *n)
{
	MDB_val v;
	while (rc == 0 && more(k, b, blen)) {
		/* MDB_NODUPDATA deletes all duplicates of the key at once. */
		rc = mdb_cursor_del(c, t == ST_POSTINGS ? MDB_NODUPDATA : 0);
		if (rc)
			break;
		(*n)++;
		/* After a delete the cursor sits on the next entry. */
		rc = mdb_cursor_get(c, k, &v, MDB_GET_CURRENT);
		if (rc == EINVAL)
			rc = mdb_cursor_get(c, k, &v, MDB_NEXT);
	}
	return (rc == 0 || rc == MDB_NOTFOUND) ? VELA_OK : storage_rc(rc);
}

static int del_from(storage_txn_t *txn, storage_table_t t, const void *from, size_t flen,
		    int (*more)(const MDB_val *, const void *, size_t), const void *b,
		    size_t blen, uint64_t *n_deleted)
{
	MDB_cursor *c;
	int rc = mdb_cursor_open(txn->txn, txn->env->dbi[t], &c);
	if (rc)
		return storage_rc(rc);
	uint64_t n = 0;
	MDB_val k = mval(from, flen), v;
	rc = mdb_cursor_get(c, &k, &v, flen ? MDB_SET_RANGE : MDB_FIRST);
	rc = del_while(c, t, &k, rc, more, b, blen, &n);
	mdb_cursor_close(c);
	if (n_deleted)
		*n_deleted = n;
	return rc;
}

int storage_del_prefix(storage_txn_t *txn, storage_table_t t, const void *prefix, size_t plen,
		       uint64_t *n_deleted)
{
	return del_from(txn, t, prefix, plen, more_prefix, prefix, plen, n_deleted);
}

int storage_del_range(storage_txn_t *txn, storage_table_t t, const void *lo, size_t lolen,
		      const void *hi, size_t hilen, uint64_t *n_deleted)
{
	return del_from(txn, t, lo, lolen, more_upto, hi, hilen, n_deleted);
}

int storage_clear(storage_txn_t *txn, storage_table_t t)
{
	return storage_rc(mdb_drop(txn->txn, txn->env->dbi[t], 0));
}

int storage_count(storage_txn_t *txn, storage_table_t t, uint64_t *n)
{
	MDB_stat st;
	int rc = mdb_stat(txn->txn, txn->env->dbi[t], &st);
	if (rc)
		return storage_rc(rc);
	*n = st.ms_entries;
	return VELA_OK;
}

/* ------------------------------------------------------------ postings */

size_t storage_posting_key(uint8_t *buf, uint32_t index_id, uint16_t field, int kind,
			   const void *value, size_t vlen)
{
	vela_put_be32(buf, index_id);
	buf[4] = (uint8_t)(field >> 8);
	buf[5] = (uint8_t)field;
	buf[6] = (uint8_t)kind;
	if (vlen)
		memcpy(buf + 7, value, vlen);
	return 7 + vlen;
}

int storage_posting_add(storage_txn_t *txn, const uint8_t *key, size_t klen, uint32_t docid)
{
	uint8_t d[4];
	vela_put_be32(d, docid);
	MDB_val k = mval(key, klen), v = mval(d, 4);
	int rc = mdb_put(txn->txn, txn->env->dbi[ST_POSTINGS], &k, &v, MDB_NODUPDATA);
	return rc == MDB_KEYEXIST ? VELA_OK : storage_rc(rc);
}

int storage_posting_remove(storage_txn_t *txn, const uint8_t *key, size_t klen, uint32_t docid)
{
	uint8_t d[4];
	vela_put_be32(d, docid);
	return storage_del_dup(txn, ST_POSTINGS, key, klen, d, 4);
}

/* Read all duplicates of the cursor's current key in pages (MDB_GET_MULTIPLE). */
static int posting_read_dups(MDB_cursor *c, storage_docids_fn fn, void *ctx)
{
	MDB_val k, v;
	size_t cnt = 0;
	int rc = mdb_cursor_count(c, &cnt);
	if (rc)
		return storage_rc(rc);
	/* A key with one value is a plain node: GET_MULTIPLE would return
	 * success without filling `v`, so read it directly. */
	if (cnt == 1) {
		rc = mdb_cursor_get(c, &k, &v, MDB_GET_CURRENT);
		if (rc)
			return storage_rc(rc);
		return fn(ctx, v.mv_data, 1);
	}
	rc = mdb_cursor_get(c, &k, &v, MDB_GET_MULTIPLE);
	while (rc == 0) {
		int out = fn(ctx, v.mv_data, v.mv_size / 4);
		if (out)
			return out; /* 1 = stop, negative = failure */
		rc = mdb_cursor_get(c, &k, &v, MDB_NEXT_MULTIPLE);
	}
	return rc == MDB_NOTFOUND ? VELA_OK : storage_rc(rc);
}

int storage_posting_get(storage_txn_t *txn, const uint8_t *key, size_t klen,
			storage_docids_fn fn, void *ctx)
{
	MDB_cursor *c;
	int rc = mdb_cursor_open(txn->txn, txn->env->dbi[ST_POSTINGS], &c);
	if (rc)
		return storage_rc(rc);
	MDB_val k = mval(key, klen), v;
	rc = mdb_cursor_get(c, &k, &v, MDB_SET);
	rc = rc == 0 ? posting_read_dups(c, fn, ctx) : storage_rc(rc);
	mdb_cursor_close(c);
	return (rc == VELA_ENOTFOUND || rc > 0) ? VELA_OK : rc;
}

int storage_posting_range(storage_txn_t *txn, const uint8_t *lo, size_t lolen, const uint8_t *hi,
			  size_t hilen, storage_docids_fn fn, void *ctx)
{
	MDB_cursor *c;
	int rc = mdb_cursor_open(txn->txn, txn->env->dbi[ST_POSTINGS], &c);
	if (rc)
		return storage_rc(rc);
	MDB_val k = mval(lo, lolen), v;
	int mrc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	rc = 0;
	while (mrc == 0 && key_cmp(&k, hi, hilen) <= 0) {
		if ((rc = posting_read_dups(c, fn, ctx)) != 0)
			break;
		mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT_NODUP);
	}
	mdb_cursor_close(c);
	if (rc == 0 && mrc != 0 && mrc != MDB_NOTFOUND)
		rc = storage_rc(mrc);
	return rc > 0 ? VELA_OK : rc;
}

/* Flip the sign bit of non-negative doubles and every bit of negative ones:
 * the big-endian bytes then sort as the numbers do. -0.0 is folded to 0.0. */
void storage_num_encode(double v, uint8_t out[8])
{
	uint64_t u;
	if (v == 0.0)
		v = 0.0;
	memcpy(&u, &v, 8);
	u = (u & (1ull << 63)) ? ~u : (u | (1ull << 63));
	vela_put_be64(out, u);
}

double storage_num_decode(const uint8_t in[8])
{
	uint64_t u = vela_get_be64(in);
	u = (u & (1ull << 63)) ? (u & ~(1ull << 63)) : ~u;
	double v;
	memcpy(&v, &u, 8);
	return v;
}
