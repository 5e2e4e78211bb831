-- What recovery needs to tell a dead worker from a slow one, and a greeting
-- that may have reached the provider from one that cannot have.
--
-- called_at: set by the statement that re-asserts a worker's ownership right
-- before the provider call (cleared when the row is started again).  A row
-- taken back from sending with called_at NULL was never offered to the
-- provider, so retrying it cannot duplicate anything.
--
-- stale_since: the first recovery sweep that finds a called row's lease run
-- out only marks it and extends the lease once; the next sweep takes it back.
-- A worker that is alive but could not reach PostgreSQL (an outage) records
-- its answer within that grace instead of having it sent again.
ALTER TABLE messages ADD COLUMN called_at timestamptz;
ALTER TABLE messages ADD COLUMN stale_since timestamptz;
