/* Quantizer plugin `acd`: Asymmetric Clipping-value Decay (Kwon, M.S. thesis,
 * Hanyang Univ. 2022; only the abstract is public, so this is the workbench's
 * reading, METHODS.md 12.2 and docs/methods/acd.md, every open choice a
 * parameter). Per-channel QAT for light-weight CNNs:
 *
 * - weights: per output channel, asymmetric [min, max] of the current float
 *   weights (GDFQ's quantizer, dfq_fake_quant), optionally shrunk by a
 *   per-channel clip ratio chosen once by least quantization MSE;
 * - activations: per channel c, learnable clip values l_c < u_c (PARAM
 *   tensors), initialised from calibration statistics (mean over calibration
 *   batches of each batch's per-channel min/max or percentiles), quantized by
 *   dfq_fake_quant_clip: STE inside [l_c, u_c], gradients to u_c above it and
 *   to l_c below it (plus the exact in-range terms when in_range_grad);
 * - the lower clip stays at 0 where every calibration value was >= 0
 *   (ReLU/ReLU6 outputs) unless lower: learn; signed sites (MobileNetV2's
 *   bottleneck outputs with act_sites: conv_inputs) always learn it;
 * - the clipping-value decay lambda_cv * sum(u_c^2 + l_c^2) through the
 *   regulariser hook; the clip values form their own optimiser group. */
#include <math.h>
#include <string.h>

#include <dfq/dfq.h>

#define ACD_FULL_PRECISION 32
#define ACD_MAX_QUANT_BITS 16
/* Weight MSE init: clip ratios 1.00, 0.99, ..., 0.01 of (min, max). */
#define ACD_MSE_GRID 100

typedef enum { ACD_W_MINMAX, ACD_W_MSE } AcdWeightRange;
static const char *const acd_w_range_names[] = { "minmax", "mse", NULL };
typedef enum { ACD_GRAN_CHANNEL, ACD_GRAN_TENSOR } AcdGranularity;
static const char *const acd_gran_names[] = { "channel", "tensor", NULL };
typedef enum { ACD_INIT_MINMAX, ACD_INIT_PERCENTILE } AcdInit;
static const char *const acd_init_names[] = { "minmax", "percentile", NULL };
typedef enum { ACD_LOWER_FIXED0, ACD_LOWER_LEARN } AcdLower;
static const char *const acd_lower_names[] = { "fixed0", "learn", NULL };
static const char *const acd_ste_names[] = { "plain", "clipped", NULL };
static const DfqSteMode acd_ste_modes[] = { DFQ_STE_PLAIN, DFQ_STE_CLIPPED };

typedef struct {
    char *name;
    DfqSiteKind kind;
    gint64 channels; /* activations: clip values per site (C, or 1 per tensor); weights: output channels */
    DfqTensor *lo;   /* activations: PARAM [channels] "<site>.clip_lo" */
    DfqTensor *hi;   /* activations: PARAM [channels] "<site>.clip_hi" */
    /* activations: "<site>.calib" [2 channels + 2]: mean over calibration
     * batches of each batch's lower / upper statistic, then the number of
     * batches and the smallest value seen; weights (mse): "<site>.w_ratio"
     * [channels + 1], the clip ratios and a flag (1 = chosen) */
    DfqTensor *stats;
} AcdSite;

typedef struct {
    DfqQuantizer parent;
    /* params */
    gint w_bits;
    gint a_bits;
    gint w_range;
    gint w_ste;
    gint granularity;
    gint act_init;
    gdouble percentile;
    gint lower;
    gboolean in_range_grad;
    gdouble clip_decay;
    gdouble clip_lr;
    gdouble clip_weight_decay;
    /* sites */
    GPtrArray *sites;    /* AcdSite *, forward order (owns them) */
    GHashTable *weights; /* name -> AcdSite * */
    GHashTable *acts;
} Acd;

static gboolean acd_check_bits (const DfqParamSpec *spec, gconstpointer value, GError **error);

