// libFuzzer target for the partition layout file's structure parsers
// (index/qdtree.c qdtree_unpack, index/partitions.c part_unpack; db/layout.c
// checks the file's magic, sequence and XXH3 before either runs, so the
// parsers are fuzzed here directly, past the checksum). A parse must either
// fail cleanly or give a structure that packs back to the same bytes (a
// layout in the older format 1: to bytes that unpack and pack again to
// themselves) and, for a layout, answers with every cluster probed exactly
// as flat_search (FIELD rows; LVQ-8 rows: the same number of hits, from its
// rows, ascending).
// Build and run: scripts/fuzz-smoke (see there for the flags).
//
// Input: one control byte, then the packed bytes.
//   bit 0: a qd-tree (qdtree_pack's format); else a layout (part_pack's)
//          over a fixed FLAT index of 4-dim vectors (docids 0..95, every
//          third absent).
// Seeds (tests/fuzz/corpus/layout): build this file with
// -DFUZZ_LAYOUT_SEEDS (no -fsanitize=fuzzer) and run it with the corpus
// directory as argument.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "index/index.h"

#define DIM 4u
#define NDOC 96u

static flat_index_t *flat;

static void flat_init(void)
{
	if (flat)
		return;
	if (flat_create(DIM, VELA_METRIC_L2, VELA_VEC_FLOAT32, &flat))
		abort();
	uint32_t s = 777;
	for (uint32_t i = 0; i < NDOC; i++) {
		float v[DIM];
		for (uint32_t d = 0; d < DIM; d++) {
			s = s * 1103515245u + 12345u;
			v[d] = (float)((s >> 8) % 2001) / 1000.0f - 1.0f;
		}
		if (i % 3 != 2 && flat_set(flat, i, v))
			abort();
	}
}

static void tree_case(const uint8_t *p, size_t n)
{
	qdtree_t *t;
	if (qdtree_unpack(p, n, &t))
		return;
	uint8_t *b;
	size_t bl;
	if (qdtree_pack(t, &b, &bl) || bl != n || memcmp(b, p, n))
		abort(); /* what parses packs back to the same bytes */
	uint32_t nl = qdtree_leaf_count(t);
	uint8_t *visit = malloc(nl);
	const qdtree_atom_t *a = qdtree_atom(t, 0);
	if (visit == NULL || qdtree_route(t, a, a ? 1 : 0, visit) > nl)
		abort();
	for (uint32_t i = 0; i < nl; i++) {
		const qdtree_step_t *st;
		uint32_t ns = qdtree_leaf_desc(t, i, &st);
		for (uint32_t j = 0; j < ns; j++)
			if (qdtree_atom(t, st[j].cut) == NULL)
				abort();
	}
	free(visit);
	free(b);
	qdtree_free(t);
}

/* Are the hits a[0..n) of rows in `in`, ascending? */
static int hits_sane(const vela_hit_t *a, uint32_t n, const roaring_bitmap_t *in)
{
	for (uint32_t i = 0; i < n; i++)
		if (!roaring_bitmap_contains(in, a[i].docid) || (i && a[i].dist < a[i - 1].dist))
			return 0;
	return 1;
}

/* Every cluster probed: flat_search's answer (FIELD), or as many sane hits
 * (LVQ-8 rows score their decoded vectors). */
static void part_check(const part_layout_t *l, const float *q, const roaring_bitmap_t *mine)
{
	vela_hit_t a[8], e[8];
	uint32_t ne = 0;
	part_stats_t st;
	part_stats(l, &st);
	part_query_t pq = {.q = q, .k = 8, .filter = mine, .out = a};
	part_search_opts_t so = {.probe_factor = 0, .probe_min = 1};
	if (part_search(l, &pq, 1, &so) || flat_search(flat, q, 8, mine, e, &ne) ||
	    pq.n_out != ne || !hits_sane(a, pq.n_out, mine))
		abort();
	for (uint32_t i = 0; st.encoding == PART_ENC_FIELD && i < ne; i++)
		if (a[i].docid != e[i].docid)
			abort();
}

