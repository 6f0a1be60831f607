/* Private declarations shared by the files of src/server (dm__ names). */
#ifndef DERMAL_SERVER_INTERNAL_H
#define DERMAL_SERVER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dermal/model.h"
#include "dermal/server.h"

double dm__now_ms(void); /* CLOCK_MONOTONIC */

/* ---- logging (log.c) --------------------------------------------------- */
typedef enum { DM__LOG_INFO, DM__LOG_WARN, DM__LOG_ERROR } dm__log_level;
void dm__log_set_json(bool json);
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
void dm__log(dm__log_level lv, const char *fmt, ...);
/* One access line: request id, method, path, status, total ms. */
void dm__log_access(const char *id, const char *method, const char *path,
                    int status, double ms, size_t bytes_in);

/* ---- model lifecycle (lifecycle.c) ------------------------------------ */
typedef struct dm__lifecycle {
  pthread_mutex_t mu;
  pthread_cond_t cv;      /* load finished / stop requested */
  dm_model *model;        /* NULL until loaded; then never changes */
  bool loading;           /* an attempt is running (outside mu) */
  uint64_t attempts;      /* attempts started */
  uint64_t attempts_done; /* attempts finished */
  uint64_t loads;         /* successful loads: 0 or 1 */
  bool failed;            /* last finished attempt failed */
  char last_error[256];   /* "" when none */
  double load_ms;         /* of the successful load */
  const char *path;
  dm_model_opts opts;
  /* background retry (started after a failed preload) */
  bool retry_started, stop;
  pthread_t retry_thread;
  int retry_base_ms, retry_max_ms;
} dm__lifecycle;

void dm__lc_init(dm__lifecycle *lc, const char *path, const dm_model_opts *o,
                 int retry_base_ms, int retry_max_ms);
void dm__lc_deinit(dm__lifecycle *lc); /* stops the retry thread */
/* Returns the model with a reference the caller releases, loading it if
 * needed.  Concurrent callers share one attempt: a caller that finds an
 * attempt running waits for it and takes its outcome; so does a caller
 * whose own request arrived while that attempt ran.  NULL with err filled
 * when loading failed. */
dm_model *dm__lc_get(dm__lifecycle *lc, char *err, size_t errlen);
/* The model with a reference if loaded, else NULL; never loads. */
dm_model *dm__lc_peek(dm__lifecycle *lc);
/* Starts the capped-backoff retry thread (idempotent). */
void dm__lc_start_retry(dm__lifecycle *lc);

typedef struct dm__lc_status {
  bool loaded, loading, failed;
  uint64_t loads, attempts;
  double load_ms;
  char last_error[256];
  char sha256[65];
  char name[128], version[64];
  char cam_target[128];            /* Grad-CAM target tensor, "" when none */
  char backend[16], precision[16]; /* of the loaded engine */
  size_t int8_ops;                 /* its fused int8 ops (quantized model) */
  size_t int8_unfused;             /* its int8 ops run dequantized here */
} dm__lc_status;
void dm__lc_status_get(dm__lifecycle *lc, dm__lc_status *st);

/* ---- metrics (metrics.c) ---------------------------------------------- */
enum {
  DM__R_UPLOAD,
  DM__R_PREDICT,
  DM__R_HEALTH,
  DM__R_READY,
  DM__R_METRICS,
  DM__R_HISTORY,
  DM__R_PAGE,
  DM__R_OTHER,
  DM__R_COUNT
};
enum { DM__ST_COUNT = 16 };
enum {
  DM__H_DECODE,
  DM__H_PREPROCESS,
  DM__H_INFERENCE,
  DM__H_QUEUE,
  DM__H_REQUEST,
  DM__H_GRADCAM,
  DM__H_COUNT
};
enum { DM__NBUCKETS = 14 };

typedef struct dm__hist {
  atomic_uint_least64_t b[DM__NBUCKETS + 1]; /* last: +Inf */
  atomic_uint_least64_t sum_us, count;
} dm__hist;

typedef struct dm__metrics {
  atomic_uint_least64_t req[DM__R_COUNT][DM__ST_COUNT];
  atomic_uint_least64_t requests_total;
  atomic_uint_least64_t queue_rejected, memory_shed, gradcam_shed;
  atomic_int_least64_t in_flight;
  dm__hist h[DM__H_COUNT];
} dm__metrics;

const char *dm__route_name(int route);
void dm__metrics_request(dm__metrics *m, int route, int status);
void dm__hist_observe(dm__hist *h, double ms);
/* Appends the Prometheus text exposition to a malloc'd string. */
char *dm__metrics_render(dm__metrics *m, const dm__lc_status *lc, double rss_mb,
                         double peak_mb, int queued, int queue_cap,
                         double uptime_s);

/* RSS and peak RSS in MiB (/proc/self/statm, getrusage). */
double dm__rss_mb(void);
double dm__peak_rss_mb(void);

/* ---- the web page ------------------------------------------------------ */
/* src/server/assets/index.html, embedded by the Makefile ($(O)/gen/page.c);
 * NUL-terminated, dm__page_html_len excludes the NUL.  Read-only. */
extern const unsigned char dm__page_html[];
extern const size_t dm__page_html_len;

#endif
