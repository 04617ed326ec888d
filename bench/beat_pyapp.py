"""The Python side of the beat benchmark (bench/beat.py): a Celery 5.2 app whose beat_schedule
is the benchmark's schedule file, the same file `celeryc beat --schedule-file` reads:

    {"entries": {"NAME": {"task": "...", "schedule": {"type": "crontab", "minute": "*/5", ...}
                                                    | SECONDS,
                          "args": [...], "kwargs": {...}, "options": {"queue": "..."}}}}

Run as `celery -A beat_pyapp beat -s STATEFILE` (default PersistentScheduler) with
CELERY_BROKER_URL and BENCH_BEAT_SCHEDULE (the file) in the environment. Timezone UTC.
BENCH_BEAT_LAST_RUN (optional, `--mix second`): a JSON file {NAME: epoch_s}, each entry's
last_run_at (ScheduleEntry's own argument), so that its interval's runs fall on the phase the
benchmark gave it, as celeryc gets them from its state file.
"""
import json
import os
from datetime import datetime, timezone

from celery import Celery
from celery.schedules import crontab

app = Celery("beatbench", broker=os.environ["CELERY_BROKER_URL"])
app.conf.timezone = "UTC"
app.conf.enable_utc = True

CRON_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")


def _schedule(s):
    if isinstance(s, (int, float)):
        return float(s)
    if s.get("type") == "interval":
        return float(s["seconds"])
    return crontab(**{k: s[k] for k in CRON_FIELDS if k in s})


with open(os.environ["BENCH_BEAT_SCHEDULE"]) as f:
    _entries = json.load(f)["entries"]
_last = {}
if os.environ.get("BENCH_BEAT_LAST_RUN"):
    with open(os.environ["BENCH_BEAT_LAST_RUN"]) as f:
        _last = json.load(f)
app.conf.beat_schedule = {
    name: dict({"task": e["task"], "schedule": _schedule(e["schedule"]),
                "args": tuple(e.get("args", ())), "kwargs": e.get("kwargs", {}),
                "options": e.get("options", {})},
               **({"last_run_at": datetime.fromtimestamp(_last[name], timezone.utc)}
                  if name in _last else {}))
    for name, e in _entries.items()}
del _entries, _last
