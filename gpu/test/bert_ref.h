/*
 * bert_ref.h — an independent double-precision BERT forward pass for the
 * encoder tests (gpu_test_encoder.c). Plain C and libm only; shares no code
 * with gpu_encoder.cu or embed/. Post-LN BERT as HF BertModel computes it,
 * then mean pooling over the tokens and L2 normalisation
 * (sentence-transformers' all-MiniLM-L6-v2 head).
 */
#ifndef VELA_GPU_TEST_BERT_REF_H
#define VELA_GPU_TEST_BERT_REF_H

#include <stdint.h>

/* One layer; every matrix is row-major [out, in] as in the safetensors
 * file. All pointers are borrowed. */
typedef struct bert_ref_layer {
	const float *wq, *bq, *wk, *bk, *wv, *bv; /* [H, H], [H] */
	const float *wo, *bo;                     /* [H, H], [H] */
	const float *ln1_g, *ln1_b;               /* [H] */
	const float *wi, *bi;                     /* [I, H], [I] */
	const float *wo2, *bo2;                   /* [H, I], [H] */
	const float *ln2_g, *ln2_b;               /* [H] */
} bert_ref_layer_t;

typedef struct bert_ref {
	uint32_t hidden, layers, heads, inter;
	double eps;
	const float *word, *pos, *type; /* [vocab, H], [max_pos, H], [>= 1, H] */
	const float *emb_g, *emb_b;     /* [H] */
	const bert_ref_layer_t *layer;  /* [layers] */
} bert_ref_t;

/* The embedding of one sequence of `len` tokens (ids must be valid, len
 * within the position table) into out[hidden], L2-normalised.
 * Returns 0, or -1 when out of memory. */
int bert_ref_encode(const bert_ref_t *m, const uint32_t *ids, uint32_t len, double *out);

#endif
