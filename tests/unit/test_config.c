/* Unit tests for src/core/config.c: defaults, precedence file < env < CLI, flag spellings, error
 * messages that name the option and the source, the option table, nodename expansion. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

#define DATA CC_TEST_DATA_DIR "/config/"

static char *no_env[] = {NULL};

/* Load with argv = {"worker", args...}; asserts the expected status. */
static int load(struct cc_config *cfg, char **env, struct cc_err *err, const char *const *args)
{
    char *argv[32];
    int argc = 0;

    argv[argc++] = (char *)"worker";
    for (; args != NULL && *args != NULL; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    return cc_config_load(cfg, CC_CMD_WORKER, argc, argv, env ? env : no_env, err);
}

static const char *machine_host(void)
{
    static char host[256];

    if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0')
        snprintf(host, sizeof(host), "localhost");
    return host;
}

static void test_config_defaults(void **state)
{
    struct cc_config cfg;
    struct cc_err err = {0};
    char want_host[300];

    (void)state;
    assert_int_equal(load(&cfg, NULL, &err, NULL), CC_OK);
    assert_null(cfg.config_file);
    assert_string_equal(cfg.broker_url, "amqp://guest:guest@localhost:5672//");
    assert_string_equal(cfg.result_backend, "none");
    assert_int_equal(cfg.n_queues, 1);
    assert_string_equal(cfg.queues[0], "celery");
    assert_null(cfg.queues[1]);
    snprintf(want_host, sizeof(want_host), "celery@%s", machine_host());
    assert_string_equal(cfg.hostname, want_host);
    assert_int_equal(cfg.concurrency, sysconf(_SC_NPROCESSORS_ONLN));
    assert_int_equal(cfg.loglevel, CC_LOG_WARNING);
    assert_int_equal(cfg.log_format, CC_LOG_HUMAN);
    assert_int_equal(cfg.prefetch_multiplier, 4);
    assert_int_equal(cfg.pool, CC_POOL_PREFORK);
    assert_string_equal(cfg.default_queue, "celery");
    assert_true(cfg.create_missing_queues);
    assert_int_equal(cfg.queue_max_priority, 0);
    assert_false(cfg.acks_late);
    assert_false(cfg.track_started);
    assert_false(cfg.result_extended);
    assert_int_equal(cfg.result_expires_s, 86400);
    assert_false(cfg.store_errors_even_if_ignored);
    assert_int_equal(cfg.max_message_bytes, 16 * 1024 * 1024);
    assert_true(cfg.heartbeat_s == 120.0);
    assert_true(cfg.connect_timeout_s == 4.0);
    assert_string_equal(cfg.broker_ssl_ca_certs, CC_CONFIG_SYSTEM_CA_FILE);
    assert_null(cfg.broker_ssl_certfile);
    assert_null(cfg.broker_ssl_keyfile);
    assert_int_equal(cfg.broker_ssl_verify, CC_SSL_VERIFY_REQUIRED);
    cc_config_deinit(&cfg);
    cc_config_deinit(&cfg); /* idempotent */
}

static void test_config_file_full(void **state)
{
    static const char *const args[] = {"--config", DATA "full.conf", NULL};
    struct cc_config cfg;
    struct cc_err err = {0};
    char want_host[300];

    (void)state;
    assert_int_equal(load(&cfg, NULL, &err, args), CC_OK);
    assert_string_equal(cfg.config_file, DATA "full.conf");
    assert_string_equal(cfg.broker_url, "amqp://u:p@rabbit:5673/vh");
    assert_string_equal(cfg.result_backend, "redis://:secret@redis:6380/2");
    assert_int_equal(cfg.n_queues, 3);
    assert_string_equal(cfg.queues[0], "a");
    assert_string_equal(cfg.queues[1], "b");
    assert_string_equal(cfg.queues[2], "c");
    assert_null(cfg.queues[3]);
    snprintf(want_host, sizeof(want_host), "w1@%.*s", (int)strcspn(machine_host(), "."),
             machine_host());
    assert_string_equal(cfg.hostname, want_host);
    assert_int_equal(cfg.concurrency, 3);
    assert_int_equal(cfg.loglevel, CC_LOG_INFO);
    assert_int_equal(cfg.log_format, CC_LOG_JSON);
    assert_int_equal(cfg.prefetch_multiplier, 1);
    assert_int_equal(cfg.pool, CC_POOL_SOLO);
    assert_string_equal(cfg.default_queue, "jobs");
    assert_false(cfg.create_missing_queues);
    assert_int_equal(cfg.queue_max_priority, 10);
    assert_true(cfg.acks_late);
    assert_true(cfg.track_started);
    assert_true(cfg.result_extended);
    assert_int_equal(cfg.result_expires_s, 3600);
    assert_true(cfg.store_errors_even_if_ignored);
    assert_int_equal(cfg.max_message_bytes, 1024 * 1024);
    assert_true(cfg.heartbeat_s == 30.5);
    assert_true(cfg.connect_timeout_s == 2.0);
    cc_config_deinit(&cfg);
}

static void test_config_file_quoting(void **state)
{
    static const char *const args[] = {"--config=" DATA "quoted.conf", NULL};
    struct cc_config cfg;
    struct cc_err err = {0};
    char want_host[300];

    (void)state;
    assert_int_equal(load(&cfg, NULL, &err, args), CC_OK);
    snprintf(want_host, sizeof(want_host), "node #1@%s", machine_host());
    assert_string_equal(cfg.hostname, want_host);
    assert_string_equal(cfg.broker_url, "amqp://u:pa%23ss@h//");
    assert_string_equal(cfg.default_queue, "q \"x\" \\ y");
    assert_int_equal(cfg.n_queues, 2);
    assert_string_equal(cfg.queues[0], "a#b"); /* '#' inside an unquoted value is kept */
    assert_string_equal(cfg.queues[1], "c");
    cc_config_deinit(&cfg);
}

/* Each layer overrides the previous one, option by option. */
static void test_config_precedence(void **state)
{
    char *env[] = {
        (char *)"CELERYC_CONFIG=" DATA "precedence.conf",
        (char *)"CELERY_BROKER_URL=amqp://celery-env//",
        (char *)"CELERYC_WORKER_CONCURRENCY=5",
        (char *)"CELERYC_WORKER_PREFETCH_MULTIPLIER=6",
        (char *)"CELERYC_TASK_ACKS_LATE=true",
        (char *)"CELERYC_WORKER_HOSTNAME=", /* empty counts as unset */
        (char *)"UNRELATED=1",
        NULL,
    };
    static const char *const args[] = {"-c7", "--no-acks-late", NULL};
    struct cc_config cfg;
    struct cc_err err = {0};

    (void)state;
    assert_int_equal(load(&cfg, env, &err, args), CC_OK);
    assert_string_equal(cfg.config_file, DATA "precedence.conf");
    assert_string_equal(cfg.broker_url, "amqp://celery-env//"); /* env over file */
    assert_int_equal(cfg.concurrency, 7);                       /* CLI over env over file */
    assert_int_equal(cfg.prefetch_multiplier, 6);               /* env over file */
    assert_int_equal(cfg.loglevel, CC_LOG_INFO);                /* file over default */
    assert_false(cfg.acks_late);                                /* CLI over env */
    assert_string_equal(cfg.default_queue, "fromfile");
    assert_string_equal(cfg.queues[0], "fromfile"); /* default queue list follows it */
    assert_non_null(strstr(cfg.hostname, "celery@"));
    cc_config_deinit(&cfg);
}

/* CELERYC_BROKER_URL beats Celery's CELERY_BROKER_URL; -b beats both; --config beats
 * CELERYC_CONFIG. */
static void test_config_precedence_aliases(void **state)
{
    char *env[] = {
        (char *)"CELERYC_BROKER_URL=amqp://celeryc-env//",
        (char *)"CELERY_BROKER_URL=amqp://celery-env//",
        (char *)"CELERY_RESULT_BACKEND=redis://r/1",
        (char *)"CELERYC_CONFIG=/nonexistent/celeryc.conf",
        NULL,
    };
    static const char *const args1[] = {"--config", DATA "precedence.conf", NULL};
    static const char *const args2[] = {"--config", DATA "precedence.conf", "-b", "amqp://cli//",
                                        NULL};
    struct cc_config cfg;
    struct cc_err err = {0};

    (void)state;
    assert_int_equal(load(&cfg, env, &err, args1), CC_OK);
    assert_string_equal(cfg.broker_url, "amqp://celeryc-env//");
    assert_string_equal(cfg.result_backend, "redis://r/1");
    cc_config_deinit(&cfg);
    assert_int_equal(load(&cfg, env, &err, args2), CC_OK);
    assert_string_equal(cfg.broker_url, "amqp://cli//");
    cc_config_deinit(&cfg);
}

/* The flag spellings `celery worker` users type. */
static void test_config_cli_forms(void **state)
{
    static const struct {
        const char *args[6];
        int concurrency;
        bool acks_late;
        bool create_missing;
        const char *queue0;
        size_t n_queues;
    } cases[] = {
        {{"--concurrency=2", NULL}, 2, false, true, "celery", 1},
        {{"--concurrency", "2", NULL}, 2, false, true, "celery", 1},
        {{"-c2", NULL}, 2, false, true, "celery", 1},
        {{"-c", "2", "-c", "3", NULL}, 3, false, true, "celery", 1},
        {{"-c1", "--acks-late", NULL}, 1, true, true, "celery", 1},
        {{"-c1", "--acks-late=false", NULL}, 1, false, true, "celery", 1},
        {{"-c1", "--acks-late=yes", NULL}, 1, true, true, "celery", 1},
        {{"-c1", "--no-create-missing-queues", NULL}, 1, false, false, "celery", 1},
        {{"-c1", "-Q", " a, b ,,c ", NULL}, 1, false, true, "a", 3},
        {{"-c1", "--queues=x", NULL}, 1, false, true, "x", 1},
        {{"-c1", "-Qx,y", NULL}, 1, false, true, "x", 2},
        {{"-c1", "--default-queue", "dq", NULL}, 1, false, true, "dq", 1},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cc_config cfg;
        struct cc_err err = {0};

        if (load(&cfg, NULL, &err, cases[i].args) != CC_OK)
            fail_msg("case %zu: %s", i, err.msg);
        assert_int_equal(cfg.concurrency, cases[i].concurrency);
        assert_int_equal(cfg.acks_late, cases[i].acks_late);
        assert_int_equal(cfg.create_missing_queues, cases[i].create_missing);
        assert_string_equal(cfg.queues[0], cases[i].queue0);
        assert_int_equal(cfg.n_queues, cases[i].n_queues);
        cc_config_deinit(&cfg);
    }
}

static void test_config_cli_values(void **state)
{
    static const char *const args[] = {"-b",
                                       "amqps://u:p@[::1]:5671/v",
                                       "--result-backend=unix:///run/redis.sock?db=3",
                                       "-n",
                                       "worker1",
                                       "-l",
                                       "debug",
                                       "--log-format",
                                       "JSON",
                                       "--prefetch-multiplier=0",
                                       "-P",
                                       "threads",
                                       "--max-priority",
                                       "255",
                                       "--result-expires",
                                       "0",
                                       "--max-message-bytes=64k",
                                       "--broker-heartbeat",
                                       "0",
                                       "--broker-connection-timeout",
                                       "0.5",
                                       "--track-started",
                                       "--result-extended",
                                       "--store-errors-even-if-ignored",
                                       NULL};
    struct cc_config cfg;
    struct cc_err err = {0};

    (void)state;
    if (load(&cfg, NULL, &err, args) != CC_OK)
        fail_msg("%s", err.msg);
    assert_string_equal(cfg.broker_url, "amqps://u:p@[::1]:5671/v");
    assert_string_equal(cfg.result_backend, "unix:///run/redis.sock?db=3");
    assert_string_equal(cfg.hostname, "celery@worker1");
    assert_int_equal(cfg.loglevel, CC_LOG_DEBUG);
    assert_int_equal(cfg.log_format, CC_LOG_JSON);
    assert_int_equal(cfg.prefetch_multiplier, 0);
    assert_int_equal(cfg.pool, CC_POOL_THREADS);
    assert_int_equal(cfg.queue_max_priority, 255);
    assert_int_equal(cfg.result_expires_s, 0);
    assert_int_equal(cfg.max_message_bytes, 65536);
    assert_true(cfg.heartbeat_s == 0.0);
    assert_true(cfg.connect_timeout_s == 0.5);
    assert_true(cfg.track_started && cfg.result_extended && cfg.store_errors_even_if_ignored);
    cc_config_deinit(&cfg);
}

static void test_config_backend_none_spellings(void **state)
{
    static const char *const spellings[] = {"", "none", "NONE", "disabled"};

    (void)state;
    for (size_t i = 0; i < sizeof(spellings) / sizeof(spellings[0]); i++) {
        char arg[64];
        const char *args[] = {arg, NULL};
        struct cc_config cfg;
        struct cc_err err = {0};

        snprintf(arg, sizeof(arg), "--result-backend=%s", spellings[i]);
        assert_int_equal(load(&cfg, NULL, &err, args), CC_OK);
        assert_string_equal(cfg.result_backend, "none");
        cc_config_deinit(&cfg);
    }
}

/* Bad input: status code, and the message names the source and the option. */
struct bad_case {
    const char *args[4];
    const char *env0;
    int rc;
    const char *want[3]; /* substrings of err.msg */
};

static const struct bad_case bad_cases[] = {
    {{"-c", "abc"},
     NULL,
     CC_ECONFIG,
     {"command line -c", "worker_concurrency", "not an integer: 'abc'"}},
    {{"--broker-ssl-ca", "/nonexistent/ca.pem"},
     NULL,
     CC_ECONFIG,
     {"command line --broker-ssl-ca", "broker_ssl_ca_certs",
      "cannot read '/nonexistent/ca.pem': No such file or directory"}},
    {{"--broker-ssl-cert=/"},
     NULL,
     CC_ECONFIG,
     {"command line --broker-ssl-cert", "broker_ssl_certfile", "'/' is not a regular file"}},
    {{NULL},
     "CELERYC_BROKER_SSL_KEYFILE=/nonexistent/k.pem",
     CC_ECONFIG,
     {"environment CELERYC_BROKER_SSL_KEYFILE", "broker_ssl_keyfile", "cannot read"}},
    {{"--broker-ssl-key", DATA "full.conf"},
     NULL,
     CC_ECONFIG,
     {"broker_ssl_keyfile", "without broker_ssl_certfile", NULL}},
    {{"--broker-ssl-verify", "optional"},
     NULL,
     CC_ECONFIG,
     {"broker_ssl_verify", "'optional' is not one of required, none", NULL}},
    {{"--concurrency=-1"}, NULL, CC_ECONFIG, {"--concurrency", "worker_concurrency", "range"}},
    {{"--concurrency="}, NULL, CC_ECONFIG, {"worker_concurrency", "not an integer", NULL}},
    {{"-c", "2.5"}, NULL, CC_ECONFIG, {"worker_concurrency", "2.5", NULL}},
    {{NULL},
     "CELERYC_WORKER_CONCURRENCY=abc",
     CC_ECONFIG,
     {"environment CELERYC_WORKER_CONCURRENCY", "worker_concurrency", "abc"}},
    {{"-b", "redis://h/0"}, NULL, CC_ECONFIG, {"command line -b", "broker_url", "AMQP"}},
    {{"-b", "amqp://h:99999//"}, NULL, CC_ECONFIG, {"broker_url", "port", NULL}},
    {{NULL},
     "CELERY_BROKER_URL=nonsense",
     CC_ECONFIG,
     {"environment CELERY_BROKER_URL", "broker_url", NULL}},
    {{"--result-backend", "rpc://"}, NULL, CC_ECONFIG, {"result_backend", "unsupported", NULL}},
    {{"--result-backend", "redis://h/x"}, NULL, CC_ECONFIG, {"result_backend", "db", NULL}},
    {{NULL},
     "CELERY_RESULT_BACKEND=db+mysql://u@h/d", /* [pgb] db+postgresql is supported now */
     CC_ECONFIG,
     {"environment CELERY_RESULT_BACKEND", "result_backend", NULL}},
    {{"-l", "verbose"}, NULL, CC_ECONFIG, {"worker_loglevel", "'verbose'", NULL}},
    {{"--log-format", "xml"}, NULL, CC_ECONFIG, {"log_format", "human, json", NULL}},
    {{"-P", "eventlet"}, NULL, CC_ECONFIG, {"worker_pool", "prefork, threads, solo", NULL}},
    {{"--acks-late=maybe"}, NULL, CC_ECONFIG, {"task_acks_late", "not a boolean", NULL}},
    {{"--max-priority", "256"}, NULL, CC_ECONFIG, {"task_queue_max_priority", "range", NULL}},
    {{"--max-message-bytes", "10"}, NULL, CC_ECONFIG, {"worker_max_message_bytes", NULL, NULL}},
    {{"--max-message-bytes", "5X"}, NULL, CC_ECONFIG, {"worker_max_message_bytes", NULL, NULL}},
    /* The cap is the pool's job limit (CC_POOL_MAX_MESSAGE_BYTES), named in whole bytes. */
    {{"--max-message-bytes", "256M"}, NULL, CC_OK, {NULL, NULL, NULL}},
    {{"--max-message-bytes", "257M"},
     NULL,
     CC_ECONFIG,
     {"worker_max_message_bytes", "out of range (1024..268435456 bytes)", NULL}},
    {{"--max-message-bytes", "1G"},
     NULL,
     CC_ECONFIG,
     {"worker_max_message_bytes", "268435456", NULL}},
    {{"--broker-heartbeat", "nan"}, NULL, CC_ECONFIG, {"broker_heartbeat", NULL, NULL}},
    {{"--broker-connection-timeout", "0"},
     NULL,
     CC_ECONFIG,
     {"broker_connection_timeout", "range", NULL}},
    {{"-n", "w1@%x"}, NULL, CC_ECONFIG, {"worker_hostname", "%x", NULL}},
    {{"-n", "w1@%"}, NULL, CC_ECONFIG, {"worker_hostname", NULL, NULL}},
    {{"-Q", " , "}, NULL, CC_OK, {NULL, NULL, NULL}}, /* empty list: falls back to default */
    {{"--default-queue="}, NULL, CC_ECONFIG, {"task_default_queue", "empty", NULL}},
    {{"--config", DATA "bad_int.conf"},
     NULL,
     CC_ECONFIG,
     {"config file ", "bad_int.conf:4: worker_concurrency: not an integer: 'abc'", NULL}},
    {{"--config", DATA "unknown.conf"},
     NULL,
     CC_ECONFIG,
     {"unknown.conf:1", "unknown option 'worker_concurency'", NULL}},
    {{"--config", DATA "noequals.conf"},
     NULL,
     CC_ECONFIG,
     {"noequals.conf:1", "expected 'name = value'", NULL}},
    {{"--config", DATA "unterminated.conf"},
     NULL,
     CC_ECONFIG,
     {"unterminated.conf:1", "worker_hostname", "quote"}},
    {{"--config", DATA "setconfig.conf"},
     NULL,
     CC_ECONFIG,
     {"setconfig.conf:1", "config: cannot be set", NULL}},
    {{"--config", "/nonexistent/x.conf"},
     NULL,
     CC_ECONFIG,
     {"config file /nonexistent/x.conf", "cannot open", NULL}},
    {{NULL}, "CELERYC_CONFIG=/nonexistent/y.conf", CC_ECONFIG, {"/nonexistent/y.conf", NULL, NULL}},
    /* usage errors */
    {{"--bogus"}, NULL, CC_EUSAGE, {"no such option: --bogus", NULL, NULL}},
    {{"--bogus=1"}, NULL, CC_EUSAGE, {"no such option: --bogus", NULL, NULL}},
    {{"-z"}, NULL, CC_EUSAGE, {"no such option: -z", NULL, NULL}},
    {{"-c"}, NULL, CC_EUSAGE, {"-c requires a value", NULL, NULL}},
    {{"--broker"}, NULL, CC_EUSAGE, {"--broker requires a value", NULL, NULL}},
    {{"--no-concurrency"}, NULL, CC_EUSAGE, {"no such option", NULL, NULL}},
    {{"--no-acks-late=1"}, NULL, CC_EUSAGE, {"takes no value", NULL, NULL}},
    {{"extra"}, NULL, CC_EUSAGE, {"unexpected argument 'extra'", NULL, NULL}},
    {{"--", "extra"}, NULL, CC_EUSAGE, {"unexpected argument 'extra'", NULL, NULL}},
    {{"-c1", "--help"}, NULL, CC_EAGAIN, {NULL, NULL, NULL}},
    {{"--bogus", "-h"}, NULL, CC_EAGAIN, {NULL, NULL, NULL}},
};

static void test_config_bad_values(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        const struct bad_case *c = &bad_cases[i];
        char *env[] = {(char *)c->env0, NULL};
        struct cc_config cfg;
        struct cc_err err = {0};
        int rc = load(&cfg, env, &err, c->args[0] ? c->args : NULL);

        if (rc != c->rc)
            fail_msg("case %zu (%s): rc %d want %d: %s", i, c->args[0] ? c->args[0] : c->env0, rc,
                     c->rc, err.msg);
        for (size_t k = 0; k < 3 && c->want[k] != NULL; k++) {
            if (strstr(err.msg, c->want[k]) == NULL)
                fail_msg("case %zu: '%s' not in '%s'", i, c->want[k], err.msg);
        }
        if (rc != CC_OK && rc != CC_EAGAIN)
            assert_int_equal(err.code, rc);
        cc_config_deinit(&cfg); /* valid whatever load returned */
    }
}

