/* Model plugin: MobileNetV2 for CIFAR-sized inputs, variant (a) of METHODS.md 1.2
 * (chenyaofo/pytorch-cifar-models, torchvision-derived): stem stride 1, second
 * stage stride 1, ReLU6, dropout before the classifier. Parameter names follow
 * torchvision: features.0.{0,1} stem; features.N.conv.* inverted residuals
 * (t != 1: conv.0.{0,1} expand, conv.1.{0,1} depthwise, conv.2 project, conv.3 BN;
 * t == 1: conv.0.{0,1} depthwise, conv.1 project, conv.2 BN); features.L.{0,1}
 * head 1x1 conv; classifier.1 the linear layer.
 *
 * Activation quantization sites: after every ReLU6 ("<prefix>.2", the default),
 * and with act_sites: conv_inputs also the output of every inverted residual
 * block, "features.N.out" (the signed linear-bottleneck output, or the residual
 * sum where the block has a shortcut), so that the input of every conv is a
 * quantized tensor (the stem conv's input, the image, stays in full precision).
 * Opt-in: the default adds no site, so quantizers and existing pipelines see
 * the same sites as before. */
#include <dfq/dfq.h>
#include <dfq/dfq-model.h>

#define MV2_MAX_BLOCKS 32

typedef enum {
    MV2_SITES_RELU6,       /* after every ReLU6 */
    MV2_SITES_CONV_INPUTS, /* also every block output (bottleneck output / residual sum) */
} Mv2Sites;

static const char *const mv2_sites_names[] = { "relu6", "conv_inputs", NULL };

typedef struct {
    int expand; /* t */
    int cin, hidden, cout, stride;
    gboolean residual;
} Mv2Block;

typedef struct {
    DfqModel parent;
    gdouble width_mult;
    gint image_size;
    gdouble dropout;
    gint init_seed;
    gint act_sites; /* Mv2Sites */
    Mv2Block blocks[MV2_MAX_BLOCKS];
    int n_blocks;
    int stem_channels, head_in, head_channels;
    DfqArena *eval_arena[2]; /* no-grad evaluation: blocks alternate between these */
} Mv2;

static const DfqParamSpec mv2_params[] = {
    DFQ_PARAM_INT (DfqModel, in_channels, "Input channels", 1, 64, 3),
    DFQ_PARAM_INT (DfqModel, classes, "Number of classes", 2, 100000, 10),
    DFQ_PARAM_DOUBLE (Mv2, width_mult, "Width multiplier (channels rounded to multiples of 8)", 0.05, 4.0, 1.0),
    DFQ_PARAM_INT (Mv2, image_size, "Input height and width", 8, 1024, 32),
    DFQ_PARAM_DOUBLE (Mv2, dropout, "Dropout probability before the classifier (training only)", 0.0, 0.99, 0.2),
    DFQ_PARAM_INT (Mv2, init_seed, "Seed of the random initialisation", 0, G_MAXINT, 0),
    DFQ_PARAM_ENUM (Mv2, act_sites,
                    "Activation quantization sites: relu6 (after every ReLU6) or conv_inputs (also every block "
                    "output 'features.N.out', the signed linear-bottleneck output or residual sum, so every conv "
                    "but the stem reads a quantized tensor)",
                    mv2_sites_names, "relu6", .flags = DFQ_PARAM_FLAG_OMIT_DEFAULT),
};

/* torchvision's _make_divisible */
static int
mv2_divisible (double v, int divisor)
{
    int new_v = MAX (divisor, (int) (v + divisor / 2.0) / divisor * divisor);
    if (new_v < 0.9 * v)
        new_v += divisor;
    return new_v;
}

static const int mv2_setting[7][4] = {
    { 1, 16, 1, 1 }, { 6, 24, 2, 1 }, { 6, 32, 3, 2 }, { 6, 64, 4, 2 },
    { 6, 96, 3, 1 }, { 6, 160, 3, 2 }, { 6, 320, 1, 1 },
};

