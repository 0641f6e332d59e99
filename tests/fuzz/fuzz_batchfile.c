// libFuzzer target for the batch query-file reader of `vela batch`
// (clients/cli/queries.c: the bounded line reader and the JSON-lines query
// decoder). Arbitrary bytes are the file; it is read the way the CLI reads
// one (cli_queries_load on a path), with or without --index and with a
// small --vectors table for "vector_file_row".
// Oracle: either an error with a message (no queries handed out), or
// every query complete and in range: an id, index, filter and field
// strings, 1 <= k <= VELA_K_MAX, a vector of VELA_DIM_MIN..VELA_DIM_MAX
// finite floats. ASan/LSan watch the rest.
// Build and run: scripts/fuzz-smoke (see there for the flags).
//
// Input: one control byte (bit 0: --index given; bit 1: --vectors given),
// then the file's bytes.
#define _GNU_SOURCE /* memfd_create */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "clients/cli/cli.h"

static void check_query(const cli_query_t *q)
{
	if (q->id == NULL || q->index == NULL || q->filter == NULL || q->field == NULL ||
	    q->k < VELA_K_MIN || q->k > VELA_K_MAX || q->vec == NULL || q->dim < VELA_DIM_MIN ||
	    q->dim > VELA_DIM_MAX)
		abort();
	for (uint32_t i = 0; i < q->dim; i++)
		if (!isfinite(q->vec[i]))
			abort();
	char *id = cli_id_text(q);
	if (id == NULL)
		abort();
	free(id);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	static float table[3 * 4] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
	vela_vecs_t vecs = {.data = table, .rows = 3, .dim = 4};
	cli_query_defaults_t d = {.index = (data[0] & 1) ? "idx" : NULL,
				  .vectors = (data[0] & 2) ? &vecs : NULL};
	int fd = memfd_create("batchfile", 0);
	if (fd < 0)
		abort();
	if (size > 1 && write(fd, data + 1, size - 1) != (ssize_t)(size - 1))
		abort();
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	cli_query_t *q = NULL;
	size_t n = 0;
	vela_err_t err = {0};
	int rc = cli_queries_load(path, &d, &q, &n, &err);
	close(fd);
	if (rc != 0) {
		if (q != NULL || n != 0 || err.msg[0] == '\0')
			abort();
		return 0;
	}
	for (size_t i = 0; i < n; i++)
		check_query(&q[i]);
	cli_queries_free(q, n);
	return 0;
}
