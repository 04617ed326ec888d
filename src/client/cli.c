/* The `celeryc` client commands (issue #4): inspect, control, status, call, result, purge,
 * events --dump. They work against any Celery 5 fleet, Python workers included.
 *
 * Design: one short-lived AMQP connection (src/core/broker.c's connect/close, plus rabbitmq-c
 * calls for what the worker never does: a reply queue with arguments, no-ack consume with a
 * timeout, queue.purge). Pure parts (request encoding, reply and event formatting) are in
 * proto/ctlclient.c. Remote control follows kombu's Mailbox._broadcast/_collect:
 *   - declare celery.pidbox (fanout) and reply.celery.pidbox (direct), both non-durable;
 *   - declare the reply queue "<oid>.reply.celery.pidbox" (auto_delete, x-expires 10 s),
 *     bound with routing key <oid>, and consume it with no_ack;
 *   - publish {method, arguments, destination, pattern, matcher, ticket, reply_to} with
 *     headers {clock, expires = now + timeout};
 *   - collect replies whose ticket header matches (missing = accepted), waiting at most
 *     `timeout` for each next one, stopping after len(destination) replies when given.
 * Output is the `celery` CLI's (celery/bin/control.py) without colour; --json prints what
 * `celery ... --json` prints. No reply: "Error: No nodes replied within time constraint" on
 * stderr, exit 69 (EX_UNAVAILABLE), as Celery.
 *
 * Options: -b/--broker and --result-backend as the worker takes them, and the same
 * environment (CELERYC_BROKER_URL, CELERY_BROKER_URL, CELERYC_RESULT_BACKEND,
 * CELERY_RESULT_BACKEND), and the worker's TLS options for amqps:// (--broker-ssl-ca, -cert,
 * -key, -verify; env CELERYC_BROKER_SSL_CA_CERTS, _CERTFILE, _KEYFILE, _VERIFY).
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "amqptab.h"
#include "backend.h"
#include "broker.h"
#include "cli.h"
#include "ctlclient.h"
#include "isotime.h"
#include "message.h"
#include "pyrepr.h"
#include "redis.h"
#include "strbuf.h"
#include "util.h"

#define CLI_EX_FAIL        1
#define CLI_EX_USAGE       2
#define CLI_EX_UNAVAILABLE 69 /* EX_UNAVAILABLE: what celery inspect/control/status exit with */
#define CLI_EX_SOFTWARE    70
#define CLI_EX_TEMPFAIL    75

#define CLI_MAX_POS  256
#define CLI_MAX_DEST 64

#define CLI_PIDBOX_EXCHANGE "celery.pidbox"
#define CLI_REPLY_EXCHANGE  "reply.celery.pidbox"

struct cli_opts {
    const char *cmd;
    const char *broker;
    const char *backend;
    const char *ssl_ca, *ssl_cert, *ssl_key, *ssl_verify; /* the worker's broker_ssl_* */
    double timeout_s;
    int has_timeout;
    char *dest_buf;
    const char *dest[CLI_MAX_DEST];
    size_t n_dest;
    int is_json;
    int is_help;
    /* call */
    const char *args, *kwargs, *eta, *expires, *queue, *exchange, *routing_key;
    double countdown_s;
    int has_countdown;
    /* result */
    int is_traceback;
    const char *task; /* -t/--task: accepted as Celery does; the Redis key does not use it */
    /* purge */
    int is_force;
    const char *queues, *exclude_queues;
    /* events */
    int is_dump;
    double duration_s;
    char *pos[CLI_MAX_POS];
    int n_pos;
};

static volatile sig_atomic_t cli_stop;

static void cli_on_signal(int sig)
{
    (void)sig;
    cli_stop = 1;
}

int cc_cli_is_command(const char *cmd)
{
    static const char *const names[] = {"inspect", "control", "status", "call",
                                        "result",  "purge",   "events"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(cmd, names[i]) == 0)
            return 1;
    return 0;
}

static void cli_usage(FILE *out, const char *cmd)
{
    struct cc_strbuf list = {0};

    if (strcmp(cmd, "inspect") == 0 || strcmp(cmd, "control") == 0) {
        cc_ctlclient_list(&list, strcmp(cmd, "inspect") == 0 ? CC_CTLCLIENT_INSPECT
                                                             : CC_CTLCLIENT_CONTROL);
        fprintf(out,
                "Usage: celeryc %s [OPTIONS] COMMAND [ARGS]...\n\n"
                "%s\n\nCommands:\n%s\n",
                cmd,
                strcmp(cmd, "inspect") == 0 ? "Inspect the workers at runtime."
                                            : "Workers remote control.",
                list.p ? list.p : "");
    } else if (strcmp(cmd, "status") == 0) {
        fprintf(out,
                "Usage: celeryc status [OPTIONS]\n\nShow list of workers that are online.\n\n");
    } else if (strcmp(cmd, "call") == 0) {
        fprintf(out, "Usage: celeryc call [OPTIONS] NAME\n\nCall a task by name; prints its id.\n\n"
                     "  -a, --args JSON         Positional arguments (a JSON list).\n"
                     "  -k, --kwargs JSON       Keyword arguments (a JSON object).\n"
                     "  --eta ISO8601           Scheduled time.\n"
                     "  --countdown SECONDS     ETA in seconds from now.\n"
                     "  --expires ISO8601|SECS  Expiry time (or seconds from now).\n"
                     "  -Q, --queue NAME        Queue to send the task to (default celery).\n"
                     "  --exchange NAME         Exchange (default: the queue's).\n"
                     "  --routing-key KEY       Routing key (default: the queue name).\n\n");
    } else if (strcmp(cmd, "result") == 0) {
        fprintf(out,
                "Usage: celeryc result [OPTIONS] TASK_ID\n\nPrint the return value for a given "
                "task id (waits until it is ready).\n\n"
                "  -t, --task TEXT         Name of task (if custom backend).\n"
                "  --traceback             Show traceback instead.\n"
                "  -j, --json              Print the stored result meta (JSON).\n"
                "  --timeout SECONDS       Give up after this long (exit 75); default: wait.\n\n");
    } else if (strcmp(cmd, "purge") == 0) {
        fprintf(out, "Usage: celeryc purge [OPTIONS]\n\nErase all messages from all known task "
                     "queues.\n\nThere is no undo operation for this command.\n\n"
                     "  -f, --force             Don't prompt for verification.\n"
                     "  -Q, --queues Q1,Q2      Queues to purge (default: celery).\n"
                     "  -X, --exclude-queues Q  Queues not to purge.\n\n");
    } else if (strcmp(cmd, "events") == 0) {
        fprintf(out, "Usage: celeryc events [--dump] [OPTIONS]\n\nA live view of the fleet's "
                     "workers and latest tasks, redrawn every second; --dump prints every "
                     "event instead (celery events --dump).\n\n"
                     "  -d, --dump              Dump events to stdout.\n"
                     "  --duration SECONDS      Stop after this long (default: until SIGINT).\n\n");
    }
    fprintf(out, "Options:\n"
                 "  -b, --broker URL        Broker URL (env CELERY_BROKER_URL).\n"
                 "  --result-backend URL    Result backend (env CELERY_RESULT_BACKEND).\n"
                 "  --broker-ssl-ca FILE, --broker-ssl-cert FILE, --broker-ssl-key FILE,\n"
                 "  --broker-ssl-verify required|none\n"
                 "                          TLS for amqps://, as for the worker (env\n"
                 "                          CELERYC_BROKER_SSL_CA_CERTS, ..._CERTFILE,\n"
                 "                          ..._KEYFILE, ..._VERIFY).\n");
    if (strcmp(cmd, "inspect") == 0 || strcmp(cmd, "control") == 0 || strcmp(cmd, "status") == 0)
        fprintf(out, "  -t, --timeout SECONDS   Timeout in seconds waiting for reply (1.0).\n"
                     "  -d, --destination N1,N2 Comma separated list of destination node "
                     "names.\n"
                     "  -j, --json              Use json as output format.\n");
    fprintf(out, "  -h, --help              Show this message and exit.\n");
    cc_strbuf_deinit(&list);
}

