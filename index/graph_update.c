/* GRAPH index: soft delete and consolidation (FreshDiskANN, Singh et al.
 * 2021, §4.2 Algorithm 4; SVS "consolidate", reference §3.2). */
#include <stdlib.h>
#include <string.h>

#include "index/graph_impl.h"

int graph_delete(graph_t *g, uint32_t id)
{
	if (g == NULL)
		return VELA_EINVAL;
	if (graph_state(g, id) != GRAPH_LIVE)
		return VELA_ENOTFOUND;
	g->state[id] = GRAPH_DELETED;
	g->n_live--;
	g->n_deleted++;
	return 0;
}

static bool graph_touches_deleted(const graph_t *g, uint32_t p)
{
	const uint32_t *nb = graph_adj(g, p);
	for (uint32_t i = 0; i < g->deg[p]; i++)
		if (g->state[nb[i]] == GRAPH_DELETED)
			return true;
	return false;
}

/* Repair live node p (Algorithm 4): candidates are its live neighbours and
 * the live neighbours of its deleted neighbours; more than R of them are
 * robust-pruned. Reads only deleted nodes' lists, writes only p's, so
 * nodes can be repaired in parallel. */
static int graph_task_consolidate(graph_t *g, graph_work_t *w, size_t i, void *arg)
{
	(void)arg;
	uint32_t p = (uint32_t)i;
	if (g->state[p] != GRAPH_LIVE || !graph_touches_deleted(g, p))
		return 0;
	const uint32_t *nb = graph_adj(g, p);
	if (graph_work_pool(w, (size_t)g->deg[p] * (g->R + 1)) != 0)
		return VELA_ENOMEM;
	size_t n = 0;
	for (uint32_t j = 0; j < g->deg[p]; j++) {
		uint32_t v = nb[j];
		if (g->state[v] == GRAPH_LIVE) {
			w->pool[n++] = (vela_hit_t){graph_dist_ids(g, p, v), v};
			continue;
		}
		const uint32_t *vn = graph_adj(g, v);
		for (uint32_t t = 0; t < g->deg[v]; t++)
			if (vn[t] != p && g->state[vn[t]] == GRAPH_LIVE)
				w->pool[n++] = (vela_hit_t){graph_dist_ids(g, p, vn[t]), vn[t]};
	}
	graph_hits_sort(w->pool, n);
	size_t m = 0;
	for (size_t j = 0; j < n; j++)
		if (m == 0 || w->pool[m - 1].docid != w->pool[j].docid)
			w->pool[m++] = w->pool[j];
	uint32_t *out = w->ids, deg = 0;
	if (m <= g->R)
		for (size_t j = 0; j < m; j++)
			out[deg++] = w->pool[j].docid;
	else
		deg = graph_prune(g, w, w->pool, (uint32_t)m, g->alpha, g->R, out);
	memcpy(graph_adj(g, p), out, deg * sizeof(uint32_t));
	g->deg[p] = deg;
	return 0;
}

/* A deleted entry point gives way to the medoid of the live nodes. */
static int graph_entry_refresh(graph_t *g)
{
	if (g->entry == GRAPH_NONE || g->state[g->entry] == GRAPH_LIVE)
		return 0;
	uint32_t *ids = malloc((g->n_live ? g->n_live : 1) * sizeof(uint32_t));
	if (ids == NULL)
		return VELA_ENOMEM;
	size_t n = 0;
	for (uint64_t i = 0; i < g->end; i++)
		if (g->state[i] == GRAPH_LIVE)
			ids[n++] = (uint32_t)i;
	uint32_t e;
	int rc = graph_medoid(g, ids, n, &e);
	if (rc == 0)
		g->entry = e;
	free(ids);
	return rc;
}

int graph_consolidate(graph_t *g)
{
	if (g == NULL)
		return VELA_EINVAL;
	if (g->n_deleted == 0)
		return 0;
	/* Pick the new entry first: the medoid search needs no adjacency, and
	 * failing here leaves everything untouched. */
	uint32_t old = g->entry;
	int rc = graph_entry_refresh(g);
	if (rc == 0)
		rc = graph_parallel(g, g->end, graph_task_consolidate, NULL);
	if (rc != 0) {
		g->entry = old; /* tombstones stay: the graph is still valid */
		return rc;
	}
	for (uint64_t i = 0; i < g->end; i++)
		if (g->state[i] == GRAPH_DELETED) {
			g->state[i] = GRAPH_ABSENT;
			g->deg[i] = 0;
		}
	g->n_deleted = 0;
	while (g->end > 0 && g->state[g->end - 1] == GRAPH_ABSENT)
		g->end--;
	return 0;
}
