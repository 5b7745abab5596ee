/* The plugin ABI (STYLE.md B.7) and the common header of every feature.
 * A plugin .so exports one function, dfq_plugin_get_desc(), returning a static
 * descriptor whose first field is the ABI version; the loader checks it before
 * reading anything else. */
#pragma once

#include <glib.h>
#include <gmodule.h>
#include <dfq/dfq-macros.h>
#include <dfq/dfq-version.h>
#include <dfq/dfq-params.h>

G_BEGIN_DECLS

#define DFQ_PLUGIN_ABI_VERSION 1 /* bump on ANY change to the structs in this file */

typedef struct _DfqRegistry DfqRegistry;
typedef struct _DfqFeature DfqFeature;
typedef struct _DfqFeatureClass DfqFeatureClass;
typedef struct _DfqPluginDesc DfqPluginDesc;

struct _DfqPluginDesc {
    guint32 abi_version;   /* checked first, before any other field is read */
    guint32 desc_size;     /* sizeof (DfqPluginDesc) at build time */
    const char *name;      /* "zeroq"; must match libdfq-zeroq.so */
    const char *description;
    const char *version;   /* the plugin's own version (DFQ_PLUGIN_DEFINE_VERSIONED) */
    gboolean (*register_features) (DfqRegistry *registry, GError **error);
    gpointer reserved[4];  /* room to grow without bumping the ABI */
};

/* The common header of every feature class; each kind's class (DfqModelClass,
 * DfqLossClass, ...) has it as first member. */
struct _DfqFeatureClass {
    DfqFeatureKind kind;
    const char *name;        /* lower-case with dashes: "uniform", "ca-kd" */
    const char *description; /* one line */
    const DfqParamSpec *params;
    guint n_params;
    gsize instance_size;     /* the core allocates this much and binds params by offset */
    /* Optional: called once after all params are bound (cross-parameter checks,
     * allocations). FALSE + error aborts the build of the pipeline. */
    gboolean (*init) (DfqFeature *self, GError **error);
    /* Optional: releases what init allocated. The core frees params itself. */
    void (*finalize) (DfqFeature *self);
    gpointer reserved[4];
};

/* The common header of every feature instance (first member of the plugin's
 * instance struct). */
struct _DfqFeature {
    const DfqFeatureClass *klass;
    gdouble weight;  /* `weight:` of a feature-list item (losses); 1 otherwise */
    char *label;     /* "train.losses[1] (kd)", for messages */
    gpointer reserved[4];
};

#define DFQ_FEATURE_CLASS_INIT(kind_, name_, desc_, Struct, params_)                  \
    { .kind = (kind_), .name = (name_), .description = (desc_), .params = (params_), \
      .n_params = G_N_ELEMENTS (params_), .instance_size = sizeof (Struct) }
#define DFQ_FEATURE_CLASS_INIT_FULL(kind_, name_, desc_, Struct, params_, init_, finalize_) \
    { .kind = (kind_), .name = (name_), .description = (desc_), .params = (params_),       \
      .n_params = G_N_ELEMENTS (params_), .instance_size = sizeof (Struct),                \
      .init = (init_), .finalize = (finalize_) }

/**
 * DFQ_PLUGIN_DEFINE_VERSIONED:
 * @name_: the plugin's name, a bare identifier (`example` for libdfq-example.so)
 * @version_: the plugin's own version, a string literal ("1.2.0"): shown by
 *   `dfq inspect` and recorded in every run manifest (dfq_registry_get_plugin_info)
 * @description_: one line
 * @register_fn_: `gboolean fn (DfqRegistry *registry, GError **error)`
 *
 * Exports dfq_plugin_get_desc(), the plugin's one exported symbol. Third-party
 * plugins use this form, so that results name the build of the plugin that
 * produced them.
 */
#define DFQ_PLUGIN_DEFINE_VERSIONED(name_, version_, description_, register_fn_)          \
    G_MODULE_EXPORT const DfqPluginDesc *dfq_plugin_get_desc (void);                     \
    const DfqPluginDesc *                                                                \
    dfq_plugin_get_desc (void)                                                           \
    {                                                                                    \
        static const DfqPluginDesc desc = { DFQ_PLUGIN_ABI_VERSION,                      \
                                            sizeof (DfqPluginDesc), G_STRINGIFY (name_), \
                                            description_, version_,                      \
                                            register_fn_, { NULL } };                    \
        return &desc;                                                                    \
    }

/* DFQ_PLUGIN_DEFINE_VERSIONED with dfq's own version (DFQ_VERSION_STRING): for
 * the plugins that ship with dfq (plugins/), whose version is dfq's. Kept for
 * source compatibility; a plugin with releases of its own should say its
 * version with DFQ_PLUGIN_DEFINE_VERSIONED. */
#define DFQ_PLUGIN_DEFINE(name_, description_, register_fn_) \
    DFQ_PLUGIN_DEFINE_VERSIONED (name_, DFQ_VERSION_STRING, description_, register_fn_)

G_END_DECLS
