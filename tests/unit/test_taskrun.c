/* Unit tests for src/worker/taskrun.c: Python-exact argument binding, the exception outcome, the
 * unknown-status fallback, the arena, retry resolution (max_retries, countdown, eta,
 * MaxRetriesExceededError), autoretry_for with exponential backoff, reject and ignore.
 *
 * The TypeError messages below were produced by CPython 3.11.2 (/usr/bin/python3) calling
 * functions with the same parameter lists; bound methods stand in for "self" signatures.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "taskrun.h"
#include "util.h"
#include "helpers/fixture.h"

/* ---- Helpers ------------------------------------------------------------------------ */

static void assert_json(const json_t *got, const char *expected)
{
    json_t *want = fixture_json(expected);

    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_ENCODE_ANY);

        print_error("got %s, want %s\n", g, expected);
        free(g);
        json_decref(want);
        fail();
    }
    json_decref(want);
}

/* Invoke `e` with JSON text args/kwargs (NULL = empty) and a request. */
static int invoke(const struct cc_task_entry *e, const struct cc_task_request *req,
                  const char *args, const char *kwargs, struct cc_task_outcome *out)
{
    json_t *a = args != NULL ? fixture_json(args) : NULL,
           *k = kwargs != NULL ? fixture_json(kwargs) : NULL;
    int rc = cc_taskrun_invoke(e, req, a, k, out);

    json_decref(a);
    json_decref(k);
    return rc;
}

static void assert_exc(const struct cc_task_outcome *o, const char *module, const char *type,
                       const char *args_json)
{
    assert_non_null(o->exc);
    assert_string_equal(json_string_value(json_object_get(o->exc, "exc_module")), module);
    assert_string_equal(json_string_value(json_object_get(o->exc, "exc_type")), type);
    assert_json(json_object_get(o->exc, "exc_message"), args_json);
    assert_non_null(o->exc_repr);
    assert_non_null(o->traceback);
}

static struct cc_task_request make_req(int retries)
{
    struct cc_task_request r = {
        .id = "id-1",
        .task = "t.task",
        .root_id = "id-1",
        .group_index = -1,
        .retries = retries,
    };

    return r;
}

/* ---- Binding ------------------------------------------------------------------------ */

/* Returns every bound argument as a list. */
static int run_echo_bound(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                          json_t **result)
{
    json_t *out = json_array();
    const json_t *v;

    (void)args;
    (void)kwargs;
    for (size_t i = 0; (v = cc_task_arg(ctx, i)) != NULL; i++)
        json_array_append(out, (json_t *)v);
    *result = out;
    return CC_OK;
}

struct bind_case {
    const char *name; /* task name; the function name is its last component */
    const char *signature;
    const char *args;
    const char *kwargs;
    const char *error; /* TypeError message, or NULL */
    const char *bound; /* JSON list of bound arguments when error is NULL */
};

