/* AMQP field tables <-> JSON (proto/amqptab.h).
 *
 * Decoding maps every rabbitmq-c field kind to the JSON value Python would see: all integer
 * widths to integers, U64 ('L', which py-amqp writes for ints beyond int32) reinterpreted as
 * the signed int64 py-amqp meant, F32/F64 and decimals to reals, timestamps to integers,
 * UTF-8 and byte strings to strings (must be valid UTF-8), void to null. Encoding writes only
 * the kinds py-amqp reads back correctly (celery-wire.md §1.6): S, I (fits int32) or L (U64
 * carrying the int64 bit pattern), d, t, V, A, F; never I8/I16/I64, whose tags py-amqp
 * misreads.
 *
 * Invariants: depth is bounded by CC_AMQPTAB_MAX_DEPTH in both directions (the top-level
 * table is depth 1), so recursion is bounded. Encoded memory comes only from the caller's
 * pool; decoded JSON never points into the AMQP buffers.
 */
#include <math.h>
#include <string.h>

#include "amqptab.h"
#include "strbuf.h"

/* ---- AMQP -> JSON ---------------------------------------------------------------------- */

static int table_to_json(const amqp_table_t *t, int depth, json_t **out, struct cc_err *err);

static int bytes_to_json(amqp_bytes_t b, json_t **out, struct cc_err *err)
{
    if (cc_strbuf_utf8_valid_prefix(b.bytes, b.len) != b.len)
        return cc_err_set(err, CC_EBADTABLE, "header string is not UTF-8");
    *out = json_stringn_nocheck(b.len ? (const char *)b.bytes : "", b.len);
    return *out ? CC_OK : cc_err_set(err, CC_ENOMEM, "out of memory");
}

static int value_to_json(const amqp_field_value_t *f, int depth, json_t **out, struct cc_err *err)
{
    double d;

    *out = NULL;
    switch (f->kind) {
    case AMQP_FIELD_KIND_BOOLEAN:
        *out = json_boolean(f->value.boolean);
        break;
    case AMQP_FIELD_KIND_I8:
        *out = json_integer(f->value.i8);
        break;
    case AMQP_FIELD_KIND_U8:
        *out = json_integer(f->value.u8);
        break;
    case AMQP_FIELD_KIND_I16:
        *out = json_integer(f->value.i16);
        break;
    case AMQP_FIELD_KIND_U16:
        *out = json_integer(f->value.u16);
        break;
    case AMQP_FIELD_KIND_I32:
        *out = json_integer(f->value.i32);
        break;
    case AMQP_FIELD_KIND_U32:
        *out = json_integer(f->value.u32);
        break;
    case AMQP_FIELD_KIND_I64:
        *out = json_integer(f->value.i64);
        break;
    case AMQP_FIELD_KIND_U64:
        *out = json_integer((json_int_t)(int64_t)f->value.u64);
        break;
    case AMQP_FIELD_KIND_TIMESTAMP:
        *out = json_integer((json_int_t)f->value.u64);
        break;
    case AMQP_FIELD_KIND_F32:
    case AMQP_FIELD_KIND_F64:
        d = f->kind == AMQP_FIELD_KIND_F32 ? f->value.f32 : f->value.f64;
        if (!isfinite(d))
            return cc_err_set(err, CC_EBADTABLE, "non-finite float in header table");
        *out = json_real(d);
        break;
    case AMQP_FIELD_KIND_DECIMAL:
        d = (double)f->value.decimal.value;
        for (unsigned i = 0; i < f->value.decimal.decimals; i++)
            d /= 10;
        *out = json_real(d);
        break;
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
        return bytes_to_json(f->value.bytes, out, err);
    case AMQP_FIELD_KIND_VOID:
        *out = json_null();
        break;
    case AMQP_FIELD_KIND_ARRAY: {
        json_t *a;

        if (depth >= CC_AMQPTAB_MAX_DEPTH)
            return cc_err_set(err, CC_EBADTABLE, "header table nested deeper than %d",
                              CC_AMQPTAB_MAX_DEPTH);
        a = json_array();
        if (a == NULL)
            return cc_err_set(err, CC_ENOMEM, "out of memory");
        for (int i = 0; i < f->value.array.num_entries; i++) {
            json_t *e;
            int rc = value_to_json(&f->value.array.entries[i], depth + 1, &e, err);

            if (rc == CC_OK && json_array_append_new(a, e) != 0)
                rc = cc_err_set(err, CC_ENOMEM, "out of memory");
            if (rc != CC_OK) {
                json_decref(a);
                return rc;
            }
        }
        *out = a;
        return CC_OK;
    }
    case AMQP_FIELD_KIND_TABLE:
        if (depth >= CC_AMQPTAB_MAX_DEPTH)
            return cc_err_set(err, CC_EBADTABLE, "header table nested deeper than %d",
                              CC_AMQPTAB_MAX_DEPTH);
        return table_to_json(&f->value.table, depth + 1, out, err);
    default:
        return cc_err_set(err, CC_EBADTABLE, "unknown field kind '%c'", (char)f->kind);
    }
    return *out ? CC_OK : cc_err_set(err, CC_ENOMEM, "out of memory");
}

