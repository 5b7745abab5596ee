/* Loss plugin, two features for image optimisation against a frozen teacher
 * (ZeroQ, METHODS.md 7; distill_data.py):
 * - `bns-sample`: per-SAMPLE channel statistics of every BN input (= conv
 *   output) against the BN running statistics,
 *     L = sum_l [ ||mu_BN,l - mu_l||_F^2 / B + ||sigma_BN,l - sigma_l||_F^2 / B ]
 *   with mu_l[b,c] = mean_hw x, sigma_l[b,c] = sqrt(var_hw(x, unbiased) + eps),
 *   targets running_mean and sqrt(running_var + eps) broadcast over the batch.
 *   Summed over layers (ZeroQ), or averaged with `reduce: mean`.
 * - `image-prior`: the same form on the images themselves, per sample and
 *   channel: ||mean - target_mean||^2 / B + ||std - target_std||^2 / B (ZeroQ:
 *   0 and 1, the normalised data's statistics). */
#include <math.h>

#include <dfq/dfq.h>

typedef struct {
    DfqLoss parent;
    char *pattern;
    gdouble eps;
    gint reduce; /* 0 = sum over layers (ZeroQ), 1 = mean */
    const char *patterns[2];
} BnsSample;

typedef struct {
    DfqLoss parent;
    gdouble mean;
    gdouble std;
    gdouble eps;
} ImagePrior;

static const char *const bns_sample_reduce_names[] = { "sum", "mean", NULL };

static const DfqParamSpec bns_sample_params[] = {
    DFQ_PARAM_STRING (BnsSample, pattern, "Glob over teacher tap names selecting the BN inputs ('*:in' = every BN layer)",
                      "'*:in'"),
    DFQ_PARAM_DOUBLE (BnsSample, eps, "Added to the variances before the square root (ZeroQ: 1e-6)", 0, 1, 1e-6),
    DFQ_PARAM_ENUM (BnsSample, reduce, "Over layers: sum (ZeroQ) or mean", bns_sample_reduce_names, "sum"),
};

static const DfqParamSpec image_prior_params[] = {
    DFQ_PARAM_DOUBLE (ImagePrior, mean, "Target per-sample channel mean of the images", -1e6, 1e6, 0.0),
    DFQ_PARAM_DOUBLE (ImagePrior, std, "Target per-sample channel standard deviation", 0, 1e6, 1.0),
    DFQ_PARAM_DOUBLE (ImagePrior, eps, "Added to the variance before the square root", 0, 1, 1e-6),
};

/* ||target - s||_F^2 / B for s [B,C] and a target [C] broadcast over B
 * (@target NULL: the constant @value). */
static DfqTensor *
bns_sample_term (DfqArena *a, DfqTensor *s, const float *target, float value)
{
    gint64 B = s->shape[0], C = s->shape[1];
    DfqTensor *t = dfq_tensor_new_2d (a, DFQ_DTYPE_F32, B, C);
    float *d = dfq_tensor_f32 (t);
    for (gint64 b = 0; b < B; b++)
        for (gint64 c = 0; c < C; c++)
            d[b * C + c] = target != NULL ? target[c] : value;
    /* mse = sum / (B C): times C gives sum / B */
    return dfq_affine (a, dfq_mse (a, s, t), (float) C, 0.0f);
}

/* mu [B,C] and sigma = sqrt(var_hw + eps) [B,C] of x [B,C,H,W]. */
static void
bns_sample_stats (DfqArena *a, DfqTensor *x, float eps, DfqTensor **mu, DfqTensor **sigma)
{
    *mu = dfq_global_avg_pool (a, x);
    *sigma = dfq_sqrt (a, dfq_affine (a, dfq_spatial_var (a, x, TRUE), 1.0f, eps));
}

static gboolean
bns_sample_init (DfqFeature *feature, GError **error)
{
    BnsSample *self = (BnsSample *) feature;
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
bns_sample_teacher_tap_patterns (DfqLoss *loss)
{
    return ((BnsSample *) loss)->patterns;
}

static DfqTensor *
bns_sample_compute (DfqLoss *loss, DfqStepContext *ctx, const DfqLossInputs *in, GError **error)
{
    BnsSample *self = (BnsSample *) loss;
    DfqArena *a = ctx->arena;
    DfqTensor *total = NULL;
    guint n_layers = 0;
    const DfqTapSet *taps = loss->teacher_taps;
    for (guint i = 0; taps != NULL && i < dfq_tap_set_size (taps); i++) {
        const DfqTap *tap = dfq_tap_set_get (taps, i);
        if (tap->kind != DFQ_TAP_BN_IN || tap->aux0 == NULL || tap->aux1 == NULL)
            continue;
        if (tap->tensor->shape[2] * tap->tensor->shape[3] < 2) {
            g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE,
                         "tap %s is 1x1: a per-sample spatial variance needs at least 2 pixels", tap->name);
            return NULL;
        }
        gint64 C = tap->aux0->shape[0];
        float *sd = g_newa (float, C);
        const float *rv = dfq_tensor_f32 (tap->aux1);
        for (gint64 c = 0; c < C; c++)
            sd[c] = sqrtf (rv[c] + (float) self->eps);
        DfqTensor *mu, *sigma;
        bns_sample_stats (a, tap->tensor, (float) self->eps, &mu, &sigma);
        DfqTensor *term = dfq_add (a, bns_sample_term (a, mu, dfq_tensor_f32 (tap->aux0), 0),
                                   bns_sample_term (a, sigma, sd, 0));
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

static DfqTensor *
image_prior_compute (DfqLoss *loss, DfqStepContext *ctx, const DfqLossInputs *in, GError **error)
{
    ImagePrior *self = (ImagePrior *) loss;
    DfqArena *a = ctx->arena;
    DfqTensor *mu, *sigma;
    bns_sample_stats (a, in->images, (float) self->eps, &mu, &sigma);
    return dfq_add (a, bns_sample_term (a, mu, NULL, (float) self->mean),
                    bns_sample_term (a, sigma, NULL, (float) self->std));
}

static const DfqLossClass bns_sample_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_LOSS, "bns-sample",
                                           "ZeroQ: per-sample BN-input statistics vs the running statistics (sum over layers)",
                                           BnsSample, bns_sample_params, bns_sample_init, dfq_loss_teardown),
    .teacher_tap_patterns = bns_sample_teacher_tap_patterns,
    .compute = bns_sample_compute,
};

static const DfqLossClass image_prior_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_LOSS, "image-prior",
                                           "ZeroQ: per-sample channel mean and std of the images vs targets (0, 1)",
                                           ImagePrior, image_prior_params, NULL, dfq_loss_teardown),
    .compute = image_prior_compute,
};

static gboolean
bns_sample_register (DfqRegistry *registry, GError **error)
{
    return dfq_registry_add_feature (registry, &bns_sample_class.parent, error)
           && dfq_registry_add_feature (registry, &image_prior_class.parent, error);
}

DFQ_PLUGIN_DEFINE (bns-sample, "ZeroQ's image-optimisation losses: per-sample BN statistics and the image prior",
                   bns_sample_register)
