/* Redelivered messages: delivery counting, dead-lettering of poison messages, and Celery's
 * worker_deduplicate_successful_tasks.
 *
 * Design. Receipt work is keyed on the AMQP `redelivered` flag (or a quorum queue's
 * x-delivery-count header), so a first delivery costs nothing there. What is counted is
 * the redelivery of a message that was *executing*: handed to an executor (prefork child,
 * pool thread, the solo master) and not settled when its delivery was lost. Messages that
 * were only prefetched when a worker died come back redelivered too, but they cannot be
 * the poison, and counting them dead-lettered innocent neighbours of a task that crashed
 * the master (issue #14).
 *
 *  - Marks, at hand-off (cc_redeliver_on_handoff): just before the master gives a request
 *    to an executor it records "handed out" for (task id, retries): in a small in-memory
 *    table, and in the bookkeeping Redis as SET celeryc-handed-<id> <retries> EX 86400,
 *    pipelined (no round trip; written within 10 ms, see CC_REDELIVER_UNSENT_MAX_US). The
 *    mark of a redelivered message is written before its hand-off, so a message that kills
 *    the master in the hand-off itself is counted from its second crash on (a first-delivery
 *    mark may die unsent with the master: one uncounted run, the price of not paying a
 *    write(2) per task). When the outcome is settled (acked, or rejected without requeue:
 *    cc_redeliver_settled) the mark and the count are deleted (a pipelined DEL, written
 *    after the ack it follows). A requeue by the master (result not
 *    stored, publish failed, reject_on_worker_lost, Reject(requeue=True)) and a lost
 *    connection leave the mark, so that redelivery counts.
 *
 *  - Counting, at receipt (cc_redeliver_on_receipt), for a redelivered message: one EVAL
 *    consumes the mark if it is there for the message's retries and then INCRements
 *    celeryc-deliveries-<id> (TTL CC_REDELIVER_KEY_TTL_S); the in-memory table does the same
 *    for what this process handed out (it also covers a Redis that refused or lost a mark).
 *    Not marked: not counted. The count is the Redis counter (or the table's, the larger),
 *    even on a quorum queue, whose x-delivery-count also counts the returns of a message
 *    that was only prefetched. When no mark can be read at all (the bookkeeping Redis is
 *    unreachable and this process never handed the message out), only a quorum queue's
 *    x-delivery-count can tell, and then it decides alone: with it, prefetched returns count
 *    too; without it nothing is counted. Past worker_max_redeliveries:
 *      * if the result is already SUCCESS (one GET on a Redis result backend), the message is
 *        acked as done: never dead-lettered, never run, its result never overwritten;
 *      * else it is dead-lettered: published unchanged (properties, headers, body) to the
 *        durable queue "<queue>.dead" through the default exchange and then acked, or, with
 *        worker_dead_letter=dlx, rejected with requeue=false so that RabbitMQ routes it to
 *        the queue's dead-letter exchange. FAILURE with billiard.exceptions.WorkerLostError is
 *        stored (unless the result is ignored), so a client blocked in AsyncResult.get()
 *        raises instead of waiting forever. The counter and mark are deleted, so a message
 *        shovelled back from the dead queue starts from zero.
 *    Counting happens at receipt, not at execution: a message that kills the whole worker in
 *    the hand-off never reaches a child, and must be dead-lettered before it is handed out
 *    again.
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
 * Invariants: a redelivery is counted only if that message (task id, retries) was handed to
 * an executor and not settled since, and each hand-off is counted at most once (the receipt
 * that counts it consumes its mark). A message whose result is SUCCESS is never
 * dead-lettered and its result never overwritten. No buffer has a fixed size: keys are sized
 * from the task id. A parked request is unacked and counted by cc_redeliver_lowest_tag, so a
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

uint64_t cc_redeliver_id_hash(const char *task_id)
{
    uint64_t h = 1469598103934665603ULL;

    for (const unsigned char *p = (const unsigned char *)task_id; *p != '\0'; p++) {
        h ^= *p;
        h *= 1099511628211ULL;
    }
    return h != 0 ? h : 1;
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

/* A command on `kv` failed: log once per outage and skip it for a while. */
static void redeliver_kv_failed(struct cc_redeliver_kv *kv, const struct cc_err *err)
{
    if (kv->down_until_us == 0)
        cc_warn("redis (%s): %s; falling back until it is back (probed every 0.5 s, "
                "retried at least every %d s)",
                kv->what, err->msg, CC_REDELIVER_REDIS_BACKOFF_US / 1000000);
    kv->down_until_us = cc_mono_us() + CC_REDELIVER_REDIS_BACKOFF_US;
}

