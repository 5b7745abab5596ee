/* Model plugins against PyTorch: the interop fixtures written by
 * tests/interop/make-torch-fixtures.py (logits in eval- and train-mode BN,
 * running statistics after a train-mode pass), parameter counts, block-by-block
 * forward, and the ResNet-20 Fashion-MNIST teacher of ../shared/fixtures
 * evaluated on the real test split (94.15 % in PyTorch). */
#include <math.h>
#include <string.h>

#include "dfq-test-util.h"
#include <dfq/dfq.h>

static DfqRegistry *registry;

static DfqModel *
make_model (const char *yaml)
{
    return (DfqModel *) dfq_test_make_feature (registry, DFQ_FEATURE_MODEL, yaml);
}

static char *
interop_path (const char *name)
{
    return g_test_build_filename (G_TEST_DIST, "interop", name, NULL);
}

typedef struct {
    const char *name;  /* fixture file stem */
    const char *yaml;  /* the same architecture in dfqlab */
    float tol_eval;
    float tol_train;
} InteropCase;

static const InteropCase interop_cases[] = {
    { "resnet-cifar-d8-w4", "use: resnet-cifar\ndepth: 8\nwidth: 4\nin_channels: 3\nclasses: 10\nimage_size: 16\n", 1e-4f, 1e-4f },
    { "resnet-cifar-d20-w8-c1", "use: resnet-cifar\ndepth: 20\nwidth: 8\nin_channels: 1\nclasses: 10\nimage_size: 28\n", 1e-4f, 1e-4f },
    { "mobilenetv2-cifar-w025", "use: mobilenetv2-cifar\nwidth_mult: 0.25\nin_channels: 3\nclasses: 10\ndropout: 0\n", 1e-4f, 1e-4f },
};

static void
test_interop (gconstpointer data)
{
    const InteropCase *c = data;
    g_autoptr (GError) error = NULL;
    g_autofree char *weights_name = g_strdup_printf ("%s.safetensors", c->name);
    g_autofree char *io_name = g_strdup_printf ("%s.io.safetensors", c->name);
    g_autofree char *weights = interop_path (weights_name);
    g_autofree char *io_path = interop_path (io_name);
    g_autoptr (DfqFeature) feature = (DfqFeature *) make_model (c->yaml);
    DfqModel *model = (DfqModel *) feature;
    g_assert_true (dfq_model_load (model, weights, NULL, &error));
    g_assert_no_error (error);

    g_autoptr (DfqSafetensors) io = dfq_safetensors_new_from_file (io_path, &error);
    g_assert_no_error (error);
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqTensor *x = dfq_safetensors_get_tensor (io, "input", arena, &error);
    g_assert_no_error (error);
    DfqTensor *want_eval = dfq_safetensors_get_tensor (io, "logits_eval", arena, &error);
    DfqTensor *want_train = dfq_safetensors_get_tensor (io, "logits_train", arena, &error);
    g_assert_no_error (error);

    gboolean prev = dfq_set_grad_enabled (FALSE);
    DfqForward fwd;
    dfq_forward_init (&fwd, arena, FALSE);
    DfqTensor *got = dfq_model_forward (model, &fwd, x);
    float err_eval = dfq_tensor_max_abs_diff (got, want_eval);
    dfq_forward_init (&fwd, arena, TRUE);
    got = dfq_model_forward (model, &fwd, x);
    float err_train = dfq_tensor_max_abs_diff (got, want_train);
    dfq_set_grad_enabled (prev);
    g_test_message ("%s: max abs logit error eval-mode BN %.3g, train-mode BN %.3g", c->name, err_eval, err_train);
    g_assert_cmpfloat (err_eval, <=, c->tol_eval);
    g_assert_cmpfloat (err_train, <=, c->tol_train);

    /* the train-mode pass updated running_var the way PyTorch did */
    float worst = 0.0f;
    for (guint i = 0; i < dfq_safetensors_get_n_tensors (io); i++) {
        const char *name = dfq_safetensors_get_info (io, i)->name;
        if (!g_str_has_suffix (name, ".after_train"))
            continue;
        g_autofree char *param = g_strndup (name, strlen (name) - strlen (".after_train"));
        DfqTensor *want = dfq_safetensors_get_tensor (io, name, arena, &error);
        g_assert_no_error (error);
        DfqTensor *have = dfq_model_get (model, param);
        g_assert_nonnull (have);
        worst = MAX (worst, dfq_tensor_max_abs_diff (have, want));
    }
    g_test_message ("%s: max abs running_var error after one train-mode pass %.3g", c->name, worst);
    g_assert_cmpfloat (worst, <=, 1e-5f);
}

