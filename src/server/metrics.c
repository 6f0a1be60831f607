/* metrics.c: request counters, latency histograms, RSS, and their
 * Prometheus text exposition (GET /metrics).
 *
 * Purpose: the numbers an operator needs: requests by route and status,
 * per-stage latency (decode, preprocess, inference, queue wait, whole
 * request), model load seconds, RSS, in-flight requests, queue rejections.
 * Invariants: all counters are relaxed atomics (monotonic, never reset);
 * a scrape may see a histogram's count and buckets from slightly different
 * instants, which Prometheus tolerates.  Statuses outside the table are
 * counted as "other".
 * Threading: lock-free; any thread may observe or render. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "internal.h"

static const char *const ROUTES[DM__R_COUNT] = {
    "/upload",  "/api/v1/predict", "/health", "/ready",
    "/metrics", "/history",        "/",       "other"};
static const int STATUSES[DM__ST_COUNT] = {
    200, 400, 401, 403, 404, 405, 413,           415,
    422, 429, 431, 500, 501, 503, 0 /* other */, -1};
static const char *const HIST_NAMES[DM__H_COUNT] = {
    "decode", "preprocess", "inference", "queue", "request", "gradcam"};
/* Upper bounds in ms. */
static const double BUCKETS[DM__NBUCKETS] = {
    0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000};

const char *dm__route_name(int route) {
  return route >= 0 && route < DM__R_COUNT ? ROUTES[route] : "other";
}

static int status_index(int status) {
  for (int i = 0; i < DM__ST_COUNT - 2; i++)
    if (STATUSES[i] == status) return i;
  return DM__ST_COUNT - 2;
}

void dm__metrics_request(dm__metrics *m, int route, int status) {
  if (route < 0 || route >= DM__R_COUNT) route = DM__R_OTHER;
  atomic_fetch_add_explicit(&m->req[route][status_index(status)], 1,
                            memory_order_relaxed);
}

void dm__hist_observe(dm__hist *h, double ms) {
  int i = 0;
  while (i < DM__NBUCKETS && ms > BUCKETS[i])
    i++;
  atomic_fetch_add_explicit(&h->b[i], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->sum_us, (uint64_t)(ms > 0 ? ms * 1000.0 : 0),
                            memory_order_relaxed);
}

double dm__rss_mb(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f) return 0;
  unsigned long size = 0, res = 0;
  int n = fscanf(f, "%lu %lu", &size, &res);
  fclose(f);
  if (n != 2) return 0;
  return (double)res * (double)sysconf(_SC_PAGESIZE) / (1024.0 * 1024.0);
}

double dm__peak_rss_mb(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru)) return 0;
  return (double)ru.ru_maxrss / 1024.0; /* Linux: KiB */
}

/* A growable string; on allocation failure it stays failed and the render
 * returns NULL. */
typedef struct sbuf {
  char *p;
  size_t len, cap;
  bool oom;
} sbuf;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void
sb_printf(sbuf *b, const char *fmt, ...) {
  if (b->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->oom = true;
      return;
    }
    if ((size_t)n < b->cap - b->len) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = b->cap * 2 + (size_t)n + 1;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->oom = true;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
}

static uint64_t ld(atomic_uint_least64_t *a) {
  return atomic_load_explicit(a, memory_order_relaxed);
}

