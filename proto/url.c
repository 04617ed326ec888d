/* Broker and result-backend URLs, parsed the way kombu 5.2 and Celery 5.2.6 read them.
 *
 * Design: kombu's url_to_parts() drops the scheme and re-parses the rest with HTTP URL
 * semantics (urllib.parse.urlparse): the authority runs up to the first '/', '?' or '#'; the
 * user info is everything before the LAST '@' of the authority, split at its FIRST ':'; a
 * host in brackets is an IPv6 literal; the port must be decimal digits, 0..65535. Each part
 * is then percent-decoded (invalid escapes stay as they are, as urllib's unquote does) and an
 * empty part counts as absent, so defaults apply. We split once (url_split), then the AMQP and
 * Redis front ends apply their own defaults, exactly as kombu's pyamqp transport and Celery's
 * RedisBackend._params_from_url do.
 *
 * Invariants: pure (no globals, no I/O); every output string is owned by the struct and freed
 * by its _deinit; on error the output struct is zeroed (safe to _deinit). A decoded NUL byte
 * ("%00") is refused, since C strings cannot carry it.
 *
 * Wire reference: celery-wire.md §6.1 (connection), kombu/utils/url.py,
 * celery/backends/redis.py (_params_from_url). Failover lists ("amqp://a;amqp://b") are not
 * supported and are refused with a clear message.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "url.h"

/* The raw (still percent-encoded) pieces of a URL: views into the caller's string. */
struct url_view {
    const char *p;
    size_t len;
    bool present;
};

struct url_parts {
    struct url_view scheme;
    struct url_view user;
    struct url_view password;
    struct url_view host;
    struct url_view port;
    struct url_view path;  /* without the leading '/' */
    struct url_view query; /* without the '?' */
};

/* ---- Splitting and decoding ------------------------------------------------------------- */

static struct url_view url_view_make(const char *p, size_t len)
{
    struct url_view v = {p, len, true};

    return v;
}

static int url_hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* *dst = a copy of `v` when it is still NULL (a URL part left out). */
static int url_default(char **dst, const char *v, struct cc_err *err)
{
    if (*dst != NULL)
        return CC_OK;
    *dst = strdup(v);
    return *dst != NULL ? CC_OK : cc_err_set(err, CC_ENOMEM, "out of memory");
}

/* Percent-decode `v` into an owned string. An empty or absent view gives NULL (kombu turns
 * '' into None so the default applies). `lower` lowercases, as urllib does for host names. */
static int url_decode(struct url_view v, bool lower, const char *what, char **out,
                      struct cc_err *err)
{
    char *s;
    size_t o = 0;

    *out = NULL;
    if (!v.present || v.len == 0)
        return CC_OK;
    s = malloc(v.len + 1);
    if (s == NULL)
        return cc_err_set(err, CC_ENOMEM, "out of memory");
    for (size_t i = 0; i < v.len; i++) {
        int c = (unsigned char)v.p[i];

        if (c == '%' && i + 2 < v.len) {
            int hi = url_hexval((unsigned char)v.p[i + 1]);
            int lo = url_hexval((unsigned char)v.p[i + 2]);

            if (hi >= 0 && lo >= 0) {
                c = hi * 16 + lo;
                i += 2;
                if (c == 0) {
                    free(s);
                    return cc_err_set(err, CC_EURL, "%s contains an encoded NUL (%%00)", what);
                }
            }
        }
        s[o++] = (char)(lower ? tolower(c) : c);
    }
    s[o] = '\0';
    if (o == 0) {
        free(s);
        s = NULL;
    }
    *out = s;
    return CC_OK;
}

/* CC_EURL "what: '<url, passwords masked>'" (issue 14: error texts never show a password). */
static int url_err_masked(struct cc_err *err, const char *what, const char *url)
{
    char *m = cc_url_mask(url, CC_URL_MASK_LOG);
    int rc = cc_err_set(err, CC_EURL, "%s: '%.80s'", what, m);

    free(m);
    return rc;
}

