/* bench_wire: FT.SEARCH through velad over loopback against the same
 * searches in-process through the engine API.
 *
 *   data     N x dim F32 vectors, uniform in [-1, 1) (splitmix64, --seed,
 *            the same data as bench_flat), keys doc:<i>, field v, index idx
 *            (FLAT, L2); loaded with the engine in batches of 1,000.
 *   queries  nq vectors drawn the same way; KNN k, RETURN 1 dist (so both
 *            sides return the key and the distance, not the 3 KB vector).
 *   (a) in-process: vela_search, one query at a time, one thread
 *   (a1) in-process: vela_search_batch with one query, one at a time: what
 *       a velad worker runs for a query that arrives alone
 *   (b) wire: one hiredis connection, one FT.SEARCH at a time
 *       overhead = (b - a) / a per query                    target <= 10%
 *       and the part that is the wire alone, (b - a1) / a1
 *   (c) wire, --clients C connections on C threads, each sending one
 *       FT.SEARCH at a time (velad batches concurrent searches into GEMM),
 *       beside in-process vela_search_batch on batches of C queries.
 * Every figure is the best of --reps rounds; in each round (a) and (b) run
 * back to back on the same queries, then (c) and its in-process reference.
 * Wire results are checked against the in-process keys (same order).
 *
 * The server:
 *   --velad PATH  fork/exec PATH --dir DIR --port <free> (--appendfsync
 *                 everysec; no writes are timed) and SIGTERM it at the end;
 *   --port P      use a velad already running on 127.0.0.1:P that serves DIR
 *                 (both open the LMDB environment; LMDB allows several
 *                 processes). Make DIR first with --load-only.
 * DIR is --dir (kept), or a fresh /tmp/vela-wire.XXXXXX removed at the end.
 * A DIR that already holds index idx with N documents is not reloaded.
 * velad inherits the environment: set OPENBLAS_NUM_THREADS for both sides.
 *
 * Usage: bench_wire (--velad PATH | --port P | --load-only) [--dir DIR]
 *                   [--n N] [--dim D] [--nq Q] [--k K] [--clients C]
 *                   [--conc-nq Q2] [--reps R] [--seed X]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "common/common.h"
#include "vela/vela.h"

typedef struct {
	uint32_t n, dim, nq, k, clients, conc_nq, reps;
	uint64_t seed;
	const char *velad, *dir;
	int port;
	int load_only;
} wb_opts_t;

#define WB_INDEX "idx"
#define WB_QUERY_FMT "*=>[KNN %u @v $B AS dist]"
#define WB_LOAD_BATCH 1000u
#define WB_MAP_SIZE (4ull << 30)
#define WB_SWEEP_NQ 64u

static uint64_t wb_rng(uint64_t *s) /* splitmix64, as bench_flat */
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void wb_fill(float *v, size_t n, uint64_t *s)
{
	for (size_t i = 0; i < n; i++)
		v[i] = (float)((wb_rng(s) >> 40) * 0x1p-24) * 2.0f - 1.0f;
}

static double wb_sec(uint64_t t0)
{
	return (double)(vela_now_ns() - t0) * 1e-9;
}

static int wb_parse(int argc, char **argv, wb_opts_t *o)
{
	*o = (wb_opts_t){100000, 768, 200, 10, 8, 800, 5, 42, NULL, NULL, 0, 0};
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--load-only")) {
			o->load_only = 1;
			continue;
		}
		if (i + 1 >= argc)
			return -1;
		const char *v = argv[++i];
		unsigned long u = strtoul(v, NULL, 10);
		if (!strcmp(argv[i - 1], "--velad"))
			o->velad = v;
		else if (!strcmp(argv[i - 1], "--dir"))
			o->dir = v;
		else if (!strcmp(argv[i - 1], "--port"))
			o->port = (int)u;
		else if (!strcmp(argv[i - 1], "--n"))
			o->n = (uint32_t)u;
		else if (!strcmp(argv[i - 1], "--dim"))
			o->dim = (uint32_t)u;
		else if (!strcmp(argv[i - 1], "--nq"))
			o->nq = (uint32_t)u;
		else if (!strcmp(argv[i - 1], "--k"))
			o->k = (uint32_t)u;
		else if (!strcmp(argv[i - 1], "--clients"))
			o->clients = (uint32_t)u;
		else if (!strcmp(argv[i - 1], "--conc-nq"))
			o->conc_nq = (uint32_t)u;
		else if (!strcmp(argv[i - 1], "--reps"))
			o->reps = (uint32_t)u;
		else if (!strcmp(argv[i - 1], "--seed"))
			o->seed = u;
		else
			return -1;
	}
	if (!o->n || !o->dim || !o->nq || !o->k || !o->clients || !o->reps ||
	    o->conc_nq < o->clients)
		return -1;
	if (!o->load_only && !o->velad && !o->port)
		return -1;
	if (o->load_only && !o->dir)
		return -1;
	return 0;
}

