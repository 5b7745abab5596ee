/* Evaluation of a model on a real dataset split: top-1/top-5, per-class accuracy,
 * confusion matrix. The forward template carries whatever the caller attached
 * (a quantizer's hooks for a student); evaluation always uses eval-mode BN and
 * builds no graph. */
#pragma once

#include <glib.h>
#include <dfq/dfq-macros.h>
#include <dfq/dfq-model.h>
#include <dfq/dfq-dataset.h>

G_BEGIN_DECLS

typedef struct {
    guint n;              /* images evaluated */
    guint classes;
    guint correct_top1;
    guint correct_top5;
    double top1;          /* percent */
    double top5;          /* percent */
    double loss;          /* mean cross-entropy */
    guint *confusion;     /* classes x classes, row = true label, column = prediction */
    double seconds;
} DfqEvalResult;

/**
 * dfq_evaluate:
 * @hooks: (nullable) a forward whose quantization hooks are copied (arena and
 *   mode are ignored); NULL = the plain model.
 * @limit: evaluate only the first @limit images (0 = all).
 * Errors: DFQ_MODEL_ERROR_SHAPE when the dataset's images do not fit the
 * model; DFQ_RUN_ERROR_DIVERGED when logits are not finite.
 */
DFQ_API gboolean dfq_evaluate (DfqModel *model, const DfqForward *hooks, const DfqDataset *dataset,
                               guint batch, guint limit, DfqEvalResult *result, GError **error);
DFQ_API void dfq_eval_result_clear (DfqEvalResult *result);
/* Per-class accuracy in percent into @out (classes entries). */
DFQ_API void dfq_eval_result_per_class (const DfqEvalResult *result, double *out);
/* The confusion matrix as CSV (header row "true\\pred,0,1,..."). (transfer full) */
DFQ_API char *dfq_eval_result_confusion_csv (const DfqEvalResult *result);

G_END_DECLS
