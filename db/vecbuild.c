/* Building a GRAPH field's graph (and training its compressed store) in
 * four steps shared by the foreground path (db_vec_maybe_build with the
 * exclusive lock held) and the background builder (db/builder.c):
 *   init     the field's parameters (any lock)
 *   copy     its docids and vectors (lock held; the background path builds
 *            F32 graphs over a private copy, the foreground one over the
 *            live flat index)
 *   run      train + encode + build, no lock needed
 *   install  replay the writes made since the copy, swap (exclusive lock).
 * The store is trained on the first `threshold` vectors in docid order so
 * that a reopen trains the same store (and a graph snapshot stays valid);
 * LeanVec-OOD query samples are kept in a file beside the database for the
 * same reason (train-<index id>-<field>.bin, db/qsample.c's format). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "db/search_int.h"
#include "quant/quant.h"

static uint32_t build_threads(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > GRAPH_THREADS_MAX ? GRAPH_THREADS_MAX : (uint32_t)n;
}

static bool is_leanvec(uint32_t compression)
{
	return compression == 1 + GRAPH_LVQ_LEANVEC4X8 || compression == 1 + GRAPH_LVQ_LEANVEC8X8;
}

int db_vec_build_init(const vela_db_t *db, const db_index_t *ix, uint32_t k, db_vec_build_t *b)
{
	const db_field_t *f = &ix->fields[k];
	if ((b->alias = strdup(f->alias)) == NULL)
		return VELA_ENOMEM;
	b->dim = f->dim;
	b->metric = f->metric;
	b->vec_type = f->vec_type;
	b->compression = f->compression;
	b->reduce = f->reduce;
	b->threshold = db_vec_build_threshold(f);
	b->db = db;
	b->ix_id = ix->id;
	b->field = k;
	b->vf = (db_field_t){.dim = f->dim, .vec_type = f->vec_type, .metric = f->metric};
	graph_params_default(&b->gp);
	if (f->graph_degree)
		b->gp.max_degree = f->graph_degree;
	if (f->graph_build_window)
		b->gp.window = f->graph_build_window;
	b->gp.threads = build_threads();
	b->gp.cancel = b->cancel;
	db_train_path(db, ix, k, b->train_path, sizeof(b->train_path));
	/* No queries given: those the field was last trained on, if any. */
	if (b->Q == NULL && is_leanvec(f->compression) &&
	    db_qsample_file_load(b->train_path, f->dim, &b->Q_own, &b->m) == 0)
		b->Q = b->Q_own;
	return VELA_OK;
}

/* docid's vector as stored in LMDB (through b->txn), decoded into `out`. */
static int lmdb_row(const db_vec_build_t *b, uint32_t docid, float *out)
{
	uint8_t k[16];
	size_t kl = db_key_vector(k, b->ix_id, b->field, docid);
	const void *val;
	size_t len;
	float *v;
	int rc = storage_get(b->txn, ST_VECTORS, k, kl, &val, &len);
	if (rc == 0 && (rc = db_vector_decode(&b->vf, val, len, &v)) == 0) {
		memcpy(out, v, (size_t)b->dim * sizeof(float));
		free(v);
	}
	return rc;
}

/* A retrain of a field whose rows were released: the training sample now
 * (the first `threshold` vectors that LMDB still holds), the rest while
 * encoding, from one read transaction. A docid deleted since the in-memory
 * copy of the docids is dropped here (its delete is replayed at install). */
static int copy_from_lmdb(db_vec_build_t *b)
{
	uint64_t rows = b->n > b->threshold ? b->threshold : b->n, w = 0, i = 0;
	int rc = storage_txn_begin(b->db->env, NULL, 0, &b->txn);
	b->vecs = rc ? NULL : malloc(vela_mul_size(rows ? rows : 1, (size_t)b->dim * sizeof(float)));
	if (rc == 0 && b->vecs == NULL)
		rc = VELA_ENOMEM;
	for (; rc == 0 && i < b->n && w < rows; i++) {
		if ((rc = lmdb_row(b, b->ids[i], b->vecs + w * b->dim)) == VELA_ENOTFOUND) {
			rc = VELA_OK;
			continue;
		}
		b->ids[w++] = b->ids[i];
	}
	memmove(b->ids + w, b->ids + i, (b->n - i) * sizeof(uint32_t));
	b->n -= i - w;
	return rc;
}

