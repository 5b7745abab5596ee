/* The transform kind and swing convolution (plugins/transforms/swing-conv,
 * core/model/dfq-transform.c, METHODS.md 10):
 * - offset (pad, pad) gives the plain input and the plain conv bit for bit;
 * - every offset equals reflect-pad + crop computed by hand, then the conv;
 * - only strided convs are wrapped (ResNet-20: layers.{3,6}.conv1 and
 *   layers.{3,6}.down.0), and a chain applies its list in order;
 * - the gradient w.r.t. the input against central differences;
 * - the offset is a function of (seed, step, conv): the same again, all 9
 *   offsets over the steps, other seeds other sequences;
 * - zeroq with swing-conv makes other images than without, deterministically;
 *   the transforms reach the synthesizer's teacher forwards only (a counting
 *   transform under adadfq, whose losses also run the student);
 * - clear errors: pad out of range, bad fixed offsets, an input too small;
 *   a transform that changes the shape, a non-transform in a list;
 * - synthesizer configs without `transforms` print as before (config hashes). */
#include <math.h>
#include <string.h>

#include "dfq-test-util.h"
#include <dfq/dfq.h>

static DfqRegistry *registry;

/* ------------------------------------------------------------ helpers */

static DfqFeature *
transform_from_yaml (const char *yaml, GError **error)
{
    g_autoptr (DfqConfigNode) node = dfq_config_parse (yaml, -1, "test", error);
    g_assert_nonnull (node);
    const DfqConfigNode *use = dfq_config_mapping_get (node, "use");
    g_assert_nonnull (use);
    const DfqFeatureClass *klass = dfq_registry_find (registry, DFQ_FEATURE_TRANSFORM, use->scalar);
    g_assert_nonnull (klass);
    return dfq_feature_new_from_config (registry, klass, node, TRUE, "test", error);
}

static DfqTransform *
make_transform (const char *yaml)
{
    g_autoptr (GError) error = NULL;
    DfqFeature *f = transform_from_yaml (yaml, &error);
    g_assert_no_error (error);
    return (DfqTransform *) f;
}

static gint64
reflect (gint64 i, gint64 n)
{
    return i < 0 ? -i : i >= n ? 2 * (n - 1) - i : i;
}

/* x reflect-padded by @pad and cropped at (dy, dx), by hand. */
static DfqTensor *
hand_swing (DfqArena *a, const DfqTensor *x, int pad, int dx, int dy)
{
    const gint64 nc = x->shape[0] * x->shape[1], h = x->shape[2], w = x->shape[3];
    DfqTensor *y = dfq_tensor_new (a, DFQ_DTYPE_F32, 4, x->shape);
    const float *s = dfq_tensor_f32 (x);
    float *d = dfq_tensor_f32 (y);
    for (gint64 p = 0; p < nc; p++)
        for (gint64 r = 0; r < h; r++)
            for (gint64 c = 0; c < w; c++)
                d[(p * h + r) * w + c] = s[(p * h + reflect (r + dy - pad, h)) * w + reflect (c + dx - pad, w)];
    return y;
}

static DfqTensor *
swing (DfqTransform *t, DfqArena *a, guint64 seed, guint64 step, const char *conv, int stride, DfqTensor *x)
{
    DfqForward fwd;
    dfq_forward_init (&fwd, a, FALSE);
    fwd.seed = seed;
    fwd.step = step;
    g_autoptr (GError) error = NULL;
    DfqTensor *y = dfq_transform_conv_input (t, &fwd, conv, stride, x, &error);
    g_assert_no_error (error);
    g_assert_nonnull (y);
    return y;
}

static void
assert_same_bits (const DfqTensor *a, const DfqTensor *b)
{
    g_assert_cmpint (dfq_tensor_numel (a), ==, dfq_tensor_numel (b));
    g_assert_cmpmem (dfq_tensor_f32 (a), dfq_tensor_numel (a) * 4, dfq_tensor_f32 (b), dfq_tensor_numel (b) * 4);
}

