/* The query sample: per vector field, a bounded uniform sample of the query
 * vectors searched on it, the training set of LeanVec-OOD (the projection is
 * learned from queries as well as data, reference/leanvec-lvq.md §1.3).
 *
 * Reservoir sampling, Vitter's algorithm R ("Random sampling with a
 * reservoir", ACM TOMS 1985): the first `cap` queries fill the reservoir;
 * query t (0-based) then replaces row j, drawn uniformly in [0, t], when
 * j < cap. Every query seen is thus kept with probability cap / seen.
 * The draw is a splitmix64 step seeded from (index id, field), so a run is
 * reproducible. Recording holds the field state's mutex for one draw and,
 * when the row is kept, one copy; rows grow by doubling to the cap (a few
 * allocations per field in all, none per record once full).
 *
 * The file (<dir>/qsample-<index id>-<field>.bin, and any file of
 * db_qsample_file_save): header {u32 magic, u32 version, u32 dim, u32 rows,
 * u64 seen}, rows * dim float32, then the XXH3-64 of everything before it.
 * All little-endian (the hosts vela builds for). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db/search_int.h"
#include "quant/quant.h"

#define QS_FILE_MAGIC 0x504d5351u /* "QSMP" */
#define QS_FILE_VERSION 1u
#define QS_HDR_BYTES 24u
#define QS_SUM_BYTES 8u
/* Rows allocated on the first record; doubled up to the cap. */
#define QS_ALLOC_FIRST 64u

/* ------------------------------------------------------------ the reservoir */

