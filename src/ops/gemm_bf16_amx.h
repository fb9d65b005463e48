/*
 * gemm_bf16_amx.h: the AMX product of gemm_bf16.h (Intel Sapphire Rapids on: AMX-TILE and
 * AMX-BF16), kept in a header, as gemm_bf16_dp.h is, so that one source is built twice: natively
 * in gemm_bf16_amx.c, and in tests/gemm_bf16_test.c against a plain-C model of the six tile
 * instructions it uses, which runs it on every CPU. Whoever includes it provides the tile
 * intrinsics (_tile_loadconfig, _tile_release, _tile_zero, _tile_loadd, _tile_stored,
 * _tile_dpbf16ps) and includes gemm_bf16_dp.h first (its B packing, and its kernel, which takes
 * products too short for a tile).
 *
 * The facts used (Intel SDM vol. 1 ch. 18 and vol. 2, TILELOADD / TDPBF16PS / LDTILECFG):
 *  - a tile register holds up to 16 rows of up to 64 bytes; LDTILECFG's 64-byte operand gives
 *    the palette (1: 8 tiles tmm0-7) in byte 0, each tile's bytes per row as 16-bit words from
 *    byte 16 and its rows as bytes from byte 48; each thread loads it before its first tile
 *    instruction and TILERELEASE ends the use;
 *  - TILELOADD / TILESTORED move a tile's rows from / to memory with any stride between rows;
 *  - TDPBF16PS C, A, B: for each row m and column n of C (16 x 16 fp32), and each 32-bit
 *    word k of A's row m (a pair of bf16 at k values 2k and 2k+1), C[m][n] += A[m].pair[k] .
 *    B[k].pair[n]: B's row k holds, per column, the pair for k values 2k and 2k+1, which is the
 *    layout gemm_bf16_dp.h packs op(B) in (dp_pack_b, lower k in the lower half). The fp32
 *    additions round to nearest even, denormal inputs read as zero and results flush to zero, as
 *    with VDPBF16PS; so the error bound of the tests is the same.
 *  - Linux hands out the tile data state only to a process that asks for it
 *    (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)); base/cpu.c asks when it probes and
 *    reports level amx only when the kernel said yes.
 *
 * Layout: the tiles are A0 A1 (tmm4, tmm5: 16 rows x 32 bf16 of A each), B0 B1 (tmm6, tmm7:
 * 16 pairs x 16 columns of op(B)) and the four products C (tmm0-3): a 32 x 32 block of C per
 * pass over K. A's rows are copied per item (AMX_MC rows x a K block, zero-padded to whole tiles,
 * so the tiles never read past A and padding adds zeros); op(B)'s K block is packed once per call
 * in dp_pack_b's strips of 32 columns (two B tiles side by side, 128 bytes per pair) and shared by
 * the threads, which split the outputs in items of AMX_MC rows x AMX_NW columns, as dp_gemm does.
 * Whole 32 x 32 blocks of C are loaded into the C tiles and stored back from them (the K blocks
 * after the first add there); edge blocks and a beta other than 0 or 1 go through a buffer.
 */
#ifndef FT_OPS_GEMM_BF16_AMX_H
#define FT_OPS_GEMM_BF16_AMX_H

enum { AMX_KC = 256, AMX_NC = 2048, AMX_MC = 128, AMX_NW = 256, AMX_MR = 32 };

/* Fewer rows than this go to dp_gemm: a 16-row tile would mostly multiply padding. */
enum { AMX_MIN_ROWS = 16 };

static inline int amx_round_up(int x, int m) { return (x + m - 1) / m * m; }

/* Palette 1, all eight tiles 16 rows x 64 bytes. */
static void amx_configure(void) {
    unsigned char cfg[64];
    memset(cfg, 0, sizeof cfg);
    cfg[0] = 1;
    for (int t = 0; t < 8; t++) {
        cfg[16 + 2 * t] = 64; /* bytes per row, little-endian 16-bit */
        cfg[48 + t] = 16;     /* rows */
    }
    _tile_loadconfig(cfg);
}

