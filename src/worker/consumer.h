/* Deliveries -> requests: decode, validate, look the task up; reject what cannot run.
 *
 * The master calls cc_consumer_on_delivery() for every basic.deliver. Bad input never
 * crashes and never loops: it is rejected with requeue=false (dead-lettered when the queue
 * has a DLX) and logged once with the delivery tag and, when known, task name and id.
 */
#ifndef CELERYC_CONSUMER_H
#define CELERYC_CONSUMER_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "broker.h"
#include "celeryc/task.h"
#include "config.h"
#include "message.h"

/* One task message the master holds: prefetched, ETA-held, or running in a child. */
struct cc_request {
    struct cc_request *next; /* FIFO link (master) */
    uint64_t tag;            /* delivery tag */
    char *exchange;          /* owned copies of the delivery info */
    char *routing_key;
    bool redelivered;
    struct cc_msg msg; /* owned */
    const struct cc_task_entry *entry;
    bool acks_late;     /* task_acks_late or entry->acks_late */
    bool ignore_result; /* message header or entry->ignore_result */
    bool track_started;
    bool is_acked;    /* ack (or reject) already sent */
    bool is_eta_held; /* counted in the QoS bump while waiting for its ETA */
    int64_t received_us;
    /* [redisx] Delay-store record of a held message that should have moved to the store but
     * Redis was unavailable; the worker retries the move (delaystore.h). Owned, or NULL. */
    char *delay_rec;
    size_t delay_rec_len;
    bool is_rate_admitted; /* its rate-limit slot is reserved (worker.c, ratelimit.c) */
    /* [redisx] handed to an executor and marked so (cc_redeliver_on_handoff); cleared by
     * cc_redeliver_settled when its outcome is settled without a requeue. */
    bool is_marked;
    bool is_requeued; /* [redisx] rejected with requeue=true by the master */
};

struct cc_consumer {
    struct cc_broker *broker;   /* borrowed */
    struct cc_backend *backend; /* borrowed (master's) */
    const struct cc_config *cfg;
    const char *hostname;
    uint64_t n_received;
    uint64_t n_rejected;
};

/* Turn a delivery into a request. Returns:
 *   CC_OK      *out is an owned request to schedule (free with cc_consumer_request_free);
 *   CC_EAGAIN  the delivery was bad or unknown and has been rejected (and NotRegistered
 *              stored when applicable); nothing to do;
 *   a broker error (the reject could not be sent), with err filled.
 * `env` stays the caller's (destroy it afterwards); nothing returned points into it. */
int cc_consumer_on_delivery(struct cc_consumer *c, const amqp_envelope_t *env,
                            struct cc_request **out, struct cc_err *err) CC_MUST_USE;

/* Borrowed view of `r` as the task API's request (hostname: this worker's nodename). Valid
 * while `r` lives. */
void cc_consumer_request_view(const struct cc_request *r, const char *hostname,
                              struct cc_task_request *out);

/* Display name in logs: shadow if set, else the task name. */
const char *cc_consumer_request_name(const struct cc_request *r);

void cc_consumer_request_free(struct cc_request *r);

#endif
