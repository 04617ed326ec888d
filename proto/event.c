/* Celery event bodies (§4.3): the JSON text of one event as celery.events.Event and
 * EventDispatcher.publish build it.
 *
 * Celery's dict is Event(type, hostname=, utcoffset=, pid=, clock=, **fields), and Event
 * appends timestamp and type last, so the key order is: the four head fields, the type's
 * own fields as the caller lists them (the dispatcher passes them in the order of the
 * send_event call, e.g. uuid, name, args, kwargs, root_id, parent_id, retries, eta, expires
 * for task-received), timestamp, type. Strings go through the json.dumps writer
 * (ensure_ascii), floats through Python's float repr, so a Python reader sees exactly what a
 * Python worker sends. Pure: no clock, no globals.
 */
#include "event.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "strbuf.h"

static void event_key(struct cc_strbuf *b, const char *key)
{
    cc_strbuf_puts(b, ", ");
    cc_strbuf_json_str(b, key, strlen(key));
    cc_strbuf_puts(b, ": ");
}

static void event_float(struct cc_strbuf *b, double d)
{
    char num[32];
    size_t n = cc_strbuf_float_repr(d, num);

    cc_strbuf_putn(b, num, n);
}

/* Python's round(d, 2): correctly rounded from the exact binary value, which glibc's
 * printf also does (half-even on exact ties). */
static double event_round2(double d)
{
    char num[64];

    snprintf(num, sizeof(num), "%.2f", d);
    return strtod(num, NULL);
}

static void event_field(struct cc_strbuf *b, const struct cc_event_field *f)
{
    event_key(b, f->key);
    switch (f->kind) {
    case CC_EVF_STR:
        if (f->s == NULL)
            cc_strbuf_puts(b, "null");
        else
            cc_strbuf_json_str(b, f->s, strlen(f->s));
        break;
    case CC_EVF_INT:
        cc_strbuf_int(b, f->i);
        break;
    case CC_EVF_NINT:
        if (f->is_null)
            cc_strbuf_puts(b, "null");
        else
            cc_strbuf_int(b, f->i);
        break;
    case CC_EVF_FLOAT:
        event_float(b, f->f);
        break;
    case CC_EVF_BOOL:
        cc_strbuf_puts(b, f->b ? "true" : "false");
        break;
    case CC_EVF_LOADAVG:
        /* Celery: tuple(round(l, 2) for l in os.getloadavg()). */
        cc_strbuf_putc(b, '[');
        for (int i = 0; i < 3; i++) {
            if (i > 0)
                cc_strbuf_puts(b, ", ");
            event_float(b, event_round2(f->loadavg ? f->loadavg[i] : 0.0));
        }
        cc_strbuf_putc(b, ']');
        break;
    }
}

char *cc_event_build(const struct cc_event_head *h, const char *type,
                     const struct cc_event_field *fields, size_t n_fields, size_t *len)
{
    struct cc_strbuf b;

    cc_strbuf_init(&b, 0);
    cc_strbuf_puts(&b, "{\"hostname\": ");
    cc_strbuf_json_str(&b, h->hostname ? h->hostname : "", h->hostname ? strlen(h->hostname) : 0);
    cc_strbuf_puts(&b, ", \"utcoffset\": ");
    cc_strbuf_int(&b, h->utcoffset);
    cc_strbuf_puts(&b, ", \"pid\": ");
    cc_strbuf_int(&b, h->pid);
    cc_strbuf_puts(&b, ", \"clock\": ");
    cc_strbuf_int(&b, (long long)h->clock);
    for (size_t i = 0; i < n_fields; i++)
        event_field(&b, &fields[i]);
    cc_strbuf_puts(&b, ", \"timestamp\": ");
    event_float(&b, h->timestamp);
    cc_strbuf_puts(&b, ", \"type\": ");
    cc_strbuf_json_str(&b, type, strlen(type));
    cc_strbuf_putc(&b, '}');
    return cc_strbuf_take(&b, len);
}

void cc_event_routing_key(const char *type, char *out, size_t size)
{
    size_t i = 0;

    if (size == 0)
        return;
    for (; type[i] != '\0' && i + 1 < size; i++)
        out[i] = type[i] == '-' ? '.' : type[i];
    out[i] = '\0';
}

/* ---- Typed builders: each type's fields in Celery's order (§4.3) ---------------------- */

#define EV_S(k, v)                                                                                 \
    {                                                                                              \
        .key = (k), .kind = CC_EVF_STR, .s = (v)                                                   \
    }
