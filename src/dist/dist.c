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
#include <time.h>
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
static double g_timeout = 0;
static char g_resume[1024];
#ifdef FT_HAVE_MPI
static MPI_Comm g_wd = MPI_COMM_NULL; /* the watchdog's questions and answers */
static char (*g_hosts)[64];           /* every rank's host name */
static char *g_ans;                   /* the watchdog's question: who answered (N) */
static MPI_Request g_gather[DIST_MAX_GATHERS];
static MPI_Datatype g_unit = MPI_DATATYPE_NULL;
static int *g_gcounts; /* per gather: counts and displacements in units (2 x N ints) */
/* the overlapped sums (dist_sum_f32_start) */
typedef struct osum {
    float *x, *recv;
    int phase; /* 1: slices moving to their summers; 3: they arrived, the second half waits for
                  the earlier segments' to start; 2: sums moving back; 0: done */
    MPI_Request rq;
    int *cnt; /* cnt, off, rcnt, roff: 4 x N ints */
} osum;
/* Nonblocking collectives must start in the same order on every rank, per communicator: the
 * first halves start in backward's layer order, the second halves as the first ones complete,
 * which interleaves with them differently on each rank; so each half has a communicator of its
 * own, and the second halves start in segment order (g_os_next2). */
static MPI_Comm g_red = MPI_COMM_NULL, g_red2 = MPI_COMM_NULL;
static int g_os_next2;
static osum *g_os;
static int g_os_cap, g_os_n;
static float *g_os_arena;
static size_t g_os_arena_n, g_os_used;
static double g_os_t0, g_os_t1;
#endif

#ifdef FT_HAVE_MPI
static void wait_req(MPI_Request *r);

/* Monotonic seconds, for the collectives' timeouts and overlap accounting (MPI builds only). */
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
#endif

void dist_set_timeout(double seconds) { g_timeout = seconds > 0 ? seconds : 0; }
void dist_set_resume_hint(const char *cmd) {
    snprintf(g_resume, sizeof g_resume, "%s", cmd ? cmd : "");
}

size_t dist_slice_begin(size_t bytes, int j) {
    size_t units = bytes / DIST_UNIT;
    return units * (size_t)j / (size_t)g_size * DIST_UNIT;
}

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
        g_counts = malloc(sizeof(int) * 4 * (size_t)g_size);
        g_gcounts = malloc(sizeof(int) * 2 * DIST_MAX_GATHERS * (size_t)g_size);
        g_hosts = calloc((size_t)g_size, sizeof *g_hosts);
        g_ans = calloc((size_t)g_size, 1);
        if (!g_counts || !g_gcounts || !g_hosts || !g_ans)
            return ft_error_set(err, FT_ERR_RUNTIME, NULL, NULL, "out of memory");
        for (int i = 0; i < DIST_MAX_GATHERS; i++)
            g_gather[i] = MPI_REQUEST_NULL;
        MPI_Comm_dup(MPI_COMM_WORLD, &g_wd);
        MPI_Type_contiguous(DIST_UNIT, MPI_BYTE, &g_unit);
        MPI_Type_commit(&g_unit);
        char me[64];
        snprintf(me, sizeof me, "%.63s", g_host);
        MPI_Allgather(me, 64, MPI_CHAR, g_hosts, 64, MPI_CHAR, MPI_COMM_WORLD);
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
    if (g_mpi && MPI_Finalized(&done) == MPI_SUCCESS && !done) {
        for (int i = 0; i < DIST_MAX_GATHERS; i++)
            if (g_gather[i] != MPI_REQUEST_NULL) MPI_Wait(&g_gather[i], MPI_STATUS_IGNORE);
        /* every rank here: no question can come any more; answer those that came late */
        MPI_Request rq;
        MPI_Ibarrier(MPI_COMM_WORLD, &rq);
        wait_req(&rq);
        dist_poll();
        MPI_Finalize();
    }
    free(g_scratch);
    free(g_counts);
    free(g_gcounts);
    free(g_hosts);
    free(g_ans);
    g_ans = NULL;
    if (g_os) free(g_os[0].cnt);
    free(g_os);
    free(g_os_arena);
    g_os = NULL, g_os_arena = NULL, g_os_cap = g_os_n = 0;
    g_scratch = NULL, g_scratch_bytes = 0, g_counts = NULL, g_gcounts = NULL, g_hosts = NULL;
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
const char *dist_host_of(int j) {
#ifdef FT_HAVE_MPI
    if (g_hosts && j >= 0 && j < g_size && g_hosts[j][0]) return g_hosts[j];
#endif
    return j == g_rank ? dist_host() : "?";
}

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