/* ------------------------------------------------------------ forward values */

static void
test_identity_offset (void)
{
    g_test_summary ("offset (pad, pad) gives the plain input and the plain strided conv, bit for bit");
    g_autoptr (DfqArena) a = dfq_arena_new (0);
    DfqTensor *x = dfq_tensor_new_4d (a, DFQ_DTYPE_F32, 2, 3, 9, 9);
    DfqTensor *w = dfq_tensor_new_4d (a, DFQ_DTYPE_F32, 4, 3, 3, 3);
    dfq_rand_normal_fill (x, 1, 1, 0.0f, 1.0f);
    dfq_rand_normal_fill (w, 1, 2, 0.0f, 0.3f);
    for (int pad = 1; pad <= 2; pad++) {
        g_autofree char *yaml = g_strdup_printf ("use: swing-conv\npad: %d\noffset: [%d, %d]", pad, pad, pad);
        g_autoptr (DfqFeature) t = (DfqFeature *) make_transform (yaml);
        DfqTensor *y = swing ((DfqTransform *) t, a, 1, 0, "conv", 2, x);
        assert_same_bits (y, x);
        assert_same_bits (dfq_conv2d (a, y, w, NULL, 2, 1, 1), dfq_conv2d (a, x, w, NULL, 2, 1, 1));
    }
}

static void
test_every_offset_by_hand (void)
{
    g_test_summary ("every offset (dx, dy) in {0..2 pad}^2 equals reflect-pad + crop by hand, then the conv");
    g_autoptr (DfqArena) a = dfq_arena_new (0);
    DfqTensor *x = dfq_tensor_new_4d (a, DFQ_DTYPE_F32, 2, 2, 8, 10);
    DfqTensor *w = dfq_tensor_new_4d (a, DFQ_DTYPE_F32, 3, 2, 3, 3);
    dfq_rand_normal_fill (x, 2, 1, 0.0f, 1.0f);
    dfq_rand_normal_fill (w, 2, 2, 0.0f, 0.3f);
    for (int pad = 1; pad <= 3; pad++)
        for (int dy = 0; dy <= 2 * pad; dy++)
            for (int dx = 0; dx <= 2 * pad; dx++) {
                g_autofree char *yaml = g_strdup_printf ("use: swing-conv\npad: %d\noffset: [%d, %d]", pad, dx, dy);
                g_autoptr (DfqFeature) t = (DfqFeature *) make_transform (yaml);
                DfqTensor *y = swing ((DfqTransform *) t, a, 1, 0, "conv", 2, x);
                DfqTensor *hand = hand_swing (a, x, pad, dx, dy);
                assert_same_bits (y, hand);
                assert_same_bits (dfq_conv2d (a, y, w, NULL, 2, 1, 1), dfq_conv2d (a, hand, w, NULL, 2, 1, 1));
            }
}

/* ------------------------------------------------------------ which convs */

typedef struct {
    DfqConvInputFn inner;
    gpointer inner_data;
    guint calls;
    GPtrArray *wrapped; /* conv names whose input changed */
} CountHook;

static DfqTensor *
count_hook (gpointer data, DfqForward *fwd, const char *conv, int stride, DfqTensor *x)
{
    CountHook *c = data;
    c->calls++;
    DfqTensor *y = c->inner (c->inner_data, fwd, conv, stride, x);
    if (y != x)
        g_ptr_array_add (c->wrapped, g_strdup (conv));
    return y;
}

