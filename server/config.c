#define _GNU_SOURCE /* FNM_CASEFOLD */
/* Configuration: defaults, redis.conf-style files, command-line flags,
 * CONFIG GET/SET and the ACL subset. */
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "embed/embed.h"
#include "server/srv_int.h"

void srv_config_init(srv_config_t *c)
{
	memset(c, 0, sizeof(*c));
	c->bind = strdup("127.0.0.1");
	c->port = SRV_PORT_DEFAULT;
	c->dir = strdup("./data");
	c->protected_mode = true;
	c->maxclients = SRV_MAXCLIENTS_DEFAULT;
	c->proto_max_bulk_len = RESP_MAX_BULK_DEFAULT;
	c->max_args = RESP_MAX_ARGS_DEFAULT;
	c->query_buf_limit = SRV_QBUF_LIMIT_DEFAULT;
	c->output_buf_limit = SRV_OBUF_LIMIT_DEFAULT;
	c->output_buf_soft = SRV_OBUF_SOFT_DEFAULT;
	c->output_buf_soft_s = SRV_OBUF_SOFT_SECONDS_DEFAULT;
	c->backup_dir = strdup(SRV_BACKUP_DIR_DEFAULT);
	c->workers = SRV_WORKERS_DEFAULT;
	c->model_dir = strdup(SRV_MODEL_DIR_DEFAULT);
	c->embed_batch_tokens = SRV_EMBED_BATCH_TOKENS_DEFAULT;
	c->embed_threads = SRV_EMBED_THREADS_DEFAULT;
	c->embed_device = EMBED_DEVICE_DEFAULT;
	c->log_level = VELA_LOG_LEVEL_DEFAULT;
	c->gpu_mode = VELA_GPU_MODE_DEFAULT;
	c->users[0] = (srv_user_t){.name = strdup("default"), .enabled = true};
	c->n_users = 1;
}

void srv_config_free(srv_config_t *c)
{
	free(c->bind);
	free(c->dir);
	free(c->backup_dir);
	free(c->model_dir);
	free(c->tls_cert_file);
	free(c->tls_key_file);
	for (uint32_t i = 0; i < c->n_users; i++) {
		free(c->users[i].name);
		free(c->users[i].pass);
	}
	memset(c, 0, sizeof(*c));
}

static int set_str(char **dst, const char *v)
{
	char *s = strdup(v);
	if (s == NULL)
		return VELA_ENOMEM;
	free(*dst);
	*dst = s;
	return VELA_OK;
}

/* Sizes as Redis writes them: 512mb, 1gb, 64k, plain bytes. */
static int parse_size(const char *v, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long n = strtoull(v, &end, 10);
	uint64_t mul = 1;
	if (end == v || errno || v[0] == '-')
		return VELA_EINVAL;
	if (strcasecmp(end, "k") == 0 || strcasecmp(end, "kb") == 0)
		mul = 1024;
	else if (strcasecmp(end, "m") == 0 || strcasecmp(end, "mb") == 0)
		mul = 1024 * 1024;
	else if (strcasecmp(end, "g") == 0 || strcasecmp(end, "gb") == 0)
		mul = 1024ull * 1024 * 1024;
	else if (*end)
		return VELA_EINVAL;
	if (n > max / mul || n * mul < min || n * mul > max)
		return VELA_EINVAL;
	*out = n * mul;
	return VELA_OK;
}

static int parse_bool(const char *v, bool *out)
{
	if (strcasecmp(v, "yes") == 0) {
		*out = true;
		return VELA_OK;
	}
	if (strcasecmp(v, "no") == 0) {
		*out = false;
		return VELA_OK;
	}
	return VELA_EINVAL;
}

static srv_user_t *user_find(srv_config_t *c, const char *name)
{
	for (uint32_t i = 0; i < c->n_users; i++)
		if (strcmp(c->users[i].name, name) == 0)
			return &c->users[i];
	return NULL;
}