static void
test_resnet20_param_count (void)
{
    g_test_summary ("ResNet-20 (1x28x28, 10 classes) has the fixture's 272,186 parameters");
    g_autoptr (DfqFeature) f = (DfqFeature *) make_model ("use: resnet-cifar\ndepth: 20\nin_channels: 1\nimage_size: 28\n");
    g_assert_cmpint (dfq_model_n_parameters ((DfqModel *) f), ==, 272186);
    g_assert_cmpuint (((DfqModel *) f)->blocks->len, ==, 11);
}

static void
test_blocks_compose (gconstpointer data)
{
    const char *yaml = data;
    g_test_summary ("Running every block alone, in order, gives the whole forward");
    g_autoptr (DfqFeature) f = (DfqFeature *) make_model (yaml);
    DfqModel *m = (DfqModel *) f;
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqTensor *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, 2, m->in_channels, m->height, m->width);
    dfq_rand_normal_fill (x, 5, 1, 0.0f, 1.0f);
    DfqForward fwd;
    dfq_forward_init (&fwd, arena, FALSE);
    DfqTensor *whole = dfq_model_forward (m, &fwd, x);
    DfqTensor *h = x;
    for (guint i = 0; i < m->blocks->len; i++)
        h = dfq_model_forward_block (m, &fwd, i, h);
    g_assert_cmpfloat (dfq_tensor_max_abs_diff (whole, h), ==, 0.0f);
}

static void
test_bad_depth (void)
{
    g_autoptr (GError) error = NULL;
    DfqConfigNode *node = dfq_config_parse ("use: resnet-cifar\ndepth: 21\n", -1, "bad-depth.yaml", &error);
    const DfqFeatureClass *klass = dfq_registry_find (registry, DFQ_FEATURE_MODEL, "resnet-cifar");
    DfqFeature *f = dfq_feature_new_from_config (registry, klass, node, FALSE, "model", &error);
    g_assert_null (f);
    g_assert_nonnull (error);
    g_assert_nonnull (strstr (error->message, "6n+2"));
    dfq_config_node_free (node);
}

/* ---- eval-mode conv-bn fusion (dfq_layer_conv_bn) against the separate ops ---- */

typedef struct {
    const char *yaml;
    gint batch;
    gboolean blockwise; /* no-grad eval runs its blocks in the model's own arenas (mobilenetv2-cifar) */
} FusionCase;

