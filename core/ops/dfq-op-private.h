/* Private op machinery shared by core/ops/ *.c and the autograd walker.
 * One op = one enum value, one forward, one backward, one row in dfq-op-table.c. */
#pragma once

#ifdef _OPENMP
#include <omp.h>
#endif

#include <dfq/dfq.h>

G_BEGIN_DECLS

/* Forward fills dst->data from dst->src[] and dst->op_params (may use op_aux).
 * Backward reads dst->grad and ACCUMULATES (+=) into the grads of those sources
 * that require one (dfq_priv_grad_of returns NULL for the others). */
typedef void (*DfqOpForwardFn) (DfqTensor *dst);
typedef void (*DfqOpBackwardFn) (DfqTensor *dst, DfqArena *scratch);

typedef struct {
    const char *name;
    DfqOpForwardFn forward;
    DfqOpBackwardFn backward;
} DfqOpInfo;

const DfqOpInfo *dfq_priv_op_info (DfqOp op);

/* Creates the result of @op in @arena (zeroed, contiguous), links up to
 * DFQ_MAX_SRC sources (NULL-terminated list not needed: pass n_src), and decides
 * whether it requires a gradient (grad mode on and any source does). The caller
 * sets op_params and then calls dfq_priv_op_run(). */
DfqTensor *dfq_priv_op_new (DfqArena *arena, DfqOp op, DfqDType dtype, int n_dims, const gint64 *shape,
                            int n_src, DfqTensor *const *srcs);
/* The same without zero-filling the result: for ops whose forward writes every
 * element of it (most do; the saving is one pass over every activation). */
DfqTensor *dfq_priv_op_new_uninit (DfqArena *arena, DfqOp op, DfqDType dtype, int n_dims, const gint64 *shape,
                                   int n_src, DfqTensor *const *srcs);
/* Runs the forward of dst->op. If no gradient is needed, the tensor is turned
 * into a leaf (op and sources cleared) so nothing keeps the graph alive. */
DfqTensor *dfq_priv_op_run (DfqTensor *dst);

/* The gradient buffer of @t (allocated zeroed in @scratch on first use), or NULL
 * when @t (may be NULL) does not require a gradient. */
float *dfq_priv_grad_of (DfqTensor *t, DfqArena *scratch);
/* The same, but a buffer created by this call is NOT zero-filled: *fresh says
 * so, and then the caller must WRITE (=) every element of it instead of adding
 * (+=), before anything reads it. When *fresh is FALSE the buffer holds earlier
 * contributions (a tensor used by several ops, or twice by one) and the caller
 * adds as usual. Saves a pass over every activation gradient in the backward. */
float *dfq_priv_grad_of_fresh (DfqTensor *t, DfqArena *scratch, gboolean *fresh);

/* dfq_priv_grad_of_fresh() for source @i of @dst when no other source of @dst
 * is the same tensor (whose gradient the op would then add to the same buffer,
 * maybe before writing it); otherwise dfq_priv_grad_of() and *fresh = FALSE. */
static inline float *
dfq_priv_src_grad_of_fresh (DfqTensor *dst, int i, DfqArena *scratch, gboolean *fresh)
{
    for (int k = 0; k < DFQ_MAX_SRC; k++)
        if (k != i && dst->src[k] == dst->src[i]) {
            *fresh = FALSE;
            return dfq_priv_grad_of (dst->src[i], scratch);
        }
    return dfq_priv_grad_of_fresh (dst->src[i], scratch, fresh);
}

/* ---- fused eval-mode layers (dfq_layer_conv_bn in core/model) ----
 * In eval mode without a graph, conv -> BN (running statistics) -> optional
 * residual add -> optional ReLU can run as one pass: the 3x3 kernel applies
 * the rest to each output tile in its registers before storing it. Every step
 * is the same float operation as in the separate ops, so the result has the
 * same bits (tests/models/test-models.c checks it). */

/* How the eval BN op rounds (x - m) a + b: with one rounding (a fused
 * multiply-add: the AVX2/FMA clone of its loop, contracted by the compiler), or
 * the product and the sum separately. UNKNOWN: neither (then nothing fuses). */
typedef enum {
    DFQ_PRIV_BN_ROUNDING_UNKNOWN,
    DFQ_PRIV_BN_ROUNDING_FMA,
    DFQ_PRIV_BN_ROUNDING_SEPARATE,
} DfqPrivBnRounding;
DfqPrivBnRounding dfq_priv_bn_eval_rounding (void);
/* The eval BN op's per-channel mean, scale a and shift b (float[C] each). */
void dfq_priv_bn_eval_coeffs (const DfqTensor *gamma, const DfqTensor *beta, const DfqTensor *running_mean,
                              const DfqTensor *running_var, float eps, float *mean, float *scale, float *shift);

