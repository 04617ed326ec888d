/* Pidbox client encoding and `celery` CLI text formatting (see ctlclient.h).
 *
 * The command table mirrors Panel.meta of Celery 5.2.6 (visible commands only): name, kind,
 * positional arguments with their Python types, and the name of the variadic argument.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "ctlclient.h"

enum ctlc_type { T_STR, T_INT, T_FLOAT, T_BOOL };

struct ctlc_arg {
    const char *name;
    enum ctlc_type type;
};

struct ctlc_cmd {
    const char *name;
    enum cc_ctlclient_kind kind;
    struct ctlc_arg args[4]; /* NULL-name terminated */
    const char *variadic;    /* NULL = none */
};

#define I CC_CTLCLIENT_INSPECT
#define C CC_CTLCLIENT_CONTROL
static const struct ctlc_cmd ctlc_cmds[] = {
    {"active", I, {{NULL, T_STR}}, NULL},
    {"active_queues", I, {{NULL, T_STR}}, NULL},
    {"add_consumer",
     C,
     {{"queue", T_STR}, {"exchange", T_STR}, {"exchange_type", T_STR}, {"routing_key", T_STR}},
     NULL},
    {"autoscale", C, {{"max", T_INT}, {"min", T_INT}, {NULL, T_STR}}, NULL},
    {"cancel_consumer", C, {{"queue", T_STR}, {NULL, T_STR}}, NULL},
    {"clock", I, {{NULL, T_STR}}, NULL},
    {"conf", I, {{"with_defaults", T_BOOL}, {NULL, T_STR}}, NULL},
    {"disable_events", C, {{NULL, T_STR}}, NULL},
    {"election", C, {{NULL, T_STR}}, NULL},
    {"enable_events", C, {{NULL, T_STR}}, NULL},
    {"heartbeat", C, {{NULL, T_STR}}, NULL},
    {"memdump", I, {{"samples", T_INT}, {NULL, T_STR}}, NULL},
    {"memsample", I, {{NULL, T_STR}}, NULL},
    {"objgraph", I, {{"type", T_STR}, {"num", T_INT}, {"max_depth", T_INT}, {NULL, T_STR}}, NULL},
    {"ping", I, {{NULL, T_STR}}, NULL},
    {"pool_grow", C, {{"n", T_INT}, {NULL, T_STR}}, NULL},
    {"pool_restart", C, {{NULL, T_STR}}, NULL},
    {"pool_shrink", C, {{"n", T_INT}, {NULL, T_STR}}, NULL},
    {"query_task", I, {{NULL, T_STR}}, "ids"},
    {"rate_limit", C, {{"task_name", T_STR}, {"rate_limit", T_STR}, {NULL, T_STR}}, NULL},
    {"registered", I, {{NULL, T_STR}}, "taskinfoitems"},
    {"report", I, {{NULL, T_STR}}, NULL},
    {"reserved", I, {{NULL, T_STR}}, NULL},
    {"revoke", C, {{NULL, T_STR}}, "task_id"},
    {"revoked", I, {{NULL, T_STR}}, NULL},
    {"scheduled", I, {{NULL, T_STR}}, NULL},
    {"shutdown", C, {{NULL, T_STR}}, NULL},
    {"stats", I, {{NULL, T_STR}}, NULL},
    {"terminate", C, {{"signal", T_STR}, {NULL, T_STR}}, "task_id"},
    {"time_limit",
     C,
     {{"task_name", T_STR}, {"soft", T_FLOAT}, {"hard", T_FLOAT}, {NULL, T_STR}},
     NULL},
};
#undef I
#undef C

static const struct ctlc_cmd *ctlc_find(const char *method)
{
    for (size_t i = 0; i < sizeof ctlc_cmds / sizeof ctlc_cmds[0]; i++)
        if (strcmp(ctlc_cmds[i].name, method) == 0)
            return &ctlc_cmds[i];
    return NULL;
}

