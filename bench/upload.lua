-- upload.lua: wrk script for POST /upload (multipart/form-data, field
-- 'image') that rotates through the JPEG files given after `--`, counts
-- responses per HTTP status and prints machine-readable lines at the end.
--
--   wrk -t2 -c8 -d30s -s bench/upload.lua http://127.0.0.1:8000/upload -- a.jpg b.jpg
--
-- Environment:
--   TOP=k           also send the form field top=k (default: not sent, the
--                   server returns every class)
--   WRK_PATH=/x     request path (default: the path of the URL)
--
-- done() prints, besides wrk's own report:
--   RESULT requests=R duration_us=D p50_us=A p90_us=B p99_us=C max_us=M
--          connect_err=.. read_err=.. write_err=.. timeout_err=.. status_err=..
--   STATUS <code> <count>         one line per status code seen
local boundary = "----dermalbench7d3f9a1c"
local reqs = {}
local next_i = 1
local counts = {}
local threads = {}

local top = os.getenv("TOP") or ""

local function multipart(name, data)
  local extra = ""
  if top ~= "" then
    extra = "--" .. boundary .. "\r\n" ..
      'Content-Disposition: form-data; name="top"\r\n\r\n' .. top .. "\r\n"
  end
  return extra .. "--" .. boundary .. "\r\n" ..
    'Content-Disposition: form-data; name="image"; filename="' .. name .. '"\r\n' ..
    "Content-Type: image/jpeg\r\n\r\n" .. data .. "\r\n" ..
    "--" .. boundary .. "--\r\n"
end

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path = os.getenv("WRK_PATH") or wrk.path
  local headers = { ["Content-Type"] = "multipart/form-data; boundary=" .. boundary }
  for _, fn in ipairs(args) do
    local f = assert(io.open(fn, "rb"), "cannot open " .. fn)
    local data = f:read("*all")
    f:close()
    local name = fn:match("([^/]+)$")
    table.insert(reqs, wrk.format("POST", path, headers, multipart(name, data)))
  end
  assert(#reqs > 0, "upload.lua: give JPEG files after --")
  next_i = ((tid or 0) * 7) % #reqs + 1 -- threads start at different files
end

function request()
  local r = reqs[next_i]
  next_i = next_i % #reqs + 1
  return r
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
  -- thread-local summary for done(): "200=12,503=1"
  local parts = {}
  for k, v in pairs(counts) do parts[#parts + 1] = k .. "=" .. v end
  status_summary = table.concat(parts, ",")
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local s = t:get("status_summary") or ""
    for code, n in s:gmatch("(%d+)=(%d+)") do
      total[code] = (total[code] or 0) + tonumber(n)
    end
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "connect_err=%d read_err=%d write_err=%d timeout_err=%d status_err=%d\n",
    summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.timeout, e.status))
  for code, n in pairs(total) do
    io.write(string.format("STATUS %s %d\n", code, n))
  end
end
