/* The worker's AMQP connection (rabbitmq-c): connect (TLS for amqps), heartbeats, topology
 * as kombu declares it, QoS, consume, ack/reject, publish, clean close.
 *
 * One connection, one channel (1), owned by the master's event loop; rabbitmq-c is not
 * thread-safe per connection and no connection crosses fork() (children call
 * cc_broker_forget()). Errors map to CC_EBROKER / CC_EPRECOND / CC_EACCESS / CC_ECHANNEL /
 * CC_ENOTFOUND_Q; the server's full reply text stays in cc_broker_last_reply().
 */
#ifndef CELERYC_BROKER_H
#define CELERYC_BROKER_H

#include <stdbool.h>
#include <stdint.h>

#if defined(__has_include)
#if __has_include(<rabbitmq-c/amqp.h>)
#include <rabbitmq-c/amqp.h>
#else
#include <amqp.h>
#endif
#else
#include <rabbitmq-c/amqp.h>
#endif

#include "celeryc/status.h"
#include "message.h"

#define CC_BROKER_MAX_CONSUMERS 64

struct cc_broker {
    amqp_connection_state_t conn;
    amqp_socket_t *sock;
    amqp_channel_t channel;
    int fd;
    bool is_channel_open;
    bool is_conn_open;
    int heartbeat_s;
    uint16_t prefetch; /* last basic.qos prefetch_count sent (0 = none sent) */
    size_t n_consumers;
    char *consumer_tags[CC_BROKER_MAX_CONSUMERS]; /* owned, server-assigned */
    char last_reply[512];        /* full server text of the last channel/connection close */
    bool is_qos_per_consumer;    /* basic.qos global=false (quorum queues); set before qos */
    bool is_confirming;          /* confirm.select done (a publishing connection) */
    uint64_t publish_seq;        /* publishes on the channel since confirm.select */
    uint64_t confirmed_upto;     /* highest publish the broker confirmed */
    bool is_nacked, is_returned; /* seen since the last wait for confirms */
    struct cc_broker *linked;    /* another connection cc_broker_forget drops too, or NULL */
    /* [blocked] RabbitMQ flow control (connection.blocked / connection.unblocked, a memory
     * or disk alarm). RabbitMQ 3.10 sends connection.blocked only once the connection has
     * published during the alarm, and from then on it reads nothing more from the socket
     * (acks, heartbeats, RPCs wait in the socket) until connection.unblocked. */
    bool is_blocked;
    char blocked_reason[128]; /* the broker's text ("low on memory"), valid while blocked */
    bool is_publish_held;     /* set by the owner: refuse publishes as if blocked (another
                                 connection of the process is blocked: the alarm is node-wide) */
};

/* TLS settings for amqps:// (Celery's broker_use_ssl), all borrowed for the call. */
struct cc_broker_tls {
    const char *ca_file;   /* PEM CA certificates; NULL = $SSL_CERT_FILE or the system bundle */
    const char *cert_file; /* client certificate (PEM); NULL = none */
    const char *key_file;  /* its private key; NULL = read it from cert_file */
    bool is_verify;        /* check the chain and the host name (false: warn, encrypt only) */
};

/* rabbitmq-c's text for `status` (amqp_error_string2), with the socket's own reason for
 * AMQP_STATUS_SOCKET_ERROR ("a socket error occurred (Connection reset by peer)") when
 * saved_errno, read right after the failed call, holds one. Returns buf. Thread-safe. */
const char *cc_broker_status_text(int status, int saved_errno, char *buf, size_t size);

/* Connect to `url` (amqp://, amqps://, pyamqp://), log in, open channel 1. heartbeat_s and
 * timeout_s as configured (broker_heartbeat, broker_connection_timeout); `tls` is used for
 * amqps:// only (NULL = defaults: system CAs, verification on). `b` is caller's storage,
 * zero-initialised once by the caller and zeroed here (except `linked`, kept). Returns CC_OK,
 * CC_EURL, CC_EBROKER, CC_EACCESS. On failure call cc_broker_close() anyway. */
