/* AMQP connection for the worker master, on rabbitmq-c 0.11.
 *
 * Design: one connection and one channel. Start-up is synchronous RPCs (login, declares,
 * qos, consume) in kombu's order: exchange.declare, queue.declare, queue.bind per queue.
 * At run time the event loop polls the socket; before sleeping it drains what rabbitmq-c
 * already buffered with amqp_consume_message() and a zero timeout (cc_broker_next), which
 * also sends our heartbeat when due, so the poll timeout only has to stay below half the
 * heartbeat interval. A frame other than basic.deliver (AMQP_STATUS_UNEXPECTED_STATE) is
 * read with amqp_simple_wait_frame and handled: channel.close / connection.close are
 * answered with close-ok and reported with the server's text, basic.cancel (queue deleted)
 * is reported as fatal.
 *
 * Flow control [blocked]: the client properties advertise the connection.blocked
 * capability, as py-amqp does, so RabbitMQ tells us when a memory or disk alarm blocks the
 * connection (connection.blocked, with its reason) and when it is lifted
 * (connection.unblocked). Both arrive on channel 0 and are read wherever frames are read
 * (cc_broker_next, confirm waits, cc_broker_poll); they only set is_blocked. While blocked,
 * every publish function refuses with CC_EAGAIN without sending: RabbitMQ has stopped
 * reading the socket, so bytes would only pile up in it, and rabbitmq-c's blocking send
 * would stall the event loop once the socket buffer is full.
 *
 * Invariants: after a server channel.close the channel is never used again (close-ok sent,
 * is_channel_open false); the full server reply text is kept in last_reply because the
 * 406 PRECONDITION_FAILED text (naming the mismatching argument) does not fit in cc_err.
 *
 * Reference: celery-wire.md §1.1, §1.3 (topology and declare order), §1.4 (x-max-priority),
 * §1.5 (global QoS), §1.6 (header table kinds, via proto/amqptab), §6.1 (QoS, consumers).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include(<rabbitmq-c/tcp_socket.h>)
#include <rabbitmq-c/ssl_socket.h>
#include <rabbitmq-c/tcp_socket.h>
#else
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#endif
#else
#include <rabbitmq-c/ssl_socket.h>
#include <rabbitmq-c/tcp_socket.h>
#endif

#include "amqptab.h"
#include "broker.h"
#include "log.h"
#include "netprobe.h"
#include "url.h"
#include "util.h"

/* ---- Error mapping ------------------------------------------------------------------- */

const char *cc_broker_status_text(int status, int saved_errno, char *buf, size_t size)
{
    const char *text = amqp_error_string2(status);
    char ebuf[96];

    /* rabbitmq-c says "a socket error occurred"; errno, saved right after the failed call,
     * says which, when it is a socket's own reason (never EINPROGRESS or EAGAIN, which a
     * non-blocking call leaves behind without meaning anything). */
    if (status == AMQP_STATUS_SOCKET_ERROR && saved_errno != 0 && saved_errno != EINPROGRESS &&
        saved_errno != EAGAIN && saved_errno != EINTR) {
        snprintf(buf, size, "%s (%s)", text, strerror_r(saved_errno, ebuf, sizeof(ebuf)));
        return buf;
    }
    snprintf(buf, size, "%s", text);
    return buf;
}

static int broker_code_for(int reply_code)
{
    switch (reply_code) {
    case 406:
        return CC_EPRECOND;
    case 403:
        return CC_EACCESS;
    case 404:
        return CC_ENOTFOUND_Q;
    default:
        return CC_ECHANNEL;
    }
}

/* A server-initiated close (method already decoded): answer close-ok, remember the text,
 * return the mapped code. */
static int broker_server_close(struct cc_broker *b, const amqp_method_t *m, const char *what,
                               struct cc_err *err)
{
    int code, rc;

    if (m->id == AMQP_CHANNEL_CLOSE_METHOD) {
        const amqp_channel_close_t *c = m->decoded;
        amqp_channel_close_ok_t ok = {0};

        code = c->reply_code;
        snprintf(b->last_reply, sizeof(b->last_reply), "%d %.*s", code, (int)c->reply_text.len,
                 (const char *)c->reply_text.bytes);
        if (b->is_conn_open)
            (void)amqp_send_method(b->conn, b->channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        b->is_channel_open = false;
        rc = broker_code_for(code);
    } else {
        const amqp_connection_close_t *c = m->decoded;
        amqp_connection_close_ok_t ok = {0};

        code = c->reply_code;
        snprintf(b->last_reply, sizeof(b->last_reply), "%d %.*s", code, (int)c->reply_text.len,
                 (const char *)c->reply_text.bytes);
        if (b->is_conn_open)
            (void)amqp_send_method(b->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        b->is_conn_open = false;
        b->is_channel_open = false;
        rc = code == 403 ? CC_EACCESS : CC_EBROKER;
    }
    return cc_err_set(err, rc, "%s: %s", what, b->last_reply);
}

static int broker_reply(struct cc_broker *b, amqp_rpc_reply_t r, const char *what,
                        struct cc_err *err)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return CC_OK;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD || r.reply.id == AMQP_CONNECTION_CLOSE_METHOD)
            return broker_server_close(b, &r.reply, what, err);
        return cc_err_set(err, CC_EBROKER, "%s: unexpected server method 0x%08x", what,
                          (unsigned)r.reply.id);
    case AMQP_RESPONSE_LIBRARY_EXCEPTION: {
        char text[160];
        int e = errno;

        if (r.library_error == AMQP_STATUS_CONNECTION_CLOSED ||
            r.library_error == AMQP_STATUS_SOCKET_ERROR ||
            r.library_error == AMQP_STATUS_HEARTBEAT_TIMEOUT ||
            r.library_error == AMQP_STATUS_SOCKET_CLOSED)
            b->is_conn_open = b->is_channel_open = false;
        return cc_err_set(err, CC_EBROKER, "%s: %s", what,
                          cc_broker_status_text(r.library_error, e, text, sizeof(text)));
    }
    default:
        return cc_err_set(err, CC_EBROKER, "%s: no reply from the broker", what);
    }
}

