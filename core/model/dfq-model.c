/* Models (core/model): parameter tables with PyTorch names, default inits, the
 * layer helpers through which taps, quantization sites and transforms reach
 * into any model, and tap sets. Model plugins (plugins/models/) only describe
 * the architecture. */
#include <math.h>
#include <string.h>

#include <dfq/dfq.h>
#include <dfq/dfq-model.h>

#include "../ops/dfq-op-private.h"

/* ---------------------------------------------------------------- tap sets */

struct _DfqTapSet {
    GPtrArray *patterns; /* GPatternSpec * */
    GArray *taps;        /* DfqTap */
    GStringChunk *names; /* tap names; cleared with the set */
};

DfqTapSet *
dfq_tap_set_new (const char *const *patterns)
{
    DfqTapSet *self = g_new0 (DfqTapSet, 1);
    self->patterns = g_ptr_array_new_with_free_func ((GDestroyNotify) g_pattern_spec_free);
    for (guint i = 0; patterns != NULL && patterns[i] != NULL; i++)
        g_ptr_array_add (self->patterns, g_pattern_spec_new (patterns[i]));
    self->taps = g_array_sized_new (FALSE, TRUE, sizeof (DfqTap), 64);
    self->names = g_string_chunk_new (4096);
    return self;
}

void
dfq_tap_set_free (DfqTapSet *self)
{
    if (self == NULL)
        return;
    g_ptr_array_unref (self->patterns);
    g_array_unref (self->taps);
    g_string_chunk_free (self->names);
    g_free (self);
}

void
dfq_tap_set_clear (DfqTapSet *self)
{
    /* The names stay: a forward taps the same layers every step, so keeping
     * them (deduplicated) makes steady-state steps allocation-free. */
    g_array_set_size (self->taps, 0);
}

guint
dfq_tap_set_size (const DfqTapSet *self)
{
    return self->taps->len;
}

const DfqTap *
dfq_tap_set_get (const DfqTapSet *self, guint i)
{
    g_return_val_if_fail (i < self->taps->len, NULL);
    return &g_array_index (self->taps, DfqTap, i);
}

const DfqTap *
dfq_tap_set_find (const DfqTapSet *self, const char *name)
{
    for (guint i = 0; i < self->taps->len; i++) {
        const DfqTap *t = &g_array_index (self->taps, DfqTap, i);
        if (g_str_equal (t->name, name))
            return t;
    }
    return NULL;
}

static gboolean
dfq_tap_set_matches (const DfqTapSet *self, const char *name)
{
    gsize len = strlen (name);
    for (guint i = 0; i < self->patterns->len; i++)
        if (g_pattern_spec_match (self->patterns->pdata[i], len, name, NULL))
            return TRUE;
    return FALSE;
}

void
dfq_layer_tap (DfqForward *fwd, const char *name, DfqTapKind kind, DfqTensor *t, DfqTensor *aux0, DfqTensor *aux1)
{
    for (guint s = 0; s < fwd->n_tap_sets; s++) {
        DfqTapSet *set = fwd->tap_sets[s];
        if (!dfq_tap_set_matches (set, name))
            continue;
        DfqTap tap = { g_string_chunk_insert_const (set->names, name), kind, t, aux0, aux1 };
        g_array_append_val (set->taps, tap);
    }
}

/* ---------------------------------------------------------------- forward */

void
dfq_forward_init (DfqForward *fwd, DfqArena *arena, gboolean training)
{
    memset (fwd, 0, sizeof *fwd);
    fwd->arena = arena;
    fwd->training = training;
    fwd->update_bn_stats = TRUE;
}

void
dfq_forward_add_taps (DfqForward *fwd, DfqTapSet *set)
{
    g_return_if_fail (fwd->n_tap_sets < DFQ_FORWARD_MAX_TAP_SETS);
    fwd->tap_sets[fwd->n_tap_sets++] = set;
}

/* ---------------------------------------------------------------- model */

