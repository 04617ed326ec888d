/* Celery 5.2 next-run computation for interval and crontab schedules, and a TZif zone parser.
 * Pure: no I/O, no globals, no getenv/TZ. The caller reads the zone file (src/) and passes its
 * bytes to cc_schedule_tz_parse(). Times are microseconds since the Unix epoch (UTC).
 *
 * Semantics follow celery.schedules (schedule, crontab, crontab_parser) with pytz as Celery 5.2
 * uses it; see the comments in schedule.c for DST behaviour. */
#ifndef CELERYC_PROTO_SCHEDULE_H
#define CELERYC_PROTO_SCHEDULE_H

#include <stddef.h>
#include <stdint.h>

#include "celeryc/status.h"

/* A time zone: sorted UTC transition times and the UTC offset in force from each one. */
struct cc_tz {
    size_t n;          /* number of transitions */
    int64_t *trans;    /* n transition instants, seconds since the epoch, ascending */
    int32_t *off;      /* n offsets (seconds east of UTC) in force from trans[i] */
    int32_t off_first; /* offset before the first transition (or always, when n == 0) */
};

/* Parse TZif bytes (v1, v2 or v3; the 64-bit section is used when present). Times after the last
 * transition keep the last offset, as pytz (Celery 5.2's zone library) does; the POSIX footer is
 * not used. Returns CC_OK, CC_EINVAL (malformed: err says why) or CC_ENOMEM. On failure *tz is
 * zeroed (safe to _deinit). */
int cc_schedule_tz_parse(const uint8_t *data, size_t size, struct cc_tz *tz,
                         struct cc_err *err) CC_MUST_USE;
/* The fixed UTC zone (no allocation). */
void cc_schedule_tz_utc(struct cc_tz *tz);
void cc_schedule_tz_deinit(struct cc_tz *tz);
/* Offset from UTC, in seconds, at instant `t_s` (seconds since the epoch). NULL is UTC. */
int32_t cc_schedule_tz_offset(const struct cc_tz *tz, int64_t t_s);

enum cc_schedule_kind { CC_SCHEDULE_INTERVAL = 1, CC_SCHEDULE_CRONTAB = 2 };

struct cc_schedule {
    enum cc_schedule_kind kind;
    int64_t every_us; /* interval: run_every */
    uint64_t minute;  /* crontab bitsets: bit i set when value i is allowed */
    uint32_t hour;    /* bits 0..23 */
    uint8_t dow;      /* bits 0..6, Sunday = 0 */
    uint32_t dom;     /* bits 1..31 */
    uint16_t moy;     /* bits 1..12 */
    int dom_star;     /* day_of_month spec was exactly "*" (Celery's _orig_day_of_month == '*') */
    int moy_star;     /* month_of_year spec was exactly "*" */
};

/* An interval schedule (celery.schedules.schedule, relative=False). every_us must be > 0. */
int cc_schedule_interval(struct cc_schedule *s, int64_t every_us, struct cc_err *err) CC_MUST_USE;

/* A crontab schedule from Celery's five fields (NULL means "*"). Returns CC_OK or CC_EINVAL with
 * the field and Celery's message in err (e.g. "hour: Invalid end range: 24 > 23."). */
int cc_schedule_crontab(struct cc_schedule *s, const char *minute, const char *hour,
                        const char *day_of_week, const char *day_of_month,
                        const char *month_of_year, struct cc_err *err) CC_MUST_USE;

/* Parse one crontab field into a bitset of values in [min_, min_+max_-1] as
 * celery.schedules.crontab_parser(max_, min_).parse() does. */
int cc_schedule_cron_parse_field(const char *spec, int max_, int min_, uint64_t *bits,
                                 struct cc_err *err) CC_MUST_USE;

/* The instant at which Celery's remaining_estimate(last_run) reaches zero when evaluated at
 * `now_us`, i.e. *next_us = now_us + remaining_estimate (may be <= now_us: due). Returns CC_OK, or
 * CC_EINVAL when the crontab can never fire (Celery's "unable to rollover" RuntimeError).
 * tz NULL means UTC. */
int cc_schedule_next(const struct cc_schedule *s, int64_t last_run_us, int64_t now_us,
                     const struct cc_tz *tz, int64_t *next_us, struct cc_err *err) CC_MUST_USE;

/* Celery's is_due(last_run) at `now_us`: *due and *next_check_us (microseconds until the next
 * check, Celery's schedstate.next * 1e6). */
int cc_schedule_is_due(const struct cc_schedule *s, int64_t last_run_us, int64_t now_us,
                       const struct cc_tz *tz, int *due, int64_t *next_check_us,
                       struct cc_err *err) CC_MUST_USE;

#endif
