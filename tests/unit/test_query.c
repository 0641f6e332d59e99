/* Unit tests for query/: every grammar form (checked through the EXPLAIN
 * tree), precedence, escapes, params, KNN / VECTOR_RANGE validation, error
 * messages with offsets, limits, and evaluation against an in-test source,
 * including a random property test against a per-document evaluator. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "query/query.h"

/* ------------------------------------------------------------ schema */

static const struct {
	const char *name;
	query_field_info_t info;
} schema[] = {
	{"color", {VELA_FIELD_TAG, 0, 0, 0, 0}},
	{"brand", {VELA_FIELD_TAG, 1, 1, 0, 0}}, /* case-sensitive */
	{"price", {VELA_FIELD_NUMERIC, 2, 0, 0, 0}},
	{"year", {VELA_FIELD_NUMERIC, 3, 0, 0, 0}},
	{"title", {VELA_FIELD_TEXT, 4, 0, 0, 0}},
	{"body", {VELA_FIELD_TEXT, 5, 0, 0, 0}},
	{"v", {VELA_FIELD_VECTOR, 6, 0, 2, VELA_VEC_FLOAT32}},
	{"h", {VELA_FIELD_VECTOR, 7, 0, 4, VELA_VEC_FLOAT16}},
};
#define N_SCHEMA (sizeof(schema) / sizeof(schema[0]))

static int lookup(void *ctx, const char *name, size_t len, query_field_info_t *out)
{
	(void)ctx;
	for (size_t i = 0; i < N_SCHEMA; i++)
		if (strlen(schema[i].name) == len && memcmp(schema[i].name, name, len) == 0) {
			*out = schema[i].info;
			return 0;
		}
	return VELA_ENOTFOUND;
}

static const float vec8[2] = {1.0f, 2.0f};

/* Default params for the tests: B (8-byte FLOAT32[2] blob), H (8-byte FLOAT16[4]). */
static query_param_t P[] = {
	{"B", 1, vec8, 8},
	{"H", 1, "\0\0\0\0\0\0\0\0", 8},
	{"k", 1, "7", 1},
	{"lo", 2, "10", 2},
	{"hi", 2, "(20", 3},
	{"t", 1, "Red Wine", 8},
	{"w", 1, "Hello, World", 12},
	{"r", 1, "0.5", 3},
	{"bad", 3, "abc", 3},
	{"short", 5, "1234567", 7},
	{"kbig", 4, "100001", 6},
};
#define N_P (sizeof(P) / sizeof(P[0]))

static query_t *parse_ok(const char *text)
{
	query_t *q = NULL;
	vela_err_t err = {0};
	int rc = query_parse(text, strlen(text), P, N_P, lookup, NULL, &q, &err);
	cr_assert_eq(rc, 0, "parse of <%s> failed: %d %s", text, rc, err.msg);
	cr_assert_not_null(q);
	return q;
}

static char explain_buf[8192];

/* EXPLAIN text of a query that must parse. */
static const char *ex(const char *text)
{
	query_t *q = parse_ok(text);
	int n = query_explain(q, explain_buf, sizeof(explain_buf));
	cr_assert(n >= 0 && (size_t)n < sizeof(explain_buf));
	query_free(q);
	return explain_buf;
}

#define EXPECT_EX(text, want)                                                               \
	do {                                                                                \
		const char *got_ = ex(text);                                                \
		cr_assert_str_eq(got_, want, "query <%s>\n got:\n%s\nwant:\n%s", text, got_, \
				 want);                                                     \
	} while (0)

/* Parse must fail with `code` and a message containing `msg`. */
static void expect_err(const char *text, int code, const char *msg)
{
	query_t *q = (query_t *)1;
	vela_err_t err = {0};
	int rc = query_parse(text, strlen(text), P, N_P, lookup, NULL, &q, &err);
	cr_assert_eq(rc, code, "<%s>: rc %d (%s), want %d (%s)", text, rc, err.msg, code,
		     vela_strerror(code));
	cr_assert_null(q);
	cr_assert_eq(err.code, code);
	cr_assert(strstr(err.msg, msg) != NULL, "<%s>: message '%s' lacks '%s'", text, err.msg,
		  msg);
}

/* ------------------------------------------------------------ grammar forms */

Test(query_parse, star_and_paren_star)
{
	EXPECT_EX("*", "ALL\n");
	EXPECT_EX("(*)", "ALL\n");
	EXPECT_EX("  ( * )  ", "ALL\n");
	query_t *q = parse_ok("(*)");
	cr_assert(query_filter_is_all(q));
	cr_assert_null(query_knn(q));
	query_free(q);
	q = parse_ok("@color:{red}");
	cr_assert_not(query_filter_is_all(q));
	query_free(q);
}

Test(query_parse, tag_union_trim_lowercase)
{
	EXPECT_EX("@color:{ Red | BLUE  |green yellow }",
		  "TAG @color {\n  red\n  blue\n  green yellow\n}\n");
	EXPECT_EX("@brand:{Acme | aCME}", "TAG @brand {\n  Acme\n  aCME\n}\n");
	EXPECT_EX("@color:{x}", "TAG @color {\n  x\n}\n");
}

Test(query_parse, tag_escapes)
{
	EXPECT_EX("@color:{a\\-b | x\\|y | \\{c\\} | d\\\\e | \\$notparam | f\\ }",
		  "TAG @color {\n  a-b\n  x|y\n  {c}\n  d\\x5ce\n  $notparam\n  f \n}\n");
	/* Unescaped punctuation other than the structural characters is kept. */
	EXPECT_EX("@color:{a.b:c}", "TAG @color {\n  a.b:c\n}\n");
}

Test(query_parse, tag_params)
{
	EXPECT_EX("@color:{$t | blue}", "TAG @color {\n  red wine\n  blue\n}\n");
	EXPECT_EX("@brand:{ $t }", "TAG @brand {\n  Red Wine\n}\n");
}

