/* Unit tests for proto/message.c: golden decode of every captured Celery task message,
 * re-encode byte comparison, malformed inputs as data, allocation failures.
 *
 * Golden: every task-*.json under CC_FIXTURES_DIR, every record in it ("messages",
 * "published", "cases" lists or the file itself). JSON messages must decode and match the
 * fixture field by field (headers for v2, the body dict for v1); other serializers must be
 * CC_ECONTENT; the hand-made cases of task-v2-minimal-accepted.json that crashed the Python
 * worker must be CC_EBADMSG. Protocol-2 JSON messages with the 16 standard headers are
 * re-encoded: body bytes == body_raw, header keys/values/order == the fixture's.
 *
 * Malformed cases: CC_TEST_DATA_DIR/message/invalid/<case>/input is a JSON object
 *   {"content_type": str (absent = no property), "content_encoding": str,
 *    "headers": {...} (absent/null = no header table), "body": "<raw text>" or
 *    "body_b64": "<base64>", "limits": {"max_body_bytes": n, "max_inflated_bytes": n}}
 * and <case>/error holds the expected status name ("CC_EBADMSG").
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <float.h>
#include <string.h>

#include "helpers/fixture.h"
#include "isotime.h"
#include "message.h"
#include "strbuf.h"

/* ---- Helpers --------------------------------------------------------------------------- */

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted entries of `dir` whose names start with `prefix` and end with `suffix`. */
static size_t list_dir(const char *dir, const char *prefix, const char *suffix, char ***out)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    size_t n = 0;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);

        if (e->d_name[0] == '.' || strncmp(e->d_name, prefix, strlen(prefix)) != 0 ||
            l < strlen(suffix) || strcmp(e->d_name + l - strlen(suffix), suffix) != 0)
            continue;
        names = realloc(names, (n + 1) * sizeof(*names));
        assert_non_null(names);
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof(*names), name_cmp);
    *out = names;
    return n;
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static int code_by_name(const char *name)
{
    size_t l = strlen(name);

    for (int c = 0; c >= -700; c--) {
        const char *s = cc_strerror(c);

        if (strncmp(s, name, l) == 0 && s[l] == ':')
            return c;
    }
    fail_msg("unknown status name %s", name);
    return 1;
}

static void check_str(const char *what, const char *got, const json_t *want)
{
    if (want == NULL || json_is_null(want)) {
        if (got != NULL)
            fail_msg("%s: got \"%s\", want null", what, got);
        return;
    }
    assert_true(json_is_string(want));
    if (got == NULL)
        fail_msg("%s: got null, want \"%s\"", what, json_string_value(want));
    assert_string_equal(got, json_string_value(want));
}

static void check_json(const char *what, const json_t *got, const json_t *want)
{
    if (!json_equal((json_t *)got, (json_t *)want)) {
        char *g = json_dumps(got, JSON_ENCODE_ANY | JSON_COMPACT);
        char *w = json_dumps(want, JSON_ENCODE_ANY | JSON_COMPACT);

        fail_msg("%s: got %s want %s", what, g ? g : "NULL", w ? w : "NULL");
    }
}

static void check_embed_part(const char *what, const json_t *got, const json_t *want)
{
    if (want == NULL || json_is_null(want))
        assert_null(got);
    else
        check_json(what, got, want);
}

