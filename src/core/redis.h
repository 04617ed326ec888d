/* A small synchronous Redis client for the worker's own bookkeeping: the ETA delay store,
 * redelivery counters, fleet-wide rate limits, the duplicate-success check.
 *
 * Not the result backend's write path (backend_redis.c keeps its hand-built MULTI/SETEX/
 * PUBLISH/EXEC pipeline). One object is one connection, opened lazily on the first command
 * and dropped after any I/O error, so the next command reconnects. redis:// and unix:// go
 * through hiredis; rediss:// through redis_tls.c with hiredis' reply parser (redisReader)
 * fed from the TLS stream, so callers see the same redisReply trees either way.
 *
 * Not thread-safe: one object per thread or process. No connection crosses fork(): every
 * open client is dropped (without I/O) in the child of any fork() by an atfork handler, so
 * the next command there opens its own.
 */
#ifndef CELERYC_REDIS_H
#define CELERYC_REDIS_H

#include <stdbool.h>
#include <stddef.h>

#include <hiredis/hiredis.h>

#include "celeryc/status.h"

struct cc_redis;

/* Parse `url` (redis://, rediss://, unix://, as the result backend accepts) and return an
 * unconnected client. io_timeout_ms bounds each command's I/O (connect: 4 s). Returns CC_OK
 * and *out (free with cc_redis_free), or CC_EURL. */
int cc_redis_open(const char *url, int io_timeout_ms, struct cc_redis **out,
                  struct cc_err *err) CC_MUST_USE;

/* Run one command, connecting first if needed. argv[i] has length lens[i] (lens NULL:
 * strlen). Returns the reply (caller frees with freeReplyObject; an error reply is returned
 * as REDIS_REPLY_ERROR, not as a failure), or NULL with err filled (CC_EBACKEND) when the
 * command could not be sent or its reply not read: the connection is then dropped. */
redisReply *cc_redis_cmd(struct cc_redis *r, int argc, const char **argv, const size_t *lens,
                         struct cc_err *err);

/* Convenience for commands whose reply is an integer (INCR, ZADD, ZREM, EVAL returning a
 * number): CC_OK and *out, or CC_EBACKEND (I/O failure, error reply, or another type). */
int cc_redis_cmd_int(struct cc_redis *r, int argc, const char **argv, const size_t *lens,
                     long long *out, struct cc_err *err) CC_MUST_USE;

/* Is it worth trying again? For callers that skip a Redis for a while after a failure (so
 * an outage costs one timeout, not one per command) and want to come back promptly:
 * true while connected, or when the last failure was on the connection (refused, reset,
 * timed out) and a TCP probe finds the server accepting connections again. A probe starts
 * at most every 0.5 s after a failure (backing off to 5 s while accepted probes are followed
 * by failed commands: a frozen server); its outcome is waited for at most 20 ms, else
 * looked at again on the next call. False after the server refused us (AUTH, TLS). */
bool cc_redis_probe(struct cc_redis *r);

/* ---- Pipelining (fire and forget) ----------------------------------------------------------
 *
 * For bookkeeping writes on the worker's hot path (redeliver.c's hand-off marks): queue a
 * command without waiting for its reply; the replies are read later, in batches, and an
 * error among them is reported then. cc_redis_cmd drains what is pending first, so the
 * synchronous API stays in step. */

/* Queue one command (connecting first if needed). The bytes stay in the client until
 * cc_redis_flush (rediss:// writes them at once). Returns CC_OK or CC_EBACKEND (the
 * connection is dropped, and pending replies with it). */
int cc_redis_append(struct cc_redis *r, int argc, const char **argv, const size_t *lens,
                    struct cc_err *err) CC_MUST_USE;

/* Write everything queued (blocking, bounded by the I/O timeout). Once it returns CC_OK the
 * bytes are in the kernel's socket buffer: they reach Redis even if this process dies at the
 * next instruction. CC_EBACKEND drops the connection. */
int cc_redis_flush(struct cc_redis *r, struct cc_err *err) CC_MUST_USE;

/* Read replies of queued commands: every one when `is_wait`, else only those readable now
 * (no wait). Error replies are counted in *n_errors and the first one's text goes to err.
 * Returns CC_OK, or CC_EBACKEND on I/O failure (the connection is dropped). */
int cc_redis_drain(struct cc_redis *r, bool is_wait, int *n_errors, struct cc_err *err) CC_MUST_USE;

/* Commands queued whose replies have not been read. */
size_t cc_redis_pending(const struct cc_redis *r);

/* Forget an inherited connection without I/O on it (in a forked child). */
void cc_redis_after_fork(struct cc_redis *r);

/* Close and free. Takes NULL. */
void cc_redis_free(struct cc_redis *r);

#endif