/* What follows the conv, per output channel co:
 * y = act (((conv + bias) - mean[co]) * scale[co] + shift[co] + residual),
 * act: ReLU (@relu), ReLU6 (@relu6) or none. */
typedef struct {
    const float *mean;     /* float[Co] */
    const float *scale;    /* float[Co] */
    const float *shift;    /* float[Co] */
    const float *residual; /* [N, Co, Ho, Wo] (the result's shape), or NULL */
    gboolean relu;
    gboolean relu6;
} DfqPrivConvEpilogue;

/* Whether dfq_priv_conv2d_fused can run this conv: a BN rounding the epilogue
 * reproduces (a fused multiply-add). Convs that take an AVX-512 kernel (3x3,
 * 1x1 stride 1, depthwise 3x3) apply it in its registers; every other conv
 * applies it to each output image (or plane) right after computing it, in
 * cache. */
gboolean dfq_priv_conv2d_fusable (const DfqTensor *x, const DfqTensor *weight, const DfqTensor *bias, int stride,
                                  int padding, int groups);
/* The conv with its epilogue, as a leaf (no graph: nothing may require a
 * gradient). Only where dfq_priv_conv2d_fusable says so. */
DfqTensor *dfq_priv_conv2d_fused (DfqArena *arena, DfqTensor *x, DfqTensor *weight, DfqTensor *bias, int stride,
                                  int padding, int groups, const DfqPrivConvEpilogue *epilogue);

/* Whether the CPU has AVX-512F and the kernels that need it are not turned
 * off (the environment variable DFQ_CONV_NO_AVX512, for comparisons). */
gboolean dfq_priv_cpu_avx512 (void);

/* ---- 1x1 stride-1 convs (dfq-op-conv1x1.c) ----
 * y = conv1x1 (x) (+ b) for a batch of @n images of @ci x @plane floats into
 * @co x @plane each, through the epilogue @ep when not NULL; the weights are
 * packed in @arena. Only where dfq_priv_conv1x1_usable says so. */
gboolean dfq_priv_conv1x1_usable (gint64 ci, gint64 co, gint64 plane);
void dfq_priv_conv1x1_forward (DfqArena *arena, const float *x, const float *w, const float *b, float *y, gint64 n,
                               gint64 ci, gint64 co, gint64 plane, const DfqPrivConvEpilogue *ep, int n_threads);
/* The kernel's weights for @cout outputs from @cin inputs, from w[cout][cin],
 * or from w[cin][cout] when @transposed (the input gradient's: dX = W^T dY). */
float *dfq_priv_conv1x1_pack (DfqArena *arena, const float *w, gint64 cout, gint64 cin, gboolean transposed);
/* One image on the calling thread, no bias: y = or (@accumulate) += the sums. */
void dfq_priv_conv1x1_image (const float *wpack, const float *x, float *y, gint64 cin, gint64 cout, gint64 plane,
                             gboolean accumulate);

/* ---- depthwise 3x3 convs, padding 1, stride 1 or 2 (dfq-op-depthwise.c) ----
 * dfq_priv_dw3_fast_plan describes a layer's planes once (@h x @w input,
 * stride @s); dfq_priv_dw3_fast_plane then computes one output plane of the
 * input plane @x with the taps @wk[9] and @bias, through the epilogue @ep of
 * output channel @co (residual plane @res) when @ep is not NULL. Only where
 * dfq_priv_dw3_fast_usable says so. */
#define DFQ_DW3_FAST_FLAT_VECS 4
#define DFQ_DW3_FAST_ROW_BLOCKS 2 /* 16-column blocks of an output row (wo <= 32) */
typedef struct {
    gint64 h, w, s, ho, wo;
    gboolean flat; /* a small stride-1 plane taken as flat vectors of 16 positions */
    int n_vec;     /* flat: vectors per plane */
    guint16 tap_mask[DFQ_DW3_FAST_FLAT_VECS][9]; /* flat: lanes whose tap (i, j) lies in the plane */
    guint16 out_mask[DFQ_DW3_FAST_FLAT_VECS];    /* flat: lanes inside the plane */
    /* rows: per 16-column block of output columns, the lanes inside the
     * output row and the masks of the block's input row loads */
    guint16 row_out[DFQ_DW3_FAST_ROW_BLOCKS];
    guint16 row_load[DFQ_DW3_FAST_ROW_BLOCKS][4];
    /* stride 2, w <= 32: per 16-column block of an input row (dX), the lanes
     * inside the row, those that take a tap of column j = 0 or 1 (even
     * columns, and odd ones whose right neighbour's output exists), the odd
     * columns (j = 2), and the dY columns a block reads */
    gboolean dx2;
    guint16 dx2_in[2], dx2_j01[2], dx2_odd[2], dx2_dy[2];
} DfqPrivDw3Plan;
gboolean dfq_priv_dw3_fast_usable (gint64 w, gint64 s);
void dfq_priv_dw3_fast_plan (gint64 h, gint64 w, gint64 s, DfqPrivDw3Plan *plan);
void dfq_priv_dw3_fast_plane (const DfqPrivDw3Plan *plan, const float *x, const float *wk, float bias, float *y,
                              const DfqPrivConvEpilogue *ep, gint64 co, const float *res);