static int broker_status(struct cc_broker *b, int status, const char *what, struct cc_err *err)
{
    char text[160];
    int e = errno;

    if (status == AMQP_STATUS_OK)
        return CC_OK;
    if (status == AMQP_STATUS_CONNECTION_CLOSED || status == AMQP_STATUS_SOCKET_ERROR ||
        status == AMQP_STATUS_SOCKET_CLOSED || status == AMQP_STATUS_HEARTBEAT_TIMEOUT)
        b->is_conn_open = b->is_channel_open = false;
    return cc_err_set(err, CC_EBROKER, "%s: %s", what,
                      cc_broker_status_text(status, e, text, sizeof(text)));
}

/* ---- [blocked] Flow control ---------------------------------------------------------- */

/* connection.blocked / connection.unblocked: record the state. True when `m` was one. */
static bool broker_flow(struct cc_broker *b, const amqp_method_t *m)
{
    if (m->id == AMQP_CONNECTION_BLOCKED_METHOD) {
        const amqp_connection_blocked_t *blk = m->decoded;

        b->is_blocked = true;
        snprintf(b->blocked_reason, sizeof(b->blocked_reason), "%.*s",
                 blk != NULL ? (int)blk->reason.len : 0,
                 blk != NULL && blk->reason.bytes != NULL ? (const char *)blk->reason.bytes : "");
        return true;
    }
    if (m->id == AMQP_CONNECTION_UNBLOCKED_METHOD) {
        b->is_blocked = false;
        return true;
    }
    return false;
}

static int broker_refuse_blocked(const struct cc_broker *b, const char *what, struct cc_err *err)
{
    if (!b->is_blocked)
        return cc_err_set(err, CC_EAGAIN, "%s: the broker is blocking publishers", what);
    return cc_err_set(err, CC_EAGAIN, "%s: the broker has blocked the connection (%s)", what,
                      b->blocked_reason[0] != '\0' ? b->blocked_reason : "resource alarm");
}

/* One method frame read outside a synchronous RPC on a publishing connection: publisher
 * confirms (ack/nack share the leading (delivery_tag, multiple) layout), returns, a server
 * close, connection.blocked / unblocked. Returns CC_OK, or the close as an error. */
static int broker_take_frame(struct cc_broker *b, const amqp_frame_t *f, struct cc_err *err)
{
    if (f->frame_type != AMQP_FRAME_METHOD)
        return CC_OK;
    switch (f->payload.method.id) {
    case AMQP_BASIC_ACK_METHOD:
    case AMQP_BASIC_NACK_METHOD: {
        const amqp_basic_ack_t *a = f->payload.method.decoded;

        if (a->delivery_tag > b->confirmed_upto)
            b->confirmed_upto = a->delivery_tag;
        if (f->payload.method.id == AMQP_BASIC_NACK_METHOD)
            b->is_nacked = true;
        return CC_OK;
    }
    case AMQP_BASIC_RETURN_METHOD:
        b->is_returned = true;
        return CC_OK;
    case AMQP_CHANNEL_CLOSE_METHOD:
        return broker_server_close(b, &f->payload.method, "channel closed by the broker", err);
    case AMQP_CONNECTION_CLOSE_METHOD:
        return broker_server_close(b, &f->payload.method, "connection closed by the broker", err);
    default:
        (void)broker_flow(b, &f->payload.method);
        return CC_OK;
    }
}

bool cc_broker_has_readable(const struct cc_broker *b)
{
    struct pollfd pfd = {.fd = b->fd, .events = POLLIN};

    if (b->conn == NULL || !b->is_conn_open || b->fd < 0)
        return false;
    if (amqp_frames_enqueued(b->conn) || amqp_data_in_buffer(b->conn))
        return true;
    return poll(&pfd, 1, 0) == 1 && pfd.revents != 0;
}

bool cc_broker_is_blocked(const struct cc_broker *b)
{
    return b->conn != NULL && b->is_conn_open && b->is_blocked;
}

/* ---- Connection ---------------------------------------------------------------------- */

/* Celery's broker_use_ssl on the rabbitmq-c socket. rabbitmq-c 0.11 checks the host name
 * against the certificate's DNS names only (an IP SAN never matches), so the URL must name
 * the broker as its certificate does ("localhost", not "127.0.0.1"). */
static int broker_tls_setup(amqp_socket_t *sock, const struct cc_broker_tls *tls,
                            struct cc_err *err)
{
    const char *ca = tls != NULL ? tls->ca_file : NULL;
    bool is_verify = tls == NULL || tls->is_verify;
    int st;