static const struct bind_case bind_cases[] = {
    {"t.add", "x, y", "[1, 2, 3]", NULL, "add() takes 2 positional arguments but 3 were given",
     NULL},
    {"t.add", "x, y", "[1]", NULL, "add() missing 1 required positional argument: 'y'", NULL},
    {"t.add", "x, y", "[]", NULL, "add() missing 2 required positional arguments: 'x' and 'y'",
     NULL},
    {"t.add", "x, y", "[1, 2]", "{\"z\": 3}", "add() got an unexpected keyword argument 'z'", NULL},
    {"t.add", "x, y", "[1, 2]", "{\"x\": 3}", "add() got multiple values for argument 'x'", NULL},
    {"t.add", "x, y", "[1]", "{\"x\": 3}", "add() got multiple values for argument 'x'", NULL},
    {"t.add", "x, y", "[]", "{\"y\": 1}", "add() missing 1 required positional argument: 'x'",
     NULL},
    {"t.add", "x, y", "[1, 2]", "{\"z\": 3, \"w\": 4}",
     "add() got an unexpected keyword argument 'z'", NULL},
    {"t.add", "x, y", "[1, 2, 3]", "{\"z\": 3}", "add() got an unexpected keyword argument 'z'",
     NULL},
    {"t.add", "x, y", "[1, 2, 3]", "{\"x\": 1}", "add() got multiple values for argument 'x'",
     NULL},
    {"t.noop", "", "[1]", NULL, "noop() takes 0 positional arguments but 1 was given", NULL},
    {"t.noop", "", "[1, 2]", NULL, "noop() takes 0 positional arguments but 2 were given", NULL},
    {"t.noop", "", "[]", "{\"a\": 1}", "noop() got an unexpected keyword argument 'a'", NULL},
    {"t.one", "x", "[1, 2]", NULL, "one() takes 1 positional argument but 2 were given", NULL},
    {"t.one", "x", "[]", NULL, "one() missing 1 required positional argument: 'x'", NULL},
    {"t.opt", "a, b=None", "[1, 2, 3]", NULL,
     "opt() takes from 1 to 2 positional arguments but 3 were given", NULL},
    {"t.opt", "a, b=None", "[]", NULL, "opt() missing 1 required positional argument: 'a'", NULL},
    {"t.opt", "a, b=None", "[1, 2, 3]", "{\"c\": 4}",
     "opt() got an unexpected keyword argument 'c'", NULL},
    {"t.kwo", "a, *, c", "[1]", NULL, "kwo() missing 1 required keyword-only argument: 'c'", NULL},
    {"t.kwo2", "a, *, c, d", "[1]", NULL,
     "kwo2() missing 2 required keyword-only arguments: 'c' and 'd'", NULL},
    {"t.kwo3", "a, *, c, d, e", "[1]", NULL,
     "kwo3() missing 3 required keyword-only arguments: 'c', 'd', and 'e'", NULL},
    {"t.kwo", "a, *, c", "[1, 2]", NULL, "kwo() takes 1 positional argument but 2 were given",
     NULL},
    {"t.kwo", "a, *, c", "[1, 2]", "{\"c\": 3}",
     "kwo() takes 1 positional argument but 2 positional arguments (and 1 keyword-only "
     "argument) were given",
     NULL},
    {"t.kwo", "a, *, c", "[]", "{\"c\": 1}", "kwo() missing 1 required positional argument: 'a'",
     NULL},
    {"t.kwo", "a, *, c", "[1, 2, 3]", NULL, "kwo() takes 1 positional argument but 3 were given",
     NULL},
    {"t.kwo_d", "a, *, c=1", "[1, 2]", NULL, "kwo_d() takes 1 positional argument but 2 were given",
     NULL},
    {"t.kwo_d", "a, *, c=1", "[1, 2, 3]", NULL,
     "kwo_d() takes 1 positional argument but 3 were given", NULL},
    {"t.kwo_d", "a, *, c=1", "[1, 2]", "{\"c\": 5}",
     "kwo_d() takes 1 positional argument but 2 positional arguments (and 1 keyword-only "
     "argument) were given",
     NULL},
    {"t.var", "*args", "[]", "{\"a\": 1}", "var() got an unexpected keyword argument 'a'", NULL},
    {"t.three", "x, y, z", "[]", NULL,
     "three() missing 3 required positional arguments: 'x', 'y', and 'z'", NULL},
    {"t.three", "x, y, z", "[1]", NULL,
     "three() missing 2 required positional arguments: 'y' and 'z'", NULL},
    {"t.opt2", "a, b=1, c=2", "[1, 2, 3, 4]", NULL,
     "opt2() takes from 1 to 3 positional arguments but 4 were given", NULL},
    {"t.opt2", "a, b=1, c=2", "[]", NULL, "opt2() missing 1 required positional argument: 'a'",
     NULL},
    {"t.xv", "x, *args", "[]", NULL, "xv() missing 1 required positional argument: 'x'", NULL},
    {"t.sleeping", "i, **_", "[]", NULL, "sleeping() missing 1 required positional argument: 'i'",
     NULL},
    {"t.sleeping", "i, **_", "[1, 2]", NULL,
     "sleeping() takes 1 positional argument but 2 were given", NULL},
    /* Bound tasks: "self" is counted as CPython counts it for a bound method. */
    {"t.ids", "self, i", "[1, 2]", NULL, "ids() takes 2 positional arguments but 3 were given",
     NULL},
    {"t.ids", "self, i", "[]", NULL, "ids() missing 1 required positional argument: 'i'", NULL},
    {"t.ids", "self, i", "[1]", "{\"self\": 2}", "ids() got multiple values for argument 'self'",
     NULL},
    {"t.noarg", "self", "[1]", NULL, "noarg() takes 1 positional argument but 2 were given", NULL},
    {"t.rp", "self, *_args", "[]", "{\"a\": 1}", "rp() got an unexpected keyword argument 'a'",
     NULL},
    {"t.retry_once", "self, *args, expires=60.0, max_retries=1, countdown=0.1", "[1]", "{\"x\": 1}",
     "retry_once() got an unexpected keyword argument 'x'", NULL},
    /* Successful bindings: named parameters in order, then *args, then **kwargs. */
    {"t.f", "a, b=None, *, c=1", "[5]", NULL, NULL, "[5, null, 1]"},
    {"t.f", "a, b", "[]", "{\"b\": 2, \"a\": 1}", NULL, "[1, 2]"},
    {"t.f", "x, *args, k=2, **kw", "[1, 2, 3]", "{\"k\": 4, \"z\": 5}", NULL,
     "[1, 4, [2, 3], {\"z\": 5}]"},
    {"t.f", "self, *args, expires=60.0, max_retries=1, countdown=0.1", "[]", NULL, NULL,
     "[60.0, 1, 0.1, []]"},
    {"t.f", "a=True, b=False, c=\"x, y\", d=[1, {\"k\": [2]}]", "[]", NULL, NULL,
     "[true, false, \"x, y\", [1, {\"k\": [2]}]]"},
    {"t.f", "i, **_", "[3]", "{\"extra\": 1}", NULL, "[3, {\"extra\": 1}]"},
    {"t.f", "self", "[]", NULL, NULL, "[]"},
    {"t.f", "", "[]", NULL, NULL, "[]"},
};

static void test_taskrun_bind_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < CC_ARRAY_LEN(bind_cases); i++) {
        const struct bind_case *c = &bind_cases[i];
        struct cc_task_entry e = {
            .name = c->name, .run = run_echo_bound, .signature = c->signature};
        struct cc_task_request req = make_req(0);
        struct cc_task_outcome o;
        int rc = invoke(&e, &req, c->args, c->kwargs, &o);

        if (c->error != NULL) {
            const json_t *msg;

            if (rc != CC_TASK_FAILED)
                fail_msg("case %zu (%s(%s)): expected TypeError, got %d", i, c->name, c->signature,
                         rc);
            assert_string_equal(json_string_value(json_object_get(o.exc, "exc_type")), "TypeError");
            assert_string_equal(json_string_value(json_object_get(o.exc, "exc_module")),
                                "builtins");
            assert_int_equal(json_array_size(json_object_get(o.exc, "exc_message")), 1);
            msg = json_array_get(json_object_get(o.exc, "exc_message"), 0);
            if (strcmp(json_string_value(msg), c->error) != 0)
                fail_msg("case %zu: got \"%s\"\n want \"%s\"", i, json_string_value(msg), c->error);
            assert_null(o.result);
        } else {
            if (rc != CC_OK)
                fail_msg("case %zu (%s(%s)): status %d: %s", i, c->name, c->signature, rc,
                         o.exc_repr != NULL ? o.exc_repr : "");
            assert_json(o.result, c->bound);
        }
        cc_taskrun_outcome_deinit(&o);
    }
}

