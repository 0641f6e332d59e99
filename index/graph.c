/* GRAPH index: lifecycle, greedy search (reference §3.2), robust prune
 * (§3.1) and the public search. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "index/graph_hybrid.h"
#include "index/graph_impl.h"

/* ------------------------------------------------ parameters */

void graph_params_default(graph_params_t *p)
{
	*p = (graph_params_t){GRAPH_MAX_DEGREE_DEFAULT, GRAPH_CONSTRUCTION_WINDOW_SIZE_DEFAULT,
			      GRAPH_CANDIDATE_POOL_DEFAULT, GRAPH_PRUNE_TO_DEFAULT,
			      GRAPH_ALPHA_DEFAULT, GRAPH_THREADS_DEFAULT, NULL};
}

void graph_search_params_default(graph_search_params_t *sp)
{
	*sp = (graph_search_params_t){GRAPH_SEARCH_WINDOW_SIZE_DEFAULT,
				      GRAPH_SEARCH_BUFFER_DEFAULT, NULL};
}

static bool graph_in(uint32_t v, uint32_t lo, uint32_t hi)
{
	return v >= lo && v <= hi;
}

/* Resolve the derived defaults (pool = 3 L, prune_to = R - 4, alpha per
 * metric; §3.1 table) and check every value against its MIN..MAX. */
int graph_params_check(const graph_store_t *st, graph_params_t *p)
{
	if (st->dim < VELA_DIM_MIN || st->dim > VELA_DIM_MAX || st->query_size == 0 ||
	    st->prepare == NULL || st->dist == NULL || st->dist_ids == NULL)
		return VELA_EINVAL;
	bool l2 = st->metric == VELA_METRIC_L2;
	if (!l2 && st->metric != VELA_METRIC_IP && st->metric != VELA_METRIC_COSINE)
		return VELA_EINVAL;
	if (p->pool == 0)
		p->pool = 3 * p->window;
	if (p->prune_to == 0)
		p->prune_to = p->max_degree >= 16 ? p->max_degree - 4 : p->max_degree;
	if (p->alpha == 0.0f)
		p->alpha = l2 ? GRAPH_ALPHA_L2_DEFAULT : GRAPH_ALPHA_IP_DEFAULT;
	bool alpha_ok = l2 ? p->alpha >= GRAPH_ALPHA_L2_MIN && p->alpha <= GRAPH_ALPHA_L2_MAX
			   : p->alpha >= GRAPH_ALPHA_IP_MIN && p->alpha <= GRAPH_ALPHA_IP_MAX;
	if (!alpha_ok ||
	    !graph_in(p->max_degree, GRAPH_MAX_DEGREE_MIN, GRAPH_MAX_DEGREE_MAX) ||
	    !graph_in(p->window, GRAPH_CONSTRUCTION_WINDOW_SIZE_MIN,
		      GRAPH_CONSTRUCTION_WINDOW_SIZE_MAX) ||
	    !graph_in(p->pool, GRAPH_CANDIDATE_POOL_MIN, GRAPH_CANDIDATE_POOL_MAX) ||
	    !graph_in(p->prune_to, GRAPH_PRUNE_TO_MIN, p->max_degree) ||
	    !graph_in(p->threads, GRAPH_THREADS_MIN, GRAPH_THREADS_MAX))
		return VELA_EINVAL;
	return 0;
}

/* ------------------------------------------------ lifecycle */

int graph_alloc(const graph_store_t *st, const graph_params_t *p, graph_t **out)
{
	graph_t *g = calloc(1, sizeof(*g));
	if (g == NULL)
		return VELA_ENOMEM;
	g->st = *st;
	g->R = p->max_degree;
	g->L = p->window;
	g->pool = p->pool;
	g->prune_to = p->prune_to;
	g->alpha = p->alpha;
	g->threads = p->threads;
	g->cancel = p->cancel;
	g->entry = GRAPH_NONE;
	g->prefetch = graph_store_prefetch(st);
	g->track = true;
	*out = g;
	return 0;
}

