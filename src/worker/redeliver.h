/* Redelivered messages: counting them, dead-lettering poison ones, and not running a task
 * twice (Celery's worker_deduplicate_successful_tasks).
 *
 * The master calls, for every request it gets from the consumer:
 *   cc_redeliver_on_receipt()   (only does work for redelivered messages) counts the
 *                               redelivery when the message was executing when its delivery
 *                               was lost (see cc_redeliver_on_handoff) and, past
 *                               worker_max_redeliveries, acks it if its result is already
 *                               SUCCESS, else dead-letters it and stores FAILURE;
 *   cc_redeliver_gate()         just before handing a redelivered request to a child: holds
 *                               it while the same task id runs here ("parked"), and acks it
 *                               without running when the backend already has SUCCESS;
 *   cc_redeliver_on_handoff()   as the request goes to an executor: marks it "handed out";
 *   cc_redeliver_settled()      when its outcome is settled without a requeue: unmarks it;
 *   cc_redeliver_tick()         once per loop pass: sends queued unmarks, reads replies;
 *   cc_redeliver_take_unparked() at the start of each dispatch pass, to put parked requests
 *                               whose twin has finished back in the ready FIFO.
 *
 * It also owns the master's Redis clients for bookkeeping (src/core/redis.h), which the delay
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
/* Redis key prefix of the hand-off marks ("celeryc-handed-<task id>" = the message's
 * retries): set when the message goes to an executor, deleted when its outcome is settled,
 * consumed by the receipt that counts its redelivery. */
#define CC_REDELIVER_MARK_PREFIX "celeryc-handed-"
/* Counters and marks expire this long after they were last written. */
#define CC_REDELIVER_KEY_TTL_S 86400
/* Suffix of the dead-letter queue celeryc declares per consumed queue. */
#define CC_REDELIVER_DEAD_SUFFIX ".dead"
/* A Redis failure makes the master skip that Redis for this long (falling back: local
 * counts, no dedup check, holding ETA messages), so an outage costs one timeout, not one per
 * message. */
#define CC_REDELIVER_REDIS_BACKOFF_US 5000000
/* Bound on each master-side Redis command (the event loop waits for it). */
#define CC_REDELIVER_REDIS_TIMEOUT_MS 2000
/* The in-memory table (marks and counts this process saw): slots, and how many neighbouring
 * slots one id may use (bounded work per lookup; the least recently used of them is
 * replaced). */
#define CC_REDELIVER_LOCAL_SLOTS 4096
#define CC_REDELIVER_LOCAL_PROBE 8
/* Marks and unmarks are pipelined: queued in the client and written by cc_redeliver_tick
 * once CC_REDELIVER_UNSENT_MAX wait, the oldest has waited CC_REDELIVER_UNSENT_MAX_US (the
 * loop's poll timeout honours it: cc_redeliver_due_in_ms) or no task runs; a redelivered
 * message's mark is written before its hand-off. Replies are read once
 * CC_REDELIVER_PENDING_READ are unread (or no task runs), and waited for past
 * CC_REDELIVER_PENDING_MAX. So a busy worker spends a fraction of a write(2) per task on
 * them (a write per hand-off cost ~17 us of master CPU on loopback). */
#define CC_REDELIVER_UNSENT_MAX    64
#define CC_REDELIVER_UNSENT_MAX_US 10000
#define CC_REDELIVER_PENDING_READ  256
#define CC_REDELIVER_PENDING_MAX   1024

/* A Redis client with the back-off above. */
struct cc_redeliver_kv {
    struct cc_redis *redis; /* NULL = not configured */
    bool is_owned;
    int64_t down_until_us; /* cc_mono_us() before which it is not tried */
    const char *what;      /* "result backend", "worker_redis_url" (for logs) */
};

/* One task id in the in-memory table, keyed by a 64-bit hash of the whole id (no copy, no
 * length limit; two ids sharing a hash would share a count, which 64 bits make
 * negligible). */
struct cc_redeliver_local {
    uint64_t hash; /* 0 = free slot */
    int mark;      /* retries of the message handed out and not settled, -1 = no mark */
    int count;     /* redeliveries counted */
    int64_t used_us;
};

struct cc_redeliver {
    const struct cc_config *cfg;
    const char *hostname;
    struct cc_broker *broker;   /* borrowed */
    struct cc_backend *backend; /* borrowed */
    char *const *queues;        /* borrowed: the consumed queues, in basic.consume order */
    size_t n_queues;
    struct cc_redeliver_kv state;     /* counters, delay store: worker_redis_url or results */
    struct cc_redeliver_kv results;   /* the result backend, when it is Redis (dedup GET) */
    struct cc_redeliver_local *local; /* CC_REDELIVER_LOCAL_SLOTS: marks and counts seen here */
    char *key;                        /* reused buffer for "<prefix><task id>" keys */
    size_t key_cap;
    bool is_mark_failing;      /* marks could not be written to Redis (logged once) */
    size_t n_unsent;           /* unmarks queued in the client, not written yet */
    int64_t unsent_since_us;   /* cc_mono_us() of the oldest of them */
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
    CC_REDELIVER_DONE,   /* past the limit but SUCCESS is stored: ack and free it, unrun */
};

/* At receipt (env still alive). For a redelivered message (or one with a positive
 * x-delivery-count header): counts the redelivery if the message had been handed to an
 * executor and not settled since (its mark, in Redis or in this process's table); when no
 * mark can be read (Redis unreachable, not seen here) only x-delivery-count can say. Past
 * worker_max_redeliveries a counted message whose result is SUCCESS is acked as done
 * (CC_REDELIVER_DONE: never dead-lettered, its result never overwritten); else it is
 * dead-lettered (published to <queue>.dead in queue mode), an ERROR logged and FAILURE
 * WorkerLostError stored unless ignore_result. Returns the verdict; *rc is CC_OK or a
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

/* `r` is being handed to an executor (before cc_pool_dispatch): mark it, so that its
 * redelivery counts. In this process's table, and in the bookkeeping Redis
 * ("celeryc-handed-<id>" = retries, TTL CC_REDELIVER_KEY_TTL_S) as a pipelined SET, written
 * within CC_REDELIVER_UNSENT_MAX_US (cc_redeliver_tick), or before this returns when the
 * message is a redelivery (so a message that already came back once is never handed out
 * again without its mark on the way, even if the hand-off itself kills this process). No-op
 * with worker_max_redeliveries = 0. Sets r->is_marked. */
void cc_redeliver_on_handoff(struct cc_redeliver *rd, struct cc_request *r);

/* The outcome of a handed-out request is settled and its message acked or rejected
 * without requeue: drop its mark (a pipelined DEL, sent by cc_redeliver_tick). Not for a
 * request whose message was requeued or whose connection was lost: its mark stays, so its
 * redelivery counts. No-op unless r->is_marked. */
void cc_redeliver_settled(struct cc_redeliver *rd, struct cc_request *r);

/* Once per loop pass: send queued unmarks and read the replies that have arrived, when due
 * (see CC_REDELIVER_PENDING_READ; at once when !is_busy: no task runs, e.g. at exit); log
 * refused marks once. */
void cc_redeliver_tick(struct cc_redeliver *rd, bool is_busy);

/* min(ms, milliseconds until cc_redeliver_tick must write queued marks). */
int64_t cc_redeliver_due_in_ms(const struct cc_redeliver *rd, int64_t ms);

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
/* 64-bit FNV-1a of a task id, never 0 (the in-memory table's key). */
uint64_t cc_redeliver_id_hash(const char *task_id);
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
