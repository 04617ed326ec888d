/* The job store (src/jobs/jobstore.h) on libpq: jobs, runs, run logs, the beat lease and the beat's
 * per-entry state in the Postgres schema "celeryc" (migrations in jobstore_schema.c).
 *
 * Design: one blocking libpq connection per struct cc_jobstore, session time zone UTC (so
 * row_to_json gives "...+00:00" timestamps), notices swallowed. Every statement that carries a
 * user value is parameterised (PQexecParams); the only SQL text built here is the column list
 * of a job insert/update, taken from the static column table below, never from input. Rows
 * leave the database as row_to_json / json_agg and become jansson objects.
 *
 * Invariants:
 * - Times cross the API as µs since the epoch and the SQL as bigint µs added to 'epoch'
 *   (exact; no float rounding). "Now" is always the server's now(), never this host's clock.
 * - Migrations run in one transaction under pg_advisory_xact_lock(STORE_LOCK_KEY), so
 *   concurrent `celeryc db upgrade`s serialise and the second one finds nothing to do.
 * - The lease: one upsert whose WHERE lets it through when the lease is free, expired or ours;
 *   a change of holder increments the epoch; it waits at most a tenth of the lease for a lock
 *   another session holds on the lease row. Fenced writes (runs from the scheduler, entry
 *   slots, send claims, retries) lock the lease row FOR SHARE and check its epoch, so a
 *   takeover either happened before (the write fails "lease lost") or waits for it; each is
 *   one statement (FENCE_SQL), except run creation, which takes that lock in its last
 *   statement before the COMMIT. No transaction of ours waits on the client for more than a
 *   round trip, and idle_in_transaction_session_timeout ends the session of a client frozen
 *   in one, so a frozen process never holds the lease row (or any row) for long.
 * - Concurrency policies run in one transaction with the job row locked FOR UPDATE, so two
 *   `jobs run` at once cannot both pass a forbid check.
 * - Run logs: one INSERT ... SELECT FROM unnest(arrays) WITH ORDINALITY per batch. */
#include "jobstore.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "isotime.h"
#include "jobstore_schema.h"
#include "schedule.h"
#include "tzload.h"
#include "util.h"

/* pg_advisory_xact_lock key of migrations: "celeryc" as ASCII in an int64. */
#define STORE_LOCK_KEY "27992235497661795"

/* Session defaults (cc_jobstore_set_timeouts changes them): no session of ours idles inside a
 * transaction for more than a round trip, so a session that does is a frozen process (SIGSTOP,
 * a paused VM) and the server ends it before its row locks stall everyone else. */
#define STORE_IDLE_TX_MS_DEFAULT 5000

struct cc_jobstore {
    PGconn *conn;
    char *conninfo;
    int connect_timeout_s;
    bool is_listening;
    int lock_timeout_ms; /* the session's lock_timeout (0: none) */
    int idle_tx_ms;      /* its idle_in_transaction_session_timeout */
    int applied_lock_ms; /* lock_timeout in effect on the connection now */
};

/* ---- Connection ------------------------------------------------------------------------- */

static void store_notice_ignore(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* libpq's message for a failed result (or the connection's) into err, whole: cc_err_set
 * folds libpq's hint lines onto the one line and marks what does not fit (issue #14: a
 * fixed 160-byte copy cut it at "accepting TCP/IP connecti"). */
static int store_fail(struct cc_jobstore *s, const PGresult *res, const char *what,
                      struct cc_err *err)
{
    const char *msg = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    int code = CC_EBACKEND;

    if (msg == NULL)
        msg = PQerrorMessage(s->conn);
    if (msg == NULL || msg[0] == '\0')
        msg = "unknown error";
    /* 22xxx data exceptions and 23xxx constraint violations are the input's fault. */
    if (state != NULL && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0))
        code = CC_EINVAL;
    /* 55P03 lock_not_available: lock_timeout passed while another session held a row this
     * statement needs (nothing was written; the connection is fine). */
    if (state != NULL && strcmp(state, "55P03") == 0)
        return cc_err_set(err, CC_ETIMEDOUT,
                          "job store %s: a row it needs is locked by another session (waited "
                          "%d ms)",
                          what, s->applied_lock_ms);
    return cc_err_set(err, code, "job store %s: %s", what, msg);
}

