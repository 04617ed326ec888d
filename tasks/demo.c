/* The demo task family used by the README, the examples and the benchmark.
 *
 * Registered names and signatures (Python-style, bound as Python binds a call):
 *
 *   demo.add(x, y)                     x + y with Python's + (numbers, str + str, list + list)
 *   demo.mul(x, y)                     x * y for numbers
 *   demo.xsum(numbers)                 sum(numbers)
 *   demo.noop()                        returns None (the benchmark's task)
 *   demo.wordcount(text)               {"word": count, ...} of the lowercased words of text
 *   demo.fib(n)                        n-th Fibonacci number, iterative; fib(0) = 0, fib(1) = 1;
 *                                      OverflowError past int64 (n > 92), ValueError if n < 0
 *   demo.thumbnail(width, height, factor)
 *                                      CPU-bound "resize": box-downsamples a synthetic greyscale
 *                                      image by `factor`, returns
 *                                      {"width": w // factor, "height": h // factor,
 *                                       "checksum": FNV-1a 32 of the output pixels}
 *   demo.fail(message)                 raises ValueError(message)
 *   demo.sleep(seconds)                sleeps, then returns `seconds`; the soft time limit
 *                                      ends the sleep with SoftTimeLimitExceeded, as Python's
 *                                      time.sleep() raises it
 *   demo.soft_guard(seconds)           sleeps like demo.sleep but catches the soft limit:
 *                                      returns "soft limit" (the result stands)
 *   demo.spin(seconds)                 busy loop that never looks at its limits; returns
 *                                      `seconds` (only the hard limit stops it)
 *   demo.crash(mode)                   kills its own executor: "segv" (SIGSEGV), "abort"
 *                                      (abort()), "exit" (_exit(1)), "oom" (SIGKILL, as the
 *                                      kernel's OOM killer); ValueError for another mode
 *   demo.crash_once(mode)              demo.crash(mode) unless the message is a redelivery;
 *                                      then returns "survived" (reject_on_worker_lost tests)
 *   demo.getpid()                      the pid of the executing process (pool recycling)
 *
 * demo.thumbnail in Python, for checking results from a client (integration tests do):
 *
 *   def thumbnail(width, height, factor):
 *       ow, oh, n, h = width // factor, height // factor, factor * factor, 0x811C9DC5
 *       px = lambda x, y: (x * 7 + y * 13 + ((x * y) >> 4) + ((x ^ y) & 0x3F)) & 0xFF
 *       for oy in range(oh):
 *           for ox in range(ow):
 *               s = sum(px(x, y) for y in range(oy * factor, (oy + 1) * factor)
 *                                for x in range(ox * factor, (ox + 1) * factor))
 *               h = ((h ^ ((s + n // 2) // n)) * 0x01000193) & 0xFFFFFFFF
 *       return {"width": ow, "height": oh, "checksum": h}
 *
 * Limits: 1 <= width, height <= 16384 and 1 <= factor <= min(width, height), else ValueError.
 * Words (demo.wordcount) are maximal runs of ASCII letters, digits, '_' and non-ASCII
 * characters (Python's \w for the common cases); lowercasing is ASCII-only.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pyrepr.h"

#include "pyops.h"
#include "tasks.h"

#define DEMO_THUMB_MAX_SIDE 16384

/* ---- Arithmetic --------------------------------------------------------------------- */

static int demo_add(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                    json_t **result)
{
    (void)args;
    (void)kwargs;
    return cc_pyops_add(ctx, cc_task_arg(ctx, 0), cc_task_arg(ctx, 1), result);
}

const struct cc_task_entry cc_task_demo_add = {
    .name = "demo.add",
    .run = demo_add,
    .signature = "x, y",
};

static int demo_mul(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                    json_t **result)
{
    (void)args;
    (void)kwargs;
    return cc_pyops_mul(ctx, cc_task_arg(ctx, 0), cc_task_arg(ctx, 1), result);
}

const struct cc_task_entry cc_task_demo_mul = {
    .name = "demo.mul",
    .run = demo_mul,
    .signature = "x, y",
};

static int demo_xsum(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                     json_t **result)
{
    (void)args;
    (void)kwargs;
    return cc_pyops_sum(ctx, cc_task_arg(ctx, 0), result);
}

const struct cc_task_entry cc_task_demo_xsum = {
    .name = "demo.xsum",
    .run = demo_xsum,
    .signature = "numbers",
};

static int demo_noop(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                     json_t **result)
{
    (void)ctx;
    (void)args;
    (void)kwargs;
    (void)result; /* left NULL: the task returns None */
    return CC_OK;
}

