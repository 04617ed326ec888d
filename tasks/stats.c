/* Statistics indexers (issue #7): usage events from a queue to idempotent per-day aggregates
 * in Postgres, with nothing lost. docs/STATS.md is the user-facing page; proto/statsevent.h
 * is the event codec (shape, identity, robots); migration 2 of src/jobs/jobstore_schema.c has the
 * tables.
 *
 *   stats.index_events(event_type, batch_size=100000, commit_every=5000,
 *                      double_click_window=30, salt_retention_days=30, exchange="events",
 *                      queue=None, database=None, robots_file=None, idle_timeout=1.0,
 *                      since=None)
 *       Drains up to batch_size events of one type from its queue (default
 *       "stats-<event_type>", bound to the direct exchange `exchange` with routing key
 *       event_type) into celeryc.stats_events, and adds them to celeryc.stats_daily (count
 *       and unique visitors per type, object and UTC day). database None: the worker's
 *       job_store (ValueError when there is none). robots_file None: the list compiled in
 *       (deploy/stats/robots.txt). A run stops after batch_size events, when the queue is
 *       drained (the depth seen at the start was read and nothing came for idle_timeout
 *       seconds; before that depth is reached, for max(idle_timeout, 5) seconds), or at the
 *       soft time limit (what was read is committed, the result returned as usual).
 *       Returns (and stores as the job run's summary) {"event_type", "queue", "read",
 *       "inserted", "duplicates", "robots", "errors", "dead_lettered", "chunks",
 *       "aggregated_keys", "bookmark", "queue_depth_before", "queue_depth_after",
 *       "oldest_age_s", "backlog_age_s", "elapsed_s", "events_per_s"}: read = inserted +
 *       duplicates + errors; robots are among the inserted (stored, flagged, never
 *       aggregated); errors are the malformed events, all dead-lettered; aggregated_keys
 *       counts the (object, day) upserts summed over the chunks; bookmark is the type's
 *       last_seq after the run; elapsed_s the whole run; events_per_s the events committed
 *       per second from the start to the last commit (the final idle wait excluded);
 *       oldest_age_s is now - the timestamp of the first event read
 *       (null: none read), backlog_age_s the same for the event at the head of the queue
 *       after the run (null: queue empty). Malformed events (bad JSON, missing fields, another
 *       type, older than the salt retention, more than a day in the future) make the run P
 *       ("3 of 1000 events malformed, moved to stats-x.dead"); a Postgres or broker failure
 *       raises RuntimeError (run F).
 *   stats.reaggregate(event_type, start, end=None, database=None, since=None)
 *       Rebuilds the aggregates of the days start..end (inclusive, "YYYY-MM-DD", end None =
 *       start) from the raw events, in one transaction holding the type's bookmark row lock:
 *       the result equals what the incremental path computed. Returns {"event_type",
 *       "start", "end", "keys", "events"}.
 * `since` is the job run argument the beat adds; both tasks ignore it.
 *
 * Design of a run of stats.index_events. Its own AMQP connection (the worker's broker_url,
 * TLS options and heartbeat), opened per run and closed at the end; its own libpq
 * connection. The topology is declared as the emitter declares it (exchange durable direct,
 * queues durable without arguments, "<queue>.dead" for malformed events); the queue is
 * consumed with manual acks and a prefetch of min(2 * commit_every, 65535, events left)
 * (per consumer: basic.qos global=false, cheaper for RabbitMQ than a channel-wide limit)
 * (commit_every is lowered to 32767 so that two chunks fit in the window). Each event is
 * parsed, checked and hashed as it arrives and appended to the chunk's binary arrays; no
 * SQL runs per event. Every commit_every events (and at the end) the chunk is written in
 * one transaction, sent in one round trip (libpq pipeline mode):
 *   BEGIN; bookmark row created if missing and locked FOR UPDATE (indexers of one type
 *   serialise here, so the seq order of a type is its commit order); one INSERT of the
 *   whole chunk (binary arrays through unnest) ON CONFLICT (event_id) DO NOTHING whose
 *   RETURNING rows feed, in the same statement, the new unique visitors
 *   (stats_daily_visitors ON CONFLICT DO NOTHING), the stats_daily upserts and the new
 *   bookmark (max seq); COMMIT; then basic.ack(last tag of the chunk, multiple).
 * The next chunk is read while Postgres works on the previous one; its results are picked
 * up between deliveries and its ack sent as soon as its COMMIT is seen. One transaction at
 * most is in flight (the next one is sent after it landed), so the multiple acks go out in
 * chunk order and never cover an uncommitted chunk.
 * Malformed events are published unchanged to "<queue>.dead" on a second, confirm-mode
 * connection (headers x-celeryc-error, x-celeryc-run-id, x-celeryc-queue) as they are met,
 * and the chunk waits for their confirms before its COMMIT. Day salts are fetched on the
 * first event of a day (INSERT .. ON CONFLICT DO NOTHING of a fresh getrandom() salt, then
 * SELECT; own statements, committed) and cached for the run; salts older than the retention
 * are deleted at the start of a run (use one salt_retention_days for every type).
 *
 * Invariants and guarantees:
 * - Nothing is acked before the COMMIT that holds it (or before the confirm of its
 *   dead-letter copy): a crash or kill -9 at any point leaves the unacked events in the
 *   queue, redelivered to the next run; what was committed is deduplicated by event_id,
 *   so it is counted once. A dead-letter copy may repeat (at-least-once).
 * - Every raw event of the type with seq <= bookmark is in the aggregates: the events and
 *   the bookmark move in one transaction under the bookmark row lock, so the rows of the
 *   type with seq > last_seq are exactly the rows this transaction inserts (the sequence is
 *   not cached per session), which is why the aggregation reads them from the INSERT's
 *   RETURNING instead of scanning stats_events (whose BRIN index on seq would make every
 *   chunk read the whole unsummarised tail of the table).
 * - Robots are stored (robot = true) and never aggregated; stats.reaggregate reads the
 *   same rows (seq <= last_seq, NOT robot) so it reproduces the numbers exactly.
 * - Every wait is bounded: broker RPCs (30 s), confirms (CC_BROKER_SYNC_TIMEOUT_MS),
 *   idle waits, Postgres statements (statement_timeout 300 s, lock_timeout 60 s; the
 *   client gives up after STATS_PG_WAIT_S and sends AMQP heartbeats while it waits). The
 *   soft time limit is polled between deliveries and at least every STATS_SLICE_MS.
 * - A Postgres or broker failure fails the run at once, with nothing more acked: committed
 *   chunks stay, the rest goes back to the queue when the connection closes.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <libpq-fe.h>

#include "broker.h"
#include "config.h"
#include "pyops.h"
#include "statsevent.h"
#include "taskrun.h"
#include "tasks.h"
#include "util.h"

#define STATS_US_PER_DAY    86400000000LL
#define STATS_PG_EPOCH_US   946684800000000LL /* 2000-01-01 in Unix µs */
#define STATS_PG_EPOCH_DAYS 10957             /* 2000-01-01 in Unix days */
#define STATS_WARN_FIRST    20                /* malformed events logged one by one */
#define STATS_SLICE_MS      250               /* longest poll: the soft limit is seen */
#define STATS_UNDRAINED_MS  5000              /* idle wait before depth_before is read */
#define STATS_TYPE_MAX      100
#define STATS_CHUNK_MAX     32767 /* half the largest AMQP prefetch */
#define STATS_PG_WAIT_S     330   /* statement_timeout and a margin */
#define STATS_ROBOTS_MAX    (1 << 20)
#define STATS_PG_SETUP                                                                             \
    "SET TIME ZONE 'UTC'; SET statement_timeout = '300s'; "                                        \
    "SET lock_timeout = '60s'"

/* PG type oids for the binary parameters. */
#define OID_BOOL      16
#define OID_BYTEA     17
#define OID_TEXT      25
#define OID_BOOL_ARR  1000
#define OID_BYTEA_ARR 1001
#define OID_TEXT_ARR  1009
#define OID_DATE      1082
#define OID_DATE_ARR  1182
#define OID_TSTZ      1184
#define OID_TSTZ_ARR  1185

/* ---- Binary array parameters ---------------------------------------------------------- */

/* A one-dimensional Postgres array in binary send format, built element by element:
 * header (ndim 1, no nulls, element oid, length, lower bound 1), then (int32 len, bytes)
 * per element. The length is written when the array is finished. */