int graph_create(const graph_store_t *st, const graph_params_t *p, graph_t **out)
{
	if (out == NULL)
		return VELA_EINVAL;
	*out = NULL;
	graph_params_t pp;
	if (p)
		pp = *p;
	else
		graph_params_default(&pp);
	if (st == NULL)
		return VELA_EINVAL;
	int rc = graph_params_check(st, &pp);
	return rc ? rc : graph_alloc(st, &pp, out);
}

int graph_store_rebind(graph_t *g, const graph_store_t *st)
{
	if (g == NULL || st == NULL || st->dim != g->st.dim || st->metric != g->st.metric)
		return VELA_EINVAL;
	g->st = *st;
	g->prefetch = graph_store_prefetch(st);
	return 0;
}

void graph_destroy(graph_t *g)
{
	if (g == NULL)
		return;
	free(g->adj);
	free(g->deg);
	free(g->indeg);
	free(g->state);
	free(g->orph);
	free(g);
}

/* Make slot `id` addressable; doubling keeps inserts amortised O(1). On
 * failure the graph is unchanged. */
int graph_reserve(graph_t *g, uint64_t id)
{
	if (id < g->cap)
		return 0;
	uint64_t cap = g->cap ? g->cap * 2 : 1024;
	if (cap <= id)
		cap = (id + 1024) & ~(uint64_t)1023;
	uint32_t *adj = malloc(vela_mul_size(cap, (size_t)g->R * sizeof(uint32_t)));
	uint32_t *deg = calloc(cap, sizeof(uint32_t));
	uint32_t *indeg = calloc(cap, sizeof(uint32_t));
	uint8_t *state = calloc(cap, 1);
	if (adj == NULL || deg == NULL || indeg == NULL || state == NULL) {
		free(adj);
		free(deg);
		free(indeg);
		free(state);
		return VELA_ENOMEM;
	}
	if (g->cap) {
		memcpy(adj, g->adj, g->cap * g->R * sizeof(uint32_t));
		memcpy(deg, g->deg, g->cap * sizeof(uint32_t));
		memcpy(indeg, g->indeg, g->cap * sizeof(uint32_t));
		memcpy(state, g->state, g->cap);
	}
	free(g->adj);
	free(g->deg);
	free(g->indeg);
	free(g->state);
	g->adj = adj;
	g->deg = deg;
	g->indeg = indeg;
	g->state = state;
	g->cap = cap;
	return 0;
}

uint64_t graph_count(const graph_t *g)
{
	return g ? g->n_live : 0;
}

uint64_t graph_count_deleted(const graph_t *g)
{
	return g ? g->n_deleted : 0;
}

bool graph_contains(const graph_t *g, uint32_t id)
{
	return g && graph_state(g, id) == GRAPH_LIVE;
}

uint32_t graph_entry(const graph_t *g)
{
	return g ? g->entry : GRAPH_NONE;
}

uint32_t graph_neighbors(const graph_t *g, uint32_t id, const uint32_t **nbrs)
{
	if (g == NULL || graph_state(g, id) == GRAPH_ABSENT) {
		if (nbrs)
			*nbrs = NULL;
		return 0;
	}
	if (nbrs)
		*nbrs = graph_adj(g, id);
	return g->deg[id];
}

size_t graph_memory(const graph_t *g)
{
	if (g == NULL)
		return 0;
	return sizeof(*g) + g->cap * ((size_t)g->R * sizeof(uint32_t) + 2 * sizeof(uint32_t) + 1) +
	       g->orph_cap * sizeof(uint32_t);
}

/* ------------------------------------------------ scratch */

