-- Single value writes with a unique observed_at on every request, and one
-- "WRK_RESULT {json}" line from done() for bench/harness.py to parse.
-- Usage: wrk ... --script value_write.lua URL -- <mode> <metric-ref> <customers> <base-ms>
--   mode "service": POST /external/v1/customers/<customer>/metrics/<ref>/values
--                   {"value": <number>, "observed_at": "<RFC 3339>"}
--   mode "floor":   POST to wrk's URL the same body plus a unique "name" (the floor inserts it)
-- Customers are "bench-00000" … (customers - 1). observed_at is base-ms + thread * 10^7 + n ms,
-- so it is unique per request as long as a thread sends fewer than 10^7 requests a run.
-- Headers (Authorization, Content-Type) come from wrk's --header options.

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)
  table.insert(threads, thread)
end

function init(args)
  mode = args[1] or "service"
  ref = args[2] or "arr"
  customers = tonumber(args[3] or "1000")
  base_ms = tonumber(args[4] or "1609459200000")
  counter = 0
  statuses = {}
  math.randomseed(os.time() + thread_id * 7919)
end

local function rfc3339(ms)
  local seconds = math.floor(ms / 1000)
  return os.date("!%Y-%m-%dT%H:%M:%S", seconds) .. string.format(".%03dZ", ms - seconds * 1000)
end

function request()
  counter = counter + 1
  local customer = string.format("bench-%05d", (counter * 7 + thread_id * 389) % customers)
  local observed_at = rfc3339(base_ms + thread_id * 10000000 + counter)
  local value = string.format("%d.%02d", math.random(0, 9999999), math.random(0, 99))
  local fields = '"value": ' .. value .. ', "observed_at": "' .. observed_at .. '"'
  if mode == "floor" then
    local name = customer .. " " .. observed_at
    local body = '{"name": "' .. name .. '", "data_type": "NUMBER", ' .. fields .. '}'
    return wrk.format("POST", nil, nil, body)
  end
  local path = "/external/v1/customers/" .. customer .. "/metrics/" .. ref .. "/values"
  return wrk.format("POST", path, nil, "{" .. fields .. "}")
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
