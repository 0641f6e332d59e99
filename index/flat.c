/* FLAT index: storage, single-query scan, range search. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "index/flat_impl.h"

/* ------------------------------------------------ lifecycle */

int flat_create(uint32_t dim, vela_metric_t metric, vela_vec_type_t type, flat_index_t **out)
{
	if (out == NULL)
		return VELA_EINVAL;
	*out = NULL;
	if (dim < VELA_DIM_MIN || dim > VELA_DIM_MAX)
		return VELA_EDIM;
	quant_dist_fn dist = quant_distance_fn(metric, type);
	if (dist == NULL)
		return VELA_EINVAL;
	flat_index_t *f = calloc(1, sizeof(*f));
	if (f == NULL || (f->docids = roaring_bitmap_create()) == NULL) {
		free(f);
		return VELA_ENOMEM;
	}
	f->dim = dim;
	f->metric = metric;
	f->type = type;
	f->esize = type == VELA_VEC_FLOAT16 ? 2 : 4;
	/* Pad rows to whole cache lines when that costs at most 1/8 of the
	 * row: aligned rows never split a SIMD load across two lines. Short
	 * rows stay packed; the padding would dominate them. */
	size_t bytes = (size_t)dim * f->esize;
	f->stride = bytes >= 512 ? ((bytes + 63) & ~(size_t)63) / f->esize : dim;
	f->db_block = FLAT_BATCH_DB_BLOCK_DEFAULT;
	f->q_block = FLAT_BATCH_Q_BLOCK_DEFAULT;
	f->dist = dist;
	f->uid = index_backend_uid_new();
	*out = f;
	return 0;
}

void flat_destroy(flat_index_t *f)
{
	if (f == NULL)
		return;
	index_backend_forget(f->uid);
	roaring_bitmap_free(f->docids);
	free(f->data);
	free(f->norms);
	free(f->live);
	free(f);
}

uint64_t flat_count(const flat_index_t *f)
{
	return f ? roaring_bitmap_get_cardinality(f->docids) : 0;
}

uint32_t flat_dim(const flat_index_t *f)
{
	return f->dim;
}

vela_metric_t flat_metric(const flat_index_t *f)
{
	return f->metric;
}

vela_vec_type_t flat_type(const flat_index_t *f)
{
	return f->type;
}

const roaring_bitmap_t *flat_docids(const flat_index_t *f)
{
	return f ? f->docids : NULL;
}

size_t flat_memory(const flat_index_t *f)
{
	if (f == NULL)
		return 0;
	size_t rows = f->ids_only ? 0 : f->cap * (f->stride * f->esize + sizeof(float));
	return sizeof(*f) + rows + f->cap / 8 + roaring_bitmap_size_in_bytes(f->docids);
}

void flat_rows_release(flat_index_t *f)
{
	if (f == NULL || f->ids_only)
		return;
	index_backend_forget(f->uid); /* a GPU copy of the rows goes too */
	free(f->data);
	free(f->norms);
	f->data = NULL;
	f->norms = NULL;
	f->ids_only = true;
	f->generation++;
}

bool flat_has_rows(const flat_index_t *f)
{
	return f && !f->ids_only;
}

void flat_rows(const flat_index_t *f, index_rows_t *out)
{
	*out = (index_rows_t){
		.data = f->data, /* ids only: NULL with n 0 (no rows to read) */
		.type = f->type,
		.metric = f->metric,
		.dim = f->dim,
		.stride = f->stride,
		.n = f->ids_only ? 0 : f->end,
		.live = f->ids_only ? NULL : f->live,
		.norms = f->norms,
		.norm_max = f->norm_max,
		.uid = f->uid,
		.generation = f->generation,
		.db_block = f->db_block,
		.q_block = f->q_block,
	};
}

