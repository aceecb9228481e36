-- wrk script: an optional JSON POST body (WRK_BODY from the environment), optional Cookie
-- headers to rotate over (WRK_COOKIES: a file, one header per line; each request sends the next
-- one, each thread starting at its own place) and, at the end, one machine-readable line
-- "WRK_JSON {...}" with counts and latency percentiles (microseconds).
local body = os.getenv("WRK_BODY")
if body and body ~= "" then
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

local cookies_file = os.getenv("WRK_COOKIES")
-- WRK_PASS=1: one pass over the cookies from the first (one thread), then the thread stops
local one_pass = os.getenv("WRK_PASS") == "1"
if cookies_file and cookies_file ~= "" then
  local cookies, next_cookie, headers, answered = {}, 1, {}, 0

  function init(args)
    for line in io.lines(cookies_file) do
      if line ~= "" then cookies[#cookies + 1] = line end
    end
    assert(#cookies > 0, "no cookies in " .. cookies_file)
    math.randomseed(os.time() + tonumber(tostring(cookies):match("0x(%x+)") or "0", 16))
    next_cookie = one_pass and 1 or math.random(#cookies)
    for name, value in pairs(wrk.headers) do headers[name] = value end
  end

  if one_pass then
    function response(status, response_headers, response_body)
      answered = answered + 1
      if answered == #cookies then
        -- wrk's main thread sleeps out -d unless interrupted: SIGINT it, once system() (which
        -- ignores SIGINT while its shell runs) has returned; the shell's parent is wrk
        os.execute("sh -c 'sleep 0.2; kill -INT $0' $PPID >/dev/null 2>&1 &")
        wrk.thread:stop()
      end
    end
  end

  function request()
    headers["Cookie"] = cookies[next_cookie]
    next_cookie = next_cookie % #cookies + 1
    return wrk.format(nil, nil, headers)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"stdev":%.1f,"min":%d,"max":%d,' ..
    '"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.min, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
