/* The margins of `bns-slack` (bns-private.h; METHODS.md 8.1): per BN layer l a
 * mean margin delta_l and a spread margin gamma_l, set once per loss instance
 * by the rule the pipeline names:
 * - quantile (the workbench default; DSG's m.npy / n.npy were never published):
 *   delta_l = Q_q of the gaps |s - t| of the layer's mean statistics on a
 *   reference batch (per sample: over samples and channels; batch statistics:
 *   over channels), gamma_l the same for the spread. The reference batch is
 *   `warmup` (ZeroQ's image optimisation with exact matching, data-free; with
 *   the same seed and size it is zeroq's first batch), `real` (training
 *   images: DSG's intent, but it uses data) or `image-set` (a file);
 * - fixed: the delta / gamma lists;
 * - file: a safetensors with delta [L] and gamma [L].
 * The margins are written to <run dir>/<save_as>; they are a pure function of
 * the config, seed, teacher, data and thread count, so a resumed run computes
 * the same bits again. */
#include <math.h>
#include <string.h>

#include <glib/gstdio.h>

#include "bns-private.h"

/* zeroq's image stream (plugins/synthesizers/zeroq): the warm-up batch of a
 * seed is the first batch zeroq makes for it */
#define BNS_WARMUP_STREAM G_GUINT64_CONSTANT (0x7a65726f71000000)
#define BNS_REAL_STREAM G_GUINT64_CONSTANT (0x6d617267696e0000)

static int
bns_float_cmp (const void *a, const void *b)
{
    float x = *(const float *) a, y = *(const float *) b;
    return (x > y) - (x < y);
}

double
bns_quantile (float *v, gsize n, double q)
{
    g_return_val_if_fail (n > 0, 0.0);
    qsort (v, n, sizeof (float), bns_float_cmp);
    double pos = q * (double) (n - 1);
    gsize lo = (gsize) floor (pos);
    if (lo + 1 >= n)
        return v[n - 1];
    return v[lo] + (pos - (double) lo) * ((double) v[lo + 1] - (double) v[lo]);
}

/* ------------------------------------------------------------ reference batch */

static gboolean
bns_reference_check (const DfqTensor *x, const DfqStepContext *ctx, const char *what, GError **error)
{
    if (x->n_dims == 4 && x->shape[1] == ctx->image_shape[0] && x->shape[2] == ctx->image_shape[1]
        && x->shape[3] == ctx->image_shape[2])
        return TRUE;
    char buf[64];
    g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE,
                 "bns-slack reference: %s holds images of shape %s; the teacher takes [N,%" G_GINT64_FORMAT
                 ",%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT "]",
                 what, dfq_tensor_shape_string (x, buf, sizeof buf), ctx->image_shape[0], ctx->image_shape[1],
                 ctx->image_shape[2]);
    return FALSE;
}

static DfqTensor *
bns_reference_real (BnsSlack *self, DfqStepContext *ctx, DfqArena *a, GError **error)
{
    if (ctx->dataset == NULL) {
        g_set_error_literal (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_NOT_FOUND,
                             "bns-slack reference: real: the run names no dataset (data.dataset)");
        return NULL;
    }
    g_autoptr (DfqDataset) ds = dfq_dataset_open (ctx->dataset, DFQ_DATASET_SPLIT_TRAIN, ctx->data_dir, error);
    if (ds == NULL)
        return NULL;
    guint n_total = dfq_dataset_get_n (ds), n = (guint) self->reference_images;
    if (n > n_total) {
        g_set_error (error, DFQ_DATA_ERROR, DFQ_DATA_ERROR_FORMAT,
                     "bns-slack reference: %u real images asked for (reference_images), %s has %u", n, ctx->dataset,
                     n_total);
        return NULL;
    }
    g_autofree guint32 *perm = g_new (guint32, n_total);
    dfq_rand_permutation (perm, n_total, ctx->seed, BNS_REAL_STREAM);
    guint c, h, w;
    dfq_dataset_get_shape (ds, &c, &h, &w);
    DfqTensor *x = dfq_tensor_new_4d (a, DFQ_DTYPE_F32, n, c, h, w);
    DfqTensor *y = dfq_tensor_new_1d (a, DFQ_DTYPE_I32, n);
    dfq_dataset_fill_batch (ds, perm, n, x, y);
    return bns_reference_check (x, ctx, ctx->dataset, error) ? x : NULL;
}

