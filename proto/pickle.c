/* Python pickle protocol 2 writer for JSON values (proto/pickle.h), celery-wire.md §3.5.
 *
 * Celery's DatabaseBackend keeps a task's result in celery_taskmeta.result, a SQLAlchemy
 * PickleType: pickle.dumps(value) of the Python object the task returned (or of the exception
 * dict for FAILURE/RETRY/REVOKED), whatever result_serializer says. A Python client unpickles
 * it. We only ever write pickles, never read one (unpickling executes code).
 *
 * Design: one recursive pass appending opcodes to a strbuf, in the order Python's pickler
 * (Modules/_pickle.c, protocol 2) emits them, including its memo records: after every str,
 * dict, list and non-empty tuple it writes BINPUT <n> (LONG_BINPUT past 255), n counting
 * up from 0. So for values where no object occurs twice the bytes equal pickle.dumps(obj,
 * protocol=2), which the unit test checks against Python itself. (Python writes BINGET for
 * an object it has already pickled, by identity; we never share, which unpickles to equal
 * values.) Dicts and lists are written as Python batches them: one item -> SETITEM / APPEND,
 * more -> MARK ... SETITEMS / APPENDS per 1000 items.
 *
 * Opcodes: \x80 PROTO 2, } EMPTY_DICT, ] EMPTY_LIST, ) EMPTY_TUPLE, ( MARK, X BINUNICODE
 * (u32le length + UTF-8), K BININT1, M BININT2 (u16le), J BININT (i32le), \x8a LONG1 (length
 * byte + little-endian two's complement, Python's encode_long), G BINFLOAT (f64 big-endian),
 * N None, \x88 / \x89 True / False, \x85 \x86 \x87 TUPLE1-3, t TUPLE, s SETITEM, u SETITEMS,
 * a APPEND, e APPENDS, q BINPUT, r LONG_BINPUT, . STOP.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pickle.h"
#include "strbuf.h"

#define PICKLE_BATCH 1000 /* Python's _BATCHSIZE */

struct pickler {
    struct cc_strbuf b;
    uint32_t memo; /* next memo index */
};

static void pk_u32le(struct pickler *p, uint32_t v)
{
    char le[4] = {(char)(v & 0xff), (char)((v >> 8) & 0xff), (char)((v >> 16) & 0xff),
                  (char)((v >> 24) & 0xff)};

    cc_strbuf_putn(&p->b, le, 4);
}

static void pk_memoize(struct pickler *p)
{
    if (p->memo < 256) {
        char op[2] = {'q', (char)p->memo};

        cc_strbuf_putn(&p->b, op, 2);
    } else {
        cc_strbuf_putc(&p->b, 'r');
        pk_u32le(p, p->memo);
    }
    p->memo++;
}

static void pk_str(struct pickler *p, const char *s, size_t n)
{
    cc_strbuf_putc(&p->b, 'X');
    pk_u32le(p, (uint32_t)n);
    cc_strbuf_putn(&p->b, s, n);
    pk_memoize(p);
}

/* save_long for protocol 2. */
static void pk_int(struct pickler *p, json_int_t v)
{
    long long x = (long long)v;
    uint64_t ux = (uint64_t)x, mag;
    unsigned char bytes[9];
    int bits = 0, n;

    if (x >= 0 && x <= 0xff) {
        char op[2] = {'K', (char)x};

        cc_strbuf_putn(&p->b, op, 2);
        return;
    }
    if (x >= 0 && x <= 0xffff) {
        char op[3] = {'M', (char)(x & 0xff), (char)((x >> 8) & 0xff)};

        cc_strbuf_putn(&p->b, op, 3);
        return;
    }
    if (x >= -0x80000000LL && x <= 0x7fffffffLL) {
        cc_strbuf_putc(&p->b, 'J');
        pk_u32le(p, (uint32_t)ux);
        return;
    }
    /* encode_long: nbytes = (abs(x).bit_length() >> 3) + 1, little-endian two's complement,
     * then a redundant trailing 0xff of a negative number is dropped. */
    mag = x < 0 ? (uint64_t)(-(x + 1)) + 1 : ux;
    while (bits < 64 && (mag >> bits) != 0)
        bits++;
    n = (bits >> 3) + 1;
    for (int i = 0; i < n; i++)
        bytes[i] = i < 8 ? (unsigned char)((ux >> (8 * i)) & 0xff) : (x < 0 ? 0xff : 0x00);
    if (x < 0 && n > 1 && bytes[n - 1] == 0xff && (bytes[n - 2] & 0x80) != 0)
        n--;
    {
        char op[2] = {(char)0x8a, (char)n};

        cc_strbuf_putn(&p->b, op, 2);
        cc_strbuf_putn(&p->b, (const char *)bytes, (size_t)n);
    }
}