int flat_batch_blocks_set(flat_index_t *f, uint32_t db_rows, uint32_t q_rows)
{
	if (f == NULL || db_rows < FLAT_BATCH_DB_BLOCK_MIN || db_rows > FLAT_BATCH_DB_BLOCK_MAX ||
	    q_rows < FLAT_BATCH_Q_BLOCK_MIN || q_rows > FLAT_BATCH_Q_BLOCK_MAX)
		return VELA_EINVAL;
	f->db_block = (db_rows + 63) & ~63u;
	f->q_block = q_rows;
	return 0;
}

/* ------------------------------------------------ writes */

/* Grow the arrays to hold row `docid`: doubling keeps appends amortised
 * O(1); new rows are zero so GEMM over absent rows stays finite. */
static int flat_grow(flat_index_t *f, uint64_t docid)
{
	uint64_t cap = f->cap ? f->cap * 2 : FLAT_CAPACITY_INITIAL;
	if (cap < docid + 1)
		cap = (docid + 64) & ~(uint64_t)63;
	size_t row = f->stride * f->esize;
	bool rows = !f->ids_only;
	uint8_t *data = rows ? vela_aligned_alloc(64, vela_mul_size(cap, row)) : NULL;
	float *norms = rows ? calloc(cap, sizeof(float)) : NULL;
	uint64_t *live = calloc(cap / 64, sizeof(uint64_t));
	if ((rows && (data == NULL || norms == NULL)) || live == NULL) {
		free(data);
		free(norms);
		free(live);
		return VELA_ENOMEM;
	}
	if (f->cap && rows) {
		memcpy(data, f->data, f->cap * row);
		memcpy(norms, f->norms, f->cap * sizeof(float));
	}
	if (f->cap)
		memcpy(live, f->live, f->cap / 8);
	if (rows)
		memset(data + f->cap * row, 0, (cap - f->cap) * row);
	free(f->data);
	free(f->norms);
	free(f->live);
	f->data = data;
	f->norms = norms;
	f->live = live;
	f->cap = cap;
	return 0;
}

/* Check `vec` and write its stored form into `row` (dim elements). For
 * F16 the norm is that of the rounded halves: the GEMM path sees those. */
static int flat_encode(const flat_index_t *f, const float *vec, void *row, double *norm_sq)
{
	double s = 0;
	if (f->type == VELA_VEC_FLOAT16) {
		uint16_t *h = row;
		quant_f32_to_f16(vec, h, f->dim);
		for (uint32_t i = 0; i < f->dim; i++) {
			if ((h[i] & 0x7c00) == 0x7c00) /* inf or NaN */
				return VELA_EINVAL;
			double v = quant_f16_to_f32_one(h[i]);
			s += v * v;
		}
	} else {
		for (uint32_t i = 0; i < f->dim; i++) {
			if (!isfinite(vec[i]))
				return VELA_EINVAL;
			s += (double)vec[i] * vec[i];
		}
		memcpy(row, vec, (size_t)f->dim * sizeof(float));
	}
	*norm_sq = s;
	return s <= FLAT_NORM_SQ_MAX ? 0 : VELA_EINVAL;
}

int flat_set(flat_index_t *f, uint32_t docid, const float *vec)
{
	if (f == NULL || vec == NULL || docid > FLAT_DOCID_MAX)
		return VELA_EINVAL;
	/* Encode into a scratch row first so a bad vector leaves the index
	 * untouched. */
	void *tmp = malloc((size_t)f->dim * f->esize);
	if (tmp == NULL)
		return VELA_ENOMEM;
	double n2;
	int rc = flat_encode(f, vec, tmp, &n2);
	if (rc == 0 && docid >= f->cap)
		rc = flat_grow(f, docid);
	if (rc == 0 && !f->ids_only) {
		memcpy((uint8_t *)flat_row(f, docid), tmp, (size_t)f->dim * f->esize);
		f->norms[docid] = (float)n2;
		if (f->norms[docid] > f->norm_max)
			f->norm_max = f->norms[docid];
	}
	if (rc == 0) {
		f->count += !flat_live_has(f, docid);
		f->generation++;
		f->live[docid >> 6] |= 1ull << (docid & 63);
		roaring_bitmap_add(f->docids, docid);
		if (docid >= f->end)
			f->end = (uint64_t)docid + 1;
	}
	free(tmp);
	return rc;
}

