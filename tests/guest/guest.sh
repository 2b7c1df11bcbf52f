#!/usr/bin/env bash
# Boot throw-away Debian guests -- 13 (trixie) or 12 (bookworm) -- with
# systemd as PID 1 using systemd-nspawn, for Molecule/Ansible tests of the
# SwiftDrop role.
#
#   guest.sh base [--suite S]     build (once, cached) the base tree of suite S
#   guest.sh up NAME [--suite S] [--reach PEER,...]
#                             overlay + netns + veth + NAT, boot, wait for
#                             ssh, print connection JSON on stdout; --reach:
#                             NAME may open connections to these guests
#   guest.sh down NAME        power off and remove everything of NAME
#   guest.sh ssh NAME [CMD]   ssh into the guest as root
#   guest.sh status [NAME]    list instances (or print JSON of one)
#
# Works on hosts whose PID 1 is not systemd (nspawn runs with
# --register=no --keep-unit; it joins the netns made here, and
# --private-network gives the guest a sysfs showing only its own interfaces).  Needs root, debootstrap, systemd-container,
# iproute2, nftables and openssh-client.
#
# Networking: each guest gets its own network namespace "sdg-NAME" with a veth
# pair; the host end (root namespace, "sdgN") holds 10.213.0.(4N+1)/30, the
# guest end ("eth0" inside the namespace) 10.213.0.(4N+2)/30.  Guest traffic is
# masqueraded, and the forward path only lets through DNS to the host's
# nameservers and HTTP(S) to the addresses of the package mirrors
# (SWIFTDROP_GUEST_EGRESS_HOSTS); everything else from the guest is dropped.
# A guest started with --reach PEER,... may also open connections to those
# guests (already up), from its own address to theirs, unmasqueraded, so that
# they see who is talking: a sending MTA and the MX hosts it delivers to.
# Every guest accepts what another guest's own rules let through to it; no
# guest can reach another one that its own "up" did not name.
#
# Environment:
#   SWIFTDROP_GUEST_SUITE   Debian suite when --suite is not given (bookworm);
#                           one of: bookworm trixie.  Each suite has its own
#                           cached base tree, stamp and build log.
#   SWIFTDROP_GUEST_CACHE   base trees + ssh key (/var/cache/swiftdrop-guest)
#   SWIFTDROP_GUEST_STATE   per-instance dirs    (/var/lib/swiftdrop-guest)
#   SWIFTDROP_GUEST_MIRROR  Debian mirror URL    (taken from host apt sources)
#   SWIFTDROP_GUEST_SECURITY_MIRROR              (taken from host apt sources)
#   SWIFTDROP_GUEST_EGRESS_HOSTS  extra host names the guest may reach on 80/443
#   SWIFTDROP_GUEST_TIMEOUT seconds to wait for ssh (60)
#   SWIFTDROP_GUEST_RESOLV_CONF  where the host's nameservers are read from
#                           (/etc/resolv.conf; loopback ones are skipped)
set -euo pipefail

SUPPORTED_SUITES=(bookworm trixie)
CACHE=${SWIFTDROP_GUEST_CACHE:-/var/cache/swiftdrop-guest}
STATE=${SWIFTDROP_GUEST_STATE:-/var/lib/swiftdrop-guest}
KEY=$CACHE/id_ed25519
# SUITE, BASE, STAMP and BUILD_LOG are set by select_suite
TIMEOUT=${SWIFTDROP_GUEST_TIMEOUT:-60}
SUBNET_PREFIX=10.213.0
MAX_INSTANCES=64

# Packages of the base tree.  Changing this list (or customize_base) changes
# the stamp hash and triggers a rebuild on the next "base"/"up".
PACKAGES=(
    systemd systemd-sysv dbus openssh-server python3 python3-apt sudo
    iproute2 ca-certificates
)

# Units masked in the base tree.  None of them fails in nspawn (the guest is
# "running" without the masks); they are masked so that tests are not
# disturbed by background apt runs, first-boot prompts, fs maintenance or a
# getty on a tty that a container does not have.
MASKED_UNITS=(
    apt-daily.timer apt-daily-upgrade.timer apt-daily.service
    apt-daily-upgrade.service systemd-firstboot.service
    systemd-networkd-wait-online.service getty@tty1.service
    e2scrub_all.timer e2scrub_reap.service fstrim.timer
)

SSH_OPTS=(
    -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
    -o LogLevel=ERROR -o ConnectTimeout=3 -o IdentitiesOnly=yes
)