static void
test_strided_only (void)
{
    g_test_summary ("ResNet-20: swing-conv wraps exactly the 4 strided convs (layers.{3,6}.conv1, .down.0) of 21");
    DfqModel *teacher = dfq_test_resnet20_w8 (registry, TRUE);
    g_autoptr (DfqArena) a = dfq_arena_new (0);
    g_autoptr (GPtrArray) list = g_ptr_array_new_with_free_func ((GDestroyNotify) dfq_feature_free);
    g_ptr_array_add (list, make_transform ("use: swing-conv"));
    DfqTransformChain chain = { 0 };
    dfq_transform_chain_init (&chain, list);
    DfqForward fwd;
    dfq_forward_init (&fwd, a, FALSE);
    fwd.seed = 3;
    dfq_transform_chain_install (&chain, &fwd);
    g_assert_nonnull (fwd.conv_input);
    CountHook c = { fwd.conv_input, fwd.conv_input_data, 0, g_ptr_array_new_with_free_func (g_free) };
    fwd.conv_input = count_hook;
    fwd.conv_input_data = &c;
    DfqTensor *x = dfq_tensor_new_4d (a, DFQ_DTYPE_F32, 2, 1, 28, 28);
    dfq_rand_normal_fill (x, 3, 1, 0.0f, 1.0f);
    DfqTensor *logits = dfq_model_forward (teacher, &fwd, x);
    g_assert_true (dfq_tensor_all_finite (logits));
    g_assert_true (dfq_transform_chain_check (&chain, NULL));
    g_assert_cmpuint (c.calls, ==, 21);
    const char *want[] = { "layers.3.conv1", "layers.3.down.0", "layers.6.conv1", "layers.6.down.0" };
    g_assert_cmpuint (c.wrapped->len, ==, G_N_ELEMENTS (want));
    for (guint i = 0; i < G_N_ELEMENTS (want); i++)
        g_assert_true (g_ptr_array_find_with_equal_func (c.wrapped, want[i], g_str_equal, NULL));
    const DfqTransformClass *k = DFQ_TRANSFORM_CLASS (list->pdata[0]);
    g_assert_false (k->applies (list->pdata[0], "conv", 1));
    g_assert_true (k->applies (list->pdata[0], "conv", 2));
    g_ptr_array_unref (c.wrapped);
    dfq_transform_chain_clear (&chain);
    dfq_feature_free ((DfqFeature *) teacher);
}

static void
test_chain_order (void)
{
    g_test_summary ("A chain applies its list in order: two fixed offsets compose as the hand computation does");
    g_autoptr (DfqArena) a = dfq_arena_new (0);
    g_autoptr (GPtrArray) list = g_ptr_array_new_with_free_func ((GDestroyNotify) dfq_feature_free);
    g_ptr_array_add (list, make_transform ("use: swing-conv\noffset: [0, 2]"));
    g_ptr_array_add (list, make_transform ("use: swing-conv\npad: 2\noffset: [3, 1]"));
    DfqTransformChain chain = { 0 };
    dfq_transform_chain_init (&chain, list);
    g_assert_true (((DfqTransform *) list->pdata[0])->stream != ((DfqTransform *) list->pdata[1])->stream);
    DfqForward fwd;
    dfq_forward_init (&fwd, a, FALSE);
    dfq_transform_chain_install (&chain, &fwd);
    DfqTensor *x = dfq_tensor_new_4d (a, DFQ_DTYPE_F32, 1, 2, 7, 7);
    dfq_rand_normal_fill (x, 4, 1, 0.0f, 1.0f);
    DfqTensor *y = fwd.conv_input (fwd.conv_input_data, &fwd, "c", 2, x);
    assert_same_bits (y, hand_swing (a, hand_swing (a, x, 1, 0, 2), 2, 3, 1));
    g_assert_true (fwd.conv_input (fwd.conv_input_data, &fwd, "c", 1, x) == x);
    g_assert_true (dfq_transform_chain_check (&chain, NULL));

    /* an empty chain installs nothing */
    DfqTransformChain empty = { 0 };
    dfq_transform_chain_init (&empty, NULL);
    DfqForward plain;
    dfq_forward_init (&plain, a, FALSE);
    dfq_transform_chain_install (&empty, &plain);
    g_assert_null (plain.conv_input);
}

/* ------------------------------------------------------------ gradient */

