/* Unit tests for proto/statsevent.c: event parsing and its refusals, the visitor key, the
 * hashes (known answers), the double-click window and the robots matcher with the shipped list.
 *
 * Known answers were computed independently with CPython 3.11 at test-writing time:
 *     salt = bytes(range(32))
 *     hmac.new(salt, b"v\0u:42", hashlib.sha256).hexdigest()[:32]          # visitor
 *     hmac.new(salt, b"e\0record-view\0abcd-1234\0u:42\0" + b"1796551200",
 *              hashlib.sha256).hexdigest()[:32]                               # derived id
 *     hashlib.sha256(b"x\0record-view\0evt-1").hexdigest()[:32]              # explicit id
 * with the window start (t // w) * w, t = 1796551207 (2026-12-06T10:00:07Z). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "statsevent.h"

#define T0   "2026-12-06T10:00:07"
#define T0_S 1796551207LL
#define DAY0 20793 /* 2026-12-06 */

static const uint8_t SALT[CC_STATSEVENT_SALT_LEN] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10,
                                                     11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
                                                     22, 23, 24, 25, 26, 27, 28, 29, 30, 31};

/* Parse a NUL-terminated body from an exact-size heap copy, so ASan sees any read past len. */
static int parse(struct cc_statsevent *ev, const char *body, char *why, size_t why_size)
{
    size_t len = strlen(body);
    char *copy = malloc(len > 0 ? len : 1);
    int rc;

    assert_non_null(copy);
    memcpy(copy, body, len);
    rc = cc_statsevent_parse(ev, copy, len, why, why_size);
    free(copy);
    return rc;
}

static const char *hex(const uint8_t id[CC_STATSEVENT_ID_LEN])
{
    static char buf[2 * CC_STATSEVENT_ID_LEN + 1];

    return cc_statsevent_hex(id, buf);
}

/* ---- Parsing ----------------------------------------------------------------------------- */

static void test_statsevent_parse_all_fields(void **state)
{
    struct cc_statsevent ev = {0};
    char why[160];

    (void)state;
    assert_int_equal(parse(&ev,
                           "{\"timestamp\": \"" T0 ".123456Z\", \"type\": \"record-view\","
                           " \"object_id\": \"abcd-1234\", \"unique_id\": \"evt-1\","
                           " \"user_id\": \"42\", \"session_id\": \"sess-1\","
                           " \"ip_address\": \"192.0.2.7\", \"user_agent\": \"Mozilla/5.0\"}",
                           why, sizeof(why)),
                     CC_OK);
    assert_true(ev.ts_us == T0_S * 1000000 + 123456);
    assert_int_equal(ev.day, DAY0);
    assert_string_equal(ev.type, "record-view");
    assert_string_equal(ev.object_id, "abcd-1234");
    assert_string_equal(ev.unique_id, "evt-1");
    assert_string_equal(ev.user_id, "42");
    assert_string_equal(ev.session_id, "sess-1");
    assert_string_equal(ev.ip_address, "192.0.2.7");
    assert_string_equal(ev.user_agent, "Mozilla/5.0");
    assert_string_equal(why, "");
    cc_statsevent_clear(&ev);
    assert_null(ev.store);
    assert_null(ev.type);
}

static void test_statsevent_parse_integer_user_id(void **state)
{
    static const struct {
        const char *json;
        const char *text;
    } cases[] = {
        {"42", "42"},
        {"-7", "-7"},
        {"0", "0"},
        {"9223372036854775807", "9223372036854775807"},
    };
    struct cc_statsevent ev = {0};
    char body[256], why[160];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(body, sizeof(body),
                 "{\"timestamp\":\"" T0 "\",\"type\":\"t\",\"object_id\":\"o\",\"user_id\":%s}",
                 cases[i].json);
        assert_int_equal(parse(&ev, body, why, sizeof(why)), CC_OK);
        assert_string_equal(ev.user_id, cases[i].text);
        assert_null(ev.session_id);
        assert_null(ev.ip_address);
        assert_null(ev.user_agent);
        assert_null(ev.unique_id);
    }
    cc_statsevent_clear(&ev);
}

static void test_statsevent_parse_timestamps(void **state)
{
    static const struct {
        const char *ts;
        int64_t us;
        int32_t day;
    } cases[] = {
        {T0, T0_S * 1000000, DAY0},          /* naive = UTC */
        {T0 "Z", T0_S * 1000000, DAY0},      /* kombu's JSON encoder */
        {T0 "+00:00", T0_S * 1000000, DAY0}, /* isoformat() of an aware time */
        {"2026-12-06 10:00:07.5", T0_S * 1000000 + 500000, DAY0},
        {"2026-12-07T01:30:00+02:00", 1796601600000000LL - 1800000000LL, DAY0}, /* 23:30Z */
        {"2026-12-05T22:00:00-03:00", 1796518800000000LL, DAY0}, /* 2026-12-06T01:00Z */
        {"1969-12-31T23:59:59.5", -500000, -1},
        {"1970-01-01T00:00:00", 0, 0},
    };
    struct cc_statsevent ev = {0};
    char body[256], why[160];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(body, sizeof(body),
                 "{\"timestamp\":\"%s\",\"type\":\"t\",\"object_id\":\"o\",\"session_id\":\"s\"}",
                 cases[i].ts);
        assert_int_equal(parse(&ev, body, why, sizeof(why)), CC_OK);
        assert_true(ev.ts_us == cases[i].us);
        assert_int_equal(ev.day, cases[i].day);
    }
    cc_statsevent_clear(&ev);
}

