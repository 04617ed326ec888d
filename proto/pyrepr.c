/* Python repr() of JSON values (proto/pyrepr.h), for argsrepr / kwargsrepr headers, events
 * and logs (celery-wire.md §2.2, §4.3).
 *
 * Design: one recursive pass into a cc_strbuf whose growth is capped at max_chars + 1, so the
 * repr of a 100 MB argument costs O(max_chars). Python semantics matched: str quoting
 * (single quotes unless the text holds ' and no "), escapes \\ \' \n \r \t and \xNN for other
 * C0 controls and DEL, non-ASCII left as is when printable; None/True/False; float repr via
 * cc_strbuf_float_repr(); dicts in insertion order; tuples "(1,)".
 *
 * Deliberate simplifications (documented in the header contract's spirit):
 *  - Printability of non-ASCII uses a small table (C1 controls, NBSP, soft hyphen, the
 *    Zs/Zl/Zp/Cf blocks below U+3001, BOM, U+FFF9..U+FFFB) rather than the full Unicode
 *    database; rare characters outside it print raw where Python would escape them.
 *  - Truncation is a plain cut: when the repr exceeds max_chars bytes it is cut at a UTF-8
 *    boundary to at most max_chars - 3 bytes and "..." is appended. Celery's saferepr
 *    truncates per element instead, so long reprs differ in their tails (informational only).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pyrepr.h"
#include "strbuf.h"

static int py_printable(uint32_t cp)
{
    if (cp < 0x20 || cp == 0x7f)
        return 0;
    if (cp < 0x7f)
        return 1;
    if (cp <= 0xa0 || cp == 0xad)
        return 0;
    if (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202f) ||
        (cp >= 0x205f && cp <= 0x2064) || (cp >= 0x2066 && cp <= 0x206f) || cp == 0x3000 ||
        cp == 0xfeff || (cp >= 0xfff9 && cp <= 0xfffb) || (cp >= 0xe000 && cp <= 0xf8ff))
        return 0;
    return 1;
}

static void repr_str(struct cc_strbuf *b, const char *s, size_t n)
{
    const uint8_t *u = (const uint8_t *)s;
    char quote = '\'';
    char esc[12];

    if (memchr(s, '\'', n) != NULL && memchr(s, '"', n) == NULL)
        quote = '"';
    cc_strbuf_putc(b, quote);
    for (size_t i = 0; i < n && !b->truncated;) {
        size_t run = i;

        while (run < n && u[run] >= 0x20 && u[run] < 0x7f && u[run] != '\\' &&
               u[run] != (uint8_t)quote)
            run++;
        if (run > i) {
            cc_strbuf_putn(b, s + i, run - i);
            i = run;
            continue;
        }
        if (u[i] == '\\' || u[i] == (uint8_t)quote) {
            esc[0] = '\\';
            esc[1] = (char)u[i];
            cc_strbuf_putn(b, esc, 2);
            i++;
        } else if (u[i] < 0x80) {
            if (u[i] == '\n')
                cc_strbuf_putn(b, "\\n", 2);
            else if (u[i] == '\r')
                cc_strbuf_putn(b, "\\r", 2);
            else if (u[i] == '\t')
                cc_strbuf_putn(b, "\\t", 2);
            else
                cc_strbuf_putn(b, esc, (size_t)snprintf(esc, sizeof(esc), "\\x%02x", u[i]));
            i++;
        } else {
            size_t k = u[i] >= 0xf0 ? 3 : u[i] >= 0xe0 ? 2 : 1;
            uint32_t cp;

            if (k >= n - i)
                break; /* cannot happen for jansson strings (valid UTF-8) */
            cp = u[i] & (0x3fu >> k);
            for (size_t j = 1; j <= k; j++)
                cp = (cp << 6) | (u[i + j] & 0x3f);
            if (py_printable(cp))
                cc_strbuf_putn(b, s + i, k + 1);
            else if (cp <= 0xff)
                cc_strbuf_putn(b, esc, (size_t)snprintf(esc, sizeof(esc), "\\x%02x", cp));
            else if (cp <= 0xffff)
                cc_strbuf_putn(b, esc, (size_t)snprintf(esc, sizeof(esc), "\\u%04x", cp));
            else
                cc_strbuf_putn(b, esc, (size_t)snprintf(esc, sizeof(esc), "\\U%08x", cp));
            i += k + 1;
        }
    }
    cc_strbuf_putc(b, quote);
}

