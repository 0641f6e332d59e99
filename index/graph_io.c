/* GRAPH index: snapshots.
 *
 * Layout (integers big-endian, as common.h's helpers write them):
 *   "VELAGRPH" | u32 version | u64 body_len | body | u64 xxh3
 * The checksum covers everything before it. Body:
 *   u32 metric, dim, R, L, pool, prune_to, alpha (IEEE bits), entry
 *   u64 end, n_live, n_deleted
 *   per node, ids ascending: u32 id | u8 state | u16 deg | deg x u32
 * Loading reads the body in growing chunks (a forged body_len cannot make
 * it allocate more than the file holds), verifies the checksum, then
 * checks every field before building the graph. */
#include <string.h>
#include <stdlib.h>

#include "common/common.h"
#include "index/graph_impl.h"

#define GRAPH_MAGIC "VELAGRPH"
#define GRAPH_HEAD_BYTES 20u
#define GRAPH_BODY_FIXED (8u * 4u + 3u * 8u)

typedef struct {
	uint8_t *p;
	size_t len, cap;
	bool oom;
} graph_wbuf_t;

static void graph_put(graph_wbuf_t *b, const void *src, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 4096;
		while (cap < b->len + n)
			cap *= 2;
		uint8_t *p = realloc(b->p, cap);
		if (p == NULL) {
			b->oom = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, src, n);
	b->len += n;
}

static void graph_put32(graph_wbuf_t *b, uint32_t v)
{
	uint8_t t[4];
	vela_put_be32(t, v);
	graph_put(b, t, 4);
}

static void graph_put64(graph_wbuf_t *b, uint64_t v)
{
	uint8_t t[8];
	vela_put_be64(t, v);
	graph_put(b, t, 8);
}

static void graph_put_body(const graph_t *g, graph_wbuf_t *b)
{
	uint32_t alpha;
	memcpy(&alpha, &g->alpha, 4);
	uint32_t fixed[8] = {g->st.metric, g->st.dim, g->R, g->L, g->pool, g->prune_to, alpha,
			     g->entry};
	for (int i = 0; i < 8; i++)
		graph_put32(b, fixed[i]);
	graph_put64(b, g->end);
	graph_put64(b, g->n_live);
	graph_put64(b, g->n_deleted);
	for (uint64_t id = 0; id < g->end; id++) {
		if (g->state[id] == GRAPH_ABSENT)
			continue;
		uint8_t t[3] = {g->state[id], (uint8_t)(g->deg[id] >> 8), (uint8_t)g->deg[id]};
		graph_put32(b, (uint32_t)id);
		graph_put(b, t, 3);
		for (uint32_t j = 0; j < g->deg[id]; j++)
			graph_put32(b, graph_adj(g, id)[j]);
	}
}

int graph_save(const graph_t *g, FILE *f)
{
	if (g == NULL || f == NULL)
		return VELA_EINVAL;
	graph_wbuf_t b = {0};
	graph_put(&b, GRAPH_MAGIC, 8);
	graph_put32(&b, GRAPH_FORMAT_VERSION);
	graph_put64(&b, 0); /* body_len, patched below */
	graph_put_body(g, &b);
	if (b.oom) {
		free(b.p);
		return VELA_ENOMEM;
	}
	vela_put_be64(b.p + 12, b.len - GRAPH_HEAD_BYTES);
	graph_put64(&b, vela_hash64(b.p, b.len));
	int rc = b.oom ? VELA_ENOMEM : fwrite(b.p, 1, b.len, f) == b.len ? 0 : VELA_EIO;
	free(b.p);
	return rc;
}

/* ------------------------------------------------ load */

/* Read exactly n bytes after the `head` bytes already read, into one
 * buffer (head first) grown as data arrives. */
static int graph_read_all(FILE *f, const uint8_t *head, size_t nhead, size_t n, uint8_t **out)
{
	size_t cap = nhead + (n < (1u << 20) ? n : (1u << 20)), got = 0;
	uint8_t *p = malloc(cap);
	if (p == NULL)
		return VELA_ENOMEM;
	memcpy(p, head, nhead);
	while (got < n) {
		if (nhead + got == cap) {
			size_t ncap = cap * 2 < nhead + n ? cap * 2 : nhead + n;
			uint8_t *q = realloc(p, ncap);
			if (q == NULL) {
				free(p);
				return VELA_ENOMEM;
			}
			p = q;
			cap = ncap;
		}
		size_t want = cap - nhead - got, r = fread(p + nhead + got, 1, want, f);
		got += r;
		if (r < want) {
			free(p);
			return ferror(f) ? VELA_EIO : VELA_ECORRUPT;
		}
	}
	*out = p;
	return 0;
}

