/* serve.c: `dermal serve` and `dermal migrate`.
 *
 * Purpose: turn environment + flags into a dm_server_config, run the server
 * until SIGTERM/SIGINT, drain, exit 0; apply store migrations without ever
 * touching the model.
 * Invariants: flags override environment variables, which override the
 * defaults in dm_server_config_init; `migrate` and `--help` never open the
 * model file.  OpenMP reads OMP_WAIT_POLICY when libgomp is loaded (before
 * main), so with THREADS > 1 `serve` re-executes itself once with
 * OMP_WAIT_POLICY=PASSIVE when the variable is unset: spinning OpenMP
 * workers make inference up to 100x slower when another process competes
 * for the cores.  With THREADS=1 (the default) every OpenMP team has one
 * thread, no OpenMP worker thread is ever created (the process has the main
 * thread, the inference workers and libmicrohttpd's threads, nothing else),
 * so nothing can spin and the re-exec, which loads the ~40 shared
 * libraries a second time (~50 ms of a cold start), is skipped.  (Setting
 * the variable from main or from the executable's .preinit_array is too
 * late or undone: glibc's initialiser resets environ before libgomp's
 * runs.)  Setting OMP_WAIT_POLICY yourself (to any value) skips the
 * re-exec.
 * Threading: SIGTERM/SIGINT are blocked before any thread starts (threads
 * inherit the mask) and received with sigwait() in the main thread, so the
 * shutdown runs in normal (not signal-handler) context. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "dermal/engine.h"
#include "dermal/server.h"
#include "dermal/store.h"
#include "util.h"

/* Re-executes /proc/self/exe with the same argv and OMP_WAIT_POLICY=PASSIVE.
 * Returns only if that is not possible (then serving goes on, with a
 * warning). */
static void reexec_passive(void) {
  if (getenv("OMP_WAIT_POLICY")) return;
  if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1)) return;
  int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
  if (fd < 0) goto warn;
  static char buf[65536];
  size_t n = 0;
  ssize_t k;
  while (n < sizeof buf - 1 && (k = read(fd, buf + n, sizeof buf - 1 - n)) > 0)
    n += (size_t)k;
  close(fd);
  if (n == 0 || n >= sizeof buf - 1) goto warn;
  buf[n] = 0;
  char *args[512];
  size_t na = 0;
  for (size_t i = 0; i < n && na < 511; i += strlen(buf + i) + 1)
    args[na++] = buf + i;
  args[na] = NULL;
  execv("/proc/self/exe", args);
warn:
  fprintf(stderr, "dermal: warning: could not re-execute with "
                  "OMP_WAIT_POLICY=PASSIVE; set it in the environment\n");
}

static void serve_usage(FILE *f) {
  fprintf(
      f,
      "usage: dermal serve [--model PATH] [options]\n"
      "\n"
      "Serves the web page and the JSON API.  Every option also has an\n"
      "environment variable (flags win):\n"
      "  --model PATH        MODEL_PATH      models/dermal-ham10000.onnx\n"
      "  --host ADDR         HOST            0.0.0.0 (numeric IPv4/IPv6)\n"
      "  --port N            PORT            8000\n"
      "  --preload/--lazy    PRELOAD_MODEL   true: load before listening\n"
      "  --gradcam/--no-gradcam ENABLE_GRADCAM true\n"
      "  --workers N         WORKERS         CPU count: inference threads\n"
      "  --threads N         THREADS         1: intra-op threads each\n"
      "  --queue N           QUEUE_SIZE      4 x WORKERS: then 503\n"
      "  --max-upload-mb N   MAX_UPLOAD_MB   20\n"
      "  --max-pixels N      MAX_PIXELS      40000000\n"
      "  --database-url URL  DATABASE_URL    sqlite:///dermal.db (none: off)\n"
      "  --log-format F      LOG_FORMAT      text | json\n"
      "  --backend B         BACKEND         onednn | ref\n"
      "  --precision P       PRECISION       fp32 | bf16 | auto (bf16 where\n"
      "                                      the CPU runs it natively)\n"
      "Environment only: STORE_IMAGES (false), IMAGES_DIR (dermal-images),\n"
      "MEMORY_LIMIT_MB (off; Grad-CAM shed at 80%%, requests at 95%%),\n"
      "API_TOKEN (bearer token for the API and /history; unset: /history\n"
      "loopback only), IO_THREADS (2), CONNECTION_TIMEOUT_S (30),\n"
      "DRAIN_TIMEOUT_MS (10000), MODEL_RETRY_MS (1000) doubling to\n"
      "MODEL_RETRY_MAX_MS (60000).\n"
      "\n"
      "Routes: GET / (web page), POST /upload (multipart field 'image'),\n"
      "POST /api/v1/predict (raw image body), GET /health[?verbose=1],\n"
      "GET /ready, GET /metrics, GET /history[?limit=N&before=ID].\n"
      "SIGTERM/SIGINT: stop accepting, finish in-flight requests, exit 0.\n");
}

