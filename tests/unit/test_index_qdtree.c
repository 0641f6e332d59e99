/* The qd-tree of the partition layout (index.h QDTREE):
 *   - the symbolic relations of TAG and numeric atoms;
 *   - on a toy workload, the cuts the greedy construction picks match a
 *     choice computed by hand (below);
 *   - on random data and workloads: every document lands in exactly one
 *     leaf, every leaf's description holds for its documents, leaves
 *     respect the minimum size, and routing never loses a match. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "index/index.h"
#include "test_rng.h"

TestSuite(index_qdtree, .timeout = 60);

static qdtree_atom_t tag(uint32_t field, bool single, const uint64_t *v, uint32_t n)
{
	qdtree_atom_t a;
	memset(&a, 0, sizeof(a));
	a.kind = QDTREE_ATOM_TAG;
	a.field = field;
	a.single = single;
	a.n_vals = n;
	memcpy(a.vals, v, n * sizeof(*v));
	return a;
}

static qdtree_atom_t num(uint32_t field, uint64_t lo, uint64_t hi)
{
	qdtree_atom_t a;
	memset(&a, 0, sizeof(a));
	a.kind = QDTREE_ATOM_NUM;
	a.field = field;
	a.lo = lo;
	a.hi = hi;
	return a;
}

static roaring_bitmap_t *range_bm(uint32_t lo, uint32_t hi_excl)
{
	roaring_bitmap_t *b = roaring_bitmap_create();
	roaring_bitmap_add_range(b, lo, hi_excl);
	return b;
}

Test(index_qdtree, atom_relations)
{
	uint64_t ab[] = {1, 2}, a[] = {1}, c[] = {3}, bc[] = {2, 3};
	qdtree_atom_t tab = tag(0, true, ab, 2), ta = tag(0, true, a, 1), tc = tag(0, true, c, 1);
	qdtree_atom_t tbc = tag(0, true, bc, 2), mc = tag(0, false, c, 1), ma = tag(0, false, a, 1);
	cr_assert(qdtree_atom_implies(&ta, &tab));
	cr_assert(!qdtree_atom_implies(&tab, &ta));
	cr_assert(qdtree_atom_disjoint(&ta, &tc));
	cr_assert(!qdtree_atom_disjoint(&tab, &tbc));
	cr_assert(!qdtree_atom_disjoint(&ma, &mc), "multi-valued: a document may hold both");
	qdtree_atom_t other = tag(1, true, a, 1);
	cr_assert(!qdtree_atom_implies(&ta, &other) && !qdtree_atom_disjoint(&tc, &other));
	qdtree_atom_t n1 = num(2, 10, 20), n2 = num(2, 0, 30), n3 = num(2, 21, 40), n4 = num(2, 20, 25);
	cr_assert(qdtree_atom_implies(&n1, &n2) && !qdtree_atom_implies(&n2, &n1));
	cr_assert(qdtree_atom_disjoint(&n1, &n3) && !qdtree_atom_disjoint(&n1, &n4));
	cr_assert(!qdtree_atom_implies(&n1, &ta) && !qdtree_atom_disjoint(&n1, &ta));
}

/*
 * The toy workload: 1,000 documents; field 0 (`cat`, single-valued) is a
 * on docids 0..299, b on 300..649, c on 650..999; field 1 (`num`) is the
 * docid. Atoms: A0 cat=a, A1 cat=b, A2 cat=c, A3 num<=499, A4 num>=500.
 * Queries: q0 {A0} w5, q1 {A1} w3, q2 {A3} w4, q3 {A2, A4} w1. Leaf min 100.
 *
 * Root (D = all, total weight 13), weight visiting both children:
 *   A0: q2 (num vs cat) = 4, |D&c| 300 (imbalance |600-1000| = 400)
 *   A1: q2 = 4, 350 (imbalance 300)  <- chosen: cost 4, best balance
 *   A2: q2 = 4, 350 (imbalance 300), tie with A1: lower index wins
 *   A3: q0 + q1 = 8;  A4: q0 + q1 = 8
 * Left (300..649; q1 must go left, q2 both): A3 splits 200/150 with cost
 *   3 (q1), A4 150/200 cost 3, same imbalance: A3. Its children (200 and
 *   150 rows) have no cut leaving both sides >= 100: leaves.
 * Right (0..299 and 650..999; q0, q2, q3): A0 300/350 cost 4 (q2), A2
 *   350/300 cost 4, same imbalance: A0; A3, A4 cost 5. Its children are
 *   leaves.
 * Leaves in build order: {300..499}, {500..649}, {0..299}, {650..999}.
 */
