/* The BERT encoder forward pass over one packed chunk
 * (reference/embeddings-and-datasets.md §1.3, HF modeling_bert, post-LN):
 *
 *   x = LN(W_word[id] + W_pos[p] + W_type[0])            p restarts per sequence
 *   per layer: a = LN1(attn(x) W_o^T + b_o + x);  x = LN2(GELU(a W_1^T + b_1) W_2^T + b_2 + a)
 *   e = mean over the sequence's tokens; e / max(|e|, 1e-12)
 *
 * The chunk is "unpadded" (Prepacking, arXiv 2404.09529 §3; TEI's varlen
 * path): every linear layer and LayerNorm runs once over all T tokens of
 * all sequences, and only attention goes sequence by sequence, so a token
 * never sees another sequence and no padding is ever computed.
 *
 * A team of threads may share one chunk (a small batch, or batch 1): each
 * step is split (products by output columns, LayerNorm by rows, attention
 * by sequence and head) and a barrier separates dependent steps. Every
 * output element is computed by exactly one thread with the same
 * arithmetic as alone, so results do not depend on the team size. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "embed/embed_impl.h"

/* Activations of one chunk, shared by the team: x and tmp [T, H]; big
 * holds q|k|v [T, 3H] and the attention context [T, H], later the FFN
 * hidden [T, I] (not live at the same time, so they share); att holds one
 * attention scratch per thread. */
typedef struct {
	const embed_model_t *m;
	const int32_t *ids;
	const uint32_t *lens;
	size_t *offs; /* first token of each sequence */
	uint32_t n, T;
	float *x, *tmp, *big, *att, *out;
	size_t att_stride;
	embed_team_t team;
} fwd_t;

/* y = x W^T + b over this thread's columns (GELU after, when asked). */
static void step_linear(const fwd_t *f, uint32_t tid, const embed_linear_t *l, const float *x,
			float *y, int gelu)
{
	const embed_kernels_t *k = f->m->k;
	uint32_t c0, c1;
	embed_team_share(&f->team, tid, l->out, k->col_align, &c0, &c1);
	if (c0 >= c1)
		return;
	k->linear(l, x, f->T, y, l->out, c0, c1);
	if (gelu)
		for (uint32_t r = 0; r < f->T; r++)
			k->gelu(y + (size_t)r * l->out + c0, c1 - c0);
}

/* x[r] = LN(x[r] + add[r]) over this thread's rows. */
static void step_ln(const fwd_t *f, uint32_t tid, float *x, const float *add, const float *g,
		    const float *b)
{
	uint32_t h = f->m->cfg.hidden, r0, r1;
	embed_team_share(&f->team, tid, f->T, 1, &r0, &r1);
	if (r0 < r1)
		f->m->k->layernorm(x + (size_t)r0 * h, add ? add + (size_t)r0 * h : NULL, r1 - r0, h,
				   g, b, f->m->cfg.ln_eps);
}

/* Token, position (restarting per sequence) and type-0 embeddings of this
 * thread's sequences. */
static void step_embed(const fwd_t *f, uint32_t tid)
{
	const embed_model_t *m = f->m;
	uint32_t h = m->cfg.hidden;
	for (uint32_t s = tid; s < f->n; s += f->team.size)
		for (uint32_t p = 0; p < f->lens[s]; p++) {
			size_t t = f->offs[s] + p;
			const float *we = m->word_emb + (size_t)f->ids[t] * h;
			const float *pe = m->pos_emb + (size_t)p * h;
			float *row = f->x + t * h;
			for (uint32_t i = 0; i < h; i++)
				row[i] = we[i] + pe[i] + m->type_emb[i];
		}
}

/* Attention of this thread's (sequence, head) pairs. */
static void step_attend(const fwd_t *f, uint32_t tid, const float *qkv, float *ctx)
{
	const embed_model_t *m = f->m;
	uint32_t h = m->cfg.hidden, heads = m->cfg.heads;
	float scale = 1.0f / sqrtf((float)(h / heads));
	float *att = f->att + tid * f->att_stride;
	for (size_t i = tid; i < (size_t)f->n * heads; i += f->team.size) {
		uint32_t s = (uint32_t)(i / heads), hd = (uint32_t)(i % heads);
		m->k->attend(qkv + f->offs[s] * 3 * h, f->lens[s], h, heads, hd, hd + 1, scale, att,
			     ctx + f->offs[s] * h);
	}
}

/* Mean over each of this thread's sequences ([CLS] and [SEP] included:
 * their mask is 1), then L2 normalisation as F.normalize (norm >= 1e-12). */
