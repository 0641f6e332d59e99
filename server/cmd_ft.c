#define _GNU_SOURCE /* qsort_r */
/* The Redis Query Engine subset: FT.CREATE FT.SEARCH FT.INFO FT._LIST
 * FT.DROPINDEX FT.CONFIG FT.EXPLAIN FT.PROFILE (reference §2), and vela's
 * FT.TRAIN and FT.LAYOUT. FT.SEARCH,
 * FT.PROFILE and FT.EXPLAIN run on the search workers; the FT.SEARCH
 * queries a worker takes together go through vela_search_batch. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/common.h"
#include "index/index.h"
#include "quant/quant.h"
#include "server/srv_int.h"

#define FT_DIALECT_DEFAULT 2

/* ------------------------------------------------------------ FT.CREATE */

typedef struct ft_create {
	vela_index_def_t def;
	const char **prefixes;
	vela_field_def_t *fields;
	char *names; /* one buffer for the NUL-terminated names */
} ft_create_t;

static bool is_field_type(const resp_arg_t *a)
{
	return arg_eq(a, "TEXT") || arg_eq(a, "TAG") || arg_eq(a, "NUMERIC") ||
	       arg_eq(a, "VECTOR") || arg_eq(a, "GEO") || arg_eq(a, "GEOSHAPE");
}

/* Skip the options of a non-vector field; returns the next argument index. */
static int skip_field_opts(cmd_ctx_t *x, int i, vela_field_def_t *f)
{
	while (i < x->argc) {
		const resp_arg_t *a = &x->argv[i];
		if (f->type == VELA_FIELD_TAG && arg_eq(a, "SEPARATOR") && i + 1 < x->argc) {
			f->tag_separator = x->argv[i + 1].len ? x->argv[i + 1].p[0] : ',';
			i += 2;
		} else if (f->type == VELA_FIELD_TAG && arg_eq(a, "CASESENSITIVE")) {
			f->case_sensitive = true;
			i++;
		} else if ((arg_eq(a, "WEIGHT") || arg_eq(a, "PHONETIC")) && i + 1 < x->argc) {
			i += 2;
		} else if (arg_eq(a, "SORTABLE") || arg_eq(a, "UNF") || arg_eq(a, "NOSTEM") ||
			   arg_eq(a, "NOINDEX") || arg_eq(a, "INDEXMISSING") ||
			   arg_eq(a, "INDEXEMPTY") || arg_eq(a, "WITHSUFFIXTRIE")) {
			i++;
		} else {
			break;
		}
	}
	return i;
}

static int vec_err(cmd_ctx_t *x, const char *algo, const char *fmt, const char *what)
{
	char msg[256];
	msg[0] = '-';
	snprintf(msg + 1, sizeof(msg) - 1, fmt, algo, what);
	resp_error(x->out, msg);
	return -1;
}

/* One name/value pair of a VECTOR field. */
static int vec_attr(cmd_ctx_t *x, const char *algo, const resp_arg_t *n, const resp_arg_t *v,
		    vela_field_def_t *f)
{
	int64_t iv;
	if (arg_eq(n, "TYPE")) {
		if (arg_eq(v, "FLOAT32"))
			f->vec_type = VELA_VEC_FLOAT32;
		else if (arg_eq(v, "FLOAT16"))
			f->vec_type = VELA_VEC_FLOAT16;
		else
			return vec_err(x, algo, "Bad arguments for vector similarity %s index `TYPE`: "
						"%s is not supported (FLOAT32, FLOAT16)", v->p);
	} else if (arg_eq(n, "DIM")) {
		if (arg_int64(v, &iv) || iv < 1 || iv > VELA_DIM_MAX)
			return vec_err(x, algo, "Bad arguments for vector similarity %s index `DIM`: "
						"%s (must be 1..32768)", v->p);
		f->dim = (uint32_t)iv;
	} else if (arg_eq(n, "DISTANCE_METRIC")) {
		if (arg_eq(v, "L2"))
			f->metric = VELA_METRIC_L2;
		else if (arg_eq(v, "IP"))
			f->metric = VELA_METRIC_IP;
		else if (arg_eq(v, "COSINE"))
			f->metric = VELA_METRIC_COSINE;
		else
			return vec_err(x, algo, "Bad arguments for vector similarity %s index "
						"`DISTANCE_METRIC`: %s", v->p);
	} else if (arg_eq(n, "M") || arg_eq(n, "EF_CONSTRUCTION") || arg_eq(n, "EF_RUNTIME") ||
		   arg_eq(n, "GRAPH_MAX_DEGREE") || arg_eq(n, "CONSTRUCTION_WINDOW_SIZE") ||
		   arg_eq(n, "SEARCH_WINDOW_SIZE")) {
		if (arg_int64(v, &iv) || iv < 1 || iv > 100000)
			return vec_err(x, algo, "Bad arguments for vector similarity %s index: "
						"invalid value %s", v->p);
		/* HNSW's layer 0 has 2*M links: the Vamana degree that matches it. */
		if (arg_eq(n, "M"))
			f->graph_max_degree = (uint32_t)(2 * iv);
		else if (arg_eq(n, "GRAPH_MAX_DEGREE"))
			f->graph_max_degree = (uint32_t)iv;
		else if (arg_eq(n, "EF_CONSTRUCTION") || arg_eq(n, "CONSTRUCTION_WINDOW_SIZE"))
			f->graph_build_window = (uint32_t)iv;
		else
			f->graph_search_window = (uint32_t)iv;
	} else if (arg_eq(n, "COMPRESSION")) {
		graph_lvq_kind_t kind;
		if (graph_lvq_kind_parse(v->p, &kind))
			return vec_err(x, algo, "Bad arguments for vector similarity %s index "
						"`COMPRESSION`: %s (LVQ4, LVQ8, LVQ4x4, LVQ4x8, LeanVec4x8, "
						"LeanVec8x8)", v->p);
		f->compression = 1 + (uint32_t)kind;
	} else if (arg_eq(n, "TRAINING_THRESHOLD") || arg_eq(n, "REDUCE")) {
		if (arg_int64(v, &iv) || iv < 1 || iv > VELA_DIM_MAX * 100)
			return vec_err(x, algo, "Bad arguments for vector similarity %s index: "
						"invalid value %s", v->p);
		if (arg_eq(n, "REDUCE"))
			f->reduce = (uint32_t)iv;
		else
			f->training_threshold = (uint32_t)iv;
	} else if (arg_eq(n, "MODEL")) { /* vela: computed vectors (docs/embeddings.md) */
		f->model = v->p;
	} else if (arg_eq(n, "SOURCE")) {
		f->source = v->p;
	} else if (!(arg_eq(n, "INITIAL_CAP") || arg_eq(n, "BLOCK_SIZE") || arg_eq(n, "EPSILON"))) {
		return vec_err(x, algo, "Bad arguments for algorithm %s: %s", n->p);
	}
	return 0;
}

/* MODEL m SOURCE f: the encoder stage loaded m before this runs (embedq.c),
 * so its dimension is known here; DIM must match it. */
static int parse_model(cmd_ctx_t *x, const vela_field_def_t *f)
{
	if (f->model == NULL && f->source == NULL)
		return 0;
	if (f->model == NULL || f->source == NULL) {
		resp_error(x->out, "-MODEL and SOURCE go together: MODEL names the embedding model, "
				   "SOURCE the hash field whose text it embeds");
		return -1;
	}
	if (strcmp(f->source, f->name) == 0) {
		resp_errorf(x->out, "-SOURCE of field '%s' cannot be the vector field itself", f->name);
		return -1;
	}
	uint32_t d = embedq_model_dim(x->srv, f->model);
	if (d == 0) {
		resp_errorf(x->out, "-model '%s' is not loaded (FT.CREATE with MODEL cannot run "
				    "inside MULTI)", f->model);
		return -1;
	}
	if (d != f->dim) {
		resp_errorf(x->out, "-DIM %u of field '%s' does not match model '%s' (%u dimensions)",
			    f->dim, f->name, f->model, d);
		return -1;
	}
	return 0;
}

