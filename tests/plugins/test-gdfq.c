/* Synthesizer plugin gdfq (METHODS.md 2.1-2.2): output shape for 28x28 and
 * 32x32 teachers, the final affine-free BN (per-channel zero mean, unit
 * variance), CE and BNS decreasing while the generator trains against a small
 * pretrained teacher, bit-identical runs for one seed, unique state names,
 * defaults, and shape errors. */
#include <math.h>
#include <string.h>

#include "dfq-test-util.h"
#include <dfq/dfq.h>

static DfqRegistry *registry;

static DfqFeature *
make_feature (DfqFeatureKind kind, const char *yaml)
{
    return dfq_test_make_feature (registry, kind, yaml);
}

typedef struct {
    const char *model_yaml;
    const char *weights; /* file name under tests/interop, or under ../shared/fixtures if @shared */
    gboolean shared;
    int channels, size;
} TeacherCase;

/* 1x28x28 (Fashion-MNIST layout) and 3x32x32 (CIFAR layout; the d8-w4
 * weights were made at 16x16 but the network is size-agnostic). The interop
 * weights are random (with random BN statistics). */
static const TeacherCase teacher_28 = {
    "use: resnet-cifar\ndepth: 20\nwidth: 8\nin_channels: 1\nclasses: 10\nimage_size: 28\n",
    "resnet-cifar-d20-w8-c1.safetensors", FALSE, 1, 28
};
static const TeacherCase teacher_32 = {
    "use: resnet-cifar\ndepth: 8\nwidth: 4\nin_channels: 3\nclasses: 10\nimage_size: 32\n",
    "resnet-cifar-d8-w4.safetensors", FALSE, 3, 32
};
/* The trained ResNet-20 Fashion-MNIST teacher (94.15 %), when ../shared is there. */
static const TeacherCase teacher_fmnist = {
    "use: resnet-cifar\ndepth: 20\nin_channels: 1\nclasses: 10\nimage_size: 28\n",
    "resnet20-fmnist-torch.safetensors", TRUE, 1, 28
};

static char *
teacher_path (const TeacherCase *tc)
{
    if (!tc->shared)
        return g_test_build_filename (G_TEST_DIST, "interop", tc->weights, NULL);
    const char *dir = g_getenv ("DFQ_SHARED_DIR");
    if (dir != NULL)
        return g_build_filename (dir, "fixtures", tc->weights, NULL);
    return g_test_build_filename (G_TEST_DIST, "..", "..", "shared", "fixtures", tc->weights, NULL);
}

typedef struct {
    DfqTestSynth s;   /* teacher only: no student */
    gboolean trained; /* the trained shared teacher, not random interop weights */
} GdfqFixture;

static void
fixture_setup (GdfqFixture *f, gconstpointer data)
{
    const TeacherCase *tc = data != NULL ? data : &teacher_28;
    g_autoptr (GError) error = NULL;
    g_autofree char *path = teacher_path (tc);
    if (tc->shared && !g_file_test (path, G_FILE_TEST_EXISTS)) {
        g_test_message ("%s is absent: using the random interop teacher", path);
        tc = &teacher_28;
        g_free (path);
        path = teacher_path (tc);
    }
    f->trained = tc->shared;
    DfqModel *teacher = (DfqModel *) make_feature (DFQ_FEATURE_MODEL, tc->model_yaml);
    g_assert_true (dfq_model_load (teacher, path, NULL, &error));
    g_assert_no_error (error);
    dfq_test_synth_init (&f->s, registry, teacher, NULL, 1, 4, 8, tc->channels, tc->size);
}

static void
fixture_teardown (GdfqFixture *f, gconstpointer data G_GNUC_UNUSED)
{
    dfq_test_synth_clear (&f->s);
}

static DfqSynthesizer *
make_gdfq (GdfqFixture *f, const char *yaml)
{
    return dfq_test_synth_new (&f->s, yaml, FALSE);
}

/* One runner iteration: reset the scratch arena, step. */
static void
run_step (GdfqFixture *f, DfqSynthesizer *s, gint64 step, DfqSynthBatch *out)
{
    dfq_test_synth_step (&f->s, s, step, out);
}

