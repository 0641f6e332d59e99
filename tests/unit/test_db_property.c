/* Property test: random schemas, documents and filters; every search result
 * must equal an independent brute-force evaluation in double precision
 * written here (its own tag splitting, tokenising, range logic and
 * distances), including exact ties, filters matching nothing or everything,
 * indexing failures, updates and deletes. */
#include "test_db_util.h"

#define MAXD 40
#define MAXN 400

typedef struct tdoc {
	char key[32];
	int live;      /* present in the database */
	int valid;     /* indexable (else an indexing failure) */
	int order;     /* insertion order among indexed docs (== docid order without reuse) */
	char tags[64];
	int has_tags;
	double num;
	int has_num;
	char text[64];
	int has_vec;
	double vec[MAXD];
} tdoc_t;

typedef struct world {
	int dim, metric, f16, n;
	tdoc_t docs[MAXN];
} world_t;

static const char *tag_vocab[] = {"red", "Green", "blue", "teal", "dark red"};
static const char *word_vocab[] = {"alpha", "beta", "gamma", "delta"};

static int rnd(int n)
{
	return rand() % n;
}

/* ------------------------------------------------------------ reference predicates */

static int ref_has_tag(const tdoc_t *d, const char *want)
{
	if (!d->has_tags)
		return 0;
	char buf[64];
	strcpy(buf, d->tags);
	for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		while (*t == ' ')
			t++;
		size_t n = strlen(t);
		while (n && t[n - 1] == ' ')
			t[--n] = '\0';
		if (strcasecmp(t, want) == 0)
			return 1;
	}
	return 0;
}

static int ref_has_word(const tdoc_t *d, const char *w)
{
	char buf[64];
	strcpy(buf, d->text);
	for (char *save, *t = strtok_r(buf, " ,.!", &save); t; t = strtok_r(NULL, " ,.!", &save))
		if (strcasecmp(t, w) == 0)
			return 1;
	return 0;
}

/* A filter AST rendered to text and evaluated here. */
typedef struct node {
	int kind; /* 0 tag, 1 num, 2 text, 3 and, 4 or, 5 not */
	int a, b;  /* tag indexes / word index */
	double lo, hi;
	int lo_ex, hi_ex;
	struct node *l, *r;
} node_t;

#define NQ 25
/* One node pool per query of a trial, so the whole batch can be checked at the end. */
static node_t pools[NQ][64];
static node_t *pool = pools[0];
static int pool_n;

static node_t *gen(int depth)
{
	node_t *n = &pool[pool_n++];
	memset(n, 0, sizeof(*n));
	n->kind = depth > 0 ? rnd(6) : rnd(3);
	switch (n->kind) {
	case 0:
		n->a = rnd(5);
		n->b = rnd(5);
		break;
	case 1:
		n->lo = rnd(8) == 0 ? -INFINITY : rnd(21) - 10;
		n->hi = rnd(8) == 0 ? INFINITY : n->lo + rnd(12);
		if (isinf(n->hi) && n->hi < 0)
			n->hi = 0;
		n->lo_ex = rnd(2);
		n->hi_ex = rnd(2);
		break;
	case 2:
		n->a = rnd(4);
		break;
	case 5:
		n->l = gen(depth - 1);
		break;
	default:
		n->l = gen(depth - 1);
		n->r = gen(depth - 1);
	}
	return n;
}

static void fmt_bound(char *b, double v)
{
	if (isinf(v))
		strcpy(b, v < 0 ? "-inf" : "+inf");
	else
		sprintf(b, "%g", v);
}

static void render(const node_t *n, char *out)
{
	char l[1024], r[1024], a[32], b[32];
	switch (n->kind) {
	case 0:
		/* "dark red" has a space: dialect 2 allows it inside braces. */
		sprintf(out, "@t:{%s | %s}", tag_vocab[n->a], tag_vocab[n->b]);
		break;
	case 1:
		fmt_bound(a, n->lo);
		fmt_bound(b, n->hi);
		sprintf(out, "@n:[%s%s %s%s]", n->lo_ex ? "(" : "", a, n->hi_ex ? "(" : "", b);
		break;
	case 2:
		sprintf(out, "@x:%s", word_vocab[n->a]);
		break;
	case 3:
		render(n->l, l);
		render(n->r, r);
		sprintf(out, "(%s %s)", l, r);
		break;
	case 4:
		render(n->l, l);
		render(n->r, r);
		sprintf(out, "(%s | %s)", l, r);
		break;
	default:
		render(n->l, l);
		sprintf(out, "-(%s)", l);
	}
}

