-- The support agent's view: GET /external/v1/customers/c<random>/metrics, a random customer
-- per request, and one "WRK_RESULT {json}" line from done() for bench/harness.py to parse.
-- Usage: wrk ... --script agent_view.lua URL -- <customers>
-- Customers are "c1" … "c<customers>". Headers (Authorization) come from wrk's --header options.

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)
  table.insert(threads, thread)
end

function init(args)
  customers = tonumber(args[1] or "1000")
  statuses = {}
  math.randomseed(os.time() + thread_id * 7919)
end

function request()
  local path = "/external/v1/customers/c" .. math.random(1, customers) .. "/metrics"
  return wrk.format("GET", path)
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses") or {}) do
      merged[status] = (merged[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(merged) do
    table.insert(parts, string.format('"%s": %d', status, n))
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, '
      .. '"p99_us": %d, "max_us": %d, "mean_us": %.1f, "statuses": {%s}, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d, "status": %d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, table.concat(parts, ", "),
    e.connect, e.read, e.write, e.timeout, e.status
  ))
end
