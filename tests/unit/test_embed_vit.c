/* Unit tests for the CLIP vision encoder (embed/image.c, embed/vit.c) on the
 * tiny random model of tests/data/embed/vit-tiny/ (scripts/make_vit_fixture.py
 * wrote it with the expected vectors, computed in float64 numpy from the
 * decoded pixels: resize, crop, normalise and the whole ViT, independently of
 * this C code): every kernel table the CPU has, batches against one-by-one,
 * chunking and threads, the RGB entry point, PNG colour types, corrupt,
 * truncated and oversized inputs, and the loader's errors. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "embed/embed.h"
#include "embed/vit_impl.h"

#define COS_MIN 0.99999
#define DIFF_MAX 1e-4

typedef struct {
	char file[64];
	uint8_t *data;
	size_t len;
	uint32_t w, h;
	float vec[64];
} case_t;

static char dir[4096];
static case_t cases[32];
static size_t n_cases;
static uint32_t dim;

static void source_path(char *out, size_t cap, const char *rel)
{
	snprintf(out, cap, "%.*s/../../%s", (int)(strrchr(__FILE__, '/') - __FILE__), __FILE__, rel);
}

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f, "cannot open %s", path);
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	uint8_t *b = malloc((size_t)n + 1);
	cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return b;
}

static uint8_t *fixture(const char *name, size_t *len)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return slurp(path, len);
}

static void setup(void)
{
	char path[4200];
	source_path(dir, sizeof(dir), "tests/data/embed/vit-tiny");
	snprintf(path, sizeof(path), "%s/expected.json", dir);
	json_error_t je;
	json_t *root = json_load_file(path, 0, &je);
	cr_assert_not_null(root, "%s: %s", path, je.text);
	dim = (uint32_t)json_integer_value(json_object_get(root, "dim"));
	cr_assert(dim > 0 && dim <= 64);
	json_t *cs = json_object_get(root, "cases");
	n_cases = json_array_size(cs);
	cr_assert(n_cases >= 8 && n_cases <= 32);
	for (size_t i = 0; i < n_cases; i++) {
		json_t *c = json_array_get(cs, i);
		case_t *k = &cases[i];
		snprintf(k->file, sizeof(k->file), "%s",
			 json_string_value(json_object_get(c, "file")));
		k->w = (uint32_t)json_integer_value(json_object_get(c, "width"));
		k->h = (uint32_t)json_integer_value(json_object_get(c, "height"));
		json_t *v = json_object_get(c, "vector");
		cr_assert_eq(json_array_size(v), dim);
		for (uint32_t d = 0; d < dim; d++)
			k->vec[d] = (float)json_number_value(json_array_get(v, d));
		k->data = fixture(k->file, &k->len);
	}
	json_decref(root);
}

static void teardown(void)
{
	for (size_t i = 0; i < n_cases; i++)
		free(cases[i].data);
	n_cases = 0;
}

TestSuite(embed_vit, .init = setup, .fini = teardown);

static embed_image_model_t *open_model(uint32_t batch, uint32_t threads, embed_kernel_t k)
{
	embed_image_opts_t o = {.batch_images = batch, .threads = threads, .kernel = k};
	embed_image_model_t *m = NULL;
	vela_err_t err = {0};
	int rc = embed_image_model_open(dir, &o, &m, &err);
	cr_assert_eq(rc, 0, "open: %s", err.msg);
	cr_assert_eq(embed_image_model_dim(m), dim);
	cr_assert_eq(embed_image_model_image_size(m), 32);
	return m;
}

/* Embed every case in one call. */
static void embed_all(const embed_image_model_t *m, float *out)
{
	const void *bufs[32];
	size_t lens[32];
	for (size_t i = 0; i < n_cases; i++)
		bufs[i] = cases[i].data, lens[i] = cases[i].len;
	vela_err_t err = {0};
	int rc = embed_image_batch(m, bufs, lens, n_cases, out, &err);
	cr_assert_eq(rc, 0, "batch: %s", err.msg);
}

