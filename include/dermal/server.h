/* dermal server: the HTTP service (libmicrohttpd) in front of the model
 * layer: routes, limits, model lifecycle (preload / lazy / loaded once /
 * retried after failure), bounded inference queue, metrics, history.
 *
 * Lifecycle of a dm_server:
 *   dm_server_config_init(&c); dm_server_config_from_env(&c, ...);
 *   (CLI flags override fields)
 *   dm_server_new(&c, &s, &eb);   opens the store, preloads the model
 *                                 (a failed preload is logged and retried
 *                                 in the background, not returned)
 *   dm_server_start(s, &eb);      starts listening
 *   ... dm_server_shutdown(s, drain_ms) ... dm_server_free(s);
 *
 * Threading: dm_server_new/start/shutdown/free from one controlling thread.
 * dm_server_shutdown is not async-signal-safe: block SIGTERM/SIGINT before
 * dm_server_new (threads inherit the mask) and sigwait() for them. */
#ifndef DERMAL_SERVER_H
#define DERMAL_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dermal/err.h"

typedef struct dm_server dm_server;

/* Strings are borrowed and must outlive the server (environment strings and
 * argv do).  Environment variable -> field, default: */
typedef struct dm_server_config {
  const char *host;         /* HOST, "0.0.0.0" (IPv4 address or "::") */
  int port;                 /* PORT, 8000 (0: pick a free one, see
                               dm_server_port) */
  const char *model_path;   /* MODEL_PATH, "models/dermal-ham10000.onnx" */
  bool preload;             /* PRELOAD_MODEL, true */
  bool gradcam;             /* ENABLE_GRADCAM, true */
  int workers;              /* WORKERS, number of online CPUs: inference
                               threads, one predictor each */
  int threads;              /* THREADS, 1: intra-op threads per inference */
  int io_threads;           /* IO_THREADS, 2: libmicrohttpd epoll threads */
  int queue;                /* QUEUE_SIZE, 4 * workers: requests waiting for
                               a worker before 503 */
  size_t max_upload_bytes;  /* MAX_UPLOAD_MB, 20 MiB */
  uint64_t max_pixels;      /* MAX_PIXELS, 40000000 */
  const char *database_url; /* DATABASE_URL, "sqlite:///dermal.db"; "none"
                               disables the store */
  bool store_images;        /* STORE_IMAGES, false */
  const char *images_dir;   /* IMAGES_DIR, "dermal-images" */
  size_t memory_limit_mb;   /* MEMORY_LIMIT_MB, 0 = no limit */
  bool log_json;            /* LOG_FORMAT=json (default text) */
  const char *api_token;    /* API_TOKEN, NULL: none */
  int timeout_s;            /* CONNECTION_TIMEOUT_S, 30: idle/slow clients */
  int drain_ms;             /* DRAIN_TIMEOUT_MS, 10000 */
  int retry_base_ms;        /* MODEL_RETRY_MS, 1000: first background retry
                               after a failed preload, doubling ... */
  int retry_max_ms;         /* MODEL_RETRY_MAX_MS, 60000: ... up to this */
  bool ref_backend;         /* BACKEND=ref (default onednn) */
  int precision;            /* PRECISION=fp32|bf16|auto: a dm_precision
                               value (engine.h), default fp32 */
  int debug_delay_ms;       /* DERMAL_DEBUG_INFER_DELAY_MS, 0: tests only,
                               sleeps in the worker before each inference */
} dm_server_config;

void dm_server_config_init(dm_server_config *c);

/* Reads the variables above from the environment into c (unset variables
 * leave c alone).  DM_ARG with the variable named in eb on a bad value. */
dm_err dm_server_config_from_env(dm_server_config *c, dm_errbuf *eb);

/* Validates c, opens the store (migrating a new database), and preloads the
 * model when c->preload.  Errors: DM_ARG (bad config), DM_DB/DM_UNSUPPORTED
 * (store), DM_NOMEM.  A model that fails to load is not an error. */
dm_err dm_server_new(const dm_server_config *c, dm_server **out, dm_errbuf *eb);
/* Starts the HTTP daemon.  DM_IO when the address cannot be bound. */
dm_err dm_server_start(dm_server *s, dm_errbuf *eb);
/* The bound TCP port (after start). */
int dm_server_port(const dm_server *s);
/* Stops accepting, lets in-flight requests finish for up to drain_ms
 * (queued requests not started by then get 503), stops the daemon and the
 * workers, closes the store.  Idempotent.  Returns the number of requests
 * that were still unfinished at the deadline (0 = clean drain). */
int dm_server_shutdown(dm_server *s, int drain_ms);
void dm_server_free(dm_server *s); /* NULL ok; shuts down first */

#endif
