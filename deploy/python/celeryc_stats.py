"""celeryc_stats: publish usage events for celeryc's statistics indexer (docs/STATS.md).

An application publishes one event per thing that happened (a record was viewed, a file was
downloaded); the periodic task ``stats.index_events`` of a celeryc worker drains the queue of
the event type and turns the events into per-object, per-day counts and unique visitors::

    from celeryc_stats import StatsEmitter

    with StatsEmitter("amqp://guest:guest@localhost:5672//") as stats:
        stats.emit("record-view", "abcd-1234", user_id=42)
        stats.emit("file-download", "abcd-1234/paper.pdf", session_id=request.session.key,
                   ip_address=request.remote_addr, user_agent=request.user_agent.string)

    # In a Celery application: share its broker settings (and connection pool).
    stats = StatsEmitter(app)          # or StatsEmitter(app.connection_for_write())

Topology (declared by the emitter on the first event of each type, and by the indexer; both
use the same flags, so either may come first):

- exchange ``events``: direct, durable;
- queue ``stats-<type>``: durable, no arguments, bound to ``events`` with routing key
  ``<type>``. Event types are lower-case words with dashes (``record-view``).

Messages: body = one JSON object (``timestamp`` ISO-8601 UTC, ``type``, ``object_id``, at least
one of ``user_id`` / ``session_id`` / ``ip_address``, optionally ``user_agent`` and
``unique_id``; other members are ignored by the indexer), content type
``application/json``, delivery mode 2 (persistent).

An emitter owns one channel: use one per thread (kombu connections are not thread-safe).
``confirm=True`` (with a URL) makes every publish wait for the broker's acknowledgement: slower
(one round trip per event) but nothing is lost if the broker crashes right after the call.
"""
import datetime
import json
import re

import amqp
import kombu

__all__ = ["StatsEmitter", "queue_name", "EXCHANGE"]

EXCHANGE = "events"
_TYPE_RX = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_FIELDS = ("user_id", "session_id", "ip_address", "user_agent", "unique_id")


def queue_name(event_type):
    """The queue of an event type: ``stats-<type>``."""
    return "stats-" + event_type


def _iso(ts):
    """A timestamp as the indexer reads it: ISO-8601 UTC with 'Z' (naive datetimes are UTC,
    strings are passed through unchanged, numbers are Unix seconds)."""
    if ts is None:
        ts = datetime.datetime.now(datetime.timezone.utc)
    elif isinstance(ts, str):
        return ts
    elif isinstance(ts, (int, float)):
        ts = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    if ts.tzinfo is not None:
        ts = ts.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return ts.isoformat(timespec="milliseconds") + "Z"


