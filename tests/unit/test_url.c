/* Unit tests for proto/url.c: AMQP and Redis URLs as kombu/Celery parse them, and redaction.
 * Expected values were checked against kombu.utils.url.url_to_parts (kombu 5.2). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <stdlib.h>

#include "url.h"

struct amqp_case {
    const char *url;
    int rc;
    const char *host;
    int port;
    const char *user;
    const char *password;
    const char *vhost;
    bool tls;
};

static const struct amqp_case amqp_cases[] = {
    {"amqp://", CC_OK, "localhost", 5672, "guest", "guest", "/", false},
    {"amqp://guest:guest@localhost:5672//", CC_OK, "localhost", 5672, "guest", "guest", "/", false},
    {"amqp://h//", CC_OK, "h", 5672, "guest", "guest", "/", false},
    {"amqp://h/", CC_OK, "h", 5672, "guest", "guest", "/", false},
    {"amqp://h", CC_OK, "h", 5672, "guest", "guest", "/", false},
    {"amqp://h/%2F", CC_OK, "h", 5672, "guest", "guest", "/", false},
    {"amqp://h/%2f%2F", CC_OK, "h", 5672, "guest", "guest", "//", false},
    {"amqp://h/v", CC_OK, "h", 5672, "guest", "guest", "v", false},
    {"amqp://u:p@H:1234/v%2Fx", CC_OK, "h", 1234, "u", "p", "v/x", false},
    {"amqp://u%40x:p%3Aw@h/", CC_OK, "h", 5672, "u@x", "p:w", "/", false},
    {"amqp://a@b:c@h/", CC_OK, "h", 5672, "a@b", "c", "/", false},
    {"amqp://:pw@h/", CC_OK, "h", 5672, "guest", "pw", "/", false},
    {"amqp://u@h/", CC_OK, "h", 5672, "u", "guest", "/", false},
    {"amqp://[::1]:5673/", CC_OK, "::1", 5673, "guest", "guest", "/", false},
    {"amqp://[fe80::1%25eth0]/", CC_OK, "fe80::1%eth0", 5672, "guest", "guest", "/", false},
    {"amqp://[::1]/", CC_OK, "::1", 5672, "guest", "guest", "/", false},
    {"amqp://h:/", CC_OK, "h", 5672, "guest", "guest", "/", false},
    {"amqp://h/v?heartbeat=5", CC_OK, "h", 5672, "guest", "guest", "v", false},
    {"amqp://h/v#frag", CC_OK, "h", 5672, "guest", "guest", "v", false},
    {"amqp://h/a%zz", CC_OK, "h", 5672, "guest", "guest", "a%zz", false},
    {"amqp://h/a%2", CC_OK, "h", 5672, "guest", "guest", "a%2", false},
    {"AMQP://h/", CC_OK, "h", 5672, "guest", "guest", "/", false},
    {"pyamqp://h:1/", CC_OK, "h", 1, "guest", "guest", "/", false},
    {"amqps://h/", CC_OK, "h", 5671, "guest", "guest", "/", true},
    {"amqps://h:5000/", CC_OK, "h", 5000, "guest", "guest", "/", true},
    {"amqp://h:65535", CC_OK, "h", 65535, "guest", "guest", "/", false},
    /* errors */
    {"", CC_EURL, NULL, 0, NULL, NULL, NULL, false},
    {"localhost", CC_EURL, NULL, 0, NULL, NULL, NULL, false},
    {"://h/", CC_EURL, NULL, 0, NULL, NULL, NULL, false},
    {"redis://h/", CC_EURL, NULL, 0, NULL, NULL, NULL, false},
    {"amqp://h:0/", CC_EURL, NULL, 0, NULL, NULL, NULL, false},
    {"amqp://h:65536/", CC_EURL, NULL, 0, NULL, NULL, NULL, false},
    {"amqp://h:123456/", CC_EURL, NULL, 0, NULL, NULL, NULL, false},
    {"amqp://h:12a/", CC_EURL, NULL, 0, NULL, NULL, NULL, false},
    {"amqp://h:-1/", CC_EURL, NULL, 0, NULL, NULL, NULL, false},
    {"amqp://[::1/", CC_EURL, NULL, 0, NULL, NULL, NULL, false},
    {"amqp://[::1]x/", CC_EURL, NULL, 0, NULL, NULL, NULL, false},
    {"amqp://h/%00", CC_EURL, NULL, 0, NULL, NULL, NULL, false},
    {"amqp://a;amqp://b", CC_EURL, NULL, 0, NULL, NULL, NULL, false},
    {"am qp://h/", CC_EURL, NULL, 0, NULL, NULL, NULL, false},
};

