/* Internal to cc_proto: a growable byte buffer and the Python-compatible writers built on it
 * (json.dumps with the default separators and ensure_ascii, repr() of JSON values, float
 * repr). Not part of the public contract; other directories use result.h / pyrepr.h.
 */
#ifndef CELERYC_PROTO_STRBUF_H
#define CELERYC_PROTO_STRBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* Caller's storage, zero-initialise (or use cc_strbuf_init). `limit` (0 = none) stops growth:
 * once len would exceed it, further appends are dropped and `truncated` is set, so a repr of
 * a huge value costs O(limit), not O(value). After an allocation failure `oom` is set and
 * every later append is a no-op. */
struct cc_strbuf {
    char *p;
    size_t len;
    size_t cap;
    size_t limit;
    bool oom;
    bool truncated;
};

void cc_strbuf_init(struct cc_strbuf *b, size_t limit);
void cc_strbuf_deinit(struct cc_strbuf *b);
/* Reserve room for `n` more bytes (plus a NUL). False on OOM. */
bool cc_strbuf_reserve(struct cc_strbuf *b, size_t n);
void cc_strbuf_putn(struct cc_strbuf *b, const char *s, size_t n);
void cc_strbuf_puts(struct cc_strbuf *b, const char *s);
void cc_strbuf_putc(struct cc_strbuf *b, char c);
void cc_strbuf_int(struct cc_strbuf *b, long long v);
/* Take the NUL-terminated contents (owned, free()), leaving `b` empty. NULL if oom. */
char *cc_strbuf_take(struct cc_strbuf *b, size_t *len);

/* Python float.__repr__ of `d` (shortest round-trip digits, "1e+16", "5.0", "inf", "nan")
 * into `out` (needs 32 bytes). Returns the length. */
size_t cc_strbuf_float_repr(double d, char *out);

/* How a writer spells scalars and strings: json.dumps (is_json) or Python's repr(). */
struct cc_strbuf_style {
    void (*str)(struct cc_strbuf *b, const char *s, size_t n); /* a string literal */
    bool is_json; /* true/false/null and NaN/Infinity; else True/False/None, nan/inf */
};
/* Walk `v` writing it in `st`'s spelling with Python's ", " / ": " separators; `as_tuple`
 * renders a top-level array as a tuple ("(1,)"). Stops early once `b` is truncated. */
void cc_strbuf_value(struct cc_strbuf *b, const json_t *v, const struct cc_strbuf_style *st,
                     int as_tuple);

/* json.dumps(v) with separators (", ", ": ") and ensure_ascii=True, keys in insertion order. */
void cc_strbuf_json(struct cc_strbuf *b, const json_t *v);
/* A JSON string literal of the UTF-8 bytes s[0..n) as json.dumps writes it. */
void cc_strbuf_json_str(struct cc_strbuf *b, const char *s, size_t n);

/* repr(v) of the Python value json.loads would build; `as_tuple` renders a top-level array
 * as a tuple. */
void cc_pyrepr_put(struct cc_strbuf *b, const json_t *v, int as_tuple);

/* str(exc) of the Python exception exc_module.exc_type(*exc_args) (exc_args a JSON array, or
 * one value, or NULL): the args' str, with the __str__ of the classes Celery users meet
 * (KeyError, OSError and its subclasses, billiard's time limits). */
void cc_pyrepr_put_exc_str(struct cc_strbuf *b, const char *exc_module, const char *exc_type,
                           const json_t *exc_args);
/* The last line of Python's traceback for that exception, without the newline
 * (traceback.format_exception_only): "ValueError: boom", "app.CustomError: ('x', 42)",
 * "billiard.exceptions.SoftTimeLimitExceeded: SoftTimeLimitExceeded()", "celery.exceptions.Ignore".
 */
void cc_pyrepr_put_exc_line(struct cc_strbuf *b, const char *exc_module, const char *exc_type,
                            const json_t *exc_args);

/* Length of the valid UTF-8 prefix of s[0..n): n when it is all valid (no overlongs, no
 * surrogates, nothing above U+10FFFF). */
size_t cc_strbuf_utf8_valid_prefix(const uint8_t *s, size_t n);

#endif
