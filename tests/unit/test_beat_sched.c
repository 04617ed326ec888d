/* Unit tests for src/beat/beat_sched.c: schedule-file entries (and the errors that name them),
 * slots, the missed-run policy, coalescing, the heap, the name index and the state file. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "beat_int.h"
#include "isotime.h"

#define S 1000000LL

static int64_t iso(const char *s)
{
    int64_t us = 0;

    assert_int_equal(cc_isotime_parse(s, &us), CC_OK);
    return us;
}

static struct beat_entry *entry(const char *name, const char *spec_json)
{
    json_error_t jerr;
    json_t *spec = json_loads(spec_json, 0, &jerr);
    struct beat_entry *e = calloc(1, sizeof(*e));
    struct cc_err err = {0};

    assert_non_null(spec);
    if (cc_beat_sched_entry_from_file(e, name, spec, "UTC", &err) != CC_OK)
        fail_msg("%s", err.msg);
    json_decref(spec);
    return e;
}

static void test_beat_sched_file_entry_fields(void **state)
{
    struct beat_entry *e = entry("x", "{\"task\": \"app.add\", \"schedule\": 2.5, \"args\": [1], "
                                      "\"kwargs\": {\"a\": 1}, \"options\": {\"queue\": \"q\", "
                                      "\"priority\": 3, \"expires\": 30, \"exchange\": \"ex\", "
                                      "\"routing_key\": \"rk\"}, \"missed\": \"skip\", "
                                      "\"starting_deadline\": 60}");

    (void)state;
    assert_string_equal(e->task, "app.add");
    assert_int_equal(e->sched.kind, CC_SCHEDULE_INTERVAL);
    assert_int_equal(e->sched.every_us, 2500000);
    {
        json_t *args = NULL, *kwargs = NULL;

        assert_int_equal(cc_beat_sched_entry_args(e, &args, &kwargs), CC_OK);
        assert_int_equal(json_array_size(args), 1);
        assert_int_equal(json_integer_value(json_object_get(kwargs, "a")), 1);
        json_decref(args);
        json_decref(kwargs);
    }
    assert_string_equal(e->queue, "q");
    assert_string_equal(e->exchange, "ex");
    assert_string_equal(e->routing_key, "rk");
    assert_int_equal(e->priority, 3);
    assert_true(e->expires_s == 30.0);
    assert_int_equal(e->missed, BEAT_MISSED_SKIP);
    assert_int_equal(e->deadline_us, 60 * S);
    cc_beat_sched_entry_free(e);
    cc_beat_sched_caches_free();
}

static void test_beat_sched_file_errors_name_the_entry(void **state)
{
    static const struct {
        const char *spec, *want;
    } cases[] = {
        {"{\"schedule\": 1}", "entry 'bad': \"task\""},
        {"{\"task\": \"t\"}", "entry 'bad': \"schedule\" is required"},
        {"{\"task\": \"t\", \"schedule\": 0}", "entry 'bad': schedule: interval must be > 0"},
        {"{\"task\": \"t\", \"schedule\": {\"type\": \"crontab\", \"hour\": \"24\"}}",
         "entry 'bad': schedule: crontab hour '24'"},
        {"{\"task\": \"t\", \"schedule\": {\"type\": \"weekly\"}}", "entry 'bad': schedule:"},
        {"{\"task\": \"t\", \"schedule\": 1, \"timezone\": \"Mars/Olympus\"}",
         "entry 'bad': timezone"},
        {"{\"task\": \"t\", \"schedule\": 1, \"args\": {}}", "\"args\" must be a list"},
        {"{\"task\": \"t\", \"schedule\": 1, \"options\": {\"countdown\": 1}}",
         "unknown option 'countdown'"},
        {"{\"task\": \"t\", \"schedule\": 1, \"options\": {\"priority\": 300}}",
         "options.priority"},
        {"{\"task\": \"t\", \"schedule\": 1, \"missed\": \"twice\"}", "\"missed\""},
        {"{\"task\": \"t\", \"schedule\": 1, \"sched\": 1}", "unknown key 'sched'"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_error_t jerr;
        json_t *spec = json_loads(cases[i].spec, 0, &jerr);
        struct beat_entry e;
        struct cc_err err = {0};

        assert_non_null(spec);
        assert_int_equal(cc_beat_sched_entry_from_file(&e, "bad", spec, "UTC", &err), CC_EINVAL);
        if (strstr(err.msg, cases[i].want) == NULL)
            fail_msg("case %zu: '%s' lacks '%s'", i, err.msg, cases[i].want);
        cc_beat_sched_entry_deinit(&e);
        json_decref(spec);
    }
    cc_beat_sched_caches_free();
}

static void test_beat_sched_file_load(void **state)
{
    char path[] = "/tmp/cc_beat_sched_XXXXXX";
    int fd = mkstemp(path);
    const char *text = "{\"entries\": {\"a\": {\"task\": \"t\", \"schedule\": 1}, "
                       "\"b\": {\"task\": \"t\", \"schedule\": {\"type\": \"crontab\", "
                       "\"minute\": 0}, \"timezone\": \"Europe/Oslo\"}}}";
    struct beat_entry **arr = NULL;
    size_t n = 0;
    struct cc_err err = {0};

    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    assert_int_equal(cc_beat_sched_file_load(path, "UTC", &arr, &n, &err), CC_OK);
    assert_int_equal(n, 2);
    assert_string_equal(arr[1]->tz_name, "Europe/Oslo");
    assert_int_equal(arr[1]->sched.kind, CC_SCHEDULE_CRONTAB);
    for (size_t i = 0; i < n; i++)
        cc_beat_sched_entry_free(arr[i]);
    free(arr);
    unlink(path);
    assert_int_equal(cc_beat_sched_file_load("/nonexistent/x.json", "UTC", &arr, &n, &err),
                     CC_EINVAL);
    assert_non_null(strstr(err.msg, "/nonexistent/x.json"));
    cc_beat_sched_caches_free();
}

static int load_text(const char *text, struct beat_entry ***arr, size_t *n, struct cc_err *err)
{
    char path[] = "/tmp/cc_beat_sched_XXXXXX";
    int fd = mkstemp(path), rc;

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    rc = cc_beat_sched_file_load(path, "UTC", arr, n, err);
    unlink(path);
    return rc;
}

/* The schedule file is read member by member (100,000 entries without a whole-document tree):
 * the same acceptance and errors as a whole-document parse, plus duplicate names refused. */
