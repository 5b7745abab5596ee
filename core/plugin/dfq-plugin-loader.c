/* The plugin loader (core/plugin): opens libdfq-<name>.so files with GModule in
 * GStreamer's order (open, find the descriptor, check the ABI before reading
 * anything else, check the descriptor, register), turns every failure into a
 * DFQ_PLUGIN_ERROR naming the file and leaves the registry as it was; and
 * scans the search path (--plugin-path, $DFQ_PLUGIN_PATH, install dir). */
#include <string.h>

#include <dfq/dfq.h>
#include "dfq-registry-private.h"
/* DFQ_PLUGINDIR, the install dir, from meson (core/plugin/meson.build
 * generates it into <build>/core/plugin/; -DDFQ_PLUGINDIR=... works too). */
#ifndef DFQ_PLUGINDIR
#include "plugin/dfq-plugin-config.h"
#endif

#define DFQ_PLUGIN_PREFIX "libdfq-"
#define DFQ_PLUGIN_SUFFIX "." G_MODULE_SUFFIX
/* Directory levels below each search-path entry (symlink loops end here). */
#define DFQ_PLUGIN_SCAN_MAX_DEPTH 8

typedef const DfqPluginDesc *(*DfqPluginGetDescFunc) (void);

/* "libdfq-zeroq.so" -> "zeroq"; NULL if the name does not follow the pattern. */
static char *
dfq_plugin_name_from_file (const char *basename)
{
    gsize len = strlen (basename);
    gsize fix = strlen (DFQ_PLUGIN_PREFIX) + strlen (DFQ_PLUGIN_SUFFIX);
    if (len <= fix || !g_str_has_prefix (basename, DFQ_PLUGIN_PREFIX) ||
        !g_str_has_suffix (basename, DFQ_PLUGIN_SUFFIX))
        return NULL;
    return g_strndup (basename + strlen (DFQ_PLUGIN_PREFIX), len - fix);
}

static DfqPlugin *
dfq_registry_find_plugin (DfqRegistry *registry, const char *name)
{
    for (guint i = 0; i < registry->plugins->len; i++) {
        DfqPlugin *plugin = registry->plugins->pdata[i];
        if (strcmp (plugin->name, name) == 0)
            return plugin;
    }
    return NULL;
}

static gboolean
dfq_registry_check_desc (const DfqPluginDesc *desc, const char *path, GError **error)
{
    /* Only abi_version may be read before this check (its layout is frozen). */
    if (desc->abi_version != DFQ_PLUGIN_ABI_VERSION) {
        g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_ABI_MISMATCH,
                     "%s: built for plugin ABI %u, core speaks %u (rebuild the plugin against dfq %s)", path,
                     desc->abi_version, DFQ_PLUGIN_ABI_VERSION, DFQ_VERSION_STRING);
        return FALSE;
    }
    if (desc->desc_size != sizeof (DfqPluginDesc)) {
        g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_DESC_SIZE,
                     "%s: descriptor is %u bytes, core expects %" G_GSIZE_FORMAT
                     " (was it made without DFQ_PLUGIN_DEFINE?)",
                     path, desc->desc_size, sizeof (DfqPluginDesc));
        return FALSE;
    }
    const char *null_field = desc->name == NULL              ? "name"
                             : desc->description == NULL       ? "description"
                             : desc->version == NULL           ? "version"
                             : desc->register_features == NULL ? "register_features"
                                                               : NULL;
    if (null_field != NULL) {
        g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_NAME_MISMATCH, "%s: descriptor field '%s' is NULL",
                     path, null_field);
        return FALSE;
    }
    if (desc->version[0] == '\0') {
        g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_NAME_MISMATCH,
                     "%s: descriptor field 'version' is empty (DFQ_PLUGIN_DEFINE_VERSIONED takes the plugin's "
                     "version, e.g. \"1.0.0\")",
                     path);
        return FALSE;
    }
    g_autofree char *basename = g_path_get_basename (path);
    g_autofree char *file_name = dfq_plugin_name_from_file (basename);
    if (file_name == NULL || strcmp (file_name, desc->name) != 0) {
        g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_NAME_MISMATCH,
                     "%s: the descriptor names plugin '%s', so the file must be called " DFQ_PLUGIN_PREFIX
                     "%s" DFQ_PLUGIN_SUFFIX,
                     path, desc->name, desc->name);
        return FALSE;
    }
    return TRUE;
}

