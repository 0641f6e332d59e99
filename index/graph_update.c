/* GRAPH index: soft delete and consolidation (FreshDiskANN, Singh et al.
 * 2021, §4.2 Algorithm 4; SVS "consolidate", reference §3.2), and keeping
 * every node reachable from the entry point (NSG, Fu et al. 2019, §3.3
 * Algorithm 2: link nodes the tree from the navigating node missed). */
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "index/graph_impl.h"

/* ------------------------------------------------ in-degrees */

/* Robust pruning never looks at in-edges: re-pruning a list (a back-edge
 * overflow, an updated vector's new list, consolidation) or deleting a node
 * can drop the only edge into a node, which no walk from the entry reaches
 * after that. Each write therefore counts in-edges from live nodes and
 * links again every node whose count falls to 0, or to 1 from one of its
 * own out-neighbours (a pair pointing only at each other); graph_connect
 * (build, consolidate, snapshots) catches what is left: longer cycles. */

void graph_orphan_note(graph_t *g, uint32_t z)
{
	if (g->norph == g->orph_cap) {
		size_t cap = g->orph_cap ? g->orph_cap * 2 : 16;
		uint32_t *o = realloc(g->orph, cap * sizeof(uint32_t));
		if (o == NULL) {
			g->orph_lost = true;
			return;
		}
		g->orph = o;
		g->orph_cap = cap;
	}
	g->orph[g->norph++] = z;
}

void graph_list_set(graph_t *g, uint32_t x, const uint32_t *nb, uint32_t n)
{
	uint32_t *a = graph_adj(g, x);
	if (g->track && g->state[x] == GRAPH_LIVE) {
		/* count the new edges first: an edge kept never reads as a 0 */
		for (uint32_t i = 0; i < n; i++)
			g->indeg[nb[i]]++;
		for (uint32_t i = 0; i < g->deg[x]; i++)
			if (--g->indeg[a[i]] <= 1)
				graph_orphan_note(g, a[i]);
	}
	if (a != nb && n > 0)
		memmove(a, nb, n * sizeof(uint32_t));
	g->deg[x] = n;
}

void graph_state_set(graph_t *g, uint32_t x, uint8_t state)
{
	bool was = g->state[x] == GRAPH_LIVE, is = state == GRAPH_LIVE;
	const uint32_t *a = graph_adj(g, x);
	if (g->track && is && !was)
		for (uint32_t i = 0; i < g->deg[x]; i++)
			g->indeg[a[i]]++;
	if (g->track && was && !is)
		for (uint32_t i = 0; i < g->deg[x]; i++)
			if (--g->indeg[a[i]] <= 1)
				graph_orphan_note(g, a[i]);
	g->state[x] = state;
}

void graph_indeg_recount(graph_t *g)
{
	if (g->cap)
		memset(g->indeg, 0, g->cap * sizeof(uint32_t));
	for (uint64_t x = 0; x < g->end; x++)
		if (g->state[x] == GRAPH_LIVE)
			for (uint32_t i = 0; i < g->deg[x]; i++)
				g->indeg[graph_adj(g, x)[i]]++;
	g->track = true;
	g->norph = 0;
}

/* Add the edge y -> z (false: y has it already, or no room). A full y gives
 * up its farthest neighbour among those with three in-edges or more (so
 * none is left with fewer than two, which graph_orphans_fix would look at
 * again); with `any`, its farthest neighbour at all (noted). */
static bool graph_edge_force(graph_t *g, uint32_t y, uint32_t z, bool any)
{
	uint32_t *nb = graph_adj(g, y), deg = g->deg[y];
	for (uint32_t i = 0; i < deg; i++)
		if (nb[i] == z)
			return false;
	bool counts = g->state[y] == GRAPH_LIVE;
	if (deg < g->R) {
		nb[deg] = z;
		g->deg[y] = deg + 1;
		g->indeg[z] += counts;
		return true;
	}
	uint32_t victim = UINT32_MAX;
	float far = -1.0f;
	for (uint32_t i = 0; i < deg; i++) {
		if (!any && g->indeg[nb[i]] < 3)
			continue;
		float d = graph_dist_ids(g, y, nb[i]);
		if (d > far || victim == UINT32_MAX) {
			far = d;
			victim = i;
		}
	}
	if (victim == UINT32_MAX)
		return false;
	if (counts && --g->indeg[nb[victim]] <= 1)
		graph_orphan_note(g, nb[victim]);
	nb[victim] = z;
	g->indeg[z] += counts;
	return true;
}

/* Give z an in-edge from the nearest live node a search for z's own
 * vector reaches (so from a node reachable from the entry): the edge its
 * insert would have wanted as a back-edge. *linked: whether it got one. */
static int graph_adopt(graph_t *g, graph_work_t *w, uint32_t z, bool *linked)
{
	graph_query_t q = {NULL, z};
	int rc = graph_greedy(g, w, &q, g->L, g->L, false);
	*linked = false;
	for (int any = 0; rc == 0 && any < 2 && !*linked; any++)
		for (uint32_t i = 0; i < w->nbuf && !*linked; i++) {
			uint32_t y = w->buf[i].id;
			*linked = y != z && g->state[y] == GRAPH_LIVE && graph_edge_force(g, y, z, any);
		}
	/* Nothing live reached (only tombstones): hang it off the entry. */
	if (rc == 0 && !*linked && g->entry != z)
		*linked = graph_edge_force(g, g->entry, z, true);
	return rc;
}

