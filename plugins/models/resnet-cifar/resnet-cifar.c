/* Model plugin: ResNet-20/32/56 in the CIFAR layout (He et al. 2016; pytorchcv
 * resnet_cifar, METHODS.md 1.1) with the PyTorch parameter names of
 * shared/fixtures/README.md: conv, bn, layers.N.{conv1,bn1,conv2,bn2,down.0,down.1}, fc. */
#include <dfq/dfq.h>
#include <dfq/dfq-model.h>

typedef struct {
    DfqModel parent;
    gint depth;
    gint width;
    gint image_size;
    gint init_seed;
    /* derived */
    gint n_units;   /* residual units per stage */
    gint n_blocks;  /* 3 * n_units */
} ResnetCifar;

static const DfqParamSpec resnet_cifar_params[] = {
    DFQ_PARAM_INT (ResnetCifar, depth, "Depth 6n+2: 20, 32, 44, 56, 110", 8, 1202, 20),
    DFQ_PARAM_INT (DfqModel, in_channels, "Input channels (1 for Fashion-MNIST, 3 for CIFAR)", 1, 64, 3),
    DFQ_PARAM_INT (DfqModel, classes, "Number of classes", 2, 100000, 10),
    DFQ_PARAM_INT (ResnetCifar, width, "Channels of the first stage (16 in the paper); stages use w, 2w, 4w", 1, 1024, 16),
    DFQ_PARAM_INT (ResnetCifar, image_size, "Input height and width (28 for Fashion-MNIST, 32 for CIFAR)", 8, 1024, 32),
    DFQ_PARAM_INT (ResnetCifar, init_seed, "Seed of the random initialisation (training from scratch)", 0, G_MAXINT, 0),
};

static gboolean
resnet_cifar_build (DfqModel *model, GError **error)
{
    ResnetCifar *self = (ResnetCifar *) model;
    if ((self->depth - 2) % 6 != 0) {
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE,
                     "resnet-cifar: depth %d is not 6n+2 (20, 32, 44, 56, 110)", self->depth);
        return FALSE;
    }
    self->n_units = (self->depth - 2) / 6;
    self->n_blocks = 3 * self->n_units;
    model->height = model->width = self->image_size;
    guint64 seed = (guint64) self->init_seed;
    int w = self->width;

    dfq_model_add_block (model, "conv");
    dfq_model_add_conv (model, "conv", model->in_channels, w, 3, 1, FALSE, seed);
    dfq_model_add_bn (model, "bn", w, TRUE);
    int cin = w;
    for (int b = 0; b < self->n_blocks; b++) {
        int stage = b / self->n_units;
        int cout = w << stage;
        int stride = (b % self->n_units == 0 && stage > 0) ? 2 : 1;
        char name[64];
        g_snprintf (name, sizeof name, "layers.%d", b);
        dfq_model_add_block (model, name);
        g_snprintf (name, sizeof name, "layers.%d.conv1", b);
        dfq_model_add_conv (model, name, cin, cout, 3, 1, FALSE, seed);
        g_snprintf (name, sizeof name, "layers.%d.bn1", b);
        dfq_model_add_bn (model, name, cout, TRUE);
        g_snprintf (name, sizeof name, "layers.%d.conv2", b);
        dfq_model_add_conv (model, name, cout, cout, 3, 1, FALSE, seed);
        g_snprintf (name, sizeof name, "layers.%d.bn2", b);
        dfq_model_add_bn (model, name, cout, TRUE);
        if (stride != 1 || cin != cout) {
            g_snprintf (name, sizeof name, "layers.%d.down.0", b);
            dfq_model_add_conv (model, name, cin, cout, 1, 1, FALSE, seed);
            g_snprintf (name, sizeof name, "layers.%d.down.1", b);
            dfq_model_add_bn (model, name, cout, TRUE);
        }
        cin = cout;
    }
    dfq_model_add_block (model, "fc");
    dfq_model_add_linear (model, "fc", cin, model->classes, TRUE, seed);
    return TRUE;
}

#define RESNET_BN_EPS 1e-5f
#define RESNET_BN_MOMENTUM 0.1f

/* conv-bn(-add)(-relu) through dfq_layer_conv_bn, which fuses them in eval mode. */
static void
resnet_cifar_conv_bn_layer (DfqLayerConvBn *layer, const char *conv, const char *bn, int stride,
                            const char *act_site, DfqTensor *residual, const char *body_tap)
{
    *layer = (DfqLayerConvBn) {
        .conv = conv,
        .stride = stride,
        .padding = 1,
        .bn = bn,
        .bn_eps = RESNET_BN_EPS,
        .bn_momentum = RESNET_BN_MOMENTUM,
        .residual = residual,
        .body_tap = body_tap,
        .act_site = act_site,
        .act = DFQ_ACT_RELU,
    };
}

static DfqTensor *
resnet_cifar_stem (DfqModel *model, DfqForward *fwd, DfqTensor *x)
{
    DfqLayerConvBn layer;
    resnet_cifar_conv_bn_layer (&layer, "conv", "bn", 1, "relu", NULL, NULL);
    return dfq_layer_conv_bn (model, fwd, &layer, x);
}

/* The downsampling shortcut: 1x1 conv (stride @stride) and BN. */
static DfqTensor *
resnet_cifar_down (DfqModel *model, DfqForward *fwd, int b, int stride, DfqTensor *x)
{
    char n[64];
    g_snprintf (n, sizeof n, "layers.%d.down.0", b);
    DfqTensor *shortcut = dfq_layer_conv (model, fwd, n, x, stride, 0, 1);
    g_snprintf (n, sizeof n, "layers.%d.down.1", b);
    return dfq_layer_bn (model, fwd, n, shortcut, RESNET_BN_EPS, RESNET_BN_MOMENTUM);
}

