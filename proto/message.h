/* Celery task messages, protocol 2 and 1: decode what clients publish, encode what we publish.
 *
 * Pure codec: no sockets, clocks or globals. The broker layer turns an AMQP delivery into a
 * struct cc_msg_raw (headers already converted to JSON by proto/amqptab.h), and
 * cc_message_decode() validates it into a struct cc_msg, the one shape the worker executes.
 *
 * Wire reference: docs/reference/celery-wire.md §2 (headers §2.2, body §2.3, minimal
 * and poison messages §2.3a, protocol 1 and detection §2.6, serializers §2.7).
 */
#ifndef CELERYC_PROTO_MESSAGE_H
#define CELERYC_PROTO_MESSAGE_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "celeryc/status.h"
#include "bytes.h"

/* A delivery as the broker layer hands it over. Views are borrowed from the delivery; a NULL
 * `p` means the property was absent. */
struct cc_msg_raw {
    cc_bytes_t content_type;
    cc_bytes_t content_encoding;
    cc_bytes_t correlation_id;
    cc_bytes_t reply_to;
    cc_bytes_t expiration;
    int delivery_mode;     /* 0 = absent */
    int priority;          /* -1 = absent */
    const json_t *headers; /* borrowed JSON object, NULL = no header table */
    cc_bytes_t body;
};

/* Limits applied while decoding untrusted bytes. Zero fields take the defaults below. */
struct cc_msg_limits {
    size_t max_body_bytes;     /* default CC_MSG_MAX_BODY_DEFAULT; larger -> CC_ETOOBIG */
    size_t max_inflated_bytes; /* cap for compressed bodies after inflating */
};
#define CC_MSG_MAX_BODY_DEFAULT     (16u * 1024u * 1024u)
#define CC_MSG_MAX_INFLATED_DEFAULT (64u * 1024u * 1024u) /* max_inflated_bytes when 0 */

/* Fixed limits on the string fields of a task message, in bytes of UTF-8 (README "Message
 * limits"). Past one, cc_message_decode() returns CC_ETOOBIG naming the field, its size and the
 * limit. Ids and names allow 255 characters of 4-byte UTF-8 (a Celery client cannot send a
 * longer id: it also goes in the correlation_id property, an AMQP short string of at most
 * 255 bytes), with room to spare; the rest are what Celery itself writes, with headroom
 * (argsrepr: argsrepr_maxsize is 1024 characters by default). AMQP caps the short strings
 * (routing key, exchange, reply_to, correlation_id, content type and encoding) at 255 bytes
 * and the header table at one frame (frame_max 131072 bytes, negotiated at login). */
#define CC_MSG_MAX_ID_BYTES     1024u         /* id, root_id, parent_id, group */
#define CC_MSG_MAX_NAME_BYTES   1024u         /* task, shadow */
#define CC_MSG_MAX_ORIGIN_BYTES 1024u         /* origin ("gen<pid>@<hostname>") */
#define CC_MSG_MAX_LANG_BYTES   64u           /* lang ("py") */
#define CC_MSG_MAX_TIME_BYTES   64u           /* eta, expires (ISO-8601 text) */
#define CC_MSG_MAX_REPR_BYTES   (64u * 1024u) /* argsrepr, kwargsrepr */

/* A validated task message. Every string is owned (NUL-terminated) or NULL when absent;
 * JSON values are owned references. Free with cc_message_deinit(). */
struct cc_msg {
    int protocol; /* 2 or 1 */
    char *id;
    char *task;
    char *shadow;
    char *root_id;
    char *parent_id;
    char *group;
    int group_index; /* -1 absent */
    int retries;
    char *eta;                /* as sent (ISO-8601), NULL absent */
    char *expires;            /* as sent, NULL absent */
    int64_t eta_us;           /* parsed eta, microseconds since the epoch UTC; 0 when absent */
    int64_t expires_us;       /* parsed expires; 0 when absent */
    double time_limit_s;      /* timelimit[0], 0 = none */
    double soft_time_limit_s; /* timelimit[1], 0 = none */
    bool ignore_result;
    bool utc; /* v1 `utc` flag; true for v2 */
    char *origin;
    char *lang;
    char *argsrepr;
    char *kwargsrepr;
    char *content_type;
    char *correlation_id;
    char *reply_to;
    int priority;      /* AMQP property, 0 when absent */
    int delivery_mode; /* AMQP property, 2 when absent */
    json_t *headers;   /* full header table (v2) or {} (v1) */
    json_t *args;      /* JSON array */
    json_t *kwargs;    /* JSON object */
    json_t *embed;     /* JSON object, {} when null/absent */
    /* Borrowed from `embed`: NULL when absent or JSON null. */
    json_t *callbacks;
    json_t *errbacks;
    json_t *chain;
    json_t *chord;
};

