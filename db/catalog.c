/* Index definitions: validation, the catalog format, create/drop/list/info. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "db.h"

/* ------------------------------------------------------------ validation */

static int field_check(const vela_field_def_t *f, uint32_t i, vela_err_t *err)
{
	if (f->name == NULL || f->name[0] == '\0')
		return vela_err_set(err, VELA_EINVAL, "field %u has no name", i);
	if (f->type > VELA_FIELD_VECTOR)
		return vela_err_set(err, VELA_EINVAL, "field '%s' has an unknown type", f->name);
	if (f->type != VELA_FIELD_VECTOR)
		return VELA_OK;
	if (f->dim < VELA_DIM_MIN || f->dim > VELA_DIM_MAX)
		return vela_err_set(err, VELA_EDIM,
				    "Bad arguments for vector similarity: DIM of field '%s' must "
				    "be between %u and %u (got %u)",
				    f->name, VELA_DIM_MIN, VELA_DIM_MAX, f->dim);
	if (f->metric > VELA_METRIC_COSINE || f->vec_type > VELA_VEC_FLOAT16 ||
	    f->algo > VELA_ALGO_GRAPH)
		return vela_err_set(err, VELA_EINVAL,
				    "field '%s': unsupported metric, type or algorithm", f->name);
	if ((f->graph_max_degree && (f->graph_max_degree < GRAPH_MAX_DEGREE_MIN ||
				     f->graph_max_degree > GRAPH_MAX_DEGREE_MAX)) ||
	    (f->graph_build_window && (f->graph_build_window < GRAPH_CONSTRUCTION_WINDOW_SIZE_MIN ||
				       f->graph_build_window > GRAPH_CONSTRUCTION_WINDOW_SIZE_MAX)) ||
	    f->graph_search_window > GRAPH_SEARCH_WINDOW_SIZE_MAX ||
	    f->compression > GRAPH_LVQ_KIND_COUNT ||
	    (f->compression && f->algo != VELA_ALGO_GRAPH) ||
	    (f->training_threshold && (f->training_threshold < VELA_TRAINING_THRESHOLD_MIN ||
				       f->training_threshold > VELA_TRAINING_THRESHOLD_MAX)) ||
	    (f->reduce && (f->reduce >= f->dim || f->compression < 1 + GRAPH_LVQ_LEANVEC4X8)) ||
	    f->graph_name > VELA_GRAPH_NAME_SVS_VAMANA ||
	    (f->graph_name && f->algo != VELA_ALGO_GRAPH))
		return vela_err_set(err, VELA_EINVAL,
				    "field '%s': graph degree must be %u..%u, construction window "
				    "%u..%u, search window at most %u, training threshold %u..%u; "
				    "compression needs a graph, REDUCE a LeanVec compression and "
				    "a value below DIM; an algorithm name only goes with a graph",
				    f->name, GRAPH_MAX_DEGREE_MIN, GRAPH_MAX_DEGREE_MAX,
				    GRAPH_CONSTRUCTION_WINDOW_SIZE_MIN,
				    GRAPH_CONSTRUCTION_WINDOW_SIZE_MAX, GRAPH_SEARCH_WINDOW_SIZE_MAX,
				    VELA_TRAINING_THRESHOLD_MIN, VELA_TRAINING_THRESHOLD_MAX);
	if ((f->model == NULL) != (f->source == NULL) ||
	    (f->model && (f->model[0] == '\0' || strlen(f->model) > VELA_MODEL_NAME_MAX ||
			  strchr(f->model, '/') || f->model[0] == '.' || f->source[0] == '\0')))
		return vela_err_set(err, VELA_EINVAL,
				    "field '%s': MODEL and SOURCE go together; a model name is "
				    "1..%u bytes, without '/' and not starting with '.'",
				    f->name, VELA_MODEL_NAME_MAX);
	return VELA_OK;
}

static const char *field_qname(const vela_field_def_t *f)
{
	return f->alias ? f->alias : f->name;
}