/* Split `url` into its raw parts with urlparse's rules (see the file comment). */
static int url_split(const char *url, struct url_parts *pp, struct cc_err *err)
{
    const char *sep, *auth, *auth_end, *at, *hostinfo, *colon;

    memset(pp, 0, sizeof(*pp));
    if (url == NULL || *url == '\0')
        return cc_err_set(err, CC_EURL, "empty URL");
    sep = strstr(url, "://");
    if (sep == NULL || sep == url)
        return url_err_masked(err, "not a URL (expected scheme://...)", url);
    for (const char *c = url; c < sep; c++) {
        if (!isalnum((unsigned char)*c) && *c != '+' && *c != '-' && *c != '.')
            return url_err_masked(err, "bad scheme in URL", url);
    }
    if (strchr(url, ';') != NULL)
        return url_err_masked(err, "failover URL lists (';') are not supported", url);
    pp->scheme = url_view_make(url, (size_t)(sep - url));

    auth = sep + 3;
    auth_end = auth + strcspn(auth, "/?#");
    /* User info ends at the LAST '@' of the authority (urllib's rpartition). */
    at = NULL;
    for (const char *c = auth; c < auth_end; c++) {
        if (*c == '@')
            at = c;
    }
    hostinfo = auth;
    if (at != NULL) {
        colon = memchr(auth, ':', (size_t)(at - auth));
        if (colon != NULL) {
            pp->user = url_view_make(auth, (size_t)(colon - auth));
            pp->password = url_view_make(colon + 1, (size_t)(at - colon - 1));
        } else {
            pp->user = url_view_make(auth, (size_t)(at - auth));
        }
        hostinfo = at + 1;
    }

    if (hostinfo < auth_end && *hostinfo == '[') {
        const char *close = memchr(hostinfo, ']', (size_t)(auth_end - hostinfo));

        if (close == NULL)
            return cc_err_set(err, CC_EURL, "unterminated IPv6 address '[' in URL");
        pp->host = url_view_make(hostinfo + 1, (size_t)(close - hostinfo - 1));
        if (close + 1 < auth_end) {
            if (close[1] != ':')
                return cc_err_set(err, CC_EURL, "junk after IPv6 address ']' in URL");
            pp->port = url_view_make(close + 2, (size_t)(auth_end - close - 2));
        }
    } else {
        colon = memchr(hostinfo, ':', (size_t)(auth_end - hostinfo));
        if (colon != NULL) {
            pp->host = url_view_make(hostinfo, (size_t)(colon - hostinfo));
            pp->port = url_view_make(colon + 1, (size_t)(auth_end - colon - 1));
        } else {
            pp->host = url_view_make(hostinfo, (size_t)(auth_end - hostinfo));
        }
    }

    if (*auth_end == '/') {
        const char *pend = auth_end + 1 + strcspn(auth_end + 1, "?#");

        pp->path = url_view_make(auth_end + 1, (size_t)(pend - auth_end - 1));
        auth_end = pend;
    }
    if (*auth_end == '?') {
        const char *qend = auth_end + 1 + strcspn(auth_end + 1, "#");

        pp->query = url_view_make(auth_end + 1, (size_t)(qend - auth_end - 1));
    }
    return CC_OK;
}

static bool url_scheme_is(const struct url_parts *pp, const char *name)
{
    return pp->scheme.len == strlen(name) && strncasecmp(pp->scheme.p, name, pp->scheme.len) == 0;
}

/* Port: absent or empty means the default; otherwise 1..65535 in decimal. (urllib accepts
 * 0, but kombu then falls back to the default port; refusing it is clearer.) */
static int url_port(struct url_view v, int dflt, int *out, struct cc_err *err)
{
    int port = 0;

    *out = dflt;
    if (!v.present || v.len == 0)
        return CC_OK;
    if (v.len > 5)
        return cc_err_set(err, CC_EURL, "port out of range: '%.*s'", (int)v.len, v.p);
    for (size_t i = 0; i < v.len; i++) {
        if (!isdigit((unsigned char)v.p[i]))
            return cc_err_set(err, CC_EURL, "port is not a number: '%.*s'", (int)v.len, v.p);
        port = port * 10 + (v.p[i] - '0');
    }
    if (port < 1 || port > 65535)
        return cc_err_set(err, CC_EURL, "port out of range: '%.*s'", (int)v.len, v.p);
    *out = port;
    return CC_OK;
}

