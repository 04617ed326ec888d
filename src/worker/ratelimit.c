/* Rate limits per task type (see ratelimit.h).
 *
 * Design. Celery (celery/worker/consumer/consumer.py, _limit_task and
 * _schedule_bucket_request) keeps one kombu TokenBucket(rate, capacity=1) per limited task
 * type and a deque of the requests waiting for a token; a timer wakes the deque when the
 * next token is due. A capacity-1 bucket that starts full is exactly "a start may happen at
 * max(now, last start + 1/rate)", so each bucket here is one number, tat (the theoretical
 * arrival time of GCRA): admitting a request returns max(now, tat) and sets tat to that plus
 * the interval. The waiting requests live in one min-heap on their slot (ties in hold
 * order), which the worker polls like its ETA heap.
 *
 * Fleet-wide mode runs the same arithmetic in Redis (RL_LUA below) against Redis' clock and
 * returns the delay from now; the local tat follows the fleet's reservations so that a
 * fall-back to per-worker limiting starts from this worker's last reserved slot.
 *
 * Invariants: the interval is at least 1 us and never shorter than 1/rate (rounded up), so
 * the spacing is never below the limit; tat only moves forward; every held item is in the
 * heap exactly once.
 *
 * Reference: celery/utils/time.py rate(), kombu/utils/limits.py TokenBucket,
 * celery/worker/strategy.py (bucket after ETA), celery/app/annotations.py ('*' last).
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "celeryc/task.h"
#include "config.h"
#include "log.h"
#include "ratelimit.h"
#include "redis.h"
#include "url.h"
#include "util.h"

/* While the fleet Redis is unreachable, try it again this often (each attempt may block
 * the master for up to the Redis connect timeout when the host does not answer at all). */
#define RL_FLEET_RETRY_US (5 * 1000000LL)
/* I/O timeout of one EVAL: the master waits this long at most for a reply. */
#define RL_FLEET_IO_TIMEOUT_MS 1000

struct rl_bucket {
    char *name;
    double per_s;
    int64_t interval_us;
    int64_t tat_us; /* next free slot (local clock) */
};

struct rl_held {
    int64_t due_us;
    uint64_t seq;
    void *item;
};

struct cc_ratelimit {
    struct rl_bucket *b;
    size_t n_b, cap_b;
    double star_per_s;

    struct rl_held *h; /* min-heap on (due_us, seq) */
    size_t n_h, cap_h;
    uint64_t seq;

    struct cc_redis *redis; /* fleet mode when non-NULL */
    char *redis_url;        /* redacted, for logs */
    bool is_fleet_down;
    int64_t fleet_retry_us;
};

/* ---- Parsing ------------------------------------------------------------------------ */

int cc_ratelimit_parse(const char *text, double *per_s, struct cc_err *err)
{
    const char *p = text, *slash;
    char num[64], *end;
    size_t len;
    double n, div = 1;

    *per_s = 0;
    if (text == NULL)
        return CC_OK;
    while (isspace((unsigned char)*p))
        p++;
    len = strlen(p);
    while (len > 0 && isspace((unsigned char)p[len - 1]))
        len--;
    if (len == 0)
        return CC_OK;
    slash = memchr(p, '/', len);
    if (slash != NULL) {
        size_t mlen = len - (size_t)(slash - p) - 1;

        /* Celery's RATE_MODIFIER_MAP: '' (per second), 's', 'm', 'h'; anything else is a
         * KeyError there. */
        if (mlen == 0 || (mlen == 1 && slash[1] == 's'))
            div = 1;
        else if (mlen == 1 && slash[1] == 'm')
            div = 60;
        else if (mlen == 1 && slash[1] == 'h')
            div = 3600;
        else
            return cc_err_set(err, CC_ECONFIG, "rate '%.40s': unit must be /s, /m or /h", text);
        len = (size_t)(slash - p);
    }
    if (len == 0 || len >= sizeof(num))
        return cc_err_set(err, CC_ECONFIG, "rate '%.40s': not a number", text);
    memcpy(num, p, len);
    num[len] = '\0';
    n = strtod(num, &end);
    while (isspace((unsigned char)*end))
        end++;
    if (end == num || *end != '\0' || isspace((unsigned char)num[0]))
        return cc_err_set(err, CC_ECONFIG, "rate '%.40s': not a number", text);
    /* [issue 14] Python's float() takes "nan" and "inf" too: TokenBucket(inf) never runs dry,
     * so "inf" is no limit (*per_s = inf, which cc_ratelimit_set treats as none); NaN and negative
     * rates make no sense (a negative bucket never refills) and are refused. */
    if (isnan(n) || n < 0)
        return cc_err_set(err, CC_ECONFIG, "rate '%.40s': must be a number >= 0 (or inf)", text);
    *per_s = n / div;
    return CC_OK;
}

