#!/bin/busybox sh
# L2 /init of the end-to-end passthrough test (busybox ash). The guest has one PCI function,
# an igb NIC passed through by passthrough-vmm. It checks, from inside the guest, what the
# test asserts: the igb driver bound and enabled MSI-X, its interrupts fire (counts rise),
# IPv6 link-local pings to L1 (kernel argument e2e_peer=) get replies, and the device tree
# has no reserved-memory node. It reports one "@@VMM result" JSON line and its status
# (0 when everything held), stays up e2e_linger= seconds so L1 can ping it, and powers off.
#
# With a virtual IOMMU (e2e_viommu=1) it also checks that the guest's arm-smmu-v3 driver
# bound the SMMU and that the NIC sits in a translated DMA domain, then unbinds and rebinds
# the igb driver once and pings again (e2e_rebind=1). In the negative control
# (e2e_negative=1, the VMM leaves the kernel's doorbell address in the device) it only
# reports: no interrupt is expected, so nothing there is an error.
#
# With e2e_its=1 (issue 17) it asks the VMM (--its-check on) twice to check its vgic-its
# model against KVM's vITS, sending its own view of every MSI-X vector (index = hwirq in the
# per-device ITS-PCI-MSIX domain, Linux IRQ, CPU from effective_affinity_list) and waiting
# for the VMM's answer on the console: once as booted, once after moving every vector's IRQ
# to the next CPU through /proc/irq/N/smp_affinity (the ITS driver's MOVI).
#
# With e2e_move=1 (any controller; the riscv64 run uses it) it moves every vector's IRQ to
# the next CPU, pings again and counts the vectors that now sit on their new CPU and whose
# count rose there: the guest rewrote the vector's address (the new CPU's doorbell, e.g. its
# vIMSIC page) and data, and the VMM must have followed with the route.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
peer=
linger=6
viommu=0
rebind=0
negative=0
its=0
move=0
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	e2e_peer=*) peer="${arg#e2e_peer=}" ;;
	e2e_linger=*) linger="${arg#e2e_linger=}" ;;
	e2e_viommu=*) viommu="${arg#e2e_viommu=}" ;;
	e2e_rebind=*) rebind="${arg#e2e_rebind=}" ;;
	e2e_negative=*) negative="${arg#e2e_negative=}" ;;
	e2e_its=*) its="${arg#e2e_its=}" ;;
	e2e_move=*) move="${arg#e2e_move=}" ;;
	esac
done
status=0
errors=
notes=
fail() {
	if [ "$negative" = 1 ]; then
		notes="$notes${notes:+; }$1"
	else
		status=1
		errors="$errors${errors:+; }$1"
	fi
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

# The guest's IOMMU: the SMMU registered, the NIC in a group whose domain translates.
smmu=none
domain=none
if [ -n "$dev" ] && [ -L "$dev/iommu_group" ]; then
	domain=$(cat "$dev/iommu_group/type" 2>/dev/null || echo unknown)
	[ -L "$dev/iommu" ] && smmu=$(basename "$(readlink "$dev/iommu")")
fi
if [ "$viommu" = 1 ]; then
	[ "$smmu" != none ] || fail "the NIC has no IOMMU (the guest's arm-smmu-v3 did not bind)"
	case "$domain" in
	DMA | DMA-FQ) ;;
	*) fail "the NIC's IOMMU domain is $domain, not a translated DMA domain" ;;
	esac
fi

# Sum of the interrupt counts of the NIC's vectors, over every CPU column.
irqs() {
	awk -v i="$iface" '$NF ~ i { for (k = 2; k <= NF && $k ~ /^[0-9]+$/; k++) s += $k } END { print s + 0 }' /proc/interrupts
}

# Brings the NIC up (link-local address out of duplicate address detection: up to 20 s,
# 4 s in the negative control) and pings the peer; sets received.
count=5
dad=100
if [ "$negative" = 1 ]; then
	count=2
	dad=20
fi
up_and_ping() {
	ip link set "$iface" up
	i=0
	while [ $i -lt $dad ]; do
		a=$(ip -6 addr show dev "$iface" scope link)
		case "$a" in
		*inet6*tentative*) ;;
		*inet6*) break ;;
		esac
		sleep 0.2
		i=$((i + 1))
	done
	received=0
	if [ -n "$peer" ]; then
		received=$(ping6 -c $count -W 2 -I "$iface" "$peer" 2>&1 | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')
		received=${received:-0}
	fi
}

received=0
before=0
after=0
if [ "$iface" != none ]; then
	before=$(irqs)
	up_and_ping
	after=$(irqs)
fi
# On failure, say what the guest's side of the link looked like (address state, neighbours).
link_state() {
	{
		ip -6 addr show dev "$iface" scope link
		ip -6 neigh show dev "$iface"
	} 2>&1 | tr -s ' \n' ' ' | sed 's/"/ /g'
}
[ "$received" -ge 1 ] || fail "no ping replies from $peer (L2 $iface: $(link_state))"
[ "$after" -gt "$before" ] || fail "the NIC's interrupt counts did not rise ($before -> $after)"

