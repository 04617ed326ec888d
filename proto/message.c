/* Celery task messages, protocol 2 and 1 (proto/message.h).
 *
 * Decode: size limit -> content type -> compression -> one json_loadb() -> protocol
 * detection -> field validation. Detection follows Python's on_task_received and the
 * strategy (celery/worker/strategy.py): headers["task"] -> protocol 2; if the body is then a
 * dict holding "args" it is the "hybrid" form (hybrid_to_proto2: fields from the body dict,
 * overridden by the message headers); else a dict body with "task" -> protocol 1
 * (proto1_to_proto2: everything in the body, `taskset` -> group, chain = null). Every field
 * is read through one lookup (field()) over "headers, then body dict", so the three forms
 * share the validation code.
 *
 * Strictness: we reject what makes the 5.2.6 worker crash or misbehave (2-element bodies and
 * 1-element timelimits are poison messages, §2.3a) and what the C worker cannot execute
 * (wrong JSON types), with CC_EBADMSG and a one-line reason. Informational headers
 * (origin, lang, argsrepr, kwargsrepr) of the wrong type are ignored, not fatal.
 *
 * Ownership: the parsed body is kept alive only through the references stored in the
 * struct (args, kwargs, embed); strings are strdup'ed. The broker's header object is
 * referenced (json_incref), not copied. Encode builds headers in Celery's key order (§2.2)
 * and the body with strbuf.c's json.dumps-compatible writer so bytes match what Python
 * publishes.
 *
 * Deviations from Python, documented: JSON integers beyond int64 and lone surrogate escapes
 * ("\ud800") are rejected by jansson (CC_EBADMSG); Python accepts them. A v1 message with
 * utc=false carries naive local times: we still read them as UTC (and keep utc=false so the
 * caller can log it). Wire reference: celery-wire.md §2.1-§2.3a, §2.6, §2.7.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <zlib.h>

#include "isotime.h"
#include "message.h"
#include "pyrepr.h"
#include "strbuf.h"

#define ARGSREPR_MAX 1024 /* Celery's argsrepr_maxsize / kwargsrepr_maxsize */

/* Where fields come from: the header table (v2, hybrid) and/or the body dict (v1, hybrid).
 * Headers win, as in hybrid_to_proto2's headers.update(message.headers). */
struct msg_src {
    const json_t *hdr;
    const json_t *dict;
};

static const json_t *field(const struct msg_src *s, const char *key)
{
    const json_t *v = NULL;

    if (s->hdr != NULL)
        v = json_object_get(s->hdr, key);
    if (v == NULL && s->dict != NULL)
        v = json_object_get(s->dict, key);
    return v;
}

/* ---- Small helpers --------------------------------------------------------------------- */

/* Copy a JSON string that must not hold NUL bytes. */
static int dup_jstr(const json_t *v, char **out)
{
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);

    if (memchr(s, '\0', n) != NULL)
        return CC_EBADMSG;
    *out = malloc(n + 1);
    if (*out == NULL)
        return CC_ENOMEM;
    memcpy(*out, s, n + 1);
    return CC_OK;
}

/* The size limit of a string field: CC_ETOOBIG naming the field (`what`), its size and the
 * limit, never its content (it may be 100 KB of anything). */
static int check_len(const char *what, size_t n, size_t max, struct cc_err *err)
{
    if (n <= max)
        return CC_OK;
    return cc_err_set(err, CC_ETOOBIG, "%s of %zu bytes is over the %zu-byte limit", what, n, max);
}

/* Optional string field of at most `max` bytes: absent/null -> NULL; string -> copy; other
 * -> CC_EBADMSG; longer -> CC_ETOOBIG. */
static int opt_str(const struct msg_src *s, const char *key, size_t max, char **out,
                   struct cc_err *err)
{
    const json_t *v = field(s, key);
    int rc;

    if (v == NULL || json_is_null(v))
        return CC_OK;
    if (!json_is_string(v))
        return cc_err_set(err, CC_EBADMSG, "%s is a %s, not a string", key, cc_pyrepr_type_name(v));
    if ((rc = check_len(key, json_string_length(v), max, err)) != CC_OK)
        return rc;
    rc = dup_jstr(v, out);
    if (rc == CC_EBADMSG)
        return cc_err_set(err, rc, "%s holds a NUL byte", key);
    if (rc != CC_OK)
        return cc_err_set(err, rc, "out of memory copying %s", key);
    return CC_OK;
}

/* Informational string (origin, argsrepr, ...): anything but a clean string is dropped; a
 * string over `max` bytes is refused like any other field (CC_ETOOBIG). */
