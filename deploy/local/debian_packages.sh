# Sourced by the scripts that install what a test needs from Debian (browser.sh, kcat.sh,
# prometheus.sh): nothing comes from anywhere but the distribution's archive.
#
#   ensure_debian_packages "what for" BINARY... -- PACKAGE...
# installs PACKAGEs with apt-get (as root, or through sudo) unless every BINARY is already
# executable. Services the packages bring are not started (policy-rc.d answers 101 meanwhile).

ensure_debian_packages() {
    local what=$1
    shift
    local binaries=() packages=() missing=false
    while [[ $# -gt 0 && $1 != -- ]]; do
        binaries+=("$1")
        shift
    done
    shift
    packages=("$@")
    for binary in "${binaries[@]}"; do
        [[ -x $binary ]] || missing=true
    done
    if [[ $missing == false ]]; then
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$what: ${binaries[*]} missing and no apt-get to install ${packages[*]}" >&2
        return 1
    fi
    local as_root=()
    if [[ $(id -u) -ne 0 ]]; then
        as_root=(sudo)
    fi
    echo "== $what: installing ${packages[*]}"
    "${as_root[@]}" apt-get update -qq
    local policy=/usr/sbin/policy-rc.d created_policy=false
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
        "${as_root[@]}" chmod +x "$policy"
        created_policy=true
    fi
    local status=0
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq "${packages[@]}" \
        >/dev/null || status=$?
    if [[ $created_policy == true ]]; then
        "${as_root[@]}" rm -f "$policy"
    fi
    return "$status"
}