# Unbind and rebind the driver (MSI-X torn down and set up again), then ping again.
rebound=false
received2=0
before2=0
after2=0
if [ "$rebind" = 1 ] && [ "$iface" != none ]; then
	bdf=$(basename "$dev")
	echo "$bdf" > /sys/bus/pci/drivers/igb/unbind
	echo "$bdf" > /sys/bus/pci/drivers/igb/bind
	iface=none
	for n in "$dev"/net/*; do [ -e "$n" ] && iface=$(basename "$n"); done
	if [ "$iface" != none ] && [ -L "$dev/driver" ]; then
		rebound=true
		before2=$(irqs)
		up_and_ping
		received2=$received
		after2=$(irqs)
	fi
	[ "$rebound" = true ] || fail "the igb driver did not bind again"
	[ "$received2" -ge 1 ] || fail "no ping replies from $peer after the rebind"
	[ "$after2" -gt "$before2" ] || fail "no interrupts after the rebind ($before2 -> $after2)"
	received=$((received + received2))
fi

# The ITS checks: the guest's view of each vector, then a request the VMM answers with
# "its <tag>" on the console once it has compared KVM's vITS and its model with it.
its_cpu() {
	cut -d, -f1 "/proc/irq/$1/effective_affinity_list" | cut -d- -f1
}
its_vectors() {
	out=
	for irq in $(ls "$dev/msi_irqs"); do
		out="$out${out:+,}{\"index\":$(cat "/sys/kernel/irq/$irq/hwirq"),\"irq\":$irq,\"cpu\":$(its_cpu "$irq")}"
	done
	echo "$out"
}
its_request() {
	echo "@@VMM result {\"its_request\":\"$1\",\"vectors\":[$(its_vectors)]}"
	ans=
	read -t 60 ans </dev/console
	[ "$ans" = "its $1" ] || fail "the VMM did not answer the ITS request $1 (got '$ans')"
}
cpus=$(grep -c '^processor' /proc/cpuinfo)
its_moved=0
if [ "$its" = 1 ] && [ -n "$dev" ] && [ -d "$dev/msi_irqs" ]; then
	its_request before
	if [ "$cpus" -ge 2 ]; then
		for irq in $(ls "$dev/msi_irqs"); do
			to=$((($(its_cpu "$irq") + 1) % cpus))
			printf '%x\n' $((1 << to)) >"/proc/irq/$irq/smp_affinity"
			now=$(its_cpu "$irq")
			if [ "$now" = "$to" ]; then
				its_moved=$((its_moved + 1))
			else
				fail "IRQ $irq stayed on CPU $now (asked for CPU $to)"
			fi
		done
	else
		fail "only $cpus CPU: the affinity change needs 2"
	fi
	its_request after
fi

# Every vector to the next CPU, then pings: a vector whose IRQ fired after the move counts
# as moved when its effective CPU is the new one and its count on that CPU rose (some
# controllers, the RISC-V IMSIC among them, complete a move at the vector's next interrupt).
irq_on() {
	awk -v n="$1:" -v c="$2" '$1 == n { v = $(c + 2) } END { print v + 0 }' /proc/interrupts
}
moved=0
move_targets=0
received3=0
if [ "$move" = 1 ] && [ "$iface" != none ] && [ -d "$dev/msi_irqs" ]; then
	if [ "$cpus" -ge 2 ]; then
		targets=
		for irq in $(ls "$dev/msi_irqs"); do
			to=$((($(its_cpu "$irq") + 1) % cpus))
			printf '%x\n' $((1 << to)) >"/proc/irq/$irq/smp_affinity" ||
				fail "IRQ $irq: smp_affinity refused CPU $to"
			targets="$targets $irq:$to:$(irq_on "$irq" "$to")"
			move_targets=$((move_targets + 1))
		done
		saved=$received
		up_and_ping
		received3=$received
		received=$saved
		for t in $targets; do
			irq=${t%%:*}
			rest=${t#*:}
			to=${rest%%:*}
			was=${rest#*:}
			if [ "$(its_cpu "$irq")" = "$to" ] && [ "$(irq_on "$irq" "$to")" -gt "$was" ]; then
				moved=$((moved + 1))
			fi
		done
		[ "$received3" -ge 1 ] || fail "no ping replies after moving the vectors"
		[ "$moved" -ge 1 ] || fail "no vector took an interrupt on its new CPU after the move"
	else
		fail "only $cpus CPU: moving vectors needs 2"
	fi
fi

lines=$(grep "$iface" /proc/interrupts | tr -s ' ' | sed 's/"/ /g' | tr '\n' '|')
printf '@@VMM result {"driver":"%s","iface":"%s","msix_vectors":%s,"reserved_memory":%s,"peer":"%s","ping_sent":%s,"ping_received":%s,"irq_before":%s,"irq_after":%s,"iommu":"%s","iommu_domain":"%s","rebound":%s,"irq_before_rebind":%s,"irq_after_rebind":%s,"ping_received_after_rebind":%s,"cpus":%s,"its_moved":%s,"move_targets":%s,"moved":%s,"ping_received_after_move":%s,"interrupts":"%s","errors":"%s","notes":"%s"}\n' \
	"$driver" "$iface" "$vectors" "$resv" "$peer" "$count" "$received" "$before" "$after" "$smmu" "$domain" "$rebound" "$before2" "$after2" "$received2" "$cpus" "$its_moved" "$move_targets" "$moved" "$received3" "$lines" "$errors" "$notes"
# Stay reachable so that L1 can ping this guest.
sleep "$linger"
# The NIC's final interrupt counts, after L1's pings too: plain console lines, for a
# failure's context (L1 compares them with its own count of each vector).
[ "$iface" != none ] && grep "$iface" /proc/interrupts | sed 's/^/final irqs: /'
echo "@@VMM status $status"
poweroff -f
