/* Loss plugin: channel-attention knowledge distillation on intermediate
 * feature maps (METHODS.md 6.2; the "intermediate-layer KD using channel-wise
 * attention" of BAG, Baek et al. 2024, an interpretation of its abstract, with
 * AKT's channel term as the public reference, METHODS.md 6.1). For every
 * tapped layer l, student and teacher maps F of the same name and shape
 * [B, C, H, W]:
 *   v_bc = (1/HW) sum_hw F_bchw^2                 channel energy
 *   a    = v / ||v||_2 over c       (mode l2)     or softmax_c(v / tau) (mode softmax)
 *   L    = (1/|L|) sum_l mean_{b,c} (a^s - a^t)^2 (l2)
 *        | (1/|L|) sum_l mean_b KL(a^t_b || a^s_b) (softmax)
 * The teacher side is detached: the gradient reaches only the student. The
 * paper's weight (1000 for l2, attention-transfer convention) is the list
 * item's `weight:`. */
#include <math.h>
#include <string.h>

#include <dfq/dfq.h>

/* F.normalize's guard, on the squared norm. */
#define CAKD_L2_EPS 1e-12f

typedef enum {
    CAKD_MODE_L2,
    CAKD_MODE_SOFTMAX,
} CakdMode;

static const char *const cakd_modes[] = { "l2", "softmax", NULL };

typedef struct {
    DfqLoss parent;
    gint mode; /* CakdMode */
    gdouble tau;
    char **taps; /* glob patterns over tap names, NULL-terminated */
} CakdLoss;

/* Every conv -> BN output of the residual bodies: in resnet-cifar
 * layers.N.bn1:out and layers.N.bn2:out (18 layers in ResNet-20; the stem "bn"
 * and the projections "layers.N.down.1" do not match), in tiny-cnn its two
 * conv BNs. Quoted: a plain YAML scalar starting with '*' is an alias. */
#define CAKD_TAPS_DEFAULT "['*bn1:out', '*bn2:out']"

static const DfqParamSpec cakd_params[] = {
    DFQ_PARAM_ENUM (CakdLoss, mode,
                    "Attention normalisation and distance: l2 (v/||v||, mean squared difference) or "
                    "softmax (softmax(v/tau), KL(teacher || student) per sample)",
                    cakd_modes, "l2"),
    DFQ_PARAM_DOUBLE (CakdLoss, tau, "Softmax temperature of mode softmax", 1e-3, 1e3, 1),
    DFQ_PARAM_STRING_LIST (CakdLoss, taps,
                           "Globs over tap names of the feature maps to match (same names in student and teacher); "
                           "default every residual-body conv output after BN; AKT's unit bodies: ['layers.*:body']",
                           CAKD_TAPS_DEFAULT),
};

static gboolean
cakd_init (DfqFeature *feature, GError **error)
{
    CakdLoss *self = (CakdLoss *) feature;
    if (self->taps == NULL || self->taps[0] == NULL) {
        g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                     "'taps' is empty: give at least one glob, e.g. ['*bn1:out', '*bn2:out']");
        return FALSE;
    }
    for (guint i = 0; self->taps[i] != NULL; i++)
        if (self->taps[i][0] == '\0') {
            g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE, "taps[%u] is an empty glob", i);
            return FALSE;
        }
    return TRUE;
}

static gboolean
cakd_needs_student (DfqLoss *loss G_GNUC_UNUSED)
{
    return TRUE;
}

static const char *const *
cakd_tap_patterns (DfqLoss *loss)
{
    return (const char *const *) ((CakdLoss *) loss)->taps;
}

/* The attention [B, C] of a feature map [B, C, ...]. */
static DfqTensor *
cakd_attention (CakdLoss *self, DfqArena *a, DfqTensor *f)
{
    DfqTensor *sq = dfq_mul (a, f, f);
    DfqTensor *v = f->n_dims == 4 ? dfq_global_avg_pool (a, sq) : sq;
    if (self->mode == CAKD_MODE_L2)
        return dfq_l2_normalize (a, v, CAKD_L2_EPS);
    /* softmax mode: the logits; callers softmax them (teacher) or let the KL
     * take their log-softmax (student). */
    return dfq_affine (a, v, (float) (1.0 / self->tau), 0.0f);
}

static char *
cakd_patterns_string (CakdLoss *self)
{
    g_autofree char *joined = g_strjoinv ("', '", self->taps);
    return g_strdup_printf ("['%s']", joined);
}

static DfqTensor *
cakd_compute (DfqLoss *loss, DfqStepContext *ctx, const DfqLossInputs *in G_GNUC_UNUSED, GError **error)
{
    CakdLoss *self = (CakdLoss *) loss;
    DfqArena *a = ctx->arena;
    const DfqTapSet *tt = loss->teacher_taps, *st = loss->student_taps;
    guint n_t = tt != NULL ? dfq_tap_set_size (tt) : 0;
    if (n_t == 0) {
        g_autofree char *p = cakd_patterns_string (self);
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_MISSING,
                     "no feature map of the teacher matches taps %s (resnet-cifar: 'layers.*.bn1:out', "
                     "'layers.*.bn2:out', 'layers.*:body', 'layers.*:out')", p);
        return NULL;
    }
    DfqTensor *total = NULL;
    for (guint i = 0; i < n_t; i++) {
        const DfqTap *t = dfq_tap_set_get (tt, i);
        const DfqTap *s = st != NULL ? dfq_tap_set_find (st, t->name) : NULL;
        if (s == NULL) {
            g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_MISSING,
                         "the teacher has feature map '%s' but the student does not", t->name);
            return NULL;
        }
        if (!dfq_tensor_same_shape (s->tensor, t->tensor) || (t->tensor->n_dims != 2 && t->tensor->n_dims != 4)) {
            char ss[64], ts[64];
            g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE,
                         "feature map '%s': student %s and teacher %s must have one shape, [B,C,H,W] or [B,C]",
                         t->name, dfq_tensor_shape_string (s->tensor, ss, sizeof ss),
                         dfq_tensor_shape_string (t->tensor, ts, sizeof ts));
            return NULL;
        }
        DfqTensor *as = cakd_attention (self, a, s->tensor);
        DfqTensor *at = cakd_attention (self, a, dfq_detach (a, t->tensor));
        DfqTensor *term = self->mode == CAKD_MODE_L2
                              ? dfq_mse (a, as, at)
                              : dfq_kl_div (a, as, dfq_softmax (a, at), DFQ_REDUCTION_BATCHMEAN);
        total = total == NULL ? term : dfq_add (a, total, term);
    }
    return dfq_affine (a, total, 1.0f / (float) n_t, 0.0f);
}

static const DfqLossClass cakd_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_LOSS, "ca-kd",
                                           "Channel-attention KD on intermediate feature maps (BAG; l2: mean "
                                           "squared difference of L2-normalised channel energies)",
                                           CakdLoss, cakd_params, cakd_init, dfq_loss_teardown),
    .needs_student = cakd_needs_student,
    .teacher_tap_patterns = cakd_tap_patterns,
    .student_tap_patterns = cakd_tap_patterns,
    .compute = cakd_compute,
};

static gboolean
cakd_register (DfqRegistry *registry, GError **error)
{
    return dfq_registry_add_feature (registry, &cakd_class.parent, error);
}

DFQ_PLUGIN_DEFINE (ca-kd, "Channel-attention knowledge distillation on intermediate features (BAG, METHODS.md 6.2)",
                   cakd_register)
