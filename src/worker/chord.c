/* Chords on the Redis result backend (see chord.h for the keys and the calling protocol).
 *
 * Design. Celery's worker adds a finished member with one MULTI (ZADD .j <group_index>
 * <member>, ZCOUNT .j, GET .t, GET .s, EXPIRE x3) and fires the body when ZCOUNT equals
 * .s + .t; whichever worker's MULTI brings the count there is the only one to see it, since
 * MULTIs are serialised. We do the same in one Lua script, which lets us add two things
 * Python's MULTI cannot, without changing what a Python worker reads or writes:
 *
 *  - A redelivered member that runs again (acks_late, the worker lost before the ack) would
 *    add a second member when its result differs (a timestamp, a random value): the count
 *    then reaches the chord size one member early and the body fires with the wrong
 *    results. The script first looks at the members already scored with this group_index
 *    (ZRANGEBYSCORE i i: O(log n), group indexes are unique within a chord) and skips the
 *    ZADD when one carries this task id.
 *  - Exactly once, and never lost: the member whose ZADD completed the chord records its
 *    task id in celeryc-chord-completer-<gid>. The keys are deleted (cc_chord_done) only
 *    after the caller's publishes were confirmed, so a crash in between leaves them; the
 *    redelivered completer then finds the count complete, its own member present and its id
 *    recorded, and fires again (the body has a fixed task id, so a client sees one result).
 *    Any other member seeing a complete count without having added to it (a late twin of a
 *    member that was counted) does not fire.
 *
 * Python workers completing other members use their MULTI on the same keys: the member bytes
 * are identical (Python's json.dumps separators, ASCII escapes), so either side reads the
 * other's members, and a Python worker that completes the chord fires the body itself.
 *
 * Failures: a member in FAILURE/REVOKED makes the body fail, when the chord completes, with
 * celery.exceptions.ChordError("Dependency <tid> raised ValueError('boom')") stored on the
 * body's id and the body's errbacks applied (Celery's chord_error_from_stack). Unlike Celery,
 * whose ChordError path never deletes the keys (they expire), we delete them after the
 * errbacks were published, so a member redelivered later does not fail the body twice.
 *
 * result_chord_ordered=false (Celery's transport option of that name) keeps members in a list
 * (RPUSH/LLEN, LRANGE: completion order) instead of the ZSET, without the duplicate check.
 *
 * Reference: celery-wire.md §3.4; celery/backends/redis.py on_chord_part_return,
 * _unpack_chord_result; celery/backends/base.py chord_error_from_stack; celery/result.py
 * GroupResult.join.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chord.h"
#include "log.h"
#include "pyrepr.h"
#include "redis.h"
#include "result.h"
#include "strbuf.h"
#include "util.h"

/* ---- Pure helpers --------------------------------------------------------------------- */

char *cc_chord_member_encode(const char *tid, const char *state, const json_t *result)
{
    struct cc_strbuf b;

    cc_strbuf_init(&b, 0);
    cc_strbuf_puts(&b, "[1, ");
    cc_strbuf_json_str(&b, tid, strlen(tid));
    cc_strbuf_puts(&b, ", ");
    cc_strbuf_json_str(&b, state, strlen(state));
    cc_strbuf_puts(&b, ", ");
    if (result == NULL)
        cc_strbuf_puts(&b, "null");
    else
        cc_strbuf_json(&b, result);
    cc_strbuf_putc(&b, ']');
    return cc_strbuf_take(&b, NULL);
}