Test(index_qdtree, toy_greedy_choice)
{
	uint64_t va = 1, vb = 2, vc = 3;
	qdtree_atom_t at[5] = {tag(0, true, &va, 1), tag(0, true, &vb, 1), tag(0, true, &vc, 1),
			       num(1, 0, 499), num(1, 500, 999)};
	roaring_bitmap_t *bm[5] = {range_bm(0, 300), range_bm(300, 650), range_bm(650, 1000),
				   range_bm(0, 500), range_bm(500, 1000)};
	uint32_t a0[] = {0}, a1[] = {1}, a3[] = {3}, a24[] = {2, 4};
	qdtree_query_t qs[] = {{a0, 1, 5}, {a1, 1, 3}, {a3, 1, 4}, {a24, 2, 1}};
	roaring_bitmap_t *docs = range_bm(0, 1000);
	qdtree_opts_t o = {.leaf_min = 100, .depth_max = QDTREE_DEPTH_DEFAULT};
	qdtree_t *t = NULL;
	cr_assert_eq(qdtree_build(docs, at, (const roaring_bitmap_t *const *)bm, 5, qs, 4, &o, &t),
		     0);
	const qdtree_node_t *root = qdtree_node(t, 0);
	cr_assert_eq(root->cut, 1, "root cut A1, got A%d", root->cut);
	const qdtree_node_t *l = qdtree_node(t, root->left), *r = qdtree_node(t, root->right);
	cr_assert_eq(l->cut, 3, "left cut A3, got A%d", l->cut);
	cr_assert_eq(r->cut, 0, "right cut A0, got A%d", r->cut);
	cr_assert_eq(qdtree_leaf_count(t), 4);
	static const uint32_t lo[] = {300, 500, 0, 650}, hi[] = {500, 650, 300, 1000};
	for (uint32_t i = 0; i < 4; i++) {
		roaring_bitmap_t *want = range_bm(lo[i], hi[i]);
		cr_assert(roaring_bitmap_equals(qdtree_leaf_docids(t, i), want), "leaf %u", i);
		roaring_bitmap_free(want);
	}
	const qdtree_step_t *st;
	cr_assert_eq(qdtree_leaf_desc(t, 1, &st), 2);
	cr_assert(st[0].cut == 1 && st[0].in && st[1].cut == 3 && !st[1].in);
	/* Routing: cat=a reaches leaf 2 only; num<=499 skips leaf 1 (it
	 * implies A3, whose right side leaf 1 is). */
	uint8_t visit[4];
	cr_assert_eq(qdtree_route(t, &at[0], 1, visit), 1);
	cr_assert(visit[2]);
	cr_assert_eq(qdtree_route(t, &at[3], 1, visit), 3);
	cr_assert(visit[0] && !visit[1] && visit[2] && visit[3]);
	qdtree_free(t);
	roaring_bitmap_free(docs);
	for (int i = 0; i < 5; i++)
		roaring_bitmap_free(bm[i]);
}

