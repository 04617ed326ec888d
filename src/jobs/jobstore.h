/* The job store: jobs, runs and run logs in Postgres (schema "celeryc"), the beat lease and
 * the beat's per-entry state. One `struct cc_jobstore` is one libpq connection; it is not shared
 * between threads or across fork() (a forked child opens its own).
 *
 * Schema: see jobstore_schema.c (the migrations, applied in order by cc_jobstore_upgrade) and
 * docs/ARCHITECTURE.md "Job store". Status letters follow InvenioRDM's job system:
 *   Q queued, R running, S success, F failed, W warning, C cancelling, X cancelled,
 *   P partial success.
 *
 * Jobs and runs cross this API as jansson objects whose keys are the column names (what
 * `row_to_json` gives: timestamps are ISO-8601 strings with offset, uuids strings), so the
 * CLI prints them as they are and the beat reads the few fields it needs.
 *
 * Every function returns CC_OK or a negative code with a message in err:
 *   CC_EBACKEND  the server is unreachable or the statement failed (err has libpq's text);
 *   CC_ENOTFOUND no such job / run;
 *   CC_EINVAL    bad input (invalid schedule, unknown concurrency policy, ...), err says what;
 *   CC_EAGAIN    not done because of the state of the data (run exists for the slot, forbid
 *                policy, lease lost), err says which;
 *   CC_ETIMEDOUT another session held a row lock the statement needed for longer than the
 *                session's lock_timeout (cc_jobstore_set_timeouts); nothing was written, the
 *                connection is fine: try again later.
 * No function retries: the caller (beat loop, worker) decides.
 *
 * Sessions never idle inside a transaction for more than a round trip (the only
 * multi-statement transactions are cc_jobstore_upgrade and cc_jobstore_run_create); every session
 * has idle_in_transaction_session_timeout (5 s unless cc_jobstore_set_timeouts says otherwise),
 * so the server ends the session of a process frozen mid-transaction and its locks go. */
#ifndef CELERYC_JOBSTORE_H
#define CELERYC_JOBSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "celeryc/status.h"

struct cc_jobstore;

/* Schema version this build knows (the number of migrations in jobstore_schema.c). */
int cc_jobstore_schema_latest(void);

/* Connect to `url` (postgresql://, postgres://, db+postgresql:// or a libpq "key=value"
 * string), connect_timeout_s bounds the connect. Does not touch the schema. */
int cc_jobstore_open(const char *url, int connect_timeout_s, struct cc_jobstore **out,
                     struct cc_err *err) CC_MUST_USE;
void cc_jobstore_close(struct cc_jobstore *s);
/* The session's lock_timeout (0: wait as long as it takes, the default) and
 * idle_in_transaction_session_timeout (0: none; default 5000), applied now and at every
 * reconnect. The beat uses a tenth and a quarter of its lease. CC_EBACKEND when the server
 * refused them (the values are kept for the next reconnect). */
int cc_jobstore_set_timeouts(struct cc_jobstore *s, int lock_timeout_ms, int idle_tx_timeout_ms,
                             struct cc_err *err) CC_MUST_USE;
/* The socket of the connection (for poll(): LISTEN notifications), -1 when closed. */
int cc_jobstore_fd(const struct cc_jobstore *s);
/* Reconnect after a failure (same URL). */
int cc_jobstore_reconnect(struct cc_jobstore *s, struct cc_err *err) CC_MUST_USE;

/* Current schema version (0: none) and apply every pending migration in one transaction under
 * an advisory lock (several processes may call it at once). *from and *to may be NULL. A database
 * newer than this build is CC_EINVAL ("schema version 5 is newer than this celeryc (3)"). */
int cc_jobstore_version(struct cc_jobstore *s, int *version, struct cc_err *err) CC_MUST_USE;
int cc_jobstore_upgrade(struct cc_jobstore *s, int *from, int *to, struct cc_err *err) CC_MUST_USE;
/* cc_jobstore_upgrade up to version `target` only (1..latest; a database already past it is left
 * as it is): the tests build an older schema with it (`celeryc db debug upgrade-to N`). */
