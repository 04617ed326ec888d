/* Unit tests for src/worker/pool.c with real forked children and a backend that appends every
 * stored meta to a file (the child's stores happen in another process): job records with
 * U+0000 in strings, a job record the child cannot run, respawn after a failed fork, the
 * bounded warm stop, soft and hard time limits, max_tasks_per_child, the threads and solo
 * pools, and resizing (pool_grow / pool_shrink). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "config.h"
#include "pool.h"
#include "util.h"

/* ---- A backend that writes "<meta>\n" lines to a file ------------------------------------ */

struct file_backend {
    struct cc_backend base; /* first: the ops cast */
    char path[64];
};

static int file_store(struct cc_backend *b, const char *task_id, const char *meta, size_t len,
                      struct cc_err *err)
{
    struct file_backend *fb = (struct file_backend *)b;
    FILE *f = fopen(fb->path, "a");

    (void)task_id;
    if (f == NULL)
        return cc_err_set(err, CC_EBACKEND, "fopen: %s", strerror(errno));
    fwrite(meta, 1, len, f);
    fputc('\n', f);
    fclose(f);
    return CC_OK;
}

static void file_after_fork(struct cc_backend *b)
{
    (void)b;
}

static void file_destroy(struct cc_backend *b)
{
    (void)b;
}

static const struct cc_backend_ops file_ops = {
    .name = "file",
    .store = file_store,
    .after_fork = file_after_fork,
    .destroy = file_destroy,
};

/* ---- Fixture ------------------------------------------------------------------------------ */

struct fix {
    struct cc_config cfg;
    struct file_backend be;
    struct cc_broker broker;
    struct cc_pool pool;
};

static int setup(void **state)
{
    struct fix *f = calloc(1, sizeof(*f));
    char *argv[] = {(char *)"worker", NULL};
    char *env[] = {NULL};
    struct cc_err err = {0};
    struct cc_pool_opts o = {0};
    int fd;

    assert_int_equal(cc_config_load(&f->cfg, CC_CMD_WORKER, 1, argv, env, &err), CC_OK);
    f->be.base.ops = &file_ops;
    snprintf(f->be.path, sizeof(f->be.path), "/tmp/cc_test_pool.XXXXXX");
    fd = mkstemp(f->be.path);
    assert_true(fd >= 0);
    close(fd);
    f->broker.fd = -1;
    o.n_children = 1;
    o.cfg = &f->cfg;
    o.hostname = "celery@unit";
    o.backend = &f->be.base;
    o.broker = &f->broker;
    assert_int_equal(cc_pool_start(&f->pool, &o, &err), CC_OK);
    *state = f;
    return 0;
}

/* The same with another pool kind (threads: 2 threads, each opening the "none" backend). */
static int setup_kind(void **state, bool is_threads, bool is_solo, int max_tasks_per_child)
{
    struct fix *f = calloc(1, sizeof(*f));
    char *argv[] = {(char *)"worker", NULL};
    char *env[] = {NULL};
    struct cc_err err = {0};
    struct cc_pool_opts o = {0};
    int fd;

    assert_int_equal(cc_config_load(&f->cfg, CC_CMD_WORKER, 1, argv, env, &err), CC_OK);
    f->cfg.max_tasks_per_child = max_tasks_per_child; /* children read their copy */
    f->be.base.ops = &file_ops;
    snprintf(f->be.path, sizeof(f->be.path), "/tmp/cc_test_pool.XXXXXX");
    fd = mkstemp(f->be.path);
    assert_true(fd >= 0);
    close(fd);
    f->broker.fd = -1;
    o.n_children = is_threads ? 2 : 1;
    o.cfg = &f->cfg;
    o.hostname = "celery@unit";
    o.backend = &f->be.base;
    o.broker = &f->broker;
    o.is_threads = is_threads;
    o.is_solo = is_solo;
    assert_int_equal(cc_pool_start(&f->pool, &o, &err), CC_OK);
    *state = f;
    return 0;
}

static int setup_threads(void **state)
{
    return setup_kind(state, true, false, 0);
}

static int setup_solo(void **state)
{
    return setup_kind(state, false, true, 0);
}

static int setup_max_tasks_1(void **state)
{
    return setup_kind(state, false, false, 1);
}

