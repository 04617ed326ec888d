/* src/worker/ratelimit.c: Celery's rate() parser, the capacity-1 token bucket as "next free slot",
 * the held-request heap, the configuration, and the fall-back when the fleet Redis is
 * unreachable. Time is a fake clock (plain numbers). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "celeryc/task.h"
#include "config.h"
#include "ratelimit.h"

#define SEC 1000000LL

/* ---- rate() ------------------------------------------------------------------------- */

struct rate_case {
    const char *text;
    double per_s; /* expected; < 0: CC_ECONFIG */
};

/* Celery: rate("100/m") == 100/60.0, rate("2/h"), rate("0.5/s"), rate("10") == 10.0,
 * rate("") == 0, rate("0") == 0, rate("10/x") KeyError, rate("abc") ValueError. */
static const struct rate_case rate_cases[] = {
    {"10/s", 10},
    {"100/m", 100 / 60.0},
    {"1000/h", 1000 / 3600.0},
    {"2/h", 2 / 3600.0},
    {"0.5/s", 0.5},
    {"10", 10},
    {"10/", 10},
    {" 5/s ", 5},
    {"1e1/s", 10},
    {"", 0},
    {"0", 0},
    {"0/m", 0},
    {"0.0", 0},
    {"10/x", -1},
    {"10/sec", -1},
    {"10/S", -1},
    {"abc", -1},
    {"/s", -1},
    {"5/s/s", -1},
    {"-1/s", -1},
    {"nan", -1},
    {"nan/s", -1},
    {"-inf/s", -1},
    {"-1e300", -1},
    /* issue 14: Python's rate("inf") is inf, a bucket that never empties: no limit */
    {"inf/s", INFINITY},
    {"inf", INFINITY},
    {"1e300/s", 1e300},
    {"1e300/h", 1e300 / 3600},
    {"1e-300/s", 1e-300},
    {"-0", 0},
    {"1 0/s", -1},
};

static void test_ratelimit_parse(void **state)
{
    double per_s;
    struct cc_err err = {0};

    (void)state;
    for (size_t i = 0; i < sizeof(rate_cases) / sizeof(rate_cases[0]); i++) {
        const struct rate_case *c = &rate_cases[i];
        int rc = cc_ratelimit_parse(c->text, &per_s, &err);

        if (c->per_s < 0) {
            if (rc != CC_ECONFIG)
                fail_msg("'%s': accepted as %g", c->text, per_s);
            assert_non_null(strstr(err.msg, "rate"));
        } else {
            if (rc != CC_OK)
                fail_msg("'%s': %s", c->text, err.msg);
            if (per_s != c->per_s && fabs(per_s - c->per_s) > 1e-12)
                fail_msg("'%s': %g, want %g", c->text, per_s, c->per_s);
        }
    }
    assert_int_equal(cc_ratelimit_parse(NULL, &per_s, &err), CC_OK);
    assert_true(per_s == 0);
}

/* ---- The bucket --------------------------------------------------------------------- */

static void test_ratelimit_spacing_per_type(void **state)
{
    struct cc_ratelimit *rl = cc_ratelimit_new();

    (void)state;
    cc_ratelimit_set(rl, "a", 5);          /* 200 ms apart */
    cc_ratelimit_set(rl, "b", 100 / 60.0); /* 600 ms apart */
    assert_int_equal(cc_ratelimit_count(rl), 2);
    /* A full bucket: the first runs at once, then one per interval, whatever the arrivals. */
    assert_int_equal(cc_ratelimit_admit(rl, "a", 10 * SEC), 10 * SEC);
    assert_int_equal(cc_ratelimit_admit(rl, "a", 10 * SEC), 10 * SEC + 200000);
    assert_int_equal(cc_ratelimit_admit(rl, "a", 10 * SEC + 1), 10 * SEC + 400000);
    /* Other types are independent; unknown ones are never limited and reserve nothing. */
    assert_int_equal(cc_ratelimit_admit(rl, "b", 10 * SEC), 10 * SEC);
    assert_int_equal(cc_ratelimit_admit(rl, "b", 10 * SEC), 10 * SEC + 600000);
    assert_int_equal(cc_ratelimit_admit(rl, "c", 10 * SEC), 10 * SEC);
    assert_int_equal(cc_ratelimit_admit(rl, "c", 10 * SEC), 10 * SEC);
    /* Capacity 1: a long idle spell banks no burst (kombu caps the tokens at capacity). */
    assert_int_equal(cc_ratelimit_admit(rl, "a", 20 * SEC), 20 * SEC);
    assert_int_equal(cc_ratelimit_admit(rl, "a", 20 * SEC), 20 * SEC + 200000);
    /* Arriving between slots: the next slot, never earlier than 1/rate after the last. */
    assert_int_equal(cc_ratelimit_admit(rl, "a", 20 * SEC + 300000), 20 * SEC + 400000);
    assert_int_equal(cc_ratelimit_admit(rl, "a", 20 * SEC + 700000), 20 * SEC + 700000);
    cc_ratelimit_free(rl);
}

