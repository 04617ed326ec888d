/* Canvas on the worker side (see canvas.h): a small, faithful model of Celery 5.2's
 * Signature / _chain / group / _chord apply_async family, working on the signature dicts
 * themselves (jansson objects keep insertion order, as Python dicts do), so every dict that
 * ends up inside a published message (embed.chain, embed.chord, link, link_error) has the
 * keys, values and key order Python would serialise.
 *
 * The model: a "signature object" is a JSON object shaped like Celery's Signature dict.
 * Python shares objects by reference (the chord body is the same object in every header
 * member's options, frozen later); jansson references give the same sharing. Inputs are
 * deep-copied on entry so nothing the caller owns is mutated. Python tuples and lists both
 * serialise to JSON arrays, but argsrepr differs ("(2,)" vs "[2]"), so arrays created as
 * tuples (clone, _merge) are remembered in a small pointer set.
 *
 * Results (AsyncResult / GroupResult) are kept in struct res nodes, owned by the apply
 * context, because Python links them after creation (prev_res.parent = res).
 */
#include "canvas.h"
#include "celeryc/canvas.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "isotime.h"
#include "pyrepr.h"

#define ARGSREPR_MAX 1024 /* Celery's argsrepr_maxsize / kwargsrepr_maxsize */
#define DEPTH_MAX    64   /* nesting bound: deeper canvases are refused, never recursed */

enum sig_kind { SIG_TASK, SIG_CHAIN, SIG_GROUP, SIG_CHORD };

struct res {
    bool is_group;
    char *id;
    struct res *parent;
    struct res **items; /* GroupResult.results */
    size_t n, cap;
    struct res *next_alloc;
};

struct apply {
    struct cc_canvas_plan *plan;
    const struct cc_canvas_ctx *ctx;
    struct cc_err *err;
    struct res *all;     /* every res node, freed at the end */
    const json_t **tups; /* arrays that are Python tuples */
    size_t ntups, captups;
    int depth;
    json_t *children; /* the running task's request.children (add_trail) */
    json_t *empty;    /* a shared [] for absent headers (never modified) */
};

/* ---- small helpers --------------------------------------------------------------------- */

static int oom(struct apply *A)
{
    return cc_err_set(A->err, CC_ENOMEM, "out of memory building canvas");
}

static struct res *res_new(struct apply *A, const char *id, bool is_group)
{
    struct res *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return NULL;
    r->id = strdup(id ? id : "");
    if (r->id == NULL) {
        free(r);
        return NULL;
    }
    r->is_group = is_group;
    r->next_alloc = A->all;
    A->all = r;
    return r;
}

static int res_add(struct res *g, struct res *m)
{
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 4;
        struct res **p = realloc(g->items, cap * sizeof(*p));

        if (p == NULL)
            return CC_ENOMEM;
        g->items = p;
        g->cap = cap;
    }
    g->items[g->n++] = m;
    return CC_OK;
}

/* result.as_tuple(): ((id, parent_tuple), None) or ((id, parent_tuple), [members]). */
static json_t *res_tuple(const struct res *r, int depth)
{
    json_t *parent, *t, *rest;

    if (depth > DEPTH_MAX * 4)
        return NULL;
    parent = r->parent ? res_tuple(r->parent, depth + 1) : json_null();
    if (parent == NULL)
        return NULL;
    if (r->is_group) {
        rest = json_array();
        for (size_t i = 0; rest != NULL && i < r->n; i++) {
            json_t *m = res_tuple(r->items[i], depth + 1);

            if (m == NULL || json_array_append_new(rest, m) != 0) {
                json_decref(rest);
                rest = NULL;
            }
        }
    } else {
        rest = json_null();
    }
    if (rest == NULL) {
        json_decref(parent);
        return NULL;
    }
    t = json_pack("[[so]o]", r->id, parent, rest);
    return t;
}

static int trail(struct apply *A, const struct res *r)
{
    json_t *t = res_tuple(r, 0);

    if (t == NULL || json_array_append_new(A->children, t) != 0)
        return oom(A);
    return CC_OK;
}

static void tup_mark(struct apply *A, const json_t *arr)
{
    if (A->ntups == A->captups) {
        size_t cap = A->captups ? A->captups * 2 : 16;
        const json_t **p = realloc(A->tups, cap * sizeof(*p));

        if (p == NULL)
            return; /* only argsrepr's brackets depend on it */
        A->tups = p;
        A->captups = cap;
    }
    A->tups[A->ntups++] = arr;
}

static bool tup_is(const struct apply *A, const json_t *arr)
{
    for (size_t i = 0; i < A->ntups; i++)
        if (A->tups[i] == arr)
            return true;
    return false;
}

/* tuple(a) + tuple(b) (either may be NULL), marked as a tuple. New reference. */
static json_t *tup_concat(struct apply *A, const json_t *a, const json_t *b)
{
    json_t *t = json_array();

    if (t == NULL)
        return NULL;
    if ((a && json_array_extend(t, (json_t *)a) != 0) ||
        (b && json_array_extend(t, (json_t *)b) != 0)) {
        json_decref(t);
        return NULL;
    }
    tup_mark(A, t);
    return t;
}

static bool is_empty(const json_t *v)
{
    return v == NULL || json_is_null(v) || (json_is_array(v) && json_array_size(v) == 0) ||
           (json_is_object(v) && json_object_size(v) == 0);
}

/* Python truthiness of a JSON value (None, False, 0, "", [], {} are false). */
static bool truthy(const json_t *v)
{
    if (v == NULL || json_is_null(v) || json_is_false(v))
        return false;
    if (json_is_integer(v))
        return json_integer_value(v) != 0;
    if (json_is_real(v))
        return json_real_value(v) != 0.0;
    if (json_is_string(v))
        return json_string_length(v) != 0;
    return !is_empty(v);
}

static json_t *get(const json_t *o, const char *k)
{
    return json_is_object(o) ? json_object_get(o, k) : NULL;
}

static json_t *sig_opts(const json_t *s)
{
    return get(s, "options");
}
static json_t *sig_args(const json_t *s)
{
    return get(s, "args");
}
static json_t *sig_kwargs(const json_t *s)
{
    return get(s, "kwargs");
}
static bool sig_immutable(const json_t *s)
{
    return truthy(get(s, "immutable"));
}

/* The "string or absent" option `k`; CC_EINVAL when present with another type. */
static int opt_str(struct apply *A, const json_t *o, const char *k, const char **out)
{
    json_t *v = get(o, k);

    *out = NULL;
    if (v == NULL || json_is_null(v))
        return CC_OK;
    if (!json_is_string(v))
        return cc_err_set(A->err, CC_EINVAL, "signature option %s is not a string", k);
    *out = json_string_value(v);
    return CC_OK;
}

static int set_str(struct apply *A, json_t *o, const char *k, const char *v)
{
    if (json_object_set_new(o, k, json_string(v)) != 0)
        return oom(A);
    return CC_OK;
}

static int kind_of(struct apply *A, const json_t *s, enum sig_kind *k)
{
    const json_t *t;

    if (!json_is_object(s))
        return cc_err_set(A->err, CC_EINVAL, "signature is not a JSON object");
    t = json_object_get(s, "subtask_type");
    if (t == NULL || json_is_null(t)) {
        *k = SIG_TASK;
        if (!json_is_string(json_object_get(s, "task")))
            return cc_err_set(A->err, CC_EINVAL, "signature has no task name");
    } else if (!json_is_string(t)) {
        return cc_err_set(A->err, CC_EINVAL, "signature subtask_type is not a string");
    } else if (strcmp(json_string_value(t), "chain") == 0) {
        *k = SIG_CHAIN;
    } else if (strcmp(json_string_value(t), "group") == 0) {
        *k = SIG_GROUP;
    } else if (strcmp(json_string_value(t), "chord") == 0) {
        *k = SIG_CHORD;
    } else {
        return cc_err_set(A->err, CC_EINVAL, "unsupported signature subtask_type '%.40s'",
                          json_string_value(t));
    }
    return CC_OK;
}

/* Signature.__init__(task, args, kwargs, options, subtask_type): steals args/kwargs/opts. */
static json_t *sig_make(struct apply *A, const char *task, json_t *args, json_t *kwargs,
                        json_t *opts, const char *type, json_t *immutable)
{
    json_t *s = NULL;

    if (args == NULL || kwargs == NULL || opts == NULL)
        goto out;
    tup_mark(A, args);
    s = json_pack("{sssOsOsOss?sO}", "task", task, "args", args, "kwargs", kwargs, "options", opts,
                  "subtask_type", type, "immutable", immutable ? immutable : json_false());
out:
    json_decref(args);
    json_decref(kwargs);
    json_decref(opts);
    return s;
}

/* Validate the parts a signature object needs and fill what a lenient client left out
 * (args [], kwargs {}, options {}), so later code can rely on their types. */
static int sig_fix(struct apply *A, json_t *s)
{
    const char *keys[] = {"args", "kwargs", "options"};

    for (int i = 0; i < 3; i++) {
        json_t *v = json_object_get(s, keys[i]);

        if (v == NULL || json_is_null(v)) {
            if (json_object_set_new(s, keys[i], i == 0 ? json_array() : json_object()) != 0)
                return oom(A);
        } else if (i == 0 ? !json_is_array(v) : !json_is_object(v)) {
            return cc_err_set(A->err, CC_EINVAL, "signature %s is not a JSON %s", keys[i],
                              i == 0 ? "list" : "object");
        }
    }
    return CC_OK;
}

/* ---- Signature.from_dict / clone / _merge ---------------------------------------------- */

static int from_dict(struct apply *A, json_t *d, json_t **out);

/* [from_dict(t) for t in tasks] */
static int from_dict_list(struct apply *A, const json_t *tasks, json_t **out)
{
    json_t *l;
    size_t i;
    json_t *t;
    int rc = CC_OK;

    *out = NULL;
    if (!json_is_array(tasks))
        return cc_err_set(A->err, CC_EINVAL, "canvas tasks is not a list");
    if ((l = json_array()) == NULL)
        return oom(A);
    json_array_foreach(tasks, i, t)
    {
        json_t *s;

        if ((rc = from_dict(A, t, &s)) != CC_OK)
            break;
        if (json_array_append_new(l, s) != 0) {
            rc = oom(A);
            break;
        }
    }
    if (rc != CC_OK) {
        json_decref(l);
        return rc;
    }
    *out = l;
    return CC_OK;
}

/* chord's _maybe_group(header): a list of signature objects. */
static int maybe_group(struct apply *A, json_t *h, json_t **out)
{
    enum sig_kind k;
    json_t *s = NULL;
    int rc;

    *out = NULL;
    if (json_is_array(h))
        return from_dict_list(A, h, out);
    if ((rc = from_dict(A, h, &s)) != CC_OK)
        return rc;
    (void)kind_of(A, s, &k);
    if (k == SIG_GROUP || k == SIG_CHAIN) {
        *out = json_incref(json_object_get(json_object_get(s, "kwargs"), "tasks"));
        json_decref(s);
        return *out ? CC_OK : cc_err_set(A->err, CC_EINVAL, "canvas has no tasks");
    }
    *out = json_pack("[o]", s);
    return *out ? CC_OK : oom(A);
}

