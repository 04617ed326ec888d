"""Task failures re-raise in the Python client with the right type and message; unknown task
names behave as in Celery (NotRegistered stored, message rejected, worker carries on)."""
import json

import pytest
from celery.exceptions import NotRegistered

from conftest import TIMEOUT, queue_depth, wait_for

T = "t.integration.tasks."


def test_demo_fail_raises_valueerror(app, worker, rds):
    r = app.send_task("demo.fail", args=["boom"], queue=worker.queue)
    with pytest.raises(ValueError) as ei:
        r.get(timeout=TIMEOUT)
    assert type(ei.value) is ValueError
    assert str(ei.value) == "boom"
    assert r.state == "FAILURE"
    meta = json.loads(rds.get("celery-task-meta-" + r.id))
    assert meta["result"] == {"exc_type": "ValueError", "exc_message": ["boom"],
                              "exc_module": "builtins"}
    assert isinstance(meta["traceback"], str) and "ValueError" in meta["traceback"]


def test_integration_fail_expected_exception(app, worker, rds):
    r = app.send_task(T + "fail", queue=worker.queue)
    with pytest.raises(Exception) as ei:
        r.get(timeout=TIMEOUT)
    # t.integration.tasks is not importable here: Celery synthesizes the class by name.
    assert type(ei.value).__name__ == "ExpectedException"
    assert str(ei.value) == "Task expected to fail"
    meta = json.loads(rds.get("celery-task-meta-" + r.id))
    assert meta["result"]["exc_module"] == "t.integration.tasks"
    assert meta["result"]["exc_message"] == ["Task expected to fail"]


def test_raise_error(app, worker):
    r = app.send_task(T + "raise_error", queue=worker.queue)
    with pytest.raises(ValueError) as ei:
        r.get(timeout=TIMEOUT)
    assert str(ei.value) == "deliberate error"


@pytest.mark.parametrize("name,args,kwargs,message", [
    ("demo.add", [1], {}, "add() missing 1 required positional argument: 'y'"),
    ("demo.add", [1, 2, 3], {}, "add() takes 2 positional arguments but 3 were given"),
    ("demo.add", [1, 2], {"z": 1}, "add() got an unexpected keyword argument 'z'"),
    ("demo.add", [1], {"x": 2}, "add() got multiple values for argument 'x'"),
    ("demo.noop", [1], {}, "noop() takes 0 positional arguments but 1 was given"),
])
def test_wrong_arity_raises_typeerror(app, worker, name, args, kwargs, message):
    r = app.send_task(name, args=args, kwargs=kwargs, queue=worker.queue)
    with pytest.raises(TypeError) as ei:
        r.get(timeout=TIMEOUT)
    assert str(ei.value) == message


def test_bad_argument_type_fails_cleanly(app, worker):
    r = app.send_task("demo.add", args=[1, "a"], queue=worker.queue)
    with pytest.raises(TypeError):
        r.get(timeout=TIMEOUT)
    assert app.send_task("demo.add", args=[1, 2], queue=worker.queue).get(timeout=TIMEOUT) == 3


def test_unknown_task_notregistered(app, worker, rds, amqp_conn):
    r = app.send_task("app.nope", args=[1], queue=worker.queue)
    with pytest.raises(NotRegistered) as ei:
        r.get(timeout=TIMEOUT)
    assert "app.nope" in str(ei.value)
    meta = json.loads(rds.get("celery-task-meta-" + r.id))
    assert meta["status"] == "FAILURE"
    assert meta["result"]["exc_type"] == "NotRegistered"
    assert meta["result"]["exc_module"] == "celery.exceptions"
    assert meta["result"]["exc_message"] == ["app.nope"]
    worker.wait_log(r"Received unregistered task of type '?app\.nope", 5)
    # Rejected, not requeued; the worker carries on.
    assert app.send_task("demo.add", args=[2, 2], queue=worker.queue).get(timeout=TIMEOUT) == 4
    wait_for(lambda: queue_depth(amqp_conn, worker.queue) == 0, 5, "queue empty")
    assert worker.proc.poll() is None