static void redeliver_kv_ok(struct cc_redeliver_kv *kv)
{
    if (kv->down_until_us != 0) {
        cc_warn("redis (%s): reachable again", kv->what);
        kv->down_until_us = 0;
    }
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
        redeliver_kv_failed(kv, &err);
        return NULL;
    }
    redeliver_kv_ok(kv);
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
    rd->local = cc_xcalloc(CC_REDELIVER_LOCAL_SLOTS, sizeof(*rd->local));
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
        cc_consumer_request_free(r);
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
    free(rd->local);
    rd->local = NULL;
    free(rd->key);
    rd->key = NULL;
    rd->key_cap = 0;
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

/* "<prefix><task id>" in rd->key, grown to fit (ids have no fixed maximum here). Valid
 * until the next call. */
static const char *redeliver_key(struct cc_redeliver *rd, const char *prefix, const char *id)
{
    size_t a = strlen(prefix), b = strlen(id);

    if (a + b + 1 > rd->key_cap) {
        rd->key_cap = a + b + 1;
        rd->key = cc_xrealloc(rd->key, rd->key_cap);
    }
    memcpy(rd->key, prefix, a);
    memcpy(rd->key + a, id, b + 1);
    return rd->key;
}

/* Whether slot `a` is a better one to reuse than `b`: a free slot first, then one without a
 * mark (a message that is not running), then the least recently used. */
static bool redeliver_local_worse(const struct cc_redeliver_local *a,
                                  const struct cc_redeliver_local *b)
{
    if ((a->hash == 0) != (b->hash == 0))
        return a->hash == 0;
    if ((a->mark < 0) != (b->mark < 0))
        return a->mark < 0;
    return a->used_us < b->used_us;
}

/* The in-memory entry of `id`: found among its CC_REDELIVER_LOCAL_PROBE slots, or (when
 * is_create) put in the best one to reuse (redeliver_local_worse). NULL when absent. */
static struct cc_redeliver_local *redeliver_local(struct cc_redeliver *rd, const char *id,
                                                  bool is_create)
{
    uint64_t h = cc_redeliver_id_hash(id);
    struct cc_redeliver_local *victim = NULL;

    for (size_t i = 0; i < CC_REDELIVER_LOCAL_PROBE; i++) {
        struct cc_redeliver_local *l = &rd->local[(h + i) % CC_REDELIVER_LOCAL_SLOTS];

        if (l->hash == h)
            return l;
        if (victim == NULL || redeliver_local_worse(l, victim))
            victim = l;
    }
    if (!is_create)
        return NULL;
    *victim = (struct cc_redeliver_local){.hash = h, .mark = -1, .count = 0};
    return victim;
}

static bool redeliver_is_on(const struct cc_redeliver *rd)
{
    return rd->cfg->max_redeliveries > 0;
}

