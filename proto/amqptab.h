/* AMQP 0-9-1 field tables <-> JSON, bounded.
 *
 * Decoding accepts every field kind rabbitmq-c knows (all integer widths, floats, decimals,
 * timestamps as integers, byte arrays as strings when UTF-8). Encoding emits only the kinds
 * py-amqp reads correctly (reference §1.6): S (utf8), I (int32) or L (int64 bit pattern
 * through AMQP_FIELD_KIND_U64), d (double), t (bool), V (void), A (array), F (table).
 * Never I8/I16/I64.
 *
 * Pure: operates on rabbitmq-c's in-memory types only; no connection is touched.
 */
#ifndef CELERYC_PROTO_AMQPTAB_H
#define CELERYC_PROTO_AMQPTAB_H

/* Debian 12's librabbitmq-dev 0.11.0 ships only the pre-0.11 path <amqp.h>; upstream 0.11
 * installs <rabbitmq-c/amqp.h>. Take whichever exists. */
#if defined(__has_include)
#if __has_include(<rabbitmq-c/amqp.h>)
#include <rabbitmq-c/amqp.h>
#else
#include <amqp.h>
#endif
#else
#include <rabbitmq-c/amqp.h>
#endif
#include <jansson.h>

#include "celeryc/status.h"

#define CC_AMQPTAB_MAX_DEPTH 16 /* nesting deeper than this is CC_EBADTABLE */

/* Convert a field table to a new JSON object. Returns CC_OK and sets *out (owned), or
 * CC_EBADTABLE (depth, invalid UTF-8 in a key) / CC_ENOMEM. Strings that are not valid UTF-8
 * are decoded as CC_EBADTABLE too: Celery headers are always text. */
int cc_amqptab_to_json(const amqp_table_t *t, json_t **out, struct cc_err *err) CC_MUST_USE;

/* Convert a JSON object to a field table whose memory comes from `pool` (strings and
 * entries are copied into it; free by recycling/emptying the pool). Returns CC_OK,
 * CC_EINVAL (not an object), CC_EBADTABLE (too deep) or CC_ENOMEM. */
int cc_amqptab_from_json(const json_t *obj, amqp_pool_t *pool, amqp_table_t *out,
                         struct cc_err *err) CC_MUST_USE;

#endif
