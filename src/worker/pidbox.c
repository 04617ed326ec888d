/* Remote control: the pidbox node. See control.h and celery-wire.md §5.
 *
 * Design. Requests arrive on channel 2 (no_ack) of the consuming connection and are handled
 * at once in the master's loop: every command only reads the master's bookkeeping (through
 * cc_pidbox_ops) or flips state the loop acts on. Replies are published on the same
 * channel, to reply_to.exchange with reply_to.routing_key, headers {ticket, clock}, body
 * {"<hostname>": reply}; casts (no ticket / reply_to) get no reply, nor does shutdown.
 *
 * Revoked set: a JSON object {id: epoch seconds} bounded as Celery's LimitedSet (50 000 ids,
 * 3 h). worker_state_db: a text file, one line "<epoch seconds> <id>" per revoke, appended
 * and flushed at once (a crash loses nothing written), compacted at exit.
 */
#include <errno.h>
#include <float.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "celeryc/version.h"
#include "pidbox.h"
#include "events.h"
#include "isotime.h"
#include "log.h"
#include "pyrepr.h"
#include "taskrun.h"
#include "url.h"
#include "util.h"

#include "control.h"

/* ---- Lamport clock -------------------------------------------------------------------- */

/* One Lamport clock per process: the events dispatcher's when there is one (events and
 * pidbox replies then share it, as in Celery's app.clock), else our own. */
uint64_t cc_pidbox_clock_forward(struct cc_pidbox *c)
{
    struct cc_events *ev = cc_events_get();

    return c->clock = ev != NULL ? cc_events_clock_forward(ev) : c->clock + 1;
}

void cc_pidbox_clock_adjust(struct cc_pidbox *c, uint64_t other)
{
    struct cc_events *ev = cc_events_get();

    if (ev != NULL)
        c->clock = cc_events_clock_adjust(ev, other);
    else
        c->clock = (other > c->clock ? other : c->clock) + 1;
}

/* ---- Revoked set ---------------------------------------------------------------------- */

static double control_now(void)
{
    return (double)cc_now_us() / 1e6;
}

static void control_revoked_purge(struct cc_pidbox *c, double now)
{
    const char *k;
    json_t *v;
    void *tmp;

    json_object_foreach_safe(c->revoked, tmp, k, v)
    {
        if (now - json_real_value(v) > CC_PIDBOX_REVOKE_EXPIRES_S ||
            json_object_size(c->revoked) > CC_PIDBOX_REVOKES_MAX)
            json_object_del(c->revoked, k);
        else
            break; /* insertion order: the rest are newer */
    }
}

static void control_revoked_put(struct cc_pidbox *c, const char *id, double ts)
{
    json_object_del(c->revoked, id); /* re-inserted last: newest */
    json_object_set_new(c->revoked, id, json_real(ts));
    if (json_object_size(c->revoked) > CC_PIDBOX_REVOKES_MAX)
        control_revoked_purge(c, ts);
}

/* Fleet-wide revokes: read what other workers added to CC_PIDBOX_REVOKED_KEY since the last
 * look (with 5 s of overlap for clock skew between writers), or everything younger than
 * CC_PIDBOX_REVOKE_EXPIRES_S at start. */
static void control_revoked_sync(struct cc_pidbox *c)
{
    char lo[48];
    const char *argv[5];
    redisReply *rep;
    double now = control_now();

    c->synced_mono_us = cc_mono_us();
    if (c->kv == NULL || !cc_redeliver_kv_usable(c->kv))
        return;
    if (c->synced_max_score > 0)
        snprintf(lo, sizeof(lo), "%.0f", c->synced_max_score - 5000);
    else
        snprintf(lo, sizeof(lo), "%.0f", (now - CC_PIDBOX_REVOKE_EXPIRES_S) * 1000);
    argv[0] = "ZRANGEBYSCORE";
    argv[1] = CC_PIDBOX_REVOKED_KEY;
    argv[2] = lo;
    argv[3] = "+inf";
    argv[4] = "WITHSCORES";
    rep = cc_redeliver_kv_cmd(c->kv, 5, argv, NULL);
    if (rep == NULL)
        return;
    if (rep->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i + 1 < rep->elements; i += 2) {
            const redisReply *m = rep->element[i], *sc = rep->element[i + 1];
            double score;

            if (m->type != REDIS_REPLY_STRING || sc->type != REDIS_REPLY_STRING)
                continue;
            score = strtod(sc->str, NULL);
            if (score > c->synced_max_score)
                c->synced_max_score = score;
            if (json_object_get(c->revoked, m->str) == NULL)
                control_revoked_put(c, m->str, score / 1000);
        }
    }
    freeReplyObject(rep);
}

static void control_revoked_publish(struct cc_pidbox *c, const char *id, double now)
{
    char score[32], old_ms[32];
    const char *add[4] = {"ZADD", CC_PIDBOX_REVOKED_KEY, score, id};
    const char *trim[4] = {"ZREMRANGEBYSCORE", CC_PIDBOX_REVOKED_KEY, "-inf", old_ms};
    redisReply *rep;

    if (c->kv == NULL || !cc_redeliver_kv_usable(c->kv))
        return;
    snprintf(score, sizeof(score), "%.0f", now * 1000);
    snprintf(old_ms, sizeof(old_ms), "%.0f", (now - CC_PIDBOX_REVOKE_EXPIRES_S) * 1000);
    if ((rep = cc_redeliver_kv_cmd(c->kv, 4, add, NULL)) != NULL)
        freeReplyObject(rep);
    if ((rep = cc_redeliver_kv_cmd(c->kv, 4, trim, NULL)) != NULL) /* expired ones */
        freeReplyObject(rep);
}

void cc_pidbox_revoke_add(struct cc_pidbox *c, const char *id)
{
    double now = control_now();

    control_revoked_put(c, id, now);
    if (c->statedb != NULL) {
        fprintf(c->statedb, "%.6f %s\n", now, id);
        fflush(c->statedb);
    }
    control_revoked_publish(c, id, now);
}

bool cc_pidbox_is_revoked(struct cc_pidbox *c, const char *id)
{
    if (id == NULL || c->revoked == NULL)
        return false;
    if (c->kv != NULL && cc_mono_us() - c->synced_mono_us >= CC_PIDBOX_REVOKED_SYNC_US)
        control_revoked_sync(c);
    return json_object_get(c->revoked, id) != NULL;
}

static int control_statedb_load(struct cc_pidbox *c, const char *path, struct cc_err *err)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    double now = control_now();

    if (f == NULL) {
        if (errno != ENOENT)
            return cc_err_set(err, CC_EIO, "worker_state_db %s: %s", path, strerror(errno));
    } else {
        /* "<epoch> <id>" lines of any length (no fixed buffer: a revoked id is as long as a
         * message may make it, issue #14). */
        while ((len = getline(&line, &cap, f)) > 0) {
            char *end, *id;
            double ts = strtod(line, &end);

            if (end == line || *end != ' ')
                continue;
            id = end + 1;
            if (line[len - 1] == '\n')
                line[len - 1] = '\0';
            if (id[0] != '\0' && now - ts <= CC_PIDBOX_REVOKE_EXPIRES_S)
                control_revoked_put(c, id, ts);
        }
        free(line);
        fclose(f);
    }
    c->statedb = fopen(path, "a");
    if (c->statedb == NULL)
        return cc_err_set(err, CC_EIO, "worker_state_db %s: %s", path, strerror(errno));
    if (json_object_size(c->revoked) > 0)
        cc_info("Loaded %zu revoked task ids from %s", json_object_size(c->revoked), path);
    return CC_OK;
}

