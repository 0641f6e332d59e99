/* The text encoder's device choice (embed/gpu.c): the GPU path through
 * libvela_gpu.so and its fallback to the CPU, on the real all-MiniLM-L6-v2
 * (needs `make models`; skipped with a message otherwise).
 *
 * Registered twice (CMakeLists.txt): plainly, where no GPU library is found
 * on a CPU host (device auto means the CPU, gpu is refused), and as
 * test_embed_gpu_fakegpu with VELA_GPU_LIB naming tests/unit/gpu_fake.c, a
 * naive double-precision BERT behind the gpu_bert_* API, which takes the
 * GPU path end to end: weights uploaded under their safetensors names, the
 * packed batch, the golden vectors of sentence-transformers (cosine >=
 * 0.9999), and the fallback when the device fails (FAKE_GPU_FAIL): the
 * answers of the CPU path exactly, a warning logged once, the model on the
 * CPU from then on. With a real GPU library the golden test runs on the
 * device and the fault tests skip. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/gpulib.h"
#include "embed/embed.h"

#define GOLDEN_WHAT "GPU encoder tests"
#include "test_embed_golden.h"

/* Is there a GPU encoder here (a library with gpu_bert_* and a device)? */
static bool have_gpu_encoder(void)
{
	const vela_gpulib_t *gl = vela_gpulib_load();
	return gl && gl->bert_create && vela_gpulib_devices() > 0;
}

/* The fake library (tests/unit/gpu_fake.c), whose faults FAKE_GPU_FAIL sets. */
static bool fake_gpu(void)
{
	gpu_ctx_t *ctx;
	const char *name;
	return have_gpu_encoder() && vela_gpulib_ctx(&ctx, &name, NULL) == 0 &&
	       strncmp(name, "Fake GPU", 8) == 0;
}

/* Every test here has the same timeout: criterion 2.4's runner leaks 48
 * bytes (failing the ASan build) when tests with different timeouts run
 * side by side. */
#define TIMEOUT 600

/* Same CPU settings either way, so the CPU fallback must match the CPU
 * model bit for bit. */
static embed_model_t *open_on(embed_device_t dev)
{
	embed_model_opts_t o = {.threads = 1, .device = dev};
	embed_model_t *m = NULL;
	vela_err_t err = {0};
	cr_assert_eq(embed_model_open_opts(model_dir, &o, &m, &err), 0, "%s: %s",
		     embed_device_name(dev), err.msg);
	cr_assert_eq(embed_model_dim(m), DIM);
	return m;
}

static float *embed_n(embed_model_t *m, size_t n)
{
	float *v = malloc(n * DIM * sizeof(float));
	vela_err_t err = {0};
	cr_assert_eq(embed_text_batch(m, texts, lens, n, v, &err), 0, "%s", err.msg);
	return v;
}

/* Run embed_n with stderr sent to a file; returns what was logged (free it). */
static char *embed_logged(embed_model_t *m, size_t n, float **out)
{
	char path[] = "/tmp/vela_embed_gpu_XXXXXX";
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	fflush(stderr);
	int saved = dup(2);
	dup2(fd, 2);
	*out = embed_n(m, n);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	off_t len = lseek(fd, 0, SEEK_END);
	char *s = calloc((size_t)len + 1, 1);
	cr_assert_eq(pread(fd, s, (size_t)len, 0), len);
	close(fd);
	unlink(path);
	return s;
}

Test(embed_gpu, device_names)
{
	embed_device_t d;
	cr_assert_eq(embed_device_parse("auto", &d), 0);
	cr_assert_eq(d, EMBED_DEVICE_AUTO);
	cr_assert_eq(embed_device_parse("CPU", &d), 0);
	cr_assert_eq(d, EMBED_DEVICE_CPU);
	cr_assert_eq(embed_device_parse("gpu", &d), 0);
	cr_assert_eq(d, EMBED_DEVICE_GPU);
	cr_assert_eq(embed_device_parse("cuda", &d), VELA_EINVAL);
	cr_assert_eq(embed_device_parse(NULL, &d), VELA_EINVAL);
	cr_assert_str_eq(embed_device_name(EMBED_DEVICE_DEFAULT), "auto");
	cr_assert_str_eq(embed_device_name((embed_device_t)9), "?");
}

/* cpu is the CPU whatever is there; a device out of range is refused. */
Test(embed_gpu, cpu_pinned, .init = golden_load, .fini = golden_free, .timeout = TIMEOUT)
{
	embed_model_t *m = open_on(EMBED_DEVICE_CPU);
	cr_expect_str_eq(embed_model_device(m), "cpu");
	cr_expect_null(embed_model_gpu_name(m));
	cr_expect_eq(embed_model_gpu_bytes(m), 0);
	embed_model_close(m);
	embed_model_opts_t o = {.device = (embed_device_t)7};
	vela_err_t err = {0};
	cr_expect_eq(embed_model_open_opts(model_dir, &o, &m, &err), VELA_EINVAL);
}

/* Without a GPU encoder: auto runs on the CPU, gpu is refused. */
Test(embed_gpu, no_gpu, .init = golden_load, .fini = golden_free, .timeout = TIMEOUT)
{
	if (have_gpu_encoder())
		cr_skip_test("a GPU encoder is here");
	embed_model_t *m = open_on(EMBED_DEVICE_AUTO);
	cr_expect_str_eq(embed_model_device(m), "cpu");
	cr_expect_null(embed_model_gpu_name(m));
	embed_model_close(m);
	embed_model_opts_t o = {.device = EMBED_DEVICE_GPU};
	vela_err_t err = {0};
	m = NULL;
	cr_expect_eq(embed_model_open_opts(model_dir, &o, &m, &err), VELA_EUNSUPPORTED);
	cr_expect_null(m);
	cr_expect(strstr(err.msg, "device gpu") != NULL, "%s", err.msg);
}

