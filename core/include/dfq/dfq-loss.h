/* Losses: feature kind LOSS. A loss computes one unweighted scalar from the
 * step's inputs and the taps it asked for; pipelines list losses with weights
 * (`losses: [{use: kd, weight: 1}, {use: bns, weight: 0.1}]`). */
#pragma once

#include <glib.h>
#include <dfq/dfq-macros.h>
#include <dfq/dfq-plugin.h>
#include <dfq/dfq-model.h>
#include <dfq/dfq-step.h>

G_BEGIN_DECLS

typedef struct _DfqLossClass DfqLossClass;

struct _DfqLoss {
    DfqFeature parent;
    /* Created by the core from the class's tap patterns before the first step;
     * filled by every teacher / student forward of a step. NULL if unused. */
    DfqTapSet *teacher_taps;
    DfqTapSet *student_taps;
    gpointer reserved[4];
};

struct _DfqLossClass {
    DfqFeatureClass parent;
    /* Does the loss need the student's logits (KD) or taps? */
    gboolean (*needs_student) (DfqLoss *self);
    /* Tap patterns (NULL-terminated, nullable) for the teacher and the student
     * forward: glob patterns over tap names, e.g. { "*:in", NULL } (the input
     * of every BN), { "layers.*:body", NULL } (ResNet residual bodies),
     * { "logits", NULL }; `dfq inspect MODEL --taps` lists a model's names and
     * shapes. They may depend on the loss's params; the returned array is owned
     * by the loss. `dfq validate` fails when a pattern matches no tap of the
     * teacher (dfq_pipeline_check_taps). */
    const char *const *(*teacher_tap_patterns) (DfqLoss *self);
    const char *const *(*student_tap_patterns) (DfqLoss *self);
    /* The unweighted loss, a scalar tensor in ctx->arena, differentiable w.r.t.
     * whatever requires a gradient (images, student parameters, ...). */
    DfqTensor *(*compute) (DfqLoss *self, DfqStepContext *ctx, const DfqLossInputs *in, GError **error);
    gpointer reserved[4];
};

#define DFQ_LOSS_CLASS(loss) ((const DfqLossClass *) ((DfqFeature *) (loss))->klass)

/* Frees the tap sets. Loss classes set .parent.finalize = dfq_loss_teardown, or
 * call it from their own finalize. */
DFQ_API void dfq_loss_teardown (DfqFeature *self);

/* For loss plugins: the taps of @set whose name matches @pattern, in forward
 * order, appended to @out (DfqTap *). */
DFQ_API void dfq_tap_set_collect (const DfqTapSet *set, const char *pattern, GPtrArray *out);

G_END_DECLS
