#!/bin/busybox sh
# L2 /init of the end-to-end passthrough test (busybox ash). The guest has one PCI function,
# an igb NIC passed through by passthrough-vmm. It checks, from inside the guest, what the
# test asserts: the igb driver bound and enabled MSI-X, its interrupts fire (counts rise),
# IPv6 link-local pings to L1 (kernel argument e2e_peer=) get replies, and the device tree
# has no reserved-memory node. It reports one "@@VMM result" JSON line and its status
# (0 when everything held), stays up e2e_linger= seconds so L1 can ping it, and powers off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
peer=
linger=6
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	e2e_peer=*) peer="${arg#e2e_peer=}" ;;
	e2e_linger=*) linger="${arg#e2e_linger=}" ;;
	esac
done
status=0
errors=
fail() {
	status=1
	errors="$errors${errors:+; }$1"
}

# The passed-through NIC, its driver and its MSI-X vectors.
dev=
for d in /sys/bus/pci/devices/*; do
	if [ "$(cat "$d/vendor")" = 0x8086 ] && [ "$(cat "$d/device")" = 0x10c9 ]; then
		dev=$d
		break
	fi
done
[ -n "$dev" ] || fail "no 8086:10c9 function on the guest PCI bus"
driver=none
iface=none
vectors=0
if [ -n "$dev" ]; then
	[ -L "$dev/driver" ] && driver=$(basename "$(readlink "$dev/driver")")
	for n in "$dev"/net/*; do [ -e "$n" ] && iface=$(basename "$n"); done
	[ -d "$dev/msi_irqs" ] && vectors=$(ls "$dev/msi_irqs" | wc -l)
fi
[ "$driver" = igb ] || fail "the NIC is bound to $driver, not igb"
[ "$vectors" -ge 2 ] || fail "only $vectors MSI-X vectors enabled"
resv=false
[ -e /sys/firmware/devicetree/base/reserved-memory ] && resv=true && fail "the device tree has a reserved-memory node"

# Sum of the interrupt counts of the NIC's vectors, over every CPU column.
irqs() {
	awk -v i="$iface" '$NF ~ i { for (k = 2; k <= NF && $k ~ /^[0-9]+$/; k++) s += $k } END { print s + 0 }' /proc/interrupts
}

received=0
before=0
after=0
if [ "$iface" != none ]; then
	ip link set "$iface" up
	# Link-local address out of duplicate address detection: up to 20 s.
	i=0
	while [ $i -lt 100 ]; do
		a=$(ip -6 addr show dev "$iface" scope link)
		case "$a" in
		*inet6*tentative*) ;;
		*inet6*) break ;;
		esac
		sleep 0.2
		i=$((i + 1))
	done
	before=$(irqs)
	if [ -n "$peer" ]; then
		received=$(ping6 -c 5 -W 2 -I "$iface" "$peer" 2>&1 | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')
		received=${received:-0}
	fi
	after=$(irqs)
fi
[ "$received" -ge 1 ] || fail "no ping replies from $peer"
[ "$after" -gt "$before" ] || fail "the NIC's interrupt counts did not rise ($before -> $after)"

lines=$(grep "$iface" /proc/interrupts | tr -s ' ' | sed 's/"/ /g' | tr '\n' '|')
printf '@@VMM result {"driver":"%s","iface":"%s","msix_vectors":%s,"reserved_memory":%s,"peer":"%s","ping_sent":5,"ping_received":%s,"irq_before":%s,"irq_after":%s,"interrupts":"%s","errors":"%s"}\n' \
	"$driver" "$iface" "$vectors" "$resv" "$peer" "$received" "$before" "$after" "$lines" "$errors"
# Stay reachable so that L1 can ping this guest.
sleep "$linger"
echo "@@VMM status $status"
poweroff -f
