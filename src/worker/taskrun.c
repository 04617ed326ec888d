/* Running one task from the table: argument binding, the task API of include/celeryc/task.h
 * and the outcome the worker turns into a stored result and events (src/worker/taskrun.h).
 *
 * Design. cc_taskrun_invoke() builds a private per-invocation state (struct taskrun_state,
 * reached through ctx->priv), binds the message's args/kwargs against the entry's Python-style
 * signature exactly as CPython 3.11 binds a call (initialize_locals() in ceval.c: positional
 * arguments first, then keywords in message order, then the too-many-positional check, then
 * missing positional and keyword-only parameters), runs the task, and folds what the task
 * asked for (return value, pending exception, retry, reject, ignore) into a
 * struct cc_task_outcome. Nothing here talks to the broker or the backend.
 *
 * Binding errors are ordinary task failures: Python Celery calls the task function with the
 * message's arguments inside the tracer, so a wrong arity is a TypeError stored as FAILURE
 * (and, like Celery's autoretry wrapper around run(), eligible for autoretry_for).
 *
 * A signature whose first parameter is named "self" describes a bound task (bind=True in
 * Python): "self" is filled by the worker, counted in TypeError messages as CPython counts it
 * ("ids() takes 2 positional arguments but 3 were given"), and not visible to cc_task_arg().
 *
 * Invariants: every json_t the state holds is owned (one reference) and released before
 * cc_taskrun_invoke() returns; the arena is freed when run() returns; the outcome owns what it
 * points at and nothing else.
 *
 * Wire reference: §3.3 (exception dicts), §6.4 (retry). Celery sources matched:
 * app/task.py Task.retry, app/autoretry.py, utils/time.py get_exponential_backoff_interval,
 * exceptions.py Retry/Reject/MaxRetriesExceededError, app/trace.py handle_retry.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "isotime.h"
#include "log.h"
#include "pyrepr.h"
#include "result.h"
#include "taskrun.h"
#include "util.h"

/* Python-style bounds: generous for task signatures, small enough for stack arrays. */
#define TASKRUN_MAX_PARAMS      32
#define TASKRUN_ARENA_CHUNK     16384
#define TASKRUN_DEFAULT_DELAY   180.0 /* Task.default_retry_delay */
#define TASKRUN_DEFAULT_RETRY   3     /* Task.max_retries */
#define TASKRUN_BACKOFF_MAX     600   /* autoretry retry_backoff_max */
#define TASKRUN_RETRY_UNLIMITED (-1)

/* ---- Private state ------------------------------------------------------------------ */

struct taskrun_block {
    struct taskrun_block *next;
    size_t used;
    size_t cap;
    max_align_t data[];
};

struct taskrun_exc {
    bool is_set;
    char *module;
    char *type;
    json_t *args; /* owned JSON array */
};

/* Where the task raised (cc_task_raise & co. pass __FILE__, __LINE__, __func__): string
 * literals of the task's binary. file NULL: unknown (the worker raised on the task's behalf,
 * or the task called a plain function), the traceback's frame then names the task. */
struct taskrun_loc {
    const char *file;
    int line;
    const char *func;
};

struct taskrun_state {
    const json_t *raw_args; /* as received, for MaxRetriesExceededError's message */
    const json_t *raw_kwargs;
    json_t *argv[TASKRUN_MAX_PARAMS + 2]; /* owned references; NULL when unset */
    size_t argc;
    bool has_signature;

    struct taskrun_exc exc;
    struct taskrun_loc loc; /* of the pending exception or retry */
    char *traceback;        /* from cc_task_set_traceback */

    bool retry_requested;
    double retry_countdown_s;
    char *retry_eta;

    bool reject_requested;
    bool reject_requeue;
    char *reject_reason;
    bool ignore_requested;

    bool soft_limit_seen; /* cc_task_soft_limit_exceeded() returned true */
    json_t *children;     /* [canvas] owned array (cc_task_send), or NULL */

    /* [jobrun] cc_task_run_*: 'P' / 'W' / 0, its message, counters (-1: not reported) */
    char run_status;
    char *run_message;
    int64_t run_processed, run_errored;
    json_t *run_summary; /* owned, or NULL */

    struct taskrun_block *arena;
};

/* The executor's soft-time-limit flag for this thread (cc_taskrun_set_soft_limit_flag). */
static _Thread_local atomic_int *taskrun_soft_flag;

/* [canvas] The executor's hooks for this thread (cc_taskrun_set_hooks). */
static _Thread_local const struct cc_task_hooks *taskrun_hooks;

static struct taskrun_state *state_of(struct cc_task_ctx *ctx)
{
    CC_ASSERT(ctx != NULL && ctx->priv != NULL);
    return ctx->priv;
}

static const char *str_or(const char *s, const char *dflt)
{
    return s != NULL ? s : dflt;
}

static void exc_clear(struct taskrun_exc *x)
{
    free(x->module);
    free(x->type);
    json_decref(x->args);
    memset(x, 0, sizeof(*x));
}

/* Takes ownership of `args` (NULL = no args). */
static void exc_set(struct taskrun_state *st, const char *module, const char *type, json_t *args)
{
    exc_clear(&st->exc);
    st->exc.is_set = true;
    st->exc.module = cc_xstrdup(str_or(module, "builtins"));
    st->exc.type = cc_xstrdup(str_or(type, "Exception"));
    st->exc.args = args != NULL ? args : json_array();
    if (st->exc.args == NULL)
        st->exc.args = json_array();
}

/* A JSON string from bytes that may not be UTF-8 (a task formatting raw data): invalid bytes
 * become '?', so the exception still reaches the client instead of vanishing. */
static json_t *json_string_lossy(const char *s)
{
    json_t *j = json_string(s);
    char *copy;

    if (j != NULL)
        return j;
    copy = cc_xstrdup(s);
    for (char *p = copy; *p != '\0'; p++) {
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    }
    j = json_string(copy);
    free(copy);
    return j;
}

static char *vformat(const char *fmt, va_list ap) CC_PRINTF(1, 0);

static char *vformat(const char *fmt, va_list ap)
{
    va_list ap2;
    int n;
    char *buf;

    va_copy(ap2, ap);
    n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return cc_xstrdup(fmt);
    buf = cc_xmalloc((size_t)n + 1);
    vsnprintf(buf, (size_t)n + 1, fmt, ap);
    return buf;
}

static char *format(const char *fmt, ...) CC_PRINTF(1, 2);

static char *format(const char *fmt, ...)
{
    va_list ap;
    char *s;

    va_start(ap, fmt);
    s = vformat(fmt, ap);
    va_end(ap);
    return s;
}

/* Raise with one message argument: exc_type(message). */
static int raise_msg(struct taskrun_state *st, const char *module, const char *type,
                     const char *msg)
{
    json_t *args = json_array();

    json_array_append_new(args, json_string_lossy(msg));
    exc_set(st, module, type, args);
    memset(&st->loc, 0, sizeof(st->loc));
    return CC_TASK_FAILED;
}

