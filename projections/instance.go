package projections

import (
	"context"
	"database/sql"
)

// InstanceID is the read model file's random id (read_model_instance): the
// projector writing the file and every API reading it name their applied
// notifications with it (eventstore.AppliedSubject). A rebuild keeps it.
func (d *DB) InstanceID() string { return d.instance }

// loadInstanceID reads the file's instance id.
func loadInstanceID(ctx context.Context, q querier) (string, error) {
	var id string
	err := q.QueryRowContext(ctx, "SELECT instance_id FROM read_model_instance WHERE id = 1").Scan(&id)
	return id, err
}

// setInstanceID gives the file the instance id id (used by ReplaceContents,
// so a swapped-in rebuild keeps the live file's id).
func setInstanceID(ctx context.Context, db *sql.DB, id string) error {
	_, err := db.ExecContext(ctx, "UPDATE read_model_instance SET instance_id = ? WHERE id = 1", id)
	return err
}
