/* Unit tests for the pure parts of src/worker/chord.c: the chord member bytes Celery's redis
 * backend writes (checked against redis-chord.json and strings printed by CPython's json.dumps),
 * decoding them, the ChordError text (_unpack_chord_result), unpacking in order, the
 * GroupResult join behind celery.chord_unlock, and chord_unlock's retry bound. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "chord.h"
#include "helpers/fixture.h"
#include "taskrun.h"

static json_t *parse(const char *s)
{
    json_error_t jerr;
    json_t *v = json_loads(s, JSON_DECODE_ANY, &jerr);

    if (v == NULL)
        fail_msg("%s: %s", s, jerr.text);
    return v;
}

static void check_encode(const char *tid, const char *state, const char *result_json,
                         const char *want)
{
    json_t *v = result_json != NULL ? parse(result_json) : NULL;
    char *got = cc_chord_member_encode(tid, state, v);

    assert_non_null(got);
    if (strcmp(got, want) != 0)
        fail_msg("got <%s> want <%s>", got, want);
    free(got);
    json_decref(v);
}

/* The ZADD members of the captured chord, byte for byte. */
static void test_chord_member_encode_fixture(void **state)
{
    json_t *fx = fixture_load("redis-chord.json");
    const json_t *cmds = json_object_get(fx, "redis_commands_in_order");
    size_t i, n_zadd = 0;
    const json_t *c;

    (void)state;
    assert_non_null(fx);
    json_array_foreach(cmds, i, c)
    {
        const char *s = json_string_value(c);
        const char *m;
        char tid[37], want[256];

        if (strncmp(s, "\"ZADD\"", 6) != 0)
            continue;
        /* "ZADD" "<key>" "<score>" "[1, \"<tid>\", \"SUCCESS\", <n>]" */
        m = strstr(s, "[1, \\\"");
        assert_non_null(m);
        memcpy(tid, m + 6, 36);
        tid[36] = '\0';
        {
            const char *r = strstr(m, "\\\"SUCCESS\\\", ") + strlen("\\\"SUCCESS\\\", ");
            char num[16];
            size_t k = 0;

            while (r[k] >= '0' && r[k] <= '9' && k < sizeof(num) - 1) {
                num[k] = r[k];
                k++;
            }
            num[k] = '\0';
            snprintf(want, sizeof(want), "[1, \"%s\", \"SUCCESS\", %s]", tid, num);
            check_encode(tid, "SUCCESS", num, want);
        }
        n_zadd++;
    }
    assert_int_equal(n_zadd, 2);
    json_decref(fx);
}

/* Expected strings printed by CPython 3.11 json.dumps (kombu's json serializer). */
static void test_chord_member_encode_python(void **state)
{
    (void)state;
    check_encode("t", "SUCCESS", "{\"a\": \"\\u00e9\", \"b\": [1, 2.5, null], \"c\": 1e100}",
                 "[1, \"t\", \"SUCCESS\", {\"a\": \"\\u00e9\", \"b\": [1, 2.5, null], \"c\": "
                 "1e+100}]");
    check_encode("t", "FAILURE",
                 "{\"exc_type\": \"CustomError\", \"exc_message\": [\"custom failure\", 42], "
                 "\"exc_module\": \"__main__\"}",
                 "[1, \"t\", \"FAILURE\", {\"exc_type\": \"CustomError\", \"exc_message\": "
                 "[\"custom failure\", 42], \"exc_module\": \"__main__\"}]");
    check_encode("t", "SUCCESS", NULL, "[1, \"t\", \"SUCCESS\", null]");
    check_encode("q\"x", "SUCCESS", "\"s\"", "[1, \"q\\\"x\", \"SUCCESS\", \"s\"]");
}