/* The GPU path against sentence-transformers and against the CPU path. */
Test(embed_gpu, golden, .init = golden_load, .fini = golden_free, .timeout = TIMEOUT)
{
	if (!have_gpu_encoder())
		cr_skip_test("no GPU encoder (%s): see test_embed_gpu_fakegpu",
			     vela_gpulib_why()[0] ? vela_gpulib_why() : "no device");
	embed_model_t *g = open_on(EMBED_DEVICE_AUTO), *c = open_on(EMBED_DEVICE_CPU);
	cr_assert_str_eq(embed_model_device(g), "gpu");
	cr_assert_not_null(embed_model_gpu_name(g));
	cr_expect_gt(embed_model_gpu_bytes(g), 0);
	cr_log_info("GPU encoder on %s, %zu device bytes", embed_model_gpu_name(g),
		    embed_model_gpu_bytes(g));
	float *vg = embed_n(g, n_texts), *vc = embed_n(c, n_texts);
	double worst = 1, worst_cpu = 1;
	for (size_t i = 0; i < n_texts; i++) {
		double cg = cosine(vg + i * DIM, gold + i * DIM);
		double cc = cosine(vg + i * DIM, vc + i * DIM);
		worst = cg < worst ? cg : worst;
		worst_cpu = cc < worst_cpu ? cc : worst_cpu;
		cr_expect_geq(cg, COS_MIN, "sentence %zu '%.50s': cosine %.7f with the golden", i,
			      texts[i], cg);
		cr_expect_geq(cc, COS_MIN, "sentence %zu: cosine %.7f with the CPU path", i, cc);
	}
	cr_log_info("GPU path: worst cosine %.10f with sentence-transformers, %.10f with the CPU",
		    worst, worst_cpu);
	cr_expect_str_eq(embed_model_device(g), "gpu", "no fallback happened");
	free(vg);
	free(vc);
	embed_model_close(g);
	embed_model_close(c);
}

/* A device failing mid-run: the batch is answered on the CPU (exactly the
 * CPU path's vectors), one warning, and the model stays on the CPU. */
Test(embed_gpu, encode_failure_falls_back, .init = golden_load, .fini = golden_free,
     .timeout = TIMEOUT)
{
	if (!fake_gpu())
		cr_skip_test("needs the fake GPU library (test_embed_gpu_fakegpu)");
	const size_t n = 6;
	embed_model_t *g = open_on(EMBED_DEVICE_GPU), *c = open_on(EMBED_DEVICE_CPU);
	cr_assert_str_eq(embed_model_device(g), "gpu");
	float *v0 = embed_n(g, n), *vc = embed_n(c, n), *v1, *v2;
	for (size_t i = 0; i < n; i++)
		cr_expect_geq(cosine(v0 + i * DIM, vc + i * DIM), COS_MIN);
	setenv("FAKE_GPU_FAIL", "bert_encode", 1);
	char *log1 = embed_logged(g, n, &v1);
	cr_expect(strstr(log1, "GPU encoder failed") != NULL, "logged: '%s'", log1);
	cr_expect(strstr(log1, "fake device error in bert_encode") != NULL, "logged: '%s'", log1);
	cr_expect_eq(memcmp(v1, vc, n * DIM * sizeof(float)), 0, "fallback != CPU path");
	cr_expect_str_eq(embed_model_device(g), "cpu");
	cr_expect_null(embed_model_gpu_name(g));
	unsetenv("FAKE_GPU_FAIL"); /* the device would work again: the model stays on the CPU */
	char *log2 = embed_logged(g, n, &v2);
	cr_expect(strstr(log2, "GPU encoder failed") == NULL, "warned twice: '%s'", log2);
	cr_expect_eq(memcmp(v2, vc, n * DIM * sizeof(float)), 0);
	cr_expect_str_eq(embed_model_device(g), "cpu");
	free(log1), free(log2), free(v0), free(v1), free(v2), free(vc);
	embed_model_close(g);
	embed_model_close(c);
}

/* A device failing at open: auto stays on the CPU, gpu is refused. */
static void open_failure(const char *what)
{
	if (!fake_gpu())
		cr_skip_test("needs the fake GPU library (test_embed_gpu_fakegpu)");
	setenv("FAKE_GPU_FAIL", what, 1);
	embed_model_t *m = open_on(EMBED_DEVICE_AUTO), *c = open_on(EMBED_DEVICE_CPU);
	cr_expect_str_eq(embed_model_device(m), "cpu");
	float *v = embed_n(m, 3), *vc = embed_n(c, 3);
	cr_expect_eq(memcmp(v, vc, 3 * DIM * sizeof(float)), 0);
	free(v);
	free(vc);
	embed_model_close(m);
	embed_model_close(c);
	embed_model_opts_t o = {.device = EMBED_DEVICE_GPU};
	vela_err_t err = {0};
	m = NULL;
	cr_expect_eq(embed_model_open_opts(model_dir, &o, &m, &err), VELA_EUNSUPPORTED);
	cr_expect_null(m);
	cr_expect(strstr(err.msg, what) != NULL, "%s", err.msg);
	unsetenv("FAKE_GPU_FAIL");
}

Test(embed_gpu, create_failure, .init = golden_load, .fini = golden_free, .timeout = TIMEOUT)
{
	open_failure("bert_create");
}

Test(embed_gpu, upload_failure, .init = golden_load, .fini = golden_free, .timeout = TIMEOUT)
{
	open_failure("bert_set");
}