static const FusionCase fusion_cases[] = {
    /* the teacher's shape: every 3x3 conv but the 1-channel stem in the kernels, 7x7 planes with tiles of 32 */
    { "use: resnet-cifar\ndepth: 20\nin_channels: 1\nimage_size: 28\n", 3, FALSE },
    /* RGB stem (Ci = 3) in the kernel too, 8x8 planes */
    { "use: resnet-cifar\ndepth: 20\nin_channels: 3\nimage_size: 32\n", 2, FALSE },
    /* first stage with 4 channels (below a tile: the epilogue after the GEMM), then 8 and 16 */
    { "use: resnet-cifar\ndepth: 8\nin_channels: 1\nimage_size: 28\nwidth: 4\n", 2, FALSE },
    /* 12 / 24 / 48 channels (part-empty tiles), odd planes 19 -> 10 -> 5 (the last below 36 positions) */
    { "use: resnet-cifar\ndepth: 8\nin_channels: 3\nimage_size: 19\nwidth: 12\n", 3, FALSE },
    /* no 3x3 kernel: 2 channels, then 4 and 8 on 4x4 planes (epilogues after GEMMs) */
    { "use: resnet-cifar\ndepth: 8\nin_channels: 1\nimage_size: 8\nwidth: 2\n", 2, FALSE },
    /* MobileNetV2 (issue 15): 1x1 and depthwise 3x3 (stride 1 and 2) convs with BN + ReLU6, residual
     * projections; 28x28 as the fixture, and 32x32 RGB; a single image (the GEMMs' per-image split) */
    { "use: mobilenetv2-cifar\nwidth_mult: 0.25\nin_channels: 1\nimage_size: 28\n", 3, TRUE },
    { "use: mobilenetv2-cifar\nwidth_mult: 0.35\nin_channels: 3\nimage_size: 32\n", 2, TRUE },
    { "use: mobilenetv2-cifar\nwidth_mult: 0.25\nin_channels: 1\nimage_size: 28\n", 1, TRUE },
};

/* BN statistics and affine parameters away from their identity defaults. */
static void
fusion_randomize_bn (DfqModel *m)
{
    GHashTableIter it;
    gpointer key, value;
    guint64 stream = 100;
    g_hash_table_iter_init (&it, m->by_name);
    while (g_hash_table_iter_next (&it, &key, &value)) {
        const char *name = key;
        DfqTensor *t = value;
        if (t->n_dims != 1 || g_str_has_prefix (name, "fc."))
            continue;
        if (g_str_has_suffix (name, ".running_mean"))
            dfq_rand_normal_fill (t, 11, stream++, 0.0f, 0.5f);
        else if (g_str_has_suffix (name, ".running_var"))
            dfq_rand_uniform_fill (t, 11, stream++, 0.05f, 2.0f);
        else if (g_str_has_suffix (name, ".weight"))
            dfq_rand_normal_fill (t, 11, stream++, 1.0f, 0.5f);
        else if (g_str_has_suffix (name, ".bias"))
            dfq_rand_normal_fill (t, 11, stream++, 0.0f, 0.5f);
    }
}

static DfqTensor *
fusion_record_act (gpointer data, DfqForward *fwd, const char *site, DfqTensor *x)
{
    (void) fwd;
    g_string_append_printf (data, "a:%s ", site);
    return x;
}

static DfqTensor *
fusion_record_weight (gpointer data, DfqForward *fwd, const char *site, DfqTensor *x)
{
    (void) fwd;
    g_string_append_printf (data, "w:%s ", site);
    return x;
}

/* The quantization hooks of fusion_forward: none, hooks that record the
 * sites they see (into its @record), or the rounding hooks below. */
typedef enum {
    FUSION_HOOKS_NONE,
    FUSION_HOOKS_RECORD,
    FUSION_HOOKS_ROUND,
} FusionHooks;

/* A fake quantizer for the hooks: a new tensor in the forward's arena, x
 * rounded to a grid (1/8 for activations, 1/64 for weights). */
static DfqTensor *
fusion_round (DfqForward *fwd, DfqTensor *x, float steps)
{
    DfqTensor *y = dfq_tensor_new_like (fwd->arena, x);
    const float *in = dfq_tensor_f32 (x);
    float *out = dfq_tensor_f32 (y);
    for (gint64 i = 0; i < dfq_tensor_numel (x); i++)
        out[i] = roundf (in[i] * steps) / steps;
    return y;
}

static DfqTensor *
fusion_round_act (gpointer data, DfqForward *fwd, const char *site, DfqTensor *x)
{
    (void) data;
    (void) site;
    return fusion_round (fwd, x, 8.0f);
}

static DfqTensor *
fusion_round_weight (gpointer data, DfqForward *fwd, const char *site, DfqTensor *x)
{
    (void) data;
    (void) site;
    return fusion_round (fwd, x, 64.0f);
}

