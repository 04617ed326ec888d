/* Unit tests for proto/ctlclient.c: pidbox requests built from `celery inspect|control` words
 * byte-equal to the captured ones (tests/fixtures/pidbox-*.json), `--json` output equal to
 * the captured CLI output, and the text output / events --dump lines as the celery CLI
 * prints them (expected strings captured from celery 5.2.6 against a Python worker). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "ctlclient.h"
#include "helpers/fixture.h"
#include "strbuf.h"

static const char *const fixtures[] = {
    "pidbox-control-add_consumer.json",
    "pidbox-control-autoscale.json",
    "pidbox-control-cancel_consumer.json",
    "pidbox-control-disable_events.json",
    "pidbox-control-enable_events.json",
    "pidbox-control-heartbeat.json",
    "pidbox-control-pool_grow.json",
    "pidbox-control-pool_restart.json",
    "pidbox-control-pool_shrink.json",
    "pidbox-control-rate_limit.json",
    "pidbox-control-revoke.json",
    "pidbox-control-terminate.json",
    "pidbox-control-time_limit.json",
    "pidbox-control-unknown-method.json",
    "pidbox-inspect-active.json",
    "pidbox-inspect-active_queues.json",
    "pidbox-inspect-clock.json",
    "pidbox-inspect-conf.json",
    "pidbox-inspect-ping-destination.json",
    "pidbox-inspect-ping.json",
    "pidbox-inspect-query_task.json",
    "pidbox-inspect-registered.json",
    "pidbox-inspect-report.json",
    "pidbox-inspect-reserved.json",
    "pidbox-inspect-revoked.json",
    "pidbox-inspect-scheduled.json",
    "pidbox-inspect-stats.json",
};

/* One fixture: "celery -A app <kind> <method> [args...] [-d node] -j". */
static void check_fixture(const char *name)
{
    json_t *root = fixture_load(name);
    const char *cli, *cli_out;
    char *words[32], *copy, *save = NULL;
    int n = 0, first_arg, last_arg;
    const char *dest[4];
    size_t n_dest = 0;
    json_t *req, *args = NULL, *body, *merged, *replies;
    struct cc_err err = {0};
    struct cc_strbuf s = {0};
    const char *ticket, *rk;
    int is_inspect;

    if (root == NULL)
        fail_msg("cannot load %s", name);
    cli = fixture_str(root, "cli");
    cli_out = fixture_str(root, "cli_output");
    assert_non_null(cli);
    copy = strdup(cli);
    for (char *t = strtok_r(copy, " ", &save); t && n < 32; t = strtok_r(NULL, " ", &save))
        words[n++] = t;
    /* celery -A app KIND METHOD ARGS... [-d NODE] -j */
    is_inspect = strcmp(words[3], "inspect") == 0;
    assert_int_equal(cc_ctlclient_kind(words[4]),
                     is_inspect ? CC_CTLCLIENT_INSPECT : CC_CTLCLIENT_CONTROL);
    first_arg = 5;
    last_arg = n - 1; /* -j */
    if (last_arg >= 2 && strcmp(words[last_arg - 2], "-d") == 0) {
        dest[n_dest++] = words[last_arg - 1];
        last_arg -= 2;
    }
    if (cc_ctlclient_arguments(words[4], last_arg - first_arg,
                               (const char *const *)(words + first_arg), &args, &err) != CC_OK)
        fail_msg("%s: %s", name, err.msg);
    body = json_object_get(json_object_get(root, "request"), "body_decoded");
    ticket = json_string_value(json_object_get(body, "ticket"));
    rk = json_string_value(json_object_get(json_object_get(body, "reply_to"), "routing_key"));
    req = cc_ctlclient_request(words[4], args, n_dest ? dest : NULL, n_dest, ticket,
                               "reply.celery.pidbox", rk);
    cc_strbuf_json(&s, req);
    cc_strbuf_putc(&s, '\0');
    if (strcmp(s.p, fixture_str(json_object_get(root, "request"), "body_raw")) != 0)
        fail_msg("%s request:\n got  %s\n want %s", name, s.p,
                 fixture_str(json_object_get(root, "request"), "body_raw"));
    s.len = 0;

    /* --json: inspect merges the replies into one object; control prints the list. */
    replies = json_array();
    merged = json_object();
    {
        size_t i;
        json_t *r;
        json_array_foreach(json_object_get(root, "replies"), i, r)
        {
            json_array_append(replies, json_object_get(r, "body_decoded"));
            json_object_update(merged, json_object_get(r, "body_decoded"));
        }
    }
    if (json_array_size(replies) > 0 && cli_out) {
        cc_ctlclient_json_dump(&s, is_inspect ? merged : replies, -1, 0);
        cc_strbuf_putc(&s, '\n');
        cc_strbuf_putc(&s, '\0');
        if (strcmp(s.p, cli_out) != 0)
            fail_msg("%s --json:\n got  %s\n want %s", name, s.p, cli_out);
    }
    json_decref(replies);
    json_decref(merged);
    json_decref(req);
    json_decref(args);
    cc_strbuf_deinit(&s);
    free(copy);
    json_decref(root);
}

