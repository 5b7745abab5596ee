/* Quantizer plugin: soft-bit rounding for block reconstruction (METHODS.md 9,
 * 11), two quantizers on shared code:
 * - `adaround` (AdaRound / BRECQ): per-channel asymmetric weights, scale from
 *   an Lp search (80 clip ratios, p 2.4), frozen; soft bits V with
 *   h(V) = clamp(sigmoid(V) * 1.2 - 0.1, 0, 1) initialised to frac(W/s);
 *   activations per tensor, asymmetric, with a learnable (LSQ) step.
 * - `genie-m` (GENIE-M): the same soft bits on a frozen base integer
 *   B = floor(W/s0) and zero-point, with a learnable per-channel scale s
 *   (dW^/ds = clamped integer - zp, no STE); activations symmetric LSQ,
 *   signed iff the first batch has negatives, and QDrop inside the activation
 *   quantizer while learning.
 * Weights: W^ = s (clamp(B + h(V) + zp, 0, 2^k-1) - zp) (dfq_softbit_quant),
 * soft while the quantizer learns the site, else B + [V >= 0]. Activation
 * sites are those of the model (after every ReLU/ReLU6): see the method pages
 * for how this maps to GENIE's quantizers at conv inputs. The first and last
 * weight layers and the first and last activation sites get first_last_bits.
 * A site learns in LEARN mode when it is in the quantizer's active block (the
 * reconstruct phase sets it); HARD rounds the active sites' soft bits for good. */
#include <math.h>
#include <string.h>

#include <dfq/dfq.h>
#include <dfq/dfq-quantizer.h>

#define SR_FULL_PRECISION 32
#define SR_ZETA 1.1f
#define SR_GAMMA (-0.1f)
/* |V| after hardening: h(+-SR_HARD_V) is exactly 1 / 0 (beyond ln 11) */
#define SR_HARD_V 6.0f
/* activation scale search: at most this many values of the first batch
 * (an evenly strided subsample beyond it) */
#define SR_ACT_SAMPLE (1 << 16)
/* a_info layout: initialised flag, qn, qp */
enum { SR_INFO_INIT = 0, SR_INFO_QN = 1, SR_INFO_QP = 2, SR_INFO_LEN = 3 };

typedef enum {
    SR_ADAROUND = 0,
    SR_GENIE = 1,
} SrKind;

typedef struct {
    char *name;
    DfqSiteKind kind;
    guint index;
    gboolean is_first;
    gboolean is_last;
    /* weights */
    DfqTensor *scale; /* [C]: PARAM when learnable (genie-m) */
    DfqTensor *zp;    /* [C] */
    DfqTensor *base;  /* like W: floor(W / s0) */
    DfqTensor *v;     /* like W: soft bits (PARAM) */
    /* activations */
    DfqTensor *a_scale; /* [1] PARAM */
    DfqTensor *a_info;  /* [SR_INFO_LEN] */
} SrSite;

typedef struct {
    DfqQuantizer parent;
    /* params */
    gint w_bits;
    gint a_bits;
    gint first_last_bits;
    gint clip_ratios;
    gdouble norm_p;
    gdouble lr_bits;
    gdouble lr_w_scale;
    gdouble lr_a_scale;
    gdouble round_weight;
    gdouble beta_start;
    gdouble beta_end;
    gdouble act_qdrop;
    /* built */
    SrKind kind;
    GPtrArray *sites; /* SrSite *, forward order (owns them) */
    GHashTable *weight_sites;
    GHashTable *act_sites;
    guint n_act_sites;
} Sr;

static gboolean
sr_check_a_bits (const DfqParamSpec *spec, gconstpointer value, GError **error)
{
    gint bits = *(const gint *) value;
    if ((bits >= 1 && bits <= 16) || bits == SR_FULL_PRECISION)
        return TRUE;
    g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                 "%d bits: must be 1-16, or 32 to leave activations in full precision", bits);
    return FALSE;
}

