/* The catalog format (db/catalog.c): version 5 keeps the algorithm name a
 * GRAPH field was created with (HNSW or SVS-VAMANA, one Vamana graph behind
 * both), version 4 entries still load (a compressed graph reads as
 * SVS-VAMANA, any other as HNSW), through db_index_unpack and through a
 * reopen; and vela_field_memory (db/fieldinfo.c) splits a field's memory. */
#include "test_db_util.h"
#include "db/db.h"

static char dir[64];

static void setup(void)
{
	tmpdir_make(dir, sizeof(dir));
}

static void teardown(void)
{
	tmpdir_remove(dir);
}

TestSuite(db_catalog, .init = setup, .fini = teardown, .timeout = 120);

/* ------------------------------------------------------------ a version-4 writer */

typedef struct {
	uint8_t b[1024];
	size_t n;
} buf_t;

static void put_u32(buf_t *w, uint32_t v)
{
	cr_assert_leq(w->n + 4, sizeof(w->b));
	vela_put_be32(w->b + w->n, v);
	w->n += 4;
}

static void put_str(buf_t *w, const char *s)
{
	put_u32(w, (uint32_t)strlen(s));
	cr_assert_leq(w->n + strlen(s), sizeof(w->b));
	memcpy(w->b + w->n, s, strlen(s));
	w->n += strlen(s);
}

typedef struct {
	const char *name;
	vela_field_type_t type;
	vela_algo_t algo;
	uint32_t dim, degree, compression;
} v4_field_t;

/* The layout db_index_pack wrote before version 5 (no graph_name). */
static void v4_pack(buf_t *w, uint32_t id, const char *name, const v4_field_t *f, uint32_t nf)
{
	w->n = 0;
	put_u32(w, DB_CATALOG_MAGIC);
	put_u32(w, 4);
	put_u32(w, id);
	put_str(w, name);
	put_u32(w, 1);
	put_str(w, "doc:");
	put_u32(w, nf);
	for (uint32_t i = 0; i < nf; i++) {
		put_str(w, f[i].name);
		put_str(w, f[i].name);
		uint8_t b[6] = {(uint8_t)f[i].type, ',', 0, (uint8_t)f[i].algo, VELA_VEC_FLOAT32,
				VELA_METRIC_L2};
		memcpy(w->b + w->n, b, 6);
		w->n += 6;
		put_u32(w, f[i].dim);
		put_u32(w, f[i].degree); /* version 2 */
		put_u32(w, 0);
		put_u32(w, 0);
		put_u32(w, f[i].compression); /* version 3 */
		put_u32(w, 0);
		put_u32(w, 0);
		put_str(w, ""); /* version 4: model, source */
		put_str(w, "");
	}
}

static const v4_field_t V4_FIELDS[] = {
	{"t", VELA_FIELD_TAG, VELA_ALGO_FLAT, 0, 0, 0},
	{"flat", VELA_FIELD_VECTOR, VELA_ALGO_FLAT, 8, 0, 0},
	{"graph", VELA_FIELD_VECTOR, VELA_ALGO_GRAPH, 8, 16, 0},
	{"lvq", VELA_FIELD_VECTOR, VELA_ALGO_GRAPH, 8, 0, 1 + GRAPH_LVQ_LVQ4X8},
};

static void check_v4_names(const uint32_t *names)
{
	cr_assert_eq(names[0], 0u);
	cr_assert_eq(names[1], 0u);
	cr_assert_eq(names[2], VELA_GRAPH_NAME_HNSW);
	cr_assert_eq(names[3], VELA_GRAPH_NAME_SVS_VAMANA);
}

Test(db_catalog, version4_unpacks_with_inferred_algorithm_name)
{
	buf_t w;
	v4_pack(&w, 7, "old", V4_FIELDS, 4);
	db_index_t *ix;
	vela_err_t err = {0};
	cr_assert_eq(db_index_unpack(w.b, w.n, &ix, &err), 0, "%s", err.msg);
	cr_assert_eq(ix->id, 7u);
	cr_assert_eq(ix->n_fields, 4u);
	uint32_t names[4];
	for (int i = 0; i < 4; i++)
		names[i] = ix->fields[i].graph_name;
	check_v4_names(names);
	cr_assert_eq(ix->fields[2].graph_degree, 16u);
	cr_assert_eq(ix->fields[3].compression, 1u + GRAPH_LVQ_LVQ4X8);

	/* Packed again it is version 5, and keeps the (now explicit) names. */
	uint8_t *buf;
	size_t len;
	cr_assert_eq(db_index_pack(ix, &buf, &len), 0);
	cr_assert_eq(vela_get_be32(buf + 4), DB_CATALOG_VERSION);
	cr_assert_eq(DB_CATALOG_VERSION, 5u);
	cr_assert_eq(len, w.n + 4 * 4, "one u32 more per field");
	db_index_t *ix2;
	cr_assert_eq(db_index_unpack(buf, len, &ix2, &err), 0, "%s", err.msg);
	for (int i = 0; i < 4; i++)
		names[i] = ix2->fields[i].graph_name;
	check_v4_names(names);
	free(buf);
	db_index_free(ix2);
	db_index_free(ix);

	/* A cut entry is corrupt, a newer one refused. */
	cr_assert_eq(db_index_unpack(w.b, w.n - 1, &ix, &err), VELA_ECORRUPT);
	vela_put_be32(w.b + 4, DB_CATALOG_VERSION + 1);
	cr_assert_eq(db_index_unpack(w.b, w.n, &ix, &err), VELA_EVERSION);
}