static void test_ctlclient_fixtures(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++)
        check_fixture(fixtures[i]);
}

static void check_say(const char *reply_json, int show, const char *want)
{
    json_t *r = json_loads(reply_json, JSON_DECODE_ANY, NULL);
    struct cc_strbuf s = {0};
    cc_ctlclient_say_reply(&s, "w1@localhost", r, show);
    cc_strbuf_putc(&s, '\0');
    if (strcmp(s.p, want) != 0)
        fail_msg("say(%s):\n got <%s>\n want <%s>", reply_json, s.p, want);
    cc_strbuf_deinit(&s);
    json_decref(r);
}

static void test_ctlclient_text(void **state)
{
    struct cc_strbuf s = {0};
    (void)state;
    check_say("{\"ok\": \"pong\"}", 1, "->  w1@localhost: OK\n        pong\n");
    check_say("{\"ok\": \"pong\"}", 0, "->  w1@localhost: OK\n");
    check_say("{\"error\": \"unknown task\"}", 1,
              "->  w1@localhost: ERROR\n        unknown task\n");
    check_say("[]", 1, "->  w1@localhost: OK\n    - empty -\n");
    check_say("[\"b\", \"a\"]", 1, "->  w1@localhost: OK\n    * b\n    * a\n");
    check_say("[{\"name\": \"qx\", \"n\": null, \"d\": true}]", 1,
              "->  w1@localhost: OK\n    * {'name': 'qx', 'n': None, 'd': True}\n");
    check_say("{}", 1, "->  w1@localhost: OK\n    {}\n    \n");
    check_say("{\"b\": [1, 2.5], \"a\": {}}", 1,
              "->  w1@localhost: OK\n    {\n        \"a\": {},\n        \"b\": [\n"
              "            1,\n            2.5\n        ]\n    }\n    \n");
    check_say("null", 1, "->  w1@localhost: OK\n    None\n");
    cc_ctlclient_say_online(&s, 1);
    cc_ctlclient_say_online(&s, 2);
    cc_strbuf_putc(&s, '\0');
    assert_string_equal(s.p, "\n1 node online.\n\n2 nodes online.\n");
    cc_strbuf_deinit(&s);
}

