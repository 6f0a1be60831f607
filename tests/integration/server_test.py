"""Integration test of `dermal serve` / `dermal migrate` (run by test_server.sh).

Starts the real binary on free loopback ports and speaks HTTP to it with the
standard library only.  usage: server_test.py DERMAL_BINARY WORKDIR
(WORKDIR holds the files make_server_models.py wrote).  Prints `ok`/`FAIL`
lines and a final `test_server: N passed, N failed` line.
"""
import base64
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

DERMAL, W = sys.argv[1], sys.argv[2]
LABELS = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
passed = failed = 0
SLOW = 3.0 if os.environ.get("ASAN_OPTIONS") or "asan" in DERMAL else 1.0


def check(cond, label, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print("ok   " + label)
    else:
        failed += 1
        print("FAIL " + label + (": " + str(detail)[:400] if detail != "" else ""))
    sys.stdout.flush()
    return cond


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def read(name):
    with open(os.path.join(W, name), "rb") as f:
        return f.read()


class Server:
    def __init__(self, tag, env=None, args=None):
        self.port = free_port()
        self.log = os.path.join(W, tag + ".log")
        e = dict(os.environ)
        e.update({"PORT": str(self.port), "HOST": "127.0.0.1",
                  "MODEL_PATH": os.path.join(W, "ham7.onnx"),
                  "DATABASE_URL": "none", "WORKERS": "2",
                  "MODEL_RETRY_MS": "100", "MODEL_RETRY_MAX_MS": "400"})
        e.update(env or {})
        self.logf = open(self.log, "wb")
        self.t0 = time.monotonic()
        self.p = subprocess.Popen([DERMAL, "serve"] + (args or []), env=e,
                                  stdout=self.logf, stderr=subprocess.STDOUT)
        self.ready_ms = None
        deadline = time.monotonic() + 10 * SLOW
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                self.ready_ms = (time.monotonic() - self.t0) * 1000
                break
            except OSError:
                time.sleep(0.01)

    def req(self, method, path, body=None, headers=None, timeout=20):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout * SLOW)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data
        finally:
            c.close()

    def json(self, method, path, body=None, headers=None):
        st, h, data = self.req(method, path, body, headers)
        try:
            return st, h, json.loads(data)
        except ValueError:
            return st, h, {"_raw": data[:200]}

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            rc = self.p.wait(timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = self.p.wait()
        self.logf.close()
        return rc

    def logtext(self):
        with open(self.log, "rb") as f:
            return f.read().decode("utf-8", "replace")


def multipart(fields):
    """fields: list of (name, filename or None, bytes)."""
    b = uuid.uuid4().hex
    out = b""
    for name, fn, data in fields:
        out += b"--" + b.encode() + b"\r\n"
        if fn:
            out += ('Content-Disposition: form-data; name="%s"; filename="%s"\r\n'
                    'Content-Type: application/octet-stream\r\n\r\n' % (name, fn)).encode()
        else:
            out += ('Content-Disposition: form-data; name="%s"\r\n\r\n' % name).encode()
        out += data + b"\r\n"
    out += b"--" + b.encode() + b"--\r\n"
    return out, {"Content-Type": "multipart/form-data; boundary=" + b}


def upload(srv, data, fn="lesion.jpg", query="", extra=None):
    body, h = multipart([("image", fn, data)] + (extra or []))
    return srv.json("POST", "/upload" + query, body, h)


def is_error_json(d):
    return isinstance(d, dict) and isinstance(d.get("error"), str) and d["error"]


JPG, PNG = read("lesion.jpg"), read("lesion.png")

# ---------------------------------------------------------------- preload
s = Server("preload", {"DATABASE_URL": "sqlite:///" + os.path.join(W, "hist.db"),
                       "MAX_UPLOAD_MB": "1", "MAX_PIXELS": "50000"})
check(s.ready_ms is not None, "preload server listens", s.logtext())
print("     (listening %.0f ms after exec)" % (s.ready_ms or -1))
st, h, d = s.json("GET", "/health")
check(st == 200 and d == {"status": "ok"}, "GET /health", (st, d))
st, h, d = s.json("GET", "/health?verbose=1")
keys = ["status", "model_loaded", "model_load_ms", "model_path", "model_sha256",
        "preload_mode", "gradcam_enabled", "rss_mb", "peak_rss_mb", "uptime_s",
        "requests_total", "last_model_error", "model_loads", "precision", "int8_ops",
        "int8_unfused"]
check(st == 200 and all(k in d for k in keys), "verbose health has every key",
      [k for k in keys if k not in d])
check(d.get("model_loaded") is True and d.get("model_loads") == 1 and
      d.get("preload_mode") == "preload" and d.get("last_model_error") is None and
      len(d.get("model_sha256") or "") == 64, "preloaded before listening", d)
check(0 < d.get("rss_mb", 0) < 200, "rss reported", d.get("rss_mb"))
st, h, d = s.json("GET", "/ready")
check(st == 200 and d.get("ready") is True, "GET /ready 200 when loaded", (st, d))
st, h, body = s.req("GET", "/")
txt = body.decode("utf-8", "replace")
check(st == 200 and h.get("content-type", "").startswith("text/html") and
      "not a medical diagnosis" in txt.lower() and "drop" in txt.lower(),
      "GET / serves the page with the disclaimer", (st, h.get("content-type")))
st, h, body = s.req("HEAD", "/")
check(st == 200 and body == b"", "HEAD /", st)

st, h, d = upload(s, JPG)
ok = st == 200 and d.get("label") in LABELS and len(d.get("top", [])) == 7
check(ok, "POST /upload (multipart image) 200", (st, d))
if ok:
    check(abs(sum(d["probabilities"].values()) - 1) < 1e-3 and
          d["top"][0]["label"] == d["label"] and d["top"][0]["name"] and
          d["model"]["sha256"] and d["model"]["name"] == "ham7-test" and
          d["model"]["version"] == "test-1" and d["request_id"] == h.get("x-request-id") and
          d.get("image") == "lesion.jpg" and "inference" in d.get("ms", {}),
          "upload answer: labels, probabilities, model, request_id, timings", d)
    check(all(k in d and d[k] is None for k in ("in_distribution", "ood_score", "ood_threshold")),
          "upload answer: OOD keys (null: the test model has no OOD output)", d)
st, h, d = s.json("POST", "/api/v1/predict?top=3", PNG, {"Content-Type": "image/png"})
check(st == 200 and len(d.get("top", [])) == 3 and "image" not in d,
      "POST /api/v1/predict raw body, top=3", (st, d))
st, h, d = upload(s, JPG, query="", extra=[("top", None, b"2")])
check(st == 200 and len(d.get("top", [])) == 2, "top as a form field", (st, d))
st, h, d = s.json("POST", "/api/v1/predict", JPG, {"X-Request-Id": "abc-123"})
check(st == 200 and d.get("request_id") == "abc-123" and h.get("x-request-id") == "abc-123",
      "X-Request-Id honoured", (st, d.get("request_id")))

# errors
body, hd = multipart([("other", "x.jpg", JPG)])
st, h, d = s.json("POST", "/upload", body, hd)
check(st == 400 and is_error_json(d), "no image part -> 400", (st, d))
st, h, d = s.json("POST", "/upload", JPG, {"Content-Type": "image/jpeg"})
check(st == 400 and is_error_json(d), "upload without multipart -> 400", (st, d))
st, h, d = s.json("POST", "/api/v1/predict", b"")
check(st == 400 and is_error_json(d), "empty body -> 400", (st, d))
st, h, d = s.json("POST", "/api/v1/predict?top=abc", JPG)
check(st == 400 and is_error_json(d), "top=abc -> 400", (st, d))
st, h, d = s.json("POST", "/api/v1/predict", read("notimage.bin"))
check(st == 415 and is_error_json(d), "not an image -> 415", (st, d))
st, h, d = s.json("POST", "/api/v1/predict", read("truncated.jpg"))
check(st == 415 and is_error_json(d), "truncated JPEG -> 415", (st, d))
st, h, d = upload(s, read("tiny.png"), "tiny.png")
check(st == 422 and is_error_json(d), "4x4 image -> 422", (st, d))
st, h, d = s.json("POST", "/api/v1/predict", read("big.png"))
check(st == 422 and is_error_json(d), "more than MAX_PIXELS -> 422", (st, d))
big = b"\xff\xd8" + os.urandom(2 * 1024 * 1024)
st, h, d = s.json("POST", "/api/v1/predict", big)
check(st == 413 and is_error_json(d), "2 MB body, MAX_UPLOAD_MB=1 -> 413", (st, d))
st, h, d = upload(s, big)
check(st == 413 and is_error_json(d), "2 MB multipart -> 413", (st, d))


def chunks():
    for _ in range(40):
        yield b"\x00" * 65536


c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=20)
try:
    c.request("POST", "/api/v1/predict", body=chunks(),
              headers={"Transfer-Encoding": "chunked"}, encode_chunked=True)
    r = c.getresponse()
    st, d = r.status, json.loads(r.read() or b"{}")
