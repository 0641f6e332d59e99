/* The qd-tree of the partition layout (index.h QDTREE): cuts are workload
 * predicate atoms, chosen greedily to minimise the weight of the workload
 * queries that must visit both children (HQI's use of the qd-tree of Yang
 * et al. 2020, reference/hybrid-queries.md §1.3), with a minimum leaf size;
 * leaves keep their description (the cuts and sides on their path). */
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "index/index.h"

/* How a query relates to a cut. */
enum { REL_BOTH = 0, REL_LEFT = 1, REL_RIGHT = 2, REL_NONE = 3 };

typedef struct qdt_leaf {
	roaring_bitmap_t *docids;
	qdtree_step_t *steps;
	uint32_t n_steps;
} qdt_leaf_t;

struct qdtree {
	qdtree_atom_t *atoms;
	uint32_t n_atoms;
	qdtree_node_t *nodes;
	uint32_t n_nodes, cap_nodes;
	qdt_leaf_t *leaves;
	uint32_t n_leaves, cap_leaves;
};

void qdtree_opts_default(qdtree_opts_t *o)
{
	o->leaf_min = QDTREE_LEAF_MIN_DEFAULT;
	o->depth_max = QDTREE_DEPTH_DEFAULT;
}

/* ------------------------------------------------------------ atoms */

/* Is every value of a (sorted) among c's (sorted)? */
static bool vals_subset(const qdtree_atom_t *a, const qdtree_atom_t *c)
{
	uint32_t j = 0;
	for (uint32_t i = 0; i < a->n_vals; i++) {
		while (j < c->n_vals && c->vals[j] < a->vals[i])
			j++;
		if (j == c->n_vals || c->vals[j] != a->vals[i])
			return false;
	}
	return true;
}

static bool vals_disjoint(const qdtree_atom_t *a, const qdtree_atom_t *c)
{
	uint32_t i = 0, j = 0;
	while (i < a->n_vals && j < c->n_vals) {
		if (a->vals[i] == c->vals[j])
			return false;
		if (a->vals[i] < c->vals[j])
			i++;
		else
			j++;
	}
	return true;
}

bool qdtree_atom_implies(const qdtree_atom_t *a, const qdtree_atom_t *c)
{
	if (a->kind != c->kind || a->field != c->field)
		return false;
	if (a->kind == QDTREE_ATOM_NUM)
		return c->lo <= a->lo && a->hi <= c->hi;
	/* any of a's values is one of c's: holds for multi-valued fields too */
	return a->kind == QDTREE_ATOM_TAG && vals_subset(a, c);
}

bool qdtree_atom_disjoint(const qdtree_atom_t *a, const qdtree_atom_t *c)
{
	if (a->kind != c->kind || a->field != c->field)
		return false;
	if (a->kind == QDTREE_ATOM_NUM) /* one value per document */
		return a->hi < c->lo || c->hi < a->lo;
	/* a document with two values could match both unless single-valued */
	return a->kind == QDTREE_ATOM_TAG && a->single && c->single && vals_disjoint(a, c);
}

/* The relation of a conjunction of atoms to cut c. */
static int rel_of(const qdtree_atom_t *atoms, const uint32_t *q, uint32_t n,
		  const qdtree_atom_t *c)
{
	bool imp = false, dis = false;
	for (uint32_t i = 0; i < n; i++) {
		imp = imp || qdtree_atom_implies(&atoms[q[i]], c);
		dis = dis || qdtree_atom_disjoint(&atoms[q[i]], c);
	}
	return imp && dis ? REL_NONE : imp ? REL_LEFT : dis ? REL_RIGHT : REL_BOTH;
}

/* ------------------------------------------------------------ build */

typedef struct build {
	qdtree_t *t;
	const roaring_bitmap_t *const *bms;
	const qdtree_query_t *qs;
	uint32_t nq;
	uint8_t *rel; /* nq x n_atoms */
	const qdtree_opts_t *o;
	qdtree_step_t path[QDTREE_DEPTH_MAX];
} build_t;