enum { TAG_ASK = 1, TAG_ANSWER = 2 };
static char *g_answered; /* during a question: which ranks answered it */
static int g_ask_seq;    /* the number of this rank's latest question */

void dist_poll(void) {
    if (g_size == 1 || g_wd == MPI_COMM_NULL) return;
    for (;;) {
        int any = 0;
        MPI_Status stt;
        MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, g_wd, &any, &stt);
        if (!any) return;
        int seq;
        MPI_Recv(&seq, 1, MPI_INT, stt.MPI_SOURCE, stt.MPI_TAG, g_wd, MPI_STATUS_IGNORE);
        if (stt.MPI_TAG == TAG_ASK) { /* "are you alive?": yes (an eager, small message) */
            MPI_Request r;
            static int answer[1024]; /* one per asker: its send may still be in flight */
            int *a = &answer[stt.MPI_SOURCE % 1024];
            *a = seq;
            MPI_Isend(a, 1, MPI_INT, stt.MPI_SOURCE, TAG_ANSWER, g_wd, &r);
            MPI_Request_free(&r);
        }
        /* answers outside a question are late ones: dropped (dist_wait reads its own) */
        else if (g_answered && seq == g_ask_seq)
            g_answered[stt.MPI_SOURCE] = 1;
    }
}

static void sleep_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* The watchdog found ranks that do not answer: name them, say how to resume, stop the job. The
 * lowest rank that is alive prints; the others give it a moment to do so before aborting. */
static void hung(const char *answered, double waited) {
    int printer = 0;
    while (printer < g_size && !answered[printer])
        printer++;
    if (printer == g_rank) {
        char who[1024] = "";
        size_t n = 0;
        int cnt = 0;
        for (int j = 0; j < g_size && n < sizeof who - 100; j++)
            if (!answered[j])
                n += (size_t)snprintf(who + n, sizeof who - n, "%srank %d (%s)", cnt++ ? ", " : "",
                                      j, dist_host_of(j));
        fprintf(stderr,
                "ftune: error: %s %s not answered for %.0f s (stopped, hung, or its network is "
                "down); stopping all ranks (--dist-timeout %g)\n",
                who, cnt > 1 ? "have" : "has", waited, g_timeout);
        if (g_resume[0])
            fprintf(stderr, "ftune: the last complete checkpoint is intact; resume with: %s\n",
                    g_resume);
        fflush(stderr);
    } else {
        sleep_us(3000000);
    }
    MPI_Abort(MPI_COMM_WORLD, 1);
}

/* Wait for r, polling it: answers the others' questions meanwhile, and after g_timeout seconds
 * asks them whether they are alive (see dist.h). Sleeps between polls so that waiting ranks
 * leave the cores to the ones still computing. */
static void wait_req(MPI_Request *r) {
    if (*r == MPI_REQUEST_NULL) return;
    double t0 = now_s(), deadline = t0 + (g_timeout > 0 ? g_timeout : 1e30);
    int asked = 0, polls = 0;
    char *answered = g_ans;
    for (;;) {
        int done = 0;
        MPI_Test(r, &done, MPI_STATUS_IGNORE);
        if (done) break;
        dist_poll();
        double t = now_s();
        if (asked) {
            int all = 1;
            for (int j = 0; j < g_size; j++)
                all &= answered[j];
            if (all) { /* everyone is alive, only slow: wait on */
                asked = 0, g_answered = NULL;
                deadline = t + g_timeout;
            } else if (t > deadline) {
                g_answered = NULL;
                hung(answered, t - t0);
            }
        } else if (t > deadline) {
            memset(answered, 0, (size_t)g_size);
            answered[g_rank] = 1;
            g_answered = answered;
            static int q;
            q = ++g_ask_seq;
            for (int j = 0; j < g_size; j++)
                if (j != g_rank) {
                    MPI_Request a;
                    MPI_Isend(&q, 1, MPI_INT, j, TAG_ASK, g_wd, &a);
                    MPI_Request_free(&a);
                }
            asked = 1, deadline = t + g_timeout;
        }
        if (++polls > 200) sleep_us(polls > 2000 ? 1000 : 100);
    }
    g_answered = NULL;
}

static void slices(size_t n, int *cnt, int *off);

/* ---- overlapped sums (dist.h) ---- */

