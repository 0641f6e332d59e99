/* The dlopen loader of libvela_gpu.so and the process's GPU context
 * (gpulib.h; DESIGN.md §11). */
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "common/gpulib.h"

static struct {
	pthread_mutex_t mu;
	int state;   /* 0 not tried, 1 loaded, -1 unavailable */
	int devices; /* -1 until asked */
	char why[160];
	vela_gpulib_t t;
	gpu_ctx_t *ctx;
	char name[128];
} gl = {.mu = PTHREAD_MUTEX_INITIALIZER, .devices = -1};

static void *gl_open(void)
{
	const char *env = getenv("VELA_GPU_LIB");
	if (env && *env)
		return dlopen(env, RTLD_NOW | RTLD_LOCAL);
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 32);
	if (n > 0) {
		exe[n] = 0;
		char *slash = strrchr(exe, '/');
		if (slash) {
			strcpy(slash + 1, "libvela_gpu.so");
			void *h = dlopen(exe, RTLD_NOW | RTLD_LOCAL);
			if (h)
				return h;
		}
	}
	return dlopen("libvela_gpu.so", RTLD_NOW | RTLD_LOCAL);
}

#define GL_SYM(h, f) ((*(void **)&gl.t.f = dlsym(h, "gpu_" #f)) != NULL)

static int gl_load_locked(void)
{
	if (gl.state)
		return gl.state > 0 ? 0 : -1;
	void *h = gl_open();
	if (!h) {
		snprintf(gl.why, sizeof(gl.why), "%s", dlerror());
		gl.state = -1;
		vela_log(VELA_LOG_INFO, "gpu: no GPU library (%s); CPU backend", gl.why);
		return -1;
	}
	if (!(GL_SYM(h, device_count) && GL_SYM(h, ctx_open) && GL_SYM(h, ctx_name) &&
	      GL_SYM(h, matrix_create) && GL_SYM(h, matrix_append) && GL_SYM(h, matrix_free) &&
	      GL_SYM(h, matrix_bytes) && GL_SYM(h, knn) && GL_SYM(h, project) &&
	      GL_SYM(h, kmeans_step))) {
		snprintf(gl.why, sizeof(gl.why), "GPU library lacks %s", dlerror());
		memset(&gl.t, 0, sizeof(gl.t));
		gl.state = -1;
		vela_log(VELA_LOG_WARN, "gpu: %s; CPU backend", gl.why);
		return -1;
	}
	/* gpu_gram came later too: without it the CPU computes Gram matrices. */
	if (!GL_SYM(h, gram))
		vela_log(VELA_LOG_INFO, "gpu: the GPU library has no gpu_gram; LeanVec "
			 "training runs on the CPU");
	/* So did the batched partition scan: without it part_search scans on the CPU. */
	if (!(GL_SYM(h, parts_create) && GL_SYM(h, parts_scan) && GL_SYM(h, parts_bytes) &&
	      GL_SYM(h, parts_free))) {
		gl.t.parts_create = NULL;
		gl.t.parts_scan = NULL;
		gl.t.parts_bytes = NULL;
		gl.t.parts_free = NULL;
		vela_log(VELA_LOG_INFO, "gpu: the GPU library has no gpu_parts_*; partition "
			 "scans run on the CPU");
	}
	/* The encoder came later: a library without it still serves kNN. */
	if (!(GL_SYM(h, bert_create) && GL_SYM(h, bert_set_tensor) && GL_SYM(h, bert_encode) &&
	      GL_SYM(h, bert_bytes) && GL_SYM(h, bert_free))) {
		gl.t.bert_create = NULL;
		gl.t.bert_set_tensor = NULL;
		gl.t.bert_encode = NULL;
		gl.t.bert_bytes = NULL;
		gl.t.bert_free = NULL;
		vela_log(VELA_LOG_INFO, "gpu: the GPU library has no encoder (gpu_bert_*); "
			 "text models run on the CPU");
	}
	gl.state = 1;
	return 0;
}

const vela_gpulib_t *vela_gpulib_load(void)
{
	pthread_mutex_lock(&gl.mu);
	int rc = gl_load_locked();
	pthread_mutex_unlock(&gl.mu);
	return rc == 0 ? &gl.t : NULL;
}

const char *vela_gpulib_why(void)
{
	return gl.why;
}

static int gl_devices_locked(void)
{
	if (gl.devices < 0) {
		int n = gl_load_locked() == 0 ? gl.t.device_count() : 0;
		gl.devices = n > 0 ? n : 0;
	}
	return gl.devices;
}

int vela_gpulib_devices(void)
{
	pthread_mutex_lock(&gl.mu);
	int n = gl_devices_locked();
	pthread_mutex_unlock(&gl.mu);
	return n;
}

int vela_gpulib_ctx(gpu_ctx_t **ctx, const char **name, vela_err_t *err)
{
	int rc = 0;
	pthread_mutex_lock(&gl.mu);
	if (gl.ctx == NULL) {
		if (gl_devices_locked() == 0) {
			rc = vela_err_set(err, VELA_EUNSUPPORTED, "no CUDA device");
		} else if ((rc = gl.t.ctx_open(0, &gl.ctx, err)) != 0) {
			gl.ctx = NULL;
		} else {
			snprintf(gl.name, sizeof(gl.name), "%s", gl.t.ctx_name(gl.ctx));
		}
	}
	*ctx = gl.ctx;
	if (name)
		*name = gl.name;
	pthread_mutex_unlock(&gl.mu);
	return rc;
}
