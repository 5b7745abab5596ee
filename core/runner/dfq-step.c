/* Step helpers (core/runner): teacher and student forwards with taps and
 * quantizer hooks, and the evaluation of a weighted loss list. Synthesizers use
 * them for generator losses, the runner for student losses. */
#include <math.h>
#include <string.h>

#include <dfq/dfq.h>
#include <dfq/dfq-loss.h>
#include <dfq/dfq-quantizer.h>
#include <dfq/dfq-step.h>

static void
dfq_step_add_taps (DfqForward *fwd, DfqTapSet *const *taps, guint n_taps)
{
    for (guint i = 0; i < n_taps; i++)
        if (taps[i] != NULL)
            dfq_forward_add_taps (fwd, taps[i]);
}

DfqTensor *
dfq_step_teacher_forward (DfqStepContext *ctx, DfqTensor *x, DfqTapSet *const *taps, guint n_taps)
{
    DfqForward fwd;
    dfq_forward_init (&fwd, ctx->arena, FALSE);
    fwd.seed = ctx->seed;
    fwd.step = (guint64) ctx->step;
    dfq_transform_chain_install (ctx->transforms, &fwd);
    dfq_step_add_taps (&fwd, taps, n_taps);
    return dfq_model_forward (ctx->teacher, &fwd, x);
}

DfqTensor *
dfq_step_student_forward (DfqStepContext *ctx, DfqTensor *x, DfqTapSet *const *taps, guint n_taps)
{
    g_return_val_if_fail (ctx->student != NULL, NULL);
    DfqForward fwd;
    dfq_forward_init (&fwd, ctx->arena, ctx->student_bn_training);
    fwd.seed = ctx->seed;
    fwd.step = (guint64) ctx->step;
    if (ctx->quantizer != NULL)
        dfq_quantizer_hook (ctx->quantizer, &fwd);
    dfq_step_add_taps (&fwd, taps, n_taps);
    return dfq_model_forward (ctx->student, &fwd, x);
}

/* Creates the loss's tap sets on first use, from its class's patterns. */
static void
dfq_step_loss_ensure_taps (DfqLoss *loss)
{
    const DfqLossClass *klass = DFQ_LOSS_CLASS (loss);
    if (loss->teacher_taps == NULL && klass->teacher_tap_patterns != NULL) {
        const char *const *p = klass->teacher_tap_patterns (loss);
        if (p != NULL && p[0] != NULL)
            loss->teacher_taps = dfq_tap_set_new (p);
    }
    if (loss->student_taps == NULL && klass->student_tap_patterns != NULL) {
        const char *const *p = klass->student_tap_patterns (loss);
        if (p != NULL && p[0] != NULL)
            loss->student_taps = dfq_tap_set_new (p);
    }
}

DfqTensor *
dfq_step_eval_losses (DfqStepContext *ctx, GPtrArray *losses, DfqTensor *x, DfqTensor *labels,
                      DfqTensor *soft_labels, double *values, GError **error)
{
    g_return_val_if_fail (losses != NULL && losses->len > 0, NULL);
    DfqTapSet *tsets[DFQ_FORWARD_MAX_TAP_SETS] = { NULL }, *ssets[DFQ_FORWARD_MAX_TAP_SETS] = { NULL };
    guint n_t = 0, n_s = 0;
    gboolean need_student = FALSE;
    for (guint i = 0; i < losses->len; i++) {
        DfqLoss *loss = losses->pdata[i];
        const DfqLossClass *klass = DFQ_LOSS_CLASS (loss);
        dfq_step_loss_ensure_taps (loss);
        if (klass->needs_student != NULL && klass->needs_student (loss))
            need_student = TRUE;
        if (loss->teacher_taps != NULL && n_t < DFQ_FORWARD_MAX_TAP_SETS) {
            dfq_tap_set_clear (loss->teacher_taps);
            tsets[n_t++] = loss->teacher_taps;
        }
        if (loss->student_taps != NULL && n_s < DFQ_FORWARD_MAX_TAP_SETS) {
            dfq_tap_set_clear (loss->student_taps);
            ssets[n_s++] = loss->student_taps;
            need_student = TRUE;
        }
    }
    DfqLossInputs in = { x, labels, soft_labels, NULL, NULL };
    in.teacher_logits = dfq_step_teacher_forward (ctx, x, tsets, n_t);
    if (!dfq_transform_chain_check (ctx->transforms, error))
        return NULL;
    if (need_student) {
        if (ctx->student == NULL) {
            g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE,
                         "a loss needs the student, but this phase has none");
            return NULL;
        }
        in.student_logits = dfq_step_student_forward (ctx, x, ssets, n_s);
    }
    DfqTensor *total = NULL;
    for (guint i = 0; i < losses->len; i++) {
        DfqLoss *loss = losses->pdata[i];
        DfqFeature *f = (DfqFeature *) loss;
        DfqTensor *v = DFQ_LOSS_CLASS (loss)->compute (loss, ctx, &in, error);
        if (v == NULL) {
            g_prefix_error (error, "loss '%s': ", f->klass->name);
            return NULL;
        }
        float value = dfq_tensor_f32 (v)[0];
        if (!isfinite (value)) {
            g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_DIVERGED,
                         "loss '%s' (%s) is %g at epoch %d, iteration %d: training diverged",
                         f->klass->name, f->label ? f->label : "", value, ctx->epoch, ctx->iter);
            return NULL;
        }
        if (values != NULL)
            values[i] = value;
        DfqTensor *weighted = f->weight == 1.0 ? v : dfq_affine (ctx->arena, v, (float) f->weight, 0.0f);
        total = total == NULL ? weighted : dfq_add (ctx->arena, total, weighted);
    }
    return total;
}

void
dfq_tap_set_collect (const DfqTapSet *set, const char *pattern, GPtrArray *out)
{
    g_autoptr (GPatternSpec) spec = g_pattern_spec_new (pattern);
    for (guint i = 0; i < dfq_tap_set_size (set); i++) {
        const DfqTap *t = dfq_tap_set_get (set, i);
        if (g_pattern_spec_match_string (spec, t->name))
            g_ptr_array_add (out, (gpointer) t);
    }
}

void
dfq_loss_teardown (DfqFeature *self)
{
    DfqLoss *loss = (DfqLoss *) self;
    g_clear_pointer (&loss->teacher_taps, dfq_tap_set_free);
    g_clear_pointer (&loss->student_taps, dfq_tap_set_free);
}
