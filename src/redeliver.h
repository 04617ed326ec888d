/* Redelivered messages: counting them, dead-lettering poison ones, and not running a task
 * twice (Celery's worker_deduplicate_successful_tasks).
 *
 * The master calls, for every request it gets from the consumer:
 *   cc_redeliver_on_receipt()   (only does work for redelivered messages) counts the
 *                               deliveries of the task and, past worker_max_redeliveries,
 *                               dead-letters the message and stores FAILURE;
 *   cc_redeliver_gate()         just before handing a redelivered request to a child: holds
 *                               it while the same task id runs here ("parked"), and acks it
 *                               without running when the backend already has SUCCESS;
 *   cc_redeliver_take_unparked() at the start of each dispatch pass, to put parked requests
 *                               whose twin has finished back in the ready FIFO.
 *
 * It also owns the master's Redis clients for bookkeeping (src/redis.h), which the delay
 * store borrows. Master only; nothing here crosses fork().
 */
#ifndef CELERYC_REDELIVER_H
#define CELERYC_REDELIVER_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "broker.h"
#include "canvas.h"
#include "config.h"
#include "consumer.h"
#include "redis.h"

/* Redis key prefix of the per-task delivery counters ("celeryc-deliveries-<task id>"). */
#define CC_REDELIVER_KEY_PREFIX "celeryc-deliveries-"
/* Counters expire this long after their last increment. */
#define CC_REDELIVER_KEY_TTL_S 86400
/* Suffix of the dead-letter queue celeryc declares per consumed queue. */
#define CC_REDELIVER_DEAD_SUFFIX ".dead"
/* A Redis failure makes the master skip that Redis for this long (falling back: local
 * counts, no dedup check, holding ETA messages), so an outage costs one timeout, not one per
 * message. */
#define CC_REDELIVER_REDIS_BACKOFF_US 5000000
/* Bound on each master-side Redis command (the event loop waits for it). */
#define CC_REDELIVER_REDIS_TIMEOUT_MS 2000
#define CC_REDELIVER_LOCAL_SLOTS      512

/* A Redis client with the back-off above. */
struct cc_redeliver_kv {
    struct cc_redis *redis; /* NULL = not configured */
    bool is_owned;
    int64_t down_until_us; /* cc_mono_us() before which it is not tried */
    const char *what;      /* "result backend", "worker_redis_url" (for logs) */
};

struct cc_redeliver_local {
    char id[64]; /* task id ("" = free slot) */
    int count;
    int64_t used_us;
};

struct cc_redeliver {
    const struct cc_config *cfg;
    const char *hostname;
    struct cc_broker *broker;   /* borrowed */
    struct cc_backend *backend; /* borrowed */
    char *const *queues;        /* borrowed: the consumed queues, in basic.consume order */
    size_t n_queues;
    struct cc_redeliver_kv state;   /* counters, delay store: worker_redis_url or results */
    struct cc_redeliver_kv results; /* the result backend, when it is Redis (dedup GET) */
    struct cc_redeliver_local local[CC_REDELIVER_LOCAL_SLOTS]; /* fallback counts */
    struct cc_request *parked; /* FIFO (r->next) of redelivered twins of running tasks */
    uint64_t n_dead, n_dedup;
    /* [canvas-chord] A chord member that ended in the master (cc_redeliver_chord_part)
     * completed its chord: what the master must publish (the body's errbacks) before it acks,
     * then cc_chord_done(chord_group). Taken by the master (worker.c worker_chord_flush). */
    bool is_chord_pending;
    struct cc_canvas_plan chord_plan;
    char *chord_group; /* owned; NULL: the member did not complete the chord */
    char chord_reply_to[37];
    char chord_origin[300];
};

/* Open the Redis clients (lazily connected): `state` from cfg->worker_redis_url, else the
 * result backend's URL when it is redis://, rediss:// or unix://; `results` from the result
 * backend. `rd` is caller's storage. Returns CC_OK or CC_EURL (bad worker_redis_url). */
int cc_redeliver_init(struct cc_redeliver *rd, const struct cc_config *cfg, const char *hostname,
                      struct cc_broker *broker, struct cc_backend *backend, char *const *queues,
                      size_t n_queues, struct cc_err *err) CC_MUST_USE;

/* Free parked requests (unacked: they return to the queue with the channel) and the
 * clients. Idempotent. */
void cc_redeliver_deinit(struct cc_redeliver *rd);

/* Free the parked requests without acking them (their delivery tags die with the channel:
 * call this when the channel is lost, e.g. before reconnecting; the broker redelivers
 * them). */
void cc_redeliver_forget_parked(struct cc_redeliver *rd);

