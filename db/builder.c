/* Background graph builds and (re)training (issue 4: "until an index reaches
 * its training threshold it answers exactly from F32; training then runs in
 * the background without blocking searches or writes").
 *
 * One builder thread per database takes jobs from a FIFO. A job:
 *  1. copies the field's docids and vectors holding db->lock shared (a
 *     memcpy: writes wait only for the copy) and from then on records in
 *     f->dirty every docid a write touches;
 *  2. trains the store (LVQ / LeanVec, OOD when the job carries queries) and
 *     builds the graph over that private copy, holding no lock: searches keep
 *     using the exact scan (first build) or the old graph (retrain), writes
 *     go on;
 *  3. replays the dirty docids onto the new graph (FreshDiskANN inserts,
 *     deletes) in rounds that hold only write_mu to pop a batch and read its
 *     vectors (job_catch_up), then takes write_mu and db->lock exclusively
 *     (the writer's order), replays the last few and swaps it in.
 * The job names its field by index id, field number and the field's flat uid
 * (process-unique), so a field dropped meanwhile is never touched: its job is
 * dropped at step 1 or 3. Closing the database cancels a running build
 * between its batches (graph_params_t.cancel) and joins the thread.
 * The thread also runs partition layout rebuilds (db_layout_submit; the
 * same three steps in db/layout.c db_layout_job_run). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "db.h"
#include "db/search_int.h"

typedef struct db_job {
	uint32_t ix_id, field;
	uint64_t uid;
	float *Q; /* OOD training queries (owned) or NULL */
	size_t m;
	bool retrain;
	bool layout; /* a partition layout rebuild (db_layout_job_run) */
	struct db_job *next;
} db_job_t;

struct db_builder {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;      /* a job arrived, or stop */
	pthread_cond_t idle_cv; /* the queue emptied and nothing runs */
	db_job_t *head, *tail;
	bool running; /* a job is being worked on */
	bool stop;
	atomic_bool cancel; /* read by graph_build between batches */
};

/* The field a job names, or NULL when it was dropped (any lock held). */
static db_field_t *job_field(vela_db_t *db, const db_job_t *j, db_index_t **ix_out)
{
	for (size_t i = 0; i < db->n_indexes; i++) {
		db_index_t *ix = db->indexes[i];
		if (ix->id != j->ix_id || j->field >= ix->n_fields)
			continue;
		db_field_t *f = &ix->fields[j->field];
		if (f->flat && db_field_uid(f) == j->uid) {
			if (ix_out)
				*ix_out = ix;
			return f;
		}
	}
	return NULL;
}

/* Step 1: the copy (db->lock shared). */
static int job_copy(vela_db_t *db, const db_job_t *j, db_vec_build_t *b)
{
	pthread_rwlock_rdlock(&db->lock);
	db_index_t *ix = NULL;
	db_field_t *f = job_field(db, j, &ix);
	int rc = f ? VELA_OK : VELA_ENOTFOUND;
	if (rc == 0)
		rc = db_vec_build_init(db, ix, j->field, b);
	if (rc == 0)
		rc = db_vec_build_copy(f, b);
	if (rc == 0 && f->dirty == NULL && (f->dirty = roaring_bitmap_create()) == NULL)
		rc = VELA_ENOMEM;
	pthread_rwlock_unlock(&db->lock);
	return rc;
}

/* Step 2b: replay the writes made during the build in rounds holding only
 * write_mu (writers wait for a round's copy, searches never do), so that
 * the install, which holds the exclusive lock and so stops searches too,
 * replays only the last few (a build that overlapped a bulk load found
 * tens of thousands waiting: seconds of stalled searches). */
static int job_catch_up(vela_db_t *db, const db_job_t *j, db_vec_build_t *b)
{
	int rc = VELA_OK;
	uint64_t left = DB_BUILD_CATCHUP_LEFT;
	for (uint32_t r = 0; rc == 0 && left >= DB_BUILD_CATCHUP_LEFT &&
			     r < DB_BUILD_CATCHUP_ROUNDS_MAX; r++) {
		db_vec_batch_t bt;
		pthread_mutex_lock(&db->write_mu);
		db_field_t *f = job_field(db, j, NULL);
		rc = f ? db_vec_build_take(f, b, &bt, &left) : VELA_ENOTFOUND;
		pthread_mutex_unlock(&db->write_mu);
		if (rc == 0 && bt.n)
			rc = db_vec_build_apply(b, &bt);
	}
	return rc;
}

