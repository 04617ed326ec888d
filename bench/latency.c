/* bench_latency: publish-to-result latency, one task at a time (the client blocks on each
 * result before it sends the next), as a Celery client calling apply_async().get() sees it,
 * minus the Python client's own overhead.
 *
 *   bench_latency AMQP_HOST AMQP_PORT REDIS_HOST REDIS_PORT TASK ARGS_JSON EXPECT_JSON < PLAN
 *
 * PLAN: one block per line, "QUEUE COUNT WARMUP": WARMUP unmeasured tasks, then COUNT measured
 * ones, all sent to QUEUE (declared by the worker that consumes it). Blocks run in the order
 * given, so the caller can interleave the workers under test.
 *
 * Per task: the message is encoded first (cc_message_encode, as bench_publish does: fresh uuid4
 * id, protocol 2, JSON); the clock starts just before basic.publish and stops when the
 * result's PUBLISH on celery-task-meta-<id> arrives on a Redis pattern subscription (what
 * AsyncResult.get() waits for with the Redis backend). The result must be SUCCESS and, unless
 * EXPECT_JSON is "-", equal to EXPECT_JSON. Prints "QUEUE MICROSECONDS" per measured task.
 * Exits 1 on any error or after 30 s without a result.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

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

#define META_PREFIX "celery-task-meta-"

struct lat_ctx {
    amqp_connection_state_t conn;
    redisContext *redis;
    amqp_pool_t pool;
    const char *task;
    json_t *args;
    json_t *expect; /* NULL: any SUCCESS result */
};

/* Wait for the result of task `id` (pmessage on META_PREFIX<id>); other ids are skipped. */
static int latency_wait_result(struct lat_ctx *c, const char *id)
{
    char channel[64];

    snprintf(channel, sizeof(channel), META_PREFIX "%s", id);
    for (;;) {
        redisReply *rep = NULL;
        int rc = -1;

        if (redisGetReply(c->redis, (void **)&rep) != REDIS_OK || rep == NULL) {
            fprintf(stderr, "bench_latency: no result for %s: %s\n", id,
                    c->redis->err ? c->redis->errstr : "?");
            return -1;
        }
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 4 &&
            rep->element[2]->type == REDIS_REPLY_STRING &&
            strcmp(rep->element[2]->str, channel) == 0) {
            json_t *meta = json_loadb(rep->element[3]->str, rep->element[3]->len, 0, NULL);
            const char *status = json_string_value(json_object_get(meta, "status"));

            if (status == NULL || strcmp(status, "SUCCESS") != 0)
                fprintf(stderr, "bench_latency: %s: not SUCCESS: %.*s\n", id,
                        (int)rep->element[3]->len, rep->element[3]->str);
            else if (c->expect != NULL && !json_equal(json_object_get(meta, "result"), c->expect))
                fprintf(stderr, "bench_latency: %s: unexpected result: %.*s\n", id,
                        (int)rep->element[3]->len, rep->element[3]->str);
            else
                rc = 0;
            json_decref(meta);
            freeReplyObject(rep);
            return rc;
        }
        freeReplyObject(rep);
    }
}

