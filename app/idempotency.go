package app

import "context"

type idemKey struct{}

// WithIdempotencyMsgID makes the appends of ctx use msgID as their
// Nats-Msg-Id, so a retried request is stored once by the stream itself.
func WithIdempotencyMsgID(ctx context.Context, msgID string) context.Context {
	return context.WithValue(ctx, idemKey{}, msgID)
}

func idempotencyMsgID(ctx context.Context) string {
	s, _ := ctx.Value(idemKey{}).(string)
	return s
}
