/* GRAPH search under a filter: the predicate-subgraph walk with two-hop
 * expansion (ACORN-1, Patel et al., SIGMOD 2024, §5), for the planner's
 * filtered graph plan (db/search.c). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "index/graph_hybrid.h"
#include "index/graph_impl.h"

/* The filter as a dense bitset over the graph's ids: the walk tests
 * membership for every neighbour and every neighbour's neighbour (about a
 * thousand tests per expansion at selectivity 0.1), where a roaring lookup
 * costs tens of ns and a bit test one. Built per search in O(m + end/64). */
typedef struct gh_bits {
	uint64_t *w;
	size_t cap; /* words */
} gh_bits_t;

/* Per-thread bitset words (as graph.c's per-thread scratch): reused by the
 * thread's searches, freed when the thread exits. */
static pthread_key_t gh_tls_key;
static pthread_once_t gh_tls_once = PTHREAD_ONCE_INIT;
static bool gh_tls_ok;
static _Thread_local gh_bits_t *gh_tls_bits;

static void gh_tls_free(void *p)
{
	gh_bits_t *b = p;
	if (b)
		free(b->w);
	free(b);
}

static void gh_tls_init(void)
{
	gh_tls_ok = pthread_key_create(&gh_tls_key, gh_tls_free) == 0;
}

static gh_bits_t *gh_bits_get(void)
{
	pthread_once(&gh_tls_once, gh_tls_init);
	gh_bits_t *b = gh_tls_bits;
	gh_tls_bits = NULL;
	return b ? b : calloc(1, sizeof(*b));
}

static void gh_bits_put(gh_bits_t *b)
{
	if (b && gh_tls_ok && gh_tls_bits == NULL && pthread_setspecific(gh_tls_key, b) == 0) {
		gh_tls_bits = b;
		return;
	}
	gh_tls_free(b);
}

/* Set the bits of the filter's live-able ids (below `end`). */
static int gh_bits_fill(gh_bits_t *b, const roaring_bitmap_t *filter, uint64_t end)
{
	size_t words = (size_t)((end + 63) / 64);
	if (words > b->cap) {
		uint64_t *w = realloc(b->w, words * sizeof(uint64_t));
		if (w == NULL)
			return VELA_ENOMEM;
		b->w = w;
		b->cap = words;
	}
	memset(b->w, 0, words * sizeof(uint64_t));
	roaring_uint32_iterator_t it;
	roaring_init_iterator(filter, &it);
	uint32_t ids[256], n;
	while ((n = roaring_read_uint32_iterator(&it, ids, 256)) > 0)
		for (uint32_t i = 0; i < n; i++)
			if (ids[i] < end)
				b->w[ids[i] >> 6] |= 1ull << (ids[i] & 63);
	return 0;
}

/* The filter of one search: the bitset, over the graph's states. */
typedef struct gh_filter {
	const uint64_t *bits;
	const roaring_bitmap_t *bm;
} gh_filter_t;

static inline bool gh_match(const graph_t *g, const gh_filter_t *f, uint32_t id)
{
	return id < g->end && (f->bits[id >> 6] >> (id & 63) & 1) && g->state[id] == GRAPH_LIVE;
}

static inline bool gh_seen(const graph_work_t *w, uint32_t id)
{
	return id >= w->vis_cap || w->vis[id] == w->epoch;
}

static inline void gh_mark(graph_work_t *w, uint32_t id)
{
	if (id < w->vis_cap)
		w->vis[id] = w->epoch;
}

static int gh_reserve(graph_work_t *w, uint32_t buf, size_t ids)
{
	if (buf > w->buf_cap) {
		graph_cand_t *b = realloc(w->buf, (size_t)buf * sizeof(*b));
		if (b == NULL)
			return VELA_ENOMEM;
		w->buf = b;
		w->buf_cap = buf;
	}
	if (ids > w->ids_cap) {
		uint32_t *v = realloc(w->ids, ids * sizeof(uint32_t));
		if (v == NULL)
			return VELA_ENOMEM;
		w->ids = v;
		w->ids_cap = ids;
	}
	return 0;
}

/* Sorted insert (ascending dist, then id) into a buffer of `cap`; returns
 * the position, or cap when it did not make the buffer. */
static uint32_t gh_insert(graph_work_t *w, uint32_t cap, float d, uint32_t id)
{
	vela_hit_t h = {d, id};
	uint32_t lo = 0, hi = w->nbuf;
	if (hi == cap && !graph_hit_less(h, (vela_hit_t){w->buf[hi - 1].dist, w->buf[hi - 1].id}))
		return cap;
	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;
		if (graph_hit_less((vela_hit_t){w->buf[mid].dist, w->buf[mid].id}, h))
			lo = mid + 1;
		else
			hi = mid;
	}
	uint32_t n = w->nbuf < cap ? w->nbuf : cap - 1;
	memmove(w->buf + lo + 1, w->buf + lo, (n - lo) * sizeof(graph_cand_t));
	w->buf[lo] = (graph_cand_t){d, id, 0};
	if (w->nbuf < cap)
		w->nbuf++;
	return lo;
}

