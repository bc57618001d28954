-- Snapshots carry the lease epoch of the aggregator that saved them: a deposed owner (an
-- older epoch) can no longer replace the snapshot of the owner that took its partition over.
ALTER TABLE aggregator_snapshots ADD COLUMN epoch bigint NOT NULL DEFAULT 0;