enum cc_ctlclient_kind cc_ctlclient_kind(const char *method)
{
    const struct ctlc_cmd *c = method ? ctlc_find(method) : NULL;
    return c ? c->kind : CC_CTLCLIENT_UNKNOWN;
}

void cc_ctlclient_list(struct cc_strbuf *out, enum cc_ctlclient_kind kind)
{
    for (size_t i = 0; i < sizeof ctlc_cmds / sizeof ctlc_cmds[0]; i++) {
        const struct ctlc_cmd *c = &ctlc_cmds[i];
        if (c->kind != kind)
            continue;
        cc_strbuf_puts(out, "  ");
        cc_strbuf_puts(out, c->name);
        for (size_t a = 0; a < 4 && c->args[a].name; a++) {
            cc_strbuf_puts(out, " [");
            cc_strbuf_puts(out, c->args[a].name);
            cc_strbuf_puts(out, "]");
        }
        if (c->variadic) {
            cc_strbuf_puts(out, " [");
            cc_strbuf_puts(out, c->variadic);
            cc_strbuf_puts(out, " ...]");
        }
        cc_strbuf_putc(out, '\n');
    }
}

/* Python strtobool. */
static int ctlc_strtobool(const char *s, int *out)
{
    static const char *const yes[] = {"y", "yes", "t", "true", "on", "1"};
    static const char *const no[] = {"n", "no", "f", "false", "off", "0"};
    for (size_t i = 0; i < 6; i++) {
        if (strcasecmp(s, yes[i]) == 0)
            return *out = 1, 0;
        if (strcasecmp(s, no[i]) == 0)
            return *out = 0, 0;
    }
    return -1;
}

static json_t *ctlc_convert(enum ctlc_type t, const char *s)
{
    char *end = NULL;
    errno = 0;
    switch (t) {
    case T_STR:
        return json_string(s);
    case T_INT: {
        long long v = strtoll(s, &end, 10);
        if (*s == '\0' || *end != '\0' || errno)
            return NULL;
        return json_integer(v);
    }
    case T_FLOAT: {
        double v = strtod(s, &end);
        if (*s == '\0' || *end != '\0' || errno || !isfinite(v))
            return NULL;
        return json_real(v);
    }
    case T_BOOL: {
        int v;
        if (ctlc_strtobool(s, &v) != 0)
            return NULL;
        return json_boolean(v);
    }
    }
    return NULL;
}

int cc_ctlclient_arguments(const char *method, int argc, const char *const *argv, json_t **out,
                           struct cc_err *err)
{
    const struct ctlc_cmd *c = ctlc_find(method);
    json_t *o;
    int i = 0;

    *out = NULL;
    if (c == NULL) {
        cc_err_set(err, CC_EUSAGE, "no such command '%s'", method);
        return CC_EUSAGE;
    }
    o = json_object();
    if (o == NULL)
        return CC_ENOMEM;
    for (; i < argc && i < 4 && c->args[i].name; i++) {
        json_t *v = ctlc_convert(c->args[i].type, argv[i]);
        if (v == NULL) {
            cc_err_set(err, CC_EUSAGE, "argument %s: invalid value '%s'", c->args[i].name, argv[i]);
            json_decref(o);
            return CC_EUSAGE;
        }
        json_object_set_new(o, c->args[i].name, v);
    }
    if (i < argc && c->variadic == NULL) {
        cc_err_set(err, CC_EUSAGE, "Command '%s' takes no more arguments (got '%s')", method,
                   argv[i]);
        json_decref(o);
        return CC_EUSAGE;
    }
    if (c->variadic) {
        json_t *l = json_array();
        for (; i < argc; i++)
            json_array_append_new(l, json_string(argv[i]));
        json_object_set_new(o, c->variadic, l);
    }
    *out = o;
    return CC_OK;
}