/* Compare a decoded message with its fixture record. */
static void check_fields(const struct fixture_msg *f, const struct cc_msg *m)
{
    const json_t *hdr = f->headers;
    const json_t *body = f->expect_body;
    const json_t *src;
    const json_t *embed;
    const json_t *props = json_object_get(f->rec, "properties");
    const json_t *v;

    if (json_object_get(hdr, "task") != NULL) {
        assert_int_equal(m->protocol, 2);
        src = hdr;
        check_json("args", m->args, json_array_get(body, 0));
        check_json("kwargs", m->kwargs, json_array_get(body, 1));
        embed = json_array_get(body, 2);
        if (json_is_null(embed))
            assert_int_equal(json_object_size(m->embed), 0);
        else
            check_json("embed", m->embed, embed);
        check_json("headers", m->headers, hdr);
    } else {
        assert_int_equal(m->protocol, 1);
        src = body;
        embed = body;
        check_json("args", m->args, json_object_get(body, "args"));
        check_json("kwargs", m->kwargs, json_object_get(body, "kwargs"));
        assert_null(m->chain);
        assert_int_equal(json_object_size(m->headers), 0);
        assert_int_equal(m->utc, !json_is_false(json_object_get(body, "utc")));
    }
    check_embed_part("callbacks", m->callbacks, json_object_get(embed, "callbacks"));
    check_embed_part("errbacks", m->errbacks, json_object_get(embed, "errbacks"));
    check_embed_part("chord", m->chord, json_object_get(embed, "chord"));
    if (m->protocol == 2)
        check_embed_part("chain", m->chain, json_object_get(embed, "chain"));

    check_str("id", m->id, json_object_get(src, "id"));
    check_str("task", m->task, json_object_get(src, "task"));
    check_str("shadow", m->shadow, json_object_get(src, "shadow"));
    check_str("root_id", m->root_id, json_object_get(src, "root_id"));
    check_str("parent_id", m->parent_id, json_object_get(src, "parent_id"));
    v = json_object_get(src,
                        m->protocol == 1 && json_object_get(src, "taskset") ? "taskset" : "group");
    check_str("group", m->group, v);
    check_str("eta", m->eta, json_object_get(src, "eta"));
    check_str("expires", m->expires, json_object_get(src, "expires"));
    check_str("origin", m->origin, json_object_get(src, "origin"));
    check_str("argsrepr", m->argsrepr, json_object_get(src, "argsrepr"));
    assert_int_equal(m->eta != NULL, m->eta_us != 0);
    assert_int_equal(m->expires != NULL, m->expires_us != 0);

    v = json_object_get(src, "group_index");
    assert_int_equal(m->group_index, json_is_integer(v) ? (int)json_integer_value(v) : -1);
    v = json_object_get(src, "retries");
    assert_int_equal(m->retries, json_is_integer(v)  ? (int)json_integer_value(v)
                                 : json_is_string(v) ? atoi(json_string_value(v))
                                                     : 0);
    v = json_object_get(src, "timelimit");
    if (json_is_array(v)) {
        assert_true(
            m->time_limit_s ==
            (json_is_number(json_array_get(v, 0)) ? json_number_value(json_array_get(v, 0)) : 0));
        assert_true(
            m->soft_time_limit_s ==
            (json_is_number(json_array_get(v, 1)) ? json_number_value(json_array_get(v, 1)) : 0));
    } else {
        assert_true(m->time_limit_s == 0 && m->soft_time_limit_s == 0);
    }
    assert_int_equal(m->ignore_result, json_is_true(json_object_get(src, "ignore_result")));

    /* Properties. */
    check_str("correlation_id", m->correlation_id, json_object_get(props, "correlation_id"));
    check_str("reply_to", m->reply_to, json_object_get(props, "reply_to"));
    v = json_object_get(props, "priority");
    assert_int_equal(m->priority, json_is_integer(v) ? (int)json_integer_value(v) : 0);
    v = json_object_get(props, "delivery_mode");
    assert_int_equal(m->delivery_mode, json_is_integer(v) ? (int)json_integer_value(v) : 2);
}

static const char *const std_headers[] = {"lang",     "task",       "id",      "shadow",
                                          "eta",      "expires",    "group",   "group_index",
                                          "retries",  "timelimit",  "root_id", "parent_id",
                                          "argsrepr", "kwargsrepr", "origin",  "ignore_result"};

/* Re-encode and compare with what Celery published. Returns 1 if compared. */
static int check_reencode(const struct fixture_msg *f, const struct cc_msg *m)
{
    const char *body_raw = fixture_str(f->rec, "body_raw");
    const json_t *props = json_object_get(f->rec, "properties");
    const char *expiration = fixture_str(props, "expiration");
    struct cc_msg_out o;
    struct cc_err err = {0};
    int64_t now_us = 0;
    size_t i = 0;
    const char *key;
    json_t *val;

    if (m->protocol != 2 || body_raw == NULL ||
        json_object_size(f->headers) != sizeof(std_headers) / sizeof(std_headers[0]))
        return 0;
    if (expiration != NULL)
        now_us = m->expires_us - atoll(expiration) * 1000;
    assert_int_equal(cc_message_encode(m, now_us, &o, &err), CC_OK);
    assert_int_equal(o.body_len, strlen(body_raw));
    assert_memory_equal(o.body, body_raw, o.body_len);
    check_json("encoded headers", o.headers, f->headers);
    json_object_foreach(o.headers, key, val)
    {
        (void)val;
        assert_string_equal(key, std_headers[i]);
        i++;
    }
    assert_string_equal(o.content_type, "application/json");
    assert_string_equal(o.content_encoding, "utf-8");
    check_str("correlation_id", o.correlation_id, json_object_get(props, "correlation_id"));
    check_str("reply_to", o.reply_to, json_object_get(props, "reply_to"));
    check_str("expiration", o.expiration, json_object_get(props, "expiration"));
    assert_int_equal(o.delivery_mode, json_integer_value(json_object_get(props, "delivery_mode")));
    cc_message_out_deinit(&o);
    return 1;
}