static void test_beat_sched_file_load_member_by_member(void **state)
{
    static const struct {
        const char *text, *want; /* want NULL: loads */
    } cases[] = {
        {" {\"x\": 1, \"entries\" : {\"a\\\"}{\": {\"task\": \"t{[\\\"\", \"schedule\": 1, "
         "\"args\": [\"]\", {\"k\": [1, {}]}]}}, \"y\": [1, {\"z\": \"}\"}]}\n",
         NULL},
        {"{\"entries\": {}}", NULL},
        {"{\"entries\": {\"a\": {\"task\": \"t\", \"schedule\": 1}, \"a\": {\"task\": \"t\", "
         "\"schedule\": 2}}}",
         "entry 'a' appears twice"},
        {"{\"entries\": {}} x", "end of file expected"},
        {"{\"entries\": {\"a\": {\"task\": \"t\",\n \"schedule\": 1,}}}", "(line 2)"},
        {"{\"other\": {}}", "expected {\"entries\": {NAME: {...}}}"},
        {"[1]", "expected a JSON object"},
        {"{\"entries\": [1]}", "expected an object"},
        {"{\"entries\": {\"a\": {\"task\": \"t\", \"schedule\": 1}",
         "'entries' missing or not ended"},
        {"{\"entries\": {\"a\": {\"task\": \"t\", \"schedule\": 1} \"b\": 1}}",
         "expected ',' or '}'"},
        {"{\"entries\": {\"a\": }}", "value of 'a' missing"},
        {"{\"entries\": {\"a\" {}}}", "expected ':'"},
        {"{\"entries\": {\"a\": {\"task\": \"t\", \"schedule\": \"x\"}}}", "entry 'a': schedule"},
        {"{\"entries\": {\"job:x\": {\"task\": \"t\", \"schedule\": 1}}}", "start with \"job:\""},
        {"", "expected a JSON object"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct beat_entry **arr = NULL;
        size_t n = 0;
        struct cc_err err = {0};
        int rc = load_text(cases[i].text, &arr, &n, &err);

        if (cases[i].want == NULL) {
            if (rc != CC_OK)
                fail_msg("case %zu: %s", i, err.msg);
        } else if (rc != CC_EINVAL || strstr(err.msg, cases[i].want) == NULL ||
                   strstr(err.msg, "schedule file /tmp/cc_beat_sched_") == NULL) {
            fail_msg("case %zu: rc %d '%s' lacks '%s'", i, rc, err.msg, cases[i].want);
        }
        if (i == 0) {
            json_t *args = NULL, *kwargs = NULL;

            assert_int_equal(n, 1);
            assert_string_equal(arr[0]->name, "a\"}{");
            assert_string_equal(arr[0]->task, "t{[\"");
            assert_int_equal(cc_beat_sched_entry_args(arr[0], &args, &kwargs), CC_OK);
            assert_string_equal(json_string_value(json_array_get(args, 0)), "]");
            assert_int_equal(json_object_size(kwargs), 0);
            json_decref(args);
            json_decref(kwargs);
        }
        for (size_t k = 0; k < n; k++)
            cc_beat_sched_entry_free(arr[k]);
        free(arr);
    }
    cc_beat_sched_caches_free();
}

static void test_beat_sched_slots(void **state)
{
    struct beat_entry *iv = entry("i", "{\"task\": \"t\", \"schedule\": 10}");
    struct beat_entry *cr =
        entry("c", "{\"task\": \"t\", \"schedule\": {\"type\": \"crontab\", \"minute\": \"*/15\"}, "
                   "\"timezone\": \"Europe/Oslo\"}");
    struct cc_err err = {0};
    int64_t t0 = iso("2026-03-29T00:31:21Z"), next = 0;

    (void)state;
    assert_int_equal(cc_beat_sched_next_after(iv, t0, &next, &err), CC_OK);
    assert_int_equal(next, t0 + 10 * S);
    /* Celery's probe (celery-wire.md section 7.3): every 15 min at :31:21 -> :45. */
    assert_int_equal(cc_beat_sched_next_after(cr, t0, &next, &err), CC_OK);
    assert_int_equal(next, iso("2026-03-29T00:45:00Z"));
    /* A slot exactly on a match: the next one, not the same (slots never repeat). */
    assert_int_equal(cc_beat_sched_next_after(cr, next, &next, &err), CC_OK);
    assert_int_equal(next, iso("2026-03-29T01:00:00Z"));
    cc_beat_sched_entry_free(iv);
    cc_beat_sched_entry_free(cr);
    cc_beat_sched_caches_free();
}

static void test_beat_sched_plan_missed(void **state)
{
#define PLAN_SPEC(missed, extra)                                                                   \
    "{\"task\": \"t\", \"schedule\": 10, \"missed\": \"" missed "\"" extra "}"
    int64_t now = iso("2026-11-23T12:00:00Z"), missed = 0;
    struct cc_err err = {0};
    struct beat_entry *once, *skip, *late, *fresh;

    (void)state;
    once = entry("once", PLAN_SPEC("run_once", ""));
    skip = entry("skip", PLAN_SPEC("skip", ""));
    late = entry("late", PLAN_SPEC("run_once", ", \"starting_deadline\": 2"));
    fresh = entry("fresh", PLAN_SPEC("run_once", ""));
    once->last_us = skip->last_us = late->last_us = now - 25 * S; /* missed: -15 s, -5 s */

    assert_int_equal(cc_beat_sched_entry_plan(once, now, &missed, &err), CC_OK);
    assert_int_equal(missed, 2);
    assert_int_equal(once->slot_us, now - 5 * S); /* the latest missed slot, at once */
    assert_int_equal(once->wake_us, now);
    assert_true(once->is_catchup);

    assert_int_equal(cc_beat_sched_entry_plan(skip, now, &missed, &err), CC_OK);
    assert_int_equal(missed, 2);
    assert_int_equal(skip->slot_us, now + 5 * S);
    assert_int_equal(skip->last_us, now - 5 * S);
    assert_false(skip->is_catchup);

    assert_int_equal(cc_beat_sched_entry_plan(late, now, &missed, &err), CC_OK);
    assert_int_equal(late->slot_us, now + 5 * S); /* 5 s late > deadline 2 s */

    /* Never ran: as Celery, the first run is `every` after now. */
    assert_int_equal(cc_beat_sched_entry_plan(fresh, now, &missed, &err), CC_OK);
    assert_int_equal(missed, 0);
    assert_int_equal(fresh->slot_us, now + 10 * S);

    /* Not missed: the next slot is in the future. */
    once->last_us = now - 3 * S;
    assert_int_equal(cc_beat_sched_entry_plan(once, now, &missed, &err), CC_OK);
    assert_int_equal(missed, 0);
    assert_int_equal(once->slot_us, now + 7 * S);

    /* A stalled loop: three slots due, one run for the latest. */
    once->slot_us = now - 20 * S;
    assert_int_equal(cc_beat_sched_entry_coalesce(once, now), 2);
    assert_int_equal(once->slot_us, now);
    assert_int_equal(cc_beat_sched_entry_coalesce(once, now - S), 0);

    cc_beat_sched_entry_free(once);
    cc_beat_sched_entry_free(skip);
    cc_beat_sched_entry_free(late);
    cc_beat_sched_entry_free(fresh);
    cc_beat_sched_caches_free();
}

#ifdef CC_BEAT_DST_CASES
/* Drive the beat's own stepping as the loop does, with a fake clock: a new entry planned at
 * `start`, then at each wake-up (clock = wake_us) the due slot is dispatched and the entry
 * steps to its next slot (cc_beat_sched_entry_step, what the loop's entry_advance calls). */
static size_t beat_slots(struct beat_entry *e, int64_t start, int64_t end, int64_t *out, size_t max,
                         struct cc_err *err)
{
    int64_t missed = 0;
    size_t n = 0;

    if (cc_beat_sched_entry_plan(e, start, &missed, err) != CC_OK)
        return SIZE_MAX;
    while (e->slot_us <= end && n < max) {
        int64_t now = e->wake_us;

        if (cc_beat_sched_entry_coalesce(e, now) != 0) {
            cc_err_set(err, CC_EINVAL, "coalesced at a wake-up");
            return SIZE_MAX;
        }
        out[n++] = e->slot_us;
        if (cc_beat_sched_entry_step(e, true, err) != CC_OK)
            return SIZE_MAX;
        if (e->slot_us <= now) {
            cc_err_set(err, CC_EINVAL, "slot did not move forward");
            return SIZE_MAX;
        }
    }
    return n;
}

static void fmt_slots(char *buf, size_t size, const int64_t *v, size_t n)
{
    size_t off = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < n && off + 40 < size; i++) {
        char b[40];

        off += (size_t)snprintf(buf + off, size - off, "%s%s", i ? " " : "",
                                cc_isotime_format(v[i], 0, b, sizeof(b)));
    }
}

