/* `celeryc jobs` and `celeryc db` (issue #6): the job store's command-line client.
 *
 * Design: parse the words into struct jcli (one flag table for every subcommand; a flag a
 * subcommand does not use is ignored, except that `jobs run` / `rerun` refuse the job fields
 * they do not take), resolve the store URL (--job-store, then
 * CELERYC_JOB_STORE, then job_store in --config / CELERYC_CONFIG through cc_config_load with
 * CC_CMD_BEAT), open the store, run the subcommand through src/jobs/jobstore.h and print either
 * human output (aligned tables, "key: value" blocks) or the rows as JSON (--json).
 *
 * `jobs run JOB` and `jobs rerun RUN` create a run (cc_jobstore_run_create; rerun_of for a
 * rerun); --args / --kwargs / --queue replace the job's (or the rerun run's) values for that
 * run, as the "args" of an invenio-jobs run replace the job's default args. They are checked
 * before the store is opened (cc_jobstore_run_args_validate: types, sizes; exit 2).
 *
 * `jobs stop` cancels in the store first (Q -> X, R -> C), then broadcasts Celery's revoke
 * (terminate=True, SIGTERM for a running run) through the client commands of src/client/cli.c
 * (`celeryc control terminate|revoke`), whose replies it reads from a temporary stdout.
 *
 * `db debug ...` is a hidden set of subcommands that call single store functions (lease,
 * fenced run create, worker-side start/finish/logs, sweeps) and print JSON: the integration
 * tests drive the store API through them. Not for operators.
 *
 * Exit codes (jobs_cli.h): 0 ok, 1 not found / refused (unknown id, invalid job, policy),
 * 2 usage, 70 store error (unreachable, schema missing). */
#include "jobs_cli.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "config.h"
#include "jobstore.h"
#include "util.h"

extern char **environ;

#define JCLI_OK       0
#define JCLI_REFUSED  1
#define JCLI_USAGE    2
#define JCLI_SOFTWARE 70

#define JCLI_MAX_POS 16

enum jflag {
    F_NONE = 0,
    F_STORE,
    F_CONFIG,
    F_JSON,
    F_HELP,
    F_BROKER,
    F_USER,
    F_TIMEOUT,
    F_FOLLOW,
    F_LIMIT,
    F_ACTIVE_ONLY,
    F_TITLE,
    F_DESCRIPTION,
    F_TASK,
    F_QUEUE,
    F_INTERVAL,
    F_CRONTAB,
    F_NO_SCHEDULE,
    F_TIMEZONE,
    F_ARGS,
    F_KWARGS,
    F_OPTIONS,
    F_CONCURRENCY,
    F_RETRY,
    F_MISSED,
    F_DEADLINE,
    F_INACTIVE,
    F_ACTIVE,
    F_SINCE_KWARG,
    F_JSON_FILE,
    F_EPOCH,
    F_LEASE,
    F_SLOT,
    F_COUNT,
};

static const struct {
    const char *long_flag;
    char short_flag;
    bool has_value;
    enum jflag id;
} jcli_flags[] = {
    {"--job-store", 0, true, F_STORE},
    {"--config", 0, true, F_CONFIG},
    {"--json", 'j', false, F_JSON},
    {"--help", 'h', false, F_HELP},
    {"--broker", 'b', true, F_BROKER},
    {"--user", 0, true, F_USER},
    {"--timeout", 't', true, F_TIMEOUT},
    {"--follow", 'f', false, F_FOLLOW},
    {"--limit", 'n', true, F_LIMIT},
    {"--active-only", 0, false, F_ACTIVE_ONLY},
    {"--title", 0, true, F_TITLE},
    {"--description", 0, true, F_DESCRIPTION},
    {"--task", 0, true, F_TASK},
    {"--queue", 'Q', true, F_QUEUE},
    {"--interval", 0, true, F_INTERVAL},
    {"--crontab", 0, true, F_CRONTAB},
    {"--no-schedule", 0, false, F_NO_SCHEDULE},
    {"--timezone", 0, true, F_TIMEZONE},
    {"--args", 'a', true, F_ARGS},
    {"--kwargs", 'k', true, F_KWARGS},
    {"--options", 0, true, F_OPTIONS},
    {"--concurrency", 0, true, F_CONCURRENCY},
    {"--retry", 0, true, F_RETRY},
    {"--missed", 0, true, F_MISSED},
    {"--deadline", 0, true, F_DEADLINE},
    {"--inactive", 0, false, F_INACTIVE},
    {"--active", 0, false, F_ACTIVE},
    {"--since-kwarg", 0, true, F_SINCE_KWARG},
    {"--json-file", 0, true, F_JSON_FILE},
    {"--epoch", 0, true, F_EPOCH},
    {"--lease", 0, true, F_LEASE},
    {"--slot", 0, true, F_SLOT},
    {"--count", 0, true, F_COUNT},
};

struct jcli {
    const char *prog; /* "jobs" or "db" */
    const char *sub;
    const char *pos[JCLI_MAX_POS];
    int n_pos;
    const char *store_url, *config, *broker, *user;
    bool is_json, is_help, is_follow, is_active_only;
    double timeout_s;
    int limit;
    int64_t epoch, slot_us, count;
    const char *lease;
    json_t *fields; /* create/update: the job fields given by flags (and --json-file) */
    bool has_field_error;
    const char *job_flag; /* the first job-field flag other than --args/--kwargs/--queue */
};

static int jcli_usage_error(const struct jcli *c, const char *fmt, const char *arg)
{
    fprintf(stderr, "celeryc %s: error: %s%s\nTry 'celeryc %s --help'.\n", c->prog, fmt,
            arg != NULL ? arg : "", c->prog);
    return JCLI_USAGE;
}

static int jcli_fail(const struct jcli *c, int rc, const struct cc_err *err)
{
    fprintf(stderr, "celeryc %s: error: %s\n", c->prog, err->msg[0] ? err->msg : cc_strerror(rc));
    switch (rc) {
    case CC_ENOTFOUND:
    case CC_EAGAIN:
    case CC_EINVAL:
    case CC_ESHUTDOWN:
        return JCLI_REFUSED;
    default:
        return JCLI_SOFTWARE;
    }
}

