// libFuzzer target for FT.CREATE argument parsing (server/cmd_ft.c): the
// handler runs on fuzzer-made arguments with the engine replaced by a stub
// that checks the index definition it is given. Whatever the arguments,
// the handler must write exactly one reply, "+OK" only when it created the
// index, else one single-line error; every string in the definition must
// be one of the arguments (NUL-terminated, read in bounds), every count
// and enum in range.
// Build and run: scripts/fuzz-smoke (see there for the flags).
//
// Input: one control byte (bit 0: RESP3; bit 1: the engine refuses the
// definition, as for an existing index), then the arguments after
// "FT.CREATE", separated by '\n'. Each argument gets its own exact-size
// NUL-terminated heap copy (as job_new makes them), so ASan catches a read
// past any of them.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "index/index.h"
#include "server/srv_int.h"

#define MAX_ARGS 96

void cmd_ft_create(cmd_ctx_t *x);

static struct {
	int argc;
	resp_arg_t *argv;
	int refuse;
	int calls;
} cur;

static int is_arg(const char *p)
{
	for (int i = 0; i < cur.argc; i++)
		if (p == cur.argv[i].p)
			return 1;
	return 0;
}

static void check_str(const char *p)
{
	if (p == NULL || !is_arg(p))
		abort();
	(void)strlen(p); /* NUL-terminated within its copy (ASan) */
}

/* The engine, as far as FT.CREATE reaches it. */
int vela_index_create(vela_db_t *db, const vela_index_def_t *def, vela_err_t *err)
{
	cur.calls++;
	if (def == NULL || def->name != cur.argv[1].p)
		abort();
	check_str(def->name);
	if (def->n_fields == 0 || def->n_fields > (uint32_t)cur.argc ||
	    def->n_prefixes > (uint32_t)cur.argc || def->n_prefixes > VELA_INDEX_PREFIXES_MAX ||
	    def->fields == NULL || (def->n_prefixes && def->prefixes == NULL))
		abort();
	for (uint32_t i = 0; i < def->n_prefixes; i++)
		check_str(def->prefixes[i]);
	for (uint32_t i = 0; i < def->n_fields; i++) {
		const vela_field_def_t *f = &def->fields[i];
		check_str(f->name);
		if (f->alias)
			check_str(f->alias);
		if ((unsigned)f->type > VELA_FIELD_VECTOR)
			abort();
		if (f->model)
			check_str(f->model);
		if (f->source)
			check_str(f->source);
		if ((f->model == NULL) != (f->source == NULL))
			abort();
		if (f->type != VELA_FIELD_VECTOR)
			continue;
		if (f->dim < 1 || f->dim > VELA_DIM_MAX || (unsigned)f->metric > VELA_METRIC_COSINE ||
		    (unsigned)f->vec_type > VELA_VEC_FLOAT16 || (unsigned)f->algo > VELA_ALGO_GRAPH ||
		    f->compression > GRAPH_LVQ_KIND_COUNT ||
		    (f->compression && f->algo != VELA_ALGO_GRAPH))
			abort();
	}
	if (cur.refuse)
		return vela_err_set(err, VELA_EEXISTS, "Index already exists");
	return VELA_OK;
}

/* The encoder stage (server/embedq.c): model "m8" is loaded with 8
 * dimensions, no other. */
uint32_t embedq_model_dim(srv_t *s, const char *name)
{
	(void)s;
	return strcmp(name, "m8") == 0 ? 8 : 0;
}

void embedq_backfill(srv_t *s, const char *name)
{
	(void)s;
	check_str(name);
}

/* The rest of the engine cmd_ft.c links against: never reached from FT.CREATE. */
#define UNREACHED(decl) decl { abort(); }
UNREACHED(int vela_index_drop(vela_db_t *db, const char *name, bool dd, vela_err_t *err))
UNREACHED(int vela_index_list(vela_db_t *db, char ***names, size_t *n))
UNREACHED(void vela_strv_free(char **v, size_t n))
UNREACHED(int vela_index_info(vela_db_t *db, const char *name, vela_index_info_t *out,
			      vela_err_t *err))