/* One eval forward, fused or not, with @hooks: the logits (a copy in @keep),
 * the bytes it took from its arena, the hook calls in order (into @record,
 * FUSION_HOOKS_RECORD) and the names of the taps of @patterns in order. */
static DfqTensor *
fusion_forward (DfqModel *m, DfqTensor *x, gboolean fused, const char *const *patterns, DfqArena *keep,
                gsize *used, FusionHooks hooks, GString *record, GString *tap_names)
{
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    g_autoptr (DfqTapSet) taps = patterns != NULL ? dfq_tap_set_new (patterns) : NULL;
    gboolean prev = dfq_layer_set_fusion_enabled (fused);
    DfqForward fwd;
    dfq_forward_init (&fwd, arena, FALSE);
    if (taps != NULL)
        dfq_forward_add_taps (&fwd, taps);
    if (hooks == FUSION_HOOKS_ROUND) {
        fwd.quantize_weight = fusion_round_weight;
        fwd.quantize_act = fusion_round_act;
    } else if (hooks == FUSION_HOOKS_RECORD) {
        fwd.quantize_weight = fusion_record_weight;
        fwd.quantize_act = fusion_record_act;
        fwd.quant_data = record;
    }
    DfqTensor *logits = dfq_model_forward (m, &fwd, x);
    dfq_layer_set_fusion_enabled (prev);
    if (used != NULL)
        *used = dfq_arena_used (arena);
    for (guint i = 0; tap_names != NULL && i < dfq_tap_set_size (taps); i++)
        g_string_append_printf (tap_names, "%s ", dfq_tap_set_get (taps, i)->name);
    return dfq_tensor_dup (keep, logits);
}

static gboolean
fusion_same_bits (const DfqTensor *a, const DfqTensor *b)
{
    return dfq_tensor_same_shape (a, b) &&
           memcmp (a->data, b->data, (gsize) dfq_tensor_numel (a) * sizeof (float)) == 0;
}