Test(query_parse, numeric_ranges)
{
	EXPECT_EX("@price:[10 20]", "NUMERIC @price [10 20]\n");
	EXPECT_EX("@price:[(10 (20]", "NUMERIC @price (10 20)\n");
	EXPECT_EX("@price:[-inf +inf]", "NUMERIC @price [-inf +inf]\n");
	EXPECT_EX("@price:[-INF inf]", "NUMERIC @price [-inf +inf]\n");
	EXPECT_EX("@price:[ 1.5e2  -0.25 ]", "NUMERIC @price [150 -0.25]\n");
	EXPECT_EX("@price:[7]", "NUMERIC @price [7 7]\n");
	EXPECT_EX("@price:[$lo $hi]", "NUMERIC @price [10 20)\n");
	EXPECT_EX("@price:[($lo 30]", "NUMERIC @price (10 30]\n");
	EXPECT_EX("@price:[0.1 0.3]", "NUMERIC @price [0.1 0.3]\n");
}

Test(query_parse, numeric_comparisons)
{
	EXPECT_EX("@price==5", "NUMERIC @price [5 5]\n");
	EXPECT_EX("@price!=5", "NUMERIC @price != 5\n");
	EXPECT_EX("@price>5", "NUMERIC @price (5 +inf]\n");
	EXPECT_EX("@price>=5", "NUMERIC @price [5 +inf]\n");
	EXPECT_EX("@price<5", "NUMERIC @price [-inf 5)\n");
	EXPECT_EX("@price<= $lo", "NUMERIC @price [-inf 10]\n");
	EXPECT_EX("@price>-2 @year<2000",
		  "INTERSECT {\n  NUMERIC @price (-2 +inf]\n  NUMERIC @year [-inf 2000)\n}\n");
}

Test(query_parse, text_terms)
{
	EXPECT_EX("hello", "TEXT *:hello\n");
	EXPECT_EX("HeLLo_World", "TEXT *:hello_world\n");
	EXPECT_EX("@title:Hello", "TEXT @title:hello\n");
	EXPECT_EX("@title|body:x", "TEXT @title|@body:x\n");
	EXPECT_EX("@title:(a b)", "INTERSECT {\n  TEXT @title:a\n  TEXT @title:b\n}\n");
	EXPECT_EX("@title:(a | -b)",
		  "UNION {\n  TEXT @title:a\n  NOT {\n    TEXT @title:b\n  }\n}\n");
	/* A phrase is the AND of its terms; punctuation splits, `_` does not. */
	EXPECT_EX("@title:\"Exact, phrase_x\"",
		  "INTERSECT {\n  TEXT @title:exact\n  TEXT @title:phrase_x\n}\n");
	EXPECT_EX("a\\-b", "TEXT *:a-b\n");
	EXPECT_EX("$w", "INTERSECT {\n  TEXT *:hello\n  TEXT *:world\n}\n");
	EXPECT_EX("@body:$t", "INTERSECT {\n  TEXT @body:red\n  TEXT @body:wine\n}\n");
	/* Unescaped punctuation inside a word is NOT, as in Redis. */
	EXPECT_EX("a-b", "INTERSECT {\n  TEXT *:a\n  NOT {\n    TEXT *:b\n  }\n}\n");
}

Test(query_parse, precedence)
{
	EXPECT_EX("a b | c d", "UNION {\n  INTERSECT {\n    TEXT *:a\n    TEXT *:b\n  }\n"
			       "  INTERSECT {\n    TEXT *:c\n    TEXT *:d\n  }\n}\n");
	EXPECT_EX("-a b", "INTERSECT {\n  NOT {\n    TEXT *:a\n  }\n  TEXT *:b\n}\n");
	EXPECT_EX("a (b | c)", "INTERSECT {\n  TEXT *:a\n  UNION {\n    TEXT *:b\n    TEXT *:c\n"
			       "  }\n}\n");
	EXPECT_EX("((a (b)) c)", "INTERSECT {\n  TEXT *:a\n  TEXT *:b\n  TEXT *:c\n}\n");
	EXPECT_EX("-(a | b)", "NOT {\n  UNION {\n    TEXT *:a\n    TEXT *:b\n  }\n}\n");
	EXPECT_EX("~a b", "INTERSECT {\n  OPTIONAL {\n    TEXT *:a\n  }\n  TEXT *:b\n}\n");
	EXPECT_EX("a|b|c", "UNION {\n  TEXT *:a\n  TEXT *:b\n  TEXT *:c\n}\n");
	EXPECT_EX("@color:{a} @price:[1 2] | -@title:x",
		  "UNION {\n  INTERSECT {\n    TAG @color {\n      a\n    }\n"
		  "    NUMERIC @price [1 2]\n  }\n  NOT {\n    TEXT @title:x\n  }\n}\n");
}

Test(query_parse, clause_attributes_accepted)
{
	EXPECT_EX("(a b)=>{$weight: 2.0; $inorder: true; $slop: 1;}",
		  "INTERSECT {\n  TEXT *:a\n  TEXT *:b\n}\n");
	expect_err("a=>{$weight: 1; $weight: 2}", VELA_ESYNTAX, "Parameter was specified twice");
	expect_err("a=>{$color: 1}", VELA_ESYNTAX, "Unknown attribute '$color'");
	expect_err("a=>{$yield_distance_as: d}", VELA_ESYNTAX, "only to VECTOR_RANGE");
	expect_err("a=>{$weight: 1", VELA_ESYNTAX, "Unbalanced '{' at offset 3");
}

/* ------------------------------------------------------------ KNN */

Test(query_knn, basic_and_alias)
{
	query_t *q = parse_ok("*=>[KNN 10 @v $B]");
	const query_knn_t *k = query_knn(q);
	cr_assert_not_null(k);
	cr_assert_eq(k->k, 10);
	cr_assert_eq(k->field_no, 6);
	cr_assert_str_eq(k->field, "v");
	cr_assert_eq(k->blob_len, 8);
	cr_assert(memcmp(k->blob, vec8, 8) == 0);
	cr_assert_neq(k->blob, (const void *)vec8, "blob must be copied");
	cr_assert_null(k->alias);
	cr_assert_eq(k->set, 0);
	cr_assert(query_filter_is_all(q));
	query_free(q);

	q = parse_ok("(@color:{drama|action} @year:[(2000 +inf])=>[knn $k @v $B as Dist]");
	k = query_knn(q);
	cr_assert_eq(k->k, 7);
	cr_assert_str_eq(k->alias, "Dist");
	cr_assert_not(query_filter_is_all(q));
	query_free(q);

	q = parse_ok("*=>[KNN 0 @h $H]");
	cr_assert_eq(query_knn(q)->k, 0);
	cr_assert_eq(query_knn(q)->field_no, 7);
	query_free(q);
}

