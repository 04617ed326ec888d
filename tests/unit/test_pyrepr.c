/* Unit tests for proto/pyrepr.c and the float repr in proto/strbuf.c: Python repr() of JSON
 * values, tuples, exceptions, truncation; expected strings produced by CPython 3.11. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "pyrepr.h"
#include "strbuf.h"

static void check(const char *json_in, int as_tuple, const char *want)
{
    json_error_t jerr;
    json_t *v = json_loads(json_in, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    char *got;

    if (v == NULL)
        fail_msg("%s: %s", json_in, jerr.text);
    got = cc_pyrepr(v, as_tuple, 0);
    assert_non_null(got);
    if (strcmp(got, want) != 0)
        fail_msg("repr(%s): got <%s> want <%s>", json_in, got, want);
    free(got);
    json_decref(v);
}

static void test_pyrepr_values(void **state)
{
    (void)state;
    check("[2, 3]", 1, "(2, 3)");
    check("[2, 3]", 0, "[2, 3]");
    check("[]", 1, "()");
    check("[1]", 1, "(1,)");
    check("[[1]]", 1, "([1],)");
    check("{}", 0, "{}");
    check("{\"x\": 1, \"y\": 2}", 0, "{'x': 1, 'y': 2}");
    check("{\"y\": 1, \"x\": 2}", 0, "{'y': 1, 'x': 2}");
    check("\"it's\"", 0, "\"it's\"");
    check("\"say \\\"hi\\\" it's\"", 0, "'say \"hi\" it\\'s'");
    check("\"\\\"\"", 0, "'\"'");
    check("\"a\\nb\\tc\\\\d\\u0001\\u007f\\r\"", 0, "'a\\nb\\tc\\\\d\\x01\\x7f\\r'");
    check("\"\\u00fc\\u00a0\\u00ad\\u2028\\ud83d\\ude00\"", 0,
          "'\xc3\xbc\\xa0\\xad\\u2028\xf0\x9f\x98\x80'");
    check("\"nul\\u0000\"", 0, "'nul\\x00'");
    check("[null, true, false, 1.5, 1e100, 1e16, 1e-05, 0.0001, 0.1, -0.0, 100.0, "
          "123456789012345680.0]",
          0,
          "[None, True, False, 1.5, 1e+100, 1e+16, 1e-05, 0.0001, 0.1, -0.0, 100.0, "
          "1.2345678901234568e+17]");
    check("{\"a\": [1, {\"b\": null}]}", 0, "{'a': [1, {'b': None}]}");
    check("-9223372036854775808", 0, "-9223372036854775808");
}

static void test_pyrepr_float_shortest(void **state)
{
    static const struct {
        const char *hex;
        const char *want;
    } cases[] = {
        {"0x0.0000000000001p-1022", "5e-324"},
        {"0x1.0000000000000p-1022", "2.2250738585072014e-308"},
        {"0x1.fffffffffffffp+1023", "1.7976931348623157e+308"},
        {"0x1.3333333333333p-2", "0.3"},
        {"0x1.5555555555555p-1", "0.6666666666666666"},
        {"0x1.5555555555555p-2", "0.3333333333333333"},
        {"0x1.0000000000000p+53", "9007199254740992.0"},
        {"0x1.0f0cf064dd592p+73", "1e+22"},
        {"0x1.52d02c7e14af6p+76", "1e+23"},
        {"0x1.e240c9fbe76c9p+16", "123456.789"},
        {"0x1.a36e2eb1c432dp-15", "5e-05"},
        {"0x1.1c37937e07fffp+53", "9999999999999998.0"},
        {"0x1.c6bf526340000p+49", "1000000000000000.0"},
        {"0x1.3333333333334p-2", "0.30000000000000004"},
        {"0x1.0000000000000p-1022", "2.2250738585072014e-308"},
        {"0x1.0000000000000p+60", "1.152921504606847e+18"},
        {"0x1.cd5f99c38b04bp-14", "0.00011"},
        {"0x1.921f9f01b866ep+1", "3.14159"},
        {"-0x1.0c6f7a0b5ed8dp-22", "-2.5e-07"},
        {"0x1.74de452e6b438p+811", "1.989032661366619e+244"},
        {"-0x1.54f7b4de6bc41p+19", "-698301.6521509961"},
        {"0x1.c7fd0a6a3a450p-827", "1.9902491793487935e-249"},
        {"-0x1.a18aeda73d2dcp+19", "-855127.4266649145"},
        {"0x1.8e811892f902bp-639", "6.823792259378784e-193"},
        {"-0x1.06538aa29bbfep+18", "-268622.1661748289"},
        {"0x1.25d940ed90475p+655", "1.7160537630466207e+197"},
        {"0x1.d0bbbb24d45c0p+13", "14871.466378840501"},
        {"0x1.0a35a099950d8p-671", "1.0613447212142254e-202"},
        {"-0x1.033250fb807b4p+17", "-132708.6326752283"},
        {"0x1.c172411e20b8fp-39", "3.1935080792567816e-12"},
        {"-0x1.8fb1bf255fc60p+19", "-818573.9733122699"},
        {"0x1.1ddb66cad4a26p-781", "8.779753225680271e-236"},
        {"0x1.3f3107faa06d8p+19", "653704.249344076"},
        {"0x1.c105d1fb17c23p+809", "5.988180159386011e+243"},
        {"-0x1.0e464243e0f0cp+19", "-553522.0707859709"},
        {"0x1.f48f1a09f76b5p-685", "1.2180588497424205e-206"},
        {"0x1.b5373c5137304p+19", "895417.8849140112"},
        {"0x1.60af593bd04cfp-673", "3.51527970626667e-203"},
        {"-0x1.9397867d49564p+17", "-206639.0506984397"},
        {"0x1.8d190f9ebdaccp-119", "2.3339316590906048e-36"},
        {"-0x1.baca5470c238fp+19", "-906834.6387644875"},
        {"0x1.7beaddbc496cbp-479", "9.507828700398311e-145"},
        {"-0x1.9aeb5b597bcf6p+18", "-420781.4273366475"},
        {"0x1.a63ec24ede6a4p-857", "1.7163996725272777e-258"},
        {"-0x1.753ff0c352f28p+19", "-764415.5238432633"},
        {"0x1.d05584ef8aa38p-777", "2.2818334634712625e-234"},
        {"0x1.34b796fbd2958p+19", "632252.7182400627"},
        {"0x1.1dbe22e44158bp-601", "1.3449551894627777e-181"},
        {"0x1.3ec029e5c88c0p+17", "163200.32732493244"},
        {"0x1.850c5a38fd547p-255", "2.624911154407152e-77"},
        {"-0x1.f272750fed2dcp+17", "-255204.91454853758"},
        {"0x1.ce4228c38fb29p-155", "3.953625698224792e-47"},
        {"-0x1.aaf6c19a097dap+19", "-874422.0500533537"},
        {"0x1.769b10f4205b4p-537", "3.252570930774386e-162"},
        {"-0x1.1f2652612b0c2p+19", "-588082.5743613469"},
        {"0x1.ed162ae2eb154p-895", "7.291839631379274e-270"},
        {"-0x1.1ad7b1bfa6674p+17", "-144815.38866119424"},
        {"0x1.1af10506bf2efp+883", "7.127591994849806e+265"},
        {"0x1.4e39dd0ed62c0p+17", "171123.72701527737"},
        {"0x1.0a9587403e430p+457", "3.875272870774454e+137"},
        {"-0x1.87148066c556ep+18", "-400466.0062726353"},
        {"0x1.5319acb5c7427p-287", "5.326960081783017e-87"},
        {"0x1.84a93784735a0p+18", "397988.8674591426"},
        {"0x1.4733f3e7d1bfbp-689", "4.976342004501224e-208"},
        {"0x1.22b7b5d383238p+17", "148847.42051734193"},
        {"0x1.ff20686734721p+1003", "1.711489199473536e+302"},
        {"0x1.6e585fb7799d8p+19", "750274.9911468579"},
        {"0x1.6cc3ababced20p+815", "3.113284956169447e+245"},
        {"-0x1.9e2f1e18140fep+18", "-424124.4702196269"},
    };
    char buf[40];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        double d = strtod(cases[i].hex, NULL);

        cc_strbuf_float_repr(d, buf);
        if (strcmp(buf, cases[i].want) != 0)
            fail_msg("%s: got %s want %s", cases[i].hex, buf, cases[i].want);
    }
    /* Round trip on a deterministic spread of bit patterns. */
    for (uint64_t i = 1, bits = 0x9e3779b97f4a7c15u; i < 20000; i++) {
        double d;

        bits = bits * 6364136223846793005u + 1442695040888963407u;
        memcpy(&d, &bits, sizeof(d));
        if (d != d || d - d != 0)
            continue;
        cc_strbuf_float_repr(d, buf);
        assert_true(strtod(buf, NULL) == d);
    }
    cc_strbuf_float_repr(1.0 / 0.0, buf);
    assert_string_equal(buf, "inf");
    cc_strbuf_float_repr(0.0 / 0.0, buf);
    assert_string_equal(buf, "nan");
}