static void test_chord_member_decode(void **state)
{
    const char *s = "[1, \"abc\", \"FAILURE\", {\"exc_type\": \"ValueError\"}]";
    struct cc_err err = {0};
    char *tid, *st;
    json_t *r;

    (void)state;
    assert_int_equal(cc_chord_member_decode(s, strlen(s), &tid, &st, &r, &err), CC_OK);
    assert_string_equal(tid, "abc");
    assert_string_equal(st, "FAILURE");
    assert_string_equal(json_string_value(json_object_get(r, "exc_type")), "ValueError");
    free(tid);
    free(st);
    json_decref(r);

    static const char *const bad[] = {"", "{}", "[1, 2, 3, 4]", "[1, \"a\", \"b\"]", "[1, \"a\""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(cc_chord_member_decode(bad[i], strlen(bad[i]), &tid, &st, &r, &err),
                         CC_EBADMSG);
        assert_null(tid);
        assert_null(r);
    }
}

static void check_dep(const char *result_json, const char *want)
{
    json_t *v = parse(result_json);
    char *got = cc_chord_dependency_error("t1", v);

    assert_non_null(got);
    if (strcmp(got, want) != 0)
        fail_msg("got <%s> want <%s>", got, want);
    free(got);
    json_decref(v);
}

/* f'Dependency {tid} raised {exception_to_python(result)!r}' as CPython prints it. */
static void test_chord_dependency_error_text(void **state)
{
    (void)state;
    check_dep("{\"exc_type\": \"ValueError\", \"exc_message\": [\"boom\"], \"exc_module\": "
              "\"builtins\"}",
              "Dependency t1 raised ValueError('boom')");
    check_dep("{\"exc_type\": \"CustomError\", \"exc_message\": [\"custom failure\", 42], "
              "\"exc_module\": \"app\"}",
              "Dependency t1 raised CustomError('custom failure', 42)");
    check_dep("{\"exc_type\": \"KeyError\", \"exc_message\": \"k\", \"exc_module\": \"builtins\"}",
              "Dependency t1 raised KeyError('k')");
    check_dep("{\"exc_type\": \"WorkerLostError\", \"exc_message\": [\"x\"], \"exc_module\": "
              "\"billiard.exceptions\"}",
              "Dependency t1 raised WorkerLostError('x')");
    check_dep("{\"exc_type\": \"Outer.Inner\", \"exc_message\": [], \"exc_module\": \"m\"}",
              "Dependency t1 raised Inner()");
    check_dep("[1, \"x\"]", "Dependency t1 raised [1, 'x']");
}

static void test_chord_unpack_ordered_and_failure(void **state)
{
    json_t *ok = parse("[[1, \"a\", \"SUCCESS\", 2], [1, \"b\", \"SUCCESS\", [4]], "
                       "[1, \"c\", \"SUCCESS\", null]]");
    json_t *bad = parse("[[1, \"a\", \"SUCCESS\", 2], [1, \"b\", \"REVOKED\", {\"exc_type\": "
                        "\"TaskRevokedError\", \"exc_message\": [\"revoked\"], \"exc_module\": "
                        "\"celery.exceptions\"}], [1, \"c\", \"FAILURE\", {\"exc_type\": "
                        "\"ValueError\", \"exc_message\": [\"boom\"], \"exc_module\": "
                        "\"builtins\"}]]");
    json_t *results;
    char *text;
    struct cc_err err = {0};
    char *dump;

    (void)state;
    assert_int_equal(cc_chord_unpack(ok, &results, &text, &err), CC_OK);
    assert_null(text);
    dump = json_dumps(results, JSON_COMPACT);
    assert_string_equal(dump, "[2,[4],null]");
    free(dump);
    json_decref(results);

    /* The first propagating member in group_index order names the error. */
    assert_int_equal(cc_chord_unpack(bad, &results, &text, &err), CC_OK);
    assert_null(results);
    assert_string_equal(text, "Dependency b raised TaskRevokedError('revoked')");
    free(text);
    json_decref(ok);
    json_decref(bad);
}

/* A fake backend for cc_chord_join: metas by task id in a JSON object. */
static json_t *fake_fetch(const char *task_id, void *arg, int *rc, struct cc_err *err)
{
    json_t *m = json_object_get(arg, task_id);

    (void)err;
    *rc = CC_OK;
    if (json_is_string(m) && strcmp(json_string_value(m), "ERR") == 0) {
        *rc = CC_EBACKEND;
        return NULL;
    }
    return json_incref(m);
}

