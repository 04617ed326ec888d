#!/usr/bin/env python3
"""Capture what a real Python Celery 5.2.6 worker publishes for canvas shapes no shared
fixture covers, as test_canvas.c cases (../py-<name>.json). Not a test; rerun by hand:

  scripts/services.sh start /tmp/svc-x; set -a; . /tmp/svc-x/env; set +a
  /usr/bin/python3 tests/unit/data/canvas/capture/capture.py

It starts capture_app.py's worker on queue cap_in, sends each workflow so that only its
first task(s) run (on cap_in) and everything the worker publishes lands in the unconsumed
queue "celery", then reads those messages back with py-amqp.
"""
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone

import amqp
import redis

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.dirname(HERE)
BROKER = os.environ["CELERYC_TEST_AMQP_URL"]
BACKEND = os.environ["CELERYC_TEST_REDIS_URL"]
os.environ["CELERY_BROKER_URL"] = BROKER
os.environ["CELERY_RESULT_BACKEND"] = BACKEND
sys.path.insert(0, HERE)

from celery import chain, chord, group, signals  # noqa: E402
from capture_app import add, app, build, echo, fail, mul, xsum  # noqa: E402

R = redis.Redis.from_url(BACKEND)
sent = []


@signals.before_task_publish.connect
def _rec(headers=None, routing_key=None, **kw):
    if routing_key == "cap_in":
        sent.append(headers["id"])


def amqp_channel():
    from urllib.parse import urlparse, unquote
    u = urlparse(BROKER)
    conn = amqp.Connection(host=f"{u.hostname}:{u.port}", userid=unquote(u.username or "guest"),
                           password=unquote(u.password or "guest"),
                           virtual_host=unquote(u.path[1:]) or "/")
    conn.connect()
    return conn, conn.channel()


def drain(ch):
    out = []
    while True:
        m = ch.basic_get("celery", no_ack=True)
        if m is None:
            return out
        p = m.properties
        props = {k: p[k] for k in ("content_type", "content_encoding", "delivery_mode",
                                   "priority", "correlation_id", "reply_to", "expiration")
                 if k in p}
        out.append({"kind": "publish", "exchange": m.delivery_info["exchange"],
                    "routing_key": m.delivery_info["routing_key"], "properties": props,
                    "headers": p.get("application_headers"),
                    "body_raw": m.body.decode() if isinstance(m.body, bytes) else m.body})