static void pk_float(struct pickler *p, double d)
{
    uint64_t u;
    char be[9];

    memcpy(&u, &d, sizeof(u));
    be[0] = 'G';
    for (int i = 0; i < 8; i++)
        be[1 + i] = (char)((u >> (56 - 8 * i)) & 0xff);
    cc_strbuf_putn(&p->b, be, 9);
}

static int pk_value(struct pickler *p, const json_t *v, bool as_tuple, int depth,
                    struct cc_err *err);

static int pk_tuple(struct pickler *p, const json_t *v, int depth, struct cc_err *err)
{
    size_t n = json_array_size(v);
    int rc = CC_OK;

    if (n == 0) {
        cc_strbuf_putc(&p->b, ')'); /* EMPTY_TUPLE: never memoized */
        return CC_OK;
    }
    if (n > 3)
        cc_strbuf_putc(&p->b, '(');
    for (size_t i = 0; i < n && rc == CC_OK; i++)
        rc = pk_value(p, json_array_get(v, i), false, depth + 1, err);
    if (rc != CC_OK)
        return rc;
    cc_strbuf_putc(&p->b, n == 1 ? (char)0x85 : n == 2 ? (char)0x86 : n == 3 ? (char)0x87 : 't');
    pk_memoize(p);
    return CC_OK;
}

static int pk_list(struct pickler *p, const json_t *v, int depth, struct cc_err *err)
{
    size_t n = json_array_size(v);
    int rc = CC_OK;

    cc_strbuf_putc(&p->b, ']');
    pk_memoize(p);
    for (size_t start = 0; start < n && rc == CC_OK; start += PICKLE_BATCH) {
        size_t end = n - start > PICKLE_BATCH ? start + PICKLE_BATCH : n;

        if (end - start > 1)
            cc_strbuf_putc(&p->b, '(');
        for (size_t i = start; i < end && rc == CC_OK; i++)
            rc = pk_value(p, json_array_get(v, i), false, depth + 1, err);
        cc_strbuf_putc(&p->b, end - start > 1 ? 'e' : 'a');
    }
    return rc;
}

static int pk_dict(struct pickler *p, const json_t *v, int depth, struct cc_err *err)
{
    size_t n = json_object_size(v), done = 0, in_batch = 0;
    const char *key;
    json_t *val;
    int rc = CC_OK;

    cc_strbuf_putc(&p->b, '}');
    pk_memoize(p);
    json_object_foreach((json_t *)v, key, val)
    {
        if (in_batch == 0 && n - done > 1)
            cc_strbuf_putc(&p->b, '(');
        pk_str(p, key, strlen(key));
        rc = pk_value(p, val, false, depth + 1, err);
        if (rc != CC_OK)
            return rc;
        done++;
        in_batch++;
        /* A batch ends after PICKLE_BATCH items or with the last item. */
        if (in_batch == PICKLE_BATCH || done == n) {
            cc_strbuf_putc(&p->b, in_batch > 1 ? 'u' : 's');
            in_batch = 0;
        }
    }
    return rc;
}

