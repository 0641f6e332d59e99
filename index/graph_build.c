/* GRAPH index: parallel helper, medoid, two-pass batched build and
 * incremental insert (reference §3.1; DiskANN §2.3, FreshDiskANN §4). */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "index/graph_impl.h"
#include "quant/quant.h"

/* ------------------------------------------------ parallel for */

typedef struct {
	graph_t *g;
	graph_task_fn fn;
	void *arg;
	size_t n;
	atomic_size_t next;
	atomic_int rc;
} graph_par_t;

static void *graph_par_worker(void *p)
{
	graph_par_t *par = p;
	graph_work_t *w = graph_work_new(par->g);
	if (w == NULL) {
		int zero = 0;
		atomic_compare_exchange_strong(&par->rc, &zero, VELA_ENOMEM);
		return NULL;
	}
	for (;;) {
		size_t i = atomic_fetch_add(&par->next, 1);
		if (i >= par->n || atomic_load(&par->rc) != 0)
			break;
		int rc = par->fn(par->g, w, i, par->arg);
		if (rc != 0) {
			int zero = 0;
			atomic_compare_exchange_strong(&par->rc, &zero, rc);
		}
	}
	graph_work_free(w);
	return NULL;
}

/* Run fn(g, w, i, arg) for i in [0, n) on up to g->threads threads (the
 * caller's included), each with its own scratch. Returns the first error.
 * Threads that fail to start just leave more work to the others. */
int graph_parallel(graph_t *g, size_t n, graph_task_fn fn, void *arg)
{
	graph_par_t par = {.g = g, .fn = fn, .arg = arg, .n = n};
	atomic_init(&par.next, 0);
	atomic_init(&par.rc, 0);
	size_t nt = g->threads < n ? g->threads : n;
	pthread_t tid[GRAPH_THREADS_MAX];
	size_t started = 0;
	for (size_t t = 1; t < nt; t++)
		if (pthread_create(&tid[started], NULL, graph_par_worker, &par) == 0)
			started++;
	graph_par_worker(&par);
	for (size_t t = 0; t < started; t++)
		pthread_join(tid[t], NULL);
	return atomic_load(&par.rc);
}

/* ------------------------------------------------ medoid */

/* Without a decoder: the sampled node with the least summed distance to
 * the sample (a 1-medoid estimate from distances alone). */
static uint32_t graph_medoid_sampled(const graph_t *g, const uint32_t *ids, size_t n)
{
	size_t s = n < 256 ? n : 256;
	uint32_t best = ids[0];
	double best_sum = INFINITY;
	for (size_t i = 0; i < s; i++) {
		uint32_t c = ids[i * n / s];
		double sum = 0;
		for (size_t j = 0; j < s; j++)
			sum += graph_dist_ids(g, c, ids[j * n / s]);
		if (sum < best_sum) {
			best_sum = sum;
			best = c;
		}
	}
	return best;
}

/* The entry point: the node nearest (L2) to the mean of ids (§3.1). */
int graph_medoid(const graph_t *g, const uint32_t *ids, size_t n, uint32_t *out)
{
	*out = GRAPH_NONE;
	if (n == 0)
		return 0;
	if (g->st.get == NULL) {
		*out = graph_medoid_sampled(g, ids, n);
		return 0;
	}
	uint32_t dim = g->st.dim;
	double *sum = calloc(dim, sizeof(double));
	float *v = malloc((size_t)dim * 2 * sizeof(float)), *mean = v + dim;
	int rc = sum && v ? 0 : VELA_ENOMEM;
	for (size_t i = 0; rc == 0 && i < n; i++) {
		rc = g->st.get(g->st.ctx, ids[i], v);
		for (uint32_t j = 0; rc == 0 && j < dim; j++)
			sum[j] += v[j];
	}
	for (uint32_t j = 0; rc == 0 && j < dim; j++)
		mean[j] = (float)(sum[j] / (double)n);
	float best = INFINITY;
	for (size_t i = 0; rc == 0 && i < n; i++) {
		rc = g->st.get(g->st.ctx, ids[i], v);
		float d = rc == 0 ? quant_l2sq_f32(v, mean, dim) : INFINITY;
		if (d < best || *out == GRAPH_NONE) {
			best = d;
			*out = ids[i];
		}
	}
	free(sum);
	free(v);
	return rc;
}

/* ------------------------------------------------ linking one node */

/* Sort by (dist, id), drop repeated ids (equal ids carry equal distances)
 * and truncate to `max`. Returns the new length. */
static size_t graph_pool_finish(vela_hit_t *p, size_t n, size_t max)
{
	graph_hits_sort(p, n);
	size_t m = 0;
	for (size_t i = 0; i < n && m < max; i++)
		if (m == 0 || p[m - 1].docid != p[i].docid)
			p[m++] = p[i];
	return m;
}

