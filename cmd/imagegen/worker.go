package main

import (
	"context"
	"errors"
)

func runWorker(_ context.Context, _ *env, _ []string) error {
	return errors.New("worker: not built yet")
}
