/* The job store's schema, as migrations applied in order by cc_jobstore_upgrade (jobstore.c).
 * Append a migration to change the schema; never edit one that has shipped.
 *
 * Everything lives in the schema "celeryc" so it can share a database with Celery's result
 * tables (public.celery_taskmeta). Times are timestamptz (UTC instants). */
#include "jobstore_schema.h"

#include <stddef.h>

static const char *const migrations[] = {
    /* 1: jobs, runs, run logs, beat lease and entry state, change notifications. */
    "CREATE SCHEMA IF NOT EXISTS celeryc;\n"
    "CREATE TABLE celeryc.schema_version (\n"
    "    version integer PRIMARY KEY,\n"
    "    applied_at timestamptz NOT NULL DEFAULT now()\n"
    ");\n"
    "CREATE TABLE celeryc.jobs (\n"
    "    id uuid PRIMARY KEY,\n"
    "    title text NOT NULL,\n"
    "    description text NOT NULL DEFAULT '',\n"
    "    task text NOT NULL,\n"
    "    queue text,\n" /* NULL: the worker's task_default_queue ("celery") */
    "    active boolean NOT NULL DEFAULT true,\n"
    /* NULL: run by hand only; {"type":"interval","seconds":N} or {"type":"crontab",...} */
    "    schedule jsonb,\n"
    "    timezone text NOT NULL DEFAULT 'UTC',\n"
    "    args jsonb NOT NULL DEFAULT '[]',\n"
    "    kwargs jsonb NOT NULL DEFAULT '{}',\n"
    /* apply_async options: routing_key, priority, expires (seconds) */
    "    options jsonb NOT NULL DEFAULT '{}',\n"
    "    concurrency text NOT NULL DEFAULT 'forbid'\n"
    "        CHECK (concurrency IN ('allow', 'forbid', 'replace')),\n"
    "    retry_policy jsonb NOT NULL DEFAULT '{\"max_attempts\": 1}',\n"
    "    missed text NOT NULL DEFAULT 'run_once' CHECK (missed IN ('skip', 'run_once')),\n"
    /* a missed slot older than this is skipped even with run_once (NULL: no deadline) */
    "    starting_deadline integer,\n"
    /* the kwarg that carries the last successful run's start (NULL: not passed; the
     * default 'since' is dropped by migration 3) */
    "    since_kwarg text DEFAULT 'since',\n"
    "    created timestamptz NOT NULL DEFAULT now(),\n"
    "    updated timestamptz NOT NULL DEFAULT now()\n"
    ");\n"
    "CREATE TABLE celeryc.runs (\n"
    "    id uuid PRIMARY KEY,\n"
    "    job_id uuid NOT NULL REFERENCES celeryc.jobs(id) ON DELETE CASCADE,\n"
    "    started_by text,\n" /* NULL: the scheduler */
    "    status char(1) NOT NULL DEFAULT 'Q'\n"
    "        CHECK (status IN ('Q', 'R', 'S', 'F', 'W', 'C', 'X', 'P')),\n"
    "    task_id text NOT NULL UNIQUE,\n"
    "    args jsonb NOT NULL DEFAULT '[]',\n"
    "    kwargs jsonb NOT NULL DEFAULT '{}',\n"
    "    queue text,\n"
    "    message text,\n"
    "    scheduled_for timestamptz,\n" /* the slot; NULL for a manual run */
    "    not_before timestamptz,\n"    /* a retry waits for its backoff */
    "    created timestamptz NOT NULL DEFAULT now(),\n"
    "    sent_at timestamptz,\n"
    "    started_at timestamptz,\n"
    "    finished_at timestamptz,\n"
    "    heartbeat_at timestamptz,\n"
    "    hostname text,\n"
    "    attempt integer NOT NULL DEFAULT 1,\n"
    "    retry_of uuid REFERENCES celeryc.runs(id) ON DELETE SET NULL,\n"
    "    epoch bigint NOT NULL DEFAULT 0,\n"
    "    processed bigint NOT NULL DEFAULT 0,\n"
    "    errored bigint NOT NULL DEFAULT 0,\n"
    "    UNIQUE (job_id, scheduled_for, attempt)\n"
    ");\n"
    "CREATE INDEX runs_job_created ON celeryc.runs (job_id, created DESC);\n"
    "CREATE INDEX runs_active ON celeryc.runs (job_id) WHERE status IN ('Q', 'R', 'C');\n"
    "CREATE INDEX runs_unsent ON celeryc.runs (created) WHERE status = 'Q' AND sent_at IS NULL;\n"
    /* one retry per failed run, also for manual runs (scheduled_for NULL: the unique key
     * above does not apply to them) */
    "CREATE UNIQUE INDEX runs_retry_of ON celeryc.runs (retry_of) WHERE retry_of IS NOT NULL;\n"
    "CREATE TABLE celeryc.run_logs (\n"
    "    id bigserial PRIMARY KEY,\n"
    "    run_id uuid NOT NULL REFERENCES celeryc.runs(id) ON DELETE CASCADE,\n"
    "    timestamp timestamptz NOT NULL,\n"
    "    level text NOT NULL,\n"
    "    message text NOT NULL,\n"
    "    task_id text\n"
    ");\n"
    "CREATE INDEX run_logs_run ON celeryc.run_logs (run_id, id);\n"
    "CREATE TABLE celeryc.leases (\n"
    "    name text PRIMARY KEY,\n"
    "    holder text,\n"
    "    epoch bigint NOT NULL DEFAULT 0,\n"
    "    expires_at timestamptz NOT NULL DEFAULT '-infinity',\n"
    "    acquired_at timestamptz\n"
    ");\n"
    "CREATE TABLE celeryc.entries (\n"
    "    name text PRIMARY KEY,\n"
    "    last_run_at timestamptz,\n"
    "    total_run_count bigint NOT NULL DEFAULT 0\n"
    ");\n"
    "CREATE TABLE celeryc.entry_slots (\n"
    "    name text NOT NULL,\n"
    "    slot timestamptz NOT NULL,\n"
    "    task_id text,\n"
    "    epoch bigint NOT NULL,\n"
    "    created timestamptz NOT NULL DEFAULT now(),\n"
    "    PRIMARY KEY (name, slot)\n"
    ");\n"
    "CREATE FUNCTION celeryc.notify_job() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "    PERFORM pg_notify('celeryc_jobs', COALESCE(NEW.id, OLD.id)::text);\n"
    "    RETURN NULL;\n"
    "END $$;\n"
    "CREATE TRIGGER jobs_notify AFTER INSERT OR UPDATE OR DELETE ON celeryc.jobs\n"
    "    FOR EACH ROW EXECUTE FUNCTION celeryc.notify_job();\n"
    "CREATE FUNCTION celeryc.notify_run() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "    IF (TG_OP = 'INSERT' AND NEW.started_by IS NOT NULL)\n"
    "       OR (TG_OP = 'UPDATE' AND NEW.status IS DISTINCT FROM OLD.status\n"
    "           AND NEW.status IN ('C', 'F')) THEN\n"
    "        PERFORM pg_notify('celeryc_runs', NEW.id::text);\n"
    "    END IF;\n"
    "    RETURN NULL;\n"
    "END $$;\n"
    "CREATE TRIGGER runs_notify AFTER INSERT OR UPDATE ON celeryc.runs\n"
    "    FOR EACH ROW EXECUTE FUNCTION celeryc.notify_run();\n",
    /* 2: a run's summary (cc_task_run_summary); the statistics indexer's tables (issue #7,
     * tasks/stats.c, docs/STATS.md). Days are UTC dates; ids and visitors are 16-byte
     * hashes (proto/statsevent.h). */
    "ALTER TABLE celeryc.runs ADD COLUMN summary jsonb;\n"
    /* one random salt per UTC day, deleted after the retention (visitor hashes then can no
     * longer be recomputed by anyone) */
    "CREATE TABLE celeryc.stats_salts (\n"
    "    day date PRIMARY KEY,\n"
    "    salt bytea NOT NULL,\n"
    "    created timestamptz NOT NULL DEFAULT now()\n"
    ");\n"
    /* the raw events, once each: event_id is the deterministic id */
    "CREATE TABLE celeryc.stats_events (\n"
    "    event_id bytea PRIMARY KEY,\n"
    "    seq bigserial NOT NULL,\n"
    "    event_type text NOT NULL,\n"
    "    object_id text NOT NULL,\n"
    "    ts timestamptz NOT NULL,\n"
    "    day date NOT NULL,\n"
    "    visitor bytea NOT NULL,\n"
    "    robot boolean NOT NULL,\n"
    "    indexed_at timestamptz NOT NULL DEFAULT now()\n"
    ");\n"
    "CREATE INDEX stats_events_seq ON celeryc.stats_events USING brin (seq);\n"
    "CREATE INDEX stats_events_day ON celeryc.stats_events USING brin (day);\n"
    /* per event type: every raw event with seq <= last_seq is in the aggregates */
    "CREATE TABLE celeryc.stats_bookmarks (\n"
    "    event_type text PRIMARY KEY,\n"
    "    last_seq bigint NOT NULL DEFAULT 0,\n"
    "    updated timestamptz NOT NULL DEFAULT now()\n"
    ");\n"
    "CREATE TABLE celeryc.stats_daily (\n"
    "    event_type text NOT NULL,\n"
    "    object_id text NOT NULL,\n"
    "    day date NOT NULL,\n"
    "    count bigint NOT NULL,\n"
    "    unique_visitors bigint NOT NULL,\n"
    "    updated timestamptz NOT NULL DEFAULT now(),\n"
    "    PRIMARY KEY (event_type, object_id, day)\n"
    ");\n"
    /* who was already counted as a unique visitor of (type, object, day) */
    "CREATE TABLE celeryc.stats_daily_visitors (\n"
    "    event_type text NOT NULL,\n"
    "    object_id text NOT NULL,\n"
    "    day date NOT NULL,\n"
    "    visitor bytea NOT NULL,\n"
    "    PRIMARY KEY (event_type, object_id, day, visitor)\n"
    ");\n",
    /* 3 (issue #14): `since` only for the jobs that ask for it, and reruns.
     * Up to version 2 the column default 'since' was written into every job created without
     * a since_kwarg (`jobs create` leaves the column out), and NULL (`--since-kwarg ""`)
     * meant "none": the old default is stored in the rows, not implied by NULL. So dropping
     * the default changes new jobs only; every existing row keeps its value and its
     * behaviour (a job that got `since` still does). Nothing to rewrite.
     * rerun_of: the finished run a `jobs rerun` copied (its args, kwargs and queue); not
     * retry_of, which the retry sweep owns (one retry per failed run, attempt + 1). */
    "ALTER TABLE celeryc.jobs ALTER COLUMN since_kwarg DROP DEFAULT;\n"
    "COMMENT ON COLUMN celeryc.jobs.since_kwarg IS\n"
    "    'kwarg that carries the start of the last successful run; NULL: none';\n"
    "ALTER TABLE celeryc.runs ADD COLUMN rerun_of uuid\n"
    "    REFERENCES celeryc.runs(id) ON DELETE SET NULL;\n"
    "CREATE INDEX runs_rerun_of ON celeryc.runs (rerun_of) WHERE rerun_of IS NOT NULL;\n",
};

int cc_jobstore_schema_count(void)
{
    return (int)(sizeof migrations / sizeof migrations[0]);
}

const char *cc_jobstore_schema_migration(int version)
{
    if (version < 1 || version > cc_jobstore_schema_count())
        return NULL;
    return migrations[version - 1];
}
