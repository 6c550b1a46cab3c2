package main

import (
	"context"
	"errors"
)

func runRerun(_ context.Context, _ *env, _ []string) error {
	return errors.New("rerun: not built yet")
}