/* The two classes share the table's rows; their defaults differ. */
#define SR_PARAMS(ratios, lr_w_scale_def, round_weight_def, qdrop_def)                                              \
    DFQ_PARAM_INT (Sr, w_bits, "Weight bits of every conv/linear layer", 1, 16, 4),                                  \
    DFQ_PARAM_INT (Sr, a_bits, "Activation bits after every ReLU/ReLU6; 32 leaves activations in full precision",  \
                   1, 32, 4, .check = sr_check_a_bits),                                                             \
    DFQ_PARAM_INT (Sr, first_last_bits,                                                                             \
                   "Bits of the first and last weight layers and of the first and last activation sites "          \
                   "(BRECQ / GENIE: 8); 0 keeps them at w_bits / a_bits", 0, 16, 8),                                \
    DFQ_PARAM_INT (Sr, clip_ratios,                                                                                 \
                   "Scale initialisation: clip ratios 1.00, 0.99, ... tried on (min, max), the one with the least " \
                   "mean |x - x^|^p kept (BRECQ 80, GENIE 100)", 1, 100, ratios),                                   \
    DFQ_PARAM_DOUBLE (Sr, norm_p, "p of that error", 0.5, 8.0, 2.4),                                                \
    DFQ_PARAM_DOUBLE (Sr, lr_bits, "Adam learning rate of the soft bits V", 0.0, 10.0, 1e-3),                      \
    DFQ_PARAM_DOUBLE (Sr, lr_w_scale, "Adam learning rate of the weight scales (0: frozen)", 0.0, 10.0,           \
                      lr_w_scale_def),                                                                              \
    DFQ_PARAM_DOUBLE (Sr, lr_a_scale, "Adam learning rate of the activation steps (0: frozen)", 0.0, 10.0, 4e-5), \
    DFQ_PARAM_DOUBLE (Sr, round_weight, "Weight of the rounding regulariser sum(1 - |2h(V) - 1|^beta)", 0.0,       \
                      1000.0, round_weight_def),                                                                    \
    DFQ_PARAM_DOUBLE (Sr, beta_start, "beta of the rounding regulariser when it starts (after the warm-up)", 0.1,  \
                      1000.0, 20),                                                                                  \
    DFQ_PARAM_DOUBLE (Sr, beta_end, "beta at the end of a unit's steps (linear in between)", 0.1, 1000.0, 2),      \
    DFQ_PARAM_DOUBLE (Sr, act_qdrop,                                                                                \
                      "While learning, probability that an activation element stays full precision (QDrop "        \
                      "inside the activation quantizer; GENIE 0.5)", 0.0, 1.0, qdrop_def)

static const DfqParamSpec adaround_params[] = { SR_PARAMS (80, 0.0, 0.01, 0.0) };
static const DfqParamSpec genie_params[] = { SR_PARAMS (100, 1e-4, 1.0, 0.5) };

/* ------------------------------------------------------------ scale search */

/* Over clip ratios 1.00, 0.99, ...: the range [lo r, hi r] whose BRECQ
 * quantizer (d = (hi r - lo r) / L, z = round(-lo r / d)) has the least mean
 * |x - x^|^p on x[0], x[stride], ...; its step and zero point. */
static void
sr_search (const Sr *self, const float *x, gint64 n, gint64 stride, float lo, float hi, int bits, float *delta_out,
           float *zp_out)
{
    const DfqQuantRangeSearch search = { DFQ_QUANT_RANGE_BRECQ, bits, self->clip_ratios, self->norm_p };
    if (!dfq_quant_range_search (&search, x, n, stride, &lo, &hi, NULL)) {
        /* no finite error (NaN or inf in x): the smallest step */
        *delta_out = 1e-8f;
        *zp_out = 0.0f;
        return;
    }
    float d = fmaxf ((hi - lo) / (float) ((1 << bits) - 1), 1e-8f);
    *delta_out = d;
    *zp_out = nearbyintf (-lo / d);
}

/* ------------------------------------------------------------ sites */