/* ------------------------------------------------------------ data */

static int wb_load(vela_db_t *db, const wb_opts_t *o, vela_err_t *err)
{
	vela_index_info_t info;
	if (vela_index_info(db, WB_INDEX, &info, NULL) == 0) {
		if (info.num_docs == o->n) {
			printf("load: %s already holds %u documents\n", o->dir, o->n);
			return 0;
		}
		vela_err_set(err, VELA_EINVAL, "%s holds %llu documents in %s, not %u", o->dir,
			     (unsigned long long)info.num_docs, WB_INDEX, o->n);
		return VELA_EINVAL;
	}
	vela_field_def_t f = {.name = "v", .type = VELA_FIELD_VECTOR, .algo = VELA_ALGO_FLAT,
			      .vec_type = VELA_VEC_FLOAT32, .dim = o->dim,
			      .metric = VELA_METRIC_L2};
	vela_index_def_t def = {.name = WB_INDEX, .prefixes = (const char *[]){"doc:"},
				.n_prefixes = 1, .fields = &f, .n_fields = 1};
	int rc = vela_index_create(db, &def, err);
	if (rc)
		return rc;
	float *v = malloc((size_t)o->dim * sizeof(float));
	if (!v)
		return VELA_ENOMEM;
	uint64_t seed = o->seed, t0 = vela_now_ns();
	for (uint32_t i0 = 0; rc == 0 && i0 < o->n; i0 += WB_LOAD_BATCH) {
		vela_batch_t *b;
		if ((rc = vela_batch_begin(db, &b, err)))
			break;
		for (uint32_t i = i0; rc == 0 && i < o->n && i < i0 + WB_LOAD_BATCH; i++) {
			char key[32];
			int kl = snprintf(key, sizeof(key), "doc:%u", i);
			wb_fill(v, o->dim, &seed);
			vela_kv_t kv = {"v", 1, v, (size_t)o->dim * sizeof(float)};
			rc = vela_batch_hset(b, key, (size_t)kl, &kv, 1, NULL, err);
		}
		if (rc)
			vela_batch_abort(b);
		else
			rc = vela_batch_commit(b, err);
	}
	free(v);
	if (rc == 0 && (rc = vela_db_sync(db)) == 0)
		printf("load: %u vectors into %s in %.1f s\n", o->n, o->dir, wb_sec(t0));
	return rc;
}

/* ------------------------------------------------------------ velad */

static int wb_free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	int port = -1;
	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &al) == 0)
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static redisContext *wb_connect(int port)
{
	struct timeval tv = {60, 0};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
	if (c == NULL || c->err) {
		if (c)
			redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, tv);
	return c;
}

/* Start velad on DIR; wait (up to 120 s: it rebuilds the index) for PING. */
static pid_t wb_start_velad(const wb_opts_t *o, int *port)
{
	*port = wb_free_port();
	char ps[16];
	snprintf(ps, sizeof(ps), "%d", *port);
	pid_t pid = fork();
	if (pid == 0) {
		execl(o->velad, o->velad, "--port", ps, "--dir", o->dir, "--map-size", "4gb",
		      "--appendfsync", "everysec", "--loglevel", "warning", (char *)NULL);
		fprintf(stderr, "exec %s: %s\n", o->velad, strerror(errno));
		_exit(127);
	}
	if (pid < 0)
		return -1;
	uint64_t t0 = vela_now_ns();
	for (int i = 0; i < 1200; i++) {
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			fprintf(stderr, "velad exited during start-up (status %d)\n", st);
			return -1;
		}
		redisContext *c = wb_connect(*port);
		if (c) {
			redisReply *r = redisCommand(c, "PING");
			int ok = r && r->type == REDIS_REPLY_STATUS;
			if (r)
				freeReplyObject(r);
			redisFree(c);
			if (ok) {
				printf("velad: pid %d on port %d, ready in %.1f s\n", (int)pid, *port,
				       wb_sec(t0));
				return pid;
			}
		}
		usleep(100000);
	}
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	fprintf(stderr, "velad did not answer PING in 120 s\n");
	return -1;
}

