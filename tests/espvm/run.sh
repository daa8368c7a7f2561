#!/usr/bin/env bash
# Runs internal/dataplane's XFRM tests on a kernel that has ESP and AES-GCM
# (Debian bookworm's, in a QEMU VM with no network), for machines whose own
# kernel lacks them (CONFIG_INET_ESP / CONFIG_CRYPTO_GCM unset, no modules),
# where those tests skip. Needs: apt (qemu-system-x86, the kernel package),
# busybox-static, depmod, Go. Usage: tests/espvm/run.sh [go test -run regexp]
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=${1:-TestXfrm}
W=${ESPVM_DIR:-/tmp/vxovl-espvm}
mkdir -p "$W"
command -v qemu-system-x86_64 >/dev/null || apt-get install -y -q --no-install-recommends qemu-system-x86
KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
K=${KPKG#linux-image-}
if [ ! -d "$W/k/lib/modules/$K" ]; then
	(cd "$W" && apt-get download "$KPKG" && rm -rf k && mkdir k && dpkg-deb -x "$KPKG"_*.deb k)
fi
R=$W/root
rm -rf "$R" && mkdir -p "$R/bin" "$R/lib/modules/$K/kernel/drivers/net" "$R/lib/modules/$K/kernel/arch/x86"
cp /bin/busybox "$R/bin/"
M=$W/k/lib/modules/$K
cp -r "$M/kernel/net" "$M/kernel/crypto" "$M/kernel/lib" "$R/lib/modules/$K/kernel/"
cp -r "$M/kernel/arch/x86/crypto" "$R/lib/modules/$K/kernel/arch/x86/"
cp -r "$M/kernel/drivers/net/vxlan" "$M/kernel/drivers/net/veth.ko" "$R/lib/modules/$K/kernel/drivers/net/"
cp "$M"/modules.order "$M"/modules.builtin* "$R/lib/modules/$K/"
depmod -b "$R" "$K"
PATH=/usr/local/go/bin:$PATH CGO_ENABLED=0 go test -c -o "$R/dp.test" ./internal/dataplane
cat >"$R/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /sbin /proc /sys /tmp /dev /run
ln -sf /bin/busybox /sbin/modprobe
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp; mount -t tmpfs run /run
for m in xfrm_user esp4 gcm ghash_generic aesni_intel seqiv vxlan veth; do modprobe \$m || echo "modprobe \$m failed"; done
echo "== kernel \$(uname -r)"
cd /tmp && VXOVL_REQUIRE_ROOT=1 /dp.test -test.run '$RUN' -test.v -test.count=1 2>&1
echo "ESPVM_EXIT=\$?"
grep -A2 "name *: rfc4106(gcm(aes))" /proc/crypto | grep driver || true
poweroff -f
INIT
chmod +x "$R/init"
python3 tests/espvm/mkinitrd.py "$R"
# TCG: nested KVM on the development machine hung at boot; the tests are small.
timeout 600 qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp 1 -nographic -no-reboot -nic none \
	-kernel "$W/k/boot/vmlinuz-$K" -initrd "$W/initrd.gz" \
	-append "console=ttyS0 panic=-1 rdinit=/init loglevel=4" | tee "$W/vm.log" | grep -aE '^(== |=== RUN|--- |    |PASS|FAIL|ESPVM_EXIT|driver)'
grep -aq '^ESPVM_EXIT=0' "$W/vm.log"