/* Signature.from_dict(d): a new signature object. Nested signatures are taken as objects
 * (shared, as maybe_signature does with Signature instances); the top-level dict is new. */
static int from_dict(struct apply *A, json_t *d, json_t **out)
{
    enum sig_kind k;
    json_t *kw, *opts, *tasks = NULL;
    int rc;

    *out = NULL;
    if (++A->depth > DEPTH_MAX) {
        rc = cc_err_set(A->err, CC_EINVAL, "canvas nested more than %d deep", DEPTH_MAX);
        goto out;
    }
    if ((rc = kind_of(A, d, &k)) != CC_OK || (rc = sig_fix(A, d)) != CC_OK)
        goto out;
    kw = json_object_get(d, "kwargs");
    opts = json_object_get(d, "options");
    switch (k) {
    case SIG_TASK:
        if ((*out = json_copy(d)) == NULL)
            rc = oom(A);
        break;
    case SIG_CHAIN:
    case SIG_GROUP:
        /* _chain(tasks, **options) / group(tasks, **options): args and immutable dropped */
        if ((rc = from_dict_list(A, json_object_get(kw, "tasks"), &tasks)) != CC_OK)
            break;
        *out = sig_make(A, k == SIG_CHAIN ? "celery.chain" : "celery.group", json_array(),
                        json_pack("{sO}", "tasks", tasks), json_copy(opts),
                        k == SIG_CHAIN ? "chain" : "group", NULL);
        if (*out == NULL)
            rc = oom(A);
        break;
    case SIG_CHORD: {
        /* _chord(header, body, args=..., kwargs=rest or {'kwargs': {}}, **options) */
        json_t *rest = json_object(), *header = NULL, *body = NULL, *nkw = NULL;
        const char *key;
        json_t *v;

        if (rest == NULL) {
            rc = oom(A);
            break;
        }
        json_object_foreach(kw, key, v)
        {
            if (strcmp(key, "header") != 0 && strcmp(key, "body") != 0 &&
                json_object_set(rest, key, v) != 0)
                rc = oom(A);
        }
        if (rc == CC_OK && json_object_size(rest) == 0 &&
            json_object_set_new(rest, "kwargs", json_object()) != 0)
            rc = oom(A);
        if (rc == CC_OK)
            rc = maybe_group(
                A, json_object_get(kw, "header") ? json_object_get(kw, "header") : A->empty,
                &header);
        if (rc == CC_OK && truthy(json_object_get(kw, "body")))
            rc = from_dict(A, json_object_get(kw, "body"), &body);
        if (rc == CC_OK) {
            nkw = json_copy(rest);
            if (nkw == NULL || json_object_set(nkw, "header", header) != 0 ||
                json_object_set(nkw, "body", body ? body : json_null()) != 0) {
                json_decref(nkw);
                nkw = NULL;
                rc = oom(A);
            }
        }
        if (rc == CC_OK) {
            *out = sig_make(A, "celery.chord", tup_concat(A, json_object_get(d, "args"), NULL), nkw,
                            json_copy(opts), "chord", json_object_get(d, "immutable"));
            nkw = NULL;
            if (*out == NULL)
                rc = oom(A);
        }
        json_decref(nkw);
        json_decref(rest);
        json_decref(header);
        json_decref(body);
        break;
    }
    }
out:
    json_decref(tasks);
    A->depth--;
    return rc;
}

/* Signature._merge(args, kwargs, options): new references in *a, *k, *o. `opts` NULL means
 * "no options given" (self.options returned, shared). */
static int merge(struct apply *A, const json_t *s, const json_t *args, const json_t *kwargs,
                 const json_t *opts, json_t **a, json_t **k, json_t **o)
{
    json_t *so = sig_opts(s);
    const char *key;
    json_t *v;

    *a = *k = *o = NULL;
    if (opts != NULL) {
        if ((*o = json_copy(so)) == NULL)
            return oom(A);
        json_object_foreach((json_t *)opts, key, v)
        {
            if (strcmp(key, "group_id") == 0 && json_object_get(so, "group_id") != NULL)
                continue; /* _IMMUTABLE_OPTIONS */
            if (json_object_set(*o, key, v) != 0)
                return oom(A);
        }
    } else {
        *o = json_incref(so);
    }
    if (!sig_immutable(s) && !is_empty(args))
        *a = tup_concat(A, args, sig_args(s));
    else
        *a = json_incref(sig_args(s));
    if (!sig_immutable(s) && !is_empty(kwargs)) {
        *k = json_copy(sig_kwargs(s));
        if (*k != NULL && json_object_update(*k, (json_t *)kwargs) != 0) {
            json_decref(*k);
            *k = NULL;
        }
    } else {
        *k = json_incref(sig_kwargs(s));
    }
    return (*a && *k && *o) ? CC_OK : oom(A);
}

static int clone(struct apply *A, json_t *s, const json_t *args, const json_t *kwargs,
                 const json_t *opts, json_t **out);

static int clone_list(struct apply *A, json_t *l, json_t **out)
{
    size_t i;
    json_t *t;
    int rc;

    if ((*out = json_array()) == NULL)
        return oom(A);
    json_array_foreach(l, i, t)
    {
        json_t *c;

        if ((rc = clone(A, t, NULL, NULL, NULL, &c)) != CC_OK)
            return rc;
        if (json_array_append_new(*out, c) != 0)
            return oom(A);
    }
    return CC_OK;
}

/* sig.clone(args, kwargs, **opts) with the subclass overrides (_chain clones its tasks,
 * _chord clones its body). */
static int clone(struct apply *A, json_t *s, const json_t *args, const json_t *kwargs,
                 const json_t *opts, json_t **out)
{
    json_t *a = NULL, *k = NULL, *o = NULL, *d = NULL, *oc = NULL;
    enum sig_kind kind;
    int rc;

    *out = NULL;
    if (++A->depth > DEPTH_MAX) {
        rc = cc_err_set(A->err, CC_EINVAL, "canvas nested more than %d deep", DEPTH_MAX);
        goto out;
    }
    if ((rc = kind_of(A, s, &kind)) != CC_OK || (rc = sig_fix(A, s)) != CC_OK)
        goto out;
    if (!is_empty(args) || !is_empty(kwargs) || !is_empty(opts)) {
        json_t *none = json_object();

        rc = none ? merge(A, s, args, kwargs, opts ? opts : none, &a, &k, &o) : oom(A);
        json_decref(none);
    } else {
        a = json_incref(sig_args(s));
        k = json_incref(sig_kwargs(s));
        o = json_incref(sig_opts(s));
    }
    if (rc != CC_OK)
        goto out;
    oc = json_deep_copy(o);
    d = json_pack("{sOsosOsOsOsO}", "task", json_object_get(s, "task"), "args",
                  tup_concat(A, a, NULL), "kwargs", k, "options", oc, "subtask_type",
                  json_object_get(s, "subtask_type") ? json_object_get(s, "subtask_type")
                                                     : json_null(),
                  "immutable",
                  json_object_get(s, "immutable") ? json_object_get(s, "immutable") : json_false());
    if (d == NULL) {
        rc = oom(A);
        goto out;
    }
    tup_mark(A, json_object_get(d, "args"));
    if (kind == SIG_CHORD) {
        /* header/body are objects already: from_dict keeps them; then body is cloned */
        json_t *kw = json_copy(k), *body = NULL;

        if (kw == NULL || json_object_set(d, "kwargs", kw) != 0) {
            json_decref(kw);
            rc = oom(A);
            goto out;
        }
        json_decref(kw);
        if (truthy(json_object_get(kw, "body"))) {
            if ((rc = clone(A, json_object_get(kw, "body"), NULL, NULL, NULL, &body)) != CC_OK)
                goto out;
            json_object_set_new(kw, "body", body);
        }
        if (json_is_object(json_object_get(kw, "header"))) {
            /* a frozen header group: _maybe_group keeps its member objects */
            json_t *h = json_incref(
                json_object_get(json_object_get(json_object_get(kw, "header"), "kwargs"), "tasks"));
            if (h == NULL) {
                rc = cc_err_set(A->err, CC_EINVAL, "chord header has no tasks");
                goto out;
            }
            json_object_set_new(kw, "header", h);
        } else if (json_is_array(json_object_get(kw, "header"))) {
            /* signature(t) of a Signature clones it */
            json_t *h;

            if ((rc = clone_list(A, json_object_get(kw, "header"), &h)) != CC_OK) {
                json_decref(h);
                goto out;
            }
            json_object_set_new(kw, "header", h);
        }
        *out = json_incref(d);
    } else if (kind == SIG_CHAIN || kind == SIG_GROUP) {
        json_t *tasks = json_object_get(k, "tasks"), *nt = NULL;

        if (kind == SIG_CHAIN) {
            if ((rc = clone_list(A, tasks, &nt)) != CC_OK) {
                json_decref(nt);
                goto out;
            }
        } else {
            nt = json_copy(tasks);
        }
        *out = sig_make(A, kind == SIG_CHAIN ? "celery.chain" : "celery.group", json_array(),
                        json_pack("{so}", "tasks", nt), json_incref(oc),
                        kind == SIG_CHAIN ? "chain" : "group", NULL);
        if (*out == NULL)
            rc = oom(A);
    } else {
        *out = json_incref(d);
    }
out:
    json_decref(a);
    json_decref(k);
    json_decref(o);
    json_decref(oc);
    json_decref(d);
    A->depth--;
    return rc;
}

/* ---- freeze ---------------------------------------------------------------------------- */

struct freeze_args {
    const char *id; /* _id */
    const char *group_id;
    json_t *chord; /* borrowed */
    const char *root_id;
    const char *parent_id;
    long group_index; /* -1: None */
};

static int freeze(struct apply *A, json_t *s, const struct freeze_args *f, struct res **out);

static int new_id(struct apply *A, char out[37])
{
    out[0] = '\0';
    A->ctx->new_id(out, A->ctx->new_id_arg);
    out[36] = '\0';
    return CC_OK;
}

/* freeze()'s id: options.task_id, set first when absent to `given`, else to a new id
 * (`opts.get('task_id') or _id or uuid()`, the uuid drawn only when it is used). */
static int freeze_id(struct apply *A, json_t *o, const char *given, const char **out)
{
    char idbuf[37];
    int rc;

    if ((rc = opt_str(A, o, "task_id", out)) != CC_OK || *out != NULL)
        return rc;
    if (given == NULL)
        new_id(A, idbuf);
    if ((rc = set_str(A, o, "task_id", given ? given : idbuf)) != CC_OK)
        return rc;
    *out = json_string_value(json_object_get(o, "task_id"));
    return CC_OK;
}

