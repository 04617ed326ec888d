#!/usr/bin/python3
"""Generate the next-run cases for tests/unit/test_schedule.c with Celery 5.2's own schedules.

Run at test time: ctest's `schedule_cases` fixture (CMakeLists.txt) runs
    /usr/bin/python3 tests/unit/data/schedule/gen_schedule_cases.py --out BUILD/.../cases.json
before test_schedule, which reads that file. Needs the system Celery 5.2 + pytz (hence
/usr/bin/python3); when they are missing this fails (ImportError), and so does the test.
Without --out the cases go to stdout.

Each case: a schedule evaluated in an app timezone with a last_run and a now (UTC instants).
Expected: next_us = now + remaining_estimate(last_run), and is_due(last_run) -> (due, next).
last_run and now are handed to Celery as aware datetimes in the app zone, as beat does
(app.now() and ScheduleEntry.last_run_at are app.now() values).
"""
import json
from datetime import datetime, timedelta, timezone

import pytz
from celery import Celery
from celery.schedules import crontab, schedule

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def us(dt):
    d = dt - EPOCH
    return (d.days * 86400 + d.seconds) * 1000000 + d.microseconds


def td_us(d):
    return (d.days * 86400 + d.seconds) * 1000000 + d.microseconds


def utc(s):
    return datetime.fromisoformat(s).replace(tzinfo=timezone.utc)


CRON_FIELDS = ('minute', 'hour', 'day_of_week', 'day_of_month', 'month_of_year')

# (tz, kind, spec, [(last_run_utc, now_utc), ...])
CASES = []


def add(tz, spec, pairs):
    CASES.append((tz, spec, pairs))


def series(start, step_s, n, lag_s=1):
    """Pairs (last, now) walking: last = start + k*step, now = last + lag."""
    t = utc(start)
    return [((t + timedelta(seconds=k * step_s)).isoformat(),
             (t + timedelta(seconds=k * step_s + lag_s)).isoformat()) for k in range(n)]


ZONES = ['UTC', 'Europe/Paris', 'America/New_York']
# DST: Paris 2026-03-29 01:00Z spring forward, 2026-10-25 01:00Z fall back;
# New York 2026-03-08 07:00Z, 2026-11-01 06:00Z.
AROUND = ['2026-03-28T20:00:00', '2026-10-24T20:00:00', '2026-03-07T22:00:00',
          '2026-10-31T22:00:00']
SPECS = [
    {},
    {'minute': '*/15'},
    {'minute': '0', 'hour': '*'},
    {'minute': '30', 'hour': '2'},
    {'minute': '0', 'hour': '2,3'},
    {'minute': '15,45', 'hour': '1-3'},
    {'minute': '0', 'hour': '0'},
    {'minute': '0', 'hour': '9', 'day_of_week': 'mon-fri'},
    {'minute': '0', 'hour': '12', 'day_of_week': 'sun'},
    {'minute': '5', 'hour': '*/6', 'day_of_week': 'sat,sun'},
    {'minute': '0', 'hour': '0', 'day_of_month': '31'},
    {'minute': '0', 'hour': '0', 'day_of_month': '29', 'month_of_year': '2'},
    {'minute': '0', 'hour': '3', 'day_of_month': '1', 'month_of_year': '*/3'},
    {'minute': '0', 'hour': '0', 'day_of_month': '28-31'},
    {'minute': '0', 'hour': '8', 'day_of_month': '1-7', 'day_of_week': 'mon'},
    {'minute': '59', 'hour': '23', 'day_of_month': '30-2'},
    {'minute': '0', 'hour': '22-2/2'},
    {'minute': '*/7', 'hour': '*', 'day_of_week': 'fri-mon'},
    {'minute': '0', 'hour': '0', 'day_of_month': '*/1'},
]
for tz in ZONES:
    for spec in SPECS:
        pairs = []
        for a in AROUND:
            pairs += series(a, 1800 + 7, 14, 1)
        # month ends, Feb 29, year end
        for s in ['2024-02-28T23:30:00', '2024-02-29T23:59:00', '2026-01-31T23:10:00',
                  '2026-04-30T22:00:00', '2026-12-31T23:00:00', '2027-02-28T12:00:00']:
            pairs += series(s, 3600 * 5 + 13, 6, 30)
        # last run far in the past, and now just at/after the due time
        pairs.append(('2020-01-01T00:00:00', '2026-06-15T10:07:00'))
        pairs.append(('2026-06-14T10:07:00.250000', '2026-06-15T10:07:00.500000'))
        pairs.append(('2026-06-15T09:59:59', '2026-06-15T10:00:00'))
        add(tz, ('crontab', spec), pairs)
    for every in [1, 30, 60, 3600, 86400, 90061.5]:
        pairs = []
        for a in AROUND:
            pairs += series(a, 3600 * 2 + 1, 6, 5)
        pairs.append(('2020-01-01T00:00:00', '2026-06-15T10:07:00'))
        pairs.append(('2026-06-15T09:59:59', '2026-06-15T10:00:00'))
        add(tz, ('interval', every), pairs)

