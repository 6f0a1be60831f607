/* server.c: the HTTP service: routes, limits, the inference queue and its
 * workers, shutdown.
 *
 * Purpose: answer the routes of issue 4 (/, /upload, /api/v1/predict,
 * /health, /ready, /metrics, /history) on libmicrohttpd, with JSON errors
 * and the statuses the issue lists, never 500 for bad input.
 *
 * Architecture: libmicrohttpd runs IO_THREADS epoll threads that only parse
 * requests and write responses; they never run inference or load the model.
 * A finished prediction request is appended to a bounded FIFO (QUEUE_SIZE;
 * full -> 503 + Retry-After) and its connection is suspended; WORKERS
 * inference threads pop requests, get the shared model from the lifecycle
 * (loading it the first time), run their own dm_predictor (one per worker,
 * created lazily), fill in the response and resume the connection, whose IO
 * thread then sends it.  So memory does not grow with load: at most
 * WORKERS + QUEUE_SIZE request bodies (each <= MAX_UPLOAD_MB) exist.
 *
 * Invariants:
 *  - a request body is never buffered past max_upload_bytes: Content-Length
 *    is checked before anything is allocated, chunked bodies are counted as
 *    they arrive; headers are bounded by the connection memory limit;
 *    decoded pixels are bounded by MAX_PIXELS inside dm_predict;
 *  - a suspended connection is always resumed exactly once, by the worker
 *    that popped it or by shutdown (queued requests get 503);
 *  - struct req is freed only in the completion callback, which MHD cannot
 *    call while the connection is suspended.
 * Threading: MHD IO threads run handler()/completed(); worker threads run
 * worker_main(); the queue is guarded by s->qmu; counters are atomics; the
 * model lifecycle has its own lock (lifecycle.c); the store its own. */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../common/sha256.h"
#include "dermal/explain.h"
#include "dermal/store.h"
#include "internal.h"

#define DM_VERSION_STR "0.1.0"
#define MULTIPART_SLACK ((size_t)64 * 1024) /* headers/boundaries of a form */
#define HEADER_MEMORY ((size_t)64 * 1024)   /* per-connection header pool */

enum { ST_BODY = 0, ST_QUEUED = 1, ST_DONE = 2 };

typedef struct req req;
struct req {
  dm_server *srv;
  struct MHD_Connection *conn;
  req *next; /* queue link */
  int route;
  char id[72];
  char method[16];
  char path[256];
  double t0, t_queued;
  _Atomic int state;
  int status; /* answered status, for the log and metrics */
  /* body */
  struct MHD_PostProcessor *pp;
  bool multipart, too_big, bad_form, image_started, image_done;
  uint8_t *body;
  size_t len, cap, bytes_in;
  char filename[128];
  char f_top[16], f_gradcam[16]; /* form fields of a multipart upload */
  char f_cam_class[32], f_cam_method[16], f_alpha[16], f_hmax[16],
      f_history[16];
  /* options */
  int top_k;
  char cam_class[32];         /* gradcam_class: label to explain, "" = top-1 */
  int cam_method;             /* gradcam_method */
  float cam_alpha;            /* alpha: heatmap weight in the overlay */
  int heatmap_max;            /* longest side of heatmap_png */
  bool no_history;            /* history=0: do not store (re-explanations) */
  const char *heatmap_status; /* NULL: no heatmap asked */
  bool want_cam;              /* compute the Grad-CAM heatmap */
  /* worker's answer */
  int w_status;
  char *w_body;
  int w_retry_after;
};

struct dm_server {
  dm_server_config cfg;
  struct MHD_Daemon *d;
  int port;
  dm__lifecycle lc;
  dm_store *store;
  char store_state[300];
  dm__metrics met;
  pthread_mutex_t qmu;
  pthread_cond_t qcv;
  req *qhead, *qtail;
  int qlen, qcap;
  bool qstop;
  pthread_t *workers;
  int n_workers;
  atomic_bool draining;
  bool shut;
  double t_start;
  uint32_t id_base;
  atomic_uint_least64_t id_next;
};

/* ------------------------------------------------------------------------ */
/* responses                                                                 */

static void add_common_headers(req *r, struct MHD_Response *resp,
                               const char *ctype) {
  MHD_add_response_header(resp, "Content-Type", ctype);
  MHD_add_response_header(resp, "X-Request-Id", r->id);
  MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
  if (r->route != DM__R_PAGE)
    MHD_add_response_header(resp, "Cache-Control", "no-store");
}

/* Sends body (malloc'd, ownership taken; NULL -> a fixed error). */
static enum MHD_Result respond(req *r, int status, char *body,
                               const char *ctype, int retry_after,
                               const char *allow) {
  static const char oom[] = "{\"error\":\"out of memory\"}";
  struct MHD_Response *resp;
  if (body) {
    resp = MHD_create_response_from_buffer(strlen(body), body,
                                           MHD_RESPMEM_MUST_FREE);
    if (!resp) free(body);
  } else {
    status = 503;
    resp = MHD_create_response_from_buffer(
        sizeof oom - 1, (void *)(uintptr_t)oom, MHD_RESPMEM_PERSISTENT);
  }
  if (!resp) return MHD_NO;
  add_common_headers(r, resp, ctype);
  if (status == 503 && retry_after <= 0) retry_after = 1;
  if (retry_after > 0) {
    char ra[16];
    snprintf(ra, sizeof ra, "%d", retry_after);
    MHD_add_response_header(resp, "Retry-After", ra);
  }
  if (allow) MHD_add_response_header(resp, "Allow", allow);
  if (status == 401)
    MHD_add_response_header(resp, "WWW-Authenticate",
                            "Bearer realm=\"dermal\"");
  r->status = status;
  enum MHD_Result ok = MHD_queue_response(r->conn, (unsigned)status, resp);
  MHD_destroy_response(resp);
  return ok;
}

static char *error_json(const char *id, const char *msg) {
  json_t *o = json_object();
  if (!o) return NULL;
  json_t *m = json_string(msg);
  json_object_set_new(o, "error", m ? m : json_string("(invalid utf-8)"));
  json_object_set_new(o, "request_id", json_string(id));
  char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(7));
  json_decref(o);
  return s;
}

static enum MHD_Result respond_error(req *r, int status, const char *msg,
                                     int retry_after, const char *allow) {
  return respond(r, status, error_json(r->id, msg), "application/json",
                 retry_after, allow);
}

static enum MHD_Result respond_json(req *r, int status, json_t *o,
                                    int retry_after) {
  char *s = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(7)) : NULL;
  json_decref(o);
  return respond(r, status, s, "application/json", retry_after, NULL);
}

/* ------------------------------------------------------------------------ */
/* request parsing helpers                                                   */

static int route_of(const char *url) {
  static const struct {
    const char *path;
    int route;
  } T[] = {{"/", DM__R_PAGE},           {"/index.html", DM__R_PAGE},
           {"/upload", DM__R_UPLOAD},   {"/api/v1/predict", DM__R_PREDICT},
           {"/health", DM__R_HEALTH},   {"/ready", DM__R_READY},
           {"/metrics", DM__R_METRICS}, {"/history", DM__R_HISTORY}};
  for (size_t i = 0; i < sizeof T / sizeof T[0]; i++)
    if (!strcmp(url, T[i].path)) return T[i].route;
  return DM__R_OTHER;
}