static int task_freeze(struct apply *A, json_t *s, const struct freeze_args *f, struct res **out)
{
    json_t *o = sig_opts(s);
    const char *tid;
    int rc;

    if ((rc = freeze_id(A, o, f->id, &tid)) != CC_OK)
        return rc;
    if (f->root_id && *f->root_id && (rc = set_str(A, o, "root_id", f->root_id)) != CC_OK)
        return rc;
    if (f->parent_id && *f->parent_id && (rc = set_str(A, o, "parent_id", f->parent_id)) != CC_OK)
        return rc;
    if (json_object_get(o, "reply_to") == NULL &&
        (rc = set_str(A, o, "reply_to", A->ctx->reply_to ? A->ctx->reply_to : "")) != CC_OK)
        return rc;
    if (f->group_id && *f->group_id && json_object_get(o, "group_id") == NULL &&
        (rc = set_str(A, o, "group_id", f->group_id)) != CC_OK)
        return rc;
    if (f->chord && truthy(f->chord) && json_object_set(o, "chord", f->chord) != 0)
        return oom(A);
    if (f->group_index >= 0 &&
        json_object_set_new(o, "group_index", json_integer(f->group_index)) != 0)
        return oom(A);
    *out = res_new(A, tid, false);
    return *out ? CC_OK : oom(A);
}

static int chain_prepare_steps(struct apply *A, const json_t *args, const json_t *kwargs,
                               json_t *tasks, const char *root_id, const json_t *link_error,
                               const char *last_task_id, const char *group_id, json_t *chord_body,
                               bool do_clone, long group_index, json_t **steps_out,
                               struct res ***results, size_t *nresults);

/* group._freeze_group_tasks (tasks always a list here: _freeze_unroll) */
static int group_freeze_tasks(struct apply *A, json_t *g, const struct freeze_args *f,
                              struct res **out)
{
    json_t *o = sig_opts(g), *kw = sig_kwargs(g);
    json_t *tasks = get(kw, "tasks"), *new_tasks = NULL, *stack = NULL;
    const char *gid, *root_id, *parent_id;
    struct res *gr;
    long gi = 0;
    int rc;

    if (!json_is_array(tasks))
        return cc_err_set(A->err, CC_EINVAL, "group has no task list");
    if ((rc = freeze_id(A, o, f->group_id, &gid)) != CC_OK)
        return rc;
    if (f->group_id && *f->group_id && (rc = set_str(A, o, "group_id", f->group_id)) != CC_OK)
        return rc;
    if (f->chord && truthy(f->chord) && json_object_set(o, "chord", f->chord) != 0)
        return oom(A);
    if (f->group_index >= 0 &&
        json_object_set_new(o, "group_index", json_integer(f->group_index)) != 0)
        return oom(A);
    /* root_id = opts.setdefault('root_id', root_id) (None stored as null) */
    if (json_object_get(o, "root_id") == NULL &&
        json_object_set_new(o, "root_id", f->root_id ? json_string(f->root_id) : json_null()))
        return oom(A);
    if (json_object_get(o, "parent_id") == NULL &&
        json_object_set_new(o, "parent_id", f->parent_id ? json_string(f->parent_id) : json_null()))
        return oom(A);
    root_id = json_string_value(json_object_get(o, "root_id"));
    parent_id = json_string_value(json_object_get(o, "parent_id"));
    if ((gr = res_new(A, gid, true)) == NULL)
        return oom(A);
    /* _freeze_unroll: depth-first, nested groups flattened, group_index over the result */
    stack = json_copy(tasks);
    new_tasks = json_array();
    if (stack == NULL || new_tasks == NULL) {
        rc = oom(A);
        goto out;
    }
    while (json_array_size(stack) > 0) {
        json_t *t = json_incref(json_array_get(stack, 0)), *c = NULL, *fd = NULL;
        enum sig_kind k;
        struct res *r;
        struct freeze_args ff = {NULL, f->group_id, f->chord, root_id, parent_id, gi};

        json_array_remove(stack, 0);
        rc = from_dict(A, t, &fd);
        if (rc == CC_OK)
            rc = clone(A, fd, NULL, NULL, NULL, &c);
        json_decref(t);
        json_decref(fd);
        if (rc == CC_OK && (rc = kind_of(A, c, &k)) == CC_OK && k == SIG_GROUP) {
            /* stack.extendleft(task.tasks): reversed onto the front */
            json_t *sub = get(sig_kwargs(c), "tasks");
            size_t n = json_array_size(sub);

            for (size_t i = 0; i < n && rc == CC_OK; i++)
                if (json_array_insert(stack, 0, json_array_get(sub, i)) != 0)
                    rc = oom(A);
            json_decref(c);
            if (rc != CC_OK)
                goto out;
            continue;
        }
        if (rc == CC_OK && json_array_append(new_tasks, c) != 0)
            rc = oom(A);
        if (rc == CC_OK)
            rc = freeze(A, c, &ff, &r);
        json_decref(c);
        if (rc != CC_OK)
            goto out;
        if (res_add(gr, r) != CC_OK) {
            rc = oom(A);
            goto out;
        }
        gi++;
    }
    /* self.tasks[:] = new_tasks (in place: the kwargs dict is shared) */
    json_array_clear(tasks);
    if (json_array_extend(tasks, new_tasks) != 0) {
        rc = oom(A);
        goto out;
    }
    *out = gr;
out:
    json_decref(stack);
    json_decref(new_tasks);
    return rc;
}

static int chord_freeze(struct apply *A, json_t *c, const struct freeze_args *f, struct res **out)
{
    json_t *kw = sig_kwargs(c), *header = get(kw, "header"), *body = get(kw, "body");
    struct res *hr, *br, *node;
    int rc;

    if (!json_is_object(header)) {
        /* self.tasks = group(self.tasks) */
        json_t *g = sig_make(A, "celery.group", json_array(),
                             json_pack("{sO}", "tasks", header ? header : A->empty), json_object(),
                             "group", NULL);

        if (g == NULL || json_object_set_new(kw, "header", g) != 0)
            return oom(A);
        header = g;
    }
    {
        struct freeze_args hf = {NULL, NULL, body, f->root_id, f->parent_id, -1};

        if ((rc = group_freeze_tasks(A, header, &hf, &hr)) != CC_OK)
            return rc;
    }
    if (!json_is_object(body))
        return cc_err_set(A->err, CC_EINVAL, "chord has no body");
    {
        struct freeze_args bf = {f->id, f->group_id, f->chord, f->root_id, NULL, f->group_index};

        if ((rc = freeze(A, body, &bf, &br)) != CC_OK)
            return rc;
    }
    for (node = br; node; node = node->parent) {
        if (node->parent == NULL) {
            node->parent = hr;
            break;
        }
    }
    /* self.id = self.tasks.id */
    if (json_object_set(sig_opts(c), "task_id", json_object_get(sig_opts(header), "task_id")))
        return oom(A);
    *out = br;
    return CC_OK;
}

static int chain_freeze(struct apply *A, json_t *c, const struct freeze_args *f, struct res **out)
{
    json_t *steps = NULL;
    struct res **results = NULL;
    size_t n = 0;
    int rc;

    rc = chain_prepare_steps(A, sig_args(c), sig_kwargs(c), get(sig_kwargs(c), "tasks"), f->root_id,
                             NULL, f->id, f->group_id, f->chord, false, f->group_index, &steps,
                             &results, &n);
    if (rc == CC_OK && n == 0)
        rc = cc_err_set(A->err, CC_EINVAL, "empty chain cannot be frozen");
    if (rc == CC_OK) {
        /* the frozen steps replace the chain's tasks (reversed list, as _frozen keeps) */
        *out = results[0];
    }
    json_decref(steps);
    free(results);
    return rc;
}

static int freeze(struct apply *A, json_t *s, const struct freeze_args *f, struct res **out)
{
    enum sig_kind k;
    int rc;

    if ((rc = kind_of(A, s, &k)) != CC_OK || (rc = sig_fix(A, s)) != CC_OK)
        return rc;
    switch (k) {
    case SIG_TASK:
        return task_freeze(A, s, f, out);
    case SIG_GROUP:
        return group_freeze_tasks(A, s, f, out);
    case SIG_CHORD:
        return chord_freeze(A, s, f, out);
    case SIG_CHAIN:
        return chain_freeze(A, s, f, out);
    }
    return CC_OK;
}

/* ---- publishing (send_task + as_task_v2 + send_task_message) --------------------------- */

static int plan_push(struct apply *A, struct cc_canvas_step **st)
{
    struct cc_canvas_plan *p = A->plan;

    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 8;
        struct cc_canvas_step *ns = realloc(p->steps, cap * sizeof(*ns));

        if (ns == NULL)
            return oom(A);
        p->steps = ns;
        p->cap = cap;
    }
    *st = &p->steps[p->n++];
    memset(*st, 0, sizeof(**st));
    return CC_OK;
}

static int opt_number(struct apply *A, const json_t *o, const char *k, bool *has, double *out)
{
    json_t *v = get(o, k);

    *has = false;
    *out = 0;
    if (v == NULL || json_is_null(v))
        return CC_OK;
    if (!json_is_number(v) || json_is_boolean(v))
        return cc_err_set(A->err, CC_EINVAL, "signature option %s is not a number", k);
    *has = true;
    *out = json_number_value(v);
    return CC_OK;
}

/* maybe_list(link): a dict becomes [dict], a list stays, None stays None. */
static json_t *maybe_list(const json_t *v)
{
    if (v == NULL || json_is_null(v))
        return NULL;
    if (json_is_array(v))
        return json_incref((json_t *)v);
    return json_pack("[O]", v);
}

/* [issue 14] A signature's countdown / expires in microseconds, clamped by cc_isotime_span_us
 * (huge = the far end, NaN = 0; Python's timedelta would raise OverflowError). */
static int64_t canvas_span_us(double s)
{
    int64_t us;

    (void)cc_isotime_span_us(s, &us);
    return us;
}