typedef struct {
    DfqTransform *t;
    DfqTensor *w;
} GradData;

static DfqTensor *
grad_build (DfqArena *arena, DfqTensor *const *inputs, gpointer user_data)
{
    GradData *g = user_data;
    DfqForward fwd;
    dfq_forward_init (&fwd, arena, FALSE);
    fwd.seed = 9;
    fwd.step = 4;
    DfqTensor *y = dfq_transform_conv_input (g->t, &fwd, "layers.3.conv1", 2, inputs[0], NULL);
    return dfq_conv2d (arena, y, g->w, NULL, 2, 1, 1);
}

static void
test_gradient (void)
{
    g_test_summary ("d(conv(swing(x)))/dx against central differences, fixed offsets and the random one");
    const char *configs[] = { "use: swing-conv\noffset: [0, 2]", "use: swing-conv\noffset: [2, 1]",
                              "use: swing-conv\npad: 2\noffset: [0, 4]", "use: swing-conv" };
    for (guint i = 0; i < G_N_ELEMENTS (configs); i++) {
        g_autoptr (DfqArena) a = dfq_arena_new (0);
        g_autoptr (DfqFeature) t = (DfqFeature *) make_transform (configs[i]);
        DfqTensor *x = dfq_tensor_new_4d (a, DFQ_DTYPE_F32, 2, 2, 7, 7);
        DfqTensor *w = dfq_tensor_new_4d (a, DFQ_DTYPE_F32, 3, 2, 3, 3);
        dfq_rand_normal_fill (x, 5, 1, 0.0f, 1.0f);
        dfq_rand_normal_fill (w, 5, 2, 0.0f, 0.5f);
        dfq_tensor_set_param (x);
        GradData g = { (DfqTransform *) t, w };
        DfqGradcheckOptions options = { .seed = 5, .eps = 1e-2, .max_elements = 98 };
        g_autoptr (GError) error = NULL;
        double worst = 0.0;
        g_assert_true (dfq_gradcheck (grad_build, &g, &x, 1, &options, &worst, &error));
        g_assert_no_error (error);
        g_test_message ("%s: worst error ratio %.3g", configs[i], worst);
    }
}

/* ------------------------------------------------------------ offsets */

/* The offset the transform drew: with x[r][c] = 8 r + c (8 x 8) and pad 1,
 * out[1][1] = x[dy][dx]. */
static int
drawn_offset (DfqTransform *t, DfqArena *a, DfqTensor *x, guint64 seed, guint64 step, const char *conv)
{
    DfqTensor *y = swing (t, a, seed, step, conv, 2, x);
    return (int) dfq_tensor_f32 (y)[9];
}

static void
test_offsets (void)
{
    g_test_summary ("Offsets are a function of (seed, step, conv): the same again; all 9 over 200 steps, "
                    "each at least 10 times; another seed or another conv draws another sequence");
    g_autoptr (DfqArena) a = dfq_arena_new (0);
    g_autoptr (DfqFeature) f = (DfqFeature *) make_transform ("use: swing-conv");
    DfqTransform *t = (DfqTransform *) f;
    DfqTensor *x = dfq_tensor_new_4d (a, DFQ_DTYPE_F32, 1, 1, 8, 8);
    for (int i = 0; i < 64; i++)
        dfq_tensor_f32 (x)[i] = (float) i;
    guint counts[3][3] = { { 0 } };
    guint changes = 0, differ_seed = 0, differ_conv = 0;
    int prev = -1;
    for (guint64 step = 0; step < 200; step++) {
        int o = drawn_offset (t, a, x, 7, step, "layers.3.conv1");
        int dy = o / 8, dx = o % 8;
        g_assert_cmpint (dy, <=, 2);
        g_assert_cmpint (dx, <=, 2);
        g_assert_cmpint (drawn_offset (t, a, x, 7, step, "layers.3.conv1"), ==, o);
        counts[dy][dx]++;
        changes += prev >= 0 && o != prev;
        prev = o;
        differ_seed += drawn_offset (t, a, x, 8, step, "layers.3.conv1") != o;
        differ_conv += drawn_offset (t, a, x, 7, step, "layers.6.conv1") != o;
        dfq_arena_reset (a);
        x = dfq_tensor_new_4d (a, DFQ_DTYPE_F32, 1, 1, 8, 8);
        for (int i = 0; i < 64; i++)
            dfq_tensor_f32 (x)[i] = (float) i;
    }
    for (int dy = 0; dy < 3; dy++)
        for (int dx = 0; dx < 3; dx++) {
            g_test_message ("offset (%d, %d): %u of 200", dx, dy, counts[dy][dx]);
            g_assert_cmpuint (counts[dy][dx], >=, 10);
        }
    /* 8/9 of independent draws differ from the one before */
    g_assert_cmpuint (changes, >, 150);
    g_assert_cmpuint (differ_seed, >, 150);
    g_assert_cmpuint (differ_conv, >, 150);
}