static void test_statsevent_parse_extra_members_ignored(void **state)
{
    struct cc_statsevent ev = {0};
    char why[160];

    (void)state;
    assert_int_equal(parse(&ev,
                           "{\"app\": {\"name\": \"rdm\", \"v\": [1, 2.5, {\"x\": null}]},"
                           " \"timestamp\": \"" T0 "\", \"referrer\": \"https://e.org/\","
                           " \"type\": \"file-download\", \"object_id\": \"f/\\u00e9\","
                           " \"size\": 123456789012, \"ip_address\": \"2001:db8::1\","
                           " \"is_robot\": true}",
                           why, sizeof(why)),
                     CC_OK);
    assert_string_equal(ev.type, "file-download");
    assert_string_equal(ev.object_id, "f/\xc3\xa9");
    assert_string_equal(ev.ip_address, "2001:db8::1");
    cc_statsevent_clear(&ev);
}

/* null members are absent; an empty optional member is absent too. */
static void test_statsevent_parse_null_and_empty(void **state)
{
    struct cc_statsevent ev = {0};
    char why[160];

    (void)state;
    assert_int_equal(parse(&ev,
                           "{\"timestamp\":\"" T0 "\",\"type\":\"t\",\"object_id\":\"o\","
                           "\"user_id\":null,\"session_id\":\"\",\"unique_id\":\"\","
                           "\"user_agent\":null,\"ip_address\":\"192.0.2.1\"}",
                           why, sizeof(why)),
                     CC_OK);
    assert_null(ev.user_id);
    assert_null(ev.session_id);
    assert_null(ev.unique_id);
    assert_null(ev.user_agent);
    assert_string_equal(ev.ip_address, "192.0.2.1");
    cc_statsevent_clear(&ev);
}

/* One struct across good and bad events: a failure leaves no stale pointers, the store is
 * reused and grows, and len bounds the read (the trailing bytes are never looked at). */
static void test_statsevent_parse_reuse_and_len(void **state)
{
    static const char body[] = "{\"timestamp\":\"" T0 "\",\"type\":\"t\",\"object_id\":\"o\","
                               "\"session_id\":\"s\"}GARBAGE";
    struct cc_statsevent ev = {0};
    char big[2 * CC_STATSEVENT_FIELD_MAX + 200], why[160];
    int n;

    (void)state;
    assert_int_equal(cc_statsevent_parse(&ev, body, sizeof(body) - 1 - 7, why, sizeof(why)), CC_OK);
    assert_string_equal(ev.session_id, "s");
    assert_int_equal(cc_statsevent_parse(&ev, body, sizeof(body) - 1, why, sizeof(why)), CC_EINVAL);
    assert_null(ev.type);
    assert_null(ev.session_id);
    assert_int_equal(strncmp(why, "bad JSON at 1:", 14), 0);
    n = snprintf(big, sizeof(big),
                 "{\"timestamp\":\"" T0 "\",\"type\":\"t\",\"object_id\":\"%0*d\","
                 "\"user_agent\":\"%0*d\",\"ip_address\":\"x\"}",
                 CC_STATSEVENT_FIELD_MAX, 0, CC_STATSEVENT_FIELD_MAX, 0);
    assert_true(n > 0 && (size_t)n < sizeof(big));
    assert_int_equal(parse(&ev, big, why, sizeof(why)), CC_OK);
    assert_int_equal(strlen(ev.object_id), CC_STATSEVENT_FIELD_MAX);
    assert_int_equal(strlen(ev.user_agent), CC_STATSEVENT_FIELD_MAX);
    assert_string_equal(ev.ip_address, "x");
    assert_true(ev.store_cap >= 2 * CC_STATSEVENT_FIELD_MAX + 2);
    assert_int_equal(cc_statsevent_parse(&ev, body, sizeof(body) - 1 - 7, why, sizeof(why)), CC_OK);
    assert_string_equal(ev.object_id, "o");
    cc_statsevent_clear(&ev);
    cc_statsevent_clear(&ev); /* twice is fine */
    cc_statsevent_clear(NULL);
}

static bool same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* The allocation-free fast path and the jansson path give the same event, whether the fast
 * path reads the body itself or hands it over (escapes, non-ASCII, nesting, floats). */