gboolean
dfq_model_setup (DfqFeature *feature, GError **error)
{
    DfqModel *self = (DfqModel *) feature;
    self->arena = dfq_arena_new (0);
    self->params = g_ptr_array_new ();
    self->buffers = g_ptr_array_new ();
    self->by_name = g_hash_table_new (g_str_hash, g_str_equal);
    self->blocks = g_ptr_array_new_with_free_func (g_free);
    const DfqModelClass *klass = DFQ_MODEL_CLASS (self);
    if (klass->build != NULL && !klass->build (self, error)) {
        /* the host does not finalize a feature whose init() failed */
        dfq_model_teardown (feature);
        return FALSE;
    }
    return TRUE;
}

void
dfq_model_teardown (DfqFeature *feature)
{
    DfqModel *self = (DfqModel *) feature;
    g_clear_pointer (&self->params, g_ptr_array_unref);
    g_clear_pointer (&self->buffers, g_ptr_array_unref);
    g_clear_pointer (&self->by_name, g_hash_table_unref);
    g_clear_pointer (&self->blocks, g_ptr_array_unref);
    g_clear_pointer (&self->arena, dfq_arena_free);
}

static DfqTensor *
dfq_model_add_named (DfqModel *self, const char *name, int n_dims, const gint64 *shape, gboolean trainable)
{
    g_return_val_if_fail (g_hash_table_lookup (self->by_name, name) == NULL, NULL);
    g_return_val_if_fail (strlen (name) < DFQ_TENSOR_NAME_MAX, NULL);
    DfqTensor *t = dfq_tensor_new (self->arena, DFQ_DTYPE_F32, n_dims, shape);
    dfq_tensor_set_name (t, "%s", name);
    if (trainable) {
        dfq_tensor_set_param (t);
        g_ptr_array_add (self->params, t);
    } else {
        g_ptr_array_add (self->buffers, t);
    }
    g_hash_table_insert (self->by_name, t->name, t);
    return t;
}

DfqTensor *
dfq_model_add_param (DfqModel *self, const char *name, int n_dims, const gint64 *shape)
{
    return dfq_model_add_named (self, name, n_dims, shape, TRUE);
}

DfqTensor *
dfq_model_add_buffer (DfqModel *self, const char *name, int n_dims, const gint64 *shape)
{
    return dfq_model_add_named (self, name, n_dims, shape, FALSE);
}

/* Stream id from a parameter name (FNV-1a), so inits do not depend on the order
 * in which a model creates its parameters. */
static guint64
dfq_model_name_stream (const char *name)
{
    guint64 h = 1469598103934665603ull;
    for (const char *p = name; *p; p++)
        h = (h ^ (guint8) *p) * 1099511628211ull;
    return h;
}

/* PyTorch's default: kaiming_uniform(a = sqrt(5)) => U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
 * and the same bound for biases. */
static void
dfq_model_init_uniform (DfqTensor *t, guint64 seed, double fan_in)
{
    float bound = (float) (1.0 / sqrt (MAX (fan_in, 1.0)));
    dfq_rand_uniform_fill (t, seed, dfq_model_name_stream (t->name), -bound, bound);
}

DfqTensor *
dfq_model_add_conv (DfqModel *self, const char *name, int cin, int cout, int k, int groups, gboolean bias, guint64 seed)
{
    g_autofree char *wname = g_strdup_printf ("%s.weight", name);
    gint64 shape[4] = { cout, cin / groups, k, k };
    DfqTensor *w = dfq_model_add_param (self, wname, 4, shape);
    double fan_in = (double) (cin / groups) * k * k;
    dfq_model_init_uniform (w, seed, fan_in);
    if (bias) {
        g_autofree char *bname = g_strdup_printf ("%s.bias", name);
        DfqTensor *b = dfq_model_add_param (self, bname, 1, shape);
        dfq_model_init_uniform (b, seed, fan_in);
    }
    return w;
}

DfqTensor *
dfq_model_add_linear (DfqModel *self, const char *name, int in, int out, gboolean bias, guint64 seed)
{
    g_autofree char *wname = g_strdup_printf ("%s.weight", name);
    gint64 shape[2] = { out, in };
    DfqTensor *w = dfq_model_add_param (self, wname, 2, shape);
    dfq_model_init_uniform (w, seed, in);
    if (bias) {
        g_autofree char *bname = g_strdup_printf ("%s.bias", name);
        DfqTensor *b = dfq_model_add_param (self, bname, 1, shape);
        dfq_model_init_uniform (b, seed, in);
    }
    return w;
}