static void test_chord_join(void **state)
{
    json_t *tuples = parse("[[[\"a\", null], null], [[\"g\", null], [[[\"b\", null], null], "
                           "[[\"c\", null], null]]], [[\"d\", null], null]]");
    json_t *metas = parse("{\"a\": {\"status\": \"SUCCESS\", \"result\": 1}, "
                          "\"b\": {\"status\": \"SUCCESS\", \"result\": 2}, "
                          "\"c\": {\"status\": \"SUCCESS\", \"result\": 3}, "
                          "\"d\": {\"status\": \"STARTED\", \"result\": null}}");
    struct cc_err err = {0};
    json_t *results;
    char *fid, *frepr, *dump;
    bool ready;

    (void)state;
    assert_int_equal(cc_chord_join(tuples, fake_fetch, metas, &ready, &results, &fid, &frepr, &err),
                     CC_OK);
    assert_false(ready);
    assert_null(results);

    json_object_set_new(metas, "d", parse("{\"status\": \"SUCCESS\", \"result\": \"x\"}"));
    assert_int_equal(cc_chord_join(tuples, fake_fetch, metas, &ready, &results, &fid, &frepr, &err),
                     CC_OK);
    assert_true(ready);
    assert_null(fid);
    dump = json_dumps(results, JSON_COMPACT);
    assert_string_equal(dump, "[1,[2,3],\"x\"]");
    free(dump);
    json_decref(results);

    json_object_set_new(metas, "c",
                        parse("{\"status\": \"FAILURE\", \"result\": {\"exc_type\": "
                              "\"ValueError\", \"exc_message\": [\"boom\"], \"exc_module\": "
                              "\"builtins\"}}"));
    assert_int_equal(cc_chord_join(tuples, fake_fetch, metas, &ready, &results, &fid, &frepr, &err),
                     CC_OK);
    assert_true(ready);
    assert_null(results);
    assert_string_equal(fid, "c");
    assert_string_equal(frepr, "ValueError('boom')");
    free(fid);
    free(frepr);

    /* A missing meta is PENDING; a backend error is returned. */
    json_object_del(metas, "a");
    assert_int_equal(cc_chord_join(tuples, fake_fetch, metas, &ready, &results, &fid, &frepr, &err),
                     CC_OK);
    assert_false(ready);
    json_object_set_new(metas, "a", json_string("ERR"));
    assert_int_equal(cc_chord_join(tuples, fake_fetch, metas, &ready, &results, &fid, &frepr, &err),
                     CC_EBACKEND);

    json_decref(tuples);
    tuples = parse("[[\"notatuple\"]]");
    assert_int_equal(cc_chord_join(tuples, fake_fetch, metas, &ready, &results, &fid, &frepr, &err),
                     CC_EBADMSG);
    json_decref(tuples);
    json_decref(metas);
}

static void test_chord_unlock_max_retries(void **state)
{
    struct cc_config cfg;

    (void)state;
    memset(&cfg, 0, sizeof(cfg));
    cfg.result_expires_s = 86400;
    assert_int_equal(cc_chord_unlock_max_retries(&cfg, 1.0), 86400);
    assert_int_equal(cc_chord_unlock_max_retries(&cfg, 0), 86400);
    assert_int_equal(cc_chord_unlock_max_retries(&cfg, 10.0), 8640);
    cfg.result_expires_s = 60;
    assert_int_equal(cc_chord_unlock_max_retries(&cfg, 1.0), CC_CHORD_UNLOCK_MIN_RETRIES);
    cfg.result_expires_s = 0;
    assert_int_equal(cc_chord_unlock_max_retries(&cfg, 1.0), CC_CHORD_UNLOCK_NEVER_EXPIRES);
}

static void test_chord_state_propagates(void **state)
{
    (void)state;
    assert_true(cc_chord_state_propagates("FAILURE"));
    assert_true(cc_chord_state_propagates("REVOKED"));
    assert_false(cc_chord_state_propagates("SUCCESS"));
    assert_false(cc_chord_state_propagates("RETRY"));
    assert_false(cc_chord_state_propagates(NULL));
}

