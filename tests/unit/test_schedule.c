/* Unit tests for proto/schedule.c. The expected values come from Celery 5.2 itself, computed at
 * test time: ctest's fixture test `schedule_cases` runs
 * tests/unit/data/schedule/gen_schedule_cases.py with /usr/bin/python3 (Celery 5.2.6 + pytz) and
 * writes CC_SCHEDULE_CASES in the build tree before this test runs (CMakeLists.txt). Run by hand:
 *   ctest --test-dir build -R test_schedule      (runs the generator first)
 * Zones are read from the system zoneinfo (/usr/share/zoneinfo). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schedule.h"
#include "tzload.h"

#ifndef CC_SCHEDULE_CASES
#error "CC_SCHEDULE_CASES (the generated cases file) is set by CMakeLists.txt"
#endif
#define SCHED_DATA CC_SCHEDULE_CASES

/* Every zone the generator uses; a case in another zone fails the test. */
static const char *const ZONES[] = {"UTC", "Europe/Paris", "America/New_York", "Europe/Oslo",
                                    "Australia/Lord_Howe"};
#define NZONES (sizeof(ZONES) / sizeof(ZONES[0]))

static json_t *load_cases(void)
{
    json_error_t jerr;
    json_t *root = json_load_file(SCHED_DATA, 0, &jerr);

    if (root == NULL)
        fail_msg("%s: %s (line %d): the schedule_cases fixture (gen_schedule_cases.py with "
                 "/usr/bin/python3 and Celery 5.2) writes it; run this test through ctest",
                 SCHED_DATA, jerr.text, jerr.line);
    assert_string_equal(json_string_value(json_object_get(root, "generator")), "celery 5.2.6");
    return root;
}

static void load_tz(const char *name, struct cc_tz *tz)
{
    struct cc_err err = {0};

    assert_int_equal(cc_tzload_zone(name, NULL, tz, &err), CC_OK);
    assert_true(tz->n > 100); /* the system files carry transitions up to 2037 */
}

static const char *field_or_null(json_t *spec, const char *k)
{
    json_t *v = json_object_get(spec, k);

    return v ? json_string_value(v) : NULL;
}

static void test_schedule_celery_table(void **state)
{
    json_t *root = load_cases(), *cases;
    struct cc_tz tzs[NZONES];
    size_t per_zone[NZONES] = {0};
    size_t i, z, checked = 0, failed = 0, errors = 0;
    json_t *c;

    (void)state;
    cc_schedule_tz_utc(&tzs[0]);
    for (z = 1; z < NZONES; z++)
        load_tz(ZONES[z], &tzs[z]);
    cases = json_object_get(root, "cases");
    /* The table of the first generator (5,884 cases) plus Oslo, Lord Howe and more specs. */
    assert_true(json_array_size(cases) >= 9900);
    json_array_foreach(cases, i, c)
    {
        const char *tzn = json_string_value(json_object_get(c, "tz"));
        const char *kind = json_string_value(json_object_get(c, "kind"));
        json_t *spec = json_object_get(c, "spec");
        const struct cc_tz *tz = NULL;
        int64_t last = json_integer_value(json_object_get(c, "last"));
        int64_t now = json_integer_value(json_object_get(c, "now"));
        struct cc_schedule s;
        struct cc_err err = {0};
        int64_t next = 0, chk = 0;
        int due = -1, rc;

        for (z = 0; z < NZONES && tz == NULL; z++)
            if (tzn != NULL && strcmp(tzn, ZONES[z]) == 0) {
                tz = &tzs[z];
                per_zone[z]++;
            }
        if (tz == NULL)
            fail_msg("case %zu: zone %s not loaded by this test", i, tzn ? tzn : "(none)");
        if (strcmp(kind, "crontab") == 0) {
            assert_int_equal(cc_schedule_crontab(&s, field_or_null(spec, "minute"),
                                                 field_or_null(spec, "hour"),
                                                 field_or_null(spec, "day_of_week"),
                                                 field_or_null(spec, "day_of_month"),
                                                 field_or_null(spec, "month_of_year"), &err),
                             CC_OK);
        } else {
            assert_int_equal(
                cc_schedule_interval(&s, (int64_t)(json_number_value(spec) * 1e6 + 0.5), &err),
                CC_OK);
        }
        rc = cc_schedule_next(&s, last, now, tz, &next, &err);
        if (json_object_get(c, "error")) {
            assert_int_equal(rc, CC_EINVAL);
            checked++;
            errors++;
            continue;
        }
        assert_int_equal(rc, CC_OK);
        assert_int_equal(cc_schedule_is_due(&s, last, now, tz, &due, &chk, &err), CC_OK);
        if (next != json_integer_value(json_object_get(c, "next")) ||
            due != json_is_true(json_object_get(c, "due")) ||
            chk != json_integer_value(json_object_get(c, "next_check"))) {
            char *d = json_dumps(c, JSON_COMPACT);

            if (failed < 20)
                fprintf(stderr, "mismatch: %s\n  got next=%lld due=%d check=%lld\n", d,
                        (long long)next, due, (long long)chk);
            free(d);
            failed++;
        }
        checked++;
    }
    fprintf(stderr, "schedule table: %zu cases checked (%zu never fire), %zu mismatches\n", checked,
            errors, failed);
    for (z = 0; z < NZONES; z++) {
        fprintf(stderr, "  %-20s %zu cases\n", ZONES[z], per_zone[z]);
        assert_true(per_zone[z] >= 500);
    }
    assert_true(errors >= 1);
    assert_int_equal(failed, 0);
    for (z = 0; z < NZONES; z++)
        cc_schedule_tz_deinit(&tzs[z]);
    json_decref(root);
}

