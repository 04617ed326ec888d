/* src/worker/control.c's counters without a broker: every task handed to the pool counts in the
 * stats `total` and in `processed` (Celery's all_total_count, which worker events carry and
 * Flower's dashboard shows), at start, so a running or terminated task counts too. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "pidbox.h"
#include "consumer.h"
#include "pool.h"

static void test_control_processed_counts_started_tasks(void **state)
{
    struct cc_pidbox c;
    struct cc_pool pool;
    struct cc_request r;

    (void)state;
    memset(&c, 0, sizeof(c));
    memset(&pool, 0, sizeof(pool));
    memset(&r, 0, sizeof(r));
    pool.n = 2;
    c.pool = &pool;
    c.total = json_object();
    assert_int_equal(cc_pidbox_processed(&c), 0);

    r.msg.task = (char *)"demo.add";
    cc_pidbox_on_start(&c, 0, &r);
    cc_pidbox_on_start(&c, 1, &r);
    r.msg.task = (char *)"demo.sleep";
    cc_pidbox_on_start(&c, 0, &r); /* still running when the heartbeat goes out */

    assert_int_equal(cc_pidbox_processed(&c), 3);
    assert_int_equal(json_integer_value(json_object_get(c.total, "demo.add")), 2);
    assert_int_equal(json_integer_value(json_object_get(c.total, "demo.sleep")), 1);
    json_decref(c.total);
    free(c.time_start);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_control_processed_counts_started_tasks),
    };
    return cmocka_run_group_tests_name("control_stats", tests, NULL, NULL);
}
