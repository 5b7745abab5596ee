/* `bns-slack`: DSG's slack distribution alignment (SDA) with layerwise sample
 * enhancement (LSE) (Zhang/Qin et al., CVPR 2021; METHODS.md 8.1, 8.2), part
 * of the bns module (bns-private.h). Per BN layer l with statistics s and
 * targets t (`stats`):
 *   sample (DSG-PTQ, distill_data.py): s = per-sample mu [B,C] and
 *     sigma = sqrt(var_hw(unbiased) + eps) of the BN input, t = running_mean,
 *     sqrt(running_var + eps);
 *   batch (DSG-QAT, trainer.py): s = batch mean and biased variance [C],
 *     t = running_mean, running_var;
 * the residual D = max(|s - t| - m_l, 0) (`hinge: paper`) or |(|s - t| - m_l)|
 * (`hinge: abs`, the QAT code), m_l = delta_l for the mean and gamma_l for the
 * spread (bns-margins.c), and the layer's term sum(W * D^2) / B (B = 1 for
 * batch statistics), W the LSE weights. Summed over layers (`reduce: sum`, the
 * PTQ code) or averaged (`mean`, the QAT code). With margins 0 and LSE off,
 * `stats: sample` is ZeroQ's bns-sample. */
#include <math.h>

#include "bns-private.h"

static const char *const bns_slack_stats_names[] = { "sample", "batch", NULL };
static const char *const bns_slack_hinge_names[] = { "paper", "abs", NULL };
static const char *const bns_slack_lse_names[] = { "off", "paper", "ptq-code", "qat-code", NULL };
static const char *const bns_slack_reduce_names[] = { "sum", "mean", NULL };
static const char *const bns_margins_rule_names[] = { "quantile", "fixed", "file", NULL };
static const char *const bns_reference_names[] = { "warmup", "real", "image-set", NULL };

static const DfqParamSpec bns_slack_params[] = {
    BNS_PARAM_PATTERN,
    DFQ_PARAM_ENUM (BnsSlack, stats,
                    "sample: per-sample mean and std of each BN input (DSG-PTQ); batch: batch mean and biased "
                    "variance (DSG-QAT)",
                    bns_slack_stats_names, "sample"),
    DFQ_PARAM_ENUM (BnsSlack, hinge,
                    "paper: max(|s - t| - m, 0)^2; abs: (|s - t| - m)^2, the QAT code (penalises gaps below m too)",
                    bns_slack_hinge_names, "paper"),
    DFQ_PARAM_ENUM (BnsSlack, lse,
                    "Layerwise sample enhancement: off; paper (sample i weighted lse_weight at layer i mod L); "
                    "ptq-code (row i x2 at layer i, i < lse_layers); qat-code (channel l x sqrt 2 at layer l)",
                    bns_slack_lse_names, "paper"),
    DFQ_PARAM_DOUBLE (BnsSlack, lse_weight, "lse: paper: weight of a sample's squared residual at its layer", 0, 1e6,
                      2.0),
    DFQ_PARAM_INT (BnsSlack, lse_layers, "lse: ptq-code: the code's layer_num (samples i < lse_layers enhanced)", 1,
                   1000000, 20),
    DFQ_PARAM_DOUBLE (BnsSlack, eps, "Added to the per-sample variances before the square root (1e-6)", 0, 1, 1e-6),
    DFQ_PARAM_ENUM (BnsSlack, reduce, "Over layers: sum (PTQ code) or mean (QAT code)", bns_slack_reduce_names,
                    "sum"),
    DFQ_PARAM_ENUM (BnsSlack, margins,
                    "Margin rule: quantile (of the gaps on a reference batch, per layer), fixed (delta, gamma) or "
                    "file (margins_path)",
                    bns_margins_rule_names, "quantile"),
    DFQ_PARAM_DOUBLE (BnsSlack, quantile, "margins: quantile: the quantile eps of the per-layer gaps (DSG: 0.9)", 0,
                      1, 0.9),
    DFQ_PARAM_ENUM (BnsSlack, reference,
                    "margins: quantile: the reference batch: warmup (synthetic, ZeroQ's optimisation; data-free), "
                    "real (training images: uses real data) or image-set (reference_path)",
                    bns_reference_names, "warmup"),
    DFQ_PARAM_INT (BnsSlack, reference_images, "Images in the reference batch", 1, 100000, 64),
    DFQ_PARAM_STRING (BnsSlack, reference_path, "reference: image-set: a safetensors with 'images' [N,C,H,W]", NULL,
                      .flags = DFQ_PARAM_FLAG_PATH),
    DFQ_PARAM_INT (BnsSlack, warmup_iters, "reference: warmup: ZeroQ Adam iterations on the reference batch", 0,
                   1000000, 500),
    DFQ_PARAM_DOUBLE (BnsSlack, warmup_lr, "reference: warmup: Adam learning rate (ZeroQ: 0.5)", 0, 100, 0.5),
    DFQ_PARAM_DOUBLE_LIST (BnsSlack, delta, "margins: fixed: mean margins, one for every layer or one per layer", 0,
                           1e9, "[]"),
    DFQ_PARAM_DOUBLE_LIST (BnsSlack, gamma, "margins: fixed: spread margins, one for every layer or one per layer", 0,
                           1e9, "[]"),
    DFQ_PARAM_STRING (BnsSlack, margins_path,
                      "margins: file: a safetensors with 'delta' [L] and 'gamma' [L] (the file a run writes)", NULL,
                      .flags = DFQ_PARAM_FLAG_PATH),
    DFQ_PARAM_STRING (BnsSlack, save_as, "File in the run directory the margins used are written to ('' = none)",
                      "bns-slack-margins.safetensors"),
};