Test(query_knn, attributes)
{
	query_t *q = parse_ok("@color:{a}=>[KNN 5 @v $B EF_RUNTIME 20 EPSILON 0.5 HYBRID_POLICY "
			      "batches BATCH_SIZE 50 SEARCH_WINDOW_SIZE 40 USE_SEARCH_HISTORY auto "
			      "SEARCH_BUFFER_CAPACITY 64 AS d]");
	const query_knn_t *k = query_knn(q);
	cr_assert_eq(k->ef_runtime, 20);
	cr_assert_float_eq(k->epsilon, 0.5, 1e-12);
	cr_assert_eq(k->hybrid_policy, QUERY_HYBRID_BATCHES);
	cr_assert_eq(k->batch_size, 50);
	cr_assert_eq(k->search_window_size, 40);
	cr_assert_eq(k->use_search_history, QUERY_HISTORY_AUTO);
	cr_assert_eq(k->search_buffer_capacity, 64);
	cr_assert_str_eq(k->alias, "d");
	cr_assert_eq(k->set, QUERY_KNN_EF_RUNTIME | QUERY_KNN_EPSILON | QUERY_KNN_HYBRID_POLICY |
				     QUERY_KNN_BATCH_SIZE | QUERY_KNN_SEARCH_WINDOW_SIZE |
				     QUERY_KNN_USE_SEARCH_HISTORY |
				     QUERY_KNN_SEARCH_BUFFER_CAPACITY | QUERY_KNN_ALIAS);
	query_free(q);
}

Test(query_knn, attribute_block)
{
	query_t *q = parse_ok("(@color:{action})=>[KNN 10 @v $B]=>{$HYBRID_POLICY: ADHOC_BF; "
			      "$yield_distance_as: dist; $shard_k_ratio: 0.5}");
	const query_knn_t *k = query_knn(q);
	cr_assert_eq(k->hybrid_policy, QUERY_HYBRID_ADHOC_BF);
	cr_assert_str_eq(k->alias, "dist");
	cr_assert_float_eq(k->shard_k_ratio, 0.5, 1e-12);
	query_free(q);
	EXPECT_EX("@color:{a}=>[KNN 3 @v $B EF_RUNTIME $k AS d]",
		  "VECTOR {\n  TAG @color {\n    a\n  }\n  KNN 3 @v blob(8 bytes) AS d EF_RUNTIME 7\n}\n");
}

Test(query_knn, errors)
{
	expect_err("*=>[KNN 1 @v $B]=>[KNN 1 @v $B]", VELA_ESYNTAX,
		   "KNN clause may appear only once (second one at offset 16)");
	expect_err("*=>[KNN 100001 @v $B]", VELA_ELIMIT, "larger than the maximum 100000");
	expect_err("*=>[KNN $kbig @v $B]", VELA_ELIMIT, "larger than the maximum");
	expect_err("*=>[KNN str @v $B]", VELA_ESYNTAX, "Syntax error");
	expect_err("*=>[KNN -1 @v $B]", VELA_ESYNTAX, "invalid KNN K '-1'");
	expect_err("*=>[KNN 5 @v $short]", VELA_EDIM,
		   "Error parsing vector similarity query: query vector blob size (7) does not "
		   "match index's expected size (8).");
	expect_err("*=>[KNN 5 @h $short]", VELA_EDIM, "expected size (8)");
	expect_err("*=>[KNN 5 @price $B]", VELA_ETYPE, "Expected a VECTOR field");
	expect_err("*=>[KNN 5 @nope $B]", VELA_ENOTFOUND, "Unknown field 'nope' at offset 11");
	expect_err("*=>[KNN 5 @v $nope]", VELA_ENOTFOUND, "No such parameter '$nope'");
	expect_err("*=>[KNN 5 @v B]", VELA_ESYNTAX, "Expected a $parameter");
	expect_err("*=>[KNN 5 @v $B", VELA_ESYNTAX, "Unbalanced '[' at offset 3");
	expect_err("*=>[KNN 5 @v $B EF_RUNTIME 5 EF_RUNTIME 6]", VELA_ESYNTAX,
		   "Parameter was specified twice");
	expect_err("*=>[KNN 5 @v $B AS a]=>{$yield_distance_as: b}", VELA_ESYNTAX,
		   "Parameter was specified twice");
	expect_err("@color:{a}=>[KNN 5 @v $B HYBRID_POLICY FAST]", VELA_ESYNTAX,
		   "invalid hybrid policy was given");
	expect_err("@color:{a}=>[KNN 5 @v $B HYBRID_POLICY ADHOC_BF BATCH_SIZE 10]", VELA_ESYNTAX,
		   "'batch size' is irrelevant for 'ADHOC_BF' policy");
	expect_err("@color:{a}=>[KNN 5 @v $B HYBRID_POLICY ADHOC_BF EF_RUNTIME 10]", VELA_ESYNTAX,
		   "'EF_RUNTIME' is irrelevant for 'ADHOC_BF' policy");
	expect_err("*=>[KNN 5 @v $B HYBRID_POLICY BATCHES]", VELA_ESYNTAX,
		   "hybrid query attributes were sent for a non-hybrid query");
	expect_err("(*)=>[KNN 5 @v $B BATCH_SIZE 3]", VELA_ESYNTAX,
		   "hybrid query attributes were sent for a non-hybrid query");
	expect_err("*=>[KNN 5 @v $B EF_RUNTIME -1]", VELA_ESYNTAX,
		   "Invalid value was given (Error parsing vector similarity parameters)");
	expect_err("*=>[KNN 5 @v $B EF_RUNTIME 1.5]", VELA_ESYNTAX, "Invalid value was given");
	expect_err("*=>[KNN 5 @v $B USE_SEARCH_HISTORY maybe]", VELA_ESYNTAX,
		   "Invalid value was given");
	expect_err("*=>[KNN 5 @v $B COLOR 1]", VELA_ESYNTAX, "Unknown KNN attribute 'COLOR'");
	expect_err("*=>[KNN 5 @v $B AS price]", VELA_EEXISTS,
		   "Property `price` already exists in schema");
	expect_err("(a =>[KNN 5 @v $B])", VELA_ESYNTAX, "KNN is allowed only at the top level");
	expect_err("*=>[KNN 5 @v $B] extra", VELA_ESYNTAX, "Syntax error at offset 17 near 'e'");
	expect_err("*=>[FOO 5 @v $B]", VELA_ESYNTAX, "Syntax error at offset 4 near 'F'");
}

