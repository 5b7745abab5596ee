/* Loss plugin: AdaDFQ's losses (Qian et al., CVPR 2023; METHODS.md 4, official
 * AdaDFQ/CIFAR/trainer.py), all functions of the teacher logits t and the
 * quantized student's logits s:
 *   adadfq-margin   generator: the boundary (margin) loss on the entropy of
 *                   softmax(t - s), normalised over the batch (marginal_loss);
 *   adadfq-balance  generator: alpha_ds CE(t - s, y) + alpha_as CE(t + s, y);
 *   adadfq-entropy  student: -T^2 mean_b H(softmax((t_b - s_b) / T)).
 * In a generator step both logits carry gradients back to the images (the
 * student through its straight-through quantizers), as in the official code,
 * where neither is detached. Any batch size: the official margin loss
 * hard-codes a zero vector of length 16. */
#include <math.h>
#include <string.h>

#include <dfq/dfq.h>

/* Below this, log C - min_b h is treated as this constant (no gradient): the
 * official code divides by it unguarded and would give NaN when every row of
 * t - s is uniform (the point the student loss drives towards). */
#define ADADFQ_MIN_SPREAD 1e-6

typedef struct {
    DfqLoss parent;
    gdouble lambda_l;
    gdouble lambda_u;
} AdadfqMargin;

typedef struct {
    DfqLoss parent;
    gdouble alpha_ds;
    gdouble alpha_as;
} AdadfqBalance;

typedef struct {
    DfqLoss parent;
    gdouble temperature;
} AdadfqEntropy;

static const DfqParamSpec adadfq_margin_params[] = {
    DFQ_PARAM_DOUBLE (AdadfqMargin, lambda_l, "Lower margin: penalises normalised entropies below it (CIFAR 0.1)", 0, 1, 0.1),
    DFQ_PARAM_DOUBLE (AdadfqMargin, lambda_u, "Upper margin: penalises normalised entropies above it (CIFAR 0.8)", 0, 1, 0.8),
};

static const DfqParamSpec adadfq_balance_params[] = {
    DFQ_PARAM_DOUBLE (AdadfqBalance, alpha_ds, "Weight of the disagreement term CE(softmax(t - s), y)", 0, 1000, 0.2),
    DFQ_PARAM_DOUBLE (AdadfqBalance, alpha_as, "Weight of the agreement term CE(softmax(t + s), y)", 0, 1000, 0.1),
};

static const DfqParamSpec adadfq_entropy_params[] = {
    DFQ_PARAM_DOUBLE (AdadfqEntropy, temperature,
                      "Temperature T (CIFAR 20, ImageNet 5); the entropy is multiplied by T^2", 1e-3, 1e3, 20),
};

static gboolean
adadfq_needs_student (DfqLoss *loss G_GNUC_UNUSED)
{
    return TRUE;
}

/* Both logits, same shape [B, C]. */
static gboolean
adadfq_check_logits (const DfqLossInputs *in, GError **error)
{
    if (in->student_logits == NULL || in->teacher_logits == NULL) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE, "AdaDFQ's losses need the %s logits, which this step lacks",
                     in->student_logits == NULL ? "student" : "teacher");
        return FALSE;
    }
    if (!dfq_tensor_same_shape (in->student_logits, in->teacher_logits) || in->teacher_logits->n_dims != 2) {
        char s[64], t[64];
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE, "student logits %s and teacher logits %s differ",
                     dfq_tensor_shape_string (in->student_logits, s, sizeof s),
                     dfq_tensor_shape_string (in->teacher_logits, t, sizeof t));
        return FALSE;
    }
    return TRUE;
}

/* ------------------------------------------------------------ margin */

/* marginal_loss (trainer.py L18-32):
 *   h_b  = H(softmax(t_b - s_b)),   m = min_b h_b,   D = log C - m
 *   h'_b = (h_b - m) / D
 *   L_m  = mean_b relu(lambda_l - h'_b) + mean_b relu(h'_b - lambda_u)
 * The gradient flows through min_b h (to the minimising sample; ties share it,
 * as torch.min does) and through 1/D. The op set has no division, so 1/D
 * enters as its tangent at the current point, r0 + r0^2 (m - m0) with
 * r0 = 1/D0: the same value and the same derivative, all backprop needs. */
static DfqTensor *
adadfq_margin_compute (DfqLoss *loss, DfqStepContext *ctx, const DfqLossInputs *in, GError **error)
{
    AdadfqMargin *self = (AdadfqMargin *) loss;
    if (!adadfq_check_logits (in, error))
        return NULL;
    DfqArena *a = ctx->arena;
    const gint64 n = in->teacher_logits->shape[0], c = in->teacher_logits->shape[1];
    DfqTensor *h = dfq_entropy (a, dfq_sub (a, in->teacher_logits, in->student_logits)); /* [B] */

    /* min_b h as sum_b h_b * mask_b, mask = 1/k on the k minimising samples. */
    const float *hv = dfq_tensor_f32 (h);
    float m0 = hv[0];
    for (gint64 b = 1; b < n; b++)
        m0 = hv[b] < m0 ? hv[b] : m0;
    DfqTensor *mask = dfq_tensor_new_1d (a, DFQ_DTYPE_F32, n);
    float *mv = dfq_tensor_f32 (mask);
    guint ties = 0;
    for (gint64 b = 0; b < n; b++)
        ties += hv[b] == m0;
    for (gint64 b = 0; b < n; b++)
        mv[b] = hv[b] == m0 ? 1.0f / (float) ties : 0.0f;
    DfqTensor *m = dfq_sum (a, dfq_mul (a, h, mask)); /* [1] */

    /* r = 1/(log C - m), as its tangent at m0. */
    const double spread = log ((double) c) - (double) m0;
    DfqTensor *r;
    if (spread > ADADFQ_MIN_SPREAD) {
        const double r0 = 1.0 / spread;
        r = dfq_affine (a, m, (float) (r0 * r0), (float) (r0 - r0 * r0 * (double) m0));
    } else {
        r = dfq_tensor_new_scalar (a, (float) (1.0 / ADADFQ_MIN_SPREAD));
    }

    /* h' = h r - m r, on h viewed as [B, 1] (one "channel" with scale r). */
    const gint64 col[2] = { n, 1 };
    DfqTensor *shift = dfq_affine (a, dfq_mul (a, m, r), -1.0f, 0.0f);
    DfqTensor *hp = dfq_channel_affine (a, dfq_reshape (a, h, 2, col), r, shift);
    DfqTensor *low = dfq_mean (a, dfq_relu (a, dfq_affine (a, hp, -1.0f, (float) self->lambda_l)));
    DfqTensor *up = dfq_mean (a, dfq_relu (a, dfq_affine (a, hp, 1.0f, (float) -self->lambda_u)));
    return dfq_add (a, low, up);
}