static const char *cli_env(const char *a, const char *b, const char *dflt)
{
    const char *v = getenv(a);
    if (v && *v)
        return v;
    v = b ? getenv(b) : NULL;
    return v && *v ? v : dflt;
}

static int cli_usage_error(const char *cmd, const char *msg, const char *arg)
{
    fprintf(stderr, "celeryc %s: error: %s%s\nTry 'celeryc %s --help' for help.\n", cmd, msg,
            arg ? arg : "", cmd);
    return CLI_EX_USAGE;
}

/* [issue 14] now + `secs` seconds (>= 0, finite: cli_parse_double), clamped by
 * cc_isotime_span_us: "--countdown 1e300" is the far future, not an int64 overflow. */
static int64_t cli_after_us(int64_t now_us, double secs)
{
    int64_t us;

    (void)cc_isotime_span_us(secs, &us);
    return cc_isotime_add_us(now_us, us);
}

static int cli_parse_double(const char *s, double *out)
{
    char *end = NULL;
    errno = 0;
    *out = strtod(s, &end);
    return *s && *end == '\0' && errno == 0 && isfinite(*out) && *out >= 0 ? 0 : -1;
}

/* Parse argv (argv[0] = command). Returns 0 or an exit status. */
static int cli_parse(struct cli_opts *o, int argc, char **argv)
{
    static const struct {
        const char *long_flag;
        char short_flag;
        int has_value;
        int id;
    } flags[] = {
        {"--broker", 'b', 1, 1},
        {"--result-backend", 0, 1, 2},
        {"--timeout", 't', 1, 3},
        {"--destination", 'd', 1, 4},
        {"--json", 'j', 0, 5},
        {"--help", 'h', 0, 6},
        {"--args", 'a', 1, 7},
        {"--kwargs", 'k', 1, 8},
        {"--eta", 0, 1, 9},
        {"--countdown", 0, 1, 10},
        {"--expires", 0, 1, 11},
        {"--queue", 'Q', 1, 12},
        {"--exchange", 0, 1, 13},
        {"--routing-key", 0, 1, 14},
        {"--traceback", 0, 0, 15},
        {"--force", 'f', 0, 16},
        {"--queues", 0, 1, 17},
        {"--exclude-queues", 'X', 1, 18},
        {"--dump", 0, 0, 19},
        {"--duration", 0, 1, 20},
        {"--broker-ssl-ca", 0, 1, 21},
        {"--broker-ssl-cert", 0, 1, 22},
        {"--broker-ssl-key", 0, 1, 23},
        {"--broker-ssl-verify", 0, 1, 24},
        {"--task", 0, 1, 25},
    };
    const char *cmd = argv[0];
    int no_more_flags = 0;

    memset(o, 0, sizeof *o);
    o->cmd = cmd;
    o->broker =
        cli_env("CELERYC_BROKER_URL", "CELERY_BROKER_URL", "amqp://guest:guest@localhost:5672//");
    o->backend = cli_env("CELERYC_RESULT_BACKEND", "CELERY_RESULT_BACKEND", "none");
    o->ssl_ca = cli_env("CELERYC_BROKER_SSL_CA_CERTS", NULL, NULL);
    o->ssl_cert = cli_env("CELERYC_BROKER_SSL_CERTFILE", NULL, NULL);
    o->ssl_key = cli_env("CELERYC_BROKER_SSL_KEYFILE", NULL, NULL);
    o->ssl_verify = cli_env("CELERYC_BROKER_SSL_VERIFY", NULL, "required");
    o->timeout_s = 1.0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        int id = 0, has_value = 0;
        size_t n;

        if (no_more_flags || a[0] != '-' || a[1] == '\0') {
            if (o->n_pos >= CLI_MAX_POS)
                return cli_usage_error(cmd, "too many arguments", NULL);
            o->pos[o->n_pos++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            no_more_flags = 1;
            continue;
        }
        for (size_t f = 0; f < sizeof flags / sizeof flags[0] && !id; f++) {
            if (a[1] == '-') {
                n = strlen(flags[f].long_flag);
                if (strncmp(a, flags[f].long_flag, n) == 0 && (a[n] == '\0' || a[n] == '=')) {
                    id = flags[f].id;
                    has_value = flags[f].has_value;
                    if (a[n] == '=')
                        val = a + n + 1;
                }
            } else if (flags[f].short_flag && a[1] == flags[f].short_flag) {
                id = flags[f].id;
                has_value = flags[f].has_value;
                if (a[2] != '\0') {
                    if (!has_value)
                        id = 0;
                    else
                        val = a + 2;
                }
            }
        }
        /* `events -d` is --dump, as in `celery events -d`; -Q is --queues for purge. */
        if (id == 4 && strcmp(cmd, "events") == 0)
            id = 19, has_value = 0;
        if (id == 12 && strcmp(cmd, "purge") == 0)
            id = 17;
        /* `result -t` is --task, as in `celery result -t NAME`; its timeout is --timeout. */
        if (id == 3 && a[1] != '-' && strcmp(cmd, "result") == 0)
            id = 25;
        if (id == 0)
            return cli_usage_error(cmd, "no such option: ", a);
        if (has_value && val == NULL) {
            if (i + 1 >= argc)
                return cli_usage_error(cmd, "option requires an argument: ", a);
            val = argv[++i];
        } else if (!has_value && val != NULL) {
            return cli_usage_error(cmd, "option does not take a value: ", a);
        }
        switch (id) {
        case 1:
            o->broker = val;
            break;
        case 2:
            o->backend = val;
            break;
        case 3:
        case 20:
            if (cli_parse_double(val, id == 3 ? &o->timeout_s : &o->duration_s) != 0)
                return cli_usage_error(cmd, "not a number of seconds: ", val);
            if (id == 3)
                o->has_timeout = 1;
            break;
        case 4: {
            char *save = NULL, *tok;
            free(o->dest_buf);
            o->dest_buf = cc_xstrdup(val);
            o->n_dest = 0;
            for (tok = strtok_r(o->dest_buf, ",", &save); tok && o->n_dest < CLI_MAX_DEST;
                 tok = strtok_r(NULL, ",", &save)) {
                while (*tok == ' ')
                    tok++;
                if (*tok)
                    o->dest[o->n_dest++] = tok;
            }
            break;
        }
        case 5:
            o->is_json = 1;
            break;
        case 25:
            o->task = val;
            break;
        case 6:
            o->is_help = 1;
            break;
        case 7:
            o->args = val;
            break;
        case 8:
            o->kwargs = val;
            break;
        case 9:
            o->eta = val;
            break;
        case 10:
            if (cli_parse_double(val, &o->countdown_s) != 0)
                return cli_usage_error(cmd, "--countdown: not a number of seconds: ", val);
            o->has_countdown = 1;
            break;
        case 11:
            o->expires = val;
            break;
        case 12:
            o->queue = val;
            break;
        case 13:
            o->exchange = val;
            break;
        case 14:
            o->routing_key = val;
            break;
        case 15:
            o->is_traceback = 1;
            break;
        case 16:
            o->is_force = 1;
            break;
        case 17:
            o->queues = val;
            break;
        case 18:
            o->exclude_queues = val;
            break;
        case 19:
            o->is_dump = 1;
            break;
        case 21:
            o->ssl_ca = val;
            break;
        case 22:
            o->ssl_cert = val;
            break;
        case 23:
            o->ssl_key = val;
            break;
        case 24:
            o->ssl_verify = val;
            break;
        default:
            break;
        }
    }
    if (strcmp(o->ssl_verify, "required") != 0 && strcmp(o->ssl_verify, "none") != 0)
        return cli_usage_error(cmd,
                               "--broker-ssl-verify: expected required or none: ", o->ssl_verify);
    return 0;
}