void cc_redeliver_on_handoff(struct cc_redeliver *rd, struct cc_request *r)
{
    struct cc_redeliver_local *l;
    struct cc_err err = {0};
    char retries[16], ttl[16];

    if (!redeliver_is_on(rd))
        return;
    l = redeliver_local(rd, r->msg.id, true);
    l->mark = r->msg.retries;
    l->used_us = cc_mono_us();
    r->is_marked = true;
    if (!cc_redeliver_kv_usable(&rd->state))
        return;
    snprintf(retries, sizeof(retries), "%d", r->msg.retries);
    snprintf(ttl, sizeof(ttl), "%d", CC_REDELIVER_KEY_TTL_S);
    {
        const char *argv[5] = {"SET", redeliver_key(rd, CC_REDELIVER_MARK_PREFIX, r->msg.id),
                               retries, "EX", ttl};

        if (cc_redis_append(rd->state.redis, 5, argv, NULL, &err) != CC_OK) {
            redeliver_kv_failed(&rd->state, &err);
            rd->n_unsent = 0; /* dropped with the connection */
            return;
        }
        if (rd->n_unsent++ == 0)
            rd->unsent_since_us = cc_mono_us();
        /* A redelivery may be the message that killed its last worker in the hand-off: its
         * mark goes out now (with whatever was queued), before it is handed out again. */
        if (r->redelivered) {
            rd->n_unsent = 0;
            if (cc_redis_flush(rd->state.redis, &err) != CC_OK)
                redeliver_kv_failed(&rd->state, &err);
        }
    }
}

/* Forget the marks and counts of `id` (settled, dead-lettered, done): in the table, and in
 * Redis with one pipelined DEL (sent by cc_redeliver_tick). */
static void redeliver_forget(struct cc_redeliver *rd, const char *id, int retries)
{
    struct cc_redeliver_local *l = redeliver_local(rd, id, false);
    struct cc_err err = {0};
    char *count_key;

    if (l != NULL && (retries < 0 || l->mark == retries)) {
        l->mark = -1;
        l->count = 0;
    }
    if (!cc_redeliver_kv_usable(&rd->state))
        return;
    count_key = cc_xstrdup(redeliver_key(rd, CC_REDELIVER_KEY_PREFIX, id));
    {
        const char *argv[3] = {"DEL", redeliver_key(rd, CC_REDELIVER_MARK_PREFIX, id), count_key};

        if (cc_redis_append(rd->state.redis, 3, argv, NULL, &err) != CC_OK) {
            redeliver_kv_failed(&rd->state, &err);
            rd->n_unsent = 0; /* dropped with the connection */
        } else if (rd->n_unsent++ == 0)
            rd->unsent_since_us = cc_mono_us();
    }
    free(count_key);
}

void cc_redeliver_settled(struct cc_redeliver *rd, struct cc_request *r)
{
    if (!r->is_marked)
        return;
    r->is_marked = false;
    redeliver_forget(rd, r->msg.id, r->msg.retries);
}

void cc_redeliver_tick(struct cc_redeliver *rd, bool is_busy)
{
    struct cc_redeliver_kv *kv = &rd->state;
    struct cc_err err = {0};
    size_t before;
    int n_errors = 0;

    if (kv->redis == NULL || cc_redis_pending(kv->redis) == 0) {
        rd->n_unsent = 0; /* written by a synchronous command, or dropped with a connection */
        return;
    }
    before = cc_redis_pending(kv->redis);
    if (rd->n_unsent > 0 && (!is_busy || rd->n_unsent >= CC_REDELIVER_UNSENT_MAX ||
                             cc_redeliver_due_in_ms(rd, 1) == 0)) {
        rd->n_unsent = 0;
        if (cc_redis_flush(kv->redis, &err) != CC_OK) {
            redeliver_kv_failed(kv, &err);
            return;
        }
    }
    if (is_busy && before < CC_REDELIVER_PENDING_READ)
        return;
    if (cc_redis_drain(kv->redis, before > CC_REDELIVER_PENDING_MAX, &n_errors, &err) != CC_OK) {
        redeliver_kv_failed(kv, &err);
        return;
    }
    if (n_errors > 0) {
        /* Refused (OOM, READONLY, ...): marks live only in this process's table for now. */
        if (!rd->is_mark_failing)
            cc_warn("redis (%s): hand-off marks refused: %s; redeliveries are counted by this "
                    "worker only, retried in %d s",
                    kv->what, err.msg, CC_REDELIVER_REDIS_BACKOFF_US / 1000000);
        rd->is_mark_failing = true;
        kv->down_until_us = cc_mono_us() + CC_REDELIVER_REDIS_BACKOFF_US;
    } else if (rd->is_mark_failing && cc_redis_pending(kv->redis) < before) {
        cc_warn("redis (%s): hand-off marks stored again", kv->what);
        rd->is_mark_failing = false;
    }
}

