/* Loss plugin `sqnr`: the SQNR loss of the ACD thesis (Kwon, Hanyang Univ.
 * 2022; only the abstract is public: METHODS.md 12.2 is the workbench's
 * reading, docs/methods/sqnr.md). For every quantized activation X of the
 * student (the quantization taps "<site>:quant" that the core emits at each
 * activation site the quantizer changes: tensor Q(X), aux0 X):
 *
 *   SQNR(X) = 10 log10( ||X||^2 / (||X - Q(X)||^2 + eps) )         (dB)
 *   loss    = -(1/L) sum_l SQNR_l / 10             (form db, the default)
 *           =  (1/L) sum_l ||X_l - Q(X_l)||^2 / ||X_l||^2   (form linear)
 *
 * per layer, or per channel (SQNR of each channel, averaged over the
 * channels of a layer, then over layers). The pipeline's loss weight is
 * lambda_s. The signal power ||X||^2 is a constant of the step [INTERP]: the
 * loss does not reward larger activations; the error X - Q(X) is
 * differentiated fully, so the gradient reaches the quantizer's parameters
 * (ACD's clip values) through Q(X) and, with an STE, X only where it was
 * clipped. Channels or layers whose signal is all zero have no SQNR and are
 * left out. */
#include <math.h>
#include <string.h>

#include <dfq/dfq.h>

#define SQNR_EPS 1e-12

typedef enum { SQNR_LAYER, SQNR_CHANNEL } SqnrGranularity;
static const char *const sqnr_granularity_names[] = { "layer", "channel", NULL };
typedef enum { SQNR_DB, SQNR_LINEAR } SqnrForm;
static const char *const sqnr_form_names[] = { "db", "linear", NULL };

typedef struct {
    DfqLoss parent;
    gint granularity;
    gint form;
    char **sites;     /* globs over activation site names */
    char **patterns;  /* "<glob>:quant", NULL-terminated */
} SqnrLoss;

static const DfqParamSpec sqnr_params[] = {
    DFQ_PARAM_ENUM (SqnrLoss, granularity,
                    "SQNR of each quantized tensor (layer) or of each of its channels, averaged over the channels",
                    sqnr_granularity_names, "layer"),
    DFQ_PARAM_ENUM (SqnrLoss, form,
                    "db: -mean SQNR[dB] / 10 (maximise the mean SQNR); linear: mean ||X - Q(X)||^2 / ||X||^2",
                    sqnr_form_names, "db"),
    DFQ_PARAM_STRING_LIST (SqnrLoss, sites,
                           "Globs over the activation sites whose quantization error counts (dfq inspect MODEL "
                           "--sites)",
                           "['*']"),
};

static gboolean
sqnr_init (DfqFeature *feature, GError **error)
{
    SqnrLoss *self = (SqnrLoss *) feature;
    if (self->sites == NULL || self->sites[0] == NULL) {
        g_set_error_literal (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                             "'sites' is empty: give at least one glob over site names, e.g. ['*']");
        return FALSE;
    }
    guint n = g_strv_length (self->sites);
    for (guint i = 0; i < n; i++)
        if (self->sites[i][0] == '\0') {
            g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE, "sites[%u] is an empty glob", i);
            return FALSE;
        }
    self->patterns = g_new0 (char *, n + 1);
    for (guint i = 0; i < n; i++)
        self->patterns[i] = g_strdup_printf ("%s:quant", self->sites[i]);
    return TRUE;
}

static void
sqnr_finalize (DfqFeature *feature)
{
    SqnrLoss *self = (SqnrLoss *) feature;
    g_clear_pointer (&self->patterns, g_strfreev);
    dfq_loss_teardown (feature);
}

static gboolean
sqnr_needs_student (DfqLoss *loss G_GNUC_UNUSED)
{
    return TRUE;
}

static const char *const *
sqnr_student_patterns (DfqLoss *loss)
{
    return (const char *const *) ((SqnrLoss *) loss)->patterns;
}

/* Sum of squares of each channel of @x (all of it when @per_channel is
 * FALSE) into @out, in double. */
static void
sqnr_signal (const DfqTensor *x, gboolean per_channel, double *out, gint64 *per)
{
    const float *d = dfq_tensor_f32 (x);
    gint64 n = dfq_tensor_numel (x);
    gint64 C = per_channel ? x->shape[1] : 1;
    gint64 inner = per_channel ? n / (x->shape[0] * C) : n;
    gint64 outer = per_channel ? x->shape[0] : 1;
    for (gint64 c = 0; c < C; c++) {
        double acc = 0.0;
        for (gint64 o = 0; o < outer; o++) {
            const float *src = d + (o * C + c) * inner;
            for (gint64 i = 0; i < inner; i++)
                acc += (double) src[i] * src[i];
        }
        out[c] = acc;
    }
    *per = inner * outer;
}

