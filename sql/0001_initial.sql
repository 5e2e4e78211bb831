-- Users and their greetings.  PostgreSQL is the source of truth: RabbitMQ only
-- carries message ids, and every state change below is a conditional UPDATE.

CREATE TABLE users (
    id          uuid PRIMARY KEY,
    first_name  text NOT NULL CHECK (char_length(first_name) BETWEEN 1 AND 100),
    last_name   text NOT NULL CHECK (char_length(last_name) BETWEEN 1 AND 100),
    email       text NOT NULL,
    birthday    date NOT NULL,
    anniversary date,
    location    text NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    -- A deleted user is kept (its delivery log stays readable) but is gone
    -- from the API, and its email is free again.
    deleted_at  timestamptz
);

-- Emails are unique case-insensitively among live users.
CREATE UNIQUE INDEX users_email_key ON users (lower(email)) WHERE deleted_at IS NULL;

-- One row per (user, occasion, local occasion date): the database, not the
-- code, guarantees a greeting is never planned twice.
CREATE TABLE messages (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (id),
    occasion      text NOT NULL CHECK (occasion IN ('birthday', 'anniversary')),
    occasion_date date NOT NULL,
    send_at       timestamptz NOT NULL,
    status        text NOT NULL CHECK (status IN (
                      'scheduled', 'queued', 'sending', 'sent',
                      'retrying', 'failed', 'expired', 'cancelled')),
    -- When the row next needs the scheduler: send_at while scheduled, the
    -- backoff deadline while retrying.
    due_at        timestamptz NOT NULL,
    -- Until when a queued or sending row belongs to whoever moved it there;
    -- past it, recovery takes the row back.
    lease_until   timestamptz,
    attempts      integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error    text,
    sent_at       timestamptz,
    -- An operator's re-drive (POST /messages/{id}/retry) restarts the
    -- lateness clock, so a re-driven expired greeting is not expired again.
    redriven_at   timestamptz,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    CONSTRAINT messages_once UNIQUE (user_id, occasion, occasion_date)
);

-- At most one not-yet-started greeting per user and occasion, whoever writes it
-- (an edit, the daily job, the end of the previous greeting).
CREATE UNIQUE INDEX messages_one_scheduled
    ON messages (user_id, occasion) WHERE status = 'scheduled';

-- The due scan touches only rows waiting for the scheduler: cheap at 10 M users.
CREATE INDEX messages_due ON messages (due_at) WHERE status IN ('scheduled', 'retrying');

-- The recovery sweep touches only leased rows.
CREATE INDEX messages_leased ON messages (lease_until) WHERE status IN ('queued', 'sending');

-- The delivery log, filtered by status and paged by id.
CREATE INDEX messages_status_id ON messages (status, id);
