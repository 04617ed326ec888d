/* src/core/netprobe.c on loopback: a listening port is found accepting, a closed one is reported
 * as "Connection refused" (issue #14: rabbitmq-c's leftover errno said "Operation now in
 * progress"), an unresolvable name by the resolver's text. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "netprobe.h"

/* A listening socket on 127.0.0.1 (closed = a free port nobody listens on). */
static int listen_port(int *fd_out)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *fd_out = fd;
    return ntohs(sa.sin_port);
}

static int probe_until_done(struct cc_netprobe *p, int rc, struct cc_err *err)
{
    for (int i = 0; i < 100 && rc == CC_EAGAIN; i++)
        rc = cc_netprobe_check(p, 50, err);
    return rc;
}

static void test_netprobe_accepting_port(void **state)
{
    struct cc_netprobe p;
    struct cc_err err = {0};
    int fd, port = listen_port(&fd);

    (void)state;
    cc_netprobe_init(&p);
    assert_int_equal(
        probe_until_done(&p, cc_netprobe_start(&p, "127.0.0.1", port, 2000, &err), &err), CC_OK);
    assert_false(cc_netprobe_is_active(&p));
    assert_int_equal(cc_netprobe_diagnose("127.0.0.1", port, 2000, &err), CC_OK);
    close(fd);
}

static void test_netprobe_refused_port_says_connection_refused(void **state)
{
    struct cc_netprobe p;
    struct cc_err err = {0};
    int fd, port = listen_port(&fd);

    (void)state;
    close(fd); /* nobody listens there now */
    cc_netprobe_init(&p);
    assert_int_equal(
        probe_until_done(&p, cc_netprobe_start(&p, "127.0.0.1", port, 2000, &err), &err), CC_EIO);
    assert_string_equal(err.msg, "Connection refused");
    assert_false(cc_netprobe_is_active(&p));
    memset(&err, 0, sizeof(err));
    assert_int_equal(cc_netprobe_diagnose("127.0.0.1", port, 2000, &err), CC_EIO);
    assert_string_equal(err.msg, "Connection refused");
    /* "localhost" may resolve to ::1 first (unroutable without IPv6): the refusal wins. */
    memset(&err, 0, sizeof(err));
    assert_int_equal(cc_netprobe_diagnose("localhost", port, 2000, &err), CC_EIO);
    assert_string_equal(err.msg, "Connection refused");
}

static void test_netprobe_unix_socket_missing(void **state)
{
    struct cc_err err = {0};

    (void)state;
    assert_int_equal(cc_netprobe_diagnose("/nonexistent/celeryc-test.sock", -1, 1000, &err),
                     CC_EIO);
    assert_string_equal(err.msg, "No such file or directory");
}

static void test_netprobe_check_without_probe(void **state)
{
    struct cc_netprobe p;
    struct cc_err err = {0};

    (void)state;
    cc_netprobe_init(&p);
    assert_int_equal(cc_netprobe_check(&p, 0, &err), CC_EINVAL);
    cc_netprobe_stop(&p);
    cc_netprobe_stop(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_netprobe_accepting_port),
        cmocka_unit_test(test_netprobe_refused_port_says_connection_refused),
        cmocka_unit_test(test_netprobe_unix_socket_missing),
        cmocka_unit_test(test_netprobe_check_without_probe),
    };

    return cmocka_run_group_tests_name("netprobe", tests, NULL, NULL);
}