json_t *cc_ctlclient_request(const char *method, const json_t *arguments, const char *const *dest,
                             size_t n_dest, const char *ticket, const char *reply_exchange,
                             const char *reply_routing_key)
{
    json_t *o = json_object();
    json_t *d = json_null();

    if (o == NULL)
        return NULL;
    if (dest && n_dest) {
        d = json_array();
        for (size_t i = 0; i < n_dest; i++)
            json_array_append_new(d, json_string(dest[i]));
    }
    json_object_set_new(o, "method", json_string(method));
    json_object_set_new(o, "arguments", arguments ? json_deep_copy(arguments) : json_object());
    json_object_set_new(o, "destination", d);
    json_object_set_new(o, "pattern", json_null());
    json_object_set_new(o, "matcher", json_null());
    if (ticket) {
        json_t *r = json_object();
        json_object_set_new(o, "ticket", json_string(ticket));
        json_object_set_new(r, "exchange", json_string(reply_exchange));
        json_object_set_new(r, "routing_key", json_string(reply_routing_key));
        json_object_set_new(o, "reply_to", r);
    }
    return o;
}

static void ctlc_nl_indent(struct cc_strbuf *out, int indent, int level)
{
    cc_strbuf_putc(out, '\n');
    for (int i = 0; i < indent * level; i++)
        cc_strbuf_putc(out, ' ');
}

static int ctlc_key_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void ctlc_dump(struct cc_strbuf *out, const json_t *v, int indent, int sort, int level)
{
    const char *item_sep = indent < 0 ? ", " : ",";

    if (json_is_array(v)) {
        size_t n = json_array_size(v);
        if (n == 0) {
            cc_strbuf_puts(out, "[]");
            return;
        }
        cc_strbuf_putc(out, '[');
        for (size_t i = 0; i < n; i++) {
            if (i)
                cc_strbuf_puts(out, item_sep);
            if (indent >= 0)
                ctlc_nl_indent(out, indent, level + 1);
            ctlc_dump(out, json_array_get(v, i), indent, sort, level + 1);
        }
        if (indent >= 0)
            ctlc_nl_indent(out, indent, level);
        cc_strbuf_putc(out, ']');
    } else if (json_is_object(v)) {
        size_t n = json_object_size(v), k = 0;
        const char **keys;
        const char *key;
        json_t *val;
        if (n == 0) {
            cc_strbuf_puts(out, "{}");
            return;
        }
        keys = malloc(n * sizeof *keys);
        if (keys == NULL) {
            out->oom = true;
            return;
        }
        json_object_foreach((json_t *)v, key, val) keys[k++] = key;
        if (sort)
            qsort(keys, n, sizeof *keys, ctlc_key_cmp);
        cc_strbuf_putc(out, '{');
        for (size_t i = 0; i < n; i++) {
            if (i)
                cc_strbuf_puts(out, item_sep);
            if (indent >= 0)
                ctlc_nl_indent(out, indent, level + 1);
            cc_strbuf_json_str(out, keys[i], strlen(keys[i]));
            cc_strbuf_puts(out, ": ");
            ctlc_dump(out, json_object_get(v, keys[i]), indent, sort, level + 1);
        }
        free(keys);
        if (indent >= 0)
            ctlc_nl_indent(out, indent, level);
        cc_strbuf_putc(out, '}');
    } else {
        cc_strbuf_json(out, v);
    }
}

void cc_ctlclient_json_dump(struct cc_strbuf *out, const json_t *v, int indent, int sort_keys)
{
    ctlc_dump(out, v, indent, sort_keys, 0);
}

void cc_ctlclient_pystr(struct cc_strbuf *out, const json_t *v)
{
    if (json_is_string(v))
        cc_strbuf_putn(out, json_string_value(v), json_string_length(v));
    else
        cc_pyrepr_put(out, v, 0);
}

/* text.indent(s, n): every line (split on '\n') prefixed with n spaces. */
static void ctlc_indent(struct cc_strbuf *out, const char *s, size_t len, int n)
{
    size_t i = 0;
    for (;;) {
        for (int k = 0; k < n; k++)
            cc_strbuf_putc(out, ' ');
        while (i < len && s[i] != '\n')
            cc_strbuf_putc(out, s[i++]);
        if (i >= len)
            break;
        cc_strbuf_putc(out, s[i++]);
    }
}

