/* Weights files in the safetensors format (the format PyTorch users export with
 * the `safetensors` library): reading with full header validation, conversion
 * of F32/F16/BF16/integer tensors to float32, loading a model's table of named
 * tensors with rename rules for foreign layer names, and atomic writing.
 *
 * File layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON
 * ({"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 * "__metadata__": {"key": "value"}}), then the byte buffer that the offsets
 * index. Every defect of a file is a GError in DFQ_MODEL_ERROR whose message
 * names the file and, where one is involved, the tensor. */
#pragma once

#include <glib.h>
#include <dfq/dfq-macros.h>
#include <dfq/dfq-error.h>
#include <dfq/dfq-tensor.h>

G_BEGIN_DECLS

/* The reference implementation's cap on the JSON header (100 MB). */
#define DFQ_SAFETENSORS_MAX_HEADER_SIZE 100000000
/* Tensors of higher rank are rejected as FORMAT errors. */
#define DFQ_SAFETENSORS_MAX_RANK 16

/* Element types of a safetensors file that dfqlab understands. */
typedef enum {
    DFQ_SAFETENSORS_F64,
    DFQ_SAFETENSORS_F32,
    DFQ_SAFETENSORS_F16,
    DFQ_SAFETENSORS_BF16,
    DFQ_SAFETENSORS_I64,
    DFQ_SAFETENSORS_I32,
    DFQ_SAFETENSORS_I16,
    DFQ_SAFETENSORS_I8,
    DFQ_SAFETENSORS_U8,
    DFQ_SAFETENSORS_BOOL,
    DFQ_SAFETENSORS_N_DTYPES
} DfqSafetensorsDType;

/* One tensor entry of a file, as validated from its header. */
typedef struct {
    const char *name;
    DfqSafetensorsDType dtype;
    int n_dims;          /* 0 for a scalar */
    const gint64 *shape; /* n_dims sizes, outermost first */
    gint64 numel;
    guint64 data_begin;  /* byte offsets into the data buffer (after the header) */
    guint64 data_end;
} DfqSafetensorsInfo;

typedef struct _DfqSafetensors DfqSafetensors;

/* "F32", "BF16", ... */
DFQ_API const char *dfq_safetensors_dtype_name (DfqSafetensorsDType dtype);
/* Bytes per element. */
DFQ_API gsize dfq_safetensors_dtype_size (DfqSafetensorsDType dtype);

/**
 * dfq_safetensors_new_from_file:
 * @path: a .safetensors file; it is mapped, not copied.
 * Returns: (transfer full) the validated file, or NULL with
 *   DFQ_MODEL_ERROR_IO (cannot open or read @path) or DFQ_MODEL_ERROR_FORMAT
 *   (any defect of the header or offsets; the message names @path and the tensor).
 */
DFQ_API DfqSafetensors *dfq_safetensors_new_from_file (const char *path, GError **error);

/**
 * dfq_safetensors_new_from_bytes:
 * @bytes: the whole file content; a reference is taken.
 * @display_name: (nullable) how error messages name the data ("<memory>" if NULL).
 * Returns: (transfer full) the validated file, or NULL with DFQ_MODEL_ERROR_FORMAT.
 *   This is the entry point the fuzzer drives.
 */
DFQ_API DfqSafetensors *dfq_safetensors_new_from_bytes (GBytes *bytes, const char *display_name, GError **error);

DFQ_API void dfq_safetensors_free (DfqSafetensors *self);

/* Returns: (transfer none) the path or display name given at creation. */
DFQ_API const char *dfq_safetensors_get_name (const DfqSafetensors *self);

/* Number of tensors (the "__metadata__" entry is not a tensor). */
DFQ_API guint dfq_safetensors_get_n_tensors (const DfqSafetensors *self);

/**
 * dfq_safetensors_get_info:
 * @index: 0 .. n_tensors-1; tensors are in the order of their data offsets,
 *   which is the order the writer stored them in.
 * Returns: (transfer none) the entry, valid as long as @self.
 */
DFQ_API const DfqSafetensorsInfo *dfq_safetensors_get_info (const DfqSafetensors *self, guint index);

/* Returns: (transfer none) (nullable) the entry named @name, or NULL. */
DFQ_API const DfqSafetensorsInfo *dfq_safetensors_lookup (const DfqSafetensors *self, const char *name);