except (OSError, http.client.HTTPException, ValueError) as ex:
    st, d = repr(ex), {}
c.close()
check(st == 413, "chunked 2.5 MB body -> 413 (counted while streaming)", (st, d))
st, h, d = s.json("POST", "/api/v1/predict?gradcam=1", JPG)
png = base64.b64decode(d.get("heatmap_png") or "")
check(st == 200 and d.get("heatmap_status") == "ok" and png.startswith(b"\x89PNG") and
      d.get("gradcam", {}).get("class") == d.get("label"), "gradcam=1 -> heatmap PNG",
      (st, {k: v for k, v in d.items() if k != "heatmap_png"}))
st, h, d = upload(s, JPG, extra=[("gradcam", None, b"1")])
check(st == 200 and d.get("heatmap_status") == "ok", "gradcam as a form field", (st, d.get("heatmap_status")))
st, h, d = s.json("POST", "/api/v1/predict?gradcam=maybe", JPG)
check(st == 400, "gradcam=maybe -> 400", st)
# per-request Grad-CAM options: class, method, alpha, heatmap size
st, h, d = s.json("POST", "/api/v1/predict?gradcam=1&gradcam_class=vasc&gradcam_method=gradcampp"
                  "&heatmap_max=64&alpha=1", JPG)
g = d.get("gradcam", {})
png = base64.b64decode(d.get("heatmap_png") or "")
import struct as _st
w_, h_ = _st.unpack(">II", png[16:24]) if len(png) > 24 else (0, 0)
check(st == 200 and g.get("class") == "vasc" and g.get("method") == "gradcampp" and
      max(w_, h_) <= 64 and g.get("width") == w_ and g.get("alpha") == 1,
      "gradcam_class/method/heatmap_max/alpha honoured", (st, g, w_, h_))
