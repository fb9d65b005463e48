/*
 * dist.c: ranks, fixed-order sums, broadcast and agreement over MPI, or one rank without it
 * (see dist.h).
 *
 * The MPI part uses MPI's data movement only (Alltoallv, Allgatherv, Bcast) and MPI_Allreduce
 * solely on integers with MAX / MIN, where the order cannot change the result. Errors of
 * MPI itself (a rank that died, a broken connection) are fatal under MPI's default handler: the
 * job is aborted by mpirun, which names the rank that failed.
 */
#include "dist/dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef FT_HAVE_MPI
#include <mpi.h>
#endif

static int g_rank = 0, g_size = 1, g_mpi = 0;
#ifdef FT_HAVE_MPI
/* Scratch for the slices received from every rank, kept between calls (dist_reserve sizes it
 * before the first step), and the slice counts and offsets (4 x N ints, from dist_init). */
static void *g_scratch;
static size_t g_scratch_bytes;
static int *g_counts;
#endif
static char g_host[256];

/* The launcher's rank count, when a launcher started us: Open MPI, PMIx, MPICH/Hydra. */
static int launcher_size(void) {
    const char *v[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        const char *s = getenv(v[i]);
        if (s && atoi(s) > 0) return atoi(s);
    }
    return getenv("PMIX_RANK") ? 2 : 0; /* PMIx without a size: several, to be safe */
}

ft_status dist_init(int *argc, char ***argv, ft_error *err) {
    if (gethostname(g_host, sizeof g_host - 1) != 0) snprintf(g_host, sizeof g_host, "?");
    int n = launcher_size();
#ifdef FT_HAVE_MPI
    if (n > 0) {
        int ok = 0;
        MPI_Initialized(&ok);
        if (!ok && MPI_Init(argc, argv) != MPI_SUCCESS)
            return ft_error_set(err, FT_ERR_RUNTIME, "mpirun", NULL, "MPI_Init failed");
        g_mpi = 1;
        MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
        MPI_Comm_size(MPI_COMM_WORLD, &g_size);
        if (!(g_counts = malloc(sizeof(int) * 4 * (size_t)g_size)))
            return ft_error_set(err, FT_ERR_RUNTIME, NULL, NULL, "out of memory");
    }
    return FT_OK;
#else
    (void)argc, (void)argv;
    if (n > 1)
        return ft_error_set(err, FT_ERR_INPUT, "mpirun",
                            "install libopenmpi-dev (make deps) and rebuild; ftune --version says "
                            "whether MPI is built in",
                            "this ftune was built without MPI, so the %d copies mpirun started "
                            "would each train alone",
                            n);
    return FT_OK;
#endif
}

void dist_finalize(void) {
#ifdef FT_HAVE_MPI
    int done = 0;
    if (g_mpi && MPI_Finalized(&done) == MPI_SUCCESS && !done) MPI_Finalize();
    free(g_scratch);
    free(g_counts);
    g_scratch = NULL, g_scratch_bytes = 0, g_counts = NULL;
#endif
    g_mpi = 0, g_rank = 0, g_size = 1;
}

int dist_rank(void) { return g_rank; }
int dist_size(void) { return g_size; }
int dist_local_size(void) {
    const char *s = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    int n = s && g_size > 1 ? atoi(s) : 1;
    return n > 0 && n <= g_size ? n : 1;
}
const char *dist_host(void) { return g_host[0] ? g_host : "?"; }

const char *dist_describe(void) {
#if defined(FT_HAVE_MPI) && defined(OMPI_MAJOR_VERSION)
#define XS(x) #x
#define S(x) XS(x)
    return "Open MPI " S(OMPI_MAJOR_VERSION) "." S(OMPI_MINOR_VERSION) "." S(OMPI_RELEASE_VERSION);
#undef S
#undef XS
#elif defined(FT_HAVE_MPI)
    return "MPI";
#else
    return "not built in";
#endif
}

#ifdef FT_HAVE_MPI

static int scratch_grow(size_t bytes) {
    if (bytes <= g_scratch_bytes) return 0;
    free(g_scratch);
    g_scratch = malloc(bytes);
    g_scratch_bytes = g_scratch ? bytes : 0;
    return g_scratch ? 0 : -1;
}