static int node_new(qdtree_t *t, uint32_t *id)
{
	if (t->n_nodes == t->cap_nodes) {
		uint32_t cap = t->cap_nodes ? 2 * t->cap_nodes : 16;
		qdtree_node_t *v = realloc(t->nodes, vela_mul_size(cap, sizeof(*v)));
		if (v == NULL)
			return VELA_ENOMEM;
		t->nodes = v;
		t->cap_nodes = cap;
	}
	*id = t->n_nodes++;
	t->nodes[*id] = (qdtree_node_t){.cut = -1, .leaf = -1};
	return 0;
}

/* Make node `id` a leaf owning D. */
static int leaf_make(build_t *b, uint32_t id, roaring_bitmap_t *D, uint32_t depth)
{
	qdtree_t *t = b->t;
	if (t->n_leaves == t->cap_leaves) {
		uint32_t cap = t->cap_leaves ? 2 * t->cap_leaves : 8;
		qdt_leaf_t *v = realloc(t->leaves, vela_mul_size(cap, sizeof(*v)));
		if (v == NULL)
			return VELA_ENOMEM;
		t->leaves = v;
		t->cap_leaves = cap;
	}
	qdtree_step_t *s = malloc(vela_mul_size(depth ? depth : 1, sizeof(*s)));
	if (s == NULL)
		return VELA_ENOMEM;
	memcpy(s, b->path, depth * sizeof(*s));
	t->leaves[t->n_leaves] = (qdt_leaf_t){.docids = D, .steps = s, .n_steps = depth};
	t->nodes[id].leaf = (int32_t)t->n_leaves++;
	return 0;
}

/* The greedy choice at a node holding D and the queries act[0..na):
 * the cut index, or -1 for none. */
static int32_t cut_choose(const build_t *b, const roaring_bitmap_t *D, const uint32_t *act,
			  uint32_t na)
{
	uint64_t n = roaring_bitmap_get_cardinality(D), min = b->o->leaf_min;
	double total = 0, best_cost = 0;
	for (uint32_t i = 0; i < na; i++)
		total += b->qs[act[i]].weight;
	uint64_t best_imb = 0;
	int32_t best = -1;
	if (n < 2 * min || na == 0)
		return -1;
	for (uint32_t c = 0; c < b->t->n_atoms; c++) {
		if (b->bms[c] == NULL)
			continue;
		uint64_t nl = roaring_bitmap_and_cardinality(D, b->bms[c]);
		if (nl < min || n - nl < min)
			continue;
		double cost = 0;
		for (uint32_t i = 0; i < na; i++)
			if (b->rel[(size_t)act[i] * b->t->n_atoms + c] == REL_BOTH)
				cost += b->qs[act[i]].weight;
		if (!(cost < total)) /* spares no query a child */
			continue;
		uint64_t imb = 2 * nl > n ? 2 * nl - n : n - 2 * nl;
		if (best < 0 || cost < best_cost || (cost == best_cost && imb < best_imb)) {
			best = (int32_t)c;
			best_cost = cost;
			best_imb = imb;
		}
	}
	return best;
}

/* Build the subtree of node `id` over D (owned: kept by a leaf or freed)
 * with the active queries act[0..na) (scratch for the children after). */
static int build_node(build_t *b, uint32_t id, roaring_bitmap_t *D, uint32_t *act, uint32_t na,
		      uint32_t depth)
{
	int32_t c = depth < b->o->depth_max ? cut_choose(b, D, act, na) : -1;
	if (c < 0) {
		int rc = leaf_make(b, id, D, depth);
		if (rc)
			roaring_bitmap_free(D);
		return rc;
	}
	roaring_bitmap_t *L = roaring_bitmap_and(D, b->bms[c]);
	roaring_bitmap_t *R = roaring_bitmap_andnot(D, b->bms[c]);
	roaring_bitmap_free(D);
	uint32_t *sub = malloc(vela_mul_size(na ? na : 1, sizeof(uint32_t)));
	uint32_t l, r;
	int rc = L && R && sub ? 0 : VELA_ENOMEM;
	if (rc == 0)
		rc = node_new(b->t, &l);
	if (rc == 0)
		rc = node_new(b->t, &r);
	if (rc) {
		if (L)
			roaring_bitmap_free(L);
		if (R)
			roaring_bitmap_free(R);
		free(sub);
		return rc;
	}
	b->t->nodes[id] = (qdtree_node_t){.cut = c, .left = l, .right = r, .leaf = -1};
	uint32_t ns = 0;
	for (uint32_t i = 0; i < na; i++) {
		int rel = b->rel[(size_t)act[i] * b->t->n_atoms + (uint32_t)c];
		if (rel == REL_BOTH || rel == REL_LEFT)
			sub[ns++] = act[i];
	}
	b->path[depth] = (qdtree_step_t){(uint32_t)c, true};
	rc = build_node(b, l, L, sub, ns, depth + 1);
	ns = 0;
	for (uint32_t i = 0; i < na; i++) {
		int rel = b->rel[(size_t)act[i] * b->t->n_atoms + (uint32_t)c];
		if (rel == REL_BOTH || rel == REL_RIGHT)
			sub[ns++] = act[i];
	}
	b->path[depth] = (qdtree_step_t){(uint32_t)c, false};
	if (rc == 0)
		rc = build_node(b, r, R, sub, ns, depth + 1);
	else
		roaring_bitmap_free(R);
	free(sub);
	return rc;
}

