/* Postgres result backend: Celery's database backend (db+postgresql://), written the way
 * Celery 5.2.6's DatabaseBackend (SQLAlchemy 1.4) writes it, so that a Python client with
 * result_backend='db+postgresql://...' reads results, states and exceptions unchanged.
 *
 * Tables (created when missing, with the DDL SQLAlchemy's create_all emits for Celery's models,
 * the extended columns included as Celery's TaskExtended adds them to the same table):
 *     CREATE SEQUENCE task_id_sequence START WITH 1
 *     celery_taskmeta (id integer NOT NULL PK, task_id varchar(155) UNIQUE, status
 *       varchar(50), result bytea, date_done timestamp, traceback text, name varchar(155),
 *       args bytea, kwargs bytea, worker varchar(155), retries integer, queue varchar(155))
 *     CREATE SEQUENCE taskset_id_sequence START WITH 1
 *     celery_tasksetmeta (id integer NOT NULL PK, taskset_id varchar(155) UNIQUE, result
 *       bytea, date_done timestamp)
 * `id` has no column default (SQLAlchemy fetches nextval itself): we insert nextval too.
 *
 * One row per task id, updated in place from state to state (STARTED -> SUCCESS), as
 * _store_result does with its SELECT / INSERT / UPDATE. Here it is one statement:
 *     WITH upd AS (UPDATE ... WHERE task_id = $1 RETURNING id)
 *     INSERT ... SELECT nextval('task_id_sequence'), ... WHERE NOT EXISTS (SELECT 1 FROM upd)
 *     ON CONFLICT (task_id) DO UPDATE ...
 * so a second state does not consume a sequence value, and two writers racing on a new task
 * id (a Python and a C worker, a redelivered task) end with one row.
 *
 * Columns from the encoded meta the backend contract hands us (backend.h: the redis JSON):
 *   status, traceback as text; date_done naive UTC (null for non-ready states, as Celery sets
 *   it); result = proto/pickle.c's protocol-2 pickle of the value, exception dicts with
 *   exc_message as a tuple, NULL for None (PickleType binds None as NULL); with result_extended
 * (the meta has "name"): name, args and kwargs as result_serializer (JSON) bytes exactly as
 * Celery's encode() writes them ("[2, 3]"), worker, retries, queue. Without it, the extended
 * columns are not touched (Celery's Task model does not map them). children/group_id/parent_id have
 * no column (as in Celery).
 *
 * Connections: one PGconn per process, opened lazily; a failed statement drops it, so the next
 * attempt reconnects, checks the tables and prepares its statements again. Retries are
 * backend.c's (CC_BACKEND_RETRY_*), as for Redis. A forked child drops the inherited PGconn
 * without a word to the server (pg_after_fork), which would otherwise end the master's
 * session. Notices ("relation already exists, skipping") are not printed.
 *
 * No key-value store: `set` is NULL, so chords whose join needs one (the Redis native join)
 * are Redis-only; celery.chord_unlock reads results from Redis too (see README).
 *
 * Reference: celery-wire.md §3.5, fixtures db-backend-postgres*.json,
 * celery/backends/database/{__init__,models,session}.py.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "backend.h"
#include "log.h"
#include "pickle.h"
#include "url.h"
#include "util.h"

#define PG_VARCHAR_MAX  155 /* celery_taskmeta's String(155) columns */
#define PG_SCHEMA_TRIES 5   /* Celery's prepare_models retries a racing create_all, too */

/* Postgres type oids for PQprepare. */
#define PG_OID_BYTEA     17
#define PG_OID_INT4      23
#define PG_OID_TEXT      25
#define PG_OID_TIMESTAMP 1114

struct pg_backend {
    struct cc_backend base; /* first: the ops table casts */
    char *conninfo;         /* the libpq URI (db+ and +driver removed) */
    PGconn *conn;
};

/* ---- URL ----------------------------------------------------------------------------- */

int cc_backend_pg_conninfo(const char *url, char *buf, size_t size)
{
    const char *rest, *sep;
    size_t scheme_len;
    int n;

    if (url == NULL || strncmp(url, "db+", 3) != 0)
        return -1;
    rest = url + 3;
    sep = strstr(rest, "://");
    if (sep == NULL)
        return -1;
    /* SQLAlchemy's dialect[+driver]: postgresql, postgres, postgresql+psycopg2, ... */
    scheme_len = strcspn(rest, "+:");
    if (scheme_len > (size_t)(sep - rest))
        return -1;
    if (!((scheme_len == 10 && strncmp(rest, "postgresql", 10) == 0) ||
          (scheme_len == 8 && strncmp(rest, "postgres", 8) == 0)))
        return -1;
    n = snprintf(buf, size, "postgresql%s", sep);
    return (n < 0 || (size_t)n >= size) ? -1 : n;
}