static double limit_hard_s, limit_soft_s; /* the message's timelimit for run_ticking */

static int teardown(void **state)
{
    struct fix *f = *state;

    limit_hard_s = limit_soft_s = 0;

    cc_pool_fork = fork;
    cc_pool_stop(&f->pool, true, 1000, 0, NULL, NULL);
    unlink(f->be.path);
    cc_config_deinit(&f->cfg);
    free(f);
    return 0;
}

static char *slurp(const char *path)
{
    FILE *fp = fopen(path, "r");
    char *buf = calloc(1, 1 << 16);
    size_t n;

    assert_non_null(fp);
    n = fread(buf, 1, (1 << 16) - 1, fp);
    buf[n] = '\0';
    fclose(fp);
    return buf;
}

/* Dispatch task(args) to slot 0 and wait up to 10 s for its report. */
static struct cc_pool_report run_job(struct fix *f, const char *task, json_t *args)
{
    struct cc_request r;
    struct cc_pool_report rep;
    struct cc_err err = {0};
    int64_t deadline = cc_mono_us() + 10 * 1000000;
    int n = 0;

    memset(&r, 0, sizeof(r));
    r.msg.protocol = 2;
    r.msg.id = (char *)"6f0c2bb0-0000-4000-8000-000000000001";
    r.msg.task = (char *)task;
    r.msg.group_index = -1;
    r.msg.args = args;
    r.msg.kwargs = json_object();
    assert_int_equal(cc_pool_idle(&f->pool), 0);
    assert_int_equal(cc_pool_dispatch(&f->pool, 0, &r, 7, &err), CC_OK);
    while (n == 0 && cc_mono_us() < deadline) {
        struct pollfd pfd = {.fd = cc_pool_report_fd(&f->pool), .events = POLLIN};

        poll(&pfd, 1, 100);
        n = cc_pool_read_reports(&f->pool, &rep, 1);
    }
    json_decref(r.msg.args);
    json_decref(r.msg.kwargs);
    assert_int_equal(n, 1);
    assert_int_equal(rep.seq, 7);
    return rep;
}

/* ---- Tests -------------------------------------------------------------------------------- */

/* Review finding 1: the master accepts "\u0000" in strings (JSON_ALLOW_NUL); the child must
 * parse its job record the same way and run the task. */
static void test_pool_nul_in_string_arg_runs(void **state)
{
    struct fix *f = *state;
    struct cc_pool_report rep =
        run_job(f, "t.integration.tasks.identity", json_pack("[s#]", "a\0b", (size_t)3));
    char *stored = slurp(f->be.path);

    assert_int_equal(rep.status, CC_OK);
    assert_int_equal(rep.store_failed, 0);
    assert_non_null(strstr(stored, "\"status\": \"SUCCESS\""));
    assert_non_null(strstr(stored, "\"result\": \"a\\u0000b\""));
    free(stored);
}

/* Review finding 1: a record the child cannot run (here: a task the child does not know)
 * stores FAILURE RuntimeError("celeryc internal error: ...") for the task id, so the
 * client's get() raises instead of waiting forever. */
static void test_pool_corrupt_job_record_stores_failure(void **state)
{
    struct fix *f = *state;
    struct cc_pool_report rep = run_job(f, "no.such.task", json_pack("[]"));
    char *stored = slurp(f->be.path);

    assert_int_equal(rep.status, CC_TASK_FAILED);
    assert_int_equal(rep.store_failed, 0);
    assert_non_null(strstr(stored, "\"status\": \"FAILURE\""));
    assert_non_null(strstr(stored, "\"exc_type\": \"RuntimeError\""));
    assert_non_null(strstr(stored, "celeryc internal error: corrupt job record"));
    assert_non_null(strstr(stored, "\"task_id\": \"6f0c2bb0-0000-4000-8000-000000000001\""));
    free(stored);
}

static pid_t failing_fork(void)
{
    errno = EAGAIN;
    return -1;
}

/* Reap until no child is alive (at most 5 s). */
static void reap_all(struct fix *f)
{
    int64_t deadline = cc_mono_us() + 5 * 1000000;

    while (cc_pool_alive(&f->pool) > 0 && cc_mono_us() < deadline) {
        usleep(10000);
        cc_pool_reap(&f->pool, true, NULL, NULL);
    }
    assert_int_equal(cc_pool_alive(&f->pool), 0);
}