void
dfq_model_add_bn (DfqModel *self, const char *name, int channels, gboolean affine)
{
    gint64 shape[1] = { channels };
    if (affine) {
        g_autofree char *w = g_strdup_printf ("%s.weight", name);
        g_autofree char *b = g_strdup_printf ("%s.bias", name);
        dfq_tensor_fill (dfq_model_add_param (self, w, 1, shape), 1.0f);
        dfq_model_add_param (self, b, 1, shape);
    }
    g_autofree char *rm = g_strdup_printf ("%s.running_mean", name);
    g_autofree char *rv = g_strdup_printf ("%s.running_var", name);
    dfq_model_add_buffer (self, rm, 1, shape);
    dfq_tensor_fill (dfq_model_add_buffer (self, rv, 1, shape), 1.0f);
}

void
dfq_model_add_block (DfqModel *self, const char *name)
{
    g_ptr_array_add (self->blocks, g_strdup (name));
}

DfqTensor *
dfq_model_get (DfqModel *self, const char *name)
{
    return g_hash_table_lookup (self->by_name, name);
}

gint64
dfq_model_n_parameters (DfqModel *self)
{
    gint64 n = 0;
    for (guint i = 0; i < self->params->len; i++)
        n += dfq_tensor_numel (self->params->pdata[i]);
    return n;
}

/* Looks up "<name>.<suffix>" without allocating (names are short). */
static DfqTensor *
dfq_model_lookup2 (DfqModel *self, const char *name, const char *suffix)
{
    char buf[DFQ_TENSOR_NAME_MAX + 16];
    g_snprintf (buf, sizeof buf, "%s.%s", name, suffix);
    return g_hash_table_lookup (self->by_name, buf);
}

/* ---------------------------------------------------------------- layers */

/* The hooks of conv @name, in the order they run: the layer wrapping of the
 * input, then the weight quantization site. */
/* A quantization site: the quantizer's hook, then (when a tap set wants it)
 * the quantization tap "<site>:quant" (activation) or "<site>:wquant"
 * (weight) with tensor Q(X) and aux0 X, for losses and diagnostics that look
 * at the quantization error (the SQNR loss and per-layer SQNR). A site the
 * quantizer leaves in full precision (Q(X) is X) emits no tap. */
static DfqTensor *
dfq_layer_quantize (DfqForward *fwd, DfqQuantizeFn fn, const char *site, DfqTensor *x, gboolean weight)
{
    DfqTensor *y = fn (fwd->quant_data, fwd, site, x);
    if (fwd->n_tap_sets > 0 && y != x) {
        char tap[DFQ_TENSOR_NAME_MAX + 8];
        g_snprintf (tap, sizeof tap, "%s:%s", site, weight ? "wquant" : "quant");
        dfq_layer_tap (fwd, tap, weight ? DFQ_TAP_QUANT_WEIGHT : DFQ_TAP_QUANT_ACT, y, x, NULL);
    }
    return y;
}

static void
dfq_layer_conv_hooks (DfqForward *fwd, const char *name, int stride, DfqTensor **x, DfqTensor **w)
{
    if (fwd->conv_input != NULL)
        *x = fwd->conv_input (fwd->conv_input_data, fwd, name, stride, *x);
    if (fwd->quantize_weight != NULL)
        *w = dfq_layer_quantize (fwd, fwd->quantize_weight, name, *w, TRUE);
}

static DfqTensor *
dfq_layer_conv_run (DfqForward *fwd, const char *name, DfqTensor *x, DfqTensor *w, DfqTensor *b, int stride,
                    int padding, int groups)
{
    DfqTensor *y = dfq_conv2d (fwd->arena, x, w, b, stride, padding, groups);
    if (fwd->n_tap_sets > 0) {
        char tap[DFQ_TENSOR_NAME_MAX + 8];
        g_snprintf (tap, sizeof tap, "%s:out", name);
        dfq_layer_tap (fwd, tap, DFQ_TAP_CONV_OUT, y, NULL, NULL);
    }
    return y;
}