static void control_statedb_compact(struct cc_pidbox *c)
{
    const char *path = c->cfg->state_db;
    char tmp[4096];
    const char *k;
    json_t *v;
    FILE *f;

    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    f = fopen(tmp, "w");
    if (f == NULL) {
        cc_warn("worker_state_db %s: cannot compact: %s", tmp, strerror(errno));
        return;
    }
    control_revoked_purge(c, control_now());
    json_object_foreach(c->revoked, k, v) fprintf(f, "%.6f %s\n", json_real_value(v), k);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        cc_warn("worker_state_db %s: cannot compact: %s", path, strerror(errno));
        unlink(tmp);
    }
}

/* ---- Life cycle ----------------------------------------------------------------------- */

static void control_queue_add(struct cc_pidbox *c, const char *name, const char *exchange,
                              const char *type, const char *rk, bool is_config)
{
    struct cc_pidbox_queue *q;

    c->queues = cc_xrealloc(c->queues, (c->n_queues + 1) * sizeof(*c->queues));
    q = &c->queues[c->n_queues++];
    memset(q, 0, sizeof(*q));
    q->name = cc_xstrdup(name);
    q->exchange = cc_xstrdup(exchange);
    q->exchange_type = cc_xstrdup(type);
    q->routing_key = cc_xstrdup(rk);
    q->is_active = true;
    q->is_config = is_config;
}

static struct cc_pidbox_queue *control_queue_find(struct cc_pidbox *c, const char *name)
{
    for (size_t i = 0; i < c->n_queues; i++)
        if (strcmp(c->queues[i].name, name) == 0)
            return &c->queues[i];
    return NULL;
}

int cc_pidbox_init(struct cc_pidbox *c, const struct cc_config *cfg, const char *hostname,
                   struct cc_broker *broker, struct cc_pool *pool, struct cc_ratelimit *rl,
                   struct cc_redeliver_kv *kv, const struct cc_pidbox_ops *ops, struct cc_err *err)
{
    const char *dq = cfg->default_queue ? cfg->default_queue : "celery";
    size_t len = strlen(hostname) + sizeof(".celery.pidbox");

    memset(c, 0, sizeof(*c));
    c->cfg = cfg;
    c->hostname = hostname;
    c->broker = broker;
    c->pool = pool;
    c->rl = rl;
    c->ops = *ops;
    c->started_mono_us = cc_mono_us();
    c->is_events = false; /* [control] the events module owns -E; see cc_pidbox_is_events */
    c->queue_name = cc_xmalloc(len);
    snprintf(c->queue_name, len, "%s.celery.pidbox", hostname);
    c->total = json_object();
    c->revoked = json_object();
    c->terminated = json_object();
    c->rate_limits = json_object();
    c->time_limits = json_object();
    if (cfg->n_queues > 0)
        for (size_t i = 0; i < cfg->n_queues; i++)
            control_queue_add(c, cfg->queues[i], cfg->queues[i], "direct", cfg->queues[i], true);
    else
        control_queue_add(c, dq, dq, "direct", dq, true);
    c->kv = kv;
    if (cfg->state_db != NULL && cfg->state_db[0] != '\0') {
        int rc = control_statedb_load(c, cfg->state_db, err);

        if (rc != CC_OK)
            return rc;
    }
    if (kv != NULL) { /* revokes sent while we were away */
        size_t before = json_object_size(c->revoked);

        control_revoked_sync(c);
        if (json_object_size(c->revoked) > before)
            cc_info("Loaded %zu revoked task ids from Redis key " CC_PIDBOX_REVOKED_KEY,
                    json_object_size(c->revoked) - before);
    }
    return CC_OK;
}

void cc_pidbox_deinit(struct cc_pidbox *c)
{
    if (c == NULL)
        return;
    if (c->statedb != NULL) {
        fclose(c->statedb);
        control_statedb_compact(c);
    }
    for (size_t i = 0; i < c->n_queues; i++) {
        free(c->queues[i].name);
        free(c->queues[i].exchange);
        free(c->queues[i].exchange_type);
        free(c->queues[i].routing_key);
    }
    free(c->queues);
    free(c->queue_name);
    free(c->time_start);
    json_decref(c->total);
    json_decref(c->revoked);
    json_decref(c->terminated);
    json_decref(c->rate_limits);
    json_decref(c->time_limits);
    memset(c, 0, sizeof(*c));
}

static int control_consume_queue(struct cc_pidbox *c, struct cc_pidbox_queue *q, struct cc_err *err)
{
    struct cc_broker *b = c->broker;
    int rc = CC_OK;

    if (!q->is_config) { /* kombu: Queue(q, Exchange(ex, type), rk).declare() */
        rc = cc_broker_declare_exchange(b, q->exchange, q->exchange_type, true, err);
        if (rc == CC_OK)
            rc = cc_broker_declare_queue(b, q->name, c->cfg->queue_max_priority, err);
        if (rc == CC_OK)
            rc = cc_broker_bind(b, q->name, q->exchange, q->routing_key, err);
    }
    if (rc == CC_OK)
        rc = cc_broker_consume_on(b, b->channel, q->name, false, q->tag, sizeof(q->tag), err);
    return rc;
}

int cc_pidbox_attach(struct cc_pidbox *c, struct cc_err *err)
{
    struct cc_broker *b = c->broker;
    size_t i_cfg = 0;
    int rc;

    /* worker_declare consumed the configured queues in order: learn their tags. */
    for (size_t i = 0; i < c->n_queues; i++) {
        struct cc_pidbox_queue *q = &c->queues[i];

        q->tag[0] = '\0';
        if (q->is_config) {
            const char *t = cc_broker_consumer_tag(b, i_cfg++);
            snprintf(q->tag, sizeof(q->tag), "%s", t ? t : "");
        }
    }
    for (size_t i = 0; i < c->n_queues; i++) { /* re-apply add/cancel_consumer */
        struct cc_pidbox_queue *q = &c->queues[i];

        if (!q->is_active && q->tag[0] != '\0') {
            rc = cc_broker_cancel_on(b, b->channel, q->tag, err);
            q->tag[0] = '\0';
            if (rc != CC_OK)
                return rc;
        } else if (q->is_active && q->tag[0] == '\0') {
            rc = control_consume_queue(c, q, err);
            if (rc != CC_OK)
                return rc;
        }
    }
    rc = cc_broker_channel_open(b, CC_PIDBOX_CHANNEL, err);
    /* kombu Mailbox: Exchange('celery.pidbox', 'fanout', durable=False); the node's queue
     * Queue('<host>.celery.pidbox', durable=False, auto_delete=True, expires=10,
     * message_ttl=300) bound with routing key ''; replies to Exchange('reply.celery.pidbox',
     * 'direct', durable=False). */
    if (rc == CC_OK)
        rc = cc_broker_declare_exchange_on(b, CC_PIDBOX_CHANNEL, "celery.pidbox", "fanout", false,
                                           err);
    if (rc == CC_OK)
        rc = cc_broker_declare_queue_on(b, CC_PIDBOX_CHANNEL, c->queue_name, false, true, 10000,
                                        300000, err);
    if (rc == CC_OK)
        rc = cc_broker_bind_on(b, CC_PIDBOX_CHANNEL, c->queue_name, "celery.pidbox", "", err);
    if (rc == CC_OK)
        rc = cc_broker_declare_exchange_on(b, CC_PIDBOX_CHANNEL, "reply.celery.pidbox", "direct",
                                           false, err);
    if (rc == CC_OK)
        rc = cc_broker_consume_on(b, CC_PIDBOX_CHANNEL, c->queue_name, true, NULL, 0, err);
    return rc;
}