/* Review finding 7: a respawn whose fork() fails is retried on a timer, not given up. */
static void test_pool_respawn_retried_after_failed_fork(void **state)
{
    struct fix *f = *state;
    int64_t at;

    kill(f->pool.kids[0].pid, SIGKILL);
    cc_pool_fork = failing_fork;
    reap_all(f);
    at = cc_pool_respawn_at_us(&f->pool);
    assert_true(at > 0);
    assert_int_equal(cc_pool_idle(&f->pool), -1);
    cc_pool_respawn(&f->pool, at - 1); /* not due yet */
    assert_int_equal(cc_pool_respawn_at_us(&f->pool), at);
    cc_pool_respawn(&f->pool, at); /* due, fork still fails: rescheduled */
    assert_int_equal(cc_pool_alive(&f->pool), 0);
    assert_int_equal(cc_pool_respawn_at_us(&f->pool),
                     at + (int64_t)CC_POOL_RESPAWN_INTERVAL_MS * 1000);
    cc_pool_fork = fork;
    cc_pool_respawn(&f->pool, cc_pool_respawn_at_us(&f->pool));
    assert_int_equal(cc_pool_alive(&f->pool), 1);
    assert_int_equal(cc_pool_respawn_at_us(&f->pool), 0);
    assert_int_equal(cc_pool_idle(&f->pool), 0);
}

/* Start demo.sleep(60) in the child without waiting for it. */
static void start_hung_task(struct fix *f)
{
    struct cc_request r;
    struct cc_err err = {0};

    memset(&r, 0, sizeof(r));
    r.msg.protocol = 2;
    r.msg.id = (char *)"6f0c2bb0-0000-4000-8000-000000000002";
    r.msg.task = (char *)"demo.sleep";
    r.msg.group_index = -1;
    r.msg.args = json_pack("[i]", 60);
    r.msg.kwargs = json_object();
    assert_int_equal(cc_pool_dispatch(&f->pool, 0, &r, 9, &err), CC_OK);
    json_decref(r.msg.args);
    json_decref(r.msg.kwargs);
    usleep(100000);
}

/* Review finding 5: a warm stop (after broker loss) is bounded: a hung task is stopped
 * cold (SIGTERM, then SIGKILL) once max_wait_ms has passed. */
static void test_pool_warm_stop_is_bounded(void **state)
{
    struct fix *f = *state;
    int64_t t0;

    start_hung_task(f);
    t0 = cc_mono_us();
    cc_pool_stop(&f->pool, false, 500, 300, NULL, NULL);
    assert_true(cc_mono_us() - t0 < 3 * 1000000);
    assert_null(f->pool.kids);
}

static int n_asked;

static bool cold_on_third_call(void *ud)
{
    (void)ud;
    return ++n_asked >= 3;
}

/* Review finding 5: while waiting without a limit, the caller's "cold now" (a second signal)
 * ends the wait. */
static void test_pool_warm_stop_turns_cold_on_request(void **state)
{
    struct fix *f = *state;
    int64_t t0;

    start_hung_task(f);
    n_asked = 0;
    t0 = cc_mono_us();
    cc_pool_stop(&f->pool, false, 500, -1, cold_on_third_call, NULL);
    assert_true(cc_mono_us() - t0 < 3 * 1000000);
    assert_int_equal(n_asked, 3);
    assert_null(f->pool.kids);
}

/* ---- Time limits, recycling, other pools --------------------------------------------- */

static struct cc_request limit_req;
static int64_t limit_deadline_us; /* cc_pool_deadline_us right after the dispatch */

/* Dispatch task(args) to slot 0 as seq 11, keeping the request alive (the pool borrows it
 * until the report), and wait up to 10 s for the report while ticking the time limits. */
static struct cc_pool_report run_ticking(struct fix *f, const char *task, json_t *args)
{
    struct cc_pool_report rep;
    struct cc_err err = {0};
    int64_t deadline = cc_mono_us() + 10 * 1000000;
    int n = 0;

