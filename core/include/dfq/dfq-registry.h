/* The registry: plugins discovered on the search path and the features they
 * register. It owns every GModule and closes them in dfq_registry_free(). */
#pragma once

#include <glib.h>
#include <dfq/dfq-macros.h>
#include <dfq/dfq-plugin.h>

G_BEGIN_DECLS

#define DFQ_PLUGIN_ERROR (dfq_plugin_error_quark ())
typedef enum {
    DFQ_PLUGIN_ERROR_OPEN,              /* g_module_open failed (missing symbol, not an ELF...) */
    DFQ_PLUGIN_ERROR_NOT_A_PLUGIN,      /* no dfq_plugin_get_desc symbol */
    DFQ_PLUGIN_ERROR_ABI_MISMATCH,      /* built for another plugin ABI */
    DFQ_PLUGIN_ERROR_NAME_MISMATCH,     /* descriptor name != file name, or NULL fields */
    DFQ_PLUGIN_ERROR_INIT_FAILED,       /* register_features returned FALSE */
    DFQ_PLUGIN_ERROR_DUPLICATE_FEATURE, /* a feature of that kind and name exists */
    DFQ_PLUGIN_ERROR_BAD_FEATURE,       /* invalid class (bad param table, unknown kind) */
    DFQ_PLUGIN_ERROR_DUPLICATE_PLUGIN,  /* a plugin of that name is already loaded */
    DFQ_PLUGIN_ERROR_DESC_SIZE,         /* desc_size differs from sizeof (DfqPluginDesc) */
} DfqPluginError;

DFQ_API GQuark dfq_plugin_error_quark (void);

DFQ_API DfqRegistry *dfq_registry_new (void);
DFQ_API void dfq_registry_free (DfqRegistry *registry);

/**
 * dfq_registry_load_plugin:
 * Opens one libdfq-<name>.so. On any failure the module is closed, the registry
 * is unchanged and @error (DFQ_PLUGIN_ERROR_*) names the file.
 */
DFQ_API gboolean dfq_registry_load_plugin (DfqRegistry *registry, const char *path, GError **error);
/**
 * dfq_registry_scan:
 * Loads every libdfq-*.so under the search path: @extra_path (--plugin-path,
 * may be NULL; G_SEARCHPATH_SEPARATOR-separated), then $DFQ_PLUGIN_PATH, then the
 * install dir (unless $DFQ_PLUGIN_SYSTEM_PATH is set to ""). Directories are
 * scanned recursively. A broken plugin does not stop the scan: its GError is
 * appended to @failures (transfer full elements; may be NULL to ignore).
 * Returns: the number of plugins loaded.
 */
DFQ_API guint dfq_registry_scan (DfqRegistry *registry, const char *extra_path, GPtrArray *failures);

/**
 * dfq_registry_get_search_path:
 * Returns: (transfer full) the directories dfq_registry_scan() would search for
 * @extra_path and the current environment, in order.
 */
DFQ_API GStrv dfq_registry_get_search_path (const char *extra_path);

/**
 * dfq_registry_add_feature:
 * Called by a plugin's register_features (or by core/tests for built-in,
 * static classes). Validates the class and its parameter table (names unique
 * and snake_case, not `use`/`weight`, descriptions present, defaults parsable
 * and inside their range, enum defaults among the values, offsets inside
 * instance_size): DFQ_PLUGIN_ERROR_BAD_FEATURE; a feature of the same kind and
 * name: DFQ_PLUGIN_ERROR_DUPLICATE_FEATURE. @klass must outlive the registry.
 */
DFQ_API gboolean dfq_registry_add_feature (DfqRegistry *registry, const DfqFeatureClass *klass, GError **error);

/* Returns: (transfer none) the class, or NULL. */
DFQ_API const DfqFeatureClass *dfq_registry_find (DfqRegistry *registry, DfqFeatureKind kind, const char *name);
/* Like dfq_registry_find() over every kind (`dfq inspect <name>`); when two
 * kinds share the name, the first kind in enum order wins. */
DFQ_API const DfqFeatureClass *dfq_registry_find_any (DfqRegistry *registry, const char *name);
/* Returns: (transfer container) the classes of @kind sorted by name. */
DFQ_API GPtrArray *dfq_registry_list (DfqRegistry *registry, DfqFeatureKind kind);

/* Provenance of a feature, for run manifests: plugin name, version, file path
 * and the file's sha256 (NULL for built-ins). (transfer none) */
typedef struct {
    const char *plugin_name;
    const char *plugin_version;
    const char *path;
    const char *sha256;
    const char *plugin_description;
} DfqPluginInfo;
DFQ_API gboolean dfq_registry_get_plugin_info (DfqRegistry *registry, const DfqFeatureClass *klass, DfqPluginInfo *info);
/* Returns: (transfer container) DfqPluginInfo * of every loaded plugin, by name. */
DFQ_API GPtrArray *dfq_registry_list_plugins (DfqRegistry *registry);

/**
 * dfq_feature_new_default:
 * Instantiates @klass with every parameter at its default (the conformance
 * test's entry point; pipelines use dfq_pipeline_* instead).
 * Returns: (transfer full) the instance, or NULL with @error.
 */
DFQ_API DfqFeature *dfq_feature_new_default (DfqRegistry *registry, const DfqFeatureClass *klass, GError **error);
/* Calls finalize, frees owned params (strings, nested features and lists), frees. */
DFQ_API void dfq_feature_free (DfqFeature *feature);
/* Frees a GPtrArray of features as bound for a FEATURE_LIST (NULL-safe). */
DFQ_API void dfq_feature_list_free (GPtrArray *features);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfqRegistry, dfq_registry_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfqFeature, dfq_feature_free)

G_END_DECLS
