package projections

import (
	"context"
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

// SetInstanceID gives a rebuild's generation the live file's instance id
// (generation.go), so the API and the projector moving to it keep naming
// their applied notifications alike.
func (d *DB) SetInstanceID(ctx context.Context, id string) error {
	if _, err := d.sql.ExecContext(ctx, "UPDATE read_model_instance SET instance_id = ? WHERE id = 1", id); err != nil {
		return err
	}
	d.instance = id
	return nil
}
