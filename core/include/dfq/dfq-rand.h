/* Counter-based random numbers (Philox4x32-10). Every value is a pure function of
 * (seed, stream, index), so results never depend on the thread count or on the
 * order in which elements are visited (STYLE.md B.13). */
#pragma once

#include <glib.h>
#include <dfq/dfq-macros.h>
#include <dfq/dfq-tensor.h>

G_BEGIN_DECLS

/* Four 32-bit random words for counter @index of (seed, stream). */
DFQ_API void dfq_rand_philox (guint64 seed, guint64 stream, guint64 index, guint32 out[4]);
/* Uniform in [0, 1) from (seed, stream, index). */
DFQ_API float dfq_rand_uniform_at (guint64 seed, guint64 stream, guint64 index);
/* Standard normal from (seed, stream, index) (Box-Muller on one Philox block). */
DFQ_API float dfq_rand_normal_at (guint64 seed, guint64 stream, guint64 index);

/* Element i of @t gets the value for (seed, stream, i). */
DFQ_API void dfq_rand_normal_fill (DfqTensor *t, guint64 seed, guint64 stream, float mean, float std);
DFQ_API void dfq_rand_uniform_fill (DfqTensor *t, guint64 seed, guint64 stream, float lo, float hi);
/* I32 tensor: uniform integers in [0, n). */
DFQ_API void dfq_rand_int_fill (DfqTensor *t, guint64 seed, guint64 stream, gint32 n);
/* A uniformly random permutation of 0..n-1 into @out (Fisher-Yates on counter draws). */
DFQ_API void dfq_rand_permutation (guint32 *out, guint32 n, guint64 seed, guint64 stream);

/* A tiny sequential helper: each call of dfq_rng_stream() hands out a fresh
 * stream id, so independent consumers never share random numbers. */
typedef struct {
    guint64 seed;
    guint64 next_stream;
} DfqRng;

DFQ_API void dfq_rng_init (DfqRng *rng, guint64 seed);
DFQ_API guint64 dfq_rng_stream (DfqRng *rng);

G_END_DECLS