static vela_field_def_t vec_field(const char *name, vela_algo_t algo, uint32_t graph_name,
				  uint32_t compression)
{
	return (vela_field_def_t){.name = name, .type = VELA_FIELD_VECTOR, .algo = algo,
				  .vec_type = VELA_VEC_FLOAT32, .dim = 8, .metric = VELA_METRIC_L2,
				  .compression = compression, .graph_name = graph_name};
}

Test(db_catalog, version5_keeps_the_name_the_user_gave)
{
	/* The two cases a version-4 catalog gets wrong, and the defaults. */
	vela_field_def_t f[] = {
		vec_field("svs", VELA_ALGO_GRAPH, VELA_GRAPH_NAME_SVS_VAMANA, 0),
		vec_field("hnsw_lvq", VELA_ALGO_GRAPH, VELA_GRAPH_NAME_HNSW, 1 + GRAPH_LVQ_LVQ8),
		vec_field("auto", VELA_ALGO_GRAPH, VELA_GRAPH_NAME_AUTO, 0),
		vec_field("auto_lvq", VELA_ALGO_GRAPH, VELA_GRAPH_NAME_AUTO, 1 + GRAPH_LVQ_LVQ8),
		vec_field("flat", VELA_ALGO_FLAT, VELA_GRAPH_NAME_AUTO, 0),
	};
	static const uint32_t want[] = {VELA_GRAPH_NAME_SVS_VAMANA, VELA_GRAPH_NAME_HNSW,
					VELA_GRAPH_NAME_HNSW, VELA_GRAPH_NAME_SVS_VAMANA, 0};
	vela_index_def_t def = {.name = "idx", .fields = f, .n_fields = 5};
	vela_db_t *db = db_open_ok(dir, 0);
	vela_err_t err = {0};
	cr_assert_eq(vela_index_create(db, &def, &err), 0, "%s", err.msg);
	for (int pass = 0; pass < 2; pass++) {
		vela_index_def_t *d;
		cr_assert_eq(vela_index_describe(db, "idx", &d, &err), 0, "%s", err.msg);
		for (int i = 0; i < 5; i++)
			cr_assert_eq(d->fields[i].graph_name, want[i], "pass %d field %s", pass,
				     d->fields[i].name);
		vela_index_def_free(d);
		vela_db_close(db);
		db = db_open_ok(dir, 0);
	}

	/* Out of range, or a name on a FLAT field: refused. */
	vela_field_def_t bad[] = {vec_field("v", VELA_ALGO_GRAPH, 3, 0)};
	vela_index_def_t bdef = {.name = "bad", .fields = bad, .n_fields = 1};
	cr_assert_eq(vela_index_create(db, &bdef, &err), VELA_EINVAL);
	bad[0] = vec_field("v", VELA_ALGO_FLAT, VELA_GRAPH_NAME_HNSW, 0);
	cr_assert_eq(vela_index_create(db, &bdef, &err), VELA_EINVAL);
	vela_db_close(db);
}

Test(db_catalog, version4_entry_loads_at_open)
{
	vela_db_t *db = db_open_ok(dir, 0);
	vela_err_t err = {0};
	vela_field_def_t f[4] = {{.name = "t", .type = VELA_FIELD_TAG}};
	for (int i = 1; i < 4; i++) {
		f[i] = vec_field(V4_FIELDS[i].name, V4_FIELDS[i].algo, 0, V4_FIELDS[i].compression);
		f[i].graph_max_degree = V4_FIELDS[i].degree;
	}
	vela_index_def_t def = {.name = "old", .prefixes = (const char *[]){"doc:"},
				.n_prefixes = 1, .fields = f, .n_fields = 4};
	cr_assert_eq(vela_index_create(db, &def, &err), 0, "%s", err.msg);
	float v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
	cr_assert_eq(hset1(db, "doc:1", "flat", v, sizeof v), 0);

	/* Replace the entry with what an older vela wrote (same index id). */
	buf_t w;
	v4_pack(&w, db_index_find(db, "old")->id, "old", V4_FIELDS, 4);
	storage_txn_t *txn;
	cr_assert_eq(storage_txn_begin(db->env, NULL, 1, &txn), 0);
	cr_assert_eq(storage_put(txn, ST_CATALOG, "old", 3, w.b, w.n), 0);
	cr_assert_eq(storage_txn_commit(txn), 0);
	vela_db_close(db);

	db = db_open_ok(dir, 0);
	vela_index_def_t *d;
	cr_assert_eq(vela_index_describe(db, "old", &d, &err), 0, "%s", err.msg);
	uint32_t names[4];
	for (int i = 0; i < 4; i++)
		names[i] = d->fields[i].graph_name;
	check_v4_names(names);
	vela_index_def_free(d);
	vela_index_info_t info;
	cr_assert_eq(vela_index_info(db, "old", &info, &err), 0);
	cr_assert_eq(info.num_docs, 1u, "the documents are still indexed");
	vela_db_close(db);
}