/* ---- AMQP plumbing ---------------------------------------------------------------------- */

static int cli_connect(struct cc_broker *b, const struct cli_opts *o)
{
    struct cc_err err = {0};
    int rc;

    struct cc_broker_tls tls = {o->ssl_ca, o->ssl_cert, o->ssl_key,
                                strcmp(o->ssl_verify, "none") != 0};

    memset(b, 0, sizeof *b);
    rc = cc_broker_connect(b, o->broker, 0, 4.0, &tls, &err);
    if (rc != CC_OK) {
        fprintf(stderr, "Error: cannot connect to the broker: %s\n", err.msg);
        cc_broker_close(b);
        return CLI_EX_SOFTWARE;
    }
    return 0;
}

static int cli_rpc_ok(struct cc_broker *b, const char *what)
{
    int e = errno; /* the failed call's, before fprintf touches it */
    amqp_rpc_reply_t r = amqp_get_rpc_reply(b->conn);
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return 0;
    fprintf(stderr, "Error: %s failed", what);
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_t *c = r.reply.decoded;
        fprintf(stderr, ": %.*s", (int)c->reply_text.len, (const char *)c->reply_text.bytes);
        b->is_channel_open = false;
    } else if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
        char text[160];

        fprintf(stderr, ": %s", cc_broker_status_text(r.library_error, e, text, sizeof(text)));
    }
    fputc('\n', stderr);
    return -1;
}

/* queue.declare of a transient reply/event queue with integer arguments (NULL key = end). */
static int cli_declare_temp_queue(struct cc_broker *b, const char *name, const char *k1, int64_t v1,
                                  const char *k2, int64_t v2)
{
    amqp_table_entry_t e[2];
    amqp_table_t args = {0, e};

    if (k1) {
        e[args.num_entries].key = amqp_cstring_bytes(k1);
        e[args.num_entries].value.kind = AMQP_FIELD_KIND_I64;
        e[args.num_entries++].value.value.i64 = v1;
    }
    if (k2) {
        e[args.num_entries].key = amqp_cstring_bytes(k2);
        e[args.num_entries].value.kind = AMQP_FIELD_KIND_I64;
        e[args.num_entries++].value.value.i64 = v2;
    }
    amqp_queue_declare(b->conn, b->channel, amqp_cstring_bytes(name), 0, 0, 0, 1, args);
    return cli_rpc_ok(b, "queue.declare");
}

static int cli_consume_noack(struct cc_broker *b, const char *queue)
{
    amqp_basic_consume(b->conn, b->channel, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 1, 0,
                       amqp_empty_table);
    return cli_rpc_ok(b, "basic.consume");
}