static int build_check(const roaring_bitmap_t *docs, const qdtree_atom_t *atoms,
		       const roaring_bitmap_t *const *bms, uint32_t n_atoms,
		       const qdtree_query_t *qs, uint32_t nq, const qdtree_opts_t *o)
{
	if (docs == NULL || (n_atoms && (atoms == NULL || bms == NULL)) || (nq && qs == NULL) ||
	    n_atoms > QDTREE_ATOMS_MAX || o->leaf_min < QDTREE_LEAF_MIN_MIN ||
	    o->leaf_min > QDTREE_LEAF_MIN_MAX || o->depth_max > QDTREE_DEPTH_MAX)
		return VELA_EINVAL;
	for (uint32_t i = 0; i < n_atoms; i++)
		if ((atoms[i].kind != QDTREE_ATOM_TAG && atoms[i].kind != QDTREE_ATOM_NUM) ||
		    atoms[i].n_vals > QDTREE_TAG_VALS_MAX)
			return VELA_EINVAL;
	for (uint32_t i = 0; i < nq; i++) {
		if (!(qs[i].weight > 0) || (qs[i].n_atoms && qs[i].atoms == NULL))
			return VELA_EINVAL;
		for (uint32_t j = 0; j < qs[i].n_atoms; j++)
			if (qs[i].atoms[j] >= n_atoms)
				return VELA_EINVAL;
	}
	return 0;
}

int qdtree_build(const roaring_bitmap_t *docs, const qdtree_atom_t *atoms,
		 const roaring_bitmap_t *const *bms, uint32_t n_atoms, const qdtree_query_t *qs,
		 uint32_t nq, const qdtree_opts_t *opts, qdtree_t **out)
{
	qdtree_opts_t o;
	if (opts)
		o = *opts;
	else
		qdtree_opts_default(&o);
	if (out == NULL)
		return VELA_EINVAL;
	*out = NULL;
	int rc = build_check(docs, atoms, bms, n_atoms, qs, nq, &o);
	if (rc)
		return rc;
	qdtree_t *t = calloc(1, sizeof(*t));
	build_t b = {.t = t, .bms = bms, .qs = qs, .nq = nq, .o = &o};
	uint32_t *act = malloc(vela_mul_size(nq ? nq : 1, sizeof(uint32_t)));
	b.rel = malloc(vela_mul_size((size_t)nq * n_atoms + 1, 1));
	if (t)
		t->atoms = malloc(vela_mul_size(n_atoms ? n_atoms : 1, sizeof(*atoms)));
	roaring_bitmap_t *D = roaring_bitmap_copy(docs);
	uint32_t root;
	rc = t && act && b.rel && t->atoms && D ? node_new(t, &root) : VELA_ENOMEM;
	if (rc == 0) {
		memcpy(t->atoms, atoms, n_atoms * sizeof(*atoms));
		t->n_atoms = n_atoms;
		for (uint32_t i = 0; i < nq; i++) {
			act[i] = i;
			for (uint32_t c = 0; c < n_atoms; c++)
				b.rel[(size_t)i * n_atoms + c] =
					bms[c] ? (uint8_t)rel_of(atoms, qs[i].atoms, qs[i].n_atoms,
								 &atoms[c])
					       : REL_BOTH;
		}
		rc = build_node(&b, root, D, act, nq, 0);
		D = NULL;
	}
	if (D)
		roaring_bitmap_free(D);
	free(act);
	free(b.rel);
	if (rc) {
		qdtree_free(t);
		return rc;
	}
	*out = t;
	return 0;
}

