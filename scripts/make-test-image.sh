#!/bin/sh
# make-test-image.sh OUTDIR — builds imagegen's tiny QEMU test base image from
# Debian packages only (linux-image-cloud-amd64, busybox-static, openssh-server,
# e2fsprogs, cpio, qemu-utils); no root mounts, no network.
#
# OUTDIR gets:
#   tiny.qcow2      ext4 root disk: static busybox, OpenSSH's sshd, a busybox init whose
#                   rc reads the NoCloud seed (label cidata) for the SSH host key
#                   and root's authorized keys
#   tiny.vmlinuz    the Debian cloud kernel
#   tiny.initrd     a small initramfs: loads the virtio and isofs modules, mounts /dev/vda
#   tiny.boot.json  the boot sidecar that tells imagegen's qemu cloud to boot them directly
# It boots to SSH in seconds under TCG. See docs/qemu.md.
set -eu

out=${1:?usage: make-test-image.sh OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
files=$here/testimage

PATH=$PATH:/usr/sbin:/sbin
need() {
	for b in "$@"; do
		command -v "$b" >/dev/null 2>&1 || {
			echo "make-test-image: $b not found; install: apt-get install linux-image-cloud-amd64 busybox-static openssh-server e2fsprogs cpio qemu-utils kmod" >&2
			exit 1
		}
	done
}
need mke2fs cpio qemu-img modprobe gzip
[ -x /usr/sbin/sshd ] || { echo "make-test-image: /usr/sbin/sshd not found; install openssh-server" >&2; exit 1; }

busybox=/bin/busybox
[ -x /usr/bin/busybox ] && busybox=/usr/bin/busybox
if ! ldd "$busybox" 2>&1 | grep -q "not a dynamic"; then
	echo "make-test-image: $busybox is not static; install busybox-static" >&2
	exit 1
fi

kernel=$(ls /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$kernel" ] || kernel=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$kernel" ] || { echo "make-test-image: no kernel in /boot; install linux-image-cloud-amd64" >&2; exit 1; }
kver=${kernel#/boot/vmlinuz-}

mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- initramfs: busybox + the modules the cloud kernel builds as modules ---
ird=$tmp/initrd
mkdir -p "$ird/bin" "$ird/proc" "$ird/sys" "$ird/dev" "$ird/newroot" "$ird/lib/modules"
cp "$busybox" "$ird/bin/busybox"
: >"$ird/modules.order"
for m in virtio_pci virtio_blk virtio_net isofs vfat nls_cp437 nls_iso8859_1; do
	modprobe -S "$kver" --show-depends "$m" 2>/dev/null | awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' | while read -r path; do
	name=$(basename "$path")
	case "$name" in
	*.ko.xz) xz -dc "$path" >"$ird/lib/modules/${name%.xz}"; name=${name%.xz} ;;
	*.ko.zst) zstd -qdc "$path" >"$ird/lib/modules/${name%.zst}"; name=${name%.zst} ;;
	*.ko.gz) gzip -dc "$path" >"$ird/lib/modules/${name%.gz}"; name=${name%.gz} ;;
	*) cp "$path" "$ird/lib/modules/$name" ;;
	esac
	echo "$name" >>"$ird/modules.order"
done
grep -q virtio_blk "$ird/modules.order" || grep -q '^CONFIG_VIRTIO_BLK=y' "/boot/config-$kver" 2>/dev/null || {
	echo "make-test-image: virtio_blk module not found for $kver" >&2
	exit 1
}
install -m 0755 "$files/init" "$ird/init"
(cd "$ird" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -9) >"$tmp/tiny.initrd"

# --- root filesystem ---
root=$tmp/root
mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/etc/init.d" "$root/etc/ssh" "$root/run" \
	"$root/proc" "$root/sys" "$root/dev" "$root/run" "$root/tmp" "$root/mnt/seed" "$root/var/log" "$root/root/.ssh" \
	"$root/lib64" "$root/lib/x86_64-linux-gnu"
cp "$busybox" "$root/bin/busybox"
# Applet links, as busybox --install would make them inside the guest.
"$busybox" --list-full | while read -r applet; do
	[ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done
# bash: the pipeline runs scripts with bash -e, as on any Debian or Ubuntu image.
for b in /usr/sbin/sshd /bin/bash; do
	rm -f "$root$b"
	cp "$b" "$root$b"
	ldd "$b" | awk '/=>/ {print $3} /^\t\/lib/ {print $1}' | while read -r lib; do
		[ -n "$lib" ] && [ -e "$lib" ] || continue
		dst=$root$lib
		mkdir -p "$(dirname "$dst")"
		cp -L "$lib" "$dst"
	done
done
install -m 0644 "$files/inittab" "$root/etc/inittab"
install -m 0755 "$files/rcS" "$root/etc/init.d/rcS"
install -m 0644 "$files/sshd_config" "$root/etc/ssh/sshd_config"
# sshd's privilege-separation user; its chroot /run/sshd is made at boot.
printf 'root:x:0:0:root:/root:/bin/sh\nsshd:x:100:65534::/run/sshd:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
printf '/bin/sh\n/bin/ash\n' >"$root/etc/shells"
echo tiny >"$root/etc/hostname"
chmod 0700 "$root/root" "$root/root/.ssh"
chmod 1777 "$root/tmp"
chmod 0755 "$root"

mke2fs -q -F -t ext4 -L root -d "$root" -E root_owner=0:0 "$tmp/root.raw" 48M >/dev/null
qemu-img convert -q -f raw -O qcow2 -c "$tmp/root.raw" "$tmp/tiny.qcow2"

cp "$kernel" "$tmp/tiny.vmlinuz"
cat >"$tmp/tiny.boot.json" <<JSON
{
  "kernel": "tiny.vmlinuz",
  "initrd": "tiny.initrd",
  "append": "console=ttyS0 root=/dev/vda rw quiet panic=-1"
}
JSON
for f in tiny.qcow2 tiny.vmlinuz tiny.initrd tiny.boot.json; do
	mv "$tmp/$f" "$out/$f"
done
echo "make-test-image: wrote $out/tiny.qcow2 (kernel $kver)"