static int table_to_json(const amqp_table_t *t, int depth, json_t **out, struct cc_err *err)
{
    json_t *o = json_object();

    *out = NULL;
    if (o == NULL)
        return cc_err_set(err, CC_ENOMEM, "out of memory");
    for (int i = 0; i < t->num_entries; i++) {
        const amqp_table_entry_t *e = &t->entries[i];
        json_t *v;
        int rc;

        if (cc_strbuf_utf8_valid_prefix(e->key.bytes, e->key.len) != e->key.len) {
            json_decref(o);
            return cc_err_set(err, CC_EBADTABLE, "header key is not UTF-8");
        }
        /* A NUL byte is valid UTF-8 and the wire allows it in a key, but jansson keys are C
         * strings to most of its API (json_object_get, json_equal, json_object_update see
         * "a\0b" as "a"; its parser refuses such keys), so one would alias another header.
         * No Celery client sends one: refuse the table like any other malformed header.
         * Found by fuzz_amqpwire (corpus/amqpwire/crash-nul-in-key). */
        if (e->key.len > 0 && memchr(e->key.bytes, '\0', e->key.len) != NULL) {
            json_decref(o);
            return cc_err_set(err, CC_EBADTABLE, "header key contains a NUL byte");
        }
        rc = value_to_json(&e->value, depth, &v, err);
        if (rc == CC_OK && json_object_setn_new_nocheck(
                               o, e->key.len ? (const char *)e->key.bytes : "", e->key.len, v) != 0)
            rc = cc_err_set(err, CC_ENOMEM, "out of memory");
        if (rc != CC_OK) {
            json_decref(o);
            return rc;
        }
    }
    *out = o;
    return CC_OK;
}

int cc_amqptab_to_json(const amqp_table_t *t, json_t **out, struct cc_err *err)
{
    static const amqp_table_t empty = {0, NULL};

    return table_to_json(t ? t : &empty, 1, out, err);
}

/* ---- JSON -> AMQP ---------------------------------------------------------------------- */

static int json_to_table(const json_t *obj, amqp_pool_t *pool, int depth, amqp_table_t *out,
                         struct cc_err *err);

static int pool_bytes(amqp_pool_t *pool, const char *s, size_t n, amqp_bytes_t *out,
                      struct cc_err *err)
{
    out->len = n;
    out->bytes = NULL;
    if (n == 0)
        return CC_OK; /* amqp_pool_alloc(0) returns NULL; an empty view needs no memory */
    out->bytes = amqp_pool_alloc(pool, n);
    if (out->bytes == NULL)
        return cc_err_set(err, CC_ENOMEM, "out of memory");
    memcpy(out->bytes, s, n);
    return CC_OK;
}