/* ------------------------------------------------------------ VECTOR_RANGE */

Test(query_vrange, clauses)
{
	query_t *q = parse_ok("(@color:{shirt} @year:[2020 2022]) | @v:[VECTOR_RANGE 0.8 $B]"
			      "=>{$YIELD_DISTANCE_AS: vector_distance; $EPSILON: 0.25}");
	cr_assert_eq(query_vrange_count(q), 1);
	const query_vrange_t *v = query_vrange_at(q, 0);
	cr_assert_eq(v->field_no, 6);
	cr_assert_float_eq(v->radius, 0.8, 1e-12);
	cr_assert_eq(v->blob_len, 8);
	cr_assert_str_eq(v->yield_distance_as, "vector_distance");
	cr_assert(v->has_epsilon);
	cr_assert_float_eq(v->epsilon, 0.25, 1e-12);
	cr_assert_null(query_vrange_at(q, 1));
	cr_assert_null(query_knn(q));
	query_free(q);

	q = parse_ok("@v:[vector_range $r $B] @h:[VECTOR_RANGE 2 $H]");
	cr_assert_eq(query_vrange_count(q), 2);
	cr_assert_float_eq(query_vrange_at(q, 0)->radius, 0.5, 1e-12);
	cr_assert_eq(query_vrange_at(q, 1)->field_no, 7);
	cr_assert_not(query_vrange_at(q, 1)->has_epsilon);
	query_free(q);
	EXPECT_EX("@v:[VECTOR_RANGE 1 $B]=>{$yield_distance_as: d}",
		  "VECTOR_RANGE @v radius 1 blob(8 bytes) YIELD_DISTANCE_AS d\n");

	expect_err("@v:[VECTOR_RANGE -1 $B]", VELA_ESYNTAX, "Negative radius");
	expect_err("@v:[VECTOR_RANGE 1 $short]", VELA_EDIM, "blob size (7)");
	expect_err("@price:[VECTOR_RANGE 1 $B]", VELA_ETYPE, "Field 'price' is not a VECTOR field");
	expect_err("@v:[1 2]", VELA_ESYNTAX, "Expected VECTOR_RANGE");
	expect_err("@v:[VECTOR_RANGE 1 $B", VELA_ESYNTAX, "Unbalanced '[' at offset 3");
	expect_err("@v:[VECTOR_RANGE 1 $B]=>{$EPSILON: -1}", VELA_ESYNTAX, "Invalid value");
}

/* ------------------------------------------------------------ errors */

Test(query_errors, offsets_and_messages)
{
	expect_err("@color:{red", VELA_ESYNTAX, "Unbalanced '{' at offset 7");
	expect_err("@color:{red | blue ", VELA_ESYNTAX, "Unbalanced '{' at offset 7");
	expect_err("@price:[1 2", VELA_ESYNTAX, "Unbalanced '[' at offset 7");
	expect_err("(a b", VELA_ESYNTAX, "Unbalanced '(' at offset 0");
	expect_err("x ((a b)", VELA_ESYNTAX, "Unbalanced '(' at offset 2");
	expect_err("a b)", VELA_ESYNTAX, "Unbalanced ')' at offset 3");
	expect_err("@title:\"abc", VELA_ESYNTAX, "Unbalanced '\"' at offset 7");
	expect_err("@colr:{x}", VELA_ENOTFOUND, "Unknown field 'colr' at offset 1");
	expect_err("@price:{x}", VELA_ETYPE, "Field 'price' is not a TAG field (offset 1)");
	expect_err("@color:[1 2]", VELA_ETYPE, "Field 'color' is not a NUMERIC field (offset 1)");
	expect_err("@color:foo", VELA_ETYPE, "Field 'color' is not a TEXT field (offset 1)");
	expect_err("@title|color:foo", VELA_ETYPE, "Field 'color' is not a TEXT field (offset 7)");
	expect_err("@color>5", VELA_ETYPE, "is not a NUMERIC field");
	expect_err("@price:[$nope 5]", VELA_ENOTFOUND, "No such parameter '$nope' at offset 8");
	expect_err("@color:{$nope}", VELA_ENOTFOUND, "No such parameter '$nope'");
	expect_err("@price:[abc 5]", VELA_ESYNTAX, "Invalid numeric value 'abc' at offset 8");
	expect_err("@price:[1 0x10]", VELA_ESYNTAX, "Invalid numeric value '0x10'");
	expect_err("@price:[1 nan]", VELA_ESYNTAX, "Invalid numeric value 'nan'");
	expect_err("@price:[$bad 5]", VELA_ESYNTAX, "Invalid numeric value 'abc'");
	expect_err("@price:[1 1e999]", VELA_ESYNTAX, "Invalid numeric value");
	expect_err("@price:[(5]", VELA_ESYNTAX, "Syntax error at offset 10 near ']'");
	expect_err("@price=5", VELA_ESYNTAX, "Syntax error at offset 6 near '='");
	expect_err("@color:{red}@", VELA_ESYNTAX, "Syntax error at offset 13 near end of query");
	expect_err("@color:{red} @", VELA_ESYNTAX, "near end of query");
	expect_err("a | | b", VELA_ESYNTAX, "Syntax error at offset 4 near '|'");
	expect_err("()", VELA_ESYNTAX, "Syntax error at offset 1 near ')'");
	expect_err("a ,b", VELA_ESYNTAX, "Syntax error at offset 2 near ','");
	expect_err("", VELA_ESYNTAX, "Empty query");
	expect_err("   ", VELA_ESYNTAX, "Empty query");
	expect_err("@color:{}", VELA_ESYNTAX, "Empty tag value");
	expect_err("@color:{a | }", VELA_ESYNTAX, "Empty tag value");
	expect_err("@color:{a{b}", VELA_ESYNTAX, "Syntax error at offset 9 near '{'");
	expect_err("@title:\"...\"", VELA_ESYNTAX, "No searchable term");
	expect_err("abc\\", VELA_ESYNTAX, "Dangling escape");
	expect_err("@color|brand:{a}", VELA_ESYNTAX, "only for TEXT");
	expect_err("\x01", VELA_ESYNTAX, "near '\\x01'");
}