/* ---- Buckets ------------------------------------------------------------------------ */

struct cc_ratelimit *cc_ratelimit_new(void)
{
    return cc_xcalloc(1, sizeof(struct cc_ratelimit));
}

void cc_ratelimit_free(struct cc_ratelimit *rl)
{
    if (rl == NULL)
        return;
    for (size_t i = 0; i < rl->n_b; i++)
        free(rl->b[i].name);
    free(rl->b);
    free(rl->h);
    cc_redis_free(rl->redis);
    free(rl->redis_url);
    free(rl);
}

static struct rl_bucket *rl_find(const struct cc_ratelimit *rl, const char *name)
{
    for (size_t i = 0; i < rl->n_b; i++)
        if (strcmp(rl->b[i].name, name) == 0)
            return &rl->b[i];
    return NULL;
}

void cc_ratelimit_set(struct cc_ratelimit *rl, const char *name, double per_s)
{
    struct rl_bucket *b = rl_find(rl, name);

    if (per_s <= 0 || !isfinite(per_s)) {
        if (b != NULL) {
            free(b->name);
            *b = rl->b[--rl->n_b];
        }
        return;
    }
    if (b == NULL) {
        if (rl->n_b == rl->cap_b) {
            rl->cap_b = rl->cap_b ? rl->cap_b * 2 : 8;
            rl->b = cc_xrealloc(rl->b, rl->cap_b * sizeof(*rl->b));
        }
        b = &rl->b[rl->n_b++];
        memset(b, 0, sizeof(*b));
        b->name = cc_xstrdup(name);
        b->tat_us = INT64_MIN;
    }
    b->per_s = per_s;
    /* Rounded up, so starts are never closer than 1/rate; at least 1 us. */
    double iv = ceil(1e6 / per_s);
    b->interval_us = iv < 1 ? 1 : iv > 1e15 ? (int64_t)1e15 : (int64_t)iv;
}

/* Split one "name=rate" item; blanks trimmed. Returns CC_OK (name_out empty for a blank
 * item) or CC_ECONFIG. */
static int rl_item(const char *b, const char *e, char *name, size_t namesz, double *per_s,
                   struct cc_err *err)
{
    const char *eq;
    char rate[64];

    while (b < e && isspace((unsigned char)*b))
        b++;
    while (e > b && isspace((unsigned char)e[-1]))
        e--;
    name[0] = '\0';
    if (b == e)
        return CC_OK;
    eq = memchr(b, '=', (size_t)(e - b));
    if (eq == NULL)
        return cc_err_set(err, CC_ECONFIG, "'%.*s': expected task_name=rate", (int)(e - b), b);
    const char *ne = eq;
    while (ne > b && isspace((unsigned char)ne[-1]))
        ne--;
    if (ne == b || (size_t)(ne - b) >= namesz)
        return cc_err_set(err, CC_ECONFIG, "'%.*s': bad task name", (int)(e - b), b);
    if ((size_t)(e - eq - 1) >= sizeof(rate))
        return cc_err_set(err, CC_ECONFIG, "'%.*s': rate too long", (int)(e - b), b);
    memcpy(name, b, (size_t)(ne - b));
    name[ne - b] = '\0';
    memcpy(rate, eq + 1, (size_t)(e - eq - 1));
    rate[e - eq - 1] = '\0';
    return cc_ratelimit_parse(rate, per_s, err);
}

