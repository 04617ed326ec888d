/* bench_statspub: publish N usage events (issue #7, proto/statsevent.h) for the statistics
 * indexer benchmark, fast, with a realistic mix, deterministic for a seed.
 *
 *   bench_statspub URL TYPE N [--objects 10000] [--object-zipf 1.0] [--visitors 50000]
 *       [--visitor-zipf 0.6] [--days 3] [--robots-pct 3] [--robots-file F] [--dclick-pct 3]
 *       [--explicit-pct 10] [--dup-pct 2] [--bad-pct 0] [--window 30] [--seed 1]
 *       [--extra-queue Q]
 *
 * Topology as the plan says, declared idempotently with the indexer's flags: exchange
 * `events` (direct, durable), queue `stats-TYPE` (durable, no arguments) bound with routing
 * key TYPE, dead-letter queue `stats-TYPE.dead`. --extra-queue binds one more durable queue to
 * the same key, so each event lands in both (the bare-consumer ceiling drains that copy).
 * Every message: exchange `events`, routing key TYPE, content_type application/json,
 * delivery_mode 2, body one JSON event. Publisher confirms (a window of 20,000 outstanding,
 * all waited for at the end), so when this exits 0 all N are in the queue.
 *
 * The mix (N messages in all, timestamps rising from now - DAYS days to now, +- 2 s jitter):
 *   objects   `rec-NNNNNN`, Zipf(OBJECT_ZIPF) over OBJECTS (0 = uniform)
 *   visitors  Zipf(VISITOR_ZIPF) over VISITORS; visitor v is by v % 10: 0-2 a logged-in user
 *             (user_id, half of them JSON integers, + session_id + ip_address + user_agent),
 *             3-6 a session (session_id + ip + ua), 7-9 anonymous (ip_address + user_agent);
 *             each has a fixed browser user agent
 *   robots    ROBOTS_PCT % of the events come from 200 crawler visitors (ip + a user agent
 *             built around a pattern of ROBOTS_FILE; without one, a few common crawler names)
 *   explicit  EXPLICIT_PCT % carry a unique_id
 *   dups      after an event, with DUP_PCT % probability, a recent explicit-id event is sent
 *             again, body unchanged (a redelivered emit)
 *   dclicks   after a derived-id event, with DCLICK_PCT % probability, the same visitor and
 *             object again, timestamp later within the same double-click window (WINDOW s)
 *   bad       BAD_PCT % malformed (bad JSON, missing object_id, unparsable timestamp)
 * Robots are told with the indexer's rule (case-insensitive substring of a pattern of the
 * list), so the expected counts below hold for the list given. Prints one JSON line:
 *   {"published": N, "seconds": S, "per_s": R, "queue_depth": D,
 *    "expected": {"read", "inserted", "duplicates", "robots", "errors", "agg_events",
 *                 "agg_unique_visitors", "agg_keys"}, "explicit_dups_sent": K,
 *    "body_bytes": total bytes of the bodies}
 * where agg_events = sum of stats_daily.count, agg_unique_visitors = sum of unique_visitors,
 * agg_keys = rows of stats_daily, after the queue was indexed once into empty tables.
 */
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker.h"
#include "util.h"

#define WINDOW_OUTSTANDING 20000 /* publishes not yet confirmed, at most */
#define N_ROBOT_VISITORS   200
#define RING               4096 /* recent explicit-id bodies, for duplicates */
#define BODY_MAX           1024

struct opts {
    const char *url, *type, *robots_file, *extra_queue;
    long n;
    long objects, visitors;
    double object_zipf, visitor_zipf;
    double days, robots_pct, dclick_pct, explicit_pct, dup_pct, bad_pct;
    long window_s;
    uint64_t seed;
};

/* ---- random numbers (xoshiro256**, seeded by splitmix64) ---------------------------------- */

static uint64_t rng_s[4];

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rnd(void)
{
    uint64_t r = rotl(rng_s[1] * 5, 7) * 9, t = rng_s[1] << 17;
    rng_s[2] ^= rng_s[0];
    rng_s[3] ^= rng_s[1];
    rng_s[1] ^= rng_s[2];
    rng_s[0] ^= rng_s[3];
    rng_s[2] ^= t;
    rng_s[3] = rotl(rng_s[3], 45);
    return r;
}

