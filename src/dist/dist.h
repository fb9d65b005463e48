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

#endif
