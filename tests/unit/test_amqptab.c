/* Unit tests for proto/amqptab.c: JSON -> field table -> JSON round trips (fixture header
 * tables included), the kinds encode may emit, decoding of every kind, depth and UTF-8
 * limits. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <string.h>

#include "amqptab.h"
#include "helpers/fixture.h"

/* Every kind in the encoded table is one of S I L d t V A F (reference §1.6). */
static void check_kinds(const amqp_field_value_t *f)
{
    switch (f->kind) {
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_I32:
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_F64:
    case AMQP_FIELD_KIND_BOOLEAN:
    case AMQP_FIELD_KIND_VOID:
        break;
    case AMQP_FIELD_KIND_ARRAY:
        for (int i = 0; i < f->value.array.num_entries; i++)
            check_kinds(&f->value.array.entries[i]);
        break;
    case AMQP_FIELD_KIND_TABLE:
        for (int i = 0; i < f->value.table.num_entries; i++)
            check_kinds(&f->value.table.entries[i].value);
        break;
    default:
        fail_msg("encoder emitted kind '%c'", (char)f->kind);
    }
}

static void round_trip(const json_t *in)
{
    amqp_pool_t pool;
    amqp_table_t t;
    json_t *back = NULL;
    struct cc_err err = {0};

    init_amqp_pool(&pool, 4096);
    assert_int_equal(cc_amqptab_from_json(in, &pool, &t, &err), CC_OK);
    for (int i = 0; i < t.num_entries; i++)
        check_kinds(&t.entries[i].value);
    assert_int_equal(cc_amqptab_to_json(&t, &back, &err), CC_OK);
    if (!json_equal(back, (json_t *)in))
        fail_msg("round trip changed the table");
    {
        /* key order survives too */
        const char *k1;
        json_t *v1;
        void *it = json_object_iter(back);

        json_object_foreach((json_t *)in, k1, v1)
        {
            (void)v1;
            assert_non_null(it);
            assert_string_equal(k1, json_object_iter_key(it));
            it = json_object_iter_next(back, it);
        }
    }
    json_decref(back);
    empty_amqp_pool(&pool);
}

static void test_amqptab_round_trip_values(void **state)
{
    json_error_t jerr;
    json_t *in = json_loads(
        "{\"s\": \"text \\u00fc\", \"empty\": \"\", \"i\": 7, \"neg\": -2147483648, "
        "\"big\": 2147483648, \"huge\": -9223372036854775808, \"max\": 9223372036854775807, "
        "\"d\": 2.5, \"t\": true, \"f\": false, \"n\": null, \"a\": [1, \"x\", [], [null]], "
        "\"o\": {\"nested\": {\"k\": [1.5]}}, \"eo\": {}, \"ea\": []}",
        0, &jerr);
    amqp_pool_t pool;
    amqp_table_t t;

    (void)state;
    assert_non_null(in);
    round_trip(in);
    init_amqp_pool(&pool, 4096);
    assert_int_equal(cc_amqptab_from_json(in, &pool, &t, NULL), CC_OK);
    for (int i = 0; i < t.num_entries; i++) {
        amqp_bytes_t k = t.entries[i].key;
        char kind = (char)t.entries[i].value.kind;

        if (cc_bytes_eq((cc_bytes_t){k.bytes, k.len}, "i") ||
            cc_bytes_eq((cc_bytes_t){k.bytes, k.len}, "neg"))
            assert_int_equal(kind, 'I');
        if (cc_bytes_eq((cc_bytes_t){k.bytes, k.len}, "big") ||
            cc_bytes_eq((cc_bytes_t){k.bytes, k.len}, "huge"))
            assert_int_equal(kind, 'L');
        if (cc_bytes_eq((cc_bytes_t){k.bytes, k.len}, "d"))
            assert_int_equal(kind, 'd');
    }
    empty_amqp_pool(&pool);
    json_decref(in);
}

static void test_amqptab_round_trip_fixture_headers(void **state)
{
    DIR *d = opendir(CC_FIXTURES_DIR);
    struct dirent *e;
    size_t n = 0;

    (void)state;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        json_t *root, *recs;

        if (strncmp(e->d_name, "task-", 5) != 0 || strstr(e->d_name, ".json") == NULL)
            continue;
        root = fixture_load(e->d_name);
        recs = fixture_records(root);
        for (size_t i = 0; i < json_array_size(recs); i++) {
            const json_t *h = json_object_get(json_array_get(recs, i), "headers");

            if (json_is_object(h)) {
                round_trip(h);
                n++;
            }
        }
        json_decref(recs);
        json_decref(root);
    }
    closedir(d);
    assert_true(n >= 40);
}

