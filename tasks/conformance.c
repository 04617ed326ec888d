/* Celery's own integration-test tasks (t/integration/tasks.py in the celery repository, the
 * Celery 5.2 series), registered under their Python names so Celery's integration suite and
 * our conformance scripts can drive this worker unchanged.
 *
 * Design. Each task mirrors the Python function line by line: same signature (bound by
 * src/worker/taskrun.c exactly as Python binds the call), same return value after JSON encoding
 * (tuples become lists), same exception class, module and args. Python operators go through
 * tasks/pyops.c so type errors read as Python's. Where the Python task needs something this
 * worker does not have yet, the difference is written next to the task:
 *   - chain_add, chord_add, build_chain_inside_task send their canvas with cc_task_send
 *     (include/celeryc/canvas.h builders); build_chain_inside_task fixes the ids before
 *     sending so it can return the chain's result tuple as Python's backend stores it.
 *   - retry, retry_once, retry_once_priority, auto_retry_class_task produce the RETRY outcome;
 *     the worker republishes (later issue).
 *   - delayed_sum_with_soft_guard emulates SoftTimeLimitExceeded: it stops sleeping just before
 *     the soft limit and returns 0, which is what the Python task returns when the soft limit
 *     interrupts its sleep.
 *   - The Redis tasks connect to TEST_REDIS_URL (default redis://127.0.0.1:6379/7) for each
 *     call, where the Python conftest's get_redis_connection() uses REDIS_HOST and db 0.
 * Parts of the file known from memory rather than read from the 5.2.6 tag are marked
 * "(from memory)".
 *
 * Registered names: t.integration.tasks.<function>, except the class-based task, whose name
 * attribute is 'auto_retry_class_task'.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "celeryc/canvas.h"
#include "log.h"
#include "pyops.h"
#include "pyrepr.h"
#include "tasks.h"
#include "url.h"
#include "util.h"

#define CONF_MODULE        "t.integration.tasks"
#define CONF_REDIS_URL     "redis://127.0.0.1:6379/7"
#define CONF_REDIS_TIMEOUT 2    /* seconds, connect and each command */
#define CONF_SOFT_GUARD_S  0.02 /* how early delayed_sum_with_soft_guard gives up */

/* ---- Helpers ------------------------------------------------------------------------ */

/* ExpectedException(*args): the suite's sentinel exception class, defined in the module. */
static int raise_expected(struct cc_task_ctx *ctx, json_t *args /* taken */)
{
    return cc_task_raise_args(ctx, CONF_MODULE, "ExpectedException", args);
}

/* Python's `None` for an absent string field of the request. */
static json_t *str_or_none(const char *s)
{
    return s != NULL ? json_string(s) : json_null();
}

/* delivery_info['priority']: None when the message carried no priority (negative here). */
static json_t *priority_of(const struct cc_task_request *req)
{
    return req->delivery_info.priority >= 0 ? json_integer(req->delivery_info.priority)
                                            : json_null();
}

/* ---- Redis (redis-py semantics over hiredis) ---------------------------------------- */

/* redis-py's Encoder.encode(): str as UTF-8, int and float as repr(); anything else is a
 * DataError. Returns an owned string or NULL after raising. */
static char *redis_arg(struct cc_task_ctx *ctx, const json_t *v, int *rc)
{
    if (json_is_string(v) || json_is_integer(v) || json_is_real(v))
        return cc_pyops_str(v);
    *rc = cc_task_raise(ctx, "redis.exceptions", "DataError",
                        "Invalid input of type: '%s'. Convert to a bytes, string, int or float "
                        "first.",
                        cc_pyops_type_name(v));
    return NULL;
}

/* Connect per call as the Python task does, with a 2 s timeout. Returns the context or NULL
 * after raising redis.exceptions.ConnectionError. */
