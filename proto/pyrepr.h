/* Python repr() of JSON values, as Celery shows them in argsrepr, events and logs:
 * 5 -> "5", "a" -> "'a'", null -> "None", true -> "True", [1, "x"] -> "[1, 'x']",
 * {"a": 1} -> "{'a': 1}", 2.5 -> "2.5", 1e100 -> "1e+100". Strings get Python's quoting
 * (single quotes unless the text holds ' and no "). Pure. */
#ifndef CELERYC_PROTO_PYREPR_H
#define CELERYC_PROTO_PYREPR_H

#include <stddef.h>

#include <jansson.h>

/* Owned NUL-terminated repr, at most max_chars characters (0 = unlimited; Celery's argsrepr
 * uses 1024 and cuts with "..."), or NULL on OOM. `as_tuple` renders a JSON array as a
 * Python tuple "(2, 3)" ("(1,)" for one element), as Celery's argsrepr of args does. */
char *cc_pyrepr(const json_t *v, int as_tuple, size_t max_chars);

/* type(v).__name__ of the Python value a JSON value decodes to: "dict", "list", "str",
 * "int", "float", "bool", "NoneType". Static string. */
const char *cc_pyrepr_type_name(const json_t *v);

/* "ValueError('boom')" from an exception type and its args list (NULL = no args):
 * ExpectedException() / KeyError('k') / CustomError('custom failure', 42). Owned. */
char *cc_pyrepr_exc(const char *exc_type, const json_t *exc_args);

/* The last line Python prints for the exception exc_module.exc_type(*exc_args) at the end
 * of a traceback (traceback.format_exception_only, no newline): "ValueError: boom",
 * "KeyError: 'k'", "app.CustomError: ('custom failure', 42)", "celery.exceptions.Ignore",
 * "billiard.exceptions.TimeLimitExceeded: TimeLimitExceeded(1,)",
 * "FileNotFoundError: [Errno 2] No such file or directory: 'x'". Owned; NULL on OOM. */
char *cc_pyrepr_exc_line(const char *exc_module, const char *exc_type, const json_t *exc_args);

#endif
