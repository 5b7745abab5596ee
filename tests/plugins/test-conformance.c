/* Conformance of every feature of every plugin in the build tree (STYLE.md B.11):
 * each parameter has a description and a default inside its range, the feature
 * instantiates with its defaults, runs one step on a toy setup (a tiny CNN,
 * batch 4), gives finite results, and gives identical results twice with the
 * same seed. Quantizers also run one backward pass in LEARN mode: every
 * learnable tensor of their parameter groups gets a finite gradient.
 * Transforms wrap the tiny CNN's conv inputs in one forward and backward
 * (conformance_transform). Features
 * with required parameters get them from conformance_required_config(). A new
 * plugin is covered without writing a test. */
#include <math.h>
#include <string.h>

#include <glib/gstdio.h>

#include "dfq-test-util.h"
#include <dfq/dfq.h>

static DfqRegistry *registry;
static char *tmpdir;
static gboolean have_fmnist;

/* Features whose defaults are an official budget too slow for a unit test
 * (genie-d: 4000 iterations per batch), with the config the check runs. */
static const char *const conformance_fast[][2] = {
    { "genie-d", "{iters: 3}" },
};

/* The config of features that cannot run on their defaults alone (a required
 * parameter, or conformance_fast), or NULL: defaults. */
static DfqConfigNode *
conformance_required_config (const DfqFeatureClass *klass)
{
    for (guint i = 0; i < G_N_ELEMENTS (conformance_fast); i++)
        if (g_str_equal (klass->name, conformance_fast[i][0]) && klass->kind == DFQ_FEATURE_SYNTHESIZER) {
            g_autoptr (GError) error = NULL;
            DfqConfigNode *node = dfq_config_parse (conformance_fast[i][1], -1, "<conformance>", &error);
            g_assert_no_error (error);
            return node;
        }
    if (!g_str_equal (klass->name, "image-set"))
        return NULL;
    /* a set of 6 random 1x28x28 images with labels */
    g_autoptr (DfqArena) a = dfq_arena_new (0);
    DfqTensor *x = dfq_tensor_new_4d (a, DFQ_DTYPE_F32, 6, 1, 28, 28);
    DfqTensor *y = dfq_tensor_new_1d (a, DFQ_DTYPE_I32, 6);
    dfq_rand_normal_fill (x, 5, 1, 0.0f, 1.0f);
    dfq_rand_int_fill (y, 5, 2, 10);
    g_autofree char *path = g_build_filename (tmpdir, "images.safetensors", NULL);
    const char *names[] = { "images", "labels", NULL };
    DfqTensor *tensors[] = { x, y };
    g_autoptr (GError) error = NULL;
    g_assert_true (dfq_safetensors_save_list (path, names, tensors, 2, NULL, &error));
    g_autofree char *text = g_strdup_printf ("{path: '%s'}", path);
    DfqConfigNode *node = dfq_config_parse (text, -1, "<conformance>", &error);
    g_assert_no_error (error);
    return node;
}

static gboolean
conformance_default_in_range (const DfqParamSpec *spec, gconstpointer base)
{
    const guint8 *p = (const guint8 *) base + spec->offset;
    switch (spec->type) {
    case DFQ_PARAM_TYPE_INT:
        return *(const gint *) p >= spec->min && *(const gint *) p <= spec->max;
    case DFQ_PARAM_TYPE_DOUBLE:
        return *(const gdouble *) p >= spec->min && *(const gdouble *) p <= spec->max;
    case DFQ_PARAM_TYPE_INT_LIST:
    case DFQ_PARAM_TYPE_DOUBLE_LIST: {
        const DfqNumberList *l = (const DfqNumberList *) p;
        for (guint i = 0; i < l->n; i++)
            if (l->v[i] < spec->min || l->v[i] > spec->max)
                return FALSE;
        return TRUE;
    }
    default:
        return TRUE;
    }
}

static void
conformance_check_specs (const char *owner, const DfqParamSpec *specs, guint n, gconstpointer base)
{
    for (guint i = 0; i < n; i++) {
        const DfqParamSpec *s = &specs[i];
        if (s->description == NULL || s->description[0] == '\0')
            g_test_fail_printf ("%s: parameter '%s' has no description", owner, s->name);
        if (!(s->flags & DFQ_PARAM_FLAG_REQUIRED) && !conformance_default_in_range (s, base))
            g_test_fail_printf ("%s: the default of '%s' is outside its range", owner, s->name);
        if (s->type == DFQ_PARAM_TYPE_STRUCT)
            conformance_check_specs (owner, s->sub_params, s->n_sub_params, (const guint8 *) base + s->offset);
    }
}

