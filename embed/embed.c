/* The batch entry points: tokenize, split into packed chunks bounded by a
 * token budget (TEI's max_batch_tokens idea, reference §3.4, without
 * padding: the budget counts real tokens only), run the chunks, on up to
 * `threads` threads of this call. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "embed/embed_impl.h"

/* Consecutive sequences [first, first + n) form one chunk. */
typedef struct {
	size_t first, n, tok0; /* tok0: offset of the first token in ids */
} chunk_t;

typedef struct {
	const embed_model_t *m;
	const int32_t *ids;
	const uint32_t *lens;
	float *out;
	const chunk_t *chunks;
	size_t n_chunks;
	uint32_t team; /* threads per chunk */
	atomic_size_t next;
	atomic_int rc;
	vela_err_t err; /* the first failure's detail */
	pthread_mutex_t lock;
} run_t;

/* Chunks of at most `budget` tokens, each whole sequences. */
static size_t chunks_plan(const uint32_t *lens, size_t n, size_t budget, chunk_t *c)
{
	size_t k = 0, tok = 0;
	for (size_t s = 0; s < n;) {
		chunk_t ch = {.first = s, .tok0 = tok};
		size_t t = 0;
		while (s < n && (ch.n == 0 || t + lens[s] <= budget)) {
			t += lens[s];
			tok += lens[s++];
			ch.n++;
		}
		c[k++] = ch;
	}
	return k;
}

static void *run_worker(void *arg)
{
	run_t *r = arg;
	for (;;) {
		size_t i = atomic_fetch_add(&r->next, 1);
		if (i >= r->n_chunks || atomic_load(&r->rc) != 0)
			break;
		const chunk_t *c = &r->chunks[i];
		vela_err_t e;
		int rc = embed_forward(r->m, r->ids + c->tok0, r->lens + c->first, (uint32_t)c->n,
				       r->team, r->out + c->first * r->m->cfg.hidden, &e);
		if (rc != 0) {
			pthread_mutex_lock(&r->lock);
			if (atomic_load(&r->rc) == 0) {
				r->err = e;
				atomic_store(&r->rc, rc);
			}
			pthread_mutex_unlock(&r->lock);
		}
	}
	return NULL;
}

/* Run the planned chunks: with at least as many chunks as threads, one
 * thread per chunk (no synchronisation inside a pass); with fewer (a small
 * batch), the chunks one after the other, each by a team of all threads. */
static int run_chunks(run_t *r, uint32_t threads, vela_err_t *err)
{
	pthread_t tid[EMBED_THREADS_MAX];
	uint32_t started = 0;
	r->team = 1;
	if (threads > r->n_chunks) {
		r->team = threads;
		threads = 1;
	}
	for (uint32_t i = 1; i < threads; i++)
		if (pthread_create(&tid[started], NULL, run_worker, r) == 0)
			started++; /* fewer threads is slower, not wrong */
	run_worker(r);
	for (uint32_t i = 0; i < started; i++)
		pthread_join(tid[i], NULL);
	int rc = atomic_load(&r->rc);
	if (rc != 0 && err != NULL)
		*err = r->err;
	return rc;
}

/* Token budget per chunk: the model's, but small enough that every thread
 * gets a chunk when the batch is large enough to share. */
static size_t chunk_budget(const embed_model_t *m, size_t total)
{
	size_t b = m->batch_tokens, per = (total + m->threads - 1) / m->threads;
	if (m->threads > 1 && per < b)
		b = per > m->max_seq ? per : m->max_seq;
	return b;
}

static int ids_run(const embed_model_t *m, const int32_t *ids, const uint32_t *lens, size_t n,
		   float *out, vela_err_t *err)
{
	if (m->gpu && embed_gpu_run(m, ids, lens, n, out) == 0)
		return 0; /* else the CPU: no GPU, or it failed (gpu.c) */
	size_t total = 0;
	for (size_t s = 0; s < n; s++)
		total += lens[s];
	chunk_t *chunks = malloc((n ? n : 1) * sizeof(*chunks));
	if (chunks == NULL)
		return vela_err_set(err, VELA_ENOMEM, "embed: out of memory");
	run_t r = {.m = m, .ids = ids, .lens = lens, .out = out, .chunks = chunks};
	r.n_chunks = chunks_plan(lens, n, chunk_budget(m, total), chunks);
	atomic_init(&r.next, 0);
	atomic_init(&r.rc, 0);
	pthread_mutex_init(&r.lock, NULL);
	int rc = run_chunks(&r, m->threads, err);
	pthread_mutex_destroy(&r.lock);
	free(chunks);
	return rc;
}

int embed_ids_batch(const embed_model_t *m, const int32_t *ids, const uint32_t *seq_lens,
		    size_t n, float *out, vela_err_t *err)
{
	if (m == NULL || (n > 0 && (ids == NULL || seq_lens == NULL || out == NULL)))
		return vela_err_set(err, VELA_EINVAL, "embed: bad argument");
	size_t t = 0;
	for (size_t s = 0; s < n; s++) {
		if (seq_lens[s] < 1 || seq_lens[s] > m->max_seq)
			return vela_err_set(err, VELA_EINVAL, "embed: sequence %zu has %u tokens "
					    "(1..%u)", s, seq_lens[s], m->max_seq);
		for (uint32_t i = 0; i < seq_lens[s]; i++, t++)
			if (ids[t] < 0 || (uint32_t)ids[t] >= m->cfg.vocab)
				return vela_err_set(err, VELA_EINVAL, "embed: sequence %zu: token id "
						    "%d out of range", s, ids[t]);
	}
	return ids_run(m, ids, seq_lens, n, out, err);
}

int embed_text_batch(const embed_model_t *m, const char *const *texts, const size_t *lens,
		     size_t n, float *out, vela_err_t *err)
{
	if (m == NULL || (n > 0 && (texts == NULL || out == NULL)))
		return vela_err_set(err, VELA_EINVAL, "embed: bad argument");
	int32_t *ids = malloc(vela_mul_size(n ? n : 1, (size_t)m->max_seq * sizeof(int32_t)));
	uint32_t *sl = malloc((n ? n : 1) * sizeof(uint32_t));
	int rc = (ids && sl) ? 0 : vela_err_set(err, VELA_ENOMEM, "embed: out of memory");
	size_t t = 0;
	for (size_t i = 0; rc == 0 && i < n; i++) {
		size_t k = 0, len = texts[i] == NULL ? 0 : lens ? lens[i] : strlen(texts[i]);
		vela_err_t e;
		rc = embed_tokenize(m->vocab, texts[i], len, ids + t, m->max_seq, &k, &e);
		if (rc != 0)
			vela_err_set(err, rc, "embed: text %zu: %s", i, e.msg);
		sl[i] = (uint32_t)k;
		t += k;
	}
	if (rc == 0)
		rc = ids_run(m, ids, sl, n, out, err);
	free(ids);
	free(sl);
	return rc;
}
