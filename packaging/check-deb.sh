#!/usr/bin/env bash
# The Debian package end to end, as .ci/run runs it: `cargo deb` makes
# larder_VERSION_amd64.deb from the release build, `dpkg-deb` shows what it holds, `dpkg -i`
# installs it, `systemd-analyze verify` checks the installed unit, the installed
# /usr/bin/larder is started with the unit's settings and answers /readyz and a registration
# (which must land in the state directory), then `dpkg -r` and `dpkg -P` must leave nothing.
#
# With systemd as PID 1 the unit itself is started (systemctl, on a free port through a
# drop-in). Without it (CI containers), the unit is run as systemd would as far as a shell
# can: its ExecStart, Environment= and EnvironmentFile= (LARDER_BIND moved to a free port the
# way a later EnvironmentFile would), WorkingDirectory, UMask and LimitNOFILE, as the
# unprivileged user `nobody` with no capabilities and no_new_privs, in a state directory made
# as StateDirectory= makes it (owned by that user, StateDirectoryMode). systemd's sandbox
# (DynamicUser, namespaces, the system call filter) is not reproduced there.
#
# Run as root from anywhere in the checkout, on a machine where the package is not installed
# (it removes it at the end; it refuses a machine it did not set up itself). Installs
# cargo-deb if missing, and Debian's systemd package for systemd-analyze unless CI_SKIP_APT=1.
# Uses the release binary if it is built (.ci/run builds it; the target directory comes from
# cargo, so CARGO_TARGET_DIR is honoured), else `cargo deb` builds it. The .deb stays in
# TARGET/debian/.
#
#   packaging/check-deb.sh
set -euo pipefail
cd "$(dirname "$0")/.."

unit_name=larder.service
state_dir=/var/lib/larder
# Written while this script has the package installed (with the server's pid once it runs):
# a later run may clean up after a run that was killed before its own cleanup; anything else
# found installed is left alone.
marker=/var/lib/larder-check-deb.installed
dropin_dir=/run/systemd/system/$unit_name.d
run_user=nobody
run_group=nogroup

started=$SECONDS
say() { printf 'check-deb: %s  (+%ds)\n' "$*" "$((SECONDS - started))"; }
fail() {
    printf 'check-deb: FAILED: %s\n' "$*" >&2
    exit 1
}

[[ $EUID -eq 0 ]] || fail "run as root (dpkg -i, a state directory under /var/lib)"
for tool in dpkg dpkg-deb dpkg-query curl python3 setpriv; do
    command -v "$tool" >/dev/null || fail "$tool is missing"
done

work="$(mktemp -d -t larder-check-deb.XXXXXX)"
server_pid=""
dropin=""

# Whatever happened: stop the server, remove the package and the state directory this run
# made, and the temporary files.
cleanup() {
    local rc=$?
    set +e
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid"
        wait "$server_pid" 2>/dev/null
    fi
    if [[ -n "$dropin" ]]; then
        systemctl stop "$unit_name" 2>/dev/null
        remove_dropin
    fi
    if [[ -e "$marker" ]]; then
        [[ $rc -eq 0 ]] || echo "check-deb: cleaning up: dpkg -P larder, $state_dir" >&2
        remove_all
    fi
    rm -rf "$work"
    exit $rc
}
trap cleanup EXIT

remove_dropin() {
    rm -f "$dropin_dir/check-deb.conf" "$dropin_dir/check-deb.env"
    rmdir "$dropin_dir" 2>/dev/null || true
    systemctl daemon-reload 2>/dev/null || true
}

# Everything a run installs and makes: the package, and the state directory as systemd leaves
# it (a plain directory, or with DynamicUser=yes /var/lib/private/larder and the symlink
# /var/lib/larder to it; /var/lib/private itself is systemd's and stays).
remove_all() {
    dpkg -P larder >/dev/null 2>&1
    rm -rf "$state_dir" /var/lib/private/larder
    rm -f "$marker"
}

# ------------------------------------------------------------------ a clean machine
if [[ -e "$marker" ]]; then
    say "a previous run was cut short: removing what it installed"
    # Its server, if it still runs: the pid in the marker, if that is still /usr/bin/larder.
    stale_pid="$(cat "$marker")"
    if [[ -n "$stale_pid" && "$(readlink "/proc/$stale_pid/exe" 2>/dev/null)" == /usr/bin/larder* ]]; then
        kill -TERM "$stale_pid"
        for _ in $(seq 1 100); do kill -0 "$stale_pid" 2>/dev/null || break; sleep 0.1; done
    fi
    if [[ -f "$dropin_dir/check-deb.conf" ]]; then
        systemctl stop "$unit_name" 2>/dev/null || true
        remove_dropin
    fi
    remove_all
