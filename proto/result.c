/* Result meta as Python Celery's backends store it (proto/result.h), celery-wire.md §3.
 *
 * cc_result_encode() writes the redis backend value directly with strbuf.c's json.dumps
 * writer, key by key, in the order backends/base.py _get_result_meta() builds the dict:
 * status, result, traceback, children, date_done, then group_id / parent_id only when the
 * request had them, then the result_extended keys, and task_id last (added by
 * _store_result). Writing keys directly (no intermediate json_t) keeps it one pass and
 * byte-identical to the captured values: the golden test compares value_raw byte for byte.
 *
 * date_done: 5.2.6 writes datetime.utcnow().isoformat() (naive, fraction dropped at zero
 * microseconds); `date_done_with_offset` adds "+00:00" as Celery >= 5.3 does. Pure: the
 * caller passes the time.
 */
#include <stdlib.h>
#include <string.h>

#include "isotime.h"
#include "result.h"
#include "strbuf.h"

static void put_key(struct cc_strbuf *b, const char *key, int first)
{
    if (!first)
        cc_strbuf_putn(b, ", ", 2);
    cc_strbuf_json_str(b, key, strlen(key));
    cc_strbuf_putn(b, ": ", 2);
}

static void put_str(struct cc_strbuf *b, const char *s)
{
    if (s == NULL)
        cc_strbuf_putn(b, "null", 4);
    else
        cc_strbuf_json_str(b, s, strlen(s));
}

static void put_json(struct cc_strbuf *b, const json_t *v, const char *dflt)
{
    if (v == NULL)
        cc_strbuf_puts(b, dflt);
    else
        cc_strbuf_json(b, v);
}

int cc_result_encode(const struct cc_result *r, char **out, size_t *len, struct cc_err *err)
{
    struct cc_strbuf b;
    char when[40];

    *out = NULL;
    if (len != NULL)
        *len = 0;
    if (r == NULL || r->task_id == NULL || r->status == NULL)
        return cc_err_set(err, CC_EINVAL, "result has no %s",
                          r && r->task_id ? "status" : "task_id");
    cc_strbuf_init(&b, 0);
    /* Typical values are a few hundred bytes; one reservation avoids most regrowth. */
    (void)cc_strbuf_reserve(&b, 256);
    cc_strbuf_putc(&b, '{');
    put_key(&b, "status", 1);
    put_str(&b, r->status);
    put_key(&b, "result", 0);
    put_json(&b, r->result, "null");
    put_key(&b, "traceback", 0);
    put_str(&b, r->traceback);
    put_key(&b, "children", 0);
    put_json(&b, r->children, "[]");
    put_key(&b, "date_done", 0);
    put_str(&b, r->date_done_us != 0 ? cc_isotime_format(r->date_done_us, r->date_done_with_offset,
                                                         when, sizeof(when))
                                     : NULL);
    if (r->group_id != NULL) {
        put_key(&b, "group_id", 0);
        put_str(&b, r->group_id);
    }
    if (r->parent_id != NULL) {
        put_key(&b, "parent_id", 0);
        put_str(&b, r->parent_id);
    }
    if (r->extended) {
        put_key(&b, "name", 0);
        put_str(&b, r->name);
        put_key(&b, "args", 0);
        put_json(&b, r->args, "null");
        put_key(&b, "kwargs", 0);
        put_json(&b, r->kwargs, "null");
        put_key(&b, "worker", 0);
        put_str(&b, r->worker);
        put_key(&b, "retries", 0);
        cc_strbuf_int(&b, r->retries);
        put_key(&b, "queue", 0);
        put_str(&b, r->queue);
    }
    put_key(&b, "task_id", 0);
    put_str(&b, r->task_id);
    cc_strbuf_putc(&b, '}');
    *out = cc_strbuf_take(&b, len);
    if (*out == NULL)
        return cc_err_set(err, CC_ENOMEM, "out of memory encoding result");
    return CC_OK;
}

json_t *cc_result_exc_new(const char *exc_module, const char *exc_type, json_t *exc_args)
{
    json_t *o;

    if (exc_args == NULL)
        exc_args = json_array();
    /* json_pack's "o" steals exc_args even when packing fails. */
    o = json_pack("{s:s, s:o, s:s}", "exc_type", exc_type ? exc_type : "Exception", "exc_message",
                  exc_args, "exc_module", exc_module ? exc_module : "builtins");
    return o;
}

char *cc_result_json_dumps(const json_t *v)
{
    struct cc_strbuf b;

    cc_strbuf_init(&b, 0);
    if (v == NULL)
        cc_strbuf_putn(&b, "null", 4);
    else
        cc_strbuf_json(&b, v);
    return cc_strbuf_take(&b, NULL);
}