class StatsEmitter:
    """Publishes events to the ``events`` exchange (see the module docstring).

    connection_or_url: an AMQP URL (the emitter opens and closes its own connection), a
    ``kombu.Connection`` (borrowed: not closed by ``close()``), or a Celery app (its
    ``connection_for_write()``, closed by ``close()``)."""

    def __init__(self, connection_or_url, exchange=EXCHANGE, confirm=False):
        if isinstance(connection_or_url, str):
            self.connection = kombu.Connection(
                connection_or_url, transport_options={"confirm_publish": bool(confirm)})
            self._owned = True
        elif hasattr(connection_or_url, "connection_for_write"):
            self.connection = connection_or_url.connection_for_write()
            self._owned = True
        else:
            self.connection = connection_or_url
            self._owned = False
        self.exchange = kombu.Exchange(exchange, type="direct", durable=True)
        self._producer = None
        self._declared = set()

    # ---- topology ----------------------------------------------------------------------------

    def queue(self, event_type):
        """The kombu Queue of an event type (``stats-<type>``, durable, no arguments)."""
        if not _TYPE_RX.match(event_type or ""):
            raise ValueError("event type must be lower-case words with dashes: %r" % event_type)
        return kombu.Queue(queue_name(event_type), self.exchange, routing_key=event_type,
                           durable=True, auto_delete=False, exclusive=False)

    def declare(self, event_type):
        """Declare the exchange, the type's queue and its binding (idempotent; done by the
        first emit of each type)."""
        q = self.queue(event_type)
        q(self._get_producer().channel).declare()
        self._declared.add(event_type)
        return q

    def _get_producer(self):
        if self._producer is None:
            self.connection.ensure_connection(max_retries=3)
            self._producer = kombu.Producer(self.connection.channel(), exchange=self.exchange)
        return self._producer

    # ---- publishing --------------------------------------------------------------------------

    @staticmethod
    def event(event_type, object_id, user_id=None, session_id=None, ip_address=None,
              user_agent=None, unique_id=None, timestamp=None, **extra):
        """The event as a dict (what ``emit`` publishes). Raises ValueError for an event the
        indexer would dead-letter for a missing field."""
        if object_id is None or object_id == "":
            raise ValueError("object_id is required")
        if user_id is None and session_id is None and ip_address is None:
            raise ValueError("an event needs user_id, session_id or ip_address")
        ev = dict(extra)
        ev.update(timestamp=_iso(timestamp), type=event_type, object_id=str(object_id))
        for k, v in zip(_FIELDS, (user_id, session_id, ip_address, user_agent, unique_id)):
            if v is not None:
                ev[k] = v if (k == "user_id" and isinstance(v, int)
                              and not isinstance(v, bool)) else str(v)
        return ev

    def publish_body(self, event_type, body):
        """Publish an already-encoded body (bytes or str) as an event of the type, unchecked:
        what the indexer cannot read goes to ``stats-<type>.dead``."""
        if event_type not in self._declared:
            self.declare(event_type)
        if isinstance(body, str):
            body = body.encode("utf-8")
        self._get_producer().publish(body, routing_key=event_type,
                                     content_type="application/json",
                                     content_encoding="utf-8", delivery_mode=2,
                                     retry=True, retry_policy={"max_retries": 3})

    def emit(self, event_type, object_id, *, user_id=None, session_id=None, ip_address=None,
             user_agent=None, unique_id=None, timestamp=None, **extra):
        """Publish one event. timestamp: datetime (naive = UTC), ISO-8601 string, Unix
        seconds, or None (now). Returns the event dict."""
        ev = self.event(event_type, object_id, user_id=user_id, session_id=session_id,
                        ip_address=ip_address, user_agent=user_agent, unique_id=unique_id,
                        timestamp=timestamp, **extra)
        self.publish_body(event_type, json.dumps(ev, separators=(",", ":")))
        return ev

    def emit_many(self, event_type, events, window=1000):
        """Publish events of one type: an iterable of dicts with emit()'s keyword names
        (object_id, user_id, ..., timestamp). Returns how many were published, once the broker
        has confirmed every one of them (see publish_bodies)."""
        return self.publish_bodies(
            event_type, (json.dumps(self.event(event_type, **e), separators=(",", ":"))
                         for e in events), window)

    def publish_bodies(self, event_type, bodies, window=1000):
        """Publish encoded bodies (unchecked, as publish_body) with publisher confirms: at most
        `window` unconfirmed at a time; returns the count once all are confirmed, raises
        RuntimeError if the broker refused (nack) any. Tens of thousands per second. Without
        py-amqp (another kombu transport) or with confirm=True: one publish_body each."""
        if event_type not in self._declared:
            self.declare(event_type)
        raw = self.connection.connection
        if not isinstance(raw, amqp.Connection) or getattr(raw, "confirm_publish", False):
            n = 0
            for b in bodies:
                self.publish_body(event_type, b)
                n += 1
            return n
        ch = raw.channel()
        pending, nacked = set(), []

        def on_ack(tag, multiple):
            if multiple:
                pending.difference_update([t for t in pending if t <= tag])
            else:
                pending.discard(tag)

        def on_nack(tag, multiple):
            nacked.append(tag)
            on_ack(tag, multiple)

        ch.events["basic_ack"].add(on_ack)
        ch.events["basic_nack"].add(on_nack)
        ch.confirm_select()
        n = 0
        try:
            for b in bodies:
                if isinstance(b, str):
                    b = b.encode("utf-8")
                ch.basic_publish(amqp.Message(b, content_type="application/json",
                                              content_encoding="utf-8", delivery_mode=2),
                                 exchange=self.exchange.name, routing_key=event_type)
                n += 1
                pending.add(n)
                while len(pending) >= window:
                    raw.drain_events(timeout=30)
            while pending:
                raw.drain_events(timeout=30)
        finally:
            ch.close()
        if nacked:
            raise RuntimeError("the broker refused %d of %d events" % (len(nacked), n))
        return n

    # ---- lifetime ----------------------------------------------------------------------------

    def close(self):
        if self._producer is not None:
            try:
                self._producer.channel.close()
            except Exception:  # noqa: BLE001 (the connection may be gone already)
                pass
            self._producer = None
        if self._owned:
            self.connection.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
