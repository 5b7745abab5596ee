/* Quantizer plugin: the GDFQ-family uniform fake quantizer (METHODS.md 1.3;
 * GDFQ quantization_utils/quant_utils.py and quant_modules.py, originally
 * ZeroQ). Weights: min/max of the current float weights, per output channel,
 * recomputed every forward. Activations (after every ReLU/ReLU6): one range per
 * site, tracked while the quantizer is calibrating (GDFQ's bias-"corrected"
 * EMA, a plain EMA or ZeroQ's running min/max) and frozen otherwise. Both go
 * through dfq_fake_quant (straight-through estimator, plain or clipped). */
#include <math.h>
#include <string.h>

#include <dfq/dfq.h>

/* Bits of a site left in full precision. */
#define UNIFORM_FULL_PRECISION 32
/* dfq_fake_quant handles 1..16 bits. */
#define UNIFORM_MAX_QUANT_BITS 16
/* Activation min/max: blocks of this many elements are reduced in parallel and
 * merged in block order, so the result never depends on the thread count. */
#define UNIFORM_MINMAX_CHUNK 32768

typedef enum {
    UNIFORM_RANGE_EMA,       /* GDFQ: beta_t *= beta; r = (r beta + m (1-beta)) / (1 - beta_t) */
    UNIFORM_RANGE_EMA_PLAIN, /* r = m at the first update, then r = r beta + m (1-beta) */
    UNIFORM_RANGE_MINMAX,    /* ZeroQ: r_min = min(r_min, m), r_max = max(r_max, M), from 0 */
    UNIFORM_RANGE_PERCENTILE,/* per batch the (100-p)th and pth percentiles, averaged over batches */
    UNIFORM_RANGE_MSE,       /* per batch the clip of min/max with the least quantization MSE, averaged */
} UniformActRange;

static const char *const uniform_act_range_names[] = { "ema", "ema_plain", "minmax", "percentile", "mse", NULL };
/* percentile / mse: at most this many values of a batch are looked at (an
 * evenly strided subsample beyond it) */
#define UNIFORM_CLIP_SAMPLE (1 << 18)
/* mse: clip ratios 1.00, 0.99, ... of (min, max) */
#define UNIFORM_MSE_GRID 100
static const char *const uniform_ste_names[] = { "plain", "clipped", NULL };
/* Same order as uniform_ste_names. */
static const DfqSteMode uniform_ste_modes[] = { DFQ_STE_PLAIN, DFQ_STE_CLIPPED };

/* Layout of the per-site activation range tensor "<site>.act_range" [3]. */
enum {
    UNIFORM_RANGE_MIN = 0,
    UNIFORM_RANGE_MAX = 1,
    UNIFORM_RANGE_AUX = 2, /* ema: beta_t (starts at 1); ema_plain, minmax: number of updates */
    UNIFORM_RANGE_LEN = 3,
};

typedef enum {
    UNIFORM_TARGET_FIRST, /* the first site of the kind in forward order */
    UNIFORM_TARGET_LAST,  /* the last one */
    UNIFORM_TARGET_GLOB,  /* every site whose name matches */
} UniformTarget;

/* One compiled override rule "w:first=8". */
typedef struct {
    DfqSiteKind kind;
    UniformTarget target;
    GPatternSpec *glob; /* UNIFORM_TARGET_GLOB */
    gint bits;
    char *text; /* as written, for messages */
} UniformRule;

typedef struct {
    char *name;
    DfqSiteKind kind;
    guint index;       /* among the sites of its kind, forward order */
    gboolean is_first; /* first / last weight layer (weights only) */
    gboolean is_last;
    gint bits;        /* resolved from the defaults and the rules: 1-16, or 32 */
    DfqTensor *range; /* activations: UNIFORM_RANGE_* in the quantizer's arena */
} UniformSite;

typedef struct {
    DfqQuantizer parent;
    /* params */
    gint w_bits;
    gint a_bits;
    gboolean per_channel;
    gboolean symmetric;
    gint act_range; /* UniformActRange */
    gdouble ema_beta;
    gdouble percentile;
    gint ste; /* index into uniform_ste_names */
    char **overrides;
    /* built by init / add_site */
    GArray *rules;            /* UniformRule, in the order written */
    GPtrArray *sites;         /* UniformSite *, forward order (owns them) */
    GHashTable *weight_sites; /* name -> UniformSite * */
    GHashTable *act_sites;
    guint n_weight_sites;
    guint n_act_sites;
    gboolean resolved; /* site bits are up to date with the sites added */
} Uniform;