/* celery/bin/base.py CLIContext.pretty(): returns 1 for OK, 0 for ERROR; the text in out. */
static int ctlc_pretty(struct cc_strbuf *out, const json_t *n)
{
    if (json_is_array(n)) {
        if (json_array_size(n) == 0) {
            cc_strbuf_puts(out, "- empty -");
            return 1;
        }
        for (size_t i = 0; i < json_array_size(n); i++) {
            if (i)
                cc_strbuf_putc(out, '\n');
            cc_strbuf_puts(out, "* ");
            cc_ctlclient_pystr(out, json_array_get(n, i));
        }
        return 1;
    }
    if (json_is_object(n)) {
        const json_t *ok = json_object_get(n, "ok");
        const json_t *e = json_object_get(n, "error");
        if (ok || e) {
            struct cc_strbuf inner = {0};
            int is_ok = ok != NULL;
            (void)ctlc_pretty(&inner, is_ok ? ok : e);
            ctlc_indent(out, inner.p ? inner.p : "", inner.len, 4);
            cc_strbuf_deinit(&inner);
            return is_ok;
        }
        ctlc_dump(out, n, 4, 1, 0);
        /* Celery runs this through pygments' highlight(), which ends it with a newline
         * (colour codes are stripped when stdout is not a terminal; the newline stays). */
        cc_strbuf_putc(out, '\n');
        return 1;
    }
    cc_ctlclient_pystr(out, n);
    return 1;
}

void cc_ctlclient_say_reply(struct cc_strbuf *out, const char *node, const json_t *reply,
                            int show_body)
{
    struct cc_strbuf body = {0};
    int is_ok = ctlc_pretty(&body, reply);

    cc_strbuf_puts(out, "->  ");
    cc_strbuf_puts(out, node);
    cc_strbuf_puts(out, is_ok ? ": OK\n" : ": ERROR\n");
    if (show_body && body.len) {
        ctlc_indent(out, body.p, body.len, 4);
        cc_strbuf_putc(out, '\n');
    }
    cc_strbuf_deinit(&body);
}

void cc_ctlclient_say_online(struct cc_strbuf *out, size_t n_nodes)
{
    char line[64];
    snprintf(line, sizeof line, "\n%zu %s online.\n", n_nodes, n_nodes == 1 ? "node" : "nodes");
    cc_strbuf_puts(out, line);
}

/* str(datetime.utcfromtimestamp(ts)): "YYYY-MM-DD HH:MM:SS[.ffffff]". */
static void ctlc_datetime(struct cc_strbuf *out, double ts)
{
    long long us;
    time_t secs;
    long frac;
    struct tm tm;
    char buf[64];

    /* [issue 14] A timestamp from another process's event may be any double: outside
     * datetime's years 1..9999 (where Python's utcfromtimestamp raises) print the number. */
    if (!(ts >= -62135596800.0 && ts < 253402300800.0)) {
        snprintf(buf, sizeof buf, "%.17g", ts);
        cc_strbuf_puts(out, buf);
        return;
    }
    us = llround(ts * 1e6);
    secs = (time_t)(us >= 0 ? us / 1000000 : -((-us + 999999) / 1000000));
    frac = (long)(us - (long long)secs * 1000000);
    gmtime_r(&secs, &tm);
    strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
    cc_strbuf_puts(out, buf);
    if (frac) {
        snprintf(buf, sizeof buf, ".%06ld", frac);
        cc_strbuf_puts(out, buf);
    }
}

static void ctlc_human_type(struct cc_strbuf *out, const char *type)
{
    if (strcasecmp(type, "worker-offline") == 0)
        cc_strbuf_puts(out, "shutdown");
    else if (strcasecmp(type, "worker-online") == 0)
        cc_strbuf_puts(out, "started");
    else if (strcasecmp(type, "worker-heartbeat") == 0)
        cc_strbuf_puts(out, "heartbeat");
    else
        for (const char *p = type; *p; p++)
            cc_strbuf_putc(out, *p == '-' ? ' ' : (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p));
}