static void test_url_amqp_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(amqp_cases) / sizeof(amqp_cases[0]); i++) {
        const struct amqp_case *c = &amqp_cases[i];
        struct cc_amqp_url u;
        struct cc_err err = {0};
        int rc = cc_url_parse_amqp(c->url, &u, &err);

        if (rc != c->rc)
            fail_msg("'%s': rc %d, want %d (%s)", c->url, rc, c->rc, err.msg);
        if (rc != CC_OK) {
            assert_int_equal(err.code, c->rc);
            assert_true(strlen(err.msg) > 0);
            assert_null(u.host); /* zeroed on error */
            cc_url_amqp_deinit(&u);
            continue;
        }
        if (strcmp(u.host, c->host) != 0 || u.port != c->port || strcmp(u.user, c->user) != 0 ||
            strcmp(u.password, c->password) != 0 || strcmp(u.vhost, c->vhost) != 0 ||
            u.tls != c->tls)
            fail_msg("'%s': got host=%s port=%d user=%s pass=%s vhost=%s tls=%d", c->url, u.host,
                     u.port, u.user, u.password, u.vhost, u.tls);
        cc_url_amqp_deinit(&u);
        cc_url_amqp_deinit(&u); /* idempotent */
    }
}

struct redis_case {
    const char *url;
    int rc;
    const char *host;
    int port;
    const char *socket_path;
    const char *username;
    const char *password;
    int db;
    bool tls;
};

static const struct redis_case redis_cases[] = {
    {"redis://", CC_OK, "localhost", 6379, NULL, NULL, NULL, 0, false},
    {"redis://localhost:6379/0", CC_OK, "localhost", 6379, NULL, NULL, NULL, 0, false},
    {"redis://h/1", CC_OK, "h", 6379, NULL, NULL, NULL, 1, false},
    {"redis://h//1", CC_OK, "h", 6379, NULL, NULL, NULL, 1, false},
    {"redis://h/15/", CC_OK, "h", 6379, NULL, NULL, NULL, 15, false},
    {"redis://h/", CC_OK, "h", 6379, NULL, NULL, NULL, 0, false},
    {"redis://:s%3Acret@h:7000/2", CC_OK, "h", 7000, NULL, NULL, "s:cret", 2, false},
    {"redis://user:pw@h/3", CC_OK, "h", 6379, NULL, "user", "pw", 3, false},
    {"redis://[::1]:6380/4", CC_OK, "::1", 6380, NULL, NULL, NULL, 4, false},
    {"rediss://h:6380/0?ssl_cert_reqs=required", CC_OK, "h", 6380, NULL, NULL, NULL, 0, true},
    {"unix:///run/redis.sock", CC_OK, NULL, 0, "/run/redis.sock", NULL, NULL, 0, false},
    {"unix:///run/redis.sock?db=5", CC_OK, NULL, 0, "/run/redis.sock", NULL, NULL, 5, false},
    {"socket:///tmp/r.sock?virtual_host=6", CC_OK, NULL, 0, "/tmp/r.sock", NULL, NULL, 6, false},
    {"unix://:pw@/tmp/r.sock?x=1&db=7", CC_OK, NULL, 0, "/tmp/r.sock", NULL, "pw", 7, false},
    /* errors */
    {"amqp://h/", CC_EURL, NULL, 0, NULL, NULL, NULL, 0, false},
    {"redis://h/x", CC_EURL, NULL, 0, NULL, NULL, NULL, 0, false},
    {"redis://h/-1", CC_EURL, NULL, 0, NULL, NULL, NULL, 0, false},
    {"redis://h/1x", CC_EURL, NULL, 0, NULL, NULL, NULL, 0, false},
    {"redis://h/99999999999", CC_EURL, NULL, 0, NULL, NULL, NULL, 0, false},
    {"redis://h:99999/", CC_EURL, NULL, 0, NULL, NULL, NULL, 0, false},
    {"unix://", CC_EURL, NULL, 0, NULL, NULL, NULL, 0, false},
    {"unix:///s?db=abc", CC_EURL, NULL, 0, NULL, NULL, NULL, 0, false},
    {"redis:/h", CC_EURL, NULL, 0, NULL, NULL, NULL, 0, false},
};

