/* The request parser: a state machine over the caller's buffer that keeps
 * offsets only, so the buffer may move between calls, and remembers where it
 * stopped, so no byte is scanned twice however the request is split. Error
 * texts are Redis's (networking.c), because clients and tests match them. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/resp.h"

/* argv slots allocated when a multibulk count arrives: a client may claim
 * *1000000 and send nothing, so slots are added only as arguments arrive. */
#define RESP_ARGV_CHUNK 64u
/* argv slots kept between commands; a bigger array is released. */
#define RESP_ARGV_KEEP 1024u

enum resp_state {
	RESP_ST_START,     /* nothing of the next command read yet */
	RESP_ST_COUNT,     /* reading the `*<count>` line */
	RESP_ST_BULK_LEN,  /* reading a `$<len>` line */
	RESP_ST_BULK_DATA, /* waiting for bulk_len bytes and the CRLF */
	RESP_ST_INLINE,    /* waiting for the inline line's `\n` */
	RESP_ST_ERROR      /* a protocol error was reported; the connection closes */
};

/* Limits actually applied to one call. */
typedef struct resp_eff_limits {
	uint64_t max_bulk;
	uint64_t max_args;
} resp_eff_limits_t;

void resp_parser_init(resp_parser_t *p)
{
	memset(p, 0, sizeof(*p));
	p->state = RESP_ST_START;
}

void resp_parser_free(resp_parser_t *p)
{
	free(p->argv);
	free(p->inline_buf);
	resp_parser_init(p);
}

static resp_eff_limits_t resp_limits_effective(const resp_limits_t *lim)
{
	resp_eff_limits_t e = {RESP_MAX_BULK_DEFAULT, RESP_MAX_ARGS_DEFAULT};
	if (lim != NULL) {
		e.max_bulk = lim->max_bulk < RESP_MAX_BULK_MIN ? RESP_MAX_BULK_MIN
			     : lim->max_bulk > RESP_MAX_BULK_MAX ? RESP_MAX_BULK_MAX
								 : lim->max_bulk;
		e.max_args = lim->max_args < RESP_MAX_ARGS_MIN ? RESP_MAX_ARGS_MIN
			     : lim->max_args > RESP_MAX_ARGS_MAX ? RESP_MAX_ARGS_MAX
								 : lim->max_args;
	}
	return e;
}

/* Forget the command in progress (not the memory: argv may still be in use
 * by the caller until the next call). */
static void resp_parser_reset(resp_parser_t *p)
{
	p->state = RESP_ST_START;
	p->mbulk_left = 0;
	p->bulk_len = 0;
	p->pos = 0;
	p->scan = 0;
	p->argc = 0;
}

static int resp_fail(resp_parser_t *p, vela_err_t *err, int code, const char *msg)
{
	p->state = RESP_ST_ERROR;
	return vela_err_set(err, code, "%s", msg);
}

/* Strict decimal with Redis's string2ll rules: optional '-', then digits
 * without leading zeros ("0" alone is fine, "-0", "+1", " 1", "" are not),
 * within int64. Returns 1 and sets *out, or 0. */
static int resp_num_parse(const char *s, size_t n, int64_t *out)
{
	if (n == 1 && s[0] == '0') {
		*out = 0;
		return 1;
	}
	size_t i = (n > 0 && s[0] == '-') ? 1 : 0;
	if (i == n || n > 20 || s[i] < '1' || s[i] > '9')
		return 0;
	uint64_t v = 0;
	for (; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return 0;
		unsigned d = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return 0;
		v = v * 10 + d;
	}
	if (s[0] == '-') {
		if (v > (uint64_t)INT64_MAX + 1)
			return 0;
		*out = -(int64_t)(v - 1) - 1;
	} else {
		if (v > (uint64_t)INT64_MAX)
			return 0;
		*out = (int64_t)v;
	}
	return 1;
}

/* Find the terminator `term` of the line starting at p->pos, resuming the
 * search where the last call stopped (a line trickling in byte by byte is
 * scanned once). Returns 1 with *end its offset, 0 need more bytes, -1 the
 * line (bytes before `term`) is longer than RESP_MAX_INLINE. */
static int resp_line_find(resp_parser_t *p, const char *buf, size_t len, char term, size_t *end)
{
	size_t limit = p->pos + RESP_MAX_INLINE + 1; /* a terminator here or later: too long */
	size_t stop = len < limit ? len : limit;
	if (p->scan < p->pos)
		p->scan = p->pos;
	if (p->scan < stop) {
		const char *hit = memchr(buf + p->scan, term, stop - p->scan);
		if (hit != NULL) {
			*end = (size_t)(hit - buf);
			p->scan = *end; /* found again at once if the byte after CR is missing */
			return 1;
		}
		p->scan = stop;
	}
	return len >= limit ? -1 : 0;
}