static DfqModel *
conformance_tiny_model (void)
{
    g_autoptr (GError) error = NULL;
    const DfqFeatureClass *k = dfq_registry_find (registry, DFQ_FEATURE_MODEL, "tiny-cnn");
    g_assert_nonnull (k);
    DfqFeature *f = dfq_feature_new_default (registry, k, &error);
    g_assert_no_error (error);
    return (DfqModel *) f;
}

static void
conformance_ctx (DfqStepContext *ctx, DfqArena *arena, DfqModel *teacher, DfqModel *student, guint64 seed)
{
    memset (ctx, 0, sizeof *ctx);
    ctx->arena = arena;
    ctx->teacher = teacher;
    ctx->student = student;
    ctx->seed = seed;
    ctx->epochs = 2;
    ctx->batch = 4;
    ctx->classes = teacher->classes;
    ctx->image_shape[0] = teacher->in_channels;
    ctx->image_shape[1] = teacher->height;
    ctx->image_shape[2] = teacher->width;
    ctx->dataset = "fashion-mnist";
}

/* After a calibrating forward: one LEARN-mode forward + backward of sum(logits);
 * the input and every learnable quantizer tensor get finite gradients. */
static void
conformance_quantizer_backward (DfqQuantizer *q, DfqModel *student, DfqArena *arena, guint64 seed)
{
    dfq_quantizer_set_mode (q, DFQ_QUANT_MODE_LEARN);
    g_assert_cmpint (dfq_quantizer_get_mode (q), ==, DFQ_QUANT_MODE_LEARN);
    GArray *groups = dfq_quantizer_get_param_groups (q);
    for (guint g = 0; g < groups->len; g++) {
        const DfqQuantParamGroup *grp = &g_array_index (groups, DfqQuantParamGroup, g);
        for (guint i = 0; i < grp->params->len; i++)
            dfq_tensor_zero_grad (grp->params->pdata[i]);
    }
    DfqTensor *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, 4, 1, 28, 28);
    dfq_rand_normal_fill (x, seed, 3, 0.0f, 1.0f);
    dfq_tensor_set_param (x);
    gboolean prev = dfq_set_grad_enabled (TRUE);
    DfqForward fwd;
    dfq_forward_init (&fwd, arena, FALSE);
    dfq_quantizer_hook (q, &fwd);
    DfqTensor *loss = dfq_sum (arena, dfq_model_forward (student, &fwd, x));
    DfqTensor *reg = dfq_quantizer_regularizer (q, arena, 0.5);
    if (reg != NULL)
        loss = dfq_add (arena, loss, reg);
    dfq_backward (loss, arena);
    dfq_set_grad_enabled (prev);
    g_assert_nonnull (x->grad);
    g_assert_true (dfq_tensor_all_finite (x->grad));
    guint n = 0;
    for (guint g = 0; g < groups->len; g++) {
        const DfqQuantParamGroup *grp = &g_array_index (groups, DfqQuantParamGroup, g);
        for (guint i = 0; i < grp->params->len; i++, n++) {
            DfqTensor *t = grp->params->pdata[i];
            if (t->grad == NULL || !dfq_tensor_all_finite (t->grad))
                g_test_fail_printf ("quantizer tensor %s (group %s) got no finite gradient", t->name, grp->name);
        }
    }
    g_test_message ("%u learnable quantizer tensors in %u groups", n, groups->len);
    dfq_quant_param_groups_free (groups);
    dfq_quantizer_set_mode (q, DFQ_QUANT_MODE_EVAL);
}

/* A transform: a usable class (dfq_transform_list_check), then the tiny CNN's
 * eval forward with a chain of just this transform on its conv inputs (the
 * transform must keep each input's shape: dfq_transform_conv_input checks),
 * no error, and a finite, non-zero gradient of sum(logits) w.r.t. the input.
 * Returns the logits. */
