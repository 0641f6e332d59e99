/* vela backup / vela restore (docs/operations.md, "Backup and restore").
 *
 *   vela backup DBDIR DEST        copy the database in DBDIR (velad may be
 *                                 running on it) to the directory DEST
 *   vela backup HOST:PORT DEST    ask that server for BGSAVE DEST and wait
 *                                 for it; DEST is a path on the server's
 *                                 machine (a relative one is made absolute
 *                                 against this command's working directory)
 *   vela restore SRC DBDIR        make DBDIR (absent or empty) a database
 *                                 from the backup in SRC
 *
 * Options for a server: --user U --password P --timeout-ms N. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "common/common.h"

/* How long a server-side backup may take before `vela backup` gives up. */
#define CLI_BACKUP_WAIT_S_DEFAULT 3600u
#define CLI_BACKUP_POLL_MS 100u

static int backup_usage(void)
{
	fprintf(stderr,
		"usage: vela backup DBDIR|HOST:PORT DEST [--user U] [--password P] "
		"[--timeout-ms N] [--wait-s N]\n"
		"       vela restore SRC DBDIR\n");
	return 2;
}

static bool is_dir(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* "host:port" (or "[v6]:port") with a numeric port; fills host (a copy). */
static bool parse_hostport(const char *s, char *host, size_t cap, int *port)
{
	const char *colon = strrchr(s, ':');
	if (colon == NULL || colon == s || colon[1] == '\0')
		return false;
	char *end;
	long p = strtol(colon + 1, &end, 10);
	if (*end || p < 1 || p > 65535)
		return false;
	size_t n = (size_t)(colon - s);
	if (s[0] == '[' && n >= 2 && s[n - 1] == ']') {
		s++;
		n -= 2;
	}
	if (n == 0 || n >= cap)
		return false;
	memcpy(host, s, n);
	host[n] = '\0';
	*port = (int)p;
	return true;
}

static long long file_size(const char *dir)
{
	char p[PATH_MAX];
	struct stat st;
	snprintf(p, sizeof(p), "%s/data.mdb", dir);
	return stat(p, &st) == 0 ? (long long)st.st_size : -1;
}

/* The value of `field` in an INFO text, or NULL (points into text). */
static const char *info_field(const char *text, const char *field, size_t *len)
{
	size_t fl = strlen(field);
	for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
		if (strncmp(p, field, fl) == 0 && p[fl] == ':') {
			const char *v = p + fl + 1;
			*len = strcspn(v, "\r\n");
			return v;
		}
	}
	return NULL;
}

static int cmd_str(vela_client_t *c, int argc, const char **argv, char **out, vela_err_t *err)
{
	redisReply *r = NULL;
	int rc = vela_client_command(c, argc, argv, NULL, &r, err);
	if (rc == 0 && out)
		*out = r && r->str ? strndup(r->str, r->len) : strdup("");
	vela_client_reply_free(r);
	return rc;
}