    if (ca == NULL || ca[0] == '\0')
        ca = getenv("SSL_CERT_FILE");
    if (ca == NULL || ca[0] == '\0')
        ca = "/etc/ssl/certs/ca-certificates.crt";
    amqp_ssl_socket_set_verify_peer(sock, is_verify);
    amqp_ssl_socket_set_verify_hostname(sock, is_verify);
    if (!is_verify)
        cc_warn("amqps: broker_ssl_verify is none: the broker's certificate is not checked "
                "(traffic is encrypted, but anyone on the path can pose as the broker)");
    if (access(ca, R_OK) == 0 && (st = amqp_ssl_socket_set_cacert(sock, ca)) != AMQP_STATUS_OK)
        return cc_err_set(err, CC_EBROKER, "amqps: cannot load CA file %s: %s", ca,
                          amqp_error_string2(st));
    if (tls != NULL && tls->cert_file != NULL) {
        /* No key file: the key is in the certificate file (Python's load_cert_chain). */
        const char *key = tls->key_file != NULL ? tls->key_file : tls->cert_file;

        st = amqp_ssl_socket_set_key(sock, tls->cert_file, key);
        if (st != AMQP_STATUS_OK)
            return cc_err_set(err, CC_EBROKER,
                              "amqps: cannot load client certificate %s / key %s: %s",
                              tls->cert_file, key, amqp_error_string2(st));
    }
    return CC_OK;
}

int cc_broker_connect(struct cc_broker *b, const char *url, double heartbeat_s, double timeout_s,
                      const struct cc_broker_tls *tls, struct cc_err *err)
{
    struct cc_amqp_url u;
    struct timeval tv;
    amqp_rpc_reply_t r;
    int rc, st;
    struct cc_broker *linked = b->linked; /* the one field that survives a reconnect */

    memset(b, 0, sizeof(*b));
    b->linked = linked;
    b->fd = -1;
    b->channel = 1;
    rc = cc_url_parse_amqp(url, &u, err);
    if (rc != CC_OK)
        return rc;
    b->conn = amqp_new_connection();
    if (b->conn == NULL) {
        rc = cc_err_set(err, CC_ENOMEM, "out of memory");
        goto out;
    }
    b->sock = u.tls ? amqp_ssl_socket_new(b->conn) : amqp_tcp_socket_new(b->conn);
    if (b->sock == NULL) {
        rc = cc_err_set(err, CC_EBROKER, "cannot create the %s socket", u.tls ? "TLS" : "TCP");
        goto out;
    }
    if (u.tls && (rc = broker_tls_setup(b->sock, tls, err)) != CC_OK)
        goto out;
    if (timeout_s <= 0)
        timeout_s = 4;
    tv.tv_sec = (time_t)timeout_s;
    tv.tv_usec = (suseconds_t)((timeout_s - (double)tv.tv_sec) * 1e6);
    errno = 0;
    st = amqp_socket_open_noblock(b->sock, u.host, u.port, &tv);
    if (st != AMQP_STATUS_OK) {
        const char *hint = "";
        int e = errno;

        if (st == AMQP_STATUS_SOCKET_ERROR) {
            /* rabbitmq-c says "a socket error occurred" and keeps the reason (its connect
             * is non-blocking: SO_ERROR) to itself, leaving errno at EINPROGRESS, which
             * read "Operation now in progress" for a refused connection (issue #14). Ask
             * a connect of our own, briefly, what it gets now. */
            struct cc_err why = {0};
            int diag_ms = timeout_s < 1 ? (int)(timeout_s * 1000) : 1000;

            if (cc_netprobe_diagnose(u.host, u.port, diag_ms, &why) == CC_OK)
                snprintf(why.msg, sizeof(why.msg), "%s",
                         e != 0 && e != EINPROGRESS ? strerror(e)
                                                    : "connection failed (accepted on a retry)");
            rc =
                cc_err_set(err, CC_EBROKER, "cannot connect to %s:%d: %s", u.host, u.port, why.msg);
            goto out;
        }

        if (st == AMQP_STATUS_SSL_PEER_VERIFY_FAILED)
            hint = " (does broker_ssl_ca_certs hold the CA that signed the broker's cert?)";
        else if (st == AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED)
            hint = " (use a DNS name of the certificate as the URL host; IPs never match)";
        rc = cc_err_set(err, CC_EBROKER, "cannot connect to %s:%d: %s%s", u.host, u.port,
                        amqp_error_string2(st), hint);
        goto out;
    }
    b->is_conn_open = true;
    (void)amqp_set_handshake_timeout(b->conn, &tv);
    b->heartbeat_s = heartbeat_s > 0 ? (int)heartbeat_s : 0;
    {
        /* [blocked] client_properties.capabilities {connection.blocked: true}, as py-amqp
         * sends it; rabbitmq-c merges it into its own capabilities table. */
        amqp_table_entry_t cap = {
            .key = amqp_cstring_bytes("connection.blocked"),
            .value = {.kind = AMQP_FIELD_KIND_BOOLEAN, .value = {.boolean = 1}}};
        amqp_table_entry_t prop = {
            .key = amqp_cstring_bytes("capabilities"),
            .value = {.kind = AMQP_FIELD_KIND_TABLE, .value = {.table = {1, &cap}}}};
        amqp_table_t props = {1, &prop};

        r = amqp_login_with_properties(b->conn, u.vhost, 0, 131072, b->heartbeat_s, &props,
                                       AMQP_SASL_METHOD_PLAIN, u.user, u.password);
    }
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        rc = broker_reply(b, r, "login", err);
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_CONNECTION_CLOSED)
            rc = cc_err_set(err, CC_EACCESS,
                            "login refused for user '%s' on vhost '%s' (bad credentials?)", u.user,
                            u.vhost);
        goto out;
    }
    b->heartbeat_s = amqp_get_heartbeat(b->conn);
    /* Later RPCs (declares, qos) must not hang forever on a stuck broker. */
    tv.tv_sec = 30;
    tv.tv_usec = 0;
    (void)amqp_set_rpc_timeout(b->conn, &tv);
    amqp_channel_open(b->conn, b->channel);
    rc = broker_reply(b, amqp_get_rpc_reply(b->conn), "channel.open", err);
    if (rc != CC_OK)
        goto out;
    b->is_channel_open = true;
    b->fd = amqp_get_sockfd(b->conn);
