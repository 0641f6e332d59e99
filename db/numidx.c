/* The in-memory numeric range index of a NUMERIC field (db.h "numeric
 * range index"): equi-depth buckets over the order-preserving encoding of
 * the values (storage_num_encode read big-endian, the order of the SP_NUM
 * posting keys). Each bucket keeps its (value, docid) entries sorted and a
 * roaring bitmap of their docids; a range is the OR of the buckets it
 * covers whole plus the matching entries of its (at most two) edge
 * buckets, or, when it covers most of the field, the field's docids less
 * the rest (each document holds one value of a field, so the buckets
 * partition them). Redis keeps its numeric ranges in memory for the same
 * reason: a wide range read from LMDB costs milliseconds per query.
 *
 * Built at a field's first numeric filter by one ordered scan of its
 * postings in the search's read transaction; kept current by the
 * DC_NUM_ADD / DC_NUM_REMOVE changes applied after each commit. */
#include <stdlib.h>
#include <string.h>

#include "db/search_int.h"

typedef struct nbucket {
	uint64_t lo;  /* the smallest value it may hold (bucket 0: 0) */
	uint64_t *val; /* n encoded values, entries ascending by (val, id) */
	uint32_t *id;
	uint32_t n, cap;
	roaring_bitmap_t *bm; /* the docids of its entries */
} nbucket_t;

struct db_numidx {
	nbucket_t *b; /* n buckets by lo; bucket i holds [b[i].lo, b[i + 1].lo) */
	uint32_t n, cap;
	uint32_t rows;  /* target rows per bucket (split past twice as many) */
	uint64_t count; /* entries */
	/* The docids holding a value; NULL once a docid held two values of
	 * the field (never expected): then ranges are not complemented. */
	roaring_bitmap_t *all;
};

/* Builds of any field wait on one mutex: a build happens once per field
 * and database life, and concurrent searches must not build twice. */
static pthread_mutex_t build_mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic uint32_t bucket_rows = DB_NUMIDX_BUCKET_ROWS_DEFAULT;

int db_numidx_bucket_rows(uint32_t rows)
{
	if (rows < DB_NUMIDX_BUCKET_ROWS_MIN || rows > DB_NUMIDX_BUCKET_ROWS_MAX)
		return VELA_EINVAL;
	bucket_rows = rows;
	return VELA_OK;
}

/* ------------------------------------------------------------ buckets */

static void bucket_free(nbucket_t *b)
{
	free(b->val);
	free(b->id);
	if (b->bm)
		roaring_bitmap_free(b->bm);
}

void db_numidx_free(db_numidx_t *ni)
{
	if (ni == NULL)
		return;
	for (uint32_t i = 0; i < ni->n; i++)
		bucket_free(&ni->b[i]);
	free(ni->b);
	if (ni->all)
		roaring_bitmap_free(ni->all);
	free(ni);
}

static int bucket_reserve(nbucket_t *b, uint32_t need)
{
	if (need <= b->cap)
		return VELA_OK;
	uint32_t cap = b->cap ? b->cap : 64;
	while (cap < need)
		cap *= 2;
	uint64_t *v = realloc(b->val, (size_t)cap * sizeof(*v));
	if (v)
		b->val = v;
	uint32_t *d = v ? realloc(b->id, (size_t)cap * sizeof(*d)) : NULL;
	if (d == NULL)
		return VELA_ENOMEM;
	b->id = d;
	b->cap = cap;
	return VELA_OK;
}

/* Make room for one more bucket at position i (its fields zeroed). */
static int buckets_open(db_numidx_t *ni, uint32_t i)
{
	if (ni->n == ni->cap) {
		uint32_t cap = ni->cap ? 2 * ni->cap : 16;
		nbucket_t *b = realloc(ni->b, (size_t)cap * sizeof(*b));
		if (b == NULL)
			return VELA_ENOMEM;
		ni->b = b;
		ni->cap = cap;
	}
	memmove(&ni->b[i + 1], &ni->b[i], (ni->n - i) * sizeof(*ni->b));
	memset(&ni->b[i], 0, sizeof(*ni->b));
	ni->n++;
	return VELA_OK;
}

