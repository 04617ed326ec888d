"""Seconds from the wire (issue #14): time limits, countdowns, eta/expires, rate limits and
retry delays given as 0, negative, NaN, infinity or 1e300, in messages and control commands.

Every one of them used to be converted to int64 microseconds without a range check: a
`timelimit` of 1e300 failed the task at once with TimeLimitExceeded(1e+300) in a Release
build and crash-looped the master under UBSan. Now one helper (cc_isotime_span_us,
proto/isotime.c) maps a seconds value to microseconds with explicit NaN / negative / huge
handling, and the callers decide as Python does:

- a huge or infinite time limit is no limit; a negative one is refused (the message is
  rejected, the command answers an error), NaN too (Python's json token NaN, by command);
- a huge retry countdown parks the retry at the far future; a negative one retries now;
- rate limits: "inf" is no limit, "nan" and negative rates are refused.

Run these against the ASan+UBSan build (CELERYC_BIN=build-asan/celeryc): the worker must
survive every message and command and keep serving.
"""
import json
import math
import os
import subprocess
import sys

import pytest
from celery.exceptions import TimeLimitExceeded

from conftest import IMPL, TIMEOUT, c_only, celeryc_bin, scaled, wait_for

HUGE = 1e300


def _meta(rds, tid):
    raw = rds.get("celery-task-meta-" + tid)
    return json.loads(raw) if raw else None


def _alive(app, w):
    """The worker still runs and serves: a task goes through."""
    assert w.proc.poll() is None, w.log()[-4000:]
    assert app.send_task("demo.add", args=[20, 22], queue=w.queue).get(timeout=TIMEOUT) == 42


def _no_sanitizer_report(w):
    """Stop the worker (warm), then: exit 0, and no sanitizer report (UBSan, ASan, leaks at
    exit) in its log."""
    rc = w.stop()
    log = w.log()
    for marker in ("runtime error:", "AddressSanitizer", "LeakSanitizer",
                   "outside the range of representable"):
        assert marker not in log, log[-4000:]
    assert rc == 0, (rc, log[-4000:])


YEAR_3000_MS = 32503680000000


def _held_far(app, w, rds, tid):
    """The message of task `tid` waits for an eta after the year 3000: in the worker's ETA
    heap (inspect scheduled) or, past worker_eta_horizon, in the Redis delay store."""
    for s in _ctl(app, w, "scheduled"):
        if s["request"]["id"] == tid:
            return int(s["eta"][:4]) > 3000
    for member, score in rds.zrange("celeryc-delayed", 0, -1, withscores=True):
        if tid.encode() in member:
            return score > YEAR_3000_MS
    return False


def _ctl(app, w, command, **arguments):
    replies = app.control.broadcast(command, arguments=arguments, destination=[w.name],
                                    reply=True, timeout=scaled(3))
    assert replies, "no reply to %s" % command
    return replies[0][w.name]


# ---- Time limits in the message -----------------------------------------------------------

@pytest.mark.parametrize("hard,soft", [(HUGE, None), (None, HUGE), (HUGE, HUGE),
                                       (sys.float_info.max, None), (2.0 ** 63, 1e12)])
def test_huge_time_limit_is_no_limit(app, worker_factory, rds, hard, soft):
    # Python: `timeout=time_limit or task.time_limit`, and billiard compares floats: a limit
    # of 1e300 never fires. (NaN and inf cannot travel in the timelimit header: RabbitMQ
    # closes the publisher's connection with 541 INTERNAL_ERROR on a non-finite float.)
    w = worker_factory(concurrency=1)
    r = app.send_task("demo.sleep", args=[0.3], queue=w.queue, time_limit=hard,
                      soft_time_limit=soft)
    assert r.get(timeout=TIMEOUT) == 0.3
    assert _meta(rds, r.id)["status"] == "SUCCESS"
    _alive(app, w)
    _no_sanitizer_report(w)


def test_zero_time_limit_falls_back_to_the_worker_limit(app, worker_factory, rds):
    # `time_limit or task.time_limit`: 0 is unset, so the worker's --time-limit applies.
    w = worker_factory(concurrency=1, extra=["--time-limit", "1"], env={"PYW_TIME_LIMIT": "1"})
    r = app.send_task("demo.spin", args=[60], queue=w.queue, time_limit=0)
    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=TIMEOUT)
    _alive(app, w)
    _no_sanitizer_report(w)


@c_only
@pytest.mark.parametrize("hard,soft", [(-1, None), (None, -1), (-HUGE, None)])
def test_negative_time_limit_is_rejected(app, worker_factory, hard, soft):
    # Python would time the task out at once; celeryc refuses the message as malformed
    # (logged with its reason) and carries on.
    w = worker_factory(concurrency=1)
    r = app.send_task("demo.add", args=[1, 2], queue=w.queue, time_limit=hard,
                      soft_time_limit=soft)
    w.wait_log(r"%s.*timelimit\[\d\] is negative" % r.id, 10)
    _alive(app, w)
    _no_sanitizer_report(w)


# ---- Time limits by control command --------------------------------------------------------

def test_control_time_limit_huge_is_no_limit(app, worker_factory, rds):
    w = worker_factory(concurrency=1)
    assert _ctl(app, w, "time_limit", task_name="demo.sleep", soft=0, hard=HUGE) == \
        {"ok": "time limits set successfully"}
    r = app.send_task("demo.sleep", args=[0.3], queue=w.queue)
    assert r.get(timeout=TIMEOUT) == 0.3
    assert _ctl(app, w, "time_limit", task_name="demo.sleep", soft=math.inf,
                hard=math.inf) == {"ok": "time limits set successfully"}
    assert app.send_task("demo.sleep", args=[0.3], queue=w.queue).get(timeout=TIMEOUT) == 0.3
    _alive(app, w)
    _no_sanitizer_report(w)


