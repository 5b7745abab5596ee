/* The example's own op (docs/examples/custom-op): the Charbonnier penalty,
 * a smooth |x|, y = sqrt(x^2 + eps^2) - eps, elementwise; any shape. */
#pragma once

#include <dfq/dfq.h>

/* Visible to the plugin and to its test, not exported from the .so. */
DfqTensor *charbonnier (DfqArena *arena, DfqTensor *x, float eps);