static void jobs_usage(FILE *out)
{
    fprintf(out, "Usage: celeryc jobs COMMAND [ARGS] [OPTIONS]\n\n"
                 "Manage the jobs and runs of the job store (Postgres).\n\n"
                 "Commands:\n"
                 "  list [--active-only]      All jobs, ordered by title.\n"
                 "  show ID                   One job (or one run, given a run id).\n"
                 "  create FLAGS              Create a job (--title and --task are required).\n"
                 "  update JOB_ID FLAGS       Change the given fields of a job.\n"
                 "  delete JOB_ID             Delete a job with its runs and logs.\n"
                 "  run JOB_ID [--user NAME] [--args JSON] [--kwargs JSON] [--queue NAME]\n"
                 "                            Queue a manual run (the beat leader sends it);\n"
                 "                            --args / --kwargs / --queue replace the job's\n"
                 "                            for this run.\n"
                 "  rerun RUN_ID [--user NAME] [--args JSON] [--kwargs JSON] [--queue NAME]\n"
                 "                            Queue a new run with the args, kwargs and queue\n"
                 "                            of a finished run (or these overrides).\n"
                 "  stop RUN_ID [-b URL]      Cancel a run and revoke its task (terminate).\n"
                 "  runs [JOB_ID] [-n N]      Runs, newest first (default 50).\n"
                 "  logs RUN_ID [--follow [--timeout S]]\n"
                 "                            A run's log lines; --follow until it finishes.\n\n"
                 "Job fields (create, update):\n"
                 "  --title TEXT --description TEXT --task NAME --queue NAME\n"
                 "  --interval SECONDS | --crontab \"MIN HOUR DOW DOM MOY\" | --no-schedule\n"
                 "                            Schedule (Celery's crontab field order; missing\n"
                 "                            trailing fields are \"*\"); none: run by hand only.\n"
                 "  --timezone ZONE           IANA zone of the crontab (default UTC).\n"
                 "  --args JSON --kwargs JSON --options JSON\n"
                 "                            Task arguments; options: routing_key, priority,\n"
                 "                            expires.\n"
                 "  --concurrency allow|forbid|replace (default forbid)\n"
                 "  --retry JSON              {\"max_attempts\":N,\"backoff\":S,\"factor\":F,\n"
                 "                            \"max_backoff\":S}\n"
                 "  --missed skip|run_once    --deadline SECONDS (missed-run starting deadline)\n"
                 "  --active | --inactive\n"
                 "  --since-kwarg NAME        Pass the start of the job's last successful run\n"
                 "                            as kwarg NAME (\"\" or not given: not passed).\n"
                 "  --json-file FILE          Fields as a JSON object (- for stdin); flags win.\n\n"
                 "Options:\n"
                 "  --job-store URL           postgresql://... (env CELERYC_JOB_STORE).\n"
                 "  --config FILE             Read job_store and broker_url from a celeryc config\n"
                 "                            file (env CELERYC_CONFIG).\n"
                 "  -b, --broker URL          Broker for `stop` (env CELERY_BROKER_URL).\n"
                 "  -t, --timeout SECONDS     stop: wait this long for worker replies (1);\n"
                 "                            logs --follow: give up after this long (exit 1).\n"
                 "  -j, --json                JSON output.\n"
                 "  -h, --help                Show this message and exit.\n\n"
                 "Exit status: 0 ok, 1 not found or refused, 2 usage, 70 store error.\n");
}

static void db_usage(FILE *out)
{
    fprintf(out, "Usage: celeryc db upgrade|version [OPTIONS]\n\n"
                 "The job store's schema: `upgrade` applies every pending migration (safe to\n"
                 "run concurrently), `version` prints the current and latest version.\n\n"
                 "Options:\n"
                 "  --job-store URL           postgresql://... (env CELERYC_JOB_STORE).\n"
                 "  --config FILE             Read job_store from a config file.\n"
                 "  -j, --json                JSON output.\n"
                 "  -h, --help                Show this message and exit.\n");
}

/* ---- Parsing ---------------------------------------------------------------------------- */

static int jcli_json_arg(struct jcli *c, const char *flag, const char *text, json_t **out)
{
    json_error_t jerr;

    *out = json_loads(text, JSON_DECODE_ANY, &jerr);
    if (*out == NULL) {
        fprintf(stderr, "celeryc %s: error: %s: not JSON: %s\n", c->prog, flag, jerr.text);
        return JCLI_USAGE;
    }
    return 0;
}

static int jcli_number(struct jcli *c, const char *flag, const char *text, double *out)
{
    char *end;

    errno = 0;
    *out = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0') {
        fprintf(stderr, "celeryc %s: error: %s: not a number: %s\n", c->prog, flag, text);
        return JCLI_USAGE;
    }
    return 0;
}

static int jcli_field_json(struct jcli *c, const char *key, const char *flag, const char *text)
{
    json_t *v;
    int rc = jcli_json_arg(c, flag, text, &v);

    if (rc == 0)
        json_object_set_new(c->fields, key, v);
    return rc;
}

/* --crontab "m h dow dom moy": Celery's field order, missing trailing fields are "*". */
static int jcli_crontab(struct jcli *c, const char *text)
{
    static const char *const names[] = {"minute", "hour", "day_of_week", "day_of_month",
                                        "month_of_year"};
    json_t *sch = json_pack("{s:s}", "type", "crontab");
    char *copy = cc_xstrdup(text), *save = NULL, *tok;
    int n = 0;

    for (tok = strtok_r(copy, " \t", &save); tok != NULL; tok = strtok_r(NULL, " \t", &save)) {
        if (n == 5) {
            free(copy);
            json_decref(sch);
            return jcli_usage_error(c, "--crontab takes at most 5 fields: ", text);
        }
        json_object_set_new(sch, names[n++], json_string(tok));
    }
    free(copy);
    if (n == 0) {
        json_decref(sch);
        return jcli_usage_error(c, "--crontab: empty", NULL);
    }
    for (; n < 5; n++)
        json_object_set_new(sch, names[n], json_string("*"));
    json_object_set_new(c->fields, "schedule", sch);
    return 0;
}

static int jcli_json_file(struct jcli *c, const char *path)
{
    json_error_t jerr;
    json_t *v =
        strcmp(path, "-") == 0 ? json_loadf(stdin, 0, &jerr) : json_load_file(path, 0, &jerr);
    const char *key;
    json_t *val;

    if (v == NULL) {
        fprintf(stderr, "celeryc %s: error: --json-file %s: %s (line %d)\n", c->prog, path,
                jerr.text, jerr.line);
        return JCLI_USAGE;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        return jcli_usage_error(c, "--json-file: expected a JSON object in ", path);
    }
    /* Flags given before or after win over the file. */
    json_object_foreach(v, key, val)
    {
        if (json_object_get(c->fields, key) == NULL)
            json_object_set(c->fields, key, val);
    }
    json_decref(v);
    return 0;
}