/* Step 3: install (write_mu, then db->lock exclusive). */
static int job_install(vela_db_t *db, const db_job_t *j, db_vec_build_t *b, int rc)
{
	pthread_mutex_lock(&db->write_mu);
	pthread_rwlock_wrlock(&db->lock);
	db_field_t *f = job_field(db, j, NULL);
	if (f == NULL) {
		rc = VELA_ENOTFOUND; /* dropped meanwhile: nothing to undo */
	} else {
		if (rc == 0)
			rc = db_vec_build_install(f, b);
		if (f->dirty)
			roaring_bitmap_free(f->dirty);
		f->dirty = NULL;
		f->build_queued = false;
		f->build_failed = rc != 0;
	}
	pthread_rwlock_unlock(&db->lock);
	pthread_mutex_unlock(&db->write_mu);
	return rc;
}

static void job_run(vela_db_t *db, db_builder_t *bd, db_job_t *j)
{
	db_vec_build_t b;
	memset(&b, 0, sizeof(b));
	b.cancel = &bd->cancel;
	b.Q = j->Q;
	b.m = j->m;
	uint64_t t0 = vela_now_ns();
	int rc = job_copy(db, j, &b);
	if (rc == VELA_ENOTFOUND) {
		db_vec_build_free(&b);
		return;
	}
	if (rc == 0)
		rc = db_vec_build_run(&b);
	if (rc == 0)
		rc = job_catch_up(db, j, &b);
	rc = job_install(db, j, &b, rc);
	if (rc == 0)
		db_vec_build_keep_queries(&b);
	if (rc == VELA_EBUSY && atomic_load(&bd->cancel))
		vela_info("field '%s': graph build cancelled (closing): it is built again at the "
			  "next open", b.alias);
	else if (rc == 0)
		vela_info("field '%s': graph over %llu vectors %s in the background in %.2f s "
			  "(%zu writes caught up, %zu replayed at install)", b.alias,
			  (unsigned long long)b.n, j->retrain ? "retrained and rebuilt" : "built",
			  (double)(vela_now_ns() - t0) / 1e9, b.caught_up, b.replayed);
	else if (rc != VELA_ENOTFOUND)
		vela_error("field '%s': background graph build failed (%s); %s", b.alias,
			   vela_strerror(rc), j->retrain ? "the old graph stays" : "searching exactly");
	db_vec_build_free(&b);
#ifdef __GLIBC__
	/* The build's copies and, for a compressed field, its F32 rows were
	 * just freed: hand the pages back to the system (glibc keeps freed
	 * heap otherwise, and RSS would not show what the field gave up). */
	malloc_trim(0);
#endif
}

static void *builder_main(void *arg)
{
	vela_db_t *db = arg;
	db_builder_t *bd = db->builder;
	pthread_mutex_lock(&bd->mu);
	for (;;) {
		while (!bd->stop && bd->head == NULL)
			pthread_cond_wait(&bd->cv, &bd->mu);
		if (bd->stop)
			break;
		db_job_t *j = bd->head;
		bd->head = j->next;
		if (bd->head == NULL)
			bd->tail = NULL;
		bd->running = true;
		pthread_mutex_unlock(&bd->mu);
		if (j->layout)
			db_layout_job_run(db, j->ix_id, j->field, j->uid);
		else
			job_run(db, bd, j);
		free(j->Q);
		free(j);
		pthread_mutex_lock(&bd->mu);
		bd->running = false;
		if (bd->head == NULL)
			pthread_cond_broadcast(&bd->idle_cv);
	}
	pthread_mutex_unlock(&bd->mu);
	return NULL;
}

