/* `vela embed`: embed a file of texts in bulk, in-process with embed/
 * (docs/cli.md, "vela embed"). Input: one text per line, or JSON lines
 * with the text in a field (--field). Output: .fvecs, .npy (float32, C
 * order) or JSON lines, row i for the i-th text. The output is written to
 * a temporary file beside it and renamed only once every row is written,
 * so a file at the --out path is always complete. */
#define _GNU_SOURCE /* getline, asprintf */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "common/common.h"
#include "embed/embed.h"

#define EMBED_CLI_MODEL_DEFAULT "models/all-MiniLM-L6-v2"
/* Texts per embed call: large enough that the packed GEMMs run at full speed,
 * small enough that an error is found early and memory stays small. */
#define EMBED_CLI_BATCH_DEFAULT 256u
#define EMBED_CLI_BATCH_MIN 1u
#define EMBED_CLI_BATCH_MAX 65536u
/* Bytes reserved for the .npy preamble + header (a multiple of 64, as the
 * format asks); rewritten at the end with the final row count. */
#define NPY_PREAMBLE_BYTES 128u

typedef enum out_fmt { FMT_NONE, FMT_FVECS, FMT_NPY, FMT_JSONL } out_fmt_t;

typedef struct embed_opts {
	const char *model, *field, *key, *out, *in, *kernel;
	out_fmt_t fmt;
	size_t threads, batch;
} embed_opts_t;

/* One run. Everything it points to is owned and freed by run_free(). */
typedef struct embedder {
	const embed_opts_t *o;
	embed_model_t *m;
	uint32_t dim, max_seq;
	FILE *in, *out;
	char *tmp; /* the temporary output path until it is renamed */
	/* the batch being filled: token ids end to end, one length per text */
	int32_t *ids;
	uint32_t *seq;
	char **keys; /* --key values as compact JSON (JSON-lines output only) */
	size_t n, n_ids;
	float *vecs;
	unsigned char *rowbuf; /* one binary output row */
	size_t rows, tokens, line_no;
	cli_progress_t progress;
} embedder_t;

static int embed_usage(void)
{
	fprintf(stderr,
		"usage: vela embed [--model DIR] [--field NAME [--key NAME]] --out FILE.fvecs|.npy|.jsonl\n"
		"                  [--format fvecs|npy|jsonl] [--threads N] [--batch %u]\n"
		"                  [--kernel auto|blas|avx2|avx512] INPUT|-\n"
		"  INPUT: one text per line; with --field, JSON lines with the text in that field\n",
		EMBED_CLI_BATCH_DEFAULT);
	return 2;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);
	return n >= k && strcmp(s + n - k, suffix) == 0;
}

static out_fmt_t fmt_parse(const char *s)
{
	return strcmp(s, "fvecs") == 0 ? FMT_FVECS
	       : strcmp(s, "npy") == 0 ? FMT_NPY
	       : strcmp(s, "jsonl") == 0 || strcmp(s, "json") == 0 ? FMT_JSONL
								    : FMT_NONE;
}

static out_fmt_t fmt_of_path(const char *p)
{
	return ends_with(p, ".fvecs") ? FMT_FVECS
	       : ends_with(p, ".npy") ? FMT_NPY
	       : ends_with(p, ".jsonl") || ends_with(p, ".json") || ends_with(p, ".ndjson")
		       ? FMT_JSONL
		       : FMT_NONE;
}

