/* Byte views (proto/bytes.h): the one owning operation, cc_bytes_dup().
 *
 * A cc_bytes_t never owns memory; this makes the NUL-terminated copy callers keep past the
 * view's buffer (e.g. reply_to and correlation_id of an eta task, outliving the delivery).
 */
#include <stdlib.h>
#include <string.h>

#include "bytes.h"

char *cc_bytes_dup(cc_bytes_t b)
{
    char *s;

    if (b.p == NULL)
        return NULL;
    s = malloc(b.len + 1);
    if (s == NULL)
        return NULL;
    memcpy(s, b.p, b.len);
    s[b.len] = '\0';
    return s;
}