static int info_str(const struct msg_src *s, const char *key, size_t max, char **out,
                    struct cc_err *err)
{
    const json_t *v = field(s, key);
    int rc;

    if (!json_is_string(v))
        return CC_OK;
    if ((rc = check_len(key, json_string_length(v), max, err)) != CC_OK)
        return rc;
    if (dup_jstr(v, out) == CC_EBADMSG)
        return CC_OK;
    if (*out == NULL)
        return cc_err_set(err, CC_ENOMEM, "out of memory copying %s", key);
    return CC_OK;
}

/* Bytes of a wire string quoted in an error text: at most `max`, never ending inside a UTF-8
 * character (an error text goes to the log). */
static int msg_quote_len(const char *str, size_t max)
{
    return (int)cc_strbuf_utf8_valid_prefix((const uint8_t *)str, strnlen(str, max));
}

static int opt_time(const struct msg_src *s, const char *key, char **out, int64_t *us,
                    struct cc_err *err)
{
    int rc = opt_str(s, key, CC_MSG_MAX_TIME_BYTES, out, err);

    if (rc != CC_OK || *out == NULL)
        return rc;
    if (cc_isotime_parse(*out, us) != CC_OK)
        return cc_err_set(err, CC_EBADMSG, "%s is not an ISO-8601 time: \"%.*s\"", key,
                          msg_quote_len(*out, 60), *out);
    return CC_OK;
}

static int get_retries(const struct msg_src *s, int *out, struct cc_err *err)
{
    const json_t *v = field(s, "retries");
    long long n;

    *out = 0;
    if (v == NULL || json_is_null(v))
        return CC_OK;
    if (json_is_integer(v)) {
        n = json_integer_value(v);
    } else if (json_is_string(v)) {
        /* Python's Request does int(retries) in places; "0" worked on 5.2.6 (§2.3a). */
        const char *str = json_string_value(v);
        char *end;

        errno = 0;
        n = strtoll(str, &end, 10);
        if (end == str || *end != '\0' || errno != 0 || json_string_length(v) != strlen(str))
            return cc_err_set(err, CC_EBADMSG, "retries is not a number: \"%.*s\"",
                              msg_quote_len(str, 40), str);
    } else {
        return cc_err_set(err, CC_EBADMSG, "retries is a %s, not an int", cc_pyrepr_type_name(v));
    }
    if (n < 0 || n > INT_MAX)
        return cc_err_set(err, CC_EBADMSG, "retries out of range: %lld", n);
    *out = (int)n;
    return CC_OK;
}

static int get_timelimit(const struct msg_src *s, struct cc_msg *m, struct cc_err *err)
{
    const json_t *v = field(s, "timelimit");
    double lim[2] = {0, 0};

    if (v == NULL || json_is_null(v))
        return CC_OK;
    /* Python unpacks `time_limit, soft_time_limit = timelimit`: anything but two elements
     * kills the 5.2.6 worker (§2.3a), so it is a bad message here. */
    if (!json_is_array(v) || json_array_size(v) != 2)
        return cc_err_set(err, CC_EBADMSG, "timelimit is not a 2-element list (%s of %zu)",
                          cc_pyrepr_type_name(v),
                          json_is_array(v) ? json_array_size(v) : (size_t)0);
    for (size_t i = 0; i < 2; i++) {
        const json_t *e = json_array_get(v, i);

        if (json_is_null(e))
            continue;
        if (!json_is_number(e))
            return cc_err_set(err, CC_EBADMSG, "timelimit[%zu] is a %s, not a number", i,
                              cc_pyrepr_type_name(e));
        lim[i] = json_number_value(e);
        if (!(lim[i] >= 0))
            return cc_err_set(err, CC_EBADMSG, "timelimit[%zu] is negative", i);
    }
    m->time_limit_s = lim[0];
    m->soft_time_limit_s = lim[1];
    return CC_OK;
}

static int get_group_index(const struct msg_src *s, int *out, struct cc_err *err)
{
    const json_t *v = field(s, "group_index");

    *out = -1;
    if (v == NULL || json_is_null(v))
        return CC_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT_MAX)
        return cc_err_set(err, CC_EBADMSG, "group_index is not a small int (%s)",
                          cc_pyrepr_type_name(v));
    *out = (int)json_integer_value(v);
    return CC_OK;
}

static int get_bool(const struct msg_src *s, const char *key, bool dflt, bool *out,
                    struct cc_err *err)
{
    const json_t *v = field(s, key);

