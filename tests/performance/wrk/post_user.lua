-- POST /user: a valid user with a unique e-mail per request (run token,
-- thread id, counter, random), birthday and zone varied.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local zones = {"America/New_York", "Europe/London", "Asia/Kathmandu",
               "Australia/Melbourne", "UTC", "America/Los_Angeles", "Asia/Tokyo",
               "Europe/Berlin", "America/Sao_Paulo", "Africa/Lagos"}
local headers = {["Content-Type"] = "application/json"}

function init(args)
   common_init(args)
end

function request()
   counter = counter + 1
   local body = string.format(
      '{"firstName": "Bench", "lastName": "User%d", ' ..
      '"email": "p%s-%d-%d-%d@example.com", "birthday": "%d-%02d-%02d", ' ..
      '"location": "%s"}',
      counter, token, tid, counter, math.random(1000000000),
      math.random(1950, 2005), math.random(12), math.random(28),
      zones[math.random(#zones)])
   return wrk.format("POST", "/user", headers, body)
end
