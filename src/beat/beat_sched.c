/* `celeryc beat`: entries, slots, missed-run policy, the heap, and the schedule / state files.
 *
 * Design: an entry's schedule is a struct cc_schedule (proto/schedule.c, Celery 5.2's next-run
 * math). Slots are deterministic: interval slots are last + every (UTC seconds: no drift,
 * unlike Celery, which reschedules from the send time; elapsed time across DST changes too),
 * crontab slots are the first instants at which Celery's beat would find the entry due after
 * the last slot: cc_schedule_next evaluated with the UTC offset at the time of the check
 * (cc_beat_sched_next_after).
 * A new entry (no state) first fires as Celery's does: an interval `every` after start, a
 * crontab at its next match.
 *
 * Missed runs: slots that came due while no beat dispatched them (beat down, standby, store
 * unreachable) are found when the entry is (re)planned. Policy run_once sends one run, for
 * the latest missed slot, and only when that slot is no older than starting_deadline (when
 * set); skip (or a missed deadline) sends nothing and waits for the next slot after now.
 * Celery itself has no policy: an overdue entry runs once at start, then every `every` from
 * then on; run_once without a deadline is the closest, and is the default.
 *
 * Invariants: an entry in the heap has heap_i == its index; wake_us >= slot_us except while a
 * failed dispatch waits for its retry.
 *
 * Reference: celery-wire.md §7 (beat), celery/beat.py (ScheduleEntry, Scheduler.tick). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "beat_int.h"
#include "isotime.h"
#include "log.h"
#include "strbuf.h"
#include "tzload.h"
#include "util.h"

/* ---- Zone cache -------------------------------------------------------------------------- */

/* A list of individually allocated nodes: entries keep pointers to the zones (few in use). */
struct tz_node {
    char *name;
    struct cc_tz tz;
    struct tz_node *next;
};
static struct tz_node *tz_list;

const struct cc_tz *cc_beat_sched_tz_get(const char *name, struct cc_err *err)
{
    struct tz_node *n;

    if (name == NULL || *name == '\0')
        name = "UTC";
    for (n = tz_list; n != NULL; n = n->next)
        if (strcmp(n->name, name) == 0)
            return &n->tz;
    n = cc_xcalloc(1, sizeof(*n));
    if (cc_tzload_zone(name, NULL, &n->tz, err) != CC_OK) {
        free(n);
        return NULL;
    }
    n->name = cc_xstrdup(name);
    n->next = tz_list;
    tz_list = n;
    return &n->tz;
}

/* ---- Interned strings ------------------------------------------------------------------ */

/* Task names, queues, exchanges, zones and argument lists that many entries share are kept
 * once (100,000 entries of one task to one queue: one copy of each). An open-addressing set,
 * grown at 50 % load, freed by cc_beat_sched_caches_free() at exit: entries only borrow. */
static struct {
    char **slot;
    size_t cap, n;
} intern_set;

static uint64_t str_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

const char *cc_beat_sched_intern(const char *s)
{
    size_t i;

    if (s == NULL)
        return NULL;
    if (intern_set.n * 2 >= intern_set.cap) {
        size_t cap = intern_set.cap ? intern_set.cap * 2 : 256;
        char **slot = cc_xcalloc(cap, sizeof(*slot));

        for (size_t k = 0; k < intern_set.cap; k++) {
            char *v = intern_set.slot[k];

            if (v == NULL)
                continue;
            for (i = (size_t)(str_hash(v) & (cap - 1)); slot[i] != NULL; i = (i + 1) & (cap - 1))
                ;
            slot[i] = v;
        }
        free(intern_set.slot);
        intern_set.slot = slot;
        intern_set.cap = cap;
    }
    for (i = (size_t)(str_hash(s) & (intern_set.cap - 1)); intern_set.slot[i] != NULL;
         i = (i + 1) & (intern_set.cap - 1))
        if (strcmp(intern_set.slot[i], s) == 0)
            return intern_set.slot[i];
    intern_set.slot[i] = cc_xstrdup(s);
    intern_set.n++;
    return intern_set.slot[i];
}

void cc_beat_sched_caches_free(void)
{
    while (tz_list != NULL) {
        struct tz_node *n = tz_list;

        tz_list = n->next;
        free(n->name);
        cc_schedule_tz_deinit(&n->tz);
        free(n);
    }
    for (size_t k = 0; k < intern_set.cap; k++)
        free(intern_set.slot[k]);
    free(intern_set.slot);
    memset(&intern_set, 0, sizeof(intern_set));
}

/* ---- Entries ----------------------------------------------------------------------------- */

void cc_beat_sched_entry_deinit(struct beat_entry *e)
{
    if (e == NULL)
        return;
    free(e->name);
    free(e->job_id);
    json_decref(e->args);
    json_decref(e->kwargs);
    free(e->since_kwarg);
    free(e->fingerprint);
    memset(e, 0, sizeof(*e)); /* the other strings are interned (cc_beat_sched_intern) */
}

void cc_beat_sched_entry_free(struct beat_entry *e)
{
    cc_beat_sched_entry_deinit(e);
    free(e);
}

static const char *opt_str(const json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v != NULL && *v != '\0' ? cc_beat_sched_intern(v) : NULL;
}