static inline float gh_dist(const graph_t *g, graph_work_t *w, uint32_t id)
{
	w->ndist++;
	return g->st.dist(g->st.ctx, w->pq, id);
}

/* Score `ids` (marked already) and insert them; returns the smallest
 * position an insert took (or cap). */
static uint32_t gh_score(const graph_t *g, graph_work_t *w, uint32_t cap, const uint32_t *ids,
			 uint32_t n)
{
	uint32_t best = cap;
	if (g->prefetch)
		for (uint32_t i = 0; i < n; i++)
			g->prefetch(g->st.ctx, ids[i]);
	for (uint32_t i = 0; i < n; i++) {
		uint32_t pos = gh_insert(w, cap, gh_dist(g, w, ids[i]), ids[i]);
		best = pos < best ? pos : best;
	}
	return best;
}

/* Matches of u's neighbourhood not seen yet, into fresh (marked): the
 * matching neighbours, then the matching neighbours of the non-matching
 * ones until `max` (a non-matching node is marked once its neighbours have
 * all been looked at, so it is not looked through twice). */
static uint32_t gh_neighbourhood(const graph_t *g, graph_work_t *w, const gh_filter_t *filter,
				 uint32_t u, uint32_t *fresh, uint32_t *hop, uint32_t max)
{
	const uint32_t *nb = graph_adj(g, u);
	uint32_t m = 0, h = 0;
	for (uint32_t i = 0, n = g->deg[u]; i < n; i++) {
		uint32_t v = nb[i];
		if (gh_seen(w, v))
			continue;
		if (gh_match(g, filter, v)) {
			gh_mark(w, v);
			fresh[m++] = v;
		} else {
			hop[h++] = v;
		}
	}
	for (uint32_t j = 0; j < h && m < max; j++) {
		uint32_t v = hop[j];
		if (gh_seen(w, v))
			continue;
		const uint32_t *nv = graph_adj(g, v);
		uint32_t i = 0, n = g->deg[v];
		for (; i < n && m < max; i++)
			if (!gh_seen(w, nv[i]) && gh_match(g, filter, nv[i])) {
				gh_mark(w, nv[i]);
				fresh[m++] = nv[i];
			}
		if (i == n)
			gh_mark(w, v);
	}
	return m;
}

/* Seeds: matches among (and around) the unfiltered descent's buffer, then
 * matches spread over the filter while fewer than `cap` were found. */
static int gh_seed(const graph_t *g, graph_work_t *w, const gh_filter_t *filter, uint32_t cap,
		   uint32_t *fresh, uint32_t *hop, uint32_t max, double min_share,
		   graph_filter_stats_t *st)
{
	graph_query_t gq = {w->pq, 0};
	uint32_t d = cap < GRAPH_FILTER_DESCENT_MAX ? cap : GRAPH_FILTER_DESCENT_MAX, nn = 0;
	int rc = graph_work_pool(w, d);
	if (rc == 0)
		rc = graph_greedy(g, w, &gq, d, d, false);
	vela_hit_t *near = w->pool; /* free until the walk's results */
	for (uint32_t i = 0; rc == 0 && i < w->nbuf && nn < d; i++)
		near[nn++] = (vela_hit_t){w->buf[i].dist, w->buf[i].id};
	if (rc)
		return rc;
	/* The share of matches around the query: the descent's nodes and their
	 * neighbours, each once (about a thousand nodes: enough to tell an
	 * anti-correlated filter from an independent one down to s = 0.02). */
	st->near = st->near_matches = 0;
	if (min_share > 0 && (rc = graph_vis_begin(w, g->end)) == 0)
		for (uint32_t i = 0; i < nn; i++) {
			uint32_t u = near[i].docid;
			const uint32_t *nb = graph_adj(g, u);
			for (uint32_t j = 0, deg = g->deg[u]; j <= deg; j++) {
				uint32_t v = j < deg ? nb[j] : u;
				if (gh_seen(w, v))
					continue;
				gh_mark(w, v);
				st->near++;
				st->near_matches += gh_match(g, filter, v);
			}
		}
	if (rc || (rc = graph_vis_begin(w, g->end)))
		return rc;
	w->nbuf = 0;
	if ((double)st->near_matches < min_share * (double)st->near) {
		st->gave_up = true;
		return 0;
	}
	for (uint32_t i = 0; i < nn; i++) {
		uint32_t u = near[i].docid;
		if (gh_match(g, filter, u) && !gh_seen(w, u)) {
			gh_mark(w, u);
			gh_insert(w, cap, near[i].dist, u); /* scored by the descent */
		}
	}
	/* around the query: the matches two hops from the descent's nodes, a
	 * degree's worth per node at most */
	for (uint32_t i = 0; i < nn; i++) {
		uint32_t u = near[i].docid;
		if (gh_match(g, filter, u))
			continue;
		gh_mark(w, u);
		gh_score(g, w, cap, fresh, gh_neighbourhood(g, w, filter, u, fresh, hop, g->R));
	}
	if (w->nbuf >= cap)
		return 0;
	/* too few near the query (an anti-correlated filter): start from
	 * matches spread over the whole filter as well */
	uint64_t m = roaring_bitmap_get_cardinality(filter->bm);
	uint32_t s = cap > GRAPH_FILTER_SEEDS_MAX ? GRAPH_FILTER_SEEDS_MAX : cap, n = 0;
	for (uint32_t j = 0; j < s && m; j++) {
		uint32_t id;
		uint64_t rank = (2 * (uint64_t)j + 1) * m / (2 * (uint64_t)s);
		if (rank >= m || !roaring_bitmap_select(filter->bm, (uint32_t)rank, &id))
			break;
		if (gh_match(g, filter, id) && !gh_seen(w, id)) {
			gh_mark(w, id);
			fresh[n++] = id;
		}
		if (n == max || j + 1 == s) {
			gh_score(g, w, cap, fresh, n);
			n = 0;
		}
	}
	return 0;
}