/* Issue #14: crontab slots across DST changes are the first instants at which Celery's
 * is_due(last_run_at) says True (the UTC offset at the time of the check, not at the last
 * slot), over thousands of random specs x zones x offset changes (gen_beat_dst_cases.py). */
static void test_beat_sched_dst_slots_as_celery(void **state)
{
    json_error_t jerr;
    json_t *root = json_load_file(CC_BEAT_DST_CASES, 0, &jerr), *c;
    size_t i, bad = 0, n_slots = 0;

    (void)state;
    if (root == NULL)
        fail_msg("%s: %s (run the beat_dst_cases fixture first)", CC_BEAT_DST_CASES, jerr.text);
    assert_true(json_array_size(json_object_get(root, "cases")) > 2000);
    json_array_foreach(json_object_get(root, "cases"), i, c)
    {
        const json_t *want = json_object_get(c, "slots");
        size_t nw = json_array_size(want), ng;
        int64_t start = json_integer_value(json_object_get(c, "start"));
        int64_t end = json_integer_value(json_object_get(c, "end"));
        int64_t got[400], exp[400];
        json_t *sched = json_deep_copy(json_object_get(c, "spec")), *spec;
        struct beat_entry e;
        struct cc_err err = {0};
        bool same;

        json_object_set_new(sched, "type", json_string("crontab"));
        spec = json_pack("{s:s,s:o,s:O}", "task", "t", "schedule", sched, "timezone",
                         json_object_get(c, "tz"));
        assert_int_equal(cc_beat_sched_entry_from_file(&e, "dst", spec, "UTC", &err), CC_OK);
        json_decref(spec);
        assert_true(nw <= 400);
        for (size_t k = 0; k < nw; k++)
            exp[k] = json_integer_value(json_array_get(want, k));
        ng = beat_slots(&e, start, end, got,
                        json_is_true(json_object_get(c, "truncated")) ? nw : 400, &err);
        same = ng == nw && memcmp(got, exp, nw * sizeof(*got)) == 0;
        n_slots += nw;
        if (!same && bad++ < 8) {
            char *sp = json_dumps(json_object_get(c, "spec"), JSON_SORT_KEYS | JSON_COMPACT);
            char bw[2000], bg[2000], b0[40];

            fmt_slots(bw, sizeof(bw), exp, nw < 8 ? nw : 8);
            fmt_slots(bg, sizeof(bg), got, ng == SIZE_MAX ? 0 : (ng < 8 ? ng : 8));
            print_message("case %zu: %s %s from %s:%s\n  celery: %s\n  beat:   %s\n", i,
                          json_string_value(json_object_get(c, "tz")), sp,
                          cc_isotime_format(start, 0, b0, sizeof(b0)),
                          ng == SIZE_MAX ? err.msg : "", bw, bg);
            free(sp);
        }
        cc_beat_sched_entry_deinit(&e);
    }
    print_message("%zu cases, %zu slots, %zu differ\n",
                  json_array_size(json_object_get(root, "cases")), n_slots, bad);
    json_decref(root);
    cc_beat_sched_caches_free();
    assert_int_equal(bad, 0);
}
#endif