/* One crontab field: a string, or a number (Celery accepts crontab(minute=0)). */
static int cron_field(const json_t *spec, const char *key, char *buf, size_t size, const char **out)
{
    const json_t *v = json_object_get(spec, key);

    *out = NULL;
    if (v == NULL || json_is_null(v))
        return CC_OK;
    if (json_is_string(v)) {
        *out = json_string_value(v);
        return CC_OK;
    }
    if (json_is_integer(v)) {
        snprintf(buf, size, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        *out = buf;
        return CC_OK;
    }
    return CC_EINVAL;
}

/* schedule: a number of seconds, {"type":"interval","seconds":N} or a crontab object. Jobs also
 * get the schedule's text as their fingerprint (a change of it re-plans the job's entry). */
static int parse_schedule(struct beat_entry *e, const json_t *s, struct cc_err *err)
{
    const char *type = json_string_value(json_object_get(s, "type"));
    double secs = -1;
    int rc;

    if (json_is_number(s)) {
        secs = json_number_value(s);
    } else if (json_is_object(s) && type != NULL && strcmp(type, "interval") == 0) {
        const json_t *v = json_object_get(s, "seconds");

        if (!json_is_number(v))
            return cc_err_set(err, CC_EINVAL, "interval needs a number \"seconds\"");
        secs = json_number_value(v);
    } else if (json_is_object(s) && type != NULL && strcmp(type, "crontab") == 0) {
        static const char *const keys[] = {"minute", "hour", "day_of_week", "day_of_month",
                                           "month_of_year"};
        char bufs[5][32];
        const char *f[5];

        for (size_t i = 0; i < 5; i++)
            if (cron_field(s, keys[i], bufs[i], sizeof(bufs[i]), &f[i]) != CC_OK)
                return cc_err_set(err, CC_EINVAL, "crontab %s must be a string", keys[i]);
        rc = cc_schedule_crontab(&e->sched, f[0], f[1], f[2], f[3], f[4], err);
        if (rc != CC_OK)
            return rc;
        goto done;
    } else {
        return cc_err_set(err, CC_EINVAL,
                          "expected seconds, {\"type\": \"interval\", \"seconds\": N} or "
                          "{\"type\": \"crontab\", ...}");
    }
    if (!(secs > 0) || secs > 1e9)
        return cc_err_set(err, CC_EINVAL, "interval must be > 0 seconds, got %g", secs);
    rc = cc_schedule_interval(&e->sched, (int64_t)(secs * 1e6 + 0.5), err);
    if (rc != CC_OK)
        return rc;
done:
    if (e->is_job)
        e->fingerprint = json_dumps(s, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY);
    return CC_OK;
}

/* A file entry's args or kwargs as interned compact JSON (`dflt` when absent or null). */
static const char *args_text(const json_t *v, const char *dflt)
{
    char *text;
    const char *out;

    if (v == NULL || json_is_null(v))
        return cc_beat_sched_intern(dflt);
    text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text == NULL)
        return NULL;
    out = cc_beat_sched_intern(text);
    free(text);
    return out;
}

int cc_beat_sched_entry_args(const struct beat_entry *e, json_t **args, json_t **kwargs)
{
    json_error_t jerr;

    if (e->args_json == NULL) {
        *args = json_incref(e->args);
        *kwargs = json_incref(e->kwargs);
        return *args != NULL && *kwargs != NULL ? CC_OK : CC_EINVAL;
    }
    *args = json_loads(e->args_json, JSON_DECODE_ANY, &jerr);
    *kwargs = json_loads(e->kwargs_json, JSON_DECODE_ANY, &jerr);
    if (*args == NULL || *kwargs == NULL) {
        json_decref(*args);
        json_decref(*kwargs);
        *args = *kwargs = NULL;
        return CC_ENOMEM;
    }
    return CC_OK;
}

/* The fields files and jobs share. `what` prefixes errors ("entry 'x'", "job <id>"). */
static int entry_fill(struct beat_entry *e, const char *what, const json_t *spec,
                      const char *tz_name, const json_t *options, struct cc_err *err)
{
    const json_t *v;
    const char *missed = json_string_value(json_object_get(spec, "missed"));
    struct cc_err sub = {0};
    char *fp;

    v = json_object_get(spec, "task");
    if (!json_is_string(v) || json_string_length(v) == 0)
        return cc_err_set(err, CC_EINVAL, "%s: \"task\" (a task name) is required", what);
    e->task = cc_beat_sched_intern(json_string_value(v));
    v = json_object_get(spec, "schedule");
    if (v == NULL || json_is_null(v))
        return cc_err_set(err, CC_EINVAL, "%s: \"schedule\" is required", what);
    if (parse_schedule(e, v, &sub) != CC_OK)
        return cc_err_set(err, CC_EINVAL, "%s: schedule: %s", what, sub.msg);
    e->tz_name = cc_beat_sched_intern(tz_name != NULL && *tz_name != '\0' ? tz_name : "UTC");
    e->tz = cc_beat_sched_tz_get(e->tz_name, &sub);
    if (e->tz == NULL)
        return cc_err_set(err, CC_EINVAL, "%s: timezone: %s", what, sub.msg);
    if (e->fingerprint != NULL) { /* the zone is part of the schedule */
        fp = cc_xmalloc(strlen(e->fingerprint) + strlen(e->tz_name) + 2);
        sprintf(fp, "%s@%s", e->fingerprint, e->tz_name);
        free(e->fingerprint);
        e->fingerprint = fp;
    }
    v = json_object_get(spec, "args");
    if (v != NULL && !json_is_null(v) && !json_is_array(v))
        return cc_err_set(err, CC_EINVAL, "%s: \"args\" must be a list", what);
    if (e->is_job)
        e->args = json_is_array(v) ? json_deep_copy(v) : json_array();
    else if ((e->args_json = args_text(v, "[]")) == NULL) /* parsed at each send */
        return cc_err_set(err, CC_ENOMEM, "%s: out of memory", what);
    v = json_object_get(spec, "kwargs");
    if (v != NULL && !json_is_null(v) && !json_is_object(v))
        return cc_err_set(err, CC_EINVAL, "%s: \"kwargs\" must be an object", what);
    if (e->is_job)
        e->kwargs = json_is_object(v) ? json_deep_copy(v) : json_object();
    else if ((e->kwargs_json = args_text(v, "{}")) == NULL)
        return cc_err_set(err, CC_ENOMEM, "%s: out of memory", what);
    if (options != NULL && !json_is_null(options) && !json_is_object(options))
        return cc_err_set(err, CC_EINVAL, "%s: \"options\" must be an object", what);
    e->priority = -1;
    if (json_is_object(options)) {
        const char *key;
        json_t *ov;

        json_object_foreach((json_t *)options, key, ov)
        {
            if (strcmp(key, "queue") == 0 || strcmp(key, "routing_key") == 0 ||
                strcmp(key, "exchange") == 0) {
                if (!json_is_string(ov) && !json_is_null(ov))
                    return cc_err_set(err, CC_EINVAL, "%s: options.%s must be a string", what, key);
            } else if (strcmp(key, "priority") == 0) {
                if (!json_is_integer(ov) || json_integer_value(ov) < 0 ||
                    json_integer_value(ov) > 255)
                    return cc_err_set(err, CC_EINVAL,
                                      "%s: options.priority must be an integer 0..255", what);
                e->priority = (int)json_integer_value(ov);
            } else if (strcmp(key, "expires") == 0) {
                if (!json_is_number(ov) || json_number_value(ov) <= 0)
                    return cc_err_set(err, CC_EINVAL,
                                      "%s: options.expires must be a number of seconds > 0", what);
                e->expires_s = json_number_value(ov);
            } else {
                return cc_err_set(err, CC_EINVAL,
                                  "%s: unknown option '%s' (queue, exchange, routing_key, "
                                  "priority, expires)",
                                  what, key);
            }
        }
        if (e->queue == NULL)
            e->queue = opt_str(options, "queue");
        e->exchange = opt_str(options, "exchange");
        e->routing_key = opt_str(options, "routing_key");
    }
    if (missed == NULL || strcmp(missed, "run_once") == 0) {
        e->missed = BEAT_MISSED_RUN_ONCE;
    } else if (strcmp(missed, "skip") == 0) {
        e->missed = BEAT_MISSED_SKIP;
    } else {
        return cc_err_set(err, CC_EINVAL, "%s: \"missed\" must be \"skip\" or \"run_once\"", what);
    }
    v = json_object_get(spec, "starting_deadline");
    if (v != NULL && !json_is_null(v)) {
        if (!json_is_number(v) || json_number_value(v) <= 0)
            return cc_err_set(err, CC_EINVAL,
                              "%s: \"starting_deadline\" must be a number of seconds > 0", what);
        e->deadline_us = (int64_t)(json_number_value(v) * 1e6);
    }
    e->heap_i = SIZE_MAX;
    return CC_OK;
}

