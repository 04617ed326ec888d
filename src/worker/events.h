/* The worker's event dispatcher (celeryev, §4): worker-online / -heartbeat / -offline, and
 * task events with -E (worker_send_task_events) or after the enable_events control command.
 *
 * Events are fire-and-forget (delivery_mode 1) on a connection of their own
 * (cc_events_set_transport), else on channel CC_EVENTS_CHANNEL of the consuming connection. Task
 * events are batched as Celery does (one `task.multi` message, a JSON list, at most
 * CC_EVENTS_BATCH_MAX events, sent when full or CC_EVENTS_FLUSH_US after its first event); worker
 * events go out one by one. Memory is fixed: one batch buffer; whatever cannot be sent
 * (disconnected, socket full because the broker blocks, an event larger than the buffer) is dropped
 * and counted, never queued. Master only; not thread-safe; children never call it.
 */
#ifndef CELERYC_EVENTS_H
#define CELERYC_EVENTS_H

#include <stdbool.h>
#include <stdint.h>

#include "broker.h"
#include "consumer.h"
#include "pool.h"

/* Channel 1 consumes, 2 is the pidbox consumer's, 3 publishes events. */
#define CC_EVENTS_CHANNEL     3
#define CC_EVENTS_BATCH_MAX   24 /* Celery's EventDispatcher buffer_limit */
#define CC_EVENTS_BATCH_BYTES (64 * 1024)
/* A batch not yet full leaves at most this long after its first event (monitors see a
 * task's events within 0.1 s; under load a batch fills first). */
#define CC_EVENTS_FLUSH_US 100000

/* [issue 14] A task-retried event waits (at most CC_EVENTS_RETRY_HOLD_US) for the retry
 * message's own task-received, so monitors see RECEIVED then RETRY, as from a Python worker
 * (whose pool child publishes the retry before the master sends task-retried). Fixed room:
 * CC_EVENTS_HELD_MAX waiting ones, the oldest is sent when it is full. */
#define CC_EVENTS_RETRY_HOLD_US 1000000
#define CC_EVENTS_HELD_MAX      64

struct cc_events_held {
    char *id;              /* owned task id; NULL = free entry */
    char *exc, *traceback; /* owned texts of the task-retried event */
    int64_t until_us;      /* cc_mono_us() after which it is sent anyway */
};

struct cc_events {
    struct cc_broker *broker; /* borrowed: the consuming connection */
    const char *hostname;     /* borrowed */
    long pid;
    int utcoffset;
    char sw_sys[72];
    double freq_s;      /* heartbeat interval */
    bool is_task_on;    /* task events (-E or enable_events) */
    bool is_open;       /* our channel is open on the current connection */
    uint64_t clock;     /* Lamport clock */
    int64_t next_hb_us; /* cc_mono_us() of the next heartbeat; 0 = not running */
    char *batch;        /* "[e1, e2" (owned, CC_EVENTS_BATCH_BYTES) */
    size_t batch_len;
    int n_batched;
    int64_t batch_since_us; /* cc_mono_us() of the batch's first event */
    uint64_t n_sent, n_dropped;
    bool is_drop_logged; /* a drop was logged since the last successful publish */
    /* [blocked] Own publishing connection (cc_events_set_transport), as Celery's event
     * dispatcher has: RabbitMQ blocks a connection that publishes during a resource alarm
     * (it stops reading its socket), which on the consuming connection would also stop
     * acks and so deliveries, while consuming is what frees the broker's memory. */
    bool has_own;
    struct cc_broker own;            /* the connection when has_own (channel 1) */
    const char *url;                 /* borrowed: broker URL */
    const struct cc_broker_tls *tls; /* borrowed, may be NULL */
    double timeout_s;                /* connect timeout */
    int64_t own_retry_us;            /* cc_mono_us() of the next connect attempt, 0 = none */
    int64_t own_poll_us;             /* cc_mono_us() of the last read while blocked */
    struct cc_events_held held[CC_EVENTS_HELD_MAX]; /* [issue 14] task-retried, waiting */
    int n_held;
};

/* Set up (nothing is sent). `freq_s` <= 0 means 2.0 (Celery's heartbeat interval). */
void cc_events_init(struct cc_events *ev, struct cc_broker *broker, const char *hostname,
                    bool task_events, double freq_s);
void cc_events_deinit(struct cc_events *ev);