static int ctlc_is_popped(const char *k, int is_task, int is_recv)
{
    if (strcmp(k, "timestamp") == 0 || strcmp(k, "type") == 0 || strcmp(k, "hostname") == 0)
        return 1;
    if (is_task && strcmp(k, "uuid") == 0)
        return 1;
    if (is_recv && (strcmp(k, "name") == 0 || strcmp(k, "args") == 0 || strcmp(k, "kwargs") == 0))
        return 1;
    return 0;
}

void cc_ctlclient_event_line(struct cc_strbuf *out, const json_t *ev, const char *task_label,
                             char **new_label)
{
    const char *type = json_string_value(json_object_get(ev, "type"));
    const char *host = json_string_value(json_object_get(ev, "hostname"));
    const json_t *ts = json_object_get(ev, "timestamp");
    int is_task, is_recv;
    size_t n = json_object_size(ev), k = 0;
    const char **keys;
    const char *key;
    json_t *val;
    struct cc_strbuf label = {0};
    int any = 0;

    if (new_label)
        *new_label = NULL;
    type = type ? type : "";
    is_task = strncasecmp(type, "task-", 5) == 0;
    is_recv = strcasecmp(type, "task-received") == 0 || strcasecmp(type, "task-sent") == 0;
    cc_strbuf_puts(out, host ? host : "None");
    cc_strbuf_puts(out, " [");
    ctlc_datetime(out, json_number_value(ts));
    cc_strbuf_puts(out, "] ");
    ctlc_human_type(out, type);

    keys = malloc((n ? n : 1) * sizeof *keys);
    if (keys == NULL) {
        out->oom = true;
        return;
    }
    json_object_foreach((json_t *)ev, key, val)
    {
        if (!ctlc_is_popped(key, is_task, is_recv))
            keys[k++] = key;
    }
    qsort(keys, k, sizeof *keys, ctlc_key_cmp);
    if (k)
        cc_strbuf_putc(out, ':');
    if (is_task) {
        if (is_recv) {
            cc_ctlclient_pystr(&label, json_object_get(ev, "name"));
            cc_strbuf_putc(&label, '(');
            cc_ctlclient_pystr(&label, json_object_get(ev, "uuid"));
            cc_strbuf_puts(&label, ") args=");
            cc_ctlclient_pystr(&label, json_object_get(ev, "args"));
            cc_strbuf_puts(&label, " kwargs=");
            cc_ctlclient_pystr(&label, json_object_get(ev, "kwargs"));
            cc_strbuf_putc(out, ' ');
            if (label.p)
                cc_strbuf_putn(out, label.p, label.len);
            if (new_label)
                *new_label = cc_strbuf_take(&label, NULL);
        } else {
            cc_strbuf_putc(out, ' ');
            cc_strbuf_puts(out, task_label ? task_label : "");
        }
    }
    cc_strbuf_putc(out, ' ');
    for (size_t i = 0; i < k; i++) {
        if (any++)
            cc_strbuf_puts(out, ", ");
        cc_strbuf_puts(out, keys[i]);
        cc_strbuf_putc(out, '=');
        cc_ctlclient_pystr(out, json_object_get(ev, keys[i]));
    }
    cc_strbuf_deinit(&label);
    free(keys);
}

/* ---- celery result ---------------------------------------------------------------------- */

/* The exception classes a `celery result` process without an app finds by (module, name) in
 * sys.modules (celery.backends.base exception_to_python), with the module Python then prints
 * (type(exc).__module__): some names of celery.exceptions and billiard.exceptions are
 * imported there from elsewhere. Generated from Celery 5.2.6 / Python 3.11. */
struct ctlc_exc_class {
    const char *module;
    const char *name;
    const char *real_module;
    const char *real_name;
};