int cc_jobstore_upgrade_to(struct cc_jobstore *s, int target, int *from, int *to,
                           struct cc_err *err) CC_MUST_USE;
/* CC_OK when the schema is at cc_jobstore_schema_latest(), else CC_EINVAL telling the operator
 * to run `celeryc db upgrade` (or pass --db-upgrade). */
int cc_jobstore_check_schema(struct cc_jobstore *s, struct cc_err *err) CC_MUST_USE;

/* ---- Jobs -------------------------------------------------------------------------------- */

/* Validate a job's fields (the keys of the jobs table; see jobstore_schema.c). `is_create`:
 * title and task are required. Checks schedule ({"type":"interval","seconds":N>0} or
 * {"type":"crontab", minute/hour/day_of_week/day_of_month/month_of_year strings, missing =
 * "*"}), timezone (a zone the system has), concurrency (allow|forbid|replace), retry_policy
 * ({"max_attempts":N>=1,"backoff":s>=0,"factor":f>=1,"max_backoff":s}), missed (skip|run_once),
 * args (array), kwargs/options (objects). Pure apart from reading zoneinfo. */
int cc_jobstore_job_validate(const json_t *fields, bool is_create, struct cc_err *err) CC_MUST_USE;
/* Insert a job (validated first); id generated unless fields has one. *out: the new row. */
int cc_jobstore_job_create(struct cc_jobstore *s, const json_t *fields, json_t **out,
                           struct cc_err *err) CC_MUST_USE;
/* Change the given fields of job `id` (validated), updated = now(). *out (may be NULL): the
 * row after the change. */
int cc_jobstore_job_update(struct cc_jobstore *s, const char *id, const json_t *fields,
                           json_t **out, struct cc_err *err) CC_MUST_USE;
/* Delete a job and (cascade) its runs and logs. */
int cc_jobstore_job_delete(struct cc_jobstore *s, const char *id, struct cc_err *err) CC_MUST_USE;
int cc_jobstore_job_get(struct cc_jobstore *s, const char *id, json_t **out,
                        struct cc_err *err) CC_MUST_USE;
/* All jobs (only the active ones when active_only), ordered by title: a JSON array. */
int cc_jobstore_jobs_list(struct cc_jobstore *s, bool active_only, json_t **out,
                          struct cc_err *err) CC_MUST_USE;

/* ---- Runs -------------------------------------------------------------------------------- */

/* Size limits of what a user gives (job fields, run overrides): compact JSON bytes of args,
 * kwargs and options each, and bytes of a queue name (AMQP's short string). */
#define CC_JOBSTORE_ARGS_MAX_BYTES  65536
#define CC_JOBSTORE_QUEUE_MAX_BYTES 255

struct cc_run_new {
    const char *job_id;       /* may be NULL with rerun_of (the run's job) */
    const char *started_by;   /* NULL: the scheduler; else who asked (a user name) */
    int64_t scheduled_for_us; /* the slot (µs since the epoch, UTC); 0 for a manual run */
    int attempt;              /* 1, or n+1 for a retry (retry_of set) */
    const char *retry_of;     /* NULL, or the failed run this one retries */
    const char *rerun_of;     /* NULL, or the finished run this one reruns (`jobs rerun`) */
    const json_t *args;       /* NULL: the job's args (rerun_of: that run's) */
    const json_t *kwargs;     /* NULL: the job's kwargs (rerun_of: that run's) */
    const char *queue;        /* NULL: the job's queue (rerun_of: that run's) */
    int64_t not_before_us;    /* 0, or: do not send before this instant (retry backoff) */
    int64_t epoch;            /* the leader's fencing epoch; 0 = not fenced (manual runs) */
    const char *lease;        /* lease name the epoch belongs to ("beat"); NULL when epoch 0 */
};

