#!/usr/bin/python3
"""The Python baseline of the statistics indexer benchmark (bench/stats.py): what a
straightforward Python indexer of the same events does, with the same guarantees and the same
tables as celeryc's stats.index_events (tasks/stats.c; the contract is /work/issue7-plan.md,
the event rules are proto/statsevent.h):

  - kombu / py-amqp: the same topology (exchange `events` direct durable, queue
    `stats-<type>` durable without arguments, bound with `<type>`, dead-letter queue
    `stats-<type>.dead`), basic.qos(prefetch = min(2 x commit_every, 65535, batch_size),
    per consumer, as celeryc's indexer sets it),
    basic.consume(no_ack=False), one multiple-ack per chunk, after its COMMIT;
  - json.loads + datetime.fromisoformat for each event; visitor key, visitor hash and event id
    with hmac/hashlib exactly as the header says (HMAC-SHA256 with the salt of the event's UTC
    day, truncated to 16 bytes; explicit ids SHA-256 without salt); robots by a
    case-insensitive substring test against the list (one regex);
  - psycopg2: per chunk of commit_every events, the day salts (INSERT .. ON CONFLICT DO
    NOTHING, then SELECT, cached), then one transaction: bookmark row FOR UPDATE, then the
    statement tasks/stats.c sends (the chunk's events ON CONFLICT (event_id) DO NOTHING, and
    from their RETURNING rows the new unique visitors, the stats_daily upserts and the
    bookmark), its VALUES list built by execute_values; malformed events dead-lettered with
    publisher confirms before the COMMIT.

    stats_py.py --amqp URL --db URL --type record-view [--batch-size N] [--commit-every 5000]
                [--window 30] [--retention-days 30] [--robots-file F] [--idle-timeout 1.0]

Prints one JSON line: the same counters as celeryc's run summary, plus cpu_s (this process's
user+sys over the run, from just before connecting to just after the last commit) and
elapsed_s over the same span.
"""
import argparse
import datetime
import hashlib
import hmac
import json
import os
import re
import resource
import socket
import sys
import time

import amqp
import psycopg2
import psycopg2.extras

UTC = datetime.timezone.utc
EPOCH = datetime.date(1970, 1, 1)
FIELD_MAX = 1024


class Malformed(Exception):
    pass


def cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def load_robots(path):
    pats = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                pats.append(line.lower())
    return pats


def text_field(d, name, required=False):
    v = d.get(name)
    if v is None:
        if required:
            raise Malformed("missing field '%s'" % name)
        return None
    if name == "user_id" and isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str):
        raise Malformed("field '%s' is not a string" % name)
    if len(v.encode("utf-8")) > FIELD_MAX:
        raise Malformed("field '%s' longer than %d bytes" % (name, FIELD_MAX))
    return v


def parse_event(body, event_type, now, oldest_day):
    """(type, object_id, unique_id, visitor_key, user_agent, ts datetime UTC) or Malformed."""
    try:
        d = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise Malformed("bad JSON: %s" % e)
    if not isinstance(d, dict):
        raise Malformed("not a JSON object")
    ts_text = text_field(d, "timestamp", True)
    etype = text_field(d, "type", True)
    obj = text_field(d, "object_id", True)
    try:
        ts = datetime.datetime.fromisoformat(ts_text)
    except ValueError:
        raise Malformed("'timestamp' is not ISO-8601: %s" % json.dumps(ts_text))
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    if etype != event_type:
        raise Malformed("type '%s' on the queue of '%s'" % (etype, event_type))
    uid, sid, ip = (text_field(d, "user_id"), text_field(d, "session_id"),
                    text_field(d, "ip_address"))
    ua = text_field(d, "user_agent")
    if uid is not None:
        vkey = "u:" + uid
    elif sid is not None:
        vkey = "s:" + sid
    elif ip is not None:
        vkey = "a:%s|%s" % (ip, ua or "")
    else:
        raise Malformed("no visitor field (user_id, session_id or ip_address)")
    if ts.date() < oldest_day:
        raise Malformed("older than the salt retention")
    if ts > now + datetime.timedelta(days=1):
        raise Malformed("in the future")
    return etype, obj, text_field(d, "unique_id"), vkey, ua, ts


