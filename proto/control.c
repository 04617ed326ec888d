/* Remote control (celery.pidbox) bodies: see control.h and celery-wire.md §5.
 *
 * Request parsing follows kombu's pidbox Node.handle_message (destination, pattern and
 * matcher); reply objects are built in the key order Celery's Request.info() and kombu's
 * Queue.as_dict() produce, serialised with Python's json separators (", " and ": ").
 *
 * Python's json module writes NaN, Infinity and -Infinity as bare tokens (allow_nan=True is
 * kombu's default), which are not JSON: `celery control time_limit t nan` or
 * `app.control.time_limit(t, soft=float('inf'))` made the whole request unreadable and the
 * client saw no reply. A body jansson refuses is read again after ctl_py_tokens() has
 * rewritten those tokens outside strings: NaN -> "NaN" (a string: truthy as nan is in
 * Python, and refused where a number is needed), +-Infinity -> +-DBL_MAX (a huge number,
 * which means "no limit" to cc_isotime_span_us's callers). A valid body is never changed.
 *
 * Booleans: every boolean argument is read with cc_control_truthy(), Python's `if value:`
 * (Flower sends terminate=1, strtobool's int).
 */
#include <fnmatch.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "strbuf.h"

static char *ctl_strdup(json_t *v)
{
    const char *s = json_string_value(v);

    return s ? strdup(s) : NULL;
}

/* kombu.utils.functional/match: "glob" -> fnmatch, "pcre" -> re.match (anchored at the
 * start, not at the end). */
static bool ctl_match(const char *pattern, const char *matcher, const char *hostname)
{
    if (matcher == NULL || strcmp(matcher, "glob") == 0)
        return fnmatch(pattern, hostname, 0) == 0;
    if (strcmp(matcher, "pcre") == 0) {
        regex_t re;
        regmatch_t m;
        bool ok = false;

        if (regcomp(&re, pattern, REG_EXTENDED) != 0)
            return false;
        if (regexec(&re, hostname, 1, &m, 0) == 0 && m.rm_so == 0)
            ok = true;
        regfree(&re);
        return ok;
    }
    return false;
}

#define CTL_DBL_MAX_TEXT "1.7976931348623157e308"

/* Copy of `body` with Python's NaN / Infinity / -Infinity tokens outside strings rewritten
 * (see the head of the file), or NULL when there are none (or on ENOMEM). Owned; *out_len. */
static char *ctl_py_tokens(const char *body, size_t len, size_t *out_len)
{
    static const struct {
        const char *tok, *rep;
    } toks[] = {
        {"NaN", "\"NaN\""}, {"-Infinity", "-" CTL_DBL_MAX_TEXT}, {"Infinity", CTL_DBL_MAX_TEXT}};
    /* Each token grows at most from 8 to 22 bytes: 3 x len is always enough. */
    char *out = len < ((size_t)-1) / 3 - 1 ? malloc(3 * len + 1) : NULL;
    size_t n = 0;
    bool is_str = false, changed = false;

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < len;) {
        size_t k = 0;

        if (is_str) {
            if (body[i] == '\\' && i + 1 < len) {
                out[n++] = body[i++];
            } else if (body[i] == '"') {
                is_str = false;
            }
            out[n++] = body[i++];
            continue;
        }
        if (body[i] == '"') {
            is_str = true;
            out[n++] = body[i++];
            continue;
        }
        for (; k < sizeof(toks) / sizeof(toks[0]); k++) {
            size_t tl = strlen(toks[k].tok);

            if (len - i >= tl && memcmp(body + i, toks[k].tok, tl) == 0) {
                size_t rl = strlen(toks[k].rep);

                memcpy(out + n, toks[k].rep, rl);
                n += rl;
                i += tl;
                changed = true;
                break;
            }
        }
        if (k == sizeof(toks) / sizeof(toks[0]))
            out[n++] = body[i++];
    }
    if (!changed) {
        free(out);
        return NULL;
    }
    out[n] = '\0';
    *out_len = n;
    return out;
}

