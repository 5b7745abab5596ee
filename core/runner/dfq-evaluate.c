/* Evaluation (core/runner): runs a model over a dataset split in eval mode and
 * tallies top-1/top-5, loss and the confusion matrix. */
#include <math.h>
#include <string.h>

#include <dfq/dfq.h>
#include <dfq/dfq-evaluate.h>

gboolean
dfq_evaluate (DfqModel *model, const DfqForward *hooks, const DfqDataset *dataset, guint batch, guint limit,
              DfqEvalResult *result, GError **error)
{
    g_return_val_if_fail (model != NULL && dataset != NULL && result != NULL, FALSE);
    g_return_val_if_fail (batch > 0, FALSE);
    memset (result, 0, sizeof *result);
    guint c, h, w;
    dfq_dataset_get_shape (dataset, &c, &h, &w);
    if ((gint) c != model->in_channels) {
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE,
                     "dataset %s has %u-channel images but the model expects %d channels",
                     dfq_dataset_get_name (dataset), c, model->in_channels);
        return FALSE;
    }
    guint classes = dfq_dataset_get_n_classes (dataset);
    if ((gint) classes > model->classes) {
        g_set_error (error, DFQ_MODEL_ERROR, DFQ_MODEL_ERROR_SHAPE,
                     "dataset %s has %u classes but the model predicts %d",
                     dfq_dataset_get_name (dataset), classes, model->classes);
        return FALSE;
    }
    guint n = dfq_dataset_get_n (dataset);
    if (limit > 0 && limit < n)
        n = limit;
    gint64 t0 = g_get_monotonic_time ();
    g_autoptr (DfqArena) data = dfq_arena_new (0);
    g_autoptr (DfqArena) scratch = dfq_arena_new (0);
    DfqTensor *x = dfq_tensor_new_4d (data, DFQ_DTYPE_F32, batch, c, h, w);
    DfqTensor *y = dfq_tensor_new_1d (data, DFQ_DTYPE_I32, batch);
    guint32 *idx = dfq_arena_alloc (data, batch * sizeof (guint32));
    result->classes = (guint) model->classes;
    result->confusion = g_new0 (guint, (gsize) result->classes * result->classes);
    double loss_sum = 0.0;
    gboolean prev = dfq_set_grad_enabled (FALSE);
    gboolean ok = TRUE;
    for (guint start = 0; start < n; start += batch) {
        guint b = MIN (batch, n - start);
        for (guint i = 0; i < b; i++)
            idx[i] = start + i;
        dfq_arena_reset (scratch);
        DfqTensor *xb = x, *yb = y;
        if (b < batch) { /* the last short batch */
            gint64 xs[4] = { b, c, h, w };
            xb = dfq_tensor_new (scratch, DFQ_DTYPE_F32, 4, xs);
            yb = dfq_tensor_new_1d (scratch, DFQ_DTYPE_I32, b);
        }
        dfq_dataset_fill_batch (dataset, idx, b, xb, yb);
        DfqForward fwd;
        if (hooks != NULL)
            fwd = *hooks;
        else
            dfq_forward_init (&fwd, scratch, FALSE);
        fwd.arena = scratch;
        fwd.training = FALSE;
        fwd.n_tap_sets = 0;
        DfqTensor *logits = dfq_model_forward (model, &fwd, xb);
        if (!dfq_tensor_all_finite (logits)) {
            g_set_error (error, DFQ_RUN_ERROR, DFQ_RUN_ERROR_DIVERGED,
                         "non-finite logits while evaluating images %u..%u", start, start + b - 1);
            ok = FALSE;
            break;
        }
        loss_sum += dfq_tensor_f32 (dfq_cross_entropy (scratch, logits, yb))[0] * b;
        const float *l = dfq_tensor_f32 (logits);
        const gint32 *lab = dfq_tensor_i32 (yb);
        guint K = result->classes;
        for (guint i = 0; i < b; i++) {
            const float *row = l + (gsize) i * K;
            guint best = 0, rank = 0;
            for (guint k = 1; k < K; k++)
                if (row[k] > row[best])
                    best = k;
            /* rank of the true class: how many logits beat it (ties go to the lower index) */
            float t = row[lab[i]];
            for (guint k = 0; k < K; k++)
                if (row[k] > t || (row[k] == t && k < (guint) lab[i]))
                    rank++;
            result->correct_top1 += best == (guint) lab[i];
            result->correct_top5 += rank < 5;
            result->confusion[(gsize) lab[i] * K + best]++;
        }
        result->n += b;
    }
    dfq_set_grad_enabled (prev);
    if (!ok) {
        dfq_eval_result_clear (result);
        return FALSE;
    }
    result->top1 = 100.0 * result->correct_top1 / MAX (result->n, 1);
    result->top5 = 100.0 * result->correct_top5 / MAX (result->n, 1);
    result->loss = loss_sum / MAX (result->n, 1);
    result->seconds = (g_get_monotonic_time () - t0) / 1e6;
    return TRUE;
}

void
dfq_eval_result_clear (DfqEvalResult *result)
{
    g_clear_pointer (&result->confusion, g_free);
}

void
dfq_eval_result_per_class (const DfqEvalResult *result, double *out)
{
    guint K = result->classes;
    for (guint t = 0; t < K; t++) {
        guint total = 0;
        for (guint p = 0; p < K; p++)
            total += result->confusion[(gsize) t * K + p];
        out[t] = total ? 100.0 * result->confusion[(gsize) t * K + t] / total : 0.0;
    }
}

char *
dfq_eval_result_confusion_csv (const DfqEvalResult *result)
{
    GString *s = g_string_new ("true\\pred");
    guint K = result->classes;
    for (guint p = 0; p < K; p++)
        g_string_append_printf (s, ",%u", p);
    g_string_append_c (s, '\n');
    for (guint t = 0; t < K; t++) {
        g_string_append_printf (s, "%u", t);
        for (guint p = 0; p < K; p++)
            g_string_append_printf (s, ",%u", result->confusion[(gsize) t * K + p]);
        g_string_append_c (s, '\n');
    }
    return g_string_free (s, FALSE);
}
