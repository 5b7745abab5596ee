/* Counts heap allocations, for tests that check that steady-state training
 * steps allocate nothing (the hot loops use the scratch arena).
 *
 * Linked into a test executable, these definitions of malloc, calloc, realloc
 * and free take precedence over libc's for every library of the process
 * (glib, libdfq, the plugins, OpenBLAS) and forward to libc's through
 * dlsym(RTLD_NEXT). While dlsym itself needs memory, a small static buffer
 * serves it. Not built with sanitizers, which interpose malloc themselves
 * (tests/pipelines/meson.build); the test then declares the counter absent
 * through its weak reference and does not register the case. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <glib.h>

#include "dfq-test-util.h"

static void *(*real_malloc) (size_t);
static void *(*real_calloc) (size_t, size_t);
static void *(*real_realloc) (void *, size_t);
static void (*real_free) (void *);
static int resolving;
static gint64 n_allocs;

static _Alignas (64) unsigned char boot[8192];
static size_t boot_used;

static void *
boot_alloc (size_t size)
{
    size = (size + 63) & ~(size_t) 63;
    if (boot_used + size > sizeof boot)
        return NULL;
    void *p = boot + boot_used;
    boot_used += size;
    return p; /* static storage: already zero */
}

static gboolean
in_boot (const void *p)
{
    return (const unsigned char *) p >= boot && (const unsigned char *) p < boot + sizeof boot;
}

static void
resolve (void)
{
    resolving = 1;
    real_malloc = dlsym (RTLD_NEXT, "malloc");
    real_calloc = dlsym (RTLD_NEXT, "calloc");
    real_realloc = dlsym (RTLD_NEXT, "realloc");
    real_free = dlsym (RTLD_NEXT, "free");
    resolving = 0;
}

void *
malloc (size_t size)
{
    if (real_malloc == NULL) {
        if (resolving)
            return boot_alloc (size);
        resolve ();
    }
    __atomic_fetch_add (&n_allocs, 1, __ATOMIC_RELAXED);
    return real_malloc (size);
}

void *
calloc (size_t n, size_t size)
{
    if (real_calloc == NULL) {
        if (resolving)
            return boot_alloc (n * size);
        resolve ();
    }
    __atomic_fetch_add (&n_allocs, 1, __ATOMIC_RELAXED);
    return real_calloc (n, size);
}

void *
realloc (void *p, size_t size)
{
    if (real_realloc == NULL)
        resolve ();
    __atomic_fetch_add (&n_allocs, 1, __ATOMIC_RELAXED);
    if (in_boot (p)) {
        void *q = real_malloc (size);
        if (q != NULL)
            memcpy (q, p, MIN (size, (size_t) (boot + sizeof boot - (unsigned char *) p)));
        return q;
    }
    return real_realloc (p, size);
}

void
free (void *p)
{
    if (p == NULL || in_boot (p))
        return;
    if (real_free == NULL)
        resolve ();
    real_free (p);
}

gint64
dfq_test_malloc_count (void)
{
    return __atomic_load_n (&n_allocs, __ATOMIC_RELAXED);
}