static int def_check(const vela_index_def_t *def, vela_err_t *err)
{
	if (def->name == NULL || def->name[0] == '\0')
		return vela_err_set(err, VELA_EINVAL, "index name is empty");
	if (strlen(def->name) > VELA_INDEX_NAME_MAX)
		return vela_err_set(err, VELA_ELIMIT, "index name longer than %u bytes",
				    VELA_INDEX_NAME_MAX);
	if (def->n_fields == 0)
		return vela_err_set(err, VELA_EINVAL, "Fields arguments are missing");
	if (def->n_fields > VELA_INDEX_FIELDS_MAX || def->n_prefixes > VELA_INDEX_PREFIXES_MAX)
		return vela_err_set(err, VELA_ELIMIT, "too many fields or prefixes");
	for (uint32_t i = 0; i < def->n_prefixes; i++)
		if (def->prefixes[i] == NULL || strlen(def->prefixes[i]) > VELA_KEY_MAX)
			return vela_err_set(err, VELA_EINVAL, "prefix %u is missing or too long", i);
	for (uint32_t i = 0; i < def->n_fields; i++) {
		int rc = field_check(&def->fields[i], i, err);
		if (rc)
			return rc;
		for (uint32_t j = 0; j < i; j++)
			if (strcmp(field_qname(&def->fields[i]), field_qname(&def->fields[j])) == 0)
				return vela_err_set(err, VELA_EINVAL,
						    "Duplicate field in schema - %s",
						    field_qname(&def->fields[i]));
	}
	return VELA_OK;
}

/* ------------------------------------------------------------ in-memory index */

void db_index_free(db_index_t *ix)
{
	if (ix == NULL)
		return;
	for (uint32_t i = 0; i < ix->n_prefixes; i++)
		free(ix->prefixes[i]);
	free(ix->prefixes);
	free(ix->prefix_lens);
	for (uint32_t i = 0; i < ix->n_fields; i++) {
		free(ix->fields[i].name);
		free(ix->fields[i].alias);
		free(ix->fields[i].model);
		free(ix->fields[i].source);
		if (ix->fields[i].dirty)
			roaring_bitmap_free(ix->fields[i].dirty);
		graph_destroy(ix->fields[i].graph); /* before the stores it reads */
		graph_lvq_store_destroy(ix->fields[i].lvq);
		flat_destroy(ix->fields[i].flat);
		db_numidx_free(ix->fields[i].num);
		db_tagidx_free(ix->fields[i].tag);
	}
	free(ix->fields);
	if (ix->docids)
		roaring_bitmap_free(ix->docids);
	free(ix->name);
	free(ix);
}

static int field_init(db_field_t *d, const vela_field_def_t *f)
{
	d->name = strdup(f->name);
	d->alias = strdup(field_qname(f));
	d->type = f->type;
	d->separator = f->tag_separator ? f->tag_separator : ',';
	d->case_sensitive = f->case_sensitive;
	d->algo = f->algo;
	d->vec_type = f->vec_type;
	d->dim = f->dim;
	d->metric = f->metric;
	d->graph_degree = f->graph_max_degree;
	d->graph_build_window = f->graph_build_window;
	d->graph_search_window = f->graph_search_window;
	d->compression = f->compression;
	d->training_threshold = f->training_threshold;
	d->reduce = f->reduce;
	/* Catalogs before version 5 did not keep the name: COMPRESSION is an
	 * SVS-VAMANA option in Redis, so a compressed graph reads as SVS-VAMANA
	 * and any other as HNSW (vela also takes COMPRESSION on HNSW). */
	if (f->algo == VELA_ALGO_GRAPH)
		d->graph_name = f->graph_name ? f->graph_name
			      : f->compression ? VELA_GRAPH_NAME_SVS_VAMANA : VELA_GRAPH_NAME_HNSW;
	if (d->name == NULL || d->alias == NULL)
		return VELA_ENOMEM;
	if (f->model && ((d->model = strdup(f->model)) == NULL ||
			 (d->source = strdup(f->source)) == NULL))
		return VELA_ENOMEM;
	if (f->type == VELA_FIELD_VECTOR)
		return flat_create(f->dim, f->metric, f->vec_type, &d->flat);
	return VELA_OK;
}