out:
    cc_url_amqp_deinit(&u);
    return rc;
}

/* ---- Topology ------------------------------------------------------------------------ */

int cc_broker_declare_exchange(struct cc_broker *b, const char *name, const char *type,
                               bool durable, struct cc_err *err)
{
    char what[128];

    snprintf(what, sizeof(what), "exchange.declare '%.80s'", name);
    amqp_exchange_declare(b->conn, b->channel, amqp_cstring_bytes(name), amqp_cstring_bytes(type),
                          0, durable, 0, 0, amqp_empty_table);
    return broker_reply(b, amqp_get_rpc_reply(b->conn), what, err);
}

int cc_broker_declare_queue(struct cc_broker *b, const char *name, int max_priority,
                            struct cc_err *err)
{
    return cc_broker_declare_queue_typed(b, name, max_priority, false, err);
}

int cc_broker_declare_queue_typed(struct cc_broker *b, const char *name, int max_priority,
                                  bool is_quorum, struct cc_err *err)
{
    amqp_table_entry_t entry;
    amqp_table_t args = amqp_empty_table;
    char what[128];

    if (is_quorum) {
        /* kombu: Queue(name, queue_arguments={'x-queue-type': 'quorum'}) sends a longstr. */
        entry.key = amqp_cstring_bytes("x-queue-type");
        entry.value.kind = AMQP_FIELD_KIND_UTF8;
        entry.value.value.bytes = amqp_cstring_bytes("quorum");
        args.num_entries = 1;
        args.entries = &entry;
    } else if (max_priority > 0) {
        /* kombu sends x-max-priority as a signed 32-bit 'I' (§1.3). */
        entry.key = amqp_cstring_bytes("x-max-priority");
        entry.value.kind = AMQP_FIELD_KIND_I32;
        entry.value.value.i32 = max_priority;
        args.num_entries = 1;
        args.entries = &entry;
    }
    snprintf(what, sizeof(what), "queue.declare '%.80s'", name);
    amqp_queue_declare(b->conn, b->channel, amqp_cstring_bytes(name), 0, 1, 0, 0, args);
    return broker_reply(b, amqp_get_rpc_reply(b->conn), what, err);
}

int cc_broker_bind(struct cc_broker *b, const char *queue, const char *exchange,
                   const char *routing_key, struct cc_err *err)
{
    char what[160];

    snprintf(what, sizeof(what), "queue.bind '%.60s' -> '%.60s'", queue, exchange);
    amqp_queue_bind(b->conn, b->channel, amqp_cstring_bytes(queue), amqp_cstring_bytes(exchange),
                    amqp_cstring_bytes(routing_key), amqp_empty_table);
    return broker_reply(b, amqp_get_rpc_reply(b->conn), what, err);
}

int cc_broker_qos(struct cc_broker *b, unsigned prefetch_count, struct cc_err *err)
{
    uint16_t n = prefetch_count > 65535 ? 65535 : (uint16_t)prefetch_count;

    if (n == b->prefetch)
        return CC_OK;
    amqp_basic_qos(b->conn, b->channel, 0, n, !b->is_qos_per_consumer);
    b->prefetch = n;
    return broker_reply(b, amqp_get_rpc_reply(b->conn), "basic.qos", err);
}

int cc_broker_consume(struct cc_broker *b, const char *queue, struct cc_err *err)
{
    amqp_basic_consume_ok_t *ok;
    char what[128];
    int rc;

    if (b->n_consumers >= CC_BROKER_MAX_CONSUMERS)
        return cc_err_set(err, CC_ERANGE, "too many queues (max %d)", CC_BROKER_MAX_CONSUMERS);
    snprintf(what, sizeof(what), "basic.consume '%.80s'", queue);
    ok = amqp_basic_consume(b->conn, b->channel, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0,
                            0, amqp_empty_table);
    rc = broker_reply(b, amqp_get_rpc_reply(b->conn), what, err);
    if (rc == CC_OK && ok != NULL)
        b->consumer_tags[b->n_consumers++] = cc_bytes_dup(
            (cc_bytes_t){(const uint8_t *)ok->consumer_tag.bytes, ok->consumer_tag.len});
    return rc;
}

int cc_broker_cancel_all(struct cc_broker *b, struct cc_err *err)
{
    int rc = CC_OK;

    for (size_t i = 0; i < b->n_consumers; i++) {
        if (b->consumer_tags[i] == NULL)
            continue;
        if (rc == CC_OK && b->is_channel_open) {
            amqp_basic_cancel(b->conn, b->channel, amqp_cstring_bytes(b->consumer_tags[i]));
            rc = broker_reply(b, amqp_get_rpc_reply(b->conn), "basic.cancel", err);
        }
        free(b->consumer_tags[i]);
        b->consumer_tags[i] = NULL;
    }
    b->n_consumers = 0;
    return rc;
}

/* ---- Messages ------------------------------------------------------------------------ */

