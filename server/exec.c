/* The writer thread (group commit) and the search workers. Jobs come from
 * the loop through queues and go back through `doneq`, which wakes the loop
 * (done_ev). Handlers run here with c == NULL: they may only use the job's
 * arguments, the client's protocol version and the database. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server/srv_int.h"

void cmd_exec_multi(cmd_ctx_t *x, srv_job_t *j, vela_batch_t **batch);
void ft_search_many(srv_t *s, srv_job_t **jobs, size_t n);

/* ------------------------------------------------------------ jobs */

srv_job_t *job_new(srv_client_t *c, const srv_command_t *cmd, int argc, const resp_arg_t *argv,
		   int proto)
{
	size_t bytes = sizeof(srv_job_t) + (size_t)argc * sizeof(resp_arg_t);
	for (int i = 0; i < argc; i++)
		bytes += argv[i].len + 1;
	srv_job_t *j = calloc(1, bytes);
	if (j == NULL)
		return NULL;
	j->c = c;
	j->cmd = cmd;
	j->argc = argc;
	j->argv = (resp_arg_t *)(j + 1);
	char *p = (char *)(j->argv + argc);
	for (int i = 0; i < argc; i++) {
		memcpy(p, argv[i].p, argv[i].len);
		p[argv[i].len] = '\0';
		j->argv[i].p = p;
		j->argv[i].len = argv[i].len;
		p += argv[i].len + 1;
	}
	resp_out_init(&j->out, proto);
	return j;
}

void job_free(srv_job_t *j)
{
	while (j) {
		srv_job_t *m = j->multi_cmds;
		while (m) {
			srv_job_t *n = m->next;
			resp_out_free(&m->out);
			free(m);
			m = n;
		}
		resp_out_free(&j->out);
		free(j->argv_own);
		free(j);
		j = NULL;
	}
}

/* ------------------------------------------------------------ queues */

static void jobq_init(job_queue_t *q)
{
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cv, NULL);
	q->head = q->tail = NULL;
	q->n = 0;
}

static void jobq_destroy(job_queue_t *q)
{
	pthread_mutex_destroy(&q->mu);
	pthread_cond_destroy(&q->cv);
}

/* Append the list head..tail (n jobs). Consumers take everything queued, so
 * only a push onto an empty queue can have a sleeper to wake. */
void jobq_push_list(job_queue_t *q, srv_job_t *head, srv_job_t *tail, size_t n)
{
	tail->next = NULL;
	pthread_mutex_lock(&q->mu);
	bool was_empty = q->head == NULL;
	if (q->tail)
		q->tail->next = head;
	else
		q->head = head;
	q->tail = tail;
	q->n += n;
	if (was_empty)
		pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
}

void jobq_push(job_queue_t *q, srv_job_t *j)
{
	jobq_push_list(q, j, j, 1);
}

/* Take up to `max` jobs (all with max 0); waits while empty unless stopping. */
static srv_job_t *jobq_take(srv_t *s, job_queue_t *q, size_t max)
{
	pthread_mutex_lock(&q->mu);
	while (q->head == NULL && !atomic_load(&s->stopping))
		pthread_cond_wait(&q->cv, &q->mu);
	srv_job_t *h = q->head, *t = h;
	size_t n = 1;
	if (h == NULL) {
		pthread_mutex_unlock(&q->mu);
		return NULL;
	}
	while (t->next && (max == 0 || n < max)) {
		t = t->next;
		n++;
	}
	q->head = t->next;
	if (q->head == NULL)
		q->tail = NULL;
	q->n -= n;
	t->next = NULL;
	pthread_mutex_unlock(&q->mu);
	return h;
}

/* Hand a finished list back to the loop in one push and one wake-up. */
static void jobs_done(srv_t *s, srv_job_t *list)
{
	if (list == NULL)
		return;
	srv_job_t *tail = list;
	size_t n = 1;
	while (tail->next) {
		tail = tail->next;
		n++;
	}
	jobq_push_list(&s->doneq, list, tail, n);
	event_active(s->done_ev, EV_READ, 0);
}

void exec_job_done(srv_t *s, srv_job_t *j)
{
	j->next = NULL;
	jobs_done(s, j);
}

/* ------------------------------------------------------------ the writer */

typedef struct group {
	vela_batch_t *batch;
	srv_job_t *head, *tail; /* jobs whose replies wait for the batch commit */
} group_t;