static void
test_fused_eval (gconstpointer data)
{
    const FusionCase *c = data;
    g_test_summary ("In eval mode without a graph, conv-BN-(add-)ReLU/ReLU6 fused into the conv (the 3x3 kernel's "
                    "registers and the AVX-512 1x1 and depthwise kernels', else after each image or plane) gives the "
                    "same logits, bit for bit, "
                    "as the separate ops; taps, hooks and graphs turn it off where needed; MobileNetV2's block-wise "
                    "no-grad eval gives the same bits");
    g_autoptr (DfqFeature) f = (DfqFeature *) make_model (c->yaml);
    DfqModel *m = (DfqModel *) f;
    fusion_randomize_bn (m);
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqTensor *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, c->batch, m->in_channels, m->height, m->width);
    dfq_rand_normal_fill (x, 7, 1, 0.0f, 1.0f);

    /* plain eval: grad mode off (evaluation), grad mode on with a frozen model
     * (nothing requires a gradient: a teacher), and a trainable model in grad
     * mode (a graph: nothing fuses) */
    DfqTensor *logits[3];
    gsize used_mode[3];
    for (int mode = 0; mode < 3; mode++) {
        gboolean prev = dfq_set_grad_enabled (mode > 0);
        dfq_model_set_trainable (m, mode != 1);
        gsize used_sep, used_fused;
        DfqTensor *sep = fusion_forward (m, x, FALSE, NULL, arena, &used_sep, FUSION_HOOKS_NONE, NULL, NULL);
        DfqTensor *fused = fusion_forward (m, x, TRUE, NULL, arena, &used_fused, FUSION_HOOKS_NONE, NULL, NULL);
        dfq_set_grad_enabled (prev);
        dfq_model_set_trainable (m, TRUE);
        g_assert_true (fusion_same_bits (sep, fused));
        g_test_message ("mode %d: arena bytes separate %" G_GSIZE_FORMAT ", fused %" G_GSIZE_FORMAT, mode,
                        used_sep, used_fused);
        if (c->blockwise && mode == 0)
            g_assert_cmpuint (used_fused, ==, used_sep); /* only the classifier uses the step's arena */
        else
            g_assert_cmpuint (used_fused, <, used_sep); /* it did fuse: into the conv, or BN with its ReLU */
        logits[mode] = fused;
        used_mode[mode] = used_fused;
    }
    /* block by block in the model's arenas (grad mode off) or all in the step's
     * arena (grad mode on, nothing to train): the same logits */
    g_assert_true (fusion_same_bits (logits[0], logits[1]));
    g_assert_true (fusion_same_bits (logits[1], logits[2]));
    if (c->blockwise)
        g_assert_cmpuint (used_mode[0] * 4, <, used_mode[1]);

    /* the hooks (quantization sites) see the same layers in the same order */
    g_autoptr (GString) hooks_sep = g_string_new (NULL);
    g_autoptr (GString) hooks_fused = g_string_new (NULL);
    DfqTensor *rec_sep = fusion_forward (m, x, FALSE, NULL, arena, NULL, FUSION_HOOKS_RECORD, hooks_sep, NULL);
    DfqTensor *rec_fused = fusion_forward (m, x, TRUE, NULL, arena, NULL, FUSION_HOOKS_RECORD, hooks_fused, NULL);
    g_assert_true (fusion_same_bits (rec_sep, rec_fused));
    g_assert_cmpstr (hooks_sep->str, ==, hooks_fused->str);

    /* hooks that quantize (new tensors in the forward's arena), as a quantized
     * student's evaluation: without a graph (MobileNetV2 block by block) and
     * with one (grad mode on, frozen model: all in the step's arena), the same
     * logits; the rounding changed them */
    gsize used_q[2];
    DfqTensor *quant[2];
    for (int mode = 0; mode < 2; mode++) {
        gboolean prev = dfq_set_grad_enabled (mode == 1);
        dfq_model_set_trainable (m, mode == 0);
        quant[mode] = fusion_forward (m, x, TRUE, NULL, arena, &used_q[mode], FUSION_HOOKS_ROUND, NULL, NULL);
        dfq_set_grad_enabled (prev);
        dfq_model_set_trainable (m, TRUE);
    }
    g_assert_true (fusion_same_bits (quant[0], quant[1]));
    g_assert_false (fusion_same_bits (quant[0], logits[0]));
    if (c->blockwise)
        g_assert_cmpuint (used_q[0] * 4, <, used_q[1]);

    /* taps on some layers: those stay separate, the others fuse */
    static const char *const patterns[] = { "*.bn1:in", "layers.1:body", "layers.2.conv2:out", "*:out", "*.down.*",
                                            "layers.*:out", "features.2:body", "features.3.conv.1.1:in",
                                            "features.1.conv.0.0:out", "*.conv.3:out", NULL };
    for (guint i = 0; patterns[i] != NULL; i++) {
        const char *const one[] = { patterns[i], "logits", NULL };
        g_autoptr (GString) taps_sep = g_string_new (NULL);
        g_autoptr (GString) taps_fused = g_string_new (NULL);
        DfqTensor *sep = fusion_forward (m, x, FALSE, one, arena, NULL, FUSION_HOOKS_NONE, NULL, taps_sep);
        DfqTensor *fused = fusion_forward (m, x, TRUE, one, arena, NULL, FUSION_HOOKS_NONE, NULL, taps_fused);
        g_assert_true (fusion_same_bits (sep, fused));
        g_assert_cmpstr (taps_sep->str, ==, taps_fused->str);
    }

    /* the input requires a gradient (the GDFQ teacher): a graph, no conv fusion
     * (only BN with its activation), and the same logits */
    DfqTensor *xg = dfq_tensor_dup (arena, x);
    xg->flags |= DFQ_TENSOR_FLAG_REQUIRES_GRAD;
    gsize used_sep, used_fused;
    DfqTensor *sep = fusion_forward (m, xg, FALSE, NULL, arena, &used_sep, FUSION_HOOKS_NONE, NULL, NULL);
    DfqTensor *fused = fusion_forward (m, xg, TRUE, NULL, arena, &used_fused, FUSION_HOOKS_NONE, NULL, NULL);
    g_assert_true (fusion_same_bits (sep, fused));
    g_assert_cmpuint (used_fused, <, used_sep);
}

