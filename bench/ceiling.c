/* bench_ceiling: the broker ceiling for the benchmark: a bare rabbitmq-c consumer that only
 * consumes and acks (no decoding, no task, no result), with the worker's QoS.
 *
 *   bench_ceiling HOST PORT QUEUE N PREFETCH [GLOBAL]
 *
 * basic.qos(0, PREFETCH, global=GLOBAL (default 1) as Celery sets it; 0: per consumer, as
 * the statistics indexer sets it), basic.consume(no_ack=0); acks are
 * batched the way the worker batches them (one multiple-ack when half the prefetch window is
 * pending, or when nothing more is buffered), so the ceiling is the best a consumer can do
 * on this broker, not a per-ack-syscall straw man. Stops after N deliveries. Prints "consumed N in
 * S s (R msg/s)"; the clock starts at the first delivery.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>

/* Debian 12's rabbitmq-c 0.11 installs <amqp.h>; newer releases <rabbitmq-c/amqp.h>. */
#if __has_include(<rabbitmq-c/amqp.h>)
#include <rabbitmq-c/amqp.h>
#include <rabbitmq-c/tcp_socket.h>
#else
#include <amqp.h>
#include <amqp_tcp_socket.h>
#endif

#include "util.h"

int main(int argc, char **argv)
{
    amqp_connection_state_t conn;
    amqp_socket_t *sock;
    long n, got = 0, pending = 0, batch;
    uint64_t last_tag = 0;
    int64_t t0 = 0;

    if (argc < 6) {
        fprintf(stderr, "usage: %s HOST PORT QUEUE N PREFETCH [GLOBAL]\n", argv[0]);
        return 2;
    }
    n = strtol(argv[4], NULL, 10);
    conn = amqp_new_connection();
    sock = amqp_tcp_socket_new(conn);
    if (sock == NULL || amqp_socket_open(sock, argv[1], atoi(argv[2])) != AMQP_STATUS_OK) {
        fprintf(stderr, "bench_ceiling: cannot connect\n");
        return 1;
    }
    if (amqp_login(conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest").reply_type !=
        AMQP_RESPONSE_NORMAL)
        return 1;
    amqp_channel_open(conn, 1);
    amqp_basic_qos(conn, 1, 0, (uint16_t)atoi(argv[5]), argc > 6 ? atoi(argv[6]) != 0 : 1);
    batch = atoi(argv[5]) / 2 > 0 ? atoi(argv[5]) / 2 : 1;
    amqp_basic_consume(conn, 1, amqp_cstring_bytes(argv[3]), amqp_empty_bytes, 0, 0, 0,
                       amqp_empty_table);
    if (amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL) {
        fprintf(stderr, "bench_ceiling: consume failed\n");
        return 1;
    }
    while (got < n) {
        amqp_envelope_t env;
        struct timeval tv = {30, 0};
        amqp_rpc_reply_t r;

        amqp_maybe_release_buffers(conn);
        r = amqp_consume_message(conn, &env, &tv, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            fprintf(stderr, "bench_ceiling: consume stopped after %ld\n", got);
            return 1;
        }
        if (got == 0)
            t0 = cc_mono_us();
        last_tag = env.delivery_tag;
        amqp_destroy_envelope(&env);
        got++;
        pending++;
        if (pending >= batch || got == n ||
            (!amqp_data_in_buffer(conn) && !amqp_frames_enqueued(conn))) {
            amqp_basic_ack(conn, 1, last_tag, 1);
            pending = 0;
        }
    }
    {
        double s = (double)(cc_mono_us() - t0) / 1e6;
        printf("consumed %ld in %.3f s (%.0f msg/s)\n", got, s, s > 0 ? (double)got / s : 0.0);
    }
    amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
    return 0;
}