/* app.send_task(name, args, kwargs, **opts) as a worker does it. */
static int send_task(struct apply *A, const char *name, json_t *args, json_t *kwargs,
                     const json_t *o, struct res **out)
{
    const struct cc_canvas_ctx *ctx = A->ctx;
    struct cc_msg m;
    struct cc_canvas_step *st = NULL;
    const char *tid, *queue, *exchange, *rkey, *s;
    char idbuf[37], *argsrepr = NULL;
    double num;
    bool has;
    json_t *v, *callbacks = NULL, *errbacks = NULL;
    int rc;

    memset(&m, 0, sizeof(m));
    m.protocol = 2;
    m.group_index = -1;
    if ((rc = opt_str(A, o, "task_id", &tid)) != CC_OK)
        return rc;
    if (tid == NULL || *tid == '\0') {
        new_id(A, idbuf);
        tid = idbuf;
    }
    m.id = (char *)tid;
    m.task = (char *)name;
    m.ignore_result = truthy(get(o, "ignore_result"));
    if ((rc = opt_str(A, o, "queue", &queue)) != CC_OK ||
        (rc = opt_str(A, o, "exchange", &exchange)) != CC_OK ||
        (rc = opt_str(A, o, "routing_key", &rkey)) != CC_OK)
        return rc;
    if ((rc = opt_number(A, o, "expires", &has, &num)) != CC_OK &&
        json_is_string(get(o, "expires"))) {
        rc = CC_OK; /* an ISO string (a retried task's, or kombu's datetime encoding) */
        m.expires = (char *)json_string_value(get(o, "expires"));
    } else if (rc != CC_OK) {
        return rc;
    } else if (has) {
        /* [issue 14] any double (1e300, -1e300) through the span helper, never a bare cast */
        m.expires_us = cc_isotime_add_us(ctx->now_us, canvas_span_us(num));
        if (m.expires_us <= 0)
            m.expires_us = 1;
    }
    if ((rc = opt_number(A, o, "countdown", &has, &num)) != CC_OK)
        return rc;
    if (has && num != 0) {
        m.eta_us = cc_isotime_add_us(ctx->now_us, canvas_span_us(num));
        if (m.eta_us <= 0) /* a countdown far in the past: due now, still a valid date */
            m.eta_us = 1;
    } else if ((rc = opt_str(A, o, "eta", &s)) != CC_OK) {
        return rc;
    } else {
        m.eta = (char *)s;
    }
    if ((rc = opt_str(A, o, "root_id", (const char **)&m.root_id)) != CC_OK ||
        (rc = opt_str(A, o, "parent_id", (const char **)&m.parent_id)) != CC_OK ||
        (rc = opt_str(A, o, "group_id", (const char **)&m.group)) != CC_OK ||
        (rc = opt_str(A, o, "shadow", (const char **)&m.shadow)) != CC_OK ||
        (rc = opt_str(A, o, "reply_to", (const char **)&m.reply_to)) != CC_OK ||
        (rc = opt_str(A, o, "argsrepr", (const char **)&m.argsrepr)) != CC_OK ||
        (rc = opt_str(A, o, "kwargsrepr", (const char **)&m.kwargsrepr)) != CC_OK)
        return rc;
    /* current_worker_task fills what the options leave out (and, with
     * task_inherit_parent_priority, the priority: options.setdefault('priority', ...)) */
    if ((m.root_id == NULL || *m.root_id == '\0' || m.parent_id == NULL || *m.parent_id == '\0') &&
        ctx->parent_id != NULL && ctx->priority >= 0 &&
        (get(o, "priority") == NULL || json_is_null(get(o, "priority"))))
        m.priority = ctx->priority;
    if (m.root_id == NULL || *m.root_id == '\0')
        m.root_id = (char *)(ctx->root_id && *ctx->root_id ? ctx->root_id : ctx->parent_id);
    if (m.parent_id == NULL || *m.parent_id == '\0')
        m.parent_id = (char *)ctx->parent_id;
    if (m.reply_to == NULL || *m.reply_to == '\0')
        m.reply_to = (char *)(ctx->reply_to ? ctx->reply_to : "");
    v = get(o, "group_index");
    if (v != NULL && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1000000000)
            return cc_err_set(A->err, CC_EINVAL, "signature option group_index is not an int");
        m.group_index = (int)json_integer_value(v);
    }
    v = get(o, "retries");
    if (v != NULL && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1000000000)
            return cc_err_set(A->err, CC_EINVAL, "signature option retries is not an int");
        m.retries = (int)json_integer_value(v);
    }
    if ((rc = opt_number(A, o, "time_limit", &has, &m.time_limit_s)) != CC_OK ||
        (rc = opt_number(A, o, "soft_time_limit", &has, &m.soft_time_limit_s)) != CC_OK)
        return rc;
    v = get(o, "priority");
    if (v != NULL && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 255)
            return cc_err_set(A->err, CC_EINVAL, "signature option priority is not 0..255");
        m.priority = (int)json_integer_value(v);
    }
    v = get(o, "delivery_mode");
    if (v != NULL && !json_is_null(v)) {
        if (!json_is_integer(v) || (json_integer_value(v) != 1 && json_integer_value(v) != 2))
            return cc_err_set(A->err, CC_EINVAL, "signature option delivery_mode is not 1/2");
        m.delivery_mode = (int)json_integer_value(v);
    }
    v = get(o, "headers");
    if (v != NULL && !json_is_null(v) && !json_is_object(v))
        return cc_err_set(A->err, CC_EINVAL, "signature option headers is not an object");
    m.args = args;
    m.kwargs = kwargs;
    if (!json_is_array(args) || !json_is_object(kwargs))
        return cc_err_set(A->err, CC_EINVAL, "signature args/kwargs are not a list/object");
    if (m.argsrepr == NULL && !tup_is(A, args)) {
        /* saferepr of a list: Signature args straight from a dict, never merged */
        if ((argsrepr = cc_pyrepr(args, 0, ARGSREPR_MAX)) == NULL)
            return oom(A);
        m.argsrepr = argsrepr;
    }
    callbacks = maybe_list(get(o, "link"));
    errbacks = maybe_list(get(o, "link_error"));
    m.callbacks = callbacks;
    m.errbacks = errbacks;
    m.chain = get(o, "chain");
    if (m.chain && json_is_null(m.chain))
        m.chain = NULL;
    m.chord = get(o, "chord");
    if (m.chord && json_is_null(m.chord))
        m.chord = NULL;
    m.origin = (char *)ctx->origin;
    if ((rc = plan_push(A, &st)) != CC_OK)
        goto out;
    st->kind = CC_CANVAS_PUBLISH;
    if ((rc = cc_message_encode(&m, ctx->now_us, &st->msg, A->err)) != CC_OK) {
        A->plan->n--;
        goto out;
    }
    /* headers=: merged into the table (send_task_message: headers2.update(headers)) */
    if (json_is_object(get(o, "headers")) &&
        json_object_update(st->msg.headers, get(o, "headers")) != 0) {
        rc = oom(A);
        goto out;
    }
    /* Celery >= 5.3 stamping: options stamped_headers + one option per stamp become the
     * stamped_headers / stamps headers; carried so newer workers downstream see them. */
    v = get(o, "stamped_headers");
    if (json_is_array(v)) {
        json_t *stamps = json_object(), *n;
        size_t i;

        json_array_foreach(v, i, n)
        {
            if (json_is_string(n) && stamps != NULL &&
                json_object_set(stamps, json_string_value(n),
                                get(o, json_string_value(n)) ? get(o, json_string_value(n))
                                                             : json_null()) != 0) {
                json_decref(stamps);
                stamps = NULL;
            }
        }
        if (stamps == NULL || json_object_set(st->msg.headers, "stamped_headers", v) != 0 ||
            json_object_set_new(st->msg.headers, "stamps", stamps) != 0) {
            rc = oom(A);
            goto out;
        }
    }
    /* routing: a direct queue goes to ("", queue); exchange+routing_key as given */
    if (exchange && *exchange && rkey && *rkey) {
        st->exchange = strdup(exchange);
        st->routing_key = strdup(rkey);
    } else {
        st->exchange = strdup("");
        st->routing_key =
            strdup(queue && *queue ? queue : (ctx->default_queue ? ctx->default_queue : "celery"));
    }
    st->task_id = strdup(tid);
    st->task = strdup(name);
    if (!st->exchange || !st->routing_key || !st->task_id || !st->task) {
        rc = oom(A);
        goto out;
    }
    if ((*out = res_new(A, tid, false)) == NULL) {
        rc = oom(A);
        goto out;
    }
    if (!json_is_false(get(o, "add_to_parent"))) /* send_task's add_to_parent=True */
        rc = trail(A, *out);
out:
    free(argsrepr);
    json_decref(callbacks);
    json_decref(errbacks);
    return rc;
}

/* ---- apply_async ----------------------------------------------------------------------- */

static int apply_async(struct apply *A, json_t *s, const json_t *args, const json_t *kwargs,
                       json_t *opts, struct res **out);

/* Signature.apply_async(args, kwargs, **options) for a task signature. */
static int task_apply_async(struct apply *A, json_t *s, const json_t *args, const json_t *kwargs,
                            const json_t *opts, struct res **out)
{
    json_t *o = json_object(), *a = NULL, *k = NULL, *mo = NULL;
    const char *key;
    json_t *v;
    int rc = CC_OK;

    if (o == NULL)
        return oom(A);
    /* Extra options set to None are dismissed */
    json_object_foreach((json_t *)opts, key, v)
    {
        if (!json_is_null(v) && json_object_set(o, key, v) != 0)
            rc = oom(A);
    }
    if (rc == CC_OK) {
        if (!is_empty(args) || !is_empty(kwargs) || json_object_size(o) > 0)
            rc = merge(A, s, args, kwargs, o, &a, &k, &mo);
        else {
            a = json_incref(sig_args(s));
            k = json_incref(sig_kwargs(s));
            mo = json_incref(sig_opts(s));
        }
    }
    if (rc == CC_OK)
        rc = send_task(A, json_string_value(json_object_get(s, "task")), a, k, mo, out);
    json_decref(o);
    json_decref(a);
    json_decref(k);
    json_decref(mo);
    return rc;
}

