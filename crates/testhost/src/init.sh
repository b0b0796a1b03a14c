#!/bin/busybox sh
# /init of the testhost initramfs (PID 1 in the test VM), run by busybox's ash.
#
# 1. mounts proc, sysfs, devtmpfs and a tmpfs on /tmp;
# 2. finds the virtio-serial port named "results" (no udev: by its sysfs name);
# 3. binds the igb NICs (8086:10c9) listed in $TESTHOST_BIND (indices in BDF order) to
#    vfio-pci through driver_override, unbind and drivers_probe;
# 4. runs the plan (/testhost/plan, one `step SUITE TIMEOUT ARGV...` per line) and forwards
#    each step's standard output line by line, tagged with the suite;
# 5. writes DONE and powers off.
# The record format is documented in the testhost crate, src/protocol.rs. Everything a step
# writes to stderr goes to the console (console.log on the host).

/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
exec </dev/null >/dev/console 2>&1

die() {
	echo "testhost-init: $*"
	poweroff -f
	# poweroff -f does not return; if it did, PID 1 exiting panics the kernel, and
	# panic=-1 with QEMU's -no-reboot ends the VM.
	exit 1
}

. /testhost/config || die "cannot read /testhost/config"

port=""
for p in /sys/class/virtio-ports/*; do
	[ -r "$p/name" ] || continue
	if [ "$(cat "$p/name")" = results ]; then
		port="/dev/${p##*/}"
	fi
done
[ -n "$port" ] || die "no virtio-serial port named 'results'"
[ -c "$port" ] || die "$port is not a character device"
exec 3>"$port" || die "cannot open $port"

emit() {
	printf '%s\n' "$*" >&3
}

emit "HELLO 1"

# The igb NICs in BDF order (the shell sorts glob results).
nics=""
for d in /sys/bus/pci/devices/*; do
	if [ "$(cat "$d/vendor")" = 0x8086 ] && [ "$(cat "$d/device")" = 0x10c9 ]; then
		nics="$nics ${d##*/}"
	fi
done

nic_bdf() { # index -> BDF, empty if there is no such NIC
	i=0
	for b in $nics; do
		if [ "$i" = "$1" ]; then
			echo "$b"
			return
		fi
		i=$((i + 1))
	done
}

driver_of() {
	if [ -e "/sys/bus/pci/devices/$1/driver" ]; then
		d="$(readlink "/sys/bus/pci/devices/$1/driver")"
		echo "${d##*/}"
	else
		echo none
	fi
}

vfio_bdfs=""
for index in $TESTHOST_BIND; do
	bdf="$(nic_bdf "$index")"
	if [ -z "$bdf" ]; then
		emit "BIND $index - missing"
		continue
	fi
	d="/sys/bus/pci/devices/$bdf"
	if ! echo vfio-pci >"$d/driver_override"; then
		emit "BIND $index $bdf fail writing driver_override"
		continue
	fi
	if [ -e "$d/driver" ] && ! echo "$bdf" >"$d/driver/unbind"; then
		emit "BIND $index $bdf fail unbinding from $(driver_of "$bdf")"
		continue
	fi
	if ! echo "$bdf" >/sys/bus/pci/drivers_probe; then
		emit "BIND $index $bdf fail writing drivers_probe"
		continue
	fi
	drv="$(driver_of "$bdf")"
	if [ "$drv" = vfio-pci ]; then
		emit "BIND $index $bdf ok"
		vfio_bdfs="${vfio_bdfs:+$vfio_bdfs }$bdf"
	else
		emit "BIND $index $bdf fail driver is $drv after drivers_probe"
	fi
done

i=0
for b in $nics; do
	emit "NIC $i $b $(driver_of "$b")"
	i=$((i + 1))
done

export TESTHOST_IN_GUEST=1
export TESTHOST_VFIO_BDFS="$vfio_bdfs"

# step SUITE TIMEOUT_SECS ARGV...: runs ARGV with stdin from /dev/null, stderr to the
# console, and each stdout line forwarded as `E SUITE LINE`, then `X SUITE STATUS`.
step() {
	suite="$1"
	limit="$2"
	shift 2
	emit "BEGIN $suite"
	echo "testhost-init: running $suite"
	rm -f /tmp/step-status
	{
		if [ "$limit" -gt 0 ]; then
			timeout -s KILL "$limit" "$@"
		else
			"$@"
		fi
		echo "$?" >/tmp/step-status
	} | while IFS= read -r line || [ -n "$line" ]; do
		printf 'E %s %s\n' "$suite" "$line"
	done >&3
	status="$(cat /tmp/step-status 2>/dev/null)"
	emit "X $suite ${status:-255}"
}

. /testhost/plan

read -r uptime _ </proc/uptime
emit "DONE $uptime"
exec 3>&-
echo "testhost-init: plan finished after ${uptime}s, powering off"
poweroff -f
