/* The tensor: float32 (or int32 labels), NCHW, contiguous, 64-byte aligned and
 * owned by an arena. A tensor made by an op remembers the op and its sources, so
 * dfq_backward() can walk the graph each step builds (eager forward, recorded
 * tape for reverse mode). See docs/architecture.md. */
#pragma once

#include <glib.h>
#include <dfq/dfq-macros.h>
#include <dfq/dfq-arena.h>

G_BEGIN_DECLS

#define DFQ_MAX_DIMS 4 /* N, C, H, W */
#define DFQ_MAX_SRC 6
#define DFQ_MAX_OP_PARAMS 8
#define DFQ_TENSOR_NAME_MAX 64

typedef enum {
    DFQ_DTYPE_F32,
    DFQ_DTYPE_I32,
    DFQ_DTYPE_COUNT
} DfqDType;

typedef enum {
    DFQ_TENSOR_FLAG_PARAM = 1 << 0,         /* trainable leaf: owns a persistent .grad */
    DFQ_TENSOR_FLAG_INPUT = 1 << 1,         /* graph input (informative) */
    DFQ_TENSOR_FLAG_LOSS = 1 << 2,          /* scalar a backward pass starts from */
    DFQ_TENSOR_FLAG_REQUIRES_GRAD = 1 << 3, /* a PARAM, or made by an op from one */
} DfqTensorFlags;

/* Every op of the engine; the shapes each takes and returns are documented at
 * its builder in dfq-ops.h. Adding one: a value here, a file in core/ops/, a row
 * in core/ops/dfq-op-table.c and a case in tests/core/gradcases-*.c (gradient
 * check). Plugins add ops of their own without touching this list:
 * dfq-custom-op.h. */
typedef enum {
    DFQ_OP_NONE = 0, /* leaf */
    /* elementwise (dfq-op-elementwise.c) */
    DFQ_OP_ADD,    /* a + b, same shape */
    DFQ_OP_SUB,    /* a - b, same shape */
    DFQ_OP_MUL,    /* a * b, same shape */
    DFQ_OP_AFFINE, /* alpha * x + beta, scalars */
    DFQ_OP_ABS,
    DFQ_OP_SQRT,   /* sqrt(x) */
    DFQ_OP_LOG,    /* log(x) */
    DFQ_OP_CHANNEL_AFFINE, /* x[n,c,...] * s[c] + t[c]; s or t may be NULL */
    /* activations (dfq-op-activation.c) */
    DFQ_OP_RELU,
    DFQ_OP_RELU6,
    DFQ_OP_LEAKY_RELU,
    DFQ_OP_TANH,
    DFQ_OP_SIGMOID,
    DFQ_OP_DROPOUT,
    /* reductions (dfq-op-reduce.c) */
    DFQ_OP_SUM,          /* all elements -> scalar */
    DFQ_OP_MEAN,         /* all elements -> scalar */
    DFQ_OP_CHANNEL_MEAN, /* [N,C,H,W] -> [C], mean over N,H,W */
    DFQ_OP_CHANNEL_VAR,  /* [N,C,H,W] -> [C], variance over N,H,W (biased or unbiased) */
    DFQ_OP_SPATIAL_VAR,  /* [N,C,H,W] -> [N,C], variance over H,W per sample (ZeroQ stats) */
    DFQ_OP_ROW_SUM,      /* [N,K] -> [N] */
    DFQ_OP_L2_NORMALIZE, /* rows of [N,K] divided by their L2 norm (+eps) */
    /* softmax family and losses (dfq-op-loss.c) */
    DFQ_OP_SOFTMAX,       /* over the last dim of [N,K] */
    DFQ_OP_LOG_SOFTMAX,   /* over the last dim of [N,K] */
    DFQ_OP_CROSS_ENTROPY, /* logits [N,K], hard labels (I32 [N]) or soft labels [N,K] -> scalar mean over N */
    DFQ_OP_KL_DIV,        /* KL(p || softmax(logits)) with p given as probabilities; reduction mean|batchmean|sum */
    DFQ_OP_MSE,           /* mean((a-b)^2) -> scalar */
    DFQ_OP_ENTROPY,       /* logits [N,K] -> [N], H(softmax(logits)) */
    /* dense (dfq-op-linear.c, dfq-op-conv2d.c, dfq-op-batchnorm.c) */
    DFQ_OP_LINEAR,    /* x [N,in] W [out,in] b [out] -> [N,out] */
    DFQ_OP_CONV2D,    /* x [N,Ci,H,W] w [Co,Ci/g,kh,kw] b [Co] */
    DFQ_OP_BATCHNORM, /* x, gamma, beta, running_mean, running_var */
    /* pooling and shape (dfq-op-pool.c, dfq-op-shape.c) */
    DFQ_OP_AVG_POOL,
    DFQ_OP_GLOBAL_AVG_POOL, /* [N,C,H,W] -> [N,C] */
    DFQ_OP_UPSAMPLE_NEAREST,
    DFQ_OP_REFLECT_PAD,
    DFQ_OP_CROP,
    DFQ_OP_EMBEDDING, /* weight [K,D], indices I32 [N] -> [N,D] */
    DFQ_OP_RESHAPE,   /* shares data with its source */
    DFQ_OP_CONCAT,    /* along dim 1 */
    /* fake quantization (dfq-op-quant.c) */
    DFQ_OP_FAKE_QUANT,      /* GDFQ asymmetric min/max quantizer; STE or clipped STE; ranges get no gradient */
    DFQ_OP_FAKE_QUANT_LSQ,  /* learnable step s: x^ = s*round(clamp(x/s, qn, qp)) */
    DFQ_OP_FAKE_QUANT_CLIP, /* learnable per-channel clip [l_c, u_c] (ACD / PACT family) */
    DFQ_OP_SOFTBIT_QUANT,   /* s*(clamp(B + h(V) + zp, 0, 2^k-1) - zp), learnable V and s (AdaRound / GENIE-M) */
    DFQ_OP_ROUND_REG,       /* sum(1 - |2h(V)-1|^beta) (AdaRound rounding regulariser) */
    /* math (dfq-op-math.c); appended here so that earlier values keep their numbers */
    DFQ_OP_POW,       /* x^p, real p */
    DFQ_OP_EXP,       /* exp(x) */
    DFQ_OP_MEAN_AXIS, /* mean over one axis, the axis dropped */
    /* an op of a plugin's own (dfq-op-custom.c, dfq-custom-op.h) */
    DFQ_OP_CUSTOM,    /* forward and backward of the DfqCustomOp in op_aux */
    DFQ_OP_COUNT
} DfqOp;