static int jcli_flag(struct jcli *c, enum jflag id, const char *flag, const char *val)
{
    double d;
    int rc = 0;

    switch (id) {
    case F_STORE:
        c->store_url = val;
        break;
    case F_CONFIG:
        c->config = val;
        break;
    case F_JSON:
        c->is_json = true;
        break;
    case F_HELP:
        c->is_help = true;
        break;
    case F_BROKER:
        c->broker = val;
        break;
    case F_USER:
        c->user = val;
        break;
    case F_TIMEOUT:
        rc = jcli_number(c, flag, val, &c->timeout_s);
        break;
    case F_FOLLOW:
        c->is_follow = true;
        break;
    case F_LIMIT:
        rc = jcli_number(c, flag, val, &d);
        c->limit = (int)d;
        break;
    case F_ACTIVE_ONLY:
        c->is_active_only = true;
        break;
    case F_TITLE:
        json_object_set_new(c->fields, "title", json_string(val));
        break;
    case F_DESCRIPTION:
        json_object_set_new(c->fields, "description", json_string(val));
        break;
    case F_TASK:
        json_object_set_new(c->fields, "task", json_string(val));
        break;
    case F_QUEUE:
        json_object_set_new(c->fields, "queue", val[0] ? json_string(val) : json_null());
        break;
    case F_INTERVAL:
        rc = jcli_number(c, flag, val, &d);
        if (rc == 0) {
            json_t *sch = json_pack("{s:s}", "type", "interval");
            if (d == (double)(json_int_t)d)
                json_object_set_new(sch, "seconds", json_integer((json_int_t)d));
            else
                json_object_set_new(sch, "seconds", json_real(d));
            json_object_set_new(c->fields, "schedule", sch);
        }
        break;
    case F_CRONTAB:
        rc = jcli_crontab(c, val);
        break;
    case F_NO_SCHEDULE:
        json_object_set_new(c->fields, "schedule", json_null());
        break;
    case F_TIMEZONE:
        json_object_set_new(c->fields, "timezone", json_string(val));
        break;
    case F_ARGS:
        rc = jcli_field_json(c, "args", flag, val);
        break;
    case F_KWARGS:
        rc = jcli_field_json(c, "kwargs", flag, val);
        break;
    case F_OPTIONS:
        rc = jcli_field_json(c, "options", flag, val);
        break;
    case F_RETRY:
        rc = jcli_field_json(c, "retry_policy", flag, val);
        break;
    case F_CONCURRENCY:
        json_object_set_new(c->fields, "concurrency", json_string(val));
        break;
    case F_MISSED:
        json_object_set_new(c->fields, "missed", json_string(val));
        break;
    case F_DEADLINE:
        rc = jcli_number(c, flag, val, &d);
        if (rc == 0)
            json_object_set_new(c->fields, "starting_deadline",
                                d < 0 ? json_null() : json_integer((json_int_t)d));
        break;
    case F_INACTIVE:
        json_object_set_new(c->fields, "active", json_false());
        break;
    case F_ACTIVE:
        json_object_set_new(c->fields, "active", json_true());
        break;
    case F_SINCE_KWARG:
        json_object_set_new(c->fields, "since_kwarg", val[0] ? json_string(val) : json_null());
        break;
    case F_JSON_FILE:
        rc = jcli_json_file(c, val);
        break;
    case F_EPOCH:
        rc = jcli_number(c, flag, val, &d);
        c->epoch = (int64_t)d;
        break;
    case F_LEASE:
        c->lease = val;
        break;
    case F_SLOT:
        c->slot_us = strtoll(val, NULL, 10);
        break;
    case F_COUNT:
        c->count = strtoll(val, NULL, 10);
        break;
    case F_NONE:
        break;
    }
    /* `jobs run` / `rerun` take --args, --kwargs and --queue of the job fields: remember
     * one of the others to refuse it there (it would be ignored). */
    if (id >= F_TITLE && id <= F_JSON_FILE && id != F_ARGS && id != F_KWARGS && id != F_QUEUE &&
        c->job_flag == NULL)
        c->job_flag = flag;
    return rc;
}