static const struct ctlc_exc_class ctlc_exc_classes[] = {
    {"celery.exceptions", "AlreadyRegistered", NULL, NULL},
    {"celery.exceptions", "AlwaysEagerIgnored", NULL, NULL},
    {"celery.exceptions", "BackendError", NULL, NULL},
    {"celery.exceptions", "BackendGetMetaError", NULL, NULL},
    {"celery.exceptions", "BackendStoreError", NULL, NULL},
    {"celery.exceptions", "CDeprecationWarning", NULL, NULL},
    {"celery.exceptions", "CPendingDeprecationWarning", NULL, NULL},
    {"celery.exceptions", "CeleryCommandException", NULL, NULL},
    {"celery.exceptions", "CeleryError", NULL, NULL},
    {"celery.exceptions", "CeleryWarning", NULL, NULL},
    {"celery.exceptions", "ChordError", NULL, NULL},
    {"celery.exceptions", "ClickException", "click.exceptions", NULL},
    {"celery.exceptions", "DuplicateNodenameWarning", NULL, NULL},
    {"celery.exceptions", "FixupWarning", NULL, NULL},
    {"celery.exceptions", "Ignore", NULL, NULL},
    {"celery.exceptions", "ImproperlyConfigured", NULL, NULL},
    {"celery.exceptions", "IncompleteStream", NULL, NULL},
    {"celery.exceptions", "InvalidTaskError", NULL, NULL},
    {"celery.exceptions", "MaxRetriesExceededError", NULL, NULL},
    {"celery.exceptions", "NotConfigured", NULL, NULL},
    {"celery.exceptions", "NotRegistered", NULL, NULL},
    {"celery.exceptions", "OperationalError", "kombu.exceptions", NULL},
    {"celery.exceptions", "QueueNotFound", NULL, NULL},
    {"celery.exceptions", "Reject", NULL, NULL},
    {"celery.exceptions", "Retry", NULL, NULL},
    {"celery.exceptions", "RetryTaskError", NULL, "Retry"},
    {"celery.exceptions", "SecurityError", NULL, NULL},
    {"celery.exceptions", "SecurityWarning", NULL, NULL},
    {"celery.exceptions", "SoftTimeLimitExceeded", "billiard.exceptions", NULL},
    {"celery.exceptions", "SystemTerminate", NULL, "WorkerTerminate"},
    {"celery.exceptions", "TaskError", NULL, NULL},
    {"celery.exceptions", "TaskPredicate", NULL, NULL},
    {"celery.exceptions", "TaskRevokedError", NULL, NULL},
    {"celery.exceptions", "Terminated", "billiard.exceptions", NULL},
    {"celery.exceptions", "TimeLimitExceeded", "billiard.exceptions", NULL},
    {"celery.exceptions", "TimeoutError", NULL, NULL},
    {"celery.exceptions", "WorkerLostError", "billiard.exceptions", NULL},
    {"celery.exceptions", "WorkerShutdown", NULL, NULL},
    {"celery.exceptions", "WorkerTerminate", NULL, NULL},
    {"billiard.exceptions", "AuthenticationError", "multiprocessing.context", NULL},
    {"billiard.exceptions", "BufferTooShort", "multiprocessing.context", NULL},
    {"billiard.exceptions", "CoroStop", NULL, NULL},
    {"billiard.exceptions", "ProcessError", "multiprocessing.context", NULL},
    {"billiard.exceptions", "RestartFreqExceeded", NULL, NULL},
    {"billiard.exceptions", "SoftTimeLimitExceeded", NULL, NULL},
    {"billiard.exceptions", "Terminated", NULL, NULL},
    {"billiard.exceptions", "TimeLimitExceeded", NULL, NULL},
    {"billiard.exceptions", "TimeoutError", "multiprocessing.context", NULL},
    {"billiard.exceptions", "WorkerLostError", NULL, NULL},
};

