/* safetensors reader (reference/embeddings-and-datasets.md §1.4; format of
 * huggingface/safetensors): u64 LE header length N, N bytes of JSON, then the
 * data buffer. Offsets are relative to the buffer. We check everything the
 * reference reader checks (header bounds, dtype, numel * size == byte range,
 * ranges tiling the buffer with no gap or overlap up to EOF) before any
 * tensor is handed out, so a lying file is an error, never a wild read. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/common.h"
#include "embed/embed.h"
#include "embed/embed_impl.h"

struct embed_st {
	void *map;        /* mmap base when opened from a file, else NULL */
	size_t map_len;
	embed_st_tensor_t *tensors; /* sorted by data offset */
	size_t n;
	char **meta_kv;   /* key, value, key, value ... */
	size_t n_meta;
	char *names;      /* one block holding every tensor name */
};

static const struct {
	const char *name;
	size_t size;
} dtypes[EMBED_DT_COUNT] = {
	[EMBED_DT_BOOL] = {"BOOL", 1},     [EMBED_DT_U8] = {"U8", 1},
	[EMBED_DT_I8] = {"I8", 1},         [EMBED_DT_F8_E5M2] = {"F8_E5M2", 1},
	[EMBED_DT_F8_E4M3] = {"F8_E4M3", 1}, [EMBED_DT_I16] = {"I16", 2},
	[EMBED_DT_U16] = {"U16", 2},       [EMBED_DT_F16] = {"F16", 2},
	[EMBED_DT_BF16] = {"BF16", 2},     [EMBED_DT_I32] = {"I32", 4},
	[EMBED_DT_U32] = {"U32", 4},       [EMBED_DT_F32] = {"F32", 4},
	[EMBED_DT_F64] = {"F64", 8},       [EMBED_DT_I64] = {"I64", 8},
	[EMBED_DT_U64] = {"U64", 8},
};

const char *embed_dtype_name(embed_dtype_t dt)
{
	return (unsigned)dt < EMBED_DT_COUNT ? dtypes[dt].name : "?";
}

size_t embed_dtype_size(embed_dtype_t dt)
{
	return (unsigned)dt < EMBED_DT_COUNT ? dtypes[dt].size : 0;
}

static int dtype_parse(const char *s, embed_dtype_t *out)
{
	for (int i = 0; i < EMBED_DT_COUNT; i++)
		if (strcmp(s, dtypes[i].name) == 0) {
			*out = (embed_dtype_t)i;
			return 0;
		}
	return -1;
}

void embed_st_close(embed_st_t *st)
{
	if (st == NULL)
		return;
	if (st->map != NULL)
		munmap(st->map, st->map_len);
	for (size_t i = 0; i < 2 * st->n_meta; i++)
		free(st->meta_kv[i]);
	free(st->meta_kv);
	free(st->tensors);
	free(st->names);
	free(st);
}

/* A JSON integer in [0, 2^63). */
static int json_u64(const json_t *j, uint64_t *out)
{
	if (!json_is_integer(j) || json_integer_value(j) < 0)
		return -1;
	*out = (uint64_t)json_integer_value(j);
	return 0;
}

/* shape: array of <= EMBED_ST_NDIM_MAX non-negative integers whose product
 * does not overflow. */
static int tensor_shape(embed_st_tensor_t *t, const json_t *shape, const char *name,
			vela_err_t *err)
{
	if (!json_is_array(shape) || json_array_size(shape) > EMBED_ST_NDIM_MAX)
		return vela_err_set(err, VELA_ECORRUPT,
				    "safetensors: tensor '%s': shape must be an array of at most %d "
				    "integers", name, EMBED_ST_NDIM_MAX);
	t->ndim = (uint32_t)json_array_size(shape);
	t->numel = 1;
	for (uint32_t d = 0; d < t->ndim; d++) {
		uint64_t v;
		if (json_u64(json_array_get(shape, d), &v) != 0)
			return vela_err_set(err, VELA_ECORRUPT,
					    "safetensors: tensor '%s': shape[%u] is not a "
					    "non-negative integer", name, d);
		if (v != 0 && t->numel > UINT64_MAX / v)
			return vela_err_set(err, VELA_ECORRUPT,
					    "safetensors: tensor '%s': element count overflows",
					    name);
		t->shape[d] = v;
		t->numel *= v;
	}
	return 0;
}

