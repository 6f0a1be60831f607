"""The HTTP half of tests/integration/test_store_pg.sh: `dermal serve`
replicas sharing one PostgreSQL history.

usage: pg_server_check.py DERMAL MODEL_DIR DATABASE_URL LOG_DIR

Starts two servers at once on a new (empty) database (each migrates it at
start: the advisory lock must serialise them), POSTs predictions to both,
and checks that GET /history on either lists all of them newest first with
cursor pagination.  Prints `ok ...`/`FAIL ...` lines and a final
`pg_server: N passed, N failed`.  Standard library only.
"""
import http.client
import json
import os
import socket
import subprocess
import sys
import time

DERMAL, MDIR, URL, LOGS = sys.argv[1:5]
passed = failed = 0


def check(cond, what, detail=None):
    global passed, failed
    if cond:
        passed += 1
        print("ok   " + what)
    else:
        failed += 1
        print("FAIL %s: %r" % (what, detail))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Server:
    def __init__(self, tag):
        self.port = free_port()
        env = dict(os.environ, PORT=str(self.port), HOST="127.0.0.1",
                   MODEL_PATH=os.path.join(MDIR, "ham7.onnx"),
                   DATABASE_URL=URL, WORKERS="2")
        self.log = open(os.path.join(LOGS, tag + ".log"), "wb")
        self.p = subprocess.Popen([DERMAL, "serve"], env=env, stdout=self.log,
                                  stderr=subprocess.STDOUT)

    def wait_ready(self, timeout=30):
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.p.poll() is None:
            try:
                st, _ = self.req("GET", "/ready")
                if st == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def req(self, method, path, body=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            c.request(method, path, body=body)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def json(self, method, path, body=None):
        st, b = self.req(method, path, body)
        try:
            return st, json.loads(b)
        except ValueError:
            return st, {"raw": b[:200]}

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()
        return self.p.returncode


with open(os.path.join(MDIR, "lesion.jpg"), "rb") as f:
    JPG = f.read()

a, b = Server("replica_a"), Server("replica_b")
try:
    ra, rb = a.wait_ready(), b.wait_ready()
    check(ra and rb, "two replicas start at once on a new database", (ra, rb))
    st, h = a.json("GET", "/health?verbose=1")
    check(st == 200, "GET /health?verbose=1", st)
    ids = []
    for i, s in enumerate([a, b, a, b, a]):
        st, d = s.json("POST", "/api/v1/predict", JPG)
        ok = st == 200 and "request_id" in d
        check(ok, "POST /api/v1/predict #%d (replica %s)" % (i, "ab"[i % 2]), (st, d))
        if ok:
            ids.append(d["request_id"])
    newest_first = list(reversed(ids))
    for s, tag in [(a, "a"), (b, "b")]:
        st, d = s.json("GET", "/history?limit=100")
        got = [it.get("request_id") for it in d.get("items", [])]
        check(st == 200 and got == newest_first and d.get("total") == len(ids),
              "GET /history on replica %s: all %d, newest first" % (tag, len(ids)),
              (st, got, newest_first, d.get("total")))
    # cursor pagination: 2 + 2 + 1
    pages, before, seen = 0, None, []
    while pages < 5:
        path = "/history?limit=2" + ("&before=%d" % before if before else "")
        st, d = b.json("GET", path)
        if st != 200:
            break
        seen += [it.get("request_id") for it in d.get("items", [])]
        pages += 1
        if d.get("next_before") is None:
            break
        before = d["next_before"]
    check(pages == 3 and seen == newest_first, "history pages 2+2+1 by cursor",
          (pages, seen, newest_first))
    st, d = a.json("GET", "/history?limit=1")
    it = (d.get("items") or [{}])[0]
    check(st == 200 and len(it.get("image_sha256", "")) == 64 and
          it.get("image_format") == "jpeg" and
          isinstance(it.get("probabilities"), dict) and
          isinstance(it.get("ms"), dict) and it.get("label"),
          "history row fields (sha256, format, probabilities, ms)", it)
finally:
    check(a.stop() == 0, "replica a: SIGTERM -> exit 0")
    check(b.stop() == 0, "replica b: SIGTERM -> exit 0")

print("pg_server: %d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
