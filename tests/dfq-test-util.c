/* Shared test helpers (see dfq-test-util.h). */
#include <math.h>
#include <string.h>

#include <glib/gstdio.h>

#include "dfq-test-util.h"

DfqTensor *
dfq_test_make_input (DfqArena *arena, const GradInput *spec, guint64 seed, guint64 stream)
{
    DfqDType dtype = spec->init == GRAD_INIT_LABELS ? DFQ_DTYPE_I32 : DFQ_DTYPE_F32;
    DfqTensor *t = dfq_tensor_new (arena, dtype, spec->n_dims, spec->shape);
    gint64 n = dfq_tensor_numel (t);
    switch (spec->init) {
    case GRAD_INIT_NORMAL:
        dfq_rand_normal_fill (t, seed, stream, 0.0f, 1.0f);
        break;
    case GRAD_INIT_AWAY: {
        float *d = dfq_tensor_f32 (t);
        for (gint64 i = 0; i < n; i++) {
            float u = dfq_rand_uniform_at (seed, stream, (guint64) i);
            float s = dfq_rand_uniform_at (seed, stream + 1000003, (guint64) i) < 0.5f ? -1.0f : 1.0f;
            d[i] = s * (0.2f + u);
        }
        break;
    }
    case GRAD_INIT_POSITIVE:
        dfq_rand_uniform_fill (t, seed, stream, 0.5f, 1.5f);
        break;
    case GRAD_INIT_PROBS: {
        g_assert (spec->n_dims == 2);
        dfq_rand_uniform_fill (t, seed, stream, 0.1f, 1.0f);
        float *d = dfq_tensor_f32 (t);
        for (gint64 r = 0; r < spec->shape[0]; r++) {
            double s = 0;
            for (gint64 k = 0; k < spec->shape[1]; k++)
                s += d[r * spec->shape[1] + k];
            for (gint64 k = 0; k < spec->shape[1]; k++)
                d[r * spec->shape[1] + k] /= (float) s;
        }
        break;
    }
    case GRAD_INIT_LABELS:
        dfq_rand_int_fill (t, seed, stream, spec->aux);
        break;
    case GRAD_INIT_RANGE:
        dfq_rand_uniform_fill (t, seed, stream, spec->aux_f[0], spec->aux_f[1]);
        break;
    case GRAD_INIT_CONST:
        dfq_tensor_fill (t, spec->aux_f[0]);
        break;
    case GRAD_INIT_INTEGER: {
        float *d = dfq_tensor_f32 (t);
        float lo = spec->aux_f[0], hi = spec->aux_f[1];
        for (gint64 i = 0; i < n; i++)
            d[i] = floorf (lo + (hi - lo + 1.0f) * dfq_rand_uniform_at (seed, stream, (guint64) i));
        break;
    }
    }
    return t;
}

/* sum(r * out) in double */
static double
dfq_test_project (const DfqTensor *out, const DfqTensor *r)
{
    const float *o = dfq_tensor_f32 (out), *w = dfq_tensor_f32 (r);
    double s = 0.0;
    for (gint64 i = 0; i < dfq_tensor_numel (out); i++)
        s += (double) o[i] * (double) w[i];
    return s;
}

static double
dfq_test_eval (const GradCase *c, DfqArena *arena, DfqTensor **in, DfqTensor **base, const DfqTensor *r)
{
    gboolean prev = dfq_set_grad_enabled (FALSE);
    DfqTensor *out = c->surrogate ? c->surrogate (arena, in, base) : c->build (arena, in);
    dfq_set_grad_enabled (prev);
    return dfq_test_project (out, r);
}

