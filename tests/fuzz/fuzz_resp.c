// libFuzzer target for server/resp: the request parser fed whole and in
// three reads at fuzzer-chosen offsets (the buffer moving between reads) must
// give the same commands, error and leftover; every result must respect the
// contract; error replies built from the input must stay one line.
// Build (from the repo root; not part of the CMake build):
//   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Iinclude -I. tests/fuzz/fuzz_resp.c server/resp_parse.c server/resp_write.c common/error.c -llmdb -lm -o build/fuzz/fuzz_resp
// Run (new inputs go to the first folder, seeds are read from the second):
//   mkdir -p build/fuzz/corpus_resp && build/fuzz/fuzz_resp -max_total_time=60 -max_len=4096 build/fuzz/corpus_resp tests/fuzz/corpus/resp
//
// Input: one control byte (bit 0: authenticated, bit 1: smallest limits,
// bit 2: RESP3 for the writer check), two split bytes, then the bytes the
// client sends.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/resp.h"

typedef struct outcome {
	uint64_t hash; /* FNV-1a over every command's arguments */
	size_t ncmd;
	int rc;
	char msg[VELA_ERR_MSG_MAX];
	size_t left; /* bytes never consumed */
} outcome_t;

typedef struct feed {
	resp_parser_t p;
	const resp_limits_t *lim;
	int authed;
	char *buf;
	size_t len;
	outcome_t out;
} feed_t;

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

static void check_cmd(feed_t *f, size_t used, resp_arg_t *argv, size_t argc)
{
	uint64_t max_args = f->lim ? f->lim->max_args : RESP_MAX_ARGS_DEFAULT;
	if (max_args < RESP_MAX_ARGS_MIN)
		max_args = RESP_MAX_ARGS_MIN;
	if (used == 0 || argc == 0 || argc > max_args || argv == NULL)
		abort();
	int mbulk = f->buf[0] == '*';
	if (mbulk && !f->authed && argc > RESP_UNAUTH_MAX_ARGS)
		abort();
	for (size_t i = 0; i < argc; i++) {
		const char *lo = mbulk ? f->buf : f->p.inline_buf;
		size_t n = mbulk ? used : f->p.inline_cap;
		if (argv[i].len > 0 && (argv[i].p < lo || argv[i].len > n ||
					argv[i].p - lo > (ptrdiff_t)(n - argv[i].len)))
			abort();
		if (mbulk && !f->authed && argv[i].len > RESP_UNAUTH_MAX_BULK)
			abort();
		f->out.hash = fnv(f->out.hash, &argv[i].len, sizeof(argv[i].len));
		if (argv[i].len > 0)
			f->out.hash = fnv(f->out.hash, argv[i].p, argv[i].len);
	}
	f->out.hash = fnv(f->out.hash, "|", 1);
	f->out.ncmd++;
}

static void drain(feed_t *f)
{
	while (f->out.rc == 0) {
		size_t used = 7, argc = 7;
		resp_arg_t *argv = NULL;
		vela_err_t err = {0};
		int rc = resp_parse(&f->p, f->buf, f->len, f->lim, f->authed, &used, &argv, &argc,
				    &err);
		if (used > f->len)
			abort();
		if (rc < 0) {
			if (rc != VELA_ESYNTAX || used != 0 || err.code != rc)
				abort();
			f->out.rc = rc;
			memcpy(f->out.msg, err.msg, sizeof(err.msg));
			return;
		}
		if (rc == 1)
			check_cmd(f, used, argv, argc);
		else if (rc != 0 || argc != 0 || argv != NULL)
			abort();
		if (used == 0)
			return;
		memmove(f->buf, f->buf + used, f->len - used);
		f->len -= used;
	}
}

/* One read: the buffer moves to a fresh allocation, as a realloc may. */
static void feed_read(feed_t *f, const uint8_t *in, size_t n)
{
	char *nb = malloc(f->len + n + 1);
	if (nb == NULL)
		abort();
	if (f->len > 0)
		memcpy(nb, f->buf, f->len);
	if (n > 0)
		memcpy(nb + f->len, in, n);
	free(f->buf);
	f->buf = nb;
	f->len += n;
	drain(f);
}

static void run(const uint8_t *in, size_t n, size_t a, size_t b, const resp_limits_t *lim,
		int authed, outcome_t *out)
{
	feed_t f;
	memset(&f, 0, sizeof(f));
	resp_parser_init(&f.p);
	f.lim = lim;
	f.authed = authed;
	f.out.hash = 0xcbf29ce484222325ull;
	feed_read(&f, in, a);
	feed_read(&f, in + a, b - a);
	feed_read(&f, in + b, n - b);
	f.out.left = f.len;
	*out = f.out;
	resp_parser_free(&f.p);
	free(f.buf);
}

/* Error and simple-string replies built from client bytes stay one line. */
static void check_writer(const uint8_t *in, size_t n, int proto)
{
	char *s = malloc(n + 1);
	if (s == NULL)
		abort();
	memcpy(s, in, n);
	s[n] = '\0';
	resp_out_t o;
	resp_out_init(&o, proto);
	resp_error(&o, s);
	resp_simple(&o, s);
	resp_bulk(&o, in, n);
	resp_verbatim(&o, s, n);
	size_t sl = strlen(s);
	if (o.oom || o.len < 2 * sl + 4 || o.p[0] != '-')
		abort();
	const char *end = memchr(o.p, '\n', o.len);
	if (end == NULL || end[-1] != '\r' || end[1] != '+')
		abort();
	if (memchr(o.p, '\r', (size_t)(end - 1 - o.p)) != NULL)
		abort();
	resp_out_consume(&o, (size_t)(end + 1 - o.p));
	if (o.p[0] != '+' || memcmp(o.p + 1 + sl, "\r\n", 2) != 0 ||
	    memchr(o.p, '\n', 1 + sl) != NULL || memchr(o.p, '\r', 1 + sl) != NULL)
		abort();
	resp_out_free(&o);
	free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 3)
		return 0;
	int ctl = data[0];
	const uint8_t *in = data + 3;
	size_t n = size - 3;
	size_t a = n ? data[1] % (n + 1) : 0, b = n ? data[2] % (n + 1) : 0;
	if (a > b) {
		size_t t = a;
		a = b;
		b = t;
	}
	resp_limits_t small = {RESP_MAX_BULK_MIN, RESP_MAX_ARGS_MIN};
	const resp_limits_t *lim = (ctl & 2) ? &small : NULL;
	int authed = ctl & 1;
	outcome_t whole, split;
	run(in, n, n, n, lim, authed, &whole);
	run(in, n, a, b, lim, authed, &split);
	if (whole.rc != split.rc || whole.ncmd != split.ncmd || whole.hash != split.hash ||
	    strcmp(whole.msg, split.msg) != 0 || (whole.rc == 0 && whole.left != split.left))
		abort();
	check_writer(in, n, (ctl & 4) ? 3 : 2);
	return 0;
}
