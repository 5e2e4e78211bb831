-- Every statement birthdayd runs, one named block each; store.py has a method
-- per name.  Instants are always parameters: SQL never calls now() to decide
-- what is due (docs/ARCHITECTURE.md §4.3).

-- name: insert_user
INSERT INTO users (id, first_name, last_name, email, birthday, anniversary, location,
                   created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
RETURNING *;

-- name: create_user
-- A user and its first greetings, in one statement (one round trip): $1-$7
-- the user, $8 now, $9-$12 the greetings (id, occasion, date, send_at).
-- Returns the user with its schedule, shaped like user_with_schedule.
WITH u AS (
    INSERT INTO users (id, first_name, last_name, email, birthday, anniversary, location,
                       created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
    RETURNING *
), m AS (
    INSERT INTO messages (id, user_id, occasion, occasion_date, send_at, status, due_at,
                          created_at, updated_at)
    SELECT t.id, u.id, t.occasion, t.occasion_date, t.send_at, 'scheduled', t.send_at, $8, $8
    FROM u, unnest($9::uuid[], $10::text[], $11::date[], $12::timestamptz[])
         AS t (id, occasion, occasion_date, send_at)
    RETURNING occasion, occasion_date, send_at, status
)
SELECT u.*,
       (SELECT array_agg(occasion ORDER BY occasion) FROM m) AS occasions,
       (SELECT array_agg(occasion_date ORDER BY occasion) FROM m) AS dates,
       (SELECT array_agg(send_at ORDER BY occasion) FROM m) AS send_ats,
       (SELECT array_agg(status ORDER BY occasion) FROM m) AS statuses
FROM u;

-- name: user_json
-- GET /user/{id} in one statement: the user with its schedule as the JSON
-- text the api writes (the view users_as_json: migration 0009).
SELECT json FROM users_as_json WHERE id = $1 AND deleted_at IS NULL;

-- name: user_with_schedule
-- The answer to a PUT /user/{id} that moved greetings, read in its
-- transaction (the view: migrations 0004 and 0008).
SELECT * FROM users_with_schedule WHERE id = $1 AND deleted_at IS NULL;

-- name: users_page
-- A page of GET /users in one statement: each user as user_json, with its id
-- for the cursor.  $1 is the cursor, the nil uuid for the first page: no
-- "$1 IS NULL OR" branch, which a cached generic plan cannot use to bound
-- the key scan.  The page's ids are chosen first (live_users_after:
-- users_pkey read in key order, 128 ids at a time, migration 0008), then each
-- user is read by its key (OFFSET 0 keeps the lateral a per-id lookup:
-- unfenced, a never-analyzed small table was hash-joined by a scan of every
-- user), so the schedules are built for those users only whatever the
-- estimates say.
SELECT v.id, v.json
FROM live_users_after($1, $2) AS page
CROSS JOIN LATERAL (SELECT * FROM users_as_json v WHERE v.id = page.id OFFSET 0) AS v
ORDER BY page.id;

-- name: get_user
SELECT * FROM users WHERE id = $1 AND deleted_at IS NULL;

-- name: lock_user
SELECT * FROM users WHERE id = $1 AND deleted_at IS NULL FOR UPDATE;

-- name: rename_user
-- PUT /user/{id} that moves no greeting (names, e-mail) in one statement, a
-- compare-and-set: applied only if the user's fields are still $5-$10, as the
-- request read them (else nothing: the caller takes the locked way).  Returns
-- the user as user_with_schedule does; its greetings are unchanged, so the
-- schedule is read beside the update.
WITH renamed AS (
    UPDATE users
    SET first_name = $2, last_name = $3, email = $4, updated_at = greatest(updated_at, $11)
    WHERE id = $1 AND deleted_at IS NULL
      AND (first_name, last_name, email, birthday, anniversary, location)
          IS NOT DISTINCT FROM ($5, $6, $7, $8, $9, $10)
    RETURNING *
)
SELECT renamed.*, v.occasions, v.dates, v.send_ats, v.statuses
FROM renamed
CROSS JOIN LATERAL (
    SELECT v.occasions, v.dates, v.send_ats, v.statuses
    FROM users_with_schedule v WHERE v.id = renamed.id OFFSET 0
) AS v;

-- name: update_user
UPDATE users
SET first_name = $2, last_name = $3, email = $4, birthday = $5, anniversary = $6,
    location = $7, updated_at = $8
WHERE id = $1 AND deleted_at IS NULL
RETURNING *;

-- name: delete_user
-- DELETE /user/{id} in one statement: the user is marked deleted (its row
-- locked first, as every writer does: users before messages), and its
-- greetings not yet taken by a worker are cancelled.  One a worker holds is
-- cancelled by the worker's claim_calls instead.
WITH gone AS (
    UPDATE users SET deleted_at = $2, updated_at = $2
    WHERE id = $1 AND deleted_at IS NULL
    RETURNING id
), cancelled AS (
    UPDATE messages SET status = 'cancelled', lease_until = NULL, updated_at = $2
    WHERE id IN (
        SELECT id FROM messages
        WHERE user_id IN (SELECT id FROM gone)
          AND status IN ('scheduled', 'queued', 'retrying')
        ORDER BY id
        FOR UPDATE
    )
)
SELECT id FROM gone;

-- name: latest_dates
-- The last planned date per user and occasion ($2), so a new plan never goes
-- back in time.  One backward probe of (user_id, occasion, occasion_date) per
-- pair, LIMIT 1: the plan cannot depend on statistics (without them a
-- user_id = ANY(...) filter was estimated at half the table and scanned all
-- of it: 0.9 s at 10 M users).
SELECT ids.user_id, o.occasion, last.occasion_date
FROM unnest($1::uuid[]) AS ids (user_id)
CROSS JOIN unnest($2::text[]) AS o (occasion)
CROSS JOIN LATERAL (
    SELECT m.occasion_date FROM messages m
    WHERE m.user_id = ids.user_id AND m.occasion = o.occasion AND m.status <> 'cancelled'
    ORDER BY m.occasion_date DESC
    LIMIT 1
) AS last;

-- name: lock_users
-- Live users, locked in id order (so concurrent batches cannot deadlock).
SELECT * FROM users
WHERE id = ANY($1::uuid[]) AND deleted_at IS NULL
ORDER BY id
FOR UPDATE;

-- name: drop_unsent
-- An edit replaces the greetings of the changed occasions that are not due
-- yet, wherever they are: planned, published ahead of their instant, or held
-- by a worker waiting for it (which then finds no row and makes no call).
-- One already due (owed), in flight or done stays.  $3 is read after the
-- user's row is locked, and a worker locks the user before its provider
-- call (claim_calls), so no greeting this deletes can have been offered.
DELETE FROM messages
WHERE user_id = $1 AND status IN ('scheduled', 'queued', 'retrying', 'sending')
  AND occasion = ANY($2::text[]) AND send_at > $3;

-- name: insert_messages
-- The UNIQUE keys turn a second plan for the same greeting into a no-op.
INSERT INTO messages (id, user_id, occasion, occasion_date, send_at, status, due_at,
                      created_at, updated_at)
SELECT id, user_id, occasion, occasion_date, send_at, 'scheduled', send_at, $6, $6
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::date[], $5::timestamptz[])
     AS t (id, user_id, occasion, occasion_date, send_at)