/* ------------------------------------------------------------ in a synthesizer */

static DfqTensor *
zeroq_images (DfqArena *keep, const char *transforms)
{
    DfqModel *teacher = dfq_test_resnet20_w8 (registry, TRUE);
    DfqTestSynth f;
    dfq_test_synth_init (&f, registry, teacher, NULL, 1, 1, 4, 1, 28);
    g_autofree char *yaml = g_strdup_printf ("use: zeroq\niters: 8\n%s", transforms);
    DfqSynthesizer *s = dfq_test_synth_new (&f, yaml, FALSE);
    DfqSynthBatch b = { 0 };
    dfq_test_synth_step (&f, s, 0, &b);
    g_assert_true (isfinite (b.loss));
    DfqTensor *out = dfq_tensor_dup (keep, b.images);
    dfq_feature_free ((DfqFeature *) s);
    dfq_test_synth_clear (&f);
    return out;
}

static void
test_zeroq (void)
{
    g_test_summary ("zeroq with swing-conv: other images than without, the same twice; an empty list = none");
    g_autoptr (DfqArena) keep = dfq_arena_new (0);
    DfqTensor *plain = zeroq_images (keep, "");
    DfqTensor *empty = zeroq_images (keep, "transforms: []\n");
    DfqTensor *s1 = zeroq_images (keep, "transforms: [{use: swing-conv, pad: 1}]\n");
    DfqTensor *s2 = zeroq_images (keep, "transforms: [{use: swing-conv, pad: 1}]\n");
    DfqTensor *fixed = zeroq_images (keep, "transforms: [{use: swing-conv, offset: [1, 1]}]\n");
    assert_same_bits (plain, empty);
    assert_same_bits (s1, s2);
    /* the fixed offset (pad, pad) is the plain input: the same images */
    assert_same_bits (plain, fixed);
    g_assert_true (memcmp (dfq_tensor_f32 (plain), dfq_tensor_f32 (s1), dfq_tensor_numel (s1) * 4) != 0);
}

/* A pass-through transform that counts the conv inputs it sees. */
typedef struct {
    DfqTransform parent;
    gint dummy;
} Counter;

static guint counter_calls;

static DfqTensor *
counter_conv_input (DfqTransform *self, DfqForward *fwd, const char *conv, int stride, DfqTensor *x, GError **error)
{
    counter_calls++;
    return x;
}

static const DfqParamSpec counter_params[] = {
    DFQ_PARAM_INT (Counter, dummy, "Unused", 0, 1, 0),
};
static const DfqTransformClass counter_class = {
    .parent = DFQ_FEATURE_CLASS_INIT (DFQ_FEATURE_TRANSFORM, "test-counter", "Counts conv inputs", Counter,
                                      counter_params),
    .conv_input = counter_conv_input,
};

/* A broken transform: drops the last row. */
static DfqTensor *
shrink_conv_input (DfqTransform *self, DfqForward *fwd, const char *conv, int stride, DfqTensor *x, GError **error)
{
    return dfq_crop (fwd->arena, x, 0, 0, (int) x->shape[2] - 1, (int) x->shape[3]);
}