/* Make room for one more argument. `want` is how many the command will have
 * at most, so the array never grows past it. */
static int resp_argv_grow(resp_parser_t *p, size_t want)
{
	if (p->argc < p->cap)
		return 0;
	size_t cap = p->cap < RESP_ARGV_CHUNK ? RESP_ARGV_CHUNK : p->cap * 2;
	if (cap > want)
		cap = want > p->argc ? want : p->argc + 1;
	if (cap > SIZE_MAX / sizeof(*p->argv))
		return VELA_ENOMEM;
	resp_arg_t *a = realloc(p->argv, cap * sizeof(*a));
	if (a == NULL)
		return VELA_ENOMEM;
	p->argv = a;
	p->cap = cap;
	return 0;
}

/* Record an argument as an offset (into the caller's buffer or inline_buf). */
static void resp_argv_push(resp_parser_t *p, size_t off, size_t len)
{
	p->argv[p->argc].p = (const char *)(uintptr_t)off;
	p->argv[p->argc].len = len;
	p->argc++;
}

/* The command is complete: turn offsets into pointers from `base`. */
static int resp_finish(resp_parser_t *p, const char *base, size_t used, size_t *consumed,
		       resp_arg_t **argv, size_t *argc)
{
	for (size_t i = 0; i < p->argc; i++)
		p->argv[i].p = base + (uintptr_t)p->argv[i].p;
	*consumed = used;
	*argv = p->argv;
	*argc = p->argc;
	resp_parser_reset(p);
	return 1;
}

/* Nothing to run (a `*0` or a blank inline line): let the caller drop it. */
static int resp_skip(resp_parser_t *p, size_t used, size_t *consumed)
{
	resp_parser_reset(p);
	*consumed = used;
	return 0;
}

/* ---------------------------------------------------------- multibulk */

static int resp_count_parse(resp_parser_t *p, const char *buf, size_t len,
			    const resp_eff_limits_t *lim, int authed, size_t *consumed,
			    vela_err_t *err)
{
	size_t end;
	int f = resp_line_find(p, buf, len, '\r', &end);
	if (f < 0)
		return resp_fail(p, err, VELA_ESYNTAX, "Protocol error: too big mbulk count string");
	if (f == 0 || end + 1 >= len)
		return 0;
	int64_t n;
	if (!resp_num_parse(buf + p->pos + 1, end - p->pos - 1, &n) || n > INT32_MAX ||
	    (n > 0 && (uint64_t)n > lim->max_args))
		return resp_fail(p, err, VELA_ESYNTAX, "Protocol error: invalid multibulk length");
	if (n > RESP_UNAUTH_MAX_ARGS && !authed)
		return resp_fail(p, err, VELA_ESYNTAX,
				 "Protocol error: unauthenticated multibulk length");
	if (n <= 0)
		return resp_skip(p, end + 2, consumed);
	p->mbulk_left = n;
	p->pos = end + 2;
	p->state = RESP_ST_BULK_LEN;
	return 0;
}

static int resp_bulk_len_parse(resp_parser_t *p, const char *buf, size_t len,
			       const resp_eff_limits_t *lim, int authed, vela_err_t *err)
{
	size_t end;
	int f = resp_line_find(p, buf, len, '\r', &end);
	if (f < 0)
		return resp_fail(p, err, VELA_ESYNTAX, "Protocol error: too big bulk count string");
	if (f == 0 || end + 1 >= len)
		return 0;
	unsigned char c = (unsigned char)buf[p->pos];
	if (c != '$') {
		/* Redis sends the byte raw; keep the message one C string and
		 * one line (resp_error would map CR/LF to spaces anyway). */
		if (c == '\0' || c == '\r' || c == '\n')
			c = ' ';
		p->state = RESP_ST_ERROR;
		return vela_err_set(err, VELA_ESYNTAX, "Protocol error: expected '$', got '%c'", c);
	}
	int64_t n;
	if (!resp_num_parse(buf + p->pos + 1, end - p->pos - 1, &n) || n < 0 ||
	    (uint64_t)n > lim->max_bulk)
		return resp_fail(p, err, VELA_ESYNTAX, "Protocol error: invalid bulk length");
	if (n > RESP_UNAUTH_MAX_BULK && !authed)
		return resp_fail(p, err, VELA_ESYNTAX, "Protocol error: unauthenticated bulk length");
	p->bulk_len = n;
	p->pos = end + 2;
	p->state = RESP_ST_BULK_DATA;
	return 0;
}