graph_work_t *graph_work_new(const graph_t *g)
{
	graph_work_t *w = calloc(1, sizeof(*w));
	if (w == NULL)
		return NULL;
	w->ids_cap = 2 * (size_t)g->R;
	w->ids = malloc(w->ids_cap * sizeof(uint32_t));
	w->pq_cap = g->st.query_size;
	w->pq = malloc(w->pq_cap);
	if (w->ids == NULL || w->pq == NULL) {
		graph_work_free(w);
		return NULL;
	}
	return w;
}

void graph_work_free(graph_work_t *w)
{
	if (w == NULL)
		return;
	free(w->vis);
	free(w->buf);
	free(w->hist);
	free(w->pool);
	free(w->best);
	free(w->taken);
	free(w->ids);
	free(w->pq);
	free(w);
}

/* Room for n prune candidates (pool, best, taken). */
int graph_work_pool(graph_work_t *w, size_t n)
{
	if (n <= w->pool_cap)
		return 0;
	size_t cap = n < 64 ? 64 : n * 2;
	vela_hit_t *pool = realloc(w->pool, cap * sizeof(*pool));
	if (pool)
		w->pool = pool;
	float *best = realloc(w->best, cap * sizeof(float));
	if (best)
		w->best = best;
	uint8_t *taken = realloc(w->taken, cap);
	if (taken)
		w->taken = taken;
	if (!pool || !best || !taken)
		return VELA_ENOMEM;
	w->pool_cap = cap;
	return 0;
}

/* ------------------------------------------------ visited set */

/* Dense visited tags (as hnswlib's visited list): id is visited in this
 * search iff vis[id] == epoch. Starting a search bumps the epoch, so there
 * is nothing to clear except once every 65,535 searches. */
int graph_vis_begin(graph_work_t *w, uint64_t end)
{
	if (end > w->vis_cap) {
		size_t cap = end < 1024 ? 1024 : (size_t)end + (size_t)end / 4;
		uint16_t *v = realloc(w->vis, cap * sizeof(uint16_t));
		if (v == NULL)
			return VELA_ENOMEM;
		memset(v + w->vis_cap, 0, (cap - w->vis_cap) * sizeof(uint16_t));
		w->vis = v;
		w->vis_cap = cap;
	}
	if (++w->epoch == 0) {
		memset(w->vis, 0, w->vis_cap * sizeof(uint16_t));
		w->epoch = 1;
	}
	return 0;
}

/* true if `id` was new (now marked). Ids at or past vis_cap (never in a
 * graph's adjacency: all ids are below g->end) count as visited. */
static inline bool graph_vis_add(graph_work_t *w, uint32_t id)
{
	if (id >= w->vis_cap || w->vis[id] == w->epoch)
		return false;
	w->vis[id] = w->epoch;
	return true;
}

/* ------------------------------------------------ greedy search */

static inline float graph_qdist(const graph_t *g, const graph_query_t *q, uint32_t id)
{
	return q->pq ? g->st.dist(g->st.ctx, q->pq, id) : graph_dist_ids(g, q->qid, id);
}

/* Insert into the sorted buffer (ascending dist, then id); returns the
 * position, or cap when it did not make the buffer. */
static inline bool graph_cand_less(const graph_cand_t *c, float d, uint32_t id)
{
	return c->dist < d || (c->dist == d && c->id < id);
}

static inline uint32_t graph_buf_insert(graph_work_t *w, uint32_t cap, float d, uint32_t id)
{
	const graph_cand_t *b = w->buf;
	uint32_t nb = w->nbuf;
	if (nb == cap && (graph_cand_less(&b[nb - 1], d, id) ||
			  (b[nb - 1].dist == d && b[nb - 1].id == id)))
		return cap; /* full and no better than the last */
	/* Lower bound without data-dependent branches (the outcome of each
	 * comparison is a coin flip: mispredictions dominated this loop). */
	uint32_t lo = 0;
	for (uint32_t len = nb; len > 1;) {
		uint32_t half = len / 2;
		lo = graph_cand_less(&b[lo + half - 1], d, id) ? lo + half : lo;
		len -= half;
	}
	if (nb && graph_cand_less(&b[lo], d, id))
		lo++;
	if (lo >= cap)
		return cap;
	uint32_t n = w->nbuf < cap ? w->nbuf : cap - 1;
	memmove(w->buf + lo + 1, w->buf + lo, (n - lo) * sizeof(graph_cand_t));
	w->buf[lo] = (graph_cand_t){d, id, 0};
	if (w->nbuf < cap)
		w->nbuf++;
	return lo;
}