/* Rows m0 .. m0+mc-1, values k0 .. k0+kc-1 of A into rows of kq values (kc rounded up to 32),
 * zero past kc, and zero rows up to a whole AMX_MR. */
static void amx_pack_a(uint16_t *dst, int kq, const uint16_t *A, int lda, int m0, int mc, int k0,
                       int kc) {
    int rows = amx_round_up(mc, AMX_MR);
    for (int r = 0; r < rows; r++) {
        uint16_t *d = dst + (size_t)r * kq;
        int n = r < mc ? kc : 0;
        if (n) memcpy(d, A + (size_t)(m0 + r) * lda + k0, (size_t)n * sizeof *d);
        memset(d + n, 0, (size_t)(kq - n) * sizeof *d);
    }
}

/* One strip of op(B) (dp_pack_b's layout, DP_NR columns) for a K block of kc values, with the
 * pairs from (kc + 1) / 2 up to kq / 2 zero. */
static void amx_pack_b(uint32_t *d, int kq, int transB, const uint16_t *B, int ldb, int j0, int nr,
                       int k0, int kc) {
    int kp = (kc + 1) / 2;
    dp_pack_b(d, transB, B, ldb, j0, nr, k0, kc);
    memset(d + (size_t)kp * DP_NR, 0, (size_t)(kq / 2 - kp) * DP_NR * sizeof *d);
}

/* C block (mr x nr of it, mr <= 32, nr <= 32) from the packed rows ap (kq values each, 32 of
 * them) and the packed strip bp. first: the K block that applies beta; later ones add. A whole
 * 32 x 32 block whose C is kept as it is or added to (beta 0 or 1, or a later K block) lives in
 * the C tiles from C's memory and back; the rest (edges, other betas) goes through a buffer. */