    memset(&limit_req, 0, sizeof(limit_req));
    limit_req.msg.protocol = 2;
    limit_req.msg.id = (char *)"6f0c2bb0-0000-4000-8000-000000000003";
    limit_req.msg.task = (char *)task;
    limit_req.msg.group_index = -1;
    limit_req.msg.args = args;
    limit_req.msg.kwargs = json_object();
    limit_req.msg.time_limit_s = limit_hard_s;
    limit_req.msg.soft_time_limit_s = limit_soft_s;
    assert_int_equal(cc_pool_idle(&f->pool), 0);
    assert_int_equal(cc_pool_dispatch(&f->pool, 0, &limit_req, 11, &err), CC_OK);
    limit_deadline_us = cc_pool_deadline_us(&f->pool);
    while (n == 0 && cc_mono_us() < deadline) {
        struct pollfd pfd = {.fd = cc_pool_report_fd(&f->pool), .events = POLLIN};

        cc_pool_tick(&f->pool, cc_mono_us());
        poll(&pfd, 1, 20);
        n = cc_pool_read_reports(&f->pool, &rep, 1);
    }
    json_decref(limit_req.msg.args);
    json_decref(limit_req.msg.kwargs);
    assert_int_equal(n, 1);
    assert_int_equal(rep.seq, 11);
    assert_int_equal(f->pool.n_busy, 0);
    return rep;
}

static int n_lost;

static void count_lost(void *ud, int slot, uint32_t seq, int wstatus)
{
    (void)ud, (void)slot, (void)seq, (void)wstatus;
    n_lost++;
}

/* Reap until slot 0 runs a process other than `old` (5 s at most). */
static void wait_replaced(struct fix *f, pid_t old)
{
    int64_t deadline = cc_mono_us() + 5 * 1000000;

    while ((f->pool.kids[0].pid == old || f->pool.kids[0].pid == 0) && cc_mono_us() < deadline) {
        usleep(10000);
        cc_pool_reap(&f->pool, true, count_lost, NULL);
    }
    assert_true(f->pool.kids[0].pid > 0 && f->pool.kids[0].pid != old);
    assert_int_equal(cc_pool_idle(&f->pool), 0);
}

static void test_pool_hard_time_limit_kills_child(void **state)
{
    struct fix *f = *state;
    pid_t pid0 = f->pool.kids[0].pid;
    struct cc_pool_report rep;

    f->cfg.time_limit_s = 0.3;
    n_lost = 0;
    rep = run_ticking(f, "demo.spin", json_pack("[i]", 30));
    assert_int_equal(rep.status, CC_POOL_TIME_LIMIT);
    assert_true(rep.time_limit_s == 0.3);
    assert_int_equal(rep.is_limit_int, 0);
    assert_int_equal(cc_pool_idle(&f->pool), -1); /* killed, not replaced yet */
    wait_replaced(f, pid0);
    assert_int_equal(n_lost, 0); /* reported once, as a time limit, not as lost */
}

static void test_pool_soft_time_limit_signals_child(void **state)
{
    struct fix *f = *state;
    struct cc_pool_report rep;
    char *stored;

    f->cfg.soft_time_limit_s = 0.2;
    rep = run_ticking(f, "demo.soft_guard", json_pack("[i]", 30));
    assert_int_equal(rep.status, CC_OK);
    rep = run_ticking(f, "demo.sleep", json_pack("[i]", 30));
    assert_int_equal(rep.status, CC_TASK_FAILED);
    stored = slurp(f->be.path);
    assert_non_null(strstr(stored, "\"result\": \"soft limit\""));
    assert_non_null(strstr(stored, "\"exc_type\": \"SoftTimeLimitExceeded\""));
    free(stored);
}

/* issue 14: a limit of 1e300 s (message or worker) overflowed int64 microseconds: the
 * Release build killed the task at once, UBSan aborted the master. Huge = no limit. */
static void test_issue_14_pool_huge_time_limit_is_no_limit(void **state)
{
    static const double huge[] = {1e300, 1e12, 9223372036854775807.0, INFINITY};
    struct fix *f = *state;
    struct cc_pool_report rep;

    for (size_t i = 0; i < sizeof(huge) / sizeof(huge[0]); i++) {
        limit_hard_s = huge[i];
        limit_soft_s = huge[i];
        rep = run_ticking(f, "demo.sleep", json_pack("[f]", 0.05));
        assert_int_equal(rep.status, CC_OK);
        assert_true(limit_deadline_us == 0); /* nothing to watch */
    }
    /* Tiny and ordinary limits still count from the hand-off. */
    limit_hard_s = 0;
    limit_soft_s = 30;
    rep = run_ticking(f, "demo.sleep", json_pack("[f]", 0.05));
    assert_int_equal(rep.status, CC_OK);
    assert_true(limit_deadline_us > cc_mono_us() + 20 * 1000000LL);
    limit_soft_s = 0;
}

