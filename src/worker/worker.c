/* `celeryc worker`: the master process and its event loop.
 *
 * Design. One poll(2) loop owns everything that is not task execution: the rabbitmq-c
 * connection (socket fd), the pool's shared report pipe, the signal self-pipe and the ETA
 * timers. Each iteration: take signals; drain child reports (ack late, publish retries);
 * reap dead children (WorkerLostError) and respawn them; drain every delivery rabbitmq-c
 * has buffered or can read now without blocking (cc_broker_next, which also sends our
 * heartbeats), unless the ready FIFO already holds a request per child; move due ETA
 * requests to the ready FIFO; hand ready requests to idle children; send the acks that are
 * due; then sleep in poll() no longer than half the heartbeat interval, until the next ETA
 * or until the oldest pending ack's deadline (never when rabbitmq-c still buffers frames
 * the loop wants). Under load this makes one wake-up per child report, not per frame.
 *
 * Ack points (Celery's, §6.2): by default a message is acked when its job is handed to an
 * idle child ("execution starts"), never at receipt: prefetched messages in the FIFO and
 * ETA-held ones stay unacked, and go back to the queue when the channel closes. The ack
 * frame may leave up to WORKER_ACK_MAX_DELAY_US later, coalesced with others (see
 * worker_acks_due). With
 * acks_late (global or per task) the ack follows the child's report, which it sends only
 * after it stored the result. Bad input is rejected (requeue=false) by the consumer.
 *
 * Invariants: every request is in exactly one place: the ready FIFO, the ETA heap, the
 * rate-limit heap (ratelimit.c), parked beside a running twin (redeliver.c), the deferred
 * retries, or running[slot]; it is freed after its last ack/reject. At the end of every
 * loop pass the QoS prefetch is base + number of ETA- and rate-held requests (Celery raises
 * it by one per held ETA message, applied once per loop iteration). A request whose
 * delivery belonged to a lost connection is never acked (stale; see worker_broker_lost).
 * The loop also runs the pool's time limits (cc_pool_tick), the delay store's republishing
 * (worker_delay_tick) and the reconnect timer (worker_reconnect).
 * Signal handlers only set flags; shutdown decisions happen here.
 *
 * Reference: celery-wire.md §1.1, §1.3 (topology), §6.1 (QoS, consumers), §6.2 (ack
 * timing), §6.3 (ETA, expires), §6.4 (retry), §6.7 (signals), §6.8 (processing rules).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend.h"
#include "broker.h"
#include "celeryc/version.h"
#include "chord.h" /* [canvas-chord] */
#include "consumer.h"
#include "pidbox.h"
#include "events.h" /* [events] */
#include "delaystore.h"
#include "isotime.h"
#include "jobrun.h" /* [jobrun] */
#include "log.h"
#include "netprobe.h"
#include "pool.h"
#include "redeliver.h"
#include "ratelimit.h"
#include "signals.h"
#include "taskrun.h"
#include "url.h"
#include "util.h"
#include "worker.h"

enum worker_state {
    WORKER_RUNNING,
    WORKER_WARM, /* consumers cancelled, waiting for running tasks */
    WORKER_COLD,
};

struct worker {
    const struct cc_config *cfg;
    char *hostname;
    struct cc_broker broker;
    struct cc_broker pub; /* publishing connection, confirm mode (worker_publish) */
    struct cc_backend *backend;
    struct cc_consumer consumer;
    struct cc_pool pool;
    bool is_pool_started;
    enum worker_state state;
    int exit_code;
    bool is_broker_lost; /* gave up reconnecting: stop the pool warm, running tasks still store */

    /* Connection state (see worker_broker_lost / worker_reconnect). */
    struct cc_broker_tls tls;
    bool is_connected;
    int64_t reconnect_at_us;      /* cc_mono_us() of the next probe while disconnected */
    int64_t reconnect_log_at_us;  /* ... of the next logged (counted) failed attempt */
    unsigned reconnect_attempt;   /* failed attempts logged since the connection was lost */
    unsigned full_failures;       /* full connects failed after an accepted probe, in a row */
    struct cc_netprobe probe;     /* TCP probe of the broker in flight, while disconnected */
    uint64_t jitter;              /* xorshift state for the backoff jitter */
    uint8_t *stale;               /* by pool slot: RUN_* for running[slot] after a disconnect */
    struct worker_retry *retries; /* retry messages waiting for the connection to come back */
    size_t n_retries, cap_retries;

    struct cc_request *ready_head, *ready_tail; /* FIFO of requests waiting for a child */
    size_t n_ready;
    struct cc_request **eta; /* min-heap on msg.eta_us */
    size_t n_eta, cap_eta;
    struct cc_request **running; /* by pool slot */
    uint32_t next_seq;
    unsigned base_prefetch;  /* concurrency x multiplier; 0 = no QoS */
    size_t n_held;           /* requests with is_eta_held (each raises the QoS by one) */
    bool is_qos_dirty;       /* n_held changed: worker_update_qos at the end of the pass */
    struct cc_ratelimit *rl; /* rate limits; requests waiting for their slot (ratelimit.c) */

    uint64_t n_done, n_failed;

    uint64_t *acks; /* delivery tags to ack, sent by worker_flush_acks */
    size_t n_acks, cap_acks;
    int64_t acks_since_us; /* cc_mono_us() when acks[0] was queued */
    size_t ack_batch;      /* send at once when this many acks are pending */

    /* [redisx] delivery guarantees: redelivery counting, dead-lettering, dedup (parked
     * requests live in rd), ETA delay store. */
    struct cc_redeliver rd;
    struct cc_delaystore ds;
    bool is_rd_init;

    struct cc_pidbox ctl; /* [control] pidbox node, revoked set (control.c) */
    bool is_ctl_init;
    struct cc_events ev; /* [events] celeryev dispatcher (events.c) */
    bool is_blocked;     /* [blocked] a connection is blocked by the broker (worker_flow) */

    /* [jobrun] job run heartbeats and the outcomes the master decides (jobrun.c) */
    struct cc_jobkeeper *jk;
};

/* A running request whose delivery belonged to a connection that is gone: its tag means
 * nothing on the new channel, so nothing is acked or rejected for it any more. SETTLED: its
 * ack had left before the loss (early ack), so the message is gone from the queue and a
 * retry it asks for must still be published; UNSETTLED: RabbitMQ requeued it and will
 * redeliver it, so the redelivery is the retry. */
enum {
    RUN_LIVE = 0,
    RUN_STALE_SETTLED,
    RUN_STALE_UNSETTLED,
};

/* A retry whose message could not be published because the broker was away: published
 * right after the reconnect. At most one per running task, so bounded by the concurrency.
 * [blocked] Also while the broker blocks publishing (memory/disk alarm): published after
 * connection.unblocked. Deliveries then keep coming, so dispatch pauses at
 * WORKER_RETRIES_MAX of them (the prefetch window bounds the rest). */
struct worker_retry {
    struct cc_request *r;
    struct cc_pool_report rep;
    /* [blocked] acks_late original still unacked on the current connection: acked once the
     * retry is published; dropped (the broker redelivers it) if the connection is lost.
     * Raises the QoS by one meanwhile (n_held), so kept originals do not stop deliveries. */
    bool is_unsettled;
};

/* The broker socket is read at least this often even while worker_wants_deliveries() keeps
 * it out of poll(): heartbeats go out, and a connection the broker closed is noticed within
 * this time, so little prefetched work runs on a connection that is already gone (its
 * messages are redelivered; with acks_late each such run is a duplicate execution). */
#define WORKER_BROKER_SERVICE_US 100000

/* Reconnect pacing (issue #14: with a plain backoff the worker came back 15 s after the
 * broker did). While disconnected the broker is probed (a TCP connect, closed at once:
 * cc_netprobe) every WORKER_PROBE_MS scaled by a random factor in [0.5, 1.0), so a fleet
 * does not come back in lock step and the worker consumes again within about a second of
 * the broker accepting connections; only when a probe is accepted is the full connect
 * (AMQP handshake, topology, consume) tried. What backs off is the log: a failed attempt
 * is logged (and counted against broker_connection_max_retries) at once after the loss, then
 * after delays of 1 s doubling to 30 s, each scaled by [0.5, 1.0), as the attempts were
 * before, so giving up takes as long as it did.
 * A full connect that fails although the probe was accepted (a broker that refuses our
 * login, or one frozen with its listen socket still accepting: each such connect blocks the
 * loop up to broker_connection_timeout) is tried again only after its own backoff, 1 s
 * doubling to 30 s (jittered), which a failed probe resets. A probe in flight is looked at
 * every WORKER_PROBE_WAIT_MS at most (the loop's poll timeout), so a broker that drops SYNs
 * costs no blocking wait. */
#define WORKER_PROBE_MS          1000
#define WORKER_PROBE_WAIT_MS     20
#define WORKER_RECONNECT_BASE_MS 1000
#define WORKER_RECONNECT_MAX_MS  30000

/* Longest an ack may wait to be coalesced with later ones (see worker_acks_due). */
#define WORKER_ACK_MAX_DELAY_US 1000

/* After broker_connection_max_retries failed reconnects the worker exits, but first lets
 * running tasks finish and store their results. A task that hangs must not keep a worker
 * with no broker alive forever: after this long, or at a further TERM, INT or QUIT, the
 * children are stopped cold (SIGTERM, SIGKILL 2 s later). */
#define WORKER_BROKER_LOST_WAIT_MS 60000

/* [blocked] Retry messages kept while the broker blocks publishing, at most. */
#define WORKER_RETRIES_MAX 1024

/* ---- Request bookkeeping ------------------------------------------------------------- */

static void worker_fifo_push(struct worker *w, struct cc_request *r)
{
    r->next = NULL;
    if (w->ready_tail != NULL)
        w->ready_tail->next = r;
    else
        w->ready_head = r;
    w->ready_tail = r;
    w->n_ready++;
}

static struct cc_request *worker_fifo_pop(struct worker *w)
{
    struct cc_request *r = w->ready_head;

    if (r != NULL) {
        w->ready_head = r->next;
        if (w->ready_head == NULL)
            w->ready_tail = NULL;
        r->next = NULL;
        w->n_ready--;
    }
    return r;
}

static void worker_heap_push(struct worker *w, struct cc_request *r)
{
    size_t i;

    if (w->n_eta == w->cap_eta) {
        w->cap_eta = w->cap_eta ? w->cap_eta * 2 : 16;
        w->eta = cc_xrealloc(w->eta, w->cap_eta * sizeof(*w->eta));
    }
    i = w->n_eta++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;

        if (w->eta[parent]->msg.eta_us <= r->msg.eta_us)
            break;
        w->eta[i] = w->eta[parent];
        i = parent;
    }
    w->eta[i] = r;
}

static struct cc_request *worker_heap_pop(struct worker *w)
{
    struct cc_request *top, *last;
    size_t i = 0;

    if (w->n_eta == 0)
        return NULL;
    top = w->eta[0];
    last = w->eta[--w->n_eta];
    for (;;) {
        size_t c = 2 * i + 1;

        if (c >= w->n_eta)
            break;
        if (c + 1 < w->n_eta && w->eta[c + 1]->msg.eta_us < w->eta[c]->msg.eta_us)
            c++;
        if (last->msg.eta_us <= w->eta[c]->msg.eta_us)
            break;
        w->eta[i] = w->eta[c];
        i = c;
    }
    if (w->n_eta > 0)
        w->eta[i] = last;
    return top;
}

static void worker_free_held(struct worker *w);
static int worker_pub_open(struct worker *w, struct cc_err *err);