static void
sr_site_free (gpointer p)
{
    SrSite *s = p;
    g_free (s->name);
    g_free (s);
}

static gint
sr_site_bits (const Sr *self, const SrSite *s)
{
    gboolean edge = s->kind == DFQ_SITE_WEIGHT ? (s->is_first || s->is_last)
                                               : (s->index == 0 || s->index + 1 == self->n_act_sites);
    if (s->kind == DFQ_SITE_ACT && self->a_bits >= SR_FULL_PRECISION)
        return SR_FULL_PRECISION;
    if (edge && self->first_last_bits > 0)
        return self->first_last_bits;
    return s->kind == DFQ_SITE_WEIGHT ? self->w_bits : self->a_bits;
}

/* Scale and zero-point per output channel from @w, then B and V. */
static void
sr_init_weight (Sr *self, SrSite *s, const DfqTensor *w)
{
    gint64 n_ch = w->shape[0], inner = dfq_tensor_numel (w) / n_ch;
    int bits = sr_site_bits (self, s);
    const float *x = dfq_tensor_f32 (w);
    float *sc = dfq_tensor_f32 (s->scale), *zp = dfq_tensor_f32 (s->zp);
    float *b = dfq_tensor_f32 (s->base), *v = dfq_tensor_f32 (s->v);
    for (gint64 c = 0; c < n_ch; c++) {
        const float *xc = x + c * inner;
        float lo = xc[0], hi = xc[0];
        for (gint64 i = 0; i < inner; i++) {
            lo = fminf (lo, xc[i]);
            hi = fmaxf (hi, xc[i]);
        }
        if (self->kind == SR_ADAROUND) {
            /* BRECQ: the range always contains 0 */
            lo = fminf (lo, 0.0f);
            hi = fmaxf (hi, 0.0f);
        }
        sr_search (self, xc, inner, 1, lo, hi, bits, &sc[c], &zp[c]);
        for (gint64 i = 0; i < inner; i++) {
            float t = xc[i] / sc[c];
            float f = floorf (t);
            float frac = t - f;
            b[c * inner + i] = f;
            /* h(V) = frac: V = -log((zeta - gamma) / (frac - gamma) - 1) */
            v[c * inner + i] = -logf ((SR_ZETA - SR_GAMMA) / (frac - SR_GAMMA) - 1.0f);
        }
    }
}

static DfqTensor *
sr_state (DfqArena *arena, int n_dims, const gint64 *shape, const char *site, const char *what)
{
    DfqTensor *t = dfq_tensor_new (arena, DFQ_DTYPE_F32, n_dims, shape);
    dfq_tensor_set_name (t, "%s.%s", site, what);
    return t;
}

static gboolean
sr_add_site (DfqQuantizer *q, DfqSiteKind kind, const char *site, const DfqTensor *example, guint index,
             gboolean is_first, gboolean is_last, GError **error)
{
    Sr *self = (Sr *) q;
    GHashTable *table = kind == DFQ_SITE_WEIGHT ? self->weight_sites : self->act_sites;
    SrSite *s = g_hash_table_lookup (table, site);
    if (s != NULL) {
        /* attached again (same model): keep the state */
        s->index = index;
        return TRUE;
    }
    if (kind == DFQ_SITE_WEIGHT && (example == NULL || example->n_dims < 1 || dfq_tensor_numel (example) == 0
                                    || example->dtype != DFQ_DTYPE_F32 || !dfq_tensor_is_contiguous (example))) {
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE, "weight site '%s' has no (contiguous F32) weight",
                     site);
        return FALSE;
    }
    s = g_new0 (SrSite, 1);
    s->name = g_strdup (site);
    s->kind = kind;
    s->index = index;
    s->is_first = is_first;
    s->is_last = is_last;
    if (kind == DFQ_SITE_WEIGHT) {
        gint64 ch = example->shape[0];
        s->scale = sr_state (q->arena, 1, &ch, site, "w_scale");
        s->zp = sr_state (q->arena, 1, &ch, site, "w_zero_point");
        s->base = sr_state (q->arena, example->n_dims, example->shape, site, "w_base");
        s->v = sr_state (q->arena, example->n_dims, example->shape, site, "soft_bits");
        dfq_tensor_set_param (s->v);
        if (self->lr_w_scale > 0)
            dfq_tensor_set_param (s->scale);
        sr_init_weight (self, s, example);
    } else {
        gint64 one = 1, len = SR_INFO_LEN;
        s->a_scale = sr_state (q->arena, 1, &one, site, "a_scale");
        s->a_info = sr_state (q->arena, 1, &len, site, "a_info");
        dfq_tensor_fill (s->a_scale, 1.0f);
        if (self->lr_a_scale > 0)
            dfq_tensor_set_param (s->a_scale);
        self->n_act_sites = MAX (self->n_act_sites, index + 1);
    }
    g_ptr_array_add (self->sites, s);
    g_hash_table_insert (table, s->name, s);
    return TRUE;
}

