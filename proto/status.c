/* Status code names and the error-detail helper (include/celeryc/status.h). */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "celeryc/status.h"

/* Fold `in` onto one line into t (at most tsize - 1 bytes, see cc_err_set); *boundary gets the
 * length of the longest prefix that ends where a line of `in` ended and that is at most
 * max_boundary long (0 if none). Returns the length written. */
static size_t err_fold(const char *in, char *t, size_t tsize, size_t max_boundary, size_t *boundary)
{
    size_t o = 0;
    bool is_line_end = false; /* a line break was seen and not yet written as a space */

    *boundary = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p != '\0' && o + 5 < tsize; p++) {
        unsigned char c = *p;

        /* A line break and the white space around it become one space. */
        if (c == '\n' || c == '\r' || (is_line_end && (c == '\t' || c == ' '))) {
            is_line_end = true;
            continue;
        }
        if (is_line_end) {
            if (o <= max_boundary)
                *boundary = o;
            if (o > 0)
                t[o++] = ' ';
            is_line_end = false;
        }
        if (c == '\t') {
            t[o++] = ' ';
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(t + o, tsize - o, "\\x%02x", c);
            o += 4;
        } else {
            t[o++] = (char)c;
        }
    }
    if (is_line_end && o <= max_boundary) /* a trailing newline ends the last line */
        *boundary = o;
    t[o] = '\0';
    return o;
}

int cc_err_set(struct cc_err *err, int code, const char *fmt, ...)
{
    /* Formatted into a larger buffer first, so that what does not fit is known and cut
     * where it does least harm. Never allocates; about 5 KiB of stack. */
    char raw[1024], t[4 * sizeof(raw) + 8];
    size_t cap, len, boundary, limit;
    bool is_cut;
    va_list ap;
    int n;

    if (err == NULL)
        return code;
    err->code = code;
    cap = sizeof(err->msg) - 1;
    limit = cap - 4; /* room for " ..." */
    va_start(ap, fmt);
    n = vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    if (n < 0)
        raw[0] = '\0';
    is_cut = n >= (int)sizeof(raw);
    len = err_fold(raw, t, sizeof(t), limit, &boundary);
    if (len <= cap && !is_cut) {
        memcpy(err->msg, t, len + 1);
        return code;
    }
    if (len <= limit) { /* the formatting buffer was cut, but what it holds fits */
        memcpy(err->msg, t, len);
        memcpy(err->msg + len, " ...", 5);
        return code;
    }
    if (boundary >= limit / 2) { /* whole lines, then the marker */
        memcpy(err->msg, t, boundary);
        memcpy(err->msg + boundary, " ...", 5);
        return code;
    }
    for (size_t i = limit; i >= limit / 2; i--) {
        if (t[i] == ' ') { /* whole words, then the marker */
            memcpy(err->msg, t, i);
            memcpy(err->msg + i, " ...", 5);
            return code;
        }
    }
    /* One long word: cut it, on a character boundary, not inside a \xNN escape. */
    len = cap - 3;
    while (len > 0 && ((unsigned char)t[len] & 0xC0) == 0x80)
        len--;
    for (size_t k = len >= 3 ? len - 3 : 0; k < len; k++)
        if (t[k] == '\\' && t[k + 1] == 'x' && k + 4 > len) {
            len = k;
            break;
        }
    memcpy(err->msg, t, len);
    memcpy(err->msg + len, "...", 4);
    return code;
}

const char *cc_strerror(int code)
{
    switch (code) {
    case CC_OK:
        return "CC_OK: success";
    case CC_ENOMEM:
        return "CC_ENOMEM: out of memory";
    case CC_EINVAL:
        return "CC_EINVAL: invalid argument";
    case CC_ERANGE:
        return "CC_ERANGE: value out of range";
    case CC_EIO:
        return "CC_EIO: system call failed";
    case CC_ETIMEDOUT:
        return "CC_ETIMEDOUT: timed out";
    case CC_ENOTFOUND:
        return "CC_ENOTFOUND: not found";
    case CC_EAGAIN:
        return "CC_EAGAIN: try again";
    case CC_ETOOBIG:
        return "CC_ETOOBIG: over a size limit";
    case CC_EUNSUPP:
        return "CC_EUNSUPP: not supported";
    case CC_ESHUTDOWN:
        return "CC_ESHUTDOWN: shutting down";
    case CC_EBADMSG:
        return "CC_EBADMSG: malformed message";
    case CC_ENOTASK:
        return "CC_ENOTASK: no task name";
    case CC_ENOID:
        return "CC_ENOID: no task id";
    case CC_ECONTENT:
        return "CC_ECONTENT: content type refused";
    case CC_EENCODING:
        return "CC_EENCODING: bad content encoding or compression";
    case CC_EBADTABLE:
        return "CC_EBADTABLE: AMQP table not representable";
    case CC_EBADTIME:
        return "CC_EBADTIME: bad ISO-8601 time";
    case CC_EBROKER:
        return "CC_EBROKER: broker connection failed";
    case CC_EPRECOND:
        return "CC_EPRECOND: declared with other arguments (406)";
    case CC_EACCESS:
        return "CC_EACCESS: access refused (403)";
    case CC_ECHANNEL:
        return "CC_ECHANNEL: channel closed by the broker";
    case CC_ENOTFOUND_Q:
        return "CC_ENOTFOUND_Q: queue or exchange not found (404)";
    case CC_EBACKEND:
        return "CC_EBACKEND: result backend failed";
    case CC_ECONFIG:
        return "CC_ECONFIG: bad configuration";
    case CC_EURL:
        return "CC_EURL: bad URL";
    case CC_EUSAGE:
        return "CC_EUSAGE: bad command line";
    case CC_TASK_FAILED:
        return "CC_TASK_FAILED: task raised";
    case CC_TASK_RETRY:
        return "CC_TASK_RETRY: task asked for a retry";
    case CC_TASK_REJECT:
        return "CC_TASK_REJECT: task rejected its message";
    case CC_TASK_IGNORE:
        return "CC_TASK_IGNORE: task asked to be ignored";
    default:
        return "unknown status";
    }
}