/* ACL rules: on|off, >password, nopass, resetpass, +@all|allcommands (full),
 * +@read / -@write (read-only). Unknown rules are refused. */
static int user_apply(srv_user_t *u, int argc, const char *const *argv, vela_err_t *err)
{
	for (int i = 0; i < argc; i++) {
		const char *r = argv[i];
		if (strcmp(r, "on") == 0 || strcmp(r, "off") == 0) {
			u->enabled = r[1] == 'n';
		} else if (r[0] == '>') {
			if (set_str(&u->pass, r + 1))
				return VELA_ENOMEM;
		} else if (strcmp(r, "nopass") == 0 || strcmp(r, "resetpass") == 0) {
			free(u->pass);
			u->pass = NULL;
		} else if (strcmp(r, "+@all") == 0 || strcmp(r, "allcommands") == 0 ||
			   strcmp(r, "~*") == 0 || strcmp(r, "allkeys") == 0 || strcmp(r, "&*") == 0) {
			if (r[0] == '+' || (r[0] == 'a' && r[3] == 'c'))
				u->readonly = false;
		} else if (strcmp(r, "+@read") == 0 || strcmp(r, "-@write") == 0) {
			u->readonly = true;
		} else {
			return vela_err_set(err, VELA_EINVAL, "Error in ACL SETUSER modifier '%s': "
							      "unsupported rule", r);
		}
	}
	return VELA_OK;
}

int srv_user_set(srv_config_t *c, const char *name, int argc, const char *const *argv,
		 vela_err_t *err)
{
	srv_user_t *u = user_find(c, name);
	if (u == NULL) {
		if (c->n_users >= SRV_USERS_MAX)
			return vela_err_set(err, VELA_ELIMIT, "too many ACL users (max %u)", SRV_USERS_MAX);
		u = &c->users[c->n_users];
		*u = (srv_user_t){.name = strdup(name), .enabled = false};
		if (u->name == NULL)
			return VELA_ENOMEM;
		c->n_users++;
	}
	return user_apply(u, argc, argv, err);
}

typedef struct directive {
	const char *name;
	int (*set)(srv_config_t *c, const char *v);
} directive_t;

static int d_bind(srv_config_t *c, const char *v)
{
	/* "bind 127.0.0.1 -::1": the first address is used. */
	char first[256];
	snprintf(first, sizeof(first), "%s", v);
	first[strcspn(first, " ")] = '\0';
	return set_str(&c->bind, first);
}
static int d_port(srv_config_t *c, const char *v)
{
	char *e;
	long p = strtol(v, &e, 10);
	if (*e || p < 0 || p > 65535)
		return VELA_EINVAL;
	c->port = (int)p;
	return VELA_OK;
}
static int d_dir(srv_config_t *c, const char *v) { return set_str(&c->dir, v); }
static int d_protected(srv_config_t *c, const char *v) { return parse_bool(v, &c->protected_mode); }
static int d_requirepass(srv_config_t *c, const char *v)
{
	if (v[0] == '\0') {
		free(c->users[0].pass);
		c->users[0].pass = NULL;
		return VELA_OK;
	}
	return set_str(&c->users[0].pass, v);
}
static int d_maxclients(srv_config_t *c, const char *v)
{
	uint64_t n = 0;
	int rc = parse_size(v, SRV_MAXCLIENTS_MIN, SRV_MAXCLIENTS_MAX, &n);
	if (rc == 0)
		c->maxclients = (uint32_t)n;
	return rc;
}
static int d_bulk(srv_config_t *c, const char *v)
{
	return parse_size(v, RESP_MAX_BULK_MIN, RESP_MAX_BULK_MAX, &c->proto_max_bulk_len);
}
static int d_qbuf(srv_config_t *c, const char *v)
{
	return parse_size(v, SRV_QBUF_LIMIT_MIN, SRV_QBUF_LIMIT_MAX, &c->query_buf_limit);
}
/* A buffer limit: 0 (none) or MIN..MAX. */
static int parse_limit(const char *v, uint64_t *out)
{
	if (strcmp(v, "0") == 0) {
		*out = 0;
		return VELA_OK;
	}
	return parse_size(v, SRV_OBUF_LIMIT_MIN, SRV_OBUF_LIMIT_MAX, out);
}

