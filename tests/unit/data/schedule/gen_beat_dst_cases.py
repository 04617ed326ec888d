#!/usr/bin/python3
"""Slot sequences of crontab entries across DST changes, as Celery 5.2's beat dispatches them:
the oracle of test_beat_sched's `test_beat_sched_dst_slots_as_celery` (the beat's own
stepping, src/beat/beat_sched.c, driven the same way).

Run at test time: ctest's `beat_dst_cases` fixture (CMakeLists.txt) runs
    /usr/bin/python3 tests/unit/data/schedule/gen_beat_dst_cases.py --out BUILD/.../beat_dst.json
before test_beat_sched. Needs the system Celery 5.2 + pytz (hence /usr/bin/python3); without
them this fails (ImportError), and so does the test.

Each case: a crontab spec in a zone, a window around one of the zone's UTC-offset changes
(2001-2036), and the slots Celery's beat dispatches in it. The beat is simulated with a fake
clock (crontab(nowfun=...)): the entry is new at `start` (Celery's ScheduleEntry.last_run_at
defaults to app.now()); at every check the beat calls is_due(last_run_at); when due it
dispatches at that instant and last_run_at becomes that instant (Scheduler.reserve ->
_next_instance: last_run_at = app.now()). Checks happen when Celery's beat would wake up
(now + remaining_estimate(last_run_at), exact to the microsecond) and, in addition, at every
UTC-offset change of the zone and every local midnight. remaining_estimate(last_run_at) depends
on `now` only through now's UTC offset and now's local date (celery/schedules.py
crontab.remaining_delta: `execute_this_hour`; celery/utils/time.py remaining(): the "DST
started/ended" re-labelling), so between two such instants now + remaining_estimate is
constant, and checking at both kinds of instant and at Celery's own wake-ups finds the first
instant at which is_due says True: a beat that never oversleeps (Celery's, with a
beat_max_loop_interval short enough, dispatches at its first check at or after it). That
instant is the slot the beat must compute. Random but reproducible (--seed).
"""
import argparse
import json
import random
import sys
from datetime import datetime, timedelta, timezone

import pytz
from celery import Celery
from celery.schedules import crontab

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MAX_SLOTS = 300
DOW_NAMES = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat']


def us(dt):
    d = dt - EPOCH
    return (d.days * 86400 + d.seconds) * 1000000 + d.microseconds


def from_us(v):
    return EPOCH + timedelta(microseconds=v)


def offset_changes(tz, lo, hi):
    """[(utc datetime, offset before, offset after)] of tz in [lo, hi) where the offset moves."""
    out = []
    tt = getattr(tz, '_utc_transition_times', None) or []
    info = getattr(tz, '_transition_info', None) or []
    for k in range(1, len(tt)):
        t = tt[k].replace(tzinfo=timezone.utc)
        if lo <= t < hi and info[k][0] != info[k - 1][0]:
            out.append((t, info[k - 1][0], info[k][0]))
    return out


def zones():
    out = []
    lo = datetime(2001, 1, 1, tzinfo=timezone.utc)
    hi = datetime(2037, 1, 1, tzinfo=timezone.utc)
    for name in pytz.common_timezones:
        ch = offset_changes(pytz.timezone(name), lo, hi)
        if ch:
            out.append((name, ch))
    return out


def pick(rng, values, k):
    return sorted(rng.sample(values, min(k, len(values))))


def field_list(vals):
    return ','.join(str(v) for v in vals)


