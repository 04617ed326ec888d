/* Redelivered messages: delivery counting, dead-lettering of poison messages, and Celery's
 * worker_deduplicate_successful_tasks.
 *
 * Design. Everything here is keyed on the AMQP `redelivered` flag (or a quorum queue's
 * x-delivery-count header), so a first delivery costs nothing: no Redis round trip, no
 * lookup. For a redelivered message:
 *
 *  - Counting, at receipt (cc_redeliver_on_receipt). The number of redeliveries is, in order
 *    of preference: the x-delivery-count header (RabbitMQ quorum queues count returned
 *    deliveries themselves); else a counter in Redis, `celeryc-deliveries-<task id>`,
 *    incremented and given a TTL of CC_REDELIVER_KEY_TTL_S in one EVAL (one round trip;
 *    shared by every worker of the fleet and surviving the crash it is meant to count);
 *    else a small in-memory table (it only sees redeliveries to this worker process, so it
 *    catches a message that kills pool children repeatedly, not one that kills the worker).
 *    Past worker_max_redeliveries the message is dead-lettered: published unchanged
 *    (properties, headers, body) to the durable queue "<queue>.dead" through the default
 *    exchange and then acked, or, with worker_dead_letter=dlx, rejected with requeue=false
 *    so that RabbitMQ routes it to the queue's dead-letter exchange. FAILURE with
 *    billiard.exceptions.WorkerLostError is stored (unless the result is ignored), so a
 *    client blocked in AsyncResult.get() raises instead of waiting forever; Celery's client
 *    rebuilds that class (celery.exceptions imports it). The counter key is deleted, so a
 *    message shovelled back from the dead queue starts from zero.
 *    Counting happens at receipt, not at execution: a poison message that kills the whole
 *    worker (OOM of the master, a crash in decoding) never reaches a child, and a message
 *    must be dead-lettered before it is handed out again. The price: a message that was only
 *    prefetched (never run) when a worker stopped counts as redelivered too, which is why the
 *    default limit (10) is well above the redeliveries that restarts cause in practice.
 *
 *  - Deduplication, at dispatch (cc_redeliver_gate), in the master just before the hand-off
 *    to a child. Celery checks inside the pool child before running (app/trace.py): its
 *    in-memory successful_requests set, then AsyncResult.state == SUCCESS, logging
 *    "Task <name>[<id>] Task already completed successfully." and returning without running.
 *    We check in the master because (1) the master also knows what runs right now: a
 *    redelivered twin of a task still running in this worker (a connection was lost and the
 *    message came back while its child kept going) is parked, not run concurrently, and is
 *    examined again when the twin's report has arrived (its result is stored by then, so the
 *    check then finds SUCCESS); (2) the decision to ack without running is the master's
 *    anyway (it owns the channel); (3) the cost is one GET, for redelivered acks_late
 *    messages only, which are rare, bounded by CC_REDELIVER_REDIS_TIMEOUT_MS and skipped
 *    for CC_REDELIVER_REDIS_BACKOFF_US after a failure. Checking at dispatch rather than at
 *    receipt keeps the check as late, hence as fresh, as possible. When Redis cannot be
 *    read the task runs (at-least-once), as Celery's BackendGetMetaError branch does.
 *
 * Invariants: a parked request is unacked and counted by cc_redeliver_lowest_tag, so a
 * coalesced basic.ack(multiple) never covers it; it is dispatched only when no running slot
 * holds its task id. A dead-lettered message is acked only after its copy was published.
 *
 * Reference: celery/app/trace.py (deduplicate_successful_tasks), celery/worker/state.py
 * (successful_requests); RabbitMQ quorum queues (x-delivery-count); celery-wire.md §6.2.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "chord.h"
#include "log.h"
#include "redeliver.h"
#include "url.h"
#include "util.h"

/* ---- Pure helpers -------------------------------------------------------------------- */

