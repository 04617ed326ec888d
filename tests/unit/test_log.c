/* Unit tests for src/core/log.c: level parsing, Celery's human line format, JSON lines, task
 * lines, truncation, thresholds. Lines are captured through a pipe. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "log.h"

struct capture {
    int rd, wr;
    char buf[65536];
};

static int setup_pipe(void **state)
{
    struct capture *c = calloc(1, sizeof(*c));
    int fds[2];

    if (c == NULL || pipe(fds) != 0)
        return -1;
    c->rd = fds[0];
    c->wr = fds[1];
    fcntl(c->rd, F_SETFL, O_NONBLOCK);
    *state = c;
    return 0;
}

static int teardown_pipe(void **state)
{
    struct capture *c = *state;

    cc_log_init(CC_LOG_WARNING, CC_LOG_HUMAN, -1);
    cc_log_set_process("MainProcess");
    close(c->rd);
    close(c->wr);
    free(c);
    return 0;
}

/* Everything written since the last call, NUL-terminated. */
static const char *drain(struct capture *c)
{
    size_t n = 0;
    ssize_t r;

    while ((r = read(c->rd, c->buf + n, sizeof(c->buf) - 1 - n)) > 0)
        n += (size_t)r;
    c->buf[n] = '\0';
    return c->buf;
}

