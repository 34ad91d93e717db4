/* The API of Heli's thread pool (kernels/threadpool.c), for the code that
 * calls it: the SGEMM library and the generated kernels.  The toolchain puts
 * this text in front of their source, and builds threadpool.c once as a
 * shared library loaded with RTLD_GLOBAL before any kernel library, so that
 * every library of the process shares one pool.  heli/kernel/_render.py's
 * C prelude declares the same function (keep the two in step). */
#ifndef HELI_THREADPOOL_H
#define HELI_THREADPOOL_H

/* One task of a parallel job: fn(ctx, task) for task in [0, ntasks). */
typedef void (*heli_task_fn)(void *ctx, long task);

/* Run fn(ctx, 0) ... fn(ctx, ntasks - 1) on the calling thread and at most
 * nthreads - 1 pool workers; returns when every task has run.  The caller
 * claims tasks itself and never waits for a worker that has not started
 * one, so a worker that wakes late (its core taken by another process)
 * costs nothing.  Tasks must not depend on which thread runs them, or on
 * how many do.  A call from inside a task, or while another thread's job
 * holds the pool, runs its tasks in order on the calling thread. */
void heli_parallel(long ntasks, heli_task_fn fn, void *ctx, int nthreads);

#endif