void qdtree_free(qdtree_t *t)
{
	if (t == NULL)
		return;
	for (uint32_t i = 0; i < t->n_leaves; i++) {
		if (t->leaves[i].docids) /* NULL in a half-unpacked tree */
			roaring_bitmap_free(t->leaves[i].docids);
		free(t->leaves[i].steps);
	}
	free(t->leaves);
	free(t->nodes);
	free(t->atoms);
	free(t);
}

/* ------------------------------------------------------------ access */

uint32_t qdtree_node_count(const qdtree_t *t)
{
	return t->n_nodes;
}

const qdtree_node_t *qdtree_node(const qdtree_t *t, uint32_t i)
{
	return i < t->n_nodes ? &t->nodes[i] : NULL;
}

uint32_t qdtree_leaf_count(const qdtree_t *t)
{
	return t->n_leaves;
}

const roaring_bitmap_t *qdtree_leaf_docids(const qdtree_t *t, uint32_t leaf)
{
	return leaf < t->n_leaves ? t->leaves[leaf].docids : NULL;
}

uint32_t qdtree_leaf_desc(const qdtree_t *t, uint32_t leaf, const qdtree_step_t **steps)
{
	if (leaf >= t->n_leaves) {
		*steps = NULL;
		return 0;
	}
	*steps = t->leaves[leaf].steps;
	return t->leaves[leaf].n_steps;
}

const qdtree_atom_t *qdtree_atom(const qdtree_t *t, uint32_t i)
{
	return i < t->n_atoms ? &t->atoms[i] : NULL;
}

uint32_t qdtree_atom_count(const qdtree_t *t)
{
	return t->n_atoms;
}

static uint32_t route_node(const qdtree_t *t, uint32_t id, const qdtree_atom_t *q, uint32_t n,
			   uint8_t *visit)
{
	const qdtree_node_t *nd = &t->nodes[id];
	if (nd->leaf >= 0) {
		visit[nd->leaf] = 1;
		return 1;
	}
	const qdtree_atom_t *c = &t->atoms[nd->cut];
	bool imp = false, dis = false;
	for (uint32_t i = 0; i < n; i++) {
		imp = imp || qdtree_atom_implies(&q[i], c);
		dis = dis || qdtree_atom_disjoint(&q[i], c);
	}
	uint32_t got = 0;
	if (!dis)
		got += route_node(t, nd->left, q, n, visit);
	if (!imp)
		got += route_node(t, nd->right, q, n, visit);
	return got;
}

uint32_t qdtree_route(const qdtree_t *t, const qdtree_atom_t *q, uint32_t n, uint8_t *visit)
{
	memset(visit, 0, t->n_leaves);
	return t->n_nodes ? route_node(t, 0, q, n, visit) : 0;
}

/* ------------------------------------------------------------ pack / unpack */

int qdtree_pack(const qdtree_t *t, uint8_t **out, size_t *len)
{
	if (t == NULL || out == NULL || len == NULL)
		return VELA_EINVAL;
	vela_wbuf_t w = {0};
	vela_wbuf_u32(&w, QDTREE_PACK_VERSION);
	vela_wbuf_u32(&w, t->n_atoms);
	vela_wbuf_u32(&w, t->n_nodes);
	vela_wbuf_u32(&w, t->n_leaves);
	for (uint32_t i = 0; i < t->n_atoms; i++) {
		const qdtree_atom_t *a = &t->atoms[i];
		uint8_t ks[2] = {a->kind, a->single};
		vela_wbuf_put(&w, ks, 2);
		vela_wbuf_u32(&w, a->field);
		vela_wbuf_u32(&w, a->n_vals);
		vela_wbuf_put(&w, a->vals, (size_t)a->n_vals * 8);
		vela_wbuf_u64(&w, a->lo);
		vela_wbuf_u64(&w, a->hi);
	}
	for (uint32_t i = 0; i < t->n_nodes; i++) {
		const qdtree_node_t *n = &t->nodes[i];
		vela_wbuf_u32(&w, (uint32_t)n->cut);
		vela_wbuf_u32(&w, n->left);
		vela_wbuf_u32(&w, n->right);
		vela_wbuf_u32(&w, (uint32_t)n->leaf);
	}
	uint32_t *ids = NULL;
	for (uint32_t i = 0; i < t->n_leaves && !w.oom; i++) {
		const qdt_leaf_t *l = &t->leaves[i];
		vela_wbuf_u32(&w, l->n_steps);
		for (uint32_t j = 0; j < l->n_steps; j++) {
			vela_wbuf_u32(&w, l->steps[j].cut);
			vela_wbuf_put(&w, &(uint8_t){l->steps[j].in}, 1);
		}
		uint64_t m = roaring_bitmap_get_cardinality(l->docids);
		uint32_t *v = realloc(ids, (m ? m : 1) * sizeof(uint32_t));
		if (v == NULL) {
			w.oom = true;
			break;
		}
		ids = v;
		roaring_bitmap_to_uint32_array(l->docids, ids);
		vela_wbuf_u32(&w, (uint32_t)m);
		vela_wbuf_put(&w, ids, m * 4);
	}
	free(ids);
	if (w.oom) {
		free(w.b);
		return VELA_ENOMEM;
	}
	*out = w.b;
	*len = w.len;
	return 0;
}

