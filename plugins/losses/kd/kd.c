/* Loss plugin: GDFQ's knowledge distillation of the student on the teacher
 * (METHODS.md 2.2, trainer.py loss_fn_kd):
 *   T^2 * KLDiv(log_softmax(s/T), softmax(t/T))
 * with nn.KLDivLoss's default "mean" reduction over all B*K elements, not the
 * per-sample "batchmean" (the official pitfall: with T = 20 the effective
 * weight is 400/K times the batch-mean KL). alpha is the `weight:` of the
 * list item. The teacher's logits are detached. */
#include <dfq/dfq.h>

typedef struct {
    DfqLoss parent;
    gdouble temperature;
    gint reduction; /* DfqReduction */
} KdLoss;

/* In DfqReduction order. */
static const char *const kd_reductions[] = { "mean", "batchmean", "sum", NULL };
G_STATIC_ASSERT (DFQ_REDUCTION_MEAN == 0 && DFQ_REDUCTION_BATCHMEAN == 1 && DFQ_REDUCTION_SUM == 2);

static const DfqParamSpec kd_params[] = {
    DFQ_PARAM_DOUBLE (KdLoss, temperature, "Softmax temperature T; the KL is multiplied by T^2", 1e-3, 1e3, 20),
    DFQ_PARAM_ENUM (KdLoss, reduction,
                    "KL reduction: 'mean' over B*K (PyTorch KLDivLoss default, GDFQ), 'batchmean' (sum / B), 'sum'",
                    kd_reductions, "mean"),
};

static gboolean
kd_needs_student (DfqLoss *loss G_GNUC_UNUSED)
{
    return TRUE;
}

static DfqTensor *
kd_compute (DfqLoss *loss, DfqStepContext *ctx, const DfqLossInputs *in, GError **error)
{
    KdLoss *self = (KdLoss *) loss;
    if (in->student_logits == NULL || in->teacher_logits == NULL) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE, "KD needs the %s logits, which this step lacks",
                     in->student_logits == NULL ? "student" : "teacher");
        return NULL;
    }
    if (!dfq_tensor_same_shape (in->student_logits, in->teacher_logits)) {
        char s[64], t[64];
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE, "student logits %s and teacher logits %s differ",
                     dfq_tensor_shape_string (in->student_logits, s, sizeof s),
                     dfq_tensor_shape_string (in->teacher_logits, t, sizeof t));
        return NULL;
    }
    DfqArena *a = ctx->arena;
    const float inv_t = (float) (1.0 / self->temperature);
    const float t2 = (float) (self->temperature * self->temperature);
    /* dfq_kl_div takes the student's logits and applies log_softmax itself. */
    DfqTensor *s = dfq_affine (a, in->student_logits, inv_t, 0.0f);
    DfqTensor *t = dfq_affine (a, dfq_detach (a, in->teacher_logits), inv_t, 0.0f);
    DfqTensor *kl = dfq_kl_div (a, s, dfq_softmax (a, t), (DfqReduction) self->reduction);
    return dfq_affine (a, kl, t2, 0.0f);
}

static const DfqLossClass kd_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_LOSS, "kd",
                                           "Knowledge distillation: T^2 * KL(softmax(t/T) || softmax(s/T)), GDFQ reduction",
                                           KdLoss, kd_params, NULL, dfq_loss_teardown),
    .needs_student = kd_needs_student,
    .compute = kd_compute,
};

static gboolean
kd_register (DfqRegistry *registry, GError **error)
{
    return dfq_registry_add_feature (registry, &kd_class.parent, error);
}

DFQ_PLUGIN_DEFINE (kd, "Knowledge-distillation loss (GDFQ student loss)", kd_register)
