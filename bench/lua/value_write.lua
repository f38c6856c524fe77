-- Single value writes with a unique observed_at on every request, and one
-- "WRK_RESULT {json}" line from done() for bench/harness.py to parse.
-- Usage: wrk ... --script value_write.lua URL -- <mode> <metric-ref> <customers> <base-ms>
--   mode "service": POST /external/v1/customers/<customer>/metrics/<ref>/values
--                   {"value": <number>, "observed_at": "<RFC 3339>"}
--   mode "floor":   POST to wrk's URL the same body plus a unique "name" (the floor inserts it)
-- Customers are "bench-00000" … (customers - 1). observed_at is base-ms + thread * 10^7 + n ms,
-- so it is unique per request as long as a thread sends fewer than 10^7 requests a run.
-- Headers (Authorization, Content-Type) come from wrk's --header options.

dofile("bench/lua/result.lua")  -- setup(), response(), done()

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