ON CONFLICT DO NOTHING;

-- The delivery log (GET /messages), one statement per filter, so each has
-- an index that bounds it in any plan, generic or custom, with statistics or
-- without: no "$n IS NULL OR ..." branch.  The cursor is the last id seen
-- (the nil uuid for the first page).

-- name: list_messages
SELECT * FROM messages
WHERE id > $1
ORDER BY id
LIMIT $2;

-- name: list_messages_by_status
-- The (status, id) index: operators page through the few failed or expired
-- among millions sent.
SELECT * FROM messages
WHERE status = $1 AND id > $2
ORDER BY status, id
LIMIT $3;

-- name: list_messages_of_user
-- A user has a few greetings a year: found by the user's key (messages_once),
-- then sorted.  The OFFSET 0 fence keeps a generic plan from walking the
-- primary key in id order and filtering on the user instead.
SELECT * FROM (
    SELECT * FROM messages WHERE user_id = $1 OFFSET 0
) AS mine
WHERE id > $2
ORDER BY id
LIMIT $3;

-- name: list_messages_of_user_by_status
SELECT * FROM (
    SELECT * FROM messages WHERE user_id = $1 OFFSET 0
) AS mine
WHERE status = $2 AND id > $3
ORDER BY id
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
-- The transition that makes a delivered id this worker's, for a batch of
-- delivered ids; the provider is called only after claim_calls re-asserts it.
-- Batch statements here find their rows by id alone, behind an OFFSET 0
-- fence, then check the status: a status condition the planner could use
-- let stale statistics (a mass change of status at 09:00) pick a scan of
-- every queued row for each batch.  Rows are locked in id order, so
-- concurrent batches wait for each other but never deadlock.  The lease
-- covers waiting until due (published ahead) plus $2 (timeout and margin).
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
SET status = 'sending', attempts = m.attempts + 1, called_at = NULL, stale_since = NULL,
    lease_until = greatest(m.due_at, $3) + $2::interval, updated_at = $3
