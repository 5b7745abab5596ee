/* Graph-building ops. Each function computes its result at once (eager forward)
 * and, when a source requires a gradient and grad mode is on, records the op for
 * dfq_backward(). Results are allocated in the given arena. Shapes are checked
 * with g_return_val_if_fail: they are programmer errors here, because pipeline
 * shapes are validated with GError when models are built. */
#pragma once

#include <glib.h>
#include <dfq/dfq-macros.h>
#include <dfq/dfq-tensor.h>

G_BEGIN_DECLS

/* Grad mode is per thread. Off: ops record nothing (evaluation, EMA updates). */
DFQ_API gboolean dfq_grad_enabled (void);
/* Returns the previous value, so callers can restore it. */
DFQ_API gboolean dfq_set_grad_enabled (gboolean enabled);

/* Threads used by the engine's own loops and by OpenBLAS (one OpenMP pool). */
DFQ_API void dfq_set_num_threads (int n);
DFQ_API int dfq_get_num_threads (void);

typedef enum {
    DFQ_REDUCTION_MEAN,      /* mean over every element (PyTorch "mean") */
    DFQ_REDUCTION_BATCHMEAN, /* sum / N */
    DFQ_REDUCTION_SUM,
} DfqReduction;

typedef enum {
    DFQ_STE_PLAIN,   /* dL/dx = dL/dx^ everywhere (GDFQ family) */
    DFQ_STE_CLIPPED, /* dL/dx = dL/dx^ inside [lo, hi], 0 outside */
} DfqSteMode;

/* Shapes below: [N,C,H,W] is a feature map, [N,K] a batch of rows (logits),
 * "any" any shape (1 to 4 dims); a "scalar" result is the 1-d tensor [1].
 * Every op takes and returns F32 unless it says otherwise; results are new
 * contiguous tensors in @arena (dfq_reshape and dfq_detach share data). */

/* Elementwise: the result has the shape of the (first) input. */
/* a + b, a - b, a * b: a, b any, same shape (no broadcasting). */
DFQ_API DfqTensor *dfq_add (DfqArena *arena, DfqTensor *a, DfqTensor *b);
DFQ_API DfqTensor *dfq_sub (DfqArena *arena, DfqTensor *a, DfqTensor *b);
DFQ_API DfqTensor *dfq_mul (DfqArena *arena, DfqTensor *a, DfqTensor *b);
/* alpha * x + beta; x any. */
DFQ_API DfqTensor *dfq_affine (DfqArena *arena, DfqTensor *x, float alpha, float beta);
/* |x|, sqrt(x) (x >= 0), log(x) (x > 0), exp(x); x any. */
DFQ_API DfqTensor *dfq_abs (DfqArena *arena, DfqTensor *x);
DFQ_API DfqTensor *dfq_sqrt (DfqArena *arena, DfqTensor *x);
DFQ_API DfqTensor *dfq_log (DfqArena *arena, DfqTensor *x);
DFQ_API DfqTensor *dfq_exp (DfqArena *arena, DfqTensor *x);
/* x^p for a real exponent @p; x any. x must be > 0 unless @p is an integer
 * (powf: a negative base with a fractional exponent gives NaN); x = 0 with
 * p < 1 has an infinite derivative. dy/dx = p x^(p-1) (0 when p == 0). */
DFQ_API DfqTensor *dfq_pow (DfqArena *arena, DfqTensor *x, float p);
/* x [N,C,...] * scale[C] + shift[C]; either may be NULL. -> [N,C,...] */
DFQ_API DfqTensor *dfq_channel_affine (DfqArena *arena, DfqTensor *x, DfqTensor *scale, DfqTensor *shift);

/* Activations: x any -> the same shape. */
DFQ_API DfqTensor *dfq_relu (DfqArena *arena, DfqTensor *x);
DFQ_API DfqTensor *dfq_relu6 (DfqArena *arena, DfqTensor *x);
DFQ_API DfqTensor *dfq_leaky_relu (DfqArena *arena, DfqTensor *x, float slope);
DFQ_API DfqTensor *dfq_tanh (DfqArena *arena, DfqTensor *x);
DFQ_API DfqTensor *dfq_sigmoid (DfqArena *arena, DfqTensor *x);
/* Inverted dropout with keep mask drawn from (seed, stream, element index). */
DFQ_API DfqTensor *dfq_dropout (DfqArena *arena, DfqTensor *x, float p, guint64 seed, guint64 stream);