/* --help leaves the defaults in place so the caller can print usage and deinit. */
static void test_config_help(void **state)
{
    static const char *const args[] = {"--help", NULL};
    struct cc_config cfg;
    struct cc_err err = {0};

    (void)state;
    assert_int_equal(load(&cfg, NULL, &err, args), CC_EAGAIN);
    assert_string_equal(cfg.broker_url, "amqp://guest:guest@localhost:5672//");
    cc_config_deinit(&cfg);
}

/* Walk the table: names unique and help present; then the usage text: every option listed
 * once, flags unique, env names derived from the option names, no password printed. */
static void test_config_table(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    size_t n = cc_config_option_count();
    char *flags[64];
    size_t n_flags = 0;
    char *beat_text = NULL;
    size_t beat_len = 0;

    (void)state;
    assert_true(n >= 20);
    for (size_t i = 0; i < n; i++) {
        const char *name = cc_config_option_name(i);
        const char *help = cc_config_option_help(i);

        assert_non_null(name);
        assert_non_null(help);
        assert_true(strlen(help) > 10);
        for (size_t k = 0; k < i; k++)
            assert_string_not_equal(name, cc_config_option_name(k));
    }
    assert_null(cc_config_option_name(n));
    assert_null(cc_config_option_help(n));

    assert_non_null(f);
    cc_config_usage(f, CC_CMD_WORKER);
    fclose(f);
    /* [beat] beat-only options are listed by `celeryc beat --help`. */
    f = open_memstream(&beat_text, &beat_len);
    assert_non_null(f);
    cc_config_usage(f, CC_CMD_BEAT);
    fclose(f);
    assert_null(strstr(text, "guest:guest"));
    assert_non_null(strstr(text, "guest:**@"));
    for (size_t i = 0; i < n; i++) {
        char envname[96], tag[120];
        size_t k;

        snprintf(envname, sizeof(envname), "CELERYC_%s", cc_config_option_name(i));
        for (k = 8; envname[k] != '\0'; k++)
            envname[k] =
                (char)(envname[k] >= 'a' && envname[k] <= 'z' ? envname[k] - 32 : envname[k]);
        snprintf(tag, sizeof(tag), "%s", envname);
        if (strstr(text, tag) == NULL && strstr(beat_text, tag) == NULL)
            fail_msg("usage lacks '%s'", tag);
    }
    /* Collect every flag token from the option lines ("  -c, --concurrency N"). */
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (strncmp(line, "  -", 3) != 0 && strncmp(line, "      --", 8) != 0)
            continue;
        for (char *tok = line; (tok = strchr(tok, '-')) != NULL;) {
            size_t tl = strcspn(tok, " ,");

            if (tok[-1] == ' ' && tl > 1 && n_flags < 64) {
                flags[n_flags] = strndup(tok, tl);
                for (size_t k = 0; k < n_flags; k++) {
                    if (strcmp(flags[k], flags[n_flags]) == 0)
                        fail_msg("flag %s listed twice", flags[k]);
                }
                n_flags++;
            }
            tok += tl;
        }
    }
    assert_true(n_flags >= n); /* each option has a flag; booleans also have --no- */
    for (size_t k = 0; k < n_flags; k++)
        free(flags[k]);
    free(text);
    free(beat_text);
}

