#!/usr/bin/env python3
"""Turn the shared Celery fixtures that involve canvas into test_canvas.c cases.

Each case says which proto/canvas.c entry point to call, with what (the request's embed, the
result, the ids new_id hands out in order) and what Celery published: every message with
exchange, routing key, properties, headers and the exact body bytes, plus chord-size steps
and the parent's "children". Run from anywhere: writes shared-*.json next to this file.
"""
import json
import os
import sys

FX = os.environ.get(
    "CC_FIXTURES_DIR",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "fixtures"))
OUT = os.path.dirname(os.path.abspath(__file__))


def load(name):
    with open(os.path.join(FX, name)) as f:
        return json.load(f)


def msg_step(m):
    return {"kind": "publish", "exchange": m["exchange"],
            "routing_key": m.get("routing_key") or m["routing_keys"][0],
            "properties": m["properties"], "headers": m["headers"], "body_raw": m["body_raw"]}


def ctx(parent, root, origin, reply_to):
    return {"parent_id": parent, "root_id": root, "origin": origin, "reply_to": reply_to,
            "default_queue": "celery", "priority": -1, "now_us": 0}


def sig(task, args, options=None, immutable=False):
    return {"task": task, "args": args, "kwargs": {}, "options": options or {},
            "subtask_type": None, "immutable": immutable}


def embed(m):
    return json.loads(m["body_raw"])[2]


def write(name, case):
    case["source"] = "shared/fixtures (see description)"
    with open(os.path.join(OUT, name), "w") as f:
        json.dump(case, f, indent=1)
        f.write("\n")


