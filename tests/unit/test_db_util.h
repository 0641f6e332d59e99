/* Helpers shared by the db tests: temp directories, schema shortcuts and an
 * independent IEEE half encoder/decoder for building FLOAT16 blobs. */
#ifndef VELA_TEST_DB_UTIL_H
#define VELA_TEST_DB_UTIL_H

#include <criterion/criterion.h>
#include <math.h>
#include <strings.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vela/vela.h"

static inline void tmpdir_make(char *dir, size_t cap)
{
	snprintf(dir, cap, "/tmp/vela-db-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static inline void tmpdir_remove(const char *dir)
{
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

static inline vela_db_t *db_open_ok(const char *dir, size_t map)
{
	vela_db_t *db = NULL;
	vela_err_t err = {0};
	vela_db_options_t o = {.map_size = map};
	int rc = vela_db_open(dir, &o, &db, &err);
	cr_assert_eq(rc, 0, "open %s: %s", dir, err.msg);
	return db;
}

/* A seeded generator of its own per test (splitmix64): a test's data do not
 * depend on which other tests ran before it. */
typedef struct test_rng {
	uint64_t s;
} test_rng_t;

static inline test_rng_t test_rng(uint64_t seed)
{
	return (test_rng_t){seed * 0x9e3779b97f4a7c15ull + 1};
}

static inline uint32_t test_rng_u32(test_rng_t *g)
{
	uint64_t z = (g->s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return (uint32_t)((z ^ (z >> 31)) >> 32);
}

/* A search request for query on index: ids only, up to limit results. */
static inline void test_req_ids(vela_search_req_t *req, const char *index, const char *query,
				uint32_t limit)
{
	memset(req, 0, sizeof(*req));
	req->index = index;
	req->query = query;
	req->nocontent = true;
	req->limit_set = true;
	req->limit = limit;
}

/* Encode a value that is exactly representable as a normal half (or 0). */
static inline uint16_t test_half_exact(double v)
{
	if (v == 0)
		return 0;
	uint16_t sign = v < 0 ? 0x8000 : 0;
	int e;
	double m = frexp(fabs(v), &e); /* v = m * 2^e, m in [0.5, 1) */
	uint16_t exp = (uint16_t)(e - 1 + 15);
	uint16_t man = (uint16_t)((m * 2 - 1) * 1024);
	return sign | (uint16_t)(exp << 10) | man;
}

static inline double test_half_decode(uint16_t h)
{
	int exp = (h >> 10) & 0x1f, man = h & 0x3ff;
	double v = exp == 0 ? ldexp(man, -24) : ldexp(1024 + man, exp - 25);
	return (h & 0x8000) ? -v : v;
}

static inline int hset1(vela_db_t *db, const char *key, const char *f, const void *v, size_t vl)
{
	vela_kv_t kv = {f, strlen(f), v, vl};
	vela_err_t err;
	return vela_hset(db, key, strlen(key), &kv, 1, NULL, &err);
}

#endif