static int run_raw(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                   json_t **result)
{
    assert_null(cc_task_arg(ctx, 0));
    *result = json_pack("[O, O]", args, kwargs);
    return CC_OK;
}

static void test_taskrun_no_signature_passes_raw(void **state)
{
    struct cc_task_entry e = {.name = "t.raw", .run = run_raw};
    struct cc_task_outcome o;

    (void)state;
    assert_int_equal(invoke(&e, NULL, "[1, 2]", "{\"a\": 1}", &o), CC_OK);
    assert_json(o.result, "[[1, 2], {\"a\": 1}]");
    cc_taskrun_outcome_deinit(&o);
    /* Absent args/kwargs are an empty list and dict. */
    assert_int_equal(cc_taskrun_invoke(&e, NULL, NULL, NULL, &o), CC_OK);
    assert_json(o.result, "[[], {}]");
    cc_taskrun_outcome_deinit(&o);
}

static void test_taskrun_bad_signatures_rejected(void **state)
{
    static const char *const bad[] = {
        "a=1, b", "a, a",  "*, ", "*",    "**kw, a", "*a, *b", "1x",
        "a=nope", "a=[1,", "a b", "*, *", "**",      "a,,b",
    };

    (void)state;
    for (size_t i = 0; i < CC_ARRAY_LEN(bad); i++) {
        struct cc_task_entry e = {.name = "t.bad", .run = run_echo_bound, .signature = bad[i]};
        struct cc_task_outcome o;

        /* A bad signature is a bug in the table: RuntimeError at run time, and
         * cc_taskrun_table_check refuses it at start-up (tested in test_tasks.c). */
        if (invoke(&e, NULL, "[]", NULL, &o) != CC_TASK_FAILED)
            fail_msg("signature \"%s\" accepted", bad[i]);
        assert_string_equal(json_string_value(json_object_get(o.exc, "exc_type")), "RuntimeError");
        cc_taskrun_outcome_deinit(&o);
    }
}

/* ---- Exceptions --------------------------------------------------------------------- */

static int raise_fmt_line; /* where run_raise_fmt raises */

static int run_raise_fmt(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                         json_t **result)
{
    (void)args;
    (void)kwargs;
    *result = json_string("discarded on failure");
    raise_fmt_line = __LINE__ + 1;
    return cc_task_raise(ctx, "builtins", "ValueError", "bad value %d", 3);
}

static void test_taskrun_raise_formats_exception(void **state)
{
    struct cc_task_entry e = {.name = "t.raiser", .run = run_raise_fmt};
    struct cc_task_outcome o;
    char want[512];

    (void)state;
    assert_int_equal(invoke(&e, NULL, "[]", NULL, &o), CC_TASK_FAILED);
    assert_null(o.result);
    assert_exc(&o, "builtins", "ValueError", "[\"bad value 3\"]");
    assert_string_equal(o.exc_repr, "ValueError('bad value 3')");
    /* The frame is the cc_task_raise() call: task.h's macro passes its location. */
    snprintf(want, sizeof(want),
             "Traceback (most recent call last):\n"
             "  File \"%s\", line %d, in run_raise_fmt\n"
             "ValueError: bad value 3\n",
             __FILE__, raise_fmt_line);
    assert_string_equal(o.traceback, want);
    assert_null(strstr(o.traceback, "/work/")); /* relative to the source tree */
    cc_taskrun_outcome_deinit(&o);
}

/* The plain function (no location: a binary built against the old header, or a function
 * pointer) still gives a Python-shaped traceback whose frame names the task. */
static int run_raise_plain(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                           json_t **result)
{
    int (*raise_fn)(struct cc_task_ctx *, const char *, const char *, const char *, ...) =
        cc_task_raise;

    (void)args;
    (void)kwargs;
    (void)result;
    return raise_fn(ctx, "celery.exceptions", "Ignore", "%s", "x");
}

static void test_taskrun_raise_plain_function_frame(void **state)
{
    struct cc_task_entry e = {.name = "t.plain", .run = run_raise_plain};
    struct cc_task_outcome o;

    (void)state;
    assert_int_equal(invoke(&e, NULL, NULL, NULL, &o), CC_TASK_FAILED);
    assert_string_equal(o.traceback, "Traceback (most recent call last):\n"
                                     "  File \"<celeryc>\", line 0, in t.plain\n"
                                     "celery.exceptions.Ignore: x\n");
    cc_taskrun_outcome_deinit(&o);
}

struct raise_case {
    const char *module;
    const char *type;
    const char *args; /* NULL: no args */
    const char *exc_message;
    const char *last_line;
};

static const struct raise_case raise_cases[] = {
    {"app", "CustomError", "[\"custom failure\", 42]", "[\"custom failure\", 42]",
     "app.CustomError: ('custom failure', 42)"},
    {"t.integration.tasks", "ExpectedException", NULL, "[]",
     "t.integration.tasks.ExpectedException"},
    {"builtins", "KeyError", "[\"k\"]", "[\"k\"]", "KeyError: 'k'"},
    {"builtins", "ValueError", "[5]", "[5]", "ValueError: 5"},
    {"__main__", "Oops", "[null]", "[null]", "Oops: None"},
    {"celery.exceptions", "Ignore", "[]", "[]", "celery.exceptions.Ignore"},
    {"billiard.exceptions", "TimeLimitExceeded", "[1]", "[1]",
     "billiard.exceptions.TimeLimitExceeded: TimeLimitExceeded(1,)"},
    {"billiard.exceptions", "SoftTimeLimitExceeded", "[]", "[]",
     "billiard.exceptions.SoftTimeLimitExceeded: SoftTimeLimitExceeded()"},
    {"billiard.exceptions", "WorkerLostError", "[\"lost\"]", "[\"lost\"]",
     "billiard.exceptions.WorkerLostError: lost"},
    {"builtins", "FileNotFoundError", "[2, \"No such file or directory\", \"x\"]",
     "[2, \"No such file or directory\", \"x\"]",
     "FileNotFoundError: [Errno 2] No such file or directory: 'x'"},
    {"builtins", "OSError", "[\"just\"]", "[\"just\"]", "OSError: just"},
    {"builtins", "IOError", "[13, \"Permission denied\"]", "[13, \"Permission denied\"]",
     "OSError: [Errno 13] Permission denied"},
    {"celery.exceptions", "NotRegistered", "[\"app.nope\"]", "[\"app.nope\"]",
     "celery.exceptions.NotRegistered: 'app.nope'"},
    {"builtins", "ValueError", "[\"\"]", "[\"\"]", "ValueError"},
};

