/* Unit tests for proto/control.c against the captured pidbox fixtures (celery-wire.md §5):
 * every request parses (method, ticket, reply_to, destination filtering), every captured
 * reply body is re-serialised byte for byte, and request-info / queue / scheduled objects
 * rebuilt from their fields match Celery's bytes (key order, separators, float repr). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../proto/control.h"
#include "helpers/fixture.h"

#define NODE "w1@vm"

static const json_t *first_reply(const json_t *root)
{
    const json_t *reps = json_object_get(root, "replies");

    return json_is_array(reps) && json_array_size(reps) > 0 ? json_array_get(reps, 0) : NULL;
}

static const json_t *request_of(const json_t *root)
{
    const json_t *req = json_object_get(root, "request");

    if (json_is_array(req))
        req = json_array_get(req, 0);
    return req;
}

/* Every pidbox-*.json: the request parses as kombu's Node reads it; the reply body,
 * rebuilt from its decoded value, is byte-identical. */
static void test_ctl_all_fixtures(void **state)
{
    DIR *d = opendir(CC_FIXTURES_DIR);
    struct dirent *e;
    int n = 0, n_replies = 0;

    (void)state;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        json_t *root;
        const json_t *req, *rep;
        struct cc_control_req q;
        struct cc_err err = {0};
        const char *raw;

        if (strncmp(e->d_name, "pidbox-", 7) != 0 || strstr(e->d_name, ".json") == NULL)
            continue;
        root = fixture_load(e->d_name);
        assert_non_null(root);
        req = request_of(root);
        raw = req ? fixture_str(req, "body_raw") : NULL;
        if (raw == NULL) {
            json_decref(root);
            continue;
        }
        if (cc_control_parse(raw, strlen(raw), NODE, &q, &err) != CC_OK)
            fail_msg("%s: %s", e->d_name, err.msg);
        {
            const json_t *dec = json_object_get(req, "body_decoded");
            const json_t *rt = json_object_get(dec, "reply_to");

            assert_string_equal(q.method, fixture_str(dec, "method"));
            if (fixture_str(dec, "ticket") != NULL) {
                assert_string_equal(q.ticket, fixture_str(dec, "ticket"));
                assert_string_equal(q.reply_exchange, "reply.celery.pidbox");
                assert_string_equal(q.reply_rk, fixture_str(rt, "routing_key"));
            } else {
                assert_null(q.ticket);
            }
            assert_true(json_is_object(q.arguments));
            assert_true(json_equal(q.arguments, json_object_get(dec, "arguments")));
            if (!q.is_for_me && first_reply(root) != NULL) /* someone answered: it was w1@vm */
                fail_msg("%s: not for " NODE, e->d_name);
        }
        cc_control_req_deinit(&q);
        rep = first_reply(root);
        if (rep != NULL && fixture_str(rep, "body_raw") != NULL) {
            const char *want = fixture_str(rep, "body_raw");
            const json_t *dec = json_object_get(rep, "body_decoded");
            const char *node = json_object_iter_key(json_object_iter((json_t *)dec));
            size_t len = 0;
            char *got = cc_control_reply_body(node, json_object_get(dec, node), &len);

            assert_non_null(got);
            if (strcmp(got, want) != 0)
                fail_msg("%s: reply\n got  %s\n want %s", e->d_name, got, want);
            assert_int_equal(len, strlen(want));
            free(got);
            n_replies++;
        }
        json_decref(root);
        n++;
    }
    closedir(d);
    assert_true(n >= 25);
    assert_true(n_replies >= 20);
}

static void check_dest(const char *body, const char *host, bool want)
{
    struct cc_control_req q;
    struct cc_err err = {0};

    assert_int_equal(cc_control_parse(body, strlen(body), host, &q, &err), CC_OK);
    if (q.is_for_me != want)
        fail_msg("%s for %s: got %d", body, host, q.is_for_me);
    cc_control_req_deinit(&q);
}

static void test_ctl_destination(void **state)
{
    (void)state;
    check_dest("{\"method\": \"ping\", \"destination\": null}", "a@x", true);
    check_dest("{\"method\": \"ping\", \"destination\": []}", "a@x", true);
    check_dest("{\"method\": \"ping\", \"destination\": [\"a@x\"]}", "a@x", true);
    check_dest("{\"method\": \"ping\", \"destination\": [\"b@x\", \"a@x\"]}", "a@x", true);
    check_dest("{\"method\": \"ping\", \"destination\": [\"a@xy\"]}", "a@x", false);
    check_dest("{\"method\": \"ping\", \"destination\": null, \"pattern\": \"w1@.*\", "
               "\"matcher\": \"pcre\"}",
               "w1@vm", true);
    check_dest("{\"method\": \"ping\", \"pattern\": \"w1@.*\", \"matcher\": \"pcre\"}", "w2@vm",
               false);
    /* re.match anchors at the start only */
    check_dest("{\"method\": \"ping\", \"pattern\": \"w1\", \"matcher\": \"pcre\"}", "w1@vm", true);
    check_dest("{\"method\": \"ping\", \"pattern\": \"vm\", \"matcher\": \"pcre\"}", "w1@vm",
               false);
    check_dest("{\"method\": \"ping\", \"pattern\": \"w*@vm\", \"matcher\": \"glob\"}", "w1@vm",
               true);
    check_dest("{\"method\": \"ping\", \"pattern\": \"w*@vm\", \"matcher\": \"glob\"}", "x1@vm",
               false);
    check_dest("{\"method\": \"ping\", \"pattern\": \"w*\", \"matcher\": \"nope\"}", "w1@vm",
               false);
}