static void test_statsevent_parse_fast_and_full_agree(void **state)
{
    static const char *const bodies[] = {
        /* read by the fast path */
        "{\"timestamp\":\"2026-12-06T10:00:07Z\",\"type\":\"t\",\"object_id\":\"o\",\"user_id\":7}",
        " \r\n\t{ \"timestamp\" :\t\"2026-12-06T10:00:07\" , \"type\":\"t\",\n\"object_id\": \"o\","
        "\"user_id\" : -0 ,\"x\":true,\"y\":false,\"z\":null,\"n\":-12}\n ",
        "{\"timestamp\":\"2026-12-06T10:00:07\",\"type\":\"a\",\"type\":\"b\",\"object_id\":\"o\","
        "\"session_id\":\"s\",\"session_id\":null,\"ip_address\":\"1.2.3.4\"}", /* last one wins */
        "{\"timestamp\":\"2026-12-06T10:00:07\",\"type\":\"t\",\"object_id\":\"o\","
        "\"user_id\":999999999999999999,\"user_agent\":\"Mozilla/5.0 (X; Y) ~!@#$%^&*()\"}",
        /* handed to jansson */
        "{\"timestamp\":\"2026-12-06T10:00:07\",\"type\":\"t\",\"object_id\":\"a\\/b\\\"c\","
        "\"user_id\":9223372036854775807}",
        "{\"timestamp\":\"2026-12-06T10:00:07\",\"type\":\"t\",\"object_id\":\"\xc3\xa9\","
        "\"ip_address\":\"::1\",\"extra\":{\"a\":[1.5e3]}}",
        "{\"timestamp\":\"2026-12-06T10:00:07\",\"type\":\"t\",\"object_id\":\"o\",\"session_id\":"
        "\"s\",\"size\":1.0,\"big\":1234567890123456789}",
    };
    struct cc_statsevent a = {0}, b = {0};
    char why_a[160], why_b[160];

    (void)state;
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        size_t len = strlen(bodies[i]);

        if (cc_statsevent_parse(&a, bodies[i], len, why_a, sizeof(why_a)) != CC_OK)
            fail_msg("case %zu: %s", i, why_a);
        assert_int_equal(cc_statsevent_parse_full(&b, bodies[i], len, why_b, sizeof(why_b)), CC_OK);
        assert_true(a.ts_us == b.ts_us);
        assert_int_equal(a.day, b.day);
        assert_true(same_str(a.type, b.type) && same_str(a.object_id, b.object_id) &&
                    same_str(a.unique_id, b.unique_id) && same_str(a.user_id, b.user_id) &&
                    same_str(a.session_id, b.session_id) && same_str(a.ip_address, b.ip_address) &&
                    same_str(a.user_agent, b.user_agent));
    }
    assert_int_equal(parse(&a, bodies[1], why_a, sizeof(why_a)), CC_OK);
    assert_string_equal(a.user_id, "0");
    assert_int_equal(parse(&a, bodies[2], why_a, sizeof(why_a)), CC_OK);
    assert_string_equal(a.type, "b");
    assert_null(a.session_id);
    assert_int_equal(parse(&a, bodies[4], why_a, sizeof(why_a)), CC_OK);
    assert_string_equal(a.object_id, "a/b\"c");
    cc_statsevent_clear(&a);
    cc_statsevent_clear(&b);
}

#define EV(extra) "{\"timestamp\":\"" T0 "\",\"type\":\"t\",\"object_id\":\"o\"" extra "}"