int cc_broker_ack(struct cc_broker *b, uint64_t tag, struct cc_err *err)
{
    if (!b->is_channel_open)
        return cc_err_set(err, CC_ECHANNEL, "basic.ack %llu: channel closed",
                          (unsigned long long)tag);
    return broker_status(b, amqp_basic_ack(b->conn, b->channel, tag, 0), "basic.ack", err);
}

int cc_broker_ack_multiple(struct cc_broker *b, uint64_t tag, struct cc_err *err)
{
    if (!b->is_channel_open)
        return cc_err_set(err, CC_ECHANNEL, "basic.ack %llu: channel closed",
                          (unsigned long long)tag);
    return broker_status(b, amqp_basic_ack(b->conn, b->channel, tag, 1), "basic.ack", err);
}

int cc_broker_reject(struct cc_broker *b, uint64_t tag, bool requeue, struct cc_err *err)
{
    if (!b->is_channel_open)
        return cc_err_set(err, CC_ECHANNEL, "basic.reject %llu: channel closed",
                          (unsigned long long)tag);
    return broker_status(b, amqp_basic_reject(b->conn, b->channel, tag, requeue), "basic.reject",
                         err);
}

static amqp_bytes_t broker_bytes(const char *s)
{
    return s ? amqp_cstring_bytes(s) : amqp_empty_bytes;
}

/* basic.publish of an encoded task message; `mandatory` asks the broker to return it when
 * no queue is bound for the routing key (confirmed publishes only). */
static int broker_publish(struct cc_broker *b, amqp_channel_t ch, const char *exchange,
                          const char *routing_key, const struct cc_msg_out *m, bool mandatory,
                          struct cc_err *err)
{
    amqp_basic_properties_t p;
    amqp_pool_t pool;
    amqp_bytes_t body = {m->body_len, m->body};
    int rc;

    if (!b->is_channel_open)
        return cc_err_set(err, CC_ECHANNEL, "basic.publish: channel closed");
    if (b->is_blocked || b->is_publish_held) /* [blocked] */
        return broker_refuse_blocked(b, "basic.publish", err);
    memset(&p, 0, sizeof(p));
    init_amqp_pool(&pool, 4096);
    p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_CONTENT_ENCODING_FLAG |
               AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_PRIORITY_FLAG |
               AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_REPLY_TO_FLAG;
    p.content_type = broker_bytes(m->content_type);
    p.content_encoding = broker_bytes(m->content_encoding);
    p.delivery_mode = (uint8_t)(m->delivery_mode ? m->delivery_mode : 2);
    p.priority = (uint8_t)m->priority;
    p.correlation_id = broker_bytes(m->correlation_id);
    p.reply_to = broker_bytes(m->reply_to ? m->reply_to : "");
    if (m->expiration != NULL) {
        p._flags |= AMQP_BASIC_EXPIRATION_FLAG;
        p.expiration = amqp_cstring_bytes(m->expiration);
    }
    rc = cc_amqptab_from_json(m->headers, &pool, &p.headers, err);
    if (rc == CC_OK)
        rc = broker_status(b,
                           amqp_basic_publish(b->conn, ch, broker_bytes(exchange),
                                              broker_bytes(routing_key), mandatory, 0, &p, body),
                           "basic.publish", err);
    empty_amqp_pool(&pool);
    return rc;
}

int cc_broker_publish(struct cc_broker *b, const char *exchange, const char *routing_key,
                      const struct cc_msg_out *m, struct cc_err *err)
{
    return broker_publish(b, b->channel, exchange, routing_key, m, false, err);
}

int cc_broker_confirm_select(struct cc_broker *b, struct cc_err *err)
{
    amqp_confirm_select(b->conn, b->channel);
    int rc = broker_reply(b, amqp_get_rpc_reply(b->conn), "confirm.select", err);

    if (rc == CC_OK) {
        b->is_confirming = true;
        b->publish_seq = 0;
    }
    return rc;
}

/* Read confirms until every publish up to number `seq` is confirmed (confirm mode):
 * basic.ack(tag, multiple) moves confirmed_upto; RabbitMQ confirms a channel's publishes in
 * order, so a single ack for tag n also covers the ones before it that it has not acked
 * separately. CC_OK; CC_EBROKER after a basic.nack of any of them; CC_ENOTFOUND_Q when one
 * was returned (mandatory, no queue bound); CC_ETIMEDOUT. Other frames on a publishing
 * connection are only heartbeats and returned messages' content. */
static int broker_wait_confirm(struct cc_broker *b, uint64_t seq, int timeout_ms,
                               struct cc_err *err)
{
    int64_t deadline = cc_mono_us() + (int64_t)timeout_ms * 1000;