static int backup_remote(const char *host, int port, const cli_target_t *t, const char *dest,
			 unsigned wait_s)
{
	vela_client_t *c;
	vela_err_t err = {0};
	if (vela_client_connect(host, port, t->timeout_ms, &c, &err)) {
		fprintf(stderr, "vela: %s:%d: %s\n", host, port, err.msg);
		return 1;
	}
	if (t->password && vela_client_auth(c, t->user, t->password, &err)) {
		fprintf(stderr, "vela: %s:%d: %s\n", host, port, err.msg);
		vela_client_close(c);
		return 1;
	}
	char abs[PATH_MAX];
	if (dest[0] != '/') {
		char cwd[PATH_MAX];
		if (getcwd(cwd, sizeof(cwd)) == NULL ||
		    (size_t)snprintf(abs, sizeof(abs), "%s/%s", cwd, dest) >= sizeof(abs)) {
			fprintf(stderr, "vela: cannot make '%s' absolute\n", dest);
			vela_client_close(c);
			return 1;
		}
		dest = abs;
	}
	uint64_t t0 = vela_now_ns();
	uint64_t limit = t0 + (uint64_t)wait_s * 1000000000ull;
	int rc;
	/* Another save may be running: BGSAVE refuses; wait for a free slot. */
	for (;;) {
		const char *argv[] = {"BGSAVE", dest};
		vela_err_clear(&err);
		rc = cmd_str(c, 2, argv, NULL, &err);
		if (rc == 0 || strstr(err.msg, "already in progress") == NULL || vela_now_ns() > limit)
			break;
		struct timespec ts = {0, CLI_BACKUP_POLL_MS * 1000000L};
		nanosleep(&ts, NULL);
	}
	if (rc) {
		fprintf(stderr, "vela: BGSAVE %s: %s\n", dest, err.msg);
		vela_client_close(c);
		return 1;
	}
	/* Ours is the save running now: wait until none is. */
	for (;;) {
		const char *argv[] = {"INFO", "persistence"};
		char *info = NULL;
		size_t n;
		if (cmd_str(c, 2, argv, &info, &err)) {
			fprintf(stderr, "vela: INFO: %s\n", err.msg);
			vela_client_close(c);
			return 1;
		}
		const char *running = info_field(info, "rdb_bgsave_in_progress", &n);
		const char *status = info_field(info, "rdb_last_bgsave_status", &n);
		bool done = running && running[0] == '0';
		bool ok = status && strncmp(status, "ok", 2) == 0;
		free(info);
		if (done) {
			vela_client_close(c);
			if (!ok) {
				fprintf(stderr, "vela: the server's backup to %s failed (see its log)\n",
					dest);
				return 1;
			}
			printf("backup of %s:%d written to %s in %.2f s\n", host, port, dest,
			       (double)(vela_now_ns() - t0) / 1e9);
			return 0;
		}
		if (vela_now_ns() > limit) {
			fprintf(stderr, "vela: the backup did not finish within %u s\n", wait_s);
			vela_client_close(c);
			return 1;
		}
		struct timespec ts = {0, CLI_BACKUP_POLL_MS * 1000000L};
		nanosleep(&ts, NULL);
	}
}

int cmd_backup(int argc, char **argv)
{
	cli_target_t t = {0};
	const char *pos[2];
	int np = 0;
	size_t wait_s = CLI_BACKUP_WAIT_S_DEFAULT;
	for (int i = 0; i < argc; i++) {
		int r = cli_target_opt(&t, argc, argv, &i);
		if (r < 0)
			return backup_usage();
		if (r > 0)
			continue;
		if (strcmp(argv[i], "--wait-s") == 0) {
			if (i + 1 >= argc || cli_parse_size("--wait-s", argv[++i], 1, 86400 * 7, &wait_s))
				return backup_usage();
		} else if (argv[i][0] == '-' && argv[i][1] == '-') {
			return backup_usage();
		} else if (np < 2) {
			pos[np++] = argv[i];
		} else {
			return backup_usage();
		}
	}
	if (np != 2)
		return backup_usage();
	char host[256];
	int port;
	if (!is_dir(pos[0]) && parse_hostport(pos[0], host, sizeof(host), &port))
		return backup_remote(host, port, &t, pos[1], (unsigned)wait_s);
	vela_err_t err = {0};
	uint64_t t0 = vela_now_ns();
	if (vela_backup_dir(pos[0], pos[1], &err)) {
		fprintf(stderr, "vela: backup %s: %s\n", pos[0], err.msg);
		return 1;
	}
	printf("backup of %s written to %s (%lld bytes) in %.2f s\n", pos[0], pos[1],
	       file_size(pos[1]), (double)(vela_now_ns() - t0) / 1e9);
	return 0;
}

int cmd_restore(int argc, char **argv)
{
	if (argc != 2)
		return backup_usage();
	vela_err_t err = {0};
	uint64_t t0 = vela_now_ns();
	if (vela_restore_dir(argv[0], argv[1], &err)) {
		fprintf(stderr, "vela: restore %s: %s\n", argv[0], err.msg);
		return 1;
	}
	printf("%s restored from %s (%lld bytes) in %.2f s\n", argv[1], argv[0], file_size(argv[1]),
	       (double)(vela_now_ns() - t0) / 1e9);
	return 0;
}