/* A scratch file to stand in for a PEM file (the config only checks it is readable). */
static void scratch_file(char *tmpl)
{
    int fd = mkstemp(tmpl);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, "x\n", 2), 2);
    close(fd);
}

/* Celery's broker_use_ssl keys from every source; "" unsets; the CA falls back to
 * $SSL_CERT_FILE, and an explicit option or CELERYC_ variable wins over it. */
static void test_config_ssl_options(void **state)
{
    char ca[] = "/tmp/cc_config_ca_XXXXXX", crt[] = "/tmp/cc_config_crt_XXXXXX";
    char key[] = "/tmp/cc_config_key_XXXXXX", conf[] = "/tmp/cc_config_ssl_XXXXXX";
    char env_ssl[64], env_ca[80];
    struct cc_config cfg;
    struct cc_err err = {0};
    FILE *f;

    (void)state;
    scratch_file(ca);
    scratch_file(crt);
    scratch_file(key);
    scratch_file(conf);
    snprintf(env_ssl, sizeof(env_ssl), "SSL_CERT_FILE=%s", ca);
    snprintf(env_ca, sizeof(env_ca), "CELERYC_BROKER_SSL_CA_CERTS=%s", crt);

    {
        const char *args[] = {"--broker-ssl-ca",
                              ca,
                              "--broker-ssl-cert",
                              crt,
                              "--broker-ssl-key",
                              key,
                              "--broker-ssl-verify",
                              "none",
                              NULL};

        if (load(&cfg, NULL, &err, args) != CC_OK)
            fail_msg("%s", err.msg);
        assert_string_equal(cfg.broker_ssl_ca_certs, ca);
        assert_string_equal(cfg.broker_ssl_certfile, crt);
        assert_string_equal(cfg.broker_ssl_keyfile, key);
        assert_int_equal(cfg.broker_ssl_verify, CC_SSL_VERIFY_NONE);
        cc_config_deinit(&cfg);
    }
    {
        char *env[] = {env_ssl, NULL};

        assert_int_equal(load(&cfg, env, &err, NULL), CC_OK);
        assert_string_equal(cfg.broker_ssl_ca_certs, ca);
        cc_config_deinit(&cfg);
    }
    {
        char *env[] = {env_ssl, env_ca, NULL};

        assert_int_equal(load(&cfg, env, &err, NULL), CC_OK);
        assert_string_equal(cfg.broker_ssl_ca_certs, crt);
        cc_config_deinit(&cfg);
    }
    {
        /* The file's values, then the command line unsets the key ("" = key in the cert). */
        const char *args[] = {"--config", conf, "--broker-ssl-key=", NULL};

        f = fopen(conf, "w");
        assert_non_null(f);
        fprintf(f,
                "broker_url = amqps://u:p@localhost//\nbroker_ssl_ca_certs = %s\n"
                "broker_ssl_certfile = \"%s\"\nbroker_ssl_keyfile = %s\n"
                "broker_ssl_verify = REQUIRED\n",
                ca, crt, key);
        fclose(f);
        if (load(&cfg, NULL, &err, args) != CC_OK)
            fail_msg("%s", err.msg);
        assert_string_equal(cfg.broker_ssl_ca_certs, ca);
        assert_string_equal(cfg.broker_ssl_certfile, crt);
        assert_null(cfg.broker_ssl_keyfile);
        assert_int_equal(cfg.broker_ssl_verify, CC_SSL_VERIFY_REQUIRED);
        cc_config_deinit(&cfg);
    }
    unlink(ca);
    unlink(crt);
    unlink(key);
    unlink(conf);
}