static void test_statsevent_parse_malformed(void **state)
{
    /* want ending in '*': a prefix (jansson's own wording follows) */
    static const struct {
        const char *body;
        const char *want;
    } cases[] = {
        {"", "bad JSON at 1:0: *"},
        {"not json", "bad JSON at 1:*"},
        {"{\"timestamp\": ", "bad JSON at 1:*"},
        {"{\"a\":1} {}", "bad JSON at 1:*"},
        {"{\"timestamp\":\"\xff\"}", "bad JSON at 1:*"},
        {"{\"t\":\"\\u0000\"}", "bad JSON at 1:*"},
        {"[1, 2]", "event is not a JSON object"},
        {"{\"type\":\"t\",\"object_id\":\"o\",\"user_id\":1}", "missing field 'timestamp'"},
        {"{\"timestamp\":null,\"type\":\"t\",\"object_id\":\"o\",\"user_id\":1}",
         "missing field 'timestamp'"},
        {"{\"timestamp\":1796551207,\"type\":\"t\",\"object_id\":\"o\",\"user_id\":1}",
         "field 'timestamp' is not a string"},
        {"{\"timestamp\":\"yesterday\",\"type\":\"t\",\"object_id\":\"o\",\"user_id\":1}",
         "'timestamp' is not ISO-8601: \"yesterday\""},
        {"{\"timestamp\":\"2026-02-29T00:00:00\",\"type\":\"t\",\"object_id\":\"o\",\"user_id\":1}",
         "'timestamp' is not ISO-8601: \"2026-02-29T00:00:00\""},
        {"{\"timestamp\":\"" T0 " UTC\",\"type\":\"t\",\"object_id\":\"o\",\"user_id\":1}",
         "'timestamp' is not ISO-8601: \"2026-12-06T10:00:07 UTC\""},
        {"{\"timestamp\":\"\",\"type\":\"t\",\"object_id\":\"o\",\"user_id\":1}",
         "'timestamp' is not ISO-8601: \"\""},
        /* the reason stays one printable ASCII line */
        {"{\"timestamp\":\"\\u00e9t\\u00e9\\n\",\"type\":\"t\",\"object_id\":\"o\",\"user_id\":1}",
         "'timestamp' is not ISO-8601: \"??t???\""},
        {"{\"timestamp\":\"2026-12-06T10:00:07.0000000000000000000000000000000000000000000\","
         "\"type\":\"t\",\"object_id\":\"o\",\"user_id\":1}",
         "'timestamp' is not ISO-8601: \"2026-12-06T10:00:07.00000000000000000000...\""},
        {"{\"timestamp\":\"" T0 "\",\"object_id\":\"o\",\"user_id\":1}", "missing field 'type'"},
        {"{\"timestamp\":\"" T0 "\",\"type\":5,\"object_id\":\"o\",\"user_id\":1}",
         "field 'type' is not a string"},
        {"{\"timestamp\":\"" T0 "\",\"type\":\"\",\"object_id\":\"o\",\"user_id\":1}",
         "field 'type' is empty"},
        {"{\"timestamp\":\"" T0 "\",\"type\":\"t\",\"user_id\":1}", "missing field 'object_id'"},
        {"{\"timestamp\":\"" T0 "\",\"type\":\"t\",\"object_id\":123,\"user_id\":1}",
         "field 'object_id' is not a string"},
        {"{\"timestamp\":\"" T0 "\",\"type\":\"t\",\"object_id\":\"\",\"user_id\":1}",
         "field 'object_id' is empty"},
        {EV(",\"user_id\":1.5"), "field 'user_id' is not a string or integer"},
        {EV(",\"user_id\":true"), "field 'user_id' is not a string or integer"},
        {EV(",\"user_id\":{}"), "field 'user_id' is not a string or integer"},
        {EV(",\"session_id\":5"), "field 'session_id' is not a string"},
        {EV(",\"ip_address\":[\"192.0.2.1\"]"), "field 'ip_address' is not a string"},
        {EV(",\"user_id\":1,\"user_agent\":1"), "field 'user_agent' is not a string"},
        {EV(",\"user_id\":1,\"unique_id\":7"), "field 'unique_id' is not a string"},
        {EV(""), "no visitor field (user_id, session_id or ip_address)"},
        {EV(",\"user_agent\":\"curl/8.0\""),
         "no visitor field (user_id, session_id or ip_address)"},
        {EV(",\"user_id\":\"\",\"session_id\":\"\",\"ip_address\":null"),
         "no visitor field (user_id, session_id or ip_address)"},
    };
    struct cc_statsevent ev = {0};
    char why[160], why_full[160];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *want = cases[i].want;
        size_t n = strlen(want);

        memset(why, 0, sizeof(why));
        if (parse(&ev, cases[i].body, why, sizeof(why)) != CC_EINVAL)
            fail_msg("case %zu accepted: %s", i, cases[i].body);
        if (want[n - 1] == '*' ? strncmp(why, want, n - 1) != 0 : strcmp(why, want) != 0)
            fail_msg("case %zu: got \"%s\", want \"%s\"", i, why, want);
        for (const char *p = why; *p != '\0'; p++)
            assert_true(*p >= 0x20 && *p < 0x7f);
        assert_null(ev.type);
        /* The jansson-only path words it the same. */
        memset(why_full, 0, sizeof(why_full));
        assert_int_equal(cc_statsevent_parse_full(&ev, cases[i].body, strlen(cases[i].body),
                                                  why_full, sizeof(why_full)),
                         CC_EINVAL);
        assert_string_equal(why, why_full);
    }
    cc_statsevent_clear(&ev);
}