int db_index_from_def(const vela_index_def_t *def, uint32_t id, db_index_t **out,
		      vela_err_t *err)
{
	int rc = def_check(def, err);
	if (rc)
		return rc;
	db_index_t *ix = calloc(1, sizeof(*ix));
	if (ix == NULL)
		return vela_err_set(err, VELA_ENOMEM, "out of memory");
	ix->id = id;
	ix->name = strdup(def->name);
	ix->prefixes = calloc(def->n_prefixes + 1, sizeof(char *));
	ix->prefix_lens = calloc(def->n_prefixes + 1, sizeof(size_t));
	ix->fields = calloc(def->n_fields, sizeof(db_field_t));
	ix->docids = roaring_bitmap_create();
	rc = (ix->name && ix->prefixes && ix->prefix_lens && ix->fields && ix->docids)
		     ? VELA_OK : VELA_ENOMEM;
	for (uint32_t i = 0; rc == 0 && i < def->n_prefixes; i++, ix->n_prefixes++) {
		ix->prefixes[i] = strdup(def->prefixes[i]);
		ix->prefix_lens[i] = strlen(def->prefixes[i]);
		if (ix->prefixes[i] == NULL)
			rc = VELA_ENOMEM;
	}
	for (uint32_t i = 0; rc == 0 && i < def->n_fields; i++, ix->n_fields++)
		rc = field_init(&ix->fields[i], &def->fields[i]);
	if (rc) {
		db_index_free(ix);
		return vela_err_set(err, rc, "cannot create index: %s", vela_strerror(rc));
	}
	*out = ix;
	return VELA_OK;
}

db_index_t *db_index_find(vela_db_t *db, const char *name)
{
	for (size_t i = 0; i < db->n_indexes; i++)
		if (strcmp(db->indexes[i]->name, name) == 0)
			return db->indexes[i];
	return NULL;
}

bool db_index_matches_key(const db_index_t *ix, const uint8_t *key, size_t klen)
{
	if (ix->n_prefixes == 0)
		return true;
	for (uint32_t i = 0; i < ix->n_prefixes; i++)
		if (klen >= ix->prefix_lens[i] &&
		    memcmp(key, ix->prefixes[i], ix->prefix_lens[i]) == 0)
			return true;
	return false;
}

int db_field_find(const db_index_t *ix, const char *name, size_t len)
{
	for (uint32_t i = 0; i < ix->n_fields; i++)
		if (strlen(ix->fields[i].alias) == len && memcmp(ix->fields[i].alias, name, len) == 0)
			return (int)i;
	return -1;
}

/* ------------------------------------------------------------ catalog format */

typedef struct wbuf {
	uint8_t *p;
	size_t n, cap;
	int rc;
} wbuf_t;

static void wb_put(wbuf_t *w, const void *src, size_t n)
{
	if (w->rc)
		return;
	if (w->n + n > w->cap) {
		size_t cap = (w->cap ? w->cap * 2 : 256) + n;
		uint8_t *p = realloc(w->p, cap);
		if (p == NULL) {
			w->rc = VELA_ENOMEM;
			return;
		}
		w->p = p;
		w->cap = cap;
	}
	memcpy(w->p + w->n, src, n);
	w->n += n;
}

static void wb_u32(wbuf_t *w, uint32_t v)
{
	uint8_t b[4];
	vela_put_be32(b, v);
	wb_put(w, b, 4);
}

static void wb_str(wbuf_t *w, const char *s)
{
	wb_u32(w, (uint32_t)strlen(s));
	wb_put(w, s, strlen(s));
}

int db_index_pack(const db_index_t *ix, uint8_t **out, size_t *len)
{
	wbuf_t w = {0};
	wb_u32(&w, DB_CATALOG_MAGIC);
	wb_u32(&w, DB_CATALOG_VERSION);
	wb_u32(&w, ix->id);
	wb_str(&w, ix->name);
	wb_u32(&w, ix->n_prefixes);
	for (uint32_t i = 0; i < ix->n_prefixes; i++)
		wb_str(&w, ix->prefixes[i]);
	wb_u32(&w, ix->n_fields);
	for (uint32_t i = 0; i < ix->n_fields; i++) {
		const db_field_t *f = &ix->fields[i];
		uint8_t b[6] = {(uint8_t)f->type, (uint8_t)f->separator, f->case_sensitive,
				(uint8_t)f->algo, (uint8_t)f->vec_type, (uint8_t)f->metric};
		wb_str(&w, f->name);
		wb_str(&w, f->alias);
		wb_put(&w, b, sizeof(b));
		wb_u32(&w, f->dim);
		wb_u32(&w, f->graph_degree); /* version 2 */
		wb_u32(&w, f->graph_build_window);
		wb_u32(&w, f->graph_search_window);
		wb_u32(&w, f->compression); /* version 3 */
		wb_u32(&w, f->training_threshold);
		wb_u32(&w, f->reduce);
		wb_str(&w, f->model ? f->model : ""); /* version 4 */
		wb_str(&w, f->source ? f->source : "");
		wb_u32(&w, f->graph_name); /* version 5 */
	}
	if (w.rc) {
		free(w.p);
		return w.rc;
	}
	*out = w.p;
	*len = w.n;
	return VELA_OK;
}

