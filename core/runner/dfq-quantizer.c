/* Quantizer glue (core/runner): site discovery by one recording forward (block
 * by block where the model declares blocks, so every site knows its block),
 * the hooks that route a forward's quantization sites to the quantizer
 * feature, modes, parameter groups and the regulariser. */
#include <string.h>

#include <dfq/dfq.h>
#include <dfq/dfq-custom-op.h>
#include <dfq/dfq-quantizer.h>

typedef struct {
    DfqSiteKind kind;
    char *name;
    DfqTensor *example;
    gint block; /* index into the model's blocks, or -1 */
} DfqQuantizerSite;

typedef struct {
    GArray *sites; /* DfqQuantizerSite */
    gint block;
} DfqQuantizerRecorder;

/* site -> block map, in the quantizer's arena (freed with it) */
typedef struct {
    guint n;
    const char **sites;
    const char **blocks;
} DfqSiteBlocks;

static void
dfq_quantizer_record (DfqQuantizerRecorder *rec, DfqSiteKind kind, const char *site, DfqTensor *x)
{
    DfqQuantizerSite s = { kind, g_strdup (site), x, rec->block };
    g_array_append_val (rec->sites, s);
}

static DfqTensor *
dfq_quantizer_record_weight (gpointer data, DfqForward *fwd, const char *site, DfqTensor *x)
{
    dfq_quantizer_record (data, DFQ_SITE_WEIGHT, site, x);
    return x;
}

static DfqTensor *
dfq_quantizer_record_act (gpointer data, DfqForward *fwd, const char *site, DfqTensor *x)
{
    dfq_quantizer_record (data, DFQ_SITE_ACT, site, x);
    return x;
}

static void
dfq_quantizer_site_clear (gpointer p)
{
    g_free (((DfqQuantizerSite *) p)->name);
}

static char *
dfq_quantizer_arena_strdup (DfqArena *arena, const char *s)
{
    gsize n = strlen (s) + 1;
    char *out = dfq_arena_alloc_uninit (arena, n);
    memcpy (out, s, n);
    return out;
}

/* One forward on zeros with recording hooks: block by block when the model
 * has blocks (the same sites in the same order as the whole forward; and a
 * block runs in @fwd's arena, where a whole no-grad forward may use arenas of
 * the model's own: DfqQuantizeFn). The recorded example tensors live in @scratch. */
static void
dfq_quantizer_discover (DfqModel *student, DfqArena *scratch, DfqQuantizerRecorder *rec)
{
    DfqTensor *x = dfq_tensor_new_4d (scratch, DFQ_DTYPE_F32, 2, student->in_channels, student->height, student->width);
    gboolean prev = dfq_set_grad_enabled (FALSE);
    DfqForward fwd;
    dfq_forward_init (&fwd, scratch, FALSE);
    fwd.quantize_weight = dfq_quantizer_record_weight;
    fwd.quantize_act = dfq_quantizer_record_act;
    fwd.quant_data = rec;
    const DfqModelClass *mk = (const DfqModelClass *) ((DfqFeature *) student)->klass;
    rec->block = -1;
    if (student->blocks != NULL && student->blocks->len > 0 && mk->forward_block != NULL) {
        for (guint b = 0; b < student->blocks->len; b++) {
            rec->block = (gint) b;
            x = dfq_model_forward_block (student, &fwd, b, x);
        }
        rec->block = -1;
    } else {
        dfq_model_forward (student, &fwd, x);
    }
    dfq_set_grad_enabled (prev);
}

static void
dfq_quantizer_keep_blocks (DfqQuantizer *self, DfqModel *student, GArray *sites)
{
    DfqSiteBlocks *sb = dfq_arena_alloc (self->arena, sizeof *sb);
    sb->n = sites->len;
    sb->sites = dfq_arena_alloc (self->arena, MAX (sites->len, 1) * sizeof (char *));
    sb->blocks = dfq_arena_alloc (self->arena, MAX (sites->len, 1) * sizeof (char *));
    for (guint i = 0; i < sites->len; i++) {
        DfqQuantizerSite *s = &g_array_index (sites, DfqQuantizerSite, i);
        sb->sites[i] = dfq_quantizer_arena_strdup (self->arena, s->name);
        sb->blocks[i] = s->block >= 0 ? dfq_quantizer_arena_strdup (self->arena, student->blocks->pdata[s->block]) : NULL;
    }
    self->site_blocks = sb;
}