static void test_ctl_bad_requests(void **state)
{
    struct cc_control_req q;
    struct cc_err err = {0};

    (void)state;
    assert_int_equal(cc_control_parse("[1]", 3, NODE, &q, &err), CC_EBADMSG);
    cc_control_req_deinit(&q);
    assert_int_equal(cc_control_parse("{", 1, NODE, &q, &err), CC_EBADMSG);
    cc_control_req_deinit(&q);
    assert_int_equal(cc_control_parse("{\"arguments\": {}}", 17, NODE, &q, &err), CC_EBADMSG);
    cc_control_req_deinit(&q);
    /* a cast: no ticket, no reply_to; arguments missing -> {} */
    assert_int_equal(cc_control_parse("{\"method\": \"revoke\"}", 20, NODE, &q, &err), CC_OK);
    assert_null(q.ticket);
    assert_null(q.reply_exchange);
    assert_int_equal(json_object_size(q.arguments), 0);
    cc_control_req_deinit(&q);
}

static json_t *info_from(const json_t *o)
{
    const json_t *di = json_object_get(o, "delivery_info");
    const json_t *ts = json_object_get(o, "time_start");
    const json_t *pid = json_object_get(o, "worker_pid");
    struct cc_control_info in = {
        .id = json_string_value(json_object_get(o, "id")),
        .name = json_string_value(json_object_get(o, "name")),
        .args = json_object_get(o, "args"),
        .kwargs = json_object_get(o, "kwargs"),
        .hostname = json_string_value(json_object_get(o, "hostname")),
        .time_start = json_is_null(ts) ? -1 : json_real_value(ts),
        .is_acked = json_is_true(json_object_get(o, "acknowledged")),
        .exchange = json_string_value(json_object_get(di, "exchange")),
        .routing_key = json_string_value(json_object_get(di, "routing_key")),
        .priority = (int)json_integer_value(json_object_get(di, "priority")),
        .is_redelivered = json_is_true(json_object_get(di, "redelivered")),
        .worker_pid = json_is_null(pid) ? 0 : (long)json_integer_value(pid),
    };

    return cc_control_request_info(&in);
}

/* Rebuild a whole reply from the fields and compare with the captured bytes. */
static void check_rebuilt(const char *fixture, json_t *(*rebuild)(const json_t *dec))
{
    json_t *root = fixture_load(fixture);
    const json_t *rep = first_reply(root);
    const json_t *dec = json_object_get(rep, "body_decoded");
    json_t *v = rebuild(json_object_get(dec, NODE));
    char *got = cc_control_reply_body(NODE, v, NULL);

    if (strcmp(got, fixture_str(rep, "body_raw")) != 0)
        fail_msg("%s:\n got  %s\n want %s", fixture, got, fixture_str(rep, "body_raw"));
    free(got);
    json_decref(v);
    json_decref(root);
}

static json_t *rebuild_list(const json_t *dec)
{
    json_t *out = json_array();
    size_t i;
    json_t *o;

    json_array_foreach(dec, i, o) json_array_append_new(out, info_from(o));
    return out;
}

static json_t *rebuild_scheduled(const json_t *dec)
{
    json_t *out = json_array();
    size_t i;
    json_t *o;

    json_array_foreach(dec, i, o) json_array_append_new(
        out, cc_control_scheduled_entry(json_string_value(json_object_get(o, "eta")),
                                        info_from(json_object_get(o, "request"))));
    return out;
}

static json_t *rebuild_query(const json_t *dec)
{
    json_t *out = json_object();
    const char *k;
    json_t *v;

    json_object_foreach((json_t *)dec, k, v) json_object_set_new(
        out, k, json_pack("[O, o]", json_array_get(v, 0), info_from(json_array_get(v, 1))));
    return out;
}

static json_t *rebuild_queues(const json_t *dec)
{
    (void)dec;
    return json_pack("[o]", cc_control_queue_info("celery", "celery", "direct", "celery", true, 0));
}

static json_t *rebuild_revoke(const json_t *dec)
{
    json_t *ids = json_pack("[s]", "24f21374-586b-4d56-b457-04a2860d2ba5");
    char *text = cc_control_join_ids("tasks ", ids, " flagged as revoked");
    json_t *v = cc_control_ok(text);

    (void)dec;
    free(text);
    json_decref(ids);
    return v;
}

