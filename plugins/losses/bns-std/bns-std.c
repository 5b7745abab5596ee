/* Loss plugin `bns-std`: GENIE-D's BatchNorm-statistics term (METHODS.md 10,
 * SamsungLabs/Genie distill.py): for every teacher BN layer l, the BATCH mean
 * and the unbiased standard deviation of its input over (N, H, W) against the
 * running statistics,
 *   L = sum_l [ ||mu_l - running_mean_l||^2 / C_l
 *             + ||sqrt(var_l + std_eps) - sqrt(running_var_l + eps)||^2 / C_l ]
 * (distill.py: l2_loss(A, B) = ||A - B||^2 / B.size(0), B a [C] vector; torch.std
 * adds nothing to the variance: std_eps 0). Summed over layers (GENIE), or
 * averaged with `reduce: mean`. Unlike `bns` (GDFQ: biased variance, mean
 * over layers) it matches standard deviations; unlike `bns-sample` (ZeroQ)
 * it uses batch statistics. The BN inputs come from the teacher's "<bn>:in"
 * taps, which carry the running statistics. */
#include <math.h>

#include <dfq/dfq.h>

typedef struct {
    DfqLoss parent;
    char *pattern;
    gdouble eps;
    gdouble std_eps;
    gint reduce; /* 0 = sum over layers (GENIE), 1 = mean */
    const char *patterns[2];
} BnsStd;

static const char *const bns_std_reduce_names[] = { "sum", "mean", NULL };

static const DfqParamSpec bns_std_params[] = {
    DFQ_PARAM_STRING (BnsStd, pattern, "Glob over teacher tap names selecting the BN inputs ('*:in' = every BN layer)",
                      "'*:in'"),
    DFQ_PARAM_DOUBLE (BnsStd, eps, "Added to the running variance before the square root (GENIE: 1e-6)", 0, 1, 1e-6),
    DFQ_PARAM_DOUBLE (BnsStd, std_eps, "Added to the batch variance before the square root (GENIE's torch.std: 0)", 0,
                      1, 0.0),
    DFQ_PARAM_ENUM (BnsStd, reduce, "Over layers: sum (GENIE) or mean", bns_std_reduce_names, "sum"),
};

static gboolean
bns_std_init (DfqFeature *feature, GError **error)
{
    BnsStd *self = (BnsStd *) feature;
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
bns_std_teacher_tap_patterns (DfqLoss *loss)
{
    return ((BnsStd *) loss)->patterns;
}

/* sqrt(running_var + eps) as a [C] constant in @a */
static DfqTensor *
bns_std_target (DfqArena *a, const DfqTensor *running_var, float eps)
{
    DfqTensor *t = dfq_tensor_new_1d (a, DFQ_DTYPE_F32, running_var->shape[0]);
    const float *rv = dfq_tensor_f32 (running_var);
    float *d = dfq_tensor_f32 (t);
    for (gint64 c = 0; c < running_var->shape[0]; c++)
        d[c] = sqrtf (rv[c] + eps);
    return t;
}

static DfqTensor *
bns_std_compute (DfqLoss *loss, DfqStepContext *ctx, const DfqLossInputs *in G_GNUC_UNUSED, GError **error)
{
    BnsStd *self = (BnsStd *) loss;
    DfqArena *a = ctx->arena;
    DfqTensor *total = NULL;
    guint n_layers = 0;
    const DfqTapSet *taps = loss->teacher_taps;
    for (guint i = 0; taps != NULL && i < dfq_tap_set_size (taps); i++) {
        const DfqTap *tap = dfq_tap_set_get (taps, i);
        /* A broad pattern may also match other taps: only BN inputs have targets. */
        if (tap->kind != DFQ_TAP_BN_IN || tap->aux0 == NULL || tap->aux1 == NULL)
            continue;
        if (dfq_tensor_numel (tap->tensor) / tap->tensor->shape[1] < 2) {
            g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE,
                         "tap %s has one value per channel: an unbiased variance needs at least 2 (batch x pixels)",
                         tap->name);
            return NULL;
        }
        DfqTensor *mu = dfq_channel_mean (a, tap->tensor);
        DfqTensor *var = dfq_channel_var (a, tap->tensor, TRUE);
        DfqTensor *sd = dfq_sqrt (a, self->std_eps > 0 ? dfq_affine (a, var, 1.0f, (float) self->std_eps) : var);
        DfqTensor *term = dfq_add (a, dfq_mse (a, mu, tap->aux0),
                                   dfq_mse (a, sd, bns_std_target (a, tap->aux1, (float) self->eps)));
        total = total == NULL ? term : dfq_add (a, total, term);
        n_layers++;
    }
    if (n_layers == 0) {
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_MISSING,
                     "no BatchNorm input of the teacher matches pattern '%s'", self->pattern);
        return NULL;
    }
    return self->reduce == 1 ? dfq_affine (a, total, 1.0f / (float) n_layers, 0.0f) : total;
}

static const DfqLossClass bns_std_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_LOSS, "bns-std",
                                           "GENIE-D: batch mean and unbiased std of the teacher's BN inputs vs the "
                                           "running statistics (sum over layers)",
                                           BnsStd, bns_std_params, bns_std_init, dfq_loss_teardown),
    .teacher_tap_patterns = bns_std_teacher_tap_patterns,
    .compute = bns_std_compute,
};

static gboolean
bns_std_register (DfqRegistry *registry, GError **error)
{
    return dfq_registry_add_feature (registry, &bns_std_class.parent, error);
}

DFQ_PLUGIN_DEFINE (bns-std, "GENIE-D's BatchNorm-statistics loss (batch mean and unbiased std)", bns_std_register)