static uint64_t qs_next(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* A deterministic seed per field (and per point of its stream when loaded). */
static uint64_t qs_seed(const db_field_state_t *s, uint64_t seen)
{
	uint64_t x = ((uint64_t)s->ix_id << 32 | s->field) ^ 0x51534d5051534d50ull;
	x ^= qs_next(&seen);
	return qs_next(&x);
}

uint32_t db_qsample_cap(uint32_t rows_max, uint32_t dim)
{
	size_t row = (size_t)dim * sizeof(float);
	if (dim == 0 || row > DB_QSAMPLE_BYTES_MAX)
		return 0;
	size_t cap = rows_max ? rows_max : DB_QSAMPLE_ROWS_DEFAULT;
	if (cap > DB_QSAMPLE_BYTES_MAX / row)
		cap = DB_QSAMPLE_BYTES_MAX / row;
	return (uint32_t)cap;
}

/* Drop the rows and start a sample of `dim` (mu held). */
static void qs_reset(db_field_state_t *s, uint32_t dim)
{
	free(s->qs_rows);
	s->qs_rows = NULL;
	s->qs_alloc = s->qs_n = 0;
	s->qs_seen = 0;
	s->qs_dim = dim;
	s->qs_rng = qs_seed(s, 0);
}

/* Room for `need` rows (need <= cap). */
static int qs_grow(db_field_state_t *s, uint32_t need, uint32_t cap)
{
	if (need <= s->qs_alloc)
		return 0;
	uint32_t a = s->qs_alloc ? s->qs_alloc : QS_ALLOC_FIRST;
	while (a < need)
		a = a > cap / 2 ? cap : 2 * a;
	a = a < need ? need : a > cap ? cap : a;
	float *r = realloc(s->qs_rows, vela_mul_size((size_t)a * s->qs_dim, sizeof(float)));
	if (r == NULL)
		return VELA_ENOMEM;
	s->qs_rows = r;
	s->qs_alloc = a;
	return 0;
}

/* Algorithm R's step for one query (mu held): the row to overwrite, or NULL
 * when this query is not kept. */
static float *qs_slot(db_field_state_t *s, uint32_t dim)
{
	if (s->qs_dim != dim) /* cannot happen (a field's dim is fixed): start over */
		qs_reset(s, dim);
	uint32_t cap = db_qsample_cap(s->qs_rows_max, dim);
	if (cap == 0)
		return NULL;
	uint64_t t = s->qs_seen;
	uint64_t j;
	if (s->qs_n < cap) {
		if (qs_grow(s, s->qs_n + 1, cap))
			return NULL; /* advisory: the query is lost, the stream stays uniform */
		j = s->qs_n++;
	} else {
		/* uniform in [0, t] (Lemire's multiply-shift; bias < (t+1) / 2^64) */
		j = (uint64_t)(((unsigned __int128)qs_next(&s->qs_rng) * (t + 1)) >> 64);
		if (j >= cap) {
			s->qs_seen = t + 1;
			return NULL;
		}
	}
	s->qs_seen = t + 1;
	return s->qs_rows + (size_t)j * dim;
}

void db_qsample_record(db_field_state_t *s, const float *vec, uint32_t dim)
{
	if (s == NULL || vec == NULL || dim == 0)
		return;
	pthread_mutex_lock(&s->mu);
	float *row = qs_slot(s, dim);
	if (row)
		memcpy(row, vec, (size_t)dim * sizeof(float));
	pthread_mutex_unlock(&s->mu);
}

/* FLOAT16 little-endian (maybe unaligned) into floats, through a small buffer. */
static void qs_f16_copy(float *dst, const uint8_t *src, uint32_t dim)
{
	uint16_t h[256];
	for (uint32_t i = 0; i < dim; i += 256) {
		uint32_t c = dim - i < 256 ? dim - i : 256;
		memcpy(h, src + 2 * (size_t)i, 2 * (size_t)c);
		quant_f16_to_f32(h, dst + i, c);
	}
}

void db_qsample_record_blob(db_field_state_t *s, const db_field_t *f, const void *blob,
			    size_t len)
{
	bool half = f->vec_type == VELA_VEC_FLOAT16;
	if (s == NULL || blob == NULL || f->dim == 0 || len != (size_t)f->dim * (half ? 2 : 4))
		return;
	pthread_mutex_lock(&s->mu);
	float *row = qs_slot(s, f->dim);
	if (row && half)
		qs_f16_copy(row, blob, f->dim);
	else if (row)
		memcpy(row, blob, len);
	pthread_mutex_unlock(&s->mu);
}

int db_qsample_limit(db_field_state_t *s, uint32_t rows_max)
{
	if (rows_max != 0 && (rows_max < DB_QSAMPLE_ROWS_MIN || rows_max > DB_QSAMPLE_ROWS_MAX))
		return VELA_EINVAL;
	pthread_mutex_lock(&s->mu);
	s->qs_rows_max = rows_max;
	uint32_t cap = db_qsample_cap(rows_max, s->qs_dim);
	if (s->qs_n > cap) /* rows sit at random places: dropping the tail keeps a sample */
		s->qs_n = cap;
	pthread_mutex_unlock(&s->mu);
	return 0;
}

void db_qsample_stats(db_field_state_t *s, uint32_t *rows, uint64_t *seen)
{
	pthread_mutex_lock(&s->mu);
	if (rows)
		*rows = s->qs_n;
	if (seen)
		*seen = s->qs_seen;
	pthread_mutex_unlock(&s->mu);
}

int db_qsample_copy(vela_db_t *db, const db_index_t *ix, uint32_t field, float **out, size_t *m)
{
	*out = NULL;
	*m = 0;
	if (field >= ix->n_fields || ix->fields[field].type != VELA_FIELD_VECTOR ||
	    ix->fields[field].flat == NULL)
		return VELA_ENOTFOUND;
	db_field_state_t *s = db_field_state(db, ix, field, true);
	if (s == NULL)
		return VELA_ENOMEM;
	uint32_t dim = ix->fields[field].dim;
	int rc = 0;
	pthread_mutex_lock(&s->mu);
	if (s->qs_n && s->qs_dim == dim) {
		size_t bytes = vela_mul_size((size_t)s->qs_n * dim, sizeof(float));
		if ((*out = malloc(bytes)) == NULL) {
			rc = VELA_ENOMEM;
		} else {
			memcpy(*out, s->qs_rows, bytes);
			*m = s->qs_n;
		}
	}
	pthread_mutex_unlock(&s->mu);
	return rc;
}

void db_qsample_clear(db_field_state_t *s)
{
	free(s->qs_rows);
	s->qs_rows = NULL;
	s->qs_alloc = s->qs_n = s->qs_dim = 0;
	s->qs_seen = 0;
}

/* ------------------------------------------------------------ files */

/* The whole file image of m rows (malloc'd; *len its size). */
static uint8_t *qs_image(const float *Q, size_t m, uint32_t dim, uint64_t seen, size_t *len)
{
	size_t body = vela_mul_size(m * dim, sizeof(float));
	if (body == SIZE_MAX || body > SIZE_MAX - QS_HDR_BYTES - QS_SUM_BYTES)
		return NULL;
	*len = QS_HDR_BYTES + body + QS_SUM_BYTES;
	uint8_t *buf = malloc(*len);
	if (buf == NULL)
		return NULL;
	uint32_t hdr[4] = {QS_FILE_MAGIC, QS_FILE_VERSION, dim, (uint32_t)m};
	memcpy(buf, hdr, 16);
	memcpy(buf + 16, &seen, 8);
	if (body)
		memcpy(buf + QS_HDR_BYTES, Q, body);
	uint64_t sum = vela_hash64(buf, QS_HDR_BYTES + body);
	memcpy(buf + QS_HDR_BYTES + body, &sum, 8);
	return buf;
}

int db_file_replace(const char *path, const uint8_t *buf, size_t len)
{
	char tmp[PATH_MAX_SNAP + 8];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return VELA_EINVAL;
	FILE *fp = fopen(tmp, "wb");
	int rc = fp && fwrite(buf, 1, len, fp) == len ? 0 : VELA_EIO;
	if (fp && fclose(fp))
		rc = VELA_EIO;
	if (rc == 0 && rename(tmp, path))
		rc = VELA_EIO;
	if (rc)
		remove(tmp);
	return rc;
}

int db_qsample_file_save(const char *path, const float *Q, size_t m, uint32_t dim)
{
	if (path == NULL || dim == 0 || m > DB_QSAMPLE_ROWS_MAX || (m && Q == NULL))
		return VELA_EINVAL;
	size_t len;
	uint8_t *buf = qs_image(Q, m, dim, m, &len);
	if (buf == NULL)
		return VELA_ENOMEM;
	int rc = db_file_replace(path, buf, len);
	free(buf);
	return rc;
}

/* The whole file into *buf (malloc'd). */
static int qs_read(const char *path, uint8_t **buf, size_t *len)
{
	*buf = NULL;
	FILE *fp = fopen(path, "rb");
	if (fp == NULL)
		return errno == ENOENT ? VELA_ENOTFOUND : VELA_EIO;
	off_t n = fseeko(fp, 0, SEEK_END) == 0 ? ftello(fp) : -1;
	int rc = n < 0 || fseeko(fp, 0, SEEK_SET) ? VELA_EIO : 0;
	if (rc == 0 && (uint64_t)n > (uint64_t)SIZE_MAX / 2)
		rc = VELA_ECORRUPT;
	if (rc == 0 && (*buf = malloc(n ? (size_t)n : 1)) == NULL)
		rc = VELA_ENOMEM;
	if (rc == 0 && fread(*buf, 1, (size_t)n, fp) != (size_t)n)
		rc = VELA_EIO;
	fclose(fp);
	if (rc) {
		free(*buf);
		*buf = NULL;
	}
	*len = rc ? 0 : (size_t)n;
	return rc;
}

typedef struct qs_file {
	uint32_t dim, rows;
	uint64_t seen;
	const uint8_t *data; /**< rows * dim floats, inside the read buffer */
} qs_file_t;

/* Check a file image: header, size, checksum, dim, finite rows. */
static int qs_parse(const uint8_t *buf, size_t len, uint32_t want_dim, qs_file_t *f)
{
	uint32_t hdr[4];
	if (len < QS_HDR_BYTES + QS_SUM_BYTES)
		return VELA_ECORRUPT;
	memcpy(hdr, buf, 16);
	memcpy(&f->seen, buf + 16, 8);
	if (hdr[0] != QS_FILE_MAGIC)
		return VELA_ECORRUPT;
	if (hdr[1] > QS_FILE_VERSION)
		return VELA_EVERSION;
	if (hdr[1] != QS_FILE_VERSION || hdr[2] == 0 || hdr[3] > DB_QSAMPLE_ROWS_MAX)
		return VELA_ECORRUPT;
	f->dim = hdr[2];
	f->rows = hdr[3];
	uint64_t body = (uint64_t)f->rows * f->dim * sizeof(float);
	uint64_t sum;
	memcpy(&sum, buf + len - QS_SUM_BYTES, 8);
	if (body != len - QS_HDR_BYTES - QS_SUM_BYTES || sum != vela_hash64(buf, len - 8))
		return VELA_ECORRUPT;
	if (f->dim != want_dim)
		return VELA_EDIM;
	f->data = buf + QS_HDR_BYTES;
	for (size_t i = 0; i < (size_t)f->rows * f->dim; i++) {
		float x;
		memcpy(&x, f->data + 4 * i, 4);
		if (!isfinite(x))
			return VELA_ECORRUPT;
	}
	return 0;
}

int db_qsample_file_load(const char *path, uint32_t dim, float **Q, size_t *m)
{
	*Q = NULL;
	*m = 0;
	uint8_t *buf;
	size_t len;
	qs_file_t f;
	int rc = qs_read(path, &buf, &len);
	if (rc == 0)
		rc = qs_parse(buf, len, dim, &f);
	if (rc == 0 && f.rows) {
		size_t bytes = (size_t)f.rows * f.dim * sizeof(float);
		if ((*Q = malloc(bytes)) == NULL)
			rc = VELA_ENOMEM;
		else
			memcpy(*Q, f.data, bytes);
	}
	*m = rc ? 0 : f.rows;
	free(buf);
	return rc;
}

static void qs_path(const vela_db_t *db, uint32_t ix_id, uint32_t field, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s/qsample-%u-%u.bin", db->dir, ix_id, field);
}

void db_qsample_file_remove(const vela_db_t *db, const db_index_t *ix, uint32_t field)
{
	char path[PATH_MAX_SNAP];
	qs_path(db, ix->id, field, path, sizeof(path));
	unlink(path);
}

int db_qsample_save(vela_db_t *db, const db_index_t *ix, db_field_state_t *s)
{
	size_t len = 0;
	uint8_t *buf = NULL;
	bool empty;
	/* The image is taken under mu (one copy); the write happens outside it. */
	pthread_mutex_lock(&s->mu);
	empty = s->qs_n == 0;
	if (!empty)
		buf = qs_image(s->qs_rows, s->qs_n, s->qs_dim, s->qs_seen, &len);
	pthread_mutex_unlock(&s->mu);
	if (empty)
		return 0;
	if (buf == NULL)
		return VELA_ENOMEM;
	char path[PATH_MAX_SNAP];
	qs_path(db, ix->id, s->field, path, sizeof(path));
	int rc = db_file_replace(path, buf, len);
	free(buf);
	return rc;
}

void db_qsample_load(vela_db_t *db, const db_index_t *ix, db_field_state_t *s)
{
	char path[PATH_MAX_SNAP];
	qs_path(db, ix->id, s->field, path, sizeof(path));
	uint32_t dim = ix->fields[s->field].dim;
	uint8_t *buf;
	size_t len;
	qs_file_t f;
	int rc = qs_read(path, &buf, &len);
	if (rc == VELA_ENOTFOUND)
		return;
	if (rc == 0)
		rc = qs_parse(buf, len, dim, &f);
	uint32_t cap = db_qsample_cap(s->qs_rows_max, dim);
	uint32_t n = rc == 0 && f.rows < cap ? f.rows : cap;
	if (rc == 0 && n) {
		qs_reset(s, dim);
		rc = qs_grow(s, n, cap);
	}
	if (rc) {
		vela_warn("query sample %s: %s; ignored", path, vela_strerror(rc));
		qs_reset(s, 0);
		free(buf);
		return;
	}
	if (n) {
		memcpy(s->qs_rows, f.data, (size_t)n * dim * sizeof(float));
		s->qs_n = n;
		s->qs_seen = f.seen > n ? f.seen : n;
		s->qs_rng = qs_seed(s, s->qs_seen);
	}
	free(buf);
}