static gboolean uniform_check_bits (const DfqParamSpec *spec, gconstpointer value, GError **error);
static gboolean uniform_check_overrides (const DfqParamSpec *spec, gconstpointer value, GError **error);

static const DfqParamSpec uniform_params[] = {
    DFQ_PARAM_INT (Uniform, w_bits, "Weight bits of every conv/linear layer (per-site overrides: see overrides)",
                   1, 16, 4),
    DFQ_PARAM_INT (Uniform, a_bits, "Activation bits after every ReLU/ReLU6; 32 leaves activations in full precision",
                   1, 32, 4, .check = uniform_check_bits),
    DFQ_PARAM_BOOL (Uniform, per_channel, "Weight ranges per output channel (GDFQ); false: one range per tensor",
                    TRUE),
    DFQ_PARAM_BOOL (Uniform, symmetric,
                    "Weights on [-max|w|, +max|w|] instead of [min w, max w] (GDFQ: false); activations keep their tracked range",
                    FALSE),
    DFQ_PARAM_ENUM (Uniform, act_range,
                    "Activation range tracking while calibrating: ema (GDFQ, with its bias-correction quirk), "
                    "ema_plain (plain EMA, first value as is), minmax (ZeroQ running min/max), percentile "
                    "(the (100-p)th / pth percentiles of each batch, averaged over batches), mse (per batch the "
                    "clipped min/max with the least quantization MSE over 100 ratios, averaged)",
                    uniform_act_range_names, "ema"),
    DFQ_PARAM_DOUBLE (Uniform, ema_beta, "EMA decay of the activation range (ema and ema_plain)", 0.0, 0.9999, 0.9),
    DFQ_PARAM_DOUBLE (Uniform, percentile, "act_range percentile: p (the upper percentile; the lower is 100 - p)",
                      50.0, 100.0, 99.99, .flags = DFQ_PARAM_FLAG_OMIT_DEFAULT),
    DFQ_PARAM_ENUM (Uniform, ste, "Straight-through estimator: plain (GDFQ, no mask) or clipped (zero outside the range)",
                    uniform_ste_names, "plain"),
    DFQ_PARAM_STRING_LIST (Uniform, overrides,
                           "Per-site bits 'target=bits' applied in order after the defaults; target: w:first, w:last, "
                           "a:first, a:last, w:<glob>, a:<glob> (site names); bits 1-16, or 32 = full precision",
                           "[]", .check = uniform_check_overrides),
};

/* ------------------------------------------------------------ override rules */

static void
uniform_rule_clear (gpointer p)
{
    UniformRule *r = p;
    g_clear_pointer (&r->glob, g_pattern_spec_free);
    g_clear_pointer (&r->text, g_free);
}

static gboolean
uniform_bits_valid (gint64 bits)
{
    return (bits >= 1 && bits <= UNIFORM_MAX_QUANT_BITS) || bits == UNIFORM_FULL_PRECISION;
}

/* Parses "w:first=8", "a:layers.*.relu2=32"... into @rule (may be NULL: syntax
 * check only). */
