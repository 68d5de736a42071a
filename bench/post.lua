-- wrk script: POST the body in the BODY environment variable as JSON.
wrk.method = "POST"
wrk.body = os.getenv("BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
if os.getenv("SESSION") then
  wrk.headers["Mcp-Session-Id"] = os.getenv("SESSION")
end
