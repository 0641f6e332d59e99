/* Unit tests for server/resp: the request parser (multibulk, inline,
 * pipelines, binary-safe bulks, every Redis protocol error with its exact
 * text, pre-AUTH limits, skipped empty commands, bounded allocation) fed
 * whole and split at every byte offset into a buffer that moves between
 * reads; and the reply writer, byte-exact in RESP2 and RESP3. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/resp.h"

/* ------------------------------------------------------- a simulated client */

/* A connection's query buffer: bytes arrive in reads, every read moves the
 * buffer to a fresh allocation (so a pointer kept across calls trips ASan),
 * every complete command is logged, consumed bytes are dropped. */
typedef struct sim {
	resp_parser_t p;
	const resp_limits_t *lim;
	int authed;
	char *buf;
	size_t len;
	char *log; /* "argc|len:bytes|len:bytes\n" per command */
	size_t log_len, log_cap;
	size_t ncmd;
	int rc;
	char msg[VELA_ERR_MSG_MAX];
} sim_t;

static void sim_init(sim_t *s, const resp_limits_t *lim, int authed)
{
	memset(s, 0, sizeof(*s));
	resp_parser_init(&s->p);
	s->lim = lim;
	s->authed = authed;
}

static void sim_free(sim_t *s)
{
	resp_parser_free(&s->p);
	free(s->buf);
	free(s->log);
}

static void sim_log(sim_t *s, const void *p, size_t n)
{
	if (s->log_len + n > s->log_cap) {
		s->log_cap = (s->log_len + n) * 2 + 64;
		s->log = realloc(s->log, s->log_cap);
		cr_assert_not_null(s->log);
	}
	if (n > 0)
		memcpy(s->log + s->log_len, p, n);
	s->log_len += n;
}

static void sim_log_cmd(sim_t *s, const resp_arg_t *argv, size_t argc)
{
	char num[32];
	sim_log(s, num, (size_t)snprintf(num, sizeof(num), "%zu", argc));
	for (size_t i = 0; i < argc; i++) {
		sim_log(s, num, (size_t)snprintf(num, sizeof(num), "|%zu:", argv[i].len));
		sim_log(s, argv[i].p, argv[i].len);
	}
	sim_log(s, "\n", 1);
}

/* argv must lie in the caller's buffer (multibulk) or the parser's (inline). */
static void sim_check_argv(sim_t *s, const resp_arg_t *argv, size_t argc)
{
	int in_buf = s->len > 0 && s->buf[0] == '*';
	const char *lo = in_buf ? s->buf : s->p.inline_buf;
	size_t n = in_buf ? s->len : s->p.inline_cap;
	for (size_t i = 0; i < argc; i++) {
		if (argv[i].len == 0)
			continue;
		cr_assert(argv[i].p >= lo && argv[i].p + argv[i].len <= lo + n,
			  "argv[%zu] outside its buffer", i);
	}
}

static void sim_drain(sim_t *s)
{
	while (s->rc == 0) {
		size_t used = 99, argc = 99;
		resp_arg_t *argv = NULL;
		vela_err_t err = {0};
		int rc = resp_parse(&s->p, s->buf, s->len, s->lim, s->authed, &used, &argv, &argc,
				    &err);
		if (rc < 0) {
			s->rc = rc;
			cr_assert_eq(used, 0);
			snprintf(s->msg, sizeof(s->msg), "%s", err.msg);
			return;
		}
		cr_assert_leq(used, s->len);
		if (rc == 1) {
			cr_assert_gt(used, 0);
			cr_assert_gt(argc, 0);
			sim_check_argv(s, argv, argc);
			sim_log_cmd(s, argv, argc);
			s->ncmd++;
		} else {
			cr_assert_eq(argc, 0);
			if (used == 0)
				return;
		}
		memmove(s->buf, s->buf + used, s->len - used);
		s->len -= used;
	}
}

static void sim_read(sim_t *s, const char *in, size_t n)
{
	char *nb = malloc(s->len + n + 1);
	cr_assert_not_null(nb);
	if (s->len > 0)
		memcpy(nb, s->buf, s->len);
	if (n > 0)
		memcpy(nb + s->len, in, n);
	free(s->buf);
	s->buf = nb;
	s->len += n;
	sim_drain(s);
}

static void sim_same(const sim_t *a, const sim_t *b, const char *what, size_t k)
{
	cr_assert_eq(a->rc, b->rc, "%s %zu: rc %d vs %d", what, k, a->rc, b->rc);
	cr_assert_str_eq(a->msg, b->msg, "%s %zu", what, k);
	cr_assert_eq(a->ncmd, b->ncmd, "%s %zu: %zu vs %zu commands", what, k, a->ncmd, b->ncmd);
	cr_assert_eq(a->log_len, b->log_len, "%s %zu", what, k);
	cr_assert(a->log_len == 0 || memcmp(a->log, b->log, a->log_len) == 0, "%s %zu", what, k);
	if (a->rc == 0)
		cr_assert_eq(a->len, b->len, "%s %zu: leftover", what, k);
}