@c_only
def test_control_time_limit_cli_huge_is_no_limit(app, worker_factory, services):
    w = worker_factory(concurrency=1)
    out = subprocess.run([celeryc_bin(), "control", "-b", os.environ["CELERYC_TEST_AMQP_URL"],
                          "-d", w.name, "time_limit", "demo.sleep", "0", "1e300"],
                         capture_output=True, text=True, timeout=scaled(30))
    assert "time limits set successfully" in out.stdout, (out.stdout, out.stderr)
    assert app.send_task("demo.sleep", args=[0.3], queue=w.queue).get(timeout=TIMEOUT) == 0.3
    _alive(app, w)
    _no_sanitizer_report(w)


@c_only
@pytest.mark.parametrize("soft,hard", [(-1, None), (None, -5.0), (math.nan, None),
                                       (None, -math.inf), ("ten", None)])
def test_control_time_limit_bad_value_is_refused(app, worker_factory, soft, hard):
    # Python accepts anything here (and then kills every task at once for a negative limit,
    # or breaks its timeout handler for a string); celeryc answers an error and keeps the
    # limits it had. NaN arrives as Python's json token NaN.
    w = worker_factory(concurrency=1)
    reply = _ctl(app, w, "time_limit", task_name="demo.sleep", soft=soft, hard=hard)
    assert "error" in reply and "ValueError" in reply["error"], reply
    assert app.send_task("demo.sleep", args=[0.3], queue=w.queue).get(timeout=TIMEOUT) == 0.3
    _alive(app, w)
    _no_sanitizer_report(w)


# ---- Retry delays ------------------------------------------------------------------------

RETRY_ONCE = "t.integration.tasks.retry_once"


def test_retry_negative_countdown_retries_now(app, worker_factory, rds):
    # Python: eta = now + timedelta(seconds=-5), in the past: the retry runs at once.
    w = worker_factory(concurrency=1)
    r = app.send_task(RETRY_ONCE, kwargs={"countdown": -5}, queue=w.queue)
    assert r.get(timeout=TIMEOUT) == 1
    _alive(app, w)
    _no_sanitizer_report(w)


@c_only
@pytest.mark.parametrize("countdown", [HUGE, 1e12, 2.0 ** 63, sys.float_info.max])
def test_retry_huge_countdown_waits_far_away(app, worker_factory, rds, countdown):
    # Python's retry raises OverflowError past datetime's range (year 9999) and rejects the
    # task; celeryc parks the retry at now + CC_ISOTIME_SPAN_MAX_S (year ~5200; in the Redis
    # delay store, past worker_eta_horizon): it never runs again, the worker is unharmed.
    w = worker_factory(concurrency=1)
    r = app.send_task(RETRY_ONCE, kwargs={"countdown": countdown}, queue=w.queue)
    wait_for(lambda: (_meta(rds, r.id) or {}).get("status") == "RETRY", 15, "RETRY stored")
    wait_for(lambda: _held_far(app, w, rds, r.id), 15, "the retry held for a far eta")
    _alive(app, w)
    _no_sanitizer_report(w)


# ---- Canvas options -------------------------------------------------------------------------

@c_only
@pytest.mark.parametrize("opts,outcome", [({"countdown": HUGE}, "PENDING"),
                                          ({"countdown": -5}, "SUCCESS"),
                                          ({"expires": HUGE}, "SUCCESS"),
                                          ({"expires": -5}, "REVOKED"),
                                          ({"countdown": 0, "expires": 0}, "REVOKED")])
def test_callback_options_huge_or_negative(app, worker_factory, rds, opts, outcome):
    # A callback's countdown / expires (numbers in the embedded signature's options) become
    # the new message's eta / expires, as Python's apply_async computes them: a huge one is
    # the far future (Python raises OverflowError), a negative one is in the past (due now /
    # already expired), 0 is no countdown / expired at once. Never an overflow.
    w = worker_factory(concurrency=1)
    cb_id = "cb-%s" % os.urandom(6).hex()
    link = app.signature("demo.add", args=[1], queue=w.queue, task_id=cb_id, **opts)
    r = app.send_task("demo.add", args=[2, 3], queue=w.queue, link=link)
    assert r.get(timeout=TIMEOUT) == 5
    if outcome == "PENDING":
        wait_for(lambda: _held_far(app, w, rds, cb_id), 15, "the callback held for a far eta")
    else:
        wait_for(lambda: (_meta(rds, cb_id) or {}).get("status") == outcome, 15,
                 "callback %s" % outcome)
        if outcome == "SUCCESS":
            assert _meta(rds, cb_id)["result"] == 6
    _alive(app, w)
    _no_sanitizer_report(w)


# ---- Rate limits -------------------------------------------------------------------------

@pytest.mark.parametrize("rate,ok", [("1e300/s", True), ("1e300", True), ("1e-300/s", True),
                                     ("inf", True), ("0", True), ("nan", False),
                                     ("-1/s", False)])
def test_control_rate_limit_extremes(app, worker_factory, rate, ok):
    w = worker_factory(concurrency=1)
    reply = _ctl(app, w, "rate_limit", task_name="demo.mul", rate_limit=rate)
    if IMPL == "c" or ok:
        assert ("ok" in reply) == ok, reply
    if ok or IMPL == "c":
        assert app.send_task("demo.mul", args=[6, 7], queue=w.queue).get(timeout=TIMEOUT) == 42
    _alive(app, w)
    _no_sanitizer_report(w)
