/* An example third-party dfq plugin, built out of tree against an installed
 * dfq (see Makefile and docs/writing-a-plugin.md). It registers two losses:
 *
 *   example-l1   mean (or sum) of |student logits - teacher logits|, scaled;
 *                its parameter table uses every scalar and list type;
 *   example-sum  a weighted sum of other losses, showing FEATURE and
 *                FEATURE_LIST parameters (features inside a feature).
 *
 * Everything the host needs is data: the param tables give YAML binding,
 * `dfq inspect`, the docs and the conformance test; the plugin writes code
 * only for what the loss computes. */
#include <dfq/dfq.h>

/* example-l1 ------------------------------------------------------------------- */

typedef enum {
    EXAMPLE_REDUCTION_MEAN,
    EXAMPLE_REDUCTION_SUM,
} ExampleReduction;

static const char *const example_reductions[] = { "mean", "sum", NULL };

/* A STRUCT parameter: a block of related keys, `window: {start: 2, stop: 10}`. */
typedef struct {
    gint start; /* first epoch where the loss is on */
    gint stop;  /* first epoch where it is off again; 0: never */
} ExampleWindow;

static const DfqParamSpec example_window_params[] = {
    DFQ_PARAM_INT (ExampleWindow, start, "First epoch with the loss on", 0, 100000, 0),
    DFQ_PARAM_INT (ExampleWindow, stop, "First epoch with the loss off again (0: never)", 0, 100000, 0),
};

/* The instance: DfqLoss (whose first member is DfqFeature) first, then one
 * field per parameter. The core allocates it, fills every field from the YAML
 * (or the default) and frees the strings and lists itself. */
typedef struct {
    DfqLoss parent;
    gdouble scale;              /* DOUBLE */
    gint reduction;             /* ENUM (index into example_reductions) */
    gboolean detach_teacher;    /* BOOL */
    char *note;                 /* STRING (NULL allowed) */
    DfqNumberList skip_epochs;  /* INT_LIST */
    DfqNumberList epoch_scales; /* DOUBLE_LIST */
    char **tags;                /* STRING_LIST (NULL when empty) */
    ExampleWindow window;       /* STRUCT */
} ExampleL1;

static const DfqParamSpec example_l1_params[] = {
    DFQ_PARAM_DOUBLE (ExampleL1, scale, "Multiplies the loss", 0, 1000, 1),
    DFQ_PARAM_ENUM (ExampleL1, reduction, "How the |difference| is reduced over batch and classes",
                    example_reductions, "mean"),
    DFQ_PARAM_BOOL (ExampleL1, detach_teacher, "Do not back-propagate into the teacher logits", TRUE),
    DFQ_PARAM_STRING (ExampleL1, note, "Free text, kept in the resolved config of the run", NULL),
    DFQ_PARAM_INT_LIST (ExampleL1, skip_epochs, "Epochs where the loss is 0", 0, 100000, "[]"),
    DFQ_PARAM_DOUBLE_LIST (ExampleL1, epoch_scales,
                           "Extra factor per epoch (the last value repeats); [] for none", 0, 1000, "[]"),
    DFQ_PARAM_STRING_LIST (ExampleL1, tags, "Labels for reports", NULL),
    DFQ_PARAM_STRUCT (ExampleL1, window, "Epochs where the loss is on", example_window_params),
};

/* Cross-parameter checks belong in init(): it runs once all params are bound,
 * and its error is reported at the feature's place in the pipeline file. */
static gboolean
example_l1_init (DfqFeature *feature, GError **error)
{
    ExampleL1 *self = (ExampleL1 *) feature;
    if (self->window.stop != 0 && self->window.stop <= self->window.start) {
        g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                     "window: stop (%d) must be after start (%d)", self->window.stop, self->window.start);
        return FALSE;
    }
    return TRUE;
}

static gboolean
example_l1_needs_student (DfqLoss *loss)
{
    return TRUE;
}

static gdouble
example_l1_factor (const ExampleL1 *self, gint epoch)
{
    if (epoch < self->window.start || (self->window.stop != 0 && epoch >= self->window.stop))
        return 0.0;
    for (guint i = 0; i < self->skip_epochs.n; i++)
        if ((gint) self->skip_epochs.v[i] == epoch)
            return 0.0;
    gdouble factor = self->scale;
    if (self->epoch_scales.n > 0)
        factor *= self->epoch_scales.v[MIN ((guint) MAX (epoch, 0), self->epoch_scales.n - 1)];
    return factor;
}