static void test_beat_sched_heap_and_index(void **state)
{
    enum { N = 500 };
    struct beat_entry *es = calloc(N, sizeof(*es));
    struct beat_heap h = {0};
    struct beat_index ix = {0};
    int64_t prev = INT64_MIN;
    char name[32];

    (void)state;
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "e%d", i);
        es[i].name = strdup(name);
        es[i].wake_us = (int64_t)((i * 7919) % N);
        es[i].heap_i = SIZE_MAX;
        cc_beat_sched_heap_push(&h, &es[i]);
        cc_beat_sched_index_put(&ix, &es[i]);
    }
    assert_ptr_equal(cc_beat_sched_index_get(&ix, "e123"), &es[123]);
    cc_beat_sched_index_del(&ix, &es[123]);
    assert_null(cc_beat_sched_index_get(&ix, "e123"));
    cc_beat_sched_heap_remove(&h, &es[10]);
    es[20].wake_us = -5;
    cc_beat_sched_heap_fix(&h, &es[20]);
    assert_ptr_equal(cc_beat_sched_heap_top(&h), &es[20]);
    while (cc_beat_sched_heap_top(&h) != NULL) {
        struct beat_entry *e = cc_beat_sched_heap_top(&h);

        assert_true(e->wake_us >= prev);
        assert_true(e != &es[10]);
        prev = e->wake_us;
        cc_beat_sched_heap_remove(&h, e);
    }
    for (int i = 0; i < N; i++)
        free(es[i].name);
    free(es);
    cc_beat_sched_heap_deinit(&h);
    cc_beat_sched_index_deinit(&ix);
}