typedef struct {
	const uint8_t *p;
	size_t len, off;
	bool bad;
} graph_rbuf_t;

static const uint8_t *graph_take(graph_rbuf_t *r, size_t n)
{
	if (r->bad || r->len - r->off < n) {
		r->bad = true;
		return NULL;
	}
	r->off += n;
	return r->p + r->off - n;
}

static uint32_t graph_get32(graph_rbuf_t *r)
{
	const uint8_t *p = graph_take(r, 4);
	return p ? vela_get_be32(p) : 0;
}

static uint64_t graph_get64(graph_rbuf_t *r)
{
	const uint8_t *p = graph_take(r, 8);
	return p ? vela_get_be64(p) : 0;
}

/* Parameters of the body; the store must match dim and metric. */
static int graph_load_params(graph_rbuf_t *r, const graph_store_t *st, uint32_t threads,
			     graph_t **out)
{
	uint32_t v[8];
	for (int i = 0; i < 8; i++)
		v[i] = graph_get32(r);
	if (r->bad)
		return VELA_ECORRUPT;
	if (v[0] != (uint32_t)st->metric || v[1] != st->dim)
		return VELA_EINVAL;
	graph_params_t p = {v[2], v[3], v[4], v[5], 0, threads ? threads : GRAPH_THREADS_DEFAULT,
			    NULL};
	memcpy(&p.alpha, &v[6], 4);
	if (p.alpha == 0.0f || graph_params_check(st, &p) != 0)
		return st->prepare && st->dist && st->dist_ids ? VELA_ECORRUPT : VELA_EINVAL;
	int rc = graph_alloc(st, &p, out);
	if (rc == 0)
		(*out)->entry = v[7];
	return rc;
}

/* Node records; ids strictly ascending and below end, degrees <= R. */
static int graph_load_nodes(graph_rbuf_t *r, graph_t *g, uint64_t n)
{
	uint64_t live = 0, prev = 0;
	for (uint64_t i = 0; i < n; i++) {
		uint32_t id = graph_get32(r);
		const uint8_t *t = graph_take(r, 3);
		if (t == NULL || id >= g->end || (i > 0 && id <= prev))
			return VELA_ECORRUPT;
		uint32_t deg = (uint32_t)t[1] << 8 | t[2];
		if ((t[0] != GRAPH_LIVE && t[0] != GRAPH_DELETED) || deg > g->R)
			return VELA_ECORRUPT;
		const uint8_t *nb = graph_take(r, (size_t)deg * 4);
		if (nb == NULL)
			return VELA_ECORRUPT;
		g->state[id] = t[0];
		g->deg[id] = deg;
		for (uint32_t j = 0; j < deg; j++)
			graph_adj(g, id)[j] = vela_get_be32(nb + 4 * j);
		live += t[0] == GRAPH_LIVE;
		prev = id;
	}
	return live == g->n_live ? 0 : VELA_ECORRUPT;
}

/* Every edge must point at another node of the graph; the entry point too. */
static int graph_load_verify(const graph_t *g)
{
	for (uint64_t id = 0; id < g->end; id++)
		for (uint32_t j = 0; j < g->deg[id]; j++) {
			uint32_t v = graph_adj(g, id)[j];
			if (v == id || graph_state(g, v) == GRAPH_ABSENT)
				return VELA_ECORRUPT;
		}
	if (g->n_live + g->n_deleted == 0)
		return g->entry == GRAPH_NONE ? 0 : VELA_ECORRUPT;
	return graph_state(g, g->entry) == GRAPH_ABSENT ? VELA_ECORRUPT : 0;
}

/* Highest node id of the n records at r (a copy: r is not advanced), with
 * every record's length checked against the body; 0 or VELA_ECORRUPT. */
static int graph_load_max_id(graph_rbuf_t r, uint64_t n, uint32_t R, uint64_t *max_id)
{
	*max_id = 0;
	for (uint64_t i = 0; i < n; i++) {
		uint32_t id = graph_get32(&r);
		const uint8_t *t = graph_take(&r, 3);
		uint32_t deg = t ? (uint32_t)t[1] << 8 | t[2] : 0;
		if (t == NULL || deg > R || graph_take(&r, (size_t)deg * 4) == NULL)
			return VELA_ECORRUPT;
		if (id > *max_id)
			*max_id = id;
	}
	return 0;
}

