-- POST /orders, a new order each time: the script `python -m bench wrk` gives wrk.
--
-- Script arguments: a prefix unique to the run, then (optionally) an Authorization
-- header's value. Each order id is <prefix>-<wrk thread>-<counter>, so no request is
-- a retry of another and orderlog must answer every one 201. Every other answer is
-- counted by status; when wrk is done, one line starting "orderlog-wrk " carries the
-- figures as JSON for the bench to read.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_number", #threads)
end

function init(args)
  prefix = args[1] or "wrk"
  sent = 0
  created = 0
  other = {}
  request_headers = { ["Content-Type"] = "application/json" }
  if args[2] then
    request_headers["Authorization"] = args[2]
  end
end

function request()
  sent = sent + 1
  local order_id = prefix .. "-" .. thread_number .. "-" .. sent
  local body = '{"order_id":"' .. order_id .. '","user_id":42,'
    .. '"item_ids":["sku-1","sku-2"],"total_amount":"19.99"}'
  return wrk.format("POST", "/orders", request_headers, body)
end

function response(status, headers, body)
  if status == 201 then
    created = created + 1
  else
    local key = tostring(status)
    other[key] = (other[key] or 0) + 1
  end
end

function done(summary, latency, requests)
  local total_created = 0
  local totals = {}
  for _, thread in ipairs(threads) do
    total_created = total_created + thread:get("created")
    for status, count in pairs(thread:get("other")) do
      totals[status] = (totals[status] or 0) + count
    end
  end
  local statuses = {}
  for status, count in pairs(totals) do
    table.insert(statuses, string.format('"%s":%d', status, count))
  end
  local errors = summary.errors
  io.write(string.format(
    'orderlog-wrk {"requests":%d,"duration_us":%d,"created":%d,"other":{%s},'
      .. '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p99":%d,"max":%d}}\n',
    summary.requests, summary.duration, total_created, table.concat(statuses, ","),
    errors.connect, errors.read, errors.write, errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
