-- NIP-50: the trigger function of events_search_doc (cluster/store/search.py), which exists only
-- while search is enabled, with the text search configuration as its argument: BEFORE INSERT, so
-- every write path (relay_save_events, the plain-event insert, import) stores the document
-- (relay_search_document, 026) in the same INSERT.
CREATE OR REPLACE FUNCTION relay_search_doc() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.search_doc := relay_search_document(TG_ARGV[0]::regconfig, NEW.raw);
    RETURN NEW;
END
$$;