/* A loaded graph allocates about (max id + 1) * (R * 4 + 5) bytes. Bound it
 * by the snapshot's size, so a forged id or `end` cannot make the loader
 * allocate gigabytes: a graph sparser than this (ids far above its node
 * count) is refused and then rebuilt by the caller, as any bad snapshot. */
#define GRAPH_LOAD_MEM_PER_BODY_BYTE 64u
#define GRAPH_LOAD_MEM_ALLOWANCE (64ull << 20)

static int graph_load_body(graph_rbuf_t *r, const graph_store_t *st, uint32_t threads,
			   graph_t **out)
{
	int rc = graph_load_params(r, st, threads, out);
	if (rc != 0)
		return rc;
	graph_t *g = *out;
	uint64_t end = graph_get64(r), live = graph_get64(r), del = graph_get64(r);
	uint64_t n = live + del;
	/* Each node takes >= 7 bytes: bounds n (and end, via n) by the body. */
	if (r->bad || end > (uint64_t)GRAPH_ID_MAX + 1 || n > end || live > n ||
	    n > (r->len - r->off) / 7 || (n > 0 && end == 0))
		return VELA_ECORRUPT;
	/* Slots past the last node are absent: allocate for the nodes, not for
	 * `end` (it only bounds the ids). */
	uint64_t max_id = 0, used;
	if (n > 0 && (rc = graph_load_max_id(*r, n, g->R, &max_id)) != 0)
		return rc;
	used = n > 0 ? max_id + 1 : 0;
	if (used > end || used * ((uint64_t)g->R * 4 + 5) >
				  (uint64_t)r->len * GRAPH_LOAD_MEM_PER_BODY_BYTE + GRAPH_LOAD_MEM_ALLOWANCE)
		return VELA_ECORRUPT;
	if (used > 0 && graph_reserve(g, used - 1) != 0)
		return VELA_ENOMEM;
	g->end = used;
	g->n_live = live;
	g->n_deleted = del;
	rc = graph_load_nodes(r, g, n);
	if (rc == 0 && r->off != r->len)
		rc = VELA_ECORRUPT;
	if (rc == 0)
		rc = graph_load_verify(g);
	if (rc == 0)
		graph_indeg_recount(g); /* derived: not stored */
	return rc;
}

/* Header: magic, version (newer: VELA_EVERSION), body length. */
static int graph_load_head(FILE *f, uint8_t *h, uint64_t *body_len)
{
	if (fread(h, 1, GRAPH_HEAD_BYTES, f) != GRAPH_HEAD_BYTES)
		return ferror(f) ? VELA_EIO : VELA_ECORRUPT;
	if (memcmp(h, GRAPH_MAGIC, 8) != 0)
		return VELA_ECORRUPT;
	uint32_t version = vela_get_be32(h + 8);
	if (version > GRAPH_FORMAT_VERSION)
		return VELA_EVERSION;
	if (version == 0)
		return VELA_ECORRUPT;
	*body_len = vela_get_be64(h + 12);
	return *body_len < GRAPH_BODY_FIXED || *body_len > SIZE_MAX / 2 ? VELA_ECORRUPT : 0;
}

int graph_load(FILE *f, const graph_store_t *st, uint32_t threads, graph_t **out)
{
	if (out == NULL)
		return VELA_EINVAL;
	*out = NULL;
	if (f == NULL || st == NULL || threads > GRAPH_THREADS_MAX)
		return VELA_EINVAL;
	uint8_t h[GRAPH_HEAD_BYTES], *buf = NULL;
	uint64_t body_len;
	int rc = graph_load_head(f, h, &body_len);
	if (rc == 0)
		rc = graph_read_all(f, h, sizeof(h), (size_t)body_len + 8, &buf);
	if (rc != 0)
		return rc;
	size_t len = GRAPH_HEAD_BYTES + (size_t)body_len;
	if (vela_hash64(buf, len) != vela_get_be64(buf + len)) {
		free(buf);
		return VELA_ECORRUPT;
	}
	graph_rbuf_t r = {buf + GRAPH_HEAD_BYTES, (size_t)body_len, 0, false};
	rc = graph_load_body(&r, st, threads, out);
	free(buf);
	if (rc != 0) {
		graph_destroy(*out);
		*out = NULL;
	}
	return rc;
}
