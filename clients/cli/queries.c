/* JSON-lines input of `vela batch` (queries) and `vela import` (vectors):
 * bounded line reader and query decoding with jansson. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "common/common.h"

int cli_line_read(FILE *f, char **buf, size_t *cap, size_t *len, vela_err_t *err)
{
	*len = 0;
	int c;
	while ((c = getc(f)) != EOF && c != '\n') {
		if (*len + 2 > *cap) {
			if (*cap >= CLI_LINE_MAX)
				return vela_err_set(err, VELA_ELIMIT, "line longer than %u bytes",
						    CLI_LINE_MAX);
			size_t ncap = *cap ? *cap * 2 : 4096;
			char *nb = realloc(*buf, ncap);
			if (nb == NULL)
				return vela_err_set(err, VELA_ENOMEM, "out of memory");
			*buf = nb;
			*cap = ncap;
		}
		(*buf)[(*len)++] = (char)c;
	}
	if (ferror(f))
		return vela_err_set(err, VELA_EIO, "read error");
	if (c == EOF && *len == 0)
		return 0;
	if (*cap == 0) { /* an empty first line: nothing grew the buffer yet */
		if ((*buf = malloc(1)) == NULL)
			return vela_err_set(err, VELA_ENOMEM, "out of memory");
		*cap = 1;
	}
	(*buf)[*len] = '\0';
	return 1;
}

int cli_json_vector(const json_t *a, float **out, uint32_t *dim, vela_err_t *err)
{
	*out = NULL;
	if (!json_is_array(a) || json_array_size(a) < VELA_DIM_MIN ||
	    json_array_size(a) > VELA_DIM_MAX)
		return vela_err_set(err, VELA_EDIM, "\"vector\" must be an array of %u..%u numbers",
				    VELA_DIM_MIN, VELA_DIM_MAX);
	size_t n = json_array_size(a);
	float *v = malloc(n * sizeof(float));
	if (v == NULL)
		return vela_err_set(err, VELA_ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		const json_t *x = json_array_get(a, i);
		/* Finite as a float too: 1e39 is a finite double but an infinite float. */
		v[i] = json_is_number(x) ? (float)json_number_value(x) : NAN;
		if (!isfinite(v[i])) {
			free(v);
			return vela_err_set(err, VELA_EINVAL,
					    "\"vector\"[%zu] is not a finite float32 number", i);
		}
	}
	*out = v;
	*dim = (uint32_t)n;
	return 0;
}

/* Optional string member: NULL when absent; error when not a string. */
static int opt_string(json_t *o, const char *name, const char *dflt, char **out, vela_err_t *err)
{
	json_t *v = json_object_get(o, name);
	if (v && !json_is_string(v))
		return vela_err_set(err, VELA_EINVAL, "\"%s\" must be a string", name);
	const char *s = v ? json_string_value(v) : dflt;
	*out = s ? strdup(s) : NULL;
	return s && *out == NULL ? vela_err_set(err, VELA_ENOMEM, "out of memory") : 0;
}

static int query_k(json_t *o, const cli_query_defaults_t *d, uint32_t *k, vela_err_t *err)
{
	json_t *v = json_object_get(o, "k");
	if (v == NULL) {
		*k = d->k ? d->k : VELA_K_DEFAULT;
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < VELA_K_MIN ||
	    json_integer_value(v) > VELA_K_MAX)
		return vela_err_set(err, VELA_EINVAL, "\"k\" must be an integer in %u..%u",
				    VELA_K_MIN, VELA_K_MAX);
	*k = (uint32_t)json_integer_value(v);
	return 0;
}

static int query_vector(json_t *o, const cli_query_defaults_t *d, cli_query_t *q,
			vela_err_t *err)
{
	json_t *v = json_object_get(o, "vector"), *row = json_object_get(o, "vector_file_row");
	if ((v == NULL) == (row == NULL))
		return vela_err_set(err, VELA_EINVAL, "give either \"vector\" or \"vector_file_row\"");
	if (v)
		return cli_json_vector(v, &q->vec, &q->dim, err);
	if (d->vectors == NULL)
		return vela_err_set(err, VELA_EINVAL, "\"vector_file_row\" needs --vectors FILE");
	if (!json_is_integer(row) || json_integer_value(row) < 0 ||
	    (uint64_t)json_integer_value(row) >= d->vectors->rows)
		return vela_err_set(err, VELA_EINVAL, "\"vector_file_row\" must be a row in 0..%zu",
				    d->vectors->rows ? d->vectors->rows - 1 : 0);
	size_t r = (size_t)json_integer_value(row), dim = d->vectors->dim;
	if ((q->vec = malloc(dim * sizeof(float))) == NULL)
		return vela_err_set(err, VELA_ENOMEM, "out of memory");
	memcpy(q->vec, (const float *)d->vectors->data + r * dim, dim * sizeof(float));
	q->dim = (uint32_t)dim;
	return 0;
}

