/* Error domains (core/tensor): one quark per subsystem, STYLE.md B.3. */
#include <dfq/dfq-error.h>

G_DEFINE_QUARK (dfq-model-error-quark, dfq_model_error)
G_DEFINE_QUARK (dfq-run-error-quark, dfq_run_error)
G_DEFINE_QUARK (dfq-data-error-quark, dfq_data_error)
