/* Logging in Celery's format, one write(2) per line.
 *
 * Human format matches Python Celery's worker_log_format and worker_task_log_format
 * (celery/app/defaults.py), rendered by Python logging with its default date format:
 *     [%(asctime)s: %(levelname)s/%(processName)s] %(message)s
 *     [%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: %(message)s
 * where asctime is local time "%Y-%m-%d %H:%M:%S,mmm" (milliseconds truncated, as logging's
 * Formatter.formatTime does). The JSON format writes one object per line:
 *     {"ts":"...Z","level":"INFO","process":"MainProcess","pid":1,"task":..,"task_id":..,"msg":".."}
 * with the time in UTC, microseconds, and the message escaped as JSON (control characters as
 * \uXXXX, invalid UTF-8 bytes replaced by U+FFFD so every line is valid JSON).
 *
 * Design: each call formats the whole line into a stack buffer and issues one write(2), so
 * lines from the master and forked children never interleave mid-line (a write to a pipe of
 * at most PIPE_BUF bytes is atomic; longer lines are still written in one call). Bounded
 * output, two layers: message-derived fields are cut by their call sites with cc_log_str()
 * (CC_LOG_FIELD_MAX bytes, or CC_LOG_TEXT_MAX for texts), so a message costs a few hundred
 * bytes per line whatever its publisher sent; and as a safety net for a call site that
 * forgot, a message longer than LOG_MSG_MAX (a whole line: LOG_LINE_MAX) is cut too. Every
 * cut ends in "...[+N bytes]", N being what was left out. No allocation, no locks: cc_log()
 * is safe from any thread and after fork(); it preserves errno so callers may log
 * strerror(errno) and still use errno afterwards.
 *
 * Invariants: the settings (level, format, fd) are plain statics written only by
 * cc_log_init() during start-up; the process name is thread-local, set by
 * cc_log_set_process() right after fork() or at the start of a pool thread.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* The va_list entry points are printf-like too; saying so here lets clang's
 * -Wformat-nonliteral check the calls below (log.h could carry this as well). */
void cc_log_v(int level, const char *fmt, va_list ap) CC_PRINTF(2, 0);
void cc_log_taskv(int level, const char *task_name, const char *task_id, const char *fmt,
                  va_list ap) CC_PRINTF(4, 0);

#define LOG_MSG_MAX  8192  /* bytes of formatted message kept before "...[+N bytes]" */
#define LOG_LINE_MAX 16384 /* a whole line, prefix and escaping included */
#define LOG_CUT_ROOM 40    /* kept free for "...[+N bytes]" and the line's end */

static int log_level = CC_LOG_WARNING; /* Celery's default -l */
static enum cc_log_format log_format = CC_LOG_HUMAN;
static int log_fd = STDERR_FILENO;
/* Per thread: --pool threads names each executor thread ("ThreadPoolExecutor-0_N"). */
static _Thread_local char log_process[64] = "MainProcess";

void cc_log_init(int level, enum cc_log_format format, int fd)
{
    log_level = level;
    log_format = format;
    log_fd = fd < 0 ? STDERR_FILENO : fd;
}

void cc_log_set_process(const char *name)
{
    snprintf(log_process, sizeof(log_process), "%s", name ? name : "MainProcess");
}

static const struct {
    const char *name;
    int level;
} log_names[] = {
    {"DEBUG", CC_LOG_DEBUG},    {"INFO", CC_LOG_INFO},   {"WARNING", CC_LOG_WARNING},
    {"WARN", CC_LOG_WARNING},   {"ERROR", CC_LOG_ERROR}, {"CRITICAL", CC_LOG_CRITICAL},
    {"FATAL", CC_LOG_CRITICAL},
};

