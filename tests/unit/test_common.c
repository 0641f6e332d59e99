/* Unit tests for common/: error codes, error buffer, log levels, hashing,
 * CPU features. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include <xxhash.h>

#include "common/common.h"

Test(common, strerror_covers_every_code)
{
	for (int c = VELA_ERR_BASE; c >= VELA_ERR_LAST; c--) {
		const char *s = vela_strerror(c);
		cr_assert_not_null(s);
		cr_assert_str_neq(s, "unknown error", "code %d has no text", c);
	}
	cr_assert_str_eq(vela_strerror(ENOENT), strerror(ENOENT));
	cr_assert_str_eq(vela_strerror(VELA_ERR_LAST - 1), "unknown error");
}

Test(common, err_buffer_formats_and_returns_code)
{
	vela_err_t e;
	int rc = vela_err_set(&e, VELA_ESYNTAX, "Syntax error at offset %d near '%c'", 12, '@');
	cr_assert_eq(rc, VELA_ESYNTAX);
	cr_assert_eq(e.code, VELA_ESYNTAX);
	cr_assert_str_eq(e.msg, "Syntax error at offset 12 near '@'");
	cr_assert_eq(vela_err_set(NULL, VELA_EINVAL, "x"), VELA_EINVAL);
	vela_err_clear(&e);
	cr_assert_eq(e.code, 0);
	cr_assert_str_eq(e.msg, "");
}

Test(common, log_level_parse)
{
	int lvl = -1;
	cr_assert_eq(vela_log_level_parse("WARN", &lvl), 0);
	cr_assert_eq(lvl, VELA_LOG_WARN);
	cr_assert_eq(vela_log_level_parse("loud", &lvl), VELA_EINVAL);
	vela_log_set_level(VELA_LOG_ERROR);
	cr_assert_eq(vela_log_get_level(), VELA_LOG_ERROR);
	vela_log_set_level(VELA_LOG_LEVEL_DEFAULT);
}

Test(common, hash_matches_xxh3_reference)
{
	const char *s = "vela";
	cr_assert_eq(vela_hash64(s, 4), XXH3_64bits(s, 4));
	cr_assert_eq(vela_hash64_seed(s, 4, 7), XXH3_64bits_withSeed(s, 4, 7));
	cr_assert_neq(vela_hash64_seed(s, 4, 7), vela_hash64(s, 4));
}

Test(common, cpu_features_consistent)
{
	unsigned f = vela_cpu_features();
	/* AVX-512 sub-features imply the foundation. */
	if (f & (VELA_CPU_AVX512BW | VELA_CPU_AVX512VNNI))
		cr_assert(f & VELA_CPU_AVX512F);
	cr_assert(strlen(vela_cpu_features_str()) > 0);
#if defined(__GNUC__)
	__builtin_cpu_init();
	cr_assert_eq(!!(f & VELA_CPU_AVX2), !!__builtin_cpu_supports("avx2"));
#endif
}

Test(common, mul_size_overflow)
{
	cr_assert_eq(vela_mul_size(SIZE_MAX / 2, 3), SIZE_MAX);
	cr_assert_eq(vela_mul_size(4, 5), 20);
	cr_assert_null(vela_aligned_alloc(64, SIZE_MAX));
}

Test(common, byte_order_roundtrip)
{
	uint8_t b[8];
	vela_put_be64(b, 0x0102030405060708ull);
	cr_assert_eq(b[0], 1);
	cr_assert_eq(b[7], 8);
	cr_assert_eq(vela_get_be64(b), 0x0102030405060708ull);
}

Test(common, byte_buffers_round_trip_and_overrun)
{
	vela_wbuf_t w = {0};
	vela_wbuf_u32(&w, 0xdeadbeefu);
	vela_wbuf_u64(&w, 0x0123456789abcdefull);
	for (int i = 0; i < 100; i++) /* grows past the first allocation */
		vela_wbuf_put(&w, "abcdefgh", 8);
	cr_assert(!w.oom);
	cr_assert_eq(w.len, 12u + 800u);
	vela_rbuf_t r = {.b = w.b, .len = w.len};
	cr_assert_eq(vela_rbuf_u32(&r), 0xdeadbeefu);
	cr_assert_eq(vela_rbuf_u64(&r), 0x0123456789abcdefull);
	const uint8_t *p = vela_rbuf_take(&r, 800);
	cr_assert(p && memcmp(p + 792, "abcdefgh", 8) == 0);
	cr_assert(!r.bad);
	cr_assert_eq(vela_rbuf_u32(&r), 0u, "past the end reads zero");
	cr_assert(r.bad);
	r.o = 0; /* bad stays */
	cr_assert_null(vela_rbuf_take(&r, 1));
	free(w.b);
}
