/**
 * @file resp.h
 * @brief The Redis protocol for velad: an incremental, bounded request
 * parser (multibulk and inline) and a reply writer for RESP2 and RESP3.
 * Part of the server module (server/server.h includes it); no libevent here,
 * so it is unit-testable and fuzzable on its own.
 *
 * Parser contract: the caller keeps the client's unread bytes in one
 * contiguous buffer and calls resp_parse() whenever bytes arrive. The parser
 * remembers how far it got (the multibulk count, the current bulk length, the
 * arguments already complete, where the search for a line end stopped), so a
 * 6 KiB vector split over many reads is not re-scanned from the start each
 * time. It keeps offsets, never pointers, while a command is incomplete, so
 * the caller may move (realloc) its buffer between calls, as long as the
 * bytes already passed stay in place at the front and new bytes are appended.
 * When a command is complete it returns 1 with argv pointing into the caller's
 * buffer (multibulk) or into the parser (inline); after handling it the caller
 * drops `*consumed` bytes from the front of its buffer and calls again.
 *
 * Typical loop:
 *
 *     for (;;) {
 *         int rc = resp_parse(&c->parser, buf, len, &lim, c->authed, &used, &argv, &argc, &err);
 *         if (rc == 1) run(argv, argc);
 *         else if (rc < 0) { reply err.msg (resp_error adds "ERR "); close after reply; break; }
 *         drop `used` bytes from the front of buf;
 *         if (rc == 0 && used == 0) break;   // wait for more bytes
 *     }
 */
#ifndef VELA_SERVER_RESP_H
#define VELA_SERVER_RESP_H

#include <stddef.h>
#include <stdint.h>

#include "vela/errors.h"

/** Limits (redis.conf names and defaults, reference §1.2 and §1.6). */
#define RESP_MAX_BULK_DEFAULT (512ull << 20) /* proto-max-bulk-len */
#define RESP_MAX_BULK_MIN (1ull << 20)
#define RESP_MAX_BULK_MAX (1ull << 32)
#define RESP_MAX_ARGS_DEFAULT (1024u * 1024u) /* arguments per command */
#define RESP_MAX_ARGS_MIN 16u
#define RESP_MAX_ARGS_MAX ((uint32_t)INT32_MAX)
#define RESP_MAX_INLINE 65536u /* longest inline request and count line, without its '\n' / '\r' */
#define RESP_UNAUTH_MAX_ARGS 10u /* before AUTH */
#define RESP_UNAUTH_MAX_BULK 16384u

/**
 * Parser limits; values outside [MIN, MAX] are clamped. A NULL limits
 * pointer means the defaults.
 */
typedef struct resp_limits {
	uint64_t max_bulk;  /**< proto-max-bulk-len */
	uint32_t max_args;  /**< most arguments in one command (multibulk or inline) */
} resp_limits_t;

/**
 * One argument: `len` bytes at `p` (binary-safe, not NUL-terminated).
 * Multibulk arguments point into the caller's buffer, inline arguments into
 * the parser's own buffer (quotes and escapes removed).
 */
typedef struct resp_arg {
	const char *p;
	size_t len;
} resp_arg_t;

/** Parser state for one connection. Initialise with resp_parser_init. */
typedef struct resp_parser {
	/* private */
	int state;
	int64_t mbulk_left; /**< arguments still to read in a multibulk */
	int64_t bulk_len;   /**< length of the bulk being read */
	size_t pos;         /**< bytes of the buffer already parsed */
	size_t scan;        /**< where the search for the current line's end resumes */
	resp_arg_t *argv;   /**< offsets (p is an offset until complete) */
	size_t argc, cap;
	char *inline_buf;   /**< unescaped inline arguments */
	size_t inline_cap;
} resp_parser_t;