int cc_chord_member_decode(const char *s, size_t len, char **tid, char **state, json_t **result,
                           struct cc_err *err)
{
    json_error_t jerr;
    json_t *a = json_loadb(s, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    int rc = CC_OK;

    *tid = *state = NULL;
    *result = NULL;
    if (a == NULL) {
        rc = cc_err_set(err, CC_EBADMSG, "chord member is not JSON: %s", jerr.text);
        goto out;
    }
    if (!json_is_array(a) || json_array_size(a) != 4 || !json_is_string(json_array_get(a, 1)) ||
        !json_is_string(json_array_get(a, 2))) {
        rc = cc_err_set(err, CC_EBADMSG, "chord member is not [1, tid, state, result]");
        goto out;
    }
    *tid = strdup(json_string_value(json_array_get(a, 1)));
    *state = strdup(json_string_value(json_array_get(a, 2)));
    *result = json_incref(json_array_get(a, 3));
    if (*tid == NULL || *state == NULL) {
        free(*tid);
        free(*state);
        json_decref(*result);
        *tid = *state = NULL;
        *result = NULL;
        rc = cc_err_set(err, CC_ENOMEM, "out of memory");
    }
out:
    json_decref(a);
    return rc;
}

bool cc_chord_state_propagates(const char *state)
{
    return state != NULL && (strcmp(state, "FAILURE") == 0 || strcmp(state, "REVOKED") == 0);
}

char *cc_chord_exc_repr(const json_t *result)
{
    const json_t *type = json_object_get(result, "exc_type");
    const json_t *msg = json_object_get(result, "exc_message");

    if (json_is_object(result) && json_is_string(type)) {
        /* exception_to_python: cls(*exc_message) for a list, cls(exc_message) otherwise;
         * repr() names the class by its __name__ (the last part of a dotted qualname). */
        const char *name = strrchr(json_string_value(type), '.');
        json_t *args = json_is_array(msg) ? json_incref((json_t *)msg) : json_array();
        char *out;

        if (args == NULL)
            return NULL;
        if (!json_is_array(msg) && msg != NULL && json_array_append(args, (json_t *)msg) != 0) {
            json_decref(args);
            return NULL;
        }
        out = cc_pyrepr_exc(name != NULL ? name + 1 : json_string_value(type), args);
        json_decref(args);
        return out;
    }
    return cc_pyrepr(result, 0, 0);
}

char *cc_chord_dependency_error(const char *tid, const json_t *result)
{
    char *r = cc_chord_exc_repr(result), *out = NULL;

    if (r != NULL && asprintf(&out, "Dependency %s raised %s", tid, r) < 0)
        out = NULL;
    free(r);
    return out;
}

int cc_chord_unpack(const json_t *members, json_t **results, char **error_text, struct cc_err *err)
{
    json_t *out = json_array();
    size_t i;
    const json_t *m;

    *results = NULL;
    *error_text = NULL;
    if (out == NULL)
        return cc_err_set(err, CC_ENOMEM, "out of memory");
    json_array_foreach(members, i, m)
    {
        const json_t *tid = json_array_get(m, 1), *state = json_array_get(m, 2);
        const json_t *value = json_array_get(m, 3);

        if (!json_is_string(tid) || !json_is_string(state) || json_array_size(m) != 4) {
            json_decref(out);
            return cc_err_set(err, CC_EBADMSG, "chord member %zu is not [1, tid, state, result]",
                              i);
        }
        if (cc_chord_state_propagates(json_string_value(state))) {
            json_decref(out);
            *error_text = cc_chord_dependency_error(json_string_value(tid), value);
            return *error_text != NULL ? CC_OK : cc_err_set(err, CC_ENOMEM, "out of memory");
        }
        if (json_array_append(out, value != NULL ? (json_t *)value : json_null()) != 0) {
            json_decref(out);
            return cc_err_set(err, CC_ENOMEM, "out of memory");
        }
    }
    *results = out;
    return CC_OK;
}

/* ---- Joining result tuples (GroupResult.join) ----------------------------------------- */

struct join_state {
    cc_chord_fetch_fn fetch;
    void *arg;
    bool is_ready;
    char *failed_id;
    char *failed_repr;
};

static bool join_state_is_ready(const char *s)
{
    return strcmp(s, "SUCCESS") == 0 || strcmp(s, "FAILURE") == 0 || strcmp(s, "REVOKED") == 0;
}

/* Walk `tuples` (array of result tuples) into *out (new array). */
static int join_walk(struct join_state *js, const json_t *tuples, json_t **out, int depth,
                     struct cc_err *err)
{
    json_t *acc = json_array();
    size_t i;
    const json_t *t;
    int rc = CC_OK;