static int eval(const node_t *n, const tdoc_t *d)
{
	switch (n->kind) {
	case 0:
		return ref_has_tag(d, tag_vocab[n->a]) || ref_has_tag(d, tag_vocab[n->b]);
	case 1:
		return d->has_num && (n->lo_ex ? d->num > n->lo : d->num >= n->lo) &&
		       (n->hi_ex ? d->num < n->hi : d->num <= n->hi);
	case 2:
		return ref_has_word(d, word_vocab[n->a]);
	case 3:
		return eval(n->l, d) && eval(n->r, d);
	case 4:
		return eval(n->l, d) || eval(n->r, d);
	default:
		return !eval(n->l, d);
	}
}

/* ------------------------------------------------------------ reference distance */

static double ref_dist(const world_t *w, const double *q, const double *x)
{
	double dot = 0, l2 = 0, nq = 0, nx = 0;
	for (int i = 0; i < w->dim; i++) {
		dot += q[i] * x[i];
		l2 += (q[i] - x[i]) * (q[i] - x[i]);
		nq += q[i] * q[i];
		nx += x[i] * x[i];
	}
	if (w->metric == VELA_METRIC_L2)
		return l2;
	if (w->metric == VELA_METRIC_IP)
		return 1 - dot;
	return 1 - dot / (sqrt(nq) * sqrt(nx));
}

/* ------------------------------------------------------------ building the world */

static void make_blob(const world_t *w, const double *v, int dim, uint8_t *blob, size_t *len)
{
	for (int i = 0; i < dim; i++) {
		if (w->f16) {
			uint16_t h = test_half_exact(v[i]);
			memcpy(blob + 2 * i, &h, 2);
		} else {
			float f = (float)v[i];
			memcpy(blob + 4 * i, &f, 4);
		}
	}
	*len = (size_t)dim * (w->f16 ? 2 : 4);
}

static void rand_vec(const world_t *w, double *v)
{
	do {
		for (int i = 0; i < w->dim; i++)
			v[i] = rnd(9) - 4;
		int nz = 0;
		for (int i = 0; i < w->dim; i++)
			nz |= v[i] != 0;
		if (nz)
			break;
	} while (1);
}

static int next_order;

static void write_doc(vela_db_t *db, world_t *w, tdoc_t *d, const double (*dup)[MAXD])
{
	d->has_tags = rnd(6) != 0;
	int nt = 1 + rnd(3);
	d->tags[0] = '\0';
	for (int i = 0; i < nt; i++) {
		strcat(d->tags, i ? " , " : "");
		strcat(d->tags, tag_vocab[rnd(5)]);
	}
	d->has_num = rnd(6) != 0;
	d->num = rnd(25) - 12 + (rnd(4) == 0 ? 0.5 : 0);
	int bad_num = rnd(25) == 0;
	sprintf(d->text, "%s %s, %s!", word_vocab[rnd(4)], word_vocab[rnd(4)], rnd(2) ? "Alpha" : "zeta");
	d->has_vec = rnd(10) != 0;
	if (dup && rnd(3) == 0)
		memcpy(d->vec, dup[rnd(4)], sizeof(d->vec));
	else
		rand_vec(w, d->vec);
	int bad_vec = rnd(25) == 0;

	vela_kv_t kv[5];
	size_t n = 0;
	char num[32];
	uint8_t blob[MAXD * 4 + 4];
	size_t bl;
	if (d->has_tags)
		kv[n++] = (vela_kv_t){"t", 1, d->tags, strlen(d->tags)};
	if (d->has_num || bad_num) {
		if (bad_num)
			strcpy(num, "12abc");
		else
			sprintf(num, "%g", d->num);
		kv[n++] = (vela_kv_t){"n", 1, num, strlen(num)};
	}
	kv[n++] = (vela_kv_t){"x", 1, d->text, strlen(d->text)};
	if (d->has_vec || bad_vec) {
		make_blob(w, d->vec, bad_vec ? w->dim + 1 : w->dim, blob, &bl);
		kv[n++] = (vela_kv_t){"v", 1, blob, bl};
	}
	/* Rewrite the whole hash: delete then set, as a fresh document. */
	vela_err_t err;
	int was_indexed = d->live && d->valid;
	vela_del(db, d->key, strlen(d->key), NULL, &err);
	cr_assert_eq(vela_hset(db, d->key, strlen(d->key), kv, n, NULL, &err), 0, "%s", err.msg);
	d->live = 1;
	d->valid = !bad_num && !bad_vec;
	d->has_num = d->has_num && !bad_num;
	if (d->valid)
		d->order = next_order++;
	(void)was_indexed;
}