/* ---- Golden ---------------------------------------------------------------------------- */

static void test_msg_decode_golden_all_fixtures(void **state)
{
    char **files;
    size_t nfiles = list_dir(CC_FIXTURES_DIR, "task-", ".json", &files);
    size_t decoded = 0, refused = 0, poison = 0, reencoded = 0;

    (void)state;
    assert_true(nfiles >= 30);
    for (size_t i = 0; i < nfiles; i++) {
        json_t *root = fixture_load(files[i]);
        json_t *recs;

        assert_non_null(root);
        recs = fixture_records(root);
        assert_non_null(recs);
        if (json_array_size(recs) == 0)
            fail_msg("%s: no message records", files[i]);
        for (size_t r = 0; r < json_array_size(recs); r++) {
            const json_t *rec = json_array_get(recs, r);
            struct fixture_msg f;
            struct cc_msg m;
            struct cc_err err = {0};
            int rc;

            if (fixture_msg_init(rec, &f) != 0)
                fail_msg("%s[%zu]: not a message record", files[i], r);
            rc = cc_message_decode(&f.raw, NULL, &m, &err);
            if (!cc_bytes_eq(f.raw.content_type, "application/json")) {
                if (rc != CC_ECONTENT)
                    fail_msg("%s[%zu]: rc %d, want CC_ECONTENT", files[i], r, rc);
                assert_non_null(strstr(err.msg, (const char *)f.raw.content_type.p));
                /* id/task are still available for the log line */
                check_str("id", m.id, json_object_get(f.headers, "id"));
                refused++;
            } else if (json_is_true(json_object_get(rec, "worker_process_exited"))) {
                if (rc != CC_EBADMSG)
                    fail_msg("%s[%zu]: poison message gave rc %d (%s)", files[i], r, rc, err.msg);
                check_str("id", m.id, json_object_get(f.headers, "id"));
                poison++;
            } else {
                if (rc != CC_OK)
                    fail_msg("%s[%zu]: rc %d: %s", files[i], r, rc, err.msg);
                check_fields(&f, &m);
                reencoded += (size_t)check_reencode(&f, &m);
                decoded++;
            }
            cc_message_deinit(&m);
            fixture_msg_deinit(&f);
        }
        json_decref(recs);
        json_decref(root);
    }
    print_message("golden: %zu decoded, %zu re-encoded, %zu refused, %zu poison\n", decoded,
                  reencoded, refused, poison);
    assert_true(decoded >= 40);
    assert_int_equal(refused, 3);
    assert_int_equal(poison, 2);
    assert_true(reencoded >= 30);
    free_names(files, nfiles);
}

static void test_msg_decode_zlib_matches_plain(void **state)
{
    json_t *root = fixture_load("task-v2-compressed-zlib.json");
    struct fixture_msg f;
    struct cc_msg m;
    struct cc_err err = {0};
    struct cc_msg_limits small = {0, 64}; /* inflated body is larger than 64 bytes */

    (void)state;
    assert_non_null(root);
    assert_int_equal(fixture_msg_init(root, &f), 0);
    assert_int_equal(cc_message_decode(&f.raw, NULL, &m, &err), CC_OK);
    check_json("args", m.args, json_array_get(f.expect_body, 0));
    check_json("kwargs", m.kwargs, json_array_get(f.expect_body, 1));
    cc_message_deinit(&m);
    assert_int_equal(cc_message_decode(&f.raw, &small, &m, &err), CC_ETOOBIG);
    cc_message_deinit(&m);
    fixture_msg_deinit(&f);
    json_decref(root);
}