static void step_pool(const fwd_t *f, uint32_t tid, const float *x)
{
	uint32_t h = f->m->cfg.hidden;
	double acc[EMBED_POOL_DIM_MAX];
	for (uint32_t s = tid; s < f->n; s += f->team.size) {
		memset(acc, 0, h * sizeof(double));
		for (uint32_t p = 0; p < f->lens[s]; p++)
			for (uint32_t i = 0; i < h; i++)
				acc[i] += x[(f->offs[s] + p) * h + i];
		double nrm = 0;
		for (uint32_t i = 0; i < h; i++) {
			acc[i] /= f->lens[s];
			nrm += acc[i] * acc[i];
		}
		nrm = sqrt(nrm);
		nrm = nrm > 1e-12 ? nrm : 1e-12;
		for (uint32_t i = 0; i < h; i++)
			f->out[(size_t)s * h + i] = (float)(acc[i] / nrm);
	}
}

/* The whole pass as one team member sees it; x and tmp swap roles after
 * each residual LayerNorm (every member swaps its own copies alike). */
static void forward_member(void *arg, uint32_t tid)
{
	fwd_t *f = arg;
	const embed_model_t *m = f->m;
	uint32_t h = m->cfg.hidden;
	float *x = f->x, *tmp = f->tmp, *t;
	float *qkv = f->big, *ctx = f->big + (size_t)f->T * 3 * h;
	step_embed(f, tid);
	embed_team_sync(&f->team);
	step_ln(f, tid, x, NULL, m->emb_ln_g, m->emb_ln_b);
	embed_team_sync(&f->team);
	for (uint32_t l = 0; l < m->cfg.layers; l++) {
		const embed_layer_t *L = &m->layer[l];
		step_linear(f, tid, &L->qkv, x, qkv, 0);
		embed_team_sync(&f->team);
		step_attend(f, tid, qkv, ctx);
		embed_team_sync(&f->team);
		step_linear(f, tid, &L->attn_out, ctx, tmp, 0);
		embed_team_sync(&f->team);
		step_ln(f, tid, tmp, x, L->ln1_g, L->ln1_b);
		embed_team_sync(&f->team);
		t = x, x = tmp, tmp = t;
		step_linear(f, tid, &L->ffn_in, x, f->big, 1);
		embed_team_sync(&f->team);
		step_linear(f, tid, &L->ffn_out, f->big, tmp, 0);
		embed_team_sync(&f->team);
		step_ln(f, tid, tmp, x, L->ln2_g, L->ln2_b);
		embed_team_sync(&f->team);
		t = x, x = tmp, tmp = t;
	}
	step_pool(f, tid, x);
}

static void fwd_free(fwd_t *f)
{
	free(f->offs);
	free(f->x);
	free(f->tmp);
	free(f->big);
	free(f->att);
}

static int fwd_alloc(fwd_t *f, uint32_t max_len)
{
	const embed_config_t *c = &f->m->cfg;
	size_t big = 4 * (size_t)c->hidden > c->intermediate ? 4 * (size_t)c->hidden
							     : c->intermediate;
	size_t pad = 64; /* kernels may read a panel's width past a row's end */
	f->att_stride = (embed_attend_scratch(max_len, c->hidden / c->heads) + 15) / 16 * 16;
	f->offs = malloc((f->n ? f->n : 1) * sizeof(size_t));
	f->x = vela_aligned_alloc(64, vela_mul_size(f->T * (size_t)c->hidden + pad, sizeof(float)));
	f->tmp = vela_aligned_alloc(64, vela_mul_size(f->T * (size_t)c->hidden + pad, sizeof(float)));
	f->big = vela_aligned_alloc(64, vela_mul_size(f->T * big + pad, sizeof(float)));
	f->att = vela_aligned_alloc(64, vela_mul_size(f->att_stride * f->team.size, sizeof(float)));
	if (f->offs && f->x && f->tmp && f->big && f->att)
		return 0;
	fwd_free(f);
	return VELA_ENOMEM;
}

int embed_forward(const embed_model_t *m, const int32_t *ids, const uint32_t *lens, uint32_t n,
		  uint32_t team, float *out, vela_err_t *err)
{
	fwd_t f = {.m = m, .ids = ids, .lens = lens, .n = n, .out = out};
	uint32_t max_len = 0;
	for (uint32_t s = 0; s < n; s++) {
		f.T += lens[s];
		max_len = lens[s] > max_len ? lens[s] : max_len;
	}
	f.team.size = team < 1 ? 1 : team > EMBED_THREADS_MAX ? EMBED_THREADS_MAX : team;
	if (fwd_alloc(&f, max_len) != 0)
		return vela_err_set(err, VELA_ENOMEM, "embed: out of memory for %u tokens", f.T);
	for (uint32_t s = 0, t = 0; s < n; t += lens[s++])
		f.offs[s] = t;
	embed_team_run(&f.team, forward_member, &f);
	fwd_free(&f);
	return 0;
}
