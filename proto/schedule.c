/* Celery 5.2 schedules (celery/schedules.py, celery/utils/time.py) and a TZif parser. Pure.
 *
 * How Celery 5.2 (with pytz) computes a crontab's remaining time, mirrored here:
 *   - last_run and now are taken as local wall-clock fields in the app timezone, each with the
 *     UTC offset in force at its own instant;
 *   - remaining_delta() builds a target wall-clock time from last_run's fields (ffwd: replace
 *     fields, add days), never normalising it through the zone;
 *   - remaining() then, because start and now are in the same zone, gives the target now's
 *     offset when the two offsets differ (the "DST started/ended" branch) and subtracts now.
 * So the next run instant is  target_wall - offset(now). Consequences, kept on purpose (they are
 * Celery's, checked against it in tests/unit/test_schedule.c):
 *   - a target wall time inside a DST gap (02:30 on Paris' spring-forward night) is not skipped:
 *     it is read with the offset in force at `now`; while now is before the change that is
 *     01:30Z, and once now passes the change (01:00Z) it reads as 00:30Z, already past, so beat
 *     runs it at its first check after the change (03:00 CEST);
 *   - a wall time repeated by a fall-back overlap is taken with now's offset: a job at 02:30
 *     runs at the first 02:30 when computed before the change, and is not run twice because the
 *     next computation starts from that last run;
 *   - an interval schedule across a DST change moves by the offset difference (remaining()
 *     re-labels last_run with now's offset), as Celery does when the app timezone is not UTC.
 * Past the last transition of the zone file, the last offset holds (pytz ignores the TZif
 * footer); the system files carry transitions up to 2037. */
#include "schedule.h"

#include <stdlib.h>
#include <string.h>

/* ---- calendar ---------------------------------------------------------------------------- */