long long cc_redeliver_header_count(const amqp_table_t *headers)
{
    static const char key[] = "x-delivery-count";

    if (headers == NULL)
        return -1;
    for (int i = 0; i < headers->num_entries; i++) {
        const amqp_table_entry_t *e = &headers->entries[i];
        const amqp_field_value_t *v = &e->value;
        long long n;

        if (e->key.len != sizeof(key) - 1 || memcmp(e->key.bytes, key, sizeof(key) - 1) != 0)
            continue;
        switch (v->kind) {
        case AMQP_FIELD_KIND_I8:
            n = v->value.i8;
            break;
        case AMQP_FIELD_KIND_U8:
            n = v->value.u8;
            break;
        case AMQP_FIELD_KIND_I16:
            n = v->value.i16;
            break;
        case AMQP_FIELD_KIND_U16:
            n = v->value.u16;
            break;
        case AMQP_FIELD_KIND_I32:
            n = v->value.i32;
            break;
        case AMQP_FIELD_KIND_U32:
            n = v->value.u32;
            break;
        case AMQP_FIELD_KIND_I64:
            n = v->value.i64;
            break;
        case AMQP_FIELD_KIND_U64:
            n = v->value.u64 > (uint64_t)INT64_MAX ? INT64_MAX : (long long)v->value.u64;
            break;
        default:
            return -1;
        }
        return n < 0 ? -1 : n;
    }
    return -1;
}

int cc_redeliver_key(const char *task_id, char *buf, size_t size)
{
    int n = snprintf(buf, size, CC_REDELIVER_KEY_PREFIX "%s", task_id);

    return (n < 0 || (size_t)n >= size) ? -1 : n;
}

bool cc_redeliver_meta_is_success(const char *meta, size_t len)
{
    json_t *root = json_loadb(meta, len, 0, NULL);
    const char *st = json_string_value(json_object_get(root, "status"));
    bool is = st != NULL && strcmp(st, "SUCCESS") == 0;

    json_decref(root);
    return is;
}

/* ---- Redis with back-off ------------------------------------------------------------- */

bool cc_redeliver_kv_usable(const struct cc_redeliver_kv *kv)
{
    /* Skipped for a while after a failure, unless a probe finds it back (issue #14). */
    return kv->redis != NULL && (cc_mono_us() >= kv->down_until_us || cc_redis_probe(kv->redis));
}

redisReply *cc_redeliver_kv_cmd(struct cc_redeliver_kv *kv, int argc, const char **argv,
                                const size_t *lens)
{
    struct cc_err err = {0};
    redisReply *rep;

    if (!cc_redeliver_kv_usable(kv))
        return NULL;
    rep = cc_redis_cmd(kv->redis, argc, argv, lens, &err);
    if (rep == NULL) {
        if (kv->down_until_us == 0)
            cc_warn("redis (%s): %s; falling back until it is back (probed every 0.5 s, "
                    "retried at least every %d s)",
                    kv->what, err.msg, CC_REDELIVER_REDIS_BACKOFF_US / 1000000);
        kv->down_until_us = cc_mono_us() + CC_REDELIVER_REDIS_BACKOFF_US;
        return NULL;
    }
    if (kv->down_until_us != 0) {
        cc_warn("redis (%s): reachable again", kv->what);
        kv->down_until_us = 0;
    }
    return rep;
}

/* No connection crosses fork(): pool children (forked by pool.c, which knows nothing of these
 * clients) drop the master's bookkeeping connections through an atfork handler, without
 * any I/O on them. One redeliver object per process (the master's). */
static struct cc_redeliver *redeliver_self;
static bool redeliver_is_atfork_set;

static void redeliver_atfork_child(void)
{
    struct cc_redeliver *rd = redeliver_self;

    if (rd == NULL)
        return;
    cc_redis_after_fork(rd->state.redis);
    cc_redis_after_fork(rd->results.redis);
}

static bool redeliver_is_redis_url(const char *url)
{
    return url != NULL && (strncmp(url, "redis://", 8) == 0 || strncmp(url, "rediss://", 9) == 0 ||
                           strncmp(url, "unix://", 7) == 0);
}