/* [blocked] Publish on a connection of our own to `url` (opened by cc_events_on_connect,
 * heartbeats off, closed by cc_events_deinit) instead of channel CC_EVENTS_CHANNEL of the
 * consuming connection. All borrowed for the dispatcher's life. */
void cc_events_set_transport(struct cc_events *ev, const char *url, const struct cc_broker_tls *tls,
                             double timeout_s);
/* [blocked] The events connection is blocked by the broker (connection.blocked): events
 * are being dropped. `*reason` (may be NULL) gets the broker's text, borrowed. */
bool cc_events_is_blocked(const struct cc_events *ev, const char **reason);
/* [blocked] The events connection, for cc_broker_forget chains; NULL without one. */
struct cc_broker *cc_events_conn(struct cc_events *ev);

/* After the connection is (re)established: open our channel (CC_OK, or a broker error that
 * makes the connection unusable). Sending worker-online is separate (cc_events_online). */
int cc_events_on_connect(struct cc_events *ev, struct cc_err *err) CC_MUST_USE;
/* The connection is gone: drop the pending batch (counted); nothing is sent until the next
 * cc_events_on_connect. */
void cc_events_on_lost(struct cc_events *ev);

/* worker-online now and start the heartbeat timer (start-up and after each reconnect, as
 * Celery's Heart step restarts with the consumer). */
void cc_events_online(struct cc_events *ev, int active, uint64_t processed);
/* worker-offline (warm/cold shutdown); stops the timer. */
void cc_events_offline(struct cc_events *ev, int active, uint64_t processed);
/* Send the heartbeat when due at now_us (cc_mono_us()) and the task batch when its time has
 * come. Call once per loop pass. */
void cc_events_tick(struct cc_events *ev, int64_t now_us, int active, uint64_t processed);
/* Milliseconds until cc_events_tick has work (capped by `ms`), for the poll timeout. */
int64_t cc_events_due_in_ms(const struct cc_events *ev, int64_t now_us, int64_t ms);

/* Task events; no-ops unless task events are on. `r` borrowed. task-received also sends
 * a task-retried held for the same id right after it (see CC_EVENTS_RETRY_HOLD_US). */
void cc_events_task_received(struct cc_events *ev, const struct cc_request *r);
void cc_events_task_started(struct cc_events *ev, const struct cc_request *r);
/* From a pool report: task-succeeded / -failed / -rejected now; task-retried is held until
 * the retry message's task-received (or CC_EVENTS_RETRY_HOLD_US, or
 * cc_events_retry_release). */
void cc_events_task_report(struct cc_events *ev, const struct cc_request *r,
                           const struct cc_pool_report *rep);
/* [issue 14] Send the task-retried held for `id` now (its retry message will not come:
 * not published, or published elsewhere). No-op when none is held. */
void cc_events_retry_release(struct cc_events *ev, const char *id);

/* task-failed with an exception repr made by the master, and no traceback. */
void cc_events_task_failed(struct cc_events *ev, const struct cc_request *r, const char *exc_repr);
/* [tracebacks] task-failed for an exception the master raised on the task's behalf (hard
 * time limit, WorkerLostError): exception = repr of exc_type(*exc_args), traceback = the
 * Python-shaped one (cc_taskrun_traceback), as Celery sends billiard's. `exc_args` borrowed. */
void cc_events_task_failed_exc(struct cc_events *ev, const struct cc_request *r,
                               const char *exc_module, const char *exc_type,
                               const json_t *exc_args);
void cc_events_task_rejected(struct cc_events *ev, const struct cc_request *r, bool requeue);
void cc_events_task_revoked(struct cc_events *ev, const struct cc_request *r, bool terminated,
                            int signum, bool expired);
bool cc_events_task_on(const struct cc_events *ev);

/* Lamport clock: forward() for a message we send (returns the new value), adjust() on
 * receiving one with clock `other` (max + 1), as kombu's LamportClock. */
uint64_t cc_events_clock_forward(struct cc_events *ev);
uint64_t cc_events_clock_adjust(struct cc_events *ev, uint64_t other);

/* For the enable_events / disable_events control commands: turn task events on or off in
 * the process's dispatcher (the one last cc_events_init'ed). Returns false if there is none. */
bool cc_events_enable(bool on);
/* The `heartbeat` control command: one worker-heartbeat now, with freq 5 and only the
 * software info, exactly as Celery's control.heartbeat sends it. */
void cc_events_heartbeat_now(struct cc_events *ev);

/* The process's dispatcher, or NULL (for the control commands: clock, heartbeat). */
struct cc_events *cc_events_get(void);

#endif