static void test_msg_decode_v1_taskset_and_utc(void **state)
{
    static const char body[] =
        "{\"task\": \"app.add\", \"id\": \"i1\", \"args\": [1], \"kwargs\": {}, \"group\": "
        "\"g-ignored\", \"taskset\": \"ts1\", \"utc\": false, \"eta\": \"2030-01-01T00:00:00\", "
        "\"chord\": {\"task\": \"app.x\"}}";
    json_t *hdr = json_object();
    struct cc_msg_raw raw = {.content_type = cc_bytes_str("application/json"),
                             .priority = -1,
                             .headers = hdr,
                             .body = cc_bytes_str(body)};
    struct cc_msg m;
    struct cc_err err = {0};
    int64_t want;

    (void)state;
    assert_int_equal(cc_message_decode(&raw, NULL, &m, &err), CC_OK);
    assert_int_equal(m.protocol, 1);
    assert_string_equal(m.group, "ts1");
    assert_false(m.utc);
    assert_int_equal(cc_isotime_parse("2030-01-01T00:00:00+00:00", &want), CC_OK);
    assert_true(m.eta_us == want); /* naive local time read as UTC (documented) */
    assert_non_null(m.chord);
    assert_null(m.chain);
    assert_int_equal(m.delivery_mode, 2);
    assert_int_equal(m.priority, 0);
    cc_message_deinit(&m);
    cc_message_deinit(&m); /* idempotent */
    json_decref(hdr);
}

static void test_msg_decode_hybrid(void **state)
{
    static const char body[] = "{\"args\": [4], \"kwargs\": {\"k\": 1}, \"retries\": 2, "
                               "\"root_id\": \"r-body\", \"callbacks\": [{\"task\": \"c\"}]}";
    json_t *hdr = json_pack("{s:s, s:s, s:s}", "task", "app.h", "id", "h1", "root_id", "r-hdr");
    struct cc_msg_raw raw = {.content_type = cc_bytes_str("application/json"),
                             .priority = -1,
                             .headers = hdr,
                             .body = cc_bytes_str(body)};
    struct cc_msg m;
    struct cc_err err = {0};

    (void)state;
    assert_int_equal(cc_message_decode(&raw, NULL, &m, &err), CC_OK);
    assert_int_equal(m.protocol, 2);
    assert_string_equal(m.task, "app.h");
    assert_string_equal(m.root_id, "r-hdr"); /* headers override the body dict */
    assert_int_equal(m.retries, 2);
    assert_int_equal(json_integer_value(json_array_get(m.args, 0)), 4);
    assert_int_equal(json_array_size(m.callbacks), 1);
    cc_message_deinit(&m);
    json_decref(hdr);
}

static void test_msg_encode_defaults(void **state)
{
    json_t *args = json_pack("[is]", 1, "it's");
    json_t *kwargs = json_pack("{s:f}", "x", 0.1);
    struct cc_msg m = {0};
    struct cc_msg_out o;
    struct cc_err err = {0};
    static const char want_body[] = "[[1, \"it's\"], {\"x\": 0.1}, {\"callbacks\": null, "
                                    "\"errbacks\": null, \"chain\": null, \"chord\": null}]";

    (void)state;
    assert_int_equal(cc_message_encode(&m, 0, &o, &err), CC_EINVAL);
    m.id = (char *)"id1";
    m.task = (char *)"app.t";
    m.args = args;
    m.kwargs = kwargs;
    m.group_index = -1;
    m.time_limit_s = 30;
    m.soft_time_limit_s = 2.5;
    m.expires_us = 2000000;
    assert_int_equal(cc_message_encode(&m, 1000000, &o, &err), CC_OK);
    assert_int_equal(o.body_len, strlen(want_body));
    assert_memory_equal(o.body, want_body, o.body_len);
    assert_string_equal(json_string_value(json_object_get(o.headers, "argsrepr")), "(1, \"it's\")");
    assert_string_equal(json_string_value(json_object_get(o.headers, "kwargsrepr")), "{'x': 0.1}");
    assert_string_equal(json_string_value(json_object_get(o.headers, "root_id")), "id1");
    assert_string_equal(json_string_value(json_object_get(o.headers, "expires")),
                        "1970-01-01T00:00:02+00:00");
    assert_string_equal(o.expiration, "1000");
    assert_true(json_is_integer(json_array_get(json_object_get(o.headers, "timelimit"), 0)));
    assert_true(json_is_real(json_array_get(json_object_get(o.headers, "timelimit"), 1)));
    assert_null(o.reply_to);
    cc_message_out_deinit(&o);
    cc_message_out_deinit(&o);
    json_decref(args);
    json_decref(kwargs);
}

