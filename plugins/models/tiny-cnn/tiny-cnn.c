/* Model plugin: a tiny CNN for fast tests and smoke pipelines:
 * conv1 3x3 -> bn1 -> relu1 -> conv2 3x3 s2 -> bn2 -> relu2 -> global pool -> fc. */
#include <dfq/dfq.h>
#include <dfq/dfq-model.h>

typedef struct {
    DfqModel parent;
    gint width;
    gint image_size;
    gint init_seed;
} TinyCnn;

static const DfqParamSpec tiny_cnn_params[] = {
    DFQ_PARAM_INT (DfqModel, in_channels, "Input channels", 1, 64, 1),
    DFQ_PARAM_INT (DfqModel, classes, "Number of classes", 2, 1000, 10),
    DFQ_PARAM_INT (TinyCnn, width, "Channels of the first conv (the second has twice as many)", 1, 256, 8),
    DFQ_PARAM_INT (TinyCnn, image_size, "Input height and width", 4, 1024, 28),
    DFQ_PARAM_INT (TinyCnn, init_seed, "Seed of the random initialisation", 0, G_MAXINT, 0),
};

static gboolean
tiny_cnn_build (DfqModel *model, GError **error)
{
    TinyCnn *self = (TinyCnn *) model;
    guint64 seed = (guint64) self->init_seed;
    model->height = model->width = self->image_size;
    dfq_model_add_block (model, "stage1");
    dfq_model_add_conv (model, "conv1", model->in_channels, self->width, 3, 1, FALSE, seed);
    dfq_model_add_bn (model, "bn1", self->width, TRUE);
    dfq_model_add_block (model, "stage2");
    dfq_model_add_conv (model, "conv2", self->width, 2 * self->width, 3, 1, FALSE, seed);
    dfq_model_add_bn (model, "bn2", 2 * self->width, TRUE);
    dfq_model_add_block (model, "fc");
    dfq_model_add_linear (model, "fc", 2 * self->width, model->classes, TRUE, seed);
    return TRUE;
}

static DfqTensor *
tiny_cnn_forward_block (DfqModel *model, DfqForward *fwd, guint index, DfqTensor *x)
{
    switch (index) {
    case 0:
        x = dfq_layer_conv (model, fwd, "conv1", x, 1, 1, 1);
        x = dfq_layer_bn (model, fwd, "bn1", x, 1e-5f, 0.1f);
        return dfq_layer_act (model, fwd, "relu1", x, DFQ_ACT_RELU);
    case 1:
        x = dfq_layer_conv (model, fwd, "conv2", x, 2, 1, 1);
        x = dfq_layer_bn (model, fwd, "bn2", x, 1e-5f, 0.1f);
        return dfq_layer_act (model, fwd, "relu2", x, DFQ_ACT_RELU);
    default: {
        DfqTensor *f = dfq_global_avg_pool (fwd->arena, x);
        if (fwd->n_tap_sets > 0)
            dfq_layer_tap (fwd, "feature", DFQ_TAP_FEATURE, f, NULL, NULL);
        return dfq_layer_linear (model, fwd, "fc", f);
    }
    }
}

static DfqTensor *
tiny_cnn_forward (DfqModel *model, DfqForward *fwd, DfqTensor *x)
{
    for (guint i = 0; i < 3; i++)
        x = tiny_cnn_forward_block (model, fwd, i, x);
    return x;
}

static const DfqModelClass tiny_cnn_class = {
    .parent = DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_MODEL, "tiny-cnn",
                                           "Two-conv CNN for fast tests and smoke pipelines",
                                           TinyCnn, tiny_cnn_params, dfq_model_setup, dfq_model_teardown),
    .build = tiny_cnn_build,
    .forward = tiny_cnn_forward,
    .forward_block = tiny_cnn_forward_block,
};

static gboolean
tiny_cnn_register (DfqRegistry *registry, GError **error)
{
    return dfq_registry_add_feature (registry, &tiny_cnn_class.parent, error);
}

DFQ_PLUGIN_DEFINE (tiny-cnn, "Tiny CNN for tests", tiny_cnn_register)