static const struct raise_case *current_raise;
static int raise_args_line;

static int run_raise_args(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                          json_t **result)
{
    (void)args;
    (void)kwargs;
    (void)result;
    json_t *a = current_raise->args != NULL ? fixture_json(current_raise->args) : NULL;

    raise_args_line = __LINE__ + 1; /* one line: compilers differ on multi-line macro calls */
    return cc_task_raise_args(ctx, current_raise->module, current_raise->type, a);
}

static void test_taskrun_raise_args_encoding(void **state)
{
    struct cc_task_entry e = {.name = "t.r", .run = run_raise_args};

    (void)state;
    for (size_t i = 0; i < CC_ARRAY_LEN(raise_cases); i++) {
        struct cc_task_outcome o;
        char want[256];

        current_raise = &raise_cases[i];
        assert_int_equal(invoke(&e, NULL, NULL, NULL, &o), CC_TASK_FAILED);
        assert_exc(&o, current_raise->module, current_raise->type, current_raise->exc_message);
        snprintf(want, sizeof(want),
                 "Traceback (most recent call last):\n  File \"%s\", line %d, in run_raise_args\n"
                 "%s\n",
                 __FILE__, raise_args_line, current_raise->last_line);
        assert_string_equal(o.traceback, want);
        cc_taskrun_outcome_deinit(&o);
    }
}

static int run_raise_with_tb(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                             json_t **result)
{
    (void)args;
    (void)kwargs;
    (void)result;
    cc_task_raise(ctx, "builtins", "ValueError", "first");
    cc_task_set_traceback(ctx, "my traceback\n");
    return cc_task_raise_args(ctx, "builtins", "KeyError", json_string("k")); /* last wins */
}

static void test_taskrun_raise_traceback_and_last_wins(void **state)
{
    struct cc_task_entry e = {.name = "t.tb", .run = run_raise_with_tb};
    struct cc_task_outcome o;

    (void)state;
    assert_int_equal(invoke(&e, NULL, NULL, NULL, &o), CC_TASK_FAILED);
    assert_exc(&o, "builtins", "KeyError", "[\"k\"]");
    assert_string_equal(o.exc_repr, "KeyError('k')");
    assert_string_equal(o.traceback, "my traceback\n");
    cc_taskrun_outcome_deinit(&o);
}

static int status_to_return;

static int run_return_status(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                             json_t **result)
{
    (void)ctx;
    (void)args;
    (void)kwargs;
    *result = json_integer(1); /* must not leak whatever the status */
    return status_to_return;
}

static void test_taskrun_unknown_status_is_runtime_error(void **state)
{
    struct cc_task_entry e = {.name = "t.buggy", .run = run_return_status};
    static const int codes[] = {CC_EIO, CC_ENOMEM, -12345, 7};
    struct cc_task_outcome o;
    char want[200];

    (void)state;
    for (size_t i = 0; i < CC_ARRAY_LEN(codes); i++) {
        status_to_return = codes[i];
        assert_int_equal(invoke(&e, NULL, NULL, NULL, &o), CC_TASK_FAILED);
        snprintf(want, sizeof(want), "[\"%s\"]", cc_strerror(codes[i]));
        assert_exc(&o, "builtins", "RuntimeError", want);
        cc_taskrun_outcome_deinit(&o);
    }
    /* Outcome codes returned without the matching call are bugs too. */
    static const int bare[] = {CC_TASK_FAILED, CC_TASK_RETRY, CC_TASK_REJECT};
    for (size_t i = 0; i < CC_ARRAY_LEN(bare); i++) {
        status_to_return = bare[i];
        assert_int_equal(invoke(&e, NULL, NULL, NULL, &o), CC_TASK_FAILED);
        assert_string_equal(json_string_value(json_object_get(o.exc, "exc_type")), "RuntimeError");
        cc_taskrun_outcome_deinit(&o);
    }
    status_to_return = CC_OK;
    assert_int_equal(invoke(&e, NULL, NULL, NULL, &o), CC_OK);
    assert_json(o.result, "1");
    assert_true(o.runtime_s >= 0);
    cc_taskrun_outcome_deinit(&o);
}

static int run_none(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                    json_t **result)
{
    (void)ctx;
    (void)args;
    (void)kwargs;
    (void)result;
    return CC_OK;
}

static void test_taskrun_none_result_is_json_null(void **state)
{
    struct cc_task_entry e = {.name = "t.none", .run = run_none, .signature = ""};
    struct cc_task_outcome o;

    (void)state;
    assert_int_equal(invoke(&e, NULL, "[]", "{}", &o), CC_OK);
    assert_true(json_is_null(o.result));
    assert_null(o.exc);
    cc_taskrun_outcome_deinit(&o);
    cc_taskrun_outcome_deinit(NULL);
}

/* ---- Arena -------------------------------------------------------------------------- */