/* ---- Connection ------------------------------------------------------------------------ */

static void pg_quiet_notice(void *arg, const char *message)
{
    (void)arg;
    cc_debug("result backend (postgres): %s", message);
}

static void pg_drop(struct pg_backend *pb)
{
    if (pb->conn != NULL)
        PQfinish(pb->conn);
    pb->conn = NULL;
}

/* Run a command that returns no rows; CC_OK or CC_EBACKEND with the server's message. */
static int pg_command(PGconn *c, const char *sql, struct cc_err *err)
{
    PGresult *res = PQexec(c, sql);
    int rc = CC_OK;

    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
        rc = cc_err_set(err, CC_EBACKEND, "postgres: %s", PQerrorMessage(c));
    PQclear(res);
    return rc;
}

/* True when every table and sequence Celery's models declare is there. */
static int pg_schema_present(PGconn *c, bool *is_present, struct cc_err *err)
{
    PGresult *res = PQexec(c, "SELECT to_regclass('celery_taskmeta') IS NOT NULL AND "
                              "to_regclass('celery_tasksetmeta') IS NOT NULL AND "
                              "to_regclass('task_id_sequence') IS NOT NULL AND "
                              "to_regclass('taskset_id_sequence') IS NOT NULL");
    int rc = CC_OK;

    *is_present = false;
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        rc = cc_err_set(err, CC_EBACKEND, "postgres: %s", PQerrorMessage(c));
    else
        *is_present = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    return rc;
}

/* SQLAlchemy 1.4's create_all for Celery's Task, TaskExtended and TaskSet models (checked
 * with echo=True), made idempotent: IF NOT EXISTS, in one transaction. The advisory lock
 * serialises our own processes; a Python worker's create_all racing with us may still make
 * one side fail (unique violation in pg_type), so the caller retries, as Celery does. */
static const char pg_ddl[] = "BEGIN;"
                             "SELECT pg_advisory_xact_lock(7403125612946102);"
                             "CREATE SEQUENCE IF NOT EXISTS task_id_sequence START WITH 1;"
                             "CREATE TABLE IF NOT EXISTS celery_taskmeta ("
                             " id INTEGER NOT NULL,"
                             " task_id VARCHAR(155),"
                             " status VARCHAR(50),"
                             " result BYTEA,"
                             " date_done TIMESTAMP WITHOUT TIME ZONE,"
                             " traceback TEXT,"
                             " name VARCHAR(155),"
                             " args BYTEA,"
                             " kwargs BYTEA,"
                             " worker VARCHAR(155),"
                             " retries INTEGER,"
                             " queue VARCHAR(155),"
                             " PRIMARY KEY (id),"
                             " UNIQUE (task_id));"
                             "CREATE SEQUENCE IF NOT EXISTS taskset_id_sequence START WITH 1;"
                             "CREATE TABLE IF NOT EXISTS celery_tasksetmeta ("
                             " id INTEGER NOT NULL,"
                             " taskset_id VARCHAR(155),"
                             " result BYTEA,"
                             " date_done TIMESTAMP WITHOUT TIME ZONE,"
                             " PRIMARY KEY (id),"
                             " UNIQUE (taskset_id));"
                             "COMMIT;";

/* The store statement, with and without the result_extended columns. The UPDATE comes
 * first so an existing row keeps its id (Celery updates in place); the INSERT runs only when
 * it matched nothing, and ON CONFLICT covers a writer that inserted in between. */
#define PG_COLS_BASE "status = $2, result = $3, date_done = $4, traceback = $5"
#define PG_COLS_EXT                                                                                \
    PG_COLS_BASE ", name = $6, args = $7, kwargs = $8, worker = $9, retries = $10, queue = $11"
#define PG_EXCL_BASE                                                                               \
    "status = EXCLUDED.status, result = EXCLUDED.result, date_done = EXCLUDED.date_done, "         \
    "traceback = EXCLUDED.traceback"
