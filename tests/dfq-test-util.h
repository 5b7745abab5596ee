/* Shared test helpers: tensor construction, closeness asserts and the
 * finite-difference gradient checker that tests/core/test-ops.c drives. */
#pragma once

#include <dfq/dfq.h>

G_BEGIN_DECLS

/* How a gradcheck input is initialised. */
typedef enum {
    GRAD_INIT_NORMAL,    /* N(0, 1) */
    GRAD_INIT_AWAY,      /* |x| in [0.2, 1.2], random sign: away from kinks at 0 */
    GRAD_INIT_POSITIVE,  /* [0.5, 1.5] */
    GRAD_INIT_PROBS,     /* rows of [N,K] that sum to 1 */
    GRAD_INIT_LABELS,    /* I32 class indices in [0, aux) */
    GRAD_INIT_RANGE,     /* uniform [lo, hi] = (aux_f[0], aux_f[1]) */
    GRAD_INIT_CONST,     /* every element = aux_f[0] */
    GRAD_INIT_INTEGER,   /* integers uniform in [aux_f[0], aux_f[1]] (soft-bit bases) */
} GradInit;

typedef struct {
    int n_dims;
    gint64 shape[DFQ_MAX_DIMS];
    GradInit init;
    gboolean grad;       /* check d/d(this input) */
    int aux;             /* GRAD_INIT_LABELS: number of classes */
    float aux_f[2];
} GradInput;

#define GRAD_MAX_INPUTS 6

typedef struct _GradCase GradCase;
struct _GradCase {
    const char *name; /* "conv2d/stride2-groups" */
    DfqOp op;         /* the op under test (for the every-op coverage check) */
    int n_inputs;
    GradInput inputs[GRAD_MAX_INPUTS];
    /* Builds the op's output from the inputs (the inputs array is in order). */
    DfqTensor *(*build) (DfqArena *arena, DfqTensor **in);
    /* Optional: the smooth function whose derivative the op's gradient rule
     * defines (STE: rounding frozen at the base point @base). When set, finite
     * differences are taken of this function instead of @build. */
    DfqTensor *(*surrogate) (DfqArena *arena, DfqTensor **in, DfqTensor **base);
    double eps;  /* finite-difference step (0 = 1e-3) */
    double atol; /* 0 = 5e-3 */
    double rtol; /* 0 = 2e-2 */
};

/* Fills a tensor as @spec says, from (seed, stream). */
DfqTensor *dfq_test_make_input (DfqArena *arena, const GradInput *spec, guint64 seed, guint64 stream);

/* Runs one case: analytic gradients of sum(r * out) for random r, against central
 * differences, on every checked input (all elements, or 96 sampled when larger).
 * Returns the worst |analytic - numeric| / (atol + rtol |numeric|) ratio (pass < 1)
 * and writes a description of the worst element into @where. */
double dfq_test_gradcheck (const GradCase *c, guint64 seed, char *where, gsize where_size);

/* Asserts every element of a and b is within @tol; reports the max error. */
void dfq_test_assert_close (const DfqTensor *a, const DfqTensor *b, float tol);

/* A registry with every plugin on the test's plugin path ($DFQ_PLUGIN_PATH, set
 * by meson test); asserts that none failed to load. (transfer full) */
DfqRegistry *dfq_test_registry_new (void);
/* A feature of @kind from YAML text with a `use:` key ("use: tiny-cnn\nwidth: 4");
 * asserts success. (transfer full) */
DfqFeature *dfq_test_make_feature (DfqRegistry *registry, DfqFeatureKind kind, const char *yaml);
/* ResNet-20 (width 8, 1x28x28, 10 classes) with the PyTorch interop weights of
 * tests/interop (random weights, non-trivial BN statistics): the teacher and
 * student of the plugin tests. Trainable unless @frozen. (transfer full) */
#define DFQ_TEST_RESNET20_W8_YAML \
    "use: resnet-cifar\ndepth: 20\nwidth: 8\nin_channels: 1\nclasses: 10\nimage_size: 28\n"
DfqModel *dfq_test_resnet20_w8 (DfqRegistry *registry, gboolean frozen);

/* What a synthesizer or loss step needs: a scratch arena, a frozen teacher,
 * optionally a student with a quantizer, and the step context pointing at them. */
typedef struct {
    DfqRegistry *registry;   /* borrowed */
    DfqArena *arena;
    DfqModel *teacher;
    DfqModel *student;       /* NULL unless given */
    DfqQuantizer *quantizer; /* NULL unless attached */
    DfqStepContext ctx;
} DfqTestSynth;

/* Fills @f: takes @teacher (frozen here) and @student (nullable); ctx has the
 * arena, both models, @seed, @epochs, @batch, 10 classes and the image shape
 * [@channels, @size, @size]. */
void dfq_test_synth_init (DfqTestSynth *f, DfqRegistry *registry, DfqModel *teacher, DfqModel *student,
                          guint64 seed, int epochs, int batch, int channels, int size);
/* Attaches a uniform quantizer from YAML to the student (replacing one attached
 * before) and puts it in ctx. */
void dfq_test_synth_attach_quantizer (DfqTestSynth *f, const char *yaml);
/* Frees what @f holds. */
void dfq_test_synth_clear (DfqTestSynth *f);
/* A synthesizer from YAML, prepared against ctx (and its first epoch started
 * when @start_epoch); asserts success. (transfer full) */
DfqSynthesizer *dfq_test_synth_new (DfqTestSynth *f, const char *yaml, gboolean start_epoch);
/* One runner iteration: reset the scratch arena, set step and iter, step;
 * asserts success. */
void dfq_test_synth_step (DfqTestSynth *f, DfqSynthesizer *s, gint64 step, DfqSynthBatch *out);

/* Asserts that the YAML of @name's default configuration (the feature built
 * with no options, written back by dfq_params_to_config) contains each of the
 * @n_want strings; returns that YAML for further checks. (transfer full) */
char *dfq_test_assert_defaults (DfqRegistry *registry, DfqFeatureKind kind, const char *name,
                                const char *const *want, guint n_want);

/* Removes a file or a directory tree (test scratch directories). */
void dfq_test_rm_rf (const char *path);

/* Heap allocations (malloc, calloc, realloc) made by the whole process so far,
 * when tests/dfq-test-malloc.c is linked in (builds without sanitizers);
 * declared weak: NULL otherwise. */
gint64 dfq_test_malloc_count (void) __attribute__ ((weak));

/* Group tables (tests/core/gradcases-*.c) */
extern const GradCase dfq_gradcases_elementwise[];
extern const guint dfq_n_gradcases_elementwise;
extern const GradCase dfq_gradcases_nn[];
extern const guint dfq_n_gradcases_nn;
extern const GradCase dfq_gradcases_quant[];
extern const guint dfq_n_gradcases_quant;
extern const GradCase dfq_gradcases_math[];
extern const guint dfq_n_gradcases_math;
/* The custom op of gradcases-math.c: y = s * a * exp(b), a and b of one shape. */
extern const DfqCustomOp dfq_test_scaled_exp_op;
DfqTensor *dfq_test_scaled_exp (DfqArena *arena, DfqTensor *a, DfqTensor *b, float s);

G_END_DECLS
