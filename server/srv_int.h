/* Private to server/: the server, client, command table and job types. */
#ifndef VELA_SRV_INT_H
#define VELA_SRV_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "common/common.h"
#include "server/server.h"

typedef struct srv_client srv_client_t;
typedef struct srv_job srv_job_t;
typedef struct cmd_ctx cmd_ctx_t;

/* ------------------------------------------------------------ commands */

/** Command flags (DESIGN §8): where a command runs and who may run it. */
enum cmd_flag {
	CMD_WRITE = 1u << 0,    /**< runs on the writer thread inside the group commit */
	CMD_ALONE = 1u << 1,    /**< with CMD_WRITE: runs on the writer outside any batch */
	CMD_SEARCH = 1u << 2,   /**< runs on a search worker */
	CMD_NOAUTH = 1u << 3,   /**< allowed before AUTH */
	CMD_NOMULTI = 1u << 4,  /**< not queued by MULTI (MULTI, EXEC, DISCARD, ...) */
	CMD_ADMIN = 1u << 5,    /**< needs a full (not read-only) user */
	CMD_CSTR = 1u << 6,     /**< the handler reads arguments as C strings (copied first) */
	CMD_VIEW = 1u << 7,     /**< a read that may share the loop's read view (srv_view) */
	CMD_EMBED = 1u << 8,    /**< goes through the encoder stage first (embedq.c) */
};

typedef void (*cmd_fn)(cmd_ctx_t *x);

typedef struct srv_command {
	const char *name; /**< lowercase */
	int arity;        /**< Redis convention: n exact, -n at least n (name included) */
	unsigned flags;
	cmd_fn fn;
} srv_command_t;

/** Find a command (case-insensitive); NULL if unknown. */
const srv_command_t *cmd_lookup(const char *name, size_t len);
/** All commands (for COMMAND COUNT). */
size_t cmd_count(void);

/** What a handler sees. Handlers write exactly one reply to `out`. */
struct cmd_ctx {
	srv_t *srv;
	vela_db_t *db;
	int argc;
	resp_arg_t *argv;
	resp_out_t *out;
	srv_client_t *c;   /**< only on the loop thread (NULL on other threads) */
	int proto;         /**< the client's protocol (2 or 3) */
	vela_batch_t *batch; /**< CMD_WRITE without CMD_ALONE: the open batch */
};

/* ------------------------------------------------------------ jobs */

/** A command sent to the writer or a search worker; its reply comes back. */
struct srv_job {
	srv_job_t *next;      /**< queue link */
	srv_job_t *cnext;     /**< the client's pending list */
	srv_client_t *c;      /**< NULL for internal jobs (expiry) */
	const srv_command_t *cmd;
	int argc;
	resp_arg_t *argv;     /**< copies, owned by the job (one allocation with the bytes) */
	resp_out_t out;
	int multi;            /**< EXEC: argv/cmd arrays of the queued commands */
	srv_job_t *multi_cmds;
	int done;
	void *argv_own;       /**< argv rewritten by the encoder stage (owned), or NULL */
	bool backfill;        /**< internal (c NULL): an encoder back-fill write, not expiry */
};

srv_job_t *job_new(srv_client_t *c, const srv_command_t *cmd, int argc, const resp_arg_t *argv,
		   int proto);
void job_free(srv_job_t *j);

/* ------------------------------------------------------------ clients */

struct srv_client {
	srv_t *srv;
	uint64_t id;
	evutil_socket_t fd;
	struct event *rev, *wev; /**< readable (persistent); writable (armed on a short write) */
	bool wev_armed;
	/* replies not yet written to the socket: obuf[opos..olen) */
	char *obuf;
	size_t olen, ocap, opos;
	bool done_mark;            /**< in exec_collect_done's list of clients to flush */
	srv_client_t *done_next;
	char addr[64];
	char laddr[64]; /**< the local end (CLIENT LIST laddr=) */
	char *name;
	char *lib_name, *lib_ver;
	int proto;
	bool authed;
	const srv_user_t *user;
	/* query buffer */
	char *qbuf;
	size_t qlen, qcap;
	resp_parser_t parser;
	resp_out_t reply; /**< reused buffer for inline replies (SRV_REPLY_KEEP bytes kept) */
	/* commands waiting for their replies, in request order */
	srv_job_t *pend_head, *pend_tail;
	unsigned pend_kind; /**< CMD_WRITE or CMD_SEARCH while pend_head != NULL */
	bool paused;        /**< a command is waiting for pend to drain */
	bool closing;       /**< close once the output is flushed */
	bool gone;          /**< socket closed */
	bool detached;      /**< no loop callback refers to it: free when no job does */
	/* MULTI */
	bool in_multi, multi_err;
	srv_job_t *mq_head, *mq_tail;
	size_t mq_n;
	struct bufferevent *bev; /**< TLS clients: the OpenSSL bufferevent (rev/wev unused) */
	srv_client_t *prev, *next;
	uint64_t created_ms;
	uint64_t last_ms;          /**< last command (CLIENT LIST idle=) */
	const char *last_cmd;      /**< its name (static), or NULL */
	uint64_t obuf_soft_since_ms; /**< output above the soft limit since (0: not above) */
};

