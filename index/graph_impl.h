/* Private to index/: the GRAPH layout and the pieces shared by search
 * (graph.c), build and insert (graph_build.c), delete and consolidate
 * (graph_update.c) and snapshots (graph_io.c). */
#ifndef VELA_GRAPH_IMPL_H
#define VELA_GRAPH_IMPL_H

#include <stdbool.h>

#include "index/index.h"

#define GRAPH_NONE UINT32_MAX

/* Hint that node `id`'s vector is about to be read by st.dist (a cache
 * prefetch; never reads out of bounds, never changes a result). */
typedef void (*graph_prefetch_fn)(const void *ctx, uint32_t id);

/* Per-node state. Deleted nodes keep their adjacency until consolidation
 * so searches still pass through them (FreshDiskANN §4). */
enum graph_node_state { GRAPH_ABSENT = 0, GRAPH_LIVE = 1, GRAPH_DELETED = 2 };

struct graph {
	graph_store_t st;
	uint32_t R, L, pool, prune_to, threads;
	float alpha;
	const atomic_bool *cancel; /* graph_params_t.cancel */
	uint32_t *adj;   /* cap * R neighbour ids */
	uint32_t *deg;   /* cap out-degrees */
	uint8_t *state;  /* cap enum graph_node_state */
	uint64_t cap;    /* slots allocated */
	uint64_t end;    /* 1 + highest id ever added (0 if none) */
	uint64_t n_live, n_deleted;
	uint32_t entry;  /* GRAPH_NONE when empty */
	graph_prefetch_fn prefetch; /* NULL, or warms a node's vector (store-specific) */
	/* In-edges per slot from live nodes (a tombstone's list is never
	 * refreshed and goes at consolidation: it does not count), kept by
	 * the single-threaded writers (insert, update, delete) while `track`
	 * is set; the multi-threaded phases of build and consolidate clear it
	 * and recount at the end (graph_indeg_recount). */
	uint32_t *indeg;
	bool track;
	/* Nodes whose in-degree fell to 0 during the current write: linked
	 * again before it returns (graph_orphans_fix). `orph_lost`: one could
	 * not be noted or linked, so the next write runs graph_connect. */
	uint32_t *orph;
	size_t norph, orph_cap;
	bool orph_lost;
};

/* One candidate of the search buffer. */
typedef struct graph_cand {
	float dist;
	uint32_t id;
	uint32_t done; /* expanded */
} graph_cand_t;

/* Scratch of one searching thread; grown on demand, freed by
 * graph_work_free. Never shared between threads. */
typedef struct graph_work {
	uint16_t *vis;       /* visited: vis[id] == epoch (dense, vis_cap ids) */
	size_t vis_cap;
	uint16_t epoch;      /* current search's tag; 0 is never a live tag */
	graph_cand_t *buf;   /* sorted search buffer */
	uint32_t buf_cap, nbuf;
	vela_hit_t *hist;    /* expanded nodes (build's search history) */
	size_t hist_cap, nhist;
	vela_hit_t *pool;    /* prune candidates */
	float *best;         /* prune: closest accepted neighbour per candidate */
	uint8_t *taken;
	size_t pool_cap;
	uint32_t *ids;       /* R + scratch ids */
	size_t ids_cap;
	void *pq;            /* prepared query */
	size_t pq_cap;       /* bytes at pq */
	uint64_t ndist;      /* distances graph_greedy computed (search statistics) */
} graph_work_t;

/* Either a prepared query (pq) or a stored node (qid) as the query. */
typedef struct graph_query {
	const void *pq;
	uint32_t qid;
} graph_query_t;

static inline uint32_t *graph_adj(const graph_t *g, uint64_t id)
{
	return g->adj + id * g->R;
}

static inline int graph_state(const graph_t *g, uint64_t id)
{
	return id < g->end ? g->state[id] : GRAPH_ABSENT;
}

static inline float graph_dist_ids(const graph_t *g, uint32_t a, uint32_t b)
{
	return g->st.dist_ids(g->st.ctx, a, b);
}

static inline bool graph_hit_less(vela_hit_t a, vela_hit_t b)
{
	return a.dist < b.dist || (a.dist == b.dist && a.docid < b.docid);
}

/* graph.c */
int graph_params_check(const graph_store_t *st, graph_params_t *p);
int graph_alloc(const graph_store_t *st, const graph_params_t *p, graph_t **out);
int graph_reserve(graph_t *g, uint64_t id);
graph_work_t *graph_work_new(const graph_t *g);
void graph_work_free(graph_work_t *w);
int graph_work_pool(graph_work_t *w, size_t n);
int graph_greedy(const graph_t *g, graph_work_t *w, const graph_query_t *q, uint32_t window,
		 uint32_t cap, bool history);
/* The calling thread's cached search scratch (graph_search's), and back. */
graph_work_t *graph_search_work(const graph_t *g);
void graph_search_work_put(graph_work_t *w);
/* Start a visited set over ids below `end` (w->vis[id] == w->epoch: visited). */
int graph_vis_begin(graph_work_t *w, uint64_t end);
void graph_hits_sort(vela_hit_t *h, size_t n);
uint32_t graph_prune(const graph_t *g, graph_work_t *w, const vela_hit_t *cand, uint32_t m,
		     float alpha, uint32_t max, uint32_t *out);

/* graph_store_flat.c: the store's prefetch hint (graph_store_t.prefetch),
 * or NULL. */
graph_prefetch_fn graph_store_prefetch(const graph_store_t *st);

/* graph_build.c */
typedef int (*graph_task_fn)(graph_t *g, graph_work_t *w, size_t i, void *arg);
int graph_parallel(graph_t *g, size_t n, graph_task_fn fn, void *arg);
int graph_medoid(const graph_t *g, const uint32_t *ids, size_t n, uint32_t *out);
int graph_repair(graph_t *g, graph_work_t *w, uint32_t y, const uint32_t *add, uint32_t nadd,
		 float alpha);

/* graph_update.c: in-degrees and reachability. graph_list_set replaces
 * x's out-list (nb may alias it) and graph_state_set changes x's state,
 * both keeping in-degrees when tracked; live nodes left without an
 * in-edge are noted for graph_orphans_fix. */
void graph_list_set(graph_t *g, uint32_t x, const uint32_t *nb, uint32_t n);
void graph_state_set(graph_t *g, uint32_t x, uint8_t state);
void graph_indeg_recount(graph_t *g);
void graph_orphan_note(graph_t *g, uint32_t z);
int graph_orphans_fix(graph_t *g, graph_work_t *w);

#endif
