/* Fuzz target for proto/schedule.c's TZif parser (cc_schedule_tz_parse).
 *
 * Input: the bytes of a zoneinfo file. Properties checked: a failure is CC_EINVAL with a
 * message (or CC_ENOMEM) and leaves the zone zeroed; a parsed zone has strictly ascending
 * transitions and offsets within a day; cc_schedule_tz_offset() agrees with a linear scan; a
 * crontab's next run can be computed in it; _deinit twice is harmless.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schedule.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int32_t fuzz_tzif_scan(const struct cc_tz *tz, int64_t t)
{
    int32_t o = tz->off_first;

    for (size_t i = 0; i < tz->n && tz->trans[i] <= t; i++)
        o = tz->off[i];
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct cc_tz zero;
    struct cc_tz tz;
    struct cc_err err = {0};
    int rc = cc_schedule_tz_parse(data, size, &tz, &err);

    if (rc != CC_OK) {
        if ((rc != CC_EINVAL && rc != CC_ENOMEM) || err.msg[0] == '\0' ||
            memcmp(&tz, &zero, sizeof(tz)) != 0)
            abort();
        return 0;
    }
    if (tz.off_first < -86400 || tz.off_first > 86400)
        abort();
    for (size_t i = 0; i < tz.n; i++) {
        if ((i > 0 && tz.trans[i] <= tz.trans[i - 1]) || tz.off[i] < -86400 || tz.off[i] > 86400)
            abort();
        for (int64_t d = -1; d <= 1; d++)
            if (cc_schedule_tz_offset(&tz, tz.trans[i] + d) != fuzz_tzif_scan(&tz, tz.trans[i] + d))
                abort();
    }
    {
        struct cc_schedule s;
        int64_t next;

        if (cc_schedule_crontab(&s, "30", "2", NULL, "31", NULL, &err) != CC_OK)
            abort();
        if (cc_schedule_next(&s, 1774744200000000LL, 1774744260000000LL, &tz, &next, &err) != CC_OK)
            abort();
    }
    cc_schedule_tz_deinit(&tz);
    cc_schedule_tz_deinit(&tz);
    return 0;
}