static int embed_args(int argc, char **argv, embed_opts_t *o)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	*o = (embed_opts_t){.model = EMBED_CLI_MODEL_DEFAULT, .kernel = "auto",
			    .batch = EMBED_CLI_BATCH_DEFAULT,
			    .threads = cpus < 1 ? 1 : cpus > EMBED_THREADS_MAX ? EMBED_THREADS_MAX
									     : (size_t)cpus};
	const char *format = NULL;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		const char **s = strcmp(a, "--model") == 0    ? &o->model
				 : strcmp(a, "--field") == 0  ? &o->field
				 : strcmp(a, "--key") == 0    ? &o->key
				 : strcmp(a, "--out") == 0    ? &o->out
				 : strcmp(a, "--format") == 0 ? &format
				 : strcmp(a, "--kernel") == 0 ? &o->kernel
							      : NULL;
		bool threads = strcmp(a, "--threads") == 0, batch = strcmp(a, "--batch") == 0;
		if ((s || threads || batch) && i + 1 >= argc) {
			fprintf(stderr, "vela embed: %s needs a value\n", a);
			return -1;
		}
		if (s)
			*s = argv[++i];
		else if (threads && cli_parse_size(a, argv[++i], EMBED_THREADS_MIN,
						   EMBED_THREADS_MAX, &o->threads))
			return -1;
		else if (batch && cli_parse_size(a, argv[++i], EMBED_CLI_BATCH_MIN,
						 EMBED_CLI_BATCH_MAX, &o->batch))
			return -1;
		else if (!threads && !batch && ((a[0] == '-' && a[1]) || o->in))
			return -1;
		else if (!threads && !batch)
			o->in = a;
	}
	if (o->in == NULL || o->out == NULL)
		return -1;
	o->fmt = format ? fmt_parse(format) : fmt_of_path(o->out);
	if (o->fmt == FMT_NONE) {
		fprintf(stderr, "vela embed: %s: say --format fvecs|npy|jsonl (or end the name in "
			".fvecs, .npy or .jsonl)\n", format ? format : o->out);
		return -1;
	}
	if (o->key && (o->field == NULL || o->fmt != FMT_JSONL)) {
		fprintf(stderr, "vela embed: --key needs --field (JSON-lines input) and JSON-lines "
			"output\n");
		return -1;
	}
	if (strcmp(o->kernel, "auto") && strcmp(o->kernel, "blas") && strcmp(o->kernel, "avx2") &&
	    strcmp(o->kernel, "avx512")) {
		fprintf(stderr, "vela embed: --kernel %s: want auto, blas, avx2 or avx512\n",
			o->kernel);
		return -1;
	}
	return 0;
}

static embed_kernel_t kernel_of(const char *s)
{
	return strcmp(s, "blas") == 0	 ? EMBED_KERNEL_BLAS
	       : strcmp(s, "avx2") == 0	 ? EMBED_KERNEL_AVX2
	       : strcmp(s, "avx512") == 0 ? EMBED_KERNEL_AVX512
					  : EMBED_KERNEL_AUTO;
}

/* ------------------------------------------------------------ output */

static void put_le32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
	p[2] = (unsigned char)(v >> 16);
	p[3] = (unsigned char)(v >> 24);
}

/* The .npy v1.0 preamble for (rows, dim) float32 C order, padded with
 * spaces to NPY_PREAMBLE_BYTES (NumPy format spec: magic, version, LE u16
 * header length, a Python dict literal, spaces, '\n'). */
static int npy_preamble(FILE *f, size_t rows, uint32_t dim)
{
	char buf[NPY_PREAMBLE_BYTES];
	memset(buf, ' ', sizeof(buf));
	memcpy(buf, "\x93NUMPY\x01\x00", 8);
	buf[8] = (char)(NPY_PREAMBLE_BYTES - 10);
	buf[9] = 0;
	char dict[NPY_PREAMBLE_BYTES];
	int n = snprintf(dict, sizeof(dict),
			 "{'descr': '<f4', 'fortran_order': False, 'shape': (%zu, %u), }", rows,
			 dim);
	if (n < 0 || (size_t)n > NPY_PREAMBLE_BYTES - 11)
		return -1;
	memcpy(buf + 10, dict, (size_t)n);
	buf[NPY_PREAMBLE_BYTES - 1] = '\n';
	return fwrite(buf, 1, sizeof(buf), f) == sizeof(buf) ? 0 : -1;
}

