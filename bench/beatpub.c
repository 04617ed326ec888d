/* bench_beatpub: the ceiling of the beat benchmark (bench/beat.py): a bare publisher that does
 * only what any beat must do at a due time, with no scheduler to speak of. It knows the
 * benchmark's schedule in advance (entry i is due at the epoch milliseconds t with
 * t % PERIOD_MS == PHASE_MS), sleeps until each due instant (CLOCK_REALTIME, absolute), then
 * encodes (cc_message_encode: fresh uuid4, protocol 2 JSON, args [ENTRY]) and publishes the message
 * of every entry due then, as fast as it can, to exchange QUEUE with routing key QUEUE (what
 * Celery does for options.queue). No publisher confirms.
 *
 *   bench_beatpub HOST PORT QUEUE TASK ENTRIES_FILE UNTIL_EPOCH_S
 *
 * ENTRIES_FILE: one line per entry, "ENTRY PERIOD_MS PHASE_MS" (0 <= PHASE_MS < PERIOD_MS; the
 * crontab minute O-59/5 is 300000, O * 60000). Stops before the first due instant at or after
 * UNTIL_EPOCH_S (or on SIGTERM). Prints "ready" once connected, then one line per due instant
 * with at least 100 entries: "boundary EPOCH_MS due N published_in_ms X". */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

static volatile sig_atomic_t stop_flag;

static void on_stop(int sig)
{
    (void)sig;
    stop_flag = 1;
}

/* A min-heap of (next due ms, entry): pop what is due, publish, push the next due time. */
struct due {
    int64_t at_ms, period_ms;
    long entry;
};

struct due_heap {
    struct due *a;
    size_t n, cap;
};

static void heap_push(struct due_heap *h, struct due d)
{
    size_t i;

    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 1024;
        h->a = realloc(h->a, h->cap * sizeof(*h->a));
        if (h->a == NULL)
            abort();
    }
    for (i = h->n++; i > 0 && h->a[(i - 1) / 2].at_ms > d.at_ms; i = (i - 1) / 2)
        h->a[i] = h->a[(i - 1) / 2];
    h->a[i] = d;
}

static struct due heap_pop(struct due_heap *h)
{
    struct due top = h->a[0], last = h->a[--h->n];
    size_t i = 0;

