/* Example dfq plugin: a quantizer with learnable parameters, LSQ (Esser et
 * al., "Learned Step Size Quantization", ICLR 2020), built out of tree against
 * an installed dfq (see Makefile and docs/writing-a-plugin.md, "A quantizer
 * with learnable parameters").
 *
 * Every conv/linear weight gets a learnable step per output channel, every
 * activation site (after a ReLU) one learnable step; x^ = s round(clamp(x/s,
 * qn, qp)) with LSQ's gradient for s (dfq_fake_quant_lsq). The steps are PARAM
 * tensors in the quantizer's arena: get_params hands them to the student's
 * optimiser, get_state to the checkpoint, so a resumed run continues with the
 * steps it had learnt.
 *
 * How a quantizer meets the model: dfq_quantizer_attach() runs one forward and
 * calls add_site for every quantization site in forward order (`dfq inspect
 * MODEL --sites` lists them); afterwards every student forward calls
 * quantize_weight / quantize_act with the site's name. */
#include <math.h>

#include <dfq/dfq.h>

typedef struct {
    DfqTensor *step; /* [C_out] (weights) or [1] (activations); PARAM; 0 = not initialised yet */
    gint64 per_step; /* elements per step, for LSQ's gradient scale */
} LsqSite;

typedef struct {
    DfqQuantizer parent;
    gint w_bits;
    gint a_bits;
    GHashTable *weight_sites; /* name -> LsqSite */
    GHashTable *act_sites;
    GPtrArray *steps;         /* DfqTensor *, in site order: the learnable parameters */
} Lsq;

static const DfqParamSpec lsq_params[] = {
    DFQ_PARAM_INT (Lsq, w_bits, "Weight bits (signed grid)", 2, 8, 4),
    DFQ_PARAM_INT (Lsq, a_bits, "Activation bits (unsigned grid: activations follow a ReLU)", 2, 8, 4),
};

static gboolean
lsq_add_site (DfqQuantizer *q, DfqSiteKind kind, const char *site, const DfqTensor *example, guint index,
              gboolean is_first, gboolean is_last, GError **error)
{
    Lsq *self = (Lsq *) q;
    GHashTable *table = kind == DFQ_SITE_WEIGHT ? self->weight_sites : self->act_sites;
    if (g_hash_table_contains (table, site)) /* attached again: keep the learnt steps */
        return TRUE;
    LsqSite *s = g_new0 (LsqSite, 1);
    gint64 n_steps = kind == DFQ_SITE_WEIGHT ? example->shape[0] : 1;
    s->per_step = dfq_tensor_numel (example) / (kind == DFQ_SITE_WEIGHT ? n_steps : example->shape[0]);
    s->step = dfq_tensor_new_1d (q->arena, DFQ_DTYPE_F32, n_steps);
    dfq_tensor_set_name (s->step, "%s.%s_step", site, kind == DFQ_SITE_WEIGHT ? "w" : "a");
    dfq_tensor_set_param (s->step);
    g_ptr_array_add (self->steps, s->step);
    g_hash_table_insert (table, g_strdup (site), s);
    return TRUE;
}

/* LSQ's initialisation: s = 2 mean|x| / sqrt(qp), per step. */
static void
lsq_init_steps (LsqSite *s, const DfqTensor *x, gint qp)
{
    gint64 n_steps = dfq_tensor_numel (s->step), inner = dfq_tensor_numel (x) / n_steps;
    const float *v = dfq_tensor_f32 (x);
    float *step = dfq_tensor_f32 (s->step);
    for (gint64 c = 0; c < n_steps; c++) {
        double sum = 0;
        for (gint64 i = 0; i < inner; i++)
            sum += fabs (v[c * inner + i]);
        /* An all-zero first batch would give a zero step: start at 1/qp then. */
        step[c] = sum > 0 ? (float) (2.0 * sum / (double) inner / sqrt ((double) qp)) : 1.0f / (float) qp;
    }
}

