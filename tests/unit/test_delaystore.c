/* Unit tests for the pure parts of src/worker/delaystore.c (the store record codec) and
 * src/worker/redeliver.c (x-delivery-count, counter keys, SUCCESS detection). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "delaystore.h"
#include "redeliver.h"

static amqp_bytes_t b(const char *s)
{
    return amqp_cstring_bytes(s);
}

static bool same(amqp_bytes_t x, const char *s)
{
    return x.len == strlen(s) && memcmp(x.bytes, s, x.len) == 0;
}

/* A Celery-like message with every property set and a header table of several kinds. */
struct fixture {
    amqp_table_entry_t entries[6];
    amqp_field_value_t arr_items[2];
    amqp_basic_properties_t p;
};

static void fixture_fill(struct fixture *f, bool with_delivery_count)
{
    int n = 0;

    memset(f, 0, sizeof(*f));
    f->entries[n].key = b("task");
    f->entries[n].value.kind = AMQP_FIELD_KIND_UTF8;
    f->entries[n++].value.value.bytes = b("demo.add");
    f->entries[n].key = b("id");
    f->entries[n].value.kind = AMQP_FIELD_KIND_UTF8;
    f->entries[n++].value.value.bytes = b("0b6c-id");
    f->entries[n].key = b("retries");
    f->entries[n].value.kind = AMQP_FIELD_KIND_I32;
    f->entries[n++].value.value.i32 = 3;
    if (with_delivery_count) {
        f->entries[n].key = b("x-delivery-count");
        f->entries[n].value.kind = AMQP_FIELD_KIND_I64;
        f->entries[n++].value.value.i64 = 4;
    }
    f->arr_items[0].kind = AMQP_FIELD_KIND_VOID;
    f->arr_items[1].kind = AMQP_FIELD_KIND_F64;
    f->arr_items[1].value.f64 = 2.5;
    f->entries[n].key = b("timelimit");
    f->entries[n].value.kind = AMQP_FIELD_KIND_ARRAY;
    f->entries[n].value.value.array.num_entries = 2;
    f->entries[n++].value.value.array.entries = f->arr_items;
    f->entries[n].key = b("eta");
    f->entries[n].value.kind = AMQP_FIELD_KIND_UTF8;
    f->entries[n++].value.value.bytes = b("2030-01-01T00:00:00+00:00");
    f->p._flags =
        AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_CONTENT_ENCODING_FLAG | AMQP_BASIC_HEADERS_FLAG |
        AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_PRIORITY_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG |
        AMQP_BASIC_REPLY_TO_FLAG | AMQP_BASIC_EXPIRATION_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG |
        AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_TYPE_FLAG | AMQP_BASIC_APP_ID_FLAG;
    f->p.content_type = b("application/json");
    f->p.content_encoding = b("utf-8");
    f->p.headers.num_entries = n;
    f->p.headers.entries = f->entries;
    f->p.delivery_mode = 2;
    f->p.priority = 7;
    f->p.correlation_id = b("0b6c-id");
    f->p.reply_to = b("");
    f->p.expiration = b("60000");
    f->p.message_id = b("m1");
    f->p.timestamp = 0x0102030405060708ull;
    f->p.type = b("t");
    f->p.app_id = b("app");
}

static const char BODY[] = "[[2, 3], {}, {\"callbacks\": null}]\0binary\xff";

static void test_delaystore_roundtrip(void **state)
{
    struct fixture f;
    struct cc_delaystore_rec rec;
    struct cc_err err = {0};
    amqp_bytes_t body = {sizeof(BODY), (void *)BODY};
    char *enc = NULL;
    size_t len = 0;

    (void)state;
    fixture_fill(&f, false);
    assert_int_equal(cc_delaystore_encode(b("celery"), b("rk.x"), &f.p, body, &enc, &len, &err),
                     CC_OK);
    assert_int_equal(cc_delaystore_decode(enc, len, &rec, &err), CC_OK);
    assert_string_equal(rec.exchange, "celery");
    assert_string_equal(rec.routing_key, "rk.x");
    assert_int_equal(rec.props._flags, f.p._flags);
    assert_true(same(rec.props.content_type, "application/json"));
    assert_true(same(rec.props.content_encoding, "utf-8"));
    assert_int_equal(rec.props.delivery_mode, 2);
    assert_int_equal(rec.props.priority, 7);
    assert_true(same(rec.props.correlation_id, "0b6c-id"));
    assert_int_equal(rec.props.reply_to.len, 0);
    assert_true(same(rec.props.expiration, "60000"));
    assert_true(same(rec.props.message_id, "m1"));
    assert_true(rec.props.timestamp == 0x0102030405060708ull);
    assert_true(same(rec.props.type, "t"));
    assert_true(same(rec.props.app_id, "app"));
    assert_int_equal(rec.body.len, sizeof(BODY));
    assert_memory_equal(rec.body.bytes, BODY, sizeof(BODY));
    assert_int_equal(rec.props.headers.num_entries, f.p.headers.num_entries);
    for (int i = 0; i < f.p.headers.num_entries; i++) {
        const amqp_table_entry_t *x = &rec.props.headers.entries[i], *y = &f.entries[i];

        assert_int_equal(x->key.len, y->key.len);
        assert_memory_equal(x->key.bytes, y->key.bytes, y->key.len);
        assert_int_equal(x->value.kind, y->value.kind);
    }
    assert_int_equal(rec.props.headers.entries[2].value.value.i32, 3);
    assert_int_equal(rec.props.headers.entries[3].value.value.array.num_entries, 2);
    assert_true(rec.props.headers.entries[3].value.value.array.entries[1].value.f64 == 2.5);
    cc_delaystore_rec_deinit(&rec);
    free(enc);
}

