/* Celery event bodies (celeryev, §4): the JSON text of one event exactly as Celery's
 * EventDispatcher builds it: hostname, utcoffset, pid, clock, then the type's own fields in
 * Celery's order, then timestamp and type; Python's json.dumps separators. Pure: the
 * caller supplies the clock value and the timestamp.
 */
#ifndef CELERYC_PROTO_EVENT_H
#define CELERYC_PROTO_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Fields every event starts with (§4.2). Strings borrowed for the call. */
struct cc_event_head {
    const char *hostname; /* nodename, "celery@host" */
    int utcoffset;        /* Python's utcoffset(): hours, positive WEST of UTC */
    long pid;
    uint64_t clock;   /* Lamport clock value for this event */
    double timestamp; /* time.time() */
};

enum cc_event_kind {
    CC_EVF_STR,   /* JSON string; NULL -> null */
    CC_EVF_INT,   /* integer */
    CC_EVF_NINT,  /* integer, or null when .is_null */
    CC_EVF_FLOAT, /* Python float repr */
    CC_EVF_BOOL,
    CC_EVF_LOADAVG, /* [f, f, f] from .loadavg, each rounded to 2 decimals */
};

/* One field after the head, in the order given. */
struct cc_event_field {
    const char *key;
    enum cc_event_kind kind;
    const char *s;
    long long i;
    double f;
    bool b;
    bool is_null;
    const double *loadavg; /* 3 values */
};

/* The JSON object text of an event of `type` ("task-received", ...). Returns an owned
 * NUL-terminated string (free()), its length in *len when len != NULL, or NULL on OOM. */
char *cc_event_build(const struct cc_event_head *h, const char *type,
                     const struct cc_event_field *fields, size_t n_fields, size_t *len);

/* Routing key of a single event: the type with '-' -> '.' ("worker.heartbeat") into out
 * (size >= strlen(type) + 1). */
void cc_event_routing_key(const char *type, char *out, size_t size);

/* worker-online / worker-heartbeat / worker-offline (heartbeat.py: freq, then the
 * worker state: active, processed, loadavg, sw_ident, sw_ver, sw_sys). */
struct cc_event_worker_info {
    double freq_s;
    long long active;    /* tasks executing now */
    long long processed; /* tasks finished since start */
    double loadavg[3];   /* rounded to 2 decimals when written */
    const char *sw_ident, *sw_ver, *sw_sys;
    bool is_software_only; /* only freq and sw_*: the `heartbeat` control command's event */
};

/* task-received (strategy.py). NULL strings are written as null. */
struct cc_event_received {
    const char *uuid, *name, *argsrepr, *kwargsrepr, *root_id, *parent_id;
    long long retries;
    const char *eta, *expires;
};

/* Typed builders, each returning what cc_event_build returns. */
char *cc_event_worker(const struct cc_event_head *h, const char *type,
                      const struct cc_event_worker_info *wi, size_t *len);
char *cc_event_task_received(const struct cc_event_head *h, const struct cc_event_received *r,
                             size_t *len);
char *cc_event_task_started(const struct cc_event_head *h, const char *uuid, size_t *len);
/* result_repr: saferepr(retval, resultrepr_maxsize=1024), as the pool sends it. */
char *cc_event_task_succeeded(const struct cc_event_head *h, const char *uuid,
                              const char *result_repr, double runtime_s, size_t *len);
/* type "task-failed" or "task-retried": uuid, exception (repr), traceback. */
char *cc_event_task_failed(const struct cc_event_head *h, const char *type, const char *uuid,
                           const char *exc_repr, const char *traceback, size_t *len);
char *cc_event_task_rejected(const struct cc_event_head *h, const char *uuid, bool requeue,
                             size_t *len);
/* signum <= 0 is written as null. */
char *cc_event_task_revoked(const struct cc_event_head *h, const char *uuid, bool terminated,
                            int signum, bool expired, size_t *len);

#endif