fi
if dpkg-query -W -f='${db:Status-Status}' larder 2>/dev/null | grep -qv '^not-installed$'; then
    fail "the larder package is already on this machine ($(dpkg-query -W -f='${Status} ${Version}' larder)); this check installs and purges it, so it runs only where it is absent"
fi
if [[ -e "$state_dir" || -e /var/lib/private/larder ]]; then
    fail "$state_dir (or /var/lib/private/larder) exists: a database this check must not touch"
fi

# ------------------------------------------------------------------ cargo deb
if ! cargo deb --version >/dev/null 2>&1; then
    say "installing cargo-deb 3 from crates.io (about 2.5 minutes on 2 cores; kept in ~/.cargo/bin)"
    t0=$SECONDS
    cargo install cargo-deb --version '^3' --locked --quiet
    say "cargo-deb installed in $((SECONDS - t0)) s"
fi
cargo deb --version

metadata="$(cargo metadata --format-version 1 --no-deps)"
target="$(python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])' <<<"$metadata")"
version="$(python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "larder"))' <<<"$metadata")"
built="$target/release/larder"
expected_deb="$target/debian/larder_${version}_amd64.deb"
rm -f "$expected_deb"
if [[ -x "$built" ]]; then
    say "cargo deb --no-build (packaging $built)"
    deb="$(cargo deb --no-build --quiet)"
else
    say "no release binary at $built: cargo deb builds it"
    deb="$(cargo deb --quiet)"
fi
deb="$(tail -1 <<<"$deb")"
[[ "$deb" == "$expected_deb" && -f "$deb" ]] || fail "cargo deb made '$deb', expected $expected_deb"
say "built $deb ($(du -h "$deb" | cut -f1))"

# ------------------------------------------------------------------ what the package holds
dpkg-deb -I "$deb" >"$work/info"
dpkg-deb -c "$deb" >"$work/contents"
sed 's/^/    /' "$work/info"
field() { dpkg-deb -f "$deb" "$1"; }
[[ "$(field Package)" == larder ]] || fail "Package: $(field Package)"
[[ "$(field Version)" == "$version" ]] || fail "Version: $(field Version), expected $version"
[[ "$(field Architecture)" == amd64 ]] || fail "Architecture: $(field Architecture)"
[[ -n "$(field Maintainer)" ]] || fail "no Maintainer"
[[ "$(field Section)" == web ]] || fail "Section: $(field Section)"
[[ "$(field Depends)" == *libc6* ]] || fail "Depends does not name libc6: $(field Depends)"
for script in postinst prerm postrm; do
    grep -qE "^ +[0-9]+ bytes, +[0-9]+ lines +\*? *$script( |$)" "$work/info" || fail "no $script (the systemd unit scripts)"
done
conffiles="$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)"
[[ "$conffiles" == "/etc/default/larder" ]] || fail "conffiles: '$conffiles', expected /etc/default/larder"
# has_file MODE PATH: the archive holds PATH (./PATH) with that mode, owned by root (cargo-deb
# writes numeric ids).
has_file() {
    awk -v mode="$1" -v path="./$2" '$1 == mode && ($2 == "0/0" || $2 == "root/root") && $NF == path { found = 1 } END { exit !found }' \
        "$work/contents" || fail "the package has no $1 $2 owned by root:
$(cat "$work/contents")"
}
has_file -rwxr-xr-x usr/bin/larder
has_file -rw-r--r-- usr/lib/systemd/system/larder.service
has_file -rw------- etc/default/larder
has_file -rw-r--r-- usr/share/doc/larder/README.md
has_file -rw-r--r-- usr/share/doc/larder/copyright
say "package contents and control fields as expected ($(grep -c '^-' "$work/contents") files)"

# ------------------------------------------------------------------ dpkg -i
touch "$marker"
dpkg -i "$deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -i"; }
[[ "$(dpkg-query -W -f='${Status} ${Version}' larder)" == "install ok installed $version" ]] ||
    fail "after dpkg -i: $(dpkg-query -W -f='${Status} ${Version}' larder)"
unit=/usr/lib/systemd/system/$unit_name
[[ -f "$unit" && -x /usr/bin/larder && -f /etc/default/larder ]] || fail "installed files missing"
[[ "$(stat -c '%a %U' /etc/default/larder)" == "600 root" ]] || fail "/etc/default/larder is $(stat -c '%a %U' /etc/default/larder)"
installed_version="$(/usr/bin/larder --version)"
[[ "$installed_version" == "larder $version" ]] || fail "/usr/bin/larder --version says '$installed_version'"
say "installed: $installed_version"