static const struct cc_strbuf_style repr_style = {.str = repr_str, .is_json = false};

void cc_pyrepr_put(struct cc_strbuf *b, const json_t *v, int as_tuple)
{
    cc_strbuf_value(b, v, &repr_style, as_tuple);
}

char *cc_pyrepr(const json_t *v, int as_tuple, size_t max_chars)
{
    struct cc_strbuf b;

    /* One byte over the cap tells "exactly max_chars" from "longer". */
    cc_strbuf_init(&b, max_chars ? max_chars + 1 : 0);
    if (v == NULL)
        cc_strbuf_putn(&b, "None", 4);
    else
        cc_pyrepr_put(&b, v, as_tuple);
    if (!b.oom && max_chars != 0 && b.len > max_chars) {
        size_t keep = max_chars > 3 ? max_chars - 3 : max_chars;

        /* Back up to a UTF-8 lead byte so the cut never splits a character. */
        while (keep > 0 && ((uint8_t)b.p[keep] & 0xc0) == 0x80)
            keep--;
        b.len = keep;
        b.p[keep] = '\0';
        if (max_chars > 3) {
            b.limit = 0;
            cc_strbuf_putn(&b, "...", 3);
        }
    }
    return cc_strbuf_take(&b, NULL);
}

char *cc_pyrepr_exc(const char *exc_type, const json_t *exc_args)
{
    struct cc_strbuf b;

    cc_strbuf_init(&b, 0);
    cc_strbuf_puts(&b, exc_type ? exc_type : "Exception");
    cc_strbuf_putc(&b, '(');
    /* BaseException.__repr__: the args tuple without the one-element trailing comma. */
    if (json_is_array(exc_args)) {
        for (size_t i = 0; i < json_array_size(exc_args); i++) {
            if (i)
                cc_strbuf_putn(&b, ", ", 2);
            cc_pyrepr_put(&b, json_array_get(exc_args, i), 0);
        }
    } else if (exc_args != NULL) {
        cc_pyrepr_put(&b, exc_args, 0);
    }
    cc_strbuf_putc(&b, ')');
    return cc_strbuf_take(&b, NULL);
}

const char *cc_pyrepr_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "dict";
    case JSON_ARRAY:
        return "list";
    case JSON_STRING:
        return "str";
    case JSON_INTEGER:
        return "int";
    case JSON_REAL:
        return "float";
    case JSON_TRUE:
    case JSON_FALSE:
        return "bool";
    case JSON_NULL:
    default:
        return "NoneType";
    }
}

/* ---- str(exc) and the last line of a traceback ------------------------------------- */

static int is_one_of(const char *s, const char *const *names)
{
    for (; *names != NULL; names++)
        if (strcmp(s, *names) == 0)
            return 1;
    return 0;
}

/* str(arg) of one exception argument: the text of a str, repr() of anything else. */
static void sbuf_pystr(struct cc_strbuf *b, const json_t *v)
{
    if (json_is_string(v))
        cc_strbuf_putn(b, json_string_value(v), json_string_length(v));
    else
        cc_pyrepr_put(b, v, 0);
}