static int64_t sch_days_from_civil(int64_t y, int m, int d)
{
    int64_t era;
    unsigned yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (unsigned)((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1);
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

struct sch_tm {
    int64_t y;
    int mo, d, h, mi, s, us;
    int dow; /* Sunday = 0 (Celery's isoweekday() % 7) */
};

static int64_t sch_floordiv(int64_t a, int64_t b)
{
    int64_t q = a / b;

    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static void sch_fields(int64_t wall_us, struct sch_tm *t)
{
    int64_t days = sch_floordiv(wall_us, 86400000000LL);
    int64_t rem = wall_us - days * 86400000000LL;
    int64_t z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;

    t->d = (int)(doy - (153 * mp + 2) / 5 + 1);
    t->mo = (int)(mp < 10 ? mp + 3 : mp - 9);
    t->y = (int64_t)yoe + era * 400 + (t->mo <= 2);
    t->h = (int)(rem / 3600000000LL);
    t->mi = (int)(rem / 60000000LL % 60);
    t->s = (int)(rem / 1000000 % 60);
    t->us = (int)(rem % 1000000);
    t->dow = (int)(((days % 7) + 7 + 4) % 7); /* 1970-01-01 was a Thursday */
}

static int64_t sch_wall(int64_t y, int mo, int d, int h, int mi)
{
    return (sch_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60) * 1000000LL;
}

static int sch_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int sch_mdays(int64_t y, int m)
{
    static const int md[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    return m == 2 && sch_leap(y) ? 29 : md[m - 1];
}

/* ---- time zones -------------------------------------------------------------------------- */

void cc_schedule_tz_utc(struct cc_tz *tz)
{
    memset(tz, 0, sizeof(*tz));
}

void cc_schedule_tz_deinit(struct cc_tz *tz)
{
    if (tz == NULL)
        return;
    free(tz->trans);
    free(tz->off);
    memset(tz, 0, sizeof(*tz));
}

int32_t cc_schedule_tz_offset(const struct cc_tz *tz, int64_t t_s)
{
    size_t lo = 0, hi;

    if (tz == NULL)
        return 0;
    hi = tz->n;
    if (tz->n == 0 || t_s < tz->trans[0])
        return tz->off_first;
    while (hi - lo > 1) { /* last i with trans[i] <= t_s */
        size_t mid = lo + (hi - lo) / 2;

        if (tz->trans[mid] <= t_s)
            lo = mid;
        else
            hi = mid;
    }
    return tz->off[lo];
}

static uint32_t sch_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t sch_be64(const uint8_t *p)
{
    return (int64_t)((uint64_t)sch_be32(p) << 32 | sch_be32(p + 4));
}

struct sch_hdr {
    uint32_t isut, isstd, leap, time, type, chr;
};

static int sch_hdr(const uint8_t *p, size_t avail, struct sch_hdr *h, int *version)
{
    if (avail < 44 || memcmp(p, "TZif", 4) != 0)
        return -1;
    *version = p[4] == 0 ? 1 : p[4] - '0';
    h->isut = sch_be32(p + 20);
    h->isstd = sch_be32(p + 24);
    h->leap = sch_be32(p + 28);
    h->time = sch_be32(p + 32);
    h->type = sch_be32(p + 36);
    h->chr = sch_be32(p + 40);
    return 0;
}

/* Size of a data block whose times are `tsz` bytes, or 0 when the counts are absurd. */
static uint64_t sch_block(const struct sch_hdr *h, unsigned tsz)
{
    if (h->time > 1000000 || h->type > 256 || h->chr > 1000000 || h->leap > 1000000 ||
        h->isut > 256 || h->isstd > 256)
        return 0;
    return (uint64_t)h->time * (tsz + 1) + (uint64_t)h->type * 6 + h->chr +
           (uint64_t)h->leap * (tsz + 4) + h->isstd + h->isut;
}

int cc_schedule_tz_parse(const uint8_t *data, size_t size, struct cc_tz *tz, struct cc_err *err)
{
    struct sch_hdr h;
    int version;
    unsigned tsz = 4;
    const uint8_t *p = data, *types, *idx;
    uint64_t blk;
    size_t first_std = 0;

    memset(tz, 0, sizeof(*tz));
    if (sch_hdr(p, size, &h, &version) != 0)
        return cc_err_set(err, CC_EINVAL, "not a TZif file");
    blk = sch_block(&h, 4);
    if (blk == 0 || blk > size - 44)
        return cc_err_set(err, CC_EINVAL, "TZif v1 block truncated or invalid");
    if (version >= 2) {
        size_t at = 44 + (size_t)blk;

        if (sch_hdr(p + at, size - at, &h, &version) != 0)
            return cc_err_set(err, CC_EINVAL, "TZif v2 header missing");
        p += at;
        size -= at;
        tsz = 8;
        blk = sch_block(&h, 8);
        if (blk == 0 || blk > size - 44)
            return cc_err_set(err, CC_EINVAL, "TZif v2 block truncated or invalid");
    }
    if (h.type == 0)
        return cc_err_set(err, CC_EINVAL, "TZif has no local time types");
    p += 44;
    idx = p + (size_t)h.time * tsz;
    types = idx + h.time;
    /* pytz: before the first transition, the first non-DST type (else type 0). */
    for (size_t i = 0; i < h.type; i++) {
        if (types[i * 6 + 4] == 0) {
            first_std = i;
            break;
        }
    }
    tz->off_first = (int32_t)sch_be32(types + first_std * 6);
    if (h.time > 0) {
        tz->trans = malloc(h.time * sizeof(*tz->trans));
        tz->off = malloc(h.time * sizeof(*tz->off));
        if (tz->trans == NULL || tz->off == NULL) {
            cc_schedule_tz_deinit(tz);
            return cc_err_set(err, CC_ENOMEM, "out of memory");
        }
    }
    for (size_t i = 0; i < h.time; i++) {
        int64_t t = tsz == 8 ? sch_be64(p + i * 8) : (int32_t)sch_be32(p + i * 4);

        if (idx[i] >= h.type || (i > 0 && t <= tz->trans[i - 1])) {
            cc_schedule_tz_deinit(tz);
            return cc_err_set(err, CC_EINVAL, "TZif transition %zu invalid", i);
        }
        tz->trans[i] = t;
        tz->off[i] = (int32_t)sch_be32(types + (size_t)idx[i] * 6);
        if (tz->off[i] < -86400 || tz->off[i] > 86400) {
            cc_schedule_tz_deinit(tz);
            return cc_err_set(err, CC_EINVAL, "TZif offset out of range");
        }
    }
    if (tz->off_first < -86400 || tz->off_first > 86400) {
        cc_schedule_tz_deinit(tz);
        return cc_err_set(err, CC_EINVAL, "TZif offset out of range");
    }
    tz->n = h.time;
    return CC_OK;
}

/* ---- crontab parser (celery.schedules.crontab_parser) ------------------------------------ */

static int sch_word(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           c >= 0x80;
}

static size_t sch_wordlen(const char *s, size_t n)
{
    size_t i = 0;

    while (i < n && sch_word((unsigned char)s[i]))
        i++;
    return i;
}

/* Python int(): optional blanks, sign, digits with single underscores between them. */
static int sch_pyint(const char *s, size_t n, int64_t *out)
{
    size_t i = 0, e = n;
    int neg = 0, digits = 0;
    int64_t v = 0;

    while (i < e && (s[i] == ' ' || (s[i] >= '\t' && s[i] <= '\r')))
        i++;
    while (e > i && (s[e - 1] == ' ' || (s[e - 1] >= '\t' && s[e - 1] <= '\r')))
        e--;
    if (i < e && (s[i] == '+' || s[i] == '-'))
        neg = s[i++] == '-';
    for (; i < e; i++) {
        if (s[i] == '_' && digits > 0 && i + 1 < e && s[i + 1] >= '0' && s[i + 1] <= '9' &&
            s[i - 1] != '_')
            continue;
        if (s[i] < '0' || s[i] > '9')
            return -1;
        digits++;
        if (v < 1000000000LL)
            v = v * 10 + (s[i] - '0');
    }
    if (digits == 0)
        return -1;
    *out = neg ? -v : v;
    return 0;
}

static int sch_weekday(const char *s, size_t n)
{
    static const char *const names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};
    char ab[4] = {0};

    for (size_t i = 0; i < 3 && i < n; i++)
        ab[i] = (char)((s[i] >= 'A' && s[i] <= 'Z') ? s[i] + 32 : s[i]);
    for (int i = 0; i < 7; i++)
        if (strcmp(ab, names[i]) == 0)
            return i;
    return -1;
}

static int sch_number(const char *s, size_t n, int max_, int min_, int *out, struct cc_err *err)
{
    int64_t i;

    if (n > 0 && s[0] == '-')
        return cc_err_set(err, CC_EINVAL, "negative numbers not supported");
    if (sch_pyint(s, n, &i) != 0) {
        int w = sch_weekday(s, n);

        if (w < 0)
            return cc_err_set(err, CC_EINVAL, "Invalid weekday literal '%.*s'.",
                              (int)(n > 40 ? 40 : n), s);
        i = w;
    }
    if (i > min_ + max_ - 1)
        return cc_err_set(err, CC_EINVAL, "Invalid end range: %lld > %d.", (long long)i,
                          min_ + max_ - 1);
    if (i < min_)
        return cc_err_set(err, CC_EINVAL, "Invalid beginning range: %lld < %d.", (long long)i,
                          min_);
    *out = (int)i;
    return CC_OK;
}

/* expand_range(fr, to)[::step] into bits. */
static void sch_range(int fr, int to, int step, int max_, int min_, uint64_t *bits)
{
    int k = 0;

    if (to < fr) {
        for (int v = fr; v < min_ + max_; v++, k++)
            if (k % step == 0)
                *bits |= 1ULL << v;
        fr = min_;
    }
    for (int v = fr; v <= to; v++, k++)
        if (k % step == 0)
            *bits |= 1ULL << v;
}

static int sch_step(const char *s, size_t n, int *step, struct cc_err *err)
{
    int64_t v;

    if (n == 0)
        return cc_err_set(err, CC_EINVAL, "empty filter");
    if (sch_pyint(s, n, &v) != 0)
        return cc_err_set(err, CC_EINVAL, "invalid literal for int() with base 10: '%.*s'",
                          (int)(n > 40 ? 40 : n), s);
    if (v == 0)
        return cc_err_set(err, CC_EINVAL, "slice step cannot be zero");
    *step = v > 1000 ? 1000 : (int)v;
    return CC_OK;
}

static int sch_part(const char *s, size_t n, int max_, int min_, uint64_t *bits, struct cc_err *err)
{
    size_t w1 = sch_wordlen(s, n);
    int fr, to, step = 1, rc;

    if (w1 > 0 && w1 < n && s[w1] == '-') {
        const char *b = s + w1 + 1;
        size_t w2 = sch_wordlen(b, n - w1 - 1);

        if (w2 > 0) { /* '(\w+?)-(\w+)' with an optional '/(\w+)?' */
            if ((rc = sch_number(s, w1, max_, min_, &fr, err)) != CC_OK)
                return rc;
            if ((rc = sch_number(b, w2, max_, min_, &to, err)) != CC_OK)
                return rc;
            if (w1 + 1 + w2 < n && b[w2] == '/') {
                const char *c = b + w2 + 1;

                if ((rc = sch_step(c, sch_wordlen(c, (size_t)(s + n - c)), &step, err)) != CC_OK)
                    return rc;
            }
            sch_range(fr, to, step, max_, min_, bits);
            return CC_OK;
        }
    }
    if (n >= 2 && s[0] == '*' && s[1] == '/') {
        if ((rc = sch_step(s + 2, sch_wordlen(s + 2, n - 2), &step, err)) != CC_OK)
            return rc;
        sch_range(min_, min_ + max_ - 1, step, max_, min_, bits);
        return CC_OK;
    }
    if (n == 1 && s[0] == '*') {
        sch_range(min_, min_ + max_ - 1, 1, max_, min_, bits);
        return CC_OK;
    }
    if ((rc = sch_number(s, n, max_, min_, &fr, err)) != CC_OK)
        return rc;
    *bits |= 1ULL << fr;
    return CC_OK;
}

int cc_schedule_cron_parse_field(const char *spec, int max_, int min_, uint64_t *bits,
                                 struct cc_err *err)
{
    const char *p = spec;

    *bits = 0;
    for (;;) {
        const char *c = strchr(p, ',');
        size_t n = c ? (size_t)(c - p) : strlen(p);
        int rc;

        if (n == 0) {
            *bits = 0;
            return cc_err_set(err, CC_EINVAL, "empty part");
        }
        if ((rc = sch_part(p, n, max_, min_, bits, err)) != CC_OK) {
            *bits = 0;
            return rc;
        }
        if (c == NULL)
            return CC_OK;
        p = c + 1;
    }
}

int cc_schedule_interval(struct cc_schedule *s, int64_t every_us, struct cc_err *err)
{
    memset(s, 0, sizeof(*s));
    if (every_us <= 0)
        return cc_err_set(err, CC_EINVAL, "interval must be positive");
    s->kind = CC_SCHEDULE_INTERVAL;
    s->every_us = every_us;
    return CC_OK;
}

int cc_schedule_crontab(struct cc_schedule *s, const char *minute, const char *hour,
                        const char *day_of_week, const char *day_of_month,
                        const char *month_of_year, struct cc_err *err)
{
    static const struct {
        const char *name;
        int max_, min_;
    } f[5] = {{"minute", 60, 0},
              {"hour", 24, 0},
              {"day_of_week", 7, 0},
              {"day_of_month", 31, 1},
              {"month_of_year", 12, 1}};
    const char *spec[5] = {minute, hour, day_of_week, day_of_month, month_of_year};
    uint64_t bits[5];

    memset(s, 0, sizeof(*s));
    for (int i = 0; i < 5; i++) {
        const char *v = spec[i] ? spec[i] : "*";

        if (cc_schedule_cron_parse_field(v, f[i].max_, f[i].min_, &bits[i], err) != CC_OK) {
            char msg[sizeof(err->msg)];

            memcpy(msg, err->msg, sizeof(msg));
            return cc_err_set(err, CC_EINVAL, "crontab %s '%.40s': %s", f[i].name, v, msg);
        }
    }
    s->kind = CC_SCHEDULE_CRONTAB;
    s->minute = bits[0];
    s->hour = (uint32_t)bits[1];
    s->dow = (uint8_t)bits[2];
    s->dom = (uint32_t)bits[3];
    s->moy = (uint16_t)bits[4];
    s->dom_star = spec[3] == NULL || strcmp(spec[3], "*") == 0;
    s->moy_star = spec[4] == NULL || strcmp(spec[4], "*") == 0;
    return CC_OK;
}

/* ---- next run ---------------------------------------------------------------------------- */

static int sch_has(uint64_t bits, int v)
{
    return v >= 0 && v < 64 && (bits >> v & 1);
}

static int sch_max(uint64_t bits)
{
    return 63 - __builtin_clzll(bits);
}

static int sch_min_above(uint64_t bits, int v) /* smallest > v, or -1 */
{
    uint64_t above = v >= 63 ? 0 : bits & ~((2ULL << v) - 1);

    return above ? __builtin_ctzll(above) : -1;
}

/* crontab._delta_to_next: the date of the next run, or -1 ("unable to rollover"). */
static int sch_delta_to_next(const struct cc_schedule *s, const struct sch_tm *L,
                             int64_t last_run_us, int64_t *oy, int *omo, int *od)
{
    int doms[31], moys[12], ndom = 0, nmoy = 0, di, mi;
    int64_t year = L->y;

    for (int v = 1; v <= 31; v++)
        if (sch_has(s->dom, v))
            doms[ndom++] = v;
    for (int v = 1; v <= 12; v++)
        if (sch_has(s->moy, v))
            moys[nmoy++] = v;
    if (sch_has(s->moy, L->mo)) {
        di = 0; /* bisect_right(doms, day) */
        while (di < ndom && doms[di] <= L->d)
            di++;
        mi = 0; /* bisect_left(moys, month) */
        while (mi < nmoy && moys[mi] < L->mo)
            mi++;
    } else {
        di = 0;
        mi = 0;
        while (mi < nmoy && moys[mi] <= L->mo)
            mi++;
        if (mi == nmoy)
            mi = 0;
    }
    for (int outer = 0; outer < 100000; outer++) {
        int ok = 0;

        for (int k = 0; k < 2000; k++) { /* roll_over() */
            int flag = di == ndom || year > 9999 || doms[di] > sch_mdays(year, moys[mi]) ||
                       sch_days_from_civil(year, moys[mi], doms[di]) * 86400000000LL < last_run_us;

            if (!flag) {
                ok = 1;
                break;
            }
            di = 0;
            if (++mi == nmoy) {
                mi = 0;
                year++;
            }
        }
        if (!ok)
            return -1;
        {
            int64_t days = sch_days_from_civil(year, moys[mi], doms[di]);
            int dow = (int)(((days % 7) + 7 + 4) % 7);

            if (sch_has(s->dow, dow)) {
                *oy = year;
                *omo = moys[mi];
                *od = doms[di];
                return 0;
            }
        }
        di++;
    }
    return -1;
}

static int sch_cron_next(const struct cc_schedule *s, int64_t last_us, int64_t now_us,
                         const struct cc_tz *tz, int64_t *next_us, struct cc_err *err)
{
    int32_t off_last = cc_schedule_tz_offset(tz, sch_floordiv(last_us, 1000000));
    int32_t off_now = cc_schedule_tz_offset(tz, sch_floordiv(now_us, 1000000));
    struct sch_tm L, N;
    int64_t target;
    int this_date, this_hour;

    sch_fields(last_us + off_last * 1000000LL, &L);
    sch_fields(now_us + off_now * 1000000LL, &N);
    this_date = sch_has(s->moy, L.mo) && sch_has(s->dom, L.d) && sch_has(s->dow, L.dow);
    this_hour = this_date && L.d == N.d && L.mo == N.mo && L.y == N.y && sch_has(s->hour, L.h) &&
                L.mi < sch_max(s->minute);
    if (this_hour) {
        target = sch_wall(L.y, L.mo, L.d, L.h, sch_min_above(s->minute, L.mi));
    } else {
        int next_minute = __builtin_ctzll(s->minute);

        if (this_date && L.h < sch_max(s->hour)) {
            target = sch_wall(L.y, L.mo, L.d, sch_min_above(s->hour, L.h), next_minute);
        } else {
            int next_hour = __builtin_ctz(s->hour);

            if (s->dom_star && s->moy_star) {
                int next_day = sch_min_above(s->dow, L.dow);
                int add_week, wd, cur_wd;

                if (next_day < 0)
                    next_day = __builtin_ctz(s->dow);
                add_week = next_day == L.dow;
                wd = (next_day + 6) % 7; /* Python weekday(): Monday = 0 */
                cur_wd = (L.dow + 6) % 7;
                target = sch_wall(L.y, L.mo, L.d, next_hour, next_minute) +
                         (int64_t)((7 - cur_wd + wd) % 7 + 7 * add_week) * 86400000000LL;
            } else {
                int64_t y;
                int mo, d;

                if (sch_delta_to_next(s, &L, last_us, &y, &mo, &d) != 0)
                    return cc_err_set(err, CC_EINVAL,
                                      "unable to rollover, time specification is probably invalid");
                target = sch_wall(y, mo, d, next_hour, next_minute);
            }
        }
    }
    *next_us = target - off_now * 1000000LL;
    return CC_OK;
}

int cc_schedule_next(const struct cc_schedule *s, int64_t last_run_us, int64_t now_us,
                     const struct cc_tz *tz, int64_t *next_us, struct cc_err *err)
{
    if (s->kind == CC_SCHEDULE_INTERVAL) {
        int32_t off_last = cc_schedule_tz_offset(tz, sch_floordiv(last_run_us, 1000000));
        int32_t off_now = cc_schedule_tz_offset(tz, sch_floordiv(now_us, 1000000));

        /* remaining(): start re-labelled with now's offset when the offsets differ. */
        *next_us = last_run_us + (int64_t)(off_last - off_now) * 1000000LL + s->every_us;
        return CC_OK;
    }
    if (s->kind == CC_SCHEDULE_CRONTAB)
        return sch_cron_next(s, last_run_us, now_us, tz, next_us, err);
    return cc_err_set(err, CC_EINVAL, "schedule not initialised");
}

int cc_schedule_is_due(const struct cc_schedule *s, int64_t last_run_us, int64_t now_us,
                       const struct cc_tz *tz, int *due, int64_t *next_check_us, struct cc_err *err)
{
    int64_t next;
    int rc = cc_schedule_next(s, last_run_us, now_us, tz, &next, err);

    if (rc != CC_OK)
        return rc;
    if (next > now_us) {
        *due = 0;
        *next_check_us = next - now_us;
        return CC_OK;
    }
    *due = 1;
    if (s->kind == CC_SCHEDULE_INTERVAL) {
        *next_check_us = s->every_us;
        return CC_OK;
    }
    rc = cc_schedule_next(s, now_us, now_us, tz, &next, err);
    if (rc != CC_OK)
        return rc;
    *next_check_us = next > now_us ? next - now_us : 0;
    return CC_OK;
}
