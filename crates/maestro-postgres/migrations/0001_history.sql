-- Maestro's state in PostgreSQL, version 1: jobs, their append-only history, the audit chain,
-- step logs in chunks, notes, and the servers' shared queue.

CREATE TABLE jobs (
    job_id           uuid PRIMARY KEY,
    meta             bytea NOT NULL,          -- job.json's bytes, written once
    spec             bytea NOT NULL,          -- the spec, byte for byte as submitted
    spec_file        text NOT NULL,
    owner            text,
    environment      text,
    submitted_at     text,
    state            text,                    -- the last transition's state (NULL before one)
    lease_token      bigint NOT NULL DEFAULT 0, -- the fencing token: +1 at every acquisition
    lease_holder     text,
    lease_expires_at timestamptz,             -- NULL or past: nobody holds the job
    claimed_by       text,                    -- the last holder that took the job
    pruned_at        timestamptz              -- mc prune: hidden, logs gone, history kept
);
CREATE INDEX jobs_state_newest_first ON jobs (state, job_id DESC);

CREATE TABLE transitions (
    job_id uuid NOT NULL REFERENCES jobs,
    seq    integer NOT NULL,                  -- 1, 2, 3 …: a duplicate append fails on the key
    entry  bytea NOT NULL,                    -- the transition's JSON, exactly as read back
    PRIMARY KEY (job_id, seq)
);

CREATE TABLE step_results (
    job_id uuid NOT NULL REFERENCES jobs,
    seq    integer NOT NULL,
    entry  bytea NOT NULL,
    PRIMARY KEY (job_id, seq)
);

CREATE TABLE audit_log (
    seq  bigint PRIMARY KEY,                  -- the line's place in the trail, from 1
    line bytea NOT NULL                       -- one chained record, without its newline
);

CREATE TABLE step_logs (
    job_id    uuid NOT NULL REFERENCES jobs,
    step      text NOT NULL,
    synced_at timestamptz,
    PRIMARY KEY (job_id, step)
);

CREATE TABLE log_chunks (
    job_id uuid NOT NULL,
    step   text NOT NULL,
    seq    integer NOT NULL,
    bytes  bytea NOT NULL,
    PRIMARY KEY (job_id, step, seq),
    FOREIGN KEY (job_id, step) REFERENCES step_logs
);

CREATE TABLE notes (
    job_id uuid NOT NULL REFERENCES jobs,
    name   text NOT NULL,
    seq    integer NOT NULL,
    bytes  bytea NOT NULL,
    PRIMARY KEY (job_id, name, seq)
);

CREATE TABLE server_queue (
    job_id    uuid PRIMARY KEY REFERENCES jobs,
    queued_at timestamptz NOT NULL DEFAULT now()
);

-- History is append-only in the database itself: a trigger refuses every UPDATE, DELETE and
-- TRUNCATE of it (even the owner's), and the role the store uses loses those privileges.
CREATE FUNCTION maestro_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'maestro: % on % refused: history is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER transitions_append_only BEFORE UPDATE OR DELETE ON transitions
    FOR EACH ROW EXECUTE FUNCTION maestro_append_only();
CREATE TRIGGER transitions_no_truncate BEFORE TRUNCATE ON transitions
    FOR EACH STATEMENT EXECUTE FUNCTION maestro_append_only();
CREATE TRIGGER step_results_append_only BEFORE UPDATE OR DELETE ON step_results
    FOR EACH ROW EXECUTE FUNCTION maestro_append_only();
CREATE TRIGGER step_results_no_truncate BEFORE TRUNCATE ON step_results
    FOR EACH STATEMENT EXECUTE FUNCTION maestro_append_only();
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION maestro_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION maestro_append_only();

-- What was submitted is written once: a job's id, record and spec never change.
CREATE FUNCTION maestro_submitted_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.job_id IS DISTINCT FROM OLD.job_id OR NEW.meta IS DISTINCT FROM OLD.meta
       OR NEW.spec IS DISTINCT FROM OLD.spec OR NEW.spec_file IS DISTINCT FROM OLD.spec_file THEN
        RAISE EXCEPTION 'maestro: a job''s record and spec are written once'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER jobs_submitted_once BEFORE UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION maestro_submitted_once();
CREATE TRIGGER jobs_no_delete BEFORE DELETE ON jobs
    FOR EACH ROW EXECUTE FUNCTION maestro_append_only();

REVOKE UPDATE, DELETE, TRUNCATE ON transitions, step_results, audit_log FROM PUBLIC, CURRENT_USER;
REVOKE DELETE, TRUNCATE ON jobs FROM PUBLIC, CURRENT_USER;