st, h, d = upload(s, JPG, extra=[("gradcam", None, b"1"), ("gradcam_class", None, b"mel")])
check(st == 200 and d.get("gradcam", {}).get("class") == "mel", "gradcam_class as a form field",
      (st, d.get("gradcam")))
for bad in ["gradcam_class=nope", "gradcam_method=magic", "alpha=2", "heatmap_max=5", "history=maybe"]:
    st, h, d = s.json("POST", "/api/v1/predict?gradcam=1&" + bad, JPG)
    check(st == 400 and is_error_json(d), bad + " -> 400", (st, d))
st, h, d = s.json("GET", "/nope")
check(st == 404 and is_error_json(d), "unknown route -> 404", (st, d))
st, h, d = s.json("GET", "/upload")
check(st == 405 and h.get("allow") == "POST" and is_error_json(d), "GET /upload -> 405 Allow: POST",
      (st, h.get("allow")))
st, h, d = s.json("DELETE", "/health")
check(st == 405 and "GET" in h.get("allow", ""), "DELETE /health -> 405 Allow: GET", (st, h))
st, h, d = s.json("PUT", "/api/v1/predict", JPG)
check(st == 405 and h.get("allow") == "POST", "PUT /api/v1/predict -> 405", (st, h))

# history
st, h, d = s.json("GET", "/history?limit=2")
ok = st == 200 and len(d.get("items", [])) == 2 and d.get("total", 0) >= 4
check(ok, "GET /history (loopback, store on)", (st, d))
if ok:
    ids = [it["id"] for it in d["items"]]
    check(ids == sorted(ids, reverse=True) and d["next_before"] == ids[-1] and
          len(d["items"][0]["image_sha256"]) == 64, "history newest first, cursor", d)
    st, h, d2 = s.json("GET", "/history?limit=2&before=%d" % d["next_before"])
    check(st == 200 and all(it["id"] < ids[-1] for it in d2.get("items", [])) and
          len(d2.get("items", [])) >= 1, "history next page", d2)
