/* Byte views. A cc_bytes_t never owns its memory: never keep one past its buffer. */
#ifndef CELERYC_PROTO_BYTES_H
#define CELERYC_PROTO_BYTES_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    const uint8_t *p;
    size_t len;
} cc_bytes_t;

static inline cc_bytes_t cc_bytes_str(const char *s)
{
    cc_bytes_t b = {(const uint8_t *)s, s ? strlen(s) : 0};
    return b;
}

/* True if the view holds exactly the NUL-free string `s`. */
static inline int cc_bytes_eq(cc_bytes_t b, const char *s)
{
    size_t n = strlen(s);
    return b.p != NULL && b.len == n && memcmp(b.p, s, n) == 0;
}

/* Owned, NUL-terminated copy of the view (NULL view -> NULL). Returns NULL on OOM too;
 * callers distinguish by checking b.p. Free with free(). */
char *cc_bytes_dup(cc_bytes_t b);

/* Show a view from the network in a log line or an error text: printable ASCII as it is,
 * a backslash as "\\", every other byte (NUL, controls, non-ASCII) as "\xNN", so that
 * "application/json\0evil" reads application/json\x00evil, never "application/json". At
 * most max_bytes of the view are shown; whatever is left out (past max_bytes, or what does
 * not fit in buf) is marked with "..." (callers print the real length next to it). A NULL
 * view gives "". buf (size >= 4) is always NUL-terminated. Returns buf. Pure. */
const char *cc_bytes_escape(cc_bytes_t b, size_t max_bytes, char *buf, size_t size);

#endif
