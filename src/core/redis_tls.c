/* Redis over TLS for the rediss:// result backend (see redis_tls.h for why it exists).
 *
 * Design: one blocking socket with SO_RCVTIMEO/SO_SNDTIMEO (the connect itself is
 * non-blocking with a poll deadline), one SSL object on it, and a fixed read buffer that the
 * RESP reader refills with SSL_read. Certificate policy follows Celery's ssl_cert_reqs:
 * required checks the chain and the host name (an IP literal is matched against IP SANs,
 * and gets no SNI), optional checks the chain only (redis-py's default: no host name
 * check), none checks nothing. CAs come from ssl_ca_certs, else OpenSSL's default paths.
 *
 * Invariants: the reader never allocates and never trusts a length from the wire beyond
 * skipping it; nesting is bounded (RESP_MAX_DEPTH). After any error the caller frees the
 * connection, as the plain path drops its hiredis context.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "redis_tls.h"
#include "util.h"

#define RESP_MAX_DEPTH 8
#define RESP_MAX_LINE  4096 /* a status/error/length line longer than this is refused */

struct cc_redis_tls {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
    char rbuf[16384];
    size_t rpos, rlen; /* unread bytes are rbuf[rpos, rlen) */
};

/* The OpenSSL error queue's oldest entry, or `dflt`; clears the queue. */
static const char *tls_errstr(char *buf, size_t size, const char *dflt)
{
    unsigned long e = ERR_get_error();

    if (e == 0)
        snprintf(buf, size, "%s", dflt);
    else
        ERR_error_string_n(e, buf, size);
    ERR_clear_error();
    return buf;
}

/* TCP connect to host:port within timeout_ms; the returned socket is blocking with I/O
 * timeouts set. Returns the fd or -1 with err filled. */
static int tls_tcp_connect(const char *host, int port, int timeout_ms, int io_timeout_ms,
                           struct cc_err *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL, *ai;
    struct timeval tv = {io_timeout_ms / 1000, (io_timeout_ms % 1000) * 1000};
    char portstr[8];
    int fd = -1, gai, last_errno = 0;

    snprintf(portstr, sizeof(portstr), "%d", port);
    gai = getaddrinfo(host, portstr, &hints, &res);
    if (gai != 0) {
        cc_err_set(err, CC_EBACKEND, "redis connect %s:%d: %s", host, port, gai_strerror(gai));
        return -1;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        struct pollfd pfd;
        int flags, soerr = 0, one = 1;
        socklen_t sl = sizeof(soerr);

        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        flags = fcntl(fd, F_GETFL);
        (void)fcntl(fd, F_SETFL, flags | O_NONBLOCK);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            if (errno != EINPROGRESS) {
                last_errno = errno;
                goto next;
            }
            pfd = (struct pollfd){.fd = fd, .events = POLLOUT};
            int n;

            do
                n = poll(&pfd, 1, timeout_ms);
            while (n < 0 && errno == EINTR);
            if (n == 0) {
                last_errno = ETIMEDOUT;
                goto next;
            }
            if (n < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
                last_errno = n < 0 ? errno : soerr != 0 ? soerr : errno;
                goto next;
            }
        }
        (void)fcntl(fd, F_SETFL, flags);
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        break;
    next:
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        cc_err_set(err, CC_EBACKEND, "redis connect %s:%d: %s", host, port,
                   strerror(last_errno ? last_errno : ECONNREFUSED));
    return fd;
}

