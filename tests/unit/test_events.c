/* src/worker/events.c without a broker: task events only when enabled, everything produced while
 * disconnected (or when a publish fails) dropped and counted, a fixed batch, no busy loop
 * after a connection loss, the Lamport clock. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "events.h"
#include "util.h"

static struct cc_request *req(struct cc_request *r)
{
    memset(r, 0, sizeof(*r));
    r->msg.id = (char *)"0b7a1d0e-1111-2222-3333-444455556666";
    r->msg.task = (char *)"demo.add";
    r->msg.argsrepr = (char *)"(2, 3)";
    return r;
}

static void test_events_task_events_off_by_default(void **state)
{
    struct cc_broker b;
    struct cc_events ev;
    struct cc_request r;

    (void)state;
    memset(&b, 0, sizeof(b));
    b.fd = -1;
    cc_events_init(&ev, &b, "c@h", false, 0);
    assert_true(ev.freq_s == 2.0);
    cc_events_task_received(&ev, req(&r));
    cc_events_task_started(&ev, &r);
    assert_int_equal(ev.n_dropped, 0); /* not even built */
    assert_true(cc_events_enable(true));
    assert_true(cc_events_task_on(&ev));
    cc_events_task_received(&ev, &r);
    assert_int_equal(ev.n_dropped, 1); /* built, not connected: dropped */
    assert_true(cc_events_enable(false));
    cc_events_deinit(&ev);
    assert_false(cc_events_enable(true)); /* no dispatcher any more */
}

static void test_events_failed_publish_drops_bounded(void **state)
{
    struct cc_broker b;
    struct cc_events ev;
    struct cc_request r;

    (void)state;
    memset(&b, 0, sizeof(b));
    b.fd = -1;
    cc_events_init(&ev, &b, "c@h", true, 2.0);
    ev.is_open = true; /* as if connected; the broker is not, so the publish fails */
    for (int i = 0; i < 30; i++)
        cc_events_task_received(&ev, req(&r));
    /* The 24th flushed the batch, the publish failed: channel considered gone, the rest
     * dropped at once; nothing accumulates. */
    assert_false(ev.is_open);
    assert_int_equal(ev.n_batched, 0);
    assert_int_equal(ev.n_dropped, 30);
    assert_int_equal(ev.n_sent, 0);
    cc_events_deinit(&ev);
}

static void test_events_no_busy_loop_after_loss(void **state)
{
    struct cc_broker b;
    struct cc_events ev;
    struct cc_request r;

    (void)state;
    memset(&b, 0, sizeof(b));
    b.fd = -1;
    cc_events_init(&ev, &b, "c@h", true, 2.0);
    ev.is_open = true;
    cc_events_task_started(&ev, req(&r));
    assert_int_equal(ev.n_batched, 1);
    /* The batch leaves at most CC_EVENTS_FLUSH_US after its first event. */
    assert_true(cc_events_due_in_ms(&ev, ev.batch_since_us, 5000) <= CC_EVENTS_FLUSH_US / 1000);
    assert_int_equal(cc_events_due_in_ms(&ev, ev.batch_since_us + CC_EVENTS_FLUSH_US, 5000), 0);
    cc_events_online(&ev, 0, 0); /* dropped: publish fails */
    cc_events_on_lost(&ev);
    assert_int_equal(ev.n_batched, 0);
    assert_int_equal(ev.n_dropped, 2);
    /* Heartbeats stop until the next worker-online, so the poll timeout is not 0. */
    assert_int_equal(cc_events_due_in_ms(&ev, INT64_MAX / 2, 5000), 5000);
    cc_events_deinit(&ev);
}

static void test_events_clock(void **state)
{
    struct cc_broker b;
    struct cc_events ev;

    (void)state;
    memset(&b, 0, sizeof(b));
    cc_events_init(&ev, &b, "c@h", false, 2.0);
    assert_int_equal(cc_events_clock_forward(&ev), 1);
    assert_int_equal(cc_events_clock_adjust(&ev, 10), 11);
    assert_int_equal(cc_events_clock_adjust(&ev, 3), 12);
    assert_int_equal(cc_events_clock_forward(&ev), 13);
    cc_events_deinit(&ev);
}

