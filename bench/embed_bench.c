/* bench_embed_bench: CPU throughput of vela's in-process all-MiniLM-L6-v2
 * encoder (embed/), in sentences/s at batch 1 and batch 64, end to end
 * (tokenizing, the packed forward pass, pooling, normalisation).
 *
 * Texts: WordNet glosses, every synset's definition with its examples cut
 * off: from the dataset `make wordnet` builds (--texts
 * data/wordnet/synsets.jsonl, the "gloss" field of each line; --field
 * names another), or straight from Debian wordnet-base's
 * /usr/share/wordnet/data.* when no --texts is given (the same texts in the
 * same order), or from any file of one text per line. --n texts are taken
 * at an even stride over them, so all parts of speech appear. --dump FILE
 * writes the texts used, so the onnxruntime peer (bench/embed_peer.py)
 * runs on exactly the same input.
 *
 * Usage: bench_embed_bench [--model DIR] [--texts FILE.txt|FILE.jsonl [--field gloss]]
 *                          [--dump FILE] [--n N] [--threads T]
 *                          [--kernel auto|blas|avx2|avx512] [--reps R] [--batches 1,64]
 * Each figure is the best of --reps rounds (default 3).
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "embed/embed.h"

#define TEXT_MAX 4096

typedef struct {
	const char *model, *texts, *dump, *kernel, *field;
	uint32_t n, threads, reps;
	char batches[64];
} opts_t;

typedef struct {
	char **v;
	size_t n, cap;
} texts_t;

static int texts_add(texts_t *t, const char *s, size_t len)
{
	if (t->n == t->cap) {
		size_t cap = t->cap ? 2 * t->cap : 1024;
		char **v = realloc(t->v, cap * sizeof(*v));
		if (v == NULL)
			return -1;
		t->v = v;
		t->cap = cap;
	}
	char *c = strndup(s, len);
	if (c == NULL)
		return -1;
	t->v[t->n++] = c;
	return 0;
}

/* The gloss of a data.* line: after "| ", up to the first example ("; \""). */
static int gloss_of(const char *line, const char **s, size_t *len)
{
	const char *g = strstr(line, "| ");
	if (line[0] < '0' || line[0] > '9' || g == NULL)
		return -1;
	g += 2;
	const char *e = strstr(g, "; \"");
	size_t l = e ? (size_t)(e - g) : strcspn(g, "\r\n");
	while (l > 0 && (g[l - 1] == ' ' || g[l - 1] == '\n'))
		l--;
	*s = g;
	*len = l;
	return l > 0 ? 0 : -1;
}

static int load_wordnet(texts_t *all)
{
	const char *files[] = {"noun", "verb", "adj", "adv"};
	char path[256], line[16384];
	for (int i = 0; i < 4; i++) {
		snprintf(path, sizeof(path), "/usr/share/wordnet/data.%s", files[i]);
		FILE *f = fopen(path, "r");
		if (f == NULL)
			return -1;
		while (fgets(line, sizeof(line), f)) {
			const char *s;
			size_t l;
			if (gloss_of(line, &s, &l) == 0 && texts_add(all, s, l) != 0)
				break;
		}
		fclose(f);
	}
	return all->n ? 0 : -1;
}

/* One text per line, or (a .jsonl file) the string `field` of each line. */
static int load_lines(const char *path, const char *field, texts_t *all)
{
	FILE *f = fopen(path, "r");
	size_t n = strlen(path);
	bool jsonl = n > 6 && strcmp(path + n - 6, ".jsonl") == 0;
	char line[TEXT_MAX * 4];
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		size_t len = strcspn(line, "\r\n");
		if (!jsonl) {
			if (texts_add(all, line, len) != 0)
				break;
			continue;
		}
		json_t *o = json_loadb(line, len, 0, NULL), *t = json_object_get(o, field);
		int rc = json_is_string(t) ? texts_add(all, json_string_value(t),
						       json_string_length(t)) : 0;
		json_decref(o);
		if (rc != 0)
			break;
	}
	fclose(f);
	return all->n ? 0 : -1;
}

/* n texts at an even stride over `all` (all of them when n >= all->n). */
static void texts_pick(const texts_t *all, size_t n, texts_t *out)
{
	if (n > all->n)
		n = all->n;
	for (size_t i = 0; i < n; i++) {
		const char *s = all->v[(size_t)((double)i * all->n / n)];
		texts_add(out, s, strlen(s));
	}
}

static int parse(int argc, char **argv, opts_t *o)
{
	*o = (opts_t){"models/all-MiniLM-L6-v2", NULL, NULL, "auto", "gloss", 2048, 1, 3, "1,64"};
	for (int i = 1; i + 1 < argc; i += 2) {
		const char *k = argv[i], *v = argv[i + 1];
		if (!strcmp(k, "--model"))
			o->model = v;
		else if (!strcmp(k, "--texts"))
			o->texts = v;
		else if (!strcmp(k, "--field"))
			o->field = v;
		else if (!strcmp(k, "--dump"))
			o->dump = v;
		else if (!strcmp(k, "--kernel"))
			o->kernel = v;
		else if (!strcmp(k, "--n"))
			o->n = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(k, "--threads"))
			o->threads = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(k, "--reps"))
			o->reps = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(k, "--batches"))
			snprintf(o->batches, sizeof(o->batches), "%s", v);
		else
			return -1;
	}
	return o->n && o->reps ? 0 : -1;
}

