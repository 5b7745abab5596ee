/* What a model offers losses and quantizers (core/model): the taps it emits
 * and its quantization sites, each with its shape, found by one eval-mode
 * forward of a zero batch with every tap wanted and recording quantization
 * hooks. `dfq inspect MODEL --taps/--sites` prints them and `dfq validate`
 * resolves every loss's tap patterns against them (dfq-pipeline-taps.c). */
#include <string.h>

#include <dfq/dfq.h>

static const char *const dfq_tap_kind_names[] = {
    [DFQ_TAP_INPUT] = "input",   [DFQ_TAP_BN_IN] = "bn-in", [DFQ_TAP_CONV_OUT] = "conv-out",
    [DFQ_TAP_BN_OUT] = "bn-out", [DFQ_TAP_BODY] = "body",   [DFQ_TAP_BLOCK] = "block",
    [DFQ_TAP_FEATURE] = "feature", [DFQ_TAP_LOGITS] = "logits",
    [DFQ_TAP_QUANT_ACT] = "quant-act", [DFQ_TAP_QUANT_WEIGHT] = "quant-weight",
};

const char *
dfq_tap_kind_name (DfqTapKind kind)
{
    if ((guint) kind >= G_N_ELEMENTS (dfq_tap_kind_names))
        return "unknown";
    return dfq_tap_kind_names[kind];
}

static DfqModelPoint *
dfq_model_point_new (const char *name, guint kind, const DfqTensor *t)
{
    DfqModelPoint *p = g_new0 (DfqModelPoint, 1);
    p->name = g_strdup (name);
    p->kind = kind;
    p->n_dims = t->n_dims;
    for (int d = 0; d < t->n_dims; d++)
        p->shape[d] = t->shape[d];
    return p;
}

void
dfq_model_point_free (DfqModelPoint *point)
{
    if (point == NULL)
        return;
    g_free (point->name);
    g_free (point);
}

gboolean
dfq_model_is_built (const DfqFeature *feature)
{
    if (feature == NULL || feature->klass->kind != DFQ_FEATURE_MODEL ||
        feature->klass->instance_size < sizeof (DfqModel))
        return FALSE;
    const DfqModel *model = (const DfqModel *) feature;
    return model->arena != NULL && model->by_name != NULL && DFQ_MODEL_CLASS (model)->forward != NULL;
}

typedef struct {
    GPtrArray *sites; /* DfqModelPoint */
} DfqModelProbe;

static DfqTensor *
dfq_model_probe_weight (gpointer user_data, DfqForward *fwd G_GNUC_UNUSED, const char *site, DfqTensor *x)
{
    DfqModelProbe *probe = user_data;
    g_ptr_array_add (probe->sites, dfq_model_point_new (site, DFQ_SITE_WEIGHT, x));
    return x;
}

static DfqTensor *
dfq_model_probe_act (gpointer user_data, DfqForward *fwd G_GNUC_UNUSED, const char *site, DfqTensor *x)
{
    DfqModelProbe *probe = user_data;
    g_ptr_array_add (probe->sites, dfq_model_point_new (site, DFQ_SITE_ACT, x));
    return x;
}

/* One eval forward of zeros [batch, C, H, W] with every tap wanted and
 * recording hooks: the taps into @taps, the sites into @sites (either NULL). */
static gboolean
dfq_model_probe (DfqModel *self, gint batch, GPtrArray *taps, GPtrArray *sites, GError **error)
{
    if (!dfq_model_is_built ((DfqFeature *) self)) {
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_FORMAT,
                     "'%s' is not a built model (its instance does not start with a set-up DfqModel)",
                     ((DfqFeature *) self)->klass->name);
        return FALSE;
    }
    if (self->in_channels <= 0 || self->height <= 0 || self->width <= 0) {
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE,
                     "model '%s' does not say its input shape (in_channels %d, height %d, width %d)",
                     ((DfqFeature *) self)->klass->name, self->in_channels, self->height, self->width);
        return FALSE;
    }
    static const char *const every[] = { "*", NULL };
    g_autoptr (DfqTapSet) set = dfq_tap_set_new (every);
    DfqArena *arena = dfq_arena_new (1 << 20);
    DfqModelProbe probe = { sites };
    DfqForward fwd;
    dfq_forward_init (&fwd, arena, FALSE);
    dfq_forward_add_taps (&fwd, set);
    if (sites != NULL) {
        fwd.quantize_weight = dfq_model_probe_weight;
        fwd.quantize_act = dfq_model_probe_act;
        fwd.quant_data = &probe;
    }
    gboolean grad = dfq_set_grad_enabled (FALSE);
    DfqTensor *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, batch, self->in_channels, self->height, self->width);
    dfq_model_forward (self, &fwd, x);
    dfq_set_grad_enabled (grad);
    for (guint i = 0; taps != NULL && i < dfq_tap_set_size (set); i++) {
        const DfqTap *tap = dfq_tap_set_get (set, i);
        g_ptr_array_add (taps, dfq_model_point_new (tap->name, tap->kind, tap->tensor));
    }
    dfq_arena_free (arena);
    return TRUE;
}

GPtrArray *
dfq_model_list_taps (DfqModel *self, gint batch, GError **error)
{
    g_return_val_if_fail (self != NULL, NULL);
    g_return_val_if_fail (batch > 0, NULL);
    g_autoptr (GPtrArray) taps = g_ptr_array_new_with_free_func ((GDestroyNotify) dfq_model_point_free);
    if (!dfq_model_probe (self, batch, taps, NULL, error))
        return NULL;
    return g_steal_pointer (&taps);
}

GPtrArray *
dfq_model_list_sites (DfqModel *self, gint batch, GError **error)
{
    g_return_val_if_fail (self != NULL, NULL);
    g_return_val_if_fail (batch > 0, NULL);
    g_autoptr (GPtrArray) sites = g_ptr_array_new_with_free_func ((GDestroyNotify) dfq_model_point_free);
    if (!dfq_model_probe (self, batch, NULL, sites, error))
        return NULL;
    return g_steal_pointer (&sites);
}
