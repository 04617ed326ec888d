/* `celeryc beat`: the periodic task scheduler (issue #6).
 *
 * Design: one thread, one poll(2) loop. Entries (schedule-file entries and the job store's
 * active jobs, src/beat/beat_sched.c) sit in a min-heap by the time they next need a look; the loop
 * sleeps until the earliest one (bounded by beat_max_loop_interval), a signal, the broker
 * socket, or the job store's socket (LISTEN celeryc_jobs / celeryc_runs), then dispatches
 * every due entry: one Celery protocol-2 message per slot, encoded by cc_message_encode (the
 * `celeryc call` path) and published with publisher confirms and mandatory=true, so a
 * message is either confirmed by the broker or the failure is logged and retried.
 *
 * Without a job store: this beat dispatches, and the last slot of every entry is kept in the
 * state file (-s, written atomically after each batch), so a restart neither skips (missed
 * slots follow the entry's missed-run policy) nor repeats a slot.
 *
 * With a job store: every beat takes or renews the lease "beat" (cc_jobstore_lease) every
 * ttl/3; only the holder dispatches. Each slot is claimed before it is sent
 * (cc_jobstore_entry_claim, unique per (entry, slot) and fenced by the lease epoch), and job
 * slots become runs (cc_jobstore_run_create: unique per (job, slot), concurrency policy) whose
 * message carries header celeryc_run; a run is published only after this beat won its send
 * claim (cc_jobstore_run_send_claim), which it gives back when the message was not published.
 * The leader also sends every unsent queued run (manual runs, retries, runs a crashed leader
 * committed but never sent), fails those it cannot send after BEAT_RUN_SEND_ATTEMPTS tries,
 * and runs the sweeps (reaper, retries) every BEAT_SWEEP_S seconds. On becoming leader it
 * loads every entry's last slot from the store (cc_jobstore_entries_state) and re-plans.
 *
 * Invariants: a slot is advanced (last_us) only after its message is confirmed (no store)
 * or claimed (store: a claimed slot is never sent by another beat; if this beat dies or is
 * deposed between the claim and the publish, that file-entry slot is lost, never doubled; a
 * job run's send claim is given back, or stays with a beat that died, and is never sent by
 * another). With a store nothing is published unless lease_allows_publish() holds right
 * before the basic.publish, and no store transaction spans a publish or a confirm wait
 * (docs/ARCHITECTURE.md "Beat", HA invariants). Signals only set flags; TERM/INT finish the
 * current publish, save the state, release the lease and exit 0.
 *
 * Reference: celery-wire.md §7 (beat), §2 (messages), §5 (revoke broadcast). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "amqptab.h"
#include "beat.h"
#include "beat_int.h"
#include "broker.h"
#include "config.h"
#include "ctlclient.h"
#include "isotime.h"
#include "jobstore.h"
#include "log.h"
#include "message.h"
#include "pyrepr.h"
#include "signals.h"
#include "util.h"

extern char **environ;

#define BEAT_LEASE_NAME        "beat"
#define BEAT_CONFIRM_MS        10000
#define BEAT_SWEEP_S           5
#define BEAT_JOBS_RELOAD_S     300 /* safety net; changes arrive by NOTIFY */
#define BEAT_RUN_SEND_ATTEMPTS 5
#define BEAT_BATCH_MAX         5000
#define BEAT_PIPELINE          1000 /* publishes per wait for confirms */
#define BEAT_BATCH_US          300000
#define BEAT_UNSENT_LIMIT      500
#define BEAT_RETRY_SLACK_US    50000      /* a retry's sweep: this long after its not_before */
#define BEAT_EX_CONFIG         78         /* EX_CONFIG */
#define BEAT_PROBE_MAX_US      1000000LL  /* a service that is away: an attempt a second */
#define BEAT_LAT_MAX_MS        10000      /* stats: lateness histogram range */
#define BEAT_CORK_MSGS         32         /* corked publishes flushed every this many */
#define BEAT_OUTAGE_LOG_MAX_US 60000000LL /* ... and a line about it at least a minute apart */

/* A service (broker, job store) while it is away: it is probed at least every second
 * (probe_us), so the beat is back within about a second of the service; only the log lines
 * back off (outage_log_due). */
struct beat_outage {
    int64_t down_mono;  /* first failure of this outage */
    int64_t up_mono;    /* when the current connection was made */
    int64_t log_mono;   /* next failure line */
    int64_t log_gap_us; /* 1 s, doubling to BEAT_OUTAGE_LOG_MAX_US */
};

struct beat {
    struct cc_config *cfg;
    int64_t ttl_ms;
    char origin[300]; /* gen<pid>@<host> */
    char oid[37];     /* reply_to, as Celery's app.thread_oid */
    char holder[300]; /* lease holder: <host>:<pid> */

    /* broker */
    struct cc_broker b;
    struct cc_broker_tls tls;
    bool b_ok, b_ctl_ok;
    bool b_corked;        /* TCP_CORK on the connection's socket (a batch of publishes) */
    int b_corked_n;       /* publishes since the last flush */
    int64_t b_retry_mono; /* next connection attempt while it is away */
    int b_fails;          /* failed attempts in this outage */
    struct beat_outage b_out;

    /* job store */
    struct cc_jobstore *st;
    bool st_ok;
    int64_t st_retry_mono; /* next connection attempt while it is away */
    int st_fails;          /* failed attempts in this outage */
    struct beat_outage st_out;
    bool is_leader;
    int64_t epoch;
    int64_t lease_next_mono, lease_ok_mono;
    int64_t sweep_next_mono, reload_next_mono;
    bool want_sweep, want_reload;
    json_t *jobs_changed; /* object: job ids notified since the last look */
    json_t *jobs;         /* object: job id -> job row (active jobs, and jobs of runs sent) */
    json_t *run_attempts; /* object: run id -> failed send attempts */
    json_t *runs_changed; /* object: run ids notified (celeryc_runs) since the last look */
    json_t *retry_wake;   /* object: retry run id -> its not_before (us), not yet due */
    json_t *undo;         /* object: run id -> epoch of a send claim to give back (store away) */

    /* entries */
    struct beat_heap heap;
    struct beat_index ix;
    struct beat_entry **files; /* schedule-file entries (also in heap/ix) */
    size_t n_files;
    struct beat_entry **dirty; /* file entries advanced since the last journal append */
    size_t n_dirty, cap_dirty;
    size_t journal_lines;         /* appended since the last snapshot */
    struct beat_state_writer *sw; /* journal and snapshot writes, off the loop */
    /* pipelined publishes of file entries awaiting their confirms (one routing key) */
    struct beat_entry **pend;
    size_t n_pend, cap_pend;
    const struct beat_entry *pend_first; /* its routing (queue, exchange, routing key) */
    uint64_t pend_seq;

    /* stats */
    uint64_t dispatched;
    uint32_t *lat_hist; /* messages by lateness in ms, 0 .. BEAT_LAT_MAX_MS (the last: more) */
    uint64_t n_lat;
};

static volatile sig_atomic_t beat_usr1;
static int beat_usr1_pipe[2] = {-1, -1};

static void beat_on_usr1(int signo)
{
    int saved = errno;
    char c = 1;
    ssize_t n;

    (void)signo;
    beat_usr1 = 1;
    n = write(beat_usr1_pipe[1], &c, 1);
    (void)n;
    errno = saved;
}

/* ---- Stats ------------------------------------------------------------------------------- */

/* Lateness is kept as a histogram of 1-ms buckets (40 KB whatever the uptime; a list of
 * every message's lateness grew by 24 MB a day at 70 messages a second). */
static void stats_add(struct beat *bt, int64_t lateness_us)
{
    int64_t ms = (lateness_us + 500) / 1000;

    if (bt->lat_hist == NULL)
        bt->lat_hist = cc_xcalloc(BEAT_LAT_MAX_MS + 1, sizeof(*bt->lat_hist));
    bt->lat_hist[ms < 0 ? 0 : ms > BEAT_LAT_MAX_MS ? BEAT_LAT_MAX_MS : ms]++;
    bt->n_lat++;
}

/* The smallest lateness (ms) with at least q of the messages at or below it. */
static int stats_pct(const struct beat *bt, double q)
{
    uint64_t want = (uint64_t)((double)(bt->n_lat - 1) * q) + 1, seen = 0;

    for (int ms = 0; ms <= BEAT_LAT_MAX_MS; ms++)
        if ((seen += bt->lat_hist[ms]) >= want)
            return ms;
    return BEAT_LAT_MAX_MS;
}

static void stats_log(struct beat *bt)
{
    struct rusage ru;
    int32_t p50 = 0, p99 = 0;
    int64_t cpu_ms = 0;

    if (bt->n_lat > 0) {
        p50 = stats_pct(bt, 0.5);
        p99 = stats_pct(bt, 0.99);
    }
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        cpu_ms = ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 +
                 ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
    cc_log(CC_LOG_WARNING,
           "beat stats: dispatched %" PRIu64 ", lateness p50 %d ms p99 %d ms, cpu user+sys %" PRId64
           " ms",
           bt->dispatched, (int)p50, (int)p99, cpu_ms);
}

/* One debug line per confirmed message, with the slot (tests check slots across restarts). */
static void log_sent(const char *name, int64_t slot_us, const char *task_id)
{
    char b[40];

    if (!cc_log_enabled(CC_LOG_DEBUG))
        return;
    cc_debug("beat: sent %s slot %s id %s", name,
             slot_us ? cc_isotime_format(slot_us, 1, b, sizeof(b)) : "-", task_id);
}

/* ---- Broker ------------------------------------------------------------------------------ */

static int64_t backoff_us(int fails)
{
    int64_t s = fails < 5 ? (1LL << fails) : 30;
    return (s > 30 ? 30 : s) * 1000000LL;
}

