/* ISO-8601 timestamps as Celery writes and reads them (proto/isotime.h).
 *
 * Parsing accepts what Python clients put in the `eta` / `expires` headers (celery-wire.md
 * §2.2): datetime.isoformat() output with or without an offset, "Z" (kombu 5.2's JSON
 * encoder), a space instead of "T", and 1 to 9 fraction digits (truncated to microseconds).
 * A naive time is UTC, as Celery assumes with enable_utc. Formatting reproduces
 * datetime.isoformat() for result `date_done` (§3.2): the fraction is omitted when the
 * microseconds are zero. Pure: civil-date arithmetic only (Howard Hinnant's days_from_civil),
 * no libc time zone state, so it is safe in any thread and after fork.
 *
 * Spans (cc_isotime_span_us): the one conversion of a number of seconds from the wire to
 * microseconds. The comparisons come first and are written so that NaN fails every one of
 * them; only a value known to be within +-CC_ISOTIME_SPAN_MAX_S is multiplied and converted.
 */
#include <math.h>
#include <stdio.h>

#include "isotime.h"

#define US_PER_SEC 1000000LL
#define US_PER_DAY (86400LL * US_PER_SEC)

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t era;
    unsigned yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    int64_t era;
    unsigned doe, yoe, doy, mp;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = (unsigned)(z - era * 146097);
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

/* Exactly `n` decimal digits at *s; advances. -1 if any is not a digit. */
static int digits(const char **s, int n)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        char c = (*s)[i];

        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *s += n;
    return v;
}

static int is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int cc_isotime_parse(const char *s, int64_t *us_out)
{
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int year, mon, day, hh, mm, ss;
    int64_t frac_us = 0;
    int64_t offset_s = 0;

    if (s == NULL || us_out == NULL)
        return CC_EBADTIME;
    if ((year = digits(&s, 4)) < 1 || *s++ != '-' || (mon = digits(&s, 2)) < 1 || mon > 12 ||
        *s++ != '-' || (day = digits(&s, 2)) < 1 ||
        day > mdays[mon - 1] + (mon == 2 && is_leap(year)))
        return CC_EBADTIME;
    if (*s != 'T' && *s != ' ')
        return CC_EBADTIME;
    s++;
    if ((hh = digits(&s, 2)) < 0 || hh > 23 || *s++ != ':' || (mm = digits(&s, 2)) < 0 || mm > 59 ||
        *s++ != ':' || (ss = digits(&s, 2)) < 0 || ss > 59)
        return CC_EBADTIME;
    if (*s == '.') {
        int n = 0;
        int64_t scale = 100000;

        s++;
        while (*s >= '0' && *s <= '9') {
            if (++n > 9)
                return CC_EBADTIME;
            frac_us += (*s - '0') * scale;
            scale /= 10;
            s++;
        }
        if (n == 0)
            return CC_EBADTIME;
    }
    if (*s == 'Z') {
        s++;
    } else if (*s == '+' || *s == '-') {
        int sign = *s++ == '-' ? -1 : 1;
        int oh, om;

        if ((oh = digits(&s, 2)) < 0 || oh > 23 || *s++ != ':' || (om = digits(&s, 2)) < 0 ||
            om > 59)
            return CC_EBADTIME;
        offset_s = sign * (oh * 3600 + om * 60);
    }
    if (*s != '\0')
        return CC_EBADTIME;
    *us_out = days_from_civil(year, (unsigned)mon, (unsigned)day) * US_PER_DAY +
              ((int64_t)hh * 3600 + mm * 60 + ss - offset_s) * US_PER_SEC + frac_us;
    return CC_OK;
}

char *cc_isotime_format(int64_t us, int with_offset, char *buf, size_t size)
{
    int64_t days = us / US_PER_DAY;
    int64_t rem = us % US_PER_DAY;
    int64_t y;
    unsigned m, d;
    int secs, micro;

    if (rem < 0) {
        rem += US_PER_DAY;
        days--;
    }
    civil_from_days(days, &y, &m, &d);
    secs = (int)(rem / US_PER_SEC);
    micro = (int)(rem % US_PER_SEC);
    if (micro != 0)
        snprintf(buf, size, "%04lld-%02u-%02uT%02d:%02d:%02d.%06d%s", (long long)y, m, d,
                 secs / 3600, secs / 60 % 60, secs % 60, micro, with_offset ? "+00:00" : "");
    else
        snprintf(buf, size, "%04lld-%02u-%02uT%02d:%02d:%02d%s", (long long)y, m, d, secs / 3600,
                 secs / 60 % 60, secs % 60, with_offset ? "+00:00" : "");
    return buf;
}

enum cc_isotime_span cc_isotime_span_us(double s, int64_t *us)
{
    if (isnan(s)) {
        *us = 0;
        return CC_ISOTIME_SPAN_NAN;
    }
    if (s > CC_ISOTIME_SPAN_MAX_S) {
        *us = CC_ISOTIME_SPAN_MAX_US;
        return CC_ISOTIME_SPAN_HUGE;
    }
    if (s < -CC_ISOTIME_SPAN_MAX_S) {
        *us = -CC_ISOTIME_SPAN_MAX_US;
        return CC_ISOTIME_SPAN_NEGATIVE;
    }
    /* |s * 1e6| <= 1e17 < 2^63: llround is exact-range here. */
    *us = (int64_t)llround(s * 1e6);
    return s < 0 ? CC_ISOTIME_SPAN_NEGATIVE : CC_ISOTIME_SPAN_OK;
}

int64_t cc_isotime_add_us(int64_t now_us, int64_t span_us)
{
    if (span_us > 0 && now_us > INT64_MAX - span_us)
        return INT64_MAX;
    if (span_us < 0 && now_us < INT64_MIN - span_us)
        return INT64_MIN;
    return now_us + span_us;
}