/* One tensor entry: exactly {dtype, shape, data_offsets}; byte range
 * consistent with dtype and shape and inside a buffer of `data_len`. The
 * data pointer is set relative to `data`; offsets go to `begin`. */
static int tensor_parse(embed_st_tensor_t *t, uint64_t *begin, const char *name,
			const json_t *obj, const uint8_t *data, uint64_t data_len, vela_err_t *err)
{
	if (!json_is_object(obj) || json_object_size(obj) != 3)
		return vela_err_set(err, VELA_ECORRUPT,
				    "safetensors: tensor '%s': entry must be an object with "
				    "exactly dtype, shape and data_offsets", name);
	const json_t *jd = json_object_get(obj, "dtype");
	const json_t *js = json_object_get(obj, "shape");
	const json_t *jo = json_object_get(obj, "data_offsets");
	if (jd == NULL || js == NULL || jo == NULL)
		return vela_err_set(err, VELA_ECORRUPT,
				    "safetensors: tensor '%s': needs dtype, shape and data_offsets",
				    name);
	if (!json_is_string(jd) || dtype_parse(json_string_value(jd), &t->dtype) != 0)
		return vela_err_set(err, VELA_ECORRUPT, "safetensors: tensor '%s': unknown dtype",
				    name);
	int rc = tensor_shape(t, js, name, err);
	if (rc != 0)
		return rc;
	uint64_t b, e;
	if (!json_is_array(jo) || json_array_size(jo) != 2 ||
	    json_u64(json_array_get(jo, 0), &b) != 0 || json_u64(json_array_get(jo, 1), &e) != 0 ||
	    b > e)
		return vela_err_set(err, VELA_ECORRUPT,
				    "safetensors: tensor '%s': data_offsets must be [begin, end] "
				    "with 0 <= begin <= end", name);
	size_t es = dtypes[t->dtype].size;
	if (t->numel > UINT64_MAX / es || t->numel * es != e - b)
		return vela_err_set(err, VELA_ECORRUPT,
				    "safetensors: tensor '%s': %llu bytes for %llu elements of %s",
				    name, (unsigned long long)(e - b), (unsigned long long)t->numel,
				    dtypes[t->dtype].name);
	if (e > data_len)
		return vela_err_set(err, VELA_ECORRUPT,
				    "safetensors: tensor '%s': bytes [%llu, %llu) lie past the end "
				    "of the data (%llu bytes): truncated file?", name,
				    (unsigned long long)b, (unsigned long long)e,
				    (unsigned long long)data_len);
	t->nbytes = e - b;
	t->data = data + b;
	*begin = b;
	return 0;
}

static int meta_parse(embed_st_t *st, const json_t *obj, vela_err_t *err)
{
	if (!json_is_object(obj))
		return vela_err_set(err, VELA_ECORRUPT, "safetensors: __metadata__ is not an object");
	size_t n = json_object_size(obj);
	st->meta_kv = calloc(2 * n + 1, sizeof(char *));
	if (st->meta_kv == NULL)
		return vela_err_set(err, VELA_ENOMEM, "safetensors: out of memory");
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)obj, k, v) {
		if (!json_is_string(v))
			return vela_err_set(err, VELA_ECORRUPT,
					    "safetensors: __metadata__ value of '%s' is not a string",
					    k);
		st->meta_kv[2 * st->n_meta] = strdup(k);
		st->meta_kv[2 * st->n_meta + 1] = strdup(json_string_value(v));
		st->n_meta++;
		if (st->meta_kv[2 * st->n_meta - 2] == NULL || st->meta_kv[2 * st->n_meta - 1] == NULL)
			return vela_err_set(err, VELA_ENOMEM, "safetensors: out of memory");
	}
	return 0;
}

typedef struct {
	embed_st_tensor_t t;
	uint64_t begin;
} ranged_t;

static int ranged_cmp(const void *a, const void *b)
{
	const ranged_t *x = a, *y = b;
	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	/* Equal begins: the empty one first, so the tiling check sees it. */
	return (x->t.nbytes > y->t.nbytes) - (x->t.nbytes < y->t.nbytes);
}

