/* celeryc canvas API: build Celery signatures, chains, groups and chords from C.
 *
 * A signature is a JSON object shaped exactly as Celery's Signature dict (what a Python
 * client embeds in a message and what `celery.signature(d)` accepts):
 *
 *     {"task": "proj.add", "args": [2, 2], "kwargs": {}, "options": {},
 *      "subtask_type": null, "immutable": false}
 *
 * chains are {"task": "celery.chain", ..., "kwargs": {"tasks": [sig, ...]},
 * "subtask_type": "chain"}, groups {"task": "celery.group", "kwargs": {"tasks": [...]},
 * "subtask_type": "group"}, chords {"task": "celery.chord", "kwargs": {"kwargs": {},
 * "header": [sig, ...], "body": sig}, "subtask_type": "chord"}: the same dicts Celery 5.2's
 * _chain/group/chord serialise to (byte for byte, key order included), so a Python worker
 * receiving them (as a callback or a chain step) treats them as its own. cc_chain follows
 * Python's chain(a, b, c) = a | b | c: chains are flattened, a group followed by a signature
 * becomes a chord, a signature after a chord extends the chord's body.
 *
 * Builders take ownership ("steal") of every json_t passed in, like json_object_set_new, and
 * return a new reference, or NULL on allocation failure (having released what they stole).
 * Send a signature from inside a task with cc_task_send() (include/celeryc/task.h).
 *
 *     json_t *wf = cc_chain(cc_sig("proj.add", json_pack("[i,i]", 2, 2), NULL),
 *                           cc_sig("proj.mul", json_pack("[i]", 4), NULL), NULL);
 *     char id[37];
 *     if (cc_task_send(ctx, wf, id) != CC_OK) ...
 */
#ifndef CELERYC_CANVAS_H
#define CELERYC_CANVAS_H

#include <stdbool.h>

#include <jansson.h>

/* A task signature: args (array) and kwargs (object) may be NULL for [] / {}. */
json_t *cc_sig(const char *task, json_t *args, json_t *kwargs);

/* Set options["<name>"] = value (steals value): "task_id", "queue", "routing_key",
 * "exchange", "countdown", "eta", "expires", "priority", "time_limit", "soft_time_limit",
 * "link", "link_error", ... as apply_async accepts them. Returns sig (NULL if sig is NULL). */
json_t *cc_sig_set(json_t *sig, const char *name, json_t *value);

/* Make a signature immutable (Celery's .si()): the parent's result is not prepended. */
json_t *cc_sig_immutable(json_t *sig);

/* Add a callback / errback (Celery's sig.link(cb) / sig.link_error(eb)); steals cb. On a
 * group: link puts an immutable copy on the first member, link_error goes on every member;
 * on a chord: on the body (as Celery does). */
json_t *cc_sig_link(json_t *sig, json_t *callback);
json_t *cc_sig_link_error(json_t *sig, json_t *errback);

/* NULL-terminated lists of signatures (steals each). An inner builder that ran out of
 * memory returns NULL, which ends the list early: the result is then incomplete, so on
 * allocation failure build step by step if that matters. */
json_t *cc_chain(json_t *first, ...);
json_t *cc_group(json_t *first, ...);

/* chord(header, body): header is a group, a JSON array of signatures or one signature (its
 * members are stored as a list, as Celery's _maybe_group does). */
json_t *cc_chord(json_t *header, json_t *body);

#endif