static gboolean
mv2_build (DfqModel *model, GError **error)
{
    Mv2 *self = (Mv2 *) model;
    guint64 seed = (guint64) self->init_seed;
    model->height = model->width = self->image_size;
    self->stem_channels = mv2_divisible (32 * self->width_mult, 8);
    self->head_channels = mv2_divisible (1280 * MAX (1.0, self->width_mult), 8);
    char n[64];
    dfq_model_add_block (model, "features.0");
    dfq_model_add_conv (model, "features.0.0", model->in_channels, self->stem_channels, 3, 1, FALSE, seed);
    dfq_model_add_bn (model, "features.0.1", self->stem_channels, TRUE);
    int cin = self->stem_channels;
    self->n_blocks = 0;
    for (int s = 0; s < 7; s++) {
        int t = mv2_setting[s][0], c = mv2_divisible (mv2_setting[s][1] * self->width_mult, 8);
        for (int i = 0; i < mv2_setting[s][2]; i++) {
            Mv2Block *b = &self->blocks[self->n_blocks];
            int idx = self->n_blocks + 1;
            b->expand = t;
            b->cin = cin;
            b->hidden = cin * t;
            b->cout = c;
            b->stride = i == 0 ? mv2_setting[s][3] : 1;
            b->residual = b->stride == 1 && cin == c;
            g_snprintf (n, sizeof n, "features.%d", idx);
            dfq_model_add_block (model, n);
            int li = 0;
            if (t != 1) {
                g_snprintf (n, sizeof n, "features.%d.conv.%d.0", idx, li);
                dfq_model_add_conv (model, n, cin, b->hidden, 1, 1, FALSE, seed);
                g_snprintf (n, sizeof n, "features.%d.conv.%d.1", idx, li);
                dfq_model_add_bn (model, n, b->hidden, TRUE);
                li++;
            }
            g_snprintf (n, sizeof n, "features.%d.conv.%d.0", idx, li);
            dfq_model_add_conv (model, n, b->hidden, b->hidden, 3, b->hidden, FALSE, seed);
            g_snprintf (n, sizeof n, "features.%d.conv.%d.1", idx, li);
            dfq_model_add_bn (model, n, b->hidden, TRUE);
            li++;
            g_snprintf (n, sizeof n, "features.%d.conv.%d", idx, li);
            dfq_model_add_conv (model, n, b->hidden, c, 1, 1, FALSE, seed);
            g_snprintf (n, sizeof n, "features.%d.conv.%d", idx, li + 1);
            dfq_model_add_bn (model, n, c, TRUE);
            cin = c;
            self->n_blocks++;
            if (self->n_blocks >= MV2_MAX_BLOCKS - 1) {
                g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE, "mobilenetv2-cifar: too many blocks");
                return FALSE;
            }
        }
    }
    self->head_in = cin;
    g_snprintf (n, sizeof n, "features.%d", self->n_blocks + 1);
    dfq_model_add_block (model, n);
    g_snprintf (n, sizeof n, "features.%d.0", self->n_blocks + 1);
    dfq_model_add_conv (model, n, cin, self->head_channels, 1, 1, FALSE, seed);
    g_snprintf (n, sizeof n, "features.%d.1", self->n_blocks + 1);
    dfq_model_add_bn (model, n, self->head_channels, TRUE);
    dfq_model_add_block (model, "classifier");
    dfq_model_add_linear (model, "classifier.1", self->head_channels, model->classes, TRUE, seed);
    return TRUE;
}

#define MV2_EPS 1e-5f
#define MV2_MOMENTUM 0.1f

/* conv "<prefix>.0" -> BN "<prefix>.1" -> ReLU6 (site "<prefix>.2") through
 * dfq_layer_conv_bn, which fuses the three in eval mode. */
static DfqTensor *
mv2_conv_bn (DfqModel *model, DfqForward *fwd, const char *prefix, DfqTensor *x, int stride, int padding,
             int groups)
{
    char conv[64], bn[64], site[72];
    g_snprintf (conv, sizeof conv, "%s.0", prefix);
    g_snprintf (bn, sizeof bn, "%s.1", prefix);
    g_snprintf (site, sizeof site, "%s.2", prefix);
    const DfqLayerConvBn layer = {
        .conv = conv, .stride = stride, .padding = padding, .groups = groups,
        .bn = bn, .bn_eps = MV2_EPS, .bn_momentum = MV2_MOMENTUM,
        .act_site = site, .act = DFQ_ACT_RELU6,
    };
    return dfq_layer_conv_bn (model, fwd, &layer, x);
}

static DfqTensor *
mv2_block (Mv2 *self, DfqForward *fwd, int i, DfqTensor *x)
{
    DfqModel *model = (DfqModel *) self;
    const Mv2Block *b = &self->blocks[i];
    int idx = i + 1, li = 0;
    char n[64], bn[64], body[64];
    DfqTensor *y = x;
    if (b->expand != 1) {
        g_snprintf (n, sizeof n, "features.%d.conv.%d", idx, li++);
        y = mv2_conv_bn (model, fwd, n, y, 1, 0, 1);
    }
    g_snprintf (n, sizeof n, "features.%d.conv.%d", idx, li++);
    y = mv2_conv_bn (model, fwd, n, y, b->stride, 1, b->hidden);
    /* projection: conv -> BN (body tap) -> + x, no activation */
    g_snprintf (n, sizeof n, "features.%d.conv.%d", idx, li);
    g_snprintf (bn, sizeof bn, "features.%d.conv.%d", idx, li + 1);
    g_snprintf (body, sizeof body, "features.%d:body", idx);
    const DfqLayerConvBn proj = {
        .conv = n, .stride = 1, .padding = 0, .groups = 1,
        .bn = bn, .bn_eps = MV2_EPS, .bn_momentum = MV2_MOMENTUM,
        .residual = b->residual ? x : NULL, .body_tap = body,
    };
    y = dfq_layer_conv_bn (model, fwd, &proj, y);
    if (self->act_sites == MV2_SITES_CONV_INPUTS) {
        g_snprintf (n, sizeof n, "features.%d.out", idx);
        y = dfq_layer_act_site (model, fwd, n, y);
    }
    if (fwd->n_tap_sets > 0) {
        g_snprintf (n, sizeof n, "features.%d:out", idx);
        dfq_layer_tap (fwd, n, DFQ_TAP_BLOCK, y, NULL, NULL);
    }
    return y;
}

