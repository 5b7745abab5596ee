/* Example dfq plugin: a loss built on an op of its own (charbonnier-op.c),
 * built out of tree against an installed dfq (see Makefile and
 * docs/writing-a-plugin.md, "An op of one's own"):
 *   example-charbonnier-kd = mean over batch and classes of
 *       charbonnier(student logits - teacher logits), teacher detached.
 * test-charbonnier.c checks the op's backward with dfq_gradcheck(). */
#include <dfq/dfq.h>

#include "charbonnier-op.h"

typedef struct {
    DfqLoss parent;
    gdouble eps;
} CharbonnierKd;

static const DfqParamSpec charbonnier_kd_params[] = {
    DFQ_PARAM_DOUBLE (CharbonnierKd, eps, "Smoothing: quadratic below about eps, |x| above", 1e-6, 100, 0.1),
};

static gboolean
charbonnier_kd_needs_student (DfqLoss *loss)
{
    return TRUE;
}

static DfqTensor *
charbonnier_kd_compute (DfqLoss *loss, DfqStepContext *ctx, const DfqLossInputs *in, GError **error)
{
    CharbonnierKd *self = (CharbonnierKd *) loss;
    DfqArena *a = ctx->arena;
    DfqTensor *diff = dfq_sub (a, in->student_logits, dfq_detach (a, in->teacher_logits));
    return dfq_mean (a, charbonnier (a, diff, (float) self->eps));
}

static const DfqLossClass charbonnier_kd_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_LOSS, "example-charbonnier-kd",
                                           "Example: mean Charbonnier penalty of student - teacher logits (a "
                                           "custom op)",
                                           CharbonnierKd, charbonnier_kd_params, NULL, dfq_loss_teardown),
    .needs_student = charbonnier_kd_needs_student,
    .compute = charbonnier_kd_compute,
};

static gboolean
charbonnier_register (DfqRegistry *registry, GError **error)
{
    return dfq_registry_add_feature (registry, &charbonnier_kd_class.parent, error);
}

DFQ_PLUGIN_DEFINE_VERSIONED (charbonnier, "0.1.0", "Example: a loss on an op of its own (Charbonnier)",
                             charbonnier_register)
