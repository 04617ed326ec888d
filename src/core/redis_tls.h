/* A minimal Redis client over TLS (OpenSSL), for rediss:// result backends.
 *
 * Why: Debian 12's hiredis 0.14 has no TLS, so rediss:// gets its own small transport: a TCP
 * connect with a deadline, an OpenSSL client handshake (SNI, chain and host name checks as
 * ssl_cert_reqs says), AUTH/SELECT, then raw RESP writes and a bounded reply reader. It is
 * only what backend_redis.c needs (one pipelined MULTI/SETEX/PUBLISH/EXEC per store), not a
 * general client. Blocking I/O with SO_RCVTIMEO/SO_SNDTIMEO, like hiredis' sync API.
 */
#ifndef CELERYC_REDIS_TLS_H
#define CELERYC_REDIS_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "celeryc/status.h"
#include "url.h"

struct cc_redis_tls;

/* One parsed reply, flattened: the top level's type and value; for an array, its length and
 * the first error among its elements (at any depth). */
struct cc_redis_tls_reply {
    char type;              /* '+', '-', ':', '$', '*' */
    long long integer;      /* ':' value; '$' and '*' length (-1: nil) */
    bool has_error_element; /* '*' only: some element is an error reply */
    char str[160];          /* '+' and '-' text, or the first error element's; truncated */
};

/* Connect to u->host:u->port (u->tls must be set), handshake, AUTH and SELECT as the URL
 * says. *is_cert_error is set when the failure was the server certificate's verification (a
 * configuration problem, retrying will not help). Returns CC_OK and *out (owned, free with
 * cc_redis_tls_free), or CC_EBACKEND with err filled. */
int cc_redis_tls_connect(const struct cc_redis_url *u, int connect_timeout_ms, int io_timeout_ms,
                         struct cc_redis_tls **out, bool *is_cert_error,
                         struct cc_err *err) CC_MUST_USE;

/* Write all `len` bytes of RESP. Returns CC_OK or CC_EBACKEND (the connection is then unusable:
 * free it). */
int cc_redis_tls_write(struct cc_redis_tls *t, const char *buf, size_t len,
                       struct cc_err *err) CC_MUST_USE;

/* Read one complete reply. Returns CC_OK (an error reply is CC_OK with type '-') or
 * CC_EBACKEND on I/O error, timeout, or a malformed or too deeply nested reply. */
int cc_redis_tls_read(struct cc_redis_tls *t, struct cc_redis_tls_reply *reply,
                      struct cc_err *err) CC_MUST_USE;

/* Read at least one byte of the reply stream (what is buffered first) into buf (cap bytes);
 * *got is the count. For callers that parse RESP themselves (redis.c feeds hiredis'
 * redisReader). Returns CC_OK or CC_EBACKEND (then free the connection). */
int cc_redis_tls_read_some(struct cc_redis_tls *t, char *buf, size_t cap, size_t *got,
                           struct cc_err *err) CC_MUST_USE;

/* Close without a TLS close_notify, so a forked child can drop the parent's connection
 * without disturbing it. Takes NULL. */
void cc_redis_tls_free(struct cc_redis_tls *t);

#endif
