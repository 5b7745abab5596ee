/* Synthesizer glue (core/runner): progress inside an offline synthesizer's
 * step (its iterations over one batch of images). */
#include <dfq/dfq.h>

void
dfq_synthesizer_set_progress (DfqSynthesizer *self, DfqSynthProgressFn fn, gpointer data)
{
    self->progress = fn;
    self->progress_data = data;
}

void
dfq_synthesizer_report (DfqSynthesizer *self, gint iter, gint iters, double loss)
{
    if (self->progress != NULL)
        self->progress (self->progress_data, iter, iters, loss);
}
