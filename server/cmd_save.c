/* SAVE, BGSAVE and LASTSAVE: consistent compacted copies of the database
 * (vela_db_backup, an LMDB hot copy) into `backup-dir` or a path argument.
 *
 *   SAVE [path]     on the writer thread: writes wait until the copy is
 *                   done (reads and searches do not); replies +OK
 *   BGSAVE [path]   on a thread of its own; replies at once; LASTSAVE and
 *                   INFO persistence (rdb_bgsave_in_progress,
 *                   rdb_last_bgsave_status) tell when it is done
 *   LASTSAVE        unix time of the last successful save (start-up time
 *                   before the first)
 *
 * A relative path is taken under `dir`. One save at a time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/srv_int.h"

void cmd_save(cmd_ctx_t *x), cmd_bgsave(cmd_ctx_t *x), cmd_lastsave(cmd_ctx_t *x);

void save_init(srv_t *s)
{
	pthread_mutex_init(&s->save.mu, NULL);
	s->save.last_save_unix = (int64_t)time(NULL);
	s->save.last_bg_secs = -1;
}

/* The destination: the argument, else backup-dir; relative ones under dir.
 * NULL (with the reply written) when the argument is unusable. */
static char *save_path(cmd_ctx_t *x, const resp_arg_t *arg)
{
	srv_t *s = x->srv;
	char *p;
	if (arg) {
		if (arg->len == 0 || memchr(arg->p, '\0', arg->len)) {
			resp_error(x->out, "ERR invalid backup path");
			return NULL;
		}
		p = arg_dup(arg);
	} else {
		pthread_mutex_lock(&s->cfg_mu);
		p = strdup(s->cfg.backup_dir);
		pthread_mutex_unlock(&s->cfg_mu);
	}
	if (p == NULL || p[0] == '/') {
		if (p == NULL)
			resp_error(x->out, "OOM cannot save");
		return p;
	}
	size_t n = strlen(s->cfg.dir) + strlen(p) + 2;
	char *full = malloc(n);
	if (full)
		snprintf(full, n, "%s/%s", s->cfg.dir, p);
	else
		resp_error(x->out, "OOM cannot save");
	free(p);
	return full;
}

/* Claim the one save slot; false (reply written) when a save is running. */
static bool save_claim(cmd_ctx_t *x)
{
	srv_save_t *v = &x->srv->save;
	pthread_mutex_lock(&v->mu);
	bool busy = v->busy;
	if (!busy) {
		v->busy = true;
		v->dirty_at_start = atomic_load(&x->srv->stat_dirty);
	}
	pthread_mutex_unlock(&v->mu);
	if (busy)
		resp_error(x->out, "ERR Background save already in progress");
	return !busy;
}

/* Record the end of a save (under mu). */
static void save_done_locked(srv_t *s, int rc)
{
	srv_save_t *v = &s->save;
	v->busy = false;
	if (rc == 0) {
		v->last_save_unix = (int64_t)time(NULL);
		v->dirty_saved = v->dirty_at_start;
		v->saves++;
	}
}

/* SAVE [path]: CMD_ALONE, so it runs on the writer between group commits. */
void cmd_save(cmd_ctx_t *x)
{
	if (x->argc > 2) {
		resp_error(x->out, "ERR syntax error");
		return;
	}
	char *path = save_path(x, x->argc == 2 ? &x->argv[1] : NULL);
	if (path == NULL || !save_claim(x)) {
		free(path);
		return;
	}
	vela_err_t err = {0};
	uint64_t t0 = vela_now_ns();
	int rc = vela_db_backup(x->db, path, &err);
	pthread_mutex_lock(&x->srv->save.mu);
	save_done_locked(x->srv, rc);
	pthread_mutex_unlock(&x->srv->save.mu);
	if (rc) {
		vela_warn("SAVE to %s failed: %s", path, err.msg);
		resp_errorf(x->out, "ERR %s", err.msg[0] ? err.msg : vela_strerror(rc));
	} else {
		vela_info("SAVE: database copied to %s in %.3f s", path,
			  (double)(vela_now_ns() - t0) / 1e9);
		resp_simple(x->out, "OK");
	}
	free(path);
}

static void *bgsave_main(void *arg)
{
	srv_t *s = arg;
	srv_save_t *v = &s->save;
	vela_err_t err = {0};
	uint64_t t0 = vela_now_ns();
	int rc = vela_db_backup(s->db, v->bg_path, &err);
	double secs = (double)(vela_now_ns() - t0) / 1e9;
	if (rc)
		vela_warn("BGSAVE to %s failed: %s", v->bg_path, err.msg);
	else
		vela_info("BGSAVE: database copied to %s in %.3f s", v->bg_path, secs);
	pthread_mutex_lock(&v->mu);
	save_done_locked(s, rc);
	v->last_bg_status = rc;
	v->last_bg_secs = (int64_t)(secs + 0.5);
	v->bg_running = false;
	pthread_mutex_unlock(&v->mu);
	return NULL;
}

void save_reap(srv_t *s)
{
	srv_save_t *v = &s->save;
	pthread_mutex_lock(&v->mu);
	bool join = v->bg_joinable && !v->bg_running;
	if (join)
		v->bg_joinable = false;
	pthread_mutex_unlock(&v->mu);
	if (join)
		pthread_join(v->thread, NULL); /* it has finished: returns at once */
}

void save_stop(srv_t *s)
{
	srv_save_t *v = &s->save;
	pthread_mutex_lock(&v->mu);
	bool join = v->bg_joinable;
	v->bg_joinable = false;
	pthread_mutex_unlock(&v->mu);
	if (join)
		pthread_join(v->thread, NULL);
}

void save_free(srv_t *s)
{
	save_stop(s);
	free(s->save.bg_path);
	s->save.bg_path = NULL;
	pthread_mutex_destroy(&s->save.mu);
}

/* BGSAVE [SCHEDULE | path]: on the loop; the copy runs on its own thread. */
void cmd_bgsave(cmd_ctx_t *x)
{
	srv_t *s = x->srv;
	if (x->argc > 2) {
		resp_error(x->out, "ERR syntax error");
		return;
	}
	const resp_arg_t *arg = x->argc == 2 && !arg_eq(&x->argv[1], "SCHEDULE") ? &x->argv[1]
										   : NULL;
	save_reap(s);
	char *path = save_path(x, arg);
	if (path == NULL || !save_claim(x)) {
		free(path);
		return;
	}
	srv_save_t *v = &s->save;
	pthread_mutex_lock(&v->mu);
	free(v->bg_path);
	v->bg_path = path;
	v->bg_start_ms = vela_now_ns() / 1000000;
	v->bg_running = true;
	bool ok = pthread_create(&v->thread, NULL, bgsave_main, s) == 0;
	v->bg_joinable = ok;
	if (!ok) {
		v->bg_running = false;
		save_done_locked(s, VELA_ENOMEM);
	}
	pthread_mutex_unlock(&v->mu);
	if (ok)
		resp_simple(x->out, "Background saving started");
	else
		resp_error(x->out, "ERR cannot start the background save thread");
}

void cmd_lastsave(cmd_ctx_t *x)
{
	pthread_mutex_lock(&x->srv->save.mu);
	int64_t t = x->srv->save.last_save_unix;
	pthread_mutex_unlock(&x->srv->save.mu);
	resp_int(x->out, t);
}
