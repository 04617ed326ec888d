/* The executor's outbox (src/worker/outbox.h): publish a canvas plan's messages on the executor's
 * own confirm-mode connection and write its backend steps.
 *
 * Design. The connection is opened on the first PUBLISH step and kept for the executor's
 * life (a prefork child runs many tasks; opening a connection per task would cost a TCP and
 * AMQP handshake each). No heartbeats (it is mostly idle and nobody services it between
 * tasks): a connection the broker dropped meanwhile fails the first publish, which is then
 * retried on a fresh one. Steps run in plan order, each to completion before the next:
 * Celery's order matters (a chord's size is set before its last header member is
 * published, so the member that completes it finds the size).
 *
 * Retries follow kombu's default task_publish_retry_policy (max_retries 3, interval_start
 * 0, interval_step 0.2, interval_max 1), which is what a Python worker does when it applies
 * a callback, with an overall budget so a broker that hangs cannot hold the executor: the
 * connect (broker_connection_timeout) and each confirm (CC_OUTBOX_CONFIRM_MS) are bounded,
 * and the run stops at CC_OUTBOX_BUDGET_MS. Backend steps retry as cc_backend_set does
 * (a pool child's backend is patient: Celery's retry_policy for results).
 *
 * Invariants: a step reported done was confirmed by the broker (or written to the backend);
 * a failed run may have done a prefix of the steps, so a caller that runs the plan again
 * (a requeued acks_late message) publishes that prefix twice: at least once, never lost.
 *
 * Reference: celery-wire.md §2.5 (messages the worker publishes), §3.4 (group/chord keys);
 * kombu/connection.py ensure, celery/app/defaults.py task_publish_retry_policy,
 * kombu/common.py maybe_declare, celery/app/amqp.py Queues (create_missing).
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <errno.h>
#include <unistd.h>

#include "log.h"
#include "outbox.h"
#include "result.h"
#include "util.h"

static void outbox_new_id(char out[37], void *arg)
{
    (void)arg;
    cc_uuid4(out);
}

void cc_outbox_init(struct cc_outbox *o, const struct cc_config *cfg)
{
    char host[256];

    memset(o, 0, sizeof(*o));
    o->cfg = cfg;
    o->conn.fd = -1;
    o->tls = (struct cc_broker_tls){
        .ca_file = cfg->broker_ssl_ca_certs,
        .cert_file = cfg->broker_ssl_certfile,
        .key_file = cfg->broker_ssl_keyfile,
        .is_verify = cfg->broker_ssl_verify != CC_SSL_VERIFY_NONE,
    };
    cc_uuid4(o->reply_to);
    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    snprintf(o->origin, sizeof(o->origin), "gen%d@%s", (int)getpid(), host);
}

void cc_outbox_ctx(struct cc_outbox *o, const struct cc_task_request *req,
                   struct cc_canvas_ctx *ctx)
{
    memset(ctx, 0, sizeof(*ctx));
    if (req != NULL) {
        ctx->parent_id = req->id;
        ctx->root_id = req->root_id != NULL ? req->root_id : req->id;
    }
    ctx->origin = o->origin;
    ctx->reply_to = o->reply_to;
    ctx->default_queue = o->cfg->default_queue != NULL && o->cfg->default_queue[0]
                             ? o->cfg->default_queue
                             : "celery";
    /* Celery passes the parent's priority only with task_inherit_parent_priority. */
    ctx->priority =
        o->cfg->inherit_parent_priority && req != NULL && req->delivery_info.priority >= 0
            ? req->delivery_info.priority
            : -1;
    ctx->now_us = cc_now_us();
    ctx->new_id = outbox_new_id;
    ctx->new_id_arg = NULL;
}