/* The connection or channel failed at run time (socket error, heartbeat timeout, the
 * broker closed it, a consumer was cancelled). Celery reconnects; so do we, without a
 * restart: drop the connection without a handshake (the broker requeues everything we held
 * unacked when the socket closes), forget the prefetched and ETA-held requests (they come
 * back as redeliveries), mark the running ones stale (their tags die with the channel; the
 * children still finish and store their results), and schedule a reconnect with backoff
 * (worker_reconnect). */
static void worker_broker_lost(struct worker *w, const struct cc_err *err)
{
    if (!w->is_connected || w->state == WORKER_COLD)
        return;
    if (cc_broker_last_reply(&w->broker)[0] != '\0' &&
        strstr(err->msg, cc_broker_last_reply(&w->broker)) == NULL)
        cc_error("consumer: broker error: %s (server: %s)", err->msg,
                 cc_broker_last_reply(&w->broker));
    else
        cc_error("consumer: broker error: %s", err->msg);
    cc_warn("consumer: Connection to broker lost. Trying to re-establish the connection...");
    for (int i = 0; i < w->pool.n; i++) {
        struct cc_request *r = w->running[i];
        bool is_pending = false;

        if (r == NULL)
            continue;
        for (size_t k = 0; k < w->n_acks && !is_pending; k++)
            is_pending = w->acks[k] == r->tag;
        w->stale[i] = r->is_acked && !is_pending ? RUN_STALE_SETTLED : RUN_STALE_UNSETTLED;
        r->is_acked = true; /* nothing more goes out for this tag */
    }
    w->n_acks = 0;
    worker_free_held(w);
    for (size_t i = 0, k = 0, n = w->n_retries; i < n; i++) { /* [blocked] */
        if (!w->retries[i].is_unsettled) {
            w->retries[k++] = w->retries[i];
            continue;
        }
        cc_info("Task %s[%s]: retry not published: the broker redelivers the original",
                cc_log_str(cc_consumer_request_name(w->retries[i].r)),
                cc_log_str(w->retries[i].r->msg.id));
        cc_consumer_request_free(w->retries[i].r);
        w->n_retries--;
    }
    if (w->is_rd_init)
        cc_redeliver_forget_parked(&w->rd); /* [redisx] parked twins are redelivered too */
    cc_broker_abandon(&w->broker);
    cc_events_on_lost(&w->ev); /* [events] */
    w->is_connected = false;
    w->reconnect_attempt = 0;
    w->reconnect_at_us = cc_mono_us(); /* first attempt at once: a dropped connection often
                                           just needs a new one */
    w->reconnect_log_at_us = w->reconnect_at_us;
}

/* Acks are collected and sent by worker_flush_acks(), which coalesces them into one
 * basic.ack(multiple=true) when that is exact; worker_acks_due() says when. */
static void worker_ack(struct worker *w, struct cc_request *r)
{
    if (r->is_acked)
        return;
    r->is_acked = true;
    if (w->n_acks == 0)
        w->acks_since_us = cc_mono_us();
    if (w->n_acks == w->cap_acks) {
        w->cap_acks = w->cap_acks ? w->cap_acks * 2 : 64;
        w->acks = cc_xrealloc(w->acks, w->cap_acks * sizeof(*w->acks));
    }
    w->acks[w->n_acks++] = r->tag;
}