static int graph_hist_push(graph_work_t *w, float d, uint32_t id)
{
	if (w->nhist == w->hist_cap) {
		size_t cap = w->hist_cap ? w->hist_cap * 2 : 256;
		vela_hit_t *h = realloc(w->hist, cap * sizeof(*h));
		if (h == NULL)
			return VELA_ENOMEM;
		w->hist = h;
		w->hist_cap = cap;
	}
	w->hist[w->nhist++] = (vela_hit_t){d, id};
	return 0;
}

static int graph_buf_reserve(graph_work_t *w, uint32_t cap)
{
	if (cap <= w->buf_cap)
		return 0;
	graph_cand_t *b = realloc(w->buf, (size_t)cap * sizeof(*b));
	if (b == NULL)
		return VELA_ENOMEM;
	w->buf = b;
	w->buf_cap = cap;
	return 0;
}

/* Expand the closest unexpanded candidate among the first `window` until
 * all of them are expanded (§3.2). Keeps up to `cap` (>= window) candidates
 * in w->buf; with `history`, every expanded node goes to w->hist (the
 * "full search history" candidate pool of the build, §3.1). */
int graph_greedy(const graph_t *g, graph_work_t *w, const graph_query_t *q, uint32_t window,
		 uint32_t cap, bool history)
{
	w->nbuf = 0;
	w->nhist = 0;
	if (g->entry == GRAPH_NONE)
		return 0;
	if (graph_buf_reserve(w, cap) != 0 || graph_vis_begin(w, g->end) != 0)
		return VELA_ENOMEM;
	if (w->ids_cap < g->R) {
		uint32_t *ids = realloc(w->ids, (size_t)g->R * sizeof(uint32_t));
		if (ids == NULL)
			return VELA_ENOMEM;
		w->ids = ids;
		w->ids_cap = g->R;
	}
	graph_prefetch_fn pf = g->prefetch; /* flat: dist and dist_ids read the same rows */
	graph_vis_add(w, g->entry);
	graph_buf_insert(w, cap, graph_qdist(g, q, g->entry), g->entry);
	w->ndist++;
	uint32_t *fresh = w->ids;
	for (uint32_t cur = 0;;) {
		uint32_t lim = w->nbuf < window ? w->nbuf : window;
		while (cur < lim && w->buf[cur].done)
			cur++;
		if (cur >= lim)
			return 0;
		graph_cand_t *c = &w->buf[cur];
		c->done = 1;
		uint32_t u = c->id;
		if (history && graph_hist_push(w, c->dist, u) != 0)
			return VELA_ENOMEM;
		/* Mark the unvisited neighbours first (same order, so the same
		 * result) and prefetch their vectors, then compute distances. */
		const uint32_t *nb = graph_adj(g, u);
		uint32_t m = 0;
		for (uint32_t i = 0, n = g->deg[u]; i < n; i++)
			if (graph_vis_add(w, nb[i]))
				fresh[m++] = nb[i];
		if (pf)
			for (uint32_t i = 0; i < m; i++)
				pf(g->st.ctx, fresh[i]);
		w->ndist += m;
		for (uint32_t i = 0; i < m; i++) {
			uint32_t pos = graph_buf_insert(w, cap, graph_qdist(g, q, fresh[i]), fresh[i]);
			if (pos < cur)
				cur = pos;
			/* Likely expanded soon: start loading its list (reading
			 * the lists was the search's main stall, perf annotate). */
			if (pos < window) {
				const char *a = (const char *)graph_adj(g, fresh[i]);
				for (size_t o = 0; o < (size_t)g->R * sizeof(uint32_t); o += 64)
					__builtin_prefetch(a + o, 0, 1);
			}
		}
	}
}