/* Row `v` (dim floats) in the output format; `row` is its number. */
static int row_write(embedder_t *e, const float *v, size_t row, const char *key)
{
	FILE *f = e->out;
	if (e->o->fmt == FMT_JSONL) {
		if (key)
			fprintf(f, "{\"key\": %s, \"vector\": [", key);
		else
			fprintf(f, "{\"key\": \"%zu\", \"vector\": [", row);
		for (uint32_t j = 0; j < e->dim; j++)
			fprintf(f, j ? ", %.9g" : "%.9g", (double)v[j]); /* 9 digits: exact float */
		return fputs("]}\n", f) < 0 ? -1 : 0;
	}
	/* fvecs: int32 dim then the floats; npy: the floats. Little endian. */
	unsigned char *buf = e->rowbuf;
	size_t n = 0;
	if (e->o->fmt == FMT_FVECS) {
		put_le32(buf, e->dim);
		n = 4;
	}
	for (uint32_t j = 0; j < e->dim; j++, n += 4) {
		uint32_t u;
		memcpy(&u, &v[j], 4);
		put_le32(buf + n, u);
	}
	return fwrite(buf, 1, n, f) == n ? 0 : -1;
}

/* Embed the batch gathered so far and append its rows. */
static int batch_flush(embedder_t *e)
{
	if (e->n == 0)
		return 0;
	vela_err_t err;
	if (embed_ids_batch(e->m, e->ids, e->seq, e->n, e->vecs, &err) != 0) {
		fprintf(stderr, "vela embed: %s\n", err.msg);
		return -1;
	}
	for (size_t i = 0; i < e->n; i++) {
		if (row_write(e, e->vecs + i * e->dim, e->rows + i, e->keys[i])) {
			fprintf(stderr, "vela embed: %s: write failed: %s\n", e->tmp,
				strerror(errno));
			return -1;
		}
		free(e->keys[i]);
		e->keys[i] = NULL;
	}
	e->rows += e->n;
	e->n = e->n_ids = 0;
	cli_progress_update(&e->progress, e->rows);
	return 0;
}

/* ------------------------------------------------------------ input */

/* The text of JSON line `line` (a pointer into *root, which the caller
 * frees) and, with --key, that field as compact JSON in *key (malloc'd).
 * Returns 1 for a blank line, 0 for a text, -1 after printing why not. */
static int json_text(embedder_t *e, const char *line, size_t len, json_t **root,
		     const char **text, size_t *text_len, char **key)
{
	size_t i = 0;
	while (i < len && (line[i] == ' ' || line[i] == '\t'))
		i++;
	if (i == len)
		return 1;
	json_error_t je;
	*root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
	if (*root == NULL) {
		fprintf(stderr, "vela embed: %s:%zu: invalid JSON at column %d: %s\n", e->o->in,
			e->line_no, je.column, je.text);
		return -1;
	}
	json_t *t = json_object_get(*root, e->o->field);
	if (!json_is_string(t)) {
		fprintf(stderr, "vela embed: %s:%zu: no string field \"%s\"\n", e->o->in,
			e->line_no, e->o->field);
		return -1;
	}
	*text = json_string_value(t);
	*text_len = json_string_length(t);
	if (e->o->key) {
		json_t *k = json_object_get(*root, e->o->key);
		if (k == NULL || json_is_null(k)) {
			fprintf(stderr, "vela embed: %s:%zu: no field \"%s\" (--key)\n", e->o->in,
				e->line_no, e->o->key);
			return -1;
		}
		if ((*key = json_dumps(k, JSON_ENCODE_ANY | JSON_COMPACT)) == NULL)
			return -1;
	}
	return 0;
}

