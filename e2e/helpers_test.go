package e2e

import (
	"context"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3" // read-only access to the read model
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/internal/vaulttest"
)

// lcOpenReadOnly opens a SQLite read model file read-only (no migration, no
// writes), as an operator inspecting it would.
func lcOpenReadOnly(tb testing.TB, path string) *sql.DB {
	tb.Helper()
	q := url.Values{}
	q.Set("mode", "ro")
	q.Set("_busy_timeout", "10000")
	db, err := sql.Open("sqlite3", "file:"+path+"?"+q.Encode())
	if err != nil {
		tb.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	return db
}

// lcDump returns a canonical text dump of the read model at path:
// every row of servers and credentials ordered by id with every column, and
// projector_state. Two read models with the same dump hold the same content.
func lcDump(tb testing.TB, path string) string {
	tb.Helper()
	db := lcOpenReadOnly(tb, path)
	defer db.Close()
	var b strings.Builder
	for _, q := range []string{
		"SELECT * FROM servers ORDER BY id",
		"SELECT * FROM credentials ORDER BY id",
		"SELECT * FROM projector_state ORDER BY id",
	} {
		fmt.Fprintf(&b, "## %s\n", q)
		rows, err := db.Query(q)
		if err != nil {
			tb.Fatalf("%s: %v", q, err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				tb.Fatal(err)
			}
			for i, v := range vals {
				switch v := v.(type) {
				case nil:
					fmt.Fprintf(&b, "%s=NULL", cols[i])
				case []byte:
					fmt.Fprintf(&b, "%s=x'%s'", cols[i], hex.EncodeToString(v))
				default:
					fmt.Fprintf(&b, "%s=%v", cols[i], v)
				}
				b.WriteByte('|')
			}
			b.WriteByte('\n')
		}
		if err := rows.Err(); err != nil {
			tb.Fatal(err)
		}
		rows.Close()
	}
	return b.String()
}

// lcAppliedSeq is the projector's last applied sequence in the read model at
// path (0 when the file is missing or not yet migrated).
func lcAppliedSeq(tb testing.TB, path string) uint64 {
	tb.Helper()
	db := lcOpenReadOnly(tb, path)
	defer db.Close()
	var seq uint64
	if err := db.QueryRow("SELECT last_seq FROM projector_state WHERE id = 1").Scan(&seq); err != nil {
		return 0
	}
	return seq
}

// lcJS connects a plain JetStream client to url (closed at cleanup).
func lcJS(tb testing.TB, url string) jetstream.JetStream {
	tb.Helper()
	return vaulttest.MustJetStream(tb, url)
}

// lcState is the state of stream.
func lcState(tb testing.TB, url, stream string) jetstream.StreamState {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := lcJS(tb, url).Stream(ctx, stream)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	return info.State
}

// lcLastSeq is the sequence of the newest message of stream.
func lcLastSeq(tb testing.TB, url, stream string) uint64 { return lcState(tb, url, stream).LastSeq }

// lcMsgCount is the number of messages stream holds.
func lcMsgCount(tb testing.TB, url, stream string) uint64 { return lcState(tb, url, stream).Msgs }

// lcRecords reads, in stream order, every event of env's stream on
// subject filter with an ordered consumer, decoded, with its sequence.
func lcRecords(tb testing.TB, env *vaulttest.Env, filter string) []events.Record {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := lcJS(tb, env.NATSURL())
	want := lcCount(tb, env, filter)
	if want == 0 {
		return nil
	}
	cons, err := js.OrderedConsumer(ctx, env.Stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		tb.Fatal(err)
	}
	out := make([]events.Record, 0, want)
	for len(out) < want {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			tb.Fatalf("reading %s after %d of %d events: %v", filter, len(out), want, err)
		}
		md, err := m.Metadata()
		if err != nil {
			tb.Fatal(err)
		}
		r, err := events.Unmarshal(m.Data())
		if err != nil {
			tb.Fatalf("seq %d: %v", md.Sequence.Stream, err)
		}
		r.Sequence = md.Sequence.Stream
		out = append(out, r)
	}
	return out
}

// lcCount is how many events env's stream holds on subject filter.
func lcCount(tb testing.TB, env *vaulttest.Env, filter string) int {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := lcJS(tb, env.NATSURL()).Stream(ctx, env.Stream)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for _, c := range info.State.Subjects {
		n += int(c)
	}
	return n
}

// lcWaitCaughtUp waits until the read model at path has applied the whole stream.
func lcWaitCaughtUp(tb testing.TB, env *vaulttest.Env, path string) {
	tb.Helper()
	last := lcLastSeq(tb, env.NATSURL(), env.Stream)
	vaulttest.Eventually(tb, 30*time.Second, func() bool { return lcAppliedSeq(tb, path) >= last })
}

// lcErrType is the error type of an error answer ("" when there is none).
func lcErrType(tb testing.TB, r vaulttest.Response) string {
	tb.Helper()
	m := r.JSON(tb)
	e, _ := m["error"].(map[string]any)
	s, _ := e["type"].(string)
	return s
}