/* Field and body size limits, at the limit and one past it. */
static void test_statsevent_parse_limits(void **state)
{
    static const char *const fields[] = {"type",       "object_id",  "unique_id", "user_id",
                                         "session_id", "ip_address", "user_agent"};
    size_t cap = CC_STATSEVENT_BODY_MAX + 64;
    char *body = malloc(cap);
    char *pad = malloc(CC_STATSEVENT_BODY_MAX + 1);
    struct cc_statsevent ev = {0};
    char why[160], want[160];

    (void)state;
    assert_non_null(body);
    assert_non_null(pad);
    for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
        for (int extra = 0; extra <= 1; extra++) {
            memset(pad, 'a', CC_STATSEVENT_FIELD_MAX + extra);
            pad[CC_STATSEVENT_FIELD_MAX + extra] = '\0';
            /* A later member of the same name wins (jansson), so the field under test is
             * written after the defaults. */
            snprintf(body, cap,
                     "{\"timestamp\":\"" T0 "\",\"type\":\"t\",\"object_id\":\"o\","
                     "\"user_id\":\"u\",\"%s\":\"%s\"}",
                     fields[f], pad);
            if (extra == 0) {
                assert_int_equal(parse(&ev, body, why, sizeof(why)), CC_OK);
            } else {
                assert_int_equal(parse(&ev, body, why, sizeof(why)), CC_EINVAL);
                snprintf(want, sizeof(want), "field '%s' longer than %d bytes", fields[f],
                         CC_STATSEVENT_FIELD_MAX);
                assert_string_equal(why, want);
            }
        }
    }
    /* The body: exactly CC_STATSEVENT_BODY_MAX bytes is accepted, one more is not. */
    for (int extra = 0; extra <= 1; extra++) {
        size_t head = strlen(EV(",\"user_id\":1,\"x\":\"\""));
        size_t n = CC_STATSEVENT_BODY_MAX + extra - head;

        memset(pad, 'b', n);
        pad[n] = '\0';
        snprintf(body, cap, EV(",\"user_id\":1,\"x\":\"%s\""), pad);
        assert_int_equal(strlen(body), CC_STATSEVENT_BODY_MAX + extra);
        if (extra == 0) {
            assert_int_equal(parse(&ev, body, why, sizeof(why)), CC_OK);
        } else {
            assert_int_equal(parse(&ev, body, why, sizeof(why)), CC_EINVAL);
            assert_string_equal(why, "event larger than 65536 bytes");
        }
    }
    /* A tiny or absent reason buffer is fine. */
    assert_int_equal(cc_statsevent_parse(&ev, "[]", 2, why, 4), CC_EINVAL);
    assert_string_equal(why, "eve");
    assert_int_equal(cc_statsevent_parse(&ev, "[]", 2, NULL, 0), CC_EINVAL);
    assert_int_equal(cc_statsevent_parse(&ev, NULL, 0, NULL, 0), CC_EINVAL);
    cc_statsevent_clear(&ev);
    free(pad);
    free(body);
}

/* ---- Identity ---------------------------------------------------------------------------- */

static void test_statsevent_visitor_key_precedence(void **state)
{
    static const struct {
        const char *members;
        const char *key;
    } cases[] = {
        {",\"user_id\":42,\"session_id\":\"s\",\"ip_address\":\"192.0.2.7\"", "u:42"},
        {",\"user_id\":\"alice\",\"ip_address\":\"192.0.2.7\"", "u:alice"},
        {",\"session_id\":\"sess-1\",\"ip_address\":\"192.0.2.7\",\"user_agent\":\"UA\"",
         "s:sess-1"},
        {",\"user_id\":\"\",\"session_id\":\"sess-1\"", "s:sess-1"},
        {",\"ip_address\":\"192.0.2.7\",\"user_agent\":\"Mozilla/5.0\"", "a:192.0.2.7|Mozilla/5.0"},
        {",\"ip_address\":\"192.0.2.7\"", "a:192.0.2.7|"},
    };
    struct cc_statsevent ev = {0};
    char body[256], key[64], why[160];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(body, sizeof(body),
                 "{\"timestamp\":\"" T0 "\",\"type\":\"t\",\"object_id\":\"o\"%s}",
                 cases[i].members);
        assert_int_equal(parse(&ev, body, why, sizeof(why)), CC_OK);
        assert_int_equal(cc_statsevent_visitor_key(&ev, key, sizeof(key)), strlen(cases[i].key));
        assert_string_equal(key, cases[i].key);
    }
    /* Truncated like snprintf: the full length is returned. */
    assert_int_equal(cc_statsevent_visitor_key(&ev, key, 5), strlen("a:192.0.2.7|"));
    assert_string_equal(key, "a:19");
    cc_statsevent_clear(&ev);
}