static int jcli_parse(struct jcli *c, int argc, char **argv)
{
    bool no_more_flags = false;

    memset(c, 0, sizeof *c);
    c->prog = argv[0];
    c->fields = json_object();
    c->limit = 50;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = NULL;
        size_t k, n;
        int rc;

        if (no_more_flags || a[0] != '-' || a[1] == '\0') {
            if (c->sub == NULL) {
                c->sub = a;
            } else {
                if (c->n_pos >= JCLI_MAX_POS)
                    return jcli_usage_error(c, "too many arguments", NULL);
                c->pos[c->n_pos++] = a;
            }
            continue;
        }
        if (strcmp(a, "--") == 0) {
            no_more_flags = true;
            continue;
        }
        for (k = 0; k < CC_ARRAY_LEN(jcli_flags); k++) {
            if (a[1] == '-') {
                n = strlen(jcli_flags[k].long_flag);
                if (strncmp(a, jcli_flags[k].long_flag, n) == 0 && (a[n] == '\0' || a[n] == '=')) {
                    val = a[n] == '=' ? a + n + 1 : NULL;
                    break;
                }
            } else if (jcli_flags[k].short_flag != 0 && a[1] == jcli_flags[k].short_flag &&
                       a[2] == '\0') {
                break;
            }
        }
        if (k == CC_ARRAY_LEN(jcli_flags))
            return jcli_usage_error(c, "no such option: ", a);
        if (jcli_flags[k].has_value && val == NULL) {
            if (i + 1 >= argc)
                return jcli_usage_error(c, "option requires a value: ", a);
            val = argv[++i];
        } else if (!jcli_flags[k].has_value && val != NULL) {
            return jcli_usage_error(c, "option takes no value: ", a);
        }
        rc = jcli_flag(c, jcli_flags[k].id, jcli_flags[k].long_flag, val);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* ---- Store and broker resolution -------------------------------------------------------- */

static const char *jcli_env(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0' ? v : NULL;
}

/* Fill c->store_url / c->broker from the config file when not given otherwise. *cfg is
 * deinitialised by the caller. Returns 0 or an exit status. */
static int jcli_config(struct jcli *c, struct cc_config *cfg, bool *has_cfg)
{
    const char *file = c->config != NULL ? c->config : jcli_env("CELERYC_CONFIG");
    char *argv[4] = {(char *)"beat", (char *)"--config", (char *)file, NULL};
    struct cc_err err = {0};

    *has_cfg = false;
    if (c->store_url == NULL)
        c->store_url = jcli_env("CELERYC_JOB_STORE");
    if (c->broker == NULL)
        c->broker = jcli_env("CELERYC_BROKER_URL");
    if (c->broker == NULL)
        c->broker = jcli_env("CELERY_BROKER_URL");
    if (file == NULL)
        return 0;
    *has_cfg = true; /* cc_config_deinit also after a failed load */
    if (cc_config_load(cfg, CC_CMD_BEAT, 3, argv, environ, &err) != CC_OK) {
        fprintf(stderr, "celeryc %s: error: %s\n", c->prog, err.msg);
        return JCLI_USAGE;
    }
    if (c->store_url == NULL && cfg->job_store != NULL && cfg->job_store[0] != '\0')
        c->store_url = cfg->job_store;
    if (c->broker == NULL && cfg->broker_url != NULL)
        c->broker = cfg->broker_url;
    return 0;
}

static int jcli_open(struct jcli *c, struct cc_jobstore **s, bool check_schema)
{
    struct cc_err err = {0};
    int rc;

    *s = NULL;
    if (c->store_url == NULL) {
        fprintf(stderr,
                "celeryc %s: error: no job store: pass --job-store URL, set CELERYC_JOB_STORE, "
                "or job_store in --config\n",
                c->prog);
        return JCLI_USAGE;
    }
    rc = cc_jobstore_open(c->store_url, 10, s, &err);
    if (rc == CC_OK && check_schema)
        rc = cc_jobstore_check_schema(*s, &err);
    if (rc != CC_OK) {
        fprintf(stderr, "celeryc %s: error: %s\n", c->prog, err.msg);
        cc_jobstore_close(*s);
        *s = NULL;
        return JCLI_SOFTWARE;
    }
    return 0;
}

/* ---- Output ----------------------------------------------------------------------------- */

static void print_json(const json_t *v)
{
    char *d = json_dumps(v, JSON_INDENT(2) | JSON_ENCODE_ANY);
    if (d != NULL) {
        fputs(d, stdout);
        fputc('\n', stdout);
        free(d);
    }
}

/* A column value as display text (owned): strings as they are, timestamps shortened to
 * "YYYY-MM-DD HH:MM:SS", null as "-", anything else as compact JSON. */
static char *cell(const json_t *row, const char *key)
{
    const json_t *v = json_object_get(row, key);
    const char *str;

    if (v == NULL || json_is_null(v))
        return cc_xstrdup("-");
    if (json_is_string(v)) {
        str = json_string_value(v);
        /* 2026-11-23T17:22:18.123+00:00 */
        if (strlen(str) >= 25 && str[4] == '-' && str[10] == 'T' && str[13] == ':') {
            char *t = cc_xstrdup(str);
            t[10] = ' ';
            t[19] = '\0';
            return t;
        }
        return cc_xstrdup(str);
    }
    str = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    return str != NULL ? (char *)str : cc_xstrdup("?");
}

static const char *str_or(const char *s, const char *dflt)
{
    return s != NULL ? s : dflt;
}

static char *schedule_text(const json_t *job)
{
    const json_t *sch = json_object_get(job, "schedule");
    const char *type = json_string_value(json_object_get(sch, "type"));
    char *out = NULL;

    if (type != NULL && strcmp(type, "interval") == 0) {
        double sec = json_number_value(json_object_get(sch, "seconds"));
        if (asprintf(&out, "every %gs", sec) < 0)
            out = NULL;
    } else if (type != NULL && strcmp(type, "crontab") == 0) {
#define CRON_F(k) str_or(json_string_value(json_object_get(sch, k)), "*")
        if (asprintf(&out, "crontab(%s %s %s %s %s)", CRON_F("minute"), CRON_F("hour"),
                     CRON_F("day_of_week"), CRON_F("day_of_month"), CRON_F("month_of_year")) < 0)
            out = NULL;
#undef CRON_F
    }
    return out != NULL ? out : cc_xstrdup("manual");
}

/* An aligned table: ncol headers, then rows of ncol owned strings (freed here). The last
 * column is not padded. */
static void print_table(const char *const *headers, int ncol, char **cells, size_t nrow)
{
    size_t w[16] = {0};

    for (int j = 0; j < ncol; j++)
        w[j] = strlen(headers[j]);
    for (size_t i = 0; i < nrow; i++)
        for (int j = 0; j < ncol; j++)
            if (strlen(cells[i * (size_t)ncol + (size_t)j]) > w[j])
                w[j] = strlen(cells[i * (size_t)ncol + (size_t)j]);
    for (int j = 0; j < ncol; j++)
        printf("%-*s%s", j + 1 < ncol ? (int)w[j] : 0, headers[j], j + 1 < ncol ? "  " : "\n");
    for (size_t i = 0; i < nrow; i++) {
        for (int j = 0; j < ncol; j++) {
            const char *v = cells[i * (size_t)ncol + (size_t)j];
            printf("%-*s%s", j + 1 < ncol ? (int)w[j] : 0, v, j + 1 < ncol ? "  " : "\n");
            free(cells[i * (size_t)ncol + (size_t)j]);
        }
    }
}

static void print_jobs(const json_t *jobs)
{
    static const char *const headers[] = {"ID",       "TITLE",  "TASK",       "SCHEDULE",
                                          "TIMEZONE", "ACTIVE", "CONCURRENCY"};
    size_t n = json_array_size(jobs), i;
    char **cells = cc_xcalloc(n * 7 + 1, sizeof *cells);
    json_t *j;

    json_array_foreach(jobs, i, j)
    {
        char **r = cells + i * 7;
        r[0] = cell(j, "id");
        r[1] = cell(j, "title");
        r[2] = cell(j, "task");
        r[3] = schedule_text(j);
        r[4] = cell(j, "timezone");
        r[5] = cc_xstrdup(json_is_true(json_object_get(j, "active")) ? "yes" : "no");
        r[6] = cell(j, "concurrency");
    }
    print_table(headers, 7, cells, n);
    free(cells);
}

static const char *status_name(const char *st)
{
    return cc_jobstore_status_name(st != NULL ? st[0] : '?');
}

static void print_runs(const json_t *runs)
{
    static const char *const headers[] = {"ID",      "JOB",      "STATUS",  "BY",
                                          "CREATED", "FINISHED", "ATTEMPT", "MESSAGE"};
    size_t n = json_array_size(runs), i;
    char **cells = cc_xcalloc(n * 8 + 1, sizeof *cells);
    json_t *r;

    json_array_foreach(runs, i, r)
    {
        char **row = cells + i * 8, *msg;
        const json_t *by = json_object_get(r, "started_by");
        row[0] = cell(r, "id");
        row[1] = cell(r, "job_id");
        row[2] = cell(r, "status");
        row[3] = cc_xstrdup(json_is_string(by) ? json_string_value(by) : "(scheduler)");
        row[4] = cell(r, "created");
        row[5] = cell(r, "finished_at");
        row[6] = cell(r, "attempt");
        msg = cell(r, "message");
        if (strlen(msg) > 60)
            strcpy(msg + 57, "...");
        for (char *p = msg; *p; p++)
            if (*p == '\n')
                *p = ' ';
        row[7] = msg;
    }
    print_table(headers, 8, cells, n);
    free(cells);
}

/* "key: value" lines, keys padded to the longest. */
static void print_kv(const json_t *row, bool is_run)
{
    const char *key;
    json_t *v;
    size_t w = 0;

    json_object_foreach((json_t *)row, key, v)
    {
        if (strlen(key) > w)
            w = strlen(key);
    }
    json_object_foreach((json_t *)row, key, v)
    {
        char *t = json_is_string(v) ? cc_xstrdup(json_string_value(v)) : cell(row, key);
        if (is_run && strcmp(key, "status") == 0)
            printf("%-*s  %s (%s)\n", (int)w + 1, "status:", t, status_name(t));
        else if (is_run && strcmp(key, "summary") == 0 && json_object_size(v) > 0) {
            /* the task's cc_task_run_summary: one "  name: value" line per member */
            const char *sk;
            json_t *sv;
            printf("summary:\n");
            json_object_foreach(v, sk, sv)
            {
                char *st = json_is_string(sv) ? cc_xstrdup(json_string_value(sv))
                                              : json_dumps(sv, JSON_COMPACT | JSON_ENCODE_ANY);
                printf("  %s: %s\n", sk, st != NULL ? st : "?");
                free(st);
            }
        } else if (!is_run && strcmp(key, "schedule") == 0) {
            char *s = schedule_text(row);
            printf("%-*s  %s\n", (int)w + 1, "schedule:", s);
            free(s);
        } else {
            char k[64];
            snprintf(k, sizeof k, "%s:", key);
            printf("%-*s  %s\n", (int)w + 1, k, t);
        }
        free(t);
    }
}

static void print_log_line(const json_t *l)
{
    char *ts = cell(l, "timestamp");
    printf("%s %-8s %s\n", ts, str_or(json_string_value(json_object_get(l, "level")), ""),
           str_or(json_string_value(json_object_get(l, "message")), ""));
    free(ts);
}

/* ---- jobs subcommands ------------------------------------------------------------------- */

static int need_pos(struct jcli *c, int n, const char *what)
{
    if (c->n_pos < n)
        return jcli_usage_error(c, "missing argument ", what);
    if (c->n_pos > n)
        return jcli_usage_error(c, "unexpected argument: ", c->pos[n]);
    return 0;
}

static int jobs_list(struct jcli *c, struct cc_jobstore *s)
{
    struct cc_err err = {0};
    json_t *jobs = NULL;
    int rc = cc_jobstore_jobs_list(s, c->is_active_only, &jobs, &err);

    if (rc != CC_OK)
        return jcli_fail(c, rc, &err);
    if (c->is_json)
        print_json(jobs);
    else if (json_array_size(jobs) == 0)
        printf("no jobs\n");
    else
        print_jobs(jobs);
    json_decref(jobs);
    return 0;
}

static int jobs_print_row(struct jcli *c, json_t *row, bool is_run)
{
    if (c->is_json)
        print_json(row);
    else
        print_kv(row, is_run);
    json_decref(row);
    return 0;
}

static int jobs_show(struct jcli *c, struct cc_jobstore *s)
{
    struct cc_err err = {0};
    json_t *job = NULL;
    int rc = cc_jobstore_job_get(s, c->pos[0], &job, &err);

    /* A run id shows the run. */
    struct cc_err err2 = {0};
    if (rc == CC_ENOTFOUND && cc_jobstore_run_get(s, c->pos[0], &job, &err2) == CC_OK)
        return jobs_print_row(c, job, true);
    if (rc != CC_OK)
        return jcli_fail(c, rc, &err);
    return jobs_print_row(c, job, false);
}

static int jobs_create(struct jcli *c, struct cc_jobstore *s)
{
    struct cc_err err = {0};
    json_t *job = NULL;
    int rc = cc_jobstore_job_create(s, c->fields, &job, &err);

    if (rc != CC_OK)
        return jcli_fail(c, rc, &err);
    return jobs_print_row(c, job, false);
}

static int jobs_update(struct jcli *c, struct cc_jobstore *s)
{
    struct cc_err err = {0};
    json_t *job = NULL;
    int rc;

    if (json_object_size(c->fields) == 0)
        return jcli_usage_error(c, "update: no field given (see --help)", NULL);
    rc = cc_jobstore_job_update(s, c->pos[0], c->fields, &job, &err);
    if (rc != CC_OK)
        return jcli_fail(c, rc, &err);
    return jobs_print_row(c, job, false);
}

static int jobs_delete(struct jcli *c, struct cc_jobstore *s)
{
    struct cc_err err = {0};
    int rc = cc_jobstore_job_delete(s, c->pos[0], &err);

    if (rc != CC_OK)
        return jcli_fail(c, rc, &err);
    if (c->is_json) {
        json_t *o = json_pack("{s:s}", "deleted", c->pos[0]);
        print_json(o);
        json_decref(o);
    } else {
        printf("job %s deleted\n", c->pos[0]);
    }
    return 0;
}

static const char *jcli_user(const struct jcli *c)
{
    const char *u = c->user;
    if (u == NULL)
        u = jcli_env("USER");
    if (u == NULL)
        u = jcli_env("LOGNAME");
    return u != NULL ? u : "unknown";
}

/* The overrides of `jobs run` / `rerun` (borrowed from c->fields; NULL: not given). A
 * `--queue ""` reads as "" (refused by the check). */
static void run_overrides(const struct jcli *c, const json_t **args, const json_t **kwargs,
                          const char **queue)
{
    const json_t *q = json_object_get(c->fields, "queue");

    *args = json_object_get(c->fields, "args");
    *kwargs = json_object_get(c->fields, "kwargs");
    *queue = q == NULL ? NULL : json_is_string(q) ? json_string_value(q) : "";
}

/* Before the store is opened: `jobs run` / `rerun` take only --args, --kwargs, --queue of
 * the job fields, each valid (cc_jobstore_run_args_validate). 0 or exit status 2. */
static int run_overrides_check(struct jcli *c)
{
    const json_t *args, *kwargs;
    const char *queue;
    struct cc_err err = {0};
    char what[64];

    snprintf(what, sizeof what, "`jobs %s`", c->sub);
    if (c->job_flag != NULL) {
        fprintf(stderr,
                "celeryc %s: error: %s does not apply to %s (it takes --args, --kwargs, --queue "
                "and --user)\nTry 'celeryc %s --help'.\n",
                c->prog, c->job_flag, what, c->prog);
        return JCLI_USAGE;
    }
    run_overrides(c, &args, &kwargs, &queue);
    if (cc_jobstore_run_args_validate(args, kwargs, queue, &err) != CC_OK)
        return jcli_usage_error(c, err.msg, NULL);
    return 0;
}

/* `jobs run JOB_ID` and `jobs rerun RUN_ID` (rerun_of): create the run, print it. */
static int jobs_queue(struct jcli *c, struct cc_jobstore *s, const char *rerun_of)
{
    struct cc_run_new rn = {0};
    struct cc_err err = {0};
    json_t *run = NULL, *cancelled = NULL;
    size_t i;
    json_t *r;
    int rc;

    rn.job_id = rerun_of == NULL ? c->pos[0] : NULL;
    rn.rerun_of = rerun_of;
    rn.started_by = jcli_user(c);
    rn.attempt = 1;
    run_overrides(c, &rn.args, &rn.kwargs, &rn.queue);
    rc = cc_jobstore_run_create(s, &rn, &run, &cancelled, &err);
    if (rc != CC_OK)
        return jcli_fail(c, rc, &err);
    if (c->is_json) {
        json_t *o = json_pack("{s:O,s:O}", "run", run, "cancelled", cancelled);
        print_json(o);
        json_decref(o);
    } else {
        printf("run %s queued (task id %s)", json_string_value(json_object_get(run, "id")),
               json_string_value(json_object_get(run, "task_id")));
        if (rerun_of != NULL)
            printf(": a rerun of run %s", rerun_of);
        printf("\n");
        /* What it runs with, when that is not simply the job's. */
        if (rerun_of != NULL || rn.args != NULL || rn.kwargs != NULL || rn.queue != NULL) {
            char *a = cell(run, "args"), *k = cell(run, "kwargs"), *q = cell(run, "queue");
            printf("with args %s, kwargs %s, queue %s\n", a, k, q);
            free(a);
            free(k);
            free(q);
        }
        json_array_foreach(cancelled, i, r)
        {
            printf("replaced run %s: now %s (task id %s; revoke it with `celeryc jobs stop`)\n",
                   json_string_value(json_object_get(r, "id")),
                   json_string_value(json_object_get(r, "status")),
                   json_string_value(json_object_get(r, "task_id")));
        }
    }
    json_decref(run);
    json_decref(cancelled);
    return 0;
}

static int jobs_run(struct jcli *c, struct cc_jobstore *s)
{
    return jobs_queue(c, s, NULL);
}

static int jobs_rerun(struct jcli *c, struct cc_jobstore *s)
{
    return jobs_queue(c, s, c->pos[0]);
}

/* `celeryc control terminate SIGTERM <task_id>` (or `revoke <task_id>`) through src/client/cli.c,
 * its stdout (the JSON list of worker replies) captured in a temporary file. *replies: the
 * workers that replied (array of {node: reply}). Returns 0 sent (whether or not a worker
 * replied), else the control command's exit status. */
static int jobs_revoke(struct jcli *c, const char *task_id, bool terminate, json_t **replies)
{
    char timeout[32];
    char *argv[12];
    int argc = 0, rc, saved_out = -1, saved_err = -1;
    FILE *out = tmpfile(), *errf = tmpfile();
    json_error_t jerr;

    *replies = NULL;
    snprintf(timeout, sizeof timeout, "%g", c->timeout_s > 0 ? c->timeout_s : 1.0);
    argv[argc++] = (char *)"control";
    argv[argc++] = (char *)"-b";
    argv[argc++] = (char *)c->broker;
    argv[argc++] = (char *)"-t";
    argv[argc++] = timeout;
    argv[argc++] = (char *)"-j";
    if (terminate) {
        argv[argc++] = (char *)"terminate";
        argv[argc++] = (char *)"SIGTERM";
    } else {
        argv[argc++] = (char *)"revoke";
    }
    argv[argc++] = (char *)task_id;
    argv[argc] = NULL;
    fflush(stdout);
    fflush(stderr);
    if (out != NULL && errf != NULL) {
        saved_out = dup(STDOUT_FILENO);
        saved_err = dup(STDERR_FILENO);
        dup2(fileno(out), STDOUT_FILENO);
        dup2(fileno(errf), STDERR_FILENO);
    }
    rc = cc_cli_main(argc, argv);
    fflush(stdout);
    fflush(stderr);
    if (saved_out >= 0) {
        dup2(saved_out, STDOUT_FILENO);
        dup2(saved_err, STDERR_FILENO);
        close(saved_out);
        close(saved_err);
    }
    if (out != NULL) {
        rewind(out);
        *replies = json_loadf(out, 0, &jerr);
    }
    if (*replies == NULL)
        *replies = json_array();
    /* 69: sent, but no worker replied (the task may not have reached a worker yet). */
    if (rc != 0 && rc != 69 && errf != NULL) {
        char line[512];
        rewind(errf);
        while (fgets(line, sizeof line, errf) != NULL)
            fprintf(stderr, "celeryc %s: %s", c->prog, line);
    } else {
        rc = 0;
    }
    if (out != NULL)
        fclose(out);
    if (errf != NULL)
        fclose(errf);
    return rc;
}

static int jobs_stop(struct jcli *c, struct cc_jobstore *s)
{
    struct cc_err err = {0};
    char task_id[64], st = '?';
    json_t *replies = NULL;
    bool terminate;
    int rc = cc_jobstore_run_cancel(s, c->pos[0], task_id, &st, &err);

    if (rc != CC_OK)
        return jcli_fail(c, rc, &err);
    terminate = st == 'C';
    if (c->broker != NULL)
        rc = jobs_revoke(c, task_id, terminate, &replies);
    if (c->is_json) {
        json_t *o = json_pack("{s:s,s:s#,s:s,s:b,s:b,s:O?}", "run", c->pos[0], "status", &st, 1,
                              "task_id", task_id, "revoked", c->broker != NULL && rc == 0,
                              "terminate", terminate, "replies", replies);
        print_json(o);
        json_decref(o);
    } else {
        printf("run %s is %c (%s)\n", c->pos[0], st, cc_jobstore_status_name(st));
        if (c->broker == NULL) {
            printf("no broker given (-b / CELERY_BROKER_URL): the run is marked %c and nothing "
                   "was revoked\n",
                   st);
        } else if (rc == 0) {
            size_t i, n = json_array_size(replies);
            json_t *r;
            printf("revoke%s sent for task %s; %zu worker(s) replied",
                   terminate ? " (terminate, SIGTERM)" : "", task_id, n);
            json_array_foreach(replies, i, r)
            {
                printf("%s%s", i == 0 ? ": " : ", ", json_object_iter_key(json_object_iter(r)));
            }
            printf("\n");
        }
    }
    if (rc != 0)
        fprintf(stderr, "celeryc %s: the run is marked %c but the revoke was not sent\n", c->prog,
                st);
    json_decref(replies);
    return rc == 0 ? 0 : JCLI_SOFTWARE;
}

static int jobs_runs(struct jcli *c, struct cc_jobstore *s)
{
    struct cc_err err = {0};
    json_t *runs = NULL;
    int rc = cc_jobstore_runs_list(s, c->n_pos > 0 ? c->pos[0] : NULL, c->limit, &runs, &err);

    if (rc != CC_OK)
        return jcli_fail(c, rc, &err);
    if (c->is_json)
        print_json(runs);
    else if (json_array_size(runs) == 0)
        printf("no runs\n");
    else
        print_runs(runs);
    json_decref(runs);
    return 0;
}

static bool run_is_finished(const json_t *run)
{
    const char *st = json_string_value(json_object_get(run, "status"));
    return st != NULL && strchr("QRC", st[0]) == NULL;
}

static int jobs_logs(struct jcli *c, struct cc_jobstore *s)
{
    struct cc_err err = {0};
    int64_t after = 0, deadline_us = 0;
    json_t *all = c->is_json ? json_array() : NULL;
    int rc = 0;

    if (c->is_follow && c->timeout_s > 0)
        deadline_us = cc_mono_us() + (int64_t)(c->timeout_s * 1e6);
    for (;;) {
        json_t *lines = NULL, *run = NULL, *l;
        bool is_done = true;
        size_t i;
        int r;

        /* Read the status before the lines, so lines written before it finished are shown. */
        if (c->is_follow) {
            r = cc_jobstore_run_get(s, c->pos[0], &run, &err);
            if (r != CC_OK) {
                rc = jcli_fail(c, r, &err);
                break;
            }
            is_done = run_is_finished(run);
            json_decref(run);
        }
        do {
            r = cc_jobstore_run_logs_get(s, c->pos[0], after, 1000, &lines, &err);
            if (r != CC_OK) {
                rc = jcli_fail(c, r, &err);
                break;
            }
            json_array_foreach(lines, i, l)
            {
                after = json_integer_value(json_object_get(l, "id"));
                if (all != NULL)
                    json_array_append(all, l);
                else
                    print_log_line(l);
            }
            i = json_array_size(lines);
            json_decref(lines);
            fflush(stdout);
        } while (i == 1000);
        if (r != CC_OK || is_done)
            break;
        if (deadline_us > 0 && cc_mono_us() >= deadline_us) {
            fprintf(stderr, "celeryc %s: error: run %s still running after %g s\n", c->prog,
                    c->pos[0], c->timeout_s);
            rc = JCLI_REFUSED;
            break;
        }
        usleep(300 * 1000);
    }
    if (all != NULL) {
        if (rc == 0)
            print_json(all);
        json_decref(all);
    }
    return rc;
}

/* ---- db debug (hidden; for the integration tests) --------------------------------------- */

static int debug_print(struct jcli *c, int rc, const struct cc_err *err, json_t *out)
{
    if (rc != CC_OK) {
        json_decref(out);
        return jcli_fail(c, rc, err);
    }
    print_json(out != NULL ? out : json_null());
    json_decref(out);
    return 0;
}

static void debug_on_notify(const char *channel, const char *payload, void *arg)
{
    json_t *o = json_pack("{s:s,s:s}", "channel", channel, "payload", payload);
    char *d = json_dumps(o, JSON_COMPACT);

    printf("%s\n", d);
    fflush(stdout);
    free(d);
    json_decref(o);
    (*(int64_t *)arg)++;
}

/* LISTEN for `seconds` (or until --count notifications), one JSON line per notification; a
 * lost connection is reconnected (and LISTEN renewed), printing {"reconnected": true}. */
static int debug_listen(struct jcli *c, struct cc_jobstore *s, double seconds, struct cc_err *err)
{
    int64_t end = cc_mono_us() + (int64_t)(seconds * 1e6), got = 0;
    int rc = cc_jobstore_listen(s, err);

    if (rc != CC_OK)
        return rc;
    printf("{\"listening\": true}\n");
    fflush(stdout);
    while (cc_mono_us() < end && (c->count <= 0 || got < c->count)) {
        struct pollfd pfd = {cc_jobstore_fd(s), POLLIN, 0};
        int n = poll(&pfd, 1, 100);

        if (n > 0 && cc_jobstore_notifications(s, debug_on_notify, &got, err) >= 0)
            continue;
        if (n > 0 || pfd.fd < 0) {
            while (cc_jobstore_reconnect(s, err) != CC_OK) {
                if (cc_mono_us() >= end)
                    return err->code;
                usleep(100 * 1000);
            }
            printf("{\"reconnected\": true}\n");
            fflush(stdout);
        }
    }
    return CC_OK;
}

static int db_debug(struct jcli *c, struct cc_jobstore *s)
{
    struct cc_err err = {0};
    const char *op = c->n_pos > 0 ? c->pos[0] : "";
    const char *const *a = c->pos + 1;
    int na = c->n_pos - 1, rc;
    json_t *out = NULL;

#define NEED(n)                                                                                    \
    do {                                                                                           \
        if (na < (n))                                                                              \
            return jcli_usage_error(c, "debug: missing arguments for ", op);                       \
    } while (0)
    if (strcmp(op, "lease") == 0) { /* NAME HOLDER TTL_MS */
        int64_t epoch;
        bool is_leader;
        NEED(3);
        rc = cc_jobstore_lease(s, a[0], a[1], atoi(a[2]), &epoch, &is_leader, &err);
        out = json_pack("{s:b,s:I}", "is_leader", is_leader, "epoch", (json_int_t)epoch);
    } else if (strcmp(op, "lease-release") == 0) { /* NAME HOLDER */
        NEED(2);
        rc = cc_jobstore_lease_release(s, a[0], a[1], &err);
    } else if (strcmp(op, "run-create") == 0) { /* JOB [--epoch N --lease L --slot US --user] */
        struct cc_run_new rn = {0};
        json_t *run = NULL, *cancelled = NULL;
        NEED(1);
        rn.job_id = a[0];
        rn.started_by = c->user;
        rn.scheduled_for_us = c->slot_us;
        rn.attempt = 1;
        rn.epoch = c->epoch;
        rn.lease = c->lease;
        rc = cc_jobstore_run_create(s, &rn, &run, &cancelled, &err);
        if (rc == CC_OK)
            out = json_pack("{s:o,s:o}", "run", run, "cancelled", cancelled);
    } else if (strcmp(op, "claim") == 0) { /* ENTRY TASK_ID --slot US --epoch N --lease L */
        NEED(2);
        rc = cc_jobstore_entry_claim(s, a[0], c->slot_us, c->epoch, c->lease, a[1], &err);
    } else if (strcmp(op, "entries") == 0) {
        rc = cc_jobstore_entries_state(s, &out, &err);
    } else if (strcmp(op, "start") == 0) { /* TASK_ID HOST */
        NEED(2);
        rc = cc_jobstore_run_start(s, a[0], a[1], &err);
    } else if (strcmp(op, "finish") == 0) { /* TASK_ID STATUS [MESSAGE [PROCESSED ERRORED]] */
        NEED(2);
        rc = cc_jobstore_run_finish(s, a[0], a[1][0], na > 2 ? a[2] : NULL,
                                    na > 3 ? strtoll(a[3], NULL, 10) : -1,
                                    na > 4 ? strtoll(a[4], NULL, 10) : -1, NULL, &err);
    } else if (strcmp(op, "heartbeat") == 0) { /* TASK_ID... */
        rc = cc_jobstore_runs_heartbeat(s, a, (size_t)(na > 0 ? na : 0), &err);
    } else if (strcmp(op, "logs-add") == 0) { /* TASK_ID... --count N: N lines per task id */
        size_t n = (size_t)(c->count > 0 ? c->count : 1) * (size_t)(na > 0 ? na : 0), k = 0;
        struct cc_run_log *lines = cc_xcalloc(n + 1, sizeof *lines);
        char **msgs = cc_xcalloc(n + 1, sizeof *msgs);
        int64_t now = cc_now_us();
        for (int t = 0; t < na; t++)
            for (int64_t i = 0; i < (c->count > 0 ? c->count : 1); i++, k++) {
                if (asprintf(&msgs[k], "line %" PRId64 " \"quoted\" \\ back", i) < 0)
                    msgs[k] = NULL;
                lines[k].ts_us = now + i;
                lines[k].level = i % 2 ? "WARNING" : "INFO";
                lines[k].message = msgs[k];
                lines[k].task_id = a[t];
            }
        rc = cc_jobstore_run_logs_add(s, lines, n, &err);
        for (size_t i = 0; i < n; i++)
            free(msgs[i]);
        free(msgs);
        free(lines);
    } else if (strcmp(op, "reap") == 0) { /* TIMEOUT_S */
        int n = 0;
        NEED(1);
        rc = cc_jobstore_reap(s, atoi(a[0]), &n, &err);
        out = json_pack("{s:i}", "reaped", n);
    } else if (strcmp(op, "retry") == 0) { /* [--epoch N --lease L] */
        rc = cc_jobstore_runs_retry(s, c->epoch, c->lease, &out, &err);
    } else if (strcmp(op, "unsent") == 0) { /* OLDER_THAN_S */
        NEED(1);
        rc = cc_jobstore_runs_unsent(s, atoi(a[0]), c->limit, &out, &err);
    } else if (strcmp(op, "send-claim") == 0) { /* RUN_ID --epoch N --lease L */
        NEED(1);
        rc = cc_jobstore_run_send_claim(s, a[0], c->epoch, c->lease, &err);
    } else if (strcmp(op, "send-undo") == 0) { /* RUN_ID --epoch N */
        NEED(1);
        rc = cc_jobstore_run_send_undo(s, a[0], c->epoch, true, &err);
    } else if (strcmp(op, "mark-sent") == 0) {
        NEED(1);
        rc = cc_jobstore_run_mark_sent(s, a[0], &err);
    } else if (strcmp(op, "fail") == 0) { /* RUN_ID MESSAGE */
        NEED(2);
        rc = cc_jobstore_run_fail(s, a[0], a[1], &err);
    } else if (strcmp(op, "last-success") == 0) {
        int64_t us = 0;
        NEED(1);
        rc = cc_jobstore_job_last_success(s, a[0], &us, &err);
        out = json_pack("{s:I}", "started_us", (json_int_t)us);
    } else if (strcmp(op, "listen") == 0) { /* SECONDS [--count N] */
        NEED(1);
        rc = debug_listen(c, s, atof(a[0]), &err);
        if (rc == CC_OK)
            return 0;
    } else if (strcmp(op, "upgrade-to") == 0) { /* VERSION: an older schema, for tests */
        int from = 0, to = 0;
        NEED(1);
        rc = cc_jobstore_upgrade_to(s, atoi(a[0]), &from, &to, &err);
        out = json_pack("{s:i,s:i}", "from", from, "to", to);
    } else if (strcmp(op, "validate") == 0) { /* JSON */
        json_t *f = NULL;
        NEED(1);
        if (jcli_json_arg(c, "validate", a[0], &f) != 0)
            return JCLI_USAGE;
        rc = cc_jobstore_job_validate(f, true, &err);
        json_decref(f);
    } else {
        return jcli_usage_error(c, "debug: unknown operation: ", op);
    }
#undef NEED
    if (rc == CC_OK && out == NULL)
        out = json_pack("{s:b}", "ok", 1);
    return debug_print(c, rc, &err, out);
}

/* ---- Entry points ----------------------------------------------------------------------- */

int cc_jobs_cli_jobs_main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int npos; /* -1: 0 or 1 */
        const char *what;
        int (*fn)(struct jcli *, struct cc_jobstore *);
    } subs[] = {
        {"list", 0, NULL, jobs_list},         {"show", 1, "JOB_ID", jobs_show},
        {"create", 0, NULL, jobs_create},     {"update", 1, "JOB_ID", jobs_update},
        {"delete", 1, "JOB_ID", jobs_delete}, {"run", 1, "JOB_ID", jobs_run},
        {"rerun", 1, "RUN_ID", jobs_rerun},   {"stop", 1, "RUN_ID", jobs_stop},
        {"runs", -1, NULL, jobs_runs},        {"logs", 1, "RUN_ID", jobs_logs},
    };
    struct jcli c;
    struct cc_config cfg;
    struct cc_jobstore *s = NULL;
    struct cc_err err = {0};
    bool has_cfg = false;
    size_t k;
    int rc;

    memset(&cfg, 0, sizeof cfg);
    rc = jcli_parse(&c, argc, argv);
    if (rc != 0)
        goto out;
    if (c.is_help || c.sub == NULL) {
        jobs_usage(c.is_help ? stdout : stderr);
        rc = c.is_help ? 0 : JCLI_USAGE;
        goto out;
    }
    for (k = 0; k < CC_ARRAY_LEN(subs); k++)
        if (strcmp(subs[k].name, c.sub) == 0)
            break;
    if (k == CC_ARRAY_LEN(subs)) {
        rc = jcli_usage_error(&c, "no such command: ", c.sub);
        goto out;
    }
    if (subs[k].npos >= 0)
        rc = need_pos(&c, subs[k].npos, subs[k].what);
    else if (c.n_pos > 1)
        rc = jcli_usage_error(&c, "unexpected argument: ", c.pos[1]);
    if (rc != 0)
        goto out;
    if (strcmp(c.sub, "create") == 0 && cc_jobstore_job_validate(c.fields, true, &err) != CC_OK) {
        rc = jcli_fail(&c, CC_EINVAL, &err);
        goto out;
    }
    if (strcmp(c.sub, "update") == 0 && cc_jobstore_job_validate(c.fields, false, &err) != CC_OK) {
        rc = jcli_fail(&c, CC_EINVAL, &err);
        goto out;
    }
    if (strcmp(c.sub, "run") == 0 || strcmp(c.sub, "rerun") == 0) {
        rc = run_overrides_check(&c);
        if (rc != 0)
            goto out;
    }
    rc = jcli_config(&c, &cfg, &has_cfg);
    if (rc == 0)
        rc = jcli_open(&c, &s, true);
    if (rc == 0)
        rc = subs[k].fn(&c, s);