int db_vec_build_copy(const db_field_t *f, db_vec_build_t *b)
{
	b->n = flat_count(f->flat);
	b->ids = malloc((b->n ? b->n : 1) * sizeof(uint32_t));
	if (b->ids == NULL)
		return VELA_ENOMEM;
	roaring_bitmap_to_uint32_array(flat_docids(f->flat), b->ids);
	if (b->compression == 0 && b->live) /* the graph reads the live vectors */
		return graph_store_flat(f->flat, &b->gs);
	int rc = VELA_OK;
	if (b->compression == 0) { /* a private F32 copy for the graph to read */
		float *row = malloc((size_t)b->dim * sizeof(float));
		rc = row ? flat_create(b->dim, b->metric, b->vec_type, &b->flat) : VELA_ENOMEM;
		for (uint64_t i = 0; rc == 0 && i < b->n; i++)
			if ((rc = flat_get(f->flat, b->ids[i], row)) == 0)
				rc = flat_set(b->flat, b->ids[i], row);
		free(row);
		return rc ? rc : graph_store_flat(b->flat, &b->gs);
	}
	if (!flat_has_rows(f->flat))
		return copy_from_lmdb(b);
	/* Live (the lock held all along, as at open): copy only the training
	 * sample; the rest is encoded straight from the flat index. */
	uint64_t rows = b->live && b->n > b->threshold ? b->threshold : b->n;
	b->src = b->live ? f->flat : NULL;
	b->vecs = malloc(vela_mul_size(rows ? rows : 1, (size_t)b->dim * sizeof(float)));
	if (b->vecs == NULL)
		return VELA_ENOMEM;
	for (uint64_t i = 0; rc == 0 && i < rows; i++)
		rc = flat_get(f->flat, b->ids[i], b->vecs + i * b->dim);
	return rc;
}

/* Train the compressed store on the first `threshold` rows and encode all. */
static int build_store(db_vec_build_t *b)
{
	size_t ns = b->n < b->threshold ? b->n : b->threshold;
	graph_lvq_params_t p;
	graph_lvq_params_default(&p);
	p.kind = (graph_lvq_kind_t)(b->compression - 1);
	p.dim = b->dim;
	p.metric = b->metric;
	p.reduce_dim = b->reduce;
	bool ood = is_leanvec(b->compression) && b->Q && b->m >= VELA_TRAIN_QUERIES_MIN;
	p.leanvec_mode = ood ? GRAPH_LVQ_LEANVEC_OOD : GRAPH_LVQ_LEANVEC_ID;
	b->ood = ood;
	vela_err_t err = {0};
	int rc = graph_lvq_store_create(&p, b->vecs, ns, ood ? b->Q : NULL, ood ? b->m : 0,
					&b->lvq, &err);
	if (rc) {
		vela_error("field '%s': compression training failed: %s", b->alias, err.msg);
		return rc;
	}
	bool more = b->src || b->txn; /* rows beyond the sample are read now */
	float *row = more ? malloc((size_t)b->dim * sizeof(float)) : NULL;
	if (more && row == NULL)
		rc = VELA_ENOMEM;
	uint64_t w = 0;
	for (uint64_t i = 0; rc == 0 && i < b->n; i++) {
		const float *v = row;
		if (!more || i < ns)
			v = b->vecs + i * b->dim;
		else if (b->src) /* beyond the sample: from the field */
			rc = flat_get(b->src, b->ids[i], row);
		else if ((rc = lmdb_row(b, b->ids[i], row)) == VELA_ENOTFOUND) {
			rc = VELA_OK; /* deleted since the copy: replayed at install */
			continue;
		}
		if (rc == 0)
			rc = graph_lvq_store_set(b->lvq, b->ids[i], v);
		b->ids[w++] = b->ids[i];
	}
	if (rc == 0)
		b->n = w;
	free(row);
	free(b->vecs); /* the codes replace the copy */
	b->vecs = NULL;
	storage_txn_abort(b->txn); /* install reads with a fresh one */
	b->txn = NULL;
	if (rc == 0)
		b->gs = *graph_lvq_store(b->lvq);
	return rc;
}

