/* Fuzz target for proto/schedule.c's crontab parser and next-run computation.
 *
 * Input: up to five lines (minute, hour, day_of_week, day_of_month, month_of_year; a missing
 * line is "*"). Properties checked: a failure is CC_EINVAL with a message and zeroed bits; a
 * parsed schedule has every bitset non-empty and inside its field's range; the next run and
 * is_due for a few (last_run, now) pairs, in UTC and in a fixed two-transition zone, either
 * succeed with a non-negative next check or fail with CC_EINVAL ("unable to rollover").
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schedule.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_crontab_run(const struct cc_schedule *s, const struct cc_tz *tz)
{
    static const int64_t pts[] = {0, 951782400000000LL, 1774744200000000LL, 1798761599999999LL,
                                  -86400000000LL};

    for (size_t i = 0; i < sizeof(pts) / sizeof(pts[0]); i++) {
        struct cc_err err = {0};
        int64_t next = 0, chk = -1, now = pts[i] + 61000000;
        int due = -1;
        int rc = cc_schedule_next(s, pts[i], now, tz, &next, &err);

        if (rc != CC_OK) {
            if (rc != CC_EINVAL || err.msg[0] == '\0')
                abort();
            continue;
        }
        rc = cc_schedule_is_due(s, pts[i], now, tz, &due, &chk, &err);
        if (rc != CC_OK || (due != 0 && due != 1) || chk < 0)
            abort();
        if (!due && chk != next - now)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int64_t trans[2] = {1774746000LL, 1792890000LL}; /* Paris 2026 DST */
    static int32_t off[2] = {7200, 3600};
    const struct cc_tz paris = {2, trans, off, 3600};
    char *buf = malloc(size + 1), *f[5] = {NULL, NULL, NULL, NULL, NULL}, *p;
    struct cc_schedule s;
    struct cc_err err = {0};
    int n = 0, rc;

    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    for (p = buf; n < 5;) {
        char *nl = strchr(p, '\n');

        f[n++] = p;
        if (nl == NULL)
            break;
        *nl = '\0';
        p = nl + 1;
    }
    rc = cc_schedule_crontab(&s, f[0], f[1], f[2], f[3], f[4], &err);
    if (rc != CC_OK) {
        if (rc != CC_EINVAL || err.msg[0] == '\0')
            abort();
    } else {
        if (s.kind != CC_SCHEDULE_CRONTAB || s.minute == 0 || s.minute >> 60 || s.hour == 0 ||
            s.hour >> 24 || s.dow == 0 || s.dow >> 7 || s.dom == 0 || (s.dom & 1) || s.moy == 0 ||
            (s.moy & 1) || s.moy >> 13)
            abort();
        fuzz_crontab_run(&s, NULL);
        fuzz_crontab_run(&s, &paris);
    }
    for (int i = 0; i < n; i++) {
        uint64_t bits = 1;

        rc = cc_schedule_cron_parse_field(f[i], 31, 1, &bits, &err);
        if ((rc == CC_OK) != (bits != 0) || (rc != CC_OK && rc != CC_EINVAL) || (bits & 1) ||
            bits >> 32)
            abort();
    }
    free(buf);
    return 0;
}