int cc_log_level_parse(const char *s)
{
    char *end;
    long v;

    if (s == NULL || *s == '\0')
        return -1;
    for (size_t i = 0; i < sizeof(log_names) / sizeof(log_names[0]); i++) {
        if (strcasecmp(s, log_names[i].name) == 0)
            return log_names[i].level;
    }
    /* Celery also takes a number (logging levels are ints). */
    v = strtol(s, &end, 10);
    if (*end != '\0' || v < 0 || v > 100)
        return -1;
    return (int)v;
}

int cc_log_enabled(int level)
{
    return level >= log_level;
}

/* Python logging's levelname: the standard names, "Level N" for anything else. */
static const char *log_level_name(int level, char buf[16])
{
    switch (level) {
    case CC_LOG_DEBUG:
        return "DEBUG";
    case CC_LOG_INFO:
        return "INFO";
    case CC_LOG_WARNING:
        return "WARNING";
    case CC_LOG_ERROR:
        return "ERROR";
    case CC_LOG_CRITICAL:
        return "CRITICAL";
    default:
        snprintf(buf, 16, "Level %d", level);
        return buf;
    }
}

/* ---- Message-derived strings ------------------------------------------------------------ */

/* Per thread: CC_LOG_STR_RING buffers used in turn, each big enough for the widest cut. */
static _Thread_local char log_str_ring[CC_LOG_STR_RING][CC_LOG_TEXT_MAX + 32];
static _Thread_local unsigned log_str_next;

const char *cc_log_strn(const char *s, size_t max)
{
    size_t n, keep;
    char *out;

    if (s == NULL)
        return "(null)";
    if (max > CC_LOG_TEXT_MAX)
        max = CC_LOG_TEXT_MAX;
    n = strnlen(s, max + 1);
    if (n <= max)
        return s;
    n = max + 1 + strlen(s + max + 1);
    /* Back up over UTF-8 continuation bytes so no character is split. */
    keep = max;
    while (keep > 0 && ((unsigned char)s[keep] & 0xc0) == 0x80)
        keep--;
    out = log_str_ring[log_str_next++ % CC_LOG_STR_RING];
    memcpy(out, s, keep);
    snprintf(out + keep, sizeof(log_str_ring[0]) - keep, "...[+%zu bytes]", n - keep);
    return out;
}