/* ---- train-mode BN + ReLU/ReLU6 as one op (dfq_priv_batchnorm_act) ---- */

/* One training step (train-mode BN updating the running statistics, a
 * backward seeded with @gy), fused or not: the logits and the input's gradient
 * (copies in @keep), every parameter's gradient and every buffer afterwards
 * (@after, same order as @m's by_name walk), and the arena bytes it took. */
static DfqTensor *
fusion_train_step (DfqModel *m, DfqTensor *x, const DfqTensor *gy, gboolean fused, DfqArena *keep,
                   GPtrArray *after, gsize *used)
{
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    for (guint i = 0; i < m->params->len; i++)
        dfq_tensor_zero_grad (m->params->pdata[i]);
    dfq_tensor_zero_grad (x);
    gboolean prev = dfq_layer_set_fusion_enabled (fused);
    DfqForward fwd;
    dfq_forward_init (&fwd, arena, TRUE);
    DfqTensor *logits = dfq_model_forward (m, &fwd, x);
    dfq_backward_with_grad (logits, gy, arena);
    dfq_layer_set_fusion_enabled (prev);
    *used = dfq_arena_used (arena);
    GHashTableIter it;
    gpointer key, value;
    g_hash_table_iter_init (&it, m->by_name);
    while (g_hash_table_iter_next (&it, &key, &value)) {
        DfqTensor *t = value;
        g_ptr_array_add (after, dfq_tensor_dup (keep, t));
        if (t->grad != NULL)
            g_ptr_array_add (after, dfq_tensor_dup (keep, t->grad));
    }
    g_ptr_array_add (after, dfq_tensor_dup (keep, x->grad));
    return dfq_tensor_dup (keep, logits);
}

static void
test_fused_train (gconstpointer data)
{
    const FusionCase *c = data;
    g_test_summary ("In training (a graph, batch statistics, running statistics updated), BN followed by ReLU or "
                    "ReLU6 as one op gives the logits, every parameter gradient, the input gradient and the new "
                    "running statistics of the separate ops bit for bit, with less arena memory");
    g_autoptr (DfqFeature) f = (DfqFeature *) make_model (c->yaml);
    DfqModel *m = (DfqModel *) f;
    fusion_randomize_bn (m);
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    DfqTensor *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, c->batch + 1, m->in_channels, m->height, m->width);
    dfq_rand_normal_fill (x, 7, 2, 0.0f, 1.0f);
    dfq_tensor_set_param (x);

    /* the model's state before the step, to start the second step from it */
    g_autoptr (GPtrArray) before = g_ptr_array_new ();
    GHashTableIter it;
    gpointer key, value;
    g_hash_table_iter_init (&it, m->by_name);
    while (g_hash_table_iter_next (&it, &key, &value))
        g_ptr_array_add (before, dfq_tensor_dup (arena, value));

    g_autoptr (GPtrArray) after_sep = g_ptr_array_new ();
    g_autoptr (GPtrArray) after_fused = g_ptr_array_new ();
    gsize used_sep, used_fused;
    DfqTensor *gy = NULL, *sep = NULL;
    for (int fused = 0; fused < 2; fused++) {
        guint k = 0;
        g_hash_table_iter_init (&it, m->by_name);
        while (g_hash_table_iter_next (&it, &key, &value))
            dfq_tensor_copy_data (value, before->pdata[k++]);
        if (gy == NULL) {
            DfqForward probe;
            dfq_forward_init (&probe, arena, FALSE);
            gy = dfq_tensor_dup (arena, dfq_model_forward (m, &probe, x));
            dfq_rand_normal_fill (gy, 7, 3, 0.0f, 1.0f);
        }
        if (!fused)
            sep = fusion_train_step (m, x, gy, FALSE, arena, after_sep, &used_sep);
        else {
            DfqTensor *logits = fusion_train_step (m, x, gy, TRUE, arena, after_fused, &used_fused);
            g_assert_true (fusion_same_bits (sep, logits));
        }
    }
    g_assert_cmpuint (after_sep->len, ==, after_fused->len);
    g_assert_cmpuint (after_sep->len, >, before->len); /* gradients were compared too */
    for (guint i = 0; i < after_sep->len; i++)
        g_assert_true (fusion_same_bits (after_sep->pdata[i], after_fused->pdata[i]));
    /* the step did move the running statistics, and it did fuse */
    gboolean moved = FALSE;
    for (guint i = 0; i < before->len && !moved; i++)
        moved = !fusion_same_bits (before->pdata[i], after_fused->pdata[i]) &&
                dfq_tensor_same_shape (before->pdata[i], after_fused->pdata[i]);
    g_assert_true (moved);
    g_test_message ("arena bytes separate %" G_GSIZE_FORMAT ", fused %" G_GSIZE_FORMAT, used_sep, used_fused);
    g_assert_cmpuint (used_fused, <, used_sep);
}

