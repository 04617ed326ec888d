/* Job runs on the worker side (issue #6): a task message with the header `celeryc_run` (a
 * run id) executed by a worker started with --job-store.
 *
 * Two halves, each with its own job store connection (src/jobs/jobstore.h), none crossing fork:
 *
 * - Executor (`struct cc_jobrun`, one per prefork child / pool thread / the solo master,
 *   connection opened lazily on the first job run): cc_jobrun_begin marks the run R
 *   (cc_jobstore_run_start; a run cancelled before it started is not run), cc_jobrun_log buffers
 *   the task's log lines and writes them in batches (cc_jobstore_run_logs_add: at 200 lines, 1 s
 *   after the first unwritten line, and at the end), cc_jobrun_end writes the outcome
 *   (cc_jobstore_run_finish: S, F with "Type: message", P / W as the task reported, with the
 *   counters). A store that is unreachable never fails the task: log lines are dropped and
 *   counted (one warning), the outcome is tried once more on a fresh connection.
 *
 * - Master (`struct cc_jobkeeper`): a thread of the master process with its own connection,
 *   so the event loop never waits for Postgres. The loop tells it, under a mutex, which
 *   slots run which job run (cc_jobkeeper_on_dispatch / _on_done); every
 *   job_run_heartbeat_interval seconds it sends one cc_jobstore_runs_heartbeat for all of them.
 *   Outcomes the master decides (WorkerLostError, revoke with terminate, hard time limit,
 *   expired) are queued with cc_jobkeeper_finish and written by the thread (retried every
 *   few seconds while the store is away, bounded).
 */
#ifndef CELERYC_JOBRUN_H
#define CELERYC_JOBRUN_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "celeryc/status.h"
#include "config.h"
#include "consumer.h"
#include "taskrun.h"

/* The AMQP header that makes a task message a job run (value: the run id, a string). */
#define CC_JOBRUN_HEADER "celeryc_run"

/* Log lines buffered before a write, and the longest a line waits (µs). */
#define CC_JOBRUN_LOG_BATCH   200
#define CC_JOBRUN_LOG_WAIT_US 1000000
/* A running run's counters are written at most this often (cc_jobrun_progress). */
#define CC_JOBRUN_PROGRESS_US 2000000

/* The run id a message's headers carry, or NULL (borrowed from `headers`). */
const char *cc_jobrun_header(const json_t *headers);

/* Without a job store the header is ignored: one warning per process (the first time). */
void cc_jobrun_warn_no_store(const char *task_id);

/* ---- Executor ------------------------------------------------------------------------- */

struct cc_jobrun;

/* An executor's state, or NULL when cfg has no job store. */
struct cc_jobrun *cc_jobrun_new(const struct cc_config *cfg);
/* Close its connection (in the process and thread that used it) and free it. NULL ok. */
void cc_jobrun_free(struct cc_jobrun *jr);

/* Start of job run `run_id` for task `req` (req->id is the run's task_id): marks it R.
 * Returns CC_OK (run the task) or CC_ESHUTDOWN (cancelled before it started: do not run it;
 * the store has set X). Store trouble is logged and the task runs untracked. */
int cc_jobrun_begin(struct cc_jobrun *jr, const struct cc_task_request *req, const char *run_id,
                    const char *hostname);
/* One line the task logged (cc_task_hooks.log). */
void cc_jobrun_log(struct cc_jobrun *jr, int level, const char *message);
/* The counters the task reported (cc_task_hooks.progress): written to the run while it runs,
 * at most every CC_JOBRUN_PROGRESS_US (the first one that long after the start), so
 * `celeryc jobs show` follows a long run; failures are ignored (the outcome has the last). */
void cc_jobrun_progress(struct cc_jobrun *jr, int64_t processed, int64_t errored);
/* The run's outcome from the task's final outcome (after the executor stored the result):
 * flushes the logs, then finishes the run (RETRY and a requeued REJECT leave it R). */
void cc_jobrun_end(struct cc_jobrun *jr, const struct cc_task_outcome *out);

/* ---- Master --------------------------------------------------------------------------- */

struct cc_jobkeeper;

/* Start the master's thread (cfg->job_store set) for a pool of up to n_slots slots, after
 * applying the schema migrations (cfg->job_store_upgrade, --db-upgrade) or checking the
 * schema version. *out is NULL when there is no job store. Returns CC_OK (also when the store
 * is unreachable: logged, tracking catches up), CC_ECONFIG (schema too old or too new), the
 * upgrade's error, or CC_EIO (thread). */
int cc_jobkeeper_start(const struct cc_config *cfg, int n_slots, struct cc_jobkeeper **out,
                       struct cc_err *err) CC_MUST_USE;
/* Request `r` was handed to `slot`: heartbeat its run while it runs. k may be NULL (no
 * store: a job run message is then only warned about, once). */
void cc_jobkeeper_on_dispatch(struct cc_jobkeeper *k, int slot, const struct cc_request *r);
/* The job in `slot` ended (report read, or executor lost). */
void cc_jobkeeper_on_done(struct cc_jobkeeper *k, int slot);
/* Queue the outcome of `r`'s run, decided by the master ('F' with "Type: message"; the
 * store turns F into X for a run being cancelled). Nothing when r is not a job run. */
void cc_jobkeeper_finish(struct cc_jobkeeper *k, const struct cc_request *r, char status,
                         const char *message);
/* Write what is queued (waiting at most wait_ms), stop the thread, close, free. NULL ok. */
void cc_jobkeeper_stop(struct cc_jobkeeper *k, int wait_ms);

#endif