/* Check run overrides given by a user (each may be NULL: not given): args a JSON array,
 * kwargs a JSON object, each at most CC_JOBSTORE_ARGS_MAX_BYTES of compact JSON; queue 1 to
 * CC_JOBSTORE_QUEUE_MAX_BYTES bytes. CC_OK or CC_EINVAL, err naming the flag ("--kwargs must be
 * a JSON object"). Pure. */
int cc_jobstore_run_args_validate(const json_t *args, const json_t *kwargs, const char *queue,
                                  struct cc_err *err) CC_MUST_USE;

/* Create a run in status Q with a freshly generated task_id (runs.epoch = rn->epoch), in one
 * transaction that:
 * - (rerun_of) reads that run: it must be finished (S F W P X), else CC_EAGAIN "run <id> is R
 *   (running): only a finished run can be rerun"; unknown: CC_ENOTFOUND; the new run belongs
 *   to its job and takes its args / kwargs / queue where rn gives none;
 * - locks the job row and applies the job's concurrency policy against its Q/R/C runs: allow:
 *   nothing; forbid: a Q/R/C run exists -> CC_EAGAIN "forbid: run <id> is R"; replace: every
 *   such run goes to C and is listed in *cancelled (array of run rows; may be NULL) for the
 *   caller to revoke;
 * - adds the job's since_kwarg (when it has one and the kwargs do not name it already): the
 *   start of the job's last S/P/W run as ISO-8601 UTC, or null, so the row records what the
 *   run is sent with;
 * - (epoch > 0) then checks the lease `lease` still has that epoch (the lease row locked
 *   FOR SHARE from there to the COMMIT only), else CC_EAGAIN "lease lost";
 * - inserts; a run for the same (job, scheduled_for, attempt) -> CC_EAGAIN "exists".
 * args / kwargs of the wrong JSON type are CC_EINVAL. The policy applies to manual runs too.
 * *out: the new run row (keys as the table). `cancelled` may be NULL. */
int cc_jobstore_run_create(struct cc_jobstore *s, const struct cc_run_new *rn, json_t **out,
                           json_t **cancelled, struct cc_err *err) CC_MUST_USE;
/* The name of a status letter ("queued" for 'Q', ...; "?" for another). Static string. */
const char *cc_jobstore_status_name(char status);
/* `kwargs` (borrowed; NULL: the job's kwargs) plus the job's since_kwarg, when the job (a
 * row) has one and the kwargs do not name it: the ISO-8601 UTC start of the job's last
 * S/P/W run, or null. *out: owned, or NULL when nothing is to be added (use kwargs as they
 * are). CC_OK, or the error of the query. */
int cc_jobstore_kwargs_since(struct cc_jobstore *s, const json_t *job, const json_t *kwargs,
                             json_t **out, struct cc_err *err) CC_MUST_USE;
/* sent_at = now() if not set yet (kept for `celeryc db debug mark-sent`; the beat marks a run
 * with cc_jobstore_run_send_claim before it publishes). */
int cc_jobstore_run_mark_sent(struct cc_jobstore *s, const char *id,
                              struct cc_err *err) CC_MUST_USE;
/* Claim the send of run `id` for the leader of `epoch`, fenced like cc_jobstore_run_create, in one
 * statement: a Q run with sent_at NULL gets sent_at = now() and runs.epoch = epoch. Only the
 * winner may publish the run's message; nobody else sends a run whose send is claimed.
 * CC_OK: claimed; CC_EAGAIN "lease lost: ..."; CC_EAGAIN "run is R" / "run is Q (send claimed
 * by epoch N)": someone else has it; CC_ENOTFOUND. */
int cc_jobstore_run_send_claim(struct cc_jobstore *s, const char *id, int64_t epoch,
                               const char *lease, struct cc_err *err) CC_MUST_USE;
/* Give a send claim back (the message was not published: the lease lapsed before the publish,
 * the broker refused or returned it, the connection was lost): sent_at = NULL if the run is
 * still Q and its claim is `epoch`'s; is_notify: NOTIFY celeryc_runs so that whoever leads
 * now sends it (a deposed leader; the leader itself retries at its own pace). Not fenced (a
 * deposed leader gives back its own claim). CC_OK also when there was nothing to give back. */