/* VECTOR {FLAT|HNSW|SVS-VAMANA} nargs name value ... ; returns the next index. */
static int parse_vector(cmd_ctx_t *x, int i, vela_field_def_t *f)
{
	if (i + 1 >= x->argc) {
		resp_error(x->out, "-Bad arguments for vector similarity: not enough arguments");
		return -1;
	}
	const char *algo = x->argv[i].p;
	if (!(arg_eq(&x->argv[i], "FLAT") || arg_eq(&x->argv[i], "HNSW") ||
	      arg_eq(&x->argv[i], "SVS-VAMANA"))) {
		resp_errorf(x->out, "-Bad arguments for vector similarity algorithm: %s", algo);
		return -1;
	}
	int64_t nargs;
	if (arg_int64(&x->argv[i + 1], &nargs) || nargs < 0 || nargs > x->argc - i - 2) {
		resp_error(x->out, "-Bad arguments for vector similarity: not enough arguments");
		return -1;
	}
	if (nargs % 2) {
		resp_errorf(x->out, "-Bad number of arguments for vector similarity index: got %lld "
				    "but expected even number as algorithm parameters",
			    (long long)nargs);
		return -1;
	}
	if (nargs < 6) {
		resp_errorf(x->out, "-Expected 6 parameters but got %lld", (long long)nargs);
		return -1;
	}
	f->dim = 0;
	f->metric = (vela_metric_t)-1;
	f->vec_type = (vela_vec_type_t)-1;
	for (int k = 0; k < nargs; k += 2)
		if (vec_attr(x, algo, &x->argv[i + 2 + k], &x->argv[i + 3 + k], f))
			return -1;
	const char *missing = f->dim == 0 ? "DIM" : (int)f->metric < 0 ? "DISTANCE_METRIC"
				: (int)f->vec_type < 0 ? "TYPE" : NULL;
	if (missing) {
		resp_errorf(x->out, "-Missing mandatory parameter: cannot create %s index without "
				    "specifying %s argument", algo, missing);
		return -1;
	}
	/* HNSW and SVS-VAMANA are both served by the Vamana graph; the name is
	 * kept for FT.INFO. */
	f->algo = arg_eq(&x->argv[i], "FLAT") ? VELA_ALGO_FLAT : VELA_ALGO_GRAPH;
	f->graph_name = arg_eq(&x->argv[i], "HNSW") ? VELA_GRAPH_NAME_HNSW
			: arg_eq(&x->argv[i], "SVS-VAMANA") ? VELA_GRAPH_NAME_SVS_VAMANA : 0;
	if (f->training_threshold && !f->compression) {
		resp_error(x->out, "-TRAINING_THRESHOLD is irrelevant when compression was not "
				   "requested");
		return -1;
	}
	if (f->reduce && f->compression < 1 + GRAPH_LVQ_LEANVEC4X8) {
		resp_error(x->out, "-REDUCE is irrelevant when compression is not of type LeanVec");
		return -1;
	}
	if (f->compression && f->algo != VELA_ALGO_GRAPH) {
		resp_error(x->out, "-COMPRESSION is only supported for SVS-VAMANA and HNSW indexes");
		return -1;
	}
	if (parse_model(x, f))
		return -1;
	return i + 2 + (int)nargs;
}

/* SCHEMA field [AS alias] TYPE [opts] ... ; returns 0 or -1 (reply written). */
static int parse_schema(cmd_ctx_t *x, int i, ft_create_t *fc)
{
	uint32_t n = 0;
	while (i < x->argc) {
		vela_field_def_t *f = &fc->fields[n];
		memset(f, 0, sizeof(*f));
		f->name = x->argv[i++].p;
		if (i + 1 < x->argc && arg_eq(&x->argv[i], "AS")) {
			f->alias = x->argv[i + 1].p;
			i += 2;
		}
		if (i >= x->argc || !is_field_type(&x->argv[i])) {
			resp_errorf(x->out, "-Invalid field type for field `%s`", f->name);
			return -1;
		}
		const resp_arg_t *t = &x->argv[i++];
		if (arg_eq(t, "GEO") || arg_eq(t, "GEOSHAPE")) {
			resp_errorf(x->out, "-Field type %s is not supported", t->p);
			return -1;
		}
		f->type = arg_eq(t, "TEXT") ? VELA_FIELD_TEXT : arg_eq(t, "TAG") ? VELA_FIELD_TAG
			  : arg_eq(t, "NUMERIC") ? VELA_FIELD_NUMERIC : VELA_FIELD_VECTOR;
		i = f->type == VELA_FIELD_VECTOR ? parse_vector(x, i, f) : skip_field_opts(x, i, f);
		if (i < 0)
			return -1;
		n++;
	}
	if (n == 0) {
		resp_error(x->out, "-Fields arguments are missing");
		return -1;
	}
	fc->def.n_fields = n;
	return 0;
}

/* Options before SCHEMA; returns the index after SCHEMA or -1. */
static int parse_create_opts(cmd_ctx_t *x, ft_create_t *fc)
{
	int i = 2;
	for (; i < x->argc && !arg_eq(&x->argv[i], "SCHEMA"); i++) {
		const resp_arg_t *a = &x->argv[i];
		int64_t n;
		if (arg_eq(a, "ON") && i + 1 < x->argc) {
			if (!arg_eq(&x->argv[++i], "HASH")) {
				resp_error(x->out, "-Only ON HASH is supported (JSON is not)");
				return -1;
			}
		} else if (arg_eq(a, "PREFIX") && i + 1 < x->argc) {
			if (arg_int64(&x->argv[++i], &n) || n < 0 || n > x->argc - i - 1 ||
			    n > VELA_INDEX_PREFIXES_MAX) {
				resp_error(x->out, "-Bad arguments for PREFIX: invalid count");
				return -1;
			}
			for (int64_t k = 0; k < n; k++)
				fc->prefixes[fc->def.n_prefixes++] = x->argv[++i].p;
		} else if (arg_eq(a, "STOPWORDS") && i + 1 < x->argc) {
			if (arg_int64(&x->argv[++i], &n) || n < 0 || n > x->argc - i - 1) {
				resp_error(x->out, "-Bad arguments for STOPWORDS: invalid count");
				return -1;
			}
			i += (int)n;
		} else if (arg_eq(a, "SKIPINITIALSCAN")) {
			fc->def.skip_initial_scan = true;
		} else if ((arg_eq(a, "LANGUAGE") || arg_eq(a, "LANGUAGE_FIELD") || arg_eq(a, "SCORE") ||
			    arg_eq(a, "SCORE_FIELD") || arg_eq(a, "PAYLOAD_FIELD") ||
			    arg_eq(a, "TEMPORARY") || arg_eq(a, "INDEXALL")) && i + 1 < x->argc) {
			i++;
		} else if (arg_eq(a, "FILTER")) {
			resp_error(x->out, "-FILTER expressions in FT.CREATE are not supported");
			return -1;
		} else if (!(arg_eq(a, "MAXTEXTFIELDS") || arg_eq(a, "NOOFFSETS") || arg_eq(a, "NOHL") ||
			     arg_eq(a, "NOFIELDS") || arg_eq(a, "NOFREQS"))) {
			resp_errorf(x->out, "-Unknown argument `%s`", a->p);
			return -1;
		}
	}
	if (i >= x->argc) {
		resp_error(x->out, "-No schema found");
		return -1;
	}
	return i + 1;
}

/* On the writer outside a batch (CMD_ALONE). Arguments are NUL-terminated. */
void cmd_ft_create(cmd_ctx_t *x)
{
	ft_create_t fc = {0};
	fc.def.name = x->argv[1].p;
	fc.prefixes = calloc((size_t)x->argc, sizeof(char *));
	fc.fields = calloc((size_t)x->argc, sizeof(vela_field_def_t));
	fc.def.prefixes = fc.prefixes;
	fc.def.fields = fc.fields;
	int i = fc.prefixes && fc.fields ? parse_create_opts(x, &fc) : -1;
	if (i >= 0 && parse_schema(x, i, &fc) == 0) {
		vela_err_t err = {0};
		bool computed = false;
		for (uint32_t k = 0; k < fc.def.n_fields; k++)
			computed |= fc.fields[k].model != NULL;
		if (vela_index_create(x->db, &fc.def, &err)) {
			resp_errorf(x->out, "-%s", err.msg);
		} else {
			resp_simple(x->out, "OK");
			if (computed && !fc.def.skip_initial_scan)
				embedq_backfill(x->srv, fc.def.name);
		}
	} else if (!fc.prefixes || !fc.fields) {
		resp_error(x->out, "OOM out of memory");
	}
	free(fc.prefixes);
	free(fc.fields);
}