DfqTensor *
dfq_layer_conv (DfqModel *self, DfqForward *fwd, const char *name, DfqTensor *x, int stride, int padding, int groups)
{
    DfqTensor *w = dfq_model_lookup2 (self, name, "weight");
    DfqTensor *b = dfq_model_lookup2 (self, name, "bias");
    g_return_val_if_fail (w != NULL, NULL);
    dfq_layer_conv_hooks (fwd, name, stride, &x, &w);
    return dfq_layer_conv_run (fwd, name, x, w, b, stride, padding, groups);
}

DfqTensor *
dfq_layer_linear (DfqModel *self, DfqForward *fwd, const char *name, DfqTensor *x)
{
    DfqTensor *w = dfq_model_lookup2 (self, name, "weight");
    DfqTensor *b = dfq_model_lookup2 (self, name, "bias");
    g_return_val_if_fail (w != NULL, NULL);
    if (fwd->quantize_weight != NULL)
        w = dfq_layer_quantize (fwd, fwd->quantize_weight, name, w, TRUE);
    return dfq_linear (fwd->arena, x, w, b);
}

/* BN, with the activation @act fused into the op (dfq_priv_batchnorm_act):
 * dfq_layer_bn, and dfq_layer_conv_bn where no tap wants the BN output. */
static DfqTensor *
dfq_layer_bn_act (DfqModel *self, DfqForward *fwd, const char *name, DfqTensor *x, float eps, float momentum,
                  DfqPrivBnAct act)
{
    DfqTensor *gamma = dfq_model_lookup2 (self, name, "weight");
    DfqTensor *beta = dfq_model_lookup2 (self, name, "bias");
    DfqTensor *rm = dfq_model_lookup2 (self, name, "running_mean");
    DfqTensor *rv = dfq_model_lookup2 (self, name, "running_var");
    g_return_val_if_fail (rm != NULL && rv != NULL, NULL);
    char tap[DFQ_TENSOR_NAME_MAX + 8];
    if (fwd->n_tap_sets > 0) {
        g_snprintf (tap, sizeof tap, "%s:in", name);
        dfq_layer_tap (fwd, tap, DFQ_TAP_BN_IN, x, rm, rv);
    }
    /* Eval mode normalises with the running stats; train mode updates them only
     * when asked (a frozen student in train mode must not drift). */
    gboolean pass_running = !fwd->training || fwd->update_bn_stats;
    DfqTensor *y = dfq_priv_batchnorm_act (fwd->arena, x, gamma, beta, pass_running ? rm : NULL,
                                           pass_running ? rv : NULL, fwd->training, momentum, eps, act);
    if (fwd->n_tap_sets > 0 && act == DFQ_PRIV_BN_ACT_NONE) {
        g_snprintf (tap, sizeof tap, "%s:out", name);
        dfq_layer_tap (fwd, tap, DFQ_TAP_BN_OUT, y, NULL, NULL);
    }
    return y;
}

DfqTensor *
dfq_layer_bn (DfqModel *self, DfqForward *fwd, const char *name, DfqTensor *x, float eps, float momentum)
{
    return dfq_layer_bn_act (self, fwd, name, x, eps, momentum, DFQ_PRIV_BN_ACT_NONE);
}

static DfqTensor *
dfq_layer_act_quantize (DfqForward *fwd, const char *site, DfqTensor *y)
{
    if (fwd->quantize_act != NULL)
        y = dfq_layer_quantize (fwd, fwd->quantize_act, site, y, FALSE);
    return y;
}

DfqTensor *
dfq_layer_act_site (DfqModel *self, DfqForward *fwd, const char *site, DfqTensor *x)
{
    (void) self;
    return dfq_layer_act_quantize (fwd, site, x);
}

DfqTensor *
dfq_layer_act (DfqModel *self, DfqForward *fwd, const char *site, DfqTensor *x, DfqActKind kind)
{
    (void) self;
    DfqTensor *y = kind == DFQ_ACT_RELU6 ? dfq_relu6 (fwd->arena, x) : dfq_relu (fwd->arena, x);
    return dfq_layer_act_quantize (fwd, site, y);
}

/* ---------------------------------------------------------------- fused conv-bn */

static gint dfq_layer_fusion = -1; /* -1: not decided yet (environment) */