    for (;;) {
        size_t c = 2 * i + 1;

        if (c >= h->n)
            break;
        if (c + 1 < h->n && h->a[c + 1].at_ms < h->a[c].at_ms)
            c++;
        if (h->a[c].at_ms >= last.at_ms)
            break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (h->n > 0)
        h->a[i] = last;
    return top;
}

static int publish_one(amqp_connection_state_t conn, amqp_pool_t *pool, const char *queue,
                       const char *task, long entry)
{
    char id[37];
    struct cc_msg m;
    struct cc_msg_out out = {0};
    struct cc_err err = {0};
    amqp_basic_properties_t props;
    amqp_table_t headers;
    int rc = -1;

    memset(&m, 0, sizeof(m));
    cc_uuid4(id);
    m.protocol = 2;
    m.id = id;
    m.task = (char *)task;
    m.root_id = id;
    m.group_index = -1;
    m.args = json_pack("[I]", (json_int_t)entry);
    m.kwargs = json_object();
    m.embed = json_object();
    m.origin = (char *)"bench-beatpub@localhost";
    m.delivery_mode = 2;
    if (cc_message_encode(&m, cc_now_us(), &out, &err) != CC_OK ||
        cc_amqptab_from_json(out.headers, pool, &headers, &err) != CC_OK) {
        fprintf(stderr, "bench_beatpub: encode: %s\n", err.msg);
        goto out;
    }
    memset(&props, 0, sizeof(props));
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_CONTENT_ENCODING_FLAG |
                   AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
                   AMQP_BASIC_PRIORITY_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG;
    props.content_type = amqp_cstring_bytes(out.content_type);
    props.content_encoding = amqp_cstring_bytes(out.content_encoding);
    props.headers = headers;
    props.delivery_mode = (uint8_t)out.delivery_mode;
    props.correlation_id = amqp_cstring_bytes(out.correlation_id);
    if (amqp_basic_publish(conn, 1, amqp_cstring_bytes(queue), amqp_cstring_bytes(queue), 0, 0,
                           &props, (amqp_bytes_t){out.body_len, out.body}) != AMQP_STATUS_OK) {
        fprintf(stderr, "bench_beatpub: publish failed\n");
        goto out;
    }
    rc = 0;
out:
    cc_message_out_deinit(&out);
    json_decref(m.args);
    json_decref(m.kwargs);
    json_decref(m.embed);
    recycle_amqp_pool(pool);
    return rc;
}

int main(int argc, char **argv)
{
    amqp_connection_state_t conn;
    amqp_socket_t *sock;
    amqp_pool_t pool;
    struct due_heap heap = {0};
    struct sigaction sa;
    long entry, period, phase;
    int64_t until_ms, now_ms;
    FILE *f;
    int rc = 1;

    if (argc < 7) {
        fprintf(stderr, "usage: %s HOST PORT QUEUE TASK ENTRIES_FILE UNTIL_EPOCH_S\n", argv[0]);
        return 2;
    }
    until_ms = strtoll(argv[6], NULL, 10) * 1000;
    now_ms = cc_now_us() / 1000;
    f = fopen(argv[5], "r");
    if (f == NULL) {
        perror(argv[5]);
        return 1;
    }
    while (fscanf(f, "%ld %ld %ld", &entry, &period, &phase) == 3) {
        struct due d;

        if (period <= 0 || phase < 0 || phase >= period) {
            fprintf(stderr, "bench_beatpub: bad entry line %ld %ld %ld\n", entry, period, phase);
            return 2;
        }
        d.period_ms = period;
        d.entry = entry;
        d.at_ms = now_ms + 1 + ((phase - (now_ms + 1)) % period + period) % period;
        heap_push(&heap, d);
    }
    fclose(f);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    conn = amqp_new_connection();
    sock = amqp_tcp_socket_new(conn);
    if (sock == NULL || amqp_socket_open(sock, argv[1], atoi(argv[2])) != AMQP_STATUS_OK) {
        fprintf(stderr, "bench_beatpub: cannot connect\n");
        return 1;
    }
    if (amqp_login(conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest").reply_type !=
        AMQP_RESPONSE_NORMAL)
        return 1;
    amqp_channel_open(conn, 1);
    if (amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL)
        return 1;
    init_amqp_pool(&pool, 4096);
    printf("ready\n");
    fflush(stdout);
    while (!stop_flag && heap.n > 0) {
        int64_t b = heap.a[0].at_ms, t0;
        struct timespec ts = {.tv_sec = (time_t)(b / 1000), .tv_nsec = (long)(b % 1000) * 1000000};
        size_t n_due = 0;

        if (b >= until_ms) {
            rc = 0;
            break;
        }
        if (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, NULL) == EINTR)
            continue;
        t0 = cc_now_us();
        while (heap.n > 0 && heap.a[0].at_ms == b && !stop_flag) {
            struct due d = heap_pop(&heap);

            if (publish_one(conn, &pool, argv[3], argv[4], d.entry) != 0)
                goto out;
            n_due++;
            d.at_ms += d.period_ms;
            heap_push(&heap, d);
        }
        if (n_due >= 100) {
            printf("boundary %lld due %zu published_in_ms %.1f\n", (long long)b, n_due,
                   (double)(cc_now_us() - t0) / 1000.0);
            fflush(stdout);
        }
    }
    if (stop_flag)
        rc = 0;
out:
    empty_amqp_pool(&pool);
    amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
    free(heap.a);
    return rc;
}
