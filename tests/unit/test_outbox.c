/* Unit tests for the executor's outbox (src/worker/outbox.c) and the task API hooks behind
 * cc_task_send / cc_task_update_state (src/worker/taskrun.c). No services: publishing is tested
 * against a closed port (bounded failure); the integration suite publishes for real
 * (tests/integration/test_canvas_exec.py). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "outbox.h"
#include "taskrun.h"
#include "util.h"

/* A loopback port nobody listens on: bind, read the port, close. */
static int closed_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static void test_outbox_empty_plan_and_backend_steps_without_broker(void **state)
{
    struct cc_config cfg;
    struct cc_outbox ob;
    struct cc_canvas_plan plan;
    struct cc_canvas_step step;
    struct cc_backend *be = cc_backend_none_new();
    struct cc_err err = {0};
    char url[] = "amqp://guest:guest@127.0.0.1:1//", gid[] = "g1";

    (void)state;
    memset(&cfg, 0, sizeof(cfg));
    cfg.broker_url = url;
    cfg.connect_timeout_s = 1;
    cc_outbox_init(&ob, &cfg);
    memset(&plan, 0, sizeof(plan));
    assert_int_equal(cc_outbox_run(&ob, be, &plan, &err), CC_OK);
    /* Backend steps never open the broker connection. */
    memset(&step, 0, sizeof(step));
    step.kind = CC_CANVAS_CHORD_SIZE;
    step.group_id = gid;
    step.chord_size = 3;
    plan.steps = &step;
    plan.n = plan.cap = 1;
    assert_int_equal(cc_outbox_run(&ob, be, &plan, &err), CC_OK);
    step.kind = CC_CANVAS_SAVE_GROUP;
    assert_int_equal(cc_outbox_run(&ob, be, &plan, &err), CC_OK);
    assert_false(ob.conn.is_channel_open);
    assert_int_equal(ob.n_published, 0);
    cc_outbox_close(&ob);
    cc_backend_free(be);
}

static void test_outbox_publish_fails_bounded_when_broker_down(void **state)
{
    struct cc_config cfg;
    struct cc_outbox ob;
    struct cc_canvas_plan plan;
    struct cc_canvas_step step;
    struct cc_err err = {0};
    char url[64], ex[] = "", rk[] = "celery", name[] = "demo.add";
    char tid[] = "11111111-2222-4333-8444-555555555555";
    int64_t t0;

    (void)state;
    snprintf(url, sizeof(url), "amqp://guest:guest@127.0.0.1:%d//", closed_port());
    memset(&cfg, 0, sizeof(cfg));
    cfg.broker_url = url;
    cfg.connect_timeout_s = 1;
    cc_outbox_init(&ob, &cfg);
    memset(&step, 0, sizeof(step));
    step.kind = CC_CANVAS_PUBLISH;
    step.exchange = ex;
    step.routing_key = rk;
    step.task = name;
    step.task_id = tid;
    memset(&plan, 0, sizeof(plan));
    plan.steps = &step;
    plan.n = plan.cap = 1;
    t0 = cc_mono_us();
    assert_int_not_equal(cc_outbox_run(&ob, NULL, &plan, &err), CC_OK);
    /* Four attempts 0, 0.2, 0.4, 0.6 s apart on a refused port: well under the budget. */
    assert_true(cc_mono_us() - t0 < (int64_t)CC_OUTBOX_BUDGET_MS * 1000);
    assert_non_null(strstr(err.msg, "publish demo.add[11111111-2222-4333-8444-555555555555]"));
    assert_non_null(strstr(err.msg, "to celery"));
    assert_false(ob.conn.is_channel_open);
    cc_outbox_close(&ob);
}

static void test_outbox_ctx_parent_root_origin(void **state)
{
    struct cc_config cfg;
    struct cc_outbox ob;
    struct cc_canvas_ctx ctx;
    struct cc_task_request req = {.id = "child", .root_id = "root", .group_index = -1};
    char id[37];

    (void)state;
    memset(&cfg, 0, sizeof(cfg));
    cc_outbox_init(&ob, &cfg);
    cc_outbox_ctx(&ob, &req, &ctx);
    assert_string_equal(ctx.parent_id, "child");
    assert_string_equal(ctx.root_id, "root");
    assert_string_equal(ctx.default_queue, "celery");
    assert_int_equal(ctx.priority, -1);
    assert_int_equal(strncmp(ctx.origin, "gen", 3), 0);
    assert_int_equal(strlen(ctx.reply_to), 36);
    ctx.new_id(id, ctx.new_id_arg);
    assert_int_equal(strlen(id), 36);
    req.root_id = NULL; /* a first task: its own id is the root */
    cc_outbox_ctx(&ob, &req, &ctx);
    assert_string_equal(ctx.root_id, "child");
}