/* group.apply_async(args, kwargs, add_to_parent, **options) */
static int group_apply_async(struct apply *A, json_t *g, const json_t *args, const json_t *kwargs,
                             const json_t *opts, struct res **out)
{
    json_t *o = NULL, *tasks = get(sig_kwargs(g), "tasks"), *prepared = NULL;
    json_t *chord_opt = NULL;
    const char *gid, *root_id;
    char idbuf[37];
    struct res *gr = NULL, **results = NULL;
    size_t n = 0;
    long chord_size = 0;
    bool add_to_parent;
    const char *key;
    json_t *v;
    int rc = CC_OK;

    if (!json_is_array(tasks))
        return cc_err_set(A->err, CC_EINVAL, "group has no task list");
    if (json_array_size(tasks) == 0) {
        /* self.freeze(): an empty GroupResult, nothing sent, not added to the parent */
        struct freeze_args f = {NULL, NULL, NULL, NULL, NULL, -1};

        return group_freeze_tasks(A, g, &f, out);
    }
    /* _freeze_gid: options = dict(self.options, **options); group_id = pop(task_id, uuid()) */
    if ((o = json_copy(sig_opts(g))) == NULL || json_object_update(o, (json_t *)opts) != 0) {
        rc = oom(A);
        goto out;
    }
    /* add_to_parent is a named parameter, not an option */
    add_to_parent = !json_is_false(get(opts, "add_to_parent"));
    if (json_object_get(opts, "add_to_parent") != NULL) {
        json_t *keep = json_copy(sig_opts(g));

        /* dict(self.options, **options) without it (the group's own option stays) */
        if (keep == NULL) {
            rc = oom(A);
            goto out;
        }
        json_object_foreach((json_t *)opts, key, v)
        {
            if (strcmp(key, "add_to_parent") != 0 && json_object_set(keep, key, v) != 0)
                rc = oom(A);
        }
        json_decref(o);
        o = keep;
        if (rc != CC_OK)
            goto out;
    }
    new_id(A, idbuf); /* uuid() is evaluated even when task_id is there */
    if ((rc = opt_str(A, o, "task_id", &gid)) != CC_OK)
        goto out;
    {
        json_t *gidv = json_string(gid ? gid : idbuf);

        json_object_del(o, "task_id");
        if (gidv == NULL || json_object_set_new(o, "group_id", gidv) != 0) {
            rc = oom(A);
            goto out;
        }
        gid = json_string_value(gidv);
    }
    if ((rc = opt_str(A, o, "root_id", &root_id)) != CC_OK)
        goto out;
    chord_opt = json_incref(get(o, "chord"));
    json_object_del(o, "chord"); /* _apply_tasks' chord parameter */
    if (chord_opt && json_is_null(chord_opt)) {
        json_decref(chord_opt);
        chord_opt = NULL;
    }
    /* _prepared: each member from_dict (or clone), nested groups unrolled, frozen */
    if ((prepared = json_array()) == NULL) {
        rc = oom(A);
        goto out;
    }
    {
        json_t *stack = json_copy(tasks);

        if (stack == NULL) {
            rc = oom(A);
            goto out;
        }
        while (rc == CC_OK && json_array_size(stack) > 0) {
            json_t *t = json_incref(json_array_get(stack, 0)), *c = NULL, *fd = NULL;
            enum sig_kind k;

            json_array_remove(stack, 0);
            rc = from_dict(A, t, &fd);
            if (rc == CC_OK)
                rc = clone(A, fd, NULL, NULL, NULL, &c);
            json_decref(fd);
            json_decref(t);
            if (rc == CC_OK && (rc = kind_of(A, c, &k)) == CC_OK && k == SIG_GROUP) {
                json_t *sub = get(sig_kwargs(c), "tasks");

                for (size_t i = json_array_size(sub); i > 0 && rc == CC_OK; i--)
                    if (json_array_insert(stack, 0, json_array_get(sub, i - 1)) != 0)
                        rc = oom(A);
                json_decref(c);
                continue;
            }
            if (rc == CC_OK && json_array_append(prepared, c) != 0)
                rc = oom(A);
            json_decref(c);
        }
        json_decref(stack);
        if (rc != CC_OK)
            goto out;
    }
    n = json_array_size(prepared);
    if ((results = calloc(n, sizeof(*results))) == NULL) {
        rc = oom(A);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        struct freeze_args f = {NULL, gid, NULL, root_id, NULL, -1};

        if ((rc = freeze(A, json_array_get(prepared, i), &f, &results[i])) != CC_OK)
            goto out;
    }
    /* _apply_tasks */
    for (size_t i = 0; i < n; i++) {
        json_t *sig = json_array_get(prepared, i), *mo = NULL;
        json_t *chord_obj = chord_opt ? chord_opt : get(sig_opts(sig), "chord");
        struct res *r;

        chord_size += cc_canvas_chord_size(sig);
        if (chord_obj != NULL && !json_is_null(chord_obj) && i + 1 == n) {
            struct cc_canvas_step *st;

            if ((rc = plan_push(A, &st)) != CC_OK)
                goto out;
            st->kind = CC_CANVAS_CHORD_SIZE;
            st->chord_size = chord_size;
            if ((st->group_id = strdup(gid)) == NULL) {
                rc = oom(A);
                goto out;
            }
        }
        /* sig.apply_async(producer=, add_to_parent=False, chord=chord_obj, **options) */
        if ((mo = json_object()) == NULL ||
            json_object_set_new(mo, "add_to_parent", json_false()) ||
            json_object_set(mo, "chord", chord_obj ? chord_obj : json_null()) ||
            json_object_update(mo, o) != 0) {
            json_decref(mo);
            rc = oom(A);
            goto out;
        }
        rc = apply_async(A, sig, args, kwargs, mo, &r);
        json_decref(mo);
        if (rc != CC_OK)
            goto out;
    }
    if ((gr = res_new(A, gid, true)) == NULL) {
        rc = oom(A);
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        if (res_add(gr, results[i]) != CC_OK) {
            rc = oom(A);
            goto out;
        }
    if (gr->n == 1 && gr->items[0]->is_group)
        gr = gr->items[0];
    if (add_to_parent && (rc = trail(A, gr)) != CC_OK)
        goto out;
    *out = gr;
out:
    free(results);
    json_decref(o);
    json_decref(prepared);
    json_decref(chord_opt);
    return rc;
}

/* _chain.prepare_steps: `tasks` in chain order; returns the steps reversed (next = last). */
static int chain_prepare_steps(struct apply *A, const json_t *args, const json_t *kwargs,
                               json_t *tasks, const char *root_id, const json_t *link_error,
                               const char *last_task_id, const char *group_id, json_t *chord_body,
                               bool do_clone, long group_index, json_t **steps_out,
                               struct res ***results_out, size_t *nresults)
{
    json_t *steps = NULL, *out_tasks = NULL, *prev_task = NULL;
    struct res **results = NULL, *prev_res = NULL;
    size_t nres = 0, i = 0;
    int rc = CC_OK;

    *steps_out = NULL;
    *results_out = NULL;
    *nresults = 0;
    if (!json_is_array(tasks))
        return cc_err_set(A->err, CC_EINVAL, "chain has no task list");
    steps = json_copy(tasks);
    out_tasks = json_array();
    if (steps == NULL || out_tasks == NULL) {
        rc = oom(A);
        goto out;
    }
    while (json_array_size(steps) > 0) {
        size_t last = json_array_size(steps) - 1;
        json_t *task = json_incref(json_array_get(steps, last)), *t2 = NULL;
        bool is_first = last == 0, is_last = i == 0;
        enum sig_kind k;
        struct res *res;

        json_array_remove(steps, last);
        rc = from_dict(A, task, &t2);
        json_decref(task);
        task = t2;
        if (rc != CC_OK)
            goto out;
        (void)kind_of(A, task, &k);
        if (k == SIG_GROUP && json_array_size(get(sig_kwargs(task), "tasks")) == 1) {
            /* maybe_unroll_group */
            json_t *only = json_incref(json_array_get(get(sig_kwargs(task), "tasks"), 0));

            json_decref(task);
            task = only;
            if ((rc = kind_of(A, task, &k)) != CC_OK) {
                json_decref(task);
                goto out;
            }
        }
        if (do_clone) {
            rc = clone(A, task, is_first ? args : NULL, is_first ? kwargs : NULL, NULL, &t2);
            json_decref(task);
            task = t2;
            if (rc != CC_OK)
                goto out;
        } else if (is_first && !is_empty(args)) {
            json_t *na = tup_concat(A, args, sig_args(task));

            if (na == NULL || json_object_set_new(task, "args", na) != 0) {
                json_decref(task);
                rc = oom(A);
                goto out;
            }
        }
        if (k == SIG_CHAIN) {
            /* splice (unroll) the chain */
            if (json_array_extend(steps, get(sig_kwargs(task), "tasks")) != 0)
                rc = oom(A);
            json_decref(task);
            if (rc != CC_OK)
                goto out;
            continue;
        }
        if (k == SIG_GROUP && prev_task != NULL) {
            /* group(...) | s -> chord(group, s, task_id=prev_res.task_id, root_id=root_id) */
            json_t *ch, *header;

            json_array_remove(out_tasks, json_array_size(out_tasks) - 1);
            nres--;
            header = json_incref(get(sig_kwargs(task), "tasks"));
            ch = sig_make(A, "celery.chord", json_array(),
                          json_pack("{s{}sosO}", "kwargs", "header", header, "body", prev_task),
                          json_pack("{s:s?,s:s?}", "task_id",
                                    prev_res->is_group ? NULL : prev_res->id, "root_id", root_id),
                          "chord", NULL);
            json_decref(task);
            task = ch;
            if (task == NULL) {
                rc = oom(A);
                goto out;
            }
            if (prev_res->is_group) /* the AttributeError branch: no task_id */
                json_object_del(sig_opts(task), "task_id");
            k = SIG_CHORD;
        }
        if (is_last) {
            struct freeze_args f = {last_task_id, group_id, chord_body, root_id, NULL, group_index};

            rc = freeze(A, task, &f, &res);
        } else {
            struct freeze_args f = {NULL, NULL, NULL, root_id, NULL, -1};

            rc = freeze(A, task, &f, &res);
        }
        if (rc != CC_OK) {
            json_decref(task);
            goto out;
        }
        i++;
        if (prev_task != NULL && prev_res != NULL && prev_res->parent == NULL)
            prev_res->parent = res;
        if (link_error != NULL && !json_is_null(link_error)) {
            json_t *el = maybe_list(link_error);
            size_t j;
            json_t *eb;

            json_array_foreach(el, j, eb)
            {
                /* task.link_error(errback): append_to_list_option (chords: on the body) */
                json_t *target = k == SIG_CHORD ? get(sig_kwargs(task), "body") : task;
                json_t *lo = get(sig_opts(target), "link_error");

                if (lo == NULL) {
                    lo = json_array();
                    if (lo == NULL || json_object_set_new(sig_opts(target), "link_error", lo))
                        rc = oom(A);
                }
                if (rc == CC_OK && json_is_array(lo)) {
                    bool seen = false;

                    for (size_t x = 0; x < json_array_size(lo); x++)
                        if (json_equal(json_array_get(lo, x), eb))
                            seen = true;
                    if (!seen && json_array_append(lo, eb) != 0)
                        rc = oom(A);
                }
            }
            json_decref(el);
            if (rc != CC_OK) {
                json_decref(task);
                goto out;
            }
        }
        if (json_array_append_new(out_tasks, task) != 0) {
            rc = oom(A);
            goto out;
        }
        {
            struct res **nr = realloc(results, (nres + 1) * sizeof(*nr));

            if (nr == NULL) {
                rc = oom(A);
                goto out;
            }
            results = nr;
            results[nres++] = res;
        }
        prev_task = task;
        prev_res = res;
        if (k == SIG_CHORD) {
            while (prev_res->parent)
                prev_res = prev_res->parent;
        }
    }
    *steps_out = out_tasks;
    out_tasks = NULL;
    *results_out = results;
    results = NULL;
    *nresults = nres;
out:
    json_decref(steps);
    json_decref(out_tasks);
    free(results);
    return rc;
}

/* _chain.apply_async -> run */
static int chain_apply_async(struct apply *A, json_t *c, const json_t *args, const json_t *kwargs,
                             const json_t *opts, struct res **out)
{
    json_t *o = json_copy(sig_opts(c)), *pargs = NULL, *steps = NULL, *link = NULL;
    json_t *link_error = NULL, *first = NULL;
    const char *root_id = NULL, *task_id = NULL, *group_id = NULL;
    long group_index = -1;
    struct res **results = NULL;
    size_t n = 0;
    json_t *chord = NULL;
    int rc = CC_OK;

    if (o == NULL || json_object_update(o, (json_t *)opts) != 0) {
        rc = oom(A);
        goto out;
    }
    /* run()'s named parameters come out of the options */
    if ((rc = opt_str(A, o, "root_id", &root_id)) != CC_OK ||
        (rc = opt_str(A, o, "task_id", &task_id)) != CC_OK ||
        (rc = opt_str(A, o, "group_id", &group_id)) != CC_OK)
        goto out;
    if (json_is_integer(get(o, "group_index")))
        group_index = (long)json_integer_value(get(o, "group_index"));
    chord = json_incref(get(o, "chord"));
    link = json_incref(get(o, "link"));
    link_error = json_incref(get(o, "link_error"));
    {
        /* keep the strings alive: they point into `o` */
        json_t *keep = json_pack("{s:s?,s:s?,s:s?}", "r", root_id, "t", task_id, "g", group_id);

        if (keep == NULL) {
            rc = oom(A);
            goto out;
        }
        for (const char **k =
                 (const char *[]){"group_id", "chord", "task_id", "link", "link_error", "publisher",
                                  "producer", "root_id", "parent_id", "group_index", NULL};
             *k; k++)
            json_object_del(o, *k);
        root_id = json_string_value(json_object_get(keep, "r"));
        task_id = json_string_value(json_object_get(keep, "t"));
        group_id = json_string_value(json_object_get(keep, "g"));
        if (!sig_immutable(c) && !is_empty(args))
            pargs = tup_concat(A, args, sig_args(c));
        else
            pargs = json_incref(sig_args(c));
        rc = chain_prepare_steps(A, pargs, kwargs, get(sig_kwargs(c), "tasks"), root_id, link_error,
                                 task_id, group_id, chord && !json_is_null(chord) ? chord : NULL,
                                 true, group_index, &steps, &results, &n);
        json_decref(keep);
    }
    if (rc != CC_OK || n == 0)
        goto out;
    if (link != NULL && !json_is_null(link)) {
        /* tasks[0].extend_list_option('link', link): the chain's last task */
        json_t *t0 = json_array_get(steps, 0), *lo = get(sig_opts(t0), "link");
        json_t *ll = maybe_list(link);

        if (lo == NULL) {
            lo = json_array();
            if (lo == NULL || json_object_set_new(sig_opts(t0), "link", lo) != 0)
                rc = oom(A);
        }
        if (rc == CC_OK && (ll == NULL || json_array_extend(lo, ll) != 0))
            rc = oom(A);
        json_decref(ll);
        if (rc != CC_OK)
            goto out;
    }
    first = json_incref(json_array_get(steps, n - 1));
    json_array_remove(steps, n - 1);
    /* _prepare_chain_from_options: {'chain': tasks} before the options, or extended */
    {
        json_t *fo = json_object();
        json_t *ch = get(o, "chain");

        if (fo == NULL) {
            rc = oom(A);
            goto out;
        }
        /* ChainMap({'chain': ...}, options) unpacked with **: the options' keys first */
        if (json_object_update(fo, o) != 0) {
            rc = oom(A);
        } else if (ch == NULL) {
            if (json_object_set(fo, "chain", steps) != 0)
                rc = oom(A);
        } else {
            json_t *nc = json_array();

            if (nc == NULL || (json_is_array(ch) && json_array_extend(nc, ch) != 0) ||
                json_array_extend(nc, steps) != 0 || json_object_set_new(fo, "chain", nc) != 0)
                rc = oom(A);
        }
        if (rc == CC_OK)
            rc = apply_async(A, first, NULL, NULL, fo, out);
        json_decref(fo);
        if (rc != CC_OK)
            goto out;
    }
    if (n > 1)
        *out = results[0];
out:
    json_decref(o);
    json_decref(pargs);
    json_decref(steps);
    json_decref(link);
    json_decref(link_error);
    json_decref(first);
    json_decref(chord);
    free(results);
    return rc;
}

/* _chord.apply_async -> run (Redis backend: native join, header counted by CHORD_SIZE) */
static int chord_apply_async(struct apply *A, json_t *c, const json_t *args, const json_t *kwargs,
                             const json_t *opts, struct res **out)
{
    json_t *o = NULL, *body = NULL, *header = NULL, *pargs = NULL, *hkw = NULL;
    json_t *kw = sig_kwargs(c);
    const char *task_id = NULL, *group_id = NULL, *root_id = NULL;
    char gidbuf[37];
    json_t *keep = json_object(); /* keeps task_id/group_id/root_id alive while options change */
    struct res *bodyres = NULL, *hr = NULL;
    int rc = CC_OK;

    (void)kwargs;
    /* task_id is a named parameter of apply_async */
    if (keep == NULL || (o = json_copy((json_t *)opts)) == NULL) {
        json_decref(keep);
        return oom(A);
    }
    if ((rc = opt_str(A, o, "task_id", &task_id)) != CC_OK)
        goto out;
    if (task_id) {
        if (json_object_set(keep, "task_id", json_object_get(o, "task_id")) != 0) {
            rc = oom(A);
            goto out;
        }
        json_object_del(o, "task_id");
    }
    if (!sig_immutable(c) && !is_empty(args))
        pargs = tup_concat(A, args, sig_args(c));
    else
        pargs = json_incref(sig_args(c));
    if (!json_is_object(get(kw, "body"))) {
        rc = cc_err_set(A->err, CC_EINVAL, "chord has no body");
        goto out;
    }
    if ((rc = clone(A, get(kw, "body"), NULL, NULL, o, &body)) != CC_OK)
        goto out;
    if (json_is_object(get(kw, "header"))) {
        rc = clone(A, get(kw, "header"), NULL, NULL, NULL, &header);
    } else {
        header =
            sig_make(A, "celery.group", json_array(),
                     json_pack("{sO}", "tasks", get(kw, "header") ? get(kw, "header") : A->empty),
                     json_object(), "group", NULL);
        if (header == NULL)
            rc = oom(A);
    }
    if (rc != CC_OK)
        goto out;
    /* merged_options = dict(self.options, **options); task_id popped */
    {
        json_t *mo = json_copy(sig_opts(c));
        const char *otid;

        if (mo == NULL || json_object_update(mo, o) != 0) {
            json_decref(mo);
            rc = oom(A);
            goto out;
        }
        json_decref(o);
        o = mo;
        if ((rc = opt_str(A, o, "task_id", &otid)) != CC_OK)
            goto out;
        if (task_id == NULL && otid != NULL) {
            if (json_object_set(keep, "task_id", json_object_get(o, "task_id")) != 0) {
                rc = oom(A);
                goto out;
            }
            task_id = otid;
        }
        json_object_del(o, "task_id");
        /* run()'s named parameters */
        for (const char **k =
                 (const char *[]){"app", "interval", "countdown", "max_retries", "eager", NULL};
             *k; k++)
            json_object_del(o, *k);
    }
    /* run() */
    if ((rc = opt_str(A, sig_opts(header), "task_id", &group_id)) != CC_OK)
        goto out;
    if (group_id == NULL || *group_id == '\0') {
        new_id(A, gidbuf);
        group_id = gidbuf;
    } else if (json_object_set(keep, "group_id", json_object_get(sig_opts(header), "task_id"))) {
        rc = oom(A);
        goto out;
    }
    if ((rc = opt_str(A, sig_opts(body), "root_id", &root_id)) != CC_OK)
        goto out;
    if (root_id && json_object_set(keep, "root_id", json_object_get(sig_opts(body), "root_id"))) {
        rc = oom(A);
        goto out;
    }
    if (json_object_size(o) > 0 && json_object_update(sig_opts(body), o) != 0) {
        rc = oom(A);
        goto out;
    }
    {
        struct freeze_args bf = {task_id, NULL, NULL, root_id, NULL, -1};

        if ((rc = freeze(A, body, &bf, &bodyres)) != CC_OK)
            goto out;
        json_object_del(o, "chain");
        json_object_del(o, "chord");
        json_object_del(o, "task_id");
        {
            struct freeze_args hf = {NULL, group_id, body, root_id, NULL, -1};

            if ((rc = group_freeze_tasks(A, header, &hf, &hr)) != CC_OK)
                goto out;
        }
        if (json_array_size(get(sig_kwargs(header), "tasks")) > 0) {
            /* redis apply_chord: save the GroupResult when a member result is a group */
            bool complex = false;

            for (size_t i = 0; i < hr->n; i++)
                complex |= hr->items[i]->is_group;
            if (complex) {
                struct cc_canvas_step *st;

                if ((rc = plan_push(A, &st)) != CC_OK)
                    goto out;
                st->kind = CC_CANVAS_SAVE_GROUP;
                st->group_id = strdup(group_id);
                st->group_result = res_tuple(hr, 0);
                if (st->group_id == NULL || st->group_result == NULL) {
                    rc = oom(A);
                    goto out;
                }
            }
            /* header(*partial_args, task_id=group_id, **options) */
            if ((hkw = json_copy(o)) == NULL || set_str(A, hkw, "task_id", group_id) != CC_OK) {
                rc = oom(A);
                goto out;
            }
            rc = group_apply_async(A, header, pargs, NULL, hkw, &hr);
            if (rc != CC_OK)
                goto out;
        } else {
            /* body.delay([]) */
            json_t *da = json_pack("[[]]");
            struct res *r;

            if (da == NULL) {
                rc = oom(A);
                goto out;
            }
            tup_mark(A, da);
            rc = apply_async(A, body, da, NULL, NULL, &r);
            json_decref(da);
            if (rc != CC_OK)
                goto out;
        }
    }
    bodyres->parent = hr;
    *out = bodyres;
out:
    json_decref(keep);
    json_decref(o);
    json_decref(body);
    json_decref(header);
    json_decref(pargs);
    json_decref(hkw);
    return rc;
}

/* Dispatch on the signature's type (signature(d).apply_async(...)). Takes nothing. */
static int apply_async(struct apply *A, json_t *s, const json_t *args, const json_t *kwargs,
                       json_t *opts, struct res **out)
{
    enum sig_kind k;
    int rc;

    json_t *none = NULL;

    if (++A->depth > DEPTH_MAX) {
        rc = cc_err_set(A->err, CC_EINVAL, "canvas nested more than %d deep", DEPTH_MAX);
        goto out;
    }
    if ((rc = kind_of(A, s, &k)) != CC_OK || (rc = sig_fix(A, s)) != CC_OK)
        goto out;
    if (opts == NULL && (opts = none = json_object()) == NULL) {
        rc = oom(A);
        goto out;
    }
    if (args != NULL && !json_is_array(args)) {
        rc = cc_err_set(A->err, CC_EINVAL, "partial args are not a list");
        goto out;
    }
    switch (k) {
    case SIG_TASK:
        rc = task_apply_async(A, s, args, kwargs, opts, out);
        break;
    case SIG_CHAIN:
        rc = chain_apply_async(A, s, args, kwargs, opts, out);
        break;
    case SIG_GROUP:
        rc = group_apply_async(A, s, args, kwargs, opts, out);
        break;
    case SIG_CHORD:
        rc = chord_apply_async(A, s, args, kwargs, opts, out);
        break;
    }
out:
    json_decref(none);
    A->depth--;
    return rc;
}

/* ---- public API ------------------------------------------------------------------------ */

void cc_canvas_plan_init(struct cc_canvas_plan *p)
{
    memset(p, 0, sizeof(*p));
}

void cc_canvas_plan_deinit(struct cc_canvas_plan *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->n; i++) {
        struct cc_canvas_step *s = &p->steps[i];

        free(s->exchange);
        free(s->routing_key);
        cc_message_out_deinit(&s->msg);
        free(s->task_id);
        free(s->task);
        free(s->group_id);
        json_decref(s->group_result);
    }
    free(p->steps);
    json_decref(p->children);
    memset(p, 0, sizeof(*p));
}

