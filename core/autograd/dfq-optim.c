/* PLACEHOLDER: being written; replaced before landing. */
#include <dfq/dfq.h>
