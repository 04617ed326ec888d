/* Unit tests for proto/canvas.c.
 *
 * Golden cases: every CC_TEST_DATA_DIR/canvas/<name>.json is one call of the codec and what
 * Python Celery 5.2.6 published in the same situation (messages byte for byte: exchange,
 * routing key, properties, header table with key order, body bytes; chord-size and
 * save-group steps; the parent's "children"). shared-*.json are made from the shared
 * fixtures by from_shared.py; py-*.json were captured from a real Python worker by
 * capture.py (ids come from a patched uuid(), handed out here by new_id in the same order).
 *
 * Case format:
 *   {"call": "apply" | "on_success" | "on_failure" | "chord_body",
 *    "ctx": {"parent_id", "root_id", "origin", "reply_to", "default_queue", "priority",
 *            "now_us"},
 *    apply: "sig", "prepend", "extra"; on_success: "embed", "retval";
 *    on_failure: "errbacks", "failed_id"; chord_body: "body", "results";
 *    "new_ids": [...], "expect_steps": [{"kind": "publish", "exchange", "routing_key",
 *    "properties", "headers", "body_raw"} | {"kind": "chord_size", "group_id",
 *    "chord_size"} | {"kind": "save_group", "group_id", "group_result"}],
 *    "expect_children": [...] (optional)}
 *
 * Then: malformed signatures give CC_EINVAL with a message, never a crash.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "canvas.h"
#include "celeryc/canvas.h"
#include "helpers/fixture.h"

/* ---- deterministic ids ----------------------------------------------------------------- */

struct ids {
    const json_t *list;
    size_t next;
    int extra;
};

static void ids_next(char out[37], void *arg)
{
    struct ids *ids = arg;

    if (ids->list && ids->next < json_array_size(ids->list)) {
        snprintf(out, 37, "%s", json_string_value(json_array_get(ids->list, ids->next++)));
        return;
    }
    snprintf(out, 37, "00000000-0000-4000-8000-%012d", ids->extra++);
}

static const char *jstr(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);

    return json_is_string(v) ? json_string_value(v) : NULL;
}

static void ctx_from(const json_t *c, struct cc_canvas_ctx *ctx, struct ids *ids)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->parent_id = jstr(c, "parent_id");
    ctx->root_id = jstr(c, "root_id");
    ctx->origin = jstr(c, "origin");
    ctx->reply_to = jstr(c, "reply_to");
    ctx->default_queue = jstr(c, "default_queue") ? jstr(c, "default_queue") : "celery";
    ctx->priority = json_is_integer(json_object_get(c, "priority"))
                        ? (int)json_integer_value(json_object_get(c, "priority"))
                        : -1;
    ctx->now_us = json_integer_value(json_object_get(c, "now_us"));
    ctx->new_id = ids_next;
    ctx->new_id_arg = ids;
}

static int g_bad; /* failed checks in the current case (every case runs, failures listed) */

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            print_error(__VA_ARGS__);                                                              \
            g_bad++;                                                                               \
        }                                                                                          \
    } while (0)

static char *dump(const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);

    assert_non_null(s);
    return s;
}

static void expect_json(const char *what, const json_t *want, const json_t *got)
{
    char *a = dump(want), *b = dump(got);

    if (strcmp(a, b) != 0) {
        print_error("%s differs\n  want %s\n  got  %s\n", what, a, b);
        g_bad++;
    }
    free(a);
    free(b);
}

static void expect_str(const char *what, const char *want, const char *got)
{
    if (want == NULL && got == NULL)
        return;
    if (want == NULL || got == NULL || strcmp(want, got) != 0) {
        print_error("%s: want '%s' got '%s'\n", what, want ? want : "(none)", got ? got : "(none)");
        fail();
    }
}