const struct cc_task_entry cc_task_demo_noop = {
    .name = "demo.noop",
    .run = demo_noop,
    .signature = "",
};

/* ---- Text --------------------------------------------------------------------------- */

static bool is_word_byte(unsigned char c)
{
    return c >= 0x80 || c == '_' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
           (c >= 'A' && c <= 'Z');
}

static int demo_wordcount(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                          json_t **result)
{
    const json_t *text = cc_task_arg(ctx, 0);
    const char *s;
    size_t len, i = 0;
    char *word;
    json_t *counts;

    (void)args;
    (void)kwargs;
    if (!json_is_string(text))
        return cc_task_raise(ctx, "builtins", "TypeError", "text must be str, not '%s'",
                             cc_pyops_type_name(text));
    s = json_string_value(text);
    len = json_string_length(text);
    word = cc_task_alloc(ctx, len + 1);
    counts = json_object();
    while (i < len) {
        size_t n = 0;
        json_t *c;

        while (i < len && !is_word_byte((unsigned char)s[i]))
            i++;
        while (i < len && is_word_byte((unsigned char)s[i])) {
            char ch = s[i++];

            word[n++] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
        }
        if (n == 0)
            continue;
        word[n] = '\0';
        /* Word boundaries are ASCII bytes, so a word never splits a UTF-8 sequence. */
        c = json_object_get(counts, word);
        if (c != NULL)
            json_integer_set(c, json_integer_value(c) + 1);
        else
            json_object_set_new_nocheck(counts, word, json_integer(1));
    }
    *result = counts;
    return CC_OK;
}

const struct cc_task_entry cc_task_demo_wordcount = {
    .name = "demo.wordcount",
    .run = demo_wordcount,
    .signature = "text",
};

/* ---- Numbers ------------------------------------------------------------------------ */

static int demo_fib(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                    json_t **result)
{
    const json_t *nv = cc_task_arg(ctx, 0);
    json_int_t n, a = 0, b = 1;

    (void)args;
    (void)kwargs;
    if (!json_is_integer(nv))
        return cc_task_raise(ctx, "builtins", "TypeError", "n must be an int, not '%s'",
                             cc_pyops_type_name(nv));
    n = json_integer_value(nv);
    if (n < 0)
        return cc_task_raise(ctx, "builtins", "ValueError", "n must be >= 0, got %lld",
                             (long long)n);
    for (json_int_t i = 0; i < n; i++) {
        json_int_t next;

        /* Python would return a big int; JSON integers here are int64, so say so. */
        if (__builtin_add_overflow(a, b, &next) && i + 1 < n)
            return cc_task_raise(ctx, "builtins", "OverflowError",
                                 "fib(%lld) does not fit in a 64-bit integer", (long long)n);
        a = b;
        b = next;
    }
    *result = json_integer(a);
    return CC_OK;
}

const struct cc_task_entry cc_task_demo_fib = {
    .name = "demo.fib",
    .run = demo_fib,
    .signature = "n",
};

/* ---- Images ------------------------------------------------------------------------- */

/* The synthetic source image: deterministic, cheap, with structure at several scales. */
static inline uint32_t thumb_pixel(uint32_t x, uint32_t y)
{
    return (x * 7 + y * 13 + ((x * y) >> 4) + ((x ^ y) & 0x3F)) & 0xFF;
}

static int int_param(struct cc_task_ctx *ctx, size_t i, const char *name, long long lo,
                     long long hi, long long *out)
{
    const json_t *v = cc_task_arg(ctx, i);

    if (!json_is_integer(v))
        return cc_task_raise(ctx, "builtins", "TypeError", "%s must be an int, not '%s'", name,
                             cc_pyops_type_name(v));
    *out = json_integer_value(v);
    if (*out < lo || *out > hi)
        return cc_task_raise(ctx, "builtins", "ValueError", "%s must be in [%lld, %lld], got %lld",
                             name, lo, hi, *out);
    return CC_OK;
}

