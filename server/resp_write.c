/* The reply writer: RESP2 and RESP3 encodings into a growable buffer. Every
 * size computation is overflow-checked; the first failed append sets `oom`
 * and silences the buffer, so a half-written reply is never followed by
 * more bytes (the server closes the connection). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/resp.h"

/* First allocation, and the size above which an emptied buffer is freed. */
#define RESP_OUT_INITIAL 256u
#define RESP_OUT_KEEP (64u * 1024u)
/* Room for a type byte, a 64-bit decimal and CRLF. */
#define RESP_HDR_MAX 32u
/* resp_errorf formats into the stack first; longer messages go to the heap. */
#define RESP_ERRORF_STACK 256u

void resp_out_init(resp_out_t *o, int proto)
{
	memset(o, 0, sizeof(*o));
	o->proto = proto == 3 ? 3 : 2;
}

void resp_out_free(resp_out_t *o)
{
	free(o->p);
	o->p = NULL;
	o->len = o->cap = 0;
}

void resp_out_consume(resp_out_t *o, size_t n)
{
	if (n >= o->len) {
		o->len = 0;
		if (o->cap > RESP_OUT_KEEP)
			resp_out_free(o);
		return;
	}
	memmove(o->p, o->p + n, o->len - n);
	o->len -= n;
}

/* Make room for n more bytes; returns a pointer to them or NULL (oom set). */
static char *resp_out_reserve(resp_out_t *o, size_t n)
{
	if (o->oom)
		return NULL;
	if (n > SIZE_MAX - o->len) {
		o->oom = 1;
		return NULL;
	}
	size_t need = o->len + n;
	if (need > o->cap) {
		size_t cap = o->cap ? o->cap : RESP_OUT_INITIAL;
		while (cap < need)
			cap = cap > SIZE_MAX / 2 ? need : cap * 2;
		char *p = realloc(o->p, cap);
		if (p == NULL) {
			o->oom = 1;
			return NULL;
		}
		o->p = p;
		o->cap = cap;
	}
	return o->p + o->len;
}

void resp_raw(resp_out_t *o, const void *p, size_t n)
{
	if (n == 0)
		return; /* p may be NULL */
	char *d = resp_out_reserve(o, n);
	if (d == NULL)
		return;
	if (n > 0)
		memcpy(d, p, n);
	o->len += n;
}

/* Append bytes with CR and LF turned into spaces (simple strings and errors
 * are one line). */
static void resp_line_append(resp_out_t *o, const char *s, size_t n)
{
	if (n == 0)
		return;
	char *d = resp_out_reserve(o, n);
	if (d == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		d[i] = (s[i] == '\r' || s[i] == '\n') ? ' ' : s[i];
	o->len += n;
}

/* `<type><v>\r\n` for an aggregate header or an integer. */
static void resp_hdr_signed(resp_out_t *o, char type, long long v)
{
	char b[RESP_HDR_MAX];
	int n = snprintf(b, sizeof(b), "%c%lld\r\n", type, v);
	resp_raw(o, b, (size_t)n);
}

static void resp_hdr(resp_out_t *o, char type, size_t v)
{
	char b[RESP_HDR_MAX];
	int n = snprintf(b, sizeof(b), "%c%zu\r\n", type, v);
	resp_raw(o, b, (size_t)n);
}

void resp_simple(resp_out_t *o, const char *s)
{
	resp_raw(o, "+", 1);
	resp_line_append(o, s, strlen(s));
	resp_raw(o, "\r\n", 2);
}

/* Does msg start with an error code word: [A-Z]{3,} then a space? */
static int resp_has_code(const char *msg)
{
	size_t i = 0;
	while (msg[i] >= 'A' && msg[i] <= 'Z')
		i++;
	return i >= 3 && msg[i] == ' ';
}

void resp_error(resp_out_t *o, const char *msg)
{
	if (resp_has_code(msg))
		resp_raw(o, "-", 1);
	else if (msg[0] != '-')
		resp_raw(o, "-ERR ", 5);
	resp_line_append(o, msg, strlen(msg));
	resp_raw(o, "\r\n", 2);
}

void resp_errorf(resp_out_t *o, const char *fmt, ...)
{
	char stack[RESP_ERRORF_STACK];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(stack, sizeof(stack), fmt, ap);
	va_end(ap);
	if (n < 0) {
		resp_error(o, "ERR error message could not be formatted");
		return;
	}
	if ((size_t)n < sizeof(stack)) {
		resp_error(o, stack);
		return;
	}
	char *heap = malloc((size_t)n + 1);
	if (heap == NULL) {
		o->oom = 1;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(heap, (size_t)n + 1, fmt, ap);
	va_end(ap);
	resp_error(o, heap);
	free(heap);
}

void resp_int(resp_out_t *o, int64_t v)
{
	resp_hdr_signed(o, ':', (long long)v);
}

void resp_bulk(resp_out_t *o, const void *p, size_t n)
{
	resp_hdr(o, '$', n);
	resp_raw(o, p, n);
	resp_raw(o, "\r\n", 2);
}

void resp_bulk_str(resp_out_t *o, const char *s)
{
	if (s == NULL)
		resp_null(o);
	else
		resp_bulk(o, s, strlen(s));
}

void resp_null(resp_out_t *o)
{
	if (o->proto == 3)
		resp_raw(o, "_\r\n", 3);
	else
		resp_raw(o, "$-1\r\n", 5);
}

void resp_null_array(resp_out_t *o)
{
	if (o->proto == 3)
		resp_raw(o, "_\r\n", 3);
	else
		resp_raw(o, "*-1\r\n", 5);
}

void resp_array(resp_out_t *o, size_t n)
{
	resp_hdr(o, '*', n);
}

void resp_map(resp_out_t *o, size_t pairs)
{
	if (o->proto == 3) {
		resp_hdr(o, '%', pairs);
	} else if (pairs > SIZE_MAX / 2) {
		o->oom = 1; /* no client could hold that many elements anyway */
	} else {
		resp_hdr(o, '*', pairs * 2);
	}
}

void resp_set(resp_out_t *o, size_t n)
{
	resp_hdr(o, o->proto == 3 ? '~' : '*', n);
}

/* Redis's spelling: "%.17g", except inf, -inf and nan (glibc could print "-nan"). */
static int resp_double_fmt(char *b, size_t cap, double v)
{
	if (isnan(v))
		return snprintf(b, cap, "nan");
	if (isinf(v))
		return snprintf(b, cap, v > 0 ? "inf" : "-inf");
	return snprintf(b, cap, "%.17g", v);
}

void resp_double(resp_out_t *o, double v)
{
	char b[RESP_HDR_MAX + 8];
	int n = resp_double_fmt(b, sizeof(b), v);
	if (o->proto != 3) {
		resp_bulk(o, b, (size_t)n);
		return;
	}
	resp_raw(o, ",", 1);
	resp_raw(o, b, (size_t)n);
	resp_raw(o, "\r\n", 2);
}

void resp_bool(resp_out_t *o, int v)
{
	if (o->proto == 3)
		resp_raw(o, v ? "#t\r\n" : "#f\r\n", 4);
	else
		resp_raw(o, v ? ":1\r\n" : ":0\r\n", 4);
}

void resp_verbatim(resp_out_t *o, const char *p, size_t n)
{
	if (o->proto != 3) {
		resp_bulk(o, p, n);
		return;
	}
	if (n > SIZE_MAX - 4) {
		o->oom = 1;
		return;
	}
	resp_hdr(o, '=', n + 4);
	resp_raw(o, "txt:", 4);
	resp_raw(o, p, n);
	resp_raw(o, "\r\n", 2);
}