static double rnd01(void)
{
    return (double)(rnd() >> 11) * 0x1.0p-53;
}

static bool chance(double pct)
{
    return pct > 0 && rnd01() * 100.0 < pct;
}

/* Zipf(s) over n ranks: cumulative weights, sampled by binary search (s = 0: uniform). */
struct zipf {
    long n;
    double *cdf; /* NULL: uniform */
};

static void zipf_init(struct zipf *z, long n, double s)
{
    double sum = 0;

    z->n = n;
    z->cdf = NULL;
    if (s <= 0)
        return;
    z->cdf = malloc(sizeof(double) * (size_t)n);
    if (z->cdf == NULL) {
        fprintf(stderr, "bench_statspub: out of memory\n");
        exit(1);
    }
    for (long k = 0; k < n; k++) {
        sum += 1.0 / pow((double)(k + 1), s);
        z->cdf[k] = sum;
    }
    for (long k = 0; k < n; k++)
        z->cdf[k] /= sum;
}

static long zipf_draw(const struct zipf *z)
{
    double u = rnd01();
    long lo = 0, hi = z->n - 1;

    if (z->cdf == NULL)
        return (long)(rnd() % (uint64_t)z->n);
    while (lo < hi) {
        long mid = lo + (hi - lo) / 2;
        if (z->cdf[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* ---- a set of 64-bit keys (the expected counts) -------------------------------------------- */

struct set {
    uint64_t *slot; /* 0 = empty; keys are mixed so that 0 never occurs (see set_add) */
    size_t cap, len;
};

static uint64_t mix64(uint64_t a, uint64_t b)
{
    uint64_t x = a * 0x9e3779b97f4a7c15ULL ^ b;
    return splitmix(&x) | 1;
}

/* Returns true when key was new. */
static bool set_add(struct set *s, uint64_t key)
{
    size_t i;

    if (s->len * 2 >= s->cap) {
        struct set big = {calloc(s->cap ? s->cap * 2 : 1024, sizeof(uint64_t)),
                          s->cap ? s->cap * 2 : 1024, 0};
        if (big.slot == NULL) {
            fprintf(stderr, "bench_statspub: out of memory\n");
            exit(1);
        }
        for (size_t j = 0; j < s->cap; j++)
            if (s->slot[j] != 0)
                set_add(&big, s->slot[j]);
        free(s->slot);
        *s = big;
    }
    for (i = key & (s->cap - 1); s->slot[i] != 0; i = (i + 1) & (s->cap - 1))
        if (s->slot[i] == key)
            return false;
    s->slot[i] = key;
    s->len++;
    return true;
}

/* ---- robots ------------------------------------------------------------------------------ */

static char **robot_pat;
static size_t n_robot_pat;
static size_t *robot_ua_pat; /* patterns that can go into a JSON string as they are */
static size_t n_robot_ua_pat;

static void robots_load(const char *path)
{
    static const char *fallback[] = {"googlebot", "bingbot",         "yandexbot",
                                     "curl/",     "python-requests", "headlesschrome"};
    char line[512];
    FILE *f = path != NULL ? fopen(path, "r") : NULL;

    if (path != NULL && f == NULL) {
        fprintf(stderr, "bench_statspub: cannot read %s\n", path);
        exit(1);
    }
    robot_pat = calloc(4096, sizeof(char *));
    if (f == NULL) {
        for (size_t i = 0; i < sizeof fallback / sizeof fallback[0]; i++)
            robot_pat[n_robot_pat++] = strdup(fallback[i]);
        return;
    }
    while (n_robot_pat < 4096 && fgets(line, sizeof line, f) != NULL) {
        char *s = line, *e;
        while (isspace((unsigned char)*s))
            s++;
        e = s + strlen(s);
        while (e > s && isspace((unsigned char)e[-1]))
            *--e = '\0';
        if (*s == '\0' || *s == '#')
            continue;
        for (char *p = s; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        robot_pat[n_robot_pat++] = strdup(s);
    }
    fclose(f);
    if (n_robot_pat == 0) {
        fprintf(stderr, "bench_statspub: no pattern in %s\n", path);
        exit(1);
    }
}

static void robots_index(void)
{
    robot_ua_pat = calloc(n_robot_pat, sizeof(size_t));
    for (size_t i = 0; i < n_robot_pat; i++)
        if (strpbrk(robot_pat[i], "\"\\") == NULL && strlen(robot_pat[i]) < 100)
            robot_ua_pat[n_robot_ua_pat++] = i;
    if (n_robot_ua_pat == 0) {
        fprintf(stderr, "bench_statspub: no usable robot pattern\n");
        exit(1);
    }
}

/* The indexer's rule: a case-insensitive substring of any pattern. */
static bool ua_is_robot(const char *ua)
{
    char low[512];
    size_t i;

    for (i = 0; ua[i] && i < sizeof low - 1; i++)
        low[i] = (char)tolower((unsigned char)ua[i]);
    low[i] = '\0';
    for (size_t k = 0; k < n_robot_pat; k++)
        if (strstr(low, robot_pat[k]) != NULL)
            return true;
    return false;
}

/* ---- events ------------------------------------------------------------------------------ */

static const char *const BROWSERS[] = {
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
};
#define N_BROWSERS (sizeof BROWSERS / sizeof BROWSERS[0])

struct visitor {
    long v;       /* index; robots come after the human visitors */
    int kind;     /* 0 user, 1 session, 2 anonymous (ip + ua) */
    char ua[256]; /* its user agent */
    bool is_robot;
};

static void visitor_get(const struct opts *o, long v, struct visitor *out)
{
    out->v = v;
    if (v >= o->visitors) { /* a crawler */
        const char *p = robot_pat[robot_ua_pat[(size_t)(v - o->visitors) % n_robot_ua_pat]];
        out->kind = 2;
        snprintf(out->ua, sizeof out->ua,
                 "Mozilla/5.0 (compatible; %s/2.%ld; +https://example.org/)", p,
                 (v - o->visitors) % 7);
    } else {
        int k = (int)(v % 10);
        out->kind = k <= 2 ? 0 : k <= 6 ? 1 : 2;
        snprintf(out->ua, sizeof out->ua, "%s", BROWSERS[(size_t)(v / 10) % N_BROWSERS]);
    }
    out->is_robot = ua_is_robot(out->ua);
}

/* The visitor key's identity (visitor fields are unique per visitor index by construction). */
static uint64_t visitor_ident(const struct visitor *vi)
{
    return mix64((uint64_t)vi->v, 77);
}

static int fmt_ts(char *buf, size_t size, int64_t ts_ms)
{
    time_t s = (time_t)(ts_ms / 1000);
    struct tm tm;

    gmtime_r(&s, &tm);
    return snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                    tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                    (int)(ts_ms % 1000));
}

static int build_body(char *buf, size_t size, const struct opts *o, int64_t ts_ms, long obj,
                      const struct visitor *vi, const char *unique_id)
{
    char ts[64], vis[384], uid[96] = "";
    long v = vi->v;

    fmt_ts(ts, sizeof ts, ts_ms);
    if (unique_id != NULL)
        snprintf(uid, sizeof uid, ",\"unique_id\":\"%s\"", unique_id);
    switch (vi->kind) {
    case 0:
        if (v % 20 < 10)
            snprintf(vis, sizeof vis, "\"user_id\":%ld,", 100000 + v);
        else
            snprintf(vis, sizeof vis, "\"user_id\":\"user-%ld\",", v);
        snprintf(vis + strlen(vis), sizeof vis - strlen(vis), "\"session_id\":\"%016" PRIx64 "\",",
                 mix64((uint64_t)v, 1));
        break;
    case 1:
        snprintf(vis, sizeof vis, "\"session_id\":\"%016" PRIx64 "\",", mix64((uint64_t)v, 1));
        break;
    default:
        vis[0] = '\0';
    }
    return snprintf(buf, size,
                    "{\"timestamp\":\"%s\",\"type\":\"%s\",\"object_id\":\"rec-%06ld\",%s"
                    "\"ip_address\":\"10.%ld.%ld.%ld\",\"user_agent\":\"%s\","
                    "\"referrer\":\"https://example.org/search?q=%ld\"%s}",
                    ts, o->type, obj, vis, (v >> 16) & 255, (v >> 8) & 255, v & 255, vi->ua,
                    obj % 97, uid);
}

/* ---- publishing -------------------------------------------------------------------------- */

struct pub {
    struct cc_broker b;
    amqp_basic_properties_t props;
    const char *type;
    long sent;
    long long body_bytes;
};

static void pub_one(struct pub *p, const char *body, size_t len)
{
    struct cc_err err = {0};

    if (cc_broker_publish_props(&p->b, "events", p->type, &p->props,
                                (amqp_bytes_t){len, (void *)body}, &err) != CC_OK) {
        fprintf(stderr, "bench_statspub: publish %ld: %s\n", p->sent, err.msg);
        exit(1);
    }
    p->sent++;
    p->body_bytes += (long long)len;
    if (p->b.publish_seq - p->b.confirmed_upto > WINDOW_OUTSTANDING &&
        cc_broker_wait_confirms(&p->b, p->b.publish_seq - WINDOW_OUTSTANDING / 2, 120000, &err) !=
            CC_OK) {
        fprintf(stderr, "bench_statspub: confirms: %s\n", err.msg);
        exit(1);
    }
}

static void declare(struct pub *p, const char *queue, const char *key)
{
    struct cc_err err = {0};

    if (cc_broker_declare_queue(&p->b, queue, 0, &err) != CC_OK ||
        (key != NULL && cc_broker_bind(&p->b, queue, "events", key, &err) != CC_OK)) {
        fprintf(stderr, "bench_statspub: declare %s: %s (%s)\n", queue, err.msg,
                cc_broker_last_reply(&p->b));
        exit(1);
    }
}

static double num_opt(const char *name, const char *v)
{
    char *end;
    double d = strtod(v, &end);

    if (*v == '\0' || *end != '\0' || d < 0) {
        fprintf(stderr, "bench_statspub: bad %s: %s\n", name, v);
        exit(2);
    }
    return d;
}

static void parse(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){.objects = 10000,
                       .visitors = 50000,
                       .object_zipf = 1.0,
                       .visitor_zipf = 0.6,
                       .days = 3,
                       .robots_pct = 3,
                       .dclick_pct = 3,
                       .explicit_pct = 10,
                       .dup_pct = 2,
                       .window_s = 30,
                       .seed = 1};
    if (argc < 4) {
        fprintf(stderr,
                "usage: %s URL TYPE N [--objects K] [--object-zipf S] [--visitors V] "
                "[--visitor-zipf S] [--days D] [--robots-pct P] [--robots-file F] "
                "[--dclick-pct P] [--explicit-pct P] [--dup-pct P] [--bad-pct P] "
                "[--window S] [--seed N] [--extra-queue Q]\n",
                argv[0]);
        exit(2);
    }
    o->url = argv[1];
    o->type = argv[2];
    o->n = (long)num_opt("N", argv[3]);
    for (int i = 4; i < argc; i += 2) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL) {
            fprintf(stderr, "bench_statspub: %s needs a value\n", k);
            exit(2);
        }
        if (strcmp(k, "--objects") == 0)
            o->objects = (long)num_opt(k, v);
        else if (strcmp(k, "--object-zipf") == 0)
            o->object_zipf = num_opt(k, v);
        else if (strcmp(k, "--visitors") == 0)
            o->visitors = (long)num_opt(k, v);
        else if (strcmp(k, "--visitor-zipf") == 0)
            o->visitor_zipf = num_opt(k, v);
        else if (strcmp(k, "--days") == 0)
            o->days = num_opt(k, v);
        else if (strcmp(k, "--robots-pct") == 0)
            o->robots_pct = num_opt(k, v);
        else if (strcmp(k, "--robots-file") == 0)
            o->robots_file = v;
        else if (strcmp(k, "--dclick-pct") == 0)
            o->dclick_pct = num_opt(k, v);
        else if (strcmp(k, "--explicit-pct") == 0)
            o->explicit_pct = num_opt(k, v);
        else if (strcmp(k, "--dup-pct") == 0)
            o->dup_pct = num_opt(k, v);
        else if (strcmp(k, "--bad-pct") == 0)
            o->bad_pct = num_opt(k, v);
        else if (strcmp(k, "--window") == 0)
            o->window_s = (long)num_opt(k, v);
        else if (strcmp(k, "--seed") == 0)
            o->seed = (uint64_t)num_opt(k, v);
        else if (strcmp(k, "--extra-queue") == 0)
            o->extra_queue = v;
        else {
            fprintf(stderr, "bench_statspub: unknown option %s\n", k);
            exit(2);
        }
    }
    if (o->objects < 1 || o->visitors < 1 || o->window_s < 1 || o->days <= 0 || o->days > 29) {
        fprintf(stderr, "bench_statspub: need objects, visitors, window >= 1, 0 < days <= 29\n");
        exit(2);
    }
}

/* What the indexer must find: every counted once by its identity. */
struct expect {
    struct set ids, visitors, keys;
    long robots, errors, agg_events;
};

static void expect_event(struct expect *x, const struct opts *o, const struct visitor *vi, long obj,
                         int64_t ts_ms, long explicit_no)
{
    int64_t ts_s = ts_ms / 1000, day = ts_s / 86400;
    uint64_t id;

    if (explicit_no >= 0)
        id = mix64(mix64((uint64_t)explicit_no, 3), 0xe);
    else
        id = mix64(mix64(mix64((uint64_t)obj, visitor_ident(vi)),
                         (uint64_t)(ts_s / o->window_s * o->window_s)),
                   0xd);
    if (!set_add(&x->ids, id))
        return; /* a duplicate */
    if (vi->is_robot) {
        x->robots++;
        return;
    }
    x->agg_events++;
    set_add(&x->keys, mix64((uint64_t)obj, (uint64_t)day));
    set_add(&x->visitors, mix64(mix64((uint64_t)obj, (uint64_t)day), visitor_ident(vi)));
}

int main(int argc, char **argv)
{
    struct opts o;
    struct pub p;
    struct cc_err err = {0};
    struct zipf zo, zv;
    struct expect x = {0};
    static char ring[RING][BODY_MAX];
    static size_t ring_len[RING];
    char body[BODY_MAX], queue[300], dlq[320];
    long ring_n = 0, explicit_no = 0, dups = 0;
    int64_t now_ms, start_ms, span_ms, t0;
    uint64_t seed;

    parse(argc, argv, &o);
    seed = o.seed;
    for (int i = 0; i < 4; i++)
        rng_s[i] = splitmix(&seed);
    robots_load(o.robots_file);
    robots_index();
    for (size_t i = 0; i < N_BROWSERS; i++)
        if (ua_is_robot(BROWSERS[i]))
            fprintf(stderr,
                    "bench_statspub: warning: browser user agent %zu matches the robots list\n", i);
    zipf_init(&zo, o.objects, o.object_zipf);
    zipf_init(&zv, o.visitors, o.visitor_zipf);

    memset(&p, 0, sizeof p);
    p.type = o.type;
    if (cc_broker_connect(&p.b, o.url, 0, 10, NULL, &err) != CC_OK ||
        cc_broker_declare_exchange(&p.b, "events", "direct", true, &err) != CC_OK) {
        fprintf(stderr, "bench_statspub: %s\n", err.msg);
        return 1;
    }
    snprintf(queue, sizeof queue, "stats-%s", o.type);
    snprintf(dlq, sizeof dlq, "stats-%s.dead", o.type);
    declare(&p, queue, o.type);
    declare(&p, dlq, NULL);
    if (o.extra_queue != NULL)
        declare(&p, o.extra_queue, o.type);
    if (cc_broker_confirm_select(&p.b, &err) != CC_OK) {
        fprintf(stderr, "bench_statspub: confirm.select: %s\n", err.msg);
        return 1;
    }
    p.props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
    p.props.content_type = amqp_cstring_bytes("application/json");
    p.props.delivery_mode = 2;

    /* Timestamps: from now - days to now - 1 min (never in the future, never older than the
     * retention), rising with the message number, jittered by up to 2 s. */
    now_ms = cc_now_us() / 1000;
    span_ms = (int64_t)(o.days * 86400e3) - 60000;
    start_ms = now_ms - 60000 - span_ms;
    t0 = cc_mono_us();
    while (p.sent < o.n) {
        int64_t ts = start_ms + (int64_t)((double)span_ms * (double)p.sent / (double)o.n) +
                     (int64_t)(rnd() % 2000);
        struct visitor vi;
        long obj;
        int len;
        bool is_explicit;
        char uid[64];

        if (chance(o.bad_pct)) {
            char tsb[64];
            fmt_ts(tsb, sizeof tsb, ts);
            switch (rnd() % 3) {
            case 0: /* no object_id */
                len = snprintf(body, sizeof body,
                               "{\"timestamp\":\"%s\",\"type\":\"%s\",\"session_id\":\"s1\"}", tsb,
                               o.type);
                break;
            case 1: /* not a timestamp */
                len = snprintf(body, sizeof body,
                               "{\"timestamp\":\"yesterday\",\"type\":\"%s\",\"object_id\":"
                               "\"x\",\"session_id\":\"s\"}",
                               o.type);
                break;
            default: /* cut short: not JSON */
                len = snprintf(body, sizeof body,
                               "{\"timestamp\":\"%s\",\"type\":\"%s\",\"object_id\":", tsb, o.type);
            }
            x.errors++;
            pub_one(&p, body, (size_t)len);
            continue;
        }
        if (chance(o.robots_pct))
            visitor_get(&o, o.visitors + (long)(rnd() % N_ROBOT_VISITORS), &vi);
        else
            visitor_get(&o, zipf_draw(&zv), &vi);
        obj = zipf_draw(&zo);
        is_explicit = chance(o.explicit_pct);
        if (is_explicit)
            snprintf(uid, sizeof uid, "ev-%" PRIu64 "-%ld", o.seed, explicit_no);
        len = build_body(body, sizeof body, &o, ts, obj, &vi, is_explicit ? uid : NULL);
        if (len <= 0 || len >= BODY_MAX) {
            fprintf(stderr, "bench_statspub: body too long\n");
            return 1;
        }
        expect_event(&x, &o, &vi, obj, ts, is_explicit ? explicit_no : -1);
        pub_one(&p, body, (size_t)len);
        if (is_explicit) {
            memcpy(ring[explicit_no % RING], body, (size_t)len);
            ring_len[explicit_no % RING] = (size_t)len;
            explicit_no++;
            ring_n = explicit_no < RING ? explicit_no : RING;
        } else if (p.sent < o.n && chance(o.dclick_pct)) {
            /* A double click: later, but within the same window. */
            int64_t w_ms = o.window_s * 1000, left = w_ms - 1 - ts % w_ms;
            int64_t ts2 = ts + (left > 0 ? (int64_t)(rnd() % (uint64_t)(left + 1)) : 0);
            len = build_body(body, sizeof body, &o, ts2, obj, &vi, NULL);
            expect_event(&x, &o, &vi, obj, ts2, -1);
            pub_one(&p, body, (size_t)len);
        }
        if (p.sent < o.n && ring_n > 0 && chance(o.dup_pct)) {
            long k = (explicit_no - 1 - (long)(rnd() % (uint64_t)ring_n)) % RING;
            pub_one(&p, ring[k], ring_len[k]); /* counted as a duplicate of its first */
            dups++;
        }
    }
    if (cc_broker_wait_confirms(&p.b, p.b.publish_seq, 120000, &err) != CC_OK) {
        fprintf(stderr, "bench_statspub: final confirms: %s\n", err.msg);
        return 1;
    }
    {
        double s = (double)(cc_mono_us() - t0) / 1e6;
        long read = p.sent, inserted = (long)x.ids.len;
        amqp_queue_declare_ok_t *ok;

        ok = amqp_queue_declare(p.b.conn, p.b.channel, amqp_cstring_bytes(queue), 1, 1, 0, 0,
                                amqp_empty_table);
        printf("{\"published\": %ld, \"seconds\": %.3f, \"per_s\": %.0f, \"queue_depth\": %ld, "
               "\"expected\": {\"read\": %ld, \"inserted\": %ld, \"duplicates\": %ld, "
               "\"robots\": %ld, \"errors\": %ld, \"agg_events\": %ld, "
               "\"agg_unique_visitors\": %zu, \"agg_keys\": %zu}, \"explicit_dups_sent\": %ld, "
               "\"body_bytes\": %lld}\n",
               p.sent, s, s > 0 ? (double)p.sent / s : 0.0,
               ok != NULL ? (long)ok->message_count : -1, read, inserted,
               read - x.errors - inserted, x.robots, x.errors, x.agg_events, x.visitors.len,
               x.keys.len, dups, p.body_bytes);
    }
    cc_broker_close(&p.b);
    free(zo.cdf);
    free(zv.cdf);
    free(x.ids.slot);
    free(x.visitors.slot);
    free(x.keys.slot);
    for (size_t i = 0; i < n_robot_pat; i++)
        free(robot_pat[i]);
    free(robot_pat);
    free(robot_ua_pat);
    return 0;
}
