/* Usage events for the statistics indexer (proto/statsevent.h is the spec of the event shape
 * and of every hash; docs/STATS.md describes it to users).
 *
 * Parsing: the common shape (a flat object of ASCII strings and integers) is read by a
 * one-pass scanner that allocates nothing; anything else, and every event that is refused,
 * goes through jansson, so the reasons are jansson's (see the banner of the parsing section).
 * The body is bounded by CC_STATSEVENT_BODY_MAX; the strings are copied into the event's own store
 * (one buffer, grown, reused across calls), so a steady stream of events allocates nothing.
 * Reasons for a refusal are one printable-ASCII line (they go into run logs and an AMQP
 * header): any other byte is written as '?'.
 *
 * Hashing: HMAC-SHA256 is done by hand over OpenSSL's SHA256_Init/Update/Final. Those are
 * deprecated in OpenSSL 3 but still shipped and exported by every 3.x, and they are four to
 * five times faster than HMAC() or EVP_Digest() for these short messages (OpenSSL 3.0 fetches
 * the algorithm from its provider on each EVP call: measured 1.9 us per HMAC() against 0.37 us
 * here). No heap, no global state, so the functions are thread-safe. The messages are fed in
 * pieces (prefix, fields, NUL separators), never assembled in a buffer.
 *
 * Robots: the patterns are lower-cased once; matching scans the user agent once, lower-casing
 * each byte on the fly, and tests each position's next three bytes against a 64 Ki-bit set
 * (8 KiB, stays in L1) of the hashed first three bytes of the patterns. Only on a hit are the
 * patterns with the same first two bytes (sorted, found by binary search) compared. Patterns
 * of one or two bytes have exact sets of their own. Measured on 981 real browser user agents
 * (134 bytes on average, none a robot): 0.6 us each with a filter on the first two bytes
 * ("Mozilla", "AppleWebKit", "KHTML" start like patterns), much less with three.
 * The matcher is immutable after cc_statsevent_robots_new, so one instance can be shared by
 * threads.
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "statsevent.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/sha.h>

#include "isotime.h"

#define US_PER_SEC  1000000LL
#define SEC_PER_DAY 86400LL

/* ---- Reasons ----------------------------------------------------------------------------- */

static void sev_why(char *why, size_t why_size, const char *fmt, ...) CC_PRINTF(3, 4);