st, h, d = s.json("GET", "/history?limit=100")
check(st == 200 and any(it["request_id"] == "abc-123" for it in d.get("items", [])),
      "history records the request id", st)
st, h, d = s.json("GET", "/history?limit=0")
check(st == 400, "history limit=0 -> 400", st)
st, h, d = s.json("GET", "/history?limit=100")
n_before = len(d.get("items", []))
st, h, d = s.json("POST", "/api/v1/predict?gradcam=1&history=0", JPG)
st2, h, d2 = s.json("GET", "/history?limit=100")
check(st == 200 and len(d2.get("items", [])) == n_before,
      "history=0 answers but stores nothing (page re-explanations)", (st, n_before, len(d2.get("items", []))))

# metrics
st, h, body = s.req("GET", "/metrics")
m = body.decode()
check(st == 200 and h.get("content-type", "").startswith("text/plain") and
      'dermal_http_requests_total{route="/upload",status="200"}' in m and
      'dermal_http_requests_total{route="/api/v1/predict",status="415"}' in m and
      "dermal_inference_seconds_bucket" in m and "dermal_decode_seconds_count" in m and
      "dermal_model_load_seconds" in m and "dermal_resident_memory_bytes" in m and
      "dermal_in_flight_requests" in m and "dermal_queue_rejections_total" in m and
      'dermal_gradcam_seconds_count' in m,
      "GET /metrics (Prometheus text)", m[:300])
rc = s.stop()
check(rc == 0, "SIGTERM -> exit 0", rc)
log = s.logtext()
check("model pre-loaded" in log and "listening on" in log, "start-up log says pre-loaded", log[-500:])
check(" 413 " in log and "POST /upload 200" in log, "access log lines with status", log[-300:])

# ---------------------------------------------------------------- lazy: 50 at once
s = Server("lazy", {"PRELOAD_MODEL": "false", "WORKERS": "8", "QUEUE_SIZE": "64",
                    "IO_THREADS": "4"})
check(s.ready_ms is not None, "lazy server listens", s.logtext())
s.req("GET", "/")
s.req("GET", "/health")
st, h, d = s.json("GET", "/health?verbose=1")
check(d.get("model_loaded") is False and d.get("model_load_attempts") == 0 and
      d.get("preload_mode") == "lazy", "lazy: / and /health do not load", d)
st, h, d = s.json("GET", "/ready")
check(st == 200, "lazy: /ready 200 before the first load", (st, d))
results = []
barrier = threading.Barrier(50)