/* Reductions (sums in double, in a fixed order) */
/* Sum / mean of every element: x any -> scalar [1]. */
DFQ_API DfqTensor *dfq_sum (DfqArena *arena, DfqTensor *x);
DFQ_API DfqTensor *dfq_mean (DfqArena *arena, DfqTensor *x);
/* Mean over dimension @axis (negative counts from the end, -1 = last), the
 * dimension dropped (PyTorch x.mean(axis)): [d0, .., d_axis, .., dk] -> the
 * shape without d_axis; a 1-d input gives a scalar [1]. Per-sample channel
 * means of a feature map: dfq_mean_axis (dfq_mean_axis (x, 3), 2): [N,C,H,W] -> [N,C]. */
DFQ_API DfqTensor *dfq_mean_axis (DfqArena *arena, DfqTensor *x, int axis);
/* Per-channel mean / variance over every dim but 1 (BN statistics):
 * [N,C,H,W] or [N,C] -> [C]. */
DFQ_API DfqTensor *dfq_channel_mean (DfqArena *arena, DfqTensor *x);
DFQ_API DfqTensor *dfq_channel_var (DfqArena *arena, DfqTensor *x, gboolean unbiased);
/* Variance over H,W per sample and channel (ZeroQ statistics): [N,C,H,W] -> [N,C]. */
DFQ_API DfqTensor *dfq_spatial_var (DfqArena *arena, DfqTensor *x, gboolean unbiased);
/* [N,K] -> [N]. */
DFQ_API DfqTensor *dfq_row_sum (DfqArena *arena, DfqTensor *x);
/* Rows of [N,K] divided by their L2 norm (+ @eps): [N,K] -> [N,K]. */
DFQ_API DfqTensor *dfq_l2_normalize (DfqArena *arena, DfqTensor *x, float eps);

/* Softmax family and losses (logits are [N,K]) */
/* Over the last dim: [N,K] -> [N,K]. */
DFQ_API DfqTensor *dfq_softmax (DfqArena *arena, DfqTensor *x);
DFQ_API DfqTensor *dfq_log_softmax (DfqArena *arena, DfqTensor *x);
/* @labels: I32 [N] class indices, or F32 [N,K] soft labels. Mean over N -> scalar. */
DFQ_API DfqTensor *dfq_cross_entropy (DfqArena *arena, DfqTensor *logits, DfqTensor *labels);
/* KL(p || softmax(logits)) = sum p (log p - log_softmax(logits)), p = @target
 * probabilities [N,K]; 0 log 0 = 0. logits [N,K] -> scalar. */
DFQ_API DfqTensor *dfq_kl_div (DfqArena *arena, DfqTensor *logits, DfqTensor *target, DfqReduction reduction);
/* mean((a - b)^2): a, b any, same shape -> scalar. */
DFQ_API DfqTensor *dfq_mse (DfqArena *arena, DfqTensor *a, DfqTensor *b);
/* Entropy of the softmax of each row: [N,K] -> [N]. */
DFQ_API DfqTensor *dfq_entropy (DfqArena *arena, DfqTensor *logits);

/* Dense layers. @bias may be NULL. */
/* x [N,in], weight [out,in], bias [out] -> [N,out]. */
DFQ_API DfqTensor *dfq_linear (DfqArena *arena, DfqTensor *x, DfqTensor *weight, DfqTensor *bias);
/* x [N,Ci,H,W], weight [Co,Ci/groups,kh,kw], bias [Co] -> [N,Co,Ho,Wo],
 * Ho = (H + 2 padding - kh) / stride + 1 (Wo likewise). */
DFQ_API DfqTensor *dfq_conv2d (DfqArena *arena, DfqTensor *x, DfqTensor *weight, DfqTensor *bias,
                               int stride, int padding, int groups);
/* x [N,C,H,W] or [N,C]; gamma, beta, running_mean, running_var [C] -> the shape of x.
 * Training: normalise with batch statistics (biased variance) and, when running
 * stats are given, update them in place with @momentum (PyTorch: unbiased variance
 * goes into running_var). Eval: normalise with the running statistics.
 * @gamma/@beta may be NULL (affine=False). */
DFQ_API DfqTensor *dfq_batchnorm (DfqArena *arena, DfqTensor *x, DfqTensor *gamma, DfqTensor *beta,
                                  DfqTensor *running_mean, DfqTensor *running_var,
                                  gboolean training, float momentum, float eps);

