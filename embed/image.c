/* Image input of the CLIP vision tower: PNG (libpng) and JPEG
 * (libjpeg-turbo) decoding from memory to RGB8, and CLIP preprocessing
 * (reference/embeddings-and-datasets.md §1.7).
 *
 * Both decoders report errors by longjmp out of their error callbacks
 * (libjpeg's default error_exit would call exit()); every piece of state a
 * decode owns lives in a context struct outside the frame that calls
 * setjmp, so nothing needs `volatile` and the cleanup after a longjmp sees
 * the current pointers. Sizes are checked against the EMBED_IMAGE_* limits
 * from the header alone, before any pixel buffer is allocated. */
#include <math.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h> /* after stdio.h: it uses FILE and size_t */
#include <jerror.h>
#include <png.h>

#include "common/common.h"
#include "embed/vit_impl.h"

/* A progressive JPEG may hold any number of scans, each a pass over the
 * whole image: bound the work (libjpeg-turbo's own advice, djpeg -maxscans). */
#define JPEG_SCANS_MAX 500
/* libjpeg's working memory: enough for a progressive image at the pixel
 * limit (coefficients: 2 bytes a sample), refused beyond. */
#define JPEG_MEMORY_MAX (640ul << 20)
/* Largest ancillary PNG chunk libpng may allocate (text, ICC profiles). */
#define PNG_CHUNK_MAX (8u << 20)

static int size_check(uint64_t w, uint64_t h, const char *fmt, vela_err_t *err)
{
	if (w == 0 || h == 0)
		return vela_err_set(err, VELA_ECORRUPT, "embed: %s image of %llux%llu pixels", fmt,
				    (unsigned long long)w, (unsigned long long)h);
	if (w > EMBED_IMAGE_SIDE_MAX || h > EMBED_IMAGE_SIDE_MAX || w * h > EMBED_IMAGE_PIXELS_MAX)
		return vela_err_set(err, VELA_ELIMIT, "embed: %s image of %llux%llu pixels is over "
				    "the limit (%u per side, %u in all)", fmt, (unsigned long long)w,
				    (unsigned long long)h, EMBED_IMAGE_SIDE_MAX,
				    EMBED_IMAGE_PIXELS_MAX);
	return 0;
}

/* ------------------------------------------------------------ PNG */

typedef struct {
	const uint8_t *src;
	size_t len, pos;
	png_structp png;
	png_infop info;
	uint8_t *pix;
	png_bytep *rows;
	uint32_t w, h;
	int code; /* set before a deliberate png_error */
	char msg[160];
} png_ctx_t;

static void png_on_error(png_structp png, png_const_charp msg)
{
	png_ctx_t *c = png_get_error_ptr(png);
	snprintf(c->msg, sizeof(c->msg), "%s", msg);
	png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
	(void)png, (void)msg; /* benign (a bad ancillary chunk is skipped) */
}

static void png_on_read(png_structp png, png_bytep out, size_t n)
{
	png_ctx_t *c = png_get_io_ptr(png);
	if (n > c->len - c->pos)
		png_error(png, "truncated data");
	memcpy(out, c->src + c->pos, n);
	c->pos += n;
}

/* Everything between setjmp and the last read: returns 0, or 1 after a
 * libpng error (c->msg) or a size refusal (c->code). */
static int png_run(png_ctx_t *c, vela_err_t *err)
{
	if (setjmp(png_jmpbuf(c->png)))
		return 1;
	png_set_read_fn(c->png, c, png_on_read);
	png_set_chunk_malloc_max(c->png, PNG_CHUNK_MAX);
	png_read_info(c->png, c->info);
	png_uint_32 w, h;
	int depth, color, interlace;
	png_get_IHDR(c->png, c->info, &w, &h, &depth, &color, &interlace, NULL, NULL);
	if ((c->code = size_check(w, h, "PNG", err)) != 0)
		return 1;
	/* To RGB8 as PIL's convert("RGB"): palette expanded (its tRNS ignored),
	 * gray replicated, 16-bit truncated to the high byte, alpha dropped;
	 * gAMA/iCCP are not applied. */
	if (color == PNG_COLOR_TYPE_PALETTE)
		png_set_palette_to_rgb(c->png);
	if ((color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) && depth < 8)
		png_set_expand_gray_1_2_4_to_8(c->png);
	if (depth == 16)
		png_set_strip_16(c->png);
	if ((color & PNG_COLOR_MASK_ALPHA) || png_get_valid(c->png, c->info, PNG_INFO_tRNS))
		png_set_strip_alpha(c->png); /* expansion may turn tRNS into alpha */
	if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA)
		png_set_gray_to_rgb(c->png);
	png_set_interlace_handling(c->png);
	png_read_update_info(c->png, c->info);
	if (png_get_rowbytes(c->png, c->info) != (size_t)w * 3 ||
	    png_get_channels(c->png, c->info) != 3 || png_get_bit_depth(c->png, c->info) != 8)
		png_error(c->png, "unexpected pixel layout after conversion");
	c->w = w, c->h = h;
	c->pix = malloc((size_t)w * h * 3);
	c->rows = malloc((size_t)h * sizeof(png_bytep));
	if (c->pix == NULL || c->rows == NULL) {
		c->code = vela_err_set(err, VELA_ENOMEM, "embed: out of memory for a %ux%u PNG",
				       (unsigned)w, (unsigned)h);
		return 1;
	}
	for (png_uint_32 y = 0; y < h; y++)
		c->rows[y] = c->pix + (size_t)y * w * 3;
	png_read_image(c->png, c->rows);
	png_read_end(c->png, NULL); /* to IEND: a file cut after its pixels is corrupt too */
	return 0;
}