Test(query_errors, unsupported_forms)
{
	expect_err("hel*", VELA_EUNSUPPORTED, "Prefix queries");
	expect_err("*lo", VELA_EUNSUPPORTED, "Suffix queries");
	expect_err("%hello%", VELA_EUNSUPPORTED, "Fuzzy queries");
	expect_err("@color:{pre*}", VELA_EUNSUPPORTED, "Wildcard tag");
	EXPECT_EX("@color:{pre\\*}", "TAG @color {\n  pre*\n}\n");
}

Test(query_errors, invalid_arguments)
{
	query_t *q;
	cr_assert_eq(query_parse("*", 1, NULL, 0, NULL, NULL, &q, NULL), VELA_EINVAL);
	cr_assert_eq(query_parse("*", 1, NULL, 0, lookup, NULL, NULL, NULL), VELA_EINVAL);
	cr_assert_eq(query_parse(NULL, 3, NULL, 0, lookup, NULL, &q, NULL), VELA_EINVAL);
	/* The text need not be NUL-terminated: only `len` bytes are read. */
	cr_assert_eq(query_parse("*garbage", 1, NULL, 0, lookup, NULL, &q, NULL), 0);
	query_free(q);
	query_free(NULL);
	query_limits_t lim;
	query_limits_default(&lim);
	lim.max_depth = QUERY_DEPTH_MAX + 1;
	cr_assert_eq(query_parse_ex("*", 1, NULL, 0, lookup, NULL, &lim, &q, NULL), VELA_EINVAL);
}

/* ------------------------------------------------------------ limits */

static int parse_lim(const char *text, const query_limits_t *lim, vela_err_t *err)
{
	query_t *q = NULL;
	int rc = query_parse_ex(text, strlen(text), P, N_P, lookup, NULL, lim, &q, err);
	query_free(q);
	return rc;
}

Test(query_limits, depth)
{
	char buf[1024];
	vela_err_t err;
	size_t n = QUERY_DEPTH_DEFAULT - 1; /* the top level is one level */
	memset(buf, '(', n);
	buf[n] = 'a';
	memset(buf + n + 1, ')', n);
	buf[2 * n + 1] = '\0';
	cr_assert_eq(parse_lim(buf, NULL, &err), 0, "%s", err.msg);
	n++;
	memset(buf, '(', n);
	buf[n] = 'a';
	memset(buf + n + 1, ')', n);
	buf[2 * n + 1] = '\0';
	cr_assert_eq(parse_lim(buf, NULL, &err), VELA_ELIMIT);
	cr_assert(strstr(err.msg, "nested too deeply (limit 64)") != NULL, "%s", err.msg);
	/* Prefix operators and field scopes count too (they recurse). */
	memset(buf, '-', 500);
	strcpy(buf + 500, "a");
	cr_assert_eq(parse_lim(buf, NULL, &err), VELA_ELIMIT);
	buf[0] = '\0';
	for (int i = 0; i < 100; i++)
		strcat(buf, "@title:");
	strcat(buf, "a");
	cr_assert_eq(parse_lim(buf, NULL, &err), VELA_ELIMIT);
	query_limits_t lim;
	query_limits_default(&lim);
	lim.max_depth = QUERY_DEPTH_MAX;
	cr_assert_eq(parse_lim(buf, &lim, &err), 0, "%s", err.msg);
}

Test(query_limits, length_nodes_tags)
{
	query_limits_t lim;
	query_limits_default(&lim);
	vela_err_t err;
	lim.max_len = 8;
	cr_assert_eq(parse_lim("abcdefghi", &lim, &err), VELA_ELIMIT);
	cr_assert(strstr(err.msg, "too long") != NULL);
	cr_assert_eq(parse_lim("abcdefgh", &lim, &err), 0);

	query_limits_default(&lim);
	lim.max_nodes = 5;
	cr_assert_eq(parse_lim("a b c d e", &lim, &err), VELA_ELIMIT); /* 5 terms + AND */
	cr_assert(strstr(err.msg, "too many clauses") != NULL, "%s", err.msg);
	cr_assert_eq(parse_lim("a b c d", &lim, &err), 0);

	query_limits_default(&lim);
	lim.max_tag_values = 3;
	cr_assert_eq(parse_lim("@color:{a|b} @color:{c|d}", &lim, &err), VELA_ELIMIT);
	cr_assert(strstr(err.msg, "too many tag values") != NULL);
	cr_assert_eq(parse_lim("@color:{a|b|c}", &lim, &err), 0);

	/* Default node limit holds on a long flat query. */
	size_t cap = 5 * QUERY_NODES_DEFAULT + 16;
	char *big = malloc(cap);
	big[0] = '\0';
	for (unsigned i = 0; i < QUERY_NODES_DEFAULT + 1; i++)
		strcat(big, "a ");
	cr_assert_eq(parse_lim(big, NULL, &err), VELA_ELIMIT);
	free(big);
}

Test(query_explain, truncation)
{
	query_t *q = parse_ok("@color:{a|b} @price:[1 2]");
	int full = query_explain(q, NULL, 0);
	cr_assert_gt(full, 10);
	char small[8];
	int n = query_explain(q, small, sizeof(small));
	cr_assert_eq(n, full);
	cr_assert_eq(strlen(small), sizeof(small) - 1);
	query_free(q);
}

/* ------------------------------------------------------------ fake source */

#define NDOC 200
#define NTAG 4

typedef struct doc {
	uint32_t id;
	const char *tags[NTAG]; /* color field, stored lowercase; NULL ends */
	int has_price;
	double price;
	const char *title[3], *body[3];
	float vec[2];
} doc_t;

static doc_t docs[NDOC];
static int calls_all;