/** Capacity of a client's reply buffer kept between commands. */
#define SRV_REPLY_KEEP 65536u
/** Capacity of a client's output buffer kept once it drained (bigger ones are freed). */
#define SRV_OBUF_KEEP (1u << 20)

/* ------------------------------------------------------------ the server */

typedef struct job_queue {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	srv_job_t *head, *tail;
	size_t n;
} job_queue_t;

/** SAVE / BGSAVE state (cmd_save.c), under `mu`. */
typedef struct srv_save {
	pthread_mutex_t mu;
	pthread_t thread;
	bool busy;          /**< a SAVE or BGSAVE is writing */
	bool bg_running;    /**< the BGSAVE thread has not finished */
	bool bg_joinable;   /**< a BGSAVE thread to join (finished or not) */
	char *bg_path;      /**< its destination (owned) */
	uint64_t bg_start_ms;
	uint64_t dirty_at_start;
	uint64_t dirty_saved;  /**< stat_dirty when the last successful save began */
	int64_t last_save_unix; /**< LASTSAVE: end of the last successful save (start-up time at first) */
	int last_bg_status;     /**< 0, or the error of the last BGSAVE */
	int64_t last_bg_secs;   /**< -1 before the first BGSAVE */
	uint64_t saves;         /**< successful saves */
} srv_save_t;

/** Samples of the commands/s rate (INFO instantaneous_ops_per_sec), as Redis. */
#define SRV_OPS_SAMPLES 16u

struct srv {
	srv_config_t cfg;
	vela_db_t *db;
	struct event_base *base;
	struct evconnlistener *listener;
	struct evconnlistener *tls_listener; /**< tls-port (tls.c) */
	void *ssl_ctx;                       /**< its SSL_CTX */
	int tls_port;                        /**< bound TLS port (0: none) */
	struct event *sig_int, *sig_term, *done_ev, *expire_ev;
	int port;
	/* clients */
	srv_client_t *clients;
	uint32_t n_clients;
	uint64_t next_client_id;
	/* threads */
	job_queue_t writeq, searchq, doneq;
	/* Search jobs parsed from one client's input in this loop turn: pushed
	 * to searchq together when the input is consumed, so a pipeline of
	 * FT.SEARCH reaches a worker as one vela_search_batch (loop thread only). */
	srv_job_t *turn_head, *turn_tail;
	size_t turn_n;
	pthread_t writer;
	pthread_t syncer; /**< appendfsync everysec: fsyncs once a second (exec.c) */
	bool syncer_on;
	pthread_mutex_t sync_mu;
	pthread_cond_t sync_cv;
	pthread_t *workers;
	uint32_t n_workers;
	atomic_int stopping;
	vela_view_t *view; /**< loop thread: the read view shared by CMD_VIEW commands */
	bool expire_pending;
	pthread_mutex_t cfg_mu; /**< users/config read by handlers on other threads */
	/* stats */
	atomic_uint_fast64_t stat_commands, stat_conns, stat_rejected, stat_expired;
	atomic_uint_fast64_t stat_dirty; /**< write commands accepted (rdb_changes_since_last_save) */
	uint64_t stat_obuf_closed, stat_qbuf_closed; /**< loop thread */
	uint64_t ops_last, ops_last_ms, ops_samples[SRV_OPS_SAMPLES];
	unsigned ops_idx, cron_ticks;
	uint64_t mem_peak;
	srv_save_t save;
	struct srv_embed *embed; /**< the encoder stage (embedq.c) */
	uint64_t start_ms;
	bool gpu_reported;
};