static redisContext *conf_kv_connect(struct cc_task_ctx *ctx, int *rc)
{
    const char *url = getenv("TEST_REDIS_URL");
    struct timeval tv = {.tv_sec = CONF_REDIS_TIMEOUT};
    struct cc_redis_url u;
    struct cc_err err = {0};
    redisContext *c = NULL;
    redisReply *r = NULL;

    if (url == NULL || url[0] == '\0')
        url = CONF_REDIS_URL;
    if (cc_url_parse_redis(url, &u, &err) != CC_OK) {
        *rc = cc_task_raise(ctx, "builtins", "ValueError", "bad TEST_REDIS_URL: %s", err.msg);
        return NULL;
    }
    if (u.tls) {
        *rc = cc_task_raise(ctx, "redis.exceptions", "ConnectionError",
                            "rediss:// is not supported by the conformance tasks");
        goto out;
    }
    c = u.socket_path != NULL ? redisConnectUnixWithTimeout(u.socket_path, tv)
                              : redisConnectWithTimeout(u.host, u.port, tv);
    if (c == NULL || c->err) {
        *rc = cc_task_raise(ctx, "redis.exceptions", "ConnectionError",
                            "Error connecting to %s:%d. %s.",
                            u.socket_path != NULL ? u.socket_path : u.host, u.port,
                            c != NULL ? c->errstr : "out of memory");
        goto fail;
    }
    redisSetTimeout(c, tv);
    if (u.password != NULL) {
        r = u.username != NULL ? redisCommand(c, "AUTH %s %s", u.username, u.password)
                               : redisCommand(c, "AUTH %s", u.password);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            *rc = cc_task_raise(ctx, "redis.exceptions", "AuthenticationError", "%s",
                                r != NULL ? r->str : c->errstr);
            goto fail;
        }
        freeReplyObject(r);
        r = NULL;
    }
    if (u.db != 0) {
        r = redisCommand(c, "SELECT %d", u.db);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            *rc = cc_task_raise(ctx, "redis.exceptions", "ResponseError", "%s",
                                r != NULL ? r->str : c->errstr);
            goto fail;
        }
        freeReplyObject(r);
        r = NULL;
    }
    goto out;
fail:
    if (r != NULL)
        freeReplyObject(r);
    if (c != NULL)
        redisFree(c);
    c = NULL;
out:
    cc_url_redis_deinit(&u);
    return c;
}

/* One command on a fresh connection: argv[0..argc). Returns CC_OK or the raised status. */
static int conf_kv_command(struct cc_task_ctx *ctx, int argc, const char **argv)
{
    int rc = CC_OK;
    redisContext *c = conf_kv_connect(ctx, &rc);
    redisReply *r;

    if (c == NULL)
        return rc;
    r = redisCommandArgv(c, argc, argv, NULL);
    if (r == NULL)
        rc = cc_task_raise(ctx, "redis.exceptions", "ConnectionError", "%s", c->errstr);
    else if (r->type == REDIS_REPLY_ERROR)
        rc = cc_task_raise(ctx, "redis.exceptions", "ResponseError", "%s", r->str);
    if (r != NULL)
        freeReplyObject(r);
    redisFree(c);
    return rc;
}

/* redis_count(redis_key) as a plain function: INCR key. */
static int conf_kv_incr(struct cc_task_ctx *ctx, const json_t *key)
{
    int rc = CC_OK;
    char *k = redis_arg(ctx, key, &rc);
    const char *argv[2] = {"INCR", k};

    if (k == NULL)
        return rc;
    rc = conf_kv_command(ctx, 2, argv);
    free(k);
    return rc;
}

/* ---- Arithmetic and values ---------------------------------------------------------- */

/* def identity(x): return x */
static int conf_identity(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                         json_t **result)
{
    (void)args;
    (void)kwargs;
    *result = json_deep_copy(cc_task_arg(ctx, 0));
    return CC_OK;
}

const struct cc_task_entry cc_task_conformance_identity = {
    .name = CONF_MODULE ".identity",
    .run = conf_identity,
    .signature = "x",
};

/* def add(x, y, z=None): return x + y + z if z else x + y */
static int conf_add(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                    json_t **result)
{
    const json_t *z = cc_task_arg(ctx, 2);
    json_t *xy;
    int rc;

    (void)args;
    (void)kwargs;
    rc = cc_pyops_add(ctx, cc_task_arg(ctx, 0), cc_task_arg(ctx, 1), &xy);
    if (rc != CC_OK || !cc_pyops_truthy(z)) {
        *result = xy;
        return rc;
    }
    rc = cc_pyops_add(ctx, xy, z, result);
    json_decref(xy);
    return rc;
}

const struct cc_task_entry cc_task_conformance_add = {
    .name = CONF_MODULE ".add",
    .run = conf_add,
    .signature = "x, y, z=None",
};

/* def add_not_typed(x, y): return x + y   (typing=False only changes the client's check) */
static int conf_add2(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                     json_t **result)
{
    (void)args;
    (void)kwargs;
    return cc_pyops_add(ctx, cc_task_arg(ctx, 0), cc_task_arg(ctx, 1), result);
}

