-- wrk script: POST one JSON sample per request to /metrics.
-- BATCH=N in the environment sends an array of N samples instead.
local batch = tonumber(os.getenv("BATCH") or "1")
wrk.method = "POST"
wrk.path = "/metrics"
wrk.headers["Content-Type"] = "application/json"
local one = '{"name":"cpu.load","value":0.42,"tags":{"host":"bench"}}'
if batch == 1 then
  wrk.body = one
else
  local items = {}
  for i = 1, batch do items[i] = one end
  wrk.body = "[" .. table.concat(items, ",") .. "]"
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format("RESULT rps=%.1f p50_ms=%.3f p99_ms=%.3f non2xx=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