typedef struct _DfqTensor DfqTensor;

struct _DfqTensor {
    DfqDType dtype;
    gint32 n_dims;
    gint64 shape[DFQ_MAX_DIMS];  /* shape[0] outermost, as in PyTorch */
    gint64 stride[DFQ_MAX_DIMS]; /* in elements; always contiguous row-major today */
    gpointer data;               /* arena memory; a view points into its source */
    DfqTensor *view_src;
    DfqArena *arena;             /* the arena that owns this tensor */
    DfqOp op;
    DfqTensor *src[DFQ_MAX_SRC];
    gint32 op_params[DFQ_MAX_OP_PARAMS];  /* integer parameters of the op */
    float op_fparams[DFQ_MAX_OP_PARAMS];  /* float parameters of the op */
    gpointer op_aux;             /* arena memory an op saves for its backward */
    DfqTensor *grad;             /* same shape; persistent for PARAMs, scratch otherwise */
    guint32 flags;
    guint64 seq;                 /* creation order: a topological order of the graph */
    guint64 visit;               /* backward bookkeeping */
    char name[DFQ_TENSOR_NAME_MAX]; /* "layers.3.bn1:in" - how losses find taps */
};

/**
 * dfq_tensor_new:
 * @shape: (array length=n_dims) sizes, outermost first.
 * Returns: (transfer none) a zero-filled contiguous tensor owned by @arena.
 */
DFQ_API DfqTensor *dfq_tensor_new (DfqArena *arena, DfqDType dtype, int n_dims, const gint64 *shape);
DFQ_API DfqTensor *dfq_tensor_new_1d (DfqArena *arena, DfqDType dtype, gint64 n0);
DFQ_API DfqTensor *dfq_tensor_new_2d (DfqArena *arena, DfqDType dtype, gint64 n0, gint64 n1);
DFQ_API DfqTensor *dfq_tensor_new_4d (DfqArena *arena, DfqDType dtype, gint64 n0, gint64 n1, gint64 n2, gint64 n3);
/* A scalar is a 1-d tensor of one element. */
DFQ_API DfqTensor *dfq_tensor_new_scalar (DfqArena *arena, float value);
/* Same shape and dtype as @like, zero-filled, in @arena. */
DFQ_API DfqTensor *dfq_tensor_new_like (DfqArena *arena, const DfqTensor *like);
/* A new leaf in @arena holding a copy of @src's values (no graph link). */
DFQ_API DfqTensor *dfq_tensor_dup (DfqArena *arena, const DfqTensor *src);

DFQ_API gint64 dfq_tensor_numel (const DfqTensor *t);
DFQ_API gboolean dfq_tensor_same_shape (const DfqTensor *a, const DfqTensor *b);
DFQ_API gboolean dfq_tensor_is_contiguous (const DfqTensor *t);
/* "[128, 16, 28, 28]" into @buf. */
DFQ_API const char *dfq_tensor_shape_string (const DfqTensor *t, char *buf, gsize buf_size);

static inline float *
dfq_tensor_f32 (const DfqTensor *t)
{
    return (float *) t->data;
}

static inline gint32 *
dfq_tensor_i32 (const DfqTensor *t)
{
    return (gint32 *) t->data;
}

DFQ_API void dfq_tensor_set_name (DfqTensor *t, const char *format, ...) G_GNUC_PRINTF (2, 3);
DFQ_API void dfq_tensor_fill (DfqTensor *t, float value);
/* Copies values (same numel, F32) without touching graph links. */
DFQ_API void dfq_tensor_copy_data (DfqTensor *dst, const DfqTensor *src);

/**
 * dfq_tensor_set_param:
 * Marks a leaf trainable: it gets a zeroed persistent .grad in its own arena and
 * every op result that depends on it records the graph for dfq_backward().
 */
DFQ_API void dfq_tensor_set_param (DfqTensor *t);
DFQ_API gboolean dfq_tensor_requires_grad (const DfqTensor *t);
DFQ_API void dfq_tensor_zero_grad (DfqTensor *t);

/* Max |a-b| over all elements (same numel). */
DFQ_API float dfq_tensor_max_abs_diff (const DfqTensor *a, const DfqTensor *b);
/* TRUE if every element is finite. */
DFQ_API gboolean dfq_tensor_all_finite (const DfqTensor *t);

G_END_DECLS
