/* Gradcheck cases: elementwise ops. */
#include "dfq-test-util.h"

const GradCase dfq_gradcases_elementwise[] = {
    { .name = "placeholder-elementwise", .op = DFQ_OP_NONE },
};
const guint dfq_n_gradcases_elementwise = 0;
