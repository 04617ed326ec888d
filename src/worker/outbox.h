/* The executor's outbox: carries out a canvas plan (proto/canvas.h) from inside a pool
 * child, a pool thread or the solo master, as Celery's worker process does when a task's
 * callbacks, chain, errbacks or chord body are applied (celery/app/trace.py).
 *
 * Each executor owns one outbox with its own AMQP connection, opened on first use (most
 * tasks never publish), in publisher-confirm mode with mandatory publishes like the master's
 * publishing connection: a PUBLISH step is done when the broker has confirmed it. Backend
 * steps (CHORD_SIZE, SAVE_GROUP) go to the executor's result backend with
 * cc_backend_set (Celery's backend.set: SETEX + PUBLISH).
 *
 * Bounded: a step is tried at most CC_OUTBOX_ATTEMPTS times (kombu's default
 * task_publish_retry_policy: 0, 0.2, 0.4 s apart, each on a fresh connection), and the
 * whole run gives up after CC_OUTBOX_BUDGET_MS, so a broker that is down fails the run with
 * a clear error instead of blocking the executor. Steps already confirmed are not repeated
 * when a later one is retried.
 *
 * Not thread-safe: one outbox per executor. No connection crosses fork(): a forked child
 * that inherited one calls cc_outbox_forget().
 */
#ifndef CELERYC_OUTBOX_H
#define CELERYC_OUTBOX_H

#include <stdbool.h>

#include "backend.h"
#include "broker.h"
#include "canvas.h"
#include "config.h"

#define CC_OUTBOX_ATTEMPTS      4
#define CC_OUTBOX_CONFIRM_MS    5000
#define CC_OUTBOX_BUDGET_MS     20000
#define CC_OUTBOX_RETRY_STEP_MS 200

struct cc_outbox {
    const struct cc_config *cfg; /* borrowed */
    struct cc_broker conn;       /* opened lazily; is_channel_open when usable */
    struct cc_broker_tls tls;
    char reply_to[37]; /* Celery's app.thread_oid: one per executor, "reply_to" property */
    char origin[300];  /* "gen<pid>@<host>", as kombu's anon_nodename */
    unsigned long n_published;
};

/* Prepare `o` (caller's storage); no I/O. `cfg` is borrowed for the outbox's life. */
void cc_outbox_init(struct cc_outbox *o, const struct cc_config *cfg);

/* Fill a canvas context for steps published on behalf of `req` (parent_id = its id,
 * root_id = its root), with this outbox's origin and reply_to, the default queue, uuid4
 * ids and the current time. `req` may be NULL (no parent). Borrowed strings. */
void cc_outbox_ctx(struct cc_outbox *o, const struct cc_task_request *req,
                   struct cc_canvas_ctx *ctx);

/* Carry out every step of `plan` in order: PUBLISH steps published and confirmed,
 * CHORD_SIZE / SAVE_GROUP written through `be`. Returns CC_OK when all are done; else the
 * error of the step that failed after its retries (CC_EBROKER, CC_ETIMEDOUT, CC_EBACKEND,
 * ...), err naming the step ("publish t.add[<id>] to celery: ..."). Logs nothing; the caller
 * decides. A message no queue is bound for (returned, mandatory) is declared as kombu
 * declares a missing queue, Queue(name, Exchange(name), name), and published again. */
int cc_outbox_run(struct cc_outbox *o, struct cc_backend *be, const struct cc_canvas_plan *plan,
                  struct cc_err *err) CC_MUST_USE;

/* In a forked child that inherited `o`: drop the connection without any I/O. */
void cc_outbox_forget(struct cc_outbox *o);

/* Close the connection cleanly (if open) and free it; `o` may be used again. */
void cc_outbox_close(struct cc_outbox *o);

#endif