/* Borrowed client for the worker's own keys (delay store), NULL when no Redis. */
struct cc_redeliver_kv *cc_redeliver_state_kv(struct cc_redeliver *rd);

/* Run one command on `kv` unless it is backing off; on failure start the back-off and log
 * once. Returns the reply (freeReplyObject) or NULL. */
redisReply *cc_redeliver_kv_cmd(struct cc_redeliver_kv *kv, int argc, const char **argv,
                                const size_t *lens);

/* Whether `kv` is configured and not backing off. */
bool cc_redeliver_kv_usable(const struct cc_redeliver_kv *kv);

/* Start-up, before consuming: declare "<queue>.dead" (durable, no arguments) for each
 * consumed queue when dead-lettering to queues is on. Broker errors are returned. */
int cc_redeliver_declare(struct cc_redeliver *rd, struct cc_err *err) CC_MUST_USE;

enum cc_redeliver_verdict {
    CC_REDELIVER_RUN,    /* schedule as usual */
    CC_REDELIVER_ACK,    /* dead-lettered to <queue>.dead: ack and free it */
    CC_REDELIVER_REJECT, /* dead-lettered through the DLX: reject(requeue=false) and free */
};

/* At receipt (env still alive). Counts the deliveries of a redelivered message (or one
 * with an x-delivery-count header) and, past worker_max_redeliveries, dead-letters it
 * (publishes the original to <queue>.dead in queue mode), logs an ERROR and stores
 * FAILURE WorkerLostError unless ignore_result. Returns the verdict; *rc is CC_OK or a
 * broker error from the dead-letter publish (the caller treats it as fatal, leaving the
 * message unacked). */
enum cc_redeliver_verdict cc_redeliver_on_receipt(struct cc_redeliver *rd,
                                                  const amqp_envelope_t *env, struct cc_request *r,
                                                  int *rc, struct cc_err *err);

enum cc_redeliver_gate {
    CC_GATE_RUN,    /* hand it to a child */
    CC_GATE_PARKED, /* kept here until the running twin finishes: do nothing */
    CC_GATE_DONE,   /* SUCCESS already stored: ack and free it, do not run */
};

/* Just before dispatching `r`. `running` is the worker's running[] (n slots). Only
 * redelivered requests are examined: parked when a request with the same id is running,
 * else (acks_late, dedup on, Redis result backend) one GET of celery-task-meta-<id>. */
enum cc_redeliver_gate cc_redeliver_gate(struct cc_redeliver *rd, struct cc_request *r,
                                         struct cc_request *const *running, int n);

/* Take one parked request whose twin no longer runs (NULL when none). */
struct cc_request *cc_redeliver_take_unparked(struct cc_redeliver *rd,
                                              struct cc_request *const *running, int n);

/* min(low, lowest delivery tag among parked requests): they are unacked, so ack coalescing
 * must not cover them. */
uint64_t cc_redeliver_lowest_tag(const struct cc_redeliver *rd, uint64_t low);

/* Pure helpers (unit-tested). */
/* The delivery's x-delivery-count header as a non-negative integer, or -1 when absent. */
long long cc_redeliver_header_count(const amqp_table_t *headers);
/* "celeryc-deliveries-<id>" into buf; length or -1 when it does not fit. */
int cc_redeliver_key(const char *task_id, char *buf, size_t size);
/* Whether a stored meta JSON text has "status": "SUCCESS". */
bool cc_redeliver_meta_is_success(const char *meta, size_t len);

/* [canvas-chord] A chord member ends in the master (dead-lettered: FAILURE WorkerLostError;
 * expired/revoked/terminated: REVOKED; its child lost: FAILURE), as Celery's mark_as_failure /
 * mark_as_revoked call on_chord_part_return: return its part with that exception
 * (exc_module.exc_type(exc_arg)). No-op unless `view` is a chord member. When that completed
 * the chord, rd->is_chord_pending is set and rd->chord_plan holds what the master must
 * publish (the body's errbacks), then cc_chord_done(rd->chord_group) (worker.c). */
void cc_redeliver_chord_part(struct cc_redeliver *rd, const struct cc_request *r,
                             const struct cc_task_request *view, const char *state,
                             const char *exc_module, const char *exc_type, const char *exc_arg);
/* The same with the exception's args as JSON (stolen), e.g. TimeLimitExceeded(300). */
void cc_redeliver_chord_part_args(struct cc_redeliver *rd, const struct cc_request *r,
                                  const struct cc_task_request *view, const char *state,
                                  const char *exc_module, const char *exc_type, json_t *exc_args);

/* [canvas-chord] Forget a pending chord member's plan (after the master
 * published it, or gave up). Idempotent. */
void cc_redeliver_chord_clear(struct cc_redeliver *rd);

#endif
