/* Heli's thread pool: the one parallel runtime of the cpu target's SGEMM
 * library and generated kernels (see threadpool.h for the API).
 *
 * Why not OpenMP: every OpenMP parallel region ends in a barrier that waits
 * for all its threads.  On a machine shared with other processes, a worker
 * whose core is taken arrives a scheduler slice late (milliseconds), and an
 * inference runs a hundred regions: MobileNetV2 at 2 threads swung between
 * 12 and 400 ms a run.  Here the caller claims tasks from an atomic counter
 * like any worker, and at the end waits only for tasks that a worker has
 * claimed and is running; a worker that has not started by then finds no
 * task left.  Jobs are cut into more tasks than threads (by their size, not
 * by the thread count), so a late worker still takes its share of the rest.
 *
 * * Workers are started on first use, up to the largest nthreads - 1 asked
 *   for; a job uses at most nthreads - 1 of them (tickets, below).
 * * An idle worker spins for HELI_SPIN_US microseconds (default 100: the gap
 *   between two kernels of one inference), then sleeps on a futex.
 * * One job at a time: a call made while another thread's job holds the
 *   pool, or from inside a task, runs its tasks serially on its own thread.
 * * fork: a child starts with no workers and a fresh pool (pthread_atfork).
 *
 * Memory ordering.  `state` packs the job's generation (high 32 bits) and its
 * next unclaimed task (low 32 bits).  The caller writes the job (fn, ctx,
 * ntasks), then publishes it with a release store of state = (gen, 0).  A
 * worker reads state (acquire), the job, then claims task i with a CAS of
 * (gen, i) -> (gen, i + 1): the CAS fails if a newer job replaced it, and a
 * newer job's fields are only written after every task of the old one ran,
 * so a successful claim always runs the job it read.  `finished` counts the
 * tasks done; the caller waits for it to reach ntasks.
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

#define HELI_EXPORT __attribute__((visibility("default")))
#define MAX_WORKERS 255

typedef void (*heli_task_fn)(void *ctx, long task);

/* ------------------------------------------------------------- waiting */

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void futex_wait(_Atomic uint32_t *addr, uint32_t expected) {
#ifdef __linux__
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
#else
    (void)addr;
    (void)expected;
    struct timespec ts = {0, 50000};
    nanosleep(&ts, NULL);
#endif
}

static void futex_wake(_Atomic uint32_t *addr, int count) {
#ifdef __linux__
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0);
#else
    (void)addr;
    (void)count;
#endif
}

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---------------------------------------------------------------- state */

/* Hot words on their own cache lines. */
static alignas(64) _Atomic uint64_t state;      /* gen << 32 | next task */
static alignas(64) _Atomic uint32_t finished;   /* tasks of the job done */
static alignas(64) _Atomic uint64_t tickets;    /* gen << 32 | worker places left */
static alignas(64) _Atomic uint32_t wake_seq;   /* bumped per job: idle workers wait on it */
static _Atomic int sleepers;                    /* workers asleep on wake_seq */
static _Atomic uint32_t caller_waiting;         /* the caller sleeps on `finished` */
static _Atomic(heli_task_fn) job_fn;
static _Atomic(void *) job_ctx;
static _Atomic long job_ntasks;
/* Statistics (heli_pool_stats). */
static _Atomic long stat_jobs, stat_worker_tasks;

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER; /* one job at a time */
static int nworkers;   /* started (under pool_lock) */
static uint32_t gen;   /* of the last job (under pool_lock) */
static long spin_ns = -1;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static _Thread_local int in_task; /* this thread is running a task */

static void after_fork_in_child(void) {
    /* Only the forking thread exists in the child: forget the workers. */
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    pool_lock = fresh;
    nworkers = 0;
    atomic_store(&state, (uint64_t)gen << 32 | 0xffffffffu);
    atomic_store(&tickets, (uint64_t)gen << 32);
    atomic_store(&finished, 0);
    atomic_store(&sleepers, 0);
    atomic_store(&caller_waiting, 0);
}

static void init_once(void) {
    const char *env = getenv("HELI_SPIN_US");
    long us = 100;
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (*end == '\0' && v >= 0) us = v;
    }
    spin_ns = us * 1000;
    atomic_store(&state, 0xffffffffu); /* gen 0: no task to claim */
    pthread_atfork(NULL, NULL, after_fork_in_child);
}

/* Claim and run tasks of job `g` (whose fn, ctx and ntasks the caller read
 * after seeing g in state) until none is left.  Returns the tasks it ran. */