static gboolean
uniform_rule_parse (const char *text, UniformRule *rule, GError **error)
{
    static const char *const expected = "expected 'target=bits' with target w:first, w:last, a:first, a:last, w:<glob> or a:<glob> "
                                        "and bits 1-16 or 32 (full precision), e.g. 'w:first=8'";
    const char *eq = strrchr (text, '=');
    if (eq == NULL) {
        g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                     "override '%s' has no '=': %s", text, expected);
        return FALSE;
    }
    g_autofree char *target = g_strstrip (g_strndup (text, (gsize) (eq - text)));
    g_autofree char *bits_text = g_strstrip (g_strdup (eq + 1));

    DfqSiteKind kind;
    if (g_str_has_prefix (target, "w:"))
        kind = DFQ_SITE_WEIGHT;
    else if (g_str_has_prefix (target, "a:"))
        kind = DFQ_SITE_ACT;
    else {
        g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                     "override '%s': target '%s' must start with 'w:' (weights) or 'a:' (activations): %s",
                     text, target, expected);
        return FALSE;
    }
    const char *what = target + 2;
    if (*what == '\0') {
        g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                     "override '%s': empty site after '%.2s': %s", text, target, expected);
        return FALSE;
    }

    gint64 bits = 0;
    g_autoptr (GError) local = NULL;
    if (!g_ascii_string_to_signed (bits_text, 10, 1, UNIFORM_FULL_PRECISION, &bits, &local) || !uniform_bits_valid (bits)) {
        g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                     "override '%s': bits '%s' must be an integer 1-16, or 32 for full precision", text, bits_text);
        return FALSE;
    }

    if (rule != NULL) {
        memset (rule, 0, sizeof *rule);
        rule->kind = kind;
        rule->bits = (gint) bits;
        rule->text = g_strdup (text);
        if (strcmp (what, "first") == 0)
            rule->target = UNIFORM_TARGET_FIRST;
        else if (strcmp (what, "last") == 0)
            rule->target = UNIFORM_TARGET_LAST;
        else {
            rule->target = UNIFORM_TARGET_GLOB;
            rule->glob = g_pattern_spec_new (what);
        }
    }
    return TRUE;
}

/* .check of overrides: the binder reports it at the list's file:line:col. */
static gboolean
uniform_check_overrides (const DfqParamSpec *spec, gconstpointer value, GError **error)
{
    char *const *rules = *(char *const *const *) value;
    for (guint i = 0; rules != NULL && rules[i] != NULL; i++)
        if (!uniform_rule_parse (rules[i], NULL, error))
            return FALSE;
    return TRUE;
}

static gboolean
uniform_check_bits (const DfqParamSpec *spec, gconstpointer value, GError **error)
{
    gint bits = *(const gint *) value;
    if (uniform_bits_valid (bits))
        return TRUE;
    g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                 "%d bits: must be 1-16, or 32 for full precision", bits);
    return FALSE;
}

static gboolean
uniform_rule_matches (const UniformRule *r, const UniformSite *s, guint n_of_kind)
{
    if (r->kind != s->kind)
        return FALSE;
    switch (r->target) {
    case UNIFORM_TARGET_FIRST:
        return s->index == 0;
    case UNIFORM_TARGET_LAST:
        return s->index + 1 == n_of_kind;
    case UNIFORM_TARGET_GLOB:
    default:
        return g_pattern_spec_match_string (r->glob, s->name);
    }
}

/* Bits of every site: the kind's default, then each rule in order. Lazy,
 * because "a:last" is only known once every site has been added. */
static void
uniform_resolve (Uniform *self)
{
    if (self->resolved)
        return;
    for (guint i = 0; i < self->sites->len; i++) {
        UniformSite *s = self->sites->pdata[i];
        s->bits = s->kind == DFQ_SITE_WEIGHT ? self->w_bits : self->a_bits;
    }
    for (guint r = 0; r < self->rules->len; r++) {
        const UniformRule *rule = &g_array_index (self->rules, UniformRule, r);
        guint hits = 0;
        for (guint i = 0; i < self->sites->len; i++) {
            UniformSite *s = self->sites->pdata[i];
            guint n = s->kind == DFQ_SITE_WEIGHT ? self->n_weight_sites : self->n_act_sites;
            if (uniform_rule_matches (rule, s, n)) {
                s->bits = rule->bits;
                hits++;
            }
        }
        if (hits == 0)
            g_info ("override '%s' matches no site of this model", rule->text);
    }
    if (self->rules->len > 0) {
        g_autoptr (GString) changed = g_string_new (NULL);
        for (guint i = 0; i < self->sites->len; i++) {
            const UniformSite *s = self->sites->pdata[i];
            if (s->bits != (s->kind == DFQ_SITE_WEIGHT ? self->w_bits : self->a_bits))
                g_string_append_printf (changed, " %s:%s=%d", s->kind == DFQ_SITE_WEIGHT ? "w" : "a", s->name, s->bits);
        }
        g_debug ("w_bits %d, a_bits %d; overridden:%s", self->w_bits, self->a_bits,
                 changed->len > 0 ? changed->str : " none");
    }
    self->resolved = TRUE;
}

