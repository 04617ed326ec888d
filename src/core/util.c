/* Process-level helpers: allocation that exits on failure, clocks, uuid4, assertions. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>

#include "log.h"
#include "util.h"

static CC_NORETURN void util_oom(size_t n)
{
    cc_crit("out of memory allocating %zu bytes; exiting (unacked messages return to the queue)",
            n);
    _exit(70);
}

void *cc_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (p == NULL)
        util_oom(n);
    return p;
}

void *cc_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);

    if (p == NULL)
        util_oom(n * size);
    return p;
}

void *cc_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);

    if (q == NULL)
        util_oom(n);
    return q;
}

char *cc_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = cc_xmalloc(n);

    memcpy(d, s, n);
    return d;
}

int64_t cc_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t cc_mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void cc_uuid4(char out[37])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    size_t got = 0;

    /* getrandom() only fails before the entropy pool is ready or on EINTR; fall back to a
     * time/pid-seeded generator rather than producing a constant id. */
    while (got < sizeof(b)) {
        ssize_t r = getrandom(b + got, sizeof(b) - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    if (got < sizeof(b)) {
        unsigned seed = (unsigned)(cc_mono_us() ^ ((int64_t)getpid() << 16));
        for (size_t i = got; i < sizeof(b); i++)
            b[i] = (unsigned char)(rand_r(&seed) >> 7);
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    for (size_t i = 0, o = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    out[36] = '\0';
}

void cc_assert_fail(const char *what, const char *file, int line)
{
    cc_crit("assertion failed: %s (%s:%d)", what, file, line);
    abort();
}