static void assert_str_or_null(const char *url, const char *what, const char *got, const char *want)
{
    if (want == NULL && got == NULL)
        return;
    if (want == NULL || got == NULL || strcmp(want, got) != 0)
        fail_msg("'%s': %s = '%s', want '%s'", url, what, got ? got : "(null)",
                 want ? want : "(null)");
}

static void test_url_redis_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(redis_cases) / sizeof(redis_cases[0]); i++) {
        const struct redis_case *c = &redis_cases[i];
        struct cc_redis_url u;
        struct cc_err err = {0};
        int rc = cc_url_parse_redis(c->url, &u, &err);

        if (rc != c->rc)
            fail_msg("'%s': rc %d, want %d (%s)", c->url, rc, c->rc, err.msg);
        if (rc != CC_OK) {
            assert_true(strlen(err.msg) > 0);
            cc_url_redis_deinit(&u);
            continue;
        }
        assert_str_or_null(c->url, "host", u.host, c->host);
        assert_str_or_null(c->url, "socket_path", u.socket_path, c->socket_path);
        assert_str_or_null(c->url, "username", u.username, c->username);
        assert_str_or_null(c->url, "password", u.password, c->password);
        if (u.port != c->port || u.db != c->db || u.tls != c->tls)
            fail_msg("'%s': port=%d db=%d tls=%d", c->url, u.port, u.db, u.tls);
        cc_url_redis_deinit(&u);
    }
}

static void test_url_redact(void **state)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"amqp://guest:guest@localhost:5672//", "amqp://guest:**@localhost:5672//"},
        {"redis://:secret@localhost:6379/0", "redis://:**@localhost:6379/0"},
        {"redis://h/1", "redis://h/1"},
        {"redis://u@h", "redis://u@h"},
        {"amqp://a@b:c@h/", "amqp://a@b:**@h/"},
        {"amqp://u:p%40ss@h/v@x", "amqp://u:**@h/v@x"},
        {"none", "none"},
        {"", ""},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *r = cc_url_redact(cases[i].in);

        assert_string_equal(r, cases[i].out);
        free(r);
    }
}

/* issue 14: every password of every URL shape, masked as Celery's inspect conf does
 * (kombu's maybe_sanitize_url(url, mask='********') for the user info), and what Celery
 * drops (the query) kept but with its secrets masked. */
