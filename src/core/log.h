/* Logging: Celery's human format by default, one JSON object per line with --log-format json.
 *
 *   [2026-11-23 10:00:00,123: INFO/MainProcess] celery@host ready.
 *   {"ts":"2026-11-23T10:00:00.123456Z","level":"INFO","process":"MainProcess","msg":"..."}
 *
 * Lines go to stderr (or the file given to cc_log_init) with one write(2) each, so lines from
 * the master and forked children never interleave mid-line. Not thread-safe for init;
 * cc_log() itself is safe to call from any thread and after fork.
 */
#ifndef CELERYC_LOG_H
#define CELERYC_LOG_H

#include <stdarg.h>
#include <stddef.h>

#include "celeryc/status.h"

enum cc_log_level {
    CC_LOG_DEBUG = 10,
    CC_LOG_INFO = 20,
    CC_LOG_WARNING = 30,
    CC_LOG_ERROR = 40,
    CC_LOG_CRITICAL = 50,
};

enum cc_log_format {
    CC_LOG_HUMAN = 0,
    CC_LOG_JSON = 1,
};

/* Set the threshold, format and output fd (-1 = stderr). */
void cc_log_init(int level, enum cc_log_format format, int fd);

/* Process name shown in each line: "MainProcess", "ForkPoolWorker-1",
 * "ThreadPoolExecutor-0_0", ... (copied; per thread, so each pool thread sets its own). */
void cc_log_set_process(const char *name);

/* Parse "debug", "INFO", "warning", "error", "critical" (case-insensitive) or a number.
 * Returns the level, or -1 if unknown. */
int cc_log_level_parse(const char *s);

int cc_log_enabled(int level);

void cc_log(int level, const char *fmt, ...) CC_PRINTF(2, 3);
void cc_log_v(int level, const char *fmt, va_list ap);

/* A line tagged with a task, as Celery's task logger: "<name>[<id>]: <message>".
 * In JSON format the name and id become fields "task" and "task_id". Name and id go through
 * cc_log_str() here (they come from the message). */
void cc_log_task(int level, const char *task_name, const char *task_id, const char *fmt, ...)
    CC_PRINTF(4, 5);
void cc_log_taskv(int level, const char *task_name, const char *task_id, const char *fmt,
                  va_list ap);

/* ---- Message-derived strings ------------------------------------------------------------
 *
 * Anything a publisher controls (task ids and names, group/parent/root ids, routing keys,
 * content types, exception texts built from the wire) goes into a log line through
 * cc_log_str(), so one hostile message cannot write 100 KB of log per line. */

/* Bytes of a message-derived field kept in a log line (a UUID is 36). */
#define CC_LOG_FIELD_MAX 200
/* The cap cc_log_strn() allows at most: for texts such as exception messages. */
#define CC_LOG_TEXT_MAX 1024
/* Distinct results of cc_log_str/cc_log_strn alive at once per thread. */
#define CC_LOG_STR_RING 8

/* `s` when it is at most CC_LOG_FIELD_MAX bytes of printable text; else its first bytes, cut
 * on a UTF-8 boundary, followed by "...[+N bytes]" (N = the bytes left out). Control bytes
 * (newline, ESC, ...) are escaped as \n, \r, \t or \xNN, so a field can never start a
 * forged log line of its own. NULL gives "(null)".
 * Returns: borrowed; either `s` itself or a per-thread buffer that stays valid for the next
 * CC_LOG_STR_RING - 1 calls in the same thread, so use at most CC_LOG_STR_RING of them in
 * one log call. Never allocates; safe in any thread and after fork(). */
const char *cc_log_str(const char *s);

/* The same cut with a cap of `max` bytes (clamped to CC_LOG_TEXT_MAX), for multi-line texts
 * (tracebacks): control bytes are kept. */
const char *cc_log_strn(const char *s, size_t max);

#define cc_debug(...) cc_log(CC_LOG_DEBUG, __VA_ARGS__)
#define cc_info(...)  cc_log(CC_LOG_INFO, __VA_ARGS__)
#define cc_warn(...)  cc_log(CC_LOG_WARNING, __VA_ARGS__)
#define cc_error(...) cc_log(CC_LOG_ERROR, __VA_ARGS__)
#define cc_crit(...)  cc_log(CC_LOG_CRITICAL, __VA_ARGS__)

#endif
