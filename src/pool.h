/* Prefork pool: N forked children execute tasks; the master dispatches over pipes.
 *
 * Master -> child: one length-prefixed job record per task on the child's own pipe (only
 * to an idle child: at most one job in flight per child). Child -> master: a fixed-size
 * report (< PIPE_BUF, so writes from all children into the one shared report pipe are
 * atomic) after the child has stored the result itself. A child that dies is reaped and
 * replaced; its job, if any, is reported to the master as lost.
 */
#ifndef CELERYC_POOL_H
#define CELERYC_POOL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "backend.h"
#include "broker.h"
#include "config.h"
#include "consumer.h"

/* Largest message body the pool carries to a child: the upper bound of the
 * worker_max_message_bytes option (config.c refuses more, naming this cap), from which
 * pool.c derives the largest job record a child accepts. */
#define CC_POOL_MAX_MESSAGE_BYTES (256u * 1024u * 1024u)

/* Child -> master, one per finished job. */
struct cc_pool_report {
    uint32_t slot;
    uint32_t seq;
    int32_t status; /* outcome: CC_OK, CC_TASK_FAILED, CC_TASK_RETRY, CC_TASK_REJECT, ... */
    uint8_t reject_requeue;
    uint8_t store_failed; /* the result could not be written (logged by the child) */
    uint8_t pad[2];
    double runtime_s;
    double retry_countdown_s; /* CC_TASK_RETRY without eta */
    char retry_eta[48];       /* CC_TASK_RETRY: ISO-8601 eta, or "" */
};

struct cc_pool_opts {
    int n_children;
    const struct cc_config *cfg;
    const char *hostname;
    struct cc_backend *backend; /* master's object; each child reconnects after fork */
    struct cc_broker *broker;   /* its socket is closed in children */
    bool is_solo; /* --pool solo: run each job in the master, no fork (bonus executor) */
};

struct cc_pool_child {
    pid_t pid;  /* 0 = not running */
    int job_fd; /* write end of the child's job pipe, -1 when closed */
    int index;  /* N in "ForkPoolWorker-N" */
    bool is_busy;
    uint32_t seq; /* job in flight when busy */
};

struct cc_pool {
    struct cc_pool_opts o;
    struct cc_pool_child *kids;
    int n;
    int n_busy;
    int report_rd, report_wr;
    int next_index;
    char *buf; /* job framing buffer (master) */
    size_t cap;
    unsigned char rbuf[sizeof(struct cc_pool_report) * 64];
    size_t rlen;
    int64_t respawn_at_us;     /* cc_mono_us() of the next respawn attempt; 0 = none due */
    unsigned respawn_failures; /* failed attempts since the last successful respawn */
};

/* How often cc_pool_respawn retries a child that could not be forked (billiard's pool
 * maintains its process count on every loop pass; a slot must never stay dead for good). */
#define CC_POOL_RESPAWN_INTERVAL_MS 1000

/* fork(2), replaceable by unit tests to make a respawn fail. */
extern pid_t (*cc_pool_fork)(void);

/* Create the report pipe and fork o->n_children children. Returns CC_OK or CC_EIO. */
int cc_pool_start(struct cc_pool *p, const struct cc_pool_opts *o, struct cc_err *err) CC_MUST_USE;

/* An idle child's slot, or -1. */
int cc_pool_idle(const struct cc_pool *p);

/* Frame `r` and write it to the idle child in `slot` (blocking write; the child is idle and
 * reading). Marks it busy with `seq`. Returns CC_OK, or CC_EIO when the child is gone (it
 * is then reaped as lost by cc_pool_reap, which reports `seq`). */
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

/* Number of live children. */
int cc_pool_alive(const struct cc_pool *p);

/* Stop and free everything. Warm (cold = false) closes every job pipe, so children exit
 * once idle, and waits for them at most max_wait_ms (-1: no limit), polling is_cold_now(ud)
 * (may be NULL) every 10 ms; when it returns true or the time is up, the stop turns cold.
 * Cold sends SIGTERM, then SIGKILL to what is left after grace_ms. */
void cc_pool_stop(struct cc_pool *p, bool cold, int grace_ms, int max_wait_ms,
                  bool (*is_cold_now)(void *ud), void *ud);

/* "signal 9 (SIGKILL)" / "exitcode 1", as billiard's human_status. */
void cc_pool_human_status(int wstatus, char *buf, size_t size);

#endif