static gboolean
dfq_layer_fusion_enabled (void)
{
    gint v = g_atomic_int_get (&dfq_layer_fusion);
    if (v < 0) {
        g_atomic_int_compare_and_exchange (&dfq_layer_fusion, -1, g_getenv ("DFQ_NO_FUSION") == NULL);
        v = g_atomic_int_get (&dfq_layer_fusion);
    }
    return v != 0;
}

gboolean
dfq_layer_set_fusion_enabled (gboolean enabled)
{
    gboolean prev = dfq_layer_fusion_enabled ();
    g_atomic_int_set (&dfq_layer_fusion, enabled ? 1 : 0);
    return prev;
}

/* Whether some tap set wants the tap "<name><suffix>" (@name NULL: no). */
static gboolean
dfq_layer_tapped (DfqForward *fwd, const char *name, const char *suffix)
{
    if (name == NULL || fwd->n_tap_sets == 0)
        return FALSE;
    char tap[DFQ_TENSOR_NAME_MAX + 16];
    g_snprintf (tap, sizeof tap, "%s%s", name, suffix);
    for (guint s = 0; s < fwd->n_tap_sets; s++)
        if (dfq_tap_set_matches (fwd->tap_sets[s], tap))
            return TRUE;
    return FALSE;
}

static gboolean
dfq_layer_needs_grad (DfqTensor *t)
{
    return t != NULL && dfq_tensor_requires_grad (t);
}

/* Whether the layer may run as one fused conv (x and w after the hooks): the
 * eval BN op, no graph, nobody looking at what the fused pass never writes. */
static gboolean
dfq_layer_conv_bn_fusable (DfqForward *fwd, const DfqLayerConvBn *layer, DfqTensor *x, DfqTensor *w,
                           DfqTensor *b, DfqTensor *gamma, DfqTensor *beta, DfqTensor *rm, DfqTensor *rv)
{
    if (fwd->training || !dfq_layer_fusion_enabled () || rm == NULL || rv == NULL)
        return FALSE;
    if (dfq_grad_enabled () && (dfq_layer_needs_grad (x) || dfq_layer_needs_grad (w) || dfq_layer_needs_grad (b) ||
                                dfq_layer_needs_grad (gamma) || dfq_layer_needs_grad (beta) ||
                                dfq_layer_needs_grad (layer->residual)))
        return FALSE;
    if (!dfq_priv_conv2d_fusable (x, w, b, layer->stride, layer->padding, MAX (layer->groups, 1)))
        return FALSE;
    const gint64 co = w->shape[0];
    if (dfq_tensor_numel (rm) != co || dfq_tensor_numel (rv) != co ||
        (gamma != NULL && dfq_tensor_numel (gamma) != co) || (beta != NULL && dfq_tensor_numel (beta) != co) ||
        (b != NULL && (b->dtype != DFQ_DTYPE_F32 || dfq_tensor_numel (b) != co)))
        return FALSE;
    if (layer->residual != NULL) {
        const DfqTensor *r = layer->residual;
        const gint64 ho = (x->shape[2] + 2 * layer->padding - w->shape[2]) / layer->stride + 1;
        const gint64 wo = (x->shape[3] + 2 * layer->padding - w->shape[3]) / layer->stride + 1;
        if (r->dtype != DFQ_DTYPE_F32 || r->n_dims != 4 || !dfq_tensor_is_contiguous (r) ||
            r->shape[0] != x->shape[0] || r->shape[1] != co || r->shape[2] != ho || r->shape[3] != wo)
            return FALSE;
    }
    return !dfq_layer_tapped (fwd, layer->conv, ":out") && !dfq_layer_tapped (fwd, layer->bn, ":in") &&
           !dfq_layer_tapped (fwd, layer->bn, ":out") && !dfq_layer_tapped (fwd, layer->body_tap, "");
}

/* Whether the BN of @layer can carry its activation (any mode, with a graph
 * too): an activation right after the BN, no residual in between, and no tap
 * that wants the BN output or the block body. */