log() { printf 'guest.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root"; }

need_tools() {
    local t missing=()
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || missing+=("$t")
    done
    ((${#missing[@]} == 0)) || die "missing tools: ${missing[*]} (apt-get install debootstrap systemd-container iproute2 nftables openssh-client)"
}

# Set the suite whose base tree "base"/"up" use (per-suite cache paths).
select_suite() {
    SUITE=$1
    [[ " ${SUPPORTED_SUITES[*]} " == *" $SUITE "* ]] \
        || die "unsupported suite '$SUITE' (one of: ${SUPPORTED_SUITES[*]})"
    BASE=$CACHE/$SUITE-base
    STAMP=$CACHE/$SUITE-base.stamp
    BUILD_LOG=$CACHE/$SUITE-build.log
}

check_name() {
    [[ $1 =~ ^[a-z0-9][a-z0-9-]{0,39}$ ]] || die "invalid NAME '$1' (lower-case letters, digits, '-', max 40)"
}

# --- host apt configuration ---------------------------------------------------

# Print the URIs of the host's apt sources (one-line and deb822 formats).
host_apt_uris() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        awk 'tolower($1) == "uris:" { for (i = 2; i <= NF; i++) print $i }' "$f"
    done
}

mirror_url() {
    if [[ -n ${SWIFTDROP_GUEST_MIRROR:-} ]]; then
        echo "$SWIFTDROP_GUEST_MIRROR"
        return
    fi
    local u
    u=$(host_apt_uris | grep -E '/debian/?$' | head -n1 || true)
    echo "${u:-http://deb.debian.org/debian}"
}

security_mirror_url() {
    if [[ -n ${SWIFTDROP_GUEST_SECURITY_MIRROR:-} ]]; then
        echo "$SWIFTDROP_GUEST_SECURITY_MIRROR"
        return
    fi
    local u
    u=$(host_apt_uris | grep -E '/debian-security/?$' | head -n1 || true)
    [[ -n $u ]] || u="$(mirror_url | sed 's,/*$,,')-security"
    echo "$u"
}

url_host() { sed -E 's,^[a-z]+://([^/:]+).*,\1,' <<<"$1"; }

# Nameservers usable from inside a guest: the host's, minus loopback ones.
host_nameservers() {
    awk '$1 == "nameserver" && $2 ~ /^[0-9.]+$/ && $2 !~ /^127\./ { print $2 }' \
        "${SWIFTDROP_GUEST_RESOLV_CONF:-/etc/resolv.conf}"
}

# --- base tree ------------------------------------------------------------------

# Runs inside "chroot $1"-able tree, after debootstrap.  Part of the stamp hash.
customize_base() {
    local root=$1 mirror=$2 security=$3
    local in=(chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8
        DEBIAN_FRONTEND=noninteractive)

    # apt sources (the guest reaches the same mirror as the host, through NAT)
    rm -f "$root/etc/apt/sources.list"
    cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    cat >"$root/etc/apt/apt.conf.d/90swiftdrop-guest" <<'EOF'
// the guest network is IPv4 only
Acquire::ForceIPv4 "true";
APT::Install-Recommends "false";
APT::Periodic::Enable "0";
EOF

    # locale-free defaults: C.UTF-8 is built into glibc, no locales package
    echo 'LANG=C.UTF-8' >"$root/etc/default/locale"
    # do not accept the client's LANG/LC_* (the guest has no such locales)
    sed -i -E 's/^(AcceptEnv .*)$/# \1/' "$root/etc/ssh/sshd_config"

    # ssh: key-only root login with the key pair from the cache dir
    cat >"$root/etc/ssh/sshd_config.d/swiftdrop-guest.conf" <<'EOF'
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
EOF
    install -d -m 0700 "$root/root/.ssh"
    install -m 0600 "$KEY.pub" "$root/root/.ssh/authorized_keys"
    "${in[@]}" passwd -l root >/dev/null

    # identity is set per instance by "up"
    : >"$root/etc/machine-id"
    rm -f "$root/var/lib/dbus/machine-id" "$root/etc/hostname"
    ln -s /etc/machine-id "$root/var/lib/dbus/machine-id"
    printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
    # resolv.conf is written per instance by "up"
    rm -f "$root/etc/resolv.conf"

    "${in[@]}" systemctl enable ssh.service >/dev/null 2>&1
    "${in[@]}" systemctl set-default multi-user.target >/dev/null 2>&1
    local u
    for u in "${MASKED_UNITS[@]}"; do
        "${in[@]}" systemctl mask "$u" >/dev/null 2>&1
    done

    # pending updates/security fixes (no daemons started in the chroot),
    # package lists kept so that apt-get install works right away (guests
    # may still run apt-get update), no downloaded .debs left in the tree
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 0755 "$root/usr/sbin/policy-rc.d"
    mount -t proc proc "$root/proc"
    {
        "${in[@]}" apt-get -q update
        "${in[@]}" apt-get -q -y -o Dpkg::Options::=--force-confold dist-upgrade
        "${in[@]}" apt-get clean
    } >>"$BUILD_LOG" 2>&1
    umount "$root/proc"
    rm -f "$root/etc/resolv.conf" "$root/usr/sbin/policy-rc.d"
    rm -rf "$root/var/log/"*.log "$root/var/log/apt/"* "$root/tmp/"*
}

# Unmount everything mounted at or below $1 (deepest first).
umount_below() {
    local m
    awk -v d="$1" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts \
        | sort -r | while read -r m; do umount -l "$m" || true; done
}

base_hash() {
    {
        echo "$SUITE"
        printf '%s\n' "${PACKAGES[@]}" "${MASKED_UNITS[@]}"
        mirror_url
        security_mirror_url
        declare -f customize_base
    } | sha256sum | cut -d' ' -f1
}

base_is_current() {
    [[ -f $STAMP && -d $BASE ]] && [[ $(head -n1 "$STAMP") == "$(base_hash)" ]]
}

cmd_base() {
    need_root
    need_tools debootstrap chroot ssh-keygen sha256sum flock
    install -d -m 0755 "$CACHE"
    # one key pair for all suites (built in parallel), then one lock per suite
    exec 8>"$CACHE/.lock-key"
    flock 8
    if [[ ! -f $KEY ]]; then
        ssh-keygen -q -t ed25519 -N '' -C swiftdrop-guest -f "$KEY"
    fi
    exec 8>"$CACHE/.lock-$SUITE"
    flock 8
    if base_is_current; then
        flock -u 8
        return 0
    fi
    local pidfile
    for pidfile in "$STATE"/*/pid; do
        [[ -f $pidfile && $(suite_of "$(basename "$(dirname "$pidfile")")") == "$SUITE" ]] \
            && die "$SUITE base tree must be rebuilt but $SUITE instances are up: run 'guest.sh down' for them first"
    done
    local mirror security tmp start
    mirror=$(mirror_url)
    security=$(security_mirror_url)
    tmp=$BASE.new
    start=$SECONDS
    log "building the $SUITE base tree $BASE from $mirror (takes a few minutes)"
    umount_below "$tmp"
    rm -rf --one-file-system "$tmp"
    trap 'umount_below "$BASE.new"' EXIT
    local includes
    includes=$(IFS=,; echo "${PACKAGES[*]}")
    if ! debootstrap --variant=minbase --include="$includes" "$SUITE" "$tmp" "$mirror" \
        >"$BUILD_LOG" 2>&1; then
        tail -n 20 "$BUILD_LOG" >&2
        die "debootstrap failed, see $BUILD_LOG"
    fi
    customize_base "$tmp" "$mirror" "$security"
    trap - EXIT
    rm -rf --one-file-system "$BASE"
    mv "$tmp" "$BASE"
    {
        base_hash
        echo "built $(date -u +%FT%TZ) in $((SECONDS - start))s from $mirror"
        printf 'packages: %s\n' "${PACKAGES[*]}"
    } >"$STAMP"
    log "$SUITE base tree ready in $((SECONDS - start))s"
    flock -u 8
}

# --- instances --------------------------------------------------------------------

idir() { echo "$STATE/$1"; }
# Suite of instance $1 (instances made before suites existed are bookworm).
suite_of() { cat "$(idir "$1")/suite" 2>/dev/null || echo bookworm; }
netns_of() { echo "sdg-$1"; }
nft_table_of() { echo "swiftdrop_guest_$1"; }

# Allocate the lowest free index (0..MAX_INSTANCES-1); caller holds the lock.
alloc_index() {
    local used=() i f
    for f in "$STATE"/*/index; do
        [[ -f $f ]] && used+=("$(cat "$f")")
    done
    for ((i = 0; i < MAX_INSTANCES; i++)); do
        if [[ " ${used[*]} " != *" $i "* ]] && ! ip link show "sdg$i" >/dev/null 2>&1; then
            echo "$i"
            return
        fi
    done
    die "no free instance slot (max $MAX_INSTANCES)"
}

host_addr() { echo "$SUBNET_PREFIX.$(($1 * 4 + 1))"; }
guest_addr() { echo "$SUBNET_PREFIX.$(($1 * 4 + 2))"; }

# PID of the running systemd-nspawn of instance $1, if any.
nspawn_pid() {
    local d pid
    d=$(idir "$1")
    [[ -f $d/pid ]] || return 1
    pid=$(cat "$d/pid")
    [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "systemd-nspawn .*--machine $1 " || return 1
    echo "$pid"
}

# PIDs of all processes whose root is the instance's merged tree.
container_pids() {
    local merged p
    merged=$(idir "$1")/merged
    for p in /proc/[0-9]*; do
        [[ $(readlink "$p/root" 2>/dev/null) == "$merged" ]] && echo "${p#/proc/}"
    done
    return 0
}

print_json() {
    local name=$1 d idx
    d=$(idir "$name")
    idx=$(cat "$d/index")
    printf '{"name": "%s", "address": "%s", "ssh_key": "%s", "ssh_port": 22, "user": "root", "suite": "%s"}\n' \
        "$name" "$(guest_addr "$idx")" "$KEY" "$(suite_of "$name")"
}

ssh_ok() {
    ssh "${SSH_OPTS[@]}" -i "$KEY" -p 22 "root@$1" true >/dev/null 2>&1
}

setup_network() {
    local name=$1 idx=$2 reach_addrs=$3 ns table hveth haddr gaddr
    ns=$(netns_of "$name")
    table=$(nft_table_of "$idx")
    hveth=sdg$idx
    haddr=$(host_addr "$idx")
    gaddr=$(guest_addr "$idx")

    ip netns add "$ns"
    ip link add "$hveth" type veth peer name eth0 netns "$ns"
    ip addr add "$haddr/30" dev "$hveth"
    ip link set "$hveth" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$gaddr/30" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "$haddr"

    # forwarding (remember the original value, restored by the last "down")
    if [[ ! -f $STATE/ip_forward.orig ]]; then
        cat /proc/sys/net/ipv4/ip_forward >"$STATE/ip_forward.orig"
    fi
    sysctl -qw net.ipv4.ip_forward=1

    # egress allow-list: DNS to the host's nameservers, 80/443 to the mirrors
    local dns=() web=() h a
    mapfile -t dns < <(host_nameservers)
    local hosts=("$(url_host "$(mirror_url)")" "$(url_host "$(security_mirror_url)")")
    # shellcheck disable=SC2206  # word splitting of the user list is intended
    hosts+=(${SWIFTDROP_GUEST_EGRESS_HOSTS:-})
    mapfile -t hosts < <(printf '%s\n' "${hosts[@]}" | awk 'NF && !seen[$0]++')
    local d
    d=$(idir "$name")
    : >"$d/hosts.pinned"
    for h in "${hosts[@]}"; do
        while read -r a _; do
            [[ -n $a ]] || continue
            web+=("$a")
            printf '%s\t%s\n' "$a" "$h" >>"$d/hosts.pinned"
        done < <(getent ahostsv4 "$h" | awk '{ print $1 }' | sort -u)
    done
    ((${#web[@]} > 0)) || die "cannot resolve mirror host(s) ${hosts[*]}"
    local dns_set web_set reach_forward="" reach_nat=""
    dns_set=$(IFS=,; echo "${dns[*]:-127.0.0.1}")
    web_set=$(IFS=,; echo "${web[*]}")
    if [[ -n $reach_addrs ]]; then
        reach_forward="iifname \"$hveth\" ip saddr $gaddr ip daddr { $reach_addrs } accept"
        reach_nat="ip saddr $gaddr ip daddr { $reach_addrs } accept"
    fi
    nft -f - <<EOF
table ip $table {
    chain forward {
        type filter hook forward priority filter; policy accept;
        iifname "$hveth" ct state established,related accept
        oifname "$hveth" ct state established,related accept
        iifname "$hveth" ip daddr { $dns_set } meta l4proto { tcp, udp } th dport 53 accept
        iifname "$hveth" ip daddr { $web_set } tcp dport { 80, 443 } accept
        $reach_forward
        oifname "$hveth" iifname "sdg*" ip saddr $SUBNET_PREFIX.0/24 ip daddr $gaddr accept
        iifname "$hveth" drop
        oifname "$hveth" drop
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        $reach_nat
        ip saddr $gaddr/32 oifname != "$hveth" masquerade
    }
}
EOF
    # DNS inside the guest: the host's (non-loopback) nameservers, via NAT
    # (with only loopback nameservers on the host, the guest gets no DNS
    # server and the mirror names are pinned in its /etc/hosts instead)
    if ((${#dns[@]} == 0)); then
        log "warning: host has only loopback nameservers; pinning mirror addresses in the guest's /etc/hosts"
    else
        : >"$d/hosts.pinned"
    fi
    {
        echo "# written by guest.sh (host nameservers, reached through NAT)"
        for a in "${dns[@]}"; do echo "nameserver $a"; done
    } >"$d/resolv.conf"
}

teardown_network() {
    local name=$1 idx=$2
    ip netns delete "$(netns_of "$name")" 2>/dev/null || true
    if [[ -n $idx ]]; then
        ip link delete "sdg$idx" 2>/dev/null || true
        nft delete table ip "$(nft_table_of "$idx")" 2>/dev/null || true
    fi
    # last instance gone: restore ip_forward
    if [[ -f $STATE/ip_forward.orig ]] && ! compgen -G "$STATE/*/index" >/dev/null; then
        sysctl -qw "net.ipv4.ip_forward=$(cat "$STATE/ip_forward.orig")"
        rm -f "$STATE/ip_forward.orig"
    fi
}

# Addresses (comma-separated) of the guests named in REACH, which must be up.
reach_addresses() {
    local peer addrs=()
    [[ -n $REACH ]] || return 0
    for peer in ${REACH//,/ }; do
        check_name "$peer"
        nspawn_pid "$peer" >/dev/null || die "--reach $peer: $peer is not up"
        addrs+=("$(guest_addr "$(cat "$(idir "$peer")/index")")")
    done
    (IFS=,; echo "${addrs[*]}")
}

cmd_up() {
    local name=${1:?usage: guest.sh up NAME [--suite S] [--reach PEER,...]}
    check_name "$name"
    need_root
    need_tools systemd-nspawn ip nft ssh setsid flock getent sysctl
    [[ -d /sys/fs/cgroup/systemd || -f /sys/fs/cgroup/cgroup.controllers ]] \
        || die "no usable cgroup hierarchy for systemd-nspawn under /sys/fs/cgroup"
    cmd_base
    local d idx addr
    d=$(idir "$name")
    install -d -m 0755 "$STATE"

    exec 9>"$STATE/.lock"
    flock 9
    if [[ -f $d/index ]] && nspawn_pid "$name" >/dev/null \
        && [[ $(suite_of "$name") == "$SUITE" && $(cat "$d/reach" 2>/dev/null) == "$REACH" ]]; then
        idx=$(cat "$d/index")
        if ssh_ok "$(guest_addr "$idx")"; then
            flock -u 9
            print_json "$name"
            return 0
        fi
    fi
    if [[ -e $d ]]; then
        log "$name: removing stale/partial instance"
        flock -u 9
        cmd_down "$name" >/dev/null
        flock 9
    fi
    local start=$SECONDS reach_addrs
    reach_addrs=$(reach_addresses)
    install -d -m 0755 "$d" "$d/upper" "$d/work" "$d/merged"
    idx=$(alloc_index)
    echo "$idx" >"$d/index"
    echo "$SUITE" >"$d/suite"
    echo "$REACH" >"$d/reach"
    addr=$(guest_addr "$idx")
    setup_network "$name" "$idx" "$reach_addrs"
    flock -u 9

    mount -t overlay "swiftdrop-guest-$name" \
        -o "lowerdir=$BASE,upperdir=$d/upper,workdir=$d/work" "$d/merged"
    # per-instance identity and DNS
    echo "$name" >"$d/merged/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' \
        "$name" >"$d/merged/etc/hosts"
    tr -d '-' </proc/sys/kernel/random/uuid >"$d/merged/etc/machine-id"
    cat "$d/hosts.pinned" >>"$d/merged/etc/hosts"
    install -m 0644 "$d/resolv.conf" "$d/merged/etc/resolv.conf"

    # --private-network (with the netns path) gives the guest its own sysfs view
    setsid systemd-nspawn --quiet --boot --register=no --keep-unit --private-network \
        --network-namespace-path="/run/netns/$(netns_of "$name")" \
        --resolv-conf=off --timezone=off --link-journal=no \
        --directory="$d/merged" --machine "$name" \
        </dev/null >"$d/console.log" 2>&1 8>&- 9>&- &
    echo $! >"$d/pid"

    local deadline=$((SECONDS + TIMEOUT))
    until ssh_ok "$addr"; do
        if ! nspawn_pid "$name" >/dev/null; then
            tail -n 30 "$d/console.log" >&2 || true
            die "$name: systemd-nspawn exited, see $d/console.log"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 30 "$d/console.log" >&2 || true
            die "$name: no ssh on $addr after ${TIMEOUT}s, see $d/console.log"
        fi
        sleep 0.3
    done
    log "$name: $SUITE up on $addr in $((SECONDS - start))s"
    print_json "$name"
}

cmd_down() {
    local name=${1:?usage: guest.sh down NAME}
    check_name "$name"
    need_root
    local d idx="" pid p i
    d=$(idir "$name")
    [[ -f $d/index ]] && idx=$(cat "$d/index")

    if pid=$(nspawn_pid "$name"); then
        # SIGTERM makes nspawn send SIGRTMIN+3 to the guest's systemd: clean poweroff
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 150; i++)); do
            [[ -d /proc/$pid ]] || break
            sleep 0.1
        done
        if [[ -d /proc/$pid ]]; then
            log "$name: guest did not power off in 15s, killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    # leftovers (e.g. nspawn was killed): everything rooted in the overlay
    for ((i = 0; i < 50; i++)); do
        mapfile -t p < <(container_pids "$name")
        ((${#p[@]} == 0)) && break
        kill -KILL "${p[@]}" 2>/dev/null || true
        sleep 0.1
    done

    # Connections to the guest that outlived it: above all ssh's ControlPersist
    # masters (Ansible's, keyed by address). The next guest may get this
    # address within their 60 s, and a client reusing such a master would
    # talk to a dead session: UNREACHABLE for a guest that is up.
    if [[ -n $idx ]]; then
        ss -K dst "$(guest_addr "$idx")" >/dev/null 2>&1 || true
    fi
    if mountpoint -q "$d/merged" 2>/dev/null; then
        umount "$d/merged" 2>/dev/null || umount -l "$d/merged"
    fi
    install -d -m 0755 "$STATE"
    exec 9>"$STATE/.lock"
    flock 9
    rm -rf "$d"
    teardown_network "$name" "$idx"
    flock -u 9
    log "$name: down"
}

cmd_ssh() {
    local name=${1:?usage: guest.sh ssh NAME [CMD...]}
    shift
    check_name "$name"
    local d
    d=$(idir "$name")
    [[ -f $d/index ]] || die "$name is not up"
    exec ssh "${SSH_OPTS[@]}" -i "$KEY" "root@$(guest_addr "$(cat "$d/index")")" "$@"
}

cmd_status() {
    if [[ $# -gt 0 ]]; then
        check_name "$1"
        nspawn_pid "$1" >/dev/null || die "$1 is not running"
        print_json "$1"
        return
    fi
    local f name
    for f in "$STATE"/*/index; do
        [[ -f $f ]] || continue
        name=$(basename "$(dirname "$f")")
        if nspawn_pid "$name" >/dev/null; then
            echo "$name $(guest_addr "$(cat "$f")") $(suite_of "$name") running"
        else
            echo "$name $(guest_addr "$(cat "$f")") $(suite_of "$name") stopped"
        fi
    done
}

main() {
    local cmd=${1:-}
    [[ $# -gt 0 ]] && shift
    local args=() suite=${SWIFTDROP_GUEST_SUITE:-bookworm}
    REACH=""
    while [[ $# -gt 0 ]]; do
        case $1 in
        --suite) suite=${2:?--suite needs a value}; shift 2 ;;
        --suite=*) suite=${1#--suite=}; shift ;;
        --reach) REACH=${2:?--reach needs a value}; shift 2 ;;
        --reach=*) REACH=${1#--reach=}; shift ;;
        *) args+=("$1"); shift ;;
        esac
    done
    set -- "${args[@]}"
    select_suite "$suite"
    case $cmd in
    base) cmd_base "$@" ;;
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    ssh) cmd_ssh "$@" ;;
    status) cmd_status "$@" ;;
    *)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
        exit 2
        ;;
    esac
}

main "$@"
