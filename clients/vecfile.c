/* Vector file readers: .fvecs / .ivecs (TEXMEX) and NumPy .npy v1.0/2.0.
 * Sizes are checked against the file size before anything is allocated, so
 * a corrupt header cannot ask for a huge buffer. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "vela/client.h"

int vela_client_err(vela_err_t *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static uint32_t get_le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int file_open(const char *path, FILE **f, uint64_t *size, vela_err_t *err)
{
	struct stat st;
	*f = fopen(path, "rb");
	if (*f == NULL || fstat(fileno(*f), &st) != 0) {
		int e = errno;
		if (*f)
			fclose(*f);
		return vela_client_err(err, VELA_EIO, "%s: %s", path, strerror(e));
	}
	if (!S_ISREG(st.st_mode)) {
		fclose(*f);
		return vela_client_err(err, VELA_EIO, "%s: not a regular file", path);
	}
	if ((uint64_t)st.st_size > VELA_VECFILE_BYTES_MAX) {
		fclose(*f);
		return vela_client_err(err, VELA_ELIMIT, "%s: over %llu bytes", path,
				       (unsigned long long)VELA_VECFILE_BYTES_MAX);
	}
	*size = (uint64_t)st.st_size;
	return 0;
}

static int read_exact(FILE *f, void *p, size_t n, const char *path, vela_err_t *err)
{
	if (n && fread(p, 1, n, f) != n)
		return vela_client_err(err, ferror(f) ? VELA_EIO : VELA_ECORRUPT,
				       "%s: truncated (short read)", path);
	return 0;
}

static void to_host32(void *data, size_t n)
{
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
	uint32_t *w = data;
	for (size_t i = 0; i < n; i++)
		w[i] = __builtin_bswap32(w[i]);
#else
	(void)data;
	(void)n;
#endif
}

/* .fvecs/.ivecs: rows of (le32 dim, dim * 4 bytes). */
static int xvecs_load(const char *path, vela_vecs_t *out, vela_err_t *err)
{
	memset(out, 0, sizeof(*out));
	FILE *f;
	uint64_t size;
	unsigned char hdr[4];
	int rc = file_open(path, &f, &size, err);
	if (rc)
		return rc;
	if (size == 0) {
		fclose(f);
		return vela_client_err(err, VELA_ECORRUPT, "%s: empty file", path);
	}
	if ((rc = read_exact(f, hdr, 4, path, err)) != 0)
		goto out;
	uint32_t dim = get_le32(hdr);
	uint64_t row_bytes = 4 + (uint64_t)dim * 4;
	if (dim < VELA_DIM_MIN || dim > VELA_DIM_MAX) {
		rc = vela_client_err(err, VELA_ECORRUPT, "%s: row 0: dim %u out of range", path, dim);
		goto out;
	}
	if (size % row_bytes || size / row_bytes > VELA_VECFILE_ROWS_MAX) {
		rc = vela_client_err(err, VELA_ECORRUPT,
				     "%s: size %llu is not a whole number of dim-%u rows (truncated?)",
				     path, (unsigned long long)size, dim);
		goto out;
	}
	size_t rows = (size_t)(size / row_bytes);
	char *data = malloc(rows * dim * 4);
	if (data == NULL) {
		rc = vela_client_err(err, VELA_ENOMEM, "%s: out of memory", path);
		goto out;
	}
	for (size_t r = 0; r < rows && rc == 0; r++) {
		if (r > 0 && (rc = read_exact(f, hdr, 4, path, err)) == 0 && get_le32(hdr) != dim)
			rc = vela_client_err(err, VELA_ECORRUPT, "%s: row %zu: dim %u, expected %u",
					     path, r, get_le32(hdr), dim);
		if (rc == 0)
			rc = read_exact(f, data + r * dim * 4, (size_t)dim * 4, path, err);
	}
	if (rc) {
		free(data);
		goto out;
	}
	to_host32(data, rows * dim);
	*out = (vela_vecs_t){.data = data, .rows = rows, .dim = dim};
out:
	fclose(f);
	return rc;
}

int vela_fvecs_load(const char *path, vela_vecs_t *out, vela_err_t *err)
{
	return xvecs_load(path, out, err);
}

int vela_ivecs_load(const char *path, vela_vecs_t *out, vela_err_t *err)
{
	return xvecs_load(path, out, err);
}

/* ------------------------------------------------------------ .npy */

/* Value of 'key' in the header dict: points just past "'key':" and spaces. */
static const char *npy_value(const char *hdr, const char *key)
{
	char pat[32];
	snprintf(pat, sizeof(pat), "'%s':", key);
	const char *p = strstr(hdr, pat);
	if (p == NULL)
		return NULL;
	for (p += strlen(pat); *p == ' '; p++)
		;
	return p;
}

/* shape: "(rows, dim)" exactly two positive integers. */
static int npy_shape(const char *p, uint64_t *rows, uint64_t *dim)
{
	unsigned long long a, b;
	int used = 0;
	if (p == NULL || sscanf(p, "(%llu, %llu)%n", &a, &b, &used) != 2 || used == 0)
		return -1;
	if (strchr("0123456789", p[1]) == NULL) /* no sign, no blank */
		return -1;
	*rows = a;
	*dim = b;
	return 0;
}