static void check_publish(const json_t *want, const struct cc_canvas_step *st)
{
    const json_t *p = json_object_get(want, "properties");
    const char *body = jstr(want, "body_raw");

    if (st->kind != CC_CANVAS_PUBLISH) {
        CHECK(0, "step kind %d, want publish\n", st->kind);
        return;
    }
    expect_str("exchange", jstr(want, "exchange"), st->exchange);
    expect_str("routing_key", jstr(want, "routing_key"), st->routing_key);
    expect_json("headers", json_object_get(want, "headers"), st->msg.headers);
    if (strlen(body) != st->msg.body_len || memcmp(body, st->msg.body, st->msg.body_len) != 0) {
        print_error("body differs\n  want %s\n  got  %.*s\n", body, (int)st->msg.body_len,
                    st->msg.body);
        g_bad++;
    }
    expect_str("content_type", jstr(p, "content_type"), st->msg.content_type);
    expect_str("content_encoding", jstr(p, "content_encoding"), st->msg.content_encoding);
    expect_str("correlation_id", jstr(p, "correlation_id"), st->msg.correlation_id);
    expect_str("reply_to", jstr(p, "reply_to"), st->msg.reply_to);
    expect_str("expiration", jstr(p, "expiration"), st->msg.expiration);
    CHECK(json_integer_value(json_object_get(p, "priority")) == st->msg.priority, "priority %d\n",
          st->msg.priority);
    CHECK(json_integer_value(json_object_get(p, "delivery_mode")) == st->msg.delivery_mode,
          "delivery_mode %d\n", st->msg.delivery_mode);
    expect_str("step task_id", jstr(json_object_get(want, "headers"), "id"), st->task_id);
    expect_str("step task", jstr(json_object_get(want, "headers"), "task"), st->task);
}

static int run_case(const json_t *c, struct cc_canvas_plan *plan, struct cc_err *err)
{
    const char *call = jstr(c, "call");
    struct cc_canvas_ctx ctx;
    struct ids ids = {json_object_get(c, "new_ids"), 0, 0};

    ctx_from(json_object_get(c, "ctx"), &ctx, &ids);
    cc_canvas_plan_init(plan);
    assert_non_null(call);
    if (strcmp(call, "apply") == 0) {
        const json_t *pre = json_object_get(c, "prepend"), *ex = json_object_get(c, "extra");

        return cc_canvas_apply(plan, json_object_get(c, "sig"), json_is_null(pre) ? NULL : pre,
                               json_is_null(ex) ? NULL : ex, &ctx, err);
    }
    if (strcmp(call, "on_success") == 0)
        return cc_canvas_on_success(plan, json_object_get(c, "embed"), json_object_get(c, "retval"),
                                    &ctx, err);
    if (strcmp(call, "on_failure") == 0)
        return cc_canvas_on_failure(plan, json_object_get(c, "errbacks"), jstr(c, "failed_id"),
                                    &ctx, err);
    if (strcmp(call, "chord_body") == 0)
        return cc_canvas_chord_body(plan, json_object_get(c, "body"), json_object_get(c, "results"),
                                    &ctx, err);
    fail_msg("unknown call %s", call);
    return -1;
}

static int check_case(const char *name)
{
    char path[1024];
    json_error_t jerr;
    json_t *c;
    struct cc_canvas_plan plan;
    struct cc_err err = {0};
    const json_t *steps, *want;
    size_t i;
    int rc;

    snprintf(path, sizeof(path), "%s/canvas/%s", CC_TEST_DATA_DIR, name);
    c = json_load_file(path, JSON_PRESERVE_ORDER, &jerr);
    if (c == NULL)
        fail_msg("%s: %s", path, jerr.text);
    g_bad = 0;
    print_message("[ %s ]\n", name);
    rc = run_case(c, &plan, &err);
    CHECK(rc == CC_OK, "%s: rc %d: %s\n", name, rc, err.msg);
    steps = json_object_get(c, "expect_steps");
    if (rc == CC_OK && json_array_size(steps) != plan.n) {
        for (i = 0; i < plan.n; i++)
            print_error("  step %zu kind %d task %s\n", i, plan.steps[i].kind,
                        plan.steps[i].task ? plan.steps[i].task : "-");
        CHECK(0, "%s: %zu steps, want %zu\n", name, plan.n, json_array_size(steps));
    }
    json_array_foreach(steps, i, want)
    {
        const char *kind = jstr(want, "kind");
        const struct cc_canvas_step *st = &plan.steps[i];

        if (rc != CC_OK || i >= plan.n)
            break;
        if (strcmp(kind, "publish") == 0) {
            check_publish(want, st);
        } else if (strcmp(kind, "chord_size") == 0) {
            CHECK(st->kind == CC_CANVAS_CHORD_SIZE, "step %zu not chord_size\n", i);
            expect_str("group_id", jstr(want, "group_id"), st->group_id);
            CHECK(st->chord_size == json_integer_value(json_object_get(want, "chord_size")),
                  "chord_size %ld\n", st->chord_size);
        } else {
            CHECK(st->kind == CC_CANVAS_SAVE_GROUP, "step %zu not save_group\n", i);
            expect_str("group_id", jstr(want, "group_id"), st->group_id);
            expect_json("group_result", json_object_get(want, "group_result"), st->group_result);
        }
    }
    if (rc == CC_OK && json_object_get(c, "expect_children"))
        expect_json("children", json_object_get(c, "expect_children"), plan.children);
    cc_canvas_plan_deinit(&plan);
    json_decref(c);
    if (g_bad)
        print_error("FAILED: %s\n", name);
    return g_bad;
}