/* Wait up to timeout_ms (< 0: forever) for a delivery. 1 got, 0 timed out, -1 error. */
static int cli_next(struct cc_broker *b, amqp_envelope_t *env, int timeout_ms)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    amqp_rpc_reply_t r;

    amqp_maybe_release_buffers(b->conn);
    r = amqp_consume_message(b->conn, env, timeout_ms < 0 ? NULL : &tv, 0);
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return 1;
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT)
        return 0;
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
        amqp_frame_t f;
        if (amqp_simple_wait_frame_noblock(b->conn, &f, &tv) == AMQP_STATUS_OK &&
            f.frame_type == AMQP_FRAME_METHOD &&
            (f.payload.method.id == AMQP_BASIC_ACK_METHOD ||
             f.payload.method.id == AMQP_BASIC_RETURN_METHOD))
            return 0;
    }
    return -1;
}

static json_t *cli_env_headers(const amqp_envelope_t *env)
{
    json_t *h = NULL;
    struct cc_err err = {0};
    if ((env->message.properties._flags & AMQP_BASIC_HEADERS_FLAG) == 0)
        return json_object();
    if (cc_amqptab_to_json(&env->message.properties.headers, &h, &err) != CC_OK)
        return json_object();
    return h;
}

static json_t *cli_env_body(const amqp_envelope_t *env)
{
    json_error_t jerr;
    return json_loadb(env->message.body.bytes, env->message.body.len, JSON_DECODE_ANY, &jerr);
}

static void cli_flush(struct cc_strbuf *s)
{
    if (s->p && s->len)
        fwrite(s->p, 1, s->len, stdout);
    fflush(stdout);
    s->len = 0;
}

/* Publish a JSON body with JSON headers: application/json, utf-8, given delivery mode. */
static int cli_publish_json(struct cc_broker *b, const char *exchange, const char *rk,
                            const json_t *body, const json_t *headers, int delivery_mode)
{
    amqp_basic_properties_t p;
    amqp_pool_t pool;
    struct cc_strbuf s = {0};
    struct cc_err err = {0};
    int rc;

    memset(&p, 0, sizeof p);
    init_amqp_pool(&pool, 4096);
    p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_CONTENT_ENCODING_FLAG |
               AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_PRIORITY_FLAG;
    p.content_type = amqp_cstring_bytes("application/json");
    p.content_encoding = amqp_cstring_bytes("utf-8");
    p.delivery_mode = (uint8_t)delivery_mode;
    p.priority = 0;
    if (headers && cc_amqptab_from_json(headers, &pool, &p.headers, &err) == CC_OK)
        p._flags |= AMQP_BASIC_HEADERS_FLAG;
    cc_strbuf_json(&s, body);
    rc = cc_broker_publish_props(b, exchange, rk, &p, (amqp_bytes_t){s.len, s.p}, &err);
    if (rc != CC_OK)
        fprintf(stderr, "Error: publish to %s failed: %s\n", exchange, err.msg);
    cc_strbuf_deinit(&s);
    empty_amqp_pool(&pool);
    return rc == CC_OK ? 0 : -1;
}

/* ---- inspect / control / status ------------------------------------------------------------ */

/* Broadcast `method` and collect replies into *replies (a list of {node: reply}), printing
 * each as it arrives unless o->is_json (show_body: print the reply too). Returns 0 or an
 * exit status. */
static int cli_broadcast(const struct cli_opts *o, const char *method, const json_t *arguments,
                         int show_body, json_t **replies)
{
    struct cc_broker b;
    char oid[37], ticket[37], qname[80];
    json_t *req, *headers;
    /* [issue 14] "--timeout 1e300" waits at most INT_MAX ms instead of overflowing an int */
    int rc,
        timeout_ms = o->timeout_s < INT_MAX / 1000.0 ? (int)(o->timeout_s * 1000.0 + 0.5) : INT_MAX;
    size_t limit = o->n_dest;
    struct cc_strbuf line = {0};
    struct cc_err err = {0};

    *replies = json_array();
    if ((rc = cli_connect(&b, o)) != 0)
        return rc;
    cc_uuid4(oid);
    cc_uuid4(ticket);
    snprintf(qname, sizeof qname, "%s.%s", oid, CLI_REPLY_EXCHANGE);
    if (cc_broker_declare_exchange(&b, CLI_PIDBOX_EXCHANGE, "fanout", false, &err) != CC_OK ||
        cc_broker_declare_exchange(&b, CLI_REPLY_EXCHANGE, "direct", false, &err) != CC_OK) {
        fprintf(stderr, "Error: %s\n", err.msg);
        cc_broker_close(&b);
        return CLI_EX_SOFTWARE;
    }
    if (cli_declare_temp_queue(&b, qname, "x-expires", 10000, NULL, 0) != 0 ||
        cc_broker_bind(&b, qname, CLI_REPLY_EXCHANGE, oid, &err) != CC_OK ||
        cli_consume_noack(&b, qname) != 0) {
        if (err.msg[0])
            fprintf(stderr, "Error: %s\n", err.msg);
        cc_broker_close(&b);
        return CLI_EX_SOFTWARE;
    }
    req = cc_ctlclient_request(method, arguments, o->dest, o->n_dest, ticket, CLI_REPLY_EXCHANGE,
                               oid);
    headers =
        json_pack("{s:i,s:f}", "clock", 1, "expires", (double)cc_now_us() / 1e6 + o->timeout_s);
    rc = cli_publish_json(&b, CLI_PIDBOX_EXCHANGE, "", req, headers, 2);
    json_decref(req);
    json_decref(headers);
    if (rc != 0) {
        cc_broker_close(&b);
        return CLI_EX_SOFTWARE;
    }
    for (;;) {
        amqp_envelope_t env;
        int got = cli_next(&b, &env, timeout_ms);
        json_t *h, *body;
        const char *t;
        double exp;

        if (got <= 0)
            break;
        h = cli_env_headers(&env);
        body = cli_env_body(&env);
        amqp_destroy_envelope(&env);
        t = json_string_value(json_object_get(h, "ticket"));
        exp = json_number_value(json_object_get(h, "expires"));
        if (body && json_is_object(body) && (t == NULL || strcmp(t, ticket) == 0) &&
            !(exp > 0 && (double)cc_now_us() / 1e6 > exp)) {
            if (!o->is_json && json_object_size(body) > 0) {
                const char *node = json_object_iter_key(json_object_iter(body));
                cc_ctlclient_say_reply(&line, node, json_object_get(body, node), show_body);
                cli_flush(&line);
            }
            json_array_append(*replies, body);
        }
        json_decref(h);
        json_decref(body);
        if (limit && json_array_size(*replies) >= limit)
            break;
    }
    cc_strbuf_deinit(&line);
    cc_broker_close(&b);
    return 0;
}