    *out = NULL;
    if (acc == NULL)
        return cc_err_set(err, CC_ENOMEM, "out of memory");
    if (!json_is_array(tuples) || depth > 32) {
        rc = cc_err_set(err, CC_EBADMSG, "chord header: result tuples are not a list");
        goto out;
    }
    json_array_foreach(tuples, i, t)
    {
        const json_t *head = json_array_get(t, 0), *kids = json_array_get(t, 1);
        const json_t *id = json_array_get(head, 0);
        json_t *v = NULL;

        if (!json_is_array(t) || !json_is_string(id)) {
            rc = cc_err_set(err, CC_EBADMSG, "chord header: bad result tuple %zu", i);
            goto out;
        }
        if (json_is_array(kids)) { /* a nested GroupResult joins to a list */
            if ((rc = join_walk(js, kids, &v, depth + 1, err)) != CC_OK)
                goto out;
        } else {
            int frc = CC_OK;
            json_t *meta = js->fetch(json_string_value(id), js->arg, &frc, err);
            const char *st = json_string_value(json_object_get(meta, "status"));

            if (frc != CC_OK) {
                json_decref(meta);
                rc = frc;
                goto out;
            }
            if (st == NULL || !join_state_is_ready(st)) {
                js->is_ready = false;
            } else if (cc_chord_state_propagates(st) && js->failed_id == NULL) {
                js->failed_id = strdup(json_string_value(id));
                js->failed_repr = cc_chord_exc_repr(json_object_get(meta, "result"));
                if (js->failed_id == NULL || js->failed_repr == NULL) {
                    json_decref(meta);
                    rc = cc_err_set(err, CC_ENOMEM, "out of memory");
                    goto out;
                }
            } else {
                json_t *r = json_object_get(meta, "result");

                v = json_incref(r != NULL ? r : json_null());
            }
            json_decref(meta);
        }
        if (json_array_append_new(acc, v != NULL ? v : json_null()) != 0) {
            rc = cc_err_set(err, CC_ENOMEM, "out of memory");
            goto out;
        }
    }
    *out = acc;
    acc = NULL;
out:
    json_decref(acc);
    return rc;
}

int cc_chord_join(const json_t *tuples, cc_chord_fetch_fn fetch, void *arg, bool *is_ready,
                  json_t **results, char **failed_id, char **failed_repr, struct cc_err *err)
{
    struct join_state js = {.fetch = fetch, .arg = arg, .is_ready = true};
    json_t *acc = NULL;
    int rc = join_walk(&js, tuples, &acc, 0, err);

    *is_ready = false;
    *results = NULL;
    *failed_id = *failed_repr = NULL;
    if (rc != CC_OK) {
        free(js.failed_id);
        free(js.failed_repr);
        return rc;
    }
    *is_ready = js.is_ready;
    if (js.is_ready && js.failed_id != NULL) {
        *failed_id = js.failed_id;
        *failed_repr = js.failed_repr;
        json_decref(acc);
    } else {
        free(js.failed_id);
        free(js.failed_repr);
        if (js.is_ready)
            *results = acc;
        else
            json_decref(acc);
    }
    return CC_OK;
}

long cc_chord_unlock_max_retries(const struct cc_config *cfg, double interval_s)
{
    double horizon_s = cfg != NULL && cfg->result_expires_s > 0 ? (double)cfg->result_expires_s : 0;
    long n;

    if (horizon_s <= 0)
        return CC_CHORD_UNLOCK_NEVER_EXPIRES;
    if (!(interval_s > 0))
        interval_s = CC_CHORD_UNLOCK_INTERVAL_S;
    n = (long)ceil(horizon_s / interval_s);
    return n < CC_CHORD_UNLOCK_MIN_RETRIES ? CC_CHORD_UNLOCK_MIN_RETRIES : n;
}

/* ---- Executor context ----------------------------------------------------------------- */

static _Thread_local struct cc_backend *chord_exec_be;
static _Thread_local const struct cc_config *chord_exec_cfg;

void cc_chord_executor_set(struct cc_backend *be, const struct cc_config *cfg)
{
    chord_exec_be = be;
    chord_exec_cfg = cfg;
}

struct cc_backend *cc_chord_executor_backend(const struct cc_config **cfg)
{
    if (cfg != NULL)
        *cfg = chord_exec_cfg;
    return chord_exec_be;
}

/* ---- Redis ---------------------------------------------------------------------------- */

/* KEYS: .j .t .s completer. ARGV: member, score ("+inf" or the group_index), the member's
 * prefix '[1, "<tid>", ' (same task id), expires seconds (0: none), tid, "1" for the ordered
 * ZSET or "0" for the list (result_chord_ordered=False: RPUSH/LLEN, no duplicate check, as
 * finding one in a list is O(n)). Returns {added (0/1), count, fire (0/1)}. */
static const char chord_part_lua[] =
    "local j, t, s, c = KEYS[1], KEYS[2], KEYS[3], KEYS[4]\n"
    "local member, score, prefix = ARGV[1], ARGV[2], ARGV[3]\n"
    "local ttl, tid = tonumber(ARGV[4]), ARGV[5]\n"
    "local added, count = 0, 0\n"
    "if ARGV[6] == '1' then\n"
    "  local dup = false\n"
    "  if score ~= '+inf' then\n"
    "    for _, m in ipairs(redis.call('ZRANGEBYSCORE', j, score, score)) do\n"
    "      if string.sub(m, 1, #prefix) == prefix then dup = true end\n"
    "    end\n"
    "  end\n"
    "  if not dup then added = redis.call('ZADD', j, score, member) end\n"
    "  count = redis.call('ZCOUNT', j, '-inf', '+inf')\n"
    "else\n"
    "  count = redis.call('RPUSH', j, member)\n"
    "  added = 1\n"
    "end\n"
    "local tv = redis.call('GET', t)\n"
    "local sv = redis.call('GET', s)\n"
    "if ttl > 0 then\n"
    "  redis.call('EXPIRE', j, ttl)\n"
    "  redis.call('EXPIRE', t, ttl)\n"
    "  redis.call('EXPIRE', s, ttl)\n"
    "end\n"
    "local fire = 0\n"
    "if sv then\n"
    "  local total = (tonumber(sv) or -1) + (tonumber(tv) or 0)\n"
    "  if count == total then\n"
    "    if added == 1 then\n"
    "      if ttl > 0 then redis.call('SET', c, tid, 'EX', ttl) else redis.call('SET', c, tid) "
    "end\n"
    "      fire = 1\n"
    "    elseif redis.call('GET', c) == tid then\n"
    "      fire = 1\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return {added, count, fire}\n";

/* The join's keys, sized from the group id (no fixed buffer: a group id is as long as the
 * message limits allow). Free with chord_keys_free. */
struct chord_keys {
    char *j, *t, *s, *c, *h;
};

static char *chord_key(const char *prefix, const char *gid, const char *suffix)
{
    size_t a = strlen(prefix), b = strlen(gid), c = strlen(suffix);
    char *k = cc_xmalloc(a + b + c + 1);

    memcpy(k, prefix, a);
    memcpy(k + a, gid, b);
    memcpy(k + a + b, suffix, c + 1);
    return k;
}

static void chord_keys_make(const char *gid, struct chord_keys *k)
{
    k->j = chord_key(CC_CHORD_KEY_PREFIX, gid, ".j");
    k->t = chord_key(CC_CHORD_KEY_PREFIX, gid, ".t");
    k->s = chord_key(CC_CHORD_KEY_PREFIX, gid, ".s");
    k->c = chord_key(CC_CHORD_COMPLETER_PREFIX, gid, "");
    k->h = chord_key(CC_CHORD_KEY_PREFIX, gid, "");
}

static void chord_keys_free(struct chord_keys *k)
{
    free(k->j);
    free(k->t);
    free(k->s);
    free(k->c);
    free(k->h);
    memset(k, 0, sizeof(*k));
}

static struct cc_redis *chord_redis(struct cc_backend *be, struct cc_err *err)
{
    struct cc_redis *r = cc_backend_redis_client(be);