/* Parse a non-negative decimal integer that fits an int (a Redis db number). */
static int url_db(const char *s, int *out, struct cc_err *err)
{
    char *end;
    long v;

    errno = 0;
    if (s == NULL || !isdigit((unsigned char)*s))
        return cc_err_set(err, CC_EURL, "redis db is not a number: '%.40s'", s ? s : "");
    v = strtol(s, &end, 10);
    if (*end != '\0' || errno == ERANGE || v > INT_MAX)
        return cc_err_set(err, CC_EURL, "bad redis db number: '%.40s'", s);
    *out = (int)v;
    return CC_OK;
}

/* Value of `key` in a raw query string ("a=1&db=2"), decoded; NULL if absent. */
static int url_query_get(struct url_view q, const char *key, char **out, struct cc_err *err)
{
    size_t klen = strlen(key);
    const char *p, *end;

    *out = NULL;
    if (!q.present)
        return CC_OK;
    /* Only now: an absent query is a zeroed view whose p is NULL, and NULL + 0 is undefined
     * behaviour (C11 6.5.6; UBSan reports it for "unix:///sock" without a '?'). */
    p = q.p;
    end = q.p + q.len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *item_end = amp ? amp : end;

        if ((size_t)(item_end - p) > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
            int rc;

            free(*out); /* the last occurrence wins, as dict(parse_qsl(...)) */
            rc = url_decode(url_view_make(p + klen + 1, (size_t)(item_end - p - klen - 1)), false,
                            key, out, err);
            if (rc != CC_OK)
                return rc;
        }
        p = item_end + 1;
    }
    return CC_OK;
}

/* ---- AMQP --------------------------------------------------------------------------------- */

int cc_url_parse_amqp(const char *url, struct cc_amqp_url *out, struct cc_err *err)
{
    struct url_parts pp;
    int rc;

    memset(out, 0, sizeof(*out));
    rc = url_split(url, &pp, err);
    if (rc != CC_OK)
        goto out;
    if (url_scheme_is(&pp, "amqp") || url_scheme_is(&pp, "pyamqp")) {
        out->tls = false;
    } else if (url_scheme_is(&pp, "amqps")) {
        out->tls = true;
    } else {
        rc = cc_err_set(err, CC_EURL, "not an AMQP URL (amqp://, amqps://): scheme '%.*s'",
                        (int)pp.scheme.len, pp.scheme.p);
        goto out;
    }
    rc = url_port(pp.port, out->tls ? 5671 : 5672, &out->port, err);
    if (rc == CC_OK)
        rc = url_decode(pp.host, true, "host", &out->host, err);
    if (rc == CC_OK)
        rc = url_decode(pp.user, false, "user name", &out->user, err);
    if (rc == CC_OK)
        rc = url_decode(pp.password, false, "password", &out->password, err);
    /* kombu: the path without its first '/', decoded; empty means the default vhost "/".
     * So "amqp://h/" and "amqp://h" are "/", "amqp://h//" and "amqp://h/%2F" are "/" too. */
    if (rc == CC_OK)
        rc = url_decode(pp.path, false, "virtual host", &out->vhost, err);
    if (rc != CC_OK)
        goto out;
    rc = url_default(&out->host, "localhost", err);
    if (rc == CC_OK)
        rc = url_default(&out->user, "guest", err);
    if (rc == CC_OK)
        rc = url_default(&out->password, "guest", err);
    if (rc == CC_OK)
        rc = url_default(&out->vhost, "/", err);
out:
    if (rc != CC_OK)
        cc_url_amqp_deinit(out);
    return rc;
}

void cc_url_amqp_deinit(struct cc_amqp_url *u)
{
    if (u == NULL)
        return;
    free(u->host);
    free(u->user);
    free(u->password);
    free(u->vhost);
    memset(u, 0, sizeof(*u));
}

/* ---- Redis -------------------------------------------------------------------------------- */

/* rediss:// query options (celery/backends/redis.py, _params_from_url): the names Celery
 * accepts for ssl_cert_reqs, both its own spellings and the ssl module's constant names. */