static int json_to_value(const json_t *v, amqp_pool_t *pool, int depth, amqp_field_value_t *f,
                         struct cc_err *err)
{
    memset(f, 0, sizeof(*f));
    switch (json_typeof(v)) {
    case JSON_STRING:
        f->kind = AMQP_FIELD_KIND_UTF8;
        return pool_bytes(pool, json_string_value(v), json_string_length(v), &f->value.bytes, err);
    case JSON_INTEGER: {
        json_int_t i = json_integer_value(v);

        if (i >= INT32_MIN && i <= INT32_MAX) {
            f->kind = AMQP_FIELD_KIND_I32;
            f->value.i32 = (int32_t)i;
        } else { /* 'L': py-amqp reads it as signed 64 */
            f->kind = AMQP_FIELD_KIND_U64;
            f->value.u64 = (uint64_t)(int64_t)i;
        }
        return CC_OK;
    }
    case JSON_REAL:
        f->kind = AMQP_FIELD_KIND_F64;
        f->value.f64 = json_real_value(v);
        return CC_OK;
    case JSON_TRUE:
    case JSON_FALSE:
        f->kind = AMQP_FIELD_KIND_BOOLEAN;
        f->value.boolean = json_is_true(v);
        return CC_OK;
    case JSON_NULL:
        f->kind = AMQP_FIELD_KIND_VOID;
        return CC_OK;
    case JSON_ARRAY: {
        size_t n = json_array_size(v);

        if (depth >= CC_AMQPTAB_MAX_DEPTH)
            return cc_err_set(err, CC_EBADTABLE, "JSON nested deeper than %d",
                              CC_AMQPTAB_MAX_DEPTH);
        if (n > INT32_MAX / sizeof(amqp_field_value_t))
            return cc_err_set(err, CC_EBADTABLE, "array too long for a field table");
        f->kind = AMQP_FIELD_KIND_ARRAY;
        f->value.array.num_entries = (int)n;
        if (n == 0)
            return CC_OK;
        f->value.array.entries = amqp_pool_alloc(pool, n * sizeof(amqp_field_value_t));
        if (f->value.array.entries == NULL)
            return cc_err_set(err, CC_ENOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) {
            int rc = json_to_value(json_array_get(v, i), pool, depth + 1,
                                   &f->value.array.entries[i], err);

            if (rc != CC_OK)
                return rc;
        }
        return CC_OK;
    }
    case JSON_OBJECT:
        if (depth >= CC_AMQPTAB_MAX_DEPTH)
            return cc_err_set(err, CC_EBADTABLE, "JSON nested deeper than %d",
                              CC_AMQPTAB_MAX_DEPTH);
        f->kind = AMQP_FIELD_KIND_TABLE;
        return json_to_table(v, pool, depth + 1, &f->value.table, err);
    }
    return cc_err_set(err, CC_EINVAL, "unknown JSON type");
}

static int json_to_table(const json_t *obj, amqp_pool_t *pool, int depth, amqp_table_t *out,
                         struct cc_err *err)
{
    size_t n = json_object_size(obj);
    const char *key;
    json_t *val;
    int i = 0;

    out->num_entries = 0;
    out->entries = NULL;
    if (n == 0)
        return CC_OK;
    if (n > INT32_MAX / sizeof(amqp_table_entry_t))
        return cc_err_set(err, CC_EBADTABLE, "too many keys for a field table");
    out->entries = amqp_pool_alloc(pool, n * sizeof(amqp_table_entry_t));
    if (out->entries == NULL)
        return cc_err_set(err, CC_ENOMEM, "out of memory");
    json_object_foreach((json_t *)obj, key, val)
    {
        size_t klen = json_object_iter_key_len(json_object_key_to_iter(key));
        int rc;

        if (klen > 255)
            return cc_err_set(err, CC_EBADTABLE, "header key longer than 255 bytes");
        if ((rc = pool_bytes(pool, key, klen, &out->entries[i].key, err)) != CC_OK ||
            (rc = json_to_value(val, pool, depth, &out->entries[i].value, err)) != CC_OK)
            return rc;
        out->num_entries = ++i;
    }
    return CC_OK;
}

int cc_amqptab_from_json(const json_t *obj, amqp_pool_t *pool, amqp_table_t *out,
                         struct cc_err *err)
{
    out->num_entries = 0;
    out->entries = NULL;
    if (!json_is_object(obj))
        return cc_err_set(err, CC_EINVAL, "header table must be a JSON object");
    return json_to_table(obj, pool, 1, out, err);
}