/* ------------------------------------------------------------ quantize */

static gboolean
sr_learning (const Sr *self, const char *site)
{
    const DfqQuantizer *q = &self->parent;
    return q->mode == DFQ_QUANT_MODE_LEARN && dfq_quantizer_site_active (q, site);
}

static DfqTensor *
sr_quantize_weight (DfqQuantizer *q, DfqForward *fwd, const char *site, DfqTensor *w)
{
    Sr *self = (Sr *) q;
    SrSite *s = g_hash_table_lookup (self->weight_sites, site);
    g_return_val_if_fail (s != NULL, w); /* a site attach() did not discover */
    int bits = sr_site_bits (self, s);
    if (bits >= SR_FULL_PRECISION)
        return w;
    return dfq_softbit_quant (fwd->arena, s->base, s->v, s->scale, s->zp, 0, bits, !sr_learning (self, site));
}

/* The step from the first batch seen (GENIE: symmetric, signed iff the batch
 * has negatives; BRECQ: asymmetric on [min(x, 0), max(x, 0)]). */
static void
sr_init_act (Sr *self, SrSite *s, const DfqTensor *x)
{
    int bits = sr_site_bits (self, s);
    const float *d = dfq_tensor_f32 (x);
    gint64 n = dfq_tensor_numel (x), stride = MAX ((n + SR_ACT_SAMPLE - 1) / SR_ACT_SAMPLE, 1);
    float mn = n > 0 ? d[0] : 0.0f, mx = mn;
    for (gint64 i = 0; i < n; i++) {
        mn = fminf (mn, d[i]);
        mx = fmaxf (mx, d[i]);
    }
    float *info = dfq_tensor_f32 (s->a_info);
    float delta, z;
    if (self->kind == SR_GENIE) {
        gboolean sgn = mn < 0.0f;
        float m = fmaxf (fabsf (mn), fabsf (mx));
        sr_search (self, d, n, stride, sgn ? -m : 0.0f, m, bits, &delta, &z);
        info[SR_INFO_QN] = sgn ? (float) -(1 << (bits - 1)) : 0.0f;
        info[SR_INFO_QP] = sgn ? (float) ((1 << (bits - 1)) - 1) : (float) ((1 << bits) - 1);
    } else {
        sr_search (self, d, n, stride, fminf (mn, 0.0f), fmaxf (mx, 0.0f), bits, &delta, &z);
        info[SR_INFO_QN] = -z;
        info[SR_INFO_QP] = (float) ((1 << bits) - 1) - z;
    }
    dfq_tensor_f32 (s->a_scale)[0] = delta;
    info[SR_INFO_INIT] = 1.0f;
}

