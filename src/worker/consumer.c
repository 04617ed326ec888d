/* Consumer: an AMQP delivery becomes a request, or is rejected once with a reason.
 *
 * Design: the AMQP properties and the header table (converted by proto/amqptab) form a
 * struct cc_msg_raw; proto/message validates it into a struct cc_msg. Everything the
 * request keeps is copied out of the envelope (its memory dies with amqp_destroy_envelope),
 * so requests can wait for an idle child or their ETA.
 *
 * Invariants: every delivery is answered exactly once by its eventual owner: here (reject)
 * for refused content, oversized or malformed bodies, fields over their limits (message.h:
 * CC_MSG_MAX_*) and unknown tasks, or by the master
 * (ack/reject) for requests returned. Nothing is ever requeued from here, so a poison
 * message cannot loop (Python 5.2.6 crashes on some of them: §2.3a).
 *
 * Every message-derived string in a log line here goes through cc_log_str (log.h).
 *
 * Reference: celery-wire.md §2.2-2.3a (headers, body, poison messages), §2.6 (detection),
 * §2.7 (untrusted serializers), §3.3 and §6.8 (unknown task: NotRegistered, reject).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amqptab.h"
#include "consumer.h"
#include "log.h"
#include "taskrun.h"
#include "util.h"

static cc_bytes_t consumer_view(amqp_bytes_t b)
{
    cc_bytes_t v = {(const uint8_t *)b.bytes, b.len};

    if (b.bytes == NULL)
        v.p = (const uint8_t *)""; /* present but empty */
    return v;
}

/* kombu's name for a content type, as in "Refusing to deserialize untrusted content of
 * type pickle (application/x-python-serialize)". */
static const char *consumer_serializer_name(const char *ct)
{
    if (strcmp(ct, "application/x-python-serialize") == 0)
        return "pickle";
    if (strcmp(ct, "application/x-yaml") == 0)
        return "yaml";
    if (strcmp(ct, "application/x-msgpack") == 0)
        return "msgpack";
    return ct;
}

static int consumer_reject(struct cc_consumer *c, uint64_t tag, struct cc_err *err)
{
    int rc = cc_broker_reject(c->broker, tag, false, err);

    c->n_rejected++;
    return rc == CC_OK ? CC_EAGAIN : rc;
}

/* "celeryc.tasks.add[<id>]" style suffix for reject logs: what is known of the message, each
 * part cut to CC_LOG_FIELD_MAX bytes (a rejected id may be 100 KB). */
static void consumer_what(const struct cc_msg *m, char *buf, size_t size)
{
    if (m->task != NULL || m->id != NULL)
        snprintf(buf, size, ", task %s[%s]", m->task ? cc_log_str(m->task) : "?",
                 m->id ? cc_log_str(m->id) : "?");
    else
        buf[0] = '\0';
}

static int consumer_unknown_task(struct cc_consumer *c, const amqp_envelope_t *env,
                                 struct cc_msg *m, struct cc_err *err)
{
    struct cc_request tmp;
    struct cc_task_request view;
    struct cc_err serr = {0};

    /* Celery's UNKNOWN_TASK_ERROR (worker/consumer/consumer.py), first paragraphs. */
    cc_error("Received unregistered task of type '%s'.\nThe message has been ignored and "
             "discarded.\n\nDid you remember to import the module containing this task?\nOr "
             "maybe you're using relative imports?\n(delivery tag %llu, id %s)",
             cc_log_str(m->task), (unsigned long long)env->delivery_tag, cc_log_str(m->id));
    if (!m->ignore_result) {
        memset(&tmp, 0, sizeof(tmp));
        tmp.msg = *m; /* shallow: borrowed for the view only */
        tmp.exchange = cc_bytes_dup(consumer_view(env->exchange));
        tmp.routing_key = cc_bytes_dup(consumer_view(env->routing_key));
        cc_consumer_request_view(&tmp, c->hostname, &view);
        if (cc_backend_store_exc(c->backend, c->cfg, &view, m->args, m->kwargs, "FAILURE",
                                 "celery.exceptions", "NotRegistered", m->task, &serr) != CC_OK)
            cc_error("could not store NotRegistered for %s: %s", cc_log_str(m->id), serr.msg);
        free(tmp.exchange);
        free(tmp.routing_key);
    }
    return consumer_reject(c, env->delivery_tag, err);
}

static bool consumer_tristate(enum cc_tristate t, bool dflt)
{
    return t == CC_DEFAULT ? dflt : t == CC_YES;
}

int cc_consumer_on_delivery(struct cc_consumer *c, const amqp_envelope_t *env,
                            struct cc_request **out, struct cc_err *err)
{
    const amqp_basic_properties_t *p = &env->message.properties;
    struct cc_msg_raw raw;
    struct cc_msg_limits limits = {0};
    struct cc_msg m;
    struct cc_err derr = {0};
    json_t *headers = NULL;
    const struct cc_task_entry *e;
    struct cc_request *r;
    char what[2 * CC_LOG_FIELD_MAX + 64];
    int rc;

