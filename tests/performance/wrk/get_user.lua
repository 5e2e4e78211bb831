-- GET /user/{id}: a random id from the id file per request.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

function init(args)
   common_init(args)
end

function request()
   return wrk.format("GET", "/user/" .. random_id())
end