int cc_broker_connect(struct cc_broker *b, const char *url, double heartbeat_s, double timeout_s,
                      const struct cc_broker_tls *tls, struct cc_err *err) CC_MUST_USE;

/* exchange.declare(name, type, durable, auto_delete=false). */
int cc_broker_declare_exchange(struct cc_broker *b, const char *name, const char *type,
                               bool durable, struct cc_err *err) CC_MUST_USE;

/* queue.declare(name, durable=true, exclusive=false, auto_delete=false, arguments
 * {x-max-priority: max_priority} when max_priority > 0, else none). A queue that exists
 * with other arguments -> CC_EPRECOND (server text in last_reply; the channel is gone). */
int cc_broker_declare_queue(struct cc_broker *b, const char *name, int max_priority,
                            struct cc_err *err) CC_MUST_USE;

/* Same, as a quorum queue ({x-queue-type: quorum}, no x-max-priority: quorum queues have no
 * priorities in RabbitMQ 3.x) when is_quorum. */
int cc_broker_declare_queue_typed(struct cc_broker *b, const char *name, int max_priority,
                                  bool is_quorum, struct cc_err *err) CC_MUST_USE;

/* queue.bind(queue, exchange, routing_key). */
int cc_broker_bind(struct cc_broker *b, const char *queue, const char *exchange,
                   const char *routing_key, struct cc_err *err) CC_MUST_USE;

/* basic.qos(0, prefetch_count, global=true), as kombu does on RabbitMQ >= 3.3; global=false
 * when b->is_qos_per_consumer (quorum queues refuse global QoS: 540 NOT_IMPLEMENTED, which
 * is why Celery 5.2 cannot consume them). A count over 65535 is clamped. Skipped when
 * unchanged. */
int cc_broker_qos(struct cc_broker *b, unsigned prefetch_count, struct cc_err *err) CC_MUST_USE;

/* basic.consume(queue, no_ack=false); remembers the consumer tag. */
int cc_broker_consume(struct cc_broker *b, const char *queue, struct cc_err *err) CC_MUST_USE;

/* basic.cancel every consumer (warm shutdown: stop receiving). */
int cc_broker_cancel_all(struct cc_broker *b, struct cc_err *err) CC_MUST_USE;

int cc_broker_ack(struct cc_broker *b, uint64_t tag, struct cc_err *err) CC_MUST_USE;
/* basic.ack(tag, multiple=true): every outstanding delivery <= tag. */
int cc_broker_ack_multiple(struct cc_broker *b, uint64_t tag, struct cc_err *err) CC_MUST_USE;
int cc_broker_reject(struct cc_broker *b, uint64_t tag, bool requeue,
                     struct cc_err *err) CC_MUST_USE;

/* Publish an encoded task message to exchange/routing_key. */
int cc_broker_publish(struct cc_broker *b, const char *exchange, const char *routing_key,
                      const struct cc_msg_out *m, struct cc_err *err) CC_MUST_USE;

/* Put the channel in publisher-confirm mode (confirm.select). For a connection used only
 * to publish: cc_broker_publish_confirmed then reads the confirms synchronously, which
 * would swallow deliveries on a consuming connection. */
int cc_broker_confirm_select(struct cc_broker *b, struct cc_err *err) CC_MUST_USE;

/* Publish with mandatory=true and wait (at most timeout_ms) until the broker confirms it.
 * Returns CC_OK once the broker has taken responsibility for the message (routed to its
 * queues, persisted for durable ones); CC_ENOTFOUND_Q when no queue is bound for the
 * routing key (the message was dropped), CC_EBROKER on basic.nack or I/O failure,
 * CC_ETIMEDOUT. After a failure other than CC_ENOTFOUND_Q the connection should be
 * abandoned. */
