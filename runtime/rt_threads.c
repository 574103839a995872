/* rt_threads.c - the thread pool compiled code splits its large kernels over.
 *
 * One job at a time: dlrt_parallel_for posts (fn, arg, count), split into
 * contiguous ranges (a few per thread), and every thread that is awake (the
 * caller first) takes the next untaken range until none is left.  The
 * ranges are taken under the pool's lock, so no range runs twice and a job
 * cannot end while a range of it is running.  A worker out of work polls
 * for the next job for SPIN_NS (50 us), and the caller for its job's last
 * ranges, before they sleep on a condition variable: the kernels of a
 * training step come back to back, and waking a sleeping thread took 45 us
 * or more on the benchmark machine, as long as most of the kernels worth
 * sharing.  With the poll, LeNet-5's step on two threads took 0.93 ms
 * instead of 1.20 and the Transformer's 4.0 instead of 4.7.  The poll is
 * short on purpose: on a machine whose cores are shared, a spinning thread
 * takes a core from someone else (PyTorch's OpenMP threads, which spin far
 * longer, took up to 30 times longer on two threads than on one on the
 * benchmark machine).  Because the caller takes ranges too, a worker that
 * wakes late costs little: the caller has taken the ranges by then; and with
 * several ranges per thread, a worker that loses its core in the middle of
 * a job holds up only a small range.
 *
 * Which thread runs a range never changes what it computes, so compiled code
 * that writes each output element from exactly one index gives the same bits
 * for any number of threads.
 */
#include "rt_internal.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* How long a thread that ran out of work polls for more before it sleeps. */
#define SPIN_NS 50000

struct DlrtPool {
  int nthreads; /* the caller and nthreads - 1 workers */
  pthread_t *workers;
  pthread_mutex_t lock;
  pthread_cond_t work; /* a job was posted, or the pool stops */
  pthread_cond_t done; /* the job's last range finished */
  bool stop;
  bool busy; /* a job runs: a nested or concurrent call runs inline */
  /* The job. */
  DlrtTaskFn fn;
  void *arg;
  int64_t count;
  int nranges, next;
  _Atomic int finished;     /* written under the lock, polled without it */
  _Atomic unsigned job_seq; /* counts posted jobs: what idle workers poll */
};

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* Poll until done() or SPIN_NS have passed; true when done() held. */
static bool spin_until(bool (*done)(DlrtPool *, unsigned), DlrtPool *p, unsigned seen) {
  int64_t until = now_ns() + SPIN_NS;
  for (int i = 0;; i++) {
    if (done(p, seen)) return true;
    if ((i & 63) == 63 && now_ns() > until) return false;
    cpu_relax();
  }
}

static bool new_job(DlrtPool *p, unsigned seen) {
  return atomic_load_explicit(&p->job_seq, memory_order_acquire) != seen;
}