int db_vec_build_run(db_vec_build_t *b)
{
	int rc = b->compression ? build_store(b) : VELA_OK;
	if (rc == 0)
		rc = graph_create(&b->gs, &b->gp, &b->graph);
	if (rc == 0)
		rc = graph_build(b->graph, b->ids, b->n);
	return rc;
}

/* docid d's vector as the field holds it now: 0, or VELA_ENOTFOUND. */
static int replay_row(const db_field_t *f, const db_vec_build_t *b, uint32_t d, float *row)
{
	if (flat_has_rows(f->flat))
		return flat_get(f->flat, d, row);
	if (!roaring_bitmap_contains(flat_docids(f->flat), d))
		return VELA_ENOTFOUND;
	return lmdb_row(b, d, row);
}

/* One write made since the copy onto the new graph: docid d now holds
 * `row`, or (NULL) was deleted. Before the install the graph reads b's
 * private copies (b->lvq's codes, or b->flat for F32), which get the row
 * first; after it rebinds, F32 graphs read the live flat index. */
static int apply_one(db_vec_build_t *b, uint32_t d, const float *row)
{
	int rc = VELA_OK;
	if (row) {
		if (b->lvq)
			rc = graph_lvq_store_set(b->lvq, d, row);
		else if (b->flat && !b->rebound)
			rc = flat_set(b->flat, d, row);
		return rc ? rc : graph_update(b->graph, d);
	}
	if (b->lvq && graph_lvq_store_remove(b->lvq, d) == VELA_EINVAL)
		return VELA_EINVAL;
	rc = graph_delete(b->graph, d);
	return rc == VELA_ENOTFOUND ? VELA_OK : rc;
}

static int build_replay(db_field_t *f, db_vec_build_t *b, uint32_t d, float *row)
{
	int rc = replay_row(f, b, d, row);
	if (rc && rc != VELA_ENOTFOUND)
		return rc;
	return apply_one(b, d, rc == 0 ? row : NULL);
}

void db_vec_batch_free(db_vec_batch_t *bt)
{
	free(bt->ids);
	free(bt->rows);
	free(bt->present);
	memset(bt, 0, sizeof(*bt));
}

int db_vec_build_take(db_field_t *f, db_vec_build_t *b, db_vec_batch_t *out, uint64_t *left)
{
	memset(out, 0, sizeof(*out));
	uint64_t n = f->dirty ? roaring_bitmap_get_cardinality(f->dirty) : 0;
	*left = n;
	if (n < DB_BUILD_CATCHUP_LEFT)
		return VELA_OK;
	size_t m = n < DB_BUILD_CATCHUP_BATCH ? (size_t)n : DB_BUILD_CATCHUP_BATCH;
	out->ids = malloc(m * sizeof(uint32_t));
	out->present = malloc(m);
	out->rows = malloc(vela_mul_size(m, (size_t)b->dim * sizeof(float)));
	int rc = out->ids && out->present && out->rows ? VELA_OK : VELA_ENOMEM;
	if (rc == 0 && !flat_has_rows(f->flat))
		rc = storage_txn_begin(b->db->env, NULL, 0, &b->txn);
	if (rc == 0) {
		roaring_uint32_iterator_t *it = roaring_create_iterator(f->dirty);
		out->n = it ? roaring_read_uint32_iterator(it, out->ids, (uint32_t)m) : 0;
		roaring_free_uint32_iterator(it);
		rc = it ? VELA_OK : VELA_ENOMEM;
	}
	for (size_t i = 0; rc == 0 && i < out->n; i++) {
		rc = replay_row(f, b, out->ids[i], out->rows + i * b->dim);
		out->present[i] = rc == 0;
		rc = rc == VELA_ENOTFOUND ? VELA_OK : rc;
	}
	storage_txn_abort(b->txn);
	b->txn = NULL;
	if (rc == 0)
		roaring_bitmap_remove_many(f->dirty, out->n, out->ids);
	else
		db_vec_batch_free(out);
	*left = n - (rc == 0 ? out->n : 0);
	return rc;
}

