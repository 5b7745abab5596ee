/* The BN-statistics loss module (plugins/losses/bns): what its features share.
 * Every feature that reads the teacher's BN inputs starts with BnsBase, so the
 * `pattern` parameter (one table row, BNS_PARAM_PATTERN), its check and the tap
 * patterns are written once:
 * - bns.c: `bns` (GDFQ, batch statistics) and the plugin's registration;
 * - bns-sample.c: `bns-sample` and `image-prior` (ZeroQ, per-sample statistics);
 * - bns-slack.c: `bns-slack` (DSG's slack distribution alignment and layerwise
 *   sample enhancement), with its margin rules in bns-margins.c. */
#pragma once

#include <dfq/dfq.h>

typedef struct {
    DfqLoss parent;
    char *pattern;
    const char *patterns[2]; /* { pattern, NULL } for the tap set */
    GPtrArray *bn_taps;      /* the last forward's BN-input taps (reused: no allocation per step) */
} BnsBase;

/* Quoted: a plain YAML scalar starting with '*' would be an alias. The offset
 * is BnsBase's, the same in every struct that starts with it. */
#define BNS_PARAM_PATTERN                                                                                    \
    DFQ_PARAM_STRING (BnsBase, pattern,                                                                      \
                      "Glob over teacher tap names selecting the BN inputs ('*:in' = every BN layer)", "'*:in'")

/* Checks the pattern and fills patterns[]; bns_base_finalize undoes it. */
gboolean bns_base_init (DfqFeature *feature, GError **error);
void bns_base_finalize (DfqFeature *feature);
const char *const *bns_base_teacher_tap_patterns (DfqLoss *loss);
/* The BN-input taps of @taps (running mean/var attached), in forward order,
 * in @out (emptied first); FALSE with an error naming the pattern when there
 * is none. */
gboolean bns_base_collect (DfqLoss *loss, const DfqTapSet *taps, GPtrArray *out, GError **error);

/* Per-sample statistics of x [B,C,H,W] (ZeroQ): mu [B,C] = spatial mean,
 * sigma [B,C] = sqrt(unbiased spatial variance + eps). */
void bns_sample_stats (DfqArena *a, DfqTensor *x, float eps, DfqTensor **mu, DfqTensor **sigma);
/* ||target - s||_F^2 / B for s [B,C] and a target [C] broadcast over B
 * (@target NULL: the constant @value). */
DfqTensor *bns_sample_term (DfqArena *a, DfqTensor *s, const float *target, float value);
/* The targets of a BN-input tap for per-sample statistics: running_mean and
 * sqrt(running_var + eps), each [C], in @a. */
void bns_sample_targets (DfqArena *a, const DfqTap *tap, float eps, DfqTensor **mu, DfqTensor **sigma);

/* Per-sample statistics need taps of at least 2 pixels: else an error naming the tap. */
gboolean bns_sample_check (GPtrArray *taps, GError **error);
/* ZeroQ's exact matching: sum over the BN-input @taps of the two terms above
 * (bns-sample's value), and the image prior on x (image-prior's). */
DfqTensor *bns_sample_layers (DfqArena *a, GPtrArray *taps, float eps);
DfqTensor *bns_image_prior (DfqArena *a, DfqTensor *x, float mean, float std, float eps);

extern const DfqLossClass bns_sample_class;
extern const DfqLossClass bns_image_prior_class;
extern const DfqLossClass bns_slack_class;

/* ---- bns-slack (bns-slack.c, bns-margins.c) ---- */

typedef enum {
    BNS_SLACK_STATS_SAMPLE, /* per-sample conv-output statistics, mu and sigma (DSG-PTQ, ZeroQ-style) */
    BNS_SLACK_STATS_BATCH,  /* batch BN-input statistics, mean and biased variance (DSG-QAT, GDFQ-style) */
} BnsSlackStats;

typedef enum {
    BNS_SLACK_HINGE_PAPER, /* max(|s - t| - m, 0)^2 */
    BNS_SLACK_HINGE_ABS,   /* (|s - t| - m)^2: the QAT code's max(||s - t| - m|, 0) */
} BnsSlackHinge;

typedef enum {
    BNS_SLACK_LSE_OFF,
    BNS_SLACK_LSE_PAPER,    /* sample i: weight lse_weight on its squared residual at layer i mod L */
    BNS_SLACK_LSE_PTQ_CODE, /* residual row i times 2 at layer i, for i < min(B, lse_layers) (weight 4) */
    BNS_SLACK_LSE_QAT_CODE, /* channel l of layer l times sqrt(2) (weight 2) */
} BnsSlackLse;

typedef enum {
    BNS_MARGINS_QUANTILE, /* Q_quantile of the gaps on a reference batch, per layer */
    BNS_MARGINS_FIXED,    /* delta / gamma lists */
    BNS_MARGINS_FILE,     /* a margins.safetensors (written by an earlier run) */
} BnsMarginsRule;

typedef enum {
    BNS_REFERENCE_WARMUP,    /* a batch of synthetic images: ZeroQ's optimisation, exact matching */
    BNS_REFERENCE_REAL,      /* training images of the run's dataset (uses real data) */
    BNS_REFERENCE_IMAGE_SET, /* the images of a safetensors file (an earlier run's images.safetensors) */
} BnsReference;

typedef struct {
    BnsBase base;
    /* params */
    gint stats;
    gint hinge;
    gint lse;
    gdouble lse_weight;
    gint lse_layers;
    gdouble eps;
    gint reduce;
    gint margins;
    gdouble quantile;
    gint reference;
    gint reference_images;
    char *reference_path;
    gint warmup_iters;
    gdouble warmup_lr;
    DfqNumberList delta;
    DfqNumberList gamma;
    char *margins_path;
    char *save_as;
    /* state: the margins per layer, set once per instance (bns-margins.c) */
    guint n_layers;
    float *delta_l;
    float *gamma_l;
} BnsSlack;

/* The statistics of one BN-input tap in @self's mode and their targets:
 * s[0] mean, s[1] spread ([B,C] per sample: sigma; [C] batch: biased var),
 * t[0], t[1] the targets [C]. */
void bns_slack_layer_stats (BnsSlack *self, DfqArena *a, const DfqTap *tap, DfqTensor *s[2], DfqTensor *t[2]);
/* Sets self->delta_l / gamma_l for the @n_layers layers of @taps (the loss's
 * BN-input taps) once: by the margins rule, and writes them to the run
 * directory (ctx->run_dir/save_as). A pure function of the config, the seed,
 * the teacher and the data, so a resumed run finds the same margins. */
gboolean bns_slack_ensure_margins (BnsSlack *self, DfqStepContext *ctx, GPtrArray *taps, GError **error);
/* Quantile @q in [0, 1] of @v (@n values, sorted in place), linear
 * interpolation between order statistics (numpy's default). */
double bns_quantile (float *v, gsize n, double q);