const struct cc_task_entry cc_task_conformance_add_not_typed = {
    .name = CONF_MODULE ".add_not_typed",
    .run = conf_add2,
    .signature = "x, y",
};

/* @shared_task(ignore_result=True) def add_ignore_result(x, y): return x + y */
const struct cc_task_entry cc_task_conformance_add_ignore_result = {
    .name = CONF_MODULE ".add_ignore_result",
    .run = conf_add2,
    .signature = "x, y",
    .ignore_result = CC_YES,
};

/* def raise_error(*args): raise ValueError("deliberate error") */
static int conf_raise_error(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                            json_t **result)
{
    (void)args;
    (void)kwargs;
    (void)result;
    return cc_task_raise(ctx, "builtins", "ValueError", "deliberate error");
}

const struct cc_task_entry cc_task_conformance_raise_error = {
    .name = CONF_MODULE ".raise_error",
    .run = conf_raise_error,
    .signature = "*args",
};

/* def fail(*args): raise ExpectedException("Task expected to fail", *args) */
static int conf_fail(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                     json_t **result)
{
    json_t *exc_args = json_pack("[s]", "Task expected to fail");

    (void)args;
    (void)kwargs;
    (void)result;
    json_array_extend(exc_args, (json_t *)cc_task_arg(ctx, 0));
    return raise_expected(ctx, exc_args);
}

const struct cc_task_entry cc_task_conformance_fail = {
    .name = CONF_MODULE ".fail",
    .run = conf_fail,
    .signature = "*args",
};

/* def delayed_sum(numbers, pause_time=1): sleep(pause_time); return sum(numbers) */
static int conf_delayed_sum(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                            json_t **result)
{
    double pause;
    int rc;

    (void)args;
    (void)kwargs;
    if ((rc = cc_pyops_seconds(ctx, cc_task_arg(ctx, 1), &pause)) != CC_OK)
        return rc;
    cc_pyops_sleep(pause);
    return cc_pyops_sum(ctx, cc_task_arg(ctx, 0), result);
}

const struct cc_task_entry cc_task_conformance_delayed_sum = {
    .name = CONF_MODULE ".delayed_sum",
    .run = conf_delayed_sum,
    .signature = "numbers, pause_time=1",
};

/* def delayed_sum_with_soft_guard(numbers, pause_time=1):
 *     try: sleep(pause_time); return sum(numbers)
 *     except SoftTimeLimitExceeded: return 0
 * The soft limit is known in advance here, so instead of being interrupted the task stops
 * sleeping just before it (CONF_SOFT_GUARD_S early, so the pool's own soft-limit signal finds
 * the task finished) and returns 0 as the Python handler does. */
static int conf_delayed_sum_guard(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                                  json_t **result)
{
    double pause, soft = ctx->req->soft_time_limit_s;
    int rc;

    (void)args;
    (void)kwargs;
    if (!(soft > 0))
        soft = ctx->entry->soft_time_limit_s;
    if ((rc = cc_pyops_seconds(ctx, cc_task_arg(ctx, 1), &pause)) != CC_OK)
        return rc;
    if (soft > 0 && pause >= soft) {
        cc_pyops_sleep(soft > CONF_SOFT_GUARD_S ? soft - CONF_SOFT_GUARD_S : 0);
        *result = json_integer(0);
        return CC_OK;
    }
    cc_pyops_sleep(pause);
    return cc_pyops_sum(ctx, cc_task_arg(ctx, 0), result);
}

const struct cc_task_entry cc_task_conformance_delayed_sum_with_soft_guard = {
    .name = CONF_MODULE ".delayed_sum_with_soft_guard",
    .run = conf_delayed_sum_guard,
    .signature = "numbers, pause_time=1",
};

/* def tsum(nums): return sum(nums) */
static int conf_tsum(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                     json_t **result)
{
    (void)args;
    (void)kwargs;
    return cc_pyops_sum(ctx, cc_task_arg(ctx, 0), result);
}

const struct cc_task_entry cc_task_conformance_tsum = {
    .name = CONF_MODULE ".tsum",
    .run = conf_tsum,
    .signature = "nums",
};

/* def sleeping(i, **_): sleep(i) */
static int conf_sleeping(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                         json_t **result)
{
    double secs;
    int rc;

    (void)args;
    (void)kwargs;
    (void)result;
    if ((rc = cc_pyops_seconds(ctx, cc_task_arg(ctx, 0), &secs)) != CC_OK)
        return rc;
    cc_pyops_sleep(secs);
    return CC_OK;
}

