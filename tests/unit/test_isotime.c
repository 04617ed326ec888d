/* Unit tests for proto/isotime.c; expected values computed with CPython's datetime. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <string.h>

#include "isotime.h"

static void test_iso_parse_and_format(void **state)
{
    static const struct {
        const char *in;
        int64_t us;
        const char *naive; /* isoformat() of the UTC time */
    } cases[] = {
        {"2026-11-22T23:33:20.549281", 1795390400549281LL, "2026-11-22T23:33:20.549281"},
        {"2030-01-01T12:00:00+00:00", 1893499200000000LL, "2030-01-01T12:00:00"},
        {"2026-11-22T23:42:01.409000+00:00", 1795390921409000LL, "2026-11-22T23:42:01.409000"},
        {"1969-12-31T23:59:59.5", -500000LL, "1969-12-31T23:59:59.500000"},
        {"2000-02-29T01:02:03-05:30", 951805923000000LL, "2000-02-29T06:32:03"},
        {"0001-01-01T00:00:00", -62135596800000000LL, "0001-01-01T00:00:00"},
        {"9999-12-31T23:59:59.999999", 253402300799999999LL, "9999-12-31T23:59:59.999999"},
        {"2030-01-02T03:04:05.678901Z", 1893553445678901LL, "2030-01-02T03:04:05.678901"},
        {"2030-01-02 03:04:05.123456789", 1893553445123456LL, "2030-01-02T03:04:05.123456"},
    };
    char buf[33];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t us = 0;

        assert_int_equal(cc_isotime_parse(cases[i].in, &us), CC_OK);
        assert_true(us == cases[i].us);
        assert_string_equal(cc_isotime_format(us, 0, buf, sizeof(buf)), cases[i].naive);
    }
    assert_string_equal(cc_isotime_format(1893499200000000LL, 1, buf, sizeof(buf)),
                        "2030-01-01T12:00:00+00:00");
    assert_string_equal(cc_isotime_format(253402300799999999LL, 1, buf, sizeof(buf)),
                        "9999-12-31T23:59:59.999999+00:00");
}

static void test_iso_parse_rejects(void **state)
{
    static const char *const bad[] = {"",
                                      "tomorrow",
                                      "2030-01-01",
                                      "2030-01-01T",
                                      "2030-1-01T00:00:00",
                                      "2030-13-01T00:00:00",
                                      "2030-02-29T00:00:00",
                                      "2030-01-32T00:00:00",
                                      "2030-01-01T24:00:00",
                                      "2030-01-01T00:60:00",
                                      "2030-01-01T00:00:60",
                                      "2030-01-01T00:00:00.",
                                      "2030-01-01T00:00:00.1234567890",
                                      "2030-01-01T00:00:00+0100",
                                      "2030-01-01T00:00:00+01",
                                      "2030-01-01T00:00:00 ",
                                      "2030-01-01T00:00:00Zx",
                                      "0000-01-01T00:00:00",
                                      "2030-01-01X00:00:00"};
    int64_t us;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (cc_isotime_parse(bad[i], &us) != CC_EBADTIME)
            fail_msg("accepted \"%s\"", bad[i]);
    }
    assert_int_equal(cc_isotime_parse(NULL, &us), CC_EBADTIME);
}

/* issue 14: every double a span can be, as the wire gives it: 0, negative, NaN, +-inf,
 * 1e300, values just inside and outside the range, the int64 edge. */
