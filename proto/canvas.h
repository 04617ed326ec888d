/* Canvas on the worker side: turn signatures into the task messages (and the few backend
 * steps) that move a workflow forward, as Celery 5.2's Signature.apply_async family does
 * when a worker runs it (celery/canvas.py, celery/app/trace.py, celery/backends/base.py
 * _call_task_errbacks, celery/app/amqp.py as_task_v2).
 *
 * Pure: no sockets, clocks or globals. Ids come from ctx->new_id and time from ctx->now_us,
 * so tests are deterministic. The result is a *plan*: an ordered list of steps the executor
 * carries out (src/worker/outbox.c: publishes on a confirm-mode connection, backend steps on the
 * executor's result backend) before it stores the parent's result with plan->children.
 *
 * Wire reference: docs/reference/celery-wire.md §2.5 (messages the worker publishes),
 * §3.4 (groups and chords on Redis). Fixtures: task-v2-chain-continuations,
 * task-v2-link-callback-published, task-v2-errback-published, redis-chord,
 * task-v2-chord-unlock.
 */
#ifndef CELERYC_PROTO_CANVAS_H
#define CELERYC_PROTO_CANVAS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "celeryc/status.h"
#include "message.h"

/* Who is publishing, and how new messages are routed. All strings borrowed. */
struct cc_canvas_ctx {
    const char *parent_id; /* the task publishing (its id becomes parent_id), or NULL (a client) */
    const char *root_id;   /* its root_id (NULL: parent_id; both NULL: the new task's own id) */
    const char *origin;    /* header "origin", e.g. "gen1234@host" */
    const char *reply_to;  /* app.thread_oid: reply_to of tasks/options without one ("" if NULL) */
    const char *default_queue; /* task_default_queue ("celery" if NULL): routing without queue */
    /* -1: none. >= 0: the running task's delivery priority, set only with
     * task_inherit_parent_priority: on_success passes it as priority= (trace.py's
     * task_priority), and cc_canvas_apply's tasks inherit it (send_task's setdefault). */
    int priority;
    int64_t now_us; /* for countdown -> eta and expires -> expiration */
    /* A fresh uuid4 ("xxxxxxxx-xxxx-4xxx-...") for a task or group without options.task_id.
     * Called in the order Celery calls uuid() (tests replay captured ids in that order). */
    void (*new_id)(char out[37], void *arg);
    void *new_id_arg;
};

enum cc_canvas_step_kind {
    CC_CANVAS_PUBLISH,    /* publish msg to exchange/routing_key */
    CC_CANVAS_CHORD_SIZE, /* Redis backend: SETEX celery-taskset-meta-<group_id>.s <chord_size>
                           * (Celery's set_chord_size, just before the last header member;
                           * other backends: no-op, as Celery's base backend) */
    CC_CANVAS_SAVE_GROUP, /* Redis apply_chord when a header member's result is a group:
                           * GroupResult.save(), i.e. SETEX celery-taskset-meta-<group_id>
                           * <result_expires> {"result": group_result} (before the header) */
};

struct cc_canvas_step {
    enum cc_canvas_step_kind kind;
    /* CC_CANVAS_PUBLISH */
    char *exchange;    /* owned; "" = default exchange */
    char *routing_key; /* owned */
    struct cc_msg_out msg;
    char *task_id; /* owned; the published message's id (log lines, tests) */
    char *task;    /* owned; its task name */
    /* CC_CANVAS_CHORD_SIZE / CC_CANVAS_SAVE_GROUP */
    char *group_id;       /* owned */
    long chord_size;      /* CHORD_SIZE */
    json_t *group_result; /* SAVE_GROUP: owned, GroupResult.as_tuple() */
};

struct cc_canvas_plan {
    struct cc_canvas_step *steps; /* owned, n used of cap */
    size_t n, cap;
    /* Result tuples of what was applied, in order, for the parent's meta "children":
     * [[id, null], null] for a task, [[gid, null], [member tuples...]] for a group, as
     * Celery's result.as_tuple(). Owned JSON array (never NULL after a successful call). */
    json_t *children;
};