#define PG_EXCL_EXT                                                                                \
    PG_EXCL_BASE ", name = EXCLUDED.name, args = EXCLUDED.args, kwargs = EXCLUDED.kwargs, "        \
                 "worker = EXCLUDED.worker, retries = EXCLUDED.retries, queue = EXCLUDED.queue"

static const char pg_store_sql[] =
    "WITH upd AS (UPDATE celery_taskmeta SET " PG_COLS_BASE " WHERE task_id = $1 RETURNING id) "
    "INSERT INTO celery_taskmeta (id, task_id, status, result, date_done, traceback) "
    "SELECT nextval('task_id_sequence'), $1, $2, $3, $4, $5 WHERE NOT EXISTS (SELECT 1 FROM upd) "
    "ON CONFLICT (task_id) DO UPDATE SET " PG_EXCL_BASE;

static const char pg_store_ext_sql[] =
    "WITH upd AS (UPDATE celery_taskmeta SET " PG_COLS_EXT " WHERE task_id = $1 RETURNING id) "
    "INSERT INTO celery_taskmeta (id, task_id, status, result, date_done, traceback, name, args, "
    "kwargs, worker, retries, queue) "
    "SELECT nextval('task_id_sequence'), $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 "
    "WHERE NOT EXISTS (SELECT 1 FROM upd) "
    "ON CONFLICT (task_id) DO UPDATE SET " PG_EXCL_EXT;

static const Oid pg_store_types[11] = {
    PG_OID_TEXT,  PG_OID_TEXT,  PG_OID_BYTEA, PG_OID_TIMESTAMP, PG_OID_TEXT, PG_OID_TEXT,
    PG_OID_BYTEA, PG_OID_BYTEA, PG_OID_TEXT,  PG_OID_INT4,      PG_OID_TEXT,
};

static int pg_prepare(PGconn *c, const char *name, const char *sql, int n, struct cc_err *err)
{
    PGresult *res = PQprepare(c, name, sql, n, pg_store_types);
    int rc = CC_OK;

    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        rc = cc_err_set(err, CC_EBACKEND, "postgres: prepare: %s", PQerrorMessage(c));
    PQclear(res);
    return rc;
}

static void pg_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* Connect, create the tables if missing, prepare the statements. CC_OK or CC_EBACKEND with
 * no connection kept. */
static int pg_connect(struct pg_backend *pb, struct cc_err *err)
{
    /* Ours first: a setting in the URL (later, expanded from dbname) overrides them. A dead
     * peer is noticed by TCP (keepalives, tcp_user_timeout) rather than blocking a store. */
    const char *keys[] = {
        "connect_timeout",  "application_name", "keepalives_idle", "keepalives_interval",
        "keepalives_count", "tcp_user_timeout", "dbname",          NULL};
    const char *vals[] = {"5", "celeryc", "10", "5", "3", "30000", pb->conninfo, NULL};
    bool is_present = false;
    int rc;

    pg_drop(pb);
    pb->conn = PQconnectdbParams(keys, vals, 1);
    if (pb->conn == NULL)
        return cc_err_set(err, CC_EBACKEND, "postgres: out of memory");
    if (PQstatus(pb->conn) != CONNECTION_OK) {
        /* Whole, hint lines folded onto the line (cc_err_set). */
        rc = cc_err_set(err, CC_EBACKEND, "postgres connect: %s", PQerrorMessage(pb->conn));
        goto out;
    }
    PQsetNoticeProcessor(pb->conn, pg_quiet_notice, NULL);
    for (int i = 0; i < PG_SCHEMA_TRIES; i++) {
        rc = pg_schema_present(pb->conn, &is_present, err);
        if (rc != CC_OK || is_present)
            break;
        rc = pg_command(pb->conn, pg_ddl, err);
        if (rc == CC_OK)
            break;
        cc_debug("result backend: creating Celery's tables: %s", err->msg);
        (void)pg_command(pb->conn, "ROLLBACK", err);
        if (PQstatus(pb->conn) != CONNECTION_OK)
            break;
        pg_sleep_ms(10L << i);
    }
    if (rc != CC_OK)
        goto out;
    rc = pg_prepare(pb->conn, "cc_jobstore", pg_store_sql, 5, err);
    if (rc == CC_OK)
        rc = pg_prepare(pb->conn, "cc_jobstore_ext", pg_store_ext_sql, 11, err);
out:
    if (rc != CC_OK) {
        /* err->msg ends with libpq's newline; keep one line in logs */
        err->msg[strcspn(err->msg, "\n")] = '\0';
        pg_drop(pb);
    }
    return rc;
}