int cc_redeliver_init(struct cc_redeliver *rd, const struct cc_config *cfg, const char *hostname,
                      struct cc_broker *broker, struct cc_backend *backend, char *const *queues,
                      size_t n_queues, struct cc_err *err)
{
    const char *rb = cfg->result_backend;
    const char *su = cfg->worker_redis_url;
    int rc = CC_OK;

    memset(rd, 0, sizeof(*rd));
    rd->cfg = cfg;
    rd->hostname = hostname;
    rd->broker = broker;
    rd->backend = backend;
    rd->queues = queues;
    rd->n_queues = n_queues;
    rd->results.what = "result backend";
    rd->state.what = "worker_redis_url";
    if (!redeliver_is_atfork_set) {
        if (pthread_atfork(NULL, NULL, redeliver_atfork_child) != 0)
            return cc_err_set(err, CC_EIO, "pthread_atfork failed");
        redeliver_is_atfork_set = true;
    }
    redeliver_self = rd;
    if (redeliver_is_redis_url(rb)) {
        rc = cc_redis_open(rb, CC_REDELIVER_REDIS_TIMEOUT_MS, &rd->results.redis, err);
        if (rc != CC_OK)
            return rc;
        rd->results.is_owned = true;
    }
    if (su != NULL && su[0] != '\0' && strcmp(su, rb ? rb : "") != 0) {
        if (!redeliver_is_redis_url(su))
            return cc_err_set(err, CC_EURL,
                              "worker_redis_url: not a redis://, rediss:// or "
                              "unix:// URL");
        rc = cc_redis_open(su, CC_REDELIVER_REDIS_TIMEOUT_MS, &rd->state.redis, err);
        rd->state.is_owned = rc == CC_OK;
    } else {
        /* Same server: share the client (and its back-off). */
        rd->state.redis = rd->results.redis;
        rd->state.what = rd->results.what;
    }
    return rc;
}

void cc_redeliver_forget_parked(struct cc_redeliver *rd)
{
    struct cc_request *r;

    while ((r = rd->parked) != NULL) {
        rd->parked = r->next;
        cc_request_free(r);
    }
}

void cc_redeliver_deinit(struct cc_redeliver *rd)
{
    if (redeliver_self == rd)
        redeliver_self = NULL;
    cc_redeliver_forget_parked(rd);
    if (rd->state.is_owned)
        cc_redis_free(rd->state.redis);
    if (rd->results.is_owned)
        cc_redis_free(rd->results.redis);
    rd->state.redis = rd->results.redis = NULL;
    rd->state.is_owned = rd->results.is_owned = false;
    cc_redeliver_chord_clear(rd); /* [canvas-chord] */
}

struct cc_redeliver_kv *cc_redeliver_state_kv(struct cc_redeliver *rd)
{
    return rd->state.redis != NULL ? &rd->state : NULL;
}

/* ---- Start-up ------------------------------------------------------------------------ */

static bool redeliver_to_queue(const struct cc_redeliver *rd)
{
    return rd->cfg->max_redeliveries > 0 && rd->cfg->dead_letter == CC_DEAD_LETTER_QUEUE;
}

int cc_redeliver_declare(struct cc_redeliver *rd, struct cc_err *err)
{
    int rc = CC_OK;

    for (size_t i = 0; i < rd->n_queues && rc == CC_OK && redeliver_to_queue(rd); i++) {
        size_t n = strlen(rd->queues[i]) + sizeof(CC_REDELIVER_DEAD_SUFFIX);
        char *name = cc_xmalloc(n);

        snprintf(name, n, "%s" CC_REDELIVER_DEAD_SUFFIX, rd->queues[i]);
        rc = cc_broker_declare_queue(rd->broker, name, 0, err);
        free(name);
    }
    return rc;
}

/* ---- Counting and dead-lettering ----------------------------------------------------- */

static int redeliver_local_count(struct cc_redeliver *rd, const char *id)
{
    struct cc_redeliver_local *slot = NULL, *oldest = &rd->local[0];
    int64_t now = cc_mono_us();

    for (size_t i = 0; i < CC_REDELIVER_LOCAL_SLOTS; i++) {
        struct cc_redeliver_local *l = &rd->local[i];

        if (l->id[0] != '\0' && strcmp(l->id, id) == 0) {
            slot = l;
            break;
        }
        if (l->used_us < oldest->used_us)
            oldest = l;
    }
    if (slot == NULL) {
        slot = oldest; /* a free slot has used_us 0, the oldest possible */
        snprintf(slot->id, sizeof(slot->id), "%s", id);
        slot->count = 0;
    }
    slot->used_us = now;
    return ++slot->count;
}