    while (b->confirmed_upto < seq) {
        int64_t left = deadline - cc_mono_us();
        struct timeval tv;
        amqp_frame_t f;
        int st;

        if (left <= 0)
            return cc_err_set(err, CC_ETIMEDOUT, "no publisher confirm within %d ms", timeout_ms);
        tv.tv_sec = (time_t)(left / 1000000);
        tv.tv_usec = (suseconds_t)(left % 1000000);
        st = amqp_simple_wait_frame_noblock(b->conn, &f, &tv);
        if (st == AMQP_STATUS_TIMEOUT)
            continue;
        if (st != AMQP_STATUS_OK)
            return broker_status(b, st, "waiting for a publisher confirm", err);
        if ((st = broker_take_frame(b, &f, err)) != CC_OK)
            return st;
        /* [blocked] The confirm cannot come before connection.unblocked: do not wait for
         * it. The publish stays in the socket; the broker handles it once the alarm is
         * lifted (the caller must treat it as maybe published). */
        if (f.frame_type == AMQP_FRAME_METHOD &&
            f.payload.method.id == AMQP_CONNECTION_BLOCKED_METHOD)
            return broker_refuse_blocked(b, "waiting for a publisher confirm", err);
    }
    amqp_maybe_release_buffers(b->conn);
    if (b->is_nacked) {
        b->is_nacked = b->is_returned = false;
        return cc_err_set(err, CC_EBROKER, "broker refused a message (basic.nack)");
    }
    if (b->is_returned) {
        b->is_returned = false;
        return cc_err_set(err, CC_ENOTFOUND_Q,
                          "message returned by the broker: no queue is bound for its routing key");
    }
    return CC_OK;
}

int cc_broker_publish_confirmed(struct cc_broker *b, const char *exchange, const char *routing_key,
                                const struct cc_msg_out *m, int timeout_ms, struct cc_err *err)
{
    int rc;

    if (!b->is_confirming)
        return cc_err_set(err, CC_EINVAL, "publish_confirmed: channel not in confirm mode");
    if (b->is_blocked) /* [blocked] nothing sent: the caller keeps the message */
        return broker_refuse_blocked(b, "basic.publish", err);
    rc = broker_publish(b, b->channel, exchange, routing_key, m, true, err);
    if (rc != CC_OK)
        return rc;
    return broker_wait_confirm(b, ++b->publish_seq, timeout_ms, err);
}

/* [beat] Pipelined confirmed publishing: many publishes, one wait. */
int cc_broker_publish_pipelined(struct cc_broker *b, const char *exchange, const char *routing_key,
                                const struct cc_msg_out *m, uint64_t *seq, struct cc_err *err)
{
    int rc;

    if (!b->is_confirming)
        return cc_err_set(err, CC_EINVAL, "publish_pipelined: channel not in confirm mode");
    rc = broker_publish(b, b->channel, exchange, routing_key, m, true, err);
    if (rc == CC_OK)
        *seq = ++b->publish_seq;
    return rc;
}

int cc_broker_wait_confirms(struct cc_broker *b, uint64_t seq, int timeout_ms, struct cc_err *err)
{
    return broker_wait_confirm(b, seq, timeout_ms, err);
}

/* A frame other than basic.deliver is next: read it and act. Returns CC_OK when it was
 * harmless (ignored), an error when the channel or connection is gone. */
static int broker_other_frame(struct cc_broker *b, struct cc_err *err)
{
    amqp_frame_t f;
    struct timeval zero = {0, 0};
    int st = amqp_simple_wait_frame_noblock(b->conn, &f, &zero);

    if (st == AMQP_STATUS_TIMEOUT)
        return CC_OK;
    if (st != AMQP_STATUS_OK)
        return broker_status(b, st, "reading a frame", err);
    if (f.frame_type != AMQP_FRAME_METHOD)
        return CC_OK; /* stray content frame: nothing we can attach it to */
    switch (f.payload.method.id) {
    case AMQP_CHANNEL_CLOSE_METHOD:
        return broker_server_close(b, &f.payload.method, "channel closed by the broker", err);
    case AMQP_CONNECTION_CLOSE_METHOD:
        return broker_server_close(b, &f.payload.method, "connection closed by the broker", err);
    case AMQP_BASIC_CANCEL_METHOD: {
        const amqp_basic_cancel_t *c = f.payload.method.decoded;

        snprintf(b->last_reply, sizeof(b->last_reply), "consumer %.*s cancelled by the broker",
                 (int)c->consumer_tag.len, (const char *)c->consumer_tag.bytes);
        /* The worker treats this like a lost connection: it reconnects, redeclares the
         * queue and consumes again. */
        return cc_err_set(err, CC_ECHANNEL, "%s (queue deleted?)", b->last_reply);
    }
    case AMQP_BASIC_RETURN_METHOD: {
        amqp_message_t msg;
        amqp_rpc_reply_t r = amqp_read_message(b->conn, f.channel, &msg, 0);

        if (r.reply_type == AMQP_RESPONSE_NORMAL)
            amqp_destroy_message(&msg);
        return broker_reply(b, r, "basic.return", err);
    }
    default:
        if (broker_flow(b, &f.payload.method)) /* [blocked] */
            return CC_OK;
        cc_debug("broker: ignoring method 0x%08x on channel %u", (unsigned)f.payload.method.id,
                 (unsigned)f.channel);
        return CC_OK;
    }
}

int cc_broker_poll(struct cc_broker *b, struct cc_err *err)
{
    for (int i = 0; i < 64; i++) {
        struct timeval zero = {0, 0};
        amqp_frame_t f;
        int st;

        if (!b->is_conn_open)
            return cc_err_set(err, CC_EBROKER, "connection to the broker lost");
        st = amqp_simple_wait_frame_noblock(b->conn, &f, &zero);
        if (st == AMQP_STATUS_TIMEOUT)
            break;
        if (st != AMQP_STATUS_OK)
            return broker_status(b, st, "reading a frame", err);
        if ((st = broker_take_frame(b, &f, err)) != CC_OK)
            return st;
    }
    amqp_maybe_release_buffers(b->conn);
    return CC_OK;
}