/* Set the session's lock_timeout (one statement outside any transaction). */
static int store_lock_timeout(struct cc_jobstore *s, int ms, struct cc_err *err)
{
    char v[24];
    const char *vals[1] = {v};
    PGresult *res;
    int rc = CC_OK;

    if (ms == s->applied_lock_ms)
        return CC_OK;
    snprintf(v, sizeof v, "%dms", ms);
    res = PQexecParams(s->conn, "SELECT set_config('lock_timeout', $1, false)", 1, NULL, vals, NULL,
                       NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        rc = store_fail(s, res, "session settings", err);
    else
        s->applied_lock_ms = ms;
    PQclear(res);
    return rc;
}

/* Session settings, at every (re)connect, in one statement: time zone UTC, lock_timeout and
 * idle_in_transaction_session_timeout as configured. */
static int store_setup(struct cc_jobstore *s, struct cc_err *err)
{
    char lock[24], idle[24];
    const char *vals[2] = {lock, idle};
    PGresult *res;
    int rc = CC_OK;

    s->applied_lock_ms = -1;
    if (PQstatus(s->conn) != CONNECTION_OK)
        return store_fail(s, NULL, "connect", err);
    PQsetNoticeProcessor(s->conn, store_notice_ignore, NULL);
    snprintf(lock, sizeof lock, "%dms", s->lock_timeout_ms);
    snprintf(idle, sizeof idle, "%dms", s->idle_tx_ms);
    res = PQexecParams(s->conn,
                       "SELECT set_config('TimeZone', 'UTC', false), "
                       "set_config('lock_timeout', $1, false), "
                       "set_config('idle_in_transaction_session_timeout', $2, false)",
                       2, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        rc = store_fail(s, res, "connect", err);
    else
        s->applied_lock_ms = s->lock_timeout_ms;
    PQclear(res);
    return rc;
}

int cc_jobstore_set_timeouts(struct cc_jobstore *s, int lock_timeout_ms, int idle_tx_timeout_ms,
                             struct cc_err *err)
{
    s->lock_timeout_ms = lock_timeout_ms > 0 ? lock_timeout_ms : 0;
    s->idle_tx_ms = idle_tx_timeout_ms > 0 ? idle_tx_timeout_ms : 0;
    return store_setup(s, err);
}

int cc_jobstore_open(const char *url, int connect_timeout_s, struct cc_jobstore **out,
                     struct cc_err *err)
{
    struct cc_jobstore *s;
    int rc;

    *out = NULL;
    if (url == NULL || url[0] == '\0')
        return cc_err_set(err, CC_EINVAL, "job store: no URL given");
    if (strncmp(url, "db+", 3) == 0)
        url += 3;
    s = cc_xcalloc(1, sizeof *s);
    s->conninfo = cc_xstrdup(url);
    s->connect_timeout_s = connect_timeout_s > 0 ? connect_timeout_s : 10;
    s->idle_tx_ms = STORE_IDLE_TX_MS_DEFAULT;
    {
        char timeout[16];
        const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
        const char *vals[] = {s->conninfo, timeout, "celeryc", NULL};

        snprintf(timeout, sizeof timeout, "%d", s->connect_timeout_s);
        s->conn = PQconnectdbParams(keys, vals, 1);
    }
    if (s->conn == NULL) {
        cc_jobstore_close(s);
        return cc_err_set(err, CC_ENOMEM, "job store: out of memory");
    }
    rc = store_setup(s, err);
    if (rc != CC_OK) {
        cc_jobstore_close(s);
        return rc;
    }
    *out = s;
    return CC_OK;
}

void cc_jobstore_close(struct cc_jobstore *s)
{
    if (s == NULL)
        return;
    if (s->conn != NULL)
        PQfinish(s->conn);
    free(s->conninfo);
    free(s);
}

int cc_jobstore_fd(const struct cc_jobstore *s)
{
    if (s == NULL || s->conn == NULL || PQstatus(s->conn) != CONNECTION_OK)
        return -1;
    return PQsocket(s->conn);
}

int cc_jobstore_reconnect(struct cc_jobstore *s, struct cc_err *err)
{
    int rc;

    PQreset(s->conn);
    rc = store_setup(s, err);
    if (rc == CC_OK && s->is_listening) {
        s->is_listening = false;
        rc = cc_jobstore_listen(s, err);
    }
    return rc;
}

/* ---- Statements ------------------------------------------------------------------------- */

/* Run one parameterised statement (text parameters, NULL = SQL NULL). *out (may be NULL)
 * gets the result, to PQclear. */
static int sql_run(struct cc_jobstore *s, const char *what, const char *sql, int n,
                   const char *const *vals, PGresult **out, struct cc_err *err)
{
    PGresult *res = PQexecParams(s->conn, sql, n, NULL, vals, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    int rc;

    if (out != NULL)
        *out = NULL;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        if (out != NULL)
            *out = res;
        else
            PQclear(res);
        return CC_OK;
    }
    rc = store_fail(s, res, what, err);
    PQclear(res);
    return rc;
}

static void sql_rollback(struct cc_jobstore *s)
{
    PQclear(PQexec(s->conn, "ROLLBACK"));
}

static int sql_begin(struct cc_jobstore *s, struct cc_err *err)
{
    return sql_run(s, "begin", "BEGIN", 0, NULL, NULL, err);
}

static int sql_commit(struct cc_jobstore *s, struct cc_err *err)
{
    return sql_run(s, "commit", "COMMIT", 0, NULL, NULL, err);
}

/* A statement returning one json value in row 0 column 0. No row or SQL NULL: CC_ENOTFOUND
 * (err not set: the caller says what was not found). */
static int sql_json(struct cc_jobstore *s, const char *what, const char *sql, int n,
                    const char *const *vals, json_t **out, struct cc_err *err)
{
    PGresult *res;
    json_error_t jerr;
    int rc;

    *out = NULL;
    rc = sql_run(s, what, sql, n, vals, &res, err);
    if (rc != CC_OK)
        return rc;
    if (PQntuples(res) < 1 || PQgetisnull(res, 0, 0)) {
        PQclear(res);
        return CC_ENOTFOUND;
    }
    *out = json_loads(PQgetvalue(res, 0, 0), JSON_DECODE_ANY, &jerr);
    PQclear(res);
    if (*out == NULL)
        return cc_err_set(err, CC_EBACKEND, "job store %s: bad JSON from server: %s", what,
                          jerr.text);
    return CC_OK;
}

/* sql_json for an aggregate (COALESCE(json_agg(...), '[]') and the like): such a statement
 * always yields one non-NULL value, so "no row" can only be a server-side surprise. */
static int sql_json_agg(struct cc_jobstore *s, const char *what, const char *sql, int n,
                        const char *const *vals, json_t **out, struct cc_err *err)
{
    int rc = sql_json(s, what, sql, n, vals, out, err);

    if (rc == CC_ENOTFOUND)
        rc = cc_err_set(err, CC_EBACKEND, "job store %s: no row from an aggregate", what);
    return rc;
}

static bool is_uuid(const char *id)
{
    size_t i;

    if (id == NULL || strlen(id) != 36)
        return false;
    for (i = 0; i < 36; i++) {
        char c = id[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return true;
}

static int check_uuid(const char *id, const char *what, struct cc_err *err)
{
    if (!is_uuid(id))
        return cc_err_set(err, CC_EINVAL, "malformed %s id '%.60s' (expected a uuid)", what,
                          id != NULL ? id : "");
    return CC_OK;
}

/* µs since the epoch as a SQL text parameter ("" -> the caller passes NULL for 0). */
static const char *us_param(char buf[24], int64_t us)
{
    if (us == 0)
        return NULL;
    snprintf(buf, 24, "%" PRId64, us);
    return buf;
}

/* Append `s` to a Postgres array literal as a quoted element; invalid UTF-8 bytes become '?'
 * (the server would refuse the whole batch for one bad byte). */
static void array_add(char **buf, size_t *len, size_t *cap, const char *str)
{
    size_t need = *len + 2 * strlen(str) + 4;
    const unsigned char *p = (const unsigned char *)str;
    char *o;

    if (need > *cap) {
        *cap = need * 2;
        *buf = cc_xrealloc(*buf, *cap);
    }
    o = *buf + *len;
    if (*len > 1)
        *o++ = ',';
    *o++ = '"';
    while (*p != '\0') {
        size_t n = 0, k;
        if (*p < 0x80)
            n = 1;
        else if ((*p & 0xE0) == 0xC0 && *p >= 0xC2)
            n = 2;
        else if ((*p & 0xF0) == 0xE0)
            n = 3;
        else if ((*p & 0xF8) == 0xF0 && *p <= 0xF4)
            n = 4;
        for (k = 1; k < n; k++)
            if ((p[k] & 0xC0) != 0x80)
                n = 0;
        if (n == 0) {
            *o++ = '?';
            p++;
            continue;
        }
        for (k = 0; k < n; k++, p++) {
            if (*p == '"' || *p == '\\')
                *o++ = '\\';
            *o++ = (char)*p;
        }
    }
    *o++ = '"';
    *len = (size_t)(o - *buf);
    (*buf)[*len] = '\0';
}

static char *array_new(size_t *len, size_t *cap)
{
    char *buf = cc_xmalloc(64);
    *cap = 64;
    buf[0] = '{';
    buf[1] = '\0';
    *len = 1;
    return buf;
}

static void array_end(char **buf, size_t *len, size_t *cap)
{
    if (*len + 2 > *cap) {
        *cap = *len + 2;
        *buf = cc_xrealloc(*buf, *cap);
    }
    (*buf)[(*len)++] = '}';
    (*buf)[*len] = '\0';
}

/* ---- Schema ----------------------------------------------------------------------------- */

int cc_jobstore_schema_latest(void)
{
    return cc_jobstore_schema_count();
}

/* Version in the current transaction/snapshot: 0 when celeryc.schema_version does not exist. */
static int schema_read(struct cc_jobstore *s, int *version, struct cc_err *err)
{
    PGresult *res;
    int rc;

    *version = 0;
    rc = sql_run(s, "version", "SELECT to_regclass('celeryc.schema_version') IS NOT NULL", 0, NULL,
                 &res, err);
    if (rc != CC_OK)
        return rc;
    if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        PQclear(res);
        return CC_OK;
    }
    PQclear(res);
    rc = sql_run(s, "version", "SELECT COALESCE(max(version), 0) FROM celeryc.schema_version", 0,
                 NULL, &res, err);
    if (rc != CC_OK)
        return rc;
    *version = atoi(PQgetvalue(res, 0, 0));
    PQclear(res);
    return CC_OK;
}

static int schema_newer(int version, struct cc_err *err)
{
    return cc_err_set(err, CC_EINVAL, "schema version %d is newer than this celeryc (%d)", version,
                      cc_jobstore_schema_latest());
}

int cc_jobstore_version(struct cc_jobstore *s, int *version, struct cc_err *err)
{
    int v = 0, rc = schema_read(s, &v, err);

    if (version != NULL)
        *version = v;
    if (rc == CC_OK && v > cc_jobstore_schema_latest())
        rc = schema_newer(v, err);
    return rc;
}

int cc_jobstore_upgrade(struct cc_jobstore *s, int *from, int *to, struct cc_err *err)
{
    return cc_jobstore_upgrade_to(s, cc_jobstore_schema_latest(), from, to, err);
}

int cc_jobstore_upgrade_to(struct cc_jobstore *s, int target, int *from, int *to,
                           struct cc_err *err)
{
    int v = 0, latest = cc_jobstore_schema_latest(), rc;

    rc = sql_begin(s, err);
    if (rc != CC_OK)
        return rc;
    rc = sql_run(s, "upgrade lock", "SELECT pg_advisory_xact_lock(" STORE_LOCK_KEY ")", 0, NULL,
                 NULL, err);
    if (rc == CC_OK)
        rc = schema_read(s, &v, err);
    if (from != NULL)
        *from = v;
    if (to != NULL)
        *to = v;
    if (rc == CC_OK && v > latest)
        rc = schema_newer(v, err);
    if (rc == CC_OK && (target < 1 || target > latest))
        rc = cc_err_set(err, CC_EINVAL, "no schema version %d (1 to %d)", target, latest);
    for (int i = v + 1; rc == CC_OK && i <= target; i++) {
        PGresult *res = PQexec(s->conn, cc_jobstore_schema_migration(i));
        char num[16], what[32];
        const char *vals[1] = {num};

        snprintf(what, sizeof what, "migration %d", i);
        if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
            rc = store_fail(s, res, what, err);
        PQclear(res);
        snprintf(num, sizeof num, "%d", i);
        if (rc == CC_OK)
            rc = sql_run(s, what, "INSERT INTO celeryc.schema_version (version) VALUES ($1::int)",
                         1, vals, NULL, err);
    }
    if (rc == CC_OK)
        rc = sql_commit(s, err);
    if (rc != CC_OK) {
        sql_rollback(s);
        return rc;
    }
    if (to != NULL)
        *to = v > target ? v : target;
    return CC_OK;
}

int cc_jobstore_check_schema(struct cc_jobstore *s, struct cc_err *err)
{
    int v = 0, rc = cc_jobstore_version(s, &v, err);

    if (rc != CC_OK)
        return rc;
    if (v < cc_jobstore_schema_latest())
        return cc_err_set(err, CC_EINVAL,
                          "job store schema is at version %d, this celeryc needs %d: run "
                          "`celeryc db upgrade` (or pass --db-upgrade)",
                          v, cc_jobstore_schema_latest());
    return CC_OK;
}

/* ---- Jobs: validation ------------------------------------------------------------------- */

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

/* Bytes of v as compact JSON (what is stored and sent), counted without building it. */
static int json_size_add(const char *buffer, size_t size, void *data)
{
    (void)buffer;
    *(size_t *)data += size;
    return 0;
}

/* `v` (may be NULL) at most CC_JOBSTORE_ARGS_MAX_BYTES of compact JSON, else CC_EINVAL naming
 * `what`. */
static int json_size_check(const json_t *v, const char *what, struct cc_err *err)
{
    size_t n = 0;

    if (v == NULL)
        return CC_OK;
    if (json_dump_callback(v, json_size_add, &n, JSON_COMPACT | JSON_ENCODE_ANY) != 0)
        return cc_err_set(err, CC_EINVAL, "%s cannot be encoded as JSON", what);
    if (n > CC_JOBSTORE_ARGS_MAX_BYTES)
        return cc_err_set(err, CC_EINVAL, "%s is %zu bytes of JSON, more than %d", what, n,
                          CC_JOBSTORE_ARGS_MAX_BYTES);
    return CC_OK;
}

enum col_kind { COL_TEXT, COL_JSON, COL_BOOL, COL_INT, COL_UUID };

struct job_col {
    const char *name;
    enum col_kind kind;
    bool is_nullable;
    const char *cast; /* SQL cast of the parameter */
};

/* The writable columns of celeryc.jobs (created/updated are the server's). */
static const struct job_col job_cols[] = {
    {"id", COL_UUID, false, "uuid"},
    {"title", COL_TEXT, false, "text"},
    {"description", COL_TEXT, false, "text"},
    {"task", COL_TEXT, false, "text"},
    {"queue", COL_TEXT, true, "text"},
    {"active", COL_BOOL, false, "boolean"},
    {"schedule", COL_JSON, true, "jsonb"},
    {"timezone", COL_TEXT, false, "text"},
    {"args", COL_JSON, false, "jsonb"},
    {"kwargs", COL_JSON, false, "jsonb"},
    {"options", COL_JSON, false, "jsonb"},
    {"concurrency", COL_TEXT, false, "text"},
    {"retry_policy", COL_JSON, false, "jsonb"},
    {"missed", COL_TEXT, false, "text"},
    {"starting_deadline", COL_INT, true, "integer"},
    {"since_kwarg", COL_TEXT, true, "text"},
};

static const struct job_col *job_col_find(const char *name)
{
    for (size_t i = 0; i < CC_ARRAY_LEN(job_cols); i++)
        if (strcmp(job_cols[i].name, name) == 0)
            return &job_cols[i];
    return NULL;
}

static int validate_schedule(const json_t *sch, struct cc_err *err)
{
    const char *type;
    struct cc_schedule sc;
    struct cc_err e2 = {0};
    const char *key;
    json_t *v;

    if (!json_is_object(sch))
        return cc_err_set(err, CC_EINVAL,
                          "schedule must be an object {\"type\": \"interval\"|\"crontab\", ...}");
    type = json_string_value(json_object_get(sch, "type"));
    if (type == NULL)
        return cc_err_set(err, CC_EINVAL, "schedule: missing \"type\" (interval or crontab)");
    if (strcmp(type, "interval") == 0) {
        json_t *sec = json_object_get(sch, "seconds");
        double d;

        json_object_foreach((json_t *)sch, key, v)
        {
            if (strcmp(key, "type") != 0 && strcmp(key, "seconds") != 0)
                return cc_err_set(err, CC_EINVAL, "schedule: unknown interval field '%.40s'", key);
        }
        if (!json_is_number(sec))
            return cc_err_set(err, CC_EINVAL, "schedule: interval needs \"seconds\" (a number)");
        d = json_number_value(sec);
        if (!(d > 0) || d > 1e10)
            return cc_err_set(err, CC_EINVAL, "schedule: interval seconds must be > 0 (got %g)", d);
        if (cc_schedule_interval(&sc, (int64_t)(d * 1e6), &e2) != CC_OK)
            return cc_err_set(err, CC_EINVAL, "schedule: %s", e2.msg);
        return CC_OK;
    }
    if (strcmp(type, "crontab") == 0) {
        static const char *const fields[] = {"minute", "hour", "day_of_week", "day_of_month",
                                             "month_of_year"};
        const char *val[5];

        json_object_foreach((json_t *)sch, key, v)
        {
            bool is_known = strcmp(key, "type") == 0;
            for (size_t i = 0; i < 5; i++)
                is_known = is_known || strcmp(key, fields[i]) == 0;
            if (!is_known)
                return cc_err_set(err, CC_EINVAL, "schedule: unknown crontab field '%.40s'", key);
        }
        for (size_t i = 0; i < 5; i++) {
            json_t *f = json_object_get(sch, fields[i]);
            if (f != NULL && !json_is_string(f))
                return cc_err_set(err, CC_EINVAL, "schedule: crontab %s must be a string",
                                  fields[i]);
            val[i] = f != NULL ? json_string_value(f) : "*";
        }
        if (cc_schedule_crontab(&sc, val[0], val[1], val[2], val[3], val[4], &e2) != CC_OK)
            return cc_err_set(err, CC_EINVAL, "invalid schedule: %s", e2.msg);
        /* Celery accepts a crontab that matches no date (30 February) and fails at run time
         * ("unable to rollover"); refuse it here instead of storing a job that never runs. */
        {
            int64_t now = cc_now_us(), next = 0;
            if (cc_schedule_next(&sc, now, now, NULL, &next, &e2) != CC_OK)
                return cc_err_set(err, CC_EINVAL, "invalid schedule: %s", e2.msg);
        }
        return CC_OK;
    }
    return cc_err_set(err, CC_EINVAL, "schedule: unknown type '%.40s' (interval or crontab)", type);
}

static int validate_retry(const json_t *rp, struct cc_err *err)
{
    const char *key;
    json_t *v;

    if (!json_is_object(rp))
        return cc_err_set(err, CC_EINVAL, "retry_policy must be an object");
    json_object_foreach((json_t *)rp, key, v)
    {
        if (strcmp(key, "max_attempts") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 1000000)
                return cc_err_set(err, CC_EINVAL,
                                  "retry_policy.max_attempts must be an integer >= 1");
        } else if (strcmp(key, "backoff") == 0 || strcmp(key, "max_backoff") == 0) {
            if (!json_is_number(v) || !(json_number_value(v) >= 0))
                return cc_err_set(err, CC_EINVAL, "retry_policy.%s must be a number >= 0", key);
        } else if (strcmp(key, "factor") == 0) {
            if (!json_is_number(v) || !(json_number_value(v) >= 1))
                return cc_err_set(err, CC_EINVAL, "retry_policy.factor must be a number >= 1");
        } else {
            return cc_err_set(err, CC_EINVAL,
                              "retry_policy: unknown field '%.40s' (max_attempts, backoff, "
                              "factor, max_backoff)",
                              key);
        }
    }
    return CC_OK;
}

int cc_jobstore_job_validate(const json_t *fields, bool is_create, struct cc_err *err)
{
    const char *key;
    json_t *v;

    if (!json_is_object(fields))
        return cc_err_set(err, CC_EINVAL, "job fields must be a JSON object");
    if (is_create) {
        if (!json_is_string(json_object_get(fields, "title")))
            return cc_err_set(err, CC_EINVAL, "a job needs a title");
        if (!json_is_string(json_object_get(fields, "task")))
            return cc_err_set(err, CC_EINVAL, "a job needs a task (a registered task name)");
    }
    json_object_foreach((json_t *)fields, key, v)
    {
        const struct job_col *c = job_col_find(key);

        if (c == NULL) {
            if (strcmp(key, "created") == 0 || strcmp(key, "updated") == 0)
                continue; /* read-only: `jobs show --json` output can be fed back */
            return cc_err_set(err, CC_EINVAL, "unknown job field '%.40s'", key);
        }
        if (json_is_null(v)) {
            if (!c->is_nullable)
                return cc_err_set(err, CC_EINVAL, "%s cannot be null", key);
            continue;
        }
        switch (c->kind) {
        case COL_UUID:
            if (!is_create)
                continue; /* ignored on update (the id is the argument) */
            if (check_uuid(json_string_value(v), "job", err) != CC_OK)
                return err != NULL ? err->code : CC_EINVAL;
            break;
        case COL_TEXT:
            if (!json_is_string(v))
                return cc_err_set(err, CC_EINVAL, "%s must be a string", key);
            if (json_string_length(v) == 0 && strcmp(key, "description") != 0)
                return cc_err_set(err, CC_EINVAL, "%s cannot be empty", key);
            break;
        case COL_BOOL:
            if (!json_is_boolean(v))
                return cc_err_set(err, CC_EINVAL, "%s must be true or false", key);
            break;
        case COL_INT:
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) > 2147483647)
                return cc_err_set(err, CC_EINVAL, "%s must be an integer >= 0 (seconds)", key);
            break;
        case COL_JSON:
            break;
        }
    }
    if ((v = json_object_get(fields, "schedule")) != NULL && !json_is_null(v) &&
        validate_schedule(v, err) != CC_OK)
        return CC_EINVAL;
    if ((v = json_object_get(fields, "timezone")) != NULL) {
        struct cc_tz tz;
        struct cc_err e2 = {0};
        int rc = cc_tzload_zone(json_string_value(v), NULL, &tz, &e2);

        cc_schedule_tz_deinit(&tz);
        if (rc != CC_OK)
            return cc_err_set(err, CC_EINVAL, "timezone: %s", e2.msg);
    }
    if ((v = json_object_get(fields, "concurrency")) != NULL) {
        const char *p = json_string_value(v);
        if (strcmp(p, "allow") != 0 && strcmp(p, "forbid") != 0 && strcmp(p, "replace") != 0)
            return cc_err_set(err, CC_EINVAL,
                              "unknown concurrency policy '%.40s' (allow, forbid or replace)", p);
    }
    if ((v = json_object_get(fields, "missed")) != NULL) {
        const char *p = json_string_value(v);
        if (strcmp(p, "skip") != 0 && strcmp(p, "run_once") != 0)
            return cc_err_set(err, CC_EINVAL, "unknown missed policy '%.40s' (skip or run_once)",
                              p);
    }
    if ((v = json_object_get(fields, "retry_policy")) != NULL && validate_retry(v, err) != CC_OK)
        return CC_EINVAL;
    if ((v = json_object_get(fields, "args")) != NULL && !json_is_array(v))
        return cc_err_set(err, CC_EINVAL, "args must be a JSON array");
    if ((v = json_object_get(fields, "kwargs")) != NULL && !json_is_object(v))
        return cc_err_set(err, CC_EINVAL, "kwargs must be a JSON object");
    if ((v = json_object_get(fields, "options")) != NULL && !json_is_object(v))
        return cc_err_set(err, CC_EINVAL, "options must be a JSON object");
    for (size_t i = 0; i < 3; i++) {
        static const char *const big[] = {"args", "kwargs", "options"};
        if (json_size_check(json_object_get(fields, big[i]), big[i], err) != CC_OK)
            return CC_EINVAL;
    }
    if ((v = json_object_get(fields, "queue")) != NULL && json_is_string(v) &&
        json_string_length(v) > CC_JOBSTORE_QUEUE_MAX_BYTES)
        return cc_err_set(err, CC_EINVAL, "queue is longer than %d bytes",
                          CC_JOBSTORE_QUEUE_MAX_BYTES);
    return CC_OK;
}

