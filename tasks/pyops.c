/* Python operator semantics over JSON values (tasks/pyops.h).
 *
 * Tasks that mirror Python functions (`return x + y`, `sum(numbers)`, `sleep(i)`) must fail the
 * way Python fails, because a Celery client compares exception types and messages. Each
 * operation here follows CPython 3.11's rules and error wording for the JSON subset of Python
 * values: int (int64 here), float, str, list, dict, None and bool (an int subclass).
 *
 * Invariants: inputs are borrowed and never modified; every returned value is a new reference.
 * Where Python would produce a big int or a float JSON cannot carry, OverflowError is raised
 * rather than returning a wrong number.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pyops.h"
#include "pyrepr.h"
#include "util.h"

const char *cc_pyops_type_name(const json_t *v)
{
    return cc_pyrepr_type_name(v);
}

bool cc_pyops_truthy(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return json_object_size(v) > 0;
    case JSON_ARRAY:
        return json_array_size(v) > 0;
    case JSON_STRING:
        return json_string_length(v) > 0;
    case JSON_INTEGER:
        return json_integer_value(v) != 0;
    case JSON_REAL:
        return json_real_value(v) != 0.0;
    case JSON_TRUE:
        return true;
    default:
        return false;
    }
}

static bool is_intlike(const json_t *v)
{
    return json_is_integer(v) || json_is_boolean(v);
}

static json_int_t int_value(const json_t *v)
{
    return json_is_integer(v) ? json_integer_value(v) : (json_is_true(v) ? 1 : 0);
}

static double num_value(const json_t *v)
{
    return json_is_real(v) ? json_real_value(v) : (double)int_value(v);
}

static int real_result(struct cc_task_ctx *ctx, double r, json_t **out)
{
    if (!isfinite(r))
        return cc_task_raise(ctx, "builtins", "OverflowError",
                             "float result is not finite (JSON cannot carry it)");
    *out = json_real(r);
    return CC_OK;
}

static int int_overflow(struct cc_task_ctx *ctx)
{
    return cc_task_raise(ctx, "builtins", "OverflowError",
                         "integer result out of the int64 range of JSON integers");
}

static int unsupported(struct cc_task_ctx *ctx, const char *op, const json_t *a, const json_t *b)
{
    return cc_task_raise(ctx, "builtins", "TypeError",
                         "unsupported operand type(s) for %s: '%s' and '%s'", op,
                         cc_pyops_type_name(a), cc_pyops_type_name(b));
}

int cc_pyops_add(struct cc_task_ctx *ctx, const json_t *a, const json_t *b, json_t **out)
{
    *out = NULL;
    if (json_is_string(a)) {
        size_t la = json_string_length(a), lb;
        char *buf;

        if (!json_is_string(b))
            return cc_task_raise(ctx, "builtins", "TypeError",
                                 "can only concatenate str (not \"%s\") to str",
                                 cc_pyops_type_name(b));
        lb = json_string_length(b);
        buf = cc_xmalloc(la + lb + 1);
        memcpy(buf, json_string_value(a), la);
        memcpy(buf + la, json_string_value(b), lb);
        *out = json_stringn_nocheck(buf, la + lb); /* both halves are valid UTF-8 */
        free(buf);
        return CC_OK;
    }
    if (json_is_array(a)) {
        size_t i;
        json_t *v;

        if (!json_is_array(b))
            return cc_task_raise(ctx, "builtins", "TypeError",
                                 "can only concatenate list (not \"%s\") to list",
                                 cc_pyops_type_name(b));
        *out = json_array();
        json_array_foreach((json_t *)a, i, v) json_array_append(*out, v);
        json_array_foreach((json_t *)b, i, v) json_array_append(*out, v);
        return CC_OK;
    }
    if (is_intlike(a) && is_intlike(b)) {
        json_int_t r;

        if (__builtin_add_overflow(int_value(a), int_value(b), &r))
            return int_overflow(ctx);
        *out = json_integer(r);
        return CC_OK;
    }
    if ((is_intlike(a) || json_is_real(a)) && (is_intlike(b) || json_is_real(b)))
        return real_result(ctx, num_value(a) + num_value(b), out);
    return unsupported(ctx, "+", a, b);
}

int cc_pyops_mul(struct cc_task_ctx *ctx, const json_t *a, const json_t *b, json_t **out)
{
    *out = NULL;
    if (is_intlike(a) && is_intlike(b)) {
        json_int_t r;

        if (__builtin_mul_overflow(int_value(a), int_value(b), &r))
            return int_overflow(ctx);
        *out = json_integer(r);
        return CC_OK;
    }
    if ((is_intlike(a) || json_is_real(a)) && (is_intlike(b) || json_is_real(b)))
        return real_result(ctx, num_value(a) * num_value(b), out);
    if ((json_is_string(a) || json_is_array(a)) && !is_intlike(b))
        return cc_task_raise(ctx, "builtins", "TypeError",
                             "can't multiply sequence by non-int of type '%s'",
                             cc_pyops_type_name(b));
    return unsupported(ctx, "*", a, b);
}

int cc_pyops_sum(struct cc_task_ctx *ctx, const json_t *iterable, json_t **out)
{
    json_t *acc;
    size_t i;
    const json_t *v;

    *out = NULL;
    if (json_is_string(iterable) || json_is_object(iterable)) {
        /* Iterating a str yields str characters and a dict its str keys: the first one
         * already fails 0 + 'x'. */
        if ((json_is_string(iterable) && json_string_length(iterable) == 0) ||
            (json_is_object(iterable) && json_object_size(iterable) == 0)) {
            *out = json_integer(0);
            return CC_OK;
        }
        return cc_task_raise(ctx, "builtins", "TypeError",
                             "unsupported operand type(s) for +: 'int' and 'str'");
    }
    if (!json_is_array(iterable))
        return cc_task_raise(ctx, "builtins", "TypeError", "'%s' object is not iterable",
                             cc_pyops_type_name(iterable));
    acc = json_integer(0);
    json_array_foreach((json_t *)iterable, i, v)
    {
        json_t *next;
        int rc = cc_pyops_add(ctx, acc, v, &next);

        json_decref(acc);
        if (rc != CC_OK)
            return rc;
        acc = next;
    }
    if (json_is_boolean(acc)) { /* unreachable: 0 + bool is an int */
        json_t *n = json_integer(int_value(acc));

        json_decref(acc);
        acc = n;
    }
    *out = acc;
    return CC_OK;
}

int cc_pyops_seconds(struct cc_task_ctx *ctx, const json_t *v, double *seconds)
{
    if (!is_intlike(v) && !json_is_real(v))
        return cc_task_raise(ctx, "builtins", "TypeError",
                             "'%s' object cannot be interpreted as an integer",
                             cc_pyops_type_name(v));
    *seconds = num_value(v);
    if (isnan(*seconds))
        return cc_task_raise(ctx, "builtins", "ValueError", "Invalid value NaN (not a number)");
    if (*seconds < 0)
        return cc_task_raise(ctx, "builtins", "ValueError", "sleep length must be non-negative");
    return CC_OK;
}

void cc_pyops_sleep(double seconds)
{
    struct timespec ts;

    if (!(seconds > 0))
        return;
    if (seconds > 1e9)
        seconds = 1e9;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    /* A signal (SIGCHLD, a log reopen) must not cut the sleep short: Python's time.sleep()
     * resumes too (PEP 475). */
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

char *cc_pyops_str(const json_t *v)
{
    if (json_is_string(v))
        return strdup(json_string_value(v));
    return cc_pyrepr(v, 0, 0);
}