# ------------------------------------------------------------------ the unit
# unit_values KEY: the values of KEY= in the unit's [Service] section, one a line, in order
# (an empty assignment resets the list, as systemd reads it).
unit_values() {
    awk -v key="$1" '
        /^\[/ { section = $0; next }
        section == "[Service]" && index($0, key "=") == 1 {
            value = substr($0, length(key) + 2)
            if (value == "") { n = 0 } else { values[++n] = value }
        }
        END { for (i = 1; i <= n; i++) print values[i] }' "$unit"
}
# unit_value KEY: the last value of a single-valued KEY ("" if unset or reset).
unit_value() { unit_values "$1" | tail -1; }
for setting in DynamicUser=yes StateDirectory=larder ProtectSystem=strict NoNewPrivileges=yes \
    ProtectHome=yes PrivateTmp=yes PrivateDevices=yes 'CapabilityBoundingSet=' \
    'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' SystemCallFilter=@system-service \
    Environment=LARDER_DATABASE_URL=sqlite:///var/lib/larder/larder.db; do
    grep -qxF "$setting" "$unit" || fail "$unit has no line '$setting'"
done
if ! command -v systemd-analyze >/dev/null && [[ "${CI_SKIP_APT:-0}" != 1 ]]; then
    # Debian's systemd package runs in a container too (it is not started, only installed).
    say "installing systemd for systemd-analyze"
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends systemd; } >"$work/apt.log" 2>&1 ||
        { tail -5 "$work/apt.log"; say "installing systemd failed: the unit is not verified"; }
fi
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify "$unit" || fail "systemd-analyze verify $unit"
    say "systemd-analyze verify: no complaint; $(systemd-analyze security --offline=true "$unit" 2>/dev/null |
        sed -n 's/^→ //p' | tr -d '🙂' || true)"
else
    say "systemd-analyze is not installed: the unit is not verified"
fi

# ------------------------------------------------------------------ running it
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:$port"
log="$work/larder.log"

init="$(cat /proc/1/comm)"
if [[ "$init" == systemd ]]; then
    say "systemd is PID 1: systemctl start $unit_name (LARDER_BIND=127.0.0.1:$port from a drop-in)"
    dropin="$dropin_dir/check-deb.conf"
    mkdir -p "$dropin_dir"
    echo "LARDER_BIND=127.0.0.1:$port" >"$dropin_dir/check-deb.env"
    # A later EnvironmentFile= overrides the earlier ones.
    printf '[Service]\nEnvironmentFile=%s\n' "$dropin_dir/check-deb.env" >"$dropin"
    systemctl daemon-reload
    systemctl start "$unit_name" || {
        systemctl status "$unit_name" --no-pager >&2
        journalctl -u "$unit_name" --no-pager | tail -30 >&2
        fail "systemctl start $unit_name"
    }
    invocation="$(systemctl show -p InvocationID --value "$unit_name")"
    show_log() { journalctl "_SYSTEMD_INVOCATION_ID=$invocation" --no-pager -o cat | tail -"${1:-30}"; }
    alive() { systemctl is-active --quiet "$unit_name"; }