gboolean
dfq_registry_load_plugin (DfqRegistry *registry, const char *path, GError **error)
{
    g_return_val_if_fail (registry != NULL, FALSE);
    g_return_val_if_fail (path != NULL, FALSE);
    g_return_val_if_fail (error == NULL || *error == NULL, FALSE);
    /* A plugin's register_features may not load plugins. */
    g_return_val_if_fail (registry->loading == NULL, FALSE);

    /* GModule searches the system paths for a bare name: always give a path. */
    g_autofree char *open_path = strchr (path, G_DIR_SEPARATOR) != NULL
                                     ? g_strdup (path)
                                     : g_build_filename (".", path, NULL);
    GModule *module = g_module_open (open_path, G_MODULE_BIND_LOCAL | G_MODULE_BIND_LAZY);
    if (module == NULL) {
        g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_OPEN, "%s: cannot open plugin: %s", path,
                     g_module_error ());
        return FALSE;
    }
    gpointer symbol = NULL;
    if (!g_module_symbol (module, "dfq_plugin_get_desc", &symbol) || symbol == NULL) {
        g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_NOT_A_PLUGIN,
                     "%s: not a dfq plugin (no dfq_plugin_get_desc symbol; use DFQ_PLUGIN_DEFINE)", path);
        g_module_close (module);
        return FALSE;
    }
    const DfqPluginDesc *desc = ((DfqPluginGetDescFunc) symbol) ();
    if (desc == NULL) {
        g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_NOT_A_PLUGIN,
                     "%s: dfq_plugin_get_desc() returned NULL", path);
        g_module_close (module);
        return FALSE;
    }
    if (!dfq_registry_check_desc (desc, path, error)) {
        g_module_close (module);
        return FALSE;
    }
    DfqPlugin *previous = dfq_registry_find_plugin (registry, desc->name);
    if (previous != NULL) {
        g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_DUPLICATE_PLUGIN,
                     "%s: plugin '%s' is already loaded from %s", path, desc->name, previous->path);
        g_module_close (module);
        return FALSE;
    }

    g_autofree char *contents = NULL;
    gsize length = 0;
    g_autoptr (GError) local = NULL;
    if (!g_file_get_contents (path, &contents, &length, &local)) {
        g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_OPEN, "%s: %s", path, local->message);
        g_module_close (module);
        return FALSE;
    }
    DfqPlugin *plugin = g_new0 (DfqPlugin, 1);
    plugin->module = module;
    plugin->name = g_strdup (desc->name);
    plugin->version = g_strdup (desc->version);
    plugin->description = g_strdup (desc->description);
    plugin->path = g_canonicalize_filename (path, NULL);
    plugin->sha256 = g_compute_checksum_for_data (G_CHECKSUM_SHA256, (const guchar *) contents, length);
    plugin->info.plugin_name = plugin->name;
    plugin->info.plugin_version = plugin->version;
    plugin->info.plugin_description = plugin->description;
    plugin->info.path = plugin->path;
    plugin->info.sha256 = plugin->sha256;

    /* Register, transactionally: any failure removes what this plugin added. */
    registry->loading = plugin;
    registry->loading_first = registry->features->len;
    gboolean ok = desc->register_features (registry, &local);
    registry->loading = NULL;
    g_autoptr (GError) add_error = g_steal_pointer (&registry->loading_error);

    if (ok && add_error == NULL) {
        g_clear_error (&local); /* TRUE with an error set: ignore the error */
        g_ptr_array_add (registry->plugins, plugin);
        g_debug ("loaded plugin %s %s from %s", plugin->name, plugin->version, plugin->path);
        return TRUE;
    }
    if (add_error != NULL)
        g_set_error (error, DFQ_PLUGIN_ERROR, add_error->code, "%s: %s", path, add_error->message);
    else
        g_set_error (error, DFQ_PLUGIN_ERROR, DFQ_PLUGIN_ERROR_INIT_FAILED, "%s: plugin '%s' failed to register: %s",
                     path, plugin->name, local != NULL ? local->message : "(no message)");
    dfq_priv_registry_rollback (registry, registry->loading_first);
    dfq_priv_plugin_free (plugin);
    return FALSE;
}

