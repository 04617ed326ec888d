/* Unit tests for src/worker/redeliver.c's counting without Redis (the in-memory table): only a
 * redelivery of a message that was handed to an executor and not settled counts (issue #14:
 * prefetched neighbours of a poison task were dead-lettered with it), each hand-off counts
 * once, ids of any length count, and a running message's mark survives a flood of others. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "log.h"
#include "redeliver.h"

struct fx {
    struct cc_config cfg;
    struct cc_broker broker;
    struct cc_backend *backend;
    struct cc_redeliver rd;
    char queue[8];
    char *queues[1];
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    struct cc_err err = {0};

    if (f == NULL)
        return -1;
    cc_log_init(CC_LOG_CRITICAL, CC_LOG_HUMAN, -1); /* the ERROR lines of dead-lettering */
    f->cfg.max_redeliveries = 2;
    f->cfg.dead_letter = CC_DEAD_LETTER_DLX; /* no broker call: reject without requeue */
    f->backend = cc_backend_none_new();
    memcpy(f->queue, "celery", 7);
    f->queues[0] = f->queue;
    if (cc_redeliver_init(&f->rd, &f->cfg, "w@h", &f->broker, f->backend, f->queues, 1, &err) !=
        CC_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    cc_redeliver_deinit(&f->rd);
    cc_backend_free(f->backend);
    cc_log_init(CC_LOG_WARNING, CC_LOG_HUMAN, -1);
    free(f);
    return 0;
}

static struct cc_request *req(const char *id, int retries, bool redelivered)
{
    struct cc_request *r = calloc(1, sizeof(*r));

    assert_non_null(r);
    r->msg.id = strdup(id);
    r->msg.task = strdup("demo.add");
    r->msg.retries = retries;
    r->msg.group_index = -1;
    r->routing_key = strdup("celery");
    r->redelivered = redelivered;
    return r;
}

/* The receipt of a redelivered copy of (id, retries). */
static enum cc_redeliver_verdict receive(struct fx *f, const char *id, int retries)
{
    amqp_envelope_t env;
    struct cc_request *r = req(id, retries, true);
    struct cc_err err = {0};
    enum cc_redeliver_verdict v;
    int rc;

    memset(&env, 0, sizeof(env));
    env.redelivered = 1;
    v = cc_redeliver_on_receipt(&f->rd, &env, r, &rc, &err);
    assert_int_equal(rc, CC_OK);
    cc_consumer_request_free(r);
    return v;
}

/* Hand (id, retries) to an executor; with is_settled, its outcome is then settled. */
static void hand_off(struct fx *f, const char *id, int retries, bool is_settled)
{
    struct cc_request *r = req(id, retries, false);

    cc_redeliver_on_handoff(&f->rd, r);
    assert_true(r->is_marked);
    if (is_settled)
        cc_redeliver_settled(&f->rd, r);
    cc_consumer_request_free(r);
}

static void test_redeliver_prefetched_never_counts(void **state)
{
    struct fx *f = *state;

    for (int i = 0; i < 20; i++)
        assert_int_equal(receive(f, "prefetched-1", 0), CC_REDELIVER_RUN);
}

static void test_redeliver_executing_counts_to_the_limit(void **state)
{
    struct fx *f = *state;

    hand_off(f, "poison", 0, false);
    assert_int_equal(receive(f, "poison", 0), CC_REDELIVER_RUN); /* 1 of 2 */
    /* Received again without a hand-off in between (prefetched after its restart): not
     * counted, however often. */
    assert_int_equal(receive(f, "poison", 0), CC_REDELIVER_RUN);
    assert_int_equal(receive(f, "poison", 0), CC_REDELIVER_RUN);
    hand_off(f, "poison", 0, false);
    assert_int_equal(receive(f, "poison", 0), CC_REDELIVER_RUN); /* 2 of 2 */
    hand_off(f, "poison", 0, false);
    assert_int_equal(receive(f, "poison", 0), CC_REDELIVER_REJECT); /* 3: dead-lettered */
    assert_int_equal(f->rd.n_dead, 1);
    /* Its count is gone with it: a copy shovelled back starts from zero. */
    hand_off(f, "poison", 0, false);
    assert_int_equal(receive(f, "poison", 0), CC_REDELIVER_RUN);
}