/* ------------------------------------------------------------ min/max */

/* min and max of @n floats; NaN in, NaN out (like torch.min/max). */
static void
uniform_minmax_serial (const float *restrict x, gint64 n, float *mn_out, float *mx_out)
{
    if (n <= 0) {
        *mn_out = *mx_out = 0.0f;
        return;
    }
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

/* The same over a whole (possibly large) activation tensor: fixed-size chunks
 * in parallel, partials in @scratch, merged in chunk order. */
static void
uniform_minmax (DfqArena *scratch, const float *x, gint64 n, float *mn_out, float *mx_out)
{
    gint64 n_chunks = (n + UNIFORM_MINMAX_CHUNK - 1) / UNIFORM_MINMAX_CHUNK;
    if (n_chunks <= 1) {
        uniform_minmax_serial (x, n, mn_out, mx_out);
        return;
    }
    float *part = dfq_arena_alloc_uninit (scratch, (gsize) (2 * n_chunks) * sizeof (float));
#pragma omp parallel for schedule(static)
    for (gint64 c = 0; c < n_chunks; c++) {
        gint64 begin = c * UNIFORM_MINMAX_CHUNK;
        gint64 len = MIN (n - begin, UNIFORM_MINMAX_CHUNK);
        uniform_minmax_serial (x + begin, len, &part[2 * c], &part[2 * c + 1]);
    }
    float mn = part[0], mx = part[1];
    gboolean nan = FALSE;
    for (gint64 c = 0; c < n_chunks; c++) {
        float a = part[2 * c], b = part[2 * c + 1];
        mn = a < mn ? a : mn;
        mx = b > mx ? b : mx;
        nan |= isnan (a);
    }
    *mn_out = nan ? NAN : mn;
    *mx_out = nan ? NAN : mx;
}

/* ------------------------------------------------------------ sites */

static void
uniform_site_free (gpointer p)
{
    UniformSite *s = p;
    g_free (s->name);
    g_free (s);
}

static UniformSite *
uniform_lookup (Uniform *self, DfqSiteKind kind, const char *site)
{
    uniform_resolve (self);
    return g_hash_table_lookup (kind == DFQ_SITE_WEIGHT ? self->weight_sites : self->act_sites, site);
}

static gboolean
uniform_add_site (DfqQuantizer *q, DfqSiteKind kind, const char *site, const DfqTensor *example,
                  guint index, gboolean is_first, gboolean is_last, GError **error)
{
    Uniform *self = (Uniform *) q;
    GHashTable *table = kind == DFQ_SITE_WEIGHT ? self->weight_sites : self->act_sites;
    UniformSite *s = g_hash_table_lookup (table, site);
    if (s != NULL) {
        /* attached again (same model): keep the state, refresh the position */
        s->index = index;
        s->is_first = is_first;
        s->is_last = is_last;
        self->resolved = FALSE;
        return TRUE;
    }
    if (kind == DFQ_SITE_WEIGHT && (example == NULL || example->n_dims < 1 || dfq_tensor_numel (example) == 0)) {
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE, "weight site '%s' has no elements", site);
        return FALSE;
    }
    s = g_new0 (UniformSite, 1);
    s->name = g_strdup (site);
    s->kind = kind;
    s->index = index;
    s->is_first = is_first;
    s->is_last = is_last;
    if (kind == DFQ_SITE_ACT) {
        /* GDFQ buffers: x_min = x_max = 0, beta_t = 1 (ZeroQ: 0, 0). */
        s->range = dfq_tensor_new_1d (q->arena, DFQ_DTYPE_F32, UNIFORM_RANGE_LEN);
        float *r = dfq_tensor_f32 (s->range);
        r[UNIFORM_RANGE_MIN] = 0.0f;
        r[UNIFORM_RANGE_MAX] = 0.0f;
        r[UNIFORM_RANGE_AUX] = self->act_range == UNIFORM_RANGE_EMA ? 1.0f : 0.0f;
        dfq_tensor_set_name (s->range, "%s.act_range", site);
        self->n_act_sites = MAX (self->n_act_sites, index + 1);
    } else {
        self->n_weight_sites = MAX (self->n_weight_sites, index + 1);
    }
    g_ptr_array_add (self->sites, s);
    g_hash_table_insert (table, s->name, s);
    self->resolved = FALSE;
    return TRUE;
}

