-- NIP-50: the stored document of an event of a searchable kind (migration 011, cluster/store/
-- search.py). Called by the trigger events_search_doc, which exists only while search is
-- enabled, with the text search configuration as its argument: BEFORE INSERT, so every write
-- path (relay_save_events, the plain-event insert, import) stores the document in the same
-- INSERT. An event without searchable text (a content holding U+0000: relay_search_text) gets
-- an empty document, not NULL: NULL means "not computed yet" to the backfill.
CREATE OR REPLACE FUNCTION relay_search_doc() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.search_doc := coalesce(
        to_tsvector(TG_ARGV[0]::regconfig, relay_search_text(NEW.raw)), ''::tsvector);
    RETURN NEW;
END
$$;