static void test_golden(void **state)
{
    char dir[1024];
    DIR *d;
    struct dirent *e;
    int n = 0, bad = 0;

    (void)state;
    snprintf(dir, sizeof(dir), "%s/canvas", CC_TEST_DATA_DIR);
    d = opendir(dir);
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);

        if (l < 6 || strcmp(e->d_name + l - 5, ".json") != 0)
            continue;
        bad += check_case(e->d_name) != 0;
        n++;
    }
    closedir(d);
    assert_true(n >= 9);
    if (bad)
        fail_msg("%d of %d golden cases failed", bad, n);
}

/* ---- malformed input: CC_EINVAL with a reason, never a crash ----------------------------- */

static int call_json(const char *call, const char *in, struct cc_err *err)
{
    struct cc_canvas_plan plan;
    struct cc_canvas_ctx ctx;
    struct ids ids = {NULL, 0, 0};
    json_error_t jerr;
    json_t *v = json_loads(in, JSON_DECODE_ANY, &jerr), *ok = json_pack("[i]", 1);
    int rc;

    if (v == NULL)
        fail_msg("bad test JSON %s: %s", in, jerr.text);
    memset(err, 0, sizeof(*err));
    ctx_from(NULL, &ctx, &ids);
    ctx.parent_id = "p-id";
    cc_canvas_plan_init(&plan);
    if (strcmp(call, "apply") == 0)
        rc = cc_canvas_apply(&plan, v, NULL, NULL, &ctx, err);
    else if (strcmp(call, "apply_extra") == 0)
        rc = cc_canvas_apply(&plan, json_object_get(v, "sig"), json_object_get(v, "prepend"),
                             json_object_get(v, "extra"), &ctx, err);
    else if (strcmp(call, "on_success") == 0)
        rc = cc_canvas_on_success(&plan, v, ok, &ctx, err);
    else if (strcmp(call, "on_failure") == 0)
        rc = cc_canvas_on_failure(&plan, v, "failed-id", &ctx, err);
    else
        rc = cc_canvas_chord_body(&plan, json_object_get(v, "body"), json_object_get(v, "r"), &ctx,
                                  err);
    cc_canvas_plan_deinit(&plan);
    json_decref(v);
    json_decref(ok);
    return rc;
}

#define SIG(opts) "{\"task\": \"t.a\", \"args\": [], \"kwargs\": {}, \"options\": " opts "}"