static int cli_no_reply(void)
{
    fprintf(stderr, "Error: No nodes replied within time constraint\n");
    return CLI_EX_UNAVAILABLE;
}

/* inspect's _prepare: merge the list of {node: reply} into one object. */
static json_t *cli_merge(const json_t *replies)
{
    json_t *m = json_object();
    size_t i;
    json_t *r;
    json_array_foreach(replies, i, r) json_object_update(m, r);
    return m;
}

static void cli_print_json(const json_t *v)
{
    struct cc_strbuf s = {0};
    cc_ctlclient_json_dump(&s, v, -1, 0);
    cc_strbuf_putc(&s, '\n');
    cli_flush(&s);
    cc_strbuf_deinit(&s);
}

static int cli_remote(const struct cli_opts *o)
{
    int is_status = strcmp(o->cmd, "status") == 0;
    enum cc_ctlclient_kind want =
        strcmp(o->cmd, "inspect") == 0 ? CC_CTLCLIENT_INSPECT : CC_CTLCLIENT_CONTROL;
    const char *method = is_status ? "ping" : (o->n_pos ? o->pos[0] : NULL);
    json_t *arguments = NULL, *replies = NULL;
    struct cc_err err = {0};
    struct cc_strbuf s = {0};
    int rc;

    if (!is_status) {
        if (method == NULL)
            return cli_usage_error(o->cmd, "missing argument 'ACTION'", NULL);
        if (cc_ctlclient_kind(method) != want) {
            fprintf(stderr,
                    "celeryc %s: error: invalid value for 'ACTION': '%s' is not a %s "
                    "command.\nTry 'celeryc %s --help' for the list.\n",
                    o->cmd, method, o->cmd, o->cmd);
            return CLI_EX_USAGE;
        }
        if (cc_ctlclient_arguments(method, o->n_pos - 1, (const char *const *)(o->pos + 1),
                                   &arguments, &err) != CC_OK)
            return cli_usage_error(o->cmd, err.msg, NULL);
    } else if (o->n_pos) {
        return cli_usage_error(o->cmd, "unexpected argument: ", o->pos[0]);
    }
    rc = cli_broadcast(o, method, arguments, !is_status, &replies);
    json_decref(arguments);
    if (rc == 0 && json_array_size(replies) == 0)
        rc = cli_no_reply();
    if (rc == 0) {
        if (o->is_json) {
            json_t *merged = want == CC_CTLCLIENT_INSPECT || is_status ? cli_merge(replies) : NULL;
            cli_print_json(merged ? merged : replies);
            json_decref(merged);
        }
        if ((!o->is_json && want == CC_CTLCLIENT_INSPECT) || is_status) {
            json_t *merged = cli_merge(replies);
            cc_ctlclient_say_online(&s, json_object_size(merged));
            cli_flush(&s);
            json_decref(merged);
        }
    }
    cc_strbuf_deinit(&s);
    json_decref(replies);
    return rc;
}

/* ---- call ------------------------------------------------------------------------------ */

static int cli_time_arg(const char *what, const char *s, int64_t now_us, int64_t *out_us)
{
    double secs;
    if (cli_parse_double(s, &secs) == 0) {
        *out_us = cli_after_us(now_us, secs);
        return 0;
    }
    if (cc_isotime_parse(s, out_us) == CC_OK)
        return 0;
    fprintf(stderr, "celeryc call: error: %s: not an ISO-8601 time or seconds: '%s'\n", what, s);
    return -1;
}

static int cli_call(const struct cli_opts *o)
{
    struct cc_msg m;
    struct cc_msg_out out;
    struct cc_broker b;
    struct cc_err err = {0};
    json_error_t jerr;
    char id[37], origin[300], host[256], eta_buf[40], exp_buf[40];
    int64_t now = cc_now_us();
    const char *queue = o->queue ? o->queue : "celery";
    const char *exchange = o->exchange ? o->exchange : queue;
    const char *rk = o->routing_key ? o->routing_key : queue;
    int rc;

    if (o->n_pos != 1)
        return cli_usage_error("call", o->n_pos ? "too many arguments" : "missing argument 'NAME'",
                               NULL);
    memset(&m, 0, sizeof m);
    m.protocol = 2;
    m.group_index = -1;
    m.args = json_loads(o->args ? o->args : "[]", JSON_DECODE_ANY, &jerr);
    m.kwargs = json_loads(o->kwargs ? o->kwargs : "{}", JSON_DECODE_ANY, &jerr);
    if (!json_is_array(m.args) || !json_is_object(m.kwargs)) {
        json_decref(m.args);
        json_decref(m.kwargs);
        return cli_usage_error("call",
                               !json_is_array(m.args) ? "--args must be a JSON list"
                                                      : "--kwargs must be a JSON object",
                               NULL);
    }
    if (o->eta || o->has_countdown) {
        if (o->eta && cli_time_arg("--eta", o->eta, now, &m.eta_us) != 0)
            goto usage;
        if (!o->eta)
            m.eta_us = cli_after_us(now, o->countdown_s);
        m.eta = cc_isotime_format(m.eta_us, 1, eta_buf, sizeof eta_buf);
    }
    if (o->expires) {
        if (cli_time_arg("--expires", o->expires, now, &m.expires_us) != 0)
            goto usage;
        m.expires = cc_isotime_format(m.expires_us, 1, exp_buf, sizeof exp_buf);
    }
    cc_uuid4(id);
    if (gethostname(host, sizeof host) != 0)
        strcpy(host, "localhost");
    host[sizeof host - 1] = '\0';
    snprintf(origin, sizeof origin, "gen%ld@%s", (long)getpid(), host);
    m.id = id;
    m.task = o->pos[0];
    m.origin = origin;
    m.delivery_mode = 2;
    rc = cc_message_encode(&m, now, &out, &err);
    json_decref(m.args);
    json_decref(m.kwargs);
    if (rc != CC_OK) {
        fprintf(stderr, "Error: %s\n", err.msg);
        return CLI_EX_SOFTWARE;
    }
    if ((rc = cli_connect(&b, o)) != 0) {
        cc_message_out_deinit(&out);
        return rc;
    }
    /* As Celery's producer: declare the queue's exchange, the queue and the binding (the
     * default queue "celery" uses exchange "celery", routing key "celery"). */
    if (o->exchange == NULL && o->routing_key == NULL &&
        (cc_broker_declare_exchange(&b, exchange, "direct", true, &err) != CC_OK ||
         cc_broker_declare_queue(&b, queue, 0, &err) != CC_OK ||
         cc_broker_bind(&b, queue, exchange, rk, &err) != CC_OK))
        rc = CLI_EX_SOFTWARE;
    else if (cc_broker_publish(&b, exchange, rk, &out, &err) != CC_OK ||
             cc_broker_sync(&b, &err) != CC_OK)
        rc = CLI_EX_SOFTWARE;
    if (rc != 0)
        fprintf(stderr, "Error: %s\n", err.msg);
    else
        printf("%s\n", id);
    cc_message_out_deinit(&out);
    cc_broker_close(&b);
    return rc;
usage:
    json_decref(m.args);
    json_decref(m.kwargs);
    return CLI_EX_USAGE;
}

