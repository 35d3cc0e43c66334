-- Send the body in the file args[1] with "__UNIQUE__" replaced by a value no
-- other request in this run has, so every webhook gets its own idempotency key.
-- args[2] is the Unipile-Auth secret and args[3] a prefix unique to the run.
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)
end

function init(args)
  local file = io.open(args[1], "rb")
  template = file:read("*a")
  file:close()
  prefix = args[3] .. "-" .. tostring(thread_id) .. "-"
  sent = 0
  wrk.method = "POST"
  wrk.headers["content-type"] = "application/json"
  wrk.headers["unipile-auth"] = args[2]
end

function request()
  sent = sent + 1
  local body = template:gsub("__UNIQUE__", prefix .. tostring(sent))
  return wrk.format(nil, nil, nil, body)
end