    *out = dflt;
    if (v == NULL || json_is_null(v))
        return CC_OK;
    if (json_is_boolean(v))
        *out = json_is_true(v);
    else if (json_is_integer(v)) /* Python truthiness of an int */
        *out = json_integer_value(v) != 0;
    else
        return cc_err_set(err, CC_EBADMSG, "%s is a %s, not a bool", key, cc_pyrepr_type_name(v));
    return CC_OK;
}

/* Best-effort id/task for the log line of a rejected message; never fails. */
static void peek_ids(const json_t *hdr, struct cc_msg *m)
{
    const json_t *v;

    if (hdr == NULL)
        return;
    v = json_object_get(hdr, "id");
    if (m->id == NULL && json_is_string(v))
        (void)dup_jstr(v, &m->id);
    v = json_object_get(hdr, "task");
    if (m->task == NULL && json_is_string(v))
        (void)dup_jstr(v, &m->task);
}

/* ---- Content type and compression ------------------------------------------------------ */

static int check_content(const struct cc_msg_raw *raw, struct cc_err *err)
{
    static const struct {
        const char *type;
        const char *name;
    } known[] = {
        {"application/x-python-serialize", "pickle"},
        {"application/x-yaml", "yaml"},
        {"application/x-msgpack", "msgpack"},
        {"application/data", "raw"},
        {"application/text", "raw text"},
    };
    cc_bytes_t ct = raw->content_type;
    cc_bytes_t ce = raw->content_encoding;

    if (ct.p == NULL)
        return cc_err_set(err, CC_ECONTENT, "no content_type (only application/json accepted)");
    if (!cc_bytes_eq(ct, "application/json")) {
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
            if (cc_bytes_eq(ct, known[i].type))
                return cc_err_set(err, CC_ECONTENT,
                                  "refusing to deserialize untrusted content of type %s (%s)",
                                  known[i].name, known[i].type);
        }
        char shown[80]; /* escaped: a NUL byte must not end the text early (issue #14) */

        return cc_err_set(err, CC_ECONTENT,
                          "content type '%s' (%zu bytes) refused (only application/json)",
                          cc_bytes_escape(ct, 60, shown, sizeof(shown)), ct.len);
    }
    /* kombu decodes JSON bodies as UTF-8 text; "binary" skips that step (bytes are parsed
     * as UTF-8 JSON all the same). */
    if (ce.p != NULL && !(ce.len == 5 && strncasecmp((const char *)ce.p, "utf-8", 5) == 0) &&
        !(ce.len == 4 && strncasecmp((const char *)ce.p, "utf8", 4) == 0) &&
        !cc_bytes_eq(ce, "binary")) {
        char shown[80];

        return cc_err_set(err, CC_EENCODING, "content_encoding '%s' (%zu bytes) not supported",
                          cc_bytes_escape(ce, 60, shown, sizeof(shown)), ce.len);
    }
    return CC_OK;
}

/* Inflate a zlib (or gzip) stream into a new buffer of at most `cap` bytes. The buffer
 * doubles, so the total work is O(output). */
static int inflate_body(cc_bytes_t in, size_t cap, uint8_t **out, size_t *out_len,
                        struct cc_err *err)
{
    z_stream zs;
    size_t size = in.len < cap / 4 ? in.len * 4 : cap;
    uint8_t *buf = NULL;
    int zrc;
    int rc = CC_OK;

    memset(&zs, 0, sizeof(zs));
    if (size < 256)
        size = cap < 256 ? cap : 256;
    if (inflateInit2(&zs, 15 + 32) != Z_OK) /* +32: accept zlib and gzip headers */
        return cc_err_set(err, CC_ENOMEM, "inflateInit failed");
    buf = malloc(size + 1);
    if (buf == NULL) {
        rc = cc_err_set(err, CC_ENOMEM, "out of memory inflating body");
        goto out;
    }
    zs.next_in = (Bytef *)(uintptr_t)in.p;
    zs.avail_in = (uInt)in.len;
    for (;;) {
        zs.next_out = buf + zs.total_out;
        zs.avail_out = (uInt)(size - zs.total_out);
        zrc = inflate(&zs, Z_NO_FLUSH);
        if (zrc == Z_STREAM_END)
            break;
        if (zrc == Z_MEM_ERROR) {
            rc = cc_err_set(err, CC_ENOMEM, "out of memory inflating body");
            goto out;
        }
        if (zrc != Z_OK && !(zrc == Z_BUF_ERROR && zs.avail_out == 0)) {
            rc = cc_err_set(err, CC_EENCODING, "corrupt compressed body: %s",
                            zs.msg ? zs.msg : "truncated stream");
            goto out;
        }
        if (zs.avail_out == 0) {
            uint8_t *nb;

            if (size >= cap) {
                rc = cc_err_set(err, CC_ETOOBIG, "inflated body over %zu bytes", cap);
                goto out;
            }
            size = size > cap / 2 ? cap : size * 2;
            nb = realloc(buf, size + 1);
            if (nb == NULL) {
                rc = cc_err_set(err, CC_ENOMEM, "out of memory inflating body");
                goto out;
            }
            buf = nb;
        } else if (zs.avail_in == 0) {
            rc = cc_err_set(err, CC_EENCODING, "corrupt compressed body: truncated stream");
            goto out;
        }
    }
    if (zs.avail_in != 0) {
        rc = cc_err_set(err, CC_EENCODING, "corrupt compressed body: trailing bytes");
        goto out;
    }
    *out = buf;
    *out_len = zs.total_out;
    buf = NULL;
out:
    inflateEnd(&zs);
    free(buf);
    return rc;
}

