-- Credentials stored without their API object (by a build older than 0006
-- writing to a file this build migrated): a writer renders them when it
-- opens (renderMissingDocs), and this index finds them without a scan. It is
-- empty otherwise, so it costs nothing to keep.
CREATE INDEX credentials_without_doc ON credentials (id) WHERE doc IS NULL;