int db_vec_build_apply(db_vec_build_t *b, db_vec_batch_t *bt)
{
	int rc = VELA_OK;
	for (size_t i = 0; rc == 0 && i < bt->n; i++)
		rc = apply_one(b, bt->ids[i], bt->present[i] ? bt->rows + i * b->dim : NULL);
	if (rc == 0)
		b->caught_up += bt->n;
	db_vec_batch_free(bt);
	return rc;
}

int db_vec_build_install(db_field_t *f, db_vec_build_t *b)
{
	graph_store_t live;
	int rc = b->lvq ? (live = *graph_lvq_store(b->lvq), VELA_OK) : graph_store_flat(f->flat, &live);
	if (rc == 0)
		rc = graph_store_rebind(b->graph, &live);
	b->rebound = rc == 0;
	float *row = malloc((size_t)b->dim * sizeof(float));
	rc = rc ? rc : row ? VELA_OK : VELA_ENOMEM;
	/* Released rows: the writes are read back from LMDB (the writer is held
	 * off by write_mu, so LMDB and the in-memory docids agree). */
	if (rc == 0 && !flat_has_rows(f->flat) && f->dirty && !roaring_bitmap_is_empty(f->dirty))
		rc = storage_txn_begin(b->db->env, NULL, 0, &b->txn);
	roaring_uint32_iterator_t *it = f->dirty ? roaring_create_iterator(f->dirty) : NULL;
	for (; rc == 0 && it && it->has_value; roaring_advance_uint32_iterator(it), b->replayed++)
		rc = build_replay(f, b, it->current_value, row);
	if (it)
		roaring_free_uint32_iterator(it);
	free(row);
	storage_txn_abort(b->txn);
	b->txn = NULL;
	if (rc == 0 && (double)graph_count_deleted(b->graph) >
			       DB_GRAPH_CONSOLIDATE_RATIO * (double)graph_count(b->graph))
		rc = graph_consolidate(b->graph);
	if (rc)
		return rc;
	graph_destroy(f->graph); /* before the store it reads */
	graph_lvq_store_destroy(f->lvq);
	f->graph = b->graph;
	f->lvq = b->lvq;
	f->gstore = live;
	f->graph_from_snapshot = false;
	f->snap_seq = 0;
	b->graph = NULL;
	b->lvq = NULL;
	db_vec_rows_release(f); /* compressed: the codes replace the F32 rows */
	return VELA_OK;
}

void db_vec_build_keep_queries(const db_vec_build_t *b)
{
	if (!is_leanvec(b->compression))
		return;
	if (!b->ood) { /* trained in-distribution: a reopen must do the same */
		unlink(b->train_path);
		return;
	}
	int rc = b->Q == b->Q_own ? VELA_OK : db_qsample_file_save(b->train_path, b->Q, b->m, b->dim);
	if (rc)
		vela_warn("field '%s': cannot keep its training queries in %s (%s): a reopen "
			  "without a graph snapshot trains in-distribution", b->alias, b->train_path,
			  vela_strerror(rc));
}

void db_vec_build_free(db_vec_build_t *b)
{
	graph_destroy(b->graph);
	graph_lvq_store_destroy(b->lvq);
	flat_destroy(b->flat);
	storage_txn_abort(b->txn);
	free(b->ids);
	free(b->vecs);
	free(b->Q_own);
	free(b->alias);
	memset(b, 0, sizeof(*b));
}

/* ------------------------------------------------------------ entry points */

/* The foreground build (the caller holds db->lock exclusively, or is
 * alone): a first build over the live vectors, or a retrain over a copy. */