static DfqTensor *
mv2_head (Mv2 *self, DfqForward *fwd, DfqTensor *x)
{
    DfqModel *model = (DfqModel *) self;
    char n[64];
    g_snprintf (n, sizeof n, "features.%d", self->n_blocks + 1);
    x = mv2_conv_bn (model, fwd, n, x, 1, 0, 1);
    return x;
}

static DfqTensor *
mv2_classifier (Mv2 *self, DfqForward *fwd, DfqTensor *x)
{
    DfqModel *model = (DfqModel *) self;
    DfqTensor *f = dfq_global_avg_pool (fwd->arena, x);
    if (fwd->n_tap_sets > 0)
        dfq_layer_tap (fwd, "feature", DFQ_TAP_FEATURE, f, NULL, NULL);
    if (fwd->training && self->dropout > 0.0)
        f = dfq_dropout (fwd->arena, f, (float) self->dropout, fwd->seed, 0x6d763264ull + fwd->step);
    return dfq_layer_linear (model, fwd, "classifier.1", f);
}

/* Whether a forward may run its blocks in the model's two eval arenas: eval
 * mode, no graph, nothing looking at intermediate tensors (taps) and no conv
 * input hook. Quantization hooks are allowed (a quantized student's
 * evaluation and calibration): what they return is used by the forward only
 * (the DfqQuantizeFn contract, dfq-model.h). */
static gboolean
mv2_blockwise (DfqForward *fwd)
{
    return !fwd->training && !dfq_grad_enabled () && fwd->n_tap_sets == 0 && fwd->conv_input == NULL;
}

static DfqTensor *
mv2_forward (DfqModel *model, DfqForward *fwd, DfqTensor *x)
{
    Mv2 *self = (Mv2 *) model;
    if (!mv2_blockwise (fwd)) {
        x = mv2_conv_bn (model, fwd, "features.0", x, 1, 1, 1);
        for (int i = 0; i < self->n_blocks; i++)
            x = mv2_block (self, fwd, i, x);
        x = mv2_head (self, fwd, x);
        return mv2_classifier (self, fwd, x);
    }
    /* Evaluation memory that does not grow with depth: block k runs in arena
     * k % 2, reset first. What it frees is block k - 2's, whose only reader,
     * block k - 1, has run; block k reads block k - 1's output from the other
     * arena. The same ops in the same order: the same bits. The classifier
     * runs in the caller's arena, where the logits must stay. */
    DfqArena *step_arena = fwd->arena;
    for (int k = 0; k < 2; k++)
        if (self->eval_arena[k] == NULL)
            self->eval_arena[k] = dfq_arena_new (0);
    for (int k = 0; k <= self->n_blocks + 1; k++) {
        DfqArena *a = self->eval_arena[k % 2];
        dfq_arena_reset (a);
        fwd->arena = a;
        if (k == 0)
            x = mv2_conv_bn (model, fwd, "features.0", x, 1, 1, 1);
        else if (k <= self->n_blocks)
            x = mv2_block (self, fwd, k - 1, x);
        else
            x = mv2_head (self, fwd, x);
    }
    fwd->arena = step_arena;
    return mv2_classifier (self, fwd, x);
}

static void
mv2_teardown (DfqFeature *feature)
{
    Mv2 *self = (Mv2 *) feature;
    for (int k = 0; k < 2; k++)
        g_clear_pointer (&self->eval_arena[k], dfq_arena_free);
    dfq_model_teardown (feature);
}

static DfqTensor *
mv2_forward_block (DfqModel *model, DfqForward *fwd, guint index, DfqTensor *x)
{
    Mv2 *self = (Mv2 *) model;
    if (index == 0)
        return mv2_conv_bn (model, fwd, "features.0", x, 1, 1, 1);
    if (index <= (guint) self->n_blocks)
        return mv2_block (self, fwd, (int) index - 1, x);
    if (index == (guint) self->n_blocks + 1)
        return mv2_head (self, fwd, x);
    return mv2_classifier (self, fwd, x);
}

static const DfqModelClass mv2_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_MODEL, "mobilenetv2-cifar",
                                           "MobileNetV2 for 32x32 inputs (chenyaofo variant, torchvision names)",
                                           Mv2, mv2_params, dfq_model_setup, mv2_teardown),
    .build = mv2_build,
    .forward = mv2_forward,
    .forward_block = mv2_forward_block,
};

static gboolean
mv2_register (DfqRegistry *registry, GError **error)
{
    return dfq_registry_add_feature (registry, &mv2_class.parent, error);
}

DFQ_PLUGIN_DEFINE (mobilenetv2-cifar, "MobileNetV2 for CIFAR-sized inputs", mv2_register)