static void test_schedule_parse_table(void **state)
{
    json_t *root = load_cases(), *c;
    size_t i;

    (void)state;
    assert_true(json_array_size(json_object_get(root, "parse_ok")) >= 10);
    assert_true(json_array_size(json_object_get(root, "parse_err")) >= 10);
    json_array_foreach(json_object_get(root, "parse_ok"), i, c)
    {
        uint64_t bits = 0, want = 0;
        struct cc_err err = {0};
        size_t j;
        json_t *v;
        const char *spec = json_string_value(json_object_get(c, "spec"));

        json_array_foreach(json_object_get(c, "values"), j, v) want |= 1ULL
                                                                       << json_integer_value(v);
        if (cc_schedule_cron_parse_field(spec, (int)json_integer_value(json_object_get(c, "max")),
                                         (int)json_integer_value(json_object_get(c, "min")), &bits,
                                         &err) != CC_OK ||
            bits != want)
            fail_msg("spec '%s': %s bits %llx want %llx", spec, err.msg, (unsigned long long)bits,
                     (unsigned long long)want);
    }
    json_array_foreach(json_object_get(root, "parse_err"), i, c)
    {
        uint64_t bits = 1;
        struct cc_err err = {0};
        const char *spec = json_string_value(json_object_get(c, "spec"));

        assert_int_equal(cc_schedule_cron_parse_field(
                             spec, (int)json_integer_value(json_object_get(c, "max")),
                             (int)json_integer_value(json_object_get(c, "min")), &bits, &err),
                         CC_EINVAL);
        assert_int_equal(bits, 0);
        assert_string_equal(err.msg, json_string_value(json_object_get(c, "error")));
    }
    json_decref(root);
}

static void test_schedule_crontab_errors(void **state)
{
    struct cc_schedule s;
    struct cc_err err = {0};
    int64_t next;

    (void)state;
    assert_int_equal(cc_schedule_crontab(&s, "0", "24", NULL, NULL, NULL, &err), CC_EINVAL);
    assert_string_equal(err.msg, "crontab hour '24': Invalid end range: 24 > 23.");
    assert_int_equal(cc_schedule_interval(&s, 0, &err), CC_EINVAL);
    /* Feb 31 never exists: Celery raises RuntimeError('unable to rollover ...'). */
    assert_int_equal(cc_schedule_crontab(&s, "0", "0", NULL, "31", "2", &err), CC_OK);
    assert_int_equal(cc_schedule_next(&s, 0, 1000000, NULL, &next, &err), CC_EINVAL);
}

static void test_tz_parse_rejects(void **state)
{
    struct cc_tz tz;
    struct cc_err err = {0};
    uint8_t junk[60] = "TZif2";

    (void)state;
    assert_int_equal(cc_tzload_zone("Nowhere/Atlantis", NULL, &tz, &err), CC_EINVAL);
    assert_int_equal(cc_tzload_zone("../etc/passwd", NULL, &tz, &err), CC_EINVAL);
    assert_int_equal(cc_tzload_zone("UTC", NULL, &tz, &err), CC_OK);
    assert_int_equal(cc_schedule_tz_offset(&tz, 1774744200), 0);
    assert_int_equal(cc_tzload_zone("Europe/Paris", NULL, &tz, &err), CC_OK);
    assert_int_equal(cc_schedule_tz_offset(&tz, 1774746000 - 1), 3600); /* 2026-03-29 00:59:59Z */
    assert_int_equal(cc_schedule_tz_offset(&tz, 1774746000), 7200);
    /* July 2038: past the last transition, pytz (and we) keep CET, no DST. */
    assert_int_equal(cc_schedule_tz_offset(&tz, 2145916800LL + 200 * 86400), 3600);
    cc_schedule_tz_deinit(&tz);
    assert_int_equal(cc_schedule_tz_parse((const uint8_t *)"nope", 4, &tz, &err), CC_EINVAL);
    assert_int_equal(cc_schedule_tz_parse(junk, sizeof(junk), &tz, &err), CC_EINVAL);
    assert_int_equal(tz.n, 0);
    cc_schedule_tz_deinit(&tz);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedule_celery_table),
        cmocka_unit_test(test_schedule_parse_table),
        cmocka_unit_test(test_schedule_crontab_errors),
        cmocka_unit_test(test_tz_parse_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
