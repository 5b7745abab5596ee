/* Models: feature kind MODEL. A model plugin creates named parameters
 * (PyTorch names) in its init() and builds its forward graph from the layer
 * helpers below, which is where the core plugs in what methods need without the
 * model knowing: taps (BN inputs and statistics, conv outputs, block bodies,
 * logits), quantization sites (weights of conv/linear, activations after
 * ReLU/ReLU6) and layer wrapping by transforms (swing convolution). */
#pragma once

#include <glib.h>
#include <dfq/dfq-macros.h>
#include <dfq/dfq-plugin.h>
#include <dfq/dfq-tensor.h>

G_BEGIN_DECLS

typedef struct _DfqModel DfqModel;
typedef struct _DfqModelClass DfqModelClass;
typedef struct _DfqForward DfqForward;
typedef struct _DfqTapSet DfqTapSet;

/* ---- taps ---- */
typedef enum {
    DFQ_TAP_INPUT,   /* "input" */
    DFQ_TAP_BN_IN,   /* "<bn>:in"; aux0/aux1 = running mean/var of that BN */
    DFQ_TAP_CONV_OUT,/* "<conv>:out" (before BN) */
    DFQ_TAP_BN_OUT,  /* "<bn>:out" (after BN, before activation) */
    DFQ_TAP_BODY,    /* "<block>:body" residual body output, before the add */
    DFQ_TAP_BLOCK,   /* "<block>:out" block output */
    DFQ_TAP_FEATURE, /* "feature": the pooled features before the classifier */
    DFQ_TAP_LOGITS,  /* "logits" */
    /* Quantization taps, emitted where the student's quantizer changed a
     * tensor (never by a model without a quantizer, so `dfq inspect --taps`
     * does not list them): tensor = Q(X), aux0 = X. */
    DFQ_TAP_QUANT_ACT,    /* "<site>:quant" an activation site */
    DFQ_TAP_QUANT_WEIGHT, /* "<site>:wquant" a weight site */
} DfqTapKind;

typedef struct {
    const char *name;  /* "layers.3.bn1:in" (owned by the tap set, valid until cleared) */
    DfqTapKind kind;
    DfqTensor *tensor;
    DfqTensor *aux0;
    DfqTensor *aux1;
} DfqTap;

/* A set of glob patterns ("*.bn*:in", "layers.*:body", "logits") and the taps
 * that matched during the last forward. Reused across steps without allocating. */
DFQ_API DfqTapSet *dfq_tap_set_new (const char *const *patterns);
DFQ_API void dfq_tap_set_free (DfqTapSet *set);
DFQ_API void dfq_tap_set_clear (DfqTapSet *set);
DFQ_API guint dfq_tap_set_size (const DfqTapSet *set);
DFQ_API const DfqTap *dfq_tap_set_get (const DfqTapSet *set, guint i);
/* Finds a tap by exact name; NULL if absent. */
DFQ_API const DfqTap *dfq_tap_set_find (const DfqTapSet *set, const char *name);

/* ---- hooks a forward pass carries ---- */

/* Weight / activation fake quantization at a named site. Returns the tensor to use
 * (may be @x itself), allocated in fwd->arena. Implemented by quantizer
 * features through the runner. The result (and @x) is for the forward only: in
 * no-grad evaluation a model may run its blocks in arenas of its own and reset
 * them once their consumers have run (mobilenetv2-cifar), so a hook must not
 * keep either tensor after it returns; one that records tensors runs the model
 * block by block (dfq_model_forward_block), as dfq_quantizer_attach does. */
typedef DfqTensor *(*DfqQuantizeFn) (gpointer user_data, DfqForward *fwd, const char *site, DfqTensor *x);
/* Layer wrapping: called before a conv runs with its input; returns the input to
 * use (swing convolution pads and crops here). @stride lets transforms pick
 * strided convs. */
typedef DfqTensor *(*DfqConvInputFn) (gpointer user_data, DfqForward *fwd, const char *conv, int stride, DfqTensor *x);