/* ---- Decode ---------------------------------------------------------------------------- */

static int fill_embed(struct cc_msg *m, json_t *embed, struct cc_err *err)
{
    static const char *const keys[] = {"callbacks", "errbacks", "chain", "chord"};
    json_t **slots[] = {&m->callbacks, &m->errbacks, &m->chain, &m->chord};

    if (embed == NULL || json_is_null(embed)) {
        m->embed = json_object();
        if (m->embed == NULL)
            return cc_err_set(err, CC_ENOMEM, "out of memory");
        return CC_OK;
    }
    if (!json_is_object(embed))
        return cc_err_set(err, CC_EBADMSG, "embed is a %s, not a dict", cc_pyrepr_type_name(embed));
    m->embed = json_incref(embed);
    for (size_t i = 0; i < 4; i++) {
        json_t *v = json_object_get(embed, keys[i]);
        int want_obj = i == 3;

        if (v == NULL || json_is_null(v))
            continue;
        if (want_obj ? !json_is_object(v) : !json_is_array(v))
            return cc_err_set(err, CC_EBADMSG, "embed %s is a %s, not a %s", keys[i],
                              cc_pyrepr_type_name(v), want_obj ? "dict" : "list");
        *slots[i] = v;
    }
    return CC_OK;
}

/* Protocol 1 / hybrid: callbacks, errbacks and chord live in the body dict; chain is null. */
static int embed_from_dict(struct cc_msg *m, const json_t *dict, struct cc_err *err)
{
    static const char *const keys[] = {"callbacks", "errbacks", "chain", "chord"};
    json_t *e = json_object();

    if (e == NULL)
        return cc_err_set(err, CC_ENOMEM, "out of memory");
    for (size_t i = 0; i < 4; i++) {
        json_t *v = i == 2 ? NULL : json_object_get(dict, keys[i]);

        if (json_object_set(e, keys[i], v ? v : json_null()) != 0) {
            json_decref(e);
            return cc_err_set(err, CC_ENOMEM, "out of memory");
        }
    }
    {
        int rc = fill_embed(m, e, err);

        json_decref(e); /* fill_embed took its own reference */
        return rc;
    }
}

static int decode_fields(const struct msg_src *s, struct cc_msg *m, struct cc_err *err)
{
    const json_t *v;
    int rc;

    /* task and id first: every later failure can then be logged with them. peek_ids()
     * already copied them when the header table holds clean strings, and field() reads the
     * headers first, so a non-NULL copy is the validated value. */
    if (m->task == NULL) {
        v = field(s, "task");
        if (!json_is_string(v))
            return cc_err_set(err, CC_ENOTASK, "task name %s", v ? "is not a string" : "missing");
        if ((rc = dup_jstr(v, &m->task)) != CC_OK)
            return cc_err_set(err, rc == CC_ENOMEM ? rc : CC_ENOTASK, "task name unusable");
    }
    if (m->id == NULL) {
        v = field(s, "id");
        if (!json_is_string(v))
            return cc_err_set(err, CC_ENOID, "task id %s", v ? "is not a string" : "missing");
        if ((rc = dup_jstr(v, &m->id)) != CC_OK)
            return cc_err_set(err, rc == CC_ENOMEM ? rc : CC_ENOID, "task id unusable");
    }
    /* Checked on the copies, which peek_ids() may have made before any limit applied. */
    if ((rc = check_len("task id", strlen(m->id), CC_MSG_MAX_ID_BYTES, err)) != CC_OK ||
        (rc = check_len("task name", strlen(m->task), CC_MSG_MAX_NAME_BYTES, err)) != CC_OK)
        return rc;

    if ((rc = opt_str(s, "shadow", CC_MSG_MAX_NAME_BYTES, &m->shadow, err)) != CC_OK ||
        (rc = opt_str(s, "root_id", CC_MSG_MAX_ID_BYTES, &m->root_id, err)) != CC_OK ||
        (rc = opt_str(s, "parent_id", CC_MSG_MAX_ID_BYTES, &m->parent_id, err)) != CC_OK ||
        (rc = opt_str(s, "group", CC_MSG_MAX_ID_BYTES, &m->group, err)) != CC_OK ||
        (rc = get_group_index(s, &m->group_index, err)) != CC_OK ||
        (rc = get_retries(s, &m->retries, err)) != CC_OK ||
        (rc = opt_time(s, "eta", &m->eta, &m->eta_us, err)) != CC_OK ||
        (rc = opt_time(s, "expires", &m->expires, &m->expires_us, err)) != CC_OK ||
        (rc = get_timelimit(s, m, err)) != CC_OK ||
        (rc = get_bool(s, "ignore_result", false, &m->ignore_result, err)) != CC_OK ||
        (rc = info_str(s, "origin", CC_MSG_MAX_ORIGIN_BYTES, &m->origin, err)) != CC_OK ||
        (rc = info_str(s, "lang", CC_MSG_MAX_LANG_BYTES, &m->lang, err)) != CC_OK ||
        (rc = info_str(s, "argsrepr", CC_MSG_MAX_REPR_BYTES, &m->argsrepr, err)) != CC_OK ||
        (rc = info_str(s, "kwargsrepr", CC_MSG_MAX_REPR_BYTES, &m->kwargsrepr, err)) != CC_OK)
        return rc;
    return CC_OK;
}