/* ---- Signatures --------------------------------------------------------------------- */

enum sig_kind {
    SIG_POS,    /* positional-or-keyword */
    SIG_KWONLY, /* after * or *args */
};

struct sig_param {
    const char *name; /* points into sig->buf */
    enum sig_kind kind;
    json_t *dflt; /* owned; NULL = required */
};

struct sig {
    char *buf;                              /* owned copy of the signature text, split in place */
    struct sig_param p[TASKRUN_MAX_PARAMS]; /* positional first, then keyword-only */
    size_t npos;                            /* positional-or-keyword parameters, self included */
    size_t nkwonly;
    size_t ndefaults_pos; /* trailing positional parameters with a default */
    const char *varargs;  /* name of *args, or NULL */
    const char *varkw;    /* name of **kwargs, or NULL */
    bool has_self;
};

static void sig_deinit(struct sig *s)
{
    for (size_t i = 0; i < s->npos + s->nkwonly; i++)
        json_decref(s->p[i].dflt);
    free(s->buf);
    memset(s, 0, sizeof(*s));
}

static char *trim(char *s)
{
    char *end;

    while (*s == ' ' || *s == '\t' || *s == '\n')
        s++;
    end = s + strlen(s);
    while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n'))
        *--end = '\0';
    return s;
}