static void assert_matches(const char *s, const char *pattern)
{
    regex_t re;

    assert_int_equal(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
    if (regexec(&re, s, 0, NULL, 0) != 0) {
        regfree(&re);
        fail_msg("line '%s' does not match /%s/", s, pattern);
    }
    regfree(&re);
}

static void test_log_level_parse(void **state)
{
    static const struct {
        const char *in;
        int want;
    } cases[] = {
        {"debug", CC_LOG_DEBUG},
        {"INFO", CC_LOG_INFO},
        {"Warning", CC_LOG_WARNING},
        {"warn", CC_LOG_WARNING},
        {"error", CC_LOG_ERROR},
        {"CRITICAL", CC_LOG_CRITICAL},
        {"fatal", CC_LOG_CRITICAL},
        {"10", 10},
        {"25", 25},
        {"0", 0},
        {"", -1},
        {"verbose", -1},
        {"10x", -1},
        {"-5", -1},
        {"101", -1},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (cc_log_level_parse(cases[i].in) != cases[i].want)
            fail_msg("'%s' -> %d, want %d", cases[i].in, cc_log_level_parse(cases[i].in),
                     cases[i].want);
    }
    assert_int_equal(cc_log_level_parse(NULL), -1);
}

static void test_log_human_format(void **state)
{
    struct capture *c = *state;

    cc_log_init(CC_LOG_INFO, CC_LOG_HUMAN, c->wr);
    cc_log(CC_LOG_INFO, "celery@%s ready.", "host");
    assert_matches(drain(c), "^\\[[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2},[0-9]{3}: "
                             "INFO/MainProcess\\] celery@host ready\\.\n$");

    cc_log_set_process("ForkPoolWorker-1");
    cc_warn("careful %d", 3);
    assert_matches(drain(c), "^\\[[-0-9 :,]{23}: WARNING/ForkPoolWorker-1\\] careful 3\n$");

    cc_log(25, "custom");
    assert_matches(drain(c), "^\\[[-0-9 :,]{23}: Level 25/ForkPoolWorker-1\\] custom\n$");
}

static void test_log_task_format(void **state)
{
    struct capture *c = *state;

    cc_log_init(CC_LOG_DEBUG, CC_LOG_HUMAN, c->wr);
    cc_log_set_process("ForkPoolWorker-2");
    cc_log_task(CC_LOG_INFO, "app.add", "d7b3c6f5-1c0e-4c5e-8f7a-2b1f0c9e8a11", "Task %s", "x");
    assert_matches(drain(c), "^\\[[-0-9 :,]{23}: INFO/ForkPoolWorker-2\\] "
                             "app\\.add\\[d7b3c6f5-1c0e-4c5e-8f7a-2b1f0c9e8a11\\]: Task x\n$");
}

static void test_log_threshold(void **state)
{
    struct capture *c = *state;

    cc_log_init(CC_LOG_WARNING, CC_LOG_HUMAN, c->wr);
    assert_false(cc_log_enabled(CC_LOG_INFO));
    assert_true(cc_log_enabled(CC_LOG_WARNING));
    assert_true(cc_log_enabled(CC_LOG_CRITICAL));
    cc_info("hidden");
    cc_debug("hidden");
    cc_log_task(CC_LOG_INFO, "t", "i", "hidden");
    assert_string_equal(drain(c), "");
    cc_error("shown");
    assert_non_null(strstr(drain(c), "ERROR/MainProcess] shown\n"));
}

static void test_log_preserves_errno(void **state)
{
    struct capture *c = *state;

    cc_log_init(CC_LOG_DEBUG, CC_LOG_HUMAN, c->wr);
    errno = ECONNREFUSED;
    cc_info("connect: %s", strerror(errno));
    assert_int_equal(errno, ECONNREFUSED);
    drain(c);
}

static json_t *parse_line(const char *line)
{
    json_error_t jerr;
    size_t len = strlen(line);
    json_t *j;

    assert_true(len > 0);
    assert_int_equal(line[len - 1], '\n');
    assert_null(memchr(line, '\n', len - 1)); /* exactly one line */
    j = json_loadb(line, len - 1, 0, &jerr);
    if (j == NULL)
        fail_msg("not JSON (%s): %s", jerr.text, line);
    return j;
}

static void test_log_json_format(void **state)
{
    struct capture *c = *state;
    json_t *j;

    cc_log_init(CC_LOG_INFO, CC_LOG_JSON, c->wr);
    cc_log(CC_LOG_INFO, "quote \" backslash \\ nl \n tab \t ctl \x01 utf8 \xc3\xa9 bad \xff end");
    j = parse_line(drain(c));
    assert_matches(json_string_value(json_object_get(j, "ts")),
                   "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6}Z$");
    assert_string_equal(json_string_value(json_object_get(j, "level")), "INFO");
    assert_string_equal(json_string_value(json_object_get(j, "process")), "MainProcess");
    assert_int_equal(json_integer_value(json_object_get(j, "pid")), getpid());
    assert_string_equal(json_string_value(json_object_get(j, "msg")),
                        "quote \" backslash \\ nl \n tab \t ctl \x01 utf8 \xc3\xa9 bad "
                        "\xef\xbf\xbd end");
    assert_null(json_object_get(j, "task"));
    json_decref(j);

    cc_log_task(CC_LOG_ERROR, "app.fail", "id-1", "Task raised %s", "ValueError('x')");
    j = parse_line(drain(c));
    assert_string_equal(json_string_value(json_object_get(j, "level")), "ERROR");
    assert_string_equal(json_string_value(json_object_get(j, "task")), "app.fail");
    assert_string_equal(json_string_value(json_object_get(j, "task_id")), "id-1");
    assert_string_equal(json_string_value(json_object_get(j, "msg")),
                        "Task raised ValueError('x')");
    json_decref(j);
}

static void test_log_long_line_truncated(void **state)
{
    struct capture *c = *state;
    size_t n = 20000;
    char *big = malloc(n + 1);
    const char *line;
    size_t len;
    json_t *j;

    assert_non_null(big);
    memset(big, 'x', n);
    big[n] = '\0';
    cc_log_init(CC_LOG_INFO, CC_LOG_HUMAN, c->wr);
    cc_info("%s", big);
    line = drain(c);
    len = strlen(line);
    assert_true(len > 8000 && len < 8400);
    /* The cut is marked with how much was left out (20000 - 8191 kept). */
    assert_non_null(strstr(line, "...[+11809 bytes]\n"));
    assert_string_equal(line + len - 18, "...[+11809 bytes]\n");
    assert_null(memchr(line, '\n', len - 1));

    /* JSON: escaping makes it longer (a '"' is two bytes); still one valid object. */
    memset(big, '"', n);
    cc_log_init(CC_LOG_INFO, CC_LOG_JSON, c->wr);
    cc_info("%s", big);
    j = parse_line(drain(c));
    {
        const char *msg = json_string_value(json_object_get(j, "msg"));

        assert_true(strlen(msg) > 4000 && strlen(msg) < 8200);
        assert_non_null(strstr(msg, "...[+"));
        assert_string_equal(msg + strlen(msg) - 7, " bytes]");
    }
    json_decref(j);
    free(big);
}

/* ---- Message-derived fields (issue #14) ------------------------------------------------ */

static char *repeat(const char *unit, size_t n_units)
{
    size_t u = strlen(unit);
    char *s = malloc(u * n_units + 1);

    assert_non_null(s);
    for (size_t i = 0; i < n_units; i++)
        memcpy(s + i * u, unit, u);
    s[u * n_units] = '\0';
    return s;
}

static void test_log_str_keeps_short_fields(void **state)
{
    char *at = repeat("a", CC_LOG_FIELD_MAX);
    static const char id[] = "2b4fd78d-825e-401a-b839-d8415726f5a8";

    (void)state;
    assert_ptr_equal(cc_log_str(id), id); /* short: the string itself */
    assert_string_equal(cc_log_str("demo.add"), "demo.add");
    assert_ptr_equal(cc_log_str(at), at); /* at the limit: the string itself, no copy */
    assert_string_equal(cc_log_str(NULL), "(null)");
    free(at);
}

static void test_log_str_cuts_long_fields_with_their_length(void **state)
{
    char *big = repeat("x", 120000);
    char *over = repeat("y", CC_LOG_FIELD_MAX + 1);
    char want[CC_LOG_FIELD_MAX + 64];
    const char *s;

    (void)state;
    s = cc_log_str(big);
    snprintf(want, sizeof(want), "%.*s...[+%d bytes]", CC_LOG_FIELD_MAX, big,
             120000 - CC_LOG_FIELD_MAX);
    assert_string_equal(s, want);
    assert_string_equal(cc_log_str(over) + CC_LOG_FIELD_MAX, "...[+1 bytes]");
    /* A wider cap for texts (exception messages from the wire). */
    s = cc_log_strn(big, CC_LOG_TEXT_MAX);
    assert_int_equal(strlen(s), CC_LOG_TEXT_MAX + strlen("...[+118976 bytes]"));
    free(big);
    free(over);
}

static void test_log_str_cuts_on_a_utf8_boundary(void **state)
{
    char *big = repeat("\xF0\x9F\x98\x80", 100); /* 400 bytes of 4-byte characters */
    const char *s;
    size_t kept;

    (void)state;
    s = cc_log_str(big);
    kept = (size_t)(strstr(s, "...[+") - s);
    assert_true(kept <= CC_LOG_FIELD_MAX && kept % 4 == 0 && kept >= CC_LOG_FIELD_MAX - 3);
    assert_int_equal(atoi(s + kept + 5), (int)(400 - kept));
    free(big);
}

/* Several fields in one log call each get their own buffer. */
static void test_log_str_ring_serves_one_call(void **state)
{
    char *a = repeat("a", 1000), *b = repeat("b", 1000), *c = repeat("c", 1000);
    char line[2048];

    (void)state;
    snprintf(line, sizeof(line), "%s|%s|%s", cc_log_str(a), cc_log_str(b), cc_log_str(c));
    assert_int_equal(line[0], 'a');
    assert_non_null(strstr(line, "|bbbb"));
    assert_non_null(strstr(line, "|cccc"));
    assert_int_equal(strlen(line), 3 * (CC_LOG_FIELD_MAX + strlen("...[+800 bytes]")) + 2);
    free(a);
    free(b);
    free(c);
}

/* cc_log_task cuts the task name and id itself (Celery's task logger prefix). */
/* issue 14 (found by the fuzz campaign): a task id with a newline wrote a forged log line
 * ("abc\n[...: CRITICAL/MainProcess] forged"). Control bytes of a message-derived field are
 * escaped, so a field never starts a line of its own; the cut still counts source bytes. */
static void test_log_str_escapes_control_bytes_no_forged_lines(void **state)
{
    char big[600];
    const char *s;

    (void)state;
    assert_string_equal(cc_log_str("abc\n[2026-01-01 00:00:00,000: CRITICAL/MainProcess] x"),
                        "abc\\n[2026-01-01 00:00:00,000: CRITICAL/MainProcess] x");
    assert_string_equal(cc_log_str("a\rb\tc\x1b[31md\x7f"), "a\\rb\\tc\\x1b[31md\\x7f");
    memset(big, '\n', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    s = cc_log_str(big); /* 100 escapes of 2 bytes fill the 200, 499 bytes left out */
    assert_null(strchr(s, '\n'));
    assert_string_equal(s + 200, "...[+499 bytes]");
    memset(big, 'x', sizeof(big) - 1);
    big[199] = '\n'; /* the escape would end past the limit: cut before it */
    s = cc_log_str(big);
    assert_null(strchr(s, '\n'));
    assert_string_equal(s + 199, "...[+400 bytes]");
}

static void test_log_task_prefix_cut(void **state)
{
    struct capture *c = *state;
    char *name = repeat("n", 120000), *id = repeat("i", 120000);
    const char *line;

    cc_log_init(CC_LOG_INFO, CC_LOG_HUMAN, c->wr);
    cc_log_task(CC_LOG_INFO, name, id, "hello");
    line = drain(c);
    assert_true(strlen(line) < 1024);
    assert_non_null(strstr(line, "nnn...[+119800 bytes][iii"));
    assert_non_null(strstr(line, "iii...[+119800 bytes]]: hello\n"));
    cc_log_init(CC_LOG_INFO, CC_LOG_JSON, c->wr);
    cc_log_task(CC_LOG_INFO, name, id, "hello");
    line = drain(c);
    assert_true(strlen(line) < 1024);
    free(name);
    free(id);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_log_level_parse, setup_pipe, teardown_pipe),
        cmocka_unit_test_setup_teardown(test_log_human_format, setup_pipe, teardown_pipe),
        cmocka_unit_test_setup_teardown(test_log_task_format, setup_pipe, teardown_pipe),
        cmocka_unit_test_setup_teardown(test_log_threshold, setup_pipe, teardown_pipe),
        cmocka_unit_test_setup_teardown(test_log_preserves_errno, setup_pipe, teardown_pipe),
        cmocka_unit_test_setup_teardown(test_log_json_format, setup_pipe, teardown_pipe),
        cmocka_unit_test_setup_teardown(test_log_long_line_truncated, setup_pipe, teardown_pipe),
        cmocka_unit_test(test_log_str_keeps_short_fields),
        cmocka_unit_test(test_log_str_cuts_long_fields_with_their_length),
        cmocka_unit_test(test_log_str_cuts_on_a_utf8_boundary),
        cmocka_unit_test(test_log_str_ring_serves_one_call),
        cmocka_unit_test(test_log_str_escapes_control_bytes_no_forged_lines),
        cmocka_unit_test_setup_teardown(test_log_task_prefix_cut, setup_pipe, teardown_pipe),
    };

    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