ft_status dist_reserve_overlap(int segments, size_t floats, ft_error *err) {
    if (g_size == 1) return FT_OK;
    if (g_red == MPI_COMM_NULL) MPI_Comm_dup(MPI_COMM_WORLD, &g_red);
    if (g_red2 == MPI_COMM_NULL) MPI_Comm_dup(MPI_COMM_WORLD, &g_red2);
    size_t need = floats + (size_t)(segments + 1) * ((size_t)g_size + 1);
    free(g_os), free(g_os_arena);
    g_os = calloc((size_t)segments, sizeof *g_os);
    int *ints = malloc(sizeof(int) * 4 * (size_t)g_size * (size_t)segments);
    g_os_arena = malloc(need * sizeof(float));
    if (!g_os || !ints || !g_os_arena) {
        free(ints);
        return ft_error_set(err, FT_ERR_RUNTIME, NULL, NULL,
                            "out of memory for the gradient reduction");
    }
    for (int i = 0; i < segments; i++)
        g_os[i].cnt = ints + (size_t)i * 4 * g_size;
    g_os_cap = segments, g_os_arena_n = need, g_os_n = 0, g_os_used = 0;
    return FT_OK;
}

/* Phase 1 done: add the received slices in rank order, start phase 2. */
static void osum_second(osum *o) {
    int *cnt = o->cnt, *off = cnt + g_size;
    int mine = cnt[g_rank];
    float *out = o->x + off[g_rank];
    for (int e = 0; e < mine; e++) {
        float s = o->recv[e];
        for (int i = 1; i < g_size; i++)
            s += o->recv[(size_t)i * mine + e];
        out[e] = s;
    }
    MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, o->x, cnt, off, MPI_FLOAT, g_red2, &o->rq);
    o->phase = 2;
    g_os_next2++;
}

static void osum_test(void) {
    for (int i = 0; i < g_os_n; i++) {
        osum *o = &g_os[i];
        if (o->phase == 3 && i == g_os_next2) { /* first half done earlier: its turn now */
            osum_second(o);
            continue;
        }
        if (o->phase != 1 && o->phase != 2) continue;
        int done = 0;
        MPI_Test(&o->rq, &done, MPI_STATUS_IGNORE);
        if (!done) continue;
        if (o->phase == 1) {
            if (i == g_os_next2)
                osum_second(o);
            else
                o->phase = 3; /* complete; its second half waits for the earlier segments' */
        } else {
            o->phase = 0, g_os_t1 = now_s();
        }
    }
}