double
dfq_test_gradcheck (const GradCase *c, guint64 seed, char *where, gsize where_size)
{
    g_autoptr (DfqArena) params = dfq_arena_new (0);
    g_autoptr (DfqArena) scratch = dfq_arena_new (0);
    DfqTensor *in[GRAD_MAX_INPUTS] = { NULL };
    DfqTensor *base[GRAD_MAX_INPUTS] = { NULL };
    double eps = c->eps > 0 ? c->eps : 1e-3;
    double atol = c->atol > 0 ? c->atol : 5e-3;
    double rtol = c->rtol > 0 ? c->rtol : 2e-2;

    for (int i = 0; i < c->n_inputs; i++) {
        in[i] = dfq_test_make_input (params, &c->inputs[i], seed, (guint64) (10 + i));
        base[i] = dfq_tensor_dup (params, in[i]);
        if (c->inputs[i].grad)
            dfq_tensor_set_param (in[i]);
    }
    DfqTensor *out = c->build (scratch, in);
    g_assert_nonnull (out);
    g_assert_true (dfq_tensor_all_finite (out));
    DfqTensor *r = dfq_tensor_new_like (params, out);
    dfq_rand_normal_fill (r, seed, 99, 0.0f, 1.0f);
    dfq_backward_with_grad (out, r, scratch);

    double worst = 0.0;
    if (where_size)
        where[0] = '\0';
    for (int i = 0; i < c->n_inputs; i++) {
        if (!c->inputs[i].grad)
            continue;
        g_assert_nonnull (in[i]->grad);
        gint64 n = dfq_tensor_numel (in[i]);
        gint64 n_check = MIN (n, 96);
        float *x = dfq_tensor_f32 (in[i]);
        const float *g = dfq_tensor_f32 (in[i]->grad);
        for (gint64 k = 0; k < n_check; k++) {
            gint64 idx = n_check == n ? k : (gint64) (((guint64) k * 2654435761u) % (guint64) n);
            float saved = x[idx];
            x[idx] = saved + (float) eps;
            double fp = dfq_test_eval (c, scratch, in, base, r);
            x[idx] = saved - (float) eps;
            double fm = dfq_test_eval (c, scratch, in, base, r);
            x[idx] = saved;
            double numeric = (fp - fm) / (2.0 * eps);
            double err = fabs (numeric - g[idx]) / (atol + rtol * fabs (numeric));
            if (err > worst || isnan (err)) {
                worst = isnan (err) ? INFINITY : err;
                if (where_size)
                    g_snprintf (where, where_size, "input %d element %" G_GINT64_FORMAT
                                ": analytic %.6g numeric %.6g", i, idx, g[idx], numeric);
            }
        }
    }
    return worst;
}

void
dfq_test_assert_close (const DfqTensor *a, const DfqTensor *b, float tol)
{
    float err = dfq_tensor_max_abs_diff (a, b);
    if (!(err <= tol))
        g_test_fail_printf ("max abs error %g > %g", err, tol);
}

DfqRegistry *
dfq_test_registry_new (void)
{
    DfqRegistry *registry = dfq_registry_new ();
    g_autoptr (GPtrArray) failures = g_ptr_array_new_with_free_func ((GDestroyNotify) g_error_free);
    dfq_registry_scan (registry, NULL, failures);
    for (guint i = 0; i < failures->len; i++)
        g_test_message ("plugin failed to load: %s", ((GError *) failures->pdata[i])->message);
    g_assert_cmpuint (failures->len, ==, 0);
    return registry;
}

DfqFeature *
dfq_test_make_feature (DfqRegistry *registry, DfqFeatureKind kind, const char *yaml)
{
    g_autoptr (GError) error = NULL;
    DfqConfigNode *node = dfq_config_parse (yaml, -1, "test", &error);
    g_assert_no_error (error);
    const DfqConfigNode *use = dfq_config_mapping_get (node, "use");
    g_assert_nonnull (use);
    const DfqFeatureClass *klass = dfq_registry_find (registry, kind, use->scalar);
    g_assert_nonnull (klass);
    DfqFeature *f = dfq_feature_new_from_config (registry, klass, node, TRUE, use->scalar, &error);
    g_assert_no_error (error);
    dfq_config_node_free (node);
    return f;
}

DfqModel *
dfq_test_resnet20_w8 (DfqRegistry *registry, gboolean frozen)
{
    g_autoptr (GError) error = NULL;
    DfqModel *m = (DfqModel *) dfq_test_make_feature (registry, DFQ_FEATURE_MODEL, DFQ_TEST_RESNET20_W8_YAML);
    g_autofree char *path = g_test_build_filename (G_TEST_DIST, "interop", "resnet-cifar-d20-w8-c1.safetensors", NULL);
    g_assert_true (dfq_model_load (m, path, NULL, &error));
    g_assert_no_error (error);
    if (frozen)
        dfq_model_set_trainable (m, FALSE);
    return m;
}