static void test_statsevent_known_answers(void **state)
{
    static const uint8_t salt2[CC_STATSEVENT_SALT_LEN] = {
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}; /* bytes([0xff] * 32) */
    static const struct {
        const char *members;
        const char *type;
        int64_t window_s;
        const char *visitor; /* HMAC(SALT, "v\0" key)[:16] */
        const char *id;
    } cases[] = {
        /* HMAC(SALT, "e\0record-view\0abcd-1234\0u:42\01796551200")[:16] */
        {",\"user_id\":42", "record-view", 30, "7a38d3e3002c52b3d07aa08d9612e469",
         "8c894f5845a0095e1b897c42d8c41f9f"},
        /* window 1: "...\01796551207" */
        {",\"user_id\":\"42\"", "record-view", 1, "7a38d3e3002c52b3d07aa08d9612e469",
         "6d16762655965c6c92304c1e3f4de4d7"},
        {",\"session_id\":\"sess-1\",\"ip_address\":\"192.0.2.7\"", "record-view", 30,
         "0292c756d306383cb76387da50ba3546", NULL},
        /* HMAC(SALT, "e\0file-download\0f/1\0a:192.0.2.7|Mozilla/5.0\01796551200")[:16] */
        {",\"ip_address\":\"192.0.2.7\",\"user_agent\":\"Mozilla/5.0\"", "file-download", 30,
         "d0d76859b6a09456ac8caaa483285610", "74601a26e8da2ce33e652ad583bff10f"},
        {",\"ip_address\":\"192.0.2.7\"", "record-view", 30, "14c36688b1054fdcec3f1c27a8bf3588",
         NULL},
        /* explicit: SHA256("x\0record-view\0evt-1")[:16], whatever the window and salt */
        {",\"user_id\":42,\"unique_id\":\"evt-1\"", "record-view", 30,
         "7a38d3e3002c52b3d07aa08d9612e469", "6c8baf72877b4b50c2e27c28451b14e9"},
        {",\"user_id\":42,\"unique_id\":\"evt-1\"", "file-download", 1,
         "7a38d3e3002c52b3d07aa08d9612e469", "c9b5df1295016fc96e79311de51ed1fd"},
    };
    struct cc_statsevent ev = {0};
    uint8_t v[CC_STATSEVENT_ID_LEN], id[CC_STATSEVENT_ID_LEN];
    char body[256], why[160];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *obj = strcmp(cases[i].type, "file-download") == 0 ? "f/1" : "abcd-1234";

        snprintf(body, sizeof(body),
                 "{\"timestamp\":\"" T0 "\",\"type\":\"%s\",\"object_id\":\"%s\"%s}", cases[i].type,
                 obj, cases[i].members);
        assert_int_equal(parse(&ev, body, why, sizeof(why)), CC_OK);
        cc_statsevent_visitor_hash(&ev, SALT, v);
        assert_string_equal(hex(v), cases[i].visitor);
        if (cases[i].id != NULL) {
            cc_statsevent_event_id(&ev, SALT, cases[i].window_s, id);
            assert_string_equal(hex(id), cases[i].id);
        }
    }
    /* Another salt, another visitor: hmac.new(b"\xff" * 32, b"v\0u:42", sha256). */
    assert_int_equal(parse(&ev, EV(",\"user_id\":42"), why, sizeof(why)), CC_OK);
    cc_statsevent_visitor_hash(&ev, salt2, v);
    assert_string_equal(hex(v), "f1b5b27beb67814d4fd5955f92fe3331");
    /* Before 1970 the window still floors: t = -1 -> start -30 (Python: -1 // 30 * 30).
     * HMAC(SALT, "e\0record-view\0o\0s:x\0-30")[:16] */
    assert_int_equal(parse(&ev,
                           "{\"timestamp\":\"1969-12-31T23:59:59.5\",\"type\":\"record-view\","
                           "\"object_id\":\"o\",\"session_id\":\"x\"}",
                           why, sizeof(why)),
                     CC_OK);
    cc_statsevent_event_id(&ev, SALT, 30, id);
    assert_string_equal(hex(id), "ad39fd0b7ae920eed0d85e8af9838dfe");
    cc_statsevent_clear(&ev);
}

static void id_at(const char *ts, const char *members, int64_t window_s,
                  const uint8_t salt[CC_STATSEVENT_SALT_LEN], uint8_t out[CC_STATSEVENT_ID_LEN])
{
    struct cc_statsevent ev = {0};
    char body[256], why[160];

    snprintf(body, sizeof(body),
             "{\"timestamp\":\"%s\",\"type\":\"record-view\",\"object_id\":\"abcd-1234\"%s}", ts,
             members);
    assert_int_equal(parse(&ev, body, why, sizeof(why)), CC_OK);
    cc_statsevent_event_id(&ev, salt, window_s, out);
    cc_statsevent_clear(&ev);
}

