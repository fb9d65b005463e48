/*
 * dist.h: the processes of a data-parallel run (`mpirun -np N ftune train ...`): who am I, how
 * many are we, and the few collective operations training needs, each with a fixed order of
 * arithmetic so that a run is bit-reproducible for a given N (docs/distributed.md).
 *
 * Built with MPI (FT_HAVE_MPI, from the Makefile when Open MPI's mpicc wrapper is found), dist
 * joins the job only when a launcher started the process (mpirun sets OMPI_COMM_WORLD_SIZE /
 * PMIX_RANK); started alone, or built without MPI, it is one process of one rank and every
 * collective is an identity that does no work, so the one-process path is untouched.
 *
 * The sums never use MPI_Allreduce's arithmetic (Open MPI may change its order with the
 * algorithm it picks): the vector is cut into N slices, rank j receives slice j of every rank
 * (MPI_Alltoallv, data movement only), adds them in rank order 0, 1, ..., N-1, and the summed
 * slices are gathered back to every rank (MPI_Allgatherv). Every element is therefore
 * ((x_0 + x_1) + x_2) + ... in its own type, whatever N and whatever the network.
 */
#ifndef FT_DIST_DIST_H
#define FT_DIST_DIST_H

#include "ftune.h"

#include <stddef.h>

/* Join the job when started by mpirun (MPI build), else one rank of one. Fails (FT_ERR_INPUT)
 * when a launcher started several copies of a build without MPI. Call once, from the program. */
ft_status dist_init(int *argc, char ***argv, ft_error *err);
/* Leave the job (MPI_Finalize); safe to call when dist_init was not. */
void dist_finalize(void);

int dist_rank(void);
int dist_size(void);
/* How many ranks run on this host (Open MPI's OMPI_COMM_WORLD_LOCAL_SIZE; 1 alone). */
int dist_local_size(void);
/* "Open MPI 4.1.4" / "not built in": for ftune --version. */
const char *dist_describe(void);
/* This rank's host name (for messages). */
const char *dist_host(void);

/* Size the sums' scratch for vectors of up to `bytes`, so that no step allocates. */
ft_status dist_reserve(size_t bytes, ft_error *err);
/* In place on every rank: x = x_0 + x_1 + ... + x_{N-1}, added in rank order (see above). */
void dist_sum_f32(float *x, size_t n);
void dist_sum_f64(double *x, size_t n);
/* Every rank gets rank 0's n bytes. */
void dist_bcast(void *buf, size_t n);
/* Every rank gets the largest of the ranks' v, and *who (if not NULL) the lowest rank that has
 * it (integers: exact in any order). */
long dist_max(long v, int *who);
/* Every rank returns the status of the lowest rank whose st is not FT_OK, with that rank's
 * error in *err (its "where" prefixed with "rank K (HOST)" when K is not 0); FT_OK when all
 * are. Every rank must call it at the same point. */
ft_status dist_agree(ft_status st, ft_error *err);

/* ---- the watchdog (docs/distributed.md, "Faults") ------------------------------------
 * Every wait for a collective polls it; after `seconds` without completion the waiting rank asks
 * every other rank whether it is alive (a small message on a communicator of its own, answered by
 * any rank that is waiting in a collective or calls dist_poll), and if one has not answered
 * `seconds` later it is named ("rank 1 (node2) has not answered for 20 s") with the resume
 * command, and the job is aborted (MPI_Abort, exit 1). 0: wait without a limit. */
void dist_set_timeout(double seconds);
/* The command that resumes the run (printed with the watchdog's message; NULL: none). */
void dist_set_resume_hint(const char *cmd);
/* Answer the other ranks' liveness questions; cheap (one probe). Long computations between
 * collectives (a layer, an evaluation batch) call it so that a busy rank is not taken for a hung
 * one. */
void dist_poll(void);
/* Rank j's host name (dist_host of that rank; "?" when unknown). */
const char *dist_host_of(int j);

/* ---- all-gathers of byte ranges (--shard-base) ---------------------------------------
 * A buffer of `bytes` (a multiple of DIST_UNIT) is cut in N slices of whole DIST_UNIT-byte
 * units, rank j's slice being [dist_slice_begin(bytes, j), dist_slice_begin(bytes, j + 1)). */
#define DIST_UNIT 64
size_t dist_slice_begin(size_t bytes, int j);
/* Start an all-gather into buf: every rank's slice of buf (this rank's filled from `mine`) is
 * copied to every rank. Returns a handle for dist_gather_wait (-1 when there is one rank: the
 * slice is just copied). At most DIST_MAX_GATHERS in flight. */
#define DIST_MAX_GATHERS 4
int dist_gather_start(void *buf, size_t bytes, const void *mine);
/* Wait for it (polled with the watchdog); adds the seconds waited to *waited when not NULL. */
void dist_gather_wait(int handle, double *waited);
/* ---- gradient sums overlapped with backward -------------------------------------------
 * dist_sum_f32_start starts the same fixed-order sum as dist_sum_f32 on one segment (a layer's
 * LoRA gradients) without waiting: its slices move while backward goes on to the layer below
 * (dist_progress adds each received slice in rank order as soon as it is complete and starts
 * the second half), and dist_sum_f32_finish waits for all started segments. Every element is
 * the same rank-order sum as dist_sum_f32 gives, bit for bit. Every rank must start the same
 * segments in the same order (a communicator of their own: other collectives may come in
 * between in another order). dist_reserve_overlap sizes the state for up to `segments` segments
 * of `floats` floats in all. */
ft_status dist_reserve_overlap(int segments, size_t floats, ft_error *err);
void dist_sum_f32_start(float *x, size_t n);
/* *wait_s: seconds blocked here; *comm_s: seconds from the first start to the last completion
 * (the communication's span, hidden behind backward except for wait_s). */
void dist_sum_f32_finish(double *wait_s, double *comm_s);

/* Drive the transfers in flight (Open MPI progresses them only inside MPI calls): a layer's
 * computation calls it between its matmuls. */
void dist_progress(void);

#endif
