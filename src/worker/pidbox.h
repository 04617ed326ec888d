/* Remote control: the worker's pidbox node (celery.pidbox), as kombu's Mailbox/Node and
 * Celery's worker/control.py (celery-wire.md §5).
 *
 * The node's queue `<hostname>.celery.pidbox` (non-durable, auto-delete, x-expires 10 s,
 * x-message-ttl 300 s) is bound to the fanout exchange `celery.pidbox` and consumed with
 * no_ack on channel CC_PIDBOX_CHANNEL of the master's consuming connection, as Celery's
 * Pidbox bootstep consumes on its own channel. Replies go to `reply_to.exchange`
 * (`reply.celery.pidbox`, declared non-durable) with the request's reply_to routing key and a
 * `ticket` header. The module also keeps the revoked set (durable in worker_state_db).
 *
 * The worker calls: cc_pidbox_init once, cc_pidbox_attach after every (re)connect,
 * cc_pidbox_on_delivery for channel-2 deliveries, cc_pidbox_is_revoked on receipt and
 * before execution, cc_pidbox_on_start when a job is handed to an executor,
 * cc_pidbox_take_terminated when a child died, cc_pidbox_deinit at exit.
 */
#ifndef CELERYC_PIDBOX_H
#define CELERYC_PIDBOX_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "broker.h"
#include "config.h"
#include "consumer.h"
#include "pool.h"
#include "ratelimit.h"
#include "redeliver.h"

#define CC_PIDBOX_CHANNEL 2

/* Redis sorted set shared by the fleet: member = task id, score = revoke time (ms since the
 * epoch); members older than CC_PIDBOX_REVOKE_EXPIRES_S are trimmed at every revoke and
 * ignored by readers (the TTL). */
#define CC_PIDBOX_REVOKED_KEY "celeryc-revoked"
/* How often a worker that receives tasks looks for revokes other workers wrote. */
#define CC_PIDBOX_REVOKED_SYNC_US 1000000

/* Revoked ids kept (Celery's REVOKES_MAX / REVOKE_EXPIRES, worker/state.py). */
#define CC_PIDBOX_REVOKES_MAX      50000
#define CC_PIDBOX_REVOKE_EXPIRES_S 10800

enum cc_pidbox_kind {
    CC_PIDBOX_ACTIVE,    /* running in an executor (slot >= 0) */
    CC_PIDBOX_RESERVED,  /* prefetched, waiting for an executor */
    CC_PIDBOX_SCHEDULED, /* held for its ETA */
};

typedef void (*cc_pidbox_visit_fn)(void *ctx, const struct cc_request *r, enum cc_pidbox_kind kind,
                                   int slot);

/* [control] Read-only view of the master's request bookkeeping, provided by worker.c. */
struct cc_pidbox_ops {
    void *ud;
    /* Call fn(ctx, r, kind, slot) for every request the worker holds (slot -1 unless ACTIVE). */
    void (*each)(void *ud, cc_pidbox_visit_fn fn, void *ctx);
    /* [poolsize] pool_grow / pool_shrink changed the pool's size (cc_pool_size): the worker
     * updates its QoS window. May be NULL. */
    void (*pool_resized)(void *ud);
};

struct cc_pidbox_queue {
    char *name, *exchange, *exchange_type, *routing_key;
    char tag[128];  /* consumer tag on the task channel, "" = not consuming */
    bool is_active; /* wanted: consumed after every reconnect */
    bool is_config; /* one of -Q (consumed by worker_declare) */
};