/* args/kwargs of a v1 or hybrid body dict: body.get('args', ()), body.get('kwargs', {}). */
static int args_from_dict(struct cc_msg *m, const json_t *dict, struct cc_err *err)
{
    json_t *a = json_object_get(dict, "args");
    json_t *k = json_object_get(dict, "kwargs");

    if (a != NULL && !json_is_array(a))
        return cc_err_set(err, CC_EBADMSG, "args is a %s, not a list", cc_pyrepr_type_name(a));
    if (k != NULL && !json_is_object(k))
        return cc_err_set(err, CC_EBADMSG, "kwargs is a %s, not a dict", cc_pyrepr_type_name(k));
    m->args = a ? json_incref(a) : json_array();
    m->kwargs = k ? json_incref(k) : json_object();
    if (m->args == NULL || m->kwargs == NULL)
        return cc_err_set(err, CC_ENOMEM, "out of memory");
    return CC_OK;
}

static int decode_body(const struct cc_msg_raw *raw, json_t *body, struct cc_msg *m,
                       struct cc_err *err)
{
    const json_t *hdr = raw->headers;
    struct msg_src src = {NULL, NULL};
    int rc;

    if (json_is_object(hdr) && json_object_get(hdr, "task") != NULL) {
        m->protocol = 2;
        src.hdr = hdr;
        if (json_is_object(body) && json_object_get(body, "args") != NULL) {
            src.dict = body; /* hybrid */
            if ((rc = args_from_dict(m, body, err)) != CC_OK ||
                (rc = embed_from_dict(m, body, err)) != CC_OK)
                return rc;
            m->utc = !json_is_false(json_object_get(body, "utc"));
        } else {
            size_t n = json_is_array(body) ? json_array_size(body) : 0;
            json_t *a, *k;

            if (!json_is_array(body))
                return cc_err_set(err, CC_EBADMSG, "body is a %s, not [args, kwargs, embed]",
                                  cc_pyrepr_type_name(body));
            if (n != 3) /* 2 elements: the 5.2.6 poison message of §2.3a */
                return cc_err_set(err, CC_EBADMSG,
                                  "body has %zu elements, not 3 [args, kwargs, embed]", n);
            a = json_array_get(body, 0);
            k = json_array_get(body, 1);
            if (!json_is_array(a))
                return cc_err_set(err, CC_EBADMSG, "args is a %s, not a list",
                                  cc_pyrepr_type_name(a));
            if (!json_is_object(k))
                return cc_err_set(err, CC_EBADMSG, "kwargs is a %s, not a dict",
                                  cc_pyrepr_type_name(k));
            m->args = json_incref(a);
            m->kwargs = json_incref(k);
            if ((rc = fill_embed(m, json_array_get(body, 2), err)) != CC_OK)
                return rc;
        }
        m->headers = json_incref((json_t *)hdr);
    } else if (json_is_object(body) && json_object_get(body, "task") != NULL) {
        const json_t *ts;

        m->protocol = 1;
        src.dict = body;
        if ((rc = decode_fields(&src, m, err)) != CC_OK ||
            (rc = args_from_dict(m, body, err)) != CC_OK ||
            (rc = embed_from_dict(m, body, err)) != CC_OK)
            return rc;
        m->utc = !json_is_false(json_object_get(body, "utc"));
        m->headers = json_object();
        if (m->headers == NULL)
            return cc_err_set(err, CC_ENOMEM, "out of memory");
        /* proto1_to_proto2: body['group'] = body['taskset'] when the key exists. */
        ts = json_object_get(body, "taskset");
        if (ts != NULL) {
            free(m->group);
            m->group = NULL;
            if (json_is_string(ts) && (rc = check_len("taskset", json_string_length(ts),
                                                      CC_MSG_MAX_ID_BYTES, err)) != CC_OK)
                return rc;
            if (json_is_string(ts) && (rc = dup_jstr(ts, &m->group)) != CC_OK)
                return cc_err_set(err, rc, "taskset unusable");
            if (!json_is_string(ts) && !json_is_null(ts))
                return cc_err_set(err, CC_EBADMSG, "taskset is a %s, not a string",
                                  cc_pyrepr_type_name(ts));
        }
        return CC_OK;
    } else {
        return cc_err_set(err, CC_ENOTASK, "no task name: neither a task header nor a %s",
                          "protocol 1 body dict with \"task\"");
    }
    return decode_fields(&src, m, err);
}

