/* The worker's event dispatcher: Celery's EventDispatcher + Heart for celeryc (§4).
 *
 * Transport. [blocked] The worker gives events a connection of their own
 * (cc_events_set_transport; heartbeats off, channel 1), as Celery's dispatcher has: RabbitMQ
 * blocks a connection that publishes during a memory/disk alarm (it stops reading its
 * socket), which on the consuming connection would also hold back acks, hence deliveries.
 * Nothing else reads this connection, so it is read here: before each publish when it has
 * bytes, and from the tick every EVENTS_OWN_POLL_US (connection.blocked / unblocked, a
 * server close). It is (re)opened by cc_events_on_connect with the consuming connection,
 * and retried every EVENTS_OWN_RETRY_US if it fails alone. The publishing connection
 * (w->pub) cannot be used: it is in confirm mode and waits for confirms. Without a transport
 * (unit tests) events go on channel CC_EVENTS_CHANNEL (3) of the consuming connection. Every
 * publish first checks that the connection is not blocked and that the socket can take
 * bytes now (cc_broker_publish_raw_on); the event is dropped otherwise, so memory stays
 * bounded and the loop never waits for the broker.
 *
 * What is sent, as Celery does: worker-online at start and after every reconnect (the
 * Heart step restarts with the consumer), worker-heartbeat every freq (2.0 s), worker-offline
 * at shutdown, always (Celery's dispatcher group 'worker' is on without -E); task events
 * only with -E / enable_events. Task events are batched into `task.multi` messages (a JSON
 * list; sent at CC_EVENTS_BATCH_MAX events, Celery's buffer_limit, or CC_EVENTS_FLUSH_US
 * after the batch's first event: one message per event cost RabbitMQ more CPU than the
 * task itself), worker events are sent alone with routing key
 * "worker.<what>". Properties: application/json, utf-8, delivery_mode 1, priority 0,
 * headers {hostname} (§4.1).
 *
 * Retry order. [issue 14] A Python worker's pool child publishes the retry message inside
 * Task.retry() and then stores RETRY, so the master usually receives the new copy (and sends
 * its task-received) before the child's outcome makes it send task-retried; Flower's state
 * machine keeps the last of the two, so a retry waiting for its countdown shows RETRY. Here
 * the master publishes the retry after the report, so task-retried is held
 * (struct cc_events_held: id and texts, built into an event only when sent, with the clock
 * and time of that moment) until this worker receives the copy (cc_events_task_received
 * sends it right after the copy's task-received), for at most CC_EVENTS_RETRY_HOLD_US
 * (the copy went to another worker, or waits behind a backlog), or until the worker says
 * the retry was not published (cc_events_retry_release).
 *
 * Invariants: memory is the one batch buffer plus CC_EVENTS_HELD_MAX held retries; nothing
 * is queued while disconnected (counted in n_dropped, logged once per outage); the Lamport
 * clock moves forward once per event.
 */
#include "events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "celeryc/version.h"
#include "event.h"
#include "log.h"
#include "pyrepr.h"
#include "taskrun.h"
#include "util.h"

static struct cc_events *events_current;

static void events_held_send_due(struct cc_events *ev, int64_t now_us, bool all);

