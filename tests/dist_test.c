/*
 * dist_test.c: the rank interface of src/dist/. Run alone (make ctest) it is one rank of one:
 * every collective must be the identity and cost nothing. Run under mpirun
 * (tests/peers/test_dist.py) it checks the fixed-order sum on vectors where the order of the
 * additions changes the result: every element must be ((x_0 + x_1) + x_2) + ... in fp32 / fp64,
 * bit for bit, with the rank order, on every rank; and the agreement picks the lowest failing
 * rank.
 */
#include "dist/dist.h"
#include "test.h"

#include <string.h>

/* rank r's value at element e: large values of both signs beside small ones, so that another
 * order of addition gives other bits */
static double value(int r, size_t e) {
    double big = (double)(1u << 24) * (1.0 + (double)((e * 7 + (size_t)r) % 5));
    switch ((r + (int)e) % 3) {
    case 0:
        return big;
    case 1:
        return 1.0 / (double)(1 + (e + (size_t)r) % 11);
    default:
        return -big + 0.25 * (double)r;
    }
}

int main(void) {
    ft_error err = {0};
    CHECK(dist_init(NULL, NULL, &err) == FT_OK, "dist_init: %s", err.what);
    int rank = dist_rank(), N = dist_size();
    CHECK(rank >= 0 && rank < N, "rank %d of %d", rank, N);
    CHECK(strlen(dist_describe()) > 0, "dist_describe");
    enum { n = 1001 }; /* not a multiple of the rank counts: uneven slices */
    static float xf[n];
    static double xd[n];
    for (size_t e = 0; e < n; e++)
        xf[e] = (float)value(rank, e), xd[e] = value(rank, e);
    dist_sum_f32(xf, n);
    dist_sum_f64(xd, n);
    int bad_f = 0, bad_d = 0;
    for (size_t e = 0; e < n; e++) {
        float sf = (float)value(0, e);
        double sd = value(0, e);
        for (int r = 1; r < N; r++)
            sf += (float)value(r, e), sd += value(r, e);
        bad_f += memcmp(&sf, &xf[e], sizeof sf) != 0;
        bad_d += memcmp(&sd, &xd[e], sizeof sd) != 0;
    }
    CHECK(bad_f == 0, "%d of %d fp32 sums differ from the rank-order sum (rank %d of %d)", bad_f, n,
          rank, N);
    CHECK(bad_d == 0, "%d of %d fp64 sums differ from the rank-order sum (rank %d of %d)", bad_d, n,
          rank, N);

    /* the overlapped sum: segments of uneven sizes started in a row (the last one empty), then
     * finished; every element the same rank-order sum */
    CHECK(dist_reserve_overlap(4, n, &err) == FT_OK, "dist_reserve_overlap");
    static float yf[n];
    for (size_t e = 0; e < n; e++)
        yf[e] = (float)value(rank, e);
    const size_t cut[5] = {0, 700, 701, 1001, 1001};
    for (int i = 3; i >= 0; i--) { /* backward's order: the last segment first */
        dist_sum_f32_start(yf + cut[i], cut[i + 1] - cut[i]);
        dist_progress();
    }
    double wait_s = -1, comm_s = -1;
    dist_sum_f32_finish(&wait_s, &comm_s);
    CHECK(memcmp(yf, xf, sizeof yf) == 0, "overlapped sums differ from dist_sum_f32 (rank %d)",
          rank);
    CHECK(wait_s >= 0 && comm_s >= 0, "wait %g comm %g", wait_s, comm_s);

    /* an all-gather of 64-byte units: every rank's slice arrives whole (N need not divide) */
    enum { GB = 64 * 37 };
    static unsigned char gbuf[GB], mine[GB];
    size_t a0 = dist_slice_begin(GB, rank), a1 = dist_slice_begin(GB, rank + 1);
    for (size_t i = a0; i < a1; i++)
        mine[i - a0] = (unsigned char)(i * 31 + 7);
    int h = dist_gather_start(gbuf, GB, mine);
    dist_gather_wait(h, NULL);
    int bad_g = 0;
    for (size_t i = 0; i < GB; i++)
        bad_g += gbuf[i] != (unsigned char)(i * 31 + 7);
    CHECK(bad_g == 0, "all-gather: %d of %d bytes wrong (rank %d of %d)", bad_g, GB, rank, N);
    CHECK(dist_slice_begin(GB, 0) == 0 && dist_slice_begin(GB, N) == GB, "slices cover the buffer");

    long v = dist_max(10 + (rank == N - 1 ? 5 : rank % 2), NULL);
    CHECK(v == 15, "dist_max %ld", v);
    int who = -1;
    dist_max(rank % 2, &who);
    CHECK(who == (N > 1 ? 1 : 0), "dist_max: lowest rank with the largest value %d", who);
    long b = rank == 0 ? 12345 : -1;
    dist_bcast(&b, sizeof b);
    CHECK(b == 12345, "dist_bcast %ld", b);

    /* agreement: all fine, then the last rank fails */
    CHECK(dist_agree(FT_OK, &err) == FT_OK, "dist_agree all fine");
    ft_status st = FT_OK;
    if (rank == N - 1) st = ft_error_set(&err, FT_ERR_INPUT, "here", NULL, "failed on purpose");
    st = dist_agree(st, &err);
    CHECK(st == FT_ERR_INPUT, "dist_agree status %d", st);
    CHECK(strstr(err.what, "failed on purpose") != NULL, "dist_agree what: %s", err.what);
    if (N > 1) CHECK(strncmp(err.where, "rank ", 5) == 0, "names the rank: %s", err.where);
    dist_finalize();
    CHECK(dist_size() == 1 && dist_rank() == 0, "after dist_finalize");
    return test_summary("dist_test");
}