static embed_kernel_t kernel_of(const char *s)
{
	return !strcmp(s, "blas") ? EMBED_KERNEL_BLAS : !strcmp(s, "avx2") ? EMBED_KERNEL_AVX2
		: !strcmp(s, "avx512") ? EMBED_KERNEL_AVX512 : EMBED_KERNEL_AUTO;
}

/* Seconds for one pass over all texts in calls of `batch` texts. */
static double run_pass(const embed_model_t *m, const texts_t *t, size_t batch, float *out)
{
	vela_err_t err;
	uint64_t t0 = vela_now_ns();
	for (size_t i = 0; i < t->n; i += batch) {
		size_t b = t->n - i < batch ? t->n - i : batch;
		if (embed_text_batch(m, (const char *const *)t->v + i, NULL, b, out, &err) != 0) {
			fprintf(stderr, "embed: %s\n", err.msg);
			exit(1);
		}
	}
	return (double)(vela_now_ns() - t0) * 1e-9;
}

static size_t count_tokens(const embed_model_t *m, const texts_t *t)
{
	int32_t ids[EMBED_MAX_SEQ_MAX];
	size_t total = 0, n;
	for (size_t i = 0; i < t->n; i++)
		if (embed_tokenize(embed_model_vocab(m), t->v[i], strlen(t->v[i]), ids,
				   embed_model_max_seq(m), &n, NULL) == 0)
			total += n;
	return total;
}

int main(int argc, char **argv)
{
	opts_t o;
	if (parse(argc, argv, &o) != 0) {
		fprintf(stderr, "usage: bench_embed_bench [--model DIR] [--texts FILE [--field F]] [--dump FILE] "
			"[--n N] [--threads T] [--kernel auto|blas|avx2|avx512] [--reps R] "
			"[--batches 1,64]\n");
		return 2;
	}
	texts_t all = {0}, t = {0};
	if ((o.texts ? load_lines(o.texts, o.field, &all) : load_wordnet(&all)) != 0) {
		fprintf(stderr, "bench_embed_bench: no texts (install wordnet-base or pass --texts)\n");
		return 1;
	}
	texts_pick(&all, o.n, &t);
	if (o.dump) {
		FILE *f = fopen(o.dump, "w");
		for (size_t i = 0; f && i < t.n; i++)
			fprintf(f, "%s\n", t.v[i]);
		if (f)
			fclose(f);
	}
	embed_model_opts_t mo = {.threads = o.threads, .kernel = kernel_of(o.kernel)};
	embed_model_t *m;
	vela_err_t err;
	uint64_t t0 = vela_now_ns();
	if (embed_model_open_opts(o.model, &mo, &m, &err) != 0) {
		fprintf(stderr, "bench_embed_bench: %s (run `make models`)\n", err.msg);
		return 1;
	}
	double load = (double)(vela_now_ns() - t0) * 1e-9;
	size_t tokens = count_tokens(m, &t);
	printf("bench_embed_bench: model=%s kernel=%s threads=%u texts=%zu (%s) tokens=%zu "
	       "(%.1f per text, [CLS]/[SEP] included) load=%.2fs cpu=[%s]\n", o.model,
	       embed_model_kernel_name(m), o.threads, t.n, o.texts ? o.texts : "WordNet glosses",
	       tokens, (double)tokens / t.n, load, vela_cpu_features_str());
	float *out = malloc((size_t)64 * 1024 * embed_model_dim(m) * sizeof(float));
	printf("%8s %14s %14s %12s\n", "batch", "sentences/s", "tokens/s", "ms/batch");
	for (char *s = o.batches; *s;) {
		size_t batch = strtoul(s, &s, 10);
		if (*s == ',')
			s++;
		if (batch == 0 || batch > 64 * 1024)
			continue;
		run_pass(m, &t, batch, out); /* warm-up */
		double best = 1e30;
		for (uint32_t r = 0; r < o.reps; r++) {
			double sec = run_pass(m, &t, batch, out);
			best = sec < best ? sec : best;
		}
		printf("%8zu %14.1f %14.0f %12.3f\n", batch, t.n / best, tokens / best,
		       best * 1e3 / ((t.n + batch - 1) / batch));
	}
	free(out);
	embed_model_close(m);
	for (size_t i = 0; i < all.n; i++)
		free(all.v[i]);
	for (size_t i = 0; i < t.n; i++)
		free(t.v[i]);
	free(all.v);
	free(t.v);
	return 0;
}