/* Worst cosine and difference of `got` against the expected vectors. */
static void check_expected(const float *got, const char *what)
{
	double worst_cos = 1, worst_diff = 0;
	for (size_t i = 0; i < n_cases; i++) {
		double dot = 0, na = 0, nb = 0, diff = 0;
		for (uint32_t d = 0; d < dim; d++) {
			double a = got[i * dim + d], b = cases[i].vec[d];
			dot += a * b, na += a * a, nb += b * b;
			diff = fabs(a - b) > diff ? fabs(a - b) : diff;
		}
		double cs = dot / sqrt(na * nb);
		cr_expect(cs >= COS_MIN, "%s %s: cosine %.9f", what, cases[i].file, cs);
		cr_expect(diff <= DIFF_MAX, "%s %s: max |diff| %.3g", what, cases[i].file, diff);
		cr_expect(fabs(sqrt(na) - 1) < 1e-5, "%s %s: norm %.9f", what, cases[i].file,
			  sqrt(na));
		worst_cos = cs < worst_cos ? cs : worst_cos;
		worst_diff = diff > worst_diff ? diff : worst_diff;
	}
	fprintf(stderr, "[vit] %-8s %zu images: worst cosine %.9f, worst max|diff| %.3g\n", what,
		n_cases, worst_cos, worst_diff);
}

Test(embed_vit, matches_numpy_reference_every_kernel)
{
	const embed_kernel_t ks[] = {EMBED_KERNEL_BLAS, EMBED_KERNEL_AVX2, EMBED_KERNEL_AVX512};
	float out[32 * 64];
	for (int i = 0; i < 3; i++) {
		if (embed_kernels_get(ks[i]) == NULL)
			continue;
		embed_image_model_t *m = open_model(0, 0, ks[i]);
		embed_all(m, out);
		check_expected(out, embed_image_model_kernel_name(m));
		embed_image_model_close(m);
	}
}

Test(embed_vit, batch_equals_one_at_a_time)
{
	embed_image_model_t *m = open_model(0, 0, EMBED_KERNEL_AUTO);
	float all[32 * 64], one[64];
	embed_all(m, all);
	for (size_t i = 0; i < n_cases; i++) {
		const void *b = cases[i].data;
		vela_err_t err;
		cr_assert_eq(embed_image_batch(m, &b, &cases[i].len, 1, one, &err), 0, "%s",
			     err.msg);
		for (uint32_t d = 0; d < dim; d++)
			cr_assert(fabsf(one[d] - all[i * dim + d]) <= 1e-6f, "%s[%u]: %g vs %g",
				  cases[i].file, d, one[d], all[i * dim + d]);
	}
	embed_image_model_close(m);
}

Test(embed_vit, chunks_and_threads_change_nothing)
{
	embed_image_model_t *m = open_model(0, 0, EMBED_KERNEL_AUTO);
	float ref[32 * 64], got[32 * 64];
	embed_all(m, ref);
	embed_image_model_close(m);
	const uint32_t conf[][2] = {{3, 1}, {1, 2}, {4, 3}, {16, 4}, {5, 7}};
	for (size_t c = 0; c < sizeof(conf) / sizeof(conf[0]); c++) {
		m = open_model(conf[c][0], conf[c][1], EMBED_KERNEL_AUTO);
		embed_all(m, got);
		for (size_t i = 0; i < n_cases * dim; i++)
			cr_assert(fabsf(got[i] - ref[i]) <= 1e-6f, "batch %u threads %u: [%zu] %g vs "
				  "%g", conf[c][0], conf[c][1], i, got[i], ref[i]);
		embed_image_model_close(m);
	}
}

