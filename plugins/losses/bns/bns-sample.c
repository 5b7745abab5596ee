/* ZeroQ's two image-optimisation losses (METHODS.md 7; distill_data.py), part
 * of the bns module (bns-private.h):
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

#include "bns-private.h"

typedef struct {
    BnsBase base;
    gdouble eps;
    gint reduce; /* 0 = sum over layers (ZeroQ), 1 = mean */
} BnsSample;

typedef struct {
    DfqLoss parent;
    gdouble mean;
    gdouble std;
    gdouble eps;
} ImagePrior;

static const char *const bns_sample_reduce_names[] = { "sum", "mean", NULL };

static const DfqParamSpec bns_sample_params[] = {
    BNS_PARAM_PATTERN,
    DFQ_PARAM_DOUBLE (BnsSample, eps, "Added to the variances before the square root (ZeroQ: 1e-6)", 0, 1, 1e-6),
    DFQ_PARAM_ENUM (BnsSample, reduce, "Over layers: sum (ZeroQ) or mean", bns_sample_reduce_names, "sum"),
};

static const DfqParamSpec image_prior_params[] = {
    DFQ_PARAM_DOUBLE (ImagePrior, mean, "Target per-sample channel mean of the images", -1e6, 1e6, 0.0),
    DFQ_PARAM_DOUBLE (ImagePrior, std, "Target per-sample channel standard deviation", 0, 1e6, 1.0),
    DFQ_PARAM_DOUBLE (ImagePrior, eps, "Added to the variance before the square root", 0, 1, 1e-6),
};

DfqTensor *
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

void
bns_sample_stats (DfqArena *a, DfqTensor *x, float eps, DfqTensor **mu, DfqTensor **sigma)
{
    *mu = dfq_global_avg_pool (a, x);
    *sigma = dfq_sqrt (a, dfq_affine (a, dfq_spatial_var (a, x, TRUE), 1.0f, eps));
}

void
bns_sample_targets (DfqArena *a, const DfqTap *tap, float eps, DfqTensor **mu, DfqTensor **sigma)
{
    gint64 C = tap->aux0->shape[0];
    *mu = tap->aux0;
    *sigma = dfq_tensor_new_1d (a, DFQ_DTYPE_F32, C);
    const float *rv = dfq_tensor_f32 (tap->aux1);
    for (gint64 c = 0; c < C; c++)
        dfq_tensor_f32 (*sigma)[c] = sqrtf (rv[c] + eps);
}

gboolean
bns_sample_check (GPtrArray *taps, GError **error)
{
    for (guint i = 0; i < taps->len; i++) {
        const DfqTap *tap = taps->pdata[i];
        if (tap->tensor->shape[2] * tap->tensor->shape[3] < 2) {
            g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE,
                         "tap %s is 1x1: a per-sample spatial variance needs at least 2 pixels", tap->name);
            return FALSE;
        }
    }
    return TRUE;
}

DfqTensor *
bns_sample_layers (DfqArena *a, GPtrArray *taps, float eps)
{
    DfqTensor *total = NULL;
    for (guint i = 0; i < taps->len; i++) {
        const DfqTap *tap = taps->pdata[i];
        DfqTensor *mu, *sigma, *mu_bn, *sigma_bn;
        bns_sample_targets (a, tap, eps, &mu_bn, &sigma_bn);
        bns_sample_stats (a, tap->tensor, eps, &mu, &sigma);
        DfqTensor *term = dfq_add (a, bns_sample_term (a, mu, dfq_tensor_f32 (mu_bn), 0),
                                   bns_sample_term (a, sigma, dfq_tensor_f32 (sigma_bn), 0));
        total = total == NULL ? term : dfq_add (a, total, term);
    }
    return total;
}

DfqTensor *
bns_image_prior (DfqArena *a, DfqTensor *x, float mean, float std, float eps)
{
    DfqTensor *mu, *sigma;
    bns_sample_stats (a, x, eps, &mu, &sigma);
    return dfq_add (a, bns_sample_term (a, mu, NULL, mean), bns_sample_term (a, sigma, NULL, std));
}

static DfqTensor *
bns_sample_compute (DfqLoss *loss, DfqStepContext *ctx, const DfqLossInputs *in G_GNUC_UNUSED, GError **error)
{
    BnsSample *self = (BnsSample *) loss;
    DfqArena *a = ctx->arena;
    GPtrArray *taps = ((BnsBase *) loss)->bn_taps;
    if (!bns_base_collect (loss, loss->teacher_taps, taps, error) || !bns_sample_check (taps, error))
        return NULL;
    DfqTensor *total = bns_sample_layers (a, taps, (float) self->eps);
    return self->reduce == 1 ? dfq_affine (a, total, 1.0f / (float) taps->len, 0.0f) : total;
}

static DfqTensor *
image_prior_compute (DfqLoss *loss, DfqStepContext *ctx, const DfqLossInputs *in, GError **error)
{
    ImagePrior *self = (ImagePrior *) loss;
    return bns_image_prior (ctx->arena, in->images, (float) self->mean, (float) self->std, (float) self->eps);
}

const DfqLossClass bns_sample_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_LOSS, "bns-sample",
                                           "ZeroQ: per-sample BN-input statistics vs the running statistics (sum over layers)",
                                           BnsSample, bns_sample_params, bns_base_init, bns_base_finalize),
    .teacher_tap_patterns = bns_base_teacher_tap_patterns,
    .compute = bns_sample_compute,
};

const DfqLossClass bns_image_prior_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_LOSS, "image-prior",
                                           "ZeroQ: per-sample channel mean and std of the images vs targets (0, 1)",
                                           ImagePrior, image_prior_params, NULL, dfq_loss_teardown),
    .compute = image_prior_compute,
};