def rand_spec(rng, local_before, local_after):
    """A random crontab, biased towards the wall-clock hours and the day of the change."""
    hot_hours = sorted({(local_before.hour + d) % 24 for d in (-1, 0, 1)} |
                       {(local_after.hour + d) % 24 for d in (-1, 0, 1)})
    r = rng.random()
    if r < 0.25:
        minute = str(rng.choice([0, 0, 0, 30, 15, 45, rng.randrange(60)]))
    elif r < 0.45:
        minute = '*/%d' % rng.choice([5, 10, 15, 20, 30])
    elif r < 0.60:
        minute = field_list(pick(rng, list(range(60)), rng.randint(2, 4)))
    elif r < 0.72:
        a = rng.randrange(60)
        b = rng.randrange(60)
        minute = '%d-%d' % (a, b) + ('/%d' % rng.randint(2, 20) if rng.random() < 0.6 else '')
    elif r < 0.80:
        minute = '*'
    else:
        minute = str(rng.randrange(60))
    r = rng.random()
    if minute == '*' or minute.startswith('*/'):
        # dense minutes: a few hours only (keeps the windows short)
        hour = field_list(pick(rng, hot_hours, rng.randint(1, 3)))
    elif r < 0.35:
        hour = str(rng.choice(hot_hours))
    elif r < 0.55:
        hour = field_list(pick(rng, hot_hours, rng.randint(2, 4)))
    elif r < 0.70:
        hour = '*'
    elif r < 0.80:
        hour = '*/%d' % rng.choice([2, 3, 4, 6, 12])
    elif r < 0.90:
        a = rng.choice(hot_hours)
        hour = '%d-%d' % (a, (a + rng.randint(1, 5)) % 24)
    else:
        hour = str(rng.randrange(24))
    spec = {'minute': minute, 'hour': hour}
    day = local_after.date()
    r = rng.random()
    if r < 0.12:
        spec['day_of_week'] = DOW_NAMES[(day.isoweekday()) % 7]
    elif r < 0.20:
        spec['day_of_week'] = field_list(pick(rng, list(range(7)), rng.randint(1, 4)))
    elif r < 0.25:
        a = rng.randrange(7)
        spec['day_of_week'] = '%s-%s' % (DOW_NAMES[a], DOW_NAMES[(a + rng.randint(1, 4)) % 7])
    r = rng.random()
    if r < 0.10:
        spec['day_of_month'] = str(day.day)
    elif r < 0.15:
        spec['day_of_month'] = '%d-%d' % (max(1, day.day - 2), min(31, day.day + 2))
    elif r < 0.18:
        spec['day_of_month'] = field_list(pick(rng, list(range(1, 32)), rng.randint(1, 6)))
    if rng.random() < 0.08:
        spec['month_of_year'] = str(day.month) if rng.random() < 0.7 else \
            '%d-%d' % (max(1, day.month - 1), min(12, day.month + 1))
    return spec


def mean_gap_s(sch):
    """Rough mean distance between matches (for the window size)."""
    per_week = len(sch.minute) * len(sch.hour) * len(sch.day_of_week)
    frac = len(sch.day_of_month) / 31.0 * len(sch.month_of_year) / 12.0
    return 7 * 86400 / max(per_week * frac, 1e-3)


def next_local_midnight(T, tz):
    """The first instant after T at which the local date changes, read with T's offset (an
    offset change before it is a check of its own, after which this is asked again)."""
    local = T.astimezone(tz)
    wall = datetime.combine(local.date() + timedelta(days=1), datetime.min.time())
    return (wall - local.utcoffset()).replace(tzinfo=timezone.utc)


def simulate(sch, clock, tz, changes, start, end):
    """Celery's beat with a fake clock: the slots in [start, end] (at most MAX_SLOTS)."""
    ticks = sorted(c[0] for c in changes)
    T = start
    last = start
    out = []
    ti = 0
    while T <= end and len(out) < MAX_SLOTS:
        clock[0] = T
        due, _ = sch.is_due(last.astimezone(tz))
        if due:
            out.append(us(T))
            last = T
        rem = sch.remaining_estimate(last.astimezone(tz))
        nxt = T + rem
        while ti < len(ticks) and ticks[ti] <= T:
            ti += 1
        cands = [next_local_midnight(T, tz)]
        if nxt > T:
            cands.append(nxt)
        if ti < len(ticks):
            cands.append(ticks[ti])
        T = min(cands)
    return out, len(out) >= MAX_SLOTS


def one_case(app, tzname, spec, start, end, changes):
    tz = pytz.timezone(tzname)
    clock = [start]
    sch = crontab(app=app, nowfun=lambda: clock[0].astimezone(tz), **spec)
    slots, truncated = simulate(sch, clock, tz, changes, start, end)
    return {'tz': tzname, 'spec': spec, 'start': us(start), 'end': us(end), 'slots': slots,
            'truncated': truncated}