static void group_add(group_t *g, srv_job_t *j)
{
	j->next = NULL;
	if (g->tail)
		g->tail->next = j;
	else
		g->head = j;
	g->tail = j;
}

/* Commit the open batch; on failure every reply of the group becomes the error. */
static void group_flush(srv_t *s, group_t *g)
{
	if (g->batch) {
		vela_err_t err = {0};
		if (vela_batch_commit(g->batch, &err)) {
			vela_error("group commit failed: %s", err.msg);
			for (srv_job_t *j = g->head; j; j = j->next) {
				j->out.len = 0;
				resp_errorf(&j->out, "%s", err.msg);
			}
		}
		g->batch = NULL;
	}
	if (g->head)
		jobs_done(s, g->head);
	g->head = g->tail = NULL;
}

static int group_batch(srv_t *s, group_t *g, srv_job_t *j)
{
	vela_err_t err = {0};
	if (g->batch || vela_batch_begin(s->db, &g->batch, &err) == 0)
		return 0;
	resp_errorf(&j->out, "cannot begin write: %s", err.msg);
	return -1;
}

/* The write was refused because the LMDB map is full (db/write.c's -OOM). */
static bool reply_is_map_full(const resp_out_t *o)
{
	return o->len > 4 && memcmp(o->p, "-OOM ", 5) == 0;
}

static void writer_run_one(srv_t *s, group_t *g, srv_job_t *j)
{
	cmd_ctx_t x = {.srv = s, .db = s->db, .argc = j->argc, .argv = j->argv, .out = &j->out,
		       .proto = j->out.proto};
	if (j->multi) {
		/* Alone in its group: a commit failure inside EXEC then concerns
		 * only this transaction's reply. */
		group_flush(s, g);
		cmd_exec_multi(&x, j, &g->batch);
		group_add(g, j);
		return;
	}
	if (j->cmd->flags & CMD_ALONE) {
		group_flush(s, g); /* index DDL and config run outside any batch */
		slowlog_run(j->cmd, &x, j->c);
		j->next = NULL;
		jobs_done(s, j);
		return;
	}
	if (group_batch(s, g, j) == 0) {
		x.batch = g->batch;
		slowlog_run(j->cmd, &x, j->c);
	}
	if (g->head && reply_is_map_full(&j->out)) {
		/* The map filled up inside this group (a pipeline of deletes on a
		 * full map, say): commit what the group holds, so the pages its
		 * deletes freed become reusable, and run this write once more in
		 * a fresh batch. A write refused for lack of room did nothing, so
		 * running it again is safe. */
		j->out.len = 0;
		group_flush(s, g);
		if (group_batch(s, g, j) == 0) {
			x.batch = g->batch;
			slowlog_run(j->cmd, &x, j->c);
		}
	}
	group_add(g, j);
}

static void *writer_main(void *arg)
{
	srv_t *s = arg;
	srv_job_t *list;
	while ((list = jobq_take(s, &s->writeq, 0)) != NULL) {
		group_t g = {0};
		while (list) {
			srv_job_t *n = list->next;
			writer_run_one(s, &g, list);
			list = n;
		}
		group_flush(s, &g);
	}
	return NULL;
}

/* ------------------------------------------------------------ search workers */

#define SEARCH_TAKE_MAX 256u

static void *worker_main(void *arg)
{
	srv_t *s = arg;
	srv_job_t *list;
	srv_job_t *v[SEARCH_TAKE_MAX];
	while ((list = jobq_take(s, &s->searchq, SEARCH_TAKE_MAX)) != NULL) {
		size_t n = 0;
		for (srv_job_t *j = list; j; j = j->next)
			v[n++] = j;
		uint64_t t0 = vela_now_ns();
		ft_search_many(s, v, n);
		slowlog_batch(v, n, (vela_now_ns() - t0) / 1000);
		jobs_done(s, list);
	}
	return NULL;
}

/* ------------------------------------------------------------ everysec */

/* appendfsync everysec (MDB_NOSYNC): commits reach the OS at once but the
 * disk only when fsync'd. As Redis's background fsync, once a second off the
 * writer, so a commit is on disk at most ~1 s (plus one fsync) after it was
 * acknowledged. */
#define SRV_SYNC_INTERVAL_MS 1000u