static bool is_post_route(int route) {
  return route == DM__R_UPLOAD || route == DM__R_PREDICT;
}

static const char *query(req *r, const char *key) {
  return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

/* Strict integer parse: whole string, base 10, in lo..hi. */
static bool parse_ll(const char *s, long long lo, long long hi,
                     long long *out) {
  if (!s || !*s) return false;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return false;
  *out = v;
  return true;
}

/* -1 invalid, 0 false, 1 true */
static int parse_flag(const char *s) {
  if (!s) return 0;
  if (!*s || !strcasecmp(s, "1") || !strcasecmp(s, "true") ||
      !strcasecmp(s, "yes") || !strcasecmp(s, "on"))
    return 1;
  if (!strcasecmp(s, "0") || !strcasecmp(s, "false") || !strcasecmp(s, "no") ||
      !strcasecmp(s, "off"))
    return 0;
  return -1;
}

static bool valid_request_id(const char *s) {
  size_t n = 0;
  for (; s[n]; n++) {
    char c = s[n];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
      return false;
    if (n >= 64) return false;
  }
  return n > 0;
}

static bool token_ok(dm_server *s, req *r) {
  const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                              MHD_HTTP_HEADER_AUTHORIZATION);
  if (!h || strncasecmp(h, "Bearer ", 7)) return false;
  const char *t = h + 7, *want = s->cfg.api_token;
  size_t nt = strlen(t), nw = strlen(want);
  /* Constant time in the token's length. */
  unsigned diff = (unsigned)(nt != nw);
  for (size_t i = 0; i < nw; i++)
    diff |= (unsigned)(unsigned char)want[i] ^
            (unsigned)(unsigned char)(i < nt ? t[i] : 0);
  return diff == 0;
}

static bool client_is_loopback(req *r) {
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  if (!ci || !ci->client_addr) return false;
  const struct sockaddr *sa = ci->client_addr;
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
    return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
  }
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 =
        (const struct sockaddr_in6 *)(const void *)sa;
    if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr)) return true;
    return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) &&
           in6->sin6_addr.s6_addr[12] == 127;
  }
  return false;
}

/* 0: fine; 1: shed Grad-CAM; 2: shed requests.  Thresholds: 80% and 95% of
 * MEMORY_LIMIT_MB. */
