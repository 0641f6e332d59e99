/* Argument helpers and replies shared by the command files (srv_int.h).
 * Kept apart from net.c so a fuzz target can link the command parsers
 * without the event loop (tests/fuzz/fuzz_ftcreate.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/srv_int.h"

bool arg_eq(const resp_arg_t *a, const char *s)
{
	size_t n = strlen(s);
	return a->len == n && strncasecmp(a->p, s, n) == 0;
}

int arg_int64(const resp_arg_t *a, int64_t *v)
{
	char buf[32];
	if (a->len == 0 || a->len >= sizeof(buf))
		return VELA_EINVAL;
	memcpy(buf, a->p, a->len);
	buf[a->len] = '\0';
	char *end;
	errno = 0;
	long long x = strtoll(buf, &end, 10);
	if (*end || errno)
		return VELA_EINVAL;
	*v = x;
	return VELA_OK;
}

int arg_double(const resp_arg_t *a, double *v)
{
	char buf[64];
	if (a->len == 0 || a->len >= sizeof(buf))
		return VELA_EINVAL;
	memcpy(buf, a->p, a->len);
	buf[a->len] = '\0';
	char *end;
	double x = strtod(buf, &end);
	if (*end || x != x)
		return VELA_EINVAL;
	*v = x;
	return VELA_OK;
}

char *arg_dup(const resp_arg_t *a)
{
	char *s = malloc(a->len + 1);
	if (s) {
		memcpy(s, a->p, a->len);
		s[a->len] = '\0';
	}
	return s;
}

void reply_wrong_arity(resp_out_t *o, const resp_arg_t *name)
{
	char n[64];
	size_t l = name->len < sizeof(n) - 1 ? name->len : sizeof(n) - 1;
	for (size_t i = 0; i < l; i++)
		n[i] = (char)((name->p[i] >= 'A' && name->p[i] <= 'Z') ? name->p[i] + 32 : name->p[i]);
	n[l] = '\0';
	resp_errorf(o, "ERR wrong number of arguments for '%s' command", n);
}
