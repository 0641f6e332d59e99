// libFuzzer target for embed/image.c: arbitrary bytes decoded as a PNG or
// JPEG must either fail with VELA_ECORRUPT, VELA_ELIMIT or
// VELA_EUNSUPPORTED and a message (never exit(), never a crash: libjpeg's
// and libpng's errors longjmp back), or give w x h RGB8 pixels inside the
// limits, which CLIP preprocessing then reads whole (ASan watches every
// byte).
// Build (from the repo root; not part of the CMake build):
//   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Iinclude -I. tests/fuzz/fuzz_image.c embed/image.c common/*.c -lpng16 -ljpeg -llmdb -lxxhash -lm -o build/fuzz/fuzz_image
// Run (seeds: the test images of tests/data/embed/vit-tiny):
//   mkdir -p build/fuzz/corpus_image && build/fuzz/fuzz_image -max_total_time=60 -max_len=16384 -rss_limit_mb=2048 build/fuzz/corpus_image tests/data/embed/vit-tiny
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "embed/vit_impl.h"

/* Small: a fuzzed header may ask for up to EMBED_IMAGE_PIXELS_MAX pixels,
 * which is allowed but slow; preprocess only modest images. */
#define PREPROCESS_PIXELS_MAX (1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *px = NULL;
	uint32_t w = 0, h = 0;
	vela_err_t err = {0};
	int rc = embed_image_decode(data, size, &px, &w, &h, &err);
	if (rc != 0) {
		if (rc != VELA_ECORRUPT && rc != VELA_ELIMIT && rc != VELA_EUNSUPPORTED &&
		    rc != VELA_ENOMEM)
			abort();
		if (px != NULL || err.msg[0] == '\0')
			abort();
		return 0;
	}
	if (px == NULL || w == 0 || h == 0 || w > EMBED_IMAGE_SIDE_MAX || h > EMBED_IMAGE_SIDE_MAX)
		abort();
	if ((uint64_t)w * h <= PREPROCESS_PIXELS_MAX) {
		const float mean[3] = EMBED_CLIP_MEAN, std[3] = EMBED_CLIP_STD;
		float chw[3 * 16 * 16];
		if (embed_image_preprocess(px, w, h, 16, mean, std, chw) != 0)
			abort();
		for (size_t i = 0; i < sizeof(chw) / sizeof(chw[0]); i++)
			if (!(chw[i] > -3.0f && chw[i] < 3.0f))
				abort();
	}
	free(px);
	return 0;
}