/* Write a reason; keep it one line of printable ASCII. */
static void sev_why(char *why, size_t why_size, const char *fmt, ...)
{
    va_list ap;

    if (why == NULL || why_size == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(why, why_size, fmt, ap);
    va_end(ap);
    for (unsigned char *p = (unsigned char *)why; *p != '\0'; p++)
        if (*p < 0x20 || *p >= 0x7f)
            *p = '?';
}

/* ---- Parsing -----------------------------------------------------------------------------
 * Two readers fill the same table of member values (sev_val), then one checker (sev_fill)
 * validates and copies them, so both give the same event and the same reasons:
 * - sev_scan, the fast path, reads the common shape in one pass without allocating: a flat
 *   object whose keys and strings are printable ASCII without escapes and whose other values
 *   are integers, true, false or null. It gives up (returns false) on anything else, and on
 *   anything it is unsure of; it never decides that an event is malformed.
 * - jansson (sev_parse_json) reads everything else and words the JSON errors.
 * A fast path that gave up, or an event the checker refused, goes through jansson, so every
 * refusal reason comes from the full parser. The fuzz target checks that both agree. */

enum sev_field { F_TS, F_TYPE, F_OBJECT, F_UNIQUE, F_USER, F_SESSION, F_IP, F_UA, F_N };

static const char *const sev_names[F_N] = {"timestamp", "type",       "object_id",  "unique_id",
                                           "user_id",   "session_id", "ip_address", "user_agent"};

enum sev_kind { V_ABSENT, V_STRING, V_INT, V_OTHER }; /* null is V_ABSENT */

struct sev_val {
    enum sev_kind kind;
    const char *s; /* V_STRING: len bytes, not NUL-terminated */
    size_t len;
    long long i; /* V_INT */
};

/* Check one member; *out and *out_len get its text (*out NULL: absent). */
static int sev_check(enum sev_field f, const struct sev_val *v, char num[32], const char **out,
                     size_t *out_len, char *why, size_t why_size)
{
    const char *name = sev_names[f];
    bool required = f == F_TS || f == F_TYPE || f == F_OBJECT;

    *out = NULL;
    *out_len = 0;
    if (v->kind == V_ABSENT) {
        if (!required)
            return CC_OK;
        sev_why(why, why_size, "missing field '%s'", name);
        return CC_EINVAL;
    }
    if (f == F_USER && v->kind == V_INT) {
        *out_len = (size_t)snprintf(num, 32, "%lld", v->i);
        *out = num;
        return CC_OK;
    }
    if (v->kind != V_STRING) {
        sev_why(why, why_size, "field '%s' is not a string%s", name,
                f == F_USER ? " or integer" : "");
        return CC_EINVAL;
    }
    if (f == F_TS) {
        char ts[65];
        size_t n = v->len < 64 ? v->len : 64;

        memcpy(ts, v->s, n);
        ts[n] = '\0';
        if (v->len > 64 || strlen(ts) != v->len) {
            sev_why(why, why_size, "'timestamp' is not ISO-8601: \"%.40s...\"", ts);
            return CC_EINVAL;
        }
        *out = v->s;
        *out_len = v->len;
        return CC_OK;
    }
    if (v->len > CC_STATSEVENT_FIELD_MAX) {
        sev_why(why, why_size, "field '%s' longer than %d bytes", name, CC_STATSEVENT_FIELD_MAX);
        return CC_EINVAL;
    }
    /* Ids are hashed with NUL separators and handled as C strings: an embedded NUL would
     * make "a\0b" and "a" the same visitor (jansson refuses \u0000 already; belt and braces). */
    if (memchr(v->s, '\0', v->len) != NULL) {
        sev_why(why, why_size, "field '%s' contains a NUL character", name);
        return CC_EINVAL;
    }
    if (v->len == 0) {
        if (required) {
            sev_why(why, why_size, "field '%s' is empty", name);
            return CC_EINVAL;
        }
        /* An empty visitor field would lump every such visitor together: it is absent. */
        return CC_OK;
    }
    *out = v->s;
    *out_len = v->len;
    return CC_OK;
}

static void sev_reset(struct cc_statsevent *ev)
{
    ev->ts_us = 0;
    ev->day = 0;
    ev->type = ev->object_id = ev->unique_id = NULL;
    ev->user_id = ev->session_id = ev->ip_address = ev->user_agent = NULL;
}

/* Validate the members and copy them into ev's store. */
static int sev_fill(struct cc_statsevent *ev, const struct sev_val vals[F_N], char *why,
                    size_t why_size)
{
    const char **dst[F_N] = {NULL,         &ev->type,       &ev->object_id,  &ev->unique_id,
                             &ev->user_id, &ev->session_id, &ev->ip_address, &ev->user_agent};
    const char *val[F_N];
    size_t vlen[F_N];
    char num[32], ts[65];
    size_t need = 0;

    for (int f = 0; f < F_N; f++) {
        if (sev_check((enum sev_field)f, &vals[f], num, &val[f], &vlen[f], why, why_size) != CC_OK)
            return CC_EINVAL;
        if (f == F_TS) {
            memcpy(ts, val[f], vlen[f]); /* <= 64 bytes, checked */
            ts[vlen[f]] = '\0';
            if (cc_isotime_parse(ts, &ev->ts_us) != CC_OK) {
                sev_why(why, why_size, "'timestamp' is not ISO-8601: \"%.40s%s\"", ts,
                        vlen[f] > 40 ? "..." : "");
                return CC_EINVAL;
            }
        } else if (val[f] != NULL) {
            need += vlen[f] + 1;
        }
    }
    if (val[F_USER] == NULL && val[F_SESSION] == NULL && val[F_IP] == NULL) {
        sev_why(why, why_size, "no visitor field (user_id, session_id or ip_address)");
        return CC_EINVAL;
    }
    if (need > ev->store_cap) {
        size_t cap = need < 512 ? 512 : need;
        char *p = realloc(ev->store, cap);

        if (p == NULL) {
            sev_why(why, why_size, "out of memory");
            return CC_ENOMEM;
        }
        ev->store = p;
        ev->store_cap = cap;
    }
    {
        int64_t s = ev->ts_us / US_PER_SEC - (ev->ts_us % US_PER_SEC < 0);
        char *p = ev->store;

        ev->day = (int32_t)(s / SEC_PER_DAY - (s % SEC_PER_DAY < 0));
        for (int f = F_TS + 1; f < F_N; f++) {
            if (val[f] == NULL)
                continue;
            memcpy(p, val[f], vlen[f]);
            p[vlen[f]] = '\0';
            *dst[f] = p;
            p += vlen[f] + 1;
        }
    }
    return CC_OK;
}

static const char *sev_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* A string at p (just after its opening quote) made of printable ASCII, no escapes. Returns
 * the byte after the closing quote, or NULL to give up. */
static const char *sev_scan_str(const char *p, const char *e, const char **s, size_t *len)
{
    const char *start = p;

    while (p < e && *p != '"') {
        unsigned char c = (unsigned char)*p;

        if (c < 0x20 || c > 0x7e || c == '\\')
            return NULL;
        p++;
    }
    if (p == e)
        return NULL;
    *s = start;
    *len = (size_t)(p - start);
    return p + 1;
}

/* The fast path (see the banner). True: vals holds every member of a well-formed object. */
static bool sev_scan(const char *p, size_t len, struct sev_val vals[F_N])
{
    const char *e = p + len;

    for (int f = 0; f < F_N; f++)
        vals[f].kind = V_ABSENT;
    p = sev_ws(p, e);
    if (p == e || *p++ != '{')
        return false;
    for (;;) {
        struct sev_val v = {.kind = V_OTHER};
        const char *key;
        size_t klen;

        p = sev_ws(p, e);
        if (p == e || *p++ != '"' || (p = sev_scan_str(p, e, &key, &klen)) == NULL)
            return false;
        p = sev_ws(p, e);
        if (p == e || *p++ != ':')
            return false;
        p = sev_ws(p, e);
        if (p == e)
            return false;
        if (*p == '"') {
            v.kind = V_STRING;
            if ((p = sev_scan_str(p + 1, e, &v.s, &v.len)) == NULL)
                return false;
        } else if (*p == '-' || (*p >= '0' && *p <= '9')) {
            bool neg = *p == '-';
            int digits = 0;

            p += neg;
            if (p == e || *p < '0' || *p > '9' ||
                (*p == '0' && p + 1 < e && p[1] >= '0' && p[1] <= '9'))
                return false;
            v.kind = V_INT;
            v.i = 0;
            while (p < e && *p >= '0' && *p <= '9') {
                if (++digits > 18) /* leave big numbers to jansson */
                    return false;
                v.i = v.i * 10 + (*p++ - '0');
            }
            if (p < e && (*p == '.' || *p == 'e' || *p == 'E'))
                return false;
            v.i = neg ? -v.i : v.i;
        } else if (e - p >= 4 && memcmp(p, "null", 4) == 0) {
            v.kind = V_ABSENT;
            p += 4;
        } else if (e - p >= 4 && memcmp(p, "true", 4) == 0) {
            p += 4;
        } else if (e - p >= 5 && memcmp(p, "false", 5) == 0) {
            p += 5;
        } else {
            return false; /* objects, arrays, anything else */
        }
        for (int f = 0; f < F_N; f++) {
            if (strlen(sev_names[f]) == klen && memcmp(sev_names[f], key, klen) == 0) {
                vals[f] = v; /* a repeated member: the last one wins, as in jansson */
                break;
            }
        }
        p = sev_ws(p, e);
        if (p == e)
            return false;
        if (*p == '}')
            break;
        if (*p++ != ',')
            return false;
    }
    return sev_ws(p + 1, e) == e;
}

/* The full path: jansson reads the body, then the same checks. */
static int sev_parse_json(struct cc_statsevent *ev, const char *body, size_t len, char *why,
                          size_t why_size)
{
    struct sev_val vals[F_N];
    json_error_t jerr;
    json_t *root = json_loadb(body != NULL ? body : "", len, 0, &jerr);
    int rc = CC_EINVAL;

    if (root == NULL) {
        sev_why(why, why_size, "bad JSON at %d:%d: %s", jerr.line, jerr.column, jerr.text);
        goto out;
    }
    if (!json_is_object(root)) {
        sev_why(why, why_size, "event is not a JSON object");
        goto out;
    }
    for (int f = 0; f < F_N; f++) {
        json_t *v = json_object_get(root, sev_names[f]);

        vals[f] = (struct sev_val){.kind = V_OTHER};
        if (v == NULL || json_is_null(v)) {
            vals[f].kind = V_ABSENT;
        } else if (json_is_string(v)) {
            vals[f].kind = V_STRING;
            vals[f].s = json_string_value(v);
            vals[f].len = json_string_length(v);
        } else if (json_is_integer(v)) {
            vals[f].kind = V_INT;
            vals[f].i = (long long)json_integer_value(v);
        }
    }
    rc = sev_fill(ev, vals, why, why_size);
out:
    json_decref(root);
    return rc;
}

static int sev_parse(struct cc_statsevent *ev, const char *body, size_t len, char *why,
                     size_t why_size, bool fast)
{
    int rc = CC_EINVAL;

    sev_reset(ev);
    if (why != NULL && why_size > 0)
        why[0] = '\0';
    if (body == NULL && len > 0) {
        sev_why(why, why_size, "no body");
        goto out;
    }
    if (len > CC_STATSEVENT_BODY_MAX) {
        sev_why(why, why_size, "event larger than %d bytes", CC_STATSEVENT_BODY_MAX);
        goto out;
    }
    if (fast && body != NULL) {
        struct sev_val vals[F_N];

        if (sev_scan(body, len, vals) && sev_fill(ev, vals, NULL, 0) == CC_OK) {
            rc = CC_OK;
            goto out;
        }
        sev_reset(ev);
    }
    rc = sev_parse_json(ev, body, len, why, why_size);
out:
    if (rc != CC_OK)
        sev_reset(ev);
    return rc;
}

int cc_statsevent_parse(struct cc_statsevent *ev, const char *body, size_t len, char *why,
                        size_t why_size)
{
    return sev_parse(ev, body, len, why, why_size, true);
}

int cc_statsevent_parse_full(struct cc_statsevent *ev, const char *body, size_t len, char *why,
                             size_t why_size)
{
    return sev_parse(ev, body, len, why, why_size, false);
}

void cc_statsevent_clear(struct cc_statsevent *ev)
{
    if (ev == NULL)
        return;
    free(ev->store);
    ev->store = NULL;
    ev->store_cap = 0;
    sev_reset(ev);
}

/* ---- Visitor key and hashes -------------------------------------------------------------- */

size_t cc_statsevent_visitor_key(const struct cc_statsevent *ev, char *buf, size_t size)
{
    int n;

    if (ev->user_id != NULL)
        n = snprintf(buf, size, "u:%s", ev->user_id);
    else if (ev->session_id != NULL)
        n = snprintf(buf, size, "s:%s", ev->session_id);
    else
        n = snprintf(buf, size, "a:%s|%s", ev->ip_address != NULL ? ev->ip_address : "",
                     ev->user_agent != NULL ? ev->user_agent : "");
    return n < 0 ? 0 : (size_t)n;
}

/* Feed the visitor key to a running hash, exactly the bytes cc_statsevent_visitor_key writes. */
static void sev_update_visitor(SHA256_CTX *c, const struct cc_statsevent *ev)
{
    if (ev->user_id != NULL) {
        SHA256_Update(c, "u:", 2);
        SHA256_Update(c, ev->user_id, strlen(ev->user_id));
    } else if (ev->session_id != NULL) {
        SHA256_Update(c, "s:", 2);
        SHA256_Update(c, ev->session_id, strlen(ev->session_id));
    } else {
        SHA256_Update(c, "a:", 2);
        if (ev->ip_address != NULL)
            SHA256_Update(c, ev->ip_address, strlen(ev->ip_address));
        SHA256_Update(c, "|", 1);
        if (ev->user_agent != NULL)
            SHA256_Update(c, ev->user_agent, strlen(ev->user_agent));
    }
}

/* HMAC-SHA256 (RFC 2104) with a CC_STATSEVENT_SALT_LEN-byte key, shorter than SHA-256's 64-byte
 * block, so the key is zero-padded and never hashed first. */
static void sev_hmac_begin(SHA256_CTX *c, const uint8_t salt[CC_STATSEVENT_SALT_LEN])
{
    uint8_t pad[SHA256_CBLOCK];

    for (size_t i = 0; i < sizeof(pad); i++)
        pad[i] = (uint8_t)((i < CC_STATSEVENT_SALT_LEN ? salt[i] : 0) ^ 0x36);
    SHA256_Init(c);
    SHA256_Update(c, pad, sizeof(pad));
}

static void sev_hmac_end(SHA256_CTX *c, const uint8_t salt[CC_STATSEVENT_SALT_LEN],
                         uint8_t out[CC_STATSEVENT_ID_LEN])
{
    uint8_t pad[SHA256_CBLOCK];
    uint8_t inner[SHA256_DIGEST_LENGTH];
    uint8_t md[SHA256_DIGEST_LENGTH];

    SHA256_Final(inner, c);
    for (size_t i = 0; i < sizeof(pad); i++)
        pad[i] = (uint8_t)((i < CC_STATSEVENT_SALT_LEN ? salt[i] : 0) ^ 0x5c);
    SHA256_Init(c);
    SHA256_Update(c, pad, sizeof(pad));
    SHA256_Update(c, inner, sizeof(inner));
    SHA256_Final(md, c);
    memcpy(out, md, CC_STATSEVENT_ID_LEN);
}

void cc_statsevent_visitor_hash(const struct cc_statsevent *ev,
                                const uint8_t salt[CC_STATSEVENT_SALT_LEN],
                                uint8_t out[CC_STATSEVENT_ID_LEN])
{
    SHA256_CTX c;

    sev_hmac_begin(&c, salt);
    SHA256_Update(&c, "v", 2); /* "v\0" */
    sev_update_visitor(&c, ev);
    sev_hmac_end(&c, salt, out);
}

void cc_statsevent_event_id(const struct cc_statsevent *ev,
                            const uint8_t salt[CC_STATSEVENT_SALT_LEN], int64_t window_s,
                            uint8_t out[CC_STATSEVENT_ID_LEN])
{
    SHA256_CTX c;

    if (ev->unique_id != NULL) {
        uint8_t md[SHA256_DIGEST_LENGTH];

        SHA256_Init(&c);
        SHA256_Update(&c, "x", 2); /* "x\0" */
        SHA256_Update(&c, ev->type, strlen(ev->type) + 1);
        SHA256_Update(&c, ev->unique_id, strlen(ev->unique_id));
        SHA256_Final(md, &c);
        memcpy(out, md, CC_STATSEVENT_ID_LEN);
        return;
    }
    {
        /* Floor divisions: timestamps before 1970 still land in the window that holds them. */
        int64_t s = ev->ts_us / US_PER_SEC - (ev->ts_us % US_PER_SEC < 0);
        int64_t w = window_s < 1 ? 1 : window_s;
        int64_t start = (s / w - (s % w < 0)) * w;
        char num[24];
        int n = snprintf(num, sizeof(num), "%lld", (long long)start);

        sev_hmac_begin(&c, salt);
        SHA256_Update(&c, "e", 2); /* "e\0" */
        SHA256_Update(&c, ev->type, strlen(ev->type) + 1);
        SHA256_Update(&c, ev->object_id, strlen(ev->object_id) + 1);
        sev_update_visitor(&c, ev);
        SHA256_Update(&c, "", 1);
        SHA256_Update(&c, num, (size_t)n);
        sev_hmac_end(&c, salt, out);
    }
}

char *cc_statsevent_hex(const uint8_t id[CC_STATSEVENT_ID_LEN],
                        char out[2 * CC_STATSEVENT_ID_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";

    for (int i = 0; i < CC_STATSEVENT_ID_LEN; i++) {
        out[2 * i] = digits[id[i] >> 4];
        out[2 * i + 1] = digits[id[i] & 15];
    }
    out[2 * CC_STATSEVENT_ID_LEN] = '\0';
    return out;
}

/* ---- Robots ------------------------------------------------------------------------------ */

struct sev_pat {
    uint16_t pair; /* first two bytes, lower case: byte0 << 8 | byte1 */
    uint32_t off;  /* into text */
    uint32_t len;  /* >= 2 */
};

struct cc_statsevent_robots {
    uint64_t triples[65536 / 64]; /* bit sev_tri(a, b, c): a pattern of >= 3 bytes starts abc */
    uint64_t pairs[65536 / 64];   /* bit p: the two-byte pattern p (byte0 << 8 | byte1) */
    uint64_t singles[256 / 64];   /* bit c: the one-byte pattern c */
    bool has_pairs, has_singles;
    size_t n;             /* patterns, singles included */
    size_t npats;         /* entries of pats (patterns of two bytes or more) */
    struct sev_pat *pats; /* sorted by pair */
    char *text;           /* the lower-cased patterns */
};

/* 16-bit hash of three lower-cased bytes (Fibonacci hashing). */
static inline unsigned sev_tri(unsigned a, unsigned b, unsigned c)
{
    return (uint32_t)((a << 16 | b << 8 | c) * 0x9E3779B1u) >> 16;
}

static inline unsigned sev_lower(unsigned char c)
{
    return (unsigned)c - 'A' < 26u ? c | 0x20u : c;
}

static int sev_pat_cmp(const void *a, const void *b)
{
    const struct sev_pat *x = a, *y = b;

    return (int)x->pair - (int)y->pair;
}

static bool sev_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

struct cc_statsevent_robots *cc_statsevent_robots_new(const char *text, size_t len)
{
    struct cc_statsevent_robots *r = calloc(1, sizeof(*r));
    size_t cap = 0;
    size_t used = 0;
    size_t i = 0;

    if (r == NULL)
        return NULL;
    if (len > 0 && (r->text = malloc(len)) == NULL)
        goto fail;
    while (i < len) {
        size_t start = i, end;

        while (i < len && text[i] != '\n')
            i++;
        end = i++;
        while (start < end && sev_blank(text[start]))
            start++;
        while (end > start && sev_blank(text[end - 1]))
            end--;
        if (start == end || text[start] == '#')
            continue;
        /* A NUL can never occur in a C-string user agent: such a pattern could not match. */
        if (memchr(text + start, '\0', end - start) != NULL || end - start > UINT32_MAX)
            continue;
        r->n++;
        if (end - start == 1) {
            unsigned c = sev_lower((unsigned char)text[start]);

            r->singles[c / 64] |= 1ULL << (c % 64);
            r->has_singles = true;
            continue;
        }
        if (r->npats == cap) {
            size_t ncap = cap == 0 ? 64 : cap * 2;
            struct sev_pat *p = realloc(r->pats, ncap * sizeof(*p));

            if (p == NULL)
                goto fail;
            r->pats = p;
            cap = ncap;
        }
        for (size_t k = start; k < end; k++)
            r->text[used + k - start] = (char)sev_lower((unsigned char)text[k]);
        r->pats[r->npats].off = (uint32_t)used;
        r->pats[r->npats].len = (uint32_t)(end - start);
        r->pats[r->npats].pair =
            (uint16_t)((unsigned char)r->text[used] << 8 | (unsigned char)r->text[used + 1]);
        if (end - start == 2) {
            r->pairs[r->pats[r->npats].pair / 64] |= 1ULL << (r->pats[r->npats].pair % 64);
            r->has_pairs = true;
        } else {
            unsigned t = sev_tri((unsigned char)r->text[used], (unsigned char)r->text[used + 1],
                                 (unsigned char)r->text[used + 2]);

            r->triples[t / 64] |= 1ULL << (t % 64);
        }
        used += end - start;
        r->npats++;
    }
    if (r->npats > 1)
        qsort(r->pats, r->npats, sizeof(*r->pats), sev_pat_cmp);
    return r;
fail:
    cc_statsevent_robots_free(r);
    return NULL;
}

/* deploy/stats/robots.txt, as a byte array CMake generates in the build tree. */
extern const unsigned char cc_robots_txt[];
extern const size_t cc_robots_txt_len;

struct cc_statsevent_robots *cc_statsevent_robots_builtin(void)
{
    return cc_statsevent_robots_new((const char *)cc_robots_txt, cc_robots_txt_len);
}

size_t cc_statsevent_robots_count(const struct cc_statsevent_robots *r)
{
    return r != NULL ? r->n : 0;
}

/* Does a pattern that starts with `pair` match at s (whose first two bytes are that pair)? */
static bool sev_match_at(const struct cc_statsevent_robots *r, unsigned pair,
                         const unsigned char *s)
{
    size_t lo = 0, hi = r->npats;

    while (lo < hi) { /* first entry with pats[].pair >= pair */
        size_t mid = lo + (hi - lo) / 2;

        if (r->pats[mid].pair < pair)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (; lo < r->npats && r->pats[lo].pair == pair; lo++) {
        const char *p = r->text + r->pats[lo].off;
        uint32_t k = 2;

        /* s is NUL-terminated and no pattern byte is NUL, so a short s stops the loop. */
        while (k < r->pats[lo].len && (unsigned char)p[k] == sev_lower(s[k]))
            k++;
        if (k == r->pats[lo].len)
            return true;
    }
    return false;
}

bool cc_statsevent_robots_match(const struct cc_statsevent_robots *r, const char *user_agent)
{
    const unsigned char *s = (const unsigned char *)user_agent;
    unsigned c0, c1;

    if (r == NULL || s == NULL || *s == '\0')
        return false;
    /* c0 c1 c2: the bytes at s, lower-cased; s[2] is read only while s[1] is not the end. */
    c0 = sev_lower(s[0]);
    c1 = sev_lower(s[1]);
    for (; c0 != 0; s++) {
        unsigned c2 = c1 != 0 ? sev_lower(s[2]) : 0;

        if (r->has_singles && (r->singles[c0 / 64] & (1ULL << (c0 % 64))))
            return true;
        if (c1 != 0) {
            unsigned pair = c0 << 8 | c1;
            unsigned t = sev_tri(c0, c1, c2);
            bool maybe = (c2 != 0 && (r->triples[t / 64] & (1ULL << (t % 64)))) ||
                         (r->has_pairs && (r->pairs[pair / 64] & (1ULL << (pair % 64))));

            if (maybe && sev_match_at(r, pair, s))
                return true;
        }
        c0 = c1;
        c1 = c2;
    }
    return false;
}

void cc_statsevent_robots_free(struct cc_statsevent_robots *r)
{
    if (r == NULL)
        return;
    free(r->pats);
    free(r->text);
    free(r);
}
