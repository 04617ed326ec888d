/* Byte views (proto/bytes.h): the one owning operation, cc_bytes_dup(), and
 * cc_bytes_escape() for showing untrusted bytes in logs.
 *
 * A cc_bytes_t never owns memory; this makes the NUL-terminated copy callers keep past the
 * view's buffer (e.g. reply_to and correlation_id of an eta task, outliving the delivery).
 */
#include <stdbool.h>
#include <stdio.h>
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

const char *cc_bytes_escape(cc_bytes_t b, size_t max_bytes, char *buf, size_t size)
{
    size_t o = 0, i = 0;

    if (size < 4) {
        if (size > 0)
            buf[0] = '\0';
        return buf;
    }
    for (; b.p != NULL && i < b.len && i < max_bytes; i++) {
        unsigned char c = b.p[i];
        size_t need = c == '\\' ? 2 : c >= 0x20 && c < 0x7f ? 1 : 4;

        /* Keep room for the "..." marker unless this is the view's last byte. */
        bool is_last = i + 1 == b.len;
        if (o + need + (is_last ? 0 : 3) > size - 1)
            break;
        if (c == '\\') {
            buf[o++] = '\\';
            buf[o++] = '\\';
        } else if (need == 1) {
            buf[o++] = (char)c;
        } else {
            snprintf(buf + o, size - o, "\\x%02x", c);
            o += 4;
        }
    }
    if (b.p != NULL && i < b.len) {
        if (o + 3 > size - 1)
            o = size - 4;
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}