static void
test_shape_and_output_bn (GdfqFixture *f, gconstpointer data)
{
    const TeacherCase *tc = data;
    g_test_summary ("x = G(z, y) is [B, C, H, W] with init size H/4, labels in [0, C), and the final "
                    "BN(affine=False) leaves every channel with zero mean and unit variance");
    g_autoptr (DfqFeature) feature = (DfqFeature *) make_gdfq (f, "use: gdfq");
    DfqSynthesizer *s = (DfqSynthesizer *) feature;
    DFQ_SYNTHESIZER_CLASS (s)->start_epoch (s, &f->s.ctx);
    DfqSynthBatch out;
    run_step (f, s, 0, &out);

    DfqTensor *x = out.images;
    g_assert_cmpint (x->n_dims, ==, 4);
    g_assert_cmpint (x->shape[0], ==, f->s.ctx.batch);
    g_assert_cmpint (x->shape[1], ==, tc->channels);
    g_assert_cmpint (x->shape[2], ==, tc->size);
    g_assert_cmpint (x->shape[3], ==, tc->size);
    g_assert_false (dfq_tensor_requires_grad (x));
    g_assert_true (dfq_tensor_all_finite (x));
    g_assert_nonnull (out.labels);
    g_assert_cmpint (out.labels->dtype, ==, DFQ_DTYPE_I32);
    g_assert_cmpint (out.labels->shape[0], ==, f->s.ctx.batch);
    for (gint64 i = 0; i < f->s.ctx.batch; i++) {
        g_assert_cmpint (dfq_tensor_i32 (out.labels)[i], >=, 0);
        g_assert_cmpint (dfq_tensor_i32 (out.labels)[i], <, f->s.ctx.classes);
    }
    g_assert_null (out.soft_labels);
    g_assert_cmpuint (out.n_loss_terms, ==, 2);
    g_assert_true (isfinite (out.loss_terms[0]) && out.loss_terms[0] > 0.0);
    g_assert_true (isfinite (out.loss_terms[1]) && out.loss_terms[1] > 0.0);
    /* Default list: CE(teacher) + 0.1 BNS. */
    g_assert_cmpfloat (fabs (out.loss - (out.loss_terms[0] + 0.1 * out.loss_terms[1])), <=, 1e-5 * out.loss);

    const gint64 n = x->shape[0], c = x->shape[1], hw = x->shape[2] * x->shape[3];
    for (gint64 ch = 0; ch < c; ch++) {
        double s1 = 0.0, s2 = 0.0;
        for (gint64 b = 0; b < n; b++)
            for (gint64 k = 0; k < hw; k++) {
                double v = dfq_tensor_f32 (x)[(b * c + ch) * hw + k];
                s1 += v;
                s2 += v * v;
            }
        double mean = s1 / (double) (n * hw), var = s2 / (double) (n * hw) - mean * mean;
        g_test_message ("channel %" G_GINT64_FORMAT ": mean %.3g var %.6f", ch, mean, var);
        g_assert_cmpfloat (fabs (mean), <=, 1e-4);
        /* v/(v + 1e-5) for the tanh output variance v (~0.005 at init): 1 up to the eps. */
        g_assert_cmpfloat (fabs (var - 1.0), <=, 5e-3);
    }
}

static double
mean_of (const double *v, guint n)
{
    double s = 0.0;
    for (guint i = 0; i < n; i++)
        s += v[i];
    return s / n;
}

#define DECREASE_STEPS 30
#define DECREASE_WINDOW 5