/* ------------------------------------------------------------ searches */

typedef struct {
	const wb_opts_t *o;
	const float *Q;
	char query[64];
	char **keys; /* nq x k in-process keys (the reference) */
} wb_ctx_t;

static const char *const wb_ret[] = {"dist"};

static vela_search_req_t wb_req(const wb_ctx_t *x, const float *q, vela_kv_t *p)
{
	*p = (vela_kv_t){"B", 1, q, (size_t)x->o->dim * sizeof(float)};
	return (vela_search_req_t){.index = WB_INDEX, .query = x->query, .params = p,
				   .n_params = 1, .limit = x->o->k, .return_fields = wb_ret,
				   .n_return = 1};
}

/* (a) per-query seconds, one at a time; records the keys when x->keys. */
static double wb_inproc(vela_db_t *db, wb_ctx_t *x, int record)
{
	const wb_opts_t *o = x->o;
	uint64_t t0 = vela_now_ns();
	for (uint32_t i = 0; i < o->nq; i++) {
		vela_kv_t p;
		vela_search_req_t req = wb_req(x, x->Q + (size_t)i * o->dim, &p);
		vela_result_t *res;
		vela_err_t err;
		if (vela_search(db, &req, &res, &err)) {
			fprintf(stderr, "vela_search: %s\n", err.msg);
			return -1;
		}
		for (size_t h = 0; record && h < res->n_hits && h < o->k; h++)
			x->keys[(size_t)i * o->k + h] = strdup(res->hits[h].key);
		vela_result_free(res);
	}
	return wb_sec(t0) / o->nq;
}

/* In-process reference for (c): vela_search_batch on batches of `bs`
 * queries (over conc_nq queries); returns queries/s. */
static double wb_inproc_batch(vela_db_t *db, wb_ctx_t *x, uint32_t bs)
{
	const wb_opts_t *o = x->o;
	vela_search_req_t *reqs = calloc(bs, sizeof(*reqs));
	vela_kv_t *ps = calloc(bs, sizeof(*ps));
	vela_result_t **outs = calloc(bs, sizeof(*outs));
	double qps = -1;
	if (!reqs || !ps || !outs)
		goto out;
	uint64_t t0 = vela_now_ns();
	for (uint32_t i0 = 0; i0 < o->conc_nq; i0 += bs) {
		uint32_t m = o->conc_nq - i0 < bs ? o->conc_nq - i0 : bs;
		for (uint32_t j = 0; j < m; j++)
			reqs[j] = wb_req(x, x->Q + (size_t)((i0 + j) % o->nq) * o->dim, &ps[j]);
		if (vela_search_batch(db, reqs, m, outs, NULL)) {
			fprintf(stderr, "vela_search_batch failed\n");
			goto out;
		}
		for (uint32_t j = 0; j < m; j++)
			vela_result_free(outs[j]);
	}
	qps = o->conc_nq / wb_sec(t0);
out:
	free(reqs);
	free(ps);
	free(outs);
	return qps;
}

/* (a1) per-query seconds through vela_search_batch with n = 1: the call a
 * velad search worker makes for a query that arrives alone. */
static double wb_inproc_batch1(vela_db_t *db, wb_ctx_t *x)
{
	const wb_opts_t *o = x->o;
	uint64_t t0 = vela_now_ns();
	for (uint32_t i = 0; i < o->nq; i++) {
		vela_kv_t p;
		vela_search_req_t req = wb_req(x, x->Q + (size_t)i * o->dim, &p);
		vela_result_t *res;
		vela_err_t err;
		if (vela_search_batch(db, &req, 1, &res, &err)) {
			fprintf(stderr, "vela_search_batch: %s\n", err.msg);
			return -1;
		}
		vela_result_free(res);
	}
	return wb_sec(t0) / o->nq;
}