static bool tls_host_is_ip(const char *host)
{
    unsigned char addr[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
}

/* Context with the URL's certificate policy, CA and optional client certificate. */
static int tls_ctx_new(const struct cc_redis_url *u, SSL_CTX **out, struct cc_err *err)
{
    char ebuf[200];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    int rc = CC_OK;

    *out = NULL;
    if (ctx == NULL)
        return cc_err_set(err, CC_EBACKEND, "rediss: SSL_CTX_new: %s",
                          tls_errstr(ebuf, sizeof(ebuf), "failed"));
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY);
    if (u->ssl_cert_reqs == CC_REDIS_SSL_NONE) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (u->ssl_ca_certs != NULL) {
            if (SSL_CTX_load_verify_locations(ctx, u->ssl_ca_certs, NULL) != 1) {
                rc = cc_err_set(err, CC_EBACKEND, "rediss: cannot load ssl_ca_certs '%.60s': %s",
                                u->ssl_ca_certs, tls_errstr(ebuf, sizeof(ebuf), "?"));
                goto out;
            }
        } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
            rc = cc_err_set(err, CC_EBACKEND, "rediss: no default CA paths: %s",
                            tls_errstr(ebuf, sizeof(ebuf), "?"));
            goto out;
        }
    }
    if (u->ssl_certfile != NULL) {
        const char *key = u->ssl_keyfile != NULL ? u->ssl_keyfile : u->ssl_certfile;

        if (SSL_CTX_use_certificate_chain_file(ctx, u->ssl_certfile) != 1) {
            rc = cc_err_set(err, CC_EBACKEND, "rediss: cannot load ssl_certfile '%.60s': %s",
                            u->ssl_certfile, tls_errstr(ebuf, sizeof(ebuf), "?"));
            goto out;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(ctx) != 1) {
            rc = cc_err_set(err, CC_EBACKEND, "rediss: cannot use ssl_keyfile '%.60s': %s", key,
                            tls_errstr(ebuf, sizeof(ebuf), "?"));
            goto out;
        }
    }
out:
    if (rc != CC_OK)
        SSL_CTX_free(ctx);
    else
        *out = ctx;
    return rc;
}

static int tls_handshake(struct cc_redis_tls *t, const struct cc_redis_url *u, bool *is_cert_error,
                         struct cc_err *err)
{
    char ebuf[200];
    bool is_ip = tls_host_is_ip(u->host);
    int ret;

    t->ssl = SSL_new(t->ctx);
    if (t->ssl == NULL || SSL_set_fd(t->ssl, t->fd) != 1)
        return cc_err_set(err, CC_EBACKEND, "rediss: SSL_new: %s",
                          tls_errstr(ebuf, sizeof(ebuf), "failed"));
    if (!is_ip)
        (void)SSL_set_tlsext_host_name(t->ssl, u->host); /* SNI: DNS names only (RFC 6066) */
    if (u->ssl_cert_reqs == CC_REDIS_SSL_REQUIRED) {
        X509_VERIFY_PARAM *param = SSL_get0_param(t->ssl);
        int ok =
            is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, u->host) : SSL_set1_host(t->ssl, u->host);

        if (ok != 1)
            return cc_err_set(err, CC_EBACKEND, "rediss: cannot check host name '%.60s'", u->host);
    }
    ERR_clear_error();
    ret = SSL_connect(t->ssl);
    if (ret == 1)
        return CC_OK;
    long vr = SSL_get_verify_result(t->ssl);

    if (vr != X509_V_OK) {
        *is_cert_error = true;
        return cc_err_set(err, CC_EBACKEND,
                          "rediss %s:%d: TLS certificate verification failed: %s (check "
                          "ssl_ca_certs)",
                          u->host, u->port, X509_verify_cert_error_string(vr));
    }
    if (SSL_get_error(t->ssl, ret) == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
        return cc_err_set(err, CC_EBACKEND, "rediss %s:%d: TLS handshake: %s", u->host, u->port,
                          errno != 0 ? strerror(errno) : "connection closed (not a TLS port?)");
    return cc_err_set(err, CC_EBACKEND, "rediss %s:%d: TLS handshake: %s", u->host, u->port,
                      tls_errstr(ebuf, sizeof(ebuf), "failed"));
}

/* One command from argv during set-up; CC_OK iff the reply is not an error. */
static int tls_setup_cmd(struct cc_redis_tls *t, const char *what, int argc, const char **argv,
                         struct cc_err *err)
{
    struct cc_redis_tls_reply r;
    char buf[1024];
    size_t off = 0;
    int rc, n;