/* Whether the downsampling shortcut needs no gradient (nor builds a graph). */
static gboolean
resnet_cifar_down_no_grad (DfqModel *model, int b, DfqTensor *x)
{
    static const char *const suffix[] = { "down.0.weight", "down.0.bias", "down.1.weight", "down.1.bias" };
    if (!dfq_grad_enabled ())
        return TRUE;
    if (dfq_tensor_requires_grad (x))
        return FALSE;
    for (guint i = 0; i < G_N_ELEMENTS (suffix); i++) {
        char n[64];
        g_snprintf (n, sizeof n, "layers.%d.%s", b, suffix[i]);
        DfqTensor *t = dfq_model_get (model, n);
        if (t != NULL && dfq_tensor_requires_grad (t))
            return FALSE;
    }
    return TRUE;
}

/* One residual unit: body = conv-bn-relu-conv-bn; out = relu(body + shortcut).
 * The add and the last ReLU go with conv2 (fused in eval mode). A
 * downsampling shortcut is computed after the body (hooks and taps see the
 * layers in this order), or before conv2 where conv2 fuses with it. */
static DfqTensor *
resnet_cifar_unit (ResnetCifar *self, DfqForward *fwd, int b, DfqTensor *x)
{
    DfqModel *model = (DfqModel *) self;
    int stage = b / self->n_units;
    int stride = (b % self->n_units == 0 && stage > 0) ? 2 : 1;
    char c1[64], b1[64], r1[64], c2[64], b2[64], r2[64], body[64], n[64];
    g_snprintf (c1, sizeof c1, "layers.%d.conv1", b);
    g_snprintf (b1, sizeof b1, "layers.%d.bn1", b);
    g_snprintf (r1, sizeof r1, "layers.%d.relu1", b);
    g_snprintf (c2, sizeof c2, "layers.%d.conv2", b);
    g_snprintf (b2, sizeof b2, "layers.%d.bn2", b);
    g_snprintf (r2, sizeof r2, "layers.%d.relu2", b);
    g_snprintf (body, sizeof body, "layers.%d:body", b);
    DfqLayerConvBn layer;
    resnet_cifar_conv_bn_layer (&layer, c1, b1, stride, r1, NULL, NULL);
    DfqTensor *y = dfq_layer_conv_bn (model, fwd, &layer, x);
    g_snprintf (n, sizeof n, "layers.%d.down.0.weight", b);
    if (dfq_model_get (model, n) == NULL) {
        resnet_cifar_conv_bn_layer (&layer, c2, b2, 1, r2, x, body);
        y = dfq_layer_conv_bn (model, fwd, &layer, y);
    } else {
        resnet_cifar_conv_bn_layer (&layer, c2, b2, 1, r2, NULL, body);
        if (resnet_cifar_down_no_grad (model, b, x) && dfq_layer_conv_bn_fuses (model, fwd, &layer, y)) {
            layer.residual = resnet_cifar_down (model, fwd, b, stride, x);
            y = dfq_layer_conv_bn (model, fwd, &layer, y);
        } else {
            layer.act_site = NULL;
            y = dfq_layer_conv_bn (model, fwd, &layer, y);
            y = dfq_add (fwd->arena, y, resnet_cifar_down (model, fwd, b, stride, x));
            y = dfq_layer_act (model, fwd, r2, y, DFQ_ACT_RELU);
        }
    }
    if (fwd->n_tap_sets > 0) {
        g_snprintf (n, sizeof n, "layers.%d:out", b);
        dfq_layer_tap (fwd, n, DFQ_TAP_BLOCK, y, NULL, NULL);
    }
    return y;
}

static DfqTensor *
resnet_cifar_head (DfqModel *model, DfqForward *fwd, DfqTensor *x)
{
    DfqTensor *f = dfq_global_avg_pool (fwd->arena, x);
    if (fwd->n_tap_sets > 0)
        dfq_layer_tap (fwd, "feature", DFQ_TAP_FEATURE, f, NULL, NULL);
    return dfq_layer_linear (model, fwd, "fc", f);
}

static DfqTensor *
resnet_cifar_forward (DfqModel *model, DfqForward *fwd, DfqTensor *x)
{
    ResnetCifar *self = (ResnetCifar *) model;
    x = resnet_cifar_stem (model, fwd, x);
    for (int b = 0; b < self->n_blocks; b++)
        x = resnet_cifar_unit (self, fwd, b, x);
    return resnet_cifar_head (model, fwd, x);
}

static DfqTensor *
resnet_cifar_forward_block (DfqModel *model, DfqForward *fwd, guint index, DfqTensor *x)
{
    ResnetCifar *self = (ResnetCifar *) model;
    if (index == 0)
        return resnet_cifar_stem (model, fwd, x);
    if (index <= (guint) self->n_blocks)
        return resnet_cifar_unit (self, fwd, (int) index - 1, x);
    return resnet_cifar_head (model, fwd, x);
}

static const DfqModelClass resnet_cifar_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_MODEL, "resnet-cifar",
                                           "ResNet-20/32/56 for 28x28/32x32 inputs (CIFAR layout, PyTorch names)",
                                           ResnetCifar, resnet_cifar_params, dfq_model_setup, dfq_model_teardown),
    .build = resnet_cifar_build,
    .forward = resnet_cifar_forward,
    .forward_block = resnet_cifar_forward_block,
};

static gboolean
resnet_cifar_register (DfqRegistry *registry, GError **error)
{
    return dfq_registry_add_feature (registry, &resnet_cifar_class.parent, error);
}

DFQ_PLUGIN_DEFINE (resnet-cifar, "ResNet for CIFAR-sized inputs", resnet_cifar_register)
