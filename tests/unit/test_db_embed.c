/* Computed vectors in the engine (FT.CREATE ... MODEL m SOURCE f): the
 * definition survives a reopen, which writes need a vector computed
 * (vela_embed_targets), the back-fill walk (vela_embed_missing), the
 * conditional write of a back-filled vector (vela_batch_hset_if) and HDEL of
 * a source deleting its vector. The expected answers are written out by hand
 * from the documented semantics. */
#include "test_db_util.h"

#define DIM 4

static const vela_field_def_t FIELDS[] = {
	{.name = "body", .type = VELA_FIELD_TEXT},
	{.name = "vec", .type = VELA_FIELD_VECTOR, .algo = VELA_ALGO_FLAT,
	 .vec_type = VELA_VEC_FLOAT32, .dim = DIM, .metric = VELA_METRIC_COSINE,
	 .model = "mini", .source = "body"},
};

static vela_db_t *db_with_index(char *dir, size_t cap)
{
	tmpdir_make(dir, cap);
	vela_db_t *db = db_open_ok(dir, 0);
	const char *pre[] = {"doc:"};
	vela_index_def_t def = {.name = "idx", .prefixes = pre, .n_prefixes = 1,
				.fields = FIELDS, .n_fields = 2};
	vela_err_t err = {0};
	cr_assert_eq(vela_index_create(db, &def, &err), 0, "%s", err.msg);
	return db;
}

static vela_kv_t kv_str(const char *n, const char *v)
{
	return (vela_kv_t){n, strlen(n), v, strlen(v)};
}

Test(db_embed, definition_survives_reopen)
{
	char dir[64];
	vela_db_t *db = db_with_index(dir, sizeof(dir));
	vela_db_close(db);
	db = db_open_ok(dir, 0);
	vela_index_def_t *d;
	cr_assert_eq(vela_index_describe(db, "idx", &d, NULL), 0);
	cr_assert_str_eq(d->fields[1].model, "mini");
	cr_assert_str_eq(d->fields[1].source, "body");
	cr_assert_null(d->fields[0].model);
	vela_index_def_free(d);
	vela_db_close(db);
	tmpdir_remove(dir);
}

Test(db_embed, model_without_source_is_refused)
{
	char dir[64];
	tmpdir_make(dir, sizeof(dir));
	vela_db_t *db = db_open_ok(dir, 0);
	vela_field_def_t f = FIELDS[1];
	f.source = NULL;
	vela_index_def_t def = {.name = "bad", .fields = &f, .n_fields = 1};
	vela_err_t err = {0};
	cr_assert_eq(vela_index_create(db, &def, &err), VELA_EINVAL);
	f.source = "body";
	f.model = "../etc";
	cr_assert_eq(vela_index_create(db, &def, &err), VELA_EINVAL);
	vela_db_close(db);
	tmpdir_remove(dir);
}

Test(db_embed, targets_follow_prefix_and_source)
{
	char dir[64];
	vela_db_t *db = db_with_index(dir, sizeof(dir));
	vela_kv_t kv[] = {kv_str("genre", "jazz"), kv_str("body", "old"), kv_str("body", "new")};
	vela_embed_target_t *t;
	size_t n;
	cr_assert_eq(vela_embed_targets(db, "doc:1", 5, kv, 3, &t, &n, NULL), 0);
	cr_assert_eq(n, 1);
	cr_assert_str_eq(t[0].model, "mini");
	cr_assert_str_eq(t[0].field, "vec");
	cr_assert_eq(t[0].source, 2, "the last write of the source counts");
	cr_assert_eq(t[0].dim, DIM);
	vela_embed_targets_free(t, n);
	cr_assert_eq(vela_embed_targets(db, "other:1", 7, kv, 3, &t, &n, NULL), 0);
	cr_assert_eq(n, 0, "a key outside the prefix needs nothing");
	cr_assert_eq(vela_embed_targets(db, "doc:1", 5, kv, 1, &t, &n, NULL), 0);
	cr_assert_eq(n, 0, "a write without the source needs nothing");
	vela_db_close(db);
	tmpdir_remove(dir);
}

struct found {
	char keys[8][16];
	size_t n;
};

static int on_missing(void *ctx, const void *key, size_t klen, const vela_embed_target_t *t,
		      const char *source, const void *text, size_t tlen)
{
	struct found *f = ctx;
	cr_assert_str_eq(t->field, "vec");
	cr_assert_str_eq(source, "body");
	cr_assert_gt(tlen, 0);
	(void)text;
	cr_assert_lt(f->n, 8);
	snprintf(f->keys[f->n++], 16, "%.*s", (int)klen, (const char *)key);
	return 0;
}