static void *syncer_main(void *arg)
{
	srv_t *s = arg;
	uint64_t failures = 0;
	pthread_mutex_lock(&s->sync_mu);
	while (!atomic_load(&s->stopping)) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += SRV_SYNC_INTERVAL_MS / 1000u;
		pthread_cond_timedwait(&s->sync_cv, &s->sync_mu, &ts);
		pthread_mutex_unlock(&s->sync_mu);
		int rc = vela_db_sync(s->db);
		if (rc)
			failures++;
		if (rc && (failures & (failures - 1)) == 0) /* 1st, 2nd, 4th, ... */
			vela_error("appendfsync everysec: fsync failed (%llu times): %s",
				   (unsigned long long)failures, vela_strerror(rc));
		pthread_mutex_lock(&s->sync_mu);
	}
	pthread_mutex_unlock(&s->sync_mu);
	return NULL;
}

/* ------------------------------------------------------------ start / stop */

static void on_done(evutil_socket_t fd, short what, void *arg)
{
	exec_collect_done(arg);
}

void exec_collect_done(srv_t *s)
{
	pthread_mutex_lock(&s->doneq.mu);
	srv_job_t *j = s->doneq.head;
	s->doneq.head = s->doneq.tail = NULL;
	s->doneq.n = 0;
	pthread_mutex_unlock(&s->doneq.mu);
	/* Mark every job first, then visit each client once: its replies then
	 * leave in one write however many of its jobs finished together. */
	srv_client_t *clients = NULL;
	while (j) {
		srv_job_t *n = j->next;
		j->done = 1;
		if (j->c && !j->c->done_mark) {
			j->c->done_mark = true;
			j->c->done_next = clients;
			clients = j->c;
		} else if (j->c == NULL) { /* internal: the expiry cycle or a back-fill */
			if (!j->backfill)
				s->expire_pending = false;
			job_free(j);
		}
		j = n;
	}
	while (clients) {
		srv_client_t *c = clients, *n = c->done_next;
		c->done_mark = false;
		client_job_done(c); /* may free c */
		clients = n;
	}
}

int exec_start(srv_t *s)
{
	jobq_init(&s->writeq);
	jobq_init(&s->searchq);
	jobq_init(&s->doneq);
	s->done_ev = event_new(s->base, -1, EV_PERSIST, on_done, s);
	if (s->done_ev == NULL)
		return VELA_ENOMEM;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	s->n_workers = s->cfg.workers ? s->cfg.workers : (uint32_t)(ncpu > 0 ? ncpu : 1);
	s->workers = calloc(s->n_workers, sizeof(pthread_t));
	if (s->workers == NULL)
		return VELA_ENOMEM;
	if (pthread_create(&s->writer, NULL, writer_main, s))
		return VELA_ENOMEM;
	pthread_mutex_init(&s->sync_mu, NULL);
	pthread_cond_init(&s->sync_cv, NULL);
	if (s->cfg.nosync) {
		if (pthread_create(&s->syncer, NULL, syncer_main, s))
			return VELA_ENOMEM;
		s->syncer_on = true;
	}
	for (uint32_t i = 0; i < s->n_workers; i++)
		if (pthread_create(&s->workers[i], NULL, worker_main, s))
			return VELA_ENOMEM;
	return embedq_start(s);
}

/* Threads drain their queues (every accepted write is committed), then exit. */
void exec_stop(srv_t *s)
{
	embedq_stop(s); /* its last requests reach the writer before it stops */
	atomic_store(&s->stopping, 1);
	job_queue_t *qs[] = {&s->writeq, &s->searchq};
	for (size_t i = 0; i < 2; i++) {
		pthread_mutex_lock(&qs[i]->mu);
		pthread_cond_broadcast(&qs[i]->cv);
		pthread_mutex_unlock(&qs[i]->mu);
	}
	pthread_join(s->writer, NULL);
	for (uint32_t i = 0; i < s->n_workers; i++)
		pthread_join(s->workers[i], NULL);
	if (s->syncer_on) {
		pthread_mutex_lock(&s->sync_mu);
		pthread_cond_broadcast(&s->sync_cv);
		pthread_mutex_unlock(&s->sync_mu);
		pthread_join(s->syncer, NULL);
		s->syncer_on = false;
		vela_db_sync(s->db); /* the writer is done: the last commits go to disk */
	}
	pthread_mutex_destroy(&s->sync_mu);
	pthread_cond_destroy(&s->sync_cv);
	exec_collect_done(s);
	free(s->workers);
	event_free(s->done_ev);
	jobq_destroy(&s->writeq);
	jobq_destroy(&s->searchq);
	jobq_destroy(&s->doneq);
}
