-- NIP-50: the stored document of an event of a searchable kind (migration 011, cluster/store/
-- search.py), one definition for both writers: the trigger function relay_search_doc
-- (027_search_doc.sql) and the backfill of stored events. An event without searchable text (a
-- content holding U+0000: relay_search_text) gets an empty document, not NULL: NULL means "not
-- computed yet".
CREATE OR REPLACE FUNCTION relay_search_document(p_config regconfig, p_raw text)
RETURNS tsvector LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN coalesce(to_tsvector(p_config, relay_search_text(p_raw)), ''::tsvector);
