/* CPU feature detection for run-time kernel dispatch.
 * A feature counts only when CPUID reports it and the OS saves the
 * register state it needs (XGETBV): AVX needs XMM|YMM, AVX-512 also
 * opmask|ZMM_Hi256|Hi16_ZMM. */
#include <cpuid.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common.h"

static unsigned cpu_features;
static char cpu_features_text[96];
static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;

static uint64_t cpu_xgetbv(void)
{
	uint32_t lo, hi;
	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	return ((uint64_t)hi << 32) | lo;
}

static unsigned cpu_detect(void)
{
	unsigned a, b, c, d, f = 0;
	if (!__get_cpuid(1, &a, &b, &c, &d))
		return 0;
	int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
	if (!osxsave || !avx)
		return 0;
	uint64_t xcr0 = cpu_xgetbv();
	if ((xcr0 & 0x6) != 0x6)
		return 0;
	if ((c >> 12) & 1)
		f |= VELA_CPU_FMA;
	if ((c >> 29) & 1)
		f |= VELA_CPU_F16C;
	if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
		return f;
	if ((b >> 5) & 1)
		f |= VELA_CPU_AVX2;
	if ((xcr0 & 0xe6) == 0xe6 && ((b >> 16) & 1)) {
		f |= VELA_CPU_AVX512F;
		if ((b >> 30) & 1)
			f |= VELA_CPU_AVX512BW;
		if ((c >> 11) & 1)
			f |= VELA_CPU_AVX512VNNI;
	}
	return f;
}

static unsigned cpu_apply_cap(unsigned f)
{
	const char *cap = getenv("VELA_CPU_MAX");
	if (cap == NULL)
		return f;
	if (strcasecmp(cap, "scalar") == 0)
		return 0;
	if (strcasecmp(cap, "avx2") == 0)
		return f & (VELA_CPU_AVX2 | VELA_CPU_FMA | VELA_CPU_F16C);
	return f;
}

static void cpu_init(void)
{
	cpu_features = cpu_apply_cap(cpu_detect());
	static const struct { unsigned bit; const char *name; } names[] = {
		{VELA_CPU_AVX2, "avx2"}, {VELA_CPU_FMA, "fma"},
		{VELA_CPU_F16C, "f16c"}, {VELA_CPU_AVX512F, "avx512f"},
		{VELA_CPU_AVX512BW, "avx512bw"}, {VELA_CPU_AVX512VNNI, "avx512vnni"},
	};
	cpu_features_text[0] = '\0';
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (!(cpu_features & names[i].bit))
			continue;
		if (cpu_features_text[0])
			strcat(cpu_features_text, " ");
		strcat(cpu_features_text, names[i].name);
	}
	if (!cpu_features_text[0])
		strcpy(cpu_features_text, "scalar");
}

unsigned vela_cpu_features(void)
{
	pthread_once(&cpu_once, cpu_init);
	return cpu_features;
}

const char *vela_cpu_features_str(void)
{
	pthread_once(&cpu_once, cpu_init);
	return cpu_features_text;
}