int flat_remove(flat_index_t *f, uint32_t docid)
{
	if (f == NULL)
		return VELA_EINVAL;
	if (!flat_live_has(f, docid))
		return VELA_ENOTFOUND;
	f->live[docid >> 6] &= ~(1ull << (docid & 63));
	roaring_bitmap_remove(f->docids, docid);
	f->count--;
	f->generation++;
	/* Zero the row: GEMM blocks read absent rows too and must see finite
	 * values, and a removed vector should not linger in memory. */
	if (!f->ids_only) {
		memset((uint8_t *)flat_row(f, docid), 0, (size_t)f->dim * f->esize);
		f->norms[docid] = 0;
	}
	return 0;
}

int flat_get(const flat_index_t *f, uint32_t docid, float *out)
{
	if (f == NULL || out == NULL)
		return VELA_EINVAL;
	if (!flat_live_has(f, docid))
		return VELA_ENOTFOUND;
	if (f->ids_only)
		return VELA_EUNSUPPORTED;
	if (f->type == VELA_VEC_FLOAT16)
		quant_f16_to_f32(flat_row(f, docid), out, f->dim);
	else
		memcpy(out, flat_row(f, docid), (size_t)f->dim * sizeof(float));
	return 0;
}

/* ------------------------------------------------ shared helpers */

int flat_query_check(const flat_index_t *f, const float *q, float *norm_sq)
{
	if (f->ids_only)
		return VELA_EUNSUPPORTED;
	double s = 0;
	for (uint32_t i = 0; i < f->dim; i++) {
		if (!isfinite(q[i]))
			return VELA_EINVAL;
		s += (double)q[i] * q[i];
	}
	if (s > FLAT_NORM_SQ_MAX)
		return VELA_EINVAL;
	*norm_sq = (float)s;
	return 0;
}

bool flat_filter_is_sparse(const flat_index_t *f, const roaring_bitmap_t *filter)
{
	return filter != NULL &&
	       roaring_bitmap_get_cardinality(filter) * FLAT_FILTER_ITERATE_RATIO <= f->count;
}

void flat_mask_words(const flat_index_t *f, roaring_uint32_iterator_t *it, uint64_t w0,
		     uint64_t nw, uint64_t *mask)
{
	memcpy(mask, f->live + w0, nw * sizeof(uint64_t));
	if (it == NULL)
		return;
	uint64_t lo = w0 * 64, hi = (w0 + nw) * 64;
	if (it->has_value && it->current_value < lo)
		roaring_move_uint32_iterator_equalorlarger(it, (uint32_t)lo);
	uint64_t *bits = mask + nw; /* caller gives 2 * nw words */
	memset(bits, 0, nw * sizeof(uint64_t));
	while (it->has_value && it->current_value < hi) {
		uint64_t r = it->current_value - lo;
		bits[r >> 6] |= 1ull << (r & 63);
		roaring_advance_uint32_iterator(it);
	}
	for (uint64_t i = 0; i < nw; i++)
		mask[i] &= bits[i];
}


/* ------------------------------------------------ candidate cursor */

/* Yields present docids (within the filter) in ascending order, either by
 * walking the presence bitset a block of words at a time (dense filters)
 * or by walking the filter and testing presence (sparse filters). */
#define FLAT_CURSOR_WORDS 64u

typedef struct {
	const flat_index_t *f;
	bool iterate_filter;
	bool filtered;
	roaring_uint32_iterator_t it;
	uint64_t word, nwords;
	uint64_t mask[2 * FLAT_CURSOR_WORDS];
} flat_cursor_t;

static void flat_cursor_init(flat_cursor_t *c, const flat_index_t *f,
			     const roaring_bitmap_t *filter)
{
	c->f = f;
	c->filtered = filter != NULL;
	c->iterate_filter = flat_filter_is_sparse(f, filter);
	if (filter)
		roaring_init_iterator(filter, &c->it);
	c->word = 0;
	c->nwords = (f->end + 63) / 64;
}