static DfqTensor *
sr_quantize_act (DfqQuantizer *q, DfqForward *fwd, const char *site, DfqTensor *x)
{
    Sr *self = (Sr *) q;
    SrSite *s = g_hash_table_lookup (self->act_sites, site);
    g_return_val_if_fail (s != NULL, x);
    if (sr_site_bits (self, s) >= SR_FULL_PRECISION)
        return x;
    g_return_val_if_fail (x->dtype == DFQ_DTYPE_F32 && dfq_tensor_is_contiguous (x), x);
    const float *info = dfq_tensor_f32 (s->a_info);
    if (info[SR_INFO_INIT] == 0.0f)
        sr_init_act (self, s, x);
    DfqTensor *y = dfq_fake_quant_lsq (fwd->arena, x, s->a_scale, -1, (int) info[SR_INFO_QN], (int) info[SR_INFO_QP],
                                       1.0f);
    if (self->act_qdrop > 0 && sr_learning (self, site))
        y = dfq_qdrop_mix (fwd->arena, y, x, self->act_qdrop, fwd->seed, (fwd->step << 12) ^ s->index);
    return y;
}

/* ------------------------------------------------------------ learning */

static void
sr_set_mode (DfqQuantizer *q, DfqQuantMode old)
{
    Sr *self = (Sr *) q;
    if (q->mode != DFQ_QUANT_MODE_HARD)
        return;
    /* hard rounding for good: V = +-SR_HARD_V keeps the sign ([V >= 0]) and
     * makes the soft weight equal the hard one */
    for (guint i = 0; i < self->sites->len; i++) {
        SrSite *s = self->sites->pdata[i];
        if (s->kind != DFQ_SITE_WEIGHT || !dfq_quantizer_site_active (q, s->name))
            continue;
        float *v = dfq_tensor_f32 (s->v);
        gint64 n = dfq_tensor_numel (s->v);
        for (gint64 k = 0; k < n; k++)
            v[k] = v[k] >= 0.0f ? SR_HARD_V : -SR_HARD_V;
    }
}

/* Appends the learnable tensors of active sites: soft bits (0), weight
 * scales (1), activation steps (2). */
static void
sr_collect (Sr *self, int what, gboolean active_only, GPtrArray *out)
{
    for (guint i = 0; i < self->sites->len; i++) {
        SrSite *s = self->sites->pdata[i];
        if (sr_site_bits (self, s) >= SR_FULL_PRECISION || (active_only && !dfq_quantizer_site_active (&self->parent, s->name)))
            continue;
        if (s->kind == DFQ_SITE_WEIGHT && what == 0)
            g_ptr_array_add (out, s->v);
        else if (s->kind == DFQ_SITE_WEIGHT && what == 1 && self->lr_w_scale > 0)
            g_ptr_array_add (out, s->scale);
        else if (s->kind == DFQ_SITE_ACT && what == 2 && self->lr_a_scale > 0)
            g_ptr_array_add (out, s->a_scale);
    }
}

static void
sr_get_params (DfqQuantizer *q, GPtrArray *params)
{
    for (int what = 0; what < 3; what++)
        sr_collect ((Sr *) q, what, FALSE, params);
}

static void
sr_get_param_groups (DfqQuantizer *q, GArray *groups)
{
    Sr *self = (Sr *) q;
    static const char *const names[] = { "soft_bits", "w_scales", "a_scales" };
    const double lrs[] = { self->lr_bits, self->lr_w_scale, self->lr_a_scale };
    for (int what = 0; what < 3; what++) {
        DfqQuantParamGroup g = { names[what], g_ptr_array_new (), lrs[what], 0.0 };
        sr_collect (self, what, TRUE, g.params);
        if (g.params->len > 0 && lrs[what] > 0)
            g_array_append_val (groups, g);
        else
            g_ptr_array_unref (g.params);
    }
}

/* round_weight * sum over the active weight sites of sum(1 - |2h(V) - 1|^beta),
 * beta from beta_start (progress 0) to beta_end (progress 1), linearly. */
