/* proto/bytes.c: cc_bytes_escape() shows a view from the network in a log line or error
 * text whole-or-marked and unambiguous (issue #14: a content type holding a NUL byte was
 * logged as "application/json"). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "bytes.h"

static cc_bytes_t view(const char *s, size_t len)
{
    cc_bytes_t b = {(const uint8_t *)s, len};
    return b;
}

static void test_bytes_escape_content_type_with_nul(void **state)
{
    char buf[64];

    (void)state;
    assert_string_equal(cc_bytes_escape(view("application/json\0evil", 21), 100, buf, sizeof(buf)),
                        "application/json\\x00evil");
}

static void test_bytes_escape_controls_backslash_high_bytes(void **state)
{
    char buf[64];

    (void)state;
    assert_string_equal(cc_bytes_escape(view("a\\b\n\x1b\xc3\xa9\x7f", 8), 100, buf, sizeof(buf)),
                        "a\\\\b\\x0a\\x1b\\xc3\\xa9\\x7f");
    assert_string_equal(cc_bytes_escape(view("", 0), 100, buf, sizeof(buf)), "");
    cc_bytes_t none = {NULL, 0};
    assert_string_equal(cc_bytes_escape(none, 100, buf, sizeof(buf)), "");
}

static void test_bytes_escape_marks_what_is_left_out(void **state)
{
    char buf[16];

    (void)state;
    /* max_bytes reached: "..." after the shown part. */
    assert_string_equal(cc_bytes_escape(view("abcdefghij", 10), 4, buf, sizeof(buf)), "abcd...");
    /* buffer full: never half an escape, always the marker. */
    assert_string_equal(cc_bytes_escape(view("abcdefgh\0\0\0\0", 12), 100, buf, sizeof(buf)),
                        "abcdefgh\\x00...");
    assert_string_equal(cc_bytes_escape(view("abcdefghijklmnopqrstuvwxyz", 26), 100, buf, 16),
                        "abcdefghijkl...");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytes_escape_content_type_with_nul),
        cmocka_unit_test(test_bytes_escape_controls_backslash_high_bytes),
        cmocka_unit_test(test_bytes_escape_marks_what_is_left_out),
    };

    return cmocka_run_group_tests_name("bytes", tests, NULL, NULL);
}