int cc_beat_sched_entry_from_file(struct beat_entry *e, const char *name, const json_t *spec,
                                  const char *default_tz, struct cc_err *err)
{
    char what[200];
    const char *tz;
    static const char *const known[] = {"task",   "schedule", "timezone", "args",
                                        "kwargs", "options",  "missed",   "starting_deadline"};
    const char *key;
    json_t *v;

    memset(e, 0, sizeof(*e));
    snprintf(what, sizeof(what), "entry '%.150s'", name);
    if (!json_is_object(spec))
        return cc_err_set(err, CC_EINVAL, "%s: must be an object", what);
    json_object_foreach((json_t *)spec, key, v)
    {
        size_t i;

        for (i = 0; i < CC_ARRAY_LEN(known); i++)
            if (strcmp(key, known[i]) == 0)
                break;
        if (i == CC_ARRAY_LEN(known))
            return cc_err_set(err, CC_EINVAL, "%s: unknown key '%.60s'", what, key);
    }
    e->name = cc_xstrdup(name);
    tz = json_string_value(json_object_get(spec, "timezone"));
    if (json_object_get(spec, "timezone") != NULL && tz == NULL)
        return cc_err_set(err, CC_EINVAL, "%s: \"timezone\" must be a string", what);
    return entry_fill(e, what, spec, tz != NULL ? tz : default_tz, json_object_get(spec, "options"),
                      err);
}

int cc_beat_sched_entry_from_job(struct beat_entry *e, const json_t *job, struct cc_err *err)
{
    const char *id = json_string_value(json_object_get(job, "id"));
    char what[80];
    const json_t *sk = json_object_get(job, "since_kwarg");

    memset(e, 0, sizeof(*e));
    if (id == NULL)
        return cc_err_set(err, CC_EINVAL, "job row without an id");
    snprintf(what, sizeof(what), "job %s", id);
    e->is_job = true;
    e->job_id = cc_xstrdup(id);
    e->name = cc_xmalloc(strlen(id) + 5);
    sprintf(e->name, "job:%s", id);
    e->queue = opt_str(job, "queue");
    e->since_kwarg =
        json_is_string(sk) && json_string_length(sk) ? cc_xstrdup(json_string_value(sk)) : NULL;
    return entry_fill(e, what, job, json_string_value(json_object_get(job, "timezone")),
                      json_object_get(job, "options"), err);
}

/* ---- Reading big JSON files member by member -------------------------------------------- */

/* The schedule file and the state snapshot are one JSON object with one member per entry.
 * jansson would build the whole document first (100,000 entries: ~140 MB of nodes, most of it
 * left behind as fragmented heap); instead the file is scanned for the byte span of each member
 * (strings and nesting only) and each key and value is parsed on its own by jansson, which
 * does all the validation. One entry's nodes at a time. */
struct jscan {
    const char *base, *p, *end;
};

static void js_ws(struct jscan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int js_line(const struct jscan *s)
{
    int line = 1;

    for (const char *q = s->base; q < s->p; q++)
        line += *q == '\n';
    return line;
}

/* Past the string that starts at p (a '"'), or NULL when it does not end. */
static const char *js_string_end(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return NULL;
}

/* The byte span of the JSON value at s->p; s->p moves past it. -1: it does not end. */
static int js_span(struct jscan *s, const char **v, size_t *len)
{
    const char *p = s->p;

    *v = p;
    if (p >= s->end)
        return -1;
    if (*p == '"') {
        if ((p = js_string_end(p, s->end)) == NULL)
            return -1;
    } else if (*p == '{' || *p == '[') {
        size_t depth = 0;

        for (; p < s->end; p++) {
            if (*p == '"') {
                if ((p = js_string_end(p, s->end)) == NULL)
                    return -1;
                p--;
            } else if (*p == '{' || *p == '[') {
                depth++;
            } else if ((*p == '}' || *p == ']') && --depth == 0) {
                p++;
                break;
            }
        }
        if (depth != 0)
            return -1;
    } else {
        while (p < s->end && strchr(",}] \t\r\n", *p) == NULL)
            p++;
    }
    *len = (size_t)(p - *v);
    s->p = p;
    return 0;
}

/* Parse one value of the document (its exact span), or NULL with err set. */
static json_t *js_parse(const struct jscan *s, const char *v, size_t len, const char *path,
                        struct cc_err *err)
{
    json_error_t jerr;
    json_t *j = json_loadb(v, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);

    if (j == NULL) {
        struct jscan at = {s->base, v, s->end};

        cc_err_set(err, CC_EINVAL, "%s: %s (line %d)", path, jerr.text,
                   js_line(&at) + jerr.line - 1);
    }
    return j;
}

/* Enter the object at s->p ('{'). */
static int js_object(struct jscan *s, const char *path, const char *what, struct cc_err *err)
{
    js_ws(s);
    if (s->p >= s->end || *s->p != '{')
        return cc_err_set(err, CC_EINVAL, "%s: expected %s (line %d)", path, what, js_line(s));
    s->p++;
    return CC_OK;
}

/* The next member of the object being read: 1 with *key (owned) and the value's span, 0 at
 * its end ('}' consumed), or an error code. `first`: no member read yet. */
static int js_member(struct jscan *s, bool first, char **key, const char **v, size_t *len,
                     const char *path, struct cc_err *err)
{
    const char *k;
    size_t klen;
    json_t *kj;

    js_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return 0;
    }
    if (!first) {
        if (s->p >= s->end || *s->p != ',')
            return cc_err_set(err, CC_EINVAL, "%s: expected ',' or '}' (line %d)", path,
                              js_line(s));
        s->p++;
        js_ws(s);
    }
    if (s->p >= s->end || *s->p != '"' || js_span(s, &k, &klen) != 0)
        return cc_err_set(err, CC_EINVAL, "%s: expected a member name (line %d)", path, js_line(s));
    if ((kj = js_parse(s, k, klen, path, err)) == NULL)
        return err->code;
    *key = cc_xstrdup(json_string_value(kj));
    json_decref(kj);
    js_ws(s);
    if (s->p >= s->end || *s->p != ':') {
        free(*key);
        return cc_err_set(err, CC_EINVAL, "%s: expected ':' (line %d)", path, js_line(s));
    }
    s->p++;
    js_ws(s);
    if (js_span(s, v, len) != 0 || *len == 0) {
        cc_err_set(err, CC_EINVAL, "%s: value of '%.60s' missing or not ended (line %d)", path,
                   *key, js_line(s));
        free(*key);
        return err->code;
    }
    return 1;
}