int cc_broker_publish_confirmed(struct cc_broker *b, const char *exchange, const char *routing_key,
                                const struct cc_msg_out *m, int timeout_ms,
                                struct cc_err *err) CC_MUST_USE;
/* [beat] Pipelined form of cc_broker_publish_confirmed: publish with mandatory=true without
 * waiting; *seq is the message's confirm number. Then cc_broker_wait_confirms(seq) waits
 * until every publish up to seq is confirmed: CC_OK; CC_ENOTFOUND_Q when at least one of
 * them was returned (unroutable: the caller cannot tell which, so it publishes a batch per
 * routing key); CC_EBROKER (nack, I/O), CC_ETIMEDOUT (abandon the connection). */
int cc_broker_publish_pipelined(struct cc_broker *b, const char *exchange, const char *routing_key,
                                const struct cc_msg_out *m, uint64_t *seq,
                                struct cc_err *err) CC_MUST_USE;
int cc_broker_wait_confirms(struct cc_broker *b, uint64_t seq, int timeout_ms,
                            struct cc_err *err) CC_MUST_USE;
/* Publish a message with the given AMQP properties (headers included) and body, unchanged:
 * republishing a delay-store record, dead-lettering an original delivery. mandatory=false,
 * as Celery publishes. `props` and `body` are borrowed for the call. */
int cc_broker_publish_props(struct cc_broker *b, const char *exchange, const char *routing_key,
                            const amqp_basic_properties_t *props, amqp_bytes_t body,
                            struct cc_err *err) CC_MUST_USE;

/* [events] basic.publish(mandatory=false) of raw properties and body on channel `ch`
 * (opened with cc_broker_channel_open); `props` and `body` borrowed for the call. Never
 * waits for the broker: when the socket's send buffer has no room (a blocked or slow
 * broker) it sends nothing and returns CC_EAGAIN, so the caller can drop the message.
 * Otherwise CC_OK or a broker error (the connection is then lost). */
int cc_broker_publish_raw_on(struct cc_broker *b, amqp_channel_t ch, const char *exchange,
                             const char *routing_key, const amqp_basic_properties_t *props,
                             amqp_bytes_t body, struct cc_err *err) CC_MUST_USE;

#define CC_BROKER_SYNC_TIMEOUT_MS 5000

/* One synchronous round trip on the channel (a passive exchange.declare of amq.direct).
 * When it returns CC_OK the broker has processed every frame sent before it on this
 * channel (publishes routed and enqueued), which is what the delay store waits for before
 * deleting the records it republished. Not a publisher confirm: a broker crash can still
 * lose a transient message it had enqueued. On a channel in confirm mode it waits instead
 * until every publish so far is confirmed (CC_EBROKER if one was nacked). */
int cc_broker_sync(struct cc_broker *b, struct cc_err *err) CC_MUST_USE;

/* Non-blocking: take the next delivery already buffered or readable now. Sends a heartbeat
 * when one is due. Returns CC_OK with *got = 1 and `env` filled (release with
 * amqp_destroy_envelope then cc_broker_release), CC_OK with *got = 0 when nothing is
 * ready, or an error: connection lost (CC_EBROKER), channel closed by the server or
 * consumer cancelled (CC_ECHANNEL / CC_EPRECOND / ...). */
int cc_broker_next(struct cc_broker *b, amqp_envelope_t *env, int *got,
                   struct cc_err *err) CC_MUST_USE;

/* True when rabbitmq-c holds unread frames or bytes, so poll() must not sleep. */
bool cc_broker_has_buffered(const struct cc_broker *b);

/* Give memory of processed deliveries back (amqp_maybe_release_buffers). */
void cc_broker_release(struct cc_broker *b);

/* [blocked] Read every frame the connection has ready now without waiting and act on it:
 * connection.blocked / unblocked (is_blocked), publisher confirms, returns, server closes.
 * For a connection that nothing else reads (the publishing connection while it is
 * blocked, to see connection.unblocked). CC_OK, or an error when the connection is gone. */
