-- A page of live users' ids after a cursor, in id order, as one index probe
-- per id (each "next live id after x", LIMIT 1, which walks users_pkey in
-- order whatever the statistics say).  Written as "deleted_at IS NULL AND
-- id > $1 ORDER BY id LIMIT n", the planner without statistics estimated a
-- few live users, read every one of them through users_email_key's bitmap and
-- sorted them for each page (GET /users at 94-296 req/s here).  n >= 1.
CREATE FUNCTION live_users_after(after uuid, n integer) RETURNS TABLE (id uuid)
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE page (id, k) AS (
        (SELECT u.id, 1 FROM users u
         WHERE u.deleted_at IS NULL AND u.id > after
         ORDER BY u.id LIMIT 1)
        UNION ALL
        SELECT nxt.id, page.k + 1
        FROM page
        CROSS JOIN LATERAL (
            SELECT u.id FROM users u
            WHERE u.deleted_at IS NULL AND u.id > page.id
            ORDER BY u.id LIMIT 1
        ) AS nxt
        WHERE page.k < n
    )
    SELECT page.id FROM page
$$;
