-- Every statement birthdayd runs, one named block each; store.py has a method
-- per name.  Instants are always parameters: SQL never calls now() to decide
-- what is due (DESIGN §3.3).

-- name: insert_user
INSERT INTO users (id, first_name, last_name, email, birthday, anniversary, location,
                   created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
RETURNING *;

-- name: get_user
SELECT * FROM users WHERE id = $1 AND deleted_at IS NULL;

-- name: lock_user
SELECT * FROM users WHERE id = $1 AND deleted_at IS NULL FOR UPDATE;

-- name: update_user
UPDATE users
SET first_name = $2, last_name = $3, email = $4, birthday = $5, anniversary = $6,
    location = $7, updated_at = $8
WHERE id = $1 AND deleted_at IS NULL
RETURNING *;

-- name: delete_user
UPDATE users SET deleted_at = $2, updated_at = $2
WHERE id = $1 AND deleted_at IS NULL
RETURNING id;

-- name: list_users
SELECT * FROM users
WHERE deleted_at IS NULL AND ($1::uuid IS NULL OR id > $1)
ORDER BY id
LIMIT $2;

-- name: pending_for_users
-- The next greeting not yet done, per user and occasion.
SELECT DISTINCT ON (user_id, occasion) *
FROM messages
WHERE user_id = ANY($1::uuid[])
  AND status IN ('scheduled', 'queued', 'sending', 'retrying')
ORDER BY user_id, occasion, occasion_date;

-- name: latest_dates
-- The last planned date per user and occasion, so a new plan never goes back
-- in time.
SELECT user_id, occasion, max(occasion_date) AS occasion_date
FROM messages
WHERE user_id = ANY($1::uuid[]) AND status <> 'cancelled'
GROUP BY user_id, occasion;

-- name: lock_users
-- Live users, locked in id order (so concurrent batches cannot deadlock).
SELECT * FROM users
WHERE id = ANY($1::uuid[]) AND deleted_at IS NULL
ORDER BY id
FOR UPDATE;

-- name: drop_scheduled
-- An edit replaces the greetings of the changed occasions that are not due
-- yet; one already due (owed, if not yet claimed), in flight or done stays.
DELETE FROM messages
WHERE user_id = $1 AND status = 'scheduled' AND occasion = ANY($2::text[]) AND send_at > $3;

-- name: cancel_pending
UPDATE messages SET status = 'cancelled', lease_until = NULL, updated_at = $2
WHERE id IN (
    SELECT id FROM messages
    WHERE user_id = $1 AND status IN ('scheduled', 'queued', 'retrying')
    ORDER BY id
    FOR UPDATE
);

-- name: insert_messages
-- The UNIQUE keys turn a second plan for the same greeting into a no-op.
INSERT INTO messages (id, user_id, occasion, occasion_date, send_at, status, due_at,
                      created_at, updated_at)
SELECT id, user_id, occasion, occasion_date, send_at, 'scheduled', send_at, $6, $6
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::date[], $5::timestamptz[])
     AS t (id, user_id, occasion, occasion_date, send_at)
ON CONFLICT DO NOTHING;

-- name: list_messages
SELECT * FROM messages
WHERE ($1::uuid IS NULL OR user_id = $1)
  AND ($2::uuid IS NULL OR id > $2)
ORDER BY id
LIMIT $3;

-- name: list_messages_by_status
-- Its own statement, so the (status, id) index serves it: operators page
-- through the few failed or expired among millions sent.
SELECT * FROM messages
WHERE status = $1
  AND ($2::uuid IS NULL OR user_id = $2)
  AND ($3::uuid IS NULL OR id > $3)
ORDER BY status, id
LIMIT $4;

-- name: get_message
SELECT * FROM messages WHERE id = $1;

-- name: redrive
-- An operator's re-drive: a fresh set of attempts, and lateness counted from now.
UPDATE messages m
SET status = 'retrying', due_at = $2, attempts = 0, lease_until = NULL,
    redriven_at = $2, updated_at = $2
