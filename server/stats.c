/* Process figures for INFO: memory from the allocator and the kernel, the
 * commands/s rate. */
#include <malloc.h>
#include <stdio.h>
#include <unistd.h>

#include "server/srv_int.h"

#if defined(__SANITIZE_ADDRESS__)
/* libasan's allocator statistics (sanitizer/allocator_interface.h, which
 * GCC 12 does not install): glibc's mallinfo2 sees none of ASan's heap. */
size_t __sanitizer_get_current_allocated_bytes(void);
#endif

uint64_t srv_mem_used(void)
{
#if defined(__SANITIZE_ADDRESS__)
	return __sanitizer_get_current_allocated_bytes();
#else
	struct mallinfo2 m = mallinfo2();
	return m.uordblks + m.hblkhd; /* in use: small chunks + mmap'd large ones */
#endif
}

uint64_t srv_mem_rss(void)
{
	unsigned long long size = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");
	if (f == NULL)
		return 0;
	if (fscanf(f, "%llu %llu", &size, &resident) != 2)
		resident = 0;
	fclose(f);
	return resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

uint64_t srv_ops_per_sec(const srv_t *s)
{
	unsigned n = s->ops_idx < SRV_OPS_SAMPLES ? s->ops_idx : SRV_OPS_SAMPLES;
	uint64_t sum = 0;
	for (unsigned i = 0; i < n; i++)
		sum += s->ops_samples[i];
	return n ? sum / n : 0;
}