/* exec.c */
int exec_start(srv_t *s);
void exec_stop(srv_t *s);
void jobq_push(job_queue_t *q, srv_job_t *j);
/** Append the list head..tail (n jobs, linked by next) with one wake-up. */
void jobq_push_list(job_queue_t *q, srv_job_t *head, srv_job_t *tail, size_t n);
/** Loop thread: completed jobs are ready (done_ev fired). */
void exec_collect_done(srv_t *s);

/** Loop side of a finished job: hand it back to its client (any thread). */
void exec_job_done(srv_t *s, srv_job_t *j);

/* embedq.c: the encoder stage (DESIGN §7). */
/**
 * Loop thread: does this command need vectors computed first? Returns 0
 * (no), -1 (refused: the reply is in `o`), or its kind, CMD_EMBED plus the
 * command's CMD_WRITE/CMD_SEARCH, with *req set (pass it to embedq_submit,
 * or free it with embedq_req_free).
 */
int embedq_route(srv_t *s, const srv_command_t *cmd, int argc, const resp_arg_t *argv,
		 void **req, resp_out_t *o);
/** Queue job `j` (whose argv the request indexes) for the encoder; takes `req`. */
void embedq_submit(srv_t *s, srv_job_t *j, void *req);
void embedq_req_free(void *req);
/** The queue holds SRV_EMBED_QUEUE_MAX requests (answer -BUSY). */
bool embedq_full(srv_t *s);
int embedq_start(srv_t *s);
/** Finish or forward every queued request, then stop the threads (before the writer stops). */
void embedq_stop(srv_t *s);
void embedq_free(srv_t *s);
/** Compute the missing vectors of index `name`'s existing documents in the
 * background (FT.CREATE with MODEL; every such index at start). */
void embedq_backfill(srv_t *s, const char *name);
/** Output dimension of a loaded model, 0 if it is not loaded. */
uint32_t embedq_model_dim(srv_t *s, const char *name);

#define SRV_EMBED_STATS_MODELS 16u
/** INFO embed. */
typedef struct srv_embed_stats {
	uint64_t requests, texts, tokens, batches, failures, compute_ns, queued;
	uint64_t backfill_queued, backfill_tasks;
	const char *device; /**< embed-device: "auto", "cpu" or "gpu" */
	uint32_t n_models;
	struct {
		char name[VELA_MODEL_NAME_MAX + 1];
		uint32_t dim;
		uint64_t texts;
		const char *kernel;
		const char *device; /**< "gpu" or "cpu": where its batches run now */
		char gpu[128];      /**< the GPU's name while on it, else "" */
	} models[SRV_EMBED_STATS_MODELS];
} srv_embed_stats_t;
void embedq_stats(srv_t *s, srv_embed_stats_t *st);

/* cmd_ft.c */
/**
 * FT.SEARCH's `EMBED param` option: 0 none; 1 found (*opt its argv index,
 * *key and *val those of the parameter's name and value in PARAMS); -1 the
 * parameter is not in PARAMS. Arguments that do not parse count as none.
 */
int ft_search_embed_args(int argc, const resp_arg_t *argv, int *opt, int *key, int *val);

/* cmd_save.c */
void save_init(srv_t *s);
/** Loop thread, from the cron: join a finished BGSAVE thread. */
void save_reap(srv_t *s);
/** At shutdown: wait for a running BGSAVE (idempotent). */
void save_stop(srv_t *s);
/** save_stop, then free the state. */
void save_free(srv_t *s);

/* stats.c */
/** Bytes the allocator holds for the process (INFO used_memory). */
uint64_t srv_mem_used(void);
/** Resident set size in bytes (INFO used_memory_rss). */
uint64_t srv_mem_rss(void);
/** Commands per second over the last samples (INFO instantaneous_ops_per_sec). */
uint64_t srv_ops_per_sec(const srv_t *s);

/* tls.c: TLS on `tls-port` through libevent's OpenSSL bufferevents; without
 * VELA_HAVE_TLS (the build found no OpenSSL) tls-port is refused at start. */