/* The whole file in memory (freed by the caller; one allocation of its size). NULL with err
 * set. */
static char *read_file(const char *path, size_t *len, struct cc_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    char *buf = NULL;
    size_t cap, n = 0;

    if (fd < 0 || fstat(fd, &st) != 0) {
        cc_err_set(err, CC_EINVAL, "%s: %s", path, strerror(errno));
        goto out;
    }
    cap = st.st_size > 0 ? (size_t)st.st_size + 1 : 65536;
    buf = cc_xmalloc(cap);
    for (;;) {
        ssize_t got;

        if (n == cap) { /* grew while we read */
            cap *= 2;
            buf = cc_xrealloc(buf, cap);
        }
        got = read(fd, buf + n, cap - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            cc_err_set(err, CC_EIO, "%s: %s", path, strerror(errno));
            free(buf);
            buf = NULL;
            goto out;
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    *len = n;
out:
    if (fd >= 0)
        close(fd);
    return buf;
}

/* Read the object at s->p member by member: `fn` gets each member (key, parsed value) and
 * returns CC_OK to go on. The top-level member named `inner` (when non-NULL) is descended into
 * instead: its members go to `fn`, other top-level members are checked and ignored. */
typedef int (*js_member_fn)(const char *key, json_t *value, void *arg, struct cc_err *err);

static int js_each(struct jscan *s, const char *path, const char *inner, js_member_fn fn, void *arg,
                   bool *found_inner, struct cc_err *err)
{
    bool first = true;
    int rc;

    if ((rc = js_object(s, path, inner ? "a JSON object" : "an object", err)) != CC_OK)
        return rc;
    for (;;) {
        char *key = NULL;
        const char *v;
        size_t len;
        json_t *j;

        rc = js_member(s, first, &key, &v, &len, path, err);
        if (rc <= 0)
            return rc == 0 ? CC_OK : rc;
        first = false;
        if (inner != NULL && strcmp(key, inner) == 0) {
            struct jscan sub = {s->base, v, v + len};

            free(key);
            *found_inner = true;
            if ((rc = js_each(&sub, path, NULL, fn, arg, NULL, err)) != CC_OK)
                return rc;
            continue;
        }
        j = js_parse(s, v, len, path, err);
        if (j == NULL) {
            free(key);
            return err->code;
        }
        rc = inner != NULL ? CC_OK : fn(key, j, arg, err);
        json_decref(j);
        free(key);
        if (rc != CC_OK)
            return rc;
    }
}

/* Read a whole document whose entries are the members of its top-level member `inner`. */
static int js_read_entries(const char *path, const char *inner, js_member_fn fn, void *arg,
                           const char *expected, struct cc_err *err)
{
    size_t len = 0;
    char *buf = read_file(path, &len, err);
    struct jscan s;
    bool found = false;
    int rc;

    if (buf == NULL)
        return err->code;
    s = (struct jscan){buf, buf, buf + len};
    rc = js_each(&s, path, inner, fn, arg, &found, err);
    if (rc == CC_OK) {
        js_ws(&s);
        if (s.p != s.end)
            rc =
                cc_err_set(err, CC_EINVAL, "%s: end of file expected (line %d)", path, js_line(&s));
        else if (!found)
            rc = cc_err_set(err, CC_EINVAL, "%s: %s", path, expected);
    }
    free(buf);
    return rc;
}

struct file_load {
    const char *path, *default_tz;
    struct beat_entry **arr;
    size_t n, cap;
    struct beat_index seen;
};

static int file_entry(const char *name, json_t *spec, void *arg, struct cc_err *err)
{
    struct file_load *fl = arg;
    struct cc_err sub = {0};
    struct beat_entry *e;

    if (strncmp(name, "job:", 4) == 0 || *name == '\0')
        return cc_err_set(err, CC_EINVAL,
                          "schedule file %s: entry '%.150s': names may not be empty or start "
                          "with \"job:\"",
                          fl->path, name);
    if (cc_beat_sched_index_get(&fl->seen, name) != NULL)
        return cc_err_set(err, CC_EINVAL, "schedule file %s: entry '%.150s' appears twice",
                          fl->path, name);
    e = cc_xcalloc(1, sizeof(*e));
    if (cc_beat_sched_entry_from_file(e, name, spec, fl->default_tz, &sub) != CC_OK) {
        cc_beat_sched_entry_free(e);
        return cc_err_set(err, CC_EINVAL, "schedule file %s: %s", fl->path, sub.msg);
    }
    if (fl->n == fl->cap) {
        fl->cap = fl->cap ? fl->cap * 2 : 64;
        fl->arr = cc_xrealloc(fl->arr, fl->cap * sizeof(*fl->arr));
    }
    fl->arr[fl->n++] = e;
    cc_beat_sched_index_put(&fl->seen, e);
    return CC_OK;
}

int cc_beat_sched_file_load(const char *path, const char *default_tz, struct beat_entry ***out,
                            size_t *n, struct cc_err *err)
{
    struct file_load fl = {.path = path, .default_tz = default_tz};
    struct cc_err sub = {0};
    int rc;

    *out = NULL;
    *n = 0;
    rc = js_read_entries(path, "entries", file_entry, &fl, "expected {\"entries\": {NAME: {...}}}",
                         &sub);
    /* The entries' hnext chained them in `seen`: the caller indexes them again. */
    for (size_t i = 0; i < fl.n; i++)
        fl.arr[i]->hnext = NULL;
    cc_beat_sched_index_deinit(&fl.seen);
    if (rc != CC_OK) {
        for (size_t i = 0; i < fl.n; i++)
            cc_beat_sched_entry_free(fl.arr[i]);
        free(fl.arr);
        if (strncmp(sub.msg, "schedule file ", 14) == 0)
            return cc_err_set(err, rc, "%s", sub.msg);
        return cc_err_set(err, rc, "schedule file %s", sub.msg);
    }
    if (fl.n == 0) { /* callers expect an array even when empty */
        fl.arr = cc_xcalloc(1, sizeof(*fl.arr));
    }
    *out = fl.arr;
    *n = fl.n;
    return CC_OK;
}

/* ---- Slots ------------------------------------------------------------------------------- */

#define DAY_US 86400000000LL

static int64_t floordiv64(int64_t a, int64_t b)
{
    int64_t q = a / b;

    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

/* The local date (days since the epoch) of instant t_us in zone tz. */
static int64_t local_day(const struct cc_tz *tz, int64_t t_us)
{
    return floordiv64(t_us + cc_schedule_tz_offset(tz, floordiv64(t_us, 1000000)) * 1000000LL,
                      DAY_US);
}

/* The first instant after at_us at which Celery's remaining_estimate(last) may change: the
 * zone's next UTC-offset change, or (while the local date of `now` is not past last's, which
 * decides crontab's "execute this hour") the next local midnight. INT64_MAX: none. */
static int64_t next_break(const struct cc_tz *tz, int64_t last_us, int64_t at_us)
{
    int64_t at_s = floordiv64(at_us, 1000000), b = INT64_MAX;

    if (tz != NULL && tz->n > 0 && at_s < tz->trans[tz->n - 1]) {
        size_t lo = 0, hi = tz->n - 1; /* the first transition > at_s is trans[hi] */

        if (tz->trans[0] > at_s) {
            hi = 0;
        } else {
            while (hi - lo > 1) { /* trans[lo] <= at_s < trans[hi] */
                size_t mid = lo + (hi - lo) / 2;

                if (tz->trans[mid] > at_s)
                    hi = mid;
                else
                    lo = mid;
            }
        }
        b = tz->trans[hi] * 1000000LL;
    }
    if (local_day(tz, at_us) <= local_day(tz, last_us)) {
        int64_t off_us = cc_schedule_tz_offset(tz, at_s) * 1000000LL;
        int64_t midnight = (local_day(tz, at_us) + 1) * DAY_US - off_us;

        if (midnight > at_us && midnight < b)
            b = midnight;
    }
    return b;
}

int cc_beat_sched_next_after(const struct beat_entry *e, int64_t t_us, int64_t *out_us,
                             struct cc_err *err)
{
    int64_t at = t_us;

    if (e->sched.kind == CC_SCHEDULE_INTERVAL) {
        /* Elapsed time: `every` after the last slot, whatever the wall clock does (Celery
         * re-labels the last run with the new offset instead; README "Beat" says how). */
        *out_us = t_us + e->sched.every_us;
        return CC_OK;
    }
    /* A crontab's next slot is the first instant T > t at which Celery's beat, checking
     * is_due(last_run_at = t) at T, finds it due. remaining_estimate(t) evaluated at T reads
     * the target wall time with the UTC offset in force at T, not at t (proto/schedule.c),
     * and depends on T only through T's offset and T's local date. So: evaluate at T = t; if
     * the instant it names comes before the next change of either, that is the slot; else
     * move T to that change and evaluate again (at a change the slot may be T itself: a wall
     * time skipped by a spring-forward runs at the change, as Celery's beat runs it at its
     * first check after the change). Bounded by the zone's changes before the target (about
     * two a year). */
    for (int i = 0; i < 4096; i++) {
        int64_t c, b;
        int rc = cc_schedule_next(&e->sched, t_us, at, e->tz, &c, err);

        if (rc != CC_OK)
            return rc;
        if (c <= at) {
            *out_us = at;
            return CC_OK;
        }
        b = next_break(e->tz, t_us, at);
        if (c < b) {
            *out_us = c;
            return CC_OK;
        }
        at = b;
    }
    return cc_err_set(err, CC_EINVAL, "no next run found across the zone's offset changes");
}

/* Latest slot <= now, walking from slot `s` (<= now). Bounded: a crontab that matched every
 * minute for two years is 1M steps; past that we jump to now. */
static int64_t latest_slot(const struct beat_entry *e, int64_t s, int64_t now_us, int64_t *count)
{
    struct cc_err err = {0};
    int64_t n = 1;

    if (e->sched.kind == CC_SCHEDULE_INTERVAL) {
        int64_t k = (now_us - s) / e->sched.every_us;
        *count = k + 1;
        return s + k * e->sched.every_us;
    }
    for (int i = 0; i < 1100000; i++) {
        int64_t nx;

        if (cc_beat_sched_next_after(e, s, &nx, &err) != CC_OK || nx > now_us)
            break;
        s = nx;
        n++;
    }
    *count = n;
    return s;
}

static void fmt_us(int64_t us, char *buf, size_t size)
{
    cc_isotime_format(us, 1, buf, size);
}

int cc_beat_sched_entry_plan(struct beat_entry *e, int64_t now_us, int64_t *n_missed,
                             struct cc_err *err)
{
    int64_t first, last_due, count = 0;
    int rc;

    *n_missed = 0;
    e->is_catchup = false;
    e->attempts = 0;
    if (e->last_us == 0) {
        /* Never ran: as Celery, last_run_at = now (an interval first fires `every` later). */
        rc = cc_beat_sched_next_after(e, now_us, &first, err);
        if (rc != CC_OK)
            return rc;
        e->slot_us = e->wake_us = first;
        return CC_OK;
    }
    rc = cc_beat_sched_next_after(e, e->last_us, &first, err);
    if (rc != CC_OK)
        return rc;
    if (first > now_us) {
        e->slot_us = e->wake_us = first;
        return CC_OK;
    }
    last_due = latest_slot(e, first, now_us, &count);
    *n_missed = count;
    if (e->missed == BEAT_MISSED_RUN_ONCE &&
        (e->deadline_us == 0 || now_us - last_due <= e->deadline_us)) {
        char b[40];

        fmt_us(last_due, b, sizeof(b));
        cc_info("Scheduler: %" PRId64 " missed run(s) of %s: running once (slot %s)", count,
                e->name, b);
        e->slot_us = last_due;
        e->wake_us = now_us;
        e->is_catchup = true;
        return CC_OK;
    }
    cc_info("Scheduler: %" PRId64 " missed run(s) of %s: skipped (%s)", count, e->name,
            e->missed == BEAT_MISSED_SKIP ? "missed=skip" : "past starting_deadline");
    e->last_us = last_due;
    rc = cc_beat_sched_next_after(e, last_due, &first, err);
    if (rc != CC_OK)
        return rc;
    e->slot_us = e->wake_us = first;
    return CC_OK;
}

int cc_beat_sched_entry_step(struct beat_entry *e, bool is_sent, struct cc_err *err)
{
    int64_t next;
    int rc;

    e->last_us = e->slot_us;
    if (is_sent)
        e->total++;
    e->attempts = 0;
    e->is_catchup = false;
    e->claimed_slot_us = 0;
    rc = cc_beat_sched_next_after(e, e->slot_us, &next, err);
    if (rc != CC_OK)
        return rc;
    e->slot_us = e->wake_us = next;
    return CC_OK;
}

int64_t cc_beat_sched_entry_coalesce(struct beat_entry *e, int64_t now_us)
{
    int64_t count = 0, latest;

    if (e->slot_us > now_us)
        return 0;
    latest = latest_slot(e, e->slot_us, now_us, &count);
    if (latest != e->slot_us) {
        e->slot_us = latest;
        e->attempts = 0;
    }
    return count - 1;
}

/* ---- Heap -------------------------------------------------------------------------------- */

static void heap_set(struct beat_heap *h, size_t i, struct beat_heap_node n)
{
    h->a[i] = n;
    n.e->heap_i = i;
}

static void heap_up(struct beat_heap *h, size_t i)
{
    struct beat_heap_node n = h->a[i];

    while (i > 0) {
        size_t p = (i - 1) / 2;

        if (h->a[p].wake_us <= n.wake_us)
            break;
        heap_set(h, i, h->a[p]);
        i = p;
    }
    heap_set(h, i, n);
}

static void heap_down(struct beat_heap *h, size_t i)
{
    struct beat_heap_node n = h->a[i];

    for (;;) {
        size_t l = 2 * i + 1, m = i;
        int64_t best = n.wake_us;

        if (l < h->n && h->a[l].wake_us < best) {
            m = l;
            best = h->a[l].wake_us;
        }
        if (l + 1 < h->n && h->a[l + 1].wake_us < best)
            m = l + 1;
        if (m == i)
            break;
        heap_set(h, i, h->a[m]);
        i = m;
    }
    heap_set(h, i, n);
}

void cc_beat_sched_heap_push(struct beat_heap *h, struct beat_entry *e)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 64;
        h->a = cc_xrealloc(h->a, h->cap * sizeof(*h->a));
    }
    heap_set(h, h->n++, (struct beat_heap_node){e->wake_us, e});
    heap_up(h, e->heap_i);
}

void cc_beat_sched_heap_remove(struct beat_heap *h, struct beat_entry *e)
{
    size_t i = e->heap_i;

    if (i == SIZE_MAX || i >= h->n || h->a[i].e != e)
        return;
    e->heap_i = SIZE_MAX;
    if (--h->n == i)
        return;
    heap_set(h, i, h->a[h->n]);
    heap_down(h, i);
    heap_up(h, h->a[i].e->heap_i);
}

void cc_beat_sched_heap_fix(struct beat_heap *h, struct beat_entry *e)
{
    if (e->heap_i == SIZE_MAX) {
        cc_beat_sched_heap_push(h, e);
        return;
    }
    h->a[e->heap_i].wake_us = e->wake_us;
    heap_down(h, e->heap_i);
    heap_up(h, e->heap_i);
}

struct beat_entry *cc_beat_sched_heap_top(const struct beat_heap *h)
{
    return h->n ? h->a[0].e : NULL;
}

void cc_beat_sched_heap_deinit(struct beat_heap *h)
{
    free(h->a);
    memset(h, 0, sizeof(*h));
}

/* ---- Name index -------------------------------------------------------------------------- */

static size_t ix_hash(const char *s, size_t nb)
{
    uint64_t h = 1469598103934665603ULL;

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (size_t)(h % nb);
}

struct beat_entry *cc_beat_sched_index_get(const struct beat_index *ix, const char *name)
{
    if (ix->nb == 0)
        return NULL;
    for (struct beat_entry *e = ix->b[ix_hash(name, ix->nb)]; e != NULL; e = e->hnext)
        if (strcmp(e->name, name) == 0)
            return e;
    return NULL;
}

void cc_beat_sched_index_put(struct beat_index *ix, struct beat_entry *e)
{
    size_t h;

    if (ix->n + 1 > ix->nb) {
        size_t nb = ix->nb ? ix->nb * 2 : 256;
        struct beat_entry **b = cc_xcalloc(nb, sizeof(*b));

        for (size_t i = 0; i < ix->nb; i++) {
            struct beat_entry *x = ix->b[i];

            while (x != NULL) {
                struct beat_entry *nx = x->hnext;
                size_t k = ix_hash(x->name, nb);

                x->hnext = b[k];
                b[k] = x;
                x = nx;
            }
        }
        free(ix->b);
        ix->b = b;
        ix->nb = nb;
    }
    h = ix_hash(e->name, ix->nb);
    e->hnext = ix->b[h];
    ix->b[h] = e;
    ix->n++;
}

void cc_beat_sched_index_del(struct beat_index *ix, struct beat_entry *e)
{
    struct beat_entry **pp;

    if (ix->nb == 0)
        return;
    for (pp = &ix->b[ix_hash(e->name, ix->nb)]; *pp != NULL; pp = &(*pp)->hnext) {
        if (*pp == e) {
            *pp = e->hnext;
            e->hnext = NULL;
            ix->n--;
            return;
        }
    }
}

void cc_beat_sched_index_deinit(struct beat_index *ix)
{
    free(ix->b);
    memset(ix, 0, sizeof(*ix));
}

/* ---- State file -------------------------------------------------------------------------- */

static char *journal_path(const char *path)
{
    char *j = cc_xmalloc(strlen(path) + 9);

    sprintf(j, "%s.journal", path);
    return j;
}

/* Replay FILE.journal in order. A torn last line (crash mid-write) is ignored. */
static void journal_replay(const char *path, beat_state_fn fn, void *arg)
{
    char *jp = journal_path(path);
    FILE *f = fopen(jp, "r");
    char *line = NULL;
    size_t cap = 0;

    free(jp);
    if (f == NULL)
        return;
    while (getline(&line, &cap, f) > 0) {
        json_error_t jerr;
        json_t *o = json_loads(line, 0, &jerr);
        const char *name = json_string_value(json_object_get(o, "n"));
        json_t *l = json_object_get(o, "l");

        if (name != NULL && json_is_integer(l))
            fn(name, (int64_t)json_integer_value(l),
               (int64_t)json_integer_value(json_object_get(o, "t")), arg);
        json_decref(o);
    }
    free(line);
    fclose(f);
}

struct state_load {
    beat_state_fn fn;
    void *arg;
};

static int state_member(const char *name, json_t *st, void *arg, struct cc_err *err)
{
    struct state_load *sl = arg;
    const json_t *v = json_object_get(st, "last_run_at");
    int64_t us = 0;

    (void)err;
    if (json_is_integer(v))
        us = (int64_t)json_integer_value(v);
    else if (!json_is_string(v) || cc_isotime_parse(json_string_value(v), &us) != CC_OK)
        return CC_OK; /* not a slot: as if absent */
    sl->fn(name, us, (int64_t)json_integer_value(json_object_get(st, "total_run_count")), sl->arg);
    return CC_OK;
}

int cc_beat_sched_state_load(const char *path, beat_state_fn fn, void *arg, struct cc_err *err)
{
    struct state_load sl = {fn, arg};
    struct cc_err sub = {0};

    if (access(path, F_OK) == 0 &&
        js_read_entries(path, "entries", state_member, &sl, "no \"entries\" object", &sub) != CC_OK)
        return cc_err_set(err, sub.code, "state file %s", sub.msg);
    journal_replay(path, fn, arg);
    return CC_OK;
}

static int write_all(int fd, const char *p, size_t len, const char *path, struct cc_err *err)
{
    size_t off = 0;

    while (off < len) {
        ssize_t w = write(fd, p + off, len - off);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return cc_err_set(err, CC_EIO, "state file %s: write: %s", path, strerror(errno));
        off += (size_t)w;
    }
    return CC_OK;
}

/* One journal line per entry: {"n": NAME, "l": slot_us, "t": total}. */
static void journal_lines(struct cc_strbuf *b, struct beat_entry *const *entries, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct beat_entry *e = entries[i];

        cc_strbuf_puts(b, "{\"n\": ");
        cc_strbuf_json_str(b, e->name, strlen(e->name));
        cc_strbuf_puts(b, ", \"l\": ");
        cc_strbuf_int(b, (long long)e->last_us);
        cc_strbuf_puts(b, ", \"t\": ");
        cc_strbuf_int(b, (long long)e->total);
        cc_strbuf_puts(b, "}\n");
    }
}

