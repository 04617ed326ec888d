/* bench_beatsink: the receiving end of the beat benchmark (bench/beat.py). A bare rabbitmq-c
 * consumer that records, for every task message a beat sends, when it arrived and which entry
 * sent it; bench/beat.py turns that into dispatch lateness (arrival - the minute boundary the
 * entry was due at).
 *
 *   bench_beatsink HOST PORT QUEUE OUTFILE
 *
 * Declares QUEUE as a worker would (durable, direct exchange of the same name, bound with the
 * queue name), purges it, prints "ready" on stdout, then consumes with no_ack until SIGTERM or
 * SIGINT. One line per message in OUTFILE:
 *
 *   RECV_US ENTRY TASK
 *
 * RECV_US: CLOCK_REALTIME microseconds at delivery (the beats' due times are wall-clock minute
 * boundaries); ENTRY: args[0] of the message body (protocol 2 JSON: [[ENTRY, ...], {...}, {...}]),
 * -1 when the body has another shape; TASK: the `task` header ("-" when absent). The file is
 * flushed whenever the queue has been idle for 200 ms, and at exit ("received N" on stdout).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static volatile sig_atomic_t stop_flag;

static void on_stop(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void task_header(const amqp_basic_properties_t *p, char *out, size_t cap)
{
    snprintf(out, cap, "-");
    if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG))
        return;
    for (int i = 0; i < p->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &p->headers.entries[i];

        if (e->key.len == 4 && memcmp(e->key.bytes, "task", 4) == 0 &&
            (e->value.kind == AMQP_FIELD_KIND_UTF8 || e->value.kind == AMQP_FIELD_KIND_BYTES)) {
            size_t n = e->value.value.bytes.len < cap - 1 ? e->value.value.bytes.len : cap - 1;

            memcpy(out, e->value.value.bytes.bytes, n);
            out[n] = '\0';
            for (size_t k = 0; k < n; k++)
                if (out[k] == ' ' || out[k] == '\n')
                    out[k] = '_';
            return;
        }
    }
}

static long body_entry(const amqp_bytes_t *b)
{
    char buf[64];
    size_t n = b->len < sizeof(buf) - 1 ? b->len : sizeof(buf) - 1;
    long v;

    memcpy(buf, b->bytes, n);
    buf[n] = '\0';
    return sscanf(buf, " [ [ %ld", &v) == 1 ? v : -1;
}

int main(int argc, char **argv)
{
    amqp_connection_state_t conn;
    amqp_socket_t *sock;
    struct sigaction sa;
    FILE *out;
    long got = 0;

    if (argc < 5) {
        fprintf(stderr, "usage: %s HOST PORT QUEUE OUTFILE\n", argv[0]);
        return 2;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop; /* no SA_RESTART: the blocking wait returns */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    out = fopen(argv[4], "w");
    if (out == NULL) {
        perror(argv[4]);
        return 1;
    }
    conn = amqp_new_connection();
    sock = amqp_tcp_socket_new(conn);
    if (sock == NULL || amqp_socket_open(sock, argv[1], atoi(argv[2])) != AMQP_STATUS_OK) {
        fprintf(stderr, "bench_beatsink: cannot connect\n");
        return 1;
    }
    if (amqp_login(conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest").reply_type !=
        AMQP_RESPONSE_NORMAL)
        return 1;
    amqp_channel_open(conn, 1);
    amqp_exchange_declare(conn, 1, amqp_cstring_bytes(argv[3]), amqp_cstring_bytes("direct"), 0, 1,
                          0, 0, amqp_empty_table);
    amqp_queue_declare(conn, 1, amqp_cstring_bytes(argv[3]), 0, 1, 0, 0, amqp_empty_table);
    amqp_queue_bind(conn, 1, amqp_cstring_bytes(argv[3]), amqp_cstring_bytes(argv[3]),
                    amqp_cstring_bytes(argv[3]), amqp_empty_table);
    amqp_queue_purge(conn, 1, amqp_cstring_bytes(argv[3]));
    amqp_basic_consume(conn, 1, amqp_cstring_bytes(argv[3]), amqp_empty_bytes, 0, 1, 0,
                       amqp_empty_table);
    if (amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL) {
        fprintf(stderr, "bench_beatsink: declare/consume failed\n");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    while (!stop_flag) {
        amqp_envelope_t env;
        struct timeval tv = {0, 200000};
        amqp_rpc_reply_t r;
        char task[256];
        int64_t t;

        amqp_maybe_release_buffers(conn);
        r = amqp_consume_message(conn, &env, &tv, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
                r.library_error == AMQP_STATUS_TIMEOUT) {
                fflush(out);
                continue;
            }
            if (stop_flag)
                break;
            fprintf(stderr, "bench_beatsink: consume stopped after %ld (reply %d, error %d)\n", got,
                    (int)r.reply_type, r.library_error);
            fclose(out);
            return 1;
        }
        t = cc_now_us();
        task_header(&env.message.properties, task, sizeof(task));
        fprintf(out, "%lld %ld %s\n", (long long)t, body_entry(&env.message.body), task);
        amqp_destroy_envelope(&env);
        got++;
    }
    fclose(out);
    printf("received %ld\n", got);
    amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
    return 0;
}
