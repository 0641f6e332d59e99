/* Shared pieces of the vela CLI commands: target options, progress bar,
 * quantiles. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "common/common.h"

/* Progress redraws at most this often (ns). */
#define CLI_PROGRESS_PERIOD_NS 100000000ull
#define CLI_PROGRESS_WIDTH 30

static const char *opt_value(int argc, char **argv, int *i)
{
	if (*i + 1 >= argc) {
		fprintf(stderr, "vela: %s needs a value\n", argv[*i]);
		return NULL;
	}
	return argv[++*i];
}

int cli_target_opt(cli_target_t *t, int argc, char **argv, int *i)
{
	const char *a = argv[*i];
	const char **slot = strcmp(a, "--db") == 0         ? &t->db
			    : strcmp(a, "--host") == 0     ? &t->host
			    : strcmp(a, "--user") == 0     ? &t->user
			    : strcmp(a, "--password") == 0 ? &t->password
							   : NULL;
	if (slot) {
		*slot = opt_value(argc, argv, i);
		return *slot ? 1 : -1;
	}
	if (strcmp(a, "--map-size") == 0) { /* MiB: an import that outgrows 1 GiB */
		const char *v = opt_value(argc, argv, i);
		return v && cli_parse_size(a, v, VELA_MAP_SIZE_MIN >> 20, VELA_MAP_SIZE_MAX >> 20,
					   &t->map_mib) == 0 ? 1 : -1;
	}
	if (strcmp(a, "--port") == 0 || strcmp(a, "--timeout-ms") == 0) {
		const char *v = opt_value(argc, argv, i);
		size_t x;
		bool port = strcmp(a, "--port") == 0;
		if (v == NULL || cli_parse_size(a, v, 1, port ? 65535 : VELA_CLIENT_TIMEOUT_MS_MAX, &x))
			return -1;
		*(port ? &t->port : &t->timeout_ms) = (int)x;
		return 1;
	}
	return 0;
}

int cli_target_check(const cli_target_t *t)
{
	if ((t->db == NULL) == (t->host == NULL)) {
		fprintf(stderr, "vela: give either --db DIR or --host HOST [--port N]\n");
		return -1;
	}
	return 0;
}

int cli_db_open(const cli_target_t *t, vela_db_t **db)
{
	vela_err_t err;
	vela_db_options_t o = {.map_size = t->map_mib << 20};
	if (vela_db_open(t->db, t->map_mib ? &o : NULL, db, &err) == 0)
		return 0;
	fprintf(stderr, "vela: %s: %s\n", t->db, err.msg);
	return 1;
}

int cli_connect(const cli_target_t *t, vela_client_t **c)
{
	vela_err_t err;
	int port = t->port ? t->port : 6379;
	if (vela_client_connect(t->host, port, t->timeout_ms, c, &err)) {
		fprintf(stderr, "vela: %s\n", err.msg);
		return 1;
	}
	if (t->password && vela_client_auth(*c, t->user, t->password, &err)) {
		fprintf(stderr, "vela: AUTH: %s\n", err.msg);
		vela_client_close(*c);
		*c = NULL;
		return 1;
	}
	return 0;
}

int cli_parse_size(const char *opt, const char *s, size_t min, size_t max, size_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
		fprintf(stderr, "vela: %s: '%s' is not a number in %zu..%zu\n", opt, s, min, max);
		return -1;
	}
	*out = (size_t)v;
	return 0;
}

void cli_progress_start(cli_progress_t *p, const char *what, size_t total)
{
	*p = (cli_progress_t){.tty = isatty(STDERR_FILENO), .what = what, .total = total,
			      .t0 = vela_now_ns()};
}

void cli_progress_update(cli_progress_t *p, size_t done)
{
	uint64_t now = vela_now_ns();
	if (!p->tty || (now - p->last < CLI_PROGRESS_PERIOD_NS && done < p->total))
		return;
	p->last = now;
	double s = (double)(now - p->t0) / 1e9, rate = s > 0 ? (double)done / s : 0;
	if (p->total) {
		int fill = (int)((double)CLI_PROGRESS_WIDTH * (double)done / (double)p->total);
		fprintf(stderr, "\r%s [%-*.*s] %zu/%zu %.0f/s ", p->what, CLI_PROGRESS_WIDTH, fill,
			"##############################", done, p->total, rate);
	} else {
		fprintf(stderr, "\r%s %zu %.0f/s ", p->what, done, rate);
	}
	fflush(stderr);
}

void cli_progress_end(cli_progress_t *p)
{
	if (p->tty && p->last)
		fputc('\n', stderr);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

double cli_quantile(double *v, size_t n, double p)
{
	if (n == 0)
		return NAN;
	qsort(v, n, sizeof(*v), cmp_double);
	size_t i = (size_t)ceil(p * (double)n);
	return v[i ? i - 1 : 0];
}