static int run_arena(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                     json_t **result)
{
    size_t total = 0;

    (void)args;
    (void)kwargs;
    for (size_t i = 0; i < 2000; i++) {
        size_t n = (i * 37) % 300 + (i % 97 == 0 ? 100000 : 0);
        unsigned char *p = cc_task_alloc(ctx, n);

        assert_non_null(p);
        assert_int_equal((uintptr_t)p % _Alignof(max_align_t), 0);
        memset(p, (int)(i & 0xff), n); /* ASan checks the bounds */
        total += n;
    }
    assert_non_null(cc_task_alloc(ctx, 0));
    *result = json_integer((json_int_t)total);
    return CC_OK;
}

static void test_taskrun_arena_freed_after_run(void **state)
{
    struct cc_task_entry e = {.name = "t.arena", .run = run_arena};
    struct cc_task_outcome o;

    (void)state;
    /* Leaks would be reported by LeakSanitizer in the sanitizer build. */
    assert_int_equal(invoke(&e, NULL, NULL, NULL, &o), CC_OK);
    assert_true(json_integer_value(o.result) > 2000000);
    cc_taskrun_outcome_deinit(&o);
}

/* ---- Retry -------------------------------------------------------------------------- */

static struct cc_task_retry_opts retry_opts;
static bool retry_with_exc;

static int run_retry(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                     json_t **result)
{
    struct cc_task_retry_opts o = retry_opts;

    (void)args;
    (void)kwargs;
    (void)result;
    if (retry_with_exc) {
        o.exc_module = "t.integration.tasks";
        o.exc_type = "ExpectedException";
        o.exc_args = json_array();
    }
    return cc_task_retry(ctx, &o);
}

static int retry_setup(void **state)
{
    (void)state;
    memset(&retry_opts, 0, sizeof(retry_opts));
    retry_with_exc = false;
    return 0;
}

static void test_taskrun_retry_default_countdown(void **state)
{
    struct cc_task_entry e = {.name = "t.retry", .run = run_retry};
    struct cc_task_request req = make_req(0);
    struct cc_task_outcome o;

    (void)state;
    assert_int_equal(invoke(&e, &req, "[]", NULL, &o), CC_TASK_RETRY);
    assert_true(o.retry_countdown_s == 180.0);
    assert_null(o.retry_eta);
    /* Celery stores RETRY with result None when retry() got no exc. */
    assert_true(json_is_null(o.exc));
    assert_string_equal(o.exc_repr, "None");
    assert_non_null(strstr(o.traceback, "\ncelery.exceptions.Retry: Retry in 180s\n"));
    /* The frame is the cc_task_retry() call in this file. */
    assert_non_null(strstr(o.traceback, "\n  File \"" __FILE__ "\", line "));
    cc_taskrun_outcome_deinit(&o);

    e.default_retry_delay_s = 1;
    assert_int_equal(invoke(&e, &req, "[]", NULL, &o), CC_TASK_RETRY);
    assert_true(o.retry_countdown_s == 1.0);
    cc_taskrun_outcome_deinit(&o);
}

static void test_taskrun_retry_countdown_eta_and_exc(void **state)
{
    struct cc_task_entry e = {.name = "t.retry", .run = run_retry};
    struct cc_task_request req = make_req(1);
    struct cc_task_outcome o;

    (void)state;
    retry_opts.countdown_s = 5;
    retry_with_exc = true;
    assert_int_equal(invoke(&e, &req, "[]", NULL, &o), CC_TASK_RETRY);
    assert_true(o.retry_countdown_s == 5.0);
    assert_exc(&o, "t.integration.tasks", "ExpectedException", "[]");
    assert_string_equal(o.exc_repr, "ExpectedException()");
    assert_non_null(
        strstr(o.traceback, "\ncelery.exceptions.Retry: Retry in 5s: ExpectedException()\n"));
    cc_taskrun_outcome_deinit(&o);

    retry_opts.countdown_s = 0.1;
    retry_with_exc = false;
    assert_int_equal(invoke(&e, &req, "[]", NULL, &o), CC_TASK_RETRY);
    assert_non_null(strstr(o.traceback, "Retry in 0.1s\n"));
    cc_taskrun_outcome_deinit(&o);

    retry_opts.eta = "2030-01-01T00:00:00+00:00";
    assert_int_equal(invoke(&e, &req, "[]", NULL, &o), CC_TASK_RETRY);
    assert_string_equal(o.retry_eta, "2030-01-01T00:00:00+00:00");
    assert_non_null(strstr(o.traceback, "Retry at 2030-01-01T00:00:00+00:00\n"));
    cc_taskrun_outcome_deinit(&o);
}