static void
test_losses_decrease (GdfqFixture *f, gconstpointer data G_GNUC_UNUSED)
{
    g_test_summary ("Training G against a teacher lowers CE(T(x), y) and BNS over 30 steps (mean of the first "
                    "5 steps vs the last 5; by 10 % on the trained Fashion-MNIST teacher at the GDFQ defaults), "
                    "with a scratch arena that stops growing");
    /* The random interop teacher's BN targets are random too: G learns slowly
     * there, so that fallback uses a 10x learning rate and asks for less. */
    g_autoptr (DfqFeature) feature = (DfqFeature *) make_gdfq (f, f->trained ? "use: gdfq" : "{use: gdfq, optimizer: {lr: 1e-2}}");
    DfqSynthesizer *s = (DfqSynthesizer *) feature;
    DFQ_SYNTHESIZER_CLASS (s)->start_epoch (s, &f->s.ctx);
    double ce[DECREASE_STEPS], bns[DECREASE_STEPS];
    guint allocs_after_warmup = 0;
    for (gint64 i = 0; i < DECREASE_STEPS; i++) {
        DfqSynthBatch out;
        run_step (f, s, i, &out);
        ce[i] = out.loss_terms[0];
        bns[i] = out.loss_terms[1];
        if (i == 2)
            allocs_after_warmup = dfq_arena_n_system_allocs (f->s.arena);
    }
    g_assert_cmpint (DFQ_SYNTHESIZER_CLASS (s)->get_optim_step (s), ==, DECREASE_STEPS);
    double ce0 = mean_of (ce, DECREASE_WINDOW), ce1 = mean_of (ce + DECREASE_STEPS - DECREASE_WINDOW, DECREASE_WINDOW);
    double bns0 = mean_of (bns, DECREASE_WINDOW), bns1 = mean_of (bns + DECREASE_STEPS - DECREASE_WINDOW, DECREASE_WINDOW);
    g_test_message ("%s teacher: CE(teacher) %.4f -> %.4f, BNS %.4f -> %.4f", f->trained ? "trained" : "random",
                    ce0, ce1, bns0, bns1);
    double factor = f->trained ? 0.9 : 1.0;
    g_assert_cmpfloat (ce1, <, factor * ce0);
    g_assert_cmpfloat (bns1, <, factor * bns0);
    g_test_message ("scratch arena: %u system allocations after 3 steps, %u after %d",
                    allocs_after_warmup, dfq_arena_n_system_allocs (f->s.arena), DECREASE_STEPS);
    g_assert_cmpuint (dfq_arena_n_system_allocs (f->s.arena), ==, allocs_after_warmup);
}

/* Runs @n steps of a fresh gdfq and returns its checkpoint state, copied into
 * @keep (names and values). */
static GPtrArray *
run_and_snapshot (GdfqFixture *f, DfqArena *keep, guint64 seed, int n, DfqTensor **last_images)
{
    f->s.ctx.seed = seed;
    g_autoptr (DfqFeature) feature = (DfqFeature *) make_gdfq (f, "use: gdfq");
    DfqSynthesizer *s = (DfqSynthesizer *) feature;
    DFQ_SYNTHESIZER_CLASS (s)->start_epoch (s, &f->s.ctx);
    DfqSynthBatch out;
    for (int i = 0; i < n; i++)
        run_step (f, s, i, &out);
    *last_images = dfq_tensor_dup (keep, out.images);
    g_autoptr (GPtrArray) state = g_ptr_array_new ();
    DFQ_SYNTHESIZER_CLASS (s)->get_state (s, state);
    GPtrArray *copy = g_ptr_array_new ();
    for (guint i = 0; i < state->len; i++) {
        const DfqTensor *t = state->pdata[i];
        DfqTensor *c = dfq_tensor_dup (keep, t);
        dfq_tensor_set_name (c, "%s", t->name);
        g_ptr_array_add (copy, c);
    }
    return copy;
}

static void
test_deterministic (GdfqFixture *f, gconstpointer data G_GNUC_UNUSED)
{
    g_test_summary ("Two runs with one seed give bit-identical generator weights, BN buffers, Adam state and "
                    "images; another seed gives other weights");
    g_autoptr (DfqArena) keep = dfq_arena_new (0);
    DfqTensor *xa, *xb, *xc;
    g_autoptr (GPtrArray) a = run_and_snapshot (f, keep, 5, 3, &xa);
    g_autoptr (GPtrArray) b = run_and_snapshot (f, keep, 5, 3, &xb);
    g_autoptr (GPtrArray) c = run_and_snapshot (f, keep, 6, 3, &xc);
    g_assert_cmpuint (a->len, ==, b->len);
    gboolean any_diff_c = FALSE;
    for (guint i = 0; i < a->len; i++) {
        const DfqTensor *ta = a->pdata[i], *tb = b->pdata[i], *tc = c->pdata[i];
        g_assert_cmpstr (ta->name, ==, tb->name);
        gsize bytes = (gsize) dfq_tensor_numel (ta) * sizeof (float);
        if (memcmp (ta->data, tb->data, bytes) != 0) {
            g_test_fail_printf ("%s differs between two runs with the same seed", ta->name);
            return;
        }
        any_diff_c |= memcmp (ta->data, tc->data, bytes) != 0;
    }
    g_assert_true (any_diff_c);
    g_assert_cmpint (memcmp (xa->data, xb->data, (gsize) dfq_tensor_numel (xa) * sizeof (float)), ==, 0);
}