/* ---- Runs: what a user may give ---------------------------------------------------------- */

int cc_jobstore_run_args_validate(const json_t *args, const json_t *kwargs, const char *queue,
                                  struct cc_err *err)
{
    if (args != NULL && !json_is_array(args))
        return cc_err_set(err, CC_EINVAL, "--args must be a JSON array (got %s)",
                          json_type_name(args));
    if (kwargs != NULL && !json_is_object(kwargs))
        return cc_err_set(err, CC_EINVAL, "--kwargs must be a JSON object (got %s)",
                          json_type_name(kwargs));
    if (json_size_check(args, "--args", err) != CC_OK ||
        json_size_check(kwargs, "--kwargs", err) != CC_OK)
        return CC_EINVAL;
    if (queue != NULL && queue[0] == '\0')
        return cc_err_set(err, CC_EINVAL, "--queue cannot be empty (leave it out for the job's)");
    if (queue != NULL && strlen(queue) > CC_JOBSTORE_QUEUE_MAX_BYTES)
        return cc_err_set(err, CC_EINVAL, "--queue is longer than %d bytes",
                          CC_JOBSTORE_QUEUE_MAX_BYTES);
    return CC_OK;
}

/* ---- Jobs: statements ------------------------------------------------------------------- */

/* Text parameter for job column `c` from JSON `v` (owned, NULL for SQL NULL). */
static char *job_param(const struct job_col *c, const json_t *v)
{
    char buf[32];

    if (v == NULL || json_is_null(v))
        return NULL;
    switch (c->kind) {
    case COL_TEXT:
    case COL_UUID:
        return cc_xstrdup(json_string_value(v));
    case COL_BOOL:
        return cc_xstrdup(json_is_true(v) ? "true" : "false");
    case COL_INT:
        snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return cc_xstrdup(buf);
    case COL_JSON: {
        char *d = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (d == NULL)
            d = cc_xstrdup("null");
        return d;
    }
    }
    return NULL;
}

