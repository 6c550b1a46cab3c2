package main

import (
	"context"
	"errors"
)

func runServe(_ context.Context, _ *env, _ []string) error {
	return errors.New("serve: not built yet")
}