int dm_cli_serve(int argc, char **argv) {
  dm_server_config c;
  dm_server_config_init(&c);
  dm_errbuf eb = {{0}};
  for (int i = 0; i < argc; i++)
    if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
      serve_usage(stdout);
      return 0;
    }
  if (dm_server_config_from_env(&c, &eb)) {
    fprintf(stderr, "dermal serve: %s\n", eb.msg);
    return 2;
  }
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    long v;
    if (!strcmp(a, "--preload")) {
      c.preload = true;
      continue;
    }
    if (!strcmp(a, "--lazy")) {
      c.preload = false;
      continue;
    }
    if (!strcmp(a, "--gradcam")) {
      c.gradcam = true;
      continue;
    }
    if (!strcmp(a, "--no-gradcam")) {
      c.gradcam = false;
      continue;
    }
    if (a[0] != '-') {
      c.model_path = a;
      continue;
    }
    if (i + 1 >= argc) {
      fprintf(
          stderr,
          "dermal serve: unknown option or missing value: '%s' (see --help)\n",
          a);
      return 2;
    }
    const char *val = argv[++i];
    if (!strcmp(a, "--model"))
      c.model_path = val;
    else if (!strcmp(a, "--host"))
      c.host = val;
    else if (!strcmp(a, "--database-url"))
      c.database_url = val;
    else if (!strcmp(a, "--port")) {
      if (dm_cli_parse_long(a, val, 0, 65535, &v)) return 2;
      c.port = (int)v;
    } else if (!strcmp(a, "--workers")) {
      if (dm_cli_parse_long(a, val, 1, 256, &v)) return 2;
      c.workers = (int)v;
    } else if (!strcmp(a, "--threads")) {
      if (dm_cli_parse_long(a, val, 1, 256, &v)) return 2;
      c.threads = (int)v;
    } else if (!strcmp(a, "--queue")) {
      if (dm_cli_parse_long(a, val, 1, 100000, &v)) return 2;
      c.queue = (int)v;
    } else if (!strcmp(a, "--max-upload-mb")) {
      if (dm_cli_parse_long(a, val, 1, 4096, &v)) return 2;
      c.max_upload_bytes = (size_t)v << 20;
    } else if (!strcmp(a, "--max-pixels")) {
      if (dm_cli_parse_long(a, val, 64, 2000000000L, &v)) return 2;
      c.max_pixels = (uint64_t)v;
    } else if (!strcmp(a, "--log-format")) {
      if (strcmp(val, "text") && strcmp(val, "json")) {
        fprintf(stderr, "dermal serve: --log-format is text or json\n");
        return 2;
      }
      c.log_json = !strcmp(val, "json");
    } else if (!strcmp(a, "--backend")) {
      if (strcmp(val, "ref") && strcmp(val, "onednn")) {
        fprintf(stderr, "dermal serve: --backend is onednn or ref\n");
        return 2;
      }
      c.ref_backend = !strcmp(val, "ref");
    } else if (!strcmp(a, "--precision")) {
      dm_precision pr;
      if (dm_cli_parse_precision(a, val, &pr)) return 2;
      c.precision = pr;
    } else {
      fprintf(stderr, "dermal serve: unknown option '%s' (see --help)\n", a);
      return 2;
    }
  }
  if (c.threads > 1) reexec_passive();

  /* Before any thread exists: every thread inherits the blocked set. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);

  dm_server *s = NULL;
  if (dm_server_new(&c, &s, &eb)) {
    fprintf(stderr, "dermal serve: %s\n", eb.msg);
    return 1;
  }
  if (dm_server_start(s, &eb)) {
    fprintf(stderr, "dermal serve: %s\n", eb.msg);
    dm_server_free(s);
    return 1;
  }
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  fprintf(stderr, "dermal serve: %s received, draining\n",
          sig == SIGTERM ? "SIGTERM" : "SIGINT");
  dm_server_shutdown(s, c.drain_ms);
  dm_server_free(s);
  return 0;
}

static void migrate_usage(FILE *f) {
  fprintf(
      f,
      "usage: dermal migrate [--database-url URL] [--to VERSION] [--status]\n"
      "\n"
      "Applies the history-store migrations (DATABASE_URL, default\n"
      "sqlite:///dermal.db; three slashes: relative path, four: absolute).\n"
      "--to V migrates up or down to schema version V (0 removes every\n"
      "table dermal created); --status only prints the version.\n"
      "Never opens the model.\n");
}

int dm_cli_migrate(int argc, char **argv) {
  const char *url = getenv("DATABASE_URL");
  if (!url || !*url) url = "sqlite:///dermal.db";
  long target = -1;
  int status_only = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      migrate_usage(stdout);
      return 0;
    }
    if (!strcmp(a, "--status")) {
      status_only = 1;
    } else if (!strcmp(a, "--database-url") && i + 1 < argc) {
      url = argv[++i];
    } else if (!strcmp(a, "--to") && i + 1 < argc) {
      if (dm_cli_parse_long(a, argv[++i], 0, dm_store_latest_version(),
                            &target))
        return 2;
    } else {
      fprintf(stderr, "dermal migrate: unknown option '%s' (see --help)\n", a);
      return 2;
    }
  }
  const char *mp = getenv("MODEL_PATH");
  printf("model: skipped (migrate does not need the model; %s not opened)\n",
         mp && *mp ? mp : "models/dermal-ham10000.onnx");
  if (dm_store_url_disabled(url)) {
    printf("store: off (DATABASE_URL=%s): nothing to migrate\n", url);
    return 0;
  }
  dm_errbuf eb = {{0}};
  dm_store *s = NULL;
  char shown[512]; /* the URL without its password, for output */
  dm_store_url_redact(url, shown, sizeof shown);
  if (dm_store_open(url, &s, &eb)) {
    fprintf(stderr, "dermal migrate: %s\n", eb.msg);
    return 1;
  }
  int before = 0, after = 0, steps = 0, rc = 0;
  if (dm_store_version(s, &before, &eb)) goto fail;
  if (status_only) {
    printf("store: %s at schema version %d (latest %d)\n", shown, before,
           dm_store_latest_version());
    dm_store_close(s);
    return 0;
  }
  if (dm_store_migrate(s, (int)target, &steps, &eb)) goto fail;
  if (dm_store_version(s, &after, &eb)) goto fail;
  /* another migrator may have run the steps while we waited for its lock:
   * name steps only when this process ran them */
  for (int v = before + 1; steps && v <= after; v++)
    printf("applied %d: %s\n", v, dm_store_migration_name(v));
  for (int v = before; steps && v > after; v--)
    printf("reverted %d: %s\n", v, dm_store_migration_name(v));
  printf("store: %s at schema version %d (%d step%s)\n", shown, after, steps,
         steps == 1 ? "" : "s");
  dm_store_close(s);
  return 0;
fail:
  fprintf(stderr, "dermal migrate: %s\n", eb.msg);
  dm_store_close(s);
  rc = 1;
  return rc;
}