static void sql_append(char **sql, size_t *len, size_t *cap, const char *fmt, ...) CC_PRINTF(4, 5);

static void sql_append(char **sql, size_t *len, size_t *cap, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(*sql + *len, *cap - *len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < *cap - *len)
            break;
        *cap = *cap * 2 + (size_t)n;
        *sql = cc_xrealloc(*sql, *cap);
    }
    *len += (size_t)n;
}

int cc_jobstore_job_create(struct cc_jobstore *s, const json_t *fields, json_t **out,
                           struct cc_err *err)
{
    char id[37], *vals[CC_ARRAY_LEN(job_cols)];
    size_t cap = 512, len = 0, n = 0;
    char *sql;
    int rc;

    *out = NULL;
    rc = cc_jobstore_job_validate(fields, true, err);
    if (rc != CC_OK)
        return rc;
    cc_uuid4(id);
    sql = cc_xmalloc(cap);
    sql[0] = '\0';
    sql_append(&sql, &len, &cap, "INSERT INTO celeryc.jobs AS j (");
    for (size_t i = 0; i < CC_ARRAY_LEN(job_cols); i++) {
        const json_t *v = json_object_get(fields, job_cols[i].name);
        if (i == 0) {
            vals[n] = v != NULL ? job_param(&job_cols[0], v) : cc_xstrdup(id);
        } else if (v == NULL) {
            continue; /* the column's default */
        } else {
            vals[n] = job_param(&job_cols[i], v);
        }
        sql_append(&sql, &len, &cap, "%s%s", n > 0 ? ", " : "", job_cols[i].name);
        n++;
    }
    sql_append(&sql, &len, &cap, ") VALUES (");
    n = 0;
    for (size_t i = 0; i < CC_ARRAY_LEN(job_cols); i++) {
        if (i > 0 && json_object_get(fields, job_cols[i].name) == NULL)
            continue;
        sql_append(&sql, &len, &cap, "%s$%zu::%s", n > 0 ? ", " : "", n + 1, job_cols[i].cast);
        n++;
    }
    sql_append(&sql, &len, &cap, ") RETURNING row_to_json(j)");
    rc = sql_json(s, "job create", sql, (int)n, (const char *const *)vals, out, err);
    if (rc == CC_ENOTFOUND)
        rc = cc_err_set(err, CC_EBACKEND, "job store job create: no row returned");
    for (size_t i = 0; i < n; i++)
        free(vals[i]);
    free(sql);
    return rc;
}

int cc_jobstore_job_update(struct cc_jobstore *s, const char *id, const json_t *fields,
                           json_t **out, struct cc_err *err)
{
    char *vals[CC_ARRAY_LEN(job_cols) + 1];
    size_t cap = 512, len = 0, n = 1;
    json_t *row = NULL;
    char *sql;
    int rc;

    if (out != NULL)
        *out = NULL;
    rc = check_uuid(id, "job", err);
    if (rc == CC_OK)
        rc = cc_jobstore_job_validate(fields, false, err);
    if (rc != CC_OK)
        return rc;
    vals[0] = cc_xstrdup(id);
    sql = cc_xmalloc(cap);
    sql[0] = '\0';
    sql_append(&sql, &len, &cap, "UPDATE celeryc.jobs AS j SET updated = now()");
    for (size_t i = 1; i < CC_ARRAY_LEN(job_cols); i++) {
        const json_t *v = json_object_get(fields, job_cols[i].name);
        if (v == NULL)
            continue;
        vals[n] = job_param(&job_cols[i], v);
        n++;
        sql_append(&sql, &len, &cap, ", %s = $%zu::%s", job_cols[i].name, n, job_cols[i].cast);
    }
    sql_append(&sql, &len, &cap, " WHERE id = $1::uuid RETURNING row_to_json(j)");
    rc = sql_json(s, "job update", sql, (int)n, (const char *const *)vals, &row, err);
    if (rc == CC_ENOTFOUND)
        rc = cc_err_set(err, CC_ENOTFOUND, "no job %s", id);
    for (size_t i = 0; i < n; i++)
        free(vals[i]);
    free(sql);
    if (out != NULL)
        *out = row;
    else
        json_decref(row);
    return rc;
}

int cc_jobstore_job_delete(struct cc_jobstore *s, const char *id, struct cc_err *err)
{
    const char *vals[1] = {id};
    PGresult *res;
    int rc = check_uuid(id, "job", err);

    if (rc != CC_OK)
        return rc;
    rc = sql_run(s, "job delete", "DELETE FROM celeryc.jobs WHERE id = $1::uuid", 1, vals, &res,
                 err);
    if (rc != CC_OK)
        return rc;
    if (strcmp(PQcmdTuples(res), "0") == 0)
        rc = cc_err_set(err, CC_ENOTFOUND, "no job %s", id);
    PQclear(res);
    return rc;
}

/* One row by id: `what` ("job", "run") names it in errors, `sql` selects it with $1. */
static int get_by_id(struct cc_jobstore *s, const char *what, const char *sql, const char *id,
                     json_t **out, struct cc_err *err)
{
    const char *vals[1] = {id};
    int rc;

    *out = NULL;
    rc = check_uuid(id, what, err);
    if (rc != CC_OK)
        return rc;
    rc = sql_json(s, what, sql, 1, vals, out, err);
    if (rc == CC_ENOTFOUND)
        rc = cc_err_set(err, CC_ENOTFOUND, "no %s %s", what, id);
    return rc;
}

int cc_jobstore_job_get(struct cc_jobstore *s, const char *id, json_t **out, struct cc_err *err)
{
    return get_by_id(s, "job", "SELECT row_to_json(j) FROM celeryc.jobs j WHERE id = $1::uuid", id,
                     out, err);
}

int cc_jobstore_jobs_list(struct cc_jobstore *s, bool active_only, json_t **out, struct cc_err *err)
{
    const char *vals[1] = {active_only ? "true" : "false"};
    return sql_json_agg(s, "jobs list",
                        "SELECT COALESCE(json_agg(j ORDER BY j.title, j.created), '[]') "
                        "FROM celeryc.jobs j WHERE j.active OR NOT $1::boolean",
                        1, vals, out, err);
}

/* ---- Runs ------------------------------------------------------------------------------- */

/* Fencing in one statement: a CTE `fence` with one row when the write may go ahead (epoch 0:
 * not fenced; else the lease row, locked FOR SHARE, still has that epoch). The statement is
 * its own transaction, so the lock lasts as long as the statement, however long the client
 * then takes (a frozen beat cannot keep it). LEASE and EPOCH are parameter references. */
#define FENCE_SQL(LEASE, EPOCH)                                                                    \
    "lease AS (SELECT 1 FROM celeryc.leases WHERE name = " LEASE "::text AND epoch = " EPOCH       \
    "::bigint FOR SHARE), fence AS (SELECT 1 WHERE " EPOCH "::bigint <= 0 OR EXISTS (SELECT 1 "    \
    "FROM lease))"

static int fence_lost(const char *lease, int64_t epoch, struct cc_err *err)
{
    return cc_err_set(err, CC_EAGAIN, "lease lost: %s is no longer at epoch %" PRId64,
                      lease != NULL ? lease : "?", epoch);
}

/* In a transaction: lock the lease row and check its epoch (fencing). */
static int lease_check(struct cc_jobstore *s, const char *lease, int64_t epoch, struct cc_err *err)
{
    char ep[24];
    const char *vals[2] = {lease, ep};
    PGresult *res;
    int rc;

    if (epoch <= 0)
        return CC_OK;
    if (lease == NULL)
        return cc_err_set(err, CC_EINVAL, "fenced write without a lease name");
    snprintf(ep, sizeof ep, "%" PRId64, epoch);
    rc = sql_run(s, "lease check",
                 "SELECT epoch FROM celeryc.leases WHERE name = $1 AND epoch = $2::bigint "
                 "FOR SHARE",
                 2, vals, &res, err);
    if (rc != CC_OK)
        return rc;
    if (PQntuples(res) != 1)
        rc = cc_err_set(err, CC_EAGAIN, "lease lost: %s is no longer at epoch %" PRId64, lease,
                        epoch);
    PQclear(res);
    return rc;
}

/* The run columns as json, for RETURNING/SELECT on alias r. */
#define RUN_JSON "row_to_json(r)"

/* The insert of cc_jobstore_run_create: a conflict on (job, slot, attempt) or on retry_of
 * inserts nothing (-> "exists"). */
