/* Chords on the Redis result backend: Celery 5.2's "native join"
 * (celery/backends/redis.py RedisBackend.on_chord_part_return), the chord error path
 * (backends/base.py chord_error_from_stack), and the join that celery.chord_unlock does.
 *
 * Executors (pool children, pool threads, the solo master) call cc_chord_part_return after
 * storing a chord member's result; the master calls it for a member it dead-lettered. When
 * that member completed the chord, the body's publish (or, when a member failed, the body's
 * errbacks) is appended to the caller's plan; the caller runs the plan and then calls
 * cc_chord_done, so a crash in between fires the body again when the member is redelivered
 * instead of losing it.
 *
 * Redis keys (all expire after result_expires):
 *   celery-taskset-meta-<gid>.j   ZSET of members '[1, "<tid>", "<state>", <result>]' scored
 *                                 by group_index (Celery's, same bytes as Python writes)
 *   celery-taskset-meta-<gid>.s   chord size (set by the client before the last member)
 *   celery-taskset-meta-<gid>.t   chord size increments (add_to_chord)
 *   celery-taskset-meta-<gid>     a saved complex header (GroupResult.save), read only
 *   celeryc-chord-completer-<gid> ours: the id of the member that completed the chord
 *
 * Reference: celery-wire.md §3.4, §2.5; fixtures redis-chord.json, task-v2-chord-unlock.json.
 */
#ifndef CELERYC_CHORD_H
#define CELERYC_CHORD_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "backend.h"
#include "canvas.h"
#include "celeryc/status.h"
#include "celeryc/task.h"
#include "config.h"

#define CC_CHORD_KEY_PREFIX       "celery-taskset-meta-"
#define CC_CHORD_COMPLETER_PREFIX "celeryc-chord-completer-"

/* celery.chord_unlock's poll interval when the message says none
 * (result_chord_retry_interval, 1 s) and the bound on its retries when the message says none
 * (Celery: max_retries=None, i.e. forever): enough to poll for result_expires (after which
 * the header's results are gone and the chord can never complete), at least this many. */
#define CC_CHORD_UNLOCK_INTERVAL_S    1.0
#define CC_CHORD_UNLOCK_MIN_RETRIES   3600
#define CC_CHORD_UNLOCK_NEVER_EXPIRES 86400 /* retries when result_expires is 0 (never) */

/* ---- Pure helpers (unit-tested) -------------------------------------------------------- */

/* The ZSET member Celery's redis backend writes for a chord part:
 * json.dumps([1, tid, state, result]) with Python's separators and ASCII escapes, e.g.
 * '[1, "98e2...", "SUCCESS", 2]'. `result` is the value, or the exception dict for
 * FAILURE/REVOKED (NULL = null). Returns owned malloc'd text, or NULL on OOM. */
char *cc_chord_member_encode(const char *tid, const char *state, const json_t *result);

/* Decode one member. Returns CC_OK and owned *tid, *state (malloc'd) and *result (new
 * reference), or CC_EBADMSG (not a 4-element [1, str, str, any] array), CC_ENOMEM. */
int cc_chord_member_decode(const char *s, size_t len, char **tid, char **state, json_t **result,
                           struct cc_err *err) CC_MUST_USE;

/* Celery's PROPAGATE_STATES (FAILURE, REVOKED): a member in one of these fails the chord. */
bool cc_chord_state_propagates(const char *state);

/* repr() of what exception_to_python makes of a stored failure: "ValueError('boom')" for an
 * exception dict, Python's repr of the value otherwise. Owned, NULL on OOM. */
char *cc_chord_exc_repr(const json_t *result);

/* The ChordError the body fails with when member `tid` failed with `result` (exception
 * dict): "Dependency <tid> raised <repr>", as _unpack_chord_result writes
 * it. Owned, NULL on OOM. */
char *cc_chord_dependency_error(const char *tid, const json_t *result);

/* Unpack the decoded members, in order (array of [1, tid, state, result]): *results = the
 * results array (new reference), or, at the first member in a propagating state,
 * *error_text = its ChordError message (owned) and *results = NULL. Returns CC_OK,
 * CC_EBADMSG, CC_ENOMEM. */
int cc_chord_unpack(const json_t *members, json_t **results, char **error_text,
                    struct cc_err *err) CC_MUST_USE;

/* Join a header described by result tuples (GroupResult.as_tuple() children:
 * [[id, parent], null] for a task, [[gid, parent], [tuples...]] for a group), as
 * GroupResult.join(propagate=True) does: `fetch` returns the stored meta of a task id
 * (new reference, NULL when absent = PENDING; *rc set on a backend error). Sets *is_ready
 * (every task in a ready state); when ready, either *results (new reference, nested groups
 * as nested lists) or *failed_id + *failed_repr (owned: the first failed task in order and
 * the repr of its exception). Returns CC_OK, CC_EBADMSG (bad tuple), CC_ENOMEM, or the
 * fetch's error. */