static const char *const tag_vocab[] = {"red", "blue", "green yellow", "a-b", "x|y", "c.d"};
static const char *const term_vocab[] = {"alpha", "beta", "gamma", "delta_x", "epsilon"};
#define N_TAGV (sizeof(tag_vocab) / sizeof(tag_vocab[0]))
#define N_TERMV (sizeof(term_vocab) / sizeof(term_vocab[0]))

static bool has_str(const char *const *v, size_t n, const char *s, size_t len)
{
	for (size_t i = 0; i < n && v[i]; i++)
		if (strlen(v[i]) == len && memcmp(v[i], s, len) == 0)
			return true;
	return false;
}

static int src_all(void *ctx, roaring_bitmap_t *out)
{
	(void)ctx;
	calls_all++;
	for (int i = 0; i < NDOC; i++)
		roaring_bitmap_add(out, docs[i].id);
	return 0;
}

static int src_tag(void *ctx, uint32_t f, const char *v, size_t len, roaring_bitmap_t *out)
{
	cr_assert_eq(f, 0);
	for (int i = 0; i < NDOC; i++)
		if (has_str(docs[i].tags, NTAG, v, len))
			roaring_bitmap_add(out, docs[i].id);
	return 0;
}

static bool in_range(double x, double lo, int lo_excl, double hi, int hi_excl)
{
	return (lo_excl ? x > lo : x >= lo) && (hi_excl ? x < hi : x <= hi);
}

static int src_num(void *ctx, uint32_t f, double lo, int le, double hi, int he,
		   roaring_bitmap_t *out)
{
	cr_assert_eq(f, 2);
	for (int i = 0; i < NDOC; i++)
		if (docs[i].has_price && in_range(docs[i].price, lo, le, hi, he))
			roaring_bitmap_add(out, docs[i].id);
	return 0;
}

static int src_text(void *ctx, int32_t f, const char *t, size_t len, roaring_bitmap_t *out)
{
	cr_assert(f == -1 || f == 4 || f == 5);
	for (int i = 0; i < NDOC; i++)
		if (((f == -1 || f == 4) && has_str(docs[i].title, 3, t, len)) ||
		    ((f == -1 || f == 5) && has_str(docs[i].body, 3, t, len)))
			roaring_bitmap_add(out, docs[i].id);
	return 0;
}

static int src_vrange(void *ctx, uint32_t f, const void *blob, size_t len, double r,
		      roaring_bitmap_t *out)
{
	float q[2];
	cr_assert_eq(len, sizeof(q));
	memcpy(q, blob, sizeof(q));
	for (int i = 0; i < NDOC; i++) {
		float dx = docs[i].vec[0] - q[0], dy = docs[i].vec[1] - q[1];
		if (dx * dx + dy * dy <= r)
			roaring_bitmap_add(out, docs[i].id);
	}
	return 0;
}

static const query_source_t source = {.all = src_all, .tag = src_tag, .num_range = src_num,
				      .text_term = src_text, .vector_range = src_vrange};

/* A source that also keeps each tag value's bitmap (as the batch cache
 * does), so multi-value clauses take query_source_t.tag_ref. */
#define REF_MAX 4096
static roaring_bitmap_t *ref_kept[REF_MAX];
static int ref_n, ref_calls;

static int src_tag_ref(void *ctx, uint32_t f, const char *v, size_t len,
		       const roaring_bitmap_t **bm)
{
	cr_assert_lt(ref_n, REF_MAX);
	roaring_bitmap_t *b = roaring_bitmap_create();
	src_tag(ctx, f, v, len, b);
	ref_calls++;
	*bm = roaring_bitmap_is_empty(b) ? NULL : b; /* NULL: no document */
	ref_kept[ref_n++] = b;
	return 0;
}

static void ref_free(void)
{
	for (int i = 0; i < ref_n; i++)
		roaring_bitmap_free(ref_kept[i]);
	ref_n = 0;
}

static const query_source_t source_ref = {.all = src_all, .tag = src_tag,
					  .num_range = src_num, .text_term = src_text,
					  .vector_range = src_vrange, .tag_ref = src_tag_ref};

static void docs_make(unsigned seed)
{
	srand(seed);
	for (int i = 0; i < NDOC; i++) {
		doc_t *d = &docs[i];
		memset(d, 0, sizeof(*d));
		d->id = (uint32_t)i * 7 + 3; /* sparse docids */
		for (int t = 0, n = rand() % NTAG; t < n; t++)
			d->tags[t] = tag_vocab[rand() % N_TAGV];
		d->has_price = rand() % 5 != 0;
		d->price = (rand() % 20) / 2.0;
		for (int t = 0, n = rand() % 3; t < n; t++)
			d->title[t] = term_vocab[rand() % N_TERMV];
		for (int t = 0, n = rand() % 3; t < n; t++)
			d->body[t] = term_vocab[rand() % N_TERMV];
		d->vec[0] = (float)(rand() % 5);
		d->vec[1] = (float)(rand() % 5);
	}
}

static roaring_bitmap_t *eval_text(const char *text, const query_param_t *params, size_t np)
{
	query_t *q = NULL;
	vela_err_t err = {0};
	int rc = query_parse(text, strlen(text), params, np, lookup, NULL, &q, &err);
	cr_assert_eq(rc, 0, "<%s>: %s", text, err.msg);
	roaring_bitmap_t *b = NULL;
	rc = query_eval(q, &source, &b, &err);
	cr_assert_eq(rc, 0, "<%s>: %s", text, err.msg);
	uint64_t cnt;
	cr_assert_eq(query_eval_count(q, &source, &cnt, &err), 0);
	cr_assert_eq(cnt, roaring_bitmap_get_cardinality(b));
	query_free(q);
	return b;
}

/* Docids where pred(doc) holds. */
static roaring_bitmap_t *expect_where(bool (*pred)(const doc_t *))
{
	roaring_bitmap_t *b = roaring_bitmap_create();
	for (int i = 0; i < NDOC; i++)
		if (pred(&docs[i]))
			roaring_bitmap_add(b, docs[i].id);
	return b;
}

static void assert_same(roaring_bitmap_t *got, roaring_bitmap_t *want, const char *what)
{
	cr_assert(roaring_bitmap_equals(got, want), "%s: got %llu docs, want %llu", what,
		  (unsigned long long)roaring_bitmap_get_cardinality(got),
		  (unsigned long long)roaring_bitmap_get_cardinality(want));
	roaring_bitmap_free(got);
	roaring_bitmap_free(want);
}