/* ---- result ---------------------------------------------------------------------------- */

/* `celery result` (celery/bin/result.py): AsyncResult(id).get() or .traceback, echoed.
 * get() waits through PENDING, STARTED and RETRY (without -A, celery's CLI polls the
 * backend; so do we, every 100 ms, up to --timeout); --traceback does not wait. Text output
 * and exit status are cc_ctlclient_result_say's. --json prints the stored meta as stored (PENDING:
 * the meta Celery's backend returns for a missing key), exit 1 for FAILURE/REVOKED unless
 * --traceback, as the text form. */
static int cli_result(const struct cli_opts *o)
{
    static const char pending[] = "{\"status\": \"PENDING\", \"result\": null}";
    struct cc_redis *r = NULL;
    struct cc_err err = {0};
    char *key = NULL;
    int64_t deadline = o->has_timeout ? cli_after_us(cc_mono_us(), o->timeout_s) : 0;
    int rc = 0;

    if (o->n_pos != 1)
        return cli_usage_error(
            "result", o->n_pos ? "too many arguments" : "missing argument 'TASK_ID'", NULL);
    if (strncmp(o->backend, "redis", 5) != 0 && strncmp(o->backend, "unix", 4) != 0) {
        fprintf(stderr, "Error: no result backend configured (--result-backend or "
                        "CELERY_RESULT_BACKEND: a redis:// URL)\n");
        return CLI_EX_USAGE;
    }
    if (cc_redis_open(o->backend, 5000, &r, &err) != CC_OK) {
        fprintf(stderr, "Error: %s\n", err.msg);
        return CLI_EX_USAGE;
    }
    key = cc_backend_redis_key_dup(o->pos[0], NULL); /* sized from the id: no fixed buffer */
    signal(SIGINT, cli_on_signal);
    signal(SIGTERM, cli_on_signal);
    for (;;) {
        const char *argv[2] = {"GET", key};
        redisReply *rep = cc_redis_cmd(r, 2, argv, NULL, &err);
        json_t *meta = NULL;

        if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "Error: result backend: %s\n", rep ? rep->str : err.msg);
            if (rep)
                freeReplyObject(rep);
            rc = CLI_EX_SOFTWARE;
            break;
        }
        if (rep->type == REDIS_REPLY_STRING)
            meta = json_loadb(rep->str, rep->len, JSON_DECODE_ANY, NULL);
        if (o->is_traceback || cc_ctlclient_result_is_ready(meta)) {
            struct cc_strbuf out = {0}, errout = {0};

            rc = cc_ctlclient_result_say(&out, &errout, meta, o->is_traceback);
            if (o->is_json) {
                cc_strbuf_deinit(&out);
                if (rep->type == REDIS_REPLY_STRING)
                    cc_strbuf_putn(&out, rep->str, rep->len);
                else
                    cc_strbuf_puts(&out, pending);
                cc_strbuf_putc(&out, '\n');
            } else if (errout.len > 0) {
                fflush(stdout);
                fwrite(errout.p, 1, errout.len, stderr);
            }
            cli_flush(&out);
            cc_strbuf_deinit(&out);
            cc_strbuf_deinit(&errout);
            freeReplyObject(rep);
            json_decref(meta);
            break;
        }
        freeReplyObject(rep);
        json_decref(meta);
        if (cli_stop) {
            rc = 130;
            break;
        }
        if (deadline && cc_mono_us() >= deadline) {
            fprintf(stderr, "Error: The operation timed out.\n");
            rc = CLI_EX_TEMPFAIL;
            break;
        }
        usleep(100000);
    }
    cc_redis_free(r);
    free(key);
    return rc;
}

/* ---- purge ----------------------------------------------------------------------------- */

static int cli_in_list(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0)
            return 1;
        p = e ? e + 1 : NULL;
    }
    return 0;
}