/* One task: encode, publish, block until its result. Latency in us, or -1. */
static int64_t latency_one(struct lat_ctx *c, const char *queue)
{
    char id[37];
    struct cc_msg m;
    struct cc_msg_out out = {0};
    struct cc_err err = {0};
    amqp_basic_properties_t props;
    amqp_table_t headers;
    int64_t t0, lat = -1;
    int prc;

    memset(&m, 0, sizeof(m));
    cc_uuid4(id);
    m.protocol = 2;
    m.id = id;
    m.task = (char *)c->task;
    m.root_id = id;
    m.group_index = -1;
    m.args = c->args;
    m.kwargs = json_object();
    m.embed = json_object();
    m.origin = (char *)"bench@localhost";
    m.delivery_mode = 2;
    if (cc_message_encode(&m, cc_now_us(), &out, &err) != CC_OK ||
        cc_amqptab_from_json(out.headers, &c->pool, &headers, &err) != CC_OK) {
        fprintf(stderr, "bench_latency: encode: %s\n", err.msg);
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
    props.priority = 0;
    props.correlation_id = amqp_cstring_bytes(out.correlation_id);

    t0 = cc_mono_us();
    prc = amqp_basic_publish(c->conn, 1, amqp_empty_bytes, amqp_cstring_bytes(queue), 0, 0, &props,
                             (amqp_bytes_t){out.body_len, out.body});
    if (prc != AMQP_STATUS_OK) {
        fprintf(stderr, "bench_latency: publish: %s\n", amqp_error_string2(prc));
        goto out;
    }
    if (latency_wait_result(c, id) == 0)
        lat = cc_mono_us() - t0;
out:
    json_decref(m.kwargs);
    json_decref(m.embed);
    cc_message_out_deinit(&out);
    recycle_amqp_pool(&c->pool);
    return lat;
}

int main(int argc, char **argv)
{
    struct lat_ctx c = {0};
    amqp_socket_t *sock;
    struct timeval tv = {30, 0};
    redisReply *rep;
    char line[512];
    int rc = 1;

    if (argc < 8) {
        fprintf(stderr,
                "usage: %s AMQP_HOST AMQP_PORT REDIS_HOST REDIS_PORT TASK ARGS_JSON "
                "EXPECT_JSON < PLAN\n",
                argv[0]);
        return 2;
    }
    c.task = argv[5];
    c.args = json_loads(argv[6], 0, NULL);
    if (c.args == NULL || !json_is_array(c.args)) {
        fprintf(stderr, "bench_latency: ARGS_JSON must be a JSON array\n");
        return 2;
    }
    if (strcmp(argv[7], "-") != 0 &&
        (c.expect = json_loads(argv[7], JSON_DECODE_ANY, NULL)) == NULL) {
        fprintf(stderr, "bench_latency: EXPECT_JSON is not JSON\n");
        return 2;
    }

    c.conn = amqp_new_connection();
    sock = amqp_tcp_socket_new(c.conn);
    if (sock == NULL || amqp_socket_open(sock, argv[1], atoi(argv[2])) != AMQP_STATUS_OK) {
        fprintf(stderr, "bench_latency: cannot connect to %s:%s\n", argv[1], argv[2]);
        return 1;
    }
    if (amqp_login(c.conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest")
            .reply_type != AMQP_RESPONSE_NORMAL)
        return 1;
    amqp_channel_open(c.conn, 1);
    if (amqp_get_rpc_reply(c.conn).reply_type != AMQP_RESPONSE_NORMAL)
        return 1;

    c.redis = redisConnectWithTimeout(argv[3], atoi(argv[4]), tv);
    if (c.redis == NULL || c.redis->err || redisSetTimeout(c.redis, tv) != REDIS_OK) {
        fprintf(stderr, "bench_latency: cannot connect to Redis %s:%s\n", argv[3], argv[4]);
        return 1;
    }
    rep = redisCommand(c.redis, "PSUBSCRIBE " META_PREFIX "*");
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY) {
        fprintf(stderr, "bench_latency: PSUBSCRIBE failed\n");
        return 1;
    }
    freeReplyObject(rep);
    init_amqp_pool(&c.pool, 4096);

    while (fgets(line, sizeof(line), stdin) != NULL) {
        char queue[256];
        long count, warmup;

        if (sscanf(line, "%255s %ld %ld", queue, &count, &warmup) != 3)
            continue;
        for (long i = 0; i < warmup + count; i++) {
            int64_t us = latency_one(&c, queue);

            if (us < 0)
                goto out;
            if (i >= warmup)
                printf("%s %lld\n", queue, (long long)us);
        }
        fflush(stdout);
    }
    rc = 0;
out:
    empty_amqp_pool(&c.pool);
    redisFree(c.redis);
    amqp_channel_close(c.conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c.conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c.conn);
    json_decref(c.args);
    json_decref(c.expect);
    return rc;
}