/* The wait before the next connection attempt after `fails` failed ones in a row: 0.25 s,
 * 0.5 s, then 1 s for as long as the service is away (never longer: the beat must be back
 * promptly once it returns; a refused connect costs next to nothing). */
static int64_t probe_us(int fails)
{
    return fails >= 2 ? BEAT_PROBE_MAX_US : 250000LL << fails;
}

/* A connection attempt failed (fails: the failed attempts before this one). Returns whether
 * to log it: the first, then after 1, 2, 4, ... 60 s. */
static bool outage_log_due(struct beat_outage *o, int fails)
{
    int64_t now = cc_mono_us();

    if (fails == 0) {
        o->down_mono = now;
        o->log_gap_us = 1000000;
        o->log_mono = now + o->log_gap_us;
        return true;
    }
    if (now < o->log_mono)
        return false;
    o->log_gap_us =
        o->log_gap_us * 2 > BEAT_OUTAGE_LOG_MAX_US ? BEAT_OUTAGE_LOG_MAX_US : o->log_gap_us * 2;
    o->log_mono = now + o->log_gap_us;
    return true;
}

static double outage_s(const struct beat_outage *o)
{
    return (double)(cc_mono_us() - o->down_mono) / 1e6;
}

/* A connection that worked was lost: the first attempt to reconnect is at once, unless the
 * connection was made less than a second ago (a service that accepts and then drops every
 * connection is probed like one that is away, not in a tight loop). */
static int64_t reconnect_at(const struct beat_outage *o)
{
    int64_t now = cc_mono_us();

    return now - o->up_mono >= BEAT_PROBE_MAX_US ? 0 : now + BEAT_PROBE_MAX_US;
}

static int broker_ensure(struct beat *bt, struct cc_err *err)
{
    int rc;

    if (bt->b_ok)
        return CC_OK;
    if (cc_mono_us() < bt->b_retry_mono)
        return cc_err_set(err, CC_EBROKER, "broker unavailable (retrying)");
    memset(&bt->b, 0, sizeof(bt->b));
    /* A publishing connection: no heartbeats (nothing reads it between publishes); a dead
     * connection shows at the next publish, which is retried on a new one. */
    rc = cc_broker_connect(&bt->b, bt->cfg->broker_url, 0, bt->cfg->connect_timeout_s, &bt->tls,
                           err);
    if (rc == CC_OK)
        rc = cc_broker_confirm_select(&bt->b, err);
    if (rc != CC_OK) {
        cc_broker_abandon(&bt->b);
        bt->b_retry_mono = cc_mono_us() + probe_us(bt->b_fails);
        if (outage_log_due(&bt->b_out, bt->b_fails))
            cc_error("beat: cannot connect to the broker: %s (%d attempt(s) in %.0f s; trying "
                     "again every second at most)",
                     err->msg, bt->b_fails + 1, outage_s(&bt->b_out));
        bt->b_fails++;
        return rc;
    }
    if (bt->b_fails > 0)
        cc_info("beat: connected to the broker again (after %.1f s, %d failed attempt(s))",
                outage_s(&bt->b_out), bt->b_fails);
    bt->b_out.up_mono = cc_mono_us();
    bt->b_ok = true;
    bt->b_ctl_ok = false;
    bt->b_fails = 0;
    return CC_OK;
}

/* The publishes of a batch leave in full TCP segments (TCP_CORK) instead of one small segment
 * per message: sending them one by one was half of the beat's CPU in a 4,233-message burst
 * (send(2) and the loopback's TCP path per message). Uncorked (which flushes) before every
 * wait for a confirm and every unpipelined publish, so nothing is left waiting in the
 * socket. */
static void broker_cork(struct beat *bt, bool on)
{
    int fd = bt->b_ok ? cc_broker_fd(&bt->b) : -1, v = on;

    if (on && bt->b_corked && ++bt->b_corked_n >= BEAT_CORK_MSGS) {
        /* The first messages of a burst need not wait for the last: flush every few. */
        v = 0;
        if (fd >= 0)
            (void)setsockopt(fd, IPPROTO_TCP, TCP_CORK, &v, sizeof(v));
        v = 1;
        bt->b_corked = false;
    }
    if (bt->b_corked == on || fd < 0)
        return;
    if (setsockopt(fd, IPPROTO_TCP, TCP_CORK, &v, sizeof(v)) == 0) {
        bt->b_corked = on;
        bt->b_corked_n = 0;
    }
}

static void broker_lost(struct beat *bt)
{
    if (!bt->b_ok)
        return;
    cc_broker_abandon(&bt->b);
    bt->b_ok = false;
    bt->b_corked = false;
    bt->b_retry_mono = reconnect_at(&bt->b_out); /* at once, then every second at most */
}

static bool lease_allows_publish(const struct beat *bt);
static void step_down(struct beat *bt, const char *why);

/* Wait for the confirms up to `seq`. A deadline that passed while this process was stopped
 * (SIGSTOP, a paused VM) must not hide confirms already in the socket: on a timeout, read what
 * is there and look again. */
static int beat_wait_confirms(struct beat *bt, uint64_t seq, struct cc_err *err)
{
    int rc = cc_broker_wait_confirms(&bt->b, seq, BEAT_CONFIRM_MS, err);

    if (rc == CC_ETIMEDOUT) {
        struct cc_err e2 = {0};
        int rc2;

        for (int i = 0; i < 64 && cc_broker_has_readable(&bt->b); i++)
            if (cc_broker_poll(&bt->b, &e2) != CC_OK)
                break;
        rc2 = cc_broker_wait_confirms(&bt->b, seq, 0, &e2);
        if (rc2 == CC_OK) {
            rc = CC_OK;
        } else if (rc2 != CC_ETIMEDOUT) {
            rc = rc2;
            *err = e2;
        }
    }
    return rc;
}

struct beat_send {
    const char *task;
    const char *task_id;
    const json_t *args, *kwargs;
    const char *queue, *exchange, *routing_key;
    int priority;     /* -1: none */
    double expires_s; /* 0: none */
    const char *run_id;
};

/* Encode (cc_message_encode, as `celeryc call`) and publish with confirm (seq NULL: wait for it;
 * else pipelined, *seq = its confirm number). Routing as Celery's
 * send_task_message for a direct queue: exchange "" and routing key = the queue name, unless
 * both exchange and routing_key are given (§1.2). */
static int beat_publish(struct beat *bt, const struct beat_send *s, uint64_t *seq,
                        struct cc_err *err)
{
    struct cc_msg m;
    struct cc_msg_out out;
    char exp_buf[40];
    int64_t now = cc_now_us();
    const char *queue = s->queue ? s->queue : bt->cfg->default_queue;
    const char *exchange = "", *rk = queue;
    char *argsrepr, *kwargsrepr;
    int rc;

    if ((rc = broker_ensure(bt, err)) != CC_OK)
        return rc;
    memset(&m, 0, sizeof(m));
    m.protocol = 2;
    m.group_index = -1;
    m.id = (char *)s->task_id;
    m.task = (char *)s->task;
    m.args = (json_t *)s->args;
    m.kwargs = (json_t *)s->kwargs;
    m.origin = bt->origin;
    m.reply_to = bt->oid;
    m.delivery_mode = 2;
    m.priority = s->priority > 0 ? s->priority : 0;
    /* Beat's argsrepr is the repr of its args list: "[1, 2]" (§7.2). */
    argsrepr = cc_pyrepr(s->args, 0, 1024);
    kwargsrepr = cc_pyrepr(s->kwargs, 0, 1024);
    m.argsrepr = argsrepr;
    m.kwargsrepr = kwargsrepr;
    if (s->expires_s > 0) {
        m.expires_us = now + (int64_t)(s->expires_s * 1e6);
        m.expires = cc_isotime_format(m.expires_us, 1, exp_buf, sizeof(exp_buf));
    }
    rc = cc_message_encode(&m, now, &out, err);
    free(argsrepr);
    free(kwargsrepr);
    if (rc != CC_OK)
        return rc;
    if (s->run_id != NULL) /* issue #6 contract: the worker finds the run by this header */
        json_object_set_new(out.headers, "celeryc_run", json_string(s->run_id));
    if (s->exchange != NULL) {
        exchange = s->exchange;
        rk = s->routing_key != NULL ? s->routing_key : queue;
    }
    /* The last thing before the basic.publish: a deposed leader (frozen since its claim, its
     * lease lapsed) does not complete a publish it began (HA invariants, ARCHITECTURE.md). */
    if (!lease_allows_publish(bt)) {
        cc_message_out_deinit(&out);
        step_down(bt, "lease not renewed in time");
        return cc_err_set(err, CC_EAGAIN,
                          "lease lost: not renewed within 90%% of its ttl; nothing published");
    }
    /* Corked from the second message of a batch: a lone message leaves at once, without
     * the two setsockopt calls (one due every 0.6 ms: they were ~10 % of the beat's CPU). */
    if (seq == NULL || bt->n_pend > 0)
        broker_cork(bt, seq != NULL);
    if (seq != NULL) /* pipelined: the caller waits for the confirms of the batch */
        rc = cc_broker_publish_pipelined(&bt->b, exchange, rk, &out, seq, err);
    else
        rc = cc_broker_publish_confirmed(&bt->b, exchange, rk, &out, BEAT_CONFIRM_MS, err);
    cc_message_out_deinit(&out);
    if (rc == CC_ENOTFOUND_Q) {
        cc_err_set(err, CC_ENOTFOUND_Q,
                   "unroutable: no queue is bound to exchange '%s' with routing key '%s' "
                   "(start a worker for queue '%s' first)",
                   exchange, rk, queue);
    } else if (rc != CC_OK) {
        broker_lost(bt);
    }
    return rc;
}

