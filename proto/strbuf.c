/* Growable byte buffer and Python-compatible JSON output (proto/strbuf.h).
 *
 * Why not json_dumps(): jansson 2.14 differs from Python's json.dumps in ways a byte-exact
 * comparison sees: it writes "\u00FC" where Python writes "\u00fc", and it formats reals with
 * "%.17g" (0.1 -> "0.10000000000000001", 1e16 -> "10000000000000000.0") where Python writes
 * the shortest round-trip repr ("0.1", "1e+16"). Celery stores results and publishes task
 * bodies with json.dumps(obj) (separators ", " and ": ", ensure_ascii=True), so this writer
 * reproduces exactly that: one pass over the value, amortised O(n) appends.
 *
 * Invariants: `p` is NUL-terminated whenever it is non-NULL; once `oom` is set the buffer
 * only shrinks (take/deinit). Implements the JSON conventions of celery-wire.md (header) and
 * §3.2 (result values).
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strbuf.h"

/* ---- Buffer ---------------------------------------------------------------------------- */

void cc_strbuf_init(struct cc_strbuf *b, size_t limit)
{
    memset(b, 0, sizeof(*b));
    b->limit = limit;
}

void cc_strbuf_deinit(struct cc_strbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

bool cc_strbuf_reserve(struct cc_strbuf *b, size_t n)
{
    size_t need;
    size_t cap;
    char *np;

    if (b->oom)
        return false;
    if (n > SIZE_MAX - b->len - 1) {
        b->oom = true;
        return false;
    }
    need = b->len + n + 1;
    if (need <= b->cap)
        return true;
    cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    np = realloc(b->p, cap);
    if (np == NULL) {
        b->oom = true;
        return false;
    }
    b->p = np;
    b->cap = cap;
    return true;
}

void cc_strbuf_putn(struct cc_strbuf *b, const char *s, size_t n)
{
    if (b->limit != 0 && n > b->limit - b->len) {
        n = b->limit - b->len; /* len never exceeds limit */
        b->truncated = true;
    }
    if (n == 0 || !cc_strbuf_reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void cc_strbuf_puts(struct cc_strbuf *b, const char *s)
{
    cc_strbuf_putn(b, s, strlen(s));
}

void cc_strbuf_putc(struct cc_strbuf *b, char c)
{
    cc_strbuf_putn(b, &c, 1);
}

void cc_strbuf_int(struct cc_strbuf *b, long long v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "%lld", v);

    cc_strbuf_putn(b, tmp, (size_t)n);
}

char *cc_strbuf_take(struct cc_strbuf *b, size_t *len)
{
    char *p;

    if (b->oom) {
        cc_strbuf_deinit(b);
        return NULL;
    }
    if (b->p == NULL && !cc_strbuf_reserve(b, 0))
        return NULL;
    p = b->p;
    if (len != NULL)
        *len = b->len;
    b->p = NULL;
    b->len = b->cap = 0;
    return p;
}

/* ---- UTF-8 ----------------------------------------------------------------------------- */

size_t cc_strbuf_utf8_valid_prefix(const uint8_t *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        uint8_t c = s[i];
        size_t k;
        uint32_t cp;

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return i;
        }
        if (k > n - i - 1)
            return i;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return i;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return i;
        i += k + 1;
    }
    return i;
}

/* ---- Float repr ------------------------------------------------------------------------ */

/* Python's repr(float) picks the shortest digit string that reads back as the same double
 * (David Gay's dtoa, mode 0), then writes it in fixed notation when the decimal exponent is
 * in [-4, 16) and in scientific notation ("1e-05", "1e+16") otherwise. We find the digits by
 * asking printf for 15, 16, then 17 significant digits and keeping the first that round-trips
 * (for normal doubles any shorter round-tripping string is the 15-digit one with trailing
 * zeros, which we strip; subnormals search from 1 digit).
 * Known gap: at an exact power of two the 16-digit candidate printf rounds to may fail while
 * another 16-digit string would pass; we then print 17 digits where Python prints 16. */
size_t cc_strbuf_float_repr(double d, char *out)
{
    char tmp[40];
    char digits[20];
    size_t nd = 0;
    int exp10;
    int decpt;
    size_t o = 0;
    char *e;

    if (isnan(d)) {
        memcpy(out, "nan", 4);
        return 3;
    }
    if (isinf(d)) {
        if (d < 0) {
            memcpy(out, "-inf", 5);
            return 4;
        }
        memcpy(out, "inf", 4);
        return 3;
    }
    /* Subnormals carry fewer than 53 bits, so their shortest form can be shorter than the
     * 15-digit rounding: search from 1 digit there. */
    for (int prec = d != 0 && fabs(d) < DBL_MIN ? 1 : 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, d);
        if (prec == 17 || strtod(tmp, NULL) == d)
            break;
    }
    /* tmp = [-]d.ddddde[+-]XX */
    e = strchr(tmp, 'e');
    exp10 = atoi(e + 1);
    for (const char *q = tmp; q < e; q++) {
        if (*q >= '0' && *q <= '9')
            digits[nd++] = *q;
    }
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    if (signbit(d))
        out[o++] = '-';
    decpt = exp10 + 1;
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            out[o++] = '0';
            out[o++] = '.';
            for (int i = 0; i < -decpt; i++)
                out[o++] = '0';
            memcpy(out + o, digits, nd);
            o += nd;
        } else if ((size_t)decpt >= nd) {
            memcpy(out + o, digits, nd);
            o += nd;
            for (size_t i = nd; i < (size_t)decpt; i++)
                out[o++] = '0';
            out[o++] = '.';
            out[o++] = '0';
        } else {
            memcpy(out + o, digits, (size_t)decpt);
            o += (size_t)decpt;
            out[o++] = '.';
            memcpy(out + o, digits + decpt, nd - (size_t)decpt);
            o += nd - (size_t)decpt;
        }
    } else {
        out[o++] = digits[0];
        if (nd > 1) {
            out[o++] = '.';
            memcpy(out + o, digits + 1, nd - 1);
            o += nd - 1;
        }
        o += (size_t)snprintf(out + o, 8, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    }
    out[o] = '\0';
    return o;
}

