/* Loss plugin: GDFQ's BatchNorm-statistics loss on the teacher (METHODS.md 1.4,
 * trainer.py hook_fn_forward):
 *   BNS = (1/L) sum_l [ MSE(mu_l, running_mean_l) + MSE(var_l, running_var_l) ]
 * mu_l and var_l: mean and BIASED variance over (N, H, W) of the input of
 * teacher BN layer l; MSE: mean over channels. The BN inputs come from the
 * teacher's "<bn>:in" taps, which carry the running statistics. */
#include <dfq/dfq.h>

typedef struct {
    DfqLoss parent;
    char *pattern;
    const char *patterns[2]; /* { pattern, NULL } for the tap set */
} BnsLoss;

static const DfqParamSpec bns_params[] = {
    /* Quoted: a plain YAML scalar starting with '*' would be an alias. */
    DFQ_PARAM_STRING (BnsLoss, pattern,
                      "Glob over teacher tap names selecting the BN inputs ('*:in' = every BN layer)",
                      "'*:in'"),
};

static gboolean
bns_init (DfqFeature *feature, GError **error)
{
    BnsLoss *self = (BnsLoss *) feature;
    if (self->pattern == NULL || self->pattern[0] == '\0') {
        g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                     "'pattern' must not be empty (use '*:in' for every BN layer)");
        return FALSE;
    }
    self->patterns[0] = self->pattern;
    self->patterns[1] = NULL;
    return TRUE;
}

static const char *const *
bns_teacher_tap_patterns (DfqLoss *loss)
{
    return ((BnsLoss *) loss)->patterns;
}

static DfqTensor *
bns_compute (DfqLoss *loss, DfqStepContext *ctx, const DfqLossInputs *in G_GNUC_UNUSED, GError **error)
{
    BnsLoss *self = (BnsLoss *) loss;
    DfqArena *a = ctx->arena;
    DfqTensor *total = NULL;
    guint n_layers = 0;
    const DfqTapSet *taps = loss->teacher_taps;
    for (guint i = 0; taps != NULL && i < dfq_tap_set_size (taps); i++) {
        const DfqTap *tap = dfq_tap_set_get (taps, i);
        /* A broad pattern may also match other taps: only BN inputs have targets. */
        if (tap->kind != DFQ_TAP_BN_IN || tap->aux0 == NULL || tap->aux1 == NULL)
            continue;
        DfqTensor *mu = dfq_channel_mean (a, tap->tensor);
        DfqTensor *var = dfq_channel_var (a, tap->tensor, FALSE); /* biased, as the hook */
        DfqTensor *term = dfq_add (a, dfq_mse (a, mu, tap->aux0), dfq_mse (a, var, tap->aux1));
        total = total == NULL ? term : dfq_add (a, total, term);
        n_layers++;
    }
    if (n_layers == 0) {
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_MISSING,
                     "no BatchNorm input of the teacher matches pattern '%s'", self->pattern);
        return NULL;
    }
    return dfq_affine (a, total, 1.0f / (float) n_layers, 0.0f);
}

static const DfqLossClass bns_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_LOSS, "bns",
                                           "BN-statistics matching on the teacher's BN inputs (GDFQ, mean over layers)",
                                           BnsLoss, bns_params, bns_init, dfq_loss_teardown),
    .teacher_tap_patterns = bns_teacher_tap_patterns,
    .compute = bns_compute,
};

static gboolean
bns_register (DfqRegistry *registry, GError **error)
{
    return dfq_registry_add_feature (registry, &bns_class.parent, error);
}

DFQ_PLUGIN_DEFINE (bns, "BatchNorm-statistics loss (GDFQ generator term)", bns_register)