int cc_message_decode(const struct cc_msg_raw *raw, const struct cc_msg_limits *limits,
                      struct cc_msg *out, struct cc_err *err)
{
    size_t max_body =
        limits && limits->max_body_bytes ? limits->max_body_bytes : CC_MSG_MAX_BODY_DEFAULT;
    size_t max_inflated = limits && limits->max_inflated_bytes ? limits->max_inflated_bytes
                                                               : CC_MSG_MAX_INFLATED_DEFAULT;
    const json_t *comp = NULL;
    cc_bytes_t body = raw->body;
    uint8_t *inflated = NULL;
    size_t inflated_len = 0;
    json_t *root = NULL;
    json_error_t jerr;
    size_t valid;
    int rc;

    memset(out, 0, sizeof(*out));
    out->group_index = -1;
    out->utc = true;
    out->priority = raw->priority > 0 ? raw->priority : 0;
    out->delivery_mode = raw->delivery_mode ? raw->delivery_mode : 2;
    if (raw->headers != NULL && !json_is_object(raw->headers)) {
        rc = cc_err_set(err, CC_EBADMSG, "header table is not a dict");
        goto out;
    }
    peek_ids(raw->headers, out);

    if (body.len > max_body) {
        rc = cc_err_set(err, CC_ETOOBIG, "body of %zu bytes over the %zu-byte limit", body.len,
                        max_body);
        goto out;
    }
    if ((rc = check_content(raw, err)) != CC_OK)
        goto out;
    if (raw->headers != NULL)
        comp = json_object_get(raw->headers, "compression");
    if (comp != NULL && !json_is_null(comp) &&
        !(json_is_string(comp) && json_string_length(comp) == 0)) {
        const char *c = json_string_value(comp);

        /* kombu's "zlib" compression announces itself as application/x-gzip but writes a
         * zlib stream; inflate_body() takes either framing. */
        if (c == NULL ||
            (strcmp(c, "application/x-gzip") != 0 && strcmp(c, "application/zlib") != 0)) {
            char shown[80];
            cc_bytes_t cv = {(const uint8_t *)c, c != NULL ? json_string_length(comp) : 0};

            rc = cc_err_set(err, CC_EENCODING, "compression %s not supported",
                            c ? cc_bytes_escape(cv, 60, shown, sizeof(shown))
                              : cc_pyrepr_type_name(comp));
            goto out;
        }
        if ((rc = inflate_body(body, max_inflated, &inflated, &inflated_len, err)) != CC_OK)
            goto out;
        body.p = inflated;
        body.len = inflated_len;
    }
    if (body.len == 0) {
        rc = cc_err_set(err, CC_EBADMSG, "body is empty");
        goto out;
    }
    /* jansson checks UTF-8 too, but its message ("unable to decode byte 0xff") does not say
     * where; this scan is cheap next to parsing and gives the offset. */
    valid = cc_strbuf_utf8_valid_prefix(body.p, body.len);
    if (valid != body.len) {
        rc = cc_err_set(err, CC_EBADMSG, "body is not UTF-8 (bad byte at offset %zu)", valid);
        goto out;
    }
    /* Python's json.loads: any top-level value, NUL escapes allowed, duplicate keys accepted
     * (the last wins; jansson replaces in place, keeping the first position like dict). */
    root = json_loadb((const char *)body.p, body.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (root == NULL) {
        /* jansson reports OOM with an error code, except in its lexer set-up, where it
         * returns before filling in any text at all. */
        if (json_error_code(&jerr) == json_error_out_of_memory || jerr.text[0] == '\0')
            rc = cc_err_set(err, CC_ENOMEM, "out of memory parsing body");
        else
            rc = cc_err_set(err, CC_EBADMSG, "body is not JSON: %s (line %d col %d)", jerr.text,
                            jerr.line, jerr.column);
        goto out;
    }
    if ((rc = decode_body(raw, root, out, err)) != CC_OK)
        goto out;
    if ((raw->content_type.p && !(out->content_type = cc_bytes_dup(raw->content_type))) ||
        (raw->correlation_id.p && !(out->correlation_id = cc_bytes_dup(raw->correlation_id))) ||
        (raw->reply_to.p && !(out->reply_to = cc_bytes_dup(raw->reply_to)))) {
        rc = cc_err_set(err, CC_ENOMEM, "out of memory copying properties");
        goto out;
    }
    rc = CC_OK;
out:
    json_decref(root);
    free(inflated);
    if (rc == CC_ENOMEM && err != NULL && err->code != CC_ENOMEM)
        cc_err_set(err, CC_ENOMEM, "out of memory");
    return rc;
}

void cc_message_deinit(struct cc_msg *m)
{
    if (m == NULL)
        return;
    free(m->id);
    free(m->task);
    free(m->shadow);
    free(m->root_id);
    free(m->parent_id);
    free(m->group);
    free(m->eta);
    free(m->expires);
    free(m->origin);
    free(m->lang);
    free(m->argsrepr);
    free(m->kwargsrepr);
    free(m->content_type);
    free(m->correlation_id);
    free(m->reply_to);
    json_decref(m->headers);
    json_decref(m->args);
    json_decref(m->kwargs);
    json_decref(m->embed);
    memset(m, 0, sizeof(*m));
    m->group_index = -1;
}

/* ---- Encode ---------------------------------------------------------------------------- */

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

/* A time header: as given, else formatted from *_us with "+00:00" as Python's isoformat()
 * of an aware datetime, else null. */
static json_t *time_or_null(const char *s, int64_t us)
{
    char buf[40];

    if (s != NULL)
        return json_string(s);
    if (us != 0)
        return json_string(cc_isotime_format(us, 1, buf, sizeof(buf)));
    return json_null();
}

/* Python sends the number the user gave: ints stay ints ([30, 20]), floats stay floats. */
static json_t *limit_or_null(double s)
{
    if (s <= 0)
        return json_null();
    if (s == floor(s) && s < 9e15)
        return json_integer((json_int_t)s);
    return json_real(s);
}

int cc_message_encode(const struct cc_msg *m, int64_t now_us, struct cc_msg_out *out,
                      struct cc_err *err)
{
    const char *keys[] = {"lang",     "task",       "id",      "shadow",
                          "eta",      "expires",    "group",   "group_index",
                          "retries",  "timelimit",  "root_id", "parent_id",
                          "argsrepr", "kwargsrepr", "origin",  "ignore_result"};
    json_t *vals[16];
    char *argsrepr = NULL;
    char *kwargsrepr = NULL;
    struct cc_strbuf b;
    int rc = CC_OK;

