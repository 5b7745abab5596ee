/* Quantizer glue (core/runner): site discovery by one recording forward, and the
 * hooks that route a forward's quantization sites to the quantizer feature. */
#include <string.h>

#include <dfq/dfq.h>
#include <dfq/dfq-quantizer.h>

typedef struct {
    DfqSiteKind kind;
    char *name;
    DfqTensor *example;
} DfqQuantizerSite;

typedef struct {
    GArray *sites; /* DfqQuantizerSite */
} DfqQuantizerRecorder;

static DfqTensor *
dfq_quantizer_record_weight (gpointer data, DfqForward *fwd, const char *site, DfqTensor *x)
{
    DfqQuantizerRecorder *rec = data;
    DfqQuantizerSite s = { DFQ_SITE_WEIGHT, g_strdup (site), x };
    g_array_append_val (rec->sites, s);
    return x;
}

static DfqTensor *
dfq_quantizer_record_act (gpointer data, DfqForward *fwd, const char *site, DfqTensor *x)
{
    DfqQuantizerRecorder *rec = data;
    DfqQuantizerSite s = { DFQ_SITE_ACT, g_strdup (site), x };
    g_array_append_val (rec->sites, s);
    return x;
}

static void
dfq_quantizer_site_clear (gpointer p)
{
    g_free (((DfqQuantizerSite *) p)->name);
}

gboolean
dfq_quantizer_attach (DfqQuantizer *self, DfqModel *student, GError **error)
{
    const DfqQuantizerClass *klass = DFQ_QUANTIZER_CLASS (self);
    g_return_val_if_fail (self->arena != NULL, FALSE); /* the plugin's init() creates it */
    g_autoptr (DfqArena) scratch = dfq_arena_new (0);
    DfqQuantizerRecorder rec;
    rec.sites = g_array_new (FALSE, TRUE, sizeof (DfqQuantizerSite));
    g_array_set_clear_func (rec.sites, dfq_quantizer_site_clear);

    DfqTensor *x = dfq_tensor_new_4d (scratch, DFQ_DTYPE_F32, 2, student->in_channels, student->height, student->width);
    gboolean prev = dfq_set_grad_enabled (FALSE);
    DfqForward fwd;
    dfq_forward_init (&fwd, scratch, FALSE);
    fwd.quantize_weight = dfq_quantizer_record_weight;
    fwd.quantize_act = dfq_quantizer_record_act;
    fwd.quant_data = &rec;
    dfq_model_forward (student, &fwd, x);
    dfq_set_grad_enabled (prev);

    gint first = -1, last = -1;
    for (guint i = 0; i < rec.sites->len; i++)
        if (g_array_index (rec.sites, DfqQuantizerSite, i).kind == DFQ_SITE_WEIGHT) {
            if (first < 0)
                first = (gint) i;
            last = (gint) i;
        }
    guint n_w = 0, n_a = 0;
    gboolean ok = TRUE;
    for (guint i = 0; i < rec.sites->len && ok; i++) {
        DfqQuantizerSite *s = &g_array_index (rec.sites, DfqQuantizerSite, i);
        guint index = s->kind == DFQ_SITE_WEIGHT ? n_w++ : n_a++;
        ok = klass->add_site (self, s->kind, s->name, s->example, index, (gint) i == first, (gint) i == last, error);
        if (!ok)
            g_prefix_error (error, "quantizer '%s', site '%s': ", ((DfqFeature *) self)->klass->name, s->name);
    }
    g_array_unref (rec.sites);
    return ok;
}

static DfqTensor *
dfq_quantizer_hook_weight (gpointer data, DfqForward *fwd, const char *site, DfqTensor *w)
{
    DfqQuantizer *self = data;
    return DFQ_QUANTIZER_CLASS (self)->quantize_weight (self, fwd, site, w);
}

static DfqTensor *
dfq_quantizer_hook_act (gpointer data, DfqForward *fwd, const char *site, DfqTensor *x)
{
    DfqQuantizer *self = data;
    return DFQ_QUANTIZER_CLASS (self)->quantize_act (self, fwd, site, x);
}

void
dfq_quantizer_hook (DfqQuantizer *self, DfqForward *fwd)
{
    fwd->quantize_weight = dfq_quantizer_hook_weight;
    fwd->quantize_act = dfq_quantizer_hook_act;
    fwd->quant_data = self;
}

void
dfq_quantizer_set_calibrating (DfqQuantizer *self, gboolean on)
{
    self->calibrating = on;
}