#define EV_I(k, v)                                                                                 \
    {                                                                                              \
        .key = (k), .kind = CC_EVF_INT, .i = (v)                                                   \
    }
#define EV_B(k, v)                                                                                 \
    {                                                                                              \
        .key = (k), .kind = CC_EVF_BOOL, .b = (v)                                                  \
    }
#define EV_F(k, v)                                                                                 \
    {                                                                                              \
        .key = (k), .kind = CC_EVF_FLOAT, .f = (v)                                                 \
    }
#define EV_N(k) (sizeof(k) / sizeof((k)[0]))

char *cc_event_worker(const struct cc_event_head *h, const char *type,
                      const struct cc_event_worker_info *wi, size_t *len)
{
    const struct cc_event_field f[] = {
        EV_F("freq", wi->freq_s),
        EV_I("active", wi->active),
        EV_I("processed", wi->processed),
        {.key = "loadavg", .kind = CC_EVF_LOADAVG, .loadavg = wi->loadavg},
        EV_S("sw_ident", wi->sw_ident),
        EV_S("sw_ver", wi->sw_ver),
        EV_S("sw_sys", wi->sw_sys),
    };
    /* control.py heartbeat(): dispatcher.send('worker-heartbeat', freq=5, **SOFTWARE_INFO);
     * [flower] that 5 is a Python int, so it goes out as `5`, not `5.0`. */
    const struct cc_event_field sw[] = {
        EV_I("freq", (long long)wi->freq_s),
        EV_S("sw_ident", wi->sw_ident),
        EV_S("sw_ver", wi->sw_ver),
        EV_S("sw_sys", wi->sw_sys),
    };

    if (wi->is_software_only)
        return cc_event_build(h, type, sw, EV_N(sw), len);
    return cc_event_build(h, type, f, EV_N(f), len);
}

char *cc_event_task_received(const struct cc_event_head *h, const struct cc_event_received *r,
                             size_t *len)
{
    /* strategy.py: uuid, name, args=argsrepr, kwargs=kwargsrepr, root_id, parent_id,
     * retries, eta, expires. */
    const struct cc_event_field f[] = {
        EV_S("uuid", r->uuid),         EV_S("name", r->name),       EV_S("args", r->argsrepr),
        EV_S("kwargs", r->kwargsrepr), EV_S("root_id", r->root_id), EV_S("parent_id", r->parent_id),
        EV_I("retries", r->retries),   EV_S("eta", r->eta),         EV_S("expires", r->expires),
    };

    return cc_event_build(h, "task-received", f, EV_N(f), len);
}

char *cc_event_task_started(const struct cc_event_head *h, const char *uuid, size_t *len)
{
    const struct cc_event_field f[] = {EV_S("uuid", uuid)};

    return cc_event_build(h, "task-started", f, EV_N(f), len);
}

char *cc_event_task_succeeded(const struct cc_event_head *h, const char *uuid,
                              const char *result_repr, double runtime_s, size_t *len)
{
    const struct cc_event_field f[] = {EV_S("uuid", uuid), EV_S("result", result_repr),
                                       EV_F("runtime", runtime_s)};

    return cc_event_build(h, "task-succeeded", f, EV_N(f), len);
}

char *cc_event_task_failed(const struct cc_event_head *h, const char *type, const char *uuid,
                           const char *exc_repr, const char *traceback, size_t *len)
{
    const struct cc_event_field f[] = {EV_S("uuid", uuid), EV_S("exception", exc_repr),
                                       EV_S("traceback", traceback)};

    return cc_event_build(h, type, f, EV_N(f), len);
}

char *cc_event_task_rejected(const struct cc_event_head *h, const char *uuid, bool requeue,
                             size_t *len)
{
    const struct cc_event_field f[] = {EV_S("uuid", uuid), EV_B("requeue", requeue)};

    return cc_event_build(h, "task-rejected", f, EV_N(f), len);
}

char *cc_event_task_revoked(const struct cc_event_head *h, const char *uuid, bool terminated,
                            int signum, bool expired, size_t *len)
{
    const struct cc_event_field f[] = {
        EV_S("uuid", uuid),
        EV_B("terminated", terminated),
        {.key = "signum", .kind = CC_EVF_NINT, .i = signum, .is_null = signum <= 0},
        EV_B("expired", expired),
    };

    return cc_event_build(h, "task-revoked", f, EV_N(f), len);
}
