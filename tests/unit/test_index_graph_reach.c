/* Unit tests for index/ GRAPH reachability under churn: every live node
 * must stay reachable from the entry point through any mix of inserts,
 * vector updates (graph_update of a live docid, the server's HSET of an
 * existing key), deletes, consolidations, re-use of consolidated slots,
 * revived tombstones and a snapshot round trip.
 *
 * The reference is independent of the graph code: an exact breadth-first
 * walk over graph_neighbors() from graph_entry(), after every operation,
 * and at the end a search for each live node's own vector with a window
 * larger than the graph (which must return it).
 *
 * The workload mimics tests/integration/crashlib.py (8-dim Gaussian
 * vectors, ~1,100 stable documents updated in place, churn keys created and
 * deleted, consolidation when tombstones exceed 20 % of live nodes, as
 * db/vecindex.c does). R = 16, L = 64 make the defect it guards against (a
 * re-pruned list dropping a node's only in-edge) show within ~2,000
 * operations on every seed; one case runs the server's defaults. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index/index.h"

#define TEST_RNG_SEED 0x243f6a8885a308d3ull
#include "test_rng.h"

#define DIM 8u
#define N_STABLE 1100u
#define N_CHURN 160u
#define N_KEYS (N_STABLE + N_CHURN)
#define ID_CAP 16384u /* ids handed out stay below this */
#define CONSOLIDATE_RATIO 0.2 /* db/db.h DB_GRAPH_CONSOLIDATE_RATIO */
#define SELF_WINDOW 2000u     /* > every graph here: the walk covers all it reaches */

enum { ID_FREE = 0, ID_LIVE, ID_TOMB };

/* Operation mix, in percent (the rest: delete). */
typedef struct {
	unsigned update_stable, churn_set, revive;
	bool reuse_slots;      /* new churn docids may reuse consolidated slots */
	bool must_consolidate; /* deletes enough to reach consolidation */
} mix_t;

typedef struct {
	flat_index_t *f;
	graph_store_t st;
	graph_t *g;
	uint32_t key[N_KEYS]; /* docid of each key, UINT32_MAX when absent */
	uint8_t id_state[ID_CAP];
	uint32_t next_id;
	uint32_t *tombs, ntombs; /* deleted, not consolidated */
	uint32_t *free_ids, nfree; /* consolidated: absent from the graph */
	unsigned consolidations, revived, reused;
} rig_t;

static void rand_vec(float *v)
{
	for (uint32_t i = 0; i < DIM; i++)
		v[i] = rng_gauss();
}

static void rig_set(rig_t *r, uint32_t id)
{
	float v[DIM];
	rand_vec(v);
	cr_assert_eq(flat_set(r->f, id, v), 0);
}

static void rig_init(rig_t *r, uint64_t seed, uint32_t R, uint32_t L)
{
	memset(r, 0, sizeof(*r));
	rng_state = TEST_RNG_SEED ^ (seed * 0x9e3779b97f4a7c15ull);
	for (int i = 0; i < 4; i++)
		rng_next();
	cr_assert_eq(flat_create(DIM, VELA_METRIC_L2, VELA_VEC_FLOAT32, &r->f), 0);
	cr_assert_eq(graph_store_flat(r->f, &r->st), 0);
	graph_params_t p;
	graph_params_default(&p);
	p.max_degree = R;
	p.window = L;
	p.threads = 2;
	cr_assert_eq(graph_create(&r->st, &p, &r->g), 0);
	r->tombs = malloc(ID_CAP * sizeof(uint32_t));
	r->free_ids = malloc(ID_CAP * sizeof(uint32_t));
	cr_assert(r->tombs && r->free_ids);
	uint32_t ids[N_STABLE];
	for (uint32_t k = 0; k < N_KEYS; k++)
		r->key[k] = UINT32_MAX;
	for (uint32_t k = 0; k < N_STABLE; k++) {
		r->key[k] = ids[k] = r->next_id++;
		r->id_state[ids[k]] = ID_LIVE;
		rig_set(r, ids[k]);
	}
	cr_assert_eq(graph_build(r->g, ids, N_STABLE), 0);
}

static void rig_free(rig_t *r)
{
	graph_destroy(r->g);
	flat_destroy(r->f);
	free(r->tombs);
	free(r->free_ids);
}

/* ------------------------------------------------ the reference */

/* Live nodes no walk from the entry reaches (an exact BFS over the
 * adjacency the graph reports); *first gets the lowest such id. */