static DfqPrivBnAct
dfq_layer_bn_act_fusable (DfqForward *fwd, const DfqLayerConvBn *layer)
{
    if (layer->act_site == NULL || layer->residual != NULL || !dfq_layer_fusion_enabled ())
        return DFQ_PRIV_BN_ACT_NONE;
    if (dfq_layer_tapped (fwd, layer->bn, ":out") || dfq_layer_tapped (fwd, layer->body_tap, ""))
        return DFQ_PRIV_BN_ACT_NONE;
    return layer->act == DFQ_ACT_RELU6 ? DFQ_PRIV_BN_ACT_RELU6 : DFQ_PRIV_BN_ACT_RELU;
}

gboolean
dfq_layer_conv_bn_fuses (DfqModel *self, DfqForward *fwd, const DfqLayerConvBn *layer, DfqTensor *x)
{
    g_return_val_if_fail (layer != NULL && layer->conv != NULL && layer->bn != NULL, FALSE);
    if (fwd->conv_input != NULL || fwd->quantize_weight != NULL || fwd->quantize_act != NULL)
        return FALSE;
    DfqTensor *w = dfq_model_lookup2 (self, layer->conv, "weight");
    if (w == NULL)
        return FALSE;
    return dfq_layer_conv_bn_fusable (fwd, layer, x, w, dfq_model_lookup2 (self, layer->conv, "bias"),
                                      dfq_model_lookup2 (self, layer->bn, "weight"),
                                      dfq_model_lookup2 (self, layer->bn, "bias"),
                                      dfq_model_lookup2 (self, layer->bn, "running_mean"),
                                      dfq_model_lookup2 (self, layer->bn, "running_var"));
}

DfqTensor *
dfq_layer_conv_bn (DfqModel *self, DfqForward *fwd, const DfqLayerConvBn *layer, DfqTensor *x)
{
    g_return_val_if_fail (layer != NULL && layer->conv != NULL && layer->bn != NULL, NULL);
    DfqTensor *w = dfq_model_lookup2 (self, layer->conv, "weight");
    DfqTensor *b = dfq_model_lookup2 (self, layer->conv, "bias");
    g_return_val_if_fail (w != NULL, NULL);
    dfq_layer_conv_hooks (fwd, layer->conv, layer->stride, &x, &w);

    DfqTensor *gamma = dfq_model_lookup2 (self, layer->bn, "weight");
    DfqTensor *beta = dfq_model_lookup2 (self, layer->bn, "bias");
    DfqTensor *rm = dfq_model_lookup2 (self, layer->bn, "running_mean");
    DfqTensor *rv = dfq_model_lookup2 (self, layer->bn, "running_var");
    if (dfq_layer_conv_bn_fusable (fwd, layer, x, w, b, gamma, beta, rm, rv)) {
        const gint64 co = w->shape[0];
        float *coeffs = dfq_arena_alloc_uninit (fwd->arena, (gsize) (3 * co) * sizeof (float));
        dfq_priv_bn_eval_coeffs (gamma, beta, rm, rv, layer->bn_eps, coeffs, coeffs + co, coeffs + 2 * co);
        DfqPrivConvEpilogue ep = {
            .mean = coeffs,
            .scale = coeffs + co,
            .shift = coeffs + 2 * co,
            .residual = layer->residual != NULL ? dfq_tensor_f32 (layer->residual) : NULL,
            .relu = layer->act_site != NULL && layer->act == DFQ_ACT_RELU,
            .relu6 = layer->act_site != NULL && layer->act == DFQ_ACT_RELU6,
        };
        DfqTensor *y = dfq_priv_conv2d_fused (fwd->arena, x, w, b, layer->stride, layer->padding,
                                              MAX (layer->groups, 1), &ep);
        if (layer->act_site == NULL)
            return y;
        return dfq_layer_act_quantize (fwd, layer->act_site, y);
    }

    DfqTensor *y = dfq_layer_conv_run (fwd, layer->conv, x, w, b, layer->stride, layer->padding,
                                       MAX (layer->groups, 1));
    const DfqPrivBnAct act = dfq_layer_bn_act_fusable (fwd, layer);
    if (act != DFQ_PRIV_BN_ACT_NONE) {
        y = dfq_layer_bn_act (self, fwd, layer->bn, y, layer->bn_eps, layer->bn_momentum, act);
        return dfq_layer_act_quantize (fwd, layer->act_site, y);
    }
    y = dfq_layer_bn (self, fwd, layer->bn, y, layer->bn_eps, layer->bn_momentum);
    if (layer->body_tap != NULL && fwd->n_tap_sets > 0)
        dfq_layer_tap (fwd, layer->body_tap, DFQ_TAP_BODY, y, NULL, NULL);
    if (layer->residual != NULL)
        y = dfq_add (fwd->arena, y, layer->residual);
    if (layer->act_site != NULL)
        y = dfq_layer_act (self, fwd, layer->act_site, y, layer->act);
    return y;
}