struct stats_arr {
    uint8_t *p;
    size_t len, cap;
    uint32_t n;
    uint32_t oid;
};

static void arr_reserve(struct stats_arr *a, size_t more)
{
    if (a->len + more <= a->cap)
        return;
    size_t cap = a->cap ? a->cap : 4096;
    while (cap < a->len + more)
        cap *= 2;
    a->p = cc_xrealloc(a->p, cap);
    a->cap = cap;
}

static void arr_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void arr_reset(struct stats_arr *a, uint32_t oid)
{
    arr_reserve(a, 20);
    a->oid = oid;
    a->n = 0;
    a->len = 20; /* header, filled by arr_finish */
}

static void arr_put(struct stats_arr *a, const void *data, size_t n)
{
    arr_reserve(a, 4 + n);
    arr_be32(a->p + a->len, (uint32_t)n);
    memcpy(a->p + a->len + 4, data, n);
    a->len += 4 + n;
    a->n++;
}

static void arr_put_i64(struct stats_arr *a, int64_t v)
{
    uint8_t b[8];

    arr_be32(b, (uint32_t)((uint64_t)v >> 32));
    arr_be32(b + 4, (uint32_t)v);
    arr_put(a, b, 8);
}

static void arr_put_i32(struct stats_arr *a, int32_t v)
{
    uint8_t b[4];

    arr_be32(b, (uint32_t)v);
    arr_put(a, b, 4);
}

static void arr_finish(struct stats_arr *a)
{
    arr_be32(a->p, 1);
    arr_be32(a->p + 4, 0);
    arr_be32(a->p + 8, a->oid);
    arr_be32(a->p + 12, a->n);
    arr_be32(a->p + 16, 1);
}

static void arr_free(struct stats_arr *a)
{
    free(a->p);
    memset(a, 0, sizeof *a);
}

/* ---- The run's state -------------------------------------------------------------------- */

struct stats_salt {
    int32_t day;
    uint8_t salt[CC_STATSEVENT_SALT_LEN];
};

struct stats_run {
    struct cc_task_ctx *ctx;
    /* arguments */
    const char *type, *exchange, *db_url;
    char *queue, *dead; /* owned */
    int64_t batch_size, commit_every, window_s, retention_days;
    double idle_timeout_s;
    struct cc_statsevent_robots *robots;
    bool is_robots_owned;
    /* connections */
    const struct cc_config *cfg;
    struct cc_broker_tls tls;
    PGconn *pg;
    struct cc_broker amqp;
    struct cc_broker dlq;
    bool has_dlq;
    /* salts of the days seen in this run */
    struct stats_salt *salts;
    size_t n_salts, cap_salts;
    /* the chunk being read */
    struct stats_arr ids, objs, ts, days, visitors, bots;
    int64_t chunk_read;
    uint64_t chunk_last_tag;
    uint64_t dlq_seq_needed; /* confirms to wait for before this chunk's COMMIT */
    struct cc_statsevent ev;
    /* counters */
    int64_t read, inserted, duplicates, robots_n, errors, dead_lettered, chunks, keys;
    int64_t committed; /* events read and acked (in committed chunks) */
    /* the chunk whose transaction is in flight (stats_fly), at most one */
    bool is_flying;
    int fly_q;        /* statement whose results come next (stats_fly_what) */
    uint64_t fly_tag; /* its last delivery tag */
    int64_t fly_read, fly_events, fly_valid, fly_t0;
    int64_t fly_last_seq, fly_ins, fly_bots, fly_keys, fly_bookmark;
    int64_t hb_sent_us;              /* last heartbeat sent by stats_heartbeat */
    int64_t db_us, wait_us, take_us; /* time in chunk transactions, idle waits, events */
    int64_t bookmark, depth_before, depth_after;
    double oldest_age_s, backlog_age_s; /* < 0: none */
    bool is_started_logged;
    int64_t t0_mono_us;
    int64_t last_commit_us; /* when the last chunk was acked */
    int64_t now_us;
    int32_t min_day; /* oldest accepted day */
};

/* ---- Postgres ------------------------------------------------------------------------- */

static int pg_fail(struct stats_run *r, const PGresult *res, const char *what, struct cc_err *err)
{
    const char *msg = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;

    if (msg == NULL)
        msg = r->pg != NULL ? PQerrorMessage(r->pg) : "out of memory";
    /* Whole: cc_err_set folds libpq's hint lines and marks what does not fit. */
    return cc_err_set(err, CC_EBACKEND, "database %s: %s", what,
                      msg != NULL && msg[0] != '\0' ? msg : "unknown error");
}

/* Run `sql` (text or binary parameters as given); *out (may be NULL) gets a result with
 * rows, to PQclear. */
static int pg_exec(struct stats_run *r, const char *what, const char *sql, int n, const Oid *types,
                   const char *const *vals, const int *lens, const int *fmts, PGresult **out,
                   struct cc_err *err)
{
    PGresult *res = PQexecParams(r->pg, sql, n, types, vals, lens, fmts, 0);
    ExecStatusType st = PQresultStatus(res);
    int rc = CC_OK;

    if (out != NULL)
        *out = NULL;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        rc = pg_fail(r, res, what, err);
        PQclear(res);
        return rc;
    }
    if (out != NULL)
        *out = res;
    else
        PQclear(res);
    return CC_OK;
}

static int pg_open(struct stats_run *r, struct cc_err *err)
{
    const char *url = r->db_url;
    const char *keys[] = {"dbname",
                          "connect_timeout",
                          "application_name",
                          "keepalives_idle",
                          "keepalives_interval",
                          "keepalives_count",
                          NULL};
    const char *vals[] = {NULL, "10", "celeryc stats", "30", "10", "3", NULL};
    PGresult *res;
    int rc = CC_OK;

    if (strncmp(url, "db+", 3) == 0)
        url += 3;
    vals[0] = url;
    r->pg = PQconnectdbParams(keys, vals, 1);
    if (r->pg == NULL || PQstatus(r->pg) != CONNECTION_OK)
        return pg_fail(r, NULL, "connect", err);
    res = PQexec(r->pg, STATS_PG_SETUP);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        rc = pg_fail(r, res, "session setup", err);
    PQclear(res);
    return rc;
}

static void pg_close(struct stats_run *r)
{
    if (r->pg != NULL)
        PQfinish(r->pg);
    r->pg = NULL;
}

/* Delete salts past the retention: from then on no visitor hash of those days can be
 * recomputed by anyone (the anonymisation guarantee). */
static int pg_expire_salts(struct stats_run *r, struct cc_err *err)
{
    char day[16];
    const char *vals[1] = {day};

    snprintf(day, sizeof day, "%d", (int)r->min_day);
    return pg_exec(r, "deleting expired salts",
                   "DELETE FROM celeryc.stats_salts WHERE day < 'epoch'::date + $1::int", 1, NULL,
                   vals, NULL, NULL, NULL, err);
}

/* The salt of `day` (days since the epoch): from the run's cache, else created if missing
 * and read back (two committed statements, so concurrent indexers agree on one salt). */
static int stats_land(struct stats_run *r, struct cc_err *err);