# Feb 31 never exists: Celery raises RuntimeError('unable to rollover ...').
add('UTC', ('crontab', {'minute': '0', 'hour': '0', 'day_of_month': '31',
                        'month_of_year': '2'}), [('2026-01-01T00:00:00', '2026-01-01T00:00:01')])

# ---- more zones and edge cases (on top of the table above, which stays as it was) ----------
# Oslo: EU rules (2026-03-29 01:00Z, 2026-10-25 01:00Z). Lord Howe: a 30-minute DST shift,
# +10:30 -> +11:00 at 2026-10-03 15:30Z (02:00 -> 02:30 local), back at 2026-04-04 15:00Z
# (02:00 -> 01:30 local). New York once more with the extra specs.
EXTRA_AROUND = {
    'Europe/Oslo': ['2026-03-28T20:00:00', '2026-10-24T20:00:00', '2027-03-27T22:00:00'],
    'America/New_York': ['2026-03-07T22:00:00', '2026-10-31T22:00:00', '2027-11-06T22:00:00'],
    'Australia/Lord_Howe': ['2026-04-04T10:00:00', '2026-10-03T10:00:00',
                            '2027-10-02T12:00:00'],
}
EXTRA_SPECS = [
    {},
    {'minute': '*/30'},
    {'minute': '0,30', 'hour': '1-3'},
    {'minute': '45', 'hour': '1'},
    {'minute': '15', 'hour': '2'},
    {'minute': '0', 'hour': '2'},
    {'minute': '10-50/20', 'hour': '8-18/5'},
    {'minute': '1,2,3,58,59'},
    {'minute': '0', 'hour': '6', 'day_of_week': 'Wednesday'},
    {'minute': '30', 'hour': '*/4', 'day_of_week': 'tue,thu'},
    {'minute': '0', 'hour': '0', 'day_of_week': 'SAT-sun'},
    {'minute': '0', 'hour': '0', 'day_of_week': '0-6/3'},
    {'minute': '0', 'hour': '12', 'day_of_month': '30'},
    {'minute': '0', 'hour': '12', 'day_of_month': '29'},
    {'minute': '30', 'hour': '4', 'day_of_month': '1,15,31'},
    {'minute': '0', 'hour': '0', 'month_of_year': '2-4,11'},
    {'minute': '0', 'hour': '23', 'day_of_month': '29', 'month_of_year': '2'},
    {'minute': '*/20', 'hour': '22-1', 'day_of_month': '31', 'month_of_year': '*/2'},
]
EXTRA_EDGES = ['2024-02-28T20:00:00', '2025-02-28T20:00:00', '2028-02-28T20:00:00',
               '2026-01-31T20:00:00', '2026-06-30T20:00:00', '2026-12-31T20:00:00']
for tz, around in EXTRA_AROUND.items():
    for spec in EXTRA_SPECS:
        pairs = []
        for a in around:
            pairs += series(a, 1800 + 11, 12, 1)
        for s in EXTRA_EDGES:
            pairs += series(s, 3600 * 3 + 17, 5, 45)
        pairs.append(('2019-05-05T05:05:05', '2026-02-28T23:59:59'))
        pairs.append(('2026-06-15T09:59:59', '2026-06-15T10:00:00'))
        add(tz, ('crontab', spec), pairs)
    for every in [45, 1800, 3600, 5400, 86400]:
        pairs = []
        for a in around:
            pairs += series(a, 1800 + 7, 8, 3)
        add(tz, ('interval', every), pairs)

