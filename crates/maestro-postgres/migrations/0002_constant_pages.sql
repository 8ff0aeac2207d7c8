-- Maestro's state in PostgreSQL, version 2: a page of the listing (`mc status`, `GET /v1/jobs`)
-- and the count of the jobs older than a page cost the same at 1 job and at 100,000, with or
-- without a filter.

-- The normalized owner and environment (`maestro_core::identity::normalize`: NFKC, lower case,
-- trimmed), which the store writes with each new job, so that a filter is an index lookup.
-- Adding the columns locks `jobs` until this migration commits: the counts set below see every
-- row, and no job is inserted or pruned meanwhile.
ALTER TABLE jobs ADD COLUMN owner_key text, ADD COLUMN environment_key text;

-- Rows written before version 2 get the SQL approximation: lower case and trimmed spaces, no
-- NFKC (and `lower` follows the database's locale). A filter by owner or environment may then
-- miss an old job whose name has exotic Unicode (compatibility forms, non-ASCII letters under
-- the C locale, trailing non-space white space); jobs written since are exact.
UPDATE jobs SET owner_key = lower(btrim(owner)), environment_key = lower(btrim(environment))
    WHERE owner IS NOT NULL OR environment IS NOT NULL;

-- The number of live (not pruned) jobs, kept by the trigger below. It is spread over 16 slots,
-- the job id's hash choosing the slot, because the trigger's update locks its row until the
-- transaction commits: with one row every submission of every server would wait on the one
-- before it; with 16, two submissions at once meet only when their ids fall in the same slot.
-- The count is the sum of the slots.
CREATE TABLE job_counts (
    slot smallint PRIMARY KEY,                -- hashtext(job_id::text) & 15
    jobs bigint NOT NULL
);
INSERT INTO job_counts (slot, jobs)
    SELECT slots.slot, count(j.job_id)
    FROM generate_series(0, 15) AS slots(slot)
    LEFT JOIN jobs j ON j.pruned_at IS NULL AND (hashtext(j.job_id::text) & 15) = slots.slot
    GROUP BY slots.slot;

CREATE FUNCTION maestro_count_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    change bigint := 0;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.pruned_at IS NULL THEN
            change := 1;
        END IF;
    ELSIF OLD.pruned_at IS NULL AND NEW.pruned_at IS NOT NULL THEN
        change := -1;
    ELSIF OLD.pruned_at IS NOT NULL AND NEW.pruned_at IS NULL THEN
        change := 1;                          -- Maestro never does it; counted right anyway
    END IF;
    IF change <> 0 THEN
        UPDATE job_counts SET jobs = jobs + change
            WHERE slot = (hashtext(NEW.job_id::text) & 15);
    END IF;
    RETURN NULL;
END
$$;
-- Jobs are never deleted (`jobs_no_delete`), so inserts and prunes are all there is to count.
CREATE TRIGGER jobs_count AFTER INSERT OR UPDATE OF pruned_at ON jobs
    FOR EACH ROW EXECUTE FUNCTION maestro_count_jobs();
REVOKE DELETE, TRUNCATE ON job_counts FROM PUBLIC, CURRENT_USER;

-- A page walks one of these newest first and stops after the page: live jobs only, by state
-- (a job without a transition yet is SUBMITTED), by owner, by environment, or all of them.
CREATE INDEX jobs_live_newest_first ON jobs (job_id DESC) WHERE pruned_at IS NULL;
CREATE INDEX jobs_live_state_newest_first ON jobs ((coalesce(state, 'SUBMITTED')), job_id DESC)
    WHERE pruned_at IS NULL;
CREATE INDEX jobs_live_owner_newest_first ON jobs (owner_key, job_id DESC)
    WHERE pruned_at IS NULL;
CREATE INDEX jobs_live_environment_newest_first ON jobs (environment_key, job_id DESC)
    WHERE pruned_at IS NULL;