#define DFQ_FORWARD_MAX_TAP_SETS 8

struct _DfqForward {
    DfqArena *arena;     /* where the step's graph lives */
    gboolean training;   /* BN uses batch statistics and updates running stats */
    gboolean update_bn_stats; /* in training mode, update running stats (default TRUE) */
    DfqTapSet *tap_sets[DFQ_FORWARD_MAX_TAP_SETS];
    guint n_tap_sets;
    DfqQuantizeFn quantize_weight;
    DfqQuantizeFn quantize_act;
    gpointer quant_data;
    DfqConvInputFn conv_input;
    gpointer conv_input_data;
    guint64 seed;        /* for stochastic layers (dropout, swing offsets) */
    guint64 step;        /* distinct per step so draws differ */
};

/* A plain forward: eval or train mode, nothing attached. */
DFQ_API void dfq_forward_init (DfqForward *fwd, DfqArena *arena, gboolean training);
DFQ_API void dfq_forward_add_taps (DfqForward *fwd, DfqTapSet *set);

/* ---- the model ---- */

struct _DfqModel {
    DfqFeature parent;
    DfqArena *arena;       /* parameters and buffers */
    GPtrArray *params;     /* DfqTensor *: trainable (conv/linear weights, biases, BN affine) */
    GPtrArray *buffers;    /* DfqTensor *: BN running stats */
    GHashTable *by_name;   /* name -> DfqTensor * for params and buffers */
    GPtrArray *blocks;     /* char *: names of the units that can run alone, in order */
    gint in_channels;      /* input shape the model expects */
    gint height;
    gint width;
    gint classes;
    gpointer reserved[4];
};

struct _DfqModelClass {
    DfqFeatureClass parent;
    /* Creates parameters with dfq_model_add_* (called by dfq_model_setup from
     * the feature's init). */
    gboolean (*build) (DfqModel *self, GError **error);
    /* The whole network: x [N,C,H,W] -> logits [N,classes]. */
    DfqTensor *(*forward) (DfqModel *self, DfqForward *fwd, DfqTensor *x);
    /* Runs block @index of self->blocks alone (block reconstruction). */
    DfqTensor *(*forward_block) (DfqModel *self, DfqForward *fwd, guint index, DfqTensor *x);
    gpointer reserved[4];
};

#define DFQ_MODEL_CLASS(model) ((const DfqModelClass *) ((DfqFeature *) (model))->klass)

/* For a model class's init(): allocates the arena and tables and calls build().
 * Plugins set .parent.init = dfq_model_setup and .parent.finalize = dfq_model_teardown. */
DFQ_API gboolean dfq_model_setup (DfqFeature *self, GError **error);
DFQ_API void dfq_model_teardown (DfqFeature *self);

/* Parameter creation, PyTorch default inits (kaiming_uniform(a=sqrt 5) weights,
 * U(+-1/sqrt(fan_in)) biases, BN gamma 1 beta 0, running 0/1), drawn from the
 * counter RNG keyed by @seed and the parameter's name. */
DFQ_API DfqTensor *dfq_model_add_conv (DfqModel *self, const char *name, int cin, int cout, int k, int groups, gboolean bias, guint64 seed);
DFQ_API DfqTensor *dfq_model_add_linear (DfqModel *self, const char *name, int in, int out, gboolean bias, guint64 seed);
DFQ_API void dfq_model_add_bn (DfqModel *self, const char *name, int channels, gboolean affine);
DFQ_API DfqTensor *dfq_model_add_param (DfqModel *self, const char *name, int n_dims, const gint64 *shape);
DFQ_API DfqTensor *dfq_model_add_buffer (DfqModel *self, const char *name, int n_dims, const gint64 *shape);
DFQ_API void dfq_model_add_block (DfqModel *self, const char *name);
/* (transfer none) the tensor named @name ("layers.0.conv1.weight"), or NULL. */
DFQ_API DfqTensor *dfq_model_get (DfqModel *self, const char *name);
DFQ_API gint64 dfq_model_n_parameters (DfqModel *self);