/* `client-output-buffer-limit normal <hard> <soft> <seconds> [<class> ...]`
 * as Redis writes it (the replica and pubsub classes are accepted and have
 * no use here), or a single size: the hard limit, with no soft one. */
static int d_obuf(srv_config_t *c, const char *v)
{
	char buf[1024], *save = NULL, *tok[64];
	int n = 0;
	snprintf(buf, sizeof(buf), "%s", v);
	for (char *t = strtok_r(buf, " ", &save); t && n < 64; t = strtok_r(NULL, " ", &save))
		tok[n++] = t;
	if (n == 1) { /* the hard limit alone, as before the soft one existed */
		int rc = parse_limit(tok[0], &c->output_buf_limit);
		if (rc == 0)
			c->output_buf_soft = c->output_buf_soft_s = 0;
		return rc;
	}
	if (n == 0 || n % 4 != 0)
		return VELA_EINVAL;
	uint64_t hard = c->output_buf_limit, soft = c->output_buf_soft, secs = c->output_buf_soft_s;
	for (int i = 0; i < n; i += 4) {
		uint64_t h, s, t;
		bool normal = strcasecmp(tok[i], "normal") == 0;
		if (!normal && strcasecmp(tok[i], "replica") && strcasecmp(tok[i], "slave") &&
		    strcasecmp(tok[i], "pubsub"))
			return VELA_EINVAL;
		if (parse_limit(tok[i + 1], &h) || parse_limit(tok[i + 2], &s) ||
		    parse_size(tok[i + 3], SRV_OBUF_SOFT_SECONDS_MIN, SRV_OBUF_SOFT_SECONDS_MAX, &t))
			return VELA_EINVAL;
		if (normal) {
			hard = h;
			soft = s;
			secs = t;
		}
	}
	c->output_buf_limit = hard;
	c->output_buf_soft = soft;
	c->output_buf_soft_s = (uint32_t)secs;
	return VELA_OK;
}
static int d_tls_port(srv_config_t *c, const char *v)
{
	char *e;
	long p = strtol(v, &e, 10);
	if (*e || e == v || p < 0 || p > 65535)
		return VELA_EINVAL;
	c->tls_port = (int)p;
	return VELA_OK;
}
static int d_tls_cert(srv_config_t *c, const char *v) { return set_str(&c->tls_cert_file, v); }
static int d_tls_key(srv_config_t *c, const char *v) { return set_str(&c->tls_key_file, v); }
/* Client certificates are not asked for: only `tls-auth-clients no`. */
static int d_tls_auth(srv_config_t *c, const char *v)
{
	return strcasecmp(v, "no") == 0 ? VELA_OK : VELA_EINVAL;
}
static int d_backup_dir(srv_config_t *c, const char *v)
{
	return v[0] ? set_str(&c->backup_dir, v) : VELA_EINVAL;
}
static int d_workers(srv_config_t *c, const char *v)
{
	uint64_t n = 0;
	int rc = parse_size(v, 0, SRV_WORKERS_MAX, &n);
	if (rc == 0)
		c->workers = (uint32_t)n;
	return rc;
}
static int d_model_dir(srv_config_t *c, const char *v)
{
	return v[0] ? set_str(&c->model_dir, v) : VELA_EINVAL;
}
static int d_embed_tokens(srv_config_t *c, const char *v)
{
	uint64_t n = 0;
	int rc = parse_size(v, SRV_EMBED_BATCH_TOKENS_MIN, SRV_EMBED_BATCH_TOKENS_MAX, &n);
	if (rc == 0)
		c->embed_batch_tokens = (uint32_t)n;
	return rc;
}
static int d_embed_threads(srv_config_t *c, const char *v)
{
	uint64_t n = 0;
	int rc = parse_size(v, 0, SRV_EMBED_THREADS_MAX, &n);
	if (rc == 0)
		c->embed_threads = (uint32_t)n;
	return rc;
}
/* embed-device auto|cpu|gpu (startup only): where text models run. */
static int d_embed_device(srv_config_t *c, const char *v)
{
	embed_device_t d;
	int rc = embed_device_parse(v, &d);
	if (rc == 0)
		c->embed_device = (int)d;
	return rc;
}
static int d_mapsize(srv_config_t *c, const char *v)
{
	uint64_t n = 0;
	int rc = parse_size(v, VELA_MAP_SIZE_MIN, VELA_MAP_SIZE_MAX, &n);
	if (rc == 0)
		c->map_size = (size_t)n;
	return rc;
}
static int d_appendfsync(srv_config_t *c, const char *v)
{
	if (strcasecmp(v, "always") && strcasecmp(v, "everysec"))
		return VELA_EINVAL;
	c->nosync = strcasecmp(v, "everysec") == 0;
	return VELA_OK;
}
/* index-build background|foreground (startup only): where graphs are built. */
static int d_index_build(srv_config_t *c, const char *v)
{
	if (strcasecmp(v, "background") && strcasecmp(v, "foreground"))
		return VELA_EINVAL;
	c->build_foreground = strcasecmp(v, "foreground") == 0;
	return VELA_OK;
}
static int d_loglevel(srv_config_t *c, const char *v)
{
	if (strcasecmp(v, "verbose") == 0 || strcasecmp(v, "notice") == 0)
		v = "info";
	if (strcasecmp(v, "warning") == 0)
		v = "warn";
	return vela_log_level_parse(v, &c->log_level);
}
static int d_gpu(srv_config_t *c, const char *v) { return vela_gpu_mode_parse(v, &c->gpu_mode); }
/* A signed decimal integer (the SLOWLOG tunables; their setters check the range). */
static int parse_int64(const char *v, int64_t *out)
{
	char *e;
	errno = 0;
	long long n = strtoll(v, &e, 10);
	if (e == v || *e || errno)
		return VELA_EINVAL;
	*out = n;
	return VELA_OK;
}
static int d_slowlog_slower(srv_config_t *c, const char *v)
{
	int64_t n;
	return parse_int64(v, &n) ? VELA_EINVAL : slowlog_set_slower_than(n);
}
static int d_slowlog_len(srv_config_t *c, const char *v)
{
	int64_t n;
	return parse_int64(v, &n) ? VELA_EINVAL : slowlog_set_max_len(n);
}
static int d_ignore(srv_config_t *c, const char *v) { return VELA_OK; }

