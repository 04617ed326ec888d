/* Pure pieces of the worker's result path: the Redis key and billiard's exit wording. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "backend.h"
#include "pool.h"

static void test_backend_redis_format_key(void **state)
{
    char buf[64];

    (void)state;
    assert_int_equal(cc_backend_redis_key("2b4fd78d-825e-401a-b839-d8415726f5a8", buf, sizeof(buf)),
                     (int)strlen("celery-task-meta-2b4fd78d-825e-401a-b839-d8415726f5a8"));
    /* [fx:redis-result-success.json] key */
    assert_string_equal(buf, "celery-task-meta-2b4fd78d-825e-401a-b839-d8415726f5a8");
}

static void test_backend_redis_format_key_too_long(void **state)
{
    char buf[20];

    (void)state;
    assert_int_equal(cc_backend_redis_key("0123456789", buf, sizeof(buf)), -1);
}

/* Issue #14: the key is sized from the id; 239+ characters overflowed a 256-byte buffer. */
static void test_backend_redis_format_key_of_long_id(void **state)
{
    char id[1025];
    size_t len = 0;
    char *key;

    (void)state;
    memset(id, 'x', 1024);
    id[1024] = '\0';
    key = cc_backend_redis_key_dup(id, &len);
    assert_int_equal(len, strlen("celery-task-meta-") + 1024);
    assert_int_equal(strlen(key), len);
    assert_memory_equal(key, "celery-task-meta-xxx", 20);
    free(key);
}

static void test_backend_redis_format_worker_lost_wording(void **state)
{
    char buf[64];

    (void)state;
    /* billiard.common.human_status: "signal 9 (SIGKILL)" / "exitcode 1". A wait status of a
     * process killed by signal N is N in the low 7 bits; an exit status is code << 8. */
    cc_pool_human_status(SIGKILL, buf, sizeof(buf));
    assert_string_equal(buf, "signal 9 (SIGKILL)");
    cc_pool_human_status(SIGSEGV, buf, sizeof(buf));
    assert_string_equal(buf, "signal 11 (SIGSEGV)");
    cc_pool_human_status(1 << 8, buf, sizeof(buf));
    assert_string_equal(buf, "exitcode 1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backend_redis_format_key),
        cmocka_unit_test(test_backend_redis_format_key_too_long),
        cmocka_unit_test(test_backend_redis_format_key_of_long_id),
        cmocka_unit_test(test_backend_redis_format_worker_lost_wording),
    };

    return cmocka_run_group_tests_name("backend_redis_format", tests, NULL, NULL);
}