static void test_statsevent_double_click_window(void **state)
{
    static const uint8_t other_salt[CC_STATSEVENT_SALT_LEN] = {1};
    uint8_t a[CC_STATSEVENT_ID_LEN], b[CC_STATSEVENT_ID_LEN];
    const char *u = ",\"user_id\":42";

    (void)state;
    /* 10:00:07 and 10:00:29.999 share the window [10:00:00, 10:00:30). */
    id_at(T0, u, 30, SALT, a);
    id_at("2026-12-06T10:00:29.999999", u, 30, SALT, b);
    assert_memory_equal(a, b, CC_STATSEVENT_ID_LEN);
    id_at("2026-12-06T10:00:00", u, 30, SALT, b);
    assert_memory_equal(a, b, CC_STATSEVENT_ID_LEN);
    /* 10:00:30 opens the next window. */
    id_at("2026-12-06T10:00:30", u, 30, SALT, b);
    assert_memory_not_equal(a, b, CC_STATSEVENT_ID_LEN);
    /* Same instant, another visitor, object or salt: another id. */
    id_at(T0, ",\"user_id\":43", 30, SALT, b);
    assert_memory_not_equal(a, b, CC_STATSEVENT_ID_LEN);
    id_at(T0, u, 30, other_salt, b);
    assert_memory_not_equal(a, b, CC_STATSEVENT_ID_LEN);
    /* A window of 1 s: 10:00:07.1 and 10:00:07.9 still share an id; window_s < 1 acts as 1. */
    id_at("2026-12-06T10:00:07.1", u, 1, SALT, a);
    id_at("2026-12-06T10:00:07.9", u, 0, SALT, b);
    assert_memory_equal(a, b, CC_STATSEVENT_ID_LEN);
    /* An explicit unique_id wins: the window, the time, the visitor and the salt do not
     * matter, only the type and the id. */
    id_at(T0, ",\"user_id\":42,\"unique_id\":\"evt-1\"", 30, SALT, a);
    id_at("2027-01-01T00:00:00", ",\"session_id\":\"z\",\"unique_id\":\"evt-1\"", 1, other_salt, b);
    assert_memory_equal(a, b, CC_STATSEVENT_ID_LEN);
    id_at(T0, ",\"user_id\":42,\"unique_id\":\"evt-2\"", 30, SALT, b);
    assert_memory_not_equal(a, b, CC_STATSEVENT_ID_LEN);
}

static void test_statsevent_hex(void **state)
{
    uint8_t id[CC_STATSEVENT_ID_LEN];
    char out[2 * CC_STATSEVENT_ID_LEN + 1];

    (void)state;
    for (int i = 0; i < CC_STATSEVENT_ID_LEN; i++)
        id[i] = (uint8_t)(i * 17);
    assert_ptr_equal(cc_statsevent_hex(id, out), out);
    assert_string_equal(out, "00112233445566778899aabbccddeeff");
}

/* ---- Robots ------------------------------------------------------------------------------ */

static void test_statsevent_robots_list_format(void **state)
{
    static const char list[] = "# comment\n"
                               "\n"
                               "   \t\n"
                               "  FooBot  \r\n"
                               "\t# indented comment\n"
                               "curl/\r\n"
                               "x\n"
                               "Q!\n"
                               "two words\n"
                               "last-no-newline";
    struct cc_statsevent_robots *r = cc_statsevent_robots_new(list, sizeof(list) - 1);

    (void)state;
    assert_non_null(r);
    assert_int_equal(cc_statsevent_robots_count(r), 6);
    assert_true(cc_statsevent_robots_match(r, "foobot"));
    assert_true(cc_statsevent_robots_match(r, "Mozilla/5.0 (compatible; FOOBOT/1.0)"));
    assert_true(cc_statsevent_robots_match(r, "CURL/8.4.0"));
    assert_true(cc_statsevent_robots_match(r, "fooXbar")); /* one-byte pattern "x" */
    assert_true(cc_statsevent_robots_match(r, "X"));
    assert_true(cc_statsevent_robots_match(r, "has Two Words in it"));
    assert_true(cc_statsevent_robots_match(r, "aq!b")); /* two-byte pattern "Q!" */
    assert_true(cc_statsevent_robots_match(r, "q!"));
    assert_false(cc_statsevent_robots_match(r, "q"));
    assert_false(cc_statsevent_robots_match(r, "q?!"));
    assert_true(cc_statsevent_robots_match(r, "ends with last-no-newline"));
    assert_false(cc_statsevent_robots_match(r, "two  words"));
    assert_false(cc_statsevent_robots_match(r, "curl")); /* pattern longer than the rest */
    assert_false(cc_statsevent_robots_match(r, "foobo"));
    assert_false(cc_statsevent_robots_match(r, "# comment"));
    assert_false(cc_statsevent_robots_match(r, ""));
    assert_false(cc_statsevent_robots_match(r, NULL));
    cc_statsevent_robots_free(r);

    /* An empty list (or only comments) matches nothing. */
    r = cc_statsevent_robots_new("", 0);
    assert_non_null(r);
    assert_int_equal(cc_statsevent_robots_count(r), 0);
    assert_false(cc_statsevent_robots_match(r, "Googlebot"));
    cc_statsevent_robots_free(r);
    r = cc_statsevent_robots_new(NULL, 0);
    assert_non_null(r);
    assert_false(cc_statsevent_robots_match(r, "x"));
    cc_statsevent_robots_free(r);
    assert_false(cc_statsevent_robots_match(NULL, "x"));
    assert_int_equal(cc_statsevent_robots_count(NULL), 0);
    cc_statsevent_robots_free(NULL);
}

/* Many patterns sharing their first two bytes: every one is found. */
static void test_statsevent_robots_shared_prefix(void **state)
{
    char list[4096], ua[64];
    size_t off = 0;
    struct cc_statsevent_robots *r;

    (void)state;
    for (int i = 0; i < 200; i++)
        off += (size_t)snprintf(list + off, sizeof(list) - off, "zz%03d\n", i);
    r = cc_statsevent_robots_new(list, off);
    assert_non_null(r);
    assert_int_equal(cc_statsevent_robots_count(r), 200);
    for (int i = 0; i < 200; i++) {
        snprintf(ua, sizeof(ua), "agent ZZ%03d!", i);
        assert_true(cc_statsevent_robots_match(r, ua));
    }
    assert_false(cc_statsevent_robots_match(r, "agent zz200"));
    assert_false(cc_statsevent_robots_match(r, "agent zz"));
    cc_statsevent_robots_free(r);
}