static void test_ctl_rebuilt_replies(void **state)
{
    (void)state;
    check_rebuilt("pidbox-inspect-active.json", rebuild_list);
    check_rebuilt("pidbox-inspect-reserved.json", rebuild_list);
    check_rebuilt("pidbox-inspect-scheduled.json", rebuild_scheduled);
    check_rebuilt("pidbox-inspect-query_task.json", rebuild_query);
    check_rebuilt("pidbox-inspect-active_queues.json", rebuild_queues);
    check_rebuilt("pidbox-control-revoke.json", rebuild_revoke);
}

/* issue 14: revoke(terminate=1) from Flower was ignored (only JSON true counted). Every
 * boolean argument is Python's `if value:`. */
static void test_issue_14_truthy_is_pythons(void **state)
{
    static const struct {
        const char *json;
        bool want;
    } cases[] = {
        {"true", true},       {"false", false}, {"null", false}, {"1", true},     {"0", false},
        {"-1", true},         {"0.0", false},   {"0.5", true},   {"\"\"", false}, {"\"yes\"", true},
        {"\"false\"", true},  {"\"0\"", true},  {"[]", false},   {"[0]", true},   {"{}", false},
        {"{\"a\": 0}", true}, {"1e300", true},  {"-0.0", false},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_error_t jerr;
        json_t *v = json_loads(cases[i].json, JSON_DECODE_ANY, &jerr);

        assert_non_null(v);
        if (cc_control_truthy(v) != cases[i].want)
            fail_msg("%s: want %d", cases[i].json, cases[i].want);
        json_decref(v);
    }
    assert_false(cc_control_truthy(NULL));
}

/* The request Flower's Terminate button makes (flower/api/control.py TaskRevoke: terminate
 * goes through strtobool, an int) and the same with other spellings. */
static void test_issue_14_revoke_terminate_one(void **state)
{
    static const char body[] =
        "{\"method\": \"revoke\", \"arguments\": {\"task_id\": \"t1\", \"terminate\": 1, "
        "\"signal\": \"SIGTERM\"}, \"destination\": null, \"pattern\": null, \"matcher\": null}";
    struct cc_control_req q;
    struct cc_err err = {0};

    (void)state;
    assert_int_equal(cc_control_parse(body, strlen(body), NODE, &q, &err), CC_OK);
    assert_true(cc_control_arg_bool(q.arguments, "terminate", false));
    assert_false(cc_control_arg_bool(q.arguments, "missing", false));
    assert_true(cc_control_arg_bool(q.arguments, "missing", true));
    cc_control_req_deinit(&q);
}

/* issue 14: Python's json writes NaN / Infinity / -Infinity as bare tokens; the request
 * used to be dropped unread. Outside strings they are read as "NaN" / +-DBL_MAX; inside
 * strings nothing changes; a body that is bad for another reason stays bad. */
static void test_issue_14_parse_python_nan_tokens(void **state)
{
    static const char body[] =
        "{\"method\": \"time_limit\", \"arguments\": {\"task_name\": \"NaN Infinity \\\" NaN\", "
        "\"soft\": NaN, \"hard\": Infinity, \"x\": [-Infinity, NaN]}, \"reply_to\": "
        "{\"exchange\": \"reply.celery.pidbox\", \"routing_key\": \"k\"}, \"ticket\": \"t\"}";
    struct cc_control_req q;
    struct cc_err err = {0};
    const json_t *a, *x;

    (void)state;
    assert_int_equal(cc_control_parse(body, strlen(body), NODE, &q, &err), CC_OK);
    a = q.arguments;
    assert_string_equal(json_string_value(json_object_get(a, "task_name")), "NaN Infinity \" NaN");
    assert_string_equal(json_string_value(json_object_get(a, "soft")), "NaN");
    assert_true(json_real_value(json_object_get(a, "hard")) == DBL_MAX);
    x = json_object_get(a, "x");
    assert_true(json_real_value(json_array_get(x, 0)) == -DBL_MAX);
    assert_string_equal(json_string_value(json_array_get(x, 1)), "NaN");
    assert_string_equal(q.ticket, "t");
    cc_control_req_deinit(&q);
    assert_int_equal(cc_control_parse("{\"method\": NaNx}", 16, NODE, &q, &err), CC_EBADMSG);
    cc_control_req_deinit(&q);
    assert_int_equal(cc_control_parse("{\"method\": \"ping\", \"a\": Nan}", 28, NODE, &q, &err),
                     CC_EBADMSG);
    cc_control_req_deinit(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ctl_all_fixtures),
        cmocka_unit_test(test_ctl_destination),
        cmocka_unit_test(test_ctl_bad_requests),
        cmocka_unit_test(test_ctl_rebuilt_replies),
        cmocka_unit_test(test_issue_14_truthy_is_pythons),
        cmocka_unit_test(test_issue_14_revoke_terminate_one),
        cmocka_unit_test(test_issue_14_parse_python_nan_tokens),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