static void amx_block(int kq, const uint16_t *ap, const uint32_t *bp, float *C, int ldc, int mr,
                      int nr, float beta, int first) {
    int whole = mr == AMX_MR && nr == DP_NR, direct = whole && (!first || beta == 0 || beta == 1);
    long cs = (long)ldc * 4;
    if (direct && !(first && beta == 0)) {
        _tile_loadd(0, C, cs);
        _tile_loadd(1, C + 16, cs);
        _tile_loadd(2, C + (size_t)16 * ldc, cs);
        _tile_loadd(3, C + (size_t)16 * ldc + 16, cs);
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
    for (int q = 0; q < kq; q += 32) {
        const uint32_t *b = bp + (size_t)(q / 2) * DP_NR;
        _tile_loadd(4, ap + q, kq * 2);
        _tile_loadd(5, ap + (size_t)16 * kq + q, kq * 2);
        _tile_loadd(6, b, DP_NR * 4);
        _tile_loadd(7, b + 16, DP_NR * 4);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    if (direct) {
        _tile_stored(0, C, cs);
        _tile_stored(1, C + 16, cs);
        _tile_stored(2, C + (size_t)16 * ldc, cs);
        _tile_stored(3, C + (size_t)16 * ldc + 16, cs);
        return;
    }
    float t[AMX_MR * 32] __attribute__((aligned(64)));
    _tile_stored(0, t, 128);
    _tile_stored(1, t + 16, 128);
    _tile_stored(2, t + 16 * 32, 128);
    _tile_stored(3, t + 16 * 32 + 16, 128);
    for (int m = 0; m < mr; m++) {
        float *c = C + (size_t)m * ldc;
        const float *r = t + m * 32;
        if (!first)
            for (int j = 0; j < nr; j++)
                c[j] += r[j];
        else if (beta == 0)
            memcpy(c, r, (size_t)nr * sizeof *c);
        else
            for (int j = 0; j < nr; j++)
                c[j] = beta * c[j] + r[j];
    }
}

/* The packing buffers' sizes in bytes (each a whole number of 64-byte lines): op(B)'s block, and
 * each thread's rows of A; and the threads (dp_sizes' rule). */
static int amx_sizes(int M, int N, int K, size_t *bbytes, size_t *abytes) {
    int kq_max = amx_round_up(dp_min(K, AMX_KC), 32);
    int nc_max = amx_round_up(dp_min(N, AMX_NC), DP_NR);
    int mc_max = amx_round_up(dp_min(M, AMX_MC), AMX_MR);
    *bbytes = amx_round_up(kq_max / 2 * nc_max * 4, 64);
    *abytes = amx_round_up(mc_max * kq_max * 2, 64);
    return (double)M * N * K < DP_PARALLEL_MACS ? 1 : omp_get_max_threads();
}

/* Bytes of scratch amx_gemm needs: its own buffers, or dp_gemm's, whichever is more (short
 * products go to dp_gemm). */
static inline size_t amx_scratch_bytes(int M, int N, int K) {
    size_t bb, ab;
    int threads = amx_sizes(M, N, K, &bb, &ab);
    size_t own = bb + ab * (size_t)threads + 64, dp = dp_scratch_bytes(M, N, K);
    return own > dp ? own : dp;
}

/* C (M, N) = beta * C + A (M, K) . op(B) with the contract of gemm_bf16 (M, N, K > 0), the
 * buffers in ws. Returns -1, C untouched, when ws is smaller than amx_scratch_bytes. */
static int amx_gemm(int transB, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B,
                    int ldb, float beta, float *C, int ldc, void *ws, size_t wsb) {
    if (!ws || wsb < amx_scratch_bytes(M, N, K)) return -1;
    if (M < AMX_MIN_ROWS) return dp_gemm(transB, M, N, K, A, lda, B, ldb, beta, C, ldc, ws, wsb);
    size_t bbytes, abytes;
    int threads = amx_sizes(M, N, K, &bbytes, &abytes);
    unsigned char *base = (unsigned char *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
    uint32_t *bpack = (uint32_t *)base;
    unsigned char *apack = base + bbytes;
#pragma omp parallel num_threads(threads)
    {
        uint16_t *ap = (uint16_t *)(apack + abytes * (size_t)omp_get_thread_num());
        amx_configure();
        for (int j0 = 0; j0 < N; j0 += AMX_NC) {
            int nc = dp_min(N - j0, AMX_NC), nstrips = (nc + DP_NR - 1) / DP_NR;
            int nwb = (nc + AMX_NW - 1) / AMX_NW, items = (M + AMX_MC - 1) / AMX_MC * nwb;
            for (int k0 = 0; k0 < K; k0 += AMX_KC) {
                int kc = dp_min(K - k0, AMX_KC), kq = amx_round_up(kc, 32);
#pragma omp for schedule(static)
                for (int t = 0; t < nstrips; t++)
                    amx_pack_b(bpack + (size_t)t * (kq / 2) * DP_NR, kq, transB, B, ldb,
                               j0 + t * DP_NR, dp_min(DP_NR, nc - t * DP_NR), k0, kc);
                int packed = -1; /* the M block this thread's A buffer holds */
#pragma omp for schedule(static)
                for (int it = 0; it < items; it++) {
                    int mb = it / nwb, m0 = mb * AMX_MC, mc = dp_min(M - m0, AMX_MC);
                    int w0 = it % nwb * AMX_NW, wc = dp_min(nc - w0, AMX_NW);
                    if (mb != packed) amx_pack_a(ap, kq, A, lda, m0, mc, k0, kc), packed = mb;
                    for (int jr = 0; jr < wc; jr += DP_NR)
                        for (int ir = 0; ir < mc; ir += AMX_MR)
                            amx_block(kq, ap + (size_t)ir * kq,
                                      bpack + (size_t)(w0 + jr) / DP_NR * (kq / 2) * DP_NR,
                                      C + (size_t)(m0 + ir) * ldc + j0 + w0 + jr, ldc,
                                      dp_min(AMX_MR, mc - ir), dp_min(DP_NR, wc - jr), beta,
                                      k0 == 0);
                }
            }
        }
        _tile_release();
    }
    return 0;
}

#endif
