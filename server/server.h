/**
 * @file server.h
 * @brief velad: the Redis-protocol server over the vela engine.
 *
 * Threads (DESIGN §8):
 *  - the event loop (libevent) accepts, reads, parses (resp.h), runs cheap
 *    commands inline and writes replies in request order;
 *  - one writer thread owns writes: all write commands queued while the
 *    previous commit was in flight run in one vela_batch (group commit); a
 *    write's reply is sent only after the commit that holds it;
 *  - a pool of search workers answers FT.SEARCH; queries queued together are
 *    run through vela_search_batch (one GEMM per vector field).
 *
 * Ordering: a client's commands run in order. Consecutive writes of one
 * client join the same group commit and consecutive searches the same batch;
 * any other command waits until the client's queued jobs are done (so a read
 * after a write sees it).
 */
#ifndef VELA_SERVER_H
#define VELA_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server/resp.h"
#include "vela/vela.h"

#define VELA_SERVER_VERSION "0.1.0"
/** What INFO and HELLO report, so clients that gate on versions work (reference §1.7). */
#define VELA_REDIS_COMPAT_VERSION "8.2.0"
#define VELA_SEARCH_MODULE_VERSION 80200

/* ------------------------------------------------------------ configuration */

#define SRV_PORT_DEFAULT 6380
#define SRV_MAXCLIENTS_DEFAULT 10000u
#define SRV_MAXCLIENTS_MIN 1u
#define SRV_MAXCLIENTS_MAX 1000000u
#define SRV_QBUF_LIMIT_DEFAULT (1ull << 30)  /* client-query-buffer-limit */
#define SRV_QBUF_LIMIT_MIN (1ull << 20)
#define SRV_QBUF_LIMIT_MAX (1ull << 40)
#define SRV_QBUF_UNAUTH_LIMIT (1u << 20)     /* before AUTH */
/* client-output-buffer-limit normal <hard> <soft> <seconds> (as Redis): a
 * client leaving more than <hard> bytes of replies unread is closed at once,
 * one above <soft> for more than <seconds> in a row too. 0 = no such limit. */
#define SRV_OBUF_LIMIT_DEFAULT (256ull << 20) /* hard */
#define SRV_OBUF_LIMIT_MIN (64ull << 10)
#define SRV_OBUF_LIMIT_MAX (1ull << 40)
#define SRV_OBUF_SOFT_DEFAULT (64ull << 20)
#define SRV_OBUF_SOFT_SECONDS_DEFAULT 60u
#define SRV_OBUF_SOFT_SECONDS_MIN 0u
#define SRV_OBUF_SOFT_SECONDS_MAX 86400u
/* File descriptors kept beyond maxclients (LMDB, snapshots, logs, backups),
 * as Redis's CONFIG_MIN_RESERVED_FDS. */
#define SRV_RESERVED_FDS 32u
#define SRV_WORKERS_DEFAULT 0u /* 0 = one per CPU */
#define SRV_WORKERS_MAX 256u
#define SRV_USERS_MAX 64u
#define SRV_EXPIRE_CYCLE_MS 100u
#define SRV_EXPIRE_CYCLE_KEYS 1000u
/* In-process embeddings (server/embedq.c): models are directories under
 * `model-dir` (relative to the working directory), loaded on first use. */
#define SRV_MODEL_DIR_DEFAULT "models"
/* Tokens per encoder batch: requests are packed until the next one would
 * pass it (TEI's max_batch_tokens; reference/embeddings §3.4). */
#define SRV_EMBED_BATCH_TOKENS_DEFAULT 16384u
#define SRV_EMBED_BATCH_TOKENS_MIN 512u
#define SRV_EMBED_BATCH_TOKENS_MAX 262144u
/* Threads one encoder batch uses (0 = one per CPU). */
#define SRV_EMBED_THREADS_DEFAULT 0u
#define SRV_EMBED_THREADS_MAX 64u
/* Requests queued for the encoder before EMBED/HSET get -BUSY (backpressure). */
#define SRV_EMBED_QUEUE_MAX 4096u

/** Where SAVE and BGSAVE write without a path argument (relative to `dir`). */
#define SRV_BACKUP_DIR_DEFAULT "backup"

/** An ACL user (config `user` lines, ACL SETUSER). */
typedef struct srv_user {
	char *name;
	char *pass;    /**< NULL = nopass */
	bool enabled;
	bool readonly; /**< +@read only: writes get -NOPERM */
} srv_user_t;

typedef struct srv_config {
	char *bind;       /**< "127.0.0.1" */
	int port;
	char *dir;        /**< database directory */
	bool protected_mode;
	uint32_t maxclients;
	uint64_t proto_max_bulk_len;
	uint32_t max_args;
	uint64_t query_buf_limit;
	uint64_t output_buf_limit; /**< hard limit (0 = none) */
	uint64_t output_buf_soft;  /**< soft limit (0 = none) */
	uint32_t output_buf_soft_s;
	char *backup_dir;          /**< SAVE/BGSAVE without a path; relative to `dir` */
	int tls_port;              /**< 0: no TLS listener */
	char *tls_cert_file, *tls_key_file; /**< PEM: certificate (chain) and private key */
	uint32_t workers;
	char *model_dir;             /**< embedding models (model-dir) */
	uint32_t embed_batch_tokens; /**< embed-batch-tokens */
	uint32_t embed_threads;      /**< embed-threads (0 = one per CPU) */
	int embed_device;            /**< embed-device auto|cpu|gpu (embed_device_t, embed.h):
					  where text models run; read when a model loads */
	size_t map_size;  /**< LMDB map size (0 = engine default) */
	bool nosync;      /**< appendfsync everysec semantics */
	bool build_foreground; /**< index-build foreground: writes build graphs inline */
	int log_level;
	vela_gpu_mode_t gpu_mode; /**< `gpu no|yes|auto`: the process's compute backend */
	srv_user_t users[SRV_USERS_MAX]; /**< users[0] is "default" (requirepass) */
	uint32_t n_users;
} srv_config_t;

/** Defaults (the caller frees with srv_config_free). */
void srv_config_init(srv_config_t *c);
void srv_config_free(srv_config_t *c);
/** Apply one `name value...` directive (config file line or --name value). */
int srv_config_set(srv_config_t *c, int argc, const char *const *argv, vela_err_t *err);
/** Read a redis.conf-style file: one directive per line, # comments, quoted values. */
int srv_config_load_file(srv_config_t *c, const char *path, vela_err_t *err);
/** Parse argv: `velad [config-file] [--name value ...]`. */
int srv_config_from_args(srv_config_t *c, int argc, char **argv, vela_err_t *err);
/** Create or change an ACL user (`user name rules...`). */
int srv_user_set(srv_config_t *c, const char *name, int argc, const char *const *argv,
		 vela_err_t *err);


/* ------------------------------------------------------------ running */

typedef struct srv srv_t;

/**
 * @brief Open the database, bind, start threads. Takes ownership of the
 * strings in `cfg` (do not srv_config_free it). On failure *out may still
 * be set: pass it to srv_destroy.
 */
int srv_create(const srv_config_t *cfg, srv_t **out, vela_err_t *err);
/** Run the event loop until SIGTERM/SIGINT or srv_stop; then shut down gracefully. */
int srv_run(srv_t *s);
/** Ask the loop to stop (thread-safe, async-signal-safe). */
void srv_stop(srv_t *s);
/** Free everything (after srv_run returned). */
void srv_destroy(srv_t *s);
/** The bound TCP port (useful with port 0). */
int srv_port(const srv_t *s);

#endif