int srv_tls_start(srv_t *s, vela_err_t *err);
void srv_tls_stop(srv_t *s);  /**< close the TLS listener (idempotent) */
void srv_tls_free(srv_t *s);  /**< free the SSL context */
/** Wrap c->fd in a server-side TLS bufferevent; on failure closes the fd. */
int tls_client_attach(srv_client_t *c);
/** Move pending replies into the TLS stream; close a closing client once sent. */
void tls_client_flush(srv_client_t *c);
void tls_client_close(srv_client_t *c);
void tls_client_pause_reads(srv_client_t *c);

/* net.c */
/** A connection was accepted (on the TLS port when `tls`): check the limits, make the client. */
void client_accept(srv_t *s, evutil_socket_t fd, const struct sockaddr *sa, bool tls);
/** Listen on bind:port (0: any free port); *bound gets the port. NULL on failure. */
struct evconnlistener *srv_listen_port(srv_t *s, int port, evconnlistener_cb cb, int *bound,
				       vela_err_t *err);
/** Room for SRV_READ_CHUNK more request bytes in c->qbuf. */
bool client_qbuf_reserve(srv_client_t *c);
/** n request bytes were appended to c->qbuf: check the limit, run, flush. */
void client_input(srv_client_t *c, size_t n);
/** Every reply byte left obuf: reset it (a big buffer is freed). */
void client_obuf_drained(srv_client_t *c);
/** Close the connection now (the struct is freed later, see net.c). */
void client_close(srv_client_t *c);
/** Send every reply of c that is now in order, then write them out. */
void client_job_done(srv_client_t *c);
void client_free_if_gone(srv_client_t *c);

/**
 * The loop's read view, begun on first use: consecutive CMD_VIEW commands
 * (a pipeline of GETs) share one read transaction. NULL off the loop thread
 * (x->c == NULL) or when it cannot begin: callers then read on their own.
 */
vela_view_t *srv_view(cmd_ctx_t *x);
/** End the loop's read view (before any other database call on the loop). */
void srv_view_end(srv_t *s);

/* Replies used by several command files. */
void reply_wrong_arity(resp_out_t *o, const resp_arg_t *name);
bool arg_eq(const resp_arg_t *a, const char *s); /**< case-insensitive */
int arg_int64(const resp_arg_t *a, int64_t *v);
int arg_double(const resp_arg_t *a, double *v);
/** A NUL-terminated malloc'd copy of an argument. */
char *arg_dup(const resp_arg_t *a);

/**
 * Raise RLIMIT_NOFILE so `clients` connections fit beside SRV_RESERVED_FDS
 * (as Redis does at start and on CONFIG SET maxclients). 0, or -1 with *fit
 * set to the most clients the hard limit allows.
 */
int srv_open_files_reserve(uint32_t clients, uint32_t *fit);

/* Authentication (constant-time compare). */
const srv_user_t *srv_auth_check(srv_t *s, const char *user, size_t ulen, const char *pass,
				 size_t plen);
bool srv_auth_required(srv_t *s);

/* slowlog.c: SLOWLOG (Redis semantics), process-wide, under its own mutex. */
#define SLOWLOG_SLOWER_THAN_DEFAULT 10000 /**< µs; -1 logs nothing, 0 everything */
#define SLOWLOG_SLOWER_THAN_MIN (-1)
#define SLOWLOG_SLOWER_THAN_MAX INT64_MAX
#define SLOWLOG_MAX_LEN_DEFAULT 128
#define SLOWLOG_MAX_LEN_MIN 0
#define SLOWLOG_MAX_LEN_MAX INT64_MAX
#define SLOWLOG_ARGC_MAX 32  /**< arguments kept per entry (Redis's) */
#define SLOWLOG_ARG_MAX 128  /**< bytes kept per argument (Redis's) */
/** Tunables (CONFIG / config file): 0, or VELA_EINVAL outside MIN..MAX. */
int slowlog_set_slower_than(int64_t us);
int slowlog_set_max_len(int64_t n);
int64_t slowlog_slower_than(void);
int64_t slowlog_max_len(void);
/** Run cmd's handler on x, timing it; logged (argv, c's address and name copied) unless c is NULL. */
void slowlog_run(const srv_command_t *cmd, cmd_ctx_t *x, srv_client_t *c);
/** Log each of n jobs run together (a search batch) as taking `us`. */
void slowlog_batch(srv_job_t **jobs, size_t n, uint64_t us);
/** Drop every entry (SLOWLOG RESET; at exit). */
void slowlog_free(void);
void cmd_slowlog(cmd_ctx_t *x);

#endif