static const char *const BROWSERS[] = {
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0",
    "Mozilla/5.0 (Linux; Android 11; CUBOT_X30 Build/RP1A.200720.011; wv) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Version/4.0 Chrome/119.0.6045.163 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 9; Cubot KingKong 3) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/118.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Android 14; Mobile; rv:121.0) Gecko/121.0 Firefox/121.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/118.0.0.0 YaBrowser/23.11.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36 OPR/106.0.0.0",
};

static const char *const CRAWLERS[] = {
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Googlebot/2.1; "
    "+http://www.google.com/bot.html) Chrome/120.0.6099.199 Safari/537.36",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
    "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
    "Mozilla/5.0 (compatible; Yahoo! Slurp; http://help.yahoo.com/help/us/ysearch/slurp)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Mozilla/5.0 (compatible; archive.org_bot +http://archive.org/details/archive.org_bot)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; "
    "+https://openai.com/gptbot)",
    "Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
    "Feedly/1.0 (+http://www.feedly.com/fetcher.html; 3 subscribers)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/120.0.6099.71 Safari/537.36",
    "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 "
    "Safari/538.1",
    "curl/8.4.0",
    "Wget/1.21.3",
    "python-requests/2.31.0",
    "Python-urllib/3.11",
    "Python/3.11 aiohttp/3.9.1",
    "Go-http-client/2.0",
    "Java/17.0.2",
    "okhttp/4.12.0",
    "Apache-HttpClient/4.5.14 (Java/17.0.9)",
    "libwww-perl/6.72",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Twitterbot/1.0",
    "Screaming Frog SEO Spider/19.4",
};

static void test_statsevent_robots_builtin(void **state)
{
    struct cc_statsevent_robots *r = cc_statsevent_robots_builtin();

    (void)state;
    assert_non_null(r);
    assert_true(cc_statsevent_robots_count(r) >= 100);
    for (size_t i = 0; i < sizeof(BROWSERS) / sizeof(BROWSERS[0]); i++)
        if (cc_statsevent_robots_match(r, BROWSERS[i]))
            fail_msg("browser taken for a robot: %s", BROWSERS[i]);
    for (size_t i = 0; i < sizeof(CRAWLERS) / sizeof(CRAWLERS[0]); i++)
        if (!cc_statsevent_robots_match(r, CRAWLERS[i]))
            fail_msg("robot not recognised: %s", CRAWLERS[i]);
    cc_statsevent_robots_free(r);
}

/* The compiled-in list is deploy/stats/robots.txt as it is now (the build embeds the file). */
static void test_statsevent_robots_builtin_is_the_file(void **state)
{
    FILE *f = fopen(CC_TEST_DATA_DIR "/../../../deploy/stats/robots.txt", "rb");
    char *text = malloc(1 << 20);
    size_t n;
    struct cc_statsevent_robots *a, *b;

    (void)state;
    assert_non_null(f);
    assert_non_null(text);
    n = fread(text, 1, 1 << 20, f);
    fclose(f);
    a = cc_statsevent_robots_new(text, n);
    b = cc_statsevent_robots_builtin();
    assert_int_equal(cc_statsevent_robots_count(a), cc_statsevent_robots_count(b));
    cc_statsevent_robots_free(a);
    cc_statsevent_robots_free(b);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_statsevent_parse_all_fields),
        cmocka_unit_test(test_statsevent_parse_integer_user_id),
        cmocka_unit_test(test_statsevent_parse_timestamps),
        cmocka_unit_test(test_statsevent_parse_extra_members_ignored),
        cmocka_unit_test(test_statsevent_parse_null_and_empty),
        cmocka_unit_test(test_statsevent_parse_reuse_and_len),
        cmocka_unit_test(test_statsevent_parse_fast_and_full_agree),
        cmocka_unit_test(test_statsevent_parse_malformed),
        cmocka_unit_test(test_statsevent_parse_limits),
        cmocka_unit_test(test_statsevent_visitor_key_precedence),
        cmocka_unit_test(test_statsevent_known_answers),
        cmocka_unit_test(test_statsevent_double_click_window),
        cmocka_unit_test(test_statsevent_hex),
        cmocka_unit_test(test_statsevent_robots_list_format),
        cmocka_unit_test(test_statsevent_robots_shared_prefix),
        cmocka_unit_test(test_statsevent_robots_builtin),
        cmocka_unit_test(test_statsevent_robots_builtin_is_the_file),
    };

    return cmocka_run_group_tests_name("statsevent", tests, NULL, NULL);
}