def first_request(i):
    try:
        barrier.wait(10)
        if i % 2:
            results.append(upload(s, JPG)[0])
        else:
            results.append(s.json("POST", "/api/v1/predict", PNG)[0])
    except Exception as ex:  # noqa: BLE001 - any failure is a test failure
        results.append(repr(ex))


ts = [threading.Thread(target=first_request, args=(i,)) for i in range(50)]
for t in ts:
    t.start()
for t in ts:
    t.join()
check(results.count(200) == 50, "50 concurrent first requests all 200",
      [r for r in results if r != 200][:5])
st, h, d = s.json("GET", "/health?verbose=1")
check(d.get("model_loads") == 1 and d.get("model_load_attempts") == 1 and d.get("model_loaded"),
      "model loaded exactly once", d)
check(s.stop() == 0, "lazy server exits 0")

# ---------------------------------------------------------------- failed preload, then fixed
bad = os.path.join(W, "broken.onnx")
shutil.copy(os.path.join(W, "garbage.onnx"), bad)
s = Server("recover", {"MODEL_PATH": bad})
check(s.ready_ms is not None, "server starts although the preload failed", s.logtext())
st, h, d = s.json("GET", "/health")
check(st == 200, "liveness 200 with a broken model", st)
st, h, d = s.json("GET", "/health?verbose=1")
check(d.get("model_loaded") is False and d.get("last_model_error") and
      "broken.onnx" in d.get("last_model_error", ""), "last_model_error reported", d)
st, h, d = s.json("GET", "/ready")
check(st == 503 and h.get("retry-after") and d.get("ready") is False, "/ready 503", (st, h, d))
st, h, d = s.json("POST", "/api/v1/predict", JPG)
check(st == 503 and is_error_json(d) and h.get("retry-after"), "predict 503 while broken", (st, d))
time.sleep(0.5)
st, h, d = s.json("GET", "/health?verbose=1")
check(d.get("model_load_attempts", 0) >= 3, "background retries with backoff", d.get("model_load_attempts"))
tmp = bad + ".new"
shutil.copy(os.path.join(W, "ham7.onnx"), tmp)
os.rename(tmp, bad)
deadline = time.monotonic() + 5 * SLOW
st = 0
while time.monotonic() < deadline:
    st, h, d = s.json("GET", "/ready")
    if st == 200:
        break
    time.sleep(0.05)
check(st == 200, "fixing the file recovers without restart (/ready 200)", (st, d))
st, h, d = s.json("GET", "/health?verbose=1")
check(d.get("model_loaded") is True and d.get("model_loads") == 1, "recovered: loaded once", d)
st, h, d = s.json("POST", "/api/v1/predict", JPG)
check(st == 200, "predict 200 after recovery", (st, d))
check(s.stop() == 0, "recover server exits 0")

# lazy + missing file: the requests themselves retry
missing = os.path.join(W, "later.onnx")
s = Server("lazyfail", {"MODEL_PATH": missing, "PRELOAD_MODEL": "false"})
st, h, d = s.json("GET", "/ready")
check(st == 200, "lazy + missing file: /ready 200 before any attempt", st)
st, h, d = s.json("POST", "/api/v1/predict", JPG)
check(st == 503 and "model not available" in d.get("error", ""), "lazy: predict 503 (missing model)", (st, d))
st, h, d = s.json("GET", "/ready")
check(st == 503, "lazy: /ready 503 after the failed load", st)
shutil.copy(os.path.join(W, "ham7.onnx"), missing)
st, h, d = s.json("POST", "/api/v1/predict", JPG)
check(st == 200, "lazy: the next request loads the fixed file", (st, d))
check(s.stop() == 0, "lazyfail server exits 0")

# ---------------------------------------------------------------- queue full, slow clients
s = Server("queue", {"WORKERS": "1", "QUEUE_SIZE": "1", "DERMAL_DEBUG_INFER_DELAY_MS": "300",
                     "CONNECTION_TIMEOUT_S": "1"})
qres = []