struct cc_pidbox {
    const struct cc_config *cfg;
    const char *hostname; /* borrowed */
    struct cc_broker *broker;
    struct cc_pool *pool;
    struct cc_ratelimit *rl;
    struct cc_pidbox_ops ops;
    char *queue_name; /* "<hostname>.celery.pidbox" */
    uint64_t clock;   /* Lamport clock (kombu's LamportClock) */
    bool is_events;   /* task events on (enable_events / disable_events) */
    int64_t started_mono_us;
    double *time_start; /* by pool slot: epoch seconds of the job in flight */
    int n_slots;
    json_t *total;              /* {task name: started count} in first-seen order */
    uint64_t n_accepted;        /* tasks started, all names: Celery's all_total_count */
    json_t *revoked;            /* {id: epoch seconds revoked}, insertion order */
    json_t *terminated;         /* {id: signum} revoked with terminate, not yet reported */
    json_t *rate_limits;        /* {task name: rate text} set at run time */
    json_t *time_limits;        /* {task name: [soft, hard]} set at run time */
    FILE *statedb;              /* appended to on every revoke; NULL = no worker_state_db */
    struct cc_redeliver_kv *kv; /* bookkeeping Redis (fleet-wide revokes), or NULL */
    int64_t synced_mono_us;     /* last look at CC_PIDBOX_REVOKED_KEY (0 = never) */
    double synced_max_score;    /* highest score seen there (ms) */
    struct cc_pidbox_queue *queues;
    size_t n_queues;
};

/* Load the revoked set from cfg->state_db (ids older than CC_PIDBOX_REVOKE_EXPIRES_S are
 * dropped) and, when `kv` (the bookkeeping Redis, may be NULL) is set, from the fleet's
 * CC_PIDBOX_REVOKED_KEY. `hostname`, `broker`, `pool`, `rl` are borrowed for the worker's life;
 * `pool` is read only after it started. Returns CC_OK or CC_EIO (state file unreadable or
 * not writable). */
int cc_pidbox_init(struct cc_pidbox *c, const struct cc_config *cfg, const char *hostname,
                   struct cc_broker *broker, struct cc_pool *pool, struct cc_ratelimit *rl,
                   struct cc_redeliver_kv *kv, const struct cc_pidbox_ops *ops,
                   struct cc_err *err) CC_MUST_USE;

/* After every connect (worker_declare done): open channel 2, declare the pidbox exchange,
 * queue, binding and the reply exchange, consume with no_ack; re-apply add_consumer /
 * cancel_consumer on the task channel. */
int cc_pidbox_attach(struct cc_pidbox *c, struct cc_err *err) CC_MUST_USE;

/* Handle one pidbox delivery (env->channel == CC_PIDBOX_CHANNEL): dispatch the command and
 * publish the reply. Errors are logged; a broker failure is left for cc_broker_next to see. */
void cc_pidbox_on_delivery(struct cc_pidbox *c, const amqp_envelope_t *env);

/* Whether `id` is revoked: the local set, after a look at the fleet's Redis set when the
 * last one is older than CC_PIDBOX_REVOKED_SYNC_US. */
bool cc_pidbox_is_revoked(struct cc_pidbox *c, const char *id);

/* Add `id` to the revoked set, the state file and the fleet's Redis set. */
void cc_pidbox_revoke_add(struct cc_pidbox *c, const char *id);

/* A job is handed to the executor in `slot`: time_start and the `total` stats. */
void cc_pidbox_on_start(struct cc_pidbox *c, int slot, const struct cc_request *r);

/* Tasks started since the worker started (the sum of stats' `total`): what Celery's
 * worker-online/-heartbeat/-offline events carry as `processed` (all_total_count, counted
 * when a task is accepted, so running and terminated tasks count, as Flower shows them). */
uint64_t cc_pidbox_processed(const struct cc_pidbox *c);

/* True (and forgets it) when `id` was terminated by revoke(terminate=True). */
bool cc_pidbox_take_terminated(struct cc_pidbox *c, const char *id, int *signum);

/* For cc_pool_opts.task_limits: the limits the time_limit command set for `name`. */
bool cc_pidbox_task_limits(void *ud, const char *name, double *soft_s, double *hard_s);

/* Task events flag (enable_events / disable_events). */
bool cc_pidbox_is_events(const struct cc_pidbox *c);

/* Lamport clock: forward (++ then value) for every message sent; adjust on receipt. */
uint64_t cc_pidbox_clock_forward(struct cc_pidbox *c);
void cc_pidbox_clock_adjust(struct cc_pidbox *c, uint64_t other);

/* Compact the state file (rewrite with the live set) and free everything. Takes NULL. */
void cc_pidbox_deinit(struct cc_pidbox *c);

#endif
