/* bench_publish: pre-fill a queue with N Celery task messages (protocol 2, JSON), fast.
 *
 *   bench_publish HOST PORT QUEUE TASK N [ARGS_JSON]
 *
 * Declares QUEUE as the worker will (durable, direct exchange of the same name, bound with the
 * queue name) and publishes N messages to "" / QUEUE exactly as a Python client would: each
 * message is encoded with cc_message_encode() (fresh uuid4 id, root_id = id) and its headers
 * converted with cc_amqptab_from_json(). Publisher confirms are off; the connection is closed
 * cleanly, so every message is in the queue when this exits 0. Prints "published N in S s".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Debian 12's rabbitmq-c 0.11 installs <amqp.h>; newer releases <rabbitmq-c/amqp.h>. */
#if __has_include(<rabbitmq-c/amqp.h>)
#include <rabbitmq-c/amqp.h>
#include <rabbitmq-c/tcp_socket.h>
#else
#include <amqp.h>
#include <amqp_tcp_socket.h>
#endif

#include "amqptab.h"
#include "message.h"
#include "util.h"

static int check_reply(amqp_rpc_reply_t r, const char *what)
{
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return 0;
    fprintf(stderr, "bench_publish: %s failed (reply type %d)\n", what, (int)r.reply_type);
    return -1;
}

int main(int argc, char **argv)
{
    amqp_connection_state_t conn;
    amqp_socket_t *sock;
    amqp_pool_t pool;
    struct cc_err err = {0};
    json_t *args;
    long n;
    int64_t t0;
    int rc = 1;

    if (argc < 6) {
        fprintf(stderr, "usage: %s HOST PORT QUEUE TASK N [ARGS_JSON]\n", argv[0]);
        return 2;
    }
    n = strtol(argv[5], NULL, 10);
    args = json_loads(argc > 6 ? argv[6] : "[]", 0, NULL);
    if (args == NULL || !json_is_array(args)) {
        fprintf(stderr, "bench_publish: ARGS_JSON must be a JSON array\n");
        return 2;
    }
    conn = amqp_new_connection();
    sock = amqp_tcp_socket_new(conn);
    if (sock == NULL || amqp_socket_open(sock, argv[1], atoi(argv[2])) != AMQP_STATUS_OK) {
        fprintf(stderr, "bench_publish: cannot connect to %s:%s\n", argv[1], argv[2]);
        return 1;
    }
    if (check_reply(amqp_login(conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest"),
                    "login") != 0)
        return 1;
    amqp_channel_open(conn, 1);
    if (check_reply(amqp_get_rpc_reply(conn), "channel.open") != 0)
        return 1;
    amqp_exchange_declare(conn, 1, amqp_cstring_bytes(argv[3]), amqp_cstring_bytes("direct"), 0, 1,
                          0, 0, amqp_empty_table);
    amqp_queue_declare(conn, 1, amqp_cstring_bytes(argv[3]), 0, 1, 0, 0, amqp_empty_table);
    amqp_queue_bind(conn, 1, amqp_cstring_bytes(argv[3]), amqp_cstring_bytes(argv[3]),
                    amqp_cstring_bytes(argv[3]), amqp_empty_table);
    if (check_reply(amqp_get_rpc_reply(conn), "declare") != 0)
        return 1;

    init_amqp_pool(&pool, 4096);
    t0 = cc_mono_us();
    for (long i = 0; i < n; i++) {
        char id[37];
        struct cc_msg m;
        struct cc_msg_out out = {0};
        amqp_basic_properties_t props;
        amqp_table_t headers;

        memset(&m, 0, sizeof(m));
        cc_uuid4(id);
        m.protocol = 2;
        m.id = id;
        m.task = argv[4];
        m.root_id = id;
        m.group_index = -1;
        m.args = args;
        m.kwargs = json_object();
        m.embed = json_object();
        m.origin = (char *)"bench@localhost";
        m.delivery_mode = 2;
        if (cc_message_encode(&m, cc_now_us(), &out, &err) != CC_OK ||
            cc_amqptab_from_json(out.headers, &pool, &headers, &err) != CC_OK) {
            fprintf(stderr, "bench_publish: encode: %s\n", err.msg);
            goto out;
        }
        json_decref(m.kwargs);
        json_decref(m.embed);
        memset(&props, 0, sizeof(props));
        props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_CONTENT_ENCODING_FLAG |
                       AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
                       AMQP_BASIC_PRIORITY_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG;
        props.content_type = amqp_cstring_bytes(out.content_type);
        props.content_encoding = amqp_cstring_bytes(out.content_encoding);
        props.headers = headers;
        props.delivery_mode = (uint8_t)out.delivery_mode;
        props.priority = 0;
        props.correlation_id = amqp_cstring_bytes(out.correlation_id);
        if (amqp_basic_publish(conn, 1, amqp_empty_bytes, amqp_cstring_bytes(argv[3]), 0, 0, &props,
                               (amqp_bytes_t){out.body_len, out.body}) != AMQP_STATUS_OK) {
            fprintf(stderr, "bench_publish: publish failed at %ld\n", i);
            cc_message_out_deinit(&out);
            goto out;
        }
        cc_message_out_deinit(&out);
        recycle_amqp_pool(&pool);
    }
    /* A synchronous round trip after the last publish: the broker has processed them all. */
    amqp_queue_declare(conn, 1, amqp_cstring_bytes(argv[3]), 1, 1, 0, 0, amqp_empty_table);
    if (check_reply(amqp_get_rpc_reply(conn), "final declare") != 0)
        goto out;
    printf("published %ld in %.3f s\n", n, (double)(cc_mono_us() - t0) / 1e6);
    rc = 0;
out:
    empty_amqp_pool(&pool);
    amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
    json_decref(args);
    return rc;
}
