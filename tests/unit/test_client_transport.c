/* Unit tests for libvela-client's transport against Debian's redis-server
 * (a core-RESP oracle: no search module): PING, binary HSET/HGETALL,
 * pipelining, error replies, AUTH, broken connections; and the FT.SEARCH
 * reply parser fed with RESP bytes through hiredis's reader. Tests that
 * need redis-server are skipped when it is not installed. */
#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vela/client.h"

#define REDIS_SERVER "/usr/bin/redis-server"

static char dir[] = "/tmp/vela-test-redis-XXXXXX";
static char sock[128];
static pid_t server = -1;

static void redis_start(void)
{
	cr_assert_not_null(mkdtemp(dir));
	snprintf(sock, sizeof(sock), "%s/redis.sock", dir);
	server = fork();
	cr_assert_geq(server, 0);
	if (server == 0) {
		freopen("/dev/null", "w", stdout);
		execl(REDIS_SERVER, "redis-server", "--port", "0", "--unixsocket", sock, "--dir", dir,
		      "--save", "", "--appendonly", "no", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) { /* up to 5 s */
		vela_client_t *c;
		if (vela_client_connect(sock, 0, 1000, &c, NULL) == 0) {
			vela_client_close(c);
			return;
		}
		struct timespec ts = {0, 10000000};
		nanosleep(&ts, NULL);
	}
	cr_assert_fail("redis-server did not start");
}

static void redis_stop(void)
{
	if (server > 0) {
		kill(server, SIGTERM);
		waitpid(server, NULL, 0);
		server = -1;
	}
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		cr_log_warn("cannot remove %s", dir);
}

static void setup(void)
{
	if (access(REDIS_SERVER, X_OK) != 0)
		cr_skip_test("redis-server is not installed");
	redis_start();
}

TestSuite(client_redis, .init = setup, .fini = redis_stop);

static vela_client_t *conn(void)
{
	vela_client_t *c;
	vela_err_t err;
	cr_assert_eq(vela_client_connect(sock, 0, 2000, &c, &err), 0, "%s", err.msg);
	return c;
}

Test(client_redis, ping)
{
	vela_client_t *c = conn();
	redisReply *r;
	const char *argv[] = {"PING"};
	cr_assert_eq(vela_client_command(c, 1, argv, NULL, &r, NULL), 0);
	cr_assert_eq(r->type, REDIS_REPLY_STATUS);
	cr_assert_str_eq(r->str, "PONG");
	vela_client_reply_free(r);
	vela_client_close(c);
}

Test(client_redis, binary_hset_hgetall)
{
	vela_client_t *c = conn();
	const char val[] = {'a', 0, 'b', '\r', '\n'};
	const char *argv[] = {"HSET", "k\0ey", "f", val};
	size_t len[] = {4, 4, 1, sizeof(val)};
	redisReply *r;
	cr_assert_eq(vela_client_command(c, 4, argv, len, &r, NULL), 0);
	cr_assert_eq(r->type, REDIS_REPLY_INTEGER);
	cr_assert_eq(r->integer, 1);
	vela_client_reply_free(r);
	const char *get[] = {"HGETALL", "k\0ey"};
	size_t glen[] = {7, 4};
	cr_assert_eq(vela_client_command(c, 2, get, glen, &r, NULL), 0);
	cr_assert_eq(r->elements, 2);
	cr_assert_eq(r->element[1]->len, sizeof(val));
	cr_assert_arr_eq(r->element[1]->str, val, sizeof(val));
	vela_client_reply_free(r);
	vela_client_close(c);
}

Test(client_redis, pipeline_replies_in_order)
{
	vela_client_t *c = conn();
	enum { N = 200 };
	for (int i = 0; i < N; i++) {
		char key[16], v[16];
		snprintf(key, sizeof(key), "p:%d", i);
		snprintf(v, sizeof(v), "%d", i * 3);
		const char *set[] = {"HSET", key, "x", v}, *get[] = {"HGET", key, "x"};
		cr_assert_eq(vela_client_append(c, 4, set, NULL, NULL), 0);
		cr_assert_eq(vela_client_append(c, 3, get, NULL, NULL), 0);
	}
	cr_assert_eq(vela_client_pending(c), 2 * N);
	/* a plain command while replies are pending is refused */
	const char *ping[] = {"PING"};
	cr_assert_eq(vela_client_command(c, 1, ping, NULL, NULL, NULL), VELA_EINVAL);
	for (int i = 0; i < N; i++) {
		redisReply *r;
		cr_assert_eq(vela_client_read(c, &r, NULL), 0);
		cr_assert_eq(r->integer, 1);
		vela_client_reply_free(r);
		cr_assert_eq(vela_client_read(c, &r, NULL), 0);
		cr_assert_eq(atoi(r->str), i * 3);
		vela_client_reply_free(r);
	}
	cr_assert_eq(vela_client_pending(c), 0);
	cr_assert_eq(vela_client_read(c, NULL, NULL), VELA_EINVAL);
	vela_client_close(c);
}

Test(client_redis, error_reply_keeps_pipeline_in_step)
{
	vela_client_t *c = conn();
	const char *bad[] = {"HSET", "k"}, *ping[] = {"PING"}, *ft[] = {"FT.SEARCH", "idx", "*"};
	cr_assert_eq(vela_client_append(c, 2, bad, NULL, NULL), 0);
	cr_assert_eq(vela_client_append(c, 1, ping, NULL, NULL), 0);
	cr_assert_eq(vela_client_append(c, 3, ft, NULL, NULL), 0);
	vela_err_t err;
	redisReply *r = (redisReply *)1;
	cr_assert_eq(vela_client_read(c, &r, &err), VELA_EINVAL);
	cr_assert_null(r);
	cr_assert(strstr(err.msg, "wrong number of arguments"), "%s", err.msg);
	cr_assert_eq(vela_client_read(c, &r, &err), 0);
	cr_assert_str_eq(r->str, "PONG");
	vela_client_reply_free(r);
	cr_assert_eq(vela_client_read(c, NULL, &err), VELA_EINVAL);
	cr_assert(strstr(err.msg, "unknown command"), "%s", err.msg);
	/* WRONGTYPE maps to VELA_ETYPE */
	const char *set[] = {"SET", "s", "1"}, *hget[] = {"HGET", "s", "f"};
	cr_assert_eq(vela_client_command(c, 3, set, NULL, NULL, NULL), 0);
	cr_assert_eq(vela_client_command(c, 3, hget, NULL, NULL, &err), VELA_ETYPE);
	vela_client_close(c);
}

Test(client_redis, auth)
{
	vela_client_t *c = conn();
	const char *cfg[] = {"CONFIG", "SET", "requirepass", "s3cret"};
	cr_assert_eq(vela_client_command(c, 4, cfg, NULL, NULL, NULL), 0);
	vela_client_close(c);
	c = conn();
	vela_err_t err;
	const char *ping[] = {"PING"};
	cr_assert_eq(vela_client_command(c, 1, ping, NULL, NULL, &err), VELA_EINVAL);
	cr_assert(strstr(err.msg, "NOAUTH"), "%s", err.msg);
	cr_assert_eq(vela_client_auth(c, NULL, "nope", &err), VELA_EINVAL);
	cr_assert(strstr(err.msg, "WRONGPASS"), "%s", err.msg);
	cr_assert_eq(vela_client_auth(c, NULL, "s3cret", &err), 0, "%s", err.msg);
	cr_assert_eq(vela_client_auth(c, "default", "s3cret", &err), 0, "%s", err.msg);
	cr_assert_eq(vela_client_command(c, 1, ping, NULL, NULL, &err), 0);
	vela_client_close(c);
}

Test(client_redis, upsert_sends_le_float32_blob)
{
	vela_client_t *c = conn();
	float v[2] = {1.0f, 2.0f};
	vela_kv_t tag = {"tag", 3, "a", 1};
	vela_client_doc_t docs[2] = {
		{.key = "doc:1", .fields = &tag, .n_fields = 1, .vec_field = "v", .vec = v, .dim = 2},
		{.key = "doc:2", .vec_field = "v", .vec = v, .dim = 0}, /* bad dim */
	};
	vela_err_t err, errs[2] = {0};
	cr_assert_eq(vela_client_upsert(c, &docs[0], &err), 0, "%s", err.msg);
	size_t failed;
	cr_assert_eq(vela_client_upsert_batch(c, docs, 2, &failed, errs), VELA_EDIM);
	cr_assert_eq(failed, 1);
	cr_assert_eq(errs[0].code, 0);
	cr_assert_eq(errs[1].code, VELA_EDIM);
	const char *get[] = {"HGET", "doc:1", "v"};
	redisReply *r;
	cr_assert_eq(vela_client_command(c, 3, get, NULL, &r, NULL), 0);
	cr_assert_eq(r->len, 8);
	cr_assert_arr_eq(r->str, "\x00\x00\x80\x3f\x00\x00\x00\x40", 8);
	vela_client_reply_free(r);
	vela_client_close(c);
}

Test(client_redis, typed_search_without_module_is_a_clean_error)
{
	vela_client_t *c = conn();
	float v[2] = {1, 2};
	vela_client_query_t q[2] = {{.index = "idx", .vec = v, .dim = 2, .k = 3},
				    {.index = "idx", .vec = v, .dim = 2, .k = 3, .filter = "@t:{a}"}};
	vela_client_result_t *out[2];
	vela_err_t errs[2];
	cr_assert_eq(vela_client_search_batch(c, q, 2, out, errs), VELA_EINVAL);
	cr_assert_null(out[0]);
	cr_assert(strstr(errs[1].msg, "unknown command 'FT.SEARCH'"), "%s", errs[1].msg);
	cr_assert(strstr(errs[1].msg, "(@t:{a})=>[KNN 3 @v $vec AS dist]"), "%s", errs[1].msg);
	vela_field_def_t f = {.name = "v", .type = VELA_FIELD_VECTOR, .dim = 2};
	vela_index_def_t def = {.name = "idx", .fields = &f, .n_fields = 1};
	vela_err_t err;
	cr_assert_eq(vela_client_index_create(c, &def, &err), VELA_EINVAL);
	cr_assert(strstr(err.msg, "FT.CREATE"), "%s", err.msg);
	/* the connection is still usable */
	const char *ping[] = {"PING"};
	cr_assert_eq(vela_client_command(c, 1, ping, NULL, NULL, NULL), 0);
	vela_client_close(c);
}

Test(client_redis, dead_server_is_eio_and_sticky)
{
	vela_client_t *c = conn();
	redis_stop();
	const char *ping[] = {"PING"};
	vela_err_t err;
	cr_assert_eq(vela_client_command(c, 1, ping, NULL, NULL, &err), VELA_EIO);
	cr_assert_eq(vela_client_command(c, 1, ping, NULL, NULL, &err), VELA_EIO);
	cr_assert(strstr(err.msg, "broken"), "%s", err.msg);
	vela_client_close(c);
	cr_assert_eq(vela_client_connect(sock, 0, 500, &c, &err), VELA_EIO);
	cr_assert_null(c);
}

/* ------------------------------------------------------------ reply parser */

static redisReply *parse_resp(const char *bytes, size_t n)
{
	redisReader *rd = redisReaderCreate();
	cr_assert_eq(redisReaderFeed(rd, bytes, n), REDIS_OK);
	void *r = NULL;
	cr_assert_eq(redisReaderGetReply(rd, &r), REDIS_OK);
	cr_assert_not_null(r);
	redisReaderFree(rd);
	return r;
}

Test(client_parse, reference_example)
{
	static const char resp[] = "*5\r\n:2\r\n"
				   "$5\r\ndoc:1\r\n*4\r\n$4\r\ndist\r\n$1\r\n0\r\n$3\r\ntag\r\n$1\r\na\r\n"
				   "$5\r\ndoc:2\r\n*4\r\n$4\r\ndist\r\n$14\r\n0.251625061035\r\n"
				   "$3\r\ntag\r\n$1\r\nb\r\n";
	redisReply *r = parse_resp(resp, sizeof(resp) - 1);
	vela_client_result_t *res;
	cr_assert_eq(vela_client_result_parse(r, "dist", &res, NULL), 0);
	cr_assert_eq(res->total, 2);
	cr_assert_eq(res->n_hits, 2);
	cr_assert_str_eq(res->hits[0].key, "doc:1");
	cr_assert_float_eq(res->hits[0].dist, 0.0, 0);
	cr_assert_float_eq(res->hits[1].dist, 0.251625061035, 1e-15);
	cr_assert_eq(res->hits[1].n_fields, 2);
	cr_assert_str_eq(res->hits[1].fields[1].name, "tag");
	cr_assert_str_eq(res->hits[1].fields[1].value, "b");
	vela_client_result_free(res);
	freeReplyObject(r);
}

Test(client_parse, nocontent_nil_and_empty)
{
	static const char resp[] = "*5\r\n:9\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n*-1\r\n";
	redisReply *r = parse_resp(resp, sizeof(resp) - 1);
	vela_client_result_t *res;
	cr_assert_eq(vela_client_result_parse(r, NULL, &res, NULL), 0);
	cr_assert_eq(res->total, 9);
	cr_assert_eq(res->n_hits, 3);
	cr_assert_str_eq(res->hits[2].key, "c");
	cr_assert(isnan(res->hits[0].dist));
	cr_assert_eq(res->hits[2].n_fields, 0);
	vela_client_result_free(res);
	freeReplyObject(r);
	r = parse_resp("*1\r\n:0\r\n", 8);
	cr_assert_eq(vela_client_result_parse(r, "dist", &res, NULL), 0);
	cr_assert_eq(res->n_hits, 0);
	vela_client_result_free(res);
	freeReplyObject(r);
}

Test(client_parse, malformed)
{
	static const char *bad[] = {
		"+OK\r\n",                               /* not an array */
		"*0\r\n",                                /* no total */
		"*2\r\n$1\r\n2\r\n$1\r\na\r\n",          /* total not an integer */
		"*3\r\n:1\r\n*0\r\n$1\r\na\r\n",          /* fields before a key */
		"*3\r\n:1\r\n$1\r\na\r\n*1\r\n$1\r\nx\r\n", /* odd field list */
		"*3\r\n:1\r\n$1\r\na\r\n*2\r\n:1\r\n$1\r\nx\r\n", /* integer field name */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		redisReply *r = parse_resp(bad[i], strlen(bad[i]));
		vela_client_result_t *res = (vela_client_result_t *)1;
		vela_err_t err;
		cr_assert_eq(vela_client_result_parse(r, "dist", &res, &err), VELA_EINVAL, "case %zu",
			     i);
		cr_assert_null(res);
		freeReplyObject(r);
	}
}

Test(client_parse, error_text_mapping)
{
	static const struct {
		const char *msg;
		int code;
	} m[] = {
		{"Unknown index name", VELA_ENOTFOUND},
		{"No such index idx", VELA_ENOTFOUND},
		{"Index already exists", VELA_EEXISTS},
		{"Syntax error at offset 3 near x", VELA_ESYNTAX},
		{"WRONGTYPE Operation against a key", VELA_ETYPE},
		{"Error parsing vector similarity query: query vector blob size (7) does not "
		 "match index's expected size (8).",
		 VELA_EDIM},
		{"OOM command not allowed", VELA_EMAPFULL},
		{"ERR transaction too large: the batch dirtied more pages", VELA_ETXNFULL},
		{"ERR unknown command 'X'", VELA_EINVAL},
		{"NOAUTH Authentication required.", VELA_EINVAL},
	};
	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
		cr_assert_eq(vela_client_error_code(m[i].msg, strlen(m[i].msg)), m[i].code, "%s",
			     m[i].msg);
}

Test(client_args, refused_and_bad_arguments)
{
	vela_client_t *c = (vela_client_t *)1;
	vela_err_t err;
	cr_assert_eq(vela_client_connect("127.0.0.1", 1, 500, &c, &err), VELA_EIO);
	cr_assert_null(c);
	cr_assert_eq(vela_client_connect("127.0.0.1", 0, 500, &c, &err), VELA_EINVAL);
	cr_assert_eq(vela_client_connect("127.0.0.1", 6379, -5, &c, &err), VELA_EINVAL);
	cr_assert_eq(vela_client_connect(NULL, 6379, 0, &c, &err), VELA_EINVAL);
}