static int npy_header(FILE *f, const char *path, char **hdr, uint64_t *hdr_end, vela_err_t *err)
{
	unsigned char pre[12];
	int rc = read_exact(f, pre, 10, path, err);
	if (rc)
		return rc;
	if (memcmp(pre, "\x93NUMPY", 6) != 0)
		return vela_client_err(err, VELA_ECORRUPT, "%s: not a .npy file (bad magic)", path);
	uint32_t len;
	uint64_t start = 10;
	if (pre[6] == 1 && pre[7] == 0) {
		len = (uint32_t)pre[8] | (uint32_t)pre[9] << 8;
	} else if (pre[6] == 2 && pre[7] == 0) {
		if ((rc = read_exact(f, pre + 10, 2, path, err)) != 0)
			return rc;
		len = get_le32(pre + 8);
		start = 12;
	} else {
		return vela_client_err(err, VELA_EUNSUPPORTED, "%s: .npy format %u.%u (want 1.0)",
				       path, pre[6], pre[7]);
	}
	if (len == 0 || len > VELA_NPY_HEADER_MAX)
		return vela_client_err(err, VELA_ECORRUPT, "%s: .npy header length %u", path, len);
	if ((*hdr = calloc(1, (size_t)len + 1)) == NULL)
		return vela_client_err(err, VELA_ENOMEM, "out of memory");
	if ((rc = read_exact(f, *hdr, len, path, err)) != 0) {
		free(*hdr);
		*hdr = NULL;
		return rc;
	}
	*hdr_end = start + len;
	return 0;
}

static int npy_check(const char *hdr, const char *path, uint64_t *rows, uint64_t *dim,
		     vela_err_t *err)
{
	const char *d = npy_value(hdr, "descr"), *fo = npy_value(hdr, "fortran_order");
	if (d == NULL || fo == NULL || npy_shape(npy_value(hdr, "shape"), rows, dim))
		return vela_client_err(err, VELA_ECORRUPT,
				       "%s: .npy header lacks descr/fortran_order/2-D shape", path);
	if (strncmp(d, "'<f4'", 5) != 0)
		return vela_client_err(err, VELA_EUNSUPPORTED, "%s: dtype %.8s (want '<f4' float32)",
				       path, d);
	if (strncmp(fo, "False", 5) != 0)
		return vela_client_err(err, VELA_EUNSUPPORTED, "%s: Fortran order (want C order)",
				       path);
	if (*dim < VELA_DIM_MIN || *dim > VELA_DIM_MAX || *rows > VELA_VECFILE_ROWS_MAX)
		return vela_client_err(err, VELA_ECORRUPT, "%s: shape (%llu, %llu) out of range",
				       path, (unsigned long long)*rows, (unsigned long long)*dim);
	return 0;
}

int vela_npy_load(const char *path, vela_vecs_t *out, vela_err_t *err)
{
	memset(out, 0, sizeof(*out));
	FILE *f;
	uint64_t size = 0, hdr_end = 0, rows = 0, dim = 0;
	char *hdr = NULL;
	int rc = file_open(path, &f, &size, err);
	if (rc)
		return rc;
	if ((rc = npy_header(f, path, &hdr, &hdr_end, err)) == 0)
		rc = npy_check(hdr, path, &rows, &dim, err);
	free(hdr);
	if (rc == 0 && size - hdr_end != rows * dim * 4)
		rc = vela_client_err(err, VELA_ECORRUPT,
				     "%s: %llu data bytes for shape (%llu, %llu) (truncated?)", path,
				     (unsigned long long)(size - hdr_end), (unsigned long long)rows,
				     (unsigned long long)dim);
	void *data = NULL;
	if (rc == 0 && (data = malloc(rows ? rows * dim * 4 : 1)) == NULL)
		rc = vela_client_err(err, VELA_ENOMEM, "%s: out of memory", path);
	if (rc == 0)
		rc = read_exact(f, data, rows * dim * 4, path, err);
	fclose(f);
	if (rc) {
		free(data);
		return rc;
	}
	to_host32(data, rows * dim);
	*out = (vela_vecs_t){.data = data, .rows = rows, .dim = (uint32_t)dim};
	return 0;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && strcmp(s + n - m, suffix) == 0;
}

int vela_vecs_load(const char *path, vela_vecs_t *out, vela_err_t *err)
{
	memset(out, 0, sizeof(*out));
	if (ends_with(path, ".fvecs"))
		return vela_fvecs_load(path, out, err);
	if (ends_with(path, ".ivecs"))
		return vela_ivecs_load(path, out, err);
	if (ends_with(path, ".npy"))
		return vela_npy_load(path, out, err);
	return vela_client_err(err, VELA_EUNSUPPORTED, "%s: unknown vector file type (want "
				".fvecs, .ivecs or .npy)", path);
}

void vela_vecs_free(vela_vecs_t *v)
{
	if (v == NULL)
		return;
	free(v->data);
	memset(v, 0, sizeof(*v));
}
