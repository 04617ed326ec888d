"""Python Celery worker app: the reference implementation of the tasks celeryc ships.

Used by the mixed-fleet test, by bench/run.sh (demo.noop through the Python worker), and by
`CELERYC_IT_IMPL=python` runs of the integration suite (checks the tests against real
Celery). Configured from the environment:

  CELERY_BROKER_URL, CELERY_RESULT_BACKEND   as the C worker reads them
  PYW_ACKS_LATE, PYW_TRACK_STARTED, PYW_RESULT_EXTENDED   "1" to enable
  PYW_ACKS_ON_FAILURE_OR_TIMEOUT, PYW_REJECT_ON_WORKER_LOST "0"/"1" (Celery's defaults: 1, 0)
  PYW_TIME_LIMIT, PYW_SOFT_TIME_LIMIT          task_time_limit / task_soft_time_limit (s)
  PYW_MAX_TASKS_PER_CHILD, PYW_MAX_MEMORY_PER_CHILD   worker_max_tasks_per_child / _memory_ (KiB)
  TEST_REDIS_URL                              Redis for redis_echo / redis_count
  PYW_RESULT_CHORD_ORDERED                    "0": result_chord_ordered=False (chord list)

The demo.* definitions are the expected semantics of tasks/demo.c; the
t.integration.tasks.* ones follow Celery 5.2's t/integration/tasks.py.

Start: /usr/bin/python3 -m celery -A pyworker_app worker --pool prefork -c 1 \
          --without-gossip --without-mingle --without-heartbeat -Q <queue>
"""
import os
import signal
import time

from celery import Celery

app = Celery("pyworker_app",
             broker=os.environ.get("CELERY_BROKER_URL"),
             backend=os.environ.get("CELERY_RESULT_BACKEND"))
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=True,
    task_acks_late=os.environ.get("PYW_ACKS_LATE") == "1",
    task_track_started=os.environ.get("PYW_TRACK_STARTED") == "1",
    result_extended=os.environ.get("PYW_RESULT_EXTENDED") == "1",
    worker_prefetch_multiplier=int(os.environ.get("PYW_PREFETCH", "4")),
    task_acks_on_failure_or_timeout=os.environ.get("PYW_ACKS_ON_FAILURE_OR_TIMEOUT", "1") == "1",
    task_reject_on_worker_lost=os.environ.get("PYW_REJECT_ON_WORKER_LOST", "0") == "1",
)


def _num_env(name):
    v = os.environ.get(name)
    return float(v) if v else None


def _int_env(name):
    v = os.environ.get(name)
    return int(v) if v else None


app.conf.update(
    task_time_limit=_num_env("PYW_TIME_LIMIT"),
    task_soft_time_limit=_num_env("PYW_SOFT_TIME_LIMIT"),
    worker_max_tasks_per_child=_int_env("PYW_MAX_TASKS_PER_CHILD"),
    worker_max_memory_per_child=_int_env("PYW_MAX_MEMORY_PER_CHILD"),
)
# [canvas-chord] Redis chord join in a list (RPUSH/LLEN) instead of the ordered ZSET.
if os.environ.get("PYW_RESULT_CHORD_ORDERED") == "0":
    app.conf.result_backend_transport_options = {"result_chord_ordered": False}


# ---- demo.* --------------------------------------------------------------------------------

@app.task(name="demo.add")
def add(x, y):
    return x + y


@app.task(name="demo.mul")
def mul(x, y):
    return x * y


@app.task(name="demo.xsum")
def xsum(numbers):
    return sum(numbers)


@app.task(name="demo.noop")
def noop():
    return None


def _is_word_byte(c):
    return c >= 0x80 or c == 0x5F or 0x30 <= c <= 0x39 or 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A


@app.task(name="demo.wordcount")
def wordcount(text):
    """{word: count}, words = runs of [A-Za-z0-9_] or non-ASCII, ASCII-lowercased."""
    counts = {}
    word = bytearray()
    for c in text.encode("utf-8") + b" ":
        if _is_word_byte(c):
            word.append(c + 32 if 0x41 <= c <= 0x5A else c)
        elif word:
            w = word.decode("utf-8")
            counts[w] = counts.get(w, 0) + 1
            word = bytearray()
    return counts