Test(embed_vit, rgb_entry_point_equals_encoded)
{
	embed_image_model_t *m = open_model(0, 2, EMBED_KERNEL_AUTO);
	float enc[32 * 64], raw[32 * 64];
	embed_all(m, enc);
	uint8_t *px[32];
	uint32_t w[32], h[32];
	for (size_t i = 0; i < n_cases; i++) {
		vela_err_t err;
		cr_assert_eq(embed_image_decode(cases[i].data, cases[i].len, &px[i], &w[i], &h[i],
						&err), 0, "%s: %s", cases[i].file, err.msg);
		cr_assert_eq(w[i], cases[i].w, "%s", cases[i].file);
		cr_assert_eq(h[i], cases[i].h, "%s", cases[i].file);
	}
	vela_err_t err;
	cr_assert_eq(embed_image_batch_rgb(m, (const uint8_t *const *)px, w, h, n_cases, raw, &err),
		     0, "%s", err.msg);
	cr_assert_eq(memcmp(enc, raw, n_cases * dim * sizeof(float)), 0);
	for (size_t i = 0; i < n_cases; i++)
		free(px[i]);
	embed_image_model_close(m);
}

/* Decode a fixture; return its pixels (the caller frees them). */
static uint8_t *decode_fixture(const char *name, uint32_t *w, uint32_t *h)
{
	size_t len;
	uint8_t *b = fixture(name, &len), *px = NULL;
	vela_err_t err;
	int rc = embed_image_decode(b, len, &px, w, h, &err);
	free(b);
	cr_assert_eq(rc, 0, "%s: %s", name, err.msg);
	return px;
}

Test(embed_vit, gray_and_alpha_inputs_become_rgb)
{
	uint32_t w, h;
	const char *gray[] = {"img_gray.png", "img_gray4.png", "img_gray.jpg"};
	for (int f = 0; f < 3; f++) {
		uint8_t *px = decode_fixture(gray[f], &w, &h);
		int varied = 0;
		for (size_t i = 0; i < (size_t)w * h; i++) {
			cr_assert(px[3 * i] == px[3 * i + 1] && px[3 * i] == px[3 * i + 2],
				  "%s pixel %zu is not gray", gray[f], i);
			varied |= px[3 * i] != px[0];
		}
		cr_assert(varied, "%s is flat", gray[f]);
		free(px);
	}
	/* 4-bit gray: bit replication, so every value is a multiple of 17. */
	uint8_t *px = decode_fixture("img_gray4.png", &w, &h);
	for (size_t i = 0; i < (size_t)w * h * 3; i++)
		cr_assert_eq(px[i] % 17, 0);
	free(px);
	/* RGBA: 3 bytes a pixel out (ASan catches a 4-byte layout). */
	px = decode_fixture("img_rgba.png", &w, &h);
	cr_assert(w == 40 && h == 40);
	free(px);
}

static int decode_rc(const void *b, size_t len, vela_err_t *err)
{
	uint8_t *px = (uint8_t *)1;
	uint32_t w = 1, h = 1;
	int rc = embed_image_decode(b, len, &px, &w, &h, err);
	if (rc == 0)
		free(px);
	else
		cr_assert(px == NULL && w == 0 && h == 0);
	return rc;
}