static void test_taskrun_retry_max_retries_resolution(void **state)
{
    struct cc_task_entry e = {.name = "t.retry", .run = run_retry};
    struct cc_task_outcome o;
    struct cc_task_request req;

    (void)state;
    /* Default 3: retries 0..2 retry (retries+1 <= 3), the 4th run (retries=3) fails. */
    for (int r = 0; r < 3; r++) {
        req = make_req(r);
        assert_int_equal(invoke(&e, &req, "[]", NULL, &o), CC_TASK_RETRY);
        cc_taskrun_outcome_deinit(&o);
    }
    req = make_req(3);
    assert_int_equal(invoke(&e, &req, "[1, \"a\"]", "{\"k\": 2}", &o), CC_TASK_FAILED);
    assert_exc(&o, "celery.exceptions", "MaxRetriesExceededError",
               "[\"Can't retry t.retry[id-1] args:(1, 'a') kwargs:{'k': 2}\"]");
    cc_taskrun_outcome_deinit(&o);

    /* One-element args render as a 1-tuple. */
    assert_int_equal(invoke(&e, &req, "[7]", NULL, &o), CC_TASK_FAILED);
    assert_exc(&o, "celery.exceptions", "MaxRetriesExceededError",
               "[\"Can't retry t.retry[id-1] args:(7,) kwargs:{}\"]");
    cc_taskrun_outcome_deinit(&o);

    /* With exc: past the limit the given exception is raised instead. */
    retry_with_exc = true;
    assert_int_equal(invoke(&e, &req, "[]", NULL, &o), CC_TASK_FAILED);
    assert_exc(&o, "t.integration.tasks", "ExpectedException", "[]");
    cc_taskrun_outcome_deinit(&o);
    retry_with_exc = false;

    /* CC_MAX_RETRIES_NONE: no retries at all. */
    e.max_retries = CC_MAX_RETRIES_NONE;
    req = make_req(0);
    assert_int_equal(invoke(&e, &req, "[]", NULL, &o), CC_TASK_FAILED);
    cc_taskrun_outcome_deinit(&o);

    /* CC_MAX_RETRIES_FOREVER (Celery's max_retries=None). */
    e.max_retries = CC_MAX_RETRIES_FOREVER;
    req = make_req(100000);
    assert_int_equal(invoke(&e, &req, "[]", NULL, &o), CC_TASK_RETRY);
    cc_taskrun_outcome_deinit(&o);

    /* An explicit count on the entry, then overridden by the call. */
    e.max_retries = 1;
    req = make_req(1);
    assert_int_equal(invoke(&e, &req, "[]", NULL, &o), CC_TASK_FAILED);
    cc_taskrun_outcome_deinit(&o);
    retry_opts.max_retries = 5;
    req = make_req(4);
    assert_int_equal(invoke(&e, &req, "[]", NULL, &o), CC_TASK_RETRY);
    cc_taskrun_outcome_deinit(&o);
    req = make_req(5);
    assert_int_equal(invoke(&e, &req, "[]", NULL, &o), CC_TASK_FAILED);
    cc_taskrun_outcome_deinit(&o);
    retry_opts.max_retries = CC_MAX_RETRIES_NONE;
    req = make_req(0);
    assert_int_equal(invoke(&e, &req, "[]", NULL, &o), CC_TASK_FAILED);
    cc_taskrun_outcome_deinit(&o);
}

static int run_raise_then_retry(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                                json_t **result)
{
    (void)args;
    (void)kwargs;
    (void)result;
    cc_task_raise(ctx, "builtins", "ValueError", "replaced by the retry");
    return cc_task_retry(ctx, NULL);
}

static void test_taskrun_retry_replaces_pending_exception(void **state)
{
    struct cc_task_entry e = {.name = "t.rr", .run = run_raise_then_retry};
    struct cc_task_request req = make_req(0);
    struct cc_task_outcome o;

    (void)state;
    assert_int_equal(invoke(&e, &req, NULL, NULL, &o), CC_TASK_RETRY);
    assert_true(json_is_null(o.exc));
    cc_taskrun_outcome_deinit(&o);
}

/* ---- Autoretry ---------------------------------------------------------------------- */

static const char *auto_exc_module = "builtins";
static const char *auto_exc_type = "ValueError";

static int run_auto(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                    json_t **result)
{
    (void)args;
    (void)kwargs;
    (void)result;
    return cc_task_raise(ctx, auto_exc_module, auto_exc_type, "auto");
}

static void test_taskrun_autoretry_backoff_exact(void **state)
{
    static const char *const on[] = {"builtins.ValueError", NULL};
    struct cc_task_entry e = {
        .name = "t.auto",
        .run = run_auto,
        .autoretry_for = on,
        .retry_backoff_s = 1,
        .retry_jitter = CC_NO,
        .max_retries = CC_MAX_RETRIES_FOREVER,
    };
    static const struct {
        int retries;
        double countdown;
    } want[] = {{0, 1}, {1, 2}, {3, 8}, {9, 512}, {10, 600}, {70, 600}};
    struct cc_task_outcome o;

    (void)state;
    auto_exc_module = "builtins";
    auto_exc_type = "ValueError";
    for (size_t i = 0; i < CC_ARRAY_LEN(want); i++) {
        struct cc_task_request req = make_req(want[i].retries);

        assert_int_equal(invoke(&e, &req, NULL, NULL, &o), CC_TASK_RETRY);
        if (o.retry_countdown_s != want[i].countdown)
            fail_msg("retries %d: countdown %g, want %g", want[i].retries, o.retry_countdown_s,
                     want[i].countdown);
        assert_exc(&o, "builtins", "ValueError", "[\"auto\"]");
        cc_taskrun_outcome_deinit(&o);
    }
    /* retry_backoff=3, retry_backoff_max=10; int() truncation of 2.9 -> 2. */
    e.retry_backoff_s = 3;
    e.retry_backoff_max_s = 10;
    {
        struct cc_task_request req = make_req(1);

        assert_int_equal(invoke(&e, &req, NULL, NULL, &o), CC_TASK_RETRY);
        assert_true(o.retry_countdown_s == 6);
        cc_taskrun_outcome_deinit(&o);
        req = make_req(2);
        assert_int_equal(invoke(&e, &req, NULL, NULL, &o), CC_TASK_RETRY);
        assert_true(o.retry_countdown_s == 10);
        cc_taskrun_outcome_deinit(&o);
        e.retry_backoff_s = 2.9;
        req = make_req(1);
        assert_int_equal(invoke(&e, &req, NULL, NULL, &o), CC_TASK_RETRY);
        assert_true(o.retry_countdown_s == 4);
        cc_taskrun_outcome_deinit(&o);
        /* No backoff: the default retry delay. */
        e.retry_backoff_s = 0;
        assert_int_equal(invoke(&e, &req, NULL, NULL, &o), CC_TASK_RETRY);
        assert_true(o.retry_countdown_s == 180);
        cc_taskrun_outcome_deinit(&o);
    }
}