static const DfqParamSpec acd_params[] = {
    DFQ_PARAM_INT (Acd, w_bits, "Weight bits of every conv/linear layer; 32 = full precision", 1, 32, 4,
                   .check = acd_check_bits),
    DFQ_PARAM_INT (Acd, a_bits, "Activation bits of every activation site; 32 = full precision", 1, 32, 4,
                   .check = acd_check_bits),
    DFQ_PARAM_ENUM (Acd, w_range,
                    "Weight range per output channel: minmax (of the current weights, every forward) or mse "
                    "(that min/max times a per-channel ratio chosen once, on the first weights seen, by least "
                    "quantization MSE over 100 ratios) [INTERP]",
                    acd_w_range_names, "minmax"),
    DFQ_PARAM_ENUM (Acd, w_ste, "Weight straight-through estimator: plain (GDFQ) or clipped (zero outside the range)",
                    acd_ste_names, "plain"),
    DFQ_PARAM_ENUM (Acd, granularity,
                    "Activation clip values per channel (ACD) or one pair per tensor (an asymmetric PACT, for "
                    "ablation)",
                    acd_gran_names, "channel"),
    DFQ_PARAM_ENUM (Acd, act_init,
                    "Initial clip values from calibration: per batch and channel the min/max or the "
                    "(100-p)th/pth percentiles, averaged over the calibration batches",
                    acd_init_names, "minmax"),
    DFQ_PARAM_DOUBLE (Acd, percentile, "act_init percentile: p (the lower one is 100 - p)", 50.0, 100.0, 99.99),
    DFQ_PARAM_ENUM (Acd, lower,
                    "Lower clip value: fixed0 (held at 0 at sites whose calibration values were all >= 0, i.e. "
                    "after ReLU/ReLU6; learnt at signed sites) or learn (learnt everywhere) [INTERP]",
                    acd_lower_names, "fixed0"),
    DFQ_PARAM_BOOL (Acd, in_range_grad,
                    "Add the exact in-range derivatives of the clip values (LSQ+-style) to the outside ones", FALSE),
    DFQ_PARAM_DOUBLE (Acd, clip_decay,
                      "lambda_cv of the clipping-value decay lambda_cv * sum(u^2 + l^2), added to the loss "
                      "(METHODS.md 12.2: the run's weight decay) [INTERP]",
                      0.0, 10.0, 1e-4),
    DFQ_PARAM_DOUBLE (Acd, clip_lr, "Learning rate of the clip values (<= 0: the student optimiser's)", -1.0, 100.0,
                      0.0),
    DFQ_PARAM_DOUBLE (Acd, clip_weight_decay,
                      "Optimiser weight decay of the clip values (< 0: the student optimiser's; default 0, "
                      "since clip_decay already decays them)",
                      -1.0, 10.0, 0.0),
};

static gboolean
acd_bits_valid (gint bits)
{
    return (bits >= 1 && bits <= ACD_MAX_QUANT_BITS) || bits == ACD_FULL_PRECISION;
}

static gboolean
acd_check_bits (const DfqParamSpec *spec, gconstpointer value, GError **error)
{
    gint bits = *(const gint *) value;
    if (acd_bits_valid (bits))
        return TRUE;
    g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                 "%d bits: must be 1-16, or 32 for full precision", bits);
    return FALSE;
}

/* ------------------------------------------------------------ sites */

static void
acd_site_free (gpointer p)
{
    AcdSite *s = p;
    g_free (s->name);
    g_free (s);
}

static DfqTensor *
acd_named_vector (DfqArena *arena, gint64 n, const char *site, const char *what)
{
    DfqTensor *t = dfq_tensor_new_1d (arena, DFQ_DTYPE_F32, n);
    dfq_tensor_set_name (t, "%s.%s", site, what);
    return t;
}

static gboolean
acd_add_site (DfqQuantizer *q, DfqSiteKind kind, const char *site, const DfqTensor *example, guint index,
              gboolean is_first, gboolean is_last, GError **error)
{
    Acd *self = (Acd *) q;
    GHashTable *table = kind == DFQ_SITE_WEIGHT ? self->weights : self->acts;
    if (g_hash_table_contains (table, site)) /* attached again: keep the learnt clips */
        return TRUE;
    if (example == NULL || example->n_dims < 2 || dfq_tensor_numel (example) == 0) {
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE,
                     "acd: site '%s' has no channel axis (it needs a tensor of at least 2 dims)", site);
        return FALSE;
    }
    AcdSite *s = g_new0 (AcdSite, 1);
    s->name = g_strdup (site);
    s->kind = kind;
    if (kind == DFQ_SITE_WEIGHT) {
        s->channels = example->shape[0];
        s->stats = acd_named_vector (q->arena, s->channels + 1, site, "w_ratio");
    } else {
        s->channels = self->granularity == ACD_GRAN_CHANNEL ? example->shape[1] : 1;
        s->lo = acd_named_vector (q->arena, s->channels, site, "clip_lo");
        s->hi = acd_named_vector (q->arena, s->channels, site, "clip_hi");
        dfq_tensor_set_param (s->lo);
        dfq_tensor_set_param (s->hi);
        s->stats = acd_named_vector (q->arena, 2 * s->channels + 2, site, "calib");
    }
    g_ptr_array_add (self->sites, s);
    g_hash_table_insert (table, s->name, s);
    return TRUE;
}