/* Candidate pool of node x (§3.1 step 2): the search history plus x's
 * current neighbours, only live nodes, x excluded. */
static int graph_candidates(const graph_t *g, graph_work_t *w, uint32_t x, uint32_t L,
			    uint32_t *m)
{
	graph_query_t q = {NULL, x};
	int rc = graph_greedy(g, w, &q, L, L, true);
	if (rc == 0)
		rc = graph_work_pool(w, w->nhist + g->deg[x]);
	if (rc != 0)
		return rc;
	size_t n = 0;
	for (size_t i = 0; i < w->nhist; i++)
		if (w->hist[i].docid != x && g->state[w->hist[i].docid] == GRAPH_LIVE)
			w->pool[n++] = w->hist[i];
	const uint32_t *nb = graph_adj(g, x);
	for (uint32_t i = 0; i < g->deg[x]; i++)
		if (nb[i] != x && g->state[nb[i]] == GRAPH_LIVE)
			w->pool[n++] = (vela_hit_t){graph_dist_ids(g, x, nb[i]), nb[i]};
	*m = (uint32_t)graph_pool_finish(w->pool, n, g->pool);
	return 0;
}

/* New out-list of x: search, pool, prune to R at level alpha. */
static int graph_link(const graph_t *g, graph_work_t *w, uint32_t x, float alpha, uint32_t L,
		      uint32_t *out, uint32_t *deg)
{
	uint32_t m;
	int rc = graph_candidates(g, w, x, L, &m);
	if (rc == 0)
		*deg = graph_prune(g, w, w->pool, m, alpha, g->R, out);
	return rc;
}

static bool graph_has(const uint32_t *a, uint32_t n, uint32_t v)
{
	for (uint32_t i = 0; i < n; i++)
		if (a[i] == v)
			return true;
	return false;
}

/* Back-edges into y (§3.1 "reverse edges"): append the sources in `add`
 * while y has room; when they overflow R, re-prune y over (old list ∪ add)
 * down to prune_to. Only y's list is written (and, when tracked, the
 * in-degrees of the nodes it gains or drops). */
int graph_repair(graph_t *g, graph_work_t *w, uint32_t y, const uint32_t *add, uint32_t nadd,
		 float alpha)
{
	uint32_t *nb = graph_adj(g, y), deg = g->deg[y], fresh = 0;
	if (graph_work_pool(w, (size_t)deg + nadd) != 0)
		return VELA_ENOMEM;
	for (uint32_t i = 0; i < nadd; i++)
		if (add[i] != y && !graph_has(nb, deg, add[i]))
			w->pool[fresh++].docid = add[i];
	if (deg + fresh <= g->R) {
		bool counts = g->track && g->state[y] == GRAPH_LIVE;
		for (uint32_t i = 0; i < fresh; i++) {
			nb[deg + i] = w->pool[i].docid;
			if (counts)
				g->indeg[nb[deg + i]]++;
		}
		g->deg[y] = deg + fresh;
		return 0;
	}
	for (uint32_t i = 0; i < deg; i++)
		w->pool[fresh + i].docid = nb[i];
	size_t n = fresh + deg;
	for (size_t i = 0; i < n; i++)
		w->pool[i].dist = graph_dist_ids(g, y, w->pool[i].docid);
	n = graph_pool_finish(w->pool, n, n);
	if (w->ids_cap < g->R)
		return VELA_EINVAL;
	uint32_t d = graph_prune(g, w, w->pool, (uint32_t)n, alpha, g->prune_to, w->ids);
	graph_list_set(g, y, w->ids, d);
	return 0;
}

/* ------------------------------------------------ batched build */

typedef struct {
	const uint32_t *ids; /* this batch */
	uint32_t *adj;       /* batch * R new lists */
	uint32_t *deg;
	uint64_t *edges;     /* (y << 32 | x) back-edges, sorted */
	size_t *groups;      /* start of each target's run in edges, + end */
	size_t ngroups;
	float alpha;
	uint32_t window; /* L of this pass's searches */
} graph_batch_t;

/* Phase 1: new lists of the batch, from a frozen graph (reads only). */
static int graph_task_link(graph_t *g, graph_work_t *w, size_t i, void *arg)
{
	graph_batch_t *b = arg;
	return graph_link(g, w, b->ids[i], b->alpha, b->window, b->adj + i * g->R, &b->deg[i]);
}