static void test_ctlclient_arguments(void **state)
{
    const char *a[] = {"demo.add", "3", "4.5", "x"};
    const char *b[] = {"SIGKILL", "id1", "id2"};
    const char *c[] = {"nope"};
    const char *off[] = {"Off"};
    json_t *o = NULL;
    struct cc_err err = {0};
    struct cc_strbuf s = {0};
    (void)state;

    assert_int_equal(cc_ctlclient_arguments("time_limit", 3, a, &o, &err), CC_OK);
    cc_strbuf_json(&s, o);
    cc_strbuf_putc(&s, '\0');
    assert_string_equal(s.p, "{\"task_name\": \"demo.add\", \"soft\": 3.0, \"hard\": 4.5}");
    json_decref(o);
    assert_int_equal(cc_ctlclient_arguments("time_limit", 4, a, &o, &err), CC_EUSAGE);
    assert_null(o);
    assert_int_equal(cc_ctlclient_arguments("terminate", 3, b, &o, &err), CC_OK);
    s.len = 0;
    cc_strbuf_json(&s, o);
    cc_strbuf_putc(&s, '\0');
    assert_string_equal(s.p, "{\"signal\": \"SIGKILL\", \"task_id\": [\"id1\", \"id2\"]}");
    json_decref(o);
    assert_int_equal(cc_ctlclient_arguments("pool_grow", 1, c, &o, &err), CC_EUSAGE);
    assert_int_equal(cc_ctlclient_arguments("conf", 1, c, &o, &err), CC_EUSAGE); /* strtobool */
    assert_int_equal(cc_ctlclient_arguments("conf", 1, off, &o, &err), CC_OK);
    assert_true(json_is_false(json_object_get(o, "with_defaults")));
    json_decref(o);
    assert_int_equal(cc_ctlclient_arguments("no_such", 0, c, &o, &err), CC_EUSAGE);
    assert_int_equal(cc_ctlclient_kind("hello"), CC_CTLCLIENT_UNKNOWN); /* not visible in the CLI */
    assert_int_equal(cc_ctlclient_kind("shutdown"), CC_CTLCLIENT_CONTROL);
    cc_strbuf_deinit(&s);
}

static void check_event(const char *ev_json, const char *label, const char *want,
                        const char *want_label)
{
    json_t *ev = json_loads(ev_json, 0, NULL);
    struct cc_strbuf s = {0};
    char *fresh = NULL;
    assert_non_null(ev);
    cc_ctlclient_event_line(&s, ev, label, &fresh);
    cc_strbuf_putc(&s, '\0');
    if (strcmp(s.p, want) != 0)
        fail_msg("event line:\n got  <%s>\n want <%s>", s.p, want);
    if (want_label)
        assert_string_equal(fresh, want_label);
    else
        assert_null(fresh);
    free(fresh);
    cc_strbuf_deinit(&s);
    json_decref(ev);
}

/* Expected lines: `celery events --dump` of celery 5.2.6 on the same events. */
static void test_ctlclient_events(void **state)
{
    (void)state;
    check_event("{\"hostname\": \"w1@localhost\", \"utcoffset\": 0, \"pid\": 28341, \"clock\": 72, "
                "\"freq\": 5, \"sw_ident\": \"py-celery\", \"sw_ver\": \"5.2.6\", \"sw_sys\": "
                "\"Linux\", \"timestamp\": 1795437104.179498, \"type\": \"worker-heartbeat\"}",
                "",
                "w1@localhost [2026-11-23 12:31:44.179498] heartbeat: clock=72, freq=5, "
                "pid=28341, sw_ident=py-celery, sw_sys=Linux, sw_ver=5.2.6, utcoffset=0",
                NULL);
    check_event("{\"hostname\": \"w1@localhost\", \"utcoffset\": 0, \"pid\": 28341, \"clock\": 73, "
                "\"uuid\": \"f76b\", \"name\": \"demo.add\", \"args\": \"(2, 3)\", \"kwargs\": "
                "\"{}\", \"root_id\": \"f76b\", \"parent_id\": null, \"retries\": 0, \"eta\": "
                "null, \"expires\": null, \"timestamp\": 1795437105.151702, \"type\": "
                "\"task-received\"}",
                "",
                "w1@localhost [2026-11-23 12:31:45.151702] task received: demo.add(f76b) "
                "args=(2, 3) kwargs={} clock=73, eta=None, expires=None, parent_id=None, "
                "pid=28341, retries=0, root_id=f76b, utcoffset=0",
                "demo.add(f76b) args=(2, 3) kwargs={}");
    check_event("{\"hostname\": \"w1@localhost\", \"utcoffset\": 0, \"pid\": 28341, \"clock\": 75, "
                "\"uuid\": \"f76b\", \"result\": \"5\", \"runtime\": 0.0027945910005655605, "
                "\"timestamp\": 1795437105.160752, \"type\": \"task-succeeded\"}",
                "demo.add(f76b) args=(2, 3) kwargs={}",
                "w1@localhost [2026-11-23 12:31:45.160752] task succeeded: demo.add(f76b) "
                "args=(2, 3) kwargs={} clock=75, pid=28341, result=5, "
                "runtime=0.0027945910005655605, utcoffset=0",
                NULL);
}