bool cc_control_truthy(const json_t *v)
{
    if (v == NULL || json_is_null(v) || json_is_false(v))
        return false;
    if (json_is_true(v))
        return true;
    if (json_is_integer(v))
        return json_integer_value(v) != 0;
    if (json_is_real(v))
        return json_real_value(v) != 0.0;
    if (json_is_string(v))
        return json_string_length(v) > 0;
    if (json_is_array(v))
        return json_array_size(v) > 0;
    return json_object_size(v) > 0;
}

bool cc_control_arg_bool(const json_t *args, const char *key, bool dflt)
{
    const json_t *v = json_is_object(args) ? json_object_get(args, key) : NULL;

    return v != NULL ? cc_control_truthy(v) : dflt;
}

int cc_control_parse(const void *body, size_t len, const char *hostname, struct cc_control_req *out,
                     struct cc_err *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(body, len, 0, &jerr);
    json_t *dest, *args, *reply_to, *pattern;
    int rc = CC_OK;

    memset(out, 0, sizeof(*out));
    if (root == NULL && body != NULL) { /* Python's NaN / Infinity tokens? */
        size_t fixed_len = 0;
        char *fixed = ctl_py_tokens(body, len, &fixed_len);

        if (fixed != NULL)
            root = json_loadb(fixed, fixed_len, 0, &jerr);
        free(fixed);
    }
    if (root == NULL || !json_is_object(root)) {
        rc = cc_err_set(err, CC_EBADMSG, "pidbox request is not a JSON object%s%s",
                        root == NULL ? ": " : "", root == NULL ? jerr.text : "");
        goto out;
    }
    out->method = ctl_strdup(json_object_get(root, "method"));
    if (out->method == NULL) {
        rc = cc_err_set(err, CC_EBADMSG, "pidbox request without a method");
        goto out;
    }
    args = json_object_get(root, "arguments");
    out->arguments = json_is_object(args) ? json_incref(args) : json_object();
    out->ticket = ctl_strdup(json_object_get(root, "ticket"));
    reply_to = json_object_get(root, "reply_to");
    if (json_is_object(reply_to)) {
        out->reply_exchange = ctl_strdup(json_object_get(reply_to, "exchange"));
        out->reply_rk = ctl_strdup(json_object_get(reply_to, "routing_key"));
    }
    dest = json_object_get(root, "destination");
    pattern = json_object_get(root, "pattern");
    if (json_is_array(dest) && json_array_size(dest) > 0) {
        size_t i;
        json_t *d;

        json_array_foreach(dest, i, d)
        {
            if (json_is_string(d) && strcmp(json_string_value(d), hostname) == 0)
                out->is_for_me = true;
        }
    } else if (json_is_string(dest) && json_string_length(dest) > 0) {
        /* kombu accepts a lone string too (maybe_list) */
        out->is_for_me = strcmp(json_string_value(dest), hostname) == 0;
    } else if (json_is_string(pattern) && json_string_length(pattern) > 0) {
        out->is_for_me = ctl_match(json_string_value(pattern),
                                   json_string_value(json_object_get(root, "matcher")), hostname);
    } else {
        out->is_for_me = true;
    }
    if (out->arguments == NULL)
        rc = cc_err_set(err, CC_ENOMEM, "out of memory");
out:
    json_decref(root);
    return rc;
}

void cc_control_req_deinit(struct cc_control_req *r)
{
    if (r == NULL)
        return;
    free(r->method);
    json_decref(r->arguments);
    free(r->ticket);
    free(r->reply_exchange);
    free(r->reply_rk);
    memset(r, 0, sizeof(*r));
}