static const char run_insert_sql[] =
    "INSERT INTO celeryc.runs AS r (id, job_id, started_by, task_id, args, kwargs, queue, "
    "scheduled_for, not_before, attempt, retry_of, epoch, rerun_of) "
    "SELECT $1::uuid, j.id, $3::text, $4::text, COALESCE($5::jsonb, j.args), "
    "COALESCE($6::jsonb, j.kwargs), COALESCE($7::text, j.queue), ('epoch'::timestamptz + "
    "($8)::bigint * interval '1 microsecond'), ('epoch'::timestamptz + ($9)::bigint * interval '1 "
    "microsecond'), $10::int, $11::uuid, $12::bigint, $13::uuid FROM celeryc.jobs j "
    "WHERE j.id = $2::uuid ON CONFLICT DO NOTHING RETURNING " RUN_JSON;

const char *cc_jobstore_status_name(char status)
{
    switch (status) {
    case 'Q':
        return "queued";
    case 'R':
        return "running";
    case 'S':
        return "success";
    case 'F':
        return "failed";
    case 'W':
        return "warning";
    case 'C':
        return "cancelling";
    case 'X':
        return "cancelled";
    case 'P':
        return "partial success";
    default:
        return "?";
    }
}

int cc_jobstore_kwargs_since(struct cc_jobstore *s, const json_t *job, const json_t *kwargs,
                             json_t **out, struct cc_err *err)
{
    const char *sk = json_string_value(json_object_get(job, "since_kwarg"));
    const char *job_id = json_string_value(json_object_get(job, "id"));
    int64_t since_us = 0;
    char b[40];
    int rc;

    *out = NULL;
    if (kwargs == NULL)
        kwargs = json_object_get(job, "kwargs");
    /* An explicit value (an override, a rerun of a run that had one) wins. */
    if (sk == NULL || sk[0] == '\0' ||
        (json_is_object(kwargs) && json_object_get(kwargs, sk) != NULL))
        return CC_OK;
    rc = cc_jobstore_job_last_success(s, job_id, &since_us, err);
    if (rc != CC_OK)
        return rc;
    *out = json_is_object(kwargs) ? json_deep_copy(kwargs) : json_object();
    if (*out == NULL)
        return cc_err_set(err, CC_ENOMEM, "job store: out of memory");
    json_object_set_new(*out, sk,
                        since_us != 0 ? json_string(cc_isotime_format(since_us, 1, b, sizeof b))
                                      : json_null());
    return CC_OK;
}

/* The run `id` a rerun copies (*out: its row, owned): it must be finished. */
static int run_rerun_source(struct cc_jobstore *s, const char *id, json_t **out, struct cc_err *err)
{
    const char *st;
    int rc = get_by_id(s, "run", "SELECT " RUN_JSON " FROM celeryc.runs r WHERE id = $1::uuid", id,
                       out, err);

    if (rc != CC_OK)
        return rc;
    st = json_string_value(json_object_get(*out, "status"));
    if (st == NULL || st[0] == '\0' || strchr("SFWPX", st[0]) == NULL)
        return cc_err_set(err, CC_EAGAIN, "run %s is %s (%s): only a finished run can be rerun", id,
                          st != NULL ? st : "?", cc_jobstore_status_name(st ? st[0] : '?'));
    return CC_OK;
}

int cc_jobstore_run_create(struct cc_jobstore *s, const struct cc_run_new *rn, json_t **out,
                           json_t **cancelled, struct cc_err *err)
{
    char run_id[37], task_id[37], sched[24], notb[24], ep[24], att[16];
    const char *job_id = rn->job_id, *queue = rn->queue;
    const json_t *use_args = rn->args, *use_kwargs = rn->kwargs;
    const char *jvals[1];
    char *args = NULL, *kwargs = NULL;
    json_t *job = NULL, *gone = NULL, *orig = NULL, *since_kw = NULL;
    const char *policy;
    PGresult *res = NULL;
    int rc;

    *out = NULL;
    if (cancelled != NULL)
        *cancelled = NULL;
    rc = rn->rerun_of != NULL ? check_uuid(rn->rerun_of, "run", err)
                              : check_uuid(rn->job_id, "job", err);
    if (rc == CC_OK && rn->retry_of != NULL)
        rc = check_uuid(rn->retry_of, "run", err);
    if (rc == CC_OK && rn->args != NULL && !json_is_array(rn->args))
        rc = cc_err_set(err, CC_EINVAL, "a run's args must be a JSON array");
    if (rc == CC_OK && rn->kwargs != NULL && !json_is_object(rn->kwargs))
        rc = cc_err_set(err, CC_EINVAL, "a run's kwargs must be a JSON object");
    if (rc != CC_OK)
        return rc;
    rc = sql_begin(s, err);
    if (rc != CC_OK)
        return rc;
    if (rn->rerun_of != NULL) {
        /* A finished run stays finished, so reading it before the job lock is safe; the
         * job lock below keeps it from being deleted (with its job) until the insert. */
        rc = run_rerun_source(s, rn->rerun_of, &orig, err);
        if (rc != CC_OK)
            goto out;
        job_id = json_string_value(json_object_get(orig, "job_id"));
        if (use_args == NULL)
            use_args = json_object_get(orig, "args");
        if (use_kwargs == NULL)
            use_kwargs = json_object_get(orig, "kwargs");
        if (queue == NULL)
            queue = json_string_value(json_object_get(orig, "queue"));
    }
    jvals[0] = job_id;
    rc = sql_json(s, "run create",
                  "SELECT row_to_json(j) FROM celeryc.jobs j WHERE id = $1::uuid FOR UPDATE", 1,
                  jvals, &job, err);
    if (rc == CC_ENOTFOUND)
        rc = cc_err_set(err, CC_ENOTFOUND, "no job %s", job_id);
    if (rc != CC_OK)
        goto out;
    policy = json_string_value(json_object_get(job, "concurrency"));
    if (policy != NULL && strcmp(policy, "forbid") == 0) {
        rc = sql_run(s, "run create",
                     "SELECT id, status FROM celeryc.runs WHERE job_id = $1::uuid "
                     "AND status IN ('Q', 'R', 'C') ORDER BY created LIMIT 1",
                     1, jvals, &res, err);
        if (rc != CC_OK)
            goto out;
        if (PQntuples(res) > 0) {
            rc = cc_err_set(err, CC_EAGAIN, "forbid: run %s is %s", PQgetvalue(res, 0, 0),
                            PQgetvalue(res, 0, 1));
            goto out;
        }
        PQclear(res);
        res = NULL;
    } else if (policy != NULL && strcmp(policy, "replace") == 0) {
        /* A run not started yet (Q) is cancelled outright, as cc_jobstore_run_cancel does; a
         * running one goes to C and the worker finishes it as X after the revoke. */
        rc = sql_json_agg(
            s, "run create",
            "WITH c AS (UPDATE celeryc.runs AS r SET "
            "status = CASE WHEN r.status = 'Q' THEN 'X' ELSE 'C' END, "
            "finished_at = CASE WHEN r.status = 'Q' THEN now() ELSE r.finished_at END, "
            "message = 'replaced by a new run' "
            "WHERE r.job_id = $1::uuid AND r.status IN ('Q', 'R', 'C') "
            "RETURNING " RUN_JSON " AS j, r.created) "
            "SELECT COALESCE(json_agg(j ORDER BY created), '[]') FROM c",
            1, jvals, &gone, err);
        if (rc != CC_OK)
            goto out;
    }
    /* The row records what the run is sent with: `since` included (the beat adds it to
     * scheduled runs itself; manual runs and reruns get it here). */
    rc = cc_jobstore_kwargs_since(s, job, use_kwargs, &since_kw, err);
    if (rc != CC_OK)
        goto out;
    if (since_kw != NULL)
        use_kwargs = since_kw;
    cc_uuid4(run_id);
    cc_uuid4(task_id);
    if (use_args != NULL)
        args = json_dumps(use_args, JSON_COMPACT | JSON_ENCODE_ANY);
    if (use_kwargs != NULL)
        kwargs = json_dumps(use_kwargs, JSON_COMPACT | JSON_ENCODE_ANY);
    snprintf(att, sizeof att, "%d", rn->attempt > 0 ? rn->attempt : 1);
    snprintf(ep, sizeof ep, "%" PRId64, rn->epoch > 0 ? rn->epoch : 0);
    /* Fencing last: the lease row is locked (FOR SHARE) only from here to the COMMIT, two
     * round trips, never while this transaction waits for the job row or runs the policy. */
    rc = lease_check(s, rn->lease, rn->epoch, err);
    if (rc != CC_OK)
        goto out;
    {
        const char *vals[13] = {run_id,
                                job_id,
                                rn->started_by,
                                task_id,
                                args,
                                kwargs,
                                queue,
                                us_param(sched, rn->scheduled_for_us),
                                us_param(notb, rn->not_before_us),
                                att,
                                rn->retry_of,
                                ep,
                                rn->rerun_of};
        rc = sql_json(s, "run create", run_insert_sql, 13, vals, out, err);
    }
    if (rc == CC_ENOTFOUND)
        rc = cc_err_set(err, CC_EAGAIN, "exists: job %s already has a run for this slot", job_id);
    if (rc == CC_OK)
        rc = sql_commit(s, err);
out:
    if (rc != CC_OK) {
        sql_rollback(s);
        json_decref(*out);
        *out = NULL;
        json_decref(gone);
        gone = NULL;
    }
    if (cancelled != NULL)
        *cancelled = gone != NULL ? gone : (rc == CC_OK ? json_array() : NULL);
    else
        json_decref(gone);
    PQclear(res);
    json_decref(job);
    json_decref(orig);
    json_decref(since_kw);
    free(args);
    free(kwargs);
    return rc;
}

/* After an UPDATE touched no row: CC_ENOTFOUND "no run X" when it does not exist, else
 * CC_EAGAIN "run is <status>". `key` is "id" or "task_id". */
