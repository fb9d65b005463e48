/* qtensor_avx512.c: placeholder kernel set (all NULL: the portable kernels run). */
#include "ops/qtensor_kernels.h"

const qkernels qtensor_kernels_avx512 = {"avx512", {0}, {0}};