class Indexer:
    def __init__(self, opt):
        self.opt = opt
        self.type = opt.type
        self.queue = "stats-" + opt.type
        self.dlq = self.queue + ".dead"
        # one alternation of the escaped patterns (what counter-robots does), on the lower-cased
        # user agent
        pats = load_robots(opt.robots_file) if opt.robots_file else []
        self.robots = re.compile("|".join(map(re.escape, pats))) if pats else None
        self.salts = {}  # date -> bytes
        self.c = dict(read=0, inserted=0, duplicates=0, robots=0, errors=0, dead_lettered=0,
                      chunks=0, aggregated_keys=0, bookmark=0)
        self.oldest_ts = None

    # -- Postgres --

    def salts_for(self, days):
        need = sorted(d for d in days if d not in self.salts)
        if not need:
            return
        with self.db.cursor() as cur:
            psycopg2.extras.execute_values(
                cur, "INSERT INTO celeryc.stats_salts (day, salt) VALUES %s "
                "ON CONFLICT (day) DO NOTHING", [(d, os.urandom(32)) for d in need])
            cur.execute("SELECT day, salt FROM celeryc.stats_salts WHERE day = ANY(%s)",
                        (need,))
            for day, salt in cur.fetchall():
                self.salts[day] = bytes(salt)
        self.db.commit()

    def is_robot(self, ua):
        if not ua or self.robots is None:
            return False
        return self.robots.search(ua.lower()) is not None

    def flush(self, msgs):
        """One chunk: msgs = [py-amqp Message]; commit, then ack them all."""
        if not msgs:
            return
        now = datetime.datetime.now(UTC)
        oldest_day = now.date() - datetime.timedelta(days=self.opt.retention_days)
        parsed, bad = [], []
        for m in msgs:
            try:
                parsed.append(parse_event(m.body, self.type, now, oldest_day))
            except Malformed as e:
                bad.append((m, str(e)))
        self.salts_for({p[5].date() for p in parsed})
        w = self.opt.window
        rows = []
        for etype, obj, unique_id, vkey, ua, ts in parsed:
            day = ts.date()
            salt = self.salts[day]
            visitor = hmac.new(salt, b"v\0" + vkey.encode(), hashlib.sha256).digest()[:16]
            if unique_id is not None:
                eid = hashlib.sha256(b"x\0%s\0%s" % (etype.encode(), unique_id.encode())
                                     ).digest()[:16]
            else:
                ts_s = (ts - datetime.datetime(1970, 1, 1, tzinfo=UTC)) // datetime.timedelta(
                    seconds=1)
                msg = b"e\0%s\0%s\0%s\0%d" % (etype.encode(), obj.encode(), vkey.encode(),
                                               ts_s // w * w)
                eid = hmac.new(salt, msg, hashlib.sha256).digest()[:16]
            rows.append((eid, obj, ts, day, visitor, self.is_robot(ua)))
            if self.oldest_ts is None:
                self.oldest_ts = ts
        with self.db.cursor() as cur:
            cur.execute("INSERT INTO celeryc.stats_bookmarks (event_type) VALUES (%s) "
                        "ON CONFLICT DO NOTHING", (self.type,))
            cur.execute("SELECT last_seq FROM celeryc.stats_bookmarks WHERE event_type = %s "
                        "FOR UPDATE", (self.type,))
            last_seq = cur.fetchone()[0]
            if rows:
                sql = CHUNK.replace("$1", cur.mogrify("%s", (self.type,)).decode()
                                    .replace("%", "%%"))
                inserted, robots, keys, bm = psycopg2.extras.execute_values(
                    cur, sql, rows, template="(%s, %s, %s, %s, %s, %s)",
                    page_size=len(rows), fetch=True)[0]
            else:
                inserted = robots = keys = 0
                bm = None
            self.c["bookmark"] = bm if bm is not None else max(last_seq, self.c["bookmark"])
        for m, why in bad:  # confirmed (confirm_publish) before the COMMIT
            self.dlq_ch.basic_publish(
                amqp.Message(m.body, content_type=m.properties.get("content_type"),
                             delivery_mode=2,
                             application_headers={"x-celeryc-error": why,
                                                  "x-celeryc-queue": self.queue}),
                exchange="", routing_key=self.dlq)
            self.c["dead_lettered"] += 1
        self.db.commit()
        self.ch.basic_ack(msgs[-1].delivery_tag, multiple=True)
        c = self.c
        c["read"] += len(msgs)
        c["inserted"] += inserted
        c["duplicates"] += len(rows) - inserted
        c["robots"] += robots
        c["errors"] += len(bad)
        c["chunks"] += 1
        c["aggregated_keys"] += keys

    # -- the run --

    def run(self):
        opt = self.opt
        t0, cpu0 = time.monotonic(), cpu_s()
        self.db = psycopg2.connect(opt.db)
        with self.db.cursor() as cur:  # salts past the retention go, as celeryc's run does
            cur.execute("DELETE FROM celeryc.stats_salts WHERE day < current_date - %s",
                        (opt.retention_days,))
        self.db.commit()
        self.conn = amqp.Connection(opt.amqp_host, userid=opt.user, password=opt.password,
                                    virtual_host=opt.vhost, confirm_publish=True)
        self.conn.connect()
        self.ch = self.conn.channel()
        self.dlq_ch = self.conn.channel()  # publisher confirms: confirm_publish=True
        ch = self.ch
        ch.exchange_declare("events", "direct", durable=True, auto_delete=False)
        ch.queue_declare(self.dlq, durable=True, auto_delete=False)
        _, depth_before, _ = ch.queue_declare(self.queue, durable=True, auto_delete=False)
        ch.queue_bind(self.queue, "events", self.type)
        ch.basic_qos(0, min(opt.commit_every * 2, 65535, opt.batch_size), False)
        chunk = []

        def on_message(m):
            chunk.append(m)

        ch.basic_consume(self.queue, callback=on_message, no_ack=False)
        read = 0
        while read + len(chunk) < opt.batch_size:
            try:
                self.conn.drain_events(timeout=opt.idle_timeout)
            except socket.timeout:
                break
            if len(chunk) >= opt.commit_every:
                take = chunk[:opt.commit_every]
                del chunk[:opt.commit_every]
                self.flush(take)
                read += len(take)
        while chunk:  # the rest (never more than batch_size in all)
            take = chunk[:min(opt.commit_every, opt.batch_size - read)]
            if not take:
                break
            del chunk[:len(take)]
            self.flush(take)
            read += len(take)
        elapsed, cpu = time.monotonic() - t0, cpu_s() - cpu0
        _, depth_after, _ = ch.queue_declare(self.queue, passive=True)
        self.conn.close()  # unacked extra deliveries (none normally) go back to the queue
        self.db.close()
        out = dict(event_type=self.type, queue=self.queue, **self.c,
                   queue_depth_before=depth_before, queue_depth_after=depth_after,
                   elapsed_s=round(elapsed, 3), cpu_s=round(cpu, 3),
                   events_per_s=round(self.c["read"] / elapsed, 1) if elapsed > 0 else None)
        return out


# The chunk's statement, as tasks/stats.c writes it (its stats_chunk_sql), with a VALUES list
# (psycopg2's execute_values) where celeryc passes binary arrays through unnest: the chunk's
# events ON CONFLICT (event_id) DO NOTHING, and from their RETURNING rows, in the same
# statement, the new unique visitors, the stats_daily upserts and the bookmark. $1 is the
# event type (inlined as a literal).
CHUNK = """
WITH ins AS (
  INSERT INTO celeryc.stats_events (event_id, event_type, object_id, ts, day, visitor, robot)
  SELECT u.id, $1, u.obj, u.ts, u.day, u.v, u.r
    FROM (VALUES %s) AS u(id, obj, ts, day, v, r)
  ON CONFLICT (event_id) DO NOTHING
  RETURNING seq, object_id, day, visitor, robot),
agg AS (SELECT object_id, day, visitor FROM ins WHERE NOT robot),
nv AS (
  INSERT INTO celeryc.stats_daily_visitors (event_type, object_id, day, visitor)
  SELECT DISTINCT $1, object_id, day, visitor FROM agg
  ON CONFLICT DO NOTHING
  RETURNING object_id, day),
cnt AS (SELECT object_id, day, count(*) AS n FROM agg GROUP BY object_id, day),
ncnt AS (SELECT object_id, day, count(*) AS n FROM nv GROUP BY object_id, day),
up AS (
  INSERT INTO celeryc.stats_daily AS d (event_type, object_id, day, count, unique_visitors)
  SELECT $1, c.object_id, c.day, c.n, coalesce(v.n, 0)
    FROM cnt c LEFT JOIN ncnt v ON v.object_id = c.object_id AND v.day = c.day
  ON CONFLICT (event_type, object_id, day) DO UPDATE
     SET count = d.count + EXCLUDED.count,
         unique_visitors = d.unique_visitors + EXCLUDED.unique_visitors,
         updated = now()
  RETURNING 1),
bm AS (
  UPDATE celeryc.stats_bookmarks b SET last_seq = m.s, updated = now()
    FROM (SELECT max(seq) AS s FROM ins) m
   WHERE b.event_type = $1 AND m.s IS NOT NULL AND m.s > b.last_seq
  RETURNING b.last_seq)
SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM ins WHERE robot),
       (SELECT count(*) FROM up), (SELECT last_seq FROM bm)
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--amqp", required=True, help="amqp://user:pass@host:port/vhost")
    ap.add_argument("--db", required=True, help="postgresql://... (schema celeryc migrated)")
    ap.add_argument("--type", default="record-view")
    ap.add_argument("--batch-size", type=int, default=100000)
    ap.add_argument("--commit-every", type=int, default=5000)
    ap.add_argument("--window", type=int, default=30, help="double-click window, s")
    ap.add_argument("--retention-days", type=int, default=30)
    ap.add_argument("--robots-file")
    ap.add_argument("--idle-timeout", type=float, default=1.0)
    opt = ap.parse_args()
    from urllib.parse import unquote, urlsplit
    u = urlsplit(opt.amqp)
    opt.amqp_host = "%s:%d" % (u.hostname, u.port or 5672)
    opt.user, opt.password = unquote(u.username or "guest"), unquote(u.password or "guest")
    vhost = unquote(u.path[1:]) if len(u.path) > 1 else "/"
    opt.vhost = vhost or "/"
    print(json.dumps(Indexer(opt).run()), flush=True)


if __name__ == "__main__":
    sys.exit(main())