/* ---- layer helpers used by forward() ---- */
/* conv "<name>.weight" (+ ".bias" if present); quantization site <name>; tap "<name>:out". */
DFQ_API DfqTensor *dfq_layer_conv (DfqModel *self, DfqForward *fwd, const char *name, DfqTensor *x,
                                   int stride, int padding, int groups);
DFQ_API DfqTensor *dfq_layer_linear (DfqModel *self, DfqForward *fwd, const char *name, DfqTensor *x);
/* BN "<name>.{weight,bias,running_mean,running_var}", eps/momentum; taps "<name>:in", "<name>:out". */
DFQ_API DfqTensor *dfq_layer_bn (DfqModel *self, DfqForward *fwd, const char *name, DfqTensor *x, float eps, float momentum);
typedef enum { DFQ_ACT_RELU, DFQ_ACT_RELU6 } DfqActKind;
/* Activation followed by the activation quantization site named @site. */
DFQ_API DfqTensor *dfq_layer_act (DfqModel *self, DfqForward *fwd, const char *site, DfqTensor *x, DfqActKind kind);
/* An activation quantization site named @site without an activation: the
 * signed tensors a quantizer may also quantize (MobileNetV2's linear-bottleneck
 * outputs and residual sums). Returns @x through the quantizer's hook. */
DFQ_API DfqTensor *dfq_layer_act_site (DfqModel *self, DfqForward *fwd, const char *site, DfqTensor *x);
/* conv -> BN -> [+ residual] -> [activation], the usual "conv-bn-relu" unit:
 * the same result, taps, quantization sites and hooks as dfq_layer_conv (with
 * @groups), dfq_layer_bn, dfq_add (bn_out, residual) and dfq_layer_act in that
 * order. Fields not set (zero) mean: groups 1, no activation (@act_site NULL),
 * no residual, no body tap. */
typedef struct {
    const char *conv;      /* conv "<conv>.weight" (+ ".bias"), as dfq_layer_conv */
    int stride;
    int padding;
    const char *bn;        /* BN "<bn>.*", as dfq_layer_bn */
    float bn_eps;
    float bn_momentum;
    DfqTensor *residual;   /* added to the BN output before the activation (a shortcut), or NULL */
    const char *body_tap;  /* a DFQ_TAP_BODY tap of this name on the BN output, before the add, or NULL */
    const char *act_site;  /* activation and its quantization site, as dfq_layer_act; NULL: none */
    DfqActKind act;
    int groups;            /* conv groups (depthwise: the channels); 0 means 1 */
    int reserved_int;
    gpointer reserved[3];
} DfqLayerConvBn;

/* Runs @layer on @x. In eval mode, when no gradient is needed (grad mode off,
 * or neither @x, the weights, BN affine nor @residual requires one) and no tap
 * set wants the conv or BN output or the body, the conv computes BN, the
 * residual add and a ReLU or ReLU6 in its epilogue (in the registers of the
 * engine's 3x3 kernels on AVX-512 CPUs; on each output image or plane while it
 * is in cache for 1x1, depthwise and other convs): one pass instead of four,
 * with the same bits as the separate ops. Anything else (or a CPU whose BN op
 * does not round with a fused multiply-add) runs the separate ops. */
DFQ_API DfqTensor *dfq_layer_conv_bn (DfqModel *self, DfqForward *fwd, const DfqLayerConvBn *layer, DfqTensor *x);
/* Whether dfq_layer_conv_bn (@self, @fwd, @layer, @x) will take the fused
 * path, for a model that would then compute a shortcut early, to pass it as
 * @layer->residual: TRUE only when @fwd has no hooks (quantization sites,
 * conv input), whose calls would then come in another order. The residual
 * itself is not checked when NULL: the caller makes sure that it will need
 * no gradient and have the conv output's shape. */
