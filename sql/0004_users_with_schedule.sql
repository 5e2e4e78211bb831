-- A user with its schedule: per occasion, the next greeting not yet done, as
-- parallel arrays ordered by occasion.  GET /user/{id} and GET /users read it
-- in one statement each; the planner inlines the view, so a filter on id
-- reaches users' primary key and the lateral part uses the pending-by-user
-- index.  (u.* is expanded when the view is created: a migration that adds a
-- column to users recreates this view.)
CREATE VIEW users_with_schedule AS
SELECT u.*, s.occasions, s.dates, s.send_ats, s.statuses
FROM users u
CROSS JOIN LATERAL (
    SELECT array_agg(p.occasion ORDER BY p.occasion) AS occasions,
           array_agg(p.occasion_date ORDER BY p.occasion) AS dates,
           array_agg(p.send_at ORDER BY p.occasion) AS send_ats,
           array_agg(p.status ORDER BY p.occasion) AS statuses
    FROM (
        SELECT DISTINCT ON (m.occasion) m.occasion, m.occasion_date, m.send_at, m.status
        FROM messages m
        WHERE m.user_id = u.id
          AND m.status IN ('scheduled', 'queued', 'sending', 'retrying')
        ORDER BY m.occasion, m.occasion_date
    ) AS p
) AS s;
