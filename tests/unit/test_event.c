/* proto/event.c against the captured Celery events (tests/fixtures/event-*.json): each
 * event is rebuilt from its decoded fields with the typed builder for its type and must
 * equal the bytes the Python worker sent (body_raw), key order and separators included. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "event.h"

static const char *jstr(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* Rebuild one decoded event. Owned. */
static char *rebuild(const json_t *e)
{
    const char *type = jstr(e, "type");
    struct cc_event_head h = {
        .hostname = jstr(e, "hostname"),
        .utcoffset = (int)json_integer_value(json_object_get(e, "utcoffset")),
        .pid = (long)json_integer_value(json_object_get(e, "pid")),
        .clock = (uint64_t)json_integer_value(json_object_get(e, "clock")),
        .timestamp = json_real_value(json_object_get(e, "timestamp")),
    };
    const char *uuid = jstr(e, "uuid");

    if (strncmp(type, "worker-", 7) == 0) {
        struct cc_event_worker_info wi = {
            .freq_s = json_number_value(json_object_get(e, "freq")),
            .active = json_integer_value(json_object_get(e, "active")),
            .processed = json_integer_value(json_object_get(e, "processed")),
            .sw_ident = jstr(e, "sw_ident"),
            .sw_ver = jstr(e, "sw_ver"),
            .sw_sys = jstr(e, "sw_sys"),
        };
        for (int i = 0; i < 3; i++)
            wi.loadavg[i] = json_number_value(json_array_get(json_object_get(e, "loadavg"), i));
        return cc_event_worker(&h, type, &wi, NULL);
    }
    if (strcmp(type, "task-received") == 0) {
        struct cc_event_received r = {
            .uuid = uuid,
            .name = jstr(e, "name"),
            .argsrepr = jstr(e, "args"),
            .kwargsrepr = jstr(e, "kwargs"),
            .root_id = jstr(e, "root_id"),
            .parent_id = jstr(e, "parent_id"),
            .retries = json_integer_value(json_object_get(e, "retries")),
            .eta = jstr(e, "eta"),
            .expires = jstr(e, "expires"),
        };
        return cc_event_task_received(&h, &r, NULL);
    }
    if (strcmp(type, "task-started") == 0)
        return cc_event_task_started(&h, uuid, NULL);
    if (strcmp(type, "task-succeeded") == 0)
        return cc_event_task_succeeded(&h, uuid, jstr(e, "result"),
                                       json_real_value(json_object_get(e, "runtime")), NULL);
    if (strcmp(type, "task-failed") == 0 || strcmp(type, "task-retried") == 0)
        return cc_event_task_failed(&h, type, uuid, jstr(e, "exception"), jstr(e, "traceback"),
                                    NULL);
    if (strcmp(type, "task-rejected") == 0)
        return cc_event_task_rejected(&h, uuid, json_is_true(json_object_get(e, "requeue")), NULL);
    if (strcmp(type, "task-revoked") == 0) {
        json_t *sig = json_object_get(e, "signum");

        return cc_event_task_revoked(&h, uuid, json_is_true(json_object_get(e, "terminated")),
                                     json_is_integer(sig) ? (int)json_integer_value(sig) : 0,
                                     json_is_true(json_object_get(e, "expired")), NULL);
    }
    fail_msg("unexpected type %s", type);
    return NULL;
}

static void check_fixture(const char *name, const char *want_rk)
{
    char path[1024];
    json_error_t jerr;
    json_t *fx, *dec;
    const char *raw;
    char *got = NULL;
    size_t glen = 0, cap = 0;

    snprintf(path, sizeof(path), "%s/%s", CC_FIXTURES_DIR, name);
    fx = json_load_file(path, 0, &jerr);
    assert_non_null(fx);
    raw = jstr(fx, "body_raw");
    dec = json_object_get(fx, "body_decoded");
    assert_string_equal(json_string_value(json_array_get(json_object_get(fx, "routing_keys"), 0)),
                        want_rk);
    if (json_is_array(dec)) {
        /* task.multi: a JSON list of events, json.dumps' ", " between them. */
        size_t i;
        json_t *e;

        cap = strlen(raw) * 2 + 16;
        got = calloc(1, cap);
        strcat(got, "[");
        json_array_foreach(dec, i, e)
        {
            char *one = rebuild(e);

            if (i > 0)
                strcat(got, ", ");
            strcat(got, one);
            free(one);
        }
        strcat(got, "]");
    } else {
        char rk[64];

        got = rebuild(dec);
        cc_event_routing_key(jstr(dec, "type"), rk, sizeof(rk));
        assert_string_equal(rk, want_rk);
    }
    glen = strlen(got);
    assert_int_equal(glen, strlen(raw));
    assert_string_equal(got, raw);
    free(got);
    json_decref(fx);
}

