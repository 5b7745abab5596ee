/* Transform plugin `swing-conv`: swing convolution (GENIE, Jeon, Lee, Kim,
 * CVPR 2023; METHODS.md 10; official code: SamsungLabs/Genie distill.py,
 * SwingConv2d). Every conv of stride != 1 sees its input reflect-padded by
 * `pad` on all sides and cropped back to H x W at a random offset (dx, dy) in
 * {0..2 pad}^2, one offset for the whole batch, drawn anew for every forward:
 * the strided conv then samples the image on a randomly shifted grid, which
 * keeps synthetic images from over-fitting the stride's aliasing. Offset
 * (pad, pad) is the plain input. The offsets come from the run's counter RNG,
 * keyed by (seed, the transform's stream, the conv's name, the forward's
 * step): the same seed and step draw the same offsets (docs/methods/swing-conv.md). */
#include <string.h>

#include <dfq/dfq.h>

typedef struct {
    DfqTransform parent;
    /* params */
    gint pad;
    DfqNumberList offset; /* [] (random) or [dx, dy] */
} SwingConv;

static gboolean
swing_conv_offset_check (const DfqParamSpec *spec, gconstpointer value, GError **error)
{
    const DfqNumberList *l = value;
    if (l->n != 0 && l->n != 2) {
        g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                     "offset: give [] (random) or two numbers [dx, dy], not %u", l->n);
        return FALSE;
    }
    return TRUE;
}

static const DfqParamSpec swing_conv_params[] = {
    DFQ_PARAM_INT (SwingConv, pad, "Reflection padding on each side; offsets are drawn in {0..2 pad}^2 (GENIE: 1)",
                   1, 64, 1),
    DFQ_PARAM_INT_LIST (SwingConv, offset,
                        "A fixed offset [dx, dy] in {0..2 pad} (tests, ablations; [pad, pad] = no swing); "
                        "[] = a random offset every forward",
                        0, 128, "[]", .flags = DFQ_PARAM_FLAG_OMIT_DEFAULT, .check = swing_conv_offset_check),
};

/* Stream id of a conv from its name (FNV-1a): each conv draws its own offset,
 * as each SwingConv2d module of the official code does. */
static guint64
swing_conv_name_hash (const char *name)
{
    guint64 h = G_GUINT64_CONSTANT (1469598103934665603);
    for (const char *p = name; *p; p++)
        h = (h ^ (guint8) *p) * G_GUINT64_CONSTANT (1099511628211);
    return h;
}

static gboolean
swing_conv_applies (DfqTransform *transform, const char *conv, int stride)
{
    return stride != 1;
}

static void
swing_conv_draw (SwingConv *self, DfqForward *fwd, const char *conv, int *dx, int *dy)
{
    if (self->offset.n == 2) {
        *dx = (int) self->offset.v[0];
        *dy = (int) self->offset.v[1];
        return;
    }
    guint32 r[4];
    dfq_rand_philox (fwd->seed, self->parent.stream ^ swing_conv_name_hash (conv), fwd->step, r);
    const guint32 n = 2 * (guint32) self->pad + 1;
    *dx = (int) (r[0] % n);
    *dy = (int) (r[1] % n);
}

static DfqTensor *
swing_conv_input (DfqTransform *transform, DfqForward *fwd, const char *conv, int stride, DfqTensor *x,
                  GError **error)
{
    SwingConv *self = (SwingConv *) transform;
    if (x->n_dims != 4) {
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE, "swing-conv: input of conv '%s' is not [N,C,H,W]",
                     conv);
        return NULL;
    }
    const gint64 h = x->shape[2], w = x->shape[3];
    if (2 * (gint64) self->pad >= h || 2 * (gint64) self->pad >= w) {
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE,
                     "swing-conv: pad %d needs a conv input larger than %d x %d (less than half the image), but "
                     "the input of conv '%s' is %" G_GINT64_FORMAT " x %" G_GINT64_FORMAT,
                     self->pad, 2 * self->pad, 2 * self->pad, conv, h, w);
        return NULL;
    }
    int dx, dy;
    swing_conv_draw (self, fwd, conv, &dx, &dy);
    DfqTensor *padded = dfq_reflect_pad (fwd->arena, x, self->pad);
    return dfq_crop (fwd->arena, padded, dy, dx, (int) h, (int) w);
}

static gboolean
swing_conv_init (DfqFeature *feature, GError **error)
{
    SwingConv *self = (SwingConv *) feature;
    for (guint i = 0; i < self->offset.n; i++)
        if (self->offset.v[i] > 2 * self->pad) {
            g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                         "offset: %g is outside {0..2 pad} = {0..%d}", self->offset.v[i], 2 * self->pad);
            return FALSE;
        }
    return TRUE;
}

static const DfqTransformClass swing_conv_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_TRANSFORM, "swing-conv",
                                           "Swing convolution (GENIE): strided convs see their input reflect-padded "
                                           "and cropped back at a random offset",
                                           SwingConv, swing_conv_params, swing_conv_init, NULL),
    .applies = swing_conv_applies,
    .conv_input = swing_conv_input,
};

static gboolean
swing_conv_register (DfqRegistry *registry, GError **error)
{
    return dfq_registry_add_feature (registry, &swing_conv_class.parent, error);
}

DFQ_PLUGIN_DEFINE (swing-conv, "Swing convolution: a layer transform of GENIE-D (Jeon et al., CVPR 2023)",
                   swing_conv_register)