static void test_issue_14_url_mask_every_password(void **state)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        /* the forms kombu prints (checked with maybe_sanitize_url(u, mask='********')) */
        {"redis://:S3cretPW@127.0.0.1:6379/0", "redis://:********@127.0.0.1:6379/0"},
        {"redis://user:S3cretPW@h:1/0", "redis://user:********@h:1/0"},
        {"amqp://guest:S3cretPW@localhost:5672//", "amqp://guest:********@localhost:5672//"},
        {"db+postgresql://u:S3cretPW@h:5432/db", "db+postgresql://u:********@h:5432/db"},
        {"rediss://:p%40ss@h:6380/0?ssl_cert_reqs=required",
         "rediss://:********@h:6380/0?ssl_cert_reqs=required"},
        {"redis://h:6379/0", "redis://h:6379/0"},
        {"amqp://u@h//", "amqp://u@h//"},
        {"unix:///tmp/x.sock?db=2", "unix:///tmp/x.sock?db=2"},
        /* secrets in the query (libpq, rediss) */
        {"postgresql://u@h/db?sslmode=require&password=S3cretPW",
         "postgresql://u@h/db?sslmode=require&password=********"},
        {"postgresql://h/db?PassWord=S3cretPW&sslpassword=S3cretPW&token=x&user=u",
         "postgresql://h/db?PassWord=********&sslpassword=********&token=********&user=u"},
        /* libpq conninfo strings */
        {"host=h password=S3cretPW dbname=d", "host=h password=******** dbname=d"},
        {"host=h password = 'S3 cret\\'PW' user=u", "host=h password = ******** user=u"},
        /* failover lists, and a ';' that is part of a password */
        {"amqp://u:S3cretPW@h1//;amqp://u:S3cretPW@h2//",
         "amqp://u:********@h1//;amqp://u:********@h2//"},
        {"redis://:S3c;retPW@h/0", "redis://:********@h/0"},
        /* a password urllib cannot split ('/', '#', '?' in it): masked up to the last '@' */
        {"redis://:S3c/retPW@h/0", "redis://:********@h/0"},
        {"amqp://u:S3c#ret?PW@h//", "amqp://u:********@h//"},
        /* a port, then '@' in the path: nothing to hide */
        {"amqp://h:5672/v@x", "amqp://h:5672/v@x"},
        {"amqp://a@b:S3cretPW@h/", "amqp://a@b:********@h/"},
        {"none", "none"},
        {"", ""},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *r = cc_url_mask(cases[i].in, CC_URL_MASK_CONF);

        if (strcmp(r, cases[i].out) != 0)
            fail_msg("%s -> %s, want %s", cases[i].in, r, cases[i].out);
        assert_null(strstr(r, "S3c"));
        free(r);
    }
    {
        char *r = cc_url_mask(NULL, "**");

        assert_string_equal(r, "");
        free(r);
    }
}

/* issue 14: parse errors that quote the URL quote it masked. */
static void test_issue_14_url_errors_are_masked(void **state)
{
    static const char *const bad[] = {"amqp://u:S3cretPW@h1//;amqp://u:S3cretPW@h2//",
                                      "am qp://u:S3cretPW@h//", "unix://:S3cretPW@"};
    struct cc_amqp_url a;
    struct cc_redis_url r;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct cc_err err = {0};

        if (cc_url_parse_amqp(bad[i], &a, &err) == CC_OK)
            cc_url_amqp_deinit(&a);
        if (strstr(err.msg, "S3cret") != NULL)
            fail_msg("%s", err.msg);
        memset(&err, 0, sizeof(err));
        if (cc_url_parse_redis(bad[i], &r, &err) == CC_OK)
            cc_url_redis_deinit(&r);
        if (strstr(err.msg, "S3cret") != NULL)
            fail_msg("%s", err.msg);
    }
}