ERRORS = [
    ('minute', '60'), ('minute', '-1'), ('hour', '24'), ('hour', '1-'), ('minute', '*/0'),
    ('minute', '*/'), ('minute', '1-5/'), ('minute', ''), ('minute', '1,,2'), ('minute', 'x'),
    ('day_of_week', 'mon-xyz'), ('day_of_week', '7'), ('day_of_month', '0'),
    ('day_of_month', '32'), ('month_of_year', '13'), ('month_of_year', '0'), ('minute', '5/2'),
    ('minute', '*x'), ('day_of_month', 'sun'), ('minute', '1-5/x'),
]
OK_SPECS = [
    ('minute', '*'), ('minute', '0-59/10'), ('minute', '50-10'), ('minute', '50-10/3'),
    ('day_of_week', 'fri-mon'), ('day_of_week', 'Monday'), ('day_of_week', 'SUN,sat'),
    ('hour', '1_0'), ('minute', ' 5 '), ('minute', '+5'), ('minute', '1-5!!'),
    ('minute', '*/5!!'), ('day_of_month', '30-2/2'), ('month_of_year', '*/5'),
    ('minute', '1-5/2/3'), ('day_of_week', '0-6/2'), ('minute', '3,3,1'),
]


def main():
    out = {'generator': 'celery %s' % __import__('celery').__version__, 'cases': [],
           'parse_ok': [], 'parse_err': []}
    apps = {}
    for tzname, (kind, spec), pairs in CASES:
        app = apps.get(tzname)
        if app is None:
            app = apps[tzname] = Celery(set_as_current=False)
            app.conf.timezone = tzname
            app.conf.enable_utc = True
        tz = pytz.timezone(tzname)
        for last_s, now_s in pairs:
            last, now = utc(last_s), utc(now_s)
            nowfun = (lambda n=now: n.astimezone(tz))
            if kind == 'crontab':
                sch = crontab(app=app, nowfun=nowfun, **spec)
            else:
                sch = schedule(timedelta(seconds=spec), app=app, nowfun=nowfun)
            lr = last.astimezone(tz)
            try:
                rem = sch.remaining_estimate(lr)
                due, nxt = sch.is_due(lr)
            except RuntimeError as e:
                out['cases'].append({'tz': tzname, 'kind': kind, 'spec': spec,
                                     'last': us(last), 'now': us(now), 'error': str(e)})
                continue
            out['cases'].append({
                'tz': tzname, 'kind': kind, 'spec': spec, 'last': us(last), 'now': us(now),
                'last_iso': last_s, 'now_iso': now_s,
                'next': us(now) + td_us(rem), 'due': bool(due), 'next_check': round(nxt * 1e6)})
    for field, v in OK_SPECS + ERRORS:
        lim = {'minute': (60, 0), 'hour': (24, 0), 'day_of_week': (7, 0),
               'day_of_month': (31, 1), 'month_of_year': (12, 1)}[field]
        try:
            c = crontab(**{field: v})
            vals = sorted(getattr(c, field))
            out['parse_ok'].append({'field': field, 'spec': v, 'values': vals,
                                    'max': lim[0], 'min': lim[1]})
        except Exception as e:  # ValueError or crontab_parser.ParseException
            out['parse_err'].append({'field': field, 'spec': v, 'error': str(e),
                                     'max': lim[0], 'min': lim[1]})
    # One case per line: diffable, and about half the size of indented JSON.
    import sys
    dest = sys.argv[sys.argv.index('--out') + 1] if '--out' in sys.argv else None
    f = open(dest + '.tmp', 'w') if dest else sys.stdout
    w = f.write
    w('{"generator": %s,\n' % json.dumps(out['generator']))
    for key in ('parse_ok', 'parse_err', 'cases'):
        w('"%s": [\n' % key)
        w(',\n'.join(json.dumps(x, sort_keys=True, separators=(',', ':')) for x in out[key]))
        w('\n]%s\n' % (',' if key != 'cases' else '}'))
    if dest:
        f.close()
        __import__('os').replace(dest + '.tmp', dest)  # whole or not at all
        print('%s: %d cases, %d parse_ok, %d parse_err (%s)'
              % (dest, len(out['cases']), len(out['parse_ok']), len(out['parse_err']),
                 out['generator']))


main()