static void test_amqptab_decode_every_kind(void **state)
{
    amqp_field_value_t arr[2] = {{.kind = AMQP_FIELD_KIND_I8, .value.i8 = -3},
                                 {.kind = AMQP_FIELD_KIND_VOID}};
    amqp_table_entry_t inner[1] = {
        {.key = {1, (void *)"z"}, .value = {.kind = AMQP_FIELD_KIND_U8, .value.u8 = 200}}};
    amqp_table_entry_t e[] = {
        {.key = {2, (void *)"b1"}, .value = {.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = 1}},
        {.key = {2, (void *)"i8"}, .value = {.kind = AMQP_FIELD_KIND_I8, .value.i8 = -8}},
        {.key = {2, (void *)"u8"}, .value = {.kind = AMQP_FIELD_KIND_U8, .value.u8 = 255}},
        {.key = {3, (void *)"i16"}, .value = {.kind = AMQP_FIELD_KIND_I16, .value.i16 = -300}},
        {.key = {3, (void *)"u16"}, .value = {.kind = AMQP_FIELD_KIND_U16, .value.u16 = 65535}},
        {.key = {3, (void *)"i32"}, .value = {.kind = AMQP_FIELD_KIND_I32, .value.i32 = -70000}},
        {.key = {3, (void *)"u32"},
         .value = {.kind = AMQP_FIELD_KIND_U32, .value.u32 = 4000000000u}},
        {.key = {3, (void *)"i64"},
         .value = {.kind = AMQP_FIELD_KIND_I64, .value.i64 = -5000000000}},
        {.key = {3, (void *)"u64"},
         .value = {.kind = AMQP_FIELD_KIND_U64, .value.u64 = (uint64_t)-5000000000LL}},
        {.key = {3, (void *)"f32"}, .value = {.kind = AMQP_FIELD_KIND_F32, .value.f32 = 0.5f}},
        {.key = {3, (void *)"f64"}, .value = {.kind = AMQP_FIELD_KIND_F64, .value.f64 = 1.25}},
        {.key = {3, (void *)"dec"},
         .value = {.kind = AMQP_FIELD_KIND_DECIMAL, .value.decimal = {2, 1234}}},
        {.key = {2, (void *)"ts"},
         .value = {.kind = AMQP_FIELD_KIND_TIMESTAMP, .value.u64 = 1700000000}},
        {.key = {1, (void *)"s"},
         .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = {2, (void *)"ok"}}},
        {.key = {1, (void *)"x"},
         .value = {.kind = AMQP_FIELD_KIND_BYTES, .value.bytes = {0, NULL}}},
        {.key = {1, (void *)"v"}, .value = {.kind = AMQP_FIELD_KIND_VOID}},
        {.key = {1, (void *)"a"},
         .value = {.kind = AMQP_FIELD_KIND_ARRAY, .value.array = {2, arr}}},
        {.key = {1, (void *)"t"},
         .value = {.kind = AMQP_FIELD_KIND_TABLE, .value.table = {1, inner}}},
    };
    amqp_table_t t = {(int)(sizeof(e) / sizeof(e[0])), e};
    json_t *out = NULL;
    json_error_t jerr;
    json_t *want = json_loads(
        "{\"b1\": true, \"i8\": -8, \"u8\": 255, \"i16\": -300, \"u16\": 65535, \"i32\": -70000, "
        "\"u32\": 4000000000, \"i64\": -5000000000, \"u64\": -5000000000, \"f32\": 0.5, "
        "\"f64\": 1.25, \"dec\": 12.34, \"ts\": 1700000000, \"s\": \"ok\", \"x\": \"\", "
        "\"v\": null, \"a\": [-3, null], \"t\": {\"z\": 200}}",
        0, &jerr);

    (void)state;
    assert_non_null(want);
    assert_int_equal(cc_amqptab_to_json(&t, &out, NULL), CC_OK);
    if (!json_equal(out, want)) {
        char *s = json_dumps(out, JSON_COMPACT);

        fail_msg("got %s", s);
    }
    json_decref(out);
    json_decref(want);
    assert_int_equal(cc_amqptab_to_json(NULL, &out, NULL), CC_OK);
    assert_int_equal(json_object_size(out), 0);
    json_decref(out);
}

