/* The `bag` feature of the gdfq plugin: a Bit-width Aware Generator (Baek et
 * al., JKSCI 29(7), 2024; METHODS.md 5.2, an interpretation of the abstract:
 * no code is public). The GDFQ generator of gdfq.c with every Linear/Conv2d
 * weight fake-quantized as the GDFQ family quantizes the student's
 * (METHODS.md 1.3: per output channel, asymmetric min/max of the current float
 * weights recomputed every forward, plain straight-through estimator) at the
 * student's weight bit-width, so that the generator "is quantized with the
 * same bit-width as the quantized network". Adam updates the float shadows.
 * Optionally the two LeakyReLU outputs are quantized too, with a signed range
 * tracked by an EMA. The embedding, the BNs and the final tanh -> BN image
 * stay in float: the image feeds the teacher and the student in float. */
#include <math.h>
#include <string.h>

#include <dfq/dfq.h>

#include "gdfq-private.h"

/* dfq_fake_quant handles 1..16 bits; the quantizer reports 32 for float. */
#define BAG_MAX_BITS 16
/* Decay of the activation-range EMA: GDFQ QuantAct's beta. */
#define BAG_ACT_EMA_BETA 0.9f

/* Layout of an activation-range buffer [BAG_RANGE_LEN]. */
enum {
    BAG_RANGE_MIN,
    BAG_RANGE_MAX,
    BAG_RANGE_UPDATES,
    BAG_RANGE_LEN
};

static const char *const bag_act_site_names[GDFQ_N_ACTS] = { "conv_blocks1.2", "conv_blocks2.2" };

static const DfqParamSpec bag_params[] = {
    DFQ_PARAM_INT (Gdfq, latent, "Dimension of the noise z and of the label embedding", 1, 4096, 100),
    DFQ_PARAM_FEATURE_LIST (Gdfq, losses,
                            "Generator loss list (weighted sum); default GDFQ L_G = CE(teacher) + 0.1 BNS. "
                            "AdaDFQ's objectives: [{use: adadfq-margin}, {use: adadfq-balance}, {use: bns, weight: 1}]",
                            DFQ_FEATURE_LOSS, "[{use: ce, target: teacher}, {use: bns, weight: 0.1}]"),
    DFQ_PARAM_OPTIMIZER (Gdfq, optimizer, "Generator optimizer (updates the float shadow weights); the schedule counts epochs",
                         .default_value = GDFQ_OPTIMIZER_DEFAULT),
    DFQ_PARAM_DOUBLE (Gdfq, bn_eps_inner,
                      "eps of the two inner BNs: 0.8 as in the official code (BatchNorm2d(n, 0.8)), 1e-5 intended",
                      0, 10, 0.8),
    DFQ_PARAM_INT (Gdfq, bits,
                   "Bits of the generator's Linear/Conv weights (per output channel, min/max, STE); "
                   "0 = the student's weight bits (its quantizer's default; float when the student is)",
                   0, BAG_MAX_BITS, 0),
    DFQ_PARAM_INT (Gdfq, act_bits,
                   "Bits of the generator's activations after each LeakyReLU (signed EMA range); "
                   "0 = float (default), -1 = the student's activation bits",
                   -1, BAG_MAX_BITS, 0),
    GDFQ_PARAM_TRANSFORMS,
};

static gboolean
bag_init (DfqFeature *feature, GError **error)
{
    Gdfq *self = (Gdfq *) feature;
    self->method = "bag";
    self->quantize = TRUE;
    return gdfq_init_common (self, error);
}

/* The student's default bits of sites of @kind, as the generator uses them
 * (0 = float). */
static gboolean
bag_student_bits (DfqStepContext *ctx, DfqSiteKind kind, const char *param, gint *bits, GError **error)
{
    if (ctx->quantizer == NULL) {
        /* A full-precision student: "the same bit-width" is float. */
        *bits = 0;
        return TRUE;
    }
    const DfqQuantizerClass *klass = DFQ_QUANTIZER_CLASS (ctx->quantizer);
    const char *name = ((DfqFeature *) ctx->quantizer)->klass->name;
    gint b = klass->get_bits != NULL ? klass->get_bits (ctx->quantizer, kind) : 0;
    if (b <= 0) {
        g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                     "'%s' follows the student's %s bits, but its quantizer '%s' does not report them: "
                     "set '%s' explicitly", param, kind == DFQ_SITE_WEIGHT ? "weight" : "activation", name, param);
        return FALSE;
    }
    *bits = b > BAG_MAX_BITS ? 0 : b;
    return TRUE;
}

