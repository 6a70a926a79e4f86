-- wrk script for bench/run.sh's instruction counts: POSTs one file as every request's
-- body, and stops each thread after BENCH_LIMIT answers (the count, not the time, is
-- what matters when the proxy runs under callgrind).
--
-- Environment: BENCH_PATH (request target), BENCH_BODY (file), BENCH_LIMIT (answers).

local path = os.getenv("BENCH_PATH") or "/write?db=telemetry&precision=s"
local file = assert(io.open(assert(os.getenv("BENCH_BODY"), "BENCH_BODY is not set"), "rb"))
wrk.method = "POST"
wrk.path = path
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "text/plain; charset=utf-8"

local limit = tonumber(os.getenv("BENCH_LIMIT") or "1000")
local answered = 0

function response(status, headers, body)
  answered = answered + 1
  if answered >= limit then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d errors=%d\n", summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.status + summary.errors.timeout))
end
