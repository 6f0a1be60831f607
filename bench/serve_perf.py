#!/usr/bin/python3
"""Helpers for bench/serve_perf.sh (stdlib only; run with /usr/bin/python3).

  serve_perf.py coldstart DERMAL PORT JPEG             one cold start of `dermal serve`
  serve_perf.py torch JPEG                             one PyTorch import+build+first inference
  serve_perf.py requests PORT PID TOTAL STEP CONC JPEG...   TOTAL uploads, RSS every STEP
  serve_perf.py cpu CMD...                             run CMD, print its CPU seconds
  serve_perf.py stat PID [PORT]                        utime+stime (s), VmRSS (MB), /health rss_mb
  serve_perf.py report RESULTS                         table + PASS/FAIL per target

Every measuring subcommand prints `key value` lines; serve_perf.sh appends them
(prefixed) to one results file, which `report` reads.  The server's settings
come from the environment (MODEL_PATH, PRELOAD_MODEL, ...), as with
`dermal serve` itself.
"""
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time

BOUNDARY = "----dermalbench7d3f9a1c"


def upload_request(jpeg_path):
    with open(jpeg_path, "rb") as f:
        data = f.read()
    name = os.path.basename(jpeg_path)
    top = os.environ.get("TOP", "")
    extra = ("--%s\r\nContent-Disposition: form-data; name=\"top\"\r\n\r\n%s\r\n"
             % (BOUNDARY, top)).encode() if top else b""
    body = extra + (
        ("--%s\r\nContent-Disposition: form-data; name=\"image\"; filename=\"%s\"\r\n"
         "Content-Type: image/jpeg\r\n\r\n" % (BOUNDARY, name)).encode()
        + data + ("\r\n--%s--\r\n" % BOUNDARY).encode())
    return body, {"Content-Type": "multipart/form-data; boundary=" + BOUNDARY}


def proc_stat(pid):
    """(cpu seconds utime+stime, VmRSS MB) of a live process."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / tck  # fields 14, 15 of stat(5)
    rss = None
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024.0
    return cpu, rss


def health(port):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/health?verbose=1")
        j = json.loads(c.getresponse().read())
        c.close()
        return j
    except Exception:
        return {}


def health_rss(port):
    return health(port).get("rss_mb")


def cmd_coldstart(dermal, port, jpeg):
    """exec `dermal serve`, poll-connect, POST /upload until a 200 arrives."""
    port = int(port)
    body, headers = upload_request(jpeg)
    try:
        http.client.HTTPConnection("127.0.0.1", port, timeout=2).connect()
        print("error port_%d_already_in_use" % port)
        return 1
    except OSError:
        pass
    log = open(os.environ.get("SERVE_LOG", os.devnull), "ab")
    t0 = time.perf_counter()
    p = subprocess.Popen([dermal, "serve"], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    t_listen = t_first = None
    status = None
    attempts = 0
    deadline = t0 + float(os.environ.get("COLD_TIMEOUT_S", "120"))
    try:
        while time.perf_counter() < deadline:
            if p.poll() is not None:
                print("error server_exited_%d" % p.returncode)
                return 1
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                c.connect()
            except OSError:
                c.close()
                time.sleep(0.0005)
                continue
            if t_listen is None:
                t_listen = time.perf_counter()
            attempts += 1
            try:
                c.request("POST", "/upload", body, headers)
                r = c.getresponse()
                resp = r.read()
                status = r.status
            except (OSError, http.client.HTTPException):
                c.close()
                continue
            c.close()
            if status == 200 and b'"top"' in resp:
                t_first = time.perf_counter()
                break
            time.sleep(0.001)
        if t_first is None:
            print("error no_200_status_%s" % status)
            return 1
        _, rss = proc_stat(p.pid)
        print("cold_ms %.2f" % ((t_first - t0) * 1000))
        print("listen_ms %.2f" % ((t_listen - t0) * 1000))
        print("first_rss_mb %.2f" % rss)
        print("attempts %d" % attempts)
        return 0
    finally:
        p.terminate()
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


TORCH_CHILD = r"""
import time, sys
t0 = time.perf_counter()
import torch, torchvision
t1 = time.perf_counter()
m = torchvision.models.mobilenet_v2(weights=None).eval()
t2 = time.perf_counter()
from PIL import Image
import numpy as np
img = Image.open(sys.argv[1]).convert("RGB").resize((224, 224), Image.BILINEAR)
x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
with torch.inference_mode():
    y = m(x)