/* One FT.SEARCH; returns 0 and checks the keys against the reference
 * (counting mismatches in *bad). */
static int wb_wire_one(redisContext *c, const wb_ctx_t *x, uint32_t qi, uint64_t *bad)
{
	const wb_opts_t *o = x->o;
	char lim[16];
	snprintf(lim, sizeof(lim), "%u", o->k);
	const char *argv[] = {"FT.SEARCH", WB_INDEX, x->query, "PARAMS", "2", "B",
			      (const char *)(x->Q + (size_t)qi * o->dim), "RETURN", "1", "dist",
			      "LIMIT", "0", lim, "DIALECT", "2"};
	size_t argl[15];
	for (int i = 0; i < 15; i++)
		argl[i] = strlen(argv[i]);
	argl[6] = (size_t)o->dim * sizeof(float);
	redisReply *r = redisCommandArgv(c, 15, argv, argl);
	if (r == NULL) {
		fprintf(stderr, "FT.SEARCH: connection error: %s\n", c->errstr);
		return -1;
	}
	int rc = 0;
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
		fprintf(stderr, "FT.SEARCH: unexpected reply (type %d): %s\n", r->type,
			r->type == REDIS_REPLY_ERROR ? r->str : "");
		rc = -1;
	} else if (x->keys) {
		/* RESP2: total, then key, [fields] per hit */
		size_t nh = (r->elements - 1) / 2;
		for (size_t h = 0; h < o->k; h++) {
			const char *want = x->keys[(size_t)qi * o->k + h];
			const redisReply *kr = h < nh ? r->element[1 + 2 * h] : NULL;
			if (!want || !kr || kr->type != REDIS_REPLY_STRING || strcmp(kr->str, want))
				(*bad)++;
		}
	}
	freeReplyObject(r);
	return rc;
}

/* (b) per-query seconds over one connection. */
static double wb_wire(redisContext *c, const wb_ctx_t *x, uint64_t *bad)
{
	uint64_t t0 = vela_now_ns();
	for (uint32_t i = 0; i < x->o->nq; i++)
		if (wb_wire_one(c, x, i, bad))
			return -1;
	return wb_sec(t0) / x->o->nq;
}

typedef struct {
	const wb_ctx_t *x;
	redisContext *c;
	uint32_t id;
	uint64_t bad;
	int rc;
	pthread_barrier_t *go;
} wb_thread_t;

static void *wb_client_main(void *arg)
{
	wb_thread_t *t = arg;
	const wb_opts_t *o = t->x->o;
	pthread_barrier_wait(t->go);
	/* client id takes queries id, id + C, id + 2C, ... of conc_nq */
	for (uint32_t i = t->id; i < o->conc_nq && t->rc == 0; i += o->clients)
		t->rc = wb_wire_one(t->c, t->x, i % o->nq, &t->bad);
	return NULL;
}

/* (c) queries/s with C clients. */
static double wb_wire_conc(wb_thread_t *ts, const wb_ctx_t *x, uint64_t *bad)
{
	uint32_t C = x->o->clients;
	pthread_t *th = calloc(C, sizeof(*th));
	pthread_barrier_t go;
	pthread_barrier_init(&go, NULL, C + 1);
	for (uint32_t i = 0; i < C; i++) {
		ts[i].go = &go;
		ts[i].rc = 0;
		pthread_create(&th[i], NULL, wb_client_main, &ts[i]);
	}
	pthread_barrier_wait(&go);
	uint64_t t0 = vela_now_ns();
	int rc = 0;
	for (uint32_t i = 0; i < C; i++) {
		pthread_join(th[i], NULL);
		rc |= ts[i].rc;
		*bad += ts[i].bad;
		ts[i].bad = 0;
	}
	double t = wb_sec(t0);
	pthread_barrier_destroy(&go);
	free(th);
	return rc ? -1 : x->o->conc_nq / t;
}

/* ------------------------------------------------------------ main */

static char wb_tmpdir[64];

static void wb_rmdir(void)
{
	if (!wb_tmpdir[0])
		return;
	char p[128];
	const char *files[] = {"data.mdb", "lock.mdb"};
	for (int i = 0; i < 2; i++) {
		snprintf(p, sizeof(p), "%s/%s", wb_tmpdir, files[i]);
		unlink(p);
	}
	if (rmdir(wb_tmpdir))
		fprintf(stderr, "note: could not remove %s: %s\n", wb_tmpdir, strerror(errno));
}