static int begin(struct apply *A, struct cc_canvas_plan *plan, const struct cc_canvas_ctx *ctx,
                 struct cc_err *err)
{
    memset(A, 0, sizeof(*A));
    A->plan = plan;
    A->ctx = ctx;
    A->err = err;
    if (ctx == NULL || ctx->new_id == NULL)
        return cc_err_set(err, CC_EINVAL, "canvas context has no id generator");
    if (plan->children == NULL && (plan->children = json_array()) == NULL)
        return oom(A);
    A->children = plan->children;
    if ((A->empty = json_array()) == NULL)
        return oom(A);
    return CC_OK;
}

static void end(struct apply *A)
{
    while (A->all) {
        struct res *n = A->all->next_alloc;

        free(A->all->id);
        free(A->all->items);
        free(A->all);
        A->all = n;
    }
    free(A->tups);
    A->tups = NULL;
    json_decref(A->empty);
    A->empty = NULL;
}

/* Mark every signature's "args" in the tree as a tuple: a signature built in the task's
 * own code (Python: Signature(...) keeps tuple(args)), not one decoded from a message. */
static void mark_built(struct apply *A, const json_t *v, int depth)
{
    const char *key;
    json_t *x;
    size_t i;

    if (depth > DEPTH_MAX * 4)
        return;
    if (json_is_object(v)) {
        json_object_foreach((json_t *)v, key, x)
        {
            if (strcmp(key, "args") == 0 && json_is_array(x))
                tup_mark(A, x);
            else
                mark_built(A, x, depth + 1);
        }
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, x) mark_built(A, x, depth + 1);
    }
}