/* (@res without @ep: y = the plane + res, an input gradient added to; @res
 * may be @y.) The weight-gradient sums of one plane pair: t[3i + j] = the sum
 * over output positions of @dy times the input @x at tap (i, j), over 16
 * lanes in a fixed order, then across them; the pair the caller takes next
 * (@x_next, @dy_next, or NULL) is prefetched. */
void dfq_priv_dw3_fast_wgrad (const DfqPrivDw3Plan *plan, const float *x, const float *dy, const float *x_next,
                              const float *dy_next, float t[9]);
/* dX of one plane of a stride-2 layer (@plan->dx2): @gx (+)= the scatter of
 * @dy through the taps @wk, each input element taking its terms in the order
 * of dfq-op-conv2d.c's scatter loop (tap column j, output row, tap row i),
 * each a product rounded on its own and then added: the same bits. @fresh:
 * @gx is written, not added to (as if zeroed first). */
void dfq_priv_dw3_fast_dx_s2 (const DfqPrivDw3Plan *plan, const float *dy, const float *wk, float *gx,
                              gboolean fresh);

/* ---- BN with its activation (dfq_layer_conv_bn in core/model, any mode) ----
 * dfq_batchnorm followed by ReLU or ReLU6 as one graph op: the activation is
 * applied to each normalised plane while it is in cache, and the backward
 * masks the incoming gradient plane by plane into a small per-thread buffer
 * before the BN backward reads it. Forward values and every gradient are those
 * of the separate ops bit for bit (the same float operations in the same
 * order); what goes is one tensor, its gradient and two passes over memory. */
typedef enum {
    DFQ_PRIV_BN_ACT_NONE,
    DFQ_PRIV_BN_ACT_RELU,
    DFQ_PRIV_BN_ACT_RELU6,
} DfqPrivBnAct;
DfqTensor *dfq_priv_batchnorm_act (DfqArena *arena, DfqTensor *x, DfqTensor *gamma, DfqTensor *beta,
                                   DfqTensor *running_mean, DfqTensor *running_var, gboolean training,
                                   float momentum, float eps, DfqPrivBnAct act);

/* Asks for the @n floats from @p (a plane the caller reads next, where the
 * hardware prefetcher does not look: a channel or image stride away). */
static inline void
dfq_priv_prefetch (const float *p, gint64 n)
{
    for (gint64 k = 0; k < n; k += 64 / (gint64) sizeof (float))
        __builtin_prefetch (p + k, 0, 3);
}

/* The calling thread's number inside an OpenMP region (0 outside one, or
 * without OpenMP): the index of its slice of a per-thread workspace. */
static inline int
dfq_priv_thread_id (void)
{
#ifdef _OPENMP
    return omp_get_thread_num ();
#else
    return 0;
#endif
}

/* The size of the calling thread's team (1 outside a parallel region, or
 * without OpenMP). */
static inline int
dfq_priv_team_size (void)
{
#ifdef _OPENMP
    return omp_get_num_threads ();
#else
    return 1;
#endif
}

/* Channel index helpers for per-channel parameters along @axis. */
static inline gint64
dfq_priv_inner_size (const DfqTensor *t, int axis)
{
    gint64 inner = 1;
    for (int d = axis + 1; d < t->n_dims; d++)
        inner *= t->shape[d];
    return inner;
}