static int url_redis_tls_options(struct url_view q, struct cc_redis_url *out, struct cc_err *err)
{
    static const struct {
        const char *name;
        enum cc_redis_ssl_reqs reqs;
    } names[] = {
        {"required", CC_REDIS_SSL_REQUIRED}, {"CERT_REQUIRED", CC_REDIS_SSL_REQUIRED},
        {"optional", CC_REDIS_SSL_OPTIONAL}, {"CERT_OPTIONAL", CC_REDIS_SSL_OPTIONAL},
        {"none", CC_REDIS_SSL_NONE},         {"CERT_NONE", CC_REDIS_SSL_NONE},
    };
    char *reqs = NULL;
    int rc;

    rc = url_query_get(q, "ssl_cert_reqs", &reqs, err);
    if (rc == CC_OK && reqs != NULL) {
        size_t i;

        for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
            if (strcmp(reqs, names[i].name) == 0)
                break;
        if (i == sizeof(names) / sizeof(names[0]))
            rc = cc_err_set(err, CC_EURL,
                            "bad ssl_cert_reqs '%.40s' (use required, optional or none)", reqs);
        else
            out->ssl_cert_reqs = names[i].reqs;
    }
    if (rc == CC_OK)
        rc = url_query_get(q, "ssl_ca_certs", &out->ssl_ca_certs, err);
    if (rc == CC_OK)
        rc = url_query_get(q, "ssl_certfile", &out->ssl_certfile, err);
    if (rc == CC_OK)
        rc = url_query_get(q, "ssl_keyfile", &out->ssl_keyfile, err);
    free(reqs);
    return rc;
}

int cc_url_parse_redis(const char *url, struct cc_redis_url *out, struct cc_err *err)
{
    struct url_parts pp;
    char *db = NULL;
    bool is_socket;
    int rc;

    memset(out, 0, sizeof(*out));
    rc = url_split(url, &pp, err);
    if (rc != CC_OK)
        goto out;
    is_socket = url_scheme_is(&pp, "unix") || url_scheme_is(&pp, "socket");
    if (!is_socket && !url_scheme_is(&pp, "redis") && !url_scheme_is(&pp, "rediss")) {
        rc = cc_err_set(err, CC_EURL,
                        "not a Redis URL (redis://, rediss://, unix://): scheme '%.*s'",
                        (int)pp.scheme.len, pp.scheme.p);
        goto out;
    }
    out->tls = url_scheme_is(&pp, "rediss");
    if (out->tls) {
        rc = url_redis_tls_options(pp.query, out, err);
        if (rc != CC_OK)
            goto out;
    }
    rc = url_decode(pp.user, false, "user name", &out->username, err);
    if (rc == CC_OK)
        rc = url_decode(pp.password, false, "password", &out->password, err);
    if (rc != CC_OK)
        goto out;

    if (is_socket) {
        /* Celery: the path is the socket ("/" + path) and the db comes from the query. */
        char *path = NULL;

        rc = url_decode(pp.path, false, "socket path", &path, err);
        if (rc != CC_OK)
            goto out;
        if (path == NULL) {
            rc = url_err_masked(err, "unix socket URL without a path", url);
            goto out;
        }
        out->socket_path = malloc(strlen(path) + 2);
        if (out->socket_path == NULL) {
            free(path);
            rc = cc_err_set(err, CC_ENOMEM, "out of memory");
            goto out;
        }
        out->socket_path[0] = '/';
        strcpy(out->socket_path + 1, path);
        free(path);
        rc = url_query_get(pp.query, "db", &db, err);
        if (rc == CC_OK && db == NULL)
            rc = url_query_get(pp.query, "virtual_host", &db, err);
    } else {
        rc = url_port(pp.port, 6379, &out->port, err);
        if (rc == CC_OK)
            rc = url_decode(pp.host, true, "host", &out->host, err);
        if (rc == CC_OK)
            rc = url_decode(pp.path, false, "db", &db, err);
        if (rc == CC_OK)
            rc = url_default(&out->host, "localhost", err);
        /* Celery strips any further slashes: "redis://h//1" is db 1. */
        if (rc == CC_OK && db != NULL) {
            size_t n = strlen(db);

            while (n > 0 && db[n - 1] == '/')
                db[--n] = '\0';
            if (db[strspn(db, "/")] == '\0') {
                free(db);
                db = NULL;
            } else {
                memmove(db, db + strspn(db, "/"), strlen(db + strspn(db, "/")) + 1);
            }
        }
    }
    if (rc == CC_OK && db != NULL)
        rc = url_db(db, &out->db, err);
out:
    free(db);
    if (rc != CC_OK)
        cc_url_redis_deinit(out);
    return rc;
}