FROM users u
WHERE m.id = $1 AND m.status IN ('failed', 'expired')
  AND u.id = m.user_id AND u.deleted_at IS NULL
RETURNING m.*;

-- name: expire_overdue
-- Greetings later than MAX_LATENESS are expired rather than sent.
UPDATE messages
SET status = 'expired', lease_until = NULL, last_error = 'later than MAX_LATENESS',
    updated_at = $3
WHERE id IN (
    SELECT id FROM messages
    WHERE status IN ('scheduled', 'retrying') AND due_at <= $1
      AND coalesce(redriven_at, send_at) < $2
    ORDER BY due_at
    LIMIT $4
    FOR UPDATE SKIP LOCKED
)
RETURNING user_id, occasion, occasion_date;

-- name: claim_due
-- $1 horizon (due before it), $2 batch size, $3 lease end, $4 now.
UPDATE messages
SET status = 'queued', lease_until = $3, updated_at = $4
WHERE id IN (
    SELECT id FROM messages
    WHERE status IN ('scheduled', 'retrying') AND due_at <= $1
    ORDER BY due_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
RETURNING id;

-- name: extend_lease
-- RabbitMQ confirmed the ids: the rows may wait in the queue this long.  A
-- row a worker holds is on its way to sending and needs no longer lease.
UPDATE messages m SET lease_until = $2
FROM (
    SELECT id, status FROM messages
    WHERE id = ANY($1::uuid[])
    ORDER BY id
    OFFSET 0
    FOR UPDATE SKIP LOCKED
) AS confirmed
WHERE m.id = confirmed.id AND confirmed.status = 'queued';

-- name: unclaim
-- A publish failed: hand the rows straight back, due now.
UPDATE messages m
SET status = 'retrying', due_at = $2, lease_until = NULL, updated_at = $2
FROM (
    SELECT id, status FROM messages
    WHERE id = ANY($1::uuid[])
    ORDER BY id
    OFFSET 0
    FOR UPDATE SKIP LOCKED
) AS unpublished
WHERE m.id = unpublished.id AND unpublished.status = 'queued';

-- name: claim_one
-- A retry whose backoff is shorter than the tick period is re-published by
-- the worker itself; the tick may race it, and only one wins.
UPDATE messages
SET status = 'queued', lease_until = $2, updated_at = $3
WHERE id = $1 AND status = 'retrying'
RETURNING id;

-- name: start_sending
-- The one transition that entitles a worker to call the provider, for a
-- batch of delivered ids.  Batch statements here find their rows by id
-- alone, behind an OFFSET 0 fence, then check the status: a status condition
-- the planner could use let stale statistics (a mass change of status at
-- 09:00) pick a scan of every queued row for each batch.  Rows are locked in
-- id order, so concurrent batches wait for each other but never deadlock.
-- The lease covers waiting until due (published ahead) plus $2 (timeout and
-- margin).
WITH mine AS (
    SELECT id FROM (
        SELECT id, status FROM messages
        WHERE id = ANY($1::uuid[])
        ORDER BY id
        OFFSET 0
        FOR UPDATE
    ) AS delivered
    WHERE status = 'queued'
)
UPDATE messages m
SET status = 'sending', attempts = m.attempts + 1,
    lease_until = greatest(m.due_at, $3) + $2::interval, updated_at = $3
FROM mine, users u
WHERE m.id = mine.id AND u.id = m.user_id AND u.deleted_at IS NULL
RETURNING m.id, m.user_id, m.occasion, m.occasion_date, m.send_at, m.due_at, m.attempts,
          m.redriven_at, u.first_name, u.last_name, u.email, u.location,
          u.birthday, u.anniversary;

-- name: started_at
-- The rows a start_sending stamped with $2 (its commit's answer was lost).
SELECT m.id, m.user_id, m.occasion, m.occasion_date, m.send_at, m.due_at, m.attempts,
       m.redriven_at, u.first_name, u.last_name, u.email, u.location,
       u.birthday, u.anniversary
FROM (
    SELECT * FROM messages WHERE id = ANY($1::uuid[]) OFFSET 0
) AS m
JOIN users u ON u.id = m.user_id
WHERE m.status = 'sending' AND m.updated_at = $2;

-- name: cancel_if_deleted
-- A queued greeting whose user was deleted meanwhile is cancelled, not sent.
UPDATE messages m SET status = 'cancelled', lease_until = NULL, updated_at = $2
FROM users u
WHERE m.id = $1 AND m.status IN ('queued', 'sending') AND u.id = m.user_id
  AND u.deleted_at IS NOT NULL
RETURNING m.id;

-- name: release
-- Handed back without a provider call (breaker open, or sent too early):
-- the attempt does not count.
UPDATE messages
SET status = 'retrying', due_at = $3, attempts = attempts - 1, lease_until = NULL,
    updated_at = $4
WHERE id = $1 AND status = 'sending' AND attempts = $2;

-- name: finish
-- A greeting retrying, failed, expired or cancelled (sent ones go through
-- finish_sent): $1 id, $2 attempt, $3 status, $4 error, $5 now, $6 due_at
-- (retrying only).
UPDATE messages
SET status = $3::text, last_error = $4::text, lease_until = NULL,
    due_at = coalesce($6::timestamptz, due_at), updated_at = $5::timestamptz
WHERE id = $1 AND status = 'sending' AND attempts = $2
RETURNING id;

-- name: finish_sent
-- A batch of 2xx answers: $1 ids with $2 their attempt numbers (found and
-- locked like start_sending).
WITH mine AS (
    SELECT id FROM (
        SELECT id, status, attempts FROM messages
        WHERE id = ANY($1::uuid[])
        ORDER BY id
        OFFSET 0
        FOR UPDATE
    ) AS answered
    WHERE status = 'sending'
      AND (id, attempts) IN (SELECT * FROM unnest($1::uuid[], $2::int[]))
)
UPDATE messages m
SET status = 'sent', sent_at = $3, last_error = NULL, lease_until = NULL, updated_at = $3
FROM mine
WHERE m.id = mine.id
RETURNING m.id;

-- name: finish_late_sent
-- The provider accepted after recovery had taken the row back: still record
-- it, so nobody sends it again.
UPDATE messages
SET status = 'sent', sent_at = $2, lease_until = NULL, last_error = NULL, updated_at = $2
WHERE id = $1 AND status IN ('queued', 'sending', 'retrying')
RETURNING id;

-- name: recover_stale
-- Rows whose lease ran out (a scheduler or worker died, or a publish was
-- lost) go back to the scheduler, due now.  Returns the state each was
-- taken from: one taken from sending may already have been accepted.
WITH stale AS (
    SELECT id, status FROM messages
    WHERE status IN ('queued', 'sending') AND lease_until < $1
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE messages m
SET status = 'retrying', due_at = $1, lease_until = NULL, updated_at = $1,
    last_error = coalesce(m.last_error, 'lease expired in ' || stale.status)
FROM stale
WHERE m.id = stale.id
RETURNING m.id, stale.status AS taken_from;

-- name: users_page_needs
-- A page of live users, each with the occasions that have no greeting in
-- flight or planned (the daily job's self-healing scan).
SELECT u.*,
       NOT EXISTS (
           SELECT 1 FROM messages m
           WHERE m.user_id = u.id AND m.occasion = 'birthday'
             AND m.status IN ('scheduled', 'queued', 'sending', 'retrying')
       ) AS needs_birthday,
       u.anniversary IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM messages m
           WHERE m.user_id = u.id AND m.occasion = 'anniversary'
             AND m.status IN ('scheduled', 'queued', 'sending', 'retrying')
       ) AS needs_anniversary
FROM users u
WHERE u.deleted_at IS NULL AND ($1::uuid IS NULL OR u.id > $1)
ORDER BY u.id
LIMIT $2;

-- name: due_backlog
SELECT count(*) FROM messages
WHERE status IN ('scheduled', 'retrying') AND due_at <= $1;
