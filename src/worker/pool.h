/* Execution pools: prefork (N forked children, the default), threads (N threads in the
 * master process) and solo (the master itself); the master dispatches over pipes.
 *
 * Master -> executor: one length-prefixed job record per task on the executor's own pipe
 * (only to an idle one: at most one job in flight each). Executor -> master: a fixed-size
 * report (< PIPE_BUF, so writes from all of them into the one shared report pipe are
 * atomic) after the executor has stored the result itself. A child that dies is reaped and
 * replaced; its job, if any, is reported to the master as lost. Time limits are the
 * master's (cc_pool_tick): soft = SIGUSR1 to the child (a flag for a thread), hard = SIGKILL
 * and a report synthesised with status CC_POOL_TIME_LIMIT.
 */
#ifndef CELERYC_POOL_H
#define CELERYC_POOL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "backend.h"
#include "broker.h"
#include "config.h"
#include "consumer.h"
#include "outbox.h"

struct cc_jobrun; /* [jobrun] jobrun.h */

/* Largest message body the pool carries to a child: the upper bound of the
 * worker_max_message_bytes option (config.c refuses more, naming this cap), from which
 * pool.c derives the largest job record a child accepts. */
#define CC_POOL_MAX_MESSAGE_BYTES (256u * 1024u * 1024u)

/* Report status the master synthesises when it killed a child at the job's hard time limit
 * (nothing stored yet: the master stores TimeLimitExceeded, cc_pool_store_time_limit). */
#define CC_POOL_TIME_LIMIT (-590)

/* Exit status of a child that retires after max_tasks_per_child / max_memory_per_child
 * (billiard's EX_RECYCLE): replaced without being logged as a crash. */
#define CC_POOL_EX_RECYCLE 0x9B

/* [poolsize] Most processes (threads) pool_grow may bring the pool to; a worker started
 * with more (-c) keeps its start size as its maximum. The slot arrays (cc_pool.kids, the
 * worker's running[]) are allocated for this many once, at start, and never move. */
#define CC_POOL_MAX_PROCESSES 1024

/* Child -> master, one per finished job. */
struct cc_pool_report {
    uint32_t slot;
    uint32_t seq;
    int32_t status; /* outcome: CC_OK, CC_TASK_FAILED, CC_TASK_RETRY, CC_TASK_REJECT, ...,
                       CC_POOL_TIME_LIMIT */
    uint8_t reject_requeue;
    uint8_t store_failed; /* the result could not be written (logged by the child) */
    uint8_t is_exiting;   /* the child exits after this report (max tasks / memory per child) */
    uint8_t is_limit_int; /* CC_POOL_TIME_LIMIT: the limit was an int in the message */
    /* [canvas] a continuation (callback, chain step, errback, chord body) could not be
     * published (logged by the executor): the master requeues an acks_late message, as for
     * store_failed, so it runs again and nothing is lost. */
    uint8_t publish_failed;
    double runtime_s;
    double retry_countdown_s; /* CC_TASK_RETRY without eta */
    char retry_eta[48];       /* CC_TASK_RETRY: ISO-8601 eta, or "" */
    double time_limit_s;      /* CC_POOL_TIME_LIMIT: the hard limit that was exceeded */
    /* [events] Only for jobs sent with task events on (cc_pool.is_event_text): the result
     * repr (success; Celery's saferepr cut at resultrepr_maxsize 1024) or the exception repr
     * and traceback (failure, retry), as "repr\0traceback\0". Only the first ev_len bytes
     * of ev_text travel through the pipe (CC_POOL_REPORT_BYTES), so a report without them
     * costs what it did. Must stay the last members. */
    uint16_t ev_len;
    char ev_text[3840];
};

/* Bytes of `rep` written to the report pipe: the fixed part and ev_len bytes of text. */
#define CC_POOL_REPORT_HEAD       offsetof(struct cc_pool_report, ev_text)
#define CC_POOL_REPORT_BYTES(rep) (CC_POOL_REPORT_HEAD + (size_t)(rep)->ev_len)
_Static_assert(sizeof(struct cc_pool_report) <= 4096, "a report must be written atomically");

struct cc_pool_opts {
    int n_children;
    const struct cc_config *cfg;
    const char *hostname;
    struct cc_backend *backend; /* master's object; each child reconnects after fork */
    struct cc_broker *broker;   /* its socket is closed in children */
    bool is_solo;               /* --pool solo: run each job in the master, no fork */
    bool is_threads;            /* --pool threads: n_children threads in the master process */
    /* [control] Run-time per-task limits (the time_limit command), or NULL: returns true and
     * replaces *soft_s / *hard_s (the entry's) when `name` has limits set; 0 = the default. */
    bool (*task_limits)(void *ud, const char *name, double *soft_s, double *hard_s);
    void *task_limits_ud;
};