typedef struct rbuf {
	const uint8_t *p;
	size_t n, off;
	int bad;
} rbuf_t;

static uint32_t rb_u32(rbuf_t *r)
{
	if (r->bad || r->n - r->off < 4) {
		r->bad = 1;
		return 0;
	}
	uint32_t v = vela_get_be32(r->p + r->off);
	r->off += 4;
	return v;
}

static const uint8_t *rb_bytes(rbuf_t *r, size_t n)
{
	if (r->bad || r->n - r->off < n) {
		r->bad = 1;
		return NULL;
	}
	const uint8_t *p = r->p + r->off;
	r->off += n;
	return p;
}

/* Returns a malloc'd NUL-terminated copy, or NULL (r->bad set). */
static char *rb_str(rbuf_t *r)
{
	uint32_t n = rb_u32(r);
	const uint8_t *p = rb_bytes(r, n);
	if (p == NULL)
		return NULL;
	char *s = malloc((size_t)n + 1);
	if (s == NULL) {
		r->bad = 1;
		return NULL;
	}
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

static void def_free_parts(vela_index_def_t *d)
{
	for (uint32_t i = 0; d->prefixes && i < d->n_prefixes; i++)
		free((char *)d->prefixes[i]);
	free((void *)d->prefixes);
	for (uint32_t i = 0; d->fields && i < d->n_fields; i++) {
		free((char *)d->fields[i].name);
		free((char *)d->fields[i].alias);
		free((char *)d->fields[i].model);
		free((char *)d->fields[i].source);
	}
	free((void *)d->fields);
	free((char *)d->name);
}

static void unpack_field(rbuf_t *r, vela_field_def_t *f, uint32_t version)
{
	f->name = rb_str(r);
	f->alias = rb_str(r);
	const uint8_t *b = rb_bytes(r, 6);
	if (b == NULL)
		return;
	f->type = b[0];
	f->tag_separator = (char)b[1];
	f->case_sensitive = b[2];
	f->algo = b[3];
	f->vec_type = b[4];
	f->metric = b[5];
	f->dim = rb_u32(r);
	if (version >= 2) {
		f->graph_max_degree = rb_u32(r);
		f->graph_build_window = rb_u32(r);
		f->graph_search_window = rb_u32(r);
	}
	if (version >= 3) {
		f->compression = rb_u32(r);
		f->training_threshold = rb_u32(r);
		f->reduce = rb_u32(r);
	}
	if (version >= 4) {
		f->model = rb_str(r);
		f->source = rb_str(r);
		if (f->model && f->model[0] == '\0') { /* "" is written for none */
			free((char *)f->model);
			free((char *)f->source);
			f->model = f->source = NULL;
		}
	}
	if (version >= 5)
		f->graph_name = rb_u32(r);
}

/* Unpack into a definition (all parts malloc'd) and the stored id. */
static int unpack_def(const uint8_t *buf, size_t len, vela_index_def_t *d, uint32_t *id,
		      vela_err_t *err)
{
	rbuf_t r = {.p = buf, .n = len};
	memset(d, 0, sizeof(*d));
	if (rb_u32(&r) != DB_CATALOG_MAGIC)
		return vela_err_set(err, VELA_ECORRUPT, "catalog entry has a bad magic");
	uint32_t ver = rb_u32(&r);
	if (ver > DB_CATALOG_VERSION)
		return vela_err_set(err, VELA_EVERSION,
				    "index definition version %u is newer than this build (%u)",
				    ver, DB_CATALOG_VERSION);
	*id = rb_u32(&r);
	d->name = rb_str(&r);
	uint32_t np = rb_u32(&r);
	if (!r.bad && np <= VELA_INDEX_PREFIXES_MAX && (d->prefixes = calloc(np + 1, sizeof(char *))))
		for (; d->n_prefixes < np && !r.bad; d->n_prefixes++)
			((char **)d->prefixes)[d->n_prefixes] = rb_str(&r);
	uint32_t nf = r.bad ? 0 : rb_u32(&r);
	if (!r.bad && nf <= VELA_INDEX_FIELDS_MAX && (d->fields = calloc(nf + 1, sizeof(vela_field_def_t))))
		for (; d->n_fields < nf && !r.bad; d->n_fields++)
			unpack_field(&r, (vela_field_def_t *)&d->fields[d->n_fields], ver);
	if (r.bad || r.off != len || np > VELA_INDEX_PREFIXES_MAX || nf > VELA_INDEX_FIELDS_MAX ||
	    d->prefixes == NULL || d->fields == NULL) {
		def_free_parts(d);
		return vela_err_set(err, VELA_ECORRUPT, "catalog entry is corrupt");
	}
	return VELA_OK;
}

int db_index_unpack(const uint8_t *buf, size_t len, db_index_t **out, vela_err_t *err)
{
	vela_index_def_t d;
	uint32_t id;
	int rc = unpack_def(buf, len, &d, &id, err);
	if (rc)
		return rc;
	rc = db_index_from_def(&d, id, out, err);
	def_free_parts(&d);
	return rc;
}

/* ------------------------------------------------------------ public API */

struct scan_ctx {
	db_index_t *ix;
	storage_txn_t *txn;
	db_changes_t *ch;
	uint32_t prefix; /**< the prefix being scanned */
};

/* A key under an earlier prefix was already indexed by that prefix's scan. */
static bool scan_seen(const struct scan_ctx *s, const uint8_t *key, size_t klen)
{
	for (uint32_t j = 0; j < s->prefix; j++)
		if (klen >= s->ix->prefix_lens[j] &&
		    memcmp(key, s->ix->prefixes[j], s->ix->prefix_lens[j]) == 0)
			return true;
	return false;
}

static int index_initial_scan_doc(void *ctx, const uint8_t *key, size_t klen,
				  const uint8_t *val, size_t vlen)
{
	struct scan_ctx *s = ctx;
	if (!db_index_matches_key(s->ix, key, klen) || scan_seen(s, key, klen))
		return 0;
	storage_field_t *f;
	size_t n;
	int rc = storage_doc_unpack(val, vlen, &f, &n);
	if (rc)
		return rc;
	rc = db_index_doc(s->ix, s->txn, key, klen, NULL, 0, f, n, s->ch);
	free(f);
	return rc;
}

static int index_initial_scan(db_index_t *ix, storage_txn_t *txn, db_changes_t *ch)
{
	struct scan_ctx s = {.ix = ix, .txn = txn, .ch = ch};
	if (ix->n_prefixes == 0)
		return storage_scan_prefix(txn, ST_DOCS, NULL, 0, index_initial_scan_doc, &s);
	for (s.prefix = 0; s.prefix < ix->n_prefixes; s.prefix++) {
		int rc = storage_scan_prefix(txn, ST_DOCS, ix->prefixes[s.prefix],
					     ix->prefix_lens[s.prefix], index_initial_scan_doc, &s);
		if (rc)
			return rc;
	}
	return VELA_OK;
}

static int index_create_txn(vela_db_t *db, const vela_index_def_t *def, storage_txn_t *txn,
			    db_changes_t *ch, vela_err_t *err)
{
	uint64_t id;
	int rc = storage_meta_get_u64(txn, "index.next_id", &id);
	if (rc == 0)
		rc = storage_meta_put_u64(txn, "index.next_id", id + 1);
	if (rc)
		return vela_err_set(err, rc, "cannot allocate index id: %s", vela_strerror(rc));
	db_index_t *ix;
	if ((rc = db_index_from_def(def, (uint32_t)id + 1, &ix, err)))
		return rc;
	uint8_t *buf;
	size_t len;
	rc = db_index_pack(ix, &buf, &len);
	if (rc == 0) {
		rc = storage_put(txn, ST_CATALOG, ix->name, strlen(ix->name), buf, len);
		free(buf);
	}
	if (rc == 0)
		rc = storage_log_append(txn, SL_INDEX_CREATE, ix->id, 0, ix->name, strlen(ix->name), NULL);
	if (rc == 0)
		rc = db_changes_push(ch, (db_change_t){.kind = DC_INDEX_ADD, .ix = ix});
	if (rc) {
		db_index_free(ix);
		return vela_err_set(err, rc, "cannot create index: %s", vela_strerror(rc));
	}
	if (!def->skip_initial_scan && (rc = index_initial_scan(ix, txn, ch)))
		return vela_err_set(err, rc, "cannot index existing documents: %s", vela_strerror(rc));
	return VELA_OK;
}

int vela_index_create(vela_db_t *db, const vela_index_def_t *def, vela_err_t *err)
{
	int rc = def_check(def, err);
	if (rc)
		return rc;
	pthread_mutex_lock(&db->write_mu);
	if (db_index_find(db, def->name)) {
		pthread_mutex_unlock(&db->write_mu);
		return vela_err_set(err, VELA_EEXISTS, "Index already exists");
	}
	storage_txn_t *txn;
	db_changes_t ch = {0};
	rc = db_indexes_reserve(db, db->n_indexes + 1);
	if (rc == 0 && (rc = storage_txn_begin(db->env, NULL, 1, &txn)))
		vela_err_set(err, rc, "cannot begin transaction: %s", vela_strerror(rc));
	if (rc) {
		if (rc == VELA_ENOMEM)
			vela_err_set(err, rc, "out of memory");
	} else if ((rc = index_create_txn(db, def, txn, &ch, err))) {
		storage_txn_abort(txn);
		db_changes_truncate(&ch, 0);
	} else {
		rc = db_commit(db, txn, &ch, err);
	}
	free(ch.v);
	pthread_mutex_unlock(&db->write_mu);
	return rc;
}

/* Delete all rows of an index; with delete_docs also its documents (and
 * re-index them out of every other index). */
static int index_drop_txn(vela_db_t *db, db_index_t *ix, bool delete_docs, storage_txn_t *txn,
			  db_changes_t *ch);

struct dd_ctx {
	vela_db_t *db;
	storage_txn_t *txn;
	db_changes_t *ch;
	uint8_t **keys;
	size_t *lens;
	size_t n, cap;
};

static int dd_collect(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
		      size_t vlen)
{
	struct dd_ctx *d = ctx;
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 64;
		uint8_t **k = realloc(d->keys, cap * sizeof(*k));
		if (k == NULL)
			return VELA_ENOMEM;
		d->keys = k;
		size_t *l = realloc(d->lens, cap * sizeof(*l));
		if (l == NULL)
			return VELA_ENOMEM;
		d->lens = l;
		d->cap = cap;
	}
	d->keys[d->n] = malloc(vlen ? vlen : 1);
	if (d->keys[d->n] == NULL)
		return VELA_ENOMEM;
	memcpy(d->keys[d->n], val, vlen);
	d->lens[d->n++] = vlen;
	return 0;
}