static int build_now(const vela_db_t *db, db_index_t *ix, uint32_t k, const float *Q, size_t m)
{
	db_field_t *f = &ix->fields[k];
	db_vec_build_t b;
	memset(&b, 0, sizeof(b));
	b.live = f->graph == NULL;
	b.Q = Q;
	b.m = m;
	uint64_t t0 = vela_now_ns();
	int rc = db_vec_build_init(db, ix, k, &b);
	if (rc == 0)
		rc = db_vec_build_copy(f, &b);
	if (rc == 0)
		rc = db_vec_build_run(&b);
	if (rc == 0)
		rc = db_vec_build_install(f, &b);
	if (rc == 0) {
		db_vec_build_keep_queries(&b);
		vela_info("field '%s': graph over %llu vectors built in %.2f s%s", f->alias,
			  (unsigned long long)b.n, (double)(vela_now_ns() - t0) / 1e9,
			  b.ood ? " (LeanVec trained out-of-distribution)" : "");
	} else { /* exact search (or the old graph) keeps answering */
		vela_error("field '%s': graph build failed (%s); %s", f->alias, vela_strerror(rc),
			   f->graph ? "the old graph stays" : "searching exactly");
	}
	f->build_failed = rc != 0;
	db_vec_build_free(&b);
	return rc;
}

/* COSINE fields hold unit vectors: train on unit queries too (recorded
 * queries are kept as searched). */
static void queries_normalise(const db_field_t *f, float *Q, size_t m)
{
	for (size_t i = 0; Q && f->metric == VELA_METRIC_COSINE && i < m; i++)
		quant_normalize(Q + i * f->dim, f->dim);
}

void db_vec_maybe_build(vela_db_t *db, db_index_t *ix, uint32_t k)
{
	db_field_t *f = &ix->fields[k];
	if (f->type != VELA_FIELD_VECTOR || f->algo != VELA_ALGO_GRAPH || f->graph ||
	    f->build_queued || f->build_failed || flat_count(f->flat) < db_vec_build_threshold(f))
		return;
	if (db->builder == NULL) {
		build_now(db, ix, k, NULL, 0);
		return;
	}
	/* First build: LeanVec trains out-of-distribution on the searches
	 * recorded so far (answered exactly) when there are enough of them. */
	float *Q = NULL;
	size_t m = 0;
	if (is_leanvec(f->compression) && db_qsample_copy(db, ix, k, &Q, &m) == 0 &&
	    m < VELA_TRAIN_QUERIES_MIN) {
		free(Q);
		Q = NULL;
		m = 0;
	}
	queries_normalise(f, Q, m);
	if (db_build_submit(db, ix, k, Q, m, false))
		vela_error("field '%s': cannot queue its graph build; searching exactly", f->alias);
}

int db_vec_store_prepare(const vela_db_t *db, db_index_t *ix, uint32_t k, uint32_t **ids_out,
			 uint64_t *n_out)
{
	db_field_t *f = &ix->fields[k];
	db_vec_build_t b;
	memset(&b, 0, sizeof(b));
	b.live = true;
	int rc = db_vec_build_init(db, ix, k, &b);
	if (rc == 0)
		rc = db_vec_build_copy(f, &b);
	if (rc == 0 && b.compression)
		rc = build_store(&b);
	if (rc == 0) {
		f->lvq = b.lvq;
		f->gstore = b.gs;
		*ids_out = b.ids;
		*n_out = b.n;
		b.lvq = NULL;
		b.ids = NULL;
	}
	db_vec_build_free(&b);
	return rc;
}

/* ------------------------------------------------------------ retraining */

/* The vector field vela_index_train names: by name or alias, or the only one. */
static int train_field(const db_index_t *ix, const char *name, uint32_t *k, vela_err_t *err)
{
	if (name) {
		int i = db_field_find(ix, name, strlen(name));
		if (i < 0)
			return vela_err_set(err, VELA_ENOTFOUND, "no field '%s' in index '%s'", name,
					    ix->name);
		*k = (uint32_t)i;
		return VELA_OK;
	}
	uint32_t found = 0;
	for (uint32_t i = 0; i < ix->n_fields; i++)
		if (ix->fields[i].type == VELA_FIELD_VECTOR) {
			*k = i;
			found++;
		}
	return found == 1 ? VELA_OK
			  : vela_err_set(err, VELA_EINVAL, "index '%s' has %u vector fields: name one",
					 ix->name, found);
}