/* ---- Malformed inputs as data ---------------------------------------------------------- */

static void run_invalid_case(const char *name)
{
    char path[1024];
    char *input, *errname;
    json_t *in;
    json_error_t jerr;
    struct cc_msg_raw raw = {.priority = -1};
    struct cc_msg_limits lim = {0, 0};
    struct cc_msg m;
    struct cc_err err = {0};
    uint8_t *b64 = NULL;
    size_t b64_len = 0;
    const json_t *hdr;
    int want, rc;

    snprintf(path, sizeof(path), "%s/message/invalid/%s/input", CC_TEST_DATA_DIR, name);
    input = fixture_read_file(path, NULL);
    assert_non_null(input);
    snprintf(path, sizeof(path), "%s/message/invalid/%s/error", CC_TEST_DATA_DIR, name);
    errname = fixture_read_file(path, NULL);
    assert_non_null(errname);
    errname[strcspn(errname, "\r\n ")] = '\0';
    want = code_by_name(errname);
    in = json_loads(input, JSON_ALLOW_NUL, &jerr);
    if (in == NULL)
        fail_msg("%s: input: %s", name, jerr.text);
    if (fixture_str(in, "content_type"))
        raw.content_type = cc_bytes_str(fixture_str(in, "content_type"));
    if (fixture_str(in, "content_encoding"))
        raw.content_encoding = cc_bytes_str(fixture_str(in, "content_encoding"));
    hdr = json_object_get(in, "headers");
    raw.headers = json_is_null(hdr) ? NULL : hdr;
    if (fixture_str(in, "body") != NULL) {
        raw.body.p = (const uint8_t *)fixture_str(in, "body");
        raw.body.len = json_string_length(json_object_get(in, "body"));
    } else {
        assert_int_equal(fixture_b64_decode(fixture_str(in, "body_b64"), &b64, &b64_len), 0);
        raw.body.p = b64;
        raw.body.len = b64_len;
    }
    lim.max_body_bytes = (size_t)json_integer_value(
        json_object_get(json_object_get(in, "limits"), "max_body_bytes"));
    lim.max_inflated_bytes = (size_t)json_integer_value(
        json_object_get(json_object_get(in, "limits"), "max_inflated_bytes"));
    rc = cc_message_decode(&raw, &lim, &m, &err);
    if (rc != want)
        fail_msg("%s: got %s (%s), want %s", name, cc_strerror(rc), err.msg, errname);
    assert_int_equal(err.code, rc);
    assert_true(err.msg[0] != '\0');
    assert_null(strchr(err.msg, '\n'));
    cc_message_deinit(&m);
    json_decref(in);
    free(b64);
    free(input);
    free(errname);
}

static void test_msg_decode_invalid_cases(void **state)
{
    char **names;
    size_t n = list_dir(CC_TEST_DATA_DIR "/message/invalid", "", "", &names);

    (void)state;
    assert_true(n >= 19);
    for (size_t i = 0; i < n; i++)
        run_invalid_case(names[i]);
    print_message("invalid: %zu cases\n", n);
    free_names(names, n);
}

/* issue 14: time limits of 0, 1e300, DBL_MAX (an infinity that came through an AMQP double)
 * and null decode as sent; the worker decides what they mean (pool.c: huge = no limit).
 * Negative ones are data/message/invalid/timelimit-*. */
