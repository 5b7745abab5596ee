/* The plugin ABI frozen in numbers (GStreamer's gstabi.c): every struct a
 * plugin compiles into its .so, with its size and field offsets on LP64. A
 * change here without a DFQ_PLUGIN_ABI_VERSION bump breaks built plugins. */
#include <stddef.h>

#include <dfq/dfq.h>

typedef struct {
    const char *name;
    gsize actual;
    gsize expected;
} AbiCheck;

#define SIZE(T, n) { "sizeof (" #T ")", sizeof (T), (n) }
#define OFFSET(T, f, n) { #T "." #f, G_STRUCT_OFFSET (T, f), (n) }

static const AbiCheck abi_checks[] = {
    SIZE (DfqPluginDesc, 72),
    OFFSET (DfqPluginDesc, abi_version, 0),
    OFFSET (DfqPluginDesc, desc_size, 4),
    OFFSET (DfqPluginDesc, name, 8),
    OFFSET (DfqPluginDesc, description, 16),
    OFFSET (DfqPluginDesc, version, 24),
    OFFSET (DfqPluginDesc, register_features, 32),
    OFFSET (DfqPluginDesc, reserved, 40),

    SIZE (DfqFeatureClass, 96),
    OFFSET (DfqFeatureClass, kind, 0),
    OFFSET (DfqFeatureClass, name, 8),
    OFFSET (DfqFeatureClass, description, 16),
    OFFSET (DfqFeatureClass, params, 24),
    OFFSET (DfqFeatureClass, n_params, 32),
    OFFSET (DfqFeatureClass, instance_size, 40),
    OFFSET (DfqFeatureClass, init, 48),
    OFFSET (DfqFeatureClass, finalize, 56),
    OFFSET (DfqFeatureClass, reserved, 64),

    SIZE (DfqFeature, 56),
    OFFSET (DfqFeature, klass, 0),
    OFFSET (DfqFeature, weight, 8),
    OFFSET (DfqFeature, label, 16),
    OFFSET (DfqFeature, reserved, 24),

    SIZE (DfqParamSpec, 96),
    OFFSET (DfqParamSpec, name, 0),
    OFFSET (DfqParamSpec, type, 8),
    OFFSET (DfqParamSpec, offset, 16),
    OFFSET (DfqParamSpec, description, 24),
    OFFSET (DfqParamSpec, min, 32),
    OFFSET (DfqParamSpec, max, 40),
    OFFSET (DfqParamSpec, default_value, 48),
    OFFSET (DfqParamSpec, enum_values, 56),
    OFFSET (DfqParamSpec, feature_kind, 64),
    OFFSET (DfqParamSpec, sub_params, 72),
    OFFSET (DfqParamSpec, n_sub_params, 80),
    OFFSET (DfqParamSpec, flags, 84),
    OFFSET (DfqParamSpec, check, 88),

    SIZE (DfqNumberList, 136),
    OFFSET (DfqNumberList, n, 0),
    OFFSET (DfqNumberList, v, 8),

    /* get_bits took reserved[0], set_mode / get_param_groups / regularizer
     * the other three: same size. */
    SIZE (DfqQuantizerClass, 168),
    OFFSET (DfqQuantizerClass, add_site, 96),
    OFFSET (DfqQuantizerClass, get_state, 128),
    OFFSET (DfqQuantizerClass, get_bits, 136),
    OFFSET (DfqQuantizerClass, set_mode, 144),
    OFFSET (DfqQuantizerClass, regularizer, 160),
    /* the mode took the calibrating flag's slot, site_blocks reserved[0],
     * active_block (block reconstruction) the next one */
    SIZE (DfqQuantizer, 104),
    OFFSET (DfqQuantizer, arena, 56),
    OFFSET (DfqQuantizer, mode, 64),
    OFFSET (DfqQuantizer, site_blocks, 72),
    OFFSET (DfqQuantizer, active_block, 80),

    /* mode took reserved[0] of the class, progress two of the instance's */
    SIZE (DfqSynthesizerClass, 176),
    OFFSET (DfqSynthesizerClass, prepare, 96),
    OFFSET (DfqSynthesizerClass, mode, 144),
    SIZE (DfqSynthesizer, 96),
    OFFSET (DfqSynthesizer, progress, 64),

    /* the transform kind (issue 17) */
    SIZE (DfqTransformClass, 144),
    OFFSET (DfqTransformClass, applies, 96),
    OFFSET (DfqTransformClass, conv_input, 104),
    OFFSET (DfqTransformClass, reserved, 112),
    SIZE (DfqTransform, 96),
    OFFSET (DfqTransform, stream, 56),
    OFFSET (DfqTransform, reserved, 64),
    SIZE (DfqTransformChain, 32),
    OFFSET (DfqTransformChain, transforms, 0),
    OFFSET (DfqTransformChain, error, 8),

    /* transforms took reserved[0]: same size */
    SIZE (DfqStepContext, 136),
    OFFSET (DfqStepContext, data_dir, 112),
    OFFSET (DfqStepContext, transforms, 120),
    OFFSET (DfqStepContext, run_dir, 128),

    SIZE (DfqOptimParams, 344),
    OFFSET (DfqOptimParams, use, 0),
    OFFSET (DfqOptimParams, lr, 8),
    OFFSET (DfqOptimParams, betas, 40),
    OFFSET (DfqOptimParams, milestones, 192),
    OFFSET (DfqOptimParams, min_lr, 336),
};