static int index_drop_txn(vela_db_t *db, db_index_t *ix, bool delete_docs, storage_txn_t *txn,
			  db_changes_t *ch)
{
	uint8_t p[4];
	vela_put_be32(p, ix->id);
	struct dd_ctx d = {.db = db, .txn = txn, .ch = ch};
	int rc = 0;
	/* DD: delete the documents first, while the index is still published,
	 * so their in-memory changes are applied before the index is freed. */
	if (delete_docs)
		rc = storage_scan_prefix(txn, ST_KEYS, p, 4, dd_collect, &d);
	for (size_t i = 0; rc == 0 && i < d.n; i++)
		rc = db_doc_delete(db, txn, d.keys[i], d.lens[i], ch, NULL);
	for (size_t i = 0; i < d.n; i++)
		free(d.keys[i]);
	free(d.keys);
	free(d.lens);
	static const storage_table_t tabs[] = {ST_IDMAP, ST_KEYS, ST_VECTORS, ST_POSTINGS, ST_FREE};
	for (size_t i = 0; rc == 0 && i < sizeof(tabs) / sizeof(tabs[0]); i++)
		rc = storage_del_prefix(txn, tabs[i], p, 4, NULL);
	if (rc == 0)
		rc = storage_del(txn, ST_CATALOG, ix->name, strlen(ix->name));
	if (rc == 0)
		rc = storage_log_append(txn, SL_INDEX_DROP, ix->id, 0, ix->name, strlen(ix->name), NULL);
	if (rc == 0)
		rc = db_changes_push(ch, (db_change_t){.kind = DC_INDEX_DROP, .ix = ix});
	return rc;
}