static DfqTensor *
bns_reference_image_set (BnsSlack *self, DfqStepContext *ctx, DfqArena *a, GError **error)
{
    g_autoptr (DfqSafetensors) st = dfq_safetensors_new_from_file (self->reference_path, error);
    if (st == NULL)
        return NULL;
    DfqTensor *all = dfq_safetensors_get_tensor (st, "images", a, error);
    if (all == NULL) {
        g_prefix_error (error, "bns-slack reference: ");
        return NULL;
    }
    if (!bns_reference_check (all, ctx, self->reference_path, error))
        return NULL;
    gint64 n = MIN (all->shape[0], (gint64) self->reference_images);
    DfqTensor *x = dfq_tensor_new_4d (a, DFQ_DTYPE_F32, n, all->shape[1], all->shape[2], all->shape[3]);
    memcpy (dfq_tensor_f32 (x), dfq_tensor_f32 (all), sizeof (float) * (gsize) dfq_tensor_numel (x));
    return x;
}

/* ZeroQ's distilled batch (zeroq's defaults: its init, Adam at warmup_lr,
 * plateau, bns-sample + image-prior) on the taps of @self's pattern. */
static DfqTensor *
bns_reference_warmup (BnsSlack *self, DfqStepContext *ctx, DfqArena *a, GError **error)
{
    gint64 n = self->reference_images;
    DfqTensor *x = dfq_tensor_new_4d (a, DFQ_DTYPE_F32, n, ctx->image_shape[0], ctx->image_shape[1],
                                      ctx->image_shape[2]);
    DfqTensor *ints = dfq_tensor_new (a, DFQ_DTYPE_I32, x->n_dims, x->shape);
    dfq_rand_int_fill (ints, ctx->seed, BNS_WARMUP_STREAM, 256);
    for (gint64 i = 0; i < dfq_tensor_numel (x); i++)
        dfq_tensor_f32 (x)[i] = ((float) dfq_tensor_i32 (ints)[i] - 127.5f) / 5418.75f;
    dfq_tensor_set_param (x);
    DfqOptimConfig oc;
    dfq_optim_config_init (&oc, DFQ_OPTIM_ADAM);
    oc.lr = self->warmup_lr;
    g_autoptr (DfqOptim) optim = dfq_optim_new (&oc);
    dfq_optim_add_param (optim, x);
    g_autoptr (DfqArena) step = dfq_arena_new (0);
    g_autoptr (DfqTapSet) set = dfq_tap_set_new (self->base.patterns);
    g_autoptr (GPtrArray) taps = g_ptr_array_new ();
    DfqStepContext c = *ctx;
    c.arena = step;
    c.transforms = NULL;
    /* zeroq's defaults: patience 100, factor 0.1, min_lr 1e-4 */
    DfqPlateauSchedule plateau;
    dfq_plateau_schedule_init (&plateau, self->warmup_lr, 100, 0.1, 1e-4);
    gboolean prev = dfq_set_grad_enabled (TRUE), ok = TRUE;
    for (gint it = 0; it < self->warmup_iters && ok; it++) {
        dfq_arena_reset (step);
        dfq_tap_set_clear (set);
        g_ptr_array_set_size (taps, 0);
        dfq_optim_zero_grad (optim);
        dfq_step_teacher_forward (&c, x, &set, 1);
        ok = bns_base_collect ((DfqLoss *) self, set, taps, error);
        if (!ok)
            break;
        /* zeroq's loss list in its order: bns-sample, then image-prior */
        DfqTensor *layers = bns_sample_layers (step, taps, 1e-6f);
        DfqTensor *loss = dfq_add (step, layers, bns_image_prior (step, x, 0, 1, 1e-6f));
        double v = dfq_tensor_f32 (loss)[0];
        if (!isfinite (v)) {
            g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_DIVERGED,
                         "bns-slack reference: the warm-up synthesis diverged at iteration %d (lower warmup_lr)", it);
            ok = FALSE;
            break;
        }
        dfq_backward (loss, step);
        dfq_optim_set_lr (optim, plateau.lr);
        dfq_optim_step (optim);
        dfq_plateau_schedule_step (&plateau, v);
    }
    dfq_set_grad_enabled (prev);
    return ok ? dfq_detach (a, x) : NULL;
}