void dist_sum_f32_start(float *x, size_t n) {
    if (g_size == 1) return;
    if (g_os_n == g_os_cap) { /* a bug: more segments than reserved */
        fprintf(stderr, "ftune: error: rank %d: too many gradient segments\n", g_rank);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (g_os_n == 0) g_os_t0 = now_s(), g_os_used = 0, g_os_next2 = 0;
    osum *o = &g_os[g_os_n++];
    int *cnt = o->cnt, *off = cnt + g_size, *rcnt = off + g_size, *roff = rcnt + g_size;
    slices(n, cnt, off);
    int mine = cnt[g_rank];
    for (int i = 0; i < g_size; i++)
        rcnt[i] = mine, roff[i] = i * mine;
    o->x = x, o->recv = g_os_arena + g_os_used;
    g_os_used += (size_t)mine * g_size + 1;
    MPI_Ialltoallv(x, cnt, off, MPI_FLOAT, o->recv, rcnt, roff, MPI_FLOAT, g_red, &o->rq);
    o->phase = 1;
}

void dist_sum_f32_finish(double *wait_s, double *comm_s) {
    double t = now_s();
    if (g_size > 1) {
        for (int i = g_os_next2; i < g_os_n; i++) {
            osum *o = &g_os[i];
            if (o->phase == 1) wait_req(&o->rq);
            osum_second(o);
        }
        for (int i = 0; i < g_os_n; i++)
            if (g_os[i].phase == 2) wait_req(&g_os[i].rq), g_os[i].phase = 0;
        g_os_t1 = g_os_n ? now_s() : t;
    }
    if (wait_s) *wait_s = now_s() - t;
    if (comm_s) *comm_s = g_size > 1 && g_os_n ? g_os_t1 - g_os_t0 : 0;
    g_os_n = 0;
}

void dist_progress(void) {
    if (g_size == 1) return;
    if (g_os_n) osum_test();
    for (int i = 0; i < DIST_MAX_GATHERS; i++)
        if (g_gather[i] != MPI_REQUEST_NULL) {
            int done;
            MPI_Test(&g_gather[i], &done, MPI_STATUS_IGNORE);
        }
    dist_poll();
}

int dist_gather_start(void *buf, size_t bytes, const void *mine) {
    size_t a = dist_slice_begin(bytes, g_rank), b = dist_slice_begin(bytes, g_rank + 1);
    if (b > a && mine) memcpy((char *)buf + a, mine, b - a);
    if (g_size == 1) return -1;
    int h = 0;
    while (h < DIST_MAX_GATHERS && g_gather[h] != MPI_REQUEST_NULL)
        h++;
    if (h == DIST_MAX_GATHERS) { /* a bug: more in flight than the callers keep */
        fprintf(stderr, "ftune: error: rank %d: too many all-gathers in flight\n", g_rank);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    int *cnt = g_gcounts + (size_t)h * 2 * g_size, *off = cnt + g_size;
    for (int j = 0; j < g_size; j++) {
        size_t s0 = dist_slice_begin(bytes, j) / DIST_UNIT,
               s1 = dist_slice_begin(bytes, j + 1) / DIST_UNIT;
        off[j] = (int)s0, cnt[j] = (int)(s1 - s0);
    }
    MPI_Iallgatherv(MPI_IN_PLACE, 0, g_unit, buf, cnt, off, g_unit, MPI_COMM_WORLD, &g_gather[h]);
    return h;
}

void dist_gather_wait(int h, double *waited) {
    if (h < 0 || h >= DIST_MAX_GATHERS) return;
    double t0 = now_s();
    wait_req(&g_gather[h]);
    if (waited) *waited += now_s() - t0;
}

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
        MPI_Request rq_;                                                                           \
        MPI_Ialltoallv(x, cnt, off, MPI_T, recv, rcnt, roff, MPI_T, MPI_COMM_WORLD, &rq_);         \
        wait_req(&rq_);                                                                            \
        T *out = x + off[g_rank];                                                                  \
        for (int e = 0; e < mine; e++) {                                                           \
            T s = recv[e];                                                                         \
            for (int i = 1; i < g_size; i++)                                                       \
                s += recv[(size_t)i * mine + e];                                                   \
            out[e] = s;                                                                            \
        }                                                                                          \
        MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_T, x, cnt, off, MPI_T, MPI_COMM_WORLD, &rq_);         \
        wait_req(&rq_);                                                                            \
    }
DEFINE_SUM(dist_sum_f32, float, MPI_FLOAT)
DEFINE_SUM(dist_sum_f64, double, MPI_DOUBLE)

void dist_bcast(void *buf, size_t n) {
    if (g_size == 1) return;
    for (size_t done = 0; done < n;) { /* MPI counts are ints */
        size_t k = n - done < (1u << 30) ? n - done : (1u << 30);
        MPI_Request rq;
        MPI_Ibcast((char *)buf + done, (int)k, MPI_BYTE, 0, MPI_COMM_WORLD, &rq);
        wait_req(&rq);
        done += k;
    }
}

long dist_max(long v, int *who) {
    if (who) *who = g_rank;
    if (g_size == 1) return v;
    long m = v;
    MPI_Request rq;
    MPI_Iallreduce(&v, &m, 1, MPI_LONG, MPI_MAX, MPI_COMM_WORLD, &rq);
    wait_req(&rq);
    if (who) {
        int me = v == m ? g_rank : g_size, w = me;
        MPI_Iallreduce(&me, &w, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD, &rq);
        wait_req(&rq);
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
    MPI_Request rq;
    MPI_Ibcast(&rec, (int)sizeof rec, MPI_BYTE, who, MPI_COMM_WORLD, &rq);
    wait_req(&rq);
    char host[256] = "";
    snprintf(host, sizeof host, "%s", dist_host_of(who));
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
ft_status dist_reserve_overlap(int segments, size_t floats, ft_error *err) {
    (void)segments, (void)floats, (void)err;
    return FT_OK;
}
void dist_sum_f32_start(float *x, size_t n) { (void)x, (void)n; }
void dist_sum_f32_finish(double *wait_s, double *comm_s) {
    if (wait_s) *wait_s = 0;
    if (comm_s) *comm_s = 0;
}
void dist_poll(void) {}
void dist_progress(void) {}
int dist_gather_start(void *buf, size_t bytes, const void *mine) {
    if (mine && bytes) memcpy(buf, mine, bytes);
    return -1;
}
void dist_gather_wait(int h, double *waited) { (void)h, (void)waited; }
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