static void test_issue_14_span_us_clamps_every_double(void **state)
{
    static const struct {
        double s;
        enum cc_isotime_span want;
        int64_t us;
    } cases[] = {
        {0.0, CC_ISOTIME_SPAN_OK, 0},
        {-0.0, CC_ISOTIME_SPAN_OK, 0},
        {1.0, CC_ISOTIME_SPAN_OK, 1000000},
        {1.5, CC_ISOTIME_SPAN_OK, 1500000},
        {0.0000004, CC_ISOTIME_SPAN_OK, 0},
        {0.0000006, CC_ISOTIME_SPAN_OK, 1},
        {1e-300, CC_ISOTIME_SPAN_OK, 0},
        {86400.25, CC_ISOTIME_SPAN_OK, 86400250000LL},
        {1e11, CC_ISOTIME_SPAN_OK, CC_ISOTIME_SPAN_MAX_US},
        {1e11 + 1, CC_ISOTIME_SPAN_HUGE, CC_ISOTIME_SPAN_MAX_US},
        {1e12, CC_ISOTIME_SPAN_HUGE, CC_ISOTIME_SPAN_MAX_US},
        {9223372036854.775807, CC_ISOTIME_SPAN_HUGE, CC_ISOTIME_SPAN_MAX_US},
        {9223372036854775807.0, CC_ISOTIME_SPAN_HUGE, CC_ISOTIME_SPAN_MAX_US},
        {1e300, CC_ISOTIME_SPAN_HUGE, CC_ISOTIME_SPAN_MAX_US},
        {DBL_MAX, CC_ISOTIME_SPAN_HUGE, CC_ISOTIME_SPAN_MAX_US},
        {INFINITY, CC_ISOTIME_SPAN_HUGE, CC_ISOTIME_SPAN_MAX_US},
        {-1.0, CC_ISOTIME_SPAN_NEGATIVE, -1000000},
        {-1e-300, CC_ISOTIME_SPAN_NEGATIVE, 0},
        {-1e11, CC_ISOTIME_SPAN_NEGATIVE, -CC_ISOTIME_SPAN_MAX_US},
        {-1e300, CC_ISOTIME_SPAN_NEGATIVE, -CC_ISOTIME_SPAN_MAX_US},
        {-INFINITY, CC_ISOTIME_SPAN_NEGATIVE, -CC_ISOTIME_SPAN_MAX_US},
        {NAN, CC_ISOTIME_SPAN_NAN, 0},
        {-NAN, CC_ISOTIME_SPAN_NAN, 0},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t us = 12345;
        enum cc_isotime_span got = cc_isotime_span_us(cases[i].s, &us);

        if (got != cases[i].want || us != cases[i].us)
            fail_msg("case %zu (%g): class %d us %lld, want %d %lld", i, cases[i].s, (int)got,
                     (long long)us, (int)cases[i].want, (long long)cases[i].us);
    }
}

/* now + the longest span is still a date cc_isotime_format writes with four digits, and the
 * saturating add never wraps. */
static void test_issue_14_span_max_stays_formattable(void **state)
{
    char buf[40];
    int64_t now = 1798761600000000LL; /* 2027-01-01 */
    int64_t back;

    (void)state;
    cc_isotime_format(cc_isotime_add_us(now, CC_ISOTIME_SPAN_MAX_US), 1, buf, sizeof(buf));
    assert_string_equal(buf, "5195-11-16T09:46:40+00:00");
    assert_int_equal(cc_isotime_parse(buf, &back), CC_OK);
    assert_true(back == now + CC_ISOTIME_SPAN_MAX_US);
    assert_true(cc_isotime_add_us(INT64_MAX - 5, 10) == INT64_MAX);
    assert_true(cc_isotime_add_us(INT64_MIN + 5, -10) == INT64_MIN);
    assert_true(cc_isotime_add_us(now, -CC_ISOTIME_SPAN_MAX_US) == now - CC_ISOTIME_SPAN_MAX_US);
    assert_true(cc_isotime_add_us(7, 8) == 15);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_iso_parse_and_format),
        cmocka_unit_test(test_iso_parse_rejects),
        cmocka_unit_test(test_issue_14_span_us_clamps_every_double),
        cmocka_unit_test(test_issue_14_span_max_stays_formattable),
    };

    return cmocka_run_group_tests_name("isotime", tests, NULL, NULL);
}