static void test_ratelimit_interval_rounds_up(void **state)
{
    struct cc_ratelimit *rl = cc_ratelimit_new();

    (void)state;
    cc_ratelimit_set(rl, "t", 3); /* 333333.33 us -> 333334: never faster than the rate */
    assert_int_equal(cc_ratelimit_admit(rl, "t", 0), 0);
    assert_int_equal(cc_ratelimit_admit(rl, "t", 0), 333334);
    cc_ratelimit_set(rl, "t", 1e9); /* faster than the clock: 1 us, still spaced */
    assert_int_equal(cc_ratelimit_admit(rl, "t", 5 * SEC), 5 * SEC);
    assert_int_equal(cc_ratelimit_admit(rl, "t", 5 * SEC), 5 * SEC + 1);
    cc_ratelimit_set(rl, "t", 1000 / 3600.0); /* 1000/h: 3.6 s */
    assert_int_equal(cc_ratelimit_admit(rl, "t", 9 * SEC), 9 * SEC);
    assert_int_equal(cc_ratelimit_admit(rl, "t", 9 * SEC), 9 * SEC + 3600000);
    cc_ratelimit_set(rl, "t", 0); /* removed */
    assert_int_equal(cc_ratelimit_count(rl), 0);
    assert_int_equal(cc_ratelimit_admit(rl, "t", 9 * SEC), 9 * SEC);
    cc_ratelimit_free(rl);
}

/* issue 14: rates of 0, 1e300, 1e-300, inf and NaN give a sane interval (or no bucket);
 * no double is cast to an integer out of range. */
static void test_issue_14_ratelimit_extreme_rates(void **state)
{
    struct cc_ratelimit *rl = cc_ratelimit_new();

    (void)state;
    cc_ratelimit_set(rl, "t", 1e300); /* 1 us apart, the fastest */
    assert_int_equal(cc_ratelimit_admit(rl, "t", SEC), SEC);
    assert_int_equal(cc_ratelimit_admit(rl, "t", SEC), SEC + 1);
    cc_ratelimit_set(rl, "t", 1e-300); /* the slowest: one now, the next ~31.7 years later */
    assert_int_equal(cc_ratelimit_admit(rl, "t", 5 * SEC), 5 * SEC);
    assert_true(cc_ratelimit_admit(rl, "t", 5 * SEC) == 5 * SEC + 1000000000000000LL);
    cc_ratelimit_set(rl, "t", 4.9e-324); /* 1e6 / denormal is inf: the same cap */
    assert_int_equal(cc_ratelimit_count(rl), 1);
    cc_ratelimit_set(rl, "t", INFINITY); /* no limit */
    assert_int_equal(cc_ratelimit_count(rl), 0);
    cc_ratelimit_set(rl, "t", NAN);
    assert_int_equal(cc_ratelimit_count(rl), 0);
    cc_ratelimit_set(rl, "t", -1);
    assert_int_equal(cc_ratelimit_count(rl), 0);
    assert_int_equal(cc_ratelimit_admit(rl, "t", 7 * SEC), 7 * SEC);
    cc_ratelimit_free(rl);
}

/* ---- Held requests ------------------------------------------------------------------ */

