# Arguments shared by the compare scripts (sourced, not run): each takes the cairn binary
# and the etcd binary first, then its own flags.
#   usage            prints the calling script's header comment (after the shebang, up to
#                    the first line that is not a comment) and exits 2;
#   take_binaries "$@"  sets CAIRN_BIN and ETCD_BIN from the first two arguments (usage
#                    when missing, an error unless both are executables); the caller then
#                    `shift 2`s and reads its flags.

usage() {
    sed -n '2,/^[^#]/p' "$0" | sed '/^[^#]/d; s/^# \{0,1\}//' >&2
    exit 2
}

take_binaries() {
    [[ $# -ge 2 ]] || usage
    CAIRN_BIN=$1
    ETCD_BIN=$2
    local b
    for b in "$CAIRN_BIN" "$ETCD_BIN"; do
        [[ -x $b ]] || { echo "not an executable: $b" >&2; exit 2; }
    done
}