/* cc_beat_sched_state_load's callback: keep the latest slot per name, as the beat does. */
static void collect_state(const char *name, int64_t last_us, int64_t total, void *arg)
{
    json_t *o = arg, *cur = json_object_get(o, name);

    if (cur == NULL || last_us >= json_integer_value(json_object_get(cur, "l")))
        json_object_set_new(
            o, name, json_pack("{s:I,s:I}", "l", (json_int_t)last_us, "t", (json_int_t)total));
}

static int load_state(const char *path, json_t **out, struct cc_err *err)
{
    *out = json_object();
    return cc_beat_sched_state_load(path, collect_state, *out, err);
}

static void test_beat_sched_state_file_roundtrip(void **state)
{
    char path[] = "/tmp/cc_beat_state_XXXXXX";
    int fd = mkstemp(path);
    struct beat_entry *e = entry("e", "{\"task\": \"t\", \"schedule\": 1}");
    struct beat_entry *never = entry("never", "{\"task\": \"t\", \"schedule\": 1}");
    struct beat_entry *arr[2] = {e, never};
    struct cc_err err = {0};
    json_t *st = NULL;

    (void)state;
    close(fd);
    unlink(path);
    assert_int_equal(load_state(path, &st, &err), CC_OK); /* missing: empty */
    assert_int_equal(json_object_size(st), 0);
    json_decref(st);
    e->last_us = iso("2026-11-23T12:00:00.123456Z");
    e->total = 42;
    assert_int_equal(cc_beat_sched_state_save(path, arr, 2, &err), CC_OK);
    assert_int_equal(load_state(path, &st, &err), CC_OK);
    assert_int_equal(json_object_size(st), 1); /* entries that never ran are not written */
    assert_int_equal(json_integer_value(json_object_get(json_object_get(st, "e"), "l")),
                     e->last_us);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(st, "e"), "t")), 42);
    json_decref(st);
    /* The journal: appended per batch, replayed over the snapshot at load. */
    e->last_us += 5 * S;
    e->total = 43;
    assert_int_equal(cc_beat_sched_state_append(path, arr, 1, &err), CC_OK);
    e->last_us += 5 * S;
    e->total = 44;
    assert_int_equal(cc_beat_sched_state_append(path, arr, 1, &err), CC_OK);
    assert_int_equal(load_state(path, &st, &err), CC_OK);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(st, "e"), "l")),
                     e->last_us);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(st, "e"), "t")), 44);
    json_decref(st);
    assert_int_equal(cc_beat_sched_state_save(path, arr, 2, &err), CC_OK); /* empties the journal */
    {
        char jp[64];
        FILE *f;

        snprintf(jp, sizeof(jp), "%s.journal", path);
        f = fopen(jp, "r");
        assert_non_null(f);
        assert_int_equal(fgetc(f), EOF);
        fclose(f);
        unlink(jp);
    }
    /* A damaged snapshot is refused with its name. */
    {
        FILE *f = fopen(path, "w");

        assert_non_null(f);
        fputs("{\"version\": 1, \"entries\": {\"e\": {\"last_run_at\": 5,}}}", f);
        fclose(f);
        assert_int_equal(load_state(path, &st, &err), CC_EINVAL);
        json_decref(st);
        assert_non_null(strstr(err.msg, path));
    }
    unlink(path);
    cc_beat_sched_entry_free(e);
    cc_beat_sched_entry_free(never);
    cc_beat_sched_caches_free();
}