static void test_ratelimit_held_fifo(void **state)
{
    struct cc_ratelimit *rl = cc_ratelimit_new();
    int items[40];

    (void)state;
    assert_int_equal(cc_ratelimit_next_due_us(rl), INT64_MAX);
    assert_null(cc_ratelimit_pop_due(rl, INT64_MAX));
    /* Held out of order, several on the same slot: they come out by slot, then hold order. */
    for (int i = 0; i < 40; i++)
        cc_ratelimit_hold(rl, &items[i], (int64_t)((i * 7) % 10) * SEC);
    assert_int_equal(cc_ratelimit_n_held(rl), 40);
    assert_int_equal(cc_ratelimit_next_due_us(rl), 0);
    int n = 0, last_i = -1;
    int64_t last_due = -1;
    for (int64_t now = 0; now < 10 * SEC; now += SEC) {
        int *p;

        while ((p = cc_ratelimit_pop_due(rl, now)) != NULL) {
            int i = (int)(p - items);
            int64_t due = (int64_t)((i * 7) % 10) * SEC;

            assert_true(due <= now);
            assert_true(due > last_due || (due == last_due && i > last_i));
            last_due = due;
            last_i = i;
            n++;
        }
        if (cc_ratelimit_n_held(rl) > 0)
            assert_true(cc_ratelimit_next_due_us(rl) > now);
    }
    assert_int_equal(n, 40);
    /* pop_any drains whatever is left, and held_get sees every item. */
    cc_ratelimit_hold(rl, &items[0], 5);
    cc_ratelimit_hold(rl, &items[1], 3);
    assert_true(cc_ratelimit_held_get(rl, 0) == &items[1] ||
                cc_ratelimit_held_get(rl, 1) == &items[1]);
    assert_non_null(cc_ratelimit_pop_any(rl));
    assert_non_null(cc_ratelimit_pop_any(rl));
    assert_null(cc_ratelimit_pop_any(rl));
    assert_int_equal(cc_ratelimit_n_held(NULL), 0);
    assert_int_equal(cc_ratelimit_count(NULL), 0);
    cc_ratelimit_free(rl);
    cc_ratelimit_free(NULL);
}

/* ---- Lists and configuration -------------------------------------------------------- */

static void test_ratelimit_set_list(void **state)
{
    struct cc_ratelimit *rl = cc_ratelimit_new();
    struct cc_err err = {0};

    (void)state;
    assert_int_equal(cc_ratelimit_set_list(rl, " demo.add = 10/s, ,demo.mul=1/m,x=5", &err), CC_OK);
    assert_true(cc_ratelimit_get(rl, "demo.add") == 10);
    assert_true(fabs(cc_ratelimit_get(rl, "demo.mul") - 1 / 60.0) < 1e-12);
    assert_true(cc_ratelimit_get(rl, "x") == 5);
    assert_true(cc_ratelimit_get(rl, "y") == 0);
    assert_true(cc_ratelimit_star(rl) == 0);
    /* Bad items apply nothing at all. */
    assert_int_equal(cc_ratelimit_set_list(rl, "y=1/s,demo.add", &err), CC_ECONFIG);
    assert_non_null(strstr(err.msg, "demo.add"));
    assert_int_equal(cc_ratelimit_set_list(rl, "y=1/s,z=3/d", &err), CC_ECONFIG);
    assert_int_equal(cc_ratelimit_set_list(rl, "=1/s", &err), CC_ECONFIG);
    assert_true(cc_ratelimit_get(rl, "y") == 0);
    /* 0 removes; '*' is kept apart. */
    assert_int_equal(cc_ratelimit_set_list(rl, "x=0,*=2/s", &err), CC_OK);
    assert_true(cc_ratelimit_get(rl, "x") == 0);
    assert_true(cc_ratelimit_star(rl) == 2);
    assert_int_equal(cc_ratelimit_set_list(rl, "", &err), CC_OK);
    assert_int_equal(cc_ratelimit_set_list(rl, NULL, &err), CC_OK);
    cc_ratelimit_free(rl);
}

static void cfg_zero(struct cc_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->result_backend = (char *)"none";
}

/* Every task in the table has a rate_limit that parses (or none). */
static void test_ratelimit_task_table_rates_parse(void **state)
{
    struct cc_err err = {0};

    (void)state;
    for (size_t i = 0; cc_task_table[i] != NULL; i++) {
        double per_s;

        if (cc_ratelimit_parse(cc_task_table[i]->rate_limit, &per_s, &err) != CC_OK)
            fail_msg("%s: %s", cc_task_table[i]->name, err.msg);
    }
}