/* ------------------------------------------------ robust prune */

static inline void graph_hit_swap(vela_hit_t *h, size_t i, size_t j)
{
	vela_hit_t t = h[i];
	h[i] = h[j];
	h[j] = t;
}

static void graph_hits_isort(vela_hit_t *h, size_t n)
{
	for (size_t i = 1; i < n; i++) {
		vela_hit_t x = h[i];
		size_t j = i;
		for (; j > 0 && graph_hit_less(x, h[j - 1]); j--)
			h[j] = h[j - 1];
		h[j] = x;
	}
}

/* Ascending (dist, id): a typed quicksort (median of three, recursing
 * into the smaller side) with insertion sort below 24 elements; the
 * order is total for non-NaN distances, so the result equals qsort's. */
void graph_hits_sort(vela_hit_t *h, size_t n)
{
	while (n > 24) {
		size_t mid = n / 2;
		/* order h[0] <= h[mid] <= h[n - 1]; pivot at mid < n - 1, so the
		 * Hoare split below always leaves both sides non-empty */
		if (graph_hit_less(h[mid], h[0]))
			graph_hit_swap(h, 0, mid);
		if (graph_hit_less(h[n - 1], h[mid]))
			graph_hit_swap(h, mid, n - 1);
		if (graph_hit_less(h[mid], h[0]))
			graph_hit_swap(h, 0, mid);
		vela_hit_t p = h[mid];
		size_t i = 0, j = n - 1;
		for (;;) {
			while (graph_hit_less(h[i], p))
				i++;
			while (graph_hit_less(p, h[j]))
				j--;
			if (i >= j)
				break;
			graph_hit_swap(h, i, j);
			i++;
			j--;
		}
		/* [0, j] <= p <= [j + 1, n) (Hoare) */
		size_t left = j + 1;
		if (left < n - left) {
			graph_hits_sort(h, left);
			h += left;
			n -= left;
		} else {
			graph_hits_sort(h + left, n - left);
			n = left;
		}
	}
	graph_hits_isort(h, n);
}

/* Is candidate t (at distance dxt from x) occluded by an accepted
 * neighbour at distance `best` from t, at level a? L2: a d(c,t) <= d(x,t).
 * IP/COSINE compare similarities s = 1 - d instead, so the test flips:
 * a s(c,t) >= s(x,t) (§3.1). */
static inline bool graph_occluded(bool l2, float a, float best, float dxt)
{
	if (best == INFINITY)
		return false;
	return l2 ? a * best <= dxt : a * (1.0f - best) >= 1.0f - dxt;
}

/* Robust prune (DiskANN Algorithm 2, with SVS's rounds alpha_cur = 1, alpha,
 * alpha^2, ... up to alpha, §3.1): walk `cand` (ascending distance to x,
 * x itself excluded, no duplicates), accept a candidate unless an accepted
 * one occludes it at the current level. Writes up to `max` ids to `out`
 * and returns their number. Needs graph_work_pool(w, m). */
