/* Small process-level helpers for daemon code (not for proto/, which returns CC_ENOMEM). */
#ifndef CELERYC_UTIL_H
#define CELERYC_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "celeryc/status.h"

/* Allocate or log "out of memory" and _exit(70). Unacked deliveries go back to the queue. */
void *cc_xmalloc(size_t n);
void *cc_xcalloc(size_t n, size_t size);
void *cc_xrealloc(void *p, size_t n);
char *cc_xstrdup(const char *s);

/* Wall clock, microseconds since the epoch. */
int64_t cc_now_us(void);
/* Monotonic clock, microseconds. */
int64_t cc_mono_us(void);

/* A random RFC-4122 version 4 uuid, lowercase, 36 chars + NUL. */
void cc_uuid4(char out[37]);

#define CC_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond))                                                                               \
            cc_assert_fail(#cond, __FILE__, __LINE__);                                             \
    } while (0)

CC_NORETURN void cc_assert_fail(const char *what, const char *file, int line);

#define CC_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
