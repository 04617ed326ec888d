/* The ETA delay store: held ETA messages beyond a horizon live in Redis, not in the worker.
 *
 * Design. Celery holds ETA/countdown messages unacked in the worker until due (raising the
 * QoS by one each). Far-future ones then hoard the prefetch window, trip RabbitMQ's
 * consumer_timeout (30 min by default: the channel is closed and every unacked message
 * redelivered), and all come back at once on every restart. celeryc holds only what is due
 * within worker_eta_horizon (default 600 s, well under consumer_timeout); a message due
 * later is written at receipt, whole (exchange, routing key, every AMQP property, the
 * header table in its wire encoding, the body), to the sorted set
 *     <worker_delay_store_key>            score = eta in ms since the epoch, member = record
 * and acked only once ZADD has returned. QoS is not raised for it. If Redis fails the
 * message is held as before (and Redis is not tried again for a few seconds).
 *
 * Republishing, shared by every worker on the same key, at most once a second and cheaply
 * when nothing is due (one EVAL that also returns the earliest score, so an idle worker
 * sleeps until then, at most 30 s): a Lua script atomically moves up to 100 due members
 * into
 *     <worker_delay_store_key>.claimed    score = lease expiry in ms, member = record
 * (and re-claims members whose lease has expired), returning them. The worker publishes
 * each to its exchange and routing key exactly as received, waits for one synchronous
 * round trip on the channel (the broker has then processed the publishes), and ZREMs them
 * from the claimed set. Because claiming is one atomic script, two workers never claim the
 * same member at the same time; because a claim is only deleted after its publish, a
 * worker that dies between claim and publish loses nothing: the lease (60 s) expires and
 * any worker claims and publishes it. The at-least-once edge: a worker that dies after
 * publishing but before the ZREM (or stalls longer than the lease) gets its records
 * published a second time by another worker; the copies have the same task id.
 *
 * Idempotence: the record is canonical (same message -> same bytes; x-delivery-count is
 * left out), so a message redelivered after a crash between ZADD and ack is ZADDed again
 * onto the same member: stored once.
 *
 * Invariants: a message is acked only after its record is in Redis; a record leaves Redis
 * only after a publish the broker has processed; the republished message is the original
 * (its eta header unchanged), so the worker that receives it runs it when due.
 *
 * Reference: celery/worker/strategy.py (ETA: held, QoS increment), kombu's QoS;
 * celery-wire.md §6.1, §6.3.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "delaystore.h"
#include "log.h"
#include "util.h"

/* ---- Record codec -------------------------------------------------------------------- */

#define DELAY_MAGIC "CCD1"

struct delay_buf {
    char *p;
    size_t len, cap;
    bool is_oom;
};