static int resp_bulk_data_parse(resp_parser_t *p, const char *buf, size_t len, size_t *consumed,
				resp_arg_t **argv, size_t *argc, vela_err_t *err)
{
	/* bulk_len <= RESP_MAX_BULK_MAX (2^32), so the sum cannot wrap a 64-bit size_t. */
	uint64_t need = (uint64_t)p->bulk_len + 2;
	if ((uint64_t)(len - p->pos) < need)
		return 0;
	if (resp_argv_grow(p, p->argc + (size_t)p->mbulk_left) < 0)
		return resp_fail(p, err, VELA_ENOMEM, "Out of memory reading the request");
	resp_argv_push(p, p->pos, (size_t)p->bulk_len);
	p->pos += (size_t)need;
	if (--p->mbulk_left == 0)
		return resp_finish(p, buf, p->pos, consumed, argv, argc);
	p->state = RESP_ST_BULK_LEN;
	return 0;
}

/* -------------------------------------------------------------- inline */

/* Ends an unquoted token (sdssplitargs's list: not \v or \f). */
static int resp_is_sep(unsigned char c)
{
	return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

/* isspace() in the C locale: skipped between tokens, required after a quote. */
static int resp_is_space(unsigned char c)
{
	return c == ' ' || (c >= '\t' && c <= '\r');
}

static int resp_hex_val(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static char resp_unescape(unsigned char c)
{
	switch (c) {
	case 'n': return '\n';
	case 'r': return '\r';
	case 't': return '\t';
	case 'b': return '\b';
	case 'a': return '\a';
	default: return (char)c; /* \\, \" and any other byte stand for themselves */
	}
}

/* Inside "...": returns 1 at the closing quote, 0 to go on, -1 unbalanced. */
static int resp_dquote_step(const char *s, size_t n, size_t *ip, char *dst, size_t *op)
{
	size_t i = *ip;
	unsigned char c = (unsigned char)s[i];
	if (c == '\\' && i + 3 < n && s[i + 1] == 'x' && resp_hex_val((unsigned char)s[i + 2]) >= 0 &&
	    resp_hex_val((unsigned char)s[i + 3]) >= 0) {
		dst[(*op)++] = (char)(resp_hex_val((unsigned char)s[i + 2]) * 16 +
				      resp_hex_val((unsigned char)s[i + 3]));
		*ip = i + 4;
	} else if (c == '\\' && i + 1 < n) {
		dst[(*op)++] = resp_unescape((unsigned char)s[i + 1]);
		*ip = i + 2;
	} else if (c == '"') {
		*ip = i + 1;
		return (i + 1 < n && !resp_is_space((unsigned char)s[i + 1])) ? -1 : 1;
	} else {
		dst[(*op)++] = (char)c;
		*ip = i + 1;
	}
	return 0;
}

/* Inside '...': only \' is an escape. Same returns as resp_dquote_step. */
static int resp_squote_step(const char *s, size_t n, size_t *ip, char *dst, size_t *op)
{
	size_t i = *ip;
	if (s[i] == '\\' && i + 1 < n && s[i + 1] == '\'') {
		dst[(*op)++] = '\'';
		*ip = i + 2;
	} else if (s[i] == '\'') {
		*ip = i + 1;
		return (i + 1 < n && !resp_is_space((unsigned char)s[i + 1])) ? -1 : 1;
	} else {
		dst[(*op)++] = s[i];
		*ip = i + 1;
	}
	return 0;
}

/* One token starting at s[*ip] (not a space), unescaped to dst[*op...].
 * A token writes at most as many bytes as it reads. Returns 0 or -1
 * (unbalanced quotes). */
static int resp_token_split(const char *s, size_t n, size_t *ip, char *dst, size_t *op)
{
	int quote = 0;
	while (*ip < n) {
		unsigned char c = (unsigned char)s[*ip];
		int r;
		if (quote == '"')
			r = resp_dquote_step(s, n, ip, dst, op);
		else if (quote == '\'')
			r = resp_squote_step(s, n, ip, dst, op);
		else if (resp_is_sep(c))
			return 0;
		else if (c == '"' || c == '\'') { /* a quote may open mid-token: a"b c" is `ab c` */
			quote = c;
			(*ip)++;
			continue;
		} else {
			dst[(*op)++] = (char)c;
			(*ip)++;
			continue;
		}
		if (r < 0)
			return -1;
		if (r > 0)
			return 0;
	}
	return quote ? -1 : 0;
}

/* Split line s[0..n) into inline_buf (large enough: output never exceeds input). */
static int resp_inline_split(resp_parser_t *p, const char *s, size_t n,
			     const resp_eff_limits_t *lim, vela_err_t *err)
{
	size_t i = 0, o = 0;
	for (;;) {
		while (i < n && resp_is_space((unsigned char)s[i]))
			i++;
		if (i == n)
			return 0;
		size_t start = o;
		if (resp_token_split(s, n, &i, p->inline_buf, &o) < 0)
			return resp_fail(p, err, VELA_ESYNTAX,
					 "Protocol error: unbalanced quotes in request");
		if (p->argc >= lim->max_args)
			return resp_fail(p, err, VELA_ESYNTAX,
					 "Protocol error: too many arguments in inline request");
		if (resp_argv_grow(p, SIZE_MAX) < 0)
			return resp_fail(p, err, VELA_ENOMEM, "Out of memory reading the request");
		resp_argv_push(p, start, o - start);
	}
}

static int resp_inline_parse(resp_parser_t *p, const char *buf, size_t len,
			     const resp_eff_limits_t *lim, size_t *consumed, resp_arg_t **argv,
			     size_t *argc, vela_err_t *err)
{
	size_t end;
	int f = resp_line_find(p, buf, len, '\n', &end);
	if (f < 0)
		return resp_fail(p, err, VELA_ESYNTAX, "Protocol error: too big inline request");
	if (f == 0)
		return 0;
	size_t n = end - p->pos;
	if (n > 0 && buf[end - 1] == '\r')
		n--;
	size_t need = n > 0 ? n : 1;
	if (p->inline_cap < need) {
		char *b = realloc(p->inline_buf, need);
		if (b == NULL)
			return resp_fail(p, err, VELA_ENOMEM, "Out of memory reading the request");
		p->inline_buf = b;
		p->inline_cap = need;
	}
	int rc = resp_inline_split(p, buf + p->pos, n, lim, err);
	if (rc < 0)
		return rc;
	if (p->argc == 0)
		return resp_skip(p, end + 1, consumed);
	return resp_finish(p, p->inline_buf, end + 1, consumed, argv, argc);
}

/* ---------------------------------------------------------- the driver */

/* Release a big argv left by an earlier command (no longer in use now). */
static void resp_argv_trim(resp_parser_t *p)
{
	if (p->state == RESP_ST_START && p->cap > RESP_ARGV_KEEP) {
		free(p->argv);
		p->argv = NULL;
		p->cap = 0;
	}
}

int resp_parse(resp_parser_t *p, const char *buf, size_t len, const resp_limits_t *lim, int authed,
	       size_t *consumed, resp_arg_t **argv, size_t *argc, vela_err_t *err)
{
	*consumed = 0;
	*argv = NULL;
	*argc = 0;
	if (p->state == RESP_ST_ERROR)
		return vela_err_set(err, VELA_ESYNTAX, "Protocol error: connection already failed");
	if (len < p->pos)
		return resp_fail(p, err, VELA_EINVAL, "Request buffer shrank while a command was incomplete");
	resp_argv_trim(p);
	resp_eff_limits_t e = resp_limits_effective(lim);
	for (;;) {
		size_t before = p->pos;
		int state = p->state;
		int rc;
		switch (p->state) {
		case RESP_ST_START:
			if (len == 0)
				return 0;
			p->state = buf[0] == '*' ? RESP_ST_COUNT : RESP_ST_INLINE;
			continue;
		case RESP_ST_COUNT:
			rc = resp_count_parse(p, buf, len, &e, authed, consumed, err);
			break;
		case RESP_ST_BULK_LEN:
			rc = resp_bulk_len_parse(p, buf, len, &e, authed, err);
			break;
		case RESP_ST_BULK_DATA:
			rc = resp_bulk_data_parse(p, buf, len, consumed, argv, argc, err);
			break;
		case RESP_ST_INLINE:
			rc = resp_inline_parse(p, buf, len, &e, consumed, argv, argc, err);
			break;
		default:
			return resp_fail(p, err, VELA_EINVAL, "Request parser in a bad state");
		}
		/* Stop on a result, a skip, or when a state made no progress. */
		if (rc != 0 || *consumed > 0 || (p->pos == before && p->state == state))
			return rc;
	}
}