/* An implicit CA file ($SSL_CERT_FILE, the system bundle) is checked only when it will be
 * used: amqps:// with verification on. The error says where the path came from. */
static void test_config_ssl_implicit_ca(void **state)
{
    static char bad_env[] = "SSL_CERT_FILE=/nonexistent/bundle.pem";
    static char amqps[] = "CELERY_BROKER_URL=amqps://u:p@localhost//";
    static const char *const verify_none[] = {"--broker-ssl-verify", "none", NULL};
    struct cc_config cfg;
    struct cc_err err = {0};

    (void)state;
    {
        char *env[] = {bad_env, NULL}; /* plain amqp:// never opens it */

        assert_int_equal(load(&cfg, env, &err, NULL), CC_OK);
        assert_string_equal(cfg.broker_ssl_ca_certs, "/nonexistent/bundle.pem");
        cc_config_deinit(&cfg);
    }
    {
        char *env[] = {bad_env, amqps, NULL};

        assert_int_equal(load(&cfg, env, &err, NULL), CC_ECONFIG);
        assert_non_null(strstr(err.msg, "environment SSL_CERT_FILE: broker_ssl_ca_certs: "
                                        "cannot read '/nonexistent/bundle.pem'"));
        assert_non_null(strstr(err.msg, "--broker-ssl-ca"));
        cc_config_deinit(&cfg);
    }
    {
        char *env[] = {bad_env, amqps, NULL};

        assert_int_equal(load(&cfg, env, &err, verify_none), CC_OK);
        assert_int_equal(cfg.broker_ssl_verify, CC_SSL_VERIFY_NONE);
        cc_config_deinit(&cfg);
    }
}