static const DfqTransformClass shrink_class = {
    .parent = DFQ_FEATURE_CLASS_INIT (DFQ_FEATURE_TRANSFORM, "test-shrink", "Changes the shape (a bug)", Counter,
                                      counter_params),
    .conv_input = shrink_conv_input,
};

static void
test_shape_guard (void)
{
    g_test_summary ("A transform that changes the input's shape: BAD_FEATURE in the chain, the conv runs unwrapped");
    g_autoptr (DfqArena) a = dfq_arena_new (0);
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqFeature) t = dfq_feature_new_default (registry, &shrink_class.parent, &error);
    g_assert_no_error (error);
    g_autoptr (GPtrArray) list = g_ptr_array_new ();
    g_ptr_array_add (list, t);
    g_assert_true (dfq_transform_list_check (list, &error));
    DfqTransformChain chain = { 0 };
    dfq_transform_chain_init (&chain, list);
    DfqForward fwd;
    dfq_forward_init (&fwd, a, FALSE);
    dfq_transform_chain_install (&chain, &fwd);
    DfqTensor *x = dfq_tensor_new_4d (a, DFQ_DTYPE_F32, 1, 1, 6, 6);
    g_assert_true (fwd.conv_input (fwd.conv_input_data, &fwd, "c", 2, x) == x);
    g_assert_false (dfq_transform_chain_check (&chain, &error));
    g_assert_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_BAD_FEATURE);
    g_assert_nonnull (strstr (error->message, "test-shrink"));
    g_assert_true (dfq_transform_chain_check (&chain, NULL)); /* the error was taken */

    /* a feature of another kind in a transform list is refused */
    g_autoptr (DfqFeature) loss = dfq_test_make_feature (registry, DFQ_FEATURE_LOSS, "use: ce");
    g_ptr_array_add (list, loss);
    g_clear_error (&error);
    g_assert_false (dfq_transform_list_check (list, &error));
    g_assert_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_BAD_FEATURE);
}

static void
test_teacher_only (void)
{
    g_test_summary ("adadfq (losses on teacher and student) with a transform: only the teacher's 21 convs per step");
    DfqModel *teacher = dfq_test_resnet20_w8 (registry, TRUE);
    DfqModel *student = dfq_test_resnet20_w8 (registry, FALSE);
    DfqTestSynth f;
    dfq_test_synth_init (&f, registry, teacher, student, 2, 1, 4, 1, 28);
    dfq_test_synth_attach_quantizer (&f, "use: uniform\nw_bits: 4\na_bits: 4");
    DfqSynthesizer *s = dfq_test_synth_new (&f, "use: adadfq\ntransforms: [test-counter]", TRUE);
    counter_calls = 0;
    DfqSynthBatch b = { 0 };
    dfq_test_synth_step (&f, s, 0, &b);
    g_assert_cmpuint (counter_calls, ==, 21);
    /* the runner's own forwards of the student (and evaluation) carry no hook */
    DfqTensor *x = dfq_detach (f.arena, b.images);
    dfq_step_student_forward (&f.ctx, x, NULL, 0);
    dfq_step_teacher_forward (&f.ctx, x, NULL, 0);
    g_assert_cmpuint (counter_calls, ==, 21);
    dfq_feature_free ((DfqFeature *) s);
    dfq_test_synth_clear (&f);
}

/* ------------------------------------------------------------ errors, configs */

