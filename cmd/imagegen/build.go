package main

import (
	"context"
	"errors"
)

func runBuild(_ context.Context, _ *env, _ []string) error {
	return errors.New("build: not built yet")
}