static AcdSite *
acd_lookup (Acd *self, DfqSiteKind kind, const char *site)
{
    return g_hash_table_lookup (kind == DFQ_SITE_WEIGHT ? self->weights : self->acts, site);
}

/* ------------------------------------------------------------ weights */

static void
acd_minmax (const float *x, gint64 n, float *mn, float *mx)
{
    float a = x[0], b = x[0];
    for (gint64 i = 1; i < n; i++) {
        a = fminf (a, x[i]);
        b = fmaxf (b, x[i]);
    }
    *mn = a;
    *mx = b;
}

/* w_range mse: per channel the ratio of (min, max) with the least squared
 * quantization error, chosen once and kept in the checkpointed state. */
static void
acd_choose_weight_ratios (AcdSite *s, const DfqTensor *w, int bits)
{
    float *ratio = dfq_tensor_f32 (s->stats);
    const float *x = dfq_tensor_f32 (w);
    gint64 inner = dfq_tensor_numel (w) / s->channels;
    const DfqQuantRangeSearch search = { DFQ_QUANT_RANGE_GDFQ, bits, ACD_MSE_GRID, 2.0 };
#pragma omp parallel for schedule(static)
    for (gint64 c = 0; c < s->channels; c++) {
        float mn, mx;
        acd_minmax (x + c * inner, inner, &mn, &mx);
        ratio[c] = 1.0f; /* kept when no ratio has a finite error */
        dfq_quant_range_search (&search, x + c * inner, inner, 1, &mn, &mx, &ratio[c]);
    }
    ratio[s->channels] = 1.0f;
}

static DfqTensor *
acd_quantize_weight (DfqQuantizer *q, DfqForward *fwd, const char *site, DfqTensor *w)
{
    Acd *self = (Acd *) q;
    AcdSite *s = acd_lookup (self, DFQ_SITE_WEIGHT, site);
    g_return_val_if_fail (s != NULL, w); /* a site attach() did not discover */
    if (self->w_bits >= ACD_FULL_PRECISION)
        return w;
    g_return_val_if_fail (w->dtype == DFQ_DTYPE_F32 && dfq_tensor_is_contiguous (w), w);
    float *ratio = dfq_tensor_f32 (s->stats);
    if (self->w_range == ACD_W_MSE && ratio[s->channels] == 0.0f)
        acd_choose_weight_ratios (s, w, self->w_bits);
    /* statistics of the data, not graph nodes: lo/hi get no gradient */
    DfqTensor *lo = dfq_tensor_new_1d (fwd->arena, DFQ_DTYPE_F32, s->channels);
    DfqTensor *hi = dfq_tensor_new_1d (fwd->arena, DFQ_DTYPE_F32, s->channels);
    const float *x = dfq_tensor_f32 (w);
    gint64 inner = dfq_tensor_numel (w) / s->channels;
    for (gint64 c = 0; c < s->channels; c++) {
        float mn, mx, r = self->w_range == ACD_W_MSE ? ratio[c] : 1.0f;
        acd_minmax (x + c * inner, inner, &mn, &mx);
        dfq_tensor_f32 (lo)[c] = mn * r;
        dfq_tensor_f32 (hi)[c] = mx * r;
    }
    return dfq_fake_quant (fwd->arena, w, lo, hi, 0, self->w_bits, acd_ste_modes[self->w_ste]);
}

/* ------------------------------------------------------------ calibration */

/* This batch's statistic of every clip channel: min/max (or percentiles) over
 * every element of that channel (all of x per tensor), into m[] / M[]; the
 * smallest value into *least. */