static void test_amqptab_rejects(void **state)
{
    amqp_table_entry_t bad_utf8[] = {
        {.key = {1, (void *)"s"},
         .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = {2, (void *)"\xc3("}}}};
    amqp_table_entry_t bad_key[] = {
        {.key = {1, (void *)"\xff"}, .value = {.kind = AMQP_FIELD_KIND_VOID}}};
    amqp_table_entry_t bad_kind[] = {{.key = {1, (void *)"k"}, .value = {.kind = 'Q'}}};
    amqp_table_t t1 = {1, bad_utf8}, t2 = {1, bad_key}, t3 = {1, bad_kind};
    amqp_table_entry_t deep[CC_AMQPTAB_MAX_DEPTH + 1];
    amqp_table_t top;
    json_t *out = NULL;
    json_t *j, *cur;
    amqp_pool_t pool;
    amqp_table_t t;
    struct cc_err err = {0};

    (void)state;
    assert_int_equal(cc_amqptab_to_json(&t1, &out, &err), CC_EBADTABLE);
    assert_int_equal(cc_amqptab_to_json(&t2, &out, &err), CC_EBADTABLE);
    assert_int_equal(cc_amqptab_to_json(&t3, &out, &err), CC_EBADTABLE);
    /* A chain of nested tables: depth MAX_DEPTH is fine, one more is not. */
    for (int i = 0; i <= CC_AMQPTAB_MAX_DEPTH; i++) {
        deep[i].key = (amqp_bytes_t){1, (void *)"k"};
        if (i < CC_AMQPTAB_MAX_DEPTH) {
            deep[i].value.kind = AMQP_FIELD_KIND_TABLE;
            deep[i].value.value.table = (amqp_table_t){1, &deep[i + 1]};
        } else {
            deep[i].value.kind = AMQP_FIELD_KIND_VOID;
        }
    }
    top = (amqp_table_t){1, &deep[1]}; /* depth MAX */
    assert_int_equal(cc_amqptab_to_json(&top, &out, &err), CC_OK);
    json_decref(out);
    top = (amqp_table_t){1, &deep[0]}; /* depth MAX + 1 */
    assert_int_equal(cc_amqptab_to_json(&top, &out, &err), CC_EBADTABLE);

    init_amqp_pool(&pool, 4096);
    j = json_array();
    assert_int_equal(cc_amqptab_from_json(j, &pool, &t, &err), CC_EINVAL);
    json_decref(j);
    j = json_object();
    cur = j;
    for (int i = 0; i < CC_AMQPTAB_MAX_DEPTH; i++) {
        json_t *n = json_object();

        json_object_set_new(cur, "k", n);
        cur = n;
    }
    assert_int_equal(cc_amqptab_from_json(j, &pool, &t, &err), CC_EBADTABLE);
    json_decref(j);
    empty_amqp_pool(&pool);
}

/* Found by fuzz_amqpwire (tests/fuzz/corpus/amqpwire/crash-nul-in-key): a wire key with a
 * NUL byte became a jansson key that json_object_get()/json_equal() read as a shorter one,
 * so "task\0x" could alias "task". Such a table is refused, in nested tables too. */
static void test_amqptab_fuzz_nul_in_key(void **state)
{
    amqp_table_entry_t nul_key[] = {
        {.key = {3, (void *)"bF\0"}, .value = {.kind = AMQP_FIELD_KIND_VOID}}};
    amqp_table_entry_t outer[] = {
        {.key = {1, (void *)"t"},
         .value = {.kind = AMQP_FIELD_KIND_TABLE, .value.table = {1, nul_key}}}};
    amqp_table_t t1 = {1, nul_key}, t2 = {1, outer};
    json_t *out = NULL;
    struct cc_err err = {0};

    (void)state;
    assert_int_equal(cc_amqptab_to_json(&t1, &out, &err), CC_EBADTABLE);
    assert_null(out);
    assert_non_null(strstr(err.msg, "NUL"));
    assert_int_equal(cc_amqptab_to_json(&t2, &out, &err), CC_EBADTABLE);
    assert_null(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_amqptab_round_trip_values),
        cmocka_unit_test(test_amqptab_round_trip_fixture_headers),
        cmocka_unit_test(test_amqptab_decode_every_kind),
        cmocka_unit_test(test_amqptab_rejects),
        cmocka_unit_test(test_amqptab_fuzz_nul_in_key),
    };

    return cmocka_run_group_tests_name("amqptab", tests, NULL, NULL);
}