/* ------------------------------------------------------------ the rules */

/* Q_quantile of the gaps of every layer on the reference batch. */
static gboolean
bns_margins_measure (BnsSlack *self, DfqStepContext *ctx, guint L, float *delta, float *gamma, GError **error)
{
    g_autoptr (DfqArena) a = dfq_arena_new (0);
    DfqTensor *x = self->reference == BNS_REFERENCE_REAL        ? bns_reference_real (self, ctx, a, error)
                   : self->reference == BNS_REFERENCE_IMAGE_SET ? bns_reference_image_set (self, ctx, a, error)
                                                                : bns_reference_warmup (self, ctx, a, error);
    if (x == NULL)
        return FALSE;
    /* a tap set of our own: the loss's holds the current step's taps */
    g_autoptr (DfqTapSet) set = dfq_tap_set_new (self->base.patterns);
    g_autoptr (GPtrArray) taps = g_ptr_array_new ();
    DfqStepContext c = *ctx;
    c.arena = a;
    c.transforms = NULL;
    gboolean prev = dfq_set_grad_enabled (FALSE);
    dfq_step_teacher_forward (&c, x, &set, 1);
    dfq_set_grad_enabled (prev);
    if (!bns_base_collect ((DfqLoss *) self, set, taps, error))
        return FALSE;
    g_assert (taps->len == L); /* the same pattern on the same teacher */
    for (guint l = 0; l < L; l++) {
        DfqTensor *s[2], *t[2];
        bns_slack_layer_stats (self, a, taps->pdata[l], s, t);
        for (int k = 0; k < 2; k++) {
            gint64 C = t[k]->shape[0], n = dfq_tensor_numel (s[k]);
            float *gap = g_new (float, n);
            for (gint64 i = 0; i < n; i++)
                gap[i] = fabsf (dfq_tensor_f32 (s[k])[i] - dfq_tensor_f32 (t[k])[i % C]);
            (k == 0 ? delta : gamma)[l] = (float) bns_quantile (gap, (gsize) n, self->quantile);
            g_free (gap);
        }
    }
    return TRUE;
}

static gboolean
bns_margins_fixed (const DfqNumberList *list, const char *name, guint L, float *out, GError **error)
{
    if (list->n != 1 && list->n != L) {
        g_set_error (error, DFQ_PIPELINE_ERROR, DFQ_PIPELINE_ERROR_BAD_VALUE,
                     "bns-slack: %s has %u values; the pattern selects %u BN layers (give 1 or %u)", name, list->n, L, L);
        return FALSE;
    }
    for (guint l = 0; l < L; l++)
        out[l] = (float) list->v[list->n == 1 ? 0 : l];
    return TRUE;
}

static gboolean
bns_margins_load (BnsSlack *self, guint L, float *delta, float *gamma, GError **error)
{
    g_autoptr (DfqSafetensors) st = dfq_safetensors_new_from_file (self->margins_path, error);
    if (st == NULL)
        return FALSE;
    g_autoptr (DfqArena) a = dfq_arena_new (0);
    const char *names[] = { "delta", "gamma" };
    float *outs[] = { delta, gamma };
    for (int k = 0; k < 2; k++) {
        DfqTensor *t = dfq_safetensors_get_tensor (st, names[k], a, error);
        if (t == NULL || t->n_dims != 1 || t->shape[0] != (gint64) L) {
            g_clear_error (error);
            g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE,
                         "%s: needs '%s' of shape [%u] (one margin per selected BN layer)", self->margins_path,
                         names[k], L);
            return FALSE;
        }
        memcpy (outs[k], dfq_tensor_f32 (t), sizeof (float) * L);
    }
    return TRUE;
}