static void create_schema(vela_db_t *db, const world_t *w)
{
	vela_field_def_t f[] = {
		{.name = "t", .type = VELA_FIELD_TAG},
		{.name = "n", .type = VELA_FIELD_NUMERIC},
		{.name = "x", .type = VELA_FIELD_TEXT},
		{.name = "v", .type = VELA_FIELD_VECTOR, .dim = (uint32_t)w->dim,
		 .metric = (vela_metric_t)w->metric, .vec_type = w->f16 ? VELA_VEC_FLOAT16 : VELA_VEC_FLOAT32},
	};
	const char *pre[] = {"d:"};
	vela_index_def_t def = {.name = "p", .prefixes = pre, .n_prefixes = 1, .fields = f, .n_fields = 4};
	vela_err_t err;
	cr_assert_eq(vela_index_create(db, &def, &err), 0, "%s", err.msg);
}

/* ------------------------------------------------------------ checks */

typedef struct cand {
	double d;
	int order;
	const tdoc_t *doc;
} cand_t;

static int cand_cmp(const void *a, const void *b)
{
	const cand_t *x = a, *y = b;
	if (x->d != y->d)
		return x->d < y->d ? -1 : 1;
	return x->order - y->order;
}

static const tdoc_t *find_doc(const world_t *w, const char *key)
{
	for (int i = 0; i < w->n; i++)
		if (strcmp(w->docs[i].key, key) == 0)
			return &w->docs[i];
	return NULL;
}

static void check_filter(const world_t *w, const node_t *f, const char *qs, vela_result_t *r)
{
	uint64_t want = 0;
	for (int i = 0; i < w->n; i++)
		want += w->docs[i].live && w->docs[i].valid && (!f || eval(f, &w->docs[i]));
	cr_assert_eq(r->total, want, "%s: total %llu, want %llu", qs,
		     (unsigned long long)r->total, (unsigned long long)want);
	for (size_t i = 0; i < r->n_hits; i++) {
		const tdoc_t *d = find_doc(w, r->hits[i].key);
		cr_assert(d && d->live && d->valid && (!f || eval(f, d)), "%s: %s should not match",
			  qs, r->hits[i].key);
	}
}

static void check_knn(const world_t *w, const node_t *f, const double *q, uint32_t k, int exact,
		      const char *qs, vela_result_t *r)
{
	static cand_t c[MAXN];
	size_t n = 0;
	for (int i = 0; i < w->n; i++) {
		const tdoc_t *d = &w->docs[i];
		if (d->live && d->valid && d->has_vec && (!f || eval(f, d)))
			c[n++] = (cand_t){ref_dist(w, q, d->vec), d->order, d};
	}
	qsort(c, n, sizeof(c[0]), cand_cmp);
	size_t want = n < k ? n : k;
	cr_assert_eq(r->n_hits, want, "%s: %zu hits, want %zu", qs, r->n_hits, want);
	cr_assert_eq(r->total, want);
	double tol = w->metric == VELA_METRIC_COSINE ? (w->f16 ? 4e-3 : 1e-5) : 0;
	for (size_t i = 0; i < want; i++) {
		const vela_search_hit_t *h = &r->hits[i];
		cr_assert(fabs(h->dist - c[i].d) <= tol + 1e-6 * fabs(c[i].d),
			  "%s: rank %zu dist %.9g, want %.9g", qs, i, h->dist, c[i].d);
		const tdoc_t *d = find_doc(w, h->key);
		cr_assert_not_null(d);
		double dd = ref_dist(w, q, d->vec);
		cr_assert(dd <= c[want - 1].d + tol, "%s: %s is not among the %u nearest", qs, h->key, k);
		if (exact)
			cr_assert_str_eq(h->key, c[i].doc->key, "%s: rank %zu (ties by docid)", qs, i);
		if (i)
			cr_assert(h->dist >= r->hits[i - 1].dist, "%s: not ascending", qs);
	}
}

/* ------------------------------------------------------------ the test */

static int key_cmp_doc(const void *a, const void *b)
{
	return strcmp((*(const tdoc_t *const *)a)->key, (*(const tdoc_t *const *)b)->key);
}

static void reorder_by_key(world_t *w)
{
	static tdoc_t *v[MAXN];
	for (int i = 0; i < w->n; i++)
		v[i] = &w->docs[i];
	qsort(v, (size_t)w->n, sizeof(v[0]), key_cmp_doc);
	next_order = 0;
	for (int i = 0; i < w->n; i++)
		if (v[i]->valid)
			v[i]->order = next_order++;
}