static void test_redeliver_settled_or_other_retry_not_counted(void **state)
{
    struct fx *f = *state;

    for (int i = 0; i < 5; i++) {
        hand_off(f, "done", 0, true); /* ran and was acked */
        assert_int_equal(receive(f, "done", 0), CC_REDELIVER_RUN);
    }
    /* Retry 1 of the same task id, prefetched when its worker died: retry 0's mark is not
     * its own. */
    for (int i = 0; i < 5; i++) {
        hand_off(f, "retried", 0, false);
        assert_int_equal(receive(f, "retried", 1), CC_REDELIVER_RUN);
    }
    assert_int_equal(f->rd.n_dead, 0);
}

static char *long_id(size_t n, char c)
{
    char *s = malloc(n + 1);

    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* Issue #14: ids past the old 64-byte slot and 256-byte key were never matched, so the count
 * stayed at "1 of at most N" and the limit never applied. */
static void test_redeliver_long_ids_counted(void **state)
{
    struct fx *f = *state;
    size_t lens[] = {64, 239, 300, 1024, 120000};

    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        char *a = long_id(lens[i], 'a'), *b = long_id(lens[i], 'a');
        enum cc_redeliver_verdict v = CC_REDELIVER_RUN;
        int n = 0;

        b[lens[i] - 1] = 'b'; /* differs only in its last byte */
        while (v == CC_REDELIVER_RUN && n < 10) {
            hand_off(f, a, 0, false);
            hand_off(f, b, 0, true);
            v = receive(f, a, 0);
            n++;
        }
        assert_int_equal(v, CC_REDELIVER_REJECT);
        assert_int_equal(n, 3);
        free(a);
        free(b);
    }
}

/* A message past the limit whose dead-letter publish failed (the broker refused it, the
 * channel was gone) is still past the limit at its next receipt, mark or not: it is never run
 * again in between. */
static void test_redeliver_failed_dead_letter_stays_past_limit(void **state)
{
    struct fx *f = *state;
    amqp_envelope_t env;
    struct cc_err err = {0};
    int rc;

    f->cfg.dead_letter = CC_DEAD_LETTER_QUEUE; /* the fixture's broker has no channel */
    for (int i = 0; i < 2; i++) {
        hand_off(f, "stuck", 0, false);
        assert_int_equal(receive(f, "stuck", 0), CC_REDELIVER_RUN);
    }
    hand_off(f, "stuck", 0, false);
    for (int i = 0; i < 3; i++) { /* requeued by the caller each time, no hand-off */
        struct cc_request *r = req("stuck", 0, true);

        memset(&env, 0, sizeof(env));
        env.redelivered = 1;
        (void)cc_redeliver_on_receipt(&f->rd, &env, r, &rc, &err);
        assert_int_equal(rc, CC_ECHANNEL); /* tried to dead-letter it, every time */
        cc_consumer_request_free(r);
    }
    f->cfg.dead_letter = CC_DEAD_LETTER_DLX;
    assert_int_equal(receive(f, "stuck", 0), CC_REDELIVER_REJECT);
}

/* A running message's mark outlives thousands of other tasks handed out and settled. */
static void test_redeliver_running_mark_survives_traffic(void **state)
{
    struct fx *f = *state;
    char id[40];

    hand_off(f, "long-running", 0, false);
    for (int i = 0; i < 3 * CC_REDELIVER_LOCAL_SLOTS; i++) {
        snprintf(id, sizeof(id), "other-%d", i);
        hand_off(f, id, 0, true);
    }
    hand_off(f, "long-running-2", 0, false);
    assert_int_equal(receive(f, "long-running", 0), CC_REDELIVER_RUN);
    hand_off(f, "long-running", 0, false);
    assert_int_equal(receive(f, "long-running", 0), CC_REDELIVER_RUN);
    hand_off(f, "long-running", 0, false);
    assert_int_equal(receive(f, "long-running", 0), CC_REDELIVER_REJECT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_redeliver_prefetched_never_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redeliver_executing_counts_to_the_limit, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_redeliver_settled_or_other_retry_not_counted, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_redeliver_long_ids_counted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redeliver_failed_dead_letter_stays_past_limit, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_redeliver_running_mark_survives_traffic, setup,
                                        teardown),
    };

    return cmocka_run_group_tests_name("redeliver", tests, NULL, NULL);
}