/* Tokenize one text into the batch (flushing it first when full). */
static int text_add(embedder_t *e, const char *text, size_t len, char *key)
{
	if (e->n == e->o->batch && batch_flush(e))
		return -1;
	size_t k = 0;
	vela_err_t err;
	if (embed_tokenize(embed_model_vocab(e->m), text, len, e->ids + e->n_ids, e->max_seq, &k,
			   &err) != 0) {
		const char *msg = strncmp(err.msg, "tokenizer: ", 11) == 0 ? err.msg + 11 : err.msg;
		fprintf(stderr, "vela embed: %s:%zu: %s\n", e->o->in, e->line_no, msg);
		free(key);
		return -1;
	}
	e->keys[e->n] = key;
	e->seq[e->n++] = (uint32_t)k;
	e->n_ids += k;
	e->tokens += k;
	return 0;
}

static int input_read(embedder_t *e)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t got;
	int rc = 0;
	errno = 0;
	while (rc == 0 && (got = getline(&line, &cap, e->in)) >= 0) {
		size_t len = (size_t)got;
		e->line_no++;
		if (len && line[len - 1] == '\n')
			len--;
		if (len && line[len - 1] == '\r')
			len--;
		if (e->o->field == NULL) {
			rc = text_add(e, line, len, NULL);
			continue;
		}
		json_t *root = NULL;
		const char *text = NULL;
		size_t tlen = 0;
		char *key = NULL;
		int j = json_text(e, line, len, &root, &text, &tlen, &key);
		if (j < 0)
			rc = -1;
		else if (j == 0)
			rc = text_add(e, text, tlen, key);
		if (j < 0)
			free(key);
		json_decref(root);
	}
	if (rc == 0 && ferror(e->in)) {
		fprintf(stderr, "vela embed: %s: read error: %s\n", e->o->in, strerror(errno));
		rc = -1;
	}
	free(line);
	return rc == 0 ? batch_flush(e) : rc;
}