/* Hot elementwise kernels are plain C loops that the compiler vectorises. The
 * default build targets baseline x86-64 (SSE2), so such a kernel is also
 * compiled for AVX2/FMA (x86-64-v3) and the loader picks the best one for the
 * CPU (GCC function multiversioning). Put the attribute on a static function
 * that an OpenMP loop calls on a chunk: the outlined body of a parallel loop
 * itself is not cloned. The clones may round differently (FMA contraction):
 * results stay bit-identical run to run and for any thread count on one
 * machine. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define DFQ_PRIV_SIMD_CLONES __attribute__ ((target_clones ("arch=x86-64-v3", "default")))
#else
#define DFQ_PRIV_SIMD_CLONES
#endif

/* Per-function code generation switches (GCC's optimize attribute; other
 * compilers get nothing).
 * NO_FP_CONTRACT: a loop whose products must be rounded on their own, as in
 * the plain build, also in its x86-64-v3 clone (GCC contracts a * b - c into
 * one FMA there, which rounds once: different bits). Under clang, put
 * `#pragma clang fp contract(off)` in the function body as well.
 * NO_LOOP_MEMSET: GCC turns a loop that stores zeros into a memset call; for
 * loops of a float or two, run millions of times, the call costs more. */
#if defined(__GNUC__) && !defined(__clang__)
#define DFQ_PRIV_NO_FP_CONTRACT __attribute__ ((optimize ("fp-contract=off")))
#define DFQ_PRIV_NO_LOOP_MEMSET __attribute__ ((optimize ("no-tree-loop-distribute-patterns")))
#else
#define DFQ_PRIV_NO_FP_CONTRACT
#define DFQ_PRIV_NO_LOOP_MEMSET
#endif

/* Elementwise loops go over fixed chunks of this many elements, one chunk per
 * OpenMP iteration (the chunks depend on the size only). */
#define DFQ_PRIV_CHUNK 8192

static inline gint64
dfq_priv_n_chunks (gint64 n)
{
    return (n + DFQ_PRIV_CHUNK - 1) / DFQ_PRIV_CHUNK;
}

/* Forward and backward of every op, grouped by file. */
#define DFQ_PRIV_OP_DECL(name)                      \
    void dfq_op_##name##_forward (DfqTensor *dst); \
    void dfq_op_##name##_backward (DfqTensor *dst, DfqArena *scratch)

DFQ_PRIV_OP_DECL (add);
DFQ_PRIV_OP_DECL (sub);
DFQ_PRIV_OP_DECL (mul);
DFQ_PRIV_OP_DECL (affine);
DFQ_PRIV_OP_DECL (abs);
DFQ_PRIV_OP_DECL (sqrt);
DFQ_PRIV_OP_DECL (log);
DFQ_PRIV_OP_DECL (channel_affine);
DFQ_PRIV_OP_DECL (relu);
DFQ_PRIV_OP_DECL (relu6);
DFQ_PRIV_OP_DECL (leaky_relu);
DFQ_PRIV_OP_DECL (tanh);
DFQ_PRIV_OP_DECL (sigmoid);
DFQ_PRIV_OP_DECL (dropout);
DFQ_PRIV_OP_DECL (sum);
DFQ_PRIV_OP_DECL (mean);
DFQ_PRIV_OP_DECL (channel_mean);
DFQ_PRIV_OP_DECL (channel_var);
DFQ_PRIV_OP_DECL (spatial_var);
DFQ_PRIV_OP_DECL (row_sum);
DFQ_PRIV_OP_DECL (l2_normalize);
DFQ_PRIV_OP_DECL (softmax);
DFQ_PRIV_OP_DECL (log_softmax);
DFQ_PRIV_OP_DECL (cross_entropy);
DFQ_PRIV_OP_DECL (kl_div);
DFQ_PRIV_OP_DECL (mse);
DFQ_PRIV_OP_DECL (entropy);
DFQ_PRIV_OP_DECL (linear);
DFQ_PRIV_OP_DECL (conv2d);
DFQ_PRIV_OP_DECL (batchnorm);
DFQ_PRIV_OP_DECL (avg_pool);
DFQ_PRIV_OP_DECL (global_avg_pool);
DFQ_PRIV_OP_DECL (upsample_nearest);
DFQ_PRIV_OP_DECL (reflect_pad);
DFQ_PRIV_OP_DECL (crop);
DFQ_PRIV_OP_DECL (embedding);
DFQ_PRIV_OP_DECL (reshape);
DFQ_PRIV_OP_DECL (concat);
DFQ_PRIV_OP_DECL (fake_quant);
DFQ_PRIV_OP_DECL (fake_quant_lsq);
DFQ_PRIV_OP_DECL (fake_quant_clip);
DFQ_PRIV_OP_DECL (softbit_quant);
DFQ_PRIV_OP_DECL (round_reg);
DFQ_PRIV_OP_DECL (pow);
DFQ_PRIV_OP_DECL (exp);
DFQ_PRIV_OP_DECL (mean_axis);
DFQ_PRIV_OP_DECL (custom);

G_END_DECLS