int cc_broker_next(struct cc_broker *b, amqp_envelope_t *env, int *got, struct cc_err *err)
{
    struct timeval zero = {0, 0};
    amqp_rpc_reply_t r;

    *got = 0;
    if (!b->is_conn_open)
        return cc_err_set(err, CC_EBROKER, "connection to the broker lost");
    if (!b->is_channel_open)
        return cc_err_set(err, CC_ECHANNEL, "channel closed: %s", b->last_reply);
    r = amqp_consume_message(b->conn, env, &zero, 0);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        *got = 1;
        return CC_OK;
    }
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
        if (r.library_error == AMQP_STATUS_TIMEOUT)
            return CC_OK;
        if (r.library_error == AMQP_STATUS_UNEXPECTED_STATE)
            return broker_other_frame(b, err);
    }
    return broker_reply(b, r, "connection to the broker lost", err);
}

bool cc_broker_has_buffered(const struct cc_broker *b)
{
    return b->conn != NULL && b->is_conn_open &&
           (amqp_frames_enqueued(b->conn) || amqp_data_in_buffer(b->conn));
}

void cc_broker_release(struct cc_broker *b)
{
    if (b->conn != NULL)
        amqp_maybe_release_buffers(b->conn);
}

int cc_broker_fd(const struct cc_broker *b)
{
    return b->is_conn_open ? b->fd : -1;
}

const char *cc_broker_last_reply(const struct cc_broker *b)
{
    return b->last_reply;
}

void cc_broker_close(struct cc_broker *b)
{
    if (b->conn == NULL)
        return;
    if (b->is_channel_open)
        (void)amqp_channel_close(b->conn, b->channel, AMQP_REPLY_SUCCESS);
    if (b->is_conn_open)
        (void)amqp_connection_close(b->conn, AMQP_REPLY_SUCCESS);
    cc_broker_abandon(b); /* the handshake is done: free without further traffic */
}

void cc_broker_abandon(struct cc_broker *b)
{
    if (b->conn == NULL)
        return;
    for (size_t i = 0; i < b->n_consumers; i++)
        free(b->consumer_tags[i]);
    b->n_consumers = 0;
    /* amqp_destroy_connection closes the socket without sending anything. */
    amqp_destroy_connection(b->conn);
    b->conn = NULL;
    b->sock = NULL;
    b->fd = -1;
    b->is_channel_open = b->is_conn_open = false;
}

void cc_broker_forget(struct cc_broker *b)
{
    for (const struct cc_broker *l = b->linked; l != NULL; l = l->linked)
        if (l->conn != NULL && l->fd >= 0)
            close(l->fd);
    if (b->fd >= 0 && b->conn != NULL)
        close(b->fd);
}

/* ---- Raw republishing (delay store, dead-lettering) ------------------------------------- */

int cc_broker_publish_props(struct cc_broker *b, const char *exchange, const char *routing_key,
                            const amqp_basic_properties_t *props, amqp_bytes_t body,
                            struct cc_err *err)
{
    int rc;

    if (!b->is_channel_open)
        return cc_err_set(err, CC_ECHANNEL, "basic.publish: channel closed");
    if (b->is_blocked || b->is_publish_held) /* [blocked] */
        return broker_refuse_blocked(b, "basic.publish", err);
    rc = broker_status(b,
                       amqp_basic_publish(b->conn, b->channel, broker_bytes(exchange),
                                          broker_bytes(routing_key), 0, 0, props, body),
                       "basic.publish", err);
    if (rc == CC_OK && b->is_confirming)
        b->publish_seq++; /* its confirm is waited for by cc_broker_sync */
    return rc;
}

int cc_broker_sync(struct cc_broker *b, struct cc_err *err)
{
    if (!b->is_channel_open)
        return cc_err_set(err, CC_ECHANNEL, "sync: channel closed");
    if (b->is_blocked) /* [blocked] no reply can come before connection.unblocked */
        return broker_refuse_blocked(b, "sync", err);
    if (b->is_confirming) /* stronger: every publish so far confirmed */
        return broker_wait_confirm(b, b->publish_seq, CC_BROKER_SYNC_TIMEOUT_MS, err);
    /* exchange.declare(passive) of amq.direct, which every vhost has: a cheap synchronous
     * RPC whose -ok the broker sends only after it handled everything sent before it. */
    amqp_exchange_declare(b->conn, b->channel, amqp_cstring_bytes("amq.direct"),
                          amqp_cstring_bytes("direct"), 1, 0, 0, 0, amqp_empty_table);
    return broker_reply(b, amqp_get_rpc_reply(b->conn), "sync (exchange.declare passive)", err);
}

/* ---- [control] Extra channels (the pidbox node, celery.pidbox) ------------------------ */

int cc_broker_channel_open(struct cc_broker *b, amqp_channel_t ch, struct cc_err *err)
{
    if (!b->is_conn_open)
        return cc_err_set(err, CC_EBROKER, "channel.open %u: not connected", (unsigned)ch);
    amqp_channel_open(b->conn, ch);
    return broker_reply(b, amqp_get_rpc_reply(b->conn), "channel.open", err);
}

int cc_broker_declare_exchange_on(struct cc_broker *b, amqp_channel_t ch, const char *name,
                                  const char *type, bool durable, struct cc_err *err)
{
    char what[128];

    snprintf(what, sizeof(what), "exchange.declare '%.80s'", name);
    amqp_exchange_declare(b->conn, ch, amqp_cstring_bytes(name), amqp_cstring_bytes(type), 0,
                          durable, 0, 0, amqp_empty_table);
    return broker_reply(b, amqp_get_rpc_reply(b->conn), what, err);
}