static void test_config_expand_hostname(void **state)
{
    static const struct {
        const char *tmpl, *host, *want;
    } cases[] = {
        {"celery@%h", "web1.example.com", "celery@web1.example.com"},
        {"w1@%h", "web1.example.com", "w1@web1.example.com"},
        {"%n@x", "web1.example.com", "web1@x"},
        {"a@%d", "web1.example.com", "a@example.com"},
        {"w@%n.%d", "web1.example.com", "w@web1.example.com"},
        {"w@%d", "web1", "w@"},
        {"w@%n", "web1", "w@web1"},
        {"worker1", "web1", "celery@worker1"},
        {"%h", "web1.example.com", "celery@web1.example.com"},
        {"@h", "web1", "celery@h"},
        {"n@", "web1", "n@web1"},
        {"", "web1", "celery@web1"},
        {"x@%i%I", "web1", "x@0"},
        {"a@b@c", "web1", "a@b@c"},
        {"p%%c@%h", "web1", "p%c@web1"},
        {"w@%z", "web1", "w@%z"}, /* unknown: left alone (the config check refuses it) */
        {"w@h%", "web1", "w@h%"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *got = cc_config_expand_hostname(cases[i].tmpl, cases[i].host);

        if (strcmp(got, cases[i].want) != 0)
            fail_msg("'%s' with host %s -> '%s', want '%s'", cases[i].tmpl, cases[i].host, got,
                     cases[i].want);
        free(got);
    }
}

/* deploy/celeryc.conf documents every option at its default: uncommented, it loads and gives
 * exactly the defaults, and it mentions every option that a file may set. */
static void test_config_example_conf(void **state)
{
    FILE *in = fopen(CC_TEST_DATA_DIR "/../../../deploy/celeryc.conf", "r");
    char tmpl[] = "/tmp/cc_config_example_XXXXXX";
    int fd = mkstemp(tmpl);
    FILE *out;
    char line[512];
    const char *args[] = {"--config", tmpl, NULL};
    struct cc_config cfg, dflt;
    struct cc_err err = {0};
    size_t n_set = 0;

    (void)state;
    assert_non_null(in);
    assert_true(fd >= 0);
    out = fdopen(fd, "w");
    assert_non_null(out);
    while (fgets(line, sizeof(line), in) != NULL) {
        /* "#name = value" -> "name = value"; prose comments stay comments. */
        if (line[0] == '#' && line[1] >= 'a' && line[1] <= 'z' && strstr(line, " =") != NULL) {
            fputs(line + 1, out);
            n_set++;
        } else {
            fputs(line, out);
        }
    }
    fclose(in);
    fclose(out);
    assert_int_equal(n_set, cc_config_option_count() - 1); /* all but "config" itself */

    assert_int_equal(load(&dflt, NULL, &err, NULL), CC_OK);
    if (load(&cfg, NULL, &err, args) != CC_OK)
        fail_msg("%s", err.msg);
    unlink(tmpl);
    assert_string_equal(cfg.broker_url, dflt.broker_url);
    assert_string_equal(cfg.result_backend, dflt.result_backend);
    assert_string_equal(cfg.hostname, dflt.hostname);
    assert_string_equal(cfg.queues[0], dflt.queues[0]);
    assert_int_equal(cfg.n_queues, dflt.n_queues);
    assert_int_equal(cfg.concurrency, dflt.concurrency);
    assert_int_equal(cfg.loglevel, dflt.loglevel);
    assert_int_equal(cfg.log_format, dflt.log_format);
    assert_int_equal(cfg.prefetch_multiplier, dflt.prefetch_multiplier);
    assert_int_equal(cfg.pool, dflt.pool);
    assert_string_equal(cfg.default_queue, dflt.default_queue);
    assert_int_equal(cfg.create_missing_queues, dflt.create_missing_queues);
    assert_int_equal(cfg.queue_max_priority, dflt.queue_max_priority);
    assert_int_equal(cfg.acks_late, dflt.acks_late);
    assert_int_equal(cfg.track_started, dflt.track_started);
    assert_int_equal(cfg.result_extended, dflt.result_extended);
    assert_int_equal(cfg.result_expires_s, dflt.result_expires_s);
    assert_int_equal(cfg.store_errors_even_if_ignored, dflt.store_errors_even_if_ignored);
    assert_int_equal(cfg.max_message_bytes, dflt.max_message_bytes);
    assert_true(cfg.time_limit_s == dflt.time_limit_s);
    assert_true(cfg.soft_time_limit_s == dflt.soft_time_limit_s);
    assert_int_equal(cfg.acks_on_failure_or_timeout, dflt.acks_on_failure_or_timeout);
    assert_int_equal(cfg.reject_on_worker_lost, dflt.reject_on_worker_lost);
    assert_int_equal(cfg.max_tasks_per_child, dflt.max_tasks_per_child);
    assert_int_equal(cfg.max_memory_per_child_kib, dflt.max_memory_per_child_kib);
    assert_true(cfg.heartbeat_s == dflt.heartbeat_s);
    assert_true(cfg.connect_timeout_s == dflt.connect_timeout_s);
    cc_config_deinit(&cfg);
    cc_config_deinit(&dflt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_config_defaults, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_config_file_full, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_config_file_quoting, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_config_precedence, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_config_precedence_aliases, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_config_cli_forms, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_config_cli_values, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_config_backend_none_spellings, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_config_bad_values, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_config_help, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_config_table, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_config_ssl_options, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_config_ssl_implicit_ca, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_config_expand_hostname, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_config_example_conf, NULL, NULL),
    };

    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