/* Celery's revoke broadcast with terminate (what `celeryc control revoke --terminate`
 * sends), on channel 2 (channel 1 is in confirm mode), fire and forget. */
static void beat_revoke(struct beat *bt, const char *task_id, bool terminate)
{
    struct cc_err err = {0};
    json_t *arguments, *req, *headers;
    amqp_basic_properties_t p;
    amqp_pool_t pool;
    char *body;

    if (broker_ensure(bt, &err) != CC_OK)
        goto fail;
    broker_cork(bt, false);
    if (!bt->b_ctl_ok) {
        if (cc_broker_channel_open(&bt->b, 2, &err) != CC_OK ||
            cc_broker_declare_exchange_on(&bt->b, 2, "celery.pidbox", "fanout", false, &err) !=
                CC_OK) {
            broker_lost(bt);
            goto fail;
        }
        bt->b_ctl_ok = true;
    }
    arguments = terminate ? json_pack("{s:s,s:b,s:s}", "task_id", task_id, "terminate", 1, "signal",
                                      "SIGTERM")
                          : json_pack("{s:s}", "task_id", task_id);
    req = cc_ctlclient_request("revoke", arguments, NULL, 0, NULL, NULL, NULL);
    headers = json_pack("{s:i,s:f}", "clock", 1, "expires", (double)cc_now_us() / 1e6 + 60.0);
    body = json_dumps(req, JSON_COMPACT);
    memset(&p, 0, sizeof(p));
    init_amqp_pool(&pool, 4096);
    p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_CONTENT_ENCODING_FLAG |
               AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_PRIORITY_FLAG;
    p.content_type = amqp_cstring_bytes("application/json");
    p.content_encoding = amqp_cstring_bytes("utf-8");
    p.delivery_mode = 2;
    if (cc_amqptab_from_json(headers, &pool, &p.headers, &err) == CC_OK)
        p._flags |= AMQP_BASIC_HEADERS_FLAG;
    if (body == NULL || cc_broker_publish_raw_on(&bt->b, 2, "celery.pidbox", "", &p,
                                                 amqp_cstring_bytes(body), &err) != CC_OK) {
        if (err.code != CC_EAGAIN)
            broker_lost(bt);
    } else {
        cc_info("beat: revoke%s sent for task %s", terminate ? " (terminate)" : "", task_id);
    }
    free(body);
    empty_amqp_pool(&pool);
    json_decref(arguments);
    json_decref(req);
    json_decref(headers);
    if (err.code == CC_OK)
        return;
fail:
    cc_error("beat: cannot send the revoke of task %s: %s", task_id, err.msg);
}

/* ---- Job store: connection, lease ------------------------------------------------------- */

static bool store_mode(const struct beat *bt)
{
    return bt->cfg->job_store != NULL && bt->cfg->job_store[0] != '\0';
}

/* A store call failed with `err`: CC_EBACKEND means the connection is suspect: drop it and
 * reconnect (at once, then every second at most while the store is away). */
static void store_failed(struct beat *bt, const char *what, const struct cc_err *err)
{
    if (err->code != CC_EBACKEND) {
        cc_error("beat: job store: %s: %s", what, err->msg);
        return;
    }
    if (bt->st_ok) {
        cc_error("beat: job store: %s: %s (reconnecting)", what, err->msg);
        bt->st_retry_mono = reconnect_at(&bt->st_out);
    }
    bt->st_ok = false;
}

static int store_ensure(struct beat *bt)
{
    struct cc_err err = {0};
    int rc;

    if (bt->st_ok)
        return CC_OK;
    if (cc_mono_us() < bt->st_retry_mono)
        return CC_EAGAIN;
    if (bt->st == NULL) {
        rc = cc_jobstore_open(bt->cfg->job_store, 5, &bt->st, &err);
        /* A statement waits at most a tenth of the lease for another session's lock, and the
         * server ends this session if it idles inside a transaction for a quarter of it (this
         * beat frozen mid-transaction): well before the lease it holds expires. Kept for
         * every reconnect. */
        if (rc == CC_OK)
            rc =
                cc_jobstore_set_timeouts(bt->st, (int)(bt->ttl_ms / 10 > 20 ? bt->ttl_ms / 10 : 20),
                                         (int)(bt->ttl_ms / 4 > 100 ? bt->ttl_ms / 4 : 100), &err);
    } else {
        rc = cc_jobstore_reconnect(bt->st, &err);
    }
    if (rc == CC_OK && bt->cfg->job_store_upgrade) {
        int from = 0, to = 0;

        rc = cc_jobstore_upgrade(bt->st, &from, &to, &err);
        if (rc == CC_OK && from != to)
            cc_info("beat: job store schema upgraded from %d to %d", from, to);
    }
    if (rc == CC_OK)
        rc = cc_jobstore_check_schema(bt->st, &err);
    if (rc == CC_OK)
        rc = cc_jobstore_listen(bt->st, &err);
    if (rc != CC_OK) {
        bt->st_retry_mono = cc_mono_us() + probe_us(bt->st_fails);
        if (outage_log_due(&bt->st_out, bt->st_fails))
            cc_error("beat: job store: %s (%d attempt(s) in %.0f s; trying again every second "
                     "at most)",
                     err.msg, bt->st_fails + 1, outage_s(&bt->st_out));
        bt->st_fails++;
        return rc;
    }
    if (bt->st_fails > 0)
        cc_info("beat: job store connected again (after %.1f s, %d failed attempt(s))",
                outage_s(&bt->st_out), bt->st_fails);
    bt->st_out.up_mono = cc_mono_us();
    bt->st_ok = true;
    bt->st_fails = 0;
    bt->want_reload = true; /* notifications were missed while away */
    bt->want_sweep = true;
    return CC_OK;
}

static void replan_all(struct beat *bt, const json_t *state);

static void step_down(struct beat *bt, const char *why)
{
    if (!bt->is_leader)
        return;
    bt->is_leader = false;
    cc_warn("beat: no longer the leader (%s): standing by", why);
}

/* Give back the send claim of run `run_id` (its message was not published). is_notify: wake
 * the leader (we are deposed). Kept in bt->undo and retried while the store is away. */
static void run_send_undo(struct beat *bt, const char *run_id, int64_t epoch, bool is_notify)
{
    struct cc_err err = {0};

    if (bt->st_ok && cc_jobstore_run_send_undo(bt->st, run_id, epoch, is_notify, &err) == CC_OK) {
        json_object_del(bt->undo, run_id);
        return;
    }
    if (err.code != CC_OK)
        store_failed(bt, "send undo", &err);
    json_object_set_new(bt->undo, run_id, json_integer(epoch));
}

static void undo_pending(struct beat *bt)
{
    const char *id;
    json_t *v;
    void *tmp;

    json_object_foreach_safe(bt->undo, tmp, id, v)
    {
        if (!bt->st_ok)
            return;
        run_send_undo(bt, id, (int64_t)json_integer_value(v), true);
    }
}

/* Take or renew the lease; on becoming leader load every entry's last slot and re-plan. */
static void lease_tick(struct beat *bt)
{
    struct cc_err err = {0};
    int64_t epoch = 0, mono = cc_mono_us();
    bool leader = false;

    bt->lease_next_mono = mono + bt->ttl_ms * 1000 / 3;
    if (store_ensure(bt) != CC_OK) {
        if (bt->is_leader && !lease_allows_publish(bt))
            step_down(bt, "job store unreachable, lease expired");
        return;
    }
    undo_pending(bt);
    if (cc_jobstore_lease(bt->st, BEAT_LEASE_NAME, bt->holder, (int)bt->ttl_ms, &epoch, &leader,
                          &err) != CC_OK) {
        if (err.code == CC_ETIMEDOUT) /* a frozen leader's fenced write: gone within ttl/4 */
            cc_warn("beat: %s", err.msg);
        else
            store_failed(bt, "lease", &err);
        if (bt->is_leader && !lease_allows_publish(bt))
            step_down(bt, "lease not renewed in time");
        return;
    }
    if (!leader) {
        step_down(bt, "another beat holds the lease");
        return;
    }
    bt->lease_ok_mono = mono;
    if (!bt->is_leader || epoch != bt->epoch) {
        json_t *state = NULL;

        if (cc_jobstore_entries_state(bt->st, &state, &err) != CC_OK) {
            store_failed(bt, "entry state", &err);
            return; /* not leader until the state is known: try at the next tick */
        }
        bt->is_leader = true;
        bt->epoch = epoch;
        cc_info("beat: leader now (lease '%s', epoch %" PRId64 ", holder %s)", BEAT_LEASE_NAME,
                epoch, bt->holder);
        replan_all(bt, state);
        json_decref(state);
        bt->want_sweep = true;
    }
}

/* May this beat publish now? Without a job store, always. With one: it holds the lease and
 * the lease is still valid for a tenth of its ttl on this host's monotonic clock, counted
 * from before the renewal the server granted (so from no later than the server's own start of
 * the lease): the server cannot have given the lease to another beat yet. A process stopped
 * for longer than that (SIGSTOP, a paused VM) finds its lease stale when it resumes. */
static bool lease_allows_publish(const struct beat *bt)
{
    if (!store_mode(bt))
        return true;
    return bt->is_leader && cc_mono_us() < bt->lease_ok_mono + bt->ttl_ms * 900;
}

/* A fenced store call (or beat_publish) said CC_EAGAIN: lease lost, or the slot is already
 * taken. */
static bool is_lease_lost(const struct cc_err *err)
{
    return err->code == CC_EAGAIN && strncmp(err->msg, "lease lost", 10) == 0;
}

/* Is this beat allowed to dispatch right now? */
static bool may_dispatch(struct beat *bt)
{
    if (!store_mode(bt))
        return true;
    if (!bt->is_leader)
        return false;
    /* Our lease may have expired without us noticing (store slow): stop before it does. */
    if (!lease_allows_publish(bt)) {
        step_down(bt, "lease not renewed in time");
        return false;
    }
    return true;
}