/* ------------------------------------------------------------ FT.DROPINDEX / _LIST */

void cmd_ft_dropindex(cmd_ctx_t *x)
{
	bool dd = x->argc >= 3 && arg_eq(&x->argv[2], "DD");
	if (x->argc > 3 || (x->argc == 3 && !dd)) {
		resp_error(x->out, "ERR syntax error");
		return;
	}
	vela_err_t err = {0};
	int rc = vela_index_drop(x->db, x->argv[1].p, dd, &err);
	if (rc == VELA_ENOTFOUND)
		resp_error(x->out, "-Unknown Index name");
	else if (rc)
		resp_errorf(x->out, "-%s", err.msg);
	else
		resp_simple(x->out, "OK");
}

/* FT.TRAIN index [FIELD name] (vela): retrain a compressed graph field on
 * the queries its searches recorded (LeanVec: out-of-distribution when there
 * are enough, docs/server.md) and rebuild its graph in the background. */
void cmd_ft_train(cmd_ctx_t *x)
{
	bool named = x->argc == 4 && arg_eq(&x->argv[2], "FIELD");
	if (x->argc > 4 || x->argc == 3 || (x->argc == 4 && !named)) {
		resp_error(x->out, "ERR syntax error: FT.TRAIN index [FIELD name]");
		return;
	}
	vela_err_t err = {0};
	int rc = vela_index_train(x->db, x->argv[1].p, named ? x->argv[3].p : NULL, NULL, 0, 0,
				 &err);
	if (rc == VELA_ENOTFOUND && strstr(err.msg, "no index"))
		resp_error(x->out, "-Unknown Index name");
	else if (rc)
		resp_errorf(x->out, "-ERR %s", err.msg);
	else
		resp_simple(x->out, "OK");
}

void cmd_ft_list(cmd_ctx_t *x)
{
	char **names;
	size_t n;
	if (vela_index_list(x->db, &names, &n)) {
		resp_error(x->out, "ERR cannot list indexes");
		return;
	}
	resp_set(x->out, n);
	for (size_t i = 0; i < n; i++)
		resp_simple(x->out, names[i]);
	vela_strv_free(names, n);
}

/* ------------------------------------------------------------ FT.INFO */

static const char *metric_name(vela_metric_t m)
{
	return m == VELA_METRIC_L2 ? "L2" : m == VELA_METRIC_IP ? "IP" : "COSINE";
}

static const char *graph_name(const vela_field_def_t *f)
{
	if (f->algo != VELA_ALGO_GRAPH)
		return "FLAT";
	return f->graph_name == VELA_GRAPH_NAME_SVS_VAMANA ? "SVS-VAMANA" : "HNSW";
}

static bool is_svs(const vela_field_def_t *f)
{
	return f->algo == VELA_ALGO_GRAPH && f->graph_name == VELA_GRAPH_NAME_SVS_VAMANA;
}

static bool is_hnsw(const vela_field_def_t *f)
{
	return f->algo == VELA_ALGO_GRAPH && !is_svs(f);
}

/* Reply elements info_vector writes, as name/value pairs: algorithm,
 * data_type, dim, distance_metric; HNSW M, ef_construction; SVS-VAMANA
 * graph_max_degree, construction_window_size, search_window_size; compression
 * (SVS-VAMANA always, HNSW when compressed: a vela extension);
 * training_threshold when compressed; reduced_dim for LeanVec; memory;
 * model and source. */
static size_t info_vector_len(const vela_field_def_t *f)
{
	size_t pairs = 4 + (is_hnsw(f) ? 2 : 0) + (is_svs(f) ? 3 : 0) +
		       (is_svs(f) || f->compression ? 1 : 0) + (f->compression ? 1 : 0) +
		       (f->compression >= 1 + GRAPH_LVQ_LEANVEC4X8 ? 1 : 0) + 1 +
		       (f->model ? 2 : 0);
	return 2 * pairs;
}

/* FT.INFO of a VECTOR attribute, in Redis 8.2's order (reference §2.5), the
 * defaults resolved as the engine resolves them; then vela's `memory`. */
static void info_vector(resp_out_t *o, const vela_field_def_t *f, uint64_t memory)
{
	uint32_t degree = f->graph_max_degree ? f->graph_max_degree : GRAPH_MAX_DEGREE_DEFAULT;
	uint32_t build = f->graph_build_window ? f->graph_build_window
					       : GRAPH_CONSTRUCTION_WINDOW_SIZE_DEFAULT;
	uint32_t search = f->graph_search_window ? f->graph_search_window
						 : GRAPH_SEARCH_WINDOW_SIZE_DEFAULT;
	resp_simple(o, "algorithm");
	resp_simple(o, graph_name(f));
	resp_simple(o, "data_type");
	resp_simple(o, f->vec_type == VELA_VEC_FLOAT16 ? "FLOAT16" : "FLOAT32");
	resp_simple(o, "dim");
	resp_int(o, f->dim);
	resp_simple(o, "distance_metric");
	resp_simple(o, metric_name(f->metric));
	if (is_hnsw(f)) {
		/* M was stored as its layer-0 degree, 2*M (vec_attr). */
		resp_simple(o, "M");
		resp_int(o, degree / 2);
		resp_simple(o, "ef_construction");
		resp_int(o, build);
	} else if (is_svs(f)) {
		resp_simple(o, "graph_max_degree");
		resp_int(o, degree);
		resp_simple(o, "construction_window_size");
		resp_int(o, build);
		resp_simple(o, "search_window_size");
		resp_int(o, search);
	}
	if (is_svs(f) || f->compression) {
		resp_simple(o, "compression");
		resp_simple(o, f->compression
				       ? graph_lvq_kind_name((graph_lvq_kind_t)(f->compression - 1))
				       : "none");
	}
	if (f->compression) {
		resp_simple(o, "training_threshold");
		resp_int(o, f->training_threshold ? f->training_threshold
						  : VELA_TRAINING_THRESHOLD_DEFAULT);
	}
	if (f->compression >= 1 + GRAPH_LVQ_LEANVEC4X8) {
		resp_simple(o, "reduced_dim");
		resp_int(o, f->reduce ? f->reduce : QUANT_LEANVEC_DIMS_DEFAULT(f->dim));
	}
	resp_simple(o, "memory");
	resp_int(o, (int64_t)memory);
	if (f->model) {
		resp_simple(o, "model");
		resp_bulk_str(o, f->model);
		resp_simple(o, "source");
		resp_bulk_str(o, f->source);
	}
}

/* `index` names the index (for the VECTOR fields' memory). */
static void info_attribute(resp_out_t *o, vela_db_t *db, const char *index,
			   const vela_field_def_t *f)
{
	static const char *types[] = {"TAG", "NUMERIC", "TEXT", "VECTOR"};
	size_t n = 6 + (f->type == VELA_FIELD_TAG ? 2 + f->case_sensitive : 0) +
		   (f->type == VELA_FIELD_TEXT ? 2 : 0) +
		   (f->type == VELA_FIELD_VECTOR ? info_vector_len(f) : 0);
	resp_array(o, n);
	resp_simple(o, "identifier");
	resp_bulk_str(o, f->name);
	resp_simple(o, "attribute");
	resp_bulk_str(o, f->alias ? f->alias : f->name);
	resp_simple(o, "type");
	resp_simple(o, types[f->type]);
	if (f->type == VELA_FIELD_TAG) {
		char sep[2] = {f->tag_separator ? f->tag_separator : ',', 0};
		resp_simple(o, "SEPARATOR");
		resp_bulk_str(o, sep);
		if (f->case_sensitive)
			resp_simple(o, "CASESENSITIVE");
	} else if (f->type == VELA_FIELD_TEXT) {
		resp_simple(o, "WEIGHT");
		resp_bulk_str(o, "1");
	} else if (f->type == VELA_FIELD_VECTOR) {
		/* The index was just described: a failure here means it was
		 * dropped meanwhile, and 0 is as true as anything. */
		vela_field_memory_t m = {0};
		vela_err_t err = {0};
		(void)vela_field_memory(db, index, f->alias ? f->alias : f->name, &m, &err);
		info_vector(o, f, m.total);
	}
}