/* ------------------------------------------------------------ weights */

/* lo/hi per output channel (or one pair) of the current float weights:
 * GDFQ Quant_Conv2d/Quant_Linear recompute them from .data every forward. */
static void
uniform_weight_range (const Uniform *self, const DfqTensor *w, float *lo, float *hi, gint64 n_ch)
{
    const float *x = dfq_tensor_f32 (w);
    gint64 inner = dfq_tensor_numel (w) / n_ch;
    for (gint64 c = 0; c < n_ch; c++) {
        float mn, mx;
        uniform_minmax_serial (x + c * inner, inner, &mn, &mx);
        if (self->symmetric) {
            float m = fmaxf (fabsf (mn), fabsf (mx));
            if (isnan (mn))
                m = NAN;
            mn = -m;
            mx = m;
        }
        lo[c] = mn;
        hi[c] = mx;
    }
}

static DfqTensor *
uniform_quantize_weight (DfqQuantizer *q, DfqForward *fwd, const char *site, DfqTensor *w)
{
    Uniform *self = (Uniform *) q;
    UniformSite *s = uniform_lookup (self, DFQ_SITE_WEIGHT, site);
    g_return_val_if_fail (s != NULL, w); /* a site attach() did not discover */
    if (s->bits >= UNIFORM_FULL_PRECISION)
        return w;
    g_return_val_if_fail (w->dtype == DFQ_DTYPE_F32 && dfq_tensor_is_contiguous (w), w);
    gint64 n_ch = self->per_channel ? w->shape[0] : 1;
    /* Statistics of the data, not graph nodes: lo/hi get no gradient. */
    DfqTensor *lo = dfq_tensor_new_1d (fwd->arena, DFQ_DTYPE_F32, n_ch);
    DfqTensor *hi = dfq_tensor_new_1d (fwd->arena, DFQ_DTYPE_F32, n_ch);
    uniform_weight_range (self, w, dfq_tensor_f32 (lo), dfq_tensor_f32 (hi), n_ch);
    return dfq_fake_quant (fwd->arena, w, lo, hi, self->per_channel ? 0 : -1, s->bits,
                           uniform_ste_modes[self->ste]);
}

/* ------------------------------------------------------------ activations */

/* One range update from the batch min @m and max @M (GDFQ QuantAct.forward,
 * quant_modules.py L80-89). Float arithmetic as PyTorch does it on float32
 * buffers with Python-float beta. */
static void
uniform_range_update (const Uniform *self, float *r, float m, float M)
{
    const float beta = (float) self->ema_beta;
    const float one_minus_beta = (float) (1.0 - self->ema_beta);
    switch ((UniformActRange) self->act_range) {
    case UNIFORM_RANGE_EMA: {
        /* Divides the already corrected state again: overshoots (to ~3945 for a
         * constant max of 1 at update 21) and settles after ~200 updates. */
        float beta_t = r[UNIFORM_RANGE_AUX] * beta;
        float denom = 1.0f - beta_t;
        r[UNIFORM_RANGE_AUX] = beta_t;
        r[UNIFORM_RANGE_MIN] = (r[UNIFORM_RANGE_MIN] * beta + m * one_minus_beta) / denom;
        r[UNIFORM_RANGE_MAX] = (r[UNIFORM_RANGE_MAX] * beta + M * one_minus_beta) / denom;
        break;
    }
    case UNIFORM_RANGE_EMA_PLAIN:
        if (r[UNIFORM_RANGE_AUX] == 0.0f) {
            r[UNIFORM_RANGE_MIN] = m;
            r[UNIFORM_RANGE_MAX] = M;
        } else {
            r[UNIFORM_RANGE_MIN] = r[UNIFORM_RANGE_MIN] * beta + m * one_minus_beta;
            r[UNIFORM_RANGE_MAX] = r[UNIFORM_RANGE_MAX] * beta + M * one_minus_beta;
        }
        r[UNIFORM_RANGE_AUX] += 1.0f;
        break;
    case UNIFORM_RANGE_PERCENTILE:
    case UNIFORM_RANGE_MSE: {
        /* m, M: this batch's clip; the range is their mean over batches */
        float n = r[UNIFORM_RANGE_AUX];
        r[UNIFORM_RANGE_MIN] = (r[UNIFORM_RANGE_MIN] * n + m) / (n + 1.0f);
        r[UNIFORM_RANGE_MAX] = (r[UNIFORM_RANGE_MAX] * n + M) / (n + 1.0f);
        r[UNIFORM_RANGE_AUX] = n + 1.0f;
        break;
    }
    case UNIFORM_RANGE_MINMAX:
    default:
        /* ZeroQ: buffers start at 0, so the range always contains 0. NaN
         * propagates like torch's min(). */
        r[UNIFORM_RANGE_MIN] = (m < r[UNIFORM_RANGE_MIN] || isnan (m)) ? m : r[UNIFORM_RANGE_MIN];
        r[UNIFORM_RANGE_MAX] = (M > r[UNIFORM_RANGE_MAX] || isnan (M)) ? M : r[UNIFORM_RANGE_MAX];
        r[UNIFORM_RANGE_AUX] += 1.0f;
        break;
    }
}