/* ---- Entries ----------------------------------------------------------------------------- */

static int64_t state_last_us(const json_t *st)
{
    const json_t *v = json_object_get(st, "last_run_at");
    int64_t us = 0;

    if (json_is_integer(v))
        return (int64_t)json_integer_value(v);
    if (json_is_string(v) && cc_isotime_parse(json_string_value(v), &us) == CC_OK)
        return us;
    return 0;
}

/* Take a persisted last slot when it is newer than what this beat knows. */
static void apply_state(struct beat_entry *e, const json_t *state)
{
    const json_t *st = state != NULL ? json_object_get(state, e->name) : NULL;
    int64_t last = state_last_us(st);

    if (st != NULL && last > e->last_us) {
        e->last_us = last;
        e->total = (int64_t)json_integer_value(json_object_get(st, "total_run_count"));
    }
}

/* cc_beat_sched_state_load: a persisted slot of a schedule-file entry (the latest wins). */
static void state_file_entry(const char *name, int64_t last_us, int64_t total, void *arg)
{
    struct beat *bt = arg;
    struct beat_entry *e = cc_beat_sched_index_get(&bt->ix, name);

    if (e != NULL && !e->is_job &&
        (last_us > e->last_us || (last_us == e->last_us && total > e->total))) {
        e->last_us = last_us;
        e->total = total;
    }
}