static void test_pyrepr_exc(void **state)
{
    json_t *a1 = json_pack("[s]", "boom");
    json_t *a2 = json_pack("[si]", "custom failure", 42);
    json_t *a0 = json_array();
    char *s;

    (void)state;
    s = cc_pyrepr_exc("ValueError", a1);
    assert_string_equal(s, "ValueError('boom')");
    free(s);
    s = cc_pyrepr_exc("CustomError", a2);
    assert_string_equal(s, "CustomError('custom failure', 42)");
    free(s);
    s = cc_pyrepr_exc("ExpectedException", a0);
    assert_string_equal(s, "ExpectedException()");
    free(s);
    s = cc_pyrepr_exc("KeyError", NULL);
    assert_string_equal(s, "KeyError()");
    free(s);
    json_decref(a0);
    json_decref(a1);
    json_decref(a2);
}

static void test_pyrepr_truncate(void **state)
{
    json_t *big = json_array();
    json_t *u = json_pack("[s]", "\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc");
    char *s;

    (void)state;
    for (int i = 0; i < 100000; i++)
        json_array_append_new(big, json_integer(i));
    s = cc_pyrepr(big, 1, 1024);
    assert_int_equal(strlen(s), 1024);
    assert_memory_equal(s, "(0, 1, 2, ", 10);
    assert_string_equal(s + 1021, "...");
    free(s);
    s = cc_pyrepr(u, 0, 8); /* "['üüüü']" is 12 bytes: cut at a character boundary */
    assert_true(strlen(s) <= 8);
    assert_string_equal(s, "['\xc3\xbc...");
    free(s);
    s = cc_pyrepr(u, 0, 12); /* fits exactly */
    assert_string_equal(s, "['\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc']");
    free(s);
    s = cc_pyrepr(NULL, 0, 0);
    assert_string_equal(s, "None");
    free(s);
    json_decref(big);
    json_decref(u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pyrepr_values),
        cmocka_unit_test(test_pyrepr_float_shortest),
        cmocka_unit_test(test_pyrepr_exc),
        cmocka_unit_test(test_pyrepr_truncate),
    };

    return cmocka_run_group_tests_name("pyrepr", tests, NULL, NULL);
}