/* Sorted by begin, each range must start where the previous ended and the
 * last must end at the end of the buffer: no gap, no overlap, no trailer. */
static int ranges_check(const ranged_t *r, size_t n, uint64_t data_len, vela_err_t *err)
{
	uint64_t pos = 0;
	for (size_t i = 0; i < n; i++) {
		if (r[i].begin != pos)
			return vela_err_set(err, VELA_ECORRUPT,
					    "safetensors: tensor '%s' starts at byte %llu, expected "
					    "%llu (%s)", r[i].t.name, (unsigned long long)r[i].begin,
					    (unsigned long long)pos,
					    r[i].begin < pos ? "overlaps the previous tensor"
							     : "gap in the data");
		pos += r[i].t.nbytes;
	}
	if (pos != data_len)
		return vela_err_set(err, VELA_ECORRUPT,
				    "safetensors: tensors cover %llu bytes but the data holds %llu",
				    (unsigned long long)pos, (unsigned long long)data_len);
	return 0;
}

/* Copy every tensor name into one block and sort the tensors by offset. */
static int tensors_build(embed_st_t *st, json_t *root, const uint8_t *data, uint64_t data_len,
			 vela_err_t *err)
{
	size_t n = json_object_size(root), names_len = 0;
	ranged_t *r = calloc(n ? n : 1, sizeof(*r));
	if (r == NULL)
		return vela_err_set(err, VELA_ENOMEM, "safetensors: out of memory");
	const char *k;
	json_t *v;
	int rc = 0;
	json_object_foreach(root, k, v) {
		size_t kl = strlen(k);
		if (strcmp(k, "__metadata__") == 0) {
			if ((rc = meta_parse(st, v, err)) != 0)
				goto out;
			continue;
		}
		if (kl == 0 || kl > EMBED_ST_NAME_MAX) {
			rc = vela_err_set(err, VELA_ECORRUPT,
					  "safetensors: tensor name of %zu bytes (1..%u allowed)", kl,
					  EMBED_ST_NAME_MAX);
			goto out;
		}
		r[st->n].t.name = k; /* re-pointed below, once copied */
		if ((rc = tensor_parse(&r[st->n].t, &r[st->n].begin, k, v, data, data_len, err)) != 0)
			goto out;
		names_len += kl + 1;
		st->n++;
	}
	qsort(r, st->n, sizeof(*r), ranged_cmp);
	if ((rc = ranges_check(r, st->n, data_len, err)) != 0)
		goto out;
	st->names = malloc(names_len ? names_len : 1);
	st->tensors = calloc(st->n ? st->n : 1, sizeof(*st->tensors));
	if (st->names == NULL || st->tensors == NULL) {
		rc = vela_err_set(err, VELA_ENOMEM, "safetensors: out of memory");
		goto out;
	}
	char *p = st->names;
	for (size_t i = 0; i < st->n; i++) {
		size_t kl = strlen(r[i].t.name) + 1;
		memcpy(p, r[i].t.name, kl);
		st->tensors[i] = r[i].t;
		st->tensors[i].name = p;
		p += kl;
	}
out:
	free(r);
	return rc;
}

/* Header: length bounds first (a lying length must not make us read past
 * the buffer), then JSON (jansson checks UTF-8 and nesting depth). */
static int header_parse(embed_st_t *st, const uint8_t *buf, size_t len, vela_err_t *err)
{
	if (len < 8)
		return vela_err_set(err, VELA_ECORRUPT,
				    "safetensors: file of %zu bytes is shorter than the 8-byte "
				    "header length", len);
	uint64_t hl = 0;
	for (int i = 7; i >= 0; i--)
		hl = (hl << 8) | buf[i];
	if (hl < 2 || hl > EMBED_ST_HEADER_MAX || hl > len - 8)
		return vela_err_set(err, VELA_ECORRUPT,
				    "safetensors: header length %llu is out of bounds (2..%llu, "
				    "file holds %zu bytes after it)", (unsigned long long)hl,
				    EMBED_ST_HEADER_MAX, len - 8);
	json_error_t je;
	json_t *root = json_loadb((const char *)buf + 8, (size_t)hl, JSON_REJECT_DUPLICATES, &je);
	if (root == NULL)
		return vela_err_set(err, VELA_ECORRUPT, "safetensors: header JSON: %s (byte %d)",
				    je.text, je.position);
	int rc = 0;
	if (!json_is_object(root))
		rc = vela_err_set(err, VELA_ECORRUPT, "safetensors: header is not a JSON object");
	else if (json_object_size(root) > EMBED_ST_TENSORS_MAX + 1)
		rc = vela_err_set(err, VELA_ECORRUPT, "safetensors: more than %u tensors",
				  EMBED_ST_TENSORS_MAX);
	else
		rc = tensors_build(st, root, buf + 8 + hl, len - 8 - hl, err);
	json_decref(root);
	return rc;
}

