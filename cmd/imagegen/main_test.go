package main

import (
	"testing"

	"github.com/imagegen/imagegen/internal/servicetest"
)

// TestMain stops the real Keystone and Glance some tests start (once for the binary).
func TestMain(m *testing.M) { servicetest.OpenStackMain(m) }
