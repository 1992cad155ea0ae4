package main

import "context"

func (c *cli) erase(ctx context.Context, args []string) error      { return usageError{"not yet"} }
func (c *cli) expiryRun(ctx context.Context, args []string) error  { return usageError{"not yet"} }
func (c *cli) rebuild(ctx context.Context, args []string) error    { return usageError{"not yet"} }
func (c *cli) servers(ctx context.Context, args []string) error    { return usageError{"not yet"} }
func (c *cli) credentials(ctx context.Context, args []string) error {
	return usageError{"not yet"}
}
func (c *cli) test(ctx context.Context, args []string) error { return usageError{"not yet"} }