static void
dfq_registry_add_path_list (GPtrArray *dirs, const char *list)
{
    if (list == NULL)
        return;
    g_auto (GStrv) parts = g_strsplit (list, G_SEARCHPATH_SEPARATOR_S, -1);
    for (guint i = 0; parts[i] != NULL; i++)
        if (parts[i][0] != '\0')
            g_ptr_array_add (dirs, g_strdup (parts[i]));
}

GStrv
dfq_registry_get_search_path (const char *extra_path)
{
    GPtrArray *dirs = g_ptr_array_new ();
    dfq_registry_add_path_list (dirs, extra_path);
    dfq_registry_add_path_list (dirs, g_getenv ("DFQ_PLUGIN_PATH"));
    /* As GST_PLUGIN_SYSTEM_PATH: set, it replaces the install dir ("" = none). */
    const char *system = g_getenv ("DFQ_PLUGIN_SYSTEM_PATH");
    if (system != NULL)
        dfq_registry_add_path_list (dirs, system);
    else
        g_ptr_array_add (dirs, g_strdup (DFQ_PLUGINDIR));
    g_ptr_array_add (dirs, NULL);
    return (GStrv) g_ptr_array_free (dirs, FALSE);
}

static gint
dfq_registry_compare_names (gconstpointer a, gconstpointer b)
{
    return strcmp (*(const char *const *) a, *(const char *const *) b);
}

static guint
dfq_registry_scan_dir (DfqRegistry *registry, const char *dir, guint depth, GPtrArray *failures)
{
    g_autoptr (GDir) handle = g_dir_open (dir, 0, NULL);
    if (handle == NULL) {
        g_debug ("plugin path entry %s cannot be opened; skipped", dir);
        return 0;
    }
    /* Sorted, so the same tree always loads in the same order. */
    g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
    const char *name;
    while ((name = g_dir_read_name (handle)) != NULL)
        if (name[0] != '.')
            g_ptr_array_add (names, g_strdup (name));
    g_ptr_array_sort (names, dfq_registry_compare_names);

    guint loaded = 0;
    for (guint i = 0; i < names->len; i++) {
        const char *entry = names->pdata[i];
        g_autofree char *path = g_build_filename (dir, entry, NULL);
        if (g_file_test (path, G_FILE_TEST_IS_DIR)) {
            if (depth < DFQ_PLUGIN_SCAN_MAX_DEPTH)
                loaded += dfq_registry_scan_dir (registry, path, depth + 1, failures);
            continue;
        }
        g_autofree char *plugin_name = dfq_plugin_name_from_file (entry);
        if (plugin_name == NULL)
            continue;
        DfqPlugin *previous = dfq_registry_find_plugin (registry, plugin_name);
        if (previous != NULL) {
            /* Earlier path entries win (a build tree shadows the install). */
            g_debug ("%s: plugin '%s' already loaded from %s; skipped", path, plugin_name, previous->path);
            continue;
        }
        g_autoptr (GError) error = NULL;
        if (dfq_registry_load_plugin (registry, path, &error))
            loaded++;
        else if (failures != NULL)
            g_ptr_array_add (failures, g_steal_pointer (&error));
        else
            g_debug ("%s", error->message);
    }
    return loaded;
}

guint
dfq_registry_scan (DfqRegistry *registry, const char *extra_path, GPtrArray *failures)
{
    g_return_val_if_fail (registry != NULL, 0);
    g_auto (GStrv) dirs = dfq_registry_get_search_path (extra_path);
    guint loaded = 0;
    for (guint i = 0; dirs[i] != NULL; i++) {
        if (g_file_test (dirs[i], G_FILE_TEST_IS_REGULAR)) {
            /* A file on the path is loaded as is. */
            g_autoptr (GError) error = NULL;
            if (dfq_registry_load_plugin (registry, dirs[i], &error))
                loaded++;
            else if (failures != NULL)
                g_ptr_array_add (failures, g_steal_pointer (&error));
            continue;
        }
        loaded += dfq_registry_scan_dir (registry, dirs[i], 0, failures);
    }
    return loaded;
}