UNREACHED(int vela_index_describe(vela_db_t *db, const char *name, vela_index_def_t **out,
				  vela_err_t *err))
UNREACHED(void vela_index_def_free(vela_index_def_t *def))
UNREACHED(int vela_index_train(vela_db_t *db, const char *index, const char *field,
			       const float *queries, size_t n_queries, uint32_t dim, vela_err_t *err))
UNREACHED(int vela_layout_build(vela_db_t *db, const char *index, const char *field,
				const vela_layout_opts_t *opts, vela_err_t *err))
UNREACHED(int vela_layout_info(vela_db_t *db, const char *index, const char *field,
			       vela_layout_info_t *out, vela_err_t *err))
UNREACHED(int vela_layout_drop(vela_db_t *db, const char *index, const char *field,
			       vela_err_t *err))
UNREACHED(int vela_field_memory(vela_db_t *db, const char *index, const char *field,
				vela_field_memory_t *out, vela_err_t *err))
UNREACHED(int vela_search(vela_db_t *db, const vela_search_req_t *req, vela_result_t **out,
			  vela_err_t *err))
UNREACHED(int vela_search_batch(vela_db_t *db, const vela_search_req_t *reqs, size_t n,
				vela_result_t **outs, vela_err_t *errs))
UNREACHED(void vela_result_free(vela_result_t *res))
UNREACHED(int vela_explain(vela_db_t *db, const char *index, const char *query, size_t query_len,
			   const vela_kv_t *params, size_t n_params, char **out, vela_err_t *err))

/* One reply: "+OK\r\n", or "-" and one line without CR or LF inside. */
static void check_reply(const resp_out_t *o, int created)
{
	if (o->oom || o->len < 3 || o->p[o->len - 2] != '\r' || o->p[o->len - 1] != '\n')
		abort();
	if (created) {
		if (o->len != 5 || memcmp(o->p, "+OK\r\n", 5) != 0)
			abort();
		return;
	}
	if (o->p[0] != '-' || memchr(o->p, '\r', o->len - 2) || memchr(o->p, '\n', o->len - 2))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	int ctl = data[0];
	const uint8_t *in = data + 1, *end = data + size;
	resp_arg_t argv[MAX_ARGS];
	int argc = 0;
	argv[argc++] = (resp_arg_t){NULL, 9};
	while (argc < MAX_ARGS) {
		const uint8_t *nl = memchr(in, '\n', (size_t)(end - in));
		size_t len = nl ? (size_t)(nl - in) : (size_t)(end - in);
		argv[argc++] = (resp_arg_t){(const char *)in, len};
		if (nl == NULL)
			break;
		in = nl + 1;
	}
	for (int i = 0; i < argc; i++) {
		char *c = malloc(argv[i].len + 1);
		if (c == NULL)
			abort();
		if (i == 0)
			memcpy(c, "FT.CREATE", 9);
		else
			memcpy(c, argv[i].p, argv[i].len);
		c[argv[i].len] = '\0';
		argv[i].p = c;
	}
	if (argc >= 2) { /* the command table's arity: -2 */
		cur.argc = argc;
		cur.argv = argv;
		cur.refuse = ctl & 2;
		cur.calls = 0;
		resp_out_t o;
		resp_out_init(&o, (ctl & 1) ? 3 : 2);
		cmd_ctx_t x = {.argc = argc, .argv = argv, .out = &o, .proto = o.proto};
		cmd_ft_create(&x);
		if (cur.calls > 1)
			abort();
		check_reply(&o, cur.calls == 1 && !cur.refuse);
		resp_out_free(&o);
	}
	for (int i = 0; i < argc; i++)
		free((void *)argv[i].p);
	return 0;
}