static int pk_value(struct pickler *p, const json_t *v, bool as_tuple, int depth,
                    struct cc_err *err)
{
    if (depth > CC_PICKLE_MAX_DEPTH)
        return cc_err_set(err, CC_ERANGE, "value nested deeper than %d levels",
                          CC_PICKLE_MAX_DEPTH);
    if (v == NULL) {
        cc_strbuf_putc(&p->b, 'N');
        return CC_OK;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return pk_dict(p, v, depth, err);
    case JSON_ARRAY:
        return as_tuple ? pk_tuple(p, v, depth, err) : pk_list(p, v, depth, err);
    case JSON_STRING:
        pk_str(p, json_string_value(v), json_string_length(v));
        return CC_OK;
    case JSON_INTEGER:
        pk_int(p, json_integer_value(v));
        return CC_OK;
    case JSON_REAL:
        pk_float(p, json_real_value(v));
        return CC_OK;
    case JSON_TRUE:
        cc_strbuf_putc(&p->b, (char)0x88);
        return CC_OK;
    case JSON_FALSE:
        cc_strbuf_putc(&p->b, (char)0x89);
        return CC_OK;
    case JSON_NULL:
    default:
        cc_strbuf_putc(&p->b, 'N');
        return CC_OK;
    }
}

/* Write the whole pickle; `exc_tuple`: v is an exception dict whose exc_message array is
 * written as a tuple. */
static int pk_dumps(const json_t *v, bool top_as_tuple, bool exc_tuple, char **out, size_t *len,
                    struct cc_err *err)
{
    struct pickler p;
    int rc = CC_OK;

    *out = NULL;
    if (len != NULL)
        *len = 0;
    memset(&p, 0, sizeof(p));
    cc_strbuf_init(&p.b, 0);
    (void)cc_strbuf_reserve(&p.b, 64);
    cc_strbuf_putn(&p.b, "\x80\x02", 2);
    if (exc_tuple) {
        /* pk_dict with the one key special-cased (same opcodes otherwise). */
        size_t n = json_object_size(v);
        const char *key;
        json_t *val;

        cc_strbuf_putc(&p.b, '}');
        pk_memoize(&p);
        if (n > 1)
            cc_strbuf_putc(&p.b, '(');
        json_object_foreach((json_t *)v, key, val)
        {
            pk_str(&p, key, strlen(key));
            rc = pk_value(&p, val, strcmp(key, "exc_message") == 0, 1, err);
            if (rc != CC_OK)
                break;
        }
        /* Exception dicts have 3 keys: no batch boundary to care about. */
        if (rc == CC_OK)
            cc_strbuf_putc(&p.b, n > 1 ? 'u' : 's');
    } else {
        rc = pk_value(&p, v, top_as_tuple, 0, err);
    }
    if (rc != CC_OK) {
        cc_strbuf_deinit(&p.b);
        return rc;
    }
    cc_strbuf_putc(&p.b, '.');
    *out = cc_strbuf_take(&p.b, len);
    if (*out == NULL)
        return cc_err_set(err, CC_ENOMEM, "out of memory writing a pickle");
    return CC_OK;
}

int cc_pickle_dumps(const json_t *v, bool top_as_tuple, char **out, size_t *len, struct cc_err *err)
{
    return pk_dumps(v, top_as_tuple, false, out, len, err);
}

bool cc_pickle_is_exc(const json_t *v)
{
    return json_is_object(v) && json_is_string(json_object_get(v, "exc_type")) &&
           json_is_string(json_object_get(v, "exc_module")) &&
           json_object_get(v, "exc_message") != NULL;
}

int cc_pickle_result(const char *status, const json_t *result, char **out, size_t *len,
                     struct cc_err *err)
{
    bool is_exc_state =
        status != NULL && (strcmp(status, "FAILURE") == 0 || strcmp(status, "RETRY") == 0 ||
                           strcmp(status, "REVOKED") == 0);
    bool exc_tuple = is_exc_state && cc_pickle_is_exc(result) &&
                     json_object_size(result) <= PICKLE_BATCH &&
                     json_is_array(json_object_get(result, "exc_message"));

    return pk_dumps(result, false, exc_tuple, out, len, err);
}