/* ---- Task API hooks ------------------------------------------------------------------- */

struct hook_log {
    int n_send, n_update;
    char state[32];
    char *meta;
};

static int fake_send(void *ud, const struct cc_task_request *req, const json_t *sig,
                     json_t *children, char *out_id, struct cc_err *err)
{
    struct hook_log *h = ud;

    (void)err;
    h->n_send++;
    assert_string_equal(req->id, "t1");
    assert_string_equal(json_string_value(json_object_get(sig, "task")), "demo.add");
    json_array_append_new(children, json_pack("[[s,n],n]", "sent-1"));
    if (out_id != NULL)
        snprintf(out_id, 37, "sent-1");
    return CC_OK;
}

static int fake_update(void *ud, const struct cc_task_request *req, const char *state,
                       const json_t *meta, const json_t *children, struct cc_err *err)
{
    struct hook_log *h = ud;

    (void)req;
    (void)err;
    h->n_update++;
    snprintf(h->state, sizeof(h->state), "%s", state);
    free(h->meta);
    h->meta = json_dumps(meta, JSON_COMPACT | JSON_SORT_KEYS);
    assert_true(json_is_array(children));
    return CC_OK;
}

static int task_sends(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                      json_t **result)
{
    char id[37];
    int rc;

    (void)args;
    (void)kwargs;
    rc = cc_task_update_state(ctx, "PROGRESS", json_pack("{s:i}", "current", 1));
    if (rc != CC_OK)
        return rc;
    if (cc_task_update_state(ctx, "", NULL) != CC_EINVAL)
        return CC_EIO;
    rc = cc_task_send(ctx, json_pack("{s:s,s:[i,i]}", "task", "demo.add", "args", 1, 2), id);
    if (rc != CC_OK)
        return rc;
    if (cc_task_send(ctx, json_string("not a sig"), NULL) != CC_EINVAL)
        return CC_EIO;
    *result = json_string(id);
    return CC_OK;
}

static const struct cc_task_entry sends_entry = {.name = "t.sends", .run = task_sends};

static void test_task_send_and_update_state_use_hooks(void **state)
{
    struct cc_task_request req = {.id = "t1", .task = "t.sends", .group_index = -1};
    struct hook_log log = {0};
    const struct cc_task_hooks hooks = {.send = fake_send, .update_state = fake_update, .ud = &log};
    struct cc_task_outcome out;

    (void)state;
    cc_taskrun_set_hooks(&hooks);
    assert_int_equal(cc_taskrun_invoke(&sends_entry, &req, NULL, NULL, &out), CC_OK);
    cc_taskrun_set_hooks(NULL);
    assert_int_equal(log.n_send, 1);
    assert_int_equal(log.n_update, 1);
    assert_string_equal(log.state, "PROGRESS");
    assert_string_equal(log.meta, "{\"current\":1}");
    assert_string_equal(json_string_value(out.result), "sent-1");
    /* Celery's request.children: the sent result goes into the stored meta. */
    assert_non_null(out.children);
    assert_int_equal(json_array_size(out.children), 1);
    free(log.meta);
    cc_taskrun_outcome_deinit(&out);
}

static void test_task_send_without_executor_is_unsupported(void **state)
{
    struct cc_task_request req = {.id = "t1", .task = "t.sends", .group_index = -1};
    struct cc_task_outcome out;

    (void)state;
    cc_taskrun_set_hooks(NULL);
    /* update_state fails first with CC_EUNSUPP: an unknown status becomes RuntimeError. */
    assert_int_equal(cc_taskrun_invoke(&sends_entry, &req, NULL, NULL, &out), CC_TASK_FAILED);
    assert_null(out.children);
    cc_taskrun_outcome_deinit(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outbox_empty_plan_and_backend_steps_without_broker),
        cmocka_unit_test(test_outbox_publish_fails_bounded_when_broker_down),
        cmocka_unit_test(test_outbox_ctx_parent_root_origin),
        cmocka_unit_test(test_task_send_and_update_state_use_hooks),
        cmocka_unit_test(test_task_send_without_executor_is_unsupported),
    };

    return cmocka_run_group_tests_name("outbox", tests, NULL, NULL);
}