char *cc_control_reply_body(const char *hostname, json_t *value, size_t *len)
{
    json_t *o = json_object();
    struct cc_strbuf sb;
    char *s = NULL;
    size_t n = 0;

    if (o == NULL)
        return NULL;
    cc_strbuf_init(&sb, 0);
    if (json_object_set(o, hostname, value ? value : json_null()) == 0) {
        cc_strbuf_json(&sb, o); /* Python's separators and float repr */
        s = cc_strbuf_take(&sb, &n);
    }
    cc_strbuf_deinit(&sb);
    json_decref(o);
    if (s != NULL && len != NULL)
        *len = n;
    return s;
}

json_t *cc_control_ok(const char *text)
{
    return json_pack("{s:s}", "ok", text);
}

json_t *cc_control_error(const char *text)
{
    return json_pack("{s:s}", "error", text);
}

json_t *cc_control_request_info(const struct cc_control_info *in)
{
    json_t *di = json_pack("{s:s, s:s, s:i, s:b}", "exchange", in->exchange ? in->exchange : "",
                           "routing_key", in->routing_key ? in->routing_key : "", "priority",
                           in->priority, "redelivered", in->is_redelivered);
    json_t *o;

    if (di == NULL)
        return NULL;
    /* "o" steals: a borrowed value gets a reference of its own, a fresh [] / {} is taken */
    o = json_pack("{s:s, s:s, s:o, s:o, s:s, s:s, s:o, s:b, s:o, s:o}", "id", in->id, "name",
                  in->name, "args", in->args ? json_incref(in->args) : json_array(), "kwargs",
                  in->kwargs ? json_incref(in->kwargs) : json_object(), "type", in->name,
                  "hostname", in->hostname, "time_start",
                  in->time_start < 0 ? json_null() : json_real(in->time_start), "acknowledged",
                  in->is_acked, "delivery_info", di, "worker_pid",
                  in->worker_pid > 0 ? json_integer(in->worker_pid) : json_null());
    return o;
}

json_t *cc_control_scheduled_entry(const char *eta_iso, json_t *info)
{
    return json_pack("{s:s, s:i, s:o}", "eta", eta_iso ? eta_iso : "", "priority", 6, "request",
                     info);
}

json_t *cc_control_queue_info(const char *name, const char *exchange, const char *exchange_type,
                              const char *routing_key, bool is_durable, int max_priority)
{
    json_t *ex = json_pack("{s:s, s:s, s:n, s:b, s:b, s:b, s:n, s:b}", "name", exchange, "type",
                           exchange_type, "arguments", "durable", is_durable, "passive", 0,
                           "auto_delete", 0, "delivery_mode", "no_declare", 0);

    if (ex == NULL)
        return NULL;
    return json_pack("{s:s, s:o, s:s, s:o, s:n, s:n, s:b, s:b, s:b, s:b, s:n, s:[], s:n, s:n, "
                     "s:n, s:n, s:n, s:o}",
                     "name", name, "exchange", ex, "routing_key", routing_key, "queue_arguments",
                     max_priority > 0 ? json_pack("{s:i}", "x-max-priority", max_priority)
                                      : json_null(),
                     "binding_arguments", "consumer_arguments", "durable", is_durable, "exclusive",
                     0, "auto_delete", 0, "no_ack", 0, "alias", "bindings", "no_declare", "expires",
                     "message_ttl", "max_length", "max_length_bytes", "max_priority",
                     max_priority > 0 ? json_integer(max_priority) : json_null());
}

char *cc_control_join_ids(const char *prefix, json_t *ids, const char *suffix)
{
    struct cc_strbuf sb;
    size_t i;
    json_t *v;
    char *s;

    cc_strbuf_init(&sb, 0);
    cc_strbuf_puts(&sb, prefix);
    json_array_foreach(ids, i, v)
    {
        if (i > 0)
            cc_strbuf_puts(&sb, ", ");
        cc_strbuf_puts(&sb, json_string_value(v) ? json_string_value(v) : "");
    }
    cc_strbuf_puts(&sb, suffix);
    s = cc_strbuf_take(&sb, NULL);
    cc_strbuf_deinit(&sb);
    return s;
}