static void test_malformed(void **state)
{
    static const char *const cases[][2] = {
        {"apply", "5"},
        {"apply", "\"t.a\""},
        {"apply", "[]"},
        {"apply", "{\"args\": []}"},
        {"apply", "{\"task\": 5}"},
        {"apply", "{\"task\": \"t\", \"subtask_type\": \"xmap\"}"},
        {"apply", "{\"task\": \"t\", \"subtask_type\": 5}"},
        {"apply", "{\"task\": \"t\", \"args\": {}}"},
        {"apply", "{\"task\": \"t\", \"kwargs\": []}"},
        {"apply", "{\"task\": \"t\", \"options\": 1}"},
        {"apply", "{\"task\": \"celery.chain\", \"subtask_type\": \"chain\"}"},
        {"apply", "{\"subtask_type\": \"chain\", \"kwargs\": {\"tasks\": 5}}"},
        {"apply", "{\"subtask_type\": \"chain\", \"kwargs\": {\"tasks\": [5]}}"},
        {"apply", "{\"subtask_type\": \"group\", \"kwargs\": {\"tasks\": {}}}"},
        {"apply", "{\"subtask_type\": \"group\", \"kwargs\": {\"tasks\": [{}]}}"},
        {"apply", "{\"subtask_type\": \"chord\", \"kwargs\": {\"header\": [" SIG("{}") "]}}"},
        {"apply",
         "{\"subtask_type\": \"chord\", \"kwargs\": {\"header\": 5, \"body\": " SIG("{}") "}}"},
        {"apply",
         "{\"subtask_type\": \"chord\", \"kwargs\": {\"header\": [7], \"body\": " SIG("{}") "}}"},
        {"apply", SIG("{\"task_id\": 5}")},
        {"apply", SIG("{\"queue\": 5}")},
        {"apply", SIG("{\"priority\": \"x\"}")},
        {"apply", SIG("{\"priority\": 300}")},
        {"apply", SIG("{\"group_index\": \"a\"}")},
        {"apply", SIG("{\"retries\": -1}")},
        {"apply", SIG("{\"countdown\": \"x\"}")},
        {"apply", SIG("{\"expires\": []}")},
        {"apply", SIG("{\"expires\": \"not a time\"}")},
        {"apply", SIG("{\"time_limit\": true}")},
        {"apply", SIG("{\"headers\": 5}")},
        {"apply", SIG("{\"delivery_mode\": 7}")},
        {"apply", SIG("{\"root_id\": []}")},
        {"apply_extra", "{\"sig\": " SIG("{}") ", \"prepend\": 5}"},
        {"apply_extra", "{\"sig\": " SIG("{}") ", \"extra\": 5}"},
        {"on_success", "5"},
        {"on_success", "{\"callbacks\": 5}"},
        {"on_success", "{\"chain\": {}}"},
        {"on_success", "{\"callbacks\": [5]}"},
        {"on_success", "{\"chain\": [" SIG("{}") ", 5]}"},
        {"on_success", "{\"callbacks\": [" SIG("{}") ", {\"task\": 1}]}"},
        {"on_failure", "5"},
        {"on_failure", "[5]"},
        {"chord_body", "{\"body\": " SIG("{}") ", \"r\": 5}"},
        {"chord_body", "{\"body\": 5, \"r\": []}"},
    };
    struct cc_err err;
    char deep[8192];
    size_t off = 0;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = call_json(cases[i][0], cases[i][1], &err);

        if (rc != CC_EINVAL || err.msg[0] == '\0')
            fail_msg("case %zu %s %s: rc %d (%s)", i, cases[i][0], cases[i][1], rc, err.msg);
    }
    /* nesting beyond the bound is refused, not recursed */
    for (int i = 0; i < 100; i++)
        off += (size_t)snprintf(deep + off, sizeof(deep) - off,
                                "{\"subtask_type\": \"chain\", \"kwargs\": {\"tasks\": [");
    off += (size_t)snprintf(deep + off, sizeof(deep) - off, SIG("{}"));
    for (int i = 0; i < 100; i++)
        off += (size_t)snprintf(deep + off, sizeof(deep) - off, "]}}");
    assert_true(off < sizeof(deep) - 1);
    assert_int_equal(call_json("apply", deep, &err), CC_EINVAL);
    assert_non_null(strstr(err.msg, "nested"));
}

/* ---- carried options, stamping, routing -------------------------------------------------- */

static void test_stamps_and_routing(void **state)
{
    struct cc_canvas_plan plan;
    struct cc_canvas_ctx ctx;
    struct ids ids = {NULL, 0, 0};
    struct cc_err err;
    json_t *sig = json_loads(
        "{\"task\": \"t.a\", \"args\": [1], \"kwargs\": {}, \"options\": {\"task_id\": \"T\", "
        "\"stamped_headers\": [\"s1\"], \"s1\": \"v1\", \"exchange\": \"ex\", "
        "\"routing_key\": \"rk\", \"future_opt\": {\"x\": 1}, \"link\": {\"task\": \"t.b\", "
        "\"args\": [], \"kwargs\": {}, \"options\": {\"future_opt\": 2}, \"subtask_type\": "
        "null, \"immutable\": false}}, \"subtask_type\": null, \"immutable\": false}",
        0, NULL);
    char *h;

    (void)state;
    assert_non_null(sig);
    ctx_from(NULL, &ctx, &ids);
    ctx.parent_id = "P";
    ctx.root_id = "R";
    cc_canvas_plan_init(&plan);
    assert_int_equal(cc_canvas_apply(&plan, sig, NULL, NULL, &ctx, &err), CC_OK);
    assert_int_equal(plan.n, 1);
    assert_string_equal(plan.steps[0].exchange, "ex");
    assert_string_equal(plan.steps[0].routing_key, "rk");
    h = dump(plan.steps[0].msg.headers);
    /* Celery >= 5.3 stamping headers after the 5.2 ones; parent/root from the context */
    assert_non_null(strstr(h, "\"root_id\":\"R\",\"parent_id\":\"P\",\"argsrepr\":\"(1,)\""));
    assert_non_null(strstr(
        h, "\"ignore_result\":false,\"stamped_headers\":[\"s1\"],\"stamps\":{\"s1\":\"v1\"}}"));
    free(h);
    /* the link's unknown option is carried in the embedded callback */
    assert_non_null(strstr(plan.steps[0].msg.body, "\"options\": {\"future_opt\": 2}"));
    assert_string_equal(plan.steps[0].msg.reply_to, "");
    cc_canvas_plan_deinit(&plan);
    json_decref(sig);
}