void cc_canvas_plan_init(struct cc_canvas_plan *p);
void cc_canvas_plan_deinit(struct cc_canvas_plan *p);

/* Apply one signature dict (task, chain, group or chord, possibly nested) as
 * `Signature.apply_async(args=prepend, **extra)` does in the task that builds it (Python code
 * in a task: its args are tuples, so argsrepr is "(2, 2)"), appending its steps to `plan` and
 * its result tuple to plan->children (as send_task / group.apply_async add_trail). `prepend`
 * (array, may be NULL) is put before the signature's own args unless it is immutable (for
 * groups and chords: every header member). `extra` (object, may be NULL) holds apply_async
 * options that override the signature's ("task_id", "queue", "countdown", "parent_id",
 * "root_id", "chain", "add_to_parent": false, ...). Unknown option keys are kept in every
 * signature embedded in a message (embed.chain, embed.chord, link, link_error); on the
 * message itself they are dropped as Celery 5.2 drops them, except "headers" (merged into
 * the header table) and Celery >= 5.3 stamping ("stamped_headers" + the stamp options ->
 * headers stamped_headers / stamps). Several calls may share one plan (steps and children
 * accumulate). Returns CC_OK, CC_EINVAL (malformed signature or option type: err says why;
 * also xmap/xstarmap/chunks, which are not modelled), CC_ENOMEM. On error the plan may hold
 * earlier steps: the caller discards it. */
int cc_canvas_apply(struct cc_canvas_plan *plan, const json_t *sig, const json_t *prepend,
                    const json_t *extra, const struct cc_canvas_ctx *ctx,
                    struct cc_err *err) CC_MUST_USE;

/* After a task succeeded with `retval` (trace.py): each `callbacks` signature applied with
 * (retval,) (several: the groups among them one by one, the rest as one new group, as Celery
 * does), then the last element of `chain` popped and applied with (retval,) and
 * chain=<the rest> ([] not null); parent_id = ctx->parent_id, root_id = ctx->root_id,
 * priority = ctx->priority. `embed` is the message's embed object (callbacks/errbacks/chain/
 * chord; NULL = {}); `chord` is ignored here (src/worker/chord.c). plan->children is what Celery
 * stores as the result's "children" (call this before storing the result). */
int cc_canvas_on_success(struct cc_canvas_plan *plan, const json_t *embed, const json_t *retval,
                         const struct cc_canvas_ctx *ctx, struct cc_err *err) CC_MUST_USE;

/* After a task failed: the old-style `errbacks` (a JSON array of signatures the executor did
 * not call in-process) applied as one group with args (failed_id,), parent_id = failed_id,
 * root_id = the failed task's root (Celery 5.2 _call_task_errbacks). */
int cc_canvas_on_failure(struct cc_canvas_plan *plan, const json_t *errbacks, const char *failed_id,
                         const struct cc_canvas_ctx *ctx, struct cc_err *err) CC_MUST_USE;

/* The chord body fired with the ordered header results (`results`: JSON array), as the
 * Redis backend's on_chord_part_return and celery.chord_unlock do (`callback.delay(results)`):
 * body applied with ([results],), its id from body.options.task_id, parent_id = ctx->parent_id
 * (the member that completed the chord, or chord_unlock's id). A body that is a chain or group
 * is applied as such. */
int cc_canvas_chord_body(struct cc_canvas_plan *plan, const json_t *body, const json_t *results,
                         const struct cc_canvas_ctx *ctx, struct cc_err *err) CC_MUST_USE;

/* Celery's chord._descend / __length_hint__: how many completions a header member counts
 * for (a task 1, a group the sum of its members, a chain its last non-empty step, a chord
 * its body). The CC_CANVAS_CHORD_SIZE step carries the sum over the header. */
long cc_canvas_chord_size(const json_t *sig);

#endif