/* ---- json.dumps ------------------------------------------------------------------------ */

static const char hexdig[] = "0123456789abcdef";

static void json_u_escape(struct cc_strbuf *b, uint32_t u)
{
    char e[6] = {
        '\\',          'u', hexdig[(u >> 12) & 15], hexdig[(u >> 8) & 15], hexdig[(u >> 4) & 15],
        hexdig[u & 15]};

    cc_strbuf_putn(b, e, 6);
}

void cc_strbuf_json_str(struct cc_strbuf *b, const char *s, size_t n)
{
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0;

    cc_strbuf_putc(b, '"');
    while (i < n) {
        size_t run = i;
        uint8_t c;

        /* Copy the longest run Python leaves alone (printable ASCII but '"' and '\\'). */
        while (run < n && u[run] >= 0x20 && u[run] < 0x7f && u[run] != '"' && u[run] != '\\')
            run++;
        if (run > i) {
            cc_strbuf_putn(b, s + i, run - i);
            i = run;
            if (i == n)
                break;
        }
        c = u[i];
        switch (c) {
        case '"':
            cc_strbuf_putn(b, "\\\"", 2);
            break;
        case '\\':
            cc_strbuf_putn(b, "\\\\", 2);
            break;
        case '\n':
            cc_strbuf_putn(b, "\\n", 2);
            break;
        case '\r':
            cc_strbuf_putn(b, "\\r", 2);
            break;
        case '\t':
            cc_strbuf_putn(b, "\\t", 2);
            break;
        case '\b':
            cc_strbuf_putn(b, "\\b", 2);
            break;
        case '\f':
            cc_strbuf_putn(b, "\\f", 2);
            break;
        default:
            if (c < 0x80) {
                json_u_escape(b, c);
            } else {
                /* Input is valid UTF-8 (jansson checks every string it holds). */
                uint32_t cp;
                size_t k = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : 1;

                if (k >= n - i) { /* defensive: truncated sequence */
                    json_u_escape(b, 0xfffd);
                    i = n;
                    continue;
                }
                cp = c & (0x3f >> k);
                for (size_t j = 1; j <= k; j++)
                    cp = (cp << 6) | (u[i + j] & 0x3f);
                if (cp >= 0x10000) {
                    cp -= 0x10000;
                    json_u_escape(b, 0xd800 | (cp >> 10));
                    json_u_escape(b, 0xdc00 | (cp & 0x3ff));
                } else {
                    json_u_escape(b, cp);
                }
                i += k;
            }
            break;
        }
        i++;
    }
    cc_strbuf_putc(b, '"');
}

void cc_strbuf_value(struct cc_strbuf *b, const json_t *v, const struct cc_strbuf_style *st,
                     int as_tuple)
{
    char tmp[40];

    if (b->oom || b->truncated)
        return;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *key;
        json_t *val;
        int first = 1;

        cc_strbuf_putc(b, '{');
        json_object_foreach((json_t *)v, key, val)
        {
            if (b->truncated)
                break;
            if (!first)
                cc_strbuf_putn(b, ", ", 2);
            first = 0;
            /* Keys may hold NUL bytes (JSON_ALLOW_NUL); jansson 2.14 keeps their length. */
            st->str(b, key, json_object_iter_key_len(json_object_key_to_iter(key)));
            cc_strbuf_putn(b, ": ", 2);
            cc_strbuf_value(b, val, st, 0);
        }
        cc_strbuf_putc(b, '}');
        break;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(v);

        cc_strbuf_putc(b, as_tuple ? '(' : '[');
        for (size_t i = 0; i < n && !b->truncated; i++) {
            if (i)
                cc_strbuf_putn(b, ", ", 2);
            cc_strbuf_value(b, json_array_get(v, i), st, 0);
        }
        if (as_tuple && n == 1)
            cc_strbuf_putc(b, ',');
        cc_strbuf_putc(b, as_tuple ? ')' : ']');
        break;
    }
    case JSON_STRING:
        st->str(b, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        cc_strbuf_int(b, (long long)json_integer_value(v));
        break;
    case JSON_REAL: {
        double d = json_real_value(v);

        /* jansson refuses non-finite reals, but json.dumps would say Infinity / NaN. */
        if (st->is_json && isnan(d))
            cc_strbuf_puts(b, "NaN");
        else if (st->is_json && isinf(d))
            cc_strbuf_puts(b, d < 0 ? "-Infinity" : "Infinity");
        else
            cc_strbuf_putn(b, tmp, cc_strbuf_float_repr(d, tmp));
        break;
    }
    case JSON_TRUE:
        cc_strbuf_puts(b, st->is_json ? "true" : "True");
        break;
    case JSON_FALSE:
        cc_strbuf_puts(b, st->is_json ? "false" : "False");
        break;
    case JSON_NULL:
        cc_strbuf_puts(b, st->is_json ? "null" : "None");
        break;
    }
}

static const struct cc_strbuf_style json_style = {.str = cc_strbuf_json_str, .is_json = true};

void cc_strbuf_json(struct cc_strbuf *b, const json_t *v)
{
    cc_strbuf_value(b, v, &json_style, 0);
}