t3 = time.perf_counter()
print("import_ms %.2f\nbuild_ms %.2f\nfirst_infer_ms %.2f" % ((t1-t0)*1e3, (t2-t1)*1e3, (t3-t2)*1e3))
print("DONE", flush=True)
"""


def cmd_torch(jpeg):
    """exec /usr/bin/python3: import torch+torchvision, build mobilenet_v2,
    decode the JPEG, first inference.  Timed from exec to the DONE line."""
    t0 = time.perf_counter()
    p = subprocess.Popen(["/usr/bin/python3", "-c", TORCH_CHILD, jpeg],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = []
    t1 = None
    for line in p.stdout:
        if line.startswith("DONE"):
            t1 = time.perf_counter()
            break
        lines.append(line)
    p.stdout.close()
    p.wait()
    if t1 is None:
        print("error torch_failed_%s" % p.returncode)
        return 1
    print("total_ms %.2f" % ((t1 - t0) * 1000))
    sys.stdout.write("".join(lines))
    return 0


def cmd_requests(port, pid, total, step, conc, *jpegs):
    """TOTAL uploads at concurrency CONC in blocks of STEP; after each block
    (no request in flight) print VmRSS and the server's own rss_mb."""
    port, pid, total, step, conc = int(port), int(pid), int(total), int(step), int(conc)
    reqs = [upload_request(j) for j in jpegs]
    lock = threading.Lock()
    stats = {"ok": 0, "bad": 0, "next": 0}

    def worker(n_block):
        c = None
        while True:
            with lock:
                i = stats["next"]
                if i >= n_block:
                    break
                stats["next"] += 1
            body, headers = reqs[i % len(reqs)]
            try:
                if c is None:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                c.request("POST", "/upload", body, headers)
                r = c.getresponse()
                r.read()
                good = 200 <= r.status < 300
                if r.getheader("Connection", "").lower() == "close":
                    c.close()
                    c = None
            except Exception:
                good = False
                if c is not None:
                    c.close()
                c = None
            with lock:
                stats["ok" if good else "bad"] += 1
        if c is not None:
            c.close()

    done = 0
    while done < total:
        n = min(step, total - done)
        stats["next"] = 0
        ts = [threading.Thread(target=worker, args=(n,)) for _ in range(conc)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        done += n
        _, rss = proc_stat(pid)
        print("rss_at_%d %.2f" % (done, rss))
        h = health_rss(port)
        if h is not None:
            print("health_rss_at_%d %.2f" % (done, h))
    print("ok %d" % stats["ok"])
    print("bad %d" % stats["bad"])
    return 0


def cmd_cpu(*cmd):
    """Run CMD; print its CPU seconds (utime+stime of it and its children that
    it waited for) and its stdout's last JSON line."""
    p = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    js = [l for l in out.splitlines() if l.strip().startswith("{")]
    print("cpu_s %.4f" % (ru.ru_utime + ru.ru_stime))
    print("exit %d" % os.waitstatus_to_exitcode(status))
    if js:
        print("json " + js[-1].strip())
    return 0


def cmd_stat(pid, port=None):
    cpu, rss = proc_stat(int(pid))
    print("cpu_s %.4f" % cpu)
    print("rss_mb %.2f" % rss)
    if port is not None:
        h = health(int(port))
        if h.get("rss_mb") is not None:
            print("health_rss_mb %.2f" % h["rss_mb"])
        if h.get("model_load_ms") is not None:
            print("model_load_ms %.2f" % h["model_load_ms"])
    return 0


# ---------------------------------------------------------------- report --
def cmd_report(path):
    kv = {}    # key -> last value
    lists = {}  # key -> all values
    for line in open(path):
        parts = line.rstrip("\n").split(" ", 1)
        if len(parts) != 2:
            continue
        k, v = parts
        kv[k] = v
        lists.setdefault(k, []).append(v)

    def num(k):
        try:
            return float(kv[k])
        except (KeyError, ValueError):
            return None

    def nums(k):
        out = []
        for v in lists.get(k, []):
            try:
                out.append(float(v))
            except ValueError:
                pass
        return out

    def med(k):
        v = nums(k)
        return statistics.median(v) if v else None

    def f(x, fmt="%.1f"):
        return "-" if x is None else fmt % x

    rows = []  # (section, metric, value, reference, target, verdict)
    verdicts = []

    def row(sec, metric, value, ref="", target="", ok=None):
        v = "" if ok is None else ("PASS" if ok else "FAIL")
        if ok is not None:
            verdicts.append((sec + ": " + metric, ok))
        rows.append((sec, metric, value, ref, target, v))

    try:
        bench_load = "%.1f ms" % json.loads(kv["bench1.json"])["load_ms"]
    except Exception:
        bench_load = "-"

    # 1 cold start
    n_cold = len(nums("cold.cold_ms"))
    cold = med("cold.cold_ms")
    tor = med("torch.total_ms")
    row("cold start", "exec -> first /upload 200, median of %d (ms)" % n_cold,
        f(cold), "torch %s" % f(tor), "<= %d ms" % 150,
        None if cold is None else cold <= 150)
    c = nums("cold.cold_ms")
    if c:
        row("cold start", "  min / max (ms)", "%s / %s" % (f(min(c)), f(max(c))))
    row("cold start", "  exec -> listening, median (ms)", f(med("cold.listen_ms")))
    if num("ready.model_load_ms") is not None:
        row("cold start", "  model load inside it (/health model_load_ms, 1 run)",
            f(num("ready.model_load_ms")), "bench load %s" % bench_load)
    if tor is not None:
        row("cold start", "torch anchor: exec -> first inference, median of %d (ms)"
            % len(nums("torch.total_ms")), f(tor))
        row("cold start", "  import torch+torchvision / build / first inference (ms)",
            "%s / %s / %s" % (f(med("torch.import_ms")), f(med("torch.build_ms")),
                              f(med("torch.first_infer_ms"))))
        if cold:
            row("cold start", "torch anchor / dermal", "%.0fx" % (tor / cold))
    if "cold.error" in kv:
        row("cold start", "error", kv["cold.error"], ok=False)

    # 2 RSS
    r0 = num("ready.rss_mb")
    h0 = num("ready.health_rss_mb")
    row("RSS", "after start, model loaded: VmRSS / health rss_mb (MB)",
        "%s / %s" % (f(r0), f(h0)), "", "<= 40 MB", None if r0 is None else r0 <= 40)
    row("RSS", "  after first cold-start upload, median (MB)", f(med("cold.first_rss_mb")))
    pts = []
    for k in sorted(kv):
        if k.startswith("rss.rss_at_"):
            pts.append((int(k[len("rss.rss_at_"):]), float(kv[k])))
    pts.sort()
    if pts:
        row("RSS", "VmRSS after " + "/".join(str(n) for n, _ in pts) + " requests (MB)",
            " / ".join("%.1f" % r for _, r in pts))
        hp = ["%.1f" % num("rss.health_rss_at_%d" % n) for n, _ in pts
              if num("rss.health_rss_at_%d" % n) is not None]
        if hp:
            row("RSS", "  health rss_mb at the same points (MB)", " / ".join(hp))
        last = pts[-1][1]
        row("RSS", "after %d requests (MB)" % pts[-1][0], f(last), "", "<= 60 MB", last <= 60)
        if len(pts) >= 2:
            xs = [n for n, _ in pts]
            ys = [r for _, r in pts]
            mx, my = statistics.mean(xs), statistics.mean(ys)
            slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
            smax = float(os.environ.get("SLOPE_MAX", "1.0"))
            row("RSS", "slope, least squares (MB per 1000 requests)", "%+.2f" % (slope * 1000),
                "", "<= %.1f (not growing)" % smax, slope * 1000 <= smax)
    if num("rss.bad"):
        row("RSS", "non-2xx / errors in the 1000 requests", kv["rss.bad"], "", "0", False)
    if num("wrk.rss_after_mb") is not None:
        row("RSS", "  after the wrk run (MB)", f(num("wrk.rss_after_mb")))

    # 3 wrk
    statuses = {}
    for k in kv:
        if k.startswith("wrk.http_"):
            statuses[int(k[len("wrk.http_"):])] = int(kv[k])
    if "wrk.requests" in kv:
        req = int(kv["wrk.requests"])
        dur = num("wrk.duration_us") / 1e6
        ok2 = sum(n for s, n in statuses.items() if 200 <= s < 300)
        n503 = statuses.get(503, 0)
        other = sum(n for s, n in statuses.items() if not (200 <= s < 300) and s != 503)
        sockerr = sum(int(kv.get("wrk." + e, 0)) for e in
                      ("connect_err", "read_err", "write_err", "timeout_err"))
        conc = kv.get("wrk.concurrency", "?")
        row("wrk", "POST /upload, -c%s, %.0f s: requests, req/s" % (conc, dur),
            "%d, %.1f" % (req, req / dur if dur else 0))
        row("wrk", "2xx / 503 shed / other non-2xx / socket errors",
            "%d / %d / %d / %d" % (ok2, n503, other, sockerr), "", "other = 0, errors = 0",
            other == 0 and sockerr == 0 and ok2 > 0)
        row("wrk", "latency p50 / p90 / p99 (ms)", "%s / %s / %s" % (
            f(num("wrk.p50_us") / 1e3, "%.2f"), f(num("wrk.p90_us") / 1e3, "%.2f"),
            f(num("wrk.p99_us") / 1e3, "%.2f")))
        scpu = num("wrk.cpu_s")
        per_req = scpu / ok2 if ok2 and scpu is not None else None
        b_all, b_one = num("bench.cpu_s"), num("bench1.cpu_s")
        iters = num("bench.iters")
        try:
            bench_p50 = "%.2f" % json.loads(kv["bench.json"])["p50_ms"]
        except Exception:
            bench_p50 = "-"
        per_inf = None
        if b_all is not None and b_one is not None and iters and iters > 1:
            per_inf = (b_all - b_one) / (iters - 1)
        row("wrk", "server CPU during the run (s): utime+stime", f(scpu, "%.2f"))
        row("wrk", "server CPU per 2xx request (ms)", f(None if per_req is None else per_req * 1e3, "%.2f"))
        row("bench", "dermal bench CPU per inference (ms), load subtracted",
            f(None if per_inf is None else per_inf * 1e3, "%.2f"),
            "bench p50 %s ms wall" % bench_p50)
        if per_req is not None and per_inf:
            ratio = per_req / per_inf
            row("wrk", "server CPU per request / bench CPU per inference", "%.2f" % ratio,
                "", "<= 1.15", ratio <= 1.15)
        else:
            row("wrk", "server CPU per request / bench CPU per inference", "-", "", "<= 1.15", False)
    elif "wrk.error" in kv:
        row("wrk", "error", kv["wrk.error"], ok=False)

    hdr = ("section", "metric", "value", "reference", "target", "verdict")
    w = [max(len(str(r[i])) for r in [hdr] + rows) for i in range(len(hdr))]
    fmt = lambda r: "  ".join(str(x).ljust(w[i]) if i < 2 else str(x).rjust(w[i])
                              for i, x in enumerate(r)).rstrip()
    print(fmt(hdr))
    print(fmt(tuple("-" * x for x in w)))
    for r in rows:
        print(fmt(r))
    good = sum(1 for _, ok in verdicts if ok)
    failed = [name.strip() for name, ok in verdicts if not ok]
    if verdicts and not failed:
        print("summary: PASS - all %d targets met" % len(verdicts))
        return 0
    print("summary: FAIL - %d of %d targets met; missed: %s"
          % (good, len(verdicts), "; ".join(failed) if failed else "(nothing measured)"))
    return 3


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmds = {"coldstart": cmd_coldstart, "torch": cmd_torch, "requests": cmd_requests,
            "cpu": cmd_cpu, "stat": cmd_stat, "report": cmd_report}
    fn = cmds.get(argv[1])
    if fn is None:
        print(__doc__, file=sys.stderr)
        return 2
    return fn(*argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