/* Feed `in` whole into *ref, then check that every two-piece split, the
 * byte-at-a-time feed and (for short inputs) every three-piece split give
 * exactly the same commands, error and leftover. */
static void check_splits(const char *in, size_t n, const resp_limits_t *lim, int authed, sim_t *ref)
{
	sim_init(ref, lim, authed);
	sim_read(ref, in, n);
	for (size_t k = 0; k <= n; k++) {
		sim_t s;
		sim_init(&s, lim, authed);
		sim_read(&s, in, k);
		sim_read(&s, in + k, n - k);
		sim_same(ref, &s, "split at", k);
		sim_free(&s);
	}
	sim_t s;
	sim_init(&s, lim, authed);
	for (size_t k = 0; k < n; k++)
		sim_read(&s, in + k, 1);
	sim_same(ref, &s, "bytewise", n);
	sim_free(&s);
	if (n > 80)
		return;
	for (size_t i = 0; i <= n; i++)
		for (size_t j = i; j <= n; j++) {
			sim_init(&s, lim, authed);
			sim_read(&s, in, i);
			sim_read(&s, in + i, j - i);
			sim_read(&s, in + j, n - j);
			sim_same(ref, &s, "three pieces at", i * 1000 + j);
			sim_free(&s);
		}
}

/* Parse `in` (split every way) and expect the log `want` and no error. */
static void expect_cmds_n(const char *in, size_t n, const char *want, size_t wn)
{
	sim_t ref;
	check_splits(in, n, NULL, 1, &ref);
	cr_assert_eq(ref.rc, 0, "unexpected error: %s", ref.msg);
	cr_assert_eq(ref.log_len, wn, "log: %.*s", (int)ref.log_len, ref.log);
	cr_assert(memcmp(ref.log, want, ref.log_len) == 0, "log: %.*s", (int)ref.log_len, ref.log);
	sim_free(&ref);
}

/* `want` is a string literal (it may hold NUL bytes). */
#define expect_cmds_(in, n, want) expect_cmds_n(in, n, want, sizeof(want) - 1)
#define expect_cmds(...) expect_cmds_(__VA_ARGS__)

/* Parse `in` (split every way) and expect the protocol error `msg`. */
static void expect_err_lim(const char *in, size_t n, const resp_limits_t *lim, int authed,
			   const char *msg)
{
	sim_t ref;
	check_splits(in, n, lim, authed, &ref);
	cr_assert_eq(ref.rc, VELA_ESYNTAX, "input %.*s: rc %d", (int)(n > 40 ? 40 : n), in, ref.rc);
	cr_assert_str_eq(ref.msg, msg);
	sim_free(&ref);
}

static void expect_err(const char *in, const char *msg)
{
	expect_err_lim(in, strlen(in), NULL, 1, msg);
}

#define S(lit) lit, sizeof(lit) - 1

/* ------------------------------------------------------------ multibulk */

Test(resp_parse, multibulk_basic)
{
	expect_cmds(S("*3\r\n$3\r\nSET\r\n$1\r\na\r\n$0\r\n\r\n"), "3|3:SET|1:a|0:\n");
	expect_cmds(S("*1\r\n$4\r\nPING\r\n"), "1|4:PING\n");
}

Test(resp_parse, argv_points_into_caller_buffer)
{
	const char in[] = "*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n";
	resp_parser_t p;
	resp_parser_init(&p);
	size_t used, argc;
	resp_arg_t *argv;
	cr_assert_eq(resp_parse(&p, in, sizeof(in) - 1, NULL, 1, &used, &argv, &argc, NULL), 1);
	cr_assert_eq(used, sizeof(in) - 1);
	cr_assert_eq(argc, 2);
	cr_assert_eq(argv[0].p, in + 8);
	cr_assert_eq(argv[1].p, in + 18);
	cr_assert_eq(argv[1].len, 2);
	resp_parser_free(&p);
}

Test(resp_parse, binary_safe)
{
	static const char in[] = "*2\r\n$3\r\n\0\r\n\r\n$6\r\n*1\r\n$\0\r\n";
	expect_cmds(in, sizeof(in) - 1, "2|3:\0\r\n|6:*1\r\n$\0\n");
}