static gboolean
bns_slack_init (DfqFeature *feature, GError **error)
{
    BnsSlack *self = (BnsSlack *) feature;
    const char *why = NULL;
    if (self->stats == BNS_SLACK_STATS_BATCH && (self->lse == BNS_SLACK_LSE_PAPER || self->lse == BNS_SLACK_LSE_PTQ_CODE))
        why = "lse: paper and ptq-code weight samples, which batch statistics do not have: use stats: sample, or "
              "lse: qat-code or off";
    else if (self->margins == BNS_MARGINS_FIXED && (self->delta.n == 0 || self->gamma.n == 0))
        why = "margins: fixed needs delta and gamma (one value for every layer, or one per layer)";
    else if (self->margins == BNS_MARGINS_FILE && (self->margins_path == NULL || self->margins_path[0] == '\0'))
        why = "margins: file needs margins_path (e.g. the bns-slack-margins.safetensors of an earlier run)";
    else if (self->margins == BNS_MARGINS_QUANTILE && self->reference == BNS_REFERENCE_IMAGE_SET
             && (self->reference_path == NULL || self->reference_path[0] == '\0'))
        why = "reference: image-set needs reference_path (e.g. an earlier run's images.safetensors)";
    if (why != NULL) {
        g_set_error_literal (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE, why);
        return FALSE;
    }
    return bns_base_init (feature, error); /* last: it allocates, and a failed init is not finalized */
}

static void
bns_slack_finalize (DfqFeature *feature)
{
    BnsSlack *self = (BnsSlack *) feature;
    g_clear_pointer (&self->delta_l, g_free);
    g_clear_pointer (&self->gamma_l, g_free);
    bns_base_finalize (feature);
}

void
bns_slack_layer_stats (BnsSlack *self, DfqArena *a, const DfqTap *tap, DfqTensor *s[2], DfqTensor *t[2])
{
    if (self->stats == BNS_SLACK_STATS_BATCH) {
        s[0] = dfq_channel_mean (a, tap->tensor);
        s[1] = dfq_channel_var (a, tap->tensor, FALSE); /* biased, as the QAT hook */
        t[0] = tap->aux0;
        t[1] = tap->aux1;
        return;
    }
    bns_sample_stats (a, tap->tensor, (float) self->eps, &s[0], &s[1]);
    bns_sample_targets (a, tap, (float) self->eps, &t[0], &t[1]);
}

/* The LSE weights of layer @l of @L for statistics of shape [B,C] (sample) or
 * [C] (batch), or NULL when all are 1. */