static bool log_is_ctl(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

/* `s` with its control bytes escaped (\n \r \t, else \xNN), at most `max` bytes of output
 * (an escape is never split; nor is a UTF-8 character), then "...[+N bytes]" when source
 * bytes were left out (N counts source bytes). */
static const char *log_str_escaped(const char *s, size_t max)
{
    char *out = log_str_ring[log_str_next++ % CC_LOG_STR_RING];
    size_t o = 0, j = 0;

    for (; s[j] != '\0'; j++) {
        unsigned char c = (unsigned char)s[j];
        char esc[8];
        size_t n = 1;

        if (log_is_ctl(c)) {
            n = c == '\n'   ? (size_t)snprintf(esc, sizeof esc, "\\n")
                : c == '\r' ? (size_t)snprintf(esc, sizeof esc, "\\r")
                : c == '\t' ? (size_t)snprintf(esc, sizeof esc, "\\t")
                            : (size_t)snprintf(esc, sizeof esc, "\\x%02x", c);
        }
        if (o + n > max)
            break;
        if (n == 1)
            out[o] = (char)c;
        else
            memcpy(out + o, esc, n);
        o += n;
    }
    /* Back up over UTF-8 continuation bytes (copied as they are) so no character is split. */
    while (s[j] != '\0' && j > 0 && o > 0 && ((unsigned char)s[j] & 0xc0) == 0x80) {
        j--;
        o--;
    }
    if (s[j] == '\0')
        out[o] = '\0';
    else
        snprintf(out + o, sizeof(log_str_ring[0]) - o, "...[+%zu bytes]", strlen(s + j));
    return out;
}

const char *cc_log_str(const char *s)
{
    size_t i;

    if (s == NULL)
        return "(null)";
    /* Control bytes would let a field start a log line of its own (a forged "CRITICAL"
     * line, issue #14): escaped. Only the bytes that can be kept are looked at. */
    for (i = 0; i <= CC_LOG_FIELD_MAX && s[i] != '\0'; i++)
        if (log_is_ctl((unsigned char)s[i]))
            return log_str_escaped(s, CC_LOG_FIELD_MAX);
    return cc_log_strn(s, CC_LOG_FIELD_MAX);
}

/* ---- Line buffer -------------------------------------------------------------------------- */

struct log_line {
    char buf[LOG_LINE_MAX];
    size_t len;
};

/* Append at most what fits, keeping LOG_CUT_ROOM bytes for the cut marker and the line's
 * end. Returns the bytes appended. */
static size_t log_put(struct log_line *l, const char *s, size_t n)
{
    size_t room = sizeof(l->buf) - LOG_CUT_ROOM - l->len;

    if (n > room)
        n = room;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
    return n;
}

/* "...[+N bytes]": N bytes of the message were left out. */
static void log_put_cut(struct log_line *l, size_t n_cut)
{
    int w = snprintf(l->buf + l->len, sizeof(l->buf) - l->len, "...[+%zu bytes]", n_cut);

    if (w > 0)
        l->len += (size_t)w;
}

static void log_puts(struct log_line *l, const char *s)
{
    log_put(l, s, strlen(s));
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if it is not valid. */
static size_t log_utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4;
    else
        return 0;
    if (n < len)
        return 0;
    /* Second-byte limits exclude overlongs (E0, F0), surrogates (ED) and > U+10FFFF (F4). */
    if (c == 0xe0)
        lo = 0xa0;
    else if (c == 0xed)
        hi = 0x9f;
    else if (c == 0xf0)
        lo = 0x90;
    else if (c == 0xf4)
        hi = 0x8f;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++) {
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    }
    return len;
}

/* Append `s` as the inside of a JSON string. Stops (cleanly, never mid-escape) when the
 * buffer is nearly full; returns the bytes of `s` consumed (< n: the caller marks the cut). */
static size_t log_put_json(struct log_line *l, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    while (i < n) {
        char esc[8];
        size_t elen = 0, step = 1;

        if (sizeof(l->buf) - l->len < 64)
            return i;
        switch (p[i]) {
        case '"':
            memcpy(esc, "\\\"", elen = 2);
            break;
        case '\\':
            memcpy(esc, "\\\\", elen = 2);
            break;
        case '\n':
            memcpy(esc, "\\n", elen = 2);
            break;
        case '\r':
            memcpy(esc, "\\r", elen = 2);
            break;
        case '\t':
            memcpy(esc, "\\t", elen = 2);
            break;
        default:
            if (p[i] < 0x20 || p[i] == 0x7f) {
                memcpy(esc, "\\u00", 4);
                esc[4] = hex[p[i] >> 4];
                esc[5] = hex[p[i] & 15];
                elen = 6;
            } else {
                step = log_utf8_len(p + i, n - i);
                if (step == 0) {
                    memcpy(esc, "\\ufffd", elen = 6);
                    step = 1;
                }
            }
        }
        if (elen > 0)
            log_put(l, esc, elen);
        else
            log_put(l, s + i, step);
        i += step;
    }
    return i;
}

static void log_write(const struct log_line *l)
{
    size_t off = 0;

    while (off < l->len) {
        ssize_t w = write(log_fd, l->buf + off, l->len - off);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* nowhere left to report it */
        off += (size_t)w;
    }
}

/* ---- Formatting --------------------------------------------------------------------------- */