/* Call fn(ud, name, per_s) for every item of a "name=rate,..." list, in order, after
 * checking the whole list (a bad item calls nothing). fn is NULL for a check only. */
static int rl_list_each(const char *list, void (*fn)(void *ud, const char *name, double per_s),
                        void *ud, struct cc_err *err)
{
    for (int pass = 0; pass < (fn != NULL ? 2 : 1); pass++) {
        const char *p = list != NULL ? list : "";

        for (;;) {
            const char *comma = strchr(p, ',');
            const char *e = comma != NULL ? comma : p + strlen(p);
            char name[256];
            double per_s;
            int rc = rl_item(p, e, name, sizeof(name), &per_s, err);

            if (rc != CC_OK)
                return rc;
            if (pass == 1 && name[0] != '\0')
                fn(ud, name, per_s);
            if (comma == NULL)
                break;
            p = comma + 1;
        }
    }
    return CC_OK;
}

static void rl_list_set(void *ud, const char *name, double per_s)
{
    struct cc_ratelimit *rl = ud;

    if (strcmp(name, "*") == 0)
        rl->star_per_s = per_s;
    else
        cc_ratelimit_set(rl, name, per_s);
}

int cc_ratelimit_set_list(struct cc_ratelimit *rl, const char *list, struct cc_err *err)
{
    return rl_list_each(list, rl_list_set, rl, err);
}

double cc_ratelimit_star(const struct cc_ratelimit *rl)
{
    return rl->star_per_s;
}

double cc_ratelimit_get(const struct cc_ratelimit *rl, const char *name)
{
    const struct rl_bucket *b = rl_find(rl, name);

    return b != NULL ? b->per_s : 0;
}

size_t cc_ratelimit_count(const struct cc_ratelimit *rl)
{
    return rl != NULL ? rl->n_b : 0;
}

/* ---- Admission ---------------------------------------------------------------------- */

/* GCRA with a burst of one, as a capacity-1 TokenBucket that starts full. */
static int64_t rl_admit_local(struct rl_bucket *b, int64_t now_us)
{
    int64_t slot = b->tat_us > now_us ? b->tat_us : now_us;

    b->tat_us = slot + b->interval_us;
    return slot;
}

/* KEYS[1] = the task's slot key, ARGV[1] = interval (us). Returns the delay (us) from
 * Redis' now to the reserved slot. Everything in Redis' clock, so worker clocks do not
 * matter. Lua 5.1 numbers are doubles: microseconds since the epoch (~2^51) are exact, and
 * '%.0f' keeps tostring's '%.14g' from rounding the stored value. replicate_commands lets a
 * Redis older than 5 write after TIME; newer ones do that anyway. */
static const char RL_LUA[] =
    "if redis.replicate_commands then pcall(redis.replicate_commands) end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local iv = tonumber(ARGV[1])\n"
    "local tat = tonumber(redis.call('GET', KEYS[1]) or 0) or 0\n"
    "if tat < now then tat = now end\n"
    "local nxt = tat + iv\n"
    "redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX',\n"
    "           string.format('%.0f', math.floor((nxt - now) / 1000) + 1000))\n"
    "return math.floor(tat - now)\n";

int cc_ratelimit_fleet_open(struct cc_ratelimit *rl, const char *url, struct cc_err *err)
{
    int rc;

    cc_redis_free(rl->redis);
    free(rl->redis_url);
    rl->redis_url = NULL;
    rl->is_fleet_down = false;
    rc = cc_redis_open(url, RL_FLEET_IO_TIMEOUT_MS, &rl->redis, err);
    if (rc == CC_OK)
        rl->redis_url = cc_url_redact(url);
    return rc;
}

/* One EVAL. Returns CC_OK and the slot (local clock), or the Redis error. */
static int rl_admit_fleet(struct cc_ratelimit *rl, const struct rl_bucket *b, int64_t now_us,
                          int64_t *slot, struct cc_err *err)
{
    char key[300], iv[32];
    const char *argv[5] = {"EVAL", RL_LUA, "1", key, iv};
    long long delay = 0;
    int rc;

    snprintf(key, sizeof(key), "%s%s", CC_RATELIMIT_REDIS_PREFIX, b->name);
    snprintf(iv, sizeof(iv), "%lld", (long long)b->interval_us);
    rc = cc_redis_cmd_int(rl->redis, 5, argv, NULL, &delay, err);
    if (rc == CC_OK)
        *slot = now_us + (delay > 0 ? (int64_t)delay : 0);
    return rc;
}

