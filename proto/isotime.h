/* ISO-8601 timestamps as Celery writes them, and spans of seconds as numbers from the wire;
 * pure (the caller passes `now`). */
#ifndef CELERYC_PROTO_ISOTIME_H
#define CELERYC_PROTO_ISOTIME_H

#include <stddef.h>
#include <stdint.h>

#include "celeryc/status.h"

/* Parse "YYYY-MM-DDTHH:MM:SS[.ffffff][Z|+HH:MM|-HH:MM]" (also a space for T, 1-9 fraction
 * digits). A naive time (no offset) is taken as UTC, as Celery does with enable_utc.
 * Returns CC_OK and *us_out (microseconds since the epoch, UTC), or CC_EBADTIME. */
int cc_isotime_parse(const char *s, int64_t *us_out) CC_MUST_USE;

/* Format like Python's datetime.isoformat(): "2026-11-22T23:33:20.549281", the fraction
 * omitted when the microseconds are zero, and "+00:00" appended when `with_offset`.
 * `buf` needs 33 bytes. Returns buf. */
char *cc_isotime_format(int64_t us, int with_offset, char *buf, size_t size);

/* ---- Spans of seconds ------------------------------------------------------------------
 *
 * Every seconds value that arrives as a number (a message's timelimit, a signature's
 * countdown / expires, a control command's time limit, a task's retry countdown) becomes
 * microseconds through cc_isotime_span_us(), never through a bare cast: a double beyond int64
 * (1e300 s is 1e306 us) is undefined behaviour in C, and now + span must not overflow
 * either. The longest span is CC_ISOTIME_SPAN_MAX_S (about 3,170 years): longer than any real
 * limit or delay, short enough that now + span stays inside int64 microseconds and inside
 * the years datetime (and cc_isotime_format) can write. Callers decide what each class means,
 * as Python does for the same value:
 *   time limit: HUGE = no limit (billiard compares floats: 1e300 never fires), NAN = no
 *               limit (now >= start + nan is false), NEGATIVE = refused (bad message / error);
 *   countdown:  HUGE = at the far end (*us = CC_ISOTIME_SPAN_MAX_US), NEGATIVE = now, NAN =
 *               ignored with a warning (timedelta(seconds=nan) raises in Python). */
#define CC_ISOTIME_SPAN_MAX_S  1e11
#define CC_ISOTIME_SPAN_MAX_US 100000000000000000LL /* CC_ISOTIME_SPAN_MAX_S * 1e6 */

enum cc_isotime_span {
    CC_ISOTIME_SPAN_OK = 0,   /* finite, 0 <= s <= CC_ISOTIME_SPAN_MAX_S: *us = s * 1e6, rounded */
    CC_ISOTIME_SPAN_NEGATIVE, /* s < 0 (also -inf): *us = max(s * 1e6, -CC_ISOTIME_SPAN_MAX_US) */
    CC_ISOTIME_SPAN_HUGE, /* s > CC_ISOTIME_SPAN_MAX_S (also +inf): *us = CC_ISOTIME_SPAN_MAX_US */
    CC_ISOTIME_SPAN_NAN,  /* not a number: *us = 0 */
};

/* Seconds -> microseconds, rounded to the nearest (as timedelta(seconds=s)), with every
 * double handled: returns the class of `s` and always sets *us (see enum cc_isotime_span).
 * Pure, no errno, no floating-point exception escapes as undefined behaviour. */
enum cc_isotime_span cc_isotime_span_us(double s, int64_t *us);

/* now_us + span_us, saturated at INT64_MIN / INT64_MAX instead of overflowing. */
int64_t cc_isotime_add_us(int64_t now_us, int64_t span_us);

#endif
