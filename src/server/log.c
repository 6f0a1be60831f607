/* log.c: the server's log lines on stderr, as text or JSON (LOG_FORMAT).
 *
 * Purpose: one line per event or per request (id, method, path, status,
 * ms), machine-readable when LOG_FORMAT=json.
 * Invariants: every line is written with a single fputs of a fully
 * formatted buffer, so lines from different threads never interleave;
 * messages are JSON-escaped in json mode (they may quote paths or errors).
 * Threading: the format flag is an atomic set once at start-up. */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

static atomic_bool log_json;

void dm__log_set_json(bool json) { atomic_store(&log_json, json); }

double dm__now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void timestamp(char *buf, size_t n) {
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  char tmp[32];
  strftime(tmp, sizeof tmp, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf, n, "%s.%03dZ", tmp, (int)(ts.tv_nsec / 1000000));
}

/* Client-supplied text may not be UTF-8: json_string refuses it. */
static json_t *jstr(const char *s) {
  json_t *j = json_string(s);
  return j ? j : json_string("(invalid utf-8)");
}

static const char *level_name(dm__log_level lv) {
  return lv == DM__LOG_ERROR ? "error" : lv == DM__LOG_WARN ? "warn" : "info";
}

static void emit_json(json_t *o) {
  char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
  if (s) {
    size_t n = strlen(s);
    char *line = malloc(n + 2);
    if (line) {
      memcpy(line, s, n);
      line[n] = '\n';
      line[n + 1] = 0;
      fputs(line, stderr);
      free(line);
    }
    free(s);
  }
  json_decref(o);
}

void dm__log(dm__log_level lv, const char *fmt, ...) {
  char msg[1024], ts[40];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  timestamp(ts, sizeof ts);
  if (atomic_load(&log_json)) {
    json_t *o = json_object();
    if (!o) return;
    json_object_set_new(o, "ts", json_string(ts));
    json_object_set_new(o, "level", json_string(level_name(lv)));
    json_object_set_new(o, "msg", jstr(msg));
    emit_json(o);
    return;
  }
  char line[1200];
  snprintf(line, sizeof line, "%s %-5s %s\n", ts, level_name(lv), msg);
  fputs(line, stderr);
}

void dm__log_access(const char *id, const char *method, const char *path,
                    int status, double ms, size_t bytes_in) {
  char ts[40];
  timestamp(ts, sizeof ts);
  if (atomic_load(&log_json)) {
    json_t *o = json_object();
    if (!o) return;
    json_object_set_new(o, "ts", json_string(ts));
    json_object_set_new(o, "level", json_string("info"));
    json_object_set_new(o, "request_id", jstr(id));
    json_object_set_new(o, "method", jstr(method));
    json_object_set_new(o, "path", jstr(path));
    json_object_set_new(o, "status", json_integer(status));
    json_object_set_new(o, "ms",
                        json_real((double)(long long)(ms * 1000) / 1000.0));
    json_object_set_new(o, "bytes_in", json_integer((json_int_t)bytes_in));
    emit_json(o);
    return;
  }
  /* The path comes from the client: drop control characters so a request
   * cannot forge log lines. */
  char safe[256];
  size_t j = 0;
  for (const char *p = path; *p && j + 1 < sizeof safe; p++)
    safe[j++] = ((unsigned char)*p < 0x20 || *p == 0x7f) ? '?' : *p;
  safe[j] = 0;
  char line[512];
  snprintf(line, sizeof line, "%s info  req=%s %s %s %d %.1fms in=%zu\n", ts,
           id, method, safe, status, ms, bytes_in);
  fputs(line, stderr);
}