const struct cc_task_entry cc_task_conformance_sleeping = {
    .name = CONF_MODULE ".sleeping",
    .run = conf_sleeping,
    .signature = "i, **_",
};

/* def print_unicode(log_message='håå®ƒ valmuefrø', print_message='hiöäüß'):
 *     logger.warning(log_message); print(print_message)
 * The worker redirects a task's stdout to the "celery.redirected" logger at WARNING
 * (worker_redirect_stdouts), which logs the plain line without the task tag. */
static int conf_print_unicode(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                              json_t **result)
{
    char *log_msg = cc_pyops_str(cc_task_arg(ctx, 0));
    char *print_msg = cc_pyops_str(cc_task_arg(ctx, 1));

    (void)args;
    (void)kwargs;
    (void)result;
    cc_task_warn(ctx, "%s", log_msg != NULL ? log_msg : "");
    cc_log(CC_LOG_WARNING, "%s", print_msg != NULL ? print_msg : "");
    free(log_msg);
    free(print_msg);
    return CC_OK;
}

const struct cc_task_entry cc_task_conformance_print_unicode = {
    .name = CONF_MODULE ".print_unicode",
    .run = conf_print_unicode,
    .signature = "log_message=\"håå®ƒ valmuefrø\", print_message=\"hiöäüß\"",
};

/* def return_exception(e): return e, True
 * Over JSON, `e` can only be a JSON value (kombu's JSON cannot carry an exception instance),
 * so the task returns [e, true] like Python's JSON-encoded tuple. */
static int conf_return_exception(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                                 json_t **result)
{
    (void)args;
    (void)kwargs;
    *result = json_pack("[O, b]", cc_task_arg(ctx, 0), 1);
    return CC_OK;
}

const struct cc_task_entry cc_task_conformance_return_exception = {
    .name = CONF_MODULE ".return_exception",
    .run = conf_return_exception,
    .signature = "e",
};

/* def chord_error(*args): return args */
static int conf_chord_error(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                            json_t **result)
{
    (void)args;
    (void)kwargs;
    *result = json_deep_copy(cc_task_arg(ctx, 0));
    return CC_OK;
}

const struct cc_task_entry cc_task_conformance_chord_error = {
    .name = CONF_MODULE ".chord_error",
    .run = conf_chord_error,
    .signature = "*args",
};

/* ---- Files and Redis ---------------------------------------------------------------- */

/* OSError subclass Python picks for an errno (PEP 3151). */
static const char *oserror_type(int e)
{
    switch (e) {
    case ENOENT:
        return "FileNotFoundError";
    case EACCES:
    case EPERM:
        return "PermissionError";
    case EISDIR:
        return "IsADirectoryError";
    case ENOTDIR:
        return "NotADirectoryError";
    case EEXIST:
        return "FileExistsError";
    default:
        return "OSError";
    }
}

/* (from memory) def write_to_file_and_return_int(file_name, i):
 *     with open(file_name, mode='a', buffering=1) as file_handle:
 *         file_handle.write(str(i)+'\n')
 *     return i */
static int conf_write_to_file(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                              json_t **result)
{
    const json_t *name = cc_task_arg(ctx, 0), *i = cc_task_arg(ctx, 1);
    char *line;
    FILE *f;
    int rc = CC_OK;

    (void)args;
    (void)kwargs;
    if (!json_is_string(name))
        return cc_task_raise(ctx, "builtins", "TypeError",
                             "expected str, bytes or os.PathLike object, not %s",
                             cc_pyops_type_name(name));
    f = fopen(json_string_value(name), "a");
    if (f == NULL) {
        int e = errno;
        char *fname = cc_pyrepr(name, 0, 0), *tb;

        /* OSError(errno, strerror) with the filename kept apart, as Python builds it; the
         * traceback shows Python's str(): "[Errno 2] No such file or directory: 'x'". */
        rc = cc_task_raise_args(ctx, "builtins", oserror_type(e),
                                json_pack("[i, s]", e, strerror(e)));
        if (asprintf(&tb,
                     "Traceback (most recent call last):\n  File \"%s\", line %d, in %s\n"
                     "%s: [Errno %d] %s: %s\n",
                     __FILE__, __LINE__, __func__, oserror_type(e), e, strerror(e),
                     fname != NULL ? fname : "?") >= 0) {
            cc_task_set_traceback(ctx, tb);
            free(tb);
        }
        free(fname);
        return rc;
    }
    line = cc_pyops_str(i);
    if (line == NULL || fprintf(f, "%s\n", line) < 0)
        rc = cc_task_raise(ctx, "builtins", "OSError", "write to %s failed",
                           json_string_value(name));
    if (fclose(f) != 0 && rc == CC_OK)
        rc = cc_task_raise(ctx, "builtins", "OSError", "close of %s failed",
                           json_string_value(name));
    free(line);
    if (rc == CC_OK)
        *result = json_deep_copy(i);
    return rc;
}