int graph_search_filtered(const graph_t *g, const float *q, uint32_t k,
			  const graph_filter_opts_t *o, const roaring_bitmap_t *filter,
			  vela_hit_t *out, uint32_t *n_out, graph_filter_stats_t *st)
{
	graph_filter_stats_t dummy;
	if (st == NULL)
		st = &dummy;
	st->near = st->near_matches = 0;
	st->gave_up = false;
	if (g == NULL || q == NULL || o == NULL || filter == NULL || n_out == NULL ||
	    (k > 0 && out == NULL) || k > VELA_K_MAX || o->window > GRAPH_SEARCH_WINDOW_SIZE_MAX)
		return VELA_EINVAL;
	*n_out = 0;
	uint32_t cap = o->window < k ? k : o->window;
	cap = cap ? cap : GRAPH_SEARCH_WINDOW_SIZE_DEFAULT;
	if (k == 0 || g->entry == GRAPH_NONE)
		return 0;
	graph_work_t *w = graph_search_work(g);
	if (w == NULL)
		return VELA_ENOMEM;
	/* fresh: direct matches (<= R) plus two-hop ones up to 2R in all;
	 * hop: the non-matching neighbours (<= R) */
	uint32_t max = 2 * g->R;
	gh_bits_t *bits = gh_bits_get();
	int rc = bits ? gh_reserve(w, cap, (size_t)3 * g->R) : VELA_ENOMEM;
	uint32_t *fresh = w->ids, *hop = w->ids + max;
	w->ndist = 0;
	if (rc == 0)
		rc = gh_bits_fill(bits, filter, g->end);
	gh_filter_t gf = {bits ? bits->w : NULL, filter};
	if (rc == 0)
		rc = g->st.prepare(g->st.ctx, q, w->pq);
	if (rc == 0)
		rc = gh_seed(g, w, &gf, cap, fresh, hop, max, o->min_local_share, st);
	for (uint32_t cur = 0; rc == 0 && !st->gave_up;) {
		while (cur < w->nbuf && w->buf[cur].done)
			cur++;
		if (cur >= w->nbuf)
			break;
		w->buf[cur].done = 1;
		uint32_t m = gh_neighbourhood(g, w, &gf, w->buf[cur].id, fresh, hop, max);
		uint32_t pos = gh_score(g, w, cap, fresh, m);
		cur = pos < cur ? pos : cur;
	}
	uint32_t nm = w->nbuf;
	if (rc == 0 && (rc = graph_work_pool(w, nm)) == 0) {
		for (uint32_t i = 0; i < nm; i++)
			w->pool[i] = (vela_hit_t){w->buf[i].dist, w->buf[i].id};
		if (g->st.dist_rerank) { /* §3.2: re-rank the whole buffer */
			for (uint32_t i = 0; i < nm; i++)
				w->pool[i].dist = g->st.dist_rerank(g->st.ctx, w->pq, w->pool[i].docid);
			w->ndist += nm;
			graph_hits_sort(w->pool, nm);
		}
		*n_out = nm < k ? nm : k;
		memcpy(out, w->pool, *n_out * sizeof(*out));
	}
	st->ndist += w->ndist;
	gh_bits_put(bits);
	graph_search_work_put(w);
	return rc;
}