static double events_timestamp(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Python's celery.utils.time.utcoffset(): (time.altzone if DST else time.timezone) // 3600,
 * i.e. hours WEST of UTC, floor-divided. */
static int events_utcoffset(void)
{
    time_t now = time(NULL);
    struct tm lt;
    long west;

    localtime_r(&now, &lt);
    west = -lt.tm_gmtoff;
    return (int)(west >= 0 ? west / 3600 : -((-west + 3599) / 3600));
}

void cc_events_init(struct cc_events *ev, struct cc_broker *broker, const char *hostname,
                    bool task_events, double freq_s)
{
    struct utsname u;

    memset(ev, 0, sizeof(*ev));
    ev->broker = broker;
    ev->hostname = hostname;
    ev->pid = (long)getpid();
    ev->utcoffset = events_utcoffset();
    snprintf(ev->sw_sys, sizeof(ev->sw_sys), "%.64s", uname(&u) == 0 ? u.sysname : "Linux");
    ev->freq_s = freq_s > 0 ? freq_s : 2.0;
    ev->is_task_on = task_events;
    ev->batch = cc_xmalloc(CC_EVENTS_BATCH_BYTES);
    events_current = ev;
}

void cc_events_set_transport(struct cc_events *ev, const char *url, const struct cc_broker_tls *tls,
                             double timeout_s)
{
    ev->has_own = url != NULL;
    ev->url = url;
    ev->tls = tls;
    ev->timeout_s = timeout_s;
    ev->own.fd = -1;
}

struct cc_broker *cc_events_conn(struct cc_events *ev)
{
    return ev->has_own ? &ev->own : NULL;
}

bool cc_events_is_blocked(const struct cc_events *ev, const char **reason)
{
    const struct cc_broker *b = ev->has_own ? &ev->own : ev->broker;
    bool is = b != NULL && ev->is_open && cc_broker_is_blocked(b);

    if (reason != NULL)
        *reason = is ? b->blocked_reason : NULL;
    return is;
}

/* Close our own connection: without a handshake when the broker blocks it (it would not
 * answer before the alarm is lifted). */
static void events_own_close(struct cc_events *ev)
{
    if (!ev->has_own)
        return;
    if (cc_broker_is_blocked(&ev->own))
        cc_broker_abandon(&ev->own);
    cc_broker_close(&ev->own);
}

static void events_held_free(struct cc_events_held *hd)
{
    free(hd->id);
    free(hd->exc);
    free(hd->traceback);
    memset(hd, 0, sizeof(*hd));
}

void cc_events_deinit(struct cc_events *ev)
{
    if (ev == NULL)
        return;
    for (int i = 0; i < CC_EVENTS_HELD_MAX; i++)
        events_held_free(&ev->held[i]);
    ev->n_held = 0;
    events_own_close(ev);
    if (ev->n_dropped > 0)
        cc_info("events: %llu sent, %llu dropped (broker unavailable or blocked)",
                (unsigned long long)ev->n_sent, (unsigned long long)ev->n_dropped);
    free(ev->batch);
    ev->batch = NULL;
    if (events_current == ev)
        events_current = NULL;
}

struct cc_events *cc_events_get(void)
{
    return events_current;
}

bool cc_events_enable(bool on)
{
    if (events_current == NULL)
        return false;
    if (events_current->is_task_on != on)
        cc_info("events: task events %s", on ? "enabled" : "disabled");
    events_current->is_task_on = on;
    return true;
}

bool cc_events_task_on(const struct cc_events *ev)
{
    return ev != NULL && ev->is_task_on;
}

uint64_t cc_events_clock_forward(struct cc_events *ev)
{
    return ++ev->clock;
}

uint64_t cc_events_clock_adjust(struct cc_events *ev, uint64_t other)
{
    ev->clock = (other > ev->clock ? other : ev->clock) + 1;
    return ev->clock;
}

/* ---- Publishing ------------------------------------------------------------------------ */

static void events_drop(struct cc_events *ev, uint64_t n, const char *why)
{
    ev->n_dropped += n;
    if (!ev->is_drop_logged) {
        ev->is_drop_logged = true;
        /* [blocked] A blocked broker is already a WARNING of the worker's (worker_flow). */
        if (cc_events_is_blocked(ev, NULL))
            cc_info("events: dropping events: %s (further drops are counted, not logged)", why);
        else
            cc_warn("events: dropping events: %s (further drops are counted, not logged)", why);
    }
}

/* [blocked] Reconnect our own connection this often: it fails alone while the consuming
 * connection is up, so the broker answers and a retry is cheap (issue #14: was 5 s). */
#define EVENTS_OWN_RETRY_US 1000000
#define EVENTS_OWN_POLL_US  100000 /* [blocked] read it at least this often from the tick */

/* [blocked] Our own connection failed while the consuming one may still be up: drop it
 * and try a new one from cc_events_tick. */
static void events_lost_own(struct cc_events *ev, const char *why)
{
    cc_broker_abandon(&ev->own);
    ev->is_open = false;
    ev->own_retry_us = cc_mono_us() + EVENTS_OWN_RETRY_US;
    cc_warn("events: connection lost: %s (retried every %d s)", why, EVENTS_OWN_RETRY_US / 1000000);
}

static int events_own_open(struct cc_events *ev, struct cc_err *err)
{
    int rc;

    cc_broker_abandon(&ev->own);
    rc = cc_broker_connect(&ev->own, ev->url, 0, ev->timeout_s, ev->tls, err);
    if (rc != CC_OK)
        cc_broker_abandon(&ev->own);
    ev->is_open = rc == CC_OK;
    ev->own_retry_us = rc == CC_OK ? 0 : cc_mono_us() + EVENTS_OWN_RETRY_US;
    return rc;
}

static void events_publish(struct cc_events *ev, const char *routing_key, const char *body,
                           size_t len, uint64_t n_events)
{
    amqp_basic_properties_t props;
    amqp_table_entry_t hdr;
    struct cc_err err = {0};
    int rc;

    if (!ev->is_open) {
        events_drop(ev, n_events, "not connected to the broker");
        return;
    }
    /* [blocked] Nothing else reads our own connection: take connection.blocked /
     * unblocked (and a server close) now, before deciding to publish. */
    if (ev->has_own && cc_broker_has_readable(&ev->own) &&
        cc_broker_poll(&ev->own, &err) != CC_OK) {
        events_lost_own(ev, err.msg);
        events_drop(ev, n_events, err.msg);
        return;
    }
    memset(&props, 0, sizeof(props));
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_CONTENT_ENCODING_FLAG |
                   AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
                   AMQP_BASIC_PRIORITY_FLAG;
    props.content_type = amqp_cstring_bytes("application/json");
    props.content_encoding = amqp_cstring_bytes("utf-8");
    props.delivery_mode = 1; /* transient: events are fire-and-forget */
    props.priority = 0;
    hdr.key = amqp_cstring_bytes("hostname");
    hdr.value.kind = AMQP_FIELD_KIND_UTF8; /* 'S', as py-amqp sends it */
    hdr.value.value.bytes = amqp_cstring_bytes(ev->hostname);
    props.headers.num_entries = 1;
    props.headers.entries = &hdr;
    rc = cc_broker_publish_raw_on(
        ev->has_own ? &ev->own : ev->broker, ev->has_own ? ev->own.channel : CC_EVENTS_CHANNEL,
        "celeryev", routing_key, &props, (amqp_bytes_t){.len = len, .bytes = (void *)body}, &err);
    if (rc == CC_OK) {
        ev->n_sent += n_events;
        if (ev->is_drop_logged) {
            cc_info("events: publishing again (%llu dropped so far)",
                    (unsigned long long)ev->n_dropped);
            ev->is_drop_logged = false;
        }
        return;
    }
    if (rc != CC_EAGAIN) {
        /* The connection is gone: the master notices it on its next read and
         * reconnects; until then nothing more is tried. Our own one is retried. */
        if (ev->has_own)
            events_lost_own(ev, err.msg);
        else
            ev->is_open = false;
    }
    events_drop(ev, n_events, err.msg);
}

static void events_flush(struct cc_events *ev)
{
    if (ev->n_batched == 0)
        return;
    ev->batch[ev->batch_len++] = ']';
    events_publish(ev, "task.multi", ev->batch, ev->batch_len, (uint64_t)ev->n_batched);
    ev->batch_len = 0;
    ev->n_batched = 0;
}

/* Append one task event (owned `json`, freed here) to the batch. */
static void events_add(struct cc_events *ev, char *json, size_t len)
{
    if (json == NULL) {
        events_drop(ev, 1, "out of memory");
        return;
    }
    if (!ev->is_open) {
        events_drop(ev, 1, "not connected to the broker");
        free(json);
        return;
    }
    /* "[" or ", " before it and "]" after it must fit. */
    if (ev->n_batched > 0 && ev->batch_len + 2 + len + 1 > CC_EVENTS_BATCH_BYTES)
        events_flush(ev);
    if (1 + len + 1 > CC_EVENTS_BATCH_BYTES) {
        events_drop(ev, 1, "event larger than the batch buffer");
        free(json);
        return;
    }
    if (ev->n_batched == 0) {
        ev->batch[0] = '[';
        ev->batch_len = 1;
        ev->batch_since_us = cc_mono_us();
    } else {
        memcpy(ev->batch + ev->batch_len, ", ", 2);
        ev->batch_len += 2;
    }
    memcpy(ev->batch + ev->batch_len, json, len);
    ev->batch_len += len;
    ev->n_batched++;
    free(json);
    if (ev->n_batched >= CC_EVENTS_BATCH_MAX)
        events_flush(ev);
}

static struct cc_event_head events_head(struct cc_events *ev)
{
    return (struct cc_event_head){
        .hostname = ev->hostname,
        .utcoffset = ev->utcoffset,
        .pid = ev->pid,
        .clock = cc_events_clock_forward(ev),
        .timestamp = events_timestamp(),
    };
}

/* ---- Connection ------------------------------------------------------------------------ */

int cc_events_on_connect(struct cc_events *ev, struct cc_err *err)
{
    int rc;

    if (ev->has_own) {
        struct cc_err oerr = {0};

        /* Not fatal for the consumer: events are dropped until a retry succeeds. */
        if (events_own_open(ev, &oerr) != CC_OK)
            cc_warn("events: cannot open the events connection: %s (retried every %d s)", oerr.msg,
                    EVENTS_OWN_RETRY_US / 1000000);
        (void)err;
        return CC_OK;
    }
    rc = cc_broker_channel_open(ev->broker, CC_EVENTS_CHANNEL, err);
    ev->is_open = rc == CC_OK;
    return rc;
}

void cc_events_on_lost(struct cc_events *ev)
{
    if (ev->n_batched > 0)
        events_drop(ev, (uint64_t)ev->n_batched, "connection to the broker lost");
    ev->batch_len = 0;
    ev->n_batched = 0;
    ev->is_open = false;
    ev->next_hb_us = 0; /* no heartbeats until worker-online after the reconnect */
    if (ev->has_own) {  /* reopened with the consuming connection */
        cc_broker_abandon(&ev->own);
        ev->own_retry_us = 0;
    }
}

/* ---- Worker events ----------------------------------------------------------------------- */

static void events_worker(struct cc_events *ev, const char *type, int active, uint64_t processed,
                          bool is_remote)
{
    struct cc_event_head h;
    struct cc_event_worker_info wi = {
        .freq_s = is_remote ? 5.0 : ev->freq_s,
        .is_software_only = is_remote,
        .active = active,
        .processed = (long long)processed,
        .sw_ident = "celeryc",
        .sw_ver = CELERYC_VERSION,
        .sw_sys = ev->sw_sys,
    };
    char rk[32];
    size_t len = 0;
    char *json;

    if (!ev->is_open) {
        events_drop(ev, 1, "not connected to the broker");
        return;
    }
    if (getloadavg(wi.loadavg, 3) != 3)
        memset(wi.loadavg, 0, sizeof(wi.loadavg));
    h = events_head(ev);
    json = cc_event_worker(&h, type, &wi, &len);
    if (json == NULL) {
        events_drop(ev, 1, "out of memory");
        return;
    }
    cc_event_routing_key(type, rk, sizeof(rk));
    events_publish(ev, rk, json, len, 1);
    free(json);
}

void cc_events_online(struct cc_events *ev, int active, uint64_t processed)
{
    events_worker(ev, "worker-online", active, processed, false);
    ev->next_hb_us = cc_mono_us() + (int64_t)(ev->freq_s * 1e6);
}

void cc_events_offline(struct cc_events *ev, int active, uint64_t processed)
{
    events_held_send_due(ev, 0, true); /* [issue 14] the last of them, before we go */
    events_flush(ev);
    events_worker(ev, "worker-offline", active, processed, false);
    ev->next_hb_us = 0;
}

void cc_events_tick(struct cc_events *ev, int64_t now_us, int active, uint64_t processed)
{
    if (ev->has_own && !ev->is_open && ev->own_retry_us != 0 && now_us >= ev->own_retry_us) {
        struct cc_err err = {0};

        if (events_own_open(ev, &err) == CC_OK)
            cc_info("events: connection re-established");
    }
    /* [blocked] Read our connection now and then (one poll(2)), so connection.blocked /
     * unblocked are seen within EVENTS_OWN_POLL_US rather than at the next publish. */
    if (ev->has_own && ev->is_open && now_us - ev->own_poll_us >= EVENTS_OWN_POLL_US) {
        struct cc_err err = {0};

        ev->own_poll_us = now_us;
        if (cc_broker_has_readable(&ev->own) && cc_broker_poll(&ev->own, &err) != CC_OK)
            events_lost_own(ev, err.msg);
    }
    if (ev->n_held > 0) /* [issue 14] retries whose copy did not come here in time */
        events_held_send_due(ev, now_us, false);
    if (ev->n_batched > 0 && now_us - ev->batch_since_us >= CC_EVENTS_FLUSH_US)
        events_flush(ev);
    if (ev->next_hb_us == 0 || now_us < ev->next_hb_us)
        return;
    events_worker(ev, "worker-heartbeat", active, processed, false);
    /* Fixed rate, as kombu's timer.call_repeatedly; after a stall, one beat and go on. */
    ev->next_hb_us += (int64_t)(ev->freq_s * 1e6);
    if (ev->next_hb_us <= now_us)
        ev->next_hb_us = now_us + (int64_t)(ev->freq_s * 1e6);
}

void cc_events_heartbeat_now(struct cc_events *ev)
{
    events_worker(ev, "worker-heartbeat", 0, 0, true);
}

int64_t cc_events_due_in_ms(const struct cc_events *ev, int64_t now_us, int64_t ms)
{
    int64_t left_ms;

    for (int i = 0; i < CC_EVENTS_HELD_MAX && ev->n_held > 0; i++) { /* [issue 14] */
        if (ev->held[i].id != NULL) {
            int64_t held_ms = (ev->held[i].until_us - now_us + 999) / 1000;

            if (held_ms < ms)
                ms = held_ms < 0 ? 0 : held_ms;
        }
    }

    if (ev->n_batched > 0) {
        int64_t flush_ms = (ev->batch_since_us + CC_EVENTS_FLUSH_US - now_us + 999) / 1000;

        if (flush_ms < ms)
            ms = flush_ms < 0 ? 0 : flush_ms;
    }
    if (ev->next_hb_us == 0)
        return ms;
    left_ms = (ev->next_hb_us - now_us + 999) / 1000;
    if (left_ms < 0)
        left_ms = 0;
    return left_ms < ms ? left_ms : ms;
}

/* ---- [issue 14] Held task-retried events --------------------------------------------------- */

static void events_held_send(struct cc_events *ev, struct cc_events_held *hd)
{
    struct cc_event_head h = events_head(ev);
    size_t len = 0;
    char *json = cc_event_task_failed(&h, "task-retried", hd->id, hd->exc, hd->traceback, &len);

    events_add(ev, json, len);
    events_held_free(hd);
    ev->n_held--;
}

static struct cc_events_held *events_held_oldest(struct cc_events *ev)
{
    struct cc_events_held *oldest = NULL;

    for (int i = 0; i < CC_EVENTS_HELD_MAX; i++)
        if (ev->held[i].id != NULL && (oldest == NULL || ev->held[i].until_us < oldest->until_us))
            oldest = &ev->held[i];
    return oldest;
}

/* Send the held events whose time is up (all of them with `all`), oldest first. */
static void events_held_send_due(struct cc_events *ev, int64_t now_us, bool all)
{
    while (ev->n_held > 0) {
        struct cc_events_held *oldest = events_held_oldest(ev);

        if (oldest == NULL || (!all && oldest->until_us > now_us))
            return;
        events_held_send(ev, oldest);
    }
}

static void events_held_add(struct cc_events *ev, const char *id, const char *exc,
                            const char *traceback)
{
    struct cc_events_held *hd = NULL;

    if (ev->n_held == CC_EVENTS_HELD_MAX) /* full: the oldest goes now */
        events_held_send(ev, events_held_oldest(ev));
    for (int i = 0; i < CC_EVENTS_HELD_MAX && hd == NULL; i++)
        if (ev->held[i].id == NULL)
            hd = &ev->held[i];
    hd->id = cc_xstrdup(id);
    hd->exc = cc_xstrdup(exc);
    hd->traceback = cc_xstrdup(traceback);
    hd->until_us = cc_mono_us() + CC_EVENTS_RETRY_HOLD_US;
    ev->n_held++;
}

void cc_events_retry_release(struct cc_events *ev, const char *id)
{
    for (int i = 0; i < CC_EVENTS_HELD_MAX && ev->n_held > 0 && id != NULL; i++)
        if (ev->held[i].id != NULL && strcmp(ev->held[i].id, id) == 0)
            events_held_send(ev, &ev->held[i]);
}

/* ---- Task events ------------------------------------------------------------------------- */

void cc_events_task_received(struct cc_events *ev, const struct cc_request *r)
{
    const struct cc_msg *m = &r->msg;
    struct cc_event_head h;
    size_t len = 0;

    if (!ev->is_task_on)
        return;
    struct cc_event_received rc = {
        .uuid = m->id,
        .name = cc_consumer_request_name(r),
        .argsrepr = m->argsrepr ? m->argsrepr : "()",
        .kwargsrepr = m->kwargsrepr ? m->kwargsrepr : "{}",
        .root_id = m->root_id ? m->root_id : m->id,
        .parent_id = m->parent_id,
        .retries = m->retries,
        .eta = m->eta,
        .expires = m->expires,
    };
    h = events_head(ev);
    char *json = cc_event_task_received(&h, &rc, &len);
    events_add(ev, json, len);
    cc_events_retry_release(ev, m->id); /* [issue 14] RECEIVED, then RETRY */
}

void cc_events_task_started(struct cc_events *ev, const struct cc_request *r)
{
    struct cc_event_head h;
    size_t len = 0;

    if (!ev->is_task_on)
        return;
    h = events_head(ev);
    char *json = cc_event_task_started(&h, r->msg.id, &len);
    events_add(ev, json, len);
}

void cc_events_task_failed(struct cc_events *ev, const struct cc_request *r, const char *exc_repr)
{
    struct cc_event_head h;
    size_t len = 0;

    if (!ev->is_task_on)
        return;
    h = events_head(ev);
    char *json = cc_event_task_failed(&h, "task-failed", r->msg.id, exc_repr, "", &len);
    events_add(ev, json, len);
}

void cc_events_task_failed_exc(struct cc_events *ev, const struct cc_request *r,
                               const char *exc_module, const char *exc_type, const json_t *exc_args)
{
    struct cc_event_head h;
    size_t len = 0;
    char *repr, *tb, *json;

    if (!ev->is_task_on)
        return;
    repr = cc_pyrepr_exc(exc_type, exc_args);
    tb = cc_taskrun_traceback(cc_consumer_request_name(r), NULL, 0, NULL, exc_module, exc_type,
                              exc_args);
    h = events_head(ev);
    json = cc_event_task_failed(&h, "task-failed", r->msg.id, repr != NULL ? repr : "Exception()",
                                tb, &len);
    events_add(ev, json, len);
    free(repr);
    free(tb);
}

void cc_events_task_rejected(struct cc_events *ev, const struct cc_request *r, bool requeue)
{
    struct cc_event_head h;
    size_t len = 0;

    if (!ev->is_task_on)
        return;
    h = events_head(ev);
    char *json = cc_event_task_rejected(&h, r->msg.id, requeue, &len);
    events_add(ev, json, len);
}

void cc_events_task_revoked(struct cc_events *ev, const struct cc_request *r, bool terminated,
                            int signum, bool expired)
{
    struct cc_event_head h;
    size_t len = 0;

    if (!ev->is_task_on)
        return;
    h = events_head(ev);
    char *json = cc_event_task_revoked(&h, r->msg.id, terminated, signum, expired, &len);
    events_add(ev, json, len);
}

void cc_events_task_report(struct cc_events *ev, const struct cc_request *r,
                           const struct cc_pool_report *rep)
{
    struct cc_event_head h;
    const char *first = rep->ev_len > 0 ? rep->ev_text : NULL;
    const char *second = first != NULL ? first + strlen(first) + 1 : "";
    char *json = NULL;
    size_t len = 0;

    if (!ev->is_task_on)
        return;
    if (first != NULL && (size_t)(second - rep->ev_text) >= rep->ev_len)
        second = "";
    switch (rep->status) {
    case CC_OK:
        h = events_head(ev);
        json = cc_event_task_succeeded(&h, r->msg.id, first ? first : "None", rep->runtime_s, &len);
        break;
    case CC_TASK_IGNORE:
        return; /* Celery: Ignore acks and sends nothing */
    case CC_TASK_REJECT:
        /* Celery's Request.reject sends it only while the message is unacked (acks_late);
         * an early-acked task that raised Reject is just done. */
        if (!r->is_acked)
            cc_events_task_rejected(ev, r, rep->reject_requeue != 0);
        return;
    case CC_TASK_RETRY: /* [issue 14] held until the retry message's task-received */
        events_held_add(ev, r->msg.id, first ? first : "Exception()", second);
        return;
    case CC_POOL_TIME_LIMIT: {
        /* billiard.exceptions.TimeLimitExceeded(limit), with the traceback Celery sends
         * (billiard's on_hard_timeout frame; ours names the task). */
        json_t *args = rep->is_limit_int ? json_pack("[I]", (json_int_t)rep->time_limit_s)
                                         : json_pack("[f]", rep->time_limit_s);

        cc_events_task_failed_exc(ev, r, "billiard.exceptions", "TimeLimitExceeded", args);
        json_decref(args);
        return;
    }
    default:
        h = events_head(ev);
        json = cc_event_task_failed(&h, "task-failed", r->msg.id, first ? first : "Exception()",
                                    second, &len);
        break;
    }
    events_add(ev, json, len);
}
