-- GET /health: the same request each time; only the shared done().
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

function init(args)
   common_init(args)
end