static const directive_t directives[] = {
	{"bind", d_bind},
	{"port", d_port},
	{"dir", d_dir},
	{"protected-mode", d_protected},
	{"requirepass", d_requirepass},
	{"maxclients", d_maxclients},
	{"proto-max-bulk-len", d_bulk},
	{"client-query-buffer-limit", d_qbuf},
	{"client-output-buffer-limit", d_obuf},
	{"backup-dir", d_backup_dir},
	{"workers", d_workers},
	{"model-dir", d_model_dir},
	{"embed-batch-tokens", d_embed_tokens},
	{"embed-threads", d_embed_threads},
	{"embed-device", d_embed_device},
	{"map-size", d_mapsize},
	{"appendfsync", d_appendfsync},
	{"index-build", d_index_build},
	{"loglevel", d_loglevel},
	{"gpu", d_gpu},
	{"slowlog-log-slower-than", d_slowlog_slower},
	{"slowlog-max-len", d_slowlog_len},
	{"tls-port", d_tls_port},
	{"tls-cert-file", d_tls_cert},
	{"tls-key-file", d_tls_key},
	{"tls-auth-clients", d_tls_auth},
	/* Accepted for compatibility with redis.conf files; no effect in vela. */
	{"save", d_ignore},
	{"appendonly", d_ignore},
	{"daemonize", d_ignore},
	{"timeout", d_ignore},
	{"tcp-keepalive", d_ignore},
	{"databases", d_ignore},
	{"logfile", d_ignore},
	{"maxmemory", d_ignore},
};

