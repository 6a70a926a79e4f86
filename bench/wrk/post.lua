-- wrk script for bench/run.sh: POSTs one file as every request's body, and prints one
-- machine-readable RESULT line (the same shape as `sink load`) with the percentiles
-- that `wrk --latency` leaves out (p99.9) and every error wrk counts.
--
-- Environment: BENCH_PATH (request target), BENCH_BODY (file), BENCH_GZIP=1 (adds
-- Content-Encoding: gzip), BENCH_AUTH (optional Authorization header value).

local path = os.getenv("BENCH_PATH") or "/write?db=telemetry&precision=s"
local file = assert(io.open(assert(os.getenv("BENCH_BODY"), "BENCH_BODY is not set"), "rb"))
local body = file:read("*a")
file:close()

wrk.method = "POST"
wrk.path = path
wrk.body = body
wrk.headers["Content-Type"] = "text/plain; charset=utf-8"
if os.getenv("BENCH_GZIP") == "1" then
  wrk.headers["Content-Encoding"] = "gzip"
end
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = auth
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d p999_us=%d max_us=%d errors=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max,
    e.connect + e.read + e.write + e.status + e.timeout))
end