Test(embed_vit, truncated_and_corrupt_inputs_are_ecorrupt)
{
	const char *files[] = {"img_rgb.png", "img_palette.png", "img_rgb16.png", "img_color.jpg",
			       "img_gray.jpg", "img_big.jpg"};
	for (int f = 0; f < 6; f++) {
		size_t len;
		uint8_t *b = fixture(files[f], &len);
		size_t cuts[] = {3, 8, 20, 33, 60, len / 3, len / 2, len - 12, len - 2, len - 1};
		for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
			vela_err_t err = {0};
			int rc = decode_rc(b, cuts[c], &err);
			cr_assert_eq(rc, VELA_ECORRUPT, "%s cut to %zu bytes: rc %d (%s)", files[f],
				     cuts[c], rc, err.msg);
			cr_assert(strlen(err.msg) > 0);
		}
		free(b);
	}
	/* A flipped byte in the PNG's pixel data: IDAT's CRC fails. */
	size_t len;
	uint8_t *b = fixture("img_rgb.png", &len);
	b[len / 2] ^= 0x55;
	vela_err_t err;
	cr_assert_eq(decode_rc(b, len, &err), VELA_ECORRUPT);
	cr_assert(strstr(err.msg, "PNG") != NULL, "%s", err.msg);
	free(b);
	/* A JPEG whose frame header says zero components. */
	b = fixture("img_color.jpg", &len);
	for (size_t i = 0; i + 9 < len; i++)
		if (b[i] == 0xff && b[i + 1] == 0xc0) {
			b[i + 9] = 0;
			break;
		}
	cr_assert_eq(decode_rc(b, len, &err), VELA_ECORRUPT);
	cr_assert(strstr(err.msg, "JPEG") != NULL, "%s", err.msg);
	free(b);
	/* Neither format; formats we do not read. */
	cr_assert_eq(decode_rc("hello world", 11, &err), VELA_ECORRUPT);
	cr_assert_eq(decode_rc("", 0, &err), VELA_ECORRUPT);
	cr_assert_eq(decode_rc("GIF89a\1\0\1\0", 10, &err), VELA_EUNSUPPORTED);
	/* Through the batch call: the error names the image. */
	embed_image_model_t *m = open_model(0, 2, EMBED_KERNEL_AUTO);
	const void *bufs[3] = {cases[0].data, cases[1].data, cases[2].data};
	size_t lens[3] = {cases[0].len, cases[1].len / 2, cases[2].len};
	float out[3 * 64];
	cr_assert_eq(embed_image_batch(m, bufs, lens, 3, out, &err), VELA_ECORRUPT);
	cr_assert(strstr(err.msg, "image 1") != NULL, "%s", err.msg);
	embed_image_model_close(m);
}

/* Random byte damage: any outcome but a crash (ASan) or an unknown code. */
Test(embed_vit, mutated_inputs_never_crash)
{
	uint64_t s = 0x243f6a8885a308d3ull;
	for (size_t i = 0; i < n_cases; i++) {
		uint8_t *b = malloc(cases[i].len);
		for (int round = 0; round < 60; round++) {
			memcpy(b, cases[i].data, cases[i].len);
			for (int k = 0; k < 1 + round % 4; k++) {
				s = s * 6364136223846793005ull + 1442695040888963407ull;
				size_t at = (size_t)(s >> 33) % cases[i].len;
				b[at] = (uint8_t)(s >> 20);
			}
			vela_err_t err;
			int rc = decode_rc(b, cases[i].len, &err);
			cr_assert(rc == 0 || rc == VELA_ECORRUPT || rc == VELA_ELIMIT ||
				  rc == VELA_EUNSUPPORTED, "%s round %d: rc %d", cases[i].file, round,
				  rc);
		}
		free(b);
	}
}

Test(embed_vit, oversized_images_are_elimit)
{
	const char *files[] = {"huge_side.png", "huge_pixels.jpg"};
	for (int f = 0; f < 2; f++) {
		size_t len;
		uint8_t *b = fixture(files[f], &len);
		vela_err_t err;
		cr_assert_eq(decode_rc(b, len, &err), VELA_ELIMIT, "%s: %s", files[f], err.msg);
		free(b);
	}
	vela_err_t err;
	cr_assert_eq(decode_rc(cases[0].data, (size_t)EMBED_IMAGE_BYTES_MAX + 1, &err),
		     VELA_ELIMIT);
	embed_image_model_t *m = open_model(0, 0, EMBED_KERNEL_AUTO);
	uint8_t px[12] = {0};
	const uint8_t *rgb[1] = {px};
	uint32_t w = EMBED_IMAGE_SIDE_MAX + 1, h = 1, z = 0;
	float out[64];
	cr_assert_eq(embed_image_batch_rgb(m, rgb, &w, &h, 1, out, &err), VELA_ELIMIT);
	w = 1;
	cr_assert_eq(embed_image_batch_rgb(m, rgb, &w, &z, 1, out, &err), VELA_EINVAL);
	cr_assert_eq(embed_image_batch(m, NULL, NULL, 0, out, &err), 0);
	embed_image_model_close(m);
}