/* The term of one layer (per layer: a scalar; per channel: the mean over its
 * channels with a signal), or NULL when nothing in it has a signal. */
static DfqTensor *
sqnr_layer_term (SqnrLoss *self, DfqArena *a, DfqTensor *x, DfqTensor *q)
{
    gboolean per_channel = self->granularity == SQNR_CHANNEL && x->n_dims >= 2;
    gint64 C = per_channel ? x->shape[1] : 1;
    double *signal = g_newa (double, C);
    gint64 per;
    sqnr_signal (x, per_channel, signal, &per);
    DfqTensor *e = dfq_sub (a, x, q);
    DfqTensor *e2 = dfq_mul (a, e, e);
    if (!per_channel) {
        if (!(signal[0] > 0.0))
            return NULL;
        DfqTensor *noise = dfq_sum (a, e2);
        if (self->form == SQNR_LINEAR)
            return dfq_affine (a, noise, (float) (1.0 / signal[0]), 0.0f);
        /* -SQNR/10 = (ln(noise + eps) - ln(signal)) / ln 10 */
        DfqTensor *ln = dfq_log (a, dfq_affine (a, noise, 1.0f, (float) SQNR_EPS));
        return dfq_affine (a, ln, (float) (1.0 / G_LN10), (float) (-log (signal[0]) / G_LN10));
    }
    /* per channel: noise_c = per * mean_c(e^2) */
    DfqTensor *mean = dfq_channel_mean (a, e2);
    DfqTensor *w = dfq_tensor_new_1d (a, DFQ_DTYPE_F32, C);
    float *wv = dfq_tensor_f32 (w);
    guint n_valid = 0;
    double log_signal = 0.0;
    for (gint64 c = 0; c < C; c++) {
        gboolean valid = signal[c] > 0.0;
        n_valid += valid;
        if (self->form == SQNR_LINEAR)
            wv[c] = valid ? (float) ((double) per / signal[c]) : 0.0f;
        else {
            wv[c] = valid ? 1.0f : 0.0f;
            log_signal += valid ? log (signal[c]) - log ((double) per) : 0.0;
        }
    }
    if (n_valid == 0)
        return NULL;
    DfqTensor *v = self->form == SQNR_LINEAR ? mean : dfq_log (a, dfq_affine (a, mean, 1.0f, (float) (SQNR_EPS / per)));
    DfqTensor *s = dfq_sum (a, dfq_mul (a, v, w));
    if (self->form == SQNR_LINEAR)
        return dfq_affine (a, s, (float) (1.0 / n_valid), 0.0f);
    return dfq_affine (a, s, (float) (1.0 / (n_valid * G_LN10)), (float) (-log_signal / (n_valid * G_LN10)));
}

static DfqTensor *
sqnr_compute (DfqLoss *loss, DfqStepContext *ctx, const DfqLossInputs *in G_GNUC_UNUSED, GError **error)
{
    SqnrLoss *self = (SqnrLoss *) loss;
    DfqArena *a = ctx->arena;
    const DfqTapSet *st = loss->student_taps;
    DfqTensor *total = NULL;
    guint n = 0;
    for (guint i = 0; st != NULL && i < dfq_tap_set_size (st); i++) {
        const DfqTap *t = dfq_tap_set_get (st, i);
        if (t->aux0 == NULL || !dfq_tensor_same_shape (t->aux0, t->tensor)) {
            g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE,
                         "tap '%s' is not a quantization tap (Q(X) with X)", t->name);
            return NULL;
        }
        DfqTensor *term = sqnr_layer_term (self, a, t->aux0, t->tensor);
        if (term == NULL)
            continue;
        total = total == NULL ? term : dfq_add (a, total, term);
        n++;
    }
    /* No quantized activation (a full-precision student): nothing to improve. */
    if (total == NULL)
        return dfq_tensor_new_scalar (a, 0.0f);
    return dfq_affine (a, total, 1.0f / (float) n, 0.0f);
}

static const DfqLossClass sqnr_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_LOSS, "sqnr",
                                           "SQNR loss of the student's quantized activations (ACD thesis; "
                                           "db: -mean SQNR/10, linear: mean noise-to-signal ratio)",
                                           SqnrLoss, sqnr_params, sqnr_init, sqnr_finalize),
    .needs_student = sqnr_needs_student,
    .student_tap_patterns = sqnr_student_patterns,
    .compute = sqnr_compute,
};

static gboolean
sqnr_register (DfqRegistry *registry, GError **error)
{
    return dfq_registry_add_feature (registry, &sqnr_class.parent, error);
}

DFQ_PLUGIN_DEFINE (sqnr, "SQNR loss over the student's quantized activations (ACD thesis, METHODS.md 12.2)",
                   sqnr_register)