static int run_state_error(struct cc_jobstore *s, const char *key, const char *val, char *status,
                           struct cc_err *err)
{
    const char *vals[1] = {val};
    PGresult *res;
    int rc;

    rc = sql_run(s, "run",
                 strcmp(key, "id") == 0 ? "SELECT status FROM celeryc.runs WHERE id = $1::uuid"
                                        : "SELECT status FROM celeryc.runs WHERE task_id = $1",
                 1, vals, &res, err);
    if (rc != CC_OK)
        return rc;
    if (PQntuples(res) == 0)
        rc = cc_err_set(err, CC_ENOTFOUND, "no run %s%s",
                        strcmp(key, "id") == 0 ? "" : "with task id ", val);
    else
        rc = cc_err_set(err, CC_EAGAIN, "run is %s", PQgetvalue(res, 0, 0));
    if (status != NULL)
        *status = PQntuples(res) > 0 ? PQgetvalue(res, 0, 0)[0] : '\0';
    PQclear(res);
    return rc;
}

static int run_update(struct cc_jobstore *s, const char *what, const char *sql, int n,
                      const char *const *vals, int *rows, struct cc_err *err)
{
    PGresult *res;
    int rc = sql_run(s, what, sql, n, vals, &res, err);

    *rows = 0;
    if (rc == CC_OK) {
        *rows = atoi(PQcmdTuples(res));
        PQclear(res);
    }
    return rc;
}

int cc_jobstore_run_mark_sent(struct cc_jobstore *s, const char *id, struct cc_err *err)
{
    const char *vals[1] = {id};
    int rows, rc = check_uuid(id, "run", err);

    if (rc == CC_OK)
        rc = run_update(s, "run mark sent",
                        "UPDATE celeryc.runs SET sent_at = COALESCE(sent_at, now()) "
                        "WHERE id = $1::uuid",
                        1, vals, &rows, err);
    if (rc == CC_OK && rows == 0)
        rc = cc_err_set(err, CC_ENOTFOUND, "no run %s", id);
    return rc;
}

int cc_jobstore_run_send_claim(struct cc_jobstore *s, const char *id, int64_t epoch,
                               const char *lease, struct cc_err *err)
{
    char ep[24];
    const char *vals[3] = {id, ep, lease};
    PGresult *res = NULL;
    int rc = check_uuid(id, "run", err);

    if (rc != CC_OK)
        return rc;
    if (epoch > 0 && lease == NULL)
        return cc_err_set(err, CC_EINVAL, "fenced write without a lease name");
    snprintf(ep, sizeof ep, "%" PRId64, epoch > 0 ? epoch : 0);
    /* One statement, so only one leader can win a run's send: the UPDATE's row lock orders
     * two claimants, and the second finds sent_at set. */
    rc = sql_run(
        s, "run send claim",
        "WITH " FENCE_SQL(
            "$3",
            "$2") ", "
                  "u AS (UPDATE celeryc.runs r SET sent_at = now(), epoch = $2::bigint "
                  "WHERE r.id = $1::uuid AND r.status = 'Q' AND r.sent_at IS NULL "
                  "AND EXISTS (SELECT 1 FROM fence) RETURNING 1) "
                  "SELECT EXISTS (SELECT 1 FROM fence), (SELECT count(*) FROM u), "
                  "(SELECT status || CASE WHEN sent_at IS NULL THEN '' ELSE ' (send claimed by "
                  "epoch ' || epoch || ')' END FROM celeryc.runs WHERE id = $1::uuid)",
        3, vals, &res, err);
    if (rc != CC_OK)
        return rc;
    if (PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 0), "t") != 0)
        rc = fence_lost(lease, epoch, err);
    else if (atoi(PQgetvalue(res, 0, 1)) == 1)
        rc = CC_OK;
    else if (PQgetisnull(res, 0, 2))
        rc = cc_err_set(err, CC_ENOTFOUND, "no run %s", id);
    else
        rc = cc_err_set(err, CC_EAGAIN, "run is %s", PQgetvalue(res, 0, 2));
    PQclear(res);
    return rc;
}

int cc_jobstore_run_send_undo(struct cc_jobstore *s, const char *id, int64_t epoch, bool is_notify,
                              struct cc_err *err)
{
    char ep[24];
    const char *vals[3] = {id, ep, is_notify ? "t" : "f"};
    int rc = check_uuid(id, "run", err);

    if (rc != CC_OK)
        return rc;
    snprintf(ep, sizeof ep, "%" PRId64, epoch);
    /* Not fenced: a deposed leader gives back the claim it holds, and only that one (same
     * epoch, still Q). NOTIFY wakes whoever leads now to send it. */
    return sql_run(s, "run send undo",
                   "WITH u AS (UPDATE celeryc.runs SET sent_at = NULL WHERE id = $1::uuid "
                   "AND epoch = $2::bigint AND status = 'Q' AND sent_at IS NOT NULL RETURNING id) "
                   "SELECT pg_notify('celeryc_runs', id::text) FROM u WHERE $3::boolean",
                   3, vals, NULL, err);
}

int cc_jobstore_runs_unsent(struct cc_jobstore *s, int older_than_s, int limit, json_t **out,
                            struct cc_err *err)
{
    char age[16], lim[16];
    const char *vals[2] = {age, lim};
    int rc;

    snprintf(age, sizeof age, "%d", older_than_s > 0 ? older_than_s : 0);
    snprintf(lim, sizeof lim, "%d", limit > 0 ? limit : 100);
    rc = sql_json_agg(s, "runs unsent",
                      "SELECT COALESCE(json_agg(r ORDER BY r.created), '[]') FROM ("
                      "SELECT * FROM celeryc.runs WHERE status = 'Q' AND sent_at IS NULL AND "
                      "((not_before IS NULL AND created <= now() - $1::int * interval '1 second') "
                      "OR not_before <= now()) ORDER BY created LIMIT $2::int) r",
                      2, vals, out, err);
    return rc;
}

int cc_jobstore_run_fail(struct cc_jobstore *s, const char *id, const char *message,
                         struct cc_err *err)
{
    const char *vals[2] = {id, message};
    int rows, rc = check_uuid(id, "run", err);

    if (rc == CC_OK)
        rc = run_update(s, "run fail",
                        "UPDATE celeryc.runs SET status = 'F', message = $2::text, "
                        "finished_at = now() WHERE id = $1::uuid AND status IN ('Q', 'R')",
                        2, vals, &rows, err);
    if (rc == CC_OK && rows == 0)
        rc = run_state_error(s, "id", id, NULL, err);
    return rc;
}

int cc_jobstore_run_start(struct cc_jobstore *s, const char *task_id, const char *hostname,
                          struct cc_err *err)
{
    const char *vals[2] = {task_id, hostname};
    char st = '\0';
    PGresult *res;
    int rc;

    if (task_id == NULL)
        return cc_err_set(err, CC_EINVAL, "run start: no task id");
    rc = sql_run(s, "run start",
                 "UPDATE celeryc.runs AS r SET "
                 "status = CASE WHEN r.status = 'Q' THEN 'R' ELSE 'X' END, "
                 "started_at = CASE WHEN r.status = 'Q' THEN now() ELSE r.started_at END, "
                 "heartbeat_at = now(), hostname = $2::text, "
                 "finished_at = CASE WHEN r.status = 'Q' THEN NULL ELSE now() END, "
                 "message = CASE WHEN r.status = 'Q' THEN r.message "
                 "ELSE 'cancelled before it started' END "
                 "WHERE r.task_id = $1 AND r.status IN ('Q', 'C') RETURNING r.status",
                 2, vals, &res, err);
    if (rc != CC_OK)
        return rc;
    if (PQntuples(res) == 1) {
        if (PQgetvalue(res, 0, 0)[0] == 'X')
            rc = cc_err_set(err, CC_ESHUTDOWN, "run was cancelled before it started");
        PQclear(res);
        return rc;
    }
    PQclear(res);
    rc = run_state_error(s, "task_id", task_id, &st, err);
    if (rc == CC_EAGAIN) {
        /* A redelivery: leave the run as it is. A run cancelled before it started (X) must
         * not run. */
        rc = st == 'X' ? cc_err_set(err, CC_ESHUTDOWN, "run was cancelled before it started")
                       : CC_OK;
    }
    return rc;
}

