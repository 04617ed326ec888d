/* Python operator semantics over JSON values, for tasks that mirror Python code: `a + b`,
 * sum(), `a * b`, truthiness and time.sleep(), raising the TypeError/OverflowError Python
 * would (with CPython 3.11's wording) through the task API.
 *
 * JSON true/false act as Python bools (ints 1/0). Integers are int64: where Python would grow a
 * big int, these raise OverflowError instead. Results are owned by the caller. */
#ifndef CELERYC_TASKS_PYOPS_H
#define CELERYC_TASKS_PYOPS_H

#include <stdbool.h>

#include <jansson.h>

#include "celeryc/task.h"

/* type(v).__name__: "int", "float", "str", "list", "dict", "NoneType", "bool". */
const char *cc_pyops_type_name(const json_t *v);

/* bool(v). */
bool cc_pyops_truthy(const json_t *v);

/* a + b: numbers, str + str, list + list. Returns CC_OK with *out owned, or CC_TASK_FAILED. */
int cc_pyops_add(struct cc_task_ctx *ctx, const json_t *a, const json_t *b, json_t **out);

/* a * b for numbers (sequence repetition is not supported: TypeError). */
int cc_pyops_mul(struct cc_task_ctx *ctx, const json_t *a, const json_t *b, json_t **out);

/* sum(iterable) with start 0. */
int cc_pyops_sum(struct cc_task_ctx *ctx, const json_t *iterable, json_t **out);

/* Validate a time.sleep() argument (number >= 0) into *seconds, or raise as Python does. */
int cc_pyops_seconds(struct cc_task_ctx *ctx, const json_t *v, double *seconds);

/* Sleep `seconds`, resuming after signals (time limits end the process from outside). */
void cc_pyops_sleep(double seconds);

/* str(v) as Python prints a JSON value: strings as-is, everything else repr(). Owned, or
 * NULL on OOM. */
char *cc_pyops_str(const json_t *v);

#endif
