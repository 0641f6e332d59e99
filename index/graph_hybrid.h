/**
 * @file graph_hybrid.h
 * @brief GRAPH searches for hybrid (filter + KNN) queries, and a graph
 * search that reports its distance computations (FT.PROFILE). Part of
 * index/ (index.h is the module's main header; this one adds the entry
 * points the db planner needs for hybrid plans).
 *
 * Thread-safety: as graph_search (any number of concurrent searches on one
 * graph; writers need external exclusion).
 */
#ifndef VELA_GRAPH_HYBRID_H
#define VELA_GRAPH_HYBRID_H

#include "index/index.h"

/**
 * @brief graph_search, adding the distance computations it made (traversal
 * plus re-rank) to *ndist when ndist is not NULL. Same results.
 */
int graph_search_counted(const graph_t *g, const float *q, uint32_t k,
			 const graph_search_params_t *sp, vela_hit_t *out, uint32_t *n_out,
			 uint64_t *ndist);

/** Seeds of the filtered walk spread over the filter's matches (evenly
 * spaced ranks) when fewer than a window's worth were found near the
 * query: the window, at most this many. */
#define GRAPH_FILTER_SEEDS_MAX 1024u

/** Largest window of the unfiltered descent that finds the query's
 * neighbourhood before the filtered walk starts (the walk's window, up to
 * this). */
#define GRAPH_FILTER_DESCENT_MAX 64u

/** Options of graph_search_filtered. */
typedef struct graph_filter_opts {
	uint32_t window; /**< buffer of matching candidates (raised to k) */
	/** Give up before the walk (stats.gave_up, no hits) when the share of
	 * matches in the query's unfiltered neighbourhood (the descent's nodes
	 * and their neighbours) is below this: the filter is anti-correlated
	 * with the query, and the walk would start from far-away matches.
	 * 0 = never (and the neighbourhood is not sampled). */
	double min_local_share;
} graph_filter_opts_t;

/** What graph_search_filtered did. */
typedef struct graph_filter_stats {
	uint64_t ndist;        /**< distance computations */
	uint32_t near;         /**< nodes sampled around the query (min_local_share > 0) */
	uint32_t near_matches; /**< of which match the filter */
	bool gave_up;          /**< min_local_share not reached: no walk, no hits */
} graph_filter_stats_t;

/**
 * @brief Approximate k nearest live nodes of `q` among the docids in
 * `filter`, walking only the predicate subgraph (ACORN-1, Patel et al.,
 * SIGMOD 2024, §5: a node's neighbour list is the matching neighbours plus
 * the matching neighbours of its non-matching neighbours, so the matching
 * nodes stay connected when the filter removes most edges).
 *
 * The walk starts from the matching nodes around the query (an unfiltered
 * descent with the walk's window, at most GRAPH_FILTER_DESCENT_MAX, and
 * the matches within two hops of what it found), plus a window's worth of
 * matches spread over the filter when those are fewer than the window
 * (anti-correlated filters: little near the query matches). Then
 * best-first search with a buffer of `window` (>= k) matching candidates,
 * re-ranked with the store's dist_rerank when it has one.
 *
 * @param filter  borrowed for the call; docids that are not live nodes are
 *                ignored
 * @param out     caller-owned, k slots; *n_out hits ascending (dist, docid)
 * @param st      if not NULL, filled (ndist is added to, the rest set)
 * @return 0; VELA_EINVAL (NULL arguments, k > VELA_K_MAX, window out of
 * range); VELA_ENOMEM; a code from the store's prepare
 */
int graph_search_filtered(const graph_t *g, const float *q, uint32_t k,
			  const graph_filter_opts_t *o, const roaring_bitmap_t *filter,
			  vela_hit_t *out, uint32_t *n_out, graph_filter_stats_t *st);

#endif