int srv_config_set(srv_config_t *c, int argc, const char *const *argv, vela_err_t *err)
{
	if (argc < 1)
		return vela_err_set(err, VELA_EINVAL, "empty directive");
	if (strcasecmp(argv[0], "user") == 0) {
		if (argc < 2)
			return vela_err_set(err, VELA_EINVAL, "user needs a name");
		return srv_user_set(c, argv[1], argc - 2, argv + 2, err);
	}
	for (size_t i = 0; i < sizeof(directives) / sizeof(directives[0]); i++) {
		if (strcasecmp(argv[0], directives[i].name))
			continue;
		/* Multi-word values (bind a b, save 900 1) are joined with spaces. */
		char v[1024] = "";
		for (int k = 1; k < argc; k++) {
			strncat(v, argv[k], sizeof(v) - strlen(v) - 2);
			if (k + 1 < argc)
				strcat(v, " ");
		}
		if (directives[i].set(c, v))
			return vela_err_set(err, VELA_EINVAL, "Invalid argument '%s' for CONFIG SET '%s'",
					    v, directives[i].name);
		return VELA_OK;
	}
	return vela_err_set(err, VELA_EINVAL, "Unknown option or number of arguments for CONFIG "
					      "SET - '%s'", argv[0]);
}

/* Split a config line like Redis: spaces separate, "..." and '...' quote. */
static int line_split(char *line, char **argv, int max)
{
	int n = 0;
	char *p = line;
	while (*p && n < max) {
		while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
			p++;
		if (*p == '\0' || *p == '#')
			break;
		char q = (*p == '"' || *p == '\'') ? *p++ : 0;
		argv[n++] = p;
		while (*p && (q ? *p != q : !(*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')))
			p++;
		if (q && *p != q)
			return -1;
		if (*p)
			*p++ = '\0';
	}
	return n;
}

int srv_config_load_file(srv_config_t *c, const char *path, vela_err_t *err)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return vela_err_set(err, VELA_EIO, "cannot open config file '%s': %s", path,
				    strerror(errno));
	char line[4096];
	int lineno = 0, rc = 0;
	while (rc == 0 && fgets(line, sizeof(line), f)) {
		lineno++;
		char *argv[64];
		int argc = line_split(line, argv, 64);
		if (argc < 0)
			rc = vela_err_set(err, VELA_ESYNTAX, "%s:%d: unbalanced quotes", path, lineno);
		else if (argc > 0 && (rc = srv_config_set(c, argc, (const char *const *)argv, err)))
			vela_err_set(err, rc, "%s:%d: %s", path, lineno, err ? err->msg : "");
	}
	fclose(f);
	return rc;
}

int srv_config_from_args(srv_config_t *c, int argc, char **argv, vela_err_t *err)
{
	int i = 1;
	int rc = 0;
	if (i < argc && strncmp(argv[i], "--", 2) != 0)
		rc = srv_config_load_file(c, argv[i++], err);
	while (rc == 0 && i < argc) {
		if (strncmp(argv[i], "--", 2) != 0)
			return vela_err_set(err, VELA_EINVAL, "unexpected argument '%s'", argv[i]);
		const char *d[64];
		int n = 0;
		d[n++] = argv[i++] + 2;
		while (i < argc && strncmp(argv[i], "--", 2) != 0 && n < 63)
			d[n++] = argv[i++];
		rc = srv_config_set(c, n, d, err);
	}
	return rc;
}

/* ------------------------------------------------------------ CONFIG GET/SET */

/* The value of a gettable parameter, or NULL. */
static const char *config_value(srv_t *s, const char *name, char *buf, size_t cap)
{
	srv_config_t *c = &s->cfg;
	if (strcmp(name, "bind") == 0)
		return c->bind;
	if (strcmp(name, "dir") == 0)
		return c->dir;
	if (strcmp(name, "port") == 0)
		return snprintf(buf, cap, "%d", s->port), buf;
	if (strcmp(name, "protected-mode") == 0)
		return c->protected_mode ? "yes" : "no";
	if (strcmp(name, "requirepass") == 0)
		return c->users[0].pass ? c->users[0].pass : "";
	if (strcmp(name, "maxclients") == 0)
		return snprintf(buf, cap, "%u", c->maxclients), buf;
	if (strcmp(name, "proto-max-bulk-len") == 0)
		return snprintf(buf, cap, "%llu", (unsigned long long)c->proto_max_bulk_len), buf;
	if (strcmp(name, "client-query-buffer-limit") == 0)
		return snprintf(buf, cap, "%llu", (unsigned long long)c->query_buf_limit), buf;
	if (strcmp(name, "client-output-buffer-limit") == 0)
		return snprintf(buf, cap, "normal %llu %llu %u", (unsigned long long)c->output_buf_limit,
				(unsigned long long)c->output_buf_soft, c->output_buf_soft_s),
		       buf;
	if (strcmp(name, "backup-dir") == 0)
		return c->backup_dir;
	if (strcmp(name, "model-dir") == 0)
		return c->model_dir;
	if (strcmp(name, "embed-batch-tokens") == 0)
		return snprintf(buf, cap, "%u", c->embed_batch_tokens), buf;
	if (strcmp(name, "embed-threads") == 0)
		return snprintf(buf, cap, "%u", c->embed_threads), buf;
	if (strcmp(name, "embed-device") == 0)
		return embed_device_name((embed_device_t)c->embed_device);
	if (strcmp(name, "tls-port") == 0)
		return snprintf(buf, cap, "%d", s->tls_port), buf;
	if (strcmp(name, "tls-cert-file") == 0)
		return c->tls_cert_file ? c->tls_cert_file : "";
	if (strcmp(name, "tls-key-file") == 0)
		return c->tls_key_file ? c->tls_key_file : "";
	if (strcmp(name, "tls-auth-clients") == 0)
		return "no";
	if (strcmp(name, "map-size") == 0) {
		size_t map, used;
		vela_db_map_usage(s->db, &map, &used);
		return snprintf(buf, cap, "%zu", map), buf;
	}
	if (strcmp(name, "appendfsync") == 0)
		return c->nosync ? "everysec" : "always";
	if (strcmp(name, "index-build") == 0)
		return c->build_foreground ? "foreground" : "background";
	if (strcmp(name, "appendonly") == 0)
		return "no";
	if (strcmp(name, "save") == 0)
		return "";
	if (strcmp(name, "databases") == 0)
		return "1";
	if (strcmp(name, "maxmemory") == 0)
		return "0";
	if (strcmp(name, "search-default-dialect") == 0)
		return "2";
	if (strcmp(name, "gpu") == 0)
		return vela_gpu_mode_name(vela_gpu_mode_get());
	if (strcmp(name, "slowlog-log-slower-than") == 0)
		return snprintf(buf, cap, "%lld", (long long)slowlog_slower_than()), buf;
	if (strcmp(name, "slowlog-max-len") == 0)
		return snprintf(buf, cap, "%lld", (long long)slowlog_max_len()), buf;
	return NULL;
}

static const char *const config_names[] = {
	"bind", "dir", "port", "protected-mode", "requirepass", "maxclients", "proto-max-bulk-len",
	"client-query-buffer-limit", "client-output-buffer-limit", "backup-dir", "tls-port",
	"tls-cert-file", "tls-key-file", "tls-auth-clients", "map-size", "appendfsync",
	"index-build", "appendonly", "save", "databases", "maxmemory", "search-default-dialect", "gpu",
	"slowlog-log-slower-than", "slowlog-max-len",
	"model-dir", "embed-batch-tokens", "embed-threads", "embed-device",
};

#define CONFIG_NAMES (sizeof(config_names) / sizeof(config_names[0]))

static void config_get(cmd_ctx_t *x)
{
	size_t n = 0, cap = CONFIG_NAMES;
	const char *hit[CONFIG_NAMES];
	for (int a = 2; a < x->argc; a++) {
		char *pat = arg_dup(&x->argv[a]);
		for (size_t i = 0; pat && i < cap && n < CONFIG_NAMES; i++) {
			bool dup = false;
			for (size_t k = 0; k < n; k++)
				dup |= hit[k] == config_names[i];
			if (!dup && fnmatch(pat, config_names[i], FNM_CASEFOLD) == 0)
				hit[n++] = config_names[i];
		}
		free(pat);
	}
	resp_map(x->out, n);
	for (size_t i = 0; i < n; i++) {
		char buf[128];
		resp_bulk_str(x->out, hit[i]);
		resp_bulk_str(x->out, config_value(x->srv, hit[i], buf, sizeof(buf)));
	}
}

/* CONFIG SET gpu no|yes|auto: switch the process's compute backend. */
static int config_set_gpu(cmd_ctx_t *x, const char *val, vela_err_t *err)
{
	vela_gpu_mode_t m;
	if (vela_gpu_mode_parse(val, &m))
		return vela_err_set(err, VELA_EINVAL, "Invalid argument '%s' for CONFIG SET 'gpu' "
						      "(no, yes or auto)", val);
	vela_err_t e = {0};
	int rc = vela_gpu_mode_set(m, &e);
	if (rc)
		return vela_err_set(err, rc, "CONFIG SET 'gpu' %s: %s", vela_gpu_mode_name(m),
				    e.msg[0] ? e.msg : vela_strerror(rc));
	pthread_mutex_lock(&x->srv->cfg_mu);
	x->srv->cfg.gpu_mode = m;
	pthread_mutex_unlock(&x->srv->cfg_mu);
	return 0;
}

/* CONFIG SET name value: what can change at run time. */
static void config_set(cmd_ctx_t *x)
{
	if (x->argc != 4) {
		reply_wrong_arity(x->out, &x->argv[0]);
		return;
	}
	char *name = arg_dup(&x->argv[2]), *val = arg_dup(&x->argv[3]);
	vela_err_t err = {0};
	int rc = name && val ? 0 : VELA_ENOMEM;
	if (rc == 0 && strcasecmp(name, "map-size") == 0) {
		uint64_t n;
		rc = parse_size(val, VELA_MAP_SIZE_MIN, VELA_MAP_SIZE_MAX, &n);
		if (rc == 0)
			rc = vela_db_set_map_size(x->db, (size_t)n, &err);
		else
			vela_err_set(&err, rc, "Invalid argument '%s' for CONFIG SET 'map-size'", val);
	} else if (rc == 0 && strcasecmp(name, "gpu") == 0) {
		rc = config_set_gpu(x, val, &err);
	} else if (rc == 0 && (strcasecmp(name, "requirepass") == 0 ||
			       strcasecmp(name, "maxclients") == 0 ||
			       strcasecmp(name, "protected-mode") == 0 ||
			       strcasecmp(name, "client-output-buffer-limit") == 0 ||
			       strcasecmp(name, "backup-dir") == 0 ||
			       strcasecmp(name, "save") == 0 || strcasecmp(name, "appendonly") == 0 ||
			       strcasecmp(name, "loglevel") == 0 ||
			       strcasecmp(name, "slowlog-log-slower-than") == 0 ||
			       strcasecmp(name, "slowlog-max-len") == 0)) {
		const char *d[2] = {name, val};
		uint32_t old_max = x->srv->cfg.maxclients;
		pthread_mutex_lock(&x->srv->cfg_mu);
		rc = srv_config_set(&x->srv->cfg, 2, d, &err);
		pthread_mutex_unlock(&x->srv->cfg_mu);
		uint32_t fit = 0;
		if (rc == 0 && strcasecmp(name, "maxclients") == 0 &&
		    srv_open_files_reserve(x->srv->cfg.maxclients, &fit) != 0) {
			x->srv->cfg.maxclients = old_max; /* as Redis: refused, unchanged */
			rc = vela_err_set(&err, VELA_ELIMIT, "CONFIG SET failed (possibly related to "
					  "argument 'maxclients') - The operating system is not able "
					  "to handle the specified number of clients, try with %u",
					  fit);
		}
		if (rc == 0 && strcasecmp(name, "loglevel") == 0)
			vela_log_set_level(x->srv->cfg.log_level);
	} else if (rc == 0) {
		rc = vela_err_set(&err, VELA_EINVAL, "Unsupported CONFIG parameter: %s", name);
	}
	if (rc)
		resp_errorf(x->out, "ERR %s", err.msg[0] ? err.msg : vela_strerror(rc));
	else
		resp_simple(x->out, "OK");
	free(name);
	free(val);
}

void cmd_config(cmd_ctx_t *x)
{
	if (arg_eq(&x->argv[1], "GET") && x->argc >= 3)
		config_get(x);
	else if (arg_eq(&x->argv[1], "SET"))
		config_set(x);
	else if (arg_eq(&x->argv[1], "RESETSTAT"))
		resp_simple(x->out, "OK");
	else
		resp_errorf(x->out, "ERR unknown subcommand '%.*s'. Try CONFIG HELP.",
			    (int)(x->argv[1].len > 64 ? 64 : x->argv[1].len), x->argv[1].p);
}

/* ------------------------------------------------------------ ACL */

void cmd_acl(cmd_ctx_t *x)
{
	if (arg_eq(&x->argv[1], "WHOAMI")) {
		resp_bulk_str(x->out, x->c && x->c->user ? x->c->user->name : "default");
		return;
	}
	if (arg_eq(&x->argv[1], "SETUSER") && x->argc >= 3) {
		char *args[64];
		int n = 0;
		for (int i = 2; i < x->argc && n < 64; i++)
			args[n++] = arg_dup(&x->argv[i]);
		vela_err_t err = {0};
		pthread_mutex_lock(&x->srv->cfg_mu);
		int rc = srv_user_set(&x->srv->cfg, args[0], n - 1, (const char *const *)args + 1, &err);
		pthread_mutex_unlock(&x->srv->cfg_mu);
		if (rc)
			resp_errorf(x->out, "ERR %s", err.msg);
		else
			resp_simple(x->out, "OK");
		for (int i = 0; i < n; i++)
			free(args[i]);
		return;
	}
	if (arg_eq(&x->argv[1], "USERS")) {
		pthread_mutex_lock(&x->srv->cfg_mu);
		resp_array(x->out, x->srv->cfg.n_users);
		for (uint32_t i = 0; i < x->srv->cfg.n_users; i++)
			resp_bulk_str(x->out, x->srv->cfg.users[i].name);
		pthread_mutex_unlock(&x->srv->cfg_mu);
		return;
	}
	resp_errorf(x->out, "ERR unknown subcommand '%.*s'. Try ACL HELP.",
		    (int)(x->argv[1].len > 64 ? 64 : x->argv[1].len), x->argv[1].p);
}