struct cc_pool_child {
    pid_t pid;  /* 0 = not running (threads and solo: the master's pid while running) */
    int job_fd; /* write end of the child's job pipe, -1 when closed */
    int index;  /* N in "ForkPoolWorker-N" */
    bool is_busy;
    bool is_retiring; /* sent its last report (recycling): never given another job */
    /* [poolsize] The slot left the pool (pool_shrink): its job pipe is closed, so its
     * executor exits once idle (after the job in flight, if any); never given a job, never
     * respawned. cc_pool_grow reuses the slot once the executor is gone. */
    bool is_removed;
    uint32_t seq; /* job in flight when busy */

    /* Time limits of the job in flight (0 = none), from cc_mono_us() at dispatch. */
    const struct cc_request *req; /* borrowed: the master frees it after the report */
    int64_t soft_at_us, hard_at_us;
    double soft_s, hard_s;
    bool is_soft_int, is_hard_int; /* the limit came from the message as an int */
    bool is_soft_sent;

    /* --pool threads */
    pthread_t thread;
    bool has_thread;
    atomic_int soft_flag;  /* set by the master at the soft limit, cleared by the thread */
    atomic_bool is_done;   /* the thread has left its loop */
    struct cc_backend *be; /* the thread's own backend object */
};

struct cc_pool {
    struct cc_pool_opts o;
    /* [poolsize] kids and synth have n_slots_max entries, allocated once at start (pool
     * threads point into kids); slots [0, n) are used, by members and removed slots. */
    struct cc_pool_child *kids;
    int n;
    int n_slots_max;
    int size; /* members: slots not removed (the concurrency) */
    int n_busy;
    int report_rd, report_wr;
    int next_index;
    char *buf; /* job framing buffer (master) */
    size_t cap;
    unsigned char rbuf[sizeof(struct cc_pool_report) * 64];
    size_t rlen;
    int64_t respawn_at_us;        /* cc_mono_us() of the next respawn attempt; 0 = none due */
    unsigned respawn_failures;    /* failed attempts since the last successful respawn */
    struct cc_pool_report *synth; /* CC_POOL_TIME_LIMIT reports not yet read */
    int n_synth;                  /* counted in n_busy until read */
    bool is_event_text;           /* [events] children send result/exception text (-E) */
    struct cc_outbox *solo_ob;    /* [canvas] --pool solo: the master's executor outbox */
    struct cc_outbox *master_ob;  /* [canvas] ids/origin for master-side errbacks (no I/O) */
    struct cc_jobrun *solo_jr;    /* [jobrun] --pool solo: the master's executor run state */
    timer_t solo_timer;           /* --pool solo: SIGUSR1 at the soft limit */
    bool has_solo_timer;
};

/* How often cc_pool_respawn retries a child that could not be forked (billiard's pool
 * maintains its process count on every loop pass; a slot must never stay dead for good). */
#define CC_POOL_RESPAWN_INTERVAL_MS 1000

/* fork(2), replaceable by unit tests to make a respawn fail. */
extern pid_t (*cc_pool_fork)(void);

/* Create the report pipe and fork o->n_children children (threads: start them, each with
 * its own backend object from cc_backend_open; solo: nothing). Builds cc_taskrun_lookup's
 * index first. Warns when hard time limits are configured with a pool that cannot enforce
 * them. Returns CC_OK or CC_EIO. */
int cc_pool_start(struct cc_pool *p, const struct cc_pool_opts *o, struct cc_err *err) CC_MUST_USE;

/* An idle child's slot, or -1. */
int cc_pool_idle(const struct cc_pool *p);

/* Frame `r` and write it to the idle child in `slot` (blocking write; the child is idle and
 * reading). Marks it busy with `seq` and arms its time limits: the message's `timelimit`,
 * else the task entry's, else task_time_limit / task_soft_time_limit. `r` is borrowed until
 * its report has been read. Solo: runs the job before returning. Returns CC_OK, or CC_EIO
 * when the child is gone (it is then reaped as lost by cc_pool_reap, which reports `seq`). */
int cc_pool_dispatch(struct cc_pool *p, int slot, const struct cc_request *r, uint32_t seq,
                     struct cc_err *err) CC_MUST_USE;

/* The shared report pipe's read end (non-blocking) to poll. */
int cc_pool_report_fd(const struct cc_pool *p);

/* Read what is available: up to `max` reports into `out`; marks those children idle.
 * Returns the number read (0 if none). */
int cc_pool_read_reports(struct cc_pool *p, struct cc_pool_report *out, int max);

/* Reap exited children (waitpid WNOHANG). For each one that died with a job in flight,
 * calls on_lost(ud, slot, seq, wait_status). Respawns dead children when `respawn`; a
 * child that cannot be forked is retried by cc_pool_respawn every
 * CC_POOL_RESPAWN_INTERVAL_MS. Call only after draining reports (a child's last report
 * precedes its exit). */
void cc_pool_reap(struct cc_pool *p, bool respawn,
                  void (*on_lost)(void *ud, int slot, uint32_t seq, int wstatus), void *ud);