static void
test_errors (void)
{
    g_test_summary ("GErrors: pad 0, an offset outside {0..2 pad} or of one number; an input too small for the "
                    "padding fails the synthesizer's step with the conv's name");
    const char *bad[][2] = {
        { "use: swing-conv\npad: 0", "pad" },
        { "use: swing-conv\noffset: [3, 0]", "offset" },
        { "use: swing-conv\npad: 2\noffset: [1]", "offset" },
    };
    for (guint i = 0; i < G_N_ELEMENTS (bad); i++) {
        g_autoptr (GError) error = NULL;
        g_assert_null (transform_from_yaml (bad[i][0], &error));
        g_assert_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE);
        g_test_message ("%s", error->message);
        g_assert_nonnull (strstr (error->message, bad[i][1]));
    }
    /* pad 7: fine for the 28 x 28 input of layers.3, not for the 14 x 14 of layers.6 */
    DfqModel *teacher = dfq_test_resnet20_w8 (registry, TRUE);
    DfqTestSynth f;
    dfq_test_synth_init (&f, registry, teacher, NULL, 1, 1, 2, 1, 28);
    DfqSynthesizer *s = dfq_test_synth_new (&f, "use: zeroq\niters: 2\ntransforms: [{use: swing-conv, pad: 7}]", FALSE);
    g_autoptr (GError) error = NULL;
    DfqSynthBatch b = { 0 };
    g_assert_false (DFQ_SYNTHESIZER_CLASS (s)->step (s, &f.ctx, &b, &error));
    g_assert_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE);
    g_test_message ("%s", error->message);
    g_assert_nonnull (strstr (error->message, "layers.6.conv1"));
    g_assert_nonnull (strstr (error->message, "14 x 14"));
    dfq_feature_free ((DfqFeature *) s);
    dfq_test_synth_clear (&f);
}

static void
test_configs_unchanged (void)
{
    g_test_summary ("Synthesizer configs without transforms print no 'transforms' key (hashes unchanged); "
                    "with them, the list is printed");
    const char *names[] = { "zeroq", "gdfq", "adadfq", "bag" };
    for (guint i = 0; i < G_N_ELEMENTS (names); i++) {
        g_autofree char *yaml = dfq_test_assert_defaults (registry, DFQ_FEATURE_SYNTHESIZER, names[i], NULL, 0);
        g_assert_null (strstr (yaml, "transforms"));
    }
    g_autoptr (DfqFeature) z = dfq_test_make_feature (registry, DFQ_FEATURE_SYNTHESIZER,
                                                      "use: zeroq\ntransforms: [{use: swing-conv, pad: 2}]");
    g_autoptr (DfqConfigNode) cfg = dfq_params_to_config (z->klass->params, z->klass->n_params, z);
    g_autofree char *yaml = dfq_config_to_yaml (cfg);
    g_test_message ("%s", yaml);
    g_assert_nonnull (strstr (yaml, "swing-conv"));
    g_assert_nonnull (strstr (yaml, "pad: 2"));
    g_assert_null (strstr (yaml, "offset"));
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    dfq_set_num_threads (2);
    registry = dfq_test_registry_new ();
    g_autoptr (GError) error = NULL;
    g_assert_true (dfq_registry_add_feature (registry, &counter_class.parent, &error));
    g_test_add_func ("/plugin/swing-conv/identity-offset", test_identity_offset);
    g_test_add_func ("/plugin/swing-conv/every-offset-by-hand", test_every_offset_by_hand);
    g_test_add_func ("/plugin/swing-conv/strided-only", test_strided_only);
    g_test_add_func ("/plugin/swing-conv/chain-order", test_chain_order);
    g_test_add_func ("/plugin/swing-conv/gradient", test_gradient);
    g_test_add_func ("/plugin/swing-conv/offsets", test_offsets);
    g_test_add_func ("/plugin/swing-conv/zeroq", test_zeroq);
    g_test_add_func ("/plugin/swing-conv/teacher-only", test_teacher_only);
    g_test_add_func ("/plugin/swing-conv/errors", test_errors);
    g_test_add_func ("/plugin/swing-conv/shape-guard", test_shape_guard);
    g_test_add_func ("/plugin/swing-conv/configs-unchanged", test_configs_unchanged);
    int rc = g_test_run ();
    dfq_registry_free (registry);
    return rc;
}
