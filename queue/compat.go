package queue

import (
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/store"
)

// Transitional names while the queue is split up: the records moved to
// package store, the domain types to package builds.
type (
	Build        = builds.Build
	CloudRecord  = builds.CloudRecord
	LineageEntry = builds.LineageEntry
	LogEntry     = builds.LogEntry
	ListOptions  = builds.ListOptions
	Store        = store.Store
	LogSink      = store.LogSink
)

var (
	ErrNotFound = builds.ErrNotFound
	NewID       = builds.NewID
	NewStore    = store.New
)

const (
	prefix      = "imagegen:"
	buildsIndex = prefix + "builds"
)