/* Is z's one in-edge from one of its own out-neighbours? Then the two may
 * point only at each other, cut off from the rest (R^2 reads). */
static bool graph_pair_risk(const graph_t *g, uint32_t z)
{
	const uint32_t *a = graph_adj(g, z);
	for (uint32_t i = 0; i < g->deg[z]; i++) {
		uint32_t u = a[i];
		if (g->state[u] != GRAPH_LIVE)
			continue;
		const uint32_t *b = graph_adj(g, u);
		for (uint32_t j = 0; j < g->deg[u]; j++)
			if (b[j] == z)
				return true;
	}
	return false;
}

/* Link the live nodes noted by this write: those left without an in-edge
 * and those whose one in-edge comes from their own out-neighbour (and the
 * nodes that linking them leaves so, within a budget); when some could not
 * be linked, a full graph_connect. */
int graph_orphans_fix(graph_t *g, graph_work_t *w)
{
	int rc = 0;
	size_t budget = 4 * g->norph + 64;
	for (size_t i = 0; i < g->norph && rc == 0; i++) {
		uint32_t z = g->orph[i];
		if (z == g->entry || g->state[z] != GRAPH_LIVE || g->indeg[z] > 1 ||
		    (g->indeg[z] == 1 && !graph_pair_risk(g, z)))
			continue;
		bool linked = false;
		if (budget > 0) {
			budget--;
			rc = graph_adopt(g, w, z, &linked);
		}
		if (!linked)
			g->orph_lost = true;
	}
	g->norph = 0;
	if (rc == 0 && g->orph_lost)
		rc = graph_connect(g);
	return rc;
}

/* Mark everything reachable from `from` (already marked) in seen. */
static void graph_bfs(const graph_t *g, uint8_t *seen, uint32_t *queue, uint32_t from)
{
	size_t head = 0, tail = 0;
	queue[tail++] = from;
	while (head < tail) {
		uint32_t u = queue[head++];
		const uint32_t *nb = graph_adj(g, u);
		for (uint32_t i = 0; i < g->deg[u]; i++)
			if (!seen[nb[i]]) {
				seen[nb[i]] = 1;
				queue[tail++] = nb[i];
			}
	}
}

int graph_connect(graph_t *g)
{
	if (g == NULL)
		return VELA_EINVAL;
	if (g->entry == GRAPH_NONE || g->end == 0)
		return 0;
	if (!g->track)
		graph_indeg_recount(g);
	uint8_t *seen = malloc(g->end);
	uint32_t *queue = malloc(g->end * sizeof(uint32_t));
	graph_work_t *w = graph_work_new(g);
	int rc = seen && queue && w ? 0 : VELA_ENOMEM;
	/* A full node that takes an edge gives one up: that node may be cut
	 * off in turn, so repeat until a round finds nothing (a few at most). */
	for (int round = 0; rc == 0 && round < 8; round++) {
		memset(seen, 0, g->end);
		seen[g->entry] = 1;
		graph_bfs(g, seen, queue, g->entry);
		size_t nlinked = 0;
		for (uint64_t z = 0; z < g->end && rc == 0; z++) {
			if (seen[z] || g->state[z] != GRAPH_LIVE)
				continue;
			bool linked;
			rc = graph_adopt(g, w, (uint32_t)z, &linked);
			seen[z] = 1;
			graph_bfs(g, seen, queue, (uint32_t)z);
			nlinked += linked;
		}
		g->norph = 0; /* orphans of this round are found by the next one */
		if (nlinked == 0)
			break;
	}
	if (rc == 0)
		g->orph_lost = false; /* all that can be linked now is */
	free(seen);
	free(queue);
	graph_work_free(w);
	return rc;
}

/* ------------------------------------------------ delete */

int graph_delete(graph_t *g, uint32_t id)
{
	if (g == NULL)
		return VELA_EINVAL;
	if (graph_state(g, id) != GRAPH_LIVE)
		return VELA_ENOTFOUND;
	graph_state_set(g, id, GRAPH_DELETED);
	g->n_live--;
	g->n_deleted++;
	/* Its out-edges stop counting: a node they were the last live in-edge
	 * of gets one from a live node (reachable now only through the
	 * tombstone, whose own in-edges are not kept). */
	if (g->norph > 0) {
		graph_work_t *w = graph_work_new(g);
		if (w == NULL || graph_orphans_fix(g, w) != 0)
			g->orph_lost = true; /* the next write runs graph_connect */
		graph_work_free(w);
	}
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
	graph_list_set(g, p, out, deg); /* untracked: workers run in parallel */
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
	g->track = false;
	if (rc == 0)
		rc = graph_parallel(g, g->end, graph_task_consolidate, NULL);
	if (rc != 0) {
		g->entry = old; /* tombstones stay: the graph is still valid */
		graph_indeg_recount(g);
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
	/* Repair reads one hop through each tombstone and prunes: a node whose
	 * in-edges all came from tombstones (or through chains of them) may
	 * have none left. Same cost order as the repair itself (O(n R)). */
	graph_indeg_recount(g);
	return graph_connect(g);
}