/* A tiny image is enlarged; a one-pixel image becomes a flat one. */
Test(embed_vit, preprocess_edge_cases)
{
	const float mean[3] = EMBED_CLIP_MEAN, std[3] = EMBED_CLIP_STD;
	uint8_t px[3] = {10, 128, 250};
	float chw[3 * 32 * 32];
	cr_assert_eq(embed_image_preprocess(px, 1, 1, 32, mean, std, chw), 0);
	for (int c = 0; c < 3; c++)
		for (int i = 0; i < 32 * 32; i++)
			cr_assert(fabsf(chw[c * 1024 + i] - (px[c] / 255.0f - mean[c]) / std[c]) < 1e-5f);
	/* A very long, thin image: the short side is 1 pixel. */
	uint8_t *line = malloc(3 * 2000);
	for (int i = 0; i < 3 * 2000; i++)
		line[i] = (uint8_t)(i * 7);
	cr_assert_eq(embed_image_preprocess(line, 2000, 1, 32, mean, std, chw), 0);
	cr_assert_eq(embed_image_preprocess(line, 1, 2000, 32, mean, std, chw), 0);
	free(line);
}

/* ------------------------------------------------------------ loader errors */

/* Write `dst_dir` with the fixture's config.json (or `config`) and its
 * model.safetensors minus the tensor `drop` (NULL: all). */
static void write_model(const char *dst_dir, const char *drop, const char *config)
{
	char path[4400];
	size_t len;
	mkdir(dst_dir, 0700);
	uint8_t *cfg = config ? NULL : fixture("config.json", &len);
	snprintf(path, sizeof(path), "%s/config.json", dst_dir);
	FILE *f = fopen(path, "wb");
	cr_assert_not_null(f);
	fwrite(config ? (const void *)config : cfg, 1, config ? strlen(config) : len, f);
	fclose(f);
	free(cfg);
	snprintf(path, sizeof(path), "%s/model.safetensors", dir);
	embed_st_t *st;
	vela_err_t err;
	cr_assert_eq(embed_st_open(path, &st, &err), 0, "%s", err.msg);
	json_t *hdr = json_object();
	uint64_t off = 0;
	for (size_t i = 0; i < embed_st_count(st); i++) {
		const embed_st_tensor_t *t = embed_st_at(st, i);
		if (drop && strcmp(t->name, drop) == 0)
			continue;
		json_t *shape = json_array();
		for (uint32_t d = 0; d < t->ndim; d++)
			json_array_append_new(shape, json_integer((json_int_t)t->shape[d]));
		json_object_set_new(hdr, t->name,
				    json_pack("{s:s, s:o, s:[I, I]}", "dtype",
					      embed_dtype_name(t->dtype), "shape", shape,
					      "data_offsets", (json_int_t)off,
					      (json_int_t)(off + t->nbytes)));
		off += t->nbytes;
	}
	char *h = json_dumps(hdr, JSON_COMPACT);
	uint64_t hl = strlen(h);
	snprintf(path, sizeof(path), "%s/model.safetensors", dst_dir);
	f = fopen(path, "wb");
	cr_assert_not_null(f);
	uint8_t le[8];
	for (int i = 0; i < 8; i++)
		le[i] = (uint8_t)(hl >> (8 * i));
	fwrite(le, 1, 8, f);
	fwrite(h, 1, hl, f);
	for (size_t i = 0; i < embed_st_count(st); i++) {
		const embed_st_tensor_t *t = embed_st_at(st, i);
		if (!drop || strcmp(t->name, drop) != 0)
			fwrite(t->data, 1, t->nbytes, f);
	}
	fclose(f);
	free(h);
	json_decref(hdr);
	embed_st_close(st);
}

static void remove_model(const char *d)
{
	char path[4400];
	snprintf(path, sizeof(path), "%s/config.json", d);
	unlink(path);
	snprintf(path, sizeof(path), "%s/model.safetensors", d);
	unlink(path);
	rmdir(d);
}