static void delay_put(struct delay_buf *b, const void *src, size_t n)
{
    if (b->is_oom)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *p;

        while (cap < b->len + n)
            cap *= 2;
        p = realloc(b->p, cap);
        if (p == NULL) {
            b->is_oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void delay_put_u32(struct delay_buf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};

    delay_put(b, x, 4);
}

static void delay_put_str(struct delay_buf *b, amqp_bytes_t s)
{
    delay_put_u32(b, (uint32_t)s.len);
    if (s.len > 0)
        delay_put(b, s.bytes, s.len);
}

/* The header table without x-delivery-count, in AMQP wire encoding (length-prefixed). */
static int delay_put_headers(struct delay_buf *b, const amqp_table_t *t, struct cc_err *err)
{
    amqp_table_t f = {0, NULL};
    size_t cap = 4096, off;
    int st, rc = CC_OK;
    char *enc = NULL;

    if (t->num_entries > 0) {
        f.entries = malloc((size_t)t->num_entries * sizeof(*f.entries));
        if (f.entries == NULL)
            return cc_err_set(err, CC_ENOMEM, "out of memory");
    }
    for (int i = 0; i < t->num_entries; i++) {
        const amqp_table_entry_t *e = &t->entries[i];

        if (e->key.len == 16 && memcmp(e->key.bytes, "x-delivery-count", 16) == 0)
            continue;
        f.entries[f.num_entries++] = *e;
    }
    for (;;) {
        char *p = realloc(enc, cap);

        if (p == NULL) {
            rc = cc_err_set(err, CC_ENOMEM, "out of memory");
            break;
        }
        enc = p;
        off = 0;
        st = amqp_encode_table((amqp_bytes_t){cap, enc}, &f, &off);
        if (st == AMQP_STATUS_OK) {
            delay_put_str(b, (amqp_bytes_t){off, enc});
            break;
        }
        if (st != AMQP_STATUS_TABLE_TOO_BIG || cap >= ((size_t)256 << 20)) {
            rc = cc_err_set(err, CC_ETOOBIG, "header table: %s", amqp_error_string2(st));
            break;
        }
        cap *= 2;
    }
    free(enc);
    free(f.entries);
    return rc;
}

int cc_delaystore_encode(amqp_bytes_t exchange, amqp_bytes_t routing_key,
                         const amqp_basic_properties_t *p, amqp_bytes_t body, char **out,
                         size_t *out_len, struct cc_err *err)
{
    struct delay_buf b = {0};
    amqp_flags_t fl = p->_flags;
    uint8_t u16[2] = {(uint8_t)(fl >> 8), (uint8_t)fl};
    int rc = CC_OK;

    *out = NULL;
    *out_len = 0;
    delay_put(&b, DELAY_MAGIC, 4);
    delay_put_str(&b, exchange);
    delay_put_str(&b, routing_key);
    delay_put(&b, u16, 2);
    if (fl & AMQP_BASIC_CONTENT_TYPE_FLAG)
        delay_put_str(&b, p->content_type);
    if (fl & AMQP_BASIC_CONTENT_ENCODING_FLAG)
        delay_put_str(&b, p->content_encoding);
    if (fl & AMQP_BASIC_HEADERS_FLAG)
        rc = delay_put_headers(&b, &p->headers, err);
    if (fl & AMQP_BASIC_DELIVERY_MODE_FLAG)
        delay_put(&b, &p->delivery_mode, 1);
    if (fl & AMQP_BASIC_PRIORITY_FLAG)
        delay_put(&b, &p->priority, 1);
    if (fl & AMQP_BASIC_CORRELATION_ID_FLAG)
        delay_put_str(&b, p->correlation_id);
    if (fl & AMQP_BASIC_REPLY_TO_FLAG)
        delay_put_str(&b, p->reply_to);
    if (fl & AMQP_BASIC_EXPIRATION_FLAG)
        delay_put_str(&b, p->expiration);
    if (fl & AMQP_BASIC_MESSAGE_ID_FLAG)
        delay_put_str(&b, p->message_id);
    if (fl & AMQP_BASIC_TIMESTAMP_FLAG) {
        delay_put_u32(&b, (uint32_t)(p->timestamp >> 32));
        delay_put_u32(&b, (uint32_t)p->timestamp);
    }
    if (fl & AMQP_BASIC_TYPE_FLAG)
        delay_put_str(&b, p->type);
    if (fl & AMQP_BASIC_USER_ID_FLAG)
        delay_put_str(&b, p->user_id);
    if (fl & AMQP_BASIC_APP_ID_FLAG)
        delay_put_str(&b, p->app_id);
    if (fl & AMQP_BASIC_CLUSTER_ID_FLAG)
        delay_put_str(&b, p->cluster_id);
    delay_put_str(&b, body);
    if (rc == CC_OK && b.is_oom)
        rc = cc_err_set(err, CC_ENOMEM, "out of memory");
    if (rc != CC_OK) {
        free(b.p);
        return rc;
    }
    *out = b.p;
    *out_len = b.len;
    return CC_OK;
}

struct delay_rd {
    const uint8_t *p;
    size_t len, off;
    bool is_bad;
};

static uint32_t delay_get_u32(struct delay_rd *r)
{
    uint32_t v;

    if (r->is_bad || r->len - r->off < 4) {
        r->is_bad = true;
        return 0;
    }
    v = (uint32_t)r->p[r->off] << 24 | (uint32_t)r->p[r->off + 1] << 16 |
        (uint32_t)r->p[r->off + 2] << 8 | r->p[r->off + 3];
    r->off += 4;
    return v;
}

static uint8_t delay_get_u8(struct delay_rd *r)
{
    if (r->is_bad || r->len - r->off < 1) {
        r->is_bad = true;
        return 0;
    }
    return r->p[r->off++];
}

static amqp_bytes_t delay_get_str(struct delay_rd *r)
{
    amqp_bytes_t s = {0, NULL};
    uint32_t n = delay_get_u32(r);

    if (r->is_bad || r->len - r->off < n) {
        r->is_bad = true;
        return s;
    }
    s.len = n;
    s.bytes = (void *)(r->p + r->off);
    r->off += n;
    return s;
}

static char *delay_cstr(amqp_bytes_t s)
{
    char *c = malloc(s.len + 1);

    if (c != NULL) {
        if (s.len > 0)
            memcpy(c, s.bytes, s.len);
        c[s.len] = '\0';
    }
    return c;
}

int cc_delaystore_decode(const char *rec, size_t len, struct cc_delaystore_rec *out,
                         struct cc_err *err)
{
    struct delay_rd r = {(const uint8_t *)rec, len, 0, false};
    amqp_basic_properties_t *p = &out->props;
    amqp_bytes_t ex, rk;
    amqp_flags_t fl;

    memset(out, 0, sizeof(*out));
    init_amqp_pool(&out->pool, 4096);
    if (len < 4 || memcmp(rec, DELAY_MAGIC, 4) != 0)
        return cc_err_set(err, CC_EBADMSG, "delay record: bad magic");
    r.off = 4;
    ex = delay_get_str(&r);
    rk = delay_get_str(&r);
    fl = (amqp_flags_t)(delay_get_u8(&r) << 8);
    fl |= delay_get_u8(&r);
    p->_flags = fl;
    if (fl & AMQP_BASIC_CONTENT_TYPE_FLAG)
        p->content_type = delay_get_str(&r);
    if (fl & AMQP_BASIC_CONTENT_ENCODING_FLAG)
        p->content_encoding = delay_get_str(&r);
    if (fl & AMQP_BASIC_HEADERS_FLAG) {
        amqp_bytes_t t = delay_get_str(&r);
        size_t off = 0;

        if (!r.is_bad && amqp_decode_table(t, &out->pool, &p->headers, &off) != AMQP_STATUS_OK)
            r.is_bad = true;
        if (!r.is_bad && off != t.len)
            r.is_bad = true;
    }
    if (fl & AMQP_BASIC_DELIVERY_MODE_FLAG)
        p->delivery_mode = delay_get_u8(&r);
    if (fl & AMQP_BASIC_PRIORITY_FLAG)
        p->priority = delay_get_u8(&r);
    if (fl & AMQP_BASIC_CORRELATION_ID_FLAG)
        p->correlation_id = delay_get_str(&r);
    if (fl & AMQP_BASIC_REPLY_TO_FLAG)
        p->reply_to = delay_get_str(&r);
    if (fl & AMQP_BASIC_EXPIRATION_FLAG)
        p->expiration = delay_get_str(&r);
    if (fl & AMQP_BASIC_MESSAGE_ID_FLAG)
        p->message_id = delay_get_str(&r);
    if (fl & AMQP_BASIC_TIMESTAMP_FLAG) {
        uint64_t hi = delay_get_u32(&r);

        p->timestamp = hi << 32 | delay_get_u32(&r);
    }
    if (fl & AMQP_BASIC_TYPE_FLAG)
        p->type = delay_get_str(&r);
    if (fl & AMQP_BASIC_USER_ID_FLAG)
        p->user_id = delay_get_str(&r);
    if (fl & AMQP_BASIC_APP_ID_FLAG)
        p->app_id = delay_get_str(&r);
    if (fl & AMQP_BASIC_CLUSTER_ID_FLAG)
        p->cluster_id = delay_get_str(&r);
    out->body = delay_get_str(&r);
    if (r.is_bad || r.off != len)
        return cc_err_set(err, CC_EBADMSG, "delay record: truncated or malformed (%zu bytes)", len);
    out->exchange = delay_cstr(ex);
    out->routing_key = delay_cstr(rk);
    if (out->exchange == NULL || out->routing_key == NULL)
        return cc_err_set(err, CC_ENOMEM, "out of memory");
    return CC_OK;
}

void cc_delaystore_rec_deinit(struct cc_delaystore_rec *r)
{
    free(r->exchange);
    free(r->routing_key);
    r->exchange = r->routing_key = NULL;
    empty_amqp_pool(&r->pool);
}

/* ---- The store ----------------------------------------------------------------------- */

void cc_delaystore_init(struct cc_delaystore *d, const struct cc_config *cfg,
                        struct cc_redeliver_kv *kv)
{
    const char *key =
        cfg->delay_store_key && cfg->delay_store_key[0] ? cfg->delay_store_key : "celeryc-delayed";
    size_t n = strlen(key) + sizeof(CC_DELAYSTORE_CLAIMED_SUFFIX);

    memset(d, 0, sizeof(*d));
    d->kv = kv;
    d->key = cc_xstrdup(key);
    d->claimed_key = cc_xmalloc(n);
    snprintf(d->claimed_key, n, "%s" CC_DELAYSTORE_CLAIMED_SUFFIX, key);
    if (cfg->eta_horizon_s < 0 && cfg->queue_type == CC_QUEUE_QUORUM) {
        /* Per-consumer QoS on quorum queues is fixed once consuming: a held ETA message
         * would take a prefetch slot for good, so every ETA message moves to the store. */
        d->horizon_us = kv != NULL ? (int64_t)CC_DELAYSTORE_QUORUM_HORIZON_MS * 1000 : 0;
        if (kv == NULL)
            cc_warn("quorum queues without Redis (worker_redis_url or a Redis result "
                    "backend): ETA messages are held in the fixed prefetch window and can "
                    "starve the worker");
    } else if (cfg->eta_horizon_s < 0)
        d->horizon_us = kv != NULL ? (int64_t)CC_DELAYSTORE_DEFAULT_HORIZON_S * 1000000 : 0;
    else if (kv == NULL) {
        if (cfg->eta_horizon_s > 0)
            cc_warn("worker_eta_horizon is set but no Redis is configured (worker_redis_url or "
                    "a Redis result backend): ETA messages are held unacked until due");
        d->horizon_us = 0;
    } else
        d->horizon_us = (int64_t)(cfg->eta_horizon_s * 1e6);
    if (d->horizon_us > 0)
        cc_info("delay store: ETA messages due in more than %.0f s go to Redis key %s",
                (double)d->horizon_us / 1e6, d->key);
}

void cc_delaystore_deinit(struct cc_delaystore *d)
{
    free(d->key);
    free(d->claimed_key);
    d->key = d->claimed_key = NULL;
}

bool cc_delaystore_wants(const struct cc_delaystore *d, int64_t eta_us, int64_t now_us)
{
    return d->horizon_us > 0 && d->kv != NULL && eta_us - now_us > d->horizon_us;
}

/* ZADD the record. CC_OK or CC_EBACKEND. */
static int delay_zadd(struct cc_delaystore *d, const char *rec, size_t len, int64_t eta_us,
                      struct cc_err *err)
{
    char score[32];
    redisReply *rep;
    int rc = CC_OK;

    snprintf(score, sizeof(score), "%lld", (long long)(eta_us / 1000));
    const char *argv[4] = {"ZADD", d->key, score, rec};
    size_t lens[4] = {4, strlen(d->key), strlen(score), len};
    rep = cc_redeliver_kv_cmd(d->kv, 4, argv, lens);
    if (rep == NULL)
        return cc_err_set(err, CC_EBACKEND, "redis unavailable");
    if (rep->type != REDIS_REPLY_INTEGER)
        rc = cc_err_set(err, CC_EBACKEND, "ZADD %s: %s", d->key,
                        rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
    freeReplyObject(rep);
    if (rc == CC_OK) {
        /* Our own record may be due before the next planned claim. */
        int64_t due_in_us = eta_us - cc_now_us();
        int64_t at = cc_mono_us() + (due_in_us > 0 ? due_in_us : 0);

        d->n_stored++;
        if (d->next_poll_us == 0 || at < d->next_poll_us)
            d->next_poll_us = at;
    }
    return rc;
}

int cc_delaystore_offer(struct cc_delaystore *d, const amqp_envelope_t *env, struct cc_request *r)
{
    struct cc_err err = {0};
    char *rec = NULL;
    size_t len = 0;
    int rc = cc_delaystore_encode(env->exchange, env->routing_key, &env->message.properties,
                                  env->message.body, &rec, &len, &err);

    if (rc != CC_OK) {
        cc_warn("Task %s[%s]: cannot encode it for the delay store (%s); holding it",
                cc_log_str(cc_consumer_request_name(r)), cc_log_str(r->msg.id), err.msg);
        return rc;
    }
    rc = cc_redeliver_kv_usable(d->kv) ? delay_zadd(d, rec, len, r->msg.eta_us, &err)
                                       : cc_err_set(&err, CC_EBACKEND, "redis backing off");
    if (rc == CC_OK) {
        free(rec);
        return CC_OK;
    }
    /* Hold it (as Celery would) and retry the move when Redis is back. */
    cc_warn("Task %s[%s]: delay store unavailable (%s); holding it until it can be moved",
            cc_log_str(cc_consumer_request_name(r)), cc_log_str(r->msg.id), err.msg);
    r->delay_rec = rec;
    r->delay_rec_len = len;
    if (!d->has_pending)
        d->next_retry_us = cc_mono_us() + CC_DELAYSTORE_RETRY_US;
    d->has_pending = true;
    return rc;
}

bool cc_delaystore_retry_due(const struct cc_delaystore *d)
{
    return d->has_pending && cc_mono_us() >= d->next_retry_us && cc_redeliver_kv_usable(d->kv);
}

void cc_delaystore_retry_done(struct cc_delaystore *d, size_t n_left)
{
    d->has_pending = n_left > 0;
    d->next_retry_us = cc_mono_us() + CC_DELAYSTORE_RETRY_US;
}

int cc_delaystore_retry(struct cc_delaystore *d, struct cc_request *r, int64_t now_us)
{
    struct cc_err err = {0};
    int rc;

    if (r->delay_rec == NULL)
        return CC_EAGAIN;
    if (!cc_delaystore_wants(d, r->msg.eta_us, now_us)) {
        free(r->delay_rec); /* due soon now: holding it is what we want */
        r->delay_rec = NULL;
        return CC_EAGAIN;
    }
    rc = delay_zadd(d, r->delay_rec, r->delay_rec_len, r->msg.eta_us, &err);
    if (rc == CC_OK)
        cc_info("Task %s[%s] due at %s moved to the delay store",
                cc_log_str(cc_consumer_request_name(r)), cc_log_str(r->msg.id),
                r->msg.eta ? r->msg.eta : "?");
    return rc;
}

/* KEYS[1] delayed set, KEYS[2] claimed set; ARGV[1] now (ms), ARGV[2] lease expiry (ms),
 * ARGV[3] limit. Returns {earliest remaining score or -1, member...}: expired claims first
 * (re-leased), then due members moved from the delayed set to the claimed set. */
static const char delay_claim_lua[] =
    "local now = tonumber(ARGV[1]) "
    "local limit = tonumber(ARGV[3]) "
    "local out = {-1} "
    "local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit) "
    "for i = 1, #stale do "
    "  redis.call('ZADD', KEYS[2], ARGV[2], stale[i]) "
    "  out[#out + 1] = stale[i] "
    "end "
    "if #out - 1 < limit then "
    "  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, "
    "                         limit - (#out - 1)) "
    "  for i = 1, #due do "
    "    redis.call('ZREM', KEYS[1], due[i]) "
    "    redis.call('ZADD', KEYS[2], ARGV[2], due[i]) "
    "    out[#out + 1] = due[i] "
    "  end "
    "end "
    "local a = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES') "
    "local b = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES') "
    "local nxt = -1 "
    "if #a == 2 then nxt = tonumber(a[2]) end "
    "if #b == 2 and (nxt < 0 or tonumber(b[2]) < nxt) then nxt = tonumber(b[2]) end "
    "out[1] = nxt "
    "return out";

/* Publish one claimed record. Returns CC_OK, CC_EBADMSG (undecodable: dropped by the
 * caller) or a broker error. */
static int delay_publish(struct cc_broker *b, const redisReply *m, struct cc_err *err)
{
    struct cc_delaystore_rec rec;
    int rc = cc_delaystore_decode(m->str, m->len, &rec, err);

    if (rc == CC_OK)
        rc = cc_broker_publish_props(b, rec.exchange, rec.routing_key, &rec.props, rec.body, err);
    cc_delaystore_rec_deinit(&rec);
    return rc;
}

bool cc_delaystore_is_due(const struct cc_delaystore *d)
{
    return d->kv != NULL && d->horizon_us > 0 && cc_mono_us() >= d->next_poll_us;
}

int cc_delaystore_tick(struct cc_delaystore *d, struct cc_broker *b, struct cc_err *err)
{
    int64_t mono = cc_mono_us(), now_ms = cc_now_us() / 1000, next_ms = -1;
    char now_s[32], lease_s[32], limit_s[16];
    redisReply *rep;
    size_t n = 0;
    int rc = CC_OK;

    if (d->kv == NULL || d->horizon_us <= 0 || mono < d->next_poll_us ||
        !cc_redeliver_kv_usable(d->kv))
        return CC_OK;
    d->next_poll_us = mono + CC_DELAYSTORE_POLL_MIN_US;
    snprintf(now_s, sizeof(now_s), "%lld", (long long)now_ms);
    snprintf(lease_s, sizeof(lease_s), "%lld", (long long)(now_ms + CC_DELAYSTORE_LEASE_MS));
    snprintf(limit_s, sizeof(limit_s), "%d", CC_DELAYSTORE_CLAIM_MAX);
    const char *argv[8] = {"EVAL",         delay_claim_lua, "2",     d->key,
                           d->claimed_key, now_s,           lease_s, limit_s};
    rep = cc_redeliver_kv_cmd(d->kv, 8, argv, NULL);
    if (rep == NULL)
        return CC_OK;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1) {
        cc_warn("delay store: claim on %s failed: %s", d->key,
                rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
        freeReplyObject(rep);
        return CC_OK;
    }
    if (rep->element[0]->type == REDIS_REPLY_INTEGER)
        next_ms = rep->element[0]->integer;
    n = rep->elements - 1;
    /* Publish everything, then one sync, then one ZREM of all of them. */
    for (size_t i = 1; i <= n && rc == CC_OK; i++) {
        struct cc_err perr = {0};
        int prc = delay_publish(b, rep->element[i], &perr);

        if (prc == CC_EBADMSG || prc == CC_ENOMEM)
            cc_error("delay store: dropping an unreadable record of %zu bytes from %s: %s",
                     rep->element[i]->len, d->claimed_key, perr.msg);
        else if (prc != CC_OK)
            rc = cc_err_set(err, prc, "%s", perr.msg);
    }
    if (rc == CC_OK && n > 0)
        rc = cc_broker_sync(b, err);
    if (rc == CC_OK && n > 0) {
        const char **zargv = cc_xmalloc((n + 2) * sizeof(*zargv));
        size_t *lens = cc_xmalloc((n + 2) * sizeof(*lens));
        redisReply *z;

        zargv[0] = "ZREM";
        lens[0] = 4;
        zargv[1] = d->claimed_key;
        lens[1] = strlen(d->claimed_key);
        for (size_t i = 1; i <= n; i++) {
            zargv[i + 1] = rep->element[i]->str;
            lens[i + 1] = rep->element[i]->len;
        }
        z = cc_redeliver_kv_cmd(d->kv, (int)(n + 2), zargv, lens);
        if (z == NULL || z->type != REDIS_REPLY_INTEGER)
            cc_warn("delay store: %zu republished records stay claimed in %s (they will be "
                    "published again when their lease expires)",
                    n, d->claimed_key);
        if (z != NULL)
            freeReplyObject(z);
        free(zargv);
        free(lens);
        d->n_published += n;
        cc_info("delay store: republished %zu due message%s from %s", n, n == 1 ? "" : "s", d->key);
    }
    freeReplyObject(rep);
    if (rc != CC_OK)
        return rc;
    /* Next claim: at once when the batch was full; else when the earliest record is due,
     * between 1 s and 30 s from now (a record another worker adds is due at least one
     * horizon later than now, and horizons are normally equal across the fleet). */
    if (n >= CC_DELAYSTORE_CLAIM_MAX) {
        d->next_poll_us = mono;
    } else {
        int64_t wait_us = CC_DELAYSTORE_POLL_MAX_US;

        if (d->horizon_us < wait_us)
            wait_us = d->horizon_us;
        if (next_ms >= 0 && (next_ms - now_ms) * 1000 < wait_us)
            wait_us = (next_ms - now_ms) * 1000;
        if (wait_us < CC_DELAYSTORE_POLL_MIN_US)
            wait_us = CC_DELAYSTORE_POLL_MIN_US;
        d->next_poll_us = mono + wait_us;
    }
    return CC_OK;
}

int64_t cc_delaystore_due_in_ms(const struct cc_delaystore *d, int64_t cap)
{
    int64_t left;

    if (d->kv == NULL || d->horizon_us <= 0)
        return cap;
    if (!cc_redeliver_kv_usable(d->kv)) /* backing off: look again in a second */
        return cap < 1000 ? cap : 1000;
    left = (d->next_poll_us - cc_mono_us() + 999) / 1000;
    if (left < 0)
        left = 0;
    return left < cap ? left : cap;
}
