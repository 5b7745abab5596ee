/* Example dfq plugin: a feature-map loss, attention transfer (Zagoruyko &
 * Komodakis, ICLR 2017), built out of tree against an installed dfq (see
 * Makefile and docs/writing-a-plugin.md, "A feature-map loss").
 *
 * For every tapped feature map F [N, C, H, W] (the same tap names in the
 * student and the teacher):
 *   Q   = mean_c |F_c|^p                      [N, H, W]   spatial attention
 *   q   = Q / ||Q||_2, per sample             [N, H*W]
 *   L   = mean over the maps of mean((q_s - q_t)^2)
 * The teacher side is detached, so the gradient reaches only the student.
 *
 * How a loss reads feature maps: its class lists glob patterns over tap names
 * (teacher_tap_patterns / student_tap_patterns); before the first step the
 * core makes a DfqTapSet of them for each side, and every forward of the step
 * fills it with the matching taps (name, tensor), in forward order. compute()
 * reads self->parent.teacher_taps / student_taps. `dfq inspect MODEL --taps`
 * lists the names; `dfq validate` fails when a pattern matches none. */
#include <dfq/dfq.h>

typedef struct {
    DfqLoss parent;
    gdouble p;   /* exponent of |F| */
    char **taps; /* glob patterns over tap names, NULL-terminated */
} AttentionLoss;

static const DfqParamSpec attention_params[] = {
    DFQ_PARAM_DOUBLE (AttentionLoss, p, "Exponent p of the attention map mean_c |F_c|^p (the paper: 2)", 0.5, 8, 2),
    /* Quoted in YAML: a plain scalar starting with '*' would be an alias. */
    DFQ_PARAM_STRING_LIST (AttentionLoss, taps,
                           "Globs over tap names of the feature maps to match (dfq inspect MODEL --taps); default "
                           "the block outputs of resnet-cifar",
                           "['layers.*:out']"),
};

static gboolean
attention_init (DfqFeature *feature, GError **error)
{
    AttentionLoss *self = (AttentionLoss *) feature;
    if (self->taps == NULL) {
        g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                     "'taps' is empty: give at least one glob, e.g. ['layers.*:out']");
        return FALSE;
    }
    return TRUE;
}

static gboolean
attention_needs_student (DfqLoss *loss)
{
    return TRUE;
}

/* The same patterns for both sides: the student has the teacher's layers. */
static const char *const *
attention_tap_patterns (DfqLoss *loss)
{
    return (const char *const *) ((AttentionLoss *) loss)->taps;
}

/* q = normalize(mean_c |F|^p) as [N, H*W]. */
static DfqTensor *
attention_map (DfqArena *a, DfqTensor *f, float p)
{
    DfqTensor *q = dfq_mean_axis (a, dfq_pow (a, dfq_abs (a, f), p), 1); /* [N, H, W] */
    gint64 flat[2] = { f->shape[0], f->shape[2] * f->shape[3] };
    return dfq_l2_normalize (a, dfq_reshape (a, q, 2, flat), 1e-12f);
}

static DfqTensor *
attention_compute (DfqLoss *loss, DfqStepContext *ctx, const DfqLossInputs *in, GError **error)
{
    AttentionLoss *self = (AttentionLoss *) loss;
    DfqArena *a = ctx->arena;
    const DfqTapSet *teacher = loss->teacher_taps, *student = loss->student_taps;
    guint n = teacher != NULL ? dfq_tap_set_size (teacher) : 0;
    if (n == 0 || student == NULL) {
        /* dfq validate makes this unreachable for pipelines; a message anyway. */
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_MISSING, "no feature map matches the taps");
        return NULL;
    }
    DfqTensor *total = NULL;
    for (guint i = 0; i < n; i++) {
        const DfqTap *t = dfq_tap_set_get (teacher, i);
        const DfqTap *s = dfq_tap_set_find (student, t->name);
        if (s == NULL || t->tensor->n_dims != 4 || !dfq_tensor_same_shape (s->tensor, t->tensor)) {
            g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE,
                         "feature map '%s': the student's and the teacher's must both be [N, C, H, W] of one shape",
                         t->name);
            return NULL;
        }
        DfqTensor *qs = attention_map (a, s->tensor, (float) self->p);
        DfqTensor *qt = attention_map (a, dfq_detach (a, t->tensor), (float) self->p);
        DfqTensor *term = dfq_mse (a, qs, qt);
        total = total == NULL ? term : dfq_add (a, total, term);
    }
    return dfq_affine (a, total, 1.0f / (float) n, 0.0f);
}

static const DfqLossClass attention_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_LOSS, "attention-transfer",
                                           "Example: attention transfer on intermediate feature maps (taps)",
                                           AttentionLoss, attention_params, attention_init, dfq_loss_teardown),
    .needs_student = attention_needs_student,
    .teacher_tap_patterns = attention_tap_patterns,
    .student_tap_patterns = attention_tap_patterns,
    .compute = attention_compute,
};

static gboolean
attention_register (DfqRegistry *registry, GError **error)
{
    return dfq_registry_add_feature (registry, &attention_class.parent, error);
}

DFQ_PLUGIN_DEFINE_VERSIONED (attention, "0.1.0", "Example: a feature-map loss (attention transfer)", attention_register)