static char *
shared_fixture (const char *name)
{
    const char *dir = g_getenv ("DFQ_SHARED_DIR");
    if (dir != NULL)
        return g_build_filename (dir, "fixtures", name, NULL);
    return g_test_build_filename (G_TEST_DIST, "..", "..", "shared", "fixtures", name, NULL);
}

static void
test_fixture_teacher_accuracy (void)
{
    g_test_summary ("The PyTorch-trained ResNet-20 teacher scores 94.15 +- 0.05 % on the Fashion-MNIST test split");
    g_autofree char *path = shared_fixture ("resnet20-fmnist-torch.safetensors");
    if (!g_file_test (path, G_FILE_TEST_EXISTS)) {
        g_test_skip ("../shared/fixtures is absent");
        return;
    }
    g_autoptr (GError) error = NULL;
    DfqDataset *ds = dfq_dataset_open ("fashion-mnist", DFQ_DATASET_SPLIT_TEST, NULL, &error);
    if (ds == NULL && g_error_matches (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_NOT_FOUND)) {
        g_test_skip ("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)");
        return;
    }
    g_assert_no_error (error);
    g_autoptr (DfqFeature) f = (DfqFeature *) make_model ("use: resnet-cifar\ndepth: 20\nin_channels: 1\nimage_size: 28\n");
    g_assert_true (dfq_model_load ((DfqModel *) f, path, NULL, &error));
    g_assert_no_error (error);
    DfqEvalResult r;
    g_assert_true (dfq_evaluate ((DfqModel *) f, NULL, ds, 500, 0, &r, &error));
    g_assert_no_error (error);
    g_test_message ("fixture teacher: top-1 %.2f %% top-5 %.2f %% on %u images in %.1f s", r.top1, r.top5, r.n, r.seconds);
    g_assert_cmpuint (r.n, ==, 10000);
    g_assert_cmpfloat (fabs (r.top1 - 94.15), <=, 0.05);
    dfq_eval_result_clear (&r);
    dfq_dataset_free (ds);
}

/* Issue 15: the PyTorch-trained MobileNetV2 of ../shared/fixtures, loaded with
 * the rename rules of pipelines/eval/mobilenetv2-fmnist-fixture.yaml (the
 * documented ones), scores the fixture's 93.66 % on the 10,000 test images. */