static int cli_name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cli_purge(const struct cli_opts *o)
{
    char *buf = cc_xstrdup(o->queues ? o->queues : "celery");
    char *names[CLI_MAX_POS];
    size_t n = 0;
    char *save = NULL;
    unsigned long long total = 0;
    struct cc_broker b;
    amqp_channel_t ch = 1;
    int rc;

    for (char *t = strtok_r(buf, ",", &save); t && n < CLI_MAX_POS;
         t = strtok_r(NULL, ",", &save)) {
        int dup = 0;
        for (size_t i = 0; i < n; i++)
            dup |= strcmp(names[i], t) == 0;
        if (*t && !dup && !cli_in_list(o->exclude_queues, t))
            names[n++] = t;
    }
    qsort(names, n, sizeof names[0], cli_name_cmp);
    if (n == 0) {
        free(buf);
        return 0;
    }
    if (!o->is_force) {
        char answer[32] = "";
        fprintf(stdout,
                "WARNING:This will remove all tasks from %s: ", n == 1 ? "queue" : "queues");
        for (size_t i = 0; i < n; i++)
            fprintf(stdout, "%s%s", i ? ", " : "", names[i]);
        fprintf(stdout, ".\n         There is no undo for this operation!\n\n"
                        "(to skip this prompt use the -f option)\n"
                        "Are you sure you want to delete all tasks? [y/N]: ");
        fflush(stdout);
        answer[0] = '\0';
        if (fgets(answer, sizeof answer, stdin) == NULL || (answer[0] != 'y' && answer[0] != 'Y')) {
            fprintf(stderr, "%sAborted!\n", answer[0] ? "" : "\n");
            free(buf);
            return CLI_EX_FAIL;
        }
    }
    if ((rc = cli_connect(&b, o)) != 0) {
        free(buf);
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        amqp_queue_purge_ok_t *ok;
        if (ch != 1) {
            amqp_channel_open(b.conn, ch);
            if (cli_rpc_ok(&b, "channel.open") != 0)
                break;
        }
        ok = amqp_queue_purge(b.conn, ch, amqp_cstring_bytes(names[i]));
        if (ok)
            total += ok->message_count;
        else {
            /* A missing queue counts 0, as in Celery; the server closed the channel. */
            amqp_channel_close_ok_t close_ok = {0};
            (void)amqp_send_method(b.conn, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &close_ok);
            ch++;
        }
        amqp_maybe_release_buffers(b.conn);
    }
    if (ch != 1) {
        /* cc_broker_close closes channel 1 only when it is still open; ours were closed by
         * the server. Only the connection close remains. */
        b.is_channel_open = false;
    }
    cc_broker_close(&b);
    if (total)
        printf("Purged %llu %s from %zu known task %s.\n", total,
               total == 1 ? "message" : "messages", n, n == 1 ? "queue" : "queues");
    else
        printf("No messages purged from %zu %s.\n", n, n == 1 ? "queue" : "queues");
    free(buf);
    return 0;
}

/* ---- events: the live view ------------------------------------------------------------ */

/* `celeryc events` without --dump: the fleet's workers (from worker-* events) and the most
 * recent tasks (from task-* events), redrawn once a second, as `celery events`' curses
 * view shows them (plain ANSI: clear + home when stdout is a terminal, else one frame after
 * another). */
#define LIVE_WORKERS       64
#define LIVE_TASKS         20
#define LIVE_HEARTBEAT_TTL 10.0 /* seconds without a heartbeat before a worker shows OFFLINE */

struct live_worker {
    char host[128];
    double last; /* timestamp of its latest event (its clock, as State uses) */
    bool is_offline;
    long long active, processed;
};

struct live_task {
    char id[40];
    char name[96];
    char state[10];
    char host[128];
    double runtime; /* < 0: not known yet */
};

struct live {
    struct live_worker w[LIVE_WORKERS];
    size_t nw;
    struct live_task t[LIVE_TASKS]; /* t[0] is the most recently seen task */
    size_t nt;
    unsigned long long n_events;
};

static const char *live_str(const json_t *ev, const char *key)
{
    const char *v = json_string_value(json_object_get(ev, key));

    return v != NULL ? v : "";
}

static void live_worker_event(struct live *lv, const json_t *ev, const char *type)
{
    const char *host = live_str(ev, "hostname");
    struct live_worker *w = NULL;

    for (size_t i = 0; i < lv->nw && w == NULL; i++)
        if (strcmp(lv->w[i].host, host) == 0)
            w = &lv->w[i];
    if (w == NULL) {
        if (lv->nw == LIVE_WORKERS)
            return;
        w = &lv->w[lv->nw++];
        memset(w, 0, sizeof(*w));
        snprintf(w->host, sizeof(w->host), "%s", host);
    }
    w->last = json_number_value(json_object_get(ev, "timestamp"));
    w->is_offline = strcmp(type, "worker-offline") == 0;
    if (json_is_integer(json_object_get(ev, "active")))
        w->active = json_integer_value(json_object_get(ev, "active"));
    if (json_is_integer(json_object_get(ev, "processed")))
        w->processed = json_integer_value(json_object_get(ev, "processed"));
}

static void live_task_event(struct live *lv, const json_t *ev, const char *type)
{
    static const char *const states[][2] = {
        {"task-received", "RECEIVED"}, {"task-started", "STARTED"}, {"task-succeeded", "SUCCESS"},
        {"task-failed", "FAILURE"},    {"task-retried", "RETRY"},   {"task-revoked", "REVOKED"},
        {"task-rejected", "REJECTED"},
    };
    const char *id = live_str(ev, "uuid");
    struct live_task t;
    size_t i = 0;

    while (i < lv->nt && strcmp(lv->t[i].id, id) != 0)
        i++;
    if (i < lv->nt)
        t = lv->t[i];
    else {
        memset(&t, 0, sizeof(t));
        snprintf(t.id, sizeof(t.id), "%s", id);
        t.runtime = -1;
        if (lv->nt < LIVE_TASKS)
            lv->nt++;
        i = lv->nt - 1; /* the oldest falls off the end */
    }
    memmove(&lv->t[1], &lv->t[0], i * sizeof(t)); /* move it to the front */
    if (live_str(ev, "name")[0] != '\0')
        snprintf(t.name, sizeof(t.name), "%s", live_str(ev, "name"));
    if (live_str(ev, "hostname")[0] != '\0')
        snprintf(t.host, sizeof(t.host), "%s", live_str(ev, "hostname"));
    for (size_t k = 0; k < CC_ARRAY_LEN(states); k++)
        if (strcmp(type, states[k][0]) == 0)
            snprintf(t.state, sizeof(t.state), "%s", states[k][1]);
    if (json_is_number(json_object_get(ev, "runtime")))
        t.runtime = json_number_value(json_object_get(ev, "runtime"));
    lv->t[0] = t;
}

static void live_event(struct live *lv, const json_t *ev)
{
    const char *type = live_str(ev, "type");

    lv->n_events++;
    if (strncmp(type, "worker-", 7) == 0)
        live_worker_event(lv, ev, type);
    else if (strncmp(type, "task-", 5) == 0 && live_str(ev, "uuid")[0] != '\0')
        live_task_event(lv, ev, type);
}