static int worker_cmp_tag(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Lowest delivery tag the worker still holds unacked, UINT64_MAX if none, 0 if too many to
 * scan cheaply (then nothing is coalesced). */
static uint64_t worker_lowest_held(const struct worker *w)
{
    uint64_t low = UINT64_MAX;

    if (w->n_ready + w->n_eta + cc_ratelimit_n_held(w->rl) > 256)
        return 0;
    for (size_t i = 0; i < cc_ratelimit_n_held(w->rl);
         i++) { /* rate-limit hook: held unacked too */
        const struct cc_request *r = cc_ratelimit_held_get(w->rl, i);

        low = r->tag < low ? r->tag : low;
    }
    for (const struct cc_request *r = w->ready_head; r != NULL; r = r->next)
        low = r->tag < low ? r->tag : low;
    for (size_t i = 0; i < w->n_eta; i++)
        low = w->eta[i]->tag < low ? w->eta[i]->tag : low;
    for (int i = 0; i < w->pool.n; i++)
        if (w->running[i] != NULL && !w->running[i]->is_acked && w->running[i]->tag < low)
            low = w->running[i]->tag;
    for (size_t i = 0; i < w->n_retries; i++) /* [blocked] unsettled originals */
        if (w->retries[i].is_unsettled && w->retries[i].r->tag < low)
            low = w->retries[i].r->tag;
    return cc_redeliver_lowest_tag(&w->rd, low); /* [redisx] parked twins are unacked */
}

/* Send the collected acks. basic.ack(tag, multiple=true) acks every outstanding delivery
 * <= tag; deliveries not yet read from the socket all have higher tags, so coalescing is
 * exact for the pending tags below the lowest one still held. The others go one by one.
 * One frame instead of several saves a syscall here and work in RabbitMQ. */
static void worker_flush_acks(struct worker *w)
{
    struct cc_err err = {0};
    uint64_t low;
    size_t i = 0;
    int rc = CC_OK;

    if (w->n_acks == 0 || !w->broker.is_channel_open) {
        w->n_acks = 0;
        return;
    }
    if (w->n_acks > 1)
        qsort(w->acks, w->n_acks, sizeof(*w->acks), worker_cmp_tag);
    low = worker_lowest_held(w);
    while (i < w->n_acks && w->acks[i] < low)
        i++;
    if (i > 1)
        rc = cc_broker_ack_multiple(&w->broker, w->acks[i - 1], &err);
    else
        i = 0;
    for (; i < w->n_acks && rc == CC_OK; i++)
        rc = cc_broker_ack(&w->broker, w->acks[i], &err);
    w->n_acks = 0;
    if (rc != CC_OK)
        worker_broker_lost(w, &err);
}

/* Whether the loop should read deliveries now. While the ready FIFO holds at least one
 * request per child, every child that finishes can be refilled from it, so new deliveries
 * are not needed yet: they wait in the socket (prefetched and unacked either way, exactly
 * as they would in the FIFO) and are read in one batch when the FIFO runs low. This keeps
 * the broker socket out of poll() under load, so the master wakes once per child report
 * instead of also once per delivery frame. During a warm shutdown the broker is always
 * serviced, as before. */
static bool worker_wants_deliveries(const struct worker *w)
{
    /* [poolsize] one per member: the pool's size, not its slot count */
    return w->state != WORKER_RUNNING || w->n_ready < (size_t)cc_pool_size(&w->pool);
}

/* Whether the pending acks must go out now rather than wait for the next iteration.
 *
 * Under load a child finishes a no-op task every few dozen microseconds and each report
 * wakes the loop to hand over one job; sending each hand-off's ack on its own costs a
 * send(2) here and a frame in RabbitMQ per task. So acks wait, briefly and boundedly, to be
 * coalesced into one basic.ack(multiple=true): they go out as soon as
 *   - WORKER_ACK_MAX_DELAY_US has passed since the oldest was queued (the poll timeout
 *     honours this deadline, so a long-running task cannot hold its ack back);
 *   - ack_batch of them are pending (unacked hand-offs count against the QoS prefetch, so
 *     holding too many would stall deliveries);
 *   - the loop wants deliveries (worker_wants_deliveries): acks are what give RabbitMQ the
 *     prefetch credit to send them;
 *   - no child is busy (nothing will wake the loop soon), or the worker is shutting down.
 * The ack point itself is unchanged: an early ack is queued when the job is handed to a
 * child, never at receipt; a late one after the child's report. The wait only bounds how
 * much later than that point the frame leaves, as a socket buffer would. */
static bool worker_acks_due(const struct worker *w, int64_t now_us)
{
    if (w->n_acks == 0)
        return false;
    return w->n_acks >= w->ack_batch || now_us - w->acks_since_us >= WORKER_ACK_MAX_DELAY_US ||
           worker_wants_deliveries(w) || w->pool.n_busy == 0;
}

static void worker_reject(struct worker *w, struct cc_request *r, bool requeue)
{
    struct cc_err err = {0};

    if (r->is_acked)
        return;
    r->is_acked = true;
    r->is_requeued = requeue; /* [redisx] its hand-off mark stays: the redelivery counts */
    if (cc_broker_reject(&w->broker, r->tag, requeue, &err) != CC_OK)
        worker_broker_lost(w, &err);
}

/* [redisx] A request that ran is done with: unless its message went back to the queue
 * (requeued by us, or its connection was lost before the ack), its hand-off mark is dropped
 * (redeliver.h). Frees r. */
static void worker_release(struct worker *w, struct cc_request *r, bool is_returned)
{
    if (!r->is_requeued && !is_returned)
        cc_redeliver_settled(&w->rd, r);
    cc_consumer_request_free(r);
}

/* Forget every request not running (ready FIFO, ETA heap) without a broker call: after a
 * connection loss the broker requeues them by itself. */
static void worker_free_held(struct worker *w)
{
    struct cc_request *r;

    while ((r = worker_fifo_pop(w)) != NULL)
        cc_consumer_request_free(r);
    while ((r = worker_heap_pop(w)) != NULL)
        cc_consumer_request_free(r);
    w->n_held = 0;
    w->is_qos_dirty = false;
}

/* Warm shutdown: reject(requeue=true) every request not running, at once. */
static void worker_return_held(struct worker *w)
{
    struct cc_request *r;
    size_t n = w->n_ready + w->n_eta + (w->rl != NULL ? cc_ratelimit_n_held(w->rl) : 0);

    while (w->is_connected &&
           ((r = worker_fifo_pop(w)) != NULL || (r = worker_heap_pop(w)) != NULL ||
            (w->rl != NULL && (r = cc_ratelimit_pop_any(w->rl)) != NULL))) {
        worker_reject(w, r, true);
        cc_consumer_request_free(r);
    }
    worker_free_held(w); /* whatever is left if the connection dropped meanwhile */
    if (n > 0)
        cc_info("worker: returned %zu unstarted message(s) to the broker", n);
}

/* A store made by the master itself (NotRegistered, expired REVOKED, WorkerLostError,
 * failed retry publish). The master's backend is not patient: one immediate retry on a fresh
 * connection, then an ERROR here, because retrying for 20 s as Celery's retry_policy does
 * would stall the event loop (heartbeats, acks, every other task) that long. Pool children,
 * which may block, retry the full policy. */
static void worker_chord_flush(struct worker *w); /* [canvas-chord] */

static void worker_store_exc(struct worker *w, struct cc_request *r, const char *status,
                             const char *module, const char *type, const char *arg)
{
    struct cc_task_request view;
    struct cc_err err = {0};

    cc_consumer_request_view(r, w->hostname, &view);
    if (!(r->ignore_result && !w->cfg->store_errors_even_if_ignored) &&
        cc_backend_store_exc(w->backend, w->cfg, &view, r->msg.args, r->msg.kwargs, status, module,
                             type, arg, &err) != CC_OK)
        cc_error("Task %s[%s]: could not store %s: %s", cc_log_str(cc_consumer_request_name(r)),
                 cc_log_str(r->msg.id), status, err.msg);
    /* [canvas-chord] a chord member ending here returns its part (Celery's mark_as_failure /
     * mark_as_revoked -> on_chord_part_return), before the caller acks */
    cc_redeliver_chord_part(&w->rd, r, &view, status, module, type, arg);
    worker_chord_flush(w);
}

/* Apply the prefetch window base + n_held, once per loop pass:
 * like kombu's QoS.increment_eventually()/decrement_eventually(), which Celery's loop turns
 * into at most one basic.qos per iteration, a burst of ETA deliveries costs one synchronous
 * basic.qos round trip, not one each. */
static void worker_update_qos(struct worker *w)
{
    struct cc_err err = {0};
    unsigned want = w->base_prefetch + (unsigned)w->n_held;

    if (cc_broker_is_blocked(&w->broker))
        return; /* [blocked] basic.qos-ok cannot come before unblock; stays dirty */
    w->is_qos_dirty = false;
    if (w->base_prefetch == 0 || !w->broker.is_channel_open)
        return;
    /* cc_broker_qos sends nothing when the count is unchanged (e.g. one ETA request arrived
     * and another was dispatched in the same pass). */
    if (cc_broker_qos(&w->broker, want, &err) != CC_OK)
        worker_broker_lost(w, &err);
}

/* Expired (§6.3): REVOKED TaskRevokedError('expired'), ack. Frees r. */
static void worker_expire(struct worker *w, struct cc_request *r)
{
    cc_info("Discarding revoked task: %s[%s]", cc_log_str(cc_consumer_request_name(r)),
            cc_log_str(r->msg.id));
    cc_events_task_revoked(&w->ev, r, false, 0, true); /* [events] */
    /* [jobrun] a job run that expired before it could start */
    cc_jobkeeper_finish(w->jk, r, 'F', "TaskRevokedError: expired");
    worker_store_exc(w, r, "REVOKED", "celery.exceptions", "TaskRevokedError", "expired");
    worker_ack(w, r);
    cc_consumer_request_free(r);
}

/* [control] Revoked (§6.3): REVOKED TaskRevokedError('revoked'), ack. Frees r. */
static void worker_discard_revoked(struct worker *w, struct cc_request *r)
{
    cc_info("Discarding revoked task: %s[%s]", cc_log_str(cc_consumer_request_name(r)),
            cc_log_str(r->msg.id));
    cc_events_task_revoked(&w->ev, r, false, 0, false); /* [events] */
    /* [jobrun] a job run revoked before it started: cancelled */
    cc_jobkeeper_finish(w->jk, r, 'X', "revoked before it started");
    worker_store_exc(w, r, "REVOKED", "celery.exceptions", "TaskRevokedError", "revoked");
    worker_ack(w, r);
    cc_consumer_request_free(r);
}

static void worker_on_delivery(struct worker *w, const amqp_envelope_t *env)
{
    struct cc_request *r = NULL;
    struct cc_err err = {0};
    int64_t now;
    int rc;

    if (env->channel == CC_PIDBOX_CHANNEL) { /* [control] a pidbox request */
        cc_pidbox_on_delivery(&w->ctl, env);
        return;
    }
    rc = cc_consumer_on_delivery(&w->consumer, env, &r, &err);

    if (rc == CC_EAGAIN)
        return;
    if (rc != CC_OK) {
        worker_broker_lost(w, &err);
        return;
    }
    /* [redisx] Redelivered past worker_max_redeliveries: dead-lettered (redeliver.c). */
    switch (cc_redeliver_on_receipt(&w->rd, env, r, &rc, &err)) {
    case CC_REDELIVER_RUN:
        break;
    case CC_REDELIVER_ACK:
        worker_chord_flush(w); /* [canvas-chord] */
        worker_ack(w, r);
        cc_consumer_request_free(r);
        return;
    case CC_REDELIVER_REJECT:
        worker_chord_flush(w); /* [canvas-chord] */
        worker_reject(w, r, false);
        cc_consumer_request_free(r);
        return;
    case CC_REDELIVER_DONE: /* past the limit, but SUCCESS is stored: done, not poison */
        worker_ack(w, r);
        cc_consumer_request_free(r);
        return;
    }
    if (rc == CC_EAGAIN) { /* [blocked] dead-letter publish refused: back to the queue */
        cc_warn("Task %s[%s]: requeued: %s", cc_log_str(cc_consumer_request_name(r)),
                cc_log_str(r->msg.id), err.msg);
        worker_reject(w, r, true);
        cc_consumer_request_free(r);
        return;
    }
    if (rc != CC_OK) {
        cc_consumer_request_free(r); /* unacked: it returns to the queue with the channel */
        worker_broker_lost(w, &err);
        return;
    }
    now = cc_now_us();
    /* [events] task-received, before ETA waiting; an expired one gets task-revoked only. */
    if (w->state == WORKER_RUNNING && !(r->msg.expires_us != 0 && now > r->msg.expires_us))
        cc_events_task_received(&w->ev, r);
    if (w->state != WORKER_RUNNING) {
        /* Delivered before our basic.cancel took effect: not ours to start any more. */
        worker_reject(w, r, true);
        cc_consumer_request_free(r);
    } else if (r->msg.expires_us != 0 && now > r->msg.expires_us) {
        worker_expire(w, r);
    } else if (cc_pidbox_is_revoked(&w->ctl, r->msg.id)) { /* [control] */
        worker_discard_revoked(w, r);
    } else if (r->msg.eta_us > now && cc_delaystore_wants(&w->ds, r->msg.eta_us, now) &&
               cc_delaystore_offer(&w->ds, env, r) == CC_OK) {
        /* [redisx] Due beyond the horizon: now durable in the delay store (delaystore.c),
         * so ack it instead of holding it; QoS is not raised. If the store failed, the
         * branch below holds it as before (worker_delay_retry moves it later). */
        cc_info("Task %s[%s] due at %s moved to the delay store",
                cc_log_str(cc_consumer_request_name(r)), cc_log_str(r->msg.id),
                r->msg.eta ? r->msg.eta : "?");
        worker_ack(w, r);
        cc_consumer_request_free(r);
    } else if (r->msg.eta_us > now) {
        r->is_eta_held = true;
        w->n_held++;
        w->is_qos_dirty = true;
        worker_heap_push(w, r);
    } else {
        worker_fifo_push(w, r);
    }
}

/* [redisx] Republish due delay-store records on the publishing connection, whose confirms
 * (cc_broker_sync in confirm mode) come before the records are deleted. A failure leaves
 * them claimed; their lease expires and they are published again (at-least-once). */
static void worker_delay_tick(struct worker *w)
{
    struct cc_err err = {0};

    if (!cc_delaystore_is_due(&w->ds) || w->is_blocked) /* [blocked] claims wait for unblock */
        return;
    if (worker_pub_open(w, &err) == CC_OK && cc_delaystore_tick(&w->ds, &w->pub, &err) == CC_OK)
        return;
    if (err.code == CC_EAGAIN) /* [blocked] found blocked: its claims expire and return */
        return;
    cc_error("delay store: could not republish due messages: %s (retried when their claim "
             "expires)",
             err.msg);
    cc_broker_abandon(&w->pub);
}

/* [redisx] Held requests whose move to the delay store failed (Redis was down at receipt):
 * try again, at most every few seconds and only while there are such requests. A moved
 * request leaves the heap (rebuilt from the survivors), is acked and stops raising QoS. */
static void worker_delay_retry(struct worker *w)
{
    int64_t now = cc_now_us();
    size_t n = w->n_eta, left = 0;
    struct cc_request **all;

    if (!cc_delaystore_retry_due(&w->ds) || n == 0) {
        if (n == 0 && cc_delaystore_retry_due(&w->ds))
            cc_delaystore_retry_done(&w->ds, 0);
        return;
    }
    all = cc_xmalloc(n * sizeof(*all));
    memcpy(all, w->eta, n * sizeof(*all));
    w->n_eta = 0;
    for (size_t i = 0; i < n; i++) {
        struct cc_request *r = all[i];
        int rc = r->delay_rec != NULL ? cc_delaystore_retry(&w->ds, r, now) : CC_EAGAIN;

        if (rc == CC_OK) {
            if (r->is_eta_held) {
                r->is_eta_held = false;
                w->n_held--;
                w->is_qos_dirty = true;
            }
            worker_ack(w, r);
            cc_consumer_request_free(r);
            continue;
        }
        left += r->delay_rec != NULL;
        worker_heap_push(w, r);
    }
    free(all);
    cc_delaystore_retry_done(&w->ds, left);
}

/* ---- Pool reports -------------------------------------------------------------------- */

/* Publish on the worker's publishing connection (opened on first use, again after any
 * failure) and wait for the broker's confirm, so a message the worker republishes (a
 * retry) is the broker's responsibility before the original is acked. A separate
 * connection because confirms are read synchronously, which on the consuming connection
 * would swallow deliveries; no heartbeats on it (mostly idle): a connection the broker
 * dropped meanwhile fails the first publish, which is then tried once on a fresh one.
 * A publish whose confirm did not come (timeout, nack) is not repeated here: the caller
 * decides (requeue the original or keep the message for later). */
#define WORKER_CONFIRM_TIMEOUT_MS 5000

static int worker_pub_open(struct worker *w, struct cc_err *err)
{
    const struct cc_config *cfg = w->cfg;
    int rc;

    if (w->pub.is_channel_open)
        return CC_OK;
    cc_broker_abandon(&w->pub);
    rc = cc_broker_connect(&w->pub, cfg->broker_url, 0, cfg->connect_timeout_s, &w->tls, err);
    if (rc == CC_OK)
        rc = cc_broker_confirm_select(&w->pub, err);
    if (rc != CC_OK)
        cc_broker_abandon(&w->pub);
    return rc;
}

static int worker_publish(struct worker *w, const char *exchange, const char *routing_key,
                          const struct cc_msg_out *m, struct cc_err *err)
{
    int rc = CC_EBROKER;

    if (w->is_blocked) /* [blocked] an alarm blocks every publishing connection */
        return cc_err_set(err, CC_EAGAIN, "the broker is blocking publishers");
    for (int attempt = 0; attempt < 2; attempt++) {
        bool was_open = w->pub.is_channel_open;

        if ((rc = worker_pub_open(w, err)) != CC_OK)
            return rc;
        rc = cc_broker_publish_confirmed(&w->pub, exchange, routing_key, m,
                                         WORKER_CONFIRM_TIMEOUT_MS, err);
        /* [blocked] CC_EAGAIN: blocked before or after sending; keep the connection so
         * that its connection.unblocked is seen (worker_flow). */
        if (rc == CC_OK || rc == CC_ENOTFOUND_Q || rc == CC_EAGAIN)
            return rc;
        cc_broker_abandon(&w->pub);
        if (!was_open || rc == CC_ETIMEDOUT || strstr(err->msg, "nack") != NULL)
            break; /* a fresh connection failed too, or the broker did get the message */
    }
    return rc;
}

/* [canvas-chord] A chord member that ended in the master completed its chord
 * (cc_redeliver_chord_part): publish what that applied (the body's errbacks) on the
 * confirming connection, then delete the chord's keys. Before the message is acked: if a
 * publish fails the keys stay (they expire). */
static void worker_chord_flush(struct worker *w)
{
    struct cc_redeliver *rd = &w->rd;
    struct cc_err err = {0};
    int rc = CC_OK;

    if (!rd->is_chord_pending)
        return;
    for (size_t i = 0; i < rd->chord_plan.n && rc == CC_OK; i++) {
        const struct cc_canvas_step *st = &rd->chord_plan.steps[i];

        if (st->kind == CC_CANVAS_PUBLISH &&
            (rc = worker_publish(w, st->exchange, st->routing_key, &st->msg, &err)) != CC_OK)
            cc_error("Chord %s: could not publish %s[%s]: %s", cc_log_str(rd->chord_group),
                     cc_log_str(st->task), cc_log_str(st->task_id), err.msg);
    }
    if (rc == CC_OK && rd->chord_group != NULL &&
        cc_chord_done(w->backend, rd->chord_group, &err) != CC_OK)
        cc_warn("Chord %s: could not delete its keys (they expire): %s",
                cc_log_str(rd->chord_group), err.msg);
    cc_redeliver_chord_clear(rd);
}

/* TimeLimitExceeded's args: the limit as the message gave it (int or float). */
static json_t *worker_limit_args(const struct cc_pool_report *rep)
{
    return json_pack("[o]", rep->is_limit_int ? json_integer((json_int_t)rep->time_limit_s)
                                              : json_real(rep->time_limit_s));
}

/* [canvas] Celery's mark_as_failure, called from Request.on_failure / on_timeout, walks
 * request.chain: the later steps of a chain whose step the master failed (WorkerLostError,
 * TimeLimitExceeded) get the same FAILURE, and a later step's chord gets its part. */
struct worker_chain_part {
    struct worker *w;
    const struct cc_request *r;
};

static void worker_chain_part(void *ud, const struct cc_task_request *step, const json_t *exc)
{
    struct worker_chain_part *wp = ud;

    cc_redeliver_chord_part_args(&wp->w->rd, wp->r, step, "FAILURE",
                                 json_string_value(json_object_get(exc, "exc_module")),
                                 json_string_value(json_object_get(exc, "exc_type")),
                                 json_incref(json_object_get(exc, "exc_message")));
    worker_chord_flush(wp->w);
}

static void worker_fail_chain(struct worker *w, const struct cc_request *r, const char *module,
                              const char *type, json_t *exc_args)
{
    struct worker_chain_part wp = {.w = w, .r = r};
    struct cc_task_request view;
    json_t *exc;

    if (!json_is_array(r->msg.chain) || json_array_size(r->msg.chain) == 0) {
        json_decref(exc_args);
        return;
    }
    cc_consumer_request_view(r, w->hostname, &view);
    exc = cc_result_exc_new(module, type, exc_args);
    if (exc != NULL)
        (void)cc_chord_chain_fail_rest(w->backend, w->cfg, &view,
                                       !(r->ignore_result && !w->cfg->store_errors_even_if_ignored),
                                       exc, NULL, worker_chain_part, &wp);
    json_decref(exc);
}

/* [canvas-exec] A failure the master stores (TimeLimitExceeded, WorkerLostError) calls the
 * task's errbacks, as Celery's mark_as_failure does from Request.on_timeout / on_failure:
 * new-style ones of our table in-process (cc_pool_master_errbacks), the rest published
 * on the confirming connection before the message is acked. `exc_args` is stolen. */
static void worker_errbacks(struct worker *w, const struct cc_request *r, const char *module,
                            const char *type, json_t *exc_args)
{
    const json_t *ebs = r->msg.embed != NULL ? json_object_get(r->msg.embed, "errbacks") : NULL;
    struct cc_canvas_plan plan;
    struct cc_err err = {0};
    json_t *exc;

    if (!json_is_array(ebs) || json_array_size(ebs) == 0) {
        json_decref(exc_args);
        return;
    }
    exc = cc_result_exc_new(module, type, exc_args);
    cc_canvas_plan_init(&plan);
    if (exc == NULL || cc_pool_master_errbacks(&w->pool, r, exc, &plan, &err) != CC_OK)
        cc_error("Task %s[%s]: could not apply its errbacks: %s",
                 cc_log_str(cc_consumer_request_name(r)), cc_log_str(r->msg.id),
                 exc ? err.msg : "out of memory");
    for (size_t i = 0; i < plan.n; i++) {
        const struct cc_canvas_step *st = &plan.steps[i];

        if (st->kind == CC_CANVAS_PUBLISH &&
            worker_publish(w, st->exchange, st->routing_key, &st->msg, &err) != CC_OK)
            cc_error("Task %s[%s]: could not publish errback %s[%s]: %s",
                     cc_log_str(cc_consumer_request_name(r)), cc_log_str(r->msg.id),
                     cc_log_str(st->task), cc_log_str(st->task_id), err.msg);
    }
    cc_canvas_plan_deinit(&plan);
    json_decref(exc);
}

/* Publish the retry message (§2.5): same id, retries+1, eta, parent_id = own id.
 * Returns CC_OK, or the encode/publish error (logged by the caller). */
static int worker_publish_retry(struct worker *w, struct cc_request *r,
                                const struct cc_pool_report *rep, struct cc_err *err)
{
    struct cc_msg m = r->msg; /* shallow: only read by cc_message_encode */
    struct cc_msg_out out;
    char eta[sizeof(rep->retry_eta)];
    int64_t now = cc_now_us(), eta_us;
    int rc;

    memset(&out, 0, sizeof(out));
    if (rep->retry_eta[0] != '\0' && cc_isotime_parse(rep->retry_eta, &eta_us) == CC_OK) {
        snprintf(eta, sizeof(eta), "%s", rep->retry_eta);
    } else {
        int64_t span_us;

        /* [issue 14] A task's countdown may be any double (often one of its arguments):
         * negative or NaN = now, huge = the far end of cc_isotime_span_us, never an overflow. */
        if (cc_isotime_span_us(rep->retry_countdown_s, &span_us) != CC_ISOTIME_SPAN_OK &&
            span_us < 0)
            span_us = 0;
        eta_us = cc_isotime_add_us(now, span_us);
        cc_isotime_format(eta_us, 1, eta, sizeof(eta));
    }
    m.retries = r->msg.retries + 1;
    m.eta = eta;
    m.eta_us = eta_us;
    m.parent_id = r->msg.id;
    rc = cc_message_encode(&m, now, &out, err);
    if (rc == CC_OK && cc_jobrun_header(r->msg.headers) != NULL) /* [jobrun] the run goes on */
        json_object_set(out.headers, CC_JOBRUN_HEADER,
                        json_object_get(r->msg.headers, CC_JOBRUN_HEADER));
    if (rc == CC_OK) {
        rc = worker_publish(w, r->exchange, r->routing_key, &out, err);
    }
    cc_message_out_deinit(&out);
    return rc;
}

/* The retry message could not be encoded or published: the task would silently vanish once
 * the original is acked (the child stored RETRY, so the client waits on). Store FAILURE with
 * a RuntimeError naming the cause instead, then the caller acks. In Celery the publish error
 * raised inside Task.retry() propagates and the task fails with it; the master does not
 * have the task's own exception, so it names the publish error. */
static void worker_retry_failed(struct worker *w, struct cc_request *r, const struct cc_err *err)
{
    char msg[320];

    snprintf(msg, sizeof(msg), "celeryc: could not publish the retry message: %s", err->msg);
    cc_error("Task %s[%s]: %s; storing FAILURE", cc_log_str(cc_consumer_request_name(r)),
             cc_log_str(r->msg.id), msg);
    w->n_failed++;
    worker_store_exc(w, r, "FAILURE", "builtins", "RuntimeError", msg);
}

/* Keep a retry for after the reconnect (see struct worker_retry). Takes r. */
static void worker_defer_retry(struct worker *w, struct cc_request *r,
                               const struct cc_pool_report *rep)
{
    if (w->n_retries == w->cap_retries) {
        w->cap_retries = w->cap_retries ? w->cap_retries * 2 : 8;
        w->retries = cc_xrealloc(w->retries, w->cap_retries * sizeof(*w->retries));
    }
    w->retries[w->n_retries++] =
        (struct worker_retry){.r = r, .rep = *rep, .is_unsettled = !r->is_acked};
    if (!r->is_acked) { /* [blocked] its prefetch slot is given back, as for ETA holds */
        w->n_held++;
        w->is_qos_dirty = true;
    }
    cc_info("Task %s[%s]: retry message waits for the broker to %s",
            cc_log_str(cc_consumer_request_name(r)), cc_log_str(r->msg.id),
            w->is_blocked ? "unblock publishing" : "come back");
}

/* Publish the deferred retries on the new connection. Their originals were acked on the
 * old one (settled), so there is nothing to ack now. */
static void worker_flush_retries(struct worker *w)
{
    size_t i = 0;

    for (; i < w->n_retries && w->is_connected && !w->is_blocked; i++) {
        struct worker_retry *d = &w->retries[i];
        struct cc_err err = {0};

        if (worker_publish_retry(w, d->r, &d->rep, &err) != CC_OK) {
            if (!w->is_connected || err.code == CC_EAGAIN)
                break;           /* lost or blocked again: keep it and the rest */
            if (d->is_unsettled) /* [blocked] as in worker_on_report: run it again */
                worker_reject(w, d->r, true);
            else
                worker_retry_failed(w, d->r, &err);
        }
        if (d->is_unsettled) { /* [blocked] published: the original is done */
            worker_ack(w, d->r);
            w->n_held--;
            w->is_qos_dirty = true;
        }
        worker_release(w, d->r, false);
    }
    if (i == 0)
        return;
    memmove(w->retries, w->retries + i, (w->n_retries - i) * sizeof(*w->retries));
    w->n_retries -= i;
}

static void worker_on_report(struct worker *w, const struct cc_pool_report *rep)
{
    struct cc_request *r = w->running[rep->slot];
    int stale = w->stale[rep->slot];

    w->running[rep->slot] = NULL;
    w->stale[rep->slot] = RUN_LIVE;
    cc_jobkeeper_on_done(w->jk, (int)rep->slot); /* [jobrun] */
    if (r == NULL)
        return;
    w->n_done++;
    cc_events_task_report(&w->ev, r, rep); /* [events] */
    bool is_failure = false; /* FAILURE or time limit: Celery's on_failure / on_timeout */
    switch (rep->status) {
    case CC_OK:
    case CC_TASK_IGNORE:
        break;
    case CC_POOL_TIME_LIMIT:
        /* The pool killed the child at the hard limit (Request.on_timeout): the master
         * stores TimeLimitExceeded. */
        w->n_failed++;
        is_failure = true;
        cc_pool_store_time_limit(&w->pool, r, rep);
        { /* its chord fails (on_timeout -> mark_as_failure -> on_chord_part_return) */
            struct cc_task_request view;

            cc_consumer_request_view(r, w->hostname, &view);
            cc_redeliver_chord_part_args(&w->rd, r, &view, "FAILURE", "billiard.exceptions",
                                         "TimeLimitExceeded", worker_limit_args(rep));
            worker_chord_flush(w);
        }
        worker_fail_chain(w, r, "billiard.exceptions", "TimeLimitExceeded", worker_limit_args(rep));
        worker_errbacks(w, r, "billiard.exceptions", "TimeLimitExceeded", /* [canvas-exec] */
                        worker_limit_args(rep));
        { /* [jobrun] the killed executor could not finish its run */
            char msg[64];

            snprintf(msg, sizeof(msg), "TimeLimitExceeded: %g", rep->time_limit_s);
            cc_jobkeeper_finish(w->jk, r, 'F', msg);
        }
        break;
    case CC_TASK_RETRY: {
        struct cc_err err = {0};

        if (stale == RUN_STALE_UNSETTLED) {
            /* The broker requeued the original when the connection dropped: its
             * redelivery is the retry. Publishing one too would run the task twice. */
            cc_warn("Task %s[%s]: retry not published: the connection was lost before the "
                    "message was acked, so the broker redelivers it",
                    cc_log_str(cc_consumer_request_name(r)), cc_log_str(r->msg.id));
            cc_events_retry_release(&w->ev, r->msg.id); /* [issue 14] no copy will come */
            break;
        }
        if (worker_publish_retry(w, r, rep, &err) != CC_OK) {
            cc_events_retry_release(&w->ev, r->msg.id); /* [issue 14] no copy (yet) */
            if (err.code == CC_EAGAIN) {
                /* [blocked] Keep the retry until the broker takes publishes again; an
                 * acks_late original stays unacked until then (requeueing it now would
                 * run it again at once, over and over during the alarm). */
                worker_defer_retry(w, r, rep);
                return; /* r is now owned by the deferred list */
            }
            if (!r->is_acked) {
                /* acks_late: the original is still ours; give it back to run again rather
                 * than drop the retry. */
                cc_error("Task %s[%s]: could not publish the retry message: %s; requeueing "
                         "the original",
                         cc_log_str(cc_consumer_request_name(r)), cc_log_str(r->msg.id), err.msg);
                worker_reject(w, r, true);
            } else if (!w->is_connected || err.code == CC_EBROKER || err.code == CC_ECHANNEL) {
                /* Acked when it started, so the retry message is all there is: keep it and
                 * publish it once the broker is back. */
                worker_defer_retry(w, r, rep);
                return; /* r is now owned by the deferred list */
            } else {
                worker_retry_failed(w, r, &err);
            }
        }
        break;
    }
    case CC_TASK_REJECT:
        /* Reject is only possible while unacked (acks_late), as Celery's Request.reject. */
        worker_reject(w, r, rep->reject_requeue != 0);
        break;
    default:
        w->n_failed++;
        is_failure = true;
        break;
    }
    /* The child retried the final state's store for ~20 s (Celery's retry_policy) and gave
     * up. With acks_late the message is still ours: requeue it, so the task runs again once
     * Redis is back (at-least-once) rather than being acked with nothing stored. With early
     * acks it was acked when the task started; Celery loses that result too, so say so. A
     * RETRY state is only intermediate (the retry message carries on) and REJECT stores
     * nothing, so neither counts. */
    if (rep->publish_failed) { /* [canvas] the executor logged what it could not publish */
        if (!r->is_acked) {
            cc_error("Task %s[%s]: publish failed; requeueing the message to run it again",
                     cc_log_str(cc_consumer_request_name(r)), cc_log_str(r->msg.id));
            worker_reject(w, r, true);
        } else {
            cc_error("Task %s[%s]: publish failed: a continuation of this task is lost (the "
                     "message was acked when the task started)",
                     cc_log_str(cc_consumer_request_name(r)), cc_log_str(r->msg.id));
        }
    }
    if (rep->store_failed && !rep->publish_failed && rep->status != CC_TASK_RETRY &&
        rep->status != CC_TASK_REJECT) {
        if (!r->is_acked) {
            cc_error("Task %s[%s]: result not stored; requeueing the message to run it again",
                     cc_log_str(cc_consumer_request_name(r)), cc_log_str(r->msg.id));
            worker_reject(w, r, true);
        } else {
            cc_error("Task %s[%s]: result lost: it could not be stored and the message was "
                     "acked when the task started",
                     cc_log_str(cc_consumer_request_name(r)), cc_log_str(r->msg.id));
        }
    }
    /* acks_late: the child has stored the result; now ack. A failure or timeout is acked
     * too unless acks_on_failure_or_timeout is off (task or worker): then, as Celery's
     * Request.on_failure, the message is rejected without requeue (dead-lettered). */
    if (is_failure && r->acks_late &&
        !cc_taskrun_acks_on_failure_or_timeout(r->entry, w->cfg->acks_on_failure_or_timeout)) {
        if (!r->is_acked) /* [events] Celery's Request.reject */
            cc_events_task_rejected(&w->ev, r, false);
        worker_reject(w, r, false);
    }
    worker_ack(w, r);
    worker_release(w, r, stale == RUN_STALE_UNSETTLED);
}

static void worker_on_lost(void *ud, int slot, uint32_t seq, int wstatus)
{
    struct worker *w = ud;
    struct cc_request *r = w->running[slot];
    int stale = w->stale[slot];
    char how[64], msg[160];

    w->running[slot] = NULL;
    w->stale[slot] = RUN_LIVE;
    cc_jobkeeper_on_done(w->jk, slot); /* [jobrun] */
    if (r == NULL)
        return;
    if (cc_pidbox_take_terminated(&w->ctl, r->msg.id, NULL)) { /* [control] revoke terminate */
        cc_events_task_revoked(&w->ev, r, true, WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : 0,
                               false); /* [events] */
        /* [jobrun] X when the run was being stopped (C), else F: the store decides */
        cc_jobkeeper_finish(w->jk, r, 'F', "TaskRevokedError: terminated");
        worker_store_exc(w, r, "REVOKED", "celery.exceptions", "TaskRevokedError", "terminated");
        worker_ack(w, r);
        worker_release(w, r, stale == RUN_STALE_UNSETTLED);
        return;
    }
    cc_pool_human_status(wstatus, how, sizeof(how));
    snprintf(msg, sizeof(msg), "Worker exited prematurely: %s Job: %u.", how, (unsigned)seq);
    cc_error("Task handler raised error: WorkerLostError('%s')", msg);
    w->n_failed++;
    /* Celery's Request.on_failure for acks_late tasks: reject_on_worker_lost requeues the
     * message and stores nothing (the task runs again); otherwise the failure is stored and
     * the message acked, or rejected without requeue when acks_on_failure_or_timeout is
     * off. Early-acked messages were acked when the task started. */
    if (r->acks_late && !r->is_acked &&
        cc_taskrun_reject_on_worker_lost(r->entry, w->cfg->reject_on_worker_lost)) {
        cc_warn("Task %s[%s]: requeued (reject_on_worker_lost)",
                cc_log_str(cc_consumer_request_name(r)), cc_log_str(r->msg.id));
        cc_events_task_rejected(&w->ev, r, true); /* [events] */
        worker_reject(w, r, true);
        worker_release(w, r, true);
        return;
    }
    worker_store_exc(w, r, "FAILURE", "billiard.exceptions", "WorkerLostError", msg);
    { /* [jobrun] */
        char text[sizeof(msg) + 20];

        snprintf(text, sizeof(text), "WorkerLostError: %s", msg);
        cc_jobkeeper_finish(w->jk, r, 'F', text);
    }
    worker_fail_chain(w, r, "billiard.exceptions", "WorkerLostError", json_pack("[s]", msg));
    worker_errbacks(w, r, "billiard.exceptions", "WorkerLostError", json_pack("[s]", msg));
    if (cc_events_task_on(&w->ev)) { /* [events] [tracebacks] repr and Python-shaped traceback */
        json_t *exc_args = json_pack("[s]", msg);

        cc_events_task_failed_exc(&w->ev, r, "billiard.exceptions", "WorkerLostError", exc_args);
        json_decref(exc_args);
    }
    if (r->acks_late &&
        !cc_taskrun_acks_on_failure_or_timeout(r->entry, w->cfg->acks_on_failure_or_timeout))
        worker_reject(w, r, false);
    worker_ack(w, r);
    worker_release(w, r, stale == RUN_STALE_UNSETTLED);
}

static void worker_drain_reports(struct worker *w)
{
    struct cc_pool_report reps[64];
    int n;

    do {
        n = cc_pool_read_reports(&w->pool, reps, (int)CC_ARRAY_LEN(reps));
        for (int i = 0; i < n; i++)
            worker_on_report(w, &reps[i]);
    } while (n == (int)CC_ARRAY_LEN(reps));
}

/* ---- Rate limits (src/worker/ratelimit.c) --------------------------------------------------- */

/* Beyond this many requests waiting for a rate-limit slot, further ones no longer raise the
 * QoS prefetch (they then use the base window, as every rate-limited message does in
 * Celery), so a long backlog of one limited type cannot pull a whole queue into memory. */
#define WORKER_RATE_MAX_QOS_BUMP 4096

/* Called for a request about to be handed to a child. A request of a rate-limited type is
 * admitted once (its start slot reserved; after its ETA, as Celery applies the bucket after
 * the ETA). If the slot is in the future it waits, unacked, in the rate-limit heap and
 * raises the QoS prefetch by one as an ETA-held message does, so a limited type never eats
 * the prefetch window other types need; returns true then. Requests of one type keep their
 * order: slots are reserved in FIFO order and released in slot order. */
static bool worker_rate_hold(struct worker *w, struct cc_request *r)
{
    int64_t now_us, slot_us;

    if (r->is_rate_admitted || cc_ratelimit_count(w->rl) == 0)
        return false;
    r->is_rate_admitted = true;
    now_us = cc_mono_us();
    slot_us = cc_ratelimit_admit(w->rl, r->entry->name, now_us);
    if (slot_us <= now_us)
        return false;
    if (cc_ratelimit_n_held(w->rl) < WORKER_RATE_MAX_QOS_BUMP) {
        r->is_eta_held = true;
        w->n_held++;
        w->is_qos_dirty = true;
    }
    cc_ratelimit_hold(w->rl, r, slot_us);
    return true;
}

/* Requests whose slot has come join the ready FIFO (Celery's _limit_move_to_pool). */
static void worker_rate_release(struct worker *w)
{
    struct cc_request *r;
    int64_t now_us;

    if (cc_ratelimit_n_held(w->rl) == 0)
        return;
    now_us = cc_mono_us();
    while ((r = cc_ratelimit_pop_due(w->rl, now_us)) != NULL)
        worker_fifo_push(w, r);
}

/* ---- Dispatch ------------------------------------------------------------------------ */

static void worker_dispatch(struct worker *w)
{
    int64_t now = cc_now_us();
    int slot;

    /* [redisx] Parked redelivered twins whose task has finished go back to the FIFO. */
    for (struct cc_request *p; (p = cc_redeliver_take_unparked(&w->rd, w->running, w->pool.n));)
        worker_fifo_push(w, p);
    /* Due ETA requests join the FIFO in ETA order. */
    while (w->n_eta > 0 && w->eta[0]->msg.eta_us <= now)
        worker_fifo_push(w, worker_heap_pop(w));
    worker_rate_release(w); /* rate-limit hook: slots that have come */
    while (w->state == WORKER_RUNNING && w->ready_head != NULL &&
           w->n_retries < WORKER_RETRIES_MAX && /* [blocked] */
           (slot = cc_pool_idle(&w->pool)) >= 0) {
        struct cc_request *r = worker_fifo_pop(w);
        struct cc_err err = {0};
        uint32_t seq;

        if (r->is_eta_held) {
            r->is_eta_held = false;
            w->n_held--;
            w->is_qos_dirty = true;
        }
        /* Celery checks expiry again just before execution (§6.3). */
        if (r->msg.expires_us != 0 && now > r->msg.expires_us) {
            worker_expire(w, r);
            continue;
        }
        if (cc_pidbox_is_revoked(&w->ctl, r->msg.id)) { /* [control] and before execution */
            worker_discard_revoked(w, r);
            continue;
        }
        /* [redisx] Redelivered: parked while its twin runs here, or acked without running
         * when SUCCESS is already stored (worker_deduplicate_successful_tasks). */
        enum cc_redeliver_gate gate = cc_redeliver_gate(&w->rd, r, w->running, w->pool.n);
        if (gate == CC_GATE_PARKED)
            continue;
        if (gate == CC_GATE_DONE) {
            worker_ack(w, r);
            cc_consumer_request_free(r);
            continue;
        }
        if (worker_rate_hold(w, r)) /* rate-limit hook: wait for the task type's slot */
            continue;
        seq = w->next_seq++;
        w->running[slot] = r;
        cc_jobkeeper_on_dispatch(w->jk, slot, r);          /* [jobrun] heartbeats while it runs */
        cc_pidbox_on_start(&w->ctl, slot, r);              /* [control] time_start, stats total */
        w->pool.is_event_text = cc_events_task_on(&w->ev); /* [events] */
        cc_events_task_started(&w->ev, r);                 /* [events] */
        cc_redeliver_on_handoff(&w->rd, r);                /* [redisx] its redelivery will count */
        if (cc_pool_dispatch(&w->pool, slot, r, seq, &err) != CC_OK)
            cc_warn("dispatch: %s (the job will be reported lost)", err.msg);
        /* Ack early = when execution starts, i.e. now that a child has the job. */
        if (!r->acks_late)
            worker_ack(w, r);
    }
}

/* ---- Start-up ------------------------------------------------------------------------ */

static int worker_declare(struct worker *w, struct cc_err *err)
{
    const struct cc_config *cfg = w->cfg;
    const char *dflt[2] = {cfg->default_queue ? cfg->default_queue : "celery", NULL};
    char *const *queues = cfg->n_queues > 0 ? cfg->queues : (char *const *)dflt;
    size_t nq = cfg->n_queues > 0 ? cfg->n_queues : 1;
    int rc = CC_OK;

    for (size_t i = 0; i < nq && rc == CC_OK; i++) {
        const char *q = queues[i];

        if (!cfg->create_missing_queues && strcmp(q, dflt[0]) != 0)
            return cc_err_set(err, CC_ECONFIG,
                              "Queue '%s' missing from task_queues and "
                              "task_create_missing_queues is off",
                              q);
        /* kombu: Queue(q, Exchange(q, 'direct'), routing_key=q).declare():
         * exchange.declare, queue.declare, queue.bind (§1.3). */
        rc = cc_broker_declare_exchange(&w->broker, q, "direct", true, err);
        if (rc == CC_OK)
            rc = cc_broker_declare_queue_typed(&w->broker, q, cfg->queue_max_priority,
                                               cfg->queue_type == CC_QUEUE_QUORUM, err);
        if (rc == CC_EPRECOND) {
            cc_error("Queue '%s' exists with different arguments; RabbitMQ refused the "
                     "declaration: %s",
                     q, cc_broker_last_reply(&w->broker));
            return rc;
        }
        if (rc == CC_OK)
            rc = cc_broker_bind(&w->broker, q, q, q, err);
    }
    /* Celery workers always declare the event exchange (§1.1, §4.1). */
    if (rc == CC_OK)
        rc = cc_broker_declare_exchange(&w->broker, "celeryev", "topic", true, err);
    if (rc == CC_OK) /* [events] our publishing channel, on every (re)connect */
        rc = cc_events_on_connect(&w->ev, err);
    if (rc == CC_OK) /* [redisx] "<queue>.dead" for dead-lettered messages */
        rc = cc_redeliver_declare(&w->rd, err);
    /* Quorum queues refuse global QoS; per-consumer QoS must precede basic.consume and
     * cannot be raised for running consumers, so ETA messages go to the delay store. */
    w->broker.is_qos_per_consumer = cfg->queue_type == CC_QUEUE_QUORUM;
    if (rc == CC_OK && w->base_prefetch > 0)
        rc = cc_broker_qos(&w->broker, w->base_prefetch, err);
    for (size_t i = 0; i < nq && rc == CC_OK; i++)
        rc = cc_broker_consume(&w->broker, queues[i], err);
    return rc;
}

/* Connect, declare the topology, set QoS and consume: start-up and every reconnect. */
static int worker_connect(struct worker *w, struct cc_err *err)
{
    const struct cc_config *cfg = w->cfg;
    int rc = cc_broker_connect(&w->broker, cfg->broker_url, cfg->heartbeat_s,
                               cfg->connect_timeout_s, &w->tls, err);

    if (rc == CC_OK)
        rc = worker_declare(w, err);
    if (rc == CC_OK) /* [control] pidbox queue on channel 2, add/cancel_consumer */
        rc = cc_pidbox_attach(&w->ctl, err);
    if (rc != CC_OK) {
        cc_broker_abandon(&w->broker);
        return rc;
    }
    w->is_connected = true;
    return CC_OK;
}

/* Next reconnect delay in ms: exponential, capped, with jitter (see
 * WORKER_RECONNECT_BASE_MS). */
static int64_t worker_backoff_ms(struct worker *w)
{
    int64_t ms = WORKER_RECONNECT_BASE_MS;

    for (unsigned i = 1; i < w->reconnect_attempt && ms < WORKER_RECONNECT_MAX_MS; i++)
        ms *= 2;
    if (ms > WORKER_RECONNECT_MAX_MS)
        ms = WORKER_RECONNECT_MAX_MS;
    w->jitter ^= w->jitter << 13;
    w->jitter ^= w->jitter >> 7;
    w->jitter ^= w->jitter << 17;
    return ms / 2 + (int64_t)(w->jitter % (uint64_t)(ms / 2 + 1));
}

/* A probe (is_full false) or a full connect failed: schedule the next probe (after a full
 * connect, its own backoff); when a logged attempt is due, count it, log it (Celery's lines)
 * and schedule the next one with the backoff, or give up. */
static void worker_reconnect_failed(struct worker *w, bool is_full, const struct cc_err *err)
{
    int64_t now = cc_mono_us(), next_ms;
    char max[16] = "inf", *u;

    w->jitter ^= w->jitter << 13;
    w->jitter ^= w->jitter >> 7;
    w->jitter ^= w->jitter << 17;
    if (is_full) {
        int64_t ms = WORKER_RECONNECT_BASE_MS;

        w->full_failures++;
        for (unsigned i = 1; i < w->full_failures && ms < WORKER_RECONNECT_MAX_MS; i++)
            ms *= 2;
        if (ms > WORKER_RECONNECT_MAX_MS)
            ms = WORKER_RECONNECT_MAX_MS;
        next_ms = ms / 2 + (int64_t)(w->jitter % (uint64_t)(ms / 2));
    } else {
        w->full_failures = 0;
        next_ms = WORKER_PROBE_MS / 2 + (int64_t)(w->jitter % (WORKER_PROBE_MS / 2));
    }
    w->reconnect_at_us = now + next_ms * 1000;
    if (now < w->reconnect_log_at_us)
        return;
    u = cc_url_redact(w->cfg->broker_url ? w->cfg->broker_url : "");
    w->reconnect_attempt++;
    if (w->cfg->connection_max_retries > 0 &&
        w->reconnect_attempt >= (unsigned)w->cfg->connection_max_retries) {
        cc_crit("consumer: Cannot connect to %s: %s. Giving up after %u attempts; exiting",
                u ? u : "?", err->msg, w->reconnect_attempt);
        w->state = WORKER_COLD;
        w->exit_code = 1;
        w->is_broker_lost = true;
        free(u);
        return;
    }
    int64_t ms = worker_backoff_ms(w);
    if (w->cfg->connection_max_retries > 0)
        snprintf(max, sizeof(max), "%d", w->cfg->connection_max_retries);
    cc_error("consumer: Cannot connect to %s: %s.\nTrying again in %.2f seconds... (%u/%s; %s, "
             "next report in %.0f s)",
             u ? u : "?", err->msg, (double)next_ms / 1000.0, w->reconnect_attempt, max,
             is_full ? "the broker accepts connections" : "probing about every second",
             (double)ms / 1000.0);
    w->reconnect_log_at_us = now + ms * 1000;
    free(u);
}

/* While disconnected, once per loop pass: probe the broker when a probe is due, look at the
 * probe in flight, and connect fully when the broker accepts connections (see
 * WORKER_PROBE_MS). On success: log as Celery does, publish the retries that waited. On
 * failure: log it when a logged attempt is due, give up after broker_connection_max_retries
 * logged attempts (exit 1 once running tasks have finished). */
static void worker_reconnect(struct worker *w)
{
    struct cc_err err = {0};
    int64_t now = cc_mono_us();
    bool is_full;
    int rc;

    if (w->is_connected || w->state != WORKER_RUNNING)
        return;
    if (!cc_netprobe_is_active(&w->probe)) {
        struct cc_amqp_url au;

        if (now < w->reconnect_at_us)
            return;
        rc = cc_url_parse_amqp(w->cfg->broker_url, &au, &err);
        if (rc == CC_OK) {
            int timeout_ms =
                w->cfg->connect_timeout_s > 0 ? (int)(w->cfg->connect_timeout_s * 1000) : 4000;

            rc = cc_netprobe_start(&w->probe, au.host, au.port, timeout_ms, &err);
            cc_url_amqp_deinit(&au);
        }
    } else {
        rc = CC_EAGAIN;
    }
    if (rc == CC_EAGAIN) /* in flight: a loopback or LAN broker answers within the wait */
        rc = cc_netprobe_check(&w->probe, WORKER_PROBE_WAIT_MS, &err);
    if (rc == CC_EAGAIN)
        return;
    is_full = rc == CC_OK;
    if (is_full) {
        rc = worker_connect(w, &err);
        if (rc == CC_OK) {
            char *u = cc_url_redact(w->cfg->broker_url ? w->cfg->broker_url : "");

            cc_warn("consumer: Connected to %s", u ? u : "?");
            free(u);
            w->reconnect_attempt = 0;
            w->full_failures = 0;
            cc_events_online(&w->ev, w->pool.n_busy, /* [events] as Celery's Heart; [flower] */
                             cc_pidbox_processed(&w->ctl));
            worker_flush_retries(w);
            return;
        }
    } else {
        /* The probe's reason alone ("Connection refused"): say where, as the connect does. */
        char why[sizeof(err.msg)];
        struct cc_amqp_url au;
        struct cc_err perr = {0};

        snprintf(why, sizeof(why), "%s", err.msg);
        if (cc_url_parse_amqp(w->cfg->broker_url, &au, &perr) == CC_OK) {
            cc_err_set(&err, CC_EBROKER, "cannot connect to %s:%d: %s", au.host, au.port, why);
            cc_url_amqp_deinit(&au);
        }
    }
    worker_reconnect_failed(w, is_full, &err);
}

static void worker_banner(const struct worker *w)
{
    const struct cc_config *cfg = w->cfg;
    char *broker = cc_url_redact(cfg->broker_url ? cfg->broker_url : "");
    char *backend = cc_url_redact(cfg->result_backend ? cfg->result_backend : "none");
    char queues[256] = "";
    size_t off = 0;

    if (cfg->n_queues == 0)
        snprintf(queues, sizeof(queues), "%s", cfg->default_queue ? cfg->default_queue : "celery");
    for (size_t i = 0; i < cfg->n_queues && off < sizeof(queues); i++)
        off += (size_t)snprintf(queues + off, sizeof(queues) - off, "%s%s", i ? "," : "",
                                cfg->queues[i]);
    cc_warn("celeryc %s (Celery %s wire) %s: transport %s, results %s, concurrency %d (%s), "
            "queues %s, %zu tasks",
            CELERYC_VERSION, CELERYC_CELERY_COMPAT, w->hostname, broker ? broker : "?",
            backend ? backend : "?", w->pool.n, cc_pool_kind_name(&w->pool), queues,
            cc_taskrun_count());
    free(broker);
    free(backend);
}

static char *worker_hostname(const struct cc_config *cfg)
{
    char host[256];

    if (cfg->hostname != NULL && cfg->hostname[0] != '\0')
        return cc_xstrdup(cfg->hostname);
    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    char *s = cc_xmalloc(strlen(host) + 8);
    sprintf(s, "celery@%s", host);
    return s;
}

/* ---- Loop ---------------------------------------------------------------------------- */

static void worker_signals(struct worker *w)
{
    struct cc_sig_counts sc = cc_signals_take();
    struct cc_err err = {0};

    bool is_int_cold = (sc.intr > 0 && w->state == WORKER_WARM) || sc.intr >= 2;

    if (sc.quit > 0 || is_int_cold) {
        /* Celery 5.2.6 exits 0 after a cold shutdown by QUIT and 1 after a second Ctrl+C
         * (celery-wire.md §6.7). */
        if (w->state != WORKER_COLD) {
            cc_warn("worker: Cold shutdown (MainProcess)");
            w->state = WORKER_COLD;
            w->exit_code = is_int_cold ? 1 : 0;
        }
    } else if ((sc.term > 0 || sc.intr > 0) && w->state == WORKER_RUNNING) {
        if (sc.intr > 0)
            cc_warn("worker: Hitting Ctrl+C again will terminate all running tasks!");
        cc_warn("worker: Warm shutdown (MainProcess)");
        w->state = WORKER_WARM;
        /* Stop receiving, and give what is prefetched or ETA-held but not started back to
         * the broker now, so other workers can take it while ours finish (rather than when
         * our channel closes at exit, which may be minutes later). */
        if (w->is_connected && cc_broker_is_blocked(&w->broker)) /* [blocked] */
            cc_warn("worker: consumers not cancelled: the broker has the connection blocked "
                    "and would not answer; deliveries that still arrive are not started");
        else if (w->is_connected && cc_broker_cancel_all(&w->broker, &err) != CC_OK)
            worker_broker_lost(w, &err);
        worker_return_held(w);
    }
    if (sc.chld > 0) {
        /* A child's last report precedes its exit: read reports first, then reap. */
        worker_drain_reports(w);
        cc_pool_reap(&w->pool, w->state == WORKER_RUNNING, worker_on_lost, w);
    }
}

/* [blocked] RabbitMQ's flow control. connection.blocked / unblocked are read by broker.c
 * (cc_broker_next for the consuming connection, events.c for the events connection, here
 * for the publishing connection, which nothing else reads while it is blocked). The worker
 * is blocked while any of them is: an alarm is node-wide, and RabbitMQ only tells a
 * connection once it has published (the events connection, within a heartbeat). Meanwhile
 * nothing is published (broker.c refuses with CC_EAGAIN; is_publish_held for the consuming
 * connection, which must never be blocked: its acks would wait in the socket and no more
 * deliveries would come): events are dropped and counted, pidbox replies dropped, retry
 * messages kept (worker_defer_retry), delay-store claims wait, dead-letter moves requeue
 * the message. Deliveries, task execution, result stores and acks go on. */
static void worker_flow(struct worker *w)
{
    struct cc_err err = {0};
    bool is_blocked;
    const char *reason = NULL;

    if (cc_broker_is_blocked(&w->pub) && cc_broker_poll(&w->pub, &err) != CC_OK)
        cc_broker_abandon(&w->pub); /* reopened on the next publish */
    is_blocked = (w->is_connected && cc_broker_is_blocked(&w->broker)) ||
                 cc_broker_is_blocked(&w->pub) || cc_events_is_blocked(&w->ev, &reason);
    w->broker.is_publish_held = is_blocked; /* pidbox replies, dead-lettering */
    if (is_blocked == w->is_blocked)
        return;
    w->is_blocked = is_blocked;
    if (is_blocked) {
        if (cc_broker_is_blocked(&w->broker))
            reason = w->broker.blocked_reason;
        else if (cc_broker_is_blocked(&w->pub))
            reason = w->pub.blocked_reason;
        cc_warn("consumer: The broker blocked the connection: %s. Publishing paused "
                "(events dropped, retries kept); tasks still run",
                reason != NULL && reason[0] != '\0' ? reason : "resource alarm");
        return;
    }
    cc_info("consumer: The broker unblocked the connection. Publishing resumed");
    worker_flush_retries(w);
}

static void worker_drain_broker(struct worker *w)
{
    for (int i = 0; i < 1024 && w->state != WORKER_COLD; i++) {
        amqp_envelope_t env;
        struct cc_err err = {0};
        int got = 0;

        if (cc_broker_next(&w->broker, &env, &got, &err) != CC_OK) {
            worker_broker_lost(w, &err);
            return;
        }
        if (!got)
            return;
        worker_on_delivery(w, &env);
        amqp_destroy_envelope(&env);
        if (!w->is_connected)
            return; /* lost while handling it (a reject failed) */
        cc_broker_release(&w->broker);
        /* Nothing buffered: poll() says when the socket has more. Saves a recv that would
         * only return EAGAIN (and rabbitmq-c's poll after it) per delivery. */
        if (!cc_broker_has_buffered(&w->broker))
            return;
    }
}

static int worker_poll_timeout_ms(const struct worker *w)
{
    int64_t ms = 5000;

    if (w->broker.heartbeat_s > 0 && w->broker.heartbeat_s * 1000 / 2 < ms)
        ms = w->broker.heartbeat_s * 1000 / 2;
    if (w->n_eta > 0 && w->state == WORKER_RUNNING) {
        int64_t due_ms = (w->eta[0]->msg.eta_us - cc_now_us() + 999) / 1000;

        if (due_ms < ms)
            ms = due_ms < 0 ? 0 : due_ms;
    }
    if (cc_ratelimit_n_held(w->rl) > 0 && w->state == WORKER_RUNNING) { /* rate-limit hook */
        int64_t rl_ms = (cc_ratelimit_next_due_us(w->rl) - cc_mono_us() + 999) / 1000;

        if (rl_ms < ms)
            ms = rl_ms < 0 ? 0 : rl_ms;
    }
    if (cc_pool_respawn_at_us(&w->pool) != 0 && w->state == WORKER_RUNNING) {
        int64_t left_us = cc_pool_respawn_at_us(&w->pool) - cc_mono_us();
        int64_t respawn_ms = left_us <= 0 ? 0 : (left_us + 999) / 1000;

        if (respawn_ms < ms)
            ms = respawn_ms;
    }
    if (cc_pool_deadline_us(&w->pool) != 0) { /* time limits (pool.c) */
        int64_t left_us = cc_pool_deadline_us(&w->pool) - cc_mono_us();
        int64_t lim_ms = left_us <= 0 ? 0 : (left_us + 999) / 1000;

        if (lim_ms < ms)
            ms = lim_ms;
    }
    if (w->state == WORKER_RUNNING) /* [redisx] next delay-store claim */
        ms = cc_delaystore_due_in_ms(&w->ds, ms);
    ms = cc_redeliver_due_in_ms(&w->rd, ms);        /* [redisx] queued hand-off marks */
    if (cc_broker_is_blocked(&w->pub) && ms > 1000) /* [blocked] worker_flow reads it */
        ms = 1000;
    ms = cc_events_due_in_ms(&w->ev, cc_mono_us(), ms); /* [events] heartbeat, batch */
    if (w->n_acks > 0) {
        int64_t left_us = w->acks_since_us + WORKER_ACK_MAX_DELAY_US - cc_mono_us();
        int64_t ack_ms = left_us <= 0 ? 0 : (left_us + 999) / 1000;

        if (ack_ms < ms)
            ms = ack_ms;
    }
    if (!w->is_connected && w->state == WORKER_RUNNING) {
        int64_t left_us = w->reconnect_at_us - cc_mono_us();
        int64_t rc_ms = left_us <= 0 ? 0 : (left_us + 999) / 1000;

        if (cc_netprobe_is_active(&w->probe)) /* look at the probe in flight soon */
            rc_ms = WORKER_PROBE_WAIT_MS;
        if (rc_ms < ms)
            ms = rc_ms;
    }
    if (w->is_connected && !worker_wants_deliveries(w) && ms > WORKER_BROKER_SERVICE_US / 1000)
        ms = WORKER_BROKER_SERVICE_US / 1000; /* the socket is not in the poll set */
    if (w->is_connected && worker_wants_deliveries(w) && cc_broker_has_buffered(&w->broker))
        ms = 0;
    return (int)ms;
}

/* Only the sources poll() reported (or that rabbitmq-c buffered) are serviced, so an idle
 * source costs no syscall; the broker is also serviced at least every WORKER_BROKER_SERVICE_US so
 * heartbeats go out (rabbitmq-c sends them from inside amqp_consume_message), even while
 * worker_wants_deliveries() keeps its socket out of poll(). */
static void worker_loop(struct worker *w)
{
    bool is_sig = true, is_rep = true, is_brk = true;
    int64_t last_brk_us = 0;

    while (w->state != WORKER_COLD) {
        struct pollfd pfd[3];
        int n = 0, k;

        if (is_sig)
            worker_signals(w);
        if (is_rep)
            worker_drain_reports(w);
        if (w->state == WORKER_COLD)
            break;
        int64_t now_us = cc_mono_us();
        bool wants = worker_wants_deliveries(w);
        if (!w->is_connected) {
            worker_reconnect(w);
            last_brk_us = cc_mono_us();
        } else if ((wants && (is_brk || cc_broker_has_buffered(&w->broker))) ||
                   now_us - last_brk_us > WORKER_BROKER_SERVICE_US) {
            last_brk_us = now_us;
            worker_drain_broker(w);
        }
        worker_flow(w); /* [blocked] */
        if (w->state == WORKER_RUNNING)
            cc_pool_respawn(&w->pool, cc_mono_us());
        cc_pool_tick(&w->pool, cc_mono_us()); /* time limits */
        worker_dispatch(w);
        if (w->state == WORKER_RUNNING && w->is_connected) { /* [redisx] */
            worker_delay_tick(w);
            worker_delay_retry(w);
        }
        if (w->is_qos_dirty)
            worker_update_qos(w);
        if (worker_acks_due(w, cc_mono_us()))
            worker_flush_acks(w);
        cc_redeliver_tick(&w->rd, w->pool.n_busy > 0); /* [redisx] hand-off unmarks */
        if (w->is_connected)                           /* [events] heartbeat, task batch when due */
            cc_events_tick(&w->ev, cc_mono_us(), w->pool.n_busy,
                           cc_pidbox_processed(&w->ctl)); /* [flower] processed */
        if (w->state == WORKER_WARM && w->pool.n_busy == 0)
            break;
        if (w->state == WORKER_COLD)
            break;
        pfd[n++] = (struct pollfd){.fd = cc_signals_fd(), .events = POLLIN};
        pfd[n++] = (struct pollfd){.fd = cc_pool_report_fd(&w->pool), .events = POLLIN};
        if (cc_broker_fd(&w->broker) >= 0 && worker_wants_deliveries(w))
            pfd[n++] = (struct pollfd){.fd = cc_broker_fd(&w->broker), .events = POLLIN};
        k = poll(pfd, (nfds_t)n, worker_poll_timeout_ms(w));
        if (k < 0 && errno != EINTR) {
            cc_crit("poll: %s", strerror(errno));
            w->state = WORKER_COLD;
            w->exit_code = 1;
        }
        if (k <= 0) { /* timeout or EINTR: look at everything */
            is_sig = is_rep = is_brk = true;
            continue;
        }
        is_sig = pfd[0].revents != 0;
        is_rep = pfd[1].revents != 0;
        is_brk = n > 2 && pfd[2].revents != 0;
    }
}

/* While the pool stops after the broker was lost: a TERM, INT or QUIT means "stop now". */
static bool worker_is_cold_now(void *ud)
{
    struct cc_sig_counts sc = cc_signals_take();

    (void)ud;
    if (sc.term == 0 && sc.intr == 0 && sc.quit == 0)
        return false;
    cc_warn("worker: Cold shutdown (MainProcess)");
    return true;
}

static void worker_free_requests(struct worker *w)
{
    struct cc_request *r;

    while ((r = worker_fifo_pop(w)) != NULL)
        cc_consumer_request_free(r);
    while ((r = worker_heap_pop(w)) != NULL)
        cc_consumer_request_free(r);
    while (w->rl != NULL && (r = cc_ratelimit_pop_any(w->rl)) != NULL) /* rate-limit hook */
        cc_consumer_request_free(r);
    for (int i = 0; w->running != NULL && i < w->pool.n; i++) {
        cc_consumer_request_free(w->running[i]);
        w->running[i] = NULL;
    }
    free(w->eta);
    w->eta = NULL;
}

/* [poolsize] pool_grow / pool_shrink changed the pool's size: the QoS window is size x
 * prefetch multiplier again, as Celery's Consumer._update_prefetch_count (no QoS stays no
 * QoS); sent at the end of this loop pass. running[] and stale[] are allocated for the
 * pool's capacity at start, so they need nothing. */
static void worker_pool_resized(void *ud)
{
    struct worker *w = ud;

    if (w->base_prefetch == 0)
        return;
    w->base_prefetch = (unsigned)cc_pool_size(&w->pool) * (unsigned)w->cfg->prefetch_multiplier;
    w->ack_batch = w->base_prefetch >= 2 ? w->base_prefetch / 2 : 1;
    w->is_qos_dirty = true;
}

/* [control] Read-only view of the bookkeeping for inspect active/reserved/scheduled. */
static void worker_ctl_each(void *ud, cc_pidbox_visit_fn fn, void *ctx)
{
    struct worker *w = ud;

    for (int i = 0; w->running != NULL && i < w->pool.n; i++)
        if (w->running[i] != NULL)
            fn(ctx, w->running[i], CC_PIDBOX_ACTIVE, i);
    for (struct cc_request *r = w->ready_head; r != NULL; r = r->next)
        fn(ctx, r, CC_PIDBOX_RESERVED, -1);
    for (size_t i = 0; i < w->n_eta; i++)
        fn(ctx, w->eta[i], CC_PIDBOX_SCHEDULED, -1);
}

int cc_worker_main(const struct cc_config *cfg)
{
    struct worker w;
    struct cc_err err = {0};
    struct cc_pool_opts po;
    int rc;

    memset(&w, 0, sizeof(w));
    w.cfg = cfg;
    w.exit_code = 1;
    w.broker.fd = -1;
    w.pub.fd = -1;
    /* Pool children forget both connections' sockets after fork (cc_broker_forget). */
    w.broker.linked = &w.pub;
    w.hostname = worker_hostname(cfg);
    cc_events_init(&w.ev, &w.broker, w.hostname, cfg->send_task_events, /* [events] */
                   cfg->event_heartbeat_s);
    /* [blocked] events on a connection of their own, forgotten by children too */
    cc_events_set_transport(&w.ev, cfg->broker_url, &w.tls, cfg->connect_timeout_s);
    w.pub.linked = cc_events_conn(&w.ev);
    if (cc_taskrun_table_check(&err) != CC_OK) {
        cc_crit("task table: %s", err.msg);
        goto out;
    }
    if (cc_ratelimit_from_config(cfg, &w.rl, &err) != CC_OK) { /* rate limits (ratelimit.c) */
        cc_crit("rate limits: %s", err.msg);
        w.exit_code = 78; /* a configuration error, as main.c's EX_CONFIG */
        goto out;
    }
    if (cc_signals_init(&err) != CC_OK) {
        cc_crit("%s", err.msg);
        goto out;
    }
    rc = cc_backend_open(cfg, &w.backend, &err);
    if (rc != CC_OK) {
        cc_crit("result backend: %s", err.msg);
        goto out;
    }
    /* [redisx] redelivery guard and delay store (their Redis clients connect lazily). */
    const char *dq[1] = {cfg->default_queue ? cfg->default_queue : "celery"};
    rc = cc_redeliver_init(&w.rd, cfg, w.hostname, &w.broker, w.backend,
                           cfg->n_queues > 0 ? cfg->queues : (char *const *)dq,
                           cfg->n_queues > 0 ? cfg->n_queues : 1, &err);
    w.is_rd_init = true;
    if (rc != CC_OK) {
        cc_crit("start-up: %s", err.msg);
        goto out;
    }
    cc_delaystore_init(&w.ds, cfg, cc_redeliver_state_kv(&w.rd));
    /* [control] the pidbox node and the revoked set (worker_state_db) */
    const struct cc_pidbox_ops ctl_ops = {
        .ud = &w, .each = worker_ctl_each, .pool_resized = worker_pool_resized}; /* [poolsize] */
    rc = cc_pidbox_init(&w.ctl, cfg, w.hostname, &w.broker, &w.pool, w.rl,
                        cc_redeliver_state_kv(&w.rd), &ctl_ops, &err);
    w.is_ctl_init = true;
    if (rc != CC_OK) {
        cc_crit("start-up: %s", err.msg);
        goto out;
    }
    int conc = cfg->concurrency > 0 ? cfg->concurrency : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (conc < 1)
        conc = 1;
    if (cfg->pool == CC_POOL_SOLO)
        conc = 1;
    w.base_prefetch =
        cfg->prefetch_multiplier > 0 ? (unsigned)(conc * cfg->prefetch_multiplier) : 0;
    /* Half the prefetch window may wait as pending acks; without QoS there is no window. */
    w.ack_batch = w.base_prefetch == 0 ? 16 : w.base_prefetch >= 2 ? w.base_prefetch / 2 : 1;

    w.tls = (struct cc_broker_tls){
        .ca_file = cfg->broker_ssl_ca_certs,
        .cert_file = cfg->broker_ssl_certfile,
        .key_file = cfg->broker_ssl_keyfile,
        .is_verify = cfg->broker_ssl_verify != CC_SSL_VERIFY_NONE,
    };
    w.jitter = (uint64_t)cc_mono_us() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ull;
    cc_netprobe_init(&w.probe);
    /* At start-up a broker we cannot reach or a topology it refuses is fatal (exit 1, the
     * service manager restarts us): it is usually a configuration error. Once running, a
     * lost connection is retried (worker_reconnect). */
    rc = cc_broker_connect(&w.broker, cfg->broker_url, cfg->heartbeat_s, cfg->connect_timeout_s,
                           &w.tls, &err);
    if (rc != CC_OK) {
        char *u = cc_url_redact(cfg->broker_url ? cfg->broker_url : "");

        cc_crit("consumer: Cannot connect to %s: %s", u ? u : "?", err.msg);
        free(u);
        goto out;
    }
    rc = worker_declare(&w, &err);
    if (rc == CC_OK) /* [control] pidbox queue on channel 2 */
        rc = cc_pidbox_attach(&w.ctl, &err);
    if (rc != CC_OK) {
        if (rc != CC_EPRECOND)
            cc_crit("start-up: %s", err.msg);
        goto out;
    }
    w.is_connected = true;
    /* Fork after the broker is up (children close its socket) and before consuming
     * anything, so no delivery state exists in a child. */
    memset(&po, 0, sizeof(po));
    po.n_children = conc;
    po.cfg = cfg;
    po.hostname = w.hostname;
    po.backend = w.backend;
    po.broker = &w.broker;
    po.is_solo = cfg->pool == CC_POOL_SOLO;
    po.is_threads = cfg->pool == CC_POOL_THREADS;
    po.task_limits = cc_pidbox_task_limits; /* [control] time_limit command */
    po.task_limits_ud = &w.ctl;
    rc = cc_pool_start(&w.pool, &po, &err);
    w.is_pool_started = true;
    if (rc != CC_OK) {
        cc_crit("pool: %s", err.msg);
        goto out;
    }
    /* [jobrun] after the fork of the first children: they never see its connection */
    if (cc_jobkeeper_start(cfg, w.pool.n_slots_max, &w.jk, &err) != CC_OK) {
        cc_crit("start-up: %s", err.msg);
        goto out;
    }
    /* [poolsize] by slot, for every slot pool_grow may use */
    w.running = cc_xcalloc((size_t)w.pool.n_slots_max, sizeof(*w.running));
    w.stale = cc_xcalloc((size_t)w.pool.n_slots_max, sizeof(*w.stale));
    w.consumer = (struct cc_consumer){
        .broker = &w.broker, .backend = w.backend, .cfg = cfg, .hostname = w.hostname};
    worker_banner(&w);
    cc_info("%s ready.", w.hostname);
    cc_events_online(&w.ev, 0, 0); /* [events] */

    w.exit_code = 0;
    worker_loop(&w);
out:
    if (w.is_pool_started) {
        /* Cold: TERM the children, KILL after 2 s. Broker lost: let running tasks finish
         * and store their results (their messages are redelivered anyway if unacked), for
         * at most WORKER_BROKER_LOST_WAIT_MS or until another TERM/INT/QUIT. Warm: the loop
         * has already waited for running tasks, so the children are idle and exit at once. */
        bool cold = w.state == WORKER_COLD && !w.is_broker_lost;

        cc_pool_stop(&w.pool, cold, 2000, w.is_broker_lost ? WORKER_BROKER_LOST_WAIT_MS : -1,
                     worker_is_cold_now, &w);
    }
    cc_jobkeeper_stop(w.jk, 5000); /* [jobrun] queued outcomes get 5 s */
    worker_flush_acks(&w);
    if (w.is_rd_init) /* [redisx] the last unmarks */
        cc_redeliver_tick(&w.rd, false);
    if (w.is_connected)                                                       /* [events] */
        cc_events_offline(&w.ev, w.pool.n_busy, cc_pidbox_processed(&w.ctl)); /* [flower] */
    cc_events_deinit(&w.ev);
    free(w.acks);
    worker_free_requests(&w);
    if (w.is_rd_init) { /* [redisx] parked requests are unacked: freed, returned on close */
        cc_redeliver_deinit(&w.rd);
        cc_delaystore_deinit(&w.ds);
    }
    free(w.running);
    free(w.stale);
    for (size_t i = 0; i < w.n_retries; i++) {
        if (w.retries[i].is_unsettled) /* [blocked] its unacked original goes back */
            cc_warn("Task %s[%s]: retry not published before exit; the original message "
                    "returns to the queue",
                    cc_log_str(cc_consumer_request_name(w.retries[i].r)),
                    cc_log_str(w.retries[i].r->msg.id));
        else
            cc_error("Task %s[%s]: retry message lost: the broker did not come back before exit",
                     cc_log_str(cc_consumer_request_name(w.retries[i].r)),
                     cc_log_str(w.retries[i].r->msg.id));
        cc_consumer_request_free(w.retries[i].r);
    }
    free(w.retries);
    /* Closing the channel returns every unacked delivery (prefetched, ETA-held) to its
     * queue. */
    /* [blocked] A blocked connection would not answer close: abandon it (the broker reads
     * what we sent, acks included, and requeues the rest once the alarm is lifted). */
    if (cc_broker_is_blocked(&w.broker))
        cc_broker_abandon(&w.broker);
    if (cc_broker_is_blocked(&w.pub))
        cc_broker_abandon(&w.pub);
    cc_broker_close(&w.broker);
    cc_broker_close(&w.pub);
    cc_netprobe_stop(&w.probe);
    cc_backend_free(w.backend);
    if (w.is_ctl_init) /* [control] compacts the state file */
        cc_pidbox_deinit(&w.ctl);
    cc_ratelimit_free(w.rl);
    cc_signals_deinit();
    free(w.hostname);
    return w.exit_code;
}