@app.task(name="demo.fib")
def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def thumbnail_ref(width, height, factor):
    """Box-downscale a synthetic image; FNV-1a over the output pixels (as tasks/demo.c)."""
    ow, oh, n = width // factor, height // factor, factor * factor
    h = 0x811C9DC5
    for oy in range(oh):
        for ox in range(ow):
            s = 0
            for y in range(oy * factor, (oy + 1) * factor):
                for x in range(ox * factor, (ox + 1) * factor):
                    s += (x * 7 + y * 13 + ((x * y) >> 4) + ((x ^ y) & 0x3F)) & 0xFF
            p = (s + n // 2) // n
            h = ((h ^ p) * 0x01000193) & 0xFFFFFFFF
    return {"width": ow, "height": oh, "checksum": h}


@app.task(name="demo.thumbnail")
def thumbnail(width, height, factor):
    return thumbnail_ref(width, height, factor)


@app.task(name="demo.fail")
def fail(message):
    raise ValueError(message)


@app.task(name="demo.sleep")
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@app.task(name="demo.soft_guard")
def soft_guard(seconds):
    """Sleeps; the soft time limit is caught (cleanup) and the task returns normally."""
    from celery.exceptions import SoftTimeLimitExceeded
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return "soft limit"
    return seconds


@app.task(name="demo.spin")
def spin(seconds):
    """Busy loop (only the hard limit stops it in C; Python raises at the soft one too)."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return seconds


def _crash(mode):
    if mode == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif mode == "abort":
        os.abort()
    elif mode == "exit":
        os._exit(1)
    elif mode == "oom":
        os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does
    raise ValueError("unknown crash mode %r" % (mode,))


@app.task(name="demo.crash")
def crash(mode):
    _crash(mode)


@app.task(name="demo.crash_once", bind=True)
def crash_once(self, mode):
    """Crashes unless the message is a redelivery, then returns "survived"."""
    if not self.request.delivery_info.get("redelivered"):
        _crash(mode)
    return "survived"


@app.task(name="demo.getpid")
def getpid():
    return os.getpid()


# ---- t.integration.tasks.* (subset, Celery 5.2 semantics) ----------------------------------

T = "t.integration.tasks."


class ExpectedException(Exception):
    pass


ExpectedException.__module__ = "t.integration.tasks"


def _redis():
    import redis
    return redis.Redis.from_url(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/7"))


@app.task(name=T + "identity")
def identity(x):
    return x


@app.task(name=T + "add")
def t_add(x, y, z=None):
    return x + y + z if z else x + y


@app.task(name=T + "add_not_typed", typing=False)
def add_not_typed(x, y):
    return x + y


@app.task(name=T + "add_ignore_result", ignore_result=True)
def add_ignore_result(x, y):
    return x + y


@app.task(name=T + "raise_error")
def raise_error(*args):
    raise ValueError("deliberate error")


@app.task(name=T + "fail")
def t_fail(*args):
    raise ExpectedException("Task expected to fail", *args)


@app.task(name=T + "delayed_sum")
def delayed_sum(numbers, pause_time=1):
    time.sleep(pause_time)
    return sum(numbers)


@app.task(name=T + "tsum")
def tsum(nums):
    return sum(nums)


@app.task(name=T + "sleeping")
def sleeping(i, **_):
    time.sleep(i)


@app.task(name=T + "print_unicode")
def print_unicode(log_message="hå它 valmuefrø", print_message="hiöäüß"):
    print(print_message)


@app.task(name=T + "write_to_file_and_return_int")
def write_to_file_and_return_int(file_name, i):
    with open(file_name, mode="a", buffering=1) as fh:
        fh.write(str(i) + "\n")
    return i


@app.task(name=T + "redis_echo")
def redis_echo(message, redis_key="redis-echo"):
    _redis().rpush(redis_key, message)


@app.task(name=T + "redis_count")
def redis_count(redis_key="redis-count"):
    _redis().incr(redis_key)


@app.task(name=T + "ids", bind=True)
def ids(self, i):
    return self.request.root_id, self.request.parent_id, i


@app.task(name=T + "collect_ids", bind=True)
def collect_ids(self, res, i):
    return res, (self.request.root_id, self.request.parent_id, i)


@app.task(name=T + "return_priority", bind=True)
def return_priority(self, *_args):
    return "Priority: %s" % self.request.delivery_info["priority"]


@app.task(name="celery.ping")
def ping():
    # Builtin in later Celery versions; celeryc implements it natively.
    return "pong"


# ---- Test-only tasks (tasks/it.c) ------------------------------------------------------------

@app.task(name="it.count_sleep")
def count_sleep(key, seconds=0):
    n = _redis().incr(key)
    if seconds:
        time.sleep(seconds)
    return n


@app.task(name="it.wait_key")  # [blocked] test_blocked.py
def wait_key(key, timeout=60):
    end = time.monotonic() + timeout
    while not _redis().exists(key) and time.monotonic() < end:
        time.sleep(0.05)
    return bool(_redis().exists(key))
# ---- Rate limits and time (tests/integration/test_ratelimit.py, test_time.py) ----------

# PYW_RATE_LIMITS="demo.add=5/s,..." gives the same limits as celeryc's task_rate_limits,
# through Celery's own mechanism (task_annotations).
if os.environ.get("PYW_RATE_LIMITS"):
    app.conf.task_annotations = {
        name.strip(): {"rate_limit": rate.strip()}
        for name, _, rate in (item.partition("=")
                              for item in os.environ["PYW_RATE_LIMITS"].split(","))
        if name.strip()
    }


# The pool child pickles a task's exception for the master: make ExpectedException's
# module (t.integration.tasks, as in Celery's suite) importable by name.
def _register_t_module():
    import sys
    import types
    for name in ("t", "t.integration", "t.integration.tasks"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["t.integration.tasks"].ExpectedException = ExpectedException


_register_t_module()


@app.task(name=T + "retry", bind=True, default_retry_delay=1)
def t_retry(self, return_value=None):
    if return_value:
        attempt = getattr(self, "attempt", 0)
        print("attempt", attempt)
        if attempt >= 3:
            delattr(self, "attempt")
            return return_value
        self.attempt = attempt + 1
    raise self.retry(exc=ExpectedException(), countdown=5)


@app.task(name=T + "retry_once", bind=True, expires=60.0, max_retries=1)
def retry_once(self, *args, expires=60.0, max_retries=1, countdown=0.1):
    if self.request.retries:
        return self.request.retries
    raise self.retry(countdown=countdown, max_retries=max_retries)


@app.task(name=T + "retry_once_priority", bind=True, expires=60.0, max_retries=1)
def retry_once_priority(self, *args, expires=60.0, max_retries=1, countdown=0.1):
    if self.request.retries:
        return self.request.delivery_info["priority"]
    raise self.retry(countdown=countdown, max_retries=max_retries)


class ClassBasedAutoRetryTask(app.Task):
    name = "auto_retry_class_task"
    autoretry_for = (ValueError,)
    retry_kwargs = {"max_retries": 1}
    retry_backoff = True

    def run(self):
        if self.request.retries:
            return self.request.retries
        raise ValueError()


auto_retry_class_task = app.register_task(ClassBasedAutoRetryTask())


class QualifiedAutoRetryTask(ClassBasedAutoRetryTask):
    """celeryc also registers the class under the module-qualified name."""
    name = T + "auto_retry_class_task"


qualified_auto_retry_class_task = app.register_task(QualifiedAutoRetryTask())


# ---- [canvas-exec] Canvas from tasks (tests/integration/test_canvas_exec.py) ----------------

# Tasks that apply canvas without a queue publish to task_default_queue: the tests point it
# at the worker's own queue (celeryc: --default-queue).
if os.environ.get("PYW_DEFAULT_QUEUE"):
    app.conf.task_default_queue = os.environ["PYW_DEFAULT_QUEUE"]
app.conf.task_inherit_parent_priority = os.environ.get("PYW_INHERIT_PARENT_PRIORITY") == "1"


@app.task(name="demo.progress", bind=True)
def progress(self, steps, delay=0.2):
    for i in range(steps):
        self.update_state(state="PROGRESS", meta={"current": i, "total": steps})
        time.sleep(delay)
    return {"current": steps, "total": steps}


@app.task(name=T + "errback_old_style")
def errback_old_style(request_id):
    _redis().incr(request_id)
    return request_id


@app.task(name=T + "errback_new_style")
def errback_new_style(request, exc, tb):
    _redis().incr(request.id)
    return request.id


@app.task(name=T + "chain_add")
def chain_add(x, y):
    (t_add.s(x, x) | t_add.s(y)).apply_async()


@app.task(name=T + "chord_add")
def chord_add(x, y):
    from celery import chord
    chord(t_add.s(x, x), t_add.s(y)).apply_async()


@app.task(name=T + "build_chain_inside_task", bind=True)
def build_chain_inside_task(self):
    from celery import group
    test_chain = (t_add.s(1, 1) | t_add.s(2) | group(t_add.s(3), t_add.s(4)) | t_add.s(5))
    result = test_chain()
    return result
