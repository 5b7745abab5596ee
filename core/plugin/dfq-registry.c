/* The registry (core/plugin): the features that plugins (or core and tests,
 * for static classes) register, each validated on the way in, looked up by
 * kind and name. Loading .so files and the search path are in
 * dfq-plugin-loader.c. */
#include <string.h>

#include <dfq/dfq.h>
#include "dfq-registry-private.h"
#include "../params/dfq-params-private.h"

/* Instances are allocated by the core from instance_size: refuse absurd ones. */
#define DFQ_REGISTRY_MAX_INSTANCE_SIZE (1u << 24)

G_DEFINE_QUARK (dfq-plugin-error-quark, dfq_plugin_error)

void
dfq_priv_plugin_free (DfqPlugin *plugin)
{
    if (plugin == NULL)
        return;
    if (plugin->module != NULL)
        g_module_close (plugin->module);
    g_free (plugin->name);
    g_free (plugin->version);
    g_free (plugin->description);
    g_free (plugin->path);
    g_free (plugin->sha256);
    g_free (plugin);
}

DfqRegistry *
dfq_registry_new (void)
{
    DfqRegistry *registry = g_new0 (DfqRegistry, 1);
    registry->plugins = g_ptr_array_new_with_free_func ((GDestroyNotify) dfq_priv_plugin_free);
    registry->features = g_ptr_array_new_with_free_func (g_free);
    return registry;
}

void
dfq_registry_free (DfqRegistry *registry)
{
    if (registry == NULL)
        return;
    /* Features point into the modules: drop them first. */
    g_ptr_array_unref (registry->features);
    g_ptr_array_unref (registry->plugins);
    g_clear_error (&registry->loading_error);
    g_free (registry);
}

void
dfq_priv_registry_rollback (DfqRegistry *registry, guint first)
{
    if (registry->features->len > first)
        g_ptr_array_remove_range (registry->features, first, registry->features->len - first);
}

static DfqFeatureEntry *
dfq_registry_find_entry (DfqRegistry *registry, DfqFeatureKind kind, const char *name)
{
    for (guint i = 0; i < registry->features->len; i++) {
        DfqFeatureEntry *entry = registry->features->pdata[i];
        if (entry->klass->kind == kind && strcmp (entry->klass->name, name) == 0)
            return entry;
    }
    return NULL;
}

static gboolean
dfq_registry_is_feature_name (const char *name)
{
    if (name[0] == '\0' || !(g_ascii_islower (name[0]) || g_ascii_isdigit (name[0])))
        return FALSE;
    for (const char *p = name; *p != '\0'; p++)
        if (!g_ascii_islower (*p) && !g_ascii_isdigit (*p) && *p != '-')
            return FALSE;
    return strlen (name) <= 64;
}

static gboolean
dfq_registry_validate_class (const DfqFeatureClass *klass, GError **error)
{
    if (klass == NULL) {
        g_set_error_literal (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_BAD_FEATURE, "NULL feature class");
        return FALSE;
    }
    if (klass->name == NULL || !dfq_registry_is_feature_name (klass->name)) {
        g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_BAD_FEATURE,
                     "feature name %s%s%s is invalid (lower-case letters, digits and dashes, at most 64)",
                     klass->name != NULL ? "'" : "", klass->name != NULL ? klass->name : "NULL",
                     klass->name != NULL ? "'" : "");
        return FALSE;
    }
    g_autofree char *owner = g_strdup_printf ("feature '%s'", klass->name);
    if ((guint) klass->kind >= DFQ_FEATURE_KIND_COUNT) {
        g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_BAD_FEATURE, "%s: invalid kind %d", owner,
                     (int) klass->kind);
        return FALSE;
    }
    if (klass->description == NULL || klass->description[0] == '\0') {
        g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_BAD_FEATURE, "%s: missing description", owner);
        return FALSE;
    }
    if (klass->instance_size < sizeof (DfqFeature) || klass->instance_size > DFQ_REGISTRY_MAX_INSTANCE_SIZE) {
        g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_BAD_FEATURE,
                     "%s: instance_size %" G_GSIZE_FORMAT " is not between sizeof (DfqFeature) = %" G_GSIZE_FORMAT
                     " and %u (is DfqFeature the first member?)",
                     owner, klass->instance_size, sizeof (DfqFeature), DFQ_REGISTRY_MAX_INSTANCE_SIZE);
        return FALSE;
    }
    return dfq_priv_params_validate (klass->params, klass->n_params, klass->instance_size, sizeof (DfqFeature),
                                     TRUE, owner, error);
}

