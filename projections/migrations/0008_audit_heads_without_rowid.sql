-- audit_heads is written once per applied message (the chain head of its
-- subject). As a rowid table with a TEXT primary key every write went to
-- the table and to its automatic index; keyed by the subject itself
-- (WITHOUT ROWID) it is one b-tree, the subject stored once.
CREATE TABLE audit_heads_by_subject (
    subject TEXT PRIMARY KEY,
    head    TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO audit_heads_by_subject (subject, head) SELECT subject, head FROM audit_heads;
DROP TABLE audit_heads;
ALTER TABLE audit_heads_by_subject RENAME TO audit_heads;