/* ---- Store ----------------------------------------------------------------------------- */

/* s cut to at most `max` characters (UTF-8), as varchar(n) counts them. Owned. */
static char *pg_truncate(const char *s, size_t max)
{
    size_t i = 0, chars = 0;

    while (s[i] != '\0' && chars < max) {
        i++;
        while ((s[i] & 0xc0) == 0x80)
            i++;
        chars++;
    }
    return strndup(s, i);
}

static size_t pg_utf8_chars(const char *s)
{
    size_t n = 0;

    for (; *s; s++)
        n += (*s & 0xc0) != 0x80;
    return n;
}

static const char *pg_meta_str(const json_t *meta, const char *key)
{
    return json_string_value(json_object_get(meta, key));
}

static int pg_store(struct cc_backend *b, const char *task_id, const char *meta_text, size_t len,
                    struct cc_err *out_err)
{
    struct pg_backend *pb = (struct pg_backend *)b;
    struct cc_err lerr = {0}, *err = &lerr; /* the messages below are built in place */
    json_error_t jerr;
    json_t *meta = json_loadb(meta_text, len, 0, &jerr);
    const char *status;
    const json_t *jv;
    const char *vals[11] = {0};
    int lens[11] = {0}, fmts[11] = {0};
    char *pickled = NULL, *args = NULL, *kwargs = NULL, *name = NULL, *worker = NULL;
    char *queue = NULL, retries[24];
    size_t pickled_len = 0;
    bool is_ext;
    PGresult *res = NULL;
    int rc;

    if (meta == NULL) {
        rc = cc_err_set(err, CC_EINVAL, "result meta is not JSON: %s", jerr.text);
        goto out;
    }
    if (pg_utf8_chars(task_id) > PG_VARCHAR_MAX) {
        rc = cc_err_set(err, CC_EINVAL, "task id longer than %d characters (celery_taskmeta)",
                        PG_VARCHAR_MAX);
        goto drop;
    }
    status = pg_meta_str(meta, "status");
    jv = json_object_get(meta, "result");
    /* SQLAlchemy's PickleType binds None as NULL, not as a pickle of None. */
    if (jv != NULL && !json_is_null(jv)) {
        rc = cc_pickle_result(status, jv, &pickled, &pickled_len, err);
        if (rc == CC_ERANGE)
            goto drop;
        if (rc != CC_OK)
            goto out;
    }
    vals[0] = task_id;
    vals[1] = status;
    vals[2] = pickled;
    lens[2] = (int)pickled_len;
    fmts[2] = 1;
    vals[3] = pg_meta_str(meta, "date_done"); /* ISO text; NULL -> SQL NULL */
    vals[4] = pg_meta_str(meta, "traceback");
    is_ext = json_object_get(meta, "name") != NULL;
    if (is_ext) {
        if (pg_meta_str(meta, "name") != NULL)
            vals[5] = name = pg_truncate(pg_meta_str(meta, "name"), PG_VARCHAR_MAX);
        /* Celery: ensure_bytes(self.encode(request.args)): json.dumps bytes, null as None. */
        if ((jv = json_object_get(meta, "args")) != NULL && !json_is_null(jv)) {
            vals[6] = args = cc_result_json_dumps(jv);
            lens[6] = args ? (int)strlen(args) : 0;
            fmts[6] = 1;
        }
        if ((jv = json_object_get(meta, "kwargs")) != NULL && !json_is_null(jv)) {
            vals[7] = kwargs = cc_result_json_dumps(jv);
            lens[7] = kwargs ? (int)strlen(kwargs) : 0;
            fmts[7] = 1;
        }
        if (pg_meta_str(meta, "worker") != NULL)
            vals[8] = worker = pg_truncate(pg_meta_str(meta, "worker"), PG_VARCHAR_MAX);
        if (json_is_integer(jv = json_object_get(meta, "retries"))) {
            snprintf(retries, sizeof(retries), "%lld", (long long)json_integer_value(jv));
            vals[9] = retries;
        }
        if (pg_meta_str(meta, "queue") != NULL)
            vals[10] = queue = pg_truncate(pg_meta_str(meta, "queue"), PG_VARCHAR_MAX);
    }
    if (pb->conn == NULL && (rc = pg_connect(pb, err)) != CC_OK)
        goto out;
    res = PQexecPrepared(pb->conn, is_ext ? "cc_jobstore_ext" : "cc_jobstore", is_ext ? 11 : 5,
                         vals, lens, fmts, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

        rc = cc_err_set(err, CC_EBACKEND, "postgres: %s%s%s%s", state ? "[" : "",
                        state ? state : "", state ? "] " : "", PQerrorMessage(pb->conn));
        /* Whatever it was (connection lost, tables dropped, a server restart), the next
         * attempt starts on a new connection that checks the tables and prepares again. */
        pg_drop(pb);
    }
    goto out;
drop:
    /* This result can never be stored (retrying, or requeueing an acks_late message, would
     * loop forever): say so once and carry on, as for any task whose result is lost. */
    cc_error("Task [%s]: result not stored in Postgres: %s", cc_log_str(task_id), err->msg);
    rc = CC_OK;
out:
    PQclear(res);
    json_decref(meta);
    free(pickled);
    free(args);
    free(kwargs);
    free(name);
    free(worker);
    free(queue);
    if (rc != CC_OK && out_err != NULL)
        *out_err = lerr;
    return rc;
}

