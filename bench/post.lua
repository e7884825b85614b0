-- wrk script: POST samples to ingest (or the baseline).
-- BATCH=N samples per request (default 1); FORMAT=json (default: POST /metrics, one object or an
-- array) or FORMAT=line (POST /write, one line-protocol line per sample).
-- FORMAT=file posts the bytes of BODY_FILE to BODY_PATH with BODY_TYPE and, when set, BODY_ENCODING
-- (a recorded agent's body: remote write, OTLP).
local batch = tonumber(os.getenv("BATCH") or "1")
local format = os.getenv("FORMAT") or "json"
wrk.method = "POST"
if format == "file" then
  local file = assert(io.open(os.getenv("BODY_FILE"), "rb"))
  wrk.body = file:read("*a")
  file:close()
  wrk.path = os.getenv("BODY_PATH")
  wrk.headers["Content-Type"] = os.getenv("BODY_TYPE")
  local encoding = os.getenv("BODY_ENCODING") or ""
  if encoding ~= "" then wrk.headers["Content-Encoding"] = encoding end
elseif format == "line" then
  wrk.path = "/write"
  wrk.headers["Content-Type"] = "text/plain"
  local lines = {}
  for i = 1, batch do
    lines[i] = string.format("cpu,host=bench%d,region=eu usage_user=0.%d", i % 10, i)
  end
  wrk.body = table.concat(lines, "\n") .. "\n"
else
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
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format("RESULT rps=%.1f p50_ms=%.3f p99_ms=%.3f non2xx=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
