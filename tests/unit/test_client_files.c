/* Unit tests for libvela-client's vector file readers (.fvecs, .ivecs,
 * .npy): good files, and truncated, ragged, oversized or unsupported ones.
 * (The JSON-lines readers use jansson, which only the CLI links: they are
 * covered by tests/integration/test_cli_batch.py.) */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vela/client.h"

static char tmpdir[] = "/tmp/vela-test-files-XXXXXX";

static void setup(void)
{
	cr_assert_not_null(mkdtemp(tmpdir));
}

static void teardown(void)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(client_files, .init = setup, .fini = teardown);

/* Write bytes to tmpdir/name; returns the path (static buffer). */
static const char *put(const char *name, const void *p, size_t n)
{
	static char path[256];
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	FILE *f = fopen(path, "wb");
	cr_assert_not_null(f);
	cr_assert_eq(fwrite(p, 1, n, f), n);
	fclose(f);
	return path;
}

/* An .fvecs image of rows x dim with v[r][j] = r * 10 + j (little endian host). */
static size_t fvecs_image(unsigned char *buf, int rows, int dim)
{
	size_t o = 0;
	for (int r = 0; r < rows; r++) {
		memcpy(buf + o, &dim, 4);
		o += 4;
		for (int j = 0; j < dim; j++) {
			float x = (float)(r * 10 + j);
			memcpy(buf + o, &x, 4);
			o += 4;
		}
	}
	return o;
}

Test(client_files, fvecs_roundtrip)
{
	unsigned char buf[1024];
	size_t n = fvecs_image(buf, 3, 4);
	vela_vecs_t v;
	vela_err_t err;
	cr_assert_eq(vela_vecs_load(put("a.fvecs", buf, n), &v, &err), 0, "%s", err.msg);
	cr_assert_eq(v.rows, 3);
	cr_assert_eq(v.dim, 4);
	const float *f = v.data;
	cr_assert_float_eq(f[2 * 4 + 3], 23.0f, 0);
	vela_vecs_free(&v);
	cr_assert_null(v.data);
}

Test(client_files, fvecs_truncated_row)
{
	unsigned char buf[1024];
	size_t n = fvecs_image(buf, 3, 4);
	vela_vecs_t v;
	vela_err_t err;
	cr_assert_eq(vela_fvecs_load(put("t.fvecs", buf, n - 2), &v, &err), VELA_ECORRUPT);
	cr_assert(strstr(err.msg, "truncated"), "%s", err.msg);
	cr_assert_null(v.data);
	cr_assert_eq(vela_fvecs_load(put("h.fvecs", buf, 2), &v, &err), VELA_ECORRUPT);
	cr_assert_eq(vela_fvecs_load(put("e.fvecs", buf, 0), &v, &err), VELA_ECORRUPT);
}

Test(client_files, fvecs_ragged_and_bad_dim)
{
	unsigned char buf[1024];
	size_t n = fvecs_image(buf, 4, 2);
	int three = 3; /* row 1 claims dim 3 */
	memcpy(buf + 12, &three, 4);
	vela_vecs_t v;
	vela_err_t err;
	cr_assert_eq(vela_fvecs_load(put("r.fvecs", buf, n), &v, &err), VELA_ECORRUPT);
	cr_assert(strstr(err.msg, "row 1"), "%s", err.msg);
	int huge = 1 << 30, zero = 0;
	memcpy(buf, &huge, 4);
	cr_assert_eq(vela_fvecs_load(put("b.fvecs", buf, n), &v, &err), VELA_ECORRUPT);
	memcpy(buf, &zero, 4);
	cr_assert_eq(vela_fvecs_load(put("z.fvecs", buf, n), &v, &err), VELA_ECORRUPT);
	int neg = -1;
	memcpy(buf, &neg, 4);
	cr_assert_eq(vela_fvecs_load(put("n.fvecs", buf, n), &v, &err), VELA_ECORRUPT);
}

Test(client_files, ivecs_reads_int32)
{
	int32_t rows[2][3] = {{3, 1, 2}, {7, 8, 9}};
	unsigned char buf[64];
	size_t o = 0;
	for (int r = 0; r < 2; r++) {
		int d = 3;
		memcpy(buf + o, &d, 4);
		memcpy(buf + o + 4, rows[r], 12);
		o += 16;
	}
	vela_vecs_t v;
	vela_err_t err;
	cr_assert_eq(vela_vecs_load(put("g.ivecs", buf, o), &v, &err), 0, "%s", err.msg);
	cr_assert_eq(((int32_t *)v.data)[4], 8);
	vela_vecs_free(&v);
}

