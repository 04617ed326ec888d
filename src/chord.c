/* STUB (canvas-exec): does nothing; replaced by canvas-chord's src/chord.c. Drop this commit
 * when merging canvas-chord. */
#include "chord.h"

int cc_chord_part_return(struct cc_backend *be, const struct cc_config *cfg,
                         const struct cc_task_request *req, const char *state, const json_t *result,
                         const struct cc_canvas_ctx *ctx, struct cc_canvas_plan *plan,
                         char **done_group, struct cc_err *err)
{
    (void)be;
    (void)cfg;
    (void)req;
    (void)state;
    (void)result;
    (void)ctx;
    (void)plan;
    (void)err;
    *done_group = NULL;
    return CC_OK;
}

int cc_chord_done(struct cc_backend *be, const char *group_id, struct cc_err *err)
{
    (void)be;
    (void)group_id;
    (void)err;
    return CC_OK;
}

void cc_chord_executor_set(struct cc_backend *be, const struct cc_config *cfg)
{
    (void)be;
    (void)cfg;
}