out:
    fflush(stdout);
    cc_jobstore_close(s);
    if (has_cfg)
        cc_config_deinit(&cfg);
    json_decref(c.fields);
    return rc;
}

int cc_jobs_cli_db_main(int argc, char **argv)
{
    struct jcli c;
    struct cc_config cfg;
    struct cc_jobstore *s = NULL;
    struct cc_err err = {0};
    bool has_cfg = false;
    int rc, from = 0, to = 0;

    memset(&cfg, 0, sizeof cfg);
    rc = jcli_parse(&c, argc, argv);
    if (rc != 0)
        goto out;
    if (c.is_help || c.sub == NULL) {
        db_usage(c.is_help ? stdout : stderr);
        rc = c.is_help ? 0 : JCLI_USAGE;
        goto out;
    }
    if (strcmp(c.sub, "upgrade") != 0 && strcmp(c.sub, "version") != 0 &&
        strcmp(c.sub, "debug") != 0) {
        rc = jcli_usage_error(&c, "no such command: ", c.sub);
        goto out;
    }
    if (strcmp(c.sub, "debug") != 0 && c.n_pos > 0) {
        rc = jcli_usage_error(&c, "unexpected argument: ", c.pos[0]);
        goto out;
    }
    rc = jcli_config(&c, &cfg, &has_cfg);
    if (rc == 0) /* debug needs the current schema, except the op that builds an old one */
        rc = jcli_open(&c, &s,
                       strcmp(c.sub, "debug") == 0 &&
                           (c.n_pos == 0 || strcmp(c.pos[0], "upgrade-to") != 0));
    if (rc != 0)
        goto out;
    if (strcmp(c.sub, "debug") == 0) {
        rc = db_debug(&c, s);
    } else if (strcmp(c.sub, "upgrade") == 0) {
        int r = cc_jobstore_upgrade(s, &from, &to, &err);
        if (r != CC_OK) {
            rc = jcli_fail(&c, r, &err);
            rc = rc == JCLI_REFUSED ? JCLI_SOFTWARE : rc;
        } else if (c.is_json) {
            json_t *o = json_pack("{s:i,s:i}", "from", from, "to", to);
            print_json(o);
            json_decref(o);
        } else if (from == to) {
            printf("job store schema is up to date (version %d)\n", to);
        } else {
            printf("job store schema upgraded from version %d to %d\n", from, to);
        }
    } else {
        int r = cc_jobstore_version(s, &from, &err);
        if (r != CC_OK && from == 0) {
            rc = jcli_fail(&c, r, &err);
            rc = rc == JCLI_REFUSED ? JCLI_SOFTWARE : rc;
        } else if (c.is_json) {
            json_t *o =
                json_pack("{s:i,s:i}", "version", from, "latest", cc_jobstore_schema_latest());
            print_json(o);
            json_decref(o);
        } else {
            printf("job store schema version %d (this celeryc: %d)%s\n", from,
                   cc_jobstore_schema_latest(),
                   from < cc_jobstore_schema_latest()   ? ": run `celeryc db upgrade`"
                   : from > cc_jobstore_schema_latest() ? ": newer than this celeryc"
                                                        : "");
        }
    }
out:
    fflush(stdout);
    cc_jobstore_close(s);
    if (has_cfg)
        cc_config_deinit(&cfg);
    json_decref(c.fields);
    return rc;
}