static void test_chord_size(void **state)
{
    json_t *s = json_loads(
        "{\"task\": \"celery.group\", \"subtask_type\": \"group\", \"kwargs\": {\"tasks\": ["
        "{\"task\": \"a\"},"
        "{\"subtask_type\": \"chain\", \"kwargs\": {\"tasks\": [{\"task\": \"a\"}, "
        " {\"subtask_type\": \"group\", \"kwargs\": {\"tasks\": [{\"task\": \"a\"}, {\"task\": "
        "\"b\"}]}}]}},"
        "{\"subtask_type\": \"chord\", \"kwargs\": {\"header\": [], \"body\": {\"task\": \"c\"}}}"
        "]}}",
        0, NULL);

    (void)state;
    assert_non_null(s);
    assert_int_equal(cc_canvas_chord_size(s), 1 + 2 + 1);
    json_decref(s);
}

/* ---- builders: the dicts Python's add.s(), chain(), group(), chord() serialise to ------- */

static void expect_built(json_t *got, const char *python_json)
{
    json_t *want = json_loads(python_json, 0, NULL);

    assert_non_null(want);
    assert_non_null(got);
    g_bad = 0;
    expect_json("built", want, got);
    assert_int_equal(g_bad, 0);
    json_decref(want);
    json_decref(got);
}

#define PYS(t, a)                                                                                  \
    "{\"task\": \"" t "\", \"args\": " a                                                           \
    ", \"kwargs\": {}, \"options\": {}, \"subtask_type\": null, \"immutable\": false}"
#define PYSI(t, a)                                                                                 \
    "{\"task\": \"" t "\", \"args\": " a                                                           \
    ", \"kwargs\": {}, \"options\": {}, \"subtask_type\": null, \"immutable\": true}"

static json_t *S(const char *task, json_t *args)
{
    return cc_sig(task, args, NULL);
}