static int journal_write(const char *path, const char *text, size_t len, struct cc_err *err)
{
    char *jp = journal_path(path);
    int fd, rc;

    fd = open(jp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = cc_err_set(err, CC_EIO, "state file %s: %s", jp, strerror(errno));
        goto out;
    }
    rc = write_all(fd, text, len, jp, err);
    if (rc == CC_OK && fdatasync(fd) != 0)
        rc = cc_err_set(err, CC_EIO, "state file %s: fdatasync: %s", jp, strerror(errno));
    close(fd);
out:
    free(jp);
    return rc;
}

int cc_beat_sched_state_append(const char *path, struct beat_entry *const *entries, size_t n,
                               struct cc_err *err)
{
    struct cc_strbuf b;
    int rc;

    cc_strbuf_init(&b, 0);
    journal_lines(&b, entries, n);
    rc = journal_write(path, b.p ? b.p : "", b.len, err);
    cc_strbuf_deinit(&b);
    return rc;
}

/* What a snapshot holds of an entry (names borrowed: file entries live until exit). */
struct state_row {
    const char *name;
    int64_t last_us, total;
};

/* Write the snapshot (formatted directly: a jansson document of 100,000 members took over a
 * second), then empty the journal it supersedes. */
static int state_save_rows(const char *path, const struct state_row *rows, size_t n,
                           struct cc_err *err)
{
    char *tmp = cc_xmalloc(strlen(path) + 16);
    int fd = -1, rc = CC_OK;
    struct cc_strbuf b;