int cc_broker_poll(struct cc_broker *b, struct cc_err *err) CC_MUST_USE;

/* [blocked] True when a frame or bytes can be read now without waiting (one poll(2)). */
bool cc_broker_has_readable(const struct cc_broker *b);

/* [blocked] True while the broker has this connection blocked (connection.blocked seen,
 * connection.unblocked not yet). Publishing on it then only queues bytes in the socket. */
bool cc_broker_is_blocked(const struct cc_broker *b);

/* Socket descriptor to poll for POLLIN, -1 when not connected. */
int cc_broker_fd(const struct cc_broker *b);

/* Server text of the last channel/connection close ("" if none). Borrowed. */
const char *cc_broker_last_reply(const struct cc_broker *b);

/* Clean close: channel.close, connection.close (unacked deliveries return to their queues),
 * then free everything. Safe on a half-open or failed broker; idempotent. */
void cc_broker_close(struct cc_broker *b);

/* After the connection failed (socket error, heartbeat timeout, server close): free
 * everything without any protocol traffic (a close handshake on a dead or wedged socket
 * could block for the RPC timeout). The broker requeues what was unacked when it sees the
 * socket close. Idempotent; `b` may be reconnected with cc_broker_connect afterwards. */
void cc_broker_abandon(struct cc_broker *b);

/* In a forked child: close the inherited socket descriptor (and those of the linked chain)
 * without any protocol traffic and without touching rabbitmq-c state (the memory belongs
 * to the parent's image). */
void cc_broker_forget(struct cc_broker *b);

/* ---- [control] Extra channels on the same connection (the pidbox node uses channel 2).
 * Deliveries on every channel come out of cc_broker_next; env->channel tells them apart. A
 * server channel.close on an extra channel is handled as one on channel 1 (the worker
 * reconnects). */

/* channel.open(ch). */
int cc_broker_channel_open(struct cc_broker *b, amqp_channel_t ch, struct cc_err *err) CC_MUST_USE;
/* exchange.declare(name, type, durable, auto_delete=false) on channel ch. */
int cc_broker_declare_exchange_on(struct cc_broker *b, amqp_channel_t ch, const char *name,
                                  const char *type, bool durable, struct cc_err *err) CC_MUST_USE;
/* queue.declare on channel ch with arguments x-expires / x-message-ttl (ms, 'I'; <= 0 = not
 * sent), as kombu declares a pidbox queue. */
int cc_broker_declare_queue_on(struct cc_broker *b, amqp_channel_t ch, const char *name,
                               bool durable, bool auto_delete, int expires_ms, int ttl_ms,
                               struct cc_err *err) CC_MUST_USE;
/* queue.bind on channel ch. */
int cc_broker_bind_on(struct cc_broker *b, amqp_channel_t ch, const char *queue,
                      const char *exchange, const char *routing_key,
                      struct cc_err *err) CC_MUST_USE;
/* basic.consume(queue, no_ack) on channel ch; the server's tag is copied to `tag` (may be
 * NULL). On the task channel (b->channel) the tag is remembered as cc_broker_consume does. */
int cc_broker_consume_on(struct cc_broker *b, amqp_channel_t ch, const char *queue, bool no_ack,
                         char *tag, size_t tag_size, struct cc_err *err) CC_MUST_USE;
/* basic.cancel(tag) on channel ch (and forget it on the task channel). */
int cc_broker_cancel_on(struct cc_broker *b, amqp_channel_t ch, const char *tag,
                        struct cc_err *err) CC_MUST_USE;
/* i-th consumer tag of the task channel (order of consumption), NULL past the end. Borrowed. */
const char *cc_broker_consumer_tag(const struct cc_broker *b, size_t i);
/* basic.publish of `m` on channel ch, mandatory=false. */
int cc_broker_publish_on(struct cc_broker *b, amqp_channel_t ch, const char *exchange,
                         const char *routing_key, const struct cc_msg_out *m,
                         struct cc_err *err) CC_MUST_USE;

#endif