/* rediss:// query options (Celery's names); redis:// ignores its query, as Celery does. */
static void test_url_redis_tls_options(void **state)
{
    static const struct {
        const char *url;
        int rc;
        enum cc_redis_ssl_reqs reqs;
        const char *ca, *cert, *key;
    } cases[] = {
        {"rediss://h:6380/0", CC_OK, CC_REDIS_SSL_REQUIRED, NULL, NULL, NULL},
        {"rediss://h/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem", CC_OK,
         CC_REDIS_SSL_REQUIRED, "/etc/ca.pem", NULL, NULL},
        {"rediss://h/0?ssl_cert_reqs=CERT_REQUIRED", CC_OK, CC_REDIS_SSL_REQUIRED, NULL, NULL,
         NULL},
        {"rediss://h/0?ssl_cert_reqs=optional", CC_OK, CC_REDIS_SSL_OPTIONAL, NULL, NULL, NULL},
        {"rediss://h/0?ssl_cert_reqs=CERT_OPTIONAL", CC_OK, CC_REDIS_SSL_OPTIONAL, NULL, NULL,
         NULL},
        {"rediss://h/0?ssl_cert_reqs=none", CC_OK, CC_REDIS_SSL_NONE, NULL, NULL, NULL},
        {"rediss://h/0?ssl_cert_reqs=CERT_NONE", CC_OK, CC_REDIS_SSL_NONE, NULL, NULL, NULL},
        {"rediss://:pw@h:6380/2?ssl_cert_reqs=required&ssl_ca_certs=%2Ftmp%2Fa%20b%2Fca.pem"
         "&ssl_certfile=/c/client.pem&ssl_keyfile=/c/client.key",
         CC_OK, CC_REDIS_SSL_REQUIRED, "/tmp/a b/ca.pem", "/c/client.pem", "/c/client.key"},
        {"rediss://h/0?ssl_cert_reqs=maybe", CC_EURL, 0, NULL, NULL, NULL},
        /* empty is absent (parse_qsl drops it): the default, required */
        {"rediss://h/0?ssl_cert_reqs=", CC_OK, CC_REDIS_SSL_REQUIRED, NULL, NULL, NULL},
        {"rediss://h/0?ssl_cert_reqs=Required", CC_EURL, 0, NULL, NULL, NULL},
        {"rediss://h/0?ssl_ca_certs=%00", CC_EURL, 0, NULL, NULL, NULL},
        /* plain redis:// never reads TLS options, even bad ones */
        {"redis://h/0?ssl_cert_reqs=maybe&ssl_ca_certs=/x", CC_OK, CC_REDIS_SSL_REQUIRED, NULL,
         NULL, NULL},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cc_redis_url u;
        struct cc_err err = {0};
        int rc = cc_url_parse_redis(cases[i].url, &u, &err);

        if (rc != cases[i].rc)
            fail_msg("'%s': rc %d, want %d (%s)", cases[i].url, rc, cases[i].rc, err.msg);
        if (rc != CC_OK) {
            assert_non_null(strstr(err.msg, "ssl_"));
            assert_null(u.ssl_ca_certs);
            cc_url_redis_deinit(&u);
            continue;
        }
        if (u.ssl_cert_reqs != cases[i].reqs)
            fail_msg("'%s': ssl_cert_reqs %d, want %d", cases[i].url, (int)u.ssl_cert_reqs,
                     (int)cases[i].reqs);
        assert_str_or_null(cases[i].url, "ssl_ca_certs", u.ssl_ca_certs, cases[i].ca);
        assert_str_or_null(cases[i].url, "ssl_certfile", u.ssl_certfile, cases[i].cert);
        assert_str_or_null(cases[i].url, "ssl_keyfile", u.ssl_keyfile, cases[i].key);
        cc_url_redis_deinit(&u);
    }
}

/* The error message names what was wrong, so the config error that wraps it is useful. */
static void test_url_error_messages(void **state)
{
    struct cc_amqp_url u;
    struct cc_err err = {0};

    (void)state;
    assert_int_equal(cc_url_parse_amqp("amqp://h:abc/", &u, &err), CC_EURL);
    assert_non_null(strstr(err.msg, "port"));
    assert_int_equal(cc_url_parse_amqp("http://h/", &u, &err), CC_EURL);
    assert_non_null(strstr(err.msg, "http"));
}

/* Found by fuzz_url (tests/fuzz/corpus/url/crash-unix-no-query): a unix:// URL without a
 * '?' made url_query_get() compute NULL + 0 for the absent query, which clang's UBSan
 * rejects. No query means db 0, and a '=' in the path is part of the socket name. */
static void test_url_fuzz_unix_without_query(void **state)
{
    struct cc_redis_url u;
    struct cc_err err = {0};

    (void)state;
    assert_int_equal(cc_url_parse_redis("unix:///run/rerun/redis.sdb=6", &u, &err), CC_OK);
    assert_string_equal(u.socket_path, "/run/rerun/redis.sdb=6");
    assert_int_equal(u.db, 0);
    cc_url_redis_deinit(&u);
    assert_int_equal(cc_url_parse_redis("unix:///s#db=3", &u, &err), CC_OK);
    assert_string_equal(u.socket_path, "/s");
    assert_int_equal(u.db, 0);
    cc_url_redis_deinit(&u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_url_amqp_table, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_url_redis_table, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_url_redis_tls_options, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_url_redact, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_issue_14_url_mask_every_password, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_issue_14_url_errors_are_masked, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_url_error_messages, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_url_fuzz_unix_without_query, NULL, NULL),
    };

    return cmocka_run_group_tests_name("url", tests, NULL, NULL);
}