static const char *const bns_margins_rules[] = { "quantile", "fixed", "file" };
static const char *const bns_margins_references[] = { "warmup", "real", "image-set" };

/* <run dir>/<save_as>: delta [L], gamma [L]; metadata: the rule and the layers. */
static gboolean
bns_margins_save (BnsSlack *self, DfqStepContext *ctx, GPtrArray *taps, GError **error)
{
    if (ctx->run_dir == NULL || self->save_as == NULL || self->save_as[0] == '\0')
        return TRUE;
    g_autoptr (DfqArena) a = dfq_arena_new (0);
    guint L = self->n_layers;
    DfqTensor *d = dfq_tensor_new_1d (a, DFQ_DTYPE_F32, L), *g = dfq_tensor_new_1d (a, DFQ_DTYPE_F32, L);
    memcpy (dfq_tensor_f32 (d), self->delta_l, sizeof (float) * L);
    memcpy (dfq_tensor_f32 (g), self->gamma_l, sizeof (float) * L);
    g_autoptr (GString) layers = g_string_new (NULL);
    for (guint l = 0; l < taps->len; l++)
        g_string_append_printf (layers, "%s%s", l ? "," : "", ((const DfqTap *) taps->pdata[l])->name);
    g_autoptr (GHashTable) meta = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, g_free);
    g_hash_table_insert (meta, (gpointer) "layers", g_strdup (layers->str));
    g_hash_table_insert (meta, (gpointer) "rule", g_strdup (bns_margins_rules[self->margins]));
    g_hash_table_insert (meta, (gpointer) "reference", g_strdup (self->margins == BNS_MARGINS_QUANTILE ? bns_margins_references[self->reference] : ""));
    g_hash_table_insert (meta, (gpointer) "quantile", g_strdup_printf ("%g", self->quantile));
    g_hash_table_insert (meta, (gpointer) "stats", g_strdup (self->stats == BNS_SLACK_STATS_BATCH ? "batch" : "sample"));
    g_autofree char *path = g_build_filename (ctx->run_dir, self->save_as, NULL);
    g_autofree char *tmp = g_strconcat (path, ".part", NULL);
    const char *names[] = { "delta", "gamma" };
    DfqTensor *tensors[] = { d, g };
    if (!dfq_safetensors_save_list (tmp, names, tensors, 2, meta, error))
        return FALSE;
    if (g_rename (tmp, path) != 0) {
        g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_IO, "cannot rename %s: %s", tmp, g_strerror (errno));
        return FALSE;
    }
    return TRUE;
}

gboolean
bns_slack_ensure_margins (BnsSlack *self, DfqStepContext *ctx, GPtrArray *taps, GError **error)
{
    guint L = taps->len;
    if (self->delta_l != NULL) {
        if (self->n_layers == L)
            return TRUE;
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE,
                     "bns-slack: the margins are for %u BN layers, this forward has %u", self->n_layers, L);
        return FALSE;
    }
    g_autofree float *delta = g_new0 (float, L), *gamma = g_new0 (float, L);
    gboolean ok;
    switch (self->margins) {
    case BNS_MARGINS_FIXED:
        ok = bns_margins_fixed (&self->delta, "delta", L, delta, error)
             && bns_margins_fixed (&self->gamma, "gamma", L, gamma, error);
        break;
    case BNS_MARGINS_FILE:
        ok = bns_margins_load (self, L, delta, gamma, error);
        break;
    default:
        ok = bns_margins_measure (self, ctx, L, delta, gamma, error);
        break;
    }
    if (!ok)
        return FALSE;
    self->n_layers = L;
    self->delta_l = g_steal_pointer (&delta);
    self->gamma_l = g_steal_pointer (&gamma);
    for (guint l = 0; l < L; l++)
        g_debug ("bns-slack margins %s: delta %.6g gamma %.6g", ((const DfqTap *) taps->pdata[l])->name,
                self->delta_l[l], self->gamma_l[l]);
    return bns_margins_save (self, ctx, taps, error);
}
