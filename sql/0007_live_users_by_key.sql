-- live_users_after walks the primary key, and only the primary key, whatever
-- the statistics say.  Migration 0006 probed "next LIVE id after x": the
-- condition deleted_at IS NULL is users_email_key's predicate, so on a
-- database that grew from empty and was never analyzed (pg_class still says
-- the partial index holds nothing) each probe read every live user through
-- that index's bitmap and sorted them: O(users) per probe, 90-130 ms for a
-- page of 100 at 3,000-5,000 users.  Each probe now asks for the next id
-- after x, live or not (no condition any other index could serve: LIMIT 1 in
-- key order is one step down users_pkey), and the walk counts live ones
-- until it has n.  A deleted user costs one more step.  n >= 1.
CREATE OR REPLACE FUNCTION live_users_after(after uuid, n integer) RETURNS TABLE (id uuid)
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE walk (id, live, k) AS (
        (SELECT u.id, u.deleted_at IS NULL, (u.deleted_at IS NULL)::integer
         FROM users u
         WHERE u.id > after
         ORDER BY u.id LIMIT 1)
        UNION ALL
        SELECT nxt.id, nxt.live, walk.k + nxt.live::integer
        FROM walk
        CROSS JOIN LATERAL (
            SELECT u.id, u.deleted_at IS NULL AS live FROM users u
            WHERE u.id > walk.id
            ORDER BY u.id LIMIT 1
        ) AS nxt
        WHERE walk.k < n
    )
    SELECT walk.id FROM walk WHERE walk.live
$$;