static int png_decode(const uint8_t *buf, size_t len, uint8_t **rgb, uint32_t *w, uint32_t *h,
		      vela_err_t *err)
{
	png_ctx_t c = {.src = buf, .len = len};
	c.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &c, png_on_error, png_on_warning);
	c.info = c.png ? png_create_info_struct(c.png) : NULL;
	int rc;
	if (c.info == NULL)
		rc = vela_err_set(err, VELA_ENOMEM, "embed: out of memory (libpng)");
	else if (png_run(&c, err) == 0)
		rc = 0;
	else if (c.code != 0)
		rc = c.code;
	else
		rc = vela_err_set(err, VELA_ECORRUPT, "embed: corrupt PNG: %s", c.msg);
	png_destroy_read_struct(c.png ? &c.png : NULL, c.info ? &c.info : NULL, NULL);
	free(c.rows);
	if (rc != 0) {
		free(c.pix);
		return rc;
	}
	*rgb = c.pix, *w = c.w, *h = c.h;
	return 0;
}

/* ------------------------------------------------------------ JPEG */

typedef struct {
	struct jpeg_error_mgr pub; /* first: libjpeg passes &pub as cinfo->err */
	struct jpeg_progress_mgr prog;
	jmp_buf jb;
	struct jpeg_decompress_struct cinfo;
	uint8_t *pix;
	int code;
	char msg[JMSG_LENGTH_MAX];
} jpeg_ctx_t;

static void jpeg_on_error(j_common_ptr ci)
{
	jpeg_ctx_t *c = (jpeg_ctx_t *)ci->err;
	ci->err->format_message(ci, c->msg);
	longjmp(c->jb, 1);
}

/* Warnings about damaged entropy data or a truncated file are errors here
 * (Pillow refuses truncated files the same way); the rest (extraneous bytes
 * between markers, an unknown JFIF revision) are benign. */
static void jpeg_on_message(j_common_ptr ci, int level)
{
	int code = ci->err->msg_code;
	if (level == -1 && (code == JWRN_JPEG_EOF || code == JWRN_HIT_MARKER ||
			    code == JWRN_HUFF_BAD_CODE || code == JWRN_MUST_RESYNC ||
			    code == JWRN_ARITH_BAD_CODE))
		jpeg_on_error(ci);
}

static void jpeg_on_progress(j_common_ptr ci)
{
	jpeg_ctx_t *c = (jpeg_ctx_t *)ci->err;
	if (c->cinfo.input_scan_number > JPEG_SCANS_MAX) {
		snprintf(c->msg, sizeof(c->msg), "more than %d scans", JPEG_SCANS_MAX);
		longjmp(c->jb, 1);
	}
}

