/* hiredis smoke test for velad (built and run by test_server_clients.py):
 * HSET of FLOAT32 blobs, FT.CREATE, FT.SEARCH, reply checked element by
 * element. Usage: hiredis_smoke <port>; exit 0 and "OK" on success. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#define DIM 4
#define NDOCS 20

static int fail(const char *what, redisReply *r)
{
	fprintf(stderr, "FAIL: %s (reply type %d: %s)\n", what, r ? r->type : -1,
		r && r->str ? r->str : "");
	return 1;
}

static int expect_str(redisReply *r, const char *s)
{
	return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) &&
	       r->len == strlen(s) && memcmp(r->str, s, r->len) == 0;
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	redisContext *c = redisConnect("127.0.0.1", atoi(argv[1]));
	if (c == NULL || c->err)
		return fail("connect", NULL);
	redisReply *r = redisCommand(c, "FT.CREATE idx ON HASH PREFIX 1 doc: SCHEMA tag TAG "
					"v VECTOR FLAT 6 TYPE FLOAT32 DIM %d DISTANCE_METRIC L2", DIM);
	if (!expect_str(r, "OK"))
		return fail("FT.CREATE", r);
	freeReplyObject(r);
	float v[NDOCS][DIM];
	for (int i = 0; i < NDOCS; i++) {
		for (int d = 0; d < DIM; d++)
			v[i][d] = (float)(i * 10 + d);
		/* pipelined: appended now, replies read below */
		redisAppendCommand(c, "HSET doc:%d v %b tag t%d", i, v[i], sizeof(v[i]), i % 3);
	}
	for (int i = 0; i < NDOCS; i++) {
		if (redisGetReply(c, (void **)&r) != REDIS_OK || r->type != REDIS_REPLY_INTEGER ||
		    r->integer != 2)
			return fail("HSET", r);
		freeReplyObject(r);
	}
	r = redisCommand(c, "FT.SEARCH idx %s PARAMS 2 b %b RETURN 2 d tag SORTBY d DIALECT 2",
			 "*=>[KNN 3 @v $b AS d]", v[5], sizeof(v[5]));
	/* [3, doc:5, [d, 0, tag, t2], doc:4 or doc:6, [...], ...] */
	if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 7)
		return fail("FT.SEARCH shape", r);
	if (r->element[0]->type != REDIS_REPLY_INTEGER || r->element[0]->integer != 3)
		return fail("FT.SEARCH total", r->element[0]);
	if (!expect_str(r->element[1], "doc:5"))
		return fail("FT.SEARCH first id", r->element[1]);
	redisReply *f = r->element[2];
	if (f->type != REDIS_REPLY_ARRAY || f->elements != 4 || !expect_str(f->element[0], "d") ||
	    !expect_str(f->element[1], "0") || !expect_str(f->element[2], "tag") ||
	    !expect_str(f->element[3], "t2"))
		return fail("FT.SEARCH fields", f);
	for (int k = 1; k < 3; k++) { /* doc:4 and doc:6, both at 4*10^2 = 400 */
		redisReply *id = r->element[1 + 2 * k], *fk = r->element[2 + 2 * k];
		if (!(expect_str(id, "doc:4") || expect_str(id, "doc:6")) || fk->elements != 4 ||
		    !expect_str(fk->element[1], "400"))
			return fail("FT.SEARCH neighbours", id);
	}
	freeReplyObject(r);
	r = redisCommand(c, "HGET doc:7 v");
	if (r == NULL || r->type != REDIS_REPLY_STRING || r->len != sizeof(v[7]) ||
	    memcmp(r->str, v[7], sizeof(v[7])) != 0)
		return fail("HGET blob", r);
	freeReplyObject(r);
	redisFree(c);
	puts("OK");
	return 0;
}
