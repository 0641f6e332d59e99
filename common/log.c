/* Leveled logging to stderr. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <strings.h>
#include <time.h>

#include "common.h"

static atomic_int log_level = VELA_LOG_LEVEL_DEFAULT;

void vela_log_set_level(int level)
{
	if (level < VELA_LOG_DEBUG)
		level = VELA_LOG_DEBUG;
	if (level > VELA_LOG_OFF)
		level = VELA_LOG_OFF;
	atomic_store(&log_level, level);
}

int vela_log_get_level(void)
{
	return atomic_load(&log_level);
}

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

int vela_log_level_parse(const char *name, int *level)
{
	for (int i = 0; i <= VELA_LOG_OFF; i++) {
		if (strcasecmp(name, level_names[i]) == 0) {
			*level = i;
			return VELA_OK;
		}
	}
	return VELA_EINVAL;
}

void vela_log(int level, const char *fmt, ...)
{
	if (level < atomic_load(&log_level) || level >= VELA_LOG_OFF)
		return;
	char when[32];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);

	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* One fprintf call per line so concurrent threads do not interleave. */
	fprintf(stderr, "%s.%03ldZ %-5s %s\n", when, ts.tv_nsec / 1000000L,
		level_names[level], line);
}