/* The state writer thread: appends and snapshots in the order queued; a snapshot empties the
 * journal only of the lines queued before it; stop finishes the queue. */
static void test_beat_sched_state_writer_keeps_order(void **state)
{
    char path[] = "/tmp/cc_beat_sw_XXXXXX", jp[64];
    int fd = mkstemp(path);
    struct beat_entry *a = entry("a", "{\"task\": \"t\", \"schedule\": 1}");
    struct beat_entry *b = entry("b", "{\"task\": \"t\", \"schedule\": 1}");
    struct beat_entry *arr[2] = {a, b};
    struct beat_state_writer *w = NULL;
    struct cc_err err = {0};
    json_t *st = NULL;
    FILE *f;
    int lines = 0, c;

    (void)state;
    close(fd);
    unlink(path);
    snprintf(jp, sizeof(jp), "%s.journal", path);
    assert_int_equal(cc_beat_sched_state_writer_start(&w, path, &err), CC_OK);
    for (int i = 1; i <= 50; i++) {
        a->last_us = i * S;
        a->total = i;
        cc_beat_sched_state_writer_append(w, arr, 1);
    }
    b->last_us = 7 * S;
    b->total = 1;
    assert_true(cc_beat_sched_state_writer_snapshot(w, arr, 2));
    for (int i = 51; i <= 60; i++) {
        a->last_us = i * S;
        a->total = i;
        cc_beat_sched_state_writer_append(w, arr, 1);
    }
    cc_beat_sched_state_writer_stop(w);
    assert_int_equal(load_state(path, &st, &err), CC_OK);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(st, "a"), "l")), 60 * S);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(st, "a"), "t")), 60);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(st, "b"), "l")), 7 * S);
    json_decref(st);
    f = fopen(jp, "r"); /* the 10 lines queued after the snapshot, not the 50 before */
    assert_non_null(f);
    while ((c = fgetc(f)) != EOF)
        lines += c == '\n';
    fclose(f);
    assert_int_equal(lines, 10);
    unlink(jp);
    unlink(path);
    cc_beat_sched_entry_free(a);
    cc_beat_sched_entry_free(b);
    cc_beat_sched_caches_free();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_beat_sched_file_entry_fields, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_beat_sched_file_errors_name_the_entry, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_beat_sched_file_load, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_beat_sched_file_load_member_by_member, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_beat_sched_slots, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_beat_sched_plan_missed, NULL, NULL),
#ifdef CC_BEAT_DST_CASES
        cmocka_unit_test_setup_teardown(test_beat_sched_dst_slots_as_celery, NULL, NULL),
#endif
        cmocka_unit_test_setup_teardown(test_beat_sched_heap_and_index, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_beat_sched_state_file_roundtrip, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_beat_sched_state_writer_keeps_order, NULL, NULL),
    };

    return cmocka_run_group_tests_name("beat_sched", tests, NULL, NULL);
}