int cc_jobstore_run_finish(struct cc_jobstore *s, const char *task_id, char status,
                           const char *message, int64_t processed, int64_t errored,
                           const json_t *summary, struct cc_err *err)
{
    char st[2] = {status, '\0'}, pr[24], er[24];
    char *sum = summary != NULL ? json_dumps(summary, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    const char *vals[6] = {task_id, st, message, pr, er, sum};
    int rows, rc;

    if (strchr("SFWPX", status) == NULL || status == '\0')
        return cc_err_set(err, CC_EINVAL, "run finish: bad status '%c' (S F W P X)", status);
    if (task_id == NULL)
        return cc_err_set(err, CC_EINVAL, "run finish: no task id");
    snprintf(pr, sizeof pr, "%" PRId64, processed);
    snprintf(er, sizeof er, "%" PRId64, errored);
    rc = run_update(s, "run finish",
                    "UPDATE celeryc.runs AS r SET "
                    "status = CASE WHEN r.status = 'C' AND $2::text NOT IN ('S', 'P', 'W') "
                    "THEN 'X' ELSE $2::text END, "
                    "message = COALESCE($3::text, r.message), "
                    "processed = CASE WHEN $4::bigint < 0 THEN r.processed ELSE $4::bigint END, "
                    "errored = CASE WHEN $5::bigint < 0 THEN r.errored ELSE $5::bigint END, "
                    "summary = COALESCE($6::jsonb, r.summary), "
                    "finished_at = now(), heartbeat_at = now() "
                    "WHERE r.task_id = $1 AND r.status IN ('Q', 'R', 'C')",
                    6, vals, &rows, err);
    free(sum);
    if (rc == CC_OK && rows == 0) {
        rc = run_state_error(s, "task_id", task_id, NULL, err);
        if (rc == CC_EAGAIN)
            rc = CC_OK; /* already finished: unchanged */
    }
    return rc;
}

int cc_jobstore_run_progress(struct cc_jobstore *s, const char *task_id, int64_t processed,
                             int64_t errored, struct cc_err *err)
{
    char pr[24], er[24];
    const char *vals[3] = {task_id, pr, er};
    int rows;

    if (task_id == NULL)
        return cc_err_set(err, CC_EINVAL, "run progress: no task id");
    snprintf(pr, sizeof pr, "%" PRId64, processed);
    snprintf(er, sizeof er, "%" PRId64, errored);
    return run_update(s, "run progress",
                      "UPDATE celeryc.runs AS r SET "
                      "processed = CASE WHEN $2::bigint < 0 THEN r.processed ELSE $2::bigint END, "
                      "errored = CASE WHEN $3::bigint < 0 THEN r.errored ELSE $3::bigint END "
                      "WHERE r.task_id = $1 AND r.status IN ('R', 'C')",
                      3, vals, &rows, err);
}

int cc_jobstore_runs_heartbeat(struct cc_jobstore *s, const char *const *task_ids, size_t n,
                               struct cc_err *err)
{
    size_t len, cap;
    char *arr;
    const char *vals[1];
    int rows, rc;

    if (n == 0)
        return CC_OK;
    arr = array_new(&len, &cap);
    for (size_t i = 0; i < n; i++)
        array_add(&arr, &len, &cap, task_ids[i]);
    array_end(&arr, &len, &cap);
    vals[0] = arr;
    rc = run_update(s, "runs heartbeat",
                    "UPDATE celeryc.runs SET heartbeat_at = now() "
                    "WHERE task_id = ANY($1::text[]) AND status IN ('R', 'C')",
                    1, vals, &rows, err);
    free(arr);
    return rc;
}

int cc_jobstore_run_logs_add(struct cc_jobstore *s, const struct cc_run_log *lines, size_t n,
                             struct cc_err *err)
{
    size_t len[4], cap[4];
    char *arr[4];
    int rows, rc;

    if (n == 0)
        return CC_OK;
    for (int k = 0; k < 4; k++)
        arr[k] = array_new(&len[k], &cap[k]);
    for (size_t i = 0; i < n; i++) {
        char ts[24];
        snprintf(ts, sizeof ts, "%" PRId64, lines[i].ts_us);
        array_add(&arr[0], &len[0], &cap[0], ts);
        array_add(&arr[1], &len[1], &cap[1], lines[i].level != NULL ? lines[i].level : "INFO");
        array_add(&arr[2], &len[2], &cap[2], lines[i].message != NULL ? lines[i].message : "");
        array_add(&arr[3], &len[3], &cap[3], lines[i].task_id != NULL ? lines[i].task_id : "");
    }
    for (int k = 0; k < 4; k++)
        array_end(&arr[k], &len[k], &cap[k]);
    {
        const char *vals[4] = {arr[0], arr[1], arr[2], arr[3]};
        rc = run_update(s, "run logs add",
                        "INSERT INTO celeryc.run_logs (run_id, timestamp, level, message, task_id) "
                        "SELECT r.id, ('epoch'::timestamptz + (l.ts)::bigint * interval '1 "
                        "microsecond'), l.level, l.message, l.task_id "
                        "FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) "
                        "WITH ORDINALITY AS l(ts, level, message, task_id, ord) "
                        "JOIN celeryc.runs r ON r.task_id = l.task_id ORDER BY l.ord",
                        4, vals, &rows, err);
    }
    for (int k = 0; k < 4; k++)
        free(arr[k]);
    return rc;
}

int cc_jobstore_run_cancel(struct cc_jobstore *s, const char *id, char task_id[64],
                           char *new_status, struct cc_err *err)
{
    const char *vals[1] = {id};
    PGresult *res;
    int rc;

    if (task_id != NULL)
        task_id[0] = '\0';
    rc = check_uuid(id, "run", err);
    if (rc != CC_OK)
        return rc;
    /* In the SET list `status` is the old value: Q -> X at once, R (and C again) -> C. */
    rc = sql_run(s, "run cancel",
                 "UPDATE celeryc.runs AS r SET "
                 "status = CASE WHEN r.status = 'Q' THEN 'X' ELSE 'C' END, "
                 "finished_at = CASE WHEN r.status = 'Q' THEN now() ELSE r.finished_at END, "
                 "message = CASE WHEN r.status = 'Q' THEN 'cancelled before it started' "
                 "ELSE 'cancelling' END "
                 "WHERE r.id = $1::uuid AND r.status IN ('Q', 'R', 'C') "
                 "RETURNING r.status, r.task_id",
                 1, vals, &res, err);
    if (rc != CC_OK)
        return rc;
    if (PQntuples(res) == 1) {
        if (new_status != NULL)
            *new_status = PQgetvalue(res, 0, 0)[0];
        if (task_id != NULL)
            snprintf(task_id, 64, "%s", PQgetvalue(res, 0, 1));
        PQclear(res);
        return CC_OK;
    }
    PQclear(res);
    rc = run_state_error(s, "id", id, new_status, err);
    return rc;
}

int cc_jobstore_run_get(struct cc_jobstore *s, const char *id, json_t **out, struct cc_err *err)
{
    return get_by_id(s, "run", "SELECT " RUN_JSON " FROM celeryc.runs r WHERE id = $1::uuid", id,
                     out, err);
}

int cc_jobstore_runs_list(struct cc_jobstore *s, const char *job_id, int limit, json_t **out,
                          struct cc_err *err)
{
    char lim[16];
    const char *vals[2] = {job_id, lim};
    int rc;

    *out = NULL;
    if (job_id != NULL) {
        json_t *job = NULL;
        rc = cc_jobstore_job_get(s, job_id, &job, err);
        json_decref(job);
        if (rc != CC_OK)
            return rc;
    }
    snprintf(lim, sizeof lim, "%d", limit > 0 ? limit : 50);
    rc = sql_json_agg(s, "runs list",
                      "SELECT COALESCE(json_agg(r ORDER BY r.created DESC, r.id), '[]') FROM ("
                      "SELECT * FROM celeryc.runs WHERE $1::uuid IS NULL OR job_id = $1::uuid "
                      "ORDER BY created DESC, id LIMIT $2::int) r",
                      2, vals, out, err);
    return rc;
}

int cc_jobstore_run_logs_get(struct cc_jobstore *s, const char *id, int64_t after_id, int limit,
                             json_t **out, struct cc_err *err)
{
    char after[24], lim[16];
    const char *vals[3] = {id, after, lim};
    int rc;

    *out = NULL;
    rc = check_uuid(id, "run", err);
    if (rc != CC_OK)
        return rc;
    snprintf(after, sizeof after, "%" PRId64, after_id);
    snprintf(lim, sizeof lim, "%d", limit > 0 ? limit : 1000);
    rc = sql_json(s, "run logs",
                  "SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM celeryc.runs WHERE id = $1::uuid) "
                  "THEN NULL ELSE (SELECT COALESCE(json_agg(json_build_object('id', l.id, "
                  "'timestamp', l.timestamp, 'level', l.level, 'message', l.message, "
                  "'task_id', l.task_id) ORDER BY l.id), '[]') FROM ("
                  "SELECT * FROM celeryc.run_logs WHERE run_id = $1::uuid AND id > $2::bigint "
                  "ORDER BY id LIMIT $3::int) l) END",
                  3, vals, out, err);
    if (rc == CC_ENOTFOUND)
        rc = cc_err_set(err, CC_ENOTFOUND, "no run %s", id);
    return rc;
}

int cc_jobstore_job_last_success(struct cc_jobstore *s, const char *job_id, int64_t *started_us,
                                 struct cc_err *err)
{
    const char *vals[1] = {job_id};
    PGresult *res;
    int rc;

    *started_us = 0;
    rc = check_uuid(job_id, "job", err);
    if (rc == CC_OK)
        rc = sql_run(s, "job last success",
                     "SELECT (extract(epoch FROM max(started_at)) * 1000000)::bigint "
                     "FROM celeryc.runs WHERE job_id = $1::uuid AND status IN ('S', 'P', 'W')",
                     1, vals, &res, err);
    if (rc != CC_OK)
        return rc;
    if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
        *started_us = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return CC_OK;
}

/* ---- Sweeps ----------------------------------------------------------------------------- */

int cc_jobstore_reap(struct cc_jobstore *s, int timeout_s, int *n, struct cc_err *err)
{
    char t[16];
    const char *vals[1] = {t};
    int rows, rc;

    if (n != NULL)
        *n = 0;
    snprintf(t, sizeof t, "%d", timeout_s > 0 ? timeout_s : 1);
    /* A run that never heartbeat counts from when it started (or was sent / created). */
    rc = run_update(s, "reap",
                    "UPDATE celeryc.runs AS r SET "
                    "status = CASE WHEN r.status = 'R' THEN 'F' ELSE 'X' END, "
                    "finished_at = now(), "
                    "message = CASE WHEN r.status = 'R' THEN format("
                    "'worker %s lost: no heartbeat for %s s', COALESCE(r.hostname, '?'), "
                    "floor(extract(epoch FROM now() - COALESCE(r.heartbeat_at, r.started_at, "
                    "r.sent_at, r.created)))::bigint) "
                    "ELSE COALESCE(r.message, 'cancelled') || ' (worker lost)' END "
                    "WHERE r.status IN ('R', 'C') AND COALESCE(r.heartbeat_at, r.started_at, "
                    "r.sent_at, r.created) < now() - $1::int * interval '1 second'",
                    1, vals, &rows, err);
    if (rc == CC_OK && n != NULL)
        *n = rows;
    return rc;
}

int cc_jobstore_runs_retry(struct cc_jobstore *s, int64_t epoch, const char *lease, json_t **out,
                           struct cc_err *err)
{
    char ep[24];
    const char *vals[2] = {ep, lease};
    PGresult *res = NULL;
    json_error_t jerr;
    int rc;

    *out = NULL;
    if (epoch > 0 && lease == NULL)
        return cc_err_set(err, CC_EINVAL, "fenced write without a lease name");
    snprintf(ep, sizeof ep, "%" PRId64, epoch > 0 ? epoch : 0);
    /* One statement (fenced: FENCE_SQL; see there). One retry per failed run (NOT EXISTS
     * retry_of), within the job's max_attempts; only failures of the last day, so raising
     * max_attempts later does not retry old history. Ids are the server's gen_random_uuid()
     * (a set insert). */
    rc = sql_run(
        s, "runs retry",
        "WITH " FENCE_SQL(
            "$2",
            "$1") ", "
                  "n AS (INSERT INTO celeryc.runs AS r (id, job_id, started_by, task_id, args, "
                  "kwargs, queue, scheduled_for, not_before, attempt, retry_of, epoch) "
                  "SELECT gen_random_uuid(), f.job_id, f.started_by, gen_random_uuid()::text, "
                  "f.args, "
                  "f.kwargs, f.queue, f.scheduled_for, "
                  "COALESCE(f.finished_at, now()) + LEAST("
                  "COALESCE((j.retry_policy->>'max_backoff')::float8, 1e9), "
                  "COALESCE((j.retry_policy->>'backoff')::float8, 0) * "
                  "power(COALESCE((j.retry_policy->>'factor')::float8, 1), f.attempt - 1)) "
                  "* interval '1 second', "
                  "f.attempt + 1, f.id, $1::bigint "
                  "FROM celeryc.runs f JOIN celeryc.jobs j ON j.id = f.job_id "
                  "WHERE EXISTS (SELECT 1 FROM fence) AND f.status = 'F' "
                  "AND f.attempt < COALESCE((j.retry_policy->>'max_attempts')::int, "
                  "1) AND COALESCE(f.finished_at, f.created) > now() - interval '1 day' "
                  "AND NOT EXISTS (SELECT 1 FROM celeryc.runs x WHERE x.retry_of = f.id) "
                  "ON CONFLICT DO NOTHING "
                  "RETURNING " RUN_JSON " AS j, r.created) "
                  "SELECT EXISTS (SELECT 1 FROM fence), "
                  "(SELECT COALESCE(json_agg(j ORDER BY created), '[]') FROM n)",
        2, vals, &res, err);
    if (rc != CC_OK)
        return rc;
    if (PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        rc = fence_lost(lease, epoch, err);
    } else {
        *out = json_loads(PQgetvalue(res, 0, 1), 0, &jerr);
        if (*out == NULL)
            rc = cc_err_set(err, CC_EBACKEND, "job store runs retry: bad JSON from server: %s",
                            jerr.text);
    }
    PQclear(res);
    return rc;
}

/* ---- Lease and entries ------------------------------------------------------------------ */

int cc_jobstore_lease(struct cc_jobstore *s, const char *name, const char *holder, int ttl_ms,
                      int64_t *epoch, bool *is_leader, struct cc_err *err)
{
    char ttl[16];
    const char *vals[3] = {name, holder, ttl};
    PGresult *res = NULL;
    int rc, wait_ms;

    *epoch = 0;
    *is_leader = false;
    if (name == NULL || holder == NULL || holder[0] == '\0')
        return cc_err_set(err, CC_EINVAL, "lease: name and holder are required");
    if (ttl_ms < 1)
        ttl_ms = 1;
    snprintf(ttl, sizeof ttl, "%d", ttl_ms);
    /* Never wait for another session's lock on the lease row for more than a tenth of the
     * lease: a leader stopped inside a fenced write would otherwise hold every standby. */
    wait_ms = ttl_ms / 10 > 10 ? ttl_ms / 10 : 10;
    if (s->lock_timeout_ms > 0 && s->lock_timeout_ms < wait_ms)
        wait_ms = s->lock_timeout_ms;
    rc = store_lock_timeout(s, wait_ms, err);
    if (rc != CC_OK)
        return rc;
    /* Free (no holder), expired, or ours: take it. A new holder increments the epoch; our own
     * renewal keeps it (no one else held the lease in between, or the epoch would differ). */
    rc = sql_run(s, "lease",
                 "INSERT INTO celeryc.leases AS l (name, holder, epoch, expires_at, acquired_at) "
                 "VALUES ($1, $2, 1, now() + $3::int * interval '1 millisecond', now()) "
                 "ON CONFLICT (name) DO UPDATE SET "
                 "epoch = CASE WHEN l.holder = EXCLUDED.holder THEN l.epoch ELSE l.epoch + 1 END, "
                 "acquired_at = CASE WHEN l.holder = EXCLUDED.holder THEN l.acquired_at "
                 "ELSE now() END, "
                 "holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at "
                 "WHERE l.holder IS NULL OR l.holder = EXCLUDED.holder OR l.expires_at < now() "
                 "RETURNING l.epoch",
                 3, vals, &res, err);
    if (rc == CC_ETIMEDOUT)
        cc_err_set(err, CC_ETIMEDOUT,
                   "lease '%.60s' is locked by another session (waited %d ms: a beat stopped "
                   "inside a fenced write?); not taken this time",
                   name, wait_ms);
    if (rc == CC_OK && PQntuples(res) == 1) {
        *epoch = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        *is_leader = true;
    }
    PQclear(res);
    if (rc != CC_EBACKEND && wait_ms != s->lock_timeout_ms) {
        struct cc_err e2 = {0};
        int rc2 = store_lock_timeout(s, s->lock_timeout_ms, &e2);

        if (rc == CC_OK && rc2 != CC_OK) {
            *err = e2;
            rc = rc2;
        }
    }
    return rc;
}

int cc_jobstore_lease_release(struct cc_jobstore *s, const char *name, const char *holder,
                              struct cc_err *err)
{
    const char *vals[2] = {name, holder};
    int rows;

    return run_update(s, "lease release",
                      "UPDATE celeryc.leases SET holder = NULL, expires_at = '-infinity' "
                      "WHERE name = $1 AND holder = $2",
                      2, vals, &rows, err);
}

int cc_jobstore_entry_claim(struct cc_jobstore *s, const char *entry, int64_t slot_us,
                            int64_t epoch, const char *lease, const char *task_id,
                            struct cc_err *err)
{
    char slot[24], ep[24];
    const char *vals[5] = {entry, slot, task_id, ep, lease};
    PGresult *res = NULL;
    int rc;

    if (epoch > 0 && lease == NULL)
        return cc_err_set(err, CC_EINVAL, "fenced write without a lease name");
    snprintf(slot, sizeof slot, "%" PRId64, slot_us);
    snprintf(ep, sizeof ep, "%" PRId64, epoch > 0 ? epoch : 0);
    /* One statement: fence, slot row, entry state (no transaction spans a round trip). */
    rc = sql_run(
        s, "entry claim",
        "WITH " FENCE_SQL(
            "$5",
            "$4") ", "
                  "n AS (INSERT INTO celeryc.entry_slots (name, slot, task_id, epoch) "
                  "SELECT $1::text, ('epoch'::timestamptz + ($2)::bigint * interval '1 "
                  "microsecond'), $3::text, $4::bigint FROM fence "
                  "ON CONFLICT (name, slot) DO NOTHING RETURNING slot), "
                  "e AS (INSERT INTO celeryc.entries AS e (name, last_run_at, total_run_count) "
                  "SELECT $1::text, slot, 1 FROM n ON CONFLICT (name) DO UPDATE SET "
                  "last_run_at = GREATEST(e.last_run_at, EXCLUDED.last_run_at), "
                  "total_run_count = e.total_run_count + 1 RETURNING 1) "
                  "SELECT EXISTS (SELECT 1 FROM fence), (SELECT count(*) FROM n), "
                  "(SELECT count(*) FROM e)",
        5, vals, &res, err);
    if (rc != CC_OK)
        return rc;
    if (PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 0), "t") != 0)
        rc = fence_lost(lease, epoch, err);
    else if (atoi(PQgetvalue(res, 0, 1)) == 0)
        rc = cc_err_set(err, CC_EAGAIN, "exists: %s already dispatched for this slot", entry);
    PQclear(res);
    return rc;
}