typedef json_t *(*cc_chord_fetch_fn)(const char *task_id, void *arg, int *rc, struct cc_err *err);
int cc_chord_join(const json_t *tuples, cc_chord_fetch_fn fetch, void *arg, bool *is_ready,
                  json_t **results, char **failed_id, char **failed_repr,
                  struct cc_err *err) CC_MUST_USE;

/* ---- Redis -------------------------------------------------------------------------- */

/* A chord member finished (Celery's on_chord_part_return, called by mark_as_done /
 * mark_as_failure / mark_as_revoked when request.chord is set). `state` is "SUCCESS",
 * "FAILURE" or "REVOKED"; `result` the return value or the exception dict. Adds the member
 * (one atomic script: ZADD, ZCOUNT, GET .t/.s, EXPIRE, as Celery's MULTI), skipping a member
 * with the same task id already at its group_index (a redelivered member re-run). When this
 * member completed the chord (or it is a re-run of the member that completed it before the
 * keys were deleted): the results are read back in group_index order and either the body is
 * applied into `plan` with ([results],) (cc_canvas_chord_body; ctx is the member's), or,
 * when a member failed, the body's result is stored as FAILURE
 * celery.exceptions.ChordError("Dependency <tid> raised <repr>") and the body's errbacks
 * (options.link_error) are applied into `plan` as a group with args (body_id,). Then
 * *done_group is set (owned, free()): the caller runs the plan, then calls cc_chord_done.
 * No-op CC_OK when req has no group or no embed.chord, or the backend is not Redis.
 * Returns CC_OK, CC_EBACKEND (Redis failed: nothing fired; the caller treats it like a failed
 * result store), CC_ENOMEM, or cc_canvas_* errors. */
int cc_chord_part_return(struct cc_backend *be, const struct cc_config *cfg,
                         const struct cc_task_request *req, const char *state, const json_t *result,
                         const struct cc_canvas_ctx *ctx, struct cc_canvas_plan *plan,
                         char **done_group, struct cc_err *err) CC_MUST_USE;

/* After the plan of a completed chord was carried out: DEL the chord's keys (.j .t .s and
 * the completer key) in one command. Returns CC_OK or CC_EBACKEND (the keys then expire). */
int cc_chord_done(struct cc_backend *be, const char *group_id, struct cc_err *err) CC_MUST_USE;

/* Celery 5.2's mark_as_failure walks request.chain: every later step that has a task id
 * gets the same FAILURE (`exc`, `traceback`; when `store` is set), so a waiter on any later
 * step (an AsyncResult of the chain's last id) sees the failure instead of PENDING forever,
 * and `part` is called for a later step that is a chord member (options.chord + group_id),
 * to return its chord part. Each step is seen as Celery's Context(chain_elem) with its
 * options merged: id = options.task_id, group = options.group_id, group_index, args,
 * kwargs, root_id = req's; no worker or parent. Steps without a task id of their own
 * (complex signatures) are skipped, as Celery skips them. Returns CC_OK, or CC_EBACKEND when
 * a store failed (logged; the other steps are still tried). */
typedef void (*cc_chain_part_fn)(void *ud, const struct cc_task_request *step, const json_t *exc);
int cc_chord_chain_fail_rest(struct cc_backend *be, const struct cc_config *cfg,
                             const struct cc_task_request *req, bool store, const json_t *exc,
                             const char *traceback, cc_chain_part_fn part, void *ud);

/* Fail a chord body as Celery's chord_error_from_stack does: store FAILURE ChordError(text)
 * on body.options.task_id and apply the body's link_error signatures into `plan` (group with
 * args (body_id,), parent and root = body_id; plan NULL: the caller applies them). Returns CC_OK,
 * CC_EINVAL (body without task_id), CC_EBACKEND, CC_ENOMEM, cc_canvas_* errors. */
int cc_chord_fail_body(struct cc_backend *be, const json_t *body, const char *text,
                       const struct cc_canvas_ctx *ctx, struct cc_canvas_plan *plan,
                       struct cc_err *err) CC_MUST_USE;

/* celery.chord_unlock's join on this executor's backend (GET celery-task-meta-<id> for each
 * header task). See cc_chord_join. CC_EUNSUPP when the backend is not Redis. */
int cc_chord_unlock_join(struct cc_backend *be, const json_t *tuples, bool *is_ready,
                         json_t **results, char **failed_id, char **failed_repr,
                         struct cc_err *err) CC_MUST_USE;

/* Bound on celery.chord_unlock's retries when the message gives no max_retries. */
long cc_chord_unlock_max_retries(const struct cc_config *cfg, double interval_s);

/* The executor's backend and config, for builtins (celery.chord_unlock) that need them.
 * Each executor (prefork child, pool thread, solo master) sets it once on its own thread;
 * cc_chord_executor_backend returns NULL where none was set. */
void cc_chord_executor_set(struct cc_backend *be, const struct cc_config *cfg);
struct cc_backend *cc_chord_executor_backend(const struct cc_config **cfg);

#endif