static void
acd_batch_stats (const Acd *self, const AcdSite *s, DfqArena *arena, const DfqTensor *x, float *m, float *M,
                 float *least)
{
    const float *d = dfq_tensor_f32 (x);
    gint64 n = dfq_tensor_numel (x);
    gint64 C = s->channels;
    gint64 inner = C == 1 ? n : n / (x->shape[0] * C); /* per channel: H*W */
    gint64 outer = C == 1 ? 1 : x->shape[0];
    gint64 per = inner * outer; /* values per clip channel */
    gboolean pct = self->act_init == ACD_INIT_PERCENTILE;
    float *buf = pct ? dfq_arena_alloc_uninit (arena, (gsize) n * sizeof (float)) : NULL;
    float *chan_min = dfq_arena_alloc_uninit (arena, (gsize) C * sizeof (float));
#pragma omp parallel for schedule(static)
    for (gint64 c = 0; c < C; c++) {
        float mn = INFINITY, mx = -INFINITY;
        for (gint64 o = 0; o < outer; o++) {
            const float *src = d + (o * C + c) * inner;
            for (gint64 i = 0; i < inner; i++) {
                mn = fminf (mn, src[i]);
                mx = fmaxf (mx, src[i]);
            }
            if (buf != NULL)
                memcpy (buf + c * per + o * inner, src, (gsize) inner * sizeof (float));
        }
        chan_min[c] = mn;
        m[c] = mn;
        M[c] = mx;
        if (buf != NULL)
            dfq_quant_range_percentile (buf + c * per, per, self->percentile, &m[c], &M[c]);
    }
    float least_v = INFINITY;
    for (gint64 c = 0; c < C; c++)
        least_v = fminf (least_v, chan_min[c]);
    *least = least_v;
}

/* Whether @s holds its lower clip at 0 (fixed0 and nothing negative seen). */
static gboolean
acd_lower_fixed (const Acd *self, const AcdSite *s)
{
    const float *st = dfq_tensor_f32 (s->stats);
    return self->lower == ACD_LOWER_FIXED0 && st[2 * s->channels + 1] >= 0.0f;
}

/* One calibration batch: the running means of the statistics, and the clip
 * values set from them. */
static void
acd_calibrate (Acd *self, AcdSite *s, DfqArena *arena, const DfqTensor *x)
{
    gint64 C = s->channels;
    float *st = dfq_tensor_f32 (s->stats);
    float *m = dfq_arena_alloc_uninit (arena, (gsize) C * sizeof (float));
    float *M = dfq_arena_alloc_uninit (arena, (gsize) C * sizeof (float));
    float least;
    acd_batch_stats (self, s, arena, x, m, M, &least);
    float n = st[2 * C];
    for (gint64 c = 0; c < C; c++) {
        st[c] = (st[c] * n + m[c]) / (n + 1.0f);
        st[C + c] = (st[C + c] * n + M[c]) / (n + 1.0f);
    }
    st[2 * C + 1] = n == 0.0f ? least : fminf (st[2 * C + 1], least);
    st[2 * C] = n + 1.0f;
    gboolean fixed = acd_lower_fixed (self, s);
    float *lo = dfq_tensor_f32 (s->lo), *hi = dfq_tensor_f32 (s->hi);
    for (gint64 c = 0; c < C; c++) {
        lo[c] = fixed ? 0.0f : st[c];
        hi[c] = st[C + c];
    }
}

/* ------------------------------------------------------------ activations */

static DfqTensor *
acd_quantize_act (DfqQuantizer *q, DfqForward *fwd, const char *site, DfqTensor *x)
{
    Acd *self = (Acd *) q;
    AcdSite *s = acd_lookup (self, DFQ_SITE_ACT, site);
    g_return_val_if_fail (s != NULL, x); /* a site attach() did not discover */
    if (self->a_bits >= ACD_FULL_PRECISION)
        return x;
    g_return_val_if_fail (x->dtype == DFQ_DTYPE_F32 && dfq_tensor_is_contiguous (x), x);
    g_return_val_if_fail (s->channels == 1 || (x->n_dims >= 2 && x->shape[1] == s->channels), x);
    /* Calibrating, or never calibrated (a run without a calibration phase
     * starts from its first batch). */
    const float *st = dfq_tensor_f32 (s->stats);
    if (q->mode == DFQ_QUANT_MODE_CALIBRATE || st[2 * s->channels] == 0.0f)
        acd_calibrate (self, s, fwd->arena, x);
    DfqTensor *lo = s->lo, *hi = s->hi;
    if (q->mode != DFQ_QUANT_MODE_LEARN) {
        /* snapshots: nothing to learn, and later forwards may move the clips */
        lo = dfq_tensor_dup (fwd->arena, s->lo);
        hi = dfq_tensor_dup (fwd->arena, s->hi);
    }
    if (acd_lower_fixed (self, s))
        lo = dfq_tensor_new_1d (fwd->arena, DFQ_DTYPE_F32, s->channels); /* zeros, no gradient */
    return dfq_fake_quant_clip (fwd->arena, x, lo, hi, s->channels == 1 ? -1 : 1, self->a_bits,
                                self->in_range_grad);
}

/* ------------------------------------------------------------ parameters */