static void test_issue_14_msg_decode_extreme_timelimits(void **state)
{
    static const struct {
        const char *timelimit;
        double hard, soft;
    } cases[] = {
        {"[1e300, null]", 1e300, 0},
        {"[null, 1e300]", 0, 1e300},
        {"[1.7976931348623157e308, 0]", DBL_MAX, 0},
        {"[0, 0]", 0, 0},
        {"[0.0, 1e-300]", 0, 1e-300},
        {"[9223372036854775807, null]", 9223372036854775807.0, 0},
        {"null", 0, 0},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char hdrs[256];
        json_error_t jerr;
        json_t *h;
        struct cc_msg_raw raw = {.priority = -1};
        struct cc_msg_limits lim = {0, 0};
        struct cc_msg m;
        struct cc_err err = {0};

        snprintf(hdrs, sizeof(hdrs),
                 "{\"task\": \"app.add\", \"id\": \"0b6e1f2a-0000-4000-8000-000000000001\", "
                 "\"timelimit\": %s}",
                 cases[i].timelimit);
        h = json_loads(hdrs, 0, &jerr);
        assert_non_null(h);
        raw.content_type = cc_bytes_str("application/json");
        raw.content_encoding = cc_bytes_str("utf-8");
        raw.headers = h;
        raw.body = cc_bytes_str("[[2, 3], {}, {}]");
        if (cc_message_decode(&raw, &lim, &m, &err) != CC_OK)
            fail_msg("%s: %s", cases[i].timelimit, err.msg);
        assert_true(m.time_limit_s == cases[i].hard);
        assert_true(m.soft_time_limit_s == cases[i].soft);
        cc_message_deinit(&m);
        json_decref(h);
    }
}

/* issue 14: a callback with expires=1e300 (clamped to the far future) was published with
 * expiration "100000000000000" ms, which RabbitMQ refuses (406, channel closed): above
 * 2^32-1 ms the property is left out and the expires header carries the time. */