int embed_st_parse(const void *buf, size_t len, embed_st_t **out, vela_err_t *err)
{
	if (out == NULL || (buf == NULL && len > 0))
		return vela_err_set(err, VELA_EINVAL, "safetensors: bad argument");
	*out = NULL;
	embed_st_t *st = calloc(1, sizeof(*st));
	if (st == NULL)
		return vela_err_set(err, VELA_ENOMEM, "safetensors: out of memory");
	int rc = header_parse(st, buf, len, err);
	if (rc != 0) {
		embed_st_close(st);
		return rc;
	}
	*out = st;
	return 0;
}

int embed_st_open(const char *path, embed_st_t **out, vela_err_t *err)
{
	if (path == NULL || out == NULL)
		return vela_err_set(err, VELA_EINVAL, "safetensors: bad argument");
	*out = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return vela_err_set(err, VELA_EIO, "safetensors: cannot open %s: %s", path,
				    strerror(errno));
	struct stat sb;
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		close(fd);
		return vela_err_set(err, VELA_EIO, "safetensors: %s is not a regular file", path);
	}
	size_t len = (size_t)sb.st_size;
	void *map = len ? mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
	close(fd);
	if (map == MAP_FAILED)
		return vela_err_set(err, VELA_EIO, "safetensors: cannot map %s: %s", path,
				    strerror(errno));
	int rc = embed_st_parse(map, len, out, err);
	if (rc != 0) {
		if (map != NULL)
			munmap(map, len);
		return rc;
	}
	(*out)->map = map;
	(*out)->map_len = len;
	return 0;
}

size_t embed_st_count(const embed_st_t *st)
{
	return st ? st->n : 0;
}

const embed_st_tensor_t *embed_st_at(const embed_st_t *st, size_t i)
{
	return st && i < st->n ? &st->tensors[i] : NULL;
}

const embed_st_tensor_t *embed_st_find(const embed_st_t *st, const char *name)
{
	if (st == NULL || name == NULL)
		return NULL;
	for (size_t i = 0; i < st->n; i++)
		if (strcmp(st->tensors[i].name, name) == 0)
			return &st->tensors[i];
	return NULL;
}

const char *embed_st_metadata(const embed_st_t *st, const char *key)
{
	if (st == NULL || key == NULL)
		return NULL;
	for (size_t i = 0; i < st->n_meta; i++)
		if (strcmp(st->meta_kv[2 * i], key) == 0)
			return st->meta_kv[2 * i + 1];
	return NULL;
}

int embed_st_to_f32(const embed_st_tensor_t *t, float *dst, size_t n, vela_err_t *err)
{
	if (t == NULL || (dst == NULL && n > 0))
		return vela_err_set(err, VELA_EINVAL, "safetensors: bad argument");
	if (t->numel != n)
		return vela_err_set(err, VELA_EDIM, "safetensors: tensor '%s' holds %llu values, "
				    "not %zu", t->name, (unsigned long long)t->numel, n);
	const uint8_t *p = t->data;
	switch (t->dtype) {
	case EMBED_DT_F32:
		memcpy(dst, p, n * sizeof(float)); /* little-endian host (x86-64) */
		return 0;
	case EMBED_DT_F16:
		for (size_t i = 0; i < n; i++)
			dst[i] = embed_f16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
		return 0;
	case EMBED_DT_BF16:
		for (size_t i = 0; i < n; i++)
			dst[i] = embed_bf16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
		return 0;
	default:
		return vela_err_set(err, VELA_ETYPE, "safetensors: tensor '%s' is %s, not a float "
				    "type", t->name, dtypes[t->dtype].name);
	}
}
