// Package builds is imagegen's core: the build domain — a Build per generator
// and commit, a CloudRecord per cloud, their states — and what is done with
// it, each by a small type of its own: the Planner turns a push into builds,
// the Runner runs one cloud's part, Reruns starts a build again, the Reporter
// brings commit statuses and check runs up to date, the Sweeper cleans up
// after workers that died. Deliveries hands a webhook delivery to the Planner
// or to Reruns.
//
// It must not know how it is reached or where it keeps things: GitHub, the
// queue and Redis are the interfaces declared here (GitHub and RepoClient,
// Enqueuer and Tasks, Store), implemented by the packages github, queue and
// store. It imports no asynq, go-github or go-redis, and nothing of server.
package builds