/* issue 14: a Python worker's copy of a retried task is received (task-received) before
 * the master sends task-retried, so Flower shows RETRY while the retry waits; celeryc sent
 * them the other way round. task-retried is now held until the copy's task-received, or
 * CC_EVENTS_RETRY_HOLD_US, or cc_events_retry_release. */
static void test_issue_14_retried_follows_the_copys_received(void **state)
{
    static const char text[] = "Retry in 5s\0Traceback (most recent call last):\n";
    struct cc_broker b;
    struct cc_events ev;
    struct cc_request r, other;
    struct cc_pool_report rep;
    const char *recv, *retried;
    int64_t t0;

    (void)state;
    memset(&b, 0, sizeof(b));
    b.fd = -1;
    memset(&rep, 0, sizeof(rep));
    rep.status = CC_TASK_RETRY;
    memcpy(rep.ev_text, text, sizeof(text));
    rep.ev_len = sizeof(text);
    cc_events_init(&ev, &b, "c@h", true, 2.0);
    ev.is_open = true; /* batches build up; nothing is flushed before 24 or the tick */
    t0 = cc_mono_us();
    cc_events_task_report(&ev, req(&r), &rep);
    assert_int_equal(ev.n_batched, 0); /* held */
    assert_int_equal(ev.n_held, 1);
    assert_true(cc_events_due_in_ms(&ev, cc_mono_us(), 5000) <= CC_EVENTS_RETRY_HOLD_US / 1000);
    /* Another task's receipt does not release it; the copy's does, right after it. */
    req(&other);
    other.msg.id = (char *)"ffffffff-1111-2222-3333-444455556666";
    cc_events_task_received(&ev, &other);
    assert_int_equal(ev.n_held, 1);
    r.msg.retries = 1;
    cc_events_task_received(&ev, &r);
    assert_int_equal(ev.n_held, 0);
    assert_int_equal(ev.n_batched, 3);
    ev.batch[ev.batch_len] = '\0';
    recv = strstr(ev.batch, "\"retries\": 1");
    retried = strstr(ev.batch, "\"type\": \"task-retried\"");
    assert_non_null(recv);
    assert_non_null(retried);
    assert_true(recv < retried);
    assert_non_null(strstr(recv, "\"exception\": \"Retry in 5s\""));

    /* Not received here in time: sent by the tick once the hold is over, not before. */
    ev.batch_len = 0;
    ev.n_batched = 0;
    cc_events_task_report(&ev, &r, &rep);
    t0 = cc_mono_us(); /* after: the hold ends by t0 + CC_EVENTS_RETRY_HOLD_US */
    cc_events_tick(&ev, t0, 0, 0);
    assert_int_equal(ev.n_held, 1);
    cc_events_tick(&ev, t0 + CC_EVENTS_RETRY_HOLD_US + 1, 0, 0);
    assert_int_equal(ev.n_held, 0);
    /* Released by the worker (retry not published); the room is bounded. */
    cc_events_task_report(&ev, &r, &rep);
    cc_events_retry_release(&ev, r.msg.id);
    assert_int_equal(ev.n_held, 0);
    for (int i = 0; i < CC_EVENTS_HELD_MAX + 5; i++)
        cc_events_task_report(&ev, &r, &rep);
    assert_int_equal(ev.n_held, CC_EVENTS_HELD_MAX);
    cc_events_deinit(&ev); /* frees the held ones */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_events_task_events_off_by_default),
        cmocka_unit_test(test_events_failed_publish_drops_bounded),
        cmocka_unit_test(test_events_no_busy_loop_after_loss),
        cmocka_unit_test(test_events_clock),
        cmocka_unit_test(test_issue_14_retried_follows_the_copys_received),
    };

    return cmocka_run_group_tests_name("events", tests, NULL, NULL);
}
