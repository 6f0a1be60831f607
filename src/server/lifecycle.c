/* lifecycle.c: the model's life in the server: preload, lazy load, loaded
 * exactly once, failures reported and retried.
 *
 * Purpose: hand worker threads the one shared read-only dm_model, loading
 * it on first need, and keep trying after a failure (a background thread
 * with capped exponential backoff, plus any request that needs the model)
 * so that fixing the file recovers the server without a restart.
 * Invariants: at most one load attempt runs at a time (lc->loading); once
 * lc->model is set it never changes or goes away before dm__lc_deinit;
 * lc->loads counts successful loads and is therefore 0 or 1.  Callers that
 * arrive while an attempt is running wait for it and share its outcome, so
 * N concurrent first requests cause one load, and N concurrent requests
 * against a broken file cause one failed attempt, not N.
 * Threading: everything under lc->mu; the slow dm_model_open runs outside
 * the mutex (so /health and /ready never wait on a load), announced by
 * lc->loading and finished with a broadcast on lc->cv.  pthread_once is not
 * used because a failed load must stay retryable. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"

void dm__lc_init(dm__lifecycle *lc, const char *path, const dm_model_opts *o,
                 int retry_base_ms, int retry_max_ms) {
  memset(lc, 0, sizeof *lc);
  pthread_mutex_init(&lc->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&lc->cv, &ca);
  pthread_condattr_destroy(&ca);
  lc->path = path;
  lc->opts = *o;
  lc->retry_base_ms = retry_base_ms > 0 ? retry_base_ms : 1000;
  lc->retry_max_ms =
      retry_max_ms >= lc->retry_base_ms ? retry_max_ms : lc->retry_base_ms;
}

/* One attempt, called with mu held and !loading && !model; returns with mu
 * held. */
static void attempt_locked(dm__lifecycle *lc) {
  lc->loading = true;
  lc->attempts++;
  pthread_mutex_unlock(&lc->mu);

  dm_errbuf eb = {{0}};
  dm_model *m = NULL;
  double t0 = dm__now_ms();
  dm_err rc = dm_model_open(lc->path, &lc->opts, &m, &eb);
  double ms = dm__now_ms() - t0;
  if (rc)
    dm__log(DM__LOG_ERROR, "model load failed after %.1f ms: %s%s%s (%s)", ms,
            strncmp(eb.msg, lc->path, strlen(lc->path)) ? lc->path : "",
            strncmp(eb.msg, lc->path, strlen(lc->path)) ? ": " : "", eb.msg,
            dm_strerror(rc));
  else
    dm__log(DM__LOG_INFO, "model loaded in %.1f ms: %s (sha256 %.12s...)", ms,
            lc->path, dm_model_get_info(m)->sha256);
  size_t unfused =
      rc ? 0 : dm_engine_get_stats(dm_model_engine(m))->int8_unfused;
  if (unfused)
    dm__log(DM__LOG_WARN,
            "%zu int8 Conv/Gemm nodes of this quantized model run "
            "dequantized: this CPU has no VNNI and its int8 kernels would "
            "saturate; the fp32 model is faster here (docs/quantization.md)",
            unfused);

  pthread_mutex_lock(&lc->mu);
  lc->loading = false;
  lc->attempts_done++;
  if (rc) {
    lc->failed = true;
    /* Truncation is fine here: it is a message for humans. */
    const char *why = eb.msg[0] ? eb.msg : dm_strerror(rc);
    bool named = strncmp(why, lc->path, strlen(lc->path)) == 0;
    if (snprintf(lc->last_error, sizeof lc->last_error, "%s%s%s",
                 named ? "" : lc->path, named ? "" : ": ",
                 why) >= (int)sizeof lc->last_error)
      lc->last_error[sizeof lc->last_error - 1] = 0;
  } else {
    lc->model = m;
    lc->loads++;
    lc->failed = false;
    lc->load_ms = ms;
    /* last_error is kept: it tells what went wrong before the recovery. */
  }
  pthread_cond_broadcast(&lc->cv);
}