static void part_case(const uint8_t *p, size_t n)
{
	part_layout_t *l;
	part_source_t src = {.f = flat};
	if (part_unpack(&src, p, n, &l))
		return;
	uint8_t *b;
	size_t bl;
	uint32_t ver;
	memcpy(&ver, p, 4);
	if (part_pack(l, &b, &bl) || (ver == PART_PACK_VERSION && (bl != n || memcmp(b, p, n))))
		abort();
	if (ver != PART_PACK_VERSION) { /* an older format: its repacking is stable */
		part_layout_t *l1;
		uint8_t *b1;
		size_t bl1;
		if (part_unpack(&src, b, bl, &l1) || part_pack(l1, &b1, &bl1) || bl1 != bl ||
		    memcmp(b, b1, bl))
			abort();
		free(b1);
		part_free(l1);
	}
	free(b);
	/* every cluster probed: the exact answer over the layout's rows */
	part_stats_t st;
	part_stats(l, &st);
	roaring_bitmap_t *mine = roaring_bitmap_create();
	for (uint32_t d = 0; d < NDOC; d++)
		if (part_contains(l, d))
			roaring_bitmap_add(mine, d);
	if (roaring_bitmap_get_cardinality(mine) != st.rows)
		abort();
	float q[DIM] = {0.25f, -0.5f, 0.125f, 0.75f};
	part_check(l, q, mine);
	for (uint32_t d = 0; d < NDOC; d += 5) /* writes: rows leave their clusters */
		if (part_remove(l, d) == 0 && part_contains(l, d))
			abort();
	/* and come back (a fold): the nearest centroid of a leaf with clusters */
	uint32_t ids[NDOC], leaf[NDOC], cl[NDOC], m = 0, nl = st.leaves;
	for (uint32_t d = 0; d < NDOC && nl; d++) {
		uint32_t lf = d % nl;
		if (d % 3 != 2 && !part_contains(l, d) && part_leaf_clusters(l, lf)) {
			ids[m] = d;
			leaf[m++] = lf;
		}
	}
	if (part_assign(l, &src, ids, leaf, m, cl))
		abort();
	for (uint32_t i = 0; i < m; i++)
		if (part_insert(l, &src, cl[i], ids[i]) || !part_contains(l, ids[i]))
			abort();
	roaring_bitmap_clear(mine);
	for (uint32_t d = 0; d < NDOC; d++)
		if (part_contains(l, d))
			roaring_bitmap_add(mine, d);
	part_check(l, q, mine);
	/* what it packs unpacks to the same bytes */
	part_layout_t *l2;
	uint8_t *b2;
	size_t bl2;
	if (part_pack(l, &b, &bl) || part_unpack(&src, b, bl, &l2) || part_pack(l2, &b2, &bl2) ||
	    bl2 != bl || memcmp(b, b2, bl))
		abort();
	free(b);
	free(b2);
	part_free(l2);
	roaring_bitmap_free(mine);
	part_free(l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	flat_init();
	if (size < 1)
		return 0;
	if (data[0] & 1)
		tree_case(data + 1, size - 1);
	else
		part_case(data + 1, size - 1);
	return 0;
}

#ifdef FUZZ_LAYOUT_SEEDS
/* Real packed trees and layouts over the fixed index. */
static void seed_write(const char *dir, const char *name, uint8_t ctl, const uint8_t *b,
		       size_t n)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (f == NULL || fwrite(&ctl, 1, 1, f) != 1 || fwrite(b, 1, n, f) != n)
		abort();
	fclose(f);
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	flat_init();
	const roaring_bitmap_t *docs = flat_docids(flat);
	qdtree_atom_t at[2] = {{.kind = QDTREE_ATOM_NUM, .field = 1, .lo = 0, .hi = 40},
			       {.kind = QDTREE_ATOM_TAG, .field = 0, .n_vals = 2, .vals = {3, 9}}};
	roaring_bitmap_t *b0 = roaring_bitmap_from_range(0, 41, 1);
	roaring_bitmap_t *b1 = roaring_bitmap_from_range(0, NDOC, 2);
	const roaring_bitmap_t *bms[2] = {b0, b1};
	uint32_t q0[] = {0}, q1[] = {1};
	qdtree_query_t qs[2] = {{q0, 1, 3.0}, {q1, 1, 1.0}};
	qdtree_opts_t to = {.leaf_min = 8, .depth_max = 4};
	qdtree_t *t;
	if (qdtree_build(docs, at, bms, 2, qs, 2, &to, &t))
		abort();
	uint8_t *b;
	size_t n;
	if (qdtree_pack(t, &b, &n))
		abort();
	seed_write(argv[1], "tree", 1, b, n);
	free(b);
	const roaring_bitmap_t **leaves = malloc(qdtree_leaf_count(t) * sizeof(*leaves));
	for (uint32_t i = 0; i < qdtree_leaf_count(t); i++)
		leaves[i] = qdtree_leaf_docids(t, i);
	part_opts_t po;
	part_opts_default(&po);
	po.cluster_rows = 8;
	part_layout_t *l;
	part_source_t src = {.f = flat};
	if (part_build(&src, leaves, qdtree_leaf_count(t), &po, &l) || part_pack(l, &b, &n))
		abort();
	seed_write(argv[1], "layout-v2", 0, b, n);
	free(b);
	part_remove(l, 0);
	part_remove(l, 1);
	if (part_pack(l, &b, &n))
		abort();
	seed_write(argv[1], "layout-v2-removed", 0, b, n);
	free(b);
	part_free(l);
	po.encoding = PART_ENC_LVQ8;
	if (part_build(&src, leaves, qdtree_leaf_count(t), &po, &l) || part_pack(l, &b, &n))
		abort();
	seed_write(argv[1], "layout-lvq8", 0, b, n);
	free(b);
	part_free(l);
	free(leaves);
	qdtree_free(t);
	roaring_bitmap_free(b0);
	roaring_bitmap_free(b1);
	flat_destroy(flat);
	return 0;
}
#endif
