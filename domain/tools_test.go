package domain_test

import (
	"testing"
	"time"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
)

func TestToolsChangedFold(t *testing.T) {
	created := events.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := domain.ApplyServer(domain.Server{}, events.Record{Meta: events.Meta{AggregateID: "mcp_srv_1", OccurredAt: created},
		Event: events.ServerCreated{ServerAttrs: events.ServerAttrs{Name: "n"}}})
	first := events.NewTime(created.Add(time.Minute))
	s = domain.ApplyServer(s, events.Record{Meta: events.Meta{OccurredAt: first},
		Event: events.ServerToolsChanged{Initial: true, Added: []string{"a"}}})
	if s.ToolsChangedAt != nil {
		t.Fatalf("the first inventory set tools_changed_at to %v", s.ToolsChangedAt)
	}
	drift := events.NewTime(created.Add(time.Hour))
	s = domain.ApplyServer(s, events.Record{Meta: events.Meta{OccurredAt: drift},
		Event: events.ServerToolsChanged{Changed: []string{"a"}}})
	if s.ToolsChangedAt == nil || !s.ToolsChangedAt.Equal(drift.Time) {
		t.Fatalf("tools_changed_at = %v, want %v", s.ToolsChangedAt, drift)
	}
	if !s.UpdatedAt.Equal(created.Time) {
		t.Fatalf("a tools change moved updated_at to %v", s.UpdatedAt)
	}
}