static long run_tasks(uint32_t g, heli_task_fn fn, void *ctx, long n) {
    long ran = 0;
    uint64_t s = atomic_load_explicit(&state, memory_order_acquire);
    for (;;) {
        if ((uint32_t)(s >> 32) != g || (long)(uint32_t)s >= n) return ran;
        if (!atomic_compare_exchange_weak_explicit(&state, &s, s + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        in_task = 1;
        fn(ctx, (long)(uint32_t)s);
        in_task = 0;
        ran++;
        /* seq_cst with the caller's store of caller_waiting (a Dekker pair). */
        if (atomic_fetch_add(&finished, 1) + 1 == (uint32_t)n && atomic_load(&caller_waiting))
            futex_wake(&finished, 1);
        s = atomic_load_explicit(&state, memory_order_acquire);
    }
}

/* A worker joins the current job if it still has a place for one. */
static void join_job(void) {
    const uint64_t s = atomic_load_explicit(&state, memory_order_acquire);
    const uint32_t g = (uint32_t)(s >> 32);
    uint64_t t = atomic_load(&tickets);
    for (;;) {
        if ((uint32_t)(t >> 32) != g || (uint32_t)t == 0) return;
        if (atomic_compare_exchange_weak(&tickets, &t, t - 1)) break;
    }
    heli_task_fn fn = atomic_load_explicit(&job_fn, memory_order_relaxed);
    void *ctx = atomic_load_explicit(&job_ctx, memory_order_relaxed);
    const long n = atomic_load_explicit(&job_ntasks, memory_order_relaxed);
    long ran = run_tasks(g, fn, ctx, n);
    if (ran) atomic_fetch_add_explicit(&stat_worker_tasks, ran, memory_order_relaxed);
}

static void *worker_main(void *arg) {
    (void)arg;
    for (;;) {
        const uint32_t seq = atomic_load(&wake_seq);
        join_job(); /* the job published before seq, if any place is left */
        /* Spin a while for the next job, then sleep until one is published. */
        const uint64_t deadline = now_ns() + (uint64_t)spin_ns;
        int next = 0;
        for (unsigned i = 1; !next; i++) {
            if (atomic_load_explicit(&wake_seq, memory_order_relaxed) != seq) next = 1;
            else if (i % 64 == 0 && now_ns() >= deadline) break;
            else cpu_relax();
        }
        if (next) continue;
        atomic_fetch_add(&sleepers, 1);
        while (atomic_load(&wake_seq) == seq) futex_wait(&wake_seq, seq);
        atomic_fetch_sub(&sleepers, 1);
    }
    return NULL;
}

/* Start workers up to `want` (under pool_lock); returns how many exist. */
static int ensure_workers(int want) {
    if (want > MAX_WORKERS) want = MAX_WORKERS;
    if (nworkers >= want) return nworkers;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* workers take no signals */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    while (nworkers < want) {
        pthread_t thread;
        if (pthread_create(&thread, &attr, worker_main, NULL) != 0) break;
        nworkers++;
    }
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return nworkers;
}

static void run_serial(long ntasks, heli_task_fn fn, void *ctx) {
    for (long i = 0; i < ntasks; i++) fn(ctx, i);
}

HELI_EXPORT void heli_parallel(long ntasks, heli_task_fn fn, void *ctx, int nthreads) {
    if (ntasks <= 0) return;
    long helpers = (long)nthreads - 1;
    if (helpers > ntasks - 1) helpers = ntasks - 1;
    if (helpers <= 0 || in_task || ntasks > (long)UINT32_MAX / 2) {
        run_serial(ntasks, fn, ctx);
        return;
    }
    pthread_once(&once, init_once);
    if (pthread_mutex_trylock(&pool_lock) != 0) { /* another thread's job holds the pool */
        run_serial(ntasks, fn, ctx);
        return;
    }
    const int have = ensure_workers((int)helpers);
    if (have < helpers) helpers = have;
    if (helpers <= 0) {
        pthread_mutex_unlock(&pool_lock);
        run_serial(ntasks, fn, ctx);
        return;
    }
    const uint32_t g = ++gen;
    atomic_store_explicit(&job_fn, fn, memory_order_relaxed);
    atomic_store_explicit(&job_ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&job_ntasks, ntasks, memory_order_relaxed);
    atomic_store_explicit(&finished, 0, memory_order_relaxed);
    atomic_store(&tickets, (uint64_t)g << 32 | (uint32_t)helpers);
    atomic_store_explicit(&state, (uint64_t)g << 32, memory_order_release);
    atomic_fetch_add(&wake_seq, 1);
    const int asleep = atomic_load(&sleepers);
    if (asleep > 0) futex_wake(&wake_seq, asleep < helpers ? asleep : (int)helpers);
    atomic_fetch_add_explicit(&stat_jobs, 1, memory_order_relaxed);

    run_tasks(g, fn, ctx, ntasks);

    /* Every task is claimed: wait for the ones workers are still running. */
    uint32_t f = atomic_load(&finished);
    if (f != (uint32_t)ntasks) {
        const uint64_t deadline = now_ns() + 50000;
        for (unsigned i = 1; (f = atomic_load(&finished)) != (uint32_t)ntasks; i++) {
            if (i % 64 == 0 && now_ns() >= deadline) break;
            cpu_relax();
        }
        if (f != (uint32_t)ntasks) {
            atomic_store(&caller_waiting, 1);
            while ((f = atomic_load(&finished)) != (uint32_t)ntasks) futex_wait(&finished, f);
            atomic_store(&caller_waiting, 0);
        }
    }
    pthread_mutex_unlock(&pool_lock);
}

/* out[0..2] = workers started, jobs run on the pool, tasks run by workers. */
HELI_EXPORT void heli_pool_stats(long *out) {
    pthread_mutex_lock(&pool_lock);
    out[0] = nworkers;
    pthread_mutex_unlock(&pool_lock);
    out[1] = atomic_load(&stat_jobs);
    out[2] = atomic_load(&stat_worker_tasks);
}