/* signature(d).apply_async(prepend, **extra) with a private deep copy of d. */
static int apply_copy(struct apply *A, const json_t *sig, const json_t *prepend,
                      const json_t *extra, bool built)
{
    json_t *d = json_deep_copy(sig), *s = NULL, *o = NULL, *pre = NULL;
    struct res *r;
    int rc;

    if (d == NULL)
        return json_is_object(sig)
                   ? oom(A)
                   : cc_err_set(A->err, CC_EINVAL, "signature is not a JSON object");
    if (built)
        mark_built(A, d, 0);
    if ((rc = from_dict(A, d, &s)) != CC_OK)
        goto out;
    if (extra != NULL && !json_is_object(extra)) {
        rc = cc_err_set(A->err, CC_EINVAL, "apply options are not an object");
        goto out;
    }
    if (prepend != NULL && !json_is_array(prepend)) {
        rc = cc_err_set(A->err, CC_EINVAL, "partial args are not a list");
        goto out;
    }
    if (prepend && (pre = tup_concat(A, prepend, NULL)) == NULL) {
        rc = oom(A);
        goto out;
    }
    o = extra ? json_copy((json_t *)extra) : json_object();
    if (o == NULL) {
        rc = oom(A);
        goto out;
    }
    rc = apply_async(A, s, pre, NULL, o, &r);
out:
    json_decref(d);
    json_decref(s);
    json_decref(o);
    json_decref(pre);
    return rc;
}

int cc_canvas_apply(struct cc_canvas_plan *plan, const json_t *sig, const json_t *prepend,
                    const json_t *extra, const struct cc_canvas_ctx *ctx, struct cc_err *err)
{
    struct apply A;
    int rc = begin(&A, plan, ctx, err);

    if (rc == CC_OK)
        rc = apply_copy(&A, sig, prepend, extra, true);
    end(&A);
    return rc;
}

