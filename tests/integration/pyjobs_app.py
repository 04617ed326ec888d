"""Python Celery worker app with celeryc job-run tracking (deploy/python/celeryc_jobs.py), for
tests/integration/test_jobs_python.py. pyworker_app's app and tasks, plus the pyjobs.* tasks
below; the job store is CELERYC_JOB_STORE, the heartbeat interval PYJ_HEARTBEAT (s).

Start: CELERYC_JOB_STORE=postgresql://... /usr/bin/python3 -m celery -A pyjobs_app worker ...
"""
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "python"))

import celeryc_jobs  # noqa: E402
from celery.utils.log import get_task_logger  # noqa: E402

from pyworker_app import app  # noqa: E402

celeryc_jobs.install(app, heartbeat_interval=float(os.environ.get("PYJ_HEARTBEAT", "10")))

logger = get_task_logger(__name__)
plain = logging.getLogger("pyjobs.plain")


@app.task(name="pyjobs.index", bind=True)
def index(self, n=1, fail_every=0, since=None):
    """Like jobs.index_events: logs, counts, a partial success when some items fail."""
    logger.info("run %s since %s", self.request.get(celeryc_jobs.HEADER), since)
    ok = failed = 0
    for i in range(n):
        if fail_every and (i + 1) % fail_every == 0:
            failed += 1
            plain.warning("item %d failed", i)
        else:
            ok += 1
            logger.info("item %d indexed", i)
    celeryc_jobs.progress(ok, failed)
    if failed:
        celeryc_jobs.partial("%d indexed, %d failed" % (ok, failed))
    return ok


@app.task(name="pyjobs.fail")
def fail(message="kaput", since=None):
    logger.info("about to fail")
    print("printed")  # the worker redirects stdout to the logger celery.redirected
    raise ValueError(message)


@app.task(name="pyjobs.sleep")
def sleep(seconds=1.0, since=None):
    logger.info("sleeping %s s in pid %d", seconds, os.getpid())
    time.sleep(seconds)
    celeryc_jobs.warning("slept")
    return seconds


@app.task(name="pyjobs.retry_once", bind=True, max_retries=1)
def retry_once(self, since=None):
    logger.info("attempt %d", self.request.retries)
    if not self.request.retries:
        raise self.retry(countdown=0.5)
    celeryc_jobs.progress(1, 0)
    return self.request.retries
