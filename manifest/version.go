package manifest

import (
	"strings"

	debversion "github.com/knqyf263/go-deb-version"
	rpmversion "github.com/knqyf263/go-rpm-version"
)

// CompareVersions orders two versions of one package the way its manager
// does: -1 when a is older, 0 when they are the same version, +1 when a is
// newer. ok is false when the order is not known: a version the manager
// would not accept, or an unknown manager (the result is then a plain string
// comparison, stable but meaningless).
//
// deb: dpkg's order (github.com/knqyf263/go-deb-version); rpm: rpmvercmp on
// epoch, version, release (github.com/knqyf263/go-rpm-version); apk:
// apk-tools' own order, implemented here (CompareAPK).
func CompareVersions(m Manager, a, b string) (int, bool) {
	if a == b {
		return 0, true
	}
	switch m {
	case Deb:
		va, errA := debversion.NewVersion(a)
		vb, errB := debversion.NewVersion(b)
		if errA != nil || errB != nil {
			return strings.Compare(a, b), false
		}
		return sign(va.Compare(vb)), true
	case RPM:
		return sign(rpmversion.NewVersion(a).Compare(rpmversion.NewVersion(b))), true
	case APK:
		return CompareAPK(a, b), ValidAPK(a) && ValidAPK(b)
	}
	return strings.Compare(a, b), false
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}