/* Up to UNIFORM_CLIP_SAMPLE values of @x (an evenly strided subsample), in
 * @arena; *n_out their number. */
static float *
uniform_clip_sample (DfqArena *arena, const DfqTensor *x, gint64 *n_out)
{
    gint64 n = dfq_tensor_numel (x);
    gint64 stride = (n + UNIFORM_CLIP_SAMPLE - 1) / UNIFORM_CLIP_SAMPLE;
    gint64 m = (n + stride - 1) / stride;
    float *v = dfq_arena_alloc_uninit (arena, (gsize) m * sizeof (float));
    const float *d = dfq_tensor_f32 (x);
    for (gint64 i = 0; i < m; i++)
        v[i] = d[i * stride];
    *n_out = m;
    return v;
}

static void
uniform_percentile_clip (const Uniform *self, DfqArena *arena, const DfqTensor *x, float *m, float *M)
{
    gint64 n;
    float *v = uniform_clip_sample (arena, x, &n);
    dfq_quant_range_percentile (v, n, self->percentile, m, M);
}

/* The clip of (min, max) with the least squared error of the GDFQ quantizer;
 * (min, max) itself when no clip has a finite error. */
static void
uniform_mse_clip (DfqArena *arena, const DfqTensor *x, int bits, float *m, float *M)
{
    gint64 n;
    float *v = uniform_clip_sample (arena, x, &n);
    const DfqQuantRangeSearch search = { DFQ_QUANT_RANGE_GDFQ, bits, UNIFORM_MSE_GRID, 2.0 };
    dfq_quant_range_search (&search, v, n, 1, m, M, NULL);
}

static DfqTensor *
uniform_quantize_act (DfqQuantizer *q, DfqForward *fwd, const char *site, DfqTensor *x)
{
    Uniform *self = (Uniform *) q;
    UniformSite *s = uniform_lookup (self, DFQ_SITE_ACT, site);
    g_return_val_if_fail (s != NULL, x); /* a site attach() did not discover */
    if (s->bits >= UNIFORM_FULL_PRECISION)
        return x;
    g_return_val_if_fail (x->dtype == DFQ_DTYPE_F32 && dfq_tensor_is_contiguous (x), x);
    float *r = dfq_tensor_f32 (s->range);
    if (q->mode == DFQ_QUANT_MODE_CALIBRATE) {
        /* GDFQ order: update the range with this batch, then quantize with it. */
        float m, M;
        uniform_minmax (fwd->arena, dfq_tensor_f32 (x), dfq_tensor_numel (x), &m, &M);
        if (self->act_range == UNIFORM_RANGE_PERCENTILE && isfinite (m) && isfinite (M))
            uniform_percentile_clip (self, fwd->arena, x, &m, &M);
        else if (self->act_range == UNIFORM_RANGE_MSE && isfinite (m) && isfinite (M))
            uniform_mse_clip (fwd->arena, x, s->bits, &m, &M);
        uniform_range_update (self, r, m, M);
    }
    /* Snapshots: a later forward may move the state before this graph's
     * backward reads lo/hi (clipped STE). An uncalibrated site (0, 0) is safe:
     * the 1e-8 guard of dfq_fake_quant keeps every value finite. */
    DfqTensor *lo = dfq_tensor_new_scalar (fwd->arena, r[UNIFORM_RANGE_MIN]);
    DfqTensor *hi = dfq_tensor_new_scalar (fwd->arena, r[UNIFORM_RANGE_MAX]);
    return dfq_fake_quant (fwd->arena, x, lo, hi, -1, s->bits, uniform_ste_modes[self->ste]);
}

