/* Unit tests for proto/pickle.c: protocol-2 pickles of JSON values compared byte for byte
 * with what CPython's pickle.dumps(obj, protocol=2) writes. The expected bytes come from
 * /usr/bin/python3 itself, run by the test (skipped when it is missing), plus a few
 * hard-coded goldens (the fixture db-backend-postgres.json and values checked by hand).
 * Values in which Python would share an object (a repeated dict key, a one-character string
 * twice) are checked by round trip instead: Python unpickles our bytes and compares them
 * with the expected value.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers/fixture.h"
#include "pickle.h"

#define PYTHON "/usr/bin/python3"

static char *to_hex(const char *p, size_t n)
{
    char *h = malloc(2 * n + 1);

    assert_non_null(h);
    for (size_t i = 0; i < n; i++)
        sprintf(h + 2 * i, "%02x", (unsigned char)p[i]);
    h[2 * n] = '\0';
    return h;
}

/* mode: 'p' plain value, 't' top-level array as a tuple, 'e' cc_pickle_result("FAILURE"). */
static char *pickle_hex(const char *json_in, char mode)
{
    json_error_t jerr;
    json_t *v = json_loads(json_in, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    struct cc_err err = {0};
    char *out = NULL, *hex;
    size_t len = 0;
    int rc;

    if (v == NULL)
        fail_msg("bad test JSON %s: %s", json_in, jerr.text);
    if (mode == 'e')
        rc = cc_pickle_result("FAILURE", v, &out, &len, &err);
    else
        rc = cc_pickle_dumps(v, mode == 't', &out, &len, &err);
    assert_int_equal(rc, CC_OK);
    hex = to_hex(out, len);
    free(out);
    json_decref(v);
    return hex;
}

/* ---- Hard-coded goldens ---------------------------------------------------------------- */

static void test_pickle_golden(void **state)
{
    static const struct {
        const char *json;
        char mode;
        const char *hex;
    } cases[] = {
        {"5", 'p', "80024b052e"},
        {"0", 'p', "80024b002e"},
        {"null", 'p', "80024e2e"},
        {"true", 'p', "8002882e"},
        {"false", 'p', "8002892e"},
        {"256", 'p', "80024d00012e"},
        {"65536", 'p', "80024a000001002e"},
        {"-1", 'p', "80024affffffff2e"},
        {"2147483648", 'p', "80028a0500000080002e"},
        {"-2147483649", 'p', "80028a05ffffff7fff2e"},
        {"9223372036854775807", 'p', "80028a08ffffffffffffff7f2e"},
        {"-9223372036854775808", 'p', "80028a0800000000000000802e"},
        {"2.5", 'p', "80024740040000000000002e"},
        {"\"x\"", 'p', "800258010000007871002e"},
        {"[]", 'p', "80025d71002e"},
        {"{}", 'p', "80027d71002e"},
        {"[]", 't', "8002292e"},
        {"[1]", 't', "80024b018571002e"},
        /* c_written_rows_roundtrip.exc_dict_protocol2_hex (pickle.dumps by Python 3.11) */
        {"{\"exc_type\": \"ValueError\", \"exc_message\": [\"from C\"], \"exc_module\": "
         "\"builtins\"}",
         'p',
         "80027d71002858080000006578635f747970657101580a00000056616c75654572726f727102580b0000"
         "006578635f6d65737361676571035d7104580600000066726f6d2043710561580a0000006578635f6d6f"
         "64756c65710658080000006275696c74696e737107752e"},
        /* The same with exc_message a tuple, as Celery's database backend stores FAILURE. */
        {"{\"exc_type\": \"ValueError\", \"exc_message\": [\"boom\"], \"exc_module\": "
         "\"builtins\"}",
         'e',
         "80027d71002858080000006578635f747970657101580a00000056616c75654572726f727102580b0000"
         "006578635f6d65737361676571035804000000626f6f6d7104857105580a0000006578635f6d6f64756c"
         "65710658080000006275696c74696e737107752e"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *got = pickle_hex(cases[i].json, cases[i].mode);

        if (strcmp(got, cases[i].hex) != 0)
            fail_msg("%s (%c): got %s want %s", cases[i].json, cases[i].mode, got, cases[i].hex);
        free(got);
    }
}

/* ---- Against CPython ------------------------------------------------------------------- */

/* 'b': bytes must equal pickle.dumps(obj, 2); 'r': round trip only (Python shares objects). */
static const struct {
    const char *json;
    char mode;
    char check;
} py_cases[] = {
    {"5", 'p', 'b'},
    {"255", 'p', 'b'},
    {"256", 'p', 'b'},
    {"65535", 'p', 'b'},
    {"65536", 'p', 'b'},
    {"2147483647", 'p', 'b'},
    {"2147483648", 'p', 'b'},
    {"-2147483648", 'p', 'b'},
    {"-2147483649", 'p', 'b'},
    {"-1", 'p', 'b'},
    {"-128", 'p', 'b'},
    {"-129", 'p', 'b'},
    {"-32768", 'p', 'b'},
    {"4294967295", 'p', 'b'},
    {"4294967296", 'p', 'b'},
    {"-4294967296", 'p', 'b'},
    {"1099511627776", 'p', 'b'},
    {"-549755813888", 'p', 'b'},
    {"-549755813889", 'p', 'b'},
    {"140737488355327", 'p', 'b'},
    {"-140737488355328", 'p', 'b'},
    {"9223372036854775807", 'p', 'b'},
    {"-9223372036854775808", 'p', 'b'},
    {"-9223372036854775807", 'p', 'b'},
    {"2.5", 'p', 'b'},
    {"0.1", 'p', 'b'},
    {"-0.0", 'p', 'b'},
    {"1e300", 'p', 'b'},
    {"5e-324", 'p', 'b'},
    {"null", 'p', 'b'},
    {"true", 'p', 'b'},
    {"false", 'p', 'b'},
    {"\"\"", 'p', 'b'},
    {"\"hello\"", 'p', 'b'},
    {"\"caf\\u00e9 \\u65e5\\u672c \\ud83d\\ude00\"", 'p', 'b'},
    {"\"nul\\u0000byte\"", 'p', 'b'},
    {"[]", 'p', 'b'},
    {"{}", 'p', 'b'},
    {"[1]", 'p', 'b'},
    {"[1, 2]", 'p', 'b'},
    {"{\"one\": 1}", 'p', 'b'},
    {"{\"a\": [1, 2.5, null, true, \"x\"]}", 'p', 'b'},
    {"{\"k1\": {\"k2\": [[], {}, [\"deep\", [\"er\"]]]}, \"k3\": -7}", 'p', 'b'},
    {"{\"pid\": 22965, \"hostname\": \"w2@vm\"}", 'p', 'b'},
    {"[]", 't', 'b'},
    {"[1]", 't', 'b'},
    {"[1, \"two\"]", 't', 'b'},
    {"[1, \"two\", 3.0]", 't', 'b'},
    {"[1, \"two\", 3.0, null]", 't', 'b'},
    {"[\"custom failure\", 42]", 't', 'b'},
    {"{\"exc_type\": \"ValueError\", \"exc_message\": [\"boom\"], \"exc_module\": "
     "\"builtins\"}",
     'e', 'b'},
    {"{\"exc_type\": \"CustomError\", \"exc_message\": [\"custom failure\", 42], "
     "\"exc_module\": \"app\"}",
     'e', 'b'},
    {"{\"exc_type\": \"TaskRevokedError\", \"exc_message\": [], \"exc_module\": "
     "\"celery.exceptions\"}",
     'e', 'b'},
    {"{\"exc_type\": \"KeyError\", \"exc_message\": [\"k\", [1, {\"nested\": 2}], null, 4.5], "
     "\"exc_module\": \"builtins\"}",
     'e', 'b'},
    /* exc_message not a list: written as it is (Celery would have a tuple of one string) */
    {"{\"exc_type\": \"ValueError\", \"exc_message\": \"boom\", \"exc_module\": \"builtins\"}", 'e',
     'b'},
    /* Shared objects in Python: compare values. */
    {"[{\"a\": 1}, {\"a\": 2}]", 'p', 'r'},
    {"[\"x\", \"x\", \"\", \"\"]", 'p', 'r'},
    {"{\"x\": \"x\"}", 'p', 'r'},
};

/* The generator/checker run by python3: each input line is "<mode> <hex> <json>"; it prints
 * pickle.dumps(obj, 2).hex() and whether pickle.loads(our bytes) == obj. */
static const char py_script[] =
    "import json, pickle, sys\n"
    "for line in sys.stdin:\n"
    "    mode, ours, text = line.rstrip('\\n').split(' ', 2)\n"
    "    obj = json.loads(text)\n"
    "    if mode == 't':\n"
    "        obj = tuple(obj)\n"
    "    elif mode == 'e' and isinstance(obj.get('exc_message'), list):\n"
    "        obj['exc_message'] = tuple(obj['exc_message'])\n"
    "    back = pickle.loads(bytes.fromhex(ours))\n"
    "    same = back == obj and type(back) is type(obj) and repr(back) == repr(obj)\n"
    "    print(pickle.dumps(obj, protocol=2).hex(), 'same' if same else 'DIFF:' + repr(back))\n";

static void test_pickle_against_python(void **state)
{
    char in_path[] = "/tmp/cc_test_pickle_in_XXXXXX";
    char script_path[] = "/tmp/cc_test_pickle_py_XXXXXX";
    char out_path[64], cmd[256];
    size_t n = sizeof(py_cases) / sizeof(py_cases[0]);
    char **ours = calloc(n, sizeof(char *));
    int fd_in, fd_py;
    FILE *f;
    char *text, *line, *save = NULL;
    size_t i = 0;

    (void)state;
    if (access(PYTHON, X_OK) != 0)
        skip();
    assert_non_null(ours);
    fd_in = mkstemp(in_path);
    fd_py = mkstemp(script_path);
    assert_true(fd_in >= 0 && fd_py >= 0);
    assert_int_equal(write(fd_py, py_script, strlen(py_script)), (ssize_t)strlen(py_script));
    close(fd_py);
    f = fdopen(fd_in, "w");
    assert_non_null(f);
    for (i = 0; i < n; i++) {
        ours[i] = pickle_hex(py_cases[i].json, py_cases[i].mode);
        fprintf(f, "%c %s %s\n", py_cases[i].mode, ours[i], py_cases[i].json);
    }
    fclose(f);
    snprintf(out_path, sizeof(out_path), "%s.out", in_path);
    snprintf(cmd, sizeof(cmd), PYTHON " %s < %s > %s", script_path, in_path, out_path);
    assert_int_equal(system(cmd), 0);
    text = fixture_read_file(out_path, NULL);
    assert_non_null(text);
    i = 0;
    for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        char *sp = strchr(line, ' ');

        assert_true(i < n);
        assert_non_null(sp);
        *sp = '\0';
        if (strcmp(sp + 1, "same") != 0)
            fail_msg("%s: Python unpickled our %s as %s", py_cases[i].json, ours[i], sp + 1);
        if (py_cases[i].check == 'b' && strcmp(line, ours[i]) != 0)
            fail_msg("%s (%c): ours %s, Python %s", py_cases[i].json, py_cases[i].mode, ours[i],
                     line);
        i++;
    }
    assert_int_equal(i, n);
    for (i = 0; i < n; i++)
        free(ours[i]);
    free(ours);
    free(text);
    unlink(in_path);
    unlink(script_path);
    unlink(out_path);
}

/* ---- Batches, memo past 255, errors ------------------------------------------------------ */

static void test_pickle_large_against_python(void **state)
{
    /* 2500-element list and a 1500-key dict: APPENDS/SETITEMS batches of 1000 and
     * LONG_BINPUT once the memo passes 255. */
    json_t *list = json_array(), *dict = json_object(), *both;
    char script_path[] = "/tmp/cc_test_pickle_big_XXXXXX";
    char key[32], cmd[256], *out = NULL, *hex, *json_text;
    struct cc_err err = {0};
    size_t len = 0;
    FILE *f;
    int fd;

    (void)state;
    if (access(PYTHON, X_OK) != 0)
        skip();
    for (int i = 0; i < 2500; i++)
        json_array_append_new(list, i % 2 ? json_integer(i) : json_sprintf("s%d", i));
    for (int i = 0; i < 1500; i++) {
        snprintf(key, sizeof(key), "key%d", i);
        json_object_set_new(dict, key, json_real(i + 0.5));
    }
    both = json_pack("[oo]", list, dict);
    assert_int_equal(cc_pickle_dumps(both, false, &out, &len, &err), CC_OK);
    hex = to_hex(out, len);
    json_text = json_dumps(both, JSON_COMPACT);
    fd = mkstemp(script_path);
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    assert_non_null(f);
    /* The JSON text goes between triple quotes: it has no quote or backslash. */
    fprintf(f,
            "import json, pickle\n"
            "obj = json.loads('''%s''')\n"
            "ours = '%s'\n"
            "assert pickle.dumps(obj, protocol=2).hex() == ours, 'bytes differ'\n"
            "assert pickle.loads(bytes.fromhex(ours)) == obj\n",
            json_text, hex);
    fclose(f);
    snprintf(cmd, sizeof(cmd), PYTHON " %s", script_path);
    assert_int_equal(system(cmd), 0);
    unlink(script_path);
    free(json_text);
    free(hex);
    free(out);
    json_decref(both);
}

static void test_pickle_depth_limit(void **state)
{
    json_t *v = json_array(), *cur = v;
    struct cc_err err = {0};
    char *out = NULL;
    size_t len = 0;

    (void)state;
    for (int i = 0; i < CC_PICKLE_MAX_DEPTH + 5; i++) {
        json_t *inner = json_array();

        json_array_append_new(cur, inner);
        cur = inner;
    }
    assert_int_equal(cc_pickle_dumps(v, false, &out, &len, &err), CC_ERANGE);
    assert_null(out);
    json_decref(v);
}

static void test_pickle_result_states(void **state)
{
    json_t *exc = json_pack("{s:s, s:[s], s:s}", "exc_type", "ValueError", "exc_message", "boom",
                            "exc_module", "builtins");
    const char *tuple_states[] = {"FAILURE", "RETRY", "REVOKED"};
    char *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    struct cc_err err = {0};

    (void)state;
    assert_true(cc_pickle_is_exc(exc));
    assert_false(cc_pickle_is_exc(json_object_get(exc, "exc_message")));
    /* SUCCESS of a dict that looks like an exception: a plain dict with a list. */
    assert_int_equal(cc_pickle_result("SUCCESS", exc, &a, &alen, &err), CC_OK);
    assert_non_null(memchr(a, ']', alen));
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(cc_pickle_result(tuple_states[i], exc, &b, &blen, &err), CC_OK);
        assert_null(memchr(b, ']', blen)); /* TUPLE1 instead of EMPTY_LIST ... APPEND */
        assert_non_null(memchr(b, 0x85, blen));
        free(b);
        b = NULL;
    }
    free(a);
    /* NULL result: None */
    assert_int_equal(cc_pickle_result("RETRY", NULL, &a, &alen, &err), CC_OK);
    assert_int_equal(alen, 4);
    assert_memory_equal(a, "\x80\x02N.", 4);
    free(a);
    json_decref(exc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pickle_golden),
        cmocka_unit_test(test_pickle_against_python),
        cmocka_unit_test(test_pickle_large_against_python),
        cmocka_unit_test(test_pickle_depth_limit),
        cmocka_unit_test(test_pickle_result_states),
    };

    return cmocka_run_group_tests_name("pickle", tests, NULL, NULL);
}