static int memory_pressure(dm_server *s, double *rss_out) {
  if (!s->cfg.memory_limit_mb) return 0;
  double rss = dm__rss_mb(), lim = (double)s->cfg.memory_limit_mb;
  if (rss_out) *rss_out = rss;
  if (rss >= 0.95 * lim) return 2;
  if (rss >= 0.80 * lim) return 1;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* body intake                                                               */

static bool body_append(req *r, const char *data, size_t size) {
  size_t max = r->srv->cfg.max_upload_bytes;
  if (size > max - r->len) { /* r->len <= max always */
    r->too_big = true;
    return false;
  }
  if (r->len + size > r->cap) {
    size_t cap = r->cap ? r->cap : 64 * 1024;
    while (cap < r->len + size)
      cap = cap > max / 2 ? max : cap * 2;
    uint8_t *p = realloc(r->body, cap);
    if (!p) return false;
    r->body = p;
    r->cap = cap;
  }
  memcpy(r->body + r->len, data, size);
  r->len += size;
  return true;
}

static enum MHD_Result post_iter(void *cls, enum MHD_ValueKind kind,
                                 const char *key, const char *filename,
                                 const char *content_type,
                                 const char *transfer_encoding,
                                 const char *data, uint64_t off, size_t size) {
  req *r = cls;
  (void)kind, (void)content_type, (void)transfer_encoding;
  if (!key) return MHD_YES;
  if (!strcmp(key, "image")) {
    if (off == 0 && r->image_started && r->len) r->image_done = true;
    if (r->image_done) return MHD_YES; /* only the first image part counts */
    if (!r->image_started) {
      r->image_started = true;
      if (filename) snprintf(r->filename, sizeof r->filename, "%s", filename);
    }
    if (size && !body_append(r, data, size)) return MHD_NO;
    return MHD_YES;
  }
  char *dst = !strcmp(key, "top")              ? r->f_top
              : !strcmp(key, "gradcam")        ? r->f_gradcam
              : !strcmp(key, "gradcam_class")  ? r->f_cam_class
              : !strcmp(key, "gradcam_method") ? r->f_cam_method
              : !strcmp(key, "alpha")          ? r->f_alpha
              : !strcmp(key, "heatmap_max")    ? r->f_hmax
              : !strcmp(key, "history")        ? r->f_history
                                               : NULL;
  if (dst) {
    size_t have = strlen(dst);
    size_t cap =
        dst == r->f_cam_class ? sizeof r->f_cam_class : sizeof r->f_top;
    if (have + size >= cap) {
      r->bad_form = true;
      return MHD_NO;
    }
    memcpy(dst + have, data, size);
    dst[have + size] = 0;
  }
  return MHD_YES;
}

/* ------------------------------------------------------------------------ */
/* GET routes                                                                */

static void lc_snapshot(dm_server *s, dm__lc_status *st) {
  dm__lc_status_get(&s->lc, st);
}

static int queue_len(dm_server *s) {
  pthread_mutex_lock(&s->qmu);
  int n = s->qlen;
  pthread_mutex_unlock(&s->qmu);
  return n;
}

/* Why a prediction request would not be served right now; NULL: it would. */
static const char *not_ready_reason(dm_server *s, const dm__lc_status *st) {
  if (atomic_load(&s->draining)) return "shutting down";
  if (memory_pressure(s, NULL) == 2) return "memory limit reached";
  if (queue_len(s) >= s->qcap) return "inference queue full";
  if (st->loaded) return NULL;
  if (st->failed) return "model failed to load (see /health?verbose=1)";
  if (st->loading) return "model loading";
  return s->cfg.preload ? "model not loaded"
                        : NULL; /* lazy: first request loads */
}

static enum MHD_Result get_health(dm_server *s, req *r) {
  json_t *o = json_object();
  if (!o) return respond(r, 200, NULL, "application/json", 0, NULL);
  json_object_set_new(o, "status", json_string("ok"));
  int v = parse_flag(query(r, "verbose"));
  if (v == 1 && query(r, "verbose")) {
    dm__lc_status st;
    lc_snapshot(s, &st);
    json_object_set_new(o, "model_loaded", json_boolean(st.loaded));
    json_object_set_new(o, "model_status",
                        json_string(st.loaded    ? "loaded"
                                    : st.loading ? "loading"
                                    : st.failed  ? "failed"
                                                 : "not_loaded"));
    json_object_set_new(o, "model_load_ms",
                        st.loaded ? json_real(st.load_ms) : json_null());
    json_t *mp = json_string(s->cfg.model_path);
    json_object_set_new(o, "model_path", mp ? mp : json_null());
    json_object_set_new(o, "model_sha256",
                        st.loaded ? json_string(st.sha256) : json_null());
    json_object_set_new(o, "model_name",
                        st.loaded ? json_string(st.name) : json_null());
    json_object_set_new(o, "model_version",
                        st.loaded ? json_string(st.version) : json_null());
    json_object_set_new(o, "model_loads", json_integer((json_int_t)st.loads));
    json_object_set_new(o, "model_load_attempts",
                        json_integer((json_int_t)st.attempts));
    json_t *le = st.last_error[0] ? json_string(st.last_error) : json_null();
    json_object_set_new(o, "last_model_error",
                        le ? le : json_string("(invalid utf-8)"));
    json_object_set_new(o, "preload_mode",
                        json_string(s->cfg.preload ? "preload" : "lazy"));
    json_object_set_new(o, "backend",
                        json_string(st.loaded            ? st.backend
                                    : s->cfg.ref_backend ? "ref"
                                                         : "onednn"));
    json_object_set_new(o, "precision",
                        st.loaded ? json_string(st.precision) : json_null());
    json_object_set_new(o, "int8_ops",
                        st.loaded ? json_integer((json_int_t)st.int8_ops)
                                  : json_null());
    json_object_set_new(o, "int8_unfused",
                        st.loaded ? json_integer((json_int_t)st.int8_unfused)
                                  : json_null());
    json_object_set_new(o, "gradcam_enabled", json_boolean(s->cfg.gradcam));
    json_object_set_new(o, "gradcam_available",
                        json_boolean(st.loaded && st.cam_target[0]));
    json_object_set_new(o, "gradcam_target",
                        st.loaded ? json_string(st.cam_target) : json_null());
    json_object_set_new(o, "rss_mb", json_real(dm__rss_mb()));
    json_object_set_new(o, "peak_rss_mb", json_real(dm__peak_rss_mb()));
    json_object_set_new(o, "memory_limit_mb",
                        s->cfg.memory_limit_mb
                            ? json_integer((json_int_t)s->cfg.memory_limit_mb)
                            : json_null());
    json_object_set_new(o, "uptime_s",
                        json_real((dm__now_ms() - s->t_start) / 1000.0));
    json_object_set_new(
        o, "requests_total",
        json_integer((json_int_t)atomic_load(&s->met.requests_total)));
    json_object_set_new(
        o, "in_flight",
        json_integer((json_int_t)atomic_load(&s->met.in_flight)));
    json_object_set_new(o, "queue_depth", json_integer(queue_len(s)));
    json_object_set_new(o, "queue_capacity", json_integer(s->qcap));
    json_object_set_new(
        o, "queue_rejections",
        json_integer((json_int_t)atomic_load(&s->met.queue_rejected)));
    json_object_set_new(o, "workers", json_integer(s->cfg.workers));
    json_object_set_new(o, "threads", json_integer(s->cfg.threads));
    json_object_set_new(o, "store", json_string(s->store_state));
    const char *reason = not_ready_reason(s, &st);
    json_object_set_new(o, "ready", json_boolean(reason == NULL));
    json_object_set_new(o, "version", json_string(DM_VERSION_STR));
  }
  return respond_json(r, 200, o, 0);
}

static enum MHD_Result get_ready(dm_server *s, req *r) {
  dm__lc_status st;
  lc_snapshot(s, &st);
  const char *reason = not_ready_reason(s, &st);
  json_t *o = json_object();
  if (!o) return respond(r, 503, NULL, "application/json", 1, NULL);
  json_object_set_new(o, "ready", json_boolean(!reason));
  if (reason) json_object_set_new(o, "reason", json_string(reason));
  json_object_set_new(o, "model_loaded", json_boolean(st.loaded));
  return respond_json(r, reason ? 503 : 200, o, reason ? 5 : 0);
}

static enum MHD_Result get_metrics(dm_server *s, req *r) {
  dm__lc_status st;
  lc_snapshot(s, &st);
  char *txt = dm__metrics_render(&s->met, &st, dm__rss_mb(), dm__peak_rss_mb(),
                                 queue_len(s), s->qcap,
                                 (dm__now_ms() - s->t_start) / 1000.0);
  if (!txt) return respond_error(r, 503, "out of memory", 1, NULL);
  return respond(r, 200, txt, "text/plain; version=0.0.4; charset=utf-8", 0,
                 NULL);
}

static enum MHD_Result get_history(dm_server *s, req *r) {
  if (s->cfg.api_token) {
    if (!token_ok(s, r))
      return respond_error(
          r, 401, "history needs Authorization: Bearer <API_TOKEN>", 0, NULL);
  } else if (!client_is_loopback(r)) {
    return respond_error(r, 403,
                         "history is personal data: set API_TOKEN to serve it "
                         "beyond loopback",
                         0, NULL);
  }
  if (!s->store)
    return respond_error(r, 404,
                         "history is off (DATABASE_URL=none or store error; "
                         "see /health?verbose=1)",
                         0, NULL);
  long long limit = 20, before = 0;
  const char *ls = query(r, "limit"), *bs = query(r, "before");
  if (ls && !parse_ll(ls, 1, 100, &limit))
    return respond_error(r, 400, "limit must be an integer in 1..100", 0, NULL);
  if (bs && !parse_ll(bs, 1, INT64_MAX, &before))
    return respond_error(r, 400, "before must be a positive row id", 0, NULL);
  char *txt = NULL;
  dm_errbuf eb = {{0}};
  dm_err rc = dm_store_list_json(s->store, before, (int)limit, &txt, &eb);
  if (rc) {
    dm__log(DM__LOG_ERROR, "history: %s", eb.msg);
    return respond_error(r, 503, "history store unavailable", 5, NULL);
  }
  return respond(r, 200, txt, "application/json", 0, NULL);
}

static enum MHD_Result get_page(req *r) {
  struct MHD_Response *resp = MHD_create_response_from_buffer(
      dm__page_html_len, (void *)(uintptr_t)dm__page_html,
      MHD_RESPMEM_PERSISTENT);
  if (!resp) return MHD_NO;
  add_common_headers(r, resp, "text/html; charset=utf-8");
  MHD_add_response_header(resp, "Cache-Control", "no-cache");
  MHD_add_response_header(resp, "Content-Security-Policy",
                          "default-src 'self'; img-src 'self' data: blob:; "
                          "style-src 'self' 'unsafe-inline'; script-src 'self' "
                          "'unsafe-inline'; connect-src 'self'");
  r->status = 200;
  enum MHD_Result ok = MHD_queue_response(r->conn, 200, resp);
  MHD_destroy_response(resp);
  return ok;
}

/* ------------------------------------------------------------------------ */
/* prediction: admission (IO thread) and work (worker thread)                */

static enum MHD_Result admit_prediction(dm_server *s, req *r) {
  if (r->too_big) {
    char msg[96];
    snprintf(msg, sizeof msg, "upload larger than MAX_UPLOAD_MB (%zu MiB)",
             s->cfg.max_upload_bytes >> 20);
    return respond_error(r, 413, msg, 0, NULL);
  }
  if (r->bad_form)
    return respond_error(r, 400, "malformed multipart/form-data body", 0, NULL);
  if (r->len == 0)
    return respond_error(
        r, 400,
        r->route == DM__R_UPLOAD
            ? "no 'image' file part in the form (multipart/form-data, field "
              "'image')"
            : "empty body: send the image bytes as the request body",
        0, NULL);
  /* options: query string, or form fields for /upload */
  const char *top = query(r, "top"), *gc = query(r, "gradcam");
  if (!top && r->f_top[0]) top = r->f_top;
  if (!gc && r->f_gradcam[0]) gc = r->f_gradcam;
  long long k = 0;
  if (top && !parse_ll(top, 1, DM_MAX_CLASSES, &k))
    return respond_error(r, 400, "top must be an integer >= 1", 0, NULL);
  r->top_k = (int)k; /* 0: all classes */
  int g = gc ? parse_flag(gc) : 0;
  if (g < 0) return respond_error(r, 400, "gradcam must be 0 or 1", 0, NULL);
  /* Grad-CAM options: class label, method, overlay alpha, heatmap size */
  const char *cc = query(r, "gradcam_class"), *cm = query(r, "gradcam_method"),
             *al = query(r, "alpha"), *hm = query(r, "heatmap_max");
  if (!cc && r->f_cam_class[0]) cc = r->f_cam_class;
  if (!cm && r->f_cam_method[0]) cm = r->f_cam_method;
  if (!al && r->f_alpha[0]) al = r->f_alpha;
  if (!hm && r->f_hmax[0]) hm = r->f_hmax;
  if (cc && strlen(cc) >= sizeof r->cam_class)
    return respond_error(r, 400, "gradcam_class is too long", 0, NULL);
  snprintf(r->cam_class, sizeof r->cam_class, "%s", cc ? cc : "");
  r->cam_method = cm ? dm_cam_method_parse(cm) : DM_CAM_GRADCAM;
  if (r->cam_method < 0)
    return respond_error(
        r, 400, "gradcam_method must be gradcam, gradcampp or hirescam", 0,
        NULL);
  r->cam_alpha = 0.5f;
  if (al) {
    char *end;
    errno = 0;
    float a = strtof(al, &end);
    if (errno || end == al || *end || !(a >= 0 && a <= 1))
      return respond_error(r, 400, "alpha must be a number in 0..1", 0, NULL);
    r->cam_alpha = a;
  }
  long long hmax = 768;
  if (hm && !parse_ll(hm, 16, 4096, &hmax))
    return respond_error(r, 400, "heatmap_max must be an integer in 16..4096",
                         0, NULL);
  r->heatmap_max = (int)hmax;
  const char *hi = query(r, "history");
  if (!hi && r->f_history[0]) hi = r->f_history;
  int hflag = hi ? parse_flag(hi) : 1;
  if (hflag < 0)
    return respond_error(r, 400, "history must be 0 or 1", 0, NULL);
  r->no_history = hflag == 0;
  int pressure = memory_pressure(s, NULL);
  if (pressure == 2) {
    atomic_fetch_add(&s->met.memory_shed, 1);
    return respond_error(r, 503, "memory limit reached, try again shortly", 5,
                         NULL);
  }
  if (g == 1) {
    if (!s->cfg.gradcam) {
      r->heatmap_status =
          "disabled"; /* ENABLE_GRADCAM=false: prediction only */
    } else if (pressure == 1) {
      atomic_fetch_add(&s->met.gradcam_shed, 1);
      r->heatmap_status = "shed_memory";
    } else {
      r->want_cam = true;
    }
  }
  pthread_mutex_lock(&s->qmu);
  /* While draining, requests already in flight (headers received before
   * SIGTERM) are still served; only qstop (drain deadline passed) refuses. */
  if (s->qstop) {
    pthread_mutex_unlock(&s->qmu);
    return respond_error(r, 503, "shutting down", 5, NULL);
  }
  if (s->qlen >= s->qcap) {
    pthread_mutex_unlock(&s->qmu);
    atomic_fetch_add(&s->met.queue_rejected, 1);
    return respond_error(r, 503, "inference queue full, retry shortly", 1,
                         NULL);
  }
  /* Suspend before a worker can see it, so its resume always follows. */
  atomic_store(&r->state, ST_QUEUED);
  r->t_queued = dm__now_ms();
  MHD_suspend_connection(r->conn);
  r->next = NULL;
  if (s->qtail)
    s->qtail->next = r;
  else
    s->qhead = r;
  s->qtail = r;
  s->qlen++;
  pthread_cond_signal(&s->qcv);
  pthread_mutex_unlock(&s->qmu);
  return MHD_YES;
}

static void finish(req *r, int status, char *body, int retry_after) {
  r->w_status = status;
  r->w_body = body;
  r->w_retry_after = retry_after;
  atomic_store(&r->state, ST_DONE);
  MHD_resume_connection(r->conn);
}

static void finish_error(req *r, int status, const char *msg, int retry_after) {
  finish(r, status, error_json(r->id, msg), retry_after);
}

static void hex32(const uint8_t d[32], char out[65]) {
  static const char H[] = "0123456789abcdef";
  for (int i = 0; i < 32; i++) {
    out[2 * i] = H[d[i] >> 4];
    out[2 * i + 1] = H[d[i] & 15];
  }
  out[64] = 0;
}

/* Content-addressed copy of the upload: IMAGES_DIR/ab/abcdef....ext.
 * Best effort: a failure is logged, the prediction is still answered. */
static void save_image(dm_server *s, req *r, const char *sha, const char *ext,
                       char *path, size_t pathlen) {
  char dir[1024], tmp[1200];
  path[0] = 0;
  if (mkdir(s->cfg.images_dir, 0700) && errno != EEXIST) goto fail;
  errno = ENAMETOOLONG; /* for the truncation checks below */
  if (snprintf(dir, sizeof dir, "%s/%.2s", s->cfg.images_dir, sha) >=
      (int)sizeof dir)
    goto fail;
  if (mkdir(dir, 0700) && errno != EEXIST) goto fail;
  errno = ENAMETOOLONG;
  if (snprintf(path, pathlen, "%s/%s.%s", dir, sha, ext) >= (int)pathlen)
    goto fail;
  if (access(path, F_OK) == 0) return; /* same content already there */
  errno = ENAMETOOLONG;
  if (snprintf(tmp, sizeof tmp, "%s.tmp.%s", path, r->id) >= (int)sizeof tmp)
    goto fail;
  FILE *f = fopen(tmp, "wb");
  if (!f) goto fail;
  size_t w = fwrite(r->body, 1, r->len, f);
  if (fclose(f) || w != r->len || rename(tmp, path)) {
    unlink(tmp);
    goto fail;
  }
  return;
fail:
  dm__log(DM__LOG_WARN, "req=%s: cannot store image under %s: %s", r->id,
          s->cfg.images_dir, strerror(errno));
  path[0] = 0;
}

/* Adds request_id, model{}, heatmap keys and timings to the model layer's
 * JSON object (spliced: the object is ours and ends in '}'). */
static char *decorate(req *r, const dm_model_info *in, const char *pjson,
                      double queue_ms, double total_ms, json_t *cam) {
  json_t *x = json_object(), *m = json_object();
  if (!x || !m) {
    json_decref(x);
    json_decref(m);
    return NULL;
  }
  json_object_set_new(x, "request_id", json_string(r->id));
  json_t *name = json_string(in->name ? in->name : "");
  json_object_set_new(m, "name", name ? name : json_string("?"));
  json_t *ver = json_string(in->version ? in->version : "");
  json_object_set_new(m, "version", ver ? ver : json_string("?"));
  json_object_set_new(m, "sha256", json_string(in->sha256));
  json_object_set_new(x, "model", m);
  if (cam) {
    json_object_update(x, cam); /* heatmap_png, heatmap_status, gradcam */
  } else if (r->heatmap_status) {
    json_object_set_new(x, "heatmap_png", json_null());
    json_object_set_new(x, "heatmap_status", json_string(r->heatmap_status));
  }
  json_object_set_new(x, "queue_ms", json_real(queue_ms));
  json_object_set_new(x, "total_ms", json_real(total_ms));
  char *xs = json_dumps(x, JSON_COMPACT | JSON_REAL_PRECISION(7));
  json_decref(x);
  if (!xs) return NULL;
  size_t pl = strlen(pjson), xl = strlen(xs);
  char *out = NULL;
  if (pl >= 2 && pjson[pl - 1] == '}' && xl >= 2 &&
      (out = malloc(pl + xl + 1))) {
    memcpy(out, pjson, pl - 1);
    size_t o = pl - 1;
    if (pl > 2) out[o++] = ',';
    memcpy(out + o, xs + 1, xl - 1); /* skips '{', keeps '}' */
    out[o + xl - 1] = 0;
  }
  free(xs);
  return out;
}

static char *probabilities_json(const dm_model_info *in,
                                const dm_prediction *p) {
  json_t *o = json_object();
  if (!o) return NULL;
  for (size_t i = 0; i < p->n_classes && i < in->n_classes; i++)
    json_object_set_new(o, in->labels[i], json_real((double)p->prob[i]));
  char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(7));
  json_decref(o);
  return s;
}

