package qemu

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/imagegen/imagegen/clouds"
)

// SeedLabel is the volume label cloud-init's NoCloud datasource looks for.
const SeedLabel = "cidata"

// userData is the #cloud-config the seed carries. Only keys stock cloud-init
// understands are used, so Ubuntu and Debian cloud images work unchanged.
type userData struct {
	SSHPwauth         bool              `yaml:"ssh_pwauth"`
	DisableRoot       bool              `yaml:"disable_root"`
	SSHDeleteKeys     bool              `yaml:"ssh_deletekeys"`
	SSHKeys           map[string]string `yaml:"ssh_keys,omitempty"`
	SSHAuthorizedKeys []string          `yaml:"ssh_authorized_keys"`
	Users             []any             `yaml:"users,omitempty"`
}

type seedUser struct {
	Name              string   `yaml:"name"`
	Sudo              string   `yaml:"sudo"`
	Shell             string   `yaml:"shell"`
	LockPasswd        bool     `yaml:"lock_passwd"`
	SSHAuthorizedKeys []string `yaml:"ssh_authorized_keys"`
}

// hostKeyPrefix maps a public key's type to cloud-init's ssh_keys key prefix.
var hostKeyPrefix = map[string]string{
	"ssh-ed25519":         "ed25519",
	"ecdsa-sha2-nistp256": "ecdsa",
	"ecdsa-sha2-nistp384": "ecdsa",
	"ecdsa-sha2-nistp521": "ecdsa",
	"ssh-rsa":             "rsa",
}

// seedFiles renders the NoCloud user-data and meta-data for one launch.
// The top-level ssh_authorized_keys go to the image's default user (ubuntu,
// debian); disable_root: false lets root use them too; any other user is
// created with the key and passwordless sudo, next to the default user.
func seedFiles(req clouds.LaunchRequest, instanceID string) (userDataText, metaData []byte, err error) {
	ud := userData{
		DisableRoot:       false,
		SSHDeleteKeys:     true,
		SSHAuthorizedKeys: []string{strings.TrimSpace(req.AuthorizedKey)},
	}
	if !req.HostKey.PrivatePEM.IsZero() {
		pub := strings.TrimSpace(req.HostKey.Public)
		typ, _, _ := strings.Cut(pub, " ")
		prefix, ok := hostKeyPrefix[typ]
		if !ok {
			return nil, nil, clouds.Errorf(clouds.KindInvalid, "build seed", "host key type %q cannot be injected through cloud-init", typ)
		}
		ud.SSHKeys = map[string]string{
			prefix + "_private": req.HostKey.PrivatePEM.Reveal(),
			prefix + "_public":  pub,
		}
	}
	if req.User != "" && req.User != "root" && !defaultUsers[req.User] {
		ud.Users = []any{"default", seedUser{
			Name: req.User, Sudo: "ALL=(ALL) NOPASSWD:ALL", Shell: "/bin/bash", LockPasswd: true,
			SSHAuthorizedKeys: ud.SSHAuthorizedKeys,
		}}
	}
	body, err := yaml.Marshal(ud)
	if err != nil {
		return nil, nil, fmt.Errorf("render user-data: %w", err)
	}
	userDataText = append([]byte("#cloud-config\n"), body...)
	md, err := yaml.Marshal(map[string]string{"instance-id": instanceID, "local-hostname": hostname(instanceID)})
	if err != nil {
		return nil, nil, fmt.Errorf("render meta-data: %w", err)
	}
	return userDataText, md, nil
}

// defaultUsers are the default users of common cloud images: cloud-init
// creates them and gives them the top-level keys already.
var defaultUsers = map[string]bool{"ubuntu": true, "debian": true, "cloud-user": true, "ec2-user": true, "fedora": true, "admin": true}

func hostname(id string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(id) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	h := strings.Trim(b.String(), "-")
	if len(h) > 63 {
		h = strings.Trim(h[:63], "-")
	}
	if h == "" {
		h = "imagegen"
	}
	return h
}

// ISO 9660 constants: the smallest image that Linux's isofs and blkid accept
// as a volume labelled cidata with a root directory of plain files.
const (
	sectorSize  = 2048
	pvdSector   = 16
	termSector  = 17
	lPathSector = 18
	mPathSector = 19
	rootSector  = 20
	dataSector  = 21
)

// isoFile is one file of the seed image.
type isoFile struct {
	Name string
	Data []byte
}