    memset(out, 0, sizeof(*out));
    cc_strbuf_init(&b, 0);
    if (m == NULL || m->id == NULL || m->task == NULL)
        return cc_err_set(err, CC_EINVAL, "message to encode has no %s",
                          m && m->id ? "task" : "id");
    if (m->argsrepr == NULL)
        argsrepr = m->args ? cc_pyrepr(m->args, 1, ARGSREPR_MAX) : strdup("()");
    if (m->kwargsrepr == NULL)
        kwargsrepr = m->kwargs ? cc_pyrepr(m->kwargs, 0, ARGSREPR_MAX) : strdup("{}");
    if ((m->argsrepr == NULL && argsrepr == NULL) ||
        (m->kwargsrepr == NULL && kwargsrepr == NULL)) {
        rc = cc_err_set(err, CC_ENOMEM, "out of memory computing argsrepr");
        goto out;
    }
    vals[0] = json_string(m->lang ? m->lang : "py");
    vals[1] = json_string(m->task);
    vals[2] = json_string(m->id);
    vals[3] = str_or_null(m->shadow);
    vals[4] = time_or_null(m->eta, m->eta_us);
    vals[5] = time_or_null(m->expires, m->expires_us);
    vals[6] = str_or_null(m->group);
    vals[7] = m->group_index >= 0 ? json_integer(m->group_index) : json_null();
    vals[8] = json_integer(m->retries);
    vals[9] =
        json_pack("[oo]", limit_or_null(m->time_limit_s), limit_or_null(m->soft_time_limit_s));
    vals[10] = json_string(m->root_id ? m->root_id : m->id);
    vals[11] = str_or_null(m->parent_id);
    vals[12] = str_or_null(m->argsrepr ? m->argsrepr : argsrepr);
    vals[13] = str_or_null(m->kwargsrepr ? m->kwargsrepr : kwargsrepr);
    vals[14] = str_or_null(m->origin);
    vals[15] = json_boolean(m->ignore_result);
    out->headers = json_object();
    for (size_t i = 0; i < 16; i++) {
        /* set_new steals vals[i] even on failure, so every value is released exactly once */
        if (out->headers == NULL || vals[i] == NULL ||
            json_object_set_new(out->headers, keys[i], vals[i]) != 0) {
            if (rc == CC_OK)
                rc = cc_err_set(err, CC_ENOMEM, "out of memory building headers");
            if (out->headers == NULL)
                json_decref(vals[i]);
        }
    }
    if (rc != CC_OK)
        goto out;