static const char *const ctlc_builtin_excs[] = {"ArithmeticError",
                                                "AssertionError",
                                                "AttributeError",
                                                "BaseException",
                                                "BaseExceptionGroup",
                                                "BlockingIOError",
                                                "BrokenPipeError",
                                                "BufferError",
                                                "BytesWarning",
                                                "ChildProcessError",
                                                "ConnectionAbortedError",
                                                "ConnectionError",
                                                "ConnectionRefusedError",
                                                "ConnectionResetError",
                                                "DeprecationWarning",
                                                "EOFError",
                                                "EncodingWarning",
                                                "EnvironmentError",
                                                "Exception",
                                                "ExceptionGroup",
                                                "FileExistsError",
                                                "FileNotFoundError",
                                                "FloatingPointError",
                                                "FutureWarning",
                                                "GeneratorExit",
                                                "IOError",
                                                "ImportError",
                                                "ImportWarning",
                                                "IndentationError",
                                                "IndexError",
                                                "InterruptedError",
                                                "IsADirectoryError",
                                                "KeyError",
                                                "KeyboardInterrupt",
                                                "LookupError",
                                                "MemoryError",
                                                "ModuleNotFoundError",
                                                "NameError",
                                                "NotADirectoryError",
                                                "NotImplementedError",
                                                "OSError",
                                                "OverflowError",
                                                "PendingDeprecationWarning",
                                                "PermissionError",
                                                "ProcessLookupError",
                                                "RecursionError",
                                                "ReferenceError",
                                                "ResourceWarning",
                                                "RuntimeError",
                                                "RuntimeWarning",
                                                "StopAsyncIteration",
                                                "StopIteration",
                                                "SyntaxError",
                                                "SyntaxWarning",
                                                "SystemError",
                                                "SystemExit",
                                                "TabError",
                                                "TimeoutError",
                                                "TypeError",
                                                "UnboundLocalError",
                                                "UnicodeDecodeError",
                                                "UnicodeEncodeError",
                                                "UnicodeError",
                                                "UnicodeTranslateError",
                                                "UnicodeWarning",
                                                "UserWarning",
                                                "ValueError",
                                                "Warning",
                                                "ZeroDivisionError",
                                                NULL};