/* ---- celery result ---------------------------------------------------------------------- */

/* exception_to_python in a `celery result` process without an app, then Python's last
 * traceback line (captured with celery 5.2.6 / Python 3.11). */
static const struct {
    const char *exc;
    const char *line;
} client_exc_cases[] = {
    {"{\"exc_type\": \"ValueError\", \"exc_message\": [\"boom\"], \"exc_module\": \"builtins\"}",
     "ValueError: boom"},
    {"{\"exc_type\": \"KeyError\", \"exc_message\": [\"k\"], \"exc_module\": \"builtins\"}",
     "KeyError: 'k'"},
    {"{\"exc_type\": \"CustomError\", \"exc_message\": [\"custom failure\", 42], \"exc_module\": "
     "\"app\"}",
     "celery.exceptions.CustomError: ('custom failure', 42)"},
    {"{\"exc_type\": \"ExpectedException\", \"exc_message\": [], \"exc_module\": "
     "\"t.integration.tasks\"}",
     "celery.exceptions.ExpectedException"},
    {"{\"exc_type\": \"KeyError\", \"exc_message\": [\"k\"], \"exc_module\": \"nowhere\"}",
     "celery.exceptions.KeyError: k"},
    {"{\"exc_type\": \"TaskRevokedError\", \"exc_message\": [\"revoked\"], \"exc_module\": "
     "\"celery.exceptions\"}",
     "celery.exceptions.TaskRevokedError: revoked"},
    {"{\"exc_type\": \"TimeLimitExceeded\", \"exc_message\": [1], \"exc_module\": "
     "\"billiard.exceptions\"}",
     "billiard.exceptions.TimeLimitExceeded: TimeLimitExceeded(1,)"},
    {"{\"exc_type\": \"SoftTimeLimitExceeded\", \"exc_message\": [], \"exc_module\": "
     "\"billiard.exceptions\"}",
     "billiard.exceptions.SoftTimeLimitExceeded: SoftTimeLimitExceeded()"},
    {"{\"exc_type\": \"WorkerLostError\", \"exc_message\": [\"Worker exited prematurely: signal 9 "
     "(SIGKILL) Job: 0.\"], \"exc_module\": \"billiard.exceptions\"}",
     "billiard.exceptions.WorkerLostError: Worker exited prematurely: signal 9 (SIGKILL) Job: 0."},
    {"{\"exc_type\": \"NotRegistered\", \"exc_message\": [\"app.nope\"], \"exc_module\": "
     "\"celery.exceptions\"}",
     "celery.exceptions.NotRegistered: 'app.nope'"},
    {"{\"exc_type\": \"TimeLimitExceeded\", \"exc_message\": [2.5], \"exc_module\": "
     "\"celery.exceptions\"}",
     "billiard.exceptions.TimeLimitExceeded: TimeLimitExceeded(2.5,)"},
    {"{\"exc_type\": \"OSError\", \"exc_message\": [2, \"No such file or directory\"], "
     "\"exc_module\": \"builtins\"}",
     "FileNotFoundError: [Errno 2] No such file or directory"},
    {"{\"exc_type\": \"IOError\", \"exc_message\": [\"plain\"], \"exc_module\": \"builtins\"}",
     "OSError: plain"},
    {"{\"exc_type\": \"NoSuchBuiltin\", \"exc_message\": [\"x\"], \"exc_module\": \"builtins\"}",
     "celery.exceptions.NoSuchBuiltin: x"},
    {"{\"exc_type\": \"ValueError\", \"exc_message\": \"lone\", \"exc_module\": \"builtins\"}",
     "ValueError: lone"},
    {"{\"exc_type\": \"Oops\", \"exc_message\": [\"m\"]}", "celery.backends.base.Oops: m"},
    {"{\"exc_type\": \"ValueError\", \"exc_message\": [null], \"exc_module\": \"builtins\"}",
     "ValueError: None"},
};

