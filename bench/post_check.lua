-- wrk script: POSTs one fixed body on every request and counts responses whose body lacks an expected substring.
-- Arguments after `--`: <body file> <expected-substring file> ["Name: value" header ...]. Files, not inline
-- strings, so the body and the JSON-escaped expectation reach wrk byte for byte, with no quoting layer in between.
-- done() prints one line "WRK_JSON {...}" that bench/wrk.py parses. Latencies are in microseconds.

local threads = {}
local expected = nil

-- Per-thread counters are globals so that done() can read them with thread:get().
responses = 0
non2xx = 0
wrong_body = 0

function setup(thread)
   table.insert(threads, thread)
end

local function slurp(path)
   local file = assert(io.open(path, "rb"))
   local data = file:read("*a")
   file:close()
   return data
end

function init(args)
   wrk.method = "POST"
   wrk.body = slurp(args[1])
   expected = slurp(args[2])
   for i = 3, #args do
      local name, value = string.match(args[i], "^([^:]+):%s*(.*)$")
      wrk.headers[name] = value
   end
end

function response(status, headers, body)
   responses = responses + 1
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
   elseif not string.find(body, expected, 1, true) then
      wrong_body = wrong_body + 1
   end
end

function done(summary, latency, requests)
   local totals = { responses = 0, non2xx = 0, wrong_body = 0 }
   for _, thread in ipairs(threads) do
      for name, _ in pairs(totals) do
         totals[name] = totals[name] + thread:get(name)
      end
   end
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"duration_us": %.0f, "requests": %.0f, "bytes": %.0f, ' ..
      '"connect_errors": %.0f, "read_errors": %.0f, "write_errors": %.0f, "status_errors": %.0f, "timeouts": %.0f, ' ..
      '"responses": %.0f, "non2xx": %.0f, "wrong_body": %.0f, ' ..
      '"latency_mean_us": %.1f, "latency_p50_us": %.0f, "latency_p90_us": %.0f, "latency_p99_us": %.0f, ' ..
      '"latency_max_us": %.0f}\n',
      summary.duration, summary.requests, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      totals.responses, totals.non2xx, totals.wrong_body,
      latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