static DfqTensor *
conformance_transform (DfqFeature *f, DfqArena *arena, guint64 seed)
{
    g_autoptr (GError) error = NULL;
    g_autoptr (GPtrArray) list = g_ptr_array_new ();
    g_ptr_array_add (list, f);
    g_assert_true (dfq_transform_list_check (list, &error));
    g_assert_no_error (error);
    DfqModel *model = conformance_tiny_model ();
    dfq_model_set_trainable (model, FALSE);
    DfqTransformChain chain = { 0 };
    dfq_transform_chain_init (&chain, list);
    DfqTensor *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, 4, 1, 28, 28);
    dfq_rand_normal_fill (x, seed, 1, 0.0f, 1.0f);
    dfq_tensor_set_param (x);
    gboolean prev = dfq_set_grad_enabled (TRUE);
    DfqForward fwd;
    dfq_forward_init (&fwd, arena, FALSE);
    fwd.seed = seed;
    fwd.step = 3;
    dfq_transform_chain_install (&chain, &fwd);
    g_assert_nonnull (fwd.conv_input);
    DfqTensor *out = dfq_model_forward (model, &fwd, x);
    g_assert_true (dfq_transform_chain_check (&chain, &error));
    g_assert_no_error (error);
    g_assert_cmpint (out->shape[1], ==, model->classes);
    dfq_backward (dfq_sum (arena, out), arena);
    dfq_set_grad_enabled (prev);
    g_assert_nonnull (x->grad);
    g_assert_true (dfq_tensor_all_finite (x->grad));
    double norm = 0.0;
    for (gint64 i = 0; i < dfq_tensor_numel (x->grad); i++)
        norm += fabs (dfq_tensor_f32 (x->grad)[i]);
    g_assert_cmpfloat (norm, >, 0.0);
    out = dfq_tensor_dup (arena, out);
    dfq_transform_chain_clear (&chain);
    dfq_feature_free ((DfqFeature *) model);
    return out;
}

/* One run of the feature's step on the toy setup; returns a checksum of its
 * output (for the same-seed comparison) and asserts finiteness. */
static double
conformance_run (const DfqFeatureClass *klass, guint64 seed)
{
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqArena) arena = dfq_arena_new (0);
    g_autoptr (DfqConfigNode) node = conformance_required_config (klass);
    DfqFeature *f = dfq_feature_new_from_config (registry, klass, node, FALSE, klass->name, &error);
    g_assert_no_error (error);
    g_assert_nonnull (f);
    conformance_check_specs (klass->name, klass->params, klass->n_params, f);
    double sum = 0.0;
    DfqTensor *out = NULL;
    switch (klass->kind) {
    case DFQ_FEATURE_MODEL: {
        DfqModel *m = (DfqModel *) f;
        g_assert_cmpint (m->classes, >, 1);
        DfqTensor *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, 2, m->in_channels, m->height, m->width);
        dfq_rand_normal_fill (x, seed, 1, 0.0f, 1.0f);
        DfqForward fwd;
        dfq_forward_init (&fwd, arena, FALSE);
        out = dfq_model_forward (m, &fwd, x);
        g_assert_cmpint (out->shape[1], ==, m->classes);
        break;
    }
    case DFQ_FEATURE_QUANTIZER: {
        DfqModel *student = conformance_tiny_model ();
        DfqQuantizer *q = (DfqQuantizer *) f;
        g_assert_true (dfq_quantizer_attach (q, student, &error));
        g_assert_no_error (error);
        dfq_quantizer_set_calibrating (q, TRUE);
        DfqTensor *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, 4, 1, 28, 28);
        dfq_rand_normal_fill (x, seed, 1, 0.0f, 1.0f);
        DfqForward fwd;
        dfq_forward_init (&fwd, arena, FALSE);
        dfq_quantizer_hook (q, &fwd);
        out = dfq_model_forward (student, &fwd, x);
        conformance_quantizer_backward (q, student, arena, seed);
        dfq_feature_free ((DfqFeature *) student);
        student = NULL;
        break;
    }
    case DFQ_FEATURE_LOSS: {
        DfqModel *teacher = conformance_tiny_model ();
        DfqModel *student = conformance_tiny_model ();
        DfqStepContext ctx;
        conformance_ctx (&ctx, arena, teacher, student, seed);
        DfqTensor *x = dfq_tensor_new_4d (arena, DFQ_DTYPE_F32, 4, 1, 28, 28);
        dfq_rand_normal_fill (x, seed, 1, 0.0f, 1.0f);
        DfqTensor *y = dfq_tensor_new_1d (arena, DFQ_DTYPE_I32, 4);
        dfq_rand_int_fill (y, seed, 2, 10);
        g_autoptr (GPtrArray) list = g_ptr_array_new ();
        g_ptr_array_add (list, f);
        double v = 0;
        out = dfq_step_eval_losses (&ctx, list, x, y, NULL, &v, &error);
        g_assert_no_error (error);
        g_assert_cmpuint (dfq_tensor_numel (out), ==, 1);
        sum += v;
        out = dfq_tensor_dup (arena, out);
        dfq_feature_free (f);
        f = NULL;
        dfq_feature_free ((DfqFeature *) teacher);
        dfq_feature_free ((DfqFeature *) student);
        break;
    }
    case DFQ_FEATURE_SYNTHESIZER: {
        DfqModel *teacher = conformance_tiny_model ();
        DfqModel *student = conformance_tiny_model ();
        dfq_model_set_trainable (teacher, FALSE);
        DfqSynthesizer *s = (DfqSynthesizer *) f;
        const DfqSynthesizerClass *sk = DFQ_SYNTHESIZER_CLASS (s);
        DfqStepContext ctx;
        conformance_ctx (&ctx, arena, teacher, student, seed);
        if (sk->mode == DFQ_SYNTH_OFFLINE && g_str_equal (klass->name, "real") && !have_fmnist) {
            g_test_skip ("real needs Fashion-MNIST (apt-get install dataset-fashion-mnist)");
            dfq_feature_free (f);
            dfq_feature_free ((DfqFeature *) teacher);
            dfq_feature_free ((DfqFeature *) student);
            return 0.0;
        }
        gboolean prepared = sk->prepare (s, &ctx, &error);
        g_assert_no_error (error);
        g_assert_true (prepared);
        if (sk->start_epoch != NULL)
            sk->start_epoch (s, &ctx);
        DfqSynthBatch batch = { 0 };
        g_assert_true (sk->step (s, &ctx, &batch, &error));
        g_assert_no_error (error);
        g_assert_true (isfinite (batch.loss));
        g_assert_cmpint (batch.images->shape[0], ==, 4);
        g_assert_cmpint (batch.images->shape[1], ==, 1);
        g_assert_cmpint (batch.images->shape[2], ==, 28);
        out = dfq_tensor_dup (arena, batch.images);
        sum += batch.loss;
        dfq_feature_free (f);
        f = NULL;
        dfq_feature_free ((DfqFeature *) teacher);
        dfq_feature_free ((DfqFeature *) student);
        break;
    }
    case DFQ_FEATURE_TRANSFORM:
        out = conformance_transform (f, arena, seed);
        break;
    default:
        break;
    }
    if (out != NULL) {
        g_assert_true (dfq_tensor_all_finite (out));
        const float *d = dfq_tensor_f32 (out);
        for (gint64 i = 0; i < dfq_tensor_numel (out); i++)
            sum += d[i] * (1.0 + (i % 7));
    }
    if (f != NULL)
        dfq_feature_free (f);
    return sum;
}