int main(int argc, char **argv)
{
	wb_opts_t o;
	if (wb_parse(argc, argv, &o) != 0) {
		fprintf(stderr,
			"usage: %s (--velad PATH | --port P | --load-only) [--dir DIR] [--n N] "
			"[--dim D] [--nq Q] [--k K] [--clients C] [--conc-nq Q2] [--reps R] "
			"[--seed X]\n", argv[0]);
		return 2;
	}
	if (!o.dir) {
		snprintf(wb_tmpdir, sizeof(wb_tmpdir), "/tmp/vela-wire.XXXXXX");
		if (!mkdtemp(wb_tmpdir)) {
			perror("mkdtemp");
			return 1;
		}
		o.dir = wb_tmpdir;
		atexit(wb_rmdir);
	}
	vela_db_t *db;
	vela_err_t err;
	vela_db_options_t dopt = {.map_size = WB_MAP_SIZE, .flags = VELA_OPEN_NOSYNC};
	if (vela_db_open(o.dir, &dopt, &db, &err) || wb_load(db, &o, &err)) {
		fprintf(stderr, "%s: %s\n", o.dir, err.msg);
		return 1;
	}
	if (o.load_only) {
		vela_db_close(db);
		return 0;
	}
	pid_t pid = -1;
	int port = o.port;
	if (o.velad && (pid = wb_start_velad(&o, &port)) < 0) {
		vela_db_close(db);
		return 1;
	}
	const char *blas = getenv("OPENBLAS_NUM_THREADS");
	printf("bench_wire: N=%u dim=%u nq=%u k=%u metric=L2 type=F32 index=FLAT clients=%u "
	       "conc_nq=%u reps=%u OPENBLAS_NUM_THREADS=%s cpu=[%s]\n", o.n, o.dim, o.nq, o.k,
	       o.clients, o.conc_nq, o.reps, blas ? blas : "(unset)", vela_cpu_features_str());

	float *Q = malloc((size_t)o.nq * o.dim * sizeof(float));
	char **keys = calloc((size_t)o.nq * o.k, sizeof(char *));
	wb_thread_t *ts = calloc(o.clients, sizeof(*ts));
	redisContext *c = wb_connect(port);
	int rc = 1;
	if (!Q || !keys || !ts || !c) {
		fprintf(stderr, c ? "out of memory\n" : "cannot connect to velad\n");
		goto out;
	}
	uint64_t seed = o.seed ^ 0x5eedull; /* queries: not the data's stream */
	wb_fill(Q, (size_t)o.nq * o.dim, &seed);
	wb_ctx_t x = {.o = &o, .Q = Q, .keys = keys};
	snprintf(x.query, sizeof(x.query), WB_QUERY_FMT, o.k);
	for (uint32_t i = 0; i < o.clients; i++) {
		ts[i] = (wb_thread_t){.x = &x, .id = i};
		if ((ts[i].c = wb_connect(port)) == NULL) {
			fprintf(stderr, "cannot connect client %u\n", i);
			goto out;
		}
	}
	/* warm-up: reference keys, and one pass over the wire */
	uint64_t bad = 0;
	if (wb_inproc(db, &x, 1) < 0 || wb_wire(c, &x, &bad) < 0)
		goto out;
	double t_in = 1e30, t_in1 = 1e30, t_wire = 1e30, q_conc = 0, q_batch = 0, q_batch1 = 0;
	for (uint32_t r = 0; r < o.reps; r++) {
		/* alternate which goes first, so drift hits both alike */
		double a, a1, b;
		if (r & 1) {
			b = wb_wire(c, &x, &bad);
			a1 = wb_inproc_batch1(db, &x);
			a = wb_inproc(db, &x, 0);
		} else {
			a = wb_inproc(db, &x, 0);
			a1 = wb_inproc_batch1(db, &x);
			b = wb_wire(c, &x, &bad);
		}
		if (a < 0 || a1 < 0 || b < 0)
			goto out;
		t_in = fmin(t_in, a);
		t_in1 = fmin(t_in1, a1);
		t_wire = fmin(t_wire, b);
		double qc = wb_wire_conc(ts, &x, &bad);
		double qb = wb_inproc_batch(db, &x, o.clients);
		if (qc < 0 || qb < 0)
			goto out;
		q_conc = fmax(q_conc, qc);
		q_batch = fmax(q_batch, qb);
		printf("round %u/%u: inproc %.3f ms  batch-of-1 %.3f ms  wire %.3f ms  (%+.1f%%)  "
		       "wire x%u %.0f q/s  inproc batch %u %.0f q/s\n", r + 1, o.reps, a * 1e3,
		       a1 * 1e3, b * 1e3, 100 * (b - a) / a, o.clients, qc, o.clients, qb);
		fflush(stdout);
	}
	q_batch1 = wb_inproc_batch(db, &x, o.conc_nq > 1000 ? 1000 : o.conc_nq);
	char lbl[80];
	printf("\n%-52s %12s\n", "measure (best of rounds)", "value");
	printf("%-52s %9.3f ms  (%.0f q/s)\n", "(a) in-process vela_search, 1 query at a time",
	       t_in * 1e3, 1 / t_in);
	printf("%-52s %9.3f ms  (%.0f q/s)\n", "(a1) in-process vela_search_batch, n = 1",
	       t_in1 * 1e3, 1 / t_in1);
	printf("%-52s %9.3f ms  (%.0f q/s)\n", "(b) wire FT.SEARCH, 1 client, 1 at a time",
	       t_wire * 1e3, 1 / t_wire);
	printf("%-52s %9.1f %%   (%+.3f ms per query)   target <= 10%%\n",
	       "    protocol overhead (b - a) / a", 100 * (t_wire - t_in) / t_in,
	       (t_wire - t_in) * 1e3);
	printf("%-52s %9.1f %%   (%+.3f ms per query)\n",
	       "    of which wire alone (b - a1) / a1", 100 * (t_wire - t_in1) / t_in1,
	       (t_wire - t_in1) * 1e3);
	snprintf(lbl, sizeof(lbl), "(c) wire FT.SEARCH, %u clients, 1 at a time each", o.clients);
	printf("%-52s %9.0f q/s\n", lbl, q_conc);
	snprintf(lbl, sizeof(lbl), "    in-process vela_search_batch, batches of %u", o.clients);
	printf("%-52s %9.0f q/s   (wire/inproc %.0f%%)\n", lbl, q_batch, 100 * q_conc / q_batch);
	snprintf(lbl, sizeof(lbl), "    in-process vela_search_batch, one batch of %u",
		 o.conc_nq > 1000 ? 1000 : o.conc_nq);
	printf("%-52s %9.0f q/s\n", lbl, q_batch1);
	printf("    concurrent speed-up over (b): %.1fx\n", q_conc * t_wire);
	/* Where batching starts to pay: in-process vela_search_batch per batch
	 * size (one pass over WB_SWEEP_NQ queries each, not best-of). */
	printf("in-process vela_search_batch by batch size (q/s; vela_search alone: %.0f):",
	       1 / t_in);
	uint32_t cnq = o.conc_nq;
	o.conc_nq = WB_SWEEP_NQ;
	for (uint32_t bs = 1; bs <= WB_SWEEP_NQ; bs *= 2)
		printf(" %u:%.0f", bs, wb_inproc_batch(db, &x, bs));
	o.conc_nq = cnq;
	printf("\n");
	printf("result check: %llu of %llu wire hits differ from in-process\n",
	       (unsigned long long)bad,
	       (unsigned long long)((uint64_t)o.nq * o.k * (o.reps + 1) +
				    (uint64_t)o.conc_nq * o.k * o.reps));
	rc = bad ? 1 : 0;
out:
	for (uint32_t i = 0; ts && i < o.clients; i++)
		if (ts[i].c)
			redisFree(ts[i].c);
	if (c)
		redisFree(c);
	if (pid > 0) {
		kill(pid, SIGTERM);
		int st;
		waitpid(pid, &st, 0);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			fprintf(stderr, "velad exit status 0x%x\n", st);
	}
	for (size_t i = 0; keys && i < (size_t)o.nq * o.k; i++)
		free(keys[i]);
	free(keys);
	free(ts);
	free(Q);
	vela_db_close(db);
	return rc;
}