const struct cc_task_entry cc_task_conformance_write_to_file_and_return_int = {
    .name = CONF_MODULE ".write_to_file_and_return_int",
    .run = conf_write_to_file,
    .signature = "file_name, i",
};

/* def redis_echo(message, redis_key="redis-echo"):
 *     get_redis_connection().rpush(redis_key, message)
 * (from memory: the redis_key parameter came in the 5.2 series; older files rpush to the
 * fixed key 'redis-echo', which is still the default). */
static int conf_redis_echo(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                           json_t **result)
{
    int rc = CC_OK;
    char *msg = NULL, *key = NULL;

    (void)args;
    (void)kwargs;
    (void)result;
    /* redis-py encodes the arguments in order: the key first, then the value. */
    key = redis_arg(ctx, cc_task_arg(ctx, 1), &rc);
    if (key != NULL)
        msg = redis_arg(ctx, cc_task_arg(ctx, 0), &rc);
    if (msg != NULL) {
        const char *argv[3] = {"RPUSH", key, msg};

        rc = conf_kv_command(ctx, 3, argv);
    }
    free(key);
    free(msg);
    return rc;
}

const struct cc_task_entry cc_task_conformance_redis_echo = {
    .name = CONF_MODULE ".redis_echo",
    .run = conf_redis_echo,
    .signature = "message, redis_key=\"redis-echo\"",
};

/* (from memory) def redis_count(redis_key="redis-count"):
 *     get_redis_connection().incr(redis_key) */
static int conf_redis_count(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                            json_t **result)
{
    (void)args;
    (void)kwargs;
    (void)result;
    return conf_kv_incr(ctx, cc_task_arg(ctx, 0));
}

const struct cc_task_entry cc_task_conformance_redis_count = {
    .name = CONF_MODULE ".redis_count",
    .run = conf_redis_count,
    .signature = "redis_key=\"redis-count\"",
};

/* (from memory) def errback_old_style(request_id):
 *     redis_count(request_id); return request_id
 * Calling the task function directly runs it in-process: INCR <request_id>. */
static int conf_errback_old_style(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                                  json_t **result)
{
    const json_t *id = cc_task_arg(ctx, 0);
    int rc;

    (void)args;
    (void)kwargs;
    if ((rc = conf_kv_incr(ctx, id)) != CC_OK)
        return rc;
    *result = json_deep_copy(id);
    return CC_OK;
}

const struct cc_task_entry cc_task_conformance_errback_old_style = {
    .name = CONF_MODULE ".errback_old_style",
    .run = conf_errback_old_style,
    .signature = "request_id",
};

/* (from memory) def errback_new_style(request, exc, tb):
 *     redis_count(request.id); return request.id
 * Python Celery calls a new-style errback in the failing task's worker with the Request
 * object; here `request` may be that request as a JSON object (its "id" is used) or the id
 * itself. */
static int conf_errback_new_style(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                                  json_t **result)
{
    const json_t *request = cc_task_arg(ctx, 0), *id = request;
    int rc;

    (void)args;
    (void)kwargs;
    if (json_is_object(request))
        id = json_object_get(request, "id");
    if (id == NULL || json_is_null(id))
        return cc_task_raise(ctx, "builtins", "AttributeError", "'%s' object has no attribute 'id'",
                             cc_pyops_type_name(request));
    if ((rc = conf_kv_incr(ctx, id)) != CC_OK)
        return rc;
    *result = json_deep_copy(id);
    return CC_OK;
}

const struct cc_task_entry cc_task_conformance_errback_new_style = {
    .name = CONF_MODULE ".errback_new_style",
    .run = conf_errback_new_style,
    .signature = "request, exc, tb",
};

/* ---- Retries ------------------------------------------------------------------------ */

