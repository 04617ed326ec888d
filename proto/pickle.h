/* A writer (never a reader) of Python pickle protocol 2 for JSON values, for Celery's database
 * result backend, whose `result` column is a SQLAlchemy PickleType (celery-wire.md §3.5).
 * Pure: bytes out, no I/O, no globals.
 */
#ifndef CELERYC_PROTO_PICKLE_H
#define CELERYC_PROTO_PICKLE_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "celeryc/status.h"

/* Nesting deeper than this is refused (CC_ERANGE); Python's pickler stops near 1000 too. */
#define CC_PICKLE_MAX_DEPTH 1000

/* pickle.dumps(obj, protocol=2) of the Python value json.loads would build from `v`: dict
 * (insertion order), list, str, int (BININT1/BININT2/BININT, LONG1 beyond 32 bits), float
 * (BINFLOAT), None, True/False, with the BINPUT memo records Python's pickler writes, so the
 * bytes equal Python's for values without repeated objects (Python refers to an object it has
 * already written with BINGET; this writer writes it again, which unpickles to an equal value).
 * `top_as_tuple`: a top-level array is written as a tuple. v NULL: None.
 * Returns CC_OK and *out (owned, free(); *len bytes, may contain NUL), CC_ERANGE (nesting),
 * CC_ENOMEM. */
int cc_pickle_dumps(const json_t *v, bool top_as_tuple, char **out, size_t *len,
                    struct cc_err *err) CC_MUST_USE;

/* True if `v` is an exception dict as Celery's prepare_exception builds it: an object with
 * string "exc_type" and "exc_module" and an "exc_message" (the other keys are allowed). */
bool cc_pickle_is_exc(const json_t *v);

/* The `result` column Celery's DatabaseBackend writes for a state whose JSON result is
 * `result`: the value itself, except that in the exception states (FAILURE, RETRY, REVOKED)
 * an exception dict's exc_message array is a tuple, as prepare_exception() returns
 * tuple(exc.args) (`{'exc_type': 'ValueError', 'exc_message': ('boom',), 'exc_module':
 * 'builtins'}`). Returns what cc_pickle_dumps returns. */
int cc_pickle_result(const char *status, const json_t *result, char **out, size_t *len,
                     struct cc_err *err) CC_MUST_USE;

#endif
