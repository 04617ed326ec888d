/* Usage events for the statistics indexer (issue #7), pure: parse and validate one event,
 * derive its deterministic id and anonymised visitor, flag robots. No I/O; the caller passes
 * `now` and the day's salt. docs/STATS.md is the user-facing description of the event shape.
 *
 * An event is one JSON object (the AMQP message body):
 *     {"timestamp": "2026-12-06T10:00:00.123Z",  ISO-8601; naive = UTC          (required)
 *      "type": "record-view",                     the event type                 (required)
 *      "object_id": "abcd-1234",                  what was viewed/downloaded     (required)
 *      "unique_id": "...",                        explicit event id              (optional)
 *      "user_id": "42" | 42,                      visitor fields: at least one of
 *      "session_id": "...",                         user_id, session_id, ip_address
 *      "ip_address": "192.0.2.7",
 *      "user_agent": "Mozilla/5.0 ..."}           (optional; robots are told by it)
 * Other members are ignored. Strings are UTF-8 (jansson checks), at most
 * CC_STATSEVENT_FIELD_MAX bytes each, without NUL characters; user_id may be a JSON integer (read
 * as its decimal text). A member that is null is absent; an optional member that is "" is absent
 * too (an empty visitor field would lump visitors together); type and object_id must be
 * non-empty. The whole body is at most CC_STATSEVENT_BODY_MAX bytes.
 *
 * Identity (all hashes HMAC-SHA256 / SHA-256 truncated to CC_STATSEVENT_ID_LEN bytes):
 *   visitor key  "u:<user_id>", else "s:<session_id>", else "a:<ip_address>|<user_agent>"
 *   visitor      HMAC(salt_of_day, "v\0" visitor_key)
 *   event id     explicit: SHA256("x\0" type "\0" unique_id)
 *                derived:  HMAC(salt_of_day, "e\0" type "\0" object_id "\0" visitor_key "\0"
 *                               <window start, decimal unix seconds>)
 *                where window start = floor(timestamp_s / window_s) * window_s: two events of
 *                one visitor on one object within one double-click window share their id.
 * The salt of a day (UTC date of the timestamp) is random, kept in Postgres while the day is
 * within the retention, then deleted: from then on nobody can recompute a visitor hash.
 */
#ifndef CELERYC_PROTO_STATSEVENT_H
#define CELERYC_PROTO_STATSEVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "celeryc/status.h"

#define CC_STATSEVENT_ID_LEN    16    /* bytes of an event id or visitor hash */
#define CC_STATSEVENT_SALT_LEN  32    /* bytes of a day's salt */
#define CC_STATSEVENT_FIELD_MAX 1024  /* longest accepted string field, bytes */
#define CC_STATSEVENT_BODY_MAX  65536 /* longest accepted event body, bytes */

/* One parsed event. String pointers point into the caller's `body`-derived storage held by
 * the struct itself (`store`), valid until cc_statsevent_clear() / the next cc_statsevent_parse().
 */
struct cc_statsevent {
    int64_t ts_us; /* timestamp, microseconds since the epoch, UTC */
    int32_t day;   /* days since 1970-01-01 (UTC date of ts_us); may be negative */
    const char *type;
    const char *object_id;
    const char *unique_id;  /* NULL: none */
    const char *user_id;    /* NULL: none (an integer user_id becomes its decimal text) */
    const char *session_id; /* NULL: none */
    const char *ip_address; /* NULL: none */
    const char *user_agent; /* NULL: none */
    char *store;            /* owned: the strings above live here */
    size_t store_cap;
};

/* Parse `body` (len bytes, not NUL-terminated) as an event. On success fills `ev` (whose
 * previous contents are reused/overwritten) and returns CC_OK. On a malformed event returns
 * CC_EINVAL and writes a one-line reason to `why` (e.g. "bad JSON at 1:17: ...",
 * "missing field 'object_id'", "'timestamp' is not ISO-8601: \"yesterday\"",
 * "no visitor field (user_id, session_id or ip_address)", "field 'object_id' longer than
 * 1024 bytes"), or CC_ENOMEM if its store cannot grow. Never reads beyond len. `ev` must be
 * zero-initialised before first use; after a failure its string fields are NULL. */
int cc_statsevent_parse(struct cc_statsevent *ev, const char *body, size_t len, char *why,
                        size_t why_size);

/* cc_statsevent_parse without its allocation-free fast path: jansson reads every body. Same results
 * (the fuzz target checks it); for tests and comparisons. */
int cc_statsevent_parse_full(struct cc_statsevent *ev, const char *body, size_t len, char *why,
                             size_t why_size);

/* Free what cc_statsevent_parse allocated (ev may be reused after). */
void cc_statsevent_clear(struct cc_statsevent *ev);

/* The visitor key as defined above into buf (NUL-terminated, truncated to size-1). Returns
 * its length (before truncation, like snprintf). */
size_t cc_statsevent_visitor_key(const struct cc_statsevent *ev, char *buf, size_t size);

/* The anonymised visitor: HMAC(salt, "v\0" visitor_key), CC_STATSEVENT_ID_LEN bytes. */
void cc_statsevent_visitor_hash(const struct cc_statsevent *ev,
                                const uint8_t salt[CC_STATSEVENT_SALT_LEN],
                                uint8_t out[CC_STATSEVENT_ID_LEN]);

/* The deterministic event id (explicit or derived, as above); window_s >= 1. */
void cc_statsevent_event_id(const struct cc_statsevent *ev,
                            const uint8_t salt[CC_STATSEVENT_SALT_LEN], int64_t window_s,
                            uint8_t out[CC_STATSEVENT_ID_LEN]);

/* ---- Robots ------------------------------------------------------------------------------
 * A list of user-agent patterns, one per line; blank lines and lines starting with '#' are
 * ignored; matching is a case-insensitive (ASCII) substring test. The list celeryc ships is
 * deploy/stats/robots.txt, compiled into the binary (cc_statsevent_robots_builtin). An event with
 * no user_agent is not a robot. */
struct cc_statsevent_robots;

/* Build a matcher from the text of a list (len bytes; leading and trailing blanks of a line
 * are stripped). Returns: owned, free with cc_statsevent_robots_free(); NULL on out of memory only.
 * The matcher is immutable: one instance may be shared by threads. */
struct cc_statsevent_robots *cc_statsevent_robots_new(const char *text, size_t len);
/* A new matcher for the shipped list (deploy/stats/robots.txt as compiled in). Returns: owned,
 * free with cc_statsevent_robots_free(); NULL on out of memory only. */
struct cc_statsevent_robots *cc_statsevent_robots_builtin(void);
/* Number of patterns loaded. */
size_t cc_statsevent_robots_count(const struct cc_statsevent_robots *r);
/* True when user_agent (may be NULL) matches a pattern. */
bool cc_statsevent_robots_match(const struct cc_statsevent_robots *r, const char *user_agent);
void cc_statsevent_robots_free(struct cc_statsevent_robots *r);

/* Hex of an id (2*CC_STATSEVENT_ID_LEN + 1 bytes). Returns out. */
char *cc_statsevent_hex(const uint8_t id[CC_STATSEVENT_ID_LEN],
                        char out[2 * CC_STATSEVENT_ID_LEN + 1]);

#endif
