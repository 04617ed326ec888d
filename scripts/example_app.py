"""A minimal Python Celery client for a celeryc fleet (used by scripts/demo.sh).

    CELERY_BROKER_URL=amqp://... CELERY_RESULT_BACKEND=redis://... \
        /usr/bin/python3 scripts/example_app.py            # runs a few example calls

or interactively:
    >>> from example_app import app
    >>> app.send_task("demo.add", args=[2, 3]).get(timeout=10)
    5

The tasks live in the C worker; the client only needs their names (send_task) or a stub
with the same name (@app.task(name="demo.add") def add(x, y): ...; add.delay(2, 3)).
"""
import os
import sys

from celery import Celery

# deploy/python/celeryc_stats.py: the usage-event emitter (docs/STATS.md)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "deploy",
                                "python"))
from celeryc_stats import StatsEmitter  # noqa: E402

app = Celery("example_app",
             broker=os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
             backend=os.environ.get("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/0"))
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])


@app.task(name="demo.add")
def add(x, y):
    """Stub: runs in the celeryc worker."""
    raise NotImplementedError


if __name__ == "__main__":
    print("demo.add(2, 3)        ->", add.delay(2, 3).get(timeout=10))
    print("demo.fib(30)          ->", app.send_task("demo.fib", args=[30]).get(timeout=10))
    print("demo.wordcount(...)   ->",
          app.send_task("demo.wordcount", args=["the cat and the hat"]).get(timeout=10))
    try:
        app.send_task("demo.fail", args=["boom"]).get(timeout=10)
    except ValueError as e:
        print("demo.fail('boom')     -> raised ValueError(%r)" % str(e))
    # Usage events for the "record-view statistics" job (stats.index_events, every 30 s):
    # three visitors, one of them double-clicking, and a crawler (stored, never counted).
    with StatsEmitter(app) as stats:
        views = [("rec-1", {"user_id": 7}), ("rec-1", {"user_id": 7}),
                 ("rec-1", {"session_id": "s-42"}),
                 ("rec-2", {"ip_address": "192.0.2.7", "user_agent": "Mozilla/5.0 Firefox/121.0"}),
                 ("rec-2", {"ip_address": "192.0.2.8", "user_agent": "Googlebot/2.1"})]
        for obj, visitor in views:
            stats.emit("record-view", obj, **visitor)
    print("stats: 5 record-view events published (rec-1: 2 views by 2 visitors after the "
          "double click; rec-2: 1 view, the crawler is not counted)")
