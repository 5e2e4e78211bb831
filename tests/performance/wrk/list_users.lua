-- GET /users?limit=100&after=<cursor>: a random cursor from the id file per
-- request (api_bench.py leaves out the last ids, so every page is full).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

function init(args)
   common_init(args)
end

function request()
   return wrk.format("GET", "/users?limit=100&after=" .. random_id())
end