/* parent_id=uuid, root_id=root_id, priority=task_priority as trace.py passes them */
static json_t *trace_opts(const struct cc_canvas_ctx *ctx, const json_t *chain)
{
    json_t *o = json_object();

    if (o == NULL)
        return NULL;
    if ((chain && json_object_set(o, "chain", (json_t *)chain) != 0) ||
        json_object_set_new(o, "parent_id",
                            ctx->parent_id ? json_string(ctx->parent_id) : json_null()) != 0 ||
        json_object_set_new(o, "root_id",
                            ctx->root_id     ? json_string(ctx->root_id)
                            : ctx->parent_id ? json_string(ctx->parent_id)
                                             : json_null()) != 0 ||
        json_object_set_new(o, "priority",
                            ctx->priority >= 0 ? json_integer(ctx->priority) : json_null()) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

int cc_canvas_on_success(struct cc_canvas_plan *plan, const json_t *embed, const json_t *retval,
                         const struct cc_canvas_ctx *ctx, struct cc_err *err)
{
    struct apply A;
    json_t *cbs, *chain, *args = NULL, *o = NULL;
    int rc = begin(&A, plan, ctx, err);

    if (rc != CC_OK)
        goto out;
    if (embed != NULL && !json_is_object(embed) && !json_is_null(embed)) {
        rc = cc_err_set(err, CC_EINVAL, "embed is not an object");
        goto out;
    }
    cbs = get(embed, "callbacks");
    chain = get(embed, "chain");
    if ((cbs && !json_is_null(cbs) && !json_is_array(cbs)) ||
        (chain && !json_is_null(chain) && !json_is_array(chain))) {
        rc = cc_err_set(err, CC_EINVAL, "embed callbacks/chain is not a list");
        goto out;
    }
    args = json_pack("[O]", retval ? retval : json_null());
    if (args == NULL || (o = trace_opts(ctx, NULL)) == NULL) {
        rc = oom(&A);
        goto out;
    }
    if (json_array_size(cbs) > 1) {
        /* groups applied one by one, the plain signatures together as one group */
        json_t *sigs = json_array(), *g;
        size_t i;
        json_t *cb;

        if (sigs == NULL) {
            rc = oom(&A);
            goto out;
        }
        json_array_foreach(cbs, i, cb)
        {
            json_t *t = get(cb, "subtask_type");

            if (rc != CC_OK)
                break;
            if (json_is_string(t) && strcmp(json_string_value(t), "group") == 0)
                rc = apply_copy(&A, cb, args, o, false);
            else if (json_array_append(sigs, (json_t *)cb) != 0)
                rc = oom(&A);
        }
        if (rc == CC_OK && json_array_size(sigs) > 0) {
            g = json_pack("{sss[]s{sO}s{}sssb}", "task", "celery.group", "args", "kwargs", "tasks",
                          sigs, "options", "subtask_type", "group", "immutable", 0);
            rc = g ? apply_copy(&A, g, args, o, false) : oom(&A);
            json_decref(g);
        }
        json_decref(sigs);
    } else if (json_array_size(cbs) == 1) {
        rc = apply_copy(&A, json_array_get(cbs, 0), args, o, false);
    }
    if (rc == CC_OK && json_array_size(chain) > 0) {
        /* chain.pop() applied with chain=<the rest> */
        json_t *rest = json_array(), *co;
        size_t n = json_array_size(chain);

        for (size_t i = 0; rest && i + 1 < n; i++)
            if (json_array_append(rest, json_array_get(chain, i)) != 0) {
                json_decref(rest);
                rest = NULL;
            }
        co = rest ? trace_opts(ctx, rest) : NULL;
        rc = co ? apply_copy(&A, json_array_get(chain, n - 1), args, co, false) : oom(&A);
        json_decref(co);
        json_decref(rest);
    }
out:
    json_decref(args);
    json_decref(o);
    end(&A);
    return rc;
}

int cc_canvas_on_failure(struct cc_canvas_plan *plan, const json_t *errbacks, const char *failed_id,
                         const struct cc_canvas_ctx *ctx, struct cc_err *err)
{
    struct apply A;
    json_t *g = NULL, *args = NULL, *o = NULL;
    int rc = begin(&A, plan, ctx, err);

    if (rc != CC_OK)
        goto out;
    if (errbacks == NULL || json_is_null(errbacks))
        goto out;
    if (!json_is_array(errbacks) || failed_id == NULL) {
        rc = cc_err_set(err, CC_EINVAL, "errbacks is not a list (or no failed task id)");
        goto out;
    }
    if (json_array_size(errbacks) == 0)
        goto out;
    /* _call_task_errbacks: group(old_signatures).apply_async((request.id,),
     * parent_id=request.id, root_id=request.root_id) */
    g = json_pack("{sss[]s{sO}s{}sssb}", "task", "celery.group", "args", "kwargs", "tasks",
                  errbacks, "options", "subtask_type", "group", "immutable", 0);
    args = json_pack("[s]", failed_id);
    o = json_pack("{ssss}", "parent_id", failed_id, "root_id",
                  ctx->root_id ? ctx->root_id : failed_id);
    if (g == NULL || args == NULL || o == NULL) {
        rc = oom(&A);
        goto out;
    }
    rc = apply_copy(&A, g, args, o, false);
out:
    json_decref(g);
    json_decref(args);
    json_decref(o);
    end(&A);
    return rc;
}

int cc_canvas_chord_body(struct cc_canvas_plan *plan, const json_t *body, const json_t *results,
                         const struct cc_canvas_ctx *ctx, struct cc_err *err)
{
    struct apply A;
    json_t *args = NULL, *o = NULL;
    int rc = begin(&A, plan, ctx, err);

    if (rc != CC_OK)
        goto out;
    if (!json_is_array(results)) {
        rc = cc_err_set(err, CC_EINVAL, "chord results are not a list");
        goto out;
    }
    /* callback.delay([unpack(tup, decode) for tup in resl]): no extra options */
    args = json_pack("[O]", results);
    o = json_object();
    if (args == NULL || o == NULL) {
        rc = oom(&A);
        goto out;
    }
    rc = apply_copy(&A, body, args, o, false);
out:
    json_decref(args);
    json_decref(o);
    end(&A);
    return rc;
}

/* chord._descend */
long cc_canvas_chord_size(const json_t *sig)
{
    const json_t *t = get(sig, "subtask_type");
    const char *ty = json_is_string(t) ? json_string_value(t) : "";

    if (!json_is_object(sig))
        return json_is_array(sig) ? (long)json_array_size(sig) : 0;
    if (strcmp(ty, "group") == 0) {
        long n = 0;
        size_t i;
        json_t *m;

        json_array_foreach(get(sig_kwargs(sig), "tasks"), i, m) n += cc_canvas_chord_size(m);
        return n;
    }
    if (strcmp(ty, "chain") == 0) {
        const json_t *tasks = get(sig_kwargs(sig), "tasks");

        for (size_t i = json_array_size(tasks); i > 0; i--) {
            long n = cc_canvas_chord_size(json_array_get(tasks, i - 1));

            if (n > 0)
                return n;
        }
        return 0;
    }
    if (strcmp(ty, "chord") == 0)
        return cc_canvas_chord_size(get(sig_kwargs(sig), "body"));
    return 1;
}

/* ---- builders (include/celeryc/canvas.h) ----------------------------------------------- */

static json_t *build(const char *task, json_t *args, json_t *kwargs, const char *type)
{
    json_t *s;

    if (args == NULL || kwargs == NULL) {
        json_decref(args);
        json_decref(kwargs);
        return NULL;
    }
    s = json_pack("{sssoso s{} ss? sb}", "task", task, "args", args, "kwargs", kwargs, "options",
                  "subtask_type", type, "immutable", 0);
    return s; /* json_pack's "o" steals even on failure */
}

json_t *cc_sig(const char *task, json_t *args, json_t *kwargs)
{
    if (task == NULL || (args && !json_is_array(args)) || (kwargs && !json_is_object(kwargs))) {
        json_decref(args);
        json_decref(kwargs);
        return NULL;
    }
    return build(task, args ? args : json_array(), kwargs ? kwargs : json_object(), NULL);
}

json_t *cc_sig_set(json_t *sig, const char *name, json_t *value)
{
    json_t *o = get(sig, "options");

    if (!json_is_object(o) || name == NULL || json_object_set_new(o, name, value) != 0) {
        if (!json_is_object(o) || name == NULL)
            json_decref(value);
        json_decref(sig);
        return NULL;
    }
    return sig;
}

json_t *cc_sig_immutable(json_t *sig)
{
    if (!json_is_object(sig) || json_object_set_new(sig, "immutable", json_true()) != 0) {
        json_decref(sig);
        return NULL;
    }
    return sig;
}

/* Signature.append_to_list_option(key, value): options[key] as a list, no duplicates. */
static int append_list_option(json_t *sig, const char *key, json_t *value)
{
    json_t *o = get(sig, "options"), *items;
    size_t i;
    json_t *v;

    if (!json_is_object(o))
        return -1;
    items = json_object_get(o, key);
    if (items == NULL || json_is_null(items)) {
        if (json_object_set_new(o, key, items = json_array()) != 0)
            return -1;
    } else if (!json_is_array(items)) {
        json_t *l = json_pack("[O]", items);

        if (l == NULL || json_object_set_new(o, key, l) != 0)
            return -1;
        items = l;
    }
    json_array_foreach(items, i, v)
    {
        if (json_equal(v, value))
            return 0;
    }
    return json_array_append(items, value);
}

static json_t *link_common(json_t *sig, json_t *cb, bool is_error)
{
    const json_t *t = get(sig, "subtask_type");
    const char *ty = json_is_string(t) ? json_string_value(t) : "";
    int bad = cb == NULL || !json_is_object(sig);

    if (!bad && strcmp(ty, "chord") == 0) {
        /* chord.link / link_error: on the body */
        json_t *body = get(get(sig, "kwargs"), "body");

        bad = !json_is_object(body) ||
              append_list_option(body, is_error ? "link_error" : "link", cb) != 0;
    } else if (!bad && strcmp(ty, "group") == 0) {
        json_t *tasks = get(get(sig, "kwargs"), "tasks");
        size_t i;
        json_t *m;

        if (!is_error) {
            /* group.link: an immutable copy linked to the first task */
            json_t *c = json_deep_copy(cb);

            bad = json_array_size(tasks) == 0 || c == NULL ||
                  json_object_set_new(c, "immutable", json_true()) != 0 ||
                  append_list_option(json_array_get(tasks, 0), "link", c) != 0;
            json_decref(c);
        } else {
            /* group.link_error: on every member */
            json_array_foreach(tasks, i, m)
            {
                if (append_list_option(m, "link_error", cb) != 0)
                    bad = 1;
            }
        }
    } else if (!bad) {
        bad = append_list_option(sig, is_error ? "link_error" : "link", cb) != 0;
    }
    json_decref(cb);
    if (bad) {
        json_decref(sig);
        return NULL;
    }
    return sig;
}

json_t *cc_sig_link(json_t *sig, json_t *callback)
{
    return link_common(sig, callback, false);
}

json_t *cc_sig_link_error(json_t *sig, json_t *errback)
{
    return link_common(sig, errback, true);
}

/* The NULL-terminated argument list as a JSON array (steals each). */
static json_t *collect(json_t *first, va_list ap)
{
    json_t *tasks = json_array(), *s = first;
    bool bad = tasks == NULL;

    for (; s != NULL; s = va_arg(ap, json_t *)) {
        if (!bad)
            bad = !json_is_object(s) || json_array_append(tasks, s) != 0;
        json_decref(s);
    }
    if (bad) {
        json_decref(tasks);
        return NULL;
    }
    return tasks;
}

static const char *type_of(const json_t *s)
{
    const json_t *t = get(s, "subtask_type");

    return json_is_string(t) ? json_string_value(t) : "";
}

static json_t *make_chain(json_t *tasks)
{
    return tasks ? build("celery.chain", json_array(), json_pack("{so}", "tasks", tasks), "chain")
                 : NULL;
}

/* maybe_unroll_group: a one-member group is that member. Steals g. */
static json_t *unroll1(json_t *g)
{
    json_t *tasks = get(get(g, "kwargs"), "tasks");
    json_t *one;

    if (json_array_size(tasks) != 1)
        return g;
    one = json_incref(json_array_get(tasks, 0));
    json_decref(g);
    return one;
}

/* tasks of `a` (a chain) + [b] or + b's tasks (b a chain). Steals both. */
static json_t *concat_chain(json_t *a, json_t *b, bool b_is_chain)
{
    json_t *tasks = json_copy(get(get(a, "kwargs"), "tasks"));

    if (tasks == NULL || (b_is_chain ? json_array_extend(tasks, get(get(b, "kwargs"), "tasks"))
                                     : json_array_append(tasks, b)) != 0) {
        json_decref(tasks);
        tasks = NULL;
    }
    json_decref(a);
    json_decref(b);
    return make_chain(tasks);
}

/* Python's `a | b` on signatures (Signature/_chain/group/_chord.__or__). Steals both. */
static json_t *sig_or(json_t *a, json_t *b, int depth)
{
    const char *ta = type_of(a), *tb = type_of(b);

    if (a == NULL || b == NULL || depth > DEPTH_MAX) {
        json_decref(a);
        json_decref(b);
        return NULL;
    }
    if (strcmp(ta, "group") == 0) /* group | x -> chord(group, x) */
        return cc_chord(a, b);
    if (strcmp(ta, "chain") == 0) {
        json_t *tasks = get(get(a, "kwargs"), "tasks");
        size_t n = json_array_size(tasks);
        json_t *last = n ? json_array_get(tasks, n - 1) : NULL;

        if (strcmp(tb, "group") == 0) {
            b = unroll1(b);
            if (n == 0) {
                json_decref(a);
                return b;
            }
            return concat_chain(a, b, false);
        }
        if (strcmp(tb, "chain") == 0)
            return concat_chain(a, b, true);
        if (last && strcmp(type_of(last), "group") == 0) {
            /* CHAIN [last item is group] | TASK -> chord */
            json_t *ch = cc_chord(json_incref(last), b);

            if (ch == NULL || json_array_set_new(tasks, n - 1, ch) != 0) {
                json_decref(a);
                return NULL;
            }
            return a;
        }
        if (last && strcmp(type_of(last), "chord") == 0) {
            /* CHAIN [last item is chord] -> chain with chord body */
            json_t *kw = get(last, "kwargs");
            json_t *nb = sig_or(json_incref(get(kw, "body")), b, depth + 1);

            if (nb == NULL || json_object_set_new(kw, "body", nb) != 0) {
                json_decref(a);
                return NULL;
            }
            return a;
        }
        return concat_chain(a, b, false);
    }
    if (strcmp(ta, "chord") == 0 && strcmp(tb, "group") != 0 && strcmp(tb, "chain") != 0) {
        /* chord | task -> attach to body */
        json_t *kw = get(a, "kwargs");
        json_t *nb = sig_or(json_incref(get(kw, "body")), b, depth + 1);

        if (nb == NULL || json_object_set_new(kw, "body", nb) != 0) {
            json_decref(a);
            return NULL;
        }
        return a;
    }
    /* task (or chord) | x */
    if (strcmp(tb, "chain") == 0) {
        json_t *tasks = json_pack("[O]", a);

        if (tasks == NULL || json_array_extend(tasks, get(get(b, "kwargs"), "tasks")) != 0) {
            json_decref(tasks);
            tasks = NULL;
        }
        json_decref(a);
        json_decref(b);
        return make_chain(tasks);
    }
    if (strcmp(tb, "group") == 0)
        b = unroll1(b);
    return make_chain(json_pack("[oo]", a, b));
}

json_t *cc_chain(json_t *first, ...)
{
    va_list ap;
    json_t *tasks, *acc;
    size_t i;
    json_t *t;

    va_start(ap, first);
    tasks = collect(first, ap);
    va_end(ap);
    if (tasks == NULL)
        return NULL;
    if (json_array_size(tasks) == 1)
        return make_chain(tasks); /* chain(x): _chain(x) */
    /* chain(a, b, ...) is reduce(operator.or_, tasks, chain()) */
    acc = make_chain(json_array());
    json_array_foreach(tasks, i, t)
    {
        acc = sig_or(acc, json_incref(t), 0);
    }
    json_decref(tasks);
    return acc;
}

json_t *cc_group(json_t *first, ...)
{
    va_list ap;
    json_t *tasks;

    va_start(ap, first);
    tasks = collect(first, ap);
    va_end(ap);
    if (tasks == NULL)
        return NULL;
    if (json_array_size(tasks) == 1 && strcmp(type_of(json_array_get(tasks, 0)), "group") == 0) {
        /* group(g): g's tasks */
        json_t *inner = json_incref(get(get(json_array_get(tasks, 0), "kwargs"), "tasks"));

        json_decref(tasks);
        tasks = inner;
        if (tasks == NULL)
            return NULL;
    }
    return build("celery.group", json_array(), json_pack("{so}", "tasks", tasks), "group");
}

json_t *cc_chord(json_t *header, json_t *body)
{
    json_t *list = NULL;
    const json_t *t = get(header, "subtask_type");

    /* _maybe_group: a group (or chain) gives its tasks, one signature becomes [sig] */
    if (json_is_array(header))
        list = json_incref(header);
    else if (json_is_string(t) && (strcmp(json_string_value(t), "group") == 0 ||
                                   strcmp(json_string_value(t), "chain") == 0))
        list = json_incref(get(get(header, "kwargs"), "tasks"));
    else if (json_is_object(header))
        list = json_pack("[O]", header);
    json_decref(header);
    if (list == NULL || !json_is_object(body)) {
        json_decref(list);
        json_decref(body);
        return NULL;
    }
    return build("celery.chord", json_array(),
                 json_pack("{s{}soso}", "kwargs", "header", list, "body", body), "chord");
}