static void test_builders(void **state)
{
    json_t *x;

    (void)state;
    expect_built(S("app.add", json_pack("[i,i]", 2, 2)), PYS("app.add", "[2, 2]"));
    expect_built(
        cc_chain(S("app.add", json_pack("[i,i]", 2, 2)), S("app.mul", json_pack("[i]", 4)), NULL),
        "{\"task\": \"celery.chain\", \"args\": [], \"kwargs\": {\"tasks\": [" PYS(
            "app.add",
            "[2, 2]") ", " PYS("app.mul",
                               "[4]") "]}, \"options\": {}, "
                                      "\"subtask_type\": \"chain\", \"immutable\": false}");
    expect_built(
        cc_chain(cc_chain(S("a", NULL), S("b", NULL), NULL), S("c", NULL), NULL),
        "{\"task\": \"celery.chain\", \"args\": [], \"kwargs\": {\"tasks\": [" PYS(
            "a", "[]") ", " PYS("b", "[]") ", " PYS("c", "[]") "]}, \"options\": {}, "
                                                               "\"subtask_type\": \"chain\", "
                                                               "\"immutable\": false}");
    expect_built(
        cc_group(S("app.add", json_pack("[i,i]", 1, 1)), S("app.add", json_pack("[i,i]", 2, 2)),
                 NULL),
        "{\"task\": \"celery.group\", \"args\": [], \"kwargs\": {\"tasks\": [" PYS(
            "app.add",
            "[1, 1]") ", " PYS("app.add",
                               "[2, 2]") "]}, \"options\": {}, "
                                         "\"subtask_type\": \"group\", \"immutable\": false}");
    /* chord(list) and chord(group(...)) serialise the same: header as a list */
    expect_built(
        cc_chord(cc_group(S("app.add", json_pack("[i,i]", 1, 1)),
                          S("app.add", json_pack("[i,i]", 2, 2)), NULL),
                 S("app.xsum", NULL)),
        "{\"task\": \"celery.chord\", \"args\": [], \"kwargs\": {\"kwargs\": {}, \"header\": "
        "[" PYS("app.add", "[1, 1]") ", " PYS("app.add", "[2, 2]") "], \"body\": " PYS(
            "app.xsum", "[]") "}, \"options\": {}, \"subtask_type\": \"chord\", "
                              "\"immutable\": false}");
    expect_built(
        cc_chord(json_pack("[o]", S("app.add", json_pack("[i,i]", 1, 1))),
                 cc_sig_link(S("app.xsum", NULL), S("app.mul", json_pack("[i]", 3)))),
        "{\"task\": \"celery.chord\", \"args\": [], \"kwargs\": {\"kwargs\": {}, \"header\": "
        "[" PYS("app.add", "[1, 1]") "], \"body\": {\"task\": \"app.xsum\", \"args\": [], "
                                     "\"kwargs\": {}, \"options\": {\"link\": [" PYS(
                                         "app.mul",
                                         "[3]") "]}, \"subtask_type\": null, \"immutable\": "
                                                "false}}, \"options\": {}, \"subtask_type\": "
                                                "\"chord\", \"immutable\": false}");
    x = S("app.add", json_pack("[i,i]", 1, 1));
    x = cc_sig_link(x, S("app.mul", json_pack("[i]", 2)));
    x = cc_sig_link_error(x, cc_sig_immutable(S("app.echo", NULL)));
    x = cc_sig_set(x, "queue", json_string("q"));
    x = cc_sig_set(x, "countdown", json_integer(5));
    expect_built(x, "{\"task\": \"app.add\", \"args\": [1, 1], \"kwargs\": {}, \"options\": "
                    "{\"link\": [" PYS("app.mul", "[2]") "], \"link_error\": [" PYSI(
                        "app.echo", "[]") "], \"queue\": \"q\", \"countdown\": 5}, "
                                          "\"subtask_type\": null, \"immutable\": false}");
    /* group.link: an immutable copy on the first member; link_error on every member */
    x = cc_group(S("app.add", json_pack("[i,i]", 1, 1)), S("app.add", json_pack("[i,i]", 2, 2)),
                 NULL);
    x = cc_sig_link(x, S("app.echo", NULL));
    x = cc_sig_link_error(x, S("app.echo", NULL));
    expect_built(
        x, "{\"task\": \"celery.group\", \"args\": [], \"kwargs\": {\"tasks\": [{\"task\": "
           "\"app.add\", \"args\": [1, 1], \"kwargs\": {}, \"options\": {\"link\": [" PYSI(
               "app.echo", "[]") "], \"link_error\": [" PYS("app.echo",
                                                            "[]") "]}, \"subtask_type\": null, "
                                                                  "\"immutable\": false}, "
                                                                  "{\"task\": \"app.add\", "
                                                                  "\"args\": [2, 2], \"kwargs\": "
                                                                  "{}, \"options\": "
                                                                  "{\"link_error\": [" PYS(
                                                                      "app.echo",
                                                                      "[]") "]}, "
                                                                            "\"subtask_type\": "
                                                                            "null, "
                                                                            "\"immutable\": "
                                                                            "false}]}, "
                                                                            "\"options\": {}, "
                                                                            "\"subtask_type\": "
                                                                            "\"group\", "
                                                                            "\"immutable\": "
                                                                            "false}");
    expect_built(cc_sig_immutable(S("app.mul", json_pack("[i,i]", 5, 6))),
                 PYSI("app.mul", "[5, 6]"));
    /* the workflows the Python worker built in a task (py-built-*.json) */
    {
        const char *files[] = {"py-built-chain-group-middle.json", "py-built-chord.json",
                               "py-built-group.json"};
        json_t *mine[3];

        mine[0] = cc_chain(
            S("app.add", json_pack("[i,i]", 2, 2)),
            cc_group(S("app.mul", json_pack("[i]", 2)), S("app.mul", json_pack("[i]", 3)), NULL),
            S("app.xsum", NULL), NULL);
        mine[1] = cc_chord(json_pack("[oo]", S("app.add", json_pack("[i,i]", 1, 1)),
                                     S("app.add", json_pack("[i,i]", 2, 2))),
                           S("app.xsum", NULL));
        mine[2] = cc_group(S("app.add", json_pack("[i,i]", 1, 1)),
                           S("app.mul", json_pack("[i,i]", 2, 2)), NULL);
        for (int i = 0; i < 3; i++) {
            char path[1024];
            json_t *c;

            snprintf(path, sizeof(path), "%s/canvas/%s", CC_TEST_DATA_DIR, files[i]);
            c = json_load_file(path, JSON_PRESERVE_ORDER, NULL);
            assert_non_null(c);
            g_bad = 0;
            expect_json(files[i], json_object_get(c, "sig"), mine[i]);
            assert_int_equal(g_bad, 0);
            json_decref(c);
            json_decref(mine[i]);
        }
    }
    /* a | b rules: chain(group, task) is a chord; chain(chord, task) extends the body */
    x = cc_chain(cc_group(S("a", NULL), S("b", NULL), NULL), S("c", NULL), NULL);
    assert_string_equal(json_string_value(json_object_get(x, "subtask_type")), "chord");
    json_decref(x);
    x = cc_chain(S("z", NULL), cc_chord(json_pack("[o]", S("a", NULL)), S("b", NULL)), S("c", NULL),
                 NULL);
    assert_string_equal(
        json_string_value(json_object_get(
            json_object_get(
                json_object_get(
                    json_array_get(json_object_get(json_object_get(x, "kwargs"), "tasks"), 1),
                    "kwargs"),
                "body"),
            "subtask_type")),
        "chain");
    json_decref(x);
    /* NULL in, NULL out; bad args released */
    assert_null(cc_sig(NULL, json_array(), NULL));
    assert_null(cc_sig("t", json_object(), NULL));
    assert_null(cc_sig_set(NULL, "queue", json_string("q")));
    assert_null(cc_sig_link(NULL, S("t", NULL)));
    assert_null(cc_chord(S("t", NULL), NULL));
}

