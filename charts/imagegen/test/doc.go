// Package charttest renders the imagegen Helm chart with helm and decodes every
// manifest strictly into the Kubernetes API types, then checks it hangs together.
package charttest
