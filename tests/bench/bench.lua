-- wrk script for gcrelay's benchmark; tests/bench/bench.py drives it.
--
-- Without GCRELAY_BENCH_POOL in the environment, wrk sends its default
-- request (GET of the URL's path) and this script only reports.
--
-- With GCRELAY_BENCH_POOL=PREFIX, thread i loads PREFIX.<i>: one signed
-- POST /v1/events per line, "webhook-id TAB timestamp TAB signature TAB
-- body", pre-formatted once in init() so that request() only hands out
-- strings.  Each thread cycles through its own file; the files of different
-- threads hold disjoint webhook ids.  Requests sent after a thread has used
-- its whole file repeat ids already sent: they are counted as "reused".
--
-- With GCRELAY_BENCH_ONCE=1 as well, each pool line is sent once: a thread
-- that has used its whole file sends GET /_bench/static once a second
-- instead (bench.py stops wrk when the store holds every event).
--
-- done() prints one line "GCRELAY_BENCH {json}" with wrk's counters and
-- latency percentiles (microseconds) for bench.py to read.

local pool_prefix = os.getenv("GCRELAY_BENCH_POOL")
local once = os.getenv("GCRELAY_BENCH_ONCE") == "1"
local threads = {}
local nthreads = 0

function setup(thread)
	thread:set("tid", nthreads)
	nthreads = nthreads + 1
	table.insert(threads, thread)
end

function init(args)
	sent = 0
	reused = 0
	pool_size = 0
	if not pool_prefix then
		return
	end
	pool = {}
	local path = pool_prefix .. "." .. tid
	local f = assert(io.open(path, "rb"))
	for line in f:lines() do
		local id, ts, sig, body =
		    line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)\t(.+)$")
		assert(id, "malformed line in " .. path)
		pool[#pool + 1] = wrk.format("POST", "/v1/events", {
			["Host"] = wrk.headers["Host"],
			["Content-Type"] = "application/json",
			["webhook-id"] = id,
			["webhook-timestamp"] = ts,
			["webhook-signature"] = sig,
		}, body)
	end
	f:close()
	pool_size = #pool
	assert(pool_size > 0, path .. " is empty")
	idle_req = wrk.format("GET", "/_bench/static")
	next_idx = 1
end

if pool_prefix then
	function request()
		if once and sent >= pool_size then
			return idle_req
		end
		local r = pool[next_idx]
		sent = sent + 1
		if sent > pool_size then
			reused = reused + 1
		end
		next_idx = next_idx + 1
		if next_idx > pool_size then
			next_idx = 1
		end
		return r
	end
end

if pool_prefix and once then
	function delay()
		if sent >= pool_size then
			return 1000
		end
		return 0
	end
end

function done(summary, latency, requests)
	local sent_all, reused_all, pool_all = 0, 0, 0
	for _, t in ipairs(threads) do
		sent_all = sent_all + (t:get("sent") or 0)
		reused_all = reused_all + (t:get("reused") or 0)
		pool_all = pool_all + (t:get("pool_size") or 0)
	end
	local e = summary.errors
	io.write(string.format(
	    'GCRELAY_BENCH {"requests":%d,"duration_us":%d,"bytes":%d,' ..
	    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
	    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,' ..
	    '"max_us":%d,"sent":%d,"reused":%d,"pool":%d}\n',
	    summary.requests, summary.duration, summary.bytes,
	    e.connect, e.read, e.write, e.status, e.timeout,
	    latency:percentile(50), latency:percentile(90),
	    latency:percentile(99), latency.mean, latency.max,
	    sent_all, reused_all, pool_all))
end