static void test_taskrun_autoretry_jitter_bounds(void **state)
{
    static const char *const on[] = {"builtins.ValueError", NULL};
    struct cc_task_entry e = {
        .name = "t.auto",
        .run = run_auto,
        .autoretry_for = on,
        .retry_backoff_s = 1,
        .max_retries = CC_MAX_RETRIES_FOREVER,
    };
    bool seen_low = false, seen_high = false;
    struct cc_task_outcome o;

    (void)state;
    auto_exc_module = "builtins";
    auto_exc_type = "ValueError";
    for (int i = 0; i < 400; i++) {
        struct cc_task_request req = make_req(3); /* countdown = randrange(8 + 1) */
        double c;

        assert_int_equal(invoke(&e, &req, NULL, NULL, &o), CC_TASK_RETRY);
        c = o.retry_countdown_s;
        assert_true(c >= 0 && c <= 8 && c == (double)(int)c);
        seen_low |= c == 0;
        seen_high |= c == 8;
        cc_taskrun_outcome_deinit(&o);
    }
    assert_true(seen_low && seen_high);
}

static void test_taskrun_autoretry_matching(void **state)
{
    static const char *const lookup[] = {"builtins.LookupError", NULL};
    static const char *const any[] = {"*", NULL};
    static const char *const exc[] = {"builtins.Exception", NULL};
    static const char *const custom[] = {"app.CustomError", NULL};
    static const struct {
        const char *const *autoretry_for;
        const char *module;
        const char *type;
        int status;
    } cases[] = {
        {lookup, "builtins", "KeyError", CC_TASK_RETRY},
        {lookup, "builtins", "IndexError", CC_TASK_RETRY},
        {lookup, "builtins", "ValueError", CC_TASK_FAILED},
        {lookup, "app", "KeyError", CC_TASK_FAILED},
        {any, "app", "Whatever", CC_TASK_RETRY},
        {exc, "app", "CustomError", CC_TASK_RETRY},
        {exc, "builtins", "ConnectionRefusedError", CC_TASK_RETRY},
        {custom, "app", "CustomError", CC_TASK_RETRY},
        {custom, "app", "OtherError", CC_TASK_FAILED},
        {custom, "builtins", "CustomError", CC_TASK_FAILED},
    };

    (void)state;
    for (size_t i = 0; i < CC_ARRAY_LEN(cases); i++) {
        struct cc_task_entry e = {
            .name = "t.auto", .run = run_auto, .autoretry_for = cases[i].autoretry_for};
        struct cc_task_request req = make_req(0);
        struct cc_task_outcome o;

        auto_exc_module = cases[i].module;
        auto_exc_type = cases[i].type;
        if (invoke(&e, &req, NULL, NULL, &o) != cases[i].status)
            fail_msg("case %zu: %s.%s", i, cases[i].module, cases[i].type);
        cc_taskrun_outcome_deinit(&o);
    }
}

static void test_taskrun_autoretry_exhausted_raises_original(void **state)
{
    static const char *const on[] = {"builtins.ValueError", NULL};
    struct cc_task_entry e = {
        .name = "t.auto", .run = run_auto, .autoretry_for = on, .max_retries = 1};
    struct cc_task_request req = make_req(1);
    struct cc_task_outcome o;

    (void)state;
    auto_exc_module = "builtins";
    auto_exc_type = "ValueError";
    assert_int_equal(invoke(&e, &req, NULL, NULL, &o), CC_TASK_FAILED);
    assert_exc(&o, "builtins", "ValueError", "[\"auto\"]");
    assert_non_null(strstr(o.traceback, "\nValueError: auto\n"));
    cc_taskrun_outcome_deinit(&o);

    /* Binding errors go through the autoretry wrapper too, as in Celery. */
    static const char *const type_error[] = {"builtins.TypeError", NULL};
    struct cc_task_entry b = {
        .name = "t.b", .run = run_none, .signature = "x", .autoretry_for = type_error};
    req = make_req(0);
    assert_int_equal(invoke(&b, &req, "[]", NULL, &o), CC_TASK_RETRY);
    cc_taskrun_outcome_deinit(&o);
}

/* ---- Reject and ignore -------------------------------------------------------------- */

static bool reject_requeue;

static int run_reject(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                      json_t **result)
{
    (void)args;
    (void)kwargs;
    (void)result;
    return cc_task_reject(ctx, "no thanks", reject_requeue);
}

static int run_ignore(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                      json_t **result)
{
    (void)args;
    (void)kwargs;
    *result = json_string("dropped");
    return cc_task_ignore(ctx);
}

static void test_taskrun_reject_and_ignore(void **state)
{
    struct cc_task_entry rj = {.name = "t.reject", .run = run_reject};
    struct cc_task_entry ig = {.name = "t.ignore", .run = run_ignore};
    struct cc_task_outcome o;

    (void)state;
    reject_requeue = true;
    assert_int_equal(invoke(&rj, NULL, NULL, NULL, &o), CC_TASK_REJECT);
    assert_true(o.reject_requeue);
    assert_string_equal(o.exc_repr, "reject requeue=True: no thanks");
    assert_string_equal(json_string_value(json_object_get(o.exc, "exc_type")), "Reject");
    assert_json(json_object_get(o.exc, "exc_message"), "[\"no thanks\", true]");
    assert_null(o.traceback);
    cc_taskrun_outcome_deinit(&o);
    reject_requeue = false;
    assert_int_equal(invoke(&rj, NULL, NULL, NULL, &o), CC_TASK_REJECT);
    assert_false(o.reject_requeue);
    cc_taskrun_outcome_deinit(&o);

    assert_int_equal(invoke(&ig, NULL, NULL, NULL, &o), CC_TASK_IGNORE);
    assert_null(o.result);
    assert_null(o.exc);
    cc_taskrun_outcome_deinit(&o);
}

