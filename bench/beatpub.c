/* bench_beatpub: the ceiling of the beat benchmark (bench/beat.py): a bare publisher that does
 * only what any beat must do at a due time, with no scheduler at all. It knows the benchmark's
 * schedule in advance (every entry is due at the epoch seconds t with t % PERIOD == PHASE),
 * sleeps until each whole second at which entries are due (CLOCK_REALTIME, absolute), then
 * encodes (cc_msg_encode: fresh uuid4, protocol 2 JSON, args [ENTRY]) and publishes the message
 * of every entry due then, as fast as it can, to exchange QUEUE with routing key QUEUE (what
 * Celery does for options.queue).
 *
 *   bench_beatpub HOST PORT QUEUE TASK ENTRIES_FILE UNTIL_EPOCH_S
 *
 * ENTRIES_FILE: one line per entry, "ENTRY PERIOD_S PHASE_S" (0 <= PHASE_S < PERIOD_S; the
 * crontab minute O-59/5 is PERIOD_S 300, PHASE_S O * 60; an hourly minute M is 3600, M * 60).
 * At most 16 distinct periods. Stops after the last due second < UNTIL_EPOCH_S (or on
 * SIGTERM). Prints "ready" once connected, then one line per due second: "boundary EPOCH_S due N
 * published_in_ms X". */
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

struct due_list {
    long *v;
    size_t n, cap;
};

/* The entries of one period, by phase. */
struct period {
    long period;
    struct due_list *by_phase; /* period lists */
};

static int due_push(struct due_list *d, long entry)
{
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 64;
        d->v = realloc(d->v, d->cap * sizeof(*d->v));
        if (d->v == NULL)
            return -1;
    }
    d->v[d->n++] = entry;
    return 0;
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
    if (cc_msg_encode(&m, cc_now_us(), &out, &err) != CC_OK ||
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
    cc_msg_out_deinit(&out);
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
    struct period per[16];
    size_t n_per = 0;
    struct sigaction sa;
    long entry, step, off, until, next_s;
    FILE *f;
    int rc = 1;

    if (argc < 7) {
        fprintf(stderr, "usage: %s HOST PORT QUEUE TASK ENTRIES_FILE UNTIL_EPOCH_S\n", argv[0]);
        return 2;
    }
    memset(per, 0, sizeof(per));
    until = strtol(argv[6], NULL, 10);
    f = fopen(argv[5], "r");
    if (f == NULL) {
        perror(argv[5]);
        return 1;
    }
    while (fscanf(f, "%ld %ld %ld", &entry, &step, &off) == 3) {
        size_t k;

        if (step <= 0 || step > 86400 * 7 || off < 0 || off >= step) {
            fprintf(stderr, "bench_beatpub: bad entry line %ld %ld %ld\n", entry, step, off);
            return 2;
        }
        for (k = 0; k < n_per && per[k].period != step; k++)
            ;
        if (k == n_per) {
            if (n_per == 16) {
                fprintf(stderr, "bench_beatpub: more than 16 periods\n");
                return 2;
            }
            per[k].period = step;
            per[k].by_phase = calloc((size_t)step, sizeof(struct due_list));
            if (per[k].by_phase == NULL)
                return 1;
            n_per++;
        }
        if (due_push(&per[k].by_phase[off], entry) != 0)
            return 1;
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
    next_s = cc_now_us() / 1000000 + 1;
    while (!stop_flag) {
        long b = next_s; /* the next whole second with entries due */
        struct timespec ts = {.tv_sec = b, .tv_nsec = 0};
        size_t n_due = 0;
        int64_t t0;
        int e;

        for (size_t k = 0; k < n_per; k++)
            n_due += per[k].by_phase[b % per[k].period].n;
        if (b >= until) {
            rc = 0;
            break;
        }
        if (n_due == 0) {
            next_s++;
            continue;
        }
        e = clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, NULL);
        if (e == EINTR)
            continue;
        next_s++;
        t0 = cc_now_us();
        for (size_t k = 0; k < n_per; k++) {
            const struct due_list *d = &per[k].by_phase[b % per[k].period];

            for (size_t i = 0; i < d->n && !stop_flag; i++)
                if (publish_one(conn, &pool, argv[3], argv[4], d->v[i]) != 0)
                    goto out;
        }
        /* A synchronous round trip: the broker has taken them all. */
        amqp_exchange_declare(conn, 1, amqp_cstring_bytes(argv[3]), amqp_cstring_bytes("direct"), 1,
                              1, 0, 0, amqp_empty_table);
        if (amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL)
            goto out;
        printf("boundary %ld due %zu published_in_ms %.1f\n", b, n_due,
               (double)(cc_now_us() - t0) / 1000.0);
        fflush(stdout);
    }
    if (stop_flag)
        rc = 0;
out:
    empty_amqp_pool(&pool);
    amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
    for (size_t k = 0; k < n_per; k++) {
        for (long i = 0; i < per[k].period; i++)
            free(per[k].by_phase[i].v);
        free(per[k].by_phase);
    }
    return rc;
}