static int atoms_unpack(vela_rbuf_t *r, qdtree_t *t)
{
	for (uint32_t i = 0; i < t->n_atoms; i++) {
		qdtree_atom_t *a = &t->atoms[i];
		const uint8_t *ks = vela_rbuf_take(r, 2);
		memset(a, 0, sizeof(*a));
		if (ks == NULL || (ks[0] != QDTREE_ATOM_TAG && ks[0] != QDTREE_ATOM_NUM) || ks[1] > 1)
			return VELA_ECORRUPT;
		a->kind = ks[0];
		a->single = ks[1];
		a->field = vela_rbuf_u32(r);
		a->n_vals = vela_rbuf_u32(r);
		if (r->bad || a->n_vals > QDTREE_TAG_VALS_MAX)
			return VELA_ECORRUPT;
		for (uint32_t j = 0; j < a->n_vals; j++) {
			a->vals[j] = vela_rbuf_u64(r);
			if (j && a->vals[j] <= a->vals[j - 1]) /* sorted, distinct */
				return VELA_ECORRUPT;
		}
		a->lo = vela_rbuf_u64(r);
		a->hi = vela_rbuf_u64(r);
	}
	return r->bad ? VELA_ECORRUPT : 0;
}

/* Nodes: children come after their parent and are reached once, each leaf
 * number is used once, depths stay within QDTREE_DEPTH_MAX. depth[] out. */
static int nodes_unpack(vela_rbuf_t *r, qdtree_t *t, uint8_t *depth)
{
	uint8_t *ref = calloc(t->n_nodes, 1), *leaf_seen = calloc(t->n_leaves, 1);
	int rc = ref && leaf_seen ? 0 : VELA_ENOMEM;
	for (uint32_t i = 0; rc == 0 && i < t->n_nodes; i++) {
		qdtree_node_t *n = &t->nodes[i];
		n->cut = (int32_t)vela_rbuf_u32(r);
		n->left = vela_rbuf_u32(r);
		n->right = vela_rbuf_u32(r);
		n->leaf = (int32_t)vela_rbuf_u32(r);
		if (r->bad || (i > 0 && !ref[i])) {
			rc = VELA_ECORRUPT;
		} else if (n->leaf >= 0) {
			if (n->cut != -1 || (uint32_t)n->leaf >= t->n_leaves || leaf_seen[n->leaf])
				rc = VELA_ECORRUPT;
			else
				leaf_seen[n->leaf] = 1;
		} else if (n->leaf != -1 || n->cut < 0 || (uint32_t)n->cut >= t->n_atoms ||
			   n->left <= i || n->right <= i || n->left >= t->n_nodes ||
			   n->right >= t->n_nodes || n->left == n->right || ref[n->left] ||
			   ref[n->right] || depth[i] >= QDTREE_DEPTH_MAX) {
			rc = VELA_ECORRUPT;
		} else {
			ref[n->left] = ref[n->right] = 1;
			depth[n->left] = depth[n->right] = (uint8_t)(depth[i] + 1);
		}
	}
	for (uint32_t i = 0; rc == 0 && i < t->n_leaves; i++)
		if (!leaf_seen[i])
			rc = VELA_ECORRUPT;
	free(ref);
	free(leaf_seen);
	return rc;
}

