-- A user's greetings not done yet, by user: what GET /user/{id} shows, what the
-- daily job checks for each user, what DELETE cancels and an edit replaces.
-- Its predicate is exactly those statements' status list, so it serves them
-- whatever the statistics say (a fresh restore, autovacuum off): without it
-- the planner may combine the per-user key with the status index, which
-- matches every scheduled row.
CREATE INDEX messages_pending_by_user ON messages (user_id, occasion, occasion_date)
    WHERE status IN ('scheduled', 'queued', 'sending', 'retrying');