else
    say "systemd is not PID 1 ($init): running ExecStart as the unit would, as $run_user"
    # The environment systemd would give the service: its own variables, then the unit's
    # Environment= lines, then its EnvironmentFile= files in order (a missing file is an
    # error unless the name starts with '-'), then LARDER_BIND as a drop-in would set it.
    # Specifiers (%S, %h, ...) are not expanded: the unit must not use them.
    ! grep -Eq '^(Environment|EnvironmentFile|ExecStart|WorkingDirectory)=.*%' "$unit" ||
        fail "the unit uses % specifiers, which this check does not expand"
    [[ "$(unit_value User)" == "" && "$(unit_value DynamicUser)" == yes ]] || fail "expected DynamicUser=yes and no User="
    declare -A environment=(
        [PATH]=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
        [LANG]=C.UTF-8 [HOME]=/ [USER]="$run_user" [LOGNAME]="$run_user" [SHELL]=/usr/sbin/nologin
        [STATE_DIRECTORY]="$state_dir"
    )
    while IFS= read -r line; do
        # Environment= takes space-separated assignments, optionally quoted.
        while IFS= read -r -d '' assignment; do
            environment["${assignment%%=*}"]="${assignment#*=}"
        done < <(python3 -c 'import shlex, sys; sys.stdout.write("".join(a + "\0" for a in shlex.split(sys.argv[1])))' "$line")
    done < <(unit_values Environment)
    while IFS= read -r file; do
        optional=0
        [[ "$file" == -* ]] && optional=1 && file="${file#-}"
        if [[ ! -f "$file" ]]; then
            [[ $optional -eq 1 ]] || fail "EnvironmentFile $file is missing"
            continue
        fi
        while IFS= read -r line || [[ -n "$line" ]]; do
            line="${line#"${line%%[![:space:]]*}"}"
            [[ -z "$line" || "$line" == '#'* || "$line" == ';'* ]] && continue
            [[ "$line" =~ ^([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || fail "$file: not NAME=value: $line"
            name="${BASH_REMATCH[1]}" value="${BASH_REMATCH[2]}"
            if [[ "$value" =~ ^\"(.*)\"$ || "$value" =~ ^\'(.*)\'$ ]]; then value="${BASH_REMATCH[1]}"; fi
            environment["$name"]="$value"
        done <"$file"
    done < <(unit_values EnvironmentFile)
    say "the unit's settings: LARDER_BIND=${environment[LARDER_BIND]:-} (moved to 127.0.0.1:$port), LARDER_DATABASE_URL=${environment[LARDER_DATABASE_URL]:-}, LARDER_LOG_FORMAT=${environment[LARDER_LOG_FORMAT]:-}"
    environment[LARDER_BIND]="127.0.0.1:$port"
    env_args=()
    for name in "${!environment[@]}"; do env_args+=("$name=${environment[$name]}"); done

    # ExecStart: one command line, no prefixes, no quoting (enough for this unit).
    [[ "$(unit_values ExecStart | wc -l)" -eq 1 ]] || fail "expected one ExecStart= line"
    read -ra exec_start <<<"$(unit_value ExecStart)"
    [[ "${exec_start[0]}" == /* ]] || fail "ExecStart does not start with an absolute path: ${exec_start[*]}"

    # StateDirectory=larder: /var/lib/larder, owned by the service's user, StateDirectoryMode.
    [[ "$(unit_value StateDirectory)" == larder ]] || fail "StateDirectory is not larder"
    mkdir -p "$state_dir"
    chown "$run_user:$run_group" "$state_dir"
    chmod "$(unit_value StateDirectoryMode)" "$state_dir"
    workdir="$(unit_value WorkingDirectory)"
    umask_value="$(unit_value UMask)"
    nofile="$(unit_value LimitNOFILE)"
    # systemd raises the hard limit too; a shell without CAP_SYS_RESOURCE (some containers)
    # cannot go past the one it has.
    if [[ -n "$nofile" ]] && ! (ulimit -n "$nofile") 2>/dev/null; then
        say "LimitNOFILE=$nofile is above this machine's hard limit, $(ulimit -Hn), which cannot be raised here: using that"
        nofile="$(ulimit -Hn)"
    fi
    (
        cd "${workdir:-/}"
        umask "${umask_value:-0022}"
        [[ -z "$nofile" ]] || ulimit -n "$nofile"
        exec setpriv --reuid="$run_user" --regid="$run_group" --clear-groups \
            --inh-caps=-all --ambient-caps=-all --bounding-set=-all --no-new-privs \
            env -i "${env_args[@]}" "${exec_start[@]}"
    ) >"$log" 2>&1 </dev/null &
    server_pid=$!
    echo "$server_pid" >"$marker"
    show_log() { tail -"${1:-30}" "$log"; }
    alive() { kill -0 "$server_pid" 2>/dev/null; }
fi

for _ in $(seq 1 300); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "$url/readyz" || true)" == 200 ]] && break
    alive || { show_log >&2; fail "larder exited before answering"; }
    sleep 0.1
done
[[ "$(curl -s -o /dev/null -w '%{http_code}' "$url/readyz")" == 200 ]] || { show_log >&2; fail "$url/readyz did not answer 200 within 30 s"; }
say "GET /readyz: 200"
if [[ -n "$dropin" ]]; then
    main_pid="$(systemctl show -p MainPID --value "$unit_name")"
    uid="$(stat -c %u "/proc/$main_pid")"
    # DynamicUser= takes its ids from 61184-65519.
    [[ $uid -ge 61184 && $uid -le 65519 ]] || fail "the service runs as uid $uid, not a dynamic user"
    grep -q '^Seccomp:[[:space:]]*2$' "/proc/$main_pid/status" || fail "the service has no system call filter"
    [[ "$(readlink "$state_dir")" == private/larder ]] || fail "$state_dir is not the DynamicUser link to private/larder"
else
    main_pid="$server_pid"
    uid="$(stat -c %u "/proc/$main_pid")"
    [[ "$uid" == "$(id -u "$run_user")" ]] || fail "the server runs as uid $uid, not $run_user"
fi
grep -q '^NoNewPrivs:[[:space:]]*1$' "/proc/$main_pid/status" || fail "the server runs without no_new_privs"
grep -q '^CapBnd:[[:space:]]*0*$' "/proc/$main_pid/status" || fail "the server has a capability bounding set"
say "the server runs as uid $uid ($(id -nu "$uid" 2>/dev/null || echo '?')), no_new_privs, no capabilities"

email="check-deb@example.com"
password="a packaged passphrase"
status="$(curl -s -o "$work/user.json" -w '%{http_code}' -H 'content-type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"$password\",\"full_name\":\"Check Deb\"}" "$url/users")"
[[ "$status" == 201 ]] || { cat "$work/user.json" >&2; show_log >&2; fail "POST /users: $status"; }
status="$(curl -s -o "$work/token.json" -w '%{http_code}' --data-urlencode "username=$email" \
    --data-urlencode "password=$password" "$url/auth/token")"
[[ "$status" == 200 ]] || { cat "$work/token.json" >&2; fail "POST /auth/token: $status"; }
say "POST /users: 201; POST /auth/token: 200"

# Stop it the way systemd does (SIGTERM), then read what it wrote.
if [[ -n "$dropin" ]]; then
    systemctl stop "$unit_name"
    server_rc=0
    [[ "$(systemctl show -p Result --value "$unit_name")" == success ]] || server_rc=1
else
    kill -TERM "$server_pid"
    server_rc=0
    wait "$server_pid" || server_rc=$?
    server_pid=""
fi
[[ $server_rc -eq 0 ]] || { show_log >&2; fail "larder did not stop cleanly on SIGTERM (exit $server_rc)"; }
server_log="$(show_log 100)"
grep -q 'larder stopped' <<<"$server_log" || { echo "$server_log" >&2; fail "no 'larder stopped' in the log"; }
if grep -E '(^| )(ERROR|WARN) ' <<<"$server_log"; then
    fail "warnings or errors in the server's log"
fi
say "stopped cleanly on SIGTERM; the log:"
awk '{ print "    " $0 }' <<<"$server_log"

database="$state_dir/larder.db"
# Owned by the server's uid (a dynamic user has no name once the service stops).
[[ "$(stat -L -c '%a %u' "$state_dir")" == "700 $uid" ]] ||
    fail "$state_dir is $(stat -L -c '%a %u' "$state_dir"), expected 700 $uid"
for file in "$database" "$database.jwt-secret"; do
    [[ -f "$file" ]] || fail "no $file"
    [[ "$(stat -c '%a %u' "$file")" == "600 $uid" ]] || fail "$file is $(stat -c '%a %u' "$file"), expected 600 $uid"
done
# immutable=1: read the stopped server's file without creating anything beside it.
users="$(python3 -c 'import sqlite3, sys
db = sqlite3.connect("file:" + sys.argv[1] + "?immutable=1", uri=True)
print(db.execute("select count(*) from users where email = ?", (sys.argv[2],)).fetchone()[0])' "$database" "$email")"
[[ "$users" == 1 ]] || fail "the registered user is not in $database"
say "the user is in $database; it and its token secret are 0600 uid $uid in $state_dir (0700)"
find "$state_dir/" -mindepth 1 -printf '    %M %u %s %f\n'

# ------------------------------------------------------------------ dpkg -r, dpkg -P
dpkg -r larder >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -r larder"; }
for file in /usr/bin/larder "$unit" /usr/share/doc/larder; do
    [[ ! -e "$file" ]] || fail "$file is still there after dpkg -r"
done
[[ -f /etc/default/larder ]] || fail "dpkg -r removed the conffile /etc/default/larder (only purge should)"
dpkg -P larder >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -P larder"; }
[[ ! -e /etc/default/larder ]] || fail "/etc/default/larder is still there after dpkg -P"
[[ "$(dpkg-query -W -f='${db:Status-Status}' larder 2>/dev/null || echo not-installed)" == not-installed ]] ||
    fail "dpkg still knows larder: $(dpkg-query -W -f='${Status}' larder)"
leftovers="$(find /etc/systemd /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked \
    -name 'larder*' 2>/dev/null || true)"
[[ -z "$leftovers" ]] || fail "left behind: $leftovers"
# The database stays on purge (it is data, not the package's); this run made it, so it goes.
remove_all
say "dpkg -r and dpkg -P removed every file of the package; ok"