gboolean
dfq_quantizer_attach (DfqQuantizer *self, DfqModel *student, GError **error)
{
    const DfqQuantizerClass *klass = DFQ_QUANTIZER_CLASS (self);
    g_return_val_if_fail (self->arena != NULL, FALSE); /* the plugin's init() creates it */
    /* freed after add_site(): the sites' example tensors live here */
    g_autoptr (DfqArena) scratch = dfq_arena_new (0);
    DfqQuantizerRecorder rec;
    rec.sites = g_array_new (FALSE, TRUE, sizeof (DfqQuantizerSite));
    g_array_set_clear_func (rec.sites, dfq_quantizer_site_clear);
    dfq_quantizer_discover (student, scratch, &rec);
    dfq_quantizer_keep_blocks (self, student, rec.sites);

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

const char *
dfq_quantizer_get_site_block (const DfqQuantizer *self, const char *site)
{
    const DfqSiteBlocks *sb = self->site_blocks;
    for (guint i = 0; sb != NULL && i < sb->n; i++)
        if (g_str_equal (sb->sites[i], site))
            return sb->blocks[i];
    return NULL;
}

void
dfq_quantizer_set_active_block (DfqQuantizer *self, const char *block)
{
    self->active_block = block != NULL ? g_intern_string (block) : NULL;
}

const char *
dfq_quantizer_get_active_block (const DfqQuantizer *self)
{
    return self->active_block;
}

gboolean
dfq_quantizer_site_active (const DfqQuantizer *self, const char *site)
{
    if (self->active_block == NULL)
        return TRUE;
    const char *block = dfq_quantizer_get_site_block (self, site);
    return block != NULL && g_str_equal (block, self->active_block);
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

/* ------------------------------------------------------------ modes */

void
dfq_quantizer_set_mode (DfqQuantizer *self, DfqQuantMode mode)
{
    DfqQuantMode old = self->mode;
    self->mode = mode;
    if (old != mode && DFQ_QUANTIZER_CLASS (self)->set_mode != NULL)
        DFQ_QUANTIZER_CLASS (self)->set_mode (self, old);
}

DfqQuantMode
dfq_quantizer_get_mode (const DfqQuantizer *self)
{
    return self->mode;
}

const char *
dfq_quant_mode_name (DfqQuantMode mode)
{
    static const char *const names[] = { "learn", "calibrate", "hard", "eval" };
    return (guint) mode < G_N_ELEMENTS (names) ? names[mode] : "unknown";
}

void
dfq_quantizer_set_calibrating (DfqQuantizer *self, gboolean on)
{
    dfq_quantizer_set_mode (self, on ? DFQ_QUANT_MODE_CALIBRATE : DFQ_QUANT_MODE_LEARN);
}

/* ------------------------------------------------------------ parameters */

static void
dfq_quant_param_group_clear (gpointer p)
{
    DfqQuantParamGroup *g = p;
    g_clear_pointer (&g->params, g_ptr_array_unref);
}

GArray *
dfq_quantizer_get_param_groups (DfqQuantizer *self)
{
    const DfqQuantizerClass *klass = DFQ_QUANTIZER_CLASS (self);
    GArray *groups = g_array_new (FALSE, TRUE, sizeof (DfqQuantParamGroup));
    g_array_set_clear_func (groups, dfq_quant_param_group_clear);
    if (klass->get_param_groups != NULL) {
        klass->get_param_groups (self, groups);
        return groups;
    }
    DfqQuantParamGroup g = { "params", g_ptr_array_new (), 0.0, -1.0 };
    if (klass->get_params != NULL)
        klass->get_params (self, g.params);
    if (g.params->len > 0)
        g_array_append_val (groups, g);
    else
        g_ptr_array_unref (g.params);
    return groups;
}

void
dfq_quant_param_groups_free (GArray *groups)
{
    if (groups != NULL)
        g_array_unref (groups);
}

DfqTensor *
dfq_quantizer_regularizer (DfqQuantizer *self, DfqArena *arena, double progress)
{
    const DfqQuantizerClass *klass = DFQ_QUANTIZER_CLASS (self);
    return klass->regularizer != NULL ? klass->regularizer (self, arena, progress) : NULL;
}

/* ------------------------------------------------------------ QDrop */

/* Sources: x_q, x, u (the draws); op_fparams[0] = p. */
static void
dfq_qdrop_forward (DfqTensor *dst, DfqCustomOpCall *call)
{
    const float *xq = dfq_tensor_f32 (dst->src[0]), *x = dfq_tensor_f32 (dst->src[1]);
    const float *u = dfq_tensor_f32 (dst->src[2]);
    const float p = dst->op_fparams[0];
    float *y = dfq_tensor_f32 (dst);
    gint64 n = dfq_tensor_numel (dst);
    for (gint64 i = 0; i < n; i++)
        y[i] = u[i] < p ? x[i] : xq[i];
}

static void
dfq_qdrop_backward (DfqTensor *dst, DfqCustomOpCall *call, float *const *src_grads, DfqArena *scratch)
{
    const float *u = dfq_tensor_f32 (dst->src[2]);
    const float *gy = dfq_tensor_f32 (dst->grad);
    const float p = dst->op_fparams[0];
    gint64 n = dfq_tensor_numel (dst);
    for (gint64 i = 0; i < n; i++) {
        float *g = src_grads[u[i] < p ? 1 : 0];
        if (g != NULL)
            g[i] += gy[i];
    }
}

static const DfqCustomOp dfq_qdrop_op = {
    .name = "core.qdrop-mix",
    .forward = dfq_qdrop_forward,
    .backward = dfq_qdrop_backward,
};

DfqTensor *
dfq_qdrop_mix (DfqArena *arena, DfqTensor *x_q, DfqTensor *x, double p, guint64 seed, guint64 stream)
{
    g_return_val_if_fail (x_q != NULL && x != NULL && dfq_tensor_same_shape (x_q, x), NULL);
    g_return_val_if_fail (x_q->dtype == DFQ_DTYPE_F32 && x->dtype == DFQ_DTYPE_F32, NULL);
    g_return_val_if_fail (dfq_tensor_is_contiguous (x_q) && dfq_tensor_is_contiguous (x), NULL);
    DfqTensor *u = dfq_tensor_new_like (arena, x);
    /* p = 0 and p = 1 need no draws: u = 0.5 gives the same choices */
    if (p > 0.0 && p < 1.0)
        dfq_rand_uniform_fill (u, seed, stream, 0.0f, 1.0f);
    else
        dfq_tensor_fill (u, 0.5f);
    DfqTensor *srcs[3] = { x_q, x, u };
    float fp = (float) p;
    return dfq_custom_op (arena, &dfq_qdrop_op, x->n_dims, x->shape, 3, srcs, 1, &fp, NULL);
}
