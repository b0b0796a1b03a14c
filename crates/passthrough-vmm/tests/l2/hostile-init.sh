#!/bin/busybox sh
# L2 /init of the reliability tests (tests/reliability.rs, issue 18), busybox ash, with the
# project's hostile program at /bin/l2-hostile. The guest has one PCI function, the igb
# passed through. Kernel arguments:
#   hostile_mode=full      the igb driver up and pinging L1 (hostile_peer=); then the MSI-X
#                          storm (hostile_storm=<seconds>) on CPU 1 while CPU 0 pings; then
#                          the DMA isolation attacks (hostile_targets=, hostile_kinds=) with
#                          the driver unbound; then the driver bound again and pinging.
#   hostile_mode=viommu    the isolation attacks under the guest's own vIOMMU (the device
#                          addresses are gIOVAs the guest never mapped), then rebind + ping.
#   hostile_mode=pingloop  the igb up, "@@VMM result {"phase":"pinging"}" once L1 answers,
#                          then pings forever (the VMM is killed from L1).
#   hostile_mode=quick     the igb up and pinging L1, nothing hostile (the run after a kill,
#                          and the soak's runs).
# Each phase reports one "@@VMM result" JSON line; the status is 0 when the guest-side
# checks held. It stays up hostile_linger= seconds so that L1 can ping it, then powers off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mode=full
peer=
storm=10
targets=
kinds=
tpace=
linger=4
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	hostile_mode=*) mode="${arg#hostile_mode=}" ;;
	hostile_peer=*) peer="${arg#hostile_peer=}" ;;
	hostile_storm=*) storm="${arg#hostile_storm=}" ;;
	hostile_targets=*) targets="${arg#hostile_targets=}" ;;
	hostile_kinds=*) kinds="${arg#hostile_kinds=}" ;;
	hostile_target_pace=*) tpace="${arg#hostile_target_pace=}" ;;
	hostile_linger=*) linger="${arg#hostile_linger=}" ;;
	esac
done
status=0
errors=
fail() {
	status=1
	errors="$errors${errors:+; }$1"
}

dev=
for d in /sys/bus/pci/devices/*; do
	if [ "$(cat "$d/vendor")" = 0x8086 ] && [ "$(cat "$d/device")" = 0x10c9 ]; then
		dev=$d
		break
	fi
done
bdf=$(basename "$dev")

iface_of() {
	iface=none
	for n in "$dev"/net/*; do [ -e "$n" ] && iface=$(basename "$n"); done
}

irqs() {
	awk -v i="$iface" '$NF ~ i { for (k = 2; k <= NF && $k ~ /^[0-9]+$/; k++) s += $k } END { print s + 0 }' /proc/interrupts
}

# The NIC up (link-local address out of DAD, up to 20 s).
up() {
	ip link set "$iface" up
	i=0
	while [ $i -lt 100 ]; do
		case "$(ip -6 addr show dev "$iface" scope link)" in
		*inet6*tentative*) ;;
		*inet6*) break ;;
		esac
		sleep 0.2
		i=$((i + 1))
	done
}

# ping6 $1 times, $2 s apart; prints the replies.
ping_n() {
	r=$(ping6 -c "$1" -i "$2" -W 2 -I "$iface" "$peer" 2>&1 | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')
	echo "${r:-0}"
}

# One phase's report line: phase name, then the JSON body without braces.
report() {
	echo "@@VMM result {\"phase\":\"$1\",$2}"
}

bound_and_pinging() {
	iface_of
	driver=none
	[ -L "$dev/driver" ] && driver=$(basename "$(readlink "$dev/driver")")
	[ "$iface" != none ] || { fail "$1: no interface (driver $driver)"; return; }
	up
	before=$(irqs)
	received=$(ping_n 5 0.2)
	after=$(irqs)
	vectors=$(ls "$dev/msi_irqs" 2>/dev/null | wc -l)
	[ "$received" -ge 1 ] || fail "$1: no ping replies from $peer"
	[ "$after" -gt "$before" ] || fail "$1: interrupts did not rise ($before -> $after)"
	report "$1" "\"driver\":\"$driver\",\"iface\":\"$iface\",\"vectors\":$vectors,\"ping_received\":$received,\"irq_before\":$before,\"irq_after\":$after"
}

rebind() {
	echo "$bdf" > /sys/bus/pci/drivers/igb/bind 2>/dev/null || fail "rebind: writing igb/bind failed"
	bound_and_pinging rebind
}

isolate() {
	out=$(l2-hostile isolate --targets "$targets" ${kinds:+--kinds "$kinds"} ${tpace:+--target-pace-ms "$tpace"})
	rc=$?
	[ $rc -eq 0 ] || fail "l2-hostile isolate exited $rc"
	report isolation "\"rc\":$rc,\"data\":${out:-null}"
}

case "$mode" in
pingloop)
	iface_of
	up
	while [ "$(ping_n 1 1)" -lt 1 ]; do sleep 0.2; done
	report pinging "\"iface\":\"$iface\""
	while true; do ping6 -c 1 -W 1 -I "$iface" "$peer" > /dev/null 2>&1; sleep 0.2; done
	;;
quick)
	bound_and_pinging baseline
	;;
viommu)
	bound_and_pinging baseline
	isolate
	rebind
	;;
*)
	bound_and_pinging baseline
	# The storm on CPU 1 while CPU 0 pings: every reply counts.
	l2-hostile storm --seconds "$storm" --cpu 1 > /tmp/storm.json &
	spid=$!
	count=$((storm * 4))
	received=$(ping_n "$count" 0.25)
	wait $spid
	rc=$?
	[ $rc -eq 0 ] || fail "l2-hostile storm exited $rc"
	[ "$received" -ge $((count / 2)) ] || fail "storm: only $received of $count pings answered"
	report storm "\"rc\":$rc,\"ping_sent\":$count,\"ping_received\":$received,\"data\":$(cat /tmp/storm.json)"
	# The storm's final state (every vector deliverable) stays a while for the VMM's monitor.
	sleep 1
	isolate
	rebind
	;;
esac
report summary "\"errors\":\"$errors\""
sleep "$linger"
echo "@@VMM status $status"
poweroff -f