static void test_event_worker(void **state)
{
    (void)state;
    check_fixture("event-worker-online.json", "worker.online");
    check_fixture("event-worker-heartbeat.json", "worker.heartbeat");
    check_fixture("event-worker-offline.json", "worker.offline");
}

static void test_event_task(void **state)
{
    static const char *const names[] = {
        "event-task-received.json",
        "event-task-started.json",
        "event-task-succeeded.json",
        "event-task-failed.json",
        "event-task-retried.json",
        "event-task-rejected.json",
        "event-task-revoked-expired.json",
        "event-task-revoked-plain.json",
        "event-task-revoked-terminated.json",
        "event-task-multi-batch.json",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        check_fixture(names[i], "task.multi");
}

static void test_event_stream_sample(void **state)
{
    /* Every single-object event of a whole worker run (heartbeats with loadavg etc.). */
    char path[1024], line[65536];
    FILE *f;
    int n = 0;

    (void)state;
    snprintf(path, sizeof(path), "%s/events-stream-sample.jsonl", CC_FIXTURES_DIR);
    f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f) != NULL) {
        json_error_t jerr;
        json_t *m = json_loads(line, 0, &jerr), *body;
        char *want, *got;

        assert_non_null(m);
        body = json_object_get(m, "body");
        if (!json_is_object(body) || strncmp(jstr(body, "type"), "worker-", 7) != 0 ||
            json_object_get(body, "loadavg") == NULL) {
            /* (the heartbeat control command's extra heartbeat carries fewer fields) */
            json_decref(m);
            continue;
        }
        /* The sample holds decoded bodies; json.dumps of them is the raw text. */
        want = json_dumps(body, JSON_PRESERVE_ORDER | JSON_COMPACT | JSON_REAL_PRECISION(17));
        got = rebuild(body);
        json_t *b = json_loads(got, 0, &jerr);
        assert_non_null(b);
        assert_true(json_equal(body, b));
        json_decref(b);
        free(want);
        free(got);
        json_decref(m);
        n++;
    }
    fclose(f);
    assert_true(n > 3);
}

static void test_event_revoked_null_signum(void **state)
{
    struct cc_event_head h = {.hostname = "c@h", .pid = 7, .clock = 3, .timestamp = 1.5};
    char *s = cc_event_task_revoked(&h, "id", false, 0, true, NULL);

    (void)state;
    assert_string_equal(s, "{\"hostname\": \"c@h\", \"utcoffset\": 0, \"pid\": 7, \"clock\": 3, "
                           "\"uuid\": \"id\", \"terminated\": false, \"signum\": null, "
                           "\"expired\": true, \"timestamp\": 1.5, \"type\": \"task-revoked\"}");
    free(s);
}

/* Flower's wakeup ('heartbeat' broadcast): Celery answers
 * send('worker-heartbeat', freq=5, **SOFTWARE_INFO), an int freq and nothing else. */
static void test_event_wakeup_heartbeat_int_freq(void **state)
{
    struct cc_event_head h = {.hostname = "c@h", .pid = 7, .clock = 3, .timestamp = 1.5};
    struct cc_event_worker_info wi = {.freq_s = 5.0,
                                      .sw_ident = "py-celery",
                                      .sw_ver = "5.2.6",
                                      .sw_sys = "Linux",
                                      .is_software_only = true};
    char *s = cc_event_worker(&h, "worker-heartbeat", &wi, NULL);

    (void)state;
    assert_string_equal(s, "{\"hostname\": \"c@h\", \"utcoffset\": 0, \"pid\": 7, \"clock\": 3, "
                           "\"freq\": 5, \"sw_ident\": \"py-celery\", \"sw_ver\": \"5.2.6\", "
                           "\"sw_sys\": \"Linux\", \"timestamp\": 1.5, "
                           "\"type\": \"worker-heartbeat\"}");
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_worker),
        cmocka_unit_test(test_event_task),
        cmocka_unit_test(test_event_stream_sample),
        cmocka_unit_test(test_event_revoked_null_signum),
        cmocka_unit_test(test_event_wakeup_heartbeat_int_freq),
    };

    return cmocka_run_group_tests_name("event", tests, NULL, NULL);
}