/* The Python task keeps its attempt counter on the task instance (self.attempt): one per
 * worker process, shared by every call that process runs. A static is the same thing in a
 * forked pool child. */
static int conf_retry_attempt;

/* @shared_task(bind=True, default_retry_delay=1)
 * def retry(self, return_value=None):
 *     if return_value:
 *         attempt = getattr(self, 'attempt', 0)
 *         print('attempt', attempt)
 *         if attempt >= 3:
 *             delattr(self, 'attempt'); return return_value
 *         self.attempt = attempt + 1
 *     raise self.retry(exc=ExpectedException(), countdown=5) */
static int conf_retry(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                      json_t **result)
{
    const json_t *rv = cc_task_arg(ctx, 0);
    struct cc_task_retry_opts opts = {
        .countdown_s = 5,
        .exc_module = CONF_MODULE,
        .exc_type = "ExpectedException",
        .exc_args = json_array(),
    };

    (void)args;
    (void)kwargs;
    if (cc_pyops_truthy(rv)) {
        cc_log(CC_LOG_WARNING, "attempt %d", conf_retry_attempt);
        if (conf_retry_attempt >= 3) {
            conf_retry_attempt = 0;
            json_decref(opts.exc_args);
            *result = json_deep_copy(rv);
            return CC_OK;
        }
        conf_retry_attempt++;
    }
    return cc_task_retry(ctx, &opts);
}

const struct cc_task_entry cc_task_conformance_retry = {
    .name = CONF_MODULE ".retry",
    .run = conf_retry,
    .signature = "self, return_value=None",
    .default_retry_delay_s = 1,
};

/* max_retries=None means "the task's"; 0 means none at all. */
static int max_retries_arg(const json_t *v)
{
    if (!json_is_integer(v))
        return 0;
    return json_integer_value(v) > 0 ? (int)json_integer_value(v) : CC_MAX_RETRIES_NONE;
}

/* Shared body of retry_once and retry_once_priority:
 *     raise self.retry(countdown=countdown, max_retries=max_retries)
 * Bound arguments: expires, max_retries, countdown, *args. A countdown of 0 takes the
 * default delay here (task.h's convention), where Python would retry at once. */
static int retry_once_common(struct cc_task_ctx *ctx)
{
    const json_t *countdown = cc_task_arg(ctx, 2);
    struct cc_task_retry_opts opts = {
        .max_retries = max_retries_arg(cc_task_arg(ctx, 1)),
    };

    if (json_is_number(countdown))
        opts.countdown_s = json_number_value(countdown);
    return cc_task_retry(ctx, &opts);
}

/* @shared_task(bind=True, expires=60.0, max_retries=1)
 * def retry_once(self, *args, expires=60.0, max_retries=1, countdown=0.1):
 *     if self.request.retries: return self.request.retries
 *     raise self.retry(countdown=countdown, max_retries=max_retries) */
static int conf_retry_once(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                           json_t **result)
{
    (void)args;
    (void)kwargs;
    if (ctx->req->retries) {
        *result = json_integer(ctx->req->retries);
        return CC_OK;
    }
    return retry_once_common(ctx);
}

const struct cc_task_entry cc_task_conformance_retry_once = {
    .name = CONF_MODULE ".retry_once",
    .run = conf_retry_once,
    .signature = "self, *args, expires=60.0, max_retries=1, countdown=0.1",
    .max_retries = 1,
};

/* Same, returning self.request.delivery_info['priority'] once retried. */
static int conf_retry_once_priority(struct cc_task_ctx *ctx, const json_t *args,
                                    const json_t *kwargs, json_t **result)
{
    (void)args;
    (void)kwargs;
    if (ctx->req->retries) {
        *result = priority_of(ctx->req);
        return CC_OK;
    }
    return retry_once_common(ctx);
}

const struct cc_task_entry cc_task_conformance_retry_once_priority = {
    .name = CONF_MODULE ".retry_once_priority",
    .run = conf_retry_once_priority,
    .signature = "self, *args, expires=60.0, max_retries=1, countdown=0.1",
    .max_retries = 1,
};

/* class ClassBasedAutoRetryTask(Task):
 *     name = 'auto_retry_class_task'
 *     autoretry_for = (ValueError,)
 *     retry_kwargs = {'max_retries': 1}
 *     retry_backoff = True
 *     def run(self):
 *         if self.request.retries: return self.request.retries
 *         raise ValueError()
 * src/worker/taskrun.c's autoretry turns the ValueError into a retry with countdown
 * randrange(min(600, 2 ** retries) + 1). */
