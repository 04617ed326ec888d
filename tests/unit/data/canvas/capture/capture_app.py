"""Python Celery 5.2.6 worker app for capture.py (not a test): records what a real worker
publishes when it moves a canvas forward.

The worker consumes only queue cap_in; every task it publishes goes to the default queue
"celery", which nobody consumes, so capture.py can read the messages back byte for byte.
uuid() in celery.canvas / celery.app.base is replaced by a counter (the ids handed out are
recorded per task), and each cap_in request is recorded in Redis (cap:req:<id>): its embed
as the worker received it, root id, the worker's thread_oid (reply_to) and origin.
"""
import json
import os

import redis
from celery import Celery, signals
from celery.utils.nodenames import anon_nodename
import celery.app.base
import celery.canvas

app = Celery("capture_app", broker=os.environ["CELERY_BROKER_URL"],
             backend=os.environ["CELERY_RESULT_BACKEND"])
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                task_inherit_parent_priority=os.environ.get("CAP_INHERIT") == "1")
R = redis.Redis.from_url(os.environ["CELERY_RESULT_BACKEND"])

_ids = []
_n = [0]


def _uuid():
    _n[0] += 1
    u = "%08x-cafe-4000-8000-%012d" % (os.getpid() & 0xffffffff, _n[0])
    _ids.append(u)
    return u


celery.canvas.uuid = _uuid
celery.app.base.uuid = _uuid


@signals.task_prerun.connect
def _prerun(task_id=None, task=None, **kw):
    req = task.request
    if (req.delivery_info or {}).get("routing_key") != "cap_in":
        return
    del _ids[:]
    rec = {"id": req.id, "root_id": req.root_id, "parent_id": req.parent_id,
           "group": req.group, "priority": (req.delivery_info or {}).get("priority"),
           "reply_to": app.thread_oid, "origin": anon_nodename(),
           "embed": {"callbacks": req.callbacks, "errbacks": req.errbacks,
                     "chain": req.chain, "chord": req.chord}}
    R.set("cap:req:" + req.id, json.dumps(rec))


@signals.task_postrun.connect
def _postrun(task_id=None, task=None, **kw):
    if (task.request.delivery_info or {}).get("routing_key") != "cap_in":
        return
    R.set("cap:ids:" + task_id, json.dumps(list(_ids)))


@app.task(name="app.add")
def add(x, y):
    return x + y


@app.task(name="app.mul")
def mul(x, y):
    return x * y


@app.task(name="app.xsum")
def xsum(numbers):
    return sum(numbers)


@app.task(name="app.echo")
def echo(x):
    return x


@app.task(name="app.fail")
def fail():
    raise ValueError("boom")


@app.task(name="app.build", bind=True)
def build(self, kind):
    """Build and send a workflow from inside a task (what a C task does with cc_task_send)."""
    from celery import chain, chord, group
    if kind == "chain_group_middle":
        wf = chain(add.s(2, 2), group(mul.s(2), mul.s(3)), xsum.s())
    elif kind == "chord":
        wf = chord([add.s(1, 1), add.s(2, 2)], xsum.s())
    elif kind == "group":
        wf = group(add.s(1, 1), mul.s(2, 2))
    else:
        wf = add.s(5, 5).set(countdown=3)
    R.set("cap:built:" + self.request.id, json.dumps(wf))
    wf.apply_async()
    return kind
