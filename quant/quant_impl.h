/* Private to quant/: the per-instruction-set kernel tables and the
 * software conversions the SIMD variants fall back to for short tails.
 * Not a public header; other modules include quant/quant.h only. */
#ifndef VELA_QUANT_IMPL_H
#define VELA_QUANT_IMPL_H

#include "quant/quant.h"

extern const quant_kernels_t quant_kernels_scalar;
extern const quant_kernels_t quant_kernels_avx2;
extern const quant_kernels_t quant_kernels_avx512;
extern const quant_lvq_kernels_t quant_lvq_kernels_scalar;
extern const quant_lvq_kernels_t quant_lvq_kernels_avx2;
extern const quant_lvq_kernels_t quant_lvq_kernels_avx512;

void quant_scalar_f32_to_f16(const float *src, uint16_t *dst, size_t n);
void quant_scalar_f16_to_f32(const uint16_t *src, float *dst, size_t n);

#endif