/* ------------------------------------------------------------ layouts */

/* Pairs the layout entry of a field writes (info_layout). */
#define LAYOUT_INFO_PAIRS 24u

/* One vector field's partition layout (docs/partitions.md), as name/value
 * pairs in an array like an attribute's: FT.INFO's "layouts" entries and
 * FT.LAYOUT INFO's reply. */
static void info_layout(resp_out_t *o, const char *field, const vela_layout_info_t *li)
{
	char hash[24];
	snprintf(hash, sizeof(hash), "%016llx", (unsigned long long)li->workload_hash);
	resp_array(o, 2 * LAYOUT_INFO_PAIRS);
	resp_simple(o, "attribute");
	resp_bulk_str(o, field);
	resp_simple(o, "leaves");
	resp_int(o, li->leaves);
	resp_simple(o, "clusters");
	resp_int(o, li->clusters);
	resp_simple(o, "rows");
	resp_int(o, (int64_t)li->rows);
	resp_simple(o, "rows_per_cluster_min");
	resp_int(o, (int64_t)li->min_rows);
	resp_simple(o, "rows_per_cluster_median");
	resp_int(o, (int64_t)li->median_rows);
	resp_simple(o, "rows_per_cluster_max");
	resp_int(o, (int64_t)li->max_rows);
	resp_simple(o, "delta");
	resp_int(o, (int64_t)li->delta);
	resp_simple(o, "stale");
	resp_int(o, li->stale);
	resp_simple(o, "workload_hash");
	resp_bulk_str(o, hash);
	resp_simple(o, "workload_shapes");
	resp_int(o, (int64_t)li->workload_shapes);
	resp_simple(o, "workload_queries");
	resp_int(o, (int64_t)li->workload_queries);
	resp_simple(o, "drift");
	resp_double(o, li->drift);
	resp_simple(o, "build_time_ms");
	resp_double(o, (double)li->build_ns / 1e6);
	resp_simple(o, "built_at_ms");
	resp_int(o, (int64_t)li->built_at_ms);
	resp_simple(o, "loaded");
	resp_int(o, li->loaded);
	resp_simple(o, "rebuilds");
	resp_int(o, (int64_t)li->rebuilds);
	resp_simple(o, "folds");
	resp_int(o, (int64_t)li->folds);
	resp_simple(o, "rebuild_pending");
	resp_int(o, li->rebuild_pending);
	resp_simple(o, "probe_factor");
	resp_double(o, li->probe_factor);
	resp_simple(o, "probe_min");
	resp_int(o, li->probe_min);
	resp_simple(o, "recall");
	resp_double(o, li->recall);
	resp_simple(o, "memory");
	resp_int(o, (int64_t)li->bytes);
	resp_simple(o, "encoding");
	resp_simple(o, li->encoding == VELA_LAYOUT_ENCODING_LVQ8 ? "LVQ8" : "FIELD");
}

/* The layouts of d's vector fields (li: d->n_fields entries, built set
 * for those with one): how many have one. */
static size_t layouts_get(vela_db_t *db, const vela_index_def_t *d, vela_layout_info_t *li)
{
	size_t n = 0;
	for (uint32_t i = 0; li && i < d->n_fields; i++) {
		const vela_field_def_t *f = &d->fields[i];
		vela_err_t err = {0};
		if (f->type == VELA_FIELD_VECTOR &&
		    vela_layout_info(db, d->name, f->alias ? f->alias : f->name, &li[i], &err) == 0 &&
		    li[i].built)
			n++;
		else
			li[i].built = false;
	}
	return n;
}

/* FT.INFO's "layouts": one entry per vector field with a layout. */
static void info_layouts(resp_out_t *o, const vela_index_def_t *d, const vela_layout_info_t *li,
			 size_t n)
{
	resp_array(o, n);
	for (uint32_t i = 0; li && i < d->n_fields; i++)
		if (li[i].built)
			info_layout(o, d->fields[i].alias ? d->fields[i].alias : d->fields[i].name,
				    &li[i]);
}

/* FT.LAYOUT index BUILD [FIELD f] [CLUSTER_ROWS n] [LEAF_MIN n] [MAX_CUTS n]
 * [PROBE_FACTOR x] [PROBE_MIN n] [RECALL r] [ENCODING FIELD|LVQ8] | INFO [FIELD f] |
 * DROP [FIELD f] (vela):
 * the partition layout of a vector field (docs/partitions.md). Without
 * FIELD: the index's only vector field. */
#define FT_LAYOUT_SYNTAX                                                                      \
	"ERR syntax error: FT.LAYOUT index BUILD [FIELD f] [CLUSTER_ROWS n] [LEAF_MIN n] "   \
	"[MAX_CUTS n] [PROBE_FACTOR x] [PROBE_MIN n] [RECALL r] [ENCODING FIELD|LVQ8] | " \
	"INFO [FIELD f] | DROP [FIELD f]"

/* The vector field FT.LAYOUT names (or the only one); replies on failure. */
static const char *layout_field(cmd_ctx_t *x, const vela_index_def_t *d, const char *named)
{
	const char *only = NULL;
	uint32_t nv = 0;
	for (uint32_t i = 0; i < d->n_fields; i++) {
		const vela_field_def_t *f = &d->fields[i];
		const char *q = f->alias ? f->alias : f->name;
		if (named && strcmp(q, named) == 0) {
			if (f->type != VELA_FIELD_VECTOR) {
				resp_errorf(x->out, "-ERR %s is not a vector field", named);
				return NULL;
			}
			return q;
		}
		if (f->type == VELA_FIELD_VECTOR) {
			only = q;
			nv++;
		}
	}
	if (named)
		resp_errorf(x->out, "-ERR Unknown field '%s'", named);
	else if (nv != 1)
		resp_errorf(x->out, "-ERR the index has %u vector fields: name one with FIELD", nv);
	return named ? NULL : nv == 1 ? only : NULL;
}

void cmd_ft_layout(cmd_ctx_t *x)
{
	if (x->argc < 3) {
		resp_error(x->out, FT_LAYOUT_SYNTAX);
		return;
	}
	int op = arg_eq(&x->argv[2], "BUILD") ? 0 : arg_eq(&x->argv[2], "INFO") ? 1
						: arg_eq(&x->argv[2], "DROP") ? 2 : -1;
	const char *named = NULL;
	vela_layout_opts_t lo = {0};
	for (int i = 3; op >= 0 && i < x->argc; i += 2) {
		const resp_arg_t *a = &x->argv[i];
		int64_t n = 0;
		double v = 0;
		bool num = !arg_eq(a, "FIELD") && !arg_eq(a, "PROBE_FACTOR") &&
			   !arg_eq(a, "RECALL") && !arg_eq(a, "ENCODING");
		if (i + 1 >= x->argc || (op != 0 && !arg_eq(a, "FIELD")) ||
		    (num && (arg_int64(&x->argv[i + 1], &n) || n < 1 || n > (int64_t)UINT32_MAX))) {
			op = -1;
			break;
		}
		if (arg_eq(a, "FIELD"))
			named = x->argv[i + 1].p;
		else if (arg_eq(a, "CLUSTER_ROWS"))
			lo.cluster_rows = (uint32_t)n;
		else if (arg_eq(a, "LEAF_MIN"))
			lo.leaf_min = (uint64_t)n;
		else if (arg_eq(a, "MAX_CUTS"))
			lo.max_cuts = (uint32_t)n;
		else if (arg_eq(a, "PROBE_MIN"))
			lo.probe_min = (uint32_t)n;
		else if (arg_eq(a, "PROBE_FACTOR") && arg_double(&x->argv[i + 1], &v) == 0 &&
			 v == v && v < 1e30 && v > -1e30)
			lo.probe_factor = v <= 0 ? -1.0f : (float)v; /* <= 0: exact */
		else if (arg_eq(a, "RECALL") && arg_double(&x->argv[i + 1], &v) == 0 &&
			 v >= PART_RECALL_MIN && v <= PART_RECALL_MAX)
			lo.recall = (float)v;
		else if (arg_eq(a, "ENCODING") && arg_eq(&x->argv[i + 1], "FIELD"))
			lo.encoding = VELA_LAYOUT_ENCODING_FIELD;
		else if (arg_eq(a, "ENCODING") && arg_eq(&x->argv[i + 1], "LVQ8"))
			lo.encoding = VELA_LAYOUT_ENCODING_LVQ8;
		else
			op = -1;
	}
	if (op < 0) {
		resp_error(x->out, FT_LAYOUT_SYNTAX);
		return;
	}
	vela_index_def_t *d;
	vela_err_t err = {0};
	if (vela_index_describe(x->db, x->argv[1].p, &d, &err)) {
		resp_error(x->out, "-Unknown index name");
		return;
	}
	const char *field = layout_field(x, d, named);
	int rc = 0;
	vela_layout_info_t li;
	if (field && op == 0)
		rc = vela_layout_build(x->db, d->name, field, &lo, &err);
	else if (field && op == 1) {
		rc = vela_layout_info(x->db, d->name, field, &li, &err);
		if (rc == 0 && !li.built)
			rc = vela_err_set(&err, VELA_ENOTFOUND, "%s has no layout (FT.LAYOUT %s BUILD "
							       "FIELD %s builds one)",
					  field, d->name, field);
	} else if (field) {
		rc = vela_layout_drop(x->db, d->name, field, &err);
	}
	if (field == NULL)
		; /* replied */
	else if (rc)
		resp_errorf(x->out, "-ERR %s", err.msg);
	else if (op == 1)
		info_layout(x->out, field, &li);
	else
		resp_simple(x->out, "OK");
	vela_index_def_free(d);
}