void
dfq_test_synth_init (DfqTestSynth *f, DfqRegistry *registry, DfqModel *teacher, DfqModel *student,
                     guint64 seed, int epochs, int batch, int channels, int size)
{
    memset (f, 0, sizeof *f);
    f->registry = registry;
    f->arena = dfq_arena_new (0);
    f->teacher = teacher;
    dfq_model_set_trainable (teacher, FALSE);
    f->student = student;
    f->ctx.arena = f->arena;
    f->ctx.teacher = teacher;
    f->ctx.student = student;
    f->ctx.seed = seed;
    f->ctx.epochs = epochs;
    f->ctx.batch = batch;
    f->ctx.classes = 10;
    f->ctx.image_shape[0] = channels;
    f->ctx.image_shape[1] = size;
    f->ctx.image_shape[2] = size;
}

void
dfq_test_synth_attach_quantizer (DfqTestSynth *f, const char *yaml)
{
    g_autoptr (GError) error = NULL;
    g_assert_nonnull (f->student);
    if (f->quantizer != NULL)
        dfq_feature_free ((DfqFeature *) f->quantizer);
    f->quantizer = (DfqQuantizer *) dfq_test_make_feature (f->registry, DFQ_FEATURE_QUANTIZER, yaml);
    g_assert_true (dfq_quantizer_attach (f->quantizer, f->student, &error));
    g_assert_no_error (error);
    f->ctx.quantizer = f->quantizer;
}

void
dfq_test_synth_clear (DfqTestSynth *f)
{
    if (f->quantizer != NULL)
        dfq_feature_free ((DfqFeature *) f->quantizer);
    if (f->student != NULL)
        dfq_feature_free ((DfqFeature *) f->student);
    dfq_feature_free ((DfqFeature *) f->teacher);
    dfq_arena_free (f->arena);
    memset (f, 0, sizeof *f);
}

DfqSynthesizer *
dfq_test_synth_new (DfqTestSynth *f, const char *yaml, gboolean start_epoch)
{
    g_autoptr (GError) error = NULL;
    DfqSynthesizer *s = (DfqSynthesizer *) dfq_test_make_feature (f->registry, DFQ_FEATURE_SYNTHESIZER, yaml);
    g_assert_true (DFQ_SYNTHESIZER_CLASS (s)->prepare (s, &f->ctx, &error));
    g_assert_no_error (error);
    if (start_epoch)
        DFQ_SYNTHESIZER_CLASS (s)->start_epoch (s, &f->ctx);
    return s;
}

void
dfq_test_synth_step (DfqTestSynth *f, DfqSynthesizer *s, gint64 step, DfqSynthBatch *out)
{
    g_autoptr (GError) error = NULL;
    dfq_arena_reset (f->arena);
    f->ctx.step = step;
    f->ctx.iter = (gint) step;
    g_assert_true (DFQ_SYNTHESIZER_CLASS (s)->step (s, &f->ctx, out, &error));
    g_assert_no_error (error);
}

char *
dfq_test_assert_defaults (DfqRegistry *registry, DfqFeatureKind kind, const char *name,
                          const char *const *want, guint n_want)
{
    const DfqFeatureClass *klass = dfq_registry_find (registry, kind, name);
    g_assert_nonnull (klass);
    g_autoptr (GError) error = NULL;
    g_autoptr (DfqFeature) feature = dfq_feature_new_default (registry, klass, &error);
    g_assert_no_error (error);
    g_autoptr (DfqConfigNode) cfg = dfq_params_to_config (klass->params, klass->n_params, feature);
    char *yaml = dfq_config_to_yaml (cfg);
    g_test_message ("%s", yaml);
    for (guint i = 0; i < n_want; i++)
        if (strstr (yaml, want[i]) == NULL)
            g_test_fail_printf ("%s's default config lacks '%s'", name, want[i]);
    return yaml;
}

void
dfq_test_rm_rf (const char *path)
{
    if (g_file_test (path, G_FILE_TEST_IS_DIR) && !g_file_test (path, G_FILE_TEST_IS_SYMLINK)) {
        GDir *d = g_dir_open (path, 0, NULL);
        const char *n;
        while (d != NULL && (n = g_dir_read_name (d)) != NULL) {
            g_autofree char *child = g_build_filename (path, n, NULL);
            dfq_test_rm_rf (child);
        }
        if (d != NULL)
            g_dir_close (d);
        g_rmdir (path);
    } else {
        g_unlink (path);
    }
}
