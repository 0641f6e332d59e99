/* Packed documents, the change log and meta counters (storage.h). */
#include <stdlib.h>
#include <string.h>

#include "storage.h"

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_le32(const uint8_t *p)
{
	return p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

int storage_doc_pack(const storage_field_t *fields, size_t n, uint8_t **out, size_t *out_len)
{
	if (n > STORAGE_DOC_FIELDS_MAX)
		return VELA_ELIMIT;
	size_t len = 5;
	for (size_t i = 0; i < n; i++) {
		if (fields[i].name_len > UINT32_MAX || fields[i].value_len > UINT32_MAX)
			return VELA_ELIMIT;
		len += 8 + fields[i].name_len + fields[i].value_len;
	}
	uint8_t *buf = malloc(len), *p = buf;
	if (buf == NULL)
		return VELA_ENOMEM;
	*p++ = STORAGE_DOC_VERSION;
	put_le32(p, (uint32_t)n);
	p += 4;
	for (size_t i = 0; i < n; i++) {
		put_le32(p, (uint32_t)fields[i].name_len);
		if (fields[i].name_len)
			memcpy(p + 4, fields[i].name, fields[i].name_len);
		p += 4 + fields[i].name_len;
		put_le32(p, (uint32_t)fields[i].value_len);
		if (fields[i].value_len)
			memcpy(p + 4, fields[i].value, fields[i].value_len);
		p += 4 + fields[i].value_len;
	}
	*out = buf;
	*out_len = len;
	return VELA_OK;
}

/* Read one length-prefixed byte string at *off, checking every bound. */
static int doc_read_bytes(const uint8_t *buf, size_t len, size_t *off, const uint8_t **p,
			  size_t *n)
{
	if (len - *off < 4)
		return VELA_ECORRUPT;
	uint32_t l = get_le32(buf + *off);
	*off += 4;
	if (len - *off < l)
		return VELA_ECORRUPT;
	*p = buf + *off;
	*n = l;
	*off += l;
	return VELA_OK;
}

int storage_doc_unpack(const uint8_t *buf, size_t len, storage_field_t **fields, size_t *n)
{
	if (len < 5 || buf[0] != STORAGE_DOC_VERSION)
		return VELA_ECORRUPT;
	uint32_t cnt = get_le32(buf + 1);
	/* Each field takes at least 8 bytes: bound cnt before allocating. */
	if (cnt > STORAGE_DOC_FIELDS_MAX || cnt > (len - 5) / 8)
		return VELA_ECORRUPT;
	storage_field_t *f = calloc(cnt ? cnt : 1, sizeof(*f));
	if (f == NULL)
		return VELA_ENOMEM;
	size_t off = 5;
	for (uint32_t i = 0; i < cnt; i++) {
		if (doc_read_bytes(buf, len, &off, &f[i].name, &f[i].name_len) ||
		    doc_read_bytes(buf, len, &off, &f[i].value, &f[i].value_len)) {
			free(f);
			return VELA_ECORRUPT;
		}
	}
	if (off != len) {
		free(f);
		return VELA_ECORRUPT;
	}
	*fields = f;
	*n = cnt;
	return VELA_OK;
}

/* ------------------------------------------------------------ meta */

int storage_meta_get_u64(storage_txn_t *txn, const char *name, uint64_t *v)
{
	const void *val;
	size_t vlen;
	int rc = storage_get(txn, ST_META, name, strlen(name), &val, &vlen);
	if (rc == VELA_ENOTFOUND) {
		*v = 0;
		return VELA_OK;
	}
	if (rc)
		return rc;
	if (vlen != 8)
		return VELA_ECORRUPT;
	*v = vela_get_be64(val);
	return VELA_OK;
}

int storage_meta_put_u64(storage_txn_t *txn, const char *name, uint64_t v)
{
	uint8_t b[8];
	vela_put_be64(b, v);
	return storage_put(txn, ST_META, name, strlen(name), b, 8);
}

/* ------------------------------------------------------------ log */

#define LOG_SEQ_NAME "log.seq"

int storage_log_append(storage_txn_t *txn, int op, uint32_t index_id, uint32_t docid,
		       const void *key, size_t klen, uint64_t *seq)
{
	uint64_t s;
	int rc = storage_meta_get_u64(txn, LOG_SEQ_NAME, &s);
	if (rc)
		return rc;
	s++;
	if ((rc = storage_meta_put_u64(txn, LOG_SEQ_NAME, s)))
		return rc;
	uint8_t k[8], hdr[9];
	vela_put_be64(k, s);
	hdr[0] = (uint8_t)op;
	vela_put_be32(hdr + 1, index_id);
	vela_put_be32(hdr + 5, docid);
	uint8_t *rec = malloc(9 + klen);
	if (rec == NULL)
		return VELA_ENOMEM;
	memcpy(rec, hdr, 9);
	if (klen)
		memcpy(rec + 9, key, klen);
	rc = storage_put(txn, ST_LOG, k, 8, rec, 9 + klen);
	free(rec);
	if (rc == 0 && seq)
		*seq = s;
	return rc;
}

int storage_log_last(storage_txn_t *txn, uint64_t *seq)
{
	return storage_meta_get_u64(txn, LOG_SEQ_NAME, seq);
}

int storage_log_trim(storage_txn_t *txn, uint64_t upto)
{
	uint8_t hi[8];
	vela_put_be64(hi, upto);
	return storage_del_range(txn, ST_LOG, NULL, 0, hi, 8, NULL);
}
