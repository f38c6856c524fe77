-- The support agent's view: GET /external/v1/customers/c<random>/metrics, a random customer
-- per request, and one "WRK_RESULT {json}" line from done() for bench/harness.py to parse.
-- Usage: wrk ... --script agent_view.lua URL -- <customers>
-- Customers are "c1" … "c<customers>". Headers (Authorization) come from wrk's --header options.

dofile("bench/lua/result.lua")  -- setup(), response(), done()

function init(args)
  customers = tonumber(args[1] or "1000")
  statuses = {}
  math.randomseed(os.time() + thread_id * 7919)
end

function request()
  local path = "/external/v1/customers/c" .. math.random(1, customers) .. "/metrics"
  return wrk.format("GET", path)
end