    cc_strbuf_init(&b, 0);
    sprintf(tmp, "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = cc_err_set(err, CC_EIO, "state file %s: %s", tmp, strerror(errno));
        goto out;
    }
    cc_strbuf_puts(&b, "{\"version\":1,\"entries\":{");
    for (size_t i = 0; i < n; i++) {
        char iso[40];

        if (b.len >= 256 * 1024) { /* written as it goes: the beat's memory stays flat */
            if (b.oom)
                break;
            if ((rc = write_all(fd, b.p, b.len, tmp, err)) != CC_OK)
                goto out;
            b.len = 0;
        }
        if (i > 0)
            cc_strbuf_putc(&b, ',');
        cc_strbuf_json_str(&b, rows[i].name, strlen(rows[i].name));
        cc_strbuf_puts(&b, ":{\"last_run_at\":\"");
        fmt_us(rows[i].last_us, iso, sizeof(iso));
        cc_strbuf_puts(&b, iso);
        cc_strbuf_puts(&b, "\",\"total_run_count\":");
        cc_strbuf_int(&b, (long long)rows[i].total);
        cc_strbuf_putc(&b, '}');
    }
    cc_strbuf_puts(&b, "}}");
    if (b.oom) {
        rc = cc_err_set(err, CC_ENOMEM, "state file %s: out of memory", tmp);
        goto out;
    }
    if ((rc = write_all(fd, b.p, b.len, tmp, err)) != CC_OK)
        goto out;
    if (fsync(fd) != 0) {
        rc = cc_err_set(err, CC_EIO, "state file %s: fsync: %s", tmp, strerror(errno));
        goto out;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = cc_err_set(err, CC_EIO, "state file %s: rename: %s", path, strerror(errno));
        goto out;
    }
    /* The snapshot holds everything the journal said: empty it. */
    {
        char *jp = journal_path(path);

        if (truncate(jp, 0) != 0 && errno != ENOENT)
            rc = cc_err_set(err, CC_EIO, "state file %s: truncate: %s", jp, strerror(errno));
        free(jp);
    }
out:
    if (fd >= 0)
        close(fd);
    if (rc != CC_OK)
        unlink(tmp);
    free(tmp);
    cc_strbuf_deinit(&b);
    return rc;
}