/* ---- Soft time limit ------------------------------------------------------------------ */

static int soft_ignores(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                        json_t **result)
{
    (void)ctx, (void)args, (void)kwargs;
    *result = json_integer(42);
    return CC_OK;
}

static int soft_looks(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                      json_t **result)
{
    (void)args, (void)kwargs;
    *result = json_string(cc_task_soft_limit_exceeded(ctx) ? "cleaned" : "done");
    return CC_OK;
}

static int soft_retries(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                        json_t **result)
{
    static const struct cc_task_retry_opts o = {.countdown_s = 1};

    (void)args, (void)kwargs, (void)result;
    return cc_task_retry(ctx, &o);
}

/* The flag set while the task ran: a task that never asked fails with billiard's
 * SoftTimeLimitExceeded() whatever it did; one that asked keeps its result; no flag, no
 * change. */
static void test_taskrun_soft_limit_outcomes(void **state)
{
    const struct cc_task_entry ign = {.name = "t.ign", .run = soft_ignores};
    const struct cc_task_entry look = {.name = "t.look", .run = soft_looks};
    const struct cc_task_entry retry = {.name = "t.retry", .run = soft_retries};
    struct cc_task_outcome out;
    atomic_int flag = 0;

    (void)state;
    cc_taskrun_set_soft_limit_flag(&flag);
    assert_int_equal(cc_taskrun_invoke(&ign, NULL, NULL, NULL, &out), CC_OK);
    assert_json(out.result, "42");
    cc_taskrun_outcome_deinit(&out);
    assert_int_equal(cc_taskrun_invoke(&look, NULL, NULL, NULL, &out), CC_OK);
    assert_json(out.result, "\"done\"");
    cc_taskrun_outcome_deinit(&out);

    atomic_store(&flag, 1);
    assert_int_equal(cc_taskrun_invoke(&ign, NULL, NULL, NULL, &out), CC_TASK_FAILED);
    assert_json(out.exc, "{\"exc_type\": \"SoftTimeLimitExceeded\", \"exc_message\": [], "
                         "\"exc_module\": \"billiard.exceptions\"}");
    assert_string_equal(out.exc_repr, "SoftTimeLimitExceeded()");
    assert_non_null(strstr(out.traceback, "billiard.exceptions.SoftTimeLimitExceeded: "
                                          "SoftTimeLimitExceeded()\n"));
    assert_null(out.result);
    cc_taskrun_outcome_deinit(&out);
    assert_int_equal(cc_taskrun_invoke(&retry, NULL, NULL, NULL, &out), CC_TASK_FAILED);
    assert_null(out.retry_eta);
    cc_taskrun_outcome_deinit(&out);
    assert_int_equal(cc_taskrun_invoke(&look, NULL, NULL, NULL, &out), CC_OK);
    assert_json(out.result, "\"cleaned\"");
    cc_taskrun_outcome_deinit(&out);
    cc_taskrun_set_soft_limit_flag(NULL);
}

static void test_taskrun_ack_options_tristate(void **state)
{
    const struct cc_task_entry d = {.name = "d"};
    const struct cc_task_entry y = {
        .name = "y", .acks_on_failure_or_timeout = CC_YES, .reject_on_worker_lost = CC_YES};
    const struct cc_task_entry n = {
        .name = "n", .acks_on_failure_or_timeout = CC_NO, .reject_on_worker_lost = CC_NO};

    (void)state;
    assert_true(cc_taskrun_acks_on_failure_or_timeout(&d, true));
    assert_false(cc_taskrun_acks_on_failure_or_timeout(&d, false));
    assert_true(cc_taskrun_acks_on_failure_or_timeout(&y, false));
    assert_false(cc_taskrun_acks_on_failure_or_timeout(&n, true));
    assert_true(cc_taskrun_acks_on_failure_or_timeout(NULL, true));
    assert_false(cc_taskrun_reject_on_worker_lost(&d, false));
    assert_true(cc_taskrun_reject_on_worker_lost(&y, false));
    assert_false(cc_taskrun_reject_on_worker_lost(&n, true));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_taskrun_bind_cases),
        cmocka_unit_test(test_taskrun_no_signature_passes_raw),
        cmocka_unit_test(test_taskrun_bad_signatures_rejected),
        cmocka_unit_test(test_taskrun_raise_formats_exception),
        cmocka_unit_test(test_taskrun_raise_args_encoding),
        cmocka_unit_test(test_taskrun_raise_traceback_and_last_wins),
        cmocka_unit_test(test_taskrun_raise_plain_function_frame),
        cmocka_unit_test(test_taskrun_unknown_status_is_runtime_error),
        cmocka_unit_test(test_taskrun_none_result_is_json_null),
        cmocka_unit_test(test_taskrun_arena_freed_after_run),
        cmocka_unit_test_setup(test_taskrun_retry_default_countdown, retry_setup),
        cmocka_unit_test_setup(test_taskrun_retry_countdown_eta_and_exc, retry_setup),
        cmocka_unit_test_setup(test_taskrun_retry_max_retries_resolution, retry_setup),
        cmocka_unit_test_setup(test_taskrun_retry_replaces_pending_exception, retry_setup),
        cmocka_unit_test(test_taskrun_autoretry_backoff_exact),
        cmocka_unit_test(test_taskrun_autoretry_jitter_bounds),
        cmocka_unit_test(test_taskrun_autoretry_matching),
        cmocka_unit_test(test_taskrun_autoretry_exhausted_raises_original),
        cmocka_unit_test(test_taskrun_reject_and_ignore),
        cmocka_unit_test(test_taskrun_soft_limit_outcomes),
        cmocka_unit_test(test_taskrun_ack_options_tristate),
    };

    return cmocka_run_group_tests_name("taskrun", tests, NULL, NULL);
}