void cmd_ft_info(cmd_ctx_t *x)
{
	vela_index_def_t *d;
	vela_index_info_t info;
	vela_err_t err = {0};
	if (vela_index_describe(x->db, x->argv[1].p, &d, &err) ||
	    vela_index_info(x->db, x->argv[1].p, &info, &err)) {
		resp_error(x->out, "-Unknown index name");
		return;
	}
	/* vela's "layouts" (docs/partitions.md) only when a field has one: the
	 * reply of an index without keeps Redis's twelve keys */
	vela_layout_info_t *li = calloc(d->n_fields ? d->n_fields : 1, sizeof(*li));
	size_t nl = layouts_get(x->db, d, li);
	resp_out_t *o = x->out;
	resp_map(o, 12 + (nl > 0));
	resp_simple(o, "index_name");
	resp_bulk_str(o, d->name);
	resp_simple(o, "index_options");
	resp_array(o, 0);
	resp_simple(o, "index_definition");
	resp_array(o, 8);
	resp_simple(o, "key_type");
	resp_simple(o, "HASH");
	resp_simple(o, "prefixes");
	resp_array(o, d->n_prefixes ? d->n_prefixes : 1);
	if (d->n_prefixes == 0)
		resp_bulk_str(o, "");
	for (uint32_t i = 0; i < d->n_prefixes; i++)
		resp_bulk_str(o, d->prefixes[i]);
	resp_simple(o, "default_score");
	resp_bulk_str(o, "1");
	resp_simple(o, "indexes_all");
	resp_simple(o, "false");
	resp_simple(o, "attributes");
	resp_array(o, d->n_fields);
	for (uint32_t i = 0; i < d->n_fields; i++)
		info_attribute(o, x->db, d->name, &d->fields[i]);
	resp_simple(o, "num_docs");
	resp_int(o, (int64_t)info.num_docs);
	resp_simple(o, "max_doc_id");
	resp_int(o, (int64_t)info.num_docs);
	resp_simple(o, "num_terms");
	resp_int(o, 0);
	resp_simple(o, "num_records");
	resp_int(o, (int64_t)info.num_docs);
	resp_simple(o, "vector_index_sz_mb");
	resp_double(o, (double)info.vector_bytes / (1024.0 * 1024.0));
	resp_simple(o, "hash_indexing_failures");
	resp_int(o, (int64_t)info.indexing_failures);
	resp_simple(o, "indexing"); /* a graph is being built (or retrained) in the background */
	resp_int(o, info.graphs_building ? 1 : 0);
	resp_simple(o, "percent_indexed");
	resp_double(o, 1.0);
	if (nl) {
		resp_simple(o, "layouts");
		info_layouts(o, d, li, nl);
	}
	free(li);
	vela_index_def_free(d);
}

/* ------------------------------------------------------------ FT.CONFIG / EXPLAIN */

void cmd_ft_config(cmd_ctx_t *x)
{
	if (arg_eq(&x->argv[1], "SET") && x->argc == 4) {
		resp_simple(x->out, "OK"); /* accepted; vela's search options are fixed */
		return;
	}
	if (!arg_eq(&x->argv[1], "GET") || x->argc != 3) {
		resp_error(x->out, "ERR syntax error");
		return;
	}
	static const char *const opts[][2] = {{"DEFAULT_DIALECT", "2"}, {"TIMEOUT", "0"},
					      {"MAXSEARCHRESULTS", "1000000"}};
	size_t n = 0;
	for (size_t i = 0; i < 3; i++)
		n += arg_eq(&x->argv[2], "*") || arg_eq(&x->argv[2], opts[i][0]);
	resp_array(x->out, n);
	for (size_t i = 0; i < 3; i++) {
		if (!(arg_eq(&x->argv[2], "*") || arg_eq(&x->argv[2], opts[i][0])))
			continue;
		resp_array(x->out, 2);
		resp_bulk_str(x->out, opts[i][0]);
		resp_bulk_str(x->out, opts[i][1]);
	}
}

/* ------------------------------------------------------------ FT.SEARCH parsing */

typedef struct ft_search {
	vela_search_req_t req;
	vela_kv_t *params;
	const char **ret;
	bool withscores;
	const char *sortby;
	bool desc;
	size_t offset, num;
	bool fetch_all; /* SORTBY or DESC: order every match, then apply LIMIT here */
	int embed_opt;  /* argv index of `EMBED param` (0: none) */
	char *query_buf; /* the query rewritten by FILTER options, or NULL */
} ft_search_t;

static int fs_count(cmd_ctx_t *x, int i, int64_t *n)
{
	if (i >= x->argc || arg_int64(&x->argv[i], n) || *n < 0 || *n > x->argc - i - 1) {
		resp_error(x->out, "ERR syntax error");
		return -1;
	}
	return 0;
}

/* Legacy `FILTER field min max` (redis-py's NumericFilter sends it): ANDed
 * into the filter part of the query (before any `=>[KNN`) as
 * `@field:[min max]`, whose bounds take the same `(` and inf syntax. */
static int fs_filter(cmd_ctx_t *x, int i, ft_search_t *fs)
{
	const resp_arg_t *f = &x->argv[i + 1], *lo = &x->argv[i + 2], *hi = &x->argv[i + 3];
	const char *q = fs->req.query;
	size_t qlen = fs->req.query_len;
	const char *knn = memmem(q, qlen, "=>[", 3);
	size_t head = knn ? (size_t)(knn - q) : qlen, s = 0, e = head;
	while (s < e && q[s] == ' ')
		s++;
	while (e > s && q[e - 1] == ' ')
		e--;
	bool all = e - s == 1 && q[s] == '*'; /* "* @f:[..]" is not a valid AND */
	size_t cap = qlen + f->len + lo->len + hi->len + 16;
	char *b = malloc(cap);
	if (b == NULL) {
		resp_error(x->out, "OOM out of memory");
		return -1;
	}
	int n = all ? snprintf(b, cap, "@%.*s:[%.*s %.*s]", (int)f->len, f->p, (int)lo->len, lo->p,
			       (int)hi->len, hi->p)
		    : snprintf(b, cap, "(%.*s) @%.*s:[%.*s %.*s]", (int)head, q, (int)f->len, f->p,
			       (int)lo->len, lo->p, (int)hi->len, hi->p);
	memcpy(b + n, q + head, qlen - head);
	n += (int)(qlen - head);
	b[n] = '\0';
	free(fs->query_buf);
	fs->query_buf = b;
	fs->req.query = b;
	fs->req.query_len = (size_t)n;
	return i + 4;
}

