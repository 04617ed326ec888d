/* Result meta exactly as Python Celery's backends read it (reference §3).
 * Pure: the caller passes the time. */
#ifndef CELERYC_PROTO_RESULT_H
#define CELERYC_PROTO_RESULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "celeryc/status.h"

/* One stored state. Borrowed inputs; NULL means "absent" as documented per field. */
struct cc_result {
    const char *task_id;
    const char *status;         /* "SUCCESS", "FAILURE", "RETRY", "STARTED", "REVOKED" */
    const json_t *result;       /* value or exception dict; NULL -> null */
    const char *traceback;      /* NULL -> null */
    const json_t *children;     /* NULL -> [] */
    int64_t date_done_us;       /* 0 -> null (non-ready states) */
    bool date_done_with_offset; /* "+00:00" suffix (Celery >= 5.3 style); off = 5.2 style */
    const char *group_id;       /* key present iff non-NULL */
    const char *parent_id;      /* key present iff non-NULL */
    /* result_extended */
    bool extended;
    const char *name;
    const json_t *args;
    const json_t *kwargs;
    const char *worker;
    int retries;
    const char *queue;
};

/* Encode as the JSON Celery's redis backend stores: keys status, result, traceback,
 * children, date_done, [group_id], [parent_id], [name, args, kwargs, worker, retries,
 * queue], task_id, with Python's ", " / ": " separators and ASCII escapes.
 * Returns CC_OK and an owned malloc'd string in *out (length in *len), CC_EINVAL (no task_id
 * or status) or CC_ENOMEM. */
int cc_result_encode(const struct cc_result *r, char **out, size_t *len,
                     struct cc_err *err) CC_MUST_USE;

/* New exception dict {"exc_type", "exc_message", "exc_module"} as Celery's JSON result
 * serializer writes it. Takes ownership of `exc_args` (JSON array; NULL -> []). Returns an
 * owned object or NULL on OOM. */
json_t *cc_result_exc_new(const char *exc_module, const char *exc_type, json_t *exc_args);

/* Serialise any JSON value with Celery's separators and ASCII escapes. Owned, or NULL. */
char *cc_result_json_dumps(const json_t *v);

#endif