/* The rows of the entries a snapshot keeps (file entries that ran). */
static struct state_row *state_rows(struct beat_entry *const *entries, size_t n, size_t *out_n)
{
    struct state_row *rows = cc_xmalloc((n ? n : 1) * sizeof(*rows));
    size_t k = 0;

    for (size_t i = 0; i < n; i++) {
        const struct beat_entry *e = entries[i];

        if (e->is_job || (e->last_us == 0 && e->total == 0))
            continue;
        rows[k++] = (struct state_row){e->name, e->last_us, e->total};
    }
    *out_n = k;
    return rows;
}

int cc_beat_sched_state_save(const char *path, struct beat_entry *const *entries, size_t n,
                             struct cc_err *err)
{
    size_t k;
    struct state_row *rows = state_rows(entries, n, &k);
    int rc = state_save_rows(path, rows, k, err);

    free(rows);
    return rc;
}

/* ---- State writer thread ----------------------------------------------------------------- */

/* Jobs run in order: a snapshot job empties the journal only of the lines queued before it. */
struct sw_job {
    char *text; /* journal lines; NULL: a snapshot of rows */
    size_t len;
    struct state_row *rows;
    size_t n;
    struct sw_job *next;
};

struct beat_state_writer {
    char *path;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct sw_job *head, *tail;
    bool stopping;
    bool has_snapshot_queued; /* one snapshot at a time */
    bool has_failed;          /* an append failed since the last look: take a snapshot */
};