/* OSError(errno, strerror, ...) returns an instance of the subclass for errno (PEP 3151). */
static const char *ctlc_oserror_subclass(json_int_t e)
{
    static const struct {
        int errnum;
        const char *name;
    } map[] = {
        {EAGAIN, "BlockingIOError"},
        {EALREADY, "BlockingIOError"},
        {EWOULDBLOCK, "BlockingIOError"},
        {EINPROGRESS, "BlockingIOError"},
        {ECHILD, "ChildProcessError"},
        {EPIPE, "BrokenPipeError"},
        {ESHUTDOWN, "BrokenPipeError"},
        {ECONNABORTED, "ConnectionAbortedError"},
        {ECONNREFUSED, "ConnectionRefusedError"},
        {ECONNRESET, "ConnectionResetError"},
        {EEXIST, "FileExistsError"},
        {ENOENT, "FileNotFoundError"},
        {EISDIR, "IsADirectoryError"},
        {ENOTDIR, "NotADirectoryError"},
        {EINTR, "InterruptedError"},
        {EACCES, "PermissionError"},
        {EPERM, "PermissionError"},
        {ESRCH, "ProcessLookupError"},
        {ETIMEDOUT, "TimeoutError"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (map[i].errnum == e)
            return map[i].name;
    return "OSError";
}

void cc_ctlclient_client_exc_line(struct cc_strbuf *out, const json_t *exc)
{
    const char *module, *type, *shown_module = NULL, *shown_type;
    const json_t *msg = json_object_get(exc, "exc_message");
    json_t *args = NULL;
    int found = 0;

    if (!json_is_object(exc) || json_object_size(exc) == 0) {
        /* exception_to_python(None) is None; vine's reraise then raises this. */
        cc_strbuf_puts(out, "TypeError: exceptions must derive from BaseException");
        return;
    }
    module = json_string_value(json_object_get(exc, "exc_module"));
    type = json_string_value(json_object_get(exc, "exc_type"));
    if (type == NULL)
        type = "Exception";
    shown_type = type;
    if (module != NULL && strcmp(module, "builtins") == 0) {
        for (const char *const *n = ctlc_builtin_excs; *n != NULL && !found; n++)
            found = strcmp(*n, type) == 0;
        shown_module = "builtins";
    } else if (module != NULL) {
        for (size_t i = 0; i < sizeof ctlc_exc_classes / sizeof ctlc_exc_classes[0]; i++) {
            const struct ctlc_exc_class *c = &ctlc_exc_classes[i];
            if (strcmp(c->module, module) == 0 && strcmp(c->name, type) == 0) {
                found = 1;
                shown_module = c->real_module ? c->real_module : c->module;
                shown_type = c->real_name ? c->real_name : c->name;
                break;
            }
        }
    }
    /* cls(*exc_message) if a list, else cls(exc_message). */
    if (json_is_array(msg))
        args = json_incref((json_t *)msg);
    else {
        args = json_array();
        if (args != NULL)
            json_array_append_new(args, msg != NULL ? json_incref((json_t *)msg) : json_string(""));
    }
    if (!found) {
        /* create_exception_cls(exc_type, 'celery.exceptions') (module given but not loaded
         * in the client, or unknown there), or 'celery.backends.base' without exc_module: a
         * plain Exception subclass, so str() is Exception's. */
        cc_strbuf_puts(out, module != NULL ? "celery.exceptions." : "celery.backends.base.");
        cc_strbuf_puts(out, type);
        cc_strbuf_putn(out, ": ", 2);
        size_t mark = out->len;
        cc_pyrepr_put_exc_str(out, "", type, args);
        if (out->len == mark && !out->oom) {
            out->len -= 2;
            out->p[out->len] = '\0';
        }
    } else {
        if (strcmp(shown_module, "builtins") == 0 &&
            (strcmp(type, "OSError") == 0 || strcmp(type, "IOError") == 0 ||
             strcmp(type, "EnvironmentError") == 0) &&
            json_array_size(args) >= 2 && json_array_size(args) <= 5 &&
            json_is_integer(json_array_get(args, 0)))
            shown_type = ctlc_oserror_subclass(json_integer_value(json_array_get(args, 0)));
        cc_pyrepr_put_exc_line(out, shown_module, shown_type, args);
    }
    json_decref(args);
}

int cc_ctlclient_result_is_ready(const json_t *meta)
{
    const char *st = json_string_value(json_object_get(meta, "status"));
    return st != NULL &&
           (strcmp(st, "SUCCESS") == 0 || strcmp(st, "FAILURE") == 0 || strcmp(st, "REVOKED") == 0);
}

int cc_ctlclient_result_say(struct cc_strbuf *out, struct cc_strbuf *err, const json_t *meta,
                            int show_traceback)
{
    const char *st = json_string_value(json_object_get(meta, "status"));
    const json_t *v;

    if (show_traceback) {
        /* click.echo(task_result.traceback): None prints an empty line. */
        v = json_object_get(meta, "traceback");
        if (json_is_string(v))
            cc_strbuf_putn(out, json_string_value(v), json_string_length(v));
        else if (v != NULL && !json_is_null(v))
            cc_ctlclient_pystr(out, v);
        cc_strbuf_putc(out, '\n');
        return 0;
    }
    if (st != NULL && strcmp(st, "SUCCESS") == 0) {
        /* click.echo(task_result.get()): str(value), None prints an empty line. */
        v = json_object_get(meta, "result");
        if (v != NULL && !json_is_null(v))
            cc_ctlclient_pystr(out, v);
        cc_strbuf_putc(out, '\n');
        return 0;
    }
    /* FAILURE / REVOKED: get() re-raises; Python prints the CLI's own traceback, whose last
     * line is this one, and exits 1. */
    cc_ctlclient_client_exc_line(err, json_object_get(meta, "result"));
    cc_strbuf_putc(err, '\n');
    return 1;
}