static void
test_abi_layout (void)
{
    g_test_summary ("DfqPluginDesc, DfqFeatureClass, DfqFeature, DfqParamSpec, DfqNumberList, DfqQuantizerClass, "
                    "DfqSynthesizer(Class), DfqTransform(Class), DfqTransformChain, DfqStepContext and "
                    "DfqOptimParams keep their LP64 size and field offsets");
    if (sizeof (gpointer) != 8) {
        g_test_skip ("the expected layout is for LP64");
        return;
    }
    guint failures = 0;
    for (guint i = 0; i < G_N_ELEMENTS (abi_checks); i++) {
        const AbiCheck *c = &abi_checks[i];
        if (c->actual != c->expected) {
            g_test_message ("%s is %" G_GSIZE_FORMAT ", the ABI says %" G_GSIZE_FORMAT, c->name, c->actual,
                            c->expected);
            failures++;
        }
    }
    g_assert_cmpuint (failures, ==, 0);
}

static void
test_abi_enums (void)
{
    g_test_summary ("Enum values plugins compile in do not move");
    g_assert_cmpint (DFQ_PLUGIN_ABI_VERSION, ==, 1);
    g_assert_cmpint (DFQ_FEATURE_MODEL, ==, 0);
    g_assert_cmpint (DFQ_FEATURE_TRANSFORM, ==, 4);
    g_assert_cmpint (DFQ_PARAM_TYPE_INT, ==, 0);
    g_assert_cmpint (DFQ_PARAM_TYPE_STRUCT, ==, 9);
    g_assert_cmpint (DFQ_PARAM_TYPE_STRING_LIST, ==, 10);
    g_assert_cmpint (DFQ_PARAM_FLAG_REQUIRED, ==, 1);
    g_assert_cmpint (DFQ_PARAM_FLAG_PATH, ==, 2);
    g_assert_cmpint (DFQ_NUMBER_LIST_MAX, ==, 16);
    g_assert_cmpint (DFQ_PLUGIN_ERROR_OPEN, ==, 0);
    g_assert_cmpint (DFQ_PLUGIN_ERROR_BAD_FEATURE, ==, 6);
    g_assert_cmpuint (dfq_optim_n_param_specs, ==, DFQ_OPTIM_N_PARAM_SPECS);
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    g_test_add_func ("/abi/layout", test_abi_layout);
    g_test_add_func ("/abi/enums", test_abi_enums);
    return g_test_run ();
}