/* Appends queued one after the other go out as one write + fdatasync, at most one every
 * SW_SYNC_GAP_US: at 1,667 slots a second, one fdatasync per pass was 28 % of the beat's CPU.
 * (A crash then re-sends up to that much more: slots confirmed but not yet synced.) */
#define SW_SYNC_GAP_US 20000

static void *sw_main(void *arg)
{
    struct beat_state_writer *w = arg;
    int64_t last_sync = 0;

    cc_log_set_process("MainProcess");
    pthread_mutex_lock(&w->mu);
    for (;;) {
        struct sw_job *j, *last;
        struct cc_err err = {0};
        int rc;

        while (w->head == NULL && !w->stopping)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->head == NULL)
            break;
        if (w->head->text != NULL && !w->stopping) {
            int64_t wait_us = last_sync + SW_SYNC_GAP_US - cc_mono_us();

            if (wait_us > 0) { /* let the next lines join this write */
                struct timespec ts;

                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += (long)(wait_us % 1000000) * 1000;
                ts.tv_sec += (time_t)(wait_us / 1000000) + ts.tv_nsec / 1000000000;
                ts.tv_nsec %= 1000000000;
                pthread_cond_timedwait(&w->cv, &w->mu, &ts);
                continue; /* woken by a stop, a snapshot or the next lines: look again */
            }
        }
        j = last = w->head; /* a snapshot alone, or the run of appends before the next one */
        if (j->text != NULL)
            while (last->next != NULL && last->next->text != NULL)
                last = last->next;
        w->head = last->next;
        if (w->head == NULL)
            w->tail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&w->mu);
        if (j->text == NULL) {
            rc = state_save_rows(w->path, j->rows, j->n, &err);
        } else if (j->next == NULL) {
            rc = journal_write(w->path, j->text, j->len, &err);
        } else {
            struct cc_strbuf b;

            cc_strbuf_init(&b, 0);
            for (struct sw_job *k = j; k != NULL; k = k->next)
                cc_strbuf_putn(&b, k->text, k->len);
            rc = b.p != NULL ? journal_write(w->path, b.p, b.len, &err)
                             : cc_err_set(&err, CC_ENOMEM, "state file: out of memory");
            cc_strbuf_deinit(&b);
        }
        if (rc != CC_OK)
            cc_error("beat: %s", err.msg);
        last_sync = cc_mono_us();
        pthread_mutex_lock(&w->mu);
        if (j->text == NULL)
            w->has_snapshot_queued = false;
        if (rc != CC_OK && j->text != NULL)
            w->has_failed = true;
        while (j != NULL) {
            struct sw_job *next = j->next;

            free(j->text);
            free(j->rows);
            free(j);
            j = next;
        }
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

int cc_beat_sched_state_writer_start(struct beat_state_writer **out, const char *path,
                                     struct cc_err *err)
{
    struct beat_state_writer *w = cc_xcalloc(1, sizeof(*w));
    int e;

    w->path = cc_xstrdup(path);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if ((e = pthread_create(&w->thread, NULL, sw_main, w)) != 0) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w->path);
        free(w);
        *out = NULL;
        return cc_err_set(err, CC_EIO, "state writer thread: %s", strerror(e));
    }
    *out = w;
    return CC_OK;
}

static void sw_queue(struct beat_state_writer *w, struct sw_job *j)
{
    pthread_mutex_lock(&w->mu);
    if (w->tail != NULL)
        w->tail->next = j;
    else
        w->head = j;
    w->tail = j;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void cc_beat_sched_state_writer_append(struct beat_state_writer *w,
                                       struct beat_entry *const *entries, size_t n)
{
    struct sw_job *j;
    struct cc_strbuf b;

    if (n == 0)
        return;
    cc_strbuf_init(&b, 0);
    journal_lines(&b, entries, n);
    j = cc_xcalloc(1, sizeof(*j));
    j->text = cc_strbuf_take(&b, &j->len);
    cc_strbuf_deinit(&b);
    if (j->text == NULL) { /* out of memory: as a failed append */
        free(j);
        pthread_mutex_lock(&w->mu);
        w->has_failed = true;
        pthread_mutex_unlock(&w->mu);
        return;
    }
    sw_queue(w, j);
}

bool cc_beat_sched_state_writer_snapshot(struct beat_state_writer *w,
                                         struct beat_entry *const *entries, size_t n)
{
    struct sw_job *j;

    pthread_mutex_lock(&w->mu);
    if (w->has_snapshot_queued) {
        pthread_mutex_unlock(&w->mu);
        return false;
    }
    w->has_snapshot_queued = true;
    pthread_mutex_unlock(&w->mu);
    j = cc_xcalloc(1, sizeof(*j));
    j->rows = state_rows(entries, n, &j->n);
    sw_queue(w, j);
    return true;
}

bool cc_beat_sched_state_writer_take_failed(struct beat_state_writer *w)
{
    bool failed;

    pthread_mutex_lock(&w->mu);
    failed = w->has_failed;
    w->has_failed = false;
    pthread_mutex_unlock(&w->mu);
    return failed;
}

void cc_beat_sched_state_writer_stop(struct beat_state_writer *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w->path);
    free(w);
}
