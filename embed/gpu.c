/* The text encoder on the GPU: gpu/'s gpu_bert_* (cuBLAS F16 GEMMs over
 * packed sequences, gpu/gpu.h "encoder") reached through the shared dlopen
 * loader (common/gpulib.h), with this module's CPU forward pass as the
 * fallback (docs/embeddings.md "Device").
 *
 * A batch goes to the device with the packing the CPU uses (Prepacking,
 * arXiv 2404.09529 §3): token ids concatenated, n + 1 offsets, positions
 * restarting per sequence; gpu_bert_encode chunks it by its own token
 * budget. The first failure of a call is logged once and moves the model to
 * the CPU for good: a device that failed once (out of memory, an Xid, a
 * lost context) is not trusted again, and no request is lost because the
 * failing batch runs on the CPU at once. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/common.h"
#include "common/gpulib.h"
#include "embed/embed_impl.h"

static const char *const device_names[] = {"auto", "cpu", "gpu"};

int embed_device_parse(const char *s, embed_device_t *out)
{
	for (int i = 0; s && i < 3; i++)
		if (strcasecmp(s, device_names[i]) == 0) {
			*out = (embed_device_t)i;
			return 0;
		}
	return VELA_EINVAL;
}

const char *embed_device_name(embed_device_t d)
{
	return (unsigned)d < 3 ? device_names[d] : "?";
}

/* Every float tensor of the file, under its own name; the encoder answers
 * VELA_ENOTFOUND for those it does not use (the pooler, ...). */
static int upload(const vela_gpulib_t *gl, gpu_bert_t *b, embed_st_t *st, vela_err_t *err)
{
	float *buf = NULL;
	size_t cap = 0;
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < embed_st_count(st); i++) {
		const embed_st_tensor_t *t = embed_st_at(st, i);
		if (t->dtype != EMBED_DT_F32 && t->dtype != EMBED_DT_F16 &&
		    t->dtype != EMBED_DT_BF16)
			continue; /* e.g. an I64 position_ids buffer */
		if (t->numel > cap) {
			free(buf);
			cap = t->numel;
			buf = malloc(vela_mul_size(cap, sizeof(float)));
			if (buf == NULL)
				return vela_err_set(err, VELA_ENOMEM, "embed: out of memory");
		}
		rc = embed_st_to_f32(t, buf, t->numel, err);
		if (rc == 0)
			rc = gl->bert_set_tensor(b, t->name, buf, t->numel, err);
		if (rc == VELA_ENOTFOUND)
			rc = 0;
	}
	free(buf);
	return rc;
}

int embed_gpu_attach(embed_model_t *m, embed_st_t *st, embed_device_t device, vela_err_t *err)
{
	if (device == EMBED_DEVICE_CPU)
		return 0;
	if ((unsigned)device > EMBED_DEVICE_GPU)
		return vela_err_set(err, VELA_EINVAL, "embed: device %d unknown", (int)device);
	vela_err_t e = {0};
	int rc = 0;
	const vela_gpulib_t *gl = vela_gpulib_load();
	gpu_ctx_t *ctx = NULL;
	gpu_bert_t *b = NULL;
	if (gl == NULL)
		rc = vela_err_set(&e, VELA_EUNSUPPORTED, "no GPU library (%s)", vela_gpulib_why());
	else if (gl->bert_create == NULL)
		rc = vela_err_set(&e, VELA_EUNSUPPORTED, "the GPU library has no encoder");
	else
		rc = vela_gpulib_ctx(&ctx, &m->gpu_name, &e);
	if (rc == 0) {
		const embed_config_t *c = &m->cfg;
		gpu_bert_config_t gc = {.hidden = c->hidden, .layers = c->layers, .heads = c->heads,
					.intermediate = c->intermediate, .vocab = c->vocab,
					.max_pos = c->max_pos, .type_vocab = c->type_vocab,
					.ln_eps = c->ln_eps};
		rc = gl->bert_create(ctx, &gc, &b, &e);
	}
	if (rc == 0)
		rc = upload(gl, b, st, &e);
	if (rc != 0) {
		if (b)
			gl->bert_free(b);
		m->gpu_name = NULL;
		if (device == EMBED_DEVICE_GPU)
			return vela_err_set(err, rc == VELA_ENOMEM ? rc : VELA_EUNSUPPORTED,
					    "embed: device gpu: %s", e.msg);
		/* AUTO: the CPU is the answer. The loader has said why there is no
		 * library or encoder; a device that is there but failed deserves a
		 * warning. */
		int level = gl == NULL || gl->bert_create == NULL ? VELA_LOG_DEBUG
			    : vela_gpulib_devices() == 0		 ? VELA_LOG_INFO
									 : VELA_LOG_WARN;
		vela_log(level, "embed: text model on the CPU (%s)", e.msg);
		return 0;
	}
	m->gl = gl;
	m->gpu = b;
	atomic_init(&m->gpu_off, false);
	return 0;
}

void embed_gpu_detach(embed_model_t *m)
{
	if (m->gpu)
		m->gl->bert_free(m->gpu);
	m->gpu = NULL;
}

int embed_gpu_run(const embed_model_t *m, const int32_t *ids, const uint32_t *lens, size_t n,
		  float *out)
{
	if (m->gpu == NULL || atomic_load(&m->gpu_off))
		return -1;
	if (n == 0)
		return 0;
	uint64_t total = 0;
	for (size_t s = 0; s < n; s++)
		total += lens[s];
	if (n >= UINT32_MAX || total >= UINT32_MAX)
		return -1; /* beyond the API's 32-bit offsets: this batch on the CPU */
	uint32_t *off = malloc((n + 1) * sizeof(uint32_t));
	if (off == NULL)
		return -1;
	off[0] = 0;
	for (size_t s = 0; s < n; s++)
		off[s + 1] = off[s] + lens[s];
	vela_err_t e = {0};
	/* ids were checked non-negative (embed_ids_batch, the tokenizer): the
	 * same bits as uint32_t, which may alias int32_t. */
	int rc = m->gl->bert_encode(m->gpu, (const uint32_t *)ids, off, (uint32_t)n, out, &e);
	free(off);
	if (rc == 0)
		return 0;
	if (!atomic_exchange((atomic_bool *)&m->gpu_off, true))
		vela_warn("embed: GPU encoder failed (%s: %s); this model runs on the CPU from now "
			  "on", vela_strerror(rc), e.msg);
	return rc;
}

const char *embed_model_device(const embed_model_t *m)
{
	return m->gpu && !atomic_load(&m->gpu_off) ? "gpu" : "cpu";
}

const char *embed_model_gpu_name(const embed_model_t *m)
{
	return m->gpu && !atomic_load(&m->gpu_off) ? m->gpu_name : NULL;
}

size_t embed_model_gpu_bytes(const embed_model_t *m)
{
	return m->gpu && !atomic_load(&m->gpu_off) ? m->gl->bert_bytes(m->gpu) : 0;
}