static void
test_conformance (gconstpointer data)
{
    const DfqFeatureClass *klass = data;
    double a = conformance_run (klass, 11);
    double b = conformance_run (klass, 11);
    g_test_message ("%s %s: checksum %.9g", dfq_feature_kind_name (klass->kind), klass->name, a);
    g_assert_true (isfinite (a));
    g_assert_cmpfloat (a, ==, b);
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    dfq_set_num_threads (2);
    tmpdir = g_dir_make_tmp ("dfq-conformance-XXXXXX", NULL);
    g_autoptr (DfqDataset) probe = dfq_dataset_open ("fashion-mnist", DFQ_DATASET_SPLIT_TEST, NULL, NULL);
    have_fmnist = probe != NULL;
    registry = dfq_registry_new ();
    g_autoptr (GPtrArray) failures = g_ptr_array_new_with_free_func ((GDestroyNotify) g_error_free);
    guint n = dfq_registry_scan (registry, NULL, failures);
    g_assert_cmpuint (failures->len, ==, 0);
    g_assert_cmpuint (n, >, 0);
    guint features = 0;
    for (int k = 0; k < DFQ_FEATURE_KIND_COUNT; k++) {
        g_autoptr (GPtrArray) list = dfq_registry_list (registry, (DfqFeatureKind) k);
        for (guint i = 0; i < list->len; i++) {
            const DfqFeatureClass *klass = list->pdata[i];
            g_autofree char *path = g_strdup_printf ("/conformance/%s/%s", dfq_feature_kind_name (klass->kind), klass->name);
            g_test_add_data_func (path, klass, test_conformance);
            features++;
        }
    }
    g_assert_cmpuint (features, >=, 8);
    int rc = g_test_run ();
    dfq_registry_free (registry);
    g_autofree char *images = g_build_filename (tmpdir, "images.safetensors", NULL);
    g_unlink (images);
    g_rmdir (tmpdir);
    g_free (tmpdir);
    return rc;
}