/* Can field f be retrained now? */
static int train_check(const db_field_t *f, uint32_t dim, vela_err_t *err)
{
	if (f->type != VELA_FIELD_VECTOR || f->algo != VELA_ALGO_GRAPH || f->compression == 0)
		return vela_err_set(err, VELA_EINVAL, "field '%s' is not a compressed graph "
				    "(SVS-VAMANA or HNSW with COMPRESSION)", f->alias);
	if (dim && dim != f->dim)
		return vela_err_set(err, VELA_EDIM, "queries have %u dimensions, field '%s' has %u",
				    dim, f->alias, f->dim);
	if (flat_count(f->flat) < db_vec_build_threshold(f))
		return vela_err_set(err, VELA_EBUSY, "field '%s' holds %llu vectors, fewer than its "
				    "training threshold %llu", f->alias,
				    (unsigned long long)flat_count(f->flat),
				    (unsigned long long)db_vec_build_threshold(f));
	if (f->build_queued)
		return vela_err_set(err, VELA_EBUSY, "field '%s' is already being built", f->alias);
	return VELA_OK;
}

/* The training queries: a checked copy of the caller's, or the recorded ones. */
static int train_queries(vela_db_t *db, const db_index_t *ix, uint32_t k, const float *queries,
			 size_t n, uint32_t dim, float **Q, size_t *m, vela_err_t *err)
{
	*Q = NULL;
	*m = 0;
	if (queries == NULL) {
		if (db_qsample_copy(db, ix, k, Q, m))
			return vela_err_set(err, VELA_ENOMEM, "out of memory");
		queries_normalise(&ix->fields[k], *Q, *m);
		return VELA_OK;
	}
	size_t total = vela_mul_size(n, dim);
	for (size_t i = 0; i < total; i++)
		if (!isfinite(queries[i]))
			return vela_err_set(err, VELA_EINVAL, "query %zu has a non-finite element",
					    i / dim);
	if ((*Q = malloc(total * sizeof(float) + 1)) == NULL)
		return vela_err_set(err, VELA_ENOMEM, "out of memory");
	memcpy(*Q, queries, total * sizeof(float));
	*m = n;
	queries_normalise(&ix->fields[k], *Q, n);
	return VELA_OK;
}

int vela_index_train(vela_db_t *db, const char *index, const char *field, const float *queries,
		     size_t n_queries, uint32_t dim, vela_err_t *err)
{
	if (db == NULL || index == NULL || (queries && (n_queries == 0 || dim == 0)))
		return vela_err_set(err, VELA_EINVAL, "invalid argument");
	/* write_mu: no write applies, no build installs, while we look. */
	pthread_mutex_lock(&db->write_mu);
	db_index_t *ix = db_index_find(db, index);
	uint32_t k = 0;
	float *Q = NULL;
	size_t m = 0;
	int rc = ix ? train_field(ix, field, &k, err)
		    : vela_err_set(err, VELA_ENOTFOUND, "no index '%s'", index);
	if (rc == 0)
		rc = train_check(&ix->fields[k], queries ? dim : 0, err);
	if (rc == 0)
		rc = train_queries(db, ix, k, queries, n_queries, ix->fields[k].dim, &Q, &m, err);
	if (rc == 0 && db->builder) { /* readers (vela_index_info) see build_queued */
		pthread_rwlock_wrlock(&db->lock);
		ix->fields[k].build_failed = false;
		rc = db_build_submit(db, ix, k, Q, m, ix->fields[k].graph != NULL);
		pthread_rwlock_unlock(&db->lock);
		Q = NULL; /* the job owns it */
	} else if (rc == 0) {
		pthread_rwlock_wrlock(&db->lock);
		rc = build_now(db, ix, k, Q, m);
		pthread_rwlock_unlock(&db->lock);
		if (rc)
			vela_err_set(err, rc, "training failed: %s", vela_strerror(rc));
	}
	pthread_mutex_unlock(&db->write_mu);
	free(Q);
	return rc;
}
