/* Static feature classes for the host tests and the pipeline fuzzer. */
#include "host-test-features.h"

gint toy_gen_alive = 0;

static const DfqParamSpec toy_model_params[] = {
    DFQ_PARAM_INT (ToyModel, depth, "Number of layers", 1, 200, 20),
    DFQ_PARAM_INT (ToyModel, classes, "Output classes", 2, 1000, 10),
    DFQ_PARAM_INT (ToyModel, in_channels, "Input channels", 1, 3, 1),
};
const DfqFeatureClass toy_model_class =
    DFQ_FEATURE_CLASS_INIT (DFQ_FEATURE_MODEL, "toy-model", "A model for tests", ToyModel, toy_model_params);

/* The example of STYLE.md B.3: "(known: batch, iters, lr)". */
static const DfqParamSpec toy_zeroq_params[] = {
    DFQ_PARAM_INT (ToyZeroq, batch, "Images per batch", 1, 4096, 32),
    DFQ_PARAM_INT (ToyZeroq, iters, "Optimisation steps", 1, 100000, 500),
    DFQ_PARAM_DOUBLE (ToyZeroq, lr, "Learning rate of the images", 0, 10, 0.2),
};
const DfqFeatureClass toy_zeroq_class =
    DFQ_FEATURE_CLASS_INIT (DFQ_FEATURE_SYNTHESIZER, "zeroq", "ZeroQ stand-in", ToyZeroq, toy_zeroq_params);

static gboolean
toy_gen_init (DfqFeature *feature, GError **error)
{
    ToyGen *self = (ToyGen *) feature;
    if (self->latent == 13) {
        g_set_error_literal (error, G_FILE_ERROR, G_FILE_ERROR_FAILED, "latent 13 brings bad luck");
        return FALSE;
    }
    self->buffer = g_new0 (gfloat, self->latent);
    toy_gen_alive++;
    return TRUE;
}

static void
toy_gen_finalize (DfqFeature *feature)
{
    ToyGen *self = (ToyGen *) feature;
    g_clear_pointer (&self->buffer, g_free);
    toy_gen_alive--;
}

static const DfqParamSpec toy_gen_params[] = {
    DFQ_PARAM_INT (ToyGen, latent, "Latent size", 1, 4096, 100),
    DFQ_PARAM_OPTIMIZER (ToyGen, optimizer, "Generator optimiser",
                         .default_value = "{use: adam, lr: 1e-3, betas: [0.5, 0.999]}"),
    DFQ_PARAM_FEATURE_LIST (ToyGen, losses, "Generator losses", DFQ_FEATURE_LOSS,
                            "[toy-ce, {use: toy-kd, weight: 0.1, temperature: 2}]"),
};
const DfqFeatureClass toy_gen_class =
    DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_SYNTHESIZER, "toy-gen", "Generator stand-in", ToyGen, toy_gen_params,
                                 toy_gen_init, toy_gen_finalize);

static const char *const toy_ce_targets[] = { "teacher", "student", NULL };
static const DfqParamSpec toy_ce_params[] = {
    DFQ_PARAM_ENUM (ToyCe, target, "Whose logits", toy_ce_targets, "student"),
};
const DfqFeatureClass toy_ce_class =
    DFQ_FEATURE_CLASS_INIT (DFQ_FEATURE_LOSS, "toy-ce", "Cross-entropy stand-in", ToyCe, toy_ce_params);

static const DfqParamSpec toy_kd_params[] = {
    DFQ_PARAM_DOUBLE (ToyKd, temperature, "Softmax temperature", 0.1, 100, 4),
};
const DfqFeatureClass toy_kd_class =
    DFQ_FEATURE_CLASS_INIT (DFQ_FEATURE_LOSS, "toy-kd", "KD stand-in", ToyKd, toy_kd_params);

static gboolean
toy_quant_init (DfqFeature *feature, GError **error)
{
    ToyQuant *self = (ToyQuant *) feature;
    if (self->w_bits > self->a_bits + 4) {
        g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                     "w_bits (%d) may exceed a_bits (%d) by at most 4", self->w_bits, self->a_bits);
        return FALSE;
    }
    return TRUE;
}

static const DfqParamSpec toy_quant_params[] = {
    DFQ_PARAM_INT (ToyQuant, w_bits, "Weight bits", 2, 8, 4),
    DFQ_PARAM_INT (ToyQuant, a_bits, "Activation bits", 2, 8, 4),
    DFQ_PARAM_BOOL (ToyQuant, per_channel, "Per-channel weight ranges", TRUE),
    DFQ_PARAM_STRING_LIST (ToyQuant, overrides, "Per-site bit overrides 'glob=bits'", NULL),
};
const DfqFeatureClass toy_quant_class =
    DFQ_FEATURE_CLASS_INIT_FULL (DFQ_FEATURE_QUANTIZER, "toy-quant", "Quantizer stand-in", ToyQuant,
                                 toy_quant_params, toy_quant_init, NULL);

static const char *const toy_modes[] = { "fast", "slow", "exact", NULL };
static const DfqParamSpec toy_inner_params[] = {
    DFQ_PARAM_INT (ToyInner, level, "Nesting level", 0, 9, 1),
    DFQ_PARAM_INT_LIST (ToyInner, sizes, "Sizes", 1, 64, "[1, 2]"),
};
static const DfqParamSpec toy_everything_params[] = {
    DFQ_PARAM_INT (ToyEverything, i, "An int", -5, 5, 0),
    DFQ_PARAM_DOUBLE (ToyEverything, d, "A double", -1, 1, 0.5),
    DFQ_PARAM_BOOL (ToyEverything, b, "A bool", FALSE),
    DFQ_PARAM_STRING (ToyEverything, s, "A string", "hello"),
    DFQ_PARAM_ENUM (ToyEverything, e, "An enum", toy_modes, "slow"),
    DFQ_PARAM_INT_LIST (ToyEverything, il, "Ints", 0, 100, "[15, 30, 35]"),
    DFQ_PARAM_DOUBLE_LIST (ToyEverything, dl, "Doubles", 0, 0, "[]"),
    DFQ_PARAM_FEATURE (ToyEverything, f, "A loss", DFQ_FEATURE_LOSS, "toy-kd"),
    DFQ_PARAM_FEATURE_LIST (ToyEverything, fl, "Losses", DFQ_FEATURE_LOSS, NULL),
    DFQ_PARAM_STRUCT (ToyEverything, inner, "A nested block", toy_inner_params),
    DFQ_PARAM_STRING_LIST (ToyEverything, sl, "Strings", "[a, b]"),
    DFQ_PARAM_STRING (ToyEverything, path, "A file", NULL, .flags = DFQ_PARAM_FLAG_PATH),
};
const DfqFeatureClass toy_everything_class =
    DFQ_FEATURE_CLASS_INIT (DFQ_FEATURE_TRANSFORM, "toy-everything", "One param of every type", ToyEverything,
                            toy_everything_params);

gboolean
host_test_register_features (DfqRegistry *registry, GError **error)
{
    const DfqFeatureClass *classes[] = { &toy_model_class, &toy_zeroq_class, &toy_gen_class, &toy_ce_class,
                                         &toy_kd_class, &toy_quant_class, &toy_everything_class };
    for (guint i = 0; i < G_N_ELEMENTS (classes); i++)
        if (!dfq_registry_add_feature (registry, classes[i], error))
            return FALSE;
    return TRUE;
}
