-- Maestro's state in PostgreSQL, version 3: owners take turns in the servers' shared queue.
--
-- One server's queue lets no owner starve the others (`maestro-server/src/fair.rs`): each
-- owner with jobs waiting gets a turn before any owner gets a second one. With several servers
-- on one database the queue is `server_queue`, and a claim that takes the oldest job would let
-- an owner who queued a thousand jobs hold every server's slots. So each claim that starts a
-- job stamps its owner with the next turn number, and a claim takes the job of the owner whose
-- last turn is oldest (an owner never served comes first), its oldest job first: the same rule,
-- kept by the database for every server at once.
CREATE SEQUENCE owner_turn_numbers;
CREATE TABLE owner_turns (
    owner_key text PRIMARY KEY,               -- jobs.owner_key ('' for a job without an owner)
    turn      bigint NOT NULL                 -- owner_turn_numbers at its last claim
);