/* A .npy v1.0 image: header dict `dict`, then `data_bytes` bytes of floats. */
static size_t npy_image(unsigned char *buf, const char *dict, size_t data_bytes, int major)
{
	size_t pre = major == 1 ? 10 : 12, dl = strlen(dict);
	size_t hl = (pre + dl + 1 + 63) / 64 * 64 - pre; /* pad to 64, end in '\n' */
	memcpy(buf, "\x93NUMPY", 6);
	buf[6] = (unsigned char)major;
	buf[7] = 0;
	if (major == 1) {
		buf[8] = (unsigned char)(hl & 0xff);
		buf[9] = (unsigned char)(hl >> 8);
	} else {
		uint32_t h = (uint32_t)hl;
		memcpy(buf + 8, &h, 4);
	}
	memset(buf + pre, ' ', hl);
	memcpy(buf + pre, dict, dl);
	buf[pre + hl - 1] = '\n';
	for (size_t i = 0; i < data_bytes / 4; i++) {
		float x = (float)i;
		memcpy(buf + pre + hl + i * 4, &x, 4);
	}
	return pre + hl + data_bytes;
}

#define NPY_OK "{'descr': '<f4', 'fortran_order': False, 'shape': (5, 3), }"

Test(client_files, npy_v1_and_v2)
{
	unsigned char buf[4096];
	vela_vecs_t v;
	vela_err_t err;
	for (int major = 1; major <= 2; major++) {
		size_t n = npy_image(buf, NPY_OK, 60, major);
		cr_assert_eq(vela_vecs_load(put("a.npy", buf, n), &v, &err), 0, "%s", err.msg);
		cr_assert_eq(v.rows, 5);
		cr_assert_eq(v.dim, 3);
		cr_assert_float_eq(((float *)v.data)[14], 14.0f, 0);
		vela_vecs_free(&v);
	}
}

Test(client_files, npy_truncated_or_extra_data)
{
	unsigned char buf[4096];
	vela_vecs_t v;
	vela_err_t err;
	size_t n = npy_image(buf, NPY_OK, 60, 1);
	cr_assert_eq(vela_npy_load(put("t.npy", buf, n - 1), &v, &err), VELA_ECORRUPT);
	cr_assert(strstr(err.msg, "truncated"), "%s", err.msg);
	n = npy_image(buf, NPY_OK, 64, 1);
	cr_assert_eq(vela_npy_load(put("x.npy", buf, n), &v, &err), VELA_ECORRUPT);
	/* cut inside the header */
	cr_assert_eq(vela_npy_load(put("h.npy", buf, 30), &v, &err), VELA_ECORRUPT);
	cr_assert_eq(vela_npy_load(put("m.npy", "\x93NUMP", 5), &v, &err), VELA_ECORRUPT);
	cr_assert_null(v.data);
}

Test(client_files, npy_rejects_other_layouts)
{
	static const struct {
		const char *dict;
		int code;
	} bad[] = {
		{"{'descr': '<f8', 'fortran_order': False, 'shape': (5, 3), }", VELA_EUNSUPPORTED},
		{"{'descr': '>f4', 'fortran_order': False, 'shape': (5, 3), }", VELA_EUNSUPPORTED},
		{"{'descr': '<f4', 'fortran_order': True, 'shape': (5, 3), }", VELA_EUNSUPPORTED},
		{"{'descr': '<f4', 'fortran_order': False, 'shape': (15,), }", VELA_ECORRUPT},
		{"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 5, 3), }", VELA_ECORRUPT},
		{"{'descr': '<f4', 'fortran_order': False, 'shape': (-5, 3), }", VELA_ECORRUPT},
		{"{'descr': '<f4', 'fortran_order': False, 'shape': (5, 0), }", VELA_ECORRUPT},
		{"{'descr': '<f4', 'fortran_order': False, }", VELA_ECORRUPT},
		{"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 40000), }",
		 VELA_ECORRUPT},
	};
	unsigned char buf[4096];
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		vela_vecs_t v;
		vela_err_t err;
		size_t n = npy_image(buf, bad[i].dict, 60, 1);
		cr_assert_eq(vela_npy_load(put("b.npy", buf, n), &v, &err), bad[i].code,
			     "case %zu: %s", i, err.msg);
	}
	buf[6] = 3; /* version 3.0 */
	vela_vecs_t v;
	vela_err_t err;
	cr_assert_eq(vela_npy_load(put("v.npy", buf, 200), &v, &err), VELA_EUNSUPPORTED);
}

Test(client_files, unknown_extension_and_missing_file)
{
	vela_vecs_t v;
	vela_err_t err;
	cr_assert_eq(vela_vecs_load("/tmp/x.csv", &v, &err), VELA_EUNSUPPORTED);
	cr_assert_eq(vela_vecs_load("/nonexistent/dir/a.fvecs", &v, &err), VELA_EIO);
	char dir[256];
	snprintf(dir, sizeof(dir), "%s/d.fvecs", tmpdir);
	cr_assert_eq(mkdir(dir, 0700), 0);
	cr_assert_eq(vela_vecs_load(dir, &v, &err), VELA_EIO, "%s", err.msg);
}
