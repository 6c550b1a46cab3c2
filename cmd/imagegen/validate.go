package main

import (
	"context"
	"errors"
)

func runValidate(_ context.Context, _ *env, _ []string) error {
	return errors.New("validate: not built yet")
}