/* Phase 3: back-edges, one target per task, so each list has one writer. */
static int graph_task_back(graph_t *g, graph_work_t *w, size_t i, void *arg)
{
	graph_batch_t *b = arg;
	size_t s = b->groups[i], e = b->groups[i + 1];
	uint32_t y = (uint32_t)(b->edges[s] >> 32);
	if (w->ids_cap < e - s + g->R) {
		uint32_t *ids = realloc(w->ids, (e - s + g->R) * sizeof(uint32_t));
		if (ids == NULL)
			return VELA_ENOMEM;
		w->ids = ids;
		w->ids_cap = e - s + g->R;
	}
	uint32_t *add = w->ids + g->R, n = 0;
	for (size_t j = s; j < e; j++)
		add[n++] = (uint32_t)b->edges[j];
	return graph_repair(g, w, y, add, n, b->alpha);
}

static int graph_u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Phase 2: install the new lists, then gather and group the back-edges. */
static void graph_batch_apply(graph_t *g, graph_batch_t *b, size_t n)
{
	size_t ne = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t x = b->ids[i];
		graph_list_set(g, x, b->adj + i * g->R, b->deg[i]);
		for (uint32_t j = 0; j < b->deg[i]; j++)
			b->edges[ne++] = (uint64_t)b->adj[i * g->R + j] << 32 | x;
	}
	qsort(b->edges, ne, sizeof(uint64_t), graph_u64_cmp);
	b->ngroups = 0;
	for (size_t i = 0; i < ne; i++)
		if (i == 0 || b->edges[i] >> 32 != b->edges[i - 1] >> 32)
			b->groups[b->ngroups++] = i;
	b->groups[b->ngroups] = ne;
}

/* One pass over ids in max(40, ceil(n / 4096)) synchronised batches
 * (§3.1): each batch searches the graph as it stood before the batch, so
 * the result does not depend on the thread count. */
