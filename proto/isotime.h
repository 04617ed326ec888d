/* ISO-8601 timestamps as Celery writes them, pure (the caller passes `now`). */
#ifndef CELERYC_PROTO_ISOTIME_H
#define CELERYC_PROTO_ISOTIME_H

#include <stddef.h>
#include <stdint.h>

#include "celeryc/status.h"

/* Parse "YYYY-MM-DDTHH:MM:SS[.ffffff][Z|+HH:MM|-HH:MM]" (also a space for T, 1-9 fraction
 * digits). A naive time (no offset) is taken as UTC, as Celery does with enable_utc.
 * Returns CC_OK and *us_out (microseconds since the epoch, UTC), or CC_EBADTIME. */
int cc_iso_parse(const char *s, int64_t *us_out) CC_MUST_USE;

/* Format like Python's datetime.isoformat(): "2026-11-22T23:33:20.549281", the fraction
 * omitted when the microseconds are zero, and "+00:00" appended when `with_offset`.
 * `buf` needs 33 bytes. Returns buf. */
char *cc_iso_format(int64_t us, int with_offset, char *buf, size_t size);

#endif