    if (r == NULL)
        cc_err_set(err, CC_EBACKEND, "result backend: no Redis client");
    return r;
}

/* GET `key` as a JSON value: CC_OK and *out (new reference, NULL when absent). */
static int chord_get_json(struct cc_redis *r, const char *key, json_t **out, struct cc_err *err)
{
    const char *argv[2] = {"GET", key};
    redisReply *rep = cc_redis_cmd(r, 2, argv, NULL, err);
    json_error_t jerr;
    int rc = CC_OK;

    *out = NULL;
    if (rep == NULL)
        return CC_EBACKEND;
    if (rep->type == REDIS_REPLY_STRING) {
        *out = json_loadb(rep->str, rep->len, JSON_DECODE_ANY, &jerr);
        if (*out == NULL)
            rc = cc_err_set(err, CC_EBADMSG, "%s is not JSON: %s", key, jerr.text);
    } else if (rep->type != REDIS_REPLY_NIL) {
        rc = cc_err_set(err, CC_EBACKEND, "GET %s: %s", key,
                        rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
    }
    freeReplyObject(rep);
    return rc;
}

static json_t *chord_fetch_meta(const char *task_id, void *arg, int *rc, struct cc_err *err)
{
    char *key = cc_backend_redis_key_dup(task_id, NULL);
    json_t *meta = NULL;

    *rc = chord_get_json(arg, key, &meta, err);
    free(key);
    return meta;
}

int cc_chord_unlock_join(struct cc_backend *be, const json_t *tuples, bool *is_ready,
                         json_t **results, char **failed_id, char **failed_repr, struct cc_err *err)
{
    struct cc_redis *r = cc_backend_redis_client(be);

    *is_ready = false;
    *results = NULL;
    *failed_id = *failed_repr = NULL;
    if (r == NULL)
        return cc_err_set(err, CC_EUNSUPP,
                          "celery.chord_unlock needs a Redis result backend on this worker");
    return cc_chord_join(tuples, chord_fetch_meta, r, is_ready, results, failed_id, failed_repr,
                         err);
}

/* The ordered results of a completed chord: *results, or *error_text (ChordError message). */
static int chord_collect(struct cc_redis *r, const struct chord_keys *k, bool is_ordered,
                         json_t **results, char **error_text, struct cc_err *err)
{
    const char *argv[4] = {is_ordered ? "ZRANGE" : "LRANGE", k->j, "0", "-1"};
    json_t *saved = NULL, *members = NULL;
    redisReply *rep = NULL;
    int rc;

    *results = NULL;
    *error_text = NULL;
    /* A complex header (a group inside it) was saved by the client's apply_chord: join it
     * to keep its structure, as Celery does with GroupResult.restore + join. */
    if ((rc = chord_get_json(r, k->h, &saved, err)) != CC_OK)
        goto out;
    if (saved != NULL) {
        const json_t *tuple = json_object_get(saved, "result");
        char *fid = NULL, *frepr = NULL;
        bool is_ready;

        rc = cc_chord_join(json_array_get(tuple, 1), chord_fetch_meta, r, &is_ready, results, &fid,
                           &frepr, err);
        if (rc == CC_OK && fid != NULL) {
            /* join(propagate=True) raised the member's exception; Celery wraps it. */
            if (asprintf(error_text, "Join error: %s", frepr) < 0)
                rc = cc_err_set(err, CC_ENOMEM, "out of memory");
        } else if (rc == CC_OK && !is_ready) {
            if ((*error_text = strdup("Join error: TimeoutError('The operation timed out.')")) ==
                NULL)
                rc = cc_err_set(err, CC_ENOMEM, "out of memory");
        }
        free(fid);
        free(frepr);
        goto out;
    }
    if ((rep = cc_redis_cmd(r, 4, argv, NULL, err)) == NULL) {
        rc = CC_EBACKEND;
        goto out;
    }
    if (rep->type != REDIS_REPLY_ARRAY) {
        rc = cc_err_set(err, CC_EBACKEND, "%s %s: %s", argv[0], k->j,
                        rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
        goto out;
    }
    if ((members = json_array()) == NULL) {
        rc = cc_err_set(err, CC_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < rep->elements; i++) {
        const redisReply *e = rep->element[i];
        json_error_t jerr;
        json_t *m;

        if (e->type != REDIS_REPLY_STRING ||
            (m = json_loadb(e->str, e->len, JSON_DECODE_ANY, &jerr)) == NULL) {
            rc = cc_err_set(err, CC_EBADMSG, "%s: member %zu is not JSON", k->j, i);
            goto out;
        }
        if (json_array_append_new(members, m) != 0) {
            rc = cc_err_set(err, CC_ENOMEM, "out of memory");
            goto out;
        }
    }
    rc = cc_chord_unpack(members, results, error_text, err);
out:
    if (rep != NULL)
        freeReplyObject(rep);
    json_decref(saved);
    json_decref(members);
    return rc;
}

static const char *chord_body_id(const json_t *body)
{
    return json_string_value(json_object_get(json_object_get(body, "options"), "task_id"));
}

int cc_chord_fail_body(struct cc_backend *be, const json_t *body, const char *text,
                       const struct cc_canvas_ctx *ctx, struct cc_canvas_plan *plan,
                       struct cc_err *err)
{
    const char *body_id = chord_body_id(body);
    const json_t *errbacks = json_object_get(json_object_get(body, "options"), "link_error");
    struct cc_canvas_ctx ectx;
    struct cc_result res;
    json_t *exc;
    char *tb = NULL;
    int rc;

    if (body_id == NULL)
        return cc_err_set(err, CC_EINVAL, "chord body has no options.task_id");
    /* chord_error_from_stack: errbacks first, with a fake request whose id is the body's
     * and whose root_id is unset (so root = the body's id), then mark_as_failure(body id)
     * without a request (no group_id/parent_id in the meta). */
    if (plan != NULL && ctx != NULL && json_is_array(errbacks) && json_array_size(errbacks) > 0) {
        ectx = *ctx;
        ectx.parent_id = body_id;
        ectx.root_id = body_id;
        if ((rc = cc_canvas_on_failure(plan, errbacks, body_id, &ectx, err)) != CC_OK)
            return rc;
    }
    exc = cc_result_exc_new("celery.exceptions", "ChordError", json_pack("[s]", text));
    if (exc == NULL || asprintf(&tb,
                                "Traceback (most recent call last):\n"
                                "  File \"celeryc\", in on_chord_part_return\n"
                                "celery.exceptions.ChordError: %s\n",
                                text) < 0) {
        json_decref(exc);
        return cc_err_set(err, CC_ENOMEM, "out of memory");
    }
    memset(&res, 0, sizeof(res));
    res.task_id = body_id;
    res.status = "FAILURE";
    res.result = exc;
    res.traceback = tb;
    res.date_done_us = cc_now_us();
    rc = cc_backend_store(be, &res, err);
    json_decref(exc);
    free(tb);
    return rc;
}

int cc_chord_part_return(struct cc_backend *be, const struct cc_config *cfg,
                         const struct cc_task_request *req, const char *state, const json_t *result,
                         const struct cc_canvas_ctx *ctx, struct cc_canvas_plan *plan,
                         char **done_group, struct cc_err *err)
{
    const json_t *body = json_object_get(req->embed, "chord");
    struct chord_keys k = {0};
    struct cc_redis *r;
    char *member = NULL, *prefix = NULL, *error_text = NULL;
    char score[24], ttl[24];
    json_t *results = NULL;
    redisReply *rep = NULL;
    long long added, count, fire;
    int rc = CC_OK;

    *done_group = NULL;
    if (req->group == NULL || req->id == NULL || !json_is_object(body) ||
        cc_backend_redis_client(be) == NULL)
        return CC_OK;
    if ((r = chord_redis(be, err)) == NULL)
        return CC_EBACKEND;
    chord_keys_make(req->group, &k);
    member = cc_chord_member_encode(req->id, state, result);
    prefix = cc_chord_member_encode(req->id, "", NULL);
    if (member == NULL || prefix == NULL) {
        rc = cc_err_set(err, CC_ENOMEM, "out of memory");
        goto out;
    }
    /* '[1, "<tid>", "", null]' -> '[1, "<tid>", ' */
    prefix[strlen(prefix) - strlen("\"\", null]")] = '\0';
    if (req->group_index < 0)
        snprintf(score, sizeof(score), "+inf");
    else
        snprintf(score, sizeof(score), "%d", req->group_index);
    snprintf(ttl, sizeof(ttl), "%lld",
             (long long)(cfg->result_expires_s > 0 ? cfg->result_expires_s : 0));
    {
        const char *argv[] = {"EVAL",
                              chord_part_lua,
                              "4",
                              k.j,
                              k.t,
                              k.s,
                              k.c,
                              member,
                              score,
                              prefix,
                              ttl,
                              req->id,
                              cfg->result_chord_ordered ? "1" : "0"};

        rep = cc_redis_cmd(r, (int)(sizeof(argv) / sizeof(argv[0])), argv, NULL, err);
    }
    if (rep == NULL) {
        rc = CC_EBACKEND;
        goto out;
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 ||
        rep->element[0]->type != REDIS_REPLY_INTEGER) {
        rc = cc_err_set(err, CC_EBACKEND, "chord %s: %s", cc_log_str(req->group),
                        rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected script reply");
        goto out;
    }
    added = rep->element[0]->integer;
    count = rep->element[1]->integer;
    fire = rep->element[2]->integer;
    if (!added)
        cc_info("Chord %s: member %s was already counted (redelivered)", cc_log_str(req->group),
                cc_log_str(req->id));
    if (!fire)
        goto out;
    cc_debug("Chord %s complete (%lld members): firing the body", cc_log_str(req->group), count);
    if ((rc = chord_collect(r, &k, cfg->result_chord_ordered, &results, &error_text, err)) != CC_OK)
        goto out;
    if (error_text != NULL) {
        cc_error("Chord %s raised: ChordError(%s)", cc_log_str(req->group),
                 cc_log_strn(error_text, CC_LOG_TEXT_MAX));
        rc = cc_chord_fail_body(be, body, error_text, ctx, plan, err);
    } else {
        rc = cc_canvas_chord_body(plan, body, results, ctx, err);
        if (rc != CC_OK) {
            /* Celery: 'Callback error: <exc>' stored on the body. */
            char *text = NULL;
            struct cc_err ferr = {0};

            cc_error("Chord %s: could not apply the body: %s", cc_log_str(req->group), err->msg);
            if (rc != CC_ENOMEM && asprintf(&text, "Callback error: %s", err->msg) >= 0) {
                rc = cc_chord_fail_body(be, body, text, ctx, plan, &ferr);
                if (rc != CC_OK)
                    cc_err_set(err, rc, "%s", ferr.msg);
                free(text);
            }
        }
    }
    if (rc == CC_OK && (*done_group = strdup(req->group)) == NULL)
        rc = cc_err_set(err, CC_ENOMEM, "out of memory");
out:
    if (rep != NULL)
        freeReplyObject(rep);
    json_decref(results);
    free(error_text);
    free(member);
    free(prefix);
    chord_keys_free(&k);
    return rc;
}

int cc_chord_done(struct cc_backend *be, const char *group_id, struct cc_err *err)
{
    struct chord_keys k;
    struct cc_redis *r;
    redisReply *rep;
    int rc = CC_OK;

    if (group_id == NULL)
        return CC_OK;
    if ((r = chord_redis(be, err)) == NULL)
        return CC_EBACKEND;
    chord_keys_make(group_id, &k);
    {
        const char *argv[5] = {"DEL", k.j, k.t, k.s, k.c};

        rep = cc_redis_cmd(r, 5, argv, NULL, err);
    }
    chord_keys_free(&k);
    if (rep == NULL)
        return CC_EBACKEND;
    if (rep->type == REDIS_REPLY_ERROR)
        rc = cc_err_set(err, CC_EBACKEND, "DEL chord keys: %s", rep->str);
    freeReplyObject(rep);
    return rc;
}

int cc_chord_chain_fail_rest(struct cc_backend *be, const struct cc_config *cfg,
                             const struct cc_task_request *req, bool store, const json_t *exc,
                             const char *traceback, cc_chain_part_fn part, void *ud)
{
    const json_t *chain = req->embed != NULL ? json_object_get(req->embed, "chain") : NULL;
    const json_t *elem;
    size_t i;
    int rc = CC_OK;

    if (!json_is_array(chain))
        return CC_OK;
    json_array_foreach(chain, i, elem)
    {
        const json_t *opts = json_object_get(elem, "options");
        const json_t *tid = json_object_get(opts, "task_id");
        const json_t *gid = json_object_get(opts, "group_id");
        const json_t *gix = json_object_get(opts, "group_index");
        const json_t *chord = json_object_get(opts, "chord");
        const json_t *a = json_object_get(elem, "args"), *k = json_object_get(elem, "kwargs");
        const json_t *tn = json_object_get(elem, "task");
        struct cc_task_request step = {.group_index = -1};
        struct cc_err err = {0};

        if (!json_is_object(elem) || !json_is_string(tid))
            continue;
        step.id = json_string_value(tid);
        step.task = json_is_string(tn) ? json_string_value(tn) : NULL;
        step.root_id = req->root_id;
        step.group = json_is_string(gid) ? json_string_value(gid) : NULL;
        step.group_index = json_is_integer(gix) ? (int)json_integer_value(gix) : -1;
        if (store && cc_backend_store_state(be, cfg, &step, json_is_array(a) ? a : NULL,
                                            json_is_object(k) ? k : NULL, "FAILURE", exc, traceback,
                                            NULL, &err) != CC_OK) {
            rc = CC_EBACKEND;
            cc_error("Task %s[%s]: could not store FAILURE for its chain step %s: %s",
                     cc_log_str(req->task ? req->task : "?"), cc_log_str(req->id),
                     cc_log_str(step.id), err.msg);
        }
        if (part != NULL && json_is_object(chord) && step.group != NULL) {
            json_t *embed = json_pack("{sO}", "chord", chord);

            if (embed == NULL)
                continue;
            step.embed = embed;
            part(ud, &step, exc);
            json_decref(embed);
        }
    }
    return rc;
}