static int stats_salt(struct stats_run *r, int32_t day, const uint8_t **salt, struct cc_err *err)
{
    uint8_t fresh[CC_STATSEVENT_SALT_LEN];
    char dbuf[16];
    const char *vals[2];
    int lens[2], fmts[2] = {0, 1};
    PGresult *res = NULL;
    int rc;

    for (size_t i = 0; i < r->n_salts; i++)
        if (r->salts[i].day == day) {
            *salt = r->salts[i].salt;
            return CC_OK;
        }
    if ((rc = stats_land(r, err)) != CC_OK) /* the connection must be idle */
        return rc;
    if (getrandom(fresh, sizeof fresh, 0) != (ssize_t)sizeof fresh)
        return cc_err_set(err, CC_EIO, "getrandom: %s", strerror(errno));
    snprintf(dbuf, sizeof dbuf, "%d", (int)day);
    vals[0] = dbuf;
    lens[0] = 0;
    vals[1] = (const char *)fresh;
    lens[1] = (int)sizeof fresh;
    rc = pg_exec(r, "creating a day salt",
                 "INSERT INTO celeryc.stats_salts (day, salt) "
                 "VALUES ('epoch'::date + $1::int, $2::bytea) ON CONFLICT (day) DO NOTHING",
                 2, NULL, vals, lens, fmts, NULL, err);
    if (rc != CC_OK)
        return rc;
    rc = pg_exec(r, "reading a day salt",
                 "SELECT encode(salt, 'hex') FROM celeryc.stats_salts "
                 "WHERE day = 'epoch'::date + $1::int",
                 1, NULL, vals, NULL, NULL, &res, err);
    if (rc != CC_OK)
        return rc;
    if (PQntuples(res) != 1 || PQgetlength(res, 0, 0) != 2 * CC_STATSEVENT_SALT_LEN) {
        PQclear(res);
        return cc_err_set(err, CC_EBACKEND,
                          "database: the salt of day %d is missing or not "
                          "%d bytes",
                          (int)day, CC_STATSEVENT_SALT_LEN);
    }
    if (r->n_salts == r->cap_salts) {
        r->cap_salts = r->cap_salts ? 2 * r->cap_salts : 8;
        r->salts = cc_xrealloc(r->salts, r->cap_salts * sizeof *r->salts);
    }
    {
        struct stats_salt *s = &r->salts[r->n_salts++];
        const char *hex = PQgetvalue(res, 0, 0);

        s->day = day;
        for (int i = 0; i < CC_STATSEVENT_SALT_LEN; i++) {
            unsigned v;

            (void)sscanf(hex + 2 * i, "%2x", &v);
            s->salt[i] = (uint8_t)v;
        }
        *salt = s->salt;
    }
    PQclear(res);
    return CC_OK;
}

/* The chunk's transaction (see the file comment). Called with at least one valid event. */
static const char stats_chunk_sql[] =
    "WITH ins AS (\n"
    "  INSERT INTO celeryc.stats_events\n"
    "         (event_id, event_type, object_id, ts, day, visitor, robot)\n"
    "  SELECT u.id, $1, u.obj, u.ts, u.day, u.v, u.r\n"
    "    FROM unnest($2::bytea[], $3::text[], $4::timestamptz[], $5::date[], $6::bytea[],\n"
    "                $7::bool[]) AS u(id, obj, ts, day, v, r)\n"
    "  ON CONFLICT (event_id) DO NOTHING\n"
    "  RETURNING seq, object_id, day, visitor, robot),\n"
    "agg AS (SELECT object_id, day, visitor FROM ins WHERE NOT robot),\n"
    "nv AS (\n"
    "  INSERT INTO celeryc.stats_daily_visitors (event_type, object_id, day, visitor)\n"
    "  SELECT DISTINCT $1, object_id, day, visitor FROM agg\n"
    "  ON CONFLICT DO NOTHING\n"
    "  RETURNING object_id, day),\n"
    "cnt AS (SELECT object_id, day, count(*) AS n FROM agg GROUP BY object_id, day),\n"
    "ncnt AS (SELECT object_id, day, count(*) AS n FROM nv GROUP BY object_id, day),\n"
    "up AS (\n"
    "  INSERT INTO celeryc.stats_daily AS d\n"
    "         (event_type, object_id, day, count, unique_visitors)\n"
    "  SELECT $1, c.object_id, c.day, c.n, coalesce(v.n, 0)\n"
    "    FROM cnt c LEFT JOIN ncnt v ON v.object_id = c.object_id AND v.day = c.day\n"
    "  ON CONFLICT (event_type, object_id, day) DO UPDATE\n"
    "     SET count = d.count + EXCLUDED.count,\n"
    "         unique_visitors = d.unique_visitors + EXCLUDED.unique_visitors,\n"
    "         updated = now()\n"
    "  RETURNING 1),\n"
    "bm AS (\n"
    "  UPDATE celeryc.stats_bookmarks b SET last_seq = m.s, updated = now()\n"
    "    FROM (SELECT max(seq) AS s FROM ins) m\n"
    "   WHERE b.event_type = $1 AND m.s IS NOT NULL AND m.s > b.last_seq\n"
    "  RETURNING b.last_seq)\n"
    "SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM ins WHERE robot),\n"
    "       (SELECT count(*) FROM up), (SELECT last_seq FROM bm)";

