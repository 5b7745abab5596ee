/* Loss plugin `bns`: the BN-statistics losses on the teacher's BN inputs.
 * This file holds what the module's features share (bns-private.h) and GDFQ's
 * batch loss (METHODS.md 1.4, trainer.py hook_fn_forward):
 *   BNS = (1/L) sum_l [ MSE(mu_l, running_mean_l) + MSE(var_l, running_var_l) ]
 * mu_l and var_l: mean and BIASED variance over (N, H, W) of the input of
 * teacher BN layer l; MSE: mean over channels. The BN inputs come from the
 * teacher's "<bn>:in" taps, which carry the running statistics. The module
 * also registers ZeroQ's `bns-sample` and `image-prior` (bns-sample.c) and
 * DSG's `bns-slack` (bns-slack.c). */
#include "bns-private.h"

static const DfqParamSpec bns_params[] = {
    BNS_PARAM_PATTERN,
};

gboolean
bns_base_init (DfqFeature *feature, GError **error)
{
    BnsBase *self = (BnsBase *) feature;
    if (self->pattern == NULL || self->pattern[0] == '\0') {
        g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                     "'pattern' must not be empty (use '*:in' for every BN layer)");
        return FALSE;
    }
    self->patterns[0] = self->pattern;
    self->patterns[1] = NULL;
    self->bn_taps = g_ptr_array_new ();
    return TRUE;
}

void
bns_base_finalize (DfqFeature *feature)
{
    g_clear_pointer (&((BnsBase *) feature)->bn_taps, g_ptr_array_unref);
    dfq_loss_teardown (feature);
}

const char *const *
bns_base_teacher_tap_patterns (DfqLoss *loss)
{
    return ((BnsBase *) loss)->patterns;
}

gboolean
bns_base_collect (DfqLoss *loss, const DfqTapSet *taps, GPtrArray *out, GError **error)
{
    g_ptr_array_set_size (out, 0);
    for (guint i = 0; taps != NULL && i < dfq_tap_set_size (taps); i++) {
        const DfqTap *tap = dfq_tap_set_get (taps, i);
        /* A broad pattern may also match other taps: only BN inputs have targets. */
        if (tap->kind == DFQ_TAP_BN_IN && tap->aux0 != NULL && tap->aux1 != NULL)
            g_ptr_array_add (out, (gpointer) tap);
    }
    if (out->len == 0) {
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_MISSING,
                     "no BatchNorm input of the teacher matches pattern '%s'", ((BnsBase *) loss)->pattern);
        return FALSE;
    }
    return TRUE;
}

static DfqTensor *
bns_compute (DfqLoss *loss, DfqStepContext *ctx, const DfqLossInputs *in G_GNUC_UNUSED, GError **error)
{
    DfqArena *a = ctx->arena;
    GPtrArray *taps = ((BnsBase *) loss)->bn_taps;
    if (!bns_base_collect (loss, loss->teacher_taps, taps, error))
        return NULL;
    DfqTensor *total = NULL;
    for (guint i = 0; i < taps->len; i++) {
        const DfqTap *tap = taps->pdata[i];
        DfqTensor *mu = dfq_channel_mean (a, tap->tensor);
        DfqTensor *var = dfq_channel_var (a, tap->tensor, FALSE); /* biased, as the hook */
        DfqTensor *term = dfq_add (a, dfq_mse (a, mu, tap->aux0), dfq_mse (a, var, tap->aux1));
        total = total == NULL ? term : dfq_add (a, total, term);
    }
    return dfq_affine (a, total, 1.0f / (float) taps->len, 0.0f);
}

static const DfqLossClass bns_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_LOSS, "bns",
                                           "BN-statistics matching on the teacher's BN inputs (GDFQ, mean over layers)",
                                           BnsBase, bns_params, bns_base_init, bns_base_finalize),
    .teacher_tap_patterns = bns_base_teacher_tap_patterns,
    .compute = bns_compute,
};

static gboolean
bns_register (DfqRegistry *registry, GError **error)
{
    return dfq_registry_add_feature (registry, &bns_class.parent, error)
           && dfq_registry_add_feature (registry, &bns_sample_class.parent, error)
           && dfq_registry_add_feature (registry, &bns_image_prior_class.parent, error)
           && dfq_registry_add_feature (registry, &bns_slack_class.parent, error);
}

DFQ_PLUGIN_DEFINE (bns, "BatchNorm-statistics losses: GDFQ (batch), ZeroQ (per sample, image prior), DSG (slack)",
                   bns_register)