static int conf_auto_retry(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                           json_t **result)
{
    (void)args;
    (void)kwargs;
    if (ctx->req->retries) {
        *result = json_integer(ctx->req->retries);
        return CC_OK;
    }
    return cc_task_raise_args(ctx, "builtins", "ValueError", NULL);
}

static const char *const conf_autoretry_value_error[] = {"builtins.ValueError", NULL};

const struct cc_task_entry cc_task_conformance_auto_retry_class_task = {
    .name = "auto_retry_class_task",
    .run = conf_auto_retry,
    .signature = "self",
    .max_retries = 1,
    .autoretry_for = conf_autoretry_value_error,
    .retry_backoff_s = 1,
};

/* The same task under the module-qualified name the issue lists, for clients that address
 * every conformance task as t.integration.tasks.<name>. */
const struct cc_task_entry cc_task_conformance_auto_retry_class_task_qualified = {
    .name = CONF_MODULE ".auto_retry_class_task",
    .run = conf_auto_retry,
    .signature = "self",
    .max_retries = 1,
    .autoretry_for = conf_autoretry_value_error,
    .retry_backoff_s = 1,
};

/* ---- The request -------------------------------------------------------------------- */

/* def ids(self, i): return self.request.root_id, self.request.parent_id, i */
static int conf_ids(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                    json_t **result)
{
    (void)args;
    (void)kwargs;
    *result = json_pack("[o, o, O]", str_or_none(ctx->req->root_id),
                        str_or_none(ctx->req->parent_id), cc_task_arg(ctx, 0));
    return CC_OK;
}

const struct cc_task_entry cc_task_conformance_ids = {
    .name = CONF_MODULE ".ids",
    .run = conf_ids,
    .signature = "self, i",
};

/* def collect_ids(self, res, i):
 *     return res, (self.request.root_id, self.request.parent_id, i) */
static int conf_collect_ids(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                            json_t **result)
{
    (void)args;
    (void)kwargs;
    *result = json_pack("[O, [o, o, O]]", cc_task_arg(ctx, 0), str_or_none(ctx->req->root_id),
                        str_or_none(ctx->req->parent_id), cc_task_arg(ctx, 1));
    return CC_OK;
}

const struct cc_task_entry cc_task_conformance_collect_ids = {
    .name = CONF_MODULE ".collect_ids",
    .run = conf_collect_ids,
    .signature = "self, res, i",
};

/* def return_priority(self, *_args):
 *     return "Priority: %s" % self.request.delivery_info['priority'] */
static int conf_return_priority(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                                json_t **result)
{
    char buf[48];

    (void)args;
    (void)kwargs;
    if (ctx->req->delivery_info.priority >= 0)
        snprintf(buf, sizeof(buf), "Priority: %d", ctx->req->delivery_info.priority);
    else
        snprintf(buf, sizeof(buf), "Priority: None");
    *result = json_string(buf);
    return CC_OK;
}

const struct cc_task_entry cc_task_conformance_return_priority = {
    .name = CONF_MODULE ".return_priority",
    .run = conf_return_priority,
    .signature = "self, *_args",
};

/* (from memory) def return_properties(self): return self.request.properties
 * When the worker does not pass the AMQP properties, the ones the request knows are
 * rebuilt: correlation_id, reply_to, priority and application_headers. */
static int conf_return_properties(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                                  json_t **result)
{
    const struct cc_task_request *req = ctx->req;
    json_t *props;

    (void)args;
    (void)kwargs;
    if (req->properties != NULL) {
        *result = json_deep_copy(req->properties);
        return CC_OK;
    }
    props = json_object();
    json_object_set_new(props, "correlation_id", str_or_none(req->correlation_id));
    json_object_set_new(props, "reply_to", str_or_none(req->reply_to));
    json_object_set_new(props, "priority", priority_of(req));
    json_object_set_new(props, "application_headers",
                        req->headers != NULL ? json_deep_copy(req->headers) : json_object());
    *result = props;
    return CC_OK;
}

const struct cc_task_entry cc_task_conformance_return_properties = {
    .name = CONF_MODULE ".return_properties",
    .run = conf_return_properties,
    .signature = "self",
};

/* ---- Canvas from inside a task ----------------------------------------------------- */

#define CONF_ADD CONF_MODULE ".add"