void cc_pidbox_on_start(struct cc_pidbox *c, int slot, const struct cc_request *r)
{
    json_t *n;

    if (c->time_start == NULL || slot >= c->n_slots) {
        int want = c->pool->n > slot + 1 ? c->pool->n : slot + 1;

        c->time_start = cc_xrealloc(c->time_start, (size_t)want * sizeof(*c->time_start));
        for (int i = c->n_slots; i < want; i++)
            c->time_start[i] = -1;
        c->n_slots = want;
    }
    c->time_start[slot] = control_now();
    c->n_accepted++;
    n = json_object_get(c->total, r->msg.task);
    if (n != NULL)
        json_integer_set(n, json_integer_value(n) + 1);
    else
        json_object_set_new(c->total, r->msg.task, json_integer(1));
}

uint64_t cc_pidbox_processed(const struct cc_pidbox *c)
{
    return c->n_accepted;
}

bool cc_pidbox_take_terminated(struct cc_pidbox *c, const char *id, int *signum)
{
    json_t *v = json_object_get(c->terminated, id);

    if (v == NULL)
        return false;
    if (signum != NULL)
        *signum = (int)json_integer_value(v);
    json_object_del(c->terminated, id);
    return true;
}

bool cc_pidbox_is_events(const struct cc_pidbox *c)
{
    return c->is_events;
}

/* ---- Request views -------------------------------------------------------------------- */

/* Request.info(safe): with `is_safe` (inspect active safe=True) args and kwargs are the
 * message's argsrepr / kwargsrepr strings, as Celery sends them ('' when absent). */
static json_t *control_info(struct cc_pidbox *c, const struct cc_request *r, int slot, bool is_safe)
{
    json_t *args_repr = is_safe ? json_string(r->msg.argsrepr ? r->msg.argsrepr : "") : NULL;
    json_t *kwargs_repr = is_safe ? json_string(r->msg.kwargsrepr ? r->msg.kwargsrepr : "") : NULL;
    json_t *info;
    struct cc_control_info in = {
        .id = r->msg.id,
        .name = r->msg.task,
        .args = r->msg.args,
        .kwargs = r->msg.kwargs,
        .hostname = c->hostname,
        .time_start = -1,
        .is_acked = r->is_acked,
        .exchange = r->exchange,
        .routing_key = r->routing_key,
        .priority = r->msg.priority,
        .is_redelivered = r->redelivered,
        .worker_pid = 0,
    };

    if (slot >= 0) {
        if (slot < c->n_slots)
            in.time_start = c->time_start[slot];
        if (slot < c->pool->n)
            in.worker_pid = c->pool->kids[slot].pid;
    }
    if (is_safe) {
        in.args = args_repr;
        in.kwargs = kwargs_repr;
    }
    info = cc_control_request_info(&in);
    json_decref(args_repr);
    json_decref(kwargs_repr);
    return info;
}

struct control_collect {
    struct cc_pidbox *c;
    enum cc_pidbox_kind want;
    bool is_safe; /* active safe=True */
    json_t *out;  /* list (active/reserved/scheduled) or object (query_task) */
    json_t *ids;  /* query_task: wanted ids */
};

static void control_collect_fn(void *ctx, const struct cc_request *r, enum cc_pidbox_kind kind,
                               int slot)
{
    struct control_collect *cc = ctx;

    if (cc->ids != NULL) { /* query_task: active and reserved ones, not ETA-held (§5.3) */
        size_t i;
        json_t *v;

        if (kind == CC_PIDBOX_SCHEDULED)
            return;
        json_array_foreach(cc->ids, i, v)
        {
            if (json_is_string(v) && strcmp(json_string_value(v), r->msg.id) == 0) {
                json_object_set_new(cc->out, r->msg.id,
                                    json_pack("[s, o]",
                                              kind == CC_PIDBOX_ACTIVE ? "active" : "reserved",
                                              control_info(cc->c, r, slot, false)));
                break;
            }
        }
        return;
    }
    if (kind != cc->want)
        return;
    if (kind == CC_PIDBOX_SCHEDULED) {
        char eta[64] = "";

        if (r->msg.eta_us != 0)
            cc_isotime_format(r->msg.eta_us, 1, eta, sizeof(eta));
        json_array_append_new(cc->out,
                              cc_control_scheduled_entry(eta, control_info(cc->c, r, -1, false)));
    } else {
        json_array_append_new(cc->out, control_info(cc->c, r, slot, cc->is_safe));
    }
}

static json_t *control_list(struct cc_pidbox *c, enum cc_pidbox_kind kind, bool is_safe)
{
    struct control_collect cc = {.c = c, .want = kind, .out = json_array(), .is_safe = is_safe};

    c->ops.each(c->ops.ud, control_collect_fn, &cc);
    return cc.out;
}

/* ---- Commands ------------------------------------------------------------------------- */

static const char *control_arg_str(json_t *args, const char *key)
{
    return json_string_value(json_object_get(args, key));
}

/* Python's `limit or 0`: int 0 when unset, the float otherwise. */
static json_t *control_limit(double s)
{
    return s > 0 ? json_real(s) : json_integer(0);
}