# The cases (#14), whatever the seed.
FIXED = [
    ('Europe/Zurich', {'minute': '0', 'hour': '3'}, '2026-10-22T12:00:07', '2026-10-28T00:00:00'),
    ('Europe/Zurich', {'minute': '0', 'hour': '3'}, '2026-03-26T12:00:07', '2026-04-01T00:00:00'),
    ('America/New_York', {'minute': '0', 'hour': '4', 'day_of_week': 'sun'},
     '2024-02-27T12:00:00', '2024-03-20T00:00:00'),
    ('Australia/Lord_Howe', {'minute': '0', 'hour': '12'}, '2026-04-02T00:00:00',
     '2026-04-08T00:00:00'),
    ('Europe/Paris', {'minute': '30', 'hour': '2'}, '2026-03-27T00:00:00', '2026-03-31T00:00:00'),
    ('Europe/Paris', {'minute': '30', 'hour': '2'}, '2026-10-23T00:00:00', '2026-10-27T00:00:00'),
    ('Europe/Paris', {'minute': '*/20', 'hour': '1-3'}, '2026-10-24T22:00:00',
     '2026-10-25T06:00:00'),
    ('Europe/Paris', {'minute': '*/20', 'hour': '1-3'}, '2026-03-28T22:00:00',
     '2026-03-29T06:00:00'),
    ('America/Santiago', {'minute': '0,30', 'hour': '23,0'}, '2026-04-03T20:00:00',
     '2026-04-06T20:00:00'),
    ('Pacific/Chatham', {'minute': '45', 'hour': '2,3'}, '2026-04-03T00:00:00',
     '2026-04-07T00:00:00'),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--out')
    ap.add_argument('--seed', type=int, default=14)
    ap.add_argument('-n', type=int, default=2500, help='random cases (2500)')
    opt = ap.parse_args()
    rng = random.Random(opt.seed)
    apps = {}

    def app_for(tzname):
        a = apps.get(tzname)
        if a is None:
            a = apps[tzname] = Celery(set_as_current=False)
            a.conf.timezone = tzname
            a.conf.enable_utc = True
        return a

    zs = zones()
    cases = []
    for tzname, spec, s, e in FIXED:
        start = datetime.fromisoformat(s).replace(tzinfo=timezone.utc)
        end = datetime.fromisoformat(e).replace(tzinfo=timezone.utc)
        ch = offset_changes(pytz.timezone(tzname), start - timedelta(days=1),
                            end + timedelta(days=1))
        cases.append(one_case(app_for(tzname), tzname, spec, start, end, ch))
    for _ in range(opt.n):
        tzname, changes = rng.choice(zs)
        t, off_before, off_after = rng.choice(changes)
        tz = pytz.timezone(tzname)
        spec = rand_spec(rng, (t.replace(tzinfo=None) + off_before),
                         (t.replace(tzinfo=None) + off_after))
        app = app_for(tzname)
        gap = mean_gap_s(crontab(app=app, **spec))
        before = min(max(gap * 1.5, 2 * 3600), 9 * 86400)
        after = min(max(gap * 1.5, 26 * 3600), 9 * 86400)
        start = t - timedelta(seconds=rng.uniform(0, before))
        start = start.replace(microsecond=rng.choice([0, rng.randrange(1000000)]))
        if rng.random() < 0.2:  # a beat started on a whole minute
            start = start.replace(second=0, microsecond=0)
        end = t + timedelta(seconds=after)
        ch = offset_changes(tz, start - timedelta(days=1), end + timedelta(days=1))
        try:
            cases.append(one_case(app, tzname, spec, start, end, ch))
        except RuntimeError:  # "unable to rollover" (e.g. Feb 30): not a slot question
            continue
    out = {'generator': 'celery %s, pytz %s, seed %d' % (
        __import__('celery').__version__, pytz.__version__, opt.seed), 'cases': cases}
    text = json.dumps(out, separators=(',', ':'))
    if opt.out:
        with open(opt.out, 'w') as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    n_slots = sum(len(c['slots']) for c in cases)
    sys.stderr.write('%d cases, %d slots, %d zones\n' % (len(cases), n_slots,
                                                        len({c['tz'] for c in cases})))


if __name__ == '__main__':
    main()