/* Returns: (transfer none) (nullable) a "__metadata__" value, or NULL. */
DFQ_API const char *dfq_safetensors_get_metadata (const DfqSafetensors *self, const char *key);
/* Returns: (transfer none) (element-type utf8 utf8) all "__metadata__" pairs. */
DFQ_API GHashTable *dfq_safetensors_get_metadata_table (const DfqSafetensors *self);

/**
 * dfq_safetensors_get_data:
 * Returns: (transfer none) (nullable) the raw little-endian bytes of tensor
 *   @name (length in @size), or NULL if there is no such tensor.
 */
DFQ_API gconstpointer dfq_safetensors_get_data (const DfqSafetensors *self, const char *name, gsize *size);

/**
 * dfq_safetensors_read_f32:
 * Converts tensor @name to float32 into @out, which holds @n_out floats
 * (exactly the tensor's element count). Integers convert by value (so an I64
 * num_batches_tracked reads as a float).
 * Returns: FALSE with DFQ_MODEL_ERROR_MISSING (no such tensor) or
 *   DFQ_MODEL_ERROR_SHAPE (@n_out differs from the element count).
 */
DFQ_API gboolean dfq_safetensors_read_f32 (const DfqSafetensors *self, const char *name,
                                           float *out, gsize n_out, GError **error);

/**
 * dfq_safetensors_copy_to:
 * Copies tensor @name into @dst (contiguous, F32 or I32), converting. The shape
 * must match exactly, except that a 0-d scalar in the file fits a [1] tensor.
 * An I32 @dst accepts only integer or BOOL tensors whose values fit in 32 bits.
 * Returns: FALSE with DFQ_MODEL_ERROR_MISSING, DFQ_MODEL_ERROR_SHAPE, or
 *   DFQ_MODEL_ERROR_FORMAT (float data into an I32 tensor, integer overflow).
 */
DFQ_API gboolean dfq_safetensors_copy_to (const DfqSafetensors *self, const char *name,
                                          DfqTensor *dst, GError **error);

/**
 * dfq_safetensors_get_tensor:
 * Returns: (transfer none) a new F32 tensor in @arena holding tensor @name
 *   converted to float (a 0-d scalar becomes [1]), or NULL with
 *   DFQ_MODEL_ERROR_MISSING, or DFQ_MODEL_ERROR_SHAPE when the rank exceeds
 *   DFQ_MAX_DIMS.
 */
DFQ_API DfqTensor *dfq_safetensors_get_tensor (const DfqSafetensors *self, const char *name,
                                               DfqArena *arena, GError **error);

/* ------------------------------------------------------------------------ */
/* Rename rules: how foreign checkpoints (pytorchcv, torchvision, "module."
 * prefixes of DataParallel) map onto dfqlab's layer names. */

typedef struct _DfqSafetensorsRenames DfqSafetensorsRenames;

/* Returns: (transfer full) an empty rule list. */
DFQ_API DfqSafetensorsRenames *dfq_safetensors_renames_new (void);
DFQ_API void dfq_safetensors_renames_free (DfqSafetensorsRenames *self);

/**
 * dfq_safetensors_renames_add_regex:
 * Appends a rule: every match of the Perl-compatible @pattern is replaced by
 * @replacement (which may use \1 .. \9 back-references), as g_regex_replace()
 * does. Rules apply in order, each to the previous rule's result (like several
 * `sed -e` expressions). A name that becomes empty is dropped from the file.
 * Returns: FALSE with a G_REGEX_ERROR if @pattern does not compile.
 */
DFQ_API gboolean dfq_safetensors_renames_add_regex (DfqSafetensorsRenames *self, const char *pattern,
                                                    const char *replacement, GError **error);

/**
 * dfq_safetensors_renames_add_prefix:
 * Appends a rule that replaces a leading @from by @to (either may be ""):
 * ("module.", "") strips DataParallel's prefix.
 */
DFQ_API void dfq_safetensors_renames_add_prefix (DfqSafetensorsRenames *self, const char *from, const char *to);

/* Returns: (transfer full) @name with every rule applied in order. */
DFQ_API char *dfq_safetensors_renames_apply (const DfqSafetensorsRenames *self, const char *name);

