/* Loss plugin: cross-entropy of the teacher's or the student's logits against
 * the step's labels (METHODS.md 2.2): with `target: teacher` it is the first
 * term of the GDFQ generator loss L_G, with `target: student` the hard-label
 * term of the GDFQ student loss. Soft labels (Qimera) are used when the step
 * has them. Mean over the batch (nn.CrossEntropyLoss). */
#include <dfq/dfq.h>

typedef enum {
    CE_TARGET_TEACHER,
    CE_TARGET_STUDENT,
} CeTarget;

typedef struct {
    DfqLoss parent;
    gint target; /* CeTarget */
} CeLoss;

static const char *const ce_targets[] = { "teacher", "student", NULL };

static const DfqParamSpec ce_params[] = {
    DFQ_PARAM_ENUM (CeLoss, target,
                    "Whose logits: 'teacher' (generator loss, GDFQ L_G) or 'student' (student loss)",
                    ce_targets, "student"),
};

static gboolean
ce_needs_student (DfqLoss *loss)
{
    return ((CeLoss *) loss)->target == CE_TARGET_STUDENT;
}

static DfqTensor *
ce_compute (DfqLoss *loss, DfqStepContext *ctx, const DfqLossInputs *in, GError **error)
{
    CeLoss *self = (CeLoss *) loss;
    const char *who = ce_targets[self->target];
    DfqTensor *logits = self->target == CE_TARGET_TEACHER ? in->teacher_logits : in->student_logits;
    if (logits == NULL) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE, "no %s logits in this step", who);
        return NULL;
    }
    /* Soft labels carry more than the hard ones when a synthesizer gives both
     * (Qimera's superposed samples); for one-hot rows they are the same loss. */
    DfqTensor *labels = in->soft_labels != NULL ? in->soft_labels : in->labels;
    if (labels == NULL) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE,
                     "cross-entropy needs labels, but this step has none (does the synthesizer make them?)");
        return NULL;
    }
    gboolean soft = labels == in->soft_labels;
    if (labels->shape[0] != logits->shape[0] || (soft && (labels->n_dims != 2 || labels->shape[1] != logits->shape[1]))) {
        char want[64], got[64];
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE, "%s labels %s do not fit the %s logits %s",
                     soft ? "soft" : "hard", dfq_tensor_shape_string (labels, got, sizeof got), who,
                     dfq_tensor_shape_string (logits, want, sizeof want));
        return NULL;
    }
    return dfq_cross_entropy (ctx->arena, logits, labels);
}

static const DfqLossClass ce_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_LOSS, "ce",
                                           "Cross-entropy of teacher or student logits vs the labels (mean over the batch)",
                                           CeLoss, ce_params, NULL, dfq_loss_teardown),
    .needs_student = ce_needs_student,
    .compute = ce_compute,
};

static gboolean
ce_register (DfqRegistry *registry, GError **error)
{
    return dfq_registry_add_feature (registry, &ce_class.parent, error);
}

DFQ_PLUGIN_DEFINE (ce, "Cross-entropy loss (GDFQ generator and student terms)", ce_register)
