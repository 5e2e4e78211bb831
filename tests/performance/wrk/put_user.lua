-- PUT /user/{id}: a random id per request; every other request renames the
-- user, the rest give it a new e-mail unique to this run, thread and request
-- (so no PUT ever meets a taken address).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local headers = {["Content-Type"] = "application/json"}

function init(args)
   common_init(args)
end

function request()
   counter = counter + 1
   local body
   if counter % 2 == 0 then
      body = string.format('{"firstName": "Put%d-%d"}', tid, counter)
   else
      body = string.format('{"email": "u%s-%d-%d-%d@example.com"}',
                           token, tid, counter, math.random(1000000000))
   end
   return wrk.format("PUT", "/user/" .. random_id(), headers, body)
end