static void test_ratelimit_from_config(void **state)
{
    struct cc_config cfg;
    struct cc_err err = {0};
    struct cc_ratelimit *rl = NULL;

    (void)state;
    cfg_zero(&cfg);
    cfg.rate_limits = (char *)"demo.add=10/s,demo.mul=1/m,not.a.task=1/s";
    assert_int_equal(cc_ratelimit_from_config(&cfg, &rl, &err), CC_OK);
    assert_true(cc_ratelimit_get(rl, "demo.add") == 10);
    assert_true(cc_ratelimit_get(rl, "demo.noop") == 0);
    assert_true(cc_ratelimit_get(rl, "not.a.task") == 0); /* only tasks this worker has */
    cc_ratelimit_free(rl);

    /* task_default_rate_limit for tasks that declare none; a named item wins over it. */
    cfg.default_rate_limit = (char *)"2/s";
    cfg.rate_limits = (char *)"demo.add=0";
    assert_int_equal(cc_ratelimit_from_config(&cfg, &rl, &err), CC_OK);
    assert_true(cc_ratelimit_get(rl, "demo.noop") == 2);
    assert_true(cc_ratelimit_get(rl, "demo.add") == 0);
    cc_ratelimit_free(rl);

    /* '*' is applied after the named item, as Celery's task_annotations. */
    cfg.default_rate_limit = NULL;
    cfg.rate_limits = (char *)"demo.add=10/s,*=3/s";
    assert_int_equal(cc_ratelimit_from_config(&cfg, &rl, &err), CC_OK);
    assert_true(cc_ratelimit_get(rl, "demo.add") == 3);
    assert_true(cc_ratelimit_get(rl, "demo.mul") == 3);
    cc_ratelimit_free(rl);

    /* worker_disable_rate_limits: nothing is limited. */
    cfg.disable_rate_limits = true;
    assert_int_equal(cc_ratelimit_from_config(&cfg, &rl, &err), CC_OK);
    assert_int_equal(cc_ratelimit_count(rl), 0);
    cc_ratelimit_free(rl);

    /* Fleet mode needs a Redis. */
    cfg.disable_rate_limits = false;
    cfg.fleet_rate_limits = true;
    assert_int_equal(cc_ratelimit_from_config(&cfg, &rl, &err), CC_ECONFIG);
    assert_null(rl);
    assert_non_null(strstr(err.msg, "worker_fleet_rate_limits"));
}

/* The fleet Redis is down (nothing listens on the port): admission falls back to the
 * per-worker slot at once, and keeps doing so without retrying Redis on every request. */
static void test_ratelimit_fleet_down_falls_back(void **state)
{
    struct cc_ratelimit *rl = cc_ratelimit_new();
    struct cc_err err = {0};

    (void)state;
    cc_ratelimit_set(rl, "t", 5);
    assert_int_equal(cc_ratelimit_fleet_open(rl, "redis://127.0.0.1:1/0", &err), CC_OK);
    assert_false(cc_ratelimit_is_fleet_down(rl));
    assert_int_equal(cc_ratelimit_admit(rl, "t", 100 * SEC), 100 * SEC);
    assert_true(cc_ratelimit_is_fleet_down(rl));
    assert_int_equal(cc_ratelimit_admit(rl, "t", 100 * SEC), 100 * SEC + 200000);
    assert_int_equal(cc_ratelimit_admit(rl, "u", 100 * SEC), 100 * SEC); /* unlimited: no Redis */
    /* After the retry interval it tries again, fails again, still per worker. */
    assert_int_equal(cc_ratelimit_admit(rl, "t", 200 * SEC), 200 * SEC);
    assert_true(cc_ratelimit_is_fleet_down(rl));
    assert_int_equal(cc_ratelimit_fleet_open(rl, "ftp://x", &err) == CC_OK, 0);
    cc_ratelimit_free(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ratelimit_parse),
        cmocka_unit_test(test_ratelimit_spacing_per_type),
        cmocka_unit_test(test_ratelimit_interval_rounds_up),
        cmocka_unit_test(test_issue_14_ratelimit_extreme_rates),
        cmocka_unit_test(test_ratelimit_held_fifo),
        cmocka_unit_test(test_ratelimit_set_list),
        cmocka_unit_test(test_ratelimit_task_table_rates_parse),
        cmocka_unit_test(test_ratelimit_from_config),
        cmocka_unit_test(test_ratelimit_fleet_down_falls_back),
    };

    return cmocka_run_group_tests_name("ratelimit", tests, NULL, NULL);
}
