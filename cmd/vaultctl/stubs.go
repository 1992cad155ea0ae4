package main

import "context"

func (c *cli) expiryRun(ctx context.Context, args []string) error { return usageError{"not yet"} }