static bool p_ne5(const doc_t *d) { return d->has_price && d->price != 5; }
static bool p_not_red(const doc_t *d) { return !has_str(d->tags, NTAG, "red", 3); }
static bool p_alpha_not_beta(const doc_t *d)
{
	return (has_str(d->title, 3, "alpha", 5) || has_str(d->body, 3, "alpha", 5)) &&
	       !(has_str(d->title, 3, "beta", 4) || has_str(d->body, 3, "beta", 4));
}
static bool p_all(const doc_t *d) { return d != NULL; }
static bool p_none(const doc_t *d) { return d == NULL; }
static bool p_near(const doc_t *d)
{
	float dx = d->vec[0] - 1, dy = d->vec[1] - 2;
	return dx * dx + dy * dy <= 1.0f;
}

Test(query_eval, semantics)
{
	docs_make(1);
	assert_same(eval_text("@price!=5", P, N_P), expect_where(p_ne5), "!=");
	assert_same(eval_text("-@color:{RED}", P, N_P), expect_where(p_not_red), "NOT tag");
	calls_all = 0;
	assert_same(eval_text("alpha -beta", P, N_P), expect_where(p_alpha_not_beta), "a -b");
	cr_assert_eq(calls_all, 0, "AND with NOT must not fetch all docids");
	assert_same(eval_text("*", P, N_P), expect_where(p_all), "*");
	assert_same(eval_text("~alpha", P, N_P), expect_where(p_all), "~");
	assert_same(eval_text("-*", P, N_P), expect_where(p_none), "-*");
	assert_same(eval_text("@v:[VECTOR_RANGE 1 $B]", P, N_P), expect_where(p_near), "vrange");
	assert_same(eval_text("@price:[1 0]", P, N_P), expect_where(p_none), "empty range");
	assert_same(eval_text("*=>[KNN 3 @v $B]", P, N_P), expect_where(p_all), "knn filter");
}

Test(query_eval, missing_callbacks_and_failures)
{
	query_source_t s = {0};
	query_t *q = parse_ok("@color:{a}");
	roaring_bitmap_t *b = (roaring_bitmap_t *)1;
	vela_err_t err;
	cr_assert_eq(query_eval(q, &s, &b, &err), VELA_EUNSUPPORTED);
	cr_assert_null(b);
	cr_assert(strstr(err.msg, "TAG") != NULL);
	query_free(q);
	cr_assert_eq(query_eval(NULL, &s, &b, &err), VELA_EINVAL);
}

static int fail_num(void *ctx, uint32_t f, double lo, int le, double hi, int he,
		    roaring_bitmap_t *out)
{
	return VELA_EIO;
}

Test(query_eval, callback_error_propagates)
{
	docs_make(2);
	query_source_t s = source;
	s.num_range = fail_num;
	const char *qs[] = {"@color:{red} @price:[1 2]", "@color:{red} | @price:[1 2]",
			    "-@price:[1 2]", "@price!=3"};
	for (size_t i = 0; i < 4; i++) {
		query_t *q = parse_ok(qs[i]);
		roaring_bitmap_t *b = (roaring_bitmap_t *)1;
		vela_err_t err = {0};
		cr_assert_eq(query_eval(q, &s, &b, &err), VELA_EIO, "%s", qs[i]);
		cr_assert_null(b);
		cr_assert_eq(err.code, VELA_EIO);
		query_free(q);
	}
}

/* ------------------------------------------------------------ property test */

enum { T_TAG, T_RANGE, T_CMP, T_TEXT, T_AND, T_OR, T_NOT, T_ALL, T_KINDS };

typedef struct tnode {
	int kind;
	int vals[3], nvals;    /* T_TAG: vocab indexes; T_TEXT: one term */
	int text_field;        /* T_TEXT: -1 any, 4 title, 5 body, 45 both */
	double lo, hi;         /* T_RANGE / T_CMP (lo = value) */
	int lo_excl, hi_excl;
	int op;                /* T_CMP: 0 == 1 != 2 > 3 >= 4 < 5 <= */
	struct tnode *kids[3];
	int nkids;
} tnode_t;

static tnode_t pool[4096];
static int pool_n;

static double rnd_bound(void)
{
	int r = rand() % 12;
	return r == 10 ? -INFINITY : r == 11 ? INFINITY : (rand() % 22 - 1) / 2.0;
}

static tnode_t *gen(int depth)
{
	tnode_t *n = &pool[pool_n++];
	memset(n, 0, sizeof(*n));
	n->kind = depth <= 0 ? rand() % 4 : rand() % T_KINDS;
	switch (n->kind) {
	case T_TAG:
		n->nvals = 1 + rand() % 3;
		for (int i = 0; i < n->nvals; i++)
			n->vals[i] = rand() % (int)N_TAGV;
		break;
	case T_RANGE:
		n->lo = rnd_bound();
		n->hi = rnd_bound();
		n->lo_excl = rand() % 2;
		n->hi_excl = rand() % 2;
		break;
	case T_CMP:
		n->op = rand() % 6;
		n->lo = (rand() % 22 - 1) / 2.0;
		break;
	case T_TEXT: {
		static const int fields[] = {-1, 4, 5, 45};
		n->vals[0] = rand() % (int)N_TERMV;
		n->text_field = fields[rand() % 4];
		break;
	}
	case T_AND:
	case T_OR:
		n->nkids = 2 + rand() % 2;
		for (int i = 0; i < n->nkids; i++)
			n->kids[i] = gen(depth - 1);
		break;
	case T_NOT:
		n->nkids = 1;
		n->kids[0] = gen(depth - 1);
		break;
	}
	return n;
}

static void put_num(char *s, double v)
{
	if (isinf(v))
		strcat(s, v < 0 ? "-inf" : (rand() % 2 ? "+inf" : "inf"));
	else
		sprintf(s + strlen(s), "%g", v);
}

/* Tag value with random case and every punctuation byte escaped. */
static void put_tag(char *s, const char *v)
{
	char *o = s + strlen(s);
	for (; *v; v++) {
		if (*v != ' ' && *v != '_' && !((*v >= 'a' && *v <= 'z') || (*v >= '0' && *v <= '9')))
			*o++ = '\\';
		*o++ = (rand() % 2 && *v >= 'a' && *v <= 'z') ? (char)(*v - 32) : *v;
	}
	*o = '\0';
}