static int query_fields(json_t *o, size_t line_no, const cli_query_defaults_t *d,
			cli_query_t *q, vela_err_t *err)
{
	json_t *id = json_object_get(o, "id");
	q->id = id ? json_incref(id) : json_integer((json_int_t)line_no);
	int rc = opt_string(o, "index", d->index, &q->index, err);
	if (rc == 0 && q->index == NULL)
		rc = vela_err_set(err, VELA_EINVAL, "no \"index\" (and no --index)");
	if (rc == 0)
		rc = opt_string(o, "filter", "*", &q->filter, err);
	if (rc == 0)
		rc = opt_string(o, "field", d->field ? d->field : "v", &q->field, err);
	if (rc == 0)
		rc = query_k(o, d, &q->k, err);
	if (rc == 0)
		rc = query_vector(o, d, q, err);
	return rc;
}

int cli_query_parse(const char *line, size_t len, size_t line_no,
		    const cli_query_defaults_t *d, cli_query_t *q, vela_err_t *err)
{
	memset(q, 0, sizeof(*q));
	json_error_t je;
	json_t *o = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
	if (o == NULL)
		return vela_err_set(err, VELA_ESYNTAX, "line %zu: bad JSON at column %d: %s", line_no,
				    je.column, je.text); /* already has the line */
	int rc = json_is_object(o) ? query_fields(o, line_no, d, q, err)
				   : vela_err_set(err, VELA_EINVAL, "not a JSON object");
	json_decref(o);
	if (rc) { /* add the line number */
		char msg[VELA_ERR_MSG_MAX];
		snprintf(msg, sizeof(msg), "%s", err ? err->msg : "");
		vela_err_set(err, rc, "line %zu: %s", line_no, msg);
		cli_query_clear(q);
	}
	return rc;
}

void cli_query_clear(cli_query_t *q)
{
	json_decref(q->id);
	free(q->index);
	free(q->filter);
	free(q->field);
	free(q->vec);
	memset(q, 0, sizeof(*q));
}

static bool blank(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
			return false;
	return true;
}

static int queries_read(FILE *f, const cli_query_defaults_t *d, cli_query_t **out, size_t *n,
			vela_err_t *err)
{
	char *buf = NULL;
	size_t cap = 0, len, line_no = 0, qcap = 0;
	int rc;
	while ((rc = cli_line_read(f, &buf, &cap, &len, err)) == 1) {
		line_no++;
		if (blank(buf, len))
			continue;
		if (*n == qcap) {
			qcap = qcap ? qcap * 2 : 256;
			cli_query_t *nq = realloc(*out, qcap * sizeof(*nq));
			if (nq == NULL) {
				rc = vela_err_set(err, VELA_ENOMEM, "out of memory");
				break;
			}
			*out = nq;
		}
		if ((rc = cli_query_parse(buf, len, line_no, d, &(*out)[*n], err)) != 0)
			break;
		(*n)++;
	}
	free(buf);
	return rc < 0 ? rc : 0;
}

int cli_queries_load(const char *path, const cli_query_defaults_t *d, cli_query_t **out,
		     size_t *n, vela_err_t *err)
{
	*out = NULL;
	*n = 0;
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	if (f == NULL)
		return vela_err_set(err, VELA_EIO, "%s: cannot open", path);
	int rc = queries_read(f, d, out, n, err);
	if (f != stdin)
		fclose(f);
	if (rc) {
		cli_queries_free(*out, *n);
		*out = NULL;
		*n = 0;
	}
	return rc;
}

void cli_queries_free(cli_query_t *q, size_t n)
{
	for (size_t i = 0; q && i < n; i++)
		cli_query_clear(&q[i]);
	free(q);
}

char *cli_id_text(const cli_query_t *q)
{
	return json_dumps(q->id, JSON_COMPACT | JSON_ENCODE_ANY);
}