gboolean
dfq_registry_add_feature (DfqRegistry *registry, const DfqFeatureClass *klass, GError **error)
{
    g_return_val_if_fail (registry != NULL, FALSE);
    g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

    g_autoptr (GError) local = NULL;
    if (dfq_registry_validate_class (klass, &local)) {
        DfqFeatureEntry *existing = dfq_registry_find_entry (registry, klass->kind, klass->name);
        if (existing == NULL) {
            DfqFeatureEntry *entry = g_new0 (DfqFeatureEntry, 1);
            entry->klass = klass;
            entry->plugin = registry->loading;
            g_ptr_array_add (registry->features, entry);
            return TRUE;
        }
        g_set_error (&local, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_DUPLICATE_FEATURE,
                     "%s '%s' is already registered (by %s)", dfq_feature_kind_name (klass->kind), klass->name,
                     existing->plugin != NULL ? existing->plugin->path : "a built-in class");
    }
    /* While loading, remember the first failure: the plugin fails with this
     * code even if its register function ignores it. */
    if (registry->loading != NULL && registry->loading_error == NULL)
        registry->loading_error = g_error_copy (local);
    g_propagate_error (error, g_steal_pointer (&local));
    return FALSE;
}

const DfqFeatureClass *
dfq_registry_find (DfqRegistry *registry, DfqFeatureKind kind, const char *name)
{
    g_return_val_if_fail (registry != NULL, NULL);
    g_return_val_if_fail (name != NULL, NULL);
    DfqFeatureEntry *entry = dfq_registry_find_entry (registry, kind, name);
    return entry != NULL ? entry->klass : NULL;
}

const DfqFeatureClass *
dfq_registry_find_any (DfqRegistry *registry, const char *name)
{
    g_return_val_if_fail (registry != NULL, NULL);
    g_return_val_if_fail (name != NULL, NULL);
    for (guint k = 0; k < DFQ_FEATURE_KIND_COUNT; k++) {
        DfqFeatureEntry *entry = dfq_registry_find_entry (registry, (DfqFeatureKind) k, name);
        if (entry != NULL)
            return entry->klass;
    }
    return NULL;
}

static gint
dfq_registry_compare_class (gconstpointer a, gconstpointer b)
{
    const DfqFeatureClass *ka = *(const DfqFeatureClass *const *) a;
    const DfqFeatureClass *kb = *(const DfqFeatureClass *const *) b;
    return strcmp (ka->name, kb->name);
}

GPtrArray *
dfq_registry_list (DfqRegistry *registry, DfqFeatureKind kind)
{
    g_return_val_if_fail (registry != NULL, NULL);
    GPtrArray *list = g_ptr_array_new ();
    for (guint i = 0; i < registry->features->len; i++) {
        DfqFeatureEntry *entry = registry->features->pdata[i];
        if (entry->klass->kind == kind)
            g_ptr_array_add (list, (gpointer) entry->klass);
    }
    g_ptr_array_sort (list, dfq_registry_compare_class);
    return list;
}

char *
dfq_priv_registry_names (DfqRegistry *registry, DfqFeatureKind kind)
{
    g_autoptr (GPtrArray) list = dfq_registry_list (registry, kind);
    GString *out = g_string_new (NULL);
    for (guint i = 0; i < list->len; i++)
        g_string_append_printf (out, "%s%s", i > 0 ? ", " : "", ((const DfqFeatureClass *) list->pdata[i])->name);
    return g_string_free (out, FALSE);
}

gboolean
dfq_registry_get_plugin_info (DfqRegistry *registry, const DfqFeatureClass *klass, DfqPluginInfo *info)
{
    g_return_val_if_fail (registry != NULL, FALSE);
    g_return_val_if_fail (klass != NULL, FALSE);
    g_return_val_if_fail (info != NULL, FALSE);
    for (guint i = 0; i < registry->features->len; i++) {
        DfqFeatureEntry *entry = registry->features->pdata[i];
        if (entry->klass != klass)
            continue;
        if (entry->plugin != NULL) {
            *info = entry->plugin->info;
        } else {
            memset (info, 0, sizeof *info);
            info->plugin_version = DFQ_VERSION_STRING;
        }
        return TRUE;
    }
    return FALSE;
}

static gint
dfq_registry_compare_info (gconstpointer a, gconstpointer b)
{
    const DfqPluginInfo *ia = *(const DfqPluginInfo *const *) a;
    const DfqPluginInfo *ib = *(const DfqPluginInfo *const *) b;
    return strcmp (ia->plugin_name, ib->plugin_name);
}

GPtrArray *
dfq_registry_list_plugins (DfqRegistry *registry)
{
    g_return_val_if_fail (registry != NULL, NULL);
    GPtrArray *list = g_ptr_array_new ();
    for (guint i = 0; i < registry->plugins->len; i++)
        g_ptr_array_add (list, &((DfqPlugin *) registry->plugins->pdata[i])->info);
    g_ptr_array_sort (list, dfq_registry_compare_info);
    return list;
}