static void run_trial(int trial, int with_churn)
{
	char dir[64];
	tmpdir_make(dir, sizeof(dir));
	static world_t w;
	memset(&w, 0, sizeof(w));
	static const int dims[] = {1, 2, 3, 5, 8, 17, 33, 40};
	w.dim = dims[rnd(8)];
	w.metric = rnd(3);
	w.f16 = rnd(2);
	w.n = 40 + rnd(MAXN - 40);
	next_order = 0;
	vela_db_t *db = db_open_ok(dir, 0);
	int late_index = rnd(2); /* create the index after the data: initial scan */
	if (!late_index)
		create_schema(db, &w);
	double dup[4][MAXD];
	for (int i = 0; i < 4; i++)
		rand_vec(&w, dup[i]);
	for (int i = 0; i < w.n; i++) {
		sprintf(w.docs[i].key, "d:%d", i);
		write_doc(db, &w, &w.docs[i], dup);
	}
	if (late_index) {
		/* The initial scan walks keys in byte order: docids follow it. */
		create_schema(db, &w);
		reorder_by_key(&w);
	}
	int exact_order = !with_churn && w.metric != VELA_METRIC_COSINE;
	if (with_churn) {
		for (int i = 0; i < w.n / 3; i++) {
			tdoc_t *d = &w.docs[rnd(w.n)];
			if (rnd(2)) {
				vela_err_t err;
				cr_assert_eq(vela_del(db, d->key, strlen(d->key), NULL, &err), 0);
				d->live = 0;
			} else {
				write_doc(db, &w, d, dup);
			}
		}
		if (rnd(2)) { /* reopen: everything rebuilt from LMDB */
			vela_db_close(db);
			db = db_open_ok(dir, 0);
		}
	}
	static uint8_t blobs[NQ][MAXD * 4];
	static char qss[NQ][2200];
	static double qv[NQ][MAXD];
	static vela_kv_t ps[NQ];
	static vela_search_req_t reqs[NQ];
	static node_t *filters[NQ];
	static uint32_t ks[NQ];
	size_t nb = 0;
	for (int qi = 0; qi < NQ; qi++) {
		pool = pools[qi];
		pool_n = 0;
		uint8_t *blob = blobs[qi];
		char *qs = qss[qi];
		double *q = qv[qi];
		node_t *f = rnd(5) == 0 ? NULL : gen(rnd(3));
		char fs[2048];
		if (f)
			render(f, fs);
		else
			strcpy(fs, "*");
		rand_vec(&w, q);
		size_t bl;
		make_blob(&w, q, w.dim, blob, &bl);
		ps[qi] = (vela_kv_t){"B", 1, blob, bl};
		vela_kv_t p = ps[qi];
		uint32_t k = (uint32_t)(rnd(4) == 0 ? 1000 : 1 + rnd(20));
		int knn = rnd(3) != 0;
		if (knn)
			snprintf(qs, sizeof(qss[0]), "%s=>[KNN %u @v $B AS dist]", fs, k);
		else
			snprintf(qs, sizeof(qss[0]), "%s", fs);
		vela_search_req_t req = {.index = "p", .query = qs, .params = &p, .n_params = 1,
					 .limit = 1000, .nocontent = true};
		vela_result_t *r, *rb;
		vela_err_t err;
		cr_assert_eq(vela_search(db, &req, &r, &err), 0, "trial %d %s: %s", trial, qs, err.msg);
		if (knn) {
			check_knn(&w, f, q, k, exact_order, qs, r);
			/* A batch of one takes the small-group (scan) path. */
			cr_assert_eq(vela_search_batch(db, &req, 1, &rb, &err), 0, "%s", err.msg);
			cr_assert_eq(rb->n_hits, r->n_hits);
			check_knn(&w, f, q, k, exact_order, qs, rb);
			vela_result_free(rb);
			req.params = &ps[qi];
			reqs[nb] = req;
			filters[nb] = f;
			ks[nb++] = k;
		} else {
			check_filter(&w, f, qs, r);
		}
		vela_result_free(r);
	}
	/* All KNN queries of the trial together: one GEMM with per-query filters. */
	static vela_result_t *outs[NQ];
	static vela_err_t errs[NQ];
	cr_assert_eq(vela_search_batch(db, reqs, nb, outs, errs), 0, "batch: %s", errs[0].msg);
	for (size_t i = 0; i < nb; i++) {
		check_knn(&w, filters[i], qv[reqs[i].params - ps], ks[i], exact_order,
			  reqs[i].query, outs[i]);
		vela_result_free(outs[i]);
	}
	vela_db_close(db);
	tmpdir_remove(dir);
}

Test(db_property, random_worlds_match_brute_force, .timeout = 240)
{
	srand(20261127);
	for (int t = 0; t < 12; t++)
		run_trial(t, 0);
}

Test(db_property, random_worlds_with_updates_deletes_reopen, .timeout = 240)
{
	srand(777);
	for (int t = 0; t < 12; t++)
		run_trial(t, 1);
}