/* The bucket holding value v: the last whose lo <= v (b[0].lo is 0). */
static uint32_t bucket_find(const db_numidx_t *ni, uint64_t v)
{
	uint32_t lo = 0, hi = ni->n;
	while (hi - lo > 1) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (ni->b[mid].lo <= v)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

/* First entry >= (v, id) (id 0: the first entry of value v). */
static uint32_t entry_lower(const nbucket_t *b, uint64_t v, uint32_t id)
{
	uint32_t lo = 0, hi = b->n;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (b->val[mid] < v || (b->val[mid] == v && b->id[mid] < id))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* First entry whose value is > v. */
static uint32_t entry_upper(const nbucket_t *b, uint64_t v)
{
	uint32_t lo = 0, hi = b->n;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (b->val[mid] <= v)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* (Re)make b's bitmap from its entries (ids unsorted: add_many copes). */
static int bucket_bitmap(nbucket_t *b)
{
	roaring_bitmap_t *bm = roaring_bitmap_create();
	if (bm == NULL)
		return VELA_ENOMEM;
	roaring_bitmap_add_many(bm, b->n, b->id);
	roaring_bitmap_shrink_to_fit(bm);
	if (b->bm)
		roaring_bitmap_free(b->bm);
	b->bm = bm;
	return VELA_OK;
}

/* Split bucket i at its median value: local, no other bucket moves. The
 * entries of one value stay together, so a bucket of one value cannot
 * split (it matches a range whole or not at all). */
static int bucket_split(db_numidx_t *ni, uint32_t i)
{
	nbucket_t *b = &ni->b[i];
	uint64_t v = b->val[b->n / 2];
	uint32_t s = entry_lower(b, v, 0);
	if (s == 0)
		s = entry_upper(b, v);
	if (s == 0 || s == b->n)
		return VELA_OK;
	if (buckets_open(ni, i + 1))
		return VELA_ENOMEM;
	b = &ni->b[i]; /* the array may have moved */
	nbucket_t *nb = &ni->b[i + 1];
	int rc = bucket_reserve(nb, b->n - s);
	if (rc == 0) {
		nb->n = b->n - s;
		nb->lo = b->val[s];
		memcpy(nb->val, b->val + s, nb->n * sizeof(*nb->val));
		memcpy(nb->id, b->id + s, nb->n * sizeof(*nb->id));
		rc = bucket_bitmap(nb);
	}
	if (rc == 0) {
		uint32_t old_n = b->n;
		b->n = s;
		if ((rc = bucket_bitmap(b)) != 0)
			b->n = old_n;
	}
	if (rc) { /* undo: drop the new bucket */
		bucket_free(nb);
		memmove(nb, nb + 1, (ni->n - i - 2) * sizeof(*nb));
		ni->n--;
	}
	return rc;
}

/* Fold bucket i + 1 into bucket i (value ranges adjacent, so the entries
 * stay sorted by appending). */
static int bucket_merge(db_numidx_t *ni, uint32_t i)
{
	nbucket_t *a = &ni->b[i], *c = &ni->b[i + 1];
	int rc = bucket_reserve(a, a->n + c->n);
	if (rc)
		return rc;
	memcpy(a->val + a->n, c->val, c->n * sizeof(*a->val));
	memcpy(a->id + a->n, c->id, c->n * sizeof(*a->id));
	a->n += c->n;
	roaring_bitmap_or_inplace(a->bm, c->bm);
	bucket_free(c);
	memmove(c, c + 1, (ni->n - i - 2) * sizeof(*c));
	ni->n--;
	return VELA_OK;
}

/* ------------------------------------------------------------ changes */

static int numidx_insert(db_numidx_t *ni, uint64_t v, uint32_t id)
{
	uint32_t i = bucket_find(ni, v);
	nbucket_t *b = &ni->b[i];
	uint32_t p = entry_lower(b, v, id);
	if (p < b->n && b->val[p] == v && b->id[p] == id)
		return VELA_OK; /* already there (postings are a set) */
	int rc = bucket_reserve(b, b->n + 1);
	if (rc)
		return rc;
	memmove(b->val + p + 1, b->val + p, (b->n - p) * sizeof(*b->val));
	memmove(b->id + p + 1, b->id + p, (b->n - p) * sizeof(*b->id));
	b->val[p] = v;
	b->id[p] = id;
	b->n++;
	ni->count++;
	roaring_bitmap_add(b->bm, id);
	if (ni->all && !roaring_bitmap_add_checked(ni->all, id)) {
		roaring_bitmap_free(ni->all); /* a second value: stop complementing */
		ni->all = NULL;
	}
	if (b->n > 2 * ni->rows)
		bucket_split(ni, i); /* best effort: a failed split undoes itself */
	return VELA_OK;
}

static bool bucket_has_id(const nbucket_t *b, uint32_t id)
{
	for (uint32_t k = 0; k < b->n; k++)
		if (b->id[k] == id)
			return true;
	return false;
}

static int numidx_erase(db_numidx_t *ni, uint64_t v, uint32_t id)
{
	uint32_t i = bucket_find(ni, v);
	nbucket_t *b = &ni->b[i];
	uint32_t p = entry_lower(b, v, id);
	if (p == b->n || b->val[p] != v || b->id[p] != id)
		return VELA_OK; /* never indexed (postings_apply removes blindly) */
	memmove(b->val + p, b->val + p + 1, (b->n - p - 1) * sizeof(*b->val));
	memmove(b->id + p, b->id + p + 1, (b->n - p - 1) * sizeof(*b->id));
	b->n--;
	ni->count--;
	/* Without `all`, a docid may hold another value in this bucket. */
	if (ni->all || !bucket_has_id(b, id))
		roaring_bitmap_remove(b->bm, id);
	if (ni->all)
		roaring_bitmap_remove(ni->all, id);
	/* Keep buckets from thinning out under deletes: fold a small one into
	 * its smaller neighbour when the two fit in one (an empty one always). */
	if (ni->n == 1 || b->n >= ni->rows / 4)
		return VELA_OK;
	uint32_t left = i > 0 ? ni->b[i - 1].n : UINT32_MAX;
	uint32_t right = i + 1 < ni->n ? ni->b[i + 1].n : UINT32_MAX;
	if (b->n && (left <= right ? left : right) + b->n > ni->rows)
		return VELA_OK;
	/* The right one of the pair folds into the left, which keeps its lo
	 * (best effort: a failed merge changes nothing). */
	bucket_merge(ni, left <= right ? i - 1 : i);
	return VELA_OK;
}

int db_numidx_apply(db_field_t *f, uint32_t docid, uint64_t v, bool add)
{
	db_numidx_t *ni = f->num;
	if (ni == NULL)
		return VELA_OK; /* not built: the lazy build will read LMDB */
	int rc = add ? numidx_insert(ni, v, docid) : numidx_erase(ni, v, docid);
	if (rc) { /* out of step with LMDB now: drop it, the next filter rebuilds */
		__atomic_store_n(&f->num, NULL, __ATOMIC_RELEASE);
		db_numidx_free(ni);
	}
	return rc;
}

/* ------------------------------------------------------------ build */

typedef struct build_ctx {
	db_numidx_t *ni;
	bool have_last;
	uint64_t last;
} build_ctx_t;

/* Postings come in (value, docid) order: fill buckets to `rows` entries,
 * starting the next one only where the value changes. */
static int build_entry(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
		       size_t vlen)
{
	build_ctx_t *c = ctx;
	db_numidx_t *ni = c->ni;
	if (klen != 15 || vlen != 4)
		return VELA_ECORRUPT;
	uint64_t v = vela_get_be64(key + 7);
	nbucket_t *b = &ni->b[ni->n - 1];
	if (c->have_last && v != c->last && b->n >= ni->rows) {
		if (buckets_open(ni, ni->n))
			return VELA_ENOMEM;
		b = &ni->b[ni->n - 1];
		b->lo = v;
	}
	if (bucket_reserve(b, b->n + 1))
		return VELA_ENOMEM;
	b->val[b->n] = v;
	b->id[b->n++] = vela_get_be32(val);
	c->have_last = true;
	c->last = v;
	ni->count++;
	return 0;
}

static int numidx_build(storage_txn_t *txn, const db_index_t *ix, uint32_t field,
			db_numidx_t **out)
{
	db_numidx_t *ni = calloc(1, sizeof(*ni));
	if (ni == NULL)
		return VELA_ENOMEM;
	ni->rows = bucket_rows;
	build_ctx_t c = {.ni = ni};
	uint8_t prefix[8];
	size_t pl = storage_posting_key(prefix, ix->id, (uint16_t)field, SP_NUM, NULL, 0);
	int rc = buckets_open(ni, 0);
	if (rc == 0)
		rc = storage_scan_prefix(txn, ST_POSTINGS, prefix, pl, build_entry, &c);
	if (rc == 0 && (ni->all = roaring_bitmap_create()) == NULL)
		rc = VELA_ENOMEM;
	for (uint32_t i = 0; rc == 0 && i < ni->n; i++) {
		if ((rc = bucket_bitmap(&ni->b[i])) == 0)
			roaring_bitmap_or_inplace(ni->all, ni->b[i].bm);
	}
	if (rc == 0 && roaring_bitmap_get_cardinality(ni->all) != ni->count) {
		roaring_bitmap_free(ni->all);
		ni->all = NULL;
	}
	if (rc) {
		db_numidx_free(ni);
		return rc;
	}
	*out = ni;
	return VELA_OK;
}

/* The field's index, built now when it is not yet (db->lock held shared:
 * no change is applied meanwhile, so txn's snapshot is the index's). */
static int numidx_get(storage_txn_t *txn, const db_index_t *ix, uint32_t field,
		      db_numidx_t **out)
{
	db_field_t *f = &ix->fields[field];
	db_numidx_t *ni = __atomic_load_n(&f->num, __ATOMIC_ACQUIRE);
	int rc = VELA_OK;
	if (ni == NULL) {
		pthread_mutex_lock(&build_mu);
		ni = __atomic_load_n(&f->num, __ATOMIC_ACQUIRE);
		if (ni == NULL && (rc = numidx_build(txn, ix, field, &ni)) == 0)
			__atomic_store_n(&f->num, ni, __ATOMIC_RELEASE);
		pthread_mutex_unlock(&build_mu);
	}
	*out = ni;
	return rc;
}

/* ------------------------------------------------------------ ranges */

/* Where a range meets bucket b: its matching entries [a, e). */
static void edge_of(const nbucket_t *b, uint64_t lo, uint64_t hi, uint32_t *a, uint32_t *e)
{
	*a = entry_lower(b, lo, 0);
	*e = entry_upper(b, hi);
	if (*e < *a)
		*e = *a;
}

/* A growing list of bitmaps to OR, and loose docids to add. */
typedef struct gather {
	const roaring_bitmap_t **bm;
	size_t n;
	uint32_t *ids;
	size_t n_ids;
} gather_t;

static void gather_ids(gather_t *g, const uint32_t *ids, uint32_t n)
{
	memcpy(g->ids + g->n_ids, ids, n * sizeof(*ids));
	g->n_ids += n;
}

/* LSD radix sort of n docids, 11 bits a pass, only as many passes as the
 * largest docid needs (tmp: n slots). Edge docids come in value order:
 * added unsorted, each would shift a roaring array container (measured:
 * twice the cost of the LMDB read for a 2.5% range on 200k documents).
 * db/search.c sorts the docids of postings read from LMDB with it too. */
void db_docids_sort(uint32_t *v, uint32_t *tmp, size_t n)
{
	uint32_t max = 0;
	for (size_t i = 0; i < n; i++)
		max = v[i] > max ? v[i] : max;
	for (int shift = 0; shift < 32 && (max >> shift); shift += 11) {
		uint32_t cnt[2049] = {0};
		for (size_t i = 0; i < n; i++)
			cnt[((v[i] >> shift) & 2047) + 1]++;
		for (int b = 0; b < 2048; b++)
			cnt[b + 1] += cnt[b];
		for (size_t i = 0; i < n; i++)
			tmp[cnt[(v[i] >> shift) & 2047]++] = v[i];
		memcpy(v, tmp, n * sizeof(*v));
	}
}

/* OR what g gathered into a new bitmap. */
static roaring_bitmap_t *gather_union(const gather_t *g)
{
	uint32_t *tmp = g->n_ids > 1 ? malloc(g->n_ids * sizeof(*tmp)) : NULL;
	if (g->n_ids > 1 && tmp == NULL)
		return NULL;
	roaring_bitmap_t *u = g->n ? roaring_bitmap_or_many(g->n, g->bm) : roaring_bitmap_create();
	if (u && g->n_ids) {
		if (tmp)
			db_docids_sort(g->ids, tmp, g->n_ids);
		roaring_bitmap_add_many(u, g->n_ids, g->ids);
	}
	free(tmp);
	return u;
}

/* Edge bucket b, matching [a, e): gather its matching part (in) or the
 * rest (!in). */
static void gather_edge(gather_t *g, const nbucket_t *b, uint32_t a, uint32_t e, bool in)
{
	if (in && e - a == b->n)
		g->bm[g->n++] = b->bm;
	else if (in)
		gather_ids(g, b->id + a, e - a);
	else if (e == a)
		g->bm[g->n++] = b->bm;
	else {
		gather_ids(g, b->id, a);
		gather_ids(g, b->id + e, b->n - e);
	}
}

static int numidx_range(const db_numidx_t *ni, uint64_t lo, uint64_t hi, roaring_bitmap_t *out)
{
	uint32_t i0 = bucket_find(ni, lo), i1 = bucket_find(ni, hi);
	uint64_t inside = 0;
	for (uint32_t i = i0 + 1; i < i1; i++)
		inside += ni->b[i].n;
	/* Most of the field: its docids less those outside the range. */
	bool compl = ni->all && 2 * inside > ni->count;
	uint32_t a0, e0, a1, e1;
	edge_of(&ni->b[i0], lo, hi, &a0, &e0);
	edge_of(&ni->b[i1], lo, hi, &a1, &e1);
	uint32_t edge_rows = ni->b[i0].n + (i1 != i0 ? ni->b[i1].n : 0);
	gather_t g = {.bm = malloc((ni->n + 1) * sizeof(*g.bm)),
		      .ids = malloc(((size_t)edge_rows + 1) * sizeof(uint32_t))};
	int rc = g.bm && g.ids ? VELA_OK : VELA_ENOMEM;
	if (rc == 0 && compl) {
		for (uint32_t i = 0; i < ni->n; i++)
			if (i < i0 || i > i1)
				g.bm[g.n++] = ni->b[i].bm;
	} else if (rc == 0) {
		for (uint32_t i = i0 + 1; i < i1; i++)
			g.bm[g.n++] = ni->b[i].bm;
	}
	if (rc == 0) {
		gather_edge(&g, &ni->b[i0], a0, e0, !compl);
		if (i1 != i0)
			gather_edge(&g, &ni->b[i1], a1, e1, !compl);
	}
	roaring_bitmap_t *u = rc ? NULL : gather_union(&g);
	rc = rc ? rc : u ? VELA_OK : VELA_ENOMEM;
	if (rc == 0 && compl) {
		roaring_bitmap_t *r = roaring_bitmap_copy(ni->all);
		if (r)
			roaring_bitmap_andnot_inplace(r, u);
		roaring_bitmap_free(u);
		u = r;
		rc = u ? VELA_OK : VELA_ENOMEM;
	}
	if (rc == 0) {
		roaring_bitmap_or_inplace(out, u);
		roaring_bitmap_free(u);
	}
	free(g.bm);
	free(g.ids);
	return rc;
}

int db_numidx_range(storage_txn_t *txn, const db_index_t *ix, uint32_t field, uint64_t elo,
		    uint64_t ehi, roaring_bitmap_t *out)
{
	db_numidx_t *ni = NULL;
	if (field >= ix->n_fields || ix->fields[field].type != VELA_FIELD_NUMERIC)
		return VELA_EINVAL;
	if (elo > ehi)
		return VELA_OK;
	int rc = numidx_get(txn, ix, field, &ni);
	return rc ? rc : numidx_range(ni, elo, ehi, out);
}

int db_num_filter(storage_txn_t *txn, const db_index_t *ix, uint32_t field, uint64_t elo,
		  uint64_t ehi, roaring_bitmap_t *out)
{
	if (db_numidx_range(txn, ix, field, elo, ehi, out) == 0)
		return VELA_OK;
	return db_num_read(txn, ix, field, elo, ehi, out); /* out of memory: read LMDB */
}

/* ------------------------------------------------------------ figures */

void db_numidx_stats(const db_field_t *f, db_numidx_stats_t *out)
{
	memset(out, 0, sizeof(*out));
	const db_numidx_t *ni = __atomic_load_n(&f->num, __ATOMIC_ACQUIRE);
	if (ni == NULL)
		return;
	out->built = true;
	out->rows = ni->count;
	out->buckets = ni->n;
	out->complement = ni->all != NULL;
	size_t bytes = sizeof(*ni) + (size_t)ni->cap * sizeof(*ni->b);
	for (uint32_t i = 0; i < ni->n; i++) {
		const nbucket_t *b = &ni->b[i];
		bytes += (size_t)b->cap * (sizeof(*b->val) + sizeof(*b->id));
		bytes += roaring_bitmap_size_in_bytes(b->bm);
		if (b->n > out->bucket_rows_max)
			out->bucket_rows_max = b->n;
	}
	if (ni->all)
		bytes += roaring_bitmap_size_in_bytes(ni->all);
	out->bytes = bytes;
}