def wait_done(ids, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        metas = [R.get("celery-task-meta-" + i) for i in ids]
        if all(m and json.loads(m)["status"] in ("SUCCESS", "FAILURE") for m in metas):
            time.sleep(0.5)
            return [json.loads(m) for m in metas]
        time.sleep(0.1)
    raise SystemExit(f"timeout waiting for {ids}")


INHERIT = os.environ.get("CAP_INHERIT") == "1"


def ctx_of(req, now_us=0):
    prio = req["priority"] if INHERIT and req["priority"] is not None else -1
    return {"parent_id": req["id"], "root_id": req["root_id"], "origin": req["origin"],
            "reply_to": req["reply_to"], "default_queue": "celery", "priority": prio,
            "now_us": now_us}


def add_chord_sizes(steps):
    """Celery sets the chord size (SETEX celery-taskset-meta-<gid>.s) right before it applies
    the last header member (group._apply_tasks): insert that step before the last message
    that belongs to the group (its header, or for a chain member the group_id inside its
    embedded chain)."""
    for key in sorted(R.keys("celery-taskset-meta-*.s")):
        gid = key.decode()[len("celery-taskset-meta-"):-2]
        idx = [i for i, s in enumerate(steps) if s.get("kind") == "publish" and
               (s["headers"].get("group") == gid or gid in s["body_raw"])]
        if idx:
            steps.insert(idx[-1], {"kind": "chord_size", "group_id": gid,
                                   "chord_size": int(R.get(key))})
    # GroupResult.save() by the Redis backend's apply_chord (a header member whose result is
    # a group): before the chord's header is published
    for key in sorted(R.keys("celery-taskset-meta-*")):
        k = key.decode()
        if k.endswith((".s", ".j", ".t")):
            continue
        gid = k[len("celery-taskset-meta-"):]
        idx = [i for i, s in enumerate(steps) if s.get("kind") == "publish" and
               (s["headers"].get("group") == gid or gid in s["body_raw"])]
        steps.insert(idx[0] if idx else len(steps),
                     {"kind": "save_group", "group_id": gid,
                      "group_result": json.loads(R.get(key))["result"]})
    return steps


def iso_us(s):
    d = datetime.fromisoformat(s)
    return int(d.timestamp()) * 1000000 + d.microsecond


SCENARIOS = {}


def scenario(fn):
    SCENARIOS[fn.__name__] = fn
    return fn


@scenario
def callbacks_several():
    """add(1,1) with link=[mul.s(10), mul.s(20)]: callbacks applied as one group"""
    add.apply_async((1, 1), queue="cap_in", link=[mul.s(10), mul.s(20)])


@scenario
def callback_group():
    """add(1,1) with link=group(mul.s(2), mul.s(3))"""
    add.apply_async((1, 1), queue="cap_in", link=group(mul.s(2), mul.s(3)))


@scenario
def callbacks_group_and_task():
    """add(1,1) with link=[group(mul.s(2), mul.s(3)), echo.s(), mul.s(4)]"""
    add.apply_async((1, 1), queue="cap_in", link=[group(mul.s(2), mul.s(3)), echo.s(), mul.s(4)])


@scenario
def callback_chord():
    """add(1,1) with link=chord([mul.s(2), mul.s(3)], xsum.s())"""
    add.apply_async((1, 1), queue="cap_in", link=chord([mul.s(2), mul.s(3)], xsum.s()))


@scenario
def chain_group_middle():
    """chain(add.s(1,1), group(mul.s(2), mul.s(3)), xsum.s()): the client made a chord"""
    chain(add.s(1, 1).set(queue="cap_in"), group(mul.s(2), mul.s(3)), xsum.s()).apply_async()


@scenario
def chain_group_middle_more():
    """chain(add, group(mul.s(2), mul.s(3)), xsum.s(), mul.s(10)): chord body then the rest"""
    chain(add.s(1, 1).set(queue="cap_in"), group(mul.s(2), mul.s(3)), xsum.s(),
          mul.s(10)).apply_async()


@scenario
def chain_ending_chord():
    """chain(add.s(1,1), chord([mul.s(2), mul.s(3)], xsum.s()))"""
    chain(add.s(1, 1).set(queue="cap_in"), chord([mul.s(2), mul.s(3)], xsum.s())).apply_async()


@scenario
def chord_of_chains():
    """chain(add.s(1,1), chord([mul.s(2)|mul.s(3), mul.s(4)|mul.s(5)], xsum.s()))"""
    chain(add.s(1, 1).set(queue="cap_in"),
          chord([mul.s(2) | mul.s(3), mul.s(4) | mul.s(5)], xsum.s())).apply_async()


@scenario
def chain_ending_group():
    """chain(add.s(1,1), group(mul.s(2), mul.s(3)))"""
    chain(add.s(1, 1).set(queue="cap_in"), group(mul.s(2), mul.s(3))).apply_async()


@scenario
def nested_groups():
    """chain(add.s(1,1), group(mul.s(2), group(mul.s(3), mul.s(4))))"""
    chain(add.s(1, 1).set(queue="cap_in"),
          group(mul.s(2), group(mul.s(3), mul.s(4)))).apply_async()


@scenario
def chain_step_is_chain_group():
    """chain(add.s(1,1), mul.s(2), group(mul.s(3) | mul.s(4), echo.s()))"""
    chain(add.s(1, 1).set(queue="cap_in"), mul.s(2),
          group(mul.s(3) | mul.s(4), echo.s())).apply_async()


@scenario
def immutable():
    """chain(add.s(1,1), mul.si(5, 6)) with link=echo.si('x') on the first task"""
    chain(add.s(1, 1).set(queue="cap_in", link=echo.si("x")), mul.si(5, 6)).apply_async()


@scenario
def links_in_options():
    """chain(add.s(1,1), mul.s(2) with link=echo.s(), link_error=echo.si('e'))"""
    chain(add.s(1, 1).set(queue="cap_in"),
          mul.s(2).set(link=echo.s(), link_error=echo.si("e"))).apply_async()


@scenario
def chain_link_error():
    """chain(add.s(1,1), mul.s(2), mul.s(3)).on_error(echo.s()): link_error on each step"""
    chain(add.s(1, 1).set(queue="cap_in"), mul.s(2), mul.s(3)).on_error(echo.s()).apply_async()


@scenario
def unknown_options():
    """chain(add.s(1,1), mul.s(2), mul.s(3)), unknown options on both later steps: dropped
    from the message applied now, carried in the embedded chain"""
    chain(add.s(1, 1).set(queue="cap_in"),
          mul.s(2).set(custom_opt={"a": [1, 2]}, x_stamp="v"),
          mul.s(3).set(custom_opt="kept", x_stamp="w")).apply_async()


@scenario
def options_timing():
    """chain(add.s(1,1), mul.s(2) with countdown=10, expires=60, priority=3, time limits)"""
    chain(add.s(1, 1).set(queue="cap_in"),
          mul.s(2).set(countdown=10, expires=60, priority=3, time_limit=30,
                       soft_time_limit=20, shadow="shadowed")).apply_async()


@scenario
def routed_step():
    """chain(add.s(1,1), mul.s(2) with queue='other', headers={'x-custom': 'h'})"""
    chain(add.s(1, 1).set(queue="cap_in"),
          mul.s(2).set(queue="celery", headers={"x-custom": "h"}, ignore_result=True)
          ).apply_async()


@scenario
def errbacks_several():
    """fail() with link_error=[echo.s(), echo.si('z')]"""
    fail.apply_async(queue="cap_in", link_error=[echo.s(), echo.si("z")])


@scenario
def links_each_step():
    """chain(add, mul.s(2), mul.s(3)) with link and link_error on every step"""
    chain(add.s(1, 1).set(queue="cap_in", link=echo.s(), link_error=echo.si("e0")),
          mul.s(2).set(link=echo.s(), link_error=echo.si("e1")),
          mul.s(3).set(link=echo.s(), link_error=echo.si("e2"))).apply_async()


@scenario
def group_of_chords():
    """chain(add, group(chord([mul.s(2), mul.s(3)], xsum.s()), chord([mul.s(4)], xsum.s())))"""
    chain(add.s(1, 1).set(queue="cap_in"),
          group(chord([mul.s(2), mul.s(3)], xsum.s()), chord([mul.s(4), mul.s(5)], xsum.s()))
          ).apply_async()


@scenario
def group_of_chains_callback():
    """add(1,1) with link=group(mul.s(2) | mul.s(3), mul.s(4) | echo.s())"""
    add.apply_async((1, 1), queue="cap_in",
                    link=group(mul.s(2) | mul.s(3), mul.s(4) | echo.s()))


@scenario
def chord_immutable_body():
    """chain(add, chord([mul.s(2), mul.si(3, 3)], echo.si('done')))"""
    chain(add.s(1, 1).set(queue="cap_in"),
          chord([mul.s(2), mul.si(3, 3)], echo.si("done"))).apply_async()


@scenario
def chain_in_group_in_chain():
    """chain(add, group(mul.s(2) | mul.s(3), mul.s(4)), xsum.s(), mul.s(5))"""
    chain(add.s(1, 1).set(queue="cap_in"), group(mul.s(2) | mul.s(3), mul.s(4)), xsum.s(),
          mul.s(5)).apply_async()


@scenario
def nested_chord_in_chord():
    """chain(add, chord([chord([mul.s(2), mul.s(3)], xsum.s()), mul.s(4)], xsum.s()))"""
    chain(add.s(1, 1).set(queue="cap_in"),
          chord([chord([mul.s(2), mul.s(3)], xsum.s()), mul.s(4)], xsum.s())).apply_async()


@scenario
def inherit_priority_chain():
    """CAP_INHERIT=1 (task_inherit_parent_priority): chain(add priority=5, mul.s(2), mul.s(3))
    with link=echo.s() and a chord step"""
    chain(add.s(1, 1).set(queue="cap_in", priority=5, link=echo.s()), mul.s(2),
          chord([mul.s(3), mul.s(4)], xsum.s())).apply_async()


@scenario
def inherit_priority_built():
    """CAP_INHERIT=1: a task with priority 7 builds group(add.s(1,1), mul.s(2,2))"""
    build.apply_async(("group",), queue="cap_in", priority=7)


@scenario
def chord_header_complex():
    """chain(add, chord([mul.s(2) | group(mul.s(3), mul.s(4)), mul.s(5)], xsum.s())): a header
    member's result is a group, so the Redis backend saves the GroupResult"""
    chain(add.s(1, 1).set(queue="cap_in"),
          chord([mul.s(2) | group(mul.s(3), mul.s(4)), mul.s(5)], xsum.s())).apply_async()


@scenario
def chord_body_fired():
    """chord([add.s(1,1), add.s(2,2)] on cap_in, xsum.s() | mul.s(2)): body fired by a worker"""
    chord([add.s(1, 1).set(queue="cap_in"), add.s(2, 2).set(queue="cap_in")],
          chain(xsum.s(), mul.s(2))).apply_async()


for _kind in ("chain_group_middle", "chord", "group", "task_countdown"):
    def _built(kind=_kind):
        build.apply_async((kind,), queue="cap_in")
    _built.__doc__ = f"a task builds {_kind} and sends it (cc_task_send's Python twin)"
    SCENARIOS["built_" + _kind] = _built


def run(name, fn, ch):
    del sent[:]
    ch.queue_purge("celery")
    for k in R.keys("celery-taskset-meta-*"):
        R.delete(k)
    fn()
    metas = wait_done(list(sent))
    msgs = drain(ch)
    n = 0
    for tid, meta in zip(sent, metas):
        req = json.loads(R.get("cap:req:" + tid))
        ids = json.loads(R.get("cap:ids:" + tid) or "[]")
        steps = [m for m in msgs if m["headers"].get("parent_id") == tid]
        now_us = 0
        for s in steps:
            if s["headers"].get("eta"):
                cd = 3 if name.startswith("built_") else 10
                now_us = iso_us(s["headers"]["eta"]) - cd * 1000000
        case = {"description": fn.__doc__, "source": "capture.py " + name,
                "ctx": ctx_of(req, now_us), "new_ids": ids}
        built = R.get("cap:built:" + tid)
        if built:
            case.update(call="apply", sig=json.loads(built), prepend=None, extra=None,
                        expect_children=meta["children"])
        elif meta["status"] == "FAILURE":
            case.update(call="on_failure", errbacks=req["embed"]["errbacks"], failed_id=tid)
        elif req["embed"]["chord"] and steps:
            # this member completed the chord: the body it fired
            res = [json.loads(R.get("celery-task-meta-" + t))["result"] for t in sent]
            case.update(call="chord_body", body=req["embed"]["chord"], results=res)
        else:
            case.update(call="on_success", embed=req["embed"], retval=meta["result"],
                        expect_children=meta["children"])
        case["expect_steps"] = add_chord_sizes(steps)
        suffix = f"-{n}" if len(sent) > 1 else ""
        with open(os.path.join(OUT, f"py-{name.replace('_', '-')}{suffix}.json"), "w") as f:
            json.dump(case, f, indent=1)
            f.write("\n")
        n += 1
    print(name, [len(json.loads(open(os.path.join(OUT, f"py-{name.replace('_', '-')}"
                                                      f"{'-%d' % i if len(sent) > 1 else ''}.json"
                                                      )).read())["expect_steps"])
                 for i in range(n)])


def main():
    only = sys.argv[1:]
    env = dict(os.environ)
    w = subprocess.Popen([sys.executable, "-m", "celery", "-A", "capture_app", "worker",
                          "-P", "solo", "-Q", "cap_in", "--without-gossip", "--without-mingle",
                          "--without-heartbeat", "-l", "warning"], cwd=HERE, env=env)
    try:
        time.sleep(4)
        conn, ch = amqp_channel()
        ch.queue_declare("celery", durable=True, auto_delete=False)
        for name, fn in SCENARIOS.items():
            if not only or name in only:
                run(name, fn, ch)
        conn.close()
    finally:
        w.terminate()
        w.wait(20)


if __name__ == "__main__":
    main()