static int demo_thumbnail(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                          json_t **result)
{
    long long w, h, f;
    uint32_t ow, oh, n, hash = 0x811C9DC5u;
    uint64_t *acc;
    int rc;

    (void)args;
    (void)kwargs;
    if ((rc = int_param(ctx, 0, "width", 1, DEMO_THUMB_MAX_SIDE, &w)) != CC_OK ||
        (rc = int_param(ctx, 1, "height", 1, DEMO_THUMB_MAX_SIDE, &h)) != CC_OK ||
        (rc = int_param(ctx, 2, "factor", 1, w < h ? w : h, &f)) != CC_OK)
        return rc;
    ow = (uint32_t)(w / f);
    oh = (uint32_t)(h / f);
    n = (uint32_t)(f * f);
    /* One output row at a time: sum `f` source rows into per-column accumulators, so memory
     * is O(width / factor) whatever the image size. */
    acc = cc_task_alloc(ctx, (size_t)ow * sizeof(*acc));
    for (uint32_t oy = 0; oy < oh; oy++) {
        memset(acc, 0, (size_t)ow * sizeof(*acc));
        for (uint32_t y = oy * (uint32_t)f; y < (oy + 1) * (uint32_t)f; y++) {
            for (uint32_t ox = 0; ox < ow; ox++) {
                uint64_t s = 0;

                for (uint32_t x = ox * (uint32_t)f; x < (ox + 1) * (uint32_t)f; x++)
                    s += thumb_pixel(x, y);
                acc[ox] += s;
            }
        }
        for (uint32_t ox = 0; ox < ow; ox++) {
            uint32_t p = (uint32_t)((acc[ox] + n / 2) / n);

            hash = (hash ^ p) * 0x01000193u;
        }
    }
    *result = json_pack("{s:I, s:I, s:I}", "width", (json_int_t)ow, "height", (json_int_t)oh,
                        "checksum", (json_int_t)hash);
    return CC_OK;
}

const struct cc_task_entry cc_task_demo_thumbnail = {
    .name = "demo.thumbnail",
    .run = demo_thumbnail,
    .signature = "width, height, factor",
};

/* ---- Failure and time --------------------------------------------------------------- */

static int demo_fail(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                     json_t **result)
{
    (void)args;
    (void)kwargs;
    (void)result;
    return cc_task_raise_args(ctx, "builtins", "ValueError", json_pack("[O]", cc_task_arg(ctx, 0)));
}

const struct cc_task_entry cc_task_demo_fail = {
    .name = "demo.fail",
    .run = demo_fail,
    .signature = "message",
};

/* Sleep up to `seconds`, in slices so that a soft time limit is seen within 50 ms even where
 * no signal interrupts the sleep (--pool threads); a prefork child's SIGUSR1 cuts a slice
 * short (EINTR). Returns true when the soft limit ended the sleep (and acknowledges it). */
static bool demo_sleep_until_soft_limit(struct cc_task_ctx *ctx, double seconds)
{
    struct timespec now, end;

    clock_gettime(CLOCK_MONOTONIC, &now);
    end.tv_sec = now.tv_sec + (time_t)seconds;
    end.tv_nsec = now.tv_nsec + (long)((seconds - (double)(time_t)seconds) * 1e9);
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000L;
    }
    for (;;) {
        if (cc_task_soft_limit_exceeded(ctx))
            return true;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double left = (double)(end.tv_sec - now.tv_sec) + (double)(end.tv_nsec - now.tv_nsec) / 1e9;
        if (left <= 0)
            return false;
        if (left > 0.05)
            left = 0.05;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(left * 1e9)};
        (void)nanosleep(&ts, NULL); /* EINTR: look at the flag at once */
    }
}

static int demo_sleep(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                      json_t **result)
{
    const json_t *v = cc_task_arg(ctx, 0);
    double seconds;
    int rc;

    (void)args;
    (void)kwargs;
    if ((rc = cc_pyops_seconds(ctx, v, &seconds)) != CC_OK)
        return rc;
    if (seconds > 1e9)
        seconds = 1e9;
    if (seconds > 0 && demo_sleep_until_soft_limit(ctx, seconds)) {
        /* What time.sleep() does in a Python task at the soft limit: raise. */
        return cc_task_raise_args(ctx, "billiard.exceptions", "SoftTimeLimitExceeded",
                                  json_array());
    }
    *result = json_deep_copy(v);
    return CC_OK;
}

const struct cc_task_entry cc_task_demo_sleep = {
    .name = "demo.sleep",
    .run = demo_sleep,
    .signature = "seconds",
};

static int demo_soft_guard(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                           json_t **result)
{
    const json_t *v = cc_task_arg(ctx, 0);
    double seconds;
    int rc;

    (void)args;
    (void)kwargs;
    if ((rc = cc_pyops_seconds(ctx, v, &seconds)) != CC_OK)
        return rc;
    if (seconds > 1e9)
        seconds = 1e9;
    if (seconds > 0 && demo_sleep_until_soft_limit(ctx, seconds)) {
        cc_task_warn(ctx, "soft time limit: cleaning up");
        *result = json_string("soft limit");
        return CC_OK;
    }
    *result = json_deep_copy(v);
    return CC_OK;
}

const struct cc_task_entry cc_task_demo_soft_guard = {
    .name = "demo.soft_guard",
    .run = demo_soft_guard,
    .signature = "seconds",
};