/* sig.apply_async() inside a task: a publish error is what kombu raises after its retries. */
static int conf_send(struct cc_task_ctx *ctx, json_t *sig, char out_id[37])
{
    int rc = cc_task_send(ctx, sig, out_id);

    if (rc == CC_EINVAL)
        return cc_task_raise(ctx, "builtins", "TypeError", "not a signature");
    if (rc != CC_OK)
        return cc_task_raise(ctx, "kombu.exceptions", "OperationalError", "%s", cc_strerror(rc));
    return CC_OK;
}

/* add.s(*args) with options.task_id = a fresh id (copied to `id`). */
static json_t *conf_add_sig(json_t *args, char id[37])
{
    cc_uuid4(id);
    return cc_sig_set(cc_sig(CONF_ADD, args, NULL), "task_id", json_string(id));
}

/* def build_chain_inside_task(self):
 *     test_chain = (add.s(1, 1) | add.s(2) | group(add.s(3), add.s(4)) | add.s(5))
 *     result = test_chain()
 *     return result
 * The chain's result is the last step's AsyncResult, which the backend stores as its
 * as_tuple(): the group followed by add.s(5) is a chord (prepare_steps), whose body result's
 * parent is the header's GroupResult, whose parent is add.s(2)'s, and so on:
 *     [[id5, [[gid, [[id2, [[id1, null], null]], null]], [[[id3, null], null],
 *                                                         [[id4, null], null]]]], null]
 * The ids are fixed here before sending (Python freezes them the same way). */
static int conf_build_chain(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                            json_t **result)
{
    char id1[37], id2[37], id3[37], id4[37], id5[37], gid[37];
    json_t *grp, *wf;
    int rc;

    (void)args;
    (void)kwargs;
    cc_uuid4(gid);
    grp = cc_sig_set(cc_group(conf_add_sig(json_pack("[i]", 3), id3),
                              conf_add_sig(json_pack("[i]", 4), id4), NULL),
                     "task_id", json_string(gid));
    wf = cc_chain(conf_add_sig(json_pack("[i,i]", 1, 1), id1),
                  conf_add_sig(json_pack("[i]", 2), id2), grp,
                  conf_add_sig(json_pack("[i]", 5), id5), NULL);
    if (wf == NULL)
        return cc_task_raise(ctx, "builtins", "MemoryError", "out of memory");
    if ((rc = conf_send(ctx, wf, NULL)) != CC_OK)
        return rc;
    *result = json_pack("[[s,[[s,[[s,[[s,n],n]],n]],[[[s,n],n],[[s,n],n]]]],n]", id5, gid, id2, id1,
                        id3, id4);
    return CC_OK;
}

const struct cc_task_entry cc_task_conformance_build_chain_inside_task = {
    .name = CONF_MODULE ".build_chain_inside_task",
    .run = conf_build_chain,
    .signature = "self",
};

/* def chain_add(x, y): (add.s(x, x) | add.s(y)).apply_async() */
static int conf_chain_add(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                          json_t **result)
{
    const json_t *x = cc_task_arg(ctx, 0), *y = cc_task_arg(ctx, 1);

    (void)args;
    (void)kwargs;
    (void)result; /* None */
    return conf_send(ctx,
                     cc_chain(cc_sig(CONF_ADD, json_pack("[O,O]", x, x), NULL),
                              cc_sig(CONF_ADD, json_pack("[O]", y), NULL), NULL),
                     NULL);
}

const struct cc_task_entry cc_task_conformance_chain_add = {
    .name = CONF_MODULE ".chain_add",
    .run = conf_chain_add,
    .signature = "x, y",
};

/* def chord_add(x, y): chord(add.s(x, x), add.s(y)).apply_async()
 * (a single header signature is made a one-member group, as chord's _maybe_group does). */
static int conf_chord_add(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                          json_t **result)
{
    const json_t *x = cc_task_arg(ctx, 0), *y = cc_task_arg(ctx, 1);

    (void)args;
    (void)kwargs;
    (void)result; /* None */
    return conf_send(ctx,
                     cc_chord(cc_group(cc_sig(CONF_ADD, json_pack("[O,O]", x, x), NULL), NULL),
                              cc_sig(CONF_ADD, json_pack("[O]", y), NULL)),
                     NULL);
}

const struct cc_task_entry cc_task_conformance_chord_add = {
    .name = CONF_MODULE ".chord_add",
    .run = conf_chord_add,
    .signature = "x, y",
};