/* Same message -> same bytes, and x-delivery-count does not change the member (a quorum
 * queue redelivery after a crash between ZADD and ack is stored once). */
static void test_delaystore_canonical(void **state)
{
    struct fixture f1, f2;
    struct cc_err err = {0};
    amqp_bytes_t body = {sizeof(BODY), (void *)BODY};
    char *e1 = NULL, *e2 = NULL, *e3 = NULL;
    size_t l1, l2, l3;

    (void)state;
    fixture_fill(&f1, false);
    fixture_fill(&f2, true);
    assert_int_equal(cc_delaystore_encode(b("celery"), b("celery"), &f1.p, body, &e1, &l1, &err),
                     CC_OK);
    assert_int_equal(cc_delaystore_encode(b("celery"), b("celery"), &f1.p, body, &e2, &l2, &err),
                     CC_OK);
    assert_int_equal(cc_delaystore_encode(b("celery"), b("celery"), &f2.p, body, &e3, &l3, &err),
                     CC_OK);
    assert_int_equal(l1, l2);
    assert_memory_equal(e1, e2, l1);
    assert_int_equal(l1, l3);
    assert_memory_equal(e1, e3, l1);
    free(e1);
    free(e2);
    free(e3);
}

static void test_delaystore_minimal_properties(void **state)
{
    amqp_basic_properties_t p;
    struct cc_delaystore_rec rec;
    struct cc_err err = {0};
    char *enc = NULL;
    size_t len;

    (void)state;
    memset(&p, 0, sizeof(p));
    assert_int_equal(cc_delaystore_encode(b(""), b("q"), &p, b(""), &enc, &len, &err), CC_OK);
    assert_int_equal(cc_delaystore_decode(enc, len, &rec, &err), CC_OK);
    assert_string_equal(rec.exchange, "");
    assert_string_equal(rec.routing_key, "q");
    assert_int_equal(rec.props._flags, 0);
    assert_int_equal(rec.body.len, 0);
    cc_delaystore_rec_deinit(&rec);
    free(enc);
}

/* Every truncation and a few corruptions are refused cleanly (run under ASan). */
static void test_delaystore_bad_records(void **state)
{
    struct fixture f;
    struct cc_delaystore_rec rec;
    struct cc_err err = {0};
    amqp_bytes_t body = {sizeof(BODY), (void *)BODY};
    char *enc = NULL;
    size_t len;

    (void)state;
    fixture_fill(&f, false);
    assert_int_equal(cc_delaystore_encode(b("celery"), b("celery"), &f.p, body, &enc, &len, &err),
                     CC_OK);
    for (size_t n = 0; n < len; n++) {
        char *cut = malloc(n ? n : 1);

        memcpy(cut, enc, n);
        assert_int_equal(cc_delaystore_decode(cut, n, &rec, &err), CC_EBADMSG);
        cc_delaystore_rec_deinit(&rec);
        free(cut);
    }
    enc[0] = 'X';
    assert_int_equal(cc_delaystore_decode(enc, len, &rec, &err), CC_EBADMSG);
    cc_delaystore_rec_deinit(&rec);
    enc[0] = 'C';
    enc[7] = 0x7f; /* exchange length huge */
    assert_int_equal(cc_delaystore_decode(enc, len, &rec, &err), CC_EBADMSG);
    cc_delaystore_rec_deinit(&rec);
    free(enc);
}

static void test_redeliver_header_count(void **state)
{
    struct fixture f;
    amqp_table_t empty = {0, NULL};

    (void)state;
    fixture_fill(&f, true);
    assert_int_equal(cc_redeliver_header_count(&f.p.headers), 4);
    fixture_fill(&f, false);
    assert_int_equal(cc_redeliver_header_count(&f.p.headers), -1);
    assert_int_equal(cc_redeliver_header_count(&empty), -1);
    assert_int_equal(cc_redeliver_header_count(NULL), -1);
}

static void test_redeliver_key_and_meta(void **state)
{
    char buf[64];
    const char ok[] = "{\"status\": \"SUCCESS\", \"result\": 5, \"task_id\": \"x\"}";
    const char fail[] = "{\"status\": \"FAILURE\", \"result\": {}}";

    (void)state;
    assert_int_equal(cc_redeliver_key("abc", buf, sizeof(buf)), 22);
    assert_string_equal(buf, "celeryc-deliveries-abc");
    assert_int_equal(cc_redeliver_key("abc", buf, 10), -1);
    assert_true(cc_redeliver_meta_is_success(ok, strlen(ok)));
    assert_false(cc_redeliver_meta_is_success(fail, strlen(fail)));
    assert_false(cc_redeliver_meta_is_success("{not json", 9));
    assert_false(cc_redeliver_meta_is_success("\"SUCCESS\"", 9));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delaystore_roundtrip),
        cmocka_unit_test(test_delaystore_canonical),
        cmocka_unit_test(test_delaystore_minimal_properties),
        cmocka_unit_test(test_delaystore_bad_records),
        cmocka_unit_test(test_redeliver_header_count),
        cmocka_unit_test(test_redeliver_key_and_meta),
    };

    return cmocka_run_group_tests_name("delaystore", tests, NULL, NULL);
}
