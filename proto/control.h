/* Remote control (celery.pidbox) bodies, pure: parse a request, build replies in Celery's
 * shapes and key order (celery-wire.md §5). No sockets, clocks or globals.
 */
#ifndef CELERYC_PROTO_CONTROL_H
#define CELERYC_PROTO_CONTROL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "celeryc/status.h"

/* A decoded pidbox request. Strings owned or NULL; free with cc_control_req_deinit(). */
struct cc_control_req {
    char *method;
    json_t *arguments;    /* owned reference, always an object ({} when absent) */
    char *ticket;         /* NULL for a cast (no reply wanted) */
    char *reply_exchange; /* reply_to.exchange, NULL for a cast */
    char *reply_rk;       /* reply_to.routing_key */
    bool is_for_me;       /* destination / pattern+matcher select `hostname` (kombu's Node) */
};

/* Decode a request body (JSON; Python's NaN / Infinity tokens are read too, see control.c)
 * and decide whether it is addressed to `hostname`, exactly as
 * kombu's Node.handle_message: destination null or [] = everyone, else membership; when
 * destination is null and pattern+matcher are set, match the pattern (matcher "glob" =
 * fnmatch, "pcre" = re.match, anchored at the start). An unknown matcher selects nobody.
 * Returns CC_OK, CC_EBADMSG (not a JSON object, no method), CC_ENOMEM. */
int cc_control_parse(const void *body, size_t len, const char *hostname, struct cc_control_req *out,
                     struct cc_err *err) CC_MUST_USE;

void cc_control_req_deinit(struct cc_control_req *r);

/* Python's truthiness (`if value:`) of a JSON value: null, false, 0, 0.0, "", [] and {}
 * are false, everything else true (1, "yes", "false", [0], {"a": 1}). NULL is false. */
bool cc_control_truthy(const json_t *v);

/* A boolean argument of a command: cc_control_truthy of args[key], `dflt` when absent. */
bool cc_control_arg_bool(const json_t *args, const char *key, bool dflt);

/* Reply body `{"<hostname>": value}` with Python json.dumps separators. `value` borrowed
 * (NULL = JSON null). Returns: owned string (free()), *len set; NULL on ENOMEM. */
char *cc_control_reply_body(const char *hostname, json_t *value, size_t *len);

/* {"ok": text} / {"error": text}. Returns: new reference. */
json_t *cc_control_ok(const char *text);
json_t *cc_control_error(const char *text);

/* What the worker knows of one request, for request-info objects (Request.info()). */
struct cc_control_info {
    const char *id, *name;
    json_t *args, *kwargs; /* borrowed; NULL = [] / {} */
    const char *hostname;
    double time_start; /* epoch seconds; < 0 = null (not started) */
    bool is_acked;
    const char *exchange, *routing_key; /* NULL = "" */
    int priority;
    bool is_redelivered;
    long worker_pid; /* <= 0 = null */
};

/* {"id","name","args","kwargs","type","hostname","time_start","acknowledged",
 *  "delivery_info":{"exchange","routing_key","priority","redelivered"},"worker_pid"}.
 * Returns: new reference, NULL on ENOMEM. */
json_t *cc_control_request_info(const struct cc_control_info *in);

/* A scheduled entry: {"eta": eta_iso, "priority": 6, "request": info} (steals `info`). */
json_t *cc_control_scheduled_entry(const char *eta_iso, json_t *info);

/* kombu Queue.as_dict(recurse=True) for Queue(name, Exchange(exchange, type,
 * durable), routing_key): the key order of the active_queues reply. max_priority <= 0 = null. */
json_t *cc_control_queue_info(const char *name, const char *exchange, const char *exchange_type,
                              const char *routing_key, bool is_durable, int max_priority);

/* "tasks a, b flagged as revoked" / "terminate: a, b" text for a revoke reply, from a
 * JSON array of ids. Returns: owned string. */
char *cc_control_join_ids(const char *prefix, json_t *ids, const char *suffix);

#endif