/* Retry the respawns cc_pool_reap could not do, if one is due at now_us (cc_mono_us()).
 * Logs the first failure, one a minute after that, and the recovery. */
void cc_pool_respawn(struct cc_pool *p, int64_t now_us);

/* cc_mono_us() when cc_pool_respawn has work, 0 if none (for the caller's poll timeout). */
int64_t cc_pool_respawn_at_us(const struct cc_pool *p);

/* Enforce time limits at now_us (cc_mono_us()); call once per loop pass, after reading
 * reports. Soft: logs Celery's warning and signals the child (SIGUSR1) or sets the thread's
 * flag. Hard (prefork): logs Celery's error, SIGKILLs the child and queues a report with
 * status CC_POOL_TIME_LIMIT for the job, returned by the next cc_pool_read_reports (and
 * counted in n_busy until then); the dead child is reaped without a WorkerLostError. */
void cc_pool_tick(struct cc_pool *p, int64_t now_us);

/* cc_mono_us() of the next time limit cc_pool_tick must act on (now when a synthesised report
 * waits to be read), 0 if none (for the caller's poll timeout). */
int64_t cc_pool_deadline_us(const struct cc_pool *p);

/* For a CC_POOL_TIME_LIMIT report: store FAILURE billiard.exceptions.TimeLimitExceeded(limit)
 * for `r` through the master's backend, as Celery's Request.on_timeout does (unless the
 * result is ignored and errors are not stored). Logs a store that fails. */
void cc_pool_store_time_limit(struct cc_pool *p, const struct cc_request *r,
                              const struct cc_pool_report *rep);

/* [canvas] Celery's _call_task_errbacks for a failure the master stores itself
 * (TimeLimitExceeded from on_timeout, WorkerLostError from on_failure): new-style errbacks
 * that are tasks of our table are called here, in the master, as Celery's main process does;
 * the others are applied into `plan` as one group with (task_id,), for the caller to publish.
 * `exc` is the stored exception dict (borrowed). Returns CC_OK, or a codec error (err). */
int cc_pool_master_errbacks(struct cc_pool *p, const struct cc_request *r, const json_t *exc,
                            struct cc_canvas_plan *plan, struct cc_err *err) CC_MUST_USE;

/* "Celery" pool name for logs and the banner: "prefork", "threads" or "solo". */
const char *cc_pool_kind_name(const struct cc_pool *p);

/* Number of live children. */
int cc_pool_alive(const struct cc_pool *p);

/* ---- [poolsize] Resizing at run time (pool_grow / pool_shrink) ----------------------- */

/* The pool's size: its members (the current concurrency), live or awaiting a respawn. */
int cc_pool_size(const struct cc_pool *p);

/* The largest size cc_pool_grow accepts: max(CC_POOL_MAX_PROCESSES, start size); 1 (solo). */
int cc_pool_max_size(const struct cc_pool *p);

/* Add n executors (prefork: fork n children; threads: start n threads), as billiard's
 * Pool.grow. Reuses the slots of removed executors that are gone, else takes new ones below
 * n_slots_max. A child that cannot be forked stays a member and is retried by cc_pool_respawn.
 * Returns CC_OK; CC_EUNSUPP for solo; CC_ERANGE (nothing changed) when n < 0, the size would
 * pass cc_pool_max_size, or retiring executors still hold the slots needed; CC_EIO when a
 * thread could not be started (the threads started before it stay). */
int cc_pool_grow(struct cc_pool *p, int n, struct cc_err *err) CC_MUST_USE;

/* Remove n executors, never killing a busy one: first members awaiting a respawn or about
 * to exit anyway, then idle ones (they exit at once), then busy ones, which finish and
 * report their job, then exit (billiard's Pool.shrink takes only idle ones and fails when
 * all are busy). A removed slot is not respawned and is never given a job; its child is
 * reaped by cc_pool_reap as usual (a crash during its last job is still a lost job).
 * Returns CC_OK; CC_EUNSUPP for solo; CC_ERANGE (nothing changed) when n < 0 or fewer than
 * one executor would be left. */
int cc_pool_shrink(struct cc_pool *p, int n, struct cc_err *err) CC_MUST_USE;

/* Stop and free everything. Warm (cold = false) closes every job pipe, so children exit
 * once idle, and waits for them at most max_wait_ms (-1: no limit), polling is_cold_now(ud)
 * (may be NULL) every 10 ms; when it returns true or the time is up, the stop turns cold.
 * Cold sends SIGTERM, then SIGKILL to what is left after grace_ms. */
void cc_pool_stop(struct cc_pool *p, bool cold, int grace_ms, int max_wait_ms,
                  bool (*is_cold_now)(void *ud), void *ud);

/* "signal 9 (SIGKILL)" / "exitcode 1", as billiard's human_status. */
void cc_pool_human_status(int wstatus, char *buf, size_t size);

#endif