gboolean
bag_prepare_quant (Gdfq *self, DfqStepContext *ctx, GError **error)
{
    self->w_bits_used = self->bits;
    if (self->bits == 0 && !bag_student_bits (ctx, DFQ_SITE_WEIGHT, "bits", &self->w_bits_used, error))
        return FALSE;
    self->a_bits_used = self->act_bits;
    if (self->act_bits < 0 && !bag_student_bits (ctx, DFQ_SITE_ACT, "act_bits", &self->a_bits_used, error))
        return FALSE;
    if (self->w_bits_used == 0)
        g_info ("bag: the student is not quantized: the generator's weights stay in float");
    if (self->a_bits_used > 0) {
        const gint64 shape[1] = { BAG_RANGE_LEN };
        for (guint i = 0; i < GDFQ_N_ACTS; i++) {
            char name[DFQ_TENSOR_NAME_MAX];
            g_snprintf (name, sizeof name, "%s.act_range", bag_act_site_names[i]);
            self->act_range[i] = gdfq_add_buffer (self, name, 1, shape);
        }
    }
    return TRUE;
}

/* min and max of @n floats (n > 0); NaN in, NaN out, so a diverging generator
 * is reported by the loss check rather than hidden. */
static void
bag_minmax (const float *restrict x, gint64 n, float *mn_out, float *mx_out)
{
    float mn = x[0], mx = x[0];
    gboolean nan = FALSE;
    for (gint64 i = 0; i < n; i++) {
        float v = x[i];
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
        nan |= isnan (v);
    }
    *mn_out = nan ? NAN : mn;
    *mx_out = nan ? NAN : mx;
}

DfqTensor *
bag_weight (Gdfq *self, DfqArena *arena, DfqTensor *w)
{
    g_assert (w->dtype == DFQ_DTYPE_F32 && dfq_tensor_is_contiguous (w));
    /* Quant_Linear / Quant_Conv2d: per output channel (row of W viewed as
     * [Cout, -1]) min/max of the float weights, from the data: no gradient. */
    const gint64 n_ch = w->shape[0], inner = dfq_tensor_numel (w) / n_ch;
    DfqTensor *lo = dfq_tensor_new_1d (arena, DFQ_DTYPE_F32, n_ch);
    DfqTensor *hi = dfq_tensor_new_1d (arena, DFQ_DTYPE_F32, n_ch);
    const float *x = dfq_tensor_f32 (w);
    float *l = dfq_tensor_f32 (lo), *h = dfq_tensor_f32 (hi);
    for (gint64 c = 0; c < n_ch; c++)
        bag_minmax (x + c * inner, inner, &l[c], &h[c]);
    return dfq_fake_quant (arena, w, lo, hi, 0, self->w_bits_used, DFQ_STE_PLAIN);
}

DfqTensor *
bag_act (Gdfq *self, DfqArena *arena, guint site, DfqTensor *x)
{
    g_assert (site < GDFQ_N_ACTS && self->act_range[site] != NULL);
    g_assert (x->dtype == DFQ_DTYPE_F32 && dfq_tensor_is_contiguous (x));
    /* The generator is always training: track the range on every forward,
     * first batch as is, then a plain EMA (GDFQ's bias-correction quirk, which
     * only delays convergence, is not reproduced). LeakyReLU outputs are
     * negative-capable, so the range is signed. */
    float *r = dfq_tensor_f32 (self->act_range[site]);
    float m, M;
    bag_minmax (dfq_tensor_f32 (x), dfq_tensor_numel (x), &m, &M);
    if (r[BAG_RANGE_UPDATES] == 0.0f) {
        r[BAG_RANGE_MIN] = m;
        r[BAG_RANGE_MAX] = M;
    } else {
        r[BAG_RANGE_MIN] = r[BAG_RANGE_MIN] * BAG_ACT_EMA_BETA + m * (1.0f - BAG_ACT_EMA_BETA);
        r[BAG_RANGE_MAX] = r[BAG_RANGE_MAX] * BAG_ACT_EMA_BETA + M * (1.0f - BAG_ACT_EMA_BETA);
    }
    r[BAG_RANGE_UPDATES] += 1.0f;
    /* Snapshots of the range, as the uniform quantizer takes them. */
    DfqTensor *lo = dfq_tensor_new_scalar (arena, r[BAG_RANGE_MIN]);
    DfqTensor *hi = dfq_tensor_new_scalar (arena, r[BAG_RANGE_MAX]);
    return dfq_fake_quant (arena, x, lo, hi, -1, self->a_bits_used, DFQ_STE_PLAIN);
}

const DfqSynthesizerClass bag_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_SYNTHESIZER, "bag",
                                           "Bit-width aware generator: the GDFQ generator with its weights "
                                           "fake-quantized at the student's bit-width (BAG, METHODS.md 5.2)",
                                           Gdfq, bag_params, bag_init, gdfq_finalize),
    .prepare = gdfq_prepare,
    .start_epoch = gdfq_start_epoch,
    .step = gdfq_step,
    .get_state = gdfq_get_state,
    .get_optim_step = gdfq_get_optim_step,
    .set_optim_step = gdfq_set_optim_step,
};