static void *scratch(size_t bytes) {
    if (scratch_grow(bytes)) {
        fprintf(stderr, "ftune: error: rank %d: out of memory for the gradient reduction\n",
                g_rank);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    return g_scratch;
}

ft_status dist_reserve(size_t bytes, ft_error *err) {
    if (g_size == 1) return FT_OK;
    /* a slice of every rank: at most bytes / N rounded up, N times, plus one element */
    size_t per = (bytes + (size_t)g_size - 1) / (size_t)g_size + sizeof(double);
    if (scratch_grow(per * (size_t)g_size + sizeof(double)))
        return ft_error_set(err, FT_ERR_RUNTIME, NULL, NULL,
                            "out of memory for the gradient reduction");
    return FT_OK;
}

/* Slice j of n elements: [n*j/N, n*(j+1)/N). Counts fit an int: LoRA vectors are far below 2^31
 * elements per rank's slice. */
static void slices(size_t n, int *cnt, int *off) {
    for (int j = 0; j < g_size; j++) {
        size_t a = n * (size_t)j / (size_t)g_size, b = n * (size_t)(j + 1) / (size_t)g_size;
        off[j] = (int)a, cnt[j] = (int)(b - a);
    }
}

#define DEFINE_SUM(NAME, T, MPI_T)                                                                 \
    void NAME(T *x, size_t n) {                                                                    \
        if (g_size == 1) return;                                                                   \
        int *cnt = g_counts;                                                                       \
        int *off = cnt + g_size, *rcnt = off + g_size, *roff = rcnt + g_size;                      \
        slices(n, cnt, off);                                                                       \
        int mine = cnt[g_rank];                                                                    \
        for (int i = 0; i < g_size; i++)                                                           \
            rcnt[i] = mine, roff[i] = i * mine;                                                    \
        T *recv = scratch(sizeof(T) * ((size_t)mine * (size_t)g_size + 1));                        \
        MPI_Alltoallv(x, cnt, off, MPI_T, recv, rcnt, roff, MPI_T, MPI_COMM_WORLD);                \
        T *out = x + off[g_rank];                                                                  \
        for (int e = 0; e < mine; e++) {                                                           \
            T s = recv[e];                                                                         \
            for (int i = 1; i < g_size; i++)                                                       \
                s += recv[(size_t)i * mine + e];                                                   \
            out[e] = s;                                                                            \
        }                                                                                          \
        MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_T, x, cnt, off, MPI_T, MPI_COMM_WORLD);                \
    }
DEFINE_SUM(dist_sum_f32, float, MPI_FLOAT)
DEFINE_SUM(dist_sum_f64, double, MPI_DOUBLE)

void dist_bcast(void *buf, size_t n) {
    if (g_size == 1) return;
    for (size_t done = 0; done < n;) { /* MPI counts are ints */
        size_t k = n - done < (1u << 30) ? n - done : (1u << 30);
        MPI_Bcast((char *)buf + done, (int)k, MPI_BYTE, 0, MPI_COMM_WORLD);
        done += k;
    }
}

long dist_max(long v, int *who) {
    if (who) *who = g_rank;
    if (g_size == 1) return v;
    long m = v;
    MPI_Allreduce(&v, &m, 1, MPI_LONG, MPI_MAX, MPI_COMM_WORLD);
    if (who) {
        int me = v == m ? g_rank : g_size, w = me;
        MPI_Allreduce(&me, &w, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        *who = w;
    }
    return m;
}

ft_status dist_agree(ft_status st, ft_error *err) {
    if (g_size == 1) return st;
    int who = 0;
    long worst = dist_max(st != FT_OK ? 1 : 0, &who);
    if (!worst) return FT_OK;
    /* the failing rank's status and error, to everyone */
    struct {
        int status;
        ft_error e;
    } rec = {st, {0}};
    if (g_rank == who) rec.e = *err;
    MPI_Bcast(&rec, (int)sizeof rec, MPI_BYTE, who, MPI_COMM_WORLD);
    char host[256] = "";
    if (g_rank == who) snprintf(host, sizeof host, "%s", g_host);
    MPI_Bcast(host, (int)sizeof host, MPI_BYTE, who, MPI_COMM_WORLD);
    *err = rec.e;
    if (who != 0) { /* "rank 1 (node2): model/config.json: cannot open ..." */
        char where[sizeof err->where];
        snprintf(where, sizeof where, "rank %d (%.64s)%s%.400s", who, host,
                 rec.e.where[0] ? ": " : "", rec.e.where);
        memcpy(err->where, where, sizeof where);
    }
    err->status = (ft_status)rec.status;
    return (ft_status)rec.status;
}
#else
ft_status dist_reserve(size_t bytes, ft_error *err) {
    (void)bytes, (void)err;
    return FT_OK;
}
void dist_sum_f32(float *x, size_t n) { (void)x, (void)n; }
void dist_sum_f64(double *x, size_t n) { (void)x, (void)n; }
void dist_bcast(void *buf, size_t n) { (void)buf, (void)n; }
long dist_max(long v, int *who) {
    if (who) *who = 0;
    return v;
}
ft_status dist_agree(ft_status st, ft_error *err) {
    (void)err;
    return st;
}
#endif
