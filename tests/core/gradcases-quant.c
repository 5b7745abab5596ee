/* Gradcheck cases: quant ops. */
#include "dfq-test-util.h"

const GradCase dfq_gradcases_quant[] = {
    { .name = "placeholder-quant", .op = DFQ_OP_NONE },
};
const guint dfq_n_gradcases_quant = 0;