static DfqTensor *
sr_regularizer (DfqQuantizer *q, DfqArena *arena, double progress)
{
    Sr *self = (Sr *) q;
    if (self->round_weight <= 0)
        return NULL;
    double t = CLAMP (progress, 0.0, 1.0);
    float beta = (float) (self->beta_end + (self->beta_start - self->beta_end) * (1.0 - t));
    g_autoptr (GPtrArray) v = g_ptr_array_new ();
    sr_collect (self, 0, TRUE, v);
    DfqTensor *sum = NULL;
    for (guint i = 0; i < v->len; i++) {
        DfqTensor *r = dfq_round_reg (arena, v->pdata[i], beta);
        sum = sum == NULL ? r : dfq_add (arena, sum, r);
    }
    return sum != NULL ? dfq_affine (arena, sum, (float) self->round_weight, 0.0f) : NULL;
}

static void
sr_get_state (DfqQuantizer *q, GPtrArray *state)
{
    Sr *self = (Sr *) q;
    for (guint i = 0; i < self->sites->len; i++) {
        SrSite *s = self->sites->pdata[i];
        DfqTensor *const t[] = { s->scale, s->zp, s->base, s->v, s->a_scale, s->a_info };
        for (guint k = 0; k < G_N_ELEMENTS (t); k++)
            if (t[k] != NULL)
                g_ptr_array_add (state, t[k]);
    }
}

static gint
sr_get_bits (DfqQuantizer *q, DfqSiteKind kind)
{
    Sr *self = (Sr *) q;
    return kind == DFQ_SITE_WEIGHT ? self->w_bits : self->a_bits;
}

/* ------------------------------------------------------------ lifetime */

static void
sr_finalize (DfqFeature *feature)
{
    Sr *self = (Sr *) feature;
    g_clear_pointer (&self->weight_sites, g_hash_table_unref);
    g_clear_pointer (&self->act_sites, g_hash_table_unref);
    g_clear_pointer (&self->sites, g_ptr_array_unref);
    g_clear_pointer (&self->parent.arena, dfq_arena_free);
}

static gboolean
sr_init_common (Sr *self, SrKind kind)
{
    self->kind = kind;
    self->sites = g_ptr_array_new_with_free_func (sr_site_free);
    self->weight_sites = g_hash_table_new (g_str_hash, g_str_equal);
    self->act_sites = g_hash_table_new (g_str_hash, g_str_equal);
    self->parent.arena = dfq_arena_new (0);
    return TRUE;
}

static gboolean
adaround_init (DfqFeature *feature, GError **error)
{
    return sr_init_common ((Sr *) feature, SR_ADAROUND);
}

static gboolean
genie_init (DfqFeature *feature, GError **error)
{
    return sr_init_common ((Sr *) feature, SR_GENIE);
}

#define SR_CLASS_METHODS                          \
    .add_site = sr_add_site,                      \
    .quantize_weight = sr_quantize_weight,        \
    .quantize_act = sr_quantize_act,              \
    .get_params = sr_get_params,                  \
    .get_state = sr_get_state,                    \
    .get_bits = sr_get_bits,                      \
    .set_mode = sr_set_mode,                      \
    .get_param_groups = sr_get_param_groups,      \
    .regularizer = sr_regularizer

static const DfqQuantizerClass adaround_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_QUANTIZER, "adaround",
                                           "AdaRound / BRECQ: soft-bit weight rounding (Lp-searched per-channel "
                                           "scales), LSQ activation steps; for the reconstruct phase",
                                           Sr, adaround_params, adaround_init, sr_finalize),
    SR_CLASS_METHODS,
};

static const DfqQuantizerClass genie_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_QUANTIZER, "genie-m",
                                           "GENIE-M: soft bits on a frozen base integer with learnable per-channel "
                                           "scales, symmetric LSQ activations with QDrop; for the reconstruct phase",
                                           Sr, genie_params, genie_init, sr_finalize),
    SR_CLASS_METHODS,
};

static gboolean
sr_register (DfqRegistry *registry, GError **error)
{
    return dfq_registry_add_feature (registry, &adaround_class.parent, error)
           && dfq_registry_add_feature (registry, &genie_class.parent, error);
}

DFQ_PLUGIN_DEFINE (soft-rounding, "Soft-bit rounding quantizers for block reconstruction: adaround, genie-m",
                   sr_register)