int64_t cc_redeliver_due_in_ms(const struct cc_redeliver *rd, int64_t ms)
{
    int64_t left_us;

    if (rd->n_unsent == 0)
        return ms;
    left_us = rd->unsent_since_us + CC_REDELIVER_UNSENT_MAX_US - cc_mono_us();
    if (left_us <= 0)
        return 0;
    return (left_us + 999) / 1000 < ms ? (left_us + 999) / 1000 : ms;
}

/* KEYS[1] the mark, KEYS[2] the counter; ARGV[1] the message's retries, ARGV[2] "1" when
 * this process has its own mark, ARGV[3] the TTL. Consumes a matching mark and counts;
 * returns {marked, count}. */
static const char redeliver_count_lua[] = "local m = redis.call('GET', KEYS[1]) "
                                          "local marked = 0 "
                                          "if m == ARGV[1] or ARGV[2] == '1' then "
                                          "  marked = 1 "
                                          "  if m then redis.call('DEL', KEYS[1]) end "
                                          "end "
                                          "local n "
                                          "if marked == 1 then "
                                          "  n = redis.call('INCR', KEYS[2]) "
                                          "  redis.call('EXPIRE', KEYS[2], ARGV[3]) "
                                          "else "
                                          "  n = tonumber(redis.call('GET', KEYS[2]) or '0') or 0 "
                                          "end "
                                          "return {marked, n}";

/* What the receipt of a redelivered message learnt. */
struct redeliver_count {
    bool is_marked; /* it was handed out and not settled: this redelivery counts */
    bool is_known;  /* a mark could be read (Redis answered, or this process marked it) */
    long long n;    /* redeliveries so far, this one included when counted */
    const char *how;
};

static void redeliver_count(struct cc_redeliver *rd, const amqp_envelope_t *env,
                            const struct cc_request *r, struct redeliver_count *c)
{
    const amqp_basic_properties_t *p = &env->message.properties;
    long long xdc =
        (p->_flags & AMQP_BASIC_HEADERS_FLAG) ? cc_redeliver_header_count(&p->headers) : -1;
    struct cc_redeliver_local *l = redeliver_local(rd, r->msg.id, false);
    bool is_local_marked = l != NULL && l->mark == r->msg.retries;
    long long n_local = 0, n_redis = -1;
    char retries[16], ttl[16];
    redisReply *rep;

    memset(c, 0, sizeof(*c));
    if (is_local_marked) {
        l->mark = -1;
        l->count++;
        l->used_us = cc_mono_us();
    }
    n_local = l != NULL ? l->count : 0;
    snprintf(retries, sizeof(retries), "%d", r->msg.retries);
    snprintf(ttl, sizeof(ttl), "%d", CC_REDELIVER_KEY_TTL_S);
    if (cc_redeliver_kv_usable(&rd->state)) {
        char *mark = cc_xstrdup(redeliver_key(rd, CC_REDELIVER_MARK_PREFIX, r->msg.id));
        const char *count_key = redeliver_key(rd, CC_REDELIVER_KEY_PREFIX, r->msg.id);
        const char *argv[8] = {"EVAL",  redeliver_count_lua,         "2", mark, count_key,
                               retries, is_local_marked ? "1" : "0", ttl};

        rep = cc_redeliver_kv_cmd(&rd->state, 8, argv, NULL);
        free(mark);
        if (rep != NULL && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
            rep->element[0]->type == REDIS_REPLY_INTEGER &&
            rep->element[1]->type == REDIS_REPLY_INTEGER) {
            c->is_marked = rep->element[0]->integer != 0;
            n_redis = rep->element[1]->integer;
        } else if (rep != NULL) {
            /* An error reply (a script refused, ...): skip this Redis for a while, logged
             * once, as for a lost connection. */
            struct cc_err eerr = {0};

            cc_err_set(&eerr, CC_EBACKEND, "%s: %s", CC_REDELIVER_KEY_PREFIX,
                       rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
            redeliver_kv_failed(&rd->state, &eerr);
        }
        if (rep != NULL)
            freeReplyObject(rep);
    }
    c->is_marked = c->is_marked || is_local_marked;
    c->is_known = n_redis >= 0 || is_local_marked;
    if (c->is_known) {
        /* Our own count: marked redeliveries only (a quorum queue's x-delivery-count also
         * counts the returns of a message that was only prefetched). */
        c->n = n_redis > n_local ? n_redis : n_local;
        c->how = n_redis >= 0 ? "redis" : "local";
    } else if (xdc >= 0) {
        c->n = xdc;
        c->how = "x-delivery-count";
        c->is_marked = true; /* nothing else to go by (see the head of this file) */
    } else {
        c->n = n_local;
        c->how = "local";
    }
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
                 cc_log_str(cc_consumer_request_name(r)), cc_log_str(r->msg.id),
                 cc_log_str(view->group), exc ? err.msg : "out of memory");
    json_decref(exc);
}

