/* The ETA delay store: ETA/countdown messages due later than worker_eta_horizon are moved
 * from the broker into a durable Redis sorted set and republished when due, so a worker
 * never hoards them unacked (prefetch, RabbitMQ's consumer_timeout, redelivery storms on
 * restart). Master only. Design, keys and the multi-worker claim protocol: delaystore.c.
 */
#ifndef CELERYC_DELAYSTORE_H
#define CELERYC_DELAYSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker.h"
#include "config.h"
#include "consumer.h"
#include "redeliver.h"

#define CC_DELAYSTORE_DEFAULT_HORIZON_S 600   /* worker_eta_horizon = -1 with Redis configured */
#define CC_DELAYSTORE_QUORUM_HORIZON_MS 1000  /* the same with task_default_queue_type = quorum */
#define CC_DELAYSTORE_LEASE_MS          60000 /* a claim not deleted by then is claimed again */
#define CC_DELAYSTORE_CLAIM_MAX         100   /* records per claim round trip */
#define CC_DELAYSTORE_POLL_MIN_US       1000000
#define CC_DELAYSTORE_POLL_MAX_US       30000000
#define CC_DELAYSTORE_CLAIMED_SUFFIX    ".claimed"
#define CC_DELAYSTORE_RETRY_US          5000000 /* retrying moves that failed */

struct cc_delaystore {
    struct cc_redeliver_kv *kv; /* borrowed; NULL = no store */
    char *key;                  /* sorted set: score = eta (ms since the epoch), member = record */
    char *claimed_key;          /* key + ".claimed": score = lease expiry (ms) */
    int64_t horizon_us;         /* 0 = disabled */
    int64_t next_poll_us;       /* cc_mono_us() of the next claim */
    bool has_pending;           /* some held request has a delay_rec to retry */
    int64_t next_retry_us;      /* cc_mono_us() of the next retry walk */
    uint64_t n_stored, n_published;
};

/* Resolve worker_eta_horizon (-1: CC_DELAYSTORE_DEFAULT_HORIZON_S when `kv` is not NULL, else 0)
 * and warn when a horizon was set explicitly but no Redis is configured. `kv` is borrowed
 * (cc_redeliver_state_kv). Never fails. */
void cc_delaystore_init(struct cc_delaystore *d, const struct cc_config *cfg,
                        struct cc_redeliver_kv *kv);
void cc_delaystore_deinit(struct cc_delaystore *d);

/* Whether a message due at eta_us belongs in the store (enabled, eta_us - now_us > horizon). */
bool cc_delaystore_wants(const struct cc_delaystore *d, int64_t eta_us, int64_t now_us);

/* At receipt, for a request with cc_delaystore_wants: write the delivery to the store (ZADD,
 * score = eta in ms). CC_OK: it is durable in Redis; the caller acks and frees `r`.
 * Otherwise (Redis unavailable: CC_EBACKEND) the caller holds `r` as usual; its record is
 * kept in r->delay_rec and cc_delaystore_retry moves it later. */
int cc_delaystore_offer(struct cc_delaystore *d, const amqp_envelope_t *env, struct cc_request *r);

/* Whether the worker should walk its held requests now and call cc_delaystore_retry on those
 * with a delay_rec (at most every CC_DELAYSTORE_RETRY_US, and only after an offer failed).
 * Call cc_delaystore_retry_done(d, n_left) after the walk. */
bool cc_delaystore_retry_due(const struct cc_delaystore *d);
void cc_delaystore_retry_done(struct cc_delaystore *d, size_t n_left);

/* Retry storing a held request's record. CC_OK: stored (ack and free `r`); CC_EAGAIN: still
 * held (the record is dropped when `r` is now due within the horizon); CC_EBACKEND: Redis
 * still down. */
int cc_delaystore_retry(struct cc_delaystore *d, struct cc_request *r, int64_t now_us);

/* Periodic, from the loop (does nothing until next_poll_us): claim due records, republish
 * them to their exchange/routing key, sync with the broker, then delete the claims.
 * Returns CC_OK (Redis trouble is logged and retried later) or a broker error (fatal for
 * the caller; the claims stay leased and are republished after CC_DELAYSTORE_LEASE_MS). */
int cc_delaystore_tick(struct cc_delaystore *d, struct cc_broker *b,
                       struct cc_err *err) CC_MUST_USE;

/* Milliseconds until cc_delaystore_tick wants to run (for the poll timeout), or `cap`. */
int64_t cc_delaystore_due_in_ms(const struct cc_delaystore *d, int64_t cap);

/* Whether cc_delaystore_tick would poll the store now (so the caller can skip preparing a
 * connection for it). */
bool cc_delaystore_is_due(const struct cc_delaystore *d);

/* ---- Record codec (pure; unit-tested) ------------------------------------------------ *
 * A record is the whole message, binary-safe and canonical:
 *   "CCD1", str exchange, str routing_key, u16 property flags, then each present property
 *   in AMQP order (shortstr/longstr as str, headers as str of the AMQP-encoded field table,
 *   delivery_mode and priority as u8, timestamp as u64), then str body;
 *   str = u32 big-endian length + bytes.
 * The x-delivery-count header is left out, so a message redelivered (by a quorum queue)
 * after a crash between ZADD and ack encodes to the same member and is stored once. */
struct cc_delaystore_rec {
    char *exchange; /* owned, NUL-terminated */
    char *routing_key;
    amqp_basic_properties_t props; /* byte fields point into the record; headers into pool */
    amqp_bytes_t body;             /* points into the record */
    amqp_pool_t pool;
};

/* Encode. Returns CC_OK and *out (malloc'd, *out_len bytes), CC_ENOMEM or CC_ETOOBIG. */
int cc_delaystore_encode(amqp_bytes_t exchange, amqp_bytes_t routing_key,
                         const amqp_basic_properties_t *props, amqp_bytes_t body, char **out,
                         size_t *out_len, struct cc_err *err) CC_MUST_USE;

/* Decode `rec` (borrowed: must outlive `out`). Returns CC_OK, CC_EBADMSG or CC_ENOMEM; call
 * cc_delaystore_rec_deinit either way. */
int cc_delaystore_decode(const char *rec, size_t len, struct cc_delaystore_rec *out,
                         struct cc_err *err) CC_MUST_USE;
void cc_delaystore_rec_deinit(struct cc_delaystore_rec *r);

#endif