static int graph_pass(graph_t *g, const uint32_t *ids, size_t n, float alpha, uint32_t L,
		      graph_batch_t *b)
{
	b->window = L;
	size_t nb = (n + 4095) / 4096;
	if (nb < 40)
		nb = 40;
	if (nb > n)
		nb = n;
	size_t bs = (n + nb - 1) / nb;
	b->alpha = alpha;
	for (size_t s = 0; s < n; s += bs) {
		size_t m = n - s < bs ? n - s : bs;
		if (g->cancel && atomic_load_explicit(g->cancel, memory_order_relaxed))
			return VELA_EBUSY;
		b->ids = ids + s;
		int rc = graph_parallel(g, m, graph_task_link, b);
		if (rc != 0)
			return rc;
		graph_batch_apply(g, b, m);
		rc = graph_parallel(g, b->ngroups, graph_task_back, b);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* Reserve slots and mark ids live; VELA_EINVAL on a bad or repeated id. */
static int graph_build_nodes(graph_t *g, const uint32_t *ids, size_t n)
{
	uint32_t hi = 0;
	for (size_t i = 0; i < n; i++) {
		if (ids[i] > GRAPH_ID_MAX)
			return VELA_EINVAL;
		hi = ids[i] > hi ? ids[i] : hi;
	}
	if (graph_reserve(g, hi) != 0)
		return VELA_ENOMEM;
	g->end = (uint64_t)hi + 1;
	for (size_t i = 0; i < n; i++) {
		if (g->state[ids[i]] != GRAPH_ABSENT)
			return VELA_EINVAL;
		g->state[ids[i]] = GRAPH_LIVE;
	}
	g->n_live = n;
	return 0;
}

static void graph_clear(graph_t *g)
{
	if (g->cap) {
		memset(g->deg, 0, g->cap * sizeof(uint32_t));
		memset(g->indeg, 0, g->cap * sizeof(uint32_t));
		memset(g->state, 0, g->cap);
	}
	g->track = true;
	g->norph = 0;
	g->end = g->n_live = g->n_deleted = 0;
	g->entry = GRAPH_NONE;
}

int graph_build(graph_t *g, const uint32_t *ids, size_t n)
{
	if (g == NULL || (n > 0 && ids == NULL) || g->n_live + g->n_deleted > 0 ||
	    n > (size_t)GRAPH_ID_MAX + 1)
		return VELA_EINVAL;
	if (n == 0)
		return 0;
	size_t bs = (n + 39) / 40 + 1; /* >= any batch graph_pass makes */
	graph_batch_t b = {0};
	b.adj = malloc(vela_mul_size(bs, (size_t)g->R * sizeof(uint32_t)));
	b.deg = malloc(bs * sizeof(uint32_t));
	b.edges = malloc(vela_mul_size(bs, (size_t)g->R * sizeof(uint64_t)));
	b.groups = malloc(vela_mul_size(bs * g->R + 1, sizeof(size_t)));
	int rc = b.adj && b.deg && b.edges && b.groups ? 0 : VELA_ENOMEM;
	/* In-degrees are recounted once at the end, not kept by the workers. */
	g->track = false;
	if (rc == 0)
		rc = graph_build_nodes(g, ids, n);
	if (rc == 0)
		rc = graph_medoid(g, ids, n, &g->entry);
	/* The first pass (alpha 1) only has to make the graph navigable for
	 * the second: a quarter of the window (at least R) builds 40 % faster
	 * with the same recall at 100k vectors, but at 1M it costs recall at
	 * a fixed window, so large graphs take half (BENCHMARKS.md "Build:
	 * first-pass window"). */
	uint32_t L1 = g->L / (n >= GRAPH_FIRST_PASS_LARGE_N ? GRAPH_FIRST_PASS_WINDOW_DIV_LARGE
							    : GRAPH_FIRST_PASS_WINDOW_DIV);
	L1 = L1 < g->R ? (g->R < g->L ? g->R : g->L) : L1;
	if (rc == 0 && g->alpha != 1.0f)
		rc = graph_pass(g, ids, n, 1.0f, L1, &b);
	if (rc == 0)
		rc = graph_pass(g, ids, n, g->alpha, g->L, &b);
	if (rc == 0) {
		graph_indeg_recount(g);
		rc = graph_connect(g);
	}
	if (rc != 0)
		graph_clear(g);
	free(b.adj);
	free(b.deg);
	free(b.edges);
	free(b.groups);
	return rc;
}

/* ------------------------------------------------ incremental insert */

/* FreshDiskANN Algorithm 2: link the new node, then add back-edges
 * (re-pruning full neighbours). */
static int graph_insert_link(graph_t *g, graph_work_t *w, uint32_t id)
{
	uint32_t *out = malloc((size_t)g->R * sizeof(uint32_t)), deg = 0;
	if (out == NULL)
		return VELA_ENOMEM;
	int rc = graph_link(g, w, id, g->alpha, g->L, out, &deg);
	if (rc == 0) {
		graph_list_set(g, id, out, deg);
		graph_state_set(g, id, GRAPH_LIVE);
		g->n_live++;
		for (uint32_t i = 0; i < deg && rc == 0; i++)
			rc = graph_repair(g, w, out[i], &id, 1, g->alpha);
	}
	free(out);
	/* Its back-edges may all have been pruned away again, and the list it
	 * left (graph_update) or the lists re-pruned may have held some node's
	 * only in-edge: link those nodes again. */
	if (g->indeg[id] == 0 && g->state[id] == GRAPH_LIVE)
		graph_orphan_note(g, id);
	int rc2 = graph_orphans_fix(g, w);
	return rc ? rc : rc2;
}

int graph_insert(graph_t *g, uint32_t id)
{
	if (g == NULL || id > GRAPH_ID_MAX)
		return VELA_EINVAL;
	if (graph_state(g, id) != GRAPH_ABSENT)
		return VELA_EEXISTS;
	if (graph_reserve(g, id) != 0)
		return VELA_ENOMEM;
	if (id >= g->end)
		g->end = (uint64_t)id + 1;
	g->deg[id] = 0;
	if (g->entry == GRAPH_NONE) {
		graph_state_set(g, id, GRAPH_LIVE);
		g->n_live++;
		g->entry = id;
		return 0;
	}
	graph_work_t *w = graph_work_new(g);
	if (w == NULL)
		return VELA_ENOMEM;
	int rc = graph_insert_link(g, w, id);
	graph_work_free(w);
	return rc;
}

/* Re-link a node whose vector changed, or revive a tombstone whose docid is
 * used again. Its out-edges are recomputed as for an insert (its old list
 * joins the candidates); in-edges from other nodes stay — valid edges, only
 * less tight until they are re-pruned. */
int graph_update(graph_t *g, uint32_t id)
{
	if (g == NULL || id > GRAPH_ID_MAX)
		return VELA_EINVAL;
	int st = graph_state(g, id);
	if (st == GRAPH_ABSENT)
		return graph_insert(g, id);
	if (st == GRAPH_LIVE)
		g->n_live--;
	else
		g->n_deleted--;
	/* Traversed but never a candidate while it is re-linked. */
	graph_state_set(g, id, GRAPH_DELETED);
	if (g->n_live == 0) {
		graph_list_set(g, id, NULL, 0);
		graph_state_set(g, id, GRAPH_LIVE);
		g->n_live++;
		g->entry = id;
		return 0;
	}
	graph_work_t *w = graph_work_new(g);
	int rc = w ? graph_insert_link(g, w, id) : VELA_ENOMEM;
	graph_work_free(w);
	if (rc && g->state[id] != GRAPH_LIVE)
		g->n_deleted++; /* left as a tombstone: consolidation removes it */
	return rc;
}