def qreq():
    st_, h_, d_ = s.json("POST", "/api/v1/predict", JPG)
    qres.append((st_, h_.get("retry-after"), d_))


ts = [threading.Thread(target=qreq) for _ in range(6)]
for t in ts:
    t.start()
    time.sleep(0.02)
for t in ts:
    t.join()
sts = [r[0] for r in qres]
check(sts.count(200) >= 2 and sts.count(503) >= 1 and set(sts) <= {200, 503},
      "queue full -> some 503, none lost", sts)
check(all(r[1] for r in qres if r[0] == 503) and all(is_error_json(r[2]) for r in qres if r[0] == 503),
      "503 carries Retry-After and a JSON error", qres)
st, h, body = s.req("GET", "/metrics")
check("dermal_queue_rejections_total 0" not in body.decode(), "queue rejections counted")
sk = socket.create_connection(("127.0.0.1", s.port))
sk.sendall(b"POST /api/v1/predict HTTP/1.1\r\nHost: x\r\nContent-Len")
sk.settimeout(6 * SLOW)
t0 = time.monotonic()
try:
    got = sk.recv(100)
except OSError:
    got = b""
waited = time.monotonic() - t0
sk.close()
check(got == b"" and waited < 5 * SLOW, "slow client cut after CONNECTION_TIMEOUT_S", (got, waited))
check(s.stop() == 0, "queue server exits 0")

# ---------------------------------------------------------------- SIGTERM drains in-flight
s = Server("drain", {"WORKERS": "1", "DERMAL_DEBUG_INFER_DELAY_MS": "400"})
dres = []


def dreq():
    try:
        dres.append(s.json("POST", "/api/v1/predict", JPG)[0])
    except Exception as ex:  # noqa: BLE001
        dres.append(repr(ex))


# One request still uploading when SIGTERM arrives ...
half = len(JPG) // 2
up = socket.create_connection(("127.0.0.1", s.port))
up.sendall(b"POST /api/v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(JPG)
           + JPG[:half])
# ... and two in the worker/queue.
ts = [threading.Thread(target=dreq) for _ in range(2)]
for t in ts:
    t.start()
time.sleep(0.15)
s.p.send_signal(signal.SIGTERM)
time.sleep(0.2)
refused = False
try:
    socket.create_connection(("127.0.0.1", s.port), 1).close()
except OSError:
    refused = True
up.sendall(JPG[half:])
up.settimeout(10 * SLOW)
resp = b""
try:
    while b"\r\n\r\n" not in resp:
        chunk = up.recv(4096)
        if not chunk:
            break
        resp += chunk
except OSError:
    pass
up.close()
for t in ts:
    t.join()
rc = s.stop()
check(dres == [200, 200], "in-flight requests finished after SIGTERM", dres)
check(resp.startswith(b"HTTP/1.1 200"), "request mid-upload at SIGTERM finished", resp[:80])
check(refused, "no new connections after SIGTERM")
check(rc == 0, "drained server exits 0", rc)

# ---------------------------------------------------------------- token, JSON logs, memory limit
imgdir = os.path.join(W, "imgs")
s = Server("auth", {"API_TOKEN": "s3cret", "LOG_FORMAT": "json", "STORE_IMAGES": "true",
                    "IMAGES_DIR": imgdir,
                    "DATABASE_URL": "sqlite:///" + os.path.join(W, "auth.db")})
st, h, d = s.json("POST", "/api/v1/predict", JPG)
check(st == 401 and is_error_json(d) and "bearer" in h.get("www-authenticate", "").lower(),
      "API_TOKEN: no token -> 401", (st, d))