/* No query spared by any cut: one leaf. Bad arguments: VELA_EINVAL. */
Test(index_qdtree, no_cut_and_errors)
{
	uint64_t va = 1;
	qdtree_atom_t at[2] = {tag(0, true, &va, 1), num(1, 0, 10)};
	roaring_bitmap_t *bm[2] = {range_bm(0, 500), NULL};
	uint32_t a1[] = {1};
	qdtree_query_t qs[] = {{a1, 1, 1}};
	roaring_bitmap_t *docs = range_bm(0, 1000);
	qdtree_opts_t o = {.leaf_min = 10, .depth_max = 8};
	qdtree_t *t = NULL;
	cr_assert_eq(qdtree_build(docs, at, (const roaring_bitmap_t *const *)bm, 2, qs, 1, &o, &t),
		     0);
	cr_assert_eq(qdtree_leaf_count(t), 1);
	cr_assert_eq(roaring_bitmap_get_cardinality(qdtree_leaf_docids(t, 0)), 1000);
	qdtree_free(t);
	uint32_t bad[] = {7};
	qdtree_query_t qb[] = {{bad, 1, 1}};
	cr_assert_eq(qdtree_build(docs, at, (const roaring_bitmap_t *const *)bm, 2, qb, 1, &o, &t),
		     VELA_EINVAL);
	qs[0].weight = 0;
	cr_assert_eq(qdtree_build(docs, at, (const roaring_bitmap_t *const *)bm, 2, qs, 1, &o, &t),
		     VELA_EINVAL);
	o.leaf_min = 0;
	qs[0].weight = 1;
	cr_assert_eq(qdtree_build(docs, at, (const roaring_bitmap_t *const *)bm, 2, qs, 1, &o, &t),
		     VELA_EINVAL);
	roaring_bitmap_free(docs);
	roaring_bitmap_free(bm[0]);
}

/* Random documents with a single-valued tag (8 values), a multi-valued tag
 * (12 values, 1-3 each) and a numeric value; random workloads of 1-3 atoms. */
#define RQ_N 6000u
#define RQ_ATOMS 40u
#define RQ_QUERIES 60u