static int demo_spin(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                     json_t **result)
{
    const json_t *v = cc_task_arg(ctx, 0);
    struct timespec t0, now;
    volatile uint64_t n = 0;
    double seconds;
    int rc;

    (void)args;
    (void)kwargs;
    if ((rc = cc_pyops_seconds(ctx, v, &seconds)) != CC_OK)
        return rc;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        for (int i = 0; i < 1000; i++)
            n = n + 1;
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while ((double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9 < seconds);
    *result = json_deep_copy(v);
    return CC_OK;
}

const struct cc_task_entry cc_task_demo_spin = {
    .name = "demo.spin",
    .run = demo_spin,
    .signature = "seconds",
};

/* Dies the way the mode says; returns only for an unknown mode (ValueError). */
static int demo_do_crash(struct cc_task_ctx *ctx, const json_t *mode)
{
    const char *m = json_is_string(mode) ? json_string_value(mode) : "";
    char *repr;
    int rc;

    if (strcmp(m, "segv") == 0) {
        /* Default action, so a sanitizer's handler does not turn it into a report + exit. */
        signal(SIGSEGV, SIG_DFL);
        raise(SIGSEGV);
    } else if (strcmp(m, "abort") == 0) {
        abort();
    } else if (strcmp(m, "exit") == 0) {
        _exit(1);
    } else if (strcmp(m, "oom") == 0) {
        raise(SIGKILL); /* what the kernel's OOM killer sends */
    }
    repr = cc_pyrepr(mode, 0, 200);
    rc = cc_task_raise(ctx, "builtins", "ValueError", "unknown crash mode %s", repr ? repr : "?");
    free(repr);
    return rc;
}

static int demo_crash(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                      json_t **result)
{
    (void)args;
    (void)kwargs;
    (void)result;
    return demo_do_crash(ctx, cc_task_arg(ctx, 0));
}

const struct cc_task_entry cc_task_demo_crash = {
    .name = "demo.crash",
    .run = demo_crash,
    .signature = "mode",
};

static int demo_crash_once(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                           json_t **result)
{
    (void)args;
    (void)kwargs;
    if (!ctx->req->delivery_info.redelivered)
        return demo_do_crash(ctx, cc_task_arg(ctx, 0));
    *result = json_string("survived");
    return CC_OK;
}

const struct cc_task_entry cc_task_demo_crash_once = {
    .name = "demo.crash_once",
    .run = demo_crash_once,
    .signature = "mode",
};

static int demo_getpid(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                       json_t **result)
{
    (void)ctx;
    (void)args;
    (void)kwargs;
    *result = json_integer((json_int_t)getpid());
    return CC_OK;
}

const struct cc_task_entry cc_task_demo_getpid = {
    .name = "demo.getpid",
    .run = demo_getpid,
    .signature = "",
};

/* demo.progress(self, steps, delay=0.2): reports progress with a custom state, as a Python
 * task does with self.update_state(state="PROGRESS", meta={"current": i, "total": steps}):
 * a client polling AsyncResult(id).state / .info sees "PROGRESS" and the meta, then SUCCESS
 * with the final {"current": steps, "total": steps}. */
static int demo_progress(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                         json_t **result)
{
    const json_t *n = cc_task_arg(ctx, 0), *d = cc_task_arg(ctx, 1);
    double delay = 0;
    json_int_t steps;
    int rc;

    (void)args;
    (void)kwargs;
    if (!json_is_integer(n) || json_integer_value(n) < 0 || json_integer_value(n) > 100000)
        return cc_task_raise(ctx, "builtins", "ValueError", "steps must be an int in [0, 100000]");
    if ((rc = cc_pyops_seconds(ctx, d, &delay)) != CC_OK)
        return rc;
    steps = json_integer_value(n);
    for (json_int_t i = 0; i < steps; i++) {
        rc = cc_task_update_state(ctx, "PROGRESS",
                                  json_pack("{s:I,s:I}", "current", i, "total", steps));
        if (rc != CC_OK && rc != CC_EUNSUPP)
            cc_task_warn(ctx, "progress not stored: %s", cc_strerror(rc));
        if (delay > 0) {
            struct timespec ts = {(time_t)delay, (long)((delay - (double)(time_t)delay) * 1e9)};

            nanosleep(&ts, NULL);
        }
    }
    *result = json_pack("{s:I,s:I}", "current", steps, "total", steps);
    return CC_OK;
}

const struct cc_task_entry cc_task_demo_progress = {
    .name = "demo.progress",
    .run = demo_progress,
    .signature = "self, steps, delay=0.2",
};