int cc_broker_declare_queue_on(struct cc_broker *b, amqp_channel_t ch, const char *name,
                               bool durable, bool auto_delete, int expires_ms, int ttl_ms,
                               struct cc_err *err)
{
    amqp_table_entry_t e[2];
    amqp_table_t args = {0, e};
    char what[128];

    /* kombu sends these as signed 32-bit ints ('I'), x-expires first. */
    if (expires_ms > 0) {
        e[args.num_entries].key = amqp_cstring_bytes("x-expires");
        e[args.num_entries].value.kind = AMQP_FIELD_KIND_I32;
        e[args.num_entries++].value.value.i32 = expires_ms;
    }
    if (ttl_ms > 0) {
        e[args.num_entries].key = amqp_cstring_bytes("x-message-ttl");
        e[args.num_entries].value.kind = AMQP_FIELD_KIND_I32;
        e[args.num_entries++].value.value.i32 = ttl_ms;
    }
    snprintf(what, sizeof(what), "queue.declare '%.80s'", name);
    amqp_queue_declare(b->conn, ch, amqp_cstring_bytes(name), 0, durable, 0, auto_delete, args);
    return broker_reply(b, amqp_get_rpc_reply(b->conn), what, err);
}

int cc_broker_bind_on(struct cc_broker *b, amqp_channel_t ch, const char *queue,
                      const char *exchange, const char *routing_key, struct cc_err *err)
{
    char what[160];

    snprintf(what, sizeof(what), "queue.bind '%.60s' -> '%.60s'", queue, exchange);
    amqp_queue_bind(b->conn, ch, amqp_cstring_bytes(queue), amqp_cstring_bytes(exchange),
                    amqp_cstring_bytes(routing_key), amqp_empty_table);
    return broker_reply(b, amqp_get_rpc_reply(b->conn), what, err);
}

int cc_broker_consume_on(struct cc_broker *b, amqp_channel_t ch, const char *queue, bool no_ack,
                         char *tag, size_t tag_size, struct cc_err *err)
{
    amqp_basic_consume_ok_t *ok;
    char what[128];
    int rc;

    if (ch == b->channel && b->n_consumers >= CC_BROKER_MAX_CONSUMERS)
        return cc_err_set(err, CC_ERANGE, "too many queues (max %d)", CC_BROKER_MAX_CONSUMERS);
    snprintf(what, sizeof(what), "basic.consume '%.80s'", queue);
    ok = amqp_basic_consume(b->conn, ch, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, no_ack, 0,
                            amqp_empty_table);
    rc = broker_reply(b, amqp_get_rpc_reply(b->conn), what, err);
    if (rc != CC_OK || ok == NULL)
        return rc;
    if (tag != NULL && tag_size > 0)
        snprintf(tag, tag_size, "%.*s", (int)ok->consumer_tag.len,
                 (const char *)ok->consumer_tag.bytes);
    if (ch == b->channel) /* cancelled by cc_broker_cancel_all at warm shutdown too */
        b->consumer_tags[b->n_consumers++] = cc_bytes_dup(
            (cc_bytes_t){(const uint8_t *)ok->consumer_tag.bytes, ok->consumer_tag.len});
    return rc;
}

int cc_broker_cancel_on(struct cc_broker *b, amqp_channel_t ch, const char *tag, struct cc_err *err)
{
    int rc;

    amqp_basic_cancel(b->conn, ch, amqp_cstring_bytes(tag));
    rc = broker_reply(b, amqp_get_rpc_reply(b->conn), "basic.cancel", err);
    for (size_t i = 0; ch == b->channel && i < b->n_consumers; i++) {
        if (b->consumer_tags[i] != NULL && strcmp(b->consumer_tags[i], tag) == 0) {
            free(b->consumer_tags[i]);
            b->consumer_tags[i] = b->consumer_tags[--b->n_consumers];
            b->consumer_tags[b->n_consumers] = NULL;
            break;
        }
    }
    return rc;
}

const char *cc_broker_consumer_tag(const struct cc_broker *b, size_t i)
{
    return i < b->n_consumers ? b->consumer_tags[i] : NULL;
}

int cc_broker_publish_on(struct cc_broker *b, amqp_channel_t ch, const char *exchange,
                         const char *routing_key, const struct cc_msg_out *m, struct cc_err *err)
{
    return broker_publish(b, ch, exchange, routing_key, m, false, err);
}

int cc_broker_publish_raw_on(struct cc_broker *b, amqp_channel_t ch, const char *exchange,
                             const char *routing_key, const amqp_basic_properties_t *props,
                             amqp_bytes_t body, struct cc_err *err)
{
    struct pollfd pfd = {.fd = b->fd, .events = POLLOUT};

    if (!b->is_conn_open || b->fd < 0)
        return cc_err_set(err, CC_EBROKER, "basic.publish: not connected");
    if (b->is_blocked || b->is_publish_held) /* [blocked] */
        return broker_refuse_blocked(b, "basic.publish", err);
    /* rabbitmq-c writes with blocking sends: a broker that stopped reading (memory alarm,
     * connection.blocked) would stall the whole event loop. No room now = drop. */
    if (poll(&pfd, 1, 0) != 1 || !(pfd.revents & POLLOUT))
        return cc_err_set(err, CC_EAGAIN, "basic.publish: socket send buffer full");
    return broker_status(b,
                         amqp_basic_publish(b->conn, ch, broker_bytes(exchange),
                                            broker_bytes(routing_key), 0, 0, props, body),
                         "basic.publish", err);
}
