/* Static feature classes the host tests and the pipeline fuzzer register
 * programmatically (model, synthesizer, loss and quantizer plugins are written
 * elsewhere; these stand in with the same param machinery). */
#pragma once

#include <dfq/dfq.h>

G_BEGIN_DECLS

typedef struct {
    DfqFeature parent;
    gint depth;
    gint classes;
    gint in_channels;
} ToyModel;

typedef struct {
    DfqFeature parent;
    gint batch;
    gint iters;
    gdouble lr;
} ToyZeroq;

typedef struct {
    DfqFeature parent;
    gint latent;
    DfqOptimParams optimizer;
    GPtrArray *losses;
    gfloat *buffer; /* allocated by init, freed by finalize (leak checks) */
} ToyGen;

typedef struct {
    DfqFeature parent;
    gint target;
} ToyCe;

typedef struct {
    DfqFeature parent;
    gdouble temperature;
} ToyKd;

typedef struct {
    DfqFeature parent;
    gint w_bits;
    gint a_bits;
    gboolean per_channel;
    char **overrides;
} ToyQuant;

/* One param of every type, nested struct included. */
typedef struct {
    gint level;
    DfqNumberList sizes;
} ToyInner;

typedef struct {
    DfqFeature parent;
    gint i;
    gdouble d;
    gboolean b;
    char *s;
    gint e;
    DfqNumberList il;
    DfqNumberList dl;
    DfqFeature *f;
    GPtrArray *fl;
    ToyInner inner;
    char **sl;
    char *path;
} ToyEverything;

extern const DfqFeatureClass toy_model_class;
extern const DfqFeatureClass toy_zeroq_class;
extern const DfqFeatureClass toy_gen_class;
extern const DfqFeatureClass toy_ce_class;
extern const DfqFeatureClass toy_kd_class;
extern const DfqFeatureClass toy_quant_class;
extern const DfqFeatureClass toy_everything_class;

/* Live ToyGen instances (init +1, finalize -1). */
extern gint toy_gen_alive;

/* Registers all of the above; FALSE with the registry's error otherwise. */
gboolean host_test_register_features (DfqRegistry *registry, GError **error);

G_END_DECLS