/* ------------------------------------------------------------ vela_field_memory */

#define MN 1500
#define MDIM 64

Test(db_catalog, field_memory_splits_vectors_codes_and_graph)
{
	vela_field_def_t f[] = {
		vec_field("v", VELA_ALGO_FLAT, 0, 0),
		{.name = "t", .type = VELA_FIELD_TAG},
	};
	f[0].dim = MDIM;
	vela_field_def_t g[] = {vec_field("v", VELA_ALGO_GRAPH, VELA_GRAPH_NAME_SVS_VAMANA,
					  1 + GRAPH_LVQ_LEANVEC4X8)};
	g[0].dim = MDIM;
	g[0].alias = "vv";
	g[0].reduce = 16;
	g[0].training_threshold = VELA_TRAINING_THRESHOLD_MIN;
	g[0].graph_max_degree = 24;
	vela_index_def_t fdef = {.name = "f", .fields = f, .n_fields = 2};
	vela_index_def_t gdef = {.name = "g", .fields = g, .n_fields = 1};
	vela_db_t *db = db_open_ok(dir, 1ull << 28); /* no background builds: built on write */
	vela_err_t err = {0};
	cr_assert_eq(vela_index_create(db, &fdef, &err), 0, "%s", err.msg);
	cr_assert_eq(vela_index_create(db, &gdef, &err), 0, "%s", err.msg);
	uint64_t s = 99;
	for (int i = 0; i < MN; i++) {
		float v[MDIM];
		for (int j = 0; j < MDIM; j++) {
			s = s * 6364136223846793005ull + 1442695040888963407ull;
			v[j] = (float)(s >> 40) / (float)(1u << 24) - 0.5f;
		}
		char key[32];
		snprintf(key, sizeof key, "doc:%d", i);
		cr_assert_eq(hset1(db, key, "v", v, sizeof v), 0);
	}
	vela_field_memory_t fm, gm;
	cr_assert_eq(vela_field_memory(db, "f", "v", &fm, &err), 0, "%s", err.msg);
	cr_assert_eq(vela_field_memory(db, "g", "vv", &gm, &err), 0, "%s", err.msg);
	cr_assert_geq(fm.vectors, (uint64_t)MN * MDIM * sizeof(float));
	cr_assert_eq(fm.compressed, 0u);
	cr_assert_eq(fm.graph, 0u);
	cr_assert_eq(fm.total, fm.vectors);
	/* Once trained, the compressed field keeps its codes and only the
	 * docids of its F32 rows (released: db_vec_rows_release). */
	cr_assert_lt(gm.vectors * 16, fm.vectors, "F32 rows released: %llu bytes left",
		     (unsigned long long)gm.vectors);
	cr_assert_gt(gm.compressed, 0u, "trained past TRAINING_THRESHOLD");
	cr_assert_lt(gm.compressed, fm.vectors, "LeanVec4x8 codes are smaller than F32");
	cr_assert_lt(gm.total, fm.total + gm.graph, "codes + graph, not F32 beside them");
	cr_assert_gt(gm.graph, 0u);
	cr_assert_eq(gm.total, gm.vectors + gm.compressed + gm.graph);

	/* By hash field name too; errors. */
	vela_field_memory_t m;
	cr_assert_eq(vela_field_memory(db, "g", "v", &m, &err), 0);
	cr_assert_eq(m.total, gm.total);
	cr_assert_eq(vela_field_memory(db, "nope", "v", &m, &err), VELA_ENOTFOUND);
	cr_assert_eq(vela_field_memory(db, "f", "nope", &m, &err), VELA_ENOTFOUND);
	cr_assert_eq(vela_field_memory(db, "f", "t", &m, &err), VELA_EINVAL);
	cr_assert_eq(vela_field_memory(db, "f", NULL, &m, &err), VELA_EINVAL);
	vela_db_close(db);
}