static CC_PRINTF(4, 0) void log_emit(int level, const char *task_name, const char *task_id,
                                     const char *fmt, va_list ap)
{
    struct log_line line;
    char msg[LOG_MSG_MAX];
    char lvlbuf[16];
    const char *lvl = log_level_name(level, lvlbuf);
    struct timespec ts;
    struct tm tm;
    char tbuf[64];
    size_t msg_len, total, done;
    int n;

    n = vsnprintf(msg, sizeof(msg), fmt, ap);
    if (n < 0)
        n = snprintf(msg, sizeof(msg), "(log format error: %s)", fmt);
    total = (size_t)n; /* the whole message, of which msg holds the first LOG_MSG_MAX - 1 */
    msg_len = strlen(msg);
    clock_gettime(CLOCK_REALTIME, &ts);
    line.len = 0;
    task_name = task_name != NULL ? cc_log_str(task_name) : NULL;
    task_id = task_id != NULL ? cc_log_str(task_id) : NULL;

    if (log_format == CC_LOG_JSON) {
        gmtime_r(&ts.tv_sec, &tm);
        strftime(tbuf, sizeof(tbuf), "%Y-%m-%dT%H:%M:%S", &tm);
        log_puts(&line, "{\"ts\":\"");
        log_puts(&line, tbuf);
        snprintf(tbuf, sizeof(tbuf), ".%06ldZ\",\"level\":\"", (long)(ts.tv_nsec / 1000));
        log_puts(&line, tbuf);
        log_puts(&line, lvl);
        log_puts(&line, "\",\"process\":\"");
        log_put_json(&line, log_process, strlen(log_process));
        snprintf(tbuf, sizeof(tbuf), "\",\"pid\":%ld", (long)getpid());
        log_puts(&line, tbuf);
        if (task_name != NULL || task_id != NULL) {
            log_puts(&line, ",\"task\":\"");
            log_put_json(&line, task_name ? task_name : "", task_name ? strlen(task_name) : 0);
            log_puts(&line, "\",\"task_id\":\"");
            log_put_json(&line, task_id ? task_id : "", task_id ? strlen(task_id) : 0);
            log_puts(&line, "\"");
        }
        log_puts(&line, ",\"msg\":\"");
        done = log_put_json(&line, msg, msg_len);
        if (done < total)
            log_put_cut(&line, total - done);
        /* log_put kept room for these even if the message filled the buffer. */
        memcpy(line.buf + line.len, "\"}\n", 3);
        line.len += 3;
    } else {
        localtime_r(&ts.tv_sec, &tm);
        strftime(tbuf, sizeof(tbuf), "[%Y-%m-%d %H:%M:%S", &tm);
        log_puts(&line, tbuf);
        snprintf(tbuf, sizeof(tbuf), ",%03ld: ", (long)(ts.tv_nsec / 1000000));
        log_puts(&line, tbuf);
        log_puts(&line, lvl);
        log_puts(&line, "/");
        log_puts(&line, log_process);
        log_puts(&line, "] ");
        if (task_name != NULL || task_id != NULL) {
            log_puts(&line, task_name ? task_name : "");
            log_puts(&line, "[");
            log_puts(&line, task_id ? task_id : "");
            log_puts(&line, "]: ");
        }
        done = log_put(&line, msg, msg_len);
        if (done < total)
            log_put_cut(&line, total - done);
        line.buf[line.len++] = '\n';
    }
    log_write(&line);
}

void cc_log_v(int level, const char *fmt, va_list ap)
{
    int saved = errno;

    if (cc_log_enabled(level))
        log_emit(level, NULL, NULL, fmt, ap);
    errno = saved;
}

void cc_log(int level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    cc_log_v(level, fmt, ap);
    va_end(ap);
}

void cc_log_taskv(int level, const char *task_name, const char *task_id, const char *fmt,
                  va_list ap)
{
    int saved = errno;

    if (cc_log_enabled(level))
        log_emit(level, task_name ? task_name : "", task_id ? task_id : "", fmt, ap);
    errno = saved;
}

void cc_log_task(int level, const char *task_name, const char *task_id, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    cc_log_taskv(level, task_name, task_id, fmt, ap);
    va_end(ap);
}