// buildISO writes a single-directory ISO 9660 image. File names are stored
// upper-case with ";1", the form Linux maps back to "user-data" (isofs map=normal,
// which cloud-init's mount uses). No Rock Ridge or Joliet: the seed needs neither.
func buildISO(label string, files []isoFile, now time.Time) ([]byte, error) {
	files = append([]isoFile(nil), files...)
	sort.Slice(files, func(i, j int) bool { return isoName(files[i].Name) < isoName(files[j].Name) })

	type placed struct {
		id     string
		sector uint32
		size   uint32
	}
	next := uint32(dataSector)
	var ps []placed
	for _, f := range files {
		id := isoName(f.Name)
		if len(id) > 30 {
			return nil, fmt.Errorf("iso9660: file name %q too long", f.Name)
		}
		ps = append(ps, placed{id: id, sector: next, size: uint32(len(f.Data))})
		next += (uint32(len(f.Data)) + sectorSize - 1) / sectorSize
	}
	total := next
	img := make([]byte, int(total)*sectorSize)

	// Root directory extent.
	root := img[rootSector*sectorSize : (rootSector+1)*sectorSize]
	off := 0
	off += putDirRecord(root[off:], "\x00", rootSector, sectorSize, true, now)
	off += putDirRecord(root[off:], "\x01", rootSector, sectorSize, true, now)
	for _, p := range ps {
		if off+33+len(p.id)+1 > sectorSize {
			return nil, fmt.Errorf("iso9660: too many files for one directory sector")
		}
		off += putDirRecord(root[off:], p.id, p.sector, p.size, false, now)
	}
	for i, f := range files {
		copy(img[int(ps[i].sector)*sectorSize:], f.Data)
	}

	// Path tables: one entry, the root.
	pt := func(b []byte, order binary.ByteOrder) {
		b[0] = 1 // directory identifier length
		order.PutUint32(b[2:], rootSector)
		order.PutUint16(b[6:], 1) // parent directory number
	}
	pt(img[lPathSector*sectorSize:], binary.LittleEndian)
	pt(img[mPathSector*sectorSize:], binary.BigEndian)

	// Primary volume descriptor.
	pvd := img[pvdSector*sectorSize : (pvdSector+1)*sectorSize]
	pvd[0] = 1
	copy(pvd[1:], "CD001")
	pvd[6] = 1
	padCopy(pvd[8:40], "LINUX")
	padCopy(pvd[40:72], label)
	both32(pvd[80:], total)
	both16(pvd[120:], 1)
	both16(pvd[124:], 1)
	both16(pvd[128:], sectorSize)
	both32(pvd[132:], 10)
	binary.LittleEndian.PutUint32(pvd[140:], lPathSector)
	binary.BigEndian.PutUint32(pvd[148:], mPathSector)
	putDirRecord(pvd[156:190], "\x00", rootSector, sectorSize, true, now)
	for _, r := range [][2]int{{190, 318}, {318, 446}, {446, 574}, {574, 702}, {702, 739}, {739, 776}, {776, 813}} {
		padCopy(pvd[r[0]:r[1]], "")
	}
	padCopy(pvd[574:702], "IMAGEGEN")
	stamp := []byte(now.UTC().Format("20060102150405") + "00\x00")
	copy(pvd[813:], stamp)
	copy(pvd[830:], stamp)
	copy(pvd[847:], "0000000000000000\x00")
	copy(pvd[864:], "0000000000000000\x00")
	pvd[881] = 1

	// Volume descriptor set terminator.
	term := img[termSector*sectorSize:]
	term[0] = 255
	copy(term[1:], "CD001")
	term[6] = 1
	return img, nil
}

func isoName(name string) string { return strings.ToUpper(name) + ";1" }

// putDirRecord writes one directory record and returns its (even) length.
func putDirRecord(b []byte, id string, sector, size uint32, dir bool, t time.Time) int {
	n := 33 + len(id)
	if n%2 == 1 {
		n++
	}
	b[0] = byte(n)
	both32(b[2:], sector)
	both32(b[10:], size)
	u := t.UTC()
	copy(b[18:25], []byte{byte(u.Year() - 1900), byte(u.Month()), byte(u.Day()), byte(u.Hour()), byte(u.Minute()), byte(u.Second()), 0})
	if dir {
		b[25] = 2
	}
	both16(b[28:], 1)
	b[32] = byte(len(id))
	copy(b[33:], id)
	return n
}

func both16(b []byte, v uint16) {
	binary.LittleEndian.PutUint16(b, v)
	binary.BigEndian.PutUint16(b[2:], v)
}

func both32(b []byte, v uint32) {
	binary.LittleEndian.PutUint32(b, v)
	binary.BigEndian.PutUint32(b[4:], v)
}

func padCopy(dst []byte, s string) {
	copy(dst, bytes.Repeat([]byte{' '}, len(dst)))
	copy(dst, s)
}