static void redeliver_store_failure(struct cc_redeliver *rd, const struct cc_request *r,
                                    const char *msg)
{
    struct cc_task_request view;
    struct cc_err err = {0};

    cc_consumer_request_view(r, rd->hostname, &view);
    if (!(r->ignore_result && !rd->cfg->store_errors_even_if_ignored) &&
        cc_backend_store_exc(rd->backend, rd->cfg, &view, r->msg.args, r->msg.kwargs, "FAILURE",
                             "billiard.exceptions", "WorkerLostError", msg, &err) != CC_OK)
        cc_error("Task %s[%s]: could not store FAILURE: %s",
                 cc_log_str(cc_consumer_request_name(r)), cc_log_str(r->msg.id), err.msg);
    /* [canvas-chord] it never runs again: fail its chord instead of leaving it pending */
    cc_redeliver_chord_part(rd, r, &view, "FAILURE", "billiard.exceptions", "WorkerLostError", msg);
}

/* a + b + c, owned (cc_xmalloc: never NULL). */
static char *redeliver_cat3(const char *a, const char *b, const char *c)
{
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *s = cc_xmalloc(la + lb + lc + 1);

    memcpy(s, a, la);
    memcpy(s + la, b, lb);
    memcpy(s + la + lb, c, lc + 1);
    return s;
}

/* Whether the result backend (Redis) holds SUCCESS for `id`. False when it cannot be read. */
static bool redeliver_is_done(struct cc_redeliver *rd, const char *id)
{
    char *key;
    redisReply *rep;
    bool is_done = false;

    if (rd->results.redis == NULL)
        return false;
    key = cc_backend_redis_key_dup(id, NULL);
    {
        const char *argv[2] = {"GET", key};

        rep = cc_redeliver_kv_cmd(&rd->results, 2, argv, NULL);
    }
    free(key);
    if (rep == NULL)
        return false;
    if (rep->type == REDIS_REPLY_STRING)
        is_done = cc_redeliver_meta_is_success(rep->str, rep->len);
    freeReplyObject(rep);
    return is_done;
}