/* INCR + EXPIRE in one round trip. */
static const char redeliver_incr_lua[] = "local n = redis.call('INCR', KEYS[1]) "
                                         "redis.call('EXPIRE', KEYS[1], ARGV[1]) "
                                         "return n";

/* Redeliveries of r so far (this one included); *how names the source for the log. */
static long long redeliver_count(struct cc_redeliver *rd, const amqp_envelope_t *env,
                                 const struct cc_request *r, const char **how)
{
    const amqp_basic_properties_t *p = &env->message.properties;
    long long n =
        (p->_flags & AMQP_BASIC_HEADERS_FLAG) ? cc_redeliver_header_count(&p->headers) : -1;
    char key[256], ttl[24];
    redisReply *rep;

    if (n >= 0) {
        *how = "x-delivery-count";
        return n;
    }
    if (cc_redeliver_key(r->msg.id, key, sizeof(key)) >= 0 && rd->state.redis != NULL) {
        const char *argv[5] = {"EVAL", redeliver_incr_lua, "1", key, ttl};

        snprintf(ttl, sizeof(ttl), "%d", CC_REDELIVER_KEY_TTL_S);
        rep = cc_redeliver_kv_cmd(&rd->state, 5, argv, NULL);
        if (rep != NULL && rep->type == REDIS_REPLY_INTEGER) {
            n = rep->integer;
            freeReplyObject(rep);
            *how = "redis";
            return n;
        }
        if (rep != NULL) {
            cc_warn("redis (%s): %s: %s", rd->state.what, CC_REDELIVER_KEY_PREFIX,
                    rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
            freeReplyObject(rep);
        }
    }
    *how = "local";
    return redeliver_local_count(rd, r->msg.id);
}

/* The queue the delivery came from: consumer tags are assigned in basic.consume order, which
 * is the order of rd->queues. Falls back to the routing key (= the queue name for
 * Celery's default direct routing). */
static const char *redeliver_queue_of(const struct cc_redeliver *rd, const amqp_envelope_t *env,
                                      const struct cc_request *r)
{
    for (size_t i = 0; i < rd->broker->n_consumers && i < rd->n_queues; i++) {
        const char *t = rd->broker->consumer_tags[i];

        if (t != NULL && strlen(t) == env->consumer_tag.len &&
            memcmp(t, env->consumer_tag.bytes, env->consumer_tag.len) == 0)
            return rd->queues[i];
    }
    return r->routing_key != NULL ? r->routing_key : "celery";
}

/* [canvas-chord] */
static void redeliver_new_id(char out[37], void *arg)
{
    (void)arg;
    cc_uuid4(out);
}

void cc_redeliver_chord_clear(struct cc_redeliver *rd)
{
    if (rd->is_chord_pending)
        cc_canvas_plan_deinit(&rd->chord_plan);
    free(rd->chord_group);
    rd->chord_group = NULL;
    rd->is_chord_pending = false;
}

/* [canvas-chord] See redeliver.h. */
void cc_redeliver_chord_part(struct cc_redeliver *rd, const struct cc_request *r,
                             const struct cc_task_request *view, const char *state,
                             const char *exc_module, const char *exc_type, const char *exc_arg)
{
    cc_redeliver_chord_part_args(rd, r, view, state, exc_module, exc_type,
                                 json_pack("[s]", exc_arg));
}

void cc_redeliver_chord_part_args(struct cc_redeliver *rd, const struct cc_request *r,
                                  const struct cc_task_request *view, const char *state,
                                  const char *exc_module, const char *exc_type, json_t *exc_args)
{
    struct cc_canvas_ctx ctx = {0};
    struct cc_err err = {0};
    json_t *exc;

    cc_redeliver_chord_clear(rd);
    if (view->group == NULL || !json_is_object(json_object_get(view->embed, "chord"))) {
        json_decref(exc_args);
        return;
    }
    if (rd->chord_reply_to[0] == '\0') {
        cc_uuid4(rd->chord_reply_to);
        snprintf(rd->chord_origin, sizeof(rd->chord_origin), "gen%ld@%s", (long)getpid(),
                 strchr(rd->hostname, '@') ? strchr(rd->hostname, '@') + 1 : rd->hostname);
    }
    ctx.parent_id = view->id;
    ctx.root_id = view->root_id;
    ctx.origin = rd->chord_origin;
    ctx.reply_to = rd->chord_reply_to;
    ctx.default_queue = rd->cfg->default_queue;
    ctx.priority = -1;
    ctx.now_us = cc_now_us();
    ctx.new_id = redeliver_new_id;
    cc_canvas_plan_init(&rd->chord_plan);
    rd->is_chord_pending = true;
    exc = cc_result_exc_new(exc_module, exc_type, exc_args);
    if (exc == NULL || cc_chord_part_return(rd->backend, rd->cfg, view, state, exc, &ctx,
                                            &rd->chord_plan, &rd->chord_group, &err) != CC_OK)
        cc_error("Task %s[%s]: chord %s: could not return the member's part: %s",
                 cc_request_name(r), r->msg.id, view->group, exc ? err.msg : "out of memory");
    json_decref(exc);
}

static void redeliver_store_failure(struct cc_redeliver *rd, const struct cc_request *r,
                                    const char *msg)
{
    struct cc_task_request view;
    struct cc_err err = {0};

    cc_request_view(r, rd->hostname, &view);
    if (!(r->ignore_result && !rd->cfg->store_errors_even_if_ignored) &&
        cc_backend_store_exc(rd->backend, rd->cfg, &view, r->msg.args, r->msg.kwargs, "FAILURE",
                             "billiard.exceptions", "WorkerLostError", msg, &err) != CC_OK)
        cc_error("Task %s[%s]: could not store FAILURE: %s", cc_request_name(r), r->msg.id,
                 err.msg);
    /* [canvas-chord] it never runs again: fail its chord instead of leaving it pending */
    cc_redeliver_chord_part(rd, r, &view, "FAILURE", "billiard.exceptions", "WorkerLostError", msg);
}

enum cc_redeliver_verdict cc_redeliver_on_receipt(struct cc_redeliver *rd,
                                                  const amqp_envelope_t *env, struct cc_request *r,
                                                  int *rc, struct cc_err *err)
{
    const amqp_basic_properties_t *p = &env->message.properties;
    const int max = rd->cfg->max_redeliveries;
    const char *how = "", *q;
    char dest[300], msg[512], key[256];
    long long n;

    *rc = CC_OK;
    /* Quorum queues send x-delivery-count: 0 with a first delivery (RabbitMQ 3.10). */
    if (!r->redelivered &&
        !((p->_flags & AMQP_BASIC_HEADERS_FLAG) && cc_redeliver_header_count(&p->headers) > 0))
        return CC_REDELIVER_RUN;
    if (max <= 0)
        return CC_REDELIVER_RUN;
    n = redeliver_count(rd, env, r, &how);
    if (n <= max) {
        cc_info("Task %s[%s] redelivered (%lld of at most %d redeliveries, counted by %s)",
                cc_request_name(r), r->msg.id, n, max, how);
        return CC_REDELIVER_RUN;
    }
    q = redeliver_queue_of(rd, env, r);
    if (rd->cfg->dead_letter == CC_DEAD_LETTER_QUEUE) {
        amqp_bytes_t body = env->message.body;

        snprintf(dest, sizeof(dest), "%s" CC_REDELIVER_DEAD_SUFFIX, q);
        *rc = cc_broker_publish_props(rd->broker, "", dest, p, body, err);
        if (*rc != CC_OK) {
            cc_error("Task %s[%s]: could not dead-letter to queue '%s': %s", cc_request_name(r),
                     r->msg.id, dest, err->msg);
            return CC_REDELIVER_RUN; /* unused: the caller treats *rc as fatal */
        }
    } else {
        snprintf(dest, sizeof(dest), "the dead-letter exchange of queue '%s'", q);
    }
    rd->n_dead++;
    cc_error("Task %s[%s] dead-lettered: redelivered %lld times, more than "
             "worker_max_redeliveries=%d (counted by %s); moved to %s%s%s",
             cc_request_name(r), r->msg.id, n, max, how,
             rd->cfg->dead_letter == CC_DEAD_LETTER_QUEUE ? "queue '" : "", dest,
             rd->cfg->dead_letter == CC_DEAD_LETTER_QUEUE ? "'" : "");
    snprintf(msg, sizeof(msg),
             "celeryc: message redelivered %lld times (worker_max_redeliveries=%d), "
             "dead-lettered to %s",
             n, max, dest);
    redeliver_store_failure(rd, r, msg);
    if (strcmp(how, "redis") == 0 && cc_redeliver_key(r->msg.id, key, sizeof(key)) >= 0) {
        const char *argv[2] = {"DEL", key};
        redisReply *rep = cc_redeliver_kv_cmd(&rd->state, 2, argv, NULL);

        if (rep != NULL)
            freeReplyObject(rep);
    }
    return rd->cfg->dead_letter == CC_DEAD_LETTER_QUEUE ? CC_REDELIVER_ACK : CC_REDELIVER_REJECT;
}

/* ---- Deduplication and parking ------------------------------------------------------- */

static bool redeliver_is_running(const char *id, struct cc_request *const *running, int n)
{
    for (int i = 0; i < n; i++)
        if (running[i] != NULL && strcmp(running[i]->msg.id, id) == 0)
            return true;
    return false;
}

/* Celery's condition: (task_acks_late or task.acks_late) and
 * worker_deduplicate_successful_tasks and backend.persistent. */
static bool redeliver_dedup_applies(const struct cc_redeliver *rd, const struct cc_request *r)
{
    return r->acks_late && rd->cfg->dedup_successful && rd->results.redis != NULL;
}

enum cc_redeliver_gate cc_redeliver_gate(struct cc_redeliver *rd, struct cc_request *r,
                                         struct cc_request *const *running, int n)
{
    char key[256];
    int len;
    redisReply *rep;
    bool is_done = false;

    if (!r->redelivered)
        return CC_GATE_RUN;
    if (redeliver_is_running(r->msg.id, running, n)) {
        struct cc_request **tail = &rd->parked;

        cc_info("Task %s[%s] is already running in this worker; holding its redelivered copy "
                "until it finishes",
                cc_request_name(r), r->msg.id);
        while (*tail != NULL)
            tail = &(*tail)->next;
        r->next = NULL;
        *tail = r;
        return CC_GATE_PARKED;
    }
    if (!redeliver_dedup_applies(rd, r))
        return CC_GATE_RUN;
    len = cc_backend_redis_key(r->msg.id, key, sizeof(key));
    if (len < 0)
        return CC_GATE_RUN;
    const char *argv[2] = {"GET", key};
    rep = cc_redeliver_kv_cmd(&rd->results, 2, argv, NULL);
    if (rep == NULL)
        return CC_GATE_RUN; /* Celery: BackendGetMetaError -> run it */
    if (rep->type == REDIS_REPLY_STRING)
        is_done = cc_redeliver_meta_is_success(rep->str, rep->len);
    freeReplyObject(rep);
    if (!is_done)
        return CC_GATE_RUN;
    rd->n_dedup++;
    /* Celery's LOG_IGNORED with description 'Task already completed successfully.' */
    cc_info("Task %s[%s] Task already completed successfully.", cc_request_name(r), r->msg.id);
    return CC_GATE_DONE;
}

struct cc_request *cc_redeliver_take_unparked(struct cc_redeliver *rd,
                                              struct cc_request *const *running, int n)
{
    for (struct cc_request **pp = &rd->parked; *pp != NULL; pp = &(*pp)->next) {
        struct cc_request *r = *pp;

        if (!redeliver_is_running(r->msg.id, running, n)) {
            *pp = r->next;
            r->next = NULL;
            return r;
        }
    }
    return NULL;
}

uint64_t cc_redeliver_lowest_tag(const struct cc_redeliver *rd, uint64_t low)
{
    for (const struct cc_request *r = rd->parked; r != NULL; r = r->next)
        if (r->tag < low)
            low = r->tag;
    return low;
}
