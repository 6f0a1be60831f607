/* config.c: server configuration defaults and the environment (12-factor).
 *
 * Purpose: one table of variables, their defaults and their parsing, so
 * `dermal serve --help`, the docs and the code agree.
 * Invariants: numbers go through strtoll with errno/end-pointer/range
 * checks; booleans accept true/false/1/0/yes/no/on/off; a bad value is an
 * error naming the variable, never silently replaced by a default.
 * Threading: reads the environment; call before starting threads. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "internal.h"

void dm_server_config_init(dm_server_config *c) {
  memset(c, 0, sizeof *c);
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  c->host = "0.0.0.0";
  c->port = 8000;
  c->model_path = "models/dermal-ham10000.onnx";
  c->preload = true;
  c->gradcam = true;
  c->workers = cpus > 0 ? (int)(cpus > 256 ? 256 : cpus) : 1;
  c->threads = 1;
  c->io_threads = 2;
  c->queue = 0; /* 0: 4 * workers, resolved in dm_server_new */
  c->max_upload_bytes = (size_t)20 * 1024 * 1024;
  c->max_pixels = 40000000;
  c->database_url = "sqlite:///dermal.db";
  c->store_images = false;
  c->images_dir = "dermal-images";
  c->memory_limit_mb = 0;
  c->log_json = false;
  c->api_token = NULL;
  c->timeout_s = 30;
  c->drain_ms = 10000;
  c->retry_base_ms = 1000;
  c->retry_max_ms = 60000;
}

static dm_err env_int(const char *name, long long lo, long long hi,
                      long long *out, bool *set, dm_errbuf *eb) {
  const char *v = getenv(name);
  *set = false;
  if (!v || !*v) return DM_OK;
  char *end;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  if (errno || end == v || *end || x < lo || x > hi)
    return dm_errf(eb, DM_ARG,
                   "%s must be an integer in %lld..%lld, got '%.40s'", name, lo,
                   hi, v);
  *out = x;
  *set = true;
  return DM_OK;
}

static dm_err env_bool(const char *name, bool *out, dm_errbuf *eb) {
  const char *v = getenv(name);
  if (!v || !*v) return DM_OK;
  static const char *const yes[] = {"1", "true", "yes", "on"};
  static const char *const no[] = {"0", "false", "no", "off"};
  for (int i = 0; i < 4; i++) {
    if (!strcasecmp(v, yes[i])) return *out = true, DM_OK;
    if (!strcasecmp(v, no[i])) return *out = false, DM_OK;
  }
  return dm_errf(eb, DM_ARG, "%s must be true or false, got '%.40s'", name, v);
}

static void env_str(const char *name, const char **out) {
  const char *v = getenv(name);
  if (v && *v) *out = v;
}

#define INT_FIELD(NAME, LO, HI, FIELD, TYPE)                                   \
  do {                                                                         \
    long long x_;                                                              \
    bool set_;                                                                 \
    if ((rc = env_int(NAME, LO, HI, &x_, &set_, eb))) return rc;               \
    if (set_) c->FIELD = (TYPE)x_;                                             \
  } while (0)

dm_err dm_server_config_from_env(dm_server_config *c, dm_errbuf *eb) {
  dm_err rc;
  env_str("HOST", &c->host);
  INT_FIELD("PORT", 0, 65535, port, int);
  env_str("MODEL_PATH", &c->model_path);
  if ((rc = env_bool("PRELOAD_MODEL", &c->preload, eb))) return rc;
  if ((rc = env_bool("ENABLE_GRADCAM", &c->gradcam, eb))) return rc;
  INT_FIELD("WORKERS", 1, 256, workers, int);
  INT_FIELD("THREADS", 1, 256, threads, int);
  INT_FIELD("IO_THREADS", 1, 64, io_threads, int);
  INT_FIELD("QUEUE_SIZE", 1, 100000, queue, int);
  {
    long long mb;
    bool set;
    if ((rc = env_int("MAX_UPLOAD_MB", 1, 4096, &mb, &set, eb))) return rc;
    if (set) c->max_upload_bytes = (size_t)mb * 1024 * 1024;
  }
  INT_FIELD("MAX_PIXELS", 64, 1000000000000LL, max_pixels, uint64_t);
  env_str("DATABASE_URL", &c->database_url);
  if ((rc = env_bool("STORE_IMAGES", &c->store_images, eb))) return rc;
  env_str("IMAGES_DIR", &c->images_dir);
  INT_FIELD("MEMORY_LIMIT_MB", 0, 1 << 24, memory_limit_mb, size_t);
  const char *lf = getenv("LOG_FORMAT");
  if (lf && *lf) {
    if (!strcasecmp(lf, "json"))
      c->log_json = true;
    else if (!strcasecmp(lf, "text"))
      c->log_json = false;
    else
      return dm_errf(eb, DM_ARG, "LOG_FORMAT must be text or json, got '%.40s'",
                     lf);
  }
  env_str("API_TOKEN", &c->api_token);
  INT_FIELD("CONNECTION_TIMEOUT_S", 1, 3600, timeout_s, int);
  INT_FIELD("DRAIN_TIMEOUT_MS", 0, 3600000, drain_ms, int);
  INT_FIELD("MODEL_RETRY_MS", 1, 3600000, retry_base_ms, int);
  INT_FIELD("MODEL_RETRY_MAX_MS", 1, 3600000, retry_max_ms, int);
  INT_FIELD("DERMAL_DEBUG_INFER_DELAY_MS", 0, 600000, debug_delay_ms, int);
  const char *be = getenv("BACKEND");
  if (be && *be) {
    if (!strcasecmp(be, "ref"))
      c->ref_backend = true;
    else if (!strcasecmp(be, "onednn"))
      c->ref_backend = false;
    else
      return dm_errf(eb, DM_ARG, "BACKEND must be onednn or ref, got '%.40s'",
                     be);
  }
  const char *pr = getenv("PRECISION");
  if (pr && *pr) {
    if (!strcasecmp(pr, "fp32"))
      c->precision = DM_PRECISION_FP32;
    else if (!strcasecmp(pr, "bf16"))
      c->precision = DM_PRECISION_BF16;
    else if (!strcasecmp(pr, "auto"))
      c->precision = DM_PRECISION_AUTO;
    else
      return dm_errf(eb, DM_ARG,
                     "PRECISION must be fp32, bf16 or auto, got '%.40s'", pr);
  }
  return DM_OK;
}