/* ---- Fork, lifetime -------------------------------------------------------------------- */

static void pg_after_fork(struct cc_backend *b)
{
    struct pg_backend *pb = (struct pg_backend *)b;
    int fd, nul;

    if (pb->conn == NULL)
        return;
    /* PQfinish sends a Terminate message, which would end the master's session on the socket
     * we share. Point our descriptor at /dev/null first: the goodbye goes nowhere, the
     * memory is freed, and the master's connection is untouched. */
    fd = PQsocket(pb->conn);
    nul = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (fd >= 0 && nul >= 0) {
        (void)dup2(nul, fd);
        PQfinish(pb->conn);
    } /* else: leak the PGconn rather than close the master's session */
    if (nul >= 0)
        close(nul);
    pb->conn = NULL;
}

static void pg_destroy(struct cc_backend *b)
{
    struct pg_backend *pb = (struct pg_backend *)b;

    if (pb == NULL)
        return;
    pg_drop(pb);
    free(pb->conninfo);
    free(pb);
}

static const struct cc_backend_ops pg_ops = {
    .name = "postgres",
    .store = pg_store,
    .set = NULL, /* no key-value store: chords need Redis */
    .after_fork = pg_after_fork,
    .destroy = pg_destroy,
};

int cc_backend_pg_check_url(const char *url, struct cc_err *err)
{
    size_t size = strlen(url) + 16;
    char *conninfo = cc_xcalloc(1, size), *perr = NULL;
    PQconninfoOption *opts = NULL;
    int rc = CC_OK;

    if (cc_backend_pg_conninfo(url, conninfo, size) < 0) {
        char *m = cc_url_redact(url); /* [issue 14] never a password in an error */

        rc = cc_err_set(err, CC_EURL, "unsupported database backend '%.60s' (use db+postgresql://)",
                        m);
        free(m);
        goto out;
    }
    opts = PQconninfoParse(conninfo, &perr);
    if (opts == NULL) {
        rc = cc_err_set(err, CC_EURL, "result backend URL: %s", perr ? perr : "invalid");
        err->msg[strcspn(err->msg, "\n")] = '\0';
    }
out:
    PQconninfoFree(opts);
    PQfreemem(perr);
    free(conninfo);
    return rc;
}

int cc_backend_pg_new(const char *url, int64_t expires_s, struct cc_backend **out,
                      struct cc_err *err)
{
    struct pg_backend *pb;
    struct cc_err cerr = {0};
    size_t size = strlen(url) + 16;
    int rc;

    *out = NULL;
    if ((rc = cc_backend_pg_check_url(url, err)) != CC_OK)
        return rc;
    pb = cc_xcalloc(1, sizeof(*pb));
    pb->base.ops = &pg_ops;
    pb->base.expires_s = expires_s;
    pb->conninfo = cc_xcalloc(1, size);
    (void)cc_backend_pg_conninfo(url, pb->conninfo, size);
    /* Connect now (and create the tables) so a wrong address or missing rights show up in
     * the start-up log; stores reconnect anyway. */
    if (pg_connect(pb, &cerr) != CC_OK)
        cc_warn("result backend not reachable yet: %s", cerr.msg);
    *out = &pb->base;
    return CC_OK;
}