uint32_t graph_prune(const graph_t *g, graph_work_t *w, const vela_hit_t *cand, uint32_t m,
		     float alpha, uint32_t max, uint32_t *out)
{
	bool l2 = g->st.metric == VELA_METRIC_L2;
	uint32_t n = 0;
	for (uint32_t i = 0; i < m; i++) {
		w->best[i] = INFINITY;
		w->taken[i] = 0;
	}
	for (float a = 1.0f; n < max;) {
		for (uint32_t i = 0; i < m && n < max; i++) {
			if (w->taken[i] || graph_occluded(l2, a, w->best[i], cand[i].dist))
				continue;
			w->taken[i] = 1;
			out[n++] = cand[i].docid;
			for (uint32_t j = i + 1; j < m; j++) {
				if (w->taken[j] ||
				    graph_occluded(l2, alpha, w->best[j], cand[j].dist))
					continue; /* out for every round already */
				float d = graph_dist_ids(g, cand[i].docid, cand[j].docid);
				if (d < w->best[j])
					w->best[j] = d;
			}
		}
		if (a == alpha)
			break;
		a *= alpha;
		if (l2 ? a > alpha : a < alpha)
			a = alpha;
	}
	return n;
}

/* ------------------------------------------------ public search */

static bool graph_match(const graph_t *g, const roaring_bitmap_t *filter, uint32_t id)
{
	return g->state[id] == GRAPH_LIVE && (filter == NULL || roaring_bitmap_contains(filter, id));
}

/* Window widened by 1 / selectivity of the filter (estimated from its
 * cardinality), so about `window` matches land in the buffer. */
static uint32_t graph_filter_window(const graph_t *g, const roaring_bitmap_t *filter,
				    uint32_t window)
{
	if (filter == NULL)
		return window;
	uint64_t fc = roaring_bitmap_get_cardinality(filter);
	if (fc == 0 || fc >= g->n_live)
		return window;
	double w = ceil((double)window * (double)g->n_live / (double)fc);
	return w > GRAPH_SEARCH_WINDOW_SIZE_MAX ? GRAPH_SEARCH_WINDOW_SIZE_MAX : (uint32_t)w;
}

/* Move the matching buffer entries to the front of w->pool; returns how many. */
static int graph_collect(const graph_t *g, graph_work_t *w, const roaring_bitmap_t *filter,
			 uint32_t *n)
{
	if (graph_work_pool(w, w->nbuf) != 0)
		return VELA_ENOMEM;
	*n = 0;
	for (uint32_t i = 0; i < w->nbuf; i++)
		if (graph_match(g, filter, w->buf[i].id))
			w->pool[(*n)++] = (vela_hit_t){w->buf[i].dist, w->buf[i].id};
	return 0;
}

/* Search, widening the window (doubling) while fewer than k matches turn
 * up: tombstones and filters both take room in the buffer. */
static int graph_search_run(const graph_t *g, graph_work_t *w, uint32_t k, uint32_t window,
			    uint32_t cap, const roaring_bitmap_t *filter, uint32_t *nm)
{
	graph_query_t q = {w->pq, 0};
	uint64_t nodes = g->n_live + g->n_deleted;
	for (;;) {
		int rc = graph_greedy(g, w, &q, window, cap, false);
		if (rc == 0)
			rc = graph_collect(g, w, filter, nm);
		if (rc != 0 || *nm >= k || window >= nodes || window >= GRAPH_SEARCH_WINDOW_SIZE_MAX)
			return rc;
		window = window > GRAPH_SEARCH_WINDOW_SIZE_MAX / 2 ? GRAPH_SEARCH_WINDOW_SIZE_MAX
								    : window * 2;
		if (cap < window)
			cap = window;
	}
}

/* Per-thread search scratch. graph_search takes the calling thread's cached
 * graph_work_t (creating it on first use) and puts it back when done, so a
 * search allocates nothing in the steady state. The scratch holds no
 * pointer into any graph (only buffers, grown on demand: the visited tags
 * take 2 bytes per node of the largest graph this thread searched), so it
 * is valid for every graph, before and after any graph is destroyed.
 * Lifetime: freed by the pthread key's destructor when the thread exits;
 * the main thread's copy lives until process exit. Never shared: each
 * thread only ever sees its own slot, and a slot is empty while in use (a
 * nested search would just make a temporary one). */
static pthread_key_t graph_tls_key;
static pthread_once_t graph_tls_once = PTHREAD_ONCE_INIT;
static bool graph_tls_ok;
static _Thread_local graph_work_t *graph_tls_work;

