/* Unit tests for the pure parts of src/core/backend_pg.c: the db+postgresql:// URL as libpq gets
 * it, and the start-up URL check (config.c's result_backend validation). No server needed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "backend.h"

static void test_backend_pg_conninfo(void **state)
{
    static const struct {
        const char *url;
        const char *want; /* NULL: refused */
    } cases[] = {
        {"db+postgresql://u:p@h:5432/d", "postgresql://u:p@h:5432/d"},
        {"db+postgres://u@h/d", "postgresql://u@h/d"},
        {"db+postgresql+psycopg2://u:p@127.0.0.1:6543/db?sslmode=disable",
         "postgresql://u:p@127.0.0.1:6543/db?sslmode=disable"},
        {"db+postgresql:///d?host=/run/postgresql", "postgresql:///d?host=/run/postgresql"},
        {"db+mysql://u@h/d", NULL},
        {"db+sqlite:///results.db", NULL},
        {"db+postgresqlx://u@h/d", NULL},
        {"postgresql://u@h/d", NULL},
        {"db+postgresql", NULL},
        {"db+", NULL},
    };
    char buf[128];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int n = cc_backend_pg_conninfo(cases[i].url, buf, sizeof(buf));

        if (cases[i].want == NULL) {
            if (n != -1)
                fail_msg("%s: accepted as %s", cases[i].url, buf);
            continue;
        }
        if (n < 0)
            fail_msg("%s: refused", cases[i].url);
        assert_string_equal(buf, cases[i].want);
        assert_int_equal(n, (int)strlen(cases[i].want));
    }
    /* Too small a buffer is refused, not truncated. */
    assert_int_equal(cc_backend_pg_conninfo("db+postgresql://u@h/d", buf, 10), -1);
}

static void test_backend_pg_check_url(void **state)
{
    struct cc_err err = {0};

    (void)state;
    assert_int_equal(cc_backend_pg_check_url("db+postgresql://u:p@h:5432/d", &err), CC_OK);
    assert_int_equal(cc_backend_pg_check_url("db+postgres://u@h/d?connect_timeout=3", &err), CC_OK);
    assert_int_equal(cc_backend_pg_check_url("db+mysql://u@h/d", &err), CC_EURL);
    assert_non_null(strstr(err.msg, "db+postgresql://"));
    memset(&err, 0, sizeof(err));
    /* libpq refuses an unknown query parameter: reported at start, on one line */
    assert_int_equal(cc_backend_pg_check_url("db+postgresql://u@h/d?nonsense=1", &err), CC_EURL);
    assert_non_null(strstr(err.msg, "nonsense"));
    assert_null(strchr(err.msg, '\n'));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backend_pg_conninfo),
        cmocka_unit_test(test_backend_pg_check_url),
    };

    return cmocka_run_group_tests_name("backend_pg", tests, NULL, NULL);
}
