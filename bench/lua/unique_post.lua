-- POST {"name": "<unique>", "data_type": "NUMBER"} to wrk's URL, a new name on every request,
-- and print one "WRK_RESULT {json}" line from done() for bench/harness.py to parse.
-- Usage: wrk ... --script unique_post.lua URL -- <run-nonce>
-- Headers (Authorization, Content-Type) come from wrk's --header options.

dofile("bench/lua/result.lua")  -- setup(), response(), done()

function init(args)
  nonce = args[1] or tostring(os.time())
  counter = 0
  statuses = {}
  math.randomseed(os.time() + thread_id * 7919)
end

function request()
  counter = counter + 1
  local name = string.format(
    "bench %s t%d n%d r%06d", nonce, thread_id, counter, math.random(0, 999999)
  )
  local body = '{"name": "' .. name .. '", "data_type": "NUMBER"}'
  return wrk.format("POST", nil, nil, body)
end