static void
test_fixture_mobilenetv2_accuracy (void)
{
    g_test_summary ("The PyTorch-trained MobileNetV2 fixture, renamed by the rules of "
                    "pipelines/eval/mobilenetv2-fmnist-fixture.yaml, scores 93.66 % on the Fashion-MNIST test split");
    g_autofree char *path = shared_fixture ("mobilenetv2-fmnist-torch.safetensors");
    if (!g_file_test (path, G_FILE_TEST_EXISTS)) {
        g_test_skip ("../shared/fixtures is absent");
        return;
    }
    g_autoptr (GError) error = NULL;
    DfqDataset *ds = dfq_dataset_open ("fashion-mnist", DFQ_DATASET_SPLIT_TEST, NULL, &error);
    if (ds == NULL && g_error_matches (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_NOT_FOUND)) {
        g_test_skip ("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)");
        return;
    }
    g_assert_no_error (error);
    g_autofree char *yaml = g_test_build_filename (G_TEST_DIST, "..", "pipelines", "eval",
                                                   "mobilenetv2-fmnist-fixture.yaml", NULL);
    g_autoptr (DfqPipeline) pipeline = dfq_pipeline_new_from_file (registry, yaml, NULL, &error);
    g_assert_no_error (error);
    const DfqPipelineConfig *cfg = dfq_pipeline_get_config (pipeline);
    DfqModel *m = (DfqModel *) cfg->teacher.model;
    g_assert_true (dfq_model_load (m, path, (const char *const *) cfg->teacher.rename, &error));
    g_assert_no_error (error);
    DfqEvalResult r;
    g_assert_true (dfq_evaluate (m, NULL, ds, (guint) cfg->eval.batch, 0, &r, &error));
    g_assert_no_error (error);
    g_test_message ("mobilenetv2 fixture: top-1 %.2f %% top-5 %.2f %% on %u images in %.1f s", r.top1, r.top5, r.n,
                    r.seconds);
    g_assert_cmpuint (r.n, ==, 10000);
    g_assert_cmpuint (r.correct_top1, ==, 9366);
    dfq_eval_result_clear (&r);
    dfq_dataset_free (ds);
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    dfq_set_num_threads (2);
    registry = dfq_test_registry_new ();
    for (guint i = 0; i < G_N_ELEMENTS (interop_cases); i++) {
        g_autofree char *p = g_strdup_printf ("/models/interop/%s", interop_cases[i].name);
        g_test_add_data_func (p, &interop_cases[i], test_interop);
    }
    g_test_add_func ("/models/resnet-cifar/param-count", test_resnet20_param_count);
    g_test_add_func ("/models/resnet-cifar/bad-depth", test_bad_depth);
    g_test_add_data_func ("/models/resnet-cifar/blocks-compose", "use: resnet-cifar\ndepth: 20\nin_channels: 1\nimage_size: 28\nwidth: 4\n", test_blocks_compose);
    g_test_add_data_func ("/models/mobilenetv2-cifar/blocks-compose", "use: mobilenetv2-cifar\nwidth_mult: 0.25\n", test_blocks_compose);
    g_test_add_data_func ("/models/tiny-cnn/blocks-compose", "use: tiny-cnn\n", test_blocks_compose);
    g_test_add_func ("/models/resnet-cifar/fixture-teacher-accuracy", test_fixture_teacher_accuracy);
    g_test_add_func ("/models/mobilenetv2-cifar/fixture-teacher-accuracy", test_fixture_mobilenetv2_accuracy);
    for (guint i = 0; i < G_N_ELEMENTS (fusion_cases); i++) {
        g_autofree char *p = g_strdup_printf ("/models/%s/fused-eval/%u",
                                              fusion_cases[i].blockwise ? "mobilenetv2-cifar" : "resnet-cifar", i);
        g_test_add_data_func (p, &fusion_cases[i], test_fused_eval);
        g_autofree char *pt = g_strdup_printf ("/models/%s/fused-train/%u",
                                               fusion_cases[i].blockwise ? "mobilenetv2-cifar" : "resnet-cifar", i);
        g_test_add_data_func (pt, &fusion_cases[i], test_fused_train);
    }
    int rc = g_test_run ();
    dfq_registry_free (registry);
    return rc;
}
