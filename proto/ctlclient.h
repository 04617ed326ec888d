/* The client side of Celery remote control (pidbox) and of `celery events --dump`: pure
 * encoding of requests from command-line words and text formatting of replies and events
 * exactly as the `celery` CLI prints them. No sockets, clocks or globals; src/client/cli.c does
 * I/O.
 *
 * References: celery-wire.md §5 (pidbox request/reply), §4 (events); celery/bin/control.py
 * (_compile_arguments, _say_remote_command_reply), celery/bin/base.py (pretty, pretty_list,
 * say_chat), celery/worker/control.py (Panel.meta: argument names and types),
 * celery/events/dumper.py (Dumper.on_event).
 */
#ifndef CELERYC_PROTO_CTLCLIENT_H
#define CELERYC_PROTO_CTLCLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "celeryc/status.h"
#include "strbuf.h"

enum cc_ctlclient_kind {
    CC_CTLCLIENT_UNKNOWN = 0,
    CC_CTLCLIENT_INSPECT = 1,
    CC_CTLCLIENT_CONTROL = 2,
};

/* Whether `method` is an inspect or a control command as `celery inspect|control` lists them
 * (Panel.meta, visible ones). */
enum cc_ctlclient_kind cc_ctlclient_kind(const char *method);

/* Print the methods of `kind`, one per line with their arguments, for --help. */
void cc_ctlclient_list(struct cc_strbuf *out, enum cc_ctlclient_kind kind);

/* Build the request `arguments` from the words after the method, as celery's
 * _compile_arguments does: positional arguments by name and type (str, int, float, bool),
 * the rest into the variadic list (revoke/terminate task_id, query_task ids, registered
 * taskinfoitems). Returns CC_OK and *out (owned) or CC_EUSAGE (too many arguments, bad number)
 * with the reason in err. */
int cc_ctlclient_arguments(const char *method, int argc, const char *const *argv, json_t **out,
                           struct cc_err *err) CC_MUST_USE;

/* The request body in kombu's key order: method, arguments, destination (list or null),
 * pattern, matcher (null), then ticket and reply_to {exchange, routing_key} when `ticket`
 * is non-NULL. `arguments` is borrowed (copied in). Returns an owned object or NULL. */
json_t *cc_ctlclient_request(const char *method, const json_t *arguments, const char *const *dest,
                             size_t n_dest, const char *ticket, const char *reply_exchange,
                             const char *reply_routing_key);

/* The `celery inspect`/`control` lines for one node's reply:
 *   "->  <node>: OK\n" then the reply pretty-printed and indented (show_body), or
 *   "->  <node>: ERROR\n" for {"error": ...}. As celery/bin/base.py pretty() without colour. */
void cc_ctlclient_say_reply(struct cc_strbuf *out, const char *node, const json_t *reply,
                            int show_body);

/* "\n<n> node(s) online.\n" */
void cc_ctlclient_say_online(struct cc_strbuf *out, size_t n_nodes);

/* json.dumps(v, sort_keys=sort, indent=indent) as Python prints it (indent < 0: one line with
 * ", " and ": " separators, ensure_ascii, Python float repr). */
void cc_ctlclient_json_dump(struct cc_strbuf *out, const json_t *v, int indent, int sort_keys);

/* str(v) in Python: a string as is, anything else as its repr. */
void cc_ctlclient_pystr(struct cc_strbuf *out, const json_t *v);

/* One `celery events --dump` line (without the newline) for event `ev` (an object with type,
 * hostname, timestamp, ...): "<host> [<utc datetime>] <human type>: k=v, ..." with task events
 * "<host> [<dt>] <type>: <task label> k=v, ...". `task_label` is what the caller remembered
 * for the uuid from its task-received/task-sent event ("name(uuid) args=.. kwargs=.."), or "";
 * for task-received/task-sent, the label is built and also stored in *new_label (owned) when
 * new_label is non-NULL. */
void cc_ctlclient_event_line(struct cc_strbuf *out, const json_t *ev, const char *task_label,
                             char **new_label);

/* ---- celery result -------------------------------------------------------------------- */

/* Whether a stored meta (celery-task-meta-<id>) is in a ready state: SUCCESS, FAILURE or
 * REVOKED (AsyncResult.get() returns or raises; it waits through PENDING, STARTED, RETRY). */
int cc_ctlclient_result_is_ready(const json_t *meta);

/* What `celery result <id>` (celery/bin/result.py, no -A app) prints for the stored `meta`:
 *   show_traceback: the stored traceback and a newline (an empty line when there is none),
 *     on stdout; exit 0 whatever the state (PENDING: meta may be NULL);
 *   SUCCESS: str(result) and a newline on stdout (None: an empty line); exit 0;
 *   FAILURE, REVOKED: get() re-raises in the client, Python prints a traceback of the CLI
 *     itself on stderr and exits 1; `err` gets its last line, the exception as the client
 *     rebuilt it (cc_ctlclient_client_exc_line) and a newline.
 * Returns the exit status (0 or 1). */
int cc_ctlclient_result_say(struct cc_strbuf *out, struct cc_strbuf *err, const json_t *meta,
                            int show_traceback);

/* The last traceback line Python prints for the stored exception dict `exc`
 * ({exc_type, exc_message, exc_module}) once the `celery` CLI (no app imported) rebuilt it with
 * exception_to_python: builtins and the classes of celery.exceptions / billiard.exceptions
 * are found ("ValueError: boom", "celery.exceptions.TaskRevokedError: revoked",
 * "billiard.exceptions.TimeLimitExceeded: TimeLimitExceeded(1,)"; OSError(errno, ...) becomes
 * its errno subclass); any other module is not loaded there, so the class is created in
 * celery.exceptions and str() is Exception's ("celery.exceptions.CustomError: ('x', 42)").
 * No newline. */
void cc_ctlclient_client_exc_line(struct cc_strbuf *out, const json_t *exc);

#endif
