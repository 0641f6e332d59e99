/* Private to the vela CLI (clients/cli/): shared option parsing, progress
 * bar, statistics and the JSON-lines query reader of `vela batch`/`import`. */
#ifndef VELA_CLI_H
#define VELA_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "vela/client.h"
#include "vela/vela.h"

/* Longest line of a JSON-lines input (a query or a document). */
#define CLI_LINE_MAX (64u << 20)

/* Where a command runs: a database directory, or a server. */
typedef struct cli_target {
	const char *db;
	const char *host;
	int port;
	const char *user;
	const char *password;
	int timeout_ms;
	size_t map_mib; /**< --map-size MiB with --db (0: the database's own) */
} cli_target_t;

/* If argv[*i] is a target option, consume it (and its value): 1; not one: 0;
 * missing value: -1. */
int cli_target_opt(cli_target_t *t, int argc, char **argv, int *i);
/* Check exactly one of --db / --host was given; prints why not. */
int cli_target_check(const cli_target_t *t);
/* Open the target (prints the error): 0 or 1. */
int cli_db_open(const cli_target_t *t, vela_db_t **db);
int cli_connect(const cli_target_t *t, vela_client_t **c);
/* Parse a bounded unsigned option value; prints and returns -1 when invalid. */
int cli_parse_size(const char *opt, const char *s, size_t min, size_t max, size_t *out);

/* A progress bar on stderr, drawn only when stderr is a terminal. */
typedef struct cli_progress {
	bool tty;
	const char *what;
	size_t total;
	uint64_t t0, last;
} cli_progress_t;

void cli_progress_start(cli_progress_t *p, const char *what, size_t total);
void cli_progress_update(cli_progress_t *p, size_t done);
void cli_progress_end(cli_progress_t *p);

/* The p-quantile (0..1) of v[0..n) (sorts v); NAN when n == 0. */
double cli_quantile(double *v, size_t n, double p);

/* One query of a `vela batch` file. Owned by the array from cli_queries_load. */
typedef struct cli_query {
	json_t *id;   /* a reference (any JSON value); absent: the line number */
	char *index;  /* NULL = --index */
	char *filter; /* "*" when absent */
	char *field;  /* "v" when absent */
	uint32_t k;
	float *vec;   /* owned copy */
	uint32_t dim;
} cli_query_t;

typedef struct cli_query_defaults {
	const char *index;
	const char *field;
	uint32_t k;
	const vela_vecs_t *vectors; /* --vectors, for "vector_file_row"; may be NULL */
} cli_query_defaults_t;

/* Parse one JSON line into q (line_no is used for messages and a missing id).
 * Returns 0 or VELA_ESYNTAX / VELA_EINVAL / VELA_EDIM with err set. */
int cli_query_parse(const char *line, size_t len, size_t line_no,
		    const cli_query_defaults_t *d, cli_query_t *q, vela_err_t *err);
void cli_query_clear(cli_query_t *q);
/* Read a whole query file (blank lines skipped). *out: n queries, owned;
 * free with cli_queries_free. */
int cli_queries_load(const char *path, const cli_query_defaults_t *d, cli_query_t **out,
		     size_t *n, vela_err_t *err);
void cli_queries_free(cli_query_t *q, size_t n);
/* Read lines of at most CLI_LINE_MAX bytes: 1 line, 0 end, VELA_ELIMIT / VELA_EIO. */
int cli_line_read(FILE *f, char **buf, size_t *cap, size_t *len, vela_err_t *err);
/* The id as compact JSON text (malloc'd). */
char *cli_id_text(const cli_query_t *q);

/* A JSON vector ("vector": [numbers]) into a malloc'd float array. */
int cli_json_vector(const json_t *a, float **out, uint32_t *dim, vela_err_t *err);

int cmd_batch(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_create(int argc, char **argv);
int cmd_backup(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_embed(int argc, char **argv);
int cmd_train_layout(int argc, char **argv);
int cmd_train(int argc, char **argv);

#endif