static void live_draw(const struct live *lv, bool is_tty)
{
    double now = (double)cc_now_us() / 1e6;

    if (is_tty)
        fputs("\033[H\033[2J", stdout);
    printf("celeryc events: %zu worker(s), %llu event(s)%s\n\n", lv->nw, lv->n_events,
           is_tty ? "  (Ctrl+C to quit)" : "");
    printf("Workers\n");
    for (size_t i = 0; i < lv->nw; i++) {
        const struct live_worker *w = &lv->w[i];
        bool is_online = !w->is_offline && now - w->last < LIVE_HEARTBEAT_TTL;

        printf("  %-40s %-7s active %-4lld processed %-8lld last event %.1fs ago\n", w->host,
               is_online ? "ONLINE" : "OFFLINE", w->active, w->processed, now - w->last);
    }
    printf("\nTasks (most recent first)\n  %-36s %-32s %-8s %-9s %s\n", "UUID", "TASK", "STATE",
           "RUNTIME", "WORKER");
    for (size_t i = 0; i < lv->nt; i++) {
        const struct live_task *t = &lv->t[i];
        char rt[24] = "-";

        if (t->runtime >= 0)
            snprintf(rt, sizeof(rt), "%.4fs", t->runtime);
        printf("  %-36s %-32s %-8s %-9s %s\n", t->id, t->name[0] ? t->name : "?", t->state, rt,
               t->host);
    }
    if (!is_tty)
        printf("\n");
    fflush(stdout);
}

/* ---- events --dump --------------------------------------------------------------------- */

#define CLI_LABELS 4096

static int cli_events(const struct cli_opts *o)
{
    struct cc_broker b;
    struct cc_err err = {0};
    char qname[64], uuid[37];
    char *label_id[CLI_LABELS] = {0}, *label_txt[CLI_LABELS] = {0};
    size_t next_label = 0;
    int64_t deadline = o->duration_s > 0 ? cli_after_us(cc_mono_us(), o->duration_s) : 0;
    struct cc_strbuf s = {0};
    int rc;

    struct live *lv = NULL;
    bool is_tty = isatty(STDOUT_FILENO) != 0;
    int64_t next_draw_us = 0;

    signal(SIGINT, cli_on_signal);
    signal(SIGTERM, cli_on_signal);
    if (o->is_dump) {
        printf("-> evdump: starting capture...\n");
        fflush(stdout);
    } else {
        lv = cc_xcalloc(1, sizeof(*lv));
    }
    if ((rc = cli_connect(&b, o)) != 0)
        return rc;
    cc_uuid4(uuid);
    snprintf(qname, sizeof qname, "celeryev.%s", uuid);
    if (cc_broker_declare_exchange(&b, "celeryev", "topic", true, &err) != CC_OK ||
        cli_declare_temp_queue(&b, qname, "x-message-ttl", 5000, "x-expires", 60000) != 0 ||
        cc_broker_bind(&b, qname, "celeryev", "#", &err) != CC_OK ||
        cli_consume_noack(&b, qname) != 0) {
        if (err.msg[0])
            fprintf(stderr, "Error: %s\n", err.msg);
        cc_broker_close(&b);
        return CLI_EX_SOFTWARE;
    }
    while (!cli_stop) {
        amqp_envelope_t env;
        int wait_ms = 200, got;
        json_t *body;

        if (deadline) {
            int64_t left = deadline - cc_mono_us();
            if (left <= 0)
                break;
            if (left / 1000 < wait_ms)
                wait_ms = (int)(left / 1000) + 1;
        }
        if (lv != NULL && cc_mono_us() >= next_draw_us) {
            live_draw(lv, is_tty);
            next_draw_us = cc_mono_us() + 1000000;
        }
        got = cli_next(&b, &env, wait_ms);
        if (got < 0) {
            if (cli_stop)
                break;
            fprintf(stderr, "-> Connection lost\n");
            rc = CLI_EX_SOFTWARE;
            break;
        }
        if (got == 0)
            continue;
        body = cli_env_body(&env);
        amqp_destroy_envelope(&env);
        for (size_t i = 0; body && i < (json_is_array(body) ? json_array_size(body) : 1); i++) {
            json_t *ev = json_is_array(body) ? json_array_get(body, i) : body;
            const char *id = json_string_value(json_object_get(ev, "uuid"));
            const char *label = "";
            char *fresh = NULL;
            if (!json_is_object(ev))
                continue;
            if (lv != NULL) {
                live_event(lv, ev);
                continue;
            }
            /* As EventReceiver.event_from_message: the time it was received here. */
            if (json_object_get(ev, "local_received") == NULL)
                json_object_set_new(ev, "local_received", json_real((double)cc_now_us() / 1e6));
            for (size_t k = 0; id && k < CLI_LABELS; k++)
                if (label_id[k] && strcmp(label_id[k], id) == 0)
                    label = label_txt[k];
            cc_ctlclient_event_line(&s, ev, label, &fresh);
            cc_strbuf_putc(&s, '\n');
            cli_flush(&s);
            if (fresh && id) {
                free(label_id[next_label]);
                free(label_txt[next_label]);
                label_id[next_label] = cc_xstrdup(id);
                label_txt[next_label] = fresh;
                next_label = (next_label + 1) % CLI_LABELS;
            } else {
                free(fresh);
            }
        }
        json_decref(body);
    }
    if (lv != NULL) {
        live_draw(lv, is_tty); /* the final state */
        free(lv);
    }
    for (size_t k = 0; k < CLI_LABELS; k++) {
        free(label_id[k]);
        free(label_txt[k]);
    }
    cc_strbuf_deinit(&s);
    cc_broker_close(&b);
    return rc;
}

int cc_cli_main(int argc, char **argv)
{
    struct cli_opts o;
    int rc = cli_parse(&o, argc, argv);

    if (rc != 0) {
        free(o.dest_buf);
        return rc;
    }
    if (o.is_help) {
        cli_usage(stdout, o.cmd);
        rc = 0;
    } else if (strcmp(o.cmd, "inspect") == 0 || strcmp(o.cmd, "control") == 0 ||
               strcmp(o.cmd, "status") == 0) {
        rc = cli_remote(&o);
    } else if (strcmp(o.cmd, "call") == 0) {
        rc = cli_call(&o);
    } else if (strcmp(o.cmd, "result") == 0) {
        rc = cli_result(&o);
    } else if (strcmp(o.cmd, "purge") == 0) {
        rc = cli_purge(&o);
    } else if (strcmp(o.cmd, "events") == 0) {
        rc = cli_events(&o);
    } else {
        rc = CLI_EX_USAGE;
    }
    free(o.dest_buf);
    return rc;
}