static void
test_state_names (GdfqFixture *f, gconstpointer data G_GNUC_UNUSED)
{
    g_test_summary ("get_state: generator weights, BN running stats and Adam buffers, uniquely named generator.*");
    g_autoptr (DfqFeature) feature = (DfqFeature *) make_gdfq (f, "use: gdfq");
    DfqSynthesizer *s = (DfqSynthesizer *) feature;
    g_autoptr (GPtrArray) state = g_ptr_array_new ();
    DFQ_SYNTHESIZER_CLASS (s)->get_state (s, state);
    g_autoptr (GHashTable) seen = g_hash_table_new (g_str_hash, g_str_equal);
    guint n_params = 0, n_buffers = 0, n_adam = 0;
    for (guint i = 0; i < state->len; i++) {
        DfqTensor *t = state->pdata[i];
        g_assert_true (g_str_has_prefix (t->name, "generator."));
        if (!g_hash_table_add (seen, t->name)) {
            g_test_fail_printf ("duplicate state name %s", t->name);
            return;
        }
        if (g_str_has_suffix (t->name, ".exp_avg") || g_str_has_suffix (t->name, ".exp_avg_sq"))
            n_adam++;
        else if (t->flags & DFQ_TENSOR_FLAG_PARAM)
            n_params++;
        else
            n_buffers++;
    }
    /* label_emb, l1.0 w/b, 3 convs w/b, 3 affine BNs w/b = 15 params;
     * 4 BNs x running mean/var = 8 buffers; 2 Adam buffers per param. */
    g_assert_cmpuint (n_params, ==, 15);
    g_assert_cmpuint (n_buffers, ==, 8);
    g_assert_cmpuint (n_adam, ==, 30);
    g_assert_nonnull (g_hash_table_lookup (seen, "generator.conv_blocks1.1.running_var"));
    g_assert_nonnull (g_hash_table_lookup (seen, "generator.label_emb.weight"));
    g_assert_nonnull (g_hash_table_lookup (seen, "generator.l1.0.weight.exp_avg_sq"));
}

static void
test_defaults (GdfqFixture *f G_GNUC_UNUSED, gconstpointer data G_GNUC_UNUSED)
{
    g_test_summary ("Defaults: latent 100, inner BN eps 0.8, losses [ce(teacher), 0.1 bns], "
                    "Adam 1e-3 (0.5, 0.999), multistep [100, 200, 300] x 0.1");
    const char *want[] = { "latent: 100", "bn_eps_inner: 0.8", "use: ce", "target: teacher", "use: bns",
                           "weight: 0.1", "use: adam", "betas: [0.5, 0.999]", "schedule: multistep",
                           "[100, 200, 300]" };
    g_free (dfq_test_assert_defaults (registry, DFQ_FEATURE_SYNTHESIZER, "gdfq", want, G_N_ELEMENTS (want)));
}

static void
test_optimizer_override (void)
{
    g_test_summary ("Keys written under optimizer: merge over gdfq's own defaults (Adam, betas (0.5, 0.999))");
    g_autoptr (DfqFeature) feature = make_feature (DFQ_FEATURE_SYNTHESIZER,
                                                   "use: gdfq\noptimizer: {milestones: [10, 20]}\nbn_eps_inner: 1e-5\n");
    g_autoptr (DfqConfigNode) cfg = dfq_params_to_config (feature->klass->params, feature->klass->n_params, feature);
    g_autofree char *yaml = dfq_config_to_yaml (cfg);
    g_assert_nonnull (strstr (yaml, "use: adam"));
    g_assert_nonnull (strstr (yaml, "betas: [0.5, 0.999]"));
    g_assert_nonnull (strstr (yaml, "milestones: [10, 20]"));
    g_assert_nonnull (strstr (yaml, "lr: 0.001"));
    g_assert_nonnull (strstr (yaml, "bn_eps_inner: 1e-05"));
}

/* Copies of the trainable tensors of get_state. */
static GPtrArray *
snapshot_params (DfqSynthesizer *s, DfqArena *keep)
{
    g_autoptr (GPtrArray) state = g_ptr_array_new ();
    DFQ_SYNTHESIZER_CLASS (s)->get_state (s, state);
    GPtrArray *out = g_ptr_array_new ();
    for (guint i = 0; i < state->len; i++) {
        DfqTensor *t = state->pdata[i];
        if (t->flags & DFQ_TENSOR_FLAG_PARAM)
            g_ptr_array_add (out, dfq_tensor_dup (keep, t));
    }
    return out;
}