int db_builder_start(vela_db_t *db)
{
	db_builder_t *bd = calloc(1, sizeof(*bd));
	if (bd == NULL)
		return VELA_ENOMEM;
	pthread_mutex_init(&bd->mu, NULL);
	pthread_cond_init(&bd->cv, NULL);
	pthread_cond_init(&bd->idle_cv, NULL);
	atomic_init(&bd->cancel, false);
	db->builder = bd;
	if (pthread_create(&bd->thread, NULL, builder_main, db) != 0) {
		db->builder = NULL;
		pthread_cond_destroy(&bd->idle_cv);
		pthread_cond_destroy(&bd->cv);
		pthread_mutex_destroy(&bd->mu);
		free(bd);
		return VELA_ENOMEM;
	}
	return VELA_OK;
}

void db_builder_stop(vela_db_t *db)
{
	db_builder_t *bd = db->builder;
	if (bd == NULL)
		return;
	pthread_mutex_lock(&bd->mu);
	bd->stop = true;
	atomic_store(&bd->cancel, true);
	pthread_cond_broadcast(&bd->cv);
	pthread_mutex_unlock(&bd->mu);
	pthread_join(bd->thread, NULL);
	for (db_job_t *j = bd->head, *n; j; j = n) {
		n = j->next;
		if (!j->layout)
			vela_info("index id %u field %u: queued graph build cancelled (closing): "
				  "it is built again at the next open", j->ix_id, j->field);
		free(j->Q);
		free(j);
	}
	pthread_cond_destroy(&bd->idle_cv);
	pthread_cond_destroy(&bd->cv);
	pthread_mutex_destroy(&bd->mu);
	free(bd);
	db->builder = NULL;
}

/* Append j to the builder's FIFO and wake the thread. */
static void job_enqueue(db_builder_t *bd, db_job_t *j)
{
	pthread_mutex_lock(&bd->mu);
	if (bd->tail)
		bd->tail->next = j;
	else
		bd->head = j;
	bd->tail = j;
	pthread_cond_signal(&bd->cv);
	pthread_mutex_unlock(&bd->mu);
}

int db_build_submit(vela_db_t *db, const db_index_t *ix, uint32_t field, float *Q, size_t m,
		    bool retrain)
{
	db_builder_t *bd = db->builder;
	db_job_t *j = bd ? calloc(1, sizeof(*j)) : NULL;
	if (j == NULL) {
		free(Q);
		return bd ? VELA_ENOMEM : VELA_EINVAL;
	}
	db_field_t *f = &ix->fields[field];
	*j = (db_job_t){ix->id, field, db_field_uid(f), Q, m, retrain, false, NULL};
	f->build_queued = true;
	job_enqueue(bd, j);
	return VELA_OK;
}

int db_layout_submit(vela_db_t *db, const db_index_t *ix, uint32_t field)
{
	db_builder_t *bd = db->builder;
	db_job_t *j = bd ? calloc(1, sizeof(*j)) : NULL;
	if (j == NULL)
		return bd ? VELA_ENOMEM : VELA_EINVAL;
	j->ix_id = ix->id; /* calloc'd: the rest zero */
	j->field = field;
	j->uid = db_field_uid(&ix->fields[field]);
	j->layout = true;
	job_enqueue(bd, j);
	return VELA_OK;
}

int vela_db_wait_builds(vela_db_t *db, uint64_t timeout_ms)
{
	db_builder_t *bd = db ? db->builder : NULL;
	if (bd == NULL)
		return VELA_OK;
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	uint64_t ns = (uint64_t)until.tv_nsec + (timeout_ms % 1000) * 1000000ull;
	until.tv_sec += (time_t)(timeout_ms / 1000 + ns / 1000000000ull);
	until.tv_nsec = (long)(ns % 1000000000ull);
	int rc = VELA_OK;
	pthread_mutex_lock(&bd->mu);
	while (rc == 0 && (bd->head || bd->running))
		if (timeout_ms == 0)
			pthread_cond_wait(&bd->idle_cv, &bd->mu);
		else if (pthread_cond_timedwait(&bd->idle_cv, &bd->mu, &until) != 0)
			rc = (bd->head || bd->running) ? VELA_EBUSY : VELA_OK;
	pthread_mutex_unlock(&bd->mu);
	return rc;
}

bool vela_db_builds_pending(vela_db_t *db)
{
	db_builder_t *bd = db ? db->builder : NULL;
	if (bd == NULL)
		return false;
	pthread_mutex_lock(&bd->mu);
	bool busy = bd->head || bd->running;
	pthread_mutex_unlock(&bd->mu);
	return busy;
}
