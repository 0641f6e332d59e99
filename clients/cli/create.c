/* `vela create`: create an index in-process or through a server (FT.CREATE)
 * from a compact schema: NAME TAG|NUMERIC|TEXT or NAME VECTOR DIM L2|IP|COSINE. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"

static int create_usage(void)
{
	fprintf(stderr,
		"usage: vela create (--db DIR | --host H [--port N] [--user U] [--password PW])\n"
		"                   INDEX [--prefix P]... FIELD TYPE [FIELD TYPE]...\n"
		"       TYPE: TAG | NUMERIC | TEXT | VECTOR DIM L2|IP|COSINE (FLAT, FLOAT32)\n"
		"       e.g. vela create --db ./data idx --prefix doc: genre TAG year NUMERIC "
		"v VECTOR 128 L2\n");
	return 2;
}

typedef struct create_opts {
	cli_target_t t;
	const char *index;
	const char *prefixes[VELA_INDEX_PREFIXES_MAX];
	uint32_t n_prefixes;
	vela_field_def_t fields[VELA_INDEX_FIELDS_MAX];
	uint32_t n_fields;
} create_opts_t;

static int metric_parse(const char *s, vela_metric_t *m)
{
	if (strcasecmp(s, "L2") == 0)
		*m = VELA_METRIC_L2;
	else if (strcasecmp(s, "IP") == 0)
		*m = VELA_METRIC_IP;
	else if (strcasecmp(s, "COSINE") == 0)
		*m = VELA_METRIC_COSINE;
	else
		return -1;
	return 0;
}

/* NAME TYPE [DIM METRIC] at argv[*i]; advances *i past it. */
static int field_parse(create_opts_t *o, int argc, char **argv, int *i)
{
	if (*i + 1 >= argc || o->n_fields == VELA_INDEX_FIELDS_MAX)
		return -1;
	vela_field_def_t *f = &o->fields[o->n_fields++];
	f->name = argv[*i];
	const char *type = argv[*i + 1];
	*i += 1;
	if (strcasecmp(type, "TAG") == 0)
		f->type = VELA_FIELD_TAG;
	else if (strcasecmp(type, "NUMERIC") == 0)
		f->type = VELA_FIELD_NUMERIC;
	else if (strcasecmp(type, "TEXT") == 0)
		f->type = VELA_FIELD_TEXT;
	else if (strcasecmp(type, "VECTOR") == 0 && *i + 2 < argc) {
		size_t dim;
		f->type = VELA_FIELD_VECTOR;
		if (cli_parse_size("DIM", argv[*i + 1], VELA_DIM_MIN, VELA_DIM_MAX, &dim) ||
		    metric_parse(argv[*i + 2], &f->metric))
			return -1;
		f->dim = (uint32_t)dim;
		*i += 2;
	} else {
		fprintf(stderr, "vela: field %s: bad type '%s'\n", f->name, type);
		return -1;
	}
	return 0;
}

static int create_args(int argc, char **argv, create_opts_t *o)
{
	for (int i = 0; i < argc; i++) {
		int t = cli_target_opt(&o->t, argc, argv, &i);
		if (t < 0)
			return -1;
		if (t > 0)
			continue;
		if (strcmp(argv[i], "--prefix") == 0) {
			if (i + 1 >= argc || o->n_prefixes == VELA_INDEX_PREFIXES_MAX)
				return -1;
			o->prefixes[o->n_prefixes++] = argv[++i];
		} else if (argv[i][0] == '-') {
			return -1;
		} else if (o->index == NULL) {
			o->index = argv[i];
		} else if (field_parse(o, argc, argv, &i)) {
			return -1;
		}
	}
	return o->index && o->n_fields && cli_target_check(&o->t) == 0 ? 0 : -1;
}

int cmd_create(int argc, char **argv)
{
	create_opts_t *o = calloc(1, sizeof(*o));
	if (o == NULL)
		return 1;
	if (create_args(argc, argv, o)) {
		free(o);
		return create_usage();
	}
	vela_index_def_t def = {.name = o->index, .prefixes = o->prefixes,
				.n_prefixes = o->n_prefixes, .fields = o->fields,
				.n_fields = o->n_fields};
	vela_err_t err = {0};
	vela_db_t *db = NULL;
	vela_client_t *cl = NULL;
	int rc = o->t.db ? cli_db_open(&o->t, &db) : cli_connect(&o->t, &cl);
	if (rc == 0) {
		rc = db ? vela_index_create(db, &def, &err) : vela_client_index_create(cl, &def, &err);
		if (rc)
			fprintf(stderr, "vela: create %s: %s\n", o->index, err.msg);
	}
	vela_db_close(db);
	vela_client_close(cl);
	free(o);
	return rc ? 1 : 0;
}