static DfqTensor *
bns_slack_lse_weights (const BnsSlack *self, DfqArena *a, const DfqTensor *s, guint l, guint L)
{
    if (self->lse == BNS_SLACK_LSE_OFF)
        return NULL;
    gint64 B = s->n_dims == 2 ? s->shape[0] : 1, C = s->shape[s->n_dims - 1];
    DfqTensor *w = dfq_tensor_new (a, DFQ_DTYPE_F32, s->n_dims, s->shape);
    float *d = dfq_tensor_f32 (w);
    for (gint64 i = 0; i < B * C; i++)
        d[i] = 1.0f;
    for (gint64 b = 0; b < B; b++)
        for (gint64 c = 0; c < C; c++) {
            gboolean hit = FALSE;
            float v = 1.0f;
            switch (self->lse) {
            case BNS_SLACK_LSE_PAPER:
                hit = (guint) (b % L) == l, v = (float) self->lse_weight;
                break;
            case BNS_SLACK_LSE_PTQ_CODE: /* D[i] *= 2 for i == cnt, i < min(B, layer_num) */
                hit = b == (gint64) l && b < self->lse_layers, v = 4.0f;
                break;
            case BNS_SLACK_LSE_QAT_CODE: /* gap[num] *= sqrt(2) */
                hit = c == (gint64) l, v = 2.0f;
                break;
            default:
                break;
            }
            if (hit)
                d[b * C + c] = v;
        }
    return w;
}

/* sum(W * D^2) / B with D the hinge residual of s against t [C] (broadcast
 * over the rows of a [B,C] s) and margin @m. */
static DfqTensor *
bns_slack_term (const BnsSlack *self, DfqArena *a, DfqTensor *s, const DfqTensor *t, float m, DfqTensor *w)
{
    gint64 B = s->n_dims == 2 ? s->shape[0] : 1, C = s->shape[s->n_dims - 1];
    DfqTensor *target = dfq_tensor_new (a, DFQ_DTYPE_F32, s->n_dims, s->shape);
    for (gint64 b = 0; b < B; b++)
        for (gint64 c = 0; c < C; c++)
            dfq_tensor_f32 (target)[b * C + c] = dfq_tensor_f32 (t)[c];
    DfqTensor *gap = dfq_affine (a, dfq_abs (a, dfq_sub (a, s, target)), 1.0f, -m);
    DfqTensor *d = self->hinge == BNS_SLACK_HINGE_ABS ? dfq_abs (a, gap) : dfq_relu (a, gap);
    DfqTensor *d2 = dfq_mul (a, d, d);
    if (w != NULL)
        d2 = dfq_mul (a, d2, w);
    return dfq_affine (a, dfq_sum (a, d2), 1.0f / (float) B, 0.0f);
}

static DfqTensor *
bns_slack_compute (DfqLoss *loss, DfqStepContext *ctx, const DfqLossInputs *in G_GNUC_UNUSED, GError **error)
{
    BnsSlack *self = (BnsSlack *) loss;
    DfqArena *a = ctx->arena;
    GPtrArray *taps = ((BnsBase *) loss)->bn_taps;
    if (!bns_base_collect (loss, loss->teacher_taps, taps, error))
        return NULL;
    if (self->stats == BNS_SLACK_STATS_SAMPLE && !bns_sample_check (taps, error))
        return NULL;
    if (!bns_slack_ensure_margins (self, ctx, taps, error))
        return NULL;
    guint L = taps->len;
    DfqTensor *total = NULL;
    for (guint l = 0; l < L; l++) {
        DfqTensor *s[2], *t[2];
        bns_slack_layer_stats (self, a, taps->pdata[l], s, t);
        DfqTensor *w = bns_slack_lse_weights (self, a, s[0], l, L);
        DfqTensor *term = dfq_add (a, bns_slack_term (self, a, s[0], t[0], self->delta_l[l], w),
                                   bns_slack_term (self, a, s[1], t[1], self->gamma_l[l], w));
        total = total == NULL ? term : dfq_add (a, total, term);
    }
    return self->reduce == 1 ? dfq_affine (a, total, 1.0f / (float) L, 0.0f) : total;
}

const DfqLossClass bns_slack_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_LOSS, "bns-slack",
                                           "DSG: BN statistics matched up to per-layer margins (slack alignment), "
                                           "with layerwise sample enhancement",
                                           BnsSlack, bns_slack_params, bns_slack_init, bns_slack_finalize),
    .teacher_tap_patterns = bns_base_teacher_tap_patterns,
    .compute = bns_slack_compute,
};