static void outbox_sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

    while (ms > 0 && nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int outbox_open(struct cc_outbox *o, struct cc_err *err)
{
    int rc;

    if (o->conn.is_channel_open)
        return CC_OK;
    cc_broker_abandon(&o->conn);
    rc =
        cc_broker_connect(&o->conn, o->cfg->broker_url, 0, o->cfg->connect_timeout_s, &o->tls, err);
    if (rc == CC_OK)
        rc = cc_broker_confirm_select(&o->conn, err);
    if (rc != CC_OK)
        cc_broker_abandon(&o->conn);
    return rc;
}

/* kombu's maybe_declare for a route with no queue: Queue(rk, Exchange(ex or rk, 'direct'),
 * routing_key=rk), as Celery's Queues.__missing__ builds it (task_create_missing_queues). */
static int outbox_declare_missing(struct cc_outbox *o, const struct cc_canvas_step *s,
                                  struct cc_err *err)
{
    const char *q = s->routing_key;
    int rc;

    if (q == NULL || q[0] == '\0')
        return cc_err_set(err, CC_ENOTFOUND_Q, "no queue for an empty routing key");
    rc = cc_broker_declare_queue(&o->conn, q, 0, err);
    if (rc == CC_OK && s->exchange != NULL && s->exchange[0] != '\0') {
        rc = cc_broker_declare_exchange(&o->conn, s->exchange, "direct", true, err);
        if (rc == CC_OK)
            rc = cc_broker_bind(&o->conn, q, s->exchange, q, err);
    }
    return rc;
}

/* One publish attempt on an open (or re-opened) connection. */
static int outbox_publish_once(struct cc_outbox *o, const struct cc_canvas_step *s,
                               struct cc_err *err)
{
    const char *ex = s->exchange != NULL ? s->exchange : "";
    const char *rk = s->routing_key != NULL ? s->routing_key : "";
    int rc = outbox_open(o, err);

    if (rc != CC_OK)
        return rc;
    rc = cc_broker_publish_confirmed(&o->conn, ex, rk, &s->msg, CC_OUTBOX_CONFIRM_MS, err);
    if (rc == CC_ENOTFOUND_Q) {
        /* Returned unroutable (or the exchange does not exist: the channel is closed).
         * A Python worker would have declared the queue before publishing. */
        if (!o->conn.is_channel_open && (rc = outbox_open(o, err)) != CC_OK)
            return rc;
        rc = outbox_declare_missing(o, s, err);
        if (rc == CC_OK)
            rc = cc_broker_publish_confirmed(&o->conn, ex, rk, &s->msg, CC_OUTBOX_CONFIRM_MS, err);
    }
    if (rc != CC_OK)
        cc_broker_abandon(&o->conn); /* start the next attempt on a fresh connection */
    return rc;
}

static int outbox_publish(struct cc_outbox *o, const struct cc_canvas_step *s, int64_t deadline_us,
                          struct cc_err *err)
{
    int rc = CC_EBROKER;

    for (int n = 0; n < CC_OUTBOX_ATTEMPTS; n++) {
        int64_t wait_ms = (int64_t)n * CC_OUTBOX_RETRY_STEP_MS;

        if (wait_ms > 1000)
            wait_ms = 1000;
        if (n > 0) {
            if (cc_mono_us() + wait_ms * 1000 >= deadline_us)
                break;
            outbox_sleep_ms(wait_ms);
        }
        rc = outbox_publish_once(o, s, err);
        if (rc == CC_OK)
            return CC_OK;
        /* A nack or a missed confirm: the broker may hold the message; publishing it again
         * is at-least-once, which is what the caller's requeue would do anyway. */
        if (cc_mono_us() >= deadline_us)
            break;
    }
    return rc;
}

static int outbox_backend_step(struct cc_backend *be, const struct cc_canvas_step *s,
                               struct cc_err *err)
{
    char *key, *value = NULL;
    size_t key_size;
    int rc;

    if (s->group_id == NULL)
        return cc_err_set(err, CC_EINVAL, "backend step without a group id");
    /* Sized from the group id, which a message may carry (issue #14: no fixed buffer). */
    key_size = sizeof("celery-taskset-meta-.s") + strlen(s->group_id);
    key = cc_xmalloc(key_size);
    if (s->kind == CC_CANVAS_CHORD_SIZE) {
        char num[32];

        snprintf(key, key_size, "celery-taskset-meta-%s.s", s->group_id);
        snprintf(num, sizeof(num), "%ld", s->chord_size);
        rc = cc_backend_set(be, key, num, strlen(num), err);
        free(key);
        return rc;
    }
    /* GroupResult.save() -> _save_group: encode({'result': result.as_tuple()}). */
    json_t *doc = json_pack("{s:O}", "result", s->group_result ? s->group_result : json_null());

    value = doc != NULL ? cc_result_json_dumps(doc) : NULL;
    json_decref(doc);
    if (value == NULL) {
        free(key);
        return cc_err_set(err, CC_ENOMEM, "out of memory");
    }
    snprintf(key, key_size, "celery-taskset-meta-%s", s->group_id);
    rc = cc_backend_set(be, key, value, strlen(value), err);
    free(value);
    free(key);
    return rc;
}

int cc_outbox_run(struct cc_outbox *o, struct cc_backend *be, const struct cc_canvas_plan *plan,
                  struct cc_err *err)
{
    int64_t deadline_us = cc_mono_us() + (int64_t)CC_OUTBOX_BUDGET_MS * 1000;

    for (size_t i = 0; plan != NULL && i < plan->n; i++) {
        const struct cc_canvas_step *s = &plan->steps[i];
        struct cc_err serr = {0};
        int rc;

        if (s->kind == CC_CANVAS_PUBLISH) {
            rc = outbox_publish(o, s, deadline_us, &serr);
            if (rc != CC_OK)
                return cc_err_set(err, rc, "publish %s[%s] to %s: %s", s->task ? s->task : "?",
                                  s->task_id ? s->task_id : "?",
                                  s->routing_key ? s->routing_key : "?", serr.msg);
            o->n_published++;
        } else {
            rc = be != NULL ? outbox_backend_step(be, s, &serr) : CC_OK;
            if (rc != CC_OK)
                return cc_err_set(err, rc, "%s for group %s: %s",
                                  s->kind == CC_CANVAS_CHORD_SIZE ? "chord size" : "save group",
                                  s->group_id ? s->group_id : "?", serr.msg);
        }
    }
    return CC_OK;
}

void cc_outbox_forget(struct cc_outbox *o)
{
    if (o->conn.conn != NULL && o->conn.fd >= 0)
        close(o->conn.fd);
    /* The library state belongs to the parent's image: leave it, start from nothing. */
    memset(&o->conn, 0, sizeof(o->conn));
    o->conn.fd = -1;
}

void cc_outbox_close(struct cc_outbox *o)
{
    cc_broker_close(&o->conn);
}
