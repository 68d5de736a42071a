-- wrk script: POST the body in the BODY environment variable as JSON, with the session in
-- SESSION and more headers in HEADERS ("name: value" lines), when set.
wrk.method = "POST"
wrk.body = os.getenv("BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
if os.getenv("SESSION") then
  wrk.headers["Mcp-Session-Id"] = os.getenv("SESSION")
end
local extra = os.getenv("HEADERS")
if extra then
  for name, value in extra:gmatch("([^:\n]+):%s*([^\n]*)") do
    wrk.headers[name] = value
  end
end