static int jpeg_run(jpeg_ctx_t *c, const uint8_t *buf, size_t len, vela_err_t *err)
{
	struct jpeg_decompress_struct *ci = &c->cinfo;
	if (setjmp(c->jb))
		return 1;
	jpeg_create_decompress(ci);
	ci->mem->max_memory_to_use = JPEG_MEMORY_MAX;
	ci->progress = &c->prog;
	jpeg_mem_src(ci, buf, (unsigned long)len);
	jpeg_read_header(ci, TRUE);
	if ((c->code = size_check(ci->image_width, ci->image_height, "JPEG", err)) != 0)
		return 1;
	if (ci->jpeg_color_space == JCS_CMYK || ci->jpeg_color_space == JCS_YCCK) {
		c->code = vela_err_set(err, VELA_EUNSUPPORTED, "embed: CMYK JPEG images are not "
				       "supported");
		return 1;
	}
	ci->out_color_space = JCS_RGB; /* libjpeg's defaults otherwise: islow IDCT, fancy upsampling */
	jpeg_start_decompress(ci);
	if (ci->output_components != 3)
		ERREXIT(ci, JERR_CONVERSION_NOTIMPL);
	size_t stride = (size_t)ci->output_width * 3;
	c->pix = malloc(stride * ci->output_height);
	if (c->pix == NULL) {
		c->code = vela_err_set(err, VELA_ENOMEM, "embed: out of memory for a %ux%u JPEG",
				       ci->output_width, ci->output_height);
		return 1;
	}
	while (ci->output_scanline < ci->output_height) {
		JSAMPROW row = c->pix + (size_t)ci->output_scanline * stride;
		if (jpeg_read_scanlines(ci, &row, 1) != 1)
			ERREXIT(ci, JERR_INPUT_EOF); /* a suspending source never applies here */
	}
	jpeg_finish_decompress(ci);
	return 0;
}

static int jpeg_decode(const uint8_t *buf, size_t len, uint8_t **rgb, uint32_t *w, uint32_t *h,
		       vela_err_t *err)
{
	jpeg_ctx_t *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return vela_err_set(err, VELA_ENOMEM, "embed: out of memory");
	c->cinfo.err = jpeg_std_error(&c->pub);
	c->pub.error_exit = jpeg_on_error;
	c->pub.emit_message = jpeg_on_message;
	c->prog.progress_monitor = jpeg_on_progress;
	int rc = 0;
	if (jpeg_run(c, buf, len, err) != 0)
		rc = c->code ? c->code
			     : vela_err_set(err, VELA_ECORRUPT, "embed: corrupt JPEG: %s", c->msg);
	if (rc == 0)
		*rgb = c->pix, *w = c->cinfo.output_width, *h = c->cinfo.output_height;
	else
		free(c->pix);
	jpeg_destroy_decompress(&c->cinfo); /* safe on a partly created object */
	free(c);
	return rc;
}

/* ------------------------------------------------------------ entry */

int embed_image_decode(const void *buf, size_t len, uint8_t **rgb, uint32_t *w, uint32_t *h,
		       vela_err_t *err)
{
	if (rgb == NULL || w == NULL || h == NULL || (buf == NULL && len > 0))
		return vela_err_set(err, VELA_EINVAL, "embed: bad argument");
	*rgb = NULL;
	*w = *h = 0;
	const uint8_t *p = buf;
	if (len > EMBED_IMAGE_BYTES_MAX)
		return vela_err_set(err, VELA_ELIMIT, "embed: image of %zu bytes is over the limit "
				    "(%u)", len, EMBED_IMAGE_BYTES_MAX);
	static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
	if (len >= 8 && memcmp(p, png_sig, 8) == 0)
		return png_decode(p, len, rgb, w, h, err);
	if (len >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff)
		return jpeg_decode(p, len, rgb, w, h, err);
	if ((len >= 4 && memcmp(p, "GIF8", 4) == 0) || (len >= 2 && memcmp(p, "BM", 2) == 0) ||
	    (len >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0))
		return vela_err_set(err, VELA_EUNSUPPORTED, "embed: only PNG and JPEG images are "
				    "supported");
	return vela_err_set(err, VELA_ECORRUPT, "embed: not a PNG or JPEG image (%zu bytes)", len);
}

/* ------------------------------------------------------------ preprocessing */

/* Keys' cubic convolution kernel with a = -0.5 (PIL's bicubic filter). */
static double cubic(double x)
{
	const double a = -0.5;
	x = fabs(x);
	if (x < 1.0)
		return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
	if (x < 2.0)
		return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
	return 0.0;
}

/* Taps of one resampling axis for outputs [o0, o0 + n) of `out` from `in`
 * samples, as PIL's resampler: the kernel is stretched by the downscale
 * factor (antialiasing; plain bicubic when enlarging), taps that fall
 * outside the image are dropped and the rest renormalised. first[i] is the
 * first input index, cnt[i] the number of taps, w[i * kmax ..] the weights. */
typedef struct {
	uint32_t kmax;
	uint32_t *first, *cnt;
	float *w;
} taps_t;