int dlrt_default_threads(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

/* Run ranges of the current job until none is left.  Called and returns
 * with the lock held. */
static void run_ranges(DlrtPool *p) {
  while (p->next < p->nranges) {
    int r = p->next++;
    DlrtTaskFn fn = p->fn;
    void *arg = p->arg;
    int64_t begin = p->count * r / p->nranges, end = p->count * (r + 1) / p->nranges;
    pthread_mutex_unlock(&p->lock);
    fn(arg, begin, end);
    pthread_mutex_lock(&p->lock);
    if (atomic_fetch_add(&p->finished, 1) + 1 == p->nranges) pthread_cond_signal(&p->done);
  }
}

static bool job_finished(DlrtPool *p, unsigned nranges) {
  return atomic_load_explicit(&p->finished, memory_order_acquire) == (int)nranges;
}

static void *worker_main(void *v) {
  DlrtPool *p = v;
  pthread_mutex_lock(&p->lock);
  for (;;) {
    if (!p->stop && p->next >= p->nranges) {
      /* Out of work: poll a little for the next job (kernels of a step
       * come back to back, and waking a sleeping thread took 45 us or more
       * on the benchmark machine), then sleep. */
      unsigned seen = atomic_load(&p->job_seq);
      pthread_mutex_unlock(&p->lock);
      spin_until(new_job, p, seen);
      pthread_mutex_lock(&p->lock);
      while (!p->stop && p->next >= p->nranges)
        pthread_cond_wait(&p->work, &p->lock);
    }
    if (p->stop) break;
    run_ranges(p);
  }
  pthread_mutex_unlock(&p->lock);
  return NULL;
}

static void stop_workers(DlrtPool *p, int started) {
  pthread_mutex_lock(&p->lock);
  p->stop = true;
  pthread_cond_broadcast(&p->work);
  pthread_mutex_unlock(&p->lock);
  for (int i = 0; i < started; i++)
    pthread_join(p->workers[i], NULL);
}

DlrtPool *dlrt_pool_new(int threads, DlrtError *err) {
  if (threads <= 0) threads = dlrt_default_threads();
  DlrtPool *p = calloc(1, sizeof *p);
  if (!p || !(p->workers = calloc((size_t)threads, sizeof(pthread_t)))) {
    free(p);
    dlrt_fail(err, "out of memory for a pool of %d threads", threads);
    return NULL;
  }
  p->nthreads = threads;
  pthread_mutex_init(&p->lock, NULL);
  pthread_cond_init(&p->work, NULL);
  pthread_cond_init(&p->done, NULL);
  for (int i = 0; i < threads - 1; i++) {
    int rc = pthread_create(&p->workers[i], NULL, worker_main, p);
    if (rc != 0) {
      stop_workers(p, i);
      dlrt_fail(err, "cannot start thread %d of %d: %s", i + 2, threads, strerror(rc));
      pthread_cond_destroy(&p->done);
      pthread_cond_destroy(&p->work);
      pthread_mutex_destroy(&p->lock);
      free(p->workers);
      free(p);
      return NULL;
    }
  }
  return p;
}

void dlrt_pool_free(DlrtPool *p) {
  if (!p) return;
  stop_workers(p, p->nthreads - 1);
  pthread_cond_destroy(&p->done);
  pthread_cond_destroy(&p->work);
  pthread_mutex_destroy(&p->lock);
  free(p->workers);
  free(p);
}

int dlrt_pool_threads(const DlrtPool *p) {
  return p ? p->nthreads : 1;
}

void dlrt_parallel_for(DlrtPool *p, int64_t count, int32_t per_thread, DlrtTaskFn fn, void *arg) {
  if (count <= 0) return;
  if (!p || p->nthreads <= 1 || count < 2) {
    fn(arg, 0, count);
    return;
  }
  pthread_mutex_lock(&p->lock);
  if (p->busy) {
    pthread_mutex_unlock(&p->lock);
    fn(arg, 0, count);
    return;
  }
  p->busy = true;
  p->fn = fn;
  p->arg = arg;
  p->count = count;
  int64_t want = (int64_t)p->nthreads * (per_thread < 1 ? 1 : per_thread);
  p->nranges = count < want ? (int)count : (int)want;
  p->next = 0;
  atomic_store(&p->finished, 0);
  atomic_fetch_add_explicit(&p->job_seq, 1, memory_order_release);
  /* Wake as many workers as there are ranges besides the caller's. */
  if (p->nranges - 1 >= p->nthreads - 1)
    pthread_cond_broadcast(&p->work);
  else
    for (int i = 0; i < p->nranges - 1; i++)
      pthread_cond_signal(&p->work);
  run_ranges(p);
  if (atomic_load(&p->finished) < p->nranges) {
    /* The last ranges run on workers: poll for them a little too. */
    unsigned nranges = (unsigned)p->nranges;
    pthread_mutex_unlock(&p->lock);
    spin_until(job_finished, p, nranges);
    pthread_mutex_lock(&p->lock);
  }
  while (atomic_load(&p->finished) < p->nranges)
    pthread_cond_wait(&p->done, &p->lock);
  p->busy = false;
  pthread_mutex_unlock(&p->lock);
}