static void
acd_get_params (DfqQuantizer *q, GPtrArray *params)
{
    Acd *self = (Acd *) q;
    if (self->a_bits >= ACD_FULL_PRECISION)
        return;
    for (guint i = 0; i < self->sites->len; i++) {
        AcdSite *s = self->sites->pdata[i];
        if (s->kind == DFQ_SITE_ACT) {
            g_ptr_array_add (params, s->lo);
            g_ptr_array_add (params, s->hi);
        }
    }
}

/* One group, "clips", with its own learning rate and weight decay. The lower
 * clips held at 0 are in it too (which ones is known only after calibration,
 * the optimiser is built before): they get no gradient and stay at 0. */
static void
acd_get_param_groups (DfqQuantizer *q, GArray *groups)
{
    Acd *self = (Acd *) q;
    DfqQuantParamGroup g = { "clips", g_ptr_array_new (), self->clip_lr, self->clip_weight_decay };
    acd_get_params (q, g.params);
    if (g.params->len == 0) {
        g_ptr_array_unref (g.params);
        return;
    }
    g_array_append_val (groups, g);
}

static void
acd_get_state (DfqQuantizer *q, GPtrArray *state)
{
    Acd *self = (Acd *) q;
    for (guint i = 0; i < self->sites->len; i++) {
        AcdSite *s = self->sites->pdata[i];
        if (s->kind == DFQ_SITE_ACT) {
            g_ptr_array_add (state, s->lo);
            g_ptr_array_add (state, s->hi);
        }
        g_ptr_array_add (state, s->stats);
    }
}

/* lambda_cv * sum over sites and channels of (u^2 + l^2), the lower clips
 * held at 0 left out; NULL while calibrating (the clips follow the data). */
static DfqTensor *
acd_regularizer (DfqQuantizer *q, DfqArena *arena, double progress)
{
    Acd *self = (Acd *) q;
    if (self->clip_decay <= 0.0 || q->mode != DFQ_QUANT_MODE_LEARN || self->a_bits >= ACD_FULL_PRECISION)
        return NULL;
    DfqTensor *sum = NULL;
    for (guint i = 0; i < self->sites->len; i++) {
        AcdSite *s = self->sites->pdata[i];
        if (s->kind != DFQ_SITE_ACT)
            continue;
        DfqTensor *t = dfq_sum (arena, dfq_mul (arena, s->hi, s->hi));
        if (!acd_lower_fixed (self, s))
            t = dfq_add (arena, t, dfq_sum (arena, dfq_mul (arena, s->lo, s->lo)));
        sum = sum == NULL ? t : dfq_add (arena, sum, t);
    }
    return sum == NULL ? NULL : dfq_affine (arena, sum, (float) self->clip_decay, 0.0f);
}

static gint
acd_get_bits (DfqQuantizer *q, DfqSiteKind kind)
{
    Acd *self = (Acd *) q;
    return kind == DFQ_SITE_WEIGHT ? self->w_bits : self->a_bits;
}

/* ------------------------------------------------------------ lifetime */

static void
acd_finalize (DfqFeature *feature)
{
    Acd *self = (Acd *) feature;
    g_clear_pointer (&self->weights, g_hash_table_unref);
    g_clear_pointer (&self->acts, g_hash_table_unref);
    g_clear_pointer (&self->sites, g_ptr_array_unref);
    g_clear_pointer (&self->parent.arena, dfq_arena_free);
}

static gboolean
acd_init (DfqFeature *feature, GError **error)
{
    Acd *self = (Acd *) feature;
    self->sites = g_ptr_array_new_with_free_func (acd_site_free);
    self->weights = g_hash_table_new (g_str_hash, g_str_equal);
    self->acts = g_hash_table_new (g_str_hash, g_str_equal);
    self->parent.arena = dfq_arena_new (0);
    return TRUE;
}

static const DfqQuantizerClass acd_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_QUANTIZER, "acd",
                                           "ACD: per-channel weights, per-channel learnable asymmetric activation "
                                           "clips with clipping-value decay (METHODS.md 12.2)",
                                           Acd, acd_params, acd_init, acd_finalize),
    .add_site = acd_add_site,
    .quantize_weight = acd_quantize_weight,
    .quantize_act = acd_quantize_act,
    .get_params = acd_get_params,
    .get_state = acd_get_state,
    .get_bits = acd_get_bits,
    .get_param_groups = acd_get_param_groups,
    .regularizer = acd_regularizer,
};

static gboolean
acd_register (DfqRegistry *registry, GError **error)
{
    return dfq_registry_add_feature (registry, &acd_class.parent, error);
}

DFQ_PLUGIN_DEFINE (acd, "ACD quantizer: per-channel learnable asymmetric clipping values with decay", acd_register)