def main():
    # chain: client message, then the two continuations the worker published
    d = load("task-v2-chain-continuations.json")
    m = d["messages"]
    ids = [m[2]["headers"]["id"], m[1]["headers"]["id"], m[0]["headers"]["id"]]
    write("shared-chain-client.json", {
        "description": "client: chain(add.s(1,2), add.s(3), add.s(4)).apply_async()",
        "call": "apply",
        "ctx": ctx(None, None, m[0]["headers"]["origin"], m[0]["properties"]["reply_to"]),
        "sig": {"task": "celery.chain", "args": [], "kwargs": {"tasks": [
            sig("app.add", [1, 2]), sig("app.add", [3]), sig("app.add", [4])]},
            "options": {}, "subtask_type": "chain", "immutable": False},
        "new_ids": ids, "expect_steps": [msg_step(m[0])],
        "expect_children": [[[m[0]["headers"]["id"], None], None]]})
    for i, retval in ((1, 3), (2, 6)):
        parent = m[i - 1]
        write(f"shared-chain-step{i}.json", {
            "description": f"worker: chain continuation {i} after {parent['headers']['argsrepr']}",
            "call": "on_success",
            "ctx": ctx(parent["headers"]["id"], parent["headers"]["root_id"],
                       m[i]["headers"]["origin"], "worker-oid-unused"),
            "embed": embed(parent), "retval": retval, "new_ids": [],
            "expect_steps": [msg_step(m[i])],
            "expect_children": [[[m[i]["headers"]["id"], None], None]]})

    # link callback
    cb = load("task-v2-link-callback-published.json")["messages"][0]
    meta = load("redis-result-link-parent.json")["value"]
    write("shared-link-callback.json", {
        "description": "worker: add(1,1) succeeded with link=mul.s(10)",
        "call": "on_success",
        "ctx": ctx(cb["headers"]["parent_id"], cb["headers"]["root_id"], cb["headers"]["origin"],
                   cb["properties"]["reply_to"]),
        "embed": {"callbacks": [sig("app.mul", [10])], "errbacks": None, "chain": None,
                  "chord": None},
        "retval": 2, "new_ids": [cb["headers"]["id"]], "expect_steps": [msg_step(cb)],
        "expect_children": meta["children"]})

    # errback
    eb = load("task-v2-errback-published.json")["messages"][0]
    write("shared-errback.json", {
        "description": "worker: fail() raised, link_error=echo.s() (old-style, as a group)",
        "call": "on_failure",
        "ctx": ctx(eb["headers"]["parent_id"], eb["headers"]["root_id"], eb["headers"]["origin"],
                   eb["properties"]["reply_to"]),
        "errbacks": [sig("app.echo", [])], "failed_id": eb["headers"]["parent_id"],
        "new_ids": [eb["headers"]["group"], eb["headers"]["id"]],
        "expect_steps": [msg_step(eb)]})

    # client link / link_error
    ln = load("task-v2-link.json")
    body = embed(ln)
    write("shared-link-client.json", {
        "description": "client: add.apply_async((1, 1), link=mul.s(10), link_error=echo.si('err'))",
        "call": "apply",
        "ctx": ctx(None, None, ln["headers"]["origin"], ln["properties"]["reply_to"]),
        "sig": sig("app.add", []), "prepend": [1, 1],
        "extra": {"task_id": ln["headers"]["id"], "link": body["callbacks"][0],
                  "link_error": body["errbacks"][0]},
        "new_ids": [], "expect_steps": [msg_step(ln)]})

    # client group
    g = load("task-v2-group.json")["messages"]
    gid = g[0]["headers"]["group"]
    for x in g:
        x.setdefault("exchange", "")
        x.setdefault("routing_key", "celery")
    write("shared-group-client.json", {
        "description": "client: group(add.s(i, i) for i in range(3)).apply_async()",
        "call": "apply",
        "ctx": ctx(None, None, g[0]["headers"]["origin"], g[0]["properties"]["reply_to"]),
        "sig": {"task": "celery.group", "args": [], "kwargs": {"tasks": [
            sig("app.add", [i, i]) for i in range(3)]}, "options": {},
            "subtask_type": "group", "immutable": False},
        "new_ids": [gid] + [x["headers"]["id"] for x in g],
        "expect_steps": [msg_step(x) for x in g],
        "expect_children": [[[gid, None], [[[x["headers"]["id"], None], None] for x in g]]]})

    # client chord (redis backend) + the body the worker fired
    rc = load("redis-chord.json")
    h = rc["messages"]
    gid = h[0]["headers"]["group"]
    body_sig = embed(h[0])["chord"]
    write("shared-chord-client.json", {
        "description": "client: chord([add.s(1,1), add.s(2,2)], xsum.s()).apply_async()",
        "call": "apply",
        "ctx": ctx(None, None, h[0]["headers"]["origin"], h[0]["properties"]["reply_to"]),
        "sig": {"task": "celery.chord", "args": [], "kwargs": {
            "kwargs": {}, "header": {"task": "celery.group", "args": [], "kwargs": {"tasks": [
                sig("app.add", [1, 1]), sig("app.add", [2, 2])]}, "options": {},
                "subtask_type": "group", "immutable": False},
            "body": sig("app.xsum", [])}, "options": {}, "subtask_type": "chord",
            "immutable": False},
        "new_ids": [gid, body_sig["options"]["task_id"], h[0]["headers"]["id"],
                    h[1]["headers"]["id"], "ffffffff-ffff-4fff-bfff-ffffffffffff"],
        "expect_steps": [msg_step(h[0]), {"kind": "chord_size", "group_id": gid,
                                          "chord_size": 2}, msg_step(h[1])],
        "expect_children": [[[gid, None], [[[x["headers"]["id"], None], None] for x in h[:2]]]]})
    write("shared-chord-body.json", {
        "description": "worker: the header member that completed the chord fires the body",
        "call": "chord_body",
        "ctx": ctx(h[2]["headers"]["parent_id"], h[2]["headers"]["root_id"],
                   h[2]["headers"]["origin"], "worker-oid-unused"),
        "body": body_sig, "results": [2, 4], "new_ids": [],
        "expect_steps": [msg_step(h[2])]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