static bool is_identifier(const char *s)
{
    if (!(*s == '_' || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')))
        return false;
    for (s++; *s != '\0'; s++) {
        if (!(*s == '_' || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9')))
            return false;
    }
    return true;
}

/* Next top-level comma (outside strings, brackets and braces) from `p`, or the end. */
static char *next_comma(char *p)
{
    int depth = 0;
    bool in_str = false;

    for (; *p != '\0'; p++) {
        if (in_str) {
            if (*p == '\\' && p[1] != '\0')
                p++;
            else if (*p == '"')
                in_str = false;
        } else if (*p == '"') {
            in_str = true;
        } else if (*p == '[' || *p == '{') {
            depth++;
        } else if (*p == ']' || *p == '}') {
            depth--;
        } else if (*p == ',' && depth == 0) {
            return p;
        }
    }
    return p;
}

static json_t *parse_default(const char *text)
{
    json_error_t jerr;

    /* Python spellings of the JSON constants, as the signature is written Python-style. */
    if (strcmp(text, "None") == 0)
        return json_null();
    if (strcmp(text, "True") == 0)
        return json_true();
    if (strcmp(text, "False") == 0)
        return json_false();
    return json_loads(text, JSON_DECODE_ANY, &jerr);
}

static bool sig_has_name(const struct sig *s, const char *name)
{
    for (size_t i = 0; i < s->npos + s->nkwonly; i++) {
        if (strcmp(s->p[i].name, name) == 0)
            return true;
    }
    return (s->varargs != NULL && strcmp(s->varargs, name) == 0) ||
           (s->varkw != NULL && strcmp(s->varkw, name) == 0);
}

/* Parse "a, b=1, *args, c, d=None, **kw" (Python's def syntax; defaults are JSON literals or
 * None/True/False). Returns CC_OK or CC_EINVAL with the reason in err. */
static int sig_parse(const char *text, struct sig *s, struct cc_err *err)
{
    bool kwonly = false, bare_star = false;
    char *p;
    int rc = CC_OK;

    memset(s, 0, sizeof(*s));
    s->buf = cc_xstrdup(text);
    p = s->buf;
    if (*trim(p) == '\0')
        goto out;
    for (;;) {
        char *comma = next_comma(p);
        bool last = *comma == '\0';
        char *tok, *eq;

        *comma = '\0';
        tok = trim(p);
        if (s->varkw != NULL) {
            rc = cc_err_set(err, CC_EINVAL, "parameter after **%s", s->varkw);
            goto out;
        }
        if (strcmp(tok, "*") == 0) {
            if (kwonly) {
                rc = cc_err_set(err, CC_EINVAL, "* argument may appear only once");
                goto out;
            }
            kwonly = bare_star = true;
        } else if (strncmp(tok, "**", 2) == 0) {
            char *name = trim(tok + 2);

            if (!is_identifier(name) || sig_has_name(s, name)) {
                rc = cc_err_set(err, CC_EINVAL, "bad or duplicate **kwargs name '%s'", name);
                goto out;
            }
            s->varkw = name;
        } else if (tok[0] == '*') {
            char *name = trim(tok + 1);

            if (kwonly || !is_identifier(name) || sig_has_name(s, name)) {
                rc = cc_err_set(err, CC_EINVAL, "bad or repeated *args '%s'", name);
                goto out;
            }
            s->varargs = name;
            kwonly = true;
        } else {
            struct sig_param *prm;
            char *name = tok;

            if (s->npos + s->nkwonly >= TASKRUN_MAX_PARAMS) {
                rc = cc_err_set(err, CC_EINVAL, "more than %d parameters", TASKRUN_MAX_PARAMS);
                goto out;
            }
            eq = strchr(tok, '=');
            if (eq != NULL) {
                *eq = '\0';
                name = trim(tok);
            }
            if (!is_identifier(name) || sig_has_name(s, name)) {
                rc = cc_err_set(err, CC_EINVAL, "bad or duplicate parameter name '%s'", name);
                goto out;
            }
            /* Keyword-only parameters only ever follow the positional ones. */
            prm = kwonly ? &s->p[s->npos + s->nkwonly++] : &s->p[s->npos++];
            prm->name = name;
            prm->kind = kwonly ? SIG_KWONLY : SIG_POS;
            prm->dflt = NULL;
            if (eq != NULL) {
                char *dtext = trim(eq + 1);

                prm->dflt = parse_default(dtext);
                if (prm->dflt == NULL) {
                    rc = cc_err_set(err, CC_EINVAL, "default of '%s' is not a JSON literal: %s",
                                    name, dtext);
                    goto out;
                }
                if (!kwonly)
                    s->ndefaults_pos++;
            } else if (!kwonly && s->ndefaults_pos > 0) {
                rc = cc_err_set(err, CC_EINVAL,
                                "non-default argument '%s' follows default "
                                "argument",
                                name);
                goto out;
            }
            if (s->npos == 1 && !kwonly && strcmp(name, "self") == 0)
                s->has_self = true;
        }
        if (last)
            break;
        p = comma + 1;
    }
    if (bare_star && s->nkwonly == 0)
        rc = cc_err_set(err, CC_EINVAL, "named arguments must follow bare *");
out:
    if (rc != CC_OK)
        sig_deinit(s);
    return rc;
}

/* ---- Binding (CPython 3.11 initialize_locals) ---------------------------------------- */

/* Python's __name__ for the task function: the last dotted component of the task name. */
static const char *func_name(const struct cc_task_entry *e)
{
    const char *dot = strrchr(e->name, '.');

    return dot != NULL ? dot + 1 : e->name;
}

/* "'x'", "'x' and 'y'", "'x', 'y', and 'z'" as CPython's format_missing(). */
static char *join_names(const char **names, size_t n)
{
    size_t len = 1;
    char *out, *w;

    for (size_t i = 0; i < n; i++)
        len += strlen(names[i]) + 8;
    out = cc_xmalloc(len);
    w = out;
    for (size_t i = 0; i < n; i++) {
        const char *sep = "";

        if (i > 0)
            sep = n == 2 ? " and " : (i == n - 1 ? ", and " : ", ");
        w += sprintf(w, "%s'%s'", sep, names[i]);
    }
    *w = '\0';
    return out;
}

static int raise_type_error(struct taskrun_state *st, char *msg /* taken */)
{
    raise_msg(st, "builtins", "TypeError", msg);
    free(msg);
    return CC_TASK_FAILED;
}

static int missing_args(struct taskrun_state *st, const char *fname, const char *kind,
                        const char **names, size_t n)
{
    char *list = join_names(names, n);
    char *msg = format("%s() missing %zu required %s argument%s: %s", fname, n, kind,
                       n == 1 ? "" : "s", list);

    free(list);
    return raise_type_error(st, msg);
}

static int too_many_positional(struct taskrun_state *st, const char *fname, const struct sig *s,
                               size_t given, size_t kwonly_given)
{
    char sigtxt[64], kwtxt[96] = "";
    bool plural;

    if (s->ndefaults_pos > 0) {
        plural = true;
        snprintf(sigtxt, sizeof(sigtxt), "from %zu to %zu", s->npos - s->ndefaults_pos, s->npos);
    } else {
        plural = s->npos != 1;
        snprintf(sigtxt, sizeof(sigtxt), "%zu", s->npos);
    }
    if (kwonly_given > 0)
        snprintf(kwtxt, sizeof(kwtxt), " positional argument%s (and %zu keyword-only argument%s)",
                 given != 1 ? "s" : "", kwonly_given, kwonly_given != 1 ? "s" : "");
    return raise_type_error(st, format("%s() takes %s positional argument%s but %zu%s %s given",
                                       fname, sigtxt, plural ? "s" : "", given, kwtxt,
                                       given == 1 && kwonly_given == 0 ? "was" : "were"));
}

/* Fill st->argv from args/kwargs. Returns CC_OK or CC_TASK_FAILED (TypeError pending). */
static int bind(struct taskrun_state *st, const struct cc_task_entry *e, const struct sig *s,
                const json_t *args, const json_t *kwargs)
{
    /* slot[i] for parameter i (positional then keyword-only); borrowed until copied. */
    const json_t *slot[TASKRUN_MAX_PARAMS] = {0};
    const char *missing[TASKRUN_MAX_PARAMS];
    const char *fname = func_name(e);
    size_t nargs = json_array_size(args), self = s->has_self ? 1 : 0;
    size_t given = nargs + self, nparams = s->npos + s->nkwonly, nmissing = 0;
    size_t kwonly_given = 0, ncopy;
    json_t *extra = NULL, *varkw = NULL;
    const char *key;
    json_t *val;
    int rc = CC_OK;

    if (self)
        slot[0] = json_null(); /* the bound instance; a static singleton in jansson */
    ncopy = given < s->npos ? given : s->npos;
    for (size_t i = self; i < ncopy; i++)
        slot[i] = json_array_get(args, i - self);
    if (s->varargs != NULL) {
        extra = json_array();
        for (size_t i = ncopy; i < given; i++)
            json_array_append(extra, json_array_get(args, i - self));
    }
    if (s->varkw != NULL)
        varkw = json_object();

    /* jansson's iteration API takes a non-const object; it is only read here. */
    json_object_foreach((json_t *)kwargs, key, val)
    {
        size_t i;

        for (i = 0; i < nparams; i++) {
            if (strcmp(s->p[i].name, key) == 0)
                break;
        }
        if (i == nparams) {
            if (varkw == NULL) {
                rc = raise_type_error(
                    st, format("%s() got an unexpected keyword argument '%s'", fname, key));
                goto out;
            }
            json_object_set(varkw, key, val);
            continue;
        }
        if (slot[i] != NULL) {
            rc = raise_type_error(st,
                                  format("%s() got multiple values for argument '%s'", fname, key));
            goto out;
        }
        slot[i] = val;
    }

    if (given > s->npos && s->varargs == NULL) {
        for (size_t i = s->npos; i < nparams; i++)
            kwonly_given += slot[i] != NULL;
        rc = too_many_positional(st, fname, s, given, kwonly_given);
        goto out;
    }
    if (given < s->npos) {
        size_t m = s->npos - s->ndefaults_pos;

        for (size_t i = given; i < m; i++) {
            if (slot[i] == NULL)
                missing[nmissing++] = s->p[i].name;
        }
        if (nmissing > 0) {
            rc = missing_args(st, fname, "positional", missing, nmissing);
            goto out;
        }
    }
    for (size_t i = 0; i < nparams; i++) {
        if (slot[i] != NULL)
            continue;
        if (s->p[i].dflt != NULL)
            slot[i] = s->p[i].dflt;
        else if (s->p[i].kind == SIG_KWONLY)
            missing[nmissing++] = s->p[i].name;
    }
    if (nmissing > 0) {
        rc = missing_args(st, fname, "keyword-only", missing, nmissing);
        goto out;
    }

    /* Bound: named parameters in declaration order (self hidden), then *args, **kwargs. */
    st->argc = 0;
    for (size_t i = self; i < nparams; i++)
        st->argv[st->argc++] = json_incref((json_t *)slot[i]);
    if (extra != NULL) {
        st->argv[st->argc++] = extra;
        extra = NULL;
    }
    if (varkw != NULL) {
        st->argv[st->argc++] = varkw;
        varkw = NULL;
    }
out:
    json_decref(extra);
    json_decref(varkw);
    return rc;
}

/* ---- Task API (include/celeryc/task.h) ---------------------------------------------- */

const json_t *cc_task_arg(struct cc_task_ctx *ctx, size_t i)
{
    struct taskrun_state *st = state_of(ctx);

    if (!st->has_signature || i >= st->argc)
        return NULL;
    return st->argv[i];
}

/* The task API's raise functions are macros in task.h that add the call's location; the
 * parenthesised names below define the plain, exported functions. */
static int vraise_at(struct cc_task_ctx *ctx, const struct taskrun_loc *loc, const char *exc_module,
                     const char *exc_type, const char *fmt, va_list ap) CC_PRINTF(5, 0);

static int vraise_at(struct cc_task_ctx *ctx, const struct taskrun_loc *loc, const char *exc_module,
                     const char *exc_type, const char *fmt, va_list ap)
{
    struct taskrun_state *st = state_of(ctx);
    char *msg = vformat(fmt, ap);

    raise_msg(st, exc_module, exc_type, msg);
    free(msg);
    st->loc = *loc;
    return CC_TASK_FAILED;
}

int(cc_task_raise)(struct cc_task_ctx *ctx, const char *exc_module, const char *exc_type,
                   const char *fmt, ...)
{
    static const struct taskrun_loc unknown = {0};
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = vraise_at(ctx, &unknown, exc_module, exc_type, fmt, ap);
    va_end(ap);
    return rc;
}

int cc_task_raise_at(struct cc_task_ctx *ctx, const char *file, int line, const char *func,
                     const char *exc_module, const char *exc_type, const char *fmt, ...)
{
    const struct taskrun_loc loc = {file, line, func};
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = vraise_at(ctx, &loc, exc_module, exc_type, fmt, ap);
    va_end(ap);
    return rc;
}

int cc_task_raise_args_at(struct cc_task_ctx *ctx, const char *file, int line, const char *func,
                          const char *exc_module, const char *exc_type, json_t *exc_args)
{
    struct taskrun_state *st = state_of(ctx);

    if (exc_args != NULL && !json_is_array(exc_args)) {
        /* A lone value is what Python would see as exc_type(value). */
        json_t *wrapped = json_array();

        json_array_append_new(wrapped, exc_args);
        exc_args = wrapped;
    }
    exc_set(st, exc_module, exc_type, exc_args);
    st->loc = (struct taskrun_loc){file, line, func};
    return CC_TASK_FAILED;
}

int(cc_task_raise_args)(struct cc_task_ctx *ctx, const char *exc_module, const char *exc_type,
                        json_t *exc_args)
{
    return cc_task_raise_args_at(ctx, NULL, 0, NULL, exc_module, exc_type, exc_args);
}

void cc_task_set_traceback(struct cc_task_ctx *ctx, const char *text)
{
    struct taskrun_state *st = state_of(ctx);

    free(st->traceback);
    st->traceback = text != NULL ? cc_xstrdup(text) : NULL;
}

/* Resolve CC_MAX_RETRIES_* to a count, or TASKRUN_RETRY_UNLIMITED. Only ever called with the
 * effective value (the call's, else the entry's), where 0 means Celery's default of 3. */
static int resolve_max_retries(int v)
{
    switch (v) {
    case CC_MAX_RETRIES_DEFAULT:
        return TASKRUN_DEFAULT_RETRY;
    case CC_MAX_RETRIES_NONE:
        return 0;
    case CC_MAX_RETRIES_FOREVER:
        return TASKRUN_RETRY_UNLIMITED;
    default:
        return v > 0 ? v : 0;
    }
}

/* Task.retry(): decide between a retry and a failure (max_retries exhausted). Takes ownership
 * of exc_args. exc_type NULL: no exception given. countdown_s < 0: none given (eta, else
 * default_retry_delay); 0 retries at once, as countdown=0 does in Celery. */
static int do_retry(struct taskrun_state *st, const struct cc_task_ctx *ctx, double countdown_s,
                    const char *eta, int max_retries, const char *exc_module, const char *exc_type,
                    json_t *exc_args)
{
    const struct cc_task_entry *e = ctx->entry;
    const struct cc_task_request *req = ctx->req;
    int retries = req->retries + 1;
    int max = resolve_max_retries(max_retries != 0 ? max_retries : e->max_retries);

    /* A retry replaces whatever the task raised before calling it. */
    exc_clear(&st->exc);
    if (max != TASKRUN_RETRY_UNLIMITED && retries > max) {
        char *argsrepr, *kwargsrepr, *msg;

        if (exc_type != NULL) {
            /* Celery re-raises the given exception: raise_with_context(exc). */
            exc_set(st, exc_module, exc_type, exc_args);
            return CC_TASK_FAILED;
        }
        json_decref(exc_args);
        /* "Can't retry {name}[{id}] args:{S.args} kwargs:{S.kwargs}": S.args is a tuple. */
        argsrepr = st->raw_args != NULL ? cc_pyrepr(st->raw_args, 1, 0) : cc_xstrdup("()");
        kwargsrepr = st->raw_kwargs != NULL ? cc_pyrepr(st->raw_kwargs, 0, 0) : cc_xstrdup("{}");
        msg = format("Can't retry %s[%s] args:%s kwargs:%s", e->name, str_or(req->id, ""),
                     str_or(argsrepr, "()"), str_or(kwargsrepr, "{}"));
        raise_msg(st, "celery.exceptions", "MaxRetriesExceededError", msg);
        free(msg);
        free(argsrepr);
        free(kwargsrepr);
        return CC_TASK_FAILED;
    }
    if (exc_type != NULL)
        exc_set(st, exc_module, exc_type, exc_args);
    else
        json_decref(exc_args);
    st->retry_requested = true;
    free(st->retry_eta);
    st->retry_eta = NULL;
    if (eta != NULL) {
        st->retry_eta = cc_xstrdup(eta);
        st->retry_countdown_s = 0;
    } else if (countdown_s >= 0) {
        st->retry_countdown_s = countdown_s;
    } else {
        st->retry_countdown_s =
            e->default_retry_delay_s > 0 ? e->default_retry_delay_s : TASKRUN_DEFAULT_DELAY;
    }
    return CC_TASK_RETRY;
}

/* [issue 14] The countdown a task gave, as do_retry wants it (< 0 = none given). task.h: 0
 * takes the task's default_retry_delay. A task often passes a number from its arguments,
 * so every double is handled as Python's Task.retry would: negative = at once (eta in the
 * past), NaN = none given, with a warning (timedelta(seconds=nan) raises ValueError there);
 * a huge one is kept and clamped where the eta is computed (worker_publish_retry). */
static double retry_countdown_arg(struct cc_task_ctx *ctx, double countdown_s)
{
    if (isnan(countdown_s)) {
        cc_task_log(ctx, CC_TASK_LOG_WARNING,
                    "retry: countdown is NaN; using the task's default retry delay");
        return -1;
    }
    if (countdown_s < 0)
        return 0;
    return countdown_s > 0 ? countdown_s : -1;
}

int cc_task_retry_at(struct cc_task_ctx *ctx, const char *file, int line, const char *func,
                     const struct cc_task_retry_opts *opts)
{
    static const struct cc_task_retry_opts none = {0};
    struct taskrun_state *st = state_of(ctx);
    int rc;

    if (opts == NULL)
        opts = &none;
    rc =
        do_retry(st, ctx, retry_countdown_arg(ctx, opts->countdown_s), opts->eta, opts->max_retries,
                 opts->exc_type != NULL ? opts->exc_module : NULL, opts->exc_type, opts->exc_args);
    /* Retry (or MaxRetriesExceededError) is raised where the task called retry(). */
    st->loc = (struct taskrun_loc){file, line, func};
    return rc;
}

int(cc_task_retry)(struct cc_task_ctx *ctx, const struct cc_task_retry_opts *opts)
{
    return cc_task_retry_at(ctx, NULL, 0, NULL, opts);
}

int cc_task_reject(struct cc_task_ctx *ctx, const char *reason, bool requeue)
{
    struct taskrun_state *st = state_of(ctx);

    st->reject_requested = true;
    st->reject_requeue = requeue;
    free(st->reject_reason);
    st->reject_reason = reason != NULL ? cc_xstrdup(reason) : NULL;
    return CC_TASK_REJECT;
}

int cc_task_ignore(struct cc_task_ctx *ctx)
{
    state_of(ctx)->ignore_requested = true;
    return CC_TASK_IGNORE;
}

/* ---- [canvas] Sending and progress -------------------------------------------------- */

void cc_taskrun_set_hooks(const struct cc_task_hooks *h)
{
    taskrun_hooks = h;
}

int cc_task_send(struct cc_task_ctx *ctx, json_t *sig, char out_id[37])
{
    struct taskrun_state *st = state_of(ctx);
    const struct cc_task_hooks *h = taskrun_hooks;
    struct cc_err err = {0};
    int rc;

    if (out_id != NULL)
        out_id[0] = '\0';
    if (h == NULL || h->send == NULL) {
        json_decref(sig);
        return CC_EUNSUPP;
    }
    if (!json_is_object(sig)) {
        json_decref(sig);
        cc_task_log(ctx, CC_TASK_LOG_ERROR, "cc_task_send: not a signature");
        return CC_EINVAL;
    }
    if (st->children == NULL)
        st->children = json_array();
    rc = h->send(h->ud, ctx->req, sig, st->children, out_id, &err);
    if (rc != CC_OK)
        cc_task_log(ctx, CC_TASK_LOG_ERROR, "cc_task_send: %s", err.msg);
    json_decref(sig);
    return rc;
}

int cc_task_update_state(struct cc_task_ctx *ctx, const char *state, json_t *meta)
{
    struct taskrun_state *st = state_of(ctx);
    const struct cc_task_hooks *h = taskrun_hooks;
    struct cc_err err = {0};
    json_t *empty = NULL;
    int rc;

    if (state == NULL || state[0] == '\0') {
        json_decref(meta);
        return CC_EINVAL;
    }
    if (h == NULL || h->update_state == NULL) {
        json_decref(meta);
        return CC_EUNSUPP;
    }
    if (st->children == NULL)
        empty = json_array();
    rc = h->update_state(h->ud, ctx->req, state, meta != NULL ? meta : json_null(),
                         st->children != NULL ? st->children : empty, &err);
    if (rc != CC_OK)
        cc_task_log(ctx, CC_TASK_LOG_ERROR, "update_state(%s): %s", state, err.msg);
    json_decref(empty);
    json_decref(meta);
    return rc;
}

void *cc_task_alloc(struct cc_task_ctx *ctx, size_t size)
{
    struct taskrun_state *st = state_of(ctx);
    const size_t align = alignof(max_align_t);
    struct taskrun_block *b = st->arena;
    size_t need = (size + align - 1) / align * align;
    void *p;

    if (need == 0)
        need = align;
    if (b == NULL || b->cap - b->used < need) {
        size_t cap = need > TASKRUN_ARENA_CHUNK ? need : TASKRUN_ARENA_CHUNK;

        b = cc_xmalloc(sizeof(*b) + cap);
        b->cap = cap;
        b->used = 0;
        if (st->arena != NULL && need > TASKRUN_ARENA_CHUNK) {
            /* A large one-off block goes behind the current chunk so the chunk keeps
             * serving small requests. */
            b->next = st->arena->next;
            st->arena->next = b;
        } else {
            b->next = st->arena;
            st->arena = b;
        }
    }
    p = (char *)b->data + b->used;
    b->used += need;
    return p;
}

static void arena_free(struct taskrun_state *st)
{
    while (st->arena != NULL) {
        struct taskrun_block *next = st->arena->next;

        free(st->arena);
        st->arena = next;
    }
}

void cc_task_log(struct cc_task_ctx *ctx, int level, const char *fmt, ...)
{
    const struct cc_task_hooks *h = taskrun_hooks;
    va_list ap;

    va_start(ap, fmt);
    /* [jobrun] a job run's lines also go to its run logs (formatted once for both) */
    if (h != NULL && h->run_id != NULL && h->log != NULL &&
        (level >= CC_TASK_LOG_INFO || cc_log_enabled(level))) {
        char *msg = vformat(fmt, ap);

        cc_log_task(level, ctx->entry->name, str_or(ctx->req->id, ""), "%s", msg);
        h->log(h->ud, level, msg);
        free(msg);
    } else {
        cc_log_taskv(level, ctx->entry->name, str_or(ctx->req->id, ""), fmt, ap);
    }
    va_end(ap);
}

/* ---- [stats] The worker's configuration ----------------------------------------------- */

static const struct cc_config *taskrun_config;

void cc_taskrun_set_config(const struct cc_config *cfg)
{
    taskrun_config = cfg;
}

const struct cc_config *cc_task_config(void)
{
    return taskrun_config;
}

/* ---- [jobrun] Job runs ------------------------------------------------------------- */

const char *cc_task_run_id(struct cc_task_ctx *ctx)
{
    (void)state_of(ctx);
    return taskrun_hooks != NULL ? taskrun_hooks->run_id : NULL;
}

void cc_task_run_progress(struct cc_task_ctx *ctx, int64_t processed, int64_t errored)
{
    struct taskrun_state *st = state_of(ctx);

    if (processed >= 0)
        st->run_processed = processed;
    if (errored >= 0)
        st->run_errored = errored;
    if (taskrun_hooks != NULL && taskrun_hooks->progress != NULL)
        taskrun_hooks->progress(taskrun_hooks->ud, st->run_processed, st->run_errored);
}

void cc_task_run_summary(struct cc_task_ctx *ctx, json_t *summary)
{
    struct taskrun_state *st = state_of(ctx);

    if (!json_is_object(summary)) {
        json_decref(summary);
        return;
    }
    json_decref(st->run_summary);
    st->run_summary = summary;
}

static void run_report(struct taskrun_state *st, char status, const char *fmt, va_list ap)
    CC_PRINTF(3, 0);

static void run_report(struct taskrun_state *st, char status, const char *fmt, va_list ap)
{
    if (st->run_status == 'P' && status == 'W')
        return; /* a partial success outranks a warning */
    free(st->run_message);
    st->run_message = vformat(fmt, ap);
    st->run_status = status;
}

void cc_task_run_partial(struct cc_task_ctx *ctx, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    run_report(state_of(ctx), 'P', fmt, ap);
    va_end(ap);
}

void cc_task_run_warning(struct cc_task_ctx *ctx, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    run_report(state_of(ctx), 'W', fmt, ap);
    va_end(ap);
}

/* ---- Time limits -------------------------------------------------------------------- */

void cc_taskrun_set_soft_limit_flag(atomic_int *flag)
{
    taskrun_soft_flag = flag;
}

static bool soft_limit_hit(void)
{
    return taskrun_soft_flag != NULL && atomic_load(taskrun_soft_flag) != 0;
}

bool cc_task_soft_limit_exceeded(struct cc_task_ctx *ctx)
{
    struct taskrun_state *st = state_of(ctx);

    if (!soft_limit_hit())
        return false;
    st->soft_limit_seen = true;
    return true;
}

bool cc_taskrun_acks_on_failure_or_timeout(const struct cc_task_entry *e, bool dflt)
{
    if (e == NULL || e->acks_on_failure_or_timeout == CC_DEFAULT)
        return dflt;
    return e->acks_on_failure_or_timeout == CC_YES;
}

bool cc_taskrun_reject_on_worker_lost(const struct cc_task_entry *e, bool dflt)
{
    if (e == NULL || e->reject_on_worker_lost == CC_DEFAULT)
        return dflt;
    return e->reject_on_worker_lost == CC_YES;
}

/* The soft limit passed and the task never asked: in Python, SoftTimeLimitExceeded() would
 * have been raised inside the task at that moment and unwound it, so whatever the task did
 * afterwards (return a value, raise, retry, reject) never happened. Replace the outcome with
 * that exception, stored exactly as billiard raises it: no arguments, and str() is
 * "SoftTimeLimitExceeded()" (billiard/exceptions.py), hence the traceback's last line. */
static int soft_limit_override(struct taskrun_state *st, json_t **result)
{
    json_decref(*result);
    *result = NULL;
    st->retry_requested = false;
    free(st->retry_eta);
    st->retry_eta = NULL;
    st->reject_requested = false;
    st->ignore_requested = false;
    free(st->traceback);
    st->traceback = NULL;
    /* Raised wherever the task was at that moment: unknown, so the frame names the task. */
    memset(&st->loc, 0, sizeof(st->loc));
    exc_set(st, "billiard.exceptions", "SoftTimeLimitExceeded", json_array());
    return CC_TASK_FAILED;
}

/* ---- The table --------------------------------------------------------------------- */

static const struct cc_task_entry **lookup_slots;
static size_t lookup_mask;

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */

    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

size_t cc_taskrun_count(void)
{
    size_t n = 0;

    while (cc_task_table[n] != NULL)
        n++;
    return n;
}

static void lookup_build(void)
{
    size_t n = cc_taskrun_count(), cap = 16;

    while (cap < 2 * n)
        cap *= 2;
    lookup_slots = cc_xcalloc(cap, sizeof(*lookup_slots));
    lookup_mask = cap - 1;
    for (size_t i = 0; i < n; i++) {
        const struct cc_task_entry *e = cc_task_table[i];
        size_t h = (size_t)hash_name(e->name) & lookup_mask;

        while (lookup_slots[h] != NULL && strcmp(lookup_slots[h]->name, e->name) != 0)
            h = (h + 1) & lookup_mask;
        if (lookup_slots[h] == NULL) /* first entry wins; cc_taskrun_table_check flags dups */
            lookup_slots[h] = e;
    }
}

const struct cc_task_entry *cc_taskrun_lookup(const char *name)
{
    size_t h;

    if (name == NULL)
        return NULL;
    if (lookup_slots == NULL)
        lookup_build();
    h = (size_t)hash_name(name) & lookup_mask;
    while (lookup_slots[h] != NULL) {
        if (strcmp(lookup_slots[h]->name, name) == 0)
            return lookup_slots[h];
        h = (h + 1) & lookup_mask;
    }
    return NULL;
}

int cc_taskrun_table_check(struct cc_err *err)
{
    size_t n = cc_taskrun_count();

    for (size_t i = 0; i < n; i++) {
        const struct cc_task_entry *e = cc_task_table[i];
        struct cc_err serr = {0};
        struct sig s;

        if (e->name == NULL || e->name[0] == '\0' || e->run == NULL)
            return cc_err_set(err, CC_EINVAL, "task table row %zu: no name or no run", i);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(cc_task_table[j]->name, e->name) == 0)
                return cc_err_set(err, CC_EINVAL, "task %s: registered twice", e->name);
        }
        if (e->signature != NULL) {
            if (sig_parse(e->signature, &s, &serr) != CC_OK)
                return cc_err_set(err, CC_EINVAL, "task %s: bad signature: %s", e->name, serr.msg);
            sig_deinit(&s);
        }
        if (e->max_retries < CC_MAX_RETRIES_FOREVER)
            return cc_err_set(err, CC_EINVAL, "task %s: bad max_retries %d", e->name,
                              e->max_retries);
        /* [issue 14] `!(x >= 0 && x <= max)` also catches NaN; backoffs are cast to integers. */
        if (!(e->retry_backoff_s >= 0 && e->retry_backoff_s <= CC_ISOTIME_SPAN_MAX_S) ||
            !(e->retry_backoff_max_s >= 0 && e->retry_backoff_max_s <= CC_ISOTIME_SPAN_MAX_S) ||
            !(e->default_retry_delay_s >= 0) || !(e->time_limit_s >= 0) ||
            !(e->soft_time_limit_s >= 0))
            return cc_err_set(err, CC_EINVAL, "task %s: negative, NaN or huge delay or limit",
                              e->name);
        for (const char *const *a = e->autoretry_for; a != NULL && *a != NULL; a++) {
            if (strcmp(*a, "*") != 0 && strchr(*a, '.') == NULL)
                return cc_err_set(err, CC_EINVAL,
                                  "task %s: autoretry_for '%s' is not module.Type or *", e->name,
                                  *a);
        }
    }
    return CC_OK;
}

/* ---- Outcome ----------------------------------------------------------------------- */

/* Built-in exception classes that have subclasses among the builtins, for autoretry_for
 * matching: `except LookupError` catches KeyError. Children listed with their parent. */
static const struct {
    const char *child;
    const char *parent;
} builtin_parents[] = {
    {"KeyError", "LookupError"},
    {"IndexError", "LookupError"},
    {"ZeroDivisionError", "ArithmeticError"},
    {"OverflowError", "ArithmeticError"},
    {"FloatingPointError", "ArithmeticError"},
    {"UnicodeError", "ValueError"},
    {"UnicodeDecodeError", "UnicodeError"},
    {"UnicodeEncodeError", "UnicodeError"},
    {"NotImplementedError", "RuntimeError"},
    {"RecursionError", "RuntimeError"},
    {"ConnectionError", "OSError"},
    {"BrokenPipeError", "ConnectionError"},
    {"ConnectionAbortedError", "ConnectionError"},
    {"ConnectionRefusedError", "ConnectionError"},
    {"ConnectionResetError", "ConnectionError"},
    {"FileNotFoundError", "OSError"},
    {"FileExistsError", "OSError"},
    {"PermissionError", "OSError"},
    {"TimeoutError", "OSError"},
    {"IsADirectoryError", "OSError"},
    {"NotADirectoryError", "OSError"},
    {"InterruptedError", "OSError"},
    {"ModuleNotFoundError", "ImportError"},
};

static bool exc_matches(const char *module, const char *type, const char *pattern)
{
    const char *dot;
    bool is_builtin = strcmp(module, "builtins") == 0;

    if (strcmp(pattern, "*") == 0)
        return true;
    dot = strrchr(pattern, '.');
    if (dot == NULL)
        return false;
    if ((size_t)(dot - pattern) == strlen(module) &&
        strncmp(pattern, module, (size_t)(dot - pattern)) == 0 && strcmp(dot + 1, type) == 0)
        return true;
    if (strncmp(pattern, "builtins.", 9) != 0)
        return false;
    /* Every exception a task raises is an Exception subclass (BaseException-only classes
     * are the interpreter's: SystemExit, KeyboardInterrupt, GeneratorExit). */
    if (strcmp(dot + 1, "Exception") == 0)
        return true;
    if (!is_builtin)
        return false;
    for (size_t i = 0; i < CC_ARRAY_LEN(builtin_parents); i++) {
        if (strcmp(builtin_parents[i].child, type) == 0)
            return exc_matches(module, builtin_parents[i].parent, pattern);
    }
    return false;
}

/* Per thread (--pool threads runs tasks in several threads at once). */
static _Thread_local uint64_t jitter_state;

/* random.randrange(n + 1): uniform in [0, n]. xorshift64*, seeded once per thread and process
 * (a forked child reseeds because the pid differs; each thread has its own state, seeded
 * with its own address too). */
static long long rand_upto(long long n)
{
    static _Thread_local pid_t seeded_pid;
    uint64_t x;

    if (seeded_pid != getpid()) {
        seeded_pid = getpid();
        jitter_state = (uint64_t)cc_mono_us() ^ ((uint64_t)seeded_pid << 32) ^
                       (uint64_t)(uintptr_t)&jitter_state ^ 0x9E3779B97F4A7C15ULL;
        if (jitter_state == 0)
            jitter_state = 1;
    }
    x = jitter_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    jitter_state = x;
    return (long long)((x * 2685821657736338717ULL) % (uint64_t)(n + 1));
}

/* celery/app/autoretry.py: a failure matching autoretry_for becomes task.retry(exc=exc,
 * countdown=backoff). Returns the new status. */
static int maybe_autoretry(struct taskrun_state *st, const struct cc_task_ctx *ctx, int status)
{
    const struct cc_task_entry *e = ctx->entry;
    bool match = false;
    double countdown = -1;
    /* Celery coerces both with int(): retry_backoff=True is 1, 0.5 disables it. */
    long long factor = (long long)e->retry_backoff_s;
    long long maximum =
        e->retry_backoff_max_s > 0 ? (long long)e->retry_backoff_max_s : TASKRUN_BACKOFF_MAX;
    json_t *args;
    char *module, *type;

    if (status != CC_TASK_FAILED || !st->exc.is_set || e->autoretry_for == NULL)
        return status;
    for (const char *const *a = e->autoretry_for; *a != NULL && !match; a++)
        match = exc_matches(st->exc.module, st->exc.type, *a);
    if (!match)
        return status;
    if (factor > 0) {
        /* get_exponential_backoff_interval(factor, retries, maximum, full_jitter) */
        int r = ctx->req->retries;
        long long c = maximum;

        if (r < 62 && factor <= (LLONG_MAX >> r))
            c = factor << r;
        if (c > maximum)
            c = maximum;
        if (e->retry_jitter != CC_NO)
            c = rand_upto(c);
        countdown = (double)(c > 0 ? c : 0);
    }
    module = st->exc.module;
    type = st->exc.type;
    args = st->exc.args;
    memset(&st->exc, 0, sizeof(st->exc));
    status = do_retry(st, ctx, countdown, NULL, 0, module, type, args);
    free(module);
    free(type);
    return status;
}

/* ---- Tracebacks ----------------------------------------------------------------------
 * The one place celeryc writes the traceback text of a task's failure or retry (the result's
 * `traceback`, the task-failed / task-retried events' `traceback`, hence `celery result
 * --traceback`, Flower's task page, `celery events`, AsyncResult.traceback). Its shape is
 * Python's, one frame deep, so that tools that show or parse tracebacks (tblib's
 * Traceback.from_string with task_remote_tracebacks) handle it:
 *     Traceback (most recent call last):
 *       File "tasks/demo.c", line 120, in demo_fail
 *     ValueError: boom
 * The frame is the cc_task_raise / cc_task_retry call (task.h macros); when the worker raised
 * on the task's behalf (argument binding, the soft time limit, a bad return code) or the task
 * called a plain function, it is File "<celeryc>", line 0, in <task name>. The last line is
 * traceback.format_exception_only's (cc_pyrepr_exc_line). Outcomes Celery stores without a
 * traceback (hard time limit, worker lost, revoked, NotRegistered) are built elsewhere with
 * none, as Celery's. */
static char *traceback_text(const struct taskrun_loc *loc, const struct cc_task_entry *e,
                            const char *last_line);

char *cc_taskrun_traceback(const char *task_name, const char *file, int line, const char *func,
                           const char *exc_module, const char *exc_type, const json_t *exc_args)
{
    const struct taskrun_loc loc = {file, line, func};
    const struct cc_task_entry e = {.name = task_name != NULL ? task_name : "?"};
    char *last = cc_pyrepr_exc_line(exc_module, exc_type, exc_args), *tb;

    tb = traceback_text(&loc, &e, last != NULL ? last : str_or(exc_type, "Exception"));
    free(last);
    return tb;
}

static char *traceback_text(const struct taskrun_loc *loc, const struct cc_task_entry *e,
                            const char *last_line)
{
    if (loc->file != NULL)
        return format("Traceback (most recent call last):\n  File \"%s\", line %d, in %s\n%s\n",
                      loc->file, loc->line, str_or(loc->func, e->name), last_line);
    return format("Traceback (most recent call last):\n  File \"<celeryc>\", line 0, in %s\n%s\n",
                  e->name, last_line);
}

static char *exc_line(const struct taskrun_exc *x)
{
    char *line = cc_pyrepr_exc_line(x->module, x->type, x->args);

    return line != NULL ? line : cc_xstrdup(x->type); /* NULL only on OOM */
}

/* Python's repr of a number of seconds as Retry.humanize() shows it ("in 5s", "in 0.1s"). */
static void seconds_repr(double v, char *buf, size_t len)
{
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, len, "%lld", (long long)v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static void outcome_exception(struct taskrun_state *st, const struct cc_task_entry *e,
                              struct cc_task_outcome *out)
{
    char *line;

    out->exc = cc_result_exc_new(st->exc.module, st->exc.type, json_deep_copy(st->exc.args));
    out->exc_repr = cc_pyrepr_exc(st->exc.type, st->exc.args);
    if (st->traceback != NULL) {
        out->traceback = cc_xstrdup(st->traceback);
        return;
    }
    line = exc_line(&st->exc);
    out->traceback = traceback_text(&st->loc, e, line);
    free(line);
}

static void outcome_retry(struct taskrun_state *st, const struct cc_task_entry *e,
                          struct cc_task_outcome *out)
{
    char when[64], *line, *inner = NULL;

    out->retry_countdown_s = st->retry_countdown_s;
    out->retry_eta = st->retry_eta != NULL ? cc_xstrdup(st->retry_eta) : NULL;
    if (st->exc.is_set) {
        out->exc = cc_result_exc_new(st->exc.module, st->exc.type, json_deep_copy(st->exc.args));
        out->exc_repr = cc_pyrepr_exc(st->exc.type, st->exc.args);
        inner = out->exc_repr;
    } else {
        /* Celery stores the RETRY state with result None when retry() had no exc, and the
         * task-retried event carries safe_repr(None). */
        out->exc = json_null();
        out->exc_repr = cc_xstrdup("None");
    }
    if (st->traceback != NULL) {
        out->traceback = cc_xstrdup(st->traceback);
        return;
    }
    /* The traceback Celery records is the Retry predicate's: str(Retry). */
    if (st->retry_eta != NULL)
        snprintf(when, sizeof(when), "at %s", st->retry_eta);
    else {
        char secs[40];

        seconds_repr(st->retry_countdown_s, secs, sizeof(secs));
        snprintf(when, sizeof(when), "in %ss", secs);
    }
    line = format("celery.exceptions.Retry: Retry %s%s%s", when, inner != NULL ? ": " : "",
                  inner != NULL ? inner : "");
    out->traceback = traceback_text(&st->loc, e, line);
    free(line);
}

int cc_taskrun_invoke(const struct cc_task_entry *e, const struct cc_task_request *req,
                      const json_t *args, const json_t *kwargs, struct cc_task_outcome *out)
{
    static const struct cc_task_request empty_req = {.group_index = -1};
    struct taskrun_state st;
    struct cc_task_ctx ctx;
    struct sig s;
    json_t *empty_args = NULL, *empty_kwargs = NULL, *result = NULL;
    int64_t t0;
    int rc;

    CC_ASSERT(e != NULL && out != NULL);
    memset(out, 0, sizeof(*out));
    memset(&st, 0, sizeof(st));
    memset(&s, 0, sizeof(s));
    ctx.req = req != NULL ? req : &empty_req;
    ctx.entry = e;
    ctx.priv = &st;
    st.raw_args = args;
    st.raw_kwargs = kwargs;
    st.run_processed = st.run_errored = -1; /* [jobrun] not reported */
    if (args == NULL)
        args = empty_args = json_array();
    if (kwargs == NULL)
        kwargs = empty_kwargs = json_object();

    t0 = cc_mono_us();
    if (!json_is_array(args) || !json_is_object(kwargs)) {
        rc = raise_msg(&st, "builtins", "TypeError",
                       !json_is_array(args) ? "task args must be a list"
                                            : "task kwargs must be a dict");
    } else if (e->signature != NULL) {
        struct cc_err serr = {0};

        st.has_signature = true;
        if (sig_parse(e->signature, &s, &serr) != CC_OK) {
            char *msg = format("task %s: bad signature: %s", e->name, serr.msg);

            rc = raise_msg(&st, "builtins", "RuntimeError", msg);
            free(msg);
        } else
            rc = bind(&st, e, &s, args, kwargs);
        if (rc == CC_OK)
            rc = e->run(&ctx, args, kwargs, &result);
    } else {
        rc = e->run(&ctx, args, kwargs, &result);
    }
    out->runtime_s = (double)(cc_mono_us() - t0) / 1e6;
    arena_free(&st);
    if (soft_limit_hit() && !st.soft_limit_seen)
        rc = soft_limit_override(&st, &result);

    /* Normalise what the task returned into one of the five outcomes. */
    switch (rc) {
    case CC_OK:
        break;
    case CC_TASK_FAILED:
        if (!st.exc.is_set)
            rc = raise_msg(&st, "builtins", "RuntimeError",
                           "task returned CC_TASK_FAILED without raising an exception");
        break;
    case CC_TASK_RETRY:
        /* cc_task_retry() past max_retries returned CC_TASK_FAILED with the exception set;
         * a task that returns CC_TASK_RETRY anyway still fails with that exception. */
        if (!st.retry_requested && st.exc.is_set)
            rc = CC_TASK_FAILED;
        else if (!st.retry_requested)
            rc = raise_msg(&st, "builtins", "RuntimeError",
                           "task returned CC_TASK_RETRY without calling cc_task_retry()");
        break;
    case CC_TASK_REJECT:
        if (!st.reject_requested)
            rc = raise_msg(&st, "builtins", "RuntimeError",
                           "task returned CC_TASK_REJECT without calling cc_task_reject()");
        break;
    case CC_TASK_IGNORE:
        break; /* nothing to carry */
    default:
        rc = raise_msg(&st, "builtins", "RuntimeError", cc_strerror(rc));
        break;
    }
    if (rc != CC_OK && result != NULL) {
        json_decref(result);
        result = NULL;
    }
    rc = maybe_autoretry(&st, &ctx, rc);

    out->status = rc;
    switch (rc) {
    case CC_OK:
        out->result = result != NULL ? result : json_null();
        result = NULL;
        break;
    case CC_TASK_FAILED:
        outcome_exception(&st, e, out);
        break;
    case CC_TASK_RETRY:
        outcome_retry(&st, e, out);
        break;
    case CC_TASK_REJECT: {
        /* celery.exceptions.Reject(reason, requeue); nothing is stored, the worker logs
         * repr(): "reject requeue=False: reason". */
        json_t *rargs = json_array();

        json_array_append_new(rargs, st.reject_reason != NULL ? json_string_lossy(st.reject_reason)
                                                              : json_null());
        json_array_append_new(rargs, json_boolean(st.reject_requeue));
        out->reject_requeue = st.reject_requeue;
        out->exc = cc_result_exc_new("celery.exceptions", "Reject", rargs);
        out->exc_repr = format("reject requeue=%s: %s", st.reject_requeue ? "True" : "False",
                               str_or(st.reject_reason, "None"));
        break;
    }
    default:
        break;
    }

    out->children = st.children; /* [canvas] kept whatever the outcome (Celery: request.children) */
    st.children = NULL;
    out->run_status = st.run_status; /* [jobrun] the executor decides what applies */
    out->run_message = st.run_message;
    out->run_processed = st.run_processed;
    out->run_errored = st.run_errored;
    out->run_summary = st.run_summary;
    json_decref(result);
    for (size_t i = 0; i < st.argc; i++)
        json_decref(st.argv[i]);
    sig_deinit(&s);
    exc_clear(&st.exc);
    free(st.traceback);
    free(st.retry_eta);
    free(st.reject_reason);
    json_decref(empty_args);
    json_decref(empty_kwargs);
    return out->status;
}

void cc_taskrun_outcome_deinit(struct cc_task_outcome *o)
{
    if (o == NULL)
        return;
    json_decref(o->result);
    json_decref(o->exc);
    free(o->exc_repr);
    free(o->traceback);
    free(o->retry_eta);
    json_decref(o->children);
    free(o->run_message); /* [jobrun] */
    json_decref(o->run_summary);
    memset(o, 0, sizeof(*o));
}
