/* Status codes and the caller-owned error detail used across celeryc.
 *
 * Every fallible function returns int: CC_OK (0) or a negative CC_E* code. Codes live in
 * ranges per subsystem so a log line alone tells where a failure came from:
 *   -1..-99     generic          -100..-199  codec (proto/)
 *   -200..-299  broker           -300..-399  backend
 *   -400..-499  config           -500..-599  task (execution outcomes)
 *   -600..-699  jobs (reserved)
 * cc_strerror() names each; tests/unit/test_status.c walks every range.
 *
 * struct cc_err carries a human message next to the code. Filling it never allocates, and
 * cc_err_set() returns the code so a failure is one line:
 *     return cc_err_set(err, CC_EBADMSG, "body is not JSON: %s", jerr.text);
 */
#ifndef CELERYC_STATUS_H
#define CELERYC_STATUS_H

#include <stddef.h>

#if defined(__GNUC__)
#define CC_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#define CC_MUST_USE          __attribute__((warn_unused_result))
#define CC_NORETURN          __attribute__((noreturn))
#else
#define CC_PRINTF(fmt, args)
#define CC_MUST_USE
#define CC_NORETURN
#endif

enum {
    CC_OK = 0,

    /* generic */
    CC_ENOMEM = -1,     /* allocation failed */
    CC_EINVAL = -2,     /* invalid argument (a bug in the caller, or bad user input) */
    CC_ERANGE = -3,     /* value out of range */
    CC_EIO = -4,        /* system call failed; errno text is in the cc_err message */
    CC_ETIMEDOUT = -5,  /* deadline passed */
    CC_ENOTFOUND = -6,  /* lookup missed */
    CC_EAGAIN = -7,     /* nothing to do now, try later */
    CC_ETOOBIG = -8,    /* over a configured size limit */
    CC_EUNSUPP = -9,    /* valid but not supported by this build */
    CC_ESHUTDOWN = -10, /* refused because the process is shutting down */
    CC_GENERIC_MIN = -10,

    /* codec (proto/) */
    CC_EBADMSG = -100,   /* malformed message: not JSON, wrong shape, wrong types */
    CC_ENOTASK = -101,   /* no task name (neither v2 header nor v1 body) */
    CC_ENOID = -102,     /* no task id */
    CC_ECONTENT = -103,  /* content type refused (pickle, yaml, unknown) */
    CC_EENCODING = -104, /* content encoding / compression unsupported or corrupt */
    CC_EBADTABLE = -105, /* AMQP field table not representable (depth, kind) */
    CC_EBADTIME = -106,  /* unparsable ISO-8601 timestamp */
    CC_CODEC_MIN = -106,

    /* broker */
    CC_EBROKER = -200,     /* connection-level failure (socket, login, heartbeat) */
    CC_EPRECOND = -201,    /* 406 PRECONDITION_FAILED: a queue/exchange exists with other args */
    CC_EACCESS = -202,     /* 403 ACCESS_REFUSED */
    CC_ECHANNEL = -203,    /* channel closed by the server */
    CC_ENOTFOUND_Q = -204, /* 404 NOT_FOUND (queue or exchange) */
    CC_BROKER_MIN = -204,

    /* result backend */
    CC_EBACKEND = -300, /* backend unreachable or replied with an error */
    CC_BACKEND_MIN = -300,

    /* config */
    CC_ECONFIG = -400, /* bad option value or file */
    CC_EURL = -401,    /* bad URL */
    CC_EUSAGE = -402,  /* bad command line */
    CC_CONFIG_MIN = -402,

    /* task outcomes (returned by task functions through the task API) */
    CC_TASK_FAILED = -500, /* the task raised: ctx holds the exception */
    CC_TASK_RETRY = -501,  /* the task asked for a retry (see task.h) */
    CC_TASK_REJECT = -502, /* the task asked to reject its message */
    CC_TASK_IGNORE = -503, /* the task asked to ignore: ack, store nothing */
    CC_TASK_MIN = -503,
};

/* Caller-owned error detail. code mirrors the returned status; msg is always NUL-terminated
 * and one line. 256 bytes: a library's whole first line (libpq's "connection to server at
 * ... failed: ...") with our prefix fits. */
struct cc_err {
    int code;
    char msg[256];
};

/* Fill `err` (may be NULL) with `code` and a formatted message, as one line: line breaks
 * and the tabs/spaces around them (a library's multi-line text, e.g. libpq's hint lines)
 * become one space, trailing white space goes, other control bytes are written as \xNN.
 * A message that does not fit ends at a line boundary (when that keeps most of it) or a
 * word boundary, followed by " ...", or else mid-word followed by "...": never cut without
 * a marker. Returns `code`. Never allocates. */
int cc_err_set(struct cc_err *err, int code, const char *fmt, ...) CC_PRINTF(3, 4);

/* Static name of a status code ("CC_EBADMSG: malformed message"); "unknown status" for
 * codes outside every range. Never NULL. */
const char *cc_strerror(int code);

#endif