/* ---- every input node of every golden case replaced by a wrong type: OK or CC_EINVAL --- */

static size_t count_nodes(const json_t *v)
{
    size_t n = 1, i;
    const char *k;
    json_t *x;

    if (json_is_object(v))
        json_object_foreach((json_t *)v, k, x) n += count_nodes(x);
    else if (json_is_array(v))
        json_array_foreach(v, i, x) n += count_nodes(x);
    return n;
}

/* Replace the idx-th node (pre-order, root = 0) of *root by `with`. Returns true when done. */
static bool replace_node(json_t **root, size_t *idx, json_t *with)
{
    const char *k;
    json_t *x;
    size_t i;

    if (*idx == 0) {
        json_decref(*root);
        *root = json_incref(with);
        return true;
    }
    (*idx)--;
    if (json_is_object(*root)) {
        json_object_foreach(*root, k, x)
        {
            json_t *c = json_incref(x);
            bool done = replace_node(&c, idx, with);

            if (done) {
                json_object_set_new(*root, k, c);
                return true;
            }
            json_decref(c);
        }
    } else if (json_is_array(*root)) {
        json_array_foreach(*root, i, x)
        {
            json_t *c = json_incref(x);
            bool done = replace_node(&c, idx, with);

            if (done) {
                json_array_set_new(*root, i, c);
                return true;
            }
            json_decref(c);
        }
    }
    return false;
}