/* Rules for pytorchcv's ResNet-20 (resnet20_cifar10/100, the GDFQ teachers)
 * onto the layout of fixtures/README.md: features.init_block.conv.{conv,bn} ->
 * conv/bn, features.stageS.unitU.body.convK.{conv,bn} -> layers.L.convK/bnK,
 * ...identity_conv.{conv,bn} -> layers.L.down.{0,1}, output -> fc.
 * Returns: (transfer full) the rule list. */
DFQ_API DfqSafetensorsRenames *dfq_safetensors_renames_new_pytorchcv_resnet_cifar (guint units_per_stage);

/* ------------------------------------------------------------------------ */

/* How dfq_safetensors_load_into() matches a file against a model. */
typedef struct {
    const DfqSafetensorsRenames *renames; /* (nullable) applied to file names first */
    const char *const *ignore;            /* (nullable) NULL-terminated globs of file names
                                           * (after renaming) that may be present without
                                           * the model knowing them, e.g. "*num_batches_tracked" */
    gboolean allow_missing;               /* leave tensors absent from the file untouched */
    gboolean allow_unexpected;            /* ignore every tensor the model does not know */
} DfqSafetensorsLoadOptions;

/**
 * dfq_safetensors_load_into:
 * @expected: (element-type utf8 DfqTensor): what the model holds, name -> its
 *   (F32 or I32, contiguous) tensor.
 * @options: (nullable) NULL = no renames, nothing ignored, nothing allowed.
 *
 * Checks the whole file against @expected first and only then copies, so on
 * error no tensor of the model has changed. Names in error messages are listed
 * sorted, at most 5 of them plus a count of the rest.
 *
 * Returns: FALSE with, checked in this order: DFQ_MODEL_ERROR_FORMAT (two file
 *   tensors renamed to the same name), DFQ_MODEL_ERROR_MISSING (names the model
 *   needs and the file lacks), DFQ_MODEL_ERROR_UNEXPECTED (file tensors the
 *   model does not know and @options does not ignore; a renamed one is shown
 *   with its file name), DFQ_MODEL_ERROR_SHAPE (names with "file [..] vs model
 *   [..]"), DFQ_MODEL_ERROR_FORMAT (data that cannot convert, e.g. F32 into an
 *   I32 tensor).
 */
DFQ_API gboolean dfq_safetensors_load_into (const DfqSafetensors *self, GHashTable *expected,
                                            const DfqSafetensorsLoadOptions *options, GError **error);

/* Convenience: open @path and load it into @expected. */
DFQ_API gboolean dfq_safetensors_load_file_into (const char *path, GHashTable *expected,
                                                 const DfqSafetensorsLoadOptions *options, GError **error);

/* ------------------------------------------------------------------------ */

/**
 * dfq_safetensors_save:
 * @tensors: (element-type utf8 DfqTensor): name -> contiguous F32 or I32 tensor;
 *   written as F32 / I32 in sorted name order, so the same content always gives
 *   the same bytes.
 * @metadata: (nullable) (element-type utf8 utf8): stored as "__metadata__".
 *
 * Writes atomically (a temporary file in the same directory, then rename), with
 * the header padded by spaces to a multiple of 8 bytes as the reference
 * implementation does, so PyTorch's `safetensors.torch.load_file` reads it.
 * Returns: FALSE with DFQ_MODEL_ERROR_IO (the message names @path).
 */
DFQ_API gboolean dfq_safetensors_save (const char *path, GHashTable *tensors, GHashTable *metadata, GError **error);

/**
 * dfq_safetensors_save_list:
 * Same as dfq_safetensors_save() with the tensors in the given order.
 * @names: (array length=n) @tensors: (array length=n)
 */
DFQ_API gboolean dfq_safetensors_save_list (const char *path, const char *const *names,
                                            DfqTensor *const *tensors, guint n,
                                            GHashTable *metadata, GError **error);

/**
 * dfq_safetensors_serialize:
 * The bytes dfq_safetensors_save_list() writes.
 * Returns: (transfer full) the file content.
 */
DFQ_API GBytes *dfq_safetensors_serialize (const char *const *names, DfqTensor *const *tensors, guint n,
                                           GHashTable *metadata);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfqSafetensors, dfq_safetensors_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfqSafetensorsRenames, dfq_safetensors_renames_free)

G_END_DECLS