/* ------------------------------------------------------------ state */

static void
uniform_get_params (DfqQuantizer *q, GPtrArray *params)
{
    /* min/max ranges are statistics, not learnable */
}

static void
uniform_get_state (DfqQuantizer *q, GPtrArray *state)
{
    Uniform *self = (Uniform *) q;
    for (guint i = 0; i < self->sites->len; i++) {
        UniformSite *s = self->sites->pdata[i];
        if (s->range != NULL)
            g_ptr_array_add (state, s->range);
    }
}

/* The defaults w_bits / a_bits, before overrides (32 = full precision): what
 * "the student's bit-width" means to features that follow it (BAG). */
static gint
uniform_get_bits (DfqQuantizer *q, DfqSiteKind kind)
{
    Uniform *self = (Uniform *) q;
    return kind == DFQ_SITE_WEIGHT ? self->w_bits : self->a_bits;
}

/* ------------------------------------------------------------ lifetime */

static void
uniform_finalize (DfqFeature *feature)
{
    Uniform *self = (Uniform *) feature;
    g_clear_pointer (&self->weight_sites, g_hash_table_unref);
    g_clear_pointer (&self->act_sites, g_hash_table_unref);
    g_clear_pointer (&self->sites, g_ptr_array_unref);
    g_clear_pointer (&self->rules, g_array_unref);
    /* created in init, so dfq_quantizer_attach() uses it rather than making one */
    g_clear_pointer (&self->parent.arena, dfq_arena_free);
}

static gboolean
uniform_init (DfqFeature *feature, GError **error)
{
    Uniform *self = (Uniform *) feature;
    self->rules = g_array_new (FALSE, TRUE, sizeof (UniformRule));
    g_array_set_clear_func (self->rules, uniform_rule_clear);
    for (guint i = 0; self->overrides != NULL && self->overrides[i] != NULL; i++) {
        UniformRule rule;
        if (!uniform_rule_parse (self->overrides[i], &rule, error)) {
            g_prefix_error (error, "overrides[%u]: ", i);
            uniform_finalize (feature);
            return FALSE;
        }
        g_array_append_val (self->rules, rule);
    }
    if (!uniform_bits_valid (self->a_bits)) {
        g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                     "a_bits %d: must be 1-16, or 32 for full precision", self->a_bits);
        uniform_finalize (feature);
        return FALSE;
    }
    self->sites = g_ptr_array_new_with_free_func (uniform_site_free);
    self->weight_sites = g_hash_table_new (g_str_hash, g_str_equal);
    self->act_sites = g_hash_table_new (g_str_hash, g_str_equal);
    self->parent.arena = dfq_arena_new (0);
    return TRUE;
}

static const DfqQuantizerClass uniform_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_QUANTIZER, "uniform",
                                           "GDFQ-family min/max uniform fake quantizer (per-channel weights, EMA activation ranges)",
                                           Uniform, uniform_params, uniform_init, uniform_finalize),
    .add_site = uniform_add_site,
    .quantize_weight = uniform_quantize_weight,
    .quantize_act = uniform_quantize_act,
    .get_params = uniform_get_params,
    .get_state = uniform_get_state,
    .get_bits = uniform_get_bits,
};

static gboolean
uniform_register (DfqRegistry *registry, GError **error)
{
    return dfq_registry_add_feature (registry, &uniform_class.parent, error);
}

DFQ_PLUGIN_DEFINE (uniform, "Uniform min/max fake quantizer of GDFQ, ZeroQ and successors", uniform_register)
