#!/bin/sh
# The test guest: a Debian 12 system dressed as a CernVM, as one BIOS-bootable qcow2 disk.
#   build-image.sh OUT.qcow2 WORKDIR
# Built without loop devices or mounts (CI containers may have neither): mmdebstrap into a
# directory, that directory as an ext4 partition (mke2fs -d), kernel and initrd on a FAT boot
# partition with SYSLINUX installed through mtools. Its hash names the cache directory, so any
# change here rebuilds the image.
set -eu
out=$1
work=$2
root=$work/root
rm -rf "$work" && mkdir -p "$work"

# The guest is what a CernVM offers vmlfs: sshd, python3 (the SSH agent), the QEMU guest agent
# (freeze/thaw), cloud-init reading a ConfigDrive (contextualization), DHCP on its NIC.
mmdebstrap --variant=minbase --mode=root --format=directory \
  --include=systemd-sysv,udev,kmod,dbus,iproute2,procps,linux-image-amd64,initramfs-tools,openssh-server,python3,qemu-guest-agent,cloud-init,ifupdown,isc-dhcp-client,e2fsprogs,tar,zstd \
  --customize-hook='chroot "$1" ssh-keygen -A' \
  --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
  bookworm "$root" http://deb.debian.org/debian

# Only ConfigDrive (a CernVM's datasource) and no network probing for others: boot stays short.
cat > "$root/etc/cloud/cloud.cfg.d/90-vmlfs-test.cfg" <<'CFG'
datasource_list: [ConfigDrive, None]
locale: C.UTF-8
CFG
# What the release probe reads on a CernVM (vmlfs/release/detect.py).
mkdir -p "$root/mnt/.rw/aux"
echo 2021.05-1.cernvm.x86_64 > "$root/mnt/.rw/aux/ucernvm-version"
echo 'root=/dev/vda2 rw console=ttyS0' > "$root/etc/kernel-cmdline"
cat > "$root/etc/fstab" <<'FSTAB'
/dev/vda2 / ext4 errors=remount-ro 0 1
FSTAB
echo cernvm-test > "$root/etc/hostname"
# Boot time under TCG: no timers that wake apt or scrub file systems, no wait for all NICs.
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer man-db.timer; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
# A small initrd with just what a virtio disk needs.
printf 'virtio_pci\nvirtio_blk\nvirtio_net\nvirtio_console\next4\nsr_mod\nisofs\n' > "$root/etc/initramfs-tools/modules"
sed -i 's/^MODULES=.*/MODULES=list/' "$root/etc/initramfs-tools/initramfs.conf"
kver=$(ls "$root/lib/modules")
chroot "$root" update-initramfs -u -k "$kver" >/dev/null
# Drivers a virtio guest never loads: a smaller image and a faster build.
for d in drivers/gpu drivers/media drivers/net/wireless drivers/infiniband drivers/staging sound drivers/net/ethernet; do
  rm -rf "$root/lib/modules/$kver/kernel/$d"
done
chroot "$root" depmod "$kver"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc "$root"/usr/share/man

# Partitions: 1 = FAT boot (64 MiB, from 1 MiB), 2 = ext4 root (1536 MiB).
boot_mib=64 root_mib=1536
mkfs.vfat -C -n BOOT "$work/boot.img" $((boot_mib * 1024)) >/dev/null
cp "$root/boot/vmlinuz-$kver" "$work/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$work/initrd"
cat > "$work/syslinux.cfg" <<CFG
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  APPEND initrd=/initrd root=/dev/vda2 rw console=ttyS0 net.ifnames=0
CFG
mcopy -i "$work/boot.img" "$work/vmlinuz" "$work/initrd" "$work/syslinux.cfg" ::/
syslinux --install "$work/boot.img"
mke2fs -q -t ext4 -L root -d "$root" "$work/root.img" ${root_mib}M
truncate -s $(((1 + boot_mib + root_mib) * 1024 * 1024)) "$work/disk.raw"
sfdisk -q "$work/disk.raw" <<PART
label: dos
start=1MiB, size=${boot_mib}MiB, type=c, bootable
size=${root_mib}MiB, type=83
PART
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$work/disk.raw" bs=440 count=1 conv=notrunc status=none
dd if="$work/boot.img" of="$work/disk.raw" bs=1M seek=1 conv=notrunc status=none
dd if="$work/root.img" of="$work/disk.raw" bs=1M seek=$((1 + boot_mib)) conv=notrunc status=none
qemu-img convert -q -c -O qcow2 "$work/disk.raw" "$out.tmp"
mv "$out.tmp" "$out"
rm -rf "$work"