DFQ_API gboolean dfq_layer_conv_bn_fuses (DfqModel *self, DfqForward *fwd, const DfqLayerConvBn *layer, DfqTensor *x);
/* Whether dfq_layer_conv_bn may fuse (default TRUE; FALSE when the environment
 * variable DFQ_NO_FUSION is set at the first call): for comparisons and tests.
 * Process-wide; returns the previous setting. */
DFQ_API gboolean dfq_layer_set_fusion_enabled (gboolean enabled);

/* Emits a tap to every tap set whose patterns match @name. */
DFQ_API void dfq_layer_tap (DfqForward *fwd, const char *name, DfqTapKind kind, DfqTensor *t, DfqTensor *aux0, DfqTensor *aux1);

/* ---- whole-model helpers ---- */
DFQ_API DfqTensor *dfq_model_forward (DfqModel *self, DfqForward *fwd, DfqTensor *x);
DFQ_API DfqTensor *dfq_model_forward_block (DfqModel *self, DfqForward *fwd, guint index, DfqTensor *x);
/* Loads weights (safetensors) by name, honouring rename rules ("regex=>replacement"). */
DFQ_API gboolean dfq_model_load (DfqModel *self, const char *path, const char *const *rename_rules, GError **error);
DFQ_API gboolean dfq_model_save (DfqModel *self, const char *path, GHashTable *metadata, GError **error);
/* Frozen (FALSE): no parameter requires a gradient, so forwards on inputs that
 * need none build no graph (the teacher). TRUE restores trainability. */
DFQ_API void dfq_model_set_trainable (DfqModel *self, gboolean trainable);
/* Copies every parameter and buffer from @src (same architecture). */
DFQ_API void dfq_model_copy_weights (DfqModel *dst, DfqModel *src);

/* ---- what a model offers losses and quantizers (core/model/dfq-model-probe.c) ---- */

typedef enum {
    DFQ_SITE_WEIGHT, /* a conv/linear weight, through DfqForward.quantize_weight; site = layer name */
    DFQ_SITE_ACT,    /* an activation output, through DfqForward.quantize_act; site = activation name */
} DfqSiteKind;

/* A tap or a quantization site of a model and the shape of its tensor. */
typedef struct {
    char *name;                  /* "layers.3.bn1:in" (tap), "layers.3.conv1" (site) */
    guint kind;                  /* DfqTapKind for a tap, DfqSiteKind for a site */
    gint n_dims;
    gint64 shape[DFQ_MAX_DIMS];  /* activations for the batch size asked for */
} DfqModelPoint;

DFQ_API void dfq_model_point_free (DfqModelPoint *point);
/* "input", "bn-in", "conv-out", "bn-out", "body", "block", "feature", "logits", "quant-act", "quant-weight". */
DFQ_API const char *dfq_tap_kind_name (DfqTapKind kind);
/* Whether @feature is a MODEL whose instance is a DfqModel set up by
 * dfq_model_setup (so its forward can run). */
DFQ_API gboolean dfq_model_is_built (const DfqFeature *feature);
/**
 * dfq_model_list_taps:
 * Every tap the model emits, in forward order, with its shape for a batch of
 * @batch images: what a loss's tap patterns are matched against. Runs one
 * eval-mode forward of zeros (BN running statistics untouched, no graph).
 * Errors: DFQ_MODEL_ERROR_FORMAT (@self is not a built model), _SHAPE (no
 * input shape).
 * Returns: (transfer full) (element-type DfqModelPoint) or NULL with @error.
 */
DFQ_API GPtrArray *dfq_model_list_taps (DfqModel *self, gint batch, GError **error);
/* Every quantization site in the order a quantizer discovers them (kind
 * DfqSiteKind; weights with the weight's shape, activations with the
 * activation's shape for @batch images). As dfq_model_list_taps(). */
DFQ_API GPtrArray *dfq_model_list_sites (DfqModel *self, gint batch, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfqTapSet, dfq_tap_set_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfqModelPoint, dfq_model_point_free)

G_END_DECLS