static int open_rc(const char *d, vela_err_t *err)
{
	embed_image_model_t *m = NULL;
	int rc = embed_image_model_open(d, NULL, &m, err);
	embed_image_model_close(m);
	return rc;
}

Test(embed_vit, loader_errors)
{
	char tmp[] = "/tmp/vela_vit_XXXXXX";
	cr_assert_not_null(mkdtemp(tmp));
	char d[64];
	snprintf(d, sizeof(d), "%s/m", tmp);
	vela_err_t err;
	/* The rewritten file loads (the writer is sound)... */
	write_model(d, NULL, NULL);
	cr_assert_eq(open_rc(d, &err), 0, "%s", err.msg);
	remove_model(d);
	/* ...and each missing tensor is named. */
	const char *drops[] = {"vision_model.post_layernorm.bias", "visual_projection.weight",
			       "vision_model.encoder.layers.1.mlp.fc2.bias",
			       "vision_model.embeddings.patch_embedding.weight"};
	for (int i = 0; i < 4; i++) {
		write_model(d, drops[i], NULL);
		cr_assert_eq(open_rc(d, &err), VELA_ECORRUPT, "without %s", drops[i]);
		cr_assert(strstr(err.msg, drops[i]) != NULL, "%s", err.msg);
		remove_model(d);
	}
	/* Config errors: wrong sizes (shape check), activation, geometry. */
	const char *bad[] = {
		"{\"vision_config\": {\"hidden_size\": 48, \"intermediate_size\": 96, "
		"\"num_attention_heads\": 4, \"num_hidden_layers\": 2, \"image_size\": 32, "
		"\"patch_size\": 8, \"hidden_act\": \"relu\"}, \"projection_dim\": 16}",
		"{\"vision_config\": {\"hidden_size\": 48, \"intermediate_size\": 96, "
		"\"num_attention_heads\": 4, \"num_hidden_layers\": 2, \"image_size\": 30, "
		"\"patch_size\": 8}, \"projection_dim\": 16}",
		"{\"vision_config\": {\"hidden_size\": 48, \"intermediate_size\": 96, "
		"\"num_attention_heads\": 4, \"num_hidden_layers\": 2, \"image_size\": 32, "
		"\"patch_size\": 8}, \"projection_dim\": 24}",
		"{\"vision_config\": {\"hidden_size\": 48, \"intermediate_size\": 96, "
		"\"num_attention_heads\": 4, \"num_hidden_layers\": 2, \"image_size\": 32, "
		"\"patch_size\": 8}}",
		"{\"model_type\": \"bert\"}",
		"[1, 2]",
	};
	const int want[] = {VELA_EUNSUPPORTED, VELA_EUNSUPPORTED, VELA_ECORRUPT, VELA_ECORRUPT,
			    VELA_EUNSUPPORTED, VELA_ECORRUPT};
	for (int i = 0; i < 6; i++) {
		write_model(d, NULL, bad[i]);
		int rc = open_rc(d, &err);
		cr_assert_eq(rc, want[i], "config %d: rc %d (%s)", i, rc, err.msg);
		remove_model(d);
	}
	/* A CLIPVisionConfig at the top level loads too. */
	write_model(d, NULL, "{\"model_type\": \"clip_vision_model\", \"hidden_size\": 48, "
		    "\"intermediate_size\": 96, \"num_attention_heads\": 4, "
		    "\"num_hidden_layers\": 2, \"image_size\": 32, \"patch_size\": 8, "
		    "\"projection_dim\": 16, \"layer_norm_eps\": 1e-5}");
	cr_assert_eq(open_rc(d, &err), 0, "%s", err.msg);
	remove_model(d);
	cr_assert_eq(open_rc("/nonexistent/vela", &err), VELA_EIO);
	embed_image_opts_t o = {.threads = EMBED_THREADS_MAX + 1};
	embed_image_model_t *m = NULL;
	cr_assert_eq(embed_image_model_open(dir, &o, &m, &err), VELA_EINVAL);
	cr_assert_null(m);
	rmdir(tmp);
}