int cc_jobstore_entries_state(struct cc_jobstore *s, json_t **out, struct cc_err *err)
{
    return sql_json_agg(s, "entries state",
                        "SELECT COALESCE(json_object_agg(name, json_build_object("
                        "'last_run_at', COALESCE((extract(epoch FROM last_run_at) * 1000000)"
                        "::bigint, 0), 'total_run_count', total_run_count)), '{}') "
                        "FROM celeryc.entries",
                        0, NULL, out, err);
}

/* ---- Notifications ---------------------------------------------------------------------- */

int cc_jobstore_listen(struct cc_jobstore *s, struct cc_err *err)
{
    int rc = sql_run(s, "listen", "LISTEN celeryc_jobs", 0, NULL, NULL, err);

    if (rc == CC_OK)
        rc = sql_run(s, "listen", "LISTEN celeryc_runs", 0, NULL, NULL, err);
    if (rc == CC_OK)
        s->is_listening = true;
    return rc;
}

int cc_jobstore_notifications(struct cc_jobstore *s,
                              void (*fn)(const char *channel, const char *payload, void *arg),
                              void *arg, struct cc_err *err)
{
    PGnotify *nt;
    int count = 0;

    if (PQconsumeInput(s->conn) == 0)
        return store_fail(s, NULL, "notifications", err);
    while ((nt = PQnotifies(s->conn)) != NULL) {
        if (fn != NULL)
            fn(nt->relname, nt->extra, arg);
        PQfreemem(nt);
        count++;
    }
    return count;
}