/* Up to `cap` docids into ids (cap >= 64 * FLAT_CURSOR_WORDS); 0 at the end. */
static size_t flat_cursor_next(flat_cursor_t *c, uint32_t *ids, size_t cap)
{
	size_t n = 0;
	if (c->iterate_filter) {
		while (n == 0 && c->it.has_value) {
			uint32_t got = roaring_read_uint32_iterator(&c->it, ids, (uint32_t)cap);
			for (uint32_t i = 0; i < got; i++)
				if (flat_live_has(c->f, ids[i]))
					ids[n++] = ids[i];
		}
		return n;
	}
	while (n == 0 && c->word < c->nwords) {
		uint64_t nw = c->nwords - c->word;
		if (nw > FLAT_CURSOR_WORDS)
			nw = FLAT_CURSOR_WORDS;
		flat_mask_words(c->f, c->filtered ? &c->it : NULL, c->word, nw, c->mask);
		for (uint64_t w = 0; w < nw; w++)
			for (uint64_t m = c->mask[w]; m; m &= m - 1)
				ids[n++] = (uint32_t)((c->word + w) * 64 + (uint64_t)__builtin_ctzll(m));
		c->word += nw;
	}
	return n;
}

#define FLAT_CURSOR_IDS (64u * FLAT_CURSOR_WORDS)

/* ------------------------------------------------ search */

void flat_search_scan(const flat_index_t *f, const float *q, uint32_t k,
		      const roaring_bitmap_t *filter, vela_hit_t *out, uint32_t *n_out)
{
	flat_cursor_t c;
	uint32_t ids[FLAT_CURSOR_IDS], size = 0;
	size_t n;
	flat_cursor_init(&c, f, filter);
	while ((n = flat_cursor_next(&c, ids, FLAT_CURSOR_IDS)) > 0)
		for (size_t i = 0; i < n; i++) {
			vela_hit_t h = {f->dist(q, flat_row(f, ids[i]), f->dim), ids[i]};
			flat_heap_push(out, &size, k, h);
		}
	flat_hits_sort(out, size);
	*n_out = size;
}

int flat_search(const flat_index_t *f, const float *q, uint32_t k,
		const roaring_bitmap_t *filter, vela_hit_t *out, uint32_t *n_out)
{
	float qn;
	if (f == NULL || q == NULL || n_out == NULL || (k > 0 && out == NULL) || k > VELA_K_MAX)
		return VELA_EINVAL;
	*n_out = 0;
	int rc = flat_query_check(f, q, &qn);
	if (rc != 0 || k == 0)
		return rc;
	flat_search_scan(f, q, k, filter, out, n_out);
	return 0;
}

int flat_range(const flat_index_t *f, const float *q, float radius,
	       const roaring_bitmap_t *filter, vela_hit_t **out, size_t *n_out)
{
	float qn;
	if (f == NULL || q == NULL || out == NULL || n_out == NULL || isnan(radius))
		return VELA_EINVAL;
	*out = NULL;
	*n_out = 0;
	int rc = flat_query_check(f, q, &qn);
	if (rc != 0)
		return rc;
	flat_cursor_t c;
	uint32_t ids[FLAT_CURSOR_IDS];
	vela_hit_t *hits = NULL;
	size_t n, len = 0, cap = 0;
	flat_cursor_init(&c, f, filter);
	while ((n = flat_cursor_next(&c, ids, FLAT_CURSOR_IDS)) > 0)
		for (size_t i = 0; i < n; i++) {
			float d = f->dist(q, flat_row(f, ids[i]), f->dim);
			if (!(d <= radius))
				continue;
			if (len == cap) {
				size_t ncap = cap ? cap * 2 : 64;
				vela_hit_t *nh = realloc(hits, ncap * sizeof(*nh));
				if (nh == NULL) {
					free(hits);
					return VELA_ENOMEM;
				}
				hits = nh;
				cap = ncap;
			}
			hits[len++] = (vela_hit_t){d, ids[i]};
		}
	flat_hits_sort(hits, len);
	*out = hits;
	*n_out = len;
	return 0;
}