int64_t cc_ratelimit_admit(struct cc_ratelimit *rl, const char *name, int64_t now_us)
{
    struct rl_bucket *b;
    struct cc_err err = {0};
    int64_t slot;

    if (rl->n_b == 0 || (b = rl_find(rl, name)) == NULL)
        return now_us;
    if (rl->redis == NULL ||
        (rl->is_fleet_down && now_us < rl->fleet_retry_us && !cc_redis_probe(rl->redis)))
        return rl_admit_local(b, now_us); /* a probe finds it back early (issue #14) */
    if (rl_admit_fleet(rl, b, now_us, &slot, &err) != CC_OK) {
        if (!rl->is_fleet_down)
            cc_warn("rate limits: fleet Redis %s unavailable (%s); limiting per worker until "
                    "it is back",
                    rl->redis_url ? rl->redis_url : "?", err.msg);
        rl->is_fleet_down = true;
        rl->fleet_retry_us = now_us + RL_FLEET_RETRY_US;
        return rl_admit_local(b, now_us);
    }
    if (rl->is_fleet_down) {
        cc_warn("rate limits: fleet Redis %s is back; limits are fleet-wide again",
                rl->redis_url ? rl->redis_url : "?");
        rl->is_fleet_down = false;
    }
    /* This worker's own next slot, should it fall back to per-worker limiting. */
    if (slot + b->interval_us > b->tat_us)
        b->tat_us = slot + b->interval_us;
    return slot;
}

bool cc_ratelimit_is_fleet_down(const struct cc_ratelimit *rl)
{
    return rl->is_fleet_down;
}

/* ---- Held requests ------------------------------------------------------------------ */

static bool rl_before(const struct rl_held *a, const struct rl_held *b)
{
    return a->due_us < b->due_us || (a->due_us == b->due_us && a->seq < b->seq);
}

void cc_ratelimit_hold(struct cc_ratelimit *rl, void *item, int64_t due_us)
{
    struct rl_held x = {.due_us = due_us, .seq = rl->seq++, .item = item};
    size_t i;

    if (rl->n_h == rl->cap_h) {
        rl->cap_h = rl->cap_h ? rl->cap_h * 2 : 16;
        rl->h = cc_xrealloc(rl->h, rl->cap_h * sizeof(*rl->h));
    }
    i = rl->n_h++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;

        if (!rl_before(&x, &rl->h[parent]))
            break;
        rl->h[i] = rl->h[parent];
        i = parent;
    }
    rl->h[i] = x;
}

static void *rl_pop_top(struct cc_ratelimit *rl)
{
    void *top = rl->h[0].item;
    struct rl_held last = rl->h[--rl->n_h];
    size_t i = 0;

    for (;;) {
        size_t c = 2 * i + 1;

        if (c >= rl->n_h)
            break;
        if (c + 1 < rl->n_h && rl_before(&rl->h[c + 1], &rl->h[c]))
            c++;
        if (!rl_before(&rl->h[c], &last))
            break;
        rl->h[i] = rl->h[c];
        i = c;
    }
    if (rl->n_h > 0)
        rl->h[i] = last;
    return top;
}

void *cc_ratelimit_pop_due(struct cc_ratelimit *rl, int64_t now_us)
{
    if (rl->n_h == 0 || rl->h[0].due_us > now_us)
        return NULL;
    return rl_pop_top(rl);
}

void *cc_ratelimit_pop_any(struct cc_ratelimit *rl)
{
    return rl->n_h == 0 ? NULL : rl_pop_top(rl);
}

int64_t cc_ratelimit_next_due_us(const struct cc_ratelimit *rl)
{
    return rl->n_h == 0 ? INT64_MAX : rl->h[0].due_us;
}