static void test_mutations(void **state)
{
    const char *inputs[] = {"sig", "embed", "errbacks", "body", "extra", "prepend"};
    json_t *bad[5];
    char dir[1024];
    DIR *d;
    struct dirent *e;
    long runs = 0;

    (void)state;
    bad[0] = json_integer(5);
    bad[1] = json_string("x");
    bad[2] = json_null();
    bad[3] = json_array();
    bad[4] = json_object();
    snprintf(dir, sizeof(dir), "%s/canvas", CC_TEST_DATA_DIR);
    d = opendir(dir);
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        char path[2048];
        json_t *c;
        size_t l = strlen(e->d_name);

        if (l < 6 || strcmp(e->d_name + l - 5, ".json") != 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        c = json_load_file(path, JSON_PRESERVE_ORDER, NULL);
        assert_non_null(c);
        for (size_t in = 0; in < sizeof(inputs) / sizeof(inputs[0]); in++) {
            json_t *orig = json_object_get(c, inputs[in]);
            size_t n;

            if (orig == NULL || json_is_null(orig))
                continue;
            json_incref(orig);
            n = count_nodes(orig);
            for (size_t node = 0; node < n; node++) {
                for (int b = 0; b < 5; b++) {
                    json_t *mut = json_deep_copy(orig);
                    size_t idx = node;
                    struct cc_canvas_plan plan;
                    struct cc_err err = {0};
                    int rc;

                    replace_node(&mut, &idx, bad[b]);
                    json_object_set_new(c, inputs[in], mut);
                    rc = run_case(c, &plan, &err);
                    cc_canvas_plan_deinit(&plan);
                    runs++;
                    if (rc != CC_OK && (rc != CC_EINVAL || err.msg[0] == '\0'))
                        fail_msg("%s %s node %zu -> %d: rc %d (%s)", e->d_name, inputs[in], node, b,
                                 rc, err.msg);
                }
            }
            json_object_set_new(c, inputs[in], orig);
        }
        json_decref(c);
    }
    closedir(d);
    for (int b = 0; b < 5; b++)
        json_decref(bad[b]);
    print_message("%ld mutated inputs\n", runs);
    assert_true(runs > 1000);
}

/* ---- allocation failures: every jansson allocation of a few big cases fails in turn ---- */

static long alloc_budget = -1; /* allocations left before failing; -1 = unlimited */
static long alloc_failed;

static void *failing_malloc(size_t n)
{
    if (alloc_budget == 0) {
        alloc_failed++;
        return NULL;
    }
    if (alloc_budget > 0)
        alloc_budget--;
    return malloc(n);
}

static void test_alloc_failure(void **state)
{
    const char *files[] = {"py-chord-of-chains.json",          "py-group-of-chords.json",
                           "py-callbacks-group-and-task.json", "py-errbacks-several.json",
                           "py-chord-header-complex.json",     "shared-chain-step1.json"};

    (void)state;
    for (size_t fi = 0; fi < sizeof(files) / sizeof(files[0]); fi++) {
        char path[1024];
        json_t *c;
        bool completed = false;

        snprintf(path, sizeof(path), "%s/canvas/%s", CC_TEST_DATA_DIR, files[fi]);
        c = json_load_file(path, JSON_PRESERVE_ORDER, NULL);
        assert_non_null(c);
        for (long n = 0; !completed && n < 20000; n++) {
            struct cc_canvas_plan plan;
            struct cc_err err = {0};
            int rc;

            alloc_failed = 0;
            alloc_budget = n;
            json_set_alloc_funcs(failing_malloc, free);
            rc = run_case(c, &plan, &err);
            cc_canvas_plan_deinit(&plan);
            json_set_alloc_funcs(malloc, free);
            alloc_budget = -1;
            completed = alloc_failed == 0;
            if (completed ? rc != CC_OK : (rc != CC_ENOMEM && rc != CC_EINVAL))
                fail_msg("%s alloc %ld: rc %d: %s", files[fi], n, rc, err.msg);
        }
        assert_true(completed);
        json_decref(c);
    }
    /* the builders under the same failures: NULL, nothing leaked (LSan) */
    for (long n = 0; n < 400; n++) {
        json_t *w;

        alloc_budget = n;
        alloc_failed = 0;
        json_set_alloc_funcs(failing_malloc, free);
        w = cc_chain(cc_sig_link(S("a", json_pack("[i]", 1)), S("b", NULL)),
                     cc_group(S("c", NULL), cc_sig_immutable(S("d", NULL)), NULL),
                     cc_sig_link_error(S("e", NULL), S("f", NULL)),
                     cc_chord(json_pack("[o]", S("g", NULL)),
                              cc_sig_set(S("h", NULL), "queue", json_string("q"))),
                     S("i", NULL), NULL);
        json_set_alloc_funcs(malloc, free);
        alloc_budget = -1;
        if (alloc_failed == 0)
            assert_non_null(w);
        json_decref(w);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_stamps_and_routing),
        cmocka_unit_test(test_chord_size),
        cmocka_unit_test(test_builders),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_alloc_failure),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
