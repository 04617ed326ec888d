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

from celery import Celery

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