static int leaves_unpack(vela_rbuf_t *r, qdtree_t *t, roaring_bitmap_t *all)
{
	for (uint32_t i = 0; i < t->n_leaves; i++) {
		qdt_leaf_t *l = &t->leaves[i];
		uint32_t ns = vela_rbuf_u32(r);
		if (r->bad || ns > QDTREE_DEPTH_MAX)
			return VELA_ECORRUPT;
		if ((l->steps = malloc((ns ? ns : 1) * sizeof(*l->steps))) == NULL ||
		    (l->docids = roaring_bitmap_create()) == NULL)
			return VELA_ENOMEM;
		l->n_steps = ns;
		for (uint32_t j = 0; j < ns; j++) {
			l->steps[j].cut = vela_rbuf_u32(r);
			const uint8_t *in = vela_rbuf_take(r, 1);
			if (in == NULL || *in > 1 || l->steps[j].cut >= t->n_atoms)
				return VELA_ECORRUPT;
			l->steps[j].in = *in;
		}
		uint32_t m = vela_rbuf_u32(r);
		const uint8_t *ids = r->bad ? NULL : vela_rbuf_take(r, (size_t)m * 4);
		if (ids == NULL)
			return VELA_ECORRUPT;
		uint32_t prev = 0;
		for (uint32_t j = 0; j < m; j++) {
			uint32_t id;
			memcpy(&id, ids + (size_t)j * 4, 4);
			if ((j && id <= prev) || !roaring_bitmap_add_checked(all, id))
				return VELA_ECORRUPT; /* ascending, in one leaf only */
			roaring_bitmap_add(l->docids, id);
			prev = id;
		}
	}
	return 0;
}

int qdtree_unpack(const uint8_t *buf, size_t len, qdtree_t **out)
{
	if ((len && buf == NULL) || out == NULL)
		return VELA_EINVAL;
	*out = NULL;
	vela_rbuf_t r = {.b = buf, .len = len};
	uint32_t ver = vela_rbuf_u32(&r), na = vela_rbuf_u32(&r), nn = vela_rbuf_u32(&r), nl = vela_rbuf_u32(&r);
	if (r.bad || ver < QDTREE_PACK_VERSION)
		return VELA_ECORRUPT;
	if (ver > QDTREE_PACK_VERSION)
		return VELA_EVERSION;
	/* a binary tree of nl leaves has 2 nl - 1 nodes; sizes bounded by len */
	if (na > QDTREE_ATOMS_MAX || nl == 0 || nn != 2 * (uint64_t)nl - 1 ||
	    (uint64_t)na * 26 > len || (uint64_t)nn * 16 > len)
		return VELA_ECORRUPT;
	qdtree_t *t = calloc(1, sizeof(*t));
	uint8_t *depth = calloc(nn, 1);
	roaring_bitmap_t *all = roaring_bitmap_create();
	int rc = t && depth && all ? 0 : VELA_ENOMEM;
	if (rc == 0) {
		t->atoms = malloc((na ? na : 1) * sizeof(*t->atoms));
		t->nodes = calloc(nn, sizeof(*t->nodes));
		t->leaves = calloc(nl, sizeof(*t->leaves));
		rc = t->atoms && t->nodes && t->leaves ? 0 : VELA_ENOMEM;
	}
	if (rc == 0) {
		t->n_atoms = na;
		t->n_nodes = t->cap_nodes = nn;
		t->n_leaves = t->cap_leaves = nl;
		rc = atoms_unpack(&r, t);
	}
	if (rc == 0)
		rc = nodes_unpack(&r, t, depth);
	if (rc == 0)
		rc = leaves_unpack(&r, t, all);
	for (uint32_t i = 0; rc == 0 && i < nn; i++) /* a description as long as its path */
		if (t->nodes[i].leaf >= 0 && t->leaves[t->nodes[i].leaf].n_steps != depth[i])
			rc = VELA_ECORRUPT;
	if (rc == 0 && r.o != r.len)
		rc = VELA_ECORRUPT;
	free(depth);
	if (all)
		roaring_bitmap_free(all);
	if (rc) {
		qdtree_free(t);
		return rc;
	}
	*out = t;
	return 0;
}
