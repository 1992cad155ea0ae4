-- Reads (issue 11): each credential's public object as the API sends it
-- (apijson.AppendCredential), written with the row by the projector; a get
-- or a list page copies it. The migration renders it for the rows already
-- there (renderCredentialDocs, run in the same transaction).
ALTER TABLE credentials ADD COLUMN doc BLOB;