/* ------------------------------------------------------------ balance */

/* trainer.py L237-241: loss_ds = CE(log_softmax(t - s), y), loss_as =
 * CE(log_softmax(t + s), y), one-hot y = the sampled labels. */
static DfqTensor *
adadfq_balance_compute (DfqLoss *loss, DfqStepContext *ctx, const DfqLossInputs *in, GError **error)
{
    AdadfqBalance *self = (AdadfqBalance *) loss;
    if (!adadfq_check_logits (in, error))
        return NULL;
    /* One-hot rows of soft labels are the same loss; superposed ones (Qimera)
     * carry more. */
    DfqTensor *labels = in->soft_labels != NULL ? in->soft_labels : in->labels;
    if (labels == NULL) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE,
                     "adadfq-balance needs labels, but this step has none (does the synthesizer make them?)");
        return NULL;
    }
    const DfqTensor *t = in->teacher_logits;
    gboolean soft = labels == in->soft_labels;
    if (labels->shape[0] != t->shape[0] || (soft && (labels->n_dims != 2 || labels->shape[1] != t->shape[1]))) {
        char want[64], got[64];
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE, "%s labels %s do not fit the logits %s",
                     soft ? "soft" : "hard", dfq_tensor_shape_string (labels, got, sizeof got),
                     dfq_tensor_shape_string (t, want, sizeof want));
        return NULL;
    }
    DfqArena *a = ctx->arena;
    DfqTensor *ds = dfq_cross_entropy (a, dfq_sub (a, in->teacher_logits, in->student_logits), labels);
    DfqTensor *as = dfq_cross_entropy (a, dfq_add (a, in->teacher_logits, in->student_logits), labels);
    return dfq_add (a, dfq_affine (a, ds, (float) self->alpha_ds, 0.0f), dfq_affine (a, as, (float) self->alpha_as, 0.0f));
}

/* ------------------------------------------------------------ entropy */

/* loss_fn_kd (trainer.py L127-135): q = T^2 H(softmax((t - s)/T)) per sample,
 * L_S = -mean_b q. Maximising the entropy of the logit difference pushes s
 * towards t + const. No hard-label term. The teacher is detached. */
static DfqTensor *
adadfq_entropy_compute (DfqLoss *loss, DfqStepContext *ctx, const DfqLossInputs *in, GError **error)
{
    AdadfqEntropy *self = (AdadfqEntropy *) loss;
    if (!adadfq_check_logits (in, error))
        return NULL;
    DfqArena *a = ctx->arena;
    const double t = self->temperature;
    DfqTensor *d = dfq_sub (a, dfq_detach (a, in->teacher_logits), in->student_logits);
    DfqTensor *h = dfq_entropy (a, dfq_affine (a, d, (float) (1.0 / t), 0.0f));
    return dfq_affine (a, dfq_mean (a, h), (float) (-t * t), 0.0f);
}

/* ------------------------------------------------------------ classes */

static const DfqLossClass adadfq_margin_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_LOSS, "adadfq-margin",
                                           "AdaDFQ margin (boundary) loss on the batch-normalised entropy of "
                                           "softmax(t - s) (generator)",
                                           AdadfqMargin, adadfq_margin_params, NULL, dfq_loss_teardown),
    .needs_student = adadfq_needs_student,
    .compute = adadfq_margin_compute,
};

static const DfqLossClass adadfq_balance_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_LOSS, "adadfq-balance",
                                           "AdaDFQ disagreement/agreement balance: alpha_ds CE(t - s, y) + "
                                           "alpha_as CE(t + s, y) (generator)",
                                           AdadfqBalance, adadfq_balance_params, NULL, dfq_loss_teardown),
    .needs_student = adadfq_needs_student,
    .compute = adadfq_balance_compute,
};

static const DfqLossClass adadfq_entropy_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_LOSS, "adadfq-entropy",
                                           "AdaDFQ student loss: -T^2 mean_b H(softmax((t - s)/T)), teacher detached",
                                           AdadfqEntropy, adadfq_entropy_params, NULL, dfq_loss_teardown),
    .needs_student = adadfq_needs_student,
    .compute = adadfq_entropy_compute,
};

static gboolean
adadfq_register (DfqRegistry *registry, GError **error)
{
    return dfq_registry_add_feature (registry, &adadfq_margin_class.parent, error) &&
           dfq_registry_add_feature (registry, &adadfq_balance_class.parent, error) &&
           dfq_registry_add_feature (registry, &adadfq_entropy_class.parent, error);
}

DFQ_PLUGIN_DEFINE (adadfq, "AdaDFQ losses: margin and balance (generator), entropy (student)", adadfq_register)