static void test_ctlclient_client_exc_line(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof client_exc_cases / sizeof client_exc_cases[0]; i++) {
        json_t *exc = json_loads(client_exc_cases[i].exc, 0, NULL);
        struct cc_strbuf b = {0};

        assert_non_null(exc);
        cc_ctlclient_client_exc_line(&b, exc);
        assert_non_null(b.p);
        assert_string_equal(b.p, client_exc_cases[i].line);
        cc_strbuf_deinit(&b);
        json_decref(exc);
    }
}

/* What `celery result [--traceback] ID` prints for a stored meta, and its exit status. */
static void check_result(const char *meta_json, int tb, int want_rc, const char *want_out,
                         const char *want_err)
{
    json_t *meta = meta_json ? json_loads(meta_json, 0, NULL) : NULL;
    struct cc_strbuf out = {0}, err = {0};

    assert_int_equal(cc_ctlclient_result_say(&out, &err, meta, tb), want_rc);
    assert_string_equal(out.p ? out.p : "", want_out);
    assert_string_equal(err.p ? err.p : "", want_err);
    cc_strbuf_deinit(&out);
    cc_strbuf_deinit(&err);
    json_decref(meta);
}

static void test_ctlclient_result(void **state)
{
    static const char fail[] =
        "{\"status\": \"FAILURE\", \"result\": {\"exc_type\": \"ValueError\", \"exc_message\": "
        "[\"boom\"], \"exc_module\": \"builtins\"}, \"traceback\": \"Traceback (most recent call "
        "last):\\n  File \\\"tasks/demo.c\\\", line 9, in demo_fail\\nValueError: boom\\n\", "
        "\"children\": []}";

    (void)state;
    check_result("{\"status\": \"SUCCESS\", \"result\": 5, \"traceback\": null}", 0, 0, "5\n", "");
    check_result("{\"status\": \"SUCCESS\", \"result\": \"text\"}", 0, 0, "text\n", "");
    check_result("{\"status\": \"SUCCESS\", \"result\": {\"a\": [1, \"x\"]}}", 0, 0,
                 "{'a': [1, 'x']}\n", "");
    check_result("{\"status\": \"SUCCESS\", \"result\": null}", 0, 0, "\n", ""); /* echo(None) */
    check_result("{\"status\": \"SUCCESS\", \"result\": 5, \"traceback\": null}", 1, 0, "\n", "");
    check_result(fail, 0, 1, "", "ValueError: boom\n");
    check_result(fail, 1, 0,
                 "Traceback (most recent call last):\n  File \"tasks/demo.c\", line 9, in "
                 "demo_fail\nValueError: boom\n\n",
                 "");
    check_result("{\"status\": \"REVOKED\", \"result\": {\"exc_type\": \"TaskRevokedError\", "
                 "\"exc_message\": [\"terminated\"], \"exc_module\": \"celery.exceptions\"}, "
                 "\"traceback\": null}",
                 0, 1, "", "celery.exceptions.TaskRevokedError: terminated\n");
    check_result(NULL, 1, 0, "\n", ""); /* PENDING --traceback */
    assert_false(cc_ctlclient_result_is_ready(NULL));
    for (int i = 0; i < 5; i++) {
        static const char *const st[] = {"RETRY", "STARTED", "SUCCESS", "FAILURE", "REVOKED"};
        json_t *m = json_pack("{s:s}", "status", st[i]);

        assert_int_equal(cc_ctlclient_result_is_ready(m), i >= 2);
        json_decref(m);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ctlclient_fixtures),        cmocka_unit_test(test_ctlclient_text),
        cmocka_unit_test(test_ctlclient_arguments),       cmocka_unit_test(test_ctlclient_events),
        cmocka_unit_test(test_ctlclient_client_exc_line), cmocka_unit_test(test_ctlclient_result),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