static void test_issue_14_msg_encode_huge_expires_has_no_expiration(void **state)
{
    static const struct {
        int64_t in_us;
        const char *want; /* NULL: no property */
    } cases[] = {
        {4294967295LL * 1000, "4294967295"},
        {4294967296LL * 1000, NULL},
        {100000000000000000LL, NULL},
        {-5000000, "0"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t now = 1798761600000000LL;
        struct cc_msg m = {0};
        struct cc_msg_out o;
        struct cc_err err = {0};

        m.id = (char *)"id1";
        m.task = (char *)"app.t";
        m.group_index = -1;
        m.expires_us = now + cases[i].in_us;
        assert_int_equal(cc_message_encode(&m, now, &o, &err), CC_OK);
        if (cases[i].want == NULL)
            assert_null(o.expiration);
        else
            assert_string_equal(o.expiration, cases[i].want);
        assert_non_null(json_string_value(json_object_get(o.headers, "expires")));
        cc_message_out_deinit(&o);
    }
}

/* issue 14 (fuzz campaign): "retries is not a number: \"%.40s\"" cut a UTF-8 character in
 * half, so the error text (logged) was invalid UTF-8. Quoted wire text ends on a character. */
static void test_msg_error_text_quotes_whole_utf8_characters(void **state)
{
    static const char *const cases[] = {
        "{\"task\": \"a.b\", \"id\": \"i1\", \"retries\": "
        "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\u00e9\u00e9\"}",
        "{\"task\": \"a.b\", \"id\": \"i1\", \"eta\": "
        "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\u20ac\"}",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_error_t jerr;
        json_t *h = json_loads(cases[i], 0, &jerr);
        struct cc_msg_raw raw = {.priority = -1};
        struct cc_msg_limits lim = {0, 0};
        struct cc_msg m;
        struct cc_err err = {0};

        assert_non_null(h);
        raw.content_type = cc_bytes_str("application/json");
        raw.content_encoding = cc_bytes_str("utf-8");
        raw.headers = h;
        raw.body = cc_bytes_str("[[2, 3], {}, {}]");
        assert_int_equal(cc_message_decode(&raw, &lim, &m, &err), CC_EBADMSG);
        assert_int_equal(cc_strbuf_utf8_valid_prefix((const uint8_t *)err.msg, strlen(err.msg)),
                         strlen(err.msg));
        cc_message_deinit(&m); /* what decode filled before it refused */
        json_decref(h);
    }
}

/* ---- Field limits (issue #14) ---------------------------------------------------------- */

static const struct {
    const char *key;  /* header (v2) or body-dict (v1) key */
    const char *what; /* the name the error gives it */
    size_t max;
} field_limits[] = {
    {"id", "task id", CC_MSG_MAX_ID_BYTES},
    {"task", "task name", CC_MSG_MAX_NAME_BYTES},
    {"shadow", "shadow", CC_MSG_MAX_NAME_BYTES},
    {"root_id", "root_id", CC_MSG_MAX_ID_BYTES},
    {"parent_id", "parent_id", CC_MSG_MAX_ID_BYTES},
    {"group", "group", CC_MSG_MAX_ID_BYTES},
    {"origin", "origin", CC_MSG_MAX_ORIGIN_BYTES},
    {"lang", "lang", CC_MSG_MAX_LANG_BYTES},
    {"eta", "eta", CC_MSG_MAX_TIME_BYTES},
    {"expires", "expires", CC_MSG_MAX_TIME_BYTES},
    {"argsrepr", "argsrepr", CC_MSG_MAX_REPR_BYTES},
    {"kwargsrepr", "kwargsrepr", CC_MSG_MAX_REPR_BYTES},
};

/* A value of n bytes for `key` (n copies of 'x'); for the times, which must parse, a valid
 * ISO-8601 text when n is within the limit (a shorter one: no valid time is 64 bytes long)
 * and "2026-01-01T00:00:00" padded with zeros past it. */
static char *limit_value(const char *key, size_t n)
{
    char *v = malloc(n + 1);

    assert_non_null(v);
    memset(v, 'x', n);
    v[n] = '\0';
    if (strcmp(key, "eta") == 0 || strcmp(key, "expires") == 0) {
        static const char t[] = "2026-01-01T00:00:00.000000+00:00";

        memset(v, '0', n);
        memcpy(v, t, n < sizeof(t) - 1 ? n : sizeof(t) - 1);
        if (n <= CC_MSG_MAX_TIME_BYTES)
            v[n < sizeof(t) - 1 ? n : sizeof(t) - 1] = '\0';
    }
    return v;
}

/* Decode a v2 message (or v1 when is_v1) whose `key` is `value`. */
static int decode_with(const char *key, const char *value, bool is_v1, struct cc_msg *m,
                       struct cc_err *err)
{
    json_t *f = json_pack("{s:s, s:s}", "task", "app.add", "id", "id-1");
    json_t *hdr = NULL;
    char *body;
    int rc;

    json_object_set_new(f, key, json_string(value));
    if (is_v1) {
        json_object_set_new(f, "args", json_array());
        body = json_dumps(f, 0);
    } else {
        hdr = json_incref(f);
        body = strdup("[[], {}, {}]");
    }
    struct cc_msg_raw raw = {.content_type = cc_bytes_str("application/json"),
                             .priority = -1,
                             .headers = hdr,
                             .body = cc_bytes_str(body)};
    rc = cc_message_decode(&raw, NULL, m, err);
    free(body);
    json_decref(hdr);
    json_decref(f);
    return rc;
}

/* Every string field has a limit: at it the value is accepted and kept whole; one byte more
 * is CC_ETOOBIG with a reason naming the field, its size and the limit (never the value), in
 * protocol 2 (headers) and 1 (body dict) alike. */
static void test_msg_decode_field_limits(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(field_limits) / sizeof(field_limits[0]); i++) {
        const char *key = field_limits[i].key;
        size_t max = field_limits[i].max;

        for (int v1 = 0; v1 < 2; v1++) {
            char *at = limit_value(key, max), *over = limit_value(key, max + 1);
            char want[160];
            struct cc_msg m;
            struct cc_err err = {0};
            int rc;

            rc = decode_with(key, at, v1, &m, &err);
            if (rc != CC_OK)
                fail_msg("%s (v%d) at %zu bytes: %s", key, v1 ? 1 : 2, max, err.msg);
            cc_message_deinit(&m);
            rc = decode_with(key, over, v1, &m, &err);
            if (rc != CC_ETOOBIG)
                fail_msg("%s (v%d) at %zu bytes: got %s (%s)", key, v1 ? 1 : 2, max + 1,
                         cc_strerror(rc), err.msg);
            snprintf(want, sizeof(want), "%s of %zu bytes is over the %zu-byte limit",
                     field_limits[i].what, max + 1, max);
            assert_string_equal(err.msg, want);
            cc_message_deinit(&m);
            free(at);
            free(over);
        }
    }
}