static int64_t pg_int(const PGresult *res, int row, int col, int64_t dflt)
{
    if (PQgetisnull(res, row, col))
        return dflt;
    return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

/* The type's bookmark row, created if missing, then locked: the first statements of every
 * transaction that writes the type's events or aggregates (a chunk, stats.reaggregate). */
static const char stats_bookmark_create_sql[] =
    "INSERT INTO celeryc.stats_bookmarks (event_type) VALUES ($1) "
    "ON CONFLICT (event_type) DO NOTHING";
static const char stats_bookmark_lock_sql[] =
    "SELECT last_seq FROM celeryc.stats_bookmarks WHERE event_type = $1 FOR UPDATE";

/* BEGIN, lock the bookmark row (created if missing): *last_seq. */
static int pg_begin_locked(struct stats_run *r, int64_t *last_seq, struct cc_err *err)
{
    const char *vals[1] = {r->type};
    PGresult *res = NULL;
    int rc;

    if ((rc = pg_exec(r, "BEGIN", "BEGIN", 0, NULL, NULL, NULL, NULL, NULL, err)) != CC_OK)
        return rc;
    rc = pg_exec(r, "creating the bookmark", stats_bookmark_create_sql, 1, NULL, vals, NULL, NULL,
                 NULL, err);
    if (rc != CC_OK)
        return rc;
    rc = pg_exec(r, "locking the bookmark", stats_bookmark_lock_sql, 1, NULL, vals, NULL, NULL,
                 &res, err);
    if (rc != CC_OK)
        return rc;
    *last_seq = PQntuples(res) == 1 ? pg_int(res, 0, 0, 0) : 0;
    PQclear(res);
    return CC_OK;
}

/* The type's bookmark now (0: none yet), for the summary of a run that committed nothing. */
static int pg_bookmark(struct stats_run *r, struct cc_err *err)
{
    const char *vals[1] = {r->type};
    PGresult *res = NULL;
    int rc = pg_exec(r, "reading the bookmark",
                     "SELECT last_seq FROM celeryc.stats_bookmarks WHERE event_type = $1", 1, NULL,
                     vals, NULL, NULL, &res, err);

    if (rc == CC_OK) {
        r->bookmark = PQntuples(res) == 1 ? pg_int(res, 0, 0, 0) : 0;
        PQclear(res);
    }
    return rc;
}

/* ---- AMQP ----------------------------------------------------------------------------- */

/* The reply of an RPC we issued with rabbitmq-c directly on channel `ch`. A server close
 * is answered (close-ok) and mapped as src/core/broker.c does. */
static int amqp_check(struct cc_broker *b, amqp_channel_t ch, amqp_rpc_reply_t rep,
                      const char *what, struct cc_err *err)
{
    switch (rep.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return CC_OK;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (rep.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            const amqp_channel_close_t *c = rep.reply.decoded;
            amqp_channel_close_ok_t ok = {0};

            (void)amqp_send_method(b->conn, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
            if (ch == b->channel)
                b->is_channel_open = false;
            return cc_err_set(err,
                              c->reply_code == 404   ? CC_ENOTFOUND_Q
                              : c->reply_code == 406 ? CC_EPRECOND
                              : c->reply_code == 403 ? CC_EACCESS
                                                     : CC_ECHANNEL,
                              "%s: %u %.*s", what, (unsigned)c->reply_code, (int)c->reply_text.len,
                              (const char *)c->reply_text.bytes);
        }
        if (rep.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            const amqp_connection_close_t *c = rep.reply.decoded;
            amqp_connection_close_ok_t ok = {0};

            (void)amqp_send_method(b->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
            b->is_conn_open = b->is_channel_open = false;
            return cc_err_set(err, CC_EBROKER, "%s: connection closed: %u %.*s", what,
                              (unsigned)c->reply_code, (int)c->reply_text.len,
                              (const char *)c->reply_text.bytes);
        }
        return cc_err_set(err, CC_EBROKER, "%s: unexpected method 0x%08x", what,
                          (unsigned)rep.reply.id);
    case AMQP_RESPONSE_LIBRARY_EXCEPTION: {
        char text[160];
        int e = errno;

        b->is_conn_open = b->is_channel_open = false; /* abandon it, never reuse it */
        return cc_err_set(err, CC_EBROKER, "%s: %s", what,
                          cc_broker_status_text(rep.library_error, e, text, sizeof(text)));
    }
    default:
        b->is_conn_open = b->is_channel_open = false;
        return cc_err_set(err, CC_EBROKER, "%s: no reply from the broker", what);
    }
}

/* queue.declare(passive) on channel ch: *depth = ready messages. */
static int amqp_depth(struct cc_broker *b, amqp_channel_t ch, const char *queue, int64_t *depth,
                      struct cc_err *err)
{
    amqp_queue_declare_ok_t *ok;
    int rc;

    ok = amqp_queue_declare(b->conn, ch, amqp_cstring_bytes(queue), 1, 0, 0, 0, amqp_empty_table);
    rc = amqp_check(b, ch, amqp_get_rpc_reply(b->conn), "queue.declare (passive)", err);
    if (rc == CC_OK)
        *depth = ok != NULL ? (int64_t)ok->message_count : 0;
    return rc;
}

static void amqp_end(struct cc_broker *b, bool is_clean)
{
    if (is_clean && b->is_conn_open)
        cc_broker_close(b);
    else
        cc_broker_abandon(b);
}

static int stats_connect(struct stats_run *r, struct cc_broker *b, double heartbeat_s,
                         struct cc_err *err)
{
    return cc_broker_connect(b, r->cfg->broker_url, heartbeat_s, r->cfg->connect_timeout_s, &r->tls,
                             err);
}

/* Topology as the emitter declares it, then the depth of the queue. A queue that already
 * exists (with whatever arguments, e.g. one given as `queue`) is used as it is. */
static int stats_topology(struct stats_run *r, struct cc_err *err)
{
    struct cc_broker *b = &r->amqp;
    int rc;

    if ((rc = cc_broker_declare_exchange(b, r->exchange, "direct", true, err)) != CC_OK)
        return rc;
    rc = amqp_depth(b, b->channel, r->queue, &r->depth_before, err);
    if (rc == CC_ENOTFOUND_Q) {
        amqp_channel_open(b->conn, b->channel);
        if ((rc = amqp_check(b, b->channel, amqp_get_rpc_reply(b->conn), "channel.open", err)) !=
            CC_OK)
            return rc;
        b->is_channel_open = true;
        rc = cc_broker_declare_queue(b, r->queue, 0, err);
        r->depth_before = 0;
    }
    if (rc != CC_OK)
        return rc;
    if ((rc = cc_broker_bind(b, r->queue, r->exchange, r->type, err)) != CC_OK)
        return rc;
    return cc_broker_declare_queue(b, r->dead, 0, err);
}

/* Publish a malformed delivery unchanged to the dead-letter queue (confirm mode, on the
 * second connection, opened on first use without heartbeats: it idles between chunks). */
static int stats_dead_letter(struct stats_run *r, const amqp_envelope_t *env, const char *why,
                             struct cc_err *err)
{
    amqp_basic_properties_t p = env->message.properties;
    const char *run_id = cc_task_run_id(r->ctx);
    amqp_table_entry_t *entries;
    size_t n = 0, old = 0;
    int rc, st;

    if (!r->has_dlq) {
        r->has_dlq = true;
        if ((rc = stats_connect(r, &r->dlq, 0, err)) != CC_OK)
            return rc;
        if ((rc = cc_broker_confirm_select(&r->dlq, err)) != CC_OK)
            return rc;
    }
    if (!r->dlq.is_channel_open)
        return cc_err_set(err, CC_EBROKER, "dead-letter connection lost");
    if (p._flags & AMQP_BASIC_HEADERS_FLAG)
        old = (size_t)p.headers.num_entries;
    entries = cc_xcalloc(old + 3, sizeof *entries);
    for (size_t i = 0; i < old; i++) {
        const amqp_table_entry_t *e = &p.headers.entries[i];

        if ((e->key.len == 15 && memcmp(e->key.bytes, "x-celeryc-error", 15) == 0) ||
            (e->key.len == 16 && memcmp(e->key.bytes, "x-celeryc-run-id", 16) == 0) ||
            (e->key.len == 15 && memcmp(e->key.bytes, "x-celeryc-queue", 15) == 0))
            continue;
        entries[n++] = *e;
    }
    entries[n].key = amqp_cstring_bytes("x-celeryc-error");
    entries[n].value.kind = AMQP_FIELD_KIND_UTF8;
    entries[n++].value.value.bytes = amqp_cstring_bytes(why);
    if (run_id != NULL) {
        entries[n].key = amqp_cstring_bytes("x-celeryc-run-id");
        entries[n].value.kind = AMQP_FIELD_KIND_UTF8;
        entries[n++].value.value.bytes = amqp_cstring_bytes(run_id);
    }
    entries[n].key = amqp_cstring_bytes("x-celeryc-queue");
    entries[n].value.kind = AMQP_FIELD_KIND_UTF8;
    entries[n++].value.value.bytes = amqp_cstring_bytes(r->queue);
    p._flags |= AMQP_BASIC_HEADERS_FLAG;
    p.headers.num_entries = (int)n;
    p.headers.entries = entries;
    st = amqp_basic_publish(r->dlq.conn, r->dlq.channel, amqp_cstring_bytes(""),
                            amqp_cstring_bytes(r->dead), 1, 0, &p, env->message.body);
    free(entries);
    if (st != AMQP_STATUS_OK) {
        char text[160];
        int e = errno;

        r->dlq.is_conn_open = r->dlq.is_channel_open = false;
        return cc_err_set(err, CC_EBROKER, "publishing to %s: %s", r->dead,
                          cc_broker_status_text(st, e, text, sizeof(text)));
    }
    r->dlq_seq_needed = ++r->dlq.publish_seq;
    r->dead_lettered++;
    return CC_OK;
}

/* ---- Events --------------------------------------------------------------------------- */

static void chunk_reset(struct stats_run *r)
{
    arr_reset(&r->ids, OID_BYTEA);
    arr_reset(&r->objs, OID_TEXT);
    arr_reset(&r->ts, OID_TSTZ);
    arr_reset(&r->days, OID_DATE);
    arr_reset(&r->visitors, OID_BYTEA);
    arr_reset(&r->bots, OID_BOOL);
    r->chunk_read = 0;
}

static void stats_log_start(struct stats_run *r)
{
    if (r->is_started_logged)
        return;
    r->is_started_logged = true;
    if (r->oldest_age_s >= 0)
        cc_task_info(r->ctx,
                     "indexing %s events from %s: %" PRId64 " waiting, the oldest %.1f s old",
                     r->type, r->queue, r->depth_before, r->oldest_age_s);
    else
        cc_task_info(r->ctx, "indexing %s events from %s: %" PRId64 " waiting", r->type, r->queue,
                     r->depth_before);
}

/* One delivery: parse and validate, then either add it to the chunk or dead-letter it.
 * Returns CC_OK, or a broker/database error (the run fails). */
static int stats_take(struct stats_run *r, const amqp_envelope_t *env, struct cc_err *err)
{
    char why[256];
    const uint8_t *salt = NULL;
    uint8_t id[CC_STATSEVENT_ID_LEN], visitor[CC_STATSEVENT_ID_LEN];
    struct cc_statsevent *ev = &r->ev;
    bool ok = false;
    int rc = CC_OK;

    r->read++;
    r->chunk_read++;
    r->chunk_last_tag = env->delivery_tag;
    why[0] = '\0';
    if (env->message.body.len > CC_STATSEVENT_BODY_MAX) {
        snprintf(why, sizeof why, "event larger than %d bytes", CC_STATSEVENT_BODY_MAX);
    } else if ((rc = cc_statsevent_parse(ev, env->message.body.bytes, env->message.body.len, why,
                                         sizeof why)) == CC_OK) {
        if (r->oldest_age_s < 0)
            r->oldest_age_s = (double)(r->now_us - ev->ts_us) / 1e6;
        if (strcmp(ev->type, r->type) != 0)
            snprintf(why, sizeof why, "type '%.100s' on the queue of '%s'", ev->type, r->type);
        else if (ev->day < r->min_day)
            snprintf(why, sizeof why, "older than the salt retention (%" PRId64 " days)",
                     r->retention_days);
        else if (ev->ts_us > r->now_us + STATS_US_PER_DAY)
            snprintf(why, sizeof why, "in the future");
        else
            ok = true;
    } else if (rc == CC_ENOMEM) {
        return cc_err_set(err, CC_ENOMEM, "out of memory parsing an event");
    } else if (why[0] == '\0') {
        snprintf(why, sizeof why, "not a valid event");
    }
    stats_log_start(r);
    if (!ok) {
        r->errors++;
        if (r->errors <= STATS_WARN_FIRST)
            cc_task_warn(r->ctx, "malformed event (delivery %" PRIu64 "%s): %s; moved to %s",
                         (uint64_t)env->delivery_tag, env->redelivered ? ", redelivered" : "", why,
                         r->dead);
        return stats_dead_letter(r, env, why, err);
    }
    if ((rc = stats_salt(r, ev->day, &salt, err)) != CC_OK)
        return rc;
    cc_statsevent_event_id(ev, salt, r->window_s, id);
    cc_statsevent_visitor_hash(ev, salt, visitor);
    arr_put(&r->ids, id, sizeof id);
    arr_put(&r->objs, ev->object_id, strlen(ev->object_id));
    arr_put_i64(&r->ts, ev->ts_us - STATS_PG_EPOCH_US);
    arr_put_i32(&r->days, ev->day - STATS_PG_EPOCH_DAYS);
    arr_put(&r->visitors, visitor, sizeof visitor);
    {
        uint8_t bot = cc_statsevent_robots_match(r->robots, ev->user_agent) ? 1 : 0;

        arr_put(&r->bots, &bot, 1);
    }
    return CC_OK;
}

/* The chunk's transaction is pipelined: stats_fly sends BEGIN, the bookmark row (created if
 * missing, then locked FOR UPDATE), the chunk's INSERT and COMMIT in one round trip and
 * returns; the next chunk is read while Postgres works; stats_land reads the results and
 * acks. At most one transaction is in flight, so chunks are acked in order and a multiple
 * ack never covers a chunk that is not committed. */
static const char *const stats_fly_what[] = {
    "BEGIN", "creating the bookmark", "locking the bookmark", "inserting the events", "COMMIT"};

/* The transaction in flight committed: ack its deliveries. */
static int stats_landed(struct stats_run *r, struct cc_err *err)
{
    int rc;

    if (PQexitPipelineMode(r->pg) != 1)
        return pg_fail(r, NULL, "leaving pipeline mode", err);
    r->is_flying = false;
    r->inserted += r->fly_ins;
    r->robots_n += r->fly_bots;
    r->duplicates += r->fly_valid - r->fly_ins;
    r->keys += r->fly_keys;
    r->bookmark = r->fly_bookmark >= 0 ? r->fly_bookmark : r->fly_last_seq;
    if ((rc = cc_broker_ack_multiple(&r->amqp, r->fly_tag, err)) != CC_OK)
        return rc;
    r->chunks++;
    r->committed = r->fly_read;
    r->last_commit_us = cc_mono_us();
    cc_task_debug(r->ctx,
                  "chunk %" PRId64 ": %" PRId64 " events (%" PRId64 " valid, %" PRId64
                  " new) committed in %.1f ms",
                  r->chunks, r->fly_events, r->fly_valid, r->fly_ins,
                  (double)(cc_mono_us() - r->fly_t0) / 1000.0);
    cc_task_run_progress(r->ctx, r->committed, r->errors);
    return CC_OK;
}

/* While blocked on Postgres nothing reads or writes the consuming connection: send our
 * AMQP heartbeat when half the interval has passed, so a long statement does not make the
 * broker drop the connection (and requeue the chunk being read). Frames from the broker
 * wait in the socket; never read them here (a delivery read and dropped would be acked by
 * the next multiple ack). */
static void stats_heartbeat(struct stats_run *r)
{
    int64_t now = cc_mono_us();

    if (r->amqp.heartbeat_s <= 0 || !r->amqp.is_conn_open)
        return;
    if (now - r->hb_sent_us < (int64_t)r->amqp.heartbeat_s * 500000)
        return;
    {
        amqp_frame_t f = {.frame_type = AMQP_FRAME_HEARTBEAT, .channel = 0};

        (void)amqp_send_frame(r->amqp.conn, &f);
    }
    r->hb_sent_us = now;
}

/* Read what is ready of the results of the transaction in flight; with `block`, wait (at
 * most STATS_PG_WAIT_S) until it is done. CC_OK also when nothing is in flight. */
static int stats_land_results(struct stats_run *r, bool block, struct cc_err *err)
{
    int64_t t0 = cc_mono_us(), deadline = t0 + STATS_PG_WAIT_S * INT64_C(1000000);
    int rc = CC_OK;

    while (r->is_flying) {
        PGresult *res;

        if (PQconsumeInput(r->pg) == 0) {
            rc = pg_fail(r, NULL, stats_fly_what[r->fly_q < 5 ? r->fly_q : 4], err);
            break;
        }
        if (PQisBusy(r->pg)) {
            struct pollfd pfd = {.fd = PQsocket(r->pg), .events = POLLIN};
            int64_t left_ms = (deadline - cc_mono_us()) / 1000;

            if (!block)
                break;
            if (left_ms <= 0) {
                rc = cc_err_set(err, CC_ETIMEDOUT,
                                "database: no reply to a chunk's transaction within %d s",
                                STATS_PG_WAIT_S);
                break;
            }
            if (poll(&pfd, 1, left_ms > 1000 ? 1000 : (int)left_ms) < 0 && errno != EINTR) {
                rc = cc_err_set(err, CC_EIO, "poll: %s", strerror(errno));
                break;
            }
            stats_heartbeat(r);
            continue;
        }
        res = PQgetResult(r->pg);
        if (res == NULL) {
            r->fly_q++; /* the next statement's results follow */
            continue;
        }
        switch (PQresultStatus(res)) {
        case PGRES_PIPELINE_SYNC:
            PQclear(res);
            rc = stats_landed(r, err);
            break;
        case PGRES_COMMAND_OK:
            PQclear(res);
            break;
        case PGRES_TUPLES_OK:
            if (r->fly_q == 2) {
                r->fly_last_seq = PQntuples(res) == 1 ? pg_int(res, 0, 0, 0) : 0;
            } else if (r->fly_q == 3) {
                r->fly_ins = pg_int(res, 0, 0, 0);
                r->fly_bots = pg_int(res, 0, 1, 0);
                r->fly_keys = pg_int(res, 0, 2, 0);
                r->fly_bookmark = pg_int(res, 0, 3, -1);
            }
            PQclear(res);
            break;
        default:
            rc = pg_fail(r, res, stats_fly_what[r->fly_q < 5 ? r->fly_q : 4], err);
            PQclear(res);
            break;
        }
        if (rc != CC_OK)
            break;
    }
    if (block)
        r->db_us += cc_mono_us() - t0;
    return rc;
}

static int stats_land(struct stats_run *r, struct cc_err *err)
{
    return stats_land_results(r, true, err);
}

/* Close the chunk being read: wait for the transaction in flight, then for the confirms of
 * this chunk's dead-letter copies, then send its transaction (or, with no valid event,
 * ack it at once). */
static int stats_fly(struct stats_run *r, struct cc_err *err)
{
    const Oid types[7] = {OID_TEXT,     OID_BYTEA_ARR, OID_TEXT_ARR, OID_TSTZ_ARR,
                          OID_DATE_ARR, OID_BYTEA_ARR, OID_BOOL_ARR};
    struct stats_arr *arrs[6] = {&r->ids, &r->objs, &r->ts, &r->days, &r->visitors, &r->bots};
    const char *vals[7];
    int lens[7], fmts[7];
    int64_t t0;
    int rc;

    if (r->chunk_read == 0)
        return CC_OK;
    if ((rc = stats_land(r, err)) != CC_OK)
        return rc;
    t0 = cc_mono_us();
    if (r->has_dlq && r->dlq.confirmed_upto < r->dlq_seq_needed) {
        rc = cc_broker_wait_confirms(&r->dlq, r->dlq_seq_needed, CC_BROKER_SYNC_TIMEOUT_MS, err);
        if (rc != CC_OK) {
            char msg[sizeof err->msg];

            memcpy(msg, err->msg, sizeof msg);
            return cc_err_set(err, rc, "dead-lettering to %s: %s", r->dead, msg);
        }
    }
    if (r->ids.n == 0) {
        if ((rc = cc_broker_ack_multiple(&r->amqp, r->chunk_last_tag, err)) != CC_OK)
            return rc;
        r->chunks++;
        r->committed = r->read;
        r->last_commit_us = cc_mono_us();
        cc_task_run_progress(r->ctx, r->committed, r->errors);
        chunk_reset(r);
        return CC_OK;
    }
    vals[0] = r->type;
    lens[0] = (int)strlen(r->type);
    fmts[0] = 1;
    for (int i = 0; i < 6; i++) {
        arr_finish(arrs[i]);
        vals[i + 1] = (const char *)arrs[i]->p;
        lens[i + 1] = (int)arrs[i]->len;
        fmts[i + 1] = 1;
    }
    /* libpq copies the parameters into its output buffer: the arrays may be reused after. */
    if (PQenterPipelineMode(r->pg) != 1 ||
        PQsendQueryParams(r->pg, "BEGIN", 0, NULL, NULL, NULL, NULL, 0) != 1 ||
        PQsendQueryParams(r->pg, stats_bookmark_create_sql, 1, types, vals, lens, fmts, 0) != 1 ||
        PQsendQueryParams(r->pg, stats_bookmark_lock_sql, 1, types, vals, lens, fmts, 0) != 1 ||
        PQsendQueryParams(r->pg, stats_chunk_sql, 7, types, vals, lens, fmts, 0) != 1 ||
        PQsendQueryParams(r->pg, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) != 1 ||
        PQpipelineSync(r->pg) != 1)
        return pg_fail(r, NULL, "sending a chunk", err);
    r->is_flying = true;
    r->fly_q = 0;
    r->fly_tag = r->chunk_last_tag;
    r->fly_read = r->read;
    r->fly_events = r->chunk_read;
    r->fly_valid = r->ids.n;
    r->fly_t0 = t0;
    r->fly_last_seq = r->fly_ins = r->fly_bots = r->fly_keys = 0;
    r->fly_bookmark = -1;
    r->db_us += cc_mono_us() - t0;
    chunk_reset(r);
    return CC_OK;
}

/* The prefetch for what is left of the batch. */
static int stats_qos(struct stats_run *r, struct cc_err *err)
{
    int64_t left = r->batch_size - r->read, pf = r->commit_every * 2;

    if (pf > left)
        pf = left;
    if (pf > 65535)
        pf = 65535;
    return pf > 0 ? cc_broker_qos(&r->amqp, (unsigned)pf, err) : CC_OK;
}

/* The read loop: until batch_size, drained, or the soft time limit; then the last chunk. */
static int stats_drain(struct stats_run *r, struct cc_err *err)
{
    int64_t last_us = cc_mono_us();
    int rc, spins = 0;

    while (r->read < r->batch_size) {
        amqp_envelope_t env;
        int got = 0;

        if (cc_task_soft_limit_exceeded(r->ctx)) {
            cc_task_warn(r->ctx, "soft time limit: stopping after %" PRId64 " events", r->read);
            break;
        }
        rc = cc_broker_next(&r->amqp, &env, &got, err);
        if (rc != CC_OK)
            return rc;
        if (got) {
            int64_t t0 = cc_mono_us();

            rc = stats_take(r, &env, err);
            amqp_destroy_envelope(&env);
            cc_broker_release(&r->amqp);
            r->take_us += cc_mono_us() - t0;
            if (rc != CC_OK)
                return rc;
            /* Ack the chunk in flight as soon as it is committed: its deliveries hold half
             * of the prefetch window. */
            if (r->is_flying && (r->read & 63) == 0 &&
                (rc = stats_land_results(r, false, err)) != CC_OK)
                return rc;
            if (r->chunk_read >= r->commit_every) {
                if ((rc = stats_fly(r, err)) != CC_OK || (rc = stats_qos(r, err)) != CC_OK)
                    return rc;
            }
            last_us = cc_mono_us();
            spins = 0;
            continue;
        }
        /* What rabbitmq-c holds may be whole frames behind the one just handled (read them
         * now) or the start of a frame whose end is still on its way (poll for it). */
        if (cc_broker_has_buffered(&r->amqp) && spins++ < 16)
            continue;
        {
            int64_t idle_ms = (cc_mono_us() - last_us) / 1000;
            int64_t limit_ms = (int64_t)(r->idle_timeout_s * 1000);
            struct pollfd pfd[2] = {{.fd = cc_broker_fd(&r->amqp), .events = POLLIN},
                                    {.fd = r->is_flying ? PQsocket(r->pg) : -1, .events = POLLIN}};
            int64_t wait_ms, t0;

            if (r->read < r->depth_before && limit_ms < STATS_UNDRAINED_MS)
                limit_ms = STATS_UNDRAINED_MS;
            if (idle_ms >= limit_ms)
                break;
            wait_ms = limit_ms - idle_ms;
            if (wait_ms > STATS_SLICE_MS)
                wait_ms = STATS_SLICE_MS;
            t0 = cc_mono_us();
            if (poll(pfd, 2, (int)wait_ms) < 0 && errno != EINTR)
                return cc_err_set(err, CC_EIO, "poll: %s", strerror(errno));
            r->wait_us += cc_mono_us() - t0;
            spins = 0;
            if (r->is_flying && (pfd[1].revents & (POLLIN | POLLERR | POLLHUP)) &&
                (rc = stats_land_results(r, false, err)) != CC_OK)
                return rc;
        }
    }
    if ((rc = stats_fly(r, err)) != CC_OK)
        return rc;
    return stats_land(r, err);
}

/* After the run: give back what was delivered but not read (closing the consuming channel
 * requeues it), then on a fresh channel the depth and the age of the event at the head
 * (basic.get, then basic.reject with requeue: it stays first). */
static int stats_backlog(struct stats_run *r, struct cc_err *err)
{
    struct cc_broker *b = &r->amqp;
    amqp_rpc_reply_t rep;
    int rc;

    rep = amqp_channel_close(b->conn, b->channel, AMQP_REPLY_SUCCESS);
    if ((rc = amqp_check(b, b->channel, rep, "channel.close", err)) != CC_OK)
        return rc;
    b->is_channel_open = false;
    b->channel = 2;
    amqp_channel_open(b->conn, b->channel);
    if ((rc = amqp_check(b, b->channel, amqp_get_rpc_reply(b->conn), "channel.open", err)) != CC_OK)
        return rc;
    b->is_channel_open = true;
    if ((rc = amqp_depth(b, b->channel, r->queue, &r->depth_after, err)) != CC_OK)
        return rc;
    if (r->depth_after == 0)
        return CC_OK;
    rep = amqp_basic_get(b->conn, b->channel, amqp_cstring_bytes(r->queue), 0);
    if ((rc = amqp_check(b, b->channel, rep, "basic.get", err)) != CC_OK)
        return rc;
    if (rep.reply.id == AMQP_BASIC_GET_OK_METHOD) {
        const amqp_basic_get_ok_t *ok = rep.reply.decoded;
        uint64_t tag = ok->delivery_tag;
        amqp_message_t msg;
        char why[128];

        rep = amqp_read_message(b->conn, b->channel, &msg, 0);
        if ((rc = amqp_check(b, b->channel, rep, "basic.get (content)", err)) != CC_OK)
            return rc;
        if (cc_statsevent_parse(&r->ev, msg.body.bytes, msg.body.len, why, sizeof why) == CC_OK)
            r->backlog_age_s = (double)(cc_now_us() - r->ev.ts_us) / 1e6;
        amqp_destroy_message(&msg);
        rc = cc_broker_reject(b, tag, true, err);
    }
    return rc;
}

/* ---- The tasks ----------------------------------------------------------------------- */

static int stats_int_arg(struct cc_task_ctx *ctx, size_t i, const char *name, int64_t min,
                         int64_t max, int64_t *out)
{
    const json_t *v = cc_task_arg(ctx, i);

    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return cc_task_raise(ctx, "builtins", "ValueError",
                             "%s must be an integer from %" PRId64 " to %" PRId64, name, min, max);
    *out = json_integer_value(v);
    return CC_OK;
}

static int stats_str_arg(struct cc_task_ctx *ctx, size_t i, const char *name, bool is_nullable,
                         const char **out)
{
    const json_t *v = cc_task_arg(ctx, i);

    *out = NULL;
    if (json_is_string(v) && json_string_length(v) > 0) {
        *out = json_string_value(v);
        return CC_OK;
    }
    if (is_nullable && (v == NULL || json_is_null(v)))
        return CC_OK;
    return cc_task_raise(ctx, "builtins", "ValueError", "%s must be a non-empty string%s", name,
                         is_nullable ? " or None" : "");
}

/* Event types are lower-case words with dashes: "record-view", "file-download". */
static bool stats_type_ok(const char *t)
{
    size_t n = strlen(t);

    if (n == 0 || n > STATS_TYPE_MAX || t[0] == '-' || t[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= '0' && t[i] <= '9') || t[i] == '-' ||
              t[i] == '_'))
            return false;
    return true;
}

static int stats_type_arg(struct cc_task_ctx *ctx, const char **type)
{
    int rc = stats_str_arg(ctx, 0, "event_type", false, type);

    if (rc == CC_OK && !stats_type_ok(*type))
        return cc_task_raise(ctx, "builtins", "ValueError",
                             "event_type must be lower-case words with dashes "
                             "(e.g. 'record-view'), got '%.100s'",
                             *type);
    return rc;
}

/* database=None: the worker's job store. */
static int stats_db_arg(struct cc_task_ctx *ctx, size_t i, const char **url)
{
    const struct cc_config *cfg = cc_task_config();
    int rc = stats_str_arg(ctx, i, "database", true, url);

    if (rc != CC_OK || *url != NULL)
        return rc;
    if (cfg != NULL && cfg->job_store != NULL && cfg->job_store[0] != '\0') {
        *url = cfg->job_store;
        return CC_OK;
    }
    return cc_task_raise(ctx, "builtins", "ValueError",
                         "no database: pass database=<postgresql URL> or start the worker "
                         "with --job-store");
}

static int stats_load_robots(struct stats_run *r, const char *path)
{
    FILE *f;
    char *text;
    size_t n;

    if (path == NULL) {
        r->robots = cc_statsevent_robots_builtin();
        r->is_robots_owned = true;
        if (r->robots == NULL)
            return cc_task_raise(r->ctx, "builtins", "MemoryError", "robots list");
        return CC_OK;
    }
    if ((f = fopen(path, "rb")) == NULL)
        return cc_task_raise(r->ctx, "builtins", "FileNotFoundError", "robots_file %s: %s", path,
                             strerror(errno));
    text = cc_xmalloc(STATS_ROBOTS_MAX + 1);
    n = fread(text, 1, STATS_ROBOTS_MAX + 1, f);
    fclose(f);
    if (n > STATS_ROBOTS_MAX) {
        free(text);
        return cc_task_raise(r->ctx, "builtins", "ValueError", "robots_file %s: over %d bytes",
                             path, STATS_ROBOTS_MAX);
    }
    r->robots = cc_statsevent_robots_new(text, n);
    r->is_robots_owned = true;
    free(text);
    if (r->robots == NULL)
        return cc_task_raise(r->ctx, "builtins", "MemoryError", "robots_file %s", path);
    return CC_OK;
}

static json_t *stats_age(double age_s)
{
    return age_s >= 0 ? json_real((double)(int64_t)(age_s * 1000) / 1000.0) : json_null();
}

static json_t *stats_summary(const struct stats_run *r)
{
    double elapsed = (double)(cc_mono_us() - r->t0_mono_us) / 1e6, busy = 0;
    json_t *s = json_object();

    json_object_set_new(s, "event_type", json_string(r->type));
    json_object_set_new(s, "queue", json_string(r->queue));
    json_object_set_new(s, "read", json_integer(r->read));
    json_object_set_new(s, "inserted", json_integer(r->inserted));
    json_object_set_new(s, "duplicates", json_integer(r->duplicates));
    json_object_set_new(s, "robots", json_integer(r->robots_n));
    json_object_set_new(s, "errors", json_integer(r->errors));
    json_object_set_new(s, "dead_lettered", json_integer(r->dead_lettered));
    json_object_set_new(s, "chunks", json_integer(r->chunks));
    json_object_set_new(s, "aggregated_keys", json_integer(r->keys));
    json_object_set_new(s, "bookmark", json_integer(r->bookmark));
    json_object_set_new(s, "queue_depth_before", json_integer(r->depth_before));
    json_object_set_new(s, "queue_depth_after",
                        r->depth_after >= 0 ? json_integer(r->depth_after) : json_null());
    json_object_set_new(s, "oldest_age_s", stats_age(r->oldest_age_s));
    json_object_set_new(s, "backlog_age_s", stats_age(r->backlog_age_s));
    json_object_set_new(s, "elapsed_s", json_real((double)(int64_t)(elapsed * 1000) / 1000.0));
    /* The rate while there was work: up to the last commit, not the final idle wait. */
    if (r->last_commit_us > r->t0_mono_us)
        busy = (double)(r->last_commit_us - r->t0_mono_us) / 1e6;
    json_object_set_new(s, "events_per_s",
                        json_integer(busy > 0 ? (json_int_t)((double)r->committed / busy) : 0));
    return s;
}

static void stats_run_free(struct stats_run *r, bool is_clean)
{
    amqp_end(&r->amqp, is_clean);
    if (r->has_dlq)
        amqp_end(&r->dlq, is_clean);
    pg_close(r);
    if (r->is_robots_owned)
        cc_statsevent_robots_free(r->robots);
    cc_statsevent_clear(&r->ev);
    arr_free(&r->ids);
    arr_free(&r->objs);
    arr_free(&r->ts);
    arr_free(&r->days);
    arr_free(&r->visitors);
    arr_free(&r->bots);
    free(r->salts);
    free(r->queue);
    free(r->dead);
}

static int stats_index_events(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                              json_t **result)
{
    struct stats_run run, *r = &run;
    const char *queue = NULL, *robots_file = NULL;
    struct cc_err err = {0};
    double idle = 0;
    int rc;

    (void)args;
    (void)kwargs;
    memset(r, 0, sizeof *r);
    r->ctx = ctx;
    r->oldest_age_s = r->backlog_age_s = -1;
    r->depth_after = -1;
    r->t0_mono_us = cc_mono_us();
    if ((rc = stats_type_arg(ctx, &r->type)) != CC_OK ||
        (rc = stats_int_arg(ctx, 1, "batch_size", 1, INT64_C(1) << 40, &r->batch_size)) != CC_OK ||
        (rc = stats_int_arg(ctx, 2, "commit_every", 1, 1000000, &r->commit_every)) != CC_OK ||
        (rc = stats_int_arg(ctx, 3, "double_click_window", 1, 86400, &r->window_s)) != CC_OK ||
        (rc = stats_int_arg(ctx, 4, "salt_retention_days", 1, 36500, &r->retention_days)) !=
            CC_OK ||
        (rc = stats_str_arg(ctx, 5, "exchange", false, &r->exchange)) != CC_OK ||
        (rc = stats_str_arg(ctx, 6, "queue", true, &queue)) != CC_OK ||
        (rc = stats_db_arg(ctx, 7, &r->db_url)) != CC_OK ||
        (rc = stats_str_arg(ctx, 8, "robots_file", true, &robots_file)) != CC_OK ||
        (rc = cc_pyops_seconds(ctx, cc_task_arg(ctx, 9), &idle)) != CC_OK)
        return rc;
    r->idle_timeout_s = idle;
    if (r->commit_every > STATS_CHUNK_MAX) {
        /* The prefetch (2 chunks) cannot exceed 65535: a larger chunk would never fill. */
        cc_task_warn(ctx, "commit_every %" PRId64 " lowered to %d", r->commit_every,
                     STATS_CHUNK_MAX);
        r->commit_every = STATS_CHUNK_MAX;
    }
    r->cfg = cc_task_config();
    if (r->cfg == NULL || r->cfg->broker_url == NULL)
        return cc_task_raise(ctx, "builtins", "RuntimeError",
                             "stats.index_events needs the worker's broker (no configuration)");
    if (queue != NULL) {
        r->queue = cc_xstrdup(queue);
    } else {
        r->queue = cc_xmalloc(strlen(r->type) + 7);
        sprintf(r->queue, "stats-%s", r->type);
    }
    r->dead = cc_xmalloc(strlen(r->queue) + 6);
    sprintf(r->dead, "%s.dead", r->queue);
    if ((rc = stats_load_robots(r, robots_file)) != CC_OK) {
        stats_run_free(r, true);
        return rc;
    }
    r->tls = (struct cc_broker_tls){
        .ca_file = r->cfg->broker_ssl_ca_certs,
        .cert_file = r->cfg->broker_ssl_certfile,
        .key_file = r->cfg->broker_ssl_keyfile,
        .is_verify = r->cfg->broker_ssl_verify != CC_SSL_VERIFY_NONE,
    };
    r->now_us = cc_now_us();
    r->min_day = (int32_t)(r->now_us / STATS_US_PER_DAY - r->retention_days);
    chunk_reset(r);

    if ((rc = pg_open(r, &err)) != CC_OK || (rc = pg_expire_salts(r, &err)) != CC_OK)
        goto fail;
    if ((rc = stats_connect(r, &r->amqp, r->cfg->heartbeat_s, &err)) != CC_OK ||
        (rc = stats_topology(r, &err)) != CC_OK)
        goto fail;
    /* One consumer on the channel: a per-consumer prefetch (basic.qos global=false) means
     * the same, and RabbitMQ delivers ~20% faster without the channel-wide limiter. */
    r->amqp.is_qos_per_consumer = true;
    {
        int64_t pf = r->commit_every * 2;

        if (pf > 65535)
            pf = 65535;
        if (pf > r->batch_size)
            pf = r->batch_size;
        if ((rc = cc_broker_qos(&r->amqp, (unsigned)pf, &err)) != CC_OK ||
            (rc = cc_broker_consume(&r->amqp, r->queue, &err)) != CC_OK)
            goto fail;
    }
    if ((rc = stats_drain(r, &err)) != CC_OK || (rc = pg_bookmark(r, &err)) != CC_OK)
        goto fail;
    stats_log_start(r);
    if ((rc = stats_backlog(r, &err)) != CC_OK)
        goto fail;

    if (r->errors > STATS_WARN_FIRST)
        cc_task_warn(ctx, "... %" PRId64 " more malformed events moved to %s",
                     r->errors - STATS_WARN_FIRST, r->dead);
    if (r->errors > 0)
        cc_task_run_partial(ctx, "%" PRId64 " of %" PRId64 " events malformed, moved to %s",
                            r->errors, r->read, r->dead);
    *result = stats_summary(r);
    cc_task_info(
        ctx,
        "indexed %s: read %" PRId64 ", inserted %" PRId64 ", duplicates %" PRId64
        ", robots %" PRId64 ", errors %" PRId64 " in %" PRId64
        " chunks (%.0f events/s; %.2f s waiting for the database, %.2f s on events, %.2f s "
        "waiting for events); %" PRId64 " left in %s",
        r->type, r->read, r->inserted, r->duplicates, r->robots_n, r->errors, r->chunks,
        json_number_value(json_object_get(*result, "events_per_s")), (double)r->db_us / 1e6,
        (double)r->take_us / 1e6, (double)r->wait_us / 1e6, r->depth_after, r->queue);
    cc_task_run_summary(ctx, json_deep_copy(*result));
    stats_run_free(r, true);
    return CC_OK;

fail:
    cc_task_error(ctx,
                  "indexing %s failed after %" PRId64 " events committed in %" PRId64
                  " chunks (the rest stays in %s): %s",
                  r->type, r->committed, r->chunks, r->queue, err.msg);
    cc_task_run_progress(ctx, r->committed, r->errors);
    cc_task_run_summary(ctx, stats_summary(r));
    stats_run_free(r, false);
    return cc_task_raise(ctx, "builtins", "RuntimeError", "%s", err.msg);
}

const struct cc_task_entry cc_task_stats_index_events = {
    .name = "stats.index_events",
    .run = stats_index_events,
    .signature = "event_type, batch_size=100000, commit_every=5000, double_click_window=30, "
                 "salt_retention_days=30, exchange=\"events\", queue=None, database=None, "
                 "robots_file=None, idle_timeout=1.0, since=None",
};

/* ---- stats.reaggregate ---------------------------------------------------------------- */

static const char stats_reagg_sql[] =
    "WITH del_v AS (\n"
    "  DELETE FROM celeryc.stats_daily_visitors\n"
    "   WHERE event_type = $1 AND day BETWEEN $2::date AND $3::date RETURNING 1),\n"
    "del_d AS (\n"
    "  DELETE FROM celeryc.stats_daily\n"
    "   WHERE event_type = $1 AND day BETWEEN $2::date AND $3::date RETURNING 1)\n"
    "SELECT (SELECT count(*) FROM del_v), (SELECT count(*) FROM del_d)";

static const char stats_rebuild_v_sql[] =
    "INSERT INTO celeryc.stats_daily_visitors (event_type, object_id, day, visitor)\n"
    "SELECT DISTINCT event_type, object_id, day, visitor FROM celeryc.stats_events\n"
    " WHERE event_type = $1 AND day BETWEEN $2::date AND $3::date\n"
    "   AND seq <= $4::bigint AND NOT robot";

static const char stats_rebuild_d_sql[] =
    "WITH up AS (\n"
    "  INSERT INTO celeryc.stats_daily (event_type, object_id, day, count, unique_visitors)\n"
    "  SELECT event_type, object_id, day, count(*), count(DISTINCT visitor)\n"
    "    FROM celeryc.stats_events\n"
    "   WHERE event_type = $1 AND day BETWEEN $2::date AND $3::date\n"
    "     AND seq <= $4::bigint AND NOT robot\n"
    "   GROUP BY event_type, object_id, day\n"
    "  RETURNING count)\n"
    "SELECT count(*), coalesce(sum(count), 0) FROM up";

/* "YYYY-MM-DD", strictly. */
static bool stats_date_ok(const char *s)
{
    if (strlen(s) != 10 || s[4] != '-' || s[7] != '-')
        return false;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9'))
            return false;
    return true;
}

static int stats_reaggregate(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                             json_t **result)
{
    struct stats_run run, *r = &run;
    const char *start = NULL, *end = NULL;
    struct cc_err err = {0};
    PGresult *res = NULL;
    int64_t last_seq = 0, keys = 0, events = 0;
    char seqbuf[24];
    int rc;

    (void)args;
    (void)kwargs;
    memset(r, 0, sizeof *r);
    r->ctx = ctx;
    if ((rc = stats_type_arg(ctx, &r->type)) != CC_OK ||
        (rc = stats_str_arg(ctx, 1, "start", false, &start)) != CC_OK ||
        (rc = stats_str_arg(ctx, 2, "end", true, &end)) != CC_OK ||
        (rc = stats_db_arg(ctx, 3, &r->db_url)) != CC_OK)
        return rc;
    if (end == NULL)
        end = start;
    if (!stats_date_ok(start) || !stats_date_ok(end))
        return cc_task_raise(ctx, "builtins", "ValueError",
                             "start and end must be dates 'YYYY-MM-DD', got '%.40s' and '%.40s'",
                             start, end);
    if (strcmp(start, end) > 0)
        return cc_task_raise(ctx, "builtins", "ValueError", "end %s is before start %s", end,
                             start);
    if ((rc = pg_open(r, &err)) != CC_OK || (rc = pg_begin_locked(r, &last_seq, &err)) != CC_OK)
        goto out;
    snprintf(seqbuf, sizeof seqbuf, "%" PRId64, last_seq);
    {
        const char *vals[4] = {r->type, start, end, seqbuf};

        if ((rc = pg_exec(r, "deleting the window", stats_reagg_sql, 3, NULL, vals, NULL, NULL,
                          NULL, &err)) != CC_OK ||
            (rc = pg_exec(r, "rebuilding the visitors", stats_rebuild_v_sql, 4, NULL, vals, NULL,
                          NULL, NULL, &err)) != CC_OK ||
            (rc = pg_exec(r, "rebuilding the aggregates", stats_rebuild_d_sql, 4, NULL, vals, NULL,
                          NULL, &res, &err)) != CC_OK)
            goto out;
        keys = pg_int(res, 0, 0, 0);
        events = pg_int(res, 0, 1, 0);
        PQclear(res);
        rc = pg_exec(r, "COMMIT", "COMMIT", 0, NULL, NULL, NULL, NULL, NULL, &err);
    }
out:
    pg_close(r);
    if (rc != CC_OK)
        return cc_task_raise(ctx, "builtins", "RuntimeError", "%s", err.msg);
    cc_task_info(ctx, "re-aggregated %s from %s to %s: %" PRId64 " keys, %" PRId64 " events",
                 r->type, start, end, keys, events);
    *result = json_pack("{s:s,s:s,s:s,s:I,s:I}", "event_type", r->type, "start", start, "end", end,
                        "keys", (json_int_t)keys, "events", (json_int_t)events);
    cc_task_run_summary(ctx, json_deep_copy(*result));
    return CC_OK;
}

const struct cc_task_entry cc_task_stats_reaggregate = {
    .name = "stats.reaggregate",
    .run = stats_reaggregate,
    .signature = "event_type, start, end=None, database=None, since=None",
};