Test(resp_parse, pipeline)
{
	/* 300 commands of three kinds in one buffer: multibulk, inline, skipped. */
	size_t cap = 64 * 1024, n = 0, wn = 0;
	char *in = malloc(cap), *want = malloc(cap);
	for (int i = 0; i < 300; i++) {
		char key[16];
		int kl = snprintf(key, sizeof(key), "k%d", i);
		switch (i % 3) {
		case 0:
			n += (size_t)snprintf(in + n, cap - n, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", kl, key);
			wn += (size_t)snprintf(want + wn, cap - wn, "2|3:GET|%d:%s\n", kl, key);
			break;
		case 1:
			n += (size_t)snprintf(in + n, cap - n, "GET %s\r\n", key);
			wn += (size_t)snprintf(want + wn, cap - wn, "2|3:GET|%d:%s\n", kl, key);
			break;
		default:
			n += (size_t)snprintf(in + n, cap - n, "*0\r\n\r\n*-1\r\n");
			break;
		}
	}
	sim_t s;
	sim_init(&s, NULL, 1);
	sim_read(&s, in, n);
	cr_assert_eq(s.rc, 0);
	cr_assert_eq(s.ncmd, 200);
	cr_assert_eq(s.log_len, wn);
	cr_assert(memcmp(s.log, want, wn) == 0);
	cr_assert_eq(s.len, 0);
	sim_free(&s);
	/* The same pipeline in 7-byte reads. */
	sim_init(&s, NULL, 1);
	for (size_t k = 0; k < n; k += 7)
		sim_read(&s, in + k, n - k < 7 ? n - k : 7);
	cr_assert_eq(s.ncmd, 200);
	cr_assert(memcmp(s.log, want, wn) == 0);
	sim_free(&s);
	free(in);
	free(want);
}

Test(resp_parse, pipeline_splits)
{
	expect_cmds(S("*1\r\n$4\r\nPING\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$0\r\n\r\n*0\r\nset 'a b' c\n"),
		    "1|4:PING\n1|4:PING\n2|4:ECHO|0:\n3|3:set|3:a b|1:c\n");
}

Test(resp_parse, zero_and_negative_counts_skipped)
{
	resp_parser_t p;
	resp_parser_init(&p);
	size_t used, argc;
	resp_arg_t *argv;
	cr_assert_eq(resp_parse(&p, S("*0\r\n"), NULL, 0, &used, &argv, &argc, NULL), 0);
	cr_assert_eq(used, 4);
	cr_assert_eq(resp_parse(&p, S("*-1\r\n"), NULL, 0, &used, &argv, &argc, NULL), 0);
	cr_assert_eq(used, 5);
	cr_assert_eq(resp_parse(&p, S("*-10\r\n*1"), NULL, 0, &used, &argv, &argc, NULL), 0);
	cr_assert_eq(used, 6);
	cr_assert_eq(resp_parse(&p, S("*0\r"), NULL, 0, &used, &argv, &argc, NULL), 0);
	cr_assert_eq(used, 0);
	resp_parser_free(&p);
	expect_cmds(S("*0\r\n*-1\r\n*1\r\n$1\r\nx\r\n"), "1|1:x\n");
}

Test(resp_parse, byte_after_cr_is_not_checked)
{
	/* Like Redis: the parser skips two bytes after a count or a bulk. */
	expect_cmds(S("*1\rX$2\rYab\r\n"), "1|2:ab\n");
	expect_cmds(S("*1\r\n$2\r\nabXY"), "1|2:ab\n");
}

/* ----------------------------------------------------------------- errors */

Test(resp_parse, multibulk_length_errors)
{
	const char *bad[] = {"*abc\r\n", "*\r\n", "*+1\r\n", "*01\r\n", "*1 \r\n", "* 1\r\n",
			     "*-0\r\n", "*2147483648\r\n", "*99999999999999999999\r\n",
			     "*1\n\r\n", "*1x\r\n"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_err(bad[i], "Protocol error: invalid multibulk length");
	/* INT_MAX itself passes the count check when the limit allows it. */
	resp_limits_t big = {RESP_MAX_BULK_DEFAULT, RESP_MAX_ARGS_MAX};
	sim_t s;
	sim_init(&s, &big, 1);
	sim_read(&s, S("*2147483647\r\n$1\r\na\r\n"));
	cr_assert_eq(s.rc, 0);
	sim_free(&s);
}

Test(resp_parse, expected_dollar)
{
	expect_err("*1\r\nx3\r\nfoo\r\n", "Protocol error: expected '$', got 'x'");
	expect_err("*2\r\n$1\r\na\r\n:1\r\n", "Protocol error: expected '$', got ':'");
	/* An empty line: Redis would put the CR itself in the message. */
	expect_err("*1\r\n\r\n", "Protocol error: expected '$', got ' '");
	static const char nul[] = "*1\r\n\0\r\n";
	expect_err_lim(nul, sizeof(nul) - 1, NULL, 1, "Protocol error: expected '$', got ' '");
}

Test(resp_parse, bulk_length_errors)
{
	const char *bad[] = {"*1\r\n$-1\r\n", "*1\r\n$\r\n",  "*1\r\n$abc\r\n", "*1\r\n$01\r\n",
			     "*1\r\n$+1\r\n", "*1\r\n$ 1\r\n", "*1\r\n$-0\r\n",
			     "*1\r\n$99999999999999999999999\r\n", "*1\r\n$536870913\r\n"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_err(bad[i], "Protocol error: invalid bulk length");
	/* proto-max-bulk-len: the limit itself is allowed, one more is not. */
	resp_limits_t lim = {RESP_MAX_BULK_MIN, RESP_MAX_ARGS_DEFAULT};
	expect_err_lim(S("*1\r\n$1048577\r\n"), &lim, 1, "Protocol error: invalid bulk length");
	sim_t s;
	sim_init(&s, &lim, 1);
	sim_read(&s, S("*1\r\n$1048576\r\n"));
	cr_assert_eq(s.rc, 0);
	sim_free(&s);
}

static char *repeat(char c, size_t n, const char *prefix, const char *suffix)
{
	size_t pl = strlen(prefix), sl = strlen(suffix);
	char *s = malloc(pl + n + sl + 1);
	memcpy(s, prefix, pl);
	memset(s + pl, c, n);
	memcpy(s + pl + n, suffix, sl + 1);
	return s;
}

/* Long lines are checked one way only (check_splits is quadratic). */
static void expect_err_whole(const char *in, int authed, const char *msg)
{
	sim_t s;
	sim_init(&s, NULL, authed);
	sim_read(&s, in, strlen(in));
	cr_assert_eq(s.rc, VELA_ESYNTAX);
	cr_assert_str_eq(s.msg, msg);
	sim_free(&s);
}

Test(resp_parse, too_big_count_strings)
{
	/* A line of RESP_MAX_INLINE bytes (with its '*' or '$') may wait for its
	 * CR; one more byte is an error, found or not. */
	char *in = repeat('1', RESP_MAX_INLINE, "*", "");
	expect_err_whole(in, 1, "Protocol error: too big mbulk count string");
	free(in);
	in = repeat('1', RESP_MAX_INLINE - 1, "*", "");
	sim_t s;
	sim_init(&s, NULL, 1);
	sim_read(&s, in, strlen(in));
	cr_assert_eq(s.rc, 0);
	sim_free(&s);
	free(in);
	in = repeat('1', RESP_MAX_INLINE + 10, "*", "\r\n");
	expect_err_whole(in, 1, "Protocol error: too big mbulk count string");
	free(in);
	in = repeat('1', RESP_MAX_INLINE, "*1\r\n$", "");
	expect_err_whole(in, 1, "Protocol error: too big bulk count string");
	free(in);
	in = repeat('x', RESP_MAX_INLINE + 1, "*1\r\n", "\r\n");
	expect_err_whole(in, 1, "Protocol error: too big bulk count string");
	free(in);
}

Test(resp_parse, too_big_inline)
{
	char *in = repeat('a', RESP_MAX_INLINE + 1, "", "");
	expect_err_whole(in, 1, "Protocol error: too big inline request");
	free(in);
	in = repeat('a', RESP_MAX_INLINE + 1, "", "\n");
	expect_err_whole(in, 1, "Protocol error: too big inline request");
	free(in);
	/* Exactly RESP_MAX_INLINE bytes before the '\n' is fine. */
	in = repeat('a', RESP_MAX_INLINE, "", "\n");
	sim_t s;
	sim_init(&s, NULL, 1);
	sim_read(&s, in, strlen(in));
	cr_assert_eq(s.rc, 0);
	cr_assert_eq(s.ncmd, 1);
	sim_free(&s);
	free(in);
}

Test(resp_parse, unauthenticated_limits)
{
	expect_err_lim(S("*11\r\n"), NULL, 0, "Protocol error: unauthenticated multibulk length");
	expect_err_lim(S("*1\r\n$16385\r\n"), NULL, 0,
		       "Protocol error: unauthenticated bulk length");
	/* At the limits, and everything once authenticated. */
	sim_t s;
	sim_init(&s, NULL, 0);
	sim_read(&s, S("*10\r\n$16384\r\n"));
	cr_assert_eq(s.rc, 0);
	sim_free(&s);
	sim_init(&s, NULL, 1);
	sim_read(&s, S("*11\r\n$16385\r\n"));
	cr_assert_eq(s.rc, 0);
	sim_free(&s);
	/* Invalid beats unauthenticated, as in Redis. */
	expect_err_lim(S("*2147483648\r\n"), NULL, 0, "Protocol error: invalid multibulk length");
	expect_err_lim(S("*1\r\n$536870913\r\n"), NULL, 0, "Protocol error: invalid bulk length");
	/* Skipped counts and inline requests are not capped before AUTH. */
	expect_cmds(S("*-100\r\na b c d e f g h i j k l\n"),
		    "12|1:a|1:b|1:c|1:d|1:e|1:f|1:g|1:h|1:i|1:j|1:k|1:l\n");
}

Test(resp_parse, max_args)
{
	resp_limits_t lim = {RESP_MAX_BULK_DEFAULT, 16};
	expect_err_lim(S("*17\r\n"), &lim, 1, "Protocol error: invalid multibulk length");
	expect_err_lim(S("a b c d e f g h i j k l m n o p q\n"), &lim, 1,
		       "Protocol error: too many arguments in inline request");
	sim_t s;
	sim_init(&s, &lim, 1);
	sim_read(&s, S("a b c d e f g h i j k l m n o p\n"));
	cr_assert_eq(s.rc, 0);
	cr_assert_eq(s.ncmd, 1);
	sim_free(&s);
	/* Limits below MIN are clamped up to it. */
	resp_limits_t tiny = {1, 1};
	sim_init(&s, &tiny, 1);
	sim_read(&s, S("*16\r\n$1048576\r\n"));
	cr_assert_eq(s.rc, 0);
	sim_free(&s);
}

Test(resp_parse, errors_are_sticky)
{
	resp_parser_t p;
	resp_parser_init(&p);
	size_t used, argc;
	resp_arg_t *argv;
	vela_err_t err;
	cr_assert_eq(resp_parse(&p, S("*x\r\n"), NULL, 1, &used, &argv, &argc, &err), VELA_ESYNTAX);
	cr_assert_eq(err.code, VELA_ESYNTAX);
	cr_assert_eq(resp_parse(&p, S("PING\r\n"), NULL, 1, &used, &argv, &argc, &err), VELA_ESYNTAX);
	cr_assert_eq(used, 0);
	resp_parser_free(&p);
}

Test(resp_parse, shrinking_buffer_is_einval)
{
	resp_parser_t p;
	resp_parser_init(&p);
	size_t used, argc;
	resp_arg_t *argv;
	cr_assert_eq(resp_parse(&p, S("*2\r\n$1\r\na\r\n"), NULL, 1, &used, &argv, &argc, NULL), 0);
	cr_assert_eq(resp_parse(&p, S("*2\r\n"), NULL, 1, &used, &argv, &argc, NULL), VELA_EINVAL);
	resp_parser_free(&p);
}

/* ----------------------------------------------------------------- inline */

Test(resp_parse, inline_basic)
{
	expect_cmds(S("PING\r\n"), "1|4:PING\n");
	expect_cmds(S("PING\n"), "1|4:PING\n");
	expect_cmds(S("  set\tk   v  \r\n"), "3|3:set|1:k|1:v\n");
	expect_cmds(S("a\rb\n"), "2|1:a|1:b\n");
	/* \v and \f separate tokens only between them (sdssplitargs). */
	expect_cmds(S("\va\vb \fc\n"), "2|3:a\vb|1:c\n");
	static const char nul[] = "a\0b c\n";
	expect_cmds(nul, sizeof(nul) - 1, "2|3:a\0b|1:c\n");
}

Test(resp_parse, inline_empty_lines_skipped)
{
	resp_parser_t p;
	resp_parser_init(&p);
	size_t used, argc;
	resp_arg_t *argv;
	cr_assert_eq(resp_parse(&p, S("\r\nPING\r\n"), NULL, 1, &used, &argv, &argc, NULL), 0);
	cr_assert_eq(used, 2);
	cr_assert_eq(resp_parse(&p, S("   \t \n"), NULL, 1, &used, &argv, &argc, NULL), 0);
	cr_assert_eq(used, 6);
	resp_parser_free(&p);
	expect_cmds(S("\n\r\n \r\nPING\n\n"), "1|4:PING\n");
}

Test(resp_parse, inline_quotes)
{
	expect_cmds(S("set \"a b\" 'c d'\r\n"), "3|3:set|3:a b|3:c d\n");
	expect_cmds(S("\"\\x41\"\n"), "1|1:A\n");
	expect_cmds(S("\"\\x4a\\x4B\\x00\"\n"), "1|3:JK\0\n");
	/* Not a hex pair: \x stands for x. */
	expect_cmds(S("\"\\x4\" \"\\xzz\"\n"), "2|2:x4|3:xzz\n");
	expect_cmds(S("\"\\n\\r\\t\\b\\a\\\\\\\"\\q\"\n"), "1|8:\n\r\t\b\a\\\"q\n");
	expect_cmds(S("'it\\'s' 'a\\nb' '\"'\n"), "3|4:it's|4:a\\nb|1:\"\n");
	expect_cmds(S("\"\" ''\n"), "2|0:|0:\n");
	/* A quote may open mid-token; after closing, a space or the end must follow. */
	expect_cmds(S("a\"b c\" x'y z'\n"), "2|4:ab c|4:xy z\n");
	expect_cmds(S("\"a\"\tb\n"), "2|1:a|1:b\n");
	expect_cmds(S("\"a\"\r\n"), "1|1:a\n");
	expect_cmds(S("\"a\r\"\n"), "1|2:a\r\n");
}

Test(resp_parse, inline_unbalanced)
{
	const char *bad[] = {"set \"a b\n", "set 'a b\n", "\"a\"b\n", "'a'b\n", "\"a\"\"b\"\n",
			     "\"abc\\\"\n", "'a\\'\n", "\"\\\n", "x\"\n"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_err(bad[i], "Protocol error: unbalanced quotes in request");
}

Test(resp_parse, inline_args_live_in_parser)
{
	const char in[] = "ECHO \"hi\\n\"\n";
	resp_parser_t p;
	resp_parser_init(&p);
	size_t used, argc;
	resp_arg_t *argv;
	cr_assert_eq(resp_parse(&p, in, sizeof(in) - 1, NULL, 1, &used, &argv, &argc, NULL), 1);
	cr_assert_eq(used, sizeof(in) - 1);
	cr_assert_eq(argc, 2);
	cr_assert(argv[1].p >= p.inline_buf && argv[1].p < p.inline_buf + p.inline_cap);
	cr_assert_eq(argv[1].len, 3);
	cr_assert(memcmp(argv[1].p, "hi\n", 3) == 0);
	resp_parser_free(&p);
}

/* ------------------------------------------------------- bounded memory */

Test(resp_parse, huge_claims_allocate_little)
{
	resp_parser_t p;
	resp_parser_init(&p);
	size_t used, argc;
	resp_arg_t *argv;
	cr_assert_eq(resp_parse(&p, S("*1000000\r\n$536870912\r\nabc"), NULL, 1, &used, &argv,
				&argc, NULL), 0);
	cr_assert_eq(p.argv, NULL); /* nothing until an argument is complete */
	resp_parser_free(&p);
	resp_parser_init(&p);
	cr_assert_eq(resp_parse(&p, S("*1000000\r\n$1\r\na\r\n$1\r\nb\r\n"), NULL, 1, &used, &argv,
				&argc, NULL), 0);
	cr_assert_leq(p.cap, 64);
	cr_assert_eq(p.argc, 2);
	resp_parser_free(&p);
	/* A small command allocates only its own slots. */
	resp_parser_init(&p);
	cr_assert_eq(resp_parse(&p, S("*2\r\n$1\r\na\r\n$1\r\nb\r\n"), NULL, 1, &used, &argv, &argc,
				NULL), 1);
	cr_assert_eq(p.cap, 2);
	resp_parser_free(&p);
}

Test(resp_parse, many_args_grow)
{
	size_t nargs = 5000, cap = nargs * 12 + 32, n = 0;
	char *in = malloc(cap);
	n += (size_t)snprintf(in, cap, "*%zu\r\n", nargs);
	for (size_t i = 0; i < nargs; i++)
		n += (size_t)snprintf(in + n, cap - n, "$%d\r\n%zu\r\n",
				      i < 10 ? 1 : i < 100 ? 2 : i < 1000 ? 3 : 4, i);
	resp_parser_t p;
	resp_parser_init(&p);
	size_t used, argc;
	resp_arg_t *argv;
	cr_assert_eq(resp_parse(&p, in, n, NULL, 1, &used, &argv, &argc, NULL), 1);
	cr_assert_eq(argc, nargs);
	cr_assert_eq(used, n);
	cr_assert_eq(argv[4321].len, 4);
	cr_assert(memcmp(argv[4321].p, "4321", 4) == 0);
	/* The big argv is released on the next call. */
	cr_assert_eq(resp_parse(&p, S("*1\r\n$1\r\nx\r\n"), NULL, 1, &used, &argv, &argc, NULL), 1);
	cr_assert_leq(p.cap, 64);
	resp_parser_free(&p);
	free(in);
}

/* A 4 MiB bulk fed one byte per call, and a 64 KiB inline line likewise:
 * linear only if nothing is re-scanned. */
Test(resp_parse, incremental_is_linear, .timeout = 20)
{
	size_t blen = 4u << 20, hdr = 0;
	char *in = malloc(blen + 64);
	hdr = (size_t)snprintf(in, 64, "*1\r\n$%zu\r\n", blen);
	memset(in + hdr, 'v', blen);
	memcpy(in + hdr + blen, "\r\n", 2);
	size_t n = hdr + blen + 2;
	resp_parser_t p;
	resp_parser_init(&p);
	size_t used = 0, argc;
	resp_arg_t *argv;
	int rc = 0;
	for (size_t k = 1; k <= n && rc == 0; k++)
		rc = resp_parse(&p, in, k, NULL, 1, &used, &argv, &argc, NULL);
	cr_assert_eq(rc, 1);
	cr_assert_eq(used, n);
	cr_assert_eq(argv[0].len, blen);
	resp_parser_free(&p);

	memset(in, 'a', RESP_MAX_INLINE);
	in[RESP_MAX_INLINE] = '\n';
	resp_parser_init(&p);
	rc = 0;
	for (size_t k = 1; k <= RESP_MAX_INLINE + 1 && rc == 0; k++)
		rc = resp_parse(&p, in, k, NULL, 1, &used, &argv, &argc, NULL);
	cr_assert_eq(rc, 1);
	cr_assert_eq(argv[0].len, RESP_MAX_INLINE);
	resp_parser_free(&p);
	free(in);
}

/* ------------------------------------------------------------- writer */

static void out_check(const resp_out_t *o, const char *want, size_t n)
{
	cr_assert_eq(o->oom, 0);
	cr_assert_eq(o->len, n, "got %zu bytes '%.*s', want '%.*s'", o->len, (int)o->len, o->p,
		     (int)n, want);
	cr_assert(n == 0 || memcmp(o->p, want, n) == 0, "got '%.*s', want '%.*s'", (int)o->len,
		  o->p, (int)n, want);
}

/* Run `stmt` (which writes to `o`) in protocol `proto`; expect `lit`. */
#define OUT(proto, stmt, lit)                                                                      \
	do {                                                                                       \
		resp_out_t o_;                                                                     \
		resp_out_init(&o_, proto);                                                         \
		resp_out_t *o = &o_;                                                               \
		stmt;                                                                              \
		out_check(o, lit, sizeof(lit) - 1);                                                \
		resp_out_free(o);                                                                  \
	} while (0)

#define OUT2(stmt, lit) OUT(2, stmt, lit)
#define OUT3(stmt, lit) OUT(3, stmt, lit)
#define OUT23(stmt, lit) do { OUT(2, stmt, lit); OUT(3, stmt, lit); } while (0)

Test(resp_write, scalars)
{
	OUT23(resp_simple(o, "OK"), "+OK\r\n");
	OUT23(resp_simple(o, "a\r\nb"), "+a  b\r\n");
	OUT23(resp_int(o, 0), ":0\r\n");
	OUT23(resp_int(o, -42), ":-42\r\n");
	OUT23(resp_int(o, INT64_MAX), ":9223372036854775807\r\n");
	OUT23(resp_int(o, INT64_MIN), ":-9223372036854775808\r\n");
	OUT23(resp_bulk(o, "hello", 5), "$5\r\nhello\r\n");
	OUT23(resp_bulk(o, NULL, 0), "$0\r\n\r\n");
	OUT23(resp_bulk(o, "a\0\r\n", 4), "$4\r\na\0\r\n\r\n");
	OUT23(resp_bulk_str(o, "abc"), "$3\r\nabc\r\n");
	OUT2(resp_bulk_str(o, NULL), "$-1\r\n");
	OUT3(resp_bulk_str(o, NULL), "_\r\n");
	OUT23(resp_raw(o, "+PONG\r\n", 7), "+PONG\r\n");
}

Test(resp_write, nulls_and_bools)
{
	OUT2(resp_null(o), "$-1\r\n");
	OUT3(resp_null(o), "_\r\n");
	OUT2(resp_null_array(o), "*-1\r\n");
	OUT3(resp_null_array(o), "_\r\n");
	OUT2(resp_bool(o, 1), ":1\r\n");
	OUT2(resp_bool(o, 0), ":0\r\n");
	OUT3(resp_bool(o, 7), "#t\r\n");
	OUT3(resp_bool(o, 0), "#f\r\n");
}

Test(resp_write, aggregates)
{
	OUT23(resp_array(o, 0), "*0\r\n");
	OUT23(resp_array(o, 3), "*3\r\n");
	OUT2(resp_map(o, 2), "*4\r\n");
	OUT3(resp_map(o, 2), "%2\r\n");
	OUT2(resp_map(o, 0), "*0\r\n");
	OUT2(resp_set(o, 5), "*5\r\n");
	OUT3(resp_set(o, 5), "~5\r\n");
	/* HELLO's reply shape, both ways. */
	OUT2((resp_map(o, 2), resp_bulk_str(o, "server"), resp_bulk_str(o, "redis"),
	      resp_bulk_str(o, "proto"), resp_int(o, 2)),
	     "*4\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:2\r\n");
	OUT3((resp_map(o, 2), resp_bulk_str(o, "server"), resp_bulk_str(o, "redis"),
	      resp_bulk_str(o, "proto"), resp_int(o, 3)),
	     "%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n");
}

Test(resp_write, doubles)
{
	OUT2(resp_double(o, 1.5), "$3\r\n1.5\r\n");
	OUT3(resp_double(o, 1.5), ",1.5\r\n");
	OUT2(resp_double(o, 0.1), "$19\r\n0.10000000000000001\r\n");
	OUT3(resp_double(o, 0.1), ",0.10000000000000001\r\n");
	OUT3(resp_double(o, -2), ",-2\r\n");
	OUT3(resp_double(o, -0.0), ",-0\r\n");
	OUT3(resp_double(o, 1e300), ",1.0000000000000001e+300\r\n");
	OUT3(resp_double(o, INFINITY), ",inf\r\n");
	OUT3(resp_double(o, -INFINITY), ",-inf\r\n");
	OUT3(resp_double(o, NAN), ",nan\r\n");
	OUT3(resp_double(o, -NAN), ",nan\r\n");
	OUT2(resp_double(o, INFINITY), "$3\r\ninf\r\n");
	OUT2(resp_double(o, -INFINITY), "$4\r\n-inf\r\n");
	OUT2(resp_double(o, NAN), "$3\r\nnan\r\n");
	OUT2(resp_double(o, -1.7976931348623157e308), "$24\r\n-1.7976931348623157e+308\r\n");
}

Test(resp_write, verbatim)
{
	OUT3(resp_verbatim(o, "hello", 5), "=9\r\ntxt:hello\r\n");
	OUT3(resp_verbatim(o, "", 0), "=4\r\ntxt:\r\n");
	OUT2(resp_verbatim(o, "hello", 5), "$5\r\nhello\r\n");
	OUT3(resp_verbatim(o, "# Server\r\nx:1\r\n", 15), "=19\r\ntxt:# Server\r\nx:1\r\n\r\n");
}

Test(resp_write, errors)
{
	OUT23(resp_error(o, "syntax error"), "-ERR syntax error\r\n");
	OUT23(resp_error(o, "ERR syntax error"), "-ERR syntax error\r\n");
	OUT23(resp_error(o, "WRONGTYPE Operation against a key holding the wrong kind of value"),
	      "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
	OUT23(resp_error(o, "NOAUTH Authentication required."), "-NOAUTH Authentication required.\r\n");
	OUT23(resp_error(o, "OOM command not allowed"), "-OOM command not allowed\r\n");
	OUT23(resp_error(o, "Protocol error: invalid bulk length"),
	      "-ERR Protocol error: invalid bulk length\r\n");
	/* Not codes: two letters, no space after, lower case, digits. */
	OUT23(resp_error(o, "DB index is out of range"), "-ERR DB index is out of range\r\n");
	OUT23(resp_error(o, "ABC"), "-ERR ABC\r\n");
	OUT23(resp_error(o, "ABCd e"), "-ERR ABCd e\r\n");
	OUT23(resp_error(o, "AB1 x"), "-ERR AB1 x\r\n");
	OUT23(resp_error(o, " ERR x"), "-ERR  ERR x\r\n");
	OUT23(resp_error(o, ""), "-ERR \r\n");
	/* An explicit '-' sends the message as is. */
	OUT23(resp_error(o, "-DB custom"), "-DB custom\r\n");
	OUT23(resp_error(o, "-"), "-\r\n");
	/* CR/LF become spaces. */
	OUT23(resp_error(o, "bad\r\nvalue\n"), "-ERR bad  value \r\n");
	OUT23(resp_error(o, "NOPERM a\rb"), "-NOPERM a b\r\n");
	OUT23(resp_errorf(o, "wrong number of arguments for '%s' command", "hset"),
	      "-ERR wrong number of arguments for 'hset' command\r\n");
	OUT23(resp_errorf(o, "NOPROTO unsupported protocol version"),
	      "-NOPROTO unsupported protocol version\r\n");
}

Test(resp_write, errorf_long)
{
	char want[1200];
	char arg[1001];
	memset(arg, 'x', 1000);
	arg[1000] = '\0';
	int n = snprintf(want, sizeof(want), "-ERR unknown command '%s'\r\n", arg);
	resp_out_t o;
	resp_out_init(&o, 2);
	resp_errorf(&o, "unknown command '%s'", arg);
	out_check(&o, want, (size_t)n);
	resp_out_free(&o);
}

Test(resp_write, growth_and_consume)
{
	resp_out_t o;
	resp_out_init(&o, 2);
	cr_assert_eq(o.proto, 2);
	for (int i = 0; i < 20000; i++)
		resp_int(&o, i);
	size_t total = o.len;
	cr_assert_eq(memcmp(o.p, ":0\r\n:1\r\n", 8), 0);
	resp_out_consume(&o, 4);
	cr_assert_eq(o.len, total - 4);
	cr_assert_eq(memcmp(o.p, ":1\r\n", 4), 0);
	resp_out_consume(&o, SIZE_MAX);
	cr_assert_eq(o.len, 0);
	cr_assert_eq(o.p, NULL); /* a big emptied buffer is released */
	resp_simple(&o, "OK");
	out_check(&o, "+OK\r\n", 5);
	resp_out_free(&o);
	resp_out_init(&o, 7);
	cr_assert_eq(o.proto, 2);
	resp_out_init(&o, 3);
	cr_assert_eq(o.proto, 3);
}

Test(resp_write, overflow_sets_oom)
{
	resp_out_t o;
	resp_out_init(&o, 2);
	resp_simple(&o, "OK");
	resp_raw(&o, "x", SIZE_MAX - 2); /* len + n wraps: refused before any allocation */
	cr_assert_eq(o.oom, 1);
	size_t len = o.len;
	resp_simple(&o, "more"); /* nothing after a failed append */
	cr_assert_eq(o.len, len);
	resp_out_free(&o);
	resp_out_init(&o, 2);
	resp_map(&o, SIZE_MAX);
	cr_assert_eq(o.oom, 1);
	resp_out_free(&o);
	resp_out_init(&o, 3);
	resp_verbatim(&o, "x", SIZE_MAX - 1);
	cr_assert_eq(o.oom, 1);
	resp_out_free(&o);
}