/* Issue #14: an id long enough to overflow a 256-byte key buffer decodes whole. */
static void test_msg_decode_long_id_kept_whole(void **state)
{
    char *id = limit_value("id", 300);
    struct cc_msg m;
    struct cc_err err = {0};

    (void)state;
    assert_int_equal(decode_with("id", id, false, &m, &err), CC_OK);
    assert_int_equal(strlen(m.id), 300);
    assert_string_equal(m.id, id);
    cc_message_deinit(&m);
    free(id);
}

/* A 120 KB id is refused with a one-line reason; the task name is still there for the log
 * line (which cuts the id: cc_log_str). */
static void test_msg_decode_huge_id_refused(void **state)
{
    char *id = limit_value("id", 120000);
    struct cc_msg m;
    struct cc_err err = {0};

    (void)state;
    assert_int_equal(decode_with("id", id, false, &m, &err), CC_ETOOBIG);
    assert_string_equal(err.msg, "task id of 120000 bytes is over the 1024-byte limit");
    assert_non_null(m.task);
    cc_message_deinit(&m);
    free(id);
}

/* ---- Allocation failure ---------------------------------------------------------------- */

static long alloc_budget = -1; /* allocations left before failing; -1 = unlimited */
static long alloc_failed;

static void *failing_malloc(size_t n)
{
    if (alloc_budget == 0) {
        alloc_failed++;
        return NULL;
    }
    if (alloc_budget > 0)
        alloc_budget--;
    return malloc(n);
}

static void test_msg_alloc_failure(void **state)
{
    static const char *const files[] = {"task-v2-link.json", "task-v1-countdown-link.json",
                                        "task-v2-compressed-zlib.json"};

    (void)state;
    for (size_t fi = 0; fi < sizeof(files) / sizeof(files[0]); fi++) {
        json_t *root = fixture_load(files[fi]);
        struct fixture_msg f;
        int completed = 0;

        assert_non_null(root);
        assert_int_equal(fixture_msg_init(root, &f), 0);
        for (long n = 0; n < 500 && !completed; n++) {
            struct cc_msg m;
            struct cc_msg_out o;
            struct cc_err err = {0};
            int rc;

            alloc_failed = 0;
            alloc_budget = n;
            json_set_alloc_funcs(failing_malloc, free);
            rc = cc_message_decode(&f.raw, NULL, &m, &err);
            if (rc == CC_OK) {
                int erc = cc_message_encode(&m, 0, &o, &err);

                assert_true(erc == CC_OK || erc == CC_ENOMEM);
                if (erc == CC_OK) {
                    completed = alloc_failed == 0;
                    cc_message_out_deinit(&o);
                }
            } else {
                /* jansson 2.14 reports an allocation failure inside its lexer (token
                 * buffer growth) as a syntax error; nothing above it can tell the two
                 * apart, so a body parse may say CC_EBADMSG when an allocation failed. */
                if (rc == CC_EBADMSG && alloc_failed > 0 && strstr(err.msg, "not JSON"))
                    rc = CC_ENOMEM;
                else if (rc != CC_ENOMEM)
                    fail_msg("%s alloc %ld: rc %d: %s", files[fi], n, rc, err.msg);
            }
            json_set_alloc_funcs(malloc, free);
            cc_message_deinit(&m);
        }
        assert_true(completed);
        fixture_msg_deinit(&f);
        json_decref(root);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_msg_decode_golden_all_fixtures),
        cmocka_unit_test(test_msg_decode_zlib_matches_plain),
        cmocka_unit_test(test_msg_decode_v1_taskset_and_utc),
        cmocka_unit_test(test_msg_decode_hybrid),
        cmocka_unit_test(test_msg_encode_defaults),
        cmocka_unit_test(test_msg_decode_invalid_cases),
        cmocka_unit_test(test_issue_14_msg_decode_extreme_timelimits),
        cmocka_unit_test(test_issue_14_msg_encode_huge_expires_has_no_expiration),
        cmocka_unit_test(test_msg_error_text_quotes_whole_utf8_characters),
        cmocka_unit_test(test_msg_decode_field_limits),
        cmocka_unit_test(test_msg_decode_long_id_kept_whole),
        cmocka_unit_test(test_msg_decode_huge_id_refused),
        cmocka_unit_test(test_msg_alloc_failure),
    };

    return cmocka_run_group_tests_name("message", tests, NULL, NULL);
}