    n = snprintf(buf, sizeof(buf), "*%d\r\n", argc);
    off = (size_t)n;
    for (int i = 0; i < argc; i++) {
        size_t len = strlen(argv[i]);

        n = snprintf(buf + off, sizeof(buf) - off, "$%zu\r\n", len);
        if (n < 0 || off + (size_t)n + len + 2 > sizeof(buf))
            return cc_err_set(err, CC_EBACKEND, "redis %s: argument too long", what);
        off += (size_t)n;
        memcpy(buf + off, argv[i], len);
        off += len;
        memcpy(buf + off, "\r\n", 2);
        off += 2;
    }
    rc = cc_redis_tls_write(t, buf, off, err);
    if (rc == CC_OK)
        rc = cc_redis_tls_read(t, &r, err);
    if (rc == CC_OK && r.type == '-')
        rc = cc_err_set(err, CC_EBACKEND, "redis %s: %s", what, r.str);
    return rc;
}

int cc_redis_tls_connect(const struct cc_redis_url *u, int connect_timeout_ms, int io_timeout_ms,
                         struct cc_redis_tls **out, bool *is_cert_error, struct cc_err *err)
{
    struct cc_redis_tls *t = cc_xcalloc(1, sizeof(*t));
    int rc;

    CC_ASSERT(u->tls && u->host != NULL);
    *out = NULL;
    *is_cert_error = false;
    t->fd = -1;
    rc = tls_ctx_new(u, &t->ctx, err);
    if (rc != CC_OK)
        goto out;
    t->fd = tls_tcp_connect(u->host, u->port, connect_timeout_ms, io_timeout_ms, err);
    if (t->fd < 0) {
        rc = CC_EBACKEND;
        goto out;
    }
    rc = tls_handshake(t, u, is_cert_error, err);
    if (rc == CC_OK && u->password != NULL) {
        const char *argv[3] = {"AUTH", u->username, u->password};

        if (u->username != NULL)
            rc = tls_setup_cmd(t, "AUTH", 3, argv, err);
        else {
            argv[1] = u->password;
            rc = tls_setup_cmd(t, "AUTH", 2, argv, err);
        }
    }
    if (rc == CC_OK && u->db != 0) {
        char db[16];
        const char *argv[2] = {"SELECT", db};

        snprintf(db, sizeof(db), "%d", u->db);
        rc = tls_setup_cmd(t, "SELECT", 2, argv, err);
    }
out:
    if (rc != CC_OK)
        cc_redis_tls_free(t);
    else
        *out = t;
    return rc;
}

/* SSL_read/SSL_write failure as a message. */
static int tls_io_error(struct cc_redis_tls *t, int ret, const char *what, struct cc_err *err)
{
    char ebuf[200];
    int e = SSL_get_error(t->ssl, ret);

    if (e == SSL_ERROR_ZERO_RETURN)
        return cc_err_set(err, CC_EBACKEND, "redis: server closed the connection");
    if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return cc_err_set(err, CC_EBACKEND, "redis: %s timed out", what);
        return cc_err_set(err, CC_EBACKEND, "redis: %s: %s", what,
                          ret == 0 || errno == 0 ? "connection closed" : strerror(errno));
    }
    return cc_err_set(err, CC_EBACKEND, "redis: TLS %s: %s", what,
                      tls_errstr(ebuf, sizeof(ebuf), "failed"));
}

int cc_redis_tls_write(struct cc_redis_tls *t, const char *buf, size_t len, struct cc_err *err)
{
    size_t off = 0;

    while (off < len) {
        size_t chunk = len - off > INT_MAX ? INT_MAX : len - off;
        int n;

        ERR_clear_error();
        errno = 0;
        n = SSL_write(t->ssl, buf + off, (int)chunk);
        if (n <= 0)
            return tls_io_error(t, n, "write", err);
        off += (size_t)n;
    }
    return CC_OK;
}

/* Make at least one unread byte available. */
static int resp_fill(struct cc_redis_tls *t, struct cc_err *err)
{
    int n;

    if (t->rpos < t->rlen)
        return CC_OK;
    t->rpos = t->rlen = 0;
    ERR_clear_error();
    errno = 0;
    n = SSL_read(t->ssl, t->rbuf, (int)sizeof(t->rbuf));
    if (n <= 0)
        return tls_io_error(t, n, "read", err);
    t->rlen = (size_t)n;
    return CC_OK;
}

int cc_redis_tls_read_some(struct cc_redis_tls *t, char *buf, size_t cap, size_t *got,
                           struct cc_err *err)
{
    size_t n;
    int rc = resp_fill(t, err);