int cc_jobstore_run_send_undo(struct cc_jobstore *s, const char *id, int64_t epoch, bool is_notify,
                              struct cc_err *err) CC_MUST_USE;
/* Q runs whose send nobody has claimed (sent_at NULL), created more than older_than_s ago,
 * and such Q runs whose not_before has passed (retries), oldest first, at most `limit`. A
 * read: the caller claims each one (cc_jobstore_run_send_claim) before it sends it. */
int cc_jobstore_runs_unsent(struct cc_jobstore *s, int older_than_s, int limit, json_t **out,
                            struct cc_err *err) CC_MUST_USE;
/* Fail run `id` (Q or R) with message (e.g. "message never sent: ..."). */
int cc_jobstore_run_fail(struct cc_jobstore *s, const char *id, const char *message,
                         struct cc_err *err) CC_MUST_USE;

/* Worker side, keyed by task_id (what the message carries):
 * start: Q -> R, started_at = heartbeat_at = now(), hostname. A run already C (cancelled
 * before it started) -> X and CC_ESHUTDOWN (the worker must not run it). A run in another
 * state (a redelivery of R) is left as it is, CC_OK. Unknown task_id: CC_ENOTFOUND. */
int cc_jobstore_run_start(struct cc_jobstore *s, const char *task_id, const char *hostname,
                          struct cc_err *err) CC_MUST_USE;
/* finish: status one of S F W P X; message (may be NULL); processed/errored counters
 * (negative: leave as they are); summary (a JSON object the task reported with
 * cc_task_run_summary, borrowed; NULL: leave as it is). finished_at = now(). A run already
 * finished is not changed (CC_OK). A run in C finishing with anything but S/P/W becomes X. */
int cc_jobstore_run_finish(struct cc_jobstore *s, const char *task_id, char status,
                           const char *message, int64_t processed, int64_t errored,
                           const json_t *summary, struct cc_err *err) CC_MUST_USE;
/* A running run's counters while it runs (negative: leave as they are); a run that is not R
 * or C is left alone (CC_OK). */
int cc_jobstore_run_progress(struct cc_jobstore *s, const char *task_id, int64_t processed,
                             int64_t errored, struct cc_err *err) CC_MUST_USE;
/* heartbeat_at = now() for the runs R/C with these task ids (one statement). */
int cc_jobstore_runs_heartbeat(struct cc_jobstore *s, const char *const *task_ids, size_t n,
                               struct cc_err *err) CC_MUST_USE;

struct cc_run_log {
    int64_t ts_us;     /* when the line was logged */
    const char *level; /* "DEBUG" "INFO" "WARNING" "ERROR" "CRITICAL" */
    const char *message;
    const char *task_id; /* the run is found by task id */
};
/* Insert n log lines in one statement (never one round trip per line). Lines whose task id
 * has no run are dropped silently. */
int cc_jobstore_run_logs_add(struct cc_jobstore *s, const struct cc_run_log *lines, size_t n,
                             struct cc_err *err) CC_MUST_USE;

/* Admin side: */
/* Ask run `id` to stop: Q (not started) -> X at once (*task_id filled: revoke it without
 * terminate); R -> C (*task_id filled: revoke with terminate, the worker then sets X); other
 * states: CC_EAGAIN "run is S". *new_status gets the status now. task_id: 37 bytes. */
int cc_jobstore_run_cancel(struct cc_jobstore *s, const char *id, char task_id[64],
                           char *new_status, struct cc_err *err) CC_MUST_USE;
int cc_jobstore_run_get(struct cc_jobstore *s, const char *id, json_t **out,
                        struct cc_err *err) CC_MUST_USE;
/* Runs, newest first, of one job (job_id NULL: all jobs), at most limit. */
int cc_jobstore_runs_list(struct cc_jobstore *s, const char *job_id, int limit, json_t **out,
                          struct cc_err *err) CC_MUST_USE;
/* Log lines of run `id` with log id > after_id, oldest first, at most limit; each
 * {"id", "timestamp", "level", "message", "task_id"}. */
