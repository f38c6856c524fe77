-- The support agent's view: GET /external/v1/customers/c<random>/metrics, a random customer
-- per request, and one "WRK_RESULT {json}" line from done() for bench/harness.py to parse.
-- Usage: wrk ... --script agent_view.lua URL -- <customers> [<path prefix>]
-- Customers are "c1" … "c<customers>". Headers (Authorization) come from wrk's --header options.
-- With a path prefix (the floor's "/view/c"), the path is <prefix><n> instead.

dofile("bench/lua/result.lua")  -- setup(), response(), done()

function init(args)
  customers = tonumber(args[1] or "1000")
  prefix = args[2]
  if prefix == "" then prefix = nil end
  statuses = {}
  math.randomseed(os.time() + thread_id * 7919)
end

function request()
  local n = math.random(1, customers)
  if prefix then
    return wrk.format("GET", prefix .. n)
  end
  return wrk.format("GET", "/external/v1/customers/c" .. n .. "/metrics")
end