st, h, d = s.json("POST", "/api/v1/predict", JPG, {"Authorization": "Bearer wrong"})
check(st == 401, "API_TOKEN: wrong token -> 401", st)
st, h, d = s.json("POST", "/api/v1/predict", JPG, {"Authorization": "Bearer s3cret"})
check(st == 200, "API_TOKEN: right token -> 200", (st, d))
st, h, d = s.json("GET", "/history")
check(st == 401, "history needs the token", st)
st, h, d = s.json("GET", "/history", None, {"Authorization": "Bearer s3cret"})
check(st == 200 and len(d.get("items", [])) == 1, "history with the token", (st, d))
if st == 200 and d.get("items"):
    sha = d["items"][0]["image_sha256"]
    path = os.path.join(imgdir, sha[:2], sha + ".jpeg")
    check(os.path.exists(path) and open(path, "rb").read() == JPG,
          "STORE_IMAGES=true: upload stored content-addressed", path)
check(s.stop() == 0, "auth server exits 0")
lines = [ln for ln in s.logtext().splitlines() if ln.startswith("{")]
try:
    objs = [json.loads(ln) for ln in lines]
except ValueError:
    objs = []
check(objs and any(o.get("request_id") and o.get("status") == 200 and "ms" in o for o in objs),
      "LOG_FORMAT=json: access lines are JSON", lines[:3])

s = Server("mem", {"MEMORY_LIMIT_MB": "1"})
st, h, d = s.json("POST", "/api/v1/predict", JPG)
check(st == 503 and h.get("retry-after") and "memory" in d.get("error", ""),
      "MEMORY_LIMIT_MB exceeded -> 503", (st, d))
st, h, d = s.json("GET", "/ready")
check(st == 503, "MEMORY_LIMIT_MB exceeded -> /ready 503", st)
check(s.stop() == 0, "mem server exits 0")

s = Server("nogc", {"ENABLE_GRADCAM": "false"})
st, h, d = s.json("POST", "/api/v1/predict?gradcam=1", JPG)
check(st == 200 and d.get("heatmap_png", 1) is None and d.get("heatmap_status") == "disabled",
      "ENABLE_GRADCAM=false: gradcam=1 still predicts, heatmap null", (st, d))
check(s.stop() == 0, "nogc server exits 0")

# ---------------------------------------------------------------- migrate never opens the model
fifo = os.path.join(W, "model.fifo")
if not os.path.exists(fifo):
    os.mkfifo(fifo)
env = dict(os.environ, MODEL_PATH=fifo, DATABASE_URL="sqlite:///" + os.path.join(W, "mig.db"))


def run(args, timeout=10):
    try:
        p = subprocess.run([DERMAL] + args, env=env, capture_output=True, timeout=timeout * SLOW)
        return p.returncode, (p.stdout + p.stderr).decode()
    except subprocess.TimeoutExpired:
        return "timeout", ""


rc, out = run(["migrate"])
check(rc == 0 and "skipped" in out and "applied 1" in out, "migrate (MODEL_PATH is a FIFO) skips the model", (rc, out))
rc, out = run(["migrate", "--status"])
check(rc == 0 and "version 2" in out, "migrate --status", (rc, out))
rc, out = run(["migrate", "--to", "0"])
check(rc == 0 and "reverted 1" in out and "version 0" in out, "migrate --to 0 (down)", (rc, out))
rc, out = run(["migrate"])
check(rc == 0 and "version 2" in out, "migrate up again", (rc, out))
rc, out = run(["migrate", "--help"])
check(rc == 0 and "usage: dermal migrate" in out, "migrate --help", (rc, out))
rc, out = run(["serve", "--help"])
check(rc == 0 and "usage: dermal serve" in out, "serve --help (does not open the model)", (rc, out))
rc, out = run(["serve", "--port", "nope"])
check(rc == 2, "serve --port nope -> usage error", (rc, out))
env2 = dict(env, DATABASE_URL="postgres://localhost/x")
p = subprocess.run([DERMAL, "migrate"], env=env2, capture_output=True, timeout=10 * SLOW)
check(p.returncode == 1 and b"PostgreSQL" in p.stderr, "unreachable postgres:// -> clear error, exit 1", p.stderr)

print("test_server: %d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