int cc_jobstore_run_logs_get(struct cc_jobstore *s, const char *id, int64_t after_id, int limit,
                             json_t **out, struct cc_err *err) CC_MUST_USE;
/* started_at of the job's last S (or P/W) run, 0 when none: the "since" of incremental jobs. */
int cc_jobstore_job_last_success(struct cc_jobstore *s, const char *job_id, int64_t *started_us,
                                 struct cc_err *err) CC_MUST_USE;

/* Leader sweeps: */
/* R/C runs whose heartbeat_at is older than timeout_s: R -> F with message "worker <host>
 * lost: no heartbeat for <n> s", C -> X. *n (may be NULL): how many. */
int cc_jobstore_reap(struct cc_jobstore *s, int timeout_s, int *n, struct cc_err *err) CC_MUST_USE;
/* F runs of jobs whose retry_policy allows another attempt and that have no retry yet: create
 * the retry run (attempt+1, same slot, retry_of, not_before = finished_at + backoff *
 * factor^(attempt-1) capped at max_backoff), fenced (one statement). *out: the new runs
 * (array). */
int cc_jobstore_runs_retry(struct cc_jobstore *s, int64_t epoch, const char *lease, json_t **out,
                           struct cc_err *err) CC_MUST_USE;

/* ---- Beat lease and entry state --------------------------------------------------------- */

/* Take or renew lease `name` for `holder` for ttl_ms. The lease is taken when it is free,
 * expired, or already ours; taking it (not renewing) increments the epoch. *epoch: the
 * epoch now held; *is_leader: whether we hold it. Uses the server's clock only. One
 * statement, which waits at most ttl_ms/10 (or the session's lock_timeout if shorter) for
 * another session's lock on the lease row: CC_ETIMEDOUT "lease ... is locked by another
 * session" then (not taken this time; a fenced write of a frozen leader). */
int cc_jobstore_lease(struct cc_jobstore *s, const char *name, const char *holder, int ttl_ms,
                      int64_t *epoch, bool *is_leader, struct cc_err *err) CC_MUST_USE;
/* Give the lease up (at shutdown) if we hold it, so a standby takes over at once. */
int cc_jobstore_lease_release(struct cc_jobstore *s, const char *name, const char *holder,
                              struct cc_err *err) CC_MUST_USE;

/* Record that entry `entry` (a schedule-file entry name, or "job:<uuid>") was dispatched for
 * slot slot_us by the leader of `epoch`: inserts (entry, slot) -- a second dispatch of the
 * same slot is CC_EAGAIN "exists" -- and sets the entry's last_run_at / total_run_count, fenced
 * by the lease (CC_EAGAIN "lease lost"), all in one statement. */
int cc_jobstore_entry_claim(struct cc_jobstore *s, const char *entry, int64_t slot_us,
                            int64_t epoch, const char *lease, const char *task_id,
                            struct cc_err *err) CC_MUST_USE;
/* last_run_at (µs, 0 when never) and total_run_count of every entry: a JSON object
 * {entry: {"last_run_at": us, "total_run_count": n}}. */
int cc_jobstore_entries_state(struct cc_jobstore *s, json_t **out, struct cc_err *err) CC_MUST_USE;

/* ---- Notifications ----------------------------------------------------------------------- */

/* LISTEN on the job store's channels: "celeryc_jobs" (payload: job id; a job was created,
 * changed or deleted) and "celeryc_runs" (payload: run id; a run was created by hand or
 * its status changed to C or F). Triggers in the schema send them, so a change made with
 * psql is seen too. */
int cc_jobstore_listen(struct cc_jobstore *s, struct cc_err *err) CC_MUST_USE;
/* Read pending notifications without blocking (after poll() on cc_jobstore_fd says readable):
 * calls fn(channel, payload, arg) for each. Returns the count, or a negative code. */
int cc_jobstore_notifications(struct cc_jobstore *s,
                              void (*fn)(const char *channel, const char *payload, void *arg),
                              void *arg, struct cc_err *err);

#endif
