/*
 * bert_ref.c — the double-precision reference forward pass (bert_ref.h).
 * Written for clarity, not speed: every step is the textbook formula.
 */
#include "bert_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* y[t, o] = sum_i x[t, i] w[o, i] + b[o] over n rows. */
static void linear(const double *x, uint32_t n, uint32_t in, const float *w, const float *b,
		   uint32_t out, double *y)
{
	for (uint32_t t = 0; t < n; t++)
		for (uint32_t o = 0; o < out; o++) {
			const float *wr = w + (size_t)o * in;
			const double *xr = x + (size_t)t * in;
			double s = b[o];
			for (uint32_t i = 0; i < in; i++)
				s += xr[i] * wr[i];
			y[(size_t)t * out + o] = s;
		}
}

/* x[t] = LN(x[t]) * g + b: biased variance, eps inside the root. */
static void layernorm(double *x, uint32_t n, uint32_t h, const float *g, const float *b,
		      double eps)
{
	for (uint32_t t = 0; t < n; t++) {
		double *r = x + (size_t)t * h, mean = 0, var = 0;
		for (uint32_t i = 0; i < h; i++)
			mean += r[i];
		mean /= h;
		for (uint32_t i = 0; i < h; i++)
			var += (r[i] - mean) * (r[i] - mean);
		var /= h;
		double inv = 1.0 / sqrt(var + eps);
		for (uint32_t i = 0; i < h; i++)
			r[i] = (r[i] - mean) * inv * g[i] + b[i];
	}
}

int bert_ref_encode(const bert_ref_t *m, const uint32_t *ids, uint32_t len, double *out)
{
	const uint32_t H = m->hidden, I = m->inter, nh = m->heads, D = H / nh;
	size_t nx = (size_t)len * H;
	double *x = malloc(nx * sizeof(double)), *q = malloc(nx * sizeof(double));
	double *k = malloc(nx * sizeof(double)), *v = malloc(nx * sizeof(double));
	double *c = malloc(nx * sizeof(double)), *a = malloc(nx * sizeof(double));
	double *f = malloc((size_t)len * I * sizeof(double)), *p = malloc(len * sizeof(double));
	int rc = -1;
	if (!x || !q || !k || !v || !c || !a || !f || !p)
		goto out;
	for (uint32_t t = 0; t < len; t++)
		for (uint32_t i = 0; i < H; i++)
			x[(size_t)t * H + i] = (double)m->word[(size_t)ids[t] * H + i] +
					       m->pos[(size_t)t * H + i] + m->type[i];
	layernorm(x, len, H, m->emb_g, m->emb_b, m->eps);
	for (uint32_t l = 0; l < m->layers; l++) {
		const bert_ref_layer_t *L = &m->layer[l];
		linear(x, len, H, L->wq, L->bq, H, q);
		linear(x, len, H, L->wk, L->bk, H, k);
		linear(x, len, H, L->wv, L->bv, H, v);
		for (uint32_t h = 0; h < nh; h++)
			for (uint32_t i = 0; i < len; i++) {
				double mx = -INFINITY, sum = 0;
				for (uint32_t j = 0; j < len; j++) {
					double s = 0;
					for (uint32_t d = 0; d < D; d++)
						s += q[(size_t)i * H + h * D + d] * k[(size_t)j * H + h * D + d];
					p[j] = s / sqrt((double)D);
					mx = p[j] > mx ? p[j] : mx;
				}
				for (uint32_t j = 0; j < len; j++) {
					p[j] = exp(p[j] - mx);
					sum += p[j];
				}
				for (uint32_t d = 0; d < D; d++) {
					double s = 0;
					for (uint32_t j = 0; j < len; j++)
						s += p[j] * v[(size_t)j * H + h * D + d];
					c[(size_t)i * H + h * D + d] = s / sum;
				}
			}
		linear(c, len, H, L->wo, L->bo, H, a);
		for (size_t i = 0; i < nx; i++)
			a[i] += x[i];
		layernorm(a, len, H, L->ln1_g, L->ln1_b, m->eps);
		linear(a, len, H, L->wi, L->bi, I, f);
		for (size_t i = 0; i < (size_t)len * I; i++)
			f[i] = 0.5 * f[i] * (1.0 + erf(f[i] / sqrt(2.0)));
		linear(f, len, I, L->wo2, L->bo2, H, x);
		for (size_t i = 0; i < nx; i++)
			x[i] += a[i];
		layernorm(x, len, H, L->ln2_g, L->ln2_b, m->eps);
	}
	double nrm = 0;
	for (uint32_t i = 0; i < H; i++) {
		double s = 0;
		for (uint32_t t = 0; t < len; t++)
			s += x[(size_t)t * H + i];
		out[i] = s / len;
		nrm += out[i] * out[i];
	}
	nrm = sqrt(nrm);
	nrm = nrm > 1e-12 ? nrm : 1e-12;
	for (uint32_t i = 0; i < H; i++)
		out[i] /= nrm;
	rc = 0;
out:
	free(x);
	free(q);
	free(k);
	free(v);
	free(c);
	free(a);
	free(f);
	free(p);
	return rc;
}