/* Lines in a regular file (for the progress bar); 0 when unknown. */
static size_t lines_count(const char *path)
{
	struct stat sb;
	if (strcmp(path, "-") == 0 || stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
		return 0;
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return 0;
	char buf[65536];
	size_t n = 0, got, last = '\n';
	while ((got = fread(buf, 1, sizeof(buf), f)) > 0) {
		for (const char *p = buf; (p = memchr(p, '\n', got - (size_t)(p - buf))) != NULL;
		     p++)
			n++;
		last = (unsigned char)buf[got - 1];
	}
	fclose(f);
	return n + (last != '\n');
}

/* ------------------------------------------------------------ the run */

static int run_open(embedder_t *e)
{
	const embed_opts_t *o = e->o;
	embed_model_opts_t mo = {.threads = (uint32_t)o->threads, .kernel = kernel_of(o->kernel)};
	vela_err_t err;
	if (embed_model_open_opts(o->model, &mo, &e->m, &err) != 0) {
		fprintf(stderr, "vela embed: %s: %s%s\n", o->model, err.msg,
			err.code == VELA_EIO ? " (run `make models`, or give --model DIR)" : "");
		return -1;
	}
	e->dim = embed_model_dim(e->m);
	e->max_seq = embed_model_max_seq(e->m);
	e->ids = malloc(vela_mul_size(o->batch, (size_t)e->max_seq * sizeof(int32_t)));
	e->seq = malloc(o->batch * sizeof(uint32_t));
	e->keys = calloc(o->batch, sizeof(char *));
	e->vecs = malloc(vela_mul_size(o->batch, (size_t)e->dim * sizeof(float)));
	e->rowbuf = malloc(4 + (size_t)e->dim * 4);
	if (!e->ids || !e->seq || !e->keys || !e->vecs || !e->rowbuf) {
		fprintf(stderr, "vela embed: out of memory\n");
		return -1;
	}
	e->in = strcmp(o->in, "-") == 0 ? stdin : fopen(o->in, "rb");
	if (e->in == NULL) {
		fprintf(stderr, "vela embed: %s: %s\n", o->in, strerror(errno));
		return -1;
	}
	/* O_EXCL: never write through a file someone else made under the name. */
	if (asprintf(&e->tmp, "%s.tmp.%ld", o->out, (long)getpid()) < 0) {
		e->tmp = NULL;
		fprintf(stderr, "vela embed: out of memory\n");
		return -1;
	}
	int fd = open(e->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0 || (e->out = fdopen(fd, "wb")) == NULL) {
		fprintf(stderr, "vela embed: %s: %s\n", e->tmp, strerror(errno));
		if (fd >= 0)
			close(fd);
		free(e->tmp); /* nothing of ours there (or nothing at all) to remove */
		e->tmp = NULL;
		return -1;
	}
	if (o->fmt == FMT_NPY && npy_preamble(e->out, 0, e->dim) != 0) {
		fprintf(stderr, "vela embed: %s: write failed: %s\n", e->tmp, strerror(errno));
		return -1;
	}
	return 0;
}

/* Complete the .npy header, flush, sync and rename over --out. */
static int run_commit(embedder_t *e)
{
	int rc = 0;
	if (e->o->fmt == FMT_NPY)
		rc = fseek(e->out, 0, SEEK_SET) || npy_preamble(e->out, e->rows, e->dim) ? -1 : 0;
	if (rc == 0 && (fflush(e->out) != 0 || fsync(fileno(e->out)) != 0))
		rc = -1;
	if (fclose(e->out) != 0)
		rc = -1;
	e->out = NULL;
	if (rc != 0) {
		fprintf(stderr, "vela embed: %s: write failed: %s\n", e->tmp, strerror(errno));
		return -1;
	}
	if (rename(e->tmp, e->o->out) != 0) {
		fprintf(stderr, "vela embed: rename %s to %s: %s\n", e->tmp, e->o->out,
			strerror(errno));
		return -1;
	}
	free(e->tmp);
	e->tmp = NULL;
	return 0;
}

/* Free everything; on failure, remove the temporary output. */
static void run_free(embedder_t *e)
{
	if (e->out)
		fclose(e->out);
	if (e->tmp) {
		unlink(e->tmp);
		free(e->tmp);
	}
	if (e->in && e->in != stdin)
		fclose(e->in);
	for (size_t i = 0; e->keys && i < e->o->batch; i++)
		free(e->keys[i]);
	free(e->keys);
	free(e->ids);
	free(e->seq);
	free(e->vecs);
	free(e->rowbuf);
	embed_model_close(e->m);
}

int cmd_embed(int argc, char **argv)
{
	embed_opts_t o;
	if (embed_args(argc, argv, &o) != 0)
		return embed_usage();
	embedder_t e = {.o = &o};
	uint64_t t0 = vela_now_ns();
	int rc = run_open(&e);
	double load_s = (double)(vela_now_ns() - t0) * 1e-9;
	if (rc == 0) {
		cli_progress_start(&e.progress, "embed", lines_count(o.in));
		t0 = vela_now_ns();
		rc = input_read(&e);
		cli_progress_end(&e.progress);
	}
	if (rc == 0)
		rc = run_commit(&e);
	if (rc == 0) {
		double s = (double)(vela_now_ns() - t0) * 1e-9;
		fprintf(stderr,
			"vela embed: %zu texts, %zu tokens (%.1f per text) in %.2f s: %.1f texts/s, "
			"%.0f tokens/s; model %s (%u dims, kernel %s, load %.2f s), threads %zu, "
			"batch %zu -> %s\n",
			e.rows, e.tokens, e.rows ? (double)e.tokens / (double)e.rows : 0.0, s,
			s > 0 ? (double)e.rows / s : 0.0, s > 0 ? (double)e.tokens / s : 0.0,
			o.model, e.dim, embed_model_kernel_name(e.m), load_s, o.threads, o.batch,
			o.out);
	}
	run_free(&e);
	return rc == 0 ? 0 : 1;
}