size_t cc_ratelimit_n_held(const struct cc_ratelimit *rl)
{
    return rl != NULL ? rl->n_h : 0;
}

void *cc_ratelimit_held_get(const struct cc_ratelimit *rl, size_t i)
{
    CC_ASSERT(i < rl->n_h);
    return rl->h[i].item;
}

/* ---- From the worker's configuration ------------------------------------------------ */

static void rl_log_limit(const char *name, double per_s, bool is_fleet)
{
    cc_info("rate limit: %s at most %g/s (%s)", name, per_s,
            is_fleet ? "fleet-wide" : "per worker");
}

/* One task_rate_limits lookup: the last item naming `name` (or "*"). */
struct rl_lookup {
    const char *name;
    bool is_found;
    double per_s;
};

static void rl_list_lookup(void *ud, const char *name, double per_s)
{
    struct rl_lookup *l = ud;

    if (strcmp(name, l->name) == 0) {
        l->is_found = true;
        l->per_s = per_s;
    }
}

static void rl_list_warn_unknown(void *ud, const char *name, double per_s)
{
    (void)ud;
    (void)per_s;
    if (strcmp(name, "*") == 0)
        return;
    for (size_t j = 0; cc_task_table[j] != NULL; j++)
        if (strcmp(cc_task_table[j]->name, name) == 0)
            return;
    cc_warn("task_rate_limits: no task named '%s' in this worker", name);
}

int cc_ratelimit_from_config(const struct cc_config *cfg, struct cc_ratelimit **out,
                             struct cc_err *err)
{
    struct cc_ratelimit *rl = cc_ratelimit_new();
    struct rl_lookup star = {.name = "*"};
    double dflt = 0;
    int rc = CC_OK;

    *out = NULL;
    if (cfg->disable_rate_limits)
        goto done;
    /* Options were checked when loaded, so these only fail on a bug. */
    rc = cc_ratelimit_parse(cfg->default_rate_limit, &dflt, err);
    if (rc == CC_OK)
        rc = rl_list_each(cfg->rate_limits, rl_list_lookup, &star, err);
    for (size_t i = 0; rc == CC_OK && cc_task_table[i] != NULL; i++) {
        const struct cc_task_entry *e = cc_task_table[i];
        struct rl_lookup own = {.name = e->name};
        double per_s = dflt;

        if (e->rate_limit != NULL && e->rate_limit[0] != '\0') {
            struct cc_err perr = {0};

            rc = cc_ratelimit_parse(e->rate_limit, &per_s, &perr);
            if (rc != CC_OK) {
                rc = cc_err_set(err, CC_ECONFIG, "task %s: rate_limit: %s", e->name, perr.msg);
                break;
            }
        }
        /* task_annotations: the task's own item, then '*', each overriding. */
        rc = rl_list_each(cfg->rate_limits, rl_list_lookup, &own, err);
        if (own.is_found)
            per_s = own.per_s;
        if (star.is_found)
            per_s = star.per_s;
        cc_ratelimit_set(rl, e->name, per_s);
    }
    if (rc == CC_OK)
        rc = rl_list_each(cfg->rate_limits, rl_list_warn_unknown, NULL, err);
    if (rc == CC_OK && cfg->fleet_rate_limits && rl->n_b > 0) {
        const char *url = cfg->fleet_rate_limits_url != NULL && cfg->fleet_rate_limits_url[0]
                              ? cfg->fleet_rate_limits_url
                              : cfg->result_backend;

        if (url == NULL || strcmp(url, "none") == 0)
            rc = cc_err_set(err, CC_ECONFIG,
                            "worker_fleet_rate_limits needs a Redis: set "
                            "worker_fleet_rate_limits_url or a Redis result backend");
        else
            rc = cc_ratelimit_fleet_open(rl, url, err);
    }
done:
    for (size_t i = 0; rc == CC_OK && i < rl->n_b; i++)
        rl_log_limit(rl->b[i].name, rl->b[i].per_s, rl->redis != NULL);
    if (rc != CC_OK) {
        cc_ratelimit_free(rl);
        return rc;
    }
    *out = rl;
    return CC_OK;
}
