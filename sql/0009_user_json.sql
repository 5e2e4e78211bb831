-- GET /user/{id} and GET /users get their users as JSON text from
-- PostgreSQL: the api passes it through instead of decoding rows of arrays
-- and instants and encoding them again.  For a page of 100 that was three
-- fifths of the CPU the page cost the api process (single-threaded); the
-- text costs PostgreSQL (whose backends run in parallel) about half of
-- that.  POST and PUT still answer with the api's own view (api.user_view,
-- written by orjson) of the rows they wrote.
--
-- So the text is what that view writes: the same keys, in the same order;
-- dates as "YYYY-MM-DD"; instants in UTC as RFC 3339 with "Z", with
-- microseconds only when there are any; strings escaped by to_json.  Built
-- by concatenation: json_build_object looks up the type of every argument on
-- every call, which made the page's text cost twice as much.  Nothing
-- depends on the session's DateStyle, TimeZone or locale.  Plain SQL
-- expressions, so the planner inlines them.

-- An instant as a JSON string.
CREATE FUNCTION json_instant(t timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT '"' || to_char(t AT TIME ZONE 'UTC',
                          CASE WHEN date_trunc('second', t) = t
                               THEN 'YYYY-MM-DD"T"HH24:MI:SS'
                               ELSE 'YYYY-MM-DD"T"HH24:MI:SS.US' END) || 'Z"'
$$;

-- A date as a JSON string, null as null (as a timestamp: no zone involved).
CREATE FUNCTION json_date(d date) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce('"' || to_char(d::timestamp, 'YYYY-MM-DD') || '"', 'null')
$$;

-- One entry of a user's schedule.  occasion and status are plain words (the
-- messages table's checks), so they need no escaping.
CREATE FUNCTION schedule_entry_json(occasion text, occasion_date date, send_at timestamptz,
                                    status text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT '{"occasion":"' || occasion || '","date":' || json_date(occasion_date)
           || ',"sendAt":' || json_instant(send_at) || ',"status":"' || status || '"}'
$$;

-- A user with its schedule (the entries' JSON joined by commas, or null for
-- none), as api.user_view writes it.
CREATE FUNCTION user_json(u users, schedule text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT '{"id":"' || u.id::text
           || '","firstName":' || to_json(u.first_name)::text
           || ',"lastName":' || to_json(u.last_name)::text
           || ',"email":' || to_json(u.email)::text
           || ',"birthday":' || json_date(u.birthday)
           || ',"anniversary":' || json_date(u.anniversary)
           || ',"location":' || to_json(u.location)::text
           || ',"schedule":[' || coalesce(schedule, '')
           || '],"createdAt":' || json_instant(u.created_at)
           || ',"updatedAt":' || json_instant(u.updated_at) || '}'
$$;

-- Every user with its schedule as JSON text: GET /user/{id} and GET /users
-- read it (the api's PUT and POST answers come from the same rows, written
-- by orjson).  The schedule is users_with_schedule's: the next greeting not
-- yet done per occasion, in occasion order (DISTINCT ON sorts the rows, and
-- string_agg keeps the order it is fed).  The planner inlines the view as it
-- does users_with_schedule: a filter on id reaches users' primary key, the
-- lateral part the pending-by-user index.
CREATE VIEW users_as_json AS
SELECT u.id, u.deleted_at, user_json(u, s.schedule) AS json
FROM users u
CROSS JOIN LATERAL (
    SELECT string_agg(schedule_entry_json(p.occasion, p.occasion_date, p.send_at, p.status),
                      ',') AS schedule
    FROM (
        SELECT DISTINCT ON (m.occasion) m.occasion, m.occasion_date, m.send_at, m.status
        FROM messages m
        WHERE m.user_id = u.id
          AND m.status IN ('scheduled', 'queued', 'sending', 'retrying')
        ORDER BY m.occasion, m.occasion_date
    ) AS p
) AS s;