static uint32_t unreachable(const rig_t *r, uint32_t *first)
{
	static uint8_t seen[ID_CAP];
	static uint32_t queue[ID_CAP];
	memset(seen, 0, sizeof(seen));
	uint32_t head = 0, tail = 0, e = graph_entry(r->g), bad = 0;
	*first = UINT32_MAX;
	if (e != UINT32_MAX) {
		cr_assert_lt(e, ID_CAP);
		seen[e] = 1;
		queue[tail++] = e;
	}
	while (head < tail) {
		const uint32_t *nb;
		uint32_t d = graph_neighbors(r->g, queue[head++], &nb);
		for (uint32_t i = 0; i < d; i++) {
			if (nb[i] >= ID_CAP)
				cr_assert_fail("edge to %u, past every id handed out", nb[i]);
			if (!seen[nb[i]]) {
				seen[nb[i]] = 1;
				queue[tail++] = nb[i];
			}
		}
	}
	for (uint32_t id = 0; id < r->next_id; id++) {
		if (graph_contains(r->g, id) != (r->id_state[id] == ID_LIVE))
			cr_assert_fail("id %u: graph_contains disagrees with the model", id);
		if (r->id_state[id] == ID_LIVE && !seen[id] && bad++ == 0)
			*first = id;
	}
	return bad;
}

/* Every live node is found by a search for its own vector. */
static void self_search(const rig_t *r, const char *when)
{
	graph_search_params_t sp;
	graph_search_params_default(&sp);
	sp.window = SELF_WINDOW;
	float v[DIM];
	vela_hit_t hits[10];
	uint32_t missed = 0, first = UINT32_MAX;
	for (uint32_t id = 0; id < r->next_id; id++) {
		if (r->id_state[id] != ID_LIVE)
			continue;
		cr_assert_eq(flat_get(r->f, id, v), 0);
		uint32_t n = 0;
		cr_assert_eq(graph_search(r->g, v, 10, &sp, hits, &n), 0);
		bool found = false;
		for (uint32_t i = 0; i < n; i++)
			found |= hits[i].docid == id;
		if (!found && missed++ == 0)
			first = id;
	}
	cr_assert_eq(missed, 0, "%s: %u live node(s) not found by their own vector (first %u)",
		     when, missed, first);
}

/* ------------------------------------------------ operations */

/* As db_vec_remove: the row goes, the node becomes a tombstone, and
 * consolidation runs once tombstones exceed 20 % of the live nodes. */
static const char *rig_delete(rig_t *r, uint32_t k)
{
	uint32_t id = r->key[k];
	r->key[k] = UINT32_MAX;
	cr_assert_eq(flat_remove(r->f, id), 0);
	cr_assert_eq(graph_delete(r->g, id), 0);
	r->id_state[id] = ID_TOMB;
	r->tombs[r->ntombs++] = id;
	if ((double)graph_count_deleted(r->g) <= CONSOLIDATE_RATIO * (double)graph_count(r->g))
		return "delete";
	cr_assert_eq(graph_consolidate(r->g), 0);
	cr_assert_eq(graph_count_deleted(r->g), 0);
	for (uint32_t i = 0; i < r->ntombs; i++) {
		if (r->id_state[r->tombs[i]] != ID_TOMB)
			continue; /* revived meanwhile */
		r->id_state[r->tombs[i]] = ID_FREE;
		r->free_ids[r->nfree++] = r->tombs[i];
	}
	r->ntombs = 0;
	r->consolidations++;
	return "delete+consolidate";
}

/* A new docid for key k: a consolidated slot (graph_insert into an absent
 * slot) or the next fresh id. */
static const char *rig_create(rig_t *r, uint32_t k, bool reuse)
{
	uint32_t id;
	const char *what = "insert";
	if (reuse && r->nfree > 0) {
		uint32_t i = (uint32_t)(rng_next() % r->nfree);
		id = r->free_ids[i];
		r->free_ids[i] = r->free_ids[--r->nfree];
		r->reused++;
		what = "insert-reused-slot";
	} else {
		cr_assert_lt(r->next_id, ID_CAP);
		id = r->next_id++;
	}
	r->key[k] = id;
	r->id_state[id] = ID_LIVE;
	rig_set(r, id);
	cr_assert_eq(graph_insert(r->g, id), 0, "%s %u", what, id);
	return what;
}

/* A tombstone's docid used again with a new vector (graph_update revives). */
static const char *rig_revive(rig_t *r, uint32_t k)
{
	uint32_t i = (uint32_t)(rng_next() % r->ntombs), id = r->tombs[i];
	if (r->id_state[id] != ID_TOMB)
		return NULL;
	r->key[k] = id;
	r->id_state[id] = ID_LIVE;
	rig_set(r, id);
	cr_assert_eq(graph_update(r->g, id), 0);
	r->revived++;
	return "revive-tombstone";
}

