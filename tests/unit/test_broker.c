/* src/core/broker.c error texts (issue #14): rabbitmq-c's "a socket error occurred" says which
 * socket error when errno holds one, and never repeats a non-blocking call's leftover
 * EINPROGRESS ("Operation now in progress" for a refused connection). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "broker.h"

static void test_broker_status_text_names_the_socket_error(void **state)
{
    char buf[160];

    (void)state;
    assert_string_equal(
        cc_broker_status_text(AMQP_STATUS_SOCKET_ERROR, ECONNRESET, buf, sizeof(buf)),
        "a socket error occurred (Connection reset by peer)");
}

static void test_broker_status_text_ignores_leftover_errno(void **state)
{
    char buf[160];

    (void)state;
    assert_string_equal(
        cc_broker_status_text(AMQP_STATUS_SOCKET_ERROR, EINPROGRESS, buf, sizeof(buf)),
        "a socket error occurred");
    assert_string_equal(cc_broker_status_text(AMQP_STATUS_SOCKET_ERROR, 0, buf, sizeof(buf)),
                        "a socket error occurred");
    /* Other statuses are rabbitmq-c's own words, whatever errno says. */
    assert_string_equal(
        cc_broker_status_text(AMQP_STATUS_CONNECTION_CLOSED, ECONNRESET, buf, sizeof(buf)),
        amqp_error_string2(AMQP_STATUS_CONNECTION_CLOSED));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_broker_status_text_names_the_socket_error),
        cmocka_unit_test(test_broker_status_text_ignores_leftover_errno),
    };

    return cmocka_run_group_tests_name("broker", tests, NULL, NULL);
}
