/* STUB (canvas-exec): a minimal src/chord.h so the executor integration builds before the
 * canvas-chord branch is merged. The lead drops this commit; canvas-chord's src/chord.{c,h}
 * replace it (same contract: /work/canvas-plan.md). */
#ifndef CELERYC_CHORD_H
#define CELERYC_CHORD_H

#include <jansson.h>

#include "backend.h"
#include "canvas.h"
#include "celeryc/status.h"
#include "celeryc/task.h"
#include "config.h"

int cc_chord_part_return(struct cc_backend *be, const struct cc_config *cfg,
                         const struct cc_task_request *req, const char *state, const json_t *result,
                         const struct cc_canvas_ctx *ctx, struct cc_canvas_plan *plan,
                         char **done_group, struct cc_err *err) CC_MUST_USE;
int cc_chord_done(struct cc_backend *be, const char *group_id, struct cc_err *err) CC_MUST_USE;
void cc_chord_executor_set(struct cc_backend *be, const struct cc_config *cfg);

#endif