static DfqTensor *
lsq_quantize (Lsq *self, DfqForward *fwd, LsqSite *s, DfqTensor *x, gboolean weight)
{
    gint bits = weight ? self->w_bits : self->a_bits;
    gint qn = weight ? -(1 << (bits - 1)) : 0;
    gint qp = weight ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
    if (dfq_tensor_f32 (s->step)[0] == 0.0f)
        lsq_init_steps (s, x, qp);
    float grad_scale = (float) (1.0 / sqrt ((double) s->per_step * qp));
    return dfq_fake_quant_lsq (fwd->arena, x, s->step, weight ? 0 : -1, qn, qp, grad_scale);
}

static DfqTensor *
lsq_quantize_weight (DfqQuantizer *q, DfqForward *fwd, const char *site, DfqTensor *w)
{
    Lsq *self = (Lsq *) q;
    LsqSite *s = g_hash_table_lookup (self->weight_sites, site);
    g_return_val_if_fail (s != NULL, w); /* a site attach() did not find: a programmer error */
    return lsq_quantize (self, fwd, s, w, TRUE);
}

static DfqTensor *
lsq_quantize_act (DfqQuantizer *q, DfqForward *fwd, const char *site, DfqTensor *x)
{
    Lsq *self = (Lsq *) q;
    LsqSite *s = g_hash_table_lookup (self->act_sites, site);
    g_return_val_if_fail (s != NULL, x);
    return lsq_quantize (self, fwd, s, x, FALSE);
}

/* The learnable parameters, trained by the student's optimiser. */
static void
lsq_get_params (DfqQuantizer *q, GPtrArray *params)
{
    Lsq *self = (Lsq *) q;
    for (guint i = 0; i < self->steps->len; i++)
        g_ptr_array_add (params, self->steps->pdata[i]);
}

/* What a checkpoint saves and a resumed run restores (uniquely named). */
static void
lsq_get_state (DfqQuantizer *q, GPtrArray *state)
{
    lsq_get_params (q, state);
}

static gint
lsq_get_bits (DfqQuantizer *q, DfqSiteKind kind)
{
    Lsq *self = (Lsq *) q;
    return kind == DFQ_SITE_WEIGHT ? self->w_bits : self->a_bits;
}

static void
lsq_finalize (DfqFeature *feature)
{
    Lsq *self = (Lsq *) feature;
    g_clear_pointer (&self->weight_sites, g_hash_table_unref);
    g_clear_pointer (&self->act_sites, g_hash_table_unref);
    g_clear_pointer (&self->steps, g_ptr_array_unref);
    g_clear_pointer (&self->parent.arena, dfq_arena_free); /* the steps die with it */
}

static gboolean
lsq_init (DfqFeature *feature, GError **error)
{
    Lsq *self = (Lsq *) feature;
    self->weight_sites = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
    self->act_sites = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
    self->steps = g_ptr_array_new ();
    self->parent.arena = dfq_arena_new (0);
    return TRUE;
}

static const DfqQuantizerClass lsq_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_QUANTIZER, "example-lsq",
                                           "Example: LSQ, learnable step sizes for weights (per channel) and "
                                           "activations",
                                           Lsq, lsq_params, lsq_init, lsq_finalize),
    .add_site = lsq_add_site,
    .quantize_weight = lsq_quantize_weight,
    .quantize_act = lsq_quantize_act,
    .get_params = lsq_get_params,
    .get_state = lsq_get_state,
    .get_bits = lsq_get_bits,
};

static gboolean
lsq_register (DfqRegistry *registry, GError **error)
{
    return dfq_registry_add_feature (registry, &lsq_class.parent, error);
}

DFQ_PLUGIN_DEFINE_VERSIONED (lsq, "0.1.0", "Example: a quantizer with learnable parameters (LSQ)", lsq_register)