int vela_index_drop(vela_db_t *db, const char *name, bool delete_docs, vela_err_t *err)
{
	pthread_mutex_lock(&db->write_mu);
	db_index_t *ix = db_index_find(db, name);
	int rc;
	if (ix == NULL) {
		rc = vela_err_set(err, VELA_ENOTFOUND, "Unknown index name");
		goto out;
	}
	storage_txn_t *txn;
	db_changes_t ch = {0};
	rc = storage_txn_begin(db->env, NULL, 1, &txn);
	if (rc) {
		vela_err_set(err, rc, "cannot begin transaction: %s", vela_strerror(rc));
		goto out;
	}
	rc = index_drop_txn(db, ix, delete_docs, txn, &ch);
	if (rc) {
		storage_txn_abort(txn);
		db_changes_truncate(&ch, 0);
		vela_err_set(err, rc, "cannot drop index: %s", vela_strerror(rc));
	} else {
		rc = db_commit(db, txn, &ch, err);
	}
	free(ch.v);
out:
	pthread_mutex_unlock(&db->write_mu);
	return rc;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int vela_index_list(vela_db_t *db, char ***names, size_t *n)
{
	pthread_rwlock_rdlock(&db->lock);
	char **v = calloc(db->n_indexes + 1, sizeof(char *));
	int rc = v ? VELA_OK : VELA_ENOMEM;
	size_t i = 0;
	for (; rc == 0 && i < db->n_indexes; i++)
		if ((v[i] = strdup(db->indexes[i]->name)) == NULL)
			rc = VELA_ENOMEM;
	pthread_rwlock_unlock(&db->lock);
	if (rc) {
		vela_strv_free(v, i);
		return rc;
	}
	qsort(v, i, sizeof(char *), name_cmp);
	*names = v;
	*n = i;
	return VELA_OK;
}

void vela_strv_free(char **v, size_t n)
{
	if (v == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

int vela_index_info(vela_db_t *db, const char *name, vela_index_info_t *out, vela_err_t *err)
{
	pthread_rwlock_rdlock(&db->lock);
	db_index_t *ix = db_index_find(db, name);
	if (ix == NULL) {
		pthread_rwlock_unlock(&db->lock);
		return vela_err_set(err, VELA_ENOTFOUND, "Unknown index name");
	}
	memset(out, 0, sizeof(*out));
	out->num_docs = roaring_bitmap_get_cardinality(ix->docids);
	out->indexing_failures = ix->failures;
	out->n_fields = ix->n_fields;
	out->n_prefixes = ix->n_prefixes;
	for (uint32_t i = 0; i < ix->n_fields; i++) {
		if (ix->fields[i].flat)
			out->vector_bytes += flat_memory(ix->fields[i].flat);
		if (ix->fields[i].lvq)
			out->vector_bytes += graph_lvq_store_memory(ix->fields[i].lvq);
		if (ix->fields[i].graph) {
			out->vector_bytes += graph_memory(ix->fields[i].graph);
			out->graph_nodes += graph_count(ix->fields[i].graph);
			out->graphs_from_snapshot += ix->fields[i].graph_from_snapshot;
		}
		out->graphs_building += ix->fields[i].build_queued;
		db_numidx_stats_t ns;
		db_numidx_stats(&ix->fields[i], &ns);
		out->numeric_bytes += ns.bytes;
		db_tagidx_stats_t ts;
		db_tagidx_stats(&ix->fields[i], &ts);
		out->tag_bytes += ts.bytes;
	}
	pthread_rwlock_unlock(&db->lock);
	return VELA_OK;
}

int vela_index_describe(vela_db_t *db, const char *name, vela_index_def_t **out,
			vela_err_t *err)
{
	pthread_rwlock_rdlock(&db->lock);
	db_index_t *ix = db_index_find(db, name);
	uint8_t *buf = NULL;
	size_t len = 0;
	int rc = ix ? db_index_pack(ix, &buf, &len) : VELA_ENOTFOUND;
	pthread_rwlock_unlock(&db->lock);
	if (rc)
		return vela_err_set(err, rc, rc == VELA_ENOTFOUND ? "Unknown index name" : "%s",
				    vela_strerror(rc));
	vela_index_def_t *d = malloc(sizeof(*d));
	uint32_t id;
	rc = d ? unpack_def(buf, len, d, &id, err) : VELA_ENOMEM;
	free(buf);
	if (rc) {
		free(d);
		return rc;
	}
	*out = d;
	return VELA_OK;
}

void vela_index_def_free(vela_index_def_t *def)
{
	if (def == NULL)
		return;
	def_free_parts(def);
	free(def);
}