    /* Body: json.dumps((args, kwargs, embed)) with embed in Celery's key order. */
    cc_strbuf_putc(&b, '[');
    if (m->args)
        cc_strbuf_json(&b, m->args);
    else
        cc_strbuf_putn(&b, "[]", 2);
    cc_strbuf_putn(&b, ", ", 2);
    if (m->kwargs)
        cc_strbuf_json(&b, m->kwargs);
    else
        cc_strbuf_putn(&b, "{}", 2);
    {
        const char *ek[] = {"callbacks", "errbacks", "chain", "chord"};
        const json_t *ev[] = {m->callbacks, m->errbacks, m->chain, m->chord};

        for (size_t i = 0; i < 4; i++) {
            cc_strbuf_puts(&b, i == 0 ? ", {" : ", ");
            cc_strbuf_json_str(&b, ek[i], strlen(ek[i]));
            cc_strbuf_putn(&b, ": ", 2);
            if (ev[i])
                cc_strbuf_json(&b, ev[i]);
            else
                cc_strbuf_putn(&b, "null", 4);
        }
    }
    cc_strbuf_putn(&b, "}]", 2);
    out->body = cc_strbuf_take(&b, &out->body_len);
    if (out->body == NULL) {
        rc = cc_err_set(err, CC_ENOMEM, "out of memory encoding body");
        goto out;
    }
    out->content_type = "application/json";
    out->content_encoding = "utf-8";
    out->delivery_mode = m->delivery_mode ? m->delivery_mode : 2;
    out->priority = m->priority;
    out->correlation_id = strdup(m->id);
    if (out->correlation_id == NULL ||
        (m->reply_to != NULL && (out->reply_to = strdup(m->reply_to)) == NULL)) {
        rc = cc_err_set(err, CC_ENOMEM, "out of memory copying properties");
        goto out;
    }
    if (m->expires != NULL || m->expires_us != 0) {
        int64_t exp_us = m->expires_us;
        int64_t ms;
        char tmp[24];

        if (m->expires != NULL && cc_isotime_parse(m->expires, &exp_us) != CC_OK) {
            rc = cc_err_set(err, CC_EINVAL, "expires is not an ISO-8601 time");
            goto out;
        }
        /* app/base.py send_task: expiration = str(int(seconds * 1000)), past -> 0 */
        ms = exp_us > now_us ? (exp_us - now_us) / 1000 : 0;
        /* [issue 14] RabbitMQ refuses an expiration above 2^32-1 ms (49.7 days) with 406
         * PRECONDITION_FAILED, closing the channel (Python's client fails so too): a later
         * expiry goes without the property; the `expires` header still applies at receipt. */
        if (ms > CC_MSG_EXPIRATION_MAX_MS)
            goto out;
        snprintf(tmp, sizeof(tmp), "%" PRId64, ms);
        out->expiration = strdup(tmp);
        if (out->expiration == NULL) {
            rc = cc_err_set(err, CC_ENOMEM, "out of memory");
            goto out;
        }
    }
out:
    free(argsrepr);
    free(kwargsrepr);
    cc_strbuf_deinit(&b);
    if (rc != CC_OK)
        cc_message_out_deinit(out);
    return rc;
}

void cc_message_out_deinit(struct cc_msg_out *o)
{
    if (o == NULL)
        return;
    json_decref(o->headers);
    free(o->body);
    free(o->correlation_id);
    free(o->reply_to);
    free(o->expiration);
    memset(o, 0, sizeof(*o));
}