static int fs_option(cmd_ctx_t *x, int i, ft_search_t *fs)
{
	const resp_arg_t *a = &x->argv[i];
	int64_t n, m;
	if (arg_eq(a, "NOCONTENT")) {
		fs->req.nocontent = true;
	} else if (arg_eq(a, "WITHSCORES")) {
		fs->withscores = true;
	} else if (arg_eq(a, "VERBATIM") || arg_eq(a, "NOSTOPWORDS") || arg_eq(a, "INORDER")) {
	} else if ((arg_eq(a, "SCORER") || arg_eq(a, "TIMEOUT") || arg_eq(a, "LANGUAGE") ||
		    arg_eq(a, "SLOP") || arg_eq(a, "EXPANDER") || arg_eq(a, "DIALECT")) &&
		   i + 1 < x->argc) {
		if (arg_eq(a, "DIALECT") && (arg_int64(&x->argv[i + 1], &n) || n < 1 || n > 4)) {
			resp_error(x->out, "-DIALECT requires a value between 1 and 4");
			return -1;
		}
		return i + 2;
	} else if (arg_eq(a, "FILTER") && i + 3 < x->argc) {
		return fs_filter(x, i, fs);
	} else if (arg_eq(a, "LIMIT") && i + 2 < x->argc) {
		if (arg_int64(&x->argv[i + 1], &n) || arg_int64(&x->argv[i + 2], &m) || n < 0 ||
		    m < 0 || m > VELA_LIMIT_MAX) {
			resp_error(x->out, "-LIMIT exceeds maximum of 1000000");
			return -1;
		}
		fs->offset = (size_t)n;
		fs->num = (size_t)m;
		return i + 3;
	} else if (arg_eq(a, "RETURN")) {
		if (fs_count(x, i + 1, &n))
			return -1;
		size_t k = 0;
		for (int64_t j = 0; j < n; j++) {
			const resp_arg_t *f = &x->argv[i + 2 + j];
			/* "f AS a": the AS tokens count in n; vela returns f under its own name. */
			if (arg_eq(f, "AS") && j + 1 < n) {
				j++;
				continue;
			}
			fs->ret[k++] = f->p;
		}
		fs->req.return_fields = fs->ret;
		fs->req.n_return = k;
		if (k == 0)
			fs->req.nocontent = true;
		return i + 2 + (int)n;
	} else if (arg_eq(a, "SORTBY") && i + 1 < x->argc) {
		fs->sortby = x->argv[i + 1].p;
		i += 2;
		if (i < x->argc && (arg_eq(&x->argv[i], "ASC") || arg_eq(&x->argv[i], "DESC")))
			fs->desc = arg_eq(&x->argv[i++], "DESC");
		if (i < x->argc && (arg_eq(&x->argv[i], "WITHCOUNT") || arg_eq(&x->argv[i], "WITHOUTCOUNT")))
			i++;
		return i;
	} else if (arg_eq(a, "EMBED") && i + 1 < x->argc) {
		/* vela: PARAMS value to embed (docs/embeddings.md); the encoder
		 * stage replaces it by the vector and removes this option. */
		fs->embed_opt = i;
		return i + 2;
	} else if (arg_eq(a, "PARAMS")) {
		if (fs_count(x, i + 1, &n) || n % 2) {
			resp_error(x->out, "-Bad arguments for PARAMS: Expected an even number of arguments");
			return -1;
		}
		for (int64_t j = 0; j < n; j += 2) {
			const resp_arg_t *k = &x->argv[i + 2 + j], *v = &x->argv[i + 3 + j];
			fs->params[fs->req.n_params++] = (vela_kv_t){k->p, k->len, v->p, v->len};
		}
		fs->req.params = fs->params;
		return i + 2 + (int)n;
	} else {
		resp_errorf(x->out, "-Unknown argument `%s`", a->p);
		return -1;
	}
	return i + 1;
}

static int fs_parse(cmd_ctx_t *x, ft_search_t *fs)
{
	memset(fs, 0, sizeof(*fs));
	fs->params = calloc((size_t)x->argc, sizeof(vela_kv_t));
	fs->ret = calloc((size_t)x->argc, sizeof(char *));
	if (!fs->params || !fs->ret) {
		resp_error(x->out, "OOM out of memory");
		return -1;
	}
	fs->req.index = x->argv[1].p;
	fs->req.query = x->argv[2].p;
	fs->req.query_len = x->argv[2].len;
	fs->num = VELA_LIMIT_DEFAULT;
	for (int i = 3; i < x->argc;)
		if ((i = fs_option(x, i, fs)) < 0)
			return -1;
	return 0;
}

/* fs_parse for a search that runs now: an EMBED option still there was not
 * embedded (a command the encoder stage does not route: FT.AGGREGATE). */
static int fs_parse_run(cmd_ctx_t *x, ft_search_t *fs)
{
	if (fs_parse(x, fs))
		return -1;
	if (fs->embed_opt == 0)
		return 0;
	resp_error(x->out, "-EMBED is supported by FT.SEARCH, FT.PROFILE and FT.EXPLAIN only: "
			   "pass the vector in PARAMS");
	return -1;
}

static void fs_free(ft_search_t *fs)
{
	free(fs->query_buf);
	free(fs->params);
	free(fs->ret);
}

int ft_search_embed_args(int argc, const resp_arg_t *argv, int *opt, int *key, int *val)
{
	bool any = false;
	for (int i = 3; i < argc && !any; i++)
		any = arg_eq(&argv[i], "EMBED");
	if (!any) /* the common case: no parse */
		return 0;
	resp_out_t scratch;
	resp_out_init(&scratch, 2);
	cmd_ctx_t x = {.argc = argc, .argv = (resp_arg_t *)argv, .out = &scratch};
	ft_search_t fs;
	int rc = fs_parse(&x, &fs) == 0 && fs.embed_opt ? -1 : 0;
	for (size_t k = 0; rc && k < fs.req.n_params; k++) {
		const vela_kv_t *p = &fs.req.params[k];
		const resp_arg_t *want = &argv[fs.embed_opt + 1];
		if (p->name_len != want->len || memcmp(p->name, want->p, want->len) != 0)
			continue;
		for (int j = 3; j + 1 < argc; j++)
			if (argv[j].p == (const char *)p->name) { /* PARAMS point into argv */
				*opt = fs.embed_opt;
				*key = j;
				*val = j + 1;
				rc = 1;
			}
	}
	fs_free(&fs);
	resp_out_free(&scratch);
	return rc;
}

/* The engine request: SORTBY (unless it names the distance, which the engine
 * already orders by — known only once the result names its distance field)
 * needs every match before LIMIT applies. */
static void fs_engine_req(ft_search_t *fs)
{
	fs->fetch_all = fs->sortby != NULL || fs->desc;
	fs->req.limit_set = true;
	if (fs->fetch_all) {
		fs->req.offset = 0;
		fs->req.limit = VELA_LIMIT_MAX;
	} else {
		fs->req.offset = fs->offset;
		fs->req.limit = fs->num;
	}
}

/* ------------------------------------------------------------ FT.SEARCH replies */

static const vela_kv_t *hit_field(const vela_search_hit_t *h, const char *name)
{
	size_t n = strlen(name);
	for (size_t i = 0; i < h->n_fields; i++)
		if (h->fields[i].name_len == n && memcmp(h->fields[i].name, name, n) == 0)
			return &h->fields[i];
	return NULL;
}

/* Numbers compare as numbers, otherwise bytes; documents missing it sort last. */
static int hit_cmp(const void *pa, const void *pb, void *arg)
{
	const char *sort_name = arg;
	const vela_search_hit_t *a = pa, *b = pb;
	const vela_kv_t *fa = hit_field(a, sort_name), *fb = hit_field(b, sort_name);
	if (!fa || !fb)
		return fa ? -1 : fb ? 1 : 0;
	char *ea, *eb;
	double da = strtod(fa->value, &ea), db = strtod(fb->value, &eb);
	if (*ea == '\0' && *eb == '\0' && fa->value_len && fb->value_len)
		return da < db ? -1 : da > db;
	size_t n = fa->value_len < fb->value_len ? fa->value_len : fb->value_len;
	int c = memcmp(fa->value, fb->value, n);
	return c ? c : (fa->value_len > fb->value_len) - (fa->value_len < fb->value_len);
}