static const char *rig_step(rig_t *r, const mix_t *m)
{
	unsigned pct = (unsigned)(rng_next() % 100);
	if (pct < m->update_stable) { /* a stable document's new vector */
		uint32_t id = r->key[rng_next() % N_STABLE];
		rig_set(r, id);
		cr_assert_eq(graph_update(r->g, id), 0);
		return "update";
	}
	uint32_t k = N_STABLE + (uint32_t)(rng_next() % N_CHURN);
	bool present = r->key[k] != UINT32_MAX;
	pct -= m->update_stable;
	if (pct < m->churn_set) {
		if (!present)
			return rig_create(r, k, m->reuse_slots);
		rig_set(r, r->key[k]);
		cr_assert_eq(graph_update(r->g, r->key[k]), 0);
		return "update-churn";
	}
	pct -= m->churn_set;
	if (pct < m->revive)
		return present || r->ntombs == 0 ? NULL : rig_revive(r, k);
	return present ? rig_delete(r, k) : NULL;
}

/* Save and load the graph over the same store; results must not change. */
static void rig_roundtrip(rig_t *r)
{
	float q[3][DIM];
	vela_hit_t before[3][10], after[10];
	uint32_t nb[3], na;
	for (int i = 0; i < 3; i++) {
		rand_vec(q[i]);
		cr_assert_eq(graph_search(r->g, q[i], 10, NULL, before[i], &nb[i]), 0);
	}
	FILE *f = tmpfile();
	cr_assert_not_null(f);
	cr_assert_eq(graph_save(r->g, f), 0);
	rewind(f);
	uint64_t live = graph_count(r->g), del = graph_count_deleted(r->g);
	uint32_t entry = graph_entry(r->g);
	graph_destroy(r->g);
	r->g = NULL;
	cr_assert_eq(graph_load(f, &r->st, 2, &r->g), 0);
	fclose(f);
	cr_assert_eq(graph_count(r->g), live);
	cr_assert_eq(graph_count_deleted(r->g), del);
	cr_assert_eq(graph_entry(r->g), entry);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(graph_search(r->g, q[i], 10, NULL, after, &na), 0);
		cr_assert_eq(na, nb[i]);
		cr_assert_arr_eq(after, before[i], na * sizeof(vela_hit_t));
	}
}

/* nops operations, the reference walk after each, a snapshot round trip
 * half-way, self-searches after the round trip and at the end. */
static void run(uint64_t seed, uint32_t R, uint32_t L, const mix_t *m, uint32_t nops)
{
	rig_t *r = malloc(sizeof(*r));
	cr_assert_not_null(r);
	rig_init(r, seed, R, L);
	uint32_t first;
	cr_assert_eq(unreachable(r, &first), 0, "seed %llu: after build, %u unreachable",
		     (unsigned long long)seed, first);
	for (uint32_t op = 0; op < nops; op++) {
		if (op == nops / 2) {
			rig_roundtrip(r);
			cr_assert_eq(unreachable(r, &first), 0);
			self_search(r, "after the snapshot round trip");
		}
		const char *what = rig_step(r, m);
		if (what == NULL)
			continue;
		uint32_t bad = unreachable(r, &first);
		cr_assert_eq(bad, 0,
			     "seed %llu, op %u (%s): %u live node(s) unreachable from entry %u, "
			     "first %u (in-degree lost)",
			     (unsigned long long)seed, op, what, bad, graph_entry(r->g), first);
	}
	self_search(r, "at the end");
	if (m->must_consolidate)
		cr_assert_gt(r->consolidations, 0, "the mix must reach consolidation");
	if (m->reuse_slots)
		cr_assert_gt(r->reused, 0);
	if (m->revive)
		cr_assert_gt(r->revived, 0);
	rig_free(r);
	free(r);
}

/* crashlib.py's mix: 55 % updates of stable documents, 32 % churn HSET,
 * 13 % DEL (new docids only, as the db hands out for GRAPH indexes). */
static const mix_t MIX_SERVER = {55, 32, 0, false, false};
/* No stable updates: churn inserts (half into consolidated slots), revived
 * tombstones and deletes, so consolidation runs every few hundred ops. */
static const mix_t MIX_DELETE = {0, 45, 5, true, true};

/* Before the fix, seed 1 lost a node at op 793 (an update), and the
 * in-degree-0 rule alone still let seed 2 cut off a pair at op 2277. */
Test(graph_reach, server_mix_small_degree)
{
	for (uint64_t seed = 1; seed <= 2; seed++)
		run(seed, 16, 64, &MIX_SERVER, 2500);
}

/* Before the fix, seed 11 lost a node at op 1218 (a consolidation). */
Test(graph_reach, delete_heavy_slot_reuse)
{
	for (uint64_t seed = 11; seed <= 12; seed++)
		run(seed, 12, 48, &MIX_DELETE, 2500);
}

/* The server's parameters (HNSW M = 16 -> R = 32, L = 200). */
Test(graph_reach, server_defaults)
{
	run(21, GRAPH_MAX_DEGREE_DEFAULT, GRAPH_CONSTRUCTION_WINDOW_SIZE_DEFAULT, &MIX_SERVER,
	    2000);
}
