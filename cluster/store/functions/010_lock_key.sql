-- Lock keys: writers of the same id or address are serialised, so replace/delete decisions
-- are made on committed data even when many workers race (READ COMMITTED, fresh snapshot per
-- statement after the lock is granted).
CREATE OR REPLACE FUNCTION relay_lock_key(k text) RETURNS bigint
    LANGUAGE sql IMMUTABLE AS $$ SELECT hashtextextended(k, 0) $$;