void cc_url_redis_deinit(struct cc_redis_url *u)
{
    if (u == NULL)
        return;
    free(u->host);
    free(u->socket_path);
    free(u->username);
    free(u->password);
    free(u->ssl_ca_certs);
    free(u->ssl_certfile);
    free(u->ssl_keyfile);
    memset(u, 0, sizeof(*u));
}

/* ---- Masking (issue 14) --------------------------------------------------------------------
 *
 * Every URL celeryc reports (inspect conf, logs, the banner, error texts, `celeryc jobs` /
 * `db` output) goes through cc_url_mask, which hides every password it can find: the user
 * info's (with urllib's split: the authority ends at the first '/', '?' or '#', the user
 * info at its last '@', the password after its first ':'; and, for a password holding '/',
 * '?' or '#' that urllib would misread, up to the last '@' of the URL), query parameters
 * whose name holds "pass", "secret" or "token" (libpq's ?password=, sslpassword), libpq
 * "key=value" conninfo strings, and each URL of a "url;url" failover list. Masking too much
 * is harmless; masking too little is a leak, so unknown shapes lean to masking. */

struct url_out {
    char *p;
    size_t len, cap;
    bool is_oom; /* an allocation failed: nothing more is written, the result is NULL */
};

static void url_out_put(struct url_out *o, const char *s, size_t n)
{
    if (o->is_oom)
        return;
    if (o->len + n + 1 > o->cap) {
        size_t cap = (o->len + n + 1) * 2;
        char *p = realloc(o->p, cap);

        if (p == NULL) {
            o->is_oom = true;
            return;
        }
        o->p = p;
        o->cap = cap;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static bool url_is_secret_key(const char *k, size_t n)
{
    static const char *const words[] = {"pass", "secret", "token"};

    for (size_t w = 0; w < sizeof(words) / sizeof(words[0]); w++) {
        size_t wl = strlen(words[w]);

        for (size_t i = 0; i + wl <= n; i++)
            if (strncasecmp(k + i, words[w], wl) == 0)
                return true;
    }
    return false;
}

/* "a=1&password=x;b=2": values of secret keys masked. */
static void url_mask_query(struct url_out *o, const char *q, size_t n, const char *mask)
{
    size_t i = 0;

    while (i < n) {
        size_t end = i, eq;

        while (end < n && q[end] != '&' && q[end] != ';')
            end++;
        for (eq = i; eq < end && q[eq] != '='; eq++)
            ;
        if (eq < end && url_is_secret_key(q + i, eq - i)) {
            url_out_put(o, q + i, eq + 1 - i);
            url_out_put(o, mask, strlen(mask));
        } else {
            url_out_put(o, q + i, end - i);
        }
        if (end < n)
            url_out_put(o, q + end, 1);
        i = end + 1;
    }
}

/* libpq conninfo: "host=h password=secret dbname=d" / "password = 'it''s'". */
static void url_mask_conninfo(struct url_out *o, const char *s, size_t n, const char *mask)
{
    size_t i = 0;

    while (i < n) {
        size_t k0, k1, v0, v1;

        while (i < n && isspace((unsigned char)s[i]))
            url_out_put(o, s + i++, 1);
        k0 = i;
        while (i < n && !isspace((unsigned char)s[i]) && s[i] != '=')
            i++;
        k1 = i;
        while (i < n && isspace((unsigned char)s[i]))
            i++;
        if (i >= n || s[i] != '=') { /* not key=value: copy as it is */
            url_out_put(o, s + k0, i - k0);
            continue;
        }
        i++;
        while (i < n && isspace((unsigned char)s[i]))
            i++;
        v0 = i;
        if (i < n && s[i] == '\'') {
            for (i++; i < n && s[i] != '\''; i++)
                if (s[i] == '\\' && i + 1 < n)
                    i++;
            if (i < n)
                i++;
        } else {
            while (i < n && !isspace((unsigned char)s[i]))
                i++;
        }
        v1 = i;
        url_out_put(o, s + k0, v0 - k0);
        if (url_is_secret_key(s + k0, k1 - k0))
            url_out_put(o, mask, strlen(mask));
        else
            url_out_put(o, s + v0, v1 - v0);
    }
}

static bool url_all_digits(const char *p, const char *e)
{
    if (p == e)
        return false;
    for (; p < e; p++)
        if (!isdigit((unsigned char)*p))
            return false;
    return true;
}

/* One URL (no failover ';'). */
static void url_mask_one(struct url_out *o, const char *u, size_t n, const char *mask)
{
    const char *end = u + n, *sep = NULL, *auth, *auth_end, *at = NULL, *colon = NULL, *q;

    for (const char *c = u; c + 3 <= end; c++)
        if (memcmp(c, "://", 3) == 0) {
            sep = c;
            break;
        }
    if (sep == NULL) {
        url_mask_conninfo(o, u, n, mask);
        return;
    }
    auth = sep + 3;
    for (auth_end = auth; auth_end < end && !strchr("/?#", *auth_end); auth_end++)
        ;
    for (const char *c = auth; c < auth_end; c++)
        if (*c == '@')
            at = c;
    if (at != NULL) {
        colon = memchr(auth, ':', (size_t)(at - auth));
    } else {
        /* A password holding '/', '?' or '#' (urllib cannot split it): user:pass up to the
         * URL's last '@', unless what follows the ':' is a port. */
        const char *last = NULL, *c2;

        for (const char *c = auth_end; c < end; c++)
            if (*c == '@')
                last = c;
        c2 = last != NULL ? memchr(auth, ':', (size_t)(auth_end - auth)) : NULL;
        if (c2 != NULL && !url_all_digits(c2 + 1, auth_end)) {
            at = last;
            colon = c2;
        }
    }
    if (colon != NULL && colon + 1 < at) {
        url_out_put(o, u, (size_t)(colon + 1 - u));
        url_out_put(o, mask, strlen(mask));
        for (auth_end = at; auth_end < end && !strchr("/?#", *auth_end); auth_end++)
            ;
        url_out_put(o, at, (size_t)(auth_end - at));
    } else {
        url_out_put(o, u, (size_t)(auth_end - u));
    }
    q = memchr(auth_end, '?', (size_t)(end - auth_end));
    if (q == NULL) {
        url_out_put(o, auth_end, (size_t)(end - auth_end));
        return;
    }
    url_out_put(o, auth_end, (size_t)(q + 1 - auth_end));
    url_mask_query(o, q + 1, (size_t)(end - q - 1), mask);
}

/* Whether `s` starts with "scheme://" (the next URL of a failover list). */
static bool url_starts_url(const char *s)
{
    const char *c = s;

    if (!isalpha((unsigned char)*c))
        return false;
    while (isalnum((unsigned char)*c) || *c == '+' || *c == '-' || *c == '.')
        c++;
    return strncmp(c, "://", 3) == 0;
}

char *cc_url_mask(const char *url, const char *mask)
{
    struct url_out o = {0};
    const char *p = url != NULL ? url : "";

    url_out_put(&o, "", 0);
    for (;;) {
        const char *semi = p;

        /* a ';' that starts another scheme:// is a failover separator; others are data */
        while ((semi = strchr(semi, ';')) != NULL && !url_starts_url(semi + 1))
            semi++;
        url_mask_one(&o, p, semi != NULL ? (size_t)(semi - p) : strlen(p), mask);
        if (semi == NULL)
            break;
        url_out_put(&o, ";", 1);
        p = semi + 1;
    }
    if (o.is_oom) {
        free(o.p);
        return NULL;
    }
    return o.p;
}

char *cc_url_redact(const char *url)
{
    return cc_url_mask(url, CC_URL_MASK_LOG);
}