/* ---------------------------------------------------------------- whole model */

DfqTensor *
dfq_model_forward (DfqModel *self, DfqForward *fwd, DfqTensor *x)
{
    const DfqModelClass *klass = DFQ_MODEL_CLASS (self);
    if (fwd->n_tap_sets > 0)
        dfq_layer_tap (fwd, "input", DFQ_TAP_INPUT, x, NULL, NULL);
    DfqTensor *logits = klass->forward (self, fwd, x);
    if (fwd->n_tap_sets > 0)
        dfq_layer_tap (fwd, "logits", DFQ_TAP_LOGITS, logits, NULL, NULL);
    return logits;
}

DfqTensor *
dfq_model_forward_block (DfqModel *self, DfqForward *fwd, guint index, DfqTensor *x)
{
    const DfqModelClass *klass = DFQ_MODEL_CLASS (self);
    g_return_val_if_fail (index < self->blocks->len, NULL);
    g_return_val_if_fail (klass->forward_block != NULL, NULL);
    return klass->forward_block (self, fwd, index, x);
}

void
dfq_model_copy_weights (DfqModel *dst, DfqModel *src)
{
    GHashTableIter it;
    gpointer key, value;
    g_hash_table_iter_init (&it, src->by_name);
    while (g_hash_table_iter_next (&it, &key, &value)) {
        DfqTensor *d = g_hash_table_lookup (dst->by_name, key);
        g_return_if_fail (d != NULL && dfq_tensor_same_shape (d, value));
        dfq_tensor_copy_data (d, value);
    }
}

/* ---------------------------------------------------------------- weights files */

gboolean
dfq_model_load (DfqModel *self, const char *path, const char *const *rename_rules, GError **error)
{
    g_autoptr (DfqSafetensorsRenames) renames = dfq_safetensors_renames_new ();
    for (guint i = 0; rename_rules != NULL && rename_rules[i] != NULL; i++) {
        const char *sep = strstr (rename_rules[i], "=>");
        if (sep == NULL) {
            g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_FORMAT,
                         "rename rule '%s' is not of the form 'regex=>replacement'", rename_rules[i]);
            return FALSE;
        }
        g_autofree char *pattern = g_strndup (rename_rules[i], (gsize) (sep - rename_rules[i]));
        if (!dfq_safetensors_renames_add_regex (renames, pattern, sep + 2, error))
            return FALSE;
    }
    /* PyTorch BN layers carry num_batches_tracked; dfqlab's do not need it. */
    static const char *const ignore[] = { "*num_batches_tracked", NULL };
    DfqSafetensorsLoadOptions options = { .renames = renames, .ignore = ignore };
    if (!dfq_safetensors_load_file_into (path, self->by_name, &options, error)) {
        g_prefix_error (error, "loading %s into %s: ", path, ((DfqFeature *) self)->klass->name);
        return FALSE;
    }
    return TRUE;
}

gboolean
dfq_model_save (DfqModel *self, const char *path, GHashTable *metadata, GError **error)
{
    return dfq_safetensors_save (path, self->by_name, metadata, error);
}

void
dfq_model_set_trainable (DfqModel *self, gboolean trainable)
{
    for (guint i = 0; i < self->params->len; i++) {
        DfqTensor *t = self->params->pdata[i];
        if (trainable)
            t->flags |= DFQ_TENSOR_FLAG_PARAM | DFQ_TENSOR_FLAG_REQUIRES_GRAD;
        else
            t->flags &= ~(guint32) (DFQ_TENSOR_FLAG_PARAM | DFQ_TENSOR_FLAG_REQUIRES_GRAD);
    }
}
