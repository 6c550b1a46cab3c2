package ec2_test

import (
	"context"
	"testing"
	"time"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/ec2"
	"github.com/imagegen/imagegen/clouds/ec2/ec2test"
)

// TestSecondAttempt: a build's task run again (its worker killed, or its
// result not recorded) launches on the same cloud with the same build id and
// a new key. It must get a new instance, not the previous attempt's (found
// by the chaos suite: RunInstances' client token was the build's, and EC2
// answered it with the terminated instance), and the instance must carry
// this attempt's key, also when the previous attempt's key pair was left.
func TestSecondAttempt(t *testing.T) {
	for _, leaveKey := range []bool{false, true} {
		name := "previous attempt cleaned up"
		if leaveKey {
			name = "previous attempt left its key pair"
		}
		t.Run(name, func(t *testing.T) {
			var installed []string
			f := newFake(t, ec2test.Options{BootDelay: 20 * time.Millisecond, TerminateDelay: 10 * time.Millisecond,
				InstallKey: func(k string) { installed = append(installed, k) }})
			c := open(t, f, ec2.Config{})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			const build = "b-twice"

			first, _ := launchReq(t, build)
			inst1 := &clouds.Instance{Build: build}
			if err := c.Launch(ctx, first, inst1); err != nil {
				t.Fatalf("first attempt: %v", err)
			}
			// What the retry's leftover removal does; a key pair may survive it.
			left, err := c.Leftovers(ctx, build)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range left {
				if r.Kind == clouds.KindKeyPair && leaveKey {
					continue
				}
				if err := c.Remove(ctx, r); err != nil {
					t.Fatalf("remove %s %s: %v", r.Kind, r.ID, err)
				}
			}

			second, _ := launchReq(t, build)
			inst2 := &clouds.Instance{Build: build}
			if err := c.Launch(ctx, second, inst2); err != nil {
				t.Fatalf("second attempt: %v", err)
			}
			if inst2.ID == inst1.ID {
				t.Errorf("the second attempt got the first attempt's instance %s", inst1.ID)
			}
			if len(installed) != 2 || installed[1] != second.AuthorizedKey {
				t.Errorf("the second instance has key %q, want the second attempt's %q", installed[len(installed)-1], second.AuthorizedKey)
			}
			terminate(t, c, inst2)
			assertClean(t, f, build)
		})
	}
}
