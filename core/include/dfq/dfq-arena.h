/* Arenas: bump allocators that own tensors (ggml contexts). Parameters live in a
 * model's arena; each training step builds its graph in a scratch arena that
 * dfq_arena_reset() empties, so the hot loop never calls malloc or free once the
 * arena has grown to the step's size. */
#pragma once

#include <glib.h>
#include <dfq/dfq-macros.h>

G_BEGIN_DECLS

typedef struct _DfqArena DfqArena;

#define DFQ_ARENA_ALIGN 64

/**
 * dfq_arena_new:
 * @initial_size: bytes reserved up front (0 = a small default); the arena grows by
 *   chunks as needed.
 * Returns: (transfer full) a new arena.
 */
DFQ_API DfqArena *dfq_arena_new (gsize initial_size);
DFQ_API void dfq_arena_free (DfqArena *arena);

/**
 * dfq_arena_alloc:
 * Returns: (transfer none) @size bytes, 64-byte aligned, zero-filled, valid until
 *   the next dfq_arena_reset() or dfq_arena_free().
 */
DFQ_API gpointer dfq_arena_alloc (DfqArena *arena, gsize size);
/* Same, without zero-filling (for buffers that are fully written before read). */
DFQ_API gpointer dfq_arena_alloc_uninit (DfqArena *arena, gsize size);

/**
 * dfq_arena_reset:
 * Forgets every allocation. If the arena had to grow during the last cycle, its
 * chunks are merged into one of the total size, so the next cycle of the same
 * shape allocates nothing from the system.
 */
DFQ_API void dfq_arena_reset (DfqArena *arena);

/* Bytes handed out since the last reset / reserved from the system. */
DFQ_API gsize dfq_arena_used (const DfqArena *arena);
DFQ_API gsize dfq_arena_capacity (const DfqArena *arena);
/* Number of system allocations made over the arena's life (tests check that a
 * steady-state loop does not increase it). */
DFQ_API guint dfq_arena_n_system_allocs (const DfqArena *arena);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfqArena, dfq_arena_free)

G_END_DECLS