Test(db_embed, missing_walk_resumes_and_finishes)
{
	char dir[64];
	vela_db_t *db = db_with_index(dir, sizeof(dir));
	float v[DIM] = {1, 0, 0, 0};
	cr_assert_eq(hset1(db, "doc:a", "body", "x", 1), 0);
	cr_assert_eq(hset1(db, "doc:b", "body", "y", 1), 0);
	cr_assert_eq(hset1(db, "doc:b", "vec", v, sizeof(v)), 0); /* has its vector */
	cr_assert_eq(hset1(db, "doc:c", "genre", "z", 1), 0);     /* no source */
	cr_assert_eq(hset1(db, "doc:d", "body", "w", 1), 0);
	cr_assert_eq(hset1(db, "zzz:e", "body", "q", 1), 0);      /* not indexed */
	struct found f = {0};
	void *cur = NULL;
	size_t clen = 0;
	bool done = false;
	int steps = 0;
	while (!done && steps++ < 10)
		cr_assert_eq(vela_embed_missing(db, "idx", &cur, &clen, 2, on_missing, &f, &done,
						NULL), 0);
	cr_assert(done);
	cr_assert_eq(f.n, 2);
	cr_assert_str_eq(f.keys[0], "doc:a");
	cr_assert_str_eq(f.keys[1], "doc:d");
	free(cur);
	cur = NULL;
	cr_assert_eq(vela_embed_missing(db, "gone", &cur, &clen, 2, on_missing, &f, &done, NULL),
		     VELA_ENOTFOUND);
	cr_assert(done);
	vela_db_close(db);
	tmpdir_remove(dir);
}

static size_t doc_fields(vela_db_t *db, const char *key, const char *field, const void **val,
			 size_t *len)
{
	vela_doc_t *d;
	if (vela_get(db, key, strlen(key), &d, NULL))
		return 0;
	size_t n = d->n_fields;
	static char copy[64];
	*val = NULL;
	for (size_t i = 0; i < n; i++)
		if (d->fields[i].name_len == strlen(field) &&
		    memcmp(d->fields[i].name, field, strlen(field)) == 0) {
			*len = d->fields[i].value_len < sizeof(copy) ? d->fields[i].value_len : 0;
			memcpy(copy, d->fields[i].value, *len);
			*val = copy;
		}
	vela_doc_free(d);
	return n;
}

Test(db_embed, hset_if_writes_only_over_the_same_text)
{
	char dir[64];
	vela_db_t *db = db_with_index(dir, sizeof(dir));
	cr_assert_eq(hset1(db, "doc:1", "body", "first", 5), 0);
	float v[DIM] = {0, 1, 0, 0};
	vela_kv_t set = {"vec", 3, v, sizeof(v)};
	vela_kv_t stale = kv_str("body", "older text");
	vela_kv_t same = kv_str("body", "first");
	vela_batch_t *b;
	int applied = -1;
	cr_assert_eq(vela_batch_begin(db, &b, NULL), 0);
	cr_assert_eq(vela_batch_hset_if(b, "doc:1", 5, &stale, &set, 1, &applied, NULL), 0);
	cr_assert_eq(applied, 0, "the text changed since it was read: nothing written");
	cr_assert_eq(vela_batch_hset_if(b, "doc:2", 5, &same, &set, 1, &applied, NULL), 0);
	cr_assert_eq(applied, 0, "no such document: nothing written");
	cr_assert_eq(vela_batch_hset_if(b, "doc:1", 5, &same, &set, 1, &applied, NULL), 0);
	cr_assert_eq(applied, 1);
	cr_assert_eq(vela_batch_commit(b, NULL), 0);
	const void *val;
	size_t len = 0;
	cr_assert_eq(doc_fields(db, "doc:1", "vec", &val, &len), 2);
	cr_assert_eq(len, sizeof(v));
	cr_assert_eq(memcmp(val, v, sizeof(v)), 0);
	cr_assert_eq(doc_fields(db, "doc:2", "vec", &val, &len), 0);
	vela_db_close(db);
	tmpdir_remove(dir);
}

Test(db_embed, hdel_of_source_deletes_its_vector)
{
	char dir[64];
	vela_db_t *db = db_with_index(dir, sizeof(dir));
	float v[DIM] = {0, 0, 1, 0};
	cr_assert_eq(hset1(db, "doc:1", "body", "text", 4), 0);
	cr_assert_eq(hset1(db, "doc:1", "vec", v, sizeof(v)), 0);
	cr_assert_eq(hset1(db, "doc:1", "genre", "g", 1), 0);
	vela_kv_t name = {"body", 4, NULL, 0};
	size_t removed = 0;
	cr_assert_eq(vela_hdel(db, "doc:1", 5, &name, 1, &removed, NULL), 0);
	cr_assert_eq(removed, 2, "body and the vector computed from it");
	const void *val;
	size_t len;
	cr_assert_eq(doc_fields(db, "doc:1", "vec", &val, &len), 1);
	cr_assert_null(val);
	/* Outside the index's prefix the same field names are plain fields. */
	cr_assert_eq(hset1(db, "x:1", "body", "t", 1), 0);
	cr_assert_eq(hset1(db, "x:1", "vec", v, sizeof(v)), 0);
	cr_assert_eq(vela_hdel(db, "x:1", 3, &name, 1, &removed, NULL), 0);
	cr_assert_eq(removed, 1);
	vela_db_close(db);
	tmpdir_remove(dir);
}