    *got = 0;
    if (rc != CC_OK)
        return rc;
    n = t->rlen - t->rpos < cap ? t->rlen - t->rpos : cap;
    memcpy(buf, t->rbuf + t->rpos, n);
    t->rpos += n;
    *got = n;
    return CC_OK;
}

/* One CRLF-terminated line into line (without the CRLF); longer than RESP_MAX_LINE fails. */
static int resp_line(struct cc_redis_tls *t, char *line, size_t size, struct cc_err *err)
{
    size_t n = 0;
    bool is_cr = false;

    for (;;) {
        int rc = resp_fill(t, err);
        char c;

        if (rc != CC_OK)
            return rc;
        c = t->rbuf[t->rpos++];
        if (is_cr && c == '\n')
            break;
        if (is_cr) {
            if (n + 1 >= size)
                return cc_err_set(err, CC_EBACKEND, "redis: reply line too long");
            line[n++] = '\r';
        }
        is_cr = c == '\r';
        if (is_cr)
            continue;
        if (n + 1 >= size)
            return cc_err_set(err, CC_EBACKEND, "redis: reply line too long");
        line[n++] = c;
    }
    line[n] = '\0';
    return CC_OK;
}

/* Discard n bytes (a bulk string's payload and its CRLF). */
static int resp_skip(struct cc_redis_tls *t, unsigned long long n, struct cc_err *err)
{
    while (n > 0) {
        int rc = resp_fill(t, err);
        size_t avail;

        if (rc != CC_OK)
            return rc;
        avail = t->rlen - t->rpos;
        if ((unsigned long long)avail > n)
            avail = (size_t)n;
        t->rpos += avail;
        n -= avail;
    }
    return CC_OK;
}

static int resp_number(const char *s, long long *out, struct cc_err *err)
{
    char *end;

    errno = 0;
    *out = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || errno == ERANGE)
        return cc_err_set(err, CC_EBACKEND, "redis: malformed reply '%.40s'", s);
    return CC_OK;
}

static int resp_read(struct cc_redis_tls *t, struct cc_redis_tls_reply *r, int depth,
                     struct cc_err *err)
{
    char line[RESP_MAX_LINE];
    int rc;

    if (depth > RESP_MAX_DEPTH)
        return cc_err_set(err, CC_EBACKEND, "redis: reply nested too deeply");
    rc = resp_line(t, line, sizeof(line), err);
    if (rc != CC_OK)
        return rc;
    r->type = line[0];
    switch (line[0]) {
    case '+':
    case '-':
        snprintf(r->str, sizeof(r->str), "%.*s", (int)sizeof(r->str) - 1, line + 1);
        return CC_OK;
    case ':':
        return resp_number(line + 1, &r->integer, err);
    case '$':
        rc = resp_number(line + 1, &r->integer, err);
        if (rc == CC_OK && r->integer >= 0)
            rc = resp_skip(t, (unsigned long long)r->integer + 2, err);
        return rc;
    case '*':
        rc = resp_number(line + 1, &r->integer, err);
        for (long long i = 0; rc == CC_OK && i < r->integer; i++) {
            struct cc_redis_tls_reply el = {0};

            rc = resp_read(t, &el, depth + 1, err);
            if (rc == CC_OK && !r->has_error_element && (el.type == '-' || el.has_error_element)) {
                r->has_error_element = true;
                snprintf(r->str, sizeof(r->str), "%s", el.str);
            }
        }
        return rc;
    default:
        return cc_err_set(err, CC_EBACKEND, "redis: unexpected reply type '%.20s'", line);
    }
}

int cc_redis_tls_read(struct cc_redis_tls *t, struct cc_redis_tls_reply *reply, struct cc_err *err)
{
    memset(reply, 0, sizeof(*reply));
    return resp_read(t, reply, 0, err);
}

void cc_redis_tls_free(struct cc_redis_tls *t)
{
    if (t == NULL)
        return;
    /* No SSL_shutdown: after fork the parent still uses this session; Redis treats a plain
     * close like QUIT. */
    SSL_free(t->ssl);
    SSL_CTX_free(t->ctx);
    if (t->fd >= 0)
        close(t->fd);
    free(t);
}