/* SORTBY, DESC and LIMIT applied on the rows the engine returned. */
static void fs_order(ft_search_t *fs, vela_result_t *r, size_t *first, size_t *count)
{
	bool by_dist = fs->sortby && r->dist_name && strcmp(fs->sortby, r->dist_name) == 0;
	if (fs->sortby && !by_dist)
		qsort_r(r->hits, r->n_hits, sizeof(r->hits[0]), hit_cmp, (void *)fs->sortby);
	if (fs->desc)
		for (size_t i = 0; i < r->n_hits / 2; i++) {
			vela_search_hit_t t = r->hits[i];
			r->hits[i] = r->hits[r->n_hits - 1 - i];
			r->hits[r->n_hits - 1 - i] = t;
		}
	if (fs->fetch_all) {
		*first = fs->offset < r->n_hits ? fs->offset : r->n_hits;
		*count = r->n_hits - *first < fs->num ? r->n_hits - *first : fs->num;
	} else {
		*first = 0;
		*count = r->n_hits;
	}
}

static void fs_score(resp_out_t *o, const vela_search_hit_t *h)
{
	char s[32];
	int n = snprintf(s, sizeof(s), "%.12g", isnan(h->dist) ? 1.0 : h->dist);
	if (o->proto == 3)
		resp_double(o, isnan(h->dist) ? 1.0 : h->dist);
	else
		resp_bulk(o, s, (size_t)n);
}

static void fs_fields(resp_out_t *o, const vela_search_hit_t *h, bool map)
{
	if (map)
		resp_map(o, h->n_fields);
	else
		resp_array(o, h->n_fields * 2);
	for (size_t i = 0; i < h->n_fields; i++) {
		resp_bulk(o, h->fields[i].name, h->fields[i].name_len);
		resp_bulk(o, h->fields[i].value, h->fields[i].value_len);
	}
}

static void fs_reply(resp_out_t *o, ft_search_t *fs, vela_result_t *r)
{
	size_t first, count;
	fs_order(fs, r, &first, &count);
	uint64_t total = r->total;
	if (o->proto == 3) {
		resp_map(o, 5);
		resp_simple(o, "attributes");
		resp_array(o, 0);
		resp_simple(o, "format");
		resp_simple(o, "STRING");
		resp_simple(o, "results");
		resp_array(o, count);
		for (size_t i = first; i < first + count; i++) {
			const vela_search_hit_t *h = &r->hits[i];
			resp_map(o, 2 + fs->withscores + !fs->req.nocontent);
			resp_simple(o, "id");
			resp_bulk(o, h->key, h->key_len);
			if (fs->withscores) {
				resp_simple(o, "score");
				fs_score(o, h);
			}
			if (!fs->req.nocontent) {
				resp_simple(o, "extra_attributes");
				fs_fields(o, h, true);
			}
			resp_simple(o, "values");
			resp_array(o, 0);
		}
		resp_simple(o, "total_results");
		resp_int(o, (int64_t)total);
		resp_simple(o, "warning");
		resp_array(o, 0);
		return;
	}
	resp_array(o, 1 + count * (1 + fs->withscores + !fs->req.nocontent));
	resp_int(o, (int64_t)total);
	for (size_t i = first; i < first + count; i++) {
		resp_bulk(o, r->hits[i].key, r->hits[i].key_len);
		if (fs->withscores)
			fs_score(o, &r->hits[i]);
		if (!fs->req.nocontent)
			fs_fields(o, &r->hits[i], false);
	}
}

static void fs_error(resp_out_t *o, const vela_err_t *err, const char *index)
{
	if (err->code == VELA_ENOTFOUND && strstr(err->msg, "no such index"))
		resp_errorf(o, "-No such index %s", index);
	else
		resp_errorf(o, "-%s", err->msg[0] ? err->msg : vela_strerror(err->code));
}

void ft_search_one(cmd_ctx_t *x);
void ft_search_many(srv_t *s, srv_job_t **jobs, size_t n);
void cmd_ft_profile(cmd_ctx_t *x);
void cmd_ft_explain(cmd_ctx_t *x);

/* Only reached through ft_search_many on a worker (or EXEC); kept for the table. */
void cmd_ft_search(cmd_ctx_t *x)
{
	ft_search_one(x);
}

void ft_search_one(cmd_ctx_t *x)
{
	srv_job_t j = {.argc = x->argc, .argv = x->argv, .out = *x->out};
	srv_job_t *v = &j;
	ft_search_many(x->srv, &v, 1);
	*x->out = j.out;
}

/* ------------------------------------------------------------ FT.PROFILE */

/* FT.PROFILE index SEARCH [LIMITED] QUERY query [FT.SEARCH options]: runs
 * the search alone (not batched) and replies [search reply, profile]; RESP3
 * gets {Results, Profile}. The profile follows Redis's FT.PROFILE shape
 * loosely: stage times in ms (strings in RESP2), an iterator tree (the
 * VECTOR iterator with vela's plan, the filter's exact match count, the
 * distance computations; the FILTER under it unless LIMITED) and the result
 * processors. */

static bool is_profile(const srv_job_t *j)
{
	return j->argc > 0 && arg_eq(&j->argv[0], "FT.PROFILE");
}

/* Checks the words before the query; *qpos = the query's index. */
static int fp_args(cmd_ctx_t *x, bool *limited, int *qpos)
{
	int i = 2;
	if (arg_eq(&x->argv[i], "AGGREGATE")) {
		resp_error(x->out, "-FT.PROFILE AGGREGATE is not supported (vela has no FT.AGGREGATE)");
		return -1;
	}
	if (!arg_eq(&x->argv[i], "SEARCH")) {
		resp_error(x->out, "-No `SEARCH` or `AGGREGATE` provided");
		return -1;
	}
	i++;
	*limited = i < x->argc && arg_eq(&x->argv[i], "LIMITED");
	i += *limited;
	if (i >= x->argc || !arg_eq(&x->argv[i], "QUERY")) {
		resp_error(x->out, "-The QUERY keyword is expected");
		return -1;
	}
	if (i + 1 >= x->argc) {
		resp_error(x->out, "-No query string provided");
		return -1;
	}
	*qpos = i + 1;
	return 0;
}

static void fp_ms(resp_out_t *o, uint64_t ns)
{
	if (o->proto == 3) {
		resp_double(o, (double)ns * 1e-6);
		return;
	}
	char b[32];
	int n = snprintf(b, sizeof(b), "%.3f", (double)ns * 1e-6);
	resp_bulk(o, b, (size_t)n);
}

static void fp_num(resp_out_t *o, double v)
{
	if (o->proto == 3) {
		resp_double(o, v);
		return;
	}
	char b[32];
	int n = snprintf(b, sizeof(b), "%.9g", v);
	resp_bulk(o, b, (size_t)n);
}

/* One top-level entry: [name, value] in RESP2, a map key in RESP3. */
static void fp_entry(resp_out_t *o, const char *name)
{
	if (o->proto != 3)
		resp_array(o, 2);
	resp_simple(o, name);
}

/* The filter part of the query text (before `=>[`), trimmed. */
static void fp_filter_text(const vela_search_req_t *req, const char **p, size_t *n)
{
	const char *q = req->query;
	size_t len = req->query_len, e;
	const char *arrow = memmem(q, len, "=>[", 3);
	e = arrow ? (size_t)(arrow - q) : len;
	size_t b = 0;
	while (b < e && q[b] == ' ')
		b++;
	while (e > b && q[e - 1] == ' ')
		e--;
	*p = q + b;
	*n = e - b;
}

static void fp_filter_iter(resp_out_t *o, const vela_search_req_t *req, const vela_profile_t *pr,
			   bool knn)
{
	const char *t;
	size_t tn;
	fp_filter_text(req, &t, &tn);
	resp_map(o, knn ? 4 : 5);
	resp_simple(o, "Type");
	resp_simple(o, "FILTER");
	resp_simple(o, "Query");
	resp_bulk(o, t, tn);
	resp_simple(o, "Time");
	fp_ms(o, pr->filter_ns);
	resp_simple(o, "Counter");
	resp_int(o, (int64_t)pr->filter_matches);
	if (!knn) {
		resp_simple(o, "Size");
		resp_int(o, (int64_t)pr->index_size);
	}
}