    *out = NULL;
    memset(&m, 0, sizeof(m));
    c->n_received++;
    if (c->cfg->max_message_bytes > 0 && env->message.body.len > c->cfg->max_message_bytes) {
        cc_error("Rejecting message (delivery tag %llu): body of %zu bytes exceeds "
                 "worker_max_message_bytes (%zu)",
                 (unsigned long long)env->delivery_tag, env->message.body.len,
                 c->cfg->max_message_bytes);
        return consumer_reject(c, env->delivery_tag, err);
    }
    memset(&raw, 0, sizeof(raw));
    raw.priority = -1;
    if (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG)
        raw.content_type = consumer_view(p->content_type);
    if (p->_flags & AMQP_BASIC_CONTENT_ENCODING_FLAG)
        raw.content_encoding = consumer_view(p->content_encoding);
    if (p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG)
        raw.correlation_id = consumer_view(p->correlation_id);
    if (p->_flags & AMQP_BASIC_REPLY_TO_FLAG)
        raw.reply_to = consumer_view(p->reply_to);
    if (p->_flags & AMQP_BASIC_EXPIRATION_FLAG)
        raw.expiration = consumer_view(p->expiration);
    if (p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG)
        raw.delivery_mode = p->delivery_mode;
    if (p->_flags & AMQP_BASIC_PRIORITY_FLAG)
        raw.priority = p->priority;
    if (p->_flags & AMQP_BASIC_HEADERS_FLAG) {
        rc = cc_amqptab_to_json(&p->headers, &headers, &derr);
        if (rc != CC_OK) {
            cc_error("Rejecting message (delivery tag %llu): unreadable header table: %s",
                     (unsigned long long)env->delivery_tag, derr.msg);
            return consumer_reject(c, env->delivery_tag, err);
        }
        raw.headers = headers;
    }
    raw.body = consumer_view(env->message.body);
    limits.max_body_bytes = c->cfg->max_message_bytes;
    limits.max_inflated_bytes = c->cfg->max_message_bytes;

    rc = cc_message_decode(&raw, &limits, &m, &derr);
    if (rc != CC_OK) {
        consumer_what(&m, what, sizeof(what));
        if (rc == CC_ECONTENT) {
            /* Escaped, with its real length: a NUL byte inside must not make
             * "application/json\0evil" read "application/json" (issue #14). */
            char ct[160];
            const char *name;

            cc_bytes_escape(raw.content_type, 100, ct, sizeof(ct));
            name = consumer_serializer_name(ct);
            if (name != ct)
                cc_error("Refusing to deserialize untrusted content of type %s (%s) (delivery tag "
                         "%llu%s)",
                         name, ct, (unsigned long long)env->delivery_tag, what);
            else
                cc_error("Refusing to deserialize untrusted content of type '%s' (%zu bytes) "
                         "(delivery tag %llu%s)",
                         ct, raw.content_type.len, (unsigned long long)env->delivery_tag, what);
        } else {
            cc_error("Rejecting malformed message (delivery tag %llu%s): %s",
                     (unsigned long long)env->delivery_tag, what, derr.msg);
        }
        rc = consumer_reject(c, env->delivery_tag, err);
        goto out;
    }
    e = cc_taskrun_lookup(m.task);
    if (e == NULL) {
        rc = consumer_unknown_task(c, env, &m, err);
        goto out;
    }
    r = cc_xcalloc(1, sizeof(*r));
    r->tag = env->delivery_tag;
    r->exchange = cc_bytes_dup(consumer_view(env->exchange));
    r->routing_key = cc_bytes_dup(consumer_view(env->routing_key));
    r->redelivered = env->redelivered != 0;
    r->msg = m;
    memset(&m, 0, sizeof(m)); /* moved */
    r->entry = e;
    r->acks_late = consumer_tristate(e->acks_late, c->cfg->acks_late);
    r->ignore_result = r->msg.ignore_result || consumer_tristate(e->ignore_result, false);
    r->track_started = consumer_tristate(e->track_started, c->cfg->track_started);
    r->received_us = cc_now_us();
    if (cc_log_enabled(CC_LOG_INFO))
        cc_info("Task %s[%s] received", cc_log_str(cc_consumer_request_name(r)),
                cc_log_str(r->msg.id));
    *out = r;
    rc = CC_OK;
out:
    cc_message_deinit(&m);
    json_decref(headers);
    return rc;
}

void cc_consumer_request_view(const struct cc_request *r, const char *hostname,
                              struct cc_task_request *out)
{
    const struct cc_msg *m = &r->msg;

    memset(out, 0, sizeof(*out));
    out->id = m->id;
    out->task = m->task;
    out->shadow = m->shadow;
    out->root_id = m->root_id ? m->root_id : m->id;
    out->parent_id = m->parent_id;
    out->group = m->group;
    out->group_index = m->group_index;
    out->retries = m->retries;
    out->eta = m->eta;
    out->expires = m->expires;
    out->time_limit_s = m->time_limit_s;
    out->soft_time_limit_s = m->soft_time_limit_s;
    out->hostname = hostname;
    out->origin = m->origin;
    out->reply_to = m->reply_to;
    out->correlation_id = m->correlation_id;
    out->protocol = m->protocol;
    out->delivery_info.exchange = r->exchange;
    out->delivery_info.routing_key = r->routing_key;
    out->delivery_info.priority = m->priority;
    out->delivery_info.redelivered = r->redelivered;
    out->headers = m->headers;
    out->embed = m->embed;
}

const char *cc_consumer_request_name(const struct cc_request *r)
{
    return r->msg.shadow ? r->msg.shadow : r->msg.task;
}

void cc_consumer_request_free(struct cc_request *r)
{
    if (r == NULL)
        return;
    cc_message_deinit(&r->msg);
    free(r->exchange);
    free(r->routing_key);
    free(r->delay_rec);
    free(r);
}