dm_model *dm__lc_get(dm__lifecycle *lc, char *err, size_t errlen) {
  pthread_mutex_lock(&lc->mu);
  if (!lc->model) {
    if (lc->loading) {
      /* Share the running attempt's outcome. */
      uint64_t target = lc->attempts;
      while (lc->attempts_done < target)
        pthread_cond_wait(&lc->cv, &lc->mu);
    } else {
      attempt_locked(lc);
    }
  }
  dm_model *m = lc->model;
  if (m)
    dm_model_acquire(m);
  else if (err && errlen)
    snprintf(err, errlen, "%s", lc->last_error);
  pthread_mutex_unlock(&lc->mu);
  return m;
}

dm_model *dm__lc_peek(dm__lifecycle *lc) {
  pthread_mutex_lock(&lc->mu);
  dm_model *m = lc->model;
  if (m) dm_model_acquire(m);
  pthread_mutex_unlock(&lc->mu);
  return m;
}

static void *retry_main(void *arg) {
  dm__lifecycle *lc = arg;
  int delay = lc->retry_base_ms;
  pthread_mutex_lock(&lc->mu);
  while (!lc->stop && !lc->model) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += delay / 1000;
    ts.tv_nsec += (long)(delay % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    int r = 0;
    while (!lc->stop && !lc->model && r != ETIMEDOUT)
      r = pthread_cond_timedwait(&lc->cv, &lc->mu, &ts);
    if (lc->stop || lc->model) break;
    if (lc->loading) {
      /* A request is trying right now; its outcome counts as ours. */
      uint64_t target = lc->attempts;
      while (lc->attempts_done < target)
        pthread_cond_wait(&lc->cv, &lc->mu);
    } else {
      dm__log(DM__LOG_INFO, "retrying model load (backoff %d ms)", delay);
      attempt_locked(lc);
    }
    delay = delay > lc->retry_max_ms / 2 ? lc->retry_max_ms : delay * 2;
  }
  pthread_mutex_unlock(&lc->mu);
  return NULL;
}

void dm__lc_start_retry(dm__lifecycle *lc) {
  pthread_mutex_lock(&lc->mu);
  if (!lc->retry_started && !lc->model && !lc->stop) {
    if (pthread_create(&lc->retry_thread, NULL, retry_main, lc) == 0)
      lc->retry_started = true;
    else
      dm__log(DM__LOG_WARN, "cannot start the model retry thread; requests "
                            "will still retry the load");
  }
  pthread_mutex_unlock(&lc->mu);
}

void dm__lc_deinit(dm__lifecycle *lc) {
  pthread_mutex_lock(&lc->mu);
  lc->stop = true;
  pthread_cond_broadcast(&lc->cv);
  bool join = lc->retry_started;
  pthread_mutex_unlock(&lc->mu);
  if (join) pthread_join(lc->retry_thread, NULL);
  dm_model_release(lc->model);
  lc->model = NULL;
  pthread_cond_destroy(&lc->cv);
  pthread_mutex_destroy(&lc->mu);
}

void dm__lc_status_get(dm__lifecycle *lc, dm__lc_status *st) {
  memset(st, 0, sizeof *st);
  pthread_mutex_lock(&lc->mu);
  st->loaded = lc->model != NULL;
  st->loading = lc->loading;
  st->failed = lc->failed;
  st->loads = lc->loads;
  st->attempts = lc->attempts;
  st->load_ms = lc->load_ms;
  snprintf(st->last_error, sizeof st->last_error, "%s", lc->last_error);
  if (lc->model) {
    const dm_model_info *in = dm_model_get_info(lc->model);
    snprintf(st->sha256, sizeof st->sha256, "%s", in->sha256);
    snprintf(st->name, sizeof st->name, "%s", in->name ? in->name : "");
    snprintf(st->version, sizeof st->version, "%s",
             in->version ? in->version : "");
    snprintf(st->cam_target, sizeof st->cam_target, "%s",
             in->gradcam_target ? in->gradcam_target : "");
    const dm_engine *eng = dm_model_engine(lc->model);
    snprintf(st->backend, sizeof st->backend, "%s",
             dm_engine_backend_name(eng));
    snprintf(st->precision, sizeof st->precision, "%s",
             dm_engine_precision_name(eng));
    st->int8_ops = dm_engine_get_stats(eng)->int8_ops;
    st->int8_unfused = dm_engine_get_stats(eng)->int8_unfused;
  }
  pthread_mutex_unlock(&lc->mu);
}