/* Pooling and shape */
/* [N,C,H,W] -> [N,C,(H-kernel)/stride+1,(W-kernel)/stride+1]. */
DFQ_API DfqTensor *dfq_avg_pool (DfqArena *arena, DfqTensor *x, int kernel, int stride);
/* [N,C,H,W] -> [N,C]. */
DFQ_API DfqTensor *dfq_global_avg_pool (DfqArena *arena, DfqTensor *x);
/* [N,C,H,W] -> [N,C,H*scale,W*scale]. */
DFQ_API DfqTensor *dfq_upsample_nearest (DfqArena *arena, DfqTensor *x, int scale);
/* [N,C,H,W] -> [N,C,H+2pad,W+2pad] (pad < H and < W). */
DFQ_API DfqTensor *dfq_reflect_pad (DfqArena *arena, DfqTensor *x, int pad);
/* [N,C,H,W] -> [N,C,height,width], the window at (top, left). */
DFQ_API DfqTensor *dfq_crop (DfqArena *arena, DfqTensor *x, int top, int left, int height, int width);
/* weight [K,D], indices I32 [N] -> [N,D]. */
DFQ_API DfqTensor *dfq_embedding (DfqArena *arena, DfqTensor *weight, DfqTensor *indices);
/* Any -> @shape (same number of elements); a view sharing @x's data. */
DFQ_API DfqTensor *dfq_reshape (DfqArena *arena, DfqTensor *x, int n_dims, const gint64 *shape);
/* Along dim 1: a [N,Ca,...], b [N,Cb,...] (other dims equal) -> [N,Ca+Cb,...]. */
DFQ_API DfqTensor *dfq_concat (DfqArena *arena, DfqTensor *a, DfqTensor *b);
/* A leaf sharing @x's data, cut from the graph (PyTorch .detach()). Same shape. */
DFQ_API DfqTensor *dfq_detach (DfqArena *arena, DfqTensor *x);

/* An op of one's own (forward + backward, autograd and arenas like these):
 * dfq_custom_op() in dfq-custom-op.h. */

/* Fake quantization: x any -> the shape of x. @axis: the channel axis of
 * per-channel parameters (0 for weights, 1 for activations), whose tensors
 * then hold one value per channel ([C]), or -1 when they hold one value ([1]). */
/* GDFQ asymmetric quantizer (METHODS.md 1.3): S = (2^k-1)/max(hi-lo,1e-8),
 * zp = round(S*lo) + 2^(k-1), q = clamp(round(S*x - zp), -2^(k-1), 2^(k-1)-1),
 * x^ = (q + zp)/S. @lo/@hi get no gradient. */
DFQ_API DfqTensor *dfq_fake_quant (DfqArena *arena, DfqTensor *x, DfqTensor *lo, DfqTensor *hi,
                                   int axis, int bits, DfqSteMode ste);
/* LSQ: x^ = s * round(clamp(x/s, qn, qp)); ds per LSQ (Esser et al.), times @grad_scale. */
DFQ_API DfqTensor *dfq_fake_quant_lsq (DfqArena *arena, DfqTensor *x, DfqTensor *scale,
                                       int axis, int qn, int qp, float grad_scale);
/* Learnable clipping [lo_c, hi_c] (METHODS.md 12.2): STE inside, clip values get
 * the outside gradient, plus the exact in-range terms when @in_range_grad. */
DFQ_API DfqTensor *dfq_fake_quant_clip (DfqArena *arena, DfqTensor *x, DfqTensor *lo, DfqTensor *hi,
                                        int axis, int bits, gboolean in_range_grad);
/* Soft-bit rounding (METHODS.md 9, 11): s*(clamp(B + h(V) + zp, 0, 2^k-1) - zp),
 * h = rectified sigmoid (zeta 1.1, gamma -0.1), or B + [V >= 0] when @hard.
 * @base (B) and @zero_point get no gradient; @v and @scale do. */
DFQ_API DfqTensor *dfq_softbit_quant (DfqArena *arena, DfqTensor *base, DfqTensor *v, DfqTensor *scale,
                                      DfqTensor *zero_point, int axis, int bits, gboolean hard);
/* sum(1 - |2h(V) - 1|^beta): v any -> scalar. */
DFQ_API DfqTensor *dfq_round_reg (DfqArena *arena, DfqTensor *v, float beta);
/* The rectified sigmoid of soft bits, exposed for initialisation and tests. */
DFQ_API float dfq_softbit_h (float v);

G_END_DECLS
