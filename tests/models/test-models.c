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
    int rc = g_test_run ();
    dfq_registry_free (registry);
    return rc;
}