/* After loading 100,000 entries: give the pages the loaders freed back to the system. */
static void release_free_memory(void)
{
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

static void plan_entry(struct beat *bt, struct beat_entry *e, int64_t now)
{
    struct cc_err err = {0};
    int64_t missed = 0;

    if (cc_beat_sched_entry_plan(e, now, &missed, &err) != CC_OK) {
        cc_error("beat: %s: %s: the entry is disabled", e->name, err.msg);
        cc_beat_sched_heap_remove(&bt->heap, e);
        return;
    }
    cc_beat_sched_heap_fix(&bt->heap, e);
}

static void replan_all(struct beat *bt, const json_t *state)
{
    int64_t now = cc_now_us();

    for (size_t i = 0; i < bt->ix.nb; i++)
        for (struct beat_entry *e = bt->ix.b[i]; e != NULL; e = e->hnext) {
            apply_state(e, state);
            e->claimed_slot_us = 0;
            plan_entry(bt, e, now);
        }
}

static void entry_drop(struct beat *bt, struct beat_entry *e)
{
    cc_beat_sched_heap_remove(&bt->heap, e);
    cc_beat_sched_index_del(&bt->ix, e);
    cc_beat_sched_entry_free(e);
}

/* Insert or update the entry of a job row (jobs without a schedule or inactive: removed). */
static void job_upsert(struct beat *bt, const char *id, const json_t *row, const json_t *state)
{
    char name[80];
    struct beat_entry *old, *e;
    struct cc_err err = {0};
    const json_t *sched = json_object_get(row, "schedule");

    snprintf(name, sizeof(name), "job:%s", id);
    old = cc_beat_sched_index_get(&bt->ix, name);
    if (row == NULL || !json_is_true(json_object_get(row, "active")) || sched == NULL ||
        json_is_null(sched)) {
        if (old != NULL) {
            cc_info("beat: job %s removed from the schedule", id);
            entry_drop(bt, old);
        }
        return;
    }
    e = cc_xcalloc(1, sizeof(*e));
    if (cc_beat_sched_entry_from_job(e, row, &err) != CC_OK) {
        cc_error("beat: %s: not scheduled", err.msg);
        cc_beat_sched_entry_free(e);
        if (old != NULL)
            entry_drop(bt, old);
        return;
    }
    if (old != NULL) {
        bool same = strcmp(old->fingerprint, e->fingerprint) == 0 && old->missed == e->missed &&
                    old->deadline_us == e->deadline_us;

        e->last_us = old->last_us;
        e->total = old->total;
        if (same) {
            e->slot_us = old->slot_us;
            e->wake_us = old->wake_us;
            e->is_catchup = old->is_catchup;
            e->attempts = old->attempts;
            e->claimed_slot_us = old->claimed_slot_us;
            memcpy(e->claimed_task_id, old->claimed_task_id, sizeof(e->claimed_task_id));
        }
        entry_drop(bt, old);
        cc_beat_sched_index_put(&bt->ix, e);
        if (same)
            cc_beat_sched_heap_push(&bt->heap, e);
        else
            plan_entry(bt, e, cc_now_us());
        return;
    }
    cc_beat_sched_index_put(&bt->ix, e);
    if (state != NULL) {
        apply_state(e, state);
    } else if (bt->is_leader) {
        /* A job this leader did not know: its last slot may be in the store (a re-activated
         * job). */
        json_t *st = NULL;

        if (cc_jobstore_entries_state(bt->st, &st, &err) == CC_OK)
            apply_state(e, st);
        json_decref(st);
    }
    plan_entry(bt, e, cc_now_us());
    cc_info("beat: job %s scheduled (%s)", id, e->task);
}

/* Full reload of the active jobs (start, reconnect, and every BEAT_JOBS_RELOAD_S). */
static void jobs_reload(struct beat *bt)
{
    json_t *list = NULL, *row, *seen = json_object(), *state = NULL;
    struct cc_err err = {0};
    size_t i;
    struct beat_entry **gone = NULL;
    size_t n_gone = 0;

    bt->want_reload = false;
    bt->reload_next_mono = cc_mono_us() + BEAT_JOBS_RELOAD_S * 1000000LL;
    if (cc_jobstore_jobs_list(bt->st, true, &list, &err) != CC_OK) {
        store_failed(bt, "jobs", &err);
        /* After a reconnect (connection lost), else in BEAT_SWEEP_S: never at once. */
        bt->want_reload = err.code == CC_EBACKEND;
        bt->reload_next_mono = cc_mono_us() + BEAT_SWEEP_S * 1000000LL;
        json_decref(seen);
        return;
    }
    json_array_foreach(list, i, row)
    {
        const char *id = json_string_value(json_object_get(row, "id"));

        if (id == NULL)
            continue;
        json_object_set(bt->jobs, id, row);
        json_object_set_new(seen, id, json_true());
    }
    /* Entries of jobs no longer active go first, then every active job is (re)applied. */
    for (size_t b = 0; b < bt->ix.nb; b++)
        for (struct beat_entry *e = bt->ix.b[b]; e != NULL; e = e->hnext)
            if (e->is_job && json_object_get(seen, e->job_id) == NULL) {
                gone = cc_xrealloc(gone, (n_gone + 1) * sizeof(*gone));
                gone[n_gone++] = e;
            }
    for (size_t k = 0; k < n_gone; k++) {
        cc_info("beat: job %s removed from the schedule", gone[k]->job_id);
        entry_drop(bt, gone[k]);
    }
    free(gone);
    if (bt->is_leader && cc_jobstore_entries_state(bt->st, &state, &err) != CC_OK) {
        store_failed(bt, "entry state", &err);
        bt->want_reload = err.code == CC_EBACKEND;
        bt->reload_next_mono = cc_mono_us() + BEAT_SWEEP_S * 1000000LL;
        goto out;
    }
    json_array_foreach(list, i, row)
    {
        const char *id = json_string_value(json_object_get(row, "id"));

        if (id != NULL)
            job_upsert(bt, id, row, state);
    }
out:
    json_decref(state);
    json_object_clear(bt->jobs_changed);
    json_decref(list);
    json_decref(seen);
}

/* NOTIFY celeryc_jobs: reload the named jobs one by one (many at once: a full reload). */
static void jobs_apply_changes(struct beat *bt)
{
    const char *id;
    json_t *v;
    void *tmp;

    if (json_object_size(bt->jobs_changed) > 100) {
        jobs_reload(bt);
        return;
    }
    json_object_foreach_safe(bt->jobs_changed, tmp, id, v)
    {
        json_t *row = NULL;
        struct cc_err err = {0};
        int rc = cc_jobstore_job_get(bt->st, id, &row, &err);

        if (rc == CC_ENOTFOUND) {
            json_object_del(bt->jobs, id);
            job_upsert(bt, id, NULL, NULL);
        } else if (rc != CC_OK) {
            store_failed(bt, "job", &err);
            if (err.code == CC_EBACKEND)
                return; /* kept in jobs_changed: retried after the reconnect */
            /* Anything else would fail again at once: the periodic reload retries it. */
        } else {
            json_object_set(bt->jobs, id, row);
            job_upsert(bt, id, row, NULL);
        }
        json_decref(row);
        json_object_del(bt->jobs_changed, id);
    }
}

static void on_notify(const char *channel, const char *payload, void *arg)
{
    struct beat *bt = arg;

    if (strcmp(channel, "celeryc_jobs") == 0 && payload != NULL && *payload != '\0')
        json_object_set_new(bt->jobs_changed, payload, json_true());
    else if (strcmp(channel, "celeryc_runs") == 0) {
        bt->want_sweep = true;
        if (payload != NULL && *payload != '\0' && json_object_size(bt->runs_changed) < 10000)
            json_object_set_new(bt->runs_changed, payload, json_true());
    }
}

static void store_drain(struct beat *bt)
{
    struct cc_err err = {0};

    if (!bt->st_ok)
        return;
    if (cc_jobstore_notifications(bt->st, on_notify, bt, &err) < 0)
        store_failed(bt, "notifications", &err);
}

/* ---- Job runs ---------------------------------------------------------------------------- */

static const json_t *job_row(struct beat *bt, const char *job_id)
{
    json_t *row = json_object_get(bt->jobs, job_id);
    struct cc_err err = {0};

    if (row != NULL)
        return row;
    if (cc_jobstore_job_get(bt->st, job_id, &row, &err) != CC_OK) {
        if (err.code != CC_ENOTFOUND)
            store_failed(bt, "job", &err);
        return NULL;
    }
    json_object_set_new(bt->jobs, job_id, row);
    return row;
}

/* kwargs (owned copy) plus the job's since_kwarg when it has one (NULL: none, the default
 * since schema 3) and the kwargs do not name it: ISO-8601 UTC start of the job's last S/P/W
 * run, or null. cc_jobstore_run_create adds it the same way, so a run row already carries it;
 * for a run sent from its row this only fills in rows inserted without it (by hand). NULL
 * on a store error. */
static json_t *kwargs_with_since(struct beat *bt, const json_t *job, const json_t *kwargs,
                                 struct cc_err *err)
{
    json_t *empty = NULL, *kw = NULL;

    if (!json_is_object(kwargs))
        kwargs = empty = json_object();
    if (cc_jobstore_kwargs_since(bt->st, job, kwargs, &kw, err) == CC_OK && kw == NULL)
        kw = json_deep_copy(kwargs);
    json_decref(empty);
    return kw;
}

static void run_send_failed(struct beat *bt, const char *run_id, const struct cc_err *why)
{
    json_int_t n = json_integer_value(json_object_get(bt->run_attempts, run_id)) + 1;
    struct cc_err err = {0};
    char msg[300];

    if (n < BEAT_RUN_SEND_ATTEMPTS) {
        json_object_set_new(bt->run_attempts, run_id, json_integer(n));
        cc_error("beat: run %s: message not sent (attempt %d of %d): %s", run_id, (int)n,
                 BEAT_RUN_SEND_ATTEMPTS, why->msg);
        return;
    }
    snprintf(msg, sizeof(msg), "message never sent after %d attempts: %s", (int)n, why->msg);
    if (cc_jobstore_run_fail(bt->st, run_id, msg, &err) != CC_OK) {
        store_failed(bt, "run fail", &err);
        return;
    }
    json_object_del(bt->run_attempts, run_id);
    cc_error("beat: run %s failed: %s", run_id, msg);
}

/* Send the message of run `run` (a row): claim its send (cc_jobstore_run_send_claim: only the
 * winner publishes it; a run another beat claimed is never sent here), publish with confirm,
 * and give the claim back when the message was not published. `entry`: the schedule entry
 * name for the log line, NULL for an unsent run found by the sweep. CC_OK or the error. */
static int run_send(struct beat *bt, const json_t *run, const char *entry, int64_t slot_us,
                    bool is_catchup)
{
    const char *run_id = json_string_value(json_object_get(run, "id"));
    const char *job_id = json_string_value(json_object_get(run, "job_id"));
    const char *task_id = json_string_value(json_object_get(run, "task_id"));
    const json_t *job;
    const json_t *opt;
    json_t *kwargs;
    struct beat_send s;
    struct cc_err err = {0};
    const json_t *v;
    uint64_t seq = 0;
    int64_t epoch = bt->epoch;
    bool is_written;
    int rc;

    if (run_id == NULL || job_id == NULL || task_id == NULL)
        return CC_EINVAL;
    job = job_row(bt, job_id);
    if (job == NULL)
        return CC_ENOTFOUND;
    kwargs = kwargs_with_since(bt, job, json_object_get(run, "kwargs"), &err);
    if (kwargs == NULL) {
        store_failed(bt, "last success", &err);
        return err.code;
    }
    rc = cc_jobstore_run_send_claim(bt->st, run_id, epoch, BEAT_LEASE_NAME, &err);
    if (rc != CC_OK) {
        if (is_lease_lost(&err))
            step_down(bt, err.msg);
        else if (rc == CC_EAGAIN || rc == CC_ENOTFOUND) /* sent, stopped, or another's */
            cc_debug("beat: run %s: not sent by this beat: %s", run_id, err.msg);
        else
            store_failed(bt, "send claim", &err);
        json_decref(kwargs);
        return rc;
    }
    opt = json_object_get(job, "options");
    memset(&s, 0, sizeof(s));
    s.task = json_string_value(json_object_get(job, "task"));
    s.task_id = task_id;
    s.args = json_object_get(run, "args");
    s.kwargs = kwargs;
    s.queue = json_string_value(json_object_get(run, "queue"));
    if (s.queue == NULL)
        s.queue = json_string_value(json_object_get(job, "queue"));
    s.exchange = json_string_value(json_object_get(opt, "exchange"));
    s.routing_key = json_string_value(json_object_get(opt, "routing_key"));
    v = json_object_get(opt, "priority");
    s.priority = json_is_integer(v) ? (int)json_integer_value(v) : -1;
    v = json_object_get(opt, "expires");
    s.expires_s = json_is_number(v) ? json_number_value(v) : 0;
    s.run_id = run_id;
    if (!json_is_array(s.args))
        s.args = json_object_get(job, "args");
    if (entry != NULL)
        cc_info("Scheduler: Sending due task %s (%s)", entry, s.task ? s.task : "?");
    else
        cc_info("Scheduler: Sending run %s of job %s (%s)", run_id, job_id, s.task ? s.task : "?");
    rc = s.task != NULL ? beat_publish(bt, &s, &seq, &err)
                        : cc_err_set(&err, CC_EINVAL, "job has no task");
    json_decref(kwargs);
    is_written = rc == CC_OK;
    if (is_written)
        rc = beat_wait_confirms(bt, seq, &err);
    if (is_written && (rc == CC_ETIMEDOUT || rc == CC_EAGAIN)) {
        /* Written, then no confirm in time or the broker blocked the connection: the message
         * is in the broker's hands (a blocked connection's bytes are read once the alarm is
         * lifted). Sending it again would run it twice: the claim stands. */
        cc_warn("beat: run %s: %s; its message was written and is not sent again (if the run "
                "never starts, `celeryc jobs stop` it)",
                run_id, err.msg);
        rc = CC_OK;
        goto sent;
    }
    if (rc != CC_OK) {
        if (is_written && rc != CC_ENOTFOUND_Q)
            broker_lost(bt);
        /* Not published (lease lapsed, broker down or blocked before the write, returned,
         * nacked) or, connection lost after the write, not known: give the claim back. A
         * deposed leader wakes the new one; the leader retries on its own sweep. (So a broker
         * failure in the middle of a publish may send a run twice, as before; a freeze does
         * not lose the connection: it has no heartbeats, and the confirm of a publish written
         * before the freeze is read when the process resumes.) */
        run_send_undo(bt, run_id, epoch, is_lease_lost(&err));
        if (!is_lease_lost(&err))
            run_send_failed(bt, run_id, &err);
        return rc;
    }
sent:
    bt->dispatched++;
    if (slot_us != 0 && !is_catchup)
        stats_add(bt, cc_now_us() - slot_us);
    log_sent(entry != NULL ? entry : run_id, slot_us, task_id);
    json_object_del(bt->run_attempts, run_id);
    return CC_OK;
}

/* A retry waits for its not_before (the backoff), often shorter than BEAT_SWEEP_S: note the
 * not_before of the retries this beat queued... */
static void retry_wake_note(struct beat *bt, const json_t *runs)
{
    const json_t *r;
    size_t i;

    json_array_foreach(runs, i, r)
    {
        const char *id = json_string_value(json_object_get(r, "id"));
        const char *nb = json_string_value(json_object_get(r, "not_before"));
        int64_t us;

        if (id != NULL && nb != NULL && cc_isotime_parse(nb, &us) == CC_OK &&
            json_object_size(bt->retry_wake) < 10000)
            json_object_set_new(bt->retry_wake, id, json_integer(us));
    }
}

/* ... and bring the next sweep forward to the earliest one still ahead (those that passed
 * were sent by this sweep, or are left to the regular ones). */
static void retry_wake_plan(struct beat *bt)
{
    int64_t now = cc_now_us(), first = INT64_MAX;
    const char *id;
    json_t *v;
    void *tmp;

    json_object_foreach_safe(bt->retry_wake, tmp, id, v)
    {
        int64_t us = json_integer_value(v);

        if (us <= now)
            json_object_del(bt->retry_wake, id);
        else if (us < first)
            first = us;
    }
    if (first != INT64_MAX) {
        int64_t at = cc_mono_us() + (first - now) + BEAT_RETRY_SLACK_US;

        if (at < bt->sweep_next_mono)
            bt->sweep_next_mono = at;
    }
}

/* Leader sweeps: reaper, retries, unsent runs. */
static void sweep(struct beat *bt)
{
    struct cc_err err = {0};
    json_t *out = NULL, *run;
    int n = 0;
    size_t i;

    bt->want_sweep = false;
    bt->sweep_next_mono = cc_mono_us() + BEAT_SWEEP_S * 1000000LL;
    if (cc_jobstore_reap(bt->st, bt->cfg->beat_run_heartbeat_timeout_s, &n, &err) != CC_OK) {
        store_failed(bt, "reap", &err);
        return;
    }
    if (n > 0)
        cc_warn("beat: reaper: %d run(s) without a worker heartbeat for %d s marked failed", n,
                bt->cfg->beat_run_heartbeat_timeout_s);
    if (cc_jobstore_runs_retry(bt->st, bt->epoch, BEAT_LEASE_NAME, &out, &err) != CC_OK) {
        if (err.code == CC_EAGAIN)
            step_down(bt, err.msg);
        else
            store_failed(bt, "retry", &err);
        return;
    }
    if (json_array_size(out) > 0)
        cc_info("beat: %zu failed run(s) queued again for retry", json_array_size(out));
    retry_wake_note(bt, out);
    json_decref(out);
    out = NULL;
    if (cc_jobstore_runs_unsent(bt->st, 0, BEAT_UNSENT_LIMIT, &out, &err) != CC_OK) {
        store_failed(bt, "unsent runs", &err);
        return;
    }
    json_array_foreach(out, i, run)
    {
        if (!may_dispatch(bt) || !bt->st_ok)
            break;
        if (!bt->b_ok && broker_ensure(bt, &err) != CC_OK)
            break; /* broker away: not an attempt of these runs; sent once it is back */
        (void)run_send(bt, run, NULL, 0, false);
    }
    json_decref(out);
    retry_wake_plan(bt);
}

/* NOTIFY celeryc_runs for a run now C (cancelling): `replace` from a manual run, or `celeryc
 * jobs stop`, which sends its own revoke; a second revoke is harmless, a missing one would
 * leave the task running. */
static void runs_apply_changes(struct beat *bt)
{
    const char *id;
    json_t *v;
    void *tmp;

    json_object_foreach_safe(bt->runs_changed, tmp, id, v)
    {
        json_t *run = NULL;
        struct cc_err err = {0};
        int rc = cc_jobstore_run_get(bt->st, id, &run, &err);

        if (rc != CC_OK && rc != CC_ENOTFOUND) {
            store_failed(bt, "run", &err);
            return;
        }
        if (rc == CC_OK) {
            const char *st = json_string_value(json_object_get(run, "status"));
            const char *tid = json_string_value(json_object_get(run, "task_id"));

            if (st != NULL && strcmp(st, "C") == 0 && tid != NULL)
                beat_revoke(bt, tid, true);
        }
        json_decref(run);
        json_object_del(bt->runs_changed, id);
    }
}

/* ---- Dispatch ---------------------------------------------------------------------------- */

enum { DISPATCH_DONE, DISPATCH_RETRY, DISPATCH_STOP };

static void entry_advance(struct beat *bt, struct beat_entry *e, bool sent)
{
    struct cc_err err = {0};

    if (cc_beat_sched_entry_step(e, sent, &err) != CC_OK) {
        cc_error("beat: %s: %s: the entry is disabled", e->name, err.msg);
        cc_beat_sched_heap_remove(&bt->heap, e);
        return;
    }
    cc_beat_sched_heap_fix(&bt->heap, e);
    if (!e->is_job) {
        if (bt->n_dirty == bt->cap_dirty) {
            bt->cap_dirty = bt->cap_dirty ? bt->cap_dirty * 2 : 256;
            bt->dirty = cc_xrealloc(bt->dirty, bt->cap_dirty * sizeof(*bt->dirty));
        }
        bt->dirty[bt->n_dirty++] = e;
    }
}

static void entry_retry(struct beat *bt, struct beat_entry *e, const struct cc_err *why)
{
    int64_t wait = backoff_us(e->attempts++);

    cc_error("beat: %s: not sent (attempt %d): %s; retrying in %d s", e->name, e->attempts,
             why->msg, (int)(wait / 1000000));
    e->wake_us = cc_now_us() + wait;
    cc_beat_sched_heap_fix(&bt->heap, e);
}

/* The broker connection failed under a publish: the entry stays due, without an attempt
 * counted or a line of its own; it is sent once the broker is connected again (dispatch_due
 * waits for that). Its task id is kept (store mode: the slot stays claimed by this beat). */
static void entry_hold(struct beat *bt, struct beat_entry *e)
{
    e->wake_us = e->slot_us;
    cc_beat_sched_heap_fix(&bt->heap, e);
}

static void entry_route(const struct beat *bt, const struct beat_entry *e, char *buf, size_t size)
{
    const char *queue = e->queue ? e->queue : bt->cfg->default_queue;

    if (e->exchange != NULL)
        snprintf(buf, size, "exchange '%s' routing key '%s'", e->exchange,
                 e->routing_key ? e->routing_key : queue);
    else
        snprintf(buf, size, "exchange '' routing key '%s'", queue);
}

/* Same queue, exchange and routing key (interned strings: the pointers compare). */
static bool same_route(const struct beat_entry *a, const struct beat_entry *b)
{
    return a->queue == b->queue && a->exchange == b->exchange && a->routing_key == b->routing_key;
}

/* Wait for the confirms of the pipelined batch and settle its entries: confirmed -> next
 * slot; otherwise each is retried (an unroutable batch: every message of it had the same
 * routing key, so all of them were returned). */
static void flush_pending(struct beat *bt)
{
    struct cc_err err = {0};
    int rc;

    broker_cork(bt, false);
    if (bt->n_pend == 0)
        return;
    if (bt->b_ok)
        rc = beat_wait_confirms(bt, bt->pend_seq, &err);
    else
        rc = cc_err_set(&err, CC_EBROKER, "broker connection lost before the confirms");
    if (rc == CC_ETIMEDOUT || rc == CC_EAGAIN) {
        /* Written, then no confirm in time or the connection blocked: the broker has them (a
         * blocked connection's bytes are read once the alarm is lifted); sending the slots
         * again would double them. */
        cc_warn("beat: %zu message(s): %s; counted as sent, not sent again", bt->n_pend, err.msg);
        rc = CC_OK;
    } else if (rc == CC_ENOTFOUND_Q) {
        char route[600];

        entry_route(bt, bt->pend_first, route, sizeof(route));
        cc_err_set(&err, CC_ENOTFOUND_Q,
                   "unroutable: no queue is bound for %s (start a worker for the queue first)",
                   route);
    } else if (rc != CC_OK) {
        broker_lost(bt);
        cc_error("beat: %zu message(s) not confirmed: %s; sent again once the broker is "
                 "connected",
                 bt->n_pend, err.msg);
    }
    for (size_t i = 0; i < bt->n_pend; i++) {
        struct beat_entry *e = bt->pend[i];

        if (rc == CC_ENOTFOUND_Q) {
            entry_retry(bt, e, &err);
            continue;
        }
        if (rc != CC_OK) {
            entry_hold(bt, e);
            continue;
        }
        bt->dispatched++;
        if (!e->is_catchup)
            stats_add(bt, cc_now_us() - e->slot_us);
        log_sent(e->name, e->slot_us, e->claimed_task_id);
        entry_advance(bt, e, true);
    }
    bt->n_pend = 0;
}

static int dispatch_file(struct beat *bt, struct beat_entry *e)
{
    struct cc_err err = {0};
    struct beat_send s;
    json_t *args, *kwargs;
    uint64_t seq = 0;
    int rc;

    if (store_mode(bt) && e->claimed_slot_us == e->slot_us) {
        /* retrying a slot this beat claimed: same task id */
    } else {
        cc_uuid4(e->claimed_task_id);
        if (store_mode(bt)) {
            rc = cc_jobstore_entry_claim(bt->st, e->name, e->slot_us, bt->epoch, BEAT_LEASE_NAME,
                                         e->claimed_task_id, &err);
            if (rc == CC_EAGAIN && is_lease_lost(&err)) {
                step_down(bt, err.msg);
                return DISPATCH_STOP;
            }
            if (rc == CC_EAGAIN) { /* another beat sent this slot */
                cc_debug("beat: %s: slot already dispatched (%s)", e->name, err.msg);
                entry_advance(bt, e, false);
                return DISPATCH_DONE;
            }
            if (rc != CC_OK) {
                store_failed(bt, "claim", &err);
                entry_retry(bt, e, &err);
                return DISPATCH_STOP;
            }
            e->claimed_slot_us = e->slot_us;
        }
    }
    /* One batch per routing key (see flush_pending), at most BEAT_PIPELINE messages. */
    if (bt->n_pend > 0 && (!same_route(e, bt->pend_first) || bt->n_pend >= BEAT_PIPELINE))
        flush_pending(bt);
    if (cc_beat_sched_entry_args(e, &args, &kwargs) != CC_OK) {
        cc_err_set(&err, CC_ENOMEM, "out of memory");
        entry_retry(bt, e, &err);
        return DISPATCH_RETRY;
    }
    memset(&s, 0, sizeof(s));
    s.task = e->task;
    s.task_id = e->claimed_task_id;
    s.args = args;
    s.kwargs = kwargs;
    s.queue = e->queue;
    s.exchange = e->exchange;
    s.routing_key = e->routing_key;
    s.priority = e->priority;
    s.expires_s = e->expires_s;
    cc_info("Scheduler: Sending due task %s (%s)", e->name, e->task);
    rc = beat_publish(bt, &s, &seq, &err);
    json_decref(args);
    json_decref(kwargs);
    if (rc == CC_EAGAIN && is_lease_lost(&err)) {
        /* Deposed between the claim and the publish: that slot is not sent (at most once). */
        cc_warn("beat: %s: slot claimed but not sent: %s", e->name, err.msg);
        flush_pending(bt);
        return DISPATCH_STOP;
    }
    if (rc != CC_OK) {
        if (rc != CC_ENOTFOUND_Q)
            broker_lost(bt);
        flush_pending(bt); /* holds them too when the connection is gone */
        if (rc == CC_ENOTFOUND_Q) {
            entry_retry(bt, e, &err);
        } else {
            cc_error("beat: %s: not sent: %s; sent once the broker is connected", e->name, err.msg);
            entry_hold(bt, e);
        }
        return DISPATCH_RETRY;
    }
    if (bt->n_pend == bt->cap_pend) {
        bt->cap_pend = bt->cap_pend ? bt->cap_pend * 2 : 64;
        bt->pend = cc_xrealloc(bt->pend, bt->cap_pend * sizeof(*bt->pend));
    }
    if (bt->n_pend == 0)
        bt->pend_first = e;
    bt->pend[bt->n_pend++] = e;
    bt->pend_seq = seq;
    /* Out of the heap's way until its confirm settles it. */
    e->wake_us = INT64_MAX;
    cc_beat_sched_heap_fix(&bt->heap, e);
    return DISPATCH_DONE;
}

static int dispatch_job(struct beat *bt, struct beat_entry *e)
{
    struct cc_err err = {0};
    struct cc_run_new rn;
    const json_t *job = job_row(bt, e->job_id);
    json_t *run = NULL, *cancelled = NULL, *kwargs, *c;
    char slot_task_id[64] = "";
    size_t i;
    int rc;

    if (job == NULL) {
        cc_error("beat: %s: job not found", e->name);
        entry_advance(bt, e, false);
        return DISPATCH_DONE;
    }
    kwargs = kwargs_with_since(bt, job, e->kwargs, &err);
    if (kwargs == NULL) {
        store_failed(bt, "last success", &err);
        entry_retry(bt, e, &err);
        return DISPATCH_STOP;
    }
    memset(&rn, 0, sizeof(rn));
    rn.job_id = e->job_id;
    rn.scheduled_for_us = e->slot_us;
    rn.attempt = 1;
    rn.kwargs = kwargs;
    rn.epoch = bt->epoch;
    rn.lease = BEAT_LEASE_NAME;
    rc = cc_jobstore_run_create(bt->st, &rn, &run, &cancelled, &err);
    json_decref(kwargs);
    if (rc == CC_EAGAIN && is_lease_lost(&err)) {
        step_down(bt, err.msg);
        return DISPATCH_STOP;
    }
    if (rc != CC_OK && rc != CC_EAGAIN) {
        store_failed(bt, "run create", &err);
        entry_retry(bt, e, &err);
        return DISPATCH_STOP;
    }
    if (rc == CC_EAGAIN) {
        /* forbid (a run is queued or running) or the slot's run exists already. */
        if (strncmp(err.msg, "exists", 6) != 0)
            cc_info("Scheduler: skipping %s for this slot: %s", e->name, err.msg);
    } else {
        const char *tid = json_string_value(json_object_get(run, "task_id"));

        snprintf(slot_task_id, sizeof(slot_task_id), "%s", tid ? tid : "");
    }
    /* Record the slot (entry state for the next leader); "exists" is fine. */
    if (cc_jobstore_entry_claim(bt->st, e->name, e->slot_us, bt->epoch, BEAT_LEASE_NAME,
                                slot_task_id[0] ? slot_task_id : NULL, &err) != CC_OK) {
        if (is_lease_lost(&err)) {
            step_down(bt, err.msg);
            json_decref(run);
            json_decref(cancelled);
            return DISPATCH_STOP;
        }
        if (err.code != CC_EAGAIN)
            store_failed(bt, "claim", &err);
    }
    json_array_foreach(cancelled, i, c)
    {
        const char *tid = json_string_value(json_object_get(c, "task_id"));
        const char *st = json_string_value(json_object_get(c, "status"));

        cc_info("beat: %s: replace policy: cancelling run %s", e->name,
                json_string_value(json_object_get(c, "id")));
        /* As `celeryc jobs stop`: a started run (now C) is revoked with terminate, a queued
         * one (now X: the worker will not start it) with a plain revoke. */
        if (tid != NULL)
            beat_revoke(bt, tid, st == NULL || strcmp(st, "C") == 0);
    }
    json_decref(cancelled);
    if (run != NULL) {
        /* A failed send leaves the run Q and unsent: the sweep retries it, then fails it. */
        (void)run_send(bt, run, e->name, e->slot_us, e->is_catchup);
        json_decref(run);
    }
    entry_advance(bt, e, run != NULL);
    return DISPATCH_DONE;
}

/* Dispatch every due entry, within a time budget (signals, the lease, the store wait). */
static void dispatch_due(struct beat *bt, volatile bool *stop)
{
    int64_t start = cc_mono_us();
    int n = 0;

    while (!*stop && may_dispatch(bt) && (!store_mode(bt) || bt->st_ok)) {
        struct beat_entry *e = cc_beat_sched_heap_top(&bt->heap);
        int64_t now = cc_now_us();
        int64_t merged;
        int rc;

        if (e == NULL || e->wake_us > now)
            break;
        /* Broker away: every due entry waits for it, in the heap, unchanged (the loop sleeps
         * until the next connection attempt, at most a second away). */
        if (!bt->b_ok) {
            struct cc_err err = {0};

            if (broker_ensure(bt, &err) != CC_OK)
                break;
        }
        merged = cc_beat_sched_entry_coalesce(e, now);
        if (merged > 0)
            cc_warn("beat: %s: %" PRId64 " slot(s) passed unsent (loop busy or broker away): "
                    "one run for the latest",
                    e->name, merged);
        if (e->is_job)
            flush_pending(bt); /* run messages are confirmed one by one */
        rc = e->is_job ? dispatch_job(bt, e) : dispatch_file(bt, e);
        if (rc == DISPATCH_STOP)
            break;
        if (++n >= BEAT_BATCH_MAX || cc_mono_us() - start > BEAT_BATCH_US)
            break;
    }
    flush_pending(bt);
}

/* ---- Start-up ---------------------------------------------------------------------------- */

static int load_files(struct beat *bt, struct cc_err *err)
{
    const char *path = bt->cfg->beat_schedule_file;
    struct beat_entry **arr = NULL;
    size_t n = 0;
    int rc;

    if (path == NULL || *path == '\0')
        return CC_OK;
    rc = cc_beat_sched_file_load(path, bt->cfg->timezone, &arr, &n, err);
    if (rc != CC_OK)
        return rc;
    bt->files = arr;
    bt->n_files = n;
    for (size_t i = 0; i < n; i++)
        cc_beat_sched_index_put(&bt->ix, arr[i]);
    cc_info("beat: %zu entr%s from %s", n, n == 1 ? "y" : "ies", path);
    return CC_OK;
}

/* After every pass: the slots sent since the last one go to the journal, a snapshot when the
 * journal has outgrown the entries (or an append failed), both written by the state writer
 * thread (the loop never waits for the disk). At exit (`is_final`) the writer finishes its
 * queue and stops, and the snapshot is written here. */
static void save_state(struct beat *bt, bool is_final)
{
    struct cc_err err = {0};
    const char *path = bt->cfg->beat_state_file;
    bool snapshot = bt->sw != NULL && cc_beat_sched_state_writer_take_failed(bt->sw);

    if (store_mode(bt))
        return;
    if (bt->n_dirty > 0) {
        if (bt->sw != NULL) {
            cc_beat_sched_state_writer_append(bt->sw, bt->dirty, bt->n_dirty);
        } else if (cc_beat_sched_state_append(path, bt->dirty, bt->n_dirty, &err) != CC_OK) {
            cc_error("beat: %s", err.msg);
            snapshot = true; /* the snapshot may still be writable */
        }
        bt->journal_lines += bt->n_dirty;
        bt->n_dirty = 0;
    }
    if (is_final) {
        cc_beat_sched_state_writer_stop(bt->sw);
        bt->sw = NULL;
        snapshot = snapshot || bt->journal_lines > 0;
    } else if (bt->journal_lines > 1000 && bt->journal_lines > 2 * bt->n_files) {
        snapshot = true;
    }
    if (!snapshot)
        return;
    if (bt->sw != NULL) {
        if (cc_beat_sched_state_writer_snapshot(bt->sw, bt->files, bt->n_files))
            bt->journal_lines = 0;
    } else if (cc_beat_sched_state_save(path, bt->files, bt->n_files, &err) != CC_OK) {
        cc_error("beat: %s", err.msg);
    } else {
        bt->journal_lines = 0;
    }
}

/* `--print-next N [--now ISO]` (hidden, for tests): the next N slots of every entry of the
 * schedule file after now, as a new entry would get them, one "NAME ISO" line each. */
static int print_next(struct beat *bt, int count, int64_t now)
{
    for (size_t i = 0; i < bt->n_files; i++) {
        struct beat_entry *e = bt->files[i];
        int64_t t = now;

        for (int k = 0; k < count; k++) {
            struct cc_err err = {0};
            char b[40];

            if (cc_beat_sched_next_after(e, t, &t, &err) != CC_OK) {
                fprintf(stderr, "%s: %s\n", e->name, err.msg);
                return 1;
            }
            printf("%s %s\n", e->name, cc_isotime_format(t, 1, b, sizeof(b)));
        }
    }
    return 0;
}

static void beat_free(struct beat *bt)
{
    for (size_t i = 0; i < bt->ix.nb; i++) {
        struct beat_entry *e = bt->ix.b[i];

        while (e != NULL) {
            struct beat_entry *nx = e->hnext;

            cc_beat_sched_entry_free(e);
            e = nx;
        }
    }
    free(bt->files);
    cc_beat_sched_index_deinit(&bt->ix);
    cc_beat_sched_heap_deinit(&bt->heap);
    json_decref(bt->jobs);
    json_decref(bt->jobs_changed);
    json_decref(bt->run_attempts);
    json_decref(bt->runs_changed);
    json_decref(bt->retry_wake);
    json_decref(bt->undo);
    free(bt->lat_hist);
    free(bt->pend);
    free(bt->dirty);
    cc_beat_sched_caches_free();
}

static int usr1_init(void)
{
    struct sigaction sa;

    if (pipe(beat_usr1_pipe) != 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        int fl = fcntl(beat_usr1_pipe[i], F_GETFL);

        fcntl(beat_usr1_pipe[i], F_SETFL, fl | O_NONBLOCK);
        fcntl(beat_usr1_pipe[i], F_SETFD, FD_CLOEXEC);
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = beat_on_usr1;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    return sigaction(SIGUSR1, &sa, NULL);
}

/* ---- The loop ---------------------------------------------------------------------------- */

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

static int beat_run(struct beat *bt)
{
    volatile bool stop = false;
    struct cc_err err = {0};

    if (cc_signals_init(&err) != CC_OK || usr1_init() != 0) {
        cc_crit("beat: signals: %s", err.msg);
        return 1;
    }
    if (!store_mode(bt)) {
        if (cc_beat_sched_state_load(bt->cfg->beat_state_file, state_file_entry, bt, &err) !=
            CC_OK) {
            cc_crit("beat: %s", err.msg);
            return BEAT_EX_CONFIG;
        }
        replan_all(bt, NULL);
        release_free_memory();
        if (cc_beat_sched_state_writer_start(&bt->sw, bt->cfg->beat_state_file, &err) != CC_OK)
            cc_warn("beat: %s: writing the state file from the loop", err.msg);
        cc_info("beat: state in %s (no job store: this beat dispatches)", bt->cfg->beat_state_file);
    } else {
        replan_all(bt, NULL); /* standby until the lease says otherwise */
        if (store_ensure(bt) == CC_OK)
            jobs_reload(bt);
    }
    (void)broker_ensure(bt, &err);
    cc_info("beat: Starting...");

    while (!stop) {
        struct pollfd pfd[4];
        int nfd = 0;
        struct timespec ts;
        int64_t now_mono = cc_mono_us(), wait_us;
        struct cc_sig_counts sc = cc_signals_take();
        char buf[16];

        if (sc.term || sc.intr || sc.quit) {
            stop = true;
            break;
        }
        while (read(beat_usr1_pipe[0], buf, sizeof(buf)) > 0)
            ;
        if (beat_usr1) {
            beat_usr1 = 0;
            stats_log(bt);
        }
        if (store_mode(bt)) {
            /* Back from an outage: renew the lease before dispatching anything. */
            if (!bt->st_ok && store_ensure(bt) == CC_OK)
                bt->lease_next_mono = 0;
            if (cc_mono_us() >= bt->lease_next_mono)
                lease_tick(bt);
            store_drain(bt);
            if (bt->st_ok && (bt->want_reload || now_mono >= bt->reload_next_mono))
                jobs_reload(bt);
            if (bt->st_ok && json_object_size(bt->jobs_changed) > 0)
                jobs_apply_changes(bt);
            if (bt->st_ok && may_dispatch(bt) &&
                (bt->want_sweep || cc_mono_us() >= bt->sweep_next_mono))
                sweep(bt);
            if (bt->st_ok && may_dispatch(bt) && json_object_size(bt->runs_changed) > 0)
                runs_apply_changes(bt);
            else if (!bt->is_leader)
                json_object_clear(bt->runs_changed);
        }
        dispatch_due(bt, &stop);
        save_state(bt, false);

        /* Sleep until the next due entry, the lease, the sweep, or max_loop_interval. */
        wait_us = (int64_t)(bt->cfg->beat_max_loop_interval_s * 1e6);
        if (may_dispatch(bt) && (!store_mode(bt) || bt->st_ok) &&
            cc_beat_sched_heap_top(&bt->heap) != NULL) {
            int64_t due_in = cc_beat_sched_heap_top(&bt->heap)->wake_us - cc_now_us();

            if (due_in <= 0 && !bt->b_ok) /* due, but the broker is away: its next attempt */
                due_in = bt->b_retry_mono - cc_mono_us();
            wait_us = min64(wait_us, due_in);
        }
        if (store_mode(bt)) {
            now_mono = cc_mono_us();
            wait_us = min64(wait_us, bt->lease_next_mono - now_mono);
            if (!bt->st_ok)
                wait_us = min64(wait_us, bt->st_retry_mono - now_mono);
            if (bt->is_leader)
                wait_us = min64(wait_us, bt->sweep_next_mono - now_mono);
            /* Work left for the next pass, only what this beat will do then: a standby
             * never sweeps (its want_sweep waits until it leads: becoming leader sweeps
             * anyway), and nothing is done while the store is away (its retry bounds the
             * wait above). */
            if (bt->st_ok && ((bt->want_sweep && bt->is_leader) || bt->want_reload ||
                              json_object_size(bt->jobs_changed) > 0))
                wait_us = 0;
        }
        if (wait_us < 0)
            wait_us = 0;
        /* ppoll: to the microsecond (poll's milliseconds made every wake-up up to 1 ms late). */
        ts.tv_sec = (time_t)(wait_us / 1000000);
        ts.tv_nsec = (long)(wait_us % 1000000) * 1000;
        pfd[nfd++] = (struct pollfd){.fd = cc_signals_fd(), .events = POLLIN};
        pfd[nfd++] = (struct pollfd){.fd = beat_usr1_pipe[0], .events = POLLIN};
        if (store_mode(bt) && bt->st_ok && cc_jobstore_fd(bt->st) >= 0)
            pfd[nfd++] = (struct pollfd){.fd = cc_jobstore_fd(bt->st), .events = POLLIN};
        if (bt->b_ok && cc_broker_fd(&bt->b) >= 0)
            pfd[nfd++] = (struct pollfd){.fd = cc_broker_fd(&bt->b), .events = POLLIN};
        if (ppoll(pfd, (nfds_t)nfd, &ts, NULL) < 0 && errno != EINTR) {
            cc_crit("beat: poll: %s", strerror(errno));
            break;
        }
        /* The broker only talks to a publisher to close it or block it: read that now. */
        if (bt->b_ok && cc_broker_has_readable(&bt->b) && cc_broker_poll(&bt->b, &err) != CC_OK) {
            cc_warn("beat: broker connection lost: %s", err.msg);
            broker_lost(bt);
        }
    }

    cc_info("beat: shutting down");
    save_state(bt, true);
    if (store_mode(bt))
        undo_pending(bt);
    if (store_mode(bt) && bt->st_ok && bt->is_leader) {
        if (cc_jobstore_lease_release(bt->st, BEAT_LEASE_NAME, bt->holder, &err) != CC_OK)
            cc_warn("beat: lease release: %s", err.msg);
        else
            cc_info("beat: lease released");
    }
    stats_log(bt);
    return 0;
}

static void beat_usage(void)
{
    printf("Usage: celeryc beat [OPTIONS]\n\n"
           "Start the periodic task scheduler: sends the schedule file's entries and the job\n"
           "store's jobs when due (Celery protocol 2). With a job store several beats may run;\n"
           "one holds the lease and dispatches.\n\n");
    cc_config_usage(stdout, CC_CMD_BEAT);
}

int cc_beat_main(int argc, char **argv)
{
    struct cc_config cfg;
    struct beat bt;
    struct cc_err err = {0};
    char host[256];
    char **av = cc_xcalloc((size_t)argc + 1, sizeof(*av));
    int ac = 0, print_n = 0, status;
    int64_t print_now = 0;

    /* Hidden test options, removed before the option table sees argv. */
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--print-next") == 0 && i + 1 < argc) {
            print_n = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--now") == 0 && i + 1 < argc) {
            if (cc_isotime_parse(argv[++i], &print_now) != CC_OK) {
                fprintf(stderr, "celeryc beat: --now: not an ISO-8601 time\n");
                free(av);
                return 2;
            }
        } else {
            av[ac++] = argv[i];
        }
    }
    status = cc_config_load(&cfg, CC_CMD_BEAT, ac, av, environ, &err);
    free(av);
    if (status == CC_EAGAIN) {
        beat_usage();
        cc_config_deinit(&cfg);
        return 0;
    }
    if (status != CC_OK) {
        fprintf(stderr, "celeryc beat: error: %s\n", err.msg);
        cc_config_deinit(&cfg);
        return status == CC_EUSAGE ? 2 : BEAT_EX_CONFIG;
    }
    cc_log_init(cfg.loglevel, (enum cc_log_format)cfg.log_format, -1);
    cc_log_set_process("MainProcess");

    memset(&bt, 0, sizeof(bt));
    bt.cfg = &cfg;
    bt.ttl_ms = (int64_t)(cfg.beat_lease_ttl_s * 1000.0);
    bt.jobs = json_object();
    bt.jobs_changed = json_object();
    bt.run_attempts = json_object();
    bt.runs_changed = json_object();
    bt.retry_wake = json_object();
    bt.undo = json_object();
    bt.tls = (struct cc_broker_tls){
        .ca_file = cfg.broker_ssl_ca_certs,
        .cert_file = cfg.broker_ssl_certfile,
        .key_file = cfg.broker_ssl_keyfile,
        .is_verify = cfg.broker_ssl_verify != CC_SSL_VERIFY_NONE,
    };
    if (gethostname(host, sizeof(host)) != 0)
        strcpy(host, "localhost");
    host[sizeof(host) - 1] = '\0';
    snprintf(bt.origin, sizeof(bt.origin), "gen%ld@%s", (long)getpid(), host);
    snprintf(bt.holder, sizeof(bt.holder), "%s:%ld", host, (long)getpid());
    cc_uuid4(bt.oid);

    status = 0;
    if (cc_beat_sched_tz_get(cfg.timezone, &err) == NULL) {
        fprintf(stderr, "celeryc beat: error: timezone: %s\n", err.msg);
        status = BEAT_EX_CONFIG;
    } else if (load_files(&bt, &err) != CC_OK) {
        fprintf(stderr, "celeryc beat: error: %s\n", err.msg);
        status = BEAT_EX_CONFIG;
    } else if (print_n > 0) {
        status = print_next(&bt, print_n, print_now ? print_now : cc_now_us());
    } else if (bt.n_files == 0 && !store_mode(&bt)) {
        fprintf(stderr, "celeryc beat: error: nothing to schedule: give --schedule-file FILE "
                        "and/or --job-store URL\n");
        status = 2;
    } else {
        status = beat_run(&bt);
    }
    if (bt.b_ok)
        cc_broker_close(&bt.b);
    cc_jobstore_close(bt.st);
    beat_free(&bt);
    cc_signals_deinit();
    cc_config_deinit(&cfg);
    return status;
}
