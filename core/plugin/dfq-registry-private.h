/* The registry's insides, shared by dfq-registry.c (features) and
 * dfq-plugin-loader.c (GModule, search path). Not installed. */
#pragma once

#include <gmodule.h>
#include <dfq/dfq.h>

G_BEGIN_DECLS

typedef struct {
    DfqPluginInfo info; /* points into the strings below */
    char *name;
    char *version;
    char *description;
    char *path;
    char *sha256;
    GModule *module;
} DfqPlugin;

typedef struct {
    const DfqFeatureClass *klass;
    DfqPlugin *plugin; /* NULL for built-in (static) classes */
} DfqFeatureEntry;

struct _DfqRegistry {
    GPtrArray *plugins;   /* DfqPlugin *, in load order */
    GPtrArray *features;  /* DfqFeatureEntry *, in registration order */
    /* While a plugin's register_features runs: */
    DfqPlugin *loading;
    guint loading_first;  /* index in @features of its first feature */
    GError *loading_error; /* the first dfq_registry_add_feature failure */
};

void dfq_priv_plugin_free (DfqPlugin *plugin);
/* Removes the features registered since @first (a failed load). */
void dfq_priv_registry_rollback (DfqRegistry *registry, guint first);

G_END_DECLS
