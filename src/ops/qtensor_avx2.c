/* qtensor_avx2.c: placeholder kernel set (all NULL: the portable kernels run). */
#include "ops/qtensor_kernels.h"

const qkernels qtensor_kernels_avx2 = {"avx2", {0}, {0}};
