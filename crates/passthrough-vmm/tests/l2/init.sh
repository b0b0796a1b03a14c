#!/bin/busybox sh
# L2 /init for the passthrough-vmm in-guest tests (busybox ash), packed with busybox by
# tests/in_guest.rs. The kernel argument vmmtest= picks the mode: ok (default) reports what
# the guest sees and exits 0; status7 exits 7; nostatus powers off without a status line;
# panic ends init, which panics the kernel (panic=-1 then resets).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mode=ok
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	vmmtest=*) mode="${arg#vmmtest=}" ;;
	esac
done
its=false
for n in /sys/firmware/devicetree/base/intc@*/msi-controller@*; do
	[ -e "$n/msi-controller" ] && its=true
done
itsmsi=false
grep -q ITS-MSI /proc/interrupts 2>/dev/null && itsmsi=true
dmesg | grep -q "ITS@0x" && itsmsi=true
read -r up _ </proc/uptime
printf '@@VMM result {"mode":"%s","cpus":%s,"its_node":%s,"its_probed":%s,"uptime":%s}\n' \
	"$mode" "$(grep -c ^processor /proc/cpuinfo)" "$its" "$itsmsi" "$up"
case "$mode" in
status7) echo "@@VMM status 7" ;;
nostatus) ;;
panic) exit 1 ;;
*) echo "@@VMM status 0" ;;
esac
poweroff -f