char *dm__metrics_render(dm__metrics *m, const dm__lc_status *lc, double rss_mb,
                         double peak_mb, int queued, int queue_cap,
                         double uptime_s) {
  sbuf b = {malloc(8192), 0, 8192, false};
  if (!b.p) return NULL;
  b.p[0] = 0;
  sb_printf(
      &b,
      "# HELP dermal_http_requests_total HTTP requests by route and status.\n"
      "# TYPE dermal_http_requests_total counter\n");
  for (int r = 0; r < DM__R_COUNT; r++)
    for (int s = 0; s < DM__ST_COUNT - 1; s++) {
      uint64_t v = ld(&m->req[r][s]);
      if (!v) continue;
      if (STATUSES[s] > 0)
        sb_printf(
            &b, "dermal_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
            ROUTES[r], STATUSES[s], (unsigned long long)v);
      else
        sb_printf(
            &b,
            "dermal_http_requests_total{route=\"%s\",status=\"other\"} %llu\n",
            ROUTES[r], (unsigned long long)v);
    }
  for (int h = 0; h < DM__H_COUNT; h++) {
    const char *n = HIST_NAMES[h];
    sb_printf(&b,
              "# HELP dermal_%s_seconds Latency of the %s stage.\n"
              "# TYPE dermal_%s_seconds histogram\n",
              n, n, n);
    uint64_t cum = 0;
    for (int i = 0; i <= DM__NBUCKETS; i++) {
      cum += ld(&m->h[h].b[i]);
      if (i < DM__NBUCKETS)
        sb_printf(&b, "dermal_%s_seconds_bucket{le=\"%g\"} %llu\n", n,
                  BUCKETS[i] / 1000.0, (unsigned long long)cum);
      else
        sb_printf(&b, "dermal_%s_seconds_bucket{le=\"+Inf\"} %llu\n", n,
                  (unsigned long long)cum);
    }
    sb_printf(&b, "dermal_%s_seconds_sum %.6f\ndermal_%s_seconds_count %llu\n",
              n, (double)ld(&m->h[h].sum_us) / 1e6, n,
              (unsigned long long)ld(&m->h[h].count));
  }
  sb_printf(
      &b,
      "# HELP dermal_model_loaded 1 when the model is loaded.\n"
      "# TYPE dermal_model_loaded gauge\ndermal_model_loaded %d\n"
      "# HELP dermal_model_load_seconds Time the successful model load took.\n"
      "# TYPE dermal_model_load_seconds gauge\ndermal_model_load_seconds %.6f\n"
      "# HELP dermal_model_load_attempts_total Model load attempts.\n"
      "# TYPE dermal_model_load_attempts_total counter\n"
      "dermal_model_load_attempts_total %llu\n"
      "# HELP dermal_resident_memory_bytes Resident set size.\n"
      "# TYPE dermal_resident_memory_bytes gauge\n"
      "dermal_resident_memory_bytes %.0f\n"
      "# HELP dermal_peak_resident_memory_bytes Peak resident set size.\n"
      "# TYPE dermal_peak_resident_memory_bytes gauge\n"
      "dermal_peak_resident_memory_bytes %.0f\n"
      "# HELP dermal_in_flight_requests Requests being handled.\n"
      "# TYPE dermal_in_flight_requests gauge\ndermal_in_flight_requests %lld\n"
      "# HELP dermal_queue_depth Requests waiting for an inference worker.\n"
      "# TYPE dermal_queue_depth gauge\ndermal_queue_depth %d\n"
      "# HELP dermal_queue_capacity Inference queue capacity.\n"
      "# TYPE dermal_queue_capacity gauge\ndermal_queue_capacity %d\n"
      "# HELP dermal_queue_rejections_total Requests refused with 503 because "
      "the queue was full.\n"
      "# TYPE dermal_queue_rejections_total counter\n"
      "dermal_queue_rejections_total %llu\n"
      "# HELP dermal_memory_shed_total Requests refused with 503 because of "
      "MEMORY_LIMIT_MB.\n"
      "# TYPE dermal_memory_shed_total counter\ndermal_memory_shed_total %llu\n"
      "# HELP dermal_gradcam_shed_total Grad-CAM requests answered without a "
      "heatmap because of MEMORY_LIMIT_MB.\n"
      "# TYPE dermal_gradcam_shed_total counter\ndermal_gradcam_shed_total "
      "%llu\n"
      "# HELP dermal_uptime_seconds Seconds since start.\n"
      "# TYPE dermal_uptime_seconds gauge\ndermal_uptime_seconds %.3f\n",
      lc->loaded ? 1 : 0, lc->load_ms / 1000.0,
      (unsigned long long)lc->attempts, rss_mb * 1048576.0, peak_mb * 1048576.0,
      (long long)atomic_load(&m->in_flight), queued, queue_cap,
      (unsigned long long)ld(&m->queue_rejected),
      (unsigned long long)ld(&m->memory_shed),
      (unsigned long long)ld(&m->gradcam_shed), uptime_s);
  if (b.oom) {
    free(b.p);
    return NULL;
  }
  return b.p;
}