static float
max_param_change (GPtrArray *a, GPtrArray *b)
{
    float worst = 0.0f;
    for (guint i = 0; i < a->len; i++)
        worst = MAX (worst, dfq_tensor_max_abs_diff (a->pdata[i], b->pdata[i]));
    return worst;
}

static void
test_schedule (GdfqFixture *f, gconstpointer data G_GNUC_UNUSED)
{
    g_test_summary ("start_epoch applies the multistep schedule by epoch: with gamma 0 after epoch 1 "
                    "the generator stops moving");
    g_autoptr (DfqFeature) feature = (DfqFeature *) make_gdfq (f, "{use: gdfq, optimizer: {milestones: [1], gamma: 0}}");
    DfqSynthesizer *s = (DfqSynthesizer *) feature;
    g_autoptr (DfqArena) keep = dfq_arena_new (0);
    DfqSynthBatch out;
    f->s.ctx.epoch = 0;
    DFQ_SYNTHESIZER_CLASS (s)->start_epoch (s, &f->s.ctx);
    g_autoptr (GPtrArray) p0 = snapshot_params (s, keep);
    run_step (f, s, 0, &out);
    g_autoptr (GPtrArray) p1 = snapshot_params (s, keep);
    g_assert_cmpfloat (max_param_change (p0, p1), >, 0.0f);
    f->s.ctx.epoch = 1;
    DFQ_SYNTHESIZER_CLASS (s)->start_epoch (s, &f->s.ctx);
    run_step (f, s, 1, &out);
    g_autoptr (GPtrArray) p2 = snapshot_params (s, keep);
    g_assert_cmpfloat (max_param_change (p1, p2), ==, 0.0f);
    g_assert_cmpint (DFQ_SYNTHESIZER_CLASS (s)->get_optim_step (s), ==, 2);
}

static void
test_bad_shape (GdfqFixture *f, gconstpointer data G_GNUC_UNUSED)
{
    g_test_summary ("A teacher input that is not 4 * init_size is a DFQ_MODEL_ERROR_SHAPE at prepare()");
    g_autoptr (DfqFeature) feature = make_feature (DFQ_FEATURE_SYNTHESIZER, "use: gdfq");
    DfqSynthesizer *s = (DfqSynthesizer *) feature;
    f->s.ctx.image_shape[1] = f->s.ctx.image_shape[2] = 30;
    g_autoptr (GError) error = NULL;
    g_assert_false (DFQ_SYNTHESIZER_CLASS (s)->prepare (s, &f->s.ctx, &error));
    g_assert_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE);
}

static void
test_empty_losses (void)
{
    g_test_summary ("An empty generator loss list is rejected when the pipeline is bound");
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqConfigNode) node = dfq_config_parse ("use: gdfq\nlosses: []\n", -1, "empty.yaml", &error);
    const DfqFeatureClass *klass = dfq_registry_find (registry, DFQ_FEATURE_SYNTHESIZER, "gdfq");
    DfqFeature *f = dfq_feature_new_from_config (registry, klass, node, FALSE, "synthesizer", &error);
    g_assert_null (f);
    g_assert_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE);
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    dfq_set_num_threads (2);
    registry = dfq_test_registry_new ();
    g_assert_nonnull (dfq_registry_find (registry, DFQ_FEATURE_SYNTHESIZER, "gdfq"));

#define ADD(path, data, fn) g_test_add (path, GdfqFixture, data, fixture_setup, fn, fixture_teardown)
    ADD ("/plugin/gdfq/shape/28x28", &teacher_28, test_shape_and_output_bn);
    ADD ("/plugin/gdfq/shape/32x32", &teacher_32, test_shape_and_output_bn);
    ADD ("/plugin/gdfq/losses-decrease", &teacher_fmnist, test_losses_decrease);
    ADD ("/plugin/gdfq/deterministic", &teacher_28, test_deterministic);
    ADD ("/plugin/gdfq/state-names", &teacher_28, test_state_names);
    ADD ("/plugin/gdfq/defaults", &teacher_28, test_defaults);
    ADD ("/plugin/gdfq/bad-shape", &teacher_28, test_bad_shape);
    ADD ("/plugin/gdfq/schedule", &teacher_28, test_schedule);
#undef ADD
    g_test_add_func ("/plugin/gdfq/empty-losses", test_empty_losses);
    g_test_add_func ("/plugin/gdfq/optimizer-override", test_optimizer_override);
    int rc = g_test_run ();
    dfq_registry_free (registry);
    return rc;
}