Test(index_qdtree, random_invariants)
{
	for (uint64_t seed = 1; seed <= 6; seed++) {
		rng_state = seed * 0x9e3779b97f4a7c15ull;
		uint32_t *cat = malloc(RQ_N * sizeof(uint32_t)), *numv = malloc(RQ_N * sizeof(uint32_t));
		uint16_t *tags = malloc(RQ_N * sizeof(uint16_t)); /* bit set of 12 */
		for (uint32_t i = 0; i < RQ_N; i++) {
			cat[i] = (uint32_t)(rng_next() % 8);
			numv[i] = (uint32_t)(rng_next() % 1000);
			uint32_t nt = 1 + (uint32_t)(rng_next() % 3);
			tags[i] = 0;
			for (uint32_t k = 0; k < nt; k++)
				tags[i] |= (uint16_t)(1u << (rng_next() % 12));
		}
		qdtree_atom_t at[RQ_ATOMS];
		roaring_bitmap_t *bm[RQ_ATOMS];
		for (uint32_t a = 0; a < RQ_ATOMS; a++) {
			uint32_t kind = (uint32_t)(rng_next() % 3);
			uint64_t v[3];
			uint32_t nv = 1 + (uint32_t)(rng_next() % 3), m = 0;
			uint32_t dom = kind == 0 ? 8 : 12;
			for (uint32_t k = 0; k < nv; k++) {
				uint64_t x = rng_next() % dom;
				uint32_t p = 0;
				while (p < m && v[p] < x)
					p++;
				if (p < m && v[p] == x)
					continue;
				memmove(v + p + 1, v + p, (m - p) * sizeof(*v));
				v[p] = x;
				m++;
			}
			if (kind == 2) {
				uint64_t lo = rng_next() % 1000, w = rng_next() % 600;
				at[a] = num(2, lo, lo + w);
			} else {
				at[a] = tag(kind, kind == 0, v, m);
			}
			bm[a] = rng_next() % 5 == 0 ? NULL : roaring_bitmap_create();
			for (uint32_t i = 0; bm[a] && i < RQ_N; i++) {
				bool hit = false;
				for (uint32_t k = 0; k < at[a].n_vals && !hit; k++)
					hit = kind == 0 ? cat[i] == at[a].vals[k]
					      : kind == 1 ? (tags[i] >> at[a].vals[k]) & 1 : false;
				if (kind == 2)
					hit = numv[i] >= at[a].lo && numv[i] <= at[a].hi;
				if (hit)
					roaring_bitmap_add(bm[a], i);
			}
		}
		uint32_t qa[RQ_QUERIES][3];
		qdtree_query_t qs[RQ_QUERIES];
		for (uint32_t q = 0; q < RQ_QUERIES; q++) {
			uint32_t n = 1 + (uint32_t)(rng_next() % 3);
			for (uint32_t k = 0; k < n; k++)
				qa[q][k] = (uint32_t)(rng_next() % RQ_ATOMS);
			qs[q] = (qdtree_query_t){qa[q], n, 1.0 + (double)(rng_next() % 10)};
		}
		roaring_bitmap_t *docs = range_bm(0, RQ_N);
		qdtree_opts_t o = {.leaf_min = 150, .depth_max = 12};
		qdtree_t *t = NULL;
		cr_assert_eq(qdtree_build(docs, at, (const roaring_bitmap_t *const *)bm, RQ_ATOMS, qs,
					  RQ_QUERIES, &o, &t),
			     0);
		uint32_t nl = qdtree_leaf_count(t);
		cr_assert(nl >= 2, "seed %llu: some cut helps (%u leaves)", (unsigned long long)seed,
			  nl);
		roaring_bitmap_t *u = roaring_bitmap_create();
		uint64_t total = 0;
		for (uint32_t l = 0; l < nl; l++) {
			const roaring_bitmap_t *d = qdtree_leaf_docids(t, l);
			uint64_t c = roaring_bitmap_get_cardinality(d);
			cr_assert(c >= o.leaf_min, "leaf %u has %llu rows", l, (unsigned long long)c);
			total += c;
			roaring_bitmap_or_inplace(u, d);
			const qdtree_step_t *st;
			uint32_t ns = qdtree_leaf_desc(t, l, &st);
			cr_assert(ns <= o.depth_max);
			for (uint32_t s = 0; s < ns; s++) {
				const roaring_bitmap_t *cb = bm[st[s].cut];
				cr_assert(cb != NULL, "a cut has a bitmap");
				uint64_t in = roaring_bitmap_and_cardinality(d, cb);
				cr_assert_eq(in, st[s].in ? c : 0, "leaf %u step %u", l, s);
			}
		}
		cr_assert_eq(total, RQ_N, "each document in one leaf");
		cr_assert(roaring_bitmap_equals(u, docs));
		/* Routing is sound: matches of a query's atoms lie in its leaves. */
		uint8_t *visit = malloc(nl);
		for (uint32_t q = 0; q < RQ_QUERIES; q++) {
			qdtree_atom_t qa2[3];
			roaring_bitmap_t *m = range_bm(0, RQ_N);
			bool known = true;
			for (uint32_t k = 0; k < qs[q].n_atoms; k++) {
				qa2[k] = at[qs[q].atoms[k]];
				if (bm[qs[q].atoms[k]])
					roaring_bitmap_and_inplace(m, bm[qs[q].atoms[k]]);
				else
					known = false;
			}
			qdtree_route(t, qa2, qs[q].n_atoms, visit);
			for (uint32_t l = 0; known && l < nl; l++)
				if (!visit[l])
					cr_assert(!roaring_bitmap_intersect(m, qdtree_leaf_docids(t, l)),
						  "query %u misses leaf %u", q, l);
			roaring_bitmap_free(m);
		}
		free(visit);
		qdtree_free(t);
		roaring_bitmap_free(u);
		roaring_bitmap_free(docs);
		for (uint32_t a = 0; a < RQ_ATOMS; a++)
			if (bm[a])
				roaring_bitmap_free(bm[a]);
		free(cat);
		free(numv);
		free(tags);
	}
}