static json_t *control_stats(struct cc_pidbox *c)
{
    struct rusage ru;
    struct cc_amqp_url u = {0};
    struct cc_err err = {0};
    json_t *procs = json_array();
    char clock[32];
    json_t *o, *pool, *broker;

    /* [poolsize] The members only (a child removed by pool_shrink that still finishes its
     * task is leaving), and their number as max-concurrency. (Celery keeps reporting its start
     * concurrency there after a grow or shrink; celeryc reports the current one.) */
    for (int i = 0; i < c->pool->n; i++)
        if (c->pool->kids[i].pid > 0 && !c->pool->kids[i].is_removed)
            json_array_append_new(procs, json_integer(c->pool->kids[i].pid));
    pool = json_pack("{s:i, s:o, s:o, s:b, s:[o, o]}", "max-concurrency", cc_pool_size(c->pool),
                     "processes", procs, "max-tasks-per-child",
                     c->cfg->max_tasks_per_child > 0 ? json_integer(c->cfg->max_tasks_per_child)
                                                     : json_string("N/A"),
                     "put-guarded-by-semaphore", 0, "timeouts",
                     control_limit(c->cfg->soft_time_limit_s), control_limit(c->cfg->time_limit_s));
    if (cc_url_parse_amqp(c->cfg->broker_url ? c->cfg->broker_url : "amqp://", &u, &err) != CC_OK)
        memset(&u, 0, sizeof(u));
    broker = json_pack("{s:s, s:s, s:s, s:i, s:b, s:b, s:s, s:f, s:{}, s:s, s:n, s:f, s:s, s:[]}",
                       "hostname", u.host ? u.host : "", "userid", u.user ? u.user : "",
                       "virtual_host", u.vhost ? u.vhost : "/", "port", u.port, "insist", 0, "ssl",
                       u.tls, "transport", "amqp", "connect_timeout", c->cfg->connect_timeout_s,
                       "transport_options", "login_method", "PLAIN", "uri_prefix", "heartbeat",
                       c->cfg->heartbeat_s, "failover_strategy", "round-robin", "alternates");
    cc_url_amqp_deinit(&u);
    /* [flower] Celery's default broker_connection_timeout is the int 4: the Broker tab shows
     * "4", not "4.0", so a whole number of seconds goes out as an int. */
    if (broker != NULL &&
        c->cfg->connect_timeout_s == (double)(json_int_t)c->cfg->connect_timeout_s)
        json_object_set_new(broker, "connect_timeout",
                            json_integer((json_int_t)c->cfg->connect_timeout_s));
    getrusage(RUSAGE_SELF, &ru);
    snprintf(clock, sizeof(clock), "%llu", (unsigned long long)c->clock);
    o = json_pack("{s:O, s:i, s:s, s:I, s:o, s:o, s:i}", "total", c->total, "pid", (int)getpid(),
                  "clock", clock, "uptime",
                  (json_int_t)((cc_mono_us() - c->started_mono_us) / 1000000), "pool", pool,
                  "broker", broker, "prefetch_count", (int)c->broker->prefetch);
    json_object_set_new(
        o, "rusage",
        json_pack("{s:f, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
                  "s:I}",
                  "utime", (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6, "stime",
                  (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6, "maxrss",
                  (json_int_t)ru.ru_maxrss, "ixrss", (json_int_t)ru.ru_ixrss, "idrss",
                  (json_int_t)ru.ru_idrss, "isrss", (json_int_t)ru.ru_isrss, "minflt",
                  (json_int_t)ru.ru_minflt, "majflt", (json_int_t)ru.ru_majflt, "nswap",
                  (json_int_t)ru.ru_nswap, "inblock", (json_int_t)ru.ru_inblock, "oublock",
                  (json_int_t)ru.ru_oublock, "msgsnd", (json_int_t)ru.ru_msgsnd, "msgrcv",
                  (json_int_t)ru.ru_msgrcv, "nsignals", (json_int_t)ru.ru_nsignals, "nvcsw",
                  (json_int_t)ru.ru_nvcsw, "nivcsw", (json_int_t)ru.ru_nivcsw));
    return o;
}

/* Python's str() of a JSON value a command stored (int, float repr, True/False, text), into
 * buf. +-DBL_MAX is what Python's Infinity token became (ctl_py_tokens): str(inf). */
static void control_py_str(const json_t *v, char *buf, size_t size)
{
    if (json_is_integer(v)) {
        snprintf(buf, size, "%lld", (long long)json_integer_value(v));
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        char *r = d == DBL_MAX || d == -DBL_MAX ? NULL : cc_pyrepr(v, 0, 0);

        snprintf(buf, size, "%s", r != NULL ? r : d < 0 ? "-inf" : "inf");
        free(r);
    } else if (json_is_boolean(v)) {
        snprintf(buf, size, "%s", json_is_true(v) ? "True" : "False");
    } else if (json_is_string(v)) {
        snprintf(buf, size, "%s", json_string_value(v));
    } else {
        snprintf(buf, size, "None");
    }
}

/* A C task's limit as Python's Task attribute: None (false) when 0, an int when whole (as
 * `time_limit=30` in a decorator), else the float. */
static bool control_entry_limit(double s, char *buf, size_t size)
{
    json_t *v;

    if (!(s > 0))
        return false;
    v = s < 1e15 && s == (double)(long long)s ? json_integer((json_int_t)s) : json_real(s);
    control_py_str(v, buf, size);
    json_decref(v);
    return true;
}

/* str(getattr(task, attr, None)) for `inspect registered ATTR...`, into buf; false for None
 * (left out, as Celery's _extract_info does). The time_limit command replaces both limits
 * of the task, as it sets task.soft_time_limit and task.time_limit in Celery. */
static bool control_task_attr(struct cc_pidbox *c, const struct cc_task_entry *e, const char *attr,
                              char *buf, size_t size)
{
    json_t *tl = json_object_get(c->time_limits, e->name);

    if (strcmp(attr, "name") == 0) {
        snprintf(buf, size, "%s", e->name);
        return true;
    }
    if (strcmp(attr, "rate_limit") == 0) {
        json_t *rl = json_object_get(c->rate_limits, e->name);
        const char *rate = rl != NULL ? json_string_value(rl) : e->rate_limit;

        if (rate == NULL)
            return false;
        snprintf(buf, size, "%s", rate);
        return true;
    }
    if (strcmp(attr, "time_limit") == 0 || strcmp(attr, "soft_time_limit") == 0) {
        bool is_soft = attr[0] == 's';

        if (tl != NULL) {
            json_t *v = json_array_get(tl, is_soft ? 0 : 1);

            if (json_is_null(v))
                return false;
            control_py_str(v, buf, size);
            return true;
        }
        return control_entry_limit(is_soft ? e->soft_time_limit_s : e->time_limit_s, buf, size);
    }
    if (strcmp(attr, "max_retries") == 0) {
        if (e->max_retries == CC_MAX_RETRIES_FOREVER)
            return false; /* max_retries=None */
        snprintf(buf, size, "%d",
                 e->max_retries == CC_MAX_RETRIES_DEFAULT ? 3
                 : e->max_retries == CC_MAX_RETRIES_NONE  ? 0
                                                          : e->max_retries);
        return true;
    }
    if (strcmp(attr, "default_retry_delay") == 0) {
        if (!control_entry_limit(e->default_retry_delay_s, buf, size))
            snprintf(buf, size, "180");
        return true;
    }
    if (strcmp(attr, "serializer") == 0) {
        snprintf(buf, size, "json");
        return true;
    }
    return false; /* exchange, routing_key, priority, expires, ...: None on a C task */
}

static int control_str_cmp(const void *a, const void *b)
{
    return strcmp(json_string_value(*(json_t *const *)a), json_string_value(*(json_t *const *)b));
}

/* Celery's registered(taskinfoitems=None, builtins=False): "name [a=x b=y]" per task, sorted
 * by name, with the attributes asked for (default: exchange, routing_key, rate_limit) that
 * are not None, in the order asked; celery.* tasks only with a truthy `builtins`. */
static json_t *control_registered(struct cc_pidbox *c, json_t *args)
{
    static const char *const dflt[] = {"exchange", "routing_key", "rate_limit"};
    json_t *items = json_object_get(args, "taskinfoitems");
    bool builtins = cc_control_arg_bool(args, "builtins", false);
    json_t *want = json_array(), *out = json_array(), *v;
    size_t i, n;
    json_t **sorted;

    if (json_is_array(items) && json_array_size(items) > 0) {
        json_array_foreach(items, i, v) if (json_is_string(v)) json_array_append(want, v);
    } else {
        for (i = 0; i < sizeof(dflt) / sizeof(dflt[0]); i++)
            json_array_append_new(want, json_string(dflt[i]));
    }
    for (i = 0; cc_task_table[i] != NULL; i++) {
        const struct cc_task_entry *e = cc_task_table[i];
        size_t len = strlen(e->name), cap = len + 64;
        char *line;
        bool any = false;
        size_t k;

        if (!builtins && strncmp(e->name, "celery.", 7) == 0)
            continue;
        line = cc_xmalloc(cap);
        memcpy(line, e->name, len + 1);
        json_array_foreach(want, k, v)
        {
            const char *attr = json_string_value(v);
            char val[512];
            bool dup = false;
            size_t need;

            for (size_t m = 0; m < k && !dup; m++) /* a dict: each key once, first place */
                dup = strcmp(json_string_value(json_array_get(want, m)), attr) == 0;
            if (dup || !control_task_attr(c, e, attr, val, sizeof(val)))
                continue;
            need = len + 2 + strlen(attr) + 1 + strlen(val) + 2;
            if (need > cap) {
                cap = need * 2;
                line = cc_xrealloc(line, cap);
            }
            len += (size_t)snprintf(line + len, cap - len, "%s%s=%s", any ? " " : " [", attr, val);
            any = true;
        }
        if (any)
            memcpy(line + len, "]", 2);
        json_array_append_new(out, json_string(line));
        free(line);
    }
    json_decref(want);
    /* sorted(tasks): by name, which is what each line starts with (" [" sorts after any
     * name character a task name can end with before it) */
    n = json_array_size(out);
    sorted = cc_xmalloc((n ? n : 1) * sizeof(*sorted));
    for (i = 0; i < n; i++)
        sorted[i] = json_incref(json_array_get(out, i));
    qsort(sorted, n, sizeof(*sorted), control_str_cmp);
    json_array_clear(out);
    for (i = 0; i < n; i++)
        json_array_append_new(out, sorted[i]);
    free(sorted);
    return out;
}

static json_t *control_active_queues(struct cc_pidbox *c)
{
    json_t *out = json_array();

    for (size_t i = 0; i < c->n_queues; i++) {
        const struct cc_pidbox_queue *q = &c->queues[i];

        if (q->is_active)
            json_array_append_new(out, cc_control_queue_info(q->name, q->exchange, q->exchange_type,
                                                             q->routing_key, true,
                                                             c->cfg->queue_max_priority));
    }
    return out;
}

static int control_signum(const char *name)
{
    static const struct {
        const char *name;
        int num;
    } sigs[] = {{"TERM", SIGTERM}, {"KILL", SIGKILL}, {"INT", SIGINT},   {"HUP", SIGHUP},
                {"QUIT", SIGQUIT}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"ABRT", SIGABRT}};

    if (name == NULL || name[0] == '\0')
        return SIGTERM;
    if (name[0] >= '0' && name[0] <= '9')
        return atoi(name);
    if (strncmp(name, "SIG", 3) == 0)
        name += 3;
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        if (strcasecmp(sigs[i].name, name) == 0)
            return sigs[i].num;
    return -1;
}

static int control_signum_int(json_int_t n)
{
    return n >= 1 && n <= 64 ? (int)n : -1;
}

struct control_term {
    struct cc_pidbox *c;
    json_t *ids;        /* wanted */
    json_t *terminated; /* ids signalled, list */
    int signum;
};

static void control_term_fn(void *ctx, const struct cc_request *r, enum cc_pidbox_kind kind,
                            int slot)
{
    struct control_term *t = ctx;
    struct cc_pidbox *c = t->c;
    size_t i;
    json_t *v;

    if (kind != CC_PIDBOX_ACTIVE || slot < 0 || slot >= c->pool->n)
        return;
    json_array_foreach(t->ids, i, v)
    {
        pid_t pid = c->pool->kids[slot].pid;

        if (!json_is_string(v) || strcmp(json_string_value(v), r->msg.id) != 0)
            continue;
        /* Only a forked child can be signalled alone (threads/solo share our pid). */
        if (c->cfg->pool != CC_POOL_PREFORK || pid <= 0 || pid == getpid())
            break;
        cc_info("Terminating %s (%d)", cc_log_str(r->msg.id), t->signum);
        json_object_set_new(c->terminated, r->msg.id, json_integer(t->signum));
        json_array_append_new(t->terminated, json_string(r->msg.id));
        if (kill(pid, t->signum) != 0)
            cc_warn("terminate %s: kill(%d, %d): %s", cc_log_str(r->msg.id), (int)pid, t->signum,
                    strerror(errno));
        break;
    }
}

static json_t *control_revoke(struct cc_pidbox *c, json_t *args, bool force_terminate)
{
    json_t *tid = json_object_get(args, "task_id");
    json_t *ids = json_array();
    json_t *reply;
    size_t i;
    json_t *v;
    /* [issue 14] Python's `if terminate:`: Flower sends terminate=1 (strtobool's int). */
    bool terminate = force_terminate || cc_control_arg_bool(args, "terminate", false);

    if (json_is_string(tid))
        json_array_append(ids, tid);
    else if (json_is_array(tid))
        json_array_foreach(tid, i, v) if (json_is_string(v)) json_array_append(ids, v);
    json_array_foreach(ids, i, v) cc_pidbox_revoke_add(c, json_string_value(v));
    if (terminate) {
        struct control_term t = {.c = c, .ids = ids, .terminated = json_array()};
        char *text;

        /* billiard's signum(): an int is taken as it is, a name is looked up */
        t.signum = json_is_integer(json_object_get(args, "signal"))
                       ? control_signum_int(json_integer_value(json_object_get(args, "signal")))
                       : control_signum(control_arg_str(args, "signal"));
        if (t.signum <= 0) {
            json_decref(t.terminated);
            json_decref(ids);
            return cc_control_error("ValueError('unknown signal')");
        }
        c->ops.each(c->ops.ud, control_term_fn, &t);
        if (json_array_size(t.terminated) == 0)
            reply = cc_control_ok("terminate: tasks unknown");
        else {
            text = cc_control_join_ids("terminate: ", t.terminated, "");
            reply = cc_control_ok(text ? text : "");
            free(text);
        }
        json_decref(t.terminated);
    } else {
        char *text = cc_control_join_ids("tasks ", ids, " flagged as revoked");
        char *idstr = cc_control_join_ids("", ids, "");

        cc_info("Tasks flagged as revoked: %s", idstr ? idstr : "");
        free(idstr);
        reply = cc_control_ok(text ? text : "");
        free(text);
    }
    json_decref(ids);
    return reply;
}

static json_t *control_rate_limit(struct cc_pidbox *c, json_t *args)
{
    const char *name = control_arg_str(args, "task_name");
    json_t *jr = json_object_get(args, "rate_limit");
    char text[64] = "";
    struct cc_err err = {0};
    double per_s = 0;

    if (json_is_string(jr))
        snprintf(text, sizeof(text), "%s", json_string_value(jr));
    else if (json_is_integer(jr))
        snprintf(text, sizeof(text), "%lld", (long long)json_integer_value(jr));
    else if (json_is_real(jr))
        snprintf(text, sizeof(text), "%g", json_real_value(jr));
    if (cc_ratelimit_parse(text, &per_s, &err) != CC_OK) {
        char msg[200];

        /* [issue 14] "nan" and negative rates parse in Python (and then never run the task):
         * refused here with their own reason; anything else is Python's float() error. */
        if (strstr(err.msg, "must be a number") != NULL)
            snprintf(msg, sizeof(msg),
                     "Invalid rate limit string: ValueError(\"rate limit must be a number >= 0 "
                     "or inf: '%.60s'\")",
                     text);
        else
            snprintf(msg, sizeof(msg),
                     "Invalid rate limit string: ValueError(\"could not convert string to "
                     "float: '%.60s'\")",
                     text);
        return cc_control_error(msg);
    }
    if (name == NULL || cc_taskrun_lookup(name) == NULL) {
        cc_error("Rate limit attempt for unknown task %s", cc_log_str(name ? name : "None"));
        return cc_control_error("unknown task");
    }
    if (c->rl != NULL)
        cc_ratelimit_set(c->rl, name, per_s);
    /* registered shows str(task.rate_limit) unless it is None, as Celery */
    json_object_set_new(c->rate_limits, name,
                        jr == NULL || json_is_null(jr) ? json_null() : json_string(text));
    /* Python's `if not rate_limit`: None, 0 and "" disable; the string "0" (what the CLI
     * sends) is truthy, so Celery answers "new rate limit" although the limit is off. */
    if (jr == NULL || json_is_null(jr) || (json_is_number(jr) && json_number_value(jr) == 0) ||
        (json_is_string(jr) && json_string_length(jr) == 0)) {
        cc_info("Rate limits disabled for tasks of type %s", cc_log_str(name));
        return cc_control_ok("rate limit disabled successfully");
    }
    cc_info("New rate limit for tasks of type %s: %s.", cc_log_str(name), text);
    return cc_control_ok("new rate limit set successfully");
}

/* [issue 14] One argument of time_limit: None (absent / null) or a number >= 0 of any size
 * (a huge one, 1e300 or Python's Infinity, is no limit: pool.c). Python stores whatever it
 * gets and then kills every task at once for a negative limit (or breaks billiard's timeout
 * handler for a string); celeryc refuses those, NaN included (read as the string "NaN"). */
static bool control_limit_arg_ok(const json_t *v)
{
    if (v == NULL || json_is_null(v))
        return true;
    if (json_is_integer(v))
        return json_integer_value(v) >= 0;
    return json_is_real(v) && json_real_value(v) >= 0;
}

static json_t *control_time_limit(struct cc_pidbox *c, json_t *args)
{
    const char *name = control_arg_str(args, "task_name");
    json_t *soft = json_object_get(args, "soft"), *hard = json_object_get(args, "hard");
    char soft_s[64], hard_s[64];

    if (name == NULL || cc_taskrun_lookup(name) == NULL) {
        cc_error("Change time limit attempt for unknown task %s", cc_log_str(name ? name : "None"));
        return cc_control_error("unknown task");
    }
    if (!control_limit_arg_ok(soft) || !control_limit_arg_ok(hard)) {
        const json_t *bad = control_limit_arg_ok(soft) ? hard : soft;
        char *r = cc_pyrepr(bad, 0, 40);
        char msg[160];

        snprintf(msg, sizeof(msg),
                 "ValueError('time limits must be numbers >= 0 or None, got %s=%s')",
                 bad == soft ? "soft" : "hard", r != NULL ? r : "?");
        free(r);
        cc_error("Change time limit for %s refused: %s", cc_log_str(name), msg);
        return cc_control_error(msg);
    }
    /* Celery sets task.soft_time_limit = soft; task.time_limit = hard: both, None included
     * (kept as sent, so `inspect registered time_limit` shows them as Python would). */
    json_object_set_new(
        c->time_limits, name,
        json_pack("[O, O]", soft != NULL ? soft : json_null(), hard != NULL ? hard : json_null()));
    control_py_str(soft != NULL ? soft : json_null(), soft_s, sizeof(soft_s));
    control_py_str(hard != NULL ? hard : json_null(), hard_s, sizeof(hard_s));
    cc_info("New time limits for tasks of type %s: soft=%s hard=%s", cc_log_str(name), soft_s,
            hard_s);
    return cc_control_ok("time limits set successfully");
}

/* [poolsize] pool_grow / pool_shrink, as Celery's control.py: the pool changes size now
 * (prefork: children forked or retired; threads: threads started or retired), then the QoS
 * window follows (Consumer._update_prefetch_count, through ops.pool_resized). Celery's solo
 * and threads pools have no grow/shrink: the solo reply is Celery's AttributeError; the
 * threads pool here resizes like prefork. Shrinking never kills a busy executor (billiard
 * answers "Can't shrink pool. All processes busy!"; celeryc lets it finish its task). */
static json_t *control_pool_resize(struct cc_pidbox *c, json_t *args, bool is_grow)
{
    const char *verb = is_grow ? "grow" : "shrink";
    json_t *jn = json_object_get(args, "n");
    struct cc_err err = {0};
    char msg[200];
    int rc;

    if (c->cfg->pool == CC_POOL_SOLO) {
        snprintf(msg, sizeof(msg), "AttributeError(\"'TaskPool' object has no attribute '%s'\")",
                 verb);
        return cc_control_error(msg);
    }
    /* Python's n=1 default; range(n) wants an int (the CLI converts N to one). */
    if (jn != NULL && !json_is_integer(jn)) {
        snprintf(msg, sizeof(msg), "TypeError(\"'%s' object cannot be interpreted as an integer\")",
                 json_is_string(jn)   ? "str"
                 : json_is_real(jn)   ? "float"
                 : json_is_null(jn)   ? "NoneType"
                 : json_is_array(jn)  ? "list"
                 : json_is_object(jn) ? "dict"
                                      : "bool");
        return cc_control_error(msg);
    }
    json_int_t n = jn != NULL ? json_integer_value(jn) : 1;
    if (n < 0 || n > cc_pool_max_size(c->pool)) {
        snprintf(msg, sizeof(msg), "ValueError('pool_%s: n must be in 0..%d, got %lld')", verb,
                 cc_pool_max_size(c->pool), (long long)n);
        return cc_control_error(msg);
    }
    rc = is_grow ? cc_pool_grow(c->pool, (int)n, &err) : cc_pool_shrink(c->pool, (int)n, &err);
    if (rc != CC_OK) {
        cc_error("pool_%s %lld: %s", verb, (long long)n, err.msg);
        snprintf(msg, sizeof(msg), "ValueError('%.150s')", err.msg);
        return cc_control_error(msg);
    }
    if (n > 0)
        cc_info("pool_%s %lld by remote: the pool now has %d %s", verb, (long long)n,
                cc_pool_size(c->pool), c->cfg->pool == CC_POOL_THREADS ? "threads" : "processes");
    if (c->ops.pool_resized != NULL)
        c->ops.pool_resized(c->ops.ud);
    return cc_control_ok(is_grow ? "pool will grow" : "pool will shrink");
}

static json_t *control_add_consumer(struct cc_pidbox *c, json_t *args)
{
    const char *queue = control_arg_str(args, "queue");
    const char *ex = control_arg_str(args, "exchange");
    const char *type = control_arg_str(args, "exchange_type");
    const char *rk = control_arg_str(args, "routing_key");
    struct cc_pidbox_queue *q;
    struct cc_err err = {0};
    char msg[300];

    if (queue == NULL)
        return cc_control_error(
            "TypeError(\"add_consumer() missing 1 required positional argument: "
            "'queue'\")");
    q = control_queue_find(c, queue);
    if (q != NULL && q->is_active) {
        snprintf(msg, sizeof(msg), "already consuming from %s", queue);
        return cc_control_ok(msg);
    }
    if (q == NULL) {
        control_queue_add(c, queue, ex ? ex : queue, type ? type : "direct", rk ? rk : queue,
                          false);
        q = &c->queues[c->n_queues - 1];
    }
    q->is_active = true;
    if (c->broker->is_channel_open && q->tag[0] == '\0' &&
        control_consume_queue(c, q, &err) != CC_OK)
        cc_error("add_consumer %s: %s", queue, err.msg);
    else
        cc_info("Started consuming from %s", queue);
    snprintf(msg, sizeof(msg), "add consumer %s", queue);
    return cc_control_ok(msg);
}

static json_t *control_cancel_consumer(struct cc_pidbox *c, json_t *args)
{
    const char *queue = control_arg_str(args, "queue");
    struct cc_pidbox_queue *q = queue ? control_queue_find(c, queue) : NULL;
    struct cc_err err = {0};
    char msg[300];

    if (queue == NULL)
        return cc_control_error("TypeError(\"cancel_consumer() missing 1 required positional "
                                "argument: 'queue'\")");
    if (q != NULL) {
        q->is_active = false;
        if (q->tag[0] != '\0' && c->broker->is_channel_open &&
            cc_broker_cancel_on(c->broker, c->broker->channel, q->tag, &err) != CC_OK)
            cc_error("cancel_consumer %s: %s", queue, err.msg);
        q->tag[0] = '\0';
        cc_info("Stopped consuming from %s", queue);
    }
    snprintf(msg, sizeof(msg), "no longer consuming from %s", queue);
    return cc_control_ok(msg);
}

static json_t *control_conf(struct cc_pidbox *c)
{
    /* [issue 14] Every URL as Celery's filter_hidden_settings shows it: the password
     * replaced by "********" (the result backend's was sent in clear). */
    char *u = cc_url_mask(c->cfg->broker_url ? c->cfg->broker_url : "", CC_URL_MASK_CONF);
    json_t *o = json_object();

    /* Non-default settings we know of, JSON-safe, password masked as Celery does. */
    json_object_set_new(o, "broker_url", json_string(u ? u : ""));
    if (c->cfg->result_backend != NULL) {
        char *rb = cc_url_mask(c->cfg->result_backend, CC_URL_MASK_CONF);

        json_object_set_new(o, "result_backend", json_string(rb));
        free(rb);
    }
    if (c->cfg->n_queues > 0) {
        json_t *q = json_array();

        for (size_t i = 0; i < c->cfg->n_queues; i++)
            json_array_append_new(q, json_string(c->cfg->queues[i]));
        json_object_set_new(o, "task_queues", q);
    }
    if (c->cfg->concurrency > 0)
        json_object_set_new(o, "worker_concurrency", json_integer(c->cfg->concurrency));
    json_object_set_new(o, "worker_prefetch_multiplier", json_integer(c->cfg->prefetch_multiplier));
    if (c->cfg->time_limit_s > 0)
        json_object_set_new(o, "task_time_limit", json_real(c->cfg->time_limit_s));
    if (c->cfg->soft_time_limit_s > 0)
        json_object_set_new(o, "task_soft_time_limit", json_real(c->cfg->soft_time_limit_s));
    if (c->cfg->state_db != NULL)
        json_object_set_new(o, "worker_state_db", json_string(c->cfg->state_db));
    free(u);
    return o;
}

static json_t *control_report(void)
{
    char buf[256];

    snprintf(buf, sizeof(buf), "\nsoftware -> celeryc:%s (C) \nplatform -> system:Linux\n",
             CELERYC_VERSION);
    return cc_control_ok(buf);
}

/* Returns the reply value (new reference; NULL = JSON null), *no_reply for shutdown. */
static json_t *control_dispatch(struct cc_pidbox *c, const struct cc_control_req *q, bool *no_reply)
{
    const char *m = q->method;
    json_t *a = q->arguments;

    *no_reply = false;
    if (strcmp(m, "ping") == 0)
        return cc_control_ok("pong");
    if (strcmp(m, "stats") == 0)
        return control_stats(c);
    if (strcmp(m, "registered") == 0)
        return control_registered(c, a);
    if (strcmp(m, "active") == 0) /* [issue 14] safe: Python's truthiness, as every boolean */
        return control_list(c, CC_PIDBOX_ACTIVE, cc_control_arg_bool(a, "safe", false));
    if (strcmp(m, "reserved") == 0)
        return control_list(c, CC_PIDBOX_RESERVED, false);
    if (strcmp(m, "scheduled") == 0)
        return control_list(c, CC_PIDBOX_SCHEDULED, false);
    if (strcmp(m, "active_queues") == 0)
        return control_active_queues(c);
    if (strcmp(m, "query_task") == 0) {
        json_t *ids = json_object_get(a, "ids");
        json_t *want = json_is_array(ids) ? json_incref(ids) : json_pack("[O]", ids);
        struct control_collect cc = {.c = c, .out = json_object(), .ids = want};

        if (want != NULL)
            c->ops.each(c->ops.ud, control_collect_fn, &cc);
        json_decref(want);
        return cc.out;
    }
    if (strcmp(m, "revoked") == 0) {
        json_t *out = json_array();
        const char *k;
        json_t *v;

        json_object_foreach(c->revoked, k, v) json_array_append_new(out, json_string(k));
        return out;
    }
    if (strcmp(m, "revoke") == 0)
        return control_revoke(c, a, false);
    if (strcmp(m, "terminate") == 0)
        return control_revoke(c, a, true);
    if (strcmp(m, "conf") == 0)
        return control_conf(c);
    if (strcmp(m, "report") == 0)
        return control_report();
    if (strcmp(m, "clock") == 0)
        return json_pack("{s:I}", "clock", (json_int_t)c->clock);
    if (strcmp(m, "shutdown") == 0) {
        cc_warn("Got shutdown from remote");
        *no_reply = true;
        raise(SIGTERM); /* the loop's warm shutdown, exactly as for a TERM */
        return NULL;
    }
    if (strcmp(m, "enable_events") == 0 || strcmp(m, "disable_events") == 0) {
        bool on = m[0] == 'e';
        struct cc_events *ev = cc_events_get();
        bool was = ev != NULL ? cc_events_task_on(ev) : c->is_events;

        c->is_events = on;
        (void)cc_events_enable(on);
        if (was == on)
            return cc_control_ok(on ? "task events already enabled"
                                    : "task events already disabled");
        cc_info("Events of group {task} %s by remote.", on ? "enabled" : "disabled");
        return cc_control_ok(on ? "task events enabled" : "task events disabled");
    }
    if (strcmp(m, "heartbeat") == 0) {
        struct cc_events *ev = cc_events_get();

        cc_debug("Heartbeat requested by remote.");
        if (ev != NULL)
            cc_events_heartbeat_now(ev);
        return NULL;
    }
    if (strcmp(m, "rate_limit") == 0)
        return control_rate_limit(c, a);
    if (strcmp(m, "time_limit") == 0)
        return control_time_limit(c, a);
    if (strcmp(m, "add_consumer") == 0)
        return control_add_consumer(c, a);
    if (strcmp(m, "cancel_consumer") == 0)
        return control_cancel_consumer(c, a);
    if (strcmp(m, "pool_grow") == 0 || strcmp(m, "pool_shrink") == 0) /* [poolsize] */
        return control_pool_resize(c, a, m[5] == 'g');
    /* No --autoscale (no autoscaler): Celery's answer for a worker started without it. */
    if (strcmp(m, "autoscale") == 0)
        return cc_control_error("ValueError('Autoscale not enabled')");
    if (strcmp(m, "pool_restart") == 0)
        return cc_control_error("ValueError('Pool restarts not enabled')");
    if (strcmp(m, "hello") == 0) {
        /* mingle: answer with our revoked ids so a Python node can sync (§5.3). */
        const char *from = control_arg_str(a, "from_node");
        json_t *rev = json_object();
        const char *k;
        json_t *v;

        if (from != NULL && strcmp(from, c->hostname) == 0) {
            json_decref(rev);
            return NULL;
        }
        json_object_foreach(c->revoked, k, v)
            json_object_set_new(rev, k, json_pack("[f, s]", (double)cc_mono_us() / 1e6, k));
        return json_pack("{s:o, s:I}", "revoked", rev, "clock", (json_int_t)c->clock);
    }
    {
        char msg[200];

        snprintf(msg, sizeof(msg), "KeyError('%.100s')", m);
        cc_error("No such control command: %s", m);
        return cc_control_error(msg);
    }
}

static bool control_header_int(const amqp_table_t *t, const char *key, uint64_t *out)
{
    for (int i = 0; i < t->num_entries; i++) {
        const amqp_table_entry_t *e = &t->entries[i];
        const amqp_field_value_t *v = &e->value;

        if (e->key.len != strlen(key) || memcmp(e->key.bytes, key, e->key.len) != 0)
            continue;
        switch (v->kind) {
        case AMQP_FIELD_KIND_I8:
            *out = (uint64_t)(v->value.i8 < 0 ? 0 : v->value.i8);
            return true;
        case AMQP_FIELD_KIND_U8:
            *out = v->value.u8;
            return true;
        case AMQP_FIELD_KIND_I16:
            *out = (uint64_t)(v->value.i16 < 0 ? 0 : v->value.i16);
            return true;
        case AMQP_FIELD_KIND_U16:
            *out = v->value.u16;
            return true;
        case AMQP_FIELD_KIND_I32:
            *out = (uint64_t)(v->value.i32 < 0 ? 0 : v->value.i32);
            return true;
        case AMQP_FIELD_KIND_U32:
            *out = v->value.u32;
            return true;
        case AMQP_FIELD_KIND_I64:
            *out = (uint64_t)(v->value.i64 < 0 ? 0 : v->value.i64);
            return true;
        case AMQP_FIELD_KIND_U64:
            *out = v->value.u64;
            return true;
        default:
            return false;
        }
    }
    return false;
}

void cc_pidbox_on_delivery(struct cc_pidbox *c, const amqp_envelope_t *env)
{
    const amqp_basic_properties_t *p = &env->message.properties;
    struct cc_control_req q;
    struct cc_err err = {0};
    struct cc_msg_out out;
    json_t *value;
    bool no_reply = false;
    uint64_t clock;

    if ((p->_flags & AMQP_BASIC_HEADERS_FLAG) && control_header_int(&p->headers, "clock", &clock))
        cc_pidbox_clock_adjust(c, clock);
    if (cc_control_parse(env->message.body.bytes, env->message.body.len, c->hostname, &q, &err) !=
        CC_OK) {
        cc_warn("pidbox: dropping a bad request: %s", err.msg);
        cc_control_req_deinit(&q);
        return;
    }
    if (!q.is_for_me) {
        cc_control_req_deinit(&q);
        return;
    }
    cc_debug("pidbox received method %s [reply_to:%s ticket:%s]", q.method,
             q.reply_rk ? q.reply_rk : "None", q.ticket ? q.ticket : "None");
    value = control_dispatch(c, &q, &no_reply);
    if (!no_reply && q.reply_exchange != NULL && q.reply_rk != NULL) {
        size_t len = 0;
        char *body = cc_control_reply_body(c->hostname, value, &len);

        memset(&out, 0, sizeof(out));
        out.headers = json_pack("{s:s?, s:I}", "ticket", q.ticket, "clock",
                                (json_int_t)cc_pidbox_clock_forward(c));
        out.body = body;
        out.body_len = len;
        out.content_type = "application/json";
        out.content_encoding = "utf-8";
        out.delivery_mode = 1;
        if (body != NULL && out.headers != NULL &&
            cc_broker_publish_on(c->broker, CC_PIDBOX_CHANNEL, q.reply_exchange, q.reply_rk, &out,
                                 &err) != CC_OK)
            cc_warn("pidbox: reply to %s failed: %s", q.method, err.msg);
        json_decref(out.headers);
        free(body);
    }
    json_decref(value);
    cc_control_req_deinit(&q);
}

bool cc_pidbox_task_limits(void *ud, const char *name, double *soft_s, double *hard_s)
{
    struct cc_pidbox *c = ud;
    json_t *v = json_object_get(c->time_limits, name);

    if (v == NULL)
        return false;
    /* null (None) is 0 here: the pool falls back to the worker's limit, as billiard does */
    *soft_s = json_number_value(json_array_get(v, 0));
    *hard_s = json_number_value(json_array_get(v, 1));
    return true;
}