static int taps_make(uint32_t in, uint32_t out, uint32_t o0, uint32_t n, taps_t *t)
{
	double scale = (double)in / out, fs = scale > 1.0 ? scale : 1.0, support = 2.0 * fs;
	t->kmax = (uint32_t)ceil(support) * 2 + 1;
	t->first = malloc(n * sizeof(uint32_t));
	t->cnt = malloc(n * sizeof(uint32_t));
	t->w = malloc(vela_mul_size((size_t)n * t->kmax, sizeof(float)));
	double *ws = malloc(t->kmax * sizeof(double));
	if (t->first == NULL || t->cnt == NULL || t->w == NULL || ws == NULL) {
		free(ws);
		return VELA_ENOMEM;
	}
	for (uint32_t i = 0; i < n; i++) {
		double center = (o0 + i + 0.5) * scale, sum = 0;
		double lo = floor(center - support + 0.5), hi = floor(center + support + 0.5);
		uint32_t a = lo < 0 ? 0 : (uint32_t)lo, b = hi > in ? in : (uint32_t)hi;
		if (b - a > t->kmax)
			b = a + t->kmax;
		for (uint32_t j = a; j < b; j++)
			sum += ws[j - a] = cubic((j - center + 0.5) / fs);
		t->first[i] = a;
		t->cnt[i] = b - a;
		for (uint32_t j = 0; j < b - a; j++)
			t->w[(size_t)i * t->kmax + j] = (float)(sum != 0 ? ws[j] / sum : 0);
	}
	free(ws);
	return 0;
}

static void taps_free(taps_t *t)
{
	free(t->first);
	free(t->cnt);
	free(t->w);
}

static float clamp255(double v)
{
	return v < 0 ? 0.0f : v > 255 ? 255.0f : (float)v;
}

int embed_image_preprocess(const uint8_t *rgb, uint32_t w, uint32_t h, uint32_t size,
			   const float mean[3], const float std[3], float *chw)
{
	/* Short side to `size`, the long one int(size * long / short). */
	uint32_t rw, rh;
	if (w <= h)
		rw = size, rh = (uint32_t)((uint64_t)size * h / w);
	else
		rh = size, rw = (uint32_t)((uint64_t)size * w / h);
	uint32_t ox = (rw - size) / 2, oy = (rh - size) / 2;
	taps_t tx = {0}, ty = {0};
	float *mid = NULL;
	int rc = taps_make(w, rw, ox, size, &tx);
	if (rc == 0)
		rc = taps_make(h, rh, oy, size, &ty);
	/* Horizontal pass over the input rows the vertical taps read. */
	uint32_t r0 = ty.first ? ty.first[0] : 0, r1 = r0;
	for (uint32_t i = 0; rc == 0 && i < size; i++)
		r1 = ty.first[i] + ty.cnt[i] > r1 ? ty.first[i] + ty.cnt[i] : r1;
	if (rc == 0 && (mid = malloc(vela_mul_size((size_t)(r1 - r0) * size, 3 * sizeof(float)))) ==
			       NULL)
		rc = VELA_ENOMEM;
	for (uint32_t y = r0; rc == 0 && y < r1; y++) {
		const uint8_t *row = rgb + (size_t)y * w * 3;
		float *dst = mid + (size_t)(y - r0) * size * 3;
		for (uint32_t i = 0; i < size; i++) {
			const float *k = tx.w + (size_t)i * tx.kmax;
			const uint8_t *s = row + (size_t)tx.first[i] * 3;
			double acc[3] = {0, 0, 0};
			for (uint32_t j = 0; j < tx.cnt[i]; j++, s += 3) {
				acc[0] += k[j] * s[0];
				acc[1] += k[j] * s[1];
				acc[2] += k[j] * s[2];
			}
			for (int c = 0; c < 3; c++)
				dst[i * 3 + c] = clamp255(acc[c]);
		}
	}
	/* Vertical pass, then scale and normalise into planes. */
	size_t plane = (size_t)size * size;
	for (uint32_t i = 0; rc == 0 && i < size; i++) {
		const float *k = ty.w + (size_t)i * ty.kmax;
		for (uint32_t x = 0; x < size; x++) {
			double acc[3] = {0, 0, 0};
			const float *s = mid + ((size_t)(ty.first[i] - r0) * size + x) * 3;
			for (uint32_t j = 0; j < ty.cnt[i]; j++, s += (size_t)size * 3) {
				acc[0] += k[j] * s[0];
				acc[1] += k[j] * s[1];
				acc[2] += k[j] * s[2];
			}
			for (int c = 0; c < 3; c++)
				chw[c * plane + (size_t)i * size + x] =
					(clamp255(acc[c]) / 255.0f - mean[c]) / std[c];
		}
	}
	free(mid);
	taps_free(&tx);
	taps_free(&ty);
	return rc;
}