static void render(char *s, const tnode_t *n);

static void render_kid(char *s, const tnode_t *k, int parent)
{
	/* Parens only where precedence needs them, plus some at random. */
	bool wrap = (parent == T_AND && k->kind == T_OR) ||
		    (parent == T_NOT && (k->kind == T_AND || k->kind == T_OR)) || rand() % 6 == 0;
	strcat(s, wrap ? "(" : "");
	render(s, k);
	strcat(s, wrap ? ")" : "");
}

static void render(char *s, const tnode_t *n)
{
	static const char *const ops[] = {"==", "!=", ">", ">=", "<", "<="};
	switch (n->kind) {
	case T_TAG:
		strcat(s, "@color:{");
		for (int i = 0; i < n->nvals; i++) {
			strcat(s, i ? (rand() % 2 ? " | " : "|") : (rand() % 2 ? " " : ""));
			put_tag(s, tag_vocab[n->vals[i]]);
		}
		strcat(s, "}");
		break;
	case T_RANGE:
		strcat(s, n->lo_excl ? "@price:[(" : "@price:[");
		put_num(s, n->lo);
		strcat(s, n->hi_excl ? " (" : " ");
		put_num(s, n->hi);
		strcat(s, "]");
		break;
	case T_CMP:
		strcat(s, "@price");
		strcat(s, ops[n->op]);
		put_num(s, n->lo);
		break;
	case T_TEXT:
		strcat(s, n->text_field == -1 ? "" : n->text_field == 4 ? "@title:" :
			  n->text_field == 5 ? "@body:" : "@title|body:");
		strcat(s, term_vocab[n->vals[0]]);
		break;
	case T_ALL:
		strcat(s, "*");
		break;
	case T_NOT:
		strcat(s, "-");
		render_kid(s, n->kids[0], T_NOT);
		break;
	default:
		for (int i = 0; i < n->nkids; i++) {
			if (i)
				strcat(s, n->kind == T_AND ? " " : (rand() % 2 ? " | " : "|"));
			render_kid(s, n->kids[i], n->kind);
		}
	}
}

static bool text_has(const doc_t *d, int field, const char *t)
{
	size_t len = strlen(t);
	bool in_t = has_str(d->title, 3, t, len), in_b = has_str(d->body, 3, t, len);
	return field == 4 ? in_t : field == 5 ? in_b : (in_t || in_b);
}

static bool cmp_holds(const doc_t *d, int op, double v)
{
	if (!d->has_price)
		return false;
	double x = d->price;
	switch (op) {
	case 0: return x == v;
	case 1: return x != v;
	case 2: return x > v;
	case 3: return x >= v;
	case 4: return x < v;
	default: return x <= v;
	}
}

static bool holds(const doc_t *d, const tnode_t *n)
{
	switch (n->kind) {
	case T_TAG:
		for (int i = 0; i < n->nvals; i++) {
			const char *v = tag_vocab[n->vals[i]];
			if (has_str(d->tags, NTAG, v, strlen(v)))
				return true;
		}
		return false;
	case T_RANGE:
		return d->has_price && in_range(d->price, n->lo, n->lo_excl, n->hi, n->hi_excl);
	case T_CMP:
		return cmp_holds(d, n->op, n->lo);
	case T_TEXT:
		return text_has(d, n->text_field, term_vocab[n->vals[0]]);
	case T_ALL:
		return true;
	case T_NOT:
		return !holds(d, n->kids[0]);
	case T_AND:
		for (int i = 0; i < n->nkids; i++)
			if (!holds(d, n->kids[i]))
				return false;
		return true;
	default:
		for (int i = 0; i < n->nkids; i++)
			if (holds(d, n->kids[i]))
				return true;
		return false;
	}
}

Test(query_eval, random_filters_match_direct_evaluation)
{
	static char text[16384];
	for (unsigned round = 0; round < 1500; round++) {
		if (round % 100 == 0)
			docs_make(round + 17);
		pool_n = 0;
		const tnode_t *t = gen(rand() % 5);
		text[0] = '\0';
		render(text, t);
		roaring_bitmap_t *got = eval_text(text, NULL, 0);
		roaring_bitmap_t *want = roaring_bitmap_create();
		for (int i = 0; i < NDOC; i++)
			if (holds(&docs[i], t))
				roaring_bitmap_add(want, docs[i].id);
		cr_assert(roaring_bitmap_equals(got, want), "round %u <%s>: got %llu want %llu",
			  round, text, (unsigned long long)roaring_bitmap_get_cardinality(got),
			  (unsigned long long)roaring_bitmap_get_cardinality(want));
		roaring_bitmap_free(got);
		roaring_bitmap_free(want);
	}
}

/* The same random filters through a source with tag_ref: the union of the
 * kept bitmaps (roaring_bitmap_or_many) equals the direct evaluation. */
Test(query_eval, tag_refs_match_direct_evaluation)
{
	static char text[16384];
	ref_calls = 0;
	for (unsigned round = 0; round < 600; round++) {
		if (round % 100 == 0)
			docs_make(round + 91);
		pool_n = 0;
		const tnode_t *t = gen(rand() % 5);
		text[0] = '\0';
		render(text, t);
		query_t *q = NULL;
		vela_err_t err = {0};
		cr_assert_eq(query_parse(text, strlen(text), NULL, 0, lookup, NULL, &q, &err), 0,
			     "<%s>: %s", text, err.msg);
		roaring_bitmap_t *got = NULL;
		cr_assert_eq(query_eval(q, &source_ref, &got, &err), 0, "<%s>: %s", text, err.msg);
		roaring_bitmap_t *want = roaring_bitmap_create();
		for (int i = 0; i < NDOC; i++)
			if (holds(&docs[i], t))
				roaring_bitmap_add(want, docs[i].id);
		cr_assert(roaring_bitmap_equals(got, want), "round %u <%s>", round, text);
		roaring_bitmap_free(got);
		roaring_bitmap_free(want);
		query_free(q);
		ref_free();
	}
	cr_assert_gt(ref_calls, 0, "the multi-value clauses took tag_ref");
}