/* Run a built-in through cc_taskrun_invoke (no executor: no backend, no publisher). */
static int run_builtin(const char *name, const char *args, const char *kwargs,
                       struct cc_task_outcome *o)
{
    const struct cc_task_entry *e = cc_taskrun_lookup(name);
    struct cc_task_request req;
    json_t *a = parse(args), *k = parse(kwargs), *embed = json_object();
    int rc;

    assert_non_null(e);
    memset(&req, 0, sizeof(req));
    req.id = "11111111-2222-4333-8444-555555555555";
    req.task = name;
    req.root_id = req.id;
    req.group_index = -1;
    req.protocol = 2;
    req.embed = embed;
    rc = cc_taskrun_invoke(e, &req, a, k, o); /* the outcome's status */
    json_decref(a);
    json_decref(k);
    json_decref(embed);
    return rc;
}

static void check_accumulate(const char *args, const char *kwargs, const char *want)
{
    struct cc_task_outcome o;
    char *dump;

    assert_int_equal(run_builtin("celery.accumulate", args, kwargs, &o), CC_OK);
    assert_int_equal(o.status, CC_OK);
    dump = json_dumps(o.result, JSON_COMPACT | JSON_ENCODE_ANY);
    if (strcmp(dump, want) != 0)
        fail_msg("accumulate(%s, %s): got %s want %s", args, kwargs, dump, want);
    free(dump);
    cc_taskrun_outcome_deinit(&o);
}

/* builtins.py: accumulate(self, *args, **kwargs): args[index] if index is not None else args */
static void test_chord_builtin_accumulate(void **state)
{
    struct cc_task_outcome o;

    (void)state;
    check_accumulate("[1, 2, 3]", "{}", "[1,2,3]");
    check_accumulate("[1, 2, 3]", "{\"index\": null}", "[1,2,3]");
    check_accumulate("[1, [2], 3]", "{\"index\": 1}", "[2]");
    check_accumulate("[1, 2, 3]", "{\"index\": -1}", "3");
    check_accumulate("[]", "{}", "[]");
    assert_int_equal(run_builtin("celery.accumulate", "[1]", "{\"index\": 1}", &o), CC_TASK_FAILED);
    assert_int_equal(o.status, CC_TASK_FAILED);
    assert_string_equal(json_string_value(json_object_get(o.exc, "exc_type")), "IndexError");
    cc_taskrun_outcome_deinit(&o);
}

/* Without a Redis result backend chord_unlock cannot see the header: a clear ChordError. */
static void test_chord_builtin_unlock_without_backend(void **state)
{
    struct cc_task_outcome o;

    (void)state;
    assert_int_equal(run_builtin("celery.chord_unlock",
                                 "[\"g\", {\"task\": \"t.x\", \"args\": [], \"kwargs\": {}, "
                                 "\"options\": {\"task_id\": \"b\"}, \"subtask_type\": null, "
                                 "\"immutable\": false}]",
                                 "{\"result\": [[[\"a\", null], null]]}", &o),
                     CC_TASK_FAILED);
    assert_string_equal(json_string_value(json_object_get(o.exc, "exc_module")),
                        "celery.exceptions");
    assert_string_equal(json_string_value(json_object_get(o.exc, "exc_type")), "ChordError");
    cc_taskrun_outcome_deinit(&o);
    assert_int_equal(run_builtin("celery.chord_unlock", "[\"g\", 1]", "{}", &o), CC_TASK_FAILED);
    assert_string_equal(json_string_value(json_object_get(o.exc, "exc_type")), "TypeError");
    cc_taskrun_outcome_deinit(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chord_member_encode_fixture),
        cmocka_unit_test(test_chord_member_encode_python),
        cmocka_unit_test(test_chord_member_decode),
        cmocka_unit_test(test_chord_dependency_error_text),
        cmocka_unit_test(test_chord_unpack_ordered_and_failure),
        cmocka_unit_test(test_chord_join),
        cmocka_unit_test(test_chord_unlock_max_retries),
        cmocka_unit_test(test_chord_state_propagates),
        cmocka_unit_test(test_chord_builtin_accumulate),
        cmocka_unit_test(test_chord_builtin_unlock_without_backend),
    };

    return cmocka_run_group_tests_name("chord", tests, NULL, NULL);
}