void cc_pyrepr_put_exc_str(struct cc_strbuf *b, const char *exc_module, const char *exc_type,
                           const json_t *exc_args)
{
    /* OSError and its subclasses (builtins): OSError.__str__ with 2..5 args. */
    static const char *const oserrors[] = {"OSError",
                                           "IOError",
                                           "EnvironmentError",
                                           "BlockingIOError",
                                           "ChildProcessError",
                                           "ConnectionError",
                                           "BrokenPipeError",
                                           "ConnectionAbortedError",
                                           "ConnectionRefusedError",
                                           "ConnectionResetError",
                                           "FileExistsError",
                                           "FileNotFoundError",
                                           "InterruptedError",
                                           "IsADirectoryError",
                                           "NotADirectoryError",
                                           "PermissionError",
                                           "ProcessLookupError",
                                           "TimeoutError",
                                           NULL};
    /* KeyError and the celery.exceptions classes that derive from it: repr() of one arg. */
    static const char *const keyerrors[] = {"KeyError", "NotRegistered", "QueueNotFound", NULL};
    const char *mod = exc_module != NULL ? exc_module : "";
    const char *type = exc_type != NULL ? exc_type : "Exception";
    size_t n = json_is_array(exc_args) ? json_array_size(exc_args) : (exc_args != NULL);
    const json_t *a0 = json_is_array(exc_args) ? json_array_get(exc_args, 0) : exc_args;

    if (strcmp(mod, "billiard.exceptions") == 0 &&
        (strcmp(type, "TimeLimitExceeded") == 0 || strcmp(type, "SoftTimeLimitExceeded") == 0)) {
        /* billiard: "TimeLimitExceeded%s" % (self.args,) -> "TimeLimitExceeded(1,)". */
        cc_strbuf_puts(b, type);
        if (json_is_array(exc_args))
            cc_pyrepr_put(b, exc_args, 1);
        else if (exc_args != NULL) {
            cc_strbuf_putc(b, '(');
            cc_pyrepr_put(b, exc_args, 0);
            cc_strbuf_putn(b, ",)", 2);
        } else
            cc_strbuf_putn(b, "()", 2);
        return;
    }
    if (n == 0)
        return;
    if (strcmp(mod, "builtins") == 0 && n >= 2 && n <= 5 && is_one_of(type, oserrors)) {
        const json_t *fn = json_array_get(exc_args, 2), *fn2 = json_array_get(exc_args, 4);

        cc_strbuf_puts(b, "[Errno ");
        sbuf_pystr(b, a0);
        cc_strbuf_putn(b, "] ", 2);
        sbuf_pystr(b, json_array_get(exc_args, 1));
        if (fn != NULL && !json_is_null(fn)) {
            cc_strbuf_putn(b, ": ", 2);
            cc_pyrepr_put(b, fn, 0);
            if (fn2 != NULL && !json_is_null(fn2)) {
                cc_strbuf_puts(b, " -> ");
                cc_pyrepr_put(b, fn2, 0);
            }
        }
        return;
    }
    if (n > 1) {
        cc_pyrepr_put(b, exc_args, 1); /* str(self.args) */
        return;
    }
    if ((strcmp(mod, "builtins") == 0 || strcmp(mod, "celery.exceptions") == 0) &&
        is_one_of(type, keyerrors))
        cc_pyrepr_put(b, a0, 0);
    else
        sbuf_pystr(b, a0);
}

void cc_pyrepr_put_exc_line(struct cc_strbuf *b, const char *exc_module, const char *exc_type,
                            const json_t *exc_args)
{
    const char *type = exc_type != NULL ? exc_type : "Exception";
    size_t mark;

    /* traceback.TracebackException.format_exception_only: the module is left out for
     * builtins and __main__; IOError and EnvironmentError are OSError's aliases. */
    if (exc_module != NULL && strcmp(exc_module, "builtins") != 0 &&
        strcmp(exc_module, "__main__") != 0) {
        cc_strbuf_puts(b, exc_module);
        cc_strbuf_putc(b, '.');
    } else if (strcmp(type, "IOError") == 0 || strcmp(type, "EnvironmentError") == 0) {
        type = "OSError";
    }
    cc_strbuf_puts(b, type);
    cc_strbuf_putn(b, ": ", 2);
    mark = b->len;
    cc_pyrepr_put_exc_str(b, exc_module, exc_type, exc_args);
    if (b->len == mark && !b->oom) { /* empty str(): "Type" alone */
        b->len -= 2;
        b->p[b->len] = '\0';
    }
}

char *cc_pyrepr_exc_line(const char *exc_module, const char *exc_type, const json_t *exc_args)
{
    struct cc_strbuf b;

    cc_strbuf_init(&b, 0);
    cc_pyrepr_put_exc_line(&b, exc_module, exc_type, exc_args);
    return cc_strbuf_take(&b, NULL);
}