static void graph_tls_free(void *w)
{
	graph_work_free(w);
}

static void graph_tls_init(void)
{
	graph_tls_ok = pthread_key_create(&graph_tls_key, graph_tls_free) == 0;
}

/* Back to the thread's slot (or freed, when the slot is taken or no key). */
void graph_search_work_put(graph_work_t *w)
{
	if (graph_tls_ok && graph_tls_work == NULL &&
	    pthread_setspecific(graph_tls_key, w) == 0) {
		graph_tls_work = w;
		return;
	}
	graph_work_free(w);
}

graph_work_t *graph_search_work(const graph_t *g)
{
	pthread_once(&graph_tls_once, graph_tls_init);
	graph_work_t *w = graph_tls_work;
	graph_tls_work = NULL;
	if (w == NULL)
		return graph_work_new(g);
	if (w->pq_cap < g->st.query_size) {
		void *pq = malloc(g->st.query_size);
		if (pq == NULL) {
			graph_search_work_put(w);
			return NULL;
		}
		free(w->pq);
		w->pq = pq;
		w->pq_cap = g->st.query_size;
	}
	return w;
}

static int graph_search_check(const graph_t *g, const float *q, uint32_t k,
			      const graph_search_params_t *sp, vela_hit_t *out, uint32_t *n_out)
{
	if (g == NULL || q == NULL || n_out == NULL || (k > 0 && out == NULL) || k > VELA_K_MAX)
		return VELA_EINVAL;
	if (sp && (sp->window > GRAPH_SEARCH_WINDOW_SIZE_MAX || sp->buffer > GRAPH_SEARCH_BUFFER_MAX))
		return VELA_EINVAL;
	return 0;
}

int graph_search(const graph_t *g, const float *q, uint32_t k, const graph_search_params_t *sp,
		 vela_hit_t *out, uint32_t *n_out)
{
	return graph_search_counted(g, q, k, sp, out, n_out, NULL);
}

int graph_search_counted(const graph_t *g, const float *q, uint32_t k,
			 const graph_search_params_t *sp, vela_hit_t *out, uint32_t *n_out,
			 uint64_t *ndist)
{
	int rc = graph_search_check(g, q, k, sp, out, n_out);
	if (rc != 0)
		return rc;
	*n_out = 0;
	graph_search_params_t d;
	graph_search_params_default(&d);
	if (sp == NULL)
		sp = &d;
	uint32_t window = sp->window ? sp->window : GRAPH_SEARCH_WINDOW_SIZE_DEFAULT;
	if (window < k)
		window = k;
	window = graph_filter_window(g, sp->filter, window);
	uint32_t cap = sp->buffer > window ? sp->buffer : window;
	if (k == 0 || g->entry == GRAPH_NONE)
		return 0;
	graph_work_t *w = graph_search_work(g);
	if (w == NULL)
		return VELA_ENOMEM;
	uint32_t nm = 0;
	w->ndist = 0;
	rc = g->st.prepare(g->st.ctx, q, w->pq);
	if (rc == 0)
		rc = graph_search_run(g, w, k, window, cap, sp->filter, &nm);
	if (rc == 0 && g->st.dist_rerank) /* §3.2: re-rank the whole buffer */
		for (uint32_t i = 0; i < nm; i++)
			w->pool[i].dist = g->st.dist_rerank(g->st.ctx, w->pq, w->pool[i].docid);
	if (ndist)
		*ndist += w->ndist + (g->st.dist_rerank ? nm : 0);
	if (rc == 0) {
		if (g->st.dist_rerank) /* else already in buffer order: (dist, id) */
			graph_hits_sort(w->pool, nm);
		*n_out = nm < k ? nm : k;
		memcpy(out, w->pool, *n_out * sizeof(*out));
	}
	graph_search_work_put(w);
	return rc;
}