FROM mine
WHERE m.id = mine.id
RETURNING m.id, m.user_id, m.occasion, m.occasion_date, m.send_at, m.due_at, m.attempts,
          m.redriven_at;

-- name: started_at
-- The rows a start_sending stamped with one of $2 (a commit whose answer
-- was lost, before a retry).
SELECT m.id, m.user_id, m.occasion, m.occasion_date, m.send_at, m.due_at, m.attempts,
       m.redriven_at
FROM (
    SELECT * FROM messages WHERE id = ANY($1::uuid[]) OFFSET 0
) AS m
WHERE m.status = 'sending' AND m.updated_at = ANY($2::timestamptz[]);

-- name: claim_calls
-- Right before the provider calls, one statement re-asserts for a batch that
-- each row is still this worker's ($1 ids, each sending at its attempt in
-- $2) and returns the name and e-mail to send with, as they are now.  The
-- users' rows are locked first, in id order (users before messages, like
-- every writer, and never a deadlock between batches), so an edit or a
-- delete either committed before this and wins, or waits until it is done.
-- A greeting whose user was deleted is cancelled here instead (status
-- 'cancelled' in the answer).  called_at marks that the provider may now
-- receive it.  The lease is left as start_sending set it (due time plus the
-- call's lease): a call claimed late and still unanswered when it runs out
-- gets recovery's grace for called rows.  So the usual claim changes no
-- indexed column and is a HOT update (no index entries, see migration 0005).
-- Users are found by the array of their ids (an index lookup whatever the
-- statistics say).
WITH target AS (
    SELECT u.id, u.first_name, u.last_name, u.email, u.deleted_at
    FROM users u
    WHERE u.id = ANY(ARRAY(SELECT user_id FROM messages WHERE id = ANY($1::uuid[])))
    ORDER BY u.id
    FOR SHARE
)
UPDATE messages m
SET status = CASE WHEN t.deleted_at IS NULL THEN 'sending' ELSE 'cancelled' END,
    called_at = CASE WHEN t.deleted_at IS NULL THEN $3::timestamptz END,
    lease_until = CASE WHEN t.deleted_at IS NULL THEN m.lease_until END,
    updated_at = $3
FROM unnest($1::uuid[], $2::int[]) AS asked (id, attempt), target t
WHERE m.id = ANY($1::uuid[]) AND m.id = asked.id
  AND m.status = 'sending' AND m.attempts = asked.attempt AND m.user_id = t.id
RETURNING m.id, m.status, t.first_name, t.last_name, t.email;

-- name: release
-- Handed back without a provider call (breaker open, or sent too early), or
-- after a call that could not connect ($5 says why; else the last error
-- stays): the attempt does not count.
UPDATE messages
SET status = 'retrying', due_at = $3, attempts = attempts - 1, lease_until = NULL,
    last_error = coalesce($5::text, last_error), called_at = NULL, updated_at = $4
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
-- lost) go back to the scheduler, due now.  A row in sending that may have
-- reached the provider (called_at set) gets one grace first: the first
-- sweep marks it and extends its lease by $3, the next takes it back, so a
-- live worker that could not reach PostgreSQL records its answer instead of
-- having the greeting sent twice.  Returns the state each row was taken
-- from and whether it was called; granted rows come back with taken false.
WITH stale AS (
    SELECT id, status, called_at IS NOT NULL AS called,
           status = 'sending' AND called_at IS NOT NULL AND stale_since IS NULL AS grace
    FROM messages
    WHERE status IN ('queued', 'sending') AND lease_until < $1
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE messages m
SET status = CASE WHEN stale.grace THEN m.status ELSE 'retrying' END,
    due_at = CASE WHEN stale.grace THEN m.due_at ELSE $1 END,
    lease_until = CASE WHEN stale.grace THEN $1 + $3::interval END,
    stale_since = CASE WHEN stale.grace THEN $1::timestamptz END,
    updated_at = $1,
    last_error = CASE WHEN stale.grace THEN m.last_error
                      ELSE coalesce(m.last_error, 'lease expired in ' || stale.status) END
FROM stale
WHERE m.id = stale.id
RETURNING m.id, stale.status AS taken_from, stale.called, NOT stale.grace AS taken;

-- name: requeue_queued
-- The main queue was missing (deleted, or the broker lost its data): every
-- queued id it held is gone, so hand the queued rows back, due now; the
-- next tick publishes them again.  A second copy of an id still in a queue
-- costs one dropped redelivery.
UPDATE messages m
SET status = 'retrying', due_at = $1, lease_until = NULL, updated_at = $1
FROM (
    SELECT id FROM messages WHERE status = 'queued'
    ORDER BY id
    FOR UPDATE SKIP LOCKED
) AS lost
WHERE m.id = lost.id
RETURNING m.id;

-- name: users_page_needs
-- A page of live users, each with the occasions that have no greeting in
-- flight or planned (the daily job's self-healing scan).  Each check is a
-- LIMIT 1 probe of the pending-by-user index per user: without statistics a
-- NOT EXISTS here became one hashed pass over every pending greeting per page
-- (11 s a page, days for a heal at 10 M users).
SELECT u.*,
       b.found IS NULL AS needs_birthday,
       u.anniversary IS NOT NULL AND a.found IS NULL AS needs_anniversary
FROM (
    SELECT u.* FROM live_users_after($1, $2) AS page  -- $1: the nil uuid first
    CROSS JOIN LATERAL (SELECT * FROM users WHERE users.id = page.id OFFSET 0) AS u
) AS u
LEFT JOIN LATERAL (
    SELECT true AS found FROM messages m
    WHERE m.user_id = u.id AND m.occasion = 'birthday'
      AND m.status IN ('scheduled', 'queued', 'sending', 'retrying')
    LIMIT 1
) AS b ON true
LEFT JOIN LATERAL (
    SELECT true AS found FROM messages m
    WHERE m.user_id = u.id AND m.occasion = 'anniversary'
      AND m.status IN ('scheduled', 'queued', 'sending', 'retrying')
    LIMIT 1
) AS a ON true
ORDER BY u.id;

-- name: queued_count
-- Rows claimed and published, not yet taken by a worker (the tick's
-- backpressure; the leased-rows index serves it).
SELECT count(*) FROM messages WHERE status = 'queued';

-- name: due_backlog
SELECT count(*) FROM messages
WHERE status IN ('scheduled', 'retrying') AND due_at <= $1;
