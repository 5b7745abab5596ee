/* Export macro and small shared definitions of the public dfq API. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#if defined(DFQ_COMPILATION)
#define DFQ_API __attribute__ ((visibility ("default")))
#else
#define DFQ_API
#endif

G_END_DECLS