static void test_pool_max_tasks_per_child_retires(void **state)
{
    struct fix *f = *state;
    pid_t pid0 = f->pool.kids[0].pid;
    struct cc_pool_report rep;

    n_lost = 0;
    rep = run_job(f, "demo.add", json_pack("[i,i]", 1, 2));
    assert_int_equal(rep.status, CC_OK);
    assert_int_equal(rep.is_exiting, 1);
    assert_int_equal(cc_pool_idle(&f->pool), -1); /* retiring: no further job */
    wait_replaced(f, pid0);
    assert_int_equal(n_lost, 0);
}

static void test_pool_threads_run_and_soft_limit(void **state)
{
    struct fix *f = *state;
    struct cc_pool_report rep;

    assert_int_equal(f->pool.n, 2);
    assert_int_equal(f->pool.kids[0].pid, getpid());
    rep = run_job(f, "demo.add", json_pack("[i,i]", 1, 2));
    assert_int_equal(rep.status, CC_OK);
    f->cfg.soft_time_limit_s = 0.2;
    f->cfg.time_limit_s = 0.1; /* not enforced by threads */
    rep = run_ticking(f, "demo.sleep", json_pack("[i]", 30));
    assert_int_equal(rep.status, CC_TASK_FAILED);
}

static void test_pool_solo_soft_limit(void **state)
{
    struct fix *f = *state;
    struct cc_pool_report rep;
    int64_t t0 = cc_mono_us();

    assert_int_equal(f->pool.n, 1);
    f->cfg.soft_time_limit_s = 0.2;
    rep = run_ticking(f, "demo.sleep", json_pack("[i]", 30));
    assert_int_equal(rep.status, CC_TASK_FAILED);
    assert_true(cc_mono_us() - t0 < 5 * 1000000);
    rep = run_ticking(f, "demo.add", json_pack("[i,i]", 1, 2));
    assert_int_equal(rep.status, CC_OK);
}

/* ---- [poolsize] pool_grow / pool_shrink ------------------------------------------------- */

static struct cc_request resize_req[4];

/* Dispatch task(args) to `slot` as seq 100 + slot without waiting. */
static void dispatch_to(struct fix *f, int slot, const char *task, json_t *args)
{
    struct cc_request *r = &resize_req[slot];
    struct cc_err err = {0};

    memset(r, 0, sizeof(*r));
    r->msg.protocol = 2;
    r->msg.id = (char *)"6f0c2bb0-0000-4000-8000-000000000004";
    r->msg.task = (char *)task;
    r->msg.group_index = -1;
    r->msg.args = args;
    r->msg.kwargs = json_object();
    assert_int_equal(cc_pool_dispatch(&f->pool, slot, r, 100u + (uint32_t)slot, &err), CC_OK);
}

static void resize_req_free(void)
{
    for (size_t i = 0; i < CC_ARRAY_LEN(resize_req); i++) {
        json_decref(resize_req[i].msg.args);
        json_decref(resize_req[i].msg.kwargs);
        memset(&resize_req[i], 0, sizeof(resize_req[i]));
    }
}

/* Read `want` reports (10 s at most), reaping as the worker does; returns how many. */
static int wait_reports(struct fix *f, struct cc_pool_report *reps, int want)
{
    int64_t deadline = cc_mono_us() + 10 * 1000000;
    int n = 0;

    while (n < want && cc_mono_us() < deadline) {
        struct pollfd pfd = {.fd = cc_pool_report_fd(&f->pool), .events = POLLIN};

        poll(&pfd, 1, 20);
        n += cc_pool_read_reports(&f->pool, reps + n, want - n);
        cc_pool_reap(&f->pool, true, count_lost, NULL);
    }
    return n;
}

