/* Error domains of libdfq. Recoverable errors travel as GError (STYLE.md B.3). */
#pragma once

#include <glib.h>
#include <dfq/dfq-macros.h>

G_BEGIN_DECLS

#define DFQ_MODEL_ERROR (dfq_model_error_quark ())
typedef enum {
    DFQ_MODEL_ERROR_IO,     /* file cannot be read or written */
    DFQ_MODEL_ERROR_FORMAT, /* corrupt or unsupported file content */
    DFQ_MODEL_ERROR_SHAPE,  /* tensor shape does not match the model */
    DFQ_MODEL_ERROR_MISSING,    /* a tensor the model needs is absent */
    DFQ_MODEL_ERROR_UNEXPECTED, /* the file holds a tensor the model does not know */
} DfqModelError;

#define DFQ_RUN_ERROR (dfq_run_error_quark ())
typedef enum {
    DFQ_RUN_ERROR_DIVERGED,  /* NaN or Inf in a loss or gradient */
    DFQ_RUN_ERROR_CANCELLED, /* interrupted by the user */
    DFQ_RUN_ERROR_IO,        /* run directory cannot be written */
    DFQ_RUN_ERROR_STATE,     /* a checkpoint does not match the run */
} DfqRunError;

#define DFQ_DATA_ERROR (dfq_data_error_quark ())
typedef enum {
    DFQ_DATA_ERROR_NOT_FOUND, /* dataset files are not where we looked */
    DFQ_DATA_ERROR_IO,
    DFQ_DATA_ERROR_FORMAT, /* corrupt or truncated dataset file */
} DfqDataError;

DFQ_API GQuark dfq_model_error_quark (void);
DFQ_API GQuark dfq_run_error_quark (void);
DFQ_API GQuark dfq_data_error_quark (void);

G_END_DECLS
