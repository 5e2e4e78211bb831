-- Shared by the api_bench.py wrk scripts (dofile'd by each): a thread id per
-- wrk thread, a per-thread random seed, the id file reader, and a done()
-- that prints one machine-readable line (latencies in microseconds).
--
-- Script arguments (after `--`): args[1] a token unique to this run (keeps
-- generated e-mails unique across runs), args[2] a file of ids, one a line.

local next_tid = 1

function setup(thread)
   thread:set("tid", next_tid)
   next_tid = next_tid + 1
end

function common_init(args)
   token = args[1] or tostring(os.time())
   tid = tid or 0
   counter = 0
   -- os.time() has 1 s resolution: mix in the run token and the thread id.
   local seed = os.time() + tid * 7919
   for i = 1, #token do seed = (seed * 31 + token:byte(i)) % 2147483647 end
   math.randomseed(seed)
   math.random(); math.random()
   if args[2] then
      ids = {}
      for line in io.lines(args[2]) do
         if #line > 0 then ids[#ids + 1] = line end
      end
      assert(#ids > 0, "no ids in " .. args[2])
   end
end

function random_id()
   return ids[math.random(#ids)]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
      '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, ' ..
      '"non2xx": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d}\n',
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean,
      e.status, e.connect, e.read, e.write, e.timeout))
end