/* Reap (and let pool threads leave) until `n` executors are alive (5 s at most). */
static void wait_alive(struct fix *f, int n)
{
    int64_t deadline = cc_mono_us() + 5 * 1000000;

    while (cc_pool_alive(&f->pool) != n && cc_mono_us() < deadline) {
        usleep(10000);
        cc_pool_reap(&f->pool, true, count_lost, NULL);
    }
    assert_int_equal(cc_pool_alive(&f->pool), n);
}

/* Grow 1 -> 3: new children in new slots, each runs a job; shrink 1 retires an idle one,
 * which exits and is not respawned; grow 1 takes its slot again. */
static void test_pool_grow_and_shrink_idle(void **state)
{
    struct fix *f = *state;
    struct cc_pool_report reps[3];
    struct cc_err err = {0};
    pid_t removed;

    n_lost = 0;
    assert_int_equal(cc_pool_size(&f->pool), 1);
    assert_int_equal(cc_pool_max_size(&f->pool), CC_POOL_MAX_PROCESSES);
    assert_int_equal(cc_pool_grow(&f->pool, 2, &err), CC_OK);
    assert_int_equal(cc_pool_size(&f->pool), 3);
    assert_int_equal(f->pool.n, 3);
    assert_int_equal(cc_pool_alive(&f->pool), 3);
    for (int i = 0; i < 3; i++)
        dispatch_to(f, i, "demo.add", json_pack("[i,i]", i, 1));
    assert_int_equal(cc_pool_idle(&f->pool), -1);
    assert_int_equal(wait_reports(f, reps, 3), 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(reps[i].status, CC_OK);
    resize_req_free();

    removed = f->pool.kids[2].pid;
    assert_int_equal(cc_pool_shrink(&f->pool, 1, &err), CC_OK);
    assert_int_equal(cc_pool_size(&f->pool), 2);
    assert_true(f->pool.kids[2].is_removed); /* the highest idle slot */
    wait_alive(f, 2);
    usleep(50000);
    cc_pool_reap(&f->pool, true, count_lost, NULL);
    assert_int_equal(f->pool.kids[2].pid, 0); /* not respawned */
    assert_int_equal(kill(removed, 0), -1);
    assert_int_not_equal(cc_pool_idle(&f->pool), 2);
    assert_int_equal(n_lost, 0);

    assert_int_equal(cc_pool_grow(&f->pool, 1, &err), CC_OK);
    assert_int_equal(f->pool.n, 3); /* slot 2 reused */
    assert_false(f->pool.kids[2].is_removed);
    assert_true(f->pool.kids[2].pid > 0 && f->pool.kids[2].pid != removed);
    dispatch_to(f, 2, "demo.add", json_pack("[i,i]", 2, 2));
    assert_int_equal(wait_reports(f, reps, 1), 1);
    assert_int_equal(reps[0].slot, 2);
    resize_req_free();
}

/* Shrink while every child is busy: the busy one removed finishes and reports its job (not
 * lost), then exits; it was never killed. */
static void test_pool_shrink_busy_finishes_job(void **state)
{
    struct fix *f = *state;
    struct cc_pool_report reps[2];
    struct cc_err err = {0};

    n_lost = 0;
    assert_int_equal(cc_pool_grow(&f->pool, 1, &err), CC_OK);
    dispatch_to(f, 0, "demo.sleep", json_pack("[f]", 0.3));
    dispatch_to(f, 1, "demo.sleep", json_pack("[f]", 0.3));
    assert_int_equal(cc_pool_shrink(&f->pool, 1, &err), CC_OK);
    assert_true(f->pool.kids[1].is_removed && f->pool.kids[1].is_busy);
    assert_true(f->pool.kids[1].pid > 0); /* still running its task */
    assert_int_equal(cc_pool_grow(&f->pool, 0, &err), CC_OK);
    assert_int_equal(wait_reports(f, reps, 2), 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(reps[i].status, CC_OK);
        assert_int_equal(reps[i].seq, 100u + reps[i].slot);
    }
    wait_alive(f, 1);
    assert_int_equal(n_lost, 0);
    assert_int_equal(f->pool.n_busy, 0);
    assert_int_equal(cc_pool_idle(&f->pool), 0);
    resize_req_free();
}

/* Bounds: one process stays, the maximum holds, negative counts are refused; nothing
 * changes then. A member awaiting a respawn is the first to go, and its respawn with it. */
static void test_pool_resize_bounds(void **state)
{
    struct fix *f = *state;
    struct cc_err err = {0};

    assert_int_equal(cc_pool_shrink(&f->pool, 1, &err), CC_ERANGE);
    assert_int_equal(cc_pool_grow(&f->pool, -1, &err), CC_ERANGE);
    assert_int_equal(cc_pool_shrink(&f->pool, -1, &err), CC_ERANGE);
    assert_int_equal(cc_pool_grow(&f->pool, CC_POOL_MAX_PROCESSES, &err), CC_ERANGE);
    assert_int_equal(cc_pool_size(&f->pool), 1);
    assert_int_equal(f->pool.n, 1);

    cc_pool_fork = failing_fork;
    assert_int_equal(cc_pool_grow(&f->pool, 1, &err), CC_OK); /* a member, not running */
    assert_int_equal(cc_pool_size(&f->pool), 2);
    assert_int_equal(f->pool.kids[1].pid, 0);
    assert_true(cc_pool_respawn_at_us(&f->pool) > 0);
    cc_pool_fork = fork;
    assert_int_equal(cc_pool_shrink(&f->pool, 1, &err), CC_OK);
    assert_true(f->pool.kids[1].is_removed);
    assert_false(f->pool.kids[0].is_removed);
    assert_int_equal(cc_pool_respawn_at_us(&f->pool), 0);
    assert_int_equal(cc_pool_alive(&f->pool), 1);
}

static void test_pool_solo_cannot_resize(void **state)
{
    struct fix *f = *state;
    struct cc_err err = {0};

    assert_int_equal(cc_pool_grow(&f->pool, 1, &err), CC_EUNSUPP);
    assert_int_equal(cc_pool_shrink(&f->pool, 1, &err), CC_EUNSUPP);
    assert_int_equal(cc_pool_size(&f->pool), 1);
}

/* Threads: a removed thread leaves its loop and is joined by the next grow, which reuses
 * its slot with a new thread (and backend object). */
static void test_pool_threads_shrink_then_grow(void **state)
{
    struct fix *f = *state;
    struct cc_pool_report rep;
    struct cc_err err = {0};
    int64_t deadline = cc_mono_us() + 5 * 1000000;

    assert_int_equal(cc_pool_size(&f->pool), 2);
    assert_int_equal(cc_pool_shrink(&f->pool, 1, &err), CC_OK);
    assert_true(f->pool.kids[1].is_removed);
    while (!atomic_load(&f->pool.kids[1].is_done) && cc_mono_us() < deadline)
        usleep(10000);
    assert_true(atomic_load(&f->pool.kids[1].is_done));
    assert_int_equal(cc_pool_grow(&f->pool, 1, &err), CC_OK);
    assert_int_equal(f->pool.n, 2);
    assert_false(f->pool.kids[1].is_removed);
    assert_true(f->pool.kids[1].has_thread);
    dispatch_to(f, 1, "demo.add", json_pack("[i,i]", 3, 4));
    assert_int_equal(wait_reports(f, &rep, 1), 1);
    assert_int_equal(rep.slot, 1);
    assert_int_equal(rep.status, CC_OK);
    resize_req_free();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pool_nul_in_string_arg_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_corrupt_job_record_stores_failure, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pool_respawn_retried_after_failed_fork, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pool_warm_stop_is_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_warm_stop_turns_cold_on_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_hard_time_limit_kills_child, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_soft_time_limit_signals_child, setup, teardown),
        cmocka_unit_test_setup_teardown(test_issue_14_pool_huge_time_limit_is_no_limit, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pool_max_tasks_per_child_retires, setup_max_tasks_1,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pool_threads_run_and_soft_limit, setup_threads,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pool_solo_soft_limit, setup_solo, teardown),
        cmocka_unit_test_setup_teardown(test_pool_grow_and_shrink_idle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_shrink_busy_finishes_job, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_resize_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_solo_cannot_resize, setup_solo, teardown),
        cmocka_unit_test_setup_teardown(test_pool_threads_shrink_then_grow, setup_threads,
                                        teardown),
    };

    /* The pool's children are the only ones this process forks: no SIGCHLD handling. */
    return cmocka_run_group_tests_name("pool", tests, NULL, NULL);
}