static void fp_vector_iter(resp_out_t *o, const vela_search_req_t *req, const vela_result_t *r,
			   bool limited)
{
	const vela_profile_t *pr = r->profile;
	bool filtered = strcmp(pr->mode, "STANDARD_KNN") != 0 || pr->filter_matches != pr->index_size;
	bool child = filtered && !limited;
	bool batches = pr->batches > 0;
	resp_map(o, 11 + (pr->window > 0) + 2 * batches + child);
	resp_simple(o, "Type");
	resp_simple(o, "VECTOR");
	resp_simple(o, "Vector search mode");
	resp_simple(o, pr->mode);
	resp_simple(o, "Plan");
	resp_simple(o, pr->plan ? pr->plan : "none");
	resp_simple(o, "Plan forced");
	resp_int(o, pr->forced);
	resp_simple(o, "Index size");
	resp_int(o, (int64_t)pr->index_size);
	resp_simple(o, "Estimated number of matches");
	resp_int(o, (int64_t)pr->filter_matches);
	resp_simple(o, "Estimate");
	resp_simple(o, "exact (filter bitmap)");
	resp_simple(o, "Selectivity");
	fp_num(o, pr->selectivity);
	resp_simple(o, "Distance computations");
	resp_int(o, (int64_t)pr->distances);
	if (pr->window) {
		resp_simple(o, "Window");
		resp_int(o, pr->window);
	}
	if (batches) {
		resp_simple(o, "Batches number");
		resp_int(o, pr->batches);
		resp_simple(o, "Largest batch size");
		resp_int(o, pr->largest_batch);
	}
	resp_simple(o, "Counter");
	resp_int(o, (int64_t)r->total);
	resp_simple(o, "Time");
	fp_ms(o, pr->search_ns);
	if (child) {
		resp_simple(o, "Child iterators");
		resp_array(o, 1);
		fp_filter_iter(o, req, pr, true);
	}
}

static void fp_processor(resp_out_t *o, const char *type, uint64_t ns, uint64_t count)
{
	resp_map(o, 3);
	resp_simple(o, "Type");
	resp_simple(o, type);
	resp_simple(o, "Time");
	fp_ms(o, ns);
	resp_simple(o, "Counter");
	resp_int(o, (int64_t)count);
}

static void fp_profile(resp_out_t *o, const vela_search_req_t *req, const vela_result_t *r,
		       bool limited, uint64_t total_ns, uint64_t reply_ns, size_t rows)
{
	const vela_profile_t *pr = r->profile;
	bool knn = pr->plan != NULL;
	if (o->proto == 3)
		resp_map(o, 9);
	else
		resp_array(o, 9);
	fp_entry(o, "Total profile time");
	fp_ms(o, total_ns);
	fp_entry(o, "Parsing time");
	fp_ms(o, pr->parse_ns);
	fp_entry(o, "Filter time");
	fp_ms(o, pr->filter_ns);
	fp_entry(o, "Search time");
	fp_ms(o, pr->search_ns);
	fp_entry(o, "Load time");
	fp_ms(o, pr->load_ns);
	fp_entry(o, "Reply time");
	fp_ms(o, reply_ns);
	fp_entry(o, "Warning");
	resp_array(o, 0);
	fp_entry(o, "Iterators profile");
	if (knn)
		fp_vector_iter(o, req, r, limited);
	else
		fp_filter_iter(o, req, pr, false);
	fp_entry(o, "Result processors profile");
	resp_array(o, 3);
	fp_processor(o, "Index", pr->search_ns + pr->filter_ns, r->total);
	fp_processor(o, "Loader", pr->load_ns, r->n_hits);
	fp_processor(o, "Reply", reply_ns, rows);
}

static void ft_profile(cmd_ctx_t *x)
{
	uint64_t t0 = vela_now_ns();
	bool limited;
	int q;
	if (fp_args(x, &limited, &q))
		return;
	/* The FT.SEARCH view of the arguments: name, index, query, options. */
	int argc = x->argc - (q - 2);
	resp_arg_t *argv = malloc((size_t)argc * sizeof(*argv));
	if (argv == NULL) {
		resp_error(x->out, "OOM out of memory");
		return;
	}
	argv[0] = x->argv[0];
	argv[1] = x->argv[1];
	memcpy(argv + 2, x->argv + q, (size_t)(x->argc - q) * sizeof(*argv));
	cmd_ctx_t y = *x;
	y.argc = argc;
	y.argv = argv;
	ft_search_t fs;
	vela_result_t *r = NULL;
	if (fs_parse_run(&y, &fs) == 0) {
		vela_err_t err = {0};
		fs_engine_req(&fs);
		fs.req.profile = true;
		if (vela_search(x->db, &fs.req, &r, &err))
			fs_error(x->out, &err, fs.req.index);
	}
	if (r) {
		resp_out_t *o = x->out;
		if (o->proto == 3) {
			resp_map(o, 2);
			resp_simple(o, "Results");
		} else {
			resp_array(o, 2);
		}
		uint64_t t1 = vela_now_ns();
		fs_reply(o, &fs, r);
		uint64_t t2 = vela_now_ns();
		size_t first = fs.fetch_all && fs.offset < r->n_hits ? fs.offset : 0;
		size_t rows = fs.fetch_all ? (r->n_hits - first < fs.num ? r->n_hits - first : fs.num)
					   : r->n_hits; /* as fs_order counted them */
		if (fs.fetch_all && fs.offset >= r->n_hits)
			rows = 0;
		if (o->proto == 3)
			resp_simple(o, "Profile");
		fp_profile(o, &fs.req, r, limited, t2 - t0, t2 - t1, rows);
		vela_result_free(r);
	}
	fs_free(&fs);
	free(argv);
}

/* Only reached through ft_search_many on a worker (or EXEC); kept for the table. */
void cmd_ft_profile(cmd_ctx_t *x)
{
	ft_search_one(x);
}

void ft_search_many(srv_t *s, srv_job_t **jobs, size_t n)
{
	ft_search_t *fs = calloc(n, sizeof(*fs));
	vela_search_req_t *reqs = calloc(n, sizeof(*reqs));
	size_t *which = calloc(n, sizeof(*which));
	vela_result_t **res = calloc(n, sizeof(*res));
	vela_err_t *errs = calloc(n, sizeof(*errs));
	if (!fs || !reqs || !which || !res || !errs) {
		for (size_t i = 0; i < n; i++)
			resp_error(&jobs[i]->out, "OOM out of memory");
		goto out;
	}
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		cmd_ctx_t x = {.srv = s, .db = s->db, .argc = jobs[i]->argc, .argv = jobs[i]->argv,
			       .out = &jobs[i]->out, .proto = jobs[i]->out.proto};
		if (is_profile(jobs[i])) { /* alone, outside the batch: its own timings */
			ft_profile(&x);
			continue;
		}
		if (arg_eq(&jobs[i]->argv[0], "FT.EXPLAIN")) { /* reads the filter's postings */
			cmd_ft_explain(&x);
			continue;
		}
		if (fs_parse_run(&x, &fs[i]))
			continue;
		fs_engine_req(&fs[i]);
		reqs[m] = fs[i].req;
		which[m++] = i;
	}
	vela_search_batch(s->db, reqs, m, res, errs);
	for (size_t k = 0; k < m; k++) {
		size_t i = which[k];
		if (res[k] == NULL) {
			fs_error(&jobs[i]->out, &errs[k], fs[i].req.index);
			continue;
		}
		fs_reply(&jobs[i]->out, &fs[i], res[k]);
		vela_result_free(res[k]);
	}
out:
	for (size_t i = 0; fs && i < n; i++)
		fs_free(&fs[i]);
	free(fs);
	free(reqs);
	free(which);
	free(res);
	free(errs);
}

/* On a search worker (CMD_SEARCH): for a KNN query it evaluates the filter
 * to count its matches, which reads storage. */
void cmd_ft_explain(cmd_ctx_t *x)
{
	ft_search_t fs;
	if (fs_parse_run(x, &fs) == 0) {
		char *text;
		vela_err_t err = {0};
		if (vela_explain(x->db, fs.req.index, fs.req.query, fs.req.query_len, fs.req.params,
				 fs.req.n_params, &text, &err))
			fs_error(x->out, &err, fs.req.index);
		else {
			resp_bulk_str(x->out, text);
			free(text);
		}
	}
	fs_free(&fs);
}