static DfqTensor *
example_l1_compute (DfqLoss *loss, DfqStepContext *ctx, const DfqLossInputs *in, GError **error)
{
    ExampleL1 *self = (ExampleL1 *) loss;
    if (in->student_logits == NULL || in->teacher_logits == NULL) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE, "example-l1 needs teacher and student logits");
        return NULL;
    }
    DfqTensor *teacher = self->detach_teacher ? dfq_detach (ctx->arena, in->teacher_logits) : in->teacher_logits;
    DfqTensor *diff = dfq_abs (ctx->arena, dfq_sub (ctx->arena, in->student_logits, teacher));
    DfqTensor *reduced = self->reduction == EXAMPLE_REDUCTION_SUM ? dfq_sum (ctx->arena, diff)
                                                                  : dfq_mean (ctx->arena, diff);
    return dfq_affine (ctx->arena, reduced, (float) example_l1_factor (self, ctx->epoch), 0.0f);
}

static const DfqLossClass example_l1_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_LOSS, "example-l1",
                                           "Example: scaled mean |student - teacher| of the logits",
                                           ExampleL1, example_l1_params, example_l1_init, dfq_loss_teardown),
    .needs_student = example_l1_needs_student,
    .compute = example_l1_compute,
};

/* example-sum ------------------------------------------------------------------ */

typedef struct {
    DfqLoss parent;
    DfqFeature *base;  /* FEATURE of kind LOSS */
    GPtrArray *terms;  /* FEATURE_LIST of LOSS, each with its `weight:` */
} ExampleSum;

static const DfqParamSpec example_sum_params[] = {
    DFQ_PARAM_FEATURE (ExampleSum, base, "The first term, weight 1 (a loss without taps)", DFQ_FEATURE_LOSS,
                       "example-l1"),
    DFQ_PARAM_FEATURE_LIST (ExampleSum, terms, "More terms: [{use: <loss>, weight: w}, ...] (losses without taps)",
                            DFQ_FEATURE_LOSS, NULL),
};

/* Nested losses are computed here, not by the core, so they get no taps. */
static gboolean
example_sum_check_term (DfqFeature *term, GError **error)
{
    const DfqLossClass *klass = DFQ_LOSS_CLASS (term);
    if (klass->teacher_tap_patterns != NULL || klass->student_tap_patterns != NULL || klass->compute == NULL) {
        g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                     "'%s' reads model taps and cannot be nested in example-sum", term->klass->name);
        return FALSE;
    }
    return TRUE;
}

static gboolean
example_sum_init (DfqFeature *feature, GError **error)
{
    ExampleSum *self = (ExampleSum *) feature;
    if (self->base != NULL && !example_sum_check_term (self->base, error))
        return FALSE;
    for (guint i = 0; i < self->terms->len; i++)
        if (!example_sum_check_term (self->terms->pdata[i], error))
            return FALSE;
    return TRUE;
}

static gboolean
example_sum_needs_student (DfqLoss *loss)
{
    ExampleSum *self = (ExampleSum *) loss;
    gboolean needs = FALSE;
    if (self->base != NULL && DFQ_LOSS_CLASS (self->base)->needs_student != NULL)
        needs = DFQ_LOSS_CLASS (self->base)->needs_student ((DfqLoss *) self->base);
    for (guint i = 0; i < self->terms->len; i++) {
        DfqLoss *term = self->terms->pdata[i];
        if (DFQ_LOSS_CLASS (term)->needs_student != NULL)
            needs = needs || DFQ_LOSS_CLASS (term)->needs_student (term);
    }
    return needs;
}

static DfqTensor *
example_sum_compute (DfqLoss *loss, DfqStepContext *ctx, const DfqLossInputs *in, GError **error)
{
    ExampleSum *self = (ExampleSum *) loss;
    DfqTensor *total = NULL;
    for (guint i = 0; i <= self->terms->len; i++) {
        DfqFeature *term = i == 0 ? self->base : self->terms->pdata[i - 1];
        if (term == NULL)
            continue;
        DfqTensor *value = DFQ_LOSS_CLASS (term)->compute ((DfqLoss *) term, ctx, in, error);
        if (value == NULL) {
            g_prefix_error (error, "%s: ", term->label);
            return NULL;
        }
        value = dfq_affine (ctx->arena, value, (float) (i == 0 ? 1.0 : term->weight), 0.0f);
        total = total == NULL ? value : dfq_add (ctx->arena, total, value);
    }
    if (total == NULL) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_STATE, "example-sum has no terms");
        return NULL;
    }
    return total;
}

static const DfqLossClass example_sum_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_LOSS, "example-sum",
                                           "Example: weighted sum of other losses (features inside a feature)",
                                           ExampleSum, example_sum_params, example_sum_init, dfq_loss_teardown),
    .needs_student = example_sum_needs_student,
    .compute = example_sum_compute,
};

/* The plugin -------------------------------------------------------------------- */

static gboolean
example_register (DfqRegistry *registry, GError **error)
{
    return dfq_registry_add_feature (registry, &example_l1_class.parent, error) &&
           dfq_registry_add_feature (registry, &example_sum_class.parent, error);
}

/* The file must be called libdfq-example.so: the name here is checked against it. */
DFQ_PLUGIN_DEFINE_VERSIONED (example, "1.0.0", "Example third-party plugin: two losses", example_register)