/** Set up an empty parser (allocates nothing). */
void resp_parser_init(resp_parser_t *p);
/** Free the parser's memory; argv from an earlier resp_parse is invalid after. */
void resp_parser_free(resp_parser_t *p);
/**
 * @brief Parse the next command from buf[0..len).
 *
 * Multibulk (`*` first): `*<argc>\r\n` then argc times `$<len>\r\n<bytes>\r\n`.
 * As in Redis, the byte after each CR is skipped unchecked. Counts <= 0 are
 * skipped. Anything else is an inline request: one line ending in `\n`
 * (optional `\r`), split like Redis's sdssplitargs; a NUL byte is ordinary
 * data (Redis would stop at it); an empty or blank line is skipped.
 * A count line or inline line longer than RESP_MAX_INLINE bytes is an error
 * whether or not its end has arrived, so the outcome never depends on how
 * the bytes were split into reads.
 *
 * @param buf, len the unread bytes; between calls that return 0 with
 *        *consumed == 0 the caller may only append (and move the buffer).
 * @param lim limits, or NULL for the defaults.
 * @param authed 0 applies the pre-AUTH limits to multibulk requests
 *        (10 arguments, 16 KiB bulks).
 * @param[out] consumed always set: bytes the caller drops from the front of
 *        buf before the next call (after handling the command when 1 is
 *        returned). 0 with return 0 means "need more bytes"; > 0 with return
 *        0 means an empty inline line or a `*0` / `*-1` was skipped: drop
 *        them and call again.
 * @param[out] argv, argc the command when 1 is returned. argv is owned by the
 *        parser; it and the bytes it points to stay valid until the next
 *        resp_parse / resp_parser_free call or until the caller drops or
 *        moves its buffer's bytes.
 * @return 1 a command is ready; 0 see *consumed; VELA_ESYNTAX protocol error
 *         with the Redis wording in err->msg ("Protocol error: invalid
 *         multibulk length", ...): reply it, then close the connection;
 *         VELA_ENOMEM; VELA_EINVAL (len smaller than on the last call). After
 *         an error every call fails again until resp_parser_free/init.
 */
int resp_parse(resp_parser_t *p, const char *buf, size_t len, const resp_limits_t *lim, int authed,
	       size_t *consumed, resp_arg_t **argv, size_t *argc, vela_err_t *err);

/* ------------------------------------------------------------ replies */

/**
 * A growable output buffer; the server moves its bytes to the socket.
 * `p` is owned by the resp_out (free with resp_out_free) and moves when it
 * grows. Once an append fails `oom` is set and later appends do nothing, so
 * a truncated reply is never followed by more bytes.
 */
typedef struct resp_out {
	char *p;
	size_t len, cap;
	int proto; /**< 2 or 3 */
	int oom;   /**< set if an append failed; the connection must be closed */
} resp_out_t;

/** Empty buffer (allocates nothing); `proto` other than 3 means 2. */
void resp_out_init(resp_out_t *o, int proto);
void resp_out_free(resp_out_t *o);
/** Drop the first n bytes (after they were written to the socket); a large
 * buffer left empty is released so one big reply does not pin memory. */
void resp_out_consume(resp_out_t *o, size_t n);

void resp_simple(resp_out_t *o, const char *s);            /**< +s (CR/LF mapped to spaces) */
/**
 * An error, CR/LF in msg mapped to spaces. The reply is `-<msg>` as is when
 * msg starts with an error code: either an explicit `-` ("-CODE text" sends
 * "-CODE text"), or a word of three or more characters A-Z followed by a
 * space ("WRONGTYPE ...", "NOAUTH ...", "OOM ...", "ERR ..."). Otherwise
 * "ERR " is prepended. So a message whose first word is an upper-case
 * acronym must be written "ERR KNN ..." (two-letter words such as "DB" are
 * never taken for a code).
 */
void resp_error(resp_out_t *o, const char *msg);
void resp_errorf(resp_out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void resp_int(resp_out_t *o, int64_t v);                   /**< :v */
void resp_bulk(resp_out_t *o, const void *p, size_t n);    /**< $n; p may be NULL when n is 0 */
void resp_bulk_str(resp_out_t *o, const char *s);          /**< strlen(s) bytes; NULL: resp_null */
void resp_null(resp_out_t *o);                             /**< $-1 (RESP2) or _ (RESP3) */
void resp_null_array(resp_out_t *o);                       /**< *-1 or _ */
void resp_array(resp_out_t *o, size_t n);                  /**< *n */
void resp_map(resp_out_t *o, size_t pairs);                /**< %n, or *2n in RESP2 */
void resp_set(resp_out_t *o, size_t n);                    /**< ~n, or *n in RESP2 */
/** ,v (RESP3) or a bulk string (RESP2); "%.17g", with inf, -inf and nan spelled so. */
void resp_double(resp_out_t *o, double v);
void resp_bool(resp_out_t *o, int v);                      /**< #t/#f, or :1/:0 */
void resp_verbatim(resp_out_t *o, const char *p, size_t n); /**< =n+4 txt:... (RESP3) or bulk */
/** Raw bytes (an already encoded reply). */
void resp_raw(resp_out_t *o, const void *p, size_t n);

#endif