static char *base64(const uint8_t *p, size_t n) {
  static const char T[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;
  if (!out) return NULL;
  size_t i = 0;
  for (; i + 2 < n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
    *o++ = T[v >> 18], *o++ = T[(v >> 12) & 63], *o++ = T[(v >> 6) & 63],
    *o++ = T[v & 63];
  }
  if (i < n) {
    uint32_t v =
        (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
    *o++ = T[v >> 18], *o++ = T[(v >> 12) & 63];
    *o++ = i + 1 < n ? T[(v >> 6) & 63] : '=';
    *o++ = '=';
  }
  *o = 0;
  return out;
}

/* The heatmap keys of an answer: the overlay (jet colour map blended over
 * the decoded upright image with the request's alpha, default 0.5, longest
 * side <= heatmap_max, default 768) as a base64 PNG.  alpha=1 gives the bare
 * colour map, which the page blends itself with its opacity slider.  NULL
 * with eb filled on failure. */
static json_t *cam_json(const dm_model_info *in, const dm_explanation *ex,
                        const req *r, dm_errbuf *eb) {
  dm_overlay_opts oo = {DM_CMAP_JET, r->cam_alpha, r->heatmap_max};
  dm_image ov = {0};
  uint8_t *png = NULL;
  size_t len = 0;
  json_t *o = NULL;
  if (dm_overlay_render(ex->image, &in->preproc, ex->cam, ex->cam_h, ex->cam_w,
                        &oo, &ov, eb) ||
      dm_image_encode_png(&ov, &png, &len, eb))
    goto out;
  char *b64 = base64(png, len);
  o = json_object();
  json_t *g = json_object();
  if (!b64 || !o || !g) {
    free(b64);
    json_decref(g);
    json_decref(o);
    o = NULL;
    dm_errf(eb, DM_NOMEM, "out of memory");
    goto out;
  }
  json_object_set_new(o, "heatmap_png", json_string(b64));
  json_object_set_new(o, "heatmap_status", json_string("ok"));
  json_object_set_new(g, "class", json_string(in->labels[ex->class_index]));
  json_object_set_new(g, "method", json_string(dm_cam_method_name(ex->method)));
  json_object_set_new(g, "target", json_string(in->gradcam_target));
  json_object_set_new(g, "alpha", json_real((double)r->cam_alpha));
  json_object_set_new(g, "width", json_integer(ov.w));
  json_object_set_new(g, "height", json_integer(ov.h));
  json_object_set_new(g, "ms", json_real(ex->ms_cam));
  json_object_set_new(o, "gradcam", g);
  free(b64);
out:
  free(png);
  dm_image_free(&ov);
  return o;
}

typedef struct worker_ctx {
  dm_server *s;
  dm_predictor *pred;
  dm_model *pred_model;
  dm_prediction *out; /* ~12 KB: heap, once per worker */
} worker_ctx;

static void predict_one(worker_ctx *w, req *r) {
  dm_server *s = w->s;
  double queue_ms = dm__now_ms() - r->t_queued;
  dm__hist_observe(&s->met.h[DM__H_QUEUE], queue_ms);
  if (s->cfg.debug_delay_ms > 0) {
    struct timespec ts = {s->cfg.debug_delay_ms / 1000,
                          (long)(s->cfg.debug_delay_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
  }
  char err[256] = "";
  dm_model *m = dm__lc_get(&s->lc, err, sizeof err);
  if (!m) {
    char msg[400];
    snprintf(msg, sizeof msg, "model not available: %s",
             err[0] ? err : "not loaded");
    finish_error(r, 503, msg, 5);
    return;
  }
  dm_errbuf eb = {{0}};
  if (!w->pred || w->pred_model != m) {
    dm_predictor_free(w->pred);
    w->pred = NULL;
    if (dm_predictor_new(m, &w->pred, &eb)) {
      dm__log(DM__LOG_ERROR, "req=%s: predictor: %s", r->id, eb.msg);
      dm_model_release(m);
      finish_error(r, 503, "cannot allocate inference scratch, retry shortly",
                   5);
      return;
    }
    w->pred_model = m;
  }
  dm_image_limits lim;
  dm_image_limits_init(&lim);
  lim.max_bytes = s->cfg.max_upload_bytes;
  lim.max_pixels = s->cfg.max_pixels;
  dm_prediction *p = w->out;
  const dm_model_info *in = dm_model_get_info(m);
  dm_explanation ex;
  bool cam = r->want_cam && in->gradcam_target && in->gradcam_target[0];
  if (r->want_cam && !cam) r->heatmap_status = "unavailable"; /* no target */
  int cam_class = -1;
  if (cam && r->cam_class[0] &&
      (cam_class = dm_model_class_index(m, r->cam_class)) < 0) {
    char msg[128];
    snprintf(msg, sizeof msg, "gradcam_class '%s' is not a label of the model",
             r->cam_class);
    dm_model_release(m);
    finish_error(r, 400, msg, 0);
    return;
  }
  dm_err rc =
      cam ? dm_predict_explain(w->pred, r->body, r->len, &lim, cam_class,
                               (dm_cam_method)r->cam_method, p, &ex, &eb)
          : dm_predict(w->pred, r->body, r->len, &lim, p, &eb);
  if (rc) {
    int st;
    switch (rc) {
    case DM_TOOBIG: st = 413; break;
    case DM_FORMAT:
    case DM_UNSUPPORTED: st = 415; break;
    case DM_IMAGE_SIZE:
    case DM_RANGE: st = 422; break;
    case DM_NOMEM: st = 503; break;
    default: st = 500; break;
    }
    char msg[400];
    if (st == 415)
      snprintf(msg, sizeof msg, "not a decodable JPEG/PNG/WebP image: %s",
               eb.msg);
    else if (st == 500)
      snprintf(msg, sizeof msg, "internal error: %s", eb.msg);
    else
      snprintf(msg, sizeof msg, "%s", eb.msg[0] ? eb.msg : dm_strerror(rc));
    if (st == 500) dm__log(DM__LOG_ERROR, "req=%s: predict: %s", r->id, eb.msg);
    dm_model_release(m);
    finish_error(r, st, msg, st == 503 ? 5 : 0);
    return;
  }
  dm__hist_observe(&s->met.h[DM__H_DECODE], p->ms_decode);
  dm__hist_observe(&s->met.h[DM__H_PREPROCESS], p->ms_preprocess);
  dm__hist_observe(&s->met.h[DM__H_INFERENCE], p->ms_inference);
  json_t *camj = NULL;
  if (cam) {
    dm_errbuf ceb = {{0}};
    double t0 = dm__now_ms();
    camj = cam_json(in, &ex, r, &ceb);
    dm__hist_observe(&s->met.h[DM__H_GRADCAM], ex.ms_cam + dm__now_ms() - t0);
    if (!camj) {
      dm__log(DM__LOG_WARN, "req=%s: heatmap: %s", r->id, ceb.msg);
      r->heatmap_status = "failed";
    }
  }
  char *pj =
      dm_prediction_json(m, p, r->filename[0] ? r->filename : NULL, r->top_k);
  double total_ms = dm__now_ms() - r->t0;
  char *body = pj ? decorate(r, in, pj, queue_ms, total_ms, camj) : NULL;
  json_decref(camj);
  free(pj);
  if (s->store && body && !r->no_history) {
    uint8_t d[32];
    char sha[65], ipath[1300];
    dm__sha256 h;
    dm__sha256_init(&h);
    dm__sha256_update(&h, r->body, r->len);
    dm__sha256_final(&h, d);
    hex32(d, sha);
    const char *fmt = dm_image_format_name(p->image.format);
    ipath[0] = 0;
    if (s->cfg.store_images) save_image(s, r, sha, fmt, ipath, sizeof ipath);
    char *probs = probabilities_json(in, p);
    int top = p->order[0];
    dm_store_record rec = {0};
    rec.request_id = r->id;
    rec.image_sha256 = sha;
    rec.image_bytes = (int64_t)r->len;
    rec.image_width = p->width;
    rec.image_height = p->height;
    rec.image_format = fmt;
    rec.image_path = ipath[0] ? ipath : NULL;
    rec.model_name = in->name;
    rec.model_version = in->version;
    rec.model_sha256 = in->sha256;
    rec.label = in->labels[top];
    rec.probability = (double)p->prob[top];
    rec.probabilities = probs;
    rec.ms_decode = p->ms_decode;
    rec.ms_preprocess = p->ms_preprocess;
    rec.ms_inference = p->ms_inference;
    rec.ms_total = total_ms;
    dm_errbuf seb = {{0}};
    if (dm_store_insert(s->store, &rec, &seb))
      dm__log(DM__LOG_WARN, "req=%s: history not saved: %s", r->id, seb.msg);
    free(probs);
  }
  dm_model_release(m);
  if (!body) {
    finish_error(r, 503, "out of memory", 1);
    return;
  }
  finish(r, 200, body, 0);
}

static void *worker_main(void *arg) {
  worker_ctx w = {arg, NULL, NULL, NULL};
  dm_server *s = w.s;
  w.out = malloc(sizeof *w.out);
  for (;;) {
    pthread_mutex_lock(&s->qmu);
    while (!s->qhead && !s->qstop)
      pthread_cond_wait(&s->qcv, &s->qmu);
    req *r = s->qhead;
    if (!r) { /* stopping and empty */
      pthread_mutex_unlock(&s->qmu);
      break;
    }
    s->qhead = r->next;
    if (!s->qhead) s->qtail = NULL;
    s->qlen--;
    bool stopping = s->qstop;
    pthread_mutex_unlock(&s->qmu);
    if (stopping)
      finish_error(r, 503, "shutting down", 5); /* drain deadline passed */
    else if (!w.out)
      finish_error(r, 503, "out of memory", 1);
    else
      predict_one(&w, r);
  }
  dm_predictor_free(w.pred);
  free(w.out);
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* libmicrohttpd callbacks                                                   */

/* Bytes of an over-limit body read and dropped before the connection is
 * simply closed. */
static unsigned long long discard_cap(const dm_server *s) {
  return 4ULL * s->cfg.max_upload_bytes + MULTIPART_SLACK;
}

static req *req_new(dm_server *s, struct MHD_Connection *conn, const char *url,
                    const char *method) {
  req *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->srv = s;
  r->conn = conn;
  r->t0 = dm__now_ms();
  r->route = route_of(url);
  snprintf(r->method, sizeof r->method, "%s", method);
  snprintf(r->path, sizeof r->path, "%s", url);
  const char *rid =
      MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
  if (rid && valid_request_id(rid))
    snprintf(r->id, sizeof r->id, "%s", rid);
  else
    snprintf(r->id, sizeof r->id, "%08x%08llx", s->id_base,
             (unsigned long long)atomic_fetch_add(&s->id_next, 1));
  atomic_fetch_add(&s->met.in_flight, 1);
  atomic_fetch_add(&s->met.requests_total, 1);
  return r;
}

/* First call for a request: headers are in, no body yet.  Answers what can
 * be answered without the body (and refuses bodies that are too large
 * before a byte of them is stored).  Returns MHD_YES to continue. */
static enum MHD_Result on_headers(dm_server *s, req *r, bool *answered) {
  *answered = true;
  bool is_get = !strcmp(r->method, "GET") || !strcmp(r->method, "HEAD");
  if (r->route == DM__R_OTHER)
    return respond_error(r, 404, "no such route", 0, NULL);
  if (is_post_route(r->route)) {
    if (strcmp(r->method, "POST"))
      return respond_error(r, 405, "method not allowed: use POST", 0, "POST");
  } else if (!is_get) {
    return respond_error(r, 405, "method not allowed: use GET", 0, "GET, HEAD");
  }
  if (!is_post_route(r->route)) {
    *answered = false; /* GET: answered once the (empty) body is read */
    return MHD_YES;
  }
  if (atomic_load(&s->draining))
    return respond_error(r, 503, "shutting down", 5, NULL);
  if (s->cfg.api_token && !token_ok(s, r))
    return respond_error(r, 401, "missing or wrong Authorization: Bearer token",
                         0, NULL);
  size_t allowed = s->cfg.max_upload_bytes +
                   (r->route == DM__R_UPLOAD ? MULTIPART_SLACK : 0);
  const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                               MHD_HTTP_HEADER_CONTENT_LENGTH);
  long long clen = -1;
  if (cl && parse_ll(cl, 0, INT64_MAX, &clen) &&
      (unsigned long long)clen > allowed) {
    /* Answering now makes the kernel reset the connection while the client
     * is still sending, and the client may never read the 413.  So: answer
     * at once when the client waits for "100 Continue" (it then sends
     * nothing) or the body is absurd; otherwise read and drop the body
     * (nothing is stored) and answer 413 at its end. */
    const char *expect = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_EXPECT);
    if ((expect && !strcasecmp(expect, "100-continue")) ||
        (unsigned long long)clen > discard_cap(s)) {
      char msg[96];
      snprintf(msg, sizeof msg, "upload larger than MAX_UPLOAD_MB (%zu MiB)",
               s->cfg.max_upload_bytes >> 20);
      return respond_error(r, 413, msg, 0, NULL);
    }
    r->too_big = true;
    *answered = false;
    return MHD_YES;
  }
  if (r->route == DM__R_UPLOAD) {
    const char *ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_TYPE);
    if (!ct || strncasecmp(ct, "multipart/form-data", 19))
      return respond_error(
          r, 400, "expected multipart/form-data with an 'image' file field", 0,
          NULL);
    r->pp = MHD_create_post_processor(r->conn, 16 * 1024, post_iter, r);
    if (!r->pp)
      return respond_error(
          r, 400, "malformed multipart/form-data header (boundary?)", 0, NULL);
    r->multipart = true;
  } else if (clen > 0) {
    /* Known length within the limit: one allocation of exactly that. */
    r->body = malloc((size_t)clen);
    if (!r->body) return respond_error(r, 503, "out of memory", 1, NULL);
    r->cap = (size_t)clen;
  }
  *answered = false;
  return MHD_YES;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn,
                               const char *url, const char *method,
                               const char *version, const char *upload_data,
                               size_t *upload_data_size, void **con_cls) {
  dm_server *s = cls;
  (void)version;
  req *r = *con_cls;
  if (!r) {
    r = req_new(s, conn, url, method);
    if (!r) return MHD_NO;
    *con_cls = r;
    bool answered;
    return on_headers(s, r, &answered);
  }
  if (*upload_data_size) {
    size_t n = *upload_data_size;
    *upload_data_size = 0;
    r->bytes_in += n;
    if (!is_post_route(r->route)) return MHD_YES; /* GET body: ignored */
    if (r->too_big || r->bad_form) {
      /* Discard; a client that keeps sending far past the limit is cut. */
      return r->bytes_in > discard_cap(s) ? MHD_NO : MHD_YES;
    }
    if (r->multipart) {
      if (r->bytes_in > s->cfg.max_upload_bytes + MULTIPART_SLACK) {
        r->too_big = true;
      } else if (MHD_post_process(r->pp, upload_data, n) != MHD_YES) {
        if (!r->too_big) r->bad_form = true;
      }
    } else if (!body_append(r, upload_data, n) && !r->too_big) {
      r->bad_form = true; /* allocation failed: answered as 503 below */
    }
    return MHD_YES;
  }
  int st = atomic_load(&r->state);
  if (st == ST_DONE) {
    char *b = r->w_body; /* ownership moves to the response */
    r->w_body = NULL;
    return respond(r, r->w_status, b, "application/json", r->w_retry_after,
                   NULL);
  }
  if (st == ST_QUEUED) return MHD_YES; /* spurious call before resume */
  switch (r->route) {
  case DM__R_HEALTH: return get_health(s, r);
  case DM__R_READY: return get_ready(s, r);
  case DM__R_METRICS: return get_metrics(s, r);
  case DM__R_HISTORY: return get_history(s, r);
  case DM__R_PAGE: return get_page(r);
  default: break;
  }
  if (!r->multipart && r->bad_form && !r->too_big)
    return respond_error(r, 503, "out of memory", 1, NULL);
  if (r->pp) {
    MHD_destroy_post_processor(r->pp); /* flushes the last part */
    r->pp = NULL;
  }
  return admit_prediction(s, r);
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                      enum MHD_RequestTerminationCode toe) {
  dm_server *s = cls;
  (void)conn;
  req *r = *con_cls;
  if (!r) return;
  *con_cls = NULL;
  int status = r->status;
  if (!status)
    status = toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED ? 408 : 499;
  double ms = dm__now_ms() - r->t0;
  dm__metrics_request(&s->met, r->route, status);
  dm__hist_observe(&s->met.h[DM__H_REQUEST], ms);
  dm__log_access(r->id, r->method, r->path, status, ms, r->bytes_in);
  if (r->pp) MHD_destroy_post_processor(r->pp);
  free(r->body);
  free(r->w_body);
  free(r);
  atomic_fetch_sub(&s->met.in_flight, 1);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
  (void)cls;
  char msg[512];
  vsnprintf(msg, sizeof msg, fmt, ap);
  size_t n = strlen(msg);
  while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
    msg[--n] = 0;
  dm__log(DM__LOG_WARN, "http: %s", msg);
}

/* ------------------------------------------------------------------------ */
/* lifecycle of the server                                                   */

static dm_err open_store(dm_server *s, dm_errbuf *eb) {
  const char *url = s->cfg.database_url;
  if (dm_store_url_disabled(url)) {
    snprintf(s->store_state, sizeof s->store_state, "off");
    dm__log(DM__LOG_INFO, "history store off (DATABASE_URL=none)");
    return DM_OK;
  }
  char shown[512]; /* logs never carry the database password */
  dm_store_url_redact(url, shown, sizeof shown);
  dm_err rc = dm_store_open(url, &s->store, eb);
  if (rc) return rc;
  int v = 0;
  if ((rc = dm_store_version(s->store, &v, eb))) goto fail;
  int latest = dm_store_latest_version();
  if (v == 0) {
    if ((rc = dm_store_migrate(s->store, -1, NULL, eb))) goto fail;
    dm__log(DM__LOG_INFO,
            "history store: new database %s, migrated to version %d", shown,
            latest);
  } else if (v != latest) {
    /* Not ours to change behind the operator's back. */
    dm__log(DM__LOG_ERROR,
            "history store %s is at schema version %d, this binary needs %d: "
            "run `dermal migrate`; history is off until then",
            shown, v, latest);
    snprintf(s->store_state, sizeof s->store_state,
             "off: schema version %d, need %d (run dermal migrate)", v, latest);
    dm_store_close(s->store);
    s->store = NULL;
    return DM_OK;
  }
  snprintf(s->store_state, sizeof s->store_state, "%s",
           strncmp(url, "postgres", 8) == 0 ? "postgresql" : "sqlite");
  return DM_OK;
fail:
  dm_store_close(s->store);
  s->store = NULL;
  return rc;
}

dm_err dm_server_new(const dm_server_config *c, dm_server **out,
                     dm_errbuf *eb) {
  if (!c || !out) return dm_errf(eb, DM_ARG, "server: no config");
  if (c->workers < 1 || c->threads < 1 || c->io_threads < 1 || c->queue < 0 ||
      c->max_upload_bytes < 1024 || !c->host || !c->model_path)
    return dm_errf(eb, DM_ARG, "server: invalid configuration");
  dm_server *s = calloc(1, sizeof *s);
  if (!s) return dm_errf(eb, DM_NOMEM, "server: out of memory");
  s->cfg = *c;
  if (s->cfg.api_token && !*s->cfg.api_token) s->cfg.api_token = NULL;
  s->qcap = c->queue > 0 ? c->queue : 4 * c->workers;
  s->t_start = dm__now_ms();
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  s->id_base = (uint32_t)((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 12) ^
                          ((uint64_t)getpid() << 20));
  pthread_mutex_init(&s->qmu, NULL);
  pthread_cond_init(&s->qcv, NULL);
  dm__log_set_json(c->log_json);
  dm_model_opts mo;
  memset(&mo, 0, sizeof mo);
  mo.backend = c->ref_backend ? DM_BACKEND_REF : DM_BACKEND_ONEDNN;
  mo.precision = (dm_precision)c->precision;
  mo.threads = c->threads;
  mo.gradcam = c->gradcam; /* builds the backward tail for Grad-CAM */
  dm__lc_init(&s->lc, c->model_path, &mo, c->retry_base_ms, c->retry_max_ms);

  dm_err rc = open_store(s, eb);
  if (rc) {
    dm_server_free(s);
    return rc;
  }
  if (c->preload) {
    double t0 = dm__now_ms();
    char err[256] = "";
    dm_model *m = dm__lc_get(&s->lc, err, sizeof err);
    if (m) {
      dm__log(DM__LOG_INFO,
              "PRELOAD_MODEL=true: model pre-loaded in %.1f ms (%s)",
              dm__now_ms() - t0, c->model_path);
      dm_model_release(m);
    } else {
      dm__log(DM__LOG_ERROR,
              "PRELOAD_MODEL=true: preload failed (%s); serving anyway: /ready "
              "is 503, loading is retried in the background every %d ms "
              "doubling to %d ms, and by prediction requests",
              err, s->lc.retry_base_ms, s->lc.retry_max_ms);
      dm__lc_start_retry(&s->lc);
    }
  } else {
    dm__log(DM__LOG_INFO,
            "PRELOAD_MODEL=false: model loading skipped at "
            "start; the first prediction request loads %s",
            c->model_path);
  }
  *out = s;
  return DM_OK;
}

dm_err dm_server_start(dm_server *s, dm_errbuf *eb) {
  s->workers = calloc((size_t)s->cfg.workers, sizeof *s->workers);
  if (!s->workers) return dm_errf(eb, DM_NOMEM, "server: out of memory");
  for (int i = 0; i < s->cfg.workers; i++) {
    if (pthread_create(&s->workers[i], NULL, worker_main, s))
      return dm_errf(eb, DM_NOMEM, "server: cannot start worker %d", i);
    s->n_workers++;
  }
  struct sockaddr_in a4;
  struct sockaddr_in6 a6;
  const struct sockaddr *sa;
  unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC |
                   MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
  memset(&a4, 0, sizeof a4);
  memset(&a6, 0, sizeof a6);
  if (inet_pton(AF_INET, s->cfg.host, &a4.sin_addr) == 1) {
    a4.sin_family = AF_INET;
    a4.sin_port = htons((uint16_t)s->cfg.port);
    sa = (const struct sockaddr *)&a4;
  } else if (inet_pton(AF_INET6, s->cfg.host, &a6.sin6_addr) == 1) {
    a6.sin6_family = AF_INET6;
    a6.sin6_port = htons((uint16_t)s->cfg.port);
    sa = (const struct sockaddr *)&a6;
    flags |= MHD_USE_IPv6;
  } else {
    return dm_errf(eb, DM_ARG,
                   "HOST must be a numeric IPv4 or IPv6 address, got '%s'",
                   s->cfg.host);
  }
  s->d = MHD_start_daemon(
      flags, (uint16_t)s->cfg.port, NULL, NULL, handler, s,
      MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, /* first, or MHD complains */
      MHD_OPTION_SOCK_ADDR, sa, MHD_OPTION_THREAD_POOL_SIZE,
      (unsigned)s->cfg.io_threads, MHD_OPTION_CONNECTION_TIMEOUT,
      (unsigned)s->cfg.timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
      HEADER_MEMORY, MHD_OPTION_CONNECTION_LIMIT, (unsigned)1000,
      MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)256,
      MHD_OPTION_NOTIFY_COMPLETED, completed, s, MHD_OPTION_END);
  if (!s->d)
    return dm_errf(eb, DM_IO,
                   "cannot listen on %s:%d (address in use or not "
                   "permitted?)",
                   s->cfg.host, s->cfg.port);
  const union MHD_DaemonInfo *di =
      MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
  s->port = di ? (int)di->port : s->cfg.port;
  dm__log(DM__LOG_INFO,
          "listening on http://%s:%d (workers=%d threads=%d io_threads=%d "
          "queue=%d max_upload=%zu MiB)",
          s->cfg.host, s->port, s->cfg.workers, s->cfg.threads,
          s->cfg.io_threads, s->qcap, s->cfg.max_upload_bytes >> 20);
  return DM_OK;
}

int dm_server_port(const dm_server *s) { return s->port; }

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

int dm_server_shutdown(dm_server *s, int drain_ms) {
  if (!s || s->shut) return 0;
  s->shut = true;
  atomic_store(&s->draining, true);
  MHD_socket lsock = MHD_INVALID_SOCKET;
  if (s->d) lsock = MHD_quiesce_daemon(s->d); /* stop accepting */
  /* MHD no longer polls the socket, but the kernel would still complete
   * handshakes into the backlog; shutting it down makes new connections
   * fail at once, so a load balancer moves on.  (Closed after stop.) */
  if (lsock != MHD_INVALID_SOCKET) shutdown(lsock, SHUT_RDWR);
  long long left = 0;
  if (s->d) {
    dm__log(DM__LOG_INFO,
            "shutting down: draining %lld in-flight request(s), "
            "up to %d ms",
            (long long)atomic_load(&s->met.in_flight), drain_ms);
    double deadline = dm__now_ms() + drain_ms;
    while ((left = atomic_load(&s->met.in_flight)) > 0 &&
           dm__now_ms() < deadline)
      sleep_ms(5);
  }
  /* Workers: finish the running inference, answer what is still queued with
   * 503, exit.  Every suspended connection is resumed by then. */
  pthread_mutex_lock(&s->qmu);
  s->qstop = true;
  pthread_cond_broadcast(&s->qcv);
  pthread_mutex_unlock(&s->qmu);
  for (int i = 0; i < s->n_workers; i++)
    pthread_join(s->workers[i], NULL);
  s->n_workers = 0;
  if (s->d) {
    /* Let the IO threads send what the workers just answered. */
    double deadline = dm__now_ms() + 1000;
    while (atomic_load(&s->met.in_flight) > 0 && dm__now_ms() < deadline &&
           left > 0)
      sleep_ms(5);
    MHD_stop_daemon(s->d);
    s->d = NULL;
    if (lsock != MHD_INVALID_SOCKET) close(lsock);
    if (left > 0)
      dm__log(DM__LOG_WARN, "drain timeout: %lld request(s) were unfinished",
              left);
  }
  dm__lc_deinit(&s->lc);
  dm_store_close(s->store);
  s->store = NULL;
  dm__log(DM__LOG_INFO, "stopped");
  return (int)left;
}

void dm_server_free(dm_server *s) {
  if (!s) return;
  dm_server_shutdown(s, 0);
  free(s->workers);
  pthread_cond_destroy(&s->qcv);
  pthread_mutex_destroy(&s->qmu);
  free(s);
}