enum cc_redeliver_verdict cc_redeliver_on_receipt(struct cc_redeliver *rd,
                                                  const amqp_envelope_t *env, struct cc_request *r,
                                                  int *rc, struct cc_err *err)
{
    const amqp_basic_properties_t *p = &env->message.properties;
    const int max = rd->cfg->max_redeliveries;
    const char *q, *name = cc_log_str(cc_consumer_request_name(r)), *id = cc_log_str(r->msg.id);
    struct redeliver_count c;
    char *dest = NULL, *msg = NULL;
    enum cc_redeliver_verdict verdict;

    *rc = CC_OK;
    /* Quorum queues send x-delivery-count: 0 with a first delivery (RabbitMQ 3.10). */
    if (!r->redelivered &&
        !((p->_flags & AMQP_BASIC_HEADERS_FLAG) && cc_redeliver_header_count(&p->headers) > 0))
        return CC_REDELIVER_RUN;
    if (max <= 0)
        return CC_REDELIVER_RUN;
    redeliver_count(rd, env, r, &c);
    /* Not counted now, but already past the limit: its dead-lettering failed last time (the
     * broker refused the publish, the connection dropped); the count is deleted only once a
     * message is dead-lettered or done. */
    if (!c.is_marked && c.n <= max) {
        cc_info("Task %s[%s] redelivered (not counted: it was not executing when its delivery "
                "was lost)",
                name, id);
        return CC_REDELIVER_RUN;
    }
    if (c.n <= max) {
        cc_info("Task %s[%s] redelivered (%lld of at most %d redeliveries, counted by %s)", name,
                id, c.n, max, c.how);
        return CC_REDELIVER_RUN;
    }
    /* Past the limit. A task that did complete is not a poison message: its result stays and
     * the message is done (Celery's "Task already completed successfully."), whatever
     * worker_deduplicate_successful_tasks says, since running it again is what the limit
     * exists to stop. */
    if (redeliver_is_done(rd, r->msg.id)) {
        rd->n_dedup++;
        cc_info("Task %s[%s] Task already completed successfully.", name, id);
        redeliver_forget(rd, r->msg.id, -1);
        return CC_REDELIVER_DONE;
    }
    q = redeliver_queue_of(rd, env, r);
    if (rd->cfg->dead_letter == CC_DEAD_LETTER_QUEUE) {
        amqp_bytes_t body = env->message.body;

        dest = redeliver_cat3(q, CC_REDELIVER_DEAD_SUFFIX, "");
        *rc = cc_broker_publish_props(rd->broker, "", dest, p, body, err);
        if (*rc != CC_OK) {
            cc_error("Task %s[%s]: could not dead-letter to queue '%s': %s", name, id,
                     cc_log_str(dest), err->msg);
            free(dest);
            return CC_REDELIVER_RUN; /* unused: the caller treats *rc as fatal */
        }
    } else {
        dest = redeliver_cat3("the dead-letter exchange of queue '", q, "'");
    }
    rd->n_dead++;
    cc_error("Task %s[%s] dead-lettered: redelivered %lld times, more than "
             "worker_max_redeliveries=%d (counted by %s); moved to %s%s%s",
             name, id, c.n, max, c.how,
             rd->cfg->dead_letter == CC_DEAD_LETTER_QUEUE ? "queue '" : "", cc_log_str(dest),
             rd->cfg->dead_letter == CC_DEAD_LETTER_QUEUE ? "'" : "");
    {
        size_t size = strlen(dest) + 128;

        msg = cc_xmalloc(size);
        snprintf(msg, size,
                 "celeryc: message redelivered %lld times (worker_max_redeliveries=%d), "
                 "dead-lettered to %s",
                 c.n, max, dest);
    }
    redeliver_store_failure(rd, r, msg);
    redeliver_forget(rd, r->msg.id, -1);
    verdict = rd->cfg->dead_letter == CC_DEAD_LETTER_QUEUE ? CC_REDELIVER_ACK : CC_REDELIVER_REJECT;
    free(dest);
    free(msg);
    return verdict;
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
    if (!r->redelivered)
        return CC_GATE_RUN;
    if (redeliver_is_running(r->msg.id, running, n)) {
        struct cc_request **tail = &rd->parked;

        cc_info("Task %s[%s] is already running in this worker; holding its redelivered copy "
                "until it finishes",
                cc_log_str(cc_consumer_request_name(r)), cc_log_str(r->msg.id));
        while (*tail != NULL)
            tail = &(*tail)->next;
        r->next = NULL;
        *tail = r;
        return CC_GATE_PARKED;
    }
    /* Celery: BackendGetMetaError -> run it (redeliver_is_done is false then). */
    if (!redeliver_dedup_applies(rd, r) || !redeliver_is_done(rd, r->msg.id))
        return CC_GATE_RUN;
    rd->n_dedup++;
    /* Celery's LOG_IGNORED with description 'Task already completed successfully.' */
    cc_info("Task %s[%s] Task already completed successfully.",
            cc_log_str(cc_consumer_request_name(r)), cc_log_str(r->msg.id));
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