/* Decode and validate a delivery into `out` (caller's storage, fully overwritten).
 * Detection as Python's on_task_received: headers["task"] -> v2; else a JSON dict body with
 * "task" -> v1; else CC_ENOTASK. The "hybrid" form (v2 headers, v1 dict body) is accepted.
 * Rejects, with a one-line reason in `err`:
 *   CC_ECONTENT    content type other than application/json (pickle, yaml, msgpack, ...)
 *   CC_EENCODING   unknown compression header or corrupt compressed body
 *   CC_ETOOBIG     body over limits->max_body_bytes (or inflated over max_inflated_bytes),
 *                  or a string field over its CC_MSG_MAX_*_BYTES limit
 *   CC_EBADMSG     not JSON / not UTF-8, body not [args, kwargs, embed] (2-element bodies
 *                  included), args not a list, kwargs not a dict, embed not dict/null,
 *                  timelimit not a 2-element list of numbers/nulls, retries not an int (a
 *                  decimal string such as "0" is accepted as Python does), bad eta/expires
 *   CC_ENOTASK / CC_ENOID  missing or non-string task name / id
 *   CC_ENOMEM
 * On failure `out` holds whatever could be read of id/task (for the log line; possibly longer
 * than their limits: log them through cc_log_str) and must still be released with
 * cc_message_deinit(). The reason in `err` never quotes more than 60 bytes of a field. `limits`
 * may be NULL. */
int cc_message_decode(const struct cc_msg_raw *raw, const struct cc_msg_limits *limits,
                      struct cc_msg *out, struct cc_err *err) CC_MUST_USE;

/* Release everything `m` owns and zero it. NULL-safe; idempotent. */
void cc_message_deinit(struct cc_msg *m);

/* A message ready for publishing: AMQP properties, headers as a JSON object in Celery's key
 * order, and the body bytes. Free with cc_message_out_deinit(). */
struct cc_msg_out {
    json_t *headers; /* owned; convert with cc_amqptab_from_json() */
    char *body;      /* owned, body_len bytes, not NUL-terminated on purpose */
    size_t body_len;
    const char *content_type;     /* static "application/json" */
    const char *content_encoding; /* static "utf-8" */
    char *correlation_id;         /* owned (= task id) */
    char *reply_to;               /* owned, may be NULL */
    char *expiration;             /* owned, NULL unless expires set: ms as decimal text */
    int delivery_mode;
    int priority;
};

/* Encode `m` as protocol 2 exactly as Celery 5.2 publishes it (§2.1, §2.2): header keys lang,
 * task, id, shadow, eta, expires, group, group_index, retries, timelimit, root_id,
 * parent_id, argsrepr, kwargsrepr, origin, ignore_result in that order; body
 * [args, kwargs, embed] with embed keys callbacks, errbacks, chain, chord. Missing argsrepr
 * / kwargsrepr are computed with cc_pyrepr. `now_us` is used for the expiration property
 * (expires_us - now_us in ms, floored at 0; left out above CC_MSG_EXPIRATION_MAX_MS, which
 * RabbitMQ refuses). Returns CC_OK, CC_EINVAL (no id or task) or CC_ENOMEM. */
#define CC_MSG_EXPIRATION_MAX_MS 4294967295LL /* RabbitMQ's ?MAX_EXPIRY_TIMER */
int cc_message_encode(const struct cc_msg *m, int64_t now_us, struct cc_msg_out *out,
                      struct cc_err *err) CC_MUST_USE;

void cc_message_out_deinit(struct cc_msg_out *o);

#endif
