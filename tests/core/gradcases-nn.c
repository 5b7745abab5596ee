/* Gradcheck cases: nn ops. */
#include "dfq-test-util.h"

const GradCase dfq_gradcases_nn[] = {
    { .name = "placeholder-nn", .op = DFQ_OP_NONE },
};
const guint dfq_n_gradcases_nn = 0;
